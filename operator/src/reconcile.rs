//! The ChatCluster controller: renders the owned objects ([`crate::resources`]), applies them with
//! server-side apply under one field manager, and writes the status through the status subresource.
//!
//! ```text
//! ChatCluster / owned object / referenced Secret / load-set observation changed
//!   └─▶ reconcile
//!        ├─ deleting? ─▶ nothing (owner references let the garbage collector delete the rest)
//!        ├─ paused (annotation switchboard.dev/paused=true)? ─▶ only the status says so
//!        ├─ password: managed Secret created once (never rotated) | external Secret read
//!        ├─ render ─▶ SSA every object (force, manager "switchboard-operator")
//!        ├─ External mode ─▶ delete leftover managed-Redis objects
//!        └─ status (SSA on /status) + Events (Created, Scaled, Degraded, Recovered)
//! ```
//!
//! A problem only the operator can judge (a missing Secret, an object the API server refuses because of
//! a spec value) becomes `Degraded=True` with a message saying what to do; it is not a reconcile error,
//! so it does not spin in backoff. Errors talking to the API server requeue with exponential backoff.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::{Span, debug, info, instrument, warn};

use crate::crd::{self, ChatCluster, ChatClusterStatus, RedisMode, Replicas, condition};
use crate::loadset_sync::Observations;
use crate::metrics::Metrics;
use crate::resources::{self, Component, Desired, Names, RenderContext};

/// The one field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "switchboard-operator";
/// Annotation that pauses reconciliation of one ChatCluster while it is `"true"`.
pub const PAUSED_ANNOTATION: &str = "switchboard.dev/paused";
/// Controller name in metrics and logs.
const CONTROLLER: &str = "chatcluster";

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("{op} {kind} {name}: {source}")]
    Kube {
        /// What was being done (`apply`, `get`, `delete`, ...).
        op: &'static str,
        /// Kind of the object.
        kind: String,
        /// Its name.
        name: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// The objects could not be rendered.
    #[error(transparent)]
    Render(#[from] resources::Error),
    /// No random bytes for a new password.
    #[error("reading random bytes for the Redis password: {0}")]
    Random(#[source] std::io::Error),
    /// The ChatCluster CRD is not installed.
    #[error(
        "the ChatCluster CRD ({}) is not installed: run `kubectl apply -f crds/` (or `cargo run -p operator --bin crdgen | kubectl apply -f -`)",
        crd::CRD_NAME
    )]
    CrdMissing,
}

impl Error {
    /// A short stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
            Error::Render(_) => "render",
            Error::Random(_) => "random",
            Error::CrdMissing => "crd_missing",
        }
    }

    fn kube(
        op: &'static str,
        kind: impl Into<String>,
        name: impl Into<String>,
    ) -> impl FnOnce(kube::Error) -> Self {
        let (kind, name) = (kind.into(), name.into());
        move |source| Error::Kube {
            op,
            kind,
            name,
            source,
        }
    }
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Settings of the controller.
#[derive(Clone, Debug)]
pub struct Config {
    /// Cluster DNS domain for the stable Redis hostnames.
    pub cluster_domain: String,
    /// Requeue of a settled ChatCluster (a safety net: changes trigger reconciles by themselves).
    pub requeue: Duration,
    /// Watch only this namespace (all namespaces when `None`).
    pub namespace: Option<String>,
    /// Backoff after a failed reconcile: first delay, doubled per failure up to `max_backoff`.
    pub min_backoff: Duration,
    /// Upper bound of the backoff.
    pub max_backoff: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cluster_domain: "cluster.local".to_owned(),
            requeue: Duration::from_secs(300),
            namespace: None,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(300),
        }
    }
}

/// Shared state of the controllers.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Publishes Events on ChatClusters.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Settings.
    pub config: Config,
    /// What the load-set sync last saw per ChatCluster.
    pub observations: Arc<Observations>,
    failures: Mutex<HashMap<ObjectRef<ChatCluster>, u32>>,
    /// Uids of the ChatClusters whose creation was announced (the cache may lag our own status write).
    announced: Mutex<std::collections::HashSet<String>>,
}

