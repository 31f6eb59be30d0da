//! The load set: which chat-nodes may receive new clients, how loaded each one is, and how to reach it.
//! This crate owns the schema (key names in [`switchboard_redis::keys`]) and every write to it; chat-node
//! reports through it, the operator owns membership through it, and the registry assigns from it.
//!
//! ```text
//!            ┌─ membership = self ──────────────┐   ┌─ membership = operator ──────────────────────┐
//! chat-node ─┤ heartbeat: beat + ZADD loadset   │   │ operator_heartbeat: beat; score if a member  │
//!            │ deregister on drain              │   │ (never re-adds), adds itself only while no   │
//!            └──────────────────────────────────┘   │ operator holds the lease; leave on drain     │
//!  (both: publish_node_info = HSET nodes)            └──────────────────────────────────────────────┘
//! operator:  hold_membership (the lease) · add_member / remove_member / sync_members / delete_all
//! registry:  assign (one script: prune, skip members whose heartbeat expired, pick the least loaded
//!            node with room, random among equals, ZINCRBY 1)  ·  nodes (prune, then list)
//! ```
//!
//! - **load set** (`sb:{id}:loadset`, sorted set): member = node id, score = connection count. A member is
//!   assignable only if its heartbeat is live (or it has none, see below), it has a node-table entry and
//!   its score is below that entry's capacity. [`LoadSet::assign`] adds 1 to the chosen node's score so a
//!   burst of assignments spreads over several nodes before the node reports its real count again (which
//!   overwrites the score).
//! - **node table** (`sb:{id}:nodes`, hash): node id -> JSON [`NodeInfo`].
//! - **heartbeats** (`sb:{id}:heartbeats`, sorted set): node id -> expiry time in milliseconds of the Redis
//!   server clock (`TIME`, so node clocks do not matter). Every node beats, in both membership modes. A
//!   member whose heartbeat expired is never assigned and is listed with `live: false`. A member without
//!   any heartbeat is one an operator added for a node that never reported (an older chat-node, which
//!   did not beat in operator mode): it is assigned as before, so upgrades do not empty the load set.
//!   A chat-node of this version is not ready before its first beat, so the operator never adds it
//!   without one.
//! - **membership lease** (`sb:{id}:operator`, a string with an expiry): written by the operator on
//!   every load-set sync ([`LoadSet::hold_membership`]). It decides who has the last word:
//!   - *held* (the operator is up): the operator alone adds and removes members. An operator-mode node
//!     only beats and updates its score, and a member whose heartbeat expired is kept (skipped, listed
//!     not live) until the operator removes it — the registry never edits membership the operator owns.
//!   - *absent* (operator down, paused, or never installed — always so for self membership): the
//!     heartbeat has the last word. A member whose heartbeat expired is removed (load set, heartbeat,
//!     node table) by the next `assign`/`nodes`, and an operator-mode node that is ready adds itself. A
//!     new pod therefore gets clients while the operator is down, and a dead one stops getting them
//!     within its heartbeat ttl. When the operator comes back its first sync takes the lease and makes
//!     the members equal to the ready pods again; from then on nodes no longer add themselves, so the
//!     two never fight.
//!
//! Node info republishing: a [`LoadSet`] remembers the [`NodeInfo`] published through it, and
//! [`LoadSet::heartbeat`] / [`LoadSet::operator_heartbeat`] write it again. So a node that was pruned
//! while paused, or removed and re-added by the operator, becomes assignable again on its next report
//! without a separate call.
//!
//! Every multi-step operation is one Lua script, loaded with `SCRIPT LOAD` and run with `EVALSHA` (loaded
//! again after `NOSCRIPT`, e.g. after a failover to a replica that never saw it).

#![warn(missing_docs)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use fred::clients::Client;
use fred::error::Error as FredError;
use fred::interfaces::{
    HashesInterface, KeysInterface, LuaInterface, SortedSetsInterface, TransactionInterface,
};
use fred::types::{FromValue, Value};
use serde::{Deserialize, Serialize};

