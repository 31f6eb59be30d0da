//! The state one node shares between its sessions: identity, authentication, allowed origins, limits, the hub, the backend, metrics,
//! admission (capacity and drain), readiness, the paced drain and the set of bus subscriptions.

use crate::auth::Authenticator;
use crate::backend::{Backend, DmState, Result};
use crate::drain::{Drain, Pacing};
use crate::hub::{Hub, Topic};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::protocol::presence;
use registry::origins::AllowedOrigins;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use switchboard_runtime::report::chain;
use tokio_util::sync::CancellationToken;

/// Settings of a node that do not come from [`Limits`].
#[derive(Clone, Debug)]
pub struct NodeSettings {
    /// Node id (load-set member).
    pub id: String,
    /// Advertised WebSocket URL.
    pub url: String,
    /// Connection capacity.
    pub capacity: u64,
    /// Messages kept per room.
    pub history_cap: usize,
    /// Per-connection limits.
    pub limits: Limits,
    /// How connections prove who they are.
    pub auth: Arc<Authenticator>,
    /// Web origins allowed to open `/ws` besides the serving origin.
    pub origins: Arc<AllowedOrigins>,
}

/// Shared state of one node.
pub struct Node {
    /// Settings.
    pub settings: NodeSettings,
    /// Local fan-out.
    pub hub: Arc<Hub>,
    /// Store and bus.
    pub backend: Arc<dyn Backend>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the node starts draining.
    pub draining: CancellationToken,
    /// Who is told to reconnect when, once the drain has begun.
    pub drain: Drain,
    /// Attachments, when the node has a store for them (set once at start-up).
    pub attachments: std::sync::OnceLock<Arc<crate::attach::Attachments>>,
    /// Whether the registries know this node (its first heartbeat landed, or it has no load set).
    reported: AtomicBool,
    connections: AtomicU64,
    next_session: AtomicU64,
    /// Bus subscriptions by topic: each behind its own async lock (held across the SUBSCRIBE or
    /// UNSUBSCRIBE round trip, so a subscribe and a sweep of one topic never interleave); the map itself
    /// is locked only to look a topic up, never across a round trip.
    subscriptions: std::sync::Mutex<HashMap<Topic, Arc<tokio::sync::Mutex<bool>>>>,
    /// Turns for session starts to talk to the store ([`crate::config::SESSION_STARTS_IN_FLIGHT`]).
    starts: tokio::sync::Semaphore,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.settings.id)
            .finish_non_exhaustive()
    }
}

/// A connection slot; releases itself on drop.
#[derive(Debug)]
pub struct Admission {
    node: Arc<Node>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.node.connections.fetch_sub(1, Ordering::AcqRel);
        self.node.metrics.connections.dec();
    }
}

impl Node {
    /// A node over the given hub and backend, with the default drain pacing, that counts as reported
    /// (standalone).
    pub fn new(
        settings: NodeSettings,
        hub: Arc<Hub>,
        backend: Arc<dyn Backend>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Self::with_drain(settings, hub, backend, metrics, Pacing::default(), true)
    }

    /// A node that paces its drain with `pacing`; `reported` false keeps it not ready until
    /// [`Node::mark_reported`] (a node with a load set: ready means assignable).
    pub fn with_drain(
        settings: NodeSettings,
        hub: Arc<Hub>,
        backend: Arc<dyn Backend>,
        metrics: Arc<Metrics>,
        pacing: Pacing,
        reported: bool,
    ) -> Arc<Self> {
        Arc::new(Self {
            settings,
            hub,
            backend,
            metrics,
            draining: CancellationToken::new(),
            drain: Drain::new(pacing),
            attachments: std::sync::OnceLock::new(),
            reported: AtomicBool::new(reported),
            connections: AtomicU64::new(0),
            next_session: AtomicU64::new(1),
            subscriptions: std::sync::Mutex::new(HashMap::new()),
            starts: tokio::sync::Semaphore::new(crate::config::SESSION_STARTS_IN_FLIGHT),
        })
    }

