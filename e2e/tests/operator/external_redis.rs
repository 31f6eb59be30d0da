//! External mode against real local Redis and Sentinel processes: the load set follows pod readiness
//! within a second and the resync repairs drift, two ChatClusters on one Redis never see each other's
//! members (and deletion cleans up only its own keys, once its chat-nodes stopped), the current master
//! follows a failover, and nothing per cluster is held after a ChatCluster is deleted.

use std::time::Duration;

use e2e::testbed::sim;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use operator::crd::ChatCluster;
use serde_json::json;
use switchboard_redis::keys::Keys;
use switchboard_testkit::{RedisServer, Sentinel, eventually};

use crate::{
    FOLLOW, TIMEOUT, bed, create_cluster, external_cluster_in_load_set, members_become,
    new_namespace, node_pods, ready_node_pods, start_operator, wait_event,
};

/// A finalizer this suite puts on a pod to keep it Terminating (a node that is still draining).
const HOLD: &str = "e2e.switchboard.dev/hold";

#[tokio::test]
async fn load_set_follows_pod_readiness_and_resync_repairs_drift() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-loadset").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    let redis = RedisServer::start().await.expect("redis-server");
    let _operator = start_operator(bed, n).await;
    let (ls, ready) = external_cluster_in_load_set(&client, n, &redis, "demo", 3).await;

    // Not ready -> out; ready again -> in; each within a second.
    let victim = ready.iter().next().cloned().expect("a pod");
    sim::set_pod_ready(&client, n, &victim, false)
        .await
        .expect("not ready");
    let mut without = ready.clone();
    without.remove(&victim);
    members_become(&ls, &without, FOLLOW, "a not-ready pod leaves the load set").await;
    sim::set_pod_ready(&client, n, &victim, true)
        .await
        .expect("ready");
    members_become(&ls, &ready, FOLLOW, "a ready-again pod rejoins").await;

    // Gone -> out at once; its replacement joins once ready.
    sim::remove_pod_now(&client, n, &victim)
        .await
        .expect("delete pod");
    eventually("the deleted pod leaves the load set", FOLLOW, || async {
        let members = ls.members().await.ok()?;
        (!members.contains(&victim)).then_some(())
    })
    .await;
    let replaced = eventually("a replacement pod", TIMEOUT, || async {
        let now = ready_node_pods(&client, n, "demo", 3).await;
        (!now.contains(&victim)).then_some(now)
    })
    .await;
    members_become(
        &ls,
        &replaced,
        Duration::from_secs(5),
        "the replacement joins",
    )
    .await;

    // Drift by hand is repaired by the periodic resync (2 s here).
    ls.add_member("ghost-pod").await.expect("add by hand");
    let gone = replaced.iter().next().cloned().expect("a member");
    ls.remove_member(&gone).await.expect("remove by hand");
    members_become(
        &ls,
        &replaced,
        Duration::from_secs(6),
        "the resync repairs drift",
    )
    .await;

    let api: Api<ChatCluster> = Api::namespaced(client.clone(), n);
    eventually(
        "status.loadSetMembers = 3 and the master reported",
        TIMEOUT,
        || async {
            let s = api.get("demo").await.ok()?.status?;
            (s.load_set_members == Some(3)
                && s.redis.current_master == Some(format!("127.0.0.1:{}", redis.port())))
            .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn two_chat_clusters_never_see_each_others_members_and_deletion_cleans_up() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-two").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    let redis = RedisServer::start().await.expect("redis-server");
    let _operator = start_operator(bed, n).await;
    let (_alpha, alpha_pods) = external_cluster_in_load_set(&client, n, &redis, "alpha", 2).await;
    let (beta, beta_pods) = external_cluster_in_load_set(&client, n, &redis, "beta", 3).await;
    assert!(alpha_pods.is_disjoint(&beta_pods));

    // The finalizer is there (External mode); deleting alpha removes its objects and keys only.
    let api: Api<ChatCluster> = Api::namespaced(client.clone(), n);
    let cc = api.get("alpha").await.expect("alpha");
    assert!(
        cc.finalizers()
            .iter()
            .any(|f| f == operator::loadset_sync::FINALIZER)
    );
    api.delete("alpha", &DeleteParams::background())
        .await
        .expect("delete alpha");
    eventually("alpha is gone", TIMEOUT, || async {
        api.get_opt("alpha").await.ok()?.is_none().then_some(())
    })
    .await;
    let prefix = Keys::new(&format!("{n}/alpha")).scan_pattern();
    let keys = redis.command(&["KEYS", &prefix]).await.expect("KEYS");
    assert!(keys.items().is_empty(), "alpha's keys remain: {keys:?}");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), n);
    let services: Api<Service> = Api::namespaced(client.clone(), n);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), n);
    eventually(
        "the garbage collector deletes alpha's objects",
        TIMEOUT,
        || async {
            let gone = deployments.get_opt("alpha-node").await.ok()?.is_none()
                && deployments.get_opt("alpha-registry").await.ok()?.is_none()
                && services.get_opt("alpha-node").await.ok()?.is_none()
                && pdbs.get_opt("alpha-node").await.ok()?.is_none()
                && node_pods(&client, n, "alpha").await.is_empty();
            gone.then_some(())
        },
    )
    .await;
    assert_eq!(beta.members().await.expect("beta members"), beta_pods);
    assert!(
        deployments
            .get_opt("beta-node")
            .await
            .expect("get")
            .is_some()
    );
}

