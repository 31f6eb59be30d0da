//! One real node joined to a test bed control plane: containerd, kubelet, kube-proxy
//! and CoreDNS, all inside a network namespace made for it.
//!
//! ```text
//!  host netns                                 netns "switchboard-node"
//!  ─────────────────────────────              ──────────────────────────────────────────────
//!  kube-apiserver 127.0.0.1:P ◀─ socat ◀─ unix socket ◀─ socat 0.0.0.0:P  ◀─ kubelet, kube-proxy,
//!                                                                            CoreDNS (127.0.0.1:P),
//!                                                          pods via Service 10.96.0.1:443 ─DNAT─┘
//!  sbnode0 10.250.0.1/30 ───────── veth ─────────── eth0 10.250.0.2/30 (the node's InternalIP)
//!  routes 10.244.0.0/24, 10.96.0.0/16                 cni0 10.244.0.1/24 ── pods (CNI bridge)
//!         via 10.250.0.2                              iptables: kube-proxy's rules only here
//! ```
//!
//! The namespace has no default route, so nothing in it (pods included) can reach
//! anything but the host's veth address and the API server through the relay; the
//! host reaches pod IPs and Service IPs through its two routes, which disappear with
//! the veth. Only one real node runs per machine: the addresses are fixed.
//!
//! Everything the node starts is recorded under `<cache>/realnode/clusters/<name>/`
//! (pid files, logs, configuration, `state.json`), so [`stop`] — from `testbed down`
//! or from the next `up` — removes it all: processes (pods too), mounts, cgroups, the
//! namespace with its iptables rules and the veth, and the kernel settings the
//! kubelet changed, which are put back.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use serde::{Deserialize, Serialize};

use crate::testbed::{Cluster, Error, Result};

use super::build::NodeBinaries;
use super::images::{ALIASES, ImageArchive, PAUSE_IMAGE};
use super::sys::{self, Daemon};

/// The node's network namespace.
pub const NETNS: &str = "switchboard-node";
/// The host end of the veth.
pub const HOST_VETH: &str = "sbnode0";
/// The host end's address.
pub const HOST_IP: &str = "10.250.0.1";
/// The node's address (its InternalIP, the kubelet's `--node-ip`, cluster DNS).
pub const NODE_IP: &str = "10.250.0.2";
/// Pod addresses (CNI bridge + host-local).
pub const POD_CIDR: &str = "10.244.0.0/24";
/// Service ClusterIPs.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The `kubernetes` Service's ClusterIP: the first of [`SERVICE_CIDR`].
pub const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";
/// The cluster domain CoreDNS serves and the kubelet gives pods.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// Kernel settings (not per network namespace) the kubelet may change; saved at
/// start and put back by [`stop`].
const GLOBAL_SYSCTLS: [&str; 6] = [
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];
/// How long the node may take from the first process to Ready.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// Where one node's files live.
#[derive(Debug, Clone)]
pub struct NodeLayout {
    /// The cluster's name; the node is called `<name>-node`.
    pub name: String,
    /// `<cache>/realnode/clusters/<name>`: configuration, logs, pids, kubelet and containerd data.
    pub dir: PathBuf,
    /// `/run/switchboard/<name>`: sockets and containerd's state (short paths).
    pub run: PathBuf,
}

impl NodeLayout {
    /// The layout of the node of cluster `name` under the cache `base`.
    pub fn new(base: &Path, name: &str) -> Self {
        Self {
            name: name.to_owned(),
            dir: base.join("realnode").join("clusters").join(name),
            run: Path::new("/run/switchboard").join(name),
        }
    }

    /// The names of clusters that have a real node in the cache `base`.
    pub fn list(base: &Path) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(base.join("realnode").join("clusters")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.path().join("state.json").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    }

    /// The Node object's name.
    pub fn node_name(&self) -> String {
        format!("{}-node", self.name)
    }

    fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn containerd_socket(&self) -> PathBuf {
        self.run.join("containerd.sock")
    }

    fn relay_socket(&self) -> PathBuf {
        self.run.join("apiserver.sock")
    }

