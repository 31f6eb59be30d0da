//! The Redis password a ChatCluster's pods get: in Managed mode the operator creates the Secret once
//! (32 random bytes, hex) and never rotates it; in External mode the Secret is the user's and is only read.
//!
//! ```text
//! redis_endpoint(cc).password ─▶ secret::read_password
//!   ├─ Value (non-empty) ─────────────▶ Some(password)  (its fingerprint rolls the pods on change)
//!   ├─ NoSecret, Managed ─▶ create ───▶ Some(new)  + PasswordGenerated event
//!   │                        └ exists meanwhile ─▶ read again, never overwrite
//!   └─ NoSecret / NoKey / empty ─────▶ Problem (Degraded, says how to fix it)
//! ```

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::runtime::events::EventType;

use super::{Error, Problem, Result};
use crate::context::{Context, FIELD_MANAGER};
use crate::crd::{ChatCluster, RedisMode};
use crate::resources::{self, PasswordRef};
use crate::secret::{Password, read_password};

/// The Redis password in use: `Ok(Err(problem))` when the spec points at something missing.
pub(super) async fn resolve(
    cc: &ChatCluster,
    ctx: &Context,
    ns: &str,
) -> Result<Result<Option<String>, Problem>> {
    let endpoint = resources::redis_endpoint(cc, &ctx.config.cluster_domain)?;
    let Some(reference) = endpoint.password else {
        return Ok(Ok(None));
    };
    let managed = cc.spec.redis.mode == RedisMode::Managed;
    let mut found = read_password(&ctx.client, ns, &reference).await?;
    if managed && found == Password::NoSecret {
        match create(cc, ctx, ns, &reference).await? {
            Created::Yes(password) => return Ok(Ok(Some(password))),
            Created::Refused(problem) => return Ok(Err(problem)),
            // Created meanwhile (another reconcile): use that one, never overwrite it.
            Created::Exists => found = read_password(&ctx.client, ns, &reference).await?,
        }
    }
    Ok(match found {
        Password::Value(v) if !v.is_empty() => Ok(Some(v)),
        Password::NoSecret => Err(Problem {
            reason: "PasswordSecretNotFound",
            message: format!(
                "Secret {ns}/{} named by spec.redis.external.passwordSecretRef does not exist: create it with the key {:?} (kubectl -n {ns} create secret generic {} --from-literal={}=PASSWORD)",
                reference.secret, reference.key, reference.secret, reference.key
            ),
        }),
        Password::Value(_) | Password::NoKey if managed => Err(Problem {
            reason: "PasswordKeyMissing",
            message: format!(
                "Secret {ns}/{} has no non-empty key {:?}: delete the Secret and the operator generates a new password (the Redis and chat pods roll)",
                reference.secret, reference.key
            ),
        }),
        Password::Value(_) | Password::NoKey => Err(Problem {
            reason: "PasswordKeyMissing",
            message: format!(
                "Secret {ns}/{} has no non-empty key {:?} named by spec.redis.external.passwordSecretRef: add the key or fix the reference",
                reference.secret, reference.key
            ),
        }),
    })
}

/// What creating the managed password Secret came to.
enum Created {
    /// Created with this password.
    Yes(String),
    /// Someone created it first.
    Exists,
    /// The API server refused it because of a spec value.
    Refused(Problem),
}

async fn create(
    cc: &ChatCluster,
    ctx: &Context,
    ns: &str,
    reference: &PasswordRef,
) -> Result<Created> {
    let password = generate_password().map_err(Error::Random)?;
    let secret = resources::redis_secret(cc, &password)?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    match secrets.create(&pp, &secret).await {
        Ok(_) => {
            ctx.event(
                cc,
                EventType::Normal,
                "PasswordGenerated",
                format!(
                    "generated the Redis password in Secret {}",
                    reference.secret
                ),
            )
            .await;
            Ok(Created::Yes(password))
        }
        Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(Created::Exists),
        Err(kube::Error::Api(s)) if s.is_invalid() || s.code == 422 => {
            Ok(Created::Refused(Problem {
                reason: "InvalidSpec",
                message: format!(
                    "the API server refused Secret {}: {} — fix the ChatCluster spec",
                    reference.secret, s.message
                ),
            }))
        }
        Err(source) => Err(Error::kube("create", "Secret", &reference.secret)(source)),
    }
}

/// 32 bytes from the kernel's CSPRNG, hex encoded (safe in redis.conf and URLs).
fn generate_password() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_password_is_64_hex_digits_and_never_repeats() {
        let a = generate_password().expect("random bytes");
        let b = generate_password().expect("random bytes");
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b);
    }
}
