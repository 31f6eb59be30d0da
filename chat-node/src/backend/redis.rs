//! Scaled mode: history, inboxes, presence and delivery through Redis.
//!
//! Keys (all under the cluster prefix of [`switchboard_redis::keys::Keys`]; names are wrapped in `<…>`, which
//! names cannot contain, so no two keys collide):
//!
//! ```text
//! room:<r>:seq            string   last sequence of room r (INCR)
//! room:<r>:log            stream   the last history_cap messages, entry id "<seq>-1", field f = frame
//! room:<r>:log:visible    string   with --ack-replicas: highest sequence confirmed by replicas; reads stop there
//! room:<r>:cid:<u>:<cid>  string   "seq|id|ts" of a post, for idempotent resends (expires)
//! room:<r>:members        set      users present in r (pruned against pres)
//! room:<r>:pres:<u>       zset     node -> expiry ms: where user u is present in r
//! room:<r>:read           zset     user -> read marker
//! user:<u>:dmseq          string   last direct-message sequence of u
//! user:<u>:inbox          stream   direct messages to u (capped, expires 7 days after the last)
//! user:<u>:inbox:visible  string   as room:<r>:log:visible, for the inbox
//! user:<u>:cid:<from>:<cid> string idempotency of direct messages
//! user:<u>:online         zset     node -> expiry ms
//! dmcursor                zset     user -> direct-message sequence delivered up to
//! lastseen                hash     user -> ms of the last disconnect
//! ch:room:<r>, ch:user:<u>         pub/sub channels; payload "<seq> <frame>" (seq 0: unsequenced)
//! ```
//!
//! One script per post increments the sequence, appends to the stream and publishes, so each room has
//! one total order. Pub/sub is at-most-once, so the stream is the truth: the receiver remembers the
//! last sequence it dispatched per topic, fills any gap from the stream before dispatching, drops
//! duplicates, and re-checks every topic after a reconnect of the subscriber (failover) or a lag.

use super::{Backend, Bounds, BoxFut, Error, Post, Posted, Result, Stored};
use crate::config::{DEDUP_TTL, INBOX_CAP, INBOX_TTL, PRESENCE_TTL};
use crate::hub::{Hub, Topic};
use crate::protocol::{LastSeenEntry, now_ms};
use axum::extract::ws::Utf8Bytes;
use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface, ServerInterface};
use fred::types::Value;
use fred::types::scripts::Script;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::LazyLock;
use tokio::sync::Mutex;

const POST: &str = r#"
if ARGV[6] == '1' then
  local prev = redis.call('GET', KEYS[3])
  if prev then return {0, prev} end
end
local seq = redis.call('INCR', KEYS[1])
local t = redis.call('TIME')
local ts = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local frame = '{"type":"' .. ARGV[7] .. '","seq":' .. seq .. ',"id":"' .. ARGV[2] .. '","ts":' .. ts .. ',' .. ARGV[3]
local ok = redis.pcall('XADD', KEYS[2], 'MAXLEN', ARGV[4], seq .. '-1', 'f', frame)
if type(ok) == 'table' and ok.err then
  -- The counter fell behind the stream (e.g. lost in a failover): continue after the stream.
  local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  seq = tonumber(string.match(last[1][1], '^(%d+)')) + 1
  redis.call('SET', KEYS[1], seq)
  frame = '{"type":"' .. ARGV[7] .. '","seq":' .. seq .. ',"id":"' .. ARGV[2] .. '","ts":' .. ts .. ',' .. ARGV[3]
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], seq .. '-1', 'f', frame)
end
if ARGV[8] ~= '0' then redis.call('EXPIRE', KEYS[2], ARGV[8]) end
local result = seq .. '|' .. ARGV[2] .. '|' .. ts
if ARGV[6] == '1' then redis.call('SET', KEYS[3], result, 'EX', ARGV[5]) end
if ARGV[9] == '1' then
  redis.call('PUBLISH', ARGV[1], seq .. ' ' .. frame)
  return {1, result}
end
return {1, result, seq .. ' ' .. frame}
"#;

