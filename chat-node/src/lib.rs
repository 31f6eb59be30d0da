//! Switchboard `chat-node`: the socket server.
//!
//! ```text
//!            ┌──────────── chat-node ─────────────────────────────────────┐
//!  client ──▶│ server (/ws, ws) ─▶ connection ─▶ session ─▶ backend ──────┼──▶ Redis script / memory
//!            │         ▲ (same task) ◀── queue ◀── hub ◀── bus receiver ◀─┼─── pub/sub
//!            │ membership: score + heartbeat ─▶ registry load set         │
//!            │ drain: not ready ─▶ out of the load set ─▶ paced notices   │
//!            └────────────────────────────────────────────────────────────┘
//! ```
//!
//! A drain (first SIGTERM) turns the node not ready and closes admission, takes it out of the load set,
//! then tells its clients to `reconnect` in paced batches (`drain`), and closes whoever is left with
//! 1012 when `--drain-timeout` runs out.
//!
//! `auth` decides who a connection is (tokens or open identity), `session` what it may read and write
//! (private rooms by token grant or room ACL, last-seen of users it shares something with), `admin`
//! serves the room ACL API to token holders with `"admin": true`, `refusals` counts and logs what
//! is refused, and `attach` carries files in messages (records, updates, uploads and downloads over
//! HTTP; the store, types and thumbnails are the `switchboard-attachments` crate).
//!
//! The core (`protocol`, `names`, `limits`, `auth`, `hub`, `session`, `connection`, `backend::memory`) runs
//! without a socket, a web framework or Redis: `connection` (one task per connection, with one wake-up —
//! a frame queued, a kick, a revocation, the drain — and one timer for every deadline: reading, writing,
//! the optional write delay that batches live events per write, close codes) is generic over any
//! WebSocket sink and stream. `server`, `admin` and `standalone` are the
//! HTTP edge (the only modules that use axum; `server` answers the WebSocket handshake itself), `ws` the
//! node's own WebSocket framing on the upgraded socket (no buffer held while a connection is idle), and
//! `backend::redis` the Redis edge. See `PROTOCOL.md` for the wire protocol.
//!
//! `protocol`, `ws`, `names` and `identity`, and the token checks of `auth`, are the `switchboard-wire`
//! crate, re-exported here under these names: the part a client reaches before anything else checks
//! it, in a crate small enough for the fuzz targets to build alone.

pub mod admin;
pub mod attach;
pub mod auth;
pub mod backend;
pub mod config;
pub mod connection;
pub mod drain;
pub mod hub;
pub mod limits;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod outbox;
pub mod refusals;
pub mod server;
pub mod session;
mod standalone;

pub use config::Args;
pub use switchboard_wire::{identity, names, protocol, ws};

use anyhow::Context as _;
use backend::Backend;
use hub::Hub;
use node::{Node, NodeSettings};
use std::sync::Arc;
use std::time::Duration;
use switchboard_runtime::report::chain;
use tokio_util::sync::CancellationToken;

/// How often idle bus subscriptions are dropped and presence is refreshed.
const MAINTENANCE_EVERY: Duration = crate::config::PRESENCE_REFRESH;

/// Runs a node until SIGTERM/Ctrl-C, then drains: not ready, out of the load set, paced `reconnect`
/// notices, close, exit.
pub async fn run(args: Args) -> anyhow::Result<()> {
    switchboard_runtime::init_tracing(&args.log);
    let shutdown = switchboard_runtime::shutdown_on_signal();
    let listener = switchboard_runtime::bind(args.listen).await?;
    let running = start(args, listener).await?;
    shutdown.cancelled().await;
    running.drain().await;
    Ok(())
}

/// A started node (see [`start`]).
pub struct Running {
    /// Shared node state.
    pub node: Arc<Node>,
    /// The address it listens on.
    pub addr: std::net::SocketAddr,
    drain_timeout: Duration,
    stop_tasks: CancellationToken,
    stop_server: CancellationToken,
    server: tokio::task::JoinHandle<()>,
    membership: Option<tokio::task::JoinHandle<()>>,
    /// The attachment directory this node made for itself (standalone default), removed at the end.
    scratch: Option<std::path::PathBuf>,
}

