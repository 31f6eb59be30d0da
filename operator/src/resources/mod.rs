//! Pure rendering of every object a `ChatCluster` owns. No I/O: the reconciler applies what these
//! functions return, and the tests read them field by field. Objects are written as JSON and converted
//! to the typed k8s-openapi structs; the conversion is checked to lose nothing (a misspelled field is an
//! [`Error::Lossy`], not a silently missing setting).
//!
//! ```text
//! ChatCluster demo ──render()──▶ Desired
//!   Redis (Managed):  ConfigMap demo-redis-scripts (redis.sh, sentinel.sh, handover.sh: the data
//!                     pods' preStop, a master hands its role over before it stops)
//!                     Service demo-redis-headless, StatefulSet demo-redis      (data nodes)
//!                     Service demo-sentinel-headless, StatefulSet demo-sentinel (sentinels)
//!                     Secret demo-redis-auth  ── redis_secret(), rendered only when absent
//!   identity:         Secret demo-jwt ── jwt_secret(), rendered only when absent (spec.auth jwt, no key)
//!   chat-node:        Deployment + Service demo-node (its EndpointSlices feed the load set); with
//!                     spec.attachments its S3 bucket, key (secretKeyRef) and limits, else attachments off
//!   registry:         Deployment + Service demo-registry (type and port from the spec)
//!   PodDisruptionBudgets for every workload; NetworkPolicies (Redis/Sentinel: own pods and the operator
//!   only; chat-node/registry: their serving port, and the metrics port from the metrics namespaces);
//!   owner reference (controller) on everything
//! ```
//!
//! Labels: `app.kubernetes.io/{name=switchboard, instance=<cluster>, component, managed-by}` on every
//! object; selectors use name + instance + component, so they agree with the pod template labels and two
//! chat systems in one namespace never select each other's pods. A hash of the Redis password in use (for
//! chat-node also of the token signing key and the attachment store's key) is a pod-template annotation
//! of chat-node and registry, so a change rolls them; Redis and sentinel templates carry only a hash of
//! their start script (a password rotation is applied to the running servers, `reconcile::rotation`).
//!
//! Secrets never appear in an environment value or an argument: passwords and the S3 key come through
//! `secretKeyRef` and the token signing key is a read-only Secret volume whose path chat-node is given
//! (`SWITCHBOARD_JWT_HMAC_SECRET_FILE`). Data nodes and sentinels also get the password in use as a
//! read-only file of the applied Secret (`/auth/password`): their probes and stop hook read it there,
//! since a rotation changes it without restarting them.

mod names;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub use names::Names;
/// The environment variables chat-node reads the S3 key from (never flags: a command line is public).
pub use switchboard_attachments::config::{ENV_ACCESS_KEY_ID, ENV_SECRET_ACCESS_KEY};

use crate::crd::{AuthMode, ChatCluster, ExternalRedis, ManagedRedis, RedisMode};

/// `app.kubernetes.io/name` of every object.
pub const APP_NAME: &str = "switchboard";
/// `app.kubernetes.io/managed-by` of every object.
pub const MANAGED_BY: &str = "switchboard-operator";
/// Label keys.
pub mod label {
    /// `app.kubernetes.io/name`.
    pub const NAME: &str = "app.kubernetes.io/name";
    /// `app.kubernetes.io/instance`: the ChatCluster's name.
    pub const INSTANCE: &str = "app.kubernetes.io/instance";
    /// `app.kubernetes.io/component`.
    pub const COMPONENT: &str = "app.kubernetes.io/component";
    /// `app.kubernetes.io/managed-by`.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
}
/// Pod-template annotation carrying the configuration hash (a change rolls the pods).
pub const CONFIG_HASH_ANNOTATION: &str = "switchboard.dev/config-hash";
/// Key of the generated password in the managed Redis Secret.
pub const PASSWORD_KEY: &str = "password";
/// Key of the space-separated passwords the managed Redis servers accept, in the applied Secret.
pub const PASSWORDS_KEY: &str = "passwords";
/// Key of the generated token signing key in the `<name>-jwt` Secret.
pub const JWT_KEY: &str = "hmac";
/// Key of the S3 access key id in the attachments credentials Secret (the file name chat-node reads
/// from a mounted Secret directory too).
pub const S3_ACCESS_KEY_ID_KEY: &str = switchboard_attachments::config::ACCESS_KEY_FILE;
/// Key of the S3 secret access key in the attachments credentials Secret.
pub const S3_SECRET_ACCESS_KEY_KEY: &str = switchboard_attachments::config::SECRET_KEY_FILE;
/// chat-node's attachment store: `s3://BUCKET` or `off` (the `env` of its `--attachments-store`).
pub const ENV_ATTACHMENTS_STORE: &str = "SWITCHBOARD_ATTACHMENTS_STORE";
/// Directory the token signing key Secret is mounted at in chat-node pods.
pub const JWT_MOUNT_DIR: &str = "/var/run/switchboard/jwt";
/// Port chat-node listens on (WebSocket, health, metrics).
pub const NODE_PORT: i32 = 8080;
/// Port the registry listens on.
pub const REGISTRY_PORT: i32 = 8081;
/// Redis data-node port.
pub const REDIS_PORT: i32 = 6379;
/// Port of chat-node's and registry's `/metrics` (`--metrics-listen`), named `metrics` in their pods.
pub const METRICS_PORT: i32 = 9090;
/// Sentinel port.
pub const SENTINEL_PORT: i32 = 26379;
/// Seconds a terminating chat-node keeps running before SIGTERM, so the EndpointSlice change (and with it
/// the load-set removal) reaches every watcher before the node starts to drain.
pub const PRE_STOP_SLEEP_SECONDS: i64 = 5;

/// The data-node start script: `common.sh`, then `redis.sh`.
pub const REDIS_SCRIPT: &str = concat!(include_str!("common.sh"), include_str!("redis.sh"));
/// The sentinel start script: `common.sh`, then `sentinel.sh`.
pub const SENTINEL_SCRIPT: &str = concat!(include_str!("common.sh"), include_str!("sentinel.sh"));
/// The data node's stop hook (its pod's `preStop`): `common.sh`, then `handover.sh`, which hands the
/// master role over before the master's pod stops.
pub const HANDOVER_SCRIPT: &str = concat!(include_str!("common.sh"), include_str!("handover.sh"));
/// Seconds a data pod gets to stop: the hand-over (`handover.sh`: at most 5 s for the replicas to catch
/// up and 15 s for the sentinels to agree, plus the calls) and Redis's own shutdown.
pub const REDIS_TERMINATION_GRACE_SECONDS: i64 = 60;
// The hand-over's bounds (5 s catch-up, 5 s of asking the sentinels, 15 s agreement) and its calls (3 s
// each at most) fit in it.
const _: () = assert!(REDIS_TERMINATION_GRACE_SECONDS >= 5 + 5 + 15 + 20);

/// Components of a chat system (the `app.kubernetes.io/component` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Component {
    /// Socket servers.
    ChatNode,
    /// Placement service.
    Registry,
    /// Redis data nodes.
    Redis,
    /// Redis sentinels.
    Sentinel,
}

impl Component {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Component::ChatNode => "chat-node",
            Component::Registry => "registry",
            Component::Redis => "redis",
            Component::Sentinel => "sentinel",
        }
    }
}

