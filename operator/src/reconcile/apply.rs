//! Writing the rendered objects: server-side apply of each (force, one field manager), and in External
//! mode the deletion of managed-Redis objects left from an earlier Managed spec — in both cases only of
//! objects this ChatCluster controls (an owner reference with `controller: true` and its uid).
//!
//! ```text
//! Desired ─▶ ConfigMaps ─▶ Services ─▶ StatefulSets ─▶ Deployments ─▶ PDBs ─▶ NetworkPolicies (SSA)
//!   each name: exists and not controlled by this ChatCluster ─▶ Problem "NameConflict", left untouched
//!              refused as invalid (422) ─▶ Problem "InvalidSpec" (Degraded), not an error; the live
//!                                          object stands in for it, so the status counts stay true
//!              workloads as returned ─▶ Applied ─▶ status (ready / desired replicas)
//! External mode: managed-Redis names controlled by this ChatCluster ─▶ delete (uid precondition);
//!                anyone else's object of such a name ─▶ left alone
//! ```
//!
//! The forced apply only settles field-manager conflicts on our own objects (e.g. a `kubectl edit` of a
//! Deployment we own); it is never reached for an object someone else owns. Between the ownership check
//! and the apply another party could create the object; that window is one round trip, and the next
//! reconcile then reports the conflict.

use std::collections::HashMap;
use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, Preconditions};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Error, Problem, Result};
use crate::context::FIELD_MANAGER;
use crate::resources::{Desired, Names};

/// What the API server returned for the applied workloads.
#[derive(Default)]
pub(super) struct Applied {
    /// Deployments by name.
    pub(super) deployments: HashMap<String, Deployment>,
    /// StatefulSets by name.
    pub(super) stateful_sets: HashMap<String, StatefulSet>,
    /// Something under way besides the workloads' roll-outs (a password rotation): `Reconciling`.
    pub(super) waiting: Option<String>,
}

use crate::resources::is_controlled_by as controlled_by;

/// The `NameConflict` problem for `kind` `name`, which exists with `meta` and is not ours.
pub(super) fn name_conflict(kind: &str, ns: &str, name: &str, meta: &ObjectMeta) -> Problem {
    let owner = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map_or_else(
            || "it has no controller".to_owned(),
            |o| format!("it is controlled by {} {}", o.kind, o.name),
        );
    Problem {
        reason: "NameConflict",
        message: format!(
            "{kind} {ns}/{name} already exists and this ChatCluster does not control it ({owner}); \
             the operator leaves it untouched — delete or rename that {kind}, or give the ChatCluster \
             another name"
        ),
    }
}

/// Applies every desired object this ChatCluster (uid `uid`) may own; names taken by someone else and
/// objects the API server refuses become `problems`, and the rest is applied regardless.
pub(super) async fn apply_all(
    client: &Client,
    ns: &str,
    uid: &str,
    desired: &Desired,
    problems: &mut Vec<Problem>,
) -> Result<Applied> {
    let mut applied = Applied::default();
    for o in &desired.config_maps {
        apply(client, ns, uid, o, problems).await?;
    }
    for o in &desired.services {
        apply(client, ns, uid, o, problems).await?;
    }
    for o in &desired.stateful_sets {
        if let Some(set) = apply(client, ns, uid, o, problems).await? {
            applied.stateful_sets.insert(set.name_any(), set);
        }
    }
    for o in &desired.deployments {
        if let Some(d) = apply(client, ns, uid, o, problems).await? {
            applied.deployments.insert(d.name_any(), d);
        }
    }
    for o in &desired.pdbs {
        apply(client, ns, uid, o, problems).await?;
    }
    for o in &desired.network_policies {
        apply(client, ns, uid, o, problems).await?;
    }
    Ok(applied)
}

/// Server-side apply of one object, unless its name is taken by an object this ChatCluster does not
/// control ([`Problem`] `NameConflict`). An object the API server refuses as invalid (a spec value only
/// it could judge, e.g. a bad label) becomes a [`Problem`] instead of an error.
async fn apply<K>(
    client: &Client,
    ns: &str,
    uid: &str,
    obj: &K,
    problems: &mut Vec<Problem>,
) -> Result<Option<K>>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = obj.meta().name.clone().unwrap_or_default();
    let existing =
        api.get_metadata_opt(&name)
            .await
            .map_err(Error::kube("get", K::kind(&()), &name))?;
    if let Some(existing) = &existing
        && !controlled_by(&existing.metadata, uid)
    {
        problems.push(name_conflict(&K::kind(&()), ns, &name, &existing.metadata));
        return Ok(None);
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api.patch(&name, &params, &Patch::Apply(obj)).await {
        Ok(o) => Ok(Some(o)),
        Err(kube::Error::Api(s)) if s.is_invalid() || s.code == 422 => {
            problems.push(Problem {
                reason: "InvalidSpec",
                message: format!(
                    "the API server refused {} {name}: {} — fix the ChatCluster spec",
                    K::kind(&()),
                    s.message
                ),
            });
            // The object as it still runs, so the status counts stay true while the update is refused.
            if existing.is_none() {
                return Ok(None);
            }
            api.get_opt(&name)
                .await
                .map_err(Error::kube("get", K::kind(&()), &name))
        }
        Err(source) => Err(Error::kube("apply", K::kind(&()), name)(source)),
    }
}

