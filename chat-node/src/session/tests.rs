//! Session behaviour against the in-memory backend: no socket, no Redis.

use super::*;
use crate::backend::memory::MemoryBackend;
use crate::hub::{Hub, Out};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::node::NodeSettings;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

struct TestNode {
    node: Arc<Node>,
}

impl TestNode {
    fn new() -> Self {
        Self::with_limits(Limits::default(), 1000)
    }

    fn with_limits(limits: Limits, history_cap: usize) -> Self {
        let hub = Arc::new(Hub::new());
        let metrics = Arc::new(Metrics::new(&hub));
        let backend = Arc::new(MemoryBackend::new(hub.clone(), history_cap));
        let settings = NodeSettings {
            id: "n1".into(),
            url: "ws://x/ws".into(),
            capacity: 10,
            history_cap,
            limits,
            auth: Arc::new(crate::auth::Authenticator::Open),
            origins: Default::default(),
        };
        Self {
            node: Node::new(settings, hub, backend, metrics),
        }
    }

    async fn connect(&self, user: &str) -> Client {
        self.connect_with(user, None).await
    }

    async fn connect_with(&self, user: &str, dm_since: Option<u64>) -> Client {
        self.connect_granted(user, dm_since, &[]).await
    }

    async fn connect_granted(&self, user: &str, dm_since: Option<u64>, rooms: &[&str]) -> Client {
        let handle = Arc::new(
            SessionHandle::new(
                self.node.next_session_id(),
                user.into(),
                self.node.settings.limits.outbound_queue,
            )
            .with_outbound_bytes(self.node.settings.limits.outbound_bytes),
        );
        let identity = Identity {
            user: user.into(),
            dm_since,
            expires_at: None,
            rooms: rooms.iter().map(|r| (*r).to_owned()).collect(),
        };
        let session = Session::start(self.node.clone(), handle.clone(), &identity, None).await;
        let mut c = Client {
            session: Some(session),
            handle,
        };
        let welcome = c.next();
        assert_eq!(
            welcome["type"], "welcome",
            "first frame is welcome: {welcome}"
        );
        c
    }
}

struct Client {
    session: Option<Session>,
    handle: Arc<SessionHandle>,
}

impl Client {
    async fn send(&mut self, frame: Value) -> Control {
        match self.session.as_mut() {
            Some(s) => s.on_text(&frame.to_string()).await,
            None => panic!("session ended"),
        }
    }

    /// The next queued frame, taken as the writer takes it (it leaves its lane).
    fn take(&mut self) -> Option<Utf8Bytes> {
        let (b, reply) = match self.handle.try_next_out()? {
            Out::Frame(b) => (b, false),
            Out::Reply(b) => (b, true),
            Out::Close(..) | Out::Pong(_) | Out::Ping => return None,
        };
        self.handle.written(b.len(), reply);
        Some(b)
    }

    fn next(&mut self) -> Value {
        match self.take() {
            Some(b) => serde_json::from_str(b.as_str()).expect("server frames are JSON"),
            None => panic!("expected a frame"),
        }
    }

    fn drain(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(b) = self.take() {
            out.push(serde_json::from_str(b.as_str()).expect("json"));
        }
        out
    }

    fn of_type(&mut self, ty: &str) -> Vec<Value> {
        self.drain()
            .into_iter()
            .filter(|f| f["type"] == ty)
            .collect()
    }

    async fn dm_to(&mut self, to: &str, i: u64) {
        self.send(json!({"type":"dm","to":to,"body":format!("d{i}")}))
            .await;
        self.drain();
    }

    async fn end(&mut self) {
        if let Some(s) = self.session.take() {
            s.end().await;
        }
    }
}

fn j(v: Value) -> Value {
    v
}