/// Errors of rendering.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ChatCluster lacks a name, namespace or uid (it was not read from the API server).
    #[error("ChatCluster has no {0}: only objects read from the API server can be rendered")]
    MissingMetadata(&'static str),
    /// A rendered field is not part of its Kubernetes type and would have been dropped (a bug in this
    /// module: a misspelled or misplaced field).
    #[error("rendering {kind}: the field {path} is not part of the Kubernetes type")]
    Lossy {
        /// The kind being rendered.
        kind: &'static str,
        /// JSON path of the field, e.g. `.spec.template.spec.containers[0].readinesProbe`.
        path: String,
    },
    /// An object did not match its Kubernetes type (a bug in this module).
    #[error("rendering {kind}")]
    Shape {
        /// The kind being rendered.
        kind: &'static str,
        /// Why it did not deserialize.
        #[source]
        source: serde_json::Error,
    },
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the renderer needs besides the ChatCluster.
#[derive(Clone, Debug)]
pub struct RenderContext {
    /// Cluster DNS domain (`cluster.local` on most clusters), used in the stable Redis hostnames.
    pub cluster_domain: String,
    /// Fingerprint of the Redis password in use ([`fingerprint`]); `None` when there is no password.
    pub password_hash: Option<String>,
    /// Fingerprint of the token signing key in use ([`fingerprint`]); `None` without an HMAC key.
    pub auth_hash: Option<String>,
    /// Fingerprint of the managed Redis TLS Secret's content; `None` without managed TLS.
    pub redis_tls_hash: Option<String>,
    /// Fingerprint of the attachment store's key ([`fingerprint`]); `None` without `spec.attachments`
    /// or while its credentials Secret lacks a key — chat-nodes then run with attachments off.
    pub attachments_hash: Option<String>,
}

impl Default for RenderContext {
    fn default() -> Self {
        Self {
            cluster_domain: "cluster.local".to_owned(),
            password_hash: None,
            auth_hash: None,
            redis_tls_hash: None,
            attachments_hash: None,
        }
    }
}

/// Every object of a ChatCluster except the password Secret (see [`redis_secret`]).
#[derive(Clone, Debug, Default)]
pub struct Desired {
    /// Start scripts of managed Redis (empty in External mode).
    pub config_maps: Vec<ConfigMap>,
    /// Headless Redis/Sentinel Services, the chat-node Service and the registry Service.
    pub services: Vec<Service>,
    /// Redis data nodes and sentinels (empty in External mode).
    pub stateful_sets: Vec<StatefulSet>,
    /// chat-node and registry.
    pub deployments: Vec<Deployment>,
    /// One per workload.
    pub pdbs: Vec<PodDisruptionBudget>,
    /// One per component, unless `spec.networkPolicy.enabled` is false.
    pub network_policies: Vec<NetworkPolicy>,
}

/// Where the password of Redis comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswordRef {
    /// Secret name (in the ChatCluster's namespace).
    pub secret: String,
    /// Key in the Secret.
    pub key: String,
}

/// How chat-node, registry and the operator reach this chat system's Redis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisEndpoint {
    /// A Redis URL (external only).
    pub url: Option<String>,
    /// Sentinel `host:port` addresses.
    pub sentinels: Vec<String>,
    /// Master name the sentinels monitor.
    pub master_name: String,
    /// The password, when there is one.
    pub password: Option<PasswordRef>,
    /// The password the sentinels require (managed sentinels require the Redis password).
    pub sentinel_password: Option<PasswordRef>,
    /// TLS of a `rediss://` url (external only).
    pub tls: Option<RedisTlsRef>,
}

/// Where the TLS material of a `rediss://` connection lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisTlsRef {
    /// The certificate authorities (PEM) to trust.
    pub ca: Option<PasswordRef>,
    /// A `kubernetes.io/tls` Secret with the client certificate and key.
    pub client_secret: Option<String>,
}

/// Key of the authority in a `kubernetes.io/tls` Secret as cert-manager writes it.
pub const TLS_CA_KEY: &str = "ca.crt";
/// Where managed data nodes and sentinels find their certificate, key and authority (`TLS_DIR`).
const SERVER_TLS_DIR: &str = "/tls";
/// Where managed data nodes and sentinels find the Redis password in use now (`AUTH_DIR`).
pub const REDIS_AUTH_DIR: &str = "/auth";

/// Where chat-node and registry find the Redis TLS files (Secret volumes).
const REDIS_TLS_DIR: &str = "/var/run/switchboard/redis-tls";

/// The Redis endpoint of `cc`: the managed sentinels' headless Service (which resolves to every sentinel
/// pod), or the external settings.
pub fn redis_endpoint(cc: &ChatCluster, cluster_domain: &str) -> Result<RedisEndpoint> {
    let names = Names::of(cc)?;
    Ok(match (&cc.spec.redis.mode, &cc.spec.redis.external) {
        (RedisMode::External, Some(ext)) => external_endpoint(ext),
        _ => {
            let managed = &cc.spec.redis.managed;
            RedisEndpoint {
                url: None,
                // Every sentinel behind one name: a count change restarts no chat-node or registry.
                sentinels: vec![format!(
                    "{}:{SENTINEL_PORT}",
                    names.sentinel_service_host(cluster_domain)
                )],
                master_name: managed.master_name.clone(),
                // The password in use, which lags the one asked for during a rotation.
                password: Some(applied_password_ref(&names)),
                sentinel_password: Some(applied_password_ref(&names)),
                // Clients trust the authority of the servers' certificate.
                tls: managed.tls.as_ref().map(|t| RedisTlsRef {
                    ca: Some(PasswordRef {
                        secret: t.secret_name.clone(),
                        key: TLS_CA_KEY.to_owned(),
                    }),
                    client_secret: None,
                }),
            }
        }
    })
}

/// How the operator reaches managed data-node or sentinel pod `pod` (address `ip`): `ip:port`, or with
/// `spec.redis.managed.tls` — whose certificates name hosts, not addresses — its stable hostname.
pub fn server_addr(
    cc: &ChatCluster,
    domain: &str,
    pod: &str,
    ip: Option<&str>,
    component: Component,
) -> Option<String> {
    let names = Names::of(cc).ok()?;
    let (service, port) = match component {
        Component::Sentinel => (names.sentinel_headless(), SENTINEL_PORT),
        _ => (names.redis_headless(), REDIS_PORT),
    };
    if cc.spec.redis.managed.tls.is_some() {
        return Some(format!("{}:{port}", names.pod_host(pod, &service, domain)));
    }
    let ip = ip?;
    Some(if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    })
}

/// The key of the applied Secret clients and servers read the current password from.
fn applied_password_ref(names: &Names) -> PasswordRef {
    PasswordRef {
        secret: names.redis_applied_secret(),
        key: PASSWORD_KEY.to_owned(),
    }
}

/// Where the Redis password the user asks for lives: the managed password Secret (generated, or edited
/// by the user to rotate it), or the external Secret. `None`: external Redis without a password.
pub fn wanted_password_ref(cc: &ChatCluster, cluster_domain: &str) -> Result<Option<PasswordRef>> {
    if cc.spec.redis.mode == RedisMode::Managed {
        return Ok(Some(PasswordRef {
            secret: Names::of(cc)?.redis_secret(),
            key: PASSWORD_KEY.to_owned(),
        }));
    }
    Ok(redis_endpoint(cc, cluster_domain)?.password)
}

fn external_endpoint(ext: &ExternalRedis) -> RedisEndpoint {
    RedisEndpoint {
        url: ext.url.clone(),
        sentinels: ext.sentinels.clone().unwrap_or_default(),
        master_name: ext.master_name.clone(),
        password: ext.password_secret_ref.as_ref().map(|r| PasswordRef {
            secret: r.name.clone(),
            key: r.key.clone(),
        }),
        sentinel_password: None,
        tls: ext.tls.as_ref().map(|t| RedisTlsRef {
            ca: t.ca_secret_ref.as_ref().map(|r| PasswordRef {
                secret: r.name.clone(),
                key: r.key.clone(),
            }),
            client_secret: t.client_certificate_secret.clone(),
        }),
    }
}

/// A short stable hash (FNV-1a, 64 bit, hex) of `parts`, for change-detection annotations.
/// Not a secret-keeping hash: it only has to change when its input changes.
pub fn fingerprint(parts: &[&[u8]]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.iter().chain(&[0xff]) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// Whether `meta` names the object with `uid` (a ChatCluster's) as its controller: the operator applies,
/// scales and deletes only such objects.
pub fn is_controlled_by(meta: &kube::api::ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == uid)
}

