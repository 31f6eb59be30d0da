//! The attachment store (`spec.attachments`) against a real MinIO (`switchboard_testkit::s3`): the
//! `AttachmentStoreReady` condition follows what the operator's own probe of the bucket finds —
//! `CredentialsMissing` without the Secret or one of its keys, `Reachable` with the right key,
//! `AccessDenied` with a wrong secret, `BucketMissing` for a bucket that does not exist,
//! `StoreUnreachable` for a frozen server or a closed port — and comes back to `Reachable` when the
//! cause is fixed, while the chat system stays `Ready` throughout. The chat-node pods get the bucket
//! and the key through `secretKeyRef` (attachments off while the key is missing), and a new key rolls
//! them. Redis is a real local `redis-server` (External mode) so the ChatCluster can become Ready on
//! the simulated pods.

use std::time::Duration;

use k8s_openapi::api::core::v1::{EnvVar, Secret};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use operator::crd::ChatCluster;
use operator::resources::{ENV_ACCESS_KEY_ID, ENV_SECRET_ACCESS_KEY};
use serde_json::json;
use switchboard_testkit::s3::{BUCKET, S3Server};
use switchboard_testkit::{RedisServer, eventually, free_port};

use crate::{TIMEOUT, bed, condition, create_cluster, new_namespace, start_operator};

const STORE_READY: &str = "AttachmentStoreReady";

/// Waits until `AttachmentStoreReady` of `name` is `status` with `reason`; returns its message.
async fn store_becomes(
    client: &Client,
    ns: &str,
    name: &str,
    status: &str,
    reason: &str,
    within: Duration,
) -> String {
    let api: Api<ChatCluster> = Api::namespaced(client.clone(), ns);
    eventually(
        &format!("{name} {STORE_READY}={status} ({reason})"),
        within,
        || async {
            let cc = api.get(name).await.ok()?;
            let (s, r, message) = condition(&cc, STORE_READY)?;
            (s == status && r == reason).then_some(message)
        },
    )
    .await
}

/// The chat-node Deployment's pod-template hash and its container's env.
async fn node_template(client: &Client, ns: &str, name: &str) -> (String, Vec<EnvVar>) {
    let (hash, d) = crate::node_template(client, ns, name).await;
    let env = d
        .spec
        .template
        .spec
        .and_then(|p| p.containers.into_iter().next())
        .and_then(|c| c.env)
        .unwrap_or_default();
    (hash, env)
}

fn value<'a>(env: &'a [EnvVar], name: &str) -> Option<&'a str> {
    env.iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.as_deref())
}

/// (Secret, key) the env variable `name` comes from.
fn secret_ref(env: &[EnvVar], name: &str) -> Option<(String, String)> {
    let r = env
        .iter()
        .find(|e| e.name == name)?
        .value_from
        .as_ref()?
        .secret_key_ref
        .as_ref()?;
    Some((r.name.clone(), r.key.clone()))
}

/// Merges `spec` into ChatCluster `name`'s spec.
async fn patch_spec(client: &Client, ns: &str, name: &str, spec: serde_json::Value) {
    let api: Api<ChatCluster> = Api::namespaced(client.clone(), ns);
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": spec })),
    )
    .await
    .expect("patch the ChatCluster");
}

