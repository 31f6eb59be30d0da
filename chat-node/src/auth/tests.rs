//! Token verification against real signatures: HS256 with a secret, EdDSA through a JWKS served over
//! real HTTP on loopback, and the forgeries a token check must refuse.

use super::*;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{EncodingKey, Header, encode};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn hs256(claims: serde_json::Value, secret: &[u8]) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("sign")
}

fn claims(sub: &str, exp_in: i64) -> serde_json::Value {
    json!({"sub": sub, "exp": (unix_now() as i64 + exp_in)})
}

#[tokio::test]
async fn a_valid_hs256_token_names_its_sub_and_expiry() {
    let auth = Authenticator::hmac(SECRET);
    let mut c = claims("alice", 60);
    c["rooms"] = json!(["private:ops"]);
    let v = auth.verify(&hs256(c, SECRET)).await.expect("valid");
    assert_eq!(v.user, "alice");
    assert_eq!(v.rooms, vec!["private:ops".to_owned()]);
    assert!(v.expires_at.is_some_and(|t| t > SystemTime::now()));
}

#[tokio::test]
async fn forged_expired_and_malformed_tokens_are_refused_precisely() {
    let auth = Authenticator::hmac(SECRET);
    let wrong_key = hs256(claims("alice", 60), b"another-secret-another-secret-xx");
    assert_eq!(auth.verify(&wrong_key).await, Err(Refused::Signature));
    // alg=none: header {"alg":"none"}, no signature.
    let none = format!(
        "{}.{}.",
        B64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        B64.encode(claims("alice", 60).to_string())
    );
    assert_eq!(auth.verify(&none).await, Err(Refused::Malformed));
    assert_eq!(
        auth.verify(&hs256(claims("alice", -31), SECRET)).await,
        Err(Refused::Expired)
    );
    assert!(
        auth.verify(&hs256(claims("alice", -25), SECRET))
            .await
            .is_ok(),
        "within the clock skew"
    );
    let mut early = claims("alice", 600);
    early["nbf"] = json!(unix_now() + 120);
    assert_eq!(
        auth.verify(&hs256(early, SECRET)).await,
        Err(Refused::NotYetValid)
    );
    assert_eq!(
        auth.verify(&hs256(claims("a b", 60), SECRET)).await,
        Err(Refused::Subject)
    );
    assert_eq!(
        auth.verify(&hs256(json!({"sub": "alice"}), SECRET)).await,
        Err(Refused::Malformed),
        "exp is required"
    );
    assert_eq!(auth.verify("not.a.jwt").await, Err(Refused::Malformed));
    assert_eq!(
        auth.verify(&"x".repeat(MAX_TOKEN_BYTES + 1)).await,
        Err(Refused::TooLong)
    );
    assert_eq!(Refused::Expired.close_code(), 4011);
    assert_eq!(Refused::Signature.close_code(), 4001);
}

