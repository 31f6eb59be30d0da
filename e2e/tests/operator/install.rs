//! Installing: the CRDs and manifests apply as the README says, the CRD schema refuses bad specs with its
//! rule messages, and the operator's RBAC is narrow (no wildcards, no deletes it does not need).

use operator::crd::ChatCluster;

use crate::{
    OPERATOR_SA, REPO, bed, create_cluster, documents, install, kubectl, kubectl_ok, new_namespace,
    start_operator_as, wait_condition,
};

#[tokio::test]
async fn crds_and_manifests_install_with_one_kubectl_apply() {
    let bed = bed().await;
    install(bed).await;
    let crds = format!("{REPO}/crds");
    let manifests = format!("{REPO}/manifests");
    // What the README tells a user to run, checked by the API server (dry run: the bed runs no images).
    let out = kubectl_ok(
        bed,
        &["apply", "--dry-run=server", "-f", &crds, "-f", &manifests],
        None,
    )
    .await;
    for object in [
        "customresourcedefinition.apiextensions.k8s.io/chatclusters.switchboard.dev",
        "namespace/switchboard-system",
        "serviceaccount/switchboard-operator",
        "clusterrole.rbac.authorization.k8s.io/switchboard-operator",
        "role.rbac.authorization.k8s.io/switchboard-operator-leader-election",
        "deployment.apps/switchboard-operator",
    ] {
        assert!(out.contains(object), "{object} missing from: {out}");
    }
    // The operator's account may do what it needs and nothing broader.
    let can = |verb: &'static str, resource: &'static str| async move {
        let (_, out) = kubectl(
            bed,
            &[
                "auth",
                "can-i",
                verb,
                resource,
                "--all-namespaces",
                "--as",
                OPERATOR_SA,
            ],
            None,
        )
        .await;
        out.trim() == "yes"
    };
    assert!(can("patch", "deployments.apps").await);
    assert!(can("watch", "endpointslices.discovery.k8s.io").await);
    assert!(!can("delete", "deployments.apps").await);
    assert!(!can("delete", "pods").await);
    assert!(!can("update", "secrets").await);
    assert!(!can("create", "clusterroles.rbac.authorization.k8s.io").await);
}

