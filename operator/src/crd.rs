//! The `ChatCluster` custom resource (`switchboard.dev/v1alpha1`): what a user declares and what the
//! operator reports back.
//!
//! ```text
//! ChatCluster
//! ├── spec
//! │   ├── nodes        socket servers: replicas, image, capacity, advertised URL template, drain
//! │   ├── registries   placement service: replicas, image, Service type/port
//! │   ├── redis        mode Managed (data nodes + sentinels run by the operator) | External (url or sentinels)
//! │   ├── auth         how clients prove who they are: jwt (HMAC Secret or JWKS URL) | open; web origins
//! │   ├── scheduling   nodeSelector, tolerations, affinity, priorityClassName (every pod)
//! │   ├── monitoring   Prometheus Operator PodMonitors for chat-node and registry pods
//! │   ├── attachments  files in messages: the S3 bucket, its credentials Secret, size and quota limits
//! │   └── labels / annotations   passed through to every owned object and pod
//! └── status   observedGeneration, ready/desired per component, current master, load-set size,
//!              selector (scale subresource), conditions Ready / Reconciling / Stalled / Progressing /
//!              Degraded, Monitoring when spec.monitoring asks for PodMonitors, and
//!              AttachmentStoreReady when spec.attachments names a bucket
//! ```
//!
//! Every field has a default, so `spec: {}` is a working chat system. What a type cannot say is checked by
//! the API server itself with CEL rules (`x-kubernetes-validations`), each with a message that names the
//! field and the fix; what only the operator can judge (e.g. a referenced Secret that does not exist) is
//! reported as a `Degraded` condition instead.

// kube's `printcolumn(...)` repeats keys such as `type_` per column, which this lint mistakes for
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, SecretKeySelector, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// API group of the resource.
pub const GROUP: &str = "switchboard.dev";
/// API version of the resource.
pub const VERSION: &str = "v1alpha1";
/// Name of the CRD object (`<plural>.<group>`).
pub const CRD_NAME: &str = "chatclusters.switchboard.dev";

/// Default chat-node image.
pub const DEFAULT_NODE_IMAGE: &str = "switchboard/chat-node:0.1.0";
/// Default registry image.
pub const DEFAULT_REGISTRY_IMAGE: &str = "switchboard/registry:0.1.0";
/// Default Redis image; it must ship `redis-server`, `redis-sentinel`, `redis-cli` and `sh`.
pub const DEFAULT_REDIS_IMAGE: &str = "redis:7.4-alpine";
/// Default Sentinel master name.
pub const DEFAULT_MASTER_NAME: &str = "mymaster";