/// Seconds a chat-node pod may take to stop: the pre-stop pause, the whole drain, and 5 s to exit.
pub fn node_termination_grace_seconds(cc: &ChatCluster) -> i64 {
    i64::from(cc.spec.nodes.drain_timeout_seconds) + PRE_STOP_SLEEP_SECONDS + 5
}

/// Labels of every object of `component`: passthrough labels, then ours (ours win).
pub fn labels(cc: &ChatCluster, component: Component) -> BTreeMap<String, String> {
    let mut labels = cc.spec.labels.clone();
    labels.extend(selector_labels(cc, component));
    labels.insert(label::MANAGED_BY.to_owned(), MANAGED_BY.to_owned());
    labels
}

/// The labels that select the pods of `component` (a subset of [`labels`]).
pub fn selector_labels(cc: &ChatCluster, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        (label::NAME.to_owned(), APP_NAME.to_owned()),
        (
            label::INSTANCE.to_owned(),
            cc.metadata.name.clone().unwrap_or_default(),
        ),
        (label::COMPONENT.to_owned(), component.as_str().to_owned()),
    ])
}

/// Labels every object the operator owns for `cc` carries, whatever its component (for tests and tools).
pub fn owned_labels(cc: &ChatCluster) -> BTreeMap<String, String> {
    BTreeMap::from([
        (label::INSTANCE.to_owned(), cc.name_any()),
        (label::MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
    ])
}

/// [`selector_labels`] as a label-selector string (`k=v,k=v`), e.g. for the scale subresource.
pub fn selector_string(cc: &ChatCluster, component: Component) -> String {
    selector_labels(cc, component)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The managed Redis password Secret holding `password`. Render it only when the Secret does not exist:
/// reconciles never rotate the password.
pub fn redis_secret(cc: &ChatCluster, password: &str) -> Result<Secret> {
    let name = Names::of(cc)?.redis_secret();
    generated_secret(cc, &name, Component::Redis, PASSWORD_KEY, password)
}

/// The managed Redis passwords in use: `current` (what clients and servers use) and `accepted` (what the
/// servers take; `current` is one of them). Only the rotation (`reconcile::rotation`) writes it.
pub fn applied_passwords_secret(
    cc: &ChatCluster,
    current: &str,
    accepted: &[String],
) -> Result<Secret> {
    let name = Names::of(cc)?.redis_applied_secret();
    obj(
        "Secret",
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": meta(cc, &name, Component::Redis)?,
            "type": "Opaque",
            "stringData": { PASSWORD_KEY: current, PASSWORDS_KEY: accepted.join(" ") },
        }),
    )
}

/// A Secret holding one generated value under `key`, controlled by `cc`.
fn generated_secret(
    cc: &ChatCluster,
    name: &str,
    component: Component,
    key: &str,
    value: &str,
) -> Result<Secret> {
    obj(
        "Secret",
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": meta(cc, name, component)?,
            "type": "Opaque",
            "stringData": { key: value },
        }),
    )
}

/// Where chat-node's HS256 key comes from: the Secret `spec.auth.hmacSecretRef` names, or — jwt mode
/// with neither it nor a JWKS URL — the generated `<name>-jwt`. `None` with a JWKS URL or open identity.
pub fn hmac_key_ref(cc: &ChatCluster) -> Result<Option<PasswordRef>> {
    let auth = &cc.spec.auth;
    if auth.mode == AuthMode::Open || auth.jwks_url.is_some() {
        return Ok(None);
    }
    Ok(Some(match &auth.hmac_secret_ref {
        Some(r) => PasswordRef {
            secret: r.name.clone(),
            key: r.key.clone(),
        },
        None => PasswordRef {
            secret: Names::of(cc)?.jwt_secret(),
            key: JWT_KEY.to_owned(),
        },
    }))
}

/// Whether the operator generates the token signing key Secret (jwt mode naming no key of its own).
pub fn generates_hmac_key(cc: &ChatCluster) -> bool {
    let auth = &cc.spec.auth;
    auth.mode == AuthMode::Jwt && auth.hmac_secret_ref.is_none() && auth.jwks_url.is_none()
}

/// The generated token signing key Secret holding `key`. Render it only when the Secret does not exist:
/// reconciles never rotate it (every token minted with it would stop working).
pub fn jwt_secret(cc: &ChatCluster, key: &str) -> Result<Secret> {
    let name = Names::of(cc)?.jwt_secret();
    generated_secret(cc, &name, Component::ChatNode, JWT_KEY, key)
}

/// chat-node's identity env (`SWITCHBOARD_AUTH`, `SWITCHBOARD_JWT_*`, `SWITCHBOARD_ALLOWED_ORIGINS`)
/// and the Secret volume holding its HS256 key, if any. No value here is secret.
fn node_auth(cc: &ChatCluster) -> Result<(Vec<Value>, Option<Value>)> {
    let auth = &cc.spec.auth;
    let mut env = vec![value_env("SWITCHBOARD_AUTH", auth.mode.as_str())];
    let key = hmac_key_ref(cc)?;
    if key.is_some() {
        env.push(value_env(
            "SWITCHBOARD_JWT_HMAC_SECRET_FILE",
            format!("{JWT_MOUNT_DIR}/{JWT_KEY}"),
        ));
    }
    for (name, value) in [
        ("SWITCHBOARD_JWT_JWKS_URL", &auth.jwks_url),
        ("SWITCHBOARD_JWT_ISSUER", &auth.issuer),
        ("SWITCHBOARD_JWT_AUDIENCE", &auth.audience),
    ] {
        if let Some(value) = value {
            env.push(value_env(name, value));
        }
    }
    env.extend(origins_env(cc));
    // The key's own name in the Secret may be anything; it is always mounted as `hmac`.
    let volume = key.map(|k| {
        json!({
            "name": "jwt",
            "secret": {
                "secretName": k.secret,
                "items": [{ "key": k.key, "path": JWT_KEY }],
                "defaultMode": 0o444,
            },
        })
    });
    Ok((env, volume))
}

/// chat-node's attachment env: the bucket, its endpoint and region, the key through `secretKeyRef` and
/// the limits. Without `spec.attachments`, or while its key is unavailable, `off`: a missing Secret
/// would keep every new chat-node pod from starting, and chat must go on without files.
fn node_attachments_env(cc: &ChatCluster, ctx: &RenderContext) -> Vec<Value> {
    let Some(attachments) = cc
        .spec
        .attachments
        .as_ref()
        .filter(|_| ctx.attachments_hash.is_some())
    else {
        return vec![value_env(ENV_ATTACHMENTS_STORE, "off")];
    };
    let s3 = &attachments.s3;
    let mut env = vec![value_env(
        ENV_ATTACHMENTS_STORE,
        format!("s3://{}", s3.bucket),
    )];
    let key = |key: &str| PasswordRef {
        secret: s3.credentials_secret.clone(),
        key: key.to_owned(),
    };
    env.push(secret_env(ENV_ACCESS_KEY_ID, &key(S3_ACCESS_KEY_ID_KEY)));
    env.push(secret_env(
        ENV_SECRET_ACCESS_KEY,
        &key(S3_SECRET_ACCESS_KEY_KEY),
    ));
    // The rest only when given: chat-node's own defaults stand otherwise.
    let number = |n: Option<i64>| n.map(|n| n.to_string());
    let optional = [
        ("SWITCHBOARD_ATTACHMENTS_S3_ENDPOINT", s3.endpoint.clone()),
        ("SWITCHBOARD_ATTACHMENTS_S3_REGION", s3.region.clone()),
        (
            "SWITCHBOARD_MAX_ATTACHMENT_BYTES",
            number(attachments.max_file_bytes),
        ),
        (
            "SWITCHBOARD_ATTACHMENT_QUOTA_BYTES",
            number(attachments.quota_bytes_per_day),
        ),
    ];
    env.extend(
        optional
            .into_iter()
            .filter_map(|(name, value)| value.map(|v| value_env(name, v))),
    );
    env
}

