//! The Kubernetes test bed: a real control plane on this machine, with simulated nodes.
//!
//! etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubectl are
//! built from the Kubernetes Go modules, kwok and kwokctl from kwok's, all pinned in
//! `e2e/testbed/go.mod` ([`Versions`]) and cached outside the repository by version
//! ([`ensure_built`]). [`up`] starts a named cluster from them with kwokctl's
//! `binary` runtime; kwok plays kubelet for a few simulated nodes, so pods are
//! scheduled, get an IP and turn Running and Ready, while everything else —
//! validation, server-side apply, controllers, garbage collection, EndpointSlices —
//! is Kubernetes' own.
//!
//! ```text
//! versions ─▶ binaries (go build, cached) ─▶ cluster (kwokctl up/down) ─▶ fixture (tests)
//!                                                                   sim (kwok-only controls)
//! tools: helm (go build, cached) and the Prometheus Operator's CRDs (module download, cached)
//! ```
//!
//! Tests use [`TestBed::shared`] and [`TestBed::namespace`]; they run unchanged
//! against any cluster `KUBECONFIG` names. Only [`sim`] knows that kwok is there.
//! `e2e/TESTBED.md` is the user's guide.

mod binaries;
mod cluster;
mod fixture;
pub mod real;
pub mod sim;
pub mod tools;
mod versions;

use std::path::PathBuf;

pub use binaries::{Binaries, cached, ensure_built, find_on_path};
pub use cluster::{
    Cluster, ClusterSpec, ControlPlaneExtras, client_for, component_pids, config_for, down, list,
    up,
};
pub use fixture::{Origin, TestBed, TestNamespace};
pub use versions::{Layout, Versions};

/// What can go wrong while building, starting or using the test bed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No `go` on `PATH`.
    #[error(
        "the Go toolchain (`go`, 1.26 or newer) is not on PATH: the Kubernetes test bed builds its control plane from Go modules (or set KUBECONFIG to an existing cluster)"
    )]
    GoMissing,
    /// `go build` failed; `reason` is the line that says why (a refused module names itself).
    #[error("building the test bed failed at {package}: {reason}")]
    GoBuild {
        /// The Go package being built.
        package: String,
        /// The telling line of go's output.
        reason: String,
    },
    /// `e2e/testbed/go.mod` lacks a module the test bed needs.
    #[error("e2e/testbed/go.mod does not require {0}")]
    GoMod(String),
    /// Neither `SWITCHBOARD_CACHE_DIR`, `XDG_CACHE_HOME` nor `HOME` is set.
    #[error("no cache directory: set HOME or SWITCHBOARD_CACHE_DIR")]
    NoHome,
    /// A cluster name kwokctl would not accept or that is not a plain directory name.
    #[error("bad cluster name {0:?}: use lower-case letters, digits and '-' (at most 40)")]
    BadName(String),
    /// kwokctl failed.
    #[error("kwokctl {action} failed:\n{output}")]
    Kwokctl {
        /// What kwokctl was asked to do.
        action: String,
        /// The last lines it printed.
        output: String,
    },
    /// A file or process operation failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A kubeconfig could not be read or used.
    #[error("kubeconfig {path}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// A Kubernetes API call failed.
    #[error("a Kubernetes API call failed")]
    Kube(#[source] kube::Error),
    /// An object could not be (de)serialized.
    #[error("an object could not be (de)serialized as JSON")]
    Json(#[source] serde_json::Error),
    /// A configuration could not be written as YAML.
    #[error("a configuration could not be written as YAML")]
    Yaml(#[source] serde_yaml::Error),
    /// A program the real node needs is not installed.
    #[error("{program} is not installed: {hint}")]
    Missing {
        /// The program or file.
        program: String,
        /// How to get it.
        hint: String,
    },
    /// A command of the real node's set-up failed.
    #[error("`{command}` failed:\n{output}")]
    Command {
        /// The command line.
        command: String,
        /// The last lines it printed.
        output: String,
    },
    /// Something did not happen in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// The shared test cluster could not be had; the message says why.
    #[error("the test cluster is unavailable: {0}")]
    Unavailable(String),
}

/// The test bed's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
