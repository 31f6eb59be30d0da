//! The Redis connection every Switchboard binary uses, reached either directly by URL or through Redis
//! Sentinel.
//!
//! [`RedisArgs`] is the flag group (`--redis-url`, or `--redis-sentinels` + `--redis-master-name`, plus
//! credentials: `--redis-username`, `--redis-password-file`, and the sentinel twins). [`builder`] turns it into a fred [`Builder`] with the policy all our services share:
//!
//! ```text
//! RedisArgs ──builder()──▶ fred Builder ──connect()────▶ Client            (commands, scripts)
//!                                       └─subscriber()─▶ SubscriberClient  (pub/sub, re-subscribes itself)
//! ```
//!
//! - the reconnect policy retries forever with a capped exponential backoff, so a Sentinel failover (the old
//!   master disappears, Sentinel names a new one) is followed without a restart: on every reconnect fred asks
//!   the sentinels for the current master;
//! - commands time out, and a connection that stops answering (a stopped or partitioned master) is closed
//!   and re-established instead of hanging forever;
//! - start-up is strict: [`connect`] and [`subscriber`] fail with an [`Error`] that names the cause (wrong
//!   password, unreachable, timeout) instead of retrying silently, so a misconfigured process exits with a
//!   clear message.
//!
//! Passwords are read from files (`--redis-password-file`, a mounted Secret) or the environment, so they
//! never need to be on a command line, where every local user sees them in `ps`. The password never
//! appears in logs: [`RedisArgs`]'s `Debug` redacts it (also inside a URL) and
//! [`RedisArgs::describe`] leaves it out.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::Instrument as _;

use fred::clients::{Client, SubscriberClient};
use fred::error::{Error as FredError, ErrorKind};
use fred::interfaces::{ClientLike, EventInterface};
use fred::types::config::{
    Config, ReconnectPolicy, Server, ServerConfig, TlsConfig, TlsConnector, TlsHostMapping,
    UnresponsiveConfig,
};
use fred::types::{Builder, Value};

/// Port a sentinel address without one defaults to (Redis Sentinel's registered port).
pub const DEFAULT_SENTINEL_PORT: u16 = 26379;

/// Default `--redis-master-name`: the name the operator gives the monitored master.
pub const DEFAULT_MASTER_NAME: &str = "switchboard";

/// How long one command may wait for its answer before it fails with a timeout; long enough for a loaded
/// Redis, short enough that a request handler answers 503 instead of hanging.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection with a command outstanding this long is considered dead (for example a master that was
/// stopped or partitioned away without closing its sockets) and is replaced, which also re-asks Sentinel.
/// Do not send blocking commands that wait longer than this on these clients.
pub const UNRESPONSIVE_TIMEOUT: Duration = Duration::from_secs(4);

/// TCP connect and handshake (AUTH, SELECT, sentinel queries) timeout for a single attempt.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Upper bound for the whole start-up connection (all sentinels tried, AUTH, PING).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

/// First reconnect delay in milliseconds; doubles per failed attempt.
const RECONNECT_MIN_DELAY_MS: u32 = 100;
/// Reconnect delays never exceed this, so a failover (typically a few seconds) is noticed promptly.
const RECONNECT_MAX_DELAY_MS: u32 = 2_000;

