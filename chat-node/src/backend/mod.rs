//! The store and bus behind a node: sequencing, history, direct-message inboxes, presence, read
//! markers, last-seen — and delivery of every event to the nodes that listen.
//!
//! Two implementations share one contract:
//! - [`memory::MemoryBackend`]: standalone mode, one process, no dependencies;
//! - [`redis::RedisBackend`]: scaled mode; one server-side script per message assigns the sequence,
//!   appends to the capped history stream and publishes, so every room has one total order.
//!
//! Events come back to the node through [`crate::hub::Hub::dispatch`], in bus order.

pub mod memory;
pub mod redis;

use crate::hub::Topic;
use crate::protocol::{ErrorCode, LastSeenEntry};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tungstenite::Utf8Bytes;

/// What went wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store or bus is unreachable or failed the command.
    #[error("store unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The post is stored on the master but fewer replicas than required confirmed it in time.
    #[error("stored, but only {confirmed} of {wanted} replicas confirmed it in time")]
    NotDurable {
        /// Replicas required.
        wanted: u32,
        /// Replicas that confirmed.
        confirmed: u32,
    },
    /// The store answered something this node does not understand.
    #[error("unexpected reply from the store: {0}")]
    Protocol(String),
}

impl Error {
    /// The error code a client sees.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Unavailable(_) | Error::NotDurable { .. } => ErrorCode::Unavailable,
            Error::Protocol(_) => ErrorCode::Internal,
        }
    }
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed future, so backends can sit behind `Arc<dyn Backend>`.
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// A message to store and publish: to a room (`target` = room) or a direct message (`target` = user).
#[derive(Clone, Debug)]
pub struct Post {
    /// Room or recipient.
    pub target: String,
    /// Sender.
    pub from: String,
    /// Idempotency key chosen by the client.
    pub client_id: Option<String>,
    /// Server-assigned unique id.
    pub id: String,
    /// The frame's fields after the store-assigned head, from its first comma to the closing brace
    /// (see [`crate::protocol::message_tail`]).
    pub tail: String,
}

/// The outcome of a post.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Posted {
    /// Sequence in the room or inbox.
    pub seq: u64,
    /// Message id (the original one for a duplicate).
    pub id: String,
    /// Server timestamp.
    pub ts: u64,
    /// The client id was seen before; nothing new was stored.
    pub duplicate: bool,
}

/// A stored message frame and its sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// Sequence.
    pub seq: u64,
    /// The complete frame, as delivered live.
    pub frame: Utf8Bytes,
}

/// The sequence range a room's history still holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bounds {
    /// Oldest kept sequence (0 when empty).
    pub first: u64,
    /// Newest sequence ever assigned (0 when none).
    pub last: u64,
}

/// What a join finds ([`Backend::join`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Joining {
    /// The user was present nowhere in the room before (announce a `presence` `join`).
    pub first: bool,
    /// The room's kept sequence range.
    pub bounds: Bounds,
    /// Users present in the room, sorted (empty when not asked for).
    pub members: Vec<String>,
    /// How many users are present.
    pub members_total: usize,
    /// Read markers of the room.
    pub read: BTreeMap<String, u64>,
    /// Where recovery starts: the asked `since`, or 0 when it is above every sequence the room handed
    /// out (the room expired and started again since). `None` without `since`.
    pub since: Option<u64>,
    /// The first messages after `since`, oldest first (at most the chunk asked for).
    pub history: Vec<Stored>,
}

/// What a change of a room's ACL came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AclChange {
    /// The user was added or removed.
    Changed,
    /// Nothing to do: already listed (grant) or not listed (revoke).
    Unchanged,
    /// The ACL (or, standalone, the number of rooms with one) is at its cap; nothing was added.
    Full,
}

/// Where a user's inbox stands ([`Backend::dm_state`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DmState {
    /// Newest sequence a client may see (with replicas: the newest the replicas confirmed).
    pub last: u64,
    /// Newest sequence handed out. Above `last` only while stored messages wait for their
    /// confirmation, or after a failover whose new master had not yet heard of the confirmation; a
    /// client's cursor above it is from before the inbox expired and its sequence started again.
    pub counter: u64,
    /// Sequence delivered to a connection of the user up to.
    pub cursor: u64,
}

