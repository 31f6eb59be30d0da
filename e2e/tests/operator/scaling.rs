//! Scaling: `kubectl scale` drives the chat-node Deployment and the status through the scale
//! subresource, and scaling down removes the least-loaded pods first (pod-deletion-cost, written only
//! when a scale-down is pending).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use operator::crd::ChatCluster;
use serde_json::json;
use switchboard_testkit::{RedisServer, eventually};

use crate::{
    TIMEOUT, bed, create_cluster, demo_deployment_asks_for, external_cluster_in_load_set,
    kubectl_ok, members_become, new_namespace, node_pods, scale_demo, start_operator,
    wait_condition, wait_event,
};

#[tokio::test]
async fn kubectl_scale_drives_the_deployment_and_the_status() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-scale").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    let _operator = start_operator(bed, n).await;
    create_cluster(&client, n, ChatCluster::test("demo").with_nodes(2)).await;
    wait_condition(&client, n, "demo", "Progressing", "False").await;

    scale_demo(bed, n, 5).await;
    demo_deployment_asks_for(&client, n, 5, "the Deployment follows to 5").await;
    let api: Api<ChatCluster> = Api::namespaced(client.clone(), n);
    eventually("status.nodes.ready = 5", TIMEOUT, || async {
        let cc = api.get("demo").await.ok()?;
        let s = cc.status?;
        (s.nodes.ready == 5 && s.nodes.desired == 5).then_some(())
    })
    .await;
    // The scale subresource reads the same numbers back.
    let out = kubectl_ok(
        bed,
        &[
            "-n",
            n,
            "get",
            "--subresource=scale",
            "chatcluster/demo",
            "-o",
            "jsonpath={.spec.replicas}/{.status.replicas}/{.status.selector}",
        ],
        None,
    )
    .await;
    assert!(
        out.starts_with("5/5/app.kubernetes.io/component=chat-node"),
        "{out}"
    );
    let (_, _, note) = wait_event(&client, n, "demo", "Scaled").await;
    assert!(note.contains("from 2 to 5"), "{note}");
}

#[tokio::test]
async fn scale_down_removes_the_least_loaded_pods_first() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-cost").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    let redis = RedisServer::start().await.expect("redis-server");
    let _operator = start_operator(bed, n).await;
    let (ls, pods) = external_cluster_in_load_set(&client, n, &redis, "demo", 4).await;

    // Connection counts as the nodes would report them: two busy, two nearly idle.
    let loads: BTreeMap<String, u64> = pods.iter().cloned().zip([900, 3, 700, 5]).collect();
    for (pod, load) in &loads {
        assert!(
            ls.update_score(pod, *load).await.expect("score"),
            "{pod} is a member"
        );
    }
    // The scores reach the operator with the next resyncs (2 s here); with no scale-down pending it
    // patches no pod.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for p in node_pods(&client, n, "demo").await {
        assert!(
            !p.annotations()
                .contains_key(operator::loadset_sync::POD_DELETION_COST),
            "{} annotated without a pending scale-down",
            p.name_any()
        );
    }

    let api: Api<ChatCluster> = Api::namespaced(client.clone(), n);
    api.patch(
        "demo",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "nodes": { "replicas": 2 } } })),
    )
    .await
    .expect("scale down");
    let busy: BTreeSet<String> = loads
        .iter()
        .filter(|(_, l)| **l > 100)
        .map(|(p, _)| p.clone())
        .collect();
    eventually(
        "the ReplicaSet controller keeps the two busy pods",
        TIMEOUT,
        || async {
            let left: BTreeSet<String> = node_pods(&client, n, "demo")
                .await
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .map(|p| p.name_any())
                .collect();
            (left == busy).then_some(())
        },
    )
    .await;
    members_become(
        &ls,
        &busy,
        Duration::from_secs(5),
        "the load set keeps the busy pods",
    )
    .await;
    // The kept pods carry the costs the choice was made by.
    for p in node_pods(&client, n, "demo").await {
        assert_eq!(
            p.annotations()
                .get(operator::loadset_sync::POD_DELETION_COST),
            loads.get(&p.name_any()).map(u64::to_string).as_ref(),
            "{}",
            p.name_any()
        );
    }
}
