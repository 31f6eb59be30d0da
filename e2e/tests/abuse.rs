//! The abuse suite (issue 14): what an attacker tries against real processes — chat-nodes and
//! registries on loopback with a real Redis (HA with Sentinel where secrets are concerned) — and how
//! each attempt is refused, counted and logged.
//!
//! ```text
//!  impersonation ──▶ ?user=alice, hello {user}, a token for mallory claiming alice, a token signed
//!                    with another secret                                  ──▶ 4001
//!  forged tokens ──▶ alg=none, HS256 signed with the JWKS public key (HS/RS confusion), wrong key ──▶ 4001
//!  expiry        ──▶ expired token ──▶ 4011;  session outliving its token ──▶ closed 4011; refresh keeps it
//!  origins       ──▶ foreign Origin ──▶ 403 before the upgrade; registry CORS only for configured origins
//!  secrets       ──▶ no password, HMAC secret or token in any /proc/PID/cmdline or log
//!  other's DMs   ──▶ only bob's token reads bob's direct messages
//!  private rooms ──▶ join without a grant ──▶ forbidden; a refresh dropping the grant leaves the room
//!  room ACL      ──▶ admin API without a token / with a non-admin or forged one ──▶ 401/403; an admin
//!                    grant lets a user in on every node, its revocation takes them out (left)
//!  last seen     ──▶ only of users sharing a joined room or a direct message; others are hidden
//!  visibility    ──▶ switchboard_refusals_total{reason} (auth, origin, forbidden, rate limit, capacity,
//!                    oversize, expiry) and rate-limited "refused" log lines with the peer
//!  the door      ──▶ sockets that never upgrade (one address) ──▶ 503 beyond its share, cut after
//!                    --header-timeout; legitimate clients and probes carry on
//!                ──▶ too many sockets / handshakes from one address ──▶ 429 (Retry-After)
//!  reservations  ──▶ --reservations-per-ip 0: assignments never inflate a node's load
//! ```
//!
//! The history-request flood and the poisoned room (bounded memory, bounded replies) are in
//! `limits.rs`, in both modes; `abuse-bench` prints the flood's memory figures.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use e2e::client::tokens::{TEST_TOKEN_TTL, sign_hs256, unix_now};
use e2e::client::{ChatClient, ConnectOptions, Error};
use e2e::topology::{Topology, TopologyConfig};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::json;
use switchboard_runtime::report;

const T: Duration = Duration::from_secs(10);

fn name(prefix: &str) -> String {
    format!("{prefix}-{:08x}", fastrand::u32(..))
}

async fn cluster(node_args: &[&str]) -> Topology {
    Topology::start(TopologyConfig::scaled(2, 1).with_node_args(node_args.iter().copied()))
        .await
        .unwrap_or_else(|e| panic!("start a 2-node topology with Redis: {}", report::chain(&e)))
}

/// The close code of a connection attempt that must be refused.
fn refused_with(result: Result<ChatClient, Error>, what: &str) -> (u16, String) {
    match result {
        Err(Error::Closed { code, reason, .. }) => (code, reason),
        Err(e) => panic!("{what}: expected a close, got {}", report::chain(&e)),
        Ok(c) => panic!("{what}: accepted as {:?}", c.user()),
    }
}