/// Errors of this module. Each message names the cause an operator has to fix; none contains a password.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A password file could not be read.
    #[error("Redis password file")]
    PasswordFile(#[source] switchboard_runtime::secret::Error),
    /// Neither `--redis-url` nor `--redis-sentinels` was given.
    #[error(
        "Redis is not configured: give --redis-url (SWITCHBOARD_REDIS_URL) or --redis-sentinels (SWITCHBOARD_REDIS_SENTINELS)"
    )]
    NotConfigured,
    /// The flags contradict each other or a value is malformed.
    #[error("invalid Redis configuration: {0}")]
    InvalidConfig(String),
    /// A TLS file could not be read or holds no usable certificate or key.
    #[error("Redis TLS: {what} ({path})")]
    Tls {
        /// What the file should hold (`CA`, `certificate`, `key`, `certificate and key`).
        what: &'static str,
        /// The file.
        path: String,
        /// Why it is unusable.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// fred refused the configuration (for example an unparsable URL).
    #[error("invalid Redis configuration for {target}")]
    Config {
        /// Where we tried to connect, without credentials.
        target: String,
        /// fred's reason.
        #[source]
        source: FredError,
    },
    /// Redis (or a sentinel) refused the credentials.
    #[error("Redis rejected the password ({target}): {hint}")]
    Auth {
        /// Where we tried to connect, without credentials.
        target: String,
        /// What is most likely wrong.
        hint: &'static str,
        /// The server's answer.
        #[source]
        source: FredError,
    },
    /// No connection could be made (refused, DNS, no sentinel knows the master, ...).
    #[error("cannot reach Redis ({target})")]
    Unreachable {
        /// Where we tried to connect, without credentials.
        target: String,
        /// The underlying failure.
        #[source]
        source: FredError,
    },
    /// A sentinel answered but does not monitor a master of the configured name.
    #[error(
        "sentinel {sentinel} does not monitor a master named {master:?} (check --redis-master-name) ({target})"
    )]
    UnknownMaster {
        /// Where we tried to connect, without credentials.
        target: String,
        /// The sentinel that answered.
        sentinel: String,
        /// The configured master name.
        master: String,
    },
    /// The start-up connection did not finish in time.
    #[error("Redis did not answer within {timeout:?} ({target})")]
    Timeout {
        /// Where we tried to connect, without credentials.
        target: String,
        /// The limit that was exceeded.
        timeout: Duration,
    },
    /// A command failed after the connection was made.
    #[error("Redis command failed ({target})")]
    Command {
        /// Where we tried to connect, without credentials.
        target: String,
        /// The server's or client's error.
        #[source]
        source: FredError,
    },
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to reach Redis: a URL, or a list of sentinels and the master name they monitor.
///
/// `Debug` redacts the password (flag and URL userinfo); use [`RedisArgs::describe`] for log lines.
#[derive(clap::Args, Clone)]
pub struct RedisArgs {
    /// Redis URL, e.g. `redis://:PASSWORD@127.0.0.1:6379/0`. Mutually exclusive with --redis-sentinels.
    #[arg(
        long = "redis-url",
        env = "SWITCHBOARD_REDIS_URL",
        hide_env_values = true
    )]
    pub redis_url: Option<String>,

    /// Redis Sentinel addresses (`host:port,host:port`); the master is discovered through them and followed
    /// across failovers.
    #[arg(
        long = "redis-sentinels",
        env = "SWITCHBOARD_REDIS_SENTINELS",
        value_delimiter = ','
    )]
    pub redis_sentinels: Vec<String>,

    /// Name of the master the sentinels monitor (`sentinel monitor <name> ...`).
    #[arg(
        long = "redis-master-name",
        env = "SWITCHBOARD_REDIS_MASTER_NAME",
        default_value = DEFAULT_MASTER_NAME
    )]
    pub redis_master_name: String,

    /// Redis ACL user of the data nodes (with the password; default: the `default` user).
    #[arg(long = "redis-username", env = "SWITCHBOARD_REDIS_USERNAME")]
    pub redis_username: Option<String>,

    /// Password of the Redis data nodes (master and replicas). Overrides a password in --redis-url.
    /// Prefer --redis-password-file or the environment variable: a flag value is visible in `ps`.
    #[arg(
        long = "redis-password",
        env = "SWITCHBOARD_REDIS_PASSWORD",
        hide_env_values = true,
        conflicts_with = "redis_password_file"
    )]
    pub redis_password: Option<String>,

    /// File holding the password of the Redis data nodes (a trailing newline is ignored).
    #[arg(long = "redis-password-file", env = "SWITCHBOARD_REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<PathBuf>,

    /// Redis ACL user of the sentinels themselves, if they use ACLs.
    #[arg(
        long = "redis-sentinel-username",
        env = "SWITCHBOARD_REDIS_SENTINEL_USERNAME"
    )]
    pub redis_sentinel_username: Option<String>,

    /// Password of the sentinels themselves (their `requirepass`), if they have one. Prefer
    /// --redis-sentinel-password-file or the environment variable.
    #[arg(
        long = "redis-sentinel-password",
        env = "SWITCHBOARD_REDIS_SENTINEL_PASSWORD",
        hide_env_values = true,
        conflicts_with = "redis_sentinel_password_file"
    )]
    pub redis_sentinel_password: Option<String>,

    /// File holding the sentinels' password.
    #[arg(
        long = "redis-sentinel-password-file",
        env = "SWITCHBOARD_REDIS_SENTINEL_PASSWORD_FILE"
    )]
    pub redis_sentinel_password_file: Option<PathBuf>,

    /// PEM file of the certificate authorities a `rediss://` server's certificate must chain to (default:
    /// the system's roots).
    #[arg(long = "redis-tls-ca-file", env = "SWITCHBOARD_REDIS_TLS_CA_FILE")]
    pub redis_tls_ca_file: Option<PathBuf>,

    /// PEM certificate chain this client presents to a `rediss://` server that asks for one (mutual TLS);
    /// needs --redis-tls-key-file.
    #[arg(long = "redis-tls-cert-file", env = "SWITCHBOARD_REDIS_TLS_CERT_FILE")]
    pub redis_tls_cert_file: Option<PathBuf>,

    /// PEM private key of --redis-tls-cert-file.
    #[arg(long = "redis-tls-key-file", env = "SWITCHBOARD_REDIS_TLS_KEY_FILE")]
    pub redis_tls_key_file: Option<PathBuf>,

    /// The certificate authorities as PEM text, for callers that hold them in memory (the operator reads
    /// them from a Secret); used instead of --redis-tls-ca-file.
    #[arg(skip)]
    pub redis_tls_ca_pem: Option<Vec<u8>>,

    /// The client certificate chain and key as PEM text (in memory, like `redis_tls_ca_pem`); used
    /// instead of --redis-tls-cert-file and --redis-tls-key-file.
    #[arg(skip)]
    pub redis_tls_client_pem: Option<(Vec<u8>, Vec<u8>)>,
}

