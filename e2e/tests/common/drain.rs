//! Draining a node (SIGTERM): its clients are told to reconnect, then closed with 1012, and the
//! process exits cleanly.

use std::time::Duration;

use e2e::topology::Topology;

use super::{T, connect, name};

/// SIGTERM: clients get `reconnect`, then close 1012; the process exits.
pub async fn drain_tells_clients_to_reconnect(t: &mut Topology, a: usize) {
    let room = name("room");
    let mut alice = connect(t, a, &name("alice")).await;
    alice.join(&room, None).await.expect("join");
    t.signal_term_node(a).expect("SIGTERM");
    let notice = alice
        .expect_type("reconnect", T)
        .await
        .expect("reconnect notice");
    assert!(notice["retry_after_ms"].is_u64(), "{notice}");
    let (code, _) = alice
        .wait_closed(Duration::from_secs(30))
        .await
        .expect("close after notice");
    assert_eq!(code, 1012, "drain closes with 1012");
    let status = t
        .wait_node_exit(a, Duration::from_secs(30))
        .await
        .expect("node exits after drain");
    assert!(status.success(), "graceful exit: {status}");
}
