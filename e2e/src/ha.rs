//! The HA topology's Redis: one master, two replicas and three sentinels (quorum 2) with a password,
//! as real processes on loopback — [`switchboard_testkit::RedisHa`] with the layout issue 4 asks for, and
//! the command-line flags that point chat-nodes and registries at it.
//!
//! ```text
//!   sentinel ×3 (quorum 2) ──watch──▶ master ◀──replicate── replica ×2
//!        ▲
//!        └── chat-node / registry: --redis-sentinels a,b,c --redis-master-name … --redis-password-file F
//! ```
//!
//! The password lives in a file readable by the owner only ([`RedisHa::password_file`]); no process
//! gets it on its command line (the Redis servers read it from their config files too).

use std::io;
use std::time::Duration;
use switchboard_testkit::{HaConfig, RedisHa as Inner};

/// A running HA Redis; dropping it stops every process.
pub struct RedisHa {
    inner: Inner,
    password: String,
    dir: std::path::PathBuf,
}

impl Drop for RedisHa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes `secret` to `path`, readable by the owner only.
pub fn write_secret_file(path: &std::path::Path, secret: &str) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)?
        .write_all(secret.as_bytes())
}

impl RedisHa {
    /// Starts a master, two replicas and three sentinels with a fresh password.
    pub async fn start() -> io::Result<Self> {
        let password = format!("pw-{:016x}", fastrand::u64(..));
        let inner = Inner::start(HaConfig {
            replicas: 2,
            sentinels: 3,
            quorum: Some(2),
            password: Some(password.clone()),
            ..HaConfig::default()
        })
        .await?;
        let dir = std::env::temp_dir().join(format!(
            "switchboard-ha-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir)?;
        write_secret_file(&dir.join("redis-password"), &password)?;
        Ok(Self {
            inner,
            password,
            dir,
        })
    }

    /// The file holding the data nodes' password (mode 0600).
    pub fn password_file(&self) -> std::path::PathBuf {
        self.dir.join("redis-password")
    }

    /// The flags that point a chat-node or registry at this Redis through the sentinels.
    pub fn flags(&self) -> Vec<String> {
        let args = self.inner.redis_args();
        vec![
            "--redis-sentinels".into(),
            args.redis_sentinels.join(","),
            "--redis-master-name".into(),
            args.redis_master_name,
            "--redis-password-file".into(),
            self.password_file().display().to_string(),
        ]
    }

    /// The password of the data nodes.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// Sentinel addresses (`127.0.0.1:port`).
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.inner.sentinel_addrs()
    }

    /// Index of the server the sentinels currently name as master.
    async fn master(&self) -> io::Result<usize> {
        self.inner
            .master_index()
            .await?
            .ok_or_else(|| io::Error::other("no sentinel names a master"))
    }

    /// The port of the server the sentinels currently name as master.
    pub async fn master_port(&self) -> io::Result<u16> {
        let i = self.master().await?;
        Ok(self.inner.servers[i].port())
    }

    /// Kills the current master with SIGKILL and waits until the sentinels name another one;
    /// returns the new master's port.
    pub async fn kill_master(&mut self, within: Duration) -> io::Result<u16> {
        let i = self.master().await?;
        let old = self.inner.servers[i].port();
        self.inner.servers[i].kill();
        let new = self.inner.wait_for_failover(old, within).await?;
        Ok(self.inner.servers[new].port())
    }

    /// Hands the master role to a replica the way the operator does before it restarts the master
    /// ([`switchboard_redis::sentinel::planned_failover`]: writes held, replicas caught up,
    /// `SENTINEL FAILOVER`), and waits until every sentinel names the new master; returns its port.
    pub async fn planned_failover(&mut self, within: Duration) -> io::Result<u16> {
        let i = self.master().await?;
        let master = self.inner.servers[i].addr();
        let replicas: Vec<String> = (self.inner.servers.iter().enumerate())
            .filter(|(j, _)| *j != i)
            .map(|(_, s)| s.addr())
            .collect();
        let access = switchboard_redis::node::Access::password(Some(&self.password));
        let started = switchboard_redis::sentinel::planned_failover(
            &master,
            &replicas,
            &self.inner.sentinel_addrs(),
            switchboard_redis::DEFAULT_MASTER_NAME,
            &access,
            Duration::from_secs(2),
        )
        .await;
        started.map_err(io::Error::other)?;
        let old = self.inner.servers[i].port();
        let new = self.inner.wait_for_failover(old, within).await?;
        Ok(self.inner.servers[new].port())
    }
}
