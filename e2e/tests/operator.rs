//! The operator against a real Kubernetes control plane (the local test bed, or the cluster `KUBECONFIG`
//! names): the CRD, RBAC and example manifests are applied with `kubectl`, and the operator's controllers
//! run in this process with a client that impersonates the operator's ServiceAccount, so a permission
//! missing from `manifests/10-rbac.yaml` fails these tests. Each test has its own namespace and its own
//! controllers watching only that namespace.
//!
//! Pods on the bed are simulated (nothing listens in them), so every scenario where the operator talks to
//! Redis uses External mode pointed at real local `redis-server` / `redis-sentinel` processes
//! (`switchboard_testkit`). Only `testbed::sim` calls (readiness flips) touch simulation.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::testbed::{TestBed, TestNamespace, sim};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, ResourceExt};
use operator::crd::ChatCluster;
use operator::leader::LeaseConfig;
use operator::metrics::Metrics;
use operator::reconcile::PAUSED_ANNOTATION;
use operator::server::{Settings, run_controllers, run_with_leader_election};
use serde_json::json;
use switchboard_loadset::LoadSet;
use switchboard_redis::keys::Keys;
use switchboard_testkit::{RedisServer, Sentinel};
use tokio::io::AsyncWriteExt;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(90);
const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const OPERATOR_SA: &str = "system:serviceaccount:switchboard-system:switchboard-operator";
/// The load set must follow readiness within this (the "within a second").
const FOLLOW: Duration = Duration::from_secs(1);

async fn bed() -> &'static TestBed {
    match TestBed::shared().await {
        Ok(bed) => bed,
        Err(err) => panic!("{err}"),
    }
}

