//! A highly available Redis on loopback: one master, replicas and sentinels as real processes, with a
//! password, for the HA topology and the fault scenarios.
//!
//! ```text
//!   sentinel ×3 (quorum 2) ──watch──▶ master ◀──replicate── replica ×2
//!        ▲
//!        └── chat-node / registry: --redis-sentinels a,b,c --redis-master-name … --redis-password …
//! ```

use registry::testing::{RedisServer, Sentinel};
use std::io;
use std::time::Duration;

/// Name the sentinels monitor.
pub const MASTER_NAME: &str = "switchboard";

/// How the HA Redis is laid out.
#[derive(Clone, Debug)]
pub struct HaConfig {
    /// Replicas of the master.
    pub replicas: usize,
    /// Sentinels.
    pub sentinels: usize,
    /// Sentinels that must agree the master is down.
    pub quorum: u32,
    /// Password of the data nodes.
    pub password: String,
}

impl Default for HaConfig {
    fn default() -> Self {
        Self {
            replicas: 2,
            sentinels: 3,
            quorum: 2,
            password: format!("pw-{:016x}", fastrand::u64(..)),
        }
    }
}

/// A running master, its replicas and sentinels; dropping it stops them all.
pub struct RedisHa {
    config: HaConfig,
    servers: Vec<RedisServer>,
    sentinels: Vec<Sentinel>,
}

impl RedisHa {
    /// Starts the master, waits for every replica to sync, then starts the sentinels.
    pub async fn start(config: HaConfig) -> io::Result<Self> {
        let master = RedisServer::builder()
            .password(config.password.clone())
            .start()
            .await?;
        let mut servers = vec![master];
        for _ in 0..config.replicas {
            let replica = RedisServer::builder()
                .password(config.password.clone())
                .replica_of(&servers[0])
                .start()
                .await?;
            servers.push(replica);
        }
        let mut sentinels = Vec::new();
        for _ in 0..config.sentinels {
            let s = Sentinel::builder(&servers[0])
                .master_name(MASTER_NAME)
                .quorum(config.quorum)
                .down_after_ms(1000)
                .failover_timeout_ms(3000)
                .start()
                .await?;
            sentinels.push(s);
        }
        Ok(Self {
            config,
            servers,
            sentinels,
        })
    }

    /// The flags that point a chat-node or registry at this Redis through the sentinels.
    pub fn flags(&self) -> Vec<String> {
        let addrs: Vec<String> = self.sentinels.iter().map(Sentinel::addr).collect();
        vec![
            "--redis-sentinels".into(),
            addrs.join(","),
            "--redis-master-name".into(),
            MASTER_NAME.into(),
            "--redis-password".into(),
            self.config.password.clone(),
        ]
    }

    /// The password of the data nodes.
    pub fn password(&self) -> &str {
        &self.config.password
    }

    /// Sentinel addresses (`127.0.0.1:port`).
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels.iter().map(Sentinel::addr).collect()
    }

    /// The port the sentinels currently name as master.
    pub async fn master_port(&self) -> io::Result<u16> {
        for s in &self.sentinels {
            if let Ok(Some(p)) = s.master_port().await {
                return Ok(p);
            }
        }
        Err(io::Error::other("no sentinel names a master"))
    }

    /// Kills the current master with SIGKILL and waits until the sentinels name another one.
    /// Returns the new master's port.
    pub async fn kill_master(&mut self, within: Duration) -> io::Result<u16> {
        let old = self.master_port().await?;
        let Some(master) = self.servers.iter_mut().find(|s| s.port() == old) else {
            return Err(io::Error::other(format!(
                "no server on the master port {old}"
            )));
        };
        master.kill();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Ok(p) = self.master_port().await
                && p != old
            {
                return Ok(p);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(io::Error::other(format!("no failover within {within:?}")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The data node on `port`, if this harness started it.
    pub fn server(&self, port: u16) -> Option<&RedisServer> {
        self.servers.iter().find(|s| s.port() == port)
    }
}