/// After `WAIT`: publish only if the entry is on the master we are talking to now. `WAIT` sent on a
/// connection opened after a failover confirms nothing about writes made through the old one; the
/// read-back does.
const CONFIRM: &str = r#"
local e = redis.call('XRANGE', KEYS[1], ARGV[1] .. '-1', ARGV[1] .. '-1')
if #e == 0 or string.find(e[1][2][2], '"id":"' .. ARGV[2] .. '"', 1, true) == nil then return 0 end
local visible = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) > visible then redis.call('SET', KEYS[2], ARGV[1]) end
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[4], ARGV[3]) end
return 1
"#;

// Reads take ARGV "bounded" = 1 when acks wait for replicas: then nothing above the log's "visible"
// mark (KEYS[2], the highest confirmed sequence) is shown, so no client sees a message a failover can take
// back and whose sequence could then be reused.
const RANGE_AFTER: &str = r#"
local top = '+'
if ARGV[3] == '1' then
  local upto = tonumber(redis.call('GET', KEYS[2]) or '0')
  if upto <= tonumber(ARGV[1]) then return {} end
  top = upto .. '-1'
end
local r = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1] .. '-1', top, 'COUNT', ARGV[2])
local out = {}
for _, e in ipairs(r) do out[#out + 1] = e[1]; out[#out + 1] = e[2][2] end
return out
"#;

const RANGE_BEFORE: &str = r#"
local top = '+'
if ARGV[1] ~= 'max' then top = '(' .. ARGV[1] .. '-1' end
if ARGV[3] == '1' then
  local upto = tonumber(redis.call('GET', KEYS[2]) or '0')
  if upto == 0 then return {} end
  if ARGV[1] == 'max' or upto < tonumber(ARGV[1]) then top = upto .. '-1' end
end
local r = redis.call('XREVRANGE', KEYS[1], top, '-', 'COUNT', ARGV[2])
local out = {}
for _, e in ipairs(r) do out[#out + 1] = e[1]; out[#out + 1] = e[2][2] end
return out
"#;

const BOUNDS: &str = r#"
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
if ARGV[1] == '1' then last = math.min(last, tonumber(redis.call('GET', KEYS[3]) or '0')) end
local first = 0
local r = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #r > 0 then first = tonumber(string.match(r[1][1], '^(%d+)')) end
return {first, last}
"#;

const DM_STATE: &str = r#"
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
if ARGV[2] == '1' then last = math.min(last, tonumber(redis.call('GET', KEYS[3]) or '0')) end
local cursor = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[1]) or '0')
return {last, cursor}
"#;

const ZADD_GT: &str = r#"
return redis.call('ZADD', KEYS[1], 'GT', 'CH', ARGV[1], ARGV[2])
"#;

const PRESENCE_JOIN: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local had = redis.call('ZCARD', KEYS[1])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('SADD', KEYS[2], ARGV[4])
if had == 0 then return 1 end
return 0
"#;

const PRESENCE_LEAVE: &str = r#"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[3])
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#;