/// Spec of a `ChatCluster`: one chat system (socket servers, registries, Redis).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "switchboard.dev",
    version = "v1alpha1",
    kind = "ChatCluster",
    plural = "chatclusters",
    shortname = "chat",
    category = "switchboard",
    namespaced,
    status = "ChatClusterStatus",
    derive = "PartialEq",
    doc = "A Switchboard chat system: WebSocket socket servers, the registry that places clients on them, and the Redis (with Sentinel) they share.",
    scale(
        spec_replicas_path = ".spec.nodes.replicas",
        status_replicas_path = ".status.nodes.ready",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Nodes",
        type_ = "integer",
        json_path = ".status.nodes.ready",
        description = "Ready socket servers"
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".spec.nodes.replicas",
        description = "Desired socket servers"
    ),
    printcolumn(
        name = "Registries",
        type_ = "integer",
        json_path = ".status.registries.ready",
        description = "Ready registries"
    ),
    printcolumn(
        name = "Sentinels",
        type_ = "integer",
        json_path = ".status.redis.sentinels.ready",
        description = "Ready sentinels (managed Redis)"
    ),
    printcolumn(
        name = "LoadSet",
        type_ = "integer",
        json_path = ".status.loadSetMembers",
        description = "Members of the registry load set",
        priority = "1"
    ),
    printcolumn(
        name = "Master",
        type_ = "string",
        json_path = ".status.redis.currentMaster",
        description = "Current Redis master",
        priority = "1"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Ready condition"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ChatClusterSpec {
    /// Socket servers (chat-node).
    #[serde(default)]
    pub nodes: NodesSpec,
    /// Registries (placement service).
    #[serde(default)]
    pub registries: RegistriesSpec,
    /// Redis: managed by the operator (default) or external.
    #[serde(default)]
    pub redis: RedisSpec,
    /// Client identity: signed tokens (default) or, only when chosen, open identity.
    #[serde(default)]
    pub auth: AuthSpec,
    /// Pod scheduling applied to every pod of this chat system.
    #[serde(default, skip_serializing_if = "Scheduling::is_empty")]
    pub scheduling: Scheduling,
    /// NetworkPolicies of this chat system.
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,
    /// Prometheus monitoring: PodMonitors for the chat-node and registry pods.
    #[serde(default, skip_serializing_if = "MonitoringSpec::is_empty")]
    pub monitoring: MonitoringSpec,
    /// Files in messages: the S3 bucket chat-nodes keep them in. Absent: attachments are off (a message
    /// carrying one is refused with `attachments_disabled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachments: Option<AttachmentsSpec>,
    /// Labels added to every owned object and pod (the operator's own labels win on conflict).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations added to every owned object and pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Socket servers: the chat-node Deployment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodesSpec {
    /// Number of socket servers (the scale subresource drives this).
    #[serde(default = "default_nodes")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// Container image of chat-node.
    #[serde(default = "default_node_image")]
    #[x_kube(validation = Rule::new("self != ''").message("spec.nodes.image must not be empty"))]
    pub image: String,
    /// Image pull policy (Always, IfNotPresent, Never); the cluster default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// Compute resources of the chat-node container (default: requests 100m CPU, 128Mi memory).
    #[serde(default = "default_node_resources")]
    pub resources: ResourceRequirements,
    /// Maximum WebSocket connections one socket server accepts.
    #[serde(default = "default_capacity")]
    #[schemars(range(min = 1, max = 10_000_000))]
    pub capacity: i64,
    /// How clients reach a node: a URL template over `{podIP}`, `{podName}`, `{namespace}` and `{port}`.
    #[serde(default = "default_advertise_url")]
    #[x_kube(validation = Rule::new("self.startsWith('ws://') || self.startsWith('wss://')").message("spec.nodes.advertiseUrl must start with ws:// or wss://, e.g. ws://{podIP}:{port}/ws"))]
    pub advertise_url: String,
    /// Seconds a terminating node keeps serving its clients while it drains (out of the load set, telling
    /// clients to reconnect elsewhere) before it is stopped.
    #[serde(default = "default_drain")]
    #[schemars(range(min = 1, max = 3600))]
    pub drain_timeout_seconds: i32,
    /// Milliseconds a node holds live events before writing them to a client, so that those arriving
    /// meanwhile leave in one write: far less CPU per delivery when clients get many messages each, for
    /// up to this much latency (chat-node `--write-delay`; 0, the default, writes at once).
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(min = 0, max = 100))]
    pub write_delay_ms: i32,
    /// Reach each node from outside the cluster: the operator gives every chat-node pod a Service of its
    /// own and registries hand out that Service's address instead of the pod's (absent: the advertised
    /// URL, which by default is the pod IP, reachable inside the cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose: Option<NodeExposure>,
}

/// How each chat-node is exposed outside the cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type != 'NodePort' || has(self.host)").message("spec.nodes.expose.host is required with type NodePort: the address clients reach the cluster's nodes at"))]
pub struct NodeExposure {
    /// `NodePort` (one node port per chat-node on every node) or `LoadBalancer` (one load-balancer
    /// address per chat-node).
    #[serde(rename = "type", default)]
    pub type_: ExposeType,
    /// The host clients open node ports at (NodePort): a node's external address, or a DNS name resolving
    /// to the nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9.:\\\\[\\\\]-]+$')").message("spec.nodes.expose.host must be a host name or an IP address"))]
    pub host: Option<String>,
}