impl Default for RedisArgs {
    fn default() -> Self {
        Self {
            redis_url: None,
            redis_sentinels: Vec::new(),
            redis_master_name: DEFAULT_MASTER_NAME.to_owned(),
            redis_username: None,
            redis_password: None,
            redis_password_file: None,
            redis_sentinel_username: None,
            redis_sentinel_password: None,
            redis_sentinel_password_file: None,
            redis_tls_ca_file: None,
            redis_tls_cert_file: None,
            redis_tls_key_file: None,
            redis_tls_ca_pem: None,
            redis_tls_client_pem: None,
        }
    }
}

impl fmt::Debug for RedisArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |p: &Option<String>| p.as_ref().map(|_| "<redacted>");
        f.debug_struct("RedisArgs")
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("redis_sentinels", &self.redis_sentinels)
            .field("redis_master_name", &self.redis_master_name)
            .field("redis_username", &self.redis_username)
            .field("redis_password", &redacted(&self.redis_password))
            .field("redis_password_file", &self.redis_password_file)
            .field("redis_sentinel_username", &self.redis_sentinel_username)
            .field(
                "redis_sentinel_password",
                &redacted(&self.redis_sentinel_password),
            )
            .field(
                "redis_sentinel_password_file",
                &self.redis_sentinel_password_file,
            )
            .field("redis_tls_ca_file", &self.redis_tls_ca_file)
            .field("redis_tls_cert_file", &self.redis_tls_cert_file)
            .field("redis_tls_key_file", &self.redis_tls_key_file)
            .finish_non_exhaustive()
    }
}

impl RedisArgs {
    /// Args for a plain URL (tests and wiring).
    pub fn from_url(url: impl Into<String>) -> Self {
        Self {
            redis_url: Some(url.into()),
            ..Self::default()
        }
    }

    /// Args for Sentinel discovery of `master_name` through `sentinels` (`host:port`).
    pub fn from_sentinels(
        sentinels: impl IntoIterator<Item = impl Into<String>>,
        master_name: impl Into<String>,
    ) -> Self {
        Self {
            redis_sentinels: sentinels.into_iter().map(Into::into).collect(),
            redis_master_name: master_name.into(),
            ..Self::default()
        }
    }

    /// Sets the data-node password (builder style).
    #[must_use]
    pub fn with_password(mut self, password: impl Into<String>) -> Self {
        self.redis_password = Some(password.into());
        self
    }

