//! The HTTP and WebSocket edge, the only part of the node that knows the web framework (axum): routes
//! (`/ws`, `/healthz`, `/readyz`, `/metrics`, and in standalone mode the registry API and web page),
//! the WebSocket upgrade with its buffer sizes, and serving until shutdown.
//!
//! ```text
//!  TCP ──▶ door (per-address and global bounds, header clock; see `door`) ──▶ [TLS] ──▶ serve ──▶ router
//!     router ──/ws──▶ Origin allowed? ─no─▶ 403
//!                     descriptors left for upgrades? ─no─▶ 503
//!                     └─yes─▶ upgrade ──▶ connection::run(sink, stream)  (generic)
//!            ──/readyz, /healthz, /metrics, (standalone) /v1/*, /, (dev) /v1/dev-token
//! ```
//!
//! With `--tls-cert-file` the door's sockets are TLS sockets (`switchboard_runtime::tls`): the
//! handshake runs behind the door, so it counts against the same bounds and header clock.
//!
//! axum's message type plugs into the connection through [`WsMessage`].

pub mod door;

use crate::connection::{self, Incoming, WsMessage};
use crate::identity::Handshake;
use crate::node::Node;
use axum::Extension;
use axum::Router;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use door::{Door, DoorListener};
use futures_util::StreamExt;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use switchboard_runtime::serve_on;
use switchboard_runtime::tls::{Tls, TlsListener};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Bytes of socket write buffering per connection. The library default (128 KiB) is sized for one
/// fast socket; 100k mostly idle chat connections need it small.
const SOCKET_BUFFER: usize = 4 * 1024;

/// Bytes the read buffer of a connection starts with. Client frames are small (a `send` is a few
/// hundred bytes) and an idle connection holds this for its whole life, so it starts at 512: a larger
/// frame grows the buffer to that frame's size (up to `--max-frame-bytes`) as it arrives.
const READ_BUFFER: usize = 512;

/// What some nodes serve besides [`router`], and whether over TLS.
#[derive(Debug, Default)]
pub struct Extras {
    /// A standalone node also answers the registry API and the web page.
    pub standalone: bool,
    /// The development token issuer (`POST /v1/dev-token`), when enabled.
    pub dev_issuer: Option<registry::dev_token::DevIssuer>,
    /// Serve HTTPS and WSS with this certificate.
    pub tls: Option<Arc<Tls>>,
    /// Serve `/metrics` on this listener alone (`--metrics-listen`) instead of with the other routes.
    pub metrics: Option<TcpListener>,
}

/// Serves `node` on `listener` until `stop` is cancelled, then stops accepting and waits for open
/// connections.
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    extras: Extras,
    stop: CancellationToken,
) {
    let fd_limit = door::raise_fd_limit();
    let door = Door::new(node.clone(), node.settings.limits.door.clone(), fd_limit);
    tracing::info!(fd_limit, "file-descriptor limit");
    let mut app = switchboard_runtime::metrics::mount(
        router(node.clone()),
        switchboard_runtime::metrics::route(node.clone()),
        extras.metrics,
        stop.clone(),
    );
    if extras.standalone {
        app = app.merge(crate::standalone::router(node));
    }
    if extras.standalone || extras.dev_issuer.is_some() {
        app = app.merge(registry::dev_token::router(extras.dev_issuer));
    }
    let tracked = door.clone();
    let app = app
        .layer(axum::middleware::from_fn(
            move |ConnectInfo(addr): ConnectInfo<SocketAddr>, request, next| {
                door::track(tracked.clone(), addr, request, next)
            },
        ))
        .layer(Extension(door.clone()));
    let listener = DoorListener::new(listener, door);
    let served = match extras.tls {
        None => serve_on(listener.tap_io(|io| no_delay(io)), app, stop).await,
        Some(tls) => {
            let listener = TlsListener::new(listener.closing_refused(), &tls)
                .tap_io(|io| no_delay(io.get_ref().0));
            serve_on(listener, app, stop).await
        }
    };
    if let Err(e) = served {
        tracing::error!(error = %e, "server failed");
    }
}

/// Frames are small and latency matters more than packet count: without TCP_NODELAY an ack written
/// right after a message waits for the client's delayed ACK (~40 ms).
fn no_delay(io: &door::Guarded) {
    if let Err(e) = io.tcp().set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
}

