//! Test harness: real `redis-server` and `redis-sentinel` processes on free loopback ports, for the
//! integration tests of every crate (a `dev-dependency`; nothing shipped links it).
//!
//! ```text
//! RedisServer::builder().password("pw").start()        redis-server --port N --save '' --appendonly no ...
//! RedisServer::builder().replica_of(&master).start()    ... --replicaof 127.0.0.1 <master port>
//! Sentinel::builder(&master).start()                    redis-sentinel <generated sentinel.conf>
//! RedisHa::start(HaConfig::default())                   1 master + replicas + sentinels, ready to fail over
//! ```
//!
//! Each process gets its own temporary directory (config, log, working dir) which is removed on drop;
//! dropping a handle kills its process. Readiness is checked by polling `PING` (and, for replicas and
//! sentinels, the replication/monitoring state) until a deadline; a failure reports the last log lines.
//! A missing binary is an error that says how to install it, never a silent skip.
//!
//! Tests of several crates run at the same time on one machine, so the harness keeps their topologies
//! apart: [`free_port`] never hands out a port twice in a process, and every server renames
//! `SLAVEOF`/`REPLICAOF` to per-process secret names that only this process's sentinels know (see
//! [`replicaof_command_names`]): a sentinel still looking for a master it lost cannot hijack a new server
//! that happens to get the old port.
//!
//! The harness speaks a few lines of RESP itself ([`command`]) for the state it inspects; which master a
//! sentinel names is asked with the one query every component uses ([`switchboard_redis::sentinel`]).
//! [`eventually`] is the one polling helper of every test suite.

pub mod s3;
pub mod tls;

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use switchboard_redis::RedisArgs;

/// How long a process may take to become ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Interval between readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How long one `SENTINEL get-master-addr-by-name` may take.
const SENTINEL_QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// How often [`eventually`] asks again.
const EVENTUALLY_POLL: Duration = Duration::from_millis(50);

/// Polls `check` every 50 ms until it yields `Some`, and returns that; panics naming `what` once `within`
/// has passed. The one waiting helper of every test suite (a `bool` check can return `then_some(())`).
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "not true within {within:?}: {what}"
        );
        tokio::time::sleep(EVENTUALLY_POLL).await;
    }
}

const INSTALL_HINT: &str = "install it with: apt-get install redis-server redis-sentinel";

/// A free TCP port on 127.0.0.1 (bound and released; the usual tiny race is retried by the starters).
///
/// A port is never handed out twice in one process: a sentinel of one test keeps probing the port of a
/// master it lost, and would turn a new server that another test started on that port into a replica.
pub fn free_port() -> io::Result<u16> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    for _ in 0..1000 {
        // Below the kernel's ephemeral range (`ip_local_port_range`, 32768 and up by default): a port
        // from `bind(0)` is one any outgoing connection of a parallel test may take as its source port
        // between this check and the server's own bind.
        let port = fastrand::u16(FREE_PORTS);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        let mut handed_out = HANDED_OUT
            .lock()
            .map_err(|_| io::Error::other("port registry poisoned"))?;
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
    Err(io::Error::other("no unused free port found"))
}

/// Where [`free_port`] looks: above the ports most services use, below Kubernetes' NodePort range
/// (30000–32767, which kube-proxy on the test bed's real node redirects) and the ephemeral range.
const FREE_PORTS: std::ops::Range<u16> = 20_000..30_000;

/// Secret names of `SLAVEOF` / `REPLICAOF` for every server this process starts (random per process).
///
/// Sentinels started by this harness are told the names (`sentinel rename-command`); a sentinel of
/// another process (another test binary running at the same time), still probing a port it lost that
/// our server now uses, cannot reconfigure our server.
pub fn replicaof_command_names() -> &'static (String, String) {
    static NAMES: OnceLock<(String, String)> = OnceLock::new();
    NAMES.get_or_init(|| {
        let token = format!("{}{:016x}", std::process::id(), fastrand::u64(..));
        (format!("SLAVEOF-{token}"), format!("REPLICAOF-{token}"))
    })
}