const MEMBERS: &str = r#"
local out = {}
for _, u in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('ZCOUNT', ARGV[1] .. u .. ARGV[2], '(' .. ARGV[3], '+inf') > 0 then
    out[#out + 1] = u
  else
    redis.call('SREM', KEYS[1], u)
  end
end
return out
"#;

const LAST_SEEN: &str = r#"
local out = {}
for i, u in ipairs(ARGV) do
  if i > 1 then
    local online = redis.call('ZCOUNT', KEYS[1] .. u .. KEYS[2], '(' .. ARGV[1], '+inf')
    local seen = redis.call('HGET', KEYS[3], u)
    out[#out + 1] = online
    out[#out + 1] = seen or ''
  end
end
return out
"#;

const READ_MARKERS: &str = r#"
return redis.call('ZRANGE', KEYS[1], 0, 999, 'WITHSCORES')
"#;

struct Scripts {
    post: Script,
    confirm: Script,
    range_after: Script,
    range_before: Script,
    bounds: Script,
    dm_state: Script,
    zadd_gt: Script,
    presence_join: Script,
    presence_leave: Script,
    members: Script,
    last_seen: Script,
    read_markers: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    post: Script::from_lua(POST),
    confirm: Script::from_lua(CONFIRM),
    range_after: Script::from_lua(RANGE_AFTER),
    range_before: Script::from_lua(RANGE_BEFORE),
    bounds: Script::from_lua(BOUNDS),
    dm_state: Script::from_lua(DM_STATE),
    zadd_gt: Script::from_lua(ZADD_GT),
    presence_join: Script::from_lua(PRESENCE_JOIN),
    presence_leave: Script::from_lua(PRESENCE_LEAVE),
    members: Script::from_lua(MEMBERS),
    last_seen: Script::from_lua(LAST_SEEN),
    read_markers: Script::from_lua(READ_MARKERS),
});

fn unavailable(e: fred::error::Error) -> Error {
    Error::Unavailable(Box::new(e))
}

/// Key and channel names of one chat system.
#[derive(Clone, Debug)]
struct Names {
    keys: switchboard_redis::keys::Keys,
    room_channel_prefix: String,
    user_channel_prefix: String,
}

impl Names {
    fn new(keys: switchboard_redis::keys::Keys) -> Self {
        Self {
            room_channel_prefix: keys.key("ch:room:<"),
            user_channel_prefix: keys.key("ch:user:<"),
            keys,
        }
    }
    fn room(&self, room: &str, what: &str) -> String {
        self.keys.key(&format!("room:<{room}>:{what}"))
    }
    fn user(&self, user: &str, what: &str) -> String {
        self.keys.key(&format!("user:<{user}>:{what}"))
    }
    fn channel(&self, topic: &Topic) -> String {
        match topic {
            Topic::Room(r) => format!("{}{r}>", self.room_channel_prefix),
            Topic::User(u) => format!("{}{u}>", self.user_channel_prefix),
        }
    }
    fn topic_of(&self, channel: &str) -> Option<Topic> {
        if let Some(r) = channel.strip_prefix(&self.room_channel_prefix) {
            return r.strip_suffix('>').map(Topic::room);
        }
        channel
            .strip_prefix(&self.user_channel_prefix)
            .and_then(|u| u.strip_suffix('>'))
            .map(Topic::user)
    }
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
    /// Last sequence dispatched per topic; the receiver's memory for gap filling.
    cursors: Mutex<HashMap<Topic, u64>>,
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
            cursors: Mutex::new(HashMap::new()),
        });
        let rx_inner = inner.clone();
        tokio::spawn(
            async move { rx_inner.receive(shutdown).await }
                .instrument(tracing::info_span!("bus-receiver")),
        );
        Self { inner }
    }
}

use tracing::Instrument;

fn to_u64(v: &Value) -> u64 {
    match v {
        Value::Integer(i) => (*i).max(0) as u64,
        Value::Double(d) => d.max(0.0) as u64,
        other => other
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .map_or(0, |f| f.max(0.0) as u64),
    }
}

/// The key of a log's "visible" mark: the highest sequence confirmed by replicas (see `CONFIRM`).
fn visible_key(log: &str) -> String {
    format!("{log}:visible")
}

