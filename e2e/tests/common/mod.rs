//! Scenarios shared by the cluster (Redis, several nodes) and standalone (one node, no Redis) suites.
//!
//! Every scenario takes a running [`Topology`] and the indices of two nodes `a` and `b`; the cluster
//! suite passes two different nodes, the standalone suite passes `0, 0`. Names are unique per test so
//! scenarios never see each other's rooms or users. Waits are bounded; nothing sleeps to synchronise.
#![allow(dead_code)] // each test binary uses a subset

use std::time::Duration;

use e2e::client::{ChatClient, ConnectOptions, Error, consecutive, frame_type};
use e2e::topology::{Topology, TopologyConfig};
use serde_json::{Value, json};
use tokio::time::Instant;

/// Deadline for one expected frame.
pub const T: Duration = Duration::from_secs(10);

/// A unique name with a readable prefix (at most 20 characters of prefix keep it a valid user name).
pub fn name(prefix: &str) -> String {
    format!("{prefix}-{:08x}", fastrand::u32(..))
}

/// A two-node topology with Redis and one registry.
pub async fn cluster(node_args: &[&str]) -> Topology {
    Topology::start(TopologyConfig::scaled(2, 1).with_node_args(node_args.iter().copied()))
        .await
        .expect("start a 2-node topology with Redis")
}

/// One node without Redis.
pub async fn standalone(node_args: &[&str]) -> Topology {
    Topology::start(TopologyConfig::standalone().with_node_args(node_args.iter().copied()))
        .await
        .expect("start a standalone chat-node")
}

/// Connect `user` to node `i`.
pub async fn connect(t: &Topology, i: usize, user: &str) -> ChatClient {
    ChatClient::connect(&t.node_ws_url(i), user)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "connect {user} to node {i}: {e}\n{}",
                t.node_log_tail(i, 20)
            )
        })
}

/// Wait until `f` holds, polling every 50 ms, for at most `within`.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if f().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not true within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ------------------------------------------------------------------ chat features

/// Two senders on `a` and `b` interleave; every member on either node sees the same messages with
/// consecutive sequences in the same order, and acks carry those sequences.
pub async fn room_delivery_in_seq_order(t: &Topology, a: usize, b: usize) {
    let room = name("room");
    let mut alice = connect(t, a, &name("alice")).await;
    let mut bob = connect(t, b, &name("bob")).await;
    let mut carol = connect(t, b, &name("carol")).await;
    for c in [&mut alice, &mut bob, &mut carol] {
        let joined = c.join(&room, None).await.expect("join");
        assert_eq!(joined.last_seq, 0, "a fresh room is empty");
    }
    let mut acks = Vec::new();
    for i in 0..10 {
        acks.push(
            alice
                .send(&room, &format!("a{i}"), None)
                .await
                .expect("alice send")
                .seq,
        );
        acks.push(
            bob.send(&room, &format!("b{i}"), None)
                .await
                .expect("bob send")
                .seq,
        );
    }
    assert_eq!(
        acks,
        (1..=20).collect::<Vec<u64>>(),
        "acks carry the room's sequence"
    );
    let mut seen = Vec::new();
    for c in [&mut alice, &mut bob, &mut carol] {
        let msgs = c.messages_in(&room, 20, T).await.expect("20 messages");
        let seqs: Vec<u64> = msgs.iter().map(|m| m.seq).collect();
        assert_eq!(
            seqs,
            (1..=20).collect::<Vec<u64>>(),
            "delivered in seq order without gaps"
        );
        seen.push(
            msgs.iter()
                .map(|m| (m.seq, m.id.clone(), m.body.clone()))
                .collect::<Vec<_>>(),
        );
    }
    assert!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "every member saw the same order: {seen:?}"
    );
    let bodies: Vec<&str> = seen[0].iter().map(|(_, _, b)| b.as_str()).collect();
    assert_eq!(&bodies[..4], ["a0", "b0", "a1", "b1"]);
}

