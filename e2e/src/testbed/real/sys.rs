//! Running the host programs the real node is made of: one-shot commands whose
//! failure is an error with their output, and daemons that outlive this process,
//! each with a pid file and a log file so that `down` (or a later run) stops them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::testbed::{Error, Result};

/// Run `program args…`, returning its standard output; a non-zero exit is an error
/// carrying the last lines of its output.
pub async fn run(program: impl AsRef<Path>, args: &[&str]) -> Result<String> {
    run_in(program, args, None, &[]).await
}

/// [`run`] in a working directory and with extra environment variables.
pub async fn run_in(
    program: impl AsRef<Path>,
    args: &[&str],
    dir: Option<&Path>,
    env: &[(&str, &str)],
) -> Result<String> {
    let program = program.as_ref();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let line = command_line(program, args);
    tracing::debug!(command = %line, "run");
    let output = cmd.output().await.map_err(|source| Error::Io {
        context: format!("running {line}"),
        source,
    })?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        return Ok(stdout);
    }
    let text = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    Err(Error::Command {
        command: line,
        output: tail(&text, 12),
    })
}

/// [`run`] where failure is expected sometimes (deleting what may not exist).
pub async fn run_quiet(program: impl AsRef<Path>, args: &[&str]) -> bool {
    match run(program, args).await {
        Ok(_) => true,
        Err(err) => {
            tracing::debug!(%err, "ignored");
            false
        }
    }
}

fn command_line(program: &Path, args: &[&str]) -> String {
    std::iter::once(program.to_string_lossy().into_owned())
        .chain(args.iter().map(|a| (*a).to_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last `n` non-empty lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A long-running process started by [`Daemon::start`], known by its pid file.
#[derive(Debug, Clone)]
pub struct Daemon {
    /// A short name (`containerd`, `kubelet`, …): the pid file's and log file's stem.
    pub name: String,
    /// Where its pid is recorded.
    pub pid_file: PathBuf,
    /// Where its output goes.
    pub log_file: PathBuf,
}

impl Daemon {
    /// The daemon `name` of a node whose files live in `dir` (`pids/`, `logs/`).
    pub fn new(dir: &Path, name: &str) -> Self {
        Self {
            name: name.to_owned(),
            pid_file: dir.join("pids").join(format!("{name}.pid")),
            log_file: dir.join("logs").join(format!("{name}.log")),
        }
    }

    /// Start `program args…` in its own process group (so it outlives this process
    /// and a Ctrl-C of the caller does not reach it), output appended to the log file.
    pub fn start(&self, program: &Path, args: &[String]) -> Result<u32> {
        use std::os::unix::process::CommandExt as _;
        for dir in [self.pid_file.parent(), self.log_file.parent()]
            .into_iter()
            .flatten()
        {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                context: format!("creating {}", dir.display()),
                source,
            })?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .map_err(|source| Error::Io {
                context: format!("opening {}", self.log_file.display()),
                source,
            })?;
        let err = log.try_clone().map_err(|source| Error::Io {
            context: format!("opening {}", self.log_file.display()),
            source,
        })?;
        let child = std::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|source| Error::Io {
                context: format!("starting {}", program.display()),
                source,
            })?;
        let pid = child.id();
        std::fs::write(&self.pid_file, pid.to_string()).map_err(|source| Error::Io {
            context: format!("writing {}", self.pid_file.display()),
            source,
        })?;
        tracing::info!(daemon = %self.name, pid, log = %self.log_file.display(), "started");
        Ok(pid)
    }

    /// Its pid, if the pid file names a live process.
    pub fn pid(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(&self.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        alive(pid).then_some(pid)
    }

    /// Fail with the end of its log if it has exited.
    pub fn check_running(&self) -> Result<()> {
        if self.pid().is_some() {
            return Ok(());
        }
        let log = std::fs::read_to_string(&self.log_file).unwrap_or_default();
        Err(Error::Command {
            command: format!("{} (exited; log {})", self.name, self.log_file.display()),
            output: tail(&log, 15),
        })
    }

    /// SIGTERM, then SIGKILL after `grace`; removes the pid file.
    pub async fn stop(&self, grace: Duration) {
        if let Some(pid) = self.pid() {
            tracing::info!(daemon = %self.name, pid, "stopping");
            signal(pid, "TERM").await;
            let deadline = Instant::now() + grace;
            while alive(pid) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if alive(pid) {
                signal(pid, "KILL").await;
            }
        }
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

/// Whether `pid` is a live process (not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Send `SIG<name>` to one process.
pub async fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
}

/// Resident set size of a process in KiB (0 if it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// The first of `candidates` that exists, else the first program of that name on `PATH`.
pub fn program(name: &str, candidates: &[&str], hint: &str) -> Result<PathBuf> {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| crate::testbed::find_on_path(name))
        .ok_or_else(|| Error::Missing {
            program: name.to_owned(),
            hint: hint.to_owned(),
        })
}

/// Write `contents` to `path`, creating its directory.
pub fn write(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            context: format!("creating {}", dir.display()),
            source,
        })?;
    }
    std::fs::write(path, contents).map_err(|source| Error::Io {
        context: format!("writing {}", path.display()),
        source,
    })
}

pub(crate) use crate::testbed::cluster::wait_until;
