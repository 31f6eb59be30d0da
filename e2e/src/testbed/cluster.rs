//! Named local clusters: kwokctl's `binary` runtime started from the cached binaries.
//!
//! ```text
//! up(name) ─▶ down(name) if a left-over cluster of that name exists
//!          ─▶ kwokctl create cluster (config: local binaries, loopback, RBAC, free ports)
//!               etcd ─ kube-apiserver ─ kube-controller-manager ─ kube-scheduler ─ kwok
//!          ─▶ wait for the API server, create the simulated Nodes, wait until they are Ready
//!          ─▶ <cache>/testbed/kwok/clusters/<name>/kubeconfig.yaml
//! ```
//!
//! kwokctl issues the PKI and the kubeconfig, chooses free ports and records
//! every component's pid in the cluster's directory, which is how [`down`] finds a
//! cluster that a crashed run left behind.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ListParams, PostParams};
use tokio::process::Command;

use super::binaries::Binaries;
use super::versions::Layout;
use super::{Error, Result};

/// How long a cluster may take from `kwokctl create` to Ready nodes.
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// The annotation kwok's documentation gives simulated nodes. kwok here manages all
/// nodes, so the annotation only tells a human what they are — except in a cluster
/// that a real kubelet joins, where kwok manages only the nodes that carry it.
const FAKE_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";

/// A running local cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Its kwokctl name.
    pub name: String,
    /// The admin kubeconfig kwokctl wrote for it.
    pub kubeconfig: PathBuf,
    /// Its directory (pids, logs, PKI, etcd data).
    pub dir: PathBuf,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// The kwokctl cluster name.
    pub name: String,
    /// How many simulated nodes to create.
    pub nodes: usize,
    /// Changes to the control plane for a cluster that real kubelets join (none by default).
    pub control_plane: ControlPlaneExtras,
}

/// What a control plane needs beyond kwokctl's defaults when real nodes join it
/// (see `real`): the Service range, the address the `kubernetes` Service points at,
/// names in the serving certificate, and kwok kept off nodes it does not simulate.
#[derive(Debug, Clone, Default)]
pub struct ControlPlaneExtras {
    /// `--service-cluster-ip-range` of the API server.
    pub service_cidr: Option<String>,
    /// `--advertise-address` of the API server: the endpoint of the `kubernetes` Service.
    pub advertise_address: Option<String>,
    /// Extra subject alternative names of the API server's certificate.
    pub cert_sans: Vec<String>,
    /// `--kubelet-preferred-address-types` of the API server (how it reaches kubelets
    /// for logs, exec and port-forward).
    pub kubelet_address_types: Option<String>,
    /// kwok manages only nodes annotated as simulated, never a real kubelet's node.
    pub kwok_simulated_only: bool,
}

impl ClusterSpec {
    /// A cluster called `name` with three simulated nodes.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            nodes: 3,
            control_plane: ControlPlaneExtras::default(),
        }
    }

    /// The same with `nodes` simulated nodes.
    pub fn with_nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes;
        self
    }
}

/// Start the cluster `spec.name`, replacing a left-over one of that name, and return
/// once the API server answers and every simulated node is Ready.
pub async fn up(layout: &Layout, bins: &Binaries, spec: &ClusterSpec) -> Result<Cluster> {
    validate_name(&spec.name)?;
    if down(layout, Some(bins), &spec.name).await? {
        tracing::info!(name = %spec.name, "replaced a cluster left behind by an earlier run");
    }
    let started = Instant::now();
    let config = write_config(layout, bins, spec).await?;
    // kwokctl picks "free" ports by probing them; two creates at once could pick the same.
    let lock = CreateLock::acquire(layout).await?;
    kwokctl(
        layout,
        bins,
        &spec.name,
        &[
            "create",
            "cluster",
            "--runtime",
            "binary",
            "--config",
            &config.to_string_lossy(),
            // An empty path: never touch the user's ~/.kube/config.
            "--kubeconfig",
            "",
            "--timeout",
            "5m",
        ],
    )
    .await?;
    drop(lock);
    let dir = layout.cluster_dir(&spec.name);
    let cluster = Cluster {
        name: spec.name.clone(),
        kubeconfig: dir.join("kubeconfig.yaml"),
        dir,
    };
    let client = client_for(&cluster.kubeconfig).await?;
    wait_for_readyz(&client).await?;
    storage_class(&client).await?;
    tracing::info!(
        name = %spec.name,
        seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
        "API server ready"
    );
    create_nodes(&client, spec.nodes).await?;
    wait_for_nodes(&client, spec.nodes).await?;
    tracing::info!(
        name = %spec.name,
        nodes = spec.nodes,
        seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
        "cluster ready"
    );
    Ok(cluster)
}

