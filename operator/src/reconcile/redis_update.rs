//! Updates of the managed Redis data nodes, driven by the operator so that no routine change loses data.
//!
//! The data StatefulSet uses `updateStrategy: OnDelete`: a changed pod template only makes a new
//! revision, and this module decides, one step per reconcile, which pod may be restarted now.
//!
//! ```text
//! every data pod at the update revision? ─yes─▶ settled
//!   │ no
//!   ├─ a pod missing, not ready or terminating ─────────────▶ wait
//!   ├─ ask every data pod (INFO replication), the sentinels (master)
//!   │    no single master both agree on, or a replica not in sync ─▶ wait
//!   ├─ an outdated replica ─▶ evict it (highest ordinal first) ─▶ it comes back, resyncs, next one
//!   └─ only the master outdated
//!        ├─ it is the only data node ─▶ evict it (nothing to fail over to; its volume keeps the data)
//!        └─ hold writes on it (CLIENT PAUSE WRITE), let the replicas catch up, SENTINEL FAILOVER
//!             ─▶ a replica with every write takes over; once the sentinels name it, the old master's
//!                client connections are closed so chat-nodes and registries follow at once
//!             ─▶ the old master becomes an outdated replica
//!             ─▶ evicted like the others
//! ```
//!
//! Replicas go first, each back in sync (`master_link_status:up`, no resync, not loading) before the
//! next; the master is never restarted while it is master unless it is alone. Pods are evicted, so the
//! data PodDisruptionBudget is honoured too. A data node that starts while the sentinels still name it
//! master and has no data of its own waits for them to promote a replica instead (`redis.sh`). The same
//! hand-over runs from the data pods' own `preStop` hook (`handover.sh`) when a master's pod stops for
//! any other reason (deleted, evicted by a drain): the operator's path reaches it only as a replica.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, EvictParams, ListParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use switchboard_redis::node::{self, Replication, Role};
use switchboard_redis::sentinel;
use switchboard_runtime::report;
use tracing::{debug, info};

use super::{Error, Result};
use crate::context::{Context, FIELD_MANAGER};
use crate::crd::ChatCluster;
use crate::resources::{self, Component};

/// Time allowed to ask one data node or sentinel.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);
/// Requeue while an update is under way: each step waits for a pod or a failover.
pub(super) const STEP_REQUEUE: Duration = Duration::from_secs(5);

/// A data pod as the update sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct DataPod {
    name: String,
    ordinal: u32,
    /// Its `controller-revision-hash` label.
    revision: Option<String>,
    ready: bool,
    terminating: bool,
    /// `ip:port` (or `host:port` with TLS) of its Redis.
    addr: Option<String>,
}

/// What to do now.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    /// Every pod runs the update revision.
    Settled,
    /// Nothing may be restarted yet, for this reason.
    Wait(String),
    /// Restart this pod (evict it); the reason goes into an Event.
    Restart { pod: String, reason: String },
    /// Ask the sentinels to hand the master role from this pod to a replica.
    Failover { from: String },
}

/// Decides the next step from the pods, what each said of its replication (`None`: it did not answer)
/// and the master the sentinels name (a pod name).
fn decide(
    update_revision: &str,
    replicas: usize,
    pods: &[DataPod],
    states: &HashMap<String, Option<Replication>>,
    sentinel_master: Option<&str>,
) -> Step {
    let outdated: Vec<&DataPod> = pods
        .iter()
        .filter(|p| p.revision.as_deref() != Some(update_revision))
        .collect();
    if outdated.is_empty() {
        return Step::Settled;
    }
    if pods.len() < replicas {
        return Step::Wait(format!("{} of {replicas} data pods exist", pods.len()));
    }
    if let Some(p) = pods.iter().find(|p| !p.ready || p.terminating) {
        return Step::Wait(format!("data pod {} is not ready", p.name));
    }
    let mut masters = Vec::new();
    for p in pods {
        match states.get(&p.name).and_then(Option::as_ref) {
            None => return Step::Wait(format!("data pod {} did not answer INFO", p.name)),
            Some(r) if r.role == Role::Master => masters.push(p),
            Some(r) if !r.in_sync() => {
                return Step::Wait(format!("replica {} is not in sync yet", p.name));
            }
            Some(_) => {}
        }
    }
    let [master] = masters.as_slice() else {
        return Step::Wait(format!("{} data pods say they are master", masters.len()));
    };
    if pods.len() > 1 && sentinel_master != Some(master.name.as_str()) {
        return Step::Wait(format!(
            "the sentinels name {} as master, the data pods {}",
            sentinel_master.unwrap_or("no one"),
            master.name
        ));
    }
    if let Some(replica) = outdated
        .iter()
        .filter(|p| p.name != master.name)
        .max_by_key(|p| p.ordinal)
    {
        return Step::Restart {
            pod: replica.name.clone(),
            reason: format!("replica {} restarts with the new revision", replica.name),
        };
    }
    if pods.len() == 1 {
        return Step::Restart {
            pod: master.name.clone(),
            reason: format!(
                "{} is the only data node: it restarts with the new revision (no replica to fail over to)",
                master.name
            ),
        };
    }
    Step::Failover {
        from: master.name.clone(),
    }
}

