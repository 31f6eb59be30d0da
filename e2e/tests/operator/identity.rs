//! Identity on Kubernetes (`spec.auth`): a ChatCluster with no auth settings verifies tokens with a key
//! the operator generates once, mounted as a file (never an environment value or argument); a key
//! Secret the spec names but that is missing or too short is `Degraded` with what to do; changing the
//! key rolls the chat-node pods. Redis is a real local `redis-server` (External mode) so the
//! ChatCluster can become Ready on the simulated pods.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use operator::crd::ChatCluster;
use serde_json::json;
use switchboard_testkit::{RedisServer, eventually};

use crate::{
    TIMEOUT, bed, condition, create_cluster, kubectl_ok, new_namespace, node_template,
    start_operator, wait_condition, wait_event,
};

/// Fails unless no container of `d` has `secret` in an env value or an argument.
fn secret_absent_from_env_and_args(d: &Deployment, secret: &str) {
    let pod = d.spec.template.spec.as_ref().expect("pod spec");
    for c in &pod.containers {
        for e in c.env.iter().flatten() {
            assert!(
                !e.value.as_deref().unwrap_or_default().contains(secret),
                "{} of {} carries the key",
                e.name,
                c.name
            );
        }
        for arg in c.args.iter().chain(c.command.iter()).flatten() {
            assert!(
                !arg.contains(secret),
                "an argument of {} carries the key",
                c.name
            );
        }
    }
}

fn external(name: &str, redis: &RedisServer) -> ChatCluster {
    ChatCluster::test(name)
        .with_nodes(1)
        .with_registries(1)
        .with_external_url(&format!("redis://127.0.0.1:{}", redis.port()))
}

#[tokio::test]
async fn an_empty_auth_spec_generates_the_token_key_once_mounts_it_as_a_file_and_becomes_ready() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-auth-default").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    let redis = RedisServer::start().await.expect("redis-server");
    let _operator = start_operator(bed, n).await;
    create_cluster(&client, n, external("chat", &redis)).await;

    wait_condition(&client, n, "chat", "Ready", "True").await;
    let (_, _, note) = wait_event(&client, n, "chat", "KeyGenerated").await;
    assert!(note.contains("chat-jwt"), "{note}");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), n);
    let key_of = |s: Secret| {
        let bytes = s
            .data
            .and_then(|d| d.get("hmac").cloned())
            .expect("key hmac");
        String::from_utf8(bytes.0).expect("text")
    };
    let key = key_of(secrets.get("chat-jwt").await.expect("the generated Secret"));
    assert_eq!(key.len(), 64, "32 random bytes, hex");

    let (hash, d) = node_template(&client, n, "chat").await;
    secret_absent_from_env_and_args(&d, &key);
    let pod = d.spec.template.spec.as_ref().expect("pod spec");
    let env = |name: &str| {
        pod.containers[0]
            .env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(env("SWITCHBOARD_AUTH").as_deref(), Some("jwt"));
    assert_eq!(
        env("SWITCHBOARD_JWT_HMAC_SECRET_FILE").as_deref(),
        Some("/var/run/switchboard/jwt/hmac")
    );
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "jwt")
        .expect("key volume");
    assert_eq!(
        volume
            .secret
            .as_ref()
            .and_then(|s| s.secret_name.as_deref()),
        Some("chat-jwt")
    );

    // Later reconciles (a spec change) neither regenerate the key nor roll the pods for it.
    let api: Api<ChatCluster> = Api::namespaced(client.clone(), n);
    api.patch(
        "chat",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "nodes": { "capacity": 500 } } })),
    )
    .await
    .expect("change the capacity");
    eventually("the capacity change rendered", TIMEOUT, || async {
        let (_, d) = node_template(&client, n, "chat").await;
        let c = &d.spec.template.spec.as_ref()?.containers[0];
        c.env
            .iter()
            .flatten()
            .any(|e| e.name == "SWITCHBOARD_CAPACITY" && e.value.as_deref() == Some("500"))
            .then_some(())
    })
    .await;
    assert_eq!(key_of(secrets.get("chat-jwt").await.expect("Secret")), key);
    assert_eq!(node_template(&client, n, "chat").await.0, hash);
}

#[tokio::test]
async fn a_missing_or_short_key_secret_is_degraded_and_a_key_change_rolls_the_chat_nodes() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-auth-secret").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    let redis = RedisServer::start().await.expect("redis-server");
    let _operator = start_operator(bed, n).await;
    create_cluster(
        &client,
        n,
        external("chat", &redis).with_hmac_secret("chat-signing", "key"),
    )
    .await;

    let cc = wait_condition(&client, n, "chat", "Degraded", "True").await;
    let (_, reason, message) = condition(&cc, "Degraded").expect("Degraded");
    assert_eq!(reason, "AuthSecretNotFound");
    assert!(message.contains("spec.auth.hmacSecretRef"), "{message}");
    assert!(
        message.contains(&format!(
            "kubectl -n {n} create secret generic chat-signing"
        )),
        "{message}"
    );
    // Nothing was generated for a Secret the user names.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), n);
    assert!(
        secrets
            .get_opt("chat-signing")
            .await
            .expect("get")
            .is_none()
    );
    assert!(secrets.get_opt("chat-jwt").await.expect("get").is_none());

    // Too short for HS256: chat-node would refuse it, so the operator says so first.
    kubectl_ok(
        bed,
        &[
            "-n",
            n,
            "create",
            "secret",
            "generic",
            "chat-signing",
            "--from-literal=key=short",
        ],
        None,
    )
    .await;
    eventually("AuthKeyTooShort", TIMEOUT, || async {
        let api: Api<ChatCluster> = Api::namespaced(client.clone(), n);
        let cc = api.get("chat").await.ok()?;
        let (status, reason, message) = condition(&cc, "Degraded")?;
        (status == "True" && reason == "AuthKeyTooShort" && message.contains("32 bytes"))
            .then_some(())
    })
    .await;

    let long = "k".repeat(40);
    let set_key = |value: String| {
        let secrets = secrets.clone();
        async move {
            secrets
                .patch(
                    "chat-signing",
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "stringData": { "key": value } })),
                )
                .await
                .expect("patch the key Secret");
        }
    };
    set_key(long.clone()).await;
    wait_condition(&client, n, "chat", "Degraded", "False").await;
    wait_condition(&client, n, "chat", "Ready", "True").await;
    let (before, d) = node_template(&client, n, "chat").await;
    secret_absent_from_env_and_args(&d, &long);
    let volume = d
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|p| p.volumes.clone())
        .and_then(|v| v.into_iter().find(|v| v.name == "jwt"))
        .and_then(|v| v.secret)
        .expect("key volume");
    assert_eq!(volume.secret_name.as_deref(), Some("chat-signing"));

    // A new key reaches the pods: the template changes, so the Deployment rolls them.
    set_key("n".repeat(40)).await;
    eventually(
        "the chat-node template follows the key",
        TIMEOUT,
        || async {
            let (after, _) = node_template(&client, n, "chat").await;
            (after != before).then_some(())
        },
    )
    .await;
}
