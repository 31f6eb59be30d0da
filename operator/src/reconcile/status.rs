//! The ChatCluster status and the Events derived from it: replica counts of every component, the
//! load-set observation, and the conditions, written with server-side apply on the status subresource
//! (skipped when nothing changed).
//!
//! ```text
//! Applied workloads ─┐
//! Problems ──────────┼─▶ build_status ─▶ announce (Created, Scaled, Degraded, Recovered) ─▶ patch_status
//! Observation ───────┘   Degraded / Stalled  = a problem a person must fix (Stalled also after the
//!                                              progress deadline)
//!                        Progressing         = a workload short of its desired ready pods
//!                        Reconciling         = not serving yet: rolling out, Redis unreachable or
//!                                              without master, load set != ready chat-node pods
//!                        Ready               = serving: none of the above
//! ```
//!
//! `Reconciling` and `Stalled` are the kstatus conventions, so `kubectl wait`, Argo CD and Flux judge
//! progress from them; every condition carries `observedGeneration`.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;

use super::apply::Applied;
use super::{Error, Problem, Reconciler, Result};
use crate::context::{Context, FIELD_MANAGER};
use crate::crd::{self, ChatCluster, ChatClusterStatus, RedisMode, Replicas, condition};
use crate::observation::Observation;
use crate::resources::{self, Component, Names};

/// Ready / desired replicas of a Deployment, and whether it is still moving towards `desired`.
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

/// Ready / desired replicas of a StatefulSet, and whether it is still moving towards `desired`.
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

/// How long the operator may stay `Reconciling` before it also says `Stalled` (like a Deployment's
/// `progressDeadlineSeconds`): long enough for image pulls and a Redis bootstrap, short enough that a
/// GitOps tool stops waiting for something that will not come.
pub const PROGRESS_DEADLINE: std::time::Duration = std::time::Duration::from_secs(600);

/// Something the chat system is still waiting for before it serves (`Reconciling=True`, `Ready=False`).
struct Waiting {
    reason: &'static str,
    message: String,
}

/// What keeps a chat system from serving, judged from the observation of the load-set sync: Redis must
/// be reachable with a known master, and the load set must hold exactly the ready chat-node pods.
fn serving_gaps(
    mode: RedisMode,
    observation: &Observation,
    ready_nodes: i32,
    waiting: &mut Vec<Waiting>,
    problems: &mut Vec<Problem>,
) {
    if let Some(err) = &observation.redis_error {
        match mode {
            // Someone else runs it: a person has to look.
            RedisMode::External => problems.push(Problem {
                reason: "RedisUnreachable",
                message: format!("the operator cannot use the external Redis: {err} — check spec.redis.external and the password Secret"),
            }),
            // The operator runs it: it may still be starting; the progress deadline turns this into Stalled.
            RedisMode::Managed => waiting.push(Waiting {
                reason: "RedisUnreachable",
                message: format!("the managed Redis is not reachable through its sentinels: {err}"),
            }),
        }
        return;
    }
    let Some(members) = observation.members else {
        waiting.push(Waiting {
            reason: "LoadSetPending",
            message: "waiting for the first load-set sync".to_owned(),
        });
        return;
    };
    if observation.current_master.is_none() {
        waiting.push(Waiting {
            reason: "NoMaster",
            message: "no sentinel names a Redis master".to_owned(),
        });
    }
    if members != ready_nodes {
        waiting.push(Waiting {
            reason: "LoadSetBehind",
            message: format!(
                "the load set has {members} members but {ready_nodes} socket servers are ready"
            ),
        });
    }
}

