//! Conditions and Events: Ready means serving (workloads ready, Redis reachable with a master, the load
//! set equal to the ready pods); a missing password Secret or an object the API server refuses degrades
//! the ChatCluster with a message saying what to do (and doing it heals it); the pause annotation stops
//! reconciling until it is removed.

use std::collections::BTreeSet;
use std::time::Duration;

use e2e::testbed::sim;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use operator::context::PAUSED_ANNOTATION;
use operator::crd::ChatCluster;
use serde_json::json;
use switchboard_testkit::{RedisServer, eventually};

use crate::{
    TIMEOUT, bed, condition, create_cluster, demo_deployment_asks_for, kubectl, kubectl_ok,
    loadset, new_namespace, ready_node_pods, scale_demo, start_operator, wait_condition,
    wait_event,
};

#[tokio::test]
async fn missing_password_secret_is_degraded_with_an_actionable_message() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-degraded").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    let redis = RedisServer::start_with_password("s3cret")
        .await
        .expect("redis-server");
    let _operator = start_operator(bed, n).await;
    let cc = ChatCluster::test("ext")
        .with_external_url(&format!("redis://127.0.0.1:{}", redis.port()))
        .with_password_secret("redis-pw", "password");
    create_cluster(&client, n, cc).await;

    let cc = wait_condition(&client, n, "ext", "Degraded", "True").await;
    let (_, reason, message) = condition(&cc, "Degraded").expect("Degraded");
    assert_eq!(reason, "PasswordSecretNotFound");
    assert!(
        message.contains("create secret generic redis-pw"),
        "{message}"
    );
    assert_eq!(
        condition(&cc, "Ready").map(|c| c.0).as_deref(),
        Some("False")
    );
    let (type_, _, note) = wait_event(&client, n, "ext", "Degraded").await;
    assert_eq!(type_, "Warning");
    assert!(note.contains("redis-pw"), "{note}");

    // Doing what the message says heals it.
    kubectl_ok(
        bed,
        &[
            "-n",
            n,
            "create",
            "secret",
            "generic",
            "redis-pw",
            "--from-literal=password=s3cret",
        ],
        None,
    )
    .await;
    let cc = wait_condition(&client, n, "ext", "Degraded", "False").await;
    assert_eq!(
        condition(&cc, "Degraded").map(|c| c.1).as_deref(),
        Some("AsExpected")
    );
    wait_condition(&client, n, "ext", "Ready", "True").await;
    wait_event(&client, n, "ext", "Recovered").await;
}

#[tokio::test]
async fn an_object_the_api_server_refuses_degrades_the_chat_cluster() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-invalid").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    let _operator = start_operator(bed, n).await;
    create_cluster(
        &client,
        n,
        ChatCluster::test("demo")
            .with_nodes(1)
            .with_label("team", "chat"),
    )
    .await;
    wait_condition(&client, n, "demo", "Progressing", "False").await;
    let api: Api<ChatCluster> = Api::namespaced(client.clone(), n);
    // The CRD cannot know Kubernetes' label-value syntax; the API server refuses the owned objects.
    api.patch(
        "demo",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "labels": { "team": "not a valid value!" } } })),
    )
    .await
    .expect("set a bad label");
    let cc = wait_condition(&client, n, "demo", "Degraded", "True").await;
    let (_, reason, message) = condition(&cc, "Degraded").expect("Degraded");
    assert_eq!(reason, "InvalidSpec");
    assert!(message.contains("fix the ChatCluster spec"), "{message}");
    assert!(message.contains("not a valid value!"), "{message}");
    // The refused update changed nothing that runs: the counts still say what runs.
    let s = cc.status.clone().expect("status");
    assert_eq!((s.nodes.ready, s.nodes.desired), (1, 1), "{s:?}");
    assert_eq!((s.registries.ready, s.registries.desired), (2, 2), "{s:?}");
    assert_eq!(
        (s.redis.data_nodes.ready, s.redis.sentinels.ready),
        (3, 3),
        "{s:?}"
    );
    api.patch(
        "demo",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "labels": { "team": "chat" } } })),
    )
    .await
    .expect("fix the label");
    wait_condition(&client, n, "demo", "Degraded", "False").await;
}

