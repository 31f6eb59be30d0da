//! Local fan-out: which sessions on this node listen to which topic, and handing them frames.
//!
//! ```text
//!   bus (one ordered stream per node) ──dispatch(topic, seq, bytes)──▶ Hub ──deliver──▶ session queues
//!                                                                      │
//!           join with recovery: attach(pending) … history … activate ──┘ (buffer merged, no gap/dup)
//! ```
//!
//! The table is split into shards by topic, each with its own lock, held only to update the maps or
//! to queue into sessions' outboxes (never across an await): fan-out to one room does not wait for joins and
//! leaves of others.
//!
//! A topic is a room or a user (direct messages). Every event arrives in bus order and is handed to
//! each listening session's bounded queue without waiting; a full queue marks that session a slow
//! consumer, which is closed with 4008 while everyone else carries on. Queues are bounded in frames
//! and in bytes ([`ByteBudget`]). A session that is recovering history of a topic is *pending*: events
//! for it are buffered (bounded by the same byte budget) until [`Hub::activate`] or
//! [`Hub::drain_pending`] merges them behind the history it was sent, dropping what it already has.
//!
//! One event is not a frame for clients: an [`access_revoked`] notice (an admin took a user off a
//! private room's ACL, [`crate::admin`]) is handed to that user's sessions as a revocation
//! ([`SessionHandle::revoked`]) and to nobody else; each session then decides whether it still holds
//! the room by its token.

use crate::limits::ByteBudget;
use crate::outbox::Outbox;
use crate::protocol::{PresenceMode, ServerFrame, close, encode, now_ms};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tungstenite::Utf8Bytes;

/// What a bus event is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// A room's messages and events.
    Room(Arc<str>),
    /// A user's direct messages.
    User(Arc<str>),
}

impl Topic {
    /// The room topic.
    pub fn room(name: &str) -> Self {
        Topic::Room(Arc::from(name))
    }
    /// The user topic.
    pub fn user(name: &str) -> Self {
        Topic::User(Arc::from(name))
    }
}

/// Identifies a session on this node.
pub type SessionId = u64;

/// What the writing side of a connection sends.
#[derive(Debug)]
pub enum Out {
    /// A serialized frame of the fan-out (live events).
    Frame(Utf8Bytes),
    /// A serialized reply to the client's own request (`joined`, history, recovery).
    Reply(Utf8Bytes),
    /// Close the connection with this code and reason after sending what is queued.
    Close(u16, &'static str),
    /// Answer a client's ping (at most one is queued at a time: [`SessionHandle::pong`]).
    Pong(bytes::Bytes),
    /// The keepalive ping (at most one is queued at a time: [`SessionHandle::queue_ping`]).
    Ping,
}

/// One lane of a connection's outbound queue: the frames and bytes queued in it and not yet handed to
/// the socket.
#[derive(Debug)]
struct Lane {
    frames: ByteBudget,
    bytes: ByteBudget,
}

impl Lane {
    fn new(frames: usize, bytes: usize) -> Self {
        Self {
            frames: ByteBudget::new(frames),
            bytes: ByteBudget::new(bytes),
        }
    }

    /// Reserves room for one frame of `n` bytes if it fits now: `Some(true)` when this frame took the
    /// lane to half full (in frames or in bytes) — once per crossing, decided by the reservation itself.
    fn try_reserve(&self, n: usize) -> Option<bool> {
        let frames_before = self.frames.try_take(1)?;
        let Some(bytes_before) = self.bytes.try_take(n) else {
            self.frames.release(1);
            return None;
        };
        let crosses = |before: usize, added: usize, max: usize| {
            before < half(max) && before + added >= half(max)
        };
        Some(
            crosses(frames_before, 1, self.frames.max())
                || crosses(bytes_before, n, self.bytes.max()),
        )
    }

    /// Waits for room for one frame of `n` bytes; the reservation is given back if the wait is
    /// abandoned.
    async fn reserve(&self, n: usize) {
        self.bytes.reserve(n).await;
        let undo = scopeguard(|| self.bytes.release(n));
        self.frames.reserve(1).await;
        std::mem::forget(undo);
    }

    fn release(&self, n: usize) {
        self.frames.release(1);
        self.bytes.release(n);
    }

