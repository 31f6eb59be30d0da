//! The ChatCluster controller: renders the owned objects ([`crate::resources`]), applies them with
//! server-side apply under one field manager, and writes the status through the status subresource.
//!
//! ```text
//! ChatCluster / owned object / referenced Secret / load-set observation changed   (controller)
//!   └─▶ reconcile
//!        ├─ deleting? ─▶ nothing (owner references let the garbage collector delete the rest)
//!        ├─ paused (annotation switchboard.dev/paused=true)? ─▶ only the status says so
//!        ├─ password: managed Secret created once (never rotated) | external Secret read   (password)
//!        ├─ token key: generated Secret created once | the user's Secret read and checked  (password)
//!        ├─ spec.attachments: S3 key read (its hash rolls chat-nodes), bucket probe    (attachments)
//!        │                    started — it runs alongside everything below, at most 5 s
//!        ├─ scale-down pending? ─▶ pod-deletion-cost = connections on chat-node pods   (deletion_cost)
//!        ├─ render ─▶ SSA every object we control or that is absent (force, manager           (apply)
//!        │            "switchboard-operator"); a name someone else holds ─▶ NameConflict
//!        ├─ External mode ─▶ delete leftover managed-Redis objects we control               (apply)
//!        ├─ spec.nodes.expose ─▶ a Service per chat-node pod (owned by the pod)              (expose)
//!        ├─ spec.monitoring ─▶ PodMonitors where the Prometheus Operator's CRDs exist  (crate::monitoring)
//!        ├─ Managed mode ─▶ next step of a data-node update: evict a replica in sync, or    (redis_update)
//!        │                  fail the master over first; requeue soon while one is under way
//!        └─ status (SSA on /status) + Events (Created, Scaled, Degraded, Recovered)         (status)
//!           with AttachmentStoreReady from the probe (never Ready: chat goes on without the store)
//! ```
//!
//! A problem only the operator can judge (a missing Secret, an object the API server refuses because of
//! a spec value) becomes `Degraded=True` with a message saying what to do; it is not a reconcile error,
//! so it does not spin in backoff. Errors talking to the API server ([`Error`]) requeue with exponential
//! backoff.
//!
//! This controller shares [`crate::context`], [`crate::observation`] and [`crate::secret`] with
//! [`crate::loadset_sync`] and depends on nothing of it.

mod apply;
mod attachments;
mod controller;
mod deletion_cost;
mod error;
mod password;
mod redis_tls;
mod redis_update;
mod rotation;
mod status;
mod volumes;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use switchboard_runtime::report;
use tracing::{Span, debug, info, instrument, warn};

pub use controller::{check_crd, run};
pub use deletion_cost::POD_DELETION_COST;
pub use error::{Error, Result};

use crate::context::{Context, PAUSED_ANNOTATION, is_paused};
use crate::crd::{ChatCluster, RedisMode, condition};
use crate::resources::{self, Names, RenderContext};

/// Controller name in metrics and logs.
const CONTROLLER: &str = "chatcluster";
/// Requeue while something is rolling out or degraded (sooner than the settled requeue).
const UNSETTLED_REQUEUE: Duration = Duration::from_secs(30);

/// State of the ChatCluster controller: the shared [`Context`] plus what only reconciles keep.
struct Reconciler {
    ctx: Arc<Context>,
    /// Consecutive failures per ChatCluster, for the backoff.
    failures: Mutex<HashMap<ObjectRef<ChatCluster>, u32>>,
    /// Uids of the ChatClusters whose creation was announced (the cache may lag our own status write).
    announced: Mutex<HashSet<String>>,
}

impl Reconciler {
    fn new(ctx: Arc<Context>) -> Arc<Self> {
        Arc::new(Self {
            ctx,
            failures: Mutex::new(HashMap::new()),
            announced: Mutex::new(HashSet::new()),
        })
    }

