//! The HA topology's Redis needs a password: nodes given a wrong one refuse to start with a clear
//! error, and no process ever writes the password to its log.

use e2e::ha::RedisHa;
use e2e::topology::{Topology, TopologyConfig, bin_dir};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use switchboard_testkit::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_with_a_wrong_password_refuses_to_start_without_logging_it() {
    let redis = RedisHa::start().await.expect("HA Redis starts");
    let wrong = format!("wrong-{:08x}", fastrand::u32(..));
    let wrong_file = std::env::temp_dir().join(format!("sb-wrong-pw-{}", std::process::id()));
    e2e::ha::write_secret_file(&wrong_file, &wrong).expect("write the wrong password");
    let mut flags = redis.flags();
    let pw = flags
        .iter()
        .position(|f| f == "--redis-password-file")
        .expect("password file flag")
        + 1;
    flags[pw] = wrong_file.display().to_string();
    let bin = bin_dir(&["chat-node"])
        .expect("chat-node is built")
        .join("chat-node");
    let mut child = Command::new(bin)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--node-id",
            "wrong-pw",
            "--auth",
            "open",
        ])
        .args(&flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chat-node");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "chat-node kept running with a wrong password"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = child.wait_with_output().expect("output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!status.success(), "must exit with an error: {text}");
    assert!(
        text.to_lowercase().contains("password"),
        "the error names the password problem: {text}"
    );
    assert!(
        !text.contains(&wrong),
        "the password must never be logged: {text}"
    );
    assert!(
        !text.contains(redis.password()),
        "the real password must never be logged either"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_topology_logs_never_contain_the_password() {
    let redis = RedisHa::start().await.expect("HA Redis starts");
    let mut config = TopologyConfig::scaled(2, 1).with_node_args(["--ack-replicas", "1"]);
    config.external_redis = Some(redis.flags());
    config.log_filter = "debug".into();
    let topology = Topology::start(config)
        .await
        .expect("topology starts through the sentinels");
    let assignment = e2e::client::assign(&topology.registry_url(0))
        .await
        .expect("assignment");
    let mut c = e2e::client::ChatClient::connect_with(&assignment.url, topology.options("alice"))
        .await
        .expect("connect through the registry");
    c.join("pw-room", None).await.expect("join");
    let ack = c
        .send("pw-room", "hello", Some("c-1"))
        .await
        .expect("a message is acked with WAIT");
    assert_eq!(ack.seq, 1);
    for entry in std::fs::read_dir(topology.log_dir()).expect("log dir") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            !text.contains(redis.password()),
            "{} contains the password",
            path.display()
        );
    }
}

