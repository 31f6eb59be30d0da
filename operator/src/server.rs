//! The `operator` binary's wiring: flags, the HTTP endpoints, leader election and the two controllers.
//!
//! ```text
//! start ─▶ CRD installed? (else say how to install it) ─▶ /healthz /readyz /metrics on --listen
//!       ─▶ campaign for the Lease ─▶ leading ─▶ reconcile + loadset_sync controllers
//! SIGTERM ─▶ controllers stop ─▶ Lease released ─▶ HTTP server stops      (a second signal exits at once)
//! Lease lost ─▶ controllers stop, exit with an error (the Deployment restarts the pod as a standby)
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use kube::Client;
use switchboard_runtime::duration::within;
use switchboard_runtime::serve::BindError;
use switchboard_runtime::{LogArgs, bind, init_tracing, serve, shutdown_on_signal};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::context::{self, Context};
use crate::leader::{Elector, LeaseConfig};
use crate::loadset_sync::{self, SyncConfig, SyncContext};
use crate::metrics::Metrics;
use crate::observation::Observations;
use crate::reconcile;

/// Bounds of `--resync`: often enough to repair drift quickly, never a busy loop.
const RESYNC_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3600));
/// Bounds of `--lease-duration`: renewals (a seventh of it) and the renew deadline (two thirds) must fit
/// in; a standby must not wait for ever.
const LEASE_RANGE: (Duration, Duration) = (Duration::from_secs(3), Duration::from_secs(300));

/// Flags of the `operator` binary (every flag also reads an environment variable).
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "operator",
    version,
    about = "Switchboard Kubernetes operator: runs ChatCluster resources."
)]
pub struct Args {
    /// Address of the /healthz, /readyz and /metrics endpoints.
    #[arg(
        long,
        env = "SWITCHBOARD_OPERATOR_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub listen: SocketAddr,
    /// Cluster DNS domain, used in the stable hostnames of managed Redis.
    #[arg(
        long,
        env = "SWITCHBOARD_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    pub cluster_domain: String,
    /// Watch only this namespace (default: every namespace).
    #[arg(long, env = "SWITCHBOARD_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Time between full load-set resyncs (repairing drift), 1s to 1h.
    #[arg(
        long,
        env = "SWITCHBOARD_RESYNC",
        default_value = "10s",
        value_parser = within(RESYNC_RANGE.0, RESYNC_RANGE.1)
    )]
    pub resync: Duration,
    /// Campaign for a Lease before reconciling (turn off only with a single replica).
    #[arg(long, env = "SWITCHBOARD_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Namespace of the Lease (default: POD_NAMESPACE, else the client's default namespace).
    #[arg(long, env = "SWITCHBOARD_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Name of the Lease.
    #[arg(
        long,
        env = "SWITCHBOARD_LEASE_NAME",
        default_value = "switchboard-operator"
    )]
    pub lease_name: String,
    /// How long a Lease is valid without renewal (a standby takes over after seeing it unchanged this
    /// long); the leader steps down after two thirds of it without a renewal. 3s to 5m.
    #[arg(
        long,
        env = "SWITCHBOARD_LEASE_DURATION",
        default_value = "15s",
        value_parser = within(LEASE_RANGE.0, LEASE_RANGE.1)
    )]
    pub lease_duration: Duration,
    /// This replica's identity in the Lease and in Events (default: the pod name / hostname and pid).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

/// Errors that stop the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No Kubernetes client configuration (in-cluster or kubeconfig).
    #[error("no Kubernetes configuration (in-cluster service account or KUBECONFIG)")]
    Client(#[source] kube::Error),
    /// The start-up check failed (e.g. the CRD is not installed; the message says how to install it).
    #[error(transparent)]
    Startup(#[from] Box<reconcile::Error>),
    /// The HTTP listen address could not be bound.
    #[error(transparent)]
    Listen(#[from] BindError),
    /// Leadership was lost or the election failed.
    #[error(transparent)]
    Leader(#[from] crate::leader::Error),
}

/// Settings of the controllers (what the flags become; tests build it directly).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Settings of both controllers (cluster domain, namespace) and of the reconciler (requeue, backoff).
    pub reconcile: context::Config,
    /// Load-set sync settings.
    pub sync: SyncConfig,
    /// Identity in Events.
    pub identity: String,
}

impl Settings {
    /// Defaults with the given identity.
    pub fn new(identity: &str) -> Self {
        Self {
            reconcile: context::Config::default(),
            sync: SyncConfig::default(),
            identity: identity.to_owned(),
        }
    }
}

/// Runs both controllers with `client` until `shutdown` is cancelled.
pub async fn run_controllers(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let (observations, changed) = Observations::new();
    let ctx = Context::new(
        client,
        &settings.identity,
        metrics,
        settings.reconcile,
        observations,
    );
    let sctx = SyncContext::new(ctx.clone(), settings.sync);
    info!("controllers started");
    tokio::join!(
        reconcile::run(ctx, changed, shutdown.clone()),
        loadset_sync::run(sctx, shutdown),
    );
    info!("controllers stopped");
}

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

/// The `/healthz`, `/readyz` and `/metrics` router. Ready means started and not shutting down; a standby
/// replica is ready too (it can take over at any moment).
fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<HttpState>| async move {
                if s.ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }),
        )
        .with_state(state.clone())
        .merge(switchboard_runtime::metrics::route(state.metrics))
}

fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "operator".to_owned());
    format!("{host}-{}", std::process::id())
}