    /// Reads the data-node password from `path` (builder style).
    #[must_use]
    pub fn with_password_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.redis_password_file = Some(path.into());
        self
    }

    /// Sets the data-node ACL user (builder style).
    #[must_use]
    pub fn with_username(mut self, username: impl Into<String>) -> Self {
        self.redis_username = Some(username.into());
        self
    }

    /// The data-node password: the flag or variable, else the file's content.
    pub fn password(&self) -> Result<Option<String>> {
        read_password(&self.redis_password, &self.redis_password_file)
    }

    /// The sentinels' password: the flag or variable, else the file's content.
    pub fn sentinel_password(&self) -> Result<Option<String>> {
        read_password(
            &self.redis_sentinel_password,
            &self.redis_sentinel_password_file,
        )
    }

    /// Sets the sentinel password (builder style).
    #[must_use]
    pub fn with_sentinel_password(mut self, password: impl Into<String>) -> Self {
        self.redis_sentinel_password = Some(password.into());
        self
    }

    /// Whether any way to reach Redis was given (a URL or at least one sentinel).
    pub fn is_configured(&self) -> bool {
        self.redis_url
            .as_deref()
            .is_some_and(|u| !u.trim().is_empty())
            || self.redis_sentinels.iter().any(|s| !s.trim().is_empty())
    }

    /// A one-line description for logs and error messages, without any password.
    pub fn describe(&self) -> String {
        let sentinels: Vec<&str> = self
            .redis_sentinels
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect();
        if !sentinels.is_empty() {
            format!(
                "master {:?} via sentinels {}",
                self.redis_master_name,
                sentinels.join(",")
            )
        } else if let Some(url) = self.redis_url.as_deref().filter(|u| !u.trim().is_empty()) {
            redact_url(url.trim())
        } else {
            "Redis (not configured)".to_owned()
        }
    }

    /// The fred client configuration (server, credentials, database) these args describe.
    pub fn config(&self) -> Result<Config> {
        let sentinels: Vec<&str> = self
            .redis_sentinels
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect();
        let url = self
            .redis_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty());
        let mut config = match (url, sentinels.is_empty()) {
            (None, true) => return Err(Error::NotConfigured),
            (Some(_), false) => {
                return Err(Error::InvalidConfig(
                    "give either --redis-url or --redis-sentinels, not both".to_owned(),
                ));
            }
            (Some(url), true) => Config::from_url(url).map_err(|source| Error::Config {
                target: self.describe(),
                source,
            })?,
            (None, false) => {
                let master = self.redis_master_name.trim();
                if master.is_empty() {
                    return Err(Error::InvalidConfig(
                        "--redis-master-name must not be empty with --redis-sentinels".to_owned(),
                    ));
                }
                let hosts = sentinels
                    .iter()
                    .map(|s| parse_host_port(s, DEFAULT_SENTINEL_PORT))
                    .collect::<Result<Vec<_>>>()?;
                Config {
                    server: ServerConfig::Sentinel {
                        hosts,
                        service_name: master.to_owned(),
                        username: self.redis_sentinel_username.clone(),
                        password: self.sentinel_password()?,
                    },
                    ..Config::default()
                }
            }
        };
        if let Some(password) = self.password()? {
            config.password = Some(password);
        }
        if let Some(username) = &self.redis_username {
            config.username = Some(username.clone());
        }
        let tls_files = self.redis_tls_ca_file.is_some()
            || self.redis_tls_ca_pem.is_some()
            || self.redis_tls_client_pem.is_some()
            || self.redis_tls_cert_file.is_some()
            || self.redis_tls_key_file.is_some();
        let tls_url = url.is_some_and(|u| u.starts_with("rediss://"));
        match (tls_url, tls_files) {
            (true, _) => config.tls = Some(self.tls_config()?),
            // Sentinels have no URL scheme: TLS files mean the sentinels and the data nodes they name
            // speak TLS (each checked against its host name).
            (false, true) if !sentinels.is_empty() => config.tls = Some(self.tls_config()?),
            (false, true) => {
                return Err(Error::InvalidConfig(
                    "TLS files were given but --redis-url is not rediss://".to_owned(),
                ));
            }
            (false, false) => {}
        }
        // Start-up must fail loudly; the reconnect policy only applies once we were connected.
        config.fail_fast = true;
        Ok(config)
    }
}

impl RedisArgs {
    /// Settings to reach single data nodes or sentinels as this client does (password, TLS).
    pub fn access(&self) -> Result<crate::node::Access> {
        let config = self.config()?;
        Ok(crate::node::Access {
            password: config.password,
            tls: config.tls,
        })
    }

