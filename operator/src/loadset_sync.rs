//! Pod readiness replaces a health checker: the registry's load set of each ChatCluster is kept equal to
//! the READY, non-terminating endpoints of its chat-node Service.
//!
//! ```text
//! EndpointSlice of <name>-node changed ─┐
//! every resync interval (default 10 s) ─┼─▶ sync(ChatCluster)
//! ChatCluster changed ──────────────────┘     ├─ desired = pods of ready, non-terminating endpoints
//!                                             ├─ LoadSet::hold_membership(3 × resync)  (the lease)
//!                                             ├─ LoadSet::sync_members(desired)   (adds and removes)
//!                                             ├─ connections per pod ─▶ Observations (for the
//!                                             │    reconciler's pod-deletion-cost before a scale-down)
//!                                             ├─ current master (sentinels / external URL)
//!                                             └─ Observation ─▶ status (reconcile) + MasterChanged event
//! ChatCluster deleted (External mode) ─▶ finalizer: chat-node Deployment scaled to 0, wait until no
//!                                        chat-node pod is left (nothing writes), LoadSet::delete_all,
//!                                        then let it go
//! every resync: Redis clients and observations of ChatClusters that are gone ─▶ released
//! ```
//!
//! Each ChatCluster has its own cluster id (`<namespace>/<name>`), hence its own key prefix, so chat
//! systems sharing one Redis never see each other's members. In Managed mode the Redis keys live and die
//! with the managed Redis pods, so no finalizer is needed there. The pause annotation
//! ([`crate::context::PAUSED_ANNOTATION`]) stops this sync too: during maintenance nothing writes Redis.
//!
//! The membership lease tells the chat-nodes that an operator owns membership: while it is held they
//! never add themselves and the registries keep members whose heartbeat expired for this sync to
//! remove. It is renewed only by a sync that could read pod readiness, so when the operator is down,
//! paused, or cut off from the API server, it lapses after three resync intervals and the nodes'
//! heartbeats keep the load set true on their own (ready nodes add themselves, dead ones drop out;
//! `switchboard-loadset` docs). The next sync takes it back and makes the members equal to the ready
//! pods again.
//!
//! This controller shares [`crate::context`], [`crate::observation`] and [`crate::secret`] with
//! [`crate::reconcile`] and depends on nothing of it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use switchboard_loadset::LoadSet;
use switchboard_redis::RedisArgs;
use switchboard_redis::keys::Keys;
use switchboard_redis::sentinel;
use switchboard_runtime::report;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument, warn};

use crate::context::{Context, FIELD_MANAGER, is_paused, scoped};
use crate::crd::{ChatCluster, RedisMode};
use crate::observation::Observation;
use crate::resources::{self, Component, Names, PasswordRef, label};
use crate::secret::{self, Password, read_password};

/// Finalizer that deletes an External-mode chat system's keys from Redis before the ChatCluster goes.
pub const FINALIZER: &str = "switchboard.dev/loadset-cleanup";
pub use crate::reconcile::POD_DELETION_COST;
/// Label the EndpointSlice controller puts on every slice of a Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const CONTROLLER: &str = "loadset";