/// The `operator` binary: everything in the module docs.
pub async fn run(args: Args) -> Result<(), Error> {
    init_tracing(&args.log);
    let shutdown = shutdown_on_signal();
    let client = Client::try_default().await.map_err(Error::Client)?;
    reconcile::check_crd(&client, args.namespace.as_deref())
        .await
        .map_err(Box::new)?;

    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(true));
    let listener = bind(args.listen).await?;
    info!(addr = %args.listen, "serving /healthz /readyz /metrics");
    let http_stop = CancellationToken::new();
    let http = tokio::spawn(serve(
        listener,
        router(HttpState {
            metrics: metrics.clone(),
            ready: ready.clone(),
        }),
        http_stop.clone(),
    ));

    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let mut settings = Settings::new(&identity);
    settings.reconcile.cluster_domain = args.cluster_domain.clone();
    settings.reconcile.namespace = args.namespace.clone();
    settings.sync.resync = args.resync;

    let result = if args.leader_elect {
        let namespace = args
            .lease_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| client.default_namespace().to_owned());
        let config = LeaseConfig::new(&namespace, &args.lease_name, &identity)
            .with_lease_duration(args.lease_duration);
        run_with_leader_election(client, settings, metrics, config, shutdown.clone()).await
    } else {
        run_controllers(client, settings, metrics, shutdown.clone()).await;
        Ok(())
    };
    ready.store(false, Ordering::Relaxed);
    http_stop.cancel();
    let _ = http.await;
    result
}

/// Campaigns for the Lease of `lease`; runs the controllers only while leading. On `shutdown` the
/// controllers stop first, then the Lease is released. Everything runs inside the returned future (no
/// detached tasks), so dropping it is a crash: the Lease then simply expires.
pub async fn run_with_leader_election(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    lease: LeaseConfig,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let elector = Elector::new(client.clone(), lease);
    let (leading_tx, mut leading) = watch::channel(false);
    let election_stop = CancellationToken::new();
    let campaign = elector.run(leading_tx, election_stop.clone());
    let work = async {
        info!(lease = %elector.config().name, namespace = %elector.config().namespace, "waiting for leadership");
        let became_leader = tokio::select! {
            () = shutdown.cancelled() => false,
            changed = async { leading.wait_for(|l| *l).await.is_ok() } => changed,
        };
        let mut lost = false;
        if became_leader {
            metrics.leader.set(1);
            let controllers_stop = CancellationToken::new();
            let controllers =
                run_controllers(client, settings, metrics.clone(), controllers_stop.clone());
            tokio::pin!(controllers);
            tokio::select! {
                () = &mut controllers => {}
                () = shutdown.cancelled() => {
                    controllers_stop.cancel();
                    controllers.await;
                }
                _ = async { leading.wait_for(|l| !*l).await.is_ok() } => {
                    lost = true;
                    controllers_stop.cancel();
                    controllers.await;
                }
            }
            metrics.leader.set(0);
        }
        election_stop.cancel();
        lost
    };
    let (campaign, lost) = tokio::join!(campaign, work);
    campaign?;
    if lost {
        return Err(crate::leader::Error::Lost(elector.config().name.clone()).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    #[test]
    fn duration_flags_default_parse_and_refuse_out_of_range_values() {
        use clap::Parser;
        let args = Args::try_parse_from(["operator"]).expect("defaults");
        assert_eq!(args.resync, Duration::from_secs(10));
        assert_eq!(args.lease_duration, Duration::from_secs(15));
        let args = Args::try_parse_from(["operator", "--resync", "2m", "--lease-duration", "3s"])
            .expect("in range");
        assert_eq!(args.resync, Duration::from_secs(120));
        assert_eq!(args.lease_duration, Duration::from_secs(3));
        for bad in [
            ["--resync", "500ms"],
            ["--resync", "2h"],
            ["--resync", "10"],
            ["--lease-duration", "2s"],
            ["--lease-duration", "6m"],
        ] {
            let err = Args::try_parse_from(["operator", bad[0], bad[1]])
                .expect_err("out of range or without a unit");
            assert!(err.to_string().contains(bad[1]), "{bad:?}: {err}");
        }
    }

    #[tokio::test]
    async fn health_and_metrics_endpoints_answer() {
        let metrics = Arc::new(Metrics::new());
        metrics.reconciled("chatcluster", Duration::from_millis(3));
        let ready = Arc::new(AtomicBool::new(true));
        let app = router(HttpState {
            metrics,
            ready: ready.clone(),
        });
        let get = |path: &str| Request::get(path).body(Body::empty()).unwrap_or_default();
        let health = app
            .clone()
            .oneshot(get("/healthz"))
            .await
            .map(|r| r.status());
        assert_eq!(health.ok(), Some(StatusCode::OK));
        let readyz = app
            .clone()
            .oneshot(get("/readyz"))
            .await
            .map(|r| r.status());
        assert_eq!(readyz.ok(), Some(StatusCode::OK));
        ready.store(false, Ordering::Relaxed);
        let readyz = app
            .clone()
            .oneshot(get("/readyz"))
            .await
            .map(|r| r.status());
        assert_eq!(readyz.ok(), Some(StatusCode::SERVICE_UNAVAILABLE));
        let body = app.oneshot(get("/metrics")).await.map(|r| r.into_body());
        let bytes = match body {
            Ok(b) => axum::body::to_bytes(b, 1 << 20).await.unwrap_or_default(),
            Err(_) => Default::default(),
        };
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.contains(
                "switchboard_operator_reconciliations_total{controller=\"chatcluster\"} 1"
            ),
            "{text}"
        );
    }
}
