//! The test fixture: one cluster per test process, one namespace per test.
//!
//! ```text
//! TestBed::shared()  ── KUBECONFIG set? ──yes──▶ use that cluster as it is (kind, the bed, …)
//!        │ no
//!        ▼
//!   build/reuse binaries ─▶ up("e2e-<pid>") ─▶ a reaper deletes it when this process exits
//!
//! bed.namespace("deploy") ─▶ namespace "deploy-3fa9c1" (+ its default ServiceAccount)
//!        dropped ─▶ namespace (and any CRDs handed to it) deleted
//! ```
//!
//! Each `#[tokio::test]` has its own runtime, and a `kube::Client` belongs to the
//! runtime that made it, so the shared state keeps only the client configuration
//! and every test gets a fresh client from [`TestBed::client`].

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, PostParams};
use tokio::sync::OnceCell;

use super::binaries::{self, Binaries};
use super::cluster::{self, ClusterSpec};
use super::versions::Layout;
use super::{Error, Result};

/// Prefix of the clusters that test processes start, followed by the process id.
const TEST_CLUSTER_PREFIX: &str = "e2e-";

/// Where a test process's cluster came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The cluster `KUBECONFIG` names; nothing about it is assumed.
    Kubeconfig,
    /// A test bed cluster this process started (kwok simulates nodes and pods).
    Local {
        /// Its kwokctl name.
        name: String,
    },
}

/// The cluster the tests of this process share.
#[derive(Debug, Clone)]
pub struct TestBed {
    origin: Origin,
    kubeconfig: PathBuf,
    config: kube::Config,
    kubectl: PathBuf,
}

static SHARED: OnceCell<Result<TestBed, String>> = OnceCell::const_new();

impl TestBed {
    /// The cluster of this test process: the one `KUBECONFIG` names, else a test bed
    /// started now (built first if needed) and deleted when the process exits.
    ///
    /// Fails with one line naming what is missing (the Go toolchain, a module the
    /// proxy refused, …) for every test that asks, so suites fail rather than skip.
    pub async fn shared() -> Result<&'static TestBed> {
        let shared = SHARED
            .get_or_init(|| async {
                Self::start()
                    .await
                    .map_err(|e| switchboard_runtime::report::chain(&e))
            })
            .await;
        shared
            .as_ref()
            .map_err(|msg| Error::Unavailable(msg.clone()))
    }

    async fn start() -> Result<TestBed> {
        if let Some(path) = std::env::var_os("KUBECONFIG").filter(|p| !p.is_empty()) {
            let kubeconfig = first_path(&path);
            let config = cluster::config_for(&kubeconfig).await?;
            return Ok(TestBed {
                origin: Origin::Kubeconfig,
                kubectl: find_kubectl().await?,
                kubeconfig,
                config,
            });
        }
        let layout = Layout::discover()?;
        let bins = binaries::ensure_built(&layout).await?;
        reap_dead_test_clusters(&layout, &bins).await;
        let name = format!("{TEST_CLUSTER_PREFIX}{}", std::process::id());
        // Before `up`: a process killed while the cluster starts leaves nothing behind.
        if std::env::var_os("SWITCHBOARD_TESTBED_KEEP").is_none() {
            spawn_reaper(&layout, &bins, &name)?;
        }
        let cluster = cluster::up(&layout, &bins, &ClusterSpec::named(&name)).await?;
        let config = cluster::config_for(&cluster.kubeconfig).await?;
        Ok(TestBed {
            origin: Origin::Local { name },
            kubeconfig: cluster.kubeconfig,
            kubectl: bins.kubectl(),
            config,
        })
    }

    /// Where the cluster came from.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Its kubeconfig file.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A new client for the calling test's runtime.
    pub fn client(&self) -> Result<kube::Client> {
        kube::Client::try_from(self.config.clone()).map_err(Error::Kube)
    }

    /// `kubectl` (the one built with the bed when there is one) aimed at this cluster.
    pub fn kubectl(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.kubectl);
        cmd.env("KUBECONFIG", &self.kubeconfig).kill_on_drop(true);
        cmd
    }

    /// A fresh namespace called `<prefix>-<random>` for one test, deleted when dropped.
    /// Returns once its `default` ServiceAccount exists, so pods can be created in it.
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace> {
        let client = self.client()?;
        let name = format!("{prefix}-{:06x}", fastrand::u32(..0x0100_0000));
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": { "e2e.switchboard.dev/test": prefix } }
        }))
        .map_err(Error::Json)?;
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .map_err(Error::Kube)?;
        let guard = TestNamespace {
            name: name.clone(),
            config: self.config.clone(),
            crds: Mutex::new(Vec::new()),
        };
        let accounts: Api<ServiceAccount> = Api::namespaced(client, &name);
        let deadline = Instant::now() + Duration::from_secs(60);
        while accounts
            .get_opt("default")
            .await
            .map_err(Error::Kube)?
            .is_none()
        {
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "the default ServiceAccount of namespace {name}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(guard)
    }
}