/// Errors of one load-set sync.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("{op}")]
    Kube {
        /// What was being done.
        op: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// Redis could not be reached or refused the configuration.
    #[error(transparent)]
    Redis(#[from] switchboard_redis::Error),
    /// The password Secret could not be read.
    #[error(transparent)]
    Secret(#[from] secret::ReadError),
    /// A load-set operation failed.
    #[error(transparent)]
    LoadSet(#[from] switchboard_loadset::Error),
    /// The Redis settings could not be worked out (e.g. the password Secret is missing).
    #[error("{0}")]
    Config(String),
    /// Connecting took too long.
    #[error("connecting to Redis ({0}) timed out")]
    Timeout(String),
    /// Names could not be derived.
    #[error(transparent)]
    Render(#[from] resources::Error),
}

impl Error {
    /// A short stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } | Error::Secret(_) => "kube",
            Error::Redis(_) => "redis",
            Error::LoadSet(e) => e.metric_label(),
            Error::Config(_) => "config",
            Error::Timeout(_) => "timeout",
            Error::Render(_) => "render",
        }
    }

    fn kube(op: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let op = op.into();
        move |source| Error::Kube { op, source }
    }
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Settings of the load-set sync.
#[derive(Clone, Debug)]
pub struct SyncConfig {
    /// Full resync of every chat system (repairs drift such as a member added by hand).
    pub resync: Duration,
    /// Time allowed for connecting to Redis and for asking a sentinel.
    pub redis_timeout: Duration,
    /// How long a deleted ChatCluster waits for its keys to be deleted before it is let go anyway.
    pub cleanup_grace: Duration,
}

impl SyncConfig {
    /// How long the membership lease outlives a sync: three resyncs, so one slow or failed sync (or a
    /// leader handover, 15 s) does not hand membership to the nodes.
    pub fn membership_lease(&self) -> Duration {
        self.resync.saturating_mul(3)
    }
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            resync: Duration::from_secs(10),
            redis_timeout: Duration::from_secs(5),
            cleanup_grace: Duration::from_secs(60),
        }
    }
}

struct Connection {
    key: String,
    loadset: LoadSet,
}

/// State of the load-set sync controller.
pub struct SyncContext {
    ctx: Arc<Context>,
    config: SyncConfig,
    connections: tokio::sync::Mutex<HashMap<String, Connection>>,
}

impl std::fmt::Debug for SyncContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncContext")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SyncContext {
    /// A sync context sharing the reconciler's client, recorder, metrics and observations.
    pub fn new(ctx: Arc<Context>, config: SyncConfig) -> Arc<Self> {
        Arc::new(Self {
            ctx,
            config,
            connections: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    async fn loadset(&self, cc: &ChatCluster, args: &RedisArgs) -> Result<LoadSet> {
        let id = cc.cluster_id();
        let key = resources::fingerprint(&[
            args.redis_url.as_deref().unwrap_or_default().as_bytes(),
            args.redis_sentinels.join(",").as_bytes(),
            args.redis_master_name.as_bytes(),
            args.redis_password
                .as_deref()
                .unwrap_or_default()
                .as_bytes(),
        ]);
        let mut connections = self.connections.lock().await;
        if let Some(c) = connections.get(&id).filter(|c| c.key == key) {
            return Ok(c.loadset.clone());
        }
        if let Some(old) = connections.remove(&id) {
            close(old.loadset);
        }
        let client =
            tokio::time::timeout(self.config.redis_timeout, switchboard_redis::connect(args))
                .await
                .map_err(|_| Error::Timeout(args.describe()))??;
        let loadset = LoadSet::new(client, Keys::new(&id));
        connections.insert(
            id,
            Connection {
                key,
                loadset: loadset.clone(),
            },
        );
        self.count_connections(connections.len());
        Ok(loadset)
    }

    async fn drop_connection(&self, cluster_id: &str) {
        let mut connections = self.connections.lock().await;
        if let Some(old) = connections.remove(cluster_id) {
            close(old.loadset);
        }
        self.count_connections(connections.len());
    }

    fn count_connections(&self, n: usize) {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        self.ctx.metrics.redis_connections.set(n);
    }

    /// Redis clients held, one per chat system the sync has reached.
    pub async fn connection_count(&self) -> usize {
        self.connections.lock().await.len()
    }

    /// Releases the Redis client and the observation of every chat system whose cluster id `live` does
    /// not hold. A Managed ChatCluster has no finalizer, so its deletion is never reconciled: this is
    /// what frees its client.
    pub async fn retain(&self, live: &HashSet<String>) {
        let mut connections = self.connections.lock().await;
        let gone: Vec<String> = connections
            .keys()
            .filter(|id| !live.contains(*id))
            .cloned()
            .collect();
        for id in gone {
            if let Some(old) = connections.remove(&id) {
                debug!(cluster = %id, "released the Redis client of a deleted chat system");
                close(old.loadset);
            }
        }
        self.count_connections(connections.len());
        drop(connections);
        let observations = &self.ctx.observations;
        observations.retain(live);
        let n = i64::try_from(observations.len()).unwrap_or(i64::MAX);
        self.ctx.metrics.observed_clusters.set(n);
    }
}

/// Stops a client's reconnect loop in the background.
fn close(loadset: LoadSet) {
    use fred::interfaces::ClientLike;
    let client = loadset.client().clone();
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(2), client.quit()).await;
    });
}

