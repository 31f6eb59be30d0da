//! Scaled mode: history, inboxes, presence and delivery through Redis.
//!
//! Keys (all under the cluster prefix of [`switchboard_redis::keys::Keys`]; names are wrapped in `<…>`, which
//! names cannot contain, so no two keys collide):
//!
//! ```text
//! key                        type     content                                             expires
//! room:<r>:seq               string   last sequence of room r (INCR)                      ROOM_TTL after the last message
//! room:<r>:log               stream   the last history_cap messages, id "<seq>-1", f = frame   ROOM_TTL, as seq
//! room:<r>:log:visible       string   with --ack-replicas: highest sequence confirmed by replicas; reads stop there   ROOM_TTL
//! room:<r>:cid:<u>:<cid>     string   "seq|id|ts" of a post, for idempotent resends       DEDUP_TTL
//! room:<r>:members           set      users present in r (expired ones leave by expire_presence.lua)  2 x PRESENCE_TTL
//! room:<r>:pres:<u>          zset     node -> expiry ms: where user u is present in r     2 x PRESENCE_TTL
//! room:<r>:read              zset     user -> read marker (at most READ_MARKERS_CAP)       ROOM_TTL after the last move
//! room:<r>:acl               set      users an admin let into private room r (ROOM_ACL_CAP)  never: until revoked
//! user:<u>:dmseq             string   last direct-message sequence of u                   INBOX_TTL after the last message
//! user:<u>:inbox             stream   direct messages to u (INBOX_CAP)                    INBOX_TTL, as dmseq
//! user:<u>:inbox:visible     string   as room:<r>:log:visible, for the inbox              INBOX_TTL
//! user:<u>:cid:<from>:<cid>  string   idempotency of direct messages                      DEDUP_TTL
//! user:<u>:dmcursor          string   direct-message sequence delivered up to             INBOX_TTL after the last delivery
//! user:<u>:online            zset     node -> expiry ms                                   2 x PRESENCE_TTL
//! user:<u>:lastseen          string   ms of the last disconnect                           LAST_SEEN_TTL
//! user:<u>:contacts          zset     correspondent -> ms of the last DM between them (CONTACTS_CAP)   INBOX_TTL after the last
//! ch:room:<r>, ch:user:<u>            pub/sub channels; payload "<seq> <frame>" (seq 0: unsequenced)
//! ```
//!
//! Every key a client can create expires (the room ACL is made by an admin, capped, and kept until revoked) (the constants are in [`crate::config`]). While a node has
//! a session in a room or of a user, it renews that room's or user's keys every
//! [`TTL_RENEW_EVERY`], so no sequence restarts under a live session; after a room or inbox expired
//! its sequence starts again at 1 (`PROTOCOL.md`: a `since` above `last_seq` recovers from the start).
//! That renewal and the presence of every session go out with the periodic refresh, in pipelines of
//! at most [`REFRESH_BATCH`] commands, one after another: the Redis client never holds more of them
//! in flight, however many sessions the node has.
//!
//! One script per post increments the sequence, appends to the stream and publishes, so each room has
//! one total order. Pub/sub is at-most-once, so the stream is the truth: the receiver remembers the
//! last sequence it dispatched per topic, fills any gap from the stream before dispatching (holding
//! later events back until it can), drops duplicates, and re-checks every topic after a reconnect of
//! the subscriber (failover) or a lag.
//!
//! ```text
//! RedisBackend (the Backend trait: reads, presence, read markers, last-seen are here)
//!   ├─ post.rs      durable post: post.lua ─▶ WAIT ─▶ confirm.lua (read back, visible mark, publish)
//!   ├─ receiver.rs  the ordered receiver: subscriber ─▶ cursors, gap fill, catch-up ─▶ hub
//!   ├─ scripts.rs   the Lua scripts, one file each under scripts/
//!   ├─ keys.rs      key and channel names (the table above)
//!   └─ replies.rs   reading script replies
//! ```

mod keys;
mod post;
mod receiver;
mod replies;
mod scripts;

