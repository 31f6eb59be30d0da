//! The periodic refresh (`Backend::refresh`) renews the presence of every session a node holds. A
//! node with thousands of sessions sends it in bounded pipelines, one after another, rather than as
//! one pipeline of tens of thousands of commands; these tests run it against a real `redis-server`
//! with more sessions than one pipeline carries and check that every one of them landed.

use std::sync::Arc;
use std::time::Duration;

use chat_node::backend::Backend;
use chat_node::backend::redis::{Durability, RedisBackend};
use chat_node::hub::Hub;
use switchboard_testkit::RedisServer;
use tokio_util::sync::CancellationToken;

/// Sessions refreshed at once: each is 2 commands as a user and 3 as a room member, so this is
/// several pipelines and a partial last one.
const SESSIONS: usize = 700;

async fn backend(redis: &RedisServer, stop: &CancellationToken) -> RedisBackend {
    let args = redis.redis_args();
    let client = switchboard_redis::connect(&args).await.expect("connect");
    let subscriber = switchboard_redis::subscriber(&args)
        .await
        .expect("subscriber");
    RedisBackend::new(
        client,
        subscriber,
        switchboard_redis::keys::Keys::new("tests/presence-refresh"),
        Arc::new(Hub::new()),
        100,
        Durability {
            replicas: 0,
            timeout: Duration::from_secs(5),
        },
        stop.clone(),
    )
}

#[tokio::test]
async fn a_refresh_larger_than_one_pipeline_renews_every_session() {
    let redis = RedisServer::start().await.expect("redis-server");
    let stop = CancellationToken::new();
    let backend = backend(&redis, &stop).await;
    let users: Vec<String> = (0..SESSIONS).map(|i| format!("u{i:04}")).collect();
    let elsewhere: Vec<String> = (0..5).map(|i| format!("away{i}")).collect();

    backend
        .refresh(
            "node-a",
            vec![
                ("big".to_owned(), users.clone()),
                ("small".to_owned(), vec![users[0].clone()]),
            ],
            users.clone(),
        )
        .await
        .expect("refresh");

    let mut members = backend.members("big").await.expect("members");
    members.sort();
    assert_eq!(members, users, "every member of the big room is listed");
    assert_eq!(
        backend.members("small").await.expect("members"),
        vec![users[0].clone()]
    );
    let mut asked = users.clone();
    asked.extend(elsewhere.iter().cloned());
    let seen = backend.last_seen(asked).await.expect("last seen");
    let offline: Vec<&String> = users.iter().filter(|u| !seen[*u].online).collect();
    assert!(offline.is_empty(), "refreshed but not online: {offline:?}");
    for u in &elsewhere {
        assert!(!seen[u].online, "{u} was never refreshed, yet online");
    }
    // Nobody's presence is due to expire: the sweep finds nobody to announce as gone.
    let gone = backend
        .expire_presence(vec!["big".to_owned(), "small".to_owned()])
        .await
        .expect("expire presence");
    assert!(gone.is_empty(), "expired right after a refresh: {gone:?}");
    stop.cancel();
}

#[tokio::test]
async fn a_refresh_of_nothing_sends_nothing_and_succeeds() {
    let redis = RedisServer::start().await.expect("redis-server");
    let stop = CancellationToken::new();
    let backend = backend(&redis, &stop).await;
    backend
        .refresh("node-a", Vec::new(), Vec::new())
        .await
        .expect("an empty refresh");
    assert!(backend.members("big").await.expect("members").is_empty());
    stop.cancel();
}
