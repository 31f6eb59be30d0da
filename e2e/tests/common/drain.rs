//! Draining a node (SIGTERM): its clients are told to reconnect, then closed with 1012, and the
//! process exits cleanly; a paced drain tells them in turn and keeps serving those not told yet.

use std::time::Duration;

use e2e::client::ChatClient;
use e2e::topology::Topology;
use tokio::time::Instant;

use super::{T, connect, name};

/// Whether `c` has been told to reconnect (a `reconnect` frame is buffered).
fn told(c: &ChatClient) -> bool {
    c.buffered().iter().any(|f| f["type"] == "reconnect")
}

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

/// A paced drain (node `a` started with a low `--drain-notice-rate`, so telling `clients` takes
/// seconds): once the first client has been told, a client not told yet is still served (its send is
/// acknowledged before any notice reaches it); then every client gets exactly one notice and 1012,
/// and the process exits cleanly.
pub async fn paced_drain_serves_clients_not_told_yet(t: &mut Topology, a: usize, clients: usize) {
    let room = name("room");
    let mut all = Vec::with_capacity(clients);
    for _ in 0..clients {
        let mut c = connect(t, a, &name("paced")).await;
        c.join(&room, None).await.expect("join");
        all.push(c);
    }
    t.signal_term_node(a).expect("SIGTERM");
    // Ping round the clients (each answer proves the node still serves) until one has been told.
    let deadline = Instant::now() + T;
    while !all.iter().any(told) {
        assert!(
            Instant::now() < deadline,
            "nobody told to reconnect within {T:?}"
        );
        for c in &mut all {
            c.ping().await.expect("served while draining");
        }
    }
    let mut served_untold = false;
    for c in all.iter_mut().filter(|c| !told(c)) {
        c.send(&room, "still served", None)
            .await
            .expect("a client not told yet is served");
        if !told(c) {
            served_untold = true;
            break;
        }
    }
    assert!(
        served_untold,
        "after the first notice, no client was served before its own notice: notices were not paced"
    );
    for c in &mut all {
        c.expect_type("reconnect", T)
            .await
            .expect("one notice each");
        let (code, _) = c
            .wait_closed(Duration::from_secs(30))
            .await
            .expect("closed after its notice");
        assert_eq!(code, 1012, "drain closes with 1012");
        assert!(
            !told(c),
            "exactly one reconnect notice per client: {:?}",
            c.buffered()
        );
    }
    let status = t
        .wait_node_exit(a, Duration::from_secs(30))
        .await
        .expect("node exits after drain");
    assert!(status.success(), "graceful exit: {status}");
}