use super::{
    AclChange, Backend, Bounds, BoxFut, DmState, Error, Joining, Post, Posted, Result, Stored,
};
use crate::config::{
    CONTACTS_CAP, INBOX_TTL, LAST_SEEN_TTL, PRESENCE_TTL, READ_MARKERS_CAP, ROOM_ACL_CAP, ROOM_TTL,
};
use crate::hub::{Hub, Topic};
use crate::protocol::{LastSeenEntry, now_ms};
use crate::session::MAX_MEMBERS_LISTED;
use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{ClientLike, PubsubInterface};
use fred::types::Value;
use fred::types::scripts::Script;
use keys::{Names, visible_key};
use replies::{into_array, stored_pairs, to_u64};
use scripts::SCRIPTS;
use std::collections::BTreeSet;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tracing::Instrument;
use tungstenite::Utf8Bytes;

/// How often a node renews the expiry of the rooms and users it has sessions of: far inside the
/// shortest of those lifetimes (7 days), rarely enough to cost nothing.
pub const TTL_RENEW_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Rooms whose expired presence one `expire_presence.lua` call looks at.
const EXPIRE_PRESENCE_ROOMS_PER_CALL: usize = 100;

/// Commands in one pipeline of the periodic refresh. A node with 15,000 sessions refreshes 30,000
/// keys; sent as one pipeline, they sat in the Redis client's queue of commands in flight all at once
/// (about 12 MB, a size that queue then keeps), and held Redis for that long.
const REFRESH_BATCH: usize = 512;

/// A pipeline sent whenever [`REFRESH_BATCH`] commands are queued on it, one at a time.
struct Batch<'a> {
    client: &'a Client,
    pipe: fred::clients::Pipeline<Client>,
    queued: usize,
}

impl<'a> Batch<'a> {
    fn new(client: &'a Client) -> Self {
        Self {
            client,
            pipe: client.pipeline(),
            queued: 0,
        }
    }

    /// Counts `n` commands just queued on `pipe`; sends the pipeline when it is full.
    async fn queued(&mut self, n: usize) -> Result<()> {
        self.queued += n;
        if self.queued >= REFRESH_BATCH {
            self.send().await?;
        }
        Ok(())
    }

    /// Sends what is queued and waits for the replies.
    async fn send(&mut self) -> Result<()> {
        if self.queued == 0 {
            return Ok(());
        }
        let pipe = std::mem::replace(&mut self.pipe, self.client.pipeline());
        self.queued = 0;
        let _: Vec<Value> = pipe.all().await.map_err(unavailable)?;
        Ok(())
    }
}

fn unavailable(e: fred::error::Error) -> Error {
    Error::Unavailable(Box::new(e))
}

/// When a post counts as stored (`PROTOCOL.md`: the ack means "stored").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Durability {
    /// Replicas that must confirm a post (`WAIT`) before it is published and acknowledged; 0 acks
    /// once the master has it.
    pub replicas: u32,
    /// How long to wait for them.
    pub timeout: std::time::Duration,
}

struct Inner {
    durability: Durability,
    client: Client,
    subscriber: SubscriberClient,
    names: Names,
    hub: Arc<Hub>,
    history_cap: usize,
    /// Last sequence dispatched per topic; the receiver's memory for gap filling. A plain lock, held
    /// for lookups and updates only (see `receiver.rs`).
    cursors: std::sync::Mutex<HashMap<Topic, u64>>,
    /// When the expiries of rooms and users with sessions here were last renewed.
    ttl_renewed: std::sync::Mutex<Option<std::time::Instant>>,
}

/// The Redis store and bus.
pub struct RedisBackend {
    inner: Arc<Inner>,
}

impl RedisBackend {
    /// A backend over connected clients. Spawns the receiver task, which stops when `shutdown` fires.
    pub fn new(
        client: Client,
        subscriber: SubscriberClient,
        keys: switchboard_redis::keys::Keys,
        hub: Arc<Hub>,
        history_cap: usize,
        durability: Durability,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Self {
        let inner = Arc::new(Inner {
            durability,
            client,
            subscriber,
            names: Names::new(keys),
            hub,
            history_cap: history_cap.max(1),
            cursors: std::sync::Mutex::new(HashMap::new()),
            ttl_renewed: std::sync::Mutex::new(None),
        });
        let rx_inner = inner.clone();
        tokio::spawn(
            async move { rx_inner.receive(shutdown).await }
                .instrument(tracing::info_span!("bus-receiver")),
        );
        Self { inner }
    }
}

impl Inner {
    /// True (and noted) when the keys of live rooms and users are due for renewal.
    fn ttl_renewal_due(&self) -> bool {
        let mut last = self.ttl_renewed.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < TTL_RENEW_EVERY) {
            return false;
        }
        *last = Some(std::time::Instant::now());
        true
    }