fn seq_of_id(id: &str) -> u64 {
    id.split('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn into_array(v: Value) -> Result<Vec<Value>> {
    match v {
        Value::Array(a) => Ok(a),
        Value::Null => Ok(Vec::new()),
        other => Err(Error::Protocol(format!(
            "expected an array, got {:?}",
            other.kind()
        ))),
    }
}

fn stored_pairs(v: Value) -> Result<Vec<Stored>> {
    let arr = into_array(v)?;
    let mut out = Vec::with_capacity(arr.len() / 2);
    let mut it = arr.into_iter();
    while let (Some(id), Some(frame)) = (it.next(), it.next()) {
        let seq = id.as_str().map(|s| seq_of_id(&s)).unwrap_or(0);
        let bytes = frame
            .into_bytes()
            .ok_or_else(|| Error::Protocol("history entry without a frame".into()))?;
        let frame = Utf8Bytes::try_from(bytes)
            .map_err(|_| Error::Protocol("history frame is not UTF-8".into()))?;
        out.push(Stored { seq, frame });
    }
    Ok(out)
}

fn parse_posted(v: Value) -> Result<(Posted, Option<bytes::Bytes>)> {
    let mut arr = into_array(v)?;
    let payload = if arr.len() > 2 {
        arr.pop().and_then(Value::into_bytes)
    } else {
        None
    };
    let fresh = arr.first().map(to_u64) == Some(1);
    let text = arr
        .get(1)
        .and_then(|v| v.as_str())
        .ok_or_else(|| Error::Protocol("post result without a body".into()))?;
    let mut parts = text.splitn(3, '|');
    let (Some(seq), Some(id), Some(ts)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Error::Protocol(format!("malformed post result {text:?}")));
    };
    let posted = Posted {
        seq: seq.parse().map_err(|_| Error::Protocol("bad seq".into()))?,
        id: id.to_owned(),
        ts: ts.parse().map_err(|_| Error::Protocol("bad ts".into()))?,
        duplicate: !fresh,
    };
    Ok((posted, payload))
}

impl Inner {
    async fn eval(&self, script: &Script, keys: Vec<String>, args: Vec<String>) -> Result<Value> {
        script
            .evalsha_with_reload::<Value, _, _>(&self.client, keys, args)
            .await
            .map_err(unavailable)
    }

    async fn post(&self, kind: &str, post: Post) -> Result<Posted> {
        let (seq_key, log_key, cid_key, channel, cap, expire) = if kind == "message" {
            let cid = post.client_id.as_deref().unwrap_or("");
            (
                self.names.room(&post.target, "seq"),
                self.names.room(&post.target, "log"),
                self.names
                    .room(&post.target, &format!("cid:<{}>:{cid}", post.from)),
                self.names.channel(&Topic::room(&post.target)),
                self.history_cap,
                0,
            )
        } else {
            let cid = post.client_id.as_deref().unwrap_or("");
            (
                self.names.user(&post.target, "dmseq"),
                self.names.user(&post.target, "inbox"),
                self.names
                    .user(&post.target, &format!("cid:<{}>:{cid}", post.from)),
                self.names.channel(&Topic::user(&post.target)),
                INBOX_CAP,
                INBOX_TTL.as_secs(),
            )
        };
        let has_cid = if post.client_id.is_some() { "1" } else { "0" };
        let replicas = self.durability.replicas;
        let publish_inside = if replicas == 0 { "1" } else { "0" };
        let v = self
            .eval(
                &SCRIPTS.post,
                vec![seq_key, log_key.clone(), cid_key],
                vec![
                    channel.clone(),
                    post.id,
                    post.tail,
                    cap.to_string(),
                    DEDUP_TTL.as_secs().to_string(),
                    has_cid.into(),
                    kind.into(),
                    expire.to_string(),
                    publish_inside.into(),
                ],
            )
            .await?;
        let (posted, payload) = parse_posted(v)?;
        if replicas == 0 {
            return Ok(posted);
        }
        // Publish and ack only what replicas hold, so no client ever sees a message a failover can
        // take back. Publishes of one room from several nodes may now arrive out of order; receivers
        // fill gaps from the stream and drop what they already have. A post that is stored but not
        // confirmed stays unpublished: the client resends the same client_id, which finds it.
        let confirmed: i64 = self
            .client
            .wait(
                i64::from(replicas),
                self.durability.timeout.as_millis() as i64,
            )
            .await
            .map_err(unavailable)?;
        if confirmed < i64::from(replicas) {
            return Err(Error::NotDurable {
                wanted: replicas,
                confirmed: confirmed.max(0) as u32,
            });
        }
        // A duplicate's original may never have been published (its WAIT fell short): publish it now;
        // receivers drop sequences they already have.
        let payload = match payload {
            Some(p) => String::from_utf8(p.to_vec())
                .map_err(|_| Error::Protocol("frame is not UTF-8".into()))?,
            None => self
                .range_after(log_key.clone(), posted.seq.saturating_sub(1), 1, false)
                .await?
                .into_iter()
                .find(|f| f.seq == posted.seq)
                .map(|f| format!("{} {}", f.seq, f.frame.as_str()))
                .unwrap_or_default(),
        };
        let on_master = self
            .eval(
                &SCRIPTS.confirm,
                vec![log_key.clone(), visible_key(&log_key)],
                vec![posted.seq.to_string(), posted.id.clone(), payload, channel],
            )
            .await?;
        if to_u64(&on_master) != 1 {
            return Err(Error::NotDurable {
                wanted: replicas,
                confirmed: 0,
            });
        }
        Ok(posted)
    }

