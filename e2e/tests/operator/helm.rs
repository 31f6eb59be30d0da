//! The Helm chart (`charts/switchboard-operator`): it lints clean, renders exactly `manifests/` with its
//! default values (and `manifests/namespaced/` with `rbac.scope=namespace`), and a `helm install` on the
//! bed runs an operator that makes a ChatCluster Ready.
//!
//! `helm` is built from its Go module and cached like the bed's binaries (`testbed tools`). Pods on the
//! bed run nothing, so the chart-installed operator is the Deployment's container run as a local process
//! ([`ChartOperator`]): the `operator` binary with the container's args and env (field references resolved
//! to one of the Deployment's pods), acting as the chart's ServiceAccount — the chart's RBAC is what it has.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;

use e2e::testbed::tools::{self, Tools};
use e2e::testbed::{Layout, TestBed};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::config::Kubeconfig;
use kube::{Client, ResourceExt};
use operator::crd::ChatCluster;
use serde_json::Value;
use switchboard_runtime::report;
use switchboard_testkit::{RedisServer, eventually};
use tokio::sync::OnceCell;

use crate::{
    REPO, TIMEOUT, bed, create_cluster, documents, kubectl_ok, new_namespace, wait_condition,
    yaml_documents,
};

/// The release name the comparison with `manifests/` uses: object names are then the manifests' ones.
const RELEASE: &str = "switchboard-operator";
/// Labels Helm charts add that plain manifests cannot know (release, chart version, tool).
const HELM_LABELS: [&str; 4] = [
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
];

static TOOLS: OnceCell<Tools> = OnceCell::const_new();

/// helm and the Prometheus Operator CRDs, built or fetched once per machine (`testbed tools`).
pub(crate) async fn tools() -> &'static Tools {
    TOOLS
        .get_or_init(|| async {
            let layout = Layout::discover().unwrap_or_else(|e| panic!("{}", report::chain(&e)));
            tools::ensure(&layout)
                .await
                .unwrap_or_else(|e| panic!("helm for the chart tests: {}", report::chain(&e)))
        })
        .await
}

/// The chart's directory.
pub(crate) fn chart() -> String {
    format!("{REPO}/charts/switchboard-operator")
}

async fn run_helm(bed: &TestBed, args: &[&str]) -> std::process::Output {
    tools()
        .await
        .helm_command(bed.kubeconfig())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("helm runs")
}