    /// Every daemon, in the order they are stopped.
    pub fn daemons(&self) -> Vec<Daemon> {
        [
            "volumes",
            "kubelet",
            "kube-proxy",
            "coredns",
            "containerd",
            "relay-node",
            "relay-host",
        ]
        .iter()
        .map(|n| Daemon::new(&self.dir, n))
        .collect()
    }

    fn daemon(&self, name: &str) -> Daemon {
        Daemon::new(&self.dir, name)
    }
}

/// What [`stop`] needs to undo, written before anything is changed.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// `/proc/sys` paths and their values before the kubelet ran.
    sysctls: Vec<(String, String)>,
}

/// The host programs the node needs.
struct Programs {
    containerd: PathBuf,
    ctr: PathBuf,
    socat: PathBuf,
    nsenter: PathBuf,
    ip: PathBuf,
}

impl Programs {
    fn find() -> Result<Self> {
        let apt = |pkg: &str| format!("apt-get install {pkg}");
        for required in [
            "/usr/sbin/runc",
            "/usr/lib/cni/bridge",
            "/usr/lib/cni/host-local",
        ] {
            if !Path::new(required).exists() {
                let pkg = if required.contains("cni") {
                    "containernetworking-plugins"
                } else {
                    "runc"
                };
                return Err(Error::Missing {
                    program: required.to_owned(),
                    hint: apt(pkg),
                });
            }
        }
        sys::program("iptables", &["/usr/sbin/iptables"], &apt("iptables"))?;
        Ok(Self {
            containerd: sys::program("containerd", &["/usr/bin/containerd"], &apt("containerd"))?,
            ctr: sys::program("ctr", &["/usr/bin/ctr"], &apt("containerd"))?,
            socat: sys::program("socat", &["/usr/bin/socat"], &apt("socat"))?,
            nsenter: sys::program("nsenter", &["/usr/bin/nsenter"], &apt("util-linux"))?,
            ip: sys::program("ip", &["/usr/sbin/ip", "/sbin/ip"], &apt("iproute2"))?,
        })
    }

    /// `nsenter --net=<node netns> -- program args…`
    fn in_node(&self, program: &Path, args: &[String]) -> (PathBuf, Vec<String>) {
        let mut all = vec![format!("--net=/run/netns/{NETNS}"), "--".to_owned()];
        all.push(program.to_string_lossy().into_owned());
        all.extend(args.iter().cloned());
        (self.nsenter.clone(), all)
    }
}

/// Check what the node needs before anything is started.
pub fn preflight() -> Result<()> {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().nth(1))
            == Some("0")
    });
    if !root {
        return Err(Error::Missing {
            program: "root".to_owned(),
            hint: "the real node makes a network namespace, mounts and cgroups: run as root"
                .to_owned(),
        });
    }
    Programs::find()?;
    if !Path::new("/sys/fs/cgroup/memory").is_dir() {
        return Err(Error::Missing {
            program: "the cgroup v1 memory controller".to_owned(),
            hint: "the real node runs the kubelet with cgroup v1 (cgroupfs driver)".to_owned(),
        });
    }
    Ok(())
}

/// Start the node, load `images` into it, and wait until it is Ready.
pub async fn start(
    node: &NodeLayout,
    bins: &NodeBinaries,
    images: &ImageArchive,
    cluster: &Cluster,
) -> Result<()> {
    let p = Programs::find()?;
    let started = Instant::now();
    for dir in [&node.dir, &node.run] {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            context: format!("creating {}", dir.display()),
            source,
        })?;
    }
    let state = State {
        sysctls: GLOBAL_SYSCTLS
            .iter()
            .filter_map(|k| {
                let v = std::fs::read_to_string(format!("/proc/sys/{k}")).ok()?;
                Some(((*k).to_owned(), v.trim().to_owned()))
            })
            .collect(),
    };
    sys::write(
        &node.state_file(),
        serde_json::to_vec_pretty(&state).map_err(Error::Json)?,
    )?;

    network(&p).await?;
    let port = api_port(&cluster.kubeconfig)?;
    relays(node, &p, port)?;
    containerd(node, &p).await?;
    load_images(node, &p, images).await?;
    tracing::info!(
        seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
        "containerd ready, images loaded"
    );

    let kubeconfig = cluster.kubeconfig.to_string_lossy().into_owned();
    volumes(node)?;
    coredns(node, &p, bins, &kubeconfig)?;
    kube_proxy(node, &p, bins, &kubeconfig)?;
    kubelet(node, &p, bins, &kubeconfig)?;
    wait_ready(node, cluster).await?;
    tracing::info!(
        node = %node.node_name(),
        seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
        "real node Ready"
    );
    Ok(())
}