/// Four senders (two per node) pipeline at once: the room still has one total order, identical for
/// members on both nodes, and each sender's messages keep their sending order.
pub async fn concurrent_senders_share_one_order(t: &Topology, a: usize, b: usize) {
    const PER_SENDER: usize = 25;
    let room = name("room");
    let mut watchers = [
        connect(t, a, &name("wa")).await,
        connect(t, b, &name("wb")).await,
    ];
    for w in &mut watchers {
        w.join(&room, None).await.expect("join");
    }
    let mut tasks = Vec::new();
    for s in 0..4 {
        let mut c = connect(
            t,
            if s % 2 == 0 { a } else { b },
            &format!("s{s}-{}", name("x")),
        )
        .await;
        c.join(&room, None).await.expect("join");
        let room = room.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_SENDER {
                let frame = json!({"type": "send", "room": room, "body": format!("{s}:{i}")});
                c.send_frame(&frame).await?;
            }
            let mut acks = 0;
            while acks < PER_SENDER {
                let f = c.expect_type("ack", T).await?;
                assert_eq!(f["duplicate"], json!(false));
                acks += 1;
            }
            Ok::<_, Error>(())
        }));
    }
    for task in tasks {
        task.await
            .expect("sender task")
            .expect("sender got every ack");
    }
    let total = 4 * PER_SENDER;
    let mut orders = Vec::new();
    for w in &mut watchers {
        let msgs = w.messages_in(&room, total, T).await.expect("every message");
        let seqs: Vec<u64> = msgs.iter().map(|m| m.seq).collect();
        assert_eq!(
            seqs,
            (1..=total as u64).collect::<Vec<_>>(),
            "one gap-free order"
        );
        orders.push(msgs.iter().map(|m| m.body.clone()).collect::<Vec<_>>());
    }
    assert_eq!(
        orders[0], orders[1],
        "members on both nodes see the same order"
    );
    for s in 0..4 {
        let mine: Vec<&String> = orders[0]
            .iter()
            .filter(|b| b.starts_with(&format!("{s}:")))
            .collect();
        let expected: Vec<String> = (0..PER_SENDER).map(|i| format!("{s}:{i}")).collect();
        assert_eq!(mine.len(), PER_SENDER);
        assert!(
            mine.iter().zip(&expected).all(|(m, e)| *m == e),
            "sender {s} keeps its order"
        );
    }
}

/// Resending with the same `client_id` answers the original seq with `duplicate: true` and delivers
/// nothing new.
pub async fn resend_with_same_client_id_is_not_duplicated(t: &Topology, a: usize, b: usize) {
    let room = name("room");
    let mut alice = connect(t, a, &name("alice")).await;
    let mut bob = connect(t, b, &name("bob")).await;
    alice.join(&room, None).await.expect("join");
    bob.join(&room, None).await.expect("join");
    let first = alice.send(&room, "once", Some("c-1")).await.expect("send");
    assert!(!first.duplicate);
    let again = alice
        .send(&room, "once", Some("c-1"))
        .await
        .expect("resend");
    assert!(again.duplicate, "resend is flagged duplicate: {again:?}");
    assert_eq!(
        (again.seq, &again.id),
        (first.seq, &first.id),
        "resend names the original message"
    );
    // A resend from another connection of the same user (e.g. after reconnecting elsewhere) too.
    let mut alice2 = connect(t, b, alice.user().expect("user")).await;
    alice2.join(&room, None).await.expect("join");
    let third = alice2
        .send(&room, "once", Some("c-1"))
        .await
        .expect("resend from b");
    assert!(third.duplicate && third.seq == first.seq, "{third:?}");
    let marker = alice
        .send(&room, "marker", Some("c-2"))
        .await
        .expect("send marker");
    assert_eq!(
        marker.seq,
        first.seq + 1,
        "no message was created by the resends"
    );
    let msgs = bob.messages_in(&room, 2, T).await.expect("messages");
    assert_eq!(
        msgs.iter()
            .map(|m| (m.seq, m.client_id.as_deref()))
            .collect::<Vec<_>>(),
        [(first.seq, Some("c-1")), (marker.seq, Some("c-2"))]
    );
}