/// Delete the cluster `name` if it exists; `Ok(true)` when there was one.
///
/// Uses `kwokctl delete cluster` when the binaries are at hand, then stops any
/// process still listed in the cluster's pid files (only those whose command line
/// lies in that cluster's directory) and removes the directory.
pub async fn down(layout: &Layout, bins: Option<&Binaries>, name: &str) -> Result<bool> {
    validate_name(name)?;
    let dir = layout.cluster_dir(name);
    if !dir.exists() {
        return Ok(false);
    }
    if let Some(bins) = bins
        && let Err(err) = kwokctl(
            layout,
            bins,
            name,
            &[
                "delete",
                "cluster",
                "--kubeconfig",
                &layout.scratch_kubeconfig().to_string_lossy(),
            ],
        )
        .await
    {
        tracing::warn!(%name, %err, "kwokctl delete failed; stopping the cluster's processes directly");
    }
    if dir.exists() {
        kill_recorded_pids(&dir).await;
        tokio::fs::remove_dir_all(&dir)
            .await
            .map_err(|source| Error::Io {
                context: format!("removing {}", dir.display()),
                source,
            })?;
    }
    Ok(true)
}

/// The names of all clusters kwokctl knows in this cache.
pub fn list(layout: &Layout) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(layout.kwok_workdir().join("clusters")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// The pids of the cluster's running components, from kwokctl's pid files.
pub fn component_pids(dir: &Path) -> Vec<(String, u32)> {
    let Ok(entries) = std::fs::read_dir(dir.join("pids")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let pid = std::fs::read_to_string(e.path())
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some((name.trim_end_matches(".pid").to_owned(), pid))
        })
        .filter(|(_, pid)| Path::new(&format!("/proc/{pid}")).exists())
        .collect()
}

/// A client for the cluster a kubeconfig file names (its current context).
pub async fn client_for(kubeconfig: &Path) -> Result<kube::Client> {
    let config = config_for(kubeconfig).await?;
    kube::Client::try_from(config).map_err(Error::Kube)
}

/// The client configuration of a kubeconfig file's current context.
pub async fn config_for(kubeconfig: &Path) -> Result<kube::Config> {
    let file =
        kube::config::Kubeconfig::read_from(kubeconfig).map_err(|source| Error::Kubeconfig {
            path: kubeconfig.to_path_buf(),
            source,
        })?;
    kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|source| Error::Kubeconfig {
            path: kubeconfig.to_path_buf(),
            source,
        })
}

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::BadName(name.to_owned()))
    }
}

/// kwokctl's configuration: every binary local (nothing is downloaded), loopback
/// only, RBAC and admission on as on a real cluster, ports left to kwokctl (free ones).
async fn write_config(layout: &Layout, bins: &Binaries, spec: &ClusterSpec) -> Result<PathBuf> {
    let name = &spec.name;
    let v = &layout.versions;
    let bin = |c: &str| serde_json::Value::String(bins.path(c).to_string_lossy().into_owned());
    let mut doc = serde_json::json!({
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokctlConfiguration",
        "options": {
            "runtime": "binary",
            "bindAddress": "127.0.0.1",
            "kubeVersion": v.kubernetes,
            "etcdVersion": v.etcd.trim_start_matches('v'),
            "kwokVersion": v.kwok,
            "securePort": true,
            "kubeAuthorization": true,
            "kubeAdmission": true,
            "quietPull": true,
            "cacheDir": layout.kwok_workdir().join("cache"),
            "etcdBinary": bin("etcd"),
            "kubeApiserverBinary": bin("kube-apiserver"),
            "kubeControllerManagerBinary": bin("kube-controller-manager"),
            "kubeSchedulerBinary": bin("kube-scheduler"),
            "kubectlBinary": bin("kubectl"),
            "kwokControllerBinary": bin("kwok"),
        }
    });
    add_extras(&mut doc, &spec.control_plane);
    let yaml = serde_yaml::to_string(&doc).map_err(Error::Yaml)?;
    let dir = layout.kwok_workdir().join("configs");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|source| Error::Io {
            context: format!("creating {}", dir.display()),
            source,
        })?;
    let path = dir.join(format!("{name}.yaml"));
    tokio::fs::write(&path, yaml)
        .await
        .map_err(|source| Error::Io {
            context: format!("writing {}", path.display()),
            source,
        })?;
    Ok(path)
}