/// Runs kubectl; returns (success, stdout + stderr).
async fn kubectl(bed: &TestBed, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut cmd = bed.kubectl();
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("kubectl starts");
    if let Some(mut pipe) = child.stdin.take() {
        if let Some(input) = stdin {
            pipe.write_all(input.as_bytes()).await.expect("write stdin");
        }
        drop(pipe);
    }
    let out = child.wait_with_output().await.expect("kubectl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn kubectl_ok(bed: &TestBed, args: &[&str], stdin: Option<&str>) -> String {
    let (ok, out) = kubectl(bed, args, stdin).await;
    assert!(ok, "kubectl {args:?} failed: {out}");
    out
}

static INSTALLED: OnceCell<()> = OnceCell::const_new();

/// `kubectl apply` of `crds/` and the operator's namespace and RBAC, once per test process.
async fn install(bed: &TestBed) {
    INSTALLED
        .get_or_init(|| async {
            let crds = format!("{REPO}/crds");
            let ns = format!("{REPO}/manifests/00-namespace.yaml");
            let rbac = format!("{REPO}/manifests/10-rbac.yaml");
            kubectl_ok(
                bed,
                &[
                    "apply",
                    "--server-side",
                    "--force-conflicts",
                    "-f",
                    &crds,
                    "-f",
                    &ns,
                    "-f",
                    &rbac,
                ],
                None,
            )
            .await;
            kubectl_ok(
                bed,
                &[
                    "wait",
                    "--for=condition=Established",
                    "crd/chatclusters.switchboard.dev",
                    "--timeout=60s",
                ],
                None,
            )
            .await;
        })
        .await;
}

/// Operator logs in the test output (`RUST_LOG` overrides the filter).
fn logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,operator=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A client that acts as the operator's ServiceAccount (RBAC applies to it).
async fn operator_client(bed: &TestBed) -> Client {
    let kubeconfig = Kubeconfig::read_from(bed.kubeconfig()).expect("kubeconfig");
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("client config");
    config.auth_info.impersonate = Some(OPERATOR_SA.to_owned());
    Client::try_from(config).expect("impersonating client")
}

fn settings(ns: &str, identity: &str) -> Settings {
    let mut settings = Settings::new(identity);
    settings.reconcile.namespace = Some(ns.to_owned());
    settings.sync.resync = Duration::from_secs(2);
    settings.sync.redis_timeout = Duration::from_secs(2);
    settings
}

/// The operator's controllers, running until dropped.
struct Operator {
    stop: CancellationToken,
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start_operator(bed: &TestBed, ns: &str) -> Operator {
    logging();
    let client = operator_client(bed).await;
    operator::reconcile::check_crd(&client)
        .await
        .expect("the CRD is installed and the operator may read it");
    let stop = CancellationToken::new();
    tokio::spawn(run_controllers(
        client,
        settings(ns, &format!("test-{ns}")),
        Arc::new(Metrics::new()),
        stop.clone(),
    ));
    Operator { stop }
}

/// Poll `check` until it yields `Some`, panicking with `what` after `within`.
async fn eventually_within<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(what, TIMEOUT, check).await
}

async fn create_cluster(client: &Client, ns: &str, cc: ChatCluster) -> ChatCluster {
    let api: Api<ChatCluster> = Api::namespaced(client.clone(), ns);
    let mut cc = cc;
    cc.metadata.namespace = Some(ns.to_owned());
    cc.metadata.uid = None;
    cc.metadata.generation = None;
    api.create(&PostParams::default(), &cc)
        .await
        .expect("create ChatCluster")
}

fn condition(cc: &ChatCluster, type_: &str) -> Option<(String, String, String)> {
    cc.condition(type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn wait_condition(
    client: &Client,
    ns: &str,
    name: &str,
    type_: &str,
    status: &str,
) -> ChatCluster {
    let api: Api<ChatCluster> = Api::namespaced(client.clone(), ns);
    eventually(&format!("{name} {type_}={status}"), || async {
        let cc = api.get(name).await.ok()?;
        (condition(&cc, type_)?.0 == status).then_some(cc)
    })
    .await
}

fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn node_pods(client: &Client, ns: &str, name: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector =
        format!("app.kubernetes.io/instance={name},app.kubernetes.io/component=chat-node");
    pods.list(&ListParams::default().labels(&selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

async fn ready_node_pods(client: &Client, ns: &str, name: &str, count: usize) -> BTreeSet<String> {
    eventually(
        &format!("{count} ready chat-node pods of {name}"),
        || async {
            let ready: BTreeSet<String> = node_pods(client, ns, name)
                .await
                .iter()
                .filter(|p| is_ready(p))
                .map(|p| p.name_any())
                .collect();
            (ready.len() == count).then_some(ready)
        },
    )
    .await
}

async fn loadset(redis: &RedisServer, cluster_id: &str) -> LoadSet {
    let client = switchboard_redis::connect(&redis.redis_args())
        .await
        .expect("connect to the test Redis");
    LoadSet::new(client, Keys::new(cluster_id))
}

async fn members_become(ls: &LoadSet, want: &BTreeSet<String>, within: Duration, what: &str) {
    eventually_within(what, within, || async {
        let members = ls.members().await.ok()?;
        (&members == want).then_some(())
    })
    .await;
}

/// Creates an external-Redis ChatCluster `name` with `nodes` chat-nodes and waits until exactly its
/// ready pods are the load set; returns the load set and those pods.
async fn external_cluster_in_load_set(
    client: &Client,
    ns: &str,
    redis: &RedisServer,
    name: &str,
    nodes: usize,
) -> (LoadSet, BTreeSet<String>) {
    let replicas = i32::try_from(nodes).expect("a small node count");
    create_cluster(
        client,
        ns,
        ChatCluster::test(name)
            .with_nodes(replicas)
            .with_external_url(&redis.url()),
    )
    .await;
    let ls = loadset(redis, &format!("{ns}/{name}")).await;
    let pods = ready_node_pods(client, ns, name, nodes).await;
    members_become(
        &ls,
        &pods,
        Duration::from_secs(10),
        &format!("{name}: the load set = its {nodes} ready pods"),
    )
    .await;
    (ls, pods)
}

/// `kubectl scale chatcluster/demo --replicas N` through the scale subresource.
async fn scale_demo(bed: &TestBed, ns: &str, replicas: u32) {
    let replicas = replicas.to_string();
    kubectl_ok(
        bed,
        &[
            "-n",
            ns,
            "scale",
            "chatcluster/demo",
            "--replicas",
            &replicas,
        ],
        None,
    )
    .await;
}

/// Waits until the `demo` chat-node Deployment asks for `replicas` pods.
async fn demo_deployment_asks_for(client: &Client, ns: &str, replicas: i32, what: &str) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    eventually(what, || async {
        let d = deployments.get("demo-node").await.ok()?;
        (d.spec.replicas == Some(replicas)).then_some(())
    })
    .await;
}

async fn events(client: &Client, ns: &str, name: &str) -> Vec<(String, String, String)> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| {
                r.kind.as_deref() == Some("ChatCluster") && r.name.as_deref() == Some(name)
            })
        })
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect()
}

async fn wait_event(
    client: &Client,
    ns: &str,
    name: &str,
    reason: &str,
) -> (String, String, String) {
    eventually(&format!("event {reason} on {name}"), || async {
        events(client, ns, name)
            .await
            .into_iter()
            .find(|(_, r, _)| r == reason)
    })
    .await
}

async fn new_namespace(bed: &TestBed, prefix: &str) -> TestNamespace {
    install(bed).await;
    bed.namespace(prefix).await.expect("test namespace")
}

#[tokio::test]
async fn minimal_chat_cluster_gets_every_owned_object_and_becomes_ready() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-minimal").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    let _operator = start_operator(bed, n).await;

    let example = format!("{REPO}/manifests/examples/minimal.yaml");
    kubectl_ok(bed, &["apply", "-n", n, "-f", &example], None).await;
    let out = kubectl_ok(
        bed,
        &[
            "wait",
            "-n",
            n,
            "--for=condition=Ready",
            "chatcluster/chat",
            "--timeout=90s",
        ],
        None,
    )
    .await;
    assert!(out.contains("condition met"), "{out}");

    let api: Api<ChatCluster> = Api::namespaced(client.clone(), n);
    let cc = api.get("chat").await.expect("ChatCluster");
    let status = cc.status.clone().expect("status");
    assert_eq!(status.observed_generation, cc.metadata.generation);
    assert_eq!((status.nodes.ready, status.nodes.desired), (2, 2));
    assert_eq!((status.registries.ready, status.registries.desired), (2, 2));
    assert_eq!(
        (
            status.redis.data_nodes.ready,
            status.redis.data_nodes.desired
        ),
        (3, 3)
    );
    assert_eq!(
        (status.redis.sentinels.ready, status.redis.sentinels.desired),
        (3, 3)
    );
    assert_eq!(
        status.selector.as_deref(),
        Some(
            "app.kubernetes.io/component=chat-node,app.kubernetes.io/instance=chat,app.kubernetes.io/name=switchboard"
        )
    );
    assert_eq!(
        condition(&cc, "Degraded").map(|c| c.0).as_deref(),
        Some("False")
    );
    assert_eq!(
        condition(&cc, "Progressing").map(|c| c.0).as_deref(),
        Some("False")
    );

    // Every owned object exists and is controlled by the ChatCluster.
    let uid = cc.metadata.uid.clone().expect("uid");
    let controlled = |meta: &kube::api::ObjectMeta| {
        meta.owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == uid && o.controller == Some(true))
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), n);
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), n);
    let services: Api<Service> = Api::namespaced(client.clone(), n);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), n);
    let configs: Api<ConfigMap> = Api::namespaced(client.clone(), n);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), n);
    for name in ["chat-node", "chat-registry"] {
        assert!(controlled(
            &deployments.get(name).await.expect(name).metadata
        ));
        assert!(controlled(&services.get(name).await.expect(name).metadata));
        assert!(controlled(&pdbs.get(name).await.expect(name).metadata));
    }
    for name in ["chat-redis", "chat-sentinel"] {
        assert!(controlled(&sets.get(name).await.expect(name).metadata));
        assert!(controlled(&pdbs.get(name).await.expect(name).metadata));
    }
    for name in ["chat-redis-headless", "chat-sentinel-headless"] {
        let svc = services.get(name).await.expect(name);
        assert!(controlled(&svc.metadata));
        assert_eq!(svc.spec.and_then(|s| s.cluster_ip).as_deref(), Some("None"));
    }
    assert!(controlled(
        &configs
            .get("chat-redis-scripts")
            .await
            .expect("scripts")
            .metadata
    ));
    let secret = secrets
        .get("chat-redis-auth")
        .await
        .expect("password Secret");
    assert!(controlled(&secret.metadata));
    let password = secret.data.clone().expect("data")["password"].0.clone();
    assert_eq!(password.len(), 64);

    // Reconciles never rotate the password; changing it rolls the pods (new template hash).
    let hash = |d: &Deployment| {
        d.spec
            .template
            .metadata
            .clone()
            .and_then(|m| m.annotations)
            .unwrap_or_default()["switchboard.dev/config-hash"]
            .clone()
    };
    let before = hash(&deployments.get("chat-node").await.expect("deployment"));
    let patch = json!({ "stringData": { "password": "a-new-password" } });
    secrets
        .patch(
            "chat-redis-auth",
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
        .expect("change password");
    let after = eventually("the chat-node template hash changes", || async {
        let h = hash(&deployments.get("chat-node").await.ok()?);
        (h != before).then_some(h)
    })
    .await;
    assert_ne!(before, after);
    let secret = secrets.get("chat-redis-auth").await.expect("Secret");
    assert_eq!(secret.data.expect("data")["password"].0, b"a-new-password");

    let (type_, _, note) = wait_event(&client, n, "chat", "Created").await;
    assert_eq!(type_, "Normal");
    assert!(note.contains("2 socket servers"), "{note}");
    wait_event(&client, n, "chat", "PasswordGenerated").await;
}

