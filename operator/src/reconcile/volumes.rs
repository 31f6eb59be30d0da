//! Growing the managed Redis data volumes when `spec.redis.managed.storage` grows.
//!
//! A StatefulSet's volume claim template is immutable, so a bigger size cannot simply be applied. The
//! CRD refuses shrinking (and class or ephemeral changes) at admission; a growth is carried out here,
//! before the objects are applied:
//!
//! ```text
//! live StatefulSet asks for less than the spec?
//!   ├─ no ─▶ nothing to do
//!   └─ yes ─▶ every claim data-<sts>-N (retained ones of a scale-down too) asks for the new size
//!              ├─ the API server refuses (class without allowVolumeExpansion, ...) ─▶ Degraded
//!              │     VolumeResizeRefused; the StatefulSet is applied with its old size
//!              └─ all accepted ─▶ delete the StatefulSet with orphan propagation (its pods and claims
//!                   stay and keep running) ─▶ applied anew with the new template, adopting them
//! ```
//!
//! No Redis pod restarts: the pod template is unchanged and the data StatefulSet is `OnDelete`. The
//! storage driver grows each volume (on-line where it can); `kubectl get pvc` shows its progress.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::info;

use super::{Error, Problem, Result};
use crate::context::Context;
use crate::crd::ChatCluster;
use crate::resources::{Desired, quantity_bytes};

/// Longest wait for the orphaning delete of the old StatefulSet to finish.
const DELETE_WAIT: Duration = Duration::from_secs(20);

/// The storage a StatefulSet's `data` claim template asks for.
fn template_storage(set: &StatefulSet) -> Option<&Quantity> {
    let data = set
        .spec
        .volume_claim_templates
        .as_ref()?
        .iter()
        .find(|t| t.metadata.name.as_deref() == Some("data"))?;
    claim_storage(data)
}

/// The storage a claim asks for.
fn claim_storage(claim: &PersistentVolumeClaim) -> Option<&Quantity> {
    claim
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
}

/// Whether `name` is `data-<set>-<ordinal>`.
fn is_claim_of(name: &str, set: &str) -> bool {
    name.strip_prefix("data-")
        .and_then(|rest| rest.strip_prefix(set))
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Grows the data volumes of the live StatefulSet (controlled by uid `uid`) to the size in `desired`;
/// when the API server refuses, `desired` keeps the live size and `problems` says why.
pub(super) async fn grow(
    cc: &ChatCluster,
    ctx: &Context,
    ns: &str,
    uid: &str,
    desired: &mut Desired,
    problems: &mut Vec<Problem>,
) -> Result<()> {
    let Some(wanted_set) = desired
        .stateful_sets
        .iter_mut()
        .find(|s| template_storage(s).is_some())
    else {
        return Ok(());
    };
    let Some(wanted) = template_storage(wanted_set).cloned() else {
        return Ok(());
    };
    let set_name = wanted_set.metadata.name.clone().unwrap_or_default();
    let sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), ns);
    let Some(live) =
        sets.get_opt(&set_name)
            .await
            .map_err(Error::kube("get", "StatefulSet", &set_name))?
    else {
        return Ok(());
    };
    let ours = live
        .owner_references()
        .iter()
        .any(|o| o.uid == uid && o.controller == Some(true));
    let Some(current) = template_storage(&live).cloned() else {
        return Ok(());
    };
    let (Some(want_bytes), Some(have_bytes)) =
        (quantity_bytes(&wanted.0), quantity_bytes(&current.0))
    else {
        return Ok(());
    };
    if !ours || want_bytes <= have_bytes || live.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }

    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    let listed = claims
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("list", "PersistentVolumeClaim", ns))?;
    let mut grown = Vec::new();
    for claim in listed.items {
        let name = claim.metadata.name.clone().unwrap_or_default();
        if !is_claim_of(&name, &set_name) {
            continue;
        }
        let asks = claim_storage(&claim).and_then(|q| quantity_bytes(&q.0));
        if asks.is_some_and(|b| b >= want_bytes) {
            continue;
        }
        let patch = json!({ "spec": { "resources": { "requests": { "storage": wanted } } } });
        match claims
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => grown.push(name),
            Err(kube::Error::Api(s)) if matches!(s.code, 403 | 422) => {
                problems.push(Problem {
                    reason: "VolumeResizeRefused",
                    message: format!(
                        "cannot grow PersistentVolumeClaim {name} to {}: {} — the volumes stay at {}; \
                         the claims' storage class must have allowVolumeExpansion: true (and a driver \
                         that can expand): once it has, the operator grows them",
                        wanted.0, s.message, current.0
                    ),
                });
                if let Some(t) = wanted_set
                    .spec
                    .volume_claim_templates
                    .as_mut()
                    .and_then(|t| t.first_mut())
                    .and_then(|t| t.spec.as_mut())
                    .and_then(|s| s.resources.as_mut())
                    .and_then(|r| r.requests.as_mut())
                {
                    t.insert("storage".to_owned(), current.clone());
                }
                return Ok(());
            }
            Err(source) => return Err(Error::kube("patch", "PersistentVolumeClaim", name)(source)),
        }
    }

    // Every claim asks for the new size: replace the StatefulSet, keeping its pods and claims.
    let params = DeleteParams {
        propagation_policy: Some(kube::api::PropagationPolicy::Orphan),
        preconditions: Some(Preconditions {
            uid: live.meta().uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    sets.delete(&set_name, &params).await.map_err(Error::kube(
        "delete (orphan)",
        "StatefulSet",
        &set_name,
    ))?;
    let deadline = tokio::time::Instant::now() + DELETE_WAIT;
    while sets
        .get_opt(&set_name)
        .await
        .map_err(Error::kube("get", "StatefulSet", &set_name))?
        .is_some_and(|s| s.meta().uid == live.meta().uid)
    {
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    info!(statefulset = %set_name, from = %current.0, to = %wanted.0, ?grown, "Redis volumes grown");
    ctx.event(
        cc,
        EventType::Normal,
        "VolumeResize",
        format!(
            "Redis data volumes {} → {} (claims {}); StatefulSet {set_name} replaced with its pods kept",
            current.0,
            wanted.0,
            if grown.is_empty() { "already asked for it".to_owned() } else { grown.join(", ") },
        ),
    )
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_claim_of;

    #[test]
    fn only_claims_of_the_data_template_of_that_set_are_grown() {
        assert!(is_claim_of("data-chat-redis-0", "chat-redis"));
        assert!(is_claim_of("data-chat-redis-12", "chat-redis"));
        assert!(!is_claim_of("data-chat-redis-backup-0", "chat-redis"));
        assert!(!is_claim_of("data-chat-redis-", "chat-redis"));
        assert!(!is_claim_of("other-chat-redis-0", "chat-redis"));
        assert!(!is_claim_of("data-chat-redis2-0", "chat-redis"));
    }
}
