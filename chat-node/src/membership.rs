//! Keeping this node's entry in the registry's load set: its advertised URL and capacity in the node
//! table, and its connection count as the load-set score.
//!
//! With membership `self` the node adds itself and heartbeats, so a killed node stops being assigned
//! once its heartbeat expires. With membership `operator` it only updates its own score (`ZADD XX`) and
//! never re-adds itself: the operator alone decides membership from pod readiness.

use crate::node::Node;
use std::sync::Arc;
use std::time::Duration;
use switchboard_loadset::{LoadSet, Membership, NodeInfo, NodeStats};
use switchboard_runtime::report::chain;
use tokio_util::sync::CancellationToken;

/// How often the score is reported. The registry also bumps a node's score on every assignment, so
/// this only has to correct towards the real count.
const REPORT_EVERY: Duration = Duration::from_millis(500);
/// How often the node-table entry is rewritten: it carries the activity figures the dashboard turns
/// into rates, and rewriting it repairs a flushed or failed-over Redis.
const INFO_EVERY: Duration = Duration::from_secs(2);

/// This node's activity figures.
pub fn stats(node: &Node) -> NodeStats {
    NodeStats {
        rooms: node.hub.topic_counts().0 as u64,
        messages: node.metrics.messages.get(),
        deliveries: node.hub.stats.deliveries.get(),
    }
}

/// Reports load until `stop` fires; then, with membership `self`, leaves the load set.
pub async fn run(
    node: Arc<Node>,
    loadset: LoadSet,
    membership: Membership,
    heartbeat_ttl: Duration,
    stop: CancellationToken,
) {
    let mut info = NodeInfo {
        id: node.settings.id.clone(),
        url: node.settings.url.clone(),
        capacity: node.settings.capacity,
        stats: NodeStats::default(),
    };
    let mut tick = tokio::time::interval(REPORT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_info: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        if !node.backend.healthy() {
            continue;
        }
        if last_info.is_none_or(|t| t.elapsed() >= INFO_EVERY) {
            info.stats = stats(&node);
            match loadset.publish_node_info(&info).await {
                Ok(()) => last_info = Some(tokio::time::Instant::now()),
                Err(e) => tracing::warn!(error = %chain(&e), "could not publish node info"),
            }
        }
        let connections = node.connections();
        let result = match membership {
            Membership::SelfManaged => {
                loadset
                    .heartbeat(&info.id, connections, heartbeat_ttl)
                    .await
            }
            Membership::Operator => loadset
                .update_score(&info.id, connections)
                .await
                .map(|_| ()),
        };
        if let Err(e) = result {
            tracing::warn!(error = %chain(&e), "load report failed");
        }
    }
    if membership == Membership::SelfManaged
        && let Err(e) = loadset.deregister(&info.id).await
    {
        tracing::warn!(error = %chain(&e), "could not leave the load set; it expires with the heartbeat");
    }
}