    async fn eval(&self, script: &Script, keys: Vec<String>, args: Vec<String>) -> Result<Value> {
        script
            .evalsha_with_reload::<Value, _, _>(&self.client, keys, args)
            .await
            .map_err(unavailable)
    }

    /// True when reads must stop at the confirmed ("visible") mark.
    fn bounded(&self) -> &'static str {
        if self.durability.replicas > 0 {
            "1"
        } else {
            "0"
        }
    }

    /// Up to `limit` entries of `log` after `after`; `bounded` stops at the visible mark when acks wait
    /// for replicas.
    async fn range_after(
        &self,
        log: String,
        after: u64,
        limit: usize,
        bounded: bool,
    ) -> Result<Vec<Stored>> {
        let visible = visible_key(&log);
        let flag = if bounded { self.bounded() } else { "0" };
        let v = self
            .eval(
                &SCRIPTS.range_after,
                vec![log, visible],
                vec![after.to_string(), limit.max(1).to_string(), flag.to_owned()],
            )
            .await?;
        stored_pairs(v)
    }
}

/// User names of a script reply, sorted.
fn sorted_names(a: Vec<Value>) -> Vec<String> {
    let mut users: Vec<String> = a.into_iter().filter_map(|v| v.into_string()).collect();
    users.sort();
    users
}

/// Read markers of a script reply: user, seq, user, seq, ...
fn read_pairs(a: Vec<Value>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut it = a.into_iter();
    while let (Some(u), Some(s)) = (it.next(), it.next()) {
        if let Some(u) = u.into_string() {
            out.insert(u, to_u64(&s));
        }
    }
    out
}