use switchboard_redis::keys::Keys;

/// Errors of load-set operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Redis failed or could not be reached.
    #[error("load set: Redis {op} failed")]
    Redis {
        /// The operation that failed.
        op: &'static str,
        /// fred's error.
        #[source]
        source: FredError,
    },
    /// A node-table entry is not valid JSON node info.
    #[error("load set: corrupt node table entry for node {id:?}")]
    CorruptEntry {
        /// The node whose entry is corrupt.
        id: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A script answered with something this version does not understand.
    #[error("load set: unexpected reply from {op}: {detail}")]
    UnexpectedReply {
        /// The operation.
        op: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A node id is empty, too long or contains control characters.
    #[error("load set: invalid node id {0:?}")]
    InvalidNodeId(String),
}

impl Error {
    /// A short stable label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Redis { .. } => "redis",
            Error::CorruptEntry { .. } => "corrupt_entry",
            Error::UnexpectedReply { .. } => "unexpected_reply",
            Error::InvalidNodeId(_) => "invalid_node_id",
        }
    }
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Maximum length of a node id in bytes (a Kubernetes pod name is at most 253).
pub const MAX_NODE_ID_LEN: usize = 253;

/// Longest heartbeat ttl honoured; longer ones are clamped (a year is "forever" for a heartbeat).
pub const MAX_HEARTBEAT_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Activity a node reports about itself, for the dashboard (counters are totals since the node
/// started; a reader derives rates from two readings).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeStats {
    /// Rooms with at least one member on the node.
    pub rooms: u64,
    /// Room messages the node stored since it started.
    pub messages: u64,
    /// Frames the node handed to its clients since it started.
    pub deliveries: u64,
}

/// How a node announces itself: stored in the node table as JSON.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NodeInfo {
    /// Node id (load-set member).
    pub id: String,
    /// WebSocket URL clients should open, e.g. `ws://10.0.0.5:8080/ws`.
    pub url: String,
    /// Maximum number of connections the node accepts.
    pub capacity: u64,
    /// Latest activity figures (absent in entries written by older nodes).
    #[serde(default)]
    pub stats: NodeStats,
}

/// A load-set member joined with its node-table entry, as returned by [`LoadSet::assign`] and
/// [`LoadSet::nodes`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NodeEntry {
    /// Node id.
    pub id: String,
    /// WebSocket URL to open (empty if the member has no node-table entry yet).
    pub url: String,
    /// Current score: the node's last reported connection count plus assignments since.
    pub connections: u64,
    /// Capacity from the node table (0 if the member has no node-table entry yet).
    pub capacity: u64,
    /// Whether the node can take another client: its heartbeat is live and `connections < capacity`.
    pub accepting: bool,
    /// Whether the node's heartbeat is live (false: it stopped beating and is never assigned; the
    /// operator, which holds membership, has not removed it yet).
    #[serde(default = "live_by_default")]
    pub live: bool,
    /// The node's latest activity figures.
    #[serde(default)]
    pub stats: NodeStats,
}

/// Entries written before heartbeats were judged were all live.
fn live_by_default() -> bool {
    true
}

impl NodeEntry {
    fn new(id: String, url: String, connections: u64, capacity: u64, live: bool) -> Self {
        Self {
            id,
            url,
            connections,
            capacity,
            accepting: live && connections < capacity,
            live,
            stats: NodeStats::default(),
        }
    }
}

/// Who owns load-set membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Membership {
    /// The node adds itself with a heartbeat and removes itself on drain (no Kubernetes).
    #[value(name = "self")]
    SelfManaged,
    /// The operator adds and removes members; the node beats and updates its own score, and adds itself
    /// only while no operator holds the membership lease (operator down).
    Operator,
}