/// A DM reaches every connection of the recipient (on `a` and `b`), with one per-user sequence.
pub async fn dm_reaches_every_connection(t: &Topology, a: usize, b: usize) {
    let bob_name = name("bob");
    let mut alice = connect(t, a, &name("alice")).await;
    let mut bob_a = connect(t, a, &bob_name).await;
    let mut bob_b = connect(t, b, &bob_name).await;
    let ack = alice.dm(&bob_name, "psst", Some("d-1")).await.expect("dm");
    assert!(!ack.duplicate);
    assert_eq!(ack.to, bob_name);
    let one = bob_a.expect_dm(T).await.expect("dm on a");
    let two = bob_b.expect_dm(T).await.expect("dm on b");
    assert_eq!(one, two, "both connections get the same dm");
    assert_eq!(
        (one.body.as_str(), one.from.as_str()),
        ("psst", alice.user().expect("user"))
    );
    assert_eq!(one.seq, 1, "first dm of a fresh user");
    let again = alice
        .dm(&bob_name, "psst", Some("d-1"))
        .await
        .expect("dm resend");
    assert!(
        again.duplicate && again.id == ack.id,
        "dm resend is idempotent: {again:?}"
    );
    alice.dm(&bob_name, "second", None).await.expect("dm");
    let next = bob_b.expect_dm(T).await.expect("second dm");
    assert_eq!(
        (next.seq, next.body.as_str()),
        (2, "second"),
        "the resend delivered nothing"
    );
}

/// A DM to an offline user follows `welcome` on the next connect; `dm_since` replays.
pub async fn offline_dm_delivered_on_next_connect(t: &Topology, a: usize, b: usize) {
    let dave = name("dave");
    let mut alice = connect(t, a, &name("alice")).await;
    alice
        .dm(&dave, "while you were out", None)
        .await
        .expect("dm to offline user");
    alice
        .dm(&dave, "and another", None)
        .await
        .expect("dm to offline user");
    let mut dave_b = connect(t, b, &dave).await;
    let welcome = dave_b.welcome().cloned().expect("welcome");
    assert_eq!(
        welcome["dm_seq"],
        json!(2),
        "welcome counts stored dms: {welcome}"
    );
    let first = dave_b.expect_dm(T).await.expect("first stored dm");
    let second = dave_b.expect_dm(T).await.expect("second stored dm");
    assert_eq!((first.seq, first.body.as_str()), (1, "while you were out"));
    assert_eq!((second.seq, second.body.as_str()), (2, "and another"));
    // A second device asking for everything after seq 1 gets seq 2 again.
    let mut device = ChatClient::connect_with(
        &t.node_ws_url(a),
        ConnectOptions {
            user: Some(dave.clone()),
            dm_since: Some(1),
            wait_welcome: true,
            ..Default::default()
        },
    )
    .await
    .expect("connect with dm_since");
    let replay = device.expect_dm(T).await.expect("dm after dm_since");
    assert_eq!(replay.seq, 2);
}