/// One test's namespace; dropping it deletes the namespace and the CRDs handed to it.
#[derive(Debug)]
pub struct TestNamespace {
    name: String,
    config: kube::Config,
    crds: Mutex<Vec<String>>,
}

impl TestNamespace {
    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Delete the cluster-scoped CRD `name` together with this namespace.
    pub fn delete_crd_on_drop(&self, name: impl Into<String>) {
        if let Ok(mut crds) = self.crds.lock() {
            crds.push(name.into());
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop cannot await and the test's runtime may be unwinding, so the deletes
        // run on a small runtime of their own; they only ask, they do not wait.
        let name = std::mem::take(&mut self.name);
        let crds = self
            .crds
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default();
        let config = self.config.clone();
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(client) = kube::Client::try_from(config) else {
                    return;
                };
                let crd_api: Api<CustomResourceDefinition> = Api::all(client.clone());
                for crd in crds {
                    let _ = crd_api.delete(&crd, &DeleteParams::default()).await;
                }
                let namespaces: Api<Namespace> = Api::all(client);
                if let Err(err) = namespaces.delete(&name, &DeleteParams::background()).await {
                    tracing::warn!(namespace = %name, %err, "could not delete test namespace");
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// `SWITCHBOARD_KUBECTL`, else the cached build, else `kubectl` on `PATH`, else build it.
async fn find_kubectl() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("SWITCHBOARD_KUBECTL") {
        return Ok(PathBuf::from(path));
    }
    let layout = Layout::discover()?;
    if let Some(bins) = binaries::cached(&layout) {
        return Ok(bins.kubectl());
    }
    if let Some(path) = binaries::find_on_path("kubectl") {
        return Ok(path);
    }
    Ok(binaries::ensure_built(&layout).await?.kubectl())
}

fn first_path(list: &std::ffi::OsStr) -> PathBuf {
    std::env::split_paths(list)
        .next()
        .unwrap_or_else(|| PathBuf::from(list))
}

/// Delete test clusters whose process is gone (a crashed or killed run).
async fn reap_dead_test_clusters(layout: &Layout, bins: &Binaries) {
    for name in cluster::list(layout) {
        let Some(pid) = name.strip_prefix(TEST_CLUSTER_PREFIX) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists() {
            tracing::info!(%name, "deleting a test cluster left behind by a dead process");
            if let Err(err) = cluster::down(layout, Some(bins), &name).await {
                tracing::warn!(%name, %err, "could not delete left-over cluster");
            }
        }
    }
}

/// A detached shell that waits for this process to exit, then deletes its cluster.
/// Tests have no global teardown; this is the one place that knows when they end.
fn spawn_reaper(layout: &Layout, bins: &Binaries, name: &str) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let script = r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done; exec "$2" --name "$3" delete cluster --kubeconfig "$4""#;
    std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("switchboard-testbed-reaper")
        .arg(std::process::id().to_string())
        .arg(bins.kwokctl())
        .arg(name)
        .arg(layout.scratch_kubeconfig())
        .env("KWOK_WORKDIR", layout.kwok_workdir())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        // Its own process group: a Ctrl-C aimed at the tests does not stop the cleanup.
        .process_group(0)
        .spawn()
        .map(drop)
        .map_err(|source| Error::Io {
            context: "starting the cluster reaper".to_owned(),
            source,
        })
}