#[tokio::test]
async fn current_master_comes_from_real_sentinels_and_a_failover_is_announced() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-master").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    let master = RedisServer::start().await.expect("master");
    let replica = RedisServer::builder()
        .replica_of(&master)
        .start()
        .await
        .expect("replica");
    replica
        .wait_for_sync(Duration::from_secs(20))
        .await
        .expect("replica synced");
    let sentinel = Sentinel::builder(&master).start().await.expect("sentinel");
    let operator = start_operator(bed, n).await;
    let addr = sentinel.addr();
    create_cluster(
        &client,
        n,
        ChatCluster::test("demo")
            .with_nodes(1)
            .with_external_sentinels(&[addr.as_str()], sentinel.master_name()),
    )
    .await;
    let api: Api<ChatCluster> = Api::namespaced(client.clone(), n);
    let master_addr = format!("127.0.0.1:{}", master.port());
    eventually(
        "status.redis.currentMaster = the master",
        TIMEOUT,
        || async {
            let s = api.get("demo").await.ok()?.status?;
            (s.redis.current_master.as_deref() == Some(master_addr.as_str())).then_some(())
        },
    )
    .await;

    let reply = switchboard_testkit::command(
        sentinel.port(),
        None,
        &["SENTINEL", "FAILOVER", sentinel.master_name()],
    )
    .await
    .expect("SENTINEL FAILOVER");
    assert_eq!(reply.as_str(), Some("OK"), "{reply:?}");
    let replica_addr = format!("127.0.0.1:{}", replica.port());
    eventually("status follows the failover", TIMEOUT, || async {
        let s = api.get("demo").await.ok()?.status?;
        (s.redis.current_master.as_deref() == Some(replica_addr.as_str())).then_some(())
    })
    .await;
    let (_, _, note) = wait_event(&client, n, "demo", "MasterChanged").await;
    assert!(
        note.contains(&master_addr) && note.contains(&replica_addr),
        "{note}"
    );
    // ... and counted for the dashboard and the failover alert.
    assert_eq!(operator.metrics.redis_failovers.get(), 1);
}

#[tokio::test]
async fn redis_clients_and_observations_are_released_when_chat_clusters_are_deleted() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-release").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    let redis = RedisServer::start().await.expect("redis-server");
    let operator = start_operator(bed, n).await;
    let held = || {
        (
            operator.metrics.redis_connections.get(),
            operator.metrics.observed_clusters.get(),
        )
    };
    // One External chat system (a Redis client) and one Managed (its Redis never answers on the bed,
    // and it has no finalizer: its deletion is never reconciled).
    external_cluster_in_load_set(&client, n, &redis, "ext", 1).await;
    create_cluster(&client, n, ChatCluster::test("managed").with_nodes(1)).await;
    eventually(
        "one Redis client, two observed chat systems",
        TIMEOUT,
        || async { (held() == (1, 2)).then_some(()) },
    )
    .await;

    let api: Api<ChatCluster> = Api::namespaced(client.clone(), n);
    for name in ["ext", "managed"] {
        api.delete(name, &DeleteParams::background())
            .await
            .expect("delete");
    }
    eventually("nothing held for deleted chat systems", TIMEOUT, || async {
        (held() == (0, 0)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn deleting_an_external_chat_cluster_deletes_its_keys_only_after_its_chat_nodes_stopped() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-cleanup").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    let redis = RedisServer::start().await.expect("redis-server");
    let _operator = start_operator(bed, n).await;
    let (_ls, pods) = external_cluster_in_load_set(&client, n, &redis, "demo", 2).await;
    // One chat-node pod is held in Terminating by a finalizer of this test: a node still draining.
    let held = pods.iter().next().cloned().expect("a pod");
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), n);
    pod_api
        .patch(
            &held,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "finalizers": [HOLD] } })),
        )
        .await
        .expect("hold the pod");
    let prefix = Keys::new(&format!("{n}/demo")).scan_pattern();
    let keys = || async {
        redis
            .command(&["KEYS", &prefix])
            .await
            .expect("KEYS")
            .items()
            .len()
    };
    assert!(keys().await > 0, "the chat system has keys");

    let api: Api<ChatCluster> = Api::namespaced(client.clone(), n);
    api.delete("demo", &DeleteParams::background())
        .await
        .expect("delete demo");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), n);
    eventually(
        "the chat-node Deployment is scaled to 0 and the held pod terminates",
        TIMEOUT,
        || async {
            let d = deployments.get("demo-node").await.ok()?;
            let p = pod_api.get(&held).await.ok()?;
            (d.spec.replicas == Some(0) && p.metadata.deletion_timestamp.is_some()).then_some(())
        },
    )
    .await;
    // Several cleanup rounds later (2 s resync), a pod still exists: the keys must still be there.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        keys().await > 0,
        "keys deleted while a chat-node pod still exists"
    );
    assert!(api.get_opt("demo").await.expect("get").is_some());

    // The node is gone: now the keys go, then the ChatCluster.
    pod_api
        .patch(
            &held,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "finalizers": null } })),
        )
        .await
        .expect("release the pod");
    eventually(
        "keys deleted, then the ChatCluster gone",
        TIMEOUT,
        || async {
            if keys().await > 0 {
                return None;
            }
            assert!(
                node_pods(&client, n, "demo").await.is_empty(),
                "keys deleted while a chat-node pod exists"
            );
            api.get_opt("demo").await.ok()?.is_none().then_some(())
        },
    )
    .await;
}
