//! The project's container images, made on a machine that reaches no image registry.
//!
//! ```text
//! debootstrap --variant=minbase bookworm ─▶ <cache>/images/debian-bookworm-minbase.tar.gz
//!     ─▶ docker import ─▶ debian:bookworm-slim (a local stand-in for Debian's own image)
//! cargo build --release (chat-node, registry, operator) ─▶ <cache>/images/context/bin/
//! deploy/docker/*.Dockerfile ─docker build─▶ switchboard/{chat-node,registry,operator}:0.1.0,
//!                                            switchboard/redis:7.0.15, registry.k8s.io/pause:3.10
//!     ─▶ docker save ─▶ <cache>/images/switchboard-images-<fingerprint>.tar (what the node imports)
//! ```
//!
//! The Dockerfiles are the ones a Docker host uses unchanged (`deploy/docker/README.md`);
//! only the base image is made here. `dockerd` runs just for the build, with no bridge,
//! no iptables rules and no IP forwarding, and is stopped afterwards. When nothing that
//! goes into the images changed, the saved archive is reused and Docker is not started.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::testbed::{Error, Result};

use super::build::NodeBinaries;
use super::sys::{self, Daemon};

/// The tag of the project's own images (the operator's defaults name it).
pub const TAG: &str = "0.1.0";
/// The Redis image built from `deploy/docker/redis.Dockerfile`: Debian 12's Redis.
pub const REDIS_IMAGE: &str = "switchboard/redis:7.0.15";
/// The sandbox image containerd is configured with.
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10";
/// The base image the Dockerfiles start from, made here by debootstrap.
pub const BASE_IMAGE: &str = "debian:bookworm-slim";
/// Names the node's image store also gives an image, `(existing, alias)`: the
/// operator's default Redis image is `redis:7.4-alpine`, which cannot be pulled here;
/// the local Redis image (same contract: `sh`, `timeout`, `redis-server`,
/// `redis-sentinel`, `redis-cli`) stands in for it, so a ChatCluster with defaults runs.
/// The chat-node image also answers to [`ROLLOUT_NODE_IMAGE`], a second tag a test can
/// switch a ChatCluster to, so that its pods roll as they do for a new release.
pub const ALIASES: [(&str, &str); 2] = [
    (
        "docker.io/switchboard/redis:7.0.15",
        "docker.io/library/redis:7.4-alpine",
    ),
    ("docker.io/switchboard/chat-node:0.1.0", ROLLOUT_NODE_IMAGE),
];

/// A second tag of the chat-node image (see [`ALIASES`]).
pub const ROLLOUT_NODE_IMAGE: &str = "docker.io/switchboard/chat-node:0.1.0-rollout";

/// The Rust binaries that go into images, each with its Dockerfile.
const RUST_IMAGES: [&str; 3] = ["chat-node", "registry", "operator"];

/// The pause image: one static binary and nothing else.
const PAUSE_DOCKERFILE: &str =
    "FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT [\"/pause\"]\n";

/// Where images and their inputs are kept: `<cache>/images`.
#[derive(Debug, Clone)]
pub struct ImageCache {
    root: PathBuf,
}

/// The images, saved as one archive for `ctr images import`.
#[derive(Debug, Clone)]
pub struct ImageArchive {
    /// The `docker save` archive.
    pub path: PathBuf,
    /// The names in it.
    pub names: Vec<String>,
}

impl ImageCache {
    /// The cache under `base` (`~/.cache/switchboard`).
    pub fn new(base: &Path) -> Self {
        Self {
            root: base.join("images"),
        }
    }

    fn base_tarball(&self) -> PathBuf {
        self.root.join("debian-bookworm-minbase.tar.gz")
    }

    fn context(&self) -> PathBuf {
        self.root.join("context")
    }
}

/// The repository this crate lives in.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Every name in the archive.
pub fn image_names() -> Vec<String> {
    RUST_IMAGES
        .iter()
        .map(|n| format!("switchboard/{n}:{TAG}"))
        .chain([REDIS_IMAGE.to_owned(), PAUSE_IMAGE.to_owned()])
        .collect()
}

