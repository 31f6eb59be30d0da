//! The attachment store of `spec.attachments`: the credentials Secret is read once per reconcile — its
//! fingerprint rolls the chat-node pods when the key changes, and while the Secret or a key is missing
//! the pods run with attachments off rather than not start — and the bucket is probed with that key,
//! bounded to [`PROBE_TIMEOUT`] and alongside the rest of the reconcile, for the `AttachmentStoreReady`
//! condition.
//!
//! ```text
//! spec.attachments ─▶ Secret credentialsSecret
//!   ├─ absent / key missing or empty ─▶ hash None (store off) ─────────── CredentialsMissing
//!   └─ accessKeyId + secretAccessKey ─▶ hash (rolls chat-nodes) + probe task ──┐
//! render, apply, Redis steps, ... (never wait for the probe)                    │
//! status ◀── Reachable | AccessDenied | BucketMissing | StoreUnreachable ◀─ Store::probe, ≤ 5 s
//! ```
//!
//! Messages say what to fix in the operator's own words; they never carry the key, and never the
//! store's raw answer (request ids and timings would change the status on every reconcile, and every
//! status change is itself a reconcile). The raw answer goes to the operator's log, without the key.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use switchboard_attachments::store::{self, S3Config, Store};
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument, Span, info};

use super::{Error, Result};
use crate::context::Context;
use crate::crd::{AttachmentsSpec, ChatCluster};
use crate::resources::{self, S3_ACCESS_KEY_ID_KEY, S3_SECRET_ACCESS_KEY_KEY};

/// How long the probe of the bucket may take: a store that does not answer within it is
/// `StoreUnreachable` (the S3 client's own connect timeout is 5 s too).
pub(super) const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Condition reasons of `AttachmentStoreReady`.
pub mod reason {
    /// The bucket answered the probe with the Secret's key.
    pub const REACHABLE: &str = "Reachable";
    /// The credentials Secret or one of its keys is missing or empty.
    pub const CREDENTIALS_MISSING: &str = "CredentialsMissing";
    /// No answer: connection refused, host unknown, timed out, or a configuration the client refuses.
    pub const STORE_UNREACHABLE: &str = "StoreUnreachable";
    /// The store refused the key.
    pub const ACCESS_DENIED: &str = "AccessDenied";
    /// The bucket does not exist.
    pub const BUCKET_MISSING: &str = "BucketMissing";
}

/// The `AttachmentStoreReady` verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Outcome {
    /// The condition's status.
    pub(super) ready: bool,
    /// One of [`reason`].
    pub(super) reason: &'static str,
    /// What was found and what to fix.
    pub(super) message: String,
}

/// The store of one reconcile: the key's fingerprint for the renderer and the verdict under way.
pub(super) struct Check {
    /// Fingerprint of the key ([`resources::fingerprint`], salted with the ChatCluster's uid); `None`
    /// while the key is unavailable, which renders attachments off.
    pub(super) hash: Option<String>,
    verdict: Verdict,
}

enum Verdict {
    Known(Outcome),
    /// Aborted when the reconcile ends early (an error returned before the status).
    Probing(AbortOnDropHandle<Outcome>),
}

impl Check {
    /// Credentials Secret `ns`/`name` is not usable: `problem` says why.
    fn missing(ns: &str, name: &str, problem: &str) -> Self {
        Check {
            hash: None,
            verdict: Verdict::Known(Outcome {
                ready: false,
                reason: reason::CREDENTIALS_MISSING,
                message: format!(
                    "Secret {ns}/{name} named by spec.attachments.s3.credentialsSecret {problem}: give \
                     it the keys {S3_ACCESS_KEY_ID_KEY} and {S3_SECRET_ACCESS_KEY_KEY}; until then the \
                     chat-nodes run with attachments off"
                ),
            }),
        }
    }

    /// The verdict, once the probe has answered or timed out.
    pub(super) async fn outcome(self) -> Outcome {
        match self.verdict {
            Verdict::Known(outcome) => outcome,
            Verdict::Probing(task) => task.await.unwrap_or_else(|err| Outcome {
                ready: false,
                reason: reason::STORE_UNREACHABLE,
                message: format!("the probe of the attachment store stopped: {err}"),
            }),
        }
    }
}

