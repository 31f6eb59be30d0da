//! The owned objects on a real API server: the minimal example gets every object, controlled by its
//! ChatCluster, and becomes Ready; the password Secret is generated once and a change rolls the pods;
//! the production example is accepted and rendered as written.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, Patch, PatchParams};
use operator::crd::ChatCluster;
use serde_json::json;
use switchboard_testkit::eventually;

use crate::{
    REPO, TIMEOUT, bed, condition, kubectl, kubectl_ok, new_namespace, start_operator,
    wait_condition, wait_event,
};

#[tokio::test]
async fn minimal_chat_cluster_gets_every_owned_object_and_is_not_ready_while_redis_does_not_answer()
{
    let bed = bed().await;
    let ns = new_namespace(bed, "op-minimal").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    let _operator = start_operator(bed, n).await;

    let example = format!("{REPO}/manifests/examples/minimal.yaml");
    kubectl_ok(bed, &["apply", "-n", n, "-f", &example], None).await;
    let out = kubectl_ok(
        bed,
        &[
            "wait",
            "-n",
            n,
            "--for=condition=Progressing=False",
            "chatcluster/chat",
            "--timeout=90s",
        ],
        None,
    )
    .await;
    assert!(out.contains("condition met"), "{out}");

    // Every pod is (simulated) ready, but no Redis answers behind the sentinel names: not serving, and
    // the status says why. kstatus readers see Reconciling, not success.
    let cc = wait_condition(&client, n, "chat", "Reconciling", "True").await;
    let (ready, reason, message) = condition(&cc, "Ready").expect("Ready");
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("False", "RedisUnreachable"),
        "{message}"
    );
    assert!(message.contains("sentinels"), "{message}");
    assert_eq!(
        condition(&cc, "Reconciling").map(|c| c.1).as_deref(),
        Some("RedisUnreachable")
    );
    assert_eq!(
        condition(&cc, "Stalled").map(|c| c.0).as_deref(),
        Some("False")
    );
    for c in cc.status.iter().flat_map(|s| s.conditions.iter()) {
        assert_eq!(c.observed_generation, cc.metadata.generation, "{}", c.type_);
    }
    let (ok, out) = kubectl(
        bed,
        &[
            "wait",
            "-n",
            n,
            "--for=condition=Ready",
            "chatcluster/chat",
            "--timeout=2s",
        ],
        None,
    )
    .await;
    assert!(
        !ok,
        "kubectl wait --for=condition=Ready must not succeed: {out}"
    );

    let api: Api<ChatCluster> = Api::namespaced(client.clone(), n);
    let cc = api.get("chat").await.expect("ChatCluster");
    let status = cc.status.clone().expect("status");
    assert_eq!(status.observed_generation, cc.metadata.generation);
    assert_eq!((status.nodes.ready, status.nodes.desired), (2, 2));
    assert_eq!((status.registries.ready, status.registries.desired), (2, 2));
    assert_eq!(
        (
            status.redis.data_nodes.ready,
            status.redis.data_nodes.desired
        ),
        (3, 3)
    );
    assert_eq!(
        (status.redis.sentinels.ready, status.redis.sentinels.desired),
        (3, 3)
    );
    assert_eq!(
        status.selector.as_deref(),
        Some(
            "app.kubernetes.io/component=chat-node,app.kubernetes.io/instance=chat,app.kubernetes.io/name=switchboard"
        )
    );
    assert_eq!(
        condition(&cc, "Degraded").map(|c| c.0).as_deref(),
        Some("False")
    );
    assert_eq!(
        condition(&cc, "Progressing").map(|c| c.0).as_deref(),
        Some("False")
    );

    // `spec: {}` got the CRD's resource defaults from the API server, and every pod requests them and
    // spreads over zones and hosts.
    let requested = |r: &k8s_openapi::api::core::v1::ResourceRequirements| {
        r.requests
            .as_ref()
            .is_some_and(|q| q.contains_key("cpu") && q.contains_key("memory"))
    };
    assert!(requested(&cc.spec.nodes.resources), "{:?}", cc.spec.nodes);
    assert!(requested(&cc.spec.redis.managed.sentinel_resources));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), n);
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), n);
    let mut templates = Vec::new();
    for name in ["chat-node", "chat-registry"] {
        templates.push(deployments.get(name).await.expect(name).spec.template);
    }
    for name in ["chat-redis", "chat-sentinel"] {
        templates.push(sets.get(name).await.expect(name).spec.template);
    }
    for template in templates {
        let pod = template.spec.expect("pod spec");
        for c in &pod.containers {
            assert!(
                requested(c.resources.as_ref().expect("resources")),
                "{}",
                c.name
            );
        }
        assert_eq!(
            pod.topology_spread_constraints.map(|s| s.len()),
            Some(2),
            "{:?}",
            pod.containers[0].name
        );
    }

    // Every owned object exists and is controlled by the ChatCluster.
    let uid = cc.metadata.uid.clone().expect("uid");
    let controlled = |meta: &kube::api::ObjectMeta| {
        meta.owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == uid && o.controller == Some(true))
    };
    let services: Api<Service> = Api::namespaced(client.clone(), n);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), n);
    let configs: Api<ConfigMap> = Api::namespaced(client.clone(), n);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), n);
    for name in ["chat-node", "chat-registry"] {
        assert!(controlled(
            &deployments.get(name).await.expect(name).metadata
        ));
        assert!(controlled(&services.get(name).await.expect(name).metadata));
        assert!(controlled(&pdbs.get(name).await.expect(name).metadata));
    }
    for name in ["chat-redis", "chat-sentinel"] {
        assert!(controlled(&sets.get(name).await.expect(name).metadata));
        assert!(controlled(&pdbs.get(name).await.expect(name).metadata));
    }
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), n);
    for name in ["chat-node", "chat-registry", "chat-redis", "chat-sentinel"] {
        assert!(controlled(&policies.get(name).await.expect(name).metadata));
    }
    for name in ["chat-redis-headless", "chat-sentinel-headless"] {
        let svc = services.get(name).await.expect(name);
        assert!(controlled(&svc.metadata));
        assert_eq!(svc.spec.and_then(|s| s.cluster_ip).as_deref(), Some("None"));
    }
    assert!(controlled(
        &configs
            .get("chat-redis-scripts")
            .await
            .expect("scripts")
            .metadata
    ));
    let secret = secrets
        .get("chat-redis-auth")
        .await
        .expect("password Secret");
    assert!(controlled(&secret.metadata));
    let password = secret.data.clone().expect("data")["password"].0.clone();
    assert_eq!(password.len(), 64);

    // The pods are given the password in use from the operator's applied Secret.
    let applied = secrets
        .get("chat-redis-applied")
        .await
        .expect("applied password Secret");
    assert!(controlled(&applied.metadata));
    let data = applied.data.clone().expect("data");
    assert_eq!(data["password"].0, password);
    assert_eq!(data["passwords"].0, password);

    // Reconciles never rotate the password by themselves. Changing it starts a rotation, which first
    // makes every Redis server accept both passwords: on the bed no Redis answers, so it waits there,
    // says so, and changes nothing the pods run with (the real-pods suite completes one).
    let hash = |d: &Deployment| {
        d.spec
            .template
            .metadata
            .clone()
            .and_then(|m| m.annotations)
            .unwrap_or_default()["switchboard.dev/config-hash"]
            .clone()
    };
    let before = hash(&deployments.get("chat-node").await.expect("deployment"));
    let patch = json!({ "stringData": { "password": "a-new-password" } });
    secrets
        .patch(
            "chat-redis-auth",
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
        .expect("change password");
    let clusters: Api<ChatCluster> = Api::namespaced(client.clone(), n);
    let message = eventually("Reconciling for the password rotation", TIMEOUT, || async {
        let cc = clusters.get("chat").await.ok()?;
        let (status, reason, message) = condition(&cc, "Reconciling")?;
        (status == "True" && reason == "PasswordRotating").then_some(message)
    })
    .await;
    assert!(
        message.contains("chat-redis-"),
        "names the server it waits for: {message}"
    );
    assert_eq!(
        hash(&deployments.get("chat-node").await.expect("deployment")),
        before,
        "no pod rolls before the servers accept the new password"
    );
    let applied = secrets.get("chat-redis-applied").await.expect("Secret");
    assert_eq!(applied.data.expect("data")["password"].0, password);
    let secret = secrets.get("chat-redis-auth").await.expect("Secret");
    assert_eq!(secret.data.expect("data")["password"].0, b"a-new-password");

    let (type_, _, note) = wait_event(&client, n, "chat", "Created").await;
    assert_eq!(type_, "Normal");
    assert!(note.contains("2 socket servers"), "{note}");
    wait_event(&client, n, "chat", "PasswordGenerated").await;
}