/// Finds `name` on `PATH` or in the usual Debian locations; a clear error says how to install it.
pub fn find_binary(name: &str) -> io::Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/bin", "/usr/sbin", "/usr/local/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            io::Error::new(
                ErrorKind::NotFound,
                format!("{name} not found on PATH or in /usr/bin, /usr/local/bin; {INSTALL_HINT}"),
            )
        })
}

/// A RESP reply, as far as tests need one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`
    Error(String),
    /// `:1`
    Int(i64),
    /// `$n` (None for the null bulk string)
    Bulk(Option<String>),
    /// `*n` (None for the null array)
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The text of a simple or bulk string reply.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Reply::Simple(s) | Reply::Bulk(Some(s)) => Some(s),
            _ => None,
        }
    }

    /// The items of an array reply (empty for anything else).
    pub fn items(&self) -> &[Reply] {
        match self {
            Reply::Array(Some(items)) => items,
            _ => &[],
        }
    }
}

/// Sends one command to `127.0.0.1:port` on a fresh connection (after `AUTH password` if given) and
/// returns the reply. An error reply is returned as [`Reply::Error`], not as `Err`.
pub async fn command(port: u16, password: Option<&str>, args: &[&str]) -> io::Result<Reply> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut stream = BufReader::new(stream);
    if let Some(password) = password {
        write_command(&mut stream, &["AUTH", password]).await?;
        if let Reply::Error(e) = read_reply(&mut stream).await? {
            return Err(io::Error::other(format!("AUTH failed on port {port}: {e}")));
        }
    }
    write_command(&mut stream, args).await?;
    read_reply(&mut stream).await
}

async fn write_command(stream: &mut BufReader<TcpStream>, args: &[&str]) -> io::Result<()> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    stream.get_mut().write_all(&out).await
}

fn read_reply(
    stream: &mut BufReader<TcpStream>,
) -> Pin<Box<dyn Future<Output = io::Result<Reply>> + Send + '_>> {
    Box::pin(async move {
        let mut line = String::new();
        if stream.read_line(&mut line).await? == 0 {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        let bad = || io::Error::new(ErrorKind::InvalidData, format!("bad RESP line {line:?}"));
        let (kind, rest) = line.split_at_checked(1).ok_or_else(bad)?;
        match kind {
            "+" => Ok(Reply::Simple(rest.to_owned())),
            "-" => Ok(Reply::Error(rest.to_owned())),
            ":" => Ok(Reply::Int(rest.parse().map_err(|_| bad())?)),
            "$" => {
                let len: i64 = rest.parse().map_err(|_| bad())?;
                let Ok(len) = usize::try_from(len) else {
                    return Ok(Reply::Bulk(None));
                };
                let mut buf = vec![0; len + 2];
                stream.read_exact(&mut buf).await?;
                buf.truncate(len);
                Ok(Reply::Bulk(Some(
                    String::from_utf8_lossy(&buf).into_owned(),
                )))
            }
            "*" => {
                let len: i64 = rest.parse().map_err(|_| bad())?;
                let Ok(len) = usize::try_from(len) else {
                    return Ok(Reply::Array(None));
                };
                let mut items = Vec::with_capacity(len);
                for _ in 0..len {
                    items.push(read_reply(stream).await?);
                }
                Ok(Reply::Array(Some(items)))
            }
            _ => Err(bad()),
        }
    })
}

/// A unique temporary directory, removed by [`Process`]'s drop.
fn temp_dir(kind: &str) -> io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "switchboard-{kind}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: VecDeque<&str> = text.lines().rev().take(15).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// A child process with its directory; killed and cleaned up on drop.
struct Process {
    child: Option<Child>,
    dir: PathBuf,
    log: PathBuf,
}

