//! The one question every component asks a sentinel: which master does it name now
//! (`SENTINEL get-master-addr-by-name`)?
//!
//! ```text
//! current_master(sentinels) ─▶ master_addr(s1) ─ no answer ─▶ master_addr(s2) ─▶ … first answer wins
//!                                 one short-lived fred sentinel connection, bounded by a timeout
//! ```
//!
//! Used by the connection start-up diagnosis ([`crate::client`]), the operator's status (current
//! master) and the test kit's Sentinel harness. A question never waits on a sentinel that is gone.

use std::time::Duration;

use fred::error::Error as FredError;
use fred::interfaces::SentinelInterface;
use fred::types::Builder;
use fred::types::Value;
use fred::types::config::SentinelConfig;

/// Errors of a sentinel question.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address is not `host:port`.
    #[error("invalid sentinel address {0:?}, expected host:port")]
    Address(String),
    /// Connecting, authenticating or asking failed.
    #[error("sentinel {addr} did not answer")]
    Redis {
        /// The sentinel.
        addr: String,
        /// Why.
        #[source]
        source: FredError,
    },
    /// No answer in time.
    #[error("sentinel {0} did not answer in time")]
    Timeout(String),
    /// The sentinel answered something that is not a master address.
    #[error("sentinel {addr} answered {detail}, not a master address")]
    Reply {
        /// The sentinel.
        addr: String,
        /// What it said.
        detail: String,
    },
}

