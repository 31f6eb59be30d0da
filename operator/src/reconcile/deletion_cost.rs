//! Which chat-node pods a scale-down removes: before the reconciler lowers the chat-node Deployment's
//! replicas, each pod gets `pod-deletion-cost` = its connection count (as the load-set sync last saw it),
//! so the ReplicaSet controller removes the least-loaded pods and the fewest clients have to reconnect.
//!
//! ```text
//! live Deployment replicas > spec.nodes.replicas ?  (a scale-down is about to be applied)
//!   no  ─▶ nothing (no pod is patched on ordinary reconciles or resyncs)
//!   yes ─▶ Observations::connections(cluster) ─▶ merge-patch the cost of every pod whose cost differs
//! ```
//!
//! The costs are written before the apply that lowers the replicas, in the same reconcile, so the
//! ReplicaSet controller never chooses without them.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use tracing::{debug, info};

use super::{Error, Result};
use crate::context::{Context, FIELD_MANAGER};
use crate::crd::ChatCluster;
use crate::resources::{self, Component, Names};

/// The annotation the ReplicaSet controller reads to choose which pods to remove first.
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// Whether applying `desired` replicas to a Deployment that has `live` replicas removes pods.
fn scale_down_pending(live: Option<i32>, desired: i32) -> bool {
    live.is_some_and(|live| desired < live)
}

/// The cost annotation value of a pod with `connections` clients.
fn cost(connections: u64) -> String {
    i32::try_from(connections).unwrap_or(i32::MAX).to_string()
}

/// When the reconcile is about to scale the chat-node Deployment (controlled by uid `uid`) down, sets
/// every chat-node pod's deletion cost to its connection count first.
pub(super) async fn before_scale_down(
    cc: &ChatCluster,
    ctx: &Context,
    ns: &str,
    uid: &str,
) -> Result<()> {
    let name = Names::of(cc)?.node();
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let live = deployments
        .get_opt(&name)
        .await
        .map_err(Error::kube("get", "Deployment", &name))?
        .filter(|d| resources::is_controlled_by(&d.metadata, uid));
    if !scale_down_pending(live.and_then(|d| d.spec.replicas), cc.spec.nodes.replicas) {
        return Ok(());
    }
    let connections = ctx.observations.connections(&cc.cluster_id());
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let selector = resources::selector_string(cc, Component::ChatNode);
    let list = pods
        .list_metadata(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube("list", "Pod", &selector))?;
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let mut patched = 0;
    for pod in list.items {
        let pod_name = pod.name_any();
        let Some(n) = connections.get(&pod_name) else {
            continue;
        };
        let cost = cost(*n);
        if pod.metadata.deletion_timestamp.is_some()
            || pod.annotations().get(POD_DELETION_COST) == Some(&cost)
        {
            continue;
        }
        let patch =
            serde_json::json!({ "metadata": { "annotations": { POD_DELETION_COST: cost } } });
        match pods.patch(&pod_name, &params, &Patch::Merge(patch)).await {
            Ok(_) => {
                patched += 1;
                debug!(pod = %pod_name, %cost, "pod-deletion-cost set");
            }
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(source) => return Err(Error::kube("annotate", "Pod", pod_name)(source)),
        }
    }
    info!(
        pods = patched,
        to = cc.spec.nodes.replicas,
        "scale-down: least-loaded chat-nodes go first"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fewer_desired_than_live_replicas_is_a_pending_scale_down() {
        assert!(scale_down_pending(Some(4), 2));
        assert!(!scale_down_pending(Some(2), 2));
        assert!(!scale_down_pending(Some(2), 4));
        assert!(!scale_down_pending(None, 0), "nothing to scale down yet");
    }

    #[test]
    fn a_cost_is_the_connection_count_capped_at_i32() {
        assert_eq!(cost(42), "42");
        assert_eq!(cost(u64::MAX), i32::MAX.to_string());
    }
}