/// Build (or reuse) the project's images and return the archive holding them.
pub async fn ensure_images(
    cache: &ImageCache,
    base: &Path,
    node: &NodeBinaries,
) -> Result<ImageArchive> {
    let started = Instant::now();
    let binaries = release_build(base).await?;
    let tarball = ensure_base_tarball(cache).await?;
    let context = stage_context(cache, &binaries, node).await?;
    let fingerprint = fingerprint(&context, &tarball)?;
    let path = cache
        .root
        .join(format!("switchboard-images-{fingerprint:016x}.tar"));
    let names = image_names();
    if path.is_file() {
        tracing::info!(archive = %path.display(), "images unchanged; reusing the saved archive");
        return Ok(ImageArchive { path, names });
    }
    let docker = DockerHost::start(base).await?;
    let built = build_all(&docker, cache, &context, &tarball, &path, &names).await;
    docker.stop().await;
    built?;
    // Older archives are never used again.
    if let Ok(entries) = std::fs::read_dir(&cache.root) {
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p != path && name.starts_with("switchboard-images-") && name.ends_with(".tar") {
                let _ = std::fs::remove_file(p);
            }
        }
    }
    tracing::info!(seconds = started.elapsed().as_secs(), archive = %path.display(), "images built");
    Ok(ImageArchive { path, names })
}

async fn build_all(
    docker: &DockerHost,
    cache: &ImageCache,
    context: &Path,
    tarball: &Path,
    archive: &Path,
    names: &[String],
) -> Result<()> {
    let tarball = tarball.to_string_lossy();
    if docker.run(&["image", "inspect", BASE_IMAGE]).await.is_err() {
        let t = Instant::now();
        docker
            .run(&[
                "import",
                "--change",
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--change",
                "CMD [\"bash\"]",
                &tarball,
                BASE_IMAGE,
            ])
            .await?;
        tracing::info!(
            seconds = t.elapsed().as_secs(),
            image = BASE_IMAGE,
            "imported the base image"
        );
    }
    let deploy = repo_root().join("deploy").join("docker");
    let context = context.to_string_lossy();
    for name in RUST_IMAGES {
        let file = deploy.join(format!("{name}.Dockerfile"));
        docker
            .build(&file, &format!("switchboard/{name}:{TAG}"), &context, false)
            .await?;
    }
    // The only build that installs packages: Debian's registry, like apt-get on the host.
    docker
        .build(
            &deploy.join("redis.Dockerfile"),
            REDIS_IMAGE,
            &deploy.to_string_lossy(),
            true,
        )
        .await?;
    let pause_context = cache.context().join("pause");
    docker
        .build(
            &pause_context.join("Dockerfile"),
            PAUSE_IMAGE,
            &pause_context.to_string_lossy(),
            false,
        )
        .await?;
    let t = Instant::now();
    let tmp = archive.with_extension("tar.tmp");
    let tmp_s = tmp.to_string_lossy().into_owned();
    let mut args = vec!["save", "-o", tmp_s.as_str()];
    args.extend(names.iter().map(String::as_str));
    docker.run(&args).await?;
    std::fs::rename(&tmp, archive).map_err(|source| Error::Io {
        context: format!("moving {} to {}", tmp.display(), archive.display()),
        source,
    })?;
    tracing::info!(seconds = t.elapsed().as_secs(), "saved the images");
    Ok(())
}

