//! Stored messages: history pages backwards from either node, and a re-join with `since` that answers
//! exactly the missed messages before the live ones.

use e2e::topology::Topology;

use super::{T, connect, name};

/// History pages backwards with `before`/`limit` and `has_more`, from either node.
pub async fn history_paging(t: &Topology, a: usize, b: usize) {
    let room = name("room");
    let mut alice = connect(t, a, &name("alice")).await;
    let mut bob = connect(t, b, &name("bob")).await;
    alice.join(&room, None).await.expect("join");
    for i in 1..=25 {
        alice
            .send(&room, &format!("m{i}"), None)
            .await
            .expect("send");
    }
    bob.join(&room, None).await.expect("join");
    let seqs = |p: &e2e::client::HistoryPage| p.messages.iter().map(|m| m.seq).collect::<Vec<_>>();
    let newest = bob.history(&room, None, Some(10)).await.expect("history");
    assert_eq!(seqs(&newest), (16..=25).collect::<Vec<_>>());
    assert!(newest.has_more);
    assert_eq!(newest.messages[0].body, "m16");
    let older = bob
        .history(&room, Some(16), Some(10))
        .await
        .expect("history");
    assert_eq!(seqs(&older), (6..=15).collect::<Vec<_>>());
    assert!(older.has_more);
    let oldest = bob
        .history(&room, Some(6), Some(10))
        .await
        .expect("history");
    assert_eq!(seqs(&oldest), (1..=5).collect::<Vec<_>>());
    assert!(!oldest.has_more, "nothing before seq 1");
    let default = alice
        .history(&room, None, None)
        .await
        .expect("history default limit");
    assert_eq!(
        seqs(&default),
        (1..=25).collect::<Vec<_>>(),
        "default limit 50 covers all 25"
    );
    let bad = bob.history(&room, None, Some(500)).await;
    assert!(
        bad.is_err() || bad.as_ref().is_ok_and(|p| p.messages.len() <= 200),
        "limit is bounded"
    );
}

/// Re-joining with `since` (on the other node) answers exactly the missed messages, then live ones.
pub async fn rejoin_with_since_recovers(t: &Topology, a: usize, b: usize) {
    let room = name("room");
    let alice_name = name("alice");
    let mut alice = connect(t, a, &alice_name).await;
    let mut bob = connect(t, b, &name("bob")).await;
    alice.join(&room, None).await.expect("join");
    bob.join(&room, None).await.expect("join");
    for i in 1..=3 {
        bob.send(&room, &format!("m{i}"), None).await.expect("send");
    }
    let got = alice.messages_in(&room, 3, T).await.expect("3 messages");
    let last = got.last().expect("a message").seq;
    alice.close().await.expect("close");
    for i in 4..=7 {
        bob.send(&room, &format!("m{i}"), None).await.expect("send");
    }
    let mut alice = connect(t, b, &alice_name).await;
    let joined = alice.join(&room, Some(last)).await.expect("join since");
    assert_eq!(joined.last_seq, 7);
    let missed = alice
        .messages_in(&room, 4, T)
        .await
        .expect("missed messages");
    assert_eq!(
        missed.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [4, 5, 6, 7]
    );
    bob.send(&room, "live", None).await.expect("send");
    let live = alice.messages_in(&room, 1, T).await.expect("live message");
    assert_eq!(
        (live[0].seq, live[0].body.as_str()),
        (8, "live"),
        "live follows with no duplicate"
    );
}
