//! Identity: the one pluggable step of the handshake.
//!
//! Open mode takes a validated user name from `?user=` or from a first `hello` frame. A signed-token
//! check (JWT, shared secret, allowed origins) replaces [`identify`] without touching sessions or rooms.

use crate::names::valid_user;
use crate::protocol::{ClientFrame, close, parse};

/// Who a connection is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// User name.
    pub user: String,
    /// Last direct-message sequence the client saw, if it said.
    pub dm_since: Option<u64>,
}

/// Why identity failed: a close code and reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Rejected {
    /// WebSocket close code.
    pub code: u16,
    /// Close reason (at most 123 bytes, as WebSocket requires).
    pub reason: &'static str,
}

/// What the handshake carried.
#[derive(Clone, Debug, Default)]
pub struct Handshake {
    /// `?user=`.
    pub user: Option<String>,
    /// `?dm_since=`.
    pub dm_since: Option<u64>,
}

/// Whether identity is complete after the handshake, or the first frame is needed.
pub enum Step {
    /// Identified.
    Done(Identity),
    /// Wait for the first frame and pass it to [`identify_hello`].
    NeedHello,
}

/// Open mode, first step: the query string.
pub fn identify(h: &Handshake) -> Result<Step, Rejected> {
    match &h.user {
        Some(u) if valid_user(u) => Ok(Step::Done(Identity {
            user: u.clone(),
            dm_since: h.dm_since,
        })),
        Some(_) => Err(bad_name()),
        None => Ok(Step::NeedHello),
    }
}

/// Open mode, second step: the first frame must be `hello`.
pub fn identify_hello(text: &str) -> Result<Identity, Rejected> {
    match parse(text) {
        Ok((ClientFrame::Hello { user, dm_since }, _)) if valid_user(&user) => {
            Ok(Identity { user, dm_since })
        }
        Ok((ClientFrame::Hello { .. }, _)) => Err(bad_name()),
        _ => Err(Rejected {
            code: close::INVALID_IDENTITY,
            reason: "the first frame must be hello with a user name (or connect with ?user=NAME)",
        }),
    }
}

fn bad_name() -> Rejected {
    Rejected {
        code: close::INVALID_IDENTITY,
        reason: "invalid user name: 1-32 of A-Z a-z 0-9 _ . -, starting with a letter or digit",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_user_is_validated() {
        let h = Handshake {
            user: Some("alice".into()),
            dm_since: Some(3),
        };
        assert!(
            matches!(identify(&h), Ok(Step::Done(Identity { ref user, dm_since: Some(3) })) if user == "alice")
        );
        let bad = Handshake {
            user: Some("a b".into()),
            dm_since: None,
        };
        assert_eq!(
            identify(&bad).err().map(|r| r.code),
            Some(close::INVALID_IDENTITY)
        );
        assert!(matches!(
            identify(&Handshake::default()),
            Ok(Step::NeedHello)
        ));
    }

    #[test]
    fn hello_frame_identifies() {
        assert_eq!(
            identify_hello(r#"{"type":"hello","user":"bob"}"#).map(|i| i.user),
            Ok("bob".into())
        );
        assert!(identify_hello(r#"{"type":"join","room":"x"}"#).is_err());
        assert!(identify_hello(r#"{"type":"hello","user":""}"#).is_err());
        assert!(identify_hello("garbage").is_err());
    }
}