/// Service type of an exposed chat-node.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum ExposeType {
    /// A node port on every node.
    #[default]
    NodePort,
    /// A load balancer of the cloud provider.
    LoadBalancer,
}

impl ExposeType {
    /// The Service `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExposeType::NodePort => "NodePort",
            ExposeType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// Registries: the placement-service Deployment and the Service clients talk to.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RegistriesSpec {
    /// Number of registries.
    #[serde(default = "default_registries")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// Container image of the registry.
    #[serde(default = "default_registry_image")]
    #[x_kube(validation = Rule::new("self != ''").message("spec.registries.image must not be empty"))]
    pub image: String,
    /// Image pull policy; the cluster default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// Compute resources of the registry container (default: requests 50m CPU, 64Mi memory).
    #[serde(default = "default_registry_resources")]
    pub resources: ResourceRequirements,
    /// How the registry Service is exposed.
    #[serde(default)]
    pub service: RegistryService,
}

/// The registry Service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RegistryService {
    /// Service type.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Service port (the registry listens on 8081 in the pod).
    #[serde(default = "default_registry_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Annotations of the Service only (e.g. cloud load-balancer settings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Kubernetes Service types the registry can be exposed as.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum ServiceType {
    /// Reachable inside the cluster only.
    #[default]
    ClusterIP,
    /// A port on every node.
    NodePort,
    /// A cloud load balancer.
    LoadBalancer,
}

impl ServiceType {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// Container image pull policy.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    /// Always pull.
    Always,
    /// Pull when the image is missing.
    IfNotPresent,
    /// Never pull.
    Never,
}

impl PullPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Redis: who runs it and how to reach it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.mode == 'External' ? has(self.external) : !has(self.external)").message("spec.redis.external is required when spec.redis.mode is External, and must be absent when it is Managed"),
    validation = Rule::new("!has(self.ackReplicas) || self.mode == 'External' || !has(self.managed) || !has(self.managed.replicas) || self.ackReplicas < self.managed.replicas").message("spec.redis.ackReplicas must be below spec.redis.managed.replicas: a message cannot be confirmed by more replicas than there are")
)]
pub struct RedisSpec {
    /// `Managed` (the operator runs Redis with Sentinel) or `External` (you already run Redis).
    #[serde(default)]
    pub mode: RedisMode,
    /// Replicas that must confirm each message (Redis `WAIT`) before a chat-node acknowledges it: 1 or
    /// more keeps every acknowledged message through the loss of the master. Default: 1 with managed
    /// Redis of two or more data nodes, else 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 5))]
    pub ack_replicas: Option<u32>,
    /// Settings of managed Redis (ignored in External mode).
    #[serde(default)]
    pub managed: ManagedRedis,
    /// How to reach external Redis (External mode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalRedis>,
}

/// Who runs Redis.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum RedisMode {
    /// The operator runs Redis data nodes and sentinels as StatefulSets.
    #[default]
    Managed,
    /// Redis is run elsewhere; the operator only connects to it.
    External,
}

