//! `rediss://` against a real `redis-server` serving TLS with certificates made here: the client trusts
//! the given authority and no other, presents a client certificate when the server asks for one, and
//! TLS settings that cannot take effect are refused instead of silently connecting in plaintext.

use std::path::{Path, PathBuf};

use fred::interfaces::{ClientLike, KeysInterface};
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};
use switchboard_redis::{self as redis, Error, RedisArgs};
use switchboard_runtime::report::chain;
use switchboard_testkit::{RedisServer, free_port};

/// A certificate authority, a server certificate for 127.0.0.1 and a client certificate, as PEM files.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("sb-redis-tls-{:08x}", fastrand::u32(..)));
        std::fs::create_dir_all(&dir).expect("dir");
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Distinct names: a leaf named like its issuer looks self-signed to OpenSSL.
        ca_params.distinguished_name = named("switchboard test CA");
        let ca = ca_params.self_signed(&ca_key).expect("ca");
        let issue = |name: &str, sans: Vec<String>| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(sans).expect("params");
            params.distinguished_name = named(name);
            let cert = params.signed_by(&key, &ca, &ca_key).expect("sign");
            std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).expect("write");
            std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).expect("write");
        };
        std::fs::write(dir.join("ca.crt"), ca.pem()).expect("write");
        issue(
            "server",
            vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
        );
        issue("client", vec!["switchboard-client".to_owned()]);
        // An authority the server's certificate does not chain to.
        let other_key = KeyPair::generate().expect("key");
        let mut other = CertificateParams::new(Vec::<String>::new()).expect("params");
        other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        other.distinguished_name = named("another CA");
        let other = other.self_signed(&other_key).expect("other ca");
        std::fs::write(dir.join("other-ca.crt"), other.pem()).expect("write");
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn named(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A server with a plain port (for the harness) and a TLS port; `clients` asks for client certificates.
async fn tls_server(pki: &Pki, clients: bool) -> (RedisServer, u16) {
    let port = free_port().expect("port");
    let p = |n: &str| pki.path(n).display().to_string();
    let server = RedisServer::builder()
        .arg("--tls-port")
        .arg(port.to_string())
        .arg("--tls-cert-file")
        .arg(p("server.crt"))
        .arg("--tls-key-file")
        .arg(p("server.key"))
        .arg("--tls-ca-cert-file")
        .arg(p("ca.crt"))
        .arg("--tls-auth-clients")
        .arg(if clients { "yes" } else { "no" })
        .start()
        .await
        .expect("redis-server with TLS (Debian's redis-server is built with it)");
    (server, port)
}

fn args(port: u16, ca: &Path) -> RedisArgs {
    let mut args = RedisArgs::from_url(format!("rediss://127.0.0.1:{port}"));
    args.redis_tls_ca_file = Some(ca.to_path_buf());
    args
}

#[tokio::test]
async fn rediss_trusts_the_given_authority_and_no_other() {
    let pki = Pki::new();
    let (_server, port) = tls_server(&pki, false).await;
    let client = redis::connect(&args(port, &pki.path("ca.crt")))
        .await
        .expect("connect over TLS");
    client
        .set::<(), _, _>("k", "over tls", None, None, false)
        .await
        .expect("set");
    assert_eq!(client.get::<String, _>("k").await.expect("get"), "over tls");
    let _ = client.quit().await;

    let refused = redis::connect(&args(port, &pki.path("other-ca.crt"))).await;
    assert!(
        refused.is_err(),
        "a server whose certificate does not chain to the given authority is refused"
    );
    let missing = redis::connect(&args(port, &pki.path("nowhere.crt"))).await;
    let Err(err @ Error::Tls { .. }) = missing else {
        panic!("a missing CA file is a TLS error: {missing:?}");
    };
    assert!(chain(&err).contains("nowhere.crt"), "{}", chain(&err));
}

#[tokio::test]
async fn mutual_tls_presents_the_client_certificate() {
    let pki = Pki::new();
    let (_server, port) = tls_server(&pki, true).await;
    assert!(
        redis::connect(&args(port, &pki.path("ca.crt")))
            .await
            .is_err(),
        "the server asks for a client certificate"
    );
    let mut with_cert = args(port, &pki.path("ca.crt"));
    with_cert.redis_tls_cert_file = Some(pki.path("client.crt"));
    with_cert.redis_tls_key_file = Some(pki.path("client.key"));
    let client = redis::connect(&with_cert).await.expect("mutual TLS");
    client
        .set::<(), _, _>("k", "v", None, None, false)
        .await
        .expect("set");
    let _ = client.quit().await;

    let mut half = args(port, &pki.path("ca.crt"));
    half.redis_tls_cert_file = Some(pki.path("client.crt"));
    assert!(matches!(
        redis::connect(&half).await,
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn tls_settings_that_cannot_take_effect_are_refused() {
    let mut plain = RedisArgs::from_url("redis://127.0.0.1:6379");
    plain.redis_tls_ca_file = Some(PathBuf::from("/ca.crt"));
    let Err(Error::InvalidConfig(why)) = plain.config() else {
        panic!("TLS files with redis:// must be refused");
    };
    assert!(why.contains("rediss://"), "{why}");
    let mut sentinels = RedisArgs::from_sentinels(["127.0.0.1:26379"], "m");
    sentinels.redis_tls_ca_file = Some(PathBuf::from("/ca.crt"));
    let Err(Error::InvalidConfig(why)) = sentinels.config() else {
        panic!("TLS through sentinels must be refused");
    };
    assert!(why.contains("sentinels"), "{why}");
}