/// Reads the credentials Secret of `cc` and starts the probe of its bucket; `None` without
/// `spec.attachments`. Only a failed read of the Secret is an error.
pub(super) async fn start(cc: &ChatCluster, ctx: &Context, ns: &str) -> Result<Option<Check>> {
    let Some(spec) = &cc.spec.attachments else {
        return Ok(None);
    };
    let name = &spec.s3.credentials_secret;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(Error::kube("get", "Secret", name))?;
    let key = match secret.as_ref().map(credentials) {
        Some(Ok(key)) => key,
        None => return Ok(Some(Check::missing(ns, name, "does not exist"))),
        Some(Err(key)) => {
            let problem = format!("has no key {key} (or it is empty or not text)");
            return Ok(Some(Check::missing(ns, name, &problem)));
        }
    };
    let hash = resources::fingerprint(&[
        cc.metadata.uid.as_deref().unwrap_or_default().as_bytes(),
        key.access_key_id.as_bytes(),
        key.secret_access_key.as_bytes(),
    ]);
    let secret_name = format!("{ns}/{name}");
    // In the reconcile's span, so its log lines name the ChatCluster.
    let task = tokio::spawn(probe(spec.clone(), key, secret_name).instrument(Span::current()));
    Ok(Some(Check {
        hash: Some(hash),
        verdict: Verdict::Probing(AbortOnDropHandle::new(task)),
    }))
}

/// The key in a credentials Secret.
struct Key {
    access_key_id: String,
    secret_access_key: String,
}

/// The key of `secret` as chat-node will read it from its environment (text, not blank, taken as it
/// is); `Err(name)` of the first key that is missing, empty or not UTF-8.
fn credentials(secret: &Secret) -> Result<Key, &'static str> {
    let data = secret.data.as_ref();
    let value = |key: &'static str| {
        data.and_then(|d| d.get(key))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .filter(|v| !v.trim().is_empty())
            .ok_or(key)
    };
    Ok(Key {
        access_key_id: value(S3_ACCESS_KEY_ID_KEY)?,
        secret_access_key: value(S3_SECRET_ACCESS_KEY_KEY)?,
    })
}

/// Probes the bucket of `spec` with `key` (at most [`PROBE_TIMEOUT`]).
async fn probe(spec: AttachmentsSpec, key: Key, secret: String) -> Outcome {
    let config = S3Config {
        bucket: spec.s3.bucket.clone(),
        endpoint: spec.s3.endpoint.clone(),
        region: spec.s3.region.clone().unwrap_or_default(),
        access_key_id: key.access_key_id.clone(),
        secret_access_key: key.secret_access_key.clone(),
    };
    let answer = match Store::s3(&config) {
        Ok(store) => tokio::time::timeout(PROBE_TIMEOUT, store.probe())
            .await
            .map_err(|_| Failure::TimedOut)
            .and_then(|r| r.map_err(Failure::Store)),
        Err(err) => Err(Failure::Store(err)),
    };
    let where_ = match &spec.s3.endpoint {
        Some(endpoint) => format!("the attachment store at {endpoint}"),
        None => format!(
            "AWS S3 ({})",
            spec.s3.region.as_deref().unwrap_or("us-east-1")
        ),
    };
    if let Err(failure) = &answer {
        let error = match failure {
            Failure::TimedOut => format!("no answer within {}s", PROBE_TIMEOUT.as_secs()),
            Failure::Store(err) => redact(&err.to_string(), &key),
        };
        info!(store = %where_, bucket = %config.bucket, %error, "attachment store probe failed");
    }
    judge(&config, &where_, &secret, &key, answer)
}

/// Why a probe failed.
#[derive(Debug)]
enum Failure {
    /// No answer within [`PROBE_TIMEOUT`].
    TimedOut,
    /// The store's (or the client's) error.
    Store(store::Error),
}