/// Redis run by the operator: one master, replicas, and sentinels that promote a replica when it dies.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.sentinels % 2 == 1").message("spec.redis.managed.sentinels must be odd (1, 3, 5, ...) so the sentinels can always form a majority"),
    validation = Rule::new("!has(self.quorum) || self.quorum <= self.sentinels").message("spec.redis.managed.quorum must not exceed spec.redis.managed.sentinels, or no failover could ever be agreed"),
    // Transition rules: a StatefulSet's volume claim templates are immutable, so these changes could
    // never be applied; refusing them here beats a ChatCluster stuck Degraded.
    validation = Rule::new("(has(self.ephemeral) && self.ephemeral) == (has(oldSelf.ephemeral) && oldSelf.ephemeral)").message("spec.redis.managed.ephemeral cannot be changed after creation: the data StatefulSet's volume claims are immutable — create a new ChatCluster to move between emptyDir and persistent volumes"),
    validation = Rule::new("quantity(string(self.storage)).compareTo(quantity(string(oldSelf.storage))) >= 0").message("spec.redis.managed.storage can grow but not shrink: a volume cannot be made smaller"),
    validation = Rule::new("(has(self.storageClassName) ? self.storageClassName : '') == (has(oldSelf.storageClassName) ? oldSelf.storageClassName : '')").message("spec.redis.managed.storageClassName cannot be changed after creation: the data StatefulSet's volume claims are immutable"),
    validation = Rule::new("has(self.tls) == has(oldSelf.tls)").message("spec.redis.managed.tls cannot be turned on or off after creation: servers and clients would speak different protocols while the pods restart — create a new ChatCluster")
)]
pub struct ManagedRedis {
    /// Redis data nodes (one master, the rest replicas).
    #[serde(default = "default_redis_replicas")]
    #[schemars(range(min = 1, max = 9))]
    pub replicas: i32,
    /// Sentinels watching the master (odd, at least 1).
    #[serde(default = "default_sentinels")]
    #[schemars(range(min = 1, max = 9))]
    pub sentinels: i32,
    /// Sentinels that must agree the master is down; a majority of `sentinels` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 9))]
    pub quorum: Option<i32>,
    /// Master name the sentinels monitor.
    #[serde(default = "default_master_name")]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_.-]+$')").message("spec.redis.managed.masterName may contain only letters, digits, '_', '.' and '-'"))]
    pub master_name: String,
    /// Redis image (must contain redis-server, redis-sentinel, redis-cli and sh).
    #[serde(default = "default_redis_image")]
    pub image: String,
    /// Persistent volume size per data node (default 1Gi). Can grow (the operator grows each claim, no
    /// pod restarts; the storage class must allow volume expansion), never shrink.
    #[serde(default = "default_storage")]
    pub storage: Quantity,
    /// Keep the data in an emptyDir instead of a persistent volume (default false): a data pod that is
    /// replaced then starts empty and takes its data from a replica, and losing every data pod at once
    /// loses everything. Fixed at creation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ephemeral: bool,
    /// Storage class of the data volumes (the cluster default when absent). Fixed at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Compute resources of the Redis data-node container (default: requests 100m CPU, 256Mi memory).
    #[serde(default = "default_redis_resources")]
    pub resources: ResourceRequirements,
    /// Compute resources of the sentinel container (default: requests 25m CPU, 32Mi memory).
    #[serde(default = "default_sentinel_resources")]
    pub sentinel_resources: ResourceRequirements,
    /// TLS between every client and the data nodes and sentinels, and among them (default: plain TCP
    /// inside the chat system, behind its NetworkPolicies). Set at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ManagedRedisTls>,
}

/// The certificate of the managed data nodes and sentinels.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ManagedRedisTls {
    /// A Secret in the ChatCluster's namespace holding `tls.crt`, `tls.key` and `ca.crt` (what
    /// cert-manager writes): a certificate for `*.<name>-redis-headless.<namespace>.svc.<domain>`,
    /// `*.<name>-sentinel-headless.<namespace>.svc.<domain>` and
    /// `<name>-sentinel-headless.<namespace>.svc.<domain>`, and the authority that signed it, which every
    /// client trusts. A changed Secret (a renewed certificate) restarts the data nodes and sentinels one
    /// at a time, the operator's way (replicas first, failover before the master), and rolls the clients.
    #[x_kube(validation = Rule::new("self != ''").message("spec.redis.managed.tls.secretName must name a Secret"))]
    pub secret_name: String,
}

/// Redis run elsewhere.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.url) != has(self.sentinels)").message("spec.redis.external: set exactly one of url or sentinels"),
    validation = Rule::new("!has(self.sentinels) || size(self.sentinels) > 0").message("spec.redis.external.sentinels must list at least one host:port"),
    validation = Rule::new("!has(self.tls) || !has(self.url) || self.url.startsWith('rediss://')").message("spec.redis.external.tls needs a rediss:// url (or sentinels, which are then reached over TLS too)")
)]
pub struct ExternalRedis {
    /// Redis URL (`redis://host:port/db` or `rediss://...`); put the password in `passwordSecretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('redis://') || self.startsWith('rediss://')").message("spec.redis.external.url must start with redis:// or rediss://"))]
    pub url: Option<String>,
    /// Sentinel addresses (`host:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub sentinels: Option<Vec<String>>,
    /// Master name the sentinels monitor.
    #[serde(default = "default_master_name")]
    pub master_name: String,
    /// Secret key holding the Redis password (none when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeySelector>,
    /// TLS settings of a `rediss://` url: whom to trust and what to present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ExternalRedisTls>,
}

