//! Ownership: the operator applies and deletes only objects its ChatCluster controls. A name someone
//! else already uses (a Bitnami Redis release called like the ChatCluster, a hand-made Service) is left
//! untouched and reported as `Degraded` / `NameConflict`, while the rest of the chat system is built.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServicePort, ServiceSpec};
use kube::api::{Api, ObjectMeta, PostParams};
use operator::crd::ChatCluster;
use switchboard_testkit::{RedisServer, eventually};

use crate::{
    TIMEOUT, bed, condition, create_cluster, new_namespace, start_operator, wait_condition,
};

/// A Service `name` that belongs to someone else (no owner, a label of its own).
fn foreign_service(name: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/name".to_owned(),
                "redis".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            selector: Some(BTreeMap::from([("app".to_owned(), "redis".to_owned())])),
            ports: Some(vec![ServicePort {
                name: Some("tcp-redis".to_owned()),
                port: 6379,
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

#[tokio::test]
async fn objects_of_others_survive_external_mode_and_a_taken_name_is_a_name_conflict() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-owner").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    let redis = RedisServer::start().await.expect("redis-server");
    let services: Api<Service> = Api::namespaced(client.clone(), n);
    let configs: Api<ConfigMap> = Api::namespaced(client.clone(), n);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), n);
    // What a Bitnami Redis release called "demo" creates, plus a hand-made Service on a name we render.
    let headless = services
        .create(
            &PostParams::default(),
            &foreign_service("demo-redis-headless"),
        )
        .await
        .expect("create the foreign headless Service");
    let scripts = configs
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("demo-redis-scripts".to_owned()),
                    ..ObjectMeta::default()
                },
                data: Some(BTreeMap::from([(
                    "start.sh".to_owned(),
                    "exec redis-server".to_owned(),
                )])),
                ..ConfigMap::default()
            },
        )
        .await
        .expect("create the foreign ConfigMap");
    let taken = services
        .create(&PostParams::default(), &foreign_service("demo-node"))
        .await
        .expect("create the Service on the chat-node name");

    let _operator = start_operator(bed, n).await;
    create_cluster(
        &client,
        n,
        ChatCluster::test("demo")
            .with_nodes(1)
            .with_external_url(&redis.url()),
    )
    .await;

    let cc = wait_condition(&client, n, "demo", "Degraded", "True").await;
    let (_, reason, message) = condition(&cc, "Degraded").expect("Degraded");
    assert_eq!(reason, "NameConflict");
    assert!(
        message.contains(&format!("Service {n}/demo-node")),
        "{message}"
    );
    assert!(message.contains("delete or rename"), "{message}");
    assert!(
        !message.contains("demo-redis-headless") && !message.contains("demo-redis-scripts"),
        "External mode renders no Redis objects, so their names conflict with nothing: {message}"
    );
    assert_eq!(
        condition(&cc, "Ready").map(|c| c.0).as_deref(),
        Some("False")
    );

    // The rest of the reconcile went on: both workloads exist, the registry Service too.
    eventually("the Deployments exist", TIMEOUT, || async {
        let node = deployments.get_opt("demo-node").await.ok()??;
        let registry = deployments.get_opt("demo-registry").await.ok()??;
        Some((node, registry))
    })
    .await;
    assert!(
        services
            .get_opt("demo-registry")
            .await
            .expect("get")
            .is_some()
    );

    // Several reconciles later (every owned object's change triggers one), the three foreign objects
    // are exactly as they were created.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    for (before, name) in [(&headless, "demo-redis-headless"), (&taken, "demo-node")] {
        let now = services
            .get(name)
            .await
            .expect("the foreign Service is still there");
        assert_eq!(now.metadata.uid, before.metadata.uid, "{name} was replaced");
        assert_eq!(
            now.metadata.resource_version, before.metadata.resource_version,
            "{name} was modified"
        );
        assert!(
            now.metadata.owner_references.is_none(),
            "{name} was taken over"
        );
    }
    let now = configs
        .get("demo-redis-scripts")
        .await
        .expect("the foreign ConfigMap is still there");
    assert_eq!(now.metadata.uid, scripts.metadata.uid);
    assert_eq!(
        now.metadata.resource_version,
        scripts.metadata.resource_version
    );
    assert_eq!(now.data, scripts.data);
}
