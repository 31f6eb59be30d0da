//! Each chat-node reachable from outside the cluster (`spec.nodes.expose`): a Service per chat-node pod.
//!
//! ```text
//! chat-node pod P ──label switchboard.dev/pod=P──▶ Service P (NodePort | LoadBalancer, owned by pod P)
//!        load-set sync: Service P's node port / load-balancer address ─▶ LoadSet::set_exposed(P → URL)
//!        registry: assign(P) hands out the external URL instead of the pod IP
//! ```
//!
//! Shared by both controllers (like [`crate::secret`]): the reconciler makes the Services, the load-set
//! sync reads their addresses.
//!
//! The Services are owned by their pods (an owner reference, not a controller one), so the garbage
//! collector removes each with its pod; without `expose` the operator deletes the ones it made.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;
use tracing::debug;

use crate::context::{Context, FIELD_MANAGER};
use crate::crd::{ChatCluster, ExposeType};
use crate::resources::{self, Component, NODE_PORT};

/// Label of a chat-node pod naming itself, the selector of its own Service.
pub const POD_LABEL: &str = "switchboard.dev/pod";
/// Label of a per-pod Service: the pod it exposes.
pub const EXPOSES_LABEL: &str = "switchboard.dev/exposes";

/// Gives every chat-node pod of `cc` its own Service of the chosen type, or deletes those Services when
/// `cc` exposes nothing.
pub async fn reconcile(cc: &ChatCluster, ctx: &Context, ns: &str) -> kube::Result<()> {
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
    let instance = format!("{}={}", resources::label::INSTANCE, cc.name_any());
    let Some(expose) = &cc.spec.nodes.expose else {
        let selector = format!("{EXPOSES_LABEL},{instance}");
        let list = services
            .list_metadata(&ListParams::default().labels(&selector))
            .await?;
        for svc in list.items {
            let name = svc.name_any();
            match services.delete(&name, &DeleteParams::default()).await {
                Ok(_) => debug!(service = %name, "per-pod Service removed"),
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(err) => return Err(err),
            }
        }
        return Ok(());
    };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let selector = resources::selector_string(cc, Component::ChatNode);
    let list = pods
        .list_metadata(&ListParams::default().labels(&selector))
        .await?;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for pod in list.items {
        let name = pod.name_any();
        let Some(uid) = pod.metadata.uid.clone() else {
            continue;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if pod.labels().get(POD_LABEL) != Some(&name) {
            let patch = json!({ "metadata": { "labels": { POD_LABEL: name } } });
            match pods
                .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.is_not_found() => continue,
                Err(err) => return Err(err),
            }
        }
        let mut labels = resources::selector_labels(cc, Component::ChatNode);
        labels.insert(EXPOSES_LABEL.to_owned(), name.clone());
        let service = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": name,
                "labels": labels,
                "ownerReferences": [{ "apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid }],
            },
            "spec": {
                "type": expose.type_.as_str(),
                "selector": { POD_LABEL: name },
                "ports": [{ "name": "http", "port": NODE_PORT, "targetPort": NODE_PORT, "protocol": "TCP" }],
            },
        });
        match services.patch(&name, &params, &Patch::Apply(service)).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// The external URL of each exposed chat-node pod of `cc` (pod name → URL), from its Service: the node
/// port at `spec.nodes.expose.host`, or the load balancer's address. The scheme follows the advertised
/// URL (`wss://` stays `wss://`).
pub async fn external_urls(
    client: &kube::Client,
    cc: &ChatCluster,
    ns: &str,
) -> kube::Result<BTreeMap<String, String>> {
    let Some(expose) = &cc.spec.nodes.expose else {
        return Ok(BTreeMap::new());
    };
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let selector = format!(
        "{EXPOSES_LABEL},{}={}",
        resources::label::INSTANCE,
        cc.name_any()
    );
    let scheme = if cc.spec.nodes.advertise_url.starts_with("wss://") {
        "wss"
    } else {
        "ws"
    };
    let list = services
        .list(&ListParams::default().labels(&selector))
        .await?;
    // Only pods their own Service already routes to: a node port without a ready endpoint refuses
    // connections. EndpointSlices carry their Service's labels.
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let slices = slices
        .list(&ListParams::default().labels(&selector))
        .await?;
    let routed = crate::loadset_sync::ready_endpoint_pods(&slices.items);
    Ok(list
        .items
        .iter()
        .filter_map(|svc| {
            let pod = svc.labels().get(EXPOSES_LABEL)?.clone();
            if !routed.contains(&pod) {
                return None;
            }
            let addr = match expose.type_ {
                ExposeType::NodePort => {
                    let port = svc.spec.as_ref()?.ports.as_ref()?.first()?.node_port?;
                    format!("{}:{port}", host_for_url(expose.host.as_deref()?))
                }
                ExposeType::LoadBalancer => {
                    let ingress = svc
                        .status
                        .as_ref()?
                        .load_balancer
                        .as_ref()?
                        .ingress
                        .as_ref()?;
                    let first = ingress.first()?;
                    let host = first.hostname.clone().or_else(|| first.ip.clone())?;
                    format!("{}:{NODE_PORT}", host_for_url(&host))
                }
            };
            Some((pod, format!("{scheme}://{addr}/ws")))
        })
        .collect())
}

/// An IPv6 address in brackets, anything else as it is.
fn host_for_url(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_hosts_are_bracketed_in_urls() {
        assert_eq!(host_for_url("2001:db8::1"), "[2001:db8::1]");
        assert_eq!(host_for_url("[2001:db8::1]"), "[2001:db8::1]");
        assert_eq!(host_for_url("nodes.example.com"), "nodes.example.com");
    }
}