/// A Redis master with one replica, and one node (and a registry) that acks after the replica holds a
/// message; `node_args` are added to the node's.
async fn replicated(node_args: &[&str]) -> (RedisServer, RedisServer, Topology) {
    let master = RedisServer::start().await.expect("master");
    let replica = RedisServer::builder()
        .replica_of(&master)
        .start()
        .await
        .expect("replica");
    let mut args = vec!["--ack-replicas", "1"];
    args.extend_from_slice(node_args);
    let mut config = TopologyConfig::scaled(1, 1).with_node_args(args);
    config.external_redis = Some(vec!["--redis-url".into(), master.url()]);
    let topology = Topology::start(config).await.expect("topology");
    (master, replica, topology)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_no_replica_confirmed_is_neither_acked_nor_shown_until_resent() {
    let (_master, replica, topology) = replicated(&["--ack-timeout", "300ms"]).await;
    let mut alice = topology.connect(0, "alice").await.expect("alice");
    alice.join("wait-room", None).await.expect("join");
    let first = alice
        .send("wait-room", "one", Some("c-1"))
        .await
        .expect("acked while the replica is up");
    assert_eq!(first.seq, 1);

    replica.stop().expect("SIGSTOP the replica");
    let refused = alice
        .send("wait-room", "two", Some("c-2"))
        .await
        .expect_err("no replica can confirm");
    assert_eq!(refused.server_code(), Some("unavailable"), "{refused}");

    // Stored on the master but unconfirmed: not in anybody's view, not even through history.
    let mut bob = topology.connect(0, "bob").await.expect("bob");
    let joined = bob
        .join("wait-room", Some(0))
        .await
        .expect("bob joins with since");
    assert_eq!(joined.last_seq, 1);
    let page = bob.history("wait-room", None, None).await.expect("history");
    assert_eq!(page.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [1]);

    // The replica comes back; alice resends the same client_id: the original is confirmed, acked as a
    // duplicate with its sequence, and delivered to bob once.
    replica.resume().expect("SIGCONT the replica");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let ack = loop {
        match alice.send("wait-room", "two", Some("c-2")).await {
            Ok(ack) => break ack,
            Err(e)
                if e.server_code() == Some("unavailable")
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("resend failed: {}", switchboard_runtime::report::chain(&e)),
        }
    };
    assert!(ack.duplicate, "the resend finds the stored original");
    assert_eq!(ack.seq, 2);
    let got = bob
        .wait_message("wait-room", |m| m.seq == 2, Duration::from_secs(5))
        .await
        .expect("bob gets it live");
    assert_eq!(got.body, "two");
}

/// A failover's new master may hold every confirmed message but not yet the last raise of the visible
/// mark (it travels to replicas after the publish). A client that saw the newest messages and comes back
/// with `since` (or `dm_since`) above that mark must get nothing again: not the whole history, as if the
/// room or inbox had expired and started over. One that comes back with a `since` below what the node
/// has already seen published gets the rest: those messages were confirmed, whatever the mark says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visible_mark_behind_after_a_failover_neither_replays_nor_skips() {
    let (master, _replica, topology) = replicated(&[]).await;
    let mut alice = topology.connect(0, "alice").await.expect("alice");
    alice.join("mark-room", None).await.expect("join");
    for i in 1..=3 {
        let ack = alice
            .send("mark-room", &format!("m{i}"), Some(&format!("c-{i}")))
            .await
            .expect("acked");
        assert_eq!(ack.seq, i);
    }
    alice
        .messages_in("mark-room", 3, Duration::from_secs(5))
        .await
        .expect("the node published 1..=3");
    for i in 1..=2 {
        alice
            .dm("bob", &format!("d{i}"), Some(&format!("d-{i}")))
            .await
            .expect("dm acked");
    }

    // The new master as it may be right after a failover: messages there, marks behind.
    let marks = [
        ("*room:<mark-room>:log:visible", "1"),
        ("*user:<bob>:inbox:visible", "1"),
    ];
    for (pattern, value) in marks {
        let keys = master.command(&["KEYS", pattern]).await.expect("KEYS");
        let key = keys
            .items()
            .first()
            .and_then(|k| k.as_str())
            .map(str::to_owned);
        let key = key.unwrap_or_else(|| panic!("no key matches {pattern}"));
        master.command(&["SET", &key, value]).await.expect("SET");
    }

    // dave saw only 1 and rejoins with since 1: the mark says 1, but this node has seen 2 and 3
    // published (alice is in the room here), so they come back to him.
    let mut dave = topology.connect(0, "dave").await.expect("dave");
    let joined = dave.join("mark-room", Some(1)).await.expect("rejoin");
    assert_eq!(
        joined.last_seq, 3,
        "what the node has seen published counts"
    );
    let got = dave
        .messages_in("mark-room", 2, Duration::from_secs(5))
        .await
        .expect("dave recovers 2 and 3");
    assert_eq!(got.iter().map(|m| m.seq).collect::<Vec<_>>(), [2, 3]);

    // carol saw 1..=3 and rejoins with since 3; bob saw both direct messages and reconnects with
    // dm_since 2. The next frames each gets are the new ones, nothing replayed before them.
    let mut carol = topology.connect(0, "carol").await.expect("carol");
    carol.join("mark-room", Some(3)).await.expect("rejoin");
    let mut options = topology.options("bob");
    options.dm_since = Some(2);
    let mut bob = e2e::client::ChatClient::connect_with(&topology.node_ws_url(0), options)
        .await
        .expect("bob");
    let ack = alice
        .send("mark-room", "m4", Some("c-4"))
        .await
        .expect("acked");
    assert_eq!(ack.seq, 4);
    alice.dm("bob", "d3", Some("d-3")).await.expect("dm acked");
    let m = carol
        .wait_for_named(
            "the next message",
            |f| f["type"] == "message",
            Duration::from_secs(5),
        )
        .await
        .expect("carol gets the new message");
    assert_eq!(
        (m["seq"].as_u64(), m["body"].as_str()),
        (Some(4), Some("m4")),
        "{m}"
    );
    let d = bob
        .wait_for_named(
            "the next direct message",
            |f| f["type"] == "dm",
            Duration::from_secs(5),
        )
        .await
        .expect("bob gets the new direct message");
    assert_eq!(
        d["body"].as_str(),
        Some("d3"),
        "nothing replayed before it: {d}"
    );
}
