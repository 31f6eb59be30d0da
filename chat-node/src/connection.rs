//! One WebSocket connection from admission to close: identity, the reading that feeds the session, and
//! the writing that drains its queue — generic over the socket, so it runs on the node's own framing at
//! the edge (`server`, [`crate::ws`]) and on in-memory sinks and streams in tests.
//!
//! ```text
//!  stream ──▶ reading ──▶ Session::on_text ──▶ backend / replies
//!                      (one task)          │
//!  sink   ◀── writing ◀── bounded queue ◀── hub dispatch, replies, pongs, the keepalive ping
//! ```
//!
//! One task per connection: it waits for the client, one wake-up (a frame queued, a kick, a
//! revocation, the drain: [`SessionHandle::until`]) and one timer for every deadline (the keepalive
//! among them) at once, and keeps writing while it handles a frame ([`Writer::drive`]) — a reply that
//! waits for room in the queue is made room for by the same task. The writing hands everything already
//! queued to the socket and flushes once; a write the client is slow to take never stops the reading.
//! With a write delay (`--write-delay`) live events are held that long before the write, so those
//! arriving meanwhile share it; half a live lane, a reply or the end is written at once.
//!
//! The queue is bounded in frames and in bytes: fan-out into a full queue closes that connection
//! (4008) and nobody else waits for it; a reply to the client's own request waits a little for room
//! (the reading stops meanwhile), then closes it the same way. The writing gives up
//! on a socket the client stopped reading as soon as the session is closed: it sends the close frame
//! for at most a second (`CLOSE_SEND_TIMEOUT`), so a client that reads nothing at all loses the TCP
//! connection without ever seeing its close frame, and holds no memory or task on the node. Every way
//! a connection ends maps to one close code (`PROTOCOL.md` section 7): 1000 normal, 1002 protocol
//! violation, 1007 not UTF-8, 1009 too big, 1012 drain, 1013 full or draining, 4001 identity, 4002 no
//! hello, 4003 idle, 4008 slow consumer, 4011 token expired, 4029 flooding. Refusals among them are
//! counted and logged with the peer ([`crate::refusals`]).

use crate::drain::Notice;
use crate::hub::{Out, SessionHandle};
use crate::identity::{self, Handshake, Identity, Rejected, Step};
use crate::node::Node;
use crate::protocol::{ServerFrame, close, encode};
use crate::session::{Control, Session};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use switchboard_runtime::report::chain;
use tungstenite::Utf8Bytes;

/// Longest a close frame may take to send to a client that stopped reading.
pub const CLOSE_SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest the writer may take to send what is queued after the session ended by itself (normal close
/// or drain) before the connection is cut.
const WRITER_FINISH_TIMEOUT: Duration = Duration::from_secs(5);

/// A received WebSocket message, as the reader sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// A text message.
    Text(&'a str),
    /// A binary message (refused: the protocol is JSON text).
    Binary,
    /// A ping or pong (counts as activity, nothing else).
    Control,
    /// The client closes.
    Close,
}

/// What a connection needs from a WebSocket message type: implemented here for tungstenite's
/// [`tungstenite::Message`] and at the edge for the web framework's.
pub trait WsMessage: Send + 'static {
    /// A text message carrying `frame` (the shared bytes, not a copy).
    fn text(frame: Utf8Bytes) -> Self;
    /// A ping with an empty payload.
    fn ping() -> Self;
    /// A pong answering a ping that carried `payload`.
    fn pong(payload: bytes::Bytes) -> Self;
    /// The payload of a received ping that the connection must answer; `None` for anything else, and
    /// for a ping the WebSocket library answers by itself.
    fn pong_payload(&self) -> Option<bytes::Bytes> {
        None
    }
    /// A close frame with `code` and `reason`.
    fn close(code: u16, reason: &'static str) -> Self;
    /// What a received message is.
    fn incoming(&self) -> Incoming<'_>;
}

impl WsMessage for tungstenite::Message {
    fn text(frame: Utf8Bytes) -> Self {
        Self::Text(frame)
    }

    fn ping() -> Self {
        Self::Ping(Default::default())
    }

    fn pong(payload: bytes::Bytes) -> Self {
        Self::Pong(payload)
    }

    fn close(code: u16, reason: &'static str) -> Self {
        Self::Close(Some(tungstenite::protocol::CloseFrame {
            code: code.into(),
            reason: Utf8Bytes::from_static(reason),
        }))
    }

    fn incoming(&self) -> Incoming<'_> {
        match self {
            Self::Text(t) => Incoming::Text(t.as_str()),
            Self::Binary(_) => Incoming::Binary,
            Self::Ping(_) | Self::Pong(_) | Self::Frame(_) => Incoming::Control,
            Self::Close(_) => Incoming::Close,
        }
    }
}