    /// The TLS settings of a `rediss://` (or TLS sentinel) connection: the given authorities (else the system's roots) and,
    /// for mutual TLS, the client certificate and key. rustls on ring, TLS 1.2 and 1.3.
    fn tls_config(&self) -> Result<TlsConfig> {
        use switchboard_runtime::tls;
        let tls_err = |what: &'static str, path: &Path| {
            let path = path.display().to_string();
            move |e: tls::Error| Error::Tls {
                what,
                path,
                source: Box::new(e),
            }
        };
        // Each piece comes from memory (the operator) or from a file; errors name its origin.
        let memory = Path::new("(in memory)");
        let pem =
            |held: &Option<Vec<u8>>, file: &Option<PathBuf>, what: &'static str| match (held, file)
            {
                (Some(pem), _) => Ok(Some((pem.clone(), memory.to_owned()))),
                (None, Some(path)) => tls::read_pem(what, path)
                    .map(|pem| Some((pem, path.clone())))
                    .map_err(tls_err(what, path)),
                (None, None) => Ok(None),
            };
        let mut roots = rustls::RootCertStore::empty();
        if let Some((ca, path)) = pem(&self.redis_tls_ca_pem, &self.redis_tls_ca_file, "CA")? {
            for cert in tls::certificates(&ca, &path).map_err(tls_err("CA", &path))? {
                roots.add(cert).map_err(|e| Error::Tls {
                    what: "CA",
                    path: path.display().to_string(),
                    source: Box::new(e),
                })?;
            }
        } else {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
        let (held_cert, held_key) = match &self.redis_tls_client_pem {
            Some((cert, key)) => (Some(cert.clone()), Some(key.clone())),
            None => (None, None),
        };
        let cert = pem(&held_cert, &self.redis_tls_cert_file, "certificate")?;
        let key = pem(&held_key, &self.redis_tls_key_file, "key")?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::InvalidConfig(format!("TLS: {e}")))?
            .with_root_certificates(roots);
        let config = match (cert, key) {
            (Some((cert, cert_path)), Some((key, key_path))) => {
                let chain = tls::certificates(&cert, &cert_path)
                    .map_err(tls_err("certificate", &cert_path))?;
                let key = tls::private_key(&key, &key_path).map_err(tls_err("key", &key_path))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| Error::Tls {
                        what: "certificate and key",
                        path: cert_path.display().to_string(),
                        source: Box::new(e),
                    })?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(Error::InvalidConfig(
                    "give both --redis-tls-cert-file and --redis-tls-key-file, or neither"
                        .to_owned(),
                ));
            }
        };
        Ok(TlsConfig {
            connector: TlsConnector::from(config),
            hostnames: TlsHostMapping::None,
        })
    }
}

fn read_password(value: &Option<String>, file: &Option<PathBuf>) -> Result<Option<String>> {
    match (value, file) {
        (Some(v), _) => Ok(Some(v.clone())),
        (None, Some(path)) => switchboard_runtime::secret::read_text(path)
            .map(Some)
            .map_err(Error::PasswordFile),
        (None, None) => Ok(None),
    }
}

/// The fred [`Builder`] for `args` with Switchboard's connection policy (see the module docs). Use it to
/// build other client kinds (pools); [`connect`] and [`subscriber`] cover the common cases.
pub fn builder(args: &RedisArgs) -> Result<Builder> {
    let config = args.config()?;
    let mut builder = Builder::from_config(config);
    builder
        .set_policy(ReconnectPolicy::new_exponential(
            0, // retry forever: a failover can take a while and the process must follow it
            RECONNECT_MIN_DELAY_MS,
            RECONNECT_MAX_DELAY_MS,
            2,
        ))
        .with_performance_config(|perf| {
            perf.default_command_timeout = COMMAND_TIMEOUT;
        })
        .with_connection_config(|conn| {
            conn.connection_timeout = CONNECT_TIMEOUT;
            conn.internal_command_timeout = CONNECT_TIMEOUT;
            conn.max_command_attempts = 3;
            conn.tcp.nodelay = Some(true);
            conn.unresponsive = UnresponsiveConfig {
                max_timeout: Some(UNRESPONSIVE_TIMEOUT),
                interval: Duration::from_secs(1),
            };
        });
    Ok(builder)
}

/// Connects a command client and checks it with a `PING`.
///
/// Fails with [`Error::Auth`] on a wrong or missing password, [`Error::Unreachable`] when no server (or no
/// sentinel) answers, [`Error::Timeout`] when start-up takes longer than [`STARTUP_TIMEOUT`]. Once this
/// returns, the client reconnects by itself forever (following failovers).
pub async fn connect(args: &RedisArgs) -> Result<Client> {
    let client = builder(args)?.build().map_err(|source| Error::Config {
        target: args.describe(),
        source,
    })?;
    start(&client, args).await?;
    Ok(client)
}