/// `cargo build --release` of the three images' binaries, into a target directory of
/// its own (`<cache>/target-release`) so that it never waits on a debug build.
async fn release_build(base: &Path) -> Result<PathBuf> {
    let target = std::env::var_os("SWITCHBOARD_RELEASE_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| base.join("target-release"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let t = Instant::now();
    tracing::info!(target = %target.display(), "cargo build --release (chat-node, registry, operator)");
    let target_s = target.to_string_lossy().into_owned();
    let mut args = vec!["build", "--release", "--locked"];
    for name in RUST_IMAGES {
        args.extend(["-p", name, "--bin", name]);
    }
    sys::run_in(
        &cargo,
        &args,
        Some(&repo_root()),
        &[("CARGO_TARGET_DIR", target_s.as_str())],
    )
    .await?;
    tracing::info!(seconds = t.elapsed().as_secs(), "release binaries ready");
    Ok(target.join("release"))
}

/// The Debian base tarball, made by debootstrap on first use. Its apt sources are
/// the host's own, so `apt-get` in a build reaches the same Debian archive.
async fn ensure_base_tarball(cache: &ImageCache) -> Result<PathBuf> {
    let tarball = cache.base_tarball();
    if tarball.is_file() {
        return Ok(tarball);
    }
    let debootstrap = sys::program(
        "debootstrap",
        &["/usr/sbin/debootstrap"],
        "apt-get install debootstrap",
    )?;
    let t = Instant::now();
    let rootfs = cache
        .root
        .join(format!("rootfs.tmp-{}", std::process::id()));
    let rootfs_s = rootfs.to_string_lossy().into_owned();
    tracing::info!("debootstrap --variant=minbase bookworm (about a minute)");
    sys::run(&debootstrap, &["--variant=minbase", "bookworm", &rootfs_s]).await?;
    let sources = Path::new("/etc/apt/sources.list.d/debian.sources");
    if sources.is_file() {
        let _ = std::fs::remove_file(rootfs.join("etc/apt/sources.list"));
        let to = rootfs.join("etc/apt/sources.list.d/debian.sources");
        std::fs::copy(sources, &to).map_err(|source| Error::Io {
            context: format!("copying {} to {}", sources.display(), to.display()),
            source,
        })?;
    }
    sys::run("chroot", &[&rootfs_s, "apt-get", "clean"]).await?;
    for dir in ["var/lib/apt/lists", "var/log"] {
        let d = rootfs.join(dir);
        let _ = std::fs::remove_dir_all(&d);
        let _ = std::fs::create_dir_all(&d);
    }
    let tmp = tarball.with_extension("tmp");
    let tmp_s = tmp.to_string_lossy().into_owned();
    sys::run(
        "tar",
        &["--numeric-owner", "-C", &rootfs_s, "-czf", &tmp_s, "."],
    )
    .await?;
    std::fs::rename(&tmp, &tarball).map_err(|source| Error::Io {
        context: format!("moving {} to {}", tmp.display(), tarball.display()),
        source,
    })?;
    let _ = std::fs::remove_dir_all(&rootfs);
    tracing::info!(seconds = t.elapsed().as_secs(), tarball = %tarball.display(), "base image made");
    Ok(tarball)
}

/// The build context the Rust images' Dockerfiles expect (`bin/<name>`), and the
/// pause image's. The Rust binaries lose their debug info on the way (`strip
/// --strip-debug`: symbols stay for backtraces), which makes them a third of the size.
async fn stage_context(cache: &ImageCache, release: &Path, node: &NodeBinaries) -> Result<PathBuf> {
    let context = cache.context();
    for name in RUST_IMAGES {
        stage(&release.join(name), &context.join("bin").join(name), true).await?;
    }
    stage(
        &node.path("pause"),
        &context.join("pause").join("pause"),
        false,
    )
    .await?;
    sys::write(&context.join("pause").join("Dockerfile"), PAUSE_DOCKERFILE)?;
    Ok(context)
}

/// Copy `from` to `to` unless `to` is at least as new; the copy's modification
/// time is part of the images' fingerprint, so an unchanged input stays unchanged.
async fn stage(from: &Path, to: &Path, strip: bool) -> Result<()> {
    let newer = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if newer(to).is_some() && newer(to) >= newer(from) {
        return Ok(());
    }
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            context: format!("creating {}", dir.display()),
            source,
        })?;
    }
    if strip {
        let (from_s, to_s) = (from.to_string_lossy(), to.to_string_lossy());
        sys::run("strip", &["--strip-debug", "-o", &to_s, &from_s]).await?;
    } else {
        std::fs::copy(from, to).map_err(|source| Error::Io {
            context: format!("copying {} to {}", from.display(), to.display()),
            source,
        })?;
    }
    Ok(())
}

/// A key over everything that goes into the images: the staged binaries (size and
/// modification time), the Dockerfiles and the base tarball.
fn fingerprint(context: &Path, tarball: &Path) -> Result<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut files: Vec<PathBuf> = RUST_IMAGES
        .iter()
        .map(|n| context.join("bin").join(n))
        .collect();
    files.push(context.join("pause").join("pause"));
    files.push(tarball.to_path_buf());
    for f in &files {
        let meta = std::fs::metadata(f).map_err(|source| Error::Io {
            context: format!("reading {}", f.display()),
            source,
        })?;
        f.hash(&mut h);
        meta.len().hash(&mut h);
        meta.modified().ok().hash(&mut h);
    }
    let deploy = repo_root().join("deploy").join("docker");
    for name in RUST_IMAGES.iter().copied().chain(["redis"]) {
        let f = deploy.join(format!("{name}.Dockerfile"));
        let text = std::fs::read(&f).map_err(|source| Error::Io {
            context: format!("reading {}", f.display()),
            source,
        })?;
        text.hash(&mut h);
    }
    PAUSE_DOCKERFILE.hash(&mut h);
    Ok(h.finish())
}