    /// Half its frames or half its bytes are queued, or more.
    fn half_full(&self) -> bool {
        self.frames.queued() >= half(self.frames.max())
            || self.bytes.queued() >= half(self.bytes.max())
    }
}

/// Half of a lane's bound, rounded up: the mark past which a writer holding frames for its write delay
/// writes at once.
fn half(max: usize) -> usize {
    max.div_ceil(2)
}

/// Runs `f` when dropped (an abandoned wait gives back what it reserved), unless forgotten.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// The handle other parts of the node use to reach one connection.
///
/// The outbound queue has two lanes of equal size, so replies never take the room live events need:
/// the **live** lane (fan-out: a full lane is a slow consumer, closed with 4008) and the **reply** lane
/// (`joined`, history pages, recovery: a full lane makes the reply wait, up to
/// [`crate::limits::Limits::reply_wait`]). Both lanes feed one [`Outbox`], in the order things were
/// queued; each lane is bounded in frames and in bytes.
#[derive(Debug)]
pub struct SessionHandle {
    /// Session id, unique on this node.
    pub id: SessionId,
    /// The identified user.
    pub user: Arc<str>,
    /// The queue, and the connection's one wake-up: kicks and revocations wake it there too.
    outbox: Outbox,
    /// 0 while the session runs; then the kick's close code, or [`STOPPED`].
    kill_code: AtomicU16,
    /// Highest direct-message sequence handed to this session.
    dm_delivered: AtomicU64,
    /// Fan-out frames queued and not yet handed to the socket.
    live: Lane,
    /// Replies queued and not yet handed to the socket.
    replies: Lane,
    /// A pong is queued and not yet written: further pings meanwhile get no answer of their own.
    pong_queued: std::sync::atomic::AtomicBool,
    /// A keepalive ping is queued and not yet written.
    ping_queued: std::sync::atomic::AtomicBool,
    /// Rooms whose ACL no longer lists this user, not yet handled by the session.
    revoked: Mutex<Vec<Arc<str>>>,
}

/// `kill_code` of a session stopped without a close code of its own ([`SessionHandle::stop`]).
const STOPPED: u16 = u16::MAX;

impl SessionHandle {
    /// A handle whose lanes hold at most `lane_frames` frames each (unbounded in bytes until
    /// [`SessionHandle::with_outbound_bytes`]).
    pub fn new(id: SessionId, user: Arc<str>, lane_frames: usize) -> Self {
        let lane_frames = lane_frames.max(1);
        Self {
            id,
            user,
            outbox: Outbox::new(),
            kill_code: AtomicU16::new(0),
            pong_queued: Default::default(),
            ping_queued: Default::default(),
            dm_delivered: AtomicU64::new(0),
            live: Lane::new(lane_frames, usize::MAX / 2),
            replies: Lane::new(lane_frames, usize::MAX / 2),
            revoked: Mutex::new(Vec::new()),
        }
    }

    /// The same handle with each lane of its outbound queue bounded to `max` bytes.
    pub fn with_outbound_bytes(mut self, max: usize) -> Self {
        let frames = self.live.frames.max();
        self.live = Lane::new(frames, max);
        self.replies = Lane::new(frames, max);
        self
    }

    /// Queues a frame without waiting. False if the session is gone or was just found too slow (its
    /// queue is full in frames or in bytes).
    pub fn deliver(&self, bytes: &Utf8Bytes) -> bool {
        let Some(wake) = self.queue_live(bytes) else {
            return false;
        };
        if wake {
            self.outbox.wake();
        }
        true
    }

    /// [`SessionHandle::deliver`] that leaves waking the writer to `wakes`.
    fn deliver_quiet(this: &Arc<Self>, bytes: &Utf8Bytes, wakes: &mut Wakes) -> bool {
        let Some(wake) = this.queue_live(bytes) else {
            return false;
        };
        if wake {
            wakes.0.push(this.clone());
        }
        true
    }

    /// Queues a live frame without waking the writer: `None` if the session is gone or was just found
    /// too slow, else whether the writer must be woken — the first frame of an empty queue, or the one
    /// that fills half the lane (which a writer holding frames for its write delay sends at once).
    fn queue_live(&self, bytes: &Utf8Bytes) -> Option<bool> {
        let crossed_half = self.reserve_live(bytes.len())?;
        let was_empty = self.outbox.push_quiet(Out::Frame(bytes.clone()));
        Some(was_empty || crossed_half)
    }

    /// True when the live lane holds half its frames or bytes or more: the writer sends it without
    /// waiting for its write delay ([`crate::limits::Limits::write_delay`]).
    pub fn live_half_full(&self) -> bool {
        self.live.half_full()
    }

    /// Room in the live lane for a frame of `n` bytes, and whether it took the lane to half full; a
    /// full lane kicks the session (4008).
    fn reserve_live(&self, n: usize) -> Option<bool> {
        if self.is_kicked() {
            return None;
        }
        let crossed_half = self.live.try_reserve(n);
        if crossed_half.is_none() {
            self.kick(close::SLOW_CONSUMER);
        }
        crossed_half
    }

    /// Queues a reply to the client's own request in the reply lane, waiting up to `within` for room
    /// there: a client that reads slowly slows its own requests down (never its live events), and one
    /// that does not read at all is closed as a slow consumer. False if the session is gone or was
    /// found too slow.
    pub async fn deliver_wait(&self, bytes: &Utf8Bytes, within: Duration) -> bool {
        let n = bytes.len();
        let queued = async {
            self.replies.reserve(n).await;
            self.outbox.push(Out::Reply(bytes.clone()));
            true
        };
        tokio::select! {
            biased;
            () = self.killed() => false,
            done = tokio::time::timeout(within, queued) => done.unwrap_or_else(|_| {
                self.kick(close::SLOW_CONSUMER);
                false
            }),
        }
    }

    /// Queues the close frame behind everything queued so far (outside the lanes' bounds: it is the
    /// last thing queued).
    pub fn close_after_queued(&self, code: u16, reason: &'static str) {
        self.outbox.push(Out::Close(code, reason));
    }

    /// Queues the answer to a client's ping, unless one is already waiting (a flood of pings costs one
    /// queued pong; the RFC lets an endpoint answer only the latest).
    pub fn pong(&self, payload: bytes::Bytes) {
        self.push_once(&self.pong_queued, || Out::Pong(payload));
    }

    /// The writer took the queued pong.
    pub fn pong_sent(&self) {
        self.pong_queued.store(false, Ordering::Release);
    }

    /// Queues the keepalive ping behind what is queued, unless one is still waiting there (a client
    /// that stopped reading holds one).
    pub fn queue_ping(&self) {
        self.push_once(&self.ping_queued, || Out::Ping);
    }

