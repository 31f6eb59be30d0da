//! Credentials for test clients: open identity (`?user=`) or HS256 tokens minted with the topology's
//! secret and sent in the first `hello` frame (`chat-node/PROTOCOL.md` section 2).
//!
//! ```text
//!  Credentials::Open ──────────────────────▶ ConnectOptions { user }    ──▶ ws://…/ws?user=NAME
//!  Credentials::Token(TokenIssuer) ─mint──▶ ConnectOptions { token }   ──▶ ws://…/ws, hello {token}
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use super::ConnectOptions;

/// Lifetime of the tokens minted for test sessions: longer than any test.
pub const TEST_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// Signs HS256 tokens with a shared secret.
#[derive(Clone)]
pub struct TokenIssuer {
    secret: Vec<u8>,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer").finish_non_exhaustive()
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl TokenIssuer {
    /// An issuer with `secret`.
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self {
            secret: secret.into(),
        }
    }

    /// A token for `user` expiring `ttl` from now.
    pub fn mint(&self, user: &str, ttl: Duration) -> String {
        self.sign(&json!({"sub": user, "exp": unix_now() + ttl.as_secs() as i64}))
    }

    /// A token with exactly these claims.
    pub fn sign(&self, claims: &Value) -> String {
        sign_hs256(claims, &self.secret)
    }
}

/// An HS256 token over `claims` with `secret`.
///
/// # Panics
/// Never for JSON claims and an HMAC key (signing cannot fail then).
pub fn sign_hs256(claims: &Value, secret: &[u8]) -> String {
    #[allow(clippy::expect_used)]
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("HS256 signing of JSON claims cannot fail")
}

/// How a test client proves who it is.
#[derive(Clone, Debug, Default)]
pub enum Credentials {
    /// Open identity: the name is enough.
    #[default]
    Open,
    /// Token mode: a token minted for the name.
    Token(TokenIssuer),
}

impl Credentials {
    /// Options that connect as `user` and wait for `welcome`.
    pub fn options(&self, user: &str) -> ConnectOptions {
        match self {
            Credentials::Open => ConnectOptions {
                user: Some(user.to_owned()),
                wait_welcome: true,
                ..Default::default()
            },
            Credentials::Token(issuer) => ConnectOptions {
                token: Some(issuer.mint(user, TEST_TOKEN_TTL)),
                wait_welcome: true,
                ..Default::default()
            },
        }
    }

    /// The issuer, in token mode.
    pub fn issuer(&self) -> Option<&TokenIssuer> {
        match self {
            Credentials::Open => None,
            Credentials::Token(i) => Some(i),
        }
    }
}
