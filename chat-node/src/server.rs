//! The HTTP and WebSocket edge: routes, the per-connection reader and writer, health and metrics.
//!
//! ```text
//!  socket ──▶ reader (this task) ──▶ Session::on_text ──▶ backend / replies
//!                                                   │
//!  socket ◀── writer task ◀── bounded queue ◀── hub dispatch, replies
//! ```
//!
//! One bounded queue and one writer per connection; the writer feeds everything already queued and
//! flushes once. A full queue closes that connection (4008), nobody else waits for it.

use crate::hub::{Out, SessionHandle};
use crate::identity::{self, Handshake, Step};
use crate::node::Node;
use crate::protocol::{ServerFrame, close, encode};
use crate::session::{Control, Session};
use axum::Router;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Bytes of socket read/write buffering per connection. The library default (128 KiB each) is sized
/// for one fast socket; 100k mostly idle chat connections need it small.
const SOCKET_BUFFER: usize = 4 * 1024;
/// Longest a close frame may take to send to a client that stopped reading.
const CLOSE_SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Routes every node serves: `/ws`, `/healthz`, `/readyz`, `/metrics`.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/ws", get(ws_upgrade))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(node.clone())
        .merge(switchboard_runtime::metrics::route(node))
}

async fn readyz(State(node): State<Arc<Node>>) -> Response {
    if node.draining.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response()
    } else if !node.backend.healthy() {
        (StatusCode::SERVICE_UNAVAILABLE, "bus down").into_response()
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

async fn ws_upgrade(
    State(node): State<Arc<Node>>,
    Query(q): Query<WsQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let limits = &node.settings.limits;
    ws.read_buffer_size(SOCKET_BUFFER)
        .write_buffer_size(SOCKET_BUFFER)
        .max_write_buffer_size(SOCKET_BUFFER.max(limits.max_frame_bytes) * 4)
        .max_message_size(limits.max_frame_bytes)
        .max_frame_size(limits.max_frame_bytes)
        .on_upgrade(move |socket| {
            let span = tracing::info_span!("conn", user = q.user.as_deref().unwrap_or("?"));
            connection(
                node,
                socket,
                Handshake {
                    user: q.user,
                    dm_since: q.dm_since,
                },
            )
            .instrument(span)
        })
}

/// Sends a close frame, giving up after [`CLOSE_SEND_TIMEOUT`] on a client that stopped reading.
async fn send_close<S>(sink: &mut S, code: u16, reason: &'static str)
where
    S: futures_util::Sink<Message> + Unpin,
{
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }));
    let _ = tokio::time::timeout(CLOSE_SEND_TIMEOUT, sink.send(frame)).await;
}

async fn close_now(mut socket: WebSocket, code: u16, reason: &'static str) {
    send_close(&mut socket, code, reason).await;
}

async fn connection(node: Arc<Node>, mut socket: WebSocket, handshake: Handshake) {
    let Some(_admission) = node.admit() else {
        let reason = if node.draining.is_cancelled() {
            "node draining, ask the registry again"
        } else {
            "node full, ask the registry again"
        };
        return close_now(socket, close::TRY_AGAIN_LATER, reason).await;
    };
    let identity = match identity::identify(&handshake) {
        Ok(Step::Done(id)) => id,
        Ok(Step::NeedHello) => {
            let first = tokio::time::timeout(crate::config::HELLO_TIMEOUT, socket.recv()).await;
            match first {
                Err(_) => {
                    return close_now(socket, close::HELLO_TIMEOUT, "no hello within 10 s").await;
                }
                Ok(Some(Ok(Message::Text(t)))) => match identity::identify_hello(t.as_str()) {
                    Ok(id) => id,
                    Err(r) => return close_now(socket, r.code, r.reason).await,
                },
                Ok(_) => {
                    return close_now(
                        socket,
                        close::INVALID_IDENTITY,
                        "the first frame must be hello",
                    )
                    .await;
                }
            }
        }
        Err(r) => return close_now(socket, r.code, r.reason).await,
    };

    let limits = node.settings.limits.clone();
    let (tx, rx) = mpsc::channel(limits.outbound_queue);
    let kill = CancellationToken::new();
    let handle = Arc::new(SessionHandle::new(
        node.next_session_id(),
        Arc::from(identity.user.as_str()),
        tx.clone(),
        kill.clone(),
    ));
    let (sink, mut stream) = socket.split();
    let writer = tokio::spawn(writer(sink, rx, handle.clone(), kill.clone()).in_current_span());

    let mut session = Session::start(node.clone(), handle.clone(), identity.dm_since).await;
    tracing::debug!(session = session.name(), "session started");
    let drained = read_loop(
        &node,
        &mut session,
        &mut stream,
        &handle,
        &kill,
        &tx,
        limits.idle_timeout,
    )
    .await;
    session.end().await;
    // The writer ends on an explicit close: the handle (shared with the hub until `end`) holds a
    // sender too, so the queue never closes by itself.
    let goodbye = if drained {
        Out::Close(close::RESTART, "node shutting down, ask the registry again")
    } else {
        Out::Close(close::NORMAL, "")
    };
    if tokio::time::timeout(CLOSE_SEND_TIMEOUT, tx.send(goodbye))
        .await
        .is_err()
    {
        kill.cancel();
    }
    drop(tx);
    let _ = writer.await;
}