impl Membership {
    /// The flag value: `self` or `operator`.
    pub fn as_str(self) -> &'static str {
        match self {
            Membership::SelfManaged => "self",
            Membership::Operator => "operator",
        }
    }
}

impl fmt::Display for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error parsing a [`Membership`].
#[derive(Debug, thiserror::Error)]
#[error("unknown membership {0:?}, expected \"self\" or \"operator\"")]
pub struct ParseMembershipError(String);

impl FromStr for Membership {
    type Err = ParseMembershipError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "self" => Ok(Membership::SelfManaged),
            "operator" => Ok(Membership::Operator),
            other => Err(ParseMembershipError(other.to_owned())),
        }
    }
}

/// What an operator-membership heartbeat ([`LoadSet::operator_heartbeat`]) found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Beat {
    /// The node is a member: its score was updated.
    Member,
    /// No operator holds membership, so the node added itself.
    Added,
    /// The operator holds membership and has not added the node: it only beat.
    Waiting,
}

/// What [`LoadSet::sync_members`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Members added (sorted).
    pub added: Vec<String>,
    /// Members removed (sorted).
    pub removed: Vec<String>,
}

/// Handle to one chat system's load set. Cheap to clone; clones share the published-info memory.
#[derive(Clone)]
pub struct LoadSet {
    client: Client,
    keys: Keys,
    /// Node id -> node-info JSON published through this handle, re-sent with heartbeats / score updates.
    published: Arc<Mutex<HashMap<String, String>>>,
}

impl fmt::Debug for LoadSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadSet")
            .field("prefix", &self.keys.prefix())
            .finish_non_exhaustive()
    }
}

impl LoadSet {
    /// A load set in the chat system `keys`, reached through `client`.
    pub fn new(client: Client, keys: Keys) -> Self {
        Self {
            client,
            keys,
            published: Arc::default(),
        }
    }

    /// The key namespace.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The Redis client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Writes `info` into the node table (does not touch membership; allowed in both modes) and remembers
    /// it so heartbeats and score updates can restore it.
    pub async fn publish_node_info(&self, info: &NodeInfo) -> Result<()> {
        validate_id(&info.id)?;
        let json = serde_json::to_string(info).map_err(|e| Error::UnexpectedReply {
            op: "publish_node_info",
            detail: e.to_string(),
        })?;
        self.remember(&info.id, json.clone());
        self.client
            .hset::<(), _, _>(self.keys.node_table(), (info.id.as_str(), json))
            .await
            .map_err(redis("publish_node_info"))
    }

    /// Self membership: adds `id` to the load set (or updates its score) with `connections`, and sets its
    /// heartbeat to expire `ttl` from now on the Redis clock. A node that stops calling this is no longer
    /// assigned once `ttl` has passed.
    pub async fn heartbeat(&self, id: &str, connections: u64, ttl: Duration) -> Result<()> {
        self.beat(Membership::SelfManaged, id, connections, ttl)
            .await
            .map(drop)
    }

    /// Operator membership: sets the heartbeat of `id` to expire `ttl` from now and its score to
    /// `connections` if it is a member. It is added only while no operator holds the membership lease
    /// (see the module docs): with the operator up a late write from a dying node cannot resurrect it.
    pub async fn operator_heartbeat(
        &self,
        id: &str,
        connections: u64,
        ttl: Duration,
    ) -> Result<Beat> {
        self.beat(Membership::Operator, id, connections, ttl).await
    }