#[tokio::test]
async fn pause_annotation_stops_reconciling_until_removed() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-pause").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    let _operator = start_operator(bed, n).await;
    create_cluster(&client, n, ChatCluster::test("demo").with_nodes(2)).await;
    wait_condition(&client, n, "demo", "Progressing", "False").await;

    kubectl_ok(
        bed,
        &[
            "-n",
            n,
            "annotate",
            "chatcluster/demo",
            &format!("{PAUSED_ANNOTATION}=true"),
        ],
        None,
    )
    .await;
    let cc = eventually("Progressing=False/Paused", TIMEOUT, || async {
        let api: Api<ChatCluster> = Api::namespaced(client.clone(), n);
        let cc = api.get("demo").await.ok()?;
        (condition(&cc, "Progressing")?.1 == "Paused").then_some(cc)
    })
    .await;
    assert!(
        condition(&cc, "Progressing")
            .expect("condition")
            .2
            .contains(PAUSED_ANNOTATION)
    );
    scale_demo(bed, n, 4).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), n);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let d = deployments.get("demo-node").await.expect("deployment");
    assert_eq!(
        d.spec.replicas,
        Some(2),
        "a paused ChatCluster was reconciled"
    );

    kubectl_ok(
        bed,
        &[
            "-n",
            n,
            "annotate",
            "chatcluster/demo",
            &format!("{PAUSED_ANNOTATION}-"),
        ],
        None,
    )
    .await;
    demo_deployment_asks_for(&client, n, 4, "the Deployment follows once resumed").await;
}

#[tokio::test]
async fn external_redis_chat_cluster_is_ready_only_while_it_serves() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-serving").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    let mut redis = RedisServer::start().await.expect("redis-server");
    let _operator = start_operator(bed, n).await;
    create_cluster(
        &client,
        n,
        ChatCluster::test("demo")
            .with_nodes(3)
            .with_external_url(&redis.url()),
    )
    .await;
    let ls = loadset(&redis, &format!("{n}/demo")).await;

    // Every status seen on the way: Ready only once the load set holds all three ready pods.
    let api: Api<ChatCluster> = Api::namespaced(client.clone(), n);
    let not_ready_reasons = std::sync::Mutex::new(BTreeSet::new());
    eventually("demo becomes Ready", TIMEOUT, || async {
        let cc = api.get("demo").await.ok()?;
        let (ready, reason, _) = condition(&cc, "Ready")?;
        let s = cc.status.clone()?;
        if ready != "True" {
            not_ready_reasons.lock().expect("lock").insert(reason);
            return None;
        }
        assert_eq!(s.nodes.ready, 3, "Ready with {s:?}");
        assert_eq!(s.load_set_members, Some(3), "Ready with {s:?}");
        assert!(s.redis.current_master.is_some(), "Ready with {s:?}");
        Some(())
    })
    .await;
    let not_ready_reasons = not_ready_reasons.into_inner().expect("lock");
    assert!(
        !not_ready_reasons.is_empty(),
        "a new chat system is not Ready at once"
    );
    let pods = ready_node_pods(&client, n, "demo", 3).await;
    assert_eq!(ls.members().await.expect("members"), pods);
    let out = kubectl_ok(
        bed,
        &[
            "wait",
            "-n",
            n,
            "--for=condition=Ready",
            "chatcluster/demo",
            "--timeout=10s",
        ],
        None,
    )
    .await;
    assert!(out.contains("condition met"), "{out}");
    let cc = api.get("demo").await.expect("demo");
    for type_ in ["Reconciling", "Stalled", "Degraded"] {
        assert_eq!(
            condition(&cc, type_).map(|c| c.0).as_deref(),
            Some("False"),
            "{type_}"
        );
    }

    // A pod turning not ready: not Ready until it is back (and back in the load set).
    let victim = pods.iter().next().cloned().expect("a pod");
    sim::set_pod_ready(&client, n, &victim, false)
        .await
        .expect("not ready");
    let cc = wait_condition(&client, n, "demo", "Ready", "False").await;
    let (_, reason, message) = condition(&cc, "Ready").expect("Ready");
    assert!(
        ["RollingOut", "LoadSetBehind"].contains(&reason.as_str()),
        "{reason}: {message}"
    );
    sim::set_pod_ready(&client, n, &victim, true)
        .await
        .expect("ready");
    wait_condition(&client, n, "demo", "Ready", "True").await;

    // Redis gone: not Ready, Degraded and Stalled with the reason; back again: Ready.
    redis.kill();
    let cc = eventually("Ready=False/RedisUnreachable", TIMEOUT, || async {
        let cc = api.get("demo").await.ok()?;
        (condition(&cc, "Ready")?.1 == "RedisUnreachable").then_some(cc)
    })
    .await;
    assert_eq!(
        condition(&cc, "Degraded").map(|c| (c.0, c.1)),
        Some(("True".to_owned(), "RedisUnreachable".to_owned()))
    );
    assert_eq!(
        condition(&cc, "Stalled").map(|c| c.0).as_deref(),
        Some("True")
    );
    redis.restart().await.expect("redis-server restarts");
    wait_condition(&client, n, "demo", "Ready", "True").await;
}

