//! `spec.monitoring`: Prometheus Operator PodMonitors for a chat system's chat-node and registry pods.
//!
//! ```text
//! spec.monitoring.podMonitor.enabled
//!   ├─ true ─▶ discovery: does the API server serve monitoring.coreos.com/v1 podmonitors?
//!   │           ├─ yes ─▶ SSA PodMonitor <name>-node and <name>-registry (port `metrics`, /metrics)
//!   │           │         ─▶ condition Monitoring=True  PodMonitorsApplied
//!   │           └─ no  ─▶ condition Monitoring=False PrometheusOperatorMissing (Ready unaffected;
//!   │                     checked again on the next reconcile)
//!   └─ false ─▶ after it was on (the condition is set): PodMonitors this ChatCluster controls are
//!               deleted (when the CRD exists) and the condition removed; never on: nothing, no API call
//! ```
//!
//! The PodMonitor CRD belongs to the Prometheus Operator and may be installed after the Switchboard
//! operator starts, so its objects are handled as [`DynamicObject`]s found through discovery rather than
//! as typed, watched ones. As for every owned object, a name held by an object this ChatCluster does not
//! control is left untouched and reported.

use std::collections::BTreeMap;

use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
};
use kube::{Client, Resource};
use serde_json::{Value, json};
use thiserror::Error;

use crate::context::FIELD_MANAGER;
use crate::crd::{ChatCluster, PodMonitorSpec, condition};
use crate::resources::{self, Component, Names, is_controlled_by};

/// The Prometheus Operator's API group.
pub const GROUP: &str = "monitoring.coreos.com";
/// Its API version.
pub const VERSION: &str = "v1";
/// The container port PodMonitors scrape (chat-node and registry serve `/metrics` there).
pub const METRICS_PORT_NAME: &str = "metrics";
/// Condition reason: the PodMonitors are applied.
pub const APPLIED: &str = "PodMonitorsApplied";
/// Condition reason: the API server serves no PodMonitor (the Prometheus Operator's CRDs are missing).
pub const MISSING: &str = "PrometheusOperatorMissing";
/// Condition reason: a PodMonitor name is held by an object this ChatCluster does not control.
pub const NAME_CONFLICT: &str = "NameConflict";

/// Errors talking to the API server about PodMonitors.
#[derive(Debug, Error)]
pub enum Error {
    /// Discovery of the monitoring group failed for another reason than its absence.
    #[error("discovering {GROUP}/{VERSION}")]
    Discovery(#[source] kube::Error),
    /// Reading, applying or deleting one PodMonitor failed.
    #[error("{verb} PodMonitor {name}")]
    Kube {
        /// What was done.
        verb: &'static str,
        /// The PodMonitor.
        name: String,
        /// The API server's answer.
        #[source]
        source: kube::Error,
    },
    /// The ChatCluster lacks a name, namespace or uid.
    #[error("rendering PodMonitors")]
    Render(#[from] resources::Error),
}

impl Error {
    /// A short stable label for metrics (as [`crate::reconcile::Error::metric_label`]).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Discovery(_) | Error::Kube { .. } => "kube",
            Error::Render(_) => "render",
        }
    }
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the `Monitoring` condition reports; `None` from [`reconcile`] when nothing was asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The condition's status.
    pub applied: bool,
    /// The condition's reason.
    pub reason: &'static str,
    /// What a person reads.
    pub message: String,
}

/// The PodMonitor API resource (plural `podmonitors`).
pub fn pod_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, VERSION, "PodMonitor"),
        "podmonitors",
    )
}

/// Whether the API server serves `monitoring.coreos.com/v1` PodMonitors.
pub async fn pod_monitors_served(client: &Client) -> Result<bool> {
    match client
        .list_api_group_resources(&format!("{GROUP}/{VERSION}"))
        .await
    {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == "podmonitors")),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(err) => Err(Error::Discovery(err)),
    }
}

/// The PodMonitors of `cc`: one for the chat-node pods, one for the registry pods.
pub fn render(cc: &ChatCluster, spec: &PodMonitorSpec) -> Result<Vec<DynamicObject>> {
    let names = Names::of(cc)?;
    let ns = cc.metadata.namespace.as_deref().unwrap_or_default();
    let owner = cc
        .controller_owner_ref(&())
        .ok_or(resources::Error::MissingMetadata("uid"))?;
    [
        (names.node(), Component::ChatNode),
        (names.registry(), Component::Registry),
    ]
    .into_iter()
    .map(|(name, component)| {
        let mut labels = spec.labels.clone();
        labels.extend(resources::labels(cc, component));
        let mut endpoint = json!({ "port": METRICS_PORT_NAME, "path": "/metrics" });
        if let Some(interval) = &spec.interval {
            endpoint["interval"] = json!(interval);
        }
        let mut obj = DynamicObject::new(&name, &pod_monitor_resource()).within(ns);
        obj.metadata.labels = Some(labels);
        obj.metadata.owner_references = Some(vec![owner.clone()]);
        obj.data = json!({
            "spec": {
                "selector": { "matchLabels": resources::selector_labels(cc, component) },
                "podMetricsEndpoints": [endpoint],
            }
        });
        Ok(obj)
    })
    .collect()
}