/// Sum of node `i`'s `switchboard_refusals_total` samples with `reason`.
async fn refusals(t: &Topology, i: usize, reason: &str) -> f64 {
    let response = reqwest::get(format!("{}/metrics", t.node_http_url(i)))
        .await
        .expect("metrics");
    if response.status() == 429 {
        // This request was itself refused at the door (tests of per-address limits): none seen yet.
        return 0.0;
    }
    let text = response.text().await.expect("metrics text");
    let label = format!("reason=\"{reason}\"");
    text.lines()
        .filter(|l| l.starts_with("switchboard_refusals_total") && l.contains(&label))
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn nobody_can_be_someone_else_without_their_token() {
    let t = cluster(&[]).await;
    let url = t.node_ws_url(0);
    let alice = name("alice");
    let before = refusals(&t, 0, "auth_missing").await + refusals(&t, 0, "auth_invalid").await;

    let (code, reason) = refused_with(ChatClient::connect(&url, &alice).await, "?user=");
    assert_eq!(code, 4001, "{reason}");
    assert!(reason.contains("token"), "{reason}");

    let mut bare = ChatClient::open(&url).await.expect("open");
    let err = bare.hello(&alice, None).await.expect_err("hello {user}");
    assert_eq!(err.close_code(), Some(4001), "{err}");

    let mallory = t.token(&name("mallory")).expect("token mode");
    let mut claiming = ChatClient::open(&url).await.expect("open");
    claiming
        .send_frame(&json!({"type": "hello", "token": mallory, "user": alice}))
        .await
        .expect("send");
    let err = claiming
        .expect_type("welcome", T)
        .await
        .expect_err("a token for mallory cannot claim alice");
    assert_eq!(err.close_code(), Some(4001), "{err}");

    let forged = sign_hs256(
        &json!({"sub": alice, "exp": unix_now() + 600}),
        b"not-the-cluster-secret-not-the-cluster-secret",
    );
    let (code, reason) = refused_with(ChatClient::connect_token(&url, &forged).await, "wrong key");
    assert_eq!((code, reason.as_str()), (4001, "token signature invalid"));

    let none = format!(
        "{}.{}.",
        B64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        B64.encode(json!({"sub": alice, "exp": unix_now() + 600}).to_string())
    );
    let (code, reason) = refused_with(ChatClient::connect_token(&url, &none).await, "alg=none");
    assert_eq!((code, reason.as_str()), (4001, "malformed token"));

    // Alice herself, with her token, is alice; a second connection of hers too.
    let mut real = t.connect(0, &alice).await.expect("alice with her token");
    assert_eq!(real.user(), Some(alice.as_str()));
    real.ping().await.expect("usable");
    let after = refusals(&t, 0, "auth_missing").await + refusals(&t, 0, "auth_invalid").await;
    assert!(
        after - before >= 5.0,
        "every refusal is counted: {before} -> {after}"
    );
}

#[tokio::test]
async fn another_users_direct_messages_cannot_be_read() {
    let t = cluster(&[]).await;
    let (alice, bob) = (name("alice"), name("bob"));
    let mut a = t.connect(0, &alice).await.expect("alice");
    a.dm(&bob, "for bob only", Some("d-1"))
        .await
        .expect("dm to offline bob");

    // Mallory tries to be bob to collect his stored DMs: without bob's token there is no session.
    let url = t.node_ws_url(1);
    let (code, _) = refused_with(
        ChatClient::connect_with(
            &url,
            ConnectOptions {
                user: Some(bob.clone()),
                dm_since: Some(0),
                wait_welcome: true,
                ..Default::default()
            },
        )
        .await,
        "?user=bob&dm_since=0",
    );
    assert_eq!(code, 4001);
    let mallory = t.token(&name("mallory")).expect("token");
    let mut m = ChatClient::connect_with(
        &url,
        ConnectOptions {
            token: Some(mallory),
            dm_since: Some(0),
            wait_welcome: true,
            ..Default::default()
        },
    )
    .await
    .expect("mallory as herself");
    assert!(
        m.expect_dm(Duration::from_millis(500)).await.is_err(),
        "mallory's dm_since=0 returns only mallory's DMs"
    );

    // Bob, with his token, still gets his undelivered DM: nobody consumed it.
    let mut b = t.connect(1, &bob).await.expect("bob");
    let dm = b.expect_dm(T).await.expect("bob's stored dm");
    assert_eq!(
        (dm.from.as_str(), dm.body.as_str()),
        (alice.as_str(), "for bob only")
    );
}

#[tokio::test]
async fn expired_tokens_are_refused_and_expired_sessions_closed_with_4011() {
    let t = cluster(&[]).await;
    let url = t.node_ws_url(0);
    let issuer = t.credentials().issuer().expect("token mode").clone();
    let user = name("eve");
    let token_with_exp =
        |exp_in: i64| issuer.sign(&json!({"sub": user, "exp": unix_now() + exp_in}));

    let (code, reason) = refused_with(
        ChatClient::connect_token(&url, &token_with_exp(-31)).await,
        "expired beyond the skew",
    );
    assert_eq!((code, reason.as_str()), (4011, "token expired"));

    // Expired 28 s ago: within the 30 s clock skew, so accepted — and closed ~2 s later.
    let mut short = ChatClient::connect_token(&url, &token_with_exp(-28))
        .await
        .expect("accepted within the skew");
    // A second session renews before its token runs out and outlives the first.
    let mut renewed = ChatClient::connect_token(&url, &token_with_exp(-28))
        .await
        .expect("second session");
    let other = issuer.mint(&name("other"), TEST_TOKEN_TTL);
    let err = renewed
        .refresh(&other)
        .await
        .expect_err("a token for another user");
    assert_eq!(err.server_code(), Some("auth_failed"), "{err}");
    let refreshed = renewed
        .refresh(&token_with_exp(3600))
        .await
        .expect("refresh");
    assert!(refreshed["expires_at"].as_u64().unwrap_or(0) > (unix_now() as u64 + 3000) * 1000);

    let err = short
        .wait_for_named("the expiry close", |_| false, Duration::from_secs(8))
        .await
        .expect_err("closed");
    assert_eq!(err.close_code(), Some(4011), "{err}");
    renewed
        .ping()
        .await
        .expect("the renewed session is still open");
    assert!(refusals(&t, 0, "session_expired").await >= 1.0);
    assert!(refusals(&t, 0, "auth_expired").await >= 1.0);
}

/// A JWKS endpoint on loopback with one Ed25519 key; returns its URL and the key pair's PKCS#8.
async fn jwks_endpoint() -> (String, Vec<u8>, Vec<u8>) {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
    let public = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .expect("pair")
        .public_key()
        .as_ref()
        .to_vec();
    let jwks =
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": B64.encode(&public), "kid": "k1"}]});
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let body = jwks.clone();
            async move { axum::Json(body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (
        format!("http://{addr}/jwks"),
        pkcs8.as_ref().to_vec(),
        public,
    )
}

#[tokio::test]
async fn jwks_signed_tokens_work_and_algorithm_confusion_is_refused() {
    let (jwks_url, pkcs8, public) = jwks_endpoint().await;
    let t = cluster(&["--jwt-jwks-url", &jwks_url]).await;
    let url = t.node_ws_url(0);
    let carol = name("carol");
    let claims = json!({"sub": carol, "exp": unix_now() + 600});
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("k1".into());
    let good =
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(&pkcs8)).expect("sign");
    let c = ChatClient::connect_token(&url, &good)
        .await
        .expect("an EdDSA token from the JWKS key");
    assert_eq!(c.user(), Some(carol.as_str()));

    // HS/RS confusion: an HS256 token whose "secret" is the public key everybody can fetch.
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("k1".into());
    let confused =
        jsonwebtoken::encode(&hs, &claims, &EncodingKey::from_secret(&public)).expect("sign");
    let (code, _) = refused_with(
        ChatClient::connect_token(&url, &confused).await,
        "HS256 with the public key",
    );
    assert_eq!(code, 4001);
    let mut unknown = Header::new(Algorithm::EdDSA);
    unknown.kid = Some("made-up".into());
    let forged =
        jsonwebtoken::encode(&unknown, &claims, &EncodingKey::from_ed_der(&pkcs8)).expect("sign");
    let (code, reason) = refused_with(
        ChatClient::connect_token(&url, &forged).await,
        "unknown kid",
    );
    assert_eq!(
        (code, reason.as_str()),
        (4001, "token signed by an unknown key")
    );
}

#[tokio::test]
async fn a_foreign_origin_is_refused_with_403_before_the_upgrade() {
    let config = TopologyConfig {
        registry_args: vec!["--allowed-origins".into(), "https://app.example".into()],
        ..TopologyConfig::scaled(1, 1).with_node_args(["--allowed-origins", "https://app.example"])
    };
    let t = Topology::start(config).await.expect("topology");
    let url = t.node_ws_url(0);
    let with_origin = |origin: &str| ConnectOptions {
        origin: Some(origin.to_owned()),
        ..t.options(&name("web"))
    };
    match ChatClient::connect_with(&url, with_origin("https://evil.example")).await {
        Err(Error::Refused { status, .. }) => assert_eq!(status, 403),
        other => panic!("expected 403, got {other:?}"),
    }
    let serving = t.node_http_url(0);
    for allowed in ["https://app.example", serving.as_str(), &t.registry_url(0)] {
        ChatClient::connect_with(&url, with_origin(allowed))
            .await
            .unwrap_or_else(|e| panic!("origin {allowed}: {}", report::chain(&e)));
    }
    assert!(refusals(&t, 0, "origin").await >= 1.0);

    let http = reqwest::Client::new();
    let assign = format!("{}/v1/assign", t.registry_url(0));
    let foreign = http
        .get(&assign)
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("assign");
    assert!(
        foreign
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "no CORS for a foreign origin"
    );
    let configured = http
        .get(&assign)
        .header("origin", "https://app.example")
        .send()
        .await
        .expect("assign");
    assert_eq!(
        configured.headers()["access-control-allow-origin"],
        "https://app.example"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_ps_or_logs() {
    let redis = e2e::ha::RedisHa::start().await.expect("HA Redis");
    let mut config = TopologyConfig::scaled(2, 1);
    config.external_redis = Some(redis.flags());
    config.log_filter = "debug".into();
    let t = Topology::start(config)
        .await
        .expect("HA topology in token mode");
    let secret = std::fs::read_to_string(t.secret_file().expect("secret file")).expect("secret");
    let user = name("alice");
    let token = t.token(&user).expect("token");
    let mut c = ChatClient::connect_token(&t.node_ws_url(0), &token)
        .await
        .expect("connect");
    c.join("secret-room", None).await.expect("join");
    c.send("secret-room", "hi", Some("s-1"))
        .await
        .expect("send");
    c.refresh(&token).await.expect("refresh");
    let _ = ChatClient::connect_token(&t.node_ws_url(1), "garbage.token.here").await;
    let _ = ChatClient::connect(&t.node_ws_url(1), &user).await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let needles = [
        ("the Redis password", redis.password().to_owned()),
        ("the HMAC secret", secret.trim().to_owned()),
        ("a token", token.clone()),
    ];
    let mut scanned = 0;
    for entry in std::fs::read_dir("/proc").expect("/proc") {
        let Ok(entry) = entry else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        scanned += 1;
        for (what, needle) in &needles {
            assert!(
                !cmdline.contains(needle.as_str()),
                "{what} is on the command line of pid {}: {cmdline}",
                entry.file_name().to_string_lossy()
            );
        }
    }
    assert!(scanned > 10, "scanned {scanned} processes");
    let pids = t.pids();
    assert!(pids.len() >= 3, "the topology's processes run: {pids:?}");
    for log in t.log_files() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(!text.is_empty(), "{} is empty", log.display());
        for (what, needle) in &needles {
            assert!(
                !text.contains(needle.as_str()),
                "{what} is in {}",
                log.display()
            );
        }
    }
}

#[tokio::test]
async fn refusals_are_logged_with_the_peer_and_the_log_is_rate_limited() {
    let t = cluster(&[]).await;
    let url = t.node_ws_url(0);
    for _ in 0..40 {
        let _ = ChatClient::connect_token(&url, "not-a-token").await;
    }
    assert!(refusals(&t, 0, "auth_invalid").await >= 40.0);
    let log = std::fs::read_to_string(t.log_files()[0].clone()).expect("node log");
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refused") && l.contains("auth_invalid"))
        .collect();
    assert!(!lines.is_empty(), "refusals are logged at info:\n{log}");
    assert!(
        lines.iter().all(|l| l.contains("127.0.0.1:")),
        "with the peer address: {lines:?}"
    );
    assert!(
        lines.len() < 40,
        "40 refusals in a burst log fewer lines ({})",
        lines.len()
    );
}

#[tokio::test]
async fn a_private_room_is_closed_to_users_without_a_grant() {
    let t = cluster(&[]).await;
    let issuer = t.credentials().issuer().expect("token mode").clone();
    let room = format!("private:{}", name("ops"));
    let (alice, bob) = (name("alice"), name("bob"));
    let granted = |user: &str, rooms: &[&str]| {
        issuer.sign(&json!({"sub": user, "exp": unix_now() + 600, "rooms": rooms}))
    };
    let mut a = ChatClient::connect_token(&t.node_ws_url(0), &granted(&alice, &[&room]))
        .await
        .expect("alice");
    a.join(&room, None)
        .await
        .expect("alice's token grants the room");
    a.send(&room, "ops only", Some("p-1")).await.expect("send");

    let mut b = t.connect(1, &bob).await.expect("bob without a grant");
    let err = b.join(&room, Some(0)).await.expect_err("bob may not join");
    assert_eq!(err.server_code(), Some("forbidden"), "{err}");
    let err = b
        .history(&room, None, None)
        .await
        .expect_err("nor read history");
    assert_eq!(err.server_code(), Some("not_joined"), "{err}");

    // A refresh without the grant ends alice's membership.
    a.refresh(&granted(&alice, &[])).await.expect("refresh");
    taken_out(&mut a, &room, "the grant was dropped").await;
    assert!(refusals(&t, 1, "forbidden").await >= 1.0);
}

/// Waits for the unsolicited `left` of `room` and checks the client can no longer post there.
async fn taken_out(c: &mut ChatClient, room: &str, why: &str) {
    c.wait_for_named(
        &format!("left after {why}"),
        |f| f["type"] == "left" && f["room"] == room,
        T,
    )
    .await
    .unwrap_or_else(|e| panic!("left after {why}: {e}"));
    let err = c
        .send(room, "still here?", None)
        .await
        .expect_err("not any more");
    assert_eq!(err.server_code(), Some("not_joined"), "{err}");
}

#[tokio::test]
async fn limit_refusals_are_counted_by_reason() {
    let t = cluster(&[
        "--capacity",
        "2",
        "--rate-per-sec",
        "1",
        "--rate-burst",
        "1",
    ])
    .await;
    let mut a = t.connect(0, &name("a")).await.expect("a");
    for _ in 0..5 {
        a.send_frame(&json!({"type": "ping"})).await.expect("ping");
    }
    a.wait_for_named("a rate_limited error", |f| f["code"] == "rate_limited", T)
        .await
        .expect("rate limited");
    let b = t.connect(0, &name("b")).await.expect("b");
    let (code, _) = refused_with(t.connect(0, &name("c")).await, "a third connection");
    assert_eq!(code, 1013);
    drop(b);
    let big = format!(
        r#"{{"type":"send","room":"r","body":"{}"}}"#,
        "x".repeat(70_000)
    );
    a.send_text(big).await.expect("send a too big frame");
    let err = a
        .wait_for_named("the close", |_| false, T)
        .await
        .expect_err("closed");
    assert_eq!(err.close_code(), Some(1009), "{err}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    for reason in ["rate_limited", "capacity", "too_big"] {
        assert!(refusals(&t, 0, reason).await >= 1.0, "{reason} is counted");
    }
}

/// A socket from `source` (a loopback address) to `to`.
async fn tcp_from(
    source: &str,
    to: std::net::SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().expect("source address"))?;
    socket.connect(to).await
}

/// The node's address, from its HTTP URL.
fn node_addr(t: &Topology, i: usize) -> std::net::SocketAddr {
    t.node_http_url(i)
        .trim_start_matches("http://")
        .parse()
        .expect("node address")
}

/// What a socket reads until it ends (at most 10 s): the text, and whether it ended.
async fn read_to_end(tcp: &mut tokio::net::TcpStream) -> (String, bool) {
    use tokio::io::AsyncReadExt as _;
    let mut text = Vec::new();
    let mut buf = [0u8; 1024];
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => text.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&text).into_owned(), ended)
}

