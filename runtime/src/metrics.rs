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
//!
//! By default `/metrics` shares the binary's serving port. With `--metrics-listen` ([`MetricsArgs`]) it
//! is served on an address of its own and *only* there ([`mount`]), so a network policy can admit
//! scrapers to that port without admitting them to the chat port, and clients cannot read metrics.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::serve::{BindError, bind, serve};

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
        .route("/metrics", get(serve_metrics::<E>))
        .with_state(source)
}

/// Where `/metrics` is served (`--metrics-listen`).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct MetricsArgs {
    /// Serve /metrics on this address only (plain HTTP), not on the main listener. Unset: /metrics is on
    /// the main listener.
    // An id of its own: flattened beside a binary's `--listen`, the field name alone would clash.
    #[arg(
        id = "metrics_listen",
        long = "metrics-listen",
        env = "SWITCHBOARD_METRICS_LISTEN",
        value_name = "HOST:PORT"
    )]
    pub listen: Option<SocketAddr>,
}

impl MetricsArgs {
    /// Binds the metrics address when one is given, so a taken port fails the start like `--listen`.
    pub async fn bind(&self) -> Result<Option<TcpListener>, BindError> {
        match self.listen {
            Some(addr) => bind(addr).await.map(Some),
            None => Ok(None),
        }
    }
}

/// Puts the metrics `route` on `app`, or — with a metrics listener from [`MetricsArgs::bind`] — serves it
/// there alone until `shutdown` and returns `app` without it.
pub fn mount(
    app: Router,
    route: Router,
    own: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Router {
    let Some(listener) = own else {
        return app.merge(route);
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(listen = %addr, "metrics served on their own port");
    }
    tokio::spawn(async move {
        if let Err(error) = serve(listener, route, shutdown).await {
            tracing::error!(%error, "metrics server failed");
        }
    });
    app
}

async fn serve_metrics<E: Exposition>(State(source): State<Arc<E>>) -> Response {
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

    #[test]
    fn metrics_args_flatten_beside_a_listen_flag() {
        #[derive(clap::Parser)]
        struct Args {
            #[arg(long)]
            listen: Option<SocketAddr>,
            #[command(flatten)]
            metrics: MetricsArgs,
        }
        <Args as clap::CommandFactory>::command().debug_assert();
    }

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

    #[tokio::test]
    async fn a_metrics_listener_serves_metrics_alone_and_the_main_app_no_longer_does() {
        let source = Arc::new(Metrics::new(Registry::default()));
        let shutdown = CancellationToken::new();
        let args = MetricsArgs {
            listen: Some("127.0.0.1:0".parse().expect("addr")),
        };
        let own = args.bind().await.expect("bind");
        let addr = own
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .expect("bound");
        let app = Router::new().route("/healthz", get(|| async { "ok" }));
        let app = mount(app, route(source), own, shutdown.clone());

        let on_main = app
            .oneshot(
                Request::get("/metrics")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        assert_eq!(on_main.status(), StatusCode::NOT_FOUND);

        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tokio::io::AsyncWriteExt::write_all(
            &mut stream,
            b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await
        .expect("write");
        let mut answer = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut answer)
            .await
            .expect("read");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("# EOF"), "{answer}");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn without_a_metrics_listener_metrics_stay_on_the_main_app() {
        let source = Arc::new(Metrics::new(Registry::default()));
        let app = mount(Router::new(), route(source), None, CancellationToken::new());
        let response = app
            .oneshot(
                Request::get("/metrics")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK);
    }
}