/// `joined` lists members across nodes; joins and leaves (explicit or by disconnect) are announced.
pub async fn presence_join_and_leave(t: &Topology, a: usize, b: usize) {
    let room = name("room");
    let (alice_name, bob_name) = (name("alice"), name("bob"));
    let mut alice = connect(t, a, &alice_name).await;
    alice.join(&room, None).await.expect("join");
    let mut bob = connect(t, b, &bob_name).await;
    let joined = bob.join(&room, None).await.expect("join");
    let mut expected = vec![alice_name.clone(), bob_name.clone()];
    expected.sort();
    assert_eq!(joined.members, expected, "members across nodes, sorted");
    let is_presence = |user: &str, event: &str| {
        let (user, event) = (user.to_owned(), event.to_owned());
        move |f: &Value| {
            frame_type(f) == Some("presence")
                && f["user"] == json!(user)
                && f["event"] == json!(event)
        }
    };
    alice
        .wait_for(is_presence(&bob_name, "join"), T)
        .await
        .expect("alice sees bob join");
    bob.leave(&room).await.expect("leave");
    alice
        .wait_for(is_presence(&bob_name, "leave"), T)
        .await
        .expect("alice sees bob leave");
    bob.join(&room, None).await.expect("join again");
    alice
        .wait_for(is_presence(&bob_name, "join"), T)
        .await
        .expect("alice sees bob rejoin");
    bob.close().await.expect("close");
    alice
        .wait_for(is_presence(&bob_name, "leave"), T)
        .await
        .expect("a disconnect is a leave");
}

/// Typing is relayed to the other members but never stored.
pub async fn typing_is_relayed_not_stored(t: &Topology, a: usize, b: usize) {
    let room = name("room");
    let alice_name = name("alice");
    let mut alice = connect(t, a, &alice_name).await;
    let mut bob = connect(t, b, &name("bob")).await;
    alice.join(&room, None).await.expect("join");
    bob.join(&room, None).await.expect("join");
    alice.typing(&room).await.expect("typing");
    let typing = bob.expect_type("typing", T).await.expect("bob sees typing");
    assert_eq!(
        (typing["room"].clone(), typing["user"].clone()),
        (json!(room), json!(alice_name))
    );
    let ack = alice.send(&room, "hello", None).await.expect("send");
    assert_eq!(ack.seq, 1, "typing took no sequence");
    let page = bob.history(&room, None, None).await.expect("history");
    assert_eq!(
        page.messages.len(),
        1,
        "history holds the message only: {page:?}"
    );
    let mut carol = connect(t, a, &name("carol")).await;
    let joined = carol.join(&room, Some(0)).await.expect("join since 0");
    assert_eq!(joined.last_seq, 1);
    let replay = carol
        .messages_in(&room, 1, T)
        .await
        .expect("replayed message");
    assert_eq!(replay[0].body, "hello");
    carol.ping().await.expect("ping");
    assert!(
        !carol
            .buffered()
            .iter()
            .any(|f| frame_type(f) == Some("typing")),
        "no stored typing is replayed: {:?}",
        carol.buffered()
    );
}

/// Read markers move forward, are broadcast to the room and listed in `joined.read`.
pub async fn read_markers_stored_and_broadcast(t: &Topology, a: usize, b: usize) {
    let room = name("room");
    let bob_name = name("bob");
    let mut alice = connect(t, a, &name("alice")).await;
    let mut bob = connect(t, b, &bob_name).await;
    alice.join(&room, None).await.expect("join");
    bob.join(&room, None).await.expect("join");
    for i in 0..3 {
        alice
            .send(&room, &format!("m{i}"), None)
            .await
            .expect("send");
    }
    bob.read(&room, 2).await.expect("read");
    let event = alice
        .wait_for(
            |f| frame_type(f) == Some("read") && f["user"] == json!(bob_name),
            T,
        )
        .await
        .expect("alice sees bob's read marker");
    assert_eq!(
        (event["room"].clone(), event["seq"].clone()),
        (json!(room), json!(2))
    );
    bob.read(&room, 1).await.expect("read backwards");
    bob.read(&room, 3).await.expect("read");
    let event = alice
        .wait_for(
            |f| frame_type(f) == Some("read") && f["user"] == json!(bob_name),
            T,
        )
        .await
        .expect("next read event");
    assert_eq!(
        event["seq"],
        json!(3),
        "markers only move forward (1 after 2 is not an event)"
    );
    let mut carol = connect(t, a, &name("carol")).await;
    let joined = carol.join(&room, None).await.expect("join");
    assert_eq!(
        joined.read.get(&bob_name),
        Some(&3),
        "stored marker in joined.read: {joined:?}"
    );
}