    async fn beat(
        &self,
        membership: Membership,
        id: &str,
        connections: u64,
        ttl: Duration,
    ) -> Result<Beat> {
        validate_id(id)?;
        // Clamped so `now + ttl` stays an exact integer in Lua's doubles.
        let ttl_ms = ttl.as_millis().clamp(1, MAX_HEARTBEAT_TTL.as_millis());
        let info = self.remembered(id).unwrap_or_default();
        let found: String = HEARTBEAT
            .run(
                &self.client,
                self.membership_keys(),
                vec![
                    Value::from(id),
                    Value::from(connections.to_string()),
                    Value::from(ttl_ms.to_string()),
                    Value::from(info),
                    Value::from(membership.as_str()),
                ],
            )
            .await
            .map_err(redis("heartbeat"))?;
        match found.as_str() {
            "member" => Ok(Beat::Member),
            "added" => Ok(Beat::Added),
            "waiting" => Ok(Beat::Waiting),
            other => Err(Error::UnexpectedReply {
                op: "heartbeat",
                detail: format!("{other:?}"),
            }),
        }
    }

    /// Operator membership, on drain: marks the heartbeat of `id` expired, so no registry assigns it
    /// from now on. Membership stays the operator's to remove (or is pruned if no operator holds it).
    pub async fn leave(&self, id: &str) -> Result<()> {
        validate_id(id)?;
        self.client
            .zadd::<(), _, _>(self.keys.heartbeats(), None, None, false, false, (0.0, id))
            .await
            .map_err(redis("leave"))
    }

    /// Operator membership, score only: sets the score of `id` only if it is already a member (never
    /// re-adds it) and does not beat. Returns whether it was a member.
    pub async fn update_score(&self, id: &str, connections: u64) -> Result<bool> {
        validate_id(id)?;
        let info = self.remembered(id).unwrap_or_default();
        let existed: i64 = UPDATE_SCORE
            .run(
                &self.client,
                vec![self.keys.load_set(), self.keys.node_table()],
                vec![
                    Value::from(id),
                    Value::from(connections.to_string()),
                    Value::from(info),
                ],
            )
            .await
            .map_err(redis("update_score"))?;
        Ok(existed == 1)
    }

    /// Operator: takes (or renews) the membership lease for `ttl`. While it is held, operator-mode
    /// nodes never add themselves and members whose heartbeat expired are kept for the operator to
    /// remove; once it lapses, heartbeats have the last word (module docs).
    pub async fn hold_membership(&self, ttl: Duration) -> Result<()> {
        let ttl_ms = ttl.as_millis().clamp(1, MAX_HEARTBEAT_TTL.as_millis());
        self.client
            .set::<(), _, _>(
                self.keys.membership_lease(),
                "operator",
                Some(fred::types::Expiration::PX(ttl_ms as i64)),
                None,
                false,
            )
            .await
            .map_err(redis("hold_membership"))
    }

    /// Self membership, on drain: removes `id` from the load set, heartbeats and node table.
    pub async fn deregister(&self, id: &str) -> Result<()> {
        validate_id(id)?;
        self.forget(id);
        self.remove(id, "deregister").await.map(drop)
    }

    /// Operator: adds `id` with score 0 unless it is already a member (`ZADD NX`). Returns whether it was
    /// added.
    pub async fn add_member(&self, id: &str) -> Result<bool> {
        validate_id(id)?;
        let added: i64 = self
            .client
            .zadd(
                self.keys.load_set(),
                Some(fred::types::SetOptions::NX),
                None,
                false,
                false,
                (0.0, id),
            )
            .await
            .map_err(redis("add_member"))?;
        Ok(added == 1)
    }

    /// Operator: removes `id` from the load set and its node-table entry (and heartbeat, if any). Returns
    /// whether it was a member.
    pub async fn remove_member(&self, id: &str) -> Result<bool> {
        validate_id(id)?;
        self.remove(id, "remove_member").await
    }

    /// The current members (without pruning).
    pub async fn members(&self) -> Result<BTreeSet<String>> {
        let members: Vec<String> = self
            .client
            .zrange(self.keys.load_set(), 0, -1, None, false, None, false)
            .await
            .map_err(redis("members"))?;
        Ok(members.into_iter().collect())
    }

