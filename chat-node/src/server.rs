//! The HTTP and WebSocket edge, the only part of the node that knows the web framework (axum): routes
//! (`/ws`, `/healthz`, `/readyz`, `/metrics`, and in standalone mode the registry API and web page),
//! the WebSocket handshake, and serving until shutdown.
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
//! The upgraded socket is framed by the node itself ([`crate::ws`]: no buffer held while a connection
//! is idle); its message type plugs into the connection through [`WsMessage`].

pub mod door;

use crate::connection::{self, Incoming, WsMessage};
use crate::identity::Handshake;
use crate::node::Node;
use crate::ws::{Message, WsReader, WsWriter};
use axum::Extension;
use axum::Router;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use door::{Door, DoorListener};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use switchboard_runtime::serve_on;
use switchboard_runtime::tls::{Tls, TlsListener};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tungstenite::Utf8Bytes;

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
    Query(q): Query<WsQuery>,
    mut request: Request,
) -> Response {
    let headers = request.headers();
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
    let accept = match websocket_accept(headers) {
        Ok(accept) => accept,
        Err(refused) => return refused.into_response(),
    };
    let Some(on_upgrade) = request.extensions_mut().remove::<OnUpgrade>() else {
        return HandshakeRefused::NotAnUpgrade.into_response();
    };
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
    let max = node.settings.limits.max_frame_bytes;
    let span = tracing::info_span!("conn", user = q.user.as_deref().unwrap_or("?"));
    tokio::spawn(
        async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(e) => {
                    tracing::debug!(error = %e, "upgrade failed");
                    return;
                }
            };
            let (read, write) = tokio::io::split(TokioIo::new(upgraded));
            let handshake = Handshake {
                user: q.user,
                dm_since: q.dm_since,
                peer: Some(peer),
            };
            connection::run(
                node,
                WsWriter::new(write),
                WsReader::new(read, max),
                handshake,
            )
            .await;
        }
        .instrument(span),
    );
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONNECTION, HeaderValue::from_static("upgrade")),
            (header::UPGRADE, HeaderValue::from_static("websocket")),
            (header::SEC_WEBSOCKET_ACCEPT, accept),
        ],
    )
        .into_response()
}

/// The `Sec-WebSocket-Accept` answering a valid WebSocket handshake (RFC 6455 section 4.2.1), or why
/// one is refused.
fn websocket_accept(headers: &HeaderMap) -> Result<HeaderValue, HandshakeRefused> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Err(HandshakeRefused::NotAnUpgrade);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(HandshakeRefused::Version);
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|key| {
            HeaderValue::from_str(&tungstenite::handshake::derive_accept_key(key.as_bytes())).ok()
        })
        .ok_or(HandshakeRefused::Key)
}

/// Why a WebSocket handshake is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HandshakeRefused {
    /// No `Connection: upgrade` with `Upgrade: websocket` (426).
    NotAnUpgrade,
    /// A `Sec-WebSocket-Version` other than 13 (400).
    Version,
    /// No `Sec-WebSocket-Key` (400).
    Key,
}

impl IntoResponse for HandshakeRefused {
    fn into_response(self) -> Response {
        match self {
            HandshakeRefused::NotAnUpgrade => (
                StatusCode::UPGRADE_REQUIRED,
                [(header::UPGRADE, "websocket")],
                "this is a WebSocket endpoint: send Connection: upgrade and Upgrade: websocket\n",
            )
                .into_response(),
            HandshakeRefused::Version => (
                StatusCode::BAD_REQUEST,
                [(header::SEC_WEBSOCKET_VERSION, "13")],
                "unsupported Sec-WebSocket-Version: only 13\n",
            )
                .into_response(),
            HandshakeRefused::Key => {
                (StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n").into_response()
            }
        }
    }
}

/// The node's own framing at the connection ([`crate::ws`]): pings are answered by the connection.
impl WsMessage for Message {
    fn text(frame: Utf8Bytes) -> Self {
        Message::Text(frame)
    }

    fn ping() -> Self {
        Message::Ping(Default::default())
    }

    fn pong(payload: bytes::Bytes) -> Self {
        Message::Pong(payload)
    }

    fn pong_payload(&self) -> Option<bytes::Bytes> {
        match self {
            Message::Ping(p) => Some(p.clone()),
            _ => None,
        }
    }

    fn close(code: u16, reason: &'static str) -> Self {
        Message::Close(Some((code, reason)))
    }

    fn incoming(&self) -> Incoming<'_> {
        match self {
            Message::Text(t) => Incoming::Text(t.as_str()),
            Message::Binary => Incoming::Binary,
            Message::Ping(_) | Message::Pong(_) => Incoming::Control,
            Message::Close(_) => Incoming::Close,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    header::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn the_handshake_is_checked_and_answered_as_rfc_6455_says() {
        let good = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        assert_eq!(
            websocket_accept(&headers(&good)),
            Ok(HeaderValue::from_static("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="))
        );
        assert_eq!(
            websocket_accept(&headers(&good[1..])),
            Err(HandshakeRefused::NotAnUpgrade)
        );
        let mut old = good;
        old[2].1 = "8";
        assert_eq!(
            websocket_accept(&headers(&old)),
            Err(HandshakeRefused::Version)
        );
        assert_eq!(
            websocket_accept(&headers(&good[..3])),
            Err(HandshakeRefused::Key)
        );
    }
}
