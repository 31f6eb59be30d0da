//! Identity: the handshake step that decides who a connection is, in the node's [`Authenticator`]
//! mode.
//!
//! ```text
//!  open mode:  ?user=NAME ───────────────────────────────▶ Identity
//!              (no ?user=) ─▶ first frame hello {user} ──▶ Identity
//!  jwt mode:   ?user=NAME ──▶ refused (4001): a name in a URL proves nothing
//!              first frame hello {token} ─▶ verify ──────▶ Identity { user = sub, expires_at, rooms }
//! ```
//!
//! Every refusal carries its close code, a static reason and the `reason` label it is counted under.

use crate::auth::{Authenticator, Refused};
use crate::names::valid_user;
use crate::protocol::{ClientFrame, close, parse};
use std::net::SocketAddr;
use std::time::SystemTime;

/// Who a connection is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// User name.
    pub user: String,
    /// Last direct-message sequence the client saw, if it said.
    pub dm_since: Option<u64>,
    /// When the session's token expires; `None` in open mode.
    pub expires_at: Option<SystemTime>,
    /// Private rooms the token grants.
    pub rooms: Vec<String>,
}

/// Why identity failed: a close code, a reason, and the refusal counter's label.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Rejected {
    /// WebSocket close code.
    pub code: u16,
    /// Close reason (at most 123 bytes, as WebSocket requires).
    pub reason: &'static str,
    /// `reason` label of `switchboard_refusals_total`.
    pub metric: &'static str,
}

impl From<Refused> for Rejected {
    fn from(r: Refused) -> Self {
        Rejected {
            code: r.close_code(),
            reason: r.reason(),
            metric: r.metric_reason(),
        }
    }
}

/// What the handshake carried.
#[derive(Clone, Debug, Default)]
pub struct Handshake {
    /// `?user=`.
    pub user: Option<String>,
    /// `?dm_since=`.
    pub dm_since: Option<u64>,
    /// The client's address, for refusal logs.
    pub peer: Option<SocketAddr>,
}

/// Whether identity is complete after the handshake, or the first frame is needed.
#[derive(Debug)]
pub enum Step {
    /// Identified.
    Done(Identity),
    /// Wait for the first frame and pass it to [`identify_hello`].
    NeedHello,
}

/// First step: the query string (open mode only).
pub fn identify(auth: &Authenticator, h: &Handshake) -> Result<Step, Rejected> {
    match &h.user {
        Some(_) if !auth.is_open() => Err(Rejected {
            code: close::INVALID_IDENTITY,
            reason: "this node requires a token in the hello frame; ?user= is only accepted in open mode",
            metric: "auth_missing",
        }),
        Some(u) if valid_user(u) => Ok(Step::Done(Identity {
            user: u.clone(),
            dm_since: h.dm_since,
            expires_at: None,
            rooms: Vec::new(),
        })),
        Some(_) => Err(bad_name()),
        None => Ok(Step::NeedHello),
    }
}

/// Second step: the first frame must be `hello` — with a valid `user` in open mode, with a token
/// that verifies in token mode (a `user` given next to it must equal the token's `sub`).
pub async fn identify_hello(auth: &Authenticator, text: &str) -> Result<Identity, Rejected> {
    let Ok((
        ClientFrame::Hello {
            user,
            token,
            dm_since,
        },
        _,
    )) = parse(text)
    else {
        return Err(Rejected {
            code: close::INVALID_IDENTITY,
            reason: if auth.is_open() {
                "the first frame must be hello with a user name (or connect with ?user=NAME)"
            } else {
                "the first frame must be hello with a token"
            },
            metric: "identity",
        });
    };
    if auth.is_open() {
        return match user {
            Some(user) if valid_user(&user) => Ok(Identity {
                user,
                dm_since,
                expires_at: None,
                rooms: Vec::new(),
            }),
            _ => Err(bad_name()),
        };
    }
    let token = token.ok_or(Refused::Missing)?;
    let verified = auth.verify(&token).await?;
    if user.is_some_and(|u| u != verified.user) {
        return Err(Rejected {
            code: close::INVALID_IDENTITY,
            reason: "hello user does not match the token's sub",
            metric: "auth_invalid",
        });
    }
    Ok(Identity {
        user: verified.user,
        dm_since,
        expires_at: verified.expires_at,
        rooms: verified.rooms,
    })
}

fn bad_name() -> Rejected {
    Rejected {
        code: close::INVALID_IDENTITY,
        reason: "invalid user name: 1-32 of A-Z a-z 0-9 _ . -, starting with a letter or digit",
        metric: "identity",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(user: &str) -> Handshake {
        Handshake {
            user: Some(user.into()),
            dm_since: Some(3),
            peer: None,
        }
    }

    #[test]
    fn query_user_is_validated_in_open_mode() {
        let open = Authenticator::Open;
        assert!(
            matches!(identify(&open, &query("alice")), Ok(Step::Done(Identity { ref user, dm_since: Some(3), .. })) if user == "alice")
        );
        assert_eq!(
            identify(&open, &query("a b")).err().map(|r| r.code),
            Some(close::INVALID_IDENTITY)
        );
        assert!(matches!(
            identify(&open, &Handshake::default()),
            Ok(Step::NeedHello)
        ));
    }

    #[test]
    fn query_user_is_refused_in_token_mode() {
        let jwt = Authenticator::hmac(&[9u8; 32]);
        let refused = identify(&jwt, &query("alice")).expect_err("refused");
        assert_eq!(refused.code, close::INVALID_IDENTITY);
        assert!(refused.reason.contains("token"));
    }

    #[tokio::test]
    async fn hello_frame_identifies_in_open_mode() {
        let open = Authenticator::Open;
        assert_eq!(
            identify_hello(&open, r#"{"type":"hello","user":"bob"}"#)
                .await
                .map(|i| i.user),
            Ok("bob".into())
        );
        for bad in [
            r#"{"type":"join","room":"x"}"#,
            r#"{"type":"hello","user":""}"#,
            r#"{"type":"hello","token":"x"}"#,
            "garbage",
        ] {
            assert!(identify_hello(&open, bad).await.is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_hello_without_a_token_is_refused_in_token_mode() {
        let jwt = Authenticator::hmac(&[9u8; 32]);
        let refused = identify_hello(&jwt, r#"{"type":"hello","user":"alice"}"#)
            .await
            .expect_err("refused");
        assert_eq!(refused, Rejected::from(Refused::Missing));
    }
}