/// Every resync, releases what is held for ChatClusters that no longer exist (see
/// [`SyncContext::retain`]), until `shutdown` fires.
async fn release_deleted(
    sctx: &SyncContext,
    store: &Store<ChatCluster>,
    shutdown: &CancellationToken,
) {
    // An empty store before the first list would release everything for nothing.
    tokio::select! {
        () = shutdown.cancelled() => return,
        ready = store.wait_until_ready() => if ready.is_err() { return },
    }
    let mut tick = tokio::time::interval(sctx.config.resync);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let live: HashSet<String> = store.state().iter().map(|cc| cc.cluster_id()).collect();
        sctx.retain(&live).await;
    }
}

/// Runs the load-set sync controller until `shutdown` fires.
pub async fn run(sctx: Arc<SyncContext>, shutdown: CancellationToken) {
    let client = sctx.ctx.client.clone();
    let ns = sctx.ctx.config.namespace.clone();
    // The EndpointSlice controller copies the Service's labels onto its slices.
    let slices = watcher::Config::default().labels(&format!(
        "{}={},{}={}",
        label::COMPONENT,
        Component::ChatNode.as_str(),
        label::MANAGED_BY,
        resources::MANAGED_BY
    ));
    let controller = Controller::new(
        scoped::<ChatCluster>(&client, ns.as_deref()),
        watcher::Config::default().any_semantic(),
    );
    let store = controller.store();
    let release = release_deleted(&sctx, &store, &shutdown);
    let stop = shutdown.clone();
    let controller = controller
        .watches(
            scoped::<EndpointSlice>(&client, ns.as_deref()),
            slices,
            |slice: EndpointSlice| {
                let ns = slice.namespace()?;
                let instance = slice.labels().get(label::INSTANCE)?.clone();
                Some(ObjectRef::new(&instance).within(&ns))
            },
        )
        .graceful_shutdown_on(async move { stop.cancelled().await })
        .run(sync, error_policy, sctx.clone())
        .for_each(|result| async move {
            if let Err(err) = result {
                debug!(error = %report::chain(&err), "load-set sync loop");
            }
        });
    tokio::join!(controller, release);
}

/// Requeues a failed sync with the reconciler's backoff.
pub fn error_policy(cc: Arc<ChatCluster>, err: &Error, sctx: Arc<SyncContext>) -> Action {
    sctx.ctx.metrics.failed(CONTROLLER, err.metric_label());
    warn!(name = %cc.name_any(), namespace = ?cc.namespace(), error = %report::chain(err), "load-set sync failed");
    Action::requeue(sctx.config.resync.min(Duration::from_secs(5)))
}

/// Syncs the load set of one ChatCluster.
#[instrument(skip(cc, sctx), fields(cluster = %cc.cluster_id()))]
pub async fn sync(cc: Arc<ChatCluster>, sctx: Arc<SyncContext>) -> Result<Action> {
    let started = Instant::now();
    let result = sync_one(&cc, &sctx).await;
    sctx.ctx.metrics.reconciled(CONTROLLER, started.elapsed());
    result
}

