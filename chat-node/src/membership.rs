//! Keeping this node's entry in the registry's load set: its advertised URL and capacity in the node
//! table, its connection count as the load-set score, and its heartbeat.
//!
//! The node beats in both membership modes, so a killed node stops being assigned once its heartbeat
//! expires (`--heartbeat-ttl`) whether or not anybody else is up. With membership `self` it adds
//! itself and leaves on drain. With membership `operator` the operator decides membership from pod
//! readiness while it holds the membership lease; the node then only updates its own score (never
//! re-adding itself) and, on drain, marks its heartbeat expired. While no operator holds the lease
//! (the operator is down or paused) a ready node adds itself, so new pods get clients and dead ones
//! drop out without the operator (`switchboard-loadset` docs say why this is safe).
//!
//! The node is not ready (`/readyz`) before its first heartbeat lands: ready means assignable, and the
//! operator never adds a pod that has not beaten.

use crate::node::Node;
use std::sync::Arc;
use std::time::Duration;
use switchboard_loadset::{Beat, LoadSet, Membership, NodeInfo, NodeStats};
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

/// Reports load until `stop` fires; then leaves the load set (self) or marks its heartbeat expired
/// (operator).
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
    let mut last_beat: Option<Beat> = None;
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
            Membership::SelfManaged => loadset
                .heartbeat(&info.id, connections, heartbeat_ttl)
                .await
                .map(|()| Beat::Member),
            Membership::Operator => {
                loadset
                    .operator_heartbeat(&info.id, connections, heartbeat_ttl)
                    .await
            }
        };
        match result {
            Ok(beat) => {
                node.mark_reported();
                if last_beat != Some(beat) {
                    log_membership(beat);
                    last_beat = Some(beat);
                }
            }
            Err(e) => tracing::warn!(error = %chain(&e), "load report failed"),
        }
    }
    let left = match membership {
        Membership::SelfManaged => loadset.deregister(&info.id).await,
        Membership::Operator => loadset.leave(&info.id).await,
    };
    if let Err(e) = left {
        tracing::warn!(error = %chain(&e), "could not leave the load set; it expires with the heartbeat");
    }
}

/// Says when membership changes hands (logged once per change, not per beat).
fn log_membership(beat: Beat) {
    match beat {
        Beat::Member => tracing::info!("in the load set"),
        Beat::Waiting => {
            tracing::info!("waiting for the operator to add this node to the load set")
        }
        Beat::Added => tracing::warn!(
            "no operator holds the load-set membership: this node added itself to the load set"
        ),
    }
}