impl Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context; `reporter` names this replica in Events.
    pub fn new(
        client: Client,
        reporter: &str,
        metrics: Arc<Metrics>,
        config: Config,
        observations: Arc<Observations>,
    ) -> Arc<Self> {
        let recorder = Recorder::new(
            client.clone(),
            kube::runtime::events::Reporter {
                controller: FIELD_MANAGER.to_owned(),
                instance: Some(reporter.to_owned()),
            },
        );
        Arc::new(Self {
            client,
            recorder,
            metrics,
            config,
            observations,
            failures: Mutex::new(HashMap::new()),
            announced: Mutex::new(std::collections::HashSet::new()),
        })
    }

    /// Publishes an Event on `cc`; failures are logged, never fatal.
    pub async fn event(&self, cc: &ChatCluster, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, &cc.object_ref(&())).await {
            warn!(%err, reason, "could not publish event");
        }
    }

    fn backoff(&self, obj: ObjectRef<ChatCluster>) -> Duration {
        let Ok(mut failures) = self.failures.lock() else {
            return self.config.max_backoff;
        };
        let n = failures.entry(obj).or_insert(0);
        *n = n.saturating_add(1);
        let factor = 2u32.saturating_pow((*n - 1).min(16));
        self.config
            .min_backoff
            .saturating_mul(factor)
            .min(self.config.max_backoff)
    }

    fn succeeded(&self, obj: &ObjectRef<ChatCluster>) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(obj);
        }
    }
}

/// Fails with [`Error::CrdMissing`] (which says how to install it) unless the CRD is installed.
pub async fn check_crd(client: &Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    match crds.get_opt(crd::CRD_NAME).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(Error::CrdMissing),
        Err(kube::Error::Api(s)) if s.is_forbidden() => {
            // Without permission to read CRDs, ask for the resource itself instead.
            let api: Api<ChatCluster> = Api::all(client.clone());
            match api.list(&kube::api::ListParams::default().limit(1)).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => Err(Error::CrdMissing),
                Err(source) => Err(Error::kube("list", "ChatCluster", "")(source)),
            }
        }
        Err(source) => Err(Error::kube(
            "get",
            "CustomResourceDefinition",
            crd::CRD_NAME,
        )(source)),
    }
}

/// Whether the pause annotation is set to `"true"`.
pub fn is_paused(cc: &ChatCluster) -> bool {
    cc.annotations()
        .get(PAUSED_ANNOTATION)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Runs the ChatCluster controller until `shutdown` fires. `reconcile_on` receives ChatClusters whose
/// load-set observation changed.
pub async fn run(
    ctx: Arc<Context>,
    reconcile_on: impl futures_util::Stream<Item = ObjectRef<ChatCluster>> + Send + 'static,
    shutdown: CancellationToken,
) {
    let client = ctx.client.clone();
    let ns = ctx.config.namespace.clone();
    let clusters: Api<ChatCluster> = scoped(&client, ns.as_deref());
    let owned = watcher::Config::default().labels(&format!(
        "{}={}",
        resources::label::MANAGED_BY,
        resources::MANAGED_BY
    ));
    let controller = Controller::new(clusters, watcher::Config::default().any_semantic());
    let store = controller.store();
    // Secrets are watched as metadata only (their data is never cached) and mapped to the ChatClusters
    // that use them, so a password change rolls the pods.
    let cluster_domain = ctx.config.cluster_domain.clone();
    controller
        .owns(scoped::<Deployment>(&client, ns.as_deref()), owned.clone())
        .owns(scoped::<StatefulSet>(&client, ns.as_deref()), owned.clone())
        .owns(scoped::<Service>(&client, ns.as_deref()), owned.clone())
        .owns(scoped::<ConfigMap>(&client, ns.as_deref()), owned.clone())
        .owns(scoped::<PodDisruptionBudget>(&client, ns.as_deref()), owned)
        .watches(
            scoped::<PartialObjectMeta<Secret>>(&client, ns.as_deref()),
            watcher::Config::default(),
            move |secret| clusters_using_secret(&store, &secret, &cluster_domain),
        )
        .reconcile_on(reconcile_on)
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                debug!(%err, "reconcile loop");
            }
        })
        .await;
}