/// Writes [`ControlPlaneExtras`] into a kwokctl configuration: names in
/// `options.kubeApiserverCertSANs`, flags as `componentsPatches`.
fn add_extras(doc: &mut serde_json::Value, extras: &ControlPlaneExtras) {
    if !extras.cert_sans.is_empty() {
        doc["options"]["kubeApiserverCertSANs"] = serde_json::json!(extras.cert_sans);
    }
    // `override` replaces a flag kwokctl sets itself; without it the flag is added
    // (kwokctl ignores an override of a flag it does not set).
    let arg = |key: &str, value: &str, replace: bool| serde_json::json!({ "key": key, "value": value, "override": replace });
    let mut apiserver = Vec::new();
    if let Some(cidr) = &extras.service_cidr {
        apiserver.push(arg("service-cluster-ip-range", cidr, false));
    }
    if let Some(address) = &extras.advertise_address {
        apiserver.push(arg("advertise-address", address, false));
    }
    if let Some(types) = &extras.kubelet_address_types {
        apiserver.push(arg("kubelet-preferred-address-types", types, false));
    }
    // Persistent volumes on every test bed (the default StorageClass `standard` names this provisioner).
    let mut patches = vec![serde_json::json!({
        "name": "kube-controller-manager",
        "extraArgs": [arg("enable-hostpath-provisioner", "true", false)],
    })];
    if !apiserver.is_empty() {
        patches.push(serde_json::json!({ "name": "kube-apiserver", "extraArgs": apiserver }));
    }
    if extras.kwok_simulated_only {
        patches.push(serde_json::json!({
            "name": "kwok-controller",
            "extraArgs": [
                arg("manage-all-nodes", "false", true),
                arg(
                    "manage-nodes-with-annotation-selector",
                    &format!("{FAKE_NODE_ANNOTATION}=fake"),
                    false,
                ),
            ],
        }));
    }
    doc["componentsPatches"] = serde_json::Value::Array(patches);
}

async fn kwokctl(layout: &Layout, bins: &Binaries, name: &str, args: &[&str]) -> Result<()> {
    let action = args.iter().take(2).copied().collect::<Vec<_>>().join(" ");
    let output = Command::new(bins.kwokctl())
        .arg("--name")
        .arg(name)
        .args(args)
        .env("KWOK_WORKDIR", layout.kwok_workdir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| Error::Io {
            context: format!("running {}", bins.kwokctl().display()),
            source,
        })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    tracing::debug!(%action, output = %text, "kwokctl");
    if output.status.success() {
        return Ok(());
    }
    let tail: Vec<&str> = text.lines().rev().take(8).collect();
    Err(Error::Kwokctl {
        action,
        output: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
    })
}

/// Wait until the API server serves the default namespace and `/readyz` says ok: it answers before
/// its post-start hooks (such as `rbac/bootstrap-roles`) are done, and a client acting then gets errors.
async fn wait_for_readyz(client: &kube::Client) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    poll("the API server's default namespace and /readyz", || async {
        if namespaces.get_opt("default").await.ok().flatten().is_none() {
            return Ok(false);
        }
        let Ok(request) = http::Request::get("/readyz").body(Vec::new()) else {
            return Ok(false);
        };
        Ok(client
            .request_text(request)
            .await
            .is_ok_and(|text| text.trim() == "ok"))
    })
    .await
}