/// Runs helm against the bed; returns (success, stdout + stderr).
pub(crate) async fn helm(bed: &TestBed, args: &[&str]) -> (bool, String) {
    let out = run_helm(bed, args).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Runs helm; fails the test with its output unless it succeeds. Returns standard output only.
pub(crate) async fn helm_ok(bed: &TestBed, args: &[&str]) -> String {
    let out = run_helm(bed, args).await;
    assert!(
        out.status.success(),
        "helm {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `helm template` of release `release` in `namespace` with `--set` of each of `sets`, by (kind, name).
async fn render(
    release: &str,
    namespace: &str,
    sets: &[&str],
) -> BTreeMap<(String, String), Value> {
    let chart = chart();
    let mut args = vec!["template", release, &chart, "--namespace", namespace];
    for set in sets {
        args.extend(["--set", set]);
    }
    objects(yaml_documents(&helm_ok(bed().await, &args).await))
}

/// Objects by (kind, name), Helm's own labels removed.
fn objects(docs: Vec<Value>) -> BTreeMap<(String, String), Value> {
    docs.into_iter()
        .filter(|d| !d.is_null())
        .map(|mut d| {
            for meta in ["/metadata/labels", "/spec/template/metadata/labels"] {
                if let Some(labels) = d.pointer_mut(meta).and_then(Value::as_object_mut) {
                    for label in HELM_LABELS {
                        labels.remove(label);
                    }
                }
            }
            let key = (
                d["kind"].as_str().unwrap_or_default().to_owned(),
                d["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
            (key, d)
        })
        .collect()
}

/// Every object of `manifests` equals the chart's object of the same kind and name, and the chart has no
/// other object.
fn assert_same_objects(
    chart: &BTreeMap<(String, String), Value>,
    manifests: &BTreeMap<(String, String), Value>,
) {
    assert_eq!(
        chart.keys().collect::<Vec<_>>(),
        manifests.keys().collect::<Vec<_>>(),
        "the chart and manifests/ render different objects"
    );
    for (key, want) in manifests {
        assert_eq!(
            &chart[key], want,
            "{key:?} differs between the chart and manifests/"
        );
    }
}

#[tokio::test]
async fn the_chart_lints_clean_and_refuses_values_that_cannot_work() {
    let bed = bed().await;
    let chart = chart();
    helm_ok(bed, &["lint", "--strict", &chart]).await;
    helm_ok(
        bed,
        &[
            "lint",
            "--strict",
            &chart,
            "--set",
            "rbac.scope=namespace,metrics.serviceMonitor.enabled=true,prometheusRule.enabled=true",
        ],
    )
    .await;
    // Values that cannot work are refused with a message saying why: by the values schema (a typo, a
    // value out of its set), or by the templates (at render time: lint only logs a template's `fail`).
    for (set, message) in [
        (
            "rbac.scope=everywhere",
            "'/rbac/scope': value must be one of 'cluster', 'namespace'",
        ),
        ("imagee.tag=1", "additional properties 'imagee' not allowed"),
        ("resync=10", "/resync"),
        (
            "leaderElection.enabled=false",
            "replicas > 1 needs leaderElection.enabled",
        ),
        (
            "metrics.service.enabled=false,metrics.serviceMonitor.enabled=true",
            "metrics.serviceMonitor.enabled needs metrics.service.enabled",
        ),
    ] {
        let (ok, out) = helm(bed, &["template", &chart, "--set", set]).await;
        assert!(!ok && out.contains(message), "{set}: {out}");
    }
}

#[tokio::test]
async fn every_value_reaches_the_operator_as_a_flag_it_defines() {
    let objects = render(
        "sb",
        "ops",
        &[
            "image.repository=registry.example/operator,image.tag=1.2.3,replicas=1",
            "leaderElection.enabled=false,watchNamespace=chat,clusterDomain=corp.local,resync=30s",
            "resources.limits.memory=512Mi,logFormat=text",
            "leaderElection.leaseName=ops-lease,leaderElection.leaseDuration=20s",
        ],
    )
    .await;
    let deployment = &objects[&(
        "Deployment".to_owned(),
        "sb-switchboard-operator".to_owned(),
    )];
    assert_eq!(deployment["spec"]["replicas"], 1);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.example/operator:1.2.3");
    assert_eq!(container["resources"]["limits"]["memory"], "512Mi");
    assert_eq!(
        container["args"],
        serde_json::json!(["--log-format", "text"])
    );
    let env: BTreeMap<&str, &Value> = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| (e["name"].as_str().unwrap_or_default(), &e["value"]))
        .collect();
    for (name, value) in [
        ("SWITCHBOARD_WATCH_NAMESPACE", "chat"),
        ("SWITCHBOARD_LEADER_ELECT", "false"),
        ("SWITCHBOARD_CLUSTER_DOMAIN", "corp.local"),
        ("SWITCHBOARD_RESYNC", "30s"),
        ("SWITCHBOARD_LEASE_NAME", "ops-lease"),
        ("SWITCHBOARD_LEASE_DURATION", "20s"),
    ] {
        assert_eq!(
            env.get(name).and_then(|v| v.as_str()),
            Some(value),
            "{name}"
        );
    }
    // Without leader election there is no Lease to grant.
    assert!(
        !objects
            .keys()
            .any(|(kind, name)| kind == "Role" && name.ends_with("leader-election"))
    );
    // Every variable the chart can set is one the operator binary reads.
    let flags: std::collections::BTreeSet<String> =
        <operator::server::Args as clap::CommandFactory>::command()
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .collect();
    for name in env.keys() {
        assert!(
            flags.contains(*name) || *name == "POD_NAMESPACE",
            "{name} is no flag of the operator"
        );
    }
}

#[tokio::test]
async fn the_chart_with_default_values_renders_exactly_the_cluster_wide_manifests() {
    let chart = render(RELEASE, "switchboard-system", &[]).await;
    let mut manifests = documents("manifests/10-rbac.yaml");
    manifests.extend(documents("manifests/20-operator.yaml"));
    let manifests = objects(manifests);
    // manifests/00-namespace.yaml is the one object a chart leaves to `helm install --create-namespace`.
    let namespace = documents("manifests/00-namespace.yaml");
    assert_eq!(namespace.len(), 1);
    assert_eq!(namespace[0]["kind"], "Namespace");
    assert_same_objects(&chart, &manifests);
}

#[tokio::test]
async fn the_chart_scoped_to_a_namespace_renders_the_namespaced_manifests() {
    let bed = bed().await;
    let kustomized = kubectl_ok(
        bed,
        &["kustomize", &format!("{REPO}/manifests/namespaced")],
        None,
    )
    .await;
    // manifests/namespaced/kustomization.yaml installs into namespace "chat".
    let chart = render(RELEASE, "chat", &["rbac.scope=namespace"]).await;
    assert_same_objects(&chart, &objects(yaml_documents(&kustomized)));
}

#[tokio::test]
async fn a_chart_installed_operator_makes_a_chat_cluster_ready() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-helm").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    helm_ok(
        bed,
        &[
            "install",
            RELEASE,
            &chart(),
            "--namespace",
            n,
            "--set",
            "rbac.scope=namespace",
            "--wait",
            "--timeout",
            "120s",
        ],
    )
    .await;
    let operator = ChartOperator::start(bed, &client, n, RELEASE).await;
    let redis = RedisServer::start().await.expect("redis-server");
    create_cluster(
        &client,
        n,
        ChatCluster::test("chat")
            .with_nodes(1)
            .with_external_url(&redis.url()),
    )
    .await;
    wait_condition(&client, n, "chat", "Ready", "True").await;
    // It was the chart's operator: it leads on the Lease in its namespace under its pod's name.
    let leases: Api<Lease> = Api::namespaced(client.clone(), n);
    let lease = leases.get("switchboard-operator").await.expect("the Lease");
    let holder = lease.spec.and_then(|s| s.holder_identity);
    assert_eq!(holder.as_deref(), Some(operator.pod.as_str()));
    helm_ok(bed, &["uninstall", RELEASE, "--namespace", n, "--wait"]).await;
}

/// The operator container of a chart-installed Deployment, run as a local process with that
/// container's args and env, acting as the pod's ServiceAccount. Stopped (killed) when dropped; its log
/// is printed if the test failed.
pub(crate) struct ChartOperator {
    child: tokio::process::Child,
    dir: PathBuf,
    /// The pod whose identity (`POD_NAME`) the process has.
    pub(crate) pod: String,
}

impl ChartOperator {
    /// Runs the container of Deployment `name` in `ns`.
    pub(crate) async fn start(bed: &TestBed, client: &Client, ns: &str, name: &str) -> Self {
        let deployment = Api::<Deployment>::namespaced(client.clone(), ns)
            .get(name)
            .await
            .expect("the chart's Deployment");
        let spec = deployment.spec;
        let selector = spec
            .selector
            .match_labels
            .unwrap_or_default()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let pod = eventually("a pod of the chart's Deployment", TIMEOUT, || async {
            let list = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .ok()?;
            list.items.first().map(ResourceExt::name_any)
        })
        .await;
        let pod_spec = spec.template.spec.expect("pod spec");
        let account = format!(
            "system:serviceaccount:{ns}:{}",
            pod_spec.service_account_name.expect("a ServiceAccount")
        );
        let container = &pod_spec.containers[0];

        let dir = std::env::temp_dir().join(format!("switchboard-chart-operator-{ns}"));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        let mut kubeconfig = Kubeconfig::read_from(bed.kubeconfig()).expect("kubeconfig");
        for named in &mut kubeconfig.auth_infos {
            if let Some(auth) = named.auth_info.as_mut() {
                auth.impersonate = Some(account.clone());
            }
        }
        let kubeconfig_path = dir.join("kubeconfig.yaml");
        std::fs::write(
            &kubeconfig_path,
            serde_yaml::to_string(&kubeconfig).expect("kubeconfig as YAML"),
        )
        .expect("write kubeconfig");

        let bin = e2e::topology::bin_dir(&["operator"])
            .unwrap_or_else(|e| panic!("{}: cargo build -p operator", report::chain(&e)));
        let mut cmd = tokio::process::Command::new(bin.join("operator"));
        cmd.args(container.args.iter().flatten());
        for var in container.env.iter().flatten() {
            let field = var
                .value_from
                .as_ref()
                .and_then(|v| v.field_ref.as_ref())
                .map(|f| f.field_path.as_str());
            let value = match (var.value.as_deref(), field) {
                (Some(value), _) => value.to_owned(),
                (None, Some("metadata.name")) => pod.clone(),
                (None, Some("metadata.namespace")) => ns.to_owned(),
                other => panic!("env {} of the chart's container: {other:?}", var.name),
            };
            cmd.env(&var.name, value);
        }
        let log = std::fs::File::create(dir.join("operator.log")).expect("log file");
        let child = cmd
            .env("KUBECONFIG", &kubeconfig_path)
            // The pod's 0.0.0.0:8080 is the pod's own network; here only loopback, on a free port.
            .env("SWITCHBOARD_OPERATOR_LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("the operator binary starts");
        Self { child, dir, pod }
    }
}

impl Drop for ChartOperator {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("operator.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("chart operator log (last lines):");
            for line in tail.iter().rev() {
                eprintln!("  {line}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
