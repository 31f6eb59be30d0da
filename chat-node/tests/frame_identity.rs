//! The frame of a stored message is assembled inside Redis (`post.lua`, which assigns `seq` and `ts`
//! atomically with the append) and, for the memory store and every reader, by
//! `protocol::splice_message`. These tests post through the real Redis backend against a real
//! `redis-server` and prove that what Lua stored and published is byte-for-byte the frame Rust builds
//! for the same kind, seq, id, ts and tail.
//!
//! ```text
//! Post ─▶ RedisBackend ─▶ post.lua ─▶ stream entry ──history_after / dms_after──▶ stored frame
//!                                   └▶ PUBLISH ─▶ receiver ─▶ hub ─▶ session queue ─▶ published frame
//!         both == splice_message(kind, posted.seq, posted.id, posted.ts, tail)
//! ```

use std::sync::Arc;
use std::time::Duration;

use chat_node::backend::redis::{Durability, RedisBackend};
use chat_node::backend::{Backend, Post, Posted};
use chat_node::hub::{Hub, Out, SessionHandle, Topic};
use chat_node::protocol::{message_tail, splice_message};
use serde_json::Value;
use switchboard_testkit::RedisServer;
use tokio_util::sync::CancellationToken;

/// Longest a published frame may take to come back through the bus.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Bodies that stress the two encoders: JSON escapes, multi-byte UTF-8, Lua pattern characters, and a
/// body as long as the default limit allows.
fn tricky_bodies() -> Vec<String> {
    vec![
        "hello".to_owned(),
        "héllo wörld — ünïcödé ✓ 日本語 עברית".to_owned(),
        r#"say "hi" and 'bye'"#.to_owned(),
        r#"back\slash \\ C:\path\n \u0041 \" \"#.to_owned(),
        "emoji 🎉 👩‍👩‍👧 🇩🇪 and a lone combining mark e\u{301}".to_owned(),
        "control\tchars\nnew line\r\u{1}\u{1f}\u{7f}".to_owned(),
        "</script><!-- {\"type\":\"message\",\"seq\":1} -->".to_owned(),
        "lua %s %d %% .. [[long]] -- comment ${x} \0 nul".to_owned(),
        "x".repeat(4000),
        "é🎉".repeat(1000),
    ]
}

/// A Redis backend on its own server, and a session queue listening to one topic.
struct Fixture {
    _redis: RedisServer,
    _replica: Option<RedisServer>,
    backend: RedisBackend,
    hub: Arc<Hub>,
    stop: CancellationToken,
}

impl Fixture {
    async fn start(replicas: u32) -> Self {
        let redis = RedisServer::start().await.expect("redis-server");
        let replica = if replicas > 0 {
            Some(
                RedisServer::builder()
                    .replica_of(&redis)
                    .start()
                    .await
                    .expect("replica"),
            )
        } else {
            None
        };
        let args = redis.redis_args();
        let client = switchboard_redis::connect(&args).await.expect("connect");
        let subscriber = switchboard_redis::subscriber(&args)
            .await
            .expect("subscriber");
        let hub = Arc::new(Hub::new());
        let stop = CancellationToken::new();
        let backend = RedisBackend::new(
            client,
            subscriber,
            switchboard_redis::keys::Keys::new("tests/frame-identity"),
            hub.clone(),
            100,
            Durability {
                replicas,
                timeout: Duration::from_secs(5),
            },
            stop.clone(),
        );
        Self {
            _redis: redis,
            _replica: replica,
            backend,
            hub,
            stop,
        }
    }

