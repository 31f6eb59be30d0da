//! A **development** identity provider: `POST /v1/dev-token {"user":"alice"}` mints a short-lived HS256
//! token for any valid name, so the web page works against nodes that require tokens while nobody has
//! an identity provider yet. It proves nothing about who asks; `chat-node` and `registry` serve it only
//! with `--dev-token-issuer`, an HMAC secret and a loopback listen address.
//!
//! ```text
//!  page ──GET /v1/auth──────────▶ {"dev_token_issuer": true|false}
//!       ──POST /v1/dev-token────▶ {"token","user","expires_at"} ──hello {token}──▶ chat-node
//! ```
//!
//! `GET /v1/auth` is always served (answering `false` without the issuer), so the page knows whether
//! to ask for a name and mint, or to expect a token from the embedding application.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Lifetime of a development token: short, so a leaked one is soon useless; the page refreshes it.
pub const DEV_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

/// Largest `POST /v1/dev-token` body.
const MAX_BODY_BYTES: usize = 1024;

/// Mints development tokens.
#[derive(Clone)]
pub struct DevIssuer {
    key: EncodingKey,
    issuer: Option<String>,
    audience: Option<String>,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer").finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    dev: bool,
}

/// A minted token.
#[derive(Debug, Serialize)]
pub struct Minted {
    /// The JWT.
    pub token: String,
    /// Its `sub`.
    pub user: String,
    /// Its `exp` in milliseconds since the Unix epoch.
    pub expires_at: u64,
}

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The name breaks the user-name rules.
    #[error("invalid user name: 1-32 of A-Z a-z 0-9 _ . -, starting with a letter or digit")]
    InvalidUser,
    /// Signing failed.
    #[error("signing the token")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

impl DevIssuer {
    /// An issuer signing with `secret`, stamping `issuer` and `audience` when given (so tokens pass a
    /// node that requires them).
    pub fn new(secret: &[u8], issuer: Option<String>, audience: Option<String>) -> Self {
        Self {
            key: EncodingKey::from_secret(secret),
            issuer,
            audience,
        }
    }

    /// A token for `user` valid for `ttl`.
    pub fn mint(&self, user: &str, ttl: Duration) -> Result<Minted, MintError> {
        if !valid_user(user) {
            return Err(MintError::InvalidUser);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let exp = now + ttl.as_secs().max(1);
        let claims = Claims {
            sub: user,
            iat: now,
            exp,
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
            dev: true,
        };
        let token =
            encode(&Header::new(Algorithm::HS256), &claims, &self.key).map_err(MintError::Sign)?;
        Ok(Minted {
            token,
            user: user.to_owned(),
            expires_at: exp * 1000,
        })
    }
}

/// The user-name rule of the wire protocol (`chat-node/PROTOCOL.md` section 2), checked here too so the
/// issuer never signs a name every node would refuse.
fn valid_user(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[derive(Deserialize)]
struct MintRequest {
    user: String,
}

/// `GET /v1/auth`, and `POST /v1/dev-token` when `issuer` is given.
pub fn router(issuer: Option<DevIssuer>) -> Router {
    let enabled = issuer.is_some();
    let info = get(move || async move {
        (
            [(header::CACHE_CONTROL, "no-store")],
            Json(serde_json::json!({ "dev_token_issuer": enabled })),
        )
    });
    let router = Router::new().route("/v1/auth", info);
    match issuer {
        Some(issuer) => router.merge(
            Router::new()
                .route("/v1/dev-token", post(mint))
                .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
                .with_state(Arc::new(issuer)),
        ),
        None => router,
    }
}

async fn mint(
    State(issuer): State<Arc<DevIssuer>>,
    body: Result<Json<MintRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(req)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "send a JSON body {\"user\":\"NAME\"}",
        );
    };
    match issuer.mint(&req.user, DEV_TOKEN_TTL) {
        Ok(minted) => ([(header::CACHE_CONTROL, "no-store")], Json(minted)).into_response(),
        Err(e @ MintError::InvalidUser) => {
            error(StatusCode::BAD_REQUEST, "invalid_name", &e.to_string())
        }
        Err(e) => {
            tracing::error!(error = %switchboard_runtime::report::chain(&e), "dev token");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "could not sign",
            )
        }
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": code, "message": message })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation, decode};

    #[test]
    fn minted_tokens_verify_with_the_secret_and_carry_the_name() {
        let secret = [7u8; 32];
        let issuer = DevIssuer::new(&secret, Some("dev".into()), None);
        let minted = issuer.mint("alice", Duration::from_secs(60)).expect("mint");
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&["dev"]);
        v.validate_aud = false;
        let data =
            decode::<serde_json::Value>(&minted.token, &DecodingKey::from_secret(&secret), &v)
                .expect("verifies");
        assert_eq!(data.claims["sub"], "alice");
        assert_eq!(data.claims["dev"], true);
    }

    #[test]
    fn invalid_names_get_no_token() {
        let issuer = DevIssuer::new(&[1u8; 32], None, None);
        for bad in ["", "a b", "-x", &"x".repeat(33)] {
            assert!(matches!(
                issuer.mint(bad, DEV_TOKEN_TTL),
                Err(MintError::InvalidUser)
            ));
        }
    }
}