/// The new status of `cc` from what was applied, the problems found and the load-set observation, at
/// time `now`.
///
/// - `Ready`: every workload has its desired ready pods, Redis is reachable with a known master, the load
///   set equals the ready chat-node pods, and nothing is wrong.
/// - `Reconciling` (kstatus): the operator is still waiting for one of those; `Progressing` keeps its
///   narrower meaning (a workload short of its desired pods).
/// - `Degraded` and `Stalled` (kstatus): a problem only a person can fix; `Stalled` also once
///   `Reconciling` has lasted longer than [`PROGRESS_DEADLINE`].
///
/// Every condition carries the `observedGeneration` it describes.
pub(super) fn build_status(
    cc: &ChatCluster,
    applied: &Applied,
    problems: &[Problem],
    observation: &Observation,
    now: Timestamp,
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
    status.redis.current_master = observation.current_master.clone();
    status.load_set_members = observation.members;
    status.selector = Some(resources::selector_string(cc, Component::ChatNode));
    status.observed_generation = cc.metadata.generation;

    let mut problems = problems.to_vec();
    let mut waiting = Vec::new();
    if !moving.is_empty() {
        waiting.push(Waiting {
            reason: "RollingOut",
            message: format!("waiting for {}", moving.join(", ")),
        });
    }
    if let Some(message) = &applied.waiting {
        waiting.push(Waiting {
            reason: "PasswordRotating",
            message: message.clone(),
        });
    }
    serving_gaps(
        cc.spec.redis.mode,
        observation,
        nodes.ready,
        &mut waiting,
        &mut problems,
    );
    let joined = |messages: Vec<&str>| messages.join("; ");
    let problem_message = joined(problems.iter().map(|p| p.message.as_str()).collect());
    let waiting_message = joined(waiting.iter().map(|w| w.message.as_str()).collect());

    let conditions = &mut status.conditions;
    let mut set = |type_: &str, on: bool, reason: &str, message: String| {
        set_condition(conditions, cc, type_, on, reason, message, now);
    };
    match problems.first() {
        Some(p) => set(condition::DEGRADED, true, p.reason, problem_message.clone()),
        None => set(
            condition::DEGRADED,
            false,
            "AsExpected",
            "no problems found".to_owned(),
        ),
    }
    if moving.is_empty() {
        set(
            condition::PROGRESSING,
            false,
            "Complete",
            "every component has its desired ready pods".to_owned(),
        );
    } else {
        set(
            condition::PROGRESSING,
            true,
            "RollingOut",
            format!("waiting for {}", moving.join(", ")),
        );
    }
    match waiting.first() {
        Some(w) => set(
            condition::RECONCILING,
            true,
            w.reason,
            waiting_message.clone(),
        ),
        None => set(
            condition::RECONCILING,
            false,
            "Settled",
            "nothing left to wait for".to_owned(),
        ),
    }
    let reconciling_since = conditions
        .iter()
        .find(|c| c.type_ == condition::RECONCILING && c.status == "True")
        .map(|c| c.last_transition_time.0);
    let overdue = reconciling_since.is_some_and(|since| {
        std::time::Duration::try_from(now.duration_since(since))
            .is_ok_and(|d| d > PROGRESS_DEADLINE)
    });
    let mut set = |type_: &str, on: bool, reason: &str, message: String| {
        set_condition(conditions, cc, type_, on, reason, message, now);
    };
    match (problems.first(), waiting.first()) {
        (Some(p), _) => set(condition::STALLED, true, p.reason, problem_message.clone()),
        (None, Some(_)) if overdue => set(
            condition::STALLED,
            true,
            "ProgressDeadlineExceeded",
            format!(
                "still not serving after {}s: {waiting_message}",
                PROGRESS_DEADLINE.as_secs()
            ),
        ),
        _ => set(
            condition::STALLED,
            false,
            "AsExpected",
            "nothing blocks progress".to_owned(),
        ),
    }
    match (problems.first(), waiting.first()) {
        (Some(p), _) => set(
            condition::READY,
            false,
            p.reason,
            format!("{problem_message} (see the Degraded condition)"),
        ),
        (None, Some(w)) => set(condition::READY, false, w.reason, waiting_message),
        (None, None) => set(
            condition::READY,
            true,
            "Serving",
            format!(
                "serving: {} socket servers in the load set, Redis master {}",
                observation.members.unwrap_or_default(),
                observation.current_master.as_deref().unwrap_or_default()
            ),
        ),
    }
    status
}