    /// A session queue that receives what the bus delivers on `topic`.
    async fn listen(&self, topic: Topic) -> Arc<SessionHandle> {
        let handle = Arc::new(SessionHandle::new(1, Arc::from("observer"), 512));
        self.hub.attach(&topic, &handle, false);
        self.backend.subscribe(topic).await.expect("subscribe");
        handle
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn next_frame(queue: &mut Arc<SessionHandle>) -> String {
    match tokio::time::timeout(DELIVERY_TIMEOUT, queue.next_out()).await {
        Ok(Out::Frame(frame)) => frame.as_str().to_owned(),
        other => panic!("expected a published frame, got {other:?}"),
    }
}

/// The fields a client reads from the frame are the ones it was posted with.
fn assert_fields(frame: &str, kind: &str, posted: &Posted, body: &str, client_id: Option<&str>) {
    let v: Value = serde_json::from_str(frame).unwrap_or_else(|e| panic!("{e}: {frame}"));
    assert_eq!(v["type"], kind);
    assert_eq!(v["seq"], posted.seq);
    assert_eq!(v["id"], posted.id.as_str());
    assert_eq!(v["ts"], posted.ts);
    assert_eq!(v["body"], body);
    assert_eq!(v["client_id"].as_str(), client_id);
}

/// Posts every tricky body to a room, with and without a client id, and compares stored and published
/// frames with the Rust-built one.
async fn room_frames_are_identical(fixture: &Fixture) {
    let room = "lobby-1_x";
    let mut rx = fixture.listen(Topic::room(room)).await;
    for (i, body) in tricky_bodies().into_iter().enumerate() {
        for client_id in [None, Some(format!("c-{i}"))] {
            let tail = message_tail(&[
                ("room", Some(room)),
                ("from", Some("alice")),
                ("body", Some(&body)),
                ("client_id", client_id.as_deref()),
            ]);
            let posted = fixture
                .backend
                .post(Post {
                    target: room.to_owned(),
                    from: "alice".to_owned(),
                    client_id: client_id.clone(),
                    id: format!("{i:016x}"),
                    tail: tail.clone(),
                })
                .await
                .expect("post");
            assert!(!posted.duplicate);
            let expected = splice_message("message", posted.seq, &posted.id, posted.ts, &tail);

            let published = next_frame(&mut rx).await;
            // `str` equality is byte equality; strings print readably when they differ.
            assert_eq!(published, expected, "published");
            let stored = fixture
                .backend
                .history_after(room, posted.seq - 1, 1)
                .await
                .expect("history");
            assert_eq!(stored.len(), 1);
            assert_eq!(stored[0].seq, posted.seq);
            assert_eq!(stored[0].frame.as_str(), expected, "stored");
            assert_fields(&expected, "message", &posted, &body, client_id.as_deref());
        }
    }
}

/// The same for direct messages, stored in the recipient's inbox and published to the recipient.
async fn dm_frames_are_identical(fixture: &Fixture) {
    let to = "bob";
    let mut rx = fixture.listen(Topic::user(to)).await;
    for (i, body) in tricky_bodies().into_iter().enumerate() {
        for client_id in [None, Some(format!("d-{i}"))] {
            let tail = message_tail(&[
                ("from", Some("alice")),
                ("to", Some(to)),
                ("body", Some(&body)),
                ("client_id", client_id.as_deref()),
            ]);
            let posted = fixture
                .backend
                .send_dm(Post {
                    target: to.to_owned(),
                    from: "alice".to_owned(),
                    client_id: client_id.clone(),
                    id: format!("dm-{i:016x}"),
                    tail: tail.clone(),
                })
                .await
                .expect("dm");
            let expected = splice_message("dm", posted.seq, &posted.id, posted.ts, &tail);

            let published = next_frame(&mut rx).await;
            // `str` equality is byte equality; strings print readably when they differ.
            assert_eq!(published, expected, "published");
            let stored = fixture
                .backend
                .dms_after(to, posted.seq - 1, 1)
                .await
                .expect("inbox");
            assert_eq!(stored.len(), 1);
            assert_eq!(stored[0].frame.as_str(), expected, "stored");
            assert_fields(&expected, "dm", &posted, &body, client_id.as_deref());
        }
    }
}

#[tokio::test]
async fn lua_built_room_frames_equal_the_rust_built_frames() {
    let fixture = Fixture::start(0).await;
    room_frames_are_identical(&fixture).await;
}

#[tokio::test]
async fn lua_built_dm_frames_equal_the_rust_built_frames() {
    let fixture = Fixture::start(0).await;
    dm_frames_are_identical(&fixture).await;
}

/// With `--ack-replicas 1` the script returns the frame and the node publishes it after `WAIT` and the
/// read-back: the same bytes again.
#[tokio::test]
async fn frames_published_after_replica_confirmation_are_identical_too() {
    let fixture = Fixture::start(1).await;
    room_frames_are_identical(&fixture).await;
    dm_frames_are_identical(&fixture).await;
}

/// A resend with a known client id stores nothing new and answers the original seq, id and ts, whose
/// stored frame is still the Rust-built one.
#[tokio::test]
async fn a_resend_answers_the_original_frame() {
    let fixture = Fixture::start(0).await;
    let tail = message_tail(&[
        ("room", Some("r")),
        ("from", Some("alice")),
        ("body", Some("once \"only\" ✓")),
        ("client_id", Some("c-1")),
    ]);
    let post = Post {
        target: "r".to_owned(),
        from: "alice".to_owned(),
        client_id: Some("c-1".to_owned()),
        id: "first".to_owned(),
        tail: tail.clone(),
    };
    let first = fixture.backend.post(post.clone()).await.expect("post");
    let again = fixture
        .backend
        .post(Post {
            id: "second".to_owned(),
            ..post
        })
        .await
        .expect("resend");
    assert!(again.duplicate);
    assert_eq!(
        (again.seq, again.id.as_str(), again.ts),
        (first.seq, "first", first.ts)
    );
    let stored = fixture
        .backend
        .history_after("r", 0, 10)
        .await
        .expect("history");
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].frame.as_str(),
        splice_message("message", first.seq, "first", first.ts, &tail)
    );
}