/// The namespace, the veth, the host's two routes, forwarding inside the namespace.
async fn network(p: &Programs) -> Result<()> {
    let ip = &p.ip;
    sys::run(ip, &["netns", "add", NETNS]).await?;
    sys::run(
        ip,
        &[
            "link", "add", HOST_VETH, "type", "veth", "peer", "name", "eth0", "netns", NETNS,
        ],
    )
    .await?;
    sys::run(
        ip,
        &["addr", "add", &format!("{HOST_IP}/30"), "dev", HOST_VETH],
    )
    .await?;
    sys::run(ip, &["link", "set", HOST_VETH, "up"]).await?;
    let node = |args: &[&str]| {
        let mut all = vec!["-n", NETNS];
        all.extend_from_slice(args);
        all.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    for args in [
        node(&["link", "set", "lo", "up"]),
        node(&["addr", "add", &format!("{NODE_IP}/30"), "dev", "eth0"]),
        node(&["link", "set", "eth0", "up"]),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sys::run(ip, &args).await?;
    }
    for cidr in [POD_CIDR, SERVICE_CIDR] {
        sys::run(
            ip,
            &["route", "add", cidr, "via", NODE_IP, "dev", HOST_VETH],
        )
        .await?;
    }
    // Inside the namespace only: routing between eth0 and the pod bridge, and
    // bridged pod traffic through iptables (Service DNAT between pods).
    for (key, value) in [
        ("net.ipv4.ip_forward", "1"),
        ("net.bridge.bridge-nf-call-iptables", "1"),
    ] {
        let (prog, args) = p.in_node(
            Path::new("sysctl"),
            &["-w".to_owned(), format!("{key}={value}")],
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sys::run(&prog, &args).await?;
    }
    Ok(())
}

/// The API server listens on the host's loopback only; the node reaches it through a
/// unix socket relay, on the same port on every address of its namespace (its own
/// loopback for the kubeconfig, the node IP for the `kubernetes` Service's endpoint).
fn relays(node: &NodeLayout, p: &Programs, port: u16) -> Result<()> {
    let socket = node.relay_socket();
    let _ = std::fs::remove_file(&socket);
    node.daemon("relay-host").start(
        &p.socat,
        &[
            format!("UNIX-LISTEN:{},fork,mode=600", socket.display()),
            format!("TCP:127.0.0.1:{port}"),
        ],
    )?;
    let (prog, args) = p.in_node(
        &p.socat,
        &[
            format!("TCP-LISTEN:{port},fork,reuseaddr"),
            format!("UNIX-CONNECT:{}", socket.display()),
        ],
    );
    node.daemon("relay-node").start(&prog, &args)?;
    Ok(())
}

/// containerd with the CRI plugin, in the node's namespace.
async fn containerd(node: &NodeLayout, p: &Programs) -> Result<()> {
    let cni_conf = node.dir.join("cni").join("net.d");
    let config = format!(
        r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # The machine lacks CAP_SYS_RESOURCE: without this every sandbox fails to set oom_score_adj.
  restrict_oom_score_adj = true
  # Pod network namespaces live under the state directory, so stop() finds them.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_conf}"
"#,
        root = node.dir.join("containerd").display(),
        state = node.run.join("containerd").display(),
        socket = node.containerd_socket().display(),
        cni_conf = cni_conf.display(),
    );
    let config_path = node.dir.join("containerd.toml");
    sys::write(&config_path, config)?;
    let cni = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "switchboard",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                // No masquerade: the namespace has no way out, and must not get one.
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": POD_CIDR }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                    "dataDir": node.dir.join("cni").join("ipam"),
                },
            },
            { "type": "portmap", "capabilities": { "portMappings": true } },
        ],
    });
    sys::write(
        &cni_conf.join("10-switchboard.conflist"),
        serde_json::to_vec_pretty(&cni).map_err(Error::Json)?,
    )?;
    let (prog, args) = p.in_node(
        &p.containerd,
        &[
            "--config".to_owned(),
            config_path.to_string_lossy().into_owned(),
        ],
    );
    let daemon = node.daemon("containerd");
    daemon.start(&prog, &args)?;
    let ctr = p.ctr.clone();
    let socket = node.containerd_socket().to_string_lossy().into_owned();
    sys::wait_until("containerd to answer", Duration::from_secs(60), || {
        let ctr = ctr.clone();
        let socket = socket.clone();
        let daemon = daemon.clone();
        async move {
            daemon.check_running()?;
            Ok(sys::run(&ctr, &["--address", &socket, "version"])
                .await
                .is_ok())
        }
    })
    .await
}

