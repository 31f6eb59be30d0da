//! How every Switchboard component reaches Redis, and where its keys live.
//!
//! ```text
//! RedisArgs (flags) ──client::connect()─────▶ Client            commands, scripts
//!                   └─client::subscriber()──▶ SubscriberClient  pub/sub, re-subscribes itself
//! sentinels ──sentinel::current_master()────▶ which master they name now (status, diagnosis, tests)
//!           ──sentinel::failover()──────────▶ hand the master role to a replica (managed-Redis updates)
//! data node ──node::replication()───────────▶ role, in sync? (managed-Redis updates)
//! cluster id ──keys::Keys::new()────────────▶ sb:{id}:… every key of one chat system
//! ```
//!
//! - [`client`]: the flag group, the connection and Sentinel policy (reconnect forever, command
//!   timeouts, strict start-up with errors that name the cause, passwords never printed);
//! - [`sentinel`]: the one sentinel master query used everywhere, and the failover command;
//! - [`node`]: a data node's replication state;
//! - [`keys`]: the per-cluster key prefix.
//!
//! Schemas built on these keys live with their owners: the load set in `switchboard-loadset`, room
//! history and channels in `chat-node`.

#![warn(missing_docs)]

pub mod client;
pub mod keys;
pub mod node;
pub mod passwords;
pub mod sentinel;

pub use client::{
    COMMAND_TIMEOUT, CONNECT_TIMEOUT, DEFAULT_MASTER_NAME, DEFAULT_SENTINEL_PORT, Error, RedisArgs,
    Result, STARTUP_TIMEOUT, SUBSCRIBER_BROADCAST_CAPACITY, SUBSCRIBER_KEEPALIVE,
    UNRESPONSIVE_TIMEOUT, builder, connect, redact_url, subscriber,
};
pub use keys::{DEFAULT_CLUSTER_ID, Keys};