/// External Redis over TLS only (`rediss://`, client certificates required): the operator reads the CA
/// and its client certificate from the Secrets the ChatCluster names, keeps the load set over TLS and
/// reports Ready; without the client Secret it cannot connect, and says so.
#[tokio::test]
async fn external_redis_over_mutual_tls_is_reached_with_material_from_secrets() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-tls").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    let pki = switchboard_testkit::tls::Pki::new();
    let (_redis, tls_port) = pki.redis_server(true).await.expect("redis-server with TLS");
    let p = |name: &str| pki.path(name).display().to_string();
    kubectl_ok(
        bed,
        &[
            "-n",
            n,
            "create",
            "secret",
            "generic",
            "redis-ca",
            &format!("--from-file=ca.pem={}", p("ca.crt")),
        ],
        None,
    )
    .await;
    let _operator = start_operator(bed, n).await;
    let mut cc = ChatCluster::test("demo")
        .with_nodes(1)
        .with_external_url(&format!("rediss://127.0.0.1:{tls_port}"));
    if let Some(ext) = cc.spec.redis.external.as_mut() {
        ext.tls = Some(operator::crd::ExternalRedisTls {
            ca_secret_ref: Some(k8s_openapi::api::core::v1::SecretKeySelector {
                name: "redis-ca".to_owned(),
                key: "ca.pem".to_owned(),
                optional: None,
            }),
            client_certificate_secret: Some("redis-client".to_owned()),
        });
    }
    create_cluster(&client, n, cc).await;
    // No client certificate yet: Redis cannot be reached, and Ready says so.
    let api: Api<ChatCluster> = Api::namespaced(client.clone(), n);
    eventually("Ready=False naming Redis", TIMEOUT, || async {
        let cc = api.get("demo").await.ok()?;
        let (ready, reason, _) = condition(&cc, "Ready")?;
        (ready == "False" && reason == "RedisUnreachable").then_some(())
    })
    .await;
    kubectl_ok(
        bed,
        &[
            "-n",
            n,
            "create",
            "secret",
            "tls",
            "redis-client",
            &format!("--cert={}", p("client.crt")),
            &format!("--key={}", p("client.key")),
        ],
        None,
    )
    .await;
    let cc = wait_condition(&client, n, "demo", "Ready", "True").await;
    let status = cc.status.expect("status");
    assert_eq!(status.load_set_members, Some(1), "{status:?}");
    assert_eq!(
        status.redis.current_master.as_deref(),
        Some(format!("127.0.0.1:{tls_port}").as_str())
    );
}

