//! `switchboard_redis` against real `redis-server` / `redis-sentinel` processes: start-up checks, and
//! following a Sentinel failover with both the command and the pub/sub client.

use std::time::{Duration, Instant};

use fred::interfaces::{ClientLike, EventInterface, KeysInterface, PubsubInterface};
use switchboard_redis::{self as redis, Error, RedisArgs};
use switchboard_runtime::report::chain;
use switchboard_testkit::{HaConfig, RedisHa, RedisServer};

const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn connects_with_the_right_password() {
    let server = RedisServer::start_with_password("s3cret")
        .await
        .expect("redis");
    let client = redis::connect(&server.redis_args()).await.expect("connect");
    client
        .set::<(), _, _>("k", "v", None, None, false)
        .await
        .expect("set");
    assert_eq!(client.get::<String, _>("k").await.expect("get"), "v");

    // The password can also come from --redis-password instead of the URL.
    let args = RedisArgs::from_url(format!("redis://127.0.0.1:{}/0", server.port()))
        .with_password("s3cret");
    let client = redis::connect(&args)
        .await
        .expect("connect with --redis-password");
    assert_eq!(client.get::<String, _>("k").await.expect("get"), "v");
}

#[tokio::test]
async fn passwords_come_from_files_and_acl_users_log_in() {
    let server = RedisServer::start_with_password("s3cret")
        .await
        .expect("redis");
    let dir = std::env::temp_dir().join(format!("sb-redis-pw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("password");
    std::fs::write(&file, "s3cret\n").expect("write");
    let url = format!("redis://127.0.0.1:{}/0", server.port());
    let admin = redis::connect(&RedisArgs::from_url(&url).with_password_file(&file))
        .await
        .expect("connect with --redis-password-file");
    // An ACL user with its own password, allowed everything (the chat scripts need many commands).
    let _: () = admin
        .custom(
            fred::cmd!("ACL"),
            vec!["SETUSER", "chat", "on", ">chat-pw", "~*", "&*", "+@all"],
        )
        .await
        .expect("ACL SETUSER");
    std::fs::write(&file, "chat-pw").expect("write");
    let user = redis::connect(
        &RedisArgs::from_url(&url)
            .with_username("chat")
            .with_password_file(&file),
    )
    .await
    .expect("connect as the ACL user");
    let whoami: String = user
        .custom(fred::cmd!("ACL"), vec!["WHOAMI"])
        .await
        .expect("whoami");
    assert_eq!(whoami, "chat");
    let missing = RedisArgs::from_url(&url).with_password_file(dir.join("nope"));
    let error = redis::connect(&missing).await.expect_err("no file");
    assert!(matches!(error, Error::PasswordFile(_)), "{error:?}");
}

#[tokio::test]
async fn a_wrong_password_is_a_clear_error_without_the_password() {
    let server = RedisServer::start_with_password("right")
        .await
        .expect("redis");
    let args = RedisArgs::from_url(format!("redis://:wrong-one@127.0.0.1:{}/0", server.port()));
    let error = redis::connect(&args)
        .await
        .expect_err("wrong password must fail");
    assert!(matches!(error, Error::Auth { .. }), "{error:?}");
    let message = chain(&error);
    assert!(message.contains("Redis rejected the password"), "{message}");
    assert!(message.contains("wrong password"), "{message}");
    assert!(!message.contains("wrong-one"), "password leaked: {message}");
}

#[tokio::test]
async fn a_missing_password_is_a_clear_error() {
    let server = RedisServer::start_with_password("right")
        .await
        .expect("redis");
    let args = RedisArgs::from_url(format!("redis://127.0.0.1:{}/0", server.port()));
    let error = redis::connect(&args)
        .await
        .expect_err("no password must fail");
    assert!(matches!(error, Error::Auth { .. }), "{error:?}");
    assert!(error.to_string().contains("none was given"), "{error}");
}

#[tokio::test]
async fn an_unreachable_redis_is_a_clear_error() {
    let port = switchboard_testkit::free_port().expect("port");
    let started = Instant::now();
    let error = redis::connect(&RedisArgs::from_url(format!("redis://127.0.0.1:{port}")))
        .await
        .expect_err("nothing listens there");
    assert!(matches!(error, Error::Unreachable { .. }), "{error:?}");
    assert!(
        error.to_string().contains(&format!("127.0.0.1:{port}")),
        "{error}"
    );
    assert!(
        started.elapsed() < redis::STARTUP_TIMEOUT,
        "start-up must fail fast"
    );

    let error = redis::subscriber(&RedisArgs::from_sentinels(
        [format!("127.0.0.1:{port}")],
        "m",
    ))
    .await
    .expect_err("no sentinel there");
    assert!(matches!(error, Error::Unreachable { .. }), "{error:?}");
}

#[tokio::test]
async fn sentinel_discovery_rejects_a_wrong_data_password() {
    let ha = RedisHa::start(HaConfig {
        replicas: 0,
        password: Some("data-pw".into()),
        ..HaConfig::default()
    })
    .await
    .expect("topology");
    let args = ha.redis_args().with_password("not-it");
    let error = redis::connect(&args).await.expect_err("wrong password");
    assert!(matches!(error, Error::Auth { .. }), "{error:?}");
    assert!(!chain(&error).contains("not-it"));
}

#[tokio::test]
async fn sentinel_clients_follow_a_failover() {
    let ha = RedisHa::start(HaConfig {
        replicas: 1,
        sentinels: 3,
        password: Some("pw".into()),
        ..HaConfig::default()
    })
    .await
    .expect("topology");
    let mut ha = ha;
    let args = ha.redis_args();
    let client = redis::connect(&args).await.expect("connect via sentinels");
    let subscriber = redis::subscriber(&args)
        .await
        .expect("subscriber via sentinels");
    let mut messages = subscriber.message_rx();
    subscriber.subscribe("events").await.expect("subscribe");

    client
        .set::<(), _, _>("before", "1", None, None, false)
        .await
        .expect("set");
    assert_eq!(ha.master_index().await.expect("master"), Some(0));
    ha.servers[1]
        .wait_for_sync(Duration::from_secs(10))
        .await
        .expect("replica in sync");

    let old_port = ha.servers[0].port();
    ha.servers[0].kill();
    let new_master = ha
        .wait_for_failover(old_port, FAILOVER_TIMEOUT)
        .await
        .expect("sentinels promote the replica");
    assert_eq!(new_master, 1);

    // The command client reaches the new master (and sees the data replicated before the failover).
    let deadline = Instant::now() + FAILOVER_TIMEOUT;
    loop {
        match client.get::<Option<String>, _>("before").await {
            Ok(Some(v)) if v == "1" => break,
            other => assert!(
                Instant::now() < deadline,
                "client did not follow the failover: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client
        .set::<(), _, _>("after", "2", None, None, false)
        .await
        .expect("write to new master");
    assert_eq!(
        ha.servers[1]
            .command(&["GET", "after"])
            .await
            .expect("get")
            .as_str(),
        Some("2")
    );

    // The subscriber re-subscribed on the new master: a publish there reaches it.
    expect_delivery(&client, &mut messages, "events").await;

    let _ = client.quit().await;
    let _ = subscriber.quit().await;
}

/// Publishes on `channel` until a subscriber is there, then expects the message on `messages`.
async fn expect_delivery(
    client: &fred::clients::Client,
    messages: &mut tokio::sync::broadcast::Receiver<fred::types::Message>,
    channel: &str,
) {
    let deadline = Instant::now() + FAILOVER_TIMEOUT;
    loop {
        let receivers = client
            .publish::<i64, _, _>(channel, "hello")
            .await
            .unwrap_or(0);
        if receivers > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "subscriber did not re-subscribe after the failover"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let message = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match messages.recv().await {
                Ok(m) if m.channel == channel => return m,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(e) => panic!("message stream ended: {e}"),
            }
        }
    })
    .await
    .expect("message after failover");
    assert_eq!(message.value.as_str().as_deref(), Some("hello"));
}

#[tokio::test]
async fn sentinels_with_their_own_password() {
    let master = RedisServer::start_with_password("data")
        .await
        .expect("master");
    let sentinel = switchboard_testkit::Sentinel::builder(&master)
        .requirepass("sentinel-secret")
        .start()
        .await
        .expect("sentinel");
    let base =
        RedisArgs::from_sentinels([sentinel.addr()], sentinel.master_name()).with_password("data");

    let client = redis::connect(&base.clone().with_sentinel_password("sentinel-secret"))
        .await
        .expect("connect with both passwords");
    client
        .set::<(), _, _>("k", "v", None, None, false)
        .await
        .expect("set");

    let error = redis::connect(&base.clone().with_sentinel_password("nope"))
        .await
        .expect_err("wrong sentinel password");
    let message = chain(&error);
    assert!(matches!(error, Error::Auth { .. }), "{message}");
    assert!(
        message.contains("sentinel rejected --redis-sentinel-password"),
        "{message}"
    );
    assert!(!message.contains("nope"), "password leaked: {message}");

    let error = redis::connect(&base)
        .await
        .expect_err("missing sentinel password");
    assert!(matches!(error, Error::Auth { .. }), "{error:?}");
    assert!(
        error.to_string().contains("--redis-sentinel-password"),
        "{error}"
    );

    let mut unknown = base.clone().with_sentinel_password("sentinel-secret");
    unknown.redis_master_name = "no-such-master".into();
    let error = redis::connect(&unknown)
        .await
        .expect_err("unknown master name");
    assert!(matches!(error, Error::UnknownMaster { .. }), "{error:?}");
    assert!(error.to_string().contains("no-such-master"), "{error}");
}

#[tokio::test]
async fn a_frozen_master_is_replaced_and_clients_follow() {
    let mut ha = RedisHa::start(HaConfig {
        replicas: 1,
        sentinels: 1,
        ..HaConfig::default()
    })
    .await
    .expect("topology");
    let args = ha.redis_args();
    let client = redis::connect(&args).await.expect("connect");
    let subscriber = redis::subscriber(&args).await.expect("subscriber");
    let mut messages = subscriber.message_rx();
    subscriber.subscribe("events").await.expect("subscribe");
    let set =
        switchboard_loadset::LoadSet::new(client.clone(), switchboard_redis::keys::Keys::new("ha"));
    set.publish_node_info(&switchboard_loadset::NodeInfo {
        id: "n1".into(),
        url: "ws://n1/ws".into(),
        capacity: 100,
        stats: Default::default(),
    })
    .await
    .expect("publish");
    set.heartbeat("n1", 0, Duration::from_secs(120))
        .await
        .expect("heartbeat");
    assert_eq!(set.assign().await.expect("assign").expect("node").id, "n1");
    ha.servers[1]
        .wait_for_sync(Duration::from_secs(10))
        .await
        .expect("replica in sync");
    // WAIT until the replica has acknowledged everything written so far.
    let acked = ha.servers[0]
        .command(&["WAIT", "1", "5000"])
        .await
        .expect("WAIT");
    assert_eq!(acked, switchboard_testkit::Reply::Int(1));

    // Freeze the master: its sockets stay open, so only the unresponsive-connection check notices.
    let old_port = ha.servers[0].port();
    ha.servers[0].stop().expect("SIGSTOP master");
    ha.wait_for_failover(old_port, FAILOVER_TIMEOUT)
        .await
        .expect("sentinel promotes the replica");

    // The load set answers from the new master (its scripts are loaded again there if needed).
    let deadline = Instant::now() + FAILOVER_TIMEOUT;
    let entry = loop {
        match set.assign().await {
            Ok(Some(entry)) => break entry,
            other => {
                if Instant::now() >= deadline {
                    let mut state = String::new();
                    for (i, server) in ha.servers.iter().enumerate().skip(1) {
                        for cmd in [
                            &["ROLE"][..],
                            &["ZRANGE", "sb:{ha}:loadset", "0", "-1", "WITHSCORES"],
                            &["ZRANGE", "sb:{ha}:heartbeats", "0", "-1", "WITHSCORES"],
                            &["HGETALL", "sb:{ha}:nodes"],
                            &["TIME"],
                        ] {
                            state.push_str(&format!(
                                "server {i} {cmd:?}: {:?}\n",
                                server.command(cmd).await
                            ));
                        }
                    }
                    panic!("load set did not follow: {other:?}\n{state}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(entry.id, "n1");
    assert_eq!(
        ha.servers[1].role().await.expect("role"),
        "master",
        "the replica was promoted"
    );

    // The subscriber left the frozen master too (its keepalive PING hit the unresponsive check) and
    // re-subscribed on the new one.
    expect_delivery(&client, &mut messages, "events").await;

    ha.servers[0].resume().expect("SIGCONT old master");
    let _ = client.quit().await;
    let _ = subscriber.quit().await;
    ha.servers[0].kill();
}
