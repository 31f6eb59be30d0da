//! Standalone mode: one chat-node, no Redis at all; the same chat behaviours as the cluster suite
//! (both clients on the one node), the node's own registry endpoints, capacity and drain.

mod common;

use common::*;
use e2e::client;

/// The one node, checked to run without Redis.
async fn one_node() -> e2e::topology::Topology {
    let t = standalone(&[]).await;
    assert!(t.redis_url().is_none());
    t
}

common::shared_scenarios!(start: one_node(), nodes: 0, 0);

#[tokio::test]
async fn node_is_its_own_registry() {
    let t = standalone(&[]).await;
    let a = client::assign(&t.assign_base())
        .await
        .expect("/v1/assign on the node");
    assert_eq!(a.url, t.node_ws_url(0));
    let nodes = client::nodes(&t.assign_base())
        .await
        .expect("/v1/nodes on the node");
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].id, a.node);
    let (mut c, _) = client::ChatClient::connect_assigned(&t.assign_base(), &name("alice"))
        .await
        .expect("connect");
    c.ping().await.expect("ping");
}

#[tokio::test]
async fn hello_frame_identifies() {
    let t = standalone(&[]).await;
    common::hello_frame_identifies(&t, 0).await;
}

#[tokio::test]
async fn full_node_refuses_with_1013() {
    let t = standalone(&["--capacity", "2"]).await;
    common::full_node_refuses_with_1013(&t, 0, 2).await;
}

#[tokio::test]
async fn drain_tells_clients_to_reconnect() {
    let mut t = standalone(&[]).await;
    common::drain_tells_clients_to_reconnect(&mut t, 0).await;
}
