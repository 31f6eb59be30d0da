//! Room messages: one gap-free order per room whoever sends and on whichever node, acks that carry
//! the sequence, and `client_id` resends that never create a second message.

use e2e::client::Error;
use e2e::topology::Topology;
use serde_json::json;

use super::{T, connect, name};

/// Two senders on `a` and `b` interleave; every member on either node sees the same messages with
/// consecutive sequences in the same order, and acks carry those sequences.
pub async fn room_delivery_in_seq_order(t: &Topology, a: usize, b: usize) {
    let room = name("room");
    let mut alice = connect(t, a, &name("alice")).await;
    let mut bob = connect(t, b, &name("bob")).await;
    let mut carol = connect(t, b, &name("carol")).await;
    for c in [&mut alice, &mut bob, &mut carol] {
        let joined = c.join(&room, None).await.expect("join");
        assert_eq!(joined.last_seq, 0, "a fresh room is empty");
    }
    let mut acks = Vec::new();
    for i in 0..10 {
        acks.push(
            alice
                .send(&room, &format!("a{i}"), None)
                .await
                .expect("alice send")
                .seq,
        );
        acks.push(
            bob.send(&room, &format!("b{i}"), None)
                .await
                .expect("bob send")
                .seq,
        );
    }
    assert_eq!(
        acks,
        (1..=20).collect::<Vec<u64>>(),
        "acks carry the room's sequence"
    );
    let mut seen = Vec::new();
    for c in [&mut alice, &mut bob, &mut carol] {
        let msgs = c.messages_in(&room, 20, T).await.expect("20 messages");
        let seqs: Vec<u64> = msgs.iter().map(|m| m.seq).collect();
        assert_eq!(
            seqs,
            (1..=20).collect::<Vec<u64>>(),
            "delivered in seq order without gaps"
        );
        seen.push(
            msgs.iter()
                .map(|m| (m.seq, m.id.clone(), m.body.clone()))
                .collect::<Vec<_>>(),
        );
    }
    assert!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "every member saw the same order: {seen:?}"
    );
    let bodies: Vec<&str> = seen[0].iter().map(|(_, _, b)| b.as_str()).collect();
    assert_eq!(&bodies[..4], ["a0", "b0", "a1", "b1"]);
}

/// Four senders (two per node) pipeline at once: the room still has one total order, identical for
/// members on both nodes, and each sender's messages keep their sending order.
pub async fn concurrent_senders_share_one_order(t: &Topology, a: usize, b: usize) {
    const PER_SENDER: usize = 25;
    let room = name("room");
    let mut watchers = [
        connect(t, a, &name("wa")).await,
        connect(t, b, &name("wb")).await,
    ];
    for w in &mut watchers {
        w.join(&room, None).await.expect("join");
    }
    let mut tasks = Vec::new();
    for s in 0..4 {
        let mut c = connect(
            t,
            if s % 2 == 0 { a } else { b },
            &format!("s{s}-{}", name("x")),
        )
        .await;
        c.join(&room, None).await.expect("join");
        let room = room.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_SENDER {
                let frame = json!({"type": "send", "room": room, "body": format!("{s}:{i}")});
                c.send_frame(&frame).await?;
            }
            let mut acks = 0;
            while acks < PER_SENDER {
                let f = c.expect_type("ack", T).await?;
                assert_eq!(f["duplicate"], json!(false));
                acks += 1;
            }
            Ok::<_, Error>(())
        }));
    }
    for task in tasks {
        task.await
            .expect("sender task")
            .expect("sender got every ack");
    }
    let total = 4 * PER_SENDER;
    let mut orders = Vec::new();
    for w in &mut watchers {
        let msgs = w.messages_in(&room, total, T).await.expect("every message");
        let seqs: Vec<u64> = msgs.iter().map(|m| m.seq).collect();
        assert_eq!(
            seqs,
            (1..=total as u64).collect::<Vec<_>>(),
            "one gap-free order"
        );
        orders.push(msgs.iter().map(|m| m.body.clone()).collect::<Vec<_>>());
    }
    assert_eq!(
        orders[0], orders[1],
        "members on both nodes see the same order"
    );
    for s in 0..4 {
        let mine: Vec<&String> = orders[0]
            .iter()
            .filter(|b| b.starts_with(&format!("{s}:")))
            .collect();
        let expected: Vec<String> = (0..PER_SENDER).map(|i| format!("{s}:{i}")).collect();
        assert_eq!(mine.len(), PER_SENDER);
        assert!(
            mine.iter().zip(&expected).all(|(m, e)| *m == e),
            "sender {s} keeps its order"
        );
    }
}

/// Resending with the same `client_id` answers the original seq with `duplicate: true` and delivers
/// nothing new.
pub async fn resend_with_same_client_id_is_not_duplicated(t: &Topology, a: usize, b: usize) {
    let room = name("room");
    let mut alice = connect(t, a, &name("alice")).await;
    let mut bob = connect(t, b, &name("bob")).await;
    alice.join(&room, None).await.expect("join");
    bob.join(&room, None).await.expect("join");
    let first = alice.send(&room, "once", Some("c-1")).await.expect("send");
    assert!(!first.duplicate);
    let again = alice
        .send(&room, "once", Some("c-1"))
        .await
        .expect("resend");
    assert!(again.duplicate, "resend is flagged duplicate: {again:?}");
    assert_eq!(
        (again.seq, &again.id),
        (first.seq, &first.id),
        "resend names the original message"
    );
    // A resend from another connection of the same user (e.g. after reconnecting elsewhere) too.
    let mut alice2 = connect(t, b, alice.user().expect("user")).await;
    alice2.join(&room, None).await.expect("join");
    let third = alice2
        .send(&room, "once", Some("c-1"))
        .await
        .expect("resend from b");
    assert!(third.duplicate && third.seq == first.seq, "{third:?}");
    let marker = alice
        .send(&room, "marker", Some("c-2"))
        .await
        .expect("send marker");
    assert_eq!(
        marker.seq,
        first.seq + 1,
        "no message was created by the resends"
    );
    let msgs = bob.messages_in(&room, 2, T).await.expect("messages");
    assert_eq!(
        msgs.iter()
            .map(|m| (m.seq, m.client_id.as_deref()))
            .collect::<Vec<_>>(),
        [(first.seq, Some("c-1")), (marker.seq, Some("c-2"))]
    );
}
