//! Wiring of the `registry` binary: flags, the Redis connection, and one HTTP listener serving the
//! placement API, health, metrics and the web page.
//!
//! ```text
//! Args ──run()──▶ redis::connect ──▶ LoadSet ──▶ MeteredDirectory ──▶ api::router   /v1/assign, /v1/nodes
//!                                       client ──PING (1 s)──────────▶ /readyz
//!                 shutdown token ─────────────────────────────────────▶ /readyz 503, then stop serving
//!                 Registry ──────────────────────────────────────────▶ /metrics ; web::router ▶ /
//!                 --tls-cert-file ──▶ runtime::tls (reloaded on change) ──▶ HTTPS on the same listener
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use fred::clients::Client;
use fred::interfaces::ClientLike;
use prometheus_client::registry::Registry;
use switchboard_loadset::LoadSet;
use switchboard_redis::keys::{DEFAULT_CLUSTER_ID, Keys};
use switchboard_redis::{self as redis, RedisArgs};
use switchboard_runtime::metrics::{self, Metrics};
use switchboard_runtime::tls::{Tls, TlsArgs};
use switchboard_runtime::{self as runtime, LogArgs, duration};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::dev_token::{self, DevIssuer};
use crate::metrics::{MeteredDirectory, RegistryMetrics};
use crate::origins::AllowedOrigins;
use crate::{api, web};

/// Longest `--drain-delay`: a drain longer than this would outlast any sensible termination grace period.
pub const MAX_DRAIN_DELAY: Duration = Duration::from_secs(600);

/// How long `/readyz` waits for Redis to answer a `PING`.
pub const READINESS_PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Flags of the `registry` binary.
#[derive(clap::Parser, Clone, Debug)]
#[command(
    name = "registry",
    version,
    about = "Switchboard registry: tells clients which chat-node to connect to (GET /v1/assign)."
)]
pub struct Args {
    /// Address to serve HTTP on (IP:PORT).
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "0.0.0.0:8081")]
    pub listen: SocketAddr,

    /// Identity of the chat system (the operator passes `namespace/name`); selects the Redis key prefix.
    #[arg(long = "cluster-id", env = "SWITCHBOARD_CLUSTER_ID", default_value = DEFAULT_CLUSTER_ID)]
    pub cluster_id: String,

    /// How long to keep serving (while /readyz answers 503) after the first SIGTERM, so load balancers
    /// stop sending requests before the listener closes (0s to 10m, e.g. `5s`).
    #[arg(
        long = "drain-delay",
        env = "SWITCHBOARD_DRAIN_DELAY",
        default_value = "0s",
        value_parser = duration::within(Duration::ZERO, MAX_DRAIN_DELAY)
    )]
    pub drain_delay: Duration,

    /// Web origins (scheme://host[:port], comma-separated) whose pages may call the API across origins
    /// (CORS). The registry's own page needs none.
    #[arg(
        long = "allowed-origins",
        env = "SWITCHBOARD_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Assignments per second one caller address may have counted against a node (a reservation, gone
    /// at the node's next report); beyond it callers still get the least loaded node, unreserved.
    /// 0: assignments never reserve.
    #[arg(
        long = "reservations-per-ip",
        env = "SWITCHBOARD_RESERVATIONS_PER_IP",
        default_value_t = api::DEFAULT_RESERVATIONS_PER_IP
    )]
    pub reservations_per_ip: u32,

    /// Serve `POST /v1/dev-token`, a development identity provider that mints short-lived HS256 tokens
    /// for any name. Only with --jwt-hmac-secret-file and a loopback --listen address.
    #[arg(long = "dev-token-issuer", env = "SWITCHBOARD_DEV_TOKEN_ISSUER")]
    pub dev_token_issuer: bool,

    /// File holding the HS256 secret the nodes verify tokens with (for --dev-token-issuer).
    #[arg(
        long = "jwt-hmac-secret-file",
        env = "SWITCHBOARD_JWT_HMAC_SECRET_FILE"
    )]
    pub jwt_hmac_secret_file: Option<std::path::PathBuf>,

    /// `iss` claim of minted development tokens (the nodes' --jwt-issuer).
    #[arg(long = "jwt-issuer", env = "SWITCHBOARD_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// `aud` claim of minted development tokens (the nodes' --jwt-audience).
    #[arg(long = "jwt-audience", env = "SWITCHBOARD_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// TLS: serve `https` from these files (default: plain HTTP, as behind an ingress).
    #[command(flatten)]
    pub tls: TlsArgs,

    /// Redis connection (required for the registry).
    #[command(flatten)]
    pub redis: RedisArgs,

    /// Metrics: on the main listener, or on `--metrics-listen` alone.
    #[command(flatten)]
    pub metrics: runtime::metrics::MetricsArgs,

    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

/// Runs the registry until SIGTERM/SIGINT: sets up logging, binds `--listen`, connects to Redis and
/// serves. Fails with a clear message when Redis is not configured, unreachable or rejects the password.
pub async fn run(args: Args) -> anyhow::Result<()> {
    runtime::init_tracing(&args.log);
    let shutdown = runtime::shutdown_on_signal();
    let listener = runtime::bind(args.listen).await?;
    serve_on(listener, args, shutdown).await
}