/// An `Api` over `namespace`, or over all namespaces.
pub fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn clusters_using_secret(
    store: &Store<ChatCluster>,
    secret: &PartialObjectMeta<Secret>,
    cluster_domain: &str,
) -> Vec<ObjectRef<ChatCluster>> {
    let (Some(ns), name) = (secret.namespace(), secret.name_any()) else {
        return Vec::new();
    };
    store
        .state()
        .iter()
        .filter(|cc| cc.namespace().as_deref() == Some(ns.as_str()))
        .filter(|cc| {
            resources::redis_endpoint(cc, cluster_domain)
                .ok()
                .and_then(|e| e.password)
                .is_some_and(|p| p.secret == name)
        })
        .map(|cc| ObjectRef::from_obj(cc.as_ref()))
        .collect()
}

/// Requeues a failed ChatCluster with exponential backoff.
pub fn error_policy(cc: Arc<ChatCluster>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(CONTROLLER, err.metric_label());
    let delay = ctx.backoff(ObjectRef::from_obj(cc.as_ref()));
    warn!(name = %cc.name_any(), namespace = ?cc.namespace(), error = %err, ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Reconciles one ChatCluster.
#[instrument(skip(cc, ctx), fields(namespace = cc.namespace().unwrap_or_default(), name = %cc.name_any(), generation = cc.metadata.generation, took_ms = tracing::field::Empty))]
pub async fn reconcile(cc: Arc<ChatCluster>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_one(&cc, &ctx).await;
    ctx.metrics.reconciled(CONTROLLER, started.elapsed());
    if result.is_ok() {
        ctx.succeeded(&ObjectRef::from_obj(cc.as_ref()));
    }
    Span::current().record("took_ms", started.elapsed().as_millis());
    result
}

/// Something only the operator can judge, reported as `Degraded=True`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Problem {
    reason: &'static str,
    message: String,
}

async fn reconcile_one(cc: &ChatCluster, ctx: &Context) -> Result<Action> {
    if cc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = cc
        .namespace()
        .ok_or(resources::Error::MissingMetadata("namespace"))?;
    let name = cc.name_any();
    let clusters: Api<ChatCluster> = Api::namespaced(ctx.client.clone(), &ns);
    if is_paused(cc) {
        let mut status = cc.status.clone().unwrap_or_default();
        set_condition(
            &mut status.conditions,
            cc,
            condition::PROGRESSING,
            false,
            "Paused",
            format!(
                "reconciliation is paused: remove the annotation {PAUSED_ANNOTATION} to resume"
            ),
        );
        patch_status(&clusters, cc, status).await?;
        info!("paused");
        return Ok(Action::await_change());
    }

    let mut problems = Vec::new();
    let password = match resolve_password(cc, ctx, &ns).await? {
        Ok(password) => password,
        Err(problem) => {
            problems.push(problem);
            None
        }
    };
    let render_ctx = RenderContext {
        cluster_domain: ctx.config.cluster_domain.clone(),
        password_hash: password.as_deref().map(|p| {
            resources::fingerprint(&[
                cc.metadata.uid.as_deref().unwrap_or_default().as_bytes(),
                p.as_bytes(),
            ])
        }),
    };
    let desired = resources::render(cc, &render_ctx)?;
    let applied = apply_all(&ctx.client, &ns, &desired, &mut problems).await?;
    if cc.spec.redis.mode == RedisMode::External {
        prune_managed_redis(&ctx.client, &ns, &Names::of(cc)?).await?;
    }

    let status = build_status(cc, &applied, &problems, ctx);
    announce(cc, ctx, &status, &problems).await;
    let progressing = status
        .conditions
        .iter()
        .any(|c| c.type_ == condition::PROGRESSING && c.status == "True");
    patch_status(&clusters, cc, status).await?;
    debug!(%name, "reconciled");
    Ok(Action::requeue(if progressing || !problems.is_empty() {
        Duration::from_secs(30)
    } else {
        ctx.config.requeue
    }))
}

/// The Redis password in use: `Ok(Err(problem))` when the spec points at something missing.
async fn resolve_password(
    cc: &ChatCluster,
    ctx: &Context,
    ns: &str,
) -> Result<Result<Option<String>, Problem>> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let endpoint = resources::redis_endpoint(cc, &ctx.config.cluster_domain)?;
    let Some(reference) = endpoint.password else {
        return Ok(Ok(None));
    };
    let existing = secrets
        .get_opt(&reference.secret)
        .await
        .map_err(Error::kube("get", "Secret", &reference.secret))?;
    let managed = cc.spec.redis.mode == RedisMode::Managed;
    let secret = match existing {
        Some(secret) => secret,
        None if managed => {
            let password = generate_password().map_err(Error::Random)?;
            let secret = resources::redis_secret(cc, &password)?;
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
                    return Ok(Ok(Some(password)));
                }
                // Created meanwhile (another reconcile): use that one, never overwrite it.
                Err(kube::Error::Api(s)) if s.is_already_exists() => secrets
                    .get(&reference.secret)
                    .await
                    .map_err(Error::kube("get", "Secret", &reference.secret))?,
                Err(kube::Error::Api(s)) if s.is_invalid() || s.code == 422 => {
                    return Ok(Err(Problem {
                        reason: "InvalidSpec",
                        message: format!(
                            "the API server refused Secret {}: {} — fix the ChatCluster spec",
                            reference.secret, s.message
                        ),
                    }));
                }
                Err(source) => {
                    return Err(Error::kube("create", "Secret", &reference.secret)(source));
                }
            }
        }
        None => {
            return Ok(Err(Problem {
                reason: "PasswordSecretNotFound",
                message: format!(
                    "Secret {ns}/{} named by spec.redis.external.passwordSecretRef does not exist: create it with the key {:?} (kubectl -n {ns} create secret generic {} --from-literal={}=PASSWORD)",
                    reference.secret, reference.key, reference.secret, reference.key
                ),
            }));
        }
    };
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&reference.key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .filter(|v| !v.is_empty());
    match value {
        Some(v) => Ok(Ok(Some(v))),
        None if managed => Ok(Err(Problem {
            reason: "PasswordKeyMissing",
            message: format!(
                "Secret {ns}/{} has no non-empty key {:?}: delete the Secret and the operator generates a new password (the Redis and chat pods roll)",
                reference.secret, reference.key
            ),
        })),
        None => Ok(Err(Problem {
            reason: "PasswordKeyMissing",
            message: format!(
                "Secret {ns}/{} has no non-empty key {:?} named by spec.redis.external.passwordSecretRef: add the key or fix the reference",
                reference.secret, reference.key
            ),
        })),
    }
}

