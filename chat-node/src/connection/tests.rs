//! The connection's reader and writer over in-memory sockets: batching, pings and every close code,
//! with virtual time (`start_paused`) so timeouts take no wall time.

use super::*;
use crate::backend::memory::MemoryBackend;
use crate::hub::{Hub, Topic};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::node::NodeSettings;
use futures_util::task::AtomicWaker;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use tokio::sync::mpsc;
use tungstenite::Message;
use tungstenite::error::CapacityError;

/// Longest a scenario may wait for a frame (real time).
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a connection may take to end, in virtual time (the clock is paused and jumps ahead to the
/// next timer, so this costs no wall time and still bounds a connection that would never end).
const FINISH_WITHIN: Duration = Duration::from_secs(3600);

/// What reached the socket, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    Text(String),
    Ping,
    Close(u16, String),
    Flush,
}

/// An in-memory sink that records what it is given, and can hold writes back like a client that
/// stopped reading.
#[derive(Clone, Default)]
struct Socket {
    events: Arc<Mutex<Vec<Event>>>,
    blocked: Arc<AtomicBool>,
    waker: Arc<AtomicWaker>,
}

impl Socket {
    fn events(&self) -> Vec<Event> {
        self.events.lock().expect("events").clone()
    }

    /// The recorded events without the flushes.
    fn written(&self) -> Vec<Event> {
        self.events()
            .into_iter()
            .filter(|e| *e != Event::Flush)
            .collect()
    }

    /// The JSON text frames written so far.
    fn frames(&self) -> Vec<serde_json::Value> {
        self.written()
            .into_iter()
            .filter_map(|e| match e {
                Event::Text(t) => Some(serde_json::from_str(&t).expect("JSON frame")),
                _ => None,
            })
            .collect()
    }

    fn has_frame(&self, ty: &str) -> bool {
        self.frames().iter().any(|f| f["type"] == ty)
    }

    fn block(&self, blocked: bool) {
        self.blocked.store(blocked, Ordering::SeqCst);
        self.waker.wake();
    }

    fn push(&self, event: Event) {
        self.events.lock().expect("events").push(event);
    }

    fn poll_open(&self, cx: &mut Context<'_>) -> Poll<Result<(), std::convert::Infallible>> {
        self.waker.register(cx.waker());
        if self.blocked.load(Ordering::SeqCst) {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }
}

impl Sink<Message> for Socket {
    type Error = std::convert::Infallible;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.poll_open(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        self.push(match item {
            Message::Text(t) => Event::Text(t.as_str().to_owned()),
            Message::Ping(_) => Event::Ping,
            Message::Close(Some(c)) => Event::Close(c.code.into(), c.reason.as_str().to_owned()),
            other => panic!("unexpected message {other:?}"),
        });
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let ready = self.poll_open(cx);
        if ready.is_ready() {
            self.push(Event::Flush);
        }
        ready
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
}

type Received = Result<Message, tungstenite::Error>;

/// The client side of a connection under test: what it sends goes to the reader; what the node
/// writes is in `socket`.
struct Client {
    socket: Socket,
    send: Option<mpsc::UnboundedSender<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    fn send(&self, message: Received) {
        if let Some(tx) = &self.send {
            let _ = tx.send(message);
        }
    }

    fn send_json(&self, frame: serde_json::Value) {
        self.send(Ok(Message::text(frame.to_string())));
    }

    /// Ends the client's stream (the TCP connection is gone).
    fn hang_up(&mut self) {
        self.send = None;
    }

    async fn wait_for(&self, what: &str, ty: &str) {
        switchboard_testkit::eventually(what, SCENARIO_TIMEOUT, || async {
            self.socket.has_frame(ty).then_some(())
        })
        .await;
    }