    /// Queues a control frame unless `queued` says one of its kind is still waiting (the writer
    /// clears it when it takes the frame).
    fn push_once(&self, queued: &std::sync::atomic::AtomicBool, out: impl FnOnce() -> Out) {
        if !queued.swap(true, Ordering::AcqRel) {
            self.outbox.push(out());
        }
    }

    /// The writer took the queued ping.
    pub fn ping_sent(&self) {
        self.ping_queued.store(false, Ordering::Release);
    }

    /// The next thing queued, waiting for one (what tests read a session's queue with).
    pub async fn next_out(&self) -> Out {
        self.outbox.next().await
    }

    /// True when something is queued for the writer.
    pub fn has_queued(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Waits until `cond` holds, checking it again whenever anything happens to this session: a frame
    /// queued, a kick, a revocation, [`SessionHandle::wake`]. The connection's task waits for all of
    /// them with this one wait.
    pub async fn until(&self, cond: impl FnMut() -> bool) {
        self.outbox.until(cond).await
    }

    /// Wakes whoever waits in [`SessionHandle::until`] to check again (the drain beginning).
    pub fn wake(&self) {
        self.outbox.wake();
    }

    /// Resolves once the session was kicked or stopped.
    pub async fn killed(&self) {
        self.until(|| self.is_kicked()).await
    }

    /// The next thing for the writer to send, if one is queued.
    pub fn try_next_out(&self) -> Option<Out> {
        self.outbox.try_next()
    }

    /// The writer handed a frame of `n` bytes to the socket ([`Out::Reply`] if `reply`, else
    /// [`Out::Frame`]): it leaves its lane.
    pub fn written(&self, n: usize, reply: bool) {
        if reply {
            self.replies.release(n);
        } else {
            self.live.release(n);
        }
    }

    /// Bytes this session may have queued in one lane.
    pub fn outbound_bytes(&self) -> usize {
        self.live.bytes.max()
    }

    /// Closes the session at once with `code`, bypassing its (possibly full) queue. The first kick's
    /// code is the one sent.
    pub fn kick(&self, code: u16) {
        let _ = self
            .kill_code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
        self.outbox.wake();
    }

    /// Stops the session at once without a close code of its own (a normal close, if any is sent):
    /// the writing gave up or the socket failed.
    pub fn stop(&self) {
        self.kick(STOPPED);
    }

    /// The close code given to [`SessionHandle::kick`], if any.
    pub fn kicked_with(&self) -> Option<u16> {
        match self.kill_code.load(Ordering::Acquire) {
            0 | STOPPED => None,
            c => Some(c),
        }
    }

    /// True once the session was kicked or stopped.
    pub fn is_kicked(&self) -> bool {
        self.kill_code.load(Ordering::Acquire) != 0
    }

    /// Notes that direct messages up to `seq` reached this session's queue.
    pub fn note_dm(&self, seq: u64) {
        self.dm_delivered.fetch_max(seq, Ordering::AcqRel);
    }

    /// Highest direct-message sequence queued to this session.
    pub fn dm_delivered(&self) -> u64 {
        self.dm_delivered.load(Ordering::Acquire)
    }

    /// Tells the session that the ACL of `room` no longer lists its user.
    pub fn revoke(&self, room: Arc<str>) {
        let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        // A session is in at most `max_rooms` rooms; more pending notices than that are repeats.
        if revoked.len() < 1024 && !revoked.contains(&room) {
            revoked.push(room);
        }
        drop(revoked);
        self.outbox.wake();
    }

    /// True while a revocation waits to be taken ([`SessionHandle::take_revoked`]).
    pub fn has_revoked(&self) -> bool {
        !self
            .revoked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// The rooms revoked since the last call.
    pub fn take_revoked(&self) -> Vec<Arc<str>> {
        std::mem::take(&mut *self.revoked.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Writers owed a wake for frames queued by the fan-out. The bus receiver fills one over a batch of
/// events and wakes them all at the end ([`Hub::dispatch_to`]), so that a writer finds everything the
/// batch queued for its connection and writes it at once; woken after every event, it would race the
/// fan-out and write a frame at a time. Dropping it wakes whatever is left.
#[derive(Default)]
pub struct Wakes(Vec<Arc<SessionHandle>>);

impl Wakes {
    /// Wakes every writer owed a wake.
    pub fn wake(&mut self) {
        for h in self.0.drain(..) {
            h.outbox.wake();
        }
    }
}

impl Drop for Wakes {
    fn drop(&mut self) {
        self.wake();
    }
}

/// Start of the bus event that revokes a user's ACL entry of a room: `{"type":"access_revoked",
/// "room":R,"user":U}`. No client frame starts so (clients never publish raw frames).
const ACCESS_REVOKED_PREFIX: &str = r#"{"type":"access_revoked","#;

/// The bus event revoking `user`'s ACL entry of `room` ([`Hub::dispatch`] routes it).
pub fn access_revoked(room: &str, user: &str) -> Utf8Bytes {
    // Written by hand: `json!` would sort the keys and lose the `type`-first prefix.
    let quote = |v: &str| serde_json::Value::from(v).to_string();
    Utf8Bytes::from(format!(
        r#"{ACCESS_REVOKED_PREFIX}"room":{},"user":{}}}"#,
        quote(room),
        quote(user)
    ))
}

/// The user an `access_revoked` event names, if `bytes` is one.
fn revoked_user(bytes: &Utf8Bytes) -> Option<String> {
    if !bytes.as_str().starts_with(ACCESS_REVOKED_PREFIX) {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(bytes.as_str()).ok()?;
    v.get("user")?.as_str().map(str::to_owned)
}

struct Listener {
    handle: Arc<SessionHandle>,
    /// How this session hears of joins and leaves.
    presence: PresenceMode,
    /// `Some` while the session recovers history: events wait here.
    pending: Option<Vec<(u64, Utf8Bytes)>>,
    /// Bytes in `pending`, at most the session's outbound budget: past it, the sequenced events are
    /// dropped from `pending` and `refill` is set.
    pending_bytes: usize,
    /// Sequenced events were dropped from `pending`: the session reads them from the store again
    /// ([`Drained::Refill`]) before it takes the buffer.
    refill: bool,
    /// Highest sequence handed to this session on this topic. Sequenced events at or below it are
    /// dropped, so whatever the backend does (a republished duplicate, a history read that ran ahead of
    /// the live stream), each session sees every sequence at most once and in increasing order.
    high: u64,
}

impl Listener {
    /// Hands one event to this session: buffered while it recovers, else queued unless it already
    /// has the sequence. True when it went into the session's queue.
    fn offer(&mut self, topic: &Topic, seq: u64, bytes: &Utf8Bytes, wakes: &mut Wakes) -> bool {
        let Some(p) = self.pending.as_mut() else {
            if seq > 0 && seq <= self.high {
                return false;
            }
            if !SessionHandle::deliver_quiet(&self.handle, bytes, wakes) {
                return false;
            }
            self.high = self.high.max(seq);
            if seq > 0 && matches!(topic, Topic::User(_)) {
                self.handle.note_dm(seq);
            }
            return true;
        };
        let budget = self.handle.outbound_bytes();
        if self.pending_bytes + bytes.len() > budget {
            // Recovering while the room outpaces it by a whole budget: the sequenced events are in
            // the store, so drop them here and have the session read them again.
            p.retain(|(s, _)| *s == 0);
            self.pending_bytes = p.iter().map(|(_, b)| b.len()).sum();
            self.refill = true;
        }
        if seq > 0 && self.refill {
            return false;
        }
        if self.pending_bytes + bytes.len() > budget {
            // Unsequenced events alone (presence, typing, read) fill a whole budget.
            self.handle.kick(close::SLOW_CONSUMER);
            p.clear();
            self.pending_bytes = 0;
        } else if !self.handle.is_kicked() {
            self.pending_bytes += bytes.len();
            p.push((seq, bytes.clone()));
        }
        false
    }
}

#[derive(Default)]
struct Inner {
    topics: HashMap<Topic, HashMap<SessionId, Listener>>,
    /// Joins and leaves not yet told to the sessions that take them coalesced, per room with such
    /// sessions.
    coalesced: HashMap<Topic, Coalesced>,
}

/// How often, at most, a session in [`PresenceMode::Batch`] or [`PresenceMode::Count`] hears of a
/// room's joins and leaves.
pub const PRESENCE_BATCH_EVERY: Duration = Duration::from_millis(250);

/// Names one `presence_batch` frame lists at most (joins and leaves together); beyond, it says
/// `truncated` and the client pages `members`.
pub const PRESENCE_BATCH_NAMES: usize = 1000;

/// A room's joins and leaves since the last [`Hub::flush_presence`].
#[derive(Debug, Default)]
struct Coalesced {
    /// The room's member count as this node last learned it (a join's count, moved by each event).
    total: u64,
    /// Each user's last event since the last flush: true for a join.
    changes: std::collections::BTreeMap<Arc<str>, bool>,
    /// More users than [`PRESENCE_BATCH_NAMES`] changed.
    truncated: bool,
    /// Something changed since the last flush.
    dirty: bool,
}

/// Start of a `presence` event on the bus.
const PRESENCE_PREFIX: &str = r#"{"type":"presence","#;

/// The user and whether it is a join, if `bytes` is a `presence` event.
fn presence_event(bytes: &Utf8Bytes) -> Option<(Arc<str>, bool)> {
    #[derive(serde::Deserialize)]
    struct Presence<'a> {
        user: &'a str,
        event: &'a str,
    }
    if !bytes.as_str().starts_with(PRESENCE_PREFIX) {
        return None;
    }
    let p: Presence<'_> = serde_json::from_str(bytes.as_str()).ok()?;
    Some((Arc::from(p.user), p.event == "join"))
}

/// Counters the hub keeps for metrics (registered by [`crate::metrics::Metrics`]).
#[derive(Debug, Default)]
pub struct HubStats {
    /// Frames handed to session queues.
    pub deliveries: Counter,
    /// Sessions closed as slow consumers (counted once per session, when it ends).
    pub slow_consumers: Counter,
    /// Topics whose bus events wait for the store (a gap being read again, a catch-up pending): the
    /// receiver's owed topics (`backend::redis::receiver`).
    pub owed_topics: Gauge,
    /// Topics whose gap the store could not show for the give-up time: their listeners here missed
    /// those sequences.
    pub gaps_given_up: Counter,
}

/// One step of ending a recovery ([`Hub::drain_pending`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Drained {
    /// Nothing was left buffered: the session now receives the topic live; the highest sequence it
    /// was handed.
    Live(u64),
    /// Buffered events to hand over (in order) before asking again, and the highest sequence among
    /// them and what was sent before.
    Batch(Vec<Utf8Bytes>, u64),
    /// The room outpaced the recovery and buffered events were dropped: read the stored messages
    /// after this sequence from the store, then ask again.
    Refill(u64),
}

/// How many independently locked parts the routing table has: a dispatch to one topic and a join or
/// leave of another rarely wait for each other.
const SHARDS: usize = 64;

/// The node-local routing table, in [`SHARDS`] parts by topic, each behind its own lock (held only
/// for map updates and for queueing into sessions' outboxes, never across an await).
pub struct Hub {
    shards: Box<[Mutex<Inner>]>,
    hasher: std::collections::hash_map::RandomState,
    /// Delivery counters.
    pub stats: HubStats,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: Default::default(),
            stats: HubStats::default(),
        }
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// The part of the table that holds `topic`.
    fn lock(&self, topic: &Topic) -> MutexGuard<'_, Inner> {
        use std::hash::BuildHasher;
        let i = (self.hasher.hash_one(topic) % SHARDS as u64) as usize;
        lock_shard(&self.shards[i])
    }

    /// Adds a session to a topic. With `pending`, events are buffered until [`Hub::activate`].
    /// Returns true if the session is the topic's first local listener.
    pub fn attach(&self, topic: &Topic, handle: &Arc<SessionHandle>, pending: bool) -> bool {
        let mut inner = self.lock(topic);
        let listeners = inner.topics.entry(topic.clone()).or_default();
        let first = listeners.is_empty();
        listeners.insert(
            handle.id,
            Listener {
                handle: handle.clone(),
                presence: PresenceMode::Events,
                pending: pending.then(Vec::new),
                pending_bytes: 0,
                refill: false,
                high: 0,
            },
        );
        first
    }

    /// Ends recovery: queues the buffered events with a sequence above `sent_up_to` (and every
    /// unsequenced event), then delivers live. Returns the highest sequence delivered.
    pub fn activate(&self, topic: &Topic, id: SessionId, sent_up_to: u64) -> u64 {
        let mut inner = self.lock(topic);
        let mut high = sent_up_to;
        if let Some(l) = inner.topics.get_mut(topic).and_then(|t| t.get_mut(&id)) {
            l.pending_bytes = 0;
            for (seq, bytes) in l.pending.take().unwrap_or_default() {
                if seq == 0 || seq > high {
                    if l.handle.deliver(&bytes) {
                        self.stats.deliveries.inc();
                    }
                    high = high.max(seq);
                }
            }
            l.high = l.high.max(high);
            if let Topic::User(_) = topic {
                l.handle.note_dm(high);
            }
        }
        high
    }

    /// Ends recovery one step at a time so the session can wait for room in its queue between steps:
    /// takes the buffered events above `sent_up_to` (and every unsequenced one), or — when none are
    /// left — makes the session live on the topic. The session hands each batch over and calls again
    /// with the returned high mark; events arriving meanwhile wait in the buffer, so order holds.
    pub fn drain_pending(&self, topic: &Topic, id: SessionId, sent_up_to: u64) -> Drained {
        let mut inner = self.lock(topic);
        let Some(l) = inner.topics.get_mut(topic).and_then(|t| t.get_mut(&id)) else {
            return Drained::Live(sent_up_to);
        };
        if std::mem::take(&mut l.refill) {
            return Drained::Refill(sent_up_to);
        }
        let buffered = match l.pending.as_mut() {
            Some(p) if !p.is_empty() => std::mem::take(p),
            _ => {
                l.pending = None;
                l.pending_bytes = 0;
                l.high = l.high.max(sent_up_to);
                if let Topic::User(_) = topic {
                    l.handle.note_dm(sent_up_to);
                }
                return Drained::Live(sent_up_to);
            }
        };
        l.pending_bytes = 0;
        let mut high = sent_up_to;
        let mut out = Vec::with_capacity(buffered.len());
        for (seq, bytes) in buffered {
            if seq == 0 || seq > high {
                high = high.max(seq);
                out.push(bytes);
            }
        }
        Drained::Batch(out, high)
    }

    /// Removes a session from a topic. Returns true if no local listener is left.
    pub fn detach(&self, topic: &Topic, id: SessionId) -> bool {
        let mut inner = self.lock(topic);
        let Some(listeners) = inner.topics.get_mut(topic) else {
            return true;
        };
        listeners.remove(&id);
        if listeners.is_empty() {
            inner.topics.remove(topic);
            true
        } else {
            false
        }
    }

    /// True if some local session listens to `topic`.
    pub fn has_listeners(&self, topic: &Topic) -> bool {
        self.lock(topic).topics.contains_key(topic)
    }

    /// Whether `user` has any session listening to `topic` other than `except`.
    pub fn user_listens_elsewhere(&self, topic: &Topic, user: &str, except: SessionId) -> bool {
        self.lock(topic).topics.get(topic).is_some_and(|t| {
            t.values()
                .any(|l| l.handle.id != except && &*l.handle.user == user)
        })
    }

    /// Hands one bus event to every local listener of `topic`, in call order, and wakes their
    /// writers. Returns how many sessions got it.
    pub fn dispatch(&self, topic: &Topic, seq: u64, bytes: &Utf8Bytes) -> usize {
        let mut wakes = Wakes::default();
        // The writers are woken when `wakes` drops, after the shard's lock.
        self.dispatch_to(topic, seq, bytes, &mut wakes)
    }

    /// [`Hub::dispatch`] that leaves the writers' wakes in `wakes`, for a caller handing over a batch
    /// of events (it must wake them, or drop `wakes`, before it waits for anything).
    pub fn dispatch_to(
        &self,
        topic: &Topic,
        seq: u64,
        bytes: &Utf8Bytes,
        wakes: &mut Wakes,
    ) -> usize {
        let mut inner = self.lock(topic);
        let Inner { topics, coalesced } = &mut *inner;
        let Some(listeners) = topics.get_mut(topic) else {
            return 0;
        };
        if let (Topic::Room(room), Some(user)) = (topic, revoked_user(bytes)) {
            for l in listeners.values().filter(|l| *l.handle.user == *user) {
                l.handle.revoke(room.clone());
            }
            return 0;
        }
        // Only a room with sessions taking presence coalesced needs to know a presence event as one
        // (every such session has its room in `coalesced`).
        let coalesced = coalesced.get_mut(topic);
        let presence = match coalesced {
            Some(_) if seq == 0 => presence_event(bytes),
            _ => None,
        };
        let mut delivered = 0;
        for l in listeners.values_mut() {
            if presence.is_some() && l.presence != PresenceMode::Events {
                continue;
            }
            if l.offer(topic, seq, bytes, wakes) {
                delivered += 1;
            }
        }
        if let (Some((user, join)), Some(c)) = (presence, coalesced) {
            c.total = if join {
                c.total + 1
            } else {
                c.total.saturating_sub(1)
            };
            if c.changes.len() < PRESENCE_BATCH_NAMES || c.changes.contains_key(&user) {
                c.changes.insert(user, join);
            } else {
                c.truncated = true;
            }
            c.dirty = true;
        }
        self.stats.deliveries.inc_by(delivered as u64);
        delivered
    }

    /// Sets how session `id` hears of joins and leaves in `topic`; `members_total` is the room's
    /// member count its join found, when it has one (the freshest count this node has).
    pub fn set_presence_mode(
        &self,
        topic: &Topic,
        id: SessionId,
        mode: PresenceMode,
        members_total: Option<u64>,
    ) {
        let mut inner = self.lock(topic);
        let Some(l) = inner.topics.get_mut(topic).and_then(|t| t.get_mut(&id)) else {
            return;
        };
        l.presence = mode;
        if mode != PresenceMode::Events {
            let c = inner.coalesced.entry(topic.clone()).or_default();
            if let Some(total) = members_total {
                c.total = total;
            }
        }
    }

    /// Tells every session in [`PresenceMode::Batch`] or [`PresenceMode::Count`] what changed in its
    /// rooms since the last call: one frame per room and session at most. Called every
    /// [`PRESENCE_BATCH_EVERY`] ([`run_presence_batches`]).
    pub fn flush_presence(&self) {
        let mut wakes = Wakes::default();
        for shard in &self.shards {
            self.flush_shard(&mut lock_shard(shard), &mut wakes);
        }
    }

    fn flush_shard(&self, inner: &mut Inner, wakes: &mut Wakes) {
        let Inner { topics, coalesced } = inner;
        coalesced.retain(|topic, c| {
            let Some(listeners) = topics.get_mut(topic) else {
                return false;
            };
            if !std::mem::take(&mut c.dirty) {
                return true;
            }
            let Topic::Room(room) = topic else {
                return false;
            };
            let changes = std::mem::take(&mut c.changes);
            let truncated = std::mem::take(&mut c.truncated);
            let ts = now_ms();
            let mut batch = None;
            let mut count = None;
            for l in listeners.values_mut() {
                let frame = match l.presence {
                    PresenceMode::Events => continue,
                    PresenceMode::Batch => batch.get_or_insert_with(|| {
                        let (joins, leaves): (Vec<_>, Vec<_>) =
                            changes.iter().partition(|(_, join)| **join);
                        encode(&ServerFrame::PresenceBatch {
                            room,
                            joins: joins.iter().map(|(u, _)| &***u).collect(),
                            leaves: leaves.iter().map(|(u, _)| &***u).collect(),
                            truncated,
                            members_total: c.total,
                            ts,
                        })
                    }),
                    PresenceMode::Count => count.get_or_insert_with(|| {
                        encode(&ServerFrame::PresenceCount {
                            room,
                            members_total: c.total,
                            ts,
                        })
                    }),
                };
                if l.offer(topic, 0, frame, wakes) {
                    self.stats.deliveries.inc();
                }
            }
            true
        });
    }

    /// Every topic with at least one local listener, and the users listening to it (for presence
    /// refresh).
    pub fn snapshot(&self) -> Vec<(Topic, Vec<Arc<str>>)> {
        let mut out = Vec::new();
        for shard in &self.shards {
            out.extend(lock_shard(shard).topics.iter().map(|(t, ls)| {
                let mut users: Vec<Arc<str>> = ls.values().map(|l| l.handle.user.clone()).collect();
                users.sort();
                users.dedup();
                (t.clone(), users)
            }));
        }
        out
    }

    /// Wakes every session on this node (each listens on its user's topic) to look at what changed
    /// for all of them: the drain beginning.
    pub fn wake_all(&self) {
        for shard in &self.shards {
            let handles: Vec<Arc<SessionHandle>> = lock_shard(shard)
                .topics
                .iter()
                .filter(|(t, _)| matches!(t, Topic::User(_)))
                .flat_map(|(_, ls)| ls.values().map(|l| l.handle.clone()))
                .collect();
            // Woken outside the shard's lock.
            for h in handles {
                h.wake();
            }
        }
    }

    /// Number of topics with local listeners, by kind: (rooms, users).
    pub fn topic_counts(&self) -> (usize, usize) {
        let (mut rooms, mut all) = (0, 0);
        for shard in &self.shards {
            let inner = lock_shard(shard);
            rooms += inner
                .topics
                .keys()
                .filter(|t| matches!(t, Topic::Room(_)))
                .count();
            all += inner.topics.len();
        }
        (rooms, all - rooms)
    }
}

fn lock_shard(shard: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // A panic while holding this lock cannot leave the maps half-updated in a way that matters more
    // than stopping fan-out for a part of the node would, so recover the guard.
    shard.lock().unwrap_or_else(|e| e.into_inner())
}

/// Flushes coalesced presence every [`PRESENCE_BATCH_EVERY`] until `stop` fires.
pub async fn run_presence_batches(hub: Arc<Hub>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(PRESENCE_BATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => hub.flush_presence(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session whose queue holds `cap` frames in all (half per lane), and a second handle to read
    /// what reached its queue.
    fn session(id: u64, user: &str, cap: usize) -> (Arc<SessionHandle>, Arc<SessionHandle>) {
        let h = Arc::new(SessionHandle::new(id, user.into(), cap / 2));
        (h.clone(), h)
    }

    fn frames(queue: &mut Arc<SessionHandle>) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(Out::Frame(b)) = queue.try_next_out() {
            out.push(b.as_str().to_owned());
        }
        out
    }

    #[test]
    fn an_access_revocation_reaches_only_the_named_users_sessions_and_no_client() {
        let hub = Hub::new();
        let t = Topic::room("private:ops");
        let (bob1, mut r1) = session(1, "bob", 8);
        let (bob2, mut r2) = session(2, "bob", 8);
        let (alice, mut ra) = session(3, "alice", 8);
        for h in [&bob1, &bob2, &alice] {
            hub.attach(&t, h, false);
        }
        assert_eq!(
            hub.dispatch(&t, 0, &access_revoked("private:ops", "bob")),
            0
        );
        for h in [&bob1, &bob2] {
            assert_eq!(h.take_revoked(), vec![Arc::<str>::from("private:ops")]);
            assert!(h.take_revoked().is_empty(), "taken once");
        }
        assert!(alice.take_revoked().is_empty());
        for rx in [&mut r1, &mut r2, &mut ra] {
            assert!(frames(rx).is_empty(), "the notice is not a client frame");
        }
        // An ordinary frame still reaches everyone.
        let f = Utf8Bytes::from_static(r#"{"type":"typing","room":"private:ops","user":"alice"}"#);
        assert_eq!(hub.dispatch(&t, 0, &f), 3);
    }

    #[test]
    fn dispatch_reaches_every_listener_in_order() {
        let hub = Hub::new();
        let t = Topic::room("r");
        let (a, mut ra) = session(1, "a", 8);
        let (b, mut rb) = session(2, "b", 8);
        assert!(hub.attach(&t, &a, false));
        assert!(!hub.attach(&t, &b, false));
        for i in 1..=3 {
            hub.dispatch(&t, i, &Utf8Bytes::from(format!("m{i}")));
        }
        assert_eq!(frames(&mut ra), ["m1", "m2", "m3"]);
        assert_eq!(frames(&mut rb), ["m1", "m2", "m3"]);
    }

    #[test]
    fn pending_listener_gets_buffered_events_after_history_without_duplicates() {
        let hub = Hub::new();
        let t = Topic::room("r");
        let (a, mut ra) = session(1, "a", 16);
        hub.attach(&t, &a, true);
        // Live events race with the history read: 5 and 6 are in history too, 7 is not.
        for i in 5..=7 {
            hub.dispatch(&t, i, &Utf8Bytes::from(format!("m{i}")));
        }
        hub.dispatch(&t, 0, &Utf8Bytes::from("typing"));
        assert!(
            frames(&mut ra).is_empty(),
            "nothing leaks before activation"
        );
        // The session sent history up to 6 itself.
        assert_eq!(hub.activate(&t, 1, 6), 7);
        assert_eq!(frames(&mut ra), ["m7", "typing"]);
        hub.dispatch(&t, 8, &Utf8Bytes::from("m8"));
        assert_eq!(frames(&mut ra), ["m8"]);
    }

    #[test]
    fn a_sequence_is_never_delivered_twice_or_backwards() {
        let hub = Hub::new();
        let t = Topic::room("r");
        let (a, mut ra) = session(1, "a", 16);
        hub.attach(&t, &a, true);
        hub.activate(&t, 1, 4);
        for seq in [3, 5, 5, 4, 6, 0] {
            hub.dispatch(&t, seq, &Utf8Bytes::from(format!("m{seq}")));
        }
        assert_eq!(frames(&mut ra), ["m5", "m6", "m0"]);
    }

    #[test]
    fn slow_consumer_is_kicked_and_others_carry_on() {
        let hub = Hub::new();
        let t = Topic::room("r");
        let (slow, _keep_slow_rx) = session(1, "slow", 2);
        let (fast, mut rf) = session(2, "fast", 64);
        hub.attach(&t, &slow, false);
        hub.attach(&t, &fast, false);
        for i in 1..=10 {
            hub.dispatch(&t, i, &Utf8Bytes::from(format!("m{i}")));
        }
        assert_eq!(
            slow.kicked_with(),
            Some(crate::protocol::close::SLOW_CONSUMER)
        );
        assert_eq!(frames(&mut rf).len(), 10);
    }

    #[test]
    fn a_queue_full_in_bytes_is_a_slow_consumer_even_with_frames_to_spare() {
        let hub = Hub::new();
        let t = Topic::room("r");
        let slow = Arc::new(SessionHandle::new(1, "slow".into(), 512).with_outbound_bytes(1000));
        hub.attach(&t, &slow, false);
        let big = Utf8Bytes::from("x".repeat(300));
        for i in 1..=3 {
            hub.dispatch(&t, i, &big);
        }
        assert_eq!(slow.kicked_with(), None, "900 bytes fit in 1000");
        hub.dispatch(&t, 4, &big);
        assert_eq!(
            slow.kicked_with(),
            Some(crate::protocol::close::SLOW_CONSUMER)
        );
    }

    #[test]
    fn written_bytes_make_room_again() {
        let h = SessionHandle::new(1, "u".into(), 512).with_outbound_bytes(100);
        let f = Utf8Bytes::from("y".repeat(60));
        assert!(h.deliver(&f));
        assert!(matches!(h.try_next_out(), Some(Out::Frame(_))));
        h.written(60, false);
        assert!(h.deliver(&f), "the first frame was written");
        assert_eq!(h.kicked_with(), None);
    }

    #[test]
    fn a_recovery_outpaced_by_its_room_reads_the_store_again_instead_of_closing() {
        let hub = Hub::new();
        let t = Topic::room("r");
        let h = Arc::new(SessionHandle::new(1, "u".into(), 512).with_outbound_bytes(500));
        hub.attach(&t, &h, true);
        let f = Utf8Bytes::from("z".repeat(200));
        let typing = Utf8Bytes::from("t".repeat(50));
        hub.dispatch(&t, 1, &f);
        hub.dispatch(&t, 0, &typing);
        hub.dispatch(&t, 2, &f);
        hub.dispatch(&t, 3, &f);
        hub.dispatch(&t, 4, &f);
        assert_eq!(h.kicked_with(), None, "the messages are in the store");
        assert_eq!(hub.drain_pending(&t, 1, 0), Drained::Refill(0));
        // After the refill (the session read 1..=4 from the store) only what came since is buffered,
        // and the unsequenced event that was buffered is kept.
        hub.dispatch(&t, 5, &f);
        let Drained::Batch(batch, high) = hub.drain_pending(&t, 1, 4) else {
            panic!("the typing notice and 5 are buffered");
        };
        assert_eq!(batch, [typing.clone(), f.clone()]);
        assert_eq!(high, 5);
        assert_eq!(hub.drain_pending(&t, 1, high), Drained::Live(5));
        // Unsequenced events alone over the budget cannot be read again: a slow consumer.
        let g = Arc::new(SessionHandle::new(2, "v".into(), 512).with_outbound_bytes(500));
        hub.attach(&t, &g, true);
        for _ in 0..3 {
            hub.dispatch(&t, 0, &f);
        }
        assert_eq!(g.kicked_with(), Some(crate::protocol::close::SLOW_CONSUMER));
    }

    #[tokio::test]
    async fn a_full_reply_lane_never_makes_live_events_a_slow_consumer() {
        let h = SessionHandle::new(1, "u".into(), 4).with_outbound_bytes(1000);
        let reply = Utf8Bytes::from("r".repeat(250));
        for _ in 0..4 {
            assert!(h.deliver_wait(&reply, Duration::from_secs(1)).await);
        }
        let live = Utf8Bytes::from("l".repeat(250));
        for _ in 0..4 {
            assert!(h.deliver(&live), "live events have their own lane");
        }
        assert_eq!(h.kicked_with(), None);
        assert!(!h.deliver(&live), "until their own lane is full");
        assert_eq!(h.kicked_with(), Some(crate::protocol::close::SLOW_CONSUMER));
        let mut kinds = Vec::new();
        while let Some(out) = h.try_next_out() {
            kinds.push(matches!(out, Out::Reply(_)));
        }
        assert_eq!(kinds, [true, true, true, true, false, false, false, false]);
    }

    #[test]
    fn drain_pending_hands_over_batches_then_goes_live_in_order() {
        let hub = Hub::new();
        let t = Topic::room("r");
        let (a, mut ra) = session(1, "a", 16);
        hub.attach(&t, &a, true);
        hub.dispatch(&t, 3, &Utf8Bytes::from("m3"));
        hub.dispatch(&t, 4, &Utf8Bytes::from("m4"));
        let Drained::Batch(batch, high) = hub.drain_pending(&t, 1, 3) else {
            panic!("two events were buffered");
        };
        assert_eq!(batch, [Utf8Bytes::from("m4")], "3 was already sent");
        assert_eq!(high, 4);
        // Still pending while the session hands the batch over: 5 is buffered, not delivered.
        hub.dispatch(&t, 5, &Utf8Bytes::from("m5"));
        assert!(frames(&mut ra).is_empty());
        let Drained::Batch(batch, high) = hub.drain_pending(&t, 1, high) else {
            panic!("5 arrived meanwhile");
        };
        assert_eq!(batch, [Utf8Bytes::from("m5")]);
        assert_eq!(hub.drain_pending(&t, 1, high), Drained::Live(5));
        hub.dispatch(&t, 5, &Utf8Bytes::from("m5"));
        hub.dispatch(&t, 6, &Utf8Bytes::from("m6"));
        assert_eq!(frames(&mut ra), ["m6"], "live now, without the duplicate");
    }

    #[test]
    fn detach_reports_the_last_listener() {
        let hub = Hub::new();
        let t = Topic::user("u");
        let (a, _ra) = session(1, "u", 4);
        let (b, _rb) = session(2, "u", 4);
        hub.attach(&t, &a, false);
        hub.attach(&t, &b, false);
        assert!(hub.user_listens_elsewhere(&t, "u", 1));
        assert!(!hub.detach(&t, 1));
        assert!(!hub.user_listens_elsewhere(&t, "u", 2));
        assert!(hub.detach(&t, 2));
        assert!(!hub.has_listeners(&t));
    }
}