async fn load_images(node: &NodeLayout, p: &Programs, images: &ImageArchive) -> Result<()> {
    let t = Instant::now();
    let socket = node.containerd_socket().to_string_lossy().into_owned();
    let ctr = |args: &[&str]| {
        let mut all = vec!["--address", socket.as_str(), "-n", "k8s.io"];
        all.extend_from_slice(args);
        all.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let import = ctr(&["images", "import", &images.path.to_string_lossy()]);
    let import: Vec<&str> = import.iter().map(String::as_str).collect();
    sys::run(&p.ctr, &import).await?;
    for (from, to) in ALIASES {
        let tag = ctr(&["images", "tag", "--force", from, to]);
        let tag: Vec<&str> = tag.iter().map(String::as_str).collect();
        sys::run(&p.ctr, &tag).await?;
        tracing::info!(image = from, alias = to, "local stand-in");
    }
    tracing::info!(seconds = format!("{:.1}", t.elapsed().as_secs_f64()), images = ?images.names, "images loaded into containerd");
    Ok(())
}

/// Persistent volumes: the control plane's hostPath provisioner (the test bed's default StorageClass,
/// `cluster::STORAGE_CLASS`) makes each volume a directory under [`cluster::HOSTPATH_VOLUMES`] owned by
/// root with mode 0750, which a non-root pod cannot write and (being hostPath) `fsGroup` does not
/// change. This loop opens each new one to every user, as kind's local-path provisioner does.
fn volumes(node: &NodeLayout) -> Result<()> {
    let dir = super::super::cluster::HOSTPATH_VOLUMES;
    let script = format!(
        "while :; do find {dir} -mindepth 1 -maxdepth 1 -type d ! -perm 0777 -exec chmod 0777 {{}} + 2>/dev/null; sleep 1; done"
    );
    node.daemon("volumes")
        .start(Path::new("/bin/sh"), &["-c".to_owned(), script])?;
    Ok(())
}

/// Cluster DNS: CoreDNS on the node IP, answering the cluster domain from the API
/// and NXDOMAIN for every other name (it forwards nowhere).
fn coredns(node: &NodeLayout, p: &Programs, bins: &NodeBinaries, kubeconfig: &str) -> Result<()> {
    let corefile = format!(
        r#"{CLUSTER_DOMAIN}:53 in-addr.arpa:53 ip6.arpa:53 {{
    bind {NODE_IP}
    errors
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        ttl 5
    }}
    cache 5
    loadbalance
}}
.:53 {{
    bind {NODE_IP}
    template ANY ANY {{
        rcode NXDOMAIN
    }}
}}
"#
    );
    let path = node.dir.join("Corefile");
    sys::write(&path, corefile)?;
    let (prog, args) = p.in_node(
        &bins.path("coredns"),
        &["-conf".to_owned(), path.to_string_lossy().into_owned()],
    );
    node.daemon("coredns").start(&prog, &args)?;
    Ok(())
}