/// A Docker daemon for building images only.
struct DockerHost {
    docker: PathBuf,
    host: String,
    daemon: Daemon,
    started_here: bool,
}

/// Where the build daemon keeps its runtime files (sockets must be short paths).
const DOCKER_RUN_DIR: &str = "/run/switchboard/docker";

impl DockerHost {
    async fn start(base: &Path) -> Result<Self> {
        let dockerd = sys::program(
            "dockerd",
            &["/usr/sbin/dockerd"],
            "apt-get install docker.io",
        )?;
        // The client of Debian's docker.io matches its daemon; another client on PATH
        // may default to BuildKit plugins that are not installed.
        let docker = sys::program("docker", &["/usr/bin/docker"], "apt-get install docker.io")?;
        let run = Path::new(DOCKER_RUN_DIR);
        let socket = run.join("docker.sock");
        let host = format!("unix://{}", socket.display());
        let daemon = Daemon::new(&base.join("docker"), "dockerd");
        let mut this = Self {
            docker,
            host,
            daemon,
            started_here: false,
        };
        if this.daemon.pid().is_some() && this.run(&["version"]).await.is_ok() {
            return Ok(this);
        }
        let data = base.join("docker").join("data");
        std::fs::create_dir_all(&data).map_err(|source| Error::Io {
            context: format!("creating {}", data.display()),
            source,
        })?;
        let args: Vec<String> = vec![
            "--data-root".into(),
            data.to_string_lossy().into_owned(),
            "--exec-root".into(),
            run.join("exec").to_string_lossy().into_owned(),
            "--pidfile".into(),
            run.join("dockerd.pid").to_string_lossy().into_owned(),
            "-H".into(),
            this.host.clone(),
            // A builder only: no docker0 bridge, no NAT, no forwarding on the host.
            "--bridge=none".into(),
            "--iptables=false".into(),
            "--ip6tables=false".into(),
            "--ip-forward=false".into(),
            "--ip-masq=false".into(),
            "--storage-driver=overlay2".into(),
        ];
        this.daemon.start(&dockerd, &args)?;
        this.started_here = true;
        let probe = this.docker.clone();
        let host = this.host.clone();
        sys::wait_until("dockerd to answer", Duration::from_secs(60), || {
            let probe = probe.clone();
            let host = host.clone();
            async move {
                Ok(
                    sys::run_in(&probe, &["version"], None, &[("DOCKER_HOST", &host)])
                        .await
                        .is_ok(),
                )
            }
        })
        .await?;
        Ok(this)
    }

    async fn run(&self, args: &[&str]) -> Result<String> {
        sys::run_in(
            &self.docker,
            args,
            None,
            &[("DOCKER_HOST", &self.host), ("DOCKER_BUILDKIT", "0")],
        )
        .await
    }

    async fn build(&self, file: &Path, tag: &str, context: &str, network: bool) -> Result<()> {
        let t = Instant::now();
        let file_s = file.to_string_lossy().into_owned();
        let mut args = vec!["build", "-q", "-f", &file_s, "-t", tag];
        // Without a bridge a build step has no network unless it shares the host's.
        args.extend(if network {
            ["--network", "host"]
        } else {
            ["--network", "none"]
        });
        args.push(context);
        self.run(&args).await?;
        tracing::info!(image = tag, seconds = t.elapsed().as_secs(), "built");
        Ok(())
    }

    async fn stop(self) {
        if self.started_here {
            self.daemon.stop(Duration::from_secs(20)).await;
            // dockerd leaves its default network namespace mounted under the exec root.
            let exec = Path::new(DOCKER_RUN_DIR)
                .join("exec")
                .join("netns")
                .join("default");
            if exec.exists() {
                sys::run_quiet("umount", &[&exec.to_string_lossy()]).await;
            }
        }
    }
}