impl Backend for RedisBackend {
    fn post(&self, post: Post) -> BoxFut<'_, Posted> {
        Box::pin(self.inner.post("message", post))
    }

    fn send_dm(&self, post: Post) -> BoxFut<'_, Posted> {
        Box::pin(self.inner.post("dm", post))
    }

    fn publish(&self, topic: Topic, frame: Utf8Bytes) -> BoxFut<'_, ()> {
        Box::pin(async move {
            let mut payload = Vec::with_capacity(frame.len() + 2);
            payload.extend_from_slice(b"0 ");
            payload.extend_from_slice(frame.as_bytes());
            self.inner
                .client
                .publish::<(), _, _>(
                    self.inner.names.channel(&topic),
                    bytes::Bytes::from(payload),
                )
                .await
                .map_err(unavailable)
        })
    }

    fn subscribe(&self, topic: Topic) -> BoxFut<'_, Option<DmState>> {
        Box::pin(async move {
            self.inner
                .subscriber
                .subscribe(self.inner.names.channel(&topic))
                .await
                .map_err(unavailable)?;
            // Everything stored before this point is history; everything after arrives live (or is
            // filled from the stream when a later sequence shows a gap). A room's cursor starts with
            // the join that follows (`join` reads the bounds anyway), saving a round trip.
            let Topic::User(u) = &topic else {
                return Ok(None);
            };
            let state = self.dm_state(u).await?;
            self.inner.advance(&topic, state.last);
            Ok(Some(state))
        })
    }

    fn unsubscribe(&self, topic: Topic) -> BoxFut<'_, ()> {
        Box::pin(async move {
            self.inner
                .subscriber
                .unsubscribe(self.inner.names.channel(&topic))
                .await
                .map_err(unavailable)?;
            self.inner.cursors().remove(&topic);
            Ok(())
        })
    }

    fn history_after(&self, room: &str, after: u64, limit: usize) -> BoxFut<'_, Vec<Stored>> {
        let log = self.inner.names.room(room, "log");
        Box::pin(self.inner.range_after(log, after, limit, true))
    }

    fn history_before(&self, room: &str, before: u64, limit: usize) -> BoxFut<'_, Vec<Stored>> {
        let log = self.inner.names.room(room, "log");
        Box::pin(async move {
            let top = if before == u64::MAX {
                "max".to_owned()
            } else {
                before.to_string()
            };
            let v = self
                .inner
                .eval(
                    &SCRIPTS.range_before,
                    vec![log.clone(), visible_key(&log)],
                    vec![
                        top,
                        limit.max(1).to_string(),
                        self.inner.bounded().to_owned(),
                    ],
                )
                .await?;
            let mut page = stored_pairs(v)?;
            page.reverse();
            Ok(page)
        })
    }

    fn dms_after(&self, user: &str, after: u64, limit: usize) -> BoxFut<'_, Vec<Stored>> {
        let log = self.inner.names.user(user, "inbox");
        Box::pin(self.inner.range_after(log, after, limit, true))
    }

    fn dm_state(&self, user: &str) -> BoxFut<'_, DmState> {
        let keys = vec![
            self.inner.names.user(user, "dmseq"),
            self.inner.names.user(user, "dmcursor"),
            visible_key(&self.inner.names.user(user, "inbox")),
        ];
        let args = vec![self.inner.bounded().to_owned()];
        Box::pin(async move {
            let a = into_array(self.inner.eval(&SCRIPTS.dm_state, keys, args).await?)?;
            let at = |i: usize| a.get(i).map_or(0, to_u64);
            Ok(DmState {
                last: at(0),
                cursor: at(1),
                counter: at(2),
            })
        })
    }

    fn dm_delivered(&self, user: &str, seq: u64) -> BoxFut<'_, ()> {
        let keys = vec![self.inner.names.user(user, "dmcursor")];
        let args = vec![seq.to_string(), INBOX_TTL.as_secs().to_string()];
        Box::pin(async move {
            self.inner.eval(&SCRIPTS.raise, keys, args).await?;
            Ok(())
        })
    }

    fn join<'a>(
        &'a self,
        room: &'a str,
        user: &'a str,
        node: &'a str,
        since: Option<u64>,
        chunk: usize,
        list: bool,
    ) -> BoxFut<'a, Joining> {
        let names = &self.inner.names;
        let log = names.room(room, "log");
        let keys = vec![
            names.room(room, &format!("pres:<{user}>")),
            names.room(room, "members"),
            names.room(room, "seq"),
            log.clone(),
            visible_key(&log),
            names.room(room, "read"),
        ];
        let now = now_ms();
        let ttl = PRESENCE_TTL.as_millis() as u64;
        // What this node has dispatched of the room was published, so confirmed: a recovery may
        // show it even where the store's visible mark lags (a new master right after a failover).
        let seen = (self.inner.cursors().get(&Topic::room(room)).copied()).unwrap_or(0);
        let args = vec![
            node.to_owned(),
            now.to_string(),
            (now + ttl).to_string(),
            user.to_owned(),
            (ttl * 2).to_string(),
            self.inner.bounded().to_owned(),
            READ_MARKERS_CAP.to_string(),
            since.map(|s| s.to_string()).unwrap_or_default(),
            chunk.max(1).to_string(),
            if list { "1" } else { "0" }.to_owned(),
            MAX_MEMBERS_LISTED.to_string(),
            seen.to_string(),
        ];
        Box::pin(async move {
            let a = into_array(self.inner.eval(&SCRIPTS.join, keys, args).await?)?;
            let mut it = a.into_iter();
            let mut next = || {
                it.next()
                    .ok_or_else(|| Error::Protocol("join.lua: short reply".into()))
            };
            let first = to_u64(&next()?) == 1;
            let bounds = Bounds {
                first: to_u64(&next()?),
                last: to_u64(&next()?),
            };
            let since = next()?.as_str().and_then(|s| s.parse().ok());
            let members = sorted_names(into_array(next()?)?);
            let read = read_pairs(into_array(next()?)?);
            let history = stored_pairs(next()?)?;
            let members_total = to_u64(&next()?) as usize;
            // A fresh subscription's cursor starts here (see `subscribe`); a live one keeps its own.
            self.inner
                .cursors()
                .entry(Topic::room(room))
                .or_insert(bounds.last);
            Ok(Joining {
                first,
                bounds,
                members,
                members_total,
                read,
                since,
                history,
            })
        })
    }

    fn presence_leave(&self, room: &str, user: &str, node: &str) -> BoxFut<'_, bool> {
        let keys = vec![
            self.inner.names.room(room, &format!("pres:<{user}>")),
            self.inner.names.room(room, "members"),
        ];
        let args = vec![node.to_owned(), now_ms().to_string(), user.to_owned()];
        Box::pin(async move {
            Ok(to_u64(&self.inner.eval(&SCRIPTS.presence_leave, keys, args).await?) == 1)
        })
    }

    fn members(&self, room: &str) -> BoxFut<'_, Vec<String>> {
        let keys = vec![self.inner.names.room(room, "members")];
        Box::pin(async move {
            let a = into_array(
                self.inner
                    .eval(&SCRIPTS.members, keys, Vec::<String>::new())
                    .await?,
            )?;
            Ok(sorted_names(a))
        })
    }

    fn expire_presence(&self, rooms: Vec<String>) -> BoxFut<'_, Vec<(String, String)>> {
        Box::pin(async move {
            let names = &self.inner.names;
            let mut gone = Vec::new();
            // One round trip per chunk of rooms; each chunk's SMEMBERS and ZCOUNTs run in one script.
            for chunk in rooms.chunks(EXPIRE_PRESENCE_ROOMS_PER_CALL) {
                let keys = chunk.iter().map(|r| names.room(r, "members")).collect();
                let mut args = vec![now_ms().to_string()];
                args.extend(chunk.iter().map(|r| names.room(r, "pres:<")));
                args.push(">".to_owned());
                let a = into_array(
                    self.inner
                        .eval(&SCRIPTS.expire_presence, keys, args)
                        .await?,
                )?;
                let mut it = a.into_iter();
                while let (Some(i), Some(u)) = (it.next(), it.next()) {
                    let room = usize::try_from(to_u64(&i))
                        .ok()
                        .and_then(|i| chunk.get(i.checked_sub(1)?));
                    if let (Some(room), Some(u)) = (room, u.into_string()) {
                        gone.push((room.clone(), u));
                    }
                }
            }
            Ok(gone)
        })
    }

    fn refresh(
        &self,
        node: &str,
        rooms: Vec<(String, Vec<String>)>,
        users: Vec<String>,
    ) -> BoxFut<'_, ()> {
        let node = node.to_owned();
        Box::pin(async move {
            let expiry = (now_ms() + PRESENCE_TTL.as_millis() as u64) as f64;
            let ttl = PRESENCE_TTL.as_millis() as i64 * 2;
            use fred::interfaces::{KeysInterface, SetsInterface, SortedSetsInterface};
            let names = &self.inner.names;
            let mut batch = Batch::new(&self.inner.client);
            if self.inner.ttl_renewal_due() {
                let room_keys = rooms.iter().flat_map(|(room, _)| {
                    let log = names.room(room, "log");
                    [
                        names.room(room, "seq"),
                        names.room(room, "read"),
                        visible_key(&log),
                        log,
                    ]
                    .map(|k| (k, ROOM_TTL))
                });
                let user_keys = users.iter().flat_map(|u| {
                    let inbox = names.user(u, "inbox");
                    [
                        names.user(u, "dmseq"),
                        names.user(u, "dmcursor"),
                        visible_key(&inbox),
                        inbox,
                    ]
                    .map(|k| (k, INBOX_TTL))
                });
                for (key, ttl) in room_keys.chain(user_keys) {
                    let _: () = batch
                        .pipe
                        .expire(&key, ttl.as_secs() as i64, None)
                        .await
                        .map_err(unavailable)?;
                    batch.queued(1).await?;
                }
            }
            for (room, members) in &rooms {
                let _: () = batch
                    .pipe
                    .pexpire(names.room(room, "members"), ttl, None)
                    .await
                    .map_err(unavailable)?;
                batch.queued(1).await?;
                for u in members {
                    let k = self.inner.names.room(room, &format!("pres:<{u}>"));
                    let pipe = &batch.pipe;
                    let _: () = pipe
                        .zadd(&k, None, None, false, false, (expiry, node.as_str()))
                        .await
                        .map_err(unavailable)?;
                    let _: () = pipe.pexpire(&k, ttl, None).await.map_err(unavailable)?;
                    let _: () = pipe
                        .sadd(self.inner.names.room(room, "members"), u.as_str())
                        .await
                        .map_err(unavailable)?;
                    batch.queued(3).await?;
                }
            }
            for u in &users {
                let k = self.inner.names.user(u, "online");
                let pipe = &batch.pipe;
                let _: () = pipe
                    .zadd(&k, None, None, false, false, (expiry, node.as_str()))
                    .await
                    .map_err(unavailable)?;
                let _: () = pipe.pexpire(&k, ttl, None).await.map_err(unavailable)?;
                batch.queued(2).await?;
            }
            batch.send().await
        })
    }

    fn set_read(&self, room: &str, user: &str, seq: u64) -> BoxFut<'_, Option<u64>> {
        let log = self.inner.names.room(room, "log");
        let keys = vec![
            self.inner.names.room(room, "read"),
            self.inner.names.room(room, "seq"),
            visible_key(&log),
        ];
        let args = vec![
            seq.to_string(),
            user.to_owned(),
            READ_MARKERS_CAP.to_string(),
            self.inner.bounded().to_owned(),
            ROOM_TTL.as_secs().to_string(),
        ];
        Box::pin(async move {
            let stored = to_u64(&self.inner.eval(&SCRIPTS.set_read, keys, args).await?);
            Ok((stored > 0).then_some(stored))
        })
    }

    fn user_online(&self, user: &str, node: &str) -> BoxFut<'_, ()> {
        let k = self.inner.names.user(user, "online");
        let node = node.to_owned();
        Box::pin(async move {
            use fred::interfaces::{KeysInterface, SortedSetsInterface};
            let expiry = (now_ms() + PRESENCE_TTL.as_millis() as u64) as f64;
            let _: () = self
                .inner
                .client
                .zadd(&k, None, None, false, false, (expiry, node.as_str()))
                .await
                .map_err(unavailable)?;
            let _: () = self
                .inner
                .client
                .pexpire(&k, PRESENCE_TTL.as_millis() as i64 * 2, None)
                .await
                .map_err(unavailable)?;
            Ok(())
        })
    }

    fn user_offline(&self, user: &str, node: &str, ts: u64) -> BoxFut<'_, ()> {
        let k = self.inner.names.user(user, "online");
        let seen = self.inner.names.user(user, "lastseen");
        let node = node.to_owned();
        Box::pin(async move {
            use fred::interfaces::{KeysInterface, SortedSetsInterface};
            let _: () = self
                .inner
                .client
                .zrem(&k, node.as_str())
                .await
                .map_err(unavailable)?;
            let ttl = fred::types::Expiration::EX(LAST_SEEN_TTL.as_secs() as i64);
            let _: () = self
                .inner
                .client
                .set(&seen, ts.to_string(), Some(ttl), None, false)
                .await
                .map_err(unavailable)?;
            Ok(())
        })
    }

    fn last_seen(&self, users: Vec<String>) -> BoxFut<'_, BTreeMap<String, LastSeenEntry>> {
        let keys = vec![
            self.inner.names.keys.key("user:<"),
            ">:online".to_owned(),
            ">:lastseen".to_owned(),
        ];
        Box::pin(async move {
            let mut args = vec![now_ms().to_string()];
            args.extend(users.iter().cloned());
            let a = into_array(self.inner.eval(&SCRIPTS.last_seen, keys, args).await?)?;
            let mut out = BTreeMap::new();
            for (u, pair) in users.into_iter().zip(a.chunks(2)) {
                let online = pair.first().map_or(0, to_u64) > 0;
                let last_seen = pair
                    .get(1)
                    .and_then(|v| v.as_str())
                    .and_then(|s| s.parse().ok());
                out.insert(u, LastSeenEntry { online, last_seen });
            }
            Ok(out)
        })
    }

    fn acl_update(&self, room: &str, user: &str, allow: bool) -> BoxFut<'_, AclChange> {
        let key = self.inner.names.room(room, "acl");
        let user = user.to_owned();
        Box::pin(async move {
            use fred::interfaces::SetsInterface;
            let client = &self.inner.client;
            let changed: u64 = if allow {
                // Admin calls are rare; a race between two grants can pass the cap by one, no more.
                let listed: u64 = client.scard(&key).await.map_err(unavailable)?;
                if listed >= ROOM_ACL_CAP as u64 {
                    let present: bool = client.sismember(&key, &user).await.map_err(unavailable)?;
                    return Ok(if present {
                        AclChange::Unchanged
                    } else {
                        AclChange::Full
                    });
                }
                client.sadd(&key, &user).await.map_err(unavailable)?
            } else {
                client.srem(&key, &user).await.map_err(unavailable)?
            };
            Ok(if changed > 0 {
                AclChange::Changed
            } else {
                AclChange::Unchanged
            })
        })
    }

    fn acl_allows(&self, room: &str, user: &str) -> BoxFut<'_, bool> {
        let key = self.inner.names.room(room, "acl");
        let user = user.to_owned();
        Box::pin(async move {
            use fred::interfaces::SetsInterface;
            self.inner
                .client
                .sismember(&key, &user)
                .await
                .map_err(unavailable)
        })
    }

    fn acl_list(&self, room: &str) -> BoxFut<'_, Vec<String>> {
        let key = self.inner.names.room(room, "acl");
        Box::pin(async move {
            use fred::interfaces::SetsInterface;
            let mut users: Vec<String> = self
                .inner
                .client
                .smembers(&key)
                .await
                .map_err(unavailable)?;
            users.sort();
            Ok(users)
        })
    }

    fn note_contact(&self, a: &str, b: &str) -> BoxFut<'_, ()> {
        let pairs = [
            (self.inner.names.user(a, "contacts"), b.to_owned()),
            (self.inner.names.user(b, "contacts"), a.to_owned()),
        ];
        Box::pin(async move {
            use fred::interfaces::{KeysInterface, SortedSetsInterface};
            let pipe = self.inner.client.pipeline();
            let now = now_ms() as f64;
            for (key, peer) in &pairs {
                let _: () = pipe
                    .zadd(key, None, None, false, false, (now, peer.as_str()))
                    .await
                    .map_err(unavailable)?;
                // Keep the newest CONTACTS_CAP.
                let _: () = pipe
                    .zremrangebyrank(key, 0, -(CONTACTS_CAP as i64) - 1)
                    .await
                    .map_err(unavailable)?;
                let _: () = pipe
                    .expire(key, INBOX_TTL.as_secs() as i64, None)
                    .await
                    .map_err(unavailable)?;
            }
            let _: Vec<Value> = pipe.all().await.map_err(unavailable)?;
            Ok(())
        })
    }

    fn contacts_among(&self, user: &str, candidates: Vec<String>) -> BoxFut<'_, BTreeSet<String>> {
        let key = self.inner.names.user(user, "contacts");
        Box::pin(async move {
            use fred::interfaces::SortedSetsInterface;
            if candidates.is_empty() {
                return Ok(BTreeSet::new());
            }
            let scores: Vec<Option<f64>> = self
                .inner
                .client
                .zmscore(&key, candidates.clone())
                .await
                .map_err(unavailable)?;
            let since = now_ms().saturating_sub(INBOX_TTL.as_millis() as u64) as f64;
            Ok(candidates
                .into_iter()
                .zip(scores)
                .filter(|(_, score)| score.is_some_and(|s| s >= since))
                .map(|(c, _)| c)
                .collect())
        })
    }

    fn room_peers_among(
        &self,
        rooms: Vec<String>,
        candidates: Vec<String>,
    ) -> BoxFut<'_, BTreeSet<String>> {
        Box::pin(async move {
            use fred::interfaces::{SetsInterface, SortedSetsInterface};
            if rooms.is_empty() || candidates.is_empty() {
                return Ok(BTreeSet::new());
            }
            let names = &self.inner.names;
            let pipe = self.inner.client.pipeline();
            // The members set may still name someone whose presence just expired (the maintenance
            // sweep removes them): for visibility that is close enough.
            for room in &rooms {
                let _: () = pipe
                    .smismember(names.room(room, "members"), candidates.clone())
                    .await
                    .map_err(unavailable)?;
                let _: () = pipe
                    .zmscore(names.room(room, "read"), candidates.clone())
                    .await
                    .map_err(unavailable)?;
            }
            let replies: Vec<Value> = pipe.all().await.map_err(unavailable)?;
            let mut found = BTreeSet::new();
            for reply in replies {
                let Value::Array(flags) = reply else {
                    return Err(Error::Protocol(format!("SMISMEMBER/ZMSCORE: {reply:?}")));
                };
                for (candidate, flag) in candidates.iter().zip(flags) {
                    // SMISMEMBER answers 1/0, ZMSCORE a score or nil.
                    let hit = match flag {
                        Value::Null => false,
                        Value::Integer(n) => n > 0,
                        _ => true,
                    };
                    if hit {
                        found.insert(candidate.clone());
                    }
                }
            }
            Ok(found)
        })
    }

    fn records_get(&self, keys: Vec<String>) -> BoxFut<'_, Vec<Option<String>>> {
        let keys: Vec<String> = keys.iter().map(|k| self.inner.names.record(k)).collect();
        Box::pin(async move {
            use fred::interfaces::KeysInterface;
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            self.inner.client.mget(keys).await.map_err(unavailable)
        })
    }

    fn record_put(
        &self,
        key: &str,
        value: String,
        ttl: std::time::Duration,
        only_new: bool,
    ) -> BoxFut<'_, bool> {
        let key = self.inner.names.record(key);
        Box::pin(async move {
            use fred::interfaces::KeysInterface;
            use fred::types::{Expiration, SetOptions};
            let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
            let reply: Value = self
                .inner
                .client
                .set(
                    &key,
                    value,
                    Some(Expiration::PX(ms)),
                    only_new.then_some(SetOptions::NX),
                    false,
                )
                .await
                .map_err(unavailable)?;
            Ok(!reply.is_null())
        })
    }

    fn record_delete(&self, key: &str, only_if: Option<String>) -> BoxFut<'_, ()> {
        let key = self.inner.names.record(key);
        Box::pin(async move {
            use fred::interfaces::KeysInterface;
            match only_if {
                Some(value) => {
                    self.inner
                        .eval(&SCRIPTS.record_delete_if, vec![key], vec![value])
                        .await?;
                }
                None => {
                    let _: Value = self.inner.client.del(&key).await.map_err(unavailable)?;
                }
            }
            Ok(())
        })
    }

    fn due_put(&self, list: &str, member: &str, at: u64) -> BoxFut<'_, ()> {
        let key = self.inner.names.due(list);
        let member = member.to_owned();
        Box::pin(async move {
            use fred::interfaces::SortedSetsInterface;
            let _: Value = self
                .inner
                .client
                .zadd(&key, None, None, false, false, (at as f64, member.as_str()))
                .await
                .map_err(unavailable)?;
            Ok(())
        })
    }

    fn due_remove(&self, list: &str, member: &str) -> BoxFut<'_, ()> {
        let key = self.inner.names.due(list);
        let member = member.to_owned();
        Box::pin(async move {
            use fred::interfaces::SortedSetsInterface;
            let _: Value = self
                .inner
                .client
                .zrem(&key, member)
                .await
                .map_err(unavailable)?;
            Ok(())
        })
    }

    fn due_take(&self, list: &str, now: u64, limit: usize) -> BoxFut<'_, Vec<String>> {
        let key = self.inner.names.due(list);
        Box::pin(async move {
            let v = self
                .inner
                .eval(
                    &SCRIPTS.due_take,
                    vec![key],
                    vec![now.to_string(), limit.max(1).to_string()],
                )
                .await?;
            Ok(into_array(v)?
                .into_iter()
                .filter_map(|m| m.into_string())
                .collect())
        })
    }

    fn counter_add(
        &self,
        key: &str,
        delta: i64,
        cap: u64,
        window: std::time::Duration,
    ) -> BoxFut<'_, bool> {
        let key = self.inner.names.counter(key);
        Box::pin(async move {
            let v = self
                .inner
                .eval(
                    &SCRIPTS.counter_add,
                    vec![key],
                    vec![
                        delta.to_string(),
                        cap.to_string(),
                        window.as_millis().max(1).to_string(),
                    ],
                )
                .await?;
            Ok(to_u64(&v) == 1)
        })
    }

    fn healthy(&self) -> bool {
        self.inner.client.is_connected() && self.inner.subscriber.is_connected()
    }
}
