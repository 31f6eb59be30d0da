//! Building the control plane from the pinned Go modules into the version-keyed cache.
//!
//! ```text
//! e2e/testbed/go.mod ──go build──▶ <cache>/testbed/<k8s>-<etcd>-<kwok>/bin.tmp-<pid>/
//!                                         │ all seven built
//!                                         ▼ rename (atomic)
//!                                  <cache>/testbed/<k8s>-<etcd>-<kwok>/bin/
//! ```
//!
//! A `bin/` directory exists only once every binary in it was built, so "the cache
//! is complete" is one `stat`. Builds run under `nice` because the machine's two
//! cores are shared with Rust builds.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use tokio::process::Command;

use super::versions::Layout;
use super::{Error, Result};

/// The commands the test bed needs, each with the Go package it is built from.
const COMMANDS: [(&str, Source); 7] = [
    ("etcd", Source::Etcd),
    ("kube-apiserver", Source::Kubernetes("cmd/kube-apiserver")),
    (
        "kube-controller-manager",
        Source::Kubernetes("cmd/kube-controller-manager"),
    ),
    ("kube-scheduler", Source::Kubernetes("cmd/kube-scheduler")),
    ("kubectl", Source::Kubernetes("cmd/kubectl")),
    ("kwok", Source::Kwok("cmd/kwok")),
    ("kwokctl", Source::Kwok("cmd/kwokctl")),
];

#[derive(Debug, Clone, Copy)]
enum Source {
    Etcd,
    Kubernetes(&'static str),
    Kwok(&'static str),
}

impl Source {
    fn package(self) -> String {
        match self {
            Source::Etcd => "go.etcd.io/etcd/server/v3".to_owned(),
            Source::Kubernetes(cmd) => format!("k8s.io/kubernetes/{cmd}"),
            Source::Kwok(cmd) => format!("sigs.k8s.io/kwok/{cmd}"),
        }
    }
}

/// Paths to the built binaries of one set of versions.
#[derive(Debug, Clone)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// The binaries in `dir` (not checked).
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory holding them.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of one command, e.g. `kubectl`.
    pub fn path(&self, command: &str) -> PathBuf {
        self.dir.join(command)
    }

    /// `kubectl` built from the pinned Kubernetes version.
    pub fn kubectl(&self) -> PathBuf {
        self.path("kubectl")
    }

    /// `kwokctl`, which creates and deletes clusters.
    pub fn kwokctl(&self) -> PathBuf {
        self.path("kwokctl")
    }

    fn complete(&self) -> bool {
        COMMANDS.iter().all(|(name, _)| self.path(name).is_file())
    }
}

/// The cached binaries if every one of them is there.
pub fn cached(layout: &Layout) -> Option<Binaries> {
    let bins = Binaries::in_dir(layout.bin_dir());
    bins.complete().then_some(bins)
}

/// The cached binaries, building the whole set first when the cache is not complete.
pub async fn ensure_built(layout: &Layout) -> Result<Binaries> {
    if let Some(bins) = cached(layout) {
        tracing::debug!(dir = %bins.dir().display(), "test bed binaries cached");
        return Ok(bins);
    }
    let go = find_on_path("go").ok_or(Error::GoMissing)?;
    let v = &layout.versions;
    let final_dir = layout.bin_dir();
    let parent = final_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| layout.root.clone());
    let tmp = parent.join(format!("bin.tmp-{}", std::process::id()));
    create_dir_all(&tmp).await?;

    let started = Instant::now();
    tracing::info!(
        kubernetes = %v.kubernetes, etcd = %v.etcd, kwok = %v.kwok, into = %final_dir.display(),
        "building the test bed from Go modules (first time: many minutes)"
    );
    let ldflags = ldflags(layout);
    for (name, source) in COMMANDS {
        let one = Instant::now();
        build_one(
            &go,
            Layout::go_module(),
            &ldflags,
            &source.package(),
            &tmp.join(name),
        )
        .await?;
        tracing::info!(command = name, seconds = one.elapsed().as_secs(), "built");
    }
    match tokio::fs::rename(&tmp, &final_dir).await {
        Ok(()) => {}
        // Another process finished the same build first: theirs is as good as ours.
        Err(_) if Binaries::in_dir(&final_dir).complete() => {
            let _ = tokio::fs::remove_dir_all(&tmp).await;
        }
        Err(source) => {
            return Err(Error::Io {
                context: format!("moving {} to {}", tmp.display(), final_dir.display()),
                source,
            });
        }
    }
    tracing::info!(
        seconds = started.elapsed().as_secs(),
        "test bed binaries built"
    );
    Ok(Binaries::in_dir(final_dir))
}

