//! Proof that the test bed is a real Kubernetes: controllers, EndpointSlices,
//! garbage collection, CEL validation, the scale and status subresources and
//! server-side apply, each in its own namespace.
//!
//! These run against the local test bed, or unchanged against the cluster that
//! `KUBECONFIG` names (kind included). Only `testbed::sim` calls touch simulation.

use std::process::Stdio;
use std::time::Duration;

use e2e::testbed::{TestBed, TestNamespace, sim};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use serde_json::json;
use switchboard_testkit::eventually;
use tokio::io::AsyncWriteExt;

const TIMEOUT: Duration = Duration::from_secs(90);

async fn bed() -> &'static TestBed {
    match TestBed::shared().await {
        Ok(bed) => bed,
        Err(err) => panic!("{}", switchboard_runtime::report::chain(&err)),
    }
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn is_running_with_ip(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().is_some_and(|s| {
            s.phase.as_deref() == Some("Running")
                && s.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty())
        })
}

/// `(pod name, ready)` for every endpoint of the Service's EndpointSlices.
async fn endpoints(slices: &Api<EndpointSlice>, service: &str) -> Vec<(String, bool)> {
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
    let Ok(list) = slices.list(&lp).await else {
        return Vec::new();
    };
    list.items
        .iter()
        .flat_map(|slice| slice.endpoints.iter().flatten())
        .map(|ep| {
            let pod = ep
                .target_ref
                .as_ref()
                .and_then(|r| r.name.clone())
                .unwrap_or_default();
            let ready = ep
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(false);
            (pod, ready)
        })
        .collect()
}

#[tokio::test]
async fn deployment_pods_get_ready_endpoints_follow_readiness_and_deleted_pods_are_replaced() {
    let bed = bed().await;
    let ns = bed.namespace("deploy").await.expect("test namespace");
    let client = bed.client().expect("client");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns.name());
    let services: Api<Service> = Api::namespaced(client.clone(), ns.name());
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns.name());

    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 3,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": {
                    // Lets sim::set_pod_ready drive readiness on clusters with real kubelets too.
                    "readinessGates": [ { "conditionType": sim::READINESS_GATE } ],
                    "containers": [ {
                        "name": "web",
                        "image": "registry.k8s.io/pause:3.10",
                        "ports": [ { "containerPort": 8080 } ],
                    } ],
                },
            },
        },
    }))
    .expect("deployment");
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create deployment");
    let service: Service = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": { "selector": { "app": "web" }, "ports": [ { "port": 80, "targetPort": 8080 } ] },
    }))
    .expect("service");
    services
        .create(&PostParams::default(), &service)
        .await
        .expect("create service");

    let running = eventually("3 Running pods with an IP", TIMEOUT, || async {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?;
        let running: Vec<Pod> = list.items.into_iter().filter(is_running_with_ip).collect();
        (running.len() == 3).then_some(running)
    })
    .await;
    for pod in &running {
        // The bed's kwok already made them ready; a real kubelet waits for the gate.
        if !is_ready(pod) {
            let name = pod.metadata.name.as_deref().expect("pod name");
            sim::set_pod_ready(&client, ns.name(), name, true)
                .await
                .expect("gate ready");
        }
    }
    let names: Vec<String> = eventually("3 Ready pods", TIMEOUT, || async {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?;
        let ready: Vec<String> = list
            .items
            .iter()
            .filter(|p| is_running_with_ip(p) && is_ready(p))
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        (ready.len() == 3).then_some(ready)
    })
    .await;

    eventually(
        "an EndpointSlice with 3 ready endpoints",
        TIMEOUT,
        || async {
            let eps = endpoints(&slices, "web").await;
            (eps.len() == 3 && eps.iter().all(|(pod, ready)| *ready && names.contains(pod)))
                .then_some(())
        },
    )
    .await;

    let victim = names[0].clone();
    sim::set_pod_ready(&client, ns.name(), &victim, false)
        .await
        .expect("make pod not ready");
    eventually(
        "the not-ready pod's endpoint to turn not ready",
        TIMEOUT,
        || async {
            let eps = endpoints(&slices, "web").await;
            let ok = eps.len() == 3
                && eps
                    .iter()
                    .all(|(pod, ready)| if *pod == victim { !ready } else { *ready });
            ok.then_some(())
        },
    )
    .await;
    sim::set_pod_ready(&client, ns.name(), &victim, true)
        .await
        .expect("make pod ready again");
    eventually("the endpoint to turn ready again", TIMEOUT, || async {
        let eps = endpoints(&slices, "web").await;
        (eps.len() == 3 && eps.iter().all(|(_, ready)| *ready)).then_some(())
    })
    .await;

    let deleted = names[1].clone();
    pods.delete(&deleted, &DeleteParams::default())
        .await
        .expect("delete pod");
    let replacement = eventually(
        "the deleted pod to be replaced by a new Ready pod",
        TIMEOUT,
        || async {
            let list = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .ok()?;
            let ready: Vec<String> = list
                .items
                .iter()
                .filter(|p| is_running_with_ip(p) && is_ready(p))
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            let new: Vec<&String> = ready.iter().filter(|n| !names.contains(n)).collect();
            (ready.len() == 3 && !ready.contains(&deleted) && new.len() == 1)
                .then(|| new[0].clone())
        },
    )
    .await;
    eventually("the replacement's endpoint", TIMEOUT, || async {
        let eps = endpoints(&slices, "web").await;
        let ok = eps.len() == 3
            && eps.iter().any(|(pod, _)| *pod == replacement)
            && !eps.iter().any(|(pod, _)| *pod == deleted);
        ok.then_some(())
    })
    .await;
}

