//! Direct messages: delivered to every connection of the recipient, stored for an offline user and
//! replayed after `welcome` (or after `dm_since`), idempotent by `client_id`.

use e2e::client::{ChatClient, ConnectOptions};
use e2e::topology::Topology;
use serde_json::json;

use super::{T, connect, name};

/// A DM reaches every connection of the recipient (on `a` and `b`), with one per-user sequence.
pub async fn dm_reaches_every_connection(t: &Topology, a: usize, b: usize) {
    let bob_name = name("bob");
    let mut alice = connect(t, a, &name("alice")).await;
    let mut bob_a = connect(t, a, &bob_name).await;
    let mut bob_b = connect(t, b, &bob_name).await;
    let ack = alice.dm(&bob_name, "psst", Some("d-1")).await.expect("dm");
    assert!(!ack.duplicate);
    assert_eq!(ack.to, bob_name);
    let one = bob_a.expect_dm(T).await.expect("dm on a");
    let two = bob_b.expect_dm(T).await.expect("dm on b");
    assert_eq!(one, two, "both connections get the same dm");
    assert_eq!(
        (one.body.as_str(), one.from.as_str()),
        ("psst", alice.user().expect("user"))
    );
    assert_eq!(one.seq, 1, "first dm of a fresh user");
    let again = alice
        .dm(&bob_name, "psst", Some("d-1"))
        .await
        .expect("dm resend");
    assert!(
        again.duplicate && again.id == ack.id,
        "dm resend is idempotent: {again:?}"
    );
    alice.dm(&bob_name, "second", None).await.expect("dm");
    let next = bob_b.expect_dm(T).await.expect("second dm");
    assert_eq!(
        (next.seq, next.body.as_str()),
        (2, "second"),
        "the resend delivered nothing"
    );
}

/// A DM to an offline user follows `welcome` on the next connect; `dm_since` replays.
pub async fn offline_dm_delivered_on_next_connect(t: &Topology, a: usize, b: usize) {
    let dave = name("dave");
    let mut alice = connect(t, a, &name("alice")).await;
    alice
        .dm(&dave, "while you were out", None)
        .await
        .expect("dm to offline user");
    alice
        .dm(&dave, "and another", None)
        .await
        .expect("dm to offline user");
    let mut dave_b = connect(t, b, &dave).await;
    let welcome = dave_b.welcome().cloned().expect("welcome");
    assert_eq!(
        welcome["dm_seq"],
        json!(2),
        "welcome counts stored dms: {welcome}"
    );
    let first = dave_b.expect_dm(T).await.expect("first stored dm");
    let second = dave_b.expect_dm(T).await.expect("second stored dm");
    assert_eq!((first.seq, first.body.as_str()), (1, "while you were out"));
    assert_eq!((second.seq, second.body.as_str()), (2, "and another"));
    // A second device asking for everything after seq 1 gets seq 2 again.
    let mut device = ChatClient::connect_with(
        &t.node_ws_url(a),
        ConnectOptions {
            dm_since: Some(1),
            ..t.options(&dave)
        },
    )
    .await
    .expect("connect with dm_since");
    let replay = device.expect_dm(T).await.expect("dm after dm_since");
    assert_eq!(replay.seq, 2);
}
