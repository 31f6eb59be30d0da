//! Who is there and what they do: presence events and member lists, typing notices (relayed, never
//! stored), read markers and `last_seen`.

use std::time::Duration;

use e2e::client::frame_type;
use e2e::topology::Topology;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{T, connect, name};

/// `joined` lists members across nodes; joins and leaves (explicit or by disconnect) are announced.
pub async fn presence_join_and_leave(t: &Topology, a: usize, b: usize) {
    let room = name("room");
    let (alice_name, bob_name) = (name("alice"), name("bob"));
    let mut alice = connect(t, a, &alice_name).await;
    alice.join(&room, None).await.expect("join");
    let mut bob = connect(t, b, &bob_name).await;
    let joined = bob.join(&room, None).await.expect("join");
    let mut expected = vec![alice_name.clone(), bob_name.clone()];
    expected.sort();
    assert_eq!(joined.members, expected, "members across nodes, sorted");
    let is_presence = |user: &str, event: &str| {
        let (user, event) = (user.to_owned(), event.to_owned());
        move |f: &Value| {
            frame_type(f) == Some("presence")
                && f["user"] == json!(user)
                && f["event"] == json!(event)
        }
    };
    alice
        .wait_for(is_presence(&bob_name, "join"), T)
        .await
        .expect("alice sees bob join");
    bob.leave(&room).await.expect("leave");
    alice
        .wait_for(is_presence(&bob_name, "leave"), T)
        .await
        .expect("alice sees bob leave");
    bob.join(&room, None).await.expect("join again");
    alice
        .wait_for(is_presence(&bob_name, "join"), T)
        .await
        .expect("alice sees bob rejoin");
    bob.close().await.expect("close");
    alice
        .wait_for(is_presence(&bob_name, "leave"), T)
        .await
        .expect("a disconnect is a leave");
}

/// Typing is relayed to the other members but never stored.
pub async fn typing_is_relayed_not_stored(t: &Topology, a: usize, b: usize) {
    let room = name("room");
    let alice_name = name("alice");
    let mut alice = connect(t, a, &alice_name).await;
    let mut bob = connect(t, b, &name("bob")).await;
    alice.join(&room, None).await.expect("join");
    bob.join(&room, None).await.expect("join");
    alice.typing(&room).await.expect("typing");
    let typing = bob.expect_type("typing", T).await.expect("bob sees typing");
    assert_eq!(
        (typing["room"].clone(), typing["user"].clone()),
        (json!(room), json!(alice_name))
    );
    let ack = alice.send(&room, "hello", None).await.expect("send");
    assert_eq!(ack.seq, 1, "typing took no sequence");
    let page = bob.history(&room, None, None).await.expect("history");
    assert_eq!(
        page.messages.len(),
        1,
        "history holds the message only: {page:?}"
    );
    let mut carol = connect(t, a, &name("carol")).await;
    let joined = carol.join(&room, Some(0)).await.expect("join since 0");
    assert_eq!(joined.last_seq, 1);
    let replay = carol
        .messages_in(&room, 1, T)
        .await
        .expect("replayed message");
    assert_eq!(replay[0].body, "hello");
    carol.ping().await.expect("ping");
    assert!(
        !carol
            .buffered()
            .iter()
            .any(|f| frame_type(f) == Some("typing")),
        "no stored typing is replayed: {:?}",
        carol.buffered()
    );
}

/// Read markers move forward, are broadcast to the room and listed in `joined.read`.
pub async fn read_markers_stored_and_broadcast(t: &Topology, a: usize, b: usize) {
    let room = name("room");
    let bob_name = name("bob");
    let mut alice = connect(t, a, &name("alice")).await;
    let mut bob = connect(t, b, &bob_name).await;
    alice.join(&room, None).await.expect("join");
    bob.join(&room, None).await.expect("join");
    for i in 0..3 {
        alice
            .send(&room, &format!("m{i}"), None)
            .await
            .expect("send");
    }
    bob.read(&room, 2).await.expect("read");
    let event = alice
        .wait_for(
            |f| frame_type(f) == Some("read") && f["user"] == json!(bob_name),
            T,
        )
        .await
        .expect("alice sees bob's read marker");
    assert_eq!(
        (event["room"].clone(), event["seq"].clone()),
        (json!(room), json!(2))
    );
    bob.read(&room, 1).await.expect("read backwards");
    bob.read(&room, 3).await.expect("read");
    let event = alice
        .wait_for(
            |f| frame_type(f) == Some("read") && f["user"] == json!(bob_name),
            T,
        )
        .await
        .expect("next read event");
    assert_eq!(
        event["seq"],
        json!(3),
        "markers only move forward (1 after 2 is not an event)"
    );
    let mut carol = connect(t, a, &name("carol")).await;
    let joined = carol.join(&room, None).await.expect("join");
    assert_eq!(
        joined.read.get(&bob_name),
        Some(&3),
        "stored marker in joined.read: {joined:?}"
    );
}

/// `last_seen` tells online users and offline users with a time — of users the asker shares a
/// direct message (or a room) with; anyone else is hidden, known or not.
pub async fn last_seen_reports_online_and_offline(t: &Topology, a: usize, b: usize) {
    let (alice_name, bob_name, ghost) = (name("alice"), name("bob"), name("ghost"));
    let mut alice = connect(t, a, &alice_name).await;
    let bob = connect(t, b, &bob_name).await;
    alice.dm(&bob_name, "hi", None).await.expect("dm");
    let seen = alice
        .last_seen(&[&alice_name, &bob_name, &ghost])
        .await
        .expect("last_seen");
    assert!(
        seen[&alice_name].online && seen[&bob_name].online,
        "{seen:?}"
    );
    assert!(!seen.contains_key(&ghost), "{seen:?}");
    let before_close = alice.ping().await.expect("ping");
    bob.close().await.expect("close");
    let deadline = Instant::now() + T;
    loop {
        let seen = alice.last_seen(&[&bob_name]).await.expect("last_seen");
        let entry = &seen[&bob_name];
        if !entry.online {
            let at = entry
                .last_seen
                .expect("an offline user who was here has a last_seen time");
            assert!(
                at + 5_000 >= before_close,
                "last_seen {at} is about when bob left ({before_close})"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bob still online after closing: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