#[tokio::test]
async fn statefulset_pods_become_ready_with_stable_names() {
    let bed = bed().await;
    let ns = bed.namespace("sts").await.expect("test namespace");
    let client = bed.client().expect("client");
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), ns.name());
    let pods: Api<Pod> = Api::namespaced(client, ns.name());
    let set: StatefulSet = serde_json::from_value(json!({
        "metadata": { "name": "db" },
        "spec": {
            "serviceName": "db",
            "replicas": 3,
            "selector": { "matchLabels": { "app": "db" } },
            "template": {
                "metadata": { "labels": { "app": "db" } },
                "spec": { "containers": [ { "name": "db", "image": "registry.k8s.io/pause:3.10" } ] },
            },
        },
    }))
    .expect("statefulset");
    sets.create(&PostParams::default(), &set)
        .await
        .expect("create statefulset");
    let mut names = eventually("3 Ready StatefulSet pods", TIMEOUT, || async {
        let list = pods
            .list(&ListParams::default().labels("app=db"))
            .await
            .ok()?;
        let ready: Vec<String> = list
            .items
            .iter()
            .filter(|p| is_running_with_ip(p) && is_ready(p))
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        (ready.len() == 3).then_some(ready)
    })
    .await;
    names.sort();
    assert_eq!(names, ["db-0", "db-1", "db-2"]);
    // The controller writes the StatefulSet's status after it sees the pods turn ready: it follows.
    eventually(
        "the StatefulSet's status counts 3 ready",
        TIMEOUT,
        || async {
            let status = sets.get_status("db").await.ok()?.status?;
            (status.ready_replicas == Some(3)).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn deleting_an_owner_deletes_its_dependents() {
    let bed = bed().await;
    let ns = bed.namespace("gc").await.expect("test namespace");
    let maps: Api<ConfigMap> = Api::namespaced(bed.client().expect("client"), ns.name());
    let owner: ConfigMap =
        serde_json::from_value(json!({ "metadata": { "name": "owner" } })).expect("owner");
    let owner = maps
        .create(&PostParams::default(), &owner)
        .await
        .expect("create owner");
    let uid = owner.metadata.uid.expect("owner uid");
    let dependent: ConfigMap = serde_json::from_value(json!({
        "metadata": {
            "name": "dependent",
            "ownerReferences": [ { "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid } ],
        },
    }))
    .expect("dependent");
    maps.create(&PostParams::default(), &dependent)
        .await
        .expect("create dependent");

    maps.delete("owner", &DeleteParams::background())
        .await
        .expect("delete owner");
    eventually(
        "the garbage collector to delete the dependent",
        TIMEOUT,
        || async { matches!(maps.get_opt("dependent").await, Ok(None)).then_some(()) },
    )
    .await;
}

/// A namespaced `Widget` CRD in a group of its own, with a CEL rule, and the
/// status and scale subresources; deleted with the namespace.
async fn install_widget_crd(bed: &TestBed, ns: &TestNamespace) -> ApiResource {
    let group = format!("{}.e2e.switchboard.dev", ns.name());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": { "name": format!("widgets.{group}") },
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": { "plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList" },
            "versions": [ {
                "name": "v1",
                "served": true,
                "storage": true,
                "subresources": {
                    "status": {},
                    "scale": { "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas" },
                },
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "properties": {
                                "replicas": { "type": "integer", "minimum": 0 },
                                "min": { "type": "integer" },
                                "max": { "type": "integer" },
                            },
                            "x-kubernetes-validations": [ {
                                "rule": "!has(self.min) || !has(self.max) || self.min <= self.max",
                                "message": "min must not be greater than max",
                            } ],
                        },
                        "status": {
                            "type": "object",
                            "properties": {
                                "replicas": { "type": "integer" },
                                "conditions": {
                                    "type": "array",
                                    "x-kubernetes-list-type": "map",
                                    "x-kubernetes-list-map-keys": [ "type" ],
                                    "items": {
                                        "type": "object",
                                        "required": [ "type", "status" ],
                                        "properties": {
                                            "type": { "type": "string" },
                                            "status": { "type": "string" },
                                            "reason": { "type": "string" },
                                            "message": { "type": "string" },
                                            "lastTransitionTime": { "type": "string", "format": "date-time" },
                                        },
                                    },
                                },
                            },
                        },
                    },
                } },
            } ],
        },
    }))
    .expect("crd");
    let crds: Api<CustomResourceDefinition> = Api::all(bed.client().expect("client"));
    let name = crd.metadata.name.clone().expect("crd name");
    crds.create(&PostParams::default(), &crd)
        .await
        .expect("create CRD");
    ns.delete_crd_on_drop(name.clone());
    eventually("the CRD to be Established", TIMEOUT, || async {
        let crd = crds.get(&name).await.ok()?;
        let established = crd
            .status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        established.then_some(())
    })
    .await;
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(&group, "v1", "Widget"), "widgets")
}