    /// Current connection count.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Acquire)
    }

    /// Starts telling this node's clients to reconnect elsewhere ([`Drain::begin`], every one closed
    /// by `deadline`) and wakes every session to take its turn. Admission must be closed already
    /// (`draining`).
    pub fn begin_drain(&self, deadline: tokio::time::Instant) {
        self.drain.begin(self.connections(), deadline);
        self.hub.wake_all();
    }

    /// True while the node accepts sessions, its bus works and the registries know it.
    pub fn ready(&self) -> bool {
        !self.draining.is_cancelled() && self.backend.healthy() && self.reported()
    }

    /// Whether the node's first heartbeat has landed (always true without a load set).
    pub fn reported(&self) -> bool {
        self.reported.load(Ordering::Acquire)
    }

    /// Records that a heartbeat landed: from now on the node may turn ready.
    pub fn mark_reported(&self) {
        self.reported.store(true, Ordering::Release);
    }

    /// Takes a connection slot unless the node is full or draining.
    pub fn admit(self: &Arc<Self>) -> Option<Admission> {
        if self.draining.is_cancelled() {
            return None;
        }
        let cap = self.settings.capacity;
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                (c < cap).then_some(c + 1)
            })
            .ok()?;
        self.metrics.connections.inc();
        self.metrics.sessions.inc();
        Some(Admission { node: self.clone() })
    }

    /// Waits for a turn to start a session against the store; the turn ends when the returned
    /// permit is dropped. `None` never happens in practice (the semaphore is never closed); a start
    /// without a turn simply goes ahead.
    pub async fn start_turn(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.starts.acquire().await.ok()
    }

    /// A fresh session id.
    pub fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Makes sure the bus delivers `topic` to this node. Call after attaching a listener, so a
    /// concurrent sweep cannot drop the subscription the listener relies on. Returns the inbox state
    /// the backend read when this call subscribed a user's topic ([`Backend::subscribe`]).
    pub async fn ensure_subscribed(&self, topic: &Topic) -> Result<Option<DmState>> {
        let entry = self
            .subscription_map()
            .entry(topic.clone())
            .or_default()
            .clone();
        let mut subscribed = entry.lock().await;
        if *subscribed {
            return Ok(None);
        }
        let state = self.backend.subscribe(topic.clone()).await?;
        *subscribed = true;
        Ok(state)
    }

    fn subscription_map(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Topic, Arc<tokio::sync::Mutex<bool>>>> {
        self.subscriptions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells `rooms` (the rooms with sessions here) of members whose presence expired because their
    /// node died without saying goodbye: one `presence` `leave` per such user, sent by whichever node
    /// ended that presence ([`Backend::expire_presence`]).
    pub async fn announce_expired_presence(&self, rooms: Vec<String>) {
        let gone = match self.backend.expire_presence(rooms).await {
            Ok(gone) => gone,
            Err(e) => {
                tracing::warn!(error = %chain(&e), "presence expiry check failed");
                return;
            }
        };
        for (room, user) in gone {
            let frame = presence(&room, &user, "leave");
            if let Err(e) = self.backend.publish(Topic::room(&room), frame).await {
                tracing::warn!(error = %chain(&e), "could not announce an expired presence");
            }
        }
    }

    /// Drops bus subscriptions of topics no local session listens to any more.
    pub async fn sweep_subscriptions(&self) {
        let idle: Vec<(Topic, Arc<tokio::sync::Mutex<bool>>)> = self
            .subscription_map()
            .iter()
            .filter(|(t, _)| !self.hub.has_listeners(t))
            .map(|(t, e)| (t.clone(), e.clone()))
            .collect();
        for (t, entry) in idle {
            let mut subscribed = entry.lock().await;
            // A listener may have come (and subscribed) since the list was made.
            if self.hub.has_listeners(&t) {
                continue;
            }
            if *subscribed {
                if let Err(e) = self.backend.unsubscribe(t.clone()).await {
                    tracing::warn!(error = %chain(&e), "unsubscribe failed; will retry");
                    continue;
                }
                *subscribed = false;
            }
            let mut map = self.subscription_map();
            // Only this entry, and only while nobody waits on it.
            if map.get(&t).is_some_and(|e| Arc::ptr_eq(e, &entry)) && Arc::strong_count(&entry) == 2
            {
                map.remove(&t);
            }
        }
    }
}