/// TLS to external Redis.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ExternalRedisTls {
    /// Secret key holding the PEM certificate authorities the server's certificate must chain to
    /// (default: the system's roots in the images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeySelector>,
    /// A `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`) whose certificate chat-nodes, registries and
    /// the operator present to a server that asks for one (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_secret: Option<String>,
}

/// How clients prove who they are (`chat-node/PROTOCOL.md` section 2), rendered as chat-node's
/// `--auth`, `--jwt-*` and `--allowed-origins` and the registry's `--allowed-origins`.
///
/// `mode: jwt` (the default) verifies HS256 tokens with the key in `hmacSecretRef`, or
/// RS256/ES256/EdDSA tokens with the keys at `jwksUrl`. With neither, the operator generates a key
/// Secret `<name>-jwt` once (32 random bytes, hex, key `hmac`) and never rotates it: mint tokens for
/// your users with it. `mode: open` accepts any user name and must be chosen explicitly.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!(has(self.hmacSecretRef) && has(self.jwksUrl))").message("spec.auth: set at most one of hmacSecretRef and jwksUrl (neither: the operator generates the HMAC key Secret <name>-jwt)"),
    validation = Rule::new("!has(self.mode) || self.mode != 'open' || !(has(self.hmacSecretRef) || has(self.jwksUrl) || has(self.issuer) || has(self.audience))").message("spec.auth.mode open accepts any user name: drop hmacSecretRef, jwksUrl, issuer and audience, or use mode jwt")
)]
pub struct AuthSpec {
    /// `jwt` (default): a signed token in the first `hello` frame. `open`: any user name is accepted,
    /// for trusted networks and development only.
    #[serde(default)]
    pub mode: AuthMode,
    /// Secret key holding the HS256 secret (at least 32 bytes). Mounted as a file, never put in an
    /// environment variable; a change rolls the chat-node pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_secret_ref: Option<SecretKeySelector>,
    /// JWKS URL of the identity provider (RS256, ES256, EdDSA keys), `https://` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('https://')").message("spec.auth.jwksUrl must be an https:// URL"))]
    pub jwks_url: Option<String>,
    /// Required `iss` claim of every token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub issuer: Option<String>,
    /// Required `aud` claim (one of the token's audiences).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub audience: Option<String>,
    /// Web origins (`scheme://host[:port]`) whose pages may open chat-node's `/ws` and call the
    /// registry (CORS), besides each server's own origin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 256)))]
    #[x_kube(validation = Rule::new("self.all(o, o.matches('^https?://[^/,\\\\s]+$'))").message("spec.auth.allowedOrigins: each entry is scheme://host[:port] (http or https, no path, no comma)"))]
    pub allowed_origins: Vec<String>,
}

/// How connections are identified.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Signed tokens (JWT).
    #[default]
    Jwt,
    /// Any user name, no proof.
    Open,
}

impl AuthMode {
    /// The spelling of chat-node's `--auth`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Jwt => "jwt",
            AuthMode::Open => "open",
        }
    }
}

/// NetworkPolicies: Redis and Sentinel reachable only from this chat system's own pods and the operator;
/// chat-node and registry reachable by clients only on their serving ports, and on their metrics port
/// only from the namespaces listed in `metricsNamespaces`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Render the NetworkPolicies (default true). They take effect where the cluster's network plugin
    /// enforces NetworkPolicy.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Namespaces whose pods may scrape the metrics port (9090) of chat-node and registry pods, by name
    /// (default `[monitoring]`; an empty list admits no scraper).
    #[serde(default = "default_metrics_namespaces")]
    #[schemars(length(max = 20), inner(length(max = 63)))]
    #[x_kube(validation = Rule::new("self.all(n, n.matches('^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'))").message("spec.networkPolicy.metricsNamespaces must hold namespace names (lower-case DNS labels)"))]
    pub metrics_namespaces: Vec<String>,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self {
            enabled: default_true(),
            metrics_namespaces: default_metrics_namespaces(),
        }
    }
}