/// In External mode the managed Redis objects this ChatCluster (uid `uid`) controls must go (e.g. after
/// switching from Managed); objects of the same names that belong to anyone else stay.
pub(super) async fn prune_managed_redis(
    client: &Client,
    ns: &str,
    uid: &str,
    names: &Names,
) -> Result<()> {
    delete_own::<StatefulSet>(client, ns, uid, names.redis_sts()).await?;
    delete_own::<StatefulSet>(client, ns, uid, names.sentinel_sts()).await?;
    delete_own::<Service>(client, ns, uid, names.redis_headless()).await?;
    delete_own::<Service>(client, ns, uid, names.sentinel_headless()).await?;
    delete_own::<ConfigMap>(client, ns, uid, names.redis_scripts()).await?;
    delete_own::<PodDisruptionBudget>(client, ns, uid, names.redis_sts()).await?;
    delete_own::<PodDisruptionBudget>(client, ns, uid, names.sentinel_sts()).await?;
    delete_own::<NetworkPolicy>(client, ns, uid, names.redis_sts()).await?;
    delete_own::<NetworkPolicy>(client, ns, uid, names.sentinel_sts()).await?;
    Ok(())
}

/// With `spec.networkPolicy.enabled: false`, the NetworkPolicies this ChatCluster controls go.
pub(super) async fn prune_network_policies(
    client: &Client,
    ns: &str,
    uid: &str,
    names: &Names,
) -> Result<()> {
    for name in [
        names.node(),
        names.registry(),
        names.redis_sts(),
        names.sentinel_sts(),
    ] {
        delete_own::<NetworkPolicy>(client, ns, uid, name).await?;
    }
    Ok(())
}

/// Deletes `name` in the background if the ChatCluster with `uid` controls it. The delete carries the
/// uid of the object that was checked as a precondition, so an object replaced meanwhile is never hit;
/// an object already gone (or replaced) is fine.
async fn delete_own<K>(client: &Client, ns: &str, uid: &str, name: String) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let existing =
        api.get_metadata_opt(&name)
            .await
            .map_err(Error::kube("get", K::kind(&()), &name))?;
    let Some(existing) = existing.filter(|o| controlled_by(&o.metadata, uid)) else {
        return Ok(());
    };
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: existing.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(&name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => Ok(()),
        Err(source) => Err(Error::kube("delete", K::kind(&()), name)(source)),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;

    fn owned(uid: &str, controller: Option<bool>) -> ObjectMeta {
        ObjectMeta {
            owner_references: Some(vec![OwnerReference {
                api_version: "switchboard.dev/v1alpha1".to_owned(),
                kind: "ChatCluster".to_owned(),
                name: "demo".to_owned(),
                uid: uid.to_owned(),
                controller,
                block_owner_deletion: None,
            }]),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn only_a_controller_reference_with_our_uid_makes_an_object_ours() {
        assert!(controlled_by(&owned("u1", Some(true)), "u1"));
        assert!(!controlled_by(&owned("u2", Some(true)), "u1"));
        assert!(!controlled_by(&owned("u1", None), "u1"));
        assert!(!controlled_by(&owned("u1", Some(false)), "u1"));
        assert!(!controlled_by(&ObjectMeta::default(), "u1"));
    }

    #[test]
    fn a_name_conflict_names_the_object_its_owner_and_what_to_do() {
        let p = name_conflict("Service", "chat", "demo-node", &ObjectMeta::default());
        assert_eq!(p.reason, "NameConflict");
        assert!(
            p.message.contains("Service chat/demo-node"),
            "{}",
            p.message
        );
        assert!(p.message.contains("has no controller"), "{}", p.message);
        assert!(p.message.contains("delete or rename"), "{}", p.message);
        let p = name_conflict("ConfigMap", "chat", "x", &owned("u2", Some(true)));
        assert!(
            p.message.contains("controlled by ChatCluster demo"),
            "{}",
            p.message
        );
    }
}