/// `last_seen` tells online users, offline users with a time, and unknown users.
pub async fn last_seen_reports_online_and_offline(t: &Topology, a: usize, b: usize) {
    let (alice_name, bob_name, ghost) = (name("alice"), name("bob"), name("ghost"));
    let mut alice = connect(t, a, &alice_name).await;
    let bob = connect(t, b, &bob_name).await;
    let seen = alice
        .last_seen(&[&alice_name, &bob_name, &ghost])
        .await
        .expect("last_seen");
    assert!(
        seen[&alice_name].online && seen[&bob_name].online,
        "{seen:?}"
    );
    assert!(
        !seen[&ghost].online && seen[&ghost].last_seen.is_none(),
        "{seen:?}"
    );
    let before_close = alice.ping().await.expect("ping");
    bob.close().await.expect("close");
    let deadline = Instant::now() + T;
    loop {
        let seen = alice.last_seen(&[&bob_name]).await.expect("last_seen");
        let entry = &seen[&bob_name];
        if !entry.online {
            let at = entry
                .last_seen
                .expect("an offline user who was here has a last_seen time");
            assert!(
                at + 5_000 >= before_close,
                "last_seen {at} is about when bob left ({before_close})"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bob still online after closing: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// History pages backwards with `before`/`limit` and `has_more`, from either node.
pub async fn history_paging(t: &Topology, a: usize, b: usize) {
    let room = name("room");
    let mut alice = connect(t, a, &name("alice")).await;
    let mut bob = connect(t, b, &name("bob")).await;
    alice.join(&room, None).await.expect("join");
    for i in 1..=25 {
        alice
            .send(&room, &format!("m{i}"), None)
            .await
            .expect("send");
    }
    bob.join(&room, None).await.expect("join");
    let seqs = |p: &e2e::client::HistoryPage| p.messages.iter().map(|m| m.seq).collect::<Vec<_>>();
    let newest = bob.history(&room, None, Some(10)).await.expect("history");
    assert_eq!(seqs(&newest), (16..=25).collect::<Vec<_>>());
    assert!(newest.has_more);
    assert_eq!(newest.messages[0].body, "m16");
    let older = bob
        .history(&room, Some(16), Some(10))
        .await
        .expect("history");
    assert_eq!(seqs(&older), (6..=15).collect::<Vec<_>>());
    assert!(older.has_more);
    let oldest = bob
        .history(&room, Some(6), Some(10))
        .await
        .expect("history");
    assert_eq!(seqs(&oldest), (1..=5).collect::<Vec<_>>());
    assert!(!oldest.has_more, "nothing before seq 1");
    let default = alice
        .history(&room, None, None)
        .await
        .expect("history default limit");
    assert_eq!(
        seqs(&default),
        (1..=25).collect::<Vec<_>>(),
        "default limit 50 covers all 25"
    );
    let bad = bob.history(&room, None, Some(500)).await;
    assert!(
        bad.is_err() || bad.as_ref().is_ok_and(|p| p.messages.len() <= 200),
        "limit is bounded"
    );
}

/// Re-joining with `since` (on the other node) answers exactly the missed messages, then live ones.
pub async fn rejoin_with_since_recovers(t: &Topology, a: usize, b: usize) {
    let room = name("room");
    let alice_name = name("alice");
    let mut alice = connect(t, a, &alice_name).await;
    let mut bob = connect(t, b, &name("bob")).await;
    alice.join(&room, None).await.expect("join");
    bob.join(&room, None).await.expect("join");
    for i in 1..=3 {
        bob.send(&room, &format!("m{i}"), None).await.expect("send");
    }
    let got = alice.messages_in(&room, 3, T).await.expect("3 messages");
    let last = got.last().expect("a message").seq;
    alice.close().await.expect("close");
    for i in 4..=7 {
        bob.send(&room, &format!("m{i}"), None).await.expect("send");
    }
    let mut alice = connect(t, b, &alice_name).await;
    let joined = alice.join(&room, Some(last)).await.expect("join since");
    assert_eq!(joined.last_seq, 7);
    let missed = alice
        .messages_in(&room, 4, T)
        .await
        .expect("missed messages");
    assert_eq!(
        missed.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [4, 5, 6, 7]
    );
    bob.send(&room, "live", None).await.expect("send");
    let live = alice.messages_in(&room, 1, T).await.expect("live message");
    assert_eq!(
        (live[0].seq, live[0].body.as_str()),
        (8, "live"),
        "live follows with no duplicate"
    );
}

// ------------------------------------------------------------------ identity, capacity, drain

/// `hello` as the first frame identifies; a second `hello` is refused.
pub async fn hello_frame_identifies(t: &Topology, a: usize) {
    let user = name("hello");
    let mut c = ChatClient::open(&t.node_ws_url(a)).await.expect("open");
    let welcome = c.hello(&user, None).await.expect("welcome");
    assert_eq!(welcome["user"], json!(user));
    assert!(
        welcome["limits"]["max_body_chars"].is_u64(),
        "welcome carries limits: {welcome}"
    );
    let again = c
        .request(json!({"type": "hello", "user": user}), T)
        .await
        .expect("reply");
    assert_eq!(again["code"], json!("already_identified"), "{again}");
    c.ping().await.expect("still usable");
}

/// A node at capacity closes new sessions with 1013 and keeps serving the ones it has.
pub async fn full_node_refuses_with_1013(t: &Topology, a: usize, capacity: usize) {
    let mut held = Vec::new();
    for _ in 0..capacity {
        held.push(connect(t, a, &name("held")).await);
    }
    let refused = ChatClient::connect(&t.node_ws_url(a), &name("extra")).await;
    match refused {
        Err(Error::Closed { code, .. }) => assert_eq!(code, 1013, "full node closes with 1013"),
        other => panic!("expected close 1013 from a full node, got {other:?}"),
    }
    for c in &mut held {
        c.ping().await.expect("existing sessions carry on");
    }
    let freed = held.pop().expect("one held");
    freed.close().await.expect("close");
    let deadline = Instant::now() + T;
    loop {
        match ChatClient::connect(&t.node_ws_url(a), &name("later")).await {
            Ok(_) => break,
            Err(Error::Closed { code: 1013, .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("a freed slot is reusable: {e}"),
        }
    }
}

/// SIGTERM: clients get `reconnect`, then close 1012; the process exits.
pub async fn drain_tells_clients_to_reconnect(t: &mut Topology, a: usize) {
    let room = name("room");
    let mut alice = connect(t, a, &name("alice")).await;
    alice.join(&room, None).await.expect("join");
    t.signal_term_node(a).expect("SIGTERM");
    let notice = alice
        .expect_type("reconnect", T)
        .await
        .expect("reconnect notice");
    assert!(notice["retry_after_ms"].is_u64(), "{notice}");
    let (code, _) = alice
        .wait_closed(Duration::from_secs(30))
        .await
        .expect("close after notice");
    assert_eq!(code, 1012, "drain closes with 1012");
    let status = t
        .wait_node_exit(a, Duration::from_secs(30))
        .await
        .expect("node exits after drain");
    assert!(status.success(), "graceful exit: {status}");
}

// ------------------------------------------------------------------ limits

/// A frame above `max_frame_bytes` closes that connection with 1009; others carry on.
pub async fn oversize_frame_closes_1009(t: &Topology, a: usize) {
    let mut other = connect(t, a, &name("other")).await;
    let mut big = connect(t, a, &name("big")).await;
    let body = "x".repeat(70_000);
    let _ = big
        .send_frame(&json!({"type": "send", "room": "r", "body": body}))
        .await;
    let (code, _) = big.wait_closed(T).await.expect("closed");
    assert_eq!(code, 1009);
    other.ping().await.expect("others carry on");
}

/// A body above `max_body_chars` is `too_large`; the session stays usable.
pub async fn long_body_is_too_large(t: &Topology, a: usize) {
    let room = name("room");
    let mut c = connect(t, a, &name("long")).await;
    c.join(&room, None).await.expect("join");
    let err = c
        .send(&room, &"y".repeat(4001), None)
        .await
        .expect_err("too long");
    assert_eq!(err.server_code(), Some("too_large"), "{err}");
    let ok = c
        .send(&room, &"y".repeat(4000), None)
        .await
        .expect("at the limit is fine");
    assert_eq!(ok.seq, 1, "the refused body was not stored");
    let err = c.send(&room, "", None).await.expect_err("empty body");
    assert_eq!(err.server_code(), Some("invalid_body"), "{err}");
}

/// A flood is `rate_limited` (with `retry_after_ms`), perhaps closed 4029; others carry on.
pub async fn flood_is_rate_limited(t: &Topology, a: usize) {
    let mut other = connect(t, a, &name("other")).await;
    let mut flood = connect(t, a, &name("flood")).await;
    for i in 0..120 {
        if flood
            .send_frame(&json!({"type": "ping", "req": i}))
            .await
            .is_err()
        {
            break;
        }
    }
    match flood.expect_error("rate_limited", T).await {
        Ok(err) => assert!(
            err["retry_after_ms"].is_u64(),
            "rate_limited says when to retry: {err}"
        ),
        Err(Error::Closed { code, .. }) => {
            assert_eq!(code, 4029, "a flood may be closed with 4029")
        }
        Err(e) => panic!("expected rate_limited, got {e}"),
    }
    other.ping().await.expect("others carry on");
}

/// A member that does not read is closed with 4008 while the others receive everything.
///
/// The sender stops as soon as the node counts a dropped slow consumer (or after `MAX` messages),
/// then the slow member reads what is queued for it and must find the 4008 close behind it.
pub async fn slow_consumer_is_dropped_others_carry_on(t: &Topology, a: usize, b: usize) {
    const MAX: usize = 4000;
    let room = name("room");
    let mut sender = connect(t, a, &name("sender")).await;
    let mut fast = connect(t, b, &name("fast")).await;
    let mut slow = ChatClient::connect_with(
        &t.node_ws_url(a),
        ConnectOptions {
            user: Some(name("slow")),
            recv_buffer: Some(4096),
            wait_welcome: true,
            ..Default::default()
        },
    )
    .await
    .expect("connect slow");
    for c in [&mut sender, &mut fast, &mut slow] {
        c.join(&room, None).await.expect("join");
    }
    let reader = {
        let room = room.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let m = fast.wait_message(&room, |_| true, T).await?;
                let end = m.body == "end";
                got.push(m);
                if end {
                    return Ok::<_, Error>(got);
                }
            }
        })
    };
    let body = "z".repeat(3900);
    let mut sent = 0;
    while sent < MAX {
        // Pipelined in batches of 10 (well inside the outbound queue), then wait for the last ack.
        for _ in 0..10 {
            let frame = json!({"type": "send", "room": room, "body": format!("{sent}:{body}")});
            sender.send_frame(&frame).await.expect("sender carries on");
            sent += 1;
        }
        let last = sent as u64;
        sender
            .wait_for(
                |f| frame_type(f) == Some("ack") && f["seq"] == json!(last),
                T,
            )
            .await
            .expect("sender's acks");
        sender.take_buffered();
        if metric(t, a, "slow_consumers_dropped").await > 0.0 {
            break;
        }
    }
    sender
        .send(&room, "end", None)
        .await
        .expect("sender carries on");
    let (code, reason) = slow
        .wait_closed(Duration::from_secs(30))
        .await
        .expect("slow member closed");
    assert_eq!(
        code, 4008,
        "slow consumer close code (reason {reason:?}) after {sent} messages"
    );
    let got = reader
        .await
        .expect("reader task")
        .expect("the fast member gets every message");
    let seqs: Vec<u64> = got.iter().map(|m| m.seq).collect();
    assert!(
        consecutive(&seqs) && seqs.len() == sent + 1,
        "fast member: every message in order"
    );
}

/// The sum of the samples of node `i`'s metrics whose name contains `name` (0 when absent).
pub async fn metric(t: &Topology, i: usize, name: &str) -> f64 {
    let url = format!("{}/metrics", t.node_http_url(i));
    let Ok(response) = reqwest::get(&url).await else {
        return 0.0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .filter(|(key, _)| key.contains(name))
        .filter_map(|(_, value)| value.trim().parse::<f64>().ok())
        .sum()
}

/// Bad user names close with 4001; bad room names are `invalid_name`.
pub async fn invalid_names_are_refused(t: &Topology, a: usize) {
    for bad in [
        "-leading",
        "waytoolong-abcdefghijklmnopqrstuvwxyz",
        "sp%20ace",
    ] {
        match ChatClient::connect(&t.node_ws_url(a), bad).await {
            Err(Error::Closed { code, .. }) => assert_eq!(code, 4001, "user {bad:?}"),
            other => panic!("user {bad:?}: expected close 4001, got {other:?}"),
        }
    }
    let mut c = connect(t, a, &name("names")).await;
    for bad in ["-room", "has space", "slash/room", &"r".repeat(65)] {
        let err = c.join(bad, None).await.expect_err("bad room");
        assert_eq!(
            err.server_code(),
            Some("invalid_name"),
            "room {bad:?}: {err}"
        );
    }
    let err = c
        .dm("-nobody", "hi", None)
        .await
        .expect_err("bad dm target");
    assert_eq!(err.server_code(), Some("invalid_name"), "{err}");
    c.join("ok.room:1_a-b", None)
        .await
        .expect("every allowed character");
}

/// Malformed, unknown, binary and out-of-room frames get their error codes; the session survives.
pub async fn bad_frames_get_error_codes(t: &Topology, a: usize) {
    let mut c = connect(t, a, &name("frames")).await;
    c.send_text("{not json").await.expect("send");
    c.expect_error("bad_frame", T)
        .await
        .expect("malformed JSON is bad_frame");
    c.send_text(r#"{"room":"x"}"#).await.expect("send");
    c.expect_error("bad_frame", T)
        .await
        .expect("no type is bad_frame");
    c.send_text(r#"{"type":"join","room":7}"#)
        .await
        .expect("send");
    c.expect_error("bad_frame", T)
        .await
        .expect("wrong field type is bad_frame");
    c.send_binary(vec![1, 2, 3]).await.expect("send");
    c.expect_error("bad_frame", T)
        .await
        .expect("binary is bad_frame");
    let reply = c
        .request(json!({"type": "teleport"}), T)
        .await
        .expect("reply");
    assert_eq!(reply["code"], json!("unknown_type"), "{reply}");
    let room = name("room");
    for frame in [
        json!({"type": "send", "room": room, "body": "x"}),
        json!({"type": "history", "room": room}),
    ] {
        let reply = c.request(frame, T).await.expect("reply");
        assert_eq!(reply["code"], json!("not_joined"), "{reply}");
    }
    c.ping().await.expect("still usable");
}

/// Without `?user=` and without `hello`, the node closes with 4002 after its 10 s wait.
pub async fn missing_hello_closes_4002(t: &Topology, a: usize) {
    let mut c = ChatClient::open(&t.node_ws_url(a)).await.expect("open");
    let (code, _) = c
        .wait_closed(Duration::from_secs(25))
        .await
        .expect("closed");
    assert_eq!(code, 4002);
}

/// With a short idle timeout, a silent connection is closed with 4003.
pub async fn idle_connection_closes_4003(t: &Topology, a: usize) {
    let mut c = connect(t, a, &name("idle")).await;
    let (code, _) = c
        .wait_closed(Duration::from_secs(30))
        .await
        .expect("closed");
    assert_eq!(code, 4003);
}