/// 32 bytes from the kernel's CSPRNG, hex encoded (safe in redis.conf and URLs).
fn generate_password() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// What the API server returned for the applied workloads.
#[derive(Default)]
struct Applied {
    deployments: HashMap<String, Deployment>,
    stateful_sets: HashMap<String, StatefulSet>,
}

async fn apply_all(
    client: &Client,
    ns: &str,
    desired: &Desired,
    problems: &mut Vec<Problem>,
) -> Result<Applied> {
    let mut applied = Applied::default();
    for o in &desired.config_maps {
        apply(client, ns, o, problems).await?;
    }
    for o in &desired.services {
        apply(client, ns, o, problems).await?;
    }
    for o in &desired.stateful_sets {
        if let Some(set) = apply(client, ns, o, problems).await? {
            applied.stateful_sets.insert(set.name_any(), set);
        }
    }
    for o in &desired.deployments {
        if let Some(d) = apply(client, ns, o, problems).await? {
            applied.deployments.insert(d.name_any(), d);
        }
    }
    for o in &desired.pdbs {
        apply(client, ns, o, problems).await?;
    }
    Ok(applied)
}

/// Server-side apply of one object. An object the API server refuses as invalid (a spec value only it
/// could judge, e.g. a bad label) becomes a [`Problem`] instead of an error.
async fn apply<K>(
    client: &Client,
    ns: &str,
    obj: &K,
    problems: &mut Vec<Problem>,
) -> Result<Option<K>>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = obj.meta().name.clone().unwrap_or_default();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api.patch(&name, &params, &Patch::Apply(obj)).await {
        Ok(o) => Ok(Some(o)),
        Err(kube::Error::Api(s)) if s.is_invalid() || s.code == 422 => {
            problems.push(Problem {
                reason: "InvalidSpec",
                message: format!(
                    "the API server refused {} {name}: {} — fix the ChatCluster spec",
                    K::kind(&()),
                    s.message
                ),
            });
            Ok(None)
        }
        Err(source) => Err(Error::kube("apply", K::kind(&()), name)(source)),
    }
}