fn default_metrics_namespaces() -> Vec<String> {
    vec!["monitoring".to_owned()]
}

fn default_true() -> bool {
    true
}

/// Prometheus monitoring of the chat system (see [`crate::monitoring`]).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// Prometheus Operator PodMonitors scraping the `metrics` port of the chat-node and registry pods.
    #[serde(default)]
    pub pod_monitor: PodMonitorSpec,
}

impl MonitoringSpec {
    /// Whether nothing is asked for.
    pub fn is_empty(&self) -> bool {
        self == &MonitoringSpec::default()
    }
}

/// PodMonitors (`monitoring.coreos.com/v1`): rendered only where the Prometheus Operator's CRDs are
/// installed; the `Monitoring` condition says when they are not.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodMonitorSpec {
    /// Render one PodMonitor for the chat-node pods and one for the registry pods.
    #[serde(default)]
    pub enabled: bool,
    /// Scrape interval, e.g. `30s` (absent: the Prometheus's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]+(ms|s|m|h)$')").message("spec.monitoring.podMonitor.interval is a Prometheus duration such as 15s, 1m or 500ms"))]
    pub interval: Option<String>,
    /// Labels of the PodMonitors, for a Prometheus's `podMonitorSelector` (e.g. `release: prometheus`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("self.size() <= 32").message("spec.monitoring.podMonitor.labels takes at most 32 labels"))]
    pub labels: BTreeMap<String, String>,
}

/// Largest `maxFileBytes` chat-node accepts (its `--max-attachment-bytes` range): 64 GiB.
pub const MAX_FILE_BYTES_LIMIT: i64 = 64 << 30;

/// Files in messages (`chat-node/PROTOCOL.md` section 10): where chat-nodes keep them and how much a
/// user may send. Rendered as chat-node's `SWITCHBOARD_ATTACHMENTS_*`, `SWITCHBOARD_MAX_ATTACHMENT_BYTES`
/// and `SWITCHBOARD_ATTACHMENT_QUOTA_BYTES`; the operator probes the bucket every reconcile and reports
/// the answer as the `AttachmentStoreReady` condition (which never affects `Ready`: chat goes on
/// without the store).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentsSpec {
    /// The S3 bucket (AWS S3 or any S3-compatible server such as MinIO).
    pub s3: S3Store,
    /// Largest file in bytes (chat-node's default when absent: 100 MiB; at most 64 GiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_FILE_BYTES_LIMIT))]
    pub max_file_bytes: Option<i64>,
    /// Bytes of files one user may send in 24 hours (chat-node's default when absent: 1 GiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub quota_bytes_per_day: Option<i64>,
}

/// An S3 bucket and the Secret holding the key chat-nodes (and the operator's probe) use.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3Store {
    /// Bucket name (3 to 63 lower-case letters, digits, dots and hyphens). It must exist: the operator
    /// does not create it.
    #[schemars(length(min = 3, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$')").message("spec.attachments.s3.bucket must be an S3 bucket name: 3 to 63 lower-case letters, digits, dots and hyphens, starting and ending with a letter or digit"))]
    pub bucket: String,
    /// Endpoint of an S3-compatible server, e.g. `http://minio.storage:9000` (requests are path-style);
    /// absent: AWS S3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#\\\\s]+(/[^?#\\\\s]*)?$')").message("spec.attachments.s3.endpoint must be an http:// or https:// URL such as http://minio.storage:9000"))]
    pub endpoint: Option<String>,
    /// Region of the bucket (chat-node's default when absent: `us-east-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_.-]+$')").message("spec.attachments.s3.region may contain only letters, digits, '_', '.' and '-' (e.g. us-east-1)"))]
    pub region: Option<String>,
    /// A Secret in the ChatCluster's namespace with the keys `accessKeyId` and `secretAccessKey`. They
    /// reach chat-node through `secretKeyRef` (never a value in the pod spec); a change rolls the
    /// chat-node pods. While the Secret or a key is missing the chat-nodes run with attachments off and
    /// `AttachmentStoreReady` is False (`CredentialsMissing`).
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')").message("spec.attachments.s3.credentialsSecret must name a Secret (a lower-case DNS name)"))]
    pub credentials_secret: String,
}