async fn sync_one(cc: &ChatCluster, sctx: &SyncContext) -> Result<Action> {
    let ns = cc
        .namespace()
        .ok_or(resources::Error::MissingMetadata("namespace"))?;
    let clusters: Api<ChatCluster> = Api::namespaced(sctx.ctx.client.clone(), &ns);
    if cc.metadata.deletion_timestamp.is_some() {
        return cleanup(cc, sctx, &clusters).await;
    }
    if is_paused(cc) {
        return Ok(Action::await_change());
    }
    let external = cc.spec.redis.mode == RedisMode::External;
    let has_finalizer = cc.finalizers().iter().any(|f| f == FINALIZER);
    if external != has_finalizer {
        set_finalizer(cc, &clusters, external).await?;
    }

    let endpoint = resources::redis_endpoint(cc, &sctx.ctx.config.cluster_domain)?;
    let mut observation = sctx.ctx.observations.get(&cc.cluster_id());
    let args = redis_args(cc, sctx, &ns).await;
    // The sentinels ask for their own password; TLS is the same as the client's.
    let sentinel_access = args
        .as_ref()
        .ok()
        .map(|a| switchboard_redis::node::Access {
            password: a.redis_sentinel_password.clone(),
            tls: a.access().ok().and_then(|access| access.tls),
        })
        .unwrap_or_default();
    observation.current_master = current_master(&endpoint, &sentinel_access, sctx).await;
    let loadset = match args {
        Ok(args) => sctx.loadset(cc, &args).await,
        Err(err) => Err(err),
    };
    let loadset = match loadset {
        Ok(l) => l,
        Err(err) => {
            observation.redis_error = Some(report::chain(&err));
            record(cc, sctx, observation).await;
            sctx.ctx.metrics.failed(CONTROLLER, err.metric_label());
            debug!(error = %report::chain(&err), "Redis unavailable for the load set");
            return Ok(Action::requeue(sctx.config.resync));
        }
    };

    let desired = ready_pods(&sctx.ctx.client, &ns, &Names::of(cc)?.node()).await?;
    let synced = match loadset
        .hold_membership(sctx.config.membership_lease())
        .await
    {
        Ok(()) => loadset.sync_members(&desired).await,
        Err(err) => Err(err),
    };
    let report = match synced {
        Ok(report) => report,
        Err(err) => {
            sctx.drop_connection(&cc.cluster_id()).await;
            observation.redis_error = Some(report::chain(&err));
            record(cc, sctx, observation).await;
            return Err(err.into());
        }
    };
    if !report.added.is_empty() || !report.removed.is_empty() {
        info!(added = ?report.added, removed = ?report.removed, "load set changed");
        sctx.ctx
            .metrics
            .loadset_changed(report.added.len(), report.removed.len());
    }
    // Exposed nodes are handed out at their external address (crate::expose).
    match crate::expose::external_urls(&sctx.ctx.client, cc, &ns).await {
        Ok(urls) => {
            if let Err(err) = loadset.set_exposed(&urls).await {
                warn!(error = %report::chain(&err), "could not record the exposed nodes' URLs");
            }
        }
        Err(err) => warn!(error = %err, "could not read the per-pod Services"),
    }
    observation.members = Some(i32::try_from(desired.len()).unwrap_or(i32::MAX));
    observation.redis_error = None;
    match loadset.nodes().await {
        Ok(nodes) => {
            let scores: BTreeMap<String, u64> =
                nodes.into_iter().map(|n| (n.id, n.connections)).collect();
            sctx.ctx
                .observations
                .set_connections(&cc.cluster_id(), scores);
        }
        Err(err) => warn!(error = %report::chain(&err), "could not read load-set scores"),
    }
    record(cc, sctx, observation).await;
    Ok(Action::requeue(sctx.config.resync))
}

/// Stores the observation and announces a master change.
async fn record(cc: &ChatCluster, sctx: &SyncContext, observation: Observation) {
    let new_master = observation.current_master.clone();
    let previous = sctx.ctx.observations.update(cc, observation);
    if let (Some(old), Some(new)) = (previous.current_master, new_master)
        && old != new
    {
        sctx.ctx.metrics.redis_failovers.inc();
        sctx.ctx
            .event(
                cc,
                EventType::Normal,
                "MasterChanged",
                format!("the Redis master moved from {old} to {new}"),
            )
            .await;
    }
}

/// Names of the pods behind READY, non-terminating endpoints of Service `service`.
pub async fn ready_pods(client: &Client, ns: &str, service: &str) -> Result<BTreeSet<String>> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let list = slices
        .list(&ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}={service}")))
        .await
        .map_err(Error::kube(format!(
            "list EndpointSlices of {ns}/{service}"
        )))?;
    Ok(ready_endpoint_pods(&list.items))
}

/// The pod names of the ready, non-terminating endpoints of `slices` (pure, for tests).
pub fn ready_endpoint_pods(slices: &[EndpointSlice]) -> BTreeSet<String> {
    slices
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter(|e| {
            let c = e.conditions.clone().unwrap_or_default();
            c.ready == Some(true) && c.terminating != Some(true)
        })
        .filter_map(|e| e.target_ref.as_ref())
        .filter(|r| r.kind.as_deref().is_none_or(|k| k == "Pod"))
        .filter_map(|r| r.name.clone())
        .collect()
}