impl Error {
    /// The underlying Redis error, if the sentinel answered with one (for example a refused password).
    pub fn redis_error(&self) -> Option<&FredError> {
        match self {
            Self::Redis { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A master address as a sentinel names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterAddr {
    /// Host name or IP as the sentinel reports it.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl std::fmt::Display for MasterAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The master `master_name` as the sentinel at `addr` (`host:port`) names it, or `None` when it does not
/// monitor such a master.
pub async fn master_addr(
    addr: &str,
    master_name: &str,
    access: &crate::node::Access,
    timeout: Duration,
) -> Result<Option<MasterAddr>> {
    let value = ask(addr, access, timeout, |client| async move {
        client
            .get_master_addr_by_name::<Value, _>(master_name)
            .await
    })
    .await?;
    parse_reply(addr, value)
}

/// Asks the sentinel at `addr` to fail `master_name` over to one of its replicas now
/// (`SENTINEL FAILOVER`), without waiting for the master to fail. The sentinel answers once it has
/// started; [`master_addr`] tells when a replica took over. A failover already under way is an error
/// (`INPROG`), which callers treat as "wait".
pub async fn failover(
    addr: &str,
    master_name: &str,
    access: &crate::node::Access,
    timeout: Duration,
) -> Result<()> {
    ask(addr, access, timeout, |client| async move {
        client.failover::<Value, _>(master_name).await
    })
    .await
    .map(drop)
}

/// How long writes are held on the master around a planned failover: the sentinels' promotion and their
/// reconfiguration of the old master (which disconnects its clients) take a few seconds; the hold ends by
/// itself if they never come.
pub const FAILOVER_HOLD: Duration = Duration::from_secs(20);
/// How long the replicas get to catch up with the held master before the failover starts anyway (the
/// sentinels then promote the one with the most data).
pub const CATCH_UP: Duration = Duration::from_secs(5);
/// How long the sentinels are asked again when none starts the failover. A sentinel refuses while it
/// sees no replica fit to promote (`NOGOODSLAVE`), which is brief after its links to them were dropped
/// (a password change, `SENTINEL SET … auth-pass`, reconnects them; over TLS that takes a handshake) or
/// while a failover is still being finished (`INPROG`).
pub const FAILOVER_RETRY: Duration = Duration::from_secs(5);

/// Why a planned failover did not start (the hold on the master's writes is lifted by then).
#[derive(Debug, thiserror::Error)]
#[error("no planned failover: {0}")]
pub struct NotStarted(String);

/// A planned failover that loses nothing acknowledged: writes on the master (`master`) are held, the
/// `replicas` catch up to its last write, and only then do the `sentinels` promote one. Without the hold,
/// writes the old master takes while the sentinels promote a replica, confirmed by a replica that still
/// follows it, are dropped when it and that replica are re-pointed at the new master. Succeeds once a
/// sentinel started the failover; the sentinels are asked in turn, again for up to [`FAILOVER_RETRY`]
/// while none does, and then the hold is lifted and the last refusal returned.
///
/// Once every sentinel that answers (a majority at least) names the new master, the old master's
/// clients are disconnected ([`crate::node::disconnect_clients`]) so that they ask the sentinels again
/// and move at once. Left alone they stay on the old master, their writes held and their subscriptions
/// silent, until Sentinel itself re-points it (seconds later) or the hold ends.
pub async fn planned_failover(
    master: &str,
    replicas: &[String],
    sentinels: &[String],
    master_name: &str,
    access: &crate::node::Access,
    timeout: Duration,
) -> Result<(), NotStarted> {
    if let Err(err) = crate::node::pause_writes(master, access, FAILOVER_HOLD, timeout).await {
        let chain = switchboard_runtime::report::chain(&err);
        return Err(NotStarted(format!(
            "could not hold writes on the master: {chain}"
        )));
    }
    let deadline = tokio::time::Instant::now() + CATCH_UP;
    let target = crate::node::replication(master, access, timeout)
        .await
        .map(|r| r.offset)
        .unwrap_or(u64::MAX);
    loop {
        let mut behind = 0;
        for replica in replicas {
            let offset = crate::node::replication(replica, access, timeout)
                .await
                .map(|r| r.offset)
                .unwrap_or(0);
            if offset < target {
                behind += 1;
            }
        }
        if behind == 0 || tokio::time::Instant::now() >= deadline {
            if behind > 0 {
                tracing::debug!(
                    behind,
                    "replicas still behind the held master; failing over anyway"
                );
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = current_master(sentinels, master_name, access, timeout)
        .await
        .ok()
        .flatten();
    if let Err(refused) = ask_for_failover(sentinels, master_name, access, timeout).await {
        if let Err(err) = crate::node::resume_writes(master, access, timeout).await {
            tracing::debug!(error = %switchboard_runtime::report::chain(&err), "could not lift the write hold");
        }
        return Err(NotStarted(refused));
    }
    if let Some(old) = before {
        send_clients_on(master, &old, sentinels, master_name, access, timeout).await;
    }
    Ok(())
}

/// Asks the `sentinels` in turn for a failover of `master_name` until one starts it, again every 250 ms
/// for up to [`FAILOVER_RETRY`]; the last refusal if none did.
async fn ask_for_failover(
    sentinels: &[String],
    master_name: &str,
    access: &crate::node::Access,
    timeout: Duration,
) -> Result<(), String> {
    let ask_until = tokio::time::Instant::now() + FAILOVER_RETRY;
    loop {
        let mut refused = String::from("no sentinel to ask");
        for addr in sentinels {
            match failover(addr, master_name, access, timeout).await {
                Ok(()) => return Ok(()),
                Err(err) => {
                    refused = switchboard_runtime::report::chain(&err);
                    tracing::debug!(sentinel = %addr, error = %refused, "failover not started");
                }
            }
        }
        if tokio::time::Instant::now() >= ask_until {
            return Err(refused);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// After a planned failover away from `old` (as the sentinels named it; the data node at `master`):
/// waits until every sentinel that answers, a majority at least, names another master (for at most
/// [`FAILOVER_HOLD`]), then disconnects the clients of the old master so they follow.
async fn send_clients_on(
    master: &str,
    old: &MasterAddr,
    sentinels: &[String],
    master_name: &str,
    access: &crate::node::Access,
    timeout: Duration,
) {
    let deadline = tokio::time::Instant::now() + FAILOVER_HOLD;
    loop {
        let mut answered = 0;
        let mut moved = 0;
        for addr in sentinels {
            if let Ok(Some(named)) = master_addr(addr, master_name, access, timeout).await {
                answered += 1;
                moved += usize::from(named != *old);
            }
        }
        if moved == answered && answered > sentinels.len() / 2 {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::debug!(
                answered,
                moved,
                "the sentinels did not all name the new master in time; leaving the old master's clients"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    match crate::node::disconnect_clients(master, access, timeout).await {
        Ok(n) => tracing::debug!(
            closed = n,
            "the old master's clients were sent to the new one"
        ),
        Err(err) => {
            tracing::debug!(error = %switchboard_runtime::report::chain(&err), "could not disconnect the old master's clients")
        }
    }
}

/// Runs one question on a short-lived sentinel connection to `addr`, bounded by `timeout`.
pub(crate) async fn ask<F, Fut>(
    addr: &str,
    access: &crate::node::Access,
    timeout: Duration,
    question: F,
) -> Result<Value>
where
    F: FnOnce(fred::clients::SentinelClient) -> Fut,
    Fut: std::future::Future<Output = Result<Value, FredError>>,
{
    let server = crate::client::parse_host_port(addr, crate::client::DEFAULT_SENTINEL_PORT)
        .map_err(|_| Error::Address(addr.to_owned()))?;
    let mut builder = Builder::default_centralized();
    builder.set_sentinel_config(SentinelConfig {
        host: server.host.to_string(),
        port: server.port,
        username: None,
        password: access.password.clone(),
        tls: access.tls.clone(),
    });
    crate::node::one_attempt(&mut builder, timeout);
    let client = builder
        .build_sentinel_client()
        .map_err(|source| Error::Redis {
            addr: addr.to_owned(),
            source,
        })?;
    crate::node::once(client, timeout, question)
        .await
        .map_err(|ended| match ended {
            crate::node::Ended::Timeout => Error::Timeout(addr.to_owned()),
            crate::node::Ended::Redis(source) => Error::Redis {
                addr: addr.to_owned(),
                source,
            },
        })
}

/// Asks each sentinel in turn; the first that names a master wins. `Ok(None)` when those that answered
/// monitor no such master; the last error when none answered.
pub async fn current_master(
    sentinels: &[String],
    master_name: &str,
    access: &crate::node::Access,
    timeout: Duration,
) -> Result<Option<MasterAddr>> {
    let mut last = None;
    for addr in sentinels {
        match master_addr(addr, master_name, access, timeout).await {
            Ok(Some(master)) => return Ok(Some(master)),
            Ok(None) => last = None,
            Err(error) => last = Some(error),
        }
    }
    last.map_or(Ok(None), Err)
}

fn parse_reply(addr: &str, value: Value) -> Result<Option<MasterAddr>> {
    let reply = |detail: String| Error::Reply {
        addr: addr.to_owned(),
        detail,
    };
    if value.is_null() {
        return Ok(None);
    }
    let Value::Array(items) = value else {
        return Err(reply(format!("{value:?}")));
    };
    match items.as_slice() {
        [] => Ok(None),
        [host, port] => {
            let host = host
                .as_string()
                .ok_or_else(|| reply(format!("host {host:?}")))?;
            let port = port
                .as_string()
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| reply(format!("port {port:?}")))?;
            Ok(Some(MasterAddr { host, port }))
        }
        other => Err(reply(format!("{} items", other.len()))),
    }
}

/// `host:port` of a Redis URL (`redis://[user:pass@]host:port[/db]`); the port defaults to 6379.
pub fn url_host_port(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let host_port = rest.split(['/', '?']).next()?;
    if host_port.is_empty() {
        return None;
    }
    Some(if host_port.contains(':') && !host_port.ends_with(']') {
        host_port.to_owned()
    } else {
        format!("{host_port}:6379")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_host_port_drops_scheme_credentials_and_db() {
        assert_eq!(
            url_host_port("redis://:pw@10.0.0.1:6380/2").as_deref(),
            Some("10.0.0.1:6380")
        );
        assert_eq!(
            url_host_port("rediss://redis.example").as_deref(),
            Some("redis.example:6379")
        );
        assert_eq!(url_host_port("redis://").as_deref(), None);
    }

    #[test]
    fn replies_are_read_as_master_addresses() {
        let pair = Value::Array(vec!["10.0.0.5".into(), "6380".into()]);
        assert_eq!(
            parse_reply("s", pair).expect("pair"),
            Some(MasterAddr {
                host: "10.0.0.5".into(),
                port: 6380
            })
        );
        assert_eq!(parse_reply("s", Value::Null).expect("null"), None);
        assert_eq!(parse_reply("s", Value::Array(vec![])).expect("empty"), None);
        assert!(parse_reply("s", Value::Array(vec!["h".into(), "x".into()])).is_err());
    }

    #[test]
    fn ipv6_masters_print_with_brackets() {
        let addr = MasterAddr {
            host: "::1".into(),
            port: 1,
        };
        assert_eq!(addr.to_string(), "[::1]:1");
    }
}
