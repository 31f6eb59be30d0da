//! Operator tooling for the test bed: `helm`, built from its Go module like the control plane, and the
//! Prometheus Operator's CRDs (PodMonitor, ServiceMonitor, PrometheusRule) taken from its Go module,
//! both cached outside the repository by version.
//!
//! ```text
//! e2e/testbed/tools/go.mod ──go build (nice)──▶ <cache>/tools/<helm>-<prometheus-operator>/bin/helm
//! go mod download github.com/prometheus-operator/prometheus-operator@<pinned>
//!     example/prometheus-operator-crd/monitoring.coreos.com_{podmonitors,servicemonitors,prometheusrules}.yaml
//!                              ──copy──▶ <cache>/tools/<helm>-<prometheus-operator>/crds/
//! ```
//!
//! As with the control plane, the versioned directory appears (one rename) only once everything in it is
//! there, so a complete cache is one `stat` and a later run returns at once.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tokio::process::Command;

use super::binaries::{build_one, run_go};
use super::versions::required_version;
use super::{Error, Layout, Result, find_on_path};

/// The tools module's `go.mod`, embedded so the cache key cannot drift from it.
const GO_MOD: &str = include_str!("../../testbed/tools/go.mod");

/// The Prometheus Operator module whose CRD files are installed. Only downloaded (nothing is built from
/// it), so it is pinned here rather than in `go.mod`, where its dependencies would move helm's.
pub const PROMETHEUS_OPERATOR: (&str, &str) = (
    "github.com/prometheus-operator/prometheus-operator",
    "v0.85.0",
);

/// The CRD files taken from the module's `example/prometheus-operator-crd/`.
const CRD_FILES: [&str; 3] = [
    "monitoring.coreos.com_podmonitors.yaml",
    "monitoring.coreos.com_servicemonitors.yaml",
    "monitoring.coreos.com_prometheusrules.yaml",
];

/// The CRD names those files define (for `kubectl wait --for=condition=Established`).
pub const CRD_NAMES: [&str; 3] = [
    "podmonitors.monitoring.coreos.com",
    "servicemonitors.monitoring.coreos.com",
    "prometheusrules.monitoring.coreos.com",
];

/// Paths to the cached tools of one set of versions.
#[derive(Debug, Clone)]
pub struct Tools {
    dir: PathBuf,
}

impl Tools {
    /// `helm`.
    pub fn helm(&self) -> PathBuf {
        self.dir.join("bin").join("helm")
    }

    /// The directory holding the Prometheus Operator's CRD files (`kubectl apply -f` it).
    pub fn prometheus_operator_crds(&self) -> PathBuf {
        self.dir.join("crds")
    }

    /// A `helm` command aimed at the cluster of `kubeconfig`, with helm's own cache, configuration and
    /// data under the tools directory (never the user's).
    pub fn helm_command(&self, kubeconfig: &Path) -> Command {
        let mut cmd = Command::new(self.helm());
        let home = self.dir.join("helm-home");
        cmd.env("KUBECONFIG", kubeconfig)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .kill_on_drop(true);
        cmd
    }

    fn complete(&self) -> bool {
        self.helm().is_file()
            && CRD_FILES
                .iter()
                .all(|f| self.prometheus_operator_crds().join(f).is_file())
    }
}

/// The helm version pinned in `e2e/testbed/tools/go.mod`.
pub fn helm_version() -> Result<String> {
    required_version(GO_MOD, "helm.sh/helm/v4")
        .ok_or_else(|| Error::GoMod("helm.sh/helm/v4 (in e2e/testbed/tools/go.mod)".to_owned()))
}

/// The Go module of the tools, inside this repository.
pub fn go_module() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/testbed/tools"))
}

/// The cached tools, building helm and fetching the CRDs first when the cache is not complete.
pub async fn ensure(layout: &Layout) -> Result<Tools> {
    let helm = helm_version()?;
    let key = format!("{helm}-{}", PROMETHEUS_OPERATOR.1);
    let root = layout.root.with_file_name("tools").join(&key);
    let tools = Tools {
        dir: root.join("ready"),
    };
    if tools.complete() {
        return Ok(tools);
    }
    let go = find_on_path("go").ok_or(Error::GoMissing)?;
    let tmp = Tools {
        dir: root.join(format!("tmp-{}", std::process::id())),
    };
    create_dir_all(&tmp.prometheus_operator_crds())?;
    let started = Instant::now();
    tracing::info!(%helm, prometheus_operator = PROMETHEUS_OPERATOR.1, into = %tools.dir.display(),
        "building helm from its Go module (first time: minutes)");
    let ldflags = format!("-s -w -X helm.sh/helm/v4/internal/version.version={helm}");
    build_one(
        &go,
        go_module(),
        &ldflags,
        "helm.sh/helm/v4/cmd/helm",
        &tmp.helm(),
    )
    .await?;
    let source = download_module(&go, &tmp.dir).await?;
    for file in CRD_FILES {
        let from = source.join("example/prometheus-operator-crd").join(file);
        let to = tmp.prometheus_operator_crds().join(file);
        std::fs::copy(&from, &to).map_err(|source| Error::Io {
            context: format!("copying {} to {}", from.display(), to.display()),
            source,
        })?;
    }
    if let Err(source) = std::fs::rename(&tmp.dir, &tools.dir) {
        if !tools.complete() {
            return Err(Error::Io {
                context: format!("moving {} to {}", tmp.dir.display(), tools.dir.display()),
                source,
            });
        }
        let _ = std::fs::remove_dir_all(&tmp.dir);
    }
    tracing::info!(
        seconds = started.elapsed().as_secs(),
        "helm and the Prometheus Operator CRDs ready"
    );
    Ok(tools)
}

/// `go mod download` of the pinned Prometheus Operator module (checked against the checksum database
/// like any module); returns the directory it was extracted to. Runs in `outside`, a directory that
/// belongs to no Go module, so no `go.mod` is read or written.
async fn download_module(go: &Path, outside: &Path) -> Result<PathBuf> {
    let (module, version) = PROMETHEUS_OPERATOR;
    let wanted = format!("{module}@{version}");
    // Outside any module, so no go.mod is read or written.
    let output = run_go(go, outside, "", &["mod", "download", "-json", &wanted]).await?;
    let info: serde_json::Value = serde_json::from_slice(&output.stdout).map_err(Error::Json)?;
    match (info["Dir"].as_str(), info["Error"].as_str()) {
        (Some(dir), None) if output.status.success() => Ok(PathBuf::from(dir)),
        (_, reason) => Err(Error::GoBuild {
            package: wanted,
            reason: reason.map_or_else(
                || String::from_utf8_lossy(&output.stderr).trim().to_owned(),
                str::to_owned,
            ),
        }),
    }
}

fn create_dir_all(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        context: format!("creating {}", dir.display()),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helm_is_pinned_in_the_tools_go_mod() {
        assert!(helm_version().expect("pinned").starts_with("v4."));
    }
}