/// The Redis connection settings of `cc` with the password read from its Secret.
async fn redis_args(cc: &ChatCluster, sctx: &SyncContext, ns: &str) -> Result<RedisArgs> {
    let endpoint = resources::redis_endpoint(cc, &sctx.ctx.config.cluster_domain)?;
    let mut args = match &endpoint.url {
        Some(url) => RedisArgs::from_url(url.clone()),
        None => RedisArgs::from_sentinels(endpoint.sentinels.clone(), endpoint.master_name.clone()),
    };
    if let Some(reference) = &endpoint.password {
        let password =
            String::from_utf8_lossy(&secret_value(sctx, ns, reference).await?).into_owned();
        args = args.with_password(password);
    }
    if let Some(reference) = &endpoint.sentinel_password
        && let Password::Value(password) = read_password(&sctx.ctx.client, ns, reference).await?
    {
        args = args.with_sentinel_password(password);
    }
    if let Some(tls) = &endpoint.tls {
        if let Some(ca) = &tls.ca {
            args.redis_tls_ca_pem = Some(secret_value(sctx, ns, ca).await?);
        }
        if let Some(secret) = &tls.client_secret {
            let part = |key: &str| PasswordRef {
                secret: secret.clone(),
                key: key.to_owned(),
            };
            args.redis_tls_client_pem = Some((
                secret_value(sctx, ns, &part("tls.crt")).await?,
                secret_value(sctx, ns, &part("tls.key")).await?,
            ));
        }
    }
    Ok(args)
}

/// The value of a Secret key the Redis connection needs (TLS material), or a config error naming it.
async fn secret_value(sctx: &SyncContext, ns: &str, reference: &PasswordRef) -> Result<Vec<u8>> {
    match read_password(&sctx.ctx.client, ns, reference).await? {
        Password::Value(value) => Ok(value.into_bytes()),
        Password::NoSecret => Err(Error::Config(format!(
            "Secret {ns}/{} does not exist",
            reference.secret
        ))),
        Password::NoKey => Err(Error::Config(format!(
            "Secret {ns}/{} has no key {:?}",
            reference.secret, reference.key
        ))),
    }
}

async fn current_master(
    endpoint: &resources::RedisEndpoint,
    access: &switchboard_redis::node::Access,
    sctx: &SyncContext,
) -> Option<String> {
    if let Some(url) = &endpoint.url {
        return sentinel::url_host_port(url);
    }
    match sentinel::current_master(
        &endpoint.sentinels,
        &endpoint.master_name,
        access,
        sctx.config.redis_timeout,
    )
    .await
    {
        Ok(master) => master.map(|m| m.to_string()),
        Err(err) => {
            debug!(error = %report::chain(&err), "no sentinel answered");
            None
        }
    }
}

async fn set_finalizer(cc: &ChatCluster, api: &Api<ChatCluster>, present: bool) -> Result<()> {
    let mut finalizers: Vec<String> = cc
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    if present {
        finalizers.push(FINALIZER.to_owned());
    }
    // The resourceVersion makes this a compare-and-swap: a concurrent change fails it and we retry.
    let patch = serde_json::json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": cc.resource_version() }
    });
    api.patch(
        &cc.name_any(),
        &PatchParams::default(),
        &Patch::Merge(patch),
    )
    .await
    .map_err(Error::kube(format!(
        "set finalizers of {}",
        cc.cluster_id()
    )))?;
    Ok(())
}

/// Whether chat-node pods of a deleted chat system may still write its keys.
enum Writers {
    /// No chat-node pod exists any more.
    Gone,
    /// This many chat-node pods still exist (running or terminating).
    Running(usize),
}