#[tokio::test]
async fn bad_specs_are_refused_by_the_api_server_with_the_rule_message() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-bad").await;
    let n = ns.name();
    let cases = [
        (
            "{redis: {managed: {sentinels: 2}}}",
            "sentinels must be odd",
        ),
        (
            "{redis: {managed: {sentinels: 3, quorum: 5}}}",
            "quorum must not exceed",
        ),
        (
            "{redis: {mode: External}}",
            "spec.redis.external is required when spec.redis.mode is External",
        ),
        (
            "{redis: {mode: External, external: {url: 'redis://a:6379', sentinels: ['b:26379']}}}",
            "set exactly one of url or sentinels",
        ),
        (
            "{redis: {mode: External, external: {url: 'http://a'}}}",
            "must start with redis://",
        ),
        ("{nodes: {replicas: -1}}", "greater than or equal to 0"),
        (
            "{nodes: {advertiseUrl: 'http://x'}}",
            "must start with ws:// or wss://",
        ),
        ("{nodes: {capacity: 0}}", "greater than or equal to 1"),
        (
            "{auth: {hmacSecretRef: {name: k, key: hmac}, jwksUrl: 'https://id.example/jwks'}}",
            "set at most one of hmacSecretRef and jwksUrl",
        ),
        (
            "{auth: {mode: open, hmacSecretRef: {name: k, key: hmac}}}",
            "spec.auth.mode open accepts any user name",
        ),
        (
            "{auth: {mode: open, issuer: 'https://id.example/'}}",
            "spec.auth.mode open accepts any user name",
        ),
        (
            "{auth: {jwksUrl: 'http://id.example/jwks'}}",
            "spec.auth.jwksUrl must be an https:// URL",
        ),
        (
            "{auth: {allowedOrigins: ['https://chat.example/path']}}",
            "each entry is scheme://host[:port]",
        ),
        ("{auth: {mode: Open}}", "Unsupported value"),
        (
            "{monitoring: {podMonitor: {enabled: true, interval: '30 seconds'}}}",
            "spec.monitoring.podMonitor.interval is a Prometheus duration",
        ),
        (
            "{attachments: {maxFileBytes: 1}}",
            "spec.attachments.s3: Required value",
        ),
        (
            "{attachments: {s3: {bucket: chat-files}}}",
            "spec.attachments.s3.credentialsSecret: Required value",
        ),
        (
            "{attachments: {s3: {bucket: '', credentialsSecret: chat-s3}}}",
            "spec.attachments.s3.bucket in body should be at least 3 chars long",
        ),
        (
            "{attachments: {s3: {bucket: Chat_Files, credentialsSecret: chat-s3}}}",
            "spec.attachments.s3.bucket must be an S3 bucket name",
        ),
        (
            "{attachments: {s3: {bucket: chat-files, endpoint: 'minio:9000', credentialsSecret: chat-s3}}}",
            "spec.attachments.s3.endpoint must be an http:// or https:// URL",
        ),
        (
            "{attachments: {s3: {bucket: chat-files, credentialsSecret: 'Chat S3'}}}",
            "spec.attachments.s3.credentialsSecret must name a Secret",
        ),
        (
            "{attachments: {s3: {bucket: chat-files, credentialsSecret: chat-s3}, maxFileBytes: 0}}",
            "spec.attachments.maxFileBytes in body should be greater than or equal to 1",
        ),
        (
            "{attachments: {s3: {bucket: chat-files, credentialsSecret: chat-s3}, maxFileBytes: 68719476737}}",
            "spec.attachments.maxFileBytes in body should be less than or equal to 68719476736",
        ),
        (
            "{attachments: {s3: {bucket: chat-files, credentialsSecret: chat-s3}, quotaBytesPerDay: 0}}",
            "spec.attachments.quotaBytesPerDay in body should be greater than or equal to 1",
        ),
    ];
    for (spec, message) in cases {
        let doc = format!(
            "apiVersion: switchboard.dev/v1alpha1\nkind: ChatCluster\nmetadata: {{name: bad}}\nspec: {spec}\n"
        );
        let (ok, out) = kubectl(bed, &["apply", "-n", n, "-f", "-"], Some(&doc)).await;
        assert!(!ok, "{spec} was accepted");
        assert!(
            out.contains(message),
            "{spec}: expected {message:?} in {out}"
        );
    }
    // What the attachments design writes is accepted as it stands.
    let good = "apiVersion: switchboard.dev/v1alpha1\nkind: ChatCluster\nmetadata: {name: good}\nspec: {attachments: {s3: {bucket: chat-files, endpoint: 'http://minio.storage:9000', region: us-east-1, credentialsSecret: chat-s3}, maxFileBytes: 104857600, quotaBytesPerDay: 1073741824}}\n";
    let (ok, out) = kubectl(
        bed,
        &["apply", "--dry-run=server", "-n", n, "-f", "-"],
        Some(good),
    )
    .await;
    assert!(ok, "the attachments example was refused: {out}");
}

#[tokio::test]
async fn rbac_grants_no_wildcards() {
    let text = std::fs::read_to_string(format!("{REPO}/manifests/10-rbac.yaml")).expect("rbac")
        + "\n---\n"
        + &std::fs::read_to_string(format!("{REPO}/manifests/namespaced/operator.yaml"))
            .expect("namespaced");
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value: serde_json::Value = serde::Deserialize::deserialize(doc).expect("yaml");
        for rule in value["rules"].as_array().into_iter().flatten() {
            for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                for item in rule[field].as_array().into_iter().flatten() {
                    assert_ne!(item.as_str(), Some("*"), "wildcard in {rule}");
                }
            }
        }
    }
}

#[tokio::test]
async fn storage_changes_a_stateful_set_cannot_apply_are_refused_with_the_rule_message() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-storage").await;
    let n = ns.name();
    let with_storage = "apiVersion: switchboard.dev/v1alpha1\nkind: ChatCluster\nmetadata: {name: kept}\nspec: {redis: {managed: {storage: 1Gi, storageClassName: standard}}}\n";
    let without = "apiVersion: switchboard.dev/v1alpha1\nkind: ChatCluster\nmetadata: {name: plain}\nspec: {redis: {managed: {ephemeral: true}}}\n";
    kubectl_ok(bed, &["apply", "-n", n, "-f", "-"], Some(with_storage)).await;
    kubectl_ok(bed, &["apply", "-n", n, "-f", "-"], Some(without)).await;
    let cases = [
        (
            "kept",
            r#"{"spec":{"redis":{"managed":{"storage":"512Mi"}}}}"#,
            "spec.redis.managed.storage can grow but not shrink",
        ),
        (
            "kept",
            r#"{"spec":{"redis":{"managed":{"ephemeral":true}}}}"#,
            "spec.redis.managed.ephemeral cannot be changed after creation",
        ),
        (
            "kept",
            r#"{"spec":{"redis":{"managed":{"storageClassName":"fast"}}}}"#,
            "spec.redis.managed.storageClassName cannot be changed after creation",
        ),
        (
            "plain",
            r#"{"spec":{"redis":{"managed":{"ephemeral":false}}}}"#,
            "spec.redis.managed.ephemeral cannot be changed after creation",
        ),
    ];
    for (name, patch, message) in cases {
        let target = format!("chatcluster/{name}");
        let (ok, out) = kubectl(
            bed,
            &["patch", "-n", n, &target, "--type=merge", "-p", patch],
            None,
        )
        .await;
        assert!(!ok, "{patch} on {name} was accepted");
        assert!(
            out.contains(message),
            "{patch}: expected {message:?} in {out}"
        );
    }
    // Everything else stays changeable.
    kubectl_ok(
        bed,
        &[
            "patch",
            "-n",
            n,
            "chatcluster/kept",
            "--type=merge",
            "-p",
            r#"{"spec":{"nodes":{"replicas":3},"redis":{"managed":{"replicas":5}}}}"#,
        ],
        None,
    )
    .await;
}