/// `spec.nodes.expose`: every chat-node pod gets a NodePort Service of its own, owned by the pod, and
/// the registry hands out `ws://<host>:<node port>/ws`; without `expose` the Services go and the pod
/// URLs come back.
#[tokio::test]
async fn exposed_nodes_get_a_service_each_and_are_handed_out_at_its_node_port() {
    use k8s_openapi::api::core::v1::Service;
    let bed = bed().await;
    let ns = new_namespace(bed, "op-expose").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    let redis = RedisServer::start().await.expect("redis-server");
    let _operator = start_operator(bed, n).await;
    let mut cc = ChatCluster::test("demo")
        .with_nodes(2)
        .with_external_url(&redis.url());
    cc.spec.nodes.expose = Some(operator::crd::NodeExposure {
        type_: operator::crd::ExposeType::NodePort,
        host: Some("192.0.2.10".to_owned()),
    });
    create_cluster(&client, n, cc).await;
    wait_condition(&client, n, "demo", "Ready", "True").await;
    let services: Api<Service> = Api::namespaced(client.clone(), n);
    let ls = loadset(&redis, &format!("{n}/demo")).await;
    let exposed = eventually("both pods exposed and handed out", TIMEOUT, || async {
        let list = services
            .list(&kube::api::ListParams::default().labels("switchboard.dev/exposes"))
            .await
            .ok()?;
        let ports: BTreeSet<i32> = list
            .items
            .iter()
            .filter(|s| {
                let owner = s.metadata.owner_references.as_ref().and_then(|o| o.first());
                owner.is_some_and(|o| o.kind == "Pod")
                    && s.spec.as_ref().and_then(|sp| sp.type_.as_deref()) == Some("NodePort")
            })
            .filter_map(|s| s.spec.as_ref()?.ports.as_ref()?.first()?.node_port)
            .collect();
        (ports.len() == 2).then_some(ports)
    })
    .await;
    // The pods are simulated: announce them as their chat-nodes would (pod URL, capacity).
    for id in ls.members().await.expect("members") {
        ls.publish_node_info(&switchboard_loadset::NodeInfo {
            url: format!("ws://{id}.pods.invalid:8080/ws"),
            id,
            capacity: 100,
            stats: Default::default(),
        })
        .await
        .expect("node info");
    }
    let handed = eventually("the registry hands out node ports", TIMEOUT, || async {
        let a = ls.assign().await.ok()??;
        let port: i32 = a
            .url
            .strip_prefix("ws://192.0.2.10:")?
            .strip_suffix("/ws")?
            .parse()
            .ok()?;
        exposed.contains(&port).then_some(a.url)
    })
    .await;
    println!("handed out {handed}");

    // Without `expose`: the Services go, the pods' own URLs come back.
    let api: Api<ChatCluster> = Api::namespaced(client.clone(), n);
    api.patch(
        "demo",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "nodes": { "expose": null } } })),
    )
    .await
    .expect("unexpose");
    eventually(
        "per-pod Services removed, pod URLs back",
        TIMEOUT,
        || async {
            let left = services
                .list(&kube::api::ListParams::default().labels("switchboard.dev/exposes"))
                .await
                .ok()?;
            let a = ls.assign().await.ok()??;
            (left.items.is_empty() && !a.url.contains("192.0.2.10")).then_some(())
        },
    )
    .await;
}

/// Managed Redis with `spec.redis.managed.tls`: a missing certificate Secret is `Degraded` (not servers
/// that cannot start); once it exists the data and sentinel pods mount it, chat-node trusts its
/// authority, and TLS cannot be switched off on a running chat system.
#[tokio::test]
async fn managed_redis_tls_needs_its_certificate_secret_and_is_fixed_at_creation() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-mtls").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    let _operator = start_operator(bed, n).await;
    let mut cc = ChatCluster::test("demo").with_nodes(1);
    cc.spec.redis.managed.tls = Some(operator::crd::ManagedRedisTls {
        secret_name: "redis-cert".to_owned(),
    });
    create_cluster(&client, n, cc).await;
    let api: Api<ChatCluster> = Api::namespaced(client.clone(), n);
    let message = eventually("Degraded TlsSecretNotFound", TIMEOUT, || async {
        let cc = api.get("demo").await.ok()?;
        let (status, reason, message) = condition(&cc, "Degraded")?;
        (status == "True" && reason == "TlsSecretNotFound").then_some(message)
    })
    .await;
    assert!(message.contains("redis-cert"), "{message}");

    let pki = switchboard_testkit::tls::Pki::new();
    let dir = pki.issue(
        "servers",
        &["*.demo-redis-headless.svc", "demo-sentinel-headless"],
    );
    let file = |name: &str| dir.join(name).display().to_string();
    kubectl_ok(
        bed,
        &[
            "-n",
            n,
            "create",
            "secret",
            "generic",
            "redis-cert",
            &format!("--from-file=tls.crt={}", file("servers.crt")),
            &format!("--from-file=tls.key={}", file("servers.key")),
            &format!("--from-file=ca.crt={}", file("ca.crt")),
        ],
        None,
    )
    .await;
    wait_condition(&client, n, "demo", "Degraded", "False").await;
    let sets: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::namespaced(client.clone(), n);
    for name in ["demo-redis", "demo-sentinel"] {
        let set = sets.get(name).await.expect(name);
        let pod = set.spec.template.spec.expect("pod");
        assert!(
            pod.volumes.unwrap_or_default().iter().any(|v| v
                .secret
                .as_ref()
                .and_then(|s| s.secret_name.as_deref())
                == Some("redis-cert")),
            "{name} mounts the certificate"
        );
    }
    let (ok, out) = kubectl(
        bed,
        &[
            "-n",
            n,
            "patch",
            "chatcluster/demo",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/spec/redis/managed/tls"}]"#,
        ],
        None,
    )
    .await;
    assert!(!ok && out.contains("cannot be turned on or off"), "{out}");
}