/// Applies (or, when turned off, deletes) the PodMonitors of `cc` (uid `uid`) in `ns`; `None` when
/// `spec.monitoring` asks for nothing.
pub async fn reconcile(
    cc: &ChatCluster,
    client: &Client,
    ns: &str,
    uid: &str,
) -> Result<Option<Outcome>> {
    let spec = &cc.spec.monitoring.pod_monitor;
    // Never asked for (no condition was ever written): nothing to render or prune, no discovery call.
    if !spec.enabled && cc.condition(condition::MONITORING).is_none() {
        return Ok(None);
    }
    let served = pod_monitors_served(client).await?;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &pod_monitor_resource());
    if !spec.enabled {
        if served {
            prune(&api, cc, uid).await?;
        }
        return Ok(None);
    }
    if !served {
        return Ok(Some(Outcome {
            applied: false,
            reason: MISSING,
            message: format!(
                "spec.monitoring.podMonitor.enabled is set, but the API server serves no {GROUP}/{VERSION} \
                 PodMonitor: install the Prometheus Operator (its CRDs); the PodMonitors are created once \
                 they exist. Serving is unaffected."
            ),
        }));
    }
    let mut applied = Vec::new();
    for obj in render(cc, spec)? {
        let name = obj.metadata.name.clone().unwrap_or_default();
        if let Some(existing) = get(&api, &name).await?
            && !is_controlled_by(&existing.metadata, uid)
        {
            return Ok(Some(Outcome {
                applied: false,
                reason: NAME_CONFLICT,
                message: format!(
                    "PodMonitor {ns}/{name} already exists and this ChatCluster does not control it: delete \
                     or rename it"
                ),
            }));
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(&name, &params, &Patch::Apply(&obj))
            .await
            .map_err(|source| Error::Kube {
                verb: "apply",
                name: name.clone(),
                source,
            })?;
        applied.push(name);
    }
    Ok(Some(Outcome {
        applied: true,
        reason: APPLIED,
        message: format!(
            "PodMonitors {} scrape the `{METRICS_PORT_NAME}` port of the chat-node and registry pods",
            applied.join(", ")
        ),
    }))
}

/// Deletes the PodMonitors of `cc` that it controls.
async fn prune(api: &Api<DynamicObject>, cc: &ChatCluster, uid: &str) -> Result<()> {
    let names = Names::of(cc)?;
    for name in [names.node(), names.registry()] {
        if let Some(existing) = get(api, &name).await?
            && is_controlled_by(&existing.metadata, uid)
        {
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(source) => {
                    return Err(Error::Kube {
                        verb: "delete",
                        name,
                        source,
                    });
                }
            }
        }
    }
    Ok(())
}

async fn get(api: &Api<DynamicObject>, name: &str) -> Result<Option<DynamicObject>> {
    api.get_opt(name).await.map_err(|source| Error::Kube {
        verb: "get",
        name: name.to_owned(),
        source,
    })
}

/// Labels of a rendered PodMonitor, for tests.
pub fn labels_of(obj: &DynamicObject) -> BTreeMap<String, String> {
    obj.metadata.labels.clone().unwrap_or_default()
}

/// The `spec` of a rendered PodMonitor, for tests.
pub fn spec_of(obj: &DynamicObject) -> &Value {
    &obj.data["spec"]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::MonitoringSpec;

    fn monitored() -> ChatCluster {
        let mut cc = ChatCluster::test("chat");
        cc.spec.monitoring = MonitoringSpec {
            pod_monitor: PodMonitorSpec {
                enabled: true,
                interval: Some("15s".to_owned()),
                labels: BTreeMap::from([("release".to_owned(), "prometheus".to_owned())]),
            },
        };
        cc
    }

    #[test]
    fn one_pod_monitor_per_scraped_component_selects_its_pods_by_the_metrics_port() {
        let cc = monitored();
        let monitors = render(&cc, &cc.spec.monitoring.pod_monitor).expect("render");
        let names: Vec<_> = monitors
            .iter()
            .map(|m| m.metadata.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(names, ["chat-node", "chat-registry"]);
        for (monitor, component) in monitors.iter().zip(["chat-node", "registry"]) {
            let spec = spec_of(monitor);
            assert_eq!(
                spec["selector"]["matchLabels"]["app.kubernetes.io/component"],
                component
            );
            assert_eq!(spec["podMetricsEndpoints"][0]["port"], "metrics");
            assert_eq!(spec["podMetricsEndpoints"][0]["path"], "/metrics");
            assert_eq!(spec["podMetricsEndpoints"][0]["interval"], "15s");
            assert_eq!(labels_of(monitor)["release"], "prometheus");
            let owner = &monitor.metadata.owner_references.as_ref().expect("owned")[0];
            assert_eq!(
                (owner.kind.as_str(), owner.controller),
                ("ChatCluster", Some(true))
            );
        }
    }

    #[test]
    fn the_operators_labels_win_over_the_users() {
        let mut cc = monitored();
        cc.spec
            .monitoring
            .pod_monitor
            .labels
            .insert("app.kubernetes.io/component".to_owned(), "mine".to_owned());
        let monitors = render(&cc, &cc.spec.monitoring.pod_monitor).expect("render");
        assert_eq!(
            labels_of(&monitors[0])["app.kubernetes.io/component"],
            "chat-node"
        );
    }

    #[test]
    fn without_an_interval_the_prometheus_default_applies() {
        let mut cc = monitored();
        cc.spec.monitoring.pod_monitor.interval = None;
        let monitors = render(&cc, &cc.spec.monitoring.pod_monitor).expect("render");
        assert!(
            spec_of(&monitors[0])["podMetricsEndpoints"][0]
                .get("interval")
                .is_none()
        );
    }
}