/// Starts a node on `listener` and returns at once; used by [`run`] and by tests.
pub async fn start(args: Args, listener: tokio::net::TcpListener) -> anyhow::Result<Running> {
    let addr = listener.local_addr()?;
    let mut args = args;
    if args.advertise_url.is_none() {
        let host = if addr.ip().is_unspecified() {
            std::net::SocketAddr::new([127, 0, 0, 1].into(), addr.port())
        } else {
            addr
        };
        args.advertise_url = Some(format!("{}://{host}/ws", args.tls.websocket_scheme()));
    }
    let tls = switchboard_runtime::tls::Tls::from_args(&args.tls).context("--tls-cert-file")?;
    let metrics_listener = args.metrics.bind().await?;
    let scaled = args.redis.is_configured();
    let auth = auth::from_args(&args.auth, scaled, addr)?;
    let origins = registry::origins::AllowedOrigins::new(&args.allowed_origins)?;
    auth.warm_up().await;
    let dev_issuer = if args.auth.dev_token_issuer {
        tracing::warn!("development token issuer enabled: POST /v1/dev-token signs any name");
        auth::dev_issuer(&auth)
    } else {
        None
    };
    let settings = NodeSettings {
        id: args.resolved_node_id(),
        url: args.resolved_advertise_url(),
        capacity: args.capacity.max(1),
        history_cap: args.history_cap.max(1),
        limits: args.limits(),
        auth: Arc::new(auth),
        origins: Arc::new(origins),
    };
    let hub = Arc::new(Hub::new());
    let metrics = Arc::new(metrics::Metrics::new(&hub));
    let stop_tasks = CancellationToken::new();
    let (backend, loadset): (Arc<dyn Backend>, Option<switchboard_loadset::LoadSet>) = if scaled {
        let client = switchboard_redis::connect(&args.redis)
            .await
            .context("connecting to Redis")?;
        let subscriber = switchboard_redis::subscriber(&args.redis)
            .await
            .context("connecting the Redis subscriber")?;
        let keys = switchboard_redis::keys::Keys::new(&args.cluster_id);
        let loadset = switchboard_loadset::LoadSet::new(client.clone(), keys.clone());
        let backend = backend::redis::RedisBackend::new(
            client,
            subscriber,
            keys,
            hub.clone(),
            settings.history_cap,
            backend::redis::Durability {
                replicas: args.ack_replicas,
                timeout: args.ack_timeout,
            },
            stop_tasks.clone(),
        );
        (Arc::new(backend), Some(loadset))
    } else {
        (
            Arc::new(backend::memory::MemoryBackend::new(
                hub.clone(),
                settings.history_cap,
            )),
            None,
        )
    };
    let node_auth_mode = settings.auth.mode();
    tracing::info!(
        node = %settings.id,
        url = %settings.url,
        mode = if scaled { "scaled" } else { "standalone" },
        redis = %if scaled { args.redis.describe() } else { "none".into() },
        membership = %args.membership,
        auth = node_auth_mode,
        "chat-node listening on {}://{addr}",
        args.tls.http_scheme()
    );
    let pacing = drain::Pacing {
        timeout: args.drain_timeout,
        rate: args.drain_notice_rate,
    };
    let reported = loadset.is_none();
    let node = Node::with_drain(settings, hub, backend, metrics, pacing, reported);
    let scratch = match args
        .attachments
        .resolve(!scaled)
        .map_err(anyhow::Error::msg)
        .context("attachments")?
    {
        Some(config) => {
            let scratch = config.scratch.clone();
            let attachments = attach::Attachments::start(&node, config, stop_tasks.clone())
                .await
                .context("attachments: reading the cluster's URL-signing secret from the store")?;
            let _ = node.attachments.set(attachments);
            scratch
        }
        None => None,
    };

    let stop_server = CancellationToken::new();
    if let Some(tls) = &tls {
        tls.spawn_reloader(stop_tasks.clone());
    }
    let server = tokio::spawn(server::serve(
        node.clone(),
        listener,
        server::Extras {
            standalone: !scaled,
            dev_issuer,
            tls,
            metrics: metrics_listener,
        },
        stop_server.clone(),
    ));
    tokio::spawn(maintenance(node.clone(), stop_tasks.clone()));
    tokio::spawn(hub::run_presence_batches(
        node.hub.clone(),
        stop_tasks.clone(),
    ));
    let membership = loadset.map(|ls| {
        tokio::spawn(membership::run(
            node.clone(),
            ls,
            args.membership,
            args.heartbeat_ttl,
            node.draining.clone(),
        ))
    });
    Ok(Running {
        node,
        addr,
        drain_timeout: args.drain_timeout,
        stop_tasks,
        stop_server,
        server,
        membership,
        scratch,
    })
}

impl Running {
    /// Drains and stops: not ready and out of the load set, then `reconnect` to every client in paced
    /// batches ([`drain`]), wait for them to leave (at most the drain timeout), close the rest with 1012.
    pub async fn drain(self) {
        tracing::info!(connections = self.node.connections(), "draining");
        let deadline = tokio::time::Instant::now() + self.drain_timeout;
        self.node.draining.cancel();
        if let Some(m) = self.membership {
            let _ = m.await;
        }
        self.node.begin_drain(deadline);
        // At the deadline the connections left send their 1012 (each within a second): wait for those.
        while self.node.connections() > 0
            && tokio::time::Instant::now() < deadline + connection::CLOSE_SEND_TIMEOUT
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.stop_server.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.server).await;
        self.stop_tasks.cancel();
        if let Some(dir) = &self.scratch
            && let Err(e) = std::fs::remove_dir_all(dir)
        {
            tracing::warn!(error = %e, dir = %dir.display(), "could not remove the attachment directory");
        }
        tracing::info!(left = self.node.connections(), "stopped");
    }
}

async fn maintenance(node: Arc<Node>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(MAINTENANCE_EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        node.sweep_subscriptions().await;
        let mut rooms = Vec::new();
        let mut users = Vec::new();
        for (topic, listeners) in node.hub.snapshot() {
            match topic {
                hub::Topic::Room(r) => rooms.push((
                    r.to_string(),
                    listeners.iter().map(|u| u.to_string()).collect(),
                )),
                hub::Topic::User(u) => users.push(u.to_string()),
            }
        }
        let room_names = rooms.iter().map(|(r, _)| r.clone()).collect();
        if let Err(e) = node.backend.refresh(&node.settings.id, rooms, users).await {
            tracing::warn!(error = %chain(&e), "presence refresh failed");
        }
        node.announce_expired_presence(room_names).await;
    }
}
