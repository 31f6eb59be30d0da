//! Token verification: who a connection is, proven by a signed token (JWT) or — only when chosen —
//! taken on trust (open mode).
//!
//! ```text
//!  hello {token} ──▶ Authenticator::verify ──header.alg──▶ HS256 ──▶ HMAC key
//!                                                      └─▶ RS256/ES256/EdDSA ──kid──▶ KeySource ──▶ key
//!                    ──▶ exp, nbf (± CLOCK_SKEW), iss, aud, sub (a valid user name), rooms
//!                    ──▶ Verified { user, expires_at, rooms, admin }   or   Refused (close code + reason)
//! ```
//!
//! The key is chosen by the token's algorithm family and each key is only ever used with its own
//! algorithm, so a token cannot pick `none` or turn a public key into an HMAC secret. Public keys come
//! from a [`KeySource`]: chat-node's JWKS cache (fetched over HTTPS, bounded in time, size and rate),
//! which lives with the node's flags in `chat_node::auth`, so that this crate needs no HTTP client.

use crate::names::{valid_room, valid_user};
use crate::protocol::close;
use futures_util::future::BoxFuture;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// Clock skew tolerated between the token issuer and the node, for `exp` and `nbf`.
pub const CLOCK_SKEW: Duration = Duration::from_secs(30);
/// Longest token accepted; real tokens are well under 2 KiB, and the bound keeps parsing cheap.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Most rooms a token may grant (the `rooms` claim).
pub const MAX_GRANTED_ROOMS: usize = 256;
/// Shortest HMAC secret: HS256 needs at least 256 bits of key to be as strong as its hash.
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

/// A verified identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The user (the token's `sub`).
    pub user: String,
    /// When the token expires (`exp`); `None` in open mode.
    pub expires_at: Option<SystemTime>,
    /// Private rooms the token grants (the `rooms` claim).
    pub rooms: Vec<String>,
    /// The token carries `"admin": true`: it may change room ACLs (`chat_node::admin`).
    pub admin: bool,
}

/// Why a token was refused: each maps to a close code and a reason a developer can act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// No token where one is required.
    #[error("this node requires a token: send hello with a token field")]
    Missing,
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error("token longer than 8 KiB")]
    TooLong,
    /// Not a JWT, or its claims are not what the protocol needs.
    #[error("malformed token")]
    Malformed,
    /// An algorithm this node does not accept (including `none`), or one that does not match the key.
    #[error("token algorithm not accepted")]
    Algorithm,
    /// No key with the token's `kid`.
    #[error("token signed by an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("token signature invalid")]
    Signature,
    /// `exp` passed (more than the clock skew ago).
    #[error("token expired")]
    Expired,
    /// `nbf` still in the future (more than the clock skew ahead).
    #[error("token not valid yet")]
    NotYetValid,
    /// `iss` missing or not the configured issuer.
    #[error("token issuer not accepted")]
    Issuer,
    /// `aud` missing or not the configured audience.
    #[error("token audience not accepted")]
    Audience,
    /// `sub` is not a valid user name.
    #[error("token sub is not a valid user name")]
    Subject,
    /// The `rooms` claim is not a list of at most 256 room names.
    #[error("token rooms claim invalid")]
    Rooms,
    /// The JWKS could not be fetched; the client should retry later.
    #[error("token keys unavailable, try again")]
    KeysUnavailable,
}

impl Refused {
    /// The WebSocket close code: 4011 for an expired token, 1013 when keys are unavailable (retry),
    /// 4001 otherwise.
    pub fn close_code(self) -> u16 {
        match self {
            Refused::Expired => close::TOKEN_EXPIRED,
            Refused::KeysUnavailable => close::TRY_AGAIN_LATER,
            _ => close::INVALID_IDENTITY,
        }
    }

    /// The close reason (the `Display` text, static).
    pub fn reason(self) -> &'static str {
        match self {
            Refused::Missing => "this node requires a token: send hello with a token field",
            Refused::TooLong => "token longer than 8 KiB",
            Refused::Malformed => "malformed token",
            Refused::Algorithm => "token algorithm not accepted",
            Refused::UnknownKey => "token signed by an unknown key",
            Refused::Signature => "token signature invalid",
            Refused::Expired => "token expired",
            Refused::NotYetValid => "token not valid yet",
            Refused::Issuer => "token issuer not accepted",
            Refused::Audience => "token audience not accepted",
            Refused::Subject => "token sub is not a valid user name",
            Refused::Rooms => "token rooms claim invalid",
            Refused::KeysUnavailable => "token keys unavailable, try again",
        }
    }

    /// The `reason` label of the refusal counter.
    pub fn metric_reason(self) -> &'static str {
        match self {
            Refused::Expired => "auth_expired",
            Refused::KeysUnavailable => "auth_keys_unavailable",
            Refused::Missing => "auth_missing",
            _ => "auth_invalid",
        }
    }
}

/// The claims the node reads.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    rooms: Option<serde_json::Value>,
    /// Only the JSON value `true` makes an admin.
    #[serde(default)]
    admin: Option<serde_json::Value>,
}

/// Checks identities; one per node.
pub enum Authenticator {
    /// Open identity.
    Open,
    /// Tokens.
    Jwt(Box<JwtVerifier>),
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Authenticator::Open => "Authenticator::Open",
            Authenticator::Jwt(_) => "Authenticator::Jwt",
        })
    }
}

/// Where the public keys of RS256, ES256 and EdDSA tokens come from (chat-node: a cached JWKS).
pub trait KeySource: Send + Sync {
    /// The key a token's `kid` names (the only key when the token names none), with the one algorithm
    /// it may be used with; [`Refused::UnknownKey`] or [`Refused::KeysUnavailable`] otherwise.
    fn key<'a>(
        &'a self,
        kid: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(DecodingKey, Algorithm), Refused>>;

