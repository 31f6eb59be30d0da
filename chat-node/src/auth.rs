//! Authentication: who a connection is, proven by a signed token (JWT) or — only when chosen — taken on
//! trust (open mode).
//!
//! ```text
//!  hello {token} ──▶ Authenticator::verify ──header.alg──▶ HS256 ──▶ HMAC key (--jwt-hmac-secret-file)
//!                                                      └─▶ RS256/ES256/EdDSA ──kid──▶ Jwks cache ──▶ key
//!                    ──▶ exp, nbf (± CLOCK_SKEW), iss, aud, sub (a valid user name), rooms
//!                    ──▶ Verified { user, expires_at, rooms, admin }   or   Refused (close code + reason)
//! ```
//!
//! The key is chosen by the token's algorithm family and each key is only ever used with its own
//! algorithm, so a token cannot pick `none` or turn a public key into an HMAC secret. JWKS keys are
//! fetched over HTTPS (rustls), cached, re-fetched when a token names an unknown `kid` (at most once per
//! [`JWKS_MIN_REFETCH`]) and when older than [`JWKS_MAX_AGE`]; a fetch is bounded in time and size.

use crate::names::{valid_room, valid_user};
use crate::protocol::close;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
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
/// A token naming an unknown `kid` triggers a JWKS fetch at most this often, so a flood of tokens with
/// made-up key ids cannot turn the node into a load generator against the identity provider.
pub const JWKS_MIN_REFETCH: Duration = Duration::from_secs(10);
/// Keys are re-fetched when older than this, so a removed (revoked) key stops working.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(600);
/// Longest a JWKS fetch may take.
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS document read; real ones hold a few keys (a few KiB).
pub const JWKS_MAX_BYTES: usize = 256 * 1024;

/// How connections are identified.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// Anyone may claim any user name (`?user=` or `hello {user}`); for local development only.
    Open,
    /// A signed token in `hello {token}`; the user is its `sub`.
    Jwt,
}

/// Authentication flags (every flag also reads the environment variable shown in `--help`).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct AuthArgs {
    /// `open` or `jwt`. Default: `jwt` when a key source is given or Redis is configured (scaled mode,
    /// which then refuses to start without a key); `open` for a standalone node on a loopback address.
    #[arg(long = "auth", env = "SWITCHBOARD_AUTH", value_enum)]
    pub auth: Option<AuthMode>,
    /// File holding the HS256 secret (at least 32 bytes; a trailing newline is ignored).
    #[arg(
        long = "jwt-hmac-secret-file",
        env = "SWITCHBOARD_JWT_HMAC_SECRET_FILE"
    )]
    pub jwt_hmac_secret_file: Option<PathBuf>,
    /// JWKS URL for RS256, ES256 and EdDSA tokens (fetched, cached, refreshed on an unknown `kid`).
    #[arg(long = "jwt-jwks-url", env = "SWITCHBOARD_JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,
    /// Required `iss` claim.
    #[arg(long = "jwt-issuer", env = "SWITCHBOARD_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim (one of the token's audiences).
    #[arg(long = "jwt-audience", env = "SWITCHBOARD_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Serve `POST /v1/dev-token` (mints short-lived HS256 tokens for any name) for the web page during
    /// development. Only with --jwt-hmac-secret-file and a loopback --listen address.
    #[arg(long = "dev-token-issuer", env = "SWITCHBOARD_DEV_TOKEN_ISSUER")]
    pub dev_token_issuer: bool,
}

/// Why the authentication flags cannot be used. Never contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Token auth without any key.
    #[error(
        "--auth jwt needs a key: give --jwt-hmac-secret-file PATH (HS256) or --jwt-jwks-url URL \
         (RS256/ES256/EdDSA), or choose --auth open to accept any user name"
    )]
    NoKeySource,
    /// Scaled mode defaults to token auth.
    #[error(
        "a node with Redis (scaled mode) authenticates clients with tokens: give \
         --jwt-hmac-secret-file PATH (HS256) or --jwt-jwks-url URL, or --auth open to opt out explicitly"
    )]
    ScaledNeedsKey,
    /// Open identity on a reachable address must be chosen explicitly.
    #[error(
        "listening on {listen}, not a loopback address, without authentication: give \
         --jwt-hmac-secret-file PATH or --jwt-jwks-url URL, or --auth open to accept any user name"
    )]
    OpenOffLoopback {
        /// The listen address.
        listen: SocketAddr,
    },
    /// Key flags given with `--auth open`.
    #[error("--auth open contradicts the --jwt-* flags given; drop them or use --auth jwt")]
    OpenWithKeys,
    /// The HMAC secret could not be read.
    #[error("--jwt-hmac-secret-file")]
    Secret(#[source] switchboard_runtime::secret::Error),
    /// The HMAC secret is too short.
    #[error("the HS256 secret must be at least {MIN_HMAC_SECRET_BYTES} bytes")]
    SecretTooShort,
    /// The JWKS URL is not http(s).
    #[error("--jwt-jwks-url must be an https:// (or, on loopback, http://) URL")]
    BadJwksUrl,
    /// The dev token issuer was asked for where it is not allowed.
    #[error(
        "--dev-token-issuer mints tokens for anyone: it needs --jwt-hmac-secret-file and a loopback \
         --listen address"
    )]
    DevIssuerNotAllowed,
    /// The HTTP client could not be built.
    #[error("building the JWKS HTTP client")]
    Http(#[source] reqwest::Error),
}