    /// Waits until the connection task ended and returns everything written, without flushes.
    async fn finished(self) -> Vec<Event> {
        let Client {
            socket, task, send, ..
        } = self;
        tokio::time::timeout(FINISH_WITHIN, task)
            .await
            .expect("the connection ends")
            .expect("the connection task does not panic");
        drop(send);
        socket.written()
    }
}

/// A node over the in-memory backend.
fn node(limits: Limits, capacity: u64) -> Arc<Node> {
    node_with_auth(limits, capacity, crate::auth::Authenticator::Open)
}

/// A node over the in-memory backend with the given authentication.
fn node_with_auth(limits: Limits, capacity: u64, auth: crate::auth::Authenticator) -> Arc<Node> {
    let hub = Arc::new(Hub::new());
    let metrics = Arc::new(Metrics::new(&hub));
    let backend = Arc::new(MemoryBackend::new(hub.clone(), 100));
    let settings = NodeSettings {
        id: "n1".into(),
        url: "ws://x/ws".into(),
        capacity,
        history_cap: 100,
        limits,
        auth: Arc::new(auth),
        origins: Default::default(),
    };
    Node::new(settings, hub, backend, metrics)
}

/// Connects to `node` with `handshake` and runs the connection in a task.
fn connect(node: &Arc<Node>, handshake: Handshake) -> Client {
    let socket = Socket::default();
    let (send, received) = mpsc::unbounded_channel::<Received>();
    let stream = Box::pin(futures_util::stream::unfold(
        received,
        |mut rx| async move { rx.recv().await.map(|m| (m, rx)) },
    ));
    let task = tokio::spawn(run(node.clone(), socket.clone(), stream, handshake));
    Client {
        socket,
        send: Some(send),
        task,
    }
}

fn as_user(user: &str) -> Handshake {
    Handshake {
        user: Some(user.to_owned()),
        dm_since: None,
        peer: None,
    }
}

/// A connected, identified client that has its `welcome`.
async fn welcomed(node: &Arc<Node>) -> Client {
    let client = connect(node, as_user("alice"));
    client.wait_for("welcome", "welcome").await;
    client
}

/// A welcomed client in room `r` that then stops reading.
async fn stalled_in_room(node: &Arc<Node>) -> Client {
    let client = welcomed(node).await;
    client.send_json(serde_json::json!({"type": "join", "room": "r"}));
    client.wait_for("joined", "joined").await;
    client.socket.block(true);
    client
}

fn close_event(code: u16) -> Event {
    Event::Close(code, close_reason(code).to_owned())
}

#[tokio::test(start_paused = true)]
async fn the_writer_feeds_everything_already_queued_and_flushes_once() {
    let handle = Arc::new(SessionHandle::new(1, Arc::from("alice"), 8));
    for i in 0..5 {
        assert!(handle.deliver(&Utf8Bytes::from(format!("m{i}"))));
    }
    handle.close_after_queued(close::NORMAL, "");
    let socket = Socket::default();
    Writer::new(socket.clone()).pump(&handle).await;
    let text = |s: &str| Event::Text(s.to_owned());
    assert_eq!(
        socket.events(),
        [
            text("m0"),
            text("m1"),
            text("m2"),
            text("m3"),
            text("m4"),
            Event::Flush,
            Event::Close(close::NORMAL, String::new()),
            Event::Flush,
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_kick_closes_with_its_code_ahead_of_what_is_still_queued() {
    let handle = Arc::new(SessionHandle::new(1, Arc::from("alice"), 8));
    assert!(handle.deliver(&Utf8Bytes::from_static("queued")));
    handle.kick(close::FLOODING);
    let socket = Socket::default();
    Writer::new(socket.clone()).pump(&handle).await;
    assert_eq!(socket.written(), [close_event(close::FLOODING)]);
}

#[tokio::test(start_paused = true)]
async fn a_close_frame_cut_short_by_other_work_is_still_sent_when_the_writing_resumes() {
    let handle = Arc::new(SessionHandle::new(1, Arc::from("alice"), 8));
    handle.kick(close::SLOW_CONSUMER);
    let socket = Socket::default();
    socket.block(true);
    let mut w = Writer::new(socket.clone());
    // The session's end finishes while the close frame waits on a socket the client does not read.
    w.drive(
        Box::pin(tokio::time::sleep(Duration::from_millis(100))),
        &handle,
    )
    .await;
    assert_eq!(socket.written(), []);
    socket.block(false);
    w.pump(&handle).await;
    assert_eq!(socket.written(), [close_event(close::SLOW_CONSUMER)]);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_falls_behind_is_closed_as_a_slow_consumer_with_4008() {
    let limits = Limits {
        outbound_queue: 8,
        ..Limits::default()
    };
    let node = node(limits, 10);
    // The client stops reading: the writer is stuck on the socket while the room goes on.
    let client = stalled_in_room(&node).await;
    let room = Topic::room("r");
    let frame = |seq: u64| Utf8Bytes::from(format!(r#"{{"seq":{seq}}}"#));
    node.hub.dispatch(&room, 1, &frame(1));
    // Let the writer take the first frame and get stuck writing it.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    for seq in 2..=20 {
        node.hub.dispatch(&room, seq, &frame(seq));
    }
    client.socket.block(false);

    let written = client.finished().await;
    assert_eq!(written.last(), Some(&close_event(close::SLOW_CONSUMER)));
    let delivered = written
        .iter()
        .filter(|e| matches!(e, Event::Text(t) if t.starts_with(r#"{"seq""#)))
        .count();
    // The kick goes ahead of what was queued; the overflow is never written.
    assert!(delivered < 20, "not everything was written: {delivered}");
    assert_eq!(node.connections(), 0, "the slot is released");
}

/// The `{"seq":N}` frames written so far, with a `None` for each flush between them.
fn seq_writes(socket: &Socket) -> Vec<Option<String>> {
    socket
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Text(t) if t.starts_with(r#"{"seq""#) => Some(Some(t)),
            Event::Flush => Some(None),
            _ => None,
        })
        .skip_while(Option::is_none)
        .collect()
}

/// A welcomed client in room `r` of a node with `limits`.
async fn in_room(limits: Limits) -> (Arc<Node>, Client) {
    let node = node(limits, 10);
    let client = welcomed(&node).await;
    client.send_json(serde_json::json!({"type": "join", "room": "r"}));
    client.wait_for("joined", "joined").await;
    (node, client)
}

#[tokio::test(start_paused = true)]
async fn with_a_write_delay_live_events_arriving_meanwhile_leave_in_one_write() {
    let (node, client) = in_room(Limits {
        write_delay: Duration::from_millis(50),
        ..Limits::default()
    })
    .await;
    let room = Topic::room("r");
    let frame = |seq: u64| Utf8Bytes::from(format!(r#"{{"seq":{seq}}}"#));
    node.hub.dispatch(&room, 1, &frame(1));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(seq_writes(&client.socket), [], "held for the delay");
    node.hub.dispatch(&room, 2, &frame(2));
    node.hub.dispatch(&room, 3, &frame(3));
    tokio::time::sleep(Duration::from_millis(40)).await;
    let seq = |n: u64| Some(format!(r#"{{"seq":{n}}}"#));
    assert_eq!(
        seq_writes(&client.socket),
        [seq(1), seq(2), seq(3), None],
        "one write, one flush, once the delay ended"
    );
    // A reply to the client's own request is not held.
    client.send_json(serde_json::json!({"type": "history", "room": "r"}));
    client.wait_for("history reply", "history").await;
}

#[tokio::test(start_paused = true)]
async fn a_live_lane_half_full_is_written_without_waiting_for_the_delay() {
    let (node, client) = in_room(Limits {
        write_delay: Duration::from_millis(100),
        outbound_queue: 8,
        ..Limits::default()
    })
    .await;
    let room = Topic::room("r");
    let frame = |seq: u64| Utf8Bytes::from(format!(r#"{{"seq":{seq}}}"#));
    let started = tokio::time::Instant::now();
    for seq in 1..=4 {
        node.hub.dispatch(&room, seq, &frame(seq));
    }
    switchboard_testkit::eventually("the half-full lane written", SCENARIO_TIMEOUT, || async {
        (seq_writes(&client.socket).len() == 5).then_some(())
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "written before the delay ended (virtual time: {:?})",
        started.elapsed()
    );
    // More frames than the lane holds, over time, and not one of them is refused as too slow.
    for seq in 5..=40 {
        node.hub.dispatch(&room, seq, &frame(seq));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let written = seq_writes(&client.socket).into_iter().flatten().count();
    assert_eq!(written, 40, "every frame written, none kicked");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_reads_again_is_cut_without_holding_the_node() {
    let limits = Limits {
        outbound_queue: 8,
        ..Limits::default()
    };
    let node = node(limits, 10);
    let client = stalled_in_room(&node).await;
    let room = Topic::room("r");
    for seq in 1..=40 {
        node.hub
            .dispatch(&room, seq, &Utf8Bytes::from(format!(r#"{{"seq":{seq}}}"#)));
        tokio::task::yield_now().await;
    }
    // The socket stays blocked: the connection must still end, its close frame undeliverable.
    let written = client.finished().await;
    assert!(
        !written.iter().any(|e| matches!(e, Event::Close(..))),
        "nothing gets through a socket nobody reads: {written:?}"
    );
    assert_eq!(node.connections(), 0, "the slot is released");
}

#[tokio::test(start_paused = true)]
async fn a_queue_full_in_bytes_closes_with_4008_even_with_frames_to_spare() {
    let limits = Limits {
        outbound_bytes: 4096,
        max_reply_bytes: 1,
        max_frame_bytes: 1024,
        ..Limits::default()
    }
    .normalized();
    let node = node(limits.clone(), 10);
    let client = stalled_in_room(&node).await;
    let room = Topic::room("r");
    let big = Utf8Bytes::from(format!(r#"{{"seq":1,"pad":"{}"}}"#, "p".repeat(1000)));
    let frames = limits.outbound_bytes / big.len() + 2;
    assert!(
        frames < limits.outbound_queue,
        "bytes run out before frames"
    );
    for seq in 1..=frames as u64 {
        node.hub.dispatch(&room, seq, &big);
    }
    client.socket.block(false);
    let written = client.finished().await;
    assert_eq!(written.last(), Some(&close_event(close::SLOW_CONSUMER)));
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_is_pinged_then_closed_with_4003() {
    let limits = Limits {
        idle_timeout: Duration::from_secs(50),
        ..Limits::default()
    };
    let node = node(limits, 10);
    let started = tokio::time::Instant::now();
    let client = welcomed(&node).await;
    let written = client.finished().await;
    // Pings every 20 s do not count as activity of the client; only what it sends does.
    assert!(matches!(&written[0], Event::Text(t) if t.contains(r#""type":"welcome""#)));
    assert_eq!(
        written[1..],
        [Event::Ping, Event::Ping, close_event(close::IDLE)]
    );
    assert_eq!(started.elapsed().as_secs(), 50);
}

#[tokio::test(start_paused = true)]
async fn anything_the_client_sends_resets_the_idle_timeout() {
    let limits = Limits {
        idle_timeout: Duration::from_secs(5),
        ..Limits::default()
    };
    let node = node(limits, 10);
    let started = tokio::time::Instant::now();
    let client = welcomed(&node).await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(4)).await;
        client.send(Ok(Message::Pong(Default::default())));
    }
    let written = client.finished().await;
    assert_eq!(written.last(), Some(&close_event(close::IDLE)));
    assert_eq!(started.elapsed().as_secs(), 12 + 5);
}

#[tokio::test(start_paused = true)]
async fn a_message_over_the_size_limit_closes_with_1009() {
    let node = node(Limits::default(), 10);
    let client = welcomed(&node).await;
    client.send(Err(tungstenite::Error::Capacity(
        CapacityError::MessageTooLong {
            size: 70_000,
            max_size: 65_536,
        },
    )));
    let written = client.finished().await;
    assert_eq!(written.last(), Some(&close_event(close::TOO_BIG)));
}

#[tokio::test(start_paused = true)]
async fn a_draining_node_sends_reconnect_then_closes_with_1012() {
    let node = node(Limits::default(), 10);
    let client = welcomed(&node).await;
    let drained_at = tokio::time::Instant::now();
    node.draining.cancel();
    node.begin_drain(drained_at + Duration::from_secs(10));
    client.wait_for("reconnect", "reconnect").await;
    let frames = client.socket.frames();
    let reconnect = frames.last().expect("reconnect frame");
    assert_eq!(reconnect["reason"], "draining");
    let retry_after_ms = reconnect["retry_after_ms"]
        .as_u64()
        .expect("retry_after_ms");
    let written = client.finished().await;
    assert_eq!(written.last(), Some(&close_event(close::RESTART)));
    // The client had its retry_after_ms plus 2 s to leave by itself.
    assert_eq!(
        drained_at.elapsed().as_millis(),
        u128::from(retry_after_ms + 2000)
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_or_draining_node_refuses_with_1013() {
    let full = node(Limits::default(), 0);
    let written = connect(&full, as_user("alice")).finished().await;
    assert_eq!(
        written,
        [Event::Close(
            close::TRY_AGAIN_LATER,
            "node full, ask the registry again".into()
        )]
    );

    let draining = node(Limits::default(), 10);
    draining.draining.cancel();
    let written = connect(&draining, as_user("alice")).finished().await;
    assert_eq!(
        written,
        [Event::Close(
            close::TRY_AGAIN_LATER,
            "node draining, ask the registry again".into()
        )]
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_close_ends_the_session_with_1000() {
    let node = node(Limits::default(), 10);
    let client = welcomed(&node).await;
    client.send(Ok(Message::Close(None)));
    let written = client.finished().await;
    assert_eq!(
        written.last(),
        Some(&Event::Close(close::NORMAL, String::new()))
    );
    assert_eq!(node.connections(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_connection_ends_the_session() {
    let node = node(Limits::default(), 10);
    let mut client = welcomed(&node).await;
    client.hang_up();
    let written = client.finished().await;
    assert_eq!(
        written.last(),
        Some(&Event::Close(close::NORMAL, String::new()))
    );
    assert_eq!(node.connections(), 0);
}

#[tokio::test(start_paused = true)]
async fn without_a_hello_in_time_the_connection_closes_with_4002() {
    let node = node(Limits::default(), 10);
    let started = tokio::time::Instant::now();
    let client = connect(&node, Handshake::default());
    let written = client.finished().await;
    assert_eq!(
        written,
        [Event::Close(
            close::HELLO_TIMEOUT,
            "no hello within 10 s".into()
        )]
    );
    assert_eq!(started.elapsed(), crate::config::HELLO_TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn a_first_frame_other_than_hello_closes_with_4001() {
    let node = node(Limits::default(), 10);
    let client = connect(&node, Handshake::default());
    client.send(Ok(Message::Ping(Default::default())));
    let written = client.finished().await;
    assert_eq!(
        written,
        [Event::Close(
            close::INVALID_IDENTITY,
            "the first frame must be hello".into()
        )]
    );
}

#[tokio::test(start_paused = true)]
async fn hello_identifies_and_text_frames_reach_the_session() {
    let node = node(Limits::default(), 10);
    let mut client = connect(&node, Handshake::default());
    client.send_json(serde_json::json!({"type": "hello", "user": "bob"}));
    client.send_json(serde_json::json!({"type": "ping", "req": 7}));
    client.wait_for("pong", "pong").await;
    let frames = client.socket.frames();
    assert_eq!(frames[0]["type"], "welcome");
    assert_eq!(frames[0]["user"], "bob");
    assert_eq!(frames[1]["type"], "pong");
    assert_eq!(frames[1]["req"], 7);
    client.hang_up();
    client.finished().await;
}

#[tokio::test(start_paused = true)]
async fn binary_messages_are_refused_and_a_flood_of_refusals_closes_with_4029() {
    let limits = Limits {
        flood_refusals: 3,
        ..Limits::default()
    };
    let node = node(limits, 10);
    let client = welcomed(&node).await;
    let binary = || Ok(Message::Binary(bytes::Bytes::from_static(b"\x00")));
    let refusals = |socket: &Socket| {
        socket
            .frames()
            .iter()
            .filter(|f| f["type"] == "error" && f["code"] == "bad_frame")
            .count()
    };
    for refused in 1..=3 {
        client.send(binary());
        switchboard_testkit::eventually("an error frame", SCENARIO_TIMEOUT, || async {
            (refusals(&client.socket) == refused).then_some(())
        })
        .await;
    }
    client.send(binary());
    let written = client.finished().await;
    assert_eq!(written.last(), Some(&close_event(close::FLOODING)));
}

#[test]
fn a_framing_error_anywhere_in_the_chain_gives_its_close_code() {
    #[derive(Debug, thiserror::Error)]
    #[error("framework error")]
    struct Wrapper(#[source] tungstenite::Error);

    let too_long = || {
        tungstenite::Error::Capacity(CapacityError::MessageTooLong {
            size: 2,
            max_size: 1,
        })
    };
    assert_eq!(close_code_of(&too_long()), Some(close::TOO_BIG));
    assert_eq!(close_code_of(&Wrapper(too_long())), Some(close::TOO_BIG));
    assert_eq!(
        close_code_of(&Wrapper(tungstenite::Error::ConnectionClosed)),
        None
    );
    use crate::ws::WsError;
    assert_eq!(close_code_of(&WsError::TooBig), Some(close::TOO_BIG));
    assert_eq!(
        close_code_of(&WsError::Protocol("unmasked")),
        Some(close::PROTOCOL_ERROR)
    );
    assert_eq!(
        close_code_of(&WsError::InvalidUtf8),
        Some(close::INVALID_DATA)
    );
    assert_eq!(
        close_code_of(&WsError::Io(std::io::ErrorKind::ConnectionReset.into())),
        None
    );
}

const SECRET: &[u8] = b"connection-tests-secret-32-bytes";

fn token(sub: &str, exp_in: i64) -> String {
    let exp = crate::auth::unix_now() as i64 + exp_in;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": sub, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .expect("sign")
}

#[tokio::test(start_paused = true)]
async fn a_session_whose_token_runs_out_is_closed_with_4011_unless_refreshed() {
    let node = node_with_auth(
        Limits::default(),
        10,
        crate::auth::Authenticator::hmac(SECRET),
    );
    // Expired 25 s ago: accepted within the 30 s clock skew, so the session has about 5 s left.
    let expiring = connect(&node, Handshake::default());
    expiring.send_json(serde_json::json!({"type": "hello", "token": token("ann", -25)}));
    expiring.wait_for("welcome", "welcome").await;
    let renewed = connect(&node, Handshake::default());
    renewed.send_json(serde_json::json!({"type": "hello", "token": token("ben", -25)}));
    renewed.wait_for("welcome", "welcome").await;
    renewed.send_json(serde_json::json!({"type": "refresh", "token": token("ben", 3600)}));
    renewed.wait_for("refreshed", "refreshed").await;

    let written = expiring.finished().await;
    assert_eq!(written.last(), Some(&close_event(close::TOKEN_EXPIRED)));
    tokio::time::advance(Duration::from_secs(30)).await;
    renewed.send_json(serde_json::json!({"type": "ping", "req": 1}));
    renewed.wait_for("pong", "pong").await;
}

#[tokio::test(start_paused = true)]
async fn in_token_mode_a_query_user_or_a_bare_name_is_refused_with_4001() {
    let node = node_with_auth(
        Limits::default(),
        10,
        crate::auth::Authenticator::hmac(SECRET),
    );
    let written = connect(&node, as_user("alice")).finished().await;
    assert!(matches!(
        written.as_slice(),
        [Event::Close(close::INVALID_IDENTITY, _)]
    ));
    let client = connect(&node, Handshake::default());
    client.send_json(serde_json::json!({"type": "hello", "user": "alice"}));
    let written = client.finished().await;
    assert_eq!(
        written,
        [Event::Close(
            close::INVALID_IDENTITY,
            "this node requires a token: send hello with a token field".into()
        )]
    );
}

/// What a connection future may take, in bytes: it is most of what an idle connection costs
/// (`docs/scale.md`, "Memory per connection"). It was 3.5 KiB while a frame's handling, the session's
/// start and end and the identity phase were held in it; about 1.3 KiB here (the test's socket types)
/// once its waits for a kick, a revocation, the queue and the drain became one, and the keepalive a
/// deadline of its one timer.
const CONNECTION_FUTURE_BUDGET: usize = 1536;

#[tokio::test]
async fn the_connection_future_holds_no_large_state_while_idle() {
    let node = node(Limits::default(), 10);
    let (_send, received) = mpsc::unbounded_channel::<Received>();
    let stream = Box::pin(futures_util::stream::unfold(
        received,
        |mut rx| async move { rx.recv().await.map(|m| (m, rx)) },
    ));
    let connection = run(node, Socket::default(), stream, as_user("alice"));
    let size = std::mem::size_of_val(&connection);
    assert!(
        size <= CONNECTION_FUTURE_BUDGET,
        "the connection future takes {size} bytes, over {CONNECTION_FUTURE_BUDGET}"
    );
}