/// Pod name from a hostname the sentinels announce (`<pod>.<headless service>.<namespace>.svc…`).
fn pod_of_host(host: &str) -> &str {
    host.split('.').next().unwrap_or(host)
}

impl DataPod {
    /// Where the operator reaches its Redis.
    fn addr(&self) -> Option<String> {
        self.addr.clone()
    }
}

fn data_pod(cc: &ChatCluster, domain: &str, pod: &Pod, sts: &str) -> Option<DataPod> {
    let name = pod.name_any();
    let ordinal = name.strip_prefix(sts)?.strip_prefix('-')?.parse().ok()?;
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    Some(DataPod {
        ordinal,
        revision: pod.labels().get("controller-revision-hash").cloned(),
        ready,
        terminating: pod.metadata.deletion_timestamp.is_some(),
        addr: resources::server_addr(
            cc,
            domain,
            &name,
            status.and_then(|s| s.pod_ip.as_deref()),
            Component::Redis,
        ),
        name,
    })
}

/// Gives every running Redis and sentinel pod of `cc` the passthrough labels and annotations in place
/// (their pod templates leave them out so that editing them restarts nothing).
pub(super) async fn label_pods(cc: &ChatCluster, ctx: &Context, ns: &str) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let hash = resources::passthrough_hash(cc);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    // Data nodes and sentinels in one list.
    let selector = format!(
        "{}={},{}={},{} in ({},{})",
        resources::label::NAME,
        resources::APP_NAME,
        resources::label::INSTANCE,
        cc.name_any(),
        resources::label::COMPONENT,
        Component::Redis.as_str(),
        Component::Sentinel.as_str()
    );
    let list = pods
        .list_metadata(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube("list", "Pod", &selector))?;
    for pod in list.items {
        let name = pod.name_any();
        if pod.metadata.deletion_timestamp.is_some()
            || pod
                .annotations()
                .get(resources::PASSTHROUGH_HASH_ANNOTATION)
                == Some(&hash)
        {
            continue;
        }
        let patch = resources::redis_pod_passthrough(cc, &name);
        match pods.patch(&name, &params, &Patch::Apply(patch)).await {
            Ok(_) => debug!(pod = %name, "passthrough labels and annotations applied in place"),
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            // Values the API server refuses: the same labels on the owned objects already made
            // the ChatCluster Degraded (InvalidSpec); the pods keep what they had.
            Err(kube::Error::Api(s)) if s.code == 422 => {
                debug!(pod = %name, reason = %s.message, "passthrough labels refused");
            }
            Err(source) => return Err(Error::kube("label", "Pod", name)(source)),
        }
    }
    Ok(())
}