/// A verified identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The user (the token's `sub`).
    pub user: String,
    /// When the token expires (`exp`); `None` in open mode.
    pub expires_at: Option<SystemTime>,
    /// Private rooms the token grants (the `rooms` claim).
    pub rooms: Vec<String>,
    /// The token carries `"admin": true`: it may change room ACLs ([`crate::admin`]).
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

/// Token verification state: keys and required claims.
pub struct JwtVerifier {
    hmac: Option<DecodingKey>,
    hmac_secret: Option<Vec<u8>>,
    jwks: Option<Jwks>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl Authenticator {
    /// The authenticator `args` describe for a node listening on `listen`, `scaled` when it has Redis.
    pub fn from_args(
        args: &AuthArgs,
        scaled: bool,
        listen: SocketAddr,
    ) -> Result<Self, ConfigError> {
        let has_keys = args.jwt_hmac_secret_file.is_some() || args.jwt_jwks_url.is_some();
        let mode = match args.auth {
            Some(mode) => mode,
            None if has_keys => AuthMode::Jwt,
            None if scaled => return Err(ConfigError::ScaledNeedsKey),
            None if listen.ip().is_loopback() => AuthMode::Open,
            None => return Err(ConfigError::OpenOffLoopback { listen }),
        };
        if args.dev_token_issuer
            && (args.jwt_hmac_secret_file.is_none()
                || !listen.ip().is_loopback()
                || mode == AuthMode::Open)
        {
            return Err(ConfigError::DevIssuerNotAllowed);
        }
        match mode {
            AuthMode::Open if has_keys => Err(ConfigError::OpenWithKeys),
            AuthMode::Open => Ok(Authenticator::Open),
            AuthMode::Jwt if !has_keys => Err(ConfigError::NoKeySource),
            AuthMode::Jwt => {
                let hmac_secret = match &args.jwt_hmac_secret_file {
                    Some(path) => {
                        let secret = switchboard_runtime::secret::read_bytes(path)
                            .map_err(ConfigError::Secret)?;
                        if secret.len() < MIN_HMAC_SECRET_BYTES {
                            return Err(ConfigError::SecretTooShort);
                        }
                        Some(secret)
                    }
                    None => None,
                };
                let jwks = match &args.jwt_jwks_url {
                    Some(url) => Some(Jwks::new(url)?),
                    None => None,
                };
                Ok(Authenticator::Jwt(Box::new(JwtVerifier {
                    hmac: hmac_secret.as_deref().map(DecodingKey::from_secret),
                    hmac_secret,
                    jwks,
                    issuer: args.jwt_issuer.clone().filter(|s| !s.is_empty()),
                    audience: args.jwt_audience.clone().filter(|s| !s.is_empty()),
                })))
            }
        }
    }

    /// A token authenticator with one HMAC secret (tests and wiring).
    pub fn hmac(secret: &[u8]) -> Self {
        Authenticator::Jwt(Box::new(JwtVerifier {
            hmac: Some(DecodingKey::from_secret(secret)),
            hmac_secret: Some(secret.to_vec()),
            jwks: None,
            issuer: None,
            audience: None,
        }))
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

    /// The HMAC secret, issuer and audience, for the development token issuer.
    pub fn dev_issuer(&self) -> Option<registry::dev_token::DevIssuer> {
        match self {
            Authenticator::Jwt(j) => j.hmac_secret.as_deref().map(|s| {
                registry::dev_token::DevIssuer::new(s, j.issuer.clone(), j.audience.clone())
            }),
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

    /// Warms the JWKS cache (logs a warning when the keys cannot be fetched; tokens are then refused
    /// with [`Refused::KeysUnavailable`] until a later fetch works).
    pub async fn warm_up(&self) {
        if let Authenticator::Jwt(j) = self
            && let Some(jwks) = &j.jwks
            && let Err(e) = jwks.refresh().await
        {
            tracing::warn!(url = %jwks.url, error = %switchboard_runtime::report::chain(&e), "JWKS fetch failed");
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
                let jwks = self.jwks.as_ref().ok_or(Refused::Algorithm)?;
                let (k, alg) = jwks.key(header.kid.as_deref()).await?;
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

/// Why a JWKS fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The request failed (unreachable, timeout, TLS).
    #[error("fetching the JWKS")]
    Fetch(#[source] reqwest::Error),
    /// A non-200 answer.
    #[error("the JWKS URL answered {0}")]
    Status(u16),
    /// Larger than [`JWKS_MAX_BYTES`].
    #[error("the JWKS is larger than {JWKS_MAX_BYTES} bytes")]
    TooLarge,
    /// Not a JWKS document.
    #[error("the JWKS is not a JSON object with a keys array")]
    Malformed,
}

/// A cached JWKS.
struct Jwks {
    url: String,
    http: reqwest::Client,
    state: tokio::sync::Mutex<JwksState>,
}

#[derive(Default)]
struct JwksState {
    keys: HashMap<String, (DecodingKey, Algorithm)>,
    /// The only key when the set has exactly one (tokens without `kid` use it).
    single: Option<(DecodingKey, Algorithm)>,
    fetched: Option<Instant>,
    attempted: Option<Instant>,
}

impl Jwks {
    fn new(url: &str) -> Result<Self, ConfigError> {
        let lower = url.to_ascii_lowercase();
        let loopback_http = lower.starts_with("http://127.")
            || lower.starts_with("http://localhost")
            || lower.starts_with("http://[::1]");
        if !lower.starts_with("https://") && !loopback_http {
            return Err(ConfigError::BadJwksUrl);
        }
        let http = reqwest::Client::builder()
            .timeout(JWKS_FETCH_TIMEOUT)
            .connect_timeout(JWKS_FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(ConfigError::Http)?;
        Ok(Self {
            url: url.to_owned(),
            http,
            state: tokio::sync::Mutex::new(JwksState::default()),
        })
    }

    /// The key for `kid`, fetching the set when it is unknown (rate-limited) or stale.
    async fn key(&self, kid: Option<&str>) -> Result<(DecodingKey, Algorithm), Refused> {
        let mut state = self.state.lock().await;
        let stale = state.fetched.is_none_or(|t| t.elapsed() >= JWKS_MAX_AGE);
        let lookup = |s: &JwksState| match kid {
            Some(kid) => s.keys.get(kid).cloned(),
            None => s.single.clone(),
        };
        if !stale && let Some(k) = lookup(&state) {
            return Ok(k);
        }
        let may_fetch = state
            .attempted
            .is_none_or(|t| t.elapsed() >= JWKS_MIN_REFETCH);
        if may_fetch {
            state.attempted = Some(Instant::now());
            match self.fetch().await {
                Ok(fresh) => {
                    *state = JwksState {
                        fetched: Some(Instant::now()),
                        attempted: state.attempted,
                        ..fresh
                    };
                }
                Err(e) => {
                    tracing::warn!(url = %self.url, error = %switchboard_runtime::report::chain(&e), "JWKS fetch failed");
                    if state.fetched.is_none() {
                        return Err(Refused::KeysUnavailable);
                    }
                }
            }
        }
        lookup(&state).ok_or(Refused::UnknownKey)
    }

    async fn refresh(&self) -> Result<(), JwksError> {
        let fresh = self.fetch().await?;
        let mut state = self.state.lock().await;
        let now = Instant::now();
        *state = JwksState {
            fetched: Some(now),
            attempted: Some(now),
            ..fresh
        };
        Ok(())
    }

    async fn fetch(&self) -> Result<JwksState, JwksError> {
        let mut response = self
            .http
            .get(&self.url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(JwksError::Fetch)?;
        if !response.status().is_success() {
            return Err(JwksError::Status(response.status().as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(JwksError::Fetch)? {
            if body.len() + chunk.len() > JWKS_MAX_BYTES {
                return Err(JwksError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        parse_jwks(&body)
    }
}

/// Reads a JWKS document, keeping the signing keys this node accepts (RSA → RS256, P-256 → ES256,
/// Ed25519 → EdDSA); symmetric keys and keys of other algorithms are ignored, never trusted.
fn parse_jwks(body: &[u8]) -> Result<JwksState, JwksError> {
    #[derive(Deserialize)]
    struct Doc {
        keys: Vec<serde_json::Value>,
    }
    let doc: Doc = serde_json::from_slice(body).map_err(|_| JwksError::Malformed)?;
    let mut state = JwksState::default();
    let mut usable = Vec::new();
    for value in doc.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        let Some(alg) = jwk_algorithm(&jwk) else {
            continue;
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        if let Some(kid) = &jwk.common.key_id {
            state.keys.insert(kid.clone(), (key.clone(), alg));
        }
        usable.push((key, alg));
    }
    if usable.len() == 1 {
        state.single = usable.pop();
    }
    Ok(state)
}

fn jwk_algorithm(jwk: &Jwk) -> Option<Algorithm> {
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    let declared = match jwk.common.key_algorithm {
        None => None,
        Some(KeyAlgorithm::RS256) => Some(Algorithm::RS256),
        Some(KeyAlgorithm::ES256) => Some(Algorithm::ES256),
        Some(KeyAlgorithm::EdDSA) => Some(Algorithm::EdDSA),
        Some(_) => return None,
    };
    match declared {
        Some(d) if d != by_type => None,
        _ => Some(by_type),
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

#[cfg(test)]
mod tests;