#[tokio::test]
async fn production_example_is_accepted_and_rendered() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-prod").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    let _operator = start_operator(bed, n).await;
    let example = format!("{REPO}/manifests/examples/production.yaml");
    kubectl_ok(bed, &["apply", "-n", n, "-f", &example], None).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), n);
    let d = eventually("chat-prod-node", || async {
        deployments.get("chat-prod-node").await.ok()
    })
    .await;
    assert_eq!(d.spec.replicas, Some(6));
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), n);
    let redis = eventually("chat-prod-redis", || async {
        sets.get("chat-prod-redis").await.ok()
    })
    .await;
    assert!(redis.spec.volume_claim_templates.is_some());
    let sentinels = sets.get("chat-prod-sentinel").await.expect("sentinels");
    assert_eq!(sentinels.spec.replicas, Some(5));
    let services: Api<Service> = Api::namespaced(client.clone(), n);
    let svc = services
        .get("chat-prod-registry")
        .await
        .expect("registry service");
    assert_eq!(
        svc.spec.and_then(|s| s.type_).as_deref(),
        Some("LoadBalancer")
    );
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
}

#[tokio::test]
async fn missing_password_secret_is_degraded_with_an_actionable_message() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-degraded").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    let redis = RedisServer::start_with_password("s3cret")
        .await
        .expect("redis-server");
    let _operator = start_operator(bed, n).await;
    let cc = ChatCluster::test("ext")
        .with_external_url(&format!("redis://127.0.0.1:{}", redis.port()))
        .with_password_secret("redis-pw", "password");
    create_cluster(&client, n, cc).await;

    let cc = wait_condition(&client, n, "ext", "Degraded", "True").await;
    let (_, reason, message) = condition(&cc, "Degraded").expect("Degraded");
    assert_eq!(reason, "PasswordSecretNotFound");
    assert!(
        message.contains("create secret generic redis-pw"),
        "{message}"
    );
    assert_eq!(
        condition(&cc, "Ready").map(|c| c.0).as_deref(),
        Some("False")
    );
    let (type_, _, note) = wait_event(&client, n, "ext", "Degraded").await;
    assert_eq!(type_, "Warning");
    assert!(note.contains("redis-pw"), "{note}");

    // Doing what the message says heals it.
    kubectl_ok(
        bed,
        &[
            "-n",
            n,
            "create",
            "secret",
            "generic",
            "redis-pw",
            "--from-literal=password=s3cret",
        ],
        None,
    )
    .await;
    let cc = wait_condition(&client, n, "ext", "Degraded", "False").await;
    assert_eq!(
        condition(&cc, "Degraded").map(|c| c.1).as_deref(),
        Some("AsExpected")
    );
    wait_condition(&client, n, "ext", "Ready", "True").await;
    wait_event(&client, n, "ext", "Recovered").await;
}