/// Messages a subscriber buffers for a slow receiver before it lags. fred's default (32) is sized for
/// notifications, not for a chat node's whole inbound stream; a lag forces a catch-up from history.
pub const SUBSCRIBER_BROADCAST_CAPACITY: usize = 1 << 16;

/// Connects a pub/sub client whose channels are re-subscribed after every reconnect or failover
/// (`manage_subscriptions`). Same start-up checks as [`connect`].
pub async fn subscriber(args: &RedisArgs) -> Result<SubscriberClient> {
    let mut builder = builder(args)?;
    builder.with_performance_config(|perf| {
        perf.broadcast_channel_capacity = SUBSCRIBER_BROADCAST_CAPACITY;
    });
    let client = builder
        .build_subscriber_client()
        .map_err(|source| Error::Config {
            target: args.describe(),
            source,
        })?;
    start(&client, args).await?;
    // The handles are detached on purpose: both tasks end when the client is quit.
    drop(client.manage_subscriptions());
    spawn_keepalive(client.clone());
    Ok(client)
}

/// How often a subscriber PINGs its connection. A subscriber otherwise sends nothing, so a frozen or
/// partitioned master would never trip the [`UNRESPONSIVE_TIMEOUT`] check and the subscriber would
/// stay on it, silently, after Sentinel promoted another master.
pub const SUBSCRIBER_KEEPALIVE: Duration = Duration::from_secs(1);

/// PINGs `client` every [`SUBSCRIBER_KEEPALIVE`] until it is quit (`quit` closes its event streams).
fn spawn_keepalive(client: SubscriberClient) {
    let mut events = client.reconnect_rx();
    let span = tracing::debug_span!("redis_subscriber_keepalive", client = %client.id());
    tokio::spawn(
        async move {
            let mut tick = tokio::time::interval(SUBSCRIBER_KEEPALIVE);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if client.is_connected() {
                            // Errors are expected while the connection is being replaced.
                            let _ = tokio::time::timeout(COMMAND_TIMEOUT, client.ping::<Value>(None)).await;
                        }
                    }
                    event = events.recv() => {
                        if matches!(event, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                            break;
                        }
                    }
                }
            }
        }
        .instrument(span),
    );
}

async fn start<C: ClientLike>(client: &C, args: &RedisArgs) -> Result<()> {
    let target = args.describe();
    let attempt = async {
        client.init().await?;
        client.ping::<String>(None).await.map(drop)
    };
    match tokio::time::timeout(STARTUP_TIMEOUT, attempt).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => {
            // A failed `init` already stopped the client; a failed PING leaves it connected.
            if client.is_connected() {
                let _ = client.quit().await;
            }
            if matches!(source.kind(), ErrorKind::Sentinel) {
                // fred's sentinel errors do not say whether a sentinel or the data node refused us
                // (or only "Failed to connect to all sentinel nodes"); ask the sentinels ourselves.
                if let Some(error) = diagnose_sentinels(args, &target).await {
                    return Err(error);
                }
            }
            Err(classify(source, args, target))
        }
        Err(_) => {
            let _ = client.quit().await;
            Err(Error::Timeout {
                target,
                timeout: STARTUP_TIMEOUT,
            })
        }
    }
}

/// Connects to each sentinel directly to find out whether discovery failed because of the sentinels: a
/// rejected sentinel password, or a master name they do not monitor. `None` when the sentinels are fine
/// (or none answers), so the caller's own classification stands.
async fn diagnose_sentinels(args: &RedisArgs, target: &str) -> Option<Error> {
    let config = args.config().ok()?;
    let ServerConfig::Sentinel {
        hosts,
        service_name,
        password,
        ..
    } = config.server
    else {
        return None;
    };
    let access = crate::node::Access {
        password: password.clone(),
        tls: config.tls,
    };
    for host in hosts {
        let sentinel = format!("{}:{}", host.host, host.port);
        let answer =
            crate::sentinel::master_addr(&sentinel, &service_name, &access, CONNECT_TIMEOUT * 2)
                .await;
        match answer {
            Ok(None) => {
                return Some(Error::UnknownMaster {
                    target: target.to_owned(),
                    sentinel,
                    master: service_name,
                });
            }
            // This sentinel is fine and knows the master: the failure was elsewhere.
            Ok(Some(_)) => return None,
            Err(error) => {
                if let Some(source) = error.redis_error()
                    && let Some(hint) = sentinel_auth_hint(source, password.is_some())
                {
                    return Some(Error::Auth {
                        target: target.to_owned(),
                        hint,
                        source: source.clone(),
                    });
                }
            }
        }
    }
    None
}