fn kube_proxy(
    node: &NodeLayout,
    p: &Programs,
    bins: &NodeBinaries,
    kubeconfig: &str,
) -> Result<()> {
    let config = serde_json::json!({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": { "kubeconfig": kubeconfig },
        "hostnameOverride": node.node_name(),
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "bindAddress": "0.0.0.0",
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        // Pod-to-Service-to-pod on one bridge: masquerade so replies come back through the node.
        "iptables": { "masqueradeAll": true },
        // conntrack limits are machine-wide kernel settings: leave them alone.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    });
    let path = node.dir.join("kube-proxy.yaml");
    sys::write(&path, serde_yaml::to_string(&config).map_err(Error::Yaml)?)?;
    let (prog, args) = p.in_node(
        &bins.path("kube-proxy"),
        &[format!("--config={}", path.display())],
    );
    node.daemon("kube-proxy").start(&prog, &args)?;
    Ok(())
}

fn kubelet(node: &NodeLayout, p: &Programs, bins: &NodeBinaries, kubeconfig: &str) -> Result<()> {
    let resolv = node.dir.join("resolv.conf");
    // Pods with dnsPolicy Default get no name server from the host (it is off-machine).
    sys::write(&resolv, "")?;
    let config = serde_json::json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        // Only cgroup v1 is usable here; 1.37 still runs on it when told to.
        "failCgroupV1": false,
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": format!("unix://{}", node.containerd_socket().display()),
        "podLogsDir": node.dir.join("pod-logs"),
        "resolvConf": resolv,
        "clusterDNS": [NODE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        // The kubelet's port is reachable only from this machine (host and the node's netns).
        "authentication": {
            "anonymous": { "enabled": true },
            "webhook": { "enabled": false },
        },
        "authorization": { "mode": "AlwaysAllow" },
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "failSwapOn": false,
        "serializeImagePulls": false,
        "rotateCertificates": false,
        // The disk is shared with builds: evict on real shortage only.
        "evictionHard": {
            "memory.available": "200Mi",
            "nodefs.available": "2%",
            "imagefs.available": "2%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "maxPods": 110,
    });
    let path = node.dir.join("kubelet.yaml");
    sys::write(&path, serde_yaml::to_string(&config).map_err(Error::Yaml)?)?;
    let (prog, args) = p.in_node(
        &bins.path("kubelet"),
        &[
            format!("--config={}", path.display()),
            format!("--kubeconfig={kubeconfig}"),
            format!("--node-ip={NODE_IP}"),
            format!("--hostname-override={}", node.node_name()),
            format!("--root-dir={}", node.dir.join("kubelet").display()),
            "--v=1".to_owned(),
        ],
    );
    node.daemon("kubelet").start(&prog, &args)?;
    Ok(())
}

async fn wait_ready(node: &NodeLayout, cluster: &Cluster) -> Result<()> {
    let client = crate::testbed::client_for(&cluster.kubeconfig).await?;
    let nodes: Api<Node> = Api::all(client);
    let name = node.node_name();
    let daemons = node.daemons();
    sys::wait_until(&format!("node {name} to be Ready"), READY_TIMEOUT, || {
        let nodes = nodes.clone();
        let name = name.clone();
        let daemons = daemons.clone();
        async move {
            for d in &daemons {
                d.check_running()?;
            }
            let Some(n) = nodes.get_opt(&name).await.map_err(Error::Kube)? else {
                return Ok(false);
            };
            Ok(n.status
                .and_then(|s| s.conditions)
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")))
        }
    })
    .await
}

/// The API server's port, from the kubeconfig kwokctl wrote (`https://127.0.0.1:PORT`).
fn api_port(kubeconfig: &Path) -> Result<u16> {
    let text = std::fs::read_to_string(kubeconfig).map_err(|source| Error::Io {
        context: format!("reading {}", kubeconfig.display()),
        source,
    })?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("server:"))
        .and_then(|url| url.trim().rsplit(':').next())
        .and_then(|port| port.trim_end_matches('/').parse().ok())
        .ok_or_else(|| Error::Unavailable(format!("no server port in {}", kubeconfig.display())))
}

/// Remove everything the node of `node.name` started; `Ok(true)` if there was one.
pub async fn stop(node: &NodeLayout) -> Result<bool> {
    if !node.dir.exists() && !node.run.exists() {
        return Ok(false);
    }
    let daemons = node.daemons();
    // The kubelet first, so nothing restarts what is stopped next.
    for d in daemons.iter().filter(|d| d.name == "kubelet") {
        d.stop(Duration::from_secs(10)).await;
    }
    kill_pods(node).await;
    for d in daemons.iter().filter(|d| d.name != "kubelet") {
        d.stop(Duration::from_secs(10)).await;
    }
    unmount_under(&[&node.dir, &node.run]).await;
    remove_cgroups("kubepods");
    if Path::new(&format!("/run/netns/{NETNS}")).exists() {
        // Takes the veth with it (both ends), the host's routes through it, the
        // bridge and every iptables rule kube-proxy wrote.
        sys::run_quiet("ip", &["netns", "del", NETNS]).await;
    }
    sys::run_quiet("ip", &["link", "del", HOST_VETH]).await;
    if let Ok(text) = std::fs::read(node.state_file())
        && let Ok(state) = serde_json::from_slice::<State>(&text)
    {
        for (key, value) in state.sysctls {
            let path = format!("/proc/sys/{key}");
            if std::fs::read_to_string(&path).is_ok_and(|now| now.trim() != value) {
                tracing::info!(%key, %value, "restoring a kernel setting the kubelet changed");
                let _ = std::fs::write(&path, &value);
            }
        }
    }
    for dir in [&node.run, &node.dir] {
        if let Err(err) = std::fs::remove_dir_all(dir)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            return Err(Error::Io {
                context: format!("removing {}", dir.display()),
                source: err,
            });
        }
    }
    Ok(true)
}

/// SIGKILL every process of every pod (the kubelet's `kubepods` cgroups) and every
/// containerd shim of this node, then wait for them to go.
async fn kill_pods(node: &NodeLayout) {
    let mut pids = cgroup_pids("kubepods");
    pids.extend(shim_pids(node));
    for pid in &pids {
        sys::signal(*pid, "KILL").await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| sys::alive(*p)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !pids.is_empty() {
        tracing::info!(
            processes = pids.len(),
            "stopped the pods' processes and shims"
        );
    }
}

/// The containerd shims of this node's containerd (one per pod).
fn shim_pids(node: &NodeLayout) -> Vec<u32> {
    let socket = node.containerd_socket().to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            cmdline.contains("containerd-shim") && cmdline.contains(&socket)
        })
        .collect()
}