#[tokio::test]
async fn kubectl_scale_drives_the_deployment_and_the_status() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-scale").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    let _operator = start_operator(bed, n).await;
    create_cluster(&client, n, ChatCluster::test("demo").with_nodes(2)).await;
    wait_condition(&client, n, "demo", "Ready", "True").await;

    scale_demo(bed, n, 5).await;
    demo_deployment_asks_for(&client, n, 5, "the Deployment follows to 5").await;
    let api: Api<ChatCluster> = Api::namespaced(client.clone(), n);
    eventually("status.nodes.ready = 5", || async {
        let cc = api.get("demo").await.ok()?;
        let s = cc.status?;
        (s.nodes.ready == 5 && s.nodes.desired == 5).then_some(())
    })
    .await;
    // The scale subresource reads the same numbers back.
    let out = kubectl_ok(
        bed,
        &[
            "-n",
            n,
            "get",
            "--subresource=scale",
            "chatcluster/demo",
            "-o",
            "jsonpath={.spec.replicas}/{.status.replicas}/{.status.selector}",
        ],
        None,
    )
    .await;
    assert!(
        out.starts_with("5/5/app.kubernetes.io/component=chat-node"),
        "{out}"
    );
    let (_, _, note) = wait_event(&client, n, "demo", "Scaled").await;
    assert!(note.contains("from 2 to 5"), "{note}");
}