/// What an authentication failure was, read from the server's (or sentinel's) reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AuthProblem {
    /// A password is required and the one given was not accepted.
    NotAccepted,
    /// A password is required and none was given.
    NoneGiven,
    /// The password given is wrong.
    Wrong,
    /// A password was given but none is configured.
    NoneConfigured,
    /// Some other refusal.
    Refused,
}

fn auth_problem(error: &FredError, password_given: bool) -> Option<AuthProblem> {
    let details = error.details().to_ascii_uppercase();
    if details.contains("NOAUTH") {
        Some(if password_given {
            AuthProblem::NotAccepted
        } else {
            AuthProblem::NoneGiven
        })
    } else if details.contains("WRONGPASS")
        || details.contains("INVALID PASSWORD")
        || details.contains("INVALID USERNAME-PASSWORD")
    {
        Some(AuthProblem::Wrong)
    } else if details.contains("WITHOUT ANY PASSWORD CONFIGURED") {
        Some(AuthProblem::NoneConfigured)
    } else if matches!(error.kind(), ErrorKind::Auth) {
        Some(AuthProblem::Refused)
    } else {
        None
    }
}

fn sentinel_auth_hint(error: &FredError, password_given: bool) -> Option<&'static str> {
    auth_problem(error, password_given).map(|p| match p {
        AuthProblem::NotAccepted => {
            "the sentinels require a password and the one given was not accepted"
        }
        AuthProblem::NoneGiven => {
            "the sentinels require a password and none was given (set --redis-sentinel-password)"
        }
        AuthProblem::Wrong => "a sentinel rejected --redis-sentinel-password (wrong password)",
        AuthProblem::NoneConfigured => {
            "--redis-sentinel-password was given but the sentinels have no password configured"
        }
        AuthProblem::Refused => "a sentinel refused authentication",
    })
}

/// Maps a start-up failure to the variant that names its cause.
fn classify(source: FredError, args: &RedisArgs, target: String) -> Error {
    let password_given = args.redis_password.is_some()
        || args.redis_password_file.is_some()
        || url_has_password(args);
    let auth_hint = auth_problem(&source, password_given).map(|p| match p {
        AuthProblem::NotAccepted => {
            "the server requires a password and the one given was not accepted"
        }
        AuthProblem::NoneGiven => {
            "the server requires a password and none was given (set --redis-password)"
        }
        AuthProblem::Wrong => "wrong password",
        AuthProblem::NoneConfigured => "a password was given but the server has none configured",
        AuthProblem::Refused => "authentication failed",
    });
    if let Some(hint) = auth_hint {
        return Error::Auth {
            target,
            hint,
            source,
        };
    }
    match source.kind() {
        ErrorKind::IO | ErrorKind::Canceled | ErrorKind::Sentinel | ErrorKind::Routing => {
            Error::Unreachable { target, source }
        }
        ErrorKind::Timeout => Error::Timeout {
            target,
            timeout: CONNECT_TIMEOUT,
        },
        ErrorKind::Config | ErrorKind::Url => Error::Config { target, source },
        _ => Error::Command { target, source },
    }
}

fn url_has_password(args: &RedisArgs) -> bool {
    args.redis_url
        .as_deref()
        .and_then(userinfo)
        .is_some_and(|(_, info)| info.contains(':'))
}

/// Splits `scheme://userinfo@rest` into the position and text of the userinfo, if any.
fn userinfo(url: &str) -> Option<(usize, &str)> {
    let start = url.find("://")? + 3;
    let authority_end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let at = url[start..authority_end].rfind('@')? + start;
    Some((start, &url[start..at]))
}