/// In External mode the managed Redis objects must go (e.g. after switching from Managed).
async fn prune_managed_redis(client: &Client, ns: &str, names: &Names) -> Result<()> {
    async fn delete<K>(client: &Client, ns: &str, name: String) -> Result<()>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        let api: Api<K> = Api::namespaced(client.clone(), ns);
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
            Err(source) => Err(Error::kube("delete", K::kind(&()), name)(source)),
        }
    }
    delete::<StatefulSet>(client, ns, names.redis_sts()).await?;
    delete::<StatefulSet>(client, ns, names.sentinel_sts()).await?;
    delete::<Service>(client, ns, names.redis_headless()).await?;
    delete::<Service>(client, ns, names.sentinel_headless()).await?;
    delete::<ConfigMap>(client, ns, names.redis_scripts()).await?;
    delete::<PodDisruptionBudget>(client, ns, names.redis_sts()).await?;
    delete::<PodDisruptionBudget>(client, ns, names.sentinel_sts()).await?;
    Ok(())
}

fn deployment_replicas(d: Option<&Deployment>, desired: i32) -> (Replicas, bool) {
    let Some(d) = d else {
        return (Replicas { ready: 0, desired }, true);
    };
    let status = d.status.clone().unwrap_or_default();
    let ready = status.ready_replicas.unwrap_or(0);
    let rolled = status.observed_generation >= d.metadata.generation
        && status.updated_replicas.unwrap_or(0) >= desired
        && status.replicas.unwrap_or(0) == desired
        && ready >= desired;
    (Replicas { ready, desired }, !rolled)
}

fn stateful_set_replicas(s: Option<&StatefulSet>, desired: i32) -> (Replicas, bool) {
    let Some(s) = s else {
        return (Replicas { ready: 0, desired }, true);
    };
    let status = s.status.clone().unwrap_or_default();
    let ready = status.ready_replicas.unwrap_or(0);
    let rolled = status.observed_generation >= s.metadata.generation
        && status.updated_replicas.unwrap_or(0) >= desired
        && status.replicas == desired
        && ready >= desired;
    (Replicas { ready, desired }, !rolled)
}