/// `SWITCHBOARD_ALLOWED_ORIGINS` of chat-node and registry, when origins are configured.
fn origins_env(cc: &ChatCluster) -> Option<Value> {
    let origins = &cc.spec.auth.allowed_origins;
    (!origins.is_empty()).then(|| value_env("SWITCHBOARD_ALLOWED_ORIGINS", origins.join(",")))
}

/// Every object `cc` owns except the password Secret.
pub fn render(cc: &ChatCluster, ctx: &RenderContext) -> Result<Desired> {
    let names = Names::of(cc)?;
    let endpoint = redis_endpoint(cc, &ctx.cluster_domain)?;
    let mut desired = Desired::default();
    if cc.spec.redis.mode == RedisMode::Managed {
        let managed = &cc.spec.redis.managed;
        desired
            .config_maps
            .push(redis_scripts(cc, &names, managed, ctx)?);
        desired.services.push(headless_service(
            cc,
            &names.redis_headless(),
            Component::Redis,
            REDIS_PORT,
        )?);
        desired.services.push(headless_service(
            cc,
            &names.sentinel_headless(),
            Component::Sentinel,
            SENTINEL_PORT,
        )?);
        desired
            .stateful_sets
            .push(redis_stateful_set(cc, &names, managed, ctx)?);
        desired
            .stateful_sets
            .push(sentinel_stateful_set(cc, &names, managed, ctx)?);
        desired
            .pdbs
            .push(pdb(cc, &names.redis_sts(), Component::Redis)?);
        desired
            .pdbs
            .push(pdb(cc, &names.sentinel_sts(), Component::Sentinel)?);
    }
    desired
        .deployments
        .push(node_deployment(cc, &names, &endpoint, ctx)?);
    desired.services.push(node_service(cc, &names)?);
    desired
        .deployments
        .push(registry_deployment(cc, &names, &endpoint, ctx)?);
    desired.services.push(registry_service(cc, &names)?);
    desired
        .pdbs
        .push(pdb(cc, &names.node(), Component::ChatNode)?);
    desired
        .pdbs
        .push(pdb(cc, &names.registry(), Component::Registry)?);
    if cc.spec.network_policy.enabled {
        desired.network_policies.push(serving_policy(
            cc,
            &names.node(),
            Component::ChatNode,
            NODE_PORT,
        )?);
        desired.network_policies.push(serving_policy(
            cc,
            &names.registry(),
            Component::Registry,
            REGISTRY_PORT,
        )?);
        if cc.spec.redis.mode == RedisMode::Managed {
            desired.network_policies.push(redis_policy(
                cc,
                &names.redis_sts(),
                Component::Redis,
                REDIS_PORT,
            )?);
            desired.network_policies.push(redis_policy(
                cc,
                &names.sentinel_sts(),
                Component::Sentinel,
                SENTINEL_PORT,
            )?);
        }
    }
    Ok(desired)
}

/// `app.kubernetes.io/name` of the operator's own pods (manifests/20-operator.yaml).
pub const OPERATOR_APP_NAME: &str = "switchboard-operator";

/// chat-node or registry: reachable by anyone (clients), but only on the serving port; the metrics port
/// (served alone there, `--metrics-listen`) only from the pods of `spec.networkPolicy.metricsNamespaces`.
fn serving_policy(
    cc: &ChatCluster,
    name: &str,
    component: Component,
    port: i32,
) -> Result<NetworkPolicy> {
    let mut rules = vec![json!({ "ports": [{ "protocol": "TCP", "port": port }] })];
    let scrapers = &cc.spec.network_policy.metrics_namespaces;
    if !scrapers.is_empty() {
        rules.push(json!({
            "from": [{
                "namespaceSelector": { "matchExpressions": [{
                    "key": "kubernetes.io/metadata.name",
                    "operator": "In",
                    "values": scrapers,
                }] },
            }],
            "ports": [{ "protocol": "TCP", "port": METRICS_PORT }],
        }));
    }
    ingress_policy(cc, name, component, rules)
}

/// Redis or Sentinel: reachable only from this chat system's own pods (chat-node, registry, Redis and
/// sentinels) and from the operator's pods, in any namespace.
fn redis_policy(
    cc: &ChatCluster,
    name: &str,
    component: Component,
    port: i32,
) -> Result<NetworkPolicy> {
    let own = BTreeMap::from([
        (label::NAME.to_owned(), APP_NAME.to_owned()),
        (label::INSTANCE.to_owned(), cc.name_any()),
    ]);
    ingress_policy(
        cc,
        name,
        component,
        vec![json!({
            "from": [
                { "podSelector": { "matchLabels": own } },
                {
                    "namespaceSelector": {},
                    "podSelector": { "matchLabels": { label::NAME: OPERATOR_APP_NAME } },
                },
            ],
            "ports": [{ "protocol": "TCP", "port": port }],
        })],
    )
}

/// A NetworkPolicy that admits only what `rules` allow to the pods of `component`.
fn ingress_policy(
    cc: &ChatCluster,
    name: &str,
    component: Component,
    rules: Vec<Value>,
) -> Result<NetworkPolicy> {
    obj(
        "NetworkPolicy",
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": meta(cc, name, component)?,
            "spec": {
                "podSelector": { "matchLabels": selector_labels(cc, component) },
                "policyTypes": ["Ingress"],
                "ingress": rules,
            },
        }),
    )
}

/// The typed object `value` describes. Objects are written as JSON for readability, so a misspelled or
/// misplaced field would silently vanish in the conversion: the typed object is serialized again and
/// must give back exactly `value`, else rendering fails with [`Error::Lossy`] naming the field.
fn obj<T: DeserializeOwned + Serialize>(kind: &'static str, mut value: Value) -> Result<T> {
    strip_nulls(&mut value);
    let typed: T =
        serde_json::from_value(value.clone()).map_err(|source| Error::Shape { kind, source })?;
    let back = serde_json::to_value(&typed).map_err(|source| Error::Shape { kind, source })?;
    match first_difference(&value, &back, String::new()) {
        None => Ok(typed),
        Some(path) => Err(Error::Lossy { kind, path }),
    }
}

/// The JSON path of the first place where `rendered` holds something `typed` does not (or another
/// value), if any.
fn first_difference(rendered: &Value, typed: &Value, path: String) -> Option<String> {
    match (rendered, typed) {
        (Value::Object(a), Value::Object(b)) => a.iter().find_map(|(k, v)| match b.get(k) {
            Some(w) => first_difference(v, w, format!("{path}.{k}")),
            None => Some(format!("{path}.{k}")),
        }),
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (v, w))| first_difference(v, w, format!("{path}[{i}]"))),
        (a, b) if a == b => None,
        _ => Some(if path.is_empty() {
            ".".to_owned()
        } else {
            path
        }),
    }
}

fn owner(cc: &ChatCluster) -> Result<OwnerReference> {
    if cc.metadata.uid.is_none() {
        return Err(Error::MissingMetadata("uid"));
    }
    cc.controller_owner_ref(&())
        .ok_or(Error::MissingMetadata("name"))
}

fn meta(cc: &ChatCluster, name: &str, component: Component) -> Result<Value> {
    let mut meta = json!({
        "name": name,
        "namespace": cc.metadata.namespace.as_deref().ok_or(Error::MissingMetadata("namespace"))?,
        "labels": labels(cc, component),
        "ownerReferences": [owner(cc)?],
    });
    if !cc.spec.annotations.is_empty() {
        meta["annotations"] = json!(cc.spec.annotations);
    }
    Ok(meta)
}

/// Pod template metadata: labels, passthrough annotations and the configuration hash.
fn pod_meta(cc: &ChatCluster, component: Component, hash: Option<String>) -> Value {
    let mut annotations = cc.spec.annotations.clone();
    if let Some(hash) = hash {
        annotations.insert(CONFIG_HASH_ANNOTATION.to_owned(), hash);
    }
    json!({ "labels": labels(cc, component), "annotations": annotations })
}

