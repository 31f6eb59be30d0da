//! Simulation control — **kwok only**, unless a pod opts in (see below).
//!
//! On the test bed no kubelet runs: kwok's stages write pod status. Its default
//! `pod-ready` stage acts only on pods whose phase is `Pending` and whose `Ready`
//! condition is not `True`; once a pod is `Running`, nothing rewrites its
//! conditions. So a test makes a pod not ready (or ready again) by writing the
//! conditions itself through the `pods/status` subresource, and kwok leaves them.
//!
//! On a cluster with real kubelets (kind), a kubelet recomputes `Ready` from its
//! probes and would undo such a write — unless the pod declares the readiness gate
//! [`READINESS_GATE`]: a kubelet then reports `Ready` only while that condition is
//! `True`, and [`set_pod_ready`] writes it too. Pods made for tests that flip
//! readiness should therefore declare the gate; kwok's `pod-ready` stage sets every
//! declared gate `True` at start, so such pods become ready on both beds.
//!
//! [`remove_pod_now`] is plain Kubernetes (a delete with no grace period) and works
//! on every cluster.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams};

use super::{Error, Result};

/// The pod readiness gate that [`set_pod_ready`] drives, for pods that must flip
/// readiness on clusters with real kubelets too.
pub const READINESS_GATE: &str = "e2e.switchboard.dev/ready";

/// The field manager of the status writes made here.
const FIELD_MANAGER: &str = "switchboard-e2e-sim";

/// Make pod `name` ready or not ready, as a failing or recovering readiness probe would.
pub async fn set_pod_ready(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    ready: bool,
) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod = pods.get(name).await.map_err(Error::Kube)?;
    let status = if ready { "True" } else { "False" };
    let reason = if ready {
        "SimulatedReady"
    } else {
        "SimulatedNotReady"
    };
    let mut conditions = vec![
        serde_json::json!({"type": "Ready", "status": status, "reason": reason}),
        serde_json::json!({"type": "ContainersReady", "status": status, "reason": reason}),
    ];
    let gated = pod
        .spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_ref())
        .is_some_and(|gates| gates.iter().any(|g| g.condition_type == READINESS_GATE));
    if gated {
        conditions
            .push(serde_json::json!({"type": READINESS_GATE, "status": status, "reason": reason}));
    }
    // Strategic merge: conditions merge by `type`, the others stay as they are.
    let patch = serde_json::json!({ "status": { "conditions": conditions } });
    pods.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Strategic(patch),
    )
    .await
    .map_err(Error::Kube)?;
    Ok(())
}

/// Make pod `name` gone at once (no grace period), as when its node dies and the pod is force-deleted.
pub async fn remove_pod_now(client: &kube::Client, namespace: &str, name: &str) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    pods.delete(name, &DeleteParams::default().grace_period(0))
        .await
        .map_err(Error::Kube)?;
    Ok(())
}
