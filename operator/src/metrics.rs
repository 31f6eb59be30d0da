//! Prometheus metrics of the operator, served at `/metrics` by the binary.
//!
//! - `switchboard_operator_reconciliations_total{controller}`: reconciles run;
//! - `switchboard_operator_reconcile_errors_total{controller,error}`: failed reconciles by
//!   [`crate::reconcile::Error::metric_label`] / [`crate::loadset_sync::Error::metric_label`];
//! - `switchboard_operator_reconcile_duration_seconds{controller}`: how long one reconcile took;
//! - `switchboard_operator_loadset_changes_total{op}`: load-set members added / removed;
//! - `switchboard_operator_leader`: 1 while this replica holds the Lease;
//! - `switchboard_operator_redis_connections`: Redis clients the load-set sync holds (one per chat system);
//! - `switchboard_operator_observed_clusters`: chat systems with a load-set observation;
//! - `switchboard_operator_redis_failovers_total`: Redis master changes the load-set sync observed (the
//!   `MasterChanged` Events, counted).
//!
//! The last two fall back to zero when every ChatCluster is deleted: nothing per cluster outlives it.

use std::sync::Mutex;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Which controller a sample belongs to.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    /// `chatcluster` or `loadset`.
    pub controller: &'static str,
}

/// A failed reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `chatcluster` or `loadset`.
    pub controller: &'static str,
    /// The error's metric label.
    pub error: &'static str,
}

/// A load-set change.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    /// `add` or `remove`.
    pub op: &'static str,
}

/// The operator's metrics and their registry.
pub struct Metrics {
    registry: Mutex<Registry>,
    reconciliations: Family<ControllerLabel, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<ControllerLabel, Histogram>,
    loadset_changes: Family<OpLabel, Counter>,
    /// 1 while this replica leads.
    pub leader: Gauge<i64, AtomicI64>,
    /// Redis clients held by the load-set sync.
    pub redis_connections: Gauge<i64, AtomicI64>,
    /// Chat systems with a load-set observation.
    pub observed_clusters: Gauge<i64, AtomicI64>,
    /// Redis master changes observed.
    pub redis_failovers: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Metrics registered under the `switchboard_operator` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("switchboard_operator");
        let reconciliations = Family::<ControllerLabel, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 12))
        });
        let loadset_changes = Family::<OpLabel, Counter>::default();
        let leader = Gauge::<i64, AtomicI64>::default();
        let redis_connections = Gauge::<i64, AtomicI64>::default();
        let observed_clusters = Gauge::<i64, AtomicI64>::default();
        let redis_failovers = Counter::default();
        registry.register(
            "redis_failovers",
            "Redis master changes observed by the load-set sync",
            redis_failovers.clone(),
        );
        registry.register(
            "redis_connections",
            "Redis clients the load-set sync holds",
            redis_connections.clone(),
        );
        registry.register(
            "observed_clusters",
            "Chat systems with a load-set observation",
            observed_clusters.clone(),
        );
        registry.register("reconciliations", "Reconciles run", reconciliations.clone());
        registry.register("reconcile_errors", "Reconciles that failed", errors.clone());
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            duration.clone(),
        );
        registry.register(
            "loadset_changes",
            "Load-set members added or removed",
            loadset_changes.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the Lease",
            leader.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            reconciliations,
            errors,
            duration,
            loadset_changes,
            leader,
            redis_connections,
            observed_clusters,
            redis_failovers,
        }
    }

    /// Counts a finished reconcile of `controller` that took `took`.
    pub fn reconciled(&self, controller: &'static str, took: Duration) {
        let label = ControllerLabel { controller };
        self.reconciliations.get_or_create(&label).inc();
        self.duration
            .get_or_create(&label)
            .observe(took.as_secs_f64());
    }

    /// Counts a failed reconcile.
    pub fn failed(&self, controller: &'static str, error: &'static str) {
        self.errors
            .get_or_create(&ErrorLabels { controller, error })
            .inc();
    }

    /// Counts load-set changes.
    pub fn loadset_changed(&self, added: usize, removed: usize) {
        self.loadset_changes
            .get_or_create(&OpLabel { op: "add" })
            .inc_by(added as u64);
        self.loadset_changes
            .get_or_create(&OpLabel { op: "remove" })
            .inc_by(removed as u64);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        self.registry
            .lock()
            .map(|registry| switchboard_runtime::metrics::encode(&registry))
            .unwrap_or_default()
    }
}

impl switchboard_runtime::metrics::Exposition for Metrics {
    fn encode(&self) -> String {
        Metrics::encode(self)
    }
}