#[tokio::test]
async fn production_example_is_accepted_and_rendered() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-prod").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    let _operator = start_operator(bed, n).await;
    let example = format!("{REPO}/manifests/examples/production.yaml");
    kubectl_ok(bed, &["apply", "-n", n, "-f", &example], None).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), n);
    let d = eventually("chat-prod-node", TIMEOUT, || async {
        deployments.get("chat-prod-node").await.ok()
    })
    .await;
    assert_eq!(d.spec.replicas, Some(6));
    // Its attachments Secret does not exist here: the chat-nodes run with attachments off.
    let store = d
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|p| p.containers[0].env.as_ref())
        .and_then(|env| {
            env.iter()
                .find(|e| e.name == "SWITCHBOARD_ATTACHMENTS_STORE")
        })
        .and_then(|e| e.value.clone());
    assert_eq!(store.as_deref(), Some("off"));
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), n);
    let redis = eventually("chat-prod-redis", TIMEOUT, || async {
        sets.get("chat-prod-redis").await.ok()
    })
    .await;
    assert!(redis.spec.volume_claim_templates.is_some());
    let sentinels = sets.get("chat-prod-sentinel").await.expect("sentinels");
    assert_eq!(sentinels.spec.replicas, Some(5));
    let services: Api<Service> = Api::namespaced(client.clone(), n);
    let svc = services
        .get("chat-prod-registry")
        .await
        .expect("registry service");
    assert_eq!(
        svc.spec.and_then(|s| s.type_).as_deref(),
        Some("LoadBalancer")
    );
}