/// Takes the next step of a pending data-node update of `cc` (managed Redis) whose data StatefulSet,
/// as this reconcile applied it, is `sts` (`None`: not ours, or refused). Returns a requeue delay while
/// an update is under way.
pub(super) async fn step(
    cc: &ChatCluster,
    ctx: &Context,
    ns: &str,
    sts: Option<&StatefulSet>,
    access: &node::Access,
) -> Result<Option<Duration>> {
    let Some(sts) = sts else {
        return Ok(None);
    };
    let sts_name = sts.name_any();
    let Some(update_revision) = sts.status.as_ref().and_then(|s| s.update_revision.clone()) else {
        return Ok(None);
    };
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let selector = resources::selector_string(cc, Component::Redis);
    let mut pods: Vec<DataPod> = pods_api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube("list", "Pod", &selector))?
        .items
        .iter()
        .filter_map(|p| data_pod(cc, &ctx.config.cluster_domain, p, &sts_name))
        .collect();
    pods.sort_by_key(|p| p.ordinal);
    if pods
        .iter()
        .all(|p| p.revision.as_deref() == Some(update_revision.as_str()))
    {
        return Ok(None);
    }
    let mut states = HashMap::new();
    for p in &pods {
        let state = match p.addr() {
            Some(addr) if p.ready => match node::replication(&addr, access, ASK_TIMEOUT).await {
                Ok(r) => Some(r),
                Err(err) => {
                    debug!(pod = %p.name, error = %report::chain(&err), "data pod did not answer");
                    None
                }
            },
            _ => None,
        };
        states.insert(p.name.clone(), state);
    }
    let endpoint = resources::redis_endpoint(cc, &ctx.config.cluster_domain)?;
    let master_name = &cc.spec.redis.managed.master_name;
    let sentinel_master =
        sentinel::current_master(&endpoint.sentinels, master_name, access, ASK_TIMEOUT)
            .await
            .ok()
            .flatten()
            .map(|m| pod_of_host(&m.host).to_owned());
    let replicas = usize::try_from(cc.spec.redis.managed.replicas).unwrap_or(0);
    match decide(
        &update_revision,
        replicas,
        &pods,
        &states,
        sentinel_master.as_deref(),
    ) {
        Step::Settled => Ok(None),
        Step::Wait(why) => {
            debug!(%why, "Redis update waits");
            Ok(Some(STEP_REQUEUE))
        }
        Step::Restart { pod, reason } => {
            match pods_api.evict(&pod, &EvictParams::default()).await {
                Ok(_) => {
                    info!(%pod, "Redis update: pod evicted");
                    ctx.event(cc, EventType::Normal, "RedisUpdate", reason)
                        .await;
                }
                // The disruption budget refuses for now (429) or the pod is already gone.
                Err(kube::Error::Api(s)) if s.code == 429 || s.is_not_found() => {
                    debug!(%pod, reason = %s.message, "eviction refused for now");
                }
                Err(source) => return Err(Error::kube("evict", "Pod", pod)(source)),
            }
            Ok(Some(STEP_REQUEUE))
        }
        Step::Failover { from } => {
            let master = pods.iter().find(|p| p.name == from);
            let replicas: Vec<String> = pods
                .iter()
                .filter(|p| p.name != from)
                .filter_map(DataPod::addr)
                .collect();
            let Some(master) = master.and_then(DataPod::addr) else {
                return Ok(Some(STEP_REQUEUE));
            };
            match sentinel::planned_failover(
                &master,
                &replicas,
                &endpoint.sentinels,
                master_name,
                access,
                ASK_TIMEOUT,
            )
            .await
            {
                Ok(()) => {
                    info!(master = %from, "Redis update: failover before the master restarts");
                    ctx.event(
                        cc,
                        EventType::Normal,
                        "RedisFailover",
                        format!(
                            "the sentinels hand the master role from {from} to a replica in sync before {from} restarts with the new revision"
                        ),
                    )
                    .await;
                }
                // Tried again on the next pass.
                Err(why) => info!(master = %from, "Redis update: {why}"),
            }
            Ok(Some(STEP_REQUEUE))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEW: &str = "rev-2";

    fn pod(ordinal: u32, revision: &str) -> DataPod {
        DataPod {
            name: format!("chat-redis-{ordinal}"),
            ordinal,
            revision: Some(revision.to_owned()),
            ready: true,
            terminating: false,
            addr: Some(format!("10.0.0.{ordinal}:6379")),
        }
    }

    fn master() -> Option<Replication> {
        node::parse("role:master\nconnected_slaves:2\nmaster_repl_offset:10\nloading:0\n")
    }

    fn replica(in_sync: bool) -> Option<Replication> {
        node::parse(&format!(
            "role:slave\nmaster_link_status:{}\nmaster_sync_in_progress:0\nslave_repl_offset:10\nloading:0\n",
            if in_sync { "up" } else { "down" }
        ))
    }

    fn states(list: &[(u32, Option<Replication>)]) -> HashMap<String, Option<Replication>> {
        list.iter()
            .map(|(i, r)| (format!("chat-redis-{i}"), r.clone()))
            .collect()
    }

    #[test]
    fn replicas_restart_first_highest_ordinal_first() {
        let pods = [pod(0, "rev-1"), pod(1, "rev-1"), pod(2, "rev-1")];
        let s = states(&[(0, master()), (1, replica(true)), (2, replica(true))]);
        assert_eq!(
            decide(NEW, 3, &pods, &s, Some("chat-redis-0")),
            Step::Restart {
                pod: "chat-redis-2".into(),
                reason: "replica chat-redis-2 restarts with the new revision".into()
            }
        );
    }

    #[test]
    fn nothing_restarts_while_a_replica_resyncs_or_a_pod_is_not_ready() {
        let pods = [pod(0, "rev-1"), pod(1, "rev-1"), pod(2, NEW)];
        let syncing = states(&[(0, master()), (1, replica(true)), (2, replica(false))]);
        assert_eq!(
            decide(NEW, 3, &pods, &syncing, Some("chat-redis-0")),
            Step::Wait("replica chat-redis-2 is not in sync yet".into())
        );
        let mut not_ready = pods.clone();
        not_ready[2].ready = false;
        let fine = states(&[(0, master()), (1, replica(true)), (2, replica(true))]);
        assert!(matches!(
            decide(NEW, 3, &not_ready, &fine, Some("chat-redis-0")),
            Step::Wait(_)
        ));
        assert!(
            matches!(
                decide(NEW, 3, &pods[..2], &fine, Some("chat-redis-0")),
                Step::Wait(_)
            ),
            "a pod being recreated"
        );
        let silent = states(&[(0, master()), (1, None), (2, replica(true))]);
        assert!(matches!(
            decide(NEW, 3, &pods, &silent, Some("chat-redis-0")),
            Step::Wait(_)
        ));
    }

    #[test]
    fn the_master_fails_over_before_it_restarts_and_never_while_views_disagree() {
        let pods = [pod(0, "rev-1"), pod(1, NEW), pod(2, NEW)];
        let s = states(&[(0, master()), (1, replica(true)), (2, replica(true))]);
        assert_eq!(
            decide(NEW, 3, &pods, &s, Some("chat-redis-0")),
            Step::Failover {
                from: "chat-redis-0".into()
            }
        );
        assert!(
            matches!(
                decide(NEW, 3, &pods, &s, Some("chat-redis-1")),
                Step::Wait(_)
            ),
            "a failover under way"
        );
        let two = states(&[(0, master()), (1, master()), (2, replica(true))]);
        assert!(matches!(
            decide(NEW, 3, &pods, &two, Some("chat-redis-1")),
            Step::Wait(_)
        ));
        // After the failover the old master is an outdated replica like any other.
        let after = states(&[(0, replica(true)), (1, master()), (2, replica(true))]);
        assert!(matches!(
            decide(NEW, 3, &pods, &after, Some("chat-redis-1")),
            Step::Restart { pod, .. } if pod == "chat-redis-0"
        ));
    }

    #[test]
    fn a_lone_data_node_restarts_and_an_updated_set_is_settled() {
        let lone = [pod(0, "rev-1")];
        assert!(matches!(
            decide(NEW, 1, &lone, &states(&[(0, master())]), None),
            Step::Restart { pod, .. } if pod == "chat-redis-0"
        ));
        let done = [pod(0, NEW), pod(1, NEW)];
        assert_eq!(decide(NEW, 2, &done, &HashMap::new(), None), Step::Settled);
    }

    #[test]
    fn sentinel_hostnames_name_pods() {
        assert_eq!(
            pod_of_host("chat-redis-1.chat-redis-headless.ns.svc.cluster.local"),
            "chat-redis-1"
        );
    }
}