/// The store and bus contract.
pub trait Backend: Send + Sync + 'static {
    /// Stores a room message (deduplicated by sender + client id), assigns its sequence and publishes it.
    fn post(&self, post: Post) -> BoxFut<'_, Posted>;
    /// Stores a direct message in the recipient's inbox and publishes it to the recipient.
    fn send_dm(&self, post: Post) -> BoxFut<'_, Posted>;
    /// Publishes an unsequenced event (presence, typing, read) to a topic.
    fn publish(&self, topic: Topic, frame: Utf8Bytes) -> BoxFut<'_, ()>;
    /// Starts receiving a topic's events; returns once the subscription is active. For a user's
    /// topic a backend that reads the inbox's state to start its cursor returns that state (read
    /// after the subscription became active), so a session starting does not read it again.
    fn subscribe(&self, topic: Topic) -> BoxFut<'_, Option<DmState>>;
    /// Stops receiving a topic's events.
    fn unsubscribe(&self, topic: Topic) -> BoxFut<'_, ()>;
    /// Up to `limit` messages with sequence above `after`, oldest first.
    fn history_after(&self, room: &str, after: u64, limit: usize) -> BoxFut<'_, Vec<Stored>>;
    /// Up to `limit` messages with sequence below `before`, oldest first.
    fn history_before(&self, room: &str, before: u64, limit: usize) -> BoxFut<'_, Vec<Stored>>;
    /// Direct messages of `user` with sequence above `after`, oldest first.
    fn dms_after(&self, user: &str, after: u64, limit: usize) -> BoxFut<'_, Vec<Stored>>;
    /// Where a user's inbox stands: its sequences and the delivery cursor.
    fn dm_state(&self, user: &str) -> BoxFut<'_, DmState>;
    /// Records that direct messages up to `seq` reached a connection of `user` (never moves back).
    fn dm_delivered(&self, user: &str, seq: u64) -> BoxFut<'_, ()>;
    /// Marks `user` present in `room` through `node` and reads what a join answers: whether the user
    /// was present nowhere before, bounds, the members (with `list`; else only their number), read
    /// markers and, with `since`, the first `chunk` messages after it. The Redis backend does all of
    /// it in one round trip.
    fn join<'a>(
        &'a self,
        room: &'a str,
        user: &'a str,
        node: &'a str,
        since: Option<u64>,
        chunk: usize,
        list: bool,
    ) -> BoxFut<'a, Joining>;
    /// Ends `user`'s presence in `room` through `node`; true if the user is now present nowhere.
    fn presence_leave(&self, room: &str, user: &str, node: &str) -> BoxFut<'_, bool>;
    /// Users present in a room, sorted.
    fn members(&self, room: &str) -> BoxFut<'_, Vec<String>>;
    /// Ends the presence of users whose every entry in one of `rooms` expired (their node died
    /// without saying goodbye) and returns them as (room, user). Each such user is returned once in
    /// the whole cluster, so the caller announces the `leave` exactly once.
    fn expire_presence(&self, rooms: Vec<String>) -> BoxFut<'_, Vec<(String, String)>>;
    /// Keeps this node's presence entries alive (rooms with their local users; online users).
    fn refresh(
        &self,
        node: &str,
        rooms: Vec<(String, Vec<String>)>,
        users: Vec<String>,
    ) -> BoxFut<'_, ()>;
    /// Moves a read marker forward, never past the room's newest sequence; the stored sequence if it
    /// moved. A room keeps at most [`crate::config::READ_MARKERS_CAP`] markers (the least advanced go).
    fn set_read(&self, room: &str, user: &str, seq: u64) -> BoxFut<'_, Option<u64>>;
    /// The user has a connection on `node`.
    fn user_online(&self, user: &str, node: &str) -> BoxFut<'_, ()>;
    /// The user's last connection on `node` closed at `ts`.
    fn user_offline(&self, user: &str, node: &str, ts: u64) -> BoxFut<'_, ()>;
    /// Online state and last-seen time of users.
    fn last_seen(&self, users: Vec<String>) -> BoxFut<'_, BTreeMap<String, LastSeenEntry>>;
    /// Lets `user` into private `room` (`allow`) or takes that back; the room ACL lists users besides
    /// the token grants (at most [`crate::config::ROOM_ACL_CAP`] per room; kept until revoked).
    fn acl_update(&self, room: &str, user: &str, allow: bool) -> BoxFut<'_, AclChange>;
    /// Whether the ACL of `room` lists `user`.
    fn acl_allows(&self, room: &str, user: &str) -> BoxFut<'_, bool>;
    /// The users the ACL of `room` lists, sorted.
    fn acl_list(&self, room: &str) -> BoxFut<'_, Vec<String>>;
    /// Records that `a` and `b` exchanged a direct message (each becomes the other's contact for
    /// [`crate::config::INBOX_TTL`]; at most [`crate::config::CONTACTS_CAP`] each, the newest kept).
    fn note_contact(&self, a: &str, b: &str) -> BoxFut<'_, ()>;
    /// Which of `candidates` are contacts of `user`.
    fn contacts_among(&self, user: &str, candidates: Vec<String>) -> BoxFut<'_, BTreeSet<String>>;
    /// Which of `candidates` are present in, or hold a read marker of, one of `rooms` — in one round
    /// trip of constant-time lookups, so a `last_seen` costs the store little however many rooms.
    fn room_peers_among(
        &self,
        rooms: Vec<String>,
        candidates: Vec<String>,
    ) -> BoxFut<'_, BTreeSet<String>>;
    /// Small keyed records of node features (attachments): the values under `keys`, in order.
    fn records_get(&self, keys: Vec<String>) -> BoxFut<'_, Vec<Option<String>>>;
    /// Stores a record for `ttl`; with `only_new` only when the key is free. True when stored.
    fn record_put(
        &self,
        key: &str,
        value: String,
        ttl: Duration,
        only_new: bool,
    ) -> BoxFut<'_, bool>;
    /// Deletes a record — when `only_if` is given, only while it still holds that value (a lock's
    /// token).
    fn record_delete(&self, key: &str, only_if: Option<String>) -> BoxFut<'_, ()>;
    /// Lists `member` in the due list `list` for time `at` (ms; moves it when listed).
    fn due_put(&self, list: &str, member: &str, at: u64) -> BoxFut<'_, ()>;
    /// Takes `member` off a due list.
    fn due_remove(&self, list: &str, member: &str) -> BoxFut<'_, ()>;
    /// Takes up to `limit` members due by `now` (ms) off a due list: each goes to one caller only.
    fn due_take(&self, list: &str, now: u64, limit: usize) -> BoxFut<'_, Vec<String>>;
    /// Adds `delta` to a counter that lives `window` from its first add, unless the sum would pass
    /// `cap` (then nothing changes: false). A negative `delta` never takes it below 0.
    fn counter_add(&self, key: &str, delta: i64, cap: u64, window: Duration) -> BoxFut<'_, bool>;
    /// True while the bus can deliver (readiness).
    fn healthy(&self) -> bool;
}
