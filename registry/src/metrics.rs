//! Prometheus metrics: a holder for a `prometheus_client` [`Registry`], the `GET /metrics` route that
//! serves it, and the registry service's own metrics.
//!
//! Any binary builds a [`Registry`], registers its metrics into it (chat-node its own; the registry
//! [`RegistryMetrics`]), wraps it in [`Metrics`] and mounts [`metrics_route`]. Metrics are updated in place
//! (atomics) by the code that owns them; a scrape only encodes.
//!
//! ```text
//! Registry ──register──▶ counters/histograms ◀──update── request handlers
//!    └─▶ Metrics (Arc) ──encode()──▶ GET /metrics (OpenMetrics text)
//! ```

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::{Directory, DirectoryError};
use crate::loadset::NodeEntry;

/// Content type of the `/metrics` answer (OpenMetrics text, which Prometheus scrapes natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A metrics registry ready to be served.
#[derive(Debug, Default)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// Serves `registry` (register everything before wrapping it).
    pub fn new(registry: Registry) -> Self {
        Self { registry }
    }

    /// The wrapped registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The OpenMetrics text exposition of every registered metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an encoding error would be a bug in a metric type.
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(%error, "encoding metrics failed");
        }
        out
    }
}

impl From<Registry> for Metrics {
    fn from(registry: Registry) -> Self {
        Self::new(registry)
    }
}

/// A router serving `GET /metrics` from `metrics`.
pub fn metrics_route(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .with_state(metrics)
}

async fn serve_metrics(State(metrics): State<Arc<Metrics>>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        metrics.encode(),
    )
        .into_response()
}

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
    async fn assign(&self) -> Result<Option<NodeEntry>, DirectoryError> {
        let started = Instant::now();
        let result = self.inner.assign().await;
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
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    struct Full;

    impl Directory for Full {
        async fn assign(&self) -> Result<Option<NodeEntry>, DirectoryError> {
            Ok(None)
        }
        async fn nodes(&self) -> Result<Vec<NodeEntry>, DirectoryError> {
            Ok(Vec::new())
        }
    }

    #[tokio::test]
    async fn assignments_are_counted_and_served() {
        let mut registry = Registry::default();
        let metered = MeteredDirectory::new(Full, RegistryMetrics::register(&mut registry));
        assert_eq!(metered.assign().await.expect("assign"), None);
        let metrics = Arc::new(Metrics::new(registry));

        let response = metrics_route(metrics)
            .oneshot(
                Request::get("/metrics")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        let text = String::from_utf8(body.to_vec()).expect("utf-8");
        assert!(
            text.contains(r#"switchboard_registry_assignments_total{outcome="no_node"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("switchboard_registry_assign_duration_seconds_count 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
