//! Standalone mode: one chat-node, no Redis at all; the same chat behaviours as the cluster suite
//! (both clients on the one node), the node's own registry endpoints, capacity and drain.

mod common;

use common::*;
use e2e::client;

macro_rules! on_one_node {
    ($($scenario:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $scenario() {
            let t = standalone(&[]).await;
            assert!(t.redis_url().is_none());
            common::$scenario(&t, 0, 0).await;
        }
    )*};
}

on_one_node!(
    room_delivery_in_seq_order,
    concurrent_senders_share_one_order,
    resend_with_same_client_id_is_not_duplicated,
    dm_reaches_every_connection,
    offline_dm_delivered_on_next_connect,
    presence_join_and_leave,
    typing_is_relayed_not_stored,
    read_markers_stored_and_broadcast,
    last_seen_reports_online_and_offline,
    history_paging,
    rejoin_with_since_recovers,
);

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
