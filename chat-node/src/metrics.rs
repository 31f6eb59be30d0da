//! Prometheus metrics of a node, served at `/metrics` by `switchboard_runtime::metrics::route` (gauges
//! sampled from the node are refreshed at scrape time, see `server`).

use crate::hub::Hub;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label of error counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// Protocol error code.
    pub code: &'static str,
}

/// Label of frame counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    /// Client frame type.
    pub r#type: &'static str,
}

/// Every metric of a node.
pub struct Metrics {
    registry: Registry,
    /// Open connections.
    pub connections: Gauge,
    /// Sessions accepted since start.
    pub sessions: Counter,
    /// Client frames by type.
    pub frames_in: Family<TypeLabel, Counter>,
    /// Room messages stored by this node.
    pub messages: Counter,
    /// Error frames sent, by code.
    pub errors: Family<CodeLabel, Counter>,
    /// Rooms with local members.
    pub rooms: Gauge,
    /// Time from receiving a `send` to the store's answer (sequence, append, publish).
    pub publish_latency: Histogram,
    /// 1 while draining.
    pub draining: Gauge,
    /// 1 while the bus is up.
    pub bus_up: Gauge,
    /// Refused connections and frames, by reason, with their rate-limited log.
    pub refusals: crate::refusals::Refusals,
    /// 1 while the attachment store answers (0 when it does not, or attachments are off).
    pub attachment_store_up: Gauge,
    /// Attachment bytes stored through this node.
    pub upload_bytes: Counter,
    /// Attachments this node completed.
    pub attachments_ready: Counter,
    /// Attachments this node failed (wrong type, never completed, store failure).
    pub attachments_failed: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers every metric, including the hub's delivery counters.
    pub fn new(hub: &Hub) -> Self {
        let mut registry = Registry::with_prefix("switchboard");
        let connections = Gauge::default();
        let sessions = Counter::default();
        let frames_in = Family::<TypeLabel, Counter>::default();
        let messages = Counter::default();
        let errors = Family::<CodeLabel, Counter>::default();
        let rooms = Gauge::default();
        let publish_latency = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        let draining = Gauge::default();
        let bus_up = Gauge::default();
        registry.register(
            "connections",
            "Open WebSocket connections",
            connections.clone(),
        );
        registry.register("sessions", "Sessions accepted", sessions.clone());
        registry.register(
            "frames_in",
            "Client frames received, by type",
            frames_in.clone(),
        );
        registry.register("messages", "Room messages stored", messages.clone());
        registry.register(
            "errors",
            "Error frames sent to clients, by code",
            errors.clone(),
        );
        registry.register(
            "deliveries",
            "Frames handed to client queues",
            hub.stats.deliveries.clone(),
        );
        registry.register(
            "slow_consumers_dropped",
            "Connections closed because their outbound queue overflowed",
            hub.stats.slow_consumers.clone(),
        );
        registry.register(
            "bus_owed_topics",
            "Topics whose bus events wait for the store: a gap read again until the store shows it, or a catch-up pending",
            hub.stats.owed_topics.clone(),
        );
        registry.register(
            "bus_gaps_given_up",
            "Topics whose gap the store did not show within 2 minutes: their listeners on this node missed those messages",
            hub.stats.gaps_given_up.clone(),
        );
        registry.register(
            "rooms",
            "Rooms with at least one local member",
            rooms.clone(),
        );
        registry.register(
            "bus_publish_seconds",
            "Latency of storing and publishing one message",
            publish_latency.clone(),
        );
        registry.register("draining", "1 while the node drains", draining.clone());
        registry.register("bus_up", "1 while the bus is reachable", bus_up.clone());
        let refusals = crate::refusals::Refusals::default();
        registry.register(
            "refusals",
            "Refused connections and frames, by reason (auth, origin, limits, slow consumer, oversize)",
            refusals.counter.clone(),
        );
        let attachment_store_up = Gauge::default();
        let upload_bytes = Counter::default();
        let attachments_ready = Counter::default();
        let attachments_failed = Counter::default();
        registry.register(
            "attachment_store_up",
            "1 while the attachment store answers",
            attachment_store_up.clone(),
        );
        registry.register(
            "upload_bytes",
            "Attachment bytes stored through this node",
            upload_bytes.clone(),
        );
        registry.register(
            "attachments_ready",
            "Attachments completed by this node",
            attachments_ready.clone(),
        );
        registry.register(
            "attachments_failed",
            "Attachments failed by this node (wrong type, never completed, store failure)",
            attachments_failed.clone(),
        );
        Self {
            registry,
            attachment_store_up,
            upload_bytes,
            attachments_ready,
            attachments_failed,
            connections,
            sessions,
            frames_in,
            messages,
            errors,
            rooms,
            publish_latency,
            draining,
            bus_up,
            refusals,
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        switchboard_runtime::metrics::encode(&self.registry)
    }
}