#[tokio::test]
async fn load_set_follows_pod_readiness_and_resync_repairs_drift() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-loadset").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    let redis = RedisServer::start().await.expect("redis-server");
    let _operator = start_operator(bed, n).await;
    let (ls, ready) = external_cluster_in_load_set(&client, n, &redis, "demo", 3).await;

    // Not ready -> out; ready again -> in; each within a second.
    let victim = ready.iter().next().cloned().expect("a pod");
    sim::set_pod_ready(&client, n, &victim, false)
        .await
        .expect("not ready");
    let mut without = ready.clone();
    without.remove(&victim);
    members_become(&ls, &without, FOLLOW, "a not-ready pod leaves the load set").await;
    sim::set_pod_ready(&client, n, &victim, true)
        .await
        .expect("ready");
    members_become(&ls, &ready, FOLLOW, "a ready-again pod rejoins").await;

    // Gone -> out at once; its replacement joins once ready.
    sim::remove_pod_now(&client, n, &victim)
        .await
        .expect("delete pod");
    eventually_within("the deleted pod leaves the load set", FOLLOW, || async {
        let members = ls.members().await.ok()?;
        (!members.contains(&victim)).then_some(())
    })
    .await;
    let replaced = eventually("a replacement pod", || async {
        let now = ready_node_pods(&client, n, "demo", 3).await;
        (!now.contains(&victim)).then_some(now)
    })
    .await;
    members_become(
        &ls,
        &replaced,
        Duration::from_secs(5),
        "the replacement joins",
    )
    .await;

    // Drift by hand is repaired by the periodic resync (2 s here).
    ls.add_member("ghost-pod").await.expect("add by hand");
    let gone = replaced.iter().next().cloned().expect("a member");
    ls.remove_member(&gone).await.expect("remove by hand");
    members_become(
        &ls,
        &replaced,
        Duration::from_secs(6),
        "the resync repairs drift",
    )
    .await;

    let api: Api<ChatCluster> = Api::namespaced(client.clone(), n);
    eventually(
        "status.loadSetMembers = 3 and the master reported",
        || async {
            let s = api.get("demo").await.ok()?.status?;
            (s.load_set_members == Some(3)
                && s.redis.current_master == Some(format!("127.0.0.1:{}", redis.port())))
            .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn two_chat_clusters_never_see_each_others_members_and_deletion_cleans_up() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-two").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    let redis = RedisServer::start().await.expect("redis-server");
    let _operator = start_operator(bed, n).await;
    let (_alpha, alpha_pods) = external_cluster_in_load_set(&client, n, &redis, "alpha", 2).await;
    let (beta, beta_pods) = external_cluster_in_load_set(&client, n, &redis, "beta", 3).await;
    assert!(alpha_pods.is_disjoint(&beta_pods));

    // The finalizer is there (External mode); deleting alpha removes its objects and keys only.
    let api: Api<ChatCluster> = Api::namespaced(client.clone(), n);
    let cc = api.get("alpha").await.expect("alpha");
    assert!(
        cc.finalizers()
            .iter()
            .any(|f| f == operator::loadset_sync::FINALIZER)
    );
    api.delete("alpha", &DeleteParams::background())
        .await
        .expect("delete alpha");
    eventually("alpha is gone", || async {
        api.get_opt("alpha").await.ok()?.is_none().then_some(())
    })
    .await;
    let prefix = Keys::new(&format!("{n}/alpha")).scan_pattern();
    let keys = redis.command(&["KEYS", &prefix]).await.expect("KEYS");
    assert!(keys.items().is_empty(), "alpha's keys remain: {keys:?}");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), n);
    let services: Api<Service> = Api::namespaced(client.clone(), n);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), n);
    eventually("the garbage collector deletes alpha's objects", || async {
        let gone = deployments.get_opt("alpha-node").await.ok()?.is_none()
            && deployments.get_opt("alpha-registry").await.ok()?.is_none()
            && services.get_opt("alpha-node").await.ok()?.is_none()
            && pdbs.get_opt("alpha-node").await.ok()?.is_none()
            && node_pods(&client, n, "alpha").await.is_empty();
        gone.then_some(())
    })
    .await;
    assert_eq!(beta.members().await.expect("beta members"), beta_pods);
    assert!(
        deployments
            .get_opt("beta-node")
            .await
            .expect("get")
            .is_some()
    );
}