/// Sends a close frame, giving up after [`CLOSE_SEND_TIMEOUT`] on a client that stopped reading.
async fn send_close<M, S>(sink: &mut S, code: u16, reason: &'static str)
where
    M: WsMessage,
    S: Sink<M> + Unpin,
{
    let _ = tokio::time::timeout(CLOSE_SEND_TIMEOUT, sink.send(M::close(code, reason))).await;
}

/// Runs one upgraded connection until it closes: admission (1013 when full or draining), identity
/// (`?user=` or a first `hello` within [`crate::config::HELLO_TIMEOUT`]), then the session with its
/// reading and writing in this one task.
///
/// Memory: this future is most of what an idle connection costs, so what only admission, identity,
/// a frame being handled or the end needs is not kept in it while the connection waits — identity
/// runs in a future of its own that is gone once it returns, and the large futures of the session
/// (start, a frame, revocations, end) are boxed for the time they run.
pub async fn run<M, S, R, E>(node: Arc<Node>, mut sink: S, mut stream: R, handshake: Handshake)
where
    M: WsMessage,
    S: Sink<M> + Unpin + Send + 'static,
    S::Error: std::fmt::Display,
    R: Stream<Item = Result<M, E>> + Unpin,
    E: std::error::Error + 'static,
{
    let peer = handshake.peer;
    let Some(_admission) = node.admit() else {
        let (reason, metric) = if node.draining.is_cancelled() {
            ("node draining, ask the registry again", "draining")
        } else {
            ("node full, ask the registry again", "capacity")
        };
        node.metrics.refusals.record(metric, peer, None, reason);
        return send_close(&mut sink, close::TRY_AGAIN_LATER, reason).await;
    };
    let Some(identity) = identify(&node, &mut sink, &mut stream, handshake).await else {
        return;
    };

    let limits = &node.settings.limits;
    let (outbound_queue, outbound_bytes, idle) = (
        limits.outbound_queue,
        limits.outbound_bytes,
        limits.idle_timeout,
    );
    // Two lanes (live events, replies) of `outbound_queue` frames each: see `SessionHandle`.
    let handle = Arc::new(
        SessionHandle::new(
            node.next_session_id(),
            Arc::from(identity.user.as_str()),
            outbound_queue,
        )
        .with_outbound_bytes(outbound_bytes),
    );
    let mut w = Writer::new(sink);
    let mut session = w
        .drive(
            Box::pin(Session::start(
                node.clone(),
                handle.clone(),
                &identity,
                peer,
            )),
            &handle,
        )
        .await;
    drop(identity);
    tracing::debug!(session = session.name(), "session started");
    let drained = read_loop(&node, &mut session, &mut stream, &mut w, &handle, idle).await;
    w.drive(Box::pin(session.end()), &handle).await;
    if handle.kicked_with() == Some(close::SLOW_CONSUMER) {
        node.hub.stats.slow_consumers.inc();
    }
    if let Some((metric, what)) = handle.kicked_with().and_then(refusal_of) {
        node.metrics
            .refusals
            .record(metric, peer, Some(&handle.user), what);
    }
    // The writer ends on an explicit close, queued behind whatever is still on its way.
    if drained {
        handle.close_after_queued(close::RESTART, "node shutting down, ask the registry again");
    } else {
        handle.close_after_queued(close::NORMAL, "");
    }
    if tokio::time::timeout(WRITER_FINISH_TIMEOUT, Box::pin(w.pump(&handle)))
        .await
        .is_err()
    {
        // The client stopped reading: cut it (the writer sends the close frame for a moment only).
        handle.stop();
        Box::pin(w.pump(&handle)).await;
    }
}

/// Identifies the client (`?user=`, a token, or a first `hello` within
/// [`crate::config::HELLO_TIMEOUT`]); `None` when it was refused (after its close frame) or went away.
async fn identify<M, S, R, E>(
    node: &Node,
    sink: &mut S,
    stream: &mut R,
    handshake: Handshake,
) -> Option<Identity>
where
    M: WsMessage,
    S: Sink<M> + Unpin,
    R: Stream<Item = Result<M, E>> + Unpin,
    E: std::error::Error + 'static,
{
    let peer = handshake.peer;
    let refusals = &node.metrics.refusals;
    let identity = match identity::identify(&node.settings.auth, &handshake) {
        Ok(Step::Done(id)) => Ok(id),
        Ok(Step::NeedHello) => {
            match tokio::time::timeout(crate::config::HELLO_TIMEOUT, stream.next()).await {
                Err(_) => {
                    refusals.record("hello_timeout", peer, None, "no hello within 10 s");
                    send_close(sink, close::HELLO_TIMEOUT, "no hello within 10 s").await;
                    return None;
                }
                Ok(Some(Ok(m))) => match m.incoming() {
                    Incoming::Text(hello) => {
                        Box::pin(identity::identify_hello(&node.settings.auth, hello)).await
                    }
                    _ => Err(Rejected {
                        code: close::INVALID_IDENTITY,
                        reason: "the first frame must be hello",
                        metric: "identity",
                    }),
                },
                Ok(Some(Err(e))) => {
                    // A WebSocket-level violation before hello gets its close code; a socket
                    // that failed, nothing.
                    if let Some(code) = close_code_of(&e) {
                        send_close(sink, code, close_reason(code)).await;
                    }
                    return None;
                }
                // The client went away before hello.
                Ok(None) => return None,
            }
        }
        Err(r) => Err(r),
    };
    match identity {
        Ok(id) => Some(id),
        Err(r) => {
            refusals.record(r.metric, peer, handshake.user.as_deref(), r.reason);
            send_close(sink, r.code, r.reason).await;
            None
        }
    }
}

/// Reads until the connection ends, writing meanwhile. Returns true if it ended because the node
/// drains.
async fn read_loop<M, S, R, E>(
    node: &Arc<Node>,
    session: &mut Session,
    stream: &mut R,
    w: &mut Writer<S>,
    handle: &Arc<SessionHandle>,
    idle: Duration,
) -> bool
where
    M: WsMessage,
    S: Sink<M> + Unpin,
    S::Error: std::fmt::Display,
    R: Stream<Item = Result<M, E>> + Unpin,
    E: std::error::Error + 'static,
{
    // The drain turn (`crate::drain`): taken, boxed, once the drain has begun (the node wakes every
    // session then); until then an idle connection holds no wait of its own for it.
    let mut drain_turn: Option<Pin<Box<dyn Future<Output = Notice> + Send + '_>>> = None;
    let mut drain_notified = false;
    // One timer for every deadline — the token's expiry, the end of the drain notice's grace, the
    // idle timeout (moved on by every frame the client sends, not by what is written to it) and the
    // keepalive ping: an idle connection holds one timer entry.
    let mut expires_at = session.expires_at();
    let mut expiry = deadline_of(expires_at);
    let mut drain_deadline = None;
    let now = tokio::time::Instant::now();
    let mut idle_at = now + idle;
    let mut ping_at = now + crate::config::PING_INTERVAL;
    // The write delay: live events queued while it runs leave in one write when it ends (or at once
    // once half the live lane is full). While they are held the timer's deadline is no later than the
    // end of the hold, and the timer firing for any reason ends it: a flag, not one more instant in
    // every idle connection (with one, idle memory rose by about 0.25 KiB per connection, most likely
    // the task crossing into the allocator's next size class).
    let mut holding = false;
    let deadline = tokio::time::sleep_until(expiry.min(idle_at).min(ping_at));
    tokio::pin!(deadline);
    loop {
        if handle.is_kicked() {
            return false;
        }
        let current = session.expires_at();
        if current != expires_at {
            expires_at = current;
            expiry = deadline_of(expires_at);
        }
        let next = drain_deadline
            .map_or(expiry, |d: tokio::time::Instant| d.min(expiry))
            .min(idle_at)
            .min(ping_at);
        let next = if holding {
            next.min(deadline.deadline())
        } else {
            next
        };
        if deadline.deadline() != next {
            deadline.as_mut().reset(next);
        }
        let write = w.writing() && !w.unflushed;
        let drain_due = drain_turn.is_none() && !drain_notified;
        tokio::select! {
            biased;
            () = &mut deadline => {
                // The expiry wins a tie, then the drain, then the idle timeout, then the ping.
                let now = tokio::time::Instant::now();
                if now >= expiry {
                    handle.kick(close::TOKEN_EXPIRED);
                    return false;
                }
                if drain_deadline.is_some_and(|d| now >= d) {
                    return true;
                }
                if now >= idle_at {
                    handle.kick(close::IDLE);
                    return false;
                }
                if now >= ping_at {
                    // Through the queue, one at a time: a client that stopped reading holds one.
                    handle.queue_ping();
                    ping_at = now + crate::config::PING_INTERVAL;
                }
                if holding {
                    holding = false;
                    if write && handle.has_queued() {
                        w.write_some(handle).await;
                        if !w.writing() {
                            return false;
                        }
                    }
                }
            }
            notice = std::future::poll_fn(|cx| poll_turn(&mut drain_turn, cx)), if !drain_notified => {
                drain_notified = true;
                drain_turn = None;
                let retry_after_ms = notice.retry_after.as_millis() as u64;
                handle.deliver(&encode(&ServerFrame::Reconnect { reason: "draining", retry_after_ms }));
                // Give the client time to leave by itself; close it well inside the drain timeout.
                drain_deadline = Some(tokio::time::Instant::now() + notice.leave_within());
            }
            // The one wake-up: a kick, a revocation, the drain, something to write.
            () = handle.until(|| {
                handle.is_kicked()
                    || handle.has_revoked()
                    || (drain_due && node.drain.has_begun())
                    || (write && handle.has_queued() && (!holding || handle.live_half_full()))
            }) => {
                if handle.has_revoked() {
                    w.drive(Box::pin(session.apply_revocations()), handle).await;
                }
                if drain_due && node.drain.has_begun() {
                    drain_turn = Some(Box::pin(node.drain.turn()));
                }
                if write && handle.has_queued() && !handle.is_kicked() {
                    let delay = node.settings.limits.write_delay;
                    if !holding && !delay.is_zero() && !handle.live_half_full() {
                        // Hold what is queued for the write delay; more may join it.
                        holding = true;
                        let end = tokio::time::Instant::now() + delay;
                        if end < deadline.deadline() {
                            deadline.as_mut().reset(end);
                        }
                    } else {
                        holding = false;
                        w.write_some(handle).await;
                        if !w.writing() {
                            return false;
                        }
                    }
                }
            }
            // A write the client is slow to take finishes here, beside the reading.
            flushed = std::future::poll_fn(|cx| Pin::new(&mut w.sink).poll_flush(cx)), if w.unflushed && w.writing() => {
                w.flushed(flushed);
                if !w.writing() {
                    return false;
                }
            }
            next = stream.next() => match next {
                None => return false,
                Some(Err(e)) => {
                    if let Some(code) = close_code_of(&e) {
                        handle.kick(code);
                    }
                    tracing::debug!(error = %chain(&e), "read failed");
                    return false;
                }
                Some(Ok(message)) => {
                    idle_at = tokio::time::Instant::now() + idle;
                    match message.incoming() {
                        Incoming::Close => return false,
                        Incoming::Text(t) => {
                            if let Control::Close(code) = w.drive(Box::pin(session.on_text(t)), handle).await {
                                handle.kick(code);
                                return false;
                            }
                        }
                        Incoming::Binary => {
                            if let Control::Close(code) = session.on_binary() {
                                handle.kick(code);
                                return false;
                            }
                        }
                        Incoming::Control => {
                            if let Some(payload) = message.pong_payload() {
                                handle.pong(payload);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Polls the drain turn, once it was taken.
fn poll_turn<F: Future + Unpin>(turn: &mut Option<F>, cx: &mut Context<'_>) -> Poll<F::Output> {
    match turn {
        Some(t) => Pin::new(t).poll(cx),
        None => Poll::Pending,
    }
}

/// When a session whose token expires at `expires_at` must close (never in open mode).
fn deadline_of(expires_at: Option<std::time::SystemTime>) -> tokio::time::Instant {
    match expires_at {
        Some(t) => crate::auth::session_deadline(t),
        None => tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600),
    }
}

/// The refusal a kick code stands for (`reason` label, log text); `None` for ordinary ends.
fn refusal_of(code: u16) -> Option<(&'static str, &'static str)> {
    Some(match code {
        close::SLOW_CONSUMER => ("slow_consumer", "outbound queue overflowed (4008)"),
        close::FLOODING => ("flooding", "too many refused frames (4029)"),
        close::TOO_BIG => ("too_big", "frame larger than max_frame_bytes (1009)"),
        close::IDLE => ("idle", "idle timeout (4003)"),
        close::TOKEN_EXPIRED => ("session_expired", "token expired without refresh (4011)"),
        _ => return None,
    })
}

/// The close code a failed read calls for: 1009 when the message was larger than the limit, 1002
/// for a violation of the WebSocket protocol, 1007 for a text message that is not UTF-8 (the node's
/// own framing, [`crate::ws`], or tungstenite's capacity error somewhere in the chain); `None` when
/// the socket just failed.
fn close_code_of(e: &(dyn std::error::Error + 'static)) -> Option<u16> {
    let mut source = Some(e);
    while let Some(s) = source {
        match s.downcast_ref::<crate::ws::WsError>() {
            Some(crate::ws::WsError::TooBig) => return Some(close::TOO_BIG),
            Some(crate::ws::WsError::Protocol(_)) => return Some(close::PROTOCOL_ERROR),
            Some(crate::ws::WsError::InvalidUtf8) => return Some(close::INVALID_DATA),
            Some(crate::ws::WsError::Io(_)) => return None,
            None => {}
        }
        if let Some(tungstenite::Error::Capacity(_)) = s.downcast_ref::<tungstenite::Error>() {
            return Some(close::TOO_BIG);
        }
        source = s.source();
    }
    None
}

/// The writing side of a connection, run by the connection's own task beside the reading: queued
/// frames in batches (the keepalive ping among them: the read loop queues it) and the close frame —
/// the kick code when the session was kicked, else the one queued with [`Out::Close`].
///
/// While the connection waits for the client, its read loop writes what was queued as soon as it is
/// woken for it ([`Writer::write_some`], which never waits) and finishes a write cut short beside the
/// reading; while it handles a frame, or starts or ends the session, [`Writer::drive`] runs
/// [`Writer::pump`] beside that work, so a reply waiting for room in the queue is made room for by the
/// same task. One task per connection, not two.
struct Writer<S> {
    sink: S,
    /// Frames went into the sink and were not flushed yet (a write cut short).
    unflushed: bool,
    /// `None` while writing; then the close frame to send, or `Some(None)` when the socket failed.
    end: Option<Option<(u16, &'static str)>>,
    /// The close frame is in the sink (flushing it may be what is left).
    close_queued: bool,
    /// The close frame was sent (or given up on) or the socket failed: nothing more is written.
    done: bool,
}

impl<S> Writer<S> {
    fn new(sink: S) -> Self {
        Self {
            sink,
            unflushed: false,
            end: None,
            close_queued: false,
            done: false,
        }
    }

    /// True while queued frames are written (no close due yet).
    fn writing(&self) -> bool {
        self.end.is_none()
    }

    /// Runs `fut` to its end while writing what it (and the fan-out) queues meanwhile.
    async fn drive<M, F>(&mut self, fut: F, handle: &SessionHandle) -> F::Output
    where
        M: WsMessage,
        S: Sink<M> + Unpin,
        S::Error: std::fmt::Display,
        F: Future + Unpin,
    {
        let mut fut = fut;
        if !self.done {
            tokio::select! {
                biased;
                out = &mut fut => return out,
                // Boxed: it lives only while a frame is handled, not in an idle connection.
                () = Box::pin(self.pump(handle)) => {}
            }
        }
        fut.await
    }

    /// Hands everything queued to the sink and starts flushing it, without waiting: what the socket
    /// cannot take now is left unflushed ([`Writer::flushed`] finishes it). Each frame's bytes leave
    /// the session's budget once the sink has it; a frame is taken from the queue only when the sink
    /// can take it at once, so nothing is lost whatever happens next. A close request met on the way
    /// ends the writing (its frame goes out behind what was taken before it).
    async fn write_some<M>(&mut self, handle: &SessionHandle)
    where
        M: WsMessage,
        S: Sink<M> + Unpin,
        S::Error: std::fmt::Display,
    {
        let taken = std::future::poll_fn(|cx| Poll::Ready(self.take_queued(handle, cx))).await;
        if let Err(e) = taken {
            self.failed(&e);
            return;
        }
        self.unflushed = true;
        match std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut self.sink).poll_flush(cx))).await
        {
            Poll::Ready(result) => self.flushed(result),
            Poll::Pending => {}
        }
    }

    /// Moves queued items into the sink while it is ready for them (see [`Writer::write_some`]).
    fn take_queued<M>(
        &mut self,
        handle: &SessionHandle,
        cx: &mut Context<'_>,
    ) -> Result<(), S::Error>
    where
        M: WsMessage,
        S: Sink<M> + Unpin,
    {
        while self.writing() {
            match Pin::new(&mut self.sink).poll_ready(cx) {
                Poll::Ready(ready) => ready?,
                // The sink's buffer is full and the socket busy: flushing finishes it.
                Poll::Pending => return Ok(()),
            }
            let Some(out) = handle.try_next_out() else {
                break;
            };
            let message = match out {
                Out::Frame(bytes) => {
                    handle.written(bytes.len(), false);
                    M::text(bytes)
                }
                Out::Reply(bytes) => {
                    handle.written(bytes.len(), true);
                    M::text(bytes)
                }
                Out::Pong(payload) => {
                    handle.pong_sent();
                    M::pong(payload)
                }
                Out::Ping => {
                    handle.ping_sent();
                    M::ping()
                }
                Out::Close(code, reason) => {
                    self.end = Some(Some((code, reason)));
                    break;
                }
            };
            Pin::new(&mut self.sink).start_send(message)?;
        }
        Ok(())
    }

    /// A flush finished with `result`.
    fn flushed<E: std::fmt::Display>(&mut self, result: Result<(), E>) {
        match result {
            Ok(()) => self.unflushed = false,
            Err(e) => self.failed(&e),
        }
    }

    /// The socket failed: nothing more is written.
    fn failed(&mut self, e: &dyn std::fmt::Display) {
        tracing::debug!(error = %e, "write failed; connection dropped");
        self.end = Some(None);
    }

    /// Writes until the writer is done: the close frame sent (queued, or the kick's once the session
    /// is kicked) or the socket failed (then the session is stopped, so the reading stops too).
    /// Dropping it at any point loses nothing: frames leave the queue only as they go into the sink,
    /// and a close frame being sent is resumed by the next call.
    async fn pump<M>(&mut self, handle: &SessionHandle)
    where
        M: WsMessage,
        S: Sink<M> + Unpin,
        S::Error: std::fmt::Display,
    {
        if self.done {
            return;
        }
        while self.writing() {
            if handle.is_kicked() {
                // Also ends a write blocked on a client that stopped reading.
                self.end = Some(Some(kick_close(handle)));
            } else if self.unflushed {
                tokio::select! {
                    biased;
                    () = handle.killed() => {}
                    flushed = self.sink.flush() => self.flushed(flushed),
                }
            } else {
                handle
                    .until(|| handle.is_kicked() || handle.has_queued())
                    .await;
                if !handle.is_kicked() {
                    self.write_some(handle).await;
                }
            }
        }
        if let Some(Some((code, reason))) = self.end {
            let _ = tokio::time::timeout(CLOSE_SEND_TIMEOUT, async {
                if !self.close_queued {
                    std::future::poll_fn(|cx| Pin::new(&mut self.sink).poll_ready(cx)).await?;
                    Pin::new(&mut self.sink).start_send(M::close(code, reason))?;
                    self.close_queued = true;
                }
                self.sink.flush().await
            })
            .await;
        }
        self.done = true;
        // Make the reading stop too if the writing ended first (socket error).
        handle.stop();
    }
}

/// The close frame of a killed session: its kick code, or a normal close.
fn kick_close(handle: &SessionHandle) -> (u16, &'static str) {
    let code = handle.kicked_with().unwrap_or(close::NORMAL);
    (code, close_reason(code))
}

fn close_reason(code: u16) -> &'static str {
    match code {
        close::SLOW_CONSUMER => {
            "slow consumer: outbound queue overflowed; reconnect and re-join with since"
        }
        close::FLOODING => "flooding: too many frames refused by the rate limit",
        close::IDLE => "idle timeout",
        close::TOO_BIG => "frame larger than max_frame_bytes",
        close::PROTOCOL_ERROR => "WebSocket protocol violation",
        close::INVALID_DATA => "text frame is not UTF-8",
        close::RESTART => "node shutting down, ask the registry again",
        close::TOKEN_EXPIRED => "token expired; reconnect with a fresh token",
        close::TRY_AGAIN_LATER => "the chat store is unavailable; reconnect and re-join with since",
        _ => "",
    }
}

#[cfg(test)]
mod tests;
