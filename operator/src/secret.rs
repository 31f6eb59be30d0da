//! The Redis password Secret, read in one place for both controllers.
//!
//! ```text
//! resources::redis_endpoint(cc).password ── PasswordRef { secret, key }
//!   └─▶ read_password ─▶ Password::Value | NoSecret | NoKey
//!         ├─ reconcile:    creates the managed Secret when absent; NoSecret / NoKey ─▶ Degraded
//!         └─ loadset_sync: the password of its Redis connection; NoSecret / NoKey ─▶ config error
//! ```
//!
//! Only the Secret's data is read here; what a missing Secret or key means is for each caller to say.

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;

use crate::resources::PasswordRef;

/// What the password Secret holds.
#[derive(Clone, PartialEq, Eq)]
pub enum Password {
    /// The value of the key (possibly empty; the caller decides whether that is a password).
    Value(String),
    /// The Secret does not exist.
    NoSecret,
    /// The Secret exists but has no such key.
    NoKey,
}

impl std::fmt::Debug for Password {
    /// Never prints the password itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Password::Value(v) if v.is_empty() => f.write_str("Value(\"\")"),
            Password::Value(_) => f.write_str("Value(***)"),
            Password::NoSecret => f.write_str("NoSecret"),
            Password::NoKey => f.write_str("NoKey"),
        }
    }
}

/// The API server did not answer the read of a password Secret.
#[derive(Debug, thiserror::Error)]
#[error("get Secret {namespace}/{name}")]
pub struct ReadError {
    /// Namespace of the Secret.
    pub namespace: String,
    /// Name of the Secret.
    pub name: String,
    /// The client error.
    #[source]
    pub source: kube::Error,
}

/// Reads the password `reference` names, in namespace `ns`.
pub async fn read_password(
    client: &Client,
    ns: &str,
    reference: &PasswordRef,
) -> Result<Password, ReadError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = secrets
        .get_opt(&reference.secret)
        .await
        .map_err(|source| ReadError {
            namespace: ns.to_owned(),
            name: reference.secret.clone(),
            source,
        })?;
    Ok(match secret {
        Some(secret) => password_of(&secret, &reference.key),
        None => Password::NoSecret,
    })
}

/// The value of `key` in `secret`.
fn password_of(secret: &Secret, key: &str) -> Password {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map_or(Password::NoKey, |b| {
            Password::Value(String::from_utf8_lossy(&b.0).into_owned())
        })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    #[test]
    fn a_secret_yields_its_key_or_says_the_key_is_missing() {
        let secret = Secret {
            data: Some(BTreeMap::from([
                ("password".to_owned(), ByteString(b"s3cret".to_vec())),
                ("empty".to_owned(), ByteString(Vec::new())),
            ])),
            ..Secret::default()
        };
        assert_eq!(
            password_of(&secret, "password"),
            Password::Value("s3cret".to_owned())
        );
        assert_eq!(
            password_of(&secret, "empty"),
            Password::Value(String::new())
        );
        assert_eq!(password_of(&secret, "other"), Password::NoKey);
        assert_eq!(password_of(&Secret::default(), "password"), Password::NoKey);
    }

    #[test]
    fn the_debug_form_never_shows_the_password() {
        let shown = format!("{:?}", Password::Value("s3cret".to_owned()));
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
