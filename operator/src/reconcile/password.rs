//! The secrets a ChatCluster's pods get — the Redis password and the token signing key: the operator
//! creates the Secret once (32 random bytes, hex) and never rotates it when it is its own (Managed
//! Redis; `spec.auth` jwt naming no key), and only reads it when it is the user's.
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

/// One Secret key the pods need: where it is, whether the operator makes it, and how to name it to a
/// person.
struct Wanted {
    reference: PasswordRef,
    /// Renders the Secret holding a generated value; `None` when the Secret is the user's.
    generate: Option<fn(&ChatCluster, &str) -> resources::Result<Secret>>,
    /// What the value is, in messages and events ("Redis password").
    what: &'static str,
    /// The spec field naming a user's Secret.
    field: &'static str,
    /// Shortest usable value in bytes (after a trailing newline).
    min_bytes: usize,
    /// Condition reasons: Secret missing, key missing or empty, value too short.
    reasons: [&'static str; 3],
    /// Reason of the event announcing a generated value.
    generated_event: &'static str,
}

/// The Redis password asked for (with managed Redis, the one in use follows it through
/// [`super::rotation`]): `Ok(Err(problem))` when the spec points at something missing.
pub(super) async fn resolve(
    cc: &ChatCluster,
    ctx: &Context,
    ns: &str,
) -> Result<Result<Option<String>, Problem>> {
    let Some(reference) = resources::wanted_password_ref(cc, &ctx.config.cluster_domain)? else {
        return Ok(Ok(None));
    };
    let wanted = Wanted {
        reference,
        generate: (cc.spec.redis.mode == RedisMode::Managed).then_some(resources::redis_secret),
        what: "Redis password",
        field: "spec.redis.external.passwordSecretRef",
        min_bytes: 1,
        reasons: [
            "PasswordSecretNotFound",
            "PasswordKeyMissing",
            "PasswordKeyMissing",
        ],
        generated_event: "PasswordGenerated",
    };
    resolve_key(cc, ctx, ns, &wanted).await
}

/// The HS256 token signing key chat-node verifies with (`None` with a JWKS URL or open identity):
/// generated once when `spec.auth` names no key, else the user's Secret, read and checked here so a
/// missing or short key is `Degraded` rather than chat-nodes that refuse to start.
pub(super) async fn resolve_hmac(
    cc: &ChatCluster,
    ctx: &Context,
    ns: &str,
) -> Result<Result<Option<String>, Problem>> {
    let Some(reference) = resources::hmac_key_ref(cc)? else {
        return Ok(Ok(None));
    };
    let wanted = Wanted {
        reference,
        generate: resources::generates_hmac_key(cc).then_some(resources::jwt_secret),
        what: "token signing key",
        field: "spec.auth.hmacSecretRef",
        // chat-node refuses a shorter HS256 secret.
        min_bytes: 32,
        reasons: ["AuthSecretNotFound", "AuthKeyMissing", "AuthKeyTooShort"],
        generated_event: "KeyGenerated",
    };
    resolve_key(cc, ctx, ns, &wanted).await
}

async fn resolve_key(
    cc: &ChatCluster,
    ctx: &Context,
    ns: &str,
    wanted: &Wanted,
) -> Result<Result<Option<String>, Problem>> {
    let reference = &wanted.reference;
    let mut found = read_password(&ctx.client, ns, reference).await?;
    if let (Some(render), Password::NoSecret) = (wanted.generate, &found) {
        match create(cc, ctx, ns, wanted, render).await? {
            Created::Yes(value) => return Ok(Ok(Some(value))),
            Created::Refused(problem) => return Ok(Err(problem)),
            // Created meanwhile (another reconcile): use that one, never overwrite it.
            Created::Exists => found = read_password(&ctx.client, ns, reference).await?,
        }
    }
    let (secret, key, what, field) = (&reference.secret, &reference.key, wanted.what, wanted.field);
    let [not_found, no_key, too_short] = wanted.reasons;
    let generated = wanted.generate.is_some();
    Ok(match found {
        Password::Value(v) if v.trim_end_matches(['\r', '\n']).len() >= wanted.min_bytes => {
            Ok(Some(v))
        }
        Password::NoSecret => Err(Problem {
            reason: not_found,
            message: format!(
                "Secret {ns}/{secret} named by {field} does not exist: create it with the key {key:?} holding the {what} (kubectl -n {ns} create secret generic {secret} --from-file={key}=PATH)"
            ),
        }),
        Password::Value(_) | Password::NoKey if generated => Err(Problem {
            reason: no_key,
            message: format!(
                "Secret {ns}/{secret} has no usable key {key:?}: delete the Secret and the operator generates a new {what} (the pods roll)"
            ),
        }),
        Password::Value(v) if !v.is_empty() => Err(Problem {
            reason: too_short,
            message: format!(
                "the {what} in Secret {ns}/{secret} key {key:?} (named by {field}) is shorter than {} bytes: put a longer one there (head -c 32 /dev/urandom | base64)",
                wanted.min_bytes
            ),
        }),
        Password::Value(_) | Password::NoKey => Err(Problem {
            reason: no_key,
            message: format!(
                "Secret {ns}/{secret} has no non-empty key {key:?} named by {field}: add the key or fix the reference"
            ),
        }),
    })
}

/// What creating a generated Secret came to.
enum Created {
    /// Created with this value.
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
    wanted: &Wanted,
    render: fn(&ChatCluster, &str) -> resources::Result<Secret>,
) -> Result<Created> {
    let reference = &wanted.reference;
    let value = generate_password().map_err(Error::Random)?;
    let secret = render(cc, &value)?;
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
                wanted.generated_event,
                format!(
                    "generated the {} in Secret {}",
                    wanted.what, reference.secret
                ),
            )
            .await;
            Ok(Created::Yes(value))
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