#[tokio::test]
async fn every_rendered_pod_is_admitted_under_pod_security_restricted() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-restricted").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    kubectl_ok(
        bed,
        &[
            "label",
            "namespace",
            n,
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/enforce-version=latest",
        ],
        None,
    )
    .await;
    // Enforcement is on: a pod with no security settings is refused.
    let plain = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: plain, namespace: {n}}}\nspec: {{containers: [{{name: c, image: busybox}}]}}\n"
    );
    let (ok, out) = kubectl(bed, &["apply", "-f", "-"], Some(&plain)).await;
    assert!(!ok && out.contains("violates PodSecurity"), "{out}");

    let _operator = start_operator(bed, n).await;
    let api: Api<ChatCluster> = Api::namespaced(client.clone(), n);
    let mut cc = ChatCluster::test("demo")
        .with_nodes(1)
        .with_registries(1)
        .with_redis(1, 1);
    cc.metadata.namespace = Some(n.to_owned());
    cc.metadata.uid = None;
    cc.metadata.generation = None;
    api.create(&Default::default(), &cc).await.expect("create");
    // Every workload gets its pods (a refused pod would leave its workload short for ever).
    let cc = wait_condition(&client, n, "demo", "Progressing", "False").await;
    let s = cc.status.expect("status");
    assert_eq!(
        (
            s.nodes.ready,
            s.registries.ready,
            s.redis.data_nodes.ready,
            s.redis.sentinels.ready
        ),
        (1, 1, 1, 1)
    );
}