    /// Fetches the keys ahead of the first token (reporting a failure itself: tokens are then refused
    /// with [`Refused::KeysUnavailable`] until a later fetch works).
    fn warm_up(&self) -> BoxFuture<'_, ()>;
}

/// Token verification state: keys and required claims.
pub struct JwtVerifier {
    hmac: Option<DecodingKey>,
    hmac_secret: Option<Vec<u8>>,
    keys: Option<Box<dyn KeySource>>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl Authenticator {
    /// A token authenticator: an HS256 secret, a source of public keys, or both, and the `iss` and
    /// `aud` claims it requires (an empty one requires nothing).
    pub fn jwt(
        hmac_secret: Option<Vec<u8>>,
        keys: Option<Box<dyn KeySource>>,
        issuer: Option<String>,
        audience: Option<String>,
    ) -> Self {
        Authenticator::Jwt(Box::new(JwtVerifier {
            hmac: hmac_secret.as_deref().map(DecodingKey::from_secret),
            hmac_secret,
            keys,
            issuer: issuer.filter(|s| !s.is_empty()),
            audience: audience.filter(|s| !s.is_empty()),
        }))
    }

    /// A token authenticator with one HMAC secret (tests and wiring).
    pub fn hmac(secret: &[u8]) -> Self {
        Self::jwt(Some(secret.to_vec()), None, None, None)
    }

    /// True in open mode.
    pub fn is_open(&self) -> bool {
        matches!(self, Authenticator::Open)
    }

    /// The mode's name for logs.
    pub fn mode(&self) -> &'static str {
        match self {
            Authenticator::Open => "open",
            Authenticator::Jwt(_) => "jwt",
        }
    }

    /// The HMAC secret and the required issuer and audience (for a development token issuer that
    /// mints tokens this authenticator accepts); `None` without an HMAC secret.
    pub fn hmac_claims(&self) -> Option<(&[u8], Option<&str>, Option<&str>)> {
        match self {
            Authenticator::Jwt(j) => j
                .hmac_secret
                .as_deref()
                .map(|s| (s, j.issuer.as_deref(), j.audience.as_deref())),
            Authenticator::Open => None,
        }
    }

    /// Verifies a token (token mode only; in open mode every token is refused as [`Refused::Algorithm`]
    /// — open mode never reads tokens).
    pub async fn verify(&self, token: &str) -> Result<Verified, Refused> {
        match self {
            Authenticator::Open => Err(Refused::Algorithm),
            Authenticator::Jwt(j) => j.verify(token).await,
        }
    }

    /// Warms the public keys' source, if any (see [`KeySource::warm_up`]).
    pub async fn warm_up(&self) {
        if let Authenticator::Jwt(j) = self
            && let Some(keys) = &j.keys
        {
            keys.warm_up().await;
        }
    }
}

impl JwtVerifier {
    async fn verify(&self, token: &str) -> Result<Verified, Refused> {
        if token.is_empty() {
            return Err(Refused::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Refused::TooLong);
        }
        // `alg: none` and unknown algorithms fail here: the header's algorithm must parse.
        let header = decode_header(token).map_err(|_| Refused::Malformed)?;
        let key;
        let key_ref = match header.alg {
            Algorithm::HS256 => self.hmac.as_ref().ok_or(Refused::Algorithm)?,
            Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA => {
                let keys = self.keys.as_ref().ok_or(Refused::Algorithm)?;
                let (k, alg) = keys.key(header.kid.as_deref()).await?;
                if alg != header.alg {
                    return Err(Refused::Algorithm);
                }
                key = k;
                &key
            }
            _ => return Err(Refused::Algorithm),
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = CLOCK_SKEW.as_secs();
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        let data = decode::<Claims>(token, key_ref, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::ExpiredSignature => Refused::Expired,
                K::ImmatureSignature => Refused::NotYetValid,
                K::InvalidIssuer => Refused::Issuer,
                K::InvalidAudience => Refused::Audience,
                K::MissingRequiredClaim(c) if c == "iss" => Refused::Issuer,
                K::MissingRequiredClaim(c) if c == "aud" => Refused::Audience,
                K::InvalidSignature => Refused::Signature,
                K::InvalidAlgorithm => Refused::Algorithm,
                _ => Refused::Malformed,
            }
        })?;
        let claims = data.claims;
        if !valid_user(&claims.sub) {
            return Err(Refused::Subject);
        }
        let rooms = match claims.rooms {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Array(list)) if list.len() <= MAX_GRANTED_ROOMS => list
                .into_iter()
                .map(|v| match v {
                    serde_json::Value::String(r) if valid_room(&r) => Ok(r),
                    _ => Err(Refused::Rooms),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(Refused::Rooms),
        };
        Ok(Verified {
            user: claims.sub,
            expires_at: Some(UNIX_EPOCH + Duration::from_secs(claims.exp)),
            rooms,
            admin: claims.admin == Some(serde_json::Value::Bool(true)),
        })
    }
}

/// Seconds since the Unix epoch now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// When, on the runtime clock, a session whose token expires at `expires_at` must close: at `exp`
/// plus the clock skew (the same tolerance the token was accepted with).
pub fn session_deadline(expires_at: SystemTime) -> Instant {
    let left = expires_at
        .checked_add(CLOCK_SKEW)
        .and_then(|t| t.duration_since(SystemTime::now()).ok())
        .unwrap_or(Duration::ZERO);
    Instant::now() + left
}
