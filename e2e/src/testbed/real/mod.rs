//! A real node for the test bed: pods run for real, from the project's own images.
//!
//! ```text
//! up(name)
//!   ├─ build::ensure_built   kubelet, kube-proxy, CoreDNS, pause from e2e/testbed/realnode (Go, cached)
//!   ├─ images::ensure_images cargo build --release ─▶ docker build (deploy/docker) ─▶ one saved archive
//!   ├─ cluster::up           the usual control plane, plus: Service range 10.96.0.0/16, the
//!   │                        `kubernetes` Service at the node's address, that address and the
//!   │                        Service IP in the API server's certificate, kwok off the real node
//!   └─ node::start           netns + veth, API relay, containerd (CRI, CNI bridge), images
//!                            imported, CoreDNS, kube-proxy, kubelet ─▶ node Ready
//! down(name)  ─▶ node::stop (processes, pods, mounts, cgroups, netns, sysctls) ─▶ cluster::down
//! ```
//!
//! Why a kubelet joined to the test bed and not kind: kind's node image is a systemd
//! machine whose control plane runs as static pods from images pulled from a
//! registry; here there is no systemd and no registry, and the control plane is
//! already built from the same Kubernetes modules. The same suites run on kind
//! elsewhere (`deploy/kind-e2e.sh`). `e2e/TESTBED.md` ("A real node") has the details.

mod build;
mod images;
mod node;
mod sys;

use std::path::{Path, PathBuf};
use std::time::Instant;

pub use build::{NodeBinaries, NodeVersions};
pub use images::{
    ALIASES, ImageArchive, PAUSE_IMAGE, REDIS_IMAGE, ROLLOUT_NODE_IMAGE, TAG, image_names,
};
pub use node::{
    CLUSTER_DOMAIN, HOST_IP, KUBERNETES_SERVICE_IP, NODE_IP, NodeLayout, POD_CIDR, SERVICE_CIDR,
};
pub use sys::rss_kib;

use super::binaries::Binaries;
use super::cluster::{self, Cluster, ClusterSpec, ControlPlaneExtras};
use super::versions::Layout;
use super::{Error, Result};

/// The cache directory all of the test bed's files live under (`~/.cache/switchboard`).
pub fn cache_base(layout: &Layout) -> PathBuf {
    layout
        .root
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| layout.root.clone())
}

/// What the control plane needs for a real node to join it.
pub fn control_plane_extras() -> ControlPlaneExtras {
    ControlPlaneExtras {
        service_cidr: Some(SERVICE_CIDR.to_owned()),
        advertise_address: Some(NODE_IP.to_owned()),
        cert_sans: vec![KUBERNETES_SERVICE_IP.to_owned(), NODE_IP.to_owned()],
        // By address, never by resolving the node's host name: that would ask the
        // machine's resolver, which is not on this machine.
        kubelet_address_types: Some("InternalIP".to_owned()),
        kwok_simulated_only: true,
    }
}

/// Build (or reuse) the real node's programs and the project's images; the archive
/// the node imports.
pub async fn images(layout: &Layout) -> Result<(NodeBinaries, ImageArchive)> {
    let base = cache_base(layout);
    let node_bins =
        build::ensure_built(&base.join("realnode"), &layout.versions.kubernetes).await?;
    let archive = images::ensure_images(&images::ImageCache::new(&base), &base, &node_bins).await?;
    Ok((node_bins, archive))
}

/// Build what is missing, then start the cluster `name` with one real node (and
/// `simulated` kwok nodes besides), replacing a left-over cluster of that name.
pub async fn up(layout: &Layout, bins: &Binaries, name: &str, simulated: usize) -> Result<Cluster> {
    node::preflight()?;
    let base = cache_base(layout);
    let started = Instant::now();
    let node_bins =
        build::ensure_built(&base.join("realnode"), &layout.versions.kubernetes).await?;
    let archive = images::ensure_images(&images::ImageCache::new(&base), &base, &node_bins).await?;
    tracing::info!(
        seconds = started.elapsed().as_secs(),
        "binaries and images ready"
    );

    if let Some(other) = NodeLayout::list(&base).into_iter().find(|n| n != name) {
        return Err(Error::Unavailable(format!(
            "cluster {other:?} already has the real node (one per machine: its addresses are fixed); `testbed down --name {other}` first"
        )));
    }
    down(layout, Some(bins), name).await?;
    let mut spec = ClusterSpec::named(name).with_nodes(simulated);
    spec.control_plane = control_plane_extras();
    let cluster = cluster::up(layout, bins, &spec).await?;
    let layout_node = NodeLayout::new(&base, name);
    if let Err(err) = node::start(&layout_node, &node_bins, &archive, &cluster).await {
        tracing::error!(%err, logs = %layout_node.dir.join("logs").display(), "the real node did not come up; removing it");
        if std::env::var_os("SWITCHBOARD_TESTBED_KEEP").is_none() {
            let _ = down(layout, Some(bins), name).await;
        }
        return Err(err);
    }
    tracing::info!(
        seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
        "cluster with a real node ready"
    );
    Ok(cluster)
}

/// Remove the real node of cluster `name` (if any), then the cluster itself.
/// `Ok(true)` when there was something to remove.
pub async fn down(layout: &Layout, bins: Option<&Binaries>, name: &str) -> Result<bool> {
    let node = NodeLayout::new(&cache_base(layout), name);
    let had_node = node::stop(&node).await?;
    let had_cluster = cluster::down(layout, bins, name).await?;
    Ok(had_node || had_cluster)
}

/// Resident memory of the real node's processes of cluster `name`, in KiB:
/// `(what, pid, rss)`; empty when it has none.
pub fn memory(layout: &Layout, name: &str) -> Vec<(String, u32, u64)> {
    let node = NodeLayout::new(&cache_base(layout), name);
    if !node.dir.exists() {
        return Vec::new();
    }
    node::memory(&node)
}