fn build_status(
    cc: &ChatCluster,
    applied: &Applied,
    problems: &[Problem],
    ctx: &Context,
) -> ChatClusterStatus {
    let mut status = cc.status.clone().unwrap_or_default();
    let names = Names::of(cc).ok();
    let name_of = |f: fn(&Names) -> String| names.as_ref().map(f).unwrap_or_default();
    let (nodes, nodes_moving) = deployment_replicas(
        applied.deployments.get(&name_of(Names::node)),
        cc.spec.nodes.replicas,
    );
    let (registries, registries_moving) = deployment_replicas(
        applied.deployments.get(&name_of(Names::registry)),
        cc.spec.registries.replicas,
    );
    let mut moving = Vec::new();
    if nodes_moving {
        moving.push(format!("socket servers {}/{}", nodes.ready, nodes.desired));
    }
    if registries_moving {
        moving.push(format!(
            "registries {}/{}",
            registries.ready, registries.desired
        ));
    }
    status.nodes = nodes;
    status.registries = registries;
    if cc.spec.redis.mode == RedisMode::Managed {
        let managed = &cc.spec.redis.managed;
        let (data, data_moving) = stateful_set_replicas(
            applied.stateful_sets.get(&name_of(Names::redis_sts)),
            managed.replicas,
        );
        let (sentinels, sentinels_moving) = stateful_set_replicas(
            applied.stateful_sets.get(&name_of(Names::sentinel_sts)),
            managed.sentinels,
        );
        if data_moving {
            moving.push(format!("Redis data nodes {}/{}", data.ready, data.desired));
        }
        if sentinels_moving {
            moving.push(format!(
                "sentinels {}/{}",
                sentinels.ready, sentinels.desired
            ));
        }
        status.redis.data_nodes = data;
        status.redis.sentinels = sentinels;
    } else {
        status.redis.data_nodes = Replicas::default();
        status.redis.sentinels = Replicas::default();
    }
    let observation = ctx.observations.get(&cc.cluster_id());
    status.redis.current_master = observation.current_master.clone();
    status.load_set_members = observation.members;
    status.selector = Some(resources::selector_string(cc, Component::ChatNode));
    status.observed_generation = cc.metadata.generation;

    let mut problems = problems.to_vec();
    if cc.spec.redis.mode == RedisMode::External
        && let Some(err) = &observation.redis_error
    {
        problems.push(Problem {
            reason: "RedisUnreachable",
            message: format!("the operator cannot use the external Redis: {err} — check spec.redis.external and the password Secret"),
        });
    }
    let conditions = &mut status.conditions;
    if let Some(p) = problems.first() {
        let message = problems
            .iter()
            .map(|p| p.message.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        set_condition(conditions, cc, condition::DEGRADED, true, p.reason, message);
    } else {
        set_condition(
            conditions,
            cc,
            condition::DEGRADED,
            false,
            "AsExpected",
            "no problems found".to_owned(),
        );
    }
    if moving.is_empty() {
        set_condition(
            conditions,
            cc,
            condition::PROGRESSING,
            false,
            "Complete",
            "every component has its desired ready pods".to_owned(),
        );
    } else {
        set_condition(
            conditions,
            cc,
            condition::PROGRESSING,
            true,
            "RollingOut",
            format!("waiting for {}", moving.join(", ")),
        );
    }
    let ready = moving.is_empty() && problems.is_empty();
    if ready {
        set_condition(
            conditions,
            cc,
            condition::READY,
            true,
            "AllReady",
            "every component is ready".to_owned(),
        );
    } else if !problems.is_empty() {
        set_condition(
            conditions,
            cc,
            condition::READY,
            false,
            "Degraded",
            "see the Degraded condition".to_owned(),
        );
    } else {
        set_condition(
            conditions,
            cc,
            condition::READY,
            false,
            "RollingOut",
            format!("waiting for {}", moving.join(", ")),
        );
    }
    status
}

/// Sets condition `type_`, keeping its transition time when its status did not change.
fn set_condition(
    conditions: &mut Vec<Condition>,
    cc: &ChatCluster,
    type_: &str,
    on: bool,
    reason: &str,
    message: String,
) {
    let status = if on { "True" } else { "False" };
    let now = Time(Timestamp::now());
    let new = |time| Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.clone(),
        observed_generation: cc.metadata.generation,
        last_transition_time: time,
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) if c.status == status => {
            let time = c.last_transition_time.clone();
            *c = new(time);
        }
        Some(c) => *c = new(now),
        None => conditions.push(new(now)),
    }
}

async fn scaled(cc: &ChatCluster, ctx: &Context, old: &ChatClusterStatus, new: &ChatClusterStatus) {
    if old.nodes.desired != new.nodes.desired {
        ctx.event(
            cc,
            EventType::Normal,
            "Scaled",
            format!(
                "socket servers scaled from {} to {}",
                old.nodes.desired, new.nodes.desired
            ),
        )
        .await;
    }
    if old.registries.desired != new.registries.desired {
        ctx.event(
            cc,
            EventType::Normal,
            "Scaled",
            format!(
                "registries scaled from {} to {}",
                old.registries.desired, new.registries.desired
            ),
        )
        .await;
    }
}

