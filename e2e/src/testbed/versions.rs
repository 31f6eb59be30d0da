//! The pinned versions, read from the Go tools module at compile time, and the
//! places on disk that derive from them.
//!
//! `e2e/testbed/go.mod` is the single source of truth: this module parses its
//! first `require` block, so bumping a version there changes the cache key and
//! the next run builds the new binaries next to the old ones.

use std::path::{Path, PathBuf};

use super::{Error, Result};

/// The tools module's `go.mod`, embedded so the key cannot drift from it.
const GO_MOD: &str = include_str!("../../testbed/go.mod");

/// The version a `go.mod` requires of `module` (`module vX.Y.Z` on a line of its own or in a
/// `require` block).
pub(crate) fn required_version(go_mod: &str, module: &str) -> Option<String> {
    go_mod.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some(module))
            .then(|| words.next())
            .flatten()
            .filter(|v| v.starts_with('v'))
            .map(str::to_owned)
    })
}

/// The exact versions of the three projects the test bed is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versions {
    /// `k8s.io/kubernetes`: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl.
    pub kubernetes: String,
    /// `go.etcd.io/etcd/server/v3`: etcd.
    pub etcd: String,
    /// `sigs.k8s.io/kwok`: kwok (the node and pod simulator) and kwokctl.
    pub kwok: String,
}

impl Versions {
    /// The versions pinned in `e2e/testbed/go.mod`.
    pub fn pinned() -> Result<Self> {
        Self::parse(GO_MOD)
    }

    fn parse(go_mod: &str) -> Result<Self> {
        let find = |module: &str| {
            required_version(go_mod, module).ok_or_else(|| Error::GoMod(module.to_owned()))
        };
        Ok(Self {
            kubernetes: find("k8s.io/kubernetes")?,
            etcd: find("go.etcd.io/etcd/server/v3")?,
            kwok: find("sigs.k8s.io/kwok")?,
        })
    }

    /// The cache key, e.g. `v1.37.2-v3.7.0-v0.8.0`.
    pub fn key(&self) -> String {
        format!("{}-{}-{}", self.kubernetes, self.etcd, self.kwok)
    }
}

/// Where the test bed keeps its binaries and clusters, all outside the repository.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `$SWITCHBOARD_CACHE_DIR/testbed`, by default `~/.cache/switchboard/testbed`.
    pub root: PathBuf,
    /// The pinned versions.
    pub versions: Versions,
}

impl Layout {
    /// The layout for the pinned versions under the user's cache directory.
    pub fn discover() -> Result<Self> {
        let base = match std::env::var_os("SWITCHBOARD_CACHE_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => match std::env::var_os("XDG_CACHE_HOME") {
                Some(dir) => PathBuf::from(dir).join("switchboard"),
                None => PathBuf::from(std::env::var_os("HOME").ok_or(Error::NoHome)?)
                    .join(".cache")
                    .join("switchboard"),
            },
        };
        Ok(Self {
            root: base.join("testbed"),
            versions: Versions::pinned()?,
        })
    }

    /// The directory holding the built binaries of these versions; present only when complete.
    pub fn bin_dir(&self) -> PathBuf {
        self.root.join(self.versions.key()).join("bin")
    }

    /// kwokctl's work directory (`KWOK_WORKDIR`): one sub-directory per cluster.
    pub fn kwok_workdir(&self) -> PathBuf {
        self.root.join("kwok")
    }

    /// A kubeconfig file kwokctl may edit when it deletes a cluster: it insists on
    /// one, and the user's `~/.kube/config` is not ours to touch.
    pub fn scratch_kubeconfig(&self) -> PathBuf {
        self.kwok_workdir().join("scratch-kubeconfig.yaml")
    }

    /// The directory of the cluster `name`, as kwokctl lays it out.
    pub fn cluster_dir(&self, name: &str) -> PathBuf {
        self.kwok_workdir().join("clusters").join(name)
    }

    /// The Go tools module inside this repository.
    pub fn go_module() -> &'static Path {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/testbed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_versions_are_read_from_go_mod() {
        let v = Versions::pinned().expect("go.mod names all three modules");
        assert!(v.kubernetes.starts_with("v1."), "{v:?}");
        assert!(v.etcd.starts_with("v3."), "{v:?}");
        assert!(v.kwok.starts_with("v0."), "{v:?}");
        assert_eq!(v.key(), format!("{}-{}-{}", v.kubernetes, v.etcd, v.kwok));
    }

    #[test]
    fn a_go_mod_without_kwok_is_an_error() {
        let err = Versions::parse("require (\n\tk8s.io/kubernetes v1.37.2\n)\n")
            .expect_err("etcd and kwok are missing");
        assert!(
            err.to_string().contains("go.etcd.io/etcd/server/v3"),
            "{err}"
        );
    }
}