    /// True when reads must stop at the confirmed ("visible") mark.
    fn bounded(&self) -> &'static str {
        if self.durability.replicas > 0 {
            "1"
        } else {
            "0"
        }
    }

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

    fn log_of(&self, topic: &Topic) -> String {
        match topic {
            Topic::Room(r) => self.names.room(r, "log"),
            Topic::User(u) => self.names.user(u, "inbox"),
        }
    }

    /// Dispatches one sequenced event, filling a gap from the stream first and dropping duplicates.
    async fn dispatch_sequenced(
        &self,
        cursors: &mut HashMap<Topic, u64>,
        topic: Topic,
        seq: u64,
        frame: Utf8Bytes,
    ) {
        let last = cursors.get(&topic).copied();
        match last {
            Some(l) if seq <= l => return,
            Some(l) if seq > l + 1 => {
                match self
                    .range_after(self.log_of(&topic), l, (seq - l - 1) as usize, true)
                    .await
                {
                    Ok(missing) => {
                        for m in missing.into_iter().filter(|m| m.seq > l && m.seq < seq) {
                            self.hub.dispatch(&topic, m.seq, &m.frame);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "could not fill a gap from history"),
                }
            }
            _ => {}
        }
        self.hub.dispatch(&topic, seq, &frame);
        cursors.insert(topic, seq);
    }

    /// After a reconnect or lag: deliver whatever was published while we were not listening.
    async fn catch_up(&self, cursors: &mut HashMap<Topic, u64>) {
        cursors.retain(|t, _| self.hub.has_listeners(t));
        let topics: Vec<(Topic, u64)> = cursors.iter().map(|(t, s)| (t.clone(), *s)).collect();
        for (topic, last) in topics {
            match self
                .range_after(
                    self.log_of(&topic),
                    last,
                    self.history_cap.max(INBOX_CAP),
                    true,
                )
                .await
            {
                Ok(missing) => {
                    for m in missing {
                        self.hub.dispatch(&topic, m.seq, &m.frame);
                        cursors.insert(topic.clone(), m.seq);
                    }
                }
                Err(e) => tracing::warn!(error = %e, topic = ?topic, "catch-up failed"),
            }
        }
    }

    async fn receive(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut messages = self.subscriber.message_rx();
        let mut reconnects = self.subscriber.reconnect_rx();
        let mut sweep = tokio::time::interval(std::time::Duration::from_secs(30));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = sweep.tick() => {
                    self.cursors.lock().await.retain(|t, _| self.hub.has_listeners(t));
                }
                r = reconnects.recv() => {
                    if r.is_err() && matches!(r, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                        return;
                    }
                    tracing::info!("bus reconnected; catching up from history");
                    let mut cursors = self.cursors.lock().await;
                    self.catch_up(&mut cursors).await;
                }
                m = messages.recv() => match m {
                    Ok(msg) => {
                        let Some(topic) = self.names.topic_of(&msg.channel) else { continue };
                        let Some(bytes) = msg.value.into_bytes() else { continue };
                        let Some(space) = bytes.iter().position(|b| *b == b' ') else { continue };
                        let seq: u64 = std::str::from_utf8(&bytes[..space]).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
                        let Ok(frame) = Utf8Bytes::try_from(bytes.slice(space + 1..)) else { continue };
                        if seq == 0 {
                            self.hub.dispatch(&topic, 0, &frame);
                        } else {
                            let mut cursors = self.cursors.lock().await;
                            self.dispatch_sequenced(&mut cursors, topic, seq, frame).await;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "bus receiver lagged; catching up from history");
                        let mut cursors = self.cursors.lock().await;
                        self.catch_up(&mut cursors).await;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    }
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

    fn subscribe(&self, topic: Topic) -> BoxFut<'_, ()> {
        Box::pin(async move {
            self.inner
                .subscriber
                .subscribe(self.inner.names.channel(&topic))
                .await
                .map_err(unavailable)?;
            // Everything stored before this point is history; everything after arrives live (or is
            // filled from the stream when a later sequence shows a gap).
            let last = match &topic {
                Topic::Room(r) => self.bounds(r).await?.last,
                Topic::User(u) => self.dm_state(u).await?.0,
            };
            self.inner
                .cursors
                .lock()
                .await
                .entry(topic)
                .and_modify(|c| *c = (*c).max(last))
                .or_insert(last);
            Ok(())
        })
    }

    fn unsubscribe(&self, topic: Topic) -> BoxFut<'_, ()> {
        Box::pin(async move {
            self.inner
                .subscriber
                .unsubscribe(self.inner.names.channel(&topic))
                .await
                .map_err(unavailable)?;
            self.inner.cursors.lock().await.remove(&topic);
            Ok(())
        })
    }

    fn bounds(&self, room: &str) -> BoxFut<'_, Bounds> {
        let log = self.inner.names.room(room, "log");
        let keys = vec![
            self.inner.names.room(room, "seq"),
            log.clone(),
            visible_key(&log),
        ];
        let args = vec![self.inner.bounded().to_owned()];
        Box::pin(async move {
            let a = into_array(self.inner.eval(&SCRIPTS.bounds, keys, args).await?)?;
            Ok(Bounds {
                first: a.first().map_or(0, to_u64),
                last: a.get(1).map_or(0, to_u64),
            })
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

    fn dm_state(&self, user: &str) -> BoxFut<'_, (u64, u64)> {
        let keys = vec![
            self.inner.names.user(user, "dmseq"),
            self.inner.names.keys.key("dmcursor"),
            visible_key(&self.inner.names.user(user, "inbox")),
        ];
        let args = vec![user.to_owned(), self.inner.bounded().to_owned()];
        Box::pin(async move {
            let a = into_array(self.inner.eval(&SCRIPTS.dm_state, keys, args).await?)?;
            Ok((a.first().map_or(0, to_u64), a.get(1).map_or(0, to_u64)))
        })
    }

    fn dm_delivered(&self, user: &str, seq: u64) -> BoxFut<'_, ()> {
        let keys = vec![self.inner.names.keys.key("dmcursor")];
        let args = vec![seq.to_string(), user.to_owned()];
        Box::pin(async move {
            self.inner.eval(&SCRIPTS.zadd_gt, keys, args).await?;
            Ok(())
        })
    }

    fn presence_join(&self, room: &str, user: &str, node: &str) -> BoxFut<'_, bool> {
        let keys = vec![
            self.inner.names.room(room, &format!("pres:<{user}>")),
            self.inner.names.room(room, "members"),
        ];
        let now = now_ms();
        let ttl = PRESENCE_TTL.as_millis() as u64;
        let args = vec![
            node.to_owned(),
            now.to_string(),
            (now + ttl).to_string(),
            user.to_owned(),
            (ttl * 2).to_string(),
        ];
        Box::pin(async move {
            Ok(to_u64(&self.inner.eval(&SCRIPTS.presence_join, keys, args).await?) == 1)
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
        let args = vec![
            self.inner.names.room(room, "pres:<"),
            ">".to_owned(),
            now_ms().to_string(),
        ];
        Box::pin(async move {
            let a = into_array(self.inner.eval(&SCRIPTS.members, keys, args).await?)?;
            let mut users: Vec<String> = a.into_iter().filter_map(|v| v.into_string()).collect();
            users.sort();
            Ok(users)
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
            let pipe = self.inner.client.pipeline();
            use fred::interfaces::{KeysInterface, SetsInterface, SortedSetsInterface};
            for (room, members) in &rooms {
                for u in members {
                    let k = self.inner.names.room(room, &format!("pres:<{u}>"));
                    let _: () = pipe
                        .zadd(&k, None, None, false, false, (expiry, node.as_str()))
                        .await
                        .map_err(unavailable)?;
                    let _: () = pipe.pexpire(&k, ttl, None).await.map_err(unavailable)?;
                    let _: () = pipe
                        .sadd(self.inner.names.room(room, "members"), u.as_str())
                        .await
                        .map_err(unavailable)?;
                }
            }
            for u in &users {
                let k = self.inner.names.user(u, "online");
                let _: () = pipe
                    .zadd(&k, None, None, false, false, (expiry, node.as_str()))
                    .await
                    .map_err(unavailable)?;
                let _: () = pipe.pexpire(&k, ttl, None).await.map_err(unavailable)?;
            }
            let _: Vec<Value> = pipe.all().await.map_err(unavailable)?;
            Ok(())
        })
    }

    fn set_read(&self, room: &str, user: &str, seq: u64) -> BoxFut<'_, bool> {
        let keys = vec![self.inner.names.room(room, "read")];
        let args = vec![seq.to_string(), user.to_owned()];
        Box::pin(
            async move { Ok(to_u64(&self.inner.eval(&SCRIPTS.zadd_gt, keys, args).await?) == 1) },
        )
    }

    fn read_markers(&self, room: &str) -> BoxFut<'_, BTreeMap<String, u64>> {
        let keys = vec![self.inner.names.room(room, "read")];
        Box::pin(async move {
            let a = into_array(self.inner.eval(&SCRIPTS.read_markers, keys, vec![]).await?)?;
            let mut out = BTreeMap::new();
            let mut it = a.into_iter();
            while let (Some(u), Some(s)) = (it.next(), it.next()) {
                if let Some(u) = u.into_string() {
                    out.insert(u, to_u64(&s));
                }
            }
            Ok(out)
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
        let seen = self.inner.names.keys.key("lastseen");
        let (user, node) = (user.to_owned(), node.to_owned());
        Box::pin(async move {
            use fred::interfaces::{HashesInterface, SortedSetsInterface};
            let _: () = self
                .inner
                .client
                .zrem(&k, node.as_str())
                .await
                .map_err(unavailable)?;
            let _: () = self
                .inner
                .client
                .hset(&seen, (user.as_str(), ts.to_string()))
                .await
                .map_err(unavailable)?;
            Ok(())
        })
    }

    fn last_seen(&self, users: Vec<String>) -> BoxFut<'_, BTreeMap<String, LastSeenEntry>> {
        let keys = vec![
            self.inner.names.keys.key("user:<"),
            ">:online".to_owned(),
            self.inner.names.keys.key("lastseen"),
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

    fn healthy(&self) -> bool {
        self.inner.client.is_connected() && self.inner.subscriber.is_connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_round_trip_and_never_collide() {
        let n = Names::new(switchboard_redis::keys::Keys::new("ns/demo"));
        for t in [Topic::room("a:b"), Topic::user("alice"), Topic::room("x")] {
            assert_eq!(n.topic_of(&n.channel(&t)), Some(t));
        }
        assert_ne!(n.room("a:cid:u", "seq"), n.room("a", "cid:<u>:seq"));
    }

    #[test]
    fn post_results_parse() {
        let v = Value::Array(vec![Value::Integer(0), Value::String("7|abc|123".into())]);
        assert_eq!(
            parse_posted(v).ok(),
            Some((
                Posted {
                    seq: 7,
                    id: "abc".into(),
                    ts: 123,
                    duplicate: true
                },
                None
            ))
        );
        assert_eq!(seq_of_id("42-1"), 42);
    }
}