/// Pod template metadata of the Redis data nodes and sentinels: only our labels and the configuration
/// hash. Passthrough labels and annotations would make every edit of them restart Redis; the operator
/// applies them to the running pods in place instead ([`redis_pod_passthrough`]).
fn redis_pod_meta(cc: &ChatCluster, component: Component, hash: String) -> Value {
    let mut labels = selector_labels(cc, component);
    labels.insert(label::MANAGED_BY.to_owned(), MANAGED_BY.to_owned());
    json!({ "labels": labels, "annotations": { CONFIG_HASH_ANNOTATION: hash } })
}

/// The passthrough labels and annotations of `cc` as a server-side-apply patch of a Redis or sentinel
/// pod's metadata: applying it adds, changes and (through field ownership) removes them in place.
/// Keys of our own (selector, managed-by, hash) never pass through; [`PASSTHROUGH_HASH_ANNOTATION`] says
/// which passthrough set a pod carries, so unchanged pods are not patched again.
pub fn redis_pod_passthrough(cc: &ChatCluster, pod: &str) -> Value {
    let ours =
        |k: &String| k.starts_with("app.kubernetes.io/") || k.starts_with("switchboard.dev/");
    let labels: BTreeMap<&String, &String> =
        cc.spec.labels.iter().filter(|(k, _)| !ours(k)).collect();
    let mut annotations: BTreeMap<&str, &str> = cc
        .spec
        .annotations
        .iter()
        .filter(|(k, _)| !ours(k))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let hash = passthrough_hash(cc);
    annotations.insert(PASSTHROUGH_HASH_ANNOTATION, &hash);
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": pod, "labels": labels, "annotations": annotations },
    })
}

/// Annotation of a Redis or sentinel pod: the fingerprint of the passthrough labels and annotations it
/// was given in place.
pub const PASSTHROUGH_HASH_ANNOTATION: &str = "switchboard.dev/passthrough-hash";

/// Fingerprint of `cc`'s passthrough labels and annotations.
pub fn passthrough_hash(cc: &ChatCluster) -> String {
    let text = serde_json::to_string(&(&cc.spec.labels, &cc.spec.annotations)).unwrap_or_default();
    fingerprint(&[text.as_bytes()])
}

/// Topology keys every component spreads over by default: zones first, then hosts.
const SPREAD_KEYS: [&str; 2] = ["topology.kubernetes.io/zone", "kubernetes.io/hostname"];

/// The topology spread constraints of `component`'s pods: the spec's (with the component's selector
/// where they name none), else one per [`SPREAD_KEYS`] entry. Deployments also match on
/// `pod-template-hash`, so a rolling update's old pods do not skew the new ones.
fn spread(cc: &ChatCluster, component: Component) -> Value {
    let selector = json!({ "matchLabels": selector_labels(cc, component) });
    let deployment = matches!(component, Component::ChatNode | Component::Registry);
    match &cc.spec.scheduling.topology_spread_constraints {
        Some(given) => {
            let mut given = json!(given);
            for c in given.as_array_mut().into_iter().flatten() {
                if c.get("labelSelector").is_none_or(Value::is_null) {
                    c["labelSelector"] = selector.clone();
                }
            }
            given
        }
        None => json!(
            SPREAD_KEYS
                .iter()
                .map(|key| {
                    let mut c = json!({
                        "maxSkew": 1,
                        "topologyKey": key,
                        // A preference: a one-node or one-zone cluster still runs every pod.
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": selector,
                    });
                    if deployment {
                        c["matchLabelKeys"] = json!(["pod-template-hash"]);
                    }
                    c
                })
                .collect::<Vec<_>>()
        ),
    }
}

/// Scheduling knobs merged into the pod spec of `component`.
fn schedule(cc: &ChatCluster, component: Component, mut pod: Value) -> Value {
    let s = &cc.spec.scheduling;
    if let Some(v) = &s.node_selector {
        pod["nodeSelector"] = json!(v);
    }
    if let Some(v) = &s.tolerations {
        pod["tolerations"] = json!(v);
    }
    if let Some(v) = &s.affinity {
        pod["affinity"] = json!(v);
    }
    if let Some(v) = &s.priority_class_name {
        pod["priorityClassName"] = json!(v);
    }
    let spread = spread(cc, component);
    if spread.as_array().is_some_and(|a| !a.is_empty()) {
        pod["topologySpreadConstraints"] = spread;
    }
    pod
}

fn field_env(name: &str, path: &str) -> Value {
    json!({ "name": name, "valueFrom": { "fieldRef": { "fieldPath": path } } })
}

fn value_env(name: &str, value: impl Into<String>) -> Value {
    json!({ "name": name, "value": value.into() })
}

fn secret_env(name: &str, secret: &PasswordRef) -> Value {
    json!({ "name": name, "valueFrom": { "secretKeyRef": { "name": secret.secret, "key": secret.key } } })
}

/// The Redis env of chat-node and registry (`SWITCHBOARD_REDIS_*`).
fn redis_env(endpoint: &RedisEndpoint) -> Vec<Value> {
    let mut env = Vec::new();
    if let Some(url) = &endpoint.url {
        env.push(value_env("SWITCHBOARD_REDIS_URL", url));
    } else {
        env.push(value_env(
            "SWITCHBOARD_REDIS_SENTINELS",
            endpoint.sentinels.join(","),
        ));
        env.push(value_env(
            "SWITCHBOARD_REDIS_MASTER_NAME",
            &endpoint.master_name,
        ));
    }
    if let Some(password) = &endpoint.password {
        env.push(secret_env("SWITCHBOARD_REDIS_PASSWORD", password));
    }
    if let Some(password) = &endpoint.sentinel_password {
        env.push(secret_env("SWITCHBOARD_REDIS_SENTINEL_PASSWORD", password));
    }
    env
}

/// Mounts the Redis TLS Secrets of `endpoint` into the first container of `pod` and points the
/// `SWITCHBOARD_REDIS_TLS_*` variables at the files (never the material itself in the environment).
fn add_redis_tls(endpoint: &RedisEndpoint, pod: &mut Value) {
    let Some(tls) = &endpoint.tls else {
        return;
    };
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    let mut env = Vec::new();
    if let Some(ca) = &tls.ca {
        volumes.push(json!({ "name": "redis-tls-ca", "secret": { "secretName": ca.secret, "items": [{ "key": ca.key, "path": "ca.crt" }] } }));
        mounts.push(json!({ "name": "redis-tls-ca", "mountPath": format!("{REDIS_TLS_DIR}/ca"), "readOnly": true }));
        env.push(value_env(
            "SWITCHBOARD_REDIS_TLS_CA_FILE",
            format!("{REDIS_TLS_DIR}/ca/ca.crt"),
        ));
    }
    if let Some(secret) = &tls.client_secret {
        volumes.push(json!({ "name": "redis-tls-client", "secret": { "secretName": secret } }));
        mounts.push(json!({ "name": "redis-tls-client", "mountPath": format!("{REDIS_TLS_DIR}/client"), "readOnly": true }));
        env.push(value_env(
            "SWITCHBOARD_REDIS_TLS_CERT_FILE",
            format!("{REDIS_TLS_DIR}/client/tls.crt"),
        ));
        env.push(value_env(
            "SWITCHBOARD_REDIS_TLS_KEY_FILE",
            format!("{REDIS_TLS_DIR}/client/tls.key"),
        ));
    }
    let append = |target: &mut Value, items: Vec<Value>| {
        if let Some(list) = target.as_array_mut() {
            list.extend(items);
        } else {
            *target = Value::Array(items);
        }
    };
    append(&mut pod["volumes"], volumes);
    let container = &mut pod["containers"][0];
    append(&mut container["volumeMounts"], mounts);
    append(&mut container["env"], env);
}

/// The advertised URL template with `{podIP}`, `{podName}`, `{namespace}` and `{port}` replaced by
/// Kubernetes env references (`$(POD_IP)`, ...) that the kubelet expands at container start.
pub fn advertise_url(template: &str) -> String {
    template
        .replace("{podIP}", "$(POD_IP)")
        .replace("{podName}", "$(POD_NAME)")
        .replace("{namespace}", "$(POD_NAMESPACE)")
        .replace("{port}", &NODE_PORT.to_string())
}

