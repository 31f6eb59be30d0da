//! A local Switchboard topology made of real processes on free loopback ports.
//!
//! [`Topology::start`] launches, in order, a `redis-server` (through the registry crate's test harness),
//! `nodes` `chat-node` processes (`membership = self` unless [`TopologyConfig::membership`] says
//! `operator`, in which case a test plays the operator through `switchboard-loadset`) and `registries`
//! `registry` processes, and returns once every service answers `/readyz` with 200. Without Redis it is the standalone mode: one
//! chat-node that is its own registry.
//!
//! ```text
//!   redis-server :R ◀──── chat-node node-0 :N0 (ws://127.0.0.1:N0/ws)
//!        ▲        ◀──── chat-node node-1 :N1 ...
//!        └────────────── registry reg-0 :G0 (http://127.0.0.1:G0/v1/assign)
//! ```
//!
//! With Redis the nodes require tokens ([`Auth::Jwt`]: an HS256 secret in a 0600 file, registries run
//! the development token issuer); standalone they run open. Clients connect through
//! [`Topology::connect`] / [`Topology::options`], which carry the right credentials.
//!
//! Each process writes its output to a log file under one temporary directory ([`Topology::log_dir`]);
//! readiness failures quote the log tail. Dropping the topology SIGKILLs every process it started and
//! removes the logs, unless the thread is panicking (a failing test keeps them and prints where).
//!
//! The binaries are looked up next to the running executable's profile directory (`target/debug` for
//! tests, `target/release` for release tools), then under `$CARGO_TARGET_DIR`; build them with
//! `cargo build -p chat-node -p registry` first.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use crate::client::{ChatClient, ConnectOptions, Credentials, TokenIssuer};

/// How long a process may take to answer `/readyz` with 200.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of the topology.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A binary is not built.
    #[error(
        "binary `{name}` not found (looked in {looked}); build it first: \
         `cargo build -p chat-node -p registry` (add --release for release tools)"
    )]
    MissingBinary {
        /// Binary name.
        name: String,
        /// Directories searched.
        looked: String,
    },
    /// Redis could not be started (for example `redis-server` is not installed).
    #[error(
        "starting redis-server (install it with `apt-get install redis-server redis-sentinel`)"
    )]
    Redis(#[source] std::io::Error),
    /// A process could not be spawned or signalled.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A process did not become ready in time or exited.
    #[error("{name} not ready: {why}\n--- last log lines of {log} ---\n{tail}")]
    NotReady {
        /// Process name.
        name: String,
        /// Why.
        why: String,
        /// Log file path.
        log: String,
        /// The log's last lines.
        tail: String,
    },
    /// No process with that index.
    #[error("no {kind} with index {index}")]
    NoSuch {
        /// `node` or `registry`.
        kind: &'static str,
        /// The index asked for.
        index: usize,
    },
    /// The soft open-files limit is too low for a load tool's connections.
    #[error(
        "open-files limit {soft} is below the {needed} this run needs; raise it first: `ulimit -n 65536`"
    )]
    OpenFiles {
        /// The soft `RLIMIT_NOFILE`.
        soft: usize,
        /// What the run needs.
        needed: usize,
    },
    /// A process did not exit after a signal.
    #[error("{name} did not exit within {after:?}")]
    NoExit {
        /// Process name.
        name: String,
        /// How long was waited.
        after: Duration,
    },
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How the topology's nodes identify clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `--auth open` (given explicitly in scaled mode, where token auth is the default).
    Open,
    /// HS256 tokens: a fresh secret in a file under the log directory (mode 0600) goes to every node
    /// and registry as `--jwt-hmac-secret-file`; registries also run the development token issuer so
    /// the web page can sign in. Clients get tokens from [`Topology::credentials`].
    Jwt,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct TopologyConfig {
    /// Authentication mode (default: tokens with Redis, open standalone — each binary's own default).
    pub auth: Auth,
    /// Number of chat-node processes.
    pub nodes: usize,
    /// Number of registry processes (ignored without Redis: a standalone node is its own registry).
    pub registries: usize,
    /// Whether to start Redis; without it there must be exactly one node (standalone mode).
    pub redis: bool,
    /// Extra arguments for every chat-node (for example `["--capacity", "2"]`).
    pub node_args: Vec<String>,
    /// Extra environment of every chat-node (secrets go here, never into `node_args`).
    pub node_env: Vec<(String, String)>,
    /// Extra arguments for every registry.
    pub registry_args: Vec<String>,
    /// Cluster id (key prefix in Redis).
    pub cluster_id: String,
    /// `RUST_LOG` for the processes.
    pub log_filter: String,
    /// Load-set membership of the nodes (default `self`).
    pub membership: switchboard_loadset::Membership,
    /// Redis flags for an already running Redis (e.g. sentinels of [`crate::ha::RedisHa`]); when set,
    /// no Redis is started and these flags replace `--redis-url`.
    pub external_redis: Option<Vec<String>>,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        TopologyConfig {
            auth: Auth::Jwt,
            nodes: 2,
            registries: 1,
            redis: true,
            node_args: Vec::new(),
            node_env: Vec::new(),
            registry_args: Vec::new(),
            cluster_id: format!("e2e-{}", fastrand::u32(..)),
            log_filter: "info".into(),
            membership: switchboard_loadset::Membership::SelfManaged,
            external_redis: None,
        }
    }
}