/// The default StorageClass of the test bed: volumes from the controller manager's hostPath provisioner
/// (`--enable-hostpath-provisioner`), deleted with their claims.
pub const STORAGE_CLASS: &str = "standard";
/// Where that provisioner makes each volume's directory (fixed by Kubernetes).
pub const HOSTPATH_VOLUMES: &str = "/tmp/hostpath_pv";

async fn storage_class(client: &kube::Client) -> Result<()> {
    let classes: Api<StorageClass> = Api::all(client.clone());
    let class: StorageClass = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": { "storageclass.kubernetes.io/is-default-class": "true" },
        },
        "provisioner": "kubernetes.io/host-path",
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }))
    .map_err(Error::Json)?;
    match classes.create(&PostParams::default(), &class).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(err) => Err(Error::Kube(err)),
    }
}

async fn create_nodes(client: &kube::Client, count: usize) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    for i in 0..count {
        let name = format!("kwok-node-{i}");
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "topology.kubernetes.io/zone": format!("zone-{}", i % 3),
                    "type": "kwok",
                },
                "annotations": {
                    FAKE_NODE_ANNOTATION: "fake",
                    "node.alpha.kubernetes.io/ttl": "0",
                },
            },
            "status": {
                "allocatable": { "cpu": "32", "memory": "128Gi", "pods": "110" },
                "capacity": { "cpu": "32", "memory": "128Gi", "pods": "110" },
            },
        }))
        .map_err(Error::Json)?;
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(err) => return Err(Error::Kube(err)),
        }
    }
    Ok(())
}

async fn wait_for_nodes(client: &kube::Client, count: usize) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    poll("the simulated nodes to be Ready", || async {
        let list = nodes
            .list(&ListParams::default().labels("type=kwok"))
            .await
            .map_err(Error::Kube)?;
        let ready = list
            .items
            .iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        Ok(ready >= count)
    })
    .await
}

/// Poll `check` every 250 ms until it says yes, or fail after [`START_TIMEOUT`].
async fn poll<F, Fut>(what: &str, check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    wait_until(what, START_TIMEOUT, check).await
}

/// Poll `check` every 250 ms until it says yes, failing after `timeout` (with the last error, if the
/// check was failing). The one waiting loop of the test bed, the real node included.
pub(crate) async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(err) if Instant::now() >= deadline => return Err(err),
            Err(err) => tracing::debug!(%err, "still waiting for {what}"),
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout(format!(
                "{what} (after {}s)",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Serializes `kwokctl create` between processes: a file holding the owner's pid,
/// taken over when that process is gone.
struct CreateLock {
    path: PathBuf,
}

impl CreateLock {
    async fn acquire(layout: &Layout) -> Result<Self> {
        let dir = layout.kwok_workdir();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|source| Error::Io {
                context: format!("creating {}", dir.display()),
                source,
            })?;
        let path = dir.join("create.lock");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    use std::io::Write as _;
                    let _ = write!(file, "{}", std::process::id());
                    return Ok(Self { path });
                }
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = std::fs::read_to_string(&path).unwrap_or_default();
                    let alive = owner
                        .trim()
                        .parse::<u32>()
                        .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
                    if !alive && !owner.is_empty() {
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                    if Instant::now() >= deadline {
                        return Err(Error::Timeout(format!("the lock {}", path.display())));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(source) => {
                    return Err(Error::Io {
                        context: format!("creating {}", path.display()),
                        source,
                    });
                }
            }
        }
    }
}

impl Drop for CreateLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Stop what the cluster's pid files list, but only processes whose command line
/// points into the cluster's own directory: a pid from a long-dead run may have
/// been reused by an unrelated process.
async fn kill_recorded_pids(dir: &Path) {
    let marker = dir.to_string_lossy().into_owned();
    for (component, pid) in component_pids(dir) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains(&marker) {
            continue;
        }
        tracing::info!(%component, pid, "stopping a left-over component");
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(pid.to_string())
            .status()
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_are_plain_dns_labels() {
        assert!(validate_name("switchboard").is_ok());
        assert!(validate_name("e2e-4711").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("../etc").is_err());
        assert!(validate_name("Upper").is_err());
    }
}