fn http_probe(path: &str, port: i32, period: i32, failures: i32) -> Value {
    json!({
        "httpGet": { "path": path, "port": port },
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 1,
    })
}

fn pull_policy(policy: Option<crate::crd::PullPolicy>) -> Value {
    policy.map_or(Value::Null, |p| json!(p.as_str()))
}

/// uid and gid of the Redis and Sentinel processes: the `redis` user of the upstream Redis images and of
/// `deploy/docker/redis.Dockerfile`; the data volume is group-owned by it (fsGroup).
pub const REDIS_UID: i64 = 999;

/// Pod-level security of every pod: non-root, the runtime's seccomp profile — what Pod Security
/// `restricted` asks for — and, for Redis, the group that may write the data volume.
fn pod_security(fs_group: Option<i64>) -> Value {
    let mut security = json!({
        "runAsNonRoot": true,
        "seccompProfile": { "type": "RuntimeDefault" },
    });
    if let Some(gid) = fs_group {
        security["fsGroup"] = json!(gid);
        security["runAsUser"] = json!(gid);
        security["runAsGroup"] = json!(gid);
    }
    security
}

/// Non-root, read-only, no privileges: what every container needs (Redis and Sentinel write only to their
/// volumes: /data, /conf, /tmp).
fn restricted_security() -> Value {
    json!({
        "runAsNonRoot": true,
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "capabilities": { "drop": ["ALL"] },
        "seccompProfile": { "type": "RuntimeDefault" },
    })
}

fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

fn node_deployment(
    cc: &ChatCluster,
    names: &Names,
    endpoint: &RedisEndpoint,
    ctx: &RenderContext,
) -> Result<Deployment> {
    let spec = &cc.spec.nodes;
    let mut env = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("POD_IP", "status.podIP"),
        field_env("SWITCHBOARD_NODE_ID", "metadata.name"),
        value_env("SWITCHBOARD_LISTEN", format!("0.0.0.0:{NODE_PORT}")),
        metrics_env(),
        value_env(
            "SWITCHBOARD_ADVERTISE_URL",
            advertise_url(&spec.advertise_url),
        ),
        value_env("SWITCHBOARD_CAPACITY", spec.capacity.to_string()),
        value_env("SWITCHBOARD_MEMBERSHIP", "operator"),
        value_env("SWITCHBOARD_CLUSTER_ID", cc.cluster_id()),
    ];
    let (auth_env, jwt_volume) = node_auth(cc)?;
    env.extend(auth_env);
    env.extend(redis_env(endpoint));
    env.push(value_env(
        "SWITCHBOARD_ACK_REPLICAS",
        cc.spec.redis.effective_ack_replicas().to_string(),
    ));
    // chat-node's --drain-timeout is a duration flag (`30s`).
    env.push(value_env(
        "SWITCHBOARD_DRAIN_TIMEOUT",
        format!("{}s", spec.drain_timeout_seconds),
    ));
    // Only when set: an existing cluster's pods do not roll for a field it does not use.
    if spec.write_delay_ms > 0 {
        env.push(value_env(
            "SWITCHBOARD_WRITE_DELAY",
            format!("{}ms", spec.write_delay_ms),
        ));
    }
    env.extend(node_attachments_env(cc, ctx));
    let grace = node_termination_grace_seconds(cc);
    let mut container = json!({
        "name": "chat-node",
        "image": spec.image,
        "imagePullPolicy": pull_policy(spec.image_pull_policy),
        "ports": container_ports(NODE_PORT),
        "env": env,
        "readinessProbe": http_probe("/readyz", NODE_PORT, 2, 2),
        "livenessProbe": http_probe("/healthz", NODE_PORT, 10, 3),
        "lifecycle": { "preStop": { "sleep": { "seconds": PRE_STOP_SLEEP_SECONDS } } },
        "resources": spec.resources,
        "securityContext": restricted_security(),
    });
    let mut pod = json!({
        "containers": [],
        "terminationGracePeriodSeconds": grace,
        "enableServiceLinks": false,
        "securityContext": pod_security(None),
    });
    if let Some(volume) = jwt_volume {
        container["volumeMounts"] =
            json!([{ "name": "jwt", "mountPath": JWT_MOUNT_DIR, "readOnly": true }]);
        pod["volumes"] = json!([volume]);
    }
    strip_nulls(&mut container);
    pod["containers"] = json!([container]);
    let mut pod = schedule(cc, Component::ChatNode, pod);
    add_redis_tls(endpoint, &mut pod);
    // The pods roll when the Redis password in use, the token signing key or the S3 key changes.
    let hash = combined_hash(&[
        &ctx.password_hash,
        &ctx.auth_hash,
        &ctx.redis_tls_hash,
        &ctx.attachments_hash,
    ]);
    obj(
        "Deployment",
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta(cc, &names.node(), Component::ChatNode)?,
            "spec": {
                "replicas": spec.replicas,
                "selector": { "matchLabels": selector_labels(cc, Component::ChatNode) },
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": { "maxUnavailable": 0, "maxSurge": 1 },
                },
                "template": {
                    "metadata": pod_meta(cc, Component::ChatNode, hash),
                    "spec": pod,
                },
            },
        }),
    )
}

/// The ports of a chat-node or registry container: `http` (clients) and `metrics` (scrapers only).
fn container_ports(serving: i32) -> Value {
    json!([
        { "name": "http", "containerPort": serving, "protocol": "TCP" },
        { "name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP" },
    ])
}

/// `/metrics` on its own port, so the NetworkPolicy can admit scrapers there and clients elsewhere.
fn metrics_env() -> Value {
    value_env(
        "SWITCHBOARD_METRICS_LISTEN",
        format!("0.0.0.0:{METRICS_PORT}"),
    )
}

/// One fingerprint of the `parts` present (the part itself when only one is), `None` when none is.
fn combined_hash(parts: &[&Option<String>]) -> Option<String> {
    let present: Vec<&[u8]> = parts
        .iter()
        .filter_map(|p| p.as_deref())
        .map(str::as_bytes)
        .collect();
    match present.as_slice() {
        [] => None,
        [one] => Some(String::from_utf8_lossy(one).into_owned()),
        many => Some(fingerprint(many)),
    }
}

fn node_service(cc: &ChatCluster, names: &Names) -> Result<Service> {
    obj(
        "Service",
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(cc, &names.node(), Component::ChatNode)?,
            "spec": {
                "type": "ClusterIP",
                "selector": selector_labels(cc, Component::ChatNode),
                "ports": [{ "name": "http", "port": NODE_PORT, "targetPort": "http", "protocol": "TCP" }],
            },
        }),
    )
}

fn registry_deployment(
    cc: &ChatCluster,
    names: &Names,
    endpoint: &RedisEndpoint,
    ctx: &RenderContext,
) -> Result<Deployment> {
    let spec = &cc.spec.registries;
    let mut env = vec![
        value_env("SWITCHBOARD_LISTEN", format!("0.0.0.0:{REGISTRY_PORT}")),
        metrics_env(),
        value_env("SWITCHBOARD_CLUSTER_ID", cc.cluster_id()),
    ];
    env.extend(origins_env(cc));
    env.extend(redis_env(endpoint));
    let mut container = json!({
        "name": "registry",
        "image": spec.image,
        "imagePullPolicy": pull_policy(spec.image_pull_policy),
        "ports": container_ports(REGISTRY_PORT),
        "env": env,
        "readinessProbe": http_probe("/readyz", REGISTRY_PORT, 2, 2),
        "livenessProbe": http_probe("/healthz", REGISTRY_PORT, 10, 3),
        "resources": spec.resources,
        "securityContext": restricted_security(),
    });
    strip_nulls(&mut container);
    let mut pod = schedule(
        cc,
        Component::Registry,
        json!({ "containers": [container], "enableServiceLinks": false, "securityContext": pod_security(None) }),
    );
    add_redis_tls(endpoint, &mut pod);
    obj(
        "Deployment",
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta(cc, &names.registry(), Component::Registry)?,
            "spec": {
                "replicas": spec.replicas,
                "selector": { "matchLabels": selector_labels(cc, Component::Registry) },
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": { "maxUnavailable": 0, "maxSurge": 1 },
                },
                "template": {
                    "metadata": pod_meta(cc, Component::Registry, combined_hash(&[&ctx.password_hash, &ctx.redis_tls_hash])),
                    "spec": pod,
                },
            },
        }),
    )
}