#[tokio::test]
async fn a_no_upgrade_socket_flood_does_not_block_legitimate_clients() {
    use tokio::io::AsyncWriteExt as _;
    let t = standalone_with(&["--header-timeout", "2s"]).await;
    let addr = node_addr(&t, 0);
    // 200 sockets from 127.0.0.2 that never finish a request; a few send a header byte now and then.
    let mut flood = Vec::new();
    for _ in 0..200 {
        flood.push(tcp_from("127.0.0.2", addr).await.expect("connect"));
    }
    for tcp in flood.iter_mut().take(5) {
        tcp.write_all(b"GET / HTTP/1.1\r\nX-Slow: ")
            .await
            .expect("write");
    }

    // Meanwhile, from 127.0.0.1: a chat and a probe.
    let mut alice = ChatClient::connect(&t.node_ws_url(0), &name("alice"))
        .await
        .expect("a legitimate client connects during the flood");
    let room = name("room");
    alice.join(&room, None).await.expect("join");
    alice.send(&room, "hello", None).await.expect("send");
    let health = reqwest::get(format!("{}/healthz", t.node_http_url(0)))
        .await
        .expect("probe");
    assert!(health.status().is_success(), "{}", health.status());

    // The flood: each socket is either refused with 503 at once or cut at the header timeout.
    let mut refused = 0;
    let mut cut = 0;
    for tcp in &mut flood {
        let (text, ended) = read_to_end(tcp).await;
        assert!(ended, "every flood socket ends");
        if text.starts_with("HTTP/1.1 503") {
            refused += 1;
        } else {
            assert!(
                text.is_empty() || text.starts_with("HTTP/1.1 408"),
                "{text:?}"
            );
            cut += 1;
        }
    }
    assert!(refused > 0 && cut > 0, "refused {refused}, cut {cut}");
    assert!(refusals(&t, 0, "pending_sockets").await >= 1.0);
    assert!(refusals(&t, 0, "header_timeout").await >= 1.0);
    alice.ping().await.expect("the client carries on");
}

