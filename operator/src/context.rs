//! What both controllers share: the Kubernetes client, the Event recorder, the metrics, the settings and
//! the load-set observations, plus the few rules every write follows (one field manager, the pause
//! annotation, namespace scoping).
//!
//! ```text
//!                      ┌─▶ reconcile    (its own backoff and "announced" state around it)
//! server ─▶ Context ───┤
//!                      └─▶ loadset_sync (its own Redis connections around it)
//! ```
//!
//! The two controllers depend on this module (and on [`crate::observation`], [`crate::secret`],
//! [`crate::resources`]), never on each other.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use kube::api::Api;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use tracing::warn;

use crate::crd::ChatCluster;
use crate::metrics::Metrics;
use crate::observation::Observations;

/// The one field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "switchboard-operator";
/// Annotation that pauses reconciliation (and the load-set sync) of one ChatCluster while it is `"true"`.
pub const PAUSED_ANNOTATION: &str = "switchboard.dev/paused";

/// Whether the pause annotation is set to `"true"`.
pub fn is_paused(cc: &ChatCluster) -> bool {
    cc.annotations()
        .get(PAUSED_ANNOTATION)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// An `Api` over `namespace`, or over all namespaces.
pub fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Settings of the controllers.
#[derive(Clone, Debug)]
pub struct Config {
    /// Cluster DNS domain for the stable Redis hostnames.
    pub cluster_domain: String,
    /// Requeue of a settled ChatCluster (a safety net: changes trigger reconciles by themselves).
    pub requeue: Duration,
    /// Watch only this namespace (all namespaces when `None`).
    pub namespace: Option<String>,
    /// Backoff after a failed reconcile: first delay, doubled per failure up to `max_backoff`.
    pub min_backoff: Duration,
    /// Upper bound of the backoff.
    pub max_backoff: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cluster_domain: "cluster.local".to_owned(),
            requeue: Duration::from_secs(300),
            namespace: None,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(300),
        }
    }
}

/// Shared state of the controllers.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Publishes Events on ChatClusters.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Settings.
    pub config: Config,
    /// What the load-set sync last saw per ChatCluster.
    pub observations: Arc<Observations>,
}

impl Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context; `reporter` names this replica in Events.
    pub fn new(
        client: Client,
        reporter: &str,
        metrics: Arc<Metrics>,
        config: Config,
        observations: Arc<Observations>,
    ) -> Arc<Self> {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.to_owned(),
                instance: Some(reporter.to_owned()),
            },
        );
        Arc::new(Self {
            client,
            recorder,
            metrics,
            config,
            observations,
        })
    }

    /// Publishes an Event on `cc`; failures are logged, never fatal.
    pub async fn event(&self, cc: &ChatCluster, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, &cc.object_ref(&())).await {
            warn!(%err, reason, "could not publish event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_annotation_is_read_case_insensitively() {
        let cc = ChatCluster::test("demo");
        assert!(!is_paused(&cc));
        assert!(is_paused(
            &cc.clone().with_meta_annotation(PAUSED_ANNOTATION, "True")
        ));
        assert!(!is_paused(
            &cc.with_meta_annotation(PAUSED_ANNOTATION, "false")
        ));
    }
}
