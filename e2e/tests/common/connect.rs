//! Getting a session: identifying with a `hello` frame (a name in open mode, a token in token mode), and a full node refusing
//! new sessions with 1013 while it keeps the ones it has.

use std::time::Duration;

use e2e::client::{ChatClient, Error};
use e2e::topology::Topology;
use serde_json::json;
use switchboard_runtime::report;
use tokio::time::Instant;

use super::{T, connect, name};

/// `hello` as the first frame identifies; a second `hello` is refused.
pub async fn hello_frame_identifies(t: &Topology, a: usize) {
    let user = name("hello");
    let mut c = ChatClient::open(&t.node_ws_url(a)).await.expect("open");
    let welcome = match t.token(&user) {
        Some(token) => c.hello_token(&token).await,
        None => c.hello(&user, None).await,
    }
    .expect("welcome");
    assert_eq!(welcome["user"], json!(user));
    assert!(
        welcome["limits"]["max_body_chars"].is_u64(),
        "welcome carries limits: {welcome}"
    );
    let again = c
        .request(json!({"type": "hello", "user": user}), T)
        .await
        .expect("reply");
    assert_eq!(again["code"], json!("already_identified"), "{again}");
    c.ping().await.expect("still usable");
}

/// A node at capacity closes new sessions with 1013 and keeps serving the ones it has.
pub async fn full_node_refuses_with_1013(t: &Topology, a: usize, capacity: usize) {
    let mut held = Vec::new();
    for _ in 0..capacity {
        held.push(connect(t, a, &name("held")).await);
    }
    let refused = t.connect(a, &name("extra")).await;
    match refused {
        Err(Error::Closed { code, .. }) => assert_eq!(code, 1013, "full node closes with 1013"),
        other => panic!("expected close 1013 from a full node, got {other:?}"),
    }
    for c in &mut held {
        c.ping().await.expect("existing sessions carry on");
    }
    let freed = held.pop().expect("one held");
    freed.close().await.expect("close");
    let deadline = Instant::now() + T;
    loop {
        match t.connect(a, &name("later")).await {
            Ok(_) => break,
            Err(Error::Closed { code: 1013, .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("a freed slot is reusable: {}", report::chain(&e)),
        }
    }
}