#[tokio::test]
async fn too_many_sockets_or_handshakes_from_one_address_get_429() {
    let t = standalone_with(&["--max-connections-per-ip", "3", "--handshakes-per-ip", "0"]).await;
    let url = t.node_ws_url(0);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            ChatClient::connect(&url, &name("u"))
                .await
                .expect("inside the limit"),
        );
    }
    match ChatClient::connect(&url, &name("u")).await {
        Err(Error::Refused { status, .. }) => assert_eq!(status, 429),
        other => panic!("expected 429, got {other:?}"),
    }
    // Another address is not affected.
    let tcp = tcp_from("127.0.0.2", node_addr(&t, 0))
        .await
        .expect("connect");
    let request = format!("{url}?user={}", name("other"));
    tokio_tungstenite::client_async(request, tcp)
        .await
        .expect("another address connects");
    drop(held.pop());
    let again = switchboard_testkit::eventually("a freed slot is usable again", T, || async {
        ChatClient::connect(&url, &name("u")).await.ok()
    })
    .await;
    drop((held, again));
    // The metrics request is a socket from 127.0.0.1 too: once the others are gone.
    switchboard_testkit::eventually("the refusal is counted", T, || async {
        (refusals(&t, 0, "ip_connections").await >= 1.0).then_some(())
    })
    .await;

    let t = standalone_with(&["--handshakes-per-ip", "2"]).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..20 {
        let r = http
            .get(format!("{}/healthz", t.node_http_url(0)))
            .send()
            .await
            .expect("an answer, even when refused");
        if r.status() == 429 {
            retry_after = r.headers().get("retry-after").cloned();
        }
        statuses.push(r.status().as_u16());
    }
    // The burst is four seconds' worth (8); the topology's readiness probe took one or two.
    assert!(
        statuses[..4].iter().all(|&s| s == 200),
        "a burst first: {statuses:?}"
    );
    assert!(statuses.contains(&429), "then 429: {statuses:?}");
    assert!(retry_after.is_some(), "429 says when to retry");
    // Once a token is due again for the metrics request itself.
    switchboard_testkit::eventually("the refusals are counted", T, || async {
        (refusals(&t, 0, "ip_handshake_rate").await >= 1.0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn assignments_reserve_nothing_when_reservations_are_off() {
    let config = TopologyConfig {
        registry_args: vec!["--reservations-per-ip".into(), "0".into()],
        ..TopologyConfig::scaled(2, 1)
    };
    let t = Topology::start(config).await.expect("topology");
    let registry = t.registry_url(0);
    for _ in 0..100 {
        e2e::client::assign(&registry).await.expect("assigned");
    }
    let nodes = e2e::client::nodes(&registry).await.expect("nodes");
    assert_eq!(nodes.len(), 2);
    assert!(
        nodes.iter().all(|n| n.connections == 0),
        "anonymous assignments did not inflate the load: {nodes:?}"
    );
}

async fn standalone_with(node_args: &[&str]) -> Topology {
    Topology::start(TopologyConfig::standalone().with_node_args(node_args.iter().copied()))
        .await
        .unwrap_or_else(|e| panic!("start a standalone chat-node: {}", report::chain(&e)))
}

#[tokio::test]
async fn every_redis_key_a_client_creates_expires() {
    let t = cluster(&[]).await;
    let redis = t.redis().expect("the topology's Redis");
    let (alice, bob, room) = (name("alice"), name("bob"), name("room"));
    let mut a = t.connect(0, &alice).await.expect("alice");
    a.join(&room, None).await.expect("join");
    a.send(&room, "hi", Some("c-1")).await.expect("send");
    a.read(&room, 1).await.expect("read");
    a.dm(&bob, "psst", Some("d-1"))
        .await
        .expect("dm to an offline user");
    let mut b = t.connect(1, &bob).await.expect("bob");
    b.expect_dm(T).await.expect("bob gets it after welcome");
    b.join(&room, None).await.expect("bob joins");
    b.last_seen(&[alice.as_str()]).await.expect("last_seen");
    b.close().await.expect("bob leaves");
    a.close().await.expect("alice leaves");

    let pattern = switchboard_redis::keys::Keys::new(t.cluster_id()).scan_pattern();
    let keys = || async {
        let reply =
            switchboard_testkit::command(redis.port(), redis.password(), &["KEYS", &pattern])
                .await
                .expect("KEYS");
        reply
            .items()
            .iter()
            .filter_map(|k| k.as_str().map(str::to_owned))
            .collect::<Vec<String>>()
    };
    // Bob's and alice's last-seen times are written as their sessions end.
    let keys = switchboard_testkit::eventually("both last-seen times are stored", T, || async {
        let keys = keys().await;
        (keys.iter().filter(|k| k.ends_with(":lastseen")).count() >= 2).then_some(keys)
    })
    .await;
    for expected in [
        ":seq",
        ":log",
        ":read",
        ":dmseq",
        ":inbox",
        ":dmcursor",
        ":lastseen",
    ] {
        assert!(
            keys.iter().any(|k| k.ends_with(expected)),
            "the activity created a {expected} key: {keys:?}"
        );
    }
    let mut forever = Vec::new();
    for key in &keys {
        // The load-set schema is written by nodes and the operator, not by clients.
        if ["loadset", "nodes", "heartbeats"]
            .iter()
            .any(|s| key.ends_with(&format!("}}:{s}")))
        {
            continue;
        }
        let ttl = switchboard_testkit::command(redis.port(), redis.password(), &["TTL", key])
            .await
            .expect("TTL");
        if ttl == switchboard_testkit::Reply::Int(-1) {
            forever.push(key.clone());
        }
    }
    assert!(forever.is_empty(), "keys without an expiry: {forever:?}");
}

/// An admin call to node `i`'s room ACL API: (status, JSON body).
async fn acl_call(
    t: &Topology,
    i: usize,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut request =
        reqwest::Client::new().request(method, format!("{}/v1/rooms/{path}", t.node_http_url(i)));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("admin API answers");
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn a_room_acl_is_changed_only_by_an_admin_and_a_revocation_takes_the_user_out_on_every_node()
{
    let t = cluster(&[]).await;
    let issuer = t.credentials().issuer().expect("token mode").clone();
    let room = format!("private:{}", name("board"));
    let (alice, bob, boss) = (name("alice"), name("bob"), name("boss"));
    let admin = issuer.sign(&json!({"sub": boss, "exp": unix_now() + 600, "admin": true}));
    let path = format!("{room}/acl/{bob}");
    let put = reqwest::Method::PUT;
    let before = refusals(&t, 0, "admin_denied").await;

    // Nobody but an admin changes an ACL.
    let (status, body) = acl_call(&t, 0, put.clone(), &path, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("auth_failed")),
        "{body}"
    );
    let plain = t.token(&alice).expect("token");
    let (status, body) = acl_call(&t, 0, put.clone(), &path, Some(&plain)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let not_quite = issuer.sign(&json!({"sub": alice, "exp": unix_now() + 600, "admin": "true"}));
    let (status, _) = acl_call(&t, 0, put.clone(), &path, Some(&not_quite)).await;
    assert_eq!(status, 403, "only the JSON value true makes an admin");
    let forged = sign_hs256(
        &json!({"sub": boss, "exp": unix_now() + 600, "admin": true}),
        b"not-the-secret-not-the-secret-not-the-secret",
    );
    let (status, _) = acl_call(&t, 0, put.clone(), &path, Some(&forged)).await;
    assert_eq!(status, 401, "a forged admin token");
    let (status, body) = acl_call(
        &t,
        0,
        put.clone(),
        &format!("lobby/acl/{bob}"),
        Some(&admin),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_name")),
        "{body}"
    );
    assert!(refusals(&t, 0, "admin_denied").await >= before + 4.0);
    let (status, body) = acl_call(
        &t,
        1,
        reqwest::Method::GET,
        &format!("{room}/acl"),
        Some(&admin),
    )
    .await;
    assert_eq!(
        (status, &body["users"]),
        (200, &json!([])),
        "none of that listed anyone"
    );

    // Default deny: bob is refused until an admin lists him.
    let mut b = t.connect(1, &bob).await.expect("bob");
    let err = b.join(&room, None).await.expect_err("not listed yet");
    assert_eq!(err.server_code(), Some("forbidden"), "{err}");
    let (status, body) = acl_call(&t, 0, put.clone(), &path, Some(&admin)).await;
    assert_eq!((status, &body["changed"]), (200, &json!(true)), "{body}");
    let (_, body) = acl_call(&t, 0, put.clone(), &path, Some(&admin)).await;
    assert_eq!(
        body["changed"],
        json!(false),
        "granting twice changes nothing"
    );
    let (_, body) = acl_call(
        &t,
        1,
        reqwest::Method::GET,
        &format!("{room}/acl"),
        Some(&admin),
    )
    .await;
    assert_eq!(body["users"], json!([bob]), "every node sees the same ACL");

    // Listed, bob joins on node 1 and talks with alice, whose token grants the room, on node 0.
    let granted = issuer.sign(&json!({"sub": alice, "exp": unix_now() + 600, "rooms": [room]}));
    let mut a = ChatClient::connect_token(&t.node_ws_url(0), &granted)
        .await
        .expect("alice");
    a.join(&room, None)
        .await
        .expect("alice's token grants the room");
    b.join(&room, None).await.expect("the ACL lets bob in");
    b.send(&room, "minutes attached", Some("b-1"))
        .await
        .expect("bob posts");
    a.wait_message(&room, |m| m.body == "minutes attached", T)
        .await
        .expect("alice gets bob's message");

    // Revoked on node 0: bob's session on node 1 leaves the room at once and cannot come back.
    let (status, body) = acl_call(&t, 0, reqwest::Method::DELETE, &path, Some(&admin)).await;
    assert_eq!((status, &body["changed"]), (200, &json!(true)), "{body}");
    taken_out(&mut b, &room, "the revocation").await;
    let err = b.join(&room, Some(0)).await.expect_err("and not again");
    assert_eq!(err.server_code(), Some("forbidden"), "{err}");
    // The revocation touched only bob: alice, in by her token, carries on and saw no notice.
    let ack = a
        .send(&room, "carry on", Some("a-1"))
        .await
        .expect("alice still posts");
    assert_eq!(ack.seq, 2);
    let notices: Vec<_> = a
        .take_buffered()
        .into_iter()
        .filter(|f| f["type"] == "access_revoked" || f["type"] == "left")
        .collect();
    assert!(notices.is_empty(), "{notices:?}");
}

#[tokio::test]
async fn last_seen_shows_only_users_sharing_a_room_or_a_direct_message() {
    let t = cluster(&[]).await;
    let (alice, carol, dave, erin) = (name("alice"), name("carol"), name("dave"), name("erin"));
    let room = name("lobby");
    let mut a = t.connect(0, &alice).await.expect("alice");
    let _c = t
        .connect(1, &carol)
        .await
        .expect("carol, online, shares nothing with alice");
    let mut d = t.connect(1, &dave).await.expect("dave");
    let mut e = t.connect(0, &erin).await.expect("erin");
    let ask = |users: &[&str]| json!({"type": "last_seen", "users": users});

    let reply = a
        .request(ask(&[&alice, &carol, &dave, &erin]), T)
        .await
        .expect("last_seen");
    assert_eq!(reply["hidden"], json!([carol, dave, erin]), "{reply}");
    assert_eq!(reply["users"][&alice]["online"], json!(true), "{reply}");
    assert!(
        reply["users"].get(&carol).is_none(),
        "carol's state is not shown: {reply}"
    );

    // A shared room and a direct message open last-seen; carol stays hidden although online.
    a.join(&room, None).await.expect("alice joins");
    d.join(&room, None).await.expect("dave joins");
    e.dm(&alice, "hello alice", None)
        .await
        .expect("erin writes to alice");
    let reply = a
        .request(ask(&[&carol, &dave, &erin]), T)
        .await
        .expect("last_seen");
    assert_eq!(reply["hidden"], json!([carol]), "{reply}");
    assert_eq!(reply["users"][&dave]["online"], json!(true), "{reply}");
    assert_eq!(reply["users"][&erin]["online"], json!(true), "{reply}");

    // Someone who read the room and left stays visible through the read marker.
    a.send(&room, "agenda", None).await.expect("alice posts");
    d.read(&room, 1).await.expect("dave reads");
    d.leave(&room).await.expect("dave leaves");
    let deadline = std::time::Instant::now() + T;
    loop {
        let reply = a.request(ask(&[&dave]), T).await.expect("last_seen");
        if reply["hidden"].is_null() && reply["users"][&dave]["online"] == json!(true) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dave hidden after leaving: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Sharing works both ways: erin, who wrote to alice, sees her; carol sees neither.
    let reply = e.request(ask(&[&alice]), T).await.expect("last_seen");
    assert_eq!(reply["users"][&alice]["online"], json!(true), "{reply}");
    let mut c = t.connect(0, &carol).await.expect("carol again");
    let reply = c
        .request(ask(&[&alice, &dave, &erin]), T)
        .await
        .expect("last_seen");
    assert!(
        reply["users"].as_object().is_some_and(|u| u.is_empty()),
        "{reply}"
    );
}

#[tokio::test]
async fn a_standalone_node_keeps_its_acl_in_memory_and_open_identity_has_no_admins() {
    // Open identity: a token claiming admin proves nothing there, so the API refuses everyone.
    let open = Topology::start(TopologyConfig::standalone())
        .await
        .unwrap_or_else(|e| panic!("start a standalone node: {}", report::chain(&e)));
    let claim = sign_hs256(
        &json!({"sub": "boss", "exp": unix_now() + 600, "admin": true}),
        b"any-secret-any-secret-any-secret-any",
    );
    let (status, body) = acl_call(
        &open,
        0,
        reqwest::Method::PUT,
        "private:x/acl/bob",
        Some(&claim),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("admin_unavailable")),
        "{body}"
    );

    // Token mode without Redis: the in-memory ACL lets bob in and the revocation takes him out.
    let t = Topology::start(TopologyConfig::standalone().with_auth(e2e::topology::Auth::Jwt))
        .await
        .unwrap_or_else(|e| panic!("start a standalone token-mode node: {}", report::chain(&e)));
    let issuer = t.credentials().issuer().expect("token mode").clone();
    let admin = issuer.sign(&json!({"sub": "boss", "exp": unix_now() + 600, "admin": true}));
    let room = format!("private:{}", name("den"));
    let bob = name("bob");
    let path = format!("{room}/acl/{bob}");
    let mut b = t.connect(0, &bob).await.expect("bob");
    let err = b.join(&room, None).await.expect_err("not listed");
    assert_eq!(err.server_code(), Some("forbidden"), "{err}");
    let (status, _) = acl_call(&t, 0, reqwest::Method::PUT, &path, Some(&admin)).await;
    assert_eq!(status, 200);
    b.join(&room, None).await.expect("listed");
    let (status, _) = acl_call(&t, 0, reqwest::Method::DELETE, &path, Some(&admin)).await;
    assert_eq!(status, 200);
    taken_out(&mut b, &room, "the revocation").await;
}