/// Events for what a person would want to know, derived from the old and new status.
async fn announce(cc: &ChatCluster, ctx: &Context, new: &ChatClusterStatus, problems: &[Problem]) {
    let old = cc
        .status
        .as_ref()
        .filter(|s| s.observed_generation.is_some());
    let first = old.is_none()
        && ctx
            .announced
            .lock()
            .is_ok_and(|mut a| a.insert(cc.metadata.uid.clone().unwrap_or_default()));
    if first {
        ctx.event(
            cc,
            EventType::Normal,
            "Created",
            format!(
                "created the chat system: {} socket servers, {} registries, Redis {:?}",
                cc.spec.nodes.replicas, cc.spec.registries.replicas, cc.spec.redis.mode
            ),
        )
        .await;
    }
    if let Some(old) = old {
        scaled(cc, ctx, old, new).await;
    }
    let was_degraded = cc
        .condition(condition::DEGRADED)
        .is_some_and(|c| c.status == "True");
    let degraded = new
        .conditions
        .iter()
        .find(|c| c.type_ == condition::DEGRADED)
        .filter(|c| c.status == "True");
    match (was_degraded, degraded) {
        (false, Some(c)) => {
            ctx.event(cc, EventType::Warning, "Degraded", c.message.clone())
                .await;
        }
        (true, None) if problems.is_empty() => {
            ctx.event(
                cc,
                EventType::Normal,
                "Recovered",
                "no longer degraded".to_owned(),
            )
            .await;
        }
        _ => {}
    }
}

/// Server-side apply of the status subresource, skipped when nothing changed.
async fn patch_status(
    api: &Api<ChatCluster>,
    cc: &ChatCluster,
    status: ChatClusterStatus,
) -> Result<()> {
    if cc.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let name = cc.name_any();
    let patch = serde_json::json!({
        "apiVersion": format!("{}/{}", crd::GROUP, crd::VERSION),
        "kind": "ChatCluster",
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await
    .map_err(Error::kube("patch status of", "ChatCluster", &name))?;
    Ok(())
}

/// Labels of every object the operator owns for `cc` (for tests and tools).
pub fn owned_labels(cc: &ChatCluster) -> BTreeMap<String, String> {
    BTreeMap::from([
        (resources::label::INSTANCE.to_owned(), cc.name_any()),
        (
            resources::label::MANAGED_BY.to_owned(),
            resources::MANAGED_BY.to_owned(),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_missing_says_how_to_install_it() {
        let message = Error::CrdMissing.to_string();
        assert!(message.contains("kubectl apply -f crds/"), "{message}");
        assert_eq!(Error::CrdMissing.metric_label(), "crd_missing");
    }

    #[test]
    fn pause_annotation_is_read_case_insensitively() {
        let cc = ChatCluster::test("demo");
        assert!(!is_paused(&cc));
        assert!(is_paused(
            &cc.clone().with_meta_annotation(PAUSED_ANNOTATION, "True")
        ));
        assert!(!is_paused(
            &cc.with_meta_annotation(PAUSED_ANNOTATION, "false")
        ));
    }

    #[test]
    fn a_condition_keeps_its_transition_time_until_its_status_changes() {
        let cc = ChatCluster::test("demo");
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            &cc,
            condition::READY,
            false,
            "RollingOut",
            "a".to_owned(),
        );
        let first = conditions[0].last_transition_time.clone();
        std::thread::sleep(Duration::from_millis(5));
        set_condition(
            &mut conditions,
            &cc,
            condition::READY,
            false,
            "RollingOut",
            "b".to_owned(),
        );
        assert_eq!(conditions[0].last_transition_time, first);
        assert_eq!(conditions[0].message, "b");
        set_condition(
            &mut conditions,
            &cc,
            condition::READY,
            true,
            "AllReady",
            "c".to_owned(),
        );
        assert_ne!(conditions[0].last_transition_time, first);
        assert_eq!(conditions.len(), 1);
    }

    #[test]
    fn a_deployment_is_rolled_out_only_when_every_replica_is_updated_and_ready() {
        let mut d = Deployment::default();
        d.metadata.generation = Some(2);
        d.status = Some(k8s_openapi::api::apps::v1::DeploymentStatus {
            observed_generation: Some(2),
            replicas: Some(3),
            updated_replicas: Some(3),
            ready_replicas: Some(3),
            ..Default::default()
        });
        assert_eq!(
            deployment_replicas(Some(&d), 3),
            (
                Replicas {
                    ready: 3,
                    desired: 3
                },
                false
            )
        );
        // Scaling down: an extra old pod still exists.
        assert!(deployment_replicas(Some(&d), 2).1);
        if let Some(s) = d.status.as_mut() {
            s.observed_generation = Some(1);
        }
        assert!(deployment_replicas(Some(&d), 3).1);
        assert!(deployment_replicas(None, 1).1);
    }
}