    /// Operator: makes the members exactly `desired` (adds missing with score 0, removes the rest with
    /// their node-table entries). Idempotent; safe to run from a reconcile loop.
    pub async fn sync_members(&self, desired: &BTreeSet<String>) -> Result<SyncReport> {
        for id in desired {
            validate_id(id)?;
        }
        let current = self.members().await?;
        let mut report = SyncReport::default();
        for id in desired.difference(&current) {
            if self.add_member(id).await? {
                report.added.push(id.clone());
            }
        }
        for id in current.difference(desired) {
            if self.remove(id, "sync_members").await? {
                report.removed.push(id.clone());
            }
        }
        Ok(report)
    }

    /// Deletes every key of this chat system (everything under [`Keys::prefix`], including chat-node's
    /// keys), for `ChatCluster` deletion. Returns how many keys were deleted. Keys of other chat systems
    /// are never touched.
    pub async fn delete_all(&self) -> Result<u64> {
        let pattern = self.keys.scan_pattern();
        let mut cursor = "0".to_owned();
        let mut deleted = 0;
        loop {
            let (next, keys): (String, Vec<String>) = self
                .client
                .scan_page(cursor, pattern.clone(), Some(500), None)
                .await
                .map_err(redis("delete_all scan"))?;
            if !keys.is_empty() {
                let n: u64 = self
                    .client
                    .del(keys)
                    .await
                    .map_err(redis("delete_all del"))?;
                deleted += n;
            }
            if next == "0" {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    /// Picks the node for a new client: prunes members whose heartbeat expired, then takes the member with
    /// the lowest score below its capacity (members without a node-table entry are skipped), breaking ties
    /// at random, and adds 1 to its score; an exposed node comes with its external URL, in the same round
    /// trip. `None` when no node has room. The returned entry shows the
    /// score before the increment.
    pub async fn assign(&self) -> Result<Option<NodeEntry>> {
        self.assign_avoiding(&[]).await
    }

    /// As [`LoadSet::assign`], but the nodes in `avoid` (ones the client could not reach) are picked
    /// only when no other node has room: a client whose node just died is not sent back to it while
    /// the dead node's heartbeat has yet to expire.
    pub async fn assign_avoiding(&self, avoid: &[String]) -> Result<Option<NodeEntry>> {
        let mut keys = self.membership_keys();
        keys.push(self.keys.exposed());
        let mut args = Vec::with_capacity(1 + avoid.len());
        args.push(Value::from(i64::from(fastrand::u32(..i32::MAX as u32))));
        args.extend(avoid.iter().map(|id| Value::from(id.as_str())));
        let reply: Option<Vec<String>> = ASSIGN
            .run(&self.client, keys, args)
            .await
            .map_err(redis("assign"))?;
        let Some(reply) = reply else {
            return Ok(None);
        };
        let [id, info, score, exposed]: [String; 4] =
            reply
                .try_into()
                .map_err(|r: Vec<String>| Error::UnexpectedReply {
                    op: "assign",
                    detail: format!("expected 4 fields, got {}", r.len()),
                })?;
        let info = parse_info(&id, &info)?;
        // A node the operator exposes outside the cluster is opened at its external URL.
        let url = if exposed.is_empty() {
            info.url
        } else {
            exposed
        };
        Ok(Some(NodeEntry::new(
            id,
            url,
            parse_score("assign", &score)?,
            info.capacity,
            true,
        )))
    }

    /// Replaces the external URLs of exposed nodes (node id -> URL) in one transaction; an empty map
    /// removes them all (the nodes are opened at their own URLs again).
    pub async fn set_exposed(&self, urls: &BTreeMap<String, String>) -> Result<()> {
        let key = self.keys.exposed();
        let tx = self.client.multi();
        let _: () = tx.del(&key).await.map_err(redis("set_exposed"))?;
        if !urls.is_empty() {
            let _: () = tx
                .hset(&key, urls.clone().into_iter().collect::<Vec<_>>())
                .await
                .map_err(redis("set_exposed"))?;
        }
        let _: () = tx.exec(true).await.map_err(redis("set_exposed"))?;
        Ok(())
    }

    /// Every member (after pruning expired heartbeats where no operator holds membership) joined with its
    /// node-table entry, sorted by id. A member without an entry is listed with an empty URL and
    /// capacity 0, one whose heartbeat expired with `live: false`; neither is accepting.
    pub async fn nodes(&self) -> Result<Vec<NodeEntry>> {
        let reply: Vec<String> = NODES
            .run(&self.client, self.membership_keys(), Vec::<Value>::new())
            .await
            .map_err(redis("nodes"))?;
        if !reply.len().is_multiple_of(4) {
            return Err(Error::UnexpectedReply {
                op: "nodes",
                detail: format!("{} fields is not a multiple of 4", reply.len()),
            });
        }
        let mut nodes = Vec::with_capacity(reply.len() / 4);
        for fields in reply.chunks_exact(4) {
            let (id, score, info, live) = (&fields[0], &fields[1], &fields[2], fields[3] == "1");
            let connections = parse_score("nodes", score)?;
            let (url, capacity, stats) = if info.is_empty() {
                (String::new(), 0, NodeStats::default())
            } else {
                let info = parse_info(id, info)?;
                (info.url, info.capacity, info.stats)
            };
            let mut entry = NodeEntry::new(id.clone(), url, connections, capacity, live);
            entry.stats = stats;
            nodes.push(entry);
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    async fn remove(&self, id: &str, op: &'static str) -> Result<bool> {
        let removed: i64 = REMOVE
            .run(
                &self.client,
                vec![
                    self.keys.load_set(),
                    self.keys.heartbeats(),
                    self.keys.node_table(),
                ],
                vec![Value::from(id)],
            )
            .await
            .map_err(redis(op))?;
        Ok(removed == 1)
    }

    /// The keys every membership script takes, in this order.
    fn membership_keys(&self) -> Vec<String> {
        vec![
            self.keys.load_set(),
            self.keys.heartbeats(),
            self.keys.node_table(),
            self.keys.membership_lease(),
        ]
    }

    fn remember(&self, id: &str, json: String) {
        if let Ok(mut published) = self.published.lock() {
            published.insert(id.to_owned(), json);
        }
    }

    fn remembered(&self, id: &str) -> Option<String> {
        self.published.lock().ok()?.get(id).cloned()
    }

    fn forget(&self, id: &str) {
        if let Ok(mut published) = self.published.lock() {
            published.remove(id);
        }
    }
}

fn redis(op: &'static str) -> impl FnOnce(FredError) -> Error {
    move |source| Error::Redis { op, source }
}

fn validate_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_NODE_ID_LEN || id.chars().any(char::is_control) {
        return Err(Error::InvalidNodeId(id.to_owned()));
    }
    Ok(())
}

fn parse_info(id: &str, json: &str) -> Result<NodeInfo> {
    serde_json::from_str(json).map_err(|source| Error::CorruptEntry {
        id: id.to_owned(),
        source,
    })
}

/// Scores are connection counts; `ZINCRBY` keeps them integral, but Redis returns them as strings that may
/// look like floats.
fn parse_score(op: &'static str, score: &str) -> Result<u64> {
    let value: f64 = score.parse().map_err(|_| Error::UnexpectedReply {
        op,
        detail: format!("score {score:?} is not a number"),
    })?;
    if !value.is_finite() {
        return Err(Error::UnexpectedReply {
            op,
            detail: format!("score {score:?} is not finite"),
        });
    }
    // Saturating float-to-int conversion: negative scores count as 0.
    Ok(value.max(0.0).round() as u64)
}

/// A server-side Lua script run with `EVALSHA`, loaded on first use and again after `NOSCRIPT`.
struct Script {
    source: &'static str,
    /// The SHA1 Redis reported for `source` (the same on every server).
    sha: OnceLock<String>,
}

impl Script {
    const fn new(source: &'static str) -> Self {
        Self {
            source,
            sha: OnceLock::new(),
        }
    }

    async fn load(&self, client: &Client) -> Result<String, FredError> {
        let sha: String = client.script_load(self.source).await?;
        let _ = self.sha.set(sha.clone());
        Ok(sha)
    }

    async fn run<R: FromValue>(
        &self,
        client: &Client,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<R, FredError> {
        let sha = match self.sha.get() {
            Some(sha) => sha.clone(),
            None => self.load(client).await?,
        };
        match client.evalsha(sha, keys.clone(), args.clone()).await {
            Err(e) if e.details().contains("NOSCRIPT") => {
                let sha = self.load(client).await?;
                client.evalsha(sha, keys, args).await
            }
            other => other,
        }
    }
}

/// Shared Lua helpers: the Redis clock in ms, pruning of expired heartbeats and the liveness test
/// (KEYS[1] = load set, KEYS[2] = heartbeats, KEYS[3] = node table, KEYS[4] = membership lease).
/// With the lease held, an expired *member* is kept for the operator to remove; everything else that
/// expired (members without a lease, nodes the operator never added) is removed with its node info.
macro_rules! lua_prelude {
    () => {
        r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function prune(now)
  local held = redis.call('EXISTS', KEYS[4]) == 1
  local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. string.format('%d', now))
  for _, id in ipairs(stale) do
    if not (held and redis.call('ZSCORE', KEYS[1], id)) then
      redis.call('ZREM', KEYS[1], id)
      redis.call('ZREM', KEYS[2], id)
      redis.call('HDEL', KEYS[3], id)
    end
  end
end
local function live(id, now)
  local expiry = redis.call('ZSCORE', KEYS[2], id)
  return (not expiry) or tonumber(expiry) >= now
end
"#
    };
}

/// KEYS: load set, heartbeats, node table, membership lease. ARGV: id, connections, ttl ms, node-info
/// JSON or "", membership (`self` | `operator`). Returns `member`, `added` or `waiting`.
static HEARTBEAT: Script = Script::new(concat!(
    lua_prelude!(),
    r#"
local id = ARGV[1]
redis.call('ZADD', KEYS[2], string.format('%d', now_ms() + tonumber(ARGV[3])), id)
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[3], id, ARGV[4])
end
if redis.call('ZSCORE', KEYS[1], id) then
  redis.call('ZADD', KEYS[1], 'XX', ARGV[2], id)
  return 'member'
end
if ARGV[5] == 'operator' and redis.call('EXISTS', KEYS[4]) == 1 then
  return 'waiting'
end
redis.call('ZADD', KEYS[1], ARGV[2], id)
return 'added'
"#
));

/// KEYS: load set, node table. ARGV: id, connections, node-info JSON or "". Returns 1 if `id` was a member.
static UPDATE_SCORE: Script = Script::new(
    r#"
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', ARGV[2], ARGV[1])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
end
return 1
"#,
);

/// KEYS: load set, heartbeats, node table. ARGV: id. Returns 1 if `id` was a member.
static REMOVE: Script = Script::new(
    r#"
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return removed
"#,
);

/// KEYS: load set, heartbeats, node table, membership lease, exposed URLs. ARGV: a random non-negative
/// integer (tie-break; Lua's own random source is deterministic in Redis scripts), then node ids to
/// avoid unless no other node has room. Returns {id, node-info JSON, score, external URL or ""} or nil.
static ASSIGN: Script = Script::new(concat!(
    lua_prelude!(),
    r#"
local now = now_ms()
prune(now)
local members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local avoid = {}
for i = 2, #ARGV do avoid[ARGV[i]] = true end
local function least_loaded(skip)
  local best = nil
  local candidates = {}
  for i = 1, #members, 2 do
    local score = tonumber(members[i + 1])
    if best ~= nil and score > best then
      break
    end
    local raw = not (skip and avoid[members[i]]) and live(members[i], now)
      and redis.call('HGET', KEYS[3], members[i])
    if raw then
      local ok, info = pcall(cjson.decode, raw)
      if ok and type(info) == 'table' and tonumber(info.capacity) and score < tonumber(info.capacity) then
        best = score
        candidates[#candidates + 1] = {members[i], raw, members[i + 1]}
      end
    end
  end
  return candidates
end
local candidates = least_loaded(true)
if #candidates == 0 and #ARGV > 1 then
  candidates = least_loaded(false)
end
if #candidates == 0 then
  return false
end
local pick = candidates[(tonumber(ARGV[1]) % #candidates) + 1]
redis.call('ZINCRBY', KEYS[1], 1, pick[1])
pick[4] = redis.call('HGET', KEYS[5], pick[1]) or ''
return pick
"#
));

/// KEYS: load set, heartbeats, node table, membership lease. Returns a flat list {id, score, node-info
/// JSON or "", "1" if live else "0"}...
static NODES: Script = Script::new(concat!(
    lua_prelude!(),
    r#"
local now = now_ms()
prune(now)
local members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local out = {}
for i = 1, #members, 2 do
  out[#out + 1] = members[i]
  out[#out + 1] = members[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[3], members[i]) or ''
  out[#out + 1] = live(members[i], now) and '1' or '0'
end
return out
"#
));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_round_trips_through_its_flag_value() {
        for m in [Membership::SelfManaged, Membership::Operator] {
            assert_eq!(m.to_string().parse::<Membership>().expect("parse"), m);
        }
        assert_eq!(Membership::SelfManaged.to_string(), "self");
        assert!("Self".parse::<Membership>().is_err());
    }

    #[test]
    fn membership_is_a_clap_value() {
        use clap::ValueEnum;
        assert_eq!(
            <Membership as ValueEnum>::from_str("self", false).expect("self"),
            Membership::SelfManaged
        );
        assert_eq!(
            <Membership as ValueEnum>::from_str("operator", false).expect("operator"),
            Membership::Operator
        );
    }

    #[test]
    fn entry_accepts_only_below_capacity() {
        assert!(NodeEntry::new("a".into(), "u".into(), 9, 10, true).accepting);
        assert!(!NodeEntry::new("a".into(), "u".into(), 10, 10, true).accepting);
        assert!(!NodeEntry::new("a".into(), String::new(), 0, 0, true).accepting);
        assert!(!NodeEntry::new("a".into(), "u".into(), 0, 10, false).accepting);
    }

    #[test]
    fn scores_parse_as_counts() {
        assert_eq!(parse_score("t", "3").expect("int"), 3);
        assert_eq!(parse_score("t", "3.0").expect("float"), 3);
        assert_eq!(parse_score("t", "-1").expect("negative"), 0);
        assert!(parse_score("t", "inf").is_err());
        assert!(parse_score("t", "x").is_err());
    }

    #[test]
    fn node_ids_are_validated() {
        assert!(validate_id("chat-node-0").is_ok());
        assert!(validate_id("").is_err());
        assert!(validate_id("a\nb").is_err());
        assert!(validate_id(&"x".repeat(MAX_NODE_ID_LEN + 1)).is_err());
    }

    #[test]
    fn node_info_json_is_stable() {
        let info = NodeInfo {
            id: "n1".into(),
            url: "ws://h:1/ws".into(),
            capacity: 7,
            stats: NodeStats::default(),
        };
        assert_eq!(
            serde_json::to_string(&info).expect("json"),
            r#"{"id":"n1","url":"ws://h:1/ws","capacity":7,"stats":{"rooms":0,"messages":0,"deliveries":0}}"#
        );
        let old: NodeInfo = serde_json::from_str(r#"{"id":"n1","url":"ws://h:1/ws","capacity":7}"#)
            .expect("entries without stats still parse");
        assert_eq!(old, info);
    }
}