/// Like [`run`], on an already bound listener and with a caller-owned shutdown token (tests, e2e, and
/// embedding several registries in one process). Does not touch logging or signals.
pub async fn serve_on(
    listener: TcpListener,
    args: Args,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if !args.redis.is_configured() {
        anyhow::bail!(
            "the registry needs Redis: give --redis-url (SWITCHBOARD_REDIS_URL) or --redis-sentinels \
             (SWITCHBOARD_REDIS_SENTINELS) with --redis-master-name"
        );
    }
    let addr = listener.local_addr().context("listener address")?;
    let origins = Arc::new(AllowedOrigins::new(&args.allowed_origins)?);
    let dev_issuer = dev_issuer(&args, addr)?;
    let tls = Tls::from_args(&args.tls).context("--tls-cert-file")?;
    let client = redis::connect(&args.redis).await?;
    tracing::info!(
        listen = %addr,
        scheme = args.tls.http_scheme(),
        cluster_id = %args.cluster_id,
        redis = %args.redis.describe(),
        "registry serving"
    );

    let stop_serving = CancellationToken::new();
    let drain_delay = args.drain_delay;
    tokio::spawn({
        let shutdown = shutdown.clone();
        let stop_serving = stop_serving.clone();
        async move {
            shutdown.cancelled().await;
            tokio::time::sleep(drain_delay).await;
            stop_serving.cancel();
        }
    });

    let metrics_listener = args.metrics.bind().await?;
    let app = app(
        client.clone(),
        Keys::new(&args.cluster_id),
        shutdown,
        origins,
        dev_issuer,
        api::Reservations::new(args.reservations_per_ip),
        (metrics_listener, stop_serving.clone()),
    );
    let served = match &tls {
        None => runtime::serve(listener, app, stop_serving).await,
        Some(tls) => {
            tls.spawn_reloader(stop_serving.clone());
            runtime::serve_tls(listener, tls, app, stop_serving).await
        }
    };
    let _ = client.quit().await;
    served.context("HTTP server failed")?;
    tracing::info!("registry stopped");
    Ok(())
}

/// The registry's complete HTTP app: [`api::router`] over the load set of `keys` (with metrics),
/// `/healthz`, `/readyz` (503 once `shutdown` is cancelled or when Redis does not answer), `/metrics` and
/// [`web::router`] with [`dev_token::router`] (`GET /v1/auth`, and the issuer when given). With a metrics
/// listener, `/metrics` is served there alone until its token is cancelled ([`metrics::mount`]).
pub fn app(
    client: Client,
    keys: Keys,
    shutdown: CancellationToken,
    origins: Arc<AllowedOrigins>,
    dev_issuer: Option<DevIssuer>,
    reservations: api::Reservations,
    (metrics_listener, stop_metrics): (Option<TcpListener>, CancellationToken),
) -> Router {
    let mut registry = Registry::default();
    let directory = MeteredDirectory::new(
        LoadSet::new(client.clone(), keys),
        RegistryMetrics::register(&mut registry),
    );
    let readiness = Readiness { client, shutdown };
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz).with_state(readiness))
        .merge(api::router_with(Arc::new(directory), origins, reservations))
        .merge(web::router())
        .merge(dev_token::router(dev_issuer));
    let metrics_route = metrics::route(Arc::new(Metrics::new(registry)));
    metrics::mount(app, metrics_route, metrics_listener, stop_metrics)
}

/// The development token issuer, when asked for and allowed (HMAC secret given, loopback address).
fn dev_issuer(args: &Args, addr: SocketAddr) -> anyhow::Result<Option<DevIssuer>> {
    if !args.dev_token_issuer {
        return Ok(None);
    }
    let (Some(path), true) = (&args.jwt_hmac_secret_file, addr.ip().is_loopback()) else {
        anyhow::bail!(
            "--dev-token-issuer mints tokens for anyone: it needs --jwt-hmac-secret-file and a \
             loopback --listen address"
        );
    };
    let secret = runtime::secret::read_bytes(path).context("--jwt-hmac-secret-file")?;
    tracing::warn!("development token issuer enabled: POST /v1/dev-token signs any name");
    Ok(Some(DevIssuer::new(
        &secret,
        args.jwt_issuer.clone(),
        args.jwt_audience.clone(),
    )))
}

#[derive(Clone)]
struct Readiness {
    client: Client,
    shutdown: CancellationToken,
}

async fn readyz(State(readiness): State<Readiness>) -> (StatusCode, &'static str) {
    if readiness.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n");
    }
    match tokio::time::timeout(
        READINESS_PING_TIMEOUT,
        readiness.client.ping::<String>(None),
    )
    .await
    {
        Ok(Ok(_)) => (StatusCode::OK, "ready\n"),
        Ok(Err(error)) => {
            tracing::debug!(%error, "readiness: Redis PING failed");
            (StatusCode::SERVICE_UNAVAILABLE, "redis unavailable\n")
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "redis unavailable\n"),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn defaults_match_the_documented_interface() {
        let args = Args::try_parse_from(["registry", "--redis-url", "redis://127.0.0.1:1"])
            .expect("parse");
        assert_eq!(args.listen.to_string(), "0.0.0.0:8081");
        assert_eq!(args.drain_delay, Duration::ZERO);
        assert_eq!(args.cluster_id, "default");
        assert!(args.redis.is_configured());
    }

    #[tokio::test]
    async fn refuses_to_start_without_redis() {
        let args = Args::try_parse_from(["registry"]).expect("parse");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let error = serve_on(listener, args, CancellationToken::new())
            .await
            .expect_err("must fail");
        assert!(error.to_string().contains("--redis-url"), "{error}");
    }
}