impl Process {
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: &str) -> io::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| io::Error::other("process is not running"))?;
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "kill {signal} {pid} failed: {status}"
            )))
        }
    }

    fn exited(&mut self) -> Option<String> {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => Some(status.to_string()),
            Some(Err(e)) => Some(e.to_string()),
            Some(Ok(None)) => None,
            None => Some("killed".to_owned()),
        }
    }

    fn failure(&self, what: &str, detail: &str) -> io::Error {
        io::Error::other(format!(
            "{what}: {detail}\n--- last lines of {} ---\n{}",
            self.log.display(),
            log_tail(&self.log)
        ))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `probe` until it returns `Ok(true)` or `timeout` passes.
async fn wait_until<F, Fut>(timeout: Duration, mut probe: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = io::Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe().await {
            Ok(true) => return Ok(()),
            Ok(false) => "not ready yet".to_owned(),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(format!("not ready after {timeout:?} (last: {last})"));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A `redis-server` process on a loopback port (no persistence).
pub struct RedisServer {
    process: Process,
    port: u16,
    password: Option<String>,
    args: Vec<String>,
}

/// Options for [`RedisServer`].
#[derive(Clone, Debug, Default)]
pub struct RedisServerBuilder {
    password: Option<String>,
    replica_of: Option<u16>,
    extra: Vec<String>,
}

impl RedisServerBuilder {
    /// Require this password (`requirepass`); also used as `masterauth` so the server can replicate from
    /// (or become a replica of) servers with the same password.
    #[must_use]
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Start as a replica of `master` (`replicaof 127.0.0.1 <port>`); `start` waits until the initial
    /// sync is done.
    #[must_use]
    pub fn replica_of(mut self, master: &RedisServer) -> Self {
        self.replica_of = Some(master.port);
        self
    }

    /// Extra command-line arguments (`["--maxmemory", "10mb"]`).
    #[must_use]
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra.push(arg.into());
        self
    }

    /// Starts the server and waits until it answers `PING` (and, for a replica, is in sync).
    pub async fn start(self) -> io::Result<RedisServer> {
        let binary = find_binary("redis-server")?;
        let mut last_error = None;
        for _ in 0..3 {
            let port = free_port()?;
            let dir = temp_dir("redis")?;
            let mut args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--protected-mode",
                "no",
                "--dir",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            args.push(dir.display().to_string());
            args.extend([
                "--logfile".to_owned(),
                dir.join("redis.log").display().to_string(),
            ]);
            let (slaveof, replicaof) = replicaof_command_names();
            args.extend(["--rename-command".into(), "SLAVEOF".into(), slaveof.clone()]);
            args.extend([
                "--rename-command".into(),
                "REPLICAOF".into(),
                replicaof.clone(),
            ]);
            if let Some(password) = &self.password {
                // In a config file, not on the command line, where every local user could read it
                // (`ps`, /proc/PID/cmdline). A config file must be redis-server's first argument.
                let conf = dir.join("auth.conf");
                std::fs::write(
                    &conf,
                    format!("requirepass \"{password}\"\nmasterauth \"{password}\"\n"),
                )?;
                args.insert(0, conf.display().to_string());
            }
            if let Some(master) = self.replica_of {
                args.extend(["--replicaof".into(), "127.0.0.1".into(), master.to_string()]);
            }
            args.extend(self.extra.iter().cloned());
            let process = spawn(&binary, &args, dir, "redis.log")?;
            let mut server = RedisServer {
                process,
                port,
                password: self.password.clone(),
                args,
            };
            match server.wait_ready(self.replica_of.is_some()).await {
                Ok(()) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }
}

fn spawn(binary: &Path, args: &[String], dir: PathBuf, log_name: &str) -> io::Result<Process> {
    let log = dir.join(log_name);
    let child = Command::new(binary)
        .args(args)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot start {}: {e}; {INSTALL_HINT}", binary.display()),
            )
        })?;
    Ok(Process {
        child: Some(child),
        dir,
        log,
    })
}

impl RedisServer {
    /// Options for a new server.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// Starts a server without a password.
    pub async fn start() -> io::Result<Self> {
        Self::builder().start().await
    }

    /// Starts a server that requires `password`.
    pub async fn start_with_password(password: &str) -> io::Result<Self> {
        Self::builder().password(password).start().await
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The password it requires, if any.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// `redis://[:password@]127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    /// [`RedisArgs`] that connect to this server by URL.
    pub fn redis_args(&self) -> RedisArgs {
        RedisArgs::from_url(self.url())
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Kills the server with SIGKILL and waits for it to exit.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Freezes the server (SIGSTOP): its sockets stay open but nothing answers.
    pub fn stop(&self) -> io::Result<()> {
        self.process.signal("-STOP")
    }

    /// Resumes a server frozen by [`RedisServer::stop`] (SIGCONT).
    pub fn resume(&self) -> io::Result<()> {
        self.process.signal("-CONT")
    }

    /// Starts the server again on the same port with the same arguments (after [`RedisServer::kill`]),
    /// and waits for `PING`. Its data is gone (no persistence); as a former master it comes back as a
    /// master until a sentinel reconfigures it.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.process.kill();
        let binary = find_binary("redis-server")?;
        let dir = self.process.dir.clone();
        let log = self.process.log.clone();
        let child = Command::new(binary)
            .args(&self.args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.process.child = Some(child);
        self.process.log = log;
        self.wait_ready(false).await
    }

    /// Sends one command (authenticated if the server has a password).
    pub async fn command(&self, args: &[&str]) -> io::Result<Reply> {
        command(self.port, self.password.as_deref(), args).await
    }

    /// The `role` field of `INFO replication` (`master` or `slave`).
    pub async fn role(&self) -> io::Result<String> {
        let info = self.info_field("replication", "role").await?;
        info.ok_or_else(|| io::Error::other("INFO replication has no role"))
    }

    /// Waits until this (replica) server reports `master_link_status:up`.
    pub async fn wait_for_sync(&self, timeout: Duration) -> io::Result<()> {
        wait_until(timeout, || async {
            Ok(self
                .info_field("replication", "master_link_status")
                .await?
                .as_deref()
                == Some("up"))
        })
        .await
        .map_err(|e| self.process.failure("replica did not sync", &e))
    }

    async fn info_field(&self, section: &str, field: &str) -> io::Result<Option<String>> {
        let reply = self.command(&["INFO", section]).await?;
        let text = reply
            .as_str()
            .ok_or_else(|| io::Error::other(format!("INFO answered {reply:?}")))?;
        Ok(text.lines().find_map(|line| {
            line.strip_prefix(field)
                .and_then(|rest| rest.strip_prefix(':'))
                .map(|v| v.trim().to_owned())
        }))
    }

    async fn wait_ready(&mut self, replica: bool) -> io::Result<()> {
        let result = wait_until(START_TIMEOUT, || async {
            match self.command(&["PING"]).await {
                Ok(Reply::Simple(pong)) if pong == "PONG" => Ok(true),
                Ok(other) => Err(io::Error::other(format!("PING answered {other:?}"))),
                Err(e) => Err(e),
            }
        })
        .await;
        if let Some(status) = self.process.exited() {
            return Err(self
                .process
                .failure("redis-server exited", &format!("status {status}")));
        }
        result.map_err(|e| self.process.failure("redis-server did not answer PING", &e))?;
        if replica {
            self.wait_for_sync(START_TIMEOUT).await?;
        }
        Ok(())
    }
}

/// A `redis-sentinel` process monitoring one master.
pub struct Sentinel {
    process: Process,
    port: u16,
    master_name: String,
    password: Option<String>,
}

/// Options for [`Sentinel`].
#[derive(Clone, Debug)]
pub struct SentinelBuilder {
    master_name: String,
    master_port: u16,
    quorum: u32,
    down_after_ms: u64,
    failover_timeout_ms: u64,
    auth_pass: Option<String>,
    requirepass: Option<String>,
}

impl SentinelBuilder {
    /// Name of the monitored master (default [`switchboard_redis::DEFAULT_MASTER_NAME`]).
    #[must_use]
    pub fn master_name(mut self, name: impl Into<String>) -> Self {
        self.master_name = name.into();
        self
    }

    /// Sentinels that must agree the master is down (default 1).
    #[must_use]
    pub fn quorum(mut self, quorum: u32) -> Self {
        self.quorum = quorum;
        self
    }

    /// `down-after-milliseconds` (default 1000).
    #[must_use]
    pub fn down_after_ms(mut self, ms: u64) -> Self {
        self.down_after_ms = ms;
        self
    }

    /// `failover-timeout` in ms (default 3000).
    #[must_use]
    pub fn failover_timeout_ms(mut self, ms: u64) -> Self {
        self.failover_timeout_ms = ms;
        self
    }

    /// Password of the data nodes (`auth-pass`); defaults to the master's password.
    #[must_use]
    pub fn auth_pass(mut self, password: Option<String>) -> Self {
        self.auth_pass = password;
        self
    }

    /// Password clients need for the sentinel itself (`requirepass`; default none).
    #[must_use]
    pub fn requirepass(mut self, password: impl Into<String>) -> Self {
        self.requirepass = Some(password.into());
        self
    }

    /// Writes the config, starts the sentinel and waits until it answers `PING` and monitors the master.
    pub async fn start(self) -> io::Result<Sentinel> {
        let binary = find_binary("redis-sentinel")?;
        let mut last_error = None;
        for _ in 0..3 {
            let port = free_port()?;
            let dir = temp_dir("sentinel")?;
            let log = dir.join("sentinel.log");
            let mut conf = format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\nprotected-mode no\ndir {dir}\nlogfile {log}\n\
                 sentinel monitor {name} 127.0.0.1 {master} {quorum}\n\
                 sentinel down-after-milliseconds {name} {down}\n\
                 sentinel failover-timeout {name} {failover}\n\
                 sentinel parallel-syncs {name} 1\n",
                dir = dir.display(),
                log = log.display(),
                name = self.master_name,
                master = self.master_port,
                quorum = self.quorum,
                down = self.down_after_ms,
                failover = self.failover_timeout_ms,
            );
            if let Some(password) = &self.auth_pass {
                conf.push_str(&format!(
                    "sentinel auth-pass {} {password}\n",
                    self.master_name
                ));
            }
            let (slaveof, replicaof) = replicaof_command_names();
            conf.push_str(&format!(
                "sentinel rename-command {name} SLAVEOF {slaveof}\n\
                 sentinel rename-command {name} REPLICAOF {replicaof}\n",
                name = self.master_name
            ));
            if let Some(password) = &self.requirepass {
                conf.push_str(&format!("requirepass {password}\n"));
            }
            let conf_path = dir.join("sentinel.conf");
            std::fs::write(&conf_path, conf)?;
            let process = spawn(
                &binary,
                &[conf_path.display().to_string()],
                dir,
                "sentinel.log",
            )?;
            let mut sentinel = Sentinel {
                process,
                port,
                master_name: self.master_name.clone(),
                password: self.requirepass.clone(),
            };
            match sentinel.wait_ready(self.master_port).await {
                Ok(()) => return Ok(sentinel),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("redis-sentinel did not start")))
    }
}

impl Sentinel {
    /// Options for a sentinel monitoring `master` (its password becomes `auth-pass`).
    pub fn builder(master: &RedisServer) -> SentinelBuilder {
        SentinelBuilder {
            master_name: switchboard_redis::DEFAULT_MASTER_NAME.to_owned(),
            master_port: master.port(),
            quorum: 1,
            down_after_ms: 1000,
            failover_timeout_ms: 3000,
            auth_pass: master.password().map(str::to_owned),
            requirepass: None,
        }
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`, as given to `--redis-sentinels`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The monitored master's name.
    pub fn master_name(&self) -> &str {
        &self.master_name
    }

    /// Kills the sentinel with SIGKILL.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Sends one command to the sentinel.
    pub async fn command(&self, args: &[&str]) -> io::Result<Reply> {
        command(self.port, self.password.as_deref(), args).await
    }

    /// The port of the master this sentinel currently names (the shared
    /// [`switchboard_redis::sentinel::master_addr`] query).
    pub async fn master_port(&self) -> io::Result<Option<u16>> {
        let addr = self.addr();
        let master = switchboard_redis::sentinel::master_addr(
            &addr,
            &self.master_name,
            &switchboard_redis::node::Access::password(self.password.as_deref()),
            SENTINEL_QUERY_TIMEOUT,
        )
        .await
        .map_err(|e| io::Error::other(switchboard_runtime::report::chain(&e)))?;
        Ok(master.map(|m| m.port))
    }

    /// Waits until this sentinel names the master on `port`.
    pub async fn wait_for_master(&self, port: u16, timeout: Duration) -> io::Result<()> {
        wait_until(timeout, || async {
            Ok(self.master_port().await? == Some(port))
        })
        .await
        .map_err(|e| {
            self.process.failure(
                &format!("sentinel did not switch to master port {port}"),
                &e,
            )
        })
    }

    /// Waits until this sentinel knows `n` replicas of the master.
    pub async fn wait_for_replicas(&self, n: usize, timeout: Duration) -> io::Result<()> {
        wait_until(timeout, || async {
            let reply = self
                .command(&["SENTINEL", "replicas", &self.master_name])
                .await?;
            Ok(reply.items().len() >= n)
        })
        .await
        .map_err(|e| {
            self.process
                .failure(&format!("sentinel did not see {n} replicas"), &e)
        })
    }

    /// Waits until this sentinel knows `n` other sentinels (needed before a quorum > 1 can fail over).
    pub async fn wait_for_sentinels(&self, n: usize, timeout: Duration) -> io::Result<()> {
        wait_until(timeout, || async {
            let reply = self
                .command(&["SENTINEL", "sentinels", &self.master_name])
                .await?;
            Ok(reply.items().len() >= n)
        })
        .await
        .map_err(|e| {
            self.process.failure(
                &format!("sentinel did not discover {n} other sentinels"),
                &e,
            )
        })
    }

    async fn wait_ready(&mut self, master_port: u16) -> io::Result<()> {
        let result = wait_until(START_TIMEOUT, || async {
            Ok(self.master_port().await? == Some(master_port))
        })
        .await;
        if let Some(status) = self.process.exited() {
            return Err(self
                .process
                .failure("redis-sentinel exited", &format!("status {status}")));
        }
        result.map_err(|e| self.process.failure("redis-sentinel not ready", &e))
    }
}

/// Shape of a [`RedisHa`] topology.
#[derive(Clone, Debug)]
pub struct HaConfig {
    /// Number of replicas (default 1).
    pub replicas: usize,
    /// Number of sentinels (default 1).
    pub sentinels: usize,
    /// Quorum (default: a majority of the sentinels).
    pub quorum: Option<u32>,
    /// Password of the data nodes (default none).
    pub password: Option<String>,
    /// Master name (default [`switchboard_redis::DEFAULT_MASTER_NAME`]).
    pub master_name: String,
    /// `down-after-milliseconds` (default 1000).
    pub down_after_ms: u64,
    /// `failover-timeout` in ms (default 3000).
    pub failover_timeout_ms: u64,
}

impl Default for HaConfig {
    fn default() -> Self {
        Self {
            replicas: 1,
            sentinels: 1,
            quorum: None,
            password: None,
            master_name: switchboard_redis::DEFAULT_MASTER_NAME.to_owned(),
            down_after_ms: 1000,
            failover_timeout_ms: 3000,
        }
    }
}

/// A master, its replicas (in sync) and sentinels that know each other: ready for a failover.
pub struct RedisHa {
    /// Data nodes; index 0 is the initial master.
    pub servers: Vec<RedisServer>,
    /// The sentinels.
    pub sentinels: Vec<Sentinel>,
    config: HaConfig,
}

impl RedisHa {
    /// Starts the topology and waits until every sentinel sees every replica and every other sentinel.
    pub async fn start(config: HaConfig) -> io::Result<Self> {
        let mut builder = RedisServer::builder();
        if let Some(password) = &config.password {
            builder = builder.password(password.clone());
        }
        let master = builder.clone().start().await?;
        let mut servers = vec![master];
        for _ in 0..config.replicas {
            let replica = builder.clone().replica_of(&servers[0]).start().await?;
            servers.push(replica);
        }
        let quorum = config
            .quorum
            .unwrap_or(u32::try_from(config.sentinels / 2 + 1).unwrap_or(1));
        let mut sentinels = Vec::with_capacity(config.sentinels);
        for _ in 0..config.sentinels {
            let sentinel = Sentinel::builder(&servers[0])
                .master_name(config.master_name.clone())
                .quorum(quorum)
                .down_after_ms(config.down_after_ms)
                .failover_timeout_ms(config.failover_timeout_ms)
                .start()
                .await?;
            sentinels.push(sentinel);
        }
        for sentinel in &sentinels {
            sentinel
                .wait_for_replicas(config.replicas, START_TIMEOUT)
                .await?;
            sentinel
                .wait_for_sentinels(config.sentinels - 1, START_TIMEOUT)
                .await?;
        }
        Ok(Self {
            servers,
            sentinels,
            config,
        })
    }

    /// Sentinel addresses (`127.0.0.1:port`).
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels.iter().map(Sentinel::addr).collect()
    }

    /// [`RedisArgs`] that reach the master through the sentinels (with the data password).
    pub fn redis_args(&self) -> RedisArgs {
        let mut args =
            RedisArgs::from_sentinels(self.sentinel_addrs(), self.config.master_name.clone());
        args.redis_password = self.config.password.clone();
        args
    }

    /// Index in [`RedisHa::servers`] of the server the first sentinel currently names as master.
    pub async fn master_index(&self) -> io::Result<Option<usize>> {
        let Some(sentinel) = self.sentinels.first() else {
            return Ok(None);
        };
        let port = sentinel.master_port().await?;
        Ok(self.servers.iter().position(|s| Some(s.port()) == port))
    }

    /// Waits until every sentinel names a master other than the server on `old_port`; returns the new
    /// master's index in [`RedisHa::servers`].
    pub async fn wait_for_failover(&self, old_port: u16, timeout: Duration) -> io::Result<usize> {
        let deadline = Instant::now() + timeout;
        let new_port = loop {
            let mut ports = Vec::with_capacity(self.sentinels.len());
            for sentinel in &self.sentinels {
                ports.push(sentinel.master_port().await.ok().flatten());
            }
            let first = ports.first().copied().flatten();
            if first.is_some_and(|p| p != old_port) && ports.iter().all(|p| *p == first) {
                break first;
            }
            if Instant::now() >= deadline {
                return Err(io::Error::other(format!(
                    "no failover away from port {old_port} within {timeout:?} (sentinels name {ports:?})"
                )));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        };
        self.servers
            .iter()
            .position(|s| Some(s.port()) == new_port)
            .ok_or_else(|| io::Error::other("sentinels named a master that is not ours"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_says_how_to_install_it() {
        let error = find_binary("redis-server-that-does-not-exist").expect_err("missing");
        assert_eq!(error.kind(), ErrorKind::NotFound);
        assert!(
            error
                .to_string()
                .contains("apt-get install redis-server redis-sentinel"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn server_starts_answers_and_dies_on_drop() {
        let server = RedisServer::start_with_password("pw").await.expect("start");
        assert_eq!(
            server.command(&["SET", "k", "v"]).await.expect("set"),
            Reply::Simple("OK".into())
        );
        assert_eq!(
            server.command(&["GET", "k"]).await.expect("get"),
            Reply::Bulk(Some("v".into()))
        );
        assert!(matches!(
            command(server.port(), None, &["GET", "k"]).await.expect("noauth"),
            Reply::Error(e) if e.starts_with("NOAUTH")
        ));
        assert!(
            matches!(server.command(&["REPLICAOF", "127.0.0.1", "1"]).await.expect("replicaof"), Reply::Error(e) if e.contains("unknown command")),
            "plain REPLICAOF must be renamed"
        );
        let port = server.port();
        drop(server);
        assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());
    }

    #[tokio::test]
    async fn a_killed_server_restarts_on_its_port() {
        let mut server = RedisServer::start_with_password("pw").await.expect("start");
        let port = server.port();
        server.kill();
        assert!(server.command(&["PING"]).await.is_err(), "killed");
        server.restart().await.expect("restart");
        assert_eq!(server.port(), port);
        assert_eq!(
            server.command(&["PING"]).await.expect("ping"),
            Reply::Simple("PONG".into())
        );
    }

    #[test]
    fn free_ports_are_never_handed_out_twice() {
        let ports: BTreeSet<u16> = (0..50).map(|_| free_port().expect("port")).collect();
        assert_eq!(ports.len(), 50);
    }

    #[tokio::test]
    async fn stop_freezes_and_resume_thaws() {
        let server = RedisServer::start().await.expect("start");
        server.stop().expect("stop");
        let frozen =
            tokio::time::timeout(Duration::from_millis(300), server.command(&["PING"])).await;
        assert!(frozen.is_err(), "a stopped server must not answer");
        server.resume().expect("resume");
        assert_eq!(
            server.command(&["PING"]).await.expect("ping"),
            Reply::Simple("PONG".into())
        );
    }
}