#[tokio::test]
async fn scale_down_removes_the_least_loaded_pods_first() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-cost").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    let redis = RedisServer::start().await.expect("redis-server");
    let _operator = start_operator(bed, n).await;
    let (ls, pods) = external_cluster_in_load_set(&client, n, &redis, "demo", 4).await;

    // Connection counts as the nodes would report them: two busy, two nearly idle.
    let loads: BTreeMap<String, u64> = pods.iter().cloned().zip([900, 3, 700, 5]).collect();
    for (pod, load) in &loads {
        assert!(
            ls.update_score(pod, *load).await.expect("score"),
            "{pod} is a member"
        );
    }
    eventually(
        "pod-deletion-cost = connection count on every pod",
        || async {
            let all = node_pods(&client, n, "demo").await;
            all.iter()
                .all(|p| {
                    p.annotations()
                        .get(operator::loadset_sync::POD_DELETION_COST)
                        == loads.get(&p.name_any()).map(u64::to_string).as_ref()
                })
                .then_some(())
        },
    )
    .await;

    let api: Api<ChatCluster> = Api::namespaced(client.clone(), n);
    api.patch(
        "demo",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "nodes": { "replicas": 2 } } })),
    )
    .await
    .expect("scale down");
    let busy: BTreeSet<String> = loads
        .iter()
        .filter(|(_, l)| **l > 100)
        .map(|(p, _)| p.clone())
        .collect();
    eventually(
        "the ReplicaSet controller keeps the two busy pods",
        || async {
            let left: BTreeSet<String> = node_pods(&client, n, "demo")
                .await
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .map(|p| p.name_any())
                .collect();
            (left == busy).then_some(())
        },
    )
    .await;
    members_become(
        &ls,
        &busy,
        Duration::from_secs(5),
        "the load set keeps the busy pods",
    )
    .await;
}