/// Reads until the connection ends. Returns true if it ended because the node drains.
async fn read_loop(
    node: &Arc<Node>,
    session: &mut Session,
    stream: &mut SplitStream<WebSocket>,
    handle: &Arc<SessionHandle>,
    kill: &CancellationToken,
    tx: &mpsc::Sender<Out>,
    idle: Duration,
) -> bool {
    let mut drain_notified = false;
    let drain_deadline = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(drain_deadline);
    loop {
        tokio::select! {
            biased;
            () = kill.cancelled() => return false,
            () = node.draining.cancelled(), if !drain_notified => {
                drain_notified = true;
                let retry_after_ms = fastrand::u64(0..1000);
                let _ = tx.try_send(Out::Frame(encode(&ServerFrame::Reconnect { reason: "draining", retry_after_ms })));
                // Give the client time to leave by itself; close it well inside the drain timeout.
                drain_deadline.as_mut().reset(tokio::time::Instant::now() + Duration::from_millis(retry_after_ms + 2000));
            }
            () = &mut drain_deadline => return true,
            next = tokio::time::timeout(idle, stream.next()) => match next {
                Err(_) => {
                    handle.kick(close::IDLE);
                    return false;
                }
                Ok(None) | Ok(Some(Ok(Message::Close(_)))) => return false,
                Ok(Some(Err(e))) => {
                    if is_too_big(&e) {
                        handle.kick(close::TOO_BIG);
                    }
                    tracing::debug!(error = %e, "read failed");
                    return false;
                }
                Ok(Some(Ok(Message::Text(t)))) => {
                    if let Control::Close(code) = session.on_text(t.as_str()).await {
                        handle.kick(code);
                        return false;
                    }
                }
                Ok(Some(Ok(Message::Binary(_)))) => {
                    if let Control::Close(code) = session.on_binary() {
                        handle.kick(code);
                        return false;
                    }
                }
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            }
        }
    }
}

fn is_too_big(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(tungstenite::Error::Capacity(_)) = s.downcast_ref::<tungstenite::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

async fn writer(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Out>,
    handle: Arc<SessionHandle>,
    kill: CancellationToken,
) {
    let mut ping = tokio::time::interval(crate::config::PING_INTERVAL);
    ping.tick().await;
    let closing = loop {
        tokio::select! {
            biased;
            () = kill.cancelled() => {
                let code = handle.kicked_with().unwrap_or(close::NORMAL);
                break Some((code, close_reason(code)));
            }
            _ = ping.tick() => {
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    break None;
                }
            }
            out = rx.recv() => match out {
                None => break Some((close::NORMAL, "")),
                Some(first) => match write_batch(&mut sink, first, &mut rx).await {
                    Ok(None) => {}
                    Ok(Some(close)) => break Some(close),
                    Err(()) => break None,
                },
            }
        }
    };
    if let Some((code, reason)) = closing {
        send_close(&mut sink, code, reason).await;
    }
    // Make the reader stop too if the writer ended first (socket error).
    kill.cancel();
}

/// Feeds `first` and everything already queued behind it, then flushes once. Returns the close
/// request met on the way, if any; `Err` when the socket failed.
async fn write_batch(
    sink: &mut SplitSink<WebSocket, Message>,
    first: Out,
    rx: &mut mpsc::Receiver<Out>,
) -> Result<Option<(u16, &'static str)>, ()> {
    let mut next = Some(first);
    let mut closing = None;
    while let Some(out) = next.take() {
        match out {
            Out::Frame(bytes) => sink.feed(Message::Text(bytes)).await.map_err(drop)?,
            Out::Close(code, reason) => {
                closing = Some((code, reason));
                break;
            }
        }
        next = rx.try_recv().ok();
    }
    sink.flush().await.map_err(drop)?;
    Ok(closing)
}

fn close_reason(code: u16) -> &'static str {
    match code {
        close::SLOW_CONSUMER => {
            "slow consumer: outbound queue overflowed; reconnect and re-join with since"
        }
        close::FLOODING => "flooding: too many frames refused by the rate limit",
        close::IDLE => "idle timeout",
        close::TOO_BIG => "frame larger than max_frame_bytes",
        close::RESTART => "node shutting down, ask the registry again",
        _ => "",
    }
}