/// Scales the chat-node Deployment (when this ChatCluster controls it) to zero, so no new writer
/// starts and the running ones drain; says whether any chat-node pod still exists. The garbage collector
/// would delete the Deployment only after the ChatCluster is gone, i.e. after the cleanup.
async fn stop_writers(cc: &ChatCluster, sctx: &SyncContext, ns: &str) -> Result<Writers> {
    let client = &sctx.ctx.client;
    let name = Names::of(cc)?.node();
    let uid = cc.metadata.uid.clone().unwrap_or_default();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let deployment = deployments
        .get_opt(&name)
        .await
        .map_err(Error::kube(format!("get Deployment {ns}/{name}")))?;
    if let Some(d) = deployment.filter(|d| resources::is_controlled_by(&d.metadata, &uid))
        && d.spec.replicas != Some(0)
    {
        let patch = serde_json::json!({ "spec": { "replicas": 0 } });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        match deployments
            .patch(&name, &params, &Patch::Merge(patch))
            .await
        {
            Ok(_) => info!(deployment = %name, "scaled to 0 before deleting the keys"),
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(source) => {
                return Err(Error::kube(format!("scale Deployment {ns}/{name} to 0"))(
                    source,
                ));
            }
        }
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = resources::selector_string(cc, Component::ChatNode);
    let left = pods
        .list_metadata(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube(format!("list pods {selector}")))?
        .items
        .len();
    Ok(if left == 0 {
        Writers::Gone
    } else {
        Writers::Running(left)
    })
}

/// Deletes the chat system's keys once no chat-node pod can write them any more (the Deployment is
/// scaled to zero first), then releases the ChatCluster. Waits for the pods at most the cleanup grace
/// plus a pod's termination grace (pods stuck beyond that sit on a dead node); gives up on the keys
/// (with a Warning event) once the deletion is older than the cleanup grace and Redis still fails, so an
/// unreachable Redis never blocks a deletion for ever.
async fn cleanup(cc: &ChatCluster, sctx: &SyncContext, api: &Api<ChatCluster>) -> Result<Action> {
    let id = cc.cluster_id();
    sctx.ctx.observations.forget(&id);
    if !cc.finalizers().iter().any(|f| f == FINALIZER) {
        sctx.drop_connection(&id).await;
        return Ok(Action::await_change());
    }
    let ns = cc.namespace().unwrap_or_default();
    let since = cc
        .metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| k8s_openapi::jiff::Timestamp::now().duration_since(t.0))
        .and_then(|d| Duration::try_from(d).ok())
        .unwrap_or_default();
    let pod_grace = Duration::from_secs(
        u64::try_from(resources::node_termination_grace_seconds(cc)).unwrap_or_default(),
    );
    if let Writers::Running(left) = stop_writers(cc, sctx, &ns).await? {
        if since < sctx.config.cleanup_grace + pod_grace {
            debug!(
                pods = left,
                "waiting for the chat-node pods to stop before deleting keys"
            );
            return Ok(Action::requeue(
                sctx.config.resync.min(Duration::from_secs(2)),
            ));
        }
        warn!(
            pods = left,
            "chat-node pods still exist long after their grace period; deleting the keys anyway"
        );
    }
    let deleted = async {
        let args = redis_args(cc, sctx, &ns).await?;
        let loadset = sctx.loadset(cc, &args).await?;
        Ok::<u64, Error>(loadset.delete_all().await?)
    }
    .await;
    match deleted {
        Ok(n) => info!(keys = n, "deleted the chat system's Redis keys"),
        Err(err) => {
            if since < sctx.config.cleanup_grace {
                return Err(err);
            }
            sctx.ctx
                .event(
                    cc,
                    EventType::Warning,
                    "CleanupSkipped",
                    format!(
                        "could not delete the chat system's Redis keys ({}); leaving them behind",
                        report::chain(&err)
                    ),
                )
                .await;
        }
    }
    sctx.drop_connection(&id).await;
    set_finalizer(cc, api, false).await?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};

    use super::*;

    fn endpoint(pod: &str, ready: Option<bool>, terminating: Option<bool>) -> Endpoint {
        Endpoint {
            addresses: vec!["10.0.0.1".to_owned()],
            conditions: Some(EndpointConditions {
                ready,
                serving: ready,
                terminating,
            }),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".to_owned()),
                name: Some(pod.to_owned()),
                ..ObjectReference::default()
            }),
            ..Endpoint::default()
        }
    }

    #[test]
    fn only_ready_non_terminating_endpoints_are_members() {
        let slice = EndpointSlice {
            address_type: "IPv4".to_owned(),
            endpoints: Some(vec![
                endpoint("a", Some(true), None),
                endpoint("b", Some(false), None),
                endpoint("c", Some(true), Some(true)),
                endpoint("d", None, None),
                endpoint("e", Some(true), Some(false)),
            ]),
            ..EndpointSlice::default()
        };
        let other = EndpointSlice {
            address_type: "IPv4".to_owned(),
            endpoints: Some(vec![endpoint("f", Some(true), None)]),
            ..EndpointSlice::default()
        };
        let members = ready_endpoint_pods(&[slice, other]);
        assert_eq!(
            members,
            BTreeSet::from(["a".to_owned(), "e".to_owned(), "f".to_owned()])
        );
    }
}