impl TopologyConfig {
    /// `nodes` chat-nodes and `registries` registries sharing a fresh Redis.
    pub fn scaled(nodes: usize, registries: usize) -> Self {
        TopologyConfig {
            nodes,
            registries,
            ..Default::default()
        }
    }

    /// One chat-node without Redis.
    pub fn standalone() -> Self {
        TopologyConfig {
            auth: Auth::Open,
            nodes: 1,
            registries: 0,
            redis: false,
            ..Default::default()
        }
    }

    /// Use this authentication mode (builder style).
    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Use this load-set membership for the nodes (builder style).
    pub fn with_membership(mut self, membership: switchboard_loadset::Membership) -> Self {
        self.membership = membership;
        self
    }

    /// Add chat-node arguments (builder style).
    pub fn with_node_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.node_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Keep the nodes' attachments in the bucket of a MinIO started by the test (builder style): the
    /// store flags as arguments, the credentials in the environment.
    pub fn with_s3(mut self, s3: &switchboard_testkit::s3::S3Server) -> Self {
        self.node_args.extend([
            "--attachments-store".to_owned(),
            format!("s3://{}", switchboard_testkit::s3::BUCKET),
            "--attachments-s3-endpoint".to_owned(),
            s3.endpoint(),
        ]);
        self.node_env.extend([
            (
                switchboard_attachments::config::ENV_ACCESS_KEY_ID.to_owned(),
                s3.access_key().to_owned(),
            ),
            (
                switchboard_attachments::config::ENV_SECRET_ACCESS_KEY.to_owned(),
                s3.secret_key().to_owned(),
            ),
        ]);
        self
    }
}

