//! Authentication as the node is configured: the flags, the JWKS cache, and the checks themselves
//! (re-exported from [`switchboard_wire::auth`], where the fuzzed handshake can reach them without the
//! node's HTTP client).
//!
//! ```text
//!  --auth, --jwt-* ──from_args──▶ Authenticator (switchboard_wire::auth) ──kid──▶ Jwks (KeySource) ──▶ key
//! ```
//!
//! JWKS keys are fetched over HTTPS (rustls), cached, re-fetched when a token names an unknown `kid`
//! (at most once per [`JWKS_MIN_REFETCH`]) and when older than [`JWKS_MAX_AGE`]; a fetch is bounded in
//! time and size.

pub use switchboard_wire::auth::*;

use futures_util::future::BoxFuture;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;

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

/// The authenticator `args` describe for a node listening on `listen`, `scaled` when it has Redis.
pub fn from_args(
    args: &AuthArgs,
    scaled: bool,
    listen: SocketAddr,
) -> Result<Authenticator, ConfigError> {
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
                Some(url) => Some(Box::new(Jwks::new(url)?) as Box<dyn KeySource>),
                None => None,
            };
            Ok(Authenticator::jwt(
                hmac_secret,
                jwks,
                args.jwt_issuer.clone(),
                args.jwt_audience.clone(),
            ))
        }
    }
}

/// The development token issuer for an authenticator with an HMAC secret: it mints tokens with the
/// issuer and audience the authenticator requires.
pub fn dev_issuer(auth: &Authenticator) -> Option<registry::dev_token::DevIssuer> {
    auth.hmac_claims().map(|(secret, issuer, audience)| {
        registry::dev_token::DevIssuer::new(
            secret,
            issuer.map(str::to_owned),
            audience.map(str::to_owned),
        )
    })
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
    async fn cached_key(&self, kid: Option<&str>) -> Result<(DecodingKey, Algorithm), Refused> {
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

impl KeySource for Jwks {
    fn key<'a>(
        &'a self,
        kid: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(DecodingKey, Algorithm), Refused>> {
        Box::pin(self.cached_key(kid))
    }

    fn warm_up(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Err(e) = self.refresh().await {
                tracing::warn!(url = %self.url, error = %switchboard_runtime::report::chain(&e), "JWKS fetch failed");
            }
        })
    }
}

#[cfg(test)]
mod tests;