#[tokio::test]
async fn the_store_condition_follows_the_bucket_and_the_key_while_chat_stays_ready() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-attach").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    let s3 = S3Server::start()
        .await
        .unwrap_or_else(|e| panic!("MinIO for the attachment store: {e}"));
    let redis = RedisServer::start().await.expect("redis-server");
    let _operator = start_operator(bed, n).await;
    create_cluster(
        &client,
        n,
        ChatCluster::test("chat")
            .with_nodes(1)
            .with_registries(1)
            .with_external_url(&redis.url())
            .with_attachments(BUCKET, "chat-s3")
            .with_attachments_endpoint(&s3.endpoint()),
    )
    .await;
    let mut messages = Vec::new();

    // No Secret yet: said so, and the chat-nodes run with attachments off (a secretKeyRef to a missing
    // Secret would keep them from starting) — chat is Ready all the same.
    let m = store_becomes(&client, n, "chat", "False", "CredentialsMissing", TIMEOUT).await;
    assert!(
        m.contains(&format!("Secret {n}/chat-s3")) && m.contains("does not exist"),
        "{m}"
    );
    messages.push(m);
    crate::wait_condition(&client, n, "chat", "Ready", "True").await;
    let (off_hash, env) = node_template(&client, n, "chat").await;
    assert_eq!(value(&env, "SWITCHBOARD_ATTACHMENTS_STORE"), Some("off"));
    assert!(secret_ref(&env, ENV_ACCESS_KEY_ID).is_none());

    // A Secret with one key of two is still missing credentials.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), n);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "chat-s3" },
        "stringData": { "accessKeyId": s3.access_key() },
    }))
    .expect("Secret");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the credentials Secret");
    let m = eventually("CredentialsMissing names the key", TIMEOUT, || async {
        let api: Api<ChatCluster> = Api::namespaced(client.clone(), n);
        let (_, reason, m) = condition(&api.get("chat").await.ok()?, STORE_READY)?;
        (reason == "CredentialsMissing" && m.contains("has no key secretAccessKey")).then_some(m)
    })
    .await;
    messages.push(m);
    let set_secret = |secret: String| {
        let secrets = secrets.clone();
        async move {
            secrets
                .patch(
                    "chat-s3",
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "stringData": { "secretAccessKey": secret } })),
                )
                .await
                .expect("patch the credentials Secret");
        }
    };

    // The right key: the bucket answers, and the pods get it through secretKeyRef.
    set_secret(s3.secret_key().to_owned()).await;
    let m = store_becomes(&client, n, "chat", "True", "Reachable", TIMEOUT).await;
    assert!(m.contains(BUCKET) && m.contains(&s3.endpoint()), "{m}");
    messages.push(m);
    let (right_hash, env) = node_template(&client, n, "chat").await;
    assert_ne!(
        right_hash, off_hash,
        "the key's arrival rolls the chat-nodes"
    );
    assert_eq!(
        value(&env, "SWITCHBOARD_ATTACHMENTS_STORE"),
        Some(format!("s3://{BUCKET}").as_str())
    );
    assert_eq!(
        value(&env, "SWITCHBOARD_ATTACHMENTS_S3_ENDPOINT"),
        Some(s3.endpoint().as_str())
    );
    for (name, key) in [
        (ENV_ACCESS_KEY_ID, "accessKeyId"),
        (ENV_SECRET_ACCESS_KEY, "secretAccessKey"),
    ] {
        assert_eq!(
            secret_ref(&env, name),
            Some(("chat-s3".to_owned(), key.to_owned())),
            "{name}"
        );
    }
    for e in &env {
        let v = e.value.as_deref().unwrap_or_default();
        assert!(
            !v.contains(s3.secret_key()) && !v.contains(s3.access_key()),
            "{} carries the key",
            e.name
        );
    }

    // A wrong secret: refused, and the new key rolls the pods.
    let wrong = "0".repeat(40);
    set_secret(wrong.clone()).await;
    let m = store_becomes(&client, n, "chat", "False", "AccessDenied", TIMEOUT).await;
    assert!(m.contains("secretAccessKey"), "{m}");
    messages.push(m);
    let (wrong_hash, _) = node_template(&client, n, "chat").await;
    assert_ne!(wrong_hash, right_hash, "a new key rolls the chat-nodes");
    set_secret(s3.secret_key().to_owned()).await;
    store_becomes(&client, n, "chat", "True", "Reachable", TIMEOUT).await;
    assert_eq!(node_template(&client, n, "chat").await.0, right_hash);

    // A bucket that does not exist, then the right one again.
    patch_spec(
        &client,
        n,
        "chat",
        json!({ "attachments": { "s3": { "bucket": "no-such-bucket" } } }),
    )
    .await;
    let m = store_becomes(&client, n, "chat", "False", "BucketMissing", TIMEOUT).await;
    assert!(m.contains("no-such-bucket"), "{m}");
    messages.push(m);
    patch_spec(
        &client,
        n,
        "chat",
        json!({ "attachments": { "s3": { "bucket": BUCKET } } }),
    )
    .await;
    store_becomes(&client, n, "chat", "True", "Reachable", TIMEOUT).await;

    // A frozen server: the probe gives up after 5 s and the rest of the reconcile is not held up (the
    // spec change reaches the Deployment).
    s3.pause().expect("SIGSTOP MinIO");
    patch_spec(
        &client,
        n,
        "chat",
        json!({ "attachments": { "maxFileBytes": 1_048_576 } }),
    )
    .await;
    let m = store_becomes(&client, n, "chat", "False", "StoreUnreachable", TIMEOUT).await;
    assert!(m.contains("did not answer within 5s"), "{m}");
    messages.push(m);
    eventually("the new limit reaches the Deployment", TIMEOUT, || async {
        let (_, env) = node_template(&client, n, "chat").await;
        (value(&env, "SWITCHBOARD_MAX_ATTACHMENT_BYTES") == Some("1048576")).then_some(())
    })
    .await;
    // The new limit rolls the chat-nodes; they become Ready while the store still does not answer.
    let cc = crate::wait_condition(&client, n, "chat", "Ready", "True").await;
    assert_eq!(
        condition(&cc, STORE_READY).map(|c| c.1).as_deref(),
        Some("StoreUnreachable"),
        "chat is Ready with the store unreachable"
    );
    // Thawed, it is found again by the requeue of a False condition (30 s), with nothing else changing.
    s3.resume().expect("SIGCONT MinIO");
    store_becomes(
        &client,
        n,
        "chat",
        "True",
        "Reachable",
        Duration::from_secs(60),
    )
    .await;

    // An endpoint where nothing listens.
    let closed = format!("http://127.0.0.1:{}", free_port().expect("a free port"));
    patch_spec(
        &client,
        n,
        "chat",
        json!({ "attachments": { "s3": { "endpoint": closed } } }),
    )
    .await;
    let m = store_becomes(&client, n, "chat", "False", "StoreUnreachable", TIMEOUT).await;
    assert!(
        m.contains(&closed) && m.contains("(connection refused)"),
        "{m}"
    );
    messages.push(m);
    patch_spec(
        &client,
        n,
        "chat",
        json!({ "attachments": { "s3": { "endpoint": s3.endpoint() } } }),
    )
    .await;
    store_becomes(&client, n, "chat", "True", "Reachable", TIMEOUT).await;

    for m in &messages {
        for secret in [s3.secret_key(), s3.access_key(), wrong.as_str()] {
            assert!(!m.contains(secret), "a message carries the key: {m}");
        }
    }

    // Without spec.attachments the condition goes away and the chat-nodes run with attachments off.
    let api: Api<ChatCluster> = Api::namespaced(client.clone(), n);
    patch_spec(&client, n, "chat", json!({ "attachments": null })).await;
    eventually("AttachmentStoreReady removed", TIMEOUT, || async {
        let cc = api.get("chat").await.ok()?;
        condition(&cc, STORE_READY).is_none().then_some(())
    })
    .await;
    let (_, env) = node_template(&client, n, "chat").await;
    assert_eq!(value(&env, "SWITCHBOARD_ATTACHMENTS_STORE"), Some("off"));
}