fn registry_service(cc: &ChatCluster, names: &Names) -> Result<Service> {
    let svc = &cc.spec.registries.service;
    let mut meta = meta(cc, &names.registry(), Component::Registry)?;
    if !svc.annotations.is_empty() {
        let mut annotations = cc.spec.annotations.clone();
        annotations.extend(svc.annotations.clone());
        meta["annotations"] = json!(annotations);
    }
    obj(
        "Service",
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {
                "type": svc.type_.as_str(),
                "selector": selector_labels(cc, Component::Registry),
                "ports": [{ "name": "http", "port": svc.port, "targetPort": "http", "protocol": "TCP" }],
            },
        }),
    )
}

/// At most one pod of each workload voluntarily down at a time: for sentinels (odd, majority quorum) that
/// keeps a majority; for Redis it keeps a replica to promote.
fn pdb(cc: &ChatCluster, name: &str, component: Component) -> Result<PodDisruptionBudget> {
    obj(
        "PodDisruptionBudget",
        json!({
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": meta(cc, name, component)?,
            "spec": {
                "maxUnavailable": 1,
                "selector": { "matchLabels": selector_labels(cc, component) },
            },
        }),
    )
}

fn headless_service(
    cc: &ChatCluster,
    name: &str,
    component: Component,
    port: i32,
) -> Result<Service> {
    obj(
        "Service",
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(cc, name, component)?,
            "spec": {
                "clusterIP": "None",
                // Peers must resolve each other while they bootstrap, before any is ready.
                "publishNotReadyAddresses": true,
                "selector": selector_labels(cc, component),
                "ports": [{ "name": component.as_str(), "port": port, "targetPort": port, "protocol": "TCP" }],
            },
        }),
    )
}

/// The start scripts, and `hosts.env`: the data nodes' and sentinels' host names, which the data-node
/// script reads from this file rather than from its environment, so that changing either count does not
/// change (and restart) the data pods.
fn redis_scripts(
    cc: &ChatCluster,
    names: &Names,
    managed: &ManagedRedis,
    ctx: &RenderContext,
) -> Result<ConfigMap> {
    let hosts = format!(
        "REDIS_HOSTS=\"{}\"\nSENTINEL_HOSTS=\"{}\"\n",
        names
            .redis_hosts(managed.replicas, &ctx.cluster_domain)
            .join(" "),
        names
            .sentinel_hosts(managed.sentinels, &ctx.cluster_domain)
            .join(" ")
    );
    obj(
        "ConfigMap",
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta(cc, &names.redis_scripts(), Component::Redis)?,
            "data": {
                "redis.sh": REDIS_SCRIPT,
                "sentinel.sh": SENTINEL_SCRIPT,
                "handover.sh": HANDOVER_SCRIPT,
                "hosts.env": hosts,
            },
        }),
    )
}

/// Env shared by the data-node and sentinel containers: who they are and where their peers live. The
/// data nodes take the host lists from `hosts.env` ([`redis_scripts`]); the sentinels from here, with
/// the quorum, which a sentinel reads only at start — so a count change restarts the sentinels, one at
/// a time, and not the data nodes.
fn redis_pod_env(
    names: &Names,
    managed: &ManagedRedis,
    ctx: &RenderContext,
    component: Component,
) -> Vec<Value> {
    let password = applied_password_ref(names);
    let accepted = PasswordRef {
        key: PASSWORDS_KEY.to_owned(),
        ..password.clone()
    };
    let mut env = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        value_env("CLUSTER_DOMAIN", &ctx.cluster_domain),
        value_env("REDIS_STS", names.redis_sts()),
        value_env("REDIS_HEADLESS", names.redis_headless()),
        value_env("SENTINEL_HEADLESS", names.sentinel_headless()),
        value_env("MASTER_NAME", &managed.master_name),
        secret_env("REDIS_PASSWORD", &password),
        secret_env("REDIS_PASSWORDS", &accepted),
    ];
    if component == Component::Redis
        && let Some(bytes) = maxmemory(&managed.resources)
    {
        env.push(value_env("MAXMEMORY", bytes.to_string()));
    }
    if component == Component::Sentinel {
        env.extend([
            value_env(
                "REDIS_HOSTS",
                names
                    .redis_hosts(managed.replicas, &ctx.cluster_domain)
                    .join(" "),
            ),
            value_env(
                "SENTINEL_HOSTS",
                names
                    .sentinel_hosts(managed.sentinels, &ctx.cluster_domain)
                    .join(" "),
            ),
            value_env("QUORUM", managed.effective_quorum().to_string()),
        ]);
    }
    env
}

/// Redis's `maxmemory`: 80% of the data container's memory limit (else its request), leaving room for
/// replication buffers and the fork of a rewrite; `None` when neither is given or parses.
fn maxmemory(resources: &k8s_openapi::api::core::v1::ResourceRequirements) -> Option<u64> {
    let memory = resources
        .limits
        .as_ref()
        .and_then(|l| l.get("memory"))
        .or_else(|| resources.requests.as_ref().and_then(|r| r.get("memory")))?;
    quantity_bytes(&memory.0).map(|b| b / 5 * 4)
}

/// Bytes of a memory quantity (`256Mi`, `2G`, `1048576`); `None` for forms it does not know.
pub(crate) fn quantity_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (digits, suffix) = q.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let factor: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// What restarts a data node or sentinel: its start script. Not the password: a rotation is applied to
/// the running servers (`switchboard_redis::passwords`), and a server that restarts reads the passwords of
/// the current step from the applied Secret.
fn redis_hash(script: &str, ctx: &RenderContext) -> String {
    fingerprint(&[
        script.as_bytes(),
        ctx.redis_tls_hash.as_deref().unwrap_or_default().as_bytes(),
    ])
}

/// With `spec.redis.managed.tls`: the certificate Secret mounted at [`SERVER_TLS_DIR`] of a data-node or
/// sentinel `container`, and `TLS_DIR` telling its start script and probes to speak TLS.
fn add_server_tls(managed: &ManagedRedis, container: &mut Value, volumes: &mut Vec<Value>) {
    let Some(tls) = &managed.tls else {
        return;
    };
    volumes.push(
        json!({ "name": "tls", "secret": { "secretName": tls.secret_name, "defaultMode": 0o440 } }),
    );
    if let Some(mounts) = container["volumeMounts"].as_array_mut() {
        mounts.push(json!({ "name": "tls", "mountPath": SERVER_TLS_DIR, "readOnly": true }));
    }
    if let Some(env) = container["env"].as_array_mut() {
        env.push(value_env("TLS_DIR", SERVER_TLS_DIR));
    }
}

/// `redis-cli` asking the local server on `port` (TLS when `TLS_DIR` is set), in a probe: with the
/// password in use now, read from the mounted applied Secret ([`REDIS_AUTH_DIR`]), which the kubelet
/// keeps current through a rotation; the environment's (resolved when the container started, so the
/// old one after a rotation) only when the file cannot be read. `LOCAL_HOST` stands in for 127.0.0.1
/// in the real-process tests.
fn local_cli(port: i32) -> String {
    format!(
        "REDISCLI_AUTH=\"$(cat \"$AUTH_DIR/password\" 2>/dev/null || printf %s \"$REDIS_PASSWORD\")\" redis-cli ${{TLS_DIR:+--tls --cacert $TLS_DIR/ca.crt}} -h ${{LOCAL_HOST:-127.0.0.1}} -p {port}"
    )
}

/// The readiness probe of a data node or sentinel listening on `port`: it answers `PONG`.
pub fn ready_probe(port: i32) -> String {
    format!("{} ping | grep -q PONG", local_cli(port))
}