/// Pod scheduling applied to every pod of the chat system.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Scheduling {
    /// Node labels a pod's node must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations of every pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Affinity of every pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Priority class of every pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Topology spread of every component's pods. Absent: each component spreads over zones and over
    /// hosts (maxSkew 1, ScheduleAnyway). Given: these constraints, each with the component's own pods
    /// as its label selector unless it names one; an empty list turns spreading off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
}

impl Scheduling {
    /// Whether no knob is set.
    pub fn is_empty(&self) -> bool {
        self == &Scheduling::default()
    }
}

/// What the operator observed, written through the status subresource.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Socket servers.
    #[serde(default)]
    pub nodes: Replicas,
    /// Registries.
    #[serde(default)]
    pub registries: Replicas,
    /// Redis.
    #[serde(default)]
    pub redis: RedisStatus,
    /// Members of the registry load set (ready socket servers clients can be placed on), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_set_members: Option<i32>,
    /// Label selector of the socket-server pods (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// `Ready`, `Reconciling`, `Stalled`, `Progressing`, `Degraded`; `Monitoring` and
    /// `AttachmentStoreReady` when asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Ready and desired replicas of one component.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub struct Replicas {
    /// Pods ready.
    pub ready: i32,
    /// Pods desired.
    pub desired: i32,
}

impl Replicas {
    /// `ready >= desired`.
    pub fn is_complete(&self) -> bool {
        self.ready >= self.desired
    }
}

/// Redis part of the status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisStatus {
    /// Managed data nodes (zero in External mode).
    #[serde(default)]
    pub data_nodes: Replicas,
    /// Managed sentinels (zero in External mode).
    #[serde(default)]
    pub sentinels: Replicas,
    /// `host:port` of the current master as the sentinels report it (or the external URL's host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_master: Option<String>,
}

/// Condition types.
pub mod condition {
    /// Serving: every component has its desired ready pods, Redis is reachable with a known master, the
    /// load set equals the ready socket servers, and nothing is degraded.
    pub const READY: &str = "Ready";
    /// A workload is short of its desired ready pods.
    pub const PROGRESSING: &str = "Progressing";
    /// Something needs a person: the message says what.
    pub const DEGRADED: &str = "Degraded";
    /// kstatus: the operator is still working towards serving (the reason says what it waits for).
    pub const RECONCILING: &str = "Reconciling";
    /// kstatus: progress is blocked (a problem a person must fix, or the progress deadline passed).
    pub const STALLED: &str = "Stalled";
    /// `spec.monitoring.podMonitor`: True once the PodMonitors are applied, False (reason
    /// `PrometheusOperatorMissing`) where the API server serves no PodMonitor; absent when not asked for.
    /// Never affects `Ready`.
    pub const MONITORING: &str = "Monitoring";
    /// `spec.attachments`: True (reason `Reachable`) when the bucket answers the operator's probe with
    /// the credentials Secret's key; False with reason `CredentialsMissing`, `StoreUnreachable`,
    /// `AccessDenied` or `BucketMissing` otherwise; absent without `spec.attachments`. Never affects
    /// `Ready`: chat goes on without the store.
    pub const ATTACHMENT_STORE_READY: &str = "AttachmentStoreReady";
}

impl ChatCluster {
    /// The cluster id of this chat system in Redis and in the chat-node/registry configuration:
    /// `<namespace>/<name>`.
    pub fn cluster_id(&self) -> String {
        format!(
            "{}/{}",
            self.metadata.namespace.as_deref().unwrap_or("default"),
            self.metadata.name.as_deref().unwrap_or_default()
        )
    }