/// One started process.
#[derive(Debug)]
struct Proc {
    name: String,
    port: u16,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn http(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A running local topology; dropping it kills every process.
pub struct Topology {
    config: TopologyConfig,
    bin_dir: PathBuf,
    log_dir: PathBuf,
    redis: Option<switchboard_testkit::RedisServer>,
    nodes: Vec<Proc>,
    registries: Vec<Proc>,
    credentials: Credentials,
    secret_file: Option<PathBuf>,
    registry_ports: Vec<u16>,
}

impl Topology {
    /// Start the topology and wait until every process is ready.
    pub async fn start(config: TopologyConfig) -> Result<Topology> {
        let bin_dir = bin_dir(&["chat-node", "registry"])?;
        let log_dir = std::env::temp_dir().join(format!(
            "switchboard-topology-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&log_dir).map_err(|source| Error::Io {
            what: format!("creating {}", log_dir.display()),
            source,
        })?;
        let redis = if config.redis && config.external_redis.is_none() {
            Some(start_redis().await?)
        } else {
            None
        };
        let (credentials, secret_file) = match config.auth {
            Auth::Open => (Credentials::Open, None),
            Auth::Jwt => {
                let secret = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
                let path = log_dir.join("jwt-hmac-secret");
                write_secret(&path, &secret)?;
                (Credentials::Token(TokenIssuer::new(secret)), Some(path))
            }
        };
        let mut topology = Topology {
            config,
            bin_dir,
            log_dir,
            redis,
            nodes: Vec::new(),
            registries: Vec::new(),
            credentials,
            secret_file,
            registry_ports: Vec::new(),
        };
        // Registries serve the web page, whose WebSockets go to the nodes: the nodes must allow the
        // registries' origins, so those ports are chosen first.
        if topology.redis_flags().is_some() {
            for _ in 0..topology.config.registries {
                topology.registry_ports.push(free_port()?);
            }
        }
        let node_count = if topology.redis_flags().is_some() {
            topology.config.nodes
        } else {
            1
        };
        for _ in 0..node_count {
            topology.spawn_node()?;
        }
        if let Some(redis_flags) = topology.redis_flags() {
            for (i, port) in topology.registry_ports.clone().into_iter().enumerate() {
                let args = vec![
                    "--listen".into(),
                    format!("127.0.0.1:{port}"),
                    "--cluster-id".into(),
                    topology.config.cluster_id.clone(),
                ]
                .into_iter()
                .chain(redis_flags.iter().cloned())
                .chain(topology.registry_auth_flags())
                .chain(topology.config.registry_args.iter().cloned())
                .collect();
                let mut proc = Proc {
                    name: format!("registry-{i}"),
                    port,
                    args,
                    log: topology.log_dir.join(format!("registry-{i}.log")),
                    child: None,
                };
                topology.launch(&mut proc, "registry")?;
                topology.registries.push(proc);
            }
        }
        for i in 0..topology.nodes.len() {
            wait_ready(&mut topology.nodes[i]).await?;
        }
        for i in 0..topology.registries.len() {
            wait_ready(&mut topology.registries[i]).await?;
        }
        topology.wait_listed().await?;
        Ok(topology)
    }

    /// Ready means assignable: a node answers `/readyz` once its first heartbeat landed; with
    /// registries this also waits until the first registry lists every node (in operator membership
    /// the nodes add themselves, as nobody holds the membership lease yet).
    async fn wait_listed(&self) -> Result<()> {
        let Some(registry) = self.registries.first() else {
            return Ok(());
        };
        let want: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let listed = crate::client::nodes(&registry.http()).await;
            let missing: Vec<&String> = match &listed {
                Ok(nodes) => want
                    .iter()
                    .filter(|id| nodes.iter().all(|n| &n.id != *id))
                    .collect(),
                Err(_) => want.iter().collect(),
            };
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(not_ready(
                    registry,
                    format!("after {READY_TIMEOUT:?} it does not list {missing:?} ({listed:?})"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One standalone chat-node (no Redis), ready.
    pub async fn standalone() -> Result<Topology> {
        Topology::start(TopologyConfig::standalone()).await
    }

    fn spawn_node(&mut self) -> Result<usize> {
        let index = self.nodes.len();
        let port = free_port()?;
        let id = format!("node-{index}");
        let mut args = vec![
            "--listen".to_owned(),
            format!("127.0.0.1:{port}"),
            "--node-id".into(),
            id.clone(),
            "--cluster-id".into(),
            self.config.cluster_id.clone(),
        ];
        if let Some(flags) = self.redis_flags() {
            args.extend(flags);
            args.extend([
                "--membership".to_owned(),
                self.config.membership.as_str().into(),
            ]);
        }
        match &self.secret_file {
            Some(path) => args.extend([
                "--jwt-hmac-secret-file".to_owned(),
                path.display().to_string(),
            ]),
            None => args.extend(["--auth".to_owned(), "open".into()]),
        }
        if !self.registry_ports.is_empty() {
            let origins: Vec<String> = self
                .registry_ports
                .iter()
                .map(|p| format!("http://127.0.0.1:{p}"))
                .collect();
            args.extend(["--allowed-origins".to_owned(), origins.join(",")]);
        }
        args.extend(self.config.node_args.iter().cloned());
        let mut proc = Proc {
            name: id,
            port,
            args,
            log: self.log_dir.join(format!("node-{index}.log")),
            child: None,
        };
        self.launch(&mut proc, "chat-node")?;
        self.nodes.push(proc);
        Ok(index)
    }

    fn launch(&self, proc: &mut Proc, binary: &str) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&proc.log)
            .map_err(|source| Error::Io {
                what: format!("opening {}", proc.log.display()),
                source,
            })?;
        let log_err = log.try_clone().map_err(|source| Error::Io {
            what: format!("opening {}", proc.log.display()),
            source,
        })?;
        let mut command = Command::new(self.bin_dir.join(binary));
        if binary == "chat-node" {
            command.envs(self.config.node_env.iter().map(|(k, v)| (k, v)));
        }
        let child = command
            .args(&proc.args)
            .env("RUST_LOG", &self.config.log_filter)
            .env_remove("SWITCHBOARD_REDIS_URL")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|source| Error::Io {
                what: format!("spawning {binary} for {}", proc.name),
                source,
            })?;
        proc.child = Some(child);
        Ok(())
    }

    fn node(&self, i: usize) -> Result<&Proc> {
        self.nodes.get(i).ok_or(Error::NoSuch {
            kind: "node",
            index: i,
        })
    }

    fn node_mut(&mut self, i: usize) -> Result<&mut Proc> {
        self.nodes.get_mut(i).ok_or(Error::NoSuch {
            kind: "node",
            index: i,
        })
    }

    /// The Redis flags every process gets: the external ones, else `--redis-url` of the started Redis.
    fn redis_flags(&self) -> Option<Vec<String>> {
        if let Some(flags) = &self.config.external_redis {
            return Some(flags.clone());
        }
        self.redis_url()
            .map(|url| vec!["--redis-url".to_owned(), url])
    }

    /// Flags that make a registry mint development tokens for the page (token mode only).
    fn registry_auth_flags(&self) -> Vec<String> {
        match &self.secret_file {
            Some(path) => vec![
                "--jwt-hmac-secret-file".to_owned(),
                path.display().to_string(),
                "--dev-token-issuer".into(),
            ],
            None => Vec::new(),
        }
    }

    /// How clients prove who they are to this topology's nodes.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Connect options for `user` (a minted token in token mode, `?user=` in open mode).
    pub fn options(&self, user: &str) -> ConnectOptions {
        self.credentials.options(user)
    }

    /// A token for `user` (token mode), `None` in open mode.
    pub fn token(&self, user: &str) -> Option<String> {
        self.credentials
            .issuer()
            .map(|i| i.mint(user, crate::client::tokens::TEST_TOKEN_TTL))
    }

    /// The file holding the HS256 secret (token mode).
    pub fn secret_file(&self) -> Option<&Path> {
        self.secret_file.as_deref()
    }

    /// Connect `user` to node `i` with this topology's credentials and wait for `welcome`.
    pub async fn connect(&self, i: usize, user: &str) -> crate::client::Result<ChatClient> {
        ChatClient::connect_with(&self.node_ws_url(i), self.options(user)).await
    }

    /// Every process id of the topology (nodes and registries that run; Redis started by it).
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .nodes
            .iter()
            .chain(&self.registries)
            .filter_map(Proc::pid)
            .collect();
        pids.extend(self.redis.as_ref().and_then(|r| r.pid()));
        pids
    }

    /// Every log file of the topology's processes.
    pub fn log_files(&self) -> Vec<PathBuf> {
        self.nodes
            .iter()
            .chain(&self.registries)
            .map(|p| p.log.clone())
            .collect()
    }

    /// Number of chat-nodes started (killed ones included).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Node `i`'s id (`node-{i}`).
    pub fn node_id(&self, i: usize) -> String {
        format!("node-{i}")
    }

    /// Node `i`'s WebSocket URL.
    ///
    /// # Panics
    /// When there is no node `i` (a test bug).
    pub fn node_ws_url(&self, i: usize) -> String {
        format!("ws://127.0.0.1:{}/ws", self.nodes[i].port)
    }

    /// Node `i`'s HTTP base URL.
    ///
    /// # Panics
    /// When there is no node `i` (a test bug).
    pub fn node_http_url(&self, i: usize) -> String {
        self.nodes[i].http()
    }

    /// Node `i`'s process id, while it runs.
    pub fn node_pid(&self, i: usize) -> Option<u32> {
        self.nodes.get(i).and_then(Proc::pid)
    }

    /// Node `i`'s resident set size in KiB (`/proc/PID/status` VmRSS; 0 when it is not running).
    pub fn node_rss_kib(&self, i: usize) -> u64 {
        self.node_pid(i).map_or(0, crate::testbed::real::rss_kib)
    }

    /// Registry `i`'s HTTP base URL.
    ///
    /// # Panics
    /// When there is no registry `i` (a test bug).
    pub fn registry_url(&self, i: usize) -> String {
        self.registries[i].http()
    }

    /// Number of registries.
    pub fn registry_count(&self) -> usize {
        self.registries.len()
    }

    /// Where clients ask for a node: the first registry, or the standalone node itself.
    pub fn assign_base(&self) -> String {
        match self.registries.first() {
            Some(r) => r.http(),
            None => self.nodes.first().map(Proc::http).unwrap_or_default(),
        }
    }

    /// The Redis URL, when Redis runs.
    pub fn redis_url(&self) -> Option<String> {
        self.redis.as_ref().map(|r| r.url())
    }

    /// The Redis harness, for stop/resume/kill.
    pub fn redis(&self) -> Option<&switchboard_testkit::RedisServer> {
        self.redis.as_ref()
    }

    /// The directory holding every process's log.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// The cluster id the processes share.
    pub fn cluster_id(&self) -> &str {
        &self.config.cluster_id
    }

    /// SIGKILL node `i` (no drain, no goodbye).
    pub fn kill_node(&mut self, i: usize) -> Result<()> {
        self.node_mut(i)?.kill();
        Ok(())
    }

    /// SIGTERM node `i` and wait for it to exit (graceful drain); returns its exit status.
    pub async fn stop_node(&mut self, i: usize, within: Duration) -> Result<ExitStatus> {
        let proc = self.node_mut(i)?;
        stop_gracefully(proc, within).await
    }

    /// Send SIGTERM to node `i` without waiting (see [`wait_node_exit`](Self::wait_node_exit)).
    pub fn signal_term_node(&mut self, i: usize) -> Result<()> {
        let proc = self.node_mut(i)?;
        match proc.pid() {
            Some(pid) => signal(pid, "TERM"),
            None => Ok(()),
        }
    }

    /// Wait for node `i` to exit after a signal.
    pub async fn wait_node_exit(&mut self, i: usize, within: Duration) -> Result<ExitStatus> {
        let proc = self.node_mut(i)?;
        wait_exit(proc, within).await
    }

    /// Start node `i` again (same id, same port) after a kill or stop, and wait until it is ready.
    pub async fn restart_node(&mut self, i: usize) -> Result<()> {
        self.node_mut(i)?.kill();
        let mut proc = std::mem::replace(
            self.node_mut(i)?,
            Proc {
                name: String::new(),
                port: 0,
                args: Vec::new(),
                log: PathBuf::new(),
                child: None,
            },
        );
        let launched = self.launch(&mut proc, "chat-node");
        let ready = match launched {
            Ok(()) => wait_ready(&mut proc).await,
            Err(e) => Err(e),
        };
        self.nodes[i] = proc;
        ready
    }

    /// Start one more chat-node and wait until it is ready; returns its index.
    pub async fn add_node(&mut self) -> Result<usize> {
        let i = self.spawn_node()?;
        wait_ready(&mut self.nodes[i]).await?;
        Ok(i)
    }

    /// SIGKILL registry `i`.
    pub fn kill_registry(&mut self, i: usize) -> Result<()> {
        self.registries
            .get_mut(i)
            .ok_or(Error::NoSuch {
                kind: "registry",
                index: i,
            })?
            .kill();
        Ok(())
    }

    /// The last `lines` lines of node `i`'s log (for failure messages).
    pub fn node_log_tail(&self, i: usize, lines: usize) -> String {
        self.node(i)
            .map(|p| tail(&p.log, lines))
            .unwrap_or_default()
    }

    /// Kill every process (also done on drop).
    pub fn shutdown(&mut self) {
        for proc in self.registries.iter_mut().chain(self.nodes.iter_mut()) {
            proc.kill();
        }
        self.redis = None;
    }
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topology")
            .field("redis", &self.redis_url())
            .field("nodes", &self.nodes)
            .field("registries", &self.registries)
            .field("log_dir", &self.log_dir)
            .finish()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.shutdown();
        // Keep the logs of a failing test (the panic message names the directory); drop the rest.
        if std::thread::panicking() {
            eprintln!("topology logs kept in {}", self.log_dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.log_dir);
        }
    }
}

/// Writes a secret file readable by the owner only.
fn write_secret(path: &Path, secret: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| Error::Io {
        what: format!("writing {}", path.display()),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(secret.as_bytes()).map_err(io)
}

async fn start_redis() -> Result<switchboard_testkit::RedisServer> {
    switchboard_testkit::RedisServer::start()
        .await
        .map_err(Error::Redis)
}

/// Fails when the soft open-files limit (`RLIMIT_NOFILE`) is below `needed`, so a load tool that opens
/// thousands of sockets (and the nodes it starts, which inherit the limit) says so before it starts.
pub fn check_open_files(needed: usize) -> Result<()> {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok());
    match soft {
        Some(soft) if soft < needed => Err(Error::OpenFiles { soft, needed }),
        _ => Ok(()),
    }
}

/// A free loopback port outside the kernel's ephemeral range (`switchboard_testkit::free_port`), so
/// no outgoing connection of a parallel test takes it before the process binds it.
pub fn free_port() -> Result<u16> {
    switchboard_testkit::free_port().map_err(|source| Error::Io {
        what: "finding a free port".into(),
        source,
    })
}

/// Send a signal by name (`TERM`, `STOP`, `CONT`, ...) with the system's `kill`, keeping this crate
/// free of unsafe FFI.
pub fn signal(pid: u32, name: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .map_err(|source| Error::Io {
            what: format!("kill -{name} {pid}"),
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Io {
            what: format!("kill -{name} {pid}"),
            source: std::io::Error::other(status.to_string()),
        })
    }
}

async fn stop_gracefully(proc: &mut Proc, within: Duration) -> Result<ExitStatus> {
    if let Some(pid) = proc.pid() {
        signal(pid, "TERM")?;
    }
    wait_exit(proc, within).await
}

async fn wait_exit(proc: &mut Proc, within: Duration) -> Result<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        let Some(child) = proc.child.as_mut() else {
            return Err(Error::NoSuch {
                kind: "running process",
                index: 0,
            });
        };
        match child.try_wait() {
            Ok(Some(status)) => {
                proc.child = None;
                return Ok(status);
            }
            Ok(None) => {}
            Err(source) => {
                return Err(Error::Io {
                    what: format!("waiting for {}", proc.name),
                    source,
                });
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::NoExit {
                name: proc.name.clone(),
                after: within,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_ready(proc: &mut Proc) -> Result<()> {
    let url = format!("{}/readyz", proc.http());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .map_err(|e| Error::Io {
            what: "building an HTTP client".into(),
            source: std::io::Error::other(e),
        })?;
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last;
    loop {
        if let Some(child) = proc.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            proc.child = None;
            return Err(not_ready(proc, format!("exited with {status}")));
        }
        match http.get(&url).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("{url} answered {}", r.status()),
            Err(e) => last = format!("{url}: {e}"),
        }
        if Instant::now() >= deadline {
            return Err(not_ready(proc, format!("after {READY_TIMEOUT:?}: {last}")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn not_ready(proc: &Proc, why: String) -> Error {
    Error::NotReady {
        name: proc.name.clone(),
        why,
        log: proc.log.display().to_string(),
        tail: tail(&proc.log, 30),
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Like [`bin_dir`], but when a binary is missing, build `chat-node` and `registry` with cargo (in
/// release when the running executable is a release build) and look again. For the tools people start
/// with `cargo run` (`topology`, `chat-bench`), so the README's one command works on a fresh clone;
/// tests rely on the test command having built the workspace instead.
pub fn bin_dir_or_build(names: &[&str]) -> Result<PathBuf> {
    match bin_dir(names) {
        Err(Error::MissingBinary { .. }) => {}
        found => return found,
    }
    let release = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.ends_with("release")))
        .unwrap_or(false);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "-p", "chat-node", "-p", "registry"]);
    if release {
        build.arg("--release");
    }
    eprintln!("chat-node/registry not built yet: running {build:?}");
    let status = build.status().map_err(|source| Error::Io {
        what: format!("running {build:?}"),
        source,
    })?;
    if !status.success() {
        return Err(Error::Io {
            what: format!("{build:?}"),
            source: std::io::Error::other(status.to_string()),
        });
    }
    bin_dir(names)
}

/// The directory holding the built `names`: `SWITCHBOARD_BIN_DIR`, else the running executable's
/// profile directory, else `$CARGO_TARGET_DIR/{debug,release}`.
pub fn bin_dir(names: &[&str]) -> Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("SWITCHBOARD_BIN_DIR") {
        candidates.push(PathBuf::from(dir));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        // tests run from target/<profile>/deps, binaries from target/<profile>
        if dir.file_name().is_some_and(|n| n == "deps") {
            if let Some(profile) = dir.parent() {
                candidates.push(profile.to_path_buf());
            }
        } else {
            candidates.push(dir.to_path_buf());
        }
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        let target = PathBuf::from(target);
        candidates.push(target.join("debug"));
        candidates.push(target.join("release"));
    }
    for dir in &candidates {
        if names.iter().all(|n| dir.join(n).is_file()) {
            return Ok(dir.clone());
        }
    }
    let missing = names
        .iter()
        .find(|n| !candidates.first().is_some_and(|d| d.join(n).is_file()))
        .unwrap_or(&"chat-node");
    Err(Error::MissingBinary {
        name: (*missing).to_owned(),
        looked: candidates
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// A scaled topology for benchmarks on loopback: Redis, `nodes` chat-nodes and a registry, quiet logs,
/// open identity (tokens are checked once per connect only) and every per-client limit lifted (all
/// benchmark connections come from 127.0.0.1). Release binaries when the benchmark runs as one.
pub async fn bench_topology(nodes: usize) -> anyhow::Result<Topology> {
    use anyhow::Context as _;
    let config = TopologyConfig {
        log_filter: "warn".into(),
        auth: Auth::Open,
        ..TopologyConfig::scaled(nodes, 1).with_node_args(crate::bench::LIFTED_NODE_LIMITS)
    };
    let bin = bin_dir_or_build(&["chat-node", "registry"])?;
    let t = Topology::start(config)
        .await
        .with_context(|| format!("starting Redis + {nodes} chat-nodes"))?;
    println!(
        "topology: redis + {nodes} chat-nodes + 1 registry, binaries from {}",
        bin.display()
    );
    Ok(t)
}