/// Run kubectl with `stdin` as its input; `(success, stdout, stderr)`.
async fn kubectl(bed: &TestBed, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = bed
        .kubectl()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl starts");
    let mut input = child.stdin.take().expect("kubectl stdin");
    input
        .write_all(stdin.as_bytes())
        .await
        .expect("write to kubectl");
    drop(input);
    let out = child.wait_with_output().await.expect("kubectl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn widget_yaml(ar: &ApiResource, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: {}\nkind: Widget\nmetadata:\n  name: {name}\nspec: {spec}\n",
        ar.api_version
    )
}

#[tokio::test]
async fn kubectl_apply_of_an_object_breaking_a_cel_rule_fails_with_its_message() {
    let bed = bed().await;
    let ns = bed.namespace("cel").await.expect("test namespace");
    let ar = install_widget_crd(bed, &ns).await;

    let (ok, _, stderr) = kubectl(
        bed,
        &["apply", "-n", ns.name(), "-f", "-"],
        &widget_yaml(&ar, "good", "{min: 1, max: 2}"),
    )
    .await;
    assert!(ok, "a valid widget is accepted: {stderr}");

    let (ok, _, stderr) = kubectl(
        bed,
        &["apply", "-n", ns.name(), "-f", "-"],
        &widget_yaml(&ar, "bad", "{min: 3, max: 2}"),
    )
    .await;
    assert!(!ok, "a widget with min > max is rejected");
    assert!(
        stderr.contains("min must not be greater than max"),
        "kubectl says why: {stderr}"
    );
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(bed.client().expect("client"), ns.name(), &ar);
    assert!(
        widgets.get_opt("bad").await.expect("get").is_none(),
        "nothing was stored"
    );
}

