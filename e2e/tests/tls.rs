//! TLS at the edge, against real `chat-node` and `registry` processes: a certificate made here, a client
//! that trusts only it chats over `wss://`; health, metrics and placement answer over `https://`; a
//! renewed certificate written to disk is what the next connection sees; a broken replacement is
//! logged and the previous certificate stays in use.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard_testkit::{RedisServer, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::{TlsConnector, client::TlsStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(20);
/// The name every test certificate is made for; clients connect to 127.0.0.1 and ask for it (SNI).
const HOST: &str = "localhost";

/// A certificate made for this test: its PEM files' contents and the DER a client sees.
struct Pair {
    cert: String,
    key: String,
    der: CertificateDer<'static>,
}

fn new_pair() -> Pair {
    let made = rcgen::generate_simple_self_signed(vec![HOST.to_string()]).expect("rcgen");
    Pair {
        cert: made.cert.pem(),
        key: made.key_pair.serialize_pem(),
        der: made.cert.der().clone(),
    }
}

/// A scratch directory with the certificate and key files, the log files and the processes; all
/// removed or killed on drop.
struct Scratch {
    dir: PathBuf,
    children: Vec<Child>,
}

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "switchboard-tls-e2e-{}-{:x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch {
            dir,
            children: Vec::new(),
        }
    }

    fn cert_file(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }

    fn key_file(&self) -> PathBuf {
        self.dir.join("tls.key")
    }

    /// Writes certificate and key the way a certificate manager does: new files renamed over the old.
    fn install(&self, cert: &str, key: &str) {
        for (path, text) in [(self.cert_file(), cert), (self.key_file(), key)] {
            let tmp = path.with_extension("new");
            std::fs::write(&tmp, text).expect("write");
            std::fs::rename(&tmp, &path).expect("rename");
        }
    }

    fn tls_flags(&self) -> Vec<String> {
        vec![
            "--tls-cert-file".into(),
            self.cert_file().display().to_string(),
            "--tls-key-file".into(),
            self.key_file().display().to_string(),
        ]
    }

    /// Starts `binary` with `args`; its output goes to `<dir>/<name>.log`, which is returned.
    fn spawn(&mut self, binary: &str, name: &str, args: &[String]) -> PathBuf {
        let bin = e2e::topology::bin_dir(&["chat-node", "registry"]).expect("binaries built");
        let log = self.dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(bin.join(binary))
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("SWITCHBOARD_REDIS_URL")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn");
        self.children.push(child);
        log
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn connector(trusted: &[&CertificateDer<'static>]) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in trusted {
        roots.add((*cert).clone()).expect("trust anchor");
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// A TLS connection to `port` trusting `trusted`, and the leaf certificate the server presented.
async fn handshake(
    port: u16,
    trusted: &[&CertificateDer<'static>],
) -> std::io::Result<(TlsStream<TcpStream>, CertificateDer<'static>)> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from(HOST).map_err(std::io::Error::other)?;
    let tls = tokio::time::timeout(WAIT, connector(trusted).connect(name, tcp))
        .await
        .map_err(std::io::Error::other)??;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .cloned()
        .ok_or_else(|| std::io::Error::other("no server certificate"))?;
    Ok((tls, leaf))
}

/// `GET path` over HTTPS: the status code and the body.
async fn https_get(
    port: u16,
    trusted: &[&CertificateDer<'static>],
    path: &str,
) -> std::io::Result<(u16, String)> {
    let (mut tls, _) = handshake(port, trusted).await?;
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut response = String::new();
    tokio::time::timeout(WAIT, tls.read_to_string(&mut response))
        .await
        .map_err(std::io::Error::other)??;
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {response:?}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// `GET path` over HTTPS trusting `trusted`, which must answer 200; the body.
async fn get_ok(port: u16, trusted: &CertificateDer<'static>, path: &str) -> String {
    let (status, body) = https_get(port, &[trusted], path)
        .await
        .unwrap_or_else(|e| panic!("GET https://{HOST}:{port}{path}: {e}"));
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// Waits until `GET /readyz` over HTTPS answers 200.
async fn wait_ready(port: u16, trusted: &CertificateDer<'static>, log: &Path) {
    eventually(
        &format!("https://{HOST}:{port}/readyz (log {})", log.display()),
        WAIT,
        || async {
            matches!(https_get(port, &[trusted], "/readyz").await, Ok((200, _))).then_some(())
        },
    )
    .await;
}

/// A chat connection over `wss://` (frames as JSON values).
struct Wss(WebSocketStream<TlsStream<TcpStream>>);

impl Wss {
    async fn open(port: u16, trusted: &[&CertificateDer<'static>]) -> std::io::Result<Self> {
        let (tls, _) = handshake(port, trusted).await?;
        let url = format!("wss://{HOST}:{port}/ws");
        let (ws, _) = tokio_tungstenite::client_async(url, tls)
            .await
            .map_err(std::io::Error::other)?;
        Ok(Wss(ws))
    }

    async fn send(&mut self, frame: Value) {
        self.0
            .send(Message::text(frame.to_string()))
            .await
            .expect("send frame");
    }

    /// The next frame of type `ty` (others are skipped).
    async fn expect(&mut self, ty: &str) -> Value {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.0.next().await {
                    Some(Ok(Message::Text(text))) => {
                        let frame: Value = serde_json::from_str(&text).expect("JSON frame");
                        if frame["type"] == ty {
                            return frame;
                        }
                    }
                    Some(Ok(_)) => {}
                    other => panic!("connection ended while waiting for {ty}: {other:?}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {ty} frame within {WAIT:?}"))
    }

    /// Opens, says `hello` (a `user` in open mode, a `token` in token mode) and joins `room`.
    async fn join(
        port: u16,
        trusted: &[&CertificateDer<'static>],
        hello: Value,
        room: &str,
    ) -> Self {
        let mut c = Wss::open(port, trusted).await.expect("wss connect");
        let mut hello = hello;
        hello["type"] = "hello".into();
        c.send(hello).await;
        c.expect("welcome").await;
        c.send(json!({"type": "join", "room": room})).await;
        c.expect("joined").await;
        c
    }
}

/// `from` posts `body` to `room` and `to` receives it.
async fn chat(from: &mut Wss, to: &mut Wss, room: &str, body: &str) {
    from.send(json!({"type": "send", "room": room, "body": body}))
        .await;
    from.expect("ack").await;
    loop {
        let message = to.expect("message").await;
        if message["body"] == body {
            assert_eq!(message["room"], room);
            return;
        }
    }
}

#[tokio::test]
async fn standalone_node_serves_wss_and_picks_up_a_renewed_certificate() {
    let mut scratch = Scratch::new();
    let first = new_pair();
    scratch.install(&first.cert, &first.key);
    let port = e2e::topology::free_port().expect("port");
    let mut args = vec!["--listen".to_string(), format!("127.0.0.1:{port}")];
    args.extend(scratch.tls_flags());
    let log = scratch.spawn("chat-node", "chat-node", &args);
    wait_ready(port, &first.der, &log).await;

    // Health, metrics and the node's own placement answer over HTTPS; it advertises wss://.
    get_ok(port, &first.der, "/healthz").await;
    let metrics = get_ok(port, &first.der, "/metrics").await;
    assert!(metrics.contains("switchboard_"), "{metrics}");
    let assignment = get_ok(port, &first.der, "/v1/assign").await;
    let assignment: Value = serde_json::from_str(&assignment).expect("assignment JSON");
    assert_eq!(assignment["url"], format!("wss://127.0.0.1:{port}/ws"));

    // Two clients that trust only this certificate chat over wss.
    let room = "tls-room";
    let mut alice = Wss::join(port, &[&first.der], json!({"user": "alice"}), room).await;
    let mut bob = Wss::join(port, &[&first.der], json!({"user": "bob"}), room).await;
    chat(&mut alice, &mut bob, room, "hello over wss").await;

    // A renewed certificate on disk: new connections get it, and open ones go on.
    let second = new_pair();
    scratch.install(&second.cert, &second.key);
    eventually("the renewed certificate is served", WAIT, || async {
        let (_, leaf) = handshake(port, &[&first.der, &second.der]).await.ok()?;
        (leaf == second.der).then_some(())
    })
    .await;
    assert!(
        handshake(port, &[&first.der]).await.is_err(),
        "a client trusting only the old certificate must now fail"
    );
    let mut carol = Wss::join(port, &[&second.der], json!({"user": "carol"}), room).await;
    chat(&mut alice, &mut carol, room, "after the renewal").await;
    chat(&mut carol, &mut bob, room, "both ways").await;

    // A broken replacement (a certificate with another key) is logged and the renewed one stays.
    let (third, stranger) = (new_pair(), new_pair());
    scratch.install(&third.cert, &stranger.key);
    eventually(
        "the node logs that it kept its certificate",
        WAIT,
        || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.contains("still serving the previous certificate")
                .then_some(())
        },
    )
    .await;
    let (_, leaf) = handshake(port, &[&second.der, &third.der])
        .await
        .expect("handshake after a bad replacement");
    assert_eq!(leaf, second.der, "the previous certificate stays in use");
    let mut dave = Wss::join(port, &[&second.der], json!({"user": "dave"}), room).await;
    chat(&mut dave, &mut alice, room, "still served").await;
}

#[tokio::test]
async fn registry_serves_https_and_assigns_a_tls_node_by_its_wss_url() {
    let mut scratch = Scratch::new();
    let pair = new_pair();
    scratch.install(&pair.cert, &pair.key);
    let redis = RedisServer::start().await.expect("redis-server");
    let redis_url = format!("redis://127.0.0.1:{}", redis.port());
    let secret = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    let secret_file = scratch.dir.join("jwt.secret");
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&secret_file)
            .expect("secret file");
        std::io::Write::write_all(&mut file, secret.as_bytes()).expect("secret");
    }
    let cluster = format!("tls-{:x}", fastrand::u32(..));
    let common = |port: u16| {
        let mut args: Vec<String> = [
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--redis-url",
            &redis_url,
            "--cluster-id",
            &cluster,
            "--jwt-hmac-secret-file",
            &secret_file.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(scratch.tls_flags());
        args
    };
    let node_port = e2e::topology::free_port().expect("port");
    let registry_port = e2e::topology::free_port().expect("port");
    let mut node_args = common(node_port);
    node_args.extend(["--node-id".to_string(), "tls-node".to_string()]);
    let registry_args = common(registry_port);
    let node_log = scratch.spawn("chat-node", "chat-node", &node_args);
    let registry_log = scratch.spawn("registry", "registry", &registry_args);
    wait_ready(node_port, &pair.der, &node_log).await;
    wait_ready(registry_port, &pair.der, &registry_log).await;

    get_ok(registry_port, &pair.der, "/healthz").await;
    let metrics = get_ok(registry_port, &pair.der, "/metrics").await;
    assert!(metrics.contains("# EOF"), "{metrics}");
    let page = get_ok(registry_port, &pair.der, "/").await;
    assert!(page.starts_with("<!doctype html>"), "{page}");

    let assignment: Value = eventually("the registry assigns the TLS node", WAIT, || async {
        let (status, body) = https_get(registry_port, &[&pair.der], "/v1/assign")
            .await
            .ok()?;
        (status == 200)
            .then(|| serde_json::from_str(&body).ok())
            .flatten()
    })
    .await;
    assert_eq!(assignment["node"], "tls-node");
    assert_eq!(assignment["url"], format!("wss://127.0.0.1:{node_port}/ws"));

    // Clients with tokens chat on the assigned node over wss.
    let issuer = e2e::client::TokenIssuer::new(secret);
    let room = "tls-scaled";
    let token = |user: &str| json!({"token": issuer.mint(user, Duration::from_secs(300))});
    let mut alice = Wss::join(node_port, &[&pair.der], token("alice"), room).await;
    let mut bob = Wss::join(node_port, &[&pair.der], token("bob"), room).await;
    chat(&mut alice, &mut bob, room, "scaled over wss").await;
}

#[tokio::test]
async fn behind_tls_a_socket_refused_at_the_door_is_closed_and_counted() {
    let mut scratch = Scratch::new();
    let pair = new_pair();
    scratch.install(&pair.cert, &pair.key);
    let port = e2e::topology::free_port().expect("port");
    let mut args = vec![
        "--listen".to_string(),
        format!("127.0.0.1:{port}"),
        "--max-connections-per-ip".into(),
        "2".into(),
    ];
    args.extend(scratch.tls_flags());
    let log = scratch.spawn("chat-node", "chat-node", &args);
    wait_ready(port, &pair.der, &log).await;

    let room = "door";
    let mut alice = Wss::join(port, &[&pair.der], json!({"user": "alice"}), room).await;
    let held = handshake(port, &[&pair.der]).await.expect("second socket");
    // The third socket from this address is refused before TLS: no handshake, no plain-HTTP answer.
    let refused = handshake(port, &[&pair.der]).await;
    assert!(refused.is_err(), "a third socket must be refused");
    drop(held);

    let counted = eventually("the refusal is counted on /metrics", WAIT, || async {
        let (status, metrics) = https_get(port, &[&pair.der], "/metrics").await.ok()?;
        let refused: f64 = metrics
            .lines()
            .filter(|l| {
                l.starts_with("switchboard_refusals_total")
                    && l.contains("reason=\"ip_connections\"")
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
            .sum();
        (status == 200 && refused >= 1.0).then_some(refused)
    })
    .await;
    assert!(counted >= 1.0);
    // The client already in keeps chatting.
    alice.send(json!({"type": "ping"})).await;
    alice.expect("pong").await;
}
