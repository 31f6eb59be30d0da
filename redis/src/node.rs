//! What one Redis data node says of itself: its replication role and whether it is in sync
//! (`INFO replication`, `INFO persistence`).
//!
//! ```text
//! operator (a managed-Redis update) ──replication(pod)──▶ role, link up?, syncing?, loading?, offset
//! ```
//!
//! The operator asks every data node before it restarts one, so that a replica is restarted only
//! while every other replica is in sync, and the master only after a failover made it a replica.

use std::collections::HashMap;
use std::time::Duration;

use fred::clients::Client;
use fred::error::Error as FredError;
use fred::interfaces::ClientLike;
use fred::types::config::{Config, ServerConfig};
use fred::types::{Builder, ClusterHash, CustomCommand, InfoKind, Value};

/// How to reach a data node or a sentinel: the password it asks for, and TLS when it speaks it.
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// The password (`AUTH`), if it asks for one.
    pub password: Option<String>,
    /// Speak TLS with these settings (managed Redis with `spec.redis.managed.tls`, or external TLS).
    pub tls: Option<fred::types::config::TlsConfig>,
}

impl Access {
    /// Plain TCP with `password`.
    pub fn password(password: Option<&str>) -> Self {
        Self {
            password: password.map(str::to_owned),
            tls: None,
        }
    }
}

/// Errors asking a data node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address is not `host:port`.
    #[error("invalid Redis address {0:?}, expected host:port")]
    Address(String),
    /// Connecting, authenticating or asking failed.
    #[error("Redis {addr} did not answer")]
    Redis {
        /// The data node.
        addr: String,
        /// Why.
        #[source]
        source: FredError,
    },
    /// No answer in time.
    #[error("Redis {0} did not answer in time")]
    Timeout(String),
    /// The answer lacks the role.
    #[error("Redis {0} did not report its replication role")]
    Reply(String),
}

/// A data node's replication role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// It takes writes.
    Master,
    /// It follows a master.
    Replica,
}

/// What a data node reports of its replication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replication {
    /// Master or replica.
    pub role: Role,
    /// A replica's link to its master is up (`master_link_status:up`); always true for a master.
    pub link_up: bool,
    /// A full or partial resync is running (`master_sync_in_progress:1`).
    pub syncing: bool,
    /// It is still loading its dataset from disk (`loading:1`).
    pub loading: bool,
    /// Replication offset (`master_repl_offset`, or `slave_repl_offset` of a replica).
    pub offset: u64,
    /// Replicas connected to it (a master's `connected_slaves`).
    pub replicas: u32,
}

impl Replication {
    /// A replica that follows its master and has its data: link up, no resync, not loading.
    pub fn in_sync(&self) -> bool {
        self.link_up && !self.syncing && !self.loading
    }
}

/// Asks the data node at `addr` (`host:port`) for its replication state, bounded by `timeout`.
pub async fn replication(
    addr: &str,
    access: &Access,
    timeout: Duration,
) -> Result<Replication, Error> {
    let text = ask(addr, access, timeout, |client| async move {
        let replication: String = client.info(Some(InfoKind::Replication)).await?;
        let persistence: String = client.info(Some(InfoKind::Persistence)).await?;
        Ok(format!("{replication}\n{persistence}"))
    })
    .await?;
    parse(&text).ok_or_else(|| Error::Reply(addr.to_owned()))
}

/// Holds every write on the data node at `addr` for up to `hold` (`CLIENT PAUSE … WRITE`): before a
/// planned failover, so that nothing is written to the old master after its replicas last caught up
/// (and then lost when it becomes a replica). Reads go on. [`resume_writes`] ends it early.
pub async fn pause_writes(
    addr: &str,
    access: &Access,
    hold: Duration,
    timeout: Duration,
) -> Result<(), Error> {
    let ms = i64::try_from(hold.as_millis()).unwrap_or(i64::MAX);
    ask(addr, access, timeout, |client| async move {
        client
            .custom::<Value, _>(
                CustomCommand::new_static("CLIENT", ClusterHash::FirstKey, false),
                vec![Value::from("PAUSE"), Value::from(ms), Value::from("WRITE")],
            )
            .await
            .map(drop)
    })
    .await
}

/// Ends a [`pause_writes`] (`CLIENT UNPAUSE`).
pub async fn resume_writes(addr: &str, access: &Access, timeout: Duration) -> Result<(), Error> {
    ask(addr, access, timeout, |client| async move {
        client
            .custom::<Value, _>(
                CustomCommand::new_static("CLIENT", ClusterHash::FirstKey, false),
                vec![Value::from("UNPAUSE")],
            )
            .await
            .map(drop)
    })
    .await
}

/// Closes the connections of the data node at `addr` that clients use for commands and pub/sub
/// (`CLIENT KILL TYPE normal`, `TYPE pubsub`; this one is spared), as Sentinel does when it turns an old
/// master into a replica: after a failover, clients still on the old master ask the sentinels again and
/// move to the new one. Replication links are kept. Returns how many connections were closed.
pub async fn disconnect_clients(
    addr: &str,
    access: &Access,
    timeout: Duration,
) -> Result<u64, Error> {
    ask(addr, access, timeout, |client| async move {
        let mut closed = 0;
        for kind in ["normal", "pubsub"] {
            let n: Value = client
                .custom(
                    CustomCommand::new_static("CLIENT", ClusterHash::FirstKey, false),
                    vec![Value::from("KILL"), Value::from("TYPE"), Value::from(kind)],
                )
                .await?;
            closed += n.as_u64().unwrap_or(0);
        }
        Ok(closed)
    })
    .await
}