/// The verdict on `answer` from bucket `config.bucket` at `where_` with the key in Secret `secret`.
fn judge(
    config: &S3Config,
    where_: &str,
    secret: &str,
    key: &Key,
    answer: Result<(), Failure>,
) -> Outcome {
    let bucket = &config.bucket;
    let (reason, message) = match answer {
        Ok(()) => {
            return Outcome {
                ready: true,
                reason: reason::REACHABLE,
                message: format!(
                    "bucket {bucket} on {where_} answers with the key in Secret {secret}"
                ),
            };
        }
        Err(Failure::Store(store::Error::AccessDenied(text))) => {
            let why = if text.contains("InvalidAccessKeyId") {
                " (it knows no such access key id)"
            } else if text.contains("SignatureDoesNotMatch") {
                " (the secret access key does not belong to the access key id)"
            } else {
                ""
            };
            let padded = [&key.access_key_id, &key.secret_access_key]
                .iter()
                .any(|v| v.trim() != v.as_str());
            let hint = if padded {
                " — a value there begins or ends with white space (a trailing newline?), which is \
                 sent as part of the key"
            } else {
                ""
            };
            (
                reason::ACCESS_DENIED,
                format!(
                    "{where_} refused the key in Secret {secret} for bucket {bucket}{why}: check \
                     {S3_ACCESS_KEY_ID_KEY} and {S3_SECRET_ACCESS_KEY_KEY}{hint}, and that the key may \
                     list, read, write and delete objects (and run multipart uploads) in the bucket"
                ),
            )
        }
        Err(Failure::Store(store::Error::BucketMissing(_))) => (
            reason::BUCKET_MISSING,
            format!(
                "bucket {bucket} does not exist on {where_}: create it, or name an existing one in \
                 spec.attachments.s3.bucket"
            ),
        ),
        Err(Failure::TimedOut) => (
            reason::STORE_UNREACHABLE,
            format!(
                "{where_} did not answer within {}s: check spec.attachments.s3.endpoint and that the \
                 operator and the chat-nodes can reach it; chat goes on, uploads fail until it answers",
                PROBE_TIMEOUT.as_secs()
            ),
        ),
        Err(Failure::Store(err)) => {
            let text = match err {
                store::Error::Unavailable(text) => text,
                other => other.to_string(),
            };
            let lower = text.to_ascii_lowercase();
            let why = if text.contains("S3 configuration") {
                format!(
                    " (the S3 client refuses these settings: {})",
                    redact(&text, key)
                )
            } else if lower.contains("connection refused") {
                " (connection refused)".to_owned()
            } else if lower.contains("dns error") || lower.contains("failed to lookup") {
                " (its host name does not resolve)".to_owned()
            } else if lower.contains("error sending request") {
                // What the S3 client says of a refused connection and an unknown host alike.
                " (no connection could be made)".to_owned()
            } else {
                " (see the operator's log for its answer)".to_owned()
            };
            (
                reason::STORE_UNREACHABLE,
                format!(
                    "{where_} cannot be used{why}: check spec.attachments.s3.endpoint and that the \
                     operator and the chat-nodes can reach it; chat goes on, uploads fail until it \
                     answers"
                ),
            )
        }
    };
    Outcome {
        ready: false,
        reason,
        message,
    }
}