fn find<'a>(docs: &'a [serde_json::Value], kind: &str, name: &str) -> &'a serde_json::Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {name}"))
}

#[test]
fn the_namespace_scoped_install_is_the_cluster_wide_one_narrowed() {
    let wide: Vec<_> = documents("manifests/10-rbac.yaml")
        .into_iter()
        .chain(documents("manifests/20-operator.yaml"))
        .collect();
    let narrow = documents("manifests/namespaced/operator.yaml");
    // The same grants, minus the one read of a cluster-scoped object (the CRD).
    let mut rules = find(&wide, "ClusterRole", "switchboard-operator")["rules"].clone();
    rules
        .as_array_mut()
        .expect("rules")
        .retain(|r| r["apiGroups"][0] != "apiextensions.k8s.io");
    assert_eq!(
        find(&narrow, "Role", "switchboard-operator")["rules"],
        rules
    );
    assert_eq!(
        find(&narrow, "Role", "switchboard-operator-leader-election")["rules"],
        find(&wide, "Role", "switchboard-operator-leader-election")["rules"]
    );
    assert!(
        narrow
            .iter()
            .all(|d| d["kind"] != "ClusterRole" && d["kind"] != "ClusterRoleBinding")
    );
    // The same Deployment, watching the namespace it runs in.
    let mut deployment = find(&wide, "Deployment", "switchboard-operator").clone();
    let mut scoped = find(&narrow, "Deployment", "switchboard-operator").clone();
    deployment["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("namespace");
    let env = scoped["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array_mut()
        .expect("env");
    let watch = env
        .iter()
        .position(|e| e["name"] == "SWITCHBOARD_WATCH_NAMESPACE")
        .expect("the scoped operator watches one namespace");
    assert_eq!(
        env.remove(watch)["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(scoped, deployment);
}

#[tokio::test]
async fn a_namespace_scoped_install_reconciles_its_namespace_with_a_role_alone() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-scoped").await;
    let n = ns.name();
    let rendered = kubectl_ok(
        bed,
        &["kustomize", &format!("{REPO}/manifests/namespaced")],
        None,
    )
    .await;
    let rendered = rendered.replace("namespace: chat", &format!("namespace: {n}"));
    kubectl_ok(bed, &["apply", "-f", "-"], Some(&rendered)).await;
    let account = format!("system:serviceaccount:{n}:switchboard-operator");
    let can = |verb: &'static str, resource: &'static str, namespace: Option<&str>| {
        let account = account.clone();
        let scope = namespace.map_or("--all-namespaces".to_owned(), |n| {
            format!("--namespace={n}")
        });
        async move {
            let (_, out) = kubectl(
                bed,
                &["auth", "can-i", verb, resource, &scope, "--as", &account],
                None,
            )
            .await;
            out.trim() == "yes"
        }
    };
    assert!(can("patch", "deployments.apps", Some(n)).await);
    assert!(can("list", "pods", Some(n)).await);
    assert!(
        !can("list", "pods", Some("default")).await,
        "nothing outside its namespace"
    );
    assert!(!can("get", "secrets", None).await);
    assert!(
        !can(
            "get",
            "customresourcedefinitions.apiextensions.k8s.io",
            None
        )
        .await
    );
    // The operator's controllers, as that account, build a ChatCluster in the namespace.
    let _operator = start_operator_as(bed, n, &account).await;
    let client = bed.client().expect("client");
    create_cluster(&client, n, ChatCluster::test("scoped").with_nodes(1)).await;
    let cc = wait_condition(&client, n, "scoped", "Progressing", "False").await;
    let status = cc.status.expect("status");
    assert_eq!((status.nodes.ready, status.nodes.desired), (1, 1));
}