    /// The condition of `type_`, if set.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
    }
}

impl RedisSpec {
    /// The replicas each message waits for: the given number, else 1 when managed Redis has a replica.
    pub fn effective_ack_replicas(&self) -> u32 {
        self.ack_replicas.unwrap_or(match self.mode {
            RedisMode::Managed if self.managed.replicas >= 2 => 1,
            _ => 0,
        })
    }
}

impl ManagedRedis {
    /// The quorum in effect: the given one, else a majority of the sentinels.
    pub fn effective_quorum(&self) -> i32 {
        self.quorum.unwrap_or(self.sentinels / 2 + 1)
    }
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

impl Default for NodesSpec {
    fn default() -> Self {
        Self {
            replicas: default_nodes(),
            image: default_node_image(),
            image_pull_policy: None,
            resources: default_node_resources(),
            capacity: default_capacity(),
            advertise_url: default_advertise_url(),
            drain_timeout_seconds: default_drain(),
            write_delay_ms: 0,
            expose: None,
        }
    }
}

impl Default for RegistriesSpec {
    fn default() -> Self {
        Self {
            replicas: default_registries(),
            image: default_registry_image(),
            image_pull_policy: None,
            resources: default_registry_resources(),
            service: RegistryService::default(),
        }
    }
}

impl Default for RegistryService {
    fn default() -> Self {
        Self {
            type_: ServiceType::default(),
            port: default_registry_port(),
            annotations: BTreeMap::new(),
        }
    }
}

impl Default for ManagedRedis {
    fn default() -> Self {
        Self {
            replicas: default_redis_replicas(),
            sentinels: default_sentinels(),
            quorum: None,
            master_name: default_master_name(),
            image: default_redis_image(),
            storage: default_storage(),
            ephemeral: false,
            storage_class_name: None,
            resources: default_redis_resources(),
            sentinel_resources: default_sentinel_resources(),
            tls: None,
        }
    }
}

// Two of each stateless component: one can be rolled or lost while the other serves.
fn default_nodes() -> i32 {
    2
}
fn default_registries() -> i32 {
    2
}
// One master and two replicas: a failover still leaves a replica behind.
fn default_redis_replicas() -> i32 {
    3
}
// Three sentinels: the smallest odd count that survives losing one.
fn default_sentinels() -> i32 {
    3
}
fn default_capacity() -> i64 {
    10_000
}
fn default_storage() -> Quantity {
    Quantity("1Gi".to_owned())
}

fn default_drain() -> i32 {
    30
}
fn default_registry_port() -> i32 {
    80
}
fn default_node_image() -> String {
    DEFAULT_NODE_IMAGE.to_owned()
}
fn default_registry_image() -> String {
    DEFAULT_REGISTRY_IMAGE.to_owned()
}
fn default_redis_image() -> String {
    DEFAULT_REDIS_IMAGE.to_owned()
}
fn default_master_name() -> String {
    DEFAULT_MASTER_NAME.to_owned()
}
/// Requests only (no limits): the scheduler places pods by them and a busy pod may use idle CPU.
fn requests(cpu: &str, memory: &str) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])),
        ..ResourceRequirements::default()
    }
}
// Sized for a node with a few thousand idle connections; production sizes go in the spec.
fn default_node_resources() -> ResourceRequirements {
    requests("100m", "128Mi")
}
fn default_registry_resources() -> ResourceRequirements {
    requests("50m", "64Mi")
}
fn default_redis_resources() -> ResourceRequirements {
    requests("100m", "256Mi")
}
fn default_sentinel_resources() -> ResourceRequirements {
    requests("25m", "32Mi")
}
fn default_advertise_url() -> String {
    "ws://{podIP}:{port}/ws".to_owned()
}

/// The CRD as YAML, exactly what `crdgen` prints and `crds/chatcluster.yaml` holds.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&ChatCluster::crd()).map(|y| format!("---\n{y}"))
}

#[cfg(test)]
mod tests;
