//! `rediss://` against a real `redis-server` serving TLS with certificates made here: the client trusts
//! the given authority and no other, presents a client certificate when the server asks for one, and
//! TLS settings that cannot take effect are refused instead of silently connecting in plaintext.

use std::path::{Path, PathBuf};

use fred::interfaces::{ClientLike, KeysInterface};
use switchboard_redis::{self as redis, Error, RedisArgs};
use switchboard_runtime::report::chain;
use switchboard_testkit::RedisServer;
use switchboard_testkit::tls::Pki;

/// A server with a plain port (for the harness) and a TLS port; `clients` asks for client certificates.
async fn tls_server(pki: &Pki, clients: bool) -> (RedisServer, u16) {
    pki.redis_server(clients)
        .await
        .expect("redis-server with TLS (Debian's redis-server is built with it)")
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
}

#[test]
fn tls_files_with_sentinels_mean_tls_to_the_sentinels_and_the_data_nodes() {
    let pki = Pki::new();
    let mut sentinels = RedisArgs::from_sentinels(["127.0.0.1:26379"], "m");
    sentinels.redis_tls_ca_file = Some(pki.path("ca.crt"));
    let config = sentinels.config().expect("TLS through sentinels");
    assert!(
        config.tls.is_some(),
        "one TLS setting for sentinels and data nodes"
    );
    assert!(sentinels.access().expect("access").tls.is_some());
    let mut missing = RedisArgs::from_sentinels(["127.0.0.1:26379"], "m");
    missing.redis_tls_ca_file = Some(PathBuf::from("/nonexistent/ca.crt"));
    assert!(matches!(missing.config(), Err(Error::Tls { .. })));
}