#[tokio::test]
async fn pause_annotation_stops_reconciling_until_removed() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-pause").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    let _operator = start_operator(bed, n).await;
    create_cluster(&client, n, ChatCluster::test("demo").with_nodes(2)).await;
    wait_condition(&client, n, "demo", "Ready", "True").await;

    kubectl_ok(
        bed,
        &[
            "-n",
            n,
            "annotate",
            "chatcluster/demo",
            &format!("{PAUSED_ANNOTATION}=true"),
        ],
        None,
    )
    .await;
    let cc = eventually("Progressing=False/Paused", || async {
        let api: Api<ChatCluster> = Api::namespaced(client.clone(), n);
        let cc = api.get("demo").await.ok()?;
        (condition(&cc, "Progressing")?.1 == "Paused").then_some(cc)
    })
    .await;
    assert!(
        condition(&cc, "Progressing")
            .expect("condition")
            .2
            .contains(PAUSED_ANNOTATION)
    );
    scale_demo(bed, n, 4).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), n);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let d = deployments.get("demo-node").await.expect("deployment");
    assert_eq!(
        d.spec.replicas,
        Some(2),
        "a paused ChatCluster was reconciled"
    );

    kubectl_ok(
        bed,
        &[
            "-n",
            n,
            "annotate",
            "chatcluster/demo",
            &format!("{PAUSED_ANNOTATION}-"),
        ],
        None,
    )
    .await;
    demo_deployment_asks_for(&client, n, 4, "the Deployment follows once resumed").await;
}

#[tokio::test]
async fn current_master_comes_from_real_sentinels_and_a_failover_is_announced() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-master").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    let master = RedisServer::start().await.expect("master");
    let replica = RedisServer::builder()
        .replica_of(&master)
        .start()
        .await
        .expect("replica");
    replica
        .wait_for_sync(Duration::from_secs(20))
        .await
        .expect("replica synced");
    let sentinel = Sentinel::builder(&master).start().await.expect("sentinel");
    let _operator = start_operator(bed, n).await;
    let addr = sentinel.addr();
    create_cluster(
        &client,
        n,
        ChatCluster::test("demo")
            .with_nodes(1)
            .with_external_sentinels(&[addr.as_str()], sentinel.master_name()),
    )
    .await;
    let api: Api<ChatCluster> = Api::namespaced(client.clone(), n);
    let master_addr = format!("127.0.0.1:{}", master.port());
    eventually("status.redis.currentMaster = the master", || async {
        let s = api.get("demo").await.ok()?.status?;
        (s.redis.current_master.as_deref() == Some(master_addr.as_str())).then_some(())
    })
    .await;

    let reply = switchboard_testkit::command(
        sentinel.port(),
        None,
        &["SENTINEL", "FAILOVER", sentinel.master_name()],
    )
    .await
    .expect("SENTINEL FAILOVER");
    assert_eq!(reply.as_str(), Some("OK"), "{reply:?}");
    let replica_addr = format!("127.0.0.1:{}", replica.port());
    eventually("status follows the failover", || async {
        let s = api.get("demo").await.ok()?.status?;
        (s.redis.current_master.as_deref() == Some(replica_addr.as_str())).then_some(())
    })
    .await;
    let (_, _, note) = wait_event(&client, n, "demo", "MasterChanged").await;
    assert!(
        note.contains(&master_addr) && note.contains(&replica_addr),
        "{note}"
    );
}

