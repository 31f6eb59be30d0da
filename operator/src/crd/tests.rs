// Tests fail by panicking; unwrap states the expectation most plainly.
#![allow(clippy::unwrap_used)]

use kube::CustomResourceExt;
use serde_json::json;

use super::*;

#[test]
fn checked_in_crd_is_current() {
    let generated = crd_yaml().expect("the CRD serializes");
    // The plain install's copy and the Helm chart's (helm installs what its crds/ holds).
    for file in [
        "crds/chatcluster.yaml",
        "charts/switchboard-operator/crds/chatcluster.yaml",
    ] {
        // The directory cargo runs the test from, not the one it was compiled in: a test binary
        // kept in a shared build cache may have been built from a checkout at another path.
        let dir = std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
        let path = format!("{dir}/../{file}");
        let checked_in = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(
            generated == checked_in,
            "{file} is stale: run `cargo run -p operator --bin crdgen > {file}`"
        );
    }
}

#[test]
fn crd_names_scope_and_subresources() {
    let crd = ChatCluster::crd();
    assert_eq!(crd.metadata.name.as_deref(), Some(CRD_NAME));
    assert_eq!(crd.spec.group, GROUP);
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.kind, "ChatCluster");
    assert_eq!(crd.spec.names.plural, "chatclusters");
    assert_eq!(crd.spec.names.short_names, Some(vec!["chat".to_owned()]));
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, VERSION);
    let sub = version.subresources.as_ref().expect("subresources");
    assert!(sub.status.is_some());
    let scale = sub.scale.as_ref().expect("scale subresource");
    assert_eq!(scale.spec_replicas_path, ".spec.nodes.replicas");
    assert_eq!(scale.status_replicas_path, ".status.nodes.ready");
    assert_eq!(
        scale.label_selector_path.as_deref(),
        Some(".status.selector")
    );
    let columns: Vec<&str> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    for expected in ["Nodes", "Registries", "Sentinels", "Ready", "Age"] {
        assert!(
            columns.contains(&expected),
            "missing printer column {expected}"
        );
    }
}

#[test]
fn schema_carries_cel_rules_with_messages() {
    let schema = serde_json::to_string(&ChatCluster::crd()).expect("json");
    for rule in [
        "self.sentinels % 2 == 1",
        "!has(self.quorum) || self.quorum <= self.sentinels",
        "has(self.url) != has(self.sentinels)",
        "self.mode == 'External' ? has(self.external) : !has(self.external)",
        "quantity(string(self.storage)).compareTo(quantity(string(oldSelf.storage))) >= 0",
        "(has(self.ephemeral) && self.ephemeral) == (has(oldSelf.ephemeral) && oldSelf.ephemeral)",
    ] {
        assert!(schema.contains(rule), "rule {rule} missing");
    }
    for rule in [
        "!(has(self.hmacSecretRef) && has(self.jwksUrl))",
        "self.startsWith('https://')",
    ] {
        assert!(schema.contains(rule), "rule {rule} missing");
    }
    assert!(schema.contains("spec.auth.mode open accepts any user name"));
    assert!(schema.contains("must be odd"));
    assert!(schema.contains("set exactly one of url or sentinels"));
}

#[test]
fn empty_spec_gets_working_defaults() {
    let cc: ChatCluster = serde_json::from_value(json!({
        "apiVersion": "switchboard.dev/v1alpha1",
        "kind": "ChatCluster",
        "metadata": {"name": "demo", "namespace": "chat"},
        "spec": {}
    }))
    .expect("a minimal ChatCluster parses");
    assert_eq!(cc.spec.nodes.replicas, 2);
    assert_eq!(cc.spec.registries.replicas, 2);
    assert_eq!(cc.spec.redis.mode, RedisMode::Managed);
    assert_eq!(cc.spec.redis.managed.replicas, 3);
    assert_eq!(cc.spec.redis.managed.sentinels, 3);
    assert_eq!(cc.spec.redis.managed.effective_quorum(), 2);
    assert_eq!(cc.spec.nodes.advertise_url, "ws://{podIP}:{port}/ws");
    assert_eq!(cc.cluster_id(), "chat/demo");
    assert_eq!(cc.spec.auth.mode, AuthMode::Jwt);
    assert!(cc.spec.auth.hmac_secret_ref.is_none() && cc.spec.auth.jwks_url.is_none());
}

