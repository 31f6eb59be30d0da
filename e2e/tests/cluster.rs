//! Scaled mode: two chat-nodes and a registry sharing a real Redis (started by the harness), every
//! chat feature exercised across nodes, plus node death, recovery through the registry, drain (paced
//! included) and operator membership with the test playing the operator (through
//! `switchboard-loadset`, as the operator's load-set sync does) — or playing it being down.

mod common;

use std::time::Duration;

use common::*;
use e2e::client::{self, ChatClient, Error};
use e2e::topology::{Topology, TopologyConfig};
use std::collections::BTreeSet;
use switchboard_loadset::{LoadSet, Membership};
use switchboard_runtime::report;
use switchboard_testkit::eventually;
use tokio::time::Instant;

/// How long a dead node may stay in the load set: the default heartbeat ttl (3 s) plus slack.
const GONE_WITHIN: Duration = Duration::from_secs(15);

common::shared_scenarios!(start: cluster(&[]), nodes: 0, 1);

/// Waits until the registry's `/v1/nodes` no longer lists `id`.
async fn eventually_unlisted(registry: &str, id: &str) {
    let what = format!("{id} leaves /v1/nodes");
    eventually_nodes(registry, &what, |nodes| nodes.iter().all(|n| n.id != id)).await;
}

/// Waits until the registry's `/v1/nodes` satisfies `ok`.
async fn eventually_nodes(
    registry: &str,
    what: &str,
    ok: impl Fn(&[client::NodeInfo]) -> bool + Clone,
) {
    eventually(what, GONE_WITHIN, || {
        let registry = registry.to_owned();
        let ok = ok.clone();
        async move {
            client::nodes(&registry)
                .await
                .is_ok_and(|nodes| ok(&nodes))
                .then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn registry_assigns_every_live_node() {
    let t = cluster(&[]).await;
    let listed = client::nodes(&t.registry_url(0)).await.expect("/v1/nodes");
    let mut ids: Vec<String> = listed.iter().map(|n| n.id.clone()).collect();
    ids.sort();
    assert_eq!(ids, ["node-0", "node-1"], "{listed:?}");
    for n in &listed {
        assert!(
            n.url.starts_with("ws://127.0.0.1:"),
            "advertised URL: {n:?}"
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let a = client::assign(&t.registry_url(0)).await.expect("assign");
        let index: usize = a.node.trim_start_matches("node-").parse().expect("node-N");
        assert_eq!(
            a.url,
            t.node_ws_url(index),
            "assignment names the node's URL"
        );
        seen.insert(a.node);
    }
    assert_eq!(seen.len(), 2, "ties are spread over both nodes: {seen:?}");
}

#[tokio::test]
async fn killed_node_disappears_from_assign_within_heartbeat_ttl() {
    let mut t = cluster(&[]).await;
    let registry = t.registry_url(0);
    t.kill_node(0).expect("kill");
    eventually_unlisted(&registry, "node-0").await;
    for _ in 0..30 {
        let a = client::assign(&registry).await.expect("assign");
        assert_eq!(
            a.node, "node-1",
            "a killed node is never assigned once gone"
        );
    }
    t.kill_node(1).expect("kill");
    eventually("no node left: 503 with Retry-After", GONE_WITHIN, || {
        let registry = registry.clone();
        async move {
            matches!(
                client::assign(&registry).await,
                Err(Error::Unavailable {
                    status: 503,
                    retry_after: Some(_),
                    ..
                })
            )
            .then_some(())
        }
    })
    .await;
    t.restart_node(0).await.expect("restart node-0");
    eventually("a restarted node is assigned again", GONE_WITHIN, || {
        let registry = registry.clone();
        async move {
            client::assign(&registry)
                .await
                .is_ok_and(|a| a.node == "node-0")
                .then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn recovery_after_node_is_killed() {
    let mut t = cluster(&[]).await;
    let room = name("room");
    let alice_name = name("alice");
    let mut alice = connect(&t, 0, &alice_name).await;
    let mut bob = connect(&t, 1, &name("bob")).await;
    alice.join(&room, None).await.expect("join");
    bob.join(&room, None).await.expect("join");
    for i in 1..=5 {
        bob.send(&room, &format!("m{i}"), Some(&format!("b-{i}")))
            .await
            .expect("send");
    }
    let got = alice.messages_in(&room, 5, T).await.expect("5 messages");
    let last_seen = got.last().expect("one").seq;
    t.kill_node(0).expect("SIGKILL alice's node");
    let (code, _) = alice.wait_closed(T).await.expect("alice notices");
    assert_eq!(
        code,
        client::ABNORMAL_CLOSE,
        "a killed node sends no close frame"
    );
    for i in 6..=9 {
        bob.send(&room, &format!("m{i}"), Some(&format!("b-{i}")))
            .await
            .expect("send while alice is away");
    }
    // Reconnect through the registry, as the protocol says: until the dead node has left the load
    // set an assignment may still name it; such a connection fails and the client asks again.
    let deadline = Instant::now() + GONE_WITHIN;
    let mut alice = loop {
        let assigned = async {
            let a = e2e::client::assign(&t.registry_url(0)).await?;
            let c = ChatClient::connect_with(&a.url, t.options(&alice_name)).await?;
            Ok::<_, e2e::client::Error>((c, a))
        };
        match assigned.await {
            Ok((c, a)) => {
                assert_eq!(a.node, "node-1");
                break c;
            }
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "no live node assigned within {GONE_WITHIN:?}: {}",
                    report::chain(&e)
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let joined = alice
        .join(&room, Some(last_seen))
        .await
        .expect("join since");
    assert_eq!(joined.last_seq, 9);
    let missed = alice
        .messages_in(&room, 4, T)
        .await
        .expect("missed messages");
    assert_eq!(
        missed.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [6, 7, 8, 9],
        "exactly the missed ones"
    );
    bob.send(&room, "live", None).await.expect("send");
    let live = alice.messages_in(&room, 1, T).await.expect("live");
    assert_eq!(live[0].seq, 10, "then live ones, no duplicate");
    alice.ping().await.expect("ping");
    assert!(
        !alice.buffered().iter().any(|f| f["type"] == "message"),
        "no duplicate message: {:?}",
        alice.buffered()
    );
}

#[tokio::test]
async fn drain_tells_clients_to_reconnect_and_leaves_the_load_set() {
    let mut t = cluster(&[]).await;
    let registry = t.registry_url(0);
    common::drain_tells_clients_to_reconnect(&mut t, 0).await;
    eventually_unlisted(&registry, "node-0").await;
    for _ in 0..20 {
        assert_eq!(
            client::assign(&registry).await.expect("assign").node,
            "node-1"
        );
    }
}

#[tokio::test]
async fn full_node_refuses_with_1013_and_is_not_assigned() {
    let t = cluster(&["--capacity", "2"]).await;
    let registry = t.registry_url(0);
    let _held = [
        connect(&t, 0, &name("held")).await,
        connect(&t, 0, &name("held")).await,
    ];
    // Node-1 has room for 2; the registry reserves a slot per assignment, so after a few answers
    // it may say 503 — but it must never name the full node-0.
    eventually(
        "the registry stops naming the full node",
        GONE_WITHIN,
        || {
            let registry = registry.clone();
            async move {
                let mut named = Vec::new();
                for _ in 0..6 {
                    match client::assign(&registry).await {
                        Ok(a) => named.push(a.node),
                        Err(Error::Unavailable { status: 503, .. }) => {}
                        Err(_) => return None,
                    }
                }
                named.iter().all(|n| n == "node-1").then_some(())
            }
        },
    )
    .await;
    match t.connect(0, &name("extra")).await {
        Err(Error::Closed { code, .. }) => assert_eq!(code, 1013),
        other => panic!("expected close 1013 from the full node, got {other:?}"),
    }
    common::full_node_refuses_with_1013(&t, 1, 2).await;
}

#[tokio::test]
async fn added_node_joins_the_load_set() {
    let mut t = cluster(&[]).await;
    let i = t.add_node().await.expect("add a node");
    let registry = t.registry_url(0);
    eventually_nodes(&registry, "node-2 is listed", |n| {
        n.iter().any(|n| n.id == "node-2")
    })
    .await;
    let room = name("room");
    let mut a = connect(&t, 0, &name("a")).await;
    let mut c = connect(&t, i, &name("c")).await;
    a.join(&room, None).await.expect("join");
    c.join(&room, None).await.expect("join");
    a.send(&room, "to the new node", None).await.expect("send");
    let got = c
        .messages_in(&room, 1, T)
        .await
        .expect("delivered to the new node");
    assert_eq!(got[0].body, "to the new node");
}

#[tokio::test]
async fn paced_drain_tells_clients_in_turn_and_serves_the_rest_meanwhile() {
    // 30 clients at 10 notices per second: about 3 s of notices, well inside half of 20 s.
    let mut t = cluster(&["--drain-notice-rate", "10", "--drain-timeout", "20s"]).await;
    common::paced_drain_serves_clients_not_told_yet(&mut t, 0, 30).await;
}

/// Two nodes in operator membership; nobody holds the membership lease yet, so they added themselves.
async fn operator_cluster() -> Topology {
    Topology::start(TopologyConfig::scaled(2, 1).with_membership(Membership::Operator))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "start a 2-node operator-membership topology: {}",
                report::chain(&e)
            )
        })
}

/// The test's stand-in for the operator: the topology's load set, written as `loadset_sync` does.
async fn operator_of(t: &Topology) -> LoadSet {
    let redis = t.redis().expect("the topology has Redis");
    let client = switchboard_redis::connect(&redis.redis_args())
        .await
        .expect("connect to Redis");
    LoadSet::new(client, switchboard_redis::keys::Keys::new(t.cluster_id()))
}

/// What the operator's sync does: take the lease, then make the members exactly `pods`.
async fn operator_sync(operator: &LoadSet, lease: Duration, pods: &[&str]) {
    operator.hold_membership(lease).await.expect("lease");
    let desired: BTreeSet<String> = pods.iter().map(|&p| p.to_owned()).collect();
    operator.sync_members(&desired).await.expect("sync members");
}

/// Waits until `n` assignments in a row never name `never` (and at least one succeeds).
async fn eventually_never_assigned(registry: &str, never: &str) {
    eventually(&format!("{never} is never assigned"), GONE_WITHIN, || {
        let registry = registry.to_owned();
        let never = never.to_owned();
        async move {
            for _ in 0..20 {
                match client::assign(&registry).await {
                    Ok(a) if a.node != never => {}
                    _ => return None,
                }
            }
            Some(())
        }
    })
    .await;
}

/// Waits until an assignment names `node`.
async fn eventually_assigned(registry: &str, node: &str) {
    eventually(&format!("{node} is assigned"), GONE_WITHIN, || {
        let registry = registry.to_owned();
        let node = node.to_owned();
        async move {
            client::assign(&registry)
                .await
                .is_ok_and(|a| a.node == node)
                .then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn operator_membership_without_the_operator_drops_a_killed_node_and_admits_a_new_one() {
    let mut t = operator_cluster().await;
    let registry = t.registry_url(0);
    let operator = operator_of(&t).await;
    // The operator synced once, then went down: its lease (1 s here, 3 resyncs for real) lapses.
    operator_sync(&operator, Duration::from_secs(1), &["node-0", "node-1"]).await;

    t.kill_node(0).expect("SIGKILL node-0");
    eventually_never_assigned(&registry, "node-0").await;
    eventually_unlisted(&registry, "node-0").await;

    // A new pod while the operator is down: ready, so it adds itself and gets clients.
    let i = t.add_node().await.expect("add node-2");
    eventually_assigned(&registry, &t.node_id(i)).await;

    // The operator comes back: its sync takes the lease and keeps exactly the ready pods.
    operator_sync(&operator, Duration::from_secs(60), &["node-1", "node-2"]).await;
    assert_eq!(
        operator.members().await.expect("members"),
        BTreeSet::from(["node-1".to_owned(), "node-2".to_owned()])
    );
}

#[tokio::test]
async fn operator_membership_with_the_operator_up_skips_a_killed_node_until_it_removes_it() {
    let mut t = operator_cluster().await;
    let registry = t.registry_url(0);
    let operator = operator_of(&t).await;
    operator_sync(&operator, Duration::from_secs(120), &["node-0", "node-1"]).await;

    // A new pod: ready (its first heartbeat landed), but only the operator adds members.
    let i = t.add_node().await.expect("add node-2");
    let new = t.node_id(i);
    assert!(
        !operator.members().await.expect("members").contains(&new),
        "a node never adds itself while the operator holds membership"
    );

    t.kill_node(0).expect("SIGKILL node-0");
    eventually_nodes(&registry, "node-0 is listed as not live", |n| {
        n.iter()
            .any(|n| n.id == "node-0" && !n.live && !n.accepting)
    })
    .await;
    for _ in 0..20 {
        assert_eq!(
            client::assign(&registry).await.expect("assign").node,
            "node-1",
            "neither the dead member nor the pod the operator has not added"
        );
    }
    assert!(
        operator
            .members()
            .await
            .expect("members")
            .contains("node-0"),
        "the registry leaves removing members to the operator that holds them"
    );

    operator_sync(&operator, Duration::from_secs(120), &["node-1", &new]).await;
    eventually_assigned(&registry, &new).await;
    let listed = client::nodes(&registry).await.expect("/v1/nodes");
    assert!(listed.iter().all(|n| n.id != "node-0"), "{listed:?}");
}

/// How long a killed node's users may stay listed in a room: their presence entries expire 30 s after
/// the node's last refresh (every 10 s), and a surviving node looks for expired ones every 10 s.
const PRESENCE_GONE_WITHIN: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_killed_nodes_users_leave_their_rooms_with_one_presence_event() {
    let mut t = cluster(&[]).await;
    let room = name("room");
    let (alice_name, bob_name) = (name("alice"), name("bob"));
    let mut alice = connect(&t, 0, &alice_name).await;
    let mut bob = connect(&t, 1, &bob_name).await;
    alice.join(&room, None).await.expect("alice joins");
    let joined = bob.join(&room, None).await.expect("bob joins");
    assert_eq!(joined.members_total, 2);
    t.kill_node(0).expect("SIGKILL alice's node");
    let is_leave = |f: &serde_json::Value| {
        f["type"] == "presence" && f["user"] == alice_name.as_str() && f["event"] == "leave"
    };
    let left = bob
        .wait_for(is_leave, PRESENCE_GONE_WITHIN)
        .await
        .expect("bob is told that alice left once her presence expired");
    assert_eq!(left["room"], room.as_str());
    let mut carol = connect(&t, 1, &name("carol")).await;
    let joined = carol.join(&room, None).await.expect("carol joins");
    assert!(
        !joined.members.contains(&alice_name),
        "alice is no longer listed: {:?}",
        joined.members
    );
    // The next sweep (10 s later) finds nothing more to announce.
    tokio::time::sleep(Duration::from_secs(12)).await;
    bob.ping().await.expect("ping");
    let repeats = bob.buffered().iter().filter(|f| is_leave(f)).count();
    assert_eq!(
        repeats,
        0,
        "one leave, not one per sweep: {:?}",
        bob.buffered()
    );
}

/// A cluster, and alice on node 0 and bob on node 1 in one fresh room.
async fn two_members() -> (Topology, String, ChatClient, ChatClient) {
    let t = cluster(&[]).await;
    let room = name("room");
    let mut alice = connect(&t, 0, &name("alice")).await;
    let mut bob = connect(&t, 1, &name("bob")).await;
    alice.join(&room, None).await.expect("alice joins");
    bob.join(&room, None).await.expect("bob joins");
    (t, room, alice, bob)
}

#[tokio::test]
async fn a_send_refused_as_unavailable_may_be_stored_and_its_resend_never_doubles_it() {
    let (t, room, mut alice, mut bob) = two_members().await;
    let redis = t.redis().expect("the cluster runs its own Redis");
    redis.stop().expect("SIGSTOP Redis");
    let refused = alice.send(&room, "late", Some("c-1")).await;
    redis.resume().expect("SIGCONT Redis");
    let refused = refused.expect_err("Redis did not answer in time");
    assert_eq!(refused.server_code(), Some("unavailable"), "{refused}");
    // The page says the message may have been stored: resend with the same client_id until acked.
    let deadline = Instant::now() + GONE_WITHIN;
    let ack = loop {
        match alice.send(&room, "late", Some("c-1")).await {
            Ok(ack) => break ack,
            Err(e) if e.server_code() == Some("unavailable") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("resend failed: {}", report::chain(&e)),
        }
    };
    assert_eq!(ack.seq, 1, "one message in all");
    let got = bob.messages_in(&room, 1, T).await.expect("bob gets it");
    assert_eq!((got[0].seq, got[0].body.as_str()), (1, "late"));
    let next = alice.send(&room, "after", None).await.expect("send");
    assert_eq!(next.seq, 2, "no second copy took a sequence");
    let got = bob
        .messages_in(&room, 1, T)
        .await
        .expect("bob gets the next");
    assert_eq!(got[0].seq, 2, "and never the first twice");
}

/// A node that sees a sequence on the bus whose gap the store cannot show yet (a new master behind
/// the old one, a read that failed mid-failover) holds it back and reads the gap again until it can,
/// then delivers everything in order: it never skips the gap.
#[tokio::test]
async fn a_gap_the_store_cannot_show_yet_holds_later_messages_back_until_it_can() {
    let (t, room, mut alice, mut bob) = two_members().await;
    alice.send(&room, "one", Some("c-1")).await.expect("send");
    let got = bob.messages_in(&room, 1, T).await.expect("bob gets it");
    assert_eq!(got[0].seq, 1);
    let redis = t.redis().expect("the cluster runs its own Redis");
    let ask = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        redis.command(&args).await.expect("Redis answers")
    };
    // The room's stream and channel, as the nodes name them.
    let keys = ask(vec!["KEYS".into(), format!("*{room}*:log")]).await;
    let log = keys
        .items()
        .first()
        .and_then(|k| k.as_str())
        .expect("the room's log")
        .to_owned();
    let channels = ask(vec![
        "PUBSUB".into(),
        "CHANNELS".into(),
        format!("*{room}*"),
    ])
    .await;
    let channel = (channels.items().first())
        .and_then(|c| c.as_str())
        .expect("the room's channel")
        .to_owned();
    let first = ask(vec!["XRANGE".into(), log.clone(), "-".into(), "+".into()]).await;
    let frame = first.items()[0].items()[1].items()[1]
        .as_str()
        .expect("frame")
        .to_owned();
    assert!(
        frame.contains(r#""seq":1,"#) && frame.contains(r#""body":"one""#),
        "{frame}"
    );
    let frame_of = |seq: u64| {
        frame
            .replace(r#""seq":1,"#, &format!(r#""seq":{seq},"#))
            .replace(r#""body":"one""#, &format!(r#""body":"m-{seq}""#))
    };
    // Sequence 4 is published while the store shows neither 2 nor 3.
    ask(vec![
        "PUBLISH".into(),
        channel,
        format!("4 {}", frame_of(4)),
    ])
    .await;
    match bob
        .wait_message(&room, |_| true, Duration::from_secs(1))
        .await
    {
        Err(Error::Timeout { .. }) => {}
        other => panic!("sequence 4 went out before 2 and 3: {other:?}"),
    }
    // Operators see it: bob's node counts the room as owed.
    assert_eq!(metric(&t, 1, "switchboard_bus_owed_topics").await, 1.0);
    // The store catches up: the node reads the gap again and delivers 2, 3 and 4, in order.
    for seq in 2..=4 {
        ask(vec![
            "XADD".into(),
            log.clone(),
            format!("{seq}-1"),
            "f".into(),
            frame_of(seq),
        ])
        .await;
    }
    let got = bob.messages_in(&room, 3, T).await.expect("the gap, then 4");
    let seqs: Vec<u64> = got.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [2, 3, 4], "{got:?}");
    assert_eq!(metric(&t, 1, "switchboard_bus_owed_topics").await, 0.0);
    assert_eq!(metric(&t, 1, "switchboard_bus_gaps_given_up").await, 0.0);
}

/// Watches every command a Redis server runs (`MONITOR`) until dropped.
struct Monitor {
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::net::TcpStream>>,
}

impl Monitor {
    async fn start(addr: &str) -> Monitor {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to Redis");
        stream.write_all(b"MONITOR\r\n").await.expect("MONITOR");
        let mut lines = tokio::io::BufReader::new(stream).lines();
        let ok = lines.next_line().await.expect("read").unwrap_or_default();
        assert_eq!(ok, "+OK", "MONITOR starts");
        Monitor { lines }
    }

    /// The commands run until now: sends a marker through a second connection and reads up to it.
    async fn commands(&mut self, addr: &str) -> Vec<String> {
        use tokio::io::AsyncWriteExt;
        let marker = name("marker");
        let mut other = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to Redis");
        other
            .write_all(format!("ECHO {marker}\r\n").as_bytes())
            .await
            .expect("ECHO");
        let mut out = Vec::new();
        loop {
            let line = tokio::time::timeout(T, self.lines.next_line())
                .await
                .expect("the marker arrives")
                .expect("read")
                .expect("MONITOR goes on");
            if line.contains(&marker) {
                return out;
            }
            out.push(line);
        }
    }
}

#[tokio::test]
async fn a_join_costs_one_redis_round_trip_and_a_first_join_on_a_node_two() {
    let t = cluster(&[]).await;
    let room = name("room");
    let redis = t.redis().expect("the cluster runs its own Redis");
    // Load the scripts first (a script's first call on a fresh Redis is a load and a call).
    let mut warm = connect(&t, 0, &name("warm")).await;
    warm.join(&name("other"), Some(0))
        .await
        .expect("warm-up join");
    let mut monitor = Monitor::start(&redis.addr()).await;
    const JOINS: usize = 20;
    let mut clients = Vec::new();
    for i in 0..JOINS {
        let mut c = connect(&t, 0, &name(&format!("u{i}"))).await;
        c.join(&room, Some(0)).await.expect("join with recovery");
        clients.push(c);
    }
    let commands = monitor.commands(&redis.addr()).await;
    let about_room: Vec<&String> = commands
        .iter()
        // Commands a script runs are listed too (`[0 lua]`): a round trip is a command from a client.
        .filter(|c| c.contains(&format!("<{room}>")) && !c.contains(" lua] "))
        .collect();
    // Not part of answering a join: the `presence` event published after `joined` (PUBLISH), and the
    // maintenance refresh that may run meanwhile (plain ZADD/SADD/PEXPIRE/EXPIRE, and one presence
    // expiry script call for every room of the node).
    let per_join: Vec<&&String> = about_room
        .iter()
        .filter(|c| {
            let cmd = c.split('"').nth(1).unwrap_or("").to_ascii_uppercase();
            !matches!(
                cmd.as_str(),
                "ZADD" | "SADD" | "PEXPIRE" | "EXPIRE" | "PUBLISH"
            )
        })
        .collect();
    let subscribes = per_join
        .iter()
        .filter(|c| c.to_ascii_uppercase().contains("\"SUBSCRIBE\""))
        .count();
    assert_eq!(subscribes, 1, "the node subscribes once: {per_join:#?}");
    assert!(
        (JOINS + 1..=JOINS + 2).contains(&per_join.len()),
        "{JOINS} joins (one subscribed first) took {} commands: {per_join:#?}",
        per_join.len()
    );
}

#[tokio::test]
async fn a_count_only_member_hears_the_count_across_nodes_and_pages_the_list() {
    let t = cluster(&[]).await;
    let room = name("room");
    let mut counter = connect(&t, 0, &name("counter")).await;
    let joined = counter
        .request(
            serde_json::json!({"type": "join", "room": room, "presence": "count"}),
            T,
        )
        .await
        .expect("join");
    assert_eq!(joined["members"], serde_json::json!([]));
    assert_eq!(joined["members_total"], 1);
    let mut others = Vec::new();
    for i in 0..3 {
        let mut c = connect(&t, 1, &name(&format!("u{i}"))).await;
        c.join(&room, None).await.expect("join");
        others.push(c);
    }
    let count = counter
        .wait_for(
            |f| f["type"] == "presence_count" && f["members_total"] == 4,
            T,
        )
        .await
        .expect("the count reaches 4");
    assert_eq!(count["room"], room.as_str());
    let page = counter
        .request(
            serde_json::json!({"type": "members", "room": room, "limit": 2}),
            T,
        )
        .await
        .expect("members");
    assert_eq!(page["members_total"], 4);
    assert_eq!(page["members"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["has_more"], true);
    assert!(
        !counter.buffered().iter().any(|f| f["type"] == "presence"),
        "no presence frame one by one: {:?}",
        counter.buffered()
    );
}
