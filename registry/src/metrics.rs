//! The registry service's own metrics, registered in a `prometheus_client` [`Registry`] that
//! `switchboard_runtime::metrics::route` serves at `/metrics`.
//!
//! ```text
//! Registry ──register──▶ RegistryMetrics ◀──observe── MeteredDirectory (every assignment)
//! ```

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::{Avoid, Directory, DirectoryError};
use switchboard_loadset::NodeEntry;

/// Outcome label of an assignment.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The registry service's metrics.
#[derive(Clone, Debug)]
pub struct RegistryMetrics {
    assignments: Family<OutcomeLabels, Counter>,
    assign_duration: Histogram,
}

impl RegistryMetrics {
    /// Creates the metrics and registers them in `registry`:
    /// `switchboard_registry_assignments_total{outcome="assigned|no_node|error"}` and
    /// `switchboard_registry_assign_duration_seconds`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            assignments: Family::default(),
            // 0.5 ms .. ~1 s: an assignment is one Redis round trip.
            assign_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 12)),
        };
        registry.register(
            "switchboard_registry_assignments",
            "Assignment requests by outcome",
            metrics.assignments.clone(),
        );
        registry.register(
            "switchboard_registry_assign_duration_seconds",
            "Time to pick a node for one assignment",
            metrics.assign_duration.clone(),
        );
        metrics
    }

    fn observe(&self, outcome: &'static str, started: Instant) {
        self.assignments
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        self.assign_duration
            .observe(started.elapsed().as_secs_f64());
    }
}

/// A [`Directory`] that records [`RegistryMetrics`] for every assignment of the directory it wraps.
pub struct MeteredDirectory<D> {
    inner: D,
    metrics: RegistryMetrics,
}

impl<D: Directory> MeteredDirectory<D> {
    /// Wraps `inner`.
    pub fn new(inner: D, metrics: RegistryMetrics) -> Self {
        Self { inner, metrics }
    }
}

impl<D: Directory> Directory for MeteredDirectory<D> {
    async fn assign(&self, avoid: &Avoid) -> Result<Option<NodeEntry>, DirectoryError> {
        let started = Instant::now();
        let result = self.inner.assign(avoid).await;
        let outcome = match &result {
            Ok(Some(_)) => "assigned",
            Ok(None) => "no_node",
            Err(_) => "error",
        };
        self.metrics.observe(outcome, started);
        result
    }

    async fn nodes(&self) -> Result<Vec<NodeEntry>, DirectoryError> {
        self.inner.nodes().await
    }

    async fn peek(&self, avoid: &Avoid) -> Result<Option<NodeEntry>, DirectoryError> {
        let started = Instant::now();
        let result = self.inner.peek(avoid).await;
        let outcome = match &result {
            Ok(Some(_)) => "assigned_unreserved",
            Ok(None) => "no_node",
            Err(_) => "error",
        };
        self.metrics.observe(outcome, started);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Full;

    impl Directory for Full {
        async fn assign(&self, _: &Avoid) -> Result<Option<NodeEntry>, DirectoryError> {
            Ok(None)
        }
        async fn nodes(&self) -> Result<Vec<NodeEntry>, DirectoryError> {
            Ok(Vec::new())
        }
    }

    #[tokio::test]
    async fn assignments_are_counted_by_outcome_and_timed() {
        let mut registry = Registry::default();
        let metered = MeteredDirectory::new(Full, RegistryMetrics::register(&mut registry));
        assert_eq!(metered.assign(&Avoid::none()).await.expect("assign"), None);

        let text = switchboard_runtime::metrics::encode(&registry);
        assert!(
            text.contains(r#"switchboard_registry_assignments_total{outcome="no_node"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("switchboard_registry_assign_duration_seconds_count 1"),
            "{text}"
        );
    }
}