#[tokio::test]
async fn room_messages_get_sequences_and_reach_every_member_in_order() {
    let n = TestNode::new();
    let mut a = n.connect("alice").await;
    let mut b = n.connect("bob").await;
    a.send(j(serde_json::json!({"type":"join","room":"lobby"})))
        .await;
    b.send(j(serde_json::json!({"type":"join","room":"lobby"})))
        .await;
    for i in 0..5 {
        a.send(serde_json::json!({"type":"send","room":"lobby","body":format!("m{i}"),"req":i}))
            .await;
    }
    let acks = a.of_type("ack");
    assert_eq!(
        acks.iter()
            .map(|f| f["seq"].as_u64().unwrap_or(0))
            .collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(acks[2]["req"], 2);
    let got: Vec<(u64, String)> = b
        .of_type("message")
        .iter()
        .map(|m| {
            (
                m["seq"].as_u64().unwrap_or(0),
                m["body"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        got,
        (1..=5)
            .map(|i| (i, format!("m{}", i - 1)))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn resend_with_same_client_id_is_not_duplicated() {
    let n = TestNode::new();
    let mut a = n.connect("alice").await;
    let mut b = n.connect("bob").await;
    a.send(serde_json::json!({"type":"join","room":"r"})).await;
    b.send(serde_json::json!({"type":"join","room":"r"})).await;
    b.drain();
    a.send(serde_json::json!({"type":"send","room":"r","body":"once","client_id":"c-1"}))
        .await;
    a.send(serde_json::json!({"type":"send","room":"r","body":"once","client_id":"c-1"}))
        .await;
    let acks = a.of_type("ack");
    assert_eq!(acks.len(), 2);
    assert_eq!(acks[0]["seq"], acks[1]["seq"]);
    assert_eq!(acks[0]["id"], acks[1]["id"]);
    assert_eq!(acks[0]["duplicate"], false);
    assert_eq!(acks[1]["duplicate"], true);
    assert_eq!(b.of_type("message").len(), 1);
}

#[tokio::test]
async fn rejoin_with_since_recovers_exactly_the_missed_messages() {
    let n = TestNode::new();
    let mut a = n.connect("alice").await;
    a.send(serde_json::json!({"type":"join","room":"r"})).await;
    for i in 0..6 {
        a.send(serde_json::json!({"type":"send","room":"r","body":format!("m{i}")}))
            .await;
    }
    let mut b = n.connect("bob").await;
    b.send(serde_json::json!({"type":"join","room":"r","since":3}))
        .await;
    let frames = b.drain();
    assert_eq!(frames[0]["type"], "joined");
    assert_eq!(frames[0]["last_seq"], 6);
    assert_eq!(frames[0]["first_seq"], 1);
    let seqs: Vec<u64> = frames
        .iter()
        .filter(|f| f["type"] == "message")
        .filter_map(|f| f["seq"].as_u64())
        .collect();
    assert_eq!(seqs, [4, 5, 6]);
    a.send(serde_json::json!({"type":"send","room":"r","body":"live"}))
        .await;
    assert_eq!(
        b.of_type("message")
            .iter()
            .filter_map(|f| f["seq"].as_u64())
            .collect::<Vec<_>>(),
        [7]
    );
}

#[tokio::test]
async fn history_pages_backwards() {
    let n = TestNode::new();
    let mut a = n.connect("alice").await;
    a.send(serde_json::json!({"type":"join","room":"r"})).await;
    for i in 1..=12 {
        a.send(serde_json::json!({"type":"send","room":"r","body":format!("m{i}")}))
            .await;
    }
    a.drain();
    a.send(serde_json::json!({"type":"history","room":"r","before":11,"limit":4,"req":"h"}))
        .await;
    let h = a.next();
    assert_eq!(h["type"], "history");
    assert_eq!(h["req"], "h");
    let seqs: Vec<u64> = h["messages"]
        .as_array()
        .map(|m| m.iter().filter_map(|x| x["seq"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(seqs, [7, 8, 9, 10]);
    assert_eq!(h["has_more"], true);
    a.send(serde_json::json!({"type":"history","room":"r","before":3}))
        .await;
    let h = a.next();
    assert_eq!(h["messages"].as_array().map(Vec::len), Some(2));
    assert_eq!(h["has_more"], false);
}

#[tokio::test]
async fn history_is_capped() {
    let n = TestNode::with_limits(Limits::default(), 5);
    let mut a = n.connect("alice").await;
    a.send(serde_json::json!({"type":"join","room":"r"})).await;
    for i in 1..=9 {
        a.send(serde_json::json!({"type":"send","room":"r","body":format!("m{i}")}))
            .await;
    }
    a.drain();
    a.send(serde_json::json!({"type":"join","room":"r"})).await;
    let joined = a.next();
    assert_eq!(
        (joined["first_seq"].as_u64(), joined["last_seq"].as_u64()),
        (Some(5), Some(9))
    );
}

#[tokio::test]
async fn a_session_start_waits_for_a_turn_and_gives_it_back() {
    let n = TestNode::new();
    let mut held = Vec::new();
    for _ in 0..crate::config::SESSION_STARTS_IN_FLIGHT {
        held.push(n.node.start_turn().await.expect("a turn"));
    }
    let start = n.connect("alice");
    tokio::pin!(start);
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(50), &mut start)
            .await
            .is_err(),
        "a session started while every turn was taken"
    );
    held.pop();
    let mut alice = start.await;
    // One turn is free: starts one after another each find it, so none kept its turn, and the
    // sessions work (bob's replay of what he missed included).
    alice
        .send(serde_json::json!({"type":"dm","to":"bob","body":"while away"}))
        .await;
    let mut bob = n.connect("bob").await;
    assert_eq!(bob.of_type("dm").len(), 1);
    let _carol = n.connect("carol").await;
}

#[tokio::test]
async fn direct_messages_reach_every_connection_and_wait_for_offline_users() {
    let n = TestNode::new();
    let mut a = n.connect("alice").await;
    let mut b1 = n.connect("bob").await;
    let mut b2 = n.connect("bob").await;
    a.send(serde_json::json!({"type":"dm","to":"bob","body":"hi","client_id":"d1"}))
        .await;
    assert_eq!(a.of_type("dm_ack").len(), 1);
    assert_eq!(b1.of_type("dm").len(), 1);
    assert_eq!(b2.of_type("dm").len(), 1);
    // carol is offline: her messages wait for her next connect.
    a.send(serde_json::json!({"type":"dm","to":"carol","body":"one"}))
        .await;
    a.send(serde_json::json!({"type":"dm","to":"carol","body":"two"}))
        .await;
    let mut c = n.connect("carol").await;
    let dms = c.of_type("dm");
    assert_eq!(
        dms.iter()
            .map(|d| d["body"].as_str().unwrap_or(""))
            .collect::<Vec<_>>(),
        ["one", "two"]
    );
    c.end().await;
    // delivered once: a later connect does not repeat them
    let mut c2 = n.connect("carol").await;
    assert!(c2.of_type("dm").is_empty());
    // ...unless the client asks with dm_since
    let mut c3 = n.connect_with("carol", Some(1)).await;
    assert_eq!(c3.of_type("dm").len(), 1);
}

#[tokio::test]
async fn presence_typing_read_and_last_seen() {
    let n = TestNode::new();
    let mut a = n.connect("alice").await;
    let mut b = n.connect("bob").await;
    a.send(serde_json::json!({"type":"join","room":"r"})).await;
    b.send(serde_json::json!({"type":"join","room":"r"})).await;
    let joined = b.next();
    assert_eq!(joined["members"], serde_json::json!(["alice", "bob"]));
    let pres = a.of_type("presence");
    assert!(
        pres.iter()
            .any(|p| p["user"] == "bob" && p["event"] == "join"),
        "alice sees bob join: {pres:?}"
    );
    b.drain();

    a.send(serde_json::json!({"type":"typing","room":"r"}))
        .await;
    a.send(serde_json::json!({"type":"typing","room":"r"}))
        .await;
    assert_eq!(b.of_type("typing").len(), 1, "typing is coalesced");

    a.send(serde_json::json!({"type":"send","room":"r","body":"x"}))
        .await;
    b.send(serde_json::json!({"type":"read","room":"r","seq":1}))
        .await;
    b.send(serde_json::json!({"type":"read","room":"r","seq":1}))
        .await;
    assert_eq!(
        a.of_type("read").len(),
        1,
        "a marker that did not move is not broadcast"
    );
    a.send(serde_json::json!({"type":"history","room":"r"}))
        .await;
    let h = a.of_type("history");
    assert_eq!(
        h[0]["messages"].as_array().map(Vec::len),
        Some(1),
        "typing is never stored"
    );

    b.send(serde_json::json!({"type":"leave","room":"r"})).await;
    let pres = a.of_type("presence");
    assert_eq!(pres[0]["event"], "leave");
    b.end().await;
    a.send(serde_json::json!({"type":"last_seen","users":["bob","alice","nobody"]}))
        .await;
    let ls = a.next();
    assert_eq!(ls["users"]["bob"]["online"], false);
    assert!(ls["users"]["bob"]["last_seen"].as_u64().is_some());
    assert_eq!(ls["users"]["alice"]["online"], true);
    // Bob left but holds a read marker of a room alice is in; nobody shares nothing with her.
    assert_eq!(ls["hidden"], serde_json::json!(["nobody"]));
    assert!(ls["users"].get("nobody").is_none(), "{ls}");

    let mut c = n.connect("carol").await;
    c.send(serde_json::json!({"type":"join","room":"r"})).await;
    assert_eq!(c.next()["read"]["bob"], 1);
}

#[tokio::test]
async fn bad_input_gets_precise_errors_and_the_session_carries_on() {
    let n = TestNode::new();
    let mut a = n.connect("alice").await;
    let cases = [
        ("{", "bad_frame"),
        (r#"{"type":"teleport"}"#, "unknown_type"),
        (r#"{"type":"join","room":"bad room"}"#, "invalid_name"),
        (
            r#"{"type":"send","room":"nowhere","body":"x"}"#,
            "not_joined",
        ),
        (r#"{"type":"dm","to":"b b","body":"x"}"#, "invalid_name"),
        (r#"{"type":"hello","user":"x"}"#, "already_identified"),
    ];
    for (text, code) in cases {
        let control = match a.session.as_mut() {
            Some(s) => s.on_text(text).await,
            None => panic!("ended"),
        };
        assert_eq!(control, Control::Continue);
        let e = a.next();
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some(code)),
            "for {text}"
        );
    }
    a.send(serde_json::json!({"type":"join","room":"r"})).await;
    a.send(serde_json::json!({"type":"send","room":"r","body":"   "}))
        .await;
    a.send(serde_json::json!({"type":"send","room":"r","body":"x".repeat(4001)}))
        .await;
    let errs: Vec<String> = a
        .of_type("error")
        .iter()
        .map(|e| e["code"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(errs, ["invalid_body", "too_large"]);
    a.send(serde_json::json!({"type":"send","room":"r","body":"fine"}))
        .await;
    assert_eq!(a.of_type("ack").len(), 1);
}

#[tokio::test]
async fn a_body_of_only_whitespace_is_refused_and_any_other_is_delivered_as_sent() {
    let n = TestNode::new();
    let mut a = n.connect("alice").await;
    a.send(serde_json::json!({"type":"join","room":"r"})).await;
    a.drain();
    for blank in ["", " ", "\t\n\r", "\u{a0}\u{3000}"] {
        a.send(serde_json::json!({"type":"send","room":"r","body":blank,"req":1}))
            .await;
        a.send(serde_json::json!({"type":"dm","to":"bob","body":blank,"req":2}))
            .await;
        let errs: Vec<Value> = a.of_type("error");
        assert_eq!(errs.len(), 2, "for {blank:?}: {errs:?}");
        for e in errs {
            assert_eq!(e["code"], "invalid_body", "for {blank:?}");
            assert!(
                e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("whitespace")),
                "the message says why: {e}"
            );
        }
    }
    a.send(serde_json::json!({"type":"send","room":"r","body":" x "}))
        .await;
    let got = a.of_type("message");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["body"], " x ", "stored and delivered as sent");
}

#[tokio::test(start_paused = true)]
async fn rate_limit_refuses_with_retry_after_then_flooding_closes() {
    let limits = Limits {
        rate_per_sec: 5,
        rate_burst: 5,
        flood_refusals: 10,
        ..Limits::default()
    };
    let n = TestNode::with_limits(limits, 100);
    let mut a = n.connect("alice").await;
    let mut b = n.connect("bob").await;
    for _ in 0..5 {
        assert_eq!(
            a.send(serde_json::json!({"type":"ping"})).await,
            Control::Continue
        );
    }
    a.send(serde_json::json!({"type":"ping","req":9})).await;
    let frames = a.drain();
    let err = frames.last().cloned().unwrap_or_default();
    assert_eq!(err["code"], "rate_limited");
    assert_eq!(err["req"], 9);
    assert!(err["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0));
    let mut control = Control::Continue;
    for _ in 0..20 {
        control = a.send(serde_json::json!({"type":"ping"})).await;
        if control != Control::Continue {
            break;
        }
    }
    assert_eq!(control, Control::Close(close::FLOODING));
    // bob is unaffected
    assert_eq!(
        b.send(serde_json::json!({"type":"ping"})).await,
        Control::Continue
    );
    assert_eq!(b.next()["type"], "pong");
    tokio::time::advance(std::time::Duration::from_secs(1)).await;
}

#[tokio::test]
async fn slow_consumer_is_kicked_without_slowing_the_room() {
    let limits = Limits {
        outbound_queue: 8,
        rate_per_sec: 1000,
        rate_burst: 1000,
        ..Limits::default()
    };
    let n = TestNode::with_limits(limits, 100);
    let mut a = n.connect("alice").await;
    let slow = n.connect("slow").await;
    let mut fast = n.connect("fast").await;
    a.send(serde_json::json!({"type":"join","room":"r"})).await;
    let mut slow = slow;
    slow.send(serde_json::json!({"type":"join","room":"r"}))
        .await;
    fast.send(serde_json::json!({"type":"join","room":"r"}))
        .await;
    for i in 0..30 {
        a.send(serde_json::json!({"type":"send","room":"r","body":format!("{i}")}))
            .await;
        fast.drain();
        a.drain();
    }
    assert_eq!(slow.handle.kicked_with(), Some(close::SLOW_CONSUMER));
    assert!(!fast.handle.is_kicked());
}

#[tokio::test]
async fn too_many_rooms_is_refused() {
    let limits = Limits {
        max_rooms: 2,
        ..Limits::default()
    };
    let n = TestNode::with_limits(limits, 100);
    let mut a = n.connect("alice").await;
    for r in ["a", "b", "c"] {
        a.send(serde_json::json!({"type":"join","room":r})).await;
    }
    let errs = a.of_type("error");
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0]["code"], "too_many_rooms");
}

#[tokio::test]
async fn private_rooms_need_a_grant_and_everything_in_them_is_behind_it() {
    let t = TestNode::new();
    let mut ops = t.connect_granted("ops", None, &["private:ops"]).await;
    let mut eve = t.connect("eve").await;
    ops.send(json!({"type": "join", "room": "private:ops"}))
        .await;
    assert_eq!(ops.of_type("joined").len(), 1, "granted");
    ops.send(json!({"type": "send", "room": "private:ops", "body": "secret"}))
        .await;
    ops.drain();
    for frame in [
        json!({"type": "join", "room": "private:ops", "since": 0}),
        json!({"type": "join", "room": "private:other"}),
    ] {
        eve.send(frame.clone()).await;
        let errors = eve.of_type("error");
        assert_eq!(errors.len(), 1, "{frame}");
        assert_eq!(errors[0]["code"], "forbidden", "{frame}");
    }
    for frame in [
        json!({"type": "history", "room": "private:ops"}),
        json!({"type": "send", "room": "private:ops", "body": "x"}),
        json!({"type": "read", "room": "private:ops", "seq": 1}),
        json!({"type": "typing", "room": "private:ops"}),
    ] {
        eve.send(frame.clone()).await;
        let out = eve.drain();
        assert!(
            out.iter()
                .all(|f| f["type"] == "error" && f["code"] == "not_joined"),
            "{frame}: {out:?}"
        );
    }
    assert!(
        ops.of_type("message").is_empty(),
        "nothing eve tried reached the room"
    );
}

fn seqs_of(messages: &Value) -> Vec<u64> {
    messages
        .as_array()
        .map(|m| m.iter().filter_map(|x| x["seq"].as_u64()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_history_page_stops_at_the_reply_byte_limit_and_pages_on() {
    let limits = Limits {
        max_frame_bytes: 1024,
        max_body_chars: 1000,
        max_reply_bytes: 1,
        rate_per_sec: 1000,
        rate_burst: 1000,
        ..Limits::default()
    }
    .normalized();
    let reply_max = limits.max_reply_bytes;
    let n = TestNode::with_limits(limits, 100);
    let mut a = n.connect("alice").await;
    a.send(json!({"type":"join","room":"r"})).await;
    for i in 0..20 {
        a.send(json!({"type":"send","room":"r","body":format!("{i}:{}", "b".repeat(900))}))
            .await;
    }
    a.drain();
    let mut before: Option<u64> = None;
    let mut seen = Vec::new();
    for _ in 0..20 {
        let mut ask = json!({"type":"history","room":"r","limit":200});
        if let Some(b) = before {
            ask["before"] = json!(b);
        }
        a.send(ask).await;
        let Some(raw) = a.take() else {
            panic!("a history reply");
        };
        assert!(raw.len() <= reply_max, "{} > {reply_max}", raw.len());
        let h: Value = serde_json::from_str(raw.as_str()).expect("json");
        let page = seqs_of(&h["messages"]);
        assert!(
            !page.is_empty() && page.len() < 20,
            "cut by bytes: {page:?}"
        );
        seen.splice(0..0, page.iter().copied());
        before = page.first().copied();
        if h["has_more"] == false {
            break;
        }
    }
    assert_eq!(
        seen,
        (1..=20).collect::<Vec<u64>>(),
        "every message once, in order"
    );
}

#[tokio::test]
async fn read_markers_never_pass_the_newest_message() {
    let n = TestNode::new();
    let mut a = n.connect("alice").await;
    a.send(json!({"type":"join","room":"r"})).await;
    for i in 0..3 {
        a.send(json!({"type":"send","room":"r","body":format!("m{i}")}))
            .await;
    }
    a.drain();
    a.send(json!({"type":"read","room":"r","seq":u64::MAX}))
        .await;
    let read = a.of_type("read");
    assert_eq!(read.len(), 1, "{read:?}");
    assert_eq!(read[0]["seq"], 3);
    a.send(json!({"type":"join","room":"empty"})).await;
    a.drain();
    a.send(json!({"type":"read","room":"empty","seq":5})).await;
    assert!(
        a.of_type("read").is_empty(),
        "no marker in a room without messages"
    );
    let mut b = n.connect("bob").await;
    b.send(json!({"type":"join","room":"r"})).await;
    let joined = b.of_type("joined");
    assert_eq!(joined[0]["read"], json!({"alice": 3}));
    assert_eq!(joined[0]["members_total"], 2);
}

#[tokio::test]
async fn recovery_longer_than_a_chunk_arrives_whole_and_in_order() {
    let limits = Limits {
        rate_per_sec: 1000,
        rate_burst: 1000,
        ..Limits::default()
    };
    let n = TestNode::with_limits(limits, 1000);
    let mut a = n.connect("alice").await;
    a.send(json!({"type":"join","room":"r"})).await;
    let total = RECOVERY_CHUNK as u64 * 3 + 7;
    for i in 0..total {
        a.send(json!({"type":"send","room":"r","body":format!("m{i}")}))
            .await;
        a.dm_to("bob", i).await;
    }
    let mut b = n.connect("bob").await;
    let dms: Vec<u64> = b
        .of_type("dm")
        .iter()
        .filter_map(|f| f["seq"].as_u64())
        .collect();
    assert_eq!(
        dms,
        (1..=total).collect::<Vec<_>>(),
        "the whole inbox after welcome"
    );
    b.send(json!({"type":"join","room":"r","since":2})).await;
    let seqs: Vec<u64> = b
        .of_type("message")
        .iter()
        .filter_map(|f| f["seq"].as_u64())
        .collect();
    assert_eq!(seqs, (3..=total).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_since_above_the_newest_sequence_recovers_from_the_start() {
    let n = TestNode::new();
    let mut a = n.connect("alice").await;
    a.send(json!({"type":"join","room":"r"})).await;
    a.send(json!({"type":"send","room":"r","body":"after a restart"}))
        .await;
    let mut b = n.connect("bob").await;
    // bob saw sequence 40 of the room before it expired and started again.
    b.send(json!({"type":"join","room":"r","since":40})).await;
    let seqs: Vec<u64> = b
        .of_type("message")
        .iter()
        .filter_map(|f| f["seq"].as_u64())
        .collect();
    assert_eq!(seqs, [1]);
    a.send(json!({"type":"send","room":"r","body":"live"}))
        .await;
    assert_eq!(
        b.of_type("message").len(),
        1,
        "live messages are not taken for duplicates"
    );
}

#[tokio::test]
async fn a_long_recovery_of_a_full_history_with_a_busy_room_alongside_is_never_a_slow_consumer() {
    let limits = Limits {
        rate_per_sec: 10_000,
        rate_burst: 10_000,
        ..Limits::default()
    };
    let cap = 1000;
    let n = TestNode::with_limits(limits, cap);
    let body = "b".repeat(4000);
    let mut bob = n.connect("bob").await;
    for room in ["big", "busy"] {
        bob.send(json!({"type":"join","room":room})).await;
    }
    for _ in 0..cap {
        bob.send(json!({"type":"send","room":"big","body":body}))
            .await;
        bob.drain();
    }
    let mut alice = n.connect("alice").await;
    alice.send(json!({"type":"join","room":"busy"})).await;
    alice.drain();
    // Alice reads as a client does: a frame at a time, handing it to the writer's accounting.
    let handle = alice.handle.clone();
    let done = CancellationToken::new();
    let stop = done.clone();
    let reader = tokio::spawn(async move {
        let mut got: Vec<(String, u64)> = Vec::new();
        loop {
            let out = tokio::select! {
                out = handle.next_out() => Some(out),
                () = stop.cancelled() => handle.try_next_out(),
            };
            let Some(out) = out else { break };
            let (b, reply) = match out {
                Out::Frame(b) => (b, false),
                Out::Reply(b) => (b, true),
                Out::Close(..) | Out::Pong(_) | Out::Ping => break,
            };
            handle.written(b.len(), reply);
            let f: Value = serde_json::from_str(b.as_str()).expect("json");
            if f["type"] == "message" {
                got.push((
                    f["room"].as_str().unwrap_or("").to_owned(),
                    f["seq"].as_u64().unwrap_or(0),
                ));
            }
            tokio::task::yield_now().await;
        }
        got
    });
    // Bob keeps both rooms busy while alice recovers the whole history of one.
    let busy = tokio::spawn(async move {
        for _ in 0..300 {
            for room in ["busy", "big"] {
                let body = if room == "big" {
                    "x".repeat(4000)
                } else {
                    "x".into()
                };
                bob.send(json!({"type":"send","room":room,"body":body}))
                    .await;
            }
            bob.drain();
            tokio::task::yield_now().await;
        }
        bob
    });
    alice
        .send(json!({"type":"join","room":"big","since":0}))
        .await;
    let _bob = busy.await.expect("bob's task");
    assert_eq!(alice.handle.kicked_with(), None, "never a slow consumer");
    done.cancel();
    let got = reader.await.expect("reader");
    let seqs = |room: &str| -> Vec<u64> {
        got.iter()
            .filter(|(r, _)| r == room)
            .map(|(_, s)| *s)
            .collect()
    };
    assert_eq!(
        seqs("busy"),
        (1..=300).collect::<Vec<_>>(),
        "every live event, in order"
    );
    let big = seqs("big");
    assert!(
        big.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicate"
    );
    let kept: Vec<u64> = big.iter().copied().filter(|s| *s > 300).collect();
    assert_eq!(
        kept,
        (301..=cap as u64 + 300).collect::<Vec<_>>(),
        "everything the store kept, up to the last message"
    );
}

#[tokio::test]
async fn batch_and_count_members_hear_of_joins_and_leaves_once_per_interval() {
    let n = TestNode::new();
    let mut batch = n.connect("batch").await;
    let mut count = n.connect("count").await;
    let mut events = n.connect("events").await;
    batch
        .send(json!({"type":"join","room":"r","presence":"batch"}))
        .await;
    count
        .send(json!({"type":"join","room":"r","presence":"count"}))
        .await;
    events.send(json!({"type":"join","room":"r"})).await;
    let joined = count.of_type("joined");
    assert_eq!(joined[0]["members"], json!([]), "count-only lists no one");
    assert_eq!(joined[0]["members_total"], 2);
    n.node.hub.flush_presence();
    for c in [&mut batch, &mut count, &mut events] {
        c.drain();
    }
    let mut others = Vec::new();
    for i in 0..5 {
        let mut c = n.connect(&format!("u{i}")).await;
        c.send(json!({"type":"join","room":"r"})).await;
        others.push(c);
    }
    assert!(batch.of_type("presence").is_empty(), "nothing one by one");
    assert!(count.of_type("presence").is_empty());
    assert_eq!(
        events.of_type("presence").len(),
        5,
        "the default is unchanged"
    );
    n.node.hub.flush_presence();
    let b = batch.drain();
    assert_eq!(b.len(), 1, "one frame for five joins: {b:?}");
    assert_eq!(b[0]["type"], "presence_batch");
    assert_eq!(b[0]["joins"], json!(["u0", "u1", "u2", "u3", "u4"]));
    assert_eq!(b[0]["leaves"], json!([]));
    assert_eq!(b[0]["members_total"], 8);
    let c = count.drain();
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0]["type"], "presence_count");
    assert_eq!(c[0]["members_total"], 8);
    n.node.hub.flush_presence();
    assert!(batch.drain().is_empty(), "nothing changed, nothing sent");
    // u0 leaves and comes back, u1 leaves: each user's last event counts.
    others[0].send(json!({"type":"leave","room":"r"})).await;
    others[0].send(json!({"type":"join","room":"r"})).await;
    others[1].send(json!({"type":"leave","room":"r"})).await;
    n.node.hub.flush_presence();
    let b = batch.drain();
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0]["joins"], json!(["u0"]));
    assert_eq!(b[0]["leaves"], json!(["u1"]));
    assert_eq!(b[0]["members_total"], 7);
}

#[tokio::test]
async fn a_member_list_is_paged_in_name_order() {
    let n = TestNode::new();
    let mut clients = Vec::new();
    for u in ["dave", "alice", "carol", "bob", "erin"] {
        let mut c = n.connect(u).await;
        c.send(json!({"type":"join","room":"r","presence":"count"}))
            .await;
        c.drain();
        clients.push(c);
    }
    let a = &mut clients[1];
    a.send(json!({"type":"members","room":"r","limit":2,"req":1}))
        .await;
    let p = a.of_type("members");
    assert_eq!(p[0]["members"], json!(["alice", "bob"]));
    assert_eq!(
        (p[0]["members_total"].clone(), p[0]["has_more"].clone()),
        (json!(5), json!(true))
    );
    assert_eq!(p[0]["req"], 1);
    a.send(json!({"type":"members","room":"r","after":"bob","limit":2}))
        .await;
    let p = a.of_type("members");
    assert_eq!(p[0]["members"], json!(["carol", "dave"]));
    a.send(json!({"type":"members","room":"r","after":"dave"}))
        .await;
    let p = a.of_type("members");
    assert_eq!(p[0]["members"], json!(["erin"]));
    assert_eq!(p[0]["has_more"], false);
    a.send(json!({"type":"members","room":"elsewhere"})).await;
    assert_eq!(a.of_type("error")[0]["code"], "not_joined");
    a.send(json!({"type":"join","room":"s","presence":"loud"}))
        .await;
    assert_eq!(a.of_type("error")[0]["code"], "bad_frame");
}
