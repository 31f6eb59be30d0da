//! Changing the password of a running managed Redis without a restart and without refusing a client.
//!
//! Redis's `default` user can hold several passwords at once. A rotation from `old` to `new` is three
//! steps over every data node and sentinel, each applied to all of them before the next; the operator
//! drives them (`operator/src/reconcile/rotation.rs`) and rolls the clients between the second and the
//! third:
//!
//! ```text
//! accepted [old]       current old   steady
//! accepted [old, new]  current old   1. both work; peers still use old          (apply)
//! accepted [old, new]  current new   2. peers (masterauth, auth-pass, sentinel-pass) use new; clients roll
//! accepted [new]       current new   3. once no client uses old, it is refused   (apply)
//! ```
//!
//! [`apply`] sets both halves on one server: the passwords it accepts
//! (`ACL SETUSER default resetpass >…`) and the one it uses towards its peers (a data node's `masterauth`; a sentinel's `sentinel-pass`
//! and the master's `auth-pass`). It is idempotent, and reaches the server with whichever of the passwords
//! it takes, so a server restarted mid-rotation (which starts with the passwords of the step its pod was
//! given) is brought to the current step by applying it again. Connections already authenticated stay
//! open when a password is removed.

use std::time::Duration;

use fred::error::{Error as FredError, ErrorKind};
use fred::interfaces::ClientLike;
use fred::types::{ClusterHash, CustomCommand, Value};

/// A data node or a sentinel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server<'a> {
    /// A Redis data node.
    Data,
    /// A sentinel watching the master `master_name`.
    Sentinel {
        /// The monitored master's name.
        master_name: &'a str,
    },
}

/// One step of a rotation: what the servers accept, and what they use with each other.
#[derive(Clone, Copy, Debug)]
pub struct Passwords<'a> {
    /// The password servers use towards their peers (and clients use); one of `accepted`.
    pub current: &'a str,
    /// Every password the servers accept.
    pub accepted: &'a [String],
}

/// Errors of [`apply`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// None of the passwords let us in.
    #[error("{addr} accepts none of the passwords of the rotation")]
    NotAccepted {
        /// The server.
        addr: String,
    },
    /// Connecting or a command failed.
    #[error("setting the passwords of {addr} failed")]
    Redis {
        /// The server.
        addr: String,
        /// Why.
        #[source]
        source: FredError,
    },
    /// The server did not answer in time, or the address is not `host:port`.
    #[error("{addr} did not answer")]
    Unreachable {
        /// The server.
        addr: String,
    },
}

/// Makes the server at `addr` (`host:port`) accept exactly `passwords.accepted` and use
/// `passwords.current` with its peers, over TLS with `tls`, each exchange bounded by `timeout`.
pub async fn apply(
    addr: &str,
    server: Server<'_>,
    passwords: Passwords<'_>,
    tls: Option<&fred::types::config::TlsConfig>,
    timeout: Duration,
) -> Result<(), Error> {
    // The current password first: after step 2 every server should take it.
    let mut candidates = vec![passwords.current];
    candidates.extend(
        passwords
            .accepted
            .iter()
            .map(String::as_str)
            .filter(|p| *p != passwords.current),
    );
    for password in candidates {
        let access = crate::node::Access {
            password: Some(password.to_owned()),
            tls: tls.cloned(),
        };
        let tried = match server {
            Server::Data => {
                crate::node::ask(addr, &access, timeout, |client| set_data(client, passwords))
                    .await
                    .map_err(|e| match e {
                        crate::node::Error::Redis { source, .. } => Some(source),
                        _ => None,
                    })
            }
            Server::Sentinel { master_name } => {
                crate::sentinel::ask(addr, &access, timeout, |client| {
                    set_sentinel(client, master_name, passwords)
                })
                .await
                .map(drop)
                .map_err(|e| match e {
                    crate::sentinel::Error::Redis { source, .. } => Some(source),
                    _ => None,
                })
            }
        };
        match tried {
            Ok(()) => return Ok(()),
            Err(Some(source)) if refused(&source) => continue,
            Err(Some(source)) => {
                return Err(Error::Redis {
                    addr: addr.to_owned(),
                    source,
                });
            }
            Err(None) => {
                return Err(Error::Unreachable {
                    addr: addr.to_owned(),
                });
            }
        }
    }
    Err(Error::NotAccepted {
        addr: addr.to_owned(),
    })
}

/// Whether `error` is a refused password (so another one may work).
fn refused(error: &FredError) -> bool {
    let details = error.details();
    matches!(error.kind(), ErrorKind::Auth)
        || details.contains("WRONGPASS")
        || details.contains("NOAUTH")
}

/// `ACL SETUSER default on resetpass >p…` — the `default` user keeps its other rules.
fn acl_setuser(accepted: &[String]) -> Vec<Value> {
    let mut args = vec![
        Value::from("SETUSER"),
        Value::from("default"),
        Value::from("on"),
        Value::from("resetpass"),
    ];
    args.extend(accepted.iter().map(|p| Value::from(format!(">{p}"))));
    args
}

fn command(name: &'static str) -> CustomCommand {
    CustomCommand::new_static(name, ClusterHash::FirstKey, false)
}

async fn set_data<C: ClientLike>(client: C, passwords: Passwords<'_>) -> Result<(), FredError> {
    client
        .custom::<Value, _>(command("ACL"), acl_setuser(passwords.accepted))
        .await?;
    client
        .custom::<Value, _>(
            command("CONFIG"),
            vec![
                Value::from("SET"),
                Value::from("masterauth"),
                Value::from(passwords.current),
            ],
        )
        .await?;
    Ok(())
}

async fn set_sentinel<C: ClientLike>(
    client: C,
    master_name: &str,
    passwords: Passwords<'_>,
) -> Result<Value, FredError> {
    client
        .custom::<Value, _>(command("ACL"), acl_setuser(passwords.accepted))
        .await?;
    client
        .custom::<Value, _>(
            command("SENTINEL"),
            vec![
                Value::from("CONFIG"),
                Value::from("SET"),
                Value::from("sentinel-pass"),
                Value::from(passwords.current),
            ],
        )
        .await?;
    client
        .custom::<Value, _>(
            command("SENTINEL"),
            vec![
                Value::from("SET"),
                Value::from(master_name),
                Value::from("auth-pass"),
                Value::from(passwords.current),
            ],
        )
        .await
}
