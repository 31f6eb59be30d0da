//! The environment the operator writes for chat-node and registry is what those binaries read: every
//! `SWITCHBOARD_*` variable of a rendered container is the `env` of a flag the binary defines (checked
//! against their own clap definitions, so renaming a flag without the operator fails here), and every
//! other variable is a helper the kubelet expands into one of them. The S3 key of the attachment store is
//! the one exception: chat-node reads it from its environment without a flag (a command line is
//! public), so it is accepted where chat-node has the attachment flags that read it.

use std::collections::BTreeSet;

use clap::CommandFactory;
use k8s_openapi::api::apps::v1::Deployment;
use operator::crd::ChatCluster;
use operator::resources::{RenderContext, render};

/// The environment variables the flags of `command` read.
fn flag_envs(command: &clap::Command) -> BTreeSet<String> {
    command
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect()
}

/// Names of the env variables of container `name` in every Deployment of `clusters`, with the values
/// of the helpers (`$(POD_IP)`) they are used in.
fn rendered(clusters: &[ChatCluster], container: &str) -> (BTreeSet<String>, Vec<String>) {
    let ctx = RenderContext {
        cluster_domain: "cluster.local".to_owned(),
        password_hash: Some("h".to_owned()),
        auth_hash: Some("k".to_owned()),
        redis_tls_hash: Some("t".to_owned()),
        attachments_hash: Some("a".to_owned()),
    };
    let mut names = BTreeSet::new();
    let mut values = Vec::new();
    for cc in clusters {
        let desired = render(cc, &ctx).expect("renders");
        let containers = desired
            .deployments
            .iter()
            .filter_map(|d: &Deployment| d.spec.template.spec.as_ref())
            .flat_map(|p| p.containers.iter())
            .filter(|c| c.name == container);
        for c in containers {
            for e in c.env.iter().flatten() {
                names.insert(e.name.clone());
                values.extend(e.value.clone());
            }
        }
    }
    (names, values)
}

/// Every Redis variant (managed: sentinels + password; external URL with a password; external
/// sentinels), an advertised URL using every template field, and every identity variant (generated
/// HMAC key, JWKS with issuer, audience and origins, open), and attachments with every setting.
fn every_variant() -> Vec<ChatCluster> {
    let mut named = ChatCluster::test("demo");
    named.spec.nodes.advertise_url =
        "wss://{podName}.{namespace}.chat.example:{port}/ws".to_owned();
    let mut jwks = ChatCluster::test("demo")
        .with_jwks_url("https://id.example/jwks")
        .with_allowed_origins(&["https://chat.example"]);
    jwks.spec.auth.issuer = Some("https://id.example/".to_owned());
    jwks.spec.auth.audience = Some("chat".to_owned());
    let mut attachments = ChatCluster::test("demo")
        .with_attachments("chat-files", "chat-s3")
        .with_attachments_endpoint("http://minio.storage:9000");
    if let Some(a) = attachments.spec.attachments.as_mut() {
        a.s3.region = Some("eu-central-1".to_owned());
        a.max_file_bytes = Some(1 << 20);
        a.quota_bytes_per_day = Some(1 << 30);
    }
    vec![
        ChatCluster::test("demo"),
        named,
        ChatCluster::test("demo")
            .with_external_url("redis://r:6379")
            .with_password_secret("s", "k"),
        ChatCluster::test("demo").with_external_sentinels(&["s:26379"], "m"),
        jwks,
        ChatCluster::test("demo").with_open_identity(),
        attachments,
    ]
}

fn check(binary: &str, command: &clap::Command, container: &str) {
    let flags = flag_envs(command);
    // The S3 key is read from the environment by the resolution of the attachment flags.
    let key_envs = [
        operator::resources::ENV_ACCESS_KEY_ID,
        operator::resources::ENV_SECRET_ACCESS_KEY,
    ];
    let (names, values) = rendered(&every_variant(), container);
    assert!(!names.is_empty(), "{container} has no env");
    for name in &names {
        if key_envs.contains(&name.as_str()) {
            assert!(
                flags.contains(operator::resources::ENV_ATTACHMENTS_STORE),
                "the operator sets {name} on {container}, which {binary} reads only with its attachment flags \
                 (switchboard_attachments::AttachmentArgs), but {binary} has none"
            );
        } else if name.starts_with("SWITCHBOARD_") {
            assert!(
                flags.contains(name),
                "the operator sets {name} on {container}, but {binary} has no flag reading it; its flags read {flags:?}"
            );
        } else {
            let reference = format!("$({name})");
            assert!(
                values.iter().any(|v| v.contains(&reference)),
                "{name} on {container} is neither a {binary} flag nor used in another variable"
            );
        }
    }
}

#[test]
fn env_names_the_operator_writes_are_flags_of_chat_node_and_registry() {
    check("chat-node", &chat_node::Args::command(), "chat-node");
    check("registry", &registry::Args::command(), "registry");
}