/// Sets condition `type_`, keeping its transition time when its status did not change.
pub(super) fn set_condition(
    conditions: &mut Vec<Condition>,
    cc: &ChatCluster,
    type_: &str,
    on: bool,
    reason: &str,
    message: String,
    now: Timestamp,
) {
    let status = if on { "True" } else { "False" };
    let now = Time(now);
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

/// The `Monitoring` condition from [`crate::monitoring::reconcile`]'s outcome; removed when nothing is
/// asked for. It never touches `Ready`.
pub(super) fn set_monitoring(
    conditions: &mut Vec<Condition>,
    cc: &ChatCluster,
    outcome: Option<&crate::monitoring::Outcome>,
    now: Timestamp,
) {
    let verdict = outcome.map(|o| (o.applied, o.reason, o.message.clone()));
    set_or_remove(conditions, cc, condition::MONITORING, verdict, now);
}

/// The `AttachmentStoreReady` condition from the probe of the attachment store; removed without
/// `spec.attachments`. It never touches `Ready`: chat goes on without the store.
pub(super) fn set_attachments(
    conditions: &mut Vec<Condition>,
    cc: &ChatCluster,
    outcome: Option<&super::attachments::Outcome>,
    now: Timestamp,
) {
    let verdict = outcome.map(|o| (o.ready, o.reason, o.message.clone()));
    set_or_remove(
        conditions,
        cc,
        condition::ATTACHMENT_STORE_READY,
        verdict,
        now,
    );
}

/// Sets condition `type_` to `verdict` (status, reason, message), or removes it when there is none.
fn set_or_remove(
    conditions: &mut Vec<Condition>,
    cc: &ChatCluster,
    type_: &str,
    verdict: Option<(bool, &str, String)>,
    now: Timestamp,
) {
    match verdict {
        Some((on, reason, message)) => {
            set_condition(conditions, cc, type_, on, reason, message, now)
        }
        None => conditions.retain(|c| c.type_ != type_),
    }
}

/// `Scaled` events for a changed desired replica count.
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
pub(super) async fn announce(
    cc: &ChatCluster,
    r: &Reconciler,
    new: &ChatClusterStatus,
    problems: &[Problem],
) {
    let ctx = &r.ctx;
    let old = cc
        .status
        .as_ref()
        .filter(|s| s.observed_generation.is_some());
    let first = old.is_none()
        && r.announced
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
pub(super) async fn patch_status(
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::api::apps::v1::{DeploymentStatus, StatefulSetStatus};

    use super::*;

    fn now() -> Timestamp {
        Timestamp::now()
    }

    #[test]
    fn a_condition_keeps_its_transition_time_until_its_status_changes() {
        let cc = ChatCluster::test("demo");
        let mut conditions = Vec::new();
        let t0 = now();
        let later = t0 + Duration::from_secs(5);
        set_condition(
            &mut conditions,
            &cc,
            condition::READY,
            false,
            "RollingOut",
            "a".to_owned(),
            t0,
        );
        let first = conditions[0].last_transition_time.clone();
        set_condition(
            &mut conditions,
            &cc,
            condition::READY,
            false,
            "RollingOut",
            "b".to_owned(),
            later,
        );
        assert_eq!(conditions[0].last_transition_time, first);
        assert_eq!(conditions[0].message, "b");
        set_condition(
            &mut conditions,
            &cc,
            condition::READY,
            true,
            "Serving",
            "c".to_owned(),
            later,
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

    fn rolled_deployment(name: &str, n: i32) -> (String, Deployment) {
        let mut d = Deployment::default();
        d.metadata.name = Some(name.to_owned());
        d.metadata.generation = Some(1);
        d.status = Some(DeploymentStatus {
            observed_generation: Some(1),
            replicas: Some(n),
            updated_replicas: Some(n),
            ready_replicas: Some(n),
            ..DeploymentStatus::default()
        });
        (name.to_owned(), d)
    }

    fn rolled_set(name: &str, n: i32) -> (String, StatefulSet) {
        let mut s = StatefulSet::default();
        s.metadata.name = Some(name.to_owned());
        s.metadata.generation = Some(1);
        s.status = Some(StatefulSetStatus {
            observed_generation: Some(1),
            replicas: n,
            updated_replicas: Some(n),
            ready_replicas: Some(n),
            ..StatefulSetStatus::default()
        });
        (name.to_owned(), s)
    }

    /// Every workload of a default managed `demo` at its desired ready count.
    fn all_rolled() -> Applied {
        Applied {
            deployments: [
                rolled_deployment("demo-node", 2),
                rolled_deployment("demo-registry", 2),
            ]
            .into_iter()
            .collect(),
            stateful_sets: [rolled_set("demo-redis", 3), rolled_set("demo-sentinel", 3)]
                .into_iter()
                .collect(),
            waiting: None,
        }
    }

    fn serving() -> Observation {
        Observation {
            members: Some(2),
            current_master: Some("demo-redis-0:6379".to_owned()),
            redis_error: None,
        }
    }

    /// (status, reason) of every condition, by type.
    fn judged(status: &ChatClusterStatus) -> std::collections::BTreeMap<String, (String, String)> {
        status
            .conditions
            .iter()
            .map(|c| (c.type_.clone(), (c.status.clone(), c.reason.clone())))
            .collect()
    }

    fn pair(status: &str, reason: &str) -> (String, String) {
        (status.to_owned(), reason.to_owned())
    }

    #[test]
    fn ready_needs_rolled_workloads_a_reachable_redis_with_master_and_a_matching_load_set() {
        let cc = ChatCluster::test("demo");
        let status = build_status(&cc, &all_rolled(), &[], &serving(), now());
        let c = judged(&status);
        assert_eq!(c["Ready"], pair("True", "Serving"));
        assert_eq!(c["Reconciling"], pair("False", "Settled"));
        assert_eq!(c["Stalled"], pair("False", "AsExpected"));
        assert_eq!(c["Degraded"], pair("False", "AsExpected"));
        assert_eq!(c["Progressing"], pair("False", "Complete"));
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(1)),
            "every condition carries observedGeneration"
        );

        // A password rotation under way: serving throughout, but not settled until it is complete.
        let rotating = Applied {
            waiting: Some("rotating the Redis password: step 1 of 3 done".to_owned()),
            ..all_rolled()
        };
        let c = judged(&build_status(&cc, &rotating, &[], &serving(), now()));
        assert_eq!(c["Reconciling"], pair("True", "PasswordRotating"));
        assert_eq!(c["Ready"], pair("False", "PasswordRotating"));
        assert_eq!(c["Degraded"], pair("False", "AsExpected"));

        // Managed Redis that cannot be reached: workloads all ready, still not Ready (the bed's case).
        let unreachable = Observation {
            members: None,
            current_master: None,
            redis_error: Some("dns error: no such host demo-sentinel-0".to_owned()),
        };
        let status = build_status(&cc, &all_rolled(), &[], &unreachable, now());
        let c = judged(&status);
        assert_eq!(c["Ready"], pair("False", "RedisUnreachable"));
        assert_eq!(c["Reconciling"], pair("True", "RedisUnreachable"));
        assert_eq!(c["Progressing"], pair("False", "Complete"));
        assert_eq!(c["Degraded"], pair("False", "AsExpected"));
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.message.clone());
        assert!(ready.is_some_and(|m| m.contains("no such host")));

        // No master known, or a load set behind the ready pods: not Ready either.
        let no_master = Observation {
            current_master: None,
            ..serving()
        };
        let c = judged(&build_status(&cc, &all_rolled(), &[], &no_master, now()));
        assert_eq!(c["Ready"], pair("False", "NoMaster"));
        let behind = Observation {
            members: Some(1),
            ..serving()
        };
        let c = judged(&build_status(&cc, &all_rolled(), &[], &behind, now()));
        assert_eq!(c["Ready"], pair("False", "LoadSetBehind"));
        let never = Observation::default();
        let c = judged(&build_status(&cc, &all_rolled(), &[], &never, now()));
        assert_eq!(c["Ready"], pair("False", "LoadSetPending"));

        // A workload short of its pods.
        let mut short = all_rolled();
        short
            .stateful_sets
            .insert("demo-sentinel".to_owned(), rolled_set("demo-sentinel", 2).1);
        let c = judged(&build_status(&cc, &short, &[], &serving(), now()));
        assert_eq!(c["Ready"], pair("False", "RollingOut"));
        assert_eq!(c["Progressing"], pair("True", "RollingOut"));
        assert_eq!(c["Reconciling"], pair("True", "RollingOut"));
    }

    #[test]
    fn external_redis_that_cannot_be_reached_and_other_problems_are_degraded_and_stalled() {
        let cc = ChatCluster::test("demo").with_external_url("redis://r:6379");
        let applied = Applied {
            deployments: [
                rolled_deployment("demo-node", 2),
                rolled_deployment("demo-registry", 2),
            ]
            .into_iter()
            .collect(),
            stateful_sets: std::collections::HashMap::new(),
            waiting: None,
        };
        let down = Observation {
            redis_error: Some("connection refused".to_owned()),
            ..serving()
        };
        let c = judged(&build_status(&cc, &applied, &[], &down, now()));
        assert_eq!(c["Degraded"], pair("True", "RedisUnreachable"));
        assert_eq!(c["Stalled"], pair("True", "RedisUnreachable"));
        assert_eq!(c["Ready"], pair("False", "RedisUnreachable"));
        let conflict = Problem {
            reason: "NameConflict",
            message: "Service default/demo-node already exists".to_owned(),
        };
        let c = judged(&build_status(&cc, &applied, &[conflict], &serving(), now()));
        assert_eq!(c["Ready"], pair("False", "NameConflict"));
        assert_eq!(c["Stalled"], pair("True", "NameConflict"));
    }

    #[test]
    fn the_store_condition_is_set_from_the_probe_removed_without_attachments_and_leaves_ready_alone()
     {
        let cc = ChatCluster::test("demo").with_attachments("chat-files", "chat-s3");
        let mut status = build_status(&cc, &all_rolled(), &[], &serving(), now());
        let down = crate::reconcile::attachments::Outcome {
            ready: false,
            reason: "StoreUnreachable",
            message: "no answer".to_owned(),
        };
        set_attachments(&mut status.conditions, &cc, Some(&down), now());
        let c = judged(&status);
        assert_eq!(c["AttachmentStoreReady"], pair("False", "StoreUnreachable"));
        assert_eq!(c["Ready"], pair("True", "Serving"));
        assert_eq!(c["Degraded"], pair("False", "AsExpected"));
        set_attachments(&mut status.conditions, &cc, None, now());
        assert!(!judged(&status).contains_key("AttachmentStoreReady"));
    }

    #[test]
    fn reconciling_past_the_progress_deadline_is_stalled() {
        let mut cc = ChatCluster::test("demo");
        let unreachable = Observation {
            redis_error: Some("timed out".to_owned()),
            ..Observation::default()
        };
        let t0 = now();
        let status = build_status(&cc, &all_rolled(), &[], &unreachable, t0);
        assert_eq!(judged(&status)["Stalled"], pair("False", "AsExpected"));
        cc.status = Some(status);
        let just_before = t0 + PROGRESS_DEADLINE;
        let status = build_status(&cc, &all_rolled(), &[], &unreachable, just_before);
        assert_eq!(judged(&status)["Stalled"], pair("False", "AsExpected"));
        cc.status = Some(status);
        let after = t0 + PROGRESS_DEADLINE + Duration::from_secs(1);
        let status = build_status(&cc, &all_rolled(), &[], &unreachable, after);
        let c = judged(&status);
        assert_eq!(c["Stalled"], pair("True", "ProgressDeadlineExceeded"));
        assert_eq!(c["Reconciling"], pair("True", "RedisUnreachable"));
        // Serving again clears both.
        cc.status = Some(status);
        let c = judged(&build_status(&cc, &all_rolled(), &[], &serving(), after));
        assert_eq!(c["Stalled"], pair("False", "AsExpected"));
        assert_eq!(c["Ready"], pair("True", "Serving"));
    }
}