/// Runs one exchange on a short-lived connection to the data node at `addr`, bounded by `timeout`.
pub(crate) async fn ask<T, F, Fut>(
    addr: &str,
    access: &Access,
    timeout: Duration,
    exchange: F,
) -> Result<T, Error>
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, FredError>>,
{
    let server =
        crate::client::parse_host_port(addr, 6379).map_err(|_| Error::Address(addr.to_owned()))?;
    let config = Config {
        server: ServerConfig::Centralized { server },
        password: access.password.clone(),
        tls: access.tls.clone(),
        ..Config::default()
    };
    let mut builder = Builder::from_config(config);
    one_attempt(&mut builder, timeout);
    let client = builder.build().map_err(|source| Error::Redis {
        addr: addr.to_owned(),
        source,
    })?;
    once(client, timeout, exchange)
        .await
        .map_err(|ended| match ended {
            Ended::Timeout => Error::Timeout(addr.to_owned()),
            Ended::Redis(source) => Error::Redis {
                addr: addr.to_owned(),
                source,
            },
        })
}

/// Connection settings of a one-question client: one attempt, bounded by `timeout`.
pub(crate) fn one_attempt(builder: &mut Builder, timeout: Duration) {
    builder.with_connection_config(|conn| {
        conn.connection_timeout = timeout;
        conn.internal_command_timeout = timeout;
        conn.max_command_attempts = 1;
    });
}

/// How a one-question exchange failed.
pub(crate) enum Ended {
    /// No answer within the time allowed.
    Timeout,
    /// Connecting, authenticating or the question itself failed.
    Redis(FredError),
}

/// Connects `client`, runs `exchange` on it and closes it, all within `timeout`.
pub(crate) async fn once<C, T, F, Fut>(
    client: C,
    timeout: Duration,
    exchange: F,
) -> Result<T, Ended>
where
    C: ClientLike + Clone,
    F: FnOnce(C) -> Fut,
    Fut: std::future::Future<Output = Result<T, FredError>>,
{
    let asking = client.clone();
    let answer = tokio::time::timeout(timeout, async move {
        asking.init().await?;
        exchange(asking).await
    })
    .await;
    if client.is_connected() {
        let _ = client.quit().await;
    }
    match answer {
        Err(_) => Err(Ended::Timeout),
        Ok(Err(e)) => Err(Ended::Redis(e)),
        Ok(Ok(v)) => Ok(v),
    }
}

/// Reads the fields of [`Replication`] from `INFO` text (`key:value` lines).
pub fn parse(info: &str) -> Option<Replication> {
    let fields: HashMap<&str, &str> = info
        .lines()
        .filter_map(|line| line.trim_end().split_once(':'))
        .collect();
    let flag = |key: &str| fields.get(key).is_some_and(|v| *v == "1");
    let number = |key: &str| fields.get(key).and_then(|v| v.parse().ok());
    let role = match *fields.get("role")? {
        "master" => Role::Master,
        "slave" | "replica" => Role::Replica,
        _ => return None,
    };
    Some(Replication {
        role,
        link_up: role == Role::Master || fields.get("master_link_status") == Some(&"up"),
        syncing: flag("master_sync_in_progress"),
        loading: flag("loading"),
        offset: match role {
            Role::Master => number("master_repl_offset"),
            Role::Replica => number("slave_repl_offset").or_else(|| number("master_repl_offset")),
        }
        .unwrap_or(0),
        replicas: number("connected_slaves").unwrap_or(0) as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_in_sync_and_one_still_syncing() {
        let up = "# Replication\r\nrole:slave\r\nmaster_host:r-0\r\nmaster_link_status:up\r\n\
                  master_sync_in_progress:0\r\nslave_repl_offset:420\r\nmaster_repl_offset:420\r\n\
                  # Persistence\r\nloading:0\r\n";
        let replication = parse(up).expect("parsed");
        assert_eq!(replication.role, Role::Replica);
        assert!(replication.in_sync());
        assert_eq!(replication.offset, 420);
        let syncing = up.replace("master_sync_in_progress:0", "master_sync_in_progress:1");
        assert!(!parse(&syncing).expect("parsed").in_sync());
        let down = up.replace("master_link_status:up", "master_link_status:down");
        assert!(!parse(&down).expect("parsed").in_sync());
        let loading = up.replace("loading:0", "loading:1");
        assert!(!parse(&loading).expect("parsed").in_sync());
    }

    #[test]
    fn a_master_reports_its_replicas_and_no_role_is_no_answer() {
        let master = "role:master\nconnected_slaves:2\nmaster_repl_offset:9\nloading:0\n";
        let replication = parse(master).expect("parsed");
        assert_eq!(replication.role, Role::Master);
        assert_eq!(replication.replicas, 2);
        assert!(replication.in_sync());
        assert_eq!(parse("loading:0\n"), None);
        assert_eq!(parse("role:sentinel\n"), None);
    }
}