/// One operator replica campaigning on `lease`; aborting the task is a crash (no Lease release).
async fn spawn_elected(
    bed: &TestBed,
    ns: &str,
    identity: &str,
    lease: LeaseConfig,
) -> tokio::task::JoinHandle<Result<(), operator::server::Error>> {
    logging();
    let client = operator_client(bed).await;
    tokio::spawn(run_with_leader_election(
        client,
        settings(ns, identity),
        Arc::new(Metrics::new()),
        lease,
        CancellationToken::new(),
    ))
}

#[tokio::test]
async fn one_operator_leads_on_the_lease_and_a_standby_takes_over_when_it_dies() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-leader").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    let lease_name = format!("switchboard-operator-{n}");
    let lease_config = |identity: &str| {
        let mut c = LeaseConfig::new("switchboard-system", &lease_name, identity);
        c.lease_duration = Duration::from_secs(4);
        c.renew_interval = Duration::from_secs(1);
        c.retry_interval = Duration::from_millis(500);
        c
    };
    let first = spawn_elected(bed, n, "operator-a", lease_config("operator-a")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = spawn_elected(bed, n, "operator-b", lease_config("operator-b")).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "switchboard-system");
    let holder = |l: Lease| l.spec.and_then(|s| s.holder_identity).unwrap_or_default();
    let leader = eventually("a leader", || async {
        let h = holder(leases.get(&lease_name).await.ok()?);
        (!h.is_empty()).then_some(h)
    })
    .await;
    assert_eq!(leader, "operator-a");
    create_cluster(&client, n, ChatCluster::test("demo").with_nodes(1)).await;
    wait_condition(&client, n, "demo", "Ready", "True").await;

    // Kill the leader (no release: its future is dropped, as in a crash); the standby takes over.
    first.abort();
    let killed = Instant::now();
    eventually_within(
        "the standby takes the Lease",
        Duration::from_secs(10),
        || async { (holder(leases.get(&lease_name).await.ok()?) == "operator-b").then_some(()) },
    )
    .await;
    let took = killed.elapsed();
    assert!(
        took <= Duration::from_secs(4) + Duration::from_secs(2),
        "takeover took {took:?}"
    );
    scale_demo(bed, n, 3).await;
    demo_deployment_asks_for(&client, n, 3, "the new leader reconciles").await;
    second.abort();
    let _ = leases.delete(&lease_name, &DeleteParams::default()).await;
}

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
async fn an_object_the_api_server_refuses_degrades_the_chat_cluster() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-invalid").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    let _operator = start_operator(bed, n).await;
    // The CRD cannot know Kubernetes' label-value syntax; the API server refuses the owned objects.
    create_cluster(
        &client,
        n,
        ChatCluster::test("demo")
            .with_nodes(1)
            .with_label("team", "not a valid value!"),
    )
    .await;
    let cc = wait_condition(&client, n, "demo", "Degraded", "True").await;
    let (_, reason, message) = condition(&cc, "Degraded").expect("Degraded");
    assert_eq!(reason, "InvalidSpec");
    assert!(message.contains("fix the ChatCluster spec"), "{message}");
    assert!(message.contains("not a valid value!"), "{message}");
    let api: Api<ChatCluster> = Api::namespaced(client.clone(), n);
    api.patch(
        "demo",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "labels": { "team": "chat" } } })),
    )
    .await
    .expect("fix the label");
    wait_condition(&client, n, "demo", "Ready", "True").await;
}

#[tokio::test]
async fn rbac_grants_no_wildcards() {
    let text = std::fs::read_to_string(format!("{REPO}/manifests/10-rbac.yaml")).expect("rbac");
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
