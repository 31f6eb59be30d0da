//! The `registry` service end to end (in-process, on a real socket) against a real `redis-server`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use registry::Args;
use switchboard_loadset::{LoadSet, NodeInfo};
use switchboard_redis as redis;
use switchboard_redis::keys::Keys;
use switchboard_testkit::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Response {
    status: u16,
    head: String,
    body: String,
}

async fn get(addr: SocketAddr, path: &str) -> Response {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("http response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    Response {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

struct Registry {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

async fn start_registry(redis: &RedisServer, extra: &[&str]) -> Registry {
    let url = redis.url();
    let mut argv = vec![
        "registry",
        "--redis-url",
        url.as_str(),
        "--cluster-id",
        "it",
    ];
    argv.extend_from_slice(extra);
    let args = Args::try_parse_from(argv).expect("args");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(registry::server::serve_on(listener, args, shutdown.clone()));
    Registry {
        addr,
        shutdown,
        task,
    }
}

async fn wait_for_status(addr: SocketAddr, path: &str, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = get(addr, path).await;
        if response.status == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} stayed {} (wanted {status})",
            response.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn serves_assignments_health_metrics_and_the_page() {
    let redis_server = RedisServer::start_with_password("pw").await.expect("redis");
    let registry = start_registry(&redis_server, &[]).await;
    wait_for_status(registry.addr, "/readyz", 200).await;
    assert_eq!(get(registry.addr, "/healthz").await.status, 200);

    let empty = get(registry.addr, "/v1/assign").await;
    assert_eq!(empty.status, 503);
    assert!(empty.head.contains("retry-after: 1"), "{}", empty.head);
    assert!(empty.body.contains("no_node_available"), "{}", empty.body);

    // A node registers itself in the same cluster id the registry serves.
    let client = redis::connect(&redis_server.redis_args())
        .await
        .expect("connect");
    let set = LoadSet::new(client, Keys::new("it"));
    set.publish_node_info(&NodeInfo {
        id: "n1".into(),
        url: "ws://127.0.0.1:9/ws".into(),
        capacity: 10,
        stats: Default::default(),
    })
    .await
    .expect("publish");
    set.heartbeat("n1", 4, Duration::from_secs(30))
        .await
        .expect("heartbeat");

    let assigned = get(registry.addr, "/v1/assign").await;
    assert_eq!(assigned.status, 200, "{}", assigned.body);
    assert!(
        assigned.head.contains("cache-control: no-store"),
        "{}",
        assigned.head
    );
    assert!(
        !assigned.head.contains("access-control-allow-origin"),
        "no CORS without a configured origin: {}",
        assigned.head
    );
    assert!(assigned.head.contains("vary: origin"), "{}", assigned.head);
    let body: serde_json::Value = serde_json::from_str(&assigned.body).expect("json");
    assert_eq!(
        body,
        serde_json::json!({"node": "n1", "url": "ws://127.0.0.1:9/ws", "connections": 4, "capacity": 10})
    );

    let nodes = get(registry.addr, "/v1/nodes").await;
    let body: serde_json::Value = serde_json::from_str(&nodes.body).expect("json");
    assert_eq!(body["nodes"][0]["id"], "n1");
    assert_eq!(body["nodes"][0]["connections"], 5, "the assignment counted");

    let metrics = get(registry.addr, "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .body
            .contains(r#"switchboard_registry_assignments_total{outcome="assigned"} 1"#),
        "{}",
        metrics.body
    );
    assert!(
        metrics
            .body
            .contains(r#"switchboard_registry_assignments_total{outcome="no_node"} 1"#),
        "{}",
        metrics.body
    );

    let page = get(registry.addr, "/").await;
    assert_eq!(page.status, 200);
    assert!(
        page.head.contains("content-type: text/html"),
        "{}",
        page.head
    );

    registry.shutdown.cancel();
    registry.task.await.expect("join").expect("clean exit");
}

#[tokio::test]
async fn readiness_follows_redis() {
    let redis_server = RedisServer::start().await.expect("redis");
    let registry = start_registry(&redis_server, &[]).await;
    wait_for_status(registry.addr, "/readyz", 200).await;

    redis_server.stop().expect("SIGSTOP redis");
    wait_for_status(registry.addr, "/readyz", 503).await;
    let assign = get(registry.addr, "/v1/assign").await;
    assert_eq!(assign.status, 503);
    assert!(assign.body.contains("\"unavailable\""), "{}", assign.body);
    assert_eq!(
        get(registry.addr, "/healthz").await.status,
        200,
        "alive while Redis is not"
    );

    redis_server.resume().expect("SIGCONT redis");
    wait_for_status(registry.addr, "/readyz", 200).await;
    registry.shutdown.cancel();
    registry.task.await.expect("join").expect("clean exit");
}

#[tokio::test]
async fn draining_turns_unready_then_stops() {
    let redis_server = RedisServer::start().await.expect("redis");
    let registry = start_registry(&redis_server, &["--drain-delay", "1s"]).await;
    wait_for_status(registry.addr, "/readyz", 200).await;

    registry.shutdown.cancel();
    let draining = get(registry.addr, "/readyz").await;
    assert_eq!(draining.status, 503);
    assert_eq!(draining.body, "draining\n");
    tokio::time::timeout(Duration::from_secs(10), registry.task)
        .await
        .expect("stops after the drain delay")
        .expect("join")
        .expect("clean exit");
    assert!(
        TcpStream::connect(registry.addr).await.is_err(),
        "listener closed"
    );
}
