//! The ChatCluster status and the Events derived from it: replica counts of every component, the
//! load-set observation, and the Ready / Progressing / Degraded conditions, written with server-side
//! apply on the status subresource (skipped when nothing changed).
//!
//! ```text
//! Applied workloads ─┐
//! Problems ──────────┼─▶ build_status ─▶ announce (Created, Scaled, Degraded, Recovered) ─▶ patch_status
//! Observation ───────┘      Degraded = any problem; Progressing = a component short of desired;
//!                           Ready = neither
//! ```

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

/// The new status of `cc` from what was applied, the problems found and the load-set observation.
pub(super) fn build_status(
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
pub(super) fn set_condition(
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

    use super::*;

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