/// Routes every node serves on its listener: `/ws`, `/healthz`, `/readyz`, the room ACL admin API
/// (`/metrics` is mounted beside them or on its own listener by [`serve`]).
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/ws", get(ws_upgrade))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(node.clone())
        .merge(crate::admin::router(node.clone()))
        .merge(crate::attach::http::router(node))
}

async fn readyz(State(node): State<Arc<Node>>) -> Response {
    if node.draining.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response()
    } else if !node.backend.healthy() {
        (StatusCode::SERVICE_UNAVAILABLE, "bus down").into_response()
    } else if !node.reported() {
        (StatusCode::SERVICE_UNAVAILABLE, "no heartbeat yet").into_response()
    } else {
        "ready".into_response()
    }
}

/// A scrape first samples the gauges that are read from the node rather than updated in place.
impl switchboard_runtime::metrics::Exposition for Node {
    fn encode(&self) -> String {
        let (rooms, _) = self.hub.topic_counts();
        self.metrics.rooms.set(rooms as i64);
        self.metrics
            .draining
            .set(i64::from(self.draining.is_cancelled()));
        self.metrics.bus_up.set(i64::from(self.backend.healthy()));
        self.metrics.encode()
    }
}

#[derive(Deserialize, Default)]
struct WsQuery {
    user: Option<String>,
    dm_since: Option<u64>,
}

/// `/ws`: the `Origin` check (403 before the upgrade), then the upgrade. Tokens never travel in the
/// URL: in token mode the only query parameter read is `dm_since`.
async fn ws_upgrade(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    door: Option<Extension<Arc<Door>>>,
    headers: HeaderMap,
    Query(q): Query<WsQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let origin = headers
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or("?"));
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if !node.settings.origins.allows(origin, host) {
        node.metrics.refusals.record(
            "origin",
            Some(peer),
            None,
            &format!("origin {:?} not allowed", origin.unwrap_or("")),
        );
        return (
            StatusCode::FORBIDDEN,
            "origin not allowed: add it to --allowed-origins\n",
        )
            .into_response();
    }
    if let Some(Extension(door)) = door {
        if !door.upgrades_allowed() {
            let why = "the node is out of file descriptors for new connections";
            node.metrics
                .refusals
                .record("fd_headroom", Some(peer), None, why);
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                "this node is out of connections; ask the registry for another node\n",
            )
                .into_response();
        }
        door.upgrading(peer);
    }
    let limits = &node.settings.limits;
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(SOCKET_BUFFER)
        // The largest frame the node writes (a reply is cut at `max_reply_bytes`, a message is at
        // most `max_message_frame_bytes`) always fits behind what is still buffered; a frame that did
        // not would fail the write and drop the connection without a close frame.
        .max_write_buffer_size(
            2 * SOCKET_BUFFER + limits.max_reply_bytes.max(limits.max_message_frame_bytes()),
        )
        .max_message_size(limits.max_frame_bytes)
        .max_frame_size(limits.max_frame_bytes)
        .on_upgrade(move |socket| {
            let span = tracing::info_span!("conn", user = q.user.as_deref().unwrap_or("?"));
            let (sink, stream) = socket.split();
            let handshake = Handshake {
                user: q.user,
                dm_since: q.dm_since,
                peer: Some(peer),
            };
            connection::run(node, sink, stream, handshake).instrument(span)
        })
}

/// axum's messages at the connection: the frame's bytes are handed over without a copy (axum checks
/// once more that they are UTF-8, which they are by construction).
impl WsMessage for Message {
    fn text(frame: tungstenite::Utf8Bytes) -> Self {
        match Utf8Bytes::try_from(bytes::Bytes::from(frame)) {
            Ok(text) => Message::Text(text),
            // Unreachable: the bytes came from a `Utf8Bytes`.
            Err(_) => Message::Text(Utf8Bytes::from_static("")),
        }
    }

    fn ping() -> Self {
        Message::Ping(Default::default())
    }

    fn close(code: u16, reason: &'static str) -> Self {
        Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        }))
    }

    fn incoming(&self) -> Incoming<'_> {
        match self {
            Message::Text(t) => Incoming::Text(t.as_str()),
            Message::Binary(_) => Incoming::Binary,
            Message::Ping(_) | Message::Pong(_) => Incoming::Control,
            Message::Close(_) => Incoming::Close,
        }
    }
}