#[test]
fn fixtures_build_what_they_say() {
    let cc = ChatCluster::test("demo").in_namespace("chat").with_nodes(5);
    assert_eq!(cc.spec.nodes.replicas, 5);
    assert_eq!(cc.cluster_id(), "chat/demo");
    let ext = ChatCluster::test("x")
        .with_external_url("redis://127.0.0.1:6379")
        .with_password_secret("redis", "password");
    let external = ext.spec.redis.external.expect("external");
    assert_eq!(external.url.as_deref(), Some("redis://127.0.0.1:6379"));
    assert_eq!(
        external.password_secret_ref.map(|s| s.name),
        Some("redis".to_owned())
    );
}

#[test]
fn attachments_parse_as_the_spec_writes_them_and_are_absent_by_default() {
    let cc: ChatCluster = serde_json::from_value(json!({
        "apiVersion": "switchboard.dev/v1alpha1",
        "kind": "ChatCluster",
        "metadata": {"name": "demo", "namespace": "chat"},
        "spec": {"attachments": {
            "s3": {
                "bucket": "chat-files",
                "endpoint": "http://minio.storage:9000",
                "region": "us-east-1",
                "credentialsSecret": "chat-s3",
            },
            "maxFileBytes": 104_857_600,
            "quotaBytesPerDay": 1_073_741_824_i64,
        }}
    }))
    .expect("the spec's example parses");
    let a = cc.spec.attachments.expect("attachments");
    assert_eq!(a.s3.bucket, "chat-files");
    assert_eq!(a.s3.endpoint.as_deref(), Some("http://minio.storage:9000"));
    assert_eq!(a.s3.credentials_secret, "chat-s3");
    assert_eq!(a.max_file_bytes, Some(104_857_600));
    assert_eq!(a.quota_bytes_per_day, Some(1_073_741_824));
    assert!(ChatCluster::test("demo").spec.attachments.is_none());
    // Absent stays absent when written back (no `attachments: null` in an apply).
    let written = serde_json::to_value(&ChatCluster::test("demo").spec).expect("json");
    assert!(written.get("attachments").is_none(), "{written}");
}

#[test]
fn the_attachments_schema_requires_the_bucket_and_secret_and_bounds_every_value() {
    let crd = serde_json::to_value(ChatCluster::crd()).expect("json");
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let attachments = &spec["properties"]["attachments"];
    assert_eq!(attachments["required"], json!(["s3"]));
    let s3 = &attachments["properties"]["s3"];
    assert_eq!(s3["required"], json!(["bucket", "credentialsSecret"]));
    let props = &attachments["properties"];
    assert_eq!(props["maxFileBytes"]["minimum"], json!(1.0));
    assert_eq!(
        props["maxFileBytes"]["maximum"],
        json!(MAX_FILE_BYTES_LIMIT as f64)
    );
    assert_eq!(props["quotaBytesPerDay"]["minimum"], json!(1.0));
    let bucket = &s3["properties"]["bucket"];
    assert_eq!(
        (&bucket["minLength"], &bucket["maxLength"]),
        (&json!(3), &json!(63))
    );
    let schema = crd.to_string();
    for message in [
        "spec.attachments.s3.bucket must be an S3 bucket name",
        "spec.attachments.s3.endpoint must be an http:// or https:// URL",
        "spec.attachments.s3.credentialsSecret must name a Secret",
        "spec.attachments.s3.region may contain only",
    ] {
        assert!(schema.contains(message), "{message} missing");
    }
}