/// `text` with the key's parts replaced by `***`, and at most 300 characters of it.
fn redact(text: &str, key: &Key) -> String {
    let mut text = text.to_owned();
    for part in [&key.secret_access_key, &key.access_key_id] {
        let part = part.trim();
        if !part.is_empty() {
            text = text.replace(part, "***");
        }
    }
    text.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    fn secret(pairs: &[(&str, &[u8])]) -> Secret {
        Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Secret::default()
        }
    }

    fn key() -> Key {
        Key {
            access_key_id: "AKIDEXAMPLE".to_owned(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG".to_owned(),
        }
    }

    fn config() -> S3Config {
        S3Config {
            bucket: "chat-files".to_owned(),
            endpoint: Some("http://minio.storage:9000".to_owned()),
            ..S3Config::default()
        }
    }

    fn verdict(answer: Result<(), Failure>) -> Outcome {
        judge(
            &config(),
            "the attachment store at http://minio.storage:9000",
            "chat/chat-s3",
            &key(),
            answer,
        )
    }

    #[test]
    fn a_secret_yields_the_key_as_chat_node_reads_it_or_names_the_first_key_missing() {
        let both = secret(&[("accessKeyId", b"AK"), ("secretAccessKey", b"SK\n")]);
        let Ok(key) = credentials(&both) else {
            panic!("both keys are there")
        };
        // Taken as it is: chat-node reads its environment untrimmed, and the probe must see what it sees.
        assert_eq!(
            (key.access_key_id.as_str(), key.secret_access_key.as_str()),
            ("AK", "SK\n")
        );
        assert_eq!(
            credentials(&secret(&[("secretAccessKey", b"SK")])).err(),
            Some("accessKeyId")
        );
        assert_eq!(
            credentials(&secret(&[
                ("accessKeyId", b"AK"),
                ("secretAccessKey", b" \n")
            ]))
            .err(),
            Some("secretAccessKey")
        );
        assert_eq!(
            credentials(&secret(&[
                ("accessKeyId", &[0xff, 0xfe]),
                ("secretAccessKey", b"SK")
            ]))
            .err(),
            Some("accessKeyId")
        );
        assert_eq!(credentials(&Secret::default()).err(), Some("accessKeyId"));
    }

    #[test]
    fn each_store_answer_has_its_reason_and_a_message_that_says_what_to_fix() {
        let ok = verdict(Ok(()));
        assert!(ok.ready);
        assert_eq!(ok.reason, "Reachable");
        let cases = [
            (
                Failure::Store(store::Error::AccessDenied(
                    "403 Forbidden: <Code>SignatureDoesNotMatch</Code>".to_owned(),
                )),
                "AccessDenied",
                "does not belong to the access key id",
            ),
            (
                Failure::Store(store::Error::AccessDenied(
                    "<Code>InvalidAccessKeyId</Code>".to_owned(),
                )),
                "AccessDenied",
                "no such access key id",
            ),
            (
                Failure::Store(store::Error::BucketMissing("NoSuchBucket".to_owned())),
                "BucketMissing",
                "bucket chat-files does not exist",
            ),
            (Failure::TimedOut, "StoreUnreachable", "within 5s"),
            (
                Failure::Store(store::Error::Unavailable(
                    "error sending request: tcp connect error: Connection refused (os error 111)"
                        .to_owned(),
                )),
                "StoreUnreachable",
                "(connection refused)",
            ),
            (
                Failure::Store(store::Error::Unavailable(
                    "Generic S3 error: Error performing list request: ... after 2 retries, \
                     max_retries: 2, retry_timeout: 10s  - HTTP error: error sending request"
                        .to_owned(),
                )),
                "StoreUnreachable",
                "(no connection could be made)",
            ),
            (
                Failure::Store(store::Error::Unavailable(
                    "S3 configuration: Unable to parse url".to_owned(),
                )),
                "StoreUnreachable",
                "refuses these settings: S3 configuration: Unable to parse url",
            ),
        ];
        for (failure, reason, says) in cases {
            let seen = format!("{failure:?}");
            let o = verdict(Err(failure));
            assert!(!o.ready, "{seen}");
            assert_eq!(o.reason, reason, "{seen}");
            assert!(o.message.contains(says), "{seen}: {}", o.message);
            assert!(o.message.contains("chat-files") || o.message.contains("minio"));
        }
    }

    #[test]
    fn messages_never_carry_the_key_nor_the_stores_changing_words() {
        let k = key();
        let answers = [
            store::Error::AccessDenied(format!(
                "<Code>InvalidAccessKeyId</Code><AWSAccessKeyId>{}</AWSAccessKeyId><RequestId>17A9</RequestId>",
                k.access_key_id
            )),
            store::Error::Unavailable(format!(
                "S3 configuration: bad key {} {}",
                k.access_key_id, k.secret_access_key
            )),
            store::Error::Unavailable("Error after 2 retries in 4.1s: RequestId 17A9".to_owned()),
        ];
        for answer in answers {
            let o = verdict(Err(Failure::Store(answer)));
            for secret in [&k.access_key_id, &k.secret_access_key] {
                assert!(!o.message.contains(secret.as_str()), "{}", o.message);
            }
            assert!(!o.message.contains("17A9"), "{}", o.message);
        }
        // A key padded with white space is named as the likely cause, without showing it.
        let padded = Key {
            secret_access_key: "secret\n".to_owned(),
            ..key()
        };
        let o = judge(
            &config(),
            "store",
            "chat/chat-s3",
            &padded,
            Err(Failure::Store(store::Error::AccessDenied(String::new()))),
        );
        assert!(o.message.contains("trailing newline"), "{}", o.message);
        assert!(!o.message.contains("secret\n"));
    }
}