/// The liveness (and startup) probe of a data node or sentinel on `port`: it answers at all. Loading its
/// dataset counts as alive, so a large dataset does not restart in a loop, and so does refusing the
/// password: a server that answers is alive, and no password mix-up (a rotation, a Secret edited by
/// hand) may make the kubelet restart every data node and sentinel at once.
pub fn alive_probe(port: i32) -> String {
    format!(
        "{} ping 2>&1 | grep -qE 'PONG|LOADING|NOAUTH|WRONGPASS'",
        local_cli(port)
    )
}

/// The applied Secret's current password, mounted at [`REDIS_AUTH_DIR`] of a data-node or sentinel
/// `container` (`AUTH_DIR` says where): probes and the stop hook read it there, since a rotation
/// changes it without restarting these pods and their environment keeps the value they started with.
fn add_auth(names: &Names, container: &mut Value, volumes: &mut Vec<Value>) {
    volumes.push(json!({
        "name": "auth",
        "secret": {
            "secretName": names.redis_applied_secret(),
            "items": [{ "key": PASSWORD_KEY, "path": "password" }],
            "defaultMode": 0o440,
        },
    }));
    if let Some(mounts) = container["volumeMounts"].as_array_mut() {
        mounts.push(json!({ "name": "auth", "mountPath": REDIS_AUTH_DIR, "readOnly": true }));
    }
    if let Some(env) = container["env"].as_array_mut() {
        env.push(value_env("AUTH_DIR", REDIS_AUTH_DIR));
    }
}

fn redis_stateful_set(
    cc: &ChatCluster,
    names: &Names,
    managed: &ManagedRedis,
    ctx: &RenderContext,
) -> Result<StatefulSet> {
    let (ping, alive) = (ready_probe(REDIS_PORT), alive_probe(REDIS_PORT));
    let mut container = json!({
        "name": "redis",
        "image": managed.image,
        "command": ["sh", "/scripts/redis.sh"],
        "env": redis_pod_env(names, managed, ctx, Component::Redis),
        "ports": [{ "name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP" }],
        "readinessProbe": { "exec": { "command": ["sh", "-c", ping] }, "periodSeconds": 5, "failureThreshold": 2 },
        // Up to 5 minutes to start: waiting for a failover (redis.sh) or loading a large dataset.
        "startupProbe": { "exec": { "command": ["sh", "-c", alive] }, "periodSeconds": 5, "failureThreshold": 60 },
        "livenessProbe": { "exec": { "command": ["sh", "-c", alive] }, "periodSeconds": 10, "failureThreshold": 6 },
        // A master hands its role over before it stops (handover.sh): deleting or evicting its pod costs
        // the chat system a reconnect, not the sentinels' down-after and failover.
        "lifecycle": { "preStop": { "exec": { "command": ["sh", "/scripts/handover.sh"] } } },
        "resources": managed.resources,
        "securityContext": restricted_security(),
        "volumeMounts": [
            { "name": "data", "mountPath": "/data" },
            { "name": "conf", "mountPath": "/conf" },
            { "name": "tmp", "mountPath": "/tmp" },
            { "name": "scripts", "mountPath": "/scripts" },
        ],
    });
    strip_nulls(&mut container);
    let mut volumes = vec![
        json!({ "name": "conf", "emptyDir": {} }),
        json!({ "name": "tmp", "emptyDir": {} }),
        json!({ "name": "scripts", "configMap": { "name": names.redis_scripts() } }),
    ];
    add_server_tls(managed, &mut container, &mut volumes);
    add_auth(names, &mut container, &mut volumes);
    let mut spec = json!({
        "serviceName": names.redis_headless(),
        "replicas": managed.replicas,
        // Every pod finds the master itself (redis.sh), so none has to wait for its predecessor.
        "podManagementPolicy": "Parallel",
        "selector": { "matchLabels": selector_labels(cc, Component::Redis) },
        // The operator restarts data pods itself, replicas in sync first and the master only after a
        // failover (reconcile::redis_update); a template change alone restarts nothing.
        "updateStrategy": { "type": "OnDelete" },
    });
    if !managed.ephemeral {
        let size = &managed.storage;
        let mut claim = json!({
            "metadata": { "name": "data", "labels": labels(cc, Component::Redis) },
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": { "requests": { "storage": size } },
            },
        });
        if let Some(class) = &managed.storage_class_name {
            claim["spec"]["storageClassName"] = json!(class);
        }
        spec["volumeClaimTemplates"] = json!([claim]);
        // The data goes with the ChatCluster; scaling down keeps it for a scale back up.
        spec["persistentVolumeClaimRetentionPolicy"] =
            json!({ "whenDeleted": "Delete", "whenScaled": "Retain" });
    } else {
        volumes.push(json!({ "name": "data", "emptyDir": {} }));
    }
    spec["template"] = json!({
        "metadata": redis_pod_meta(cc, Component::Redis, redis_hash(REDIS_SCRIPT, ctx)),
        "spec": schedule(cc, Component::Redis, json!({
            "containers": [container],
            "volumes": volumes,
            "enableServiceLinks": false,
            "terminationGracePeriodSeconds": REDIS_TERMINATION_GRACE_SECONDS,
            "securityContext": pod_security(Some(REDIS_UID)),
        })),
    });
    obj(
        "StatefulSet",
        json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": meta(cc, &names.redis_sts(), Component::Redis)?,
            "spec": spec,
        }),
    )
}

fn sentinel_stateful_set(
    cc: &ChatCluster,
    names: &Names,
    managed: &ManagedRedis,
    ctx: &RenderContext,
) -> Result<StatefulSet> {
    // Sentinels require the password too (sentinel.sh): nobody without it can re-point the master.
    let ping = ready_probe(SENTINEL_PORT);
    let mut container = json!({
        "name": "sentinel",
        "image": managed.image,
        "command": ["sh", "/scripts/sentinel.sh"],
        "env": redis_pod_env(names, managed, ctx, Component::Sentinel),
        "ports": [{ "name": "sentinel", "containerPort": SENTINEL_PORT, "protocol": "TCP" }],
        "resources": managed.sentinel_resources,
        "readinessProbe": { "exec": { "command": ["sh", "-c", ping] }, "periodSeconds": 5, "failureThreshold": 2 },
        "livenessProbe": { "exec": { "command": ["sh", "-c", alive_probe(SENTINEL_PORT)] }, "periodSeconds": 10, "failureThreshold": 6, "initialDelaySeconds": 10 },
        "securityContext": restricted_security(),
        "volumeMounts": [
            { "name": "conf", "mountPath": "/conf" },
            { "name": "tmp", "mountPath": "/tmp" },
            { "name": "scripts", "mountPath": "/scripts" },
        ],
    });
    strip_nulls(&mut container);
    let mut volumes = vec![
        json!({ "name": "conf", "emptyDir": {} }),
        json!({ "name": "tmp", "emptyDir": {} }),
        json!({ "name": "scripts", "configMap": { "name": names.redis_scripts() } }),
    ];
    add_server_tls(managed, &mut container, &mut volumes);
    add_auth(names, &mut container, &mut volumes);
    obj(
        "StatefulSet",
        json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": meta(cc, &names.sentinel_sts(), Component::Sentinel)?,
            "spec": {
                "serviceName": names.sentinel_headless(),
                "replicas": managed.sentinels,
                "podManagementPolicy": "Parallel",
                "selector": { "matchLabels": selector_labels(cc, Component::Sentinel) },
                "updateStrategy": { "type": "RollingUpdate" },
                "template": {
                    "metadata": redis_pod_meta(cc, Component::Sentinel, redis_hash(SENTINEL_SCRIPT, ctx)),
                    "spec": schedule(cc, Component::Sentinel, json!({
                        "containers": [container],
                        "volumes": volumes,
                        "enableServiceLinks": false,
                        "securityContext": pod_security(Some(REDIS_UID)),
                    })),
                },
            },
        }),
    )
}