    fn backoff(&self, obj: ObjectRef<ChatCluster>) -> Duration {
        let config = &self.ctx.config;
        let Ok(mut failures) = self.failures.lock() else {
            return config.max_backoff;
        };
        let n = failures.entry(obj).or_insert(0);
        *n = n.saturating_add(1);
        let factor = 2u32.saturating_pow((*n - 1).min(16));
        config
            .min_backoff
            .saturating_mul(factor)
            .min(config.max_backoff)
    }

    fn succeeded(&self, obj: &ObjectRef<ChatCluster>) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(obj);
        }
    }

    /// Forgets the ChatClusters not in `live` (deleted ones; a deletion without finalizer is never
    /// reconciled, so nothing else would).
    fn retain(&self, live: &[Arc<ChatCluster>]) {
        let refs: HashSet<ObjectRef<ChatCluster>> = live
            .iter()
            .map(|cc| ObjectRef::from_obj(cc.as_ref()))
            .collect();
        let uids: HashSet<&str> = live
            .iter()
            .filter_map(|cc| cc.metadata.uid.as_deref())
            .collect();
        if let Ok(mut failures) = self.failures.lock() {
            failures.retain(|r, _| refs.contains(r));
        }
        if let Ok(mut announced) = self.announced.lock() {
            announced.retain(|uid| uids.contains(uid.as_str()));
        }
    }
}

/// Something only the operator can judge, reported as `Degraded=True`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Problem {
    reason: &'static str,
    message: String,
}

