//! The one `GET /metrics` route of every binary.
//!
//! Each binary registers its metrics in a `prometheus_client` registry owned by something that
//! implements [`Exposition`] (a binary whose gauges are sampled at scrape time refreshes them in
//! [`Exposition::encode`]); [`route`] serves it with one content type everywhere.
//!
//! ```text
//! Registry ──register──▶ counters/histograms ◀──update── the code that owns them
//!    └─▶ impl Exposition (Arc) ──encode()──▶ GET /metrics (OpenMetrics text)
//! ```

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;

/// Content type of every `/metrics` answer (OpenMetrics text, which Prometheus scrapes natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Something that can print its metrics in the OpenMetrics text format.
pub trait Exposition: Send + Sync + 'static {
    /// The whole exposition, ending in `# EOF`.
    fn encode(&self) -> String;
}

/// The OpenMetrics text of `registry`.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail; an encoding error would be a bug in a metric type.
    if let Err(error) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!(%error, "encoding metrics failed");
    }
    out
}

/// A metrics registry with nothing to refresh before a scrape.
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
}

impl From<Registry> for Metrics {
    fn from(registry: Registry) -> Self {
        Self::new(registry)
    }
}

impl Exposition for Metrics {
    fn encode(&self) -> String {
        encode(&self.registry)
    }
}

/// A router serving `GET /metrics` from `source`.
pub fn route<E: Exposition>(source: Arc<E>) -> Router {
    Router::new()
        .route("/metrics", get(serve::<E>))
        .with_state(source)
}

async fn serve<E: Exposition>(State(source): State<Arc<E>>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        source.encode(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use prometheus_client::metrics::counter::Counter;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn metrics_are_served_as_openmetrics_text() {
        let mut registry = Registry::default();
        let hits = Counter::<u64>::default();
        registry.register("hits", "Hits", hits.clone());
        hits.inc();
        let response = route(Arc::new(Metrics::new(registry)))
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
        assert!(text.contains("hits_total 1"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