#[tokio::test]
async fn kubectl_scale_uses_the_scale_subresource_and_kubectl_wait_sees_a_status_condition() {
    let bed = bed().await;
    let ns = bed.namespace("scale").await.expect("test namespace");
    let ar = install_widget_crd(bed, &ns).await;
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(bed.client().expect("client"), ns.name(), &ar);

    let (ok, _, stderr) = kubectl(
        bed,
        &["apply", "-n", ns.name(), "-f", "-"],
        &widget_yaml(&ar, "w", "{replicas: 1}"),
    )
    .await;
    assert!(ok, "apply: {stderr}");
    let resource = format!("widgets.{}/w", ar.group);
    let (ok, _, stderr) = kubectl(
        bed,
        &["scale", "-n", ns.name(), &resource, "--replicas=5"],
        "",
    )
    .await;
    assert!(ok, "kubectl scale: {stderr}");
    let w = widgets.get("w").await.expect("get widget");
    assert_eq!(
        w.data["spec"]["replicas"],
        json!(5),
        "scale wrote .spec.replicas"
    );

    let mut wait = bed
        .kubectl()
        .args([
            "wait",
            "-n",
            ns.name(),
            &resource,
            "--for=condition=Ready",
            "--timeout=60s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl wait starts");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        wait.try_wait().expect("poll kubectl wait").is_none(),
        "kubectl wait returned before the condition was set"
    );

    let status = json!({ "status": { "replicas": 5, "conditions": [ {
        "type": "Ready", "status": "True", "reason": "TestSaysSo", "message": "set by the test",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    } ] } });
    widgets
        .patch_status("w", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("patch status");
    let out = tokio::time::timeout(TIMEOUT, wait.wait_with_output())
        .await
        .expect("kubectl wait returns once the condition is set")
        .expect("kubectl wait runs");
    assert!(
        out.status.success(),
        "kubectl wait: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("condition met"));
}

#[tokio::test]
async fn server_side_apply_by_a_second_field_manager_conflicts_until_forced() {
    let bed = bed().await;
    let ns = bed.namespace("ssa").await.expect("test namespace");
    let maps: Api<ConfigMap> = Api::namespaced(bed.client().expect("client"), ns.name());
    let apply = |color: &str| json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "paint" }, "data": { "color": color } });

    maps.patch(
        "paint",
        &PatchParams::apply("alice"),
        &Patch::Apply(apply("red")),
    )
    .await
    .expect("alice applies");
    let err = maps
        .patch(
            "paint",
            &PatchParams::apply("bob"),
            &Patch::Apply(apply("blue")),
        )
        .await
        .expect_err("bob's apply of a field alice owns conflicts");
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 409, "{status:?}");
            assert_eq!(status.reason, "Conflict", "{status:?}");
            assert!(
                status.message.contains("alice") && status.message.contains(".data.color"),
                "{}",
                status.message
            );
        }
        other => panic!("expected a 409 Conflict, got {other}"),
    }
    // The same value is no conflict: both managers then share the field.
    maps.patch(
        "paint",
        &PatchParams::apply("carol"),
        &Patch::Apply(apply("red")),
    )
    .await
    .expect("carol applies the same value");

    let forced = maps
        .patch(
            "paint",
            &PatchParams::apply("bob").force(),
            &Patch::Apply(apply("blue")),
        )
        .await
        .expect("bob forces");
    assert_eq!(
        forced
            .data
            .as_ref()
            .and_then(|d| d.get("color"))
            .map(String::as_str),
        Some("blue")
    );
    let managers: Vec<String> = forced
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.to_string().contains("f:color"))
        })
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(
        managers,
        vec!["bob".to_owned()],
        "forcing took the field from alice and carol"
    );
}