/// Version stamps the release builds set, so each binary reports its real version
/// (kwokctl reads `--version` to pick flags) instead of `v0.0.0-master`.
fn ldflags(layout: &Layout) -> String {
    let k8s = &layout.versions.kubernetes;
    let minor = k8s.split('.').nth(1).unwrap_or_default();
    let kube_plain = k8s.trim_start_matches('v');
    let mut flags = vec!["-s".to_owned(), "-w".to_owned()];
    for pkg in [
        "k8s.io/component-base/version",
        "k8s.io/client-go/pkg/version",
    ] {
        flags.push(format!("-X {pkg}.gitVersion={k8s}"));
        flags.push(format!("-X {pkg}.gitMajor=1"));
        flags.push(format!("-X {pkg}.gitMinor={minor}"));
        flags.push(format!("-X {pkg}.gitTreeState=clean"));
    }
    flags.push(format!(
        "-X sigs.k8s.io/kwok/pkg/consts.KubeVersion={kube_plain}"
    ));
    flags.join(" ")
}

/// `go build` of `package` from the Go module in `module` into `out`, under `nice`, with the module's
/// pinned versions only (read-only `go.mod`, the local toolchain).
pub(crate) async fn build_one(
    go: &Path,
    module: &Path,
    ldflags: &str,
    package: &str,
    out: &Path,
) -> Result<()> {
    let out = out.to_string_lossy();
    let args = [
        "build",
        "-trimpath",
        "-ldflags",
        ldflags,
        "-o",
        &out,
        package,
    ];
    let output = run_go(go, module, "-mod=readonly -buildvcs=false", &args).await?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(Error::GoBuild {
        package: package.to_owned(),
        reason: first_go_error(&stderr),
    })
}

/// The line of `go build`'s output that says what went wrong (a refused module
/// names itself in a `go: ...` line), else its last line together with the module
/// go was fetching at the time.
fn first_go_error(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let fetching = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("go: downloading "));
    let telling = lines.iter().find(|l| {
        l.starts_with("go: ") && !l.starts_with("go: downloading")
            || l.contains("403 Forbidden")
            || l.contains("404 Not Found")
    });
    match (telling, lines.last(), fetching) {
        (Some(line), _, _) => (*line).to_owned(),
        (None, Some(last), Some(module)) => format!("{last} (fetching {module})"),
        (None, Some(last), None) => (*last).to_owned(),
        (None, None, _) => "no output".to_owned(),
    }
}

/// Runs `go <args>` in `dir` under `nice` (the machine's cores are shared with Rust builds) with `GOFLAGS`
/// `goflags`, never switching to a downloaded toolchain; returns its output.
pub(crate) async fn run_go(
    go: &Path,
    dir: &Path,
    goflags: &str,
    args: &[&str],
) -> Result<std::process::Output> {
    Command::new("nice")
        .arg("-n")
        .arg("10")
        .arg(go)
        .args(args)
        .current_dir(dir)
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", goflags)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| Error::Io {
            context: format!("running {} {}", go.display(), args.join(" ")),
            source,
        })
}

/// The first executable called `name` on `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

async fn create_dir_all(dir: &Path) -> Result<()> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|source| Error::Io {
            context: format!("creating {}", dir.display()),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_module_is_named_in_one_line() {
        let stderr = "go: downloading k8s.io/api v0.37.2\n\
            go: k8s.io/api@v0.37.2: reading https://proxy/k8s.io/api/@v/v0.37.2.zip: 403 Forbidden\n\
            \tserver response: not available\n";
        assert_eq!(
            first_go_error(stderr),
            "go: k8s.io/api@v0.37.2: reading https://proxy/k8s.io/api/@v/v0.37.2.zip: 403 Forbidden"
        );
    }

    #[test]
    fn a_disabled_proxy_names_the_module_it_wanted() {
        let stderr = "go: downloading go.etcd.io/etcd/server/v3 v3.7.0\nmodule lookup disabled by GOPROXY=off\n";
        assert_eq!(
            first_go_error(stderr),
            "module lookup disabled by GOPROXY=off (fetching go.etcd.io/etcd/server/v3 v3.7.0)"
        );
    }

    #[test]
    fn a_compile_error_reports_its_last_line() {
        assert_eq!(
            first_go_error("# pkg\n./a.go:1: undefined: x\n"),
            "./a.go:1: undefined: x"
        );
    }
}