/// Requeues a failed ChatCluster with exponential backoff.
fn error_policy(cc: Arc<ChatCluster>, err: &Error, r: Arc<Reconciler>) -> Action {
    r.ctx.metrics.failed(CONTROLLER, err.metric_label());
    let delay = r.backoff(ObjectRef::from_obj(cc.as_ref()));
    warn!(name = %cc.name_any(), namespace = ?cc.namespace(), error = %report::chain(err), ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Reconciles one ChatCluster.
#[instrument(skip(cc, r), fields(namespace = cc.namespace().unwrap_or_default(), name = %cc.name_any(), generation = cc.metadata.generation, took_ms = tracing::field::Empty))]
async fn reconcile(cc: Arc<ChatCluster>, r: Arc<Reconciler>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_one(&cc, &r).await;
    r.ctx.metrics.reconciled(CONTROLLER, started.elapsed());
    if result.is_ok() {
        r.succeeded(&ObjectRef::from_obj(cc.as_ref()));
    }
    Span::current().record("took_ms", started.elapsed().as_millis());
    result
}

async fn reconcile_one(cc: &ChatCluster, r: &Reconciler) -> Result<Action> {
    let ctx = &r.ctx;
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
        let now = Timestamp::now();
        for type_ in [condition::PROGRESSING, condition::RECONCILING] {
            status::set_condition(
                &mut status.conditions,
                cc,
                type_,
                false,
                "Paused",
                format!(
                    "reconciliation is paused: remove the annotation {PAUSED_ANNOTATION} to resume"
                ),
                now,
            );
        }
        status::patch_status(&clusters, cc, status).await?;
        info!("paused");
        return Ok(Action::await_change());
    }

    let mut problems = Vec::new();
    let names = Names::of(cc)?;
    let uid = cc
        .metadata
        .uid
        .as_deref()
        .ok_or(resources::Error::MissingMetadata("uid"))?;
    let wanted = match password::resolve(cc, ctx, &ns).await? {
        Ok(password) => password,
        Err(problem) => {
            problems.push(problem);
            None
        }
    };
    let server_tls = if cc.spec.redis.mode == RedisMode::Managed {
        match redis_tls::resolve(cc, ctx, &ns).await? {
            Ok(tls) => tls,
            Err(problem) => {
                problems.push(problem);
                None
            }
        }
    } else {
        None
    };
    let tls = server_tls.as_ref().map(|t| &t.tls);
    // Managed Redis: the password in use follows the one asked for through a rotation.
    let mut rotation = None;
    let password = match (&cc.spec.redis.mode, wanted) {
        (RedisMode::Managed, Some(wanted)) => {
            let (r, problem) = rotation::before_render(cc, ctx, &ns, uid, &wanted, tls).await?;
            problems.extend(problem);
            rotation = r;
            rotation.as_ref().map(|r| r.current.clone())
        }
        (_, wanted) => wanted,
    };
    let hmac_key = match password::resolve_hmac(cc, ctx, &ns).await? {
        Ok(key) => key,
        Err(problem) => {
            problems.push(problem);
            None
        }
    };
    // Started before the objects are applied so the probe's wait (at most 5 s) overlaps with theirs.
    let store = attachments::start(cc, ctx, &ns).await?;
    let salted = |secret: &str| {
        resources::fingerprint(&[
            cc.metadata.uid.as_deref().unwrap_or_default().as_bytes(),
            secret.as_bytes(),
        ])
    };
    let render_ctx = RenderContext {
        cluster_domain: ctx.config.cluster_domain.clone(),
        password_hash: password.as_deref().map(salted),
        auth_hash: hmac_key.as_deref().map(salted),
        redis_tls_hash: server_tls.as_ref().map(|t| t.hash.clone()),
        attachments_hash: store.as_ref().and_then(|s| s.hash.clone()),
    };
    let mut desired = resources::render(cc, &render_ctx)?;
    deletion_cost::before_scale_down(cc, ctx, &ns, uid).await?;
    volumes::grow(cc, ctx, &ns, uid, &mut desired, &mut problems).await?;
    let mut applied = apply::apply_all(&ctx.client, &ns, uid, &desired, &mut problems).await?;
    if let Some(rotation) = &rotation {
        let clients: Vec<_> = [names.node(), names.registry()]
            .iter()
            .filter_map(|n| applied.deployments.get(n))
            .collect();
        applied.waiting = rotation::after_apply(cc, ctx, &ns, rotation, &clients, tls).await?;
    }
    let mut redis_update = None;
    if cc.spec.redis.mode == RedisMode::External {
        apply::prune_managed_redis(&ctx.client, &ns, uid, &names).await?;
    } else {
        redis_update::label_pods(cc, ctx, &ns).await?;
        let access = switchboard_redis::node::Access {
            password: password.clone(),
            tls: tls.cloned(),
        };
        let data = applied.stateful_sets.get(&names.redis_sts());
        redis_update = redis_update::step(cc, ctx, &ns, data, &access).await?;
    }
    crate::expose::reconcile(cc, ctx, &ns)
        .await
        .map_err(Error::kube("expose", "chat-node pods of", &name))?;
    if !cc.spec.network_policy.enabled {
        apply::prune_network_policies(&ctx.client, &ns, uid, &names).await?;
    }
    let monitoring = crate::monitoring::reconcile(cc, &ctx.client, &ns, uid).await?;
    let store = match store {
        Some(check) => Some(check.outcome().await),
        None => None,
    };

    let observation = ctx.observations.get(&cc.cluster_id());
    let mut status = status::build_status(cc, &applied, &problems, &observation, Timestamp::now());
    status::set_monitoring(
        &mut status.conditions,
        cc,
        monitoring.as_ref(),
        Timestamp::now(),
    );
    status::set_attachments(&mut status.conditions, cc, store.as_ref(), Timestamp::now());
    status::announce(cc, r, &status, &problems).await;
    let unsettled = status.conditions.iter().any(|c| {
        (c.type_ == condition::RECONCILING || c.type_ == condition::DEGRADED) && c.status == "True"
    });
    status::patch_status(&clusters, cc, status).await?;
    debug!(%name, "reconciled");
    // PodMonitors asked for but not applied: look again soon (the CRDs may be installed any time);
    // likewise an attachment store that did not answer (nothing else would reconcile when it comes back).
    let monitoring_waits = monitoring.is_some_and(|m| !m.applied);
    let store_waits = store.is_some_and(|s| !s.ready);
    Ok(Action::requeue(
        match (redis_update, unsettled || monitoring_waits || store_waits) {
            (Some(step), _) => step,
            (None, true) => UNSETTLED_REQUEUE,
            (None, false) => ctx.config.requeue,
        },
    ))
}