/// `url` with any password in its userinfo replaced by `***`.
pub fn redact_url(url: &str) -> String {
    match userinfo(url) {
        Some((start, info)) => match info.split_once(':') {
            Some((user, _password)) => format!(
                "{}{}:***{}",
                &url[..start],
                user,
                &url[start + info.len()..]
            ),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Parses `host:port`, `host` or `[v6]:port`.
pub(crate) fn parse_host_port(s: &str, default_port: u16) -> Result<Server> {
    let invalid = || {
        Error::InvalidConfig(format!(
            "invalid sentinel address {s:?}, expected host:port"
        ))
    };
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(invalid)?;
        match after.strip_prefix(':') {
            Some(port) => (host, port.parse().map_err(|_| invalid())?),
            None if after.is_empty() => (host, default_port),
            None => return Err(invalid()),
        }
    } else {
        match s.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().map_err(|_| invalid())?),
            None => (s, default_port),
        }
    };
    if host.is_empty() || port == 0 {
        return Err(invalid());
    }
    Ok(Server::new(host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_passwords() {
        let args = RedisArgs::from_url("redis://user:s3cret@host:6379/0")
            .with_password("hunter2")
            .with_sentinel_password("sentinelpw");
        let debug = format!("{args:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!debug.contains("sentinelpw"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }

    #[test]
    fn describe_leaves_out_the_password() {
        let args = RedisArgs::from_url("redis://:s3cret@127.0.0.1:6379/0");
        assert_eq!(args.describe(), "redis://:***@127.0.0.1:6379/0");
        let args = RedisArgs::from_sentinels(["a:1", "b:2"], "m").with_password("pw");
        assert_eq!(args.describe(), "master \"m\" via sentinels a:1,b:2");
    }

    #[test]
    fn redact_url_keeps_urls_without_password() {
        assert_eq!(redact_url("redis://host:1/0"), "redis://host:1/0");
        assert_eq!(redact_url("redis://user@host"), "redis://user@host");
        assert_eq!(redact_url("redis://u:p@h/x?y=@z"), "redis://u:***@h/x?y=@z");
    }

    #[test]
    fn is_configured_needs_a_url_or_a_sentinel() {
        assert!(!RedisArgs::default().is_configured());
        assert!(RedisArgs::from_url("redis://x").is_configured());
        assert!(RedisArgs::from_sentinels(["x:1"], "m").is_configured());
        assert!(matches!(
            RedisArgs::default().config(),
            Err(Error::NotConfigured)
        ));
    }

    #[test]
    fn url_and_sentinels_together_are_rejected() {
        let mut args = RedisArgs::from_url("redis://x");
        args.redis_sentinels = vec!["y:1".into()];
        assert!(matches!(args.config(), Err(Error::InvalidConfig(_))));
    }

    #[test]
    fn sentinel_config_carries_hosts_service_and_both_passwords() {
        let args =
            RedisArgs::from_sentinels(["10.0.0.1:26380", "sentinel-b", "[::1]:1"], "mymaster")
                .with_password("data")
                .with_sentinel_password("sent");
        let config = args.config().expect("config");
        assert_eq!(config.password.as_deref(), Some("data"));
        match config.server {
            ServerConfig::Sentinel {
                hosts,
                service_name,
                password,
                ..
            } => {
                assert_eq!(service_name, "mymaster");
                assert_eq!(password.as_deref(), Some("sent"));
                let hosts: Vec<(String, u16)> = hosts
                    .into_iter()
                    .map(|s| (s.host.to_string(), s.port))
                    .collect();
                assert_eq!(
                    hosts,
                    vec![
                        ("10.0.0.1".to_owned(), 26380),
                        ("sentinel-b".to_owned(), DEFAULT_SENTINEL_PORT),
                        ("::1".to_owned(), 1)
                    ]
                );
            }
            other => panic!("expected a sentinel config, got {other:?}"),
        }
    }

    #[test]
    fn malformed_sentinel_address_is_a_config_error() {
        for bad in ["host:notaport", ":1", "[::1", "h:0"] {
            let args = RedisArgs::from_sentinels([bad], "m");
            assert!(
                matches!(args.config(), Err(Error::InvalidConfig(_))),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn password_flag_overrides_the_url_password() {
        let args = RedisArgs::from_url("redis://:old@127.0.0.1:1/2").with_password("new");
        let config = args.config().expect("config");
        assert_eq!(config.password.as_deref(), Some("new"));
        assert_eq!(config.database, Some(2));
    }

    #[test]
    fn flags_parse_from_the_command_line() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            redis: RedisArgs,
        }
        let cli = Cli::parse_from([
            "x",
            "--redis-sentinels",
            "a:1,b:2",
            "--redis-password",
            "pw",
        ]);
        assert_eq!(cli.redis.redis_sentinels, vec!["a:1", "b:2"]);
        assert_eq!(cli.redis.redis_master_name, DEFAULT_MASTER_NAME);
        assert_eq!(cli.redis.redis_password.as_deref(), Some("pw"));
    }
}