#[tokio::test]
async fn issuer_and_audience_are_required_when_configured() {
    let dir = std::env::temp_dir().join(format!("sb-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("hmac");
    std::fs::write(&file, SECRET).expect("write");
    let args = AuthArgs {
        jwt_hmac_secret_file: Some(file),
        jwt_issuer: Some("https://idp.example".into()),
        jwt_audience: Some("switchboard".into()),
        ..AuthArgs::default()
    };
    let auth = from_args(&args, true, "0.0.0.0:1".parse().expect("addr")).expect("jwt mode");
    let mut c = claims("alice", 60);
    c["aud"] = json!("switchboard");
    assert_eq!(
        auth.verify(&hs256(c.clone(), SECRET)).await,
        Err(Refused::Issuer)
    );
    c["iss"] = json!("https://evil.example");
    assert_eq!(
        auth.verify(&hs256(c.clone(), SECRET)).await,
        Err(Refused::Issuer)
    );
    c["iss"] = json!("https://idp.example");
    c.as_object_mut().expect("object").remove("aud");
    assert_eq!(
        auth.verify(&hs256(c.clone(), SECRET)).await,
        Err(Refused::Audience)
    );
    c["aud"] = json!("someone-else");
    assert_eq!(
        auth.verify(&hs256(c.clone(), SECRET)).await,
        Err(Refused::Audience)
    );
    c["aud"] = json!(["switchboard", "other"]);
    assert!(auth.verify(&hs256(c, SECRET)).await.is_ok());
}

#[test]
fn defaults_are_open_on_loopback_and_refuse_to_start_unauthenticated_elsewhere() {
    let loopback: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
    let public: SocketAddr = "0.0.0.0:8080".parse().expect("addr");
    let none = AuthArgs::default();
    assert!(from_args(&none, false, loopback).expect("open").is_open());
    assert!(matches!(
        from_args(&none, true, loopback),
        Err(ConfigError::ScaledNeedsKey)
    ));
    assert!(matches!(
        from_args(&none, false, public),
        Err(ConfigError::OpenOffLoopback { .. })
    ));
    let explicit_open = AuthArgs {
        auth: Some(AuthMode::Open),
        ..AuthArgs::default()
    };
    assert!(
        from_args(&explicit_open, true, public)
            .expect("opt-out")
            .is_open()
    );
    let jwt_without_key = AuthArgs {
        auth: Some(AuthMode::Jwt),
        ..AuthArgs::default()
    };
    assert!(matches!(
        from_args(&jwt_without_key, false, loopback),
        Err(ConfigError::NoKeySource)
    ));
    let dev_open = AuthArgs {
        dev_token_issuer: true,
        ..AuthArgs::default()
    };
    assert!(matches!(
        from_args(&dev_open, false, loopback),
        Err(ConfigError::DevIssuerNotAllowed)
    ));
}

/// A JWKS endpoint on loopback serving one Ed25519 key; counts fetches.
async fn jwks_server(jwks: serde_json::Value) -> (String, Arc<AtomicUsize>) {
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let body = jwks.clone();
            async move { axum::Json(body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/jwks"), fetches)
}

use std::sync::Arc;

#[tokio::test]
async fn eddsa_tokens_verify_through_a_fetched_jwks_and_confusion_is_refused() {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("pair");
    let public = pair.public_key().as_ref().to_vec();
    let x = B64.encode(&public);
    let (url, fetches) = jwks_server(json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k1", "use": "sig"},
        {"kty": "oct", "k": B64.encode(SECRET), "kid": "sym"}
    ]}))
    .await;
    let args = AuthArgs {
        jwt_jwks_url: Some(url),
        ..AuthArgs::default()
    };
    let auth = from_args(&args, true, "127.0.0.1:1".parse().expect("addr")).expect("jwks");
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("k1".into());
    let key = EncodingKey::from_ed_der(pkcs8.as_ref());
    let token = encode(&header, &claims("carol", 60), &key).expect("sign");
    assert_eq!(
        auth.verify(&token).await.map(|v| v.user),
        Ok("carol".into())
    );
    assert_eq!(
        auth.verify(&token).await.map(|v| v.user),
        Ok("carol".into())
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "the key set is cached");

    // HS/RS confusion: an HS256 token "signed" with the public key, or naming the symmetric JWKS key.
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("k1".into());
    let confused = encode(
        &hs,
        &claims("carol", 60),
        &EncodingKey::from_secret(&public),
    )
    .expect("sign");
    assert_eq!(auth.verify(&confused).await, Err(Refused::Algorithm));
    hs.kid = Some("sym".into());
    let symmetric =
        encode(&hs, &claims("carol", 60), &EncodingKey::from_secret(SECRET)).expect("sign");
    assert_eq!(auth.verify(&symmetric).await, Err(Refused::Algorithm));

    // Unknown key ids re-fetch the set, at most once per JWKS_MIN_REFETCH however many arrive.
    let unknown = |i: usize| {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some(format!("unknown-{i}"));
        encode(&h, &claims("carol", 60), &key).expect("sign")
    };
    for i in 0..20 {
        assert_eq!(auth.verify(&unknown(i)).await, Err(Refused::UnknownKey));
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "rate-limited re-fetch");
    tokio::time::pause();
    tokio::time::advance(JWKS_MIN_REFETCH + Duration::from_secs(1)).await;
    tokio::time::resume();
    for i in 20..40 {
        assert_eq!(auth.verify(&unknown(i)).await, Err(Refused::UnknownKey));
    }
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        2,
        "one re-fetch for an unknown kid once the interval passed"
    );
}
