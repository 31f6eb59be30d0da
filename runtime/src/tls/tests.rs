use super::*;
use axum::Router;
use axum::routing::get;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

/// A fresh self-signed certificate for `localhost`: (certificate PEM, key PEM, certificate DER).
fn certificate() -> (String, String, CertificateDer<'static>) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
    (
        made.cert.pem(),
        made.key_pair.serialize_pem(),
        made.cert.der().clone(),
    )
}

struct Files {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Files {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "switchboard-tls-{}-{:x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Files {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            dir,
        }
    }

    /// Writes both files the way a certificate manager does: a new file renamed over the old one.
    fn write(&self, cert: &str, key: &str) {
        for (path, text) in [(&self.cert, cert), (&self.key, key)] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).expect("write");
            std::fs::rename(&tmp, path).expect("rename");
        }
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls until the watcher has seen a change hold for one poll (two looks at the files).
fn poll_change(tls: &Tls, watch: &mut Watch) -> Polled {
    assert!(
        matches!(tls.poll(watch), Polled::Unchanged),
        "a change waits one poll"
    );
    tls.poll(watch)
}

#[test]
fn a_valid_pair_loads_and_a_renewed_one_replaces_it() {
    let files = Files::new();
    let (cert, key, der) = certificate();
    files.write(&cert, &key);
    let tls = Tls::load(&files.cert, &files.key).expect("load");
    assert_eq!(tls.leaf(), Some(der));
    let mut watch = tls.watch();
    assert!(matches!(tls.poll(&mut watch), Polled::Unchanged));

    let (cert2, key2, der2) = certificate();
    files.write(&cert2, &key2);
    assert!(matches!(poll_change(&tls, &mut watch), Polled::Reloaded));
    assert_eq!(tls.leaf(), Some(der2));
    assert!(matches!(tls.poll(&mut watch), Polled::Unchanged));
}

#[test]
fn a_bad_replacement_keeps_the_old_pair_until_a_good_one_comes() {
    let files = Files::new();
    let (cert, key, der) = certificate();
    files.write(&cert, &key);
    let tls = Tls::load(&files.cert, &files.key).expect("load");
    let mut watch = tls.watch();

    // A certificate with someone else's key.
    let (cert2, _, _) = certificate();
    let (_, other_key, _) = certificate();
    files.write(&cert2, &other_key);
    match poll_change(&tls, &mut watch) {
        Polled::Kept(Error::Pair { .. }) => {}
        other => panic!("mismatched key must be kept out: {other:?}"),
    }
    assert_eq!(tls.leaf(), Some(der.clone()));
    // Not retried while the files stay the same.
    assert!(matches!(tls.poll(&mut watch), Polled::Unchanged));

    files.write("not a certificate", &key);
    match poll_change(&tls, &mut watch) {
        Polled::Kept(Error::NoCertificate { .. }) => {}
        other => panic!("garbage must be kept out: {other:?}"),
    }
    assert_eq!(tls.leaf(), Some(der));

    let (cert3, key3, der3) = certificate();
    files.write(&cert3, &key3);
    assert!(matches!(poll_change(&tls, &mut watch), Polled::Reloaded));
    assert_eq!(tls.leaf(), Some(der3));
}

#[test]
fn start_up_refuses_missing_or_mismatched_files_with_the_reason() {
    let files = Files::new();
    match Tls::load(&files.cert, &files.key) {
        Err(Error::Read {
            what: "certificate",
            ..
        }) => {}
        other => panic!("missing file: {other:?}"),
    }
    let (cert, _, _) = certificate();
    let (_, key, _) = certificate();
    files.write(&cert, &key);
    let error = Tls::load(&files.cert, &files.key).expect_err("mismatch");
    assert!(matches!(error, Error::Pair { .. }), "{error:?}");
    assert!(error.to_string().contains("does not fit"), "{error}");
    files.write(&cert, "");
    assert!(matches!(
        Tls::load(&files.cert, &files.key),
        Err(Error::NoKey { .. })
    ));
}

#[test]
fn both_files_or_neither() {
    use clap::Parser;
    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        tls: TlsArgs,
    }
    let none = Cli::try_parse_from(["x"]).expect("no TLS");
    assert!(none.tls.files().is_none());
    assert_eq!(none.tls.websocket_scheme(), "ws");
    let both =
        Cli::try_parse_from(["x", "--tls-cert-file", "c", "--tls-key-file", "k"]).expect("both");
    assert_eq!(both.tls.websocket_scheme(), "wss");
    assert_eq!(both.tls.http_scheme(), "https");
    assert!(Cli::try_parse_from(["x", "--tls-cert-file", "c"]).is_err());
    assert!(Cli::try_parse_from(["x", "--tls-key-file", "k"]).is_err());
}

/// An HTTPS GET of `/` trusting only `trusted`; returns the body.
async fn get_over_tls(addr: SocketAddr, trusted: &CertificateDer<'static>) -> io::Result<String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).map_err(io::Error::other)?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(io::Error::other)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = String::new();
    tls.read_to_string(&mut response).await?;
    Ok(response)
}

#[tokio::test]
async fn serves_https_past_a_stalled_handshake_and_with_the_renewed_certificate() {
    let files = Files::new();
    let (cert, key, der) = certificate();
    files.write(&cert, &key);
    let tls = Tls::load(&files.cert, &files.key).expect("load");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = Router::new().route("/", get(|| async { "hello over tls" }));
    let shutdown = CancellationToken::new();
    let tls = Arc::new(tls);
    let server = tokio::spawn({
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        async move { crate::serve::serve_tls(listener, &tls, router, shutdown).await }
    });

    // A client that connects and never starts its handshake holds up nobody.
    let _stalled = TcpStream::connect(addr).await.expect("stalled connect");
    let response = get_over_tls(addr, &der).await.expect("https");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("hello over tls"), "{response}");

    let (cert2, key2, der2) = certificate();
    files.write(&cert2, &key2);
    let mut watch = Watch {
        loaded: (Stamp(None), Stamp(None)),
        changed: None,
    };
    assert!(matches!(poll_change(&tls, &mut watch), Polled::Reloaded));
    assert!(
        get_over_tls(addr, &der).await.is_err(),
        "the old certificate must no longer be served"
    );
    let response = get_over_tls(addr, &der2)
        .await
        .expect("https, new certificate");
    assert!(response.ends_with("hello over tls"), "{response}");

    shutdown.cancel();
    server.await.expect("join").expect("serve");
}