/// Every pid in the cgroup `name` (and below) of the v1 `pids` hierarchy.
fn cgroup_pids(name: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let mut stack = vec![Path::new("/sys/fs/cgroup/pids").join(name)];
    while let Some(dir) = stack.pop() {
        if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            stack.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
    }
    out
}

/// Remove the cgroup `name` and its children in every v1 hierarchy (deepest first).
fn remove_cgroups(name: &str) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hierarchies.flatten() {
        let root = h.path().join(name);
        let mut dirs = Vec::new();
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                stack.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
                dirs.push(dir);
            }
        }
        for dir in dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Unmount everything mounted below `dirs` (containers' root file systems, pod
/// volumes, pod network namespaces), deepest first.
async fn unmount_under(dirs: &[&Path]) {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|p| p.replace("\\040", " "))
        .filter(|p| dirs.iter().any(|d| Path::new(p).starts_with(d)))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    for point in &points {
        sys::run_quiet("umount", &["-l", point]).await;
    }
    if !points.is_empty() {
        tracing::info!(mounts = points.len(), "unmounted the node's mounts");
    }
}

/// Resident memory of the node's processes: each daemon, containerd's shims, and the
/// pods' processes, in KiB.
pub fn memory(node: &NodeLayout) -> Vec<(String, u32, u64)> {
    let mut out: Vec<(String, u32, u64)> = node
        .daemons()
        .iter()
        .filter_map(|d| d.pid().map(|pid| (d.name.clone(), pid, sys::rss_kib(pid))))
        .collect();
    let shims = shim_pids(node);
    let shims_kib = shims.iter().copied().map(sys::rss_kib).sum();
    out.push((format!("containerd shims ({})", shims.len()), 0, shims_kib));
    let pods: u64 = cgroup_pids("kubepods").into_iter().map(sys::rss_kib).sum();
    out.push(("pods (all containers)".to_owned(), 0, pods));
    out
}
