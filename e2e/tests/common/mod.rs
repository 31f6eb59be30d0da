//! Scenarios shared by the cluster (Redis, several nodes) and standalone (one node, no Redis) suites.
//!
//! Every scenario takes a running [`Topology`] and the indices of two nodes `a` and `b`; the cluster
//! suite passes two different nodes, the standalone suite passes `0, 0`. Names are unique per test so
//! scenarios never see each other's rooms or users. Waits are bounded; nothing sleeps to synchronise.
//!
//! ```text
//!   cluster.rs ──shared_scenarios!(two nodes, 0, 1)──┐
//!                                                    ├──▶ chat, dm, presence, history (one test each)
//!   standalone.rs ─shared_scenarios!(one node, 0, 0)─┘
//!   limits.rs, cluster.rs, standalone.rs ──▶ connect, drain, limits (called by their own tests)
//! ```
//!
//! One module per group of scenarios; this one holds the fixtures they share (topologies, names,
//! connecting) and re-exports every scenario, so a suite calls `common::history_paging(...)`.
// Each test binary uses a subset of the scenarios, hence of these items and re-exports.
#![allow(dead_code, unused_imports, unused_macros)]

mod chat;
mod connect;
mod dm;
mod drain;
mod history;
mod limits;
mod presence;

use std::time::Duration;

use e2e::client::ChatClient;
use e2e::topology::{Topology, TopologyConfig};
use switchboard_runtime::report;

pub use chat::{
    concurrent_senders_share_one_order, resend_with_same_client_id_is_not_duplicated,
    room_delivery_in_seq_order,
};
pub use connect::{full_node_refuses_with_1013, hello_frame_identifies};
pub use dm::{dm_reaches_every_connection, offline_dm_delivered_on_next_connect};
pub use drain::{drain_tells_clients_to_reconnect, paced_drain_serves_clients_not_told_yet};
pub use history::{history_paging, rejoin_with_since_recovers};
pub use limits::{
    a_client_that_never_reads_is_cut_loose, bad_frames_get_error_codes, flood_is_rate_limited,
    idle_connection_closes_4003, invalid_names_are_refused, long_body_is_too_large, metric,
    missing_hello_closes_4002, oversize_frame_closes_1009, poisoned_room_stays_usable,
    slow_consumer_is_dropped_others_carry_on, websocket_violations_close_1002_and_1007,
};
pub use presence::{
    last_seen_reports_online_and_offline, presence_join_and_leave,
    read_markers_stored_and_broadcast, typing_is_relayed_not_stored,
};

/// Deadline for one expected frame.
pub const T: Duration = Duration::from_secs(10);

/// A unique name with a readable prefix (at most 20 characters of prefix keep it a valid user name).
pub fn name(prefix: &str) -> String {
    format!("{prefix}-{:08x}", fastrand::u32(..))
}

/// A two-node topology with Redis and one registry.
pub async fn cluster(node_args: &[&str]) -> Topology {
    Topology::start(TopologyConfig::scaled(2, 1).with_node_args(node_args.iter().copied()))
        .await
        .unwrap_or_else(|e| panic!("start a 2-node topology with Redis: {}", report::chain(&e)))
}

/// One node without Redis.
pub async fn standalone(node_args: &[&str]) -> Topology {
    Topology::start(TopologyConfig::standalone().with_node_args(node_args.iter().copied()))
        .await
        .unwrap_or_else(|e| panic!("start a standalone chat-node: {}", report::chain(&e)))
}

/// Connect `user` to node `i`.
pub async fn connect(t: &Topology, i: usize, user: &str) -> ChatClient {
    t.connect(i, user).await.unwrap_or_else(|e| {
        panic!(
            "connect {user} to node {i}: {}\n{}",
            report::chain(&e),
            t.node_log_tail(i, 20)
        )
    })
}

/// One `#[tokio::test]` per scenario every topology must pass, each named after its scenario.
///
/// `start` is an expression giving a future of a fresh [`Topology`] for every test; `nodes: a, b` are
/// the two node indices the scenarios spread their clients over (the same index twice on one node).
/// A suite invokes it once, at its root, and keeps only its own extra tests:
///
/// ```text
/// common::shared_scenarios!(start: cluster(&[]), nodes: 0, 1);
/// ```
macro_rules! shared_scenarios {
    (start: $start:expr, nodes: $a:expr, $b:expr $(,)?) => {
        $crate::common::shared_scenarios!(@tests ($start, $a, $b)
            room_delivery_in_seq_order,
            concurrent_senders_share_one_order,
            resend_with_same_client_id_is_not_duplicated,
            dm_reaches_every_connection,
            offline_dm_delivered_on_next_connect,
            presence_join_and_leave,
            typing_is_relayed_not_stored,
            read_markers_stored_and_broadcast,
            last_seen_reports_online_and_offline,
            history_paging,
            rejoin_with_since_recovers,
        );
    };
    (@tests ($start:expr, $a:expr, $b:expr) $($scenario:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $scenario() {
            let t = $start.await;
            $crate::common::$scenario(&t, $a, $b).await;
        }
    )*};
}
pub(crate) use shared_scenarios;
