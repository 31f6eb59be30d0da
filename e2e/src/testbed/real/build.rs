//! The real node's programs, built from the Go module `e2e/testbed/realnode` into a
//! cache keyed by its pinned versions, the same way the control plane is built
//! (see `binaries`): a `bin/` directory exists only once everything in it was built.
//!
//! ```text
//! e2e/testbed/realnode/go.mod ──go build (nice)──▶ <cache>/realnode/<k8s>-<coredns>/bin/
//!     kubelet, kube-proxy        k8s.io/kubernetes (the control plane's version)
//!     coredns                    ./coredns: CoreDNS with only the plugins cluster DNS needs
//!     pause                      ./pause: the pod sandbox's process
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::testbed::{Error, Result, find_on_path};

use super::sys;

/// The realnode module's `go.mod`, embedded so the cache key cannot drift from it.
const GO_MOD: &str = include_str!("../../../testbed/realnode/go.mod");

/// What is built, and from which package.
const COMMANDS: [(&str, &str); 4] = [
    ("pause", "./pause"),
    ("coredns", "./coredns"),
    ("kube-proxy", "k8s.io/kubernetes/cmd/kube-proxy"),
    ("kubelet", "k8s.io/kubernetes/cmd/kubelet"),
];

/// The pinned versions of the real node's programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeVersions {
    /// `k8s.io/kubernetes`: kubelet and kube-proxy.
    pub kubernetes: String,
    /// `github.com/coredns/coredns`: cluster DNS.
    pub coredns: String,
}

impl NodeVersions {
    /// The versions pinned in `e2e/testbed/realnode/go.mod`.
    pub fn pinned() -> Result<Self> {
        Self::parse(GO_MOD)
    }

    fn parse(go_mod: &str) -> Result<Self> {
        let find = |module: &str| {
            crate::testbed::versions::required_version(go_mod, module)
                .ok_or_else(|| Error::GoMod(format!("{module} (in e2e/testbed/realnode/go.mod)")))
        };
        Ok(Self {
            kubernetes: find("k8s.io/kubernetes")?,
            coredns: find("github.com/coredns/coredns")?,
        })
    }

    /// The cache key, e.g. `v1.37.2-v1.15.0`.
    pub fn key(&self) -> String {
        format!("{}-{}", self.kubernetes, self.coredns)
    }
}

/// Paths to the built programs of one set of versions.
#[derive(Debug, Clone)]
pub struct NodeBinaries {
    dir: PathBuf,
}

impl NodeBinaries {
    /// The path of one program.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn complete(&self) -> bool {
        COMMANDS.iter().all(|(name, _)| self.path(name).is_file())
    }
}

/// The Go module of the real node, inside this repository.
pub fn go_module() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/testbed/realnode"))
}

/// The cached programs, building them first when the cache is not complete.
pub async fn ensure_built(root: &Path, control_plane_kubernetes: &str) -> Result<NodeBinaries> {
    let v = NodeVersions::pinned()?;
    if v.kubernetes != control_plane_kubernetes {
        return Err(Error::GoMod(format!(
            "k8s.io/kubernetes {} in e2e/testbed/realnode/go.mod: the control plane runs {control_plane_kubernetes}; pin the same version in both",
            v.kubernetes
        )));
    }
    let final_dir = root.join(v.key()).join("bin");
    let bins = NodeBinaries {
        dir: final_dir.clone(),
    };
    if bins.complete() {
        return Ok(bins);
    }
    let go = find_on_path("go").ok_or(Error::GoMissing)?;
    let tmp = root
        .join(v.key())
        .join(format!("bin.tmp-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|source| Error::Io {
        context: format!("creating {}", tmp.display()),
        source,
    })?;
    let started = Instant::now();
    tracing::info!(kubernetes = %v.kubernetes, coredns = %v.coredns, into = %final_dir.display(),
        "building the real node from Go modules (first time: many minutes)");
    let ldflags = ldflags(&v.kubernetes);
    let go = go.to_string_lossy().into_owned();
    for (name, package) in COMMANDS {
        let one = Instant::now();
        let out = tmp.join(name).to_string_lossy().into_owned();
        sys::run_in(
            "nice",
            &[
                "-n",
                "10",
                &go,
                "build",
                "-trimpath",
                "-ldflags",
                &ldflags,
                "-o",
                &out,
                package,
            ],
            Some(go_module()),
            &[
                ("GOTOOLCHAIN", "local"),
                ("GOFLAGS", "-mod=readonly -buildvcs=false"),
                // Static programs: pause runs alone in an empty image.
                ("CGO_ENABLED", "0"),
            ],
        )
        .await
        .map_err(|err| match err {
            Error::Command { output, .. } => Error::GoBuild {
                package: package.to_owned(),
                reason: output,
            },
            other => other,
        })?;
        tracing::info!(command = name, seconds = one.elapsed().as_secs(), "built");
    }
    if let Err(source) = std::fs::rename(&tmp, &final_dir) {
        if !bins.complete() {
            return Err(Error::Io {
                context: format!("moving {} to {}", tmp.display(), final_dir.display()),
                source,
            });
        }
        let _ = std::fs::remove_dir_all(&tmp);
    }
    tracing::info!(
        seconds = started.elapsed().as_secs(),
        "real node binaries built"
    );
    Ok(bins)
}

/// Version stamps as in a release build, so `kubelet --version` reports the real
/// version (the node's `kubeletVersion` comes from it).
fn ldflags(kubernetes: &str) -> String {
    let minor = kubernetes.split('.').nth(1).unwrap_or_default();
    let mut flags = vec!["-s".to_owned(), "-w".to_owned()];
    for pkg in [
        "k8s.io/component-base/version",
        "k8s.io/client-go/pkg/version",
    ] {
        flags.push(format!("-X {pkg}.gitVersion={kubernetes}"));
        flags.push(format!("-X {pkg}.gitMajor=1"));
        flags.push(format!("-X {pkg}.gitMinor={minor}"));
        flags.push(format!("-X {pkg}.gitTreeState=clean"));
    }
    flags.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_versions_are_read_from_the_realnode_go_mod() {
        let v = NodeVersions::pinned().expect("realnode/go.mod names kubernetes and coredns");
        assert!(v.kubernetes.starts_with("v1."), "{v:?}");
        assert!(v.coredns.starts_with("v1."), "{v:?}");
    }

    #[test]
    fn the_node_runs_the_control_planes_kubernetes() {
        let node = NodeVersions::pinned().expect("pinned");
        let plane = crate::testbed::Versions::pinned().expect("pinned");
        assert_eq!(node.kubernetes, plane.kubernetes);
    }
}
