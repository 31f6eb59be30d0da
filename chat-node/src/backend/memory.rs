//! In-process store and bus for standalone mode: everything lives in one mutex-guarded state and
//! events are dispatched to the hub while the state is locked, which gives each room one order.
//!
//! Everything a client can create is bounded, as in Redis mode:
//!
//! | what | bound |
//! |---|---|
//! | room (history, sequence, read markers) | `history_cap` messages, [`READ_MARKERS_CAP`] markers; forgotten [`ROOM_TTL`] after its last message, or when more than [`STANDALONE_ROOMS`] exist (least recently used first) — never while someone on this node is in it |
//! | inbox | [`INBOX_CAP`] messages; forgotten [`INBOX_TTL`] after its last message or beyond [`STANDALONE_INBOXES`] — never while its user is connected |
//! | delivery cursor, last-seen | [`INBOX_TTL`] / [`LAST_SEEN_TTL`], at most [`STANDALONE_USERS`] each |
//! | presence, online | removed when the session leaves |
//! | direct-message contacts (last-seen visibility) | [`CONTACTS_CAP`] per user, each [`INBOX_TTL`] after the last message between the two; at most [`STANDALONE_USERS`] users |
//! | room ACLs (made by an admin) | [`ROOM_ACL_CAP`] users per room, [`STANDALONE_ACL_ROOMS`] rooms; a grant beyond either is refused, never evicted |
//!
//! All rooms and inboxes together hold at most [`STANDALONE_STORE_BYTES`] of messages and resend
//! records; beyond it the least recently used that nobody on this node listens to are forgotten.
//! Expiry runs at most once every [`SWEEP_EVERY`], from the calls that add state.
//!
//! [`STANDALONE_STORE_BYTES`]: crate::config::STANDALONE_STORE_BYTES
//!
//! [`READ_MARKERS_CAP`]: crate::config::READ_MARKERS_CAP
//! [`ROOM_TTL`]: crate::config::ROOM_TTL
//! [`STANDALONE_ROOMS`]: crate::config::STANDALONE_ROOMS
//! [`INBOX_CAP`]: crate::config::INBOX_CAP
//! [`INBOX_TTL`]: crate::config::INBOX_TTL
//! [`STANDALONE_INBOXES`]: crate::config::STANDALONE_INBOXES
//! [`LAST_SEEN_TTL`]: crate::config::LAST_SEEN_TTL
//! [`STANDALONE_USERS`]: crate::config::STANDALONE_USERS
//! [`CONTACTS_CAP`]: crate::config::CONTACTS_CAP
//! [`ROOM_ACL_CAP`]: crate::config::ROOM_ACL_CAP
//! [`STANDALONE_ACL_ROOMS`]: crate::config::STANDALONE_ACL_ROOMS

use super::{AclChange, Backend, Bounds, BoxFut, DmState, Joining, Post, Posted, Stored};
use crate::config::{
    CONTACTS_CAP, INBOX_TTL, LAST_SEEN_TTL, READ_MARKERS_CAP, ROOM_ACL_CAP, ROOM_TTL,
    STANDALONE_ACL_ROOMS, STANDALONE_INBOXES, STANDALONE_ROOMS, STANDALONE_STORE_BYTES,
    STANDALONE_USERS,
};
use crate::hub::{Hub, Topic};
use crate::protocol::{LastSeenEntry, splice_message};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;
use tungstenite::Utf8Bytes;

/// Idempotency keys remembered per room or inbox, as a multiple of the history cap.
const DEDUP_FACTOR: usize = 4;
/// What one remembered idempotency key costs besides its strings (map and queue slots, the record).
const DEDUP_OVERHEAD: usize = 96;
/// How often expired rooms, inboxes and users are looked for.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

struct Log {
    last: u64,
    entries: VecDeque<Stored>,
    dedup: HashMap<(String, String), Posted>,
    dedup_order: VecDeque<(String, String)>,
    /// Read markers (rooms only), at most [`READ_MARKERS_CAP`].
    read: BTreeMap<String, u64>,
    /// Last message (or creation).
    touched: Instant,
    /// Bytes of the kept frames and idempotency records (about).
    bytes: usize,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            last: 0,
            entries: VecDeque::new(),
            dedup: HashMap::new(),
            dedup_order: VecDeque::new(),
            read: BTreeMap::new(),
            touched: Instant::now(),
            bytes: 0,
        }
    }
}

impl Log {
    fn append(&mut self, kind: &str, post: &Post, cap: usize) -> (Posted, Option<Utf8Bytes>) {
        let key = post.client_id.clone().map(|c| (post.from.clone(), c));
        if let Some(prev) = key.as_ref().and_then(|k| self.dedup.get(k)) {
            let mut p = prev.clone();
            p.duplicate = true;
            return (p, None);
        }
        self.last += 1;
        self.touched = Instant::now();
        let ts = crate::protocol::now_ms();
        let frame = Utf8Bytes::from(splice_message(kind, self.last, &post.id, ts, &post.tail));
        self.bytes += frame.len();
        self.entries.push_back(Stored {
            seq: self.last,
            frame: frame.clone(),
        });
        while self.entries.len() > cap {
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= old.frame.len();
            }
        }
        let posted = Posted {
            seq: self.last,
            id: post.id.clone(),
            ts,
            duplicate: false,
        };
        if let Some(k) = key {
            let cost = |k: &(String, String)| 2 * (k.0.len() + k.1.len()) + DEDUP_OVERHEAD;
            self.bytes += cost(&k) + posted.id.len();
            self.dedup.insert(k.clone(), posted.clone());
            self.dedup_order.push_back(k);
            while self.dedup_order.len() > cap * DEDUP_FACTOR {
                if let Some(old) = self.dedup_order.pop_front()
                    && let Some(p) = self.dedup.remove(&old)
                {
                    self.bytes -= cost(&old) + p.id.len();
                }
            }
        }
        (posted, Some(frame))
    }

    fn after(&self, after: u64, limit: usize) -> Vec<Stored> {
        self.entries
            .iter()
            .filter(|s| s.seq > after)
            .take(limit)
            .cloned()
            .collect()
    }

    /// Moves `user`'s marker up to `seq` (never past the newest message); the stored value if it
    /// moved. Beyond [`READ_MARKERS_CAP`] the least advanced marker goes.
    fn set_read(&mut self, user: &str, seq: u64) -> Option<u64> {
        let seq = seq.min(self.last);
        let marker = self.read.entry(user.to_owned()).or_default();
        if seq <= *marker {
            return None;
        }
        *marker = seq;
        if self.read.len() > READ_MARKERS_CAP
            && let Some(least) = self
                .read
                .iter()
                .min_by_key(|(_, s)| **s)
                .map(|(u, _)| u.clone())
        {
            self.read.remove(&least);
        }
        Some(seq)
    }
}

/// A value and when it was last written.
struct Stamped<T> {
    value: T,
    at: Instant,
}

impl<T> Stamped<T> {
    fn now(value: T) -> Self {
        Self {
            value,
            at: Instant::now(),
        }
    }
}

struct State {
    rooms: HashMap<String, Log>,
    inboxes: HashMap<String, Log>,
    dm_cursor: HashMap<String, Stamped<u64>>,
    presence: HashMap<String, BTreeMap<String, BTreeSet<String>>>,
    online: HashMap<String, BTreeSet<String>>,
    last_seen: HashMap<String, Stamped<u64>>,
    /// user -> correspondent -> when they last exchanged a direct message.
    contacts: HashMap<String, Stamped<HashMap<String, Instant>>>,
    /// Private room -> users an admin let in.
    acl: HashMap<String, BTreeSet<String>>,
    last_sweep: Instant,
    /// Bytes of every room and inbox ([`Log::bytes`]).
    bytes: usize,
    /// What `bytes` may reach ([`STANDALONE_STORE_BYTES`]).
    budget: usize,
}

impl Default for State {
    fn default() -> Self {
        Self {
            rooms: HashMap::new(),
            inboxes: HashMap::new(),
            dm_cursor: HashMap::new(),
            presence: HashMap::new(),
            online: HashMap::new(),
            last_seen: HashMap::new(),
            contacts: HashMap::new(),
            acl: HashMap::new(),
            last_sweep: Instant::now(),
            bytes: 0,
            budget: STANDALONE_STORE_BYTES,
        }
    }
}

/// Drops entries of `map` beyond `cap` — the oldest by `at`, and a tenth more so the next inserts
/// do not scan again — except those `keep` says are in use.
fn evict_beyond<K: Eq + Hash + Clone, V>(
    map: &mut HashMap<K, V>,
    cap: usize,
    at: impl Fn(&V) -> Instant,
    keep: impl Fn(&K) -> bool,
) {
    if map.len() <= cap {
        return;
    }
    let excess = map.len() - cap + cap / 10;
    let mut candidates: Vec<(Instant, K)> = map
        .iter()
        .filter(|(k, _)| !keep(k))
        .map(|(k, v)| (at(v), k.clone()))
        .collect();
    candidates.sort_by_key(|(t, _)| *t);
    for (_, k) in candidates.into_iter().take(excess) {
        map.remove(&k);
    }
}

impl State {
    /// Forgets what expired, at most once every [`SWEEP_EVERY`].
    fn sweep(&mut self, hub: &Hub) {
        let now = Instant::now();
        if now.duration_since(self.last_sweep) < SWEEP_EVERY {
            return;
        }
        self.last_sweep = now;
        let alive = |at: Instant, ttl: Duration| now.duration_since(at) < ttl;
        self.rooms.retain(|r, l| {
            alive(l.touched, ROOM_TTL) || hub.has_listeners(&Topic::Room(Arc::from(r.as_str())))
        });
        self.inboxes.retain(|u, l| {
            alive(l.touched, INBOX_TTL) || hub.has_listeners(&Topic::User(Arc::from(u.as_str())))
        });
        self.dm_cursor.retain(|_, c| alive(c.at, INBOX_TTL));
        self.last_seen.retain(|_, s| alive(s.at, LAST_SEEN_TTL));
        self.contacts.retain(|_, c| alive(c.at, INBOX_TTL));
        self.recount();
    }

    fn recount(&mut self) {
        self.bytes = self
            .rooms
            .values()
            .chain(self.inboxes.values())
            .map(|l| l.bytes)
            .sum();
    }

    /// Appends `post` to the log of `post.target` (a room or an inbox) and keeps the store within
    /// [`STANDALONE_STORE_BYTES`]: the least recently used logs nobody here listens to go first.
    fn append(
        &mut self,
        kind: &str,
        post: &Post,
        cap: usize,
        hub: &Hub,
    ) -> (Posted, Option<Utf8Bytes>) {
        self.sweep(hub);
        let (map, count, topic): (_, _, fn(&str) -> Topic) = if kind == "message" {
            (&mut self.rooms, STANDALONE_ROOMS, Topic::room)
        } else {
            (&mut self.inboxes, STANDALONE_INBOXES, Topic::user)
        };
        let evicting = !map.contains_key(&post.target) && map.len() >= count;
        let log = State::log(map, &post.target, count, hub, topic);
        let before = log.bytes;
        let appended = log.append(kind, post, cap);
        let after = log.bytes;
        if evicting {
            self.recount();
        } else {
            self.bytes = self.bytes + after - before;
        }
        if self.bytes > self.budget {
            self.shed(hub);
        }
        appended
    }

    /// Forgets the least recently used rooms and inboxes nobody here listens to until the store is
    /// a tenth below its byte budget.
    fn shed(&mut self, hub: &Hub) {
        let mut candidates: Vec<(Instant, bool, String)> = self
            .rooms
            .iter()
            .filter(|(r, _)| !hub.has_listeners(&Topic::room(r)))
            .map(|(r, l)| (l.touched, true, r.clone()))
            .chain(
                self.inboxes
                    .iter()
                    .filter(|(u, _)| !hub.has_listeners(&Topic::user(u)))
                    .map(|(u, l)| (l.touched, false, u.clone())),
            )
            .collect();
        candidates.sort();
        let target = self.budget / 10 * 9;
        for (_, room, name) in candidates {
            if self.bytes <= target {
                break;
            }
            let map = if room {
                &mut self.rooms
            } else {
                &mut self.inboxes
            };
            if let Some(log) = map.remove(&name) {
                self.bytes -= log.bytes;
            }
        }
    }

    /// The log of `name` in `map` (rooms or inboxes), made if new — forgetting the least recently
    /// used ones beyond `cap` that nobody on this node listens to.
    fn log<'a>(
        map: &'a mut HashMap<String, Log>,
        name: &str,
        cap: usize,
        hub: &Hub,
        topic: fn(&str) -> Topic,
    ) -> &'a mut Log {
        if !map.contains_key(name) {
            evict_beyond(
                map,
                cap.saturating_sub(1),
                |l| l.touched,
                |n| hub.has_listeners(&topic(n)),
            );
        }
        map.entry(name.to_owned()).or_default()
    }
}

/// The standalone store and bus.
pub struct MemoryBackend {
    state: Mutex<State>,
    records: Mutex<Records>,
    hub: Arc<Hub>,
    history_cap: usize,
    inbox_cap: usize,
}

impl MemoryBackend {
    /// The room's kept sequence range.
    fn bounds(&self, room: &str) -> Bounds {
        self.lock()
            .rooms
            .get(room)
            .map_or(Bounds::default(), |l| Bounds {
                first: l.entries.front().map_or(0, |s| s.seq),
                last: l.last,
            })
    }

    /// Every read marker of a room.
    fn read_markers(&self, room: &str) -> BTreeMap<String, u64> {
        self.lock()
            .rooms
            .get(room)
            .map(|l| l.read.clone())
            .unwrap_or_default()
    }

    /// A store delivering into `hub`, keeping `history_cap` messages per room.
    pub fn new(hub: Arc<Hub>, history_cap: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            records: Mutex::new(Records::default()),
            hub,
            history_cap: history_cap.max(1),
            inbox_cap: crate::config::INBOX_CAP,
        }
    }

    /// The same store holding at most `bytes` of messages (instead of [`STANDALONE_STORE_BYTES`]).
    pub fn with_store_bytes(self, bytes: usize) -> Self {
        self.lock().budget = bytes;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn records(&self) -> MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Records of node features a standalone node keeps at most (attachments: ten per message at most,
/// so this is tens of thousands of messages with files); beyond it expired ones go, then new ones are
/// refused (the store reports itself unavailable for them, nothing is evicted silently).
pub const STANDALONE_RECORDS: usize = 200_000;

/// Records, due lists and counters of [`Backend::records_get`] and its siblings.
#[derive(Default)]
struct Records {
    values: HashMap<String, (String, Instant)>,
    due: HashMap<String, BTreeMap<String, u64>>,
    counters: HashMap<String, (u64, Instant)>,
}

impl Records {
    fn live(&self, key: &str) -> Option<&String> {
        self.values
            .get(key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(v, _)| v)
    }

    fn room_for_one(&mut self) -> bool {
        if self.values.len() < STANDALONE_RECORDS {
            return true;
        }
        let now = Instant::now();
        self.values.retain(|_, (_, until)| *until > now);
        self.counters.retain(|_, (_, until)| *until > now);
        self.values.len() < STANDALONE_RECORDS
    }
}

fn records_full() -> super::Error {
    super::Error::Unavailable(Box::new(std::io::Error::other(format!(
        "a standalone node keeps at most {STANDALONE_RECORDS} attachment records"
    ))))
}

fn ready<'a, T: Send + 'a>(v: T) -> BoxFut<'a, T> {
    Box::pin(std::future::ready(Ok(v)))
}

impl Backend for MemoryBackend {
    fn post(&self, post: Post) -> BoxFut<'_, Posted> {
        let mut st = self.lock();
        let (posted, frame) = st.append("message", &post, self.history_cap, &self.hub);
        if let Some(frame) = frame {
            self.hub
                .dispatch(&Topic::room(&post.target), posted.seq, &frame);
        }
        drop(st);
        ready(posted)
    }

    fn send_dm(&self, post: Post) -> BoxFut<'_, Posted> {
        let mut st = self.lock();
        let (posted, frame) = st.append("dm", &post, self.inbox_cap, &self.hub);
        if let Some(frame) = frame {
            self.hub
                .dispatch(&Topic::user(&post.target), posted.seq, &frame);
        }
        drop(st);
        ready(posted)
    }

    fn publish(&self, topic: Topic, frame: Utf8Bytes) -> BoxFut<'_, ()> {
        let _order = self.lock();
        self.hub.dispatch(&topic, 0, &frame);
        ready(())
    }

    fn subscribe(&self, _topic: Topic) -> BoxFut<'_, Option<DmState>> {
        ready(None)
    }

    fn unsubscribe(&self, _topic: Topic) -> BoxFut<'_, ()> {
        ready(())
    }

    fn history_after(&self, room: &str, after: u64, limit: usize) -> BoxFut<'_, Vec<Stored>> {
        let v = self
            .lock()
            .rooms
            .get(room)
            .map(|l| l.after(after, limit))
            .unwrap_or_default();
        ready(v)
    }

    fn history_before(&self, room: &str, before: u64, limit: usize) -> BoxFut<'_, Vec<Stored>> {
        let st = self.lock();
        let mut v: Vec<Stored> = st
            .rooms
            .get(room)
            .map(|l| {
                l.entries
                    .iter()
                    .rev()
                    .filter(|s| s.seq < before)
                    .take(limit)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        v.reverse();
        ready(v)
    }

    fn dms_after(&self, user: &str, after: u64, limit: usize) -> BoxFut<'_, Vec<Stored>> {
        let v = self
            .lock()
            .inboxes
            .get(user)
            .map(|l| l.after(after, limit))
            .unwrap_or_default();
        ready(v)
    }

    fn dm_state(&self, user: &str) -> BoxFut<'_, DmState> {
        let st = self.lock();
        let last = st.inboxes.get(user).map_or(0, |l| l.last);
        let cursor = st.dm_cursor.get(user).map_or(0, |c| c.value);
        ready(DmState {
            last,
            counter: last,
            cursor,
        })
    }

    fn dm_delivered(&self, user: &str, seq: u64) -> BoxFut<'_, ()> {
        let mut st = self.lock();
        st.sweep(&self.hub);
        let before = st.dm_cursor.get(user).map_or(0, |c| c.value);
        st.dm_cursor
            .insert(user.to_owned(), Stamped::now(before.max(seq)));
        evict_beyond(&mut st.dm_cursor, STANDALONE_USERS, |c| c.at, |_| false);
        ready(())
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
        let first = {
            let mut st = self.lock();
            let nodes = st
                .presence
                .entry(room.to_owned())
                .or_default()
                .entry(user.to_owned())
                .or_default();
            let first = nodes.is_empty();
            nodes.insert(node.to_owned());
            first
        };
        Box::pin(async move {
            let bounds = self.bounds(room);
            let mut members = self.members(room).await?;
            let members_total = members.len();
            if !list {
                members.clear();
            }
            let since = since.map(|s| if s > bounds.last { 0 } else { s });
            let history = match since {
                Some(s) => self.history_after(room, s, chunk).await?,
                None => Vec::new(),
            };
            Ok(Joining {
                first,
                bounds,
                members,
                members_total,
                read: self.read_markers(room),
                since,
                history,
            })
        })
    }

    fn presence_leave(&self, room: &str, user: &str, node: &str) -> BoxFut<'_, bool> {
        let mut st = self.lock();
        let mut last = false;
        if let Some(users) = st.presence.get_mut(room) {
            if let Some(nodes) = users.get_mut(user) {
                nodes.remove(node);
                if nodes.is_empty() {
                    users.remove(user);
                    last = true;
                }
            }
            if users.is_empty() {
                st.presence.remove(room);
            }
        }
        ready(last)
    }

    fn members(&self, room: &str) -> BoxFut<'_, Vec<String>> {
        let v = self
            .lock()
            .presence
            .get(room)
            .map(|u| u.keys().cloned().collect())
            .unwrap_or_default();
        ready(v)
    }

    fn expire_presence(&self, _rooms: Vec<String>) -> BoxFut<'_, Vec<(String, String)>> {
        // One process: presence ends with the session that held it, never by expiry.
        ready(Vec::new())
    }

    fn refresh(
        &self,
        _node: &str,
        _rooms: Vec<(String, Vec<String>)>,
        _users: Vec<String>,
    ) -> BoxFut<'_, ()> {
        ready(())
    }

    fn set_read(&self, room: &str, user: &str, seq: u64) -> BoxFut<'_, Option<u64>> {
        let moved = self
            .lock()
            .rooms
            .get_mut(room)
            .and_then(|log| log.set_read(user, seq));
        ready(moved)
    }

    fn user_online(&self, user: &str, node: &str) -> BoxFut<'_, ()> {
        self.lock()
            .online
            .entry(user.to_owned())
            .or_default()
            .insert(node.to_owned());
        ready(())
    }

    fn user_offline(&self, user: &str, node: &str, ts: u64) -> BoxFut<'_, ()> {
        let mut st = self.lock();
        if let Some(nodes) = st.online.get_mut(user) {
            nodes.remove(node);
            if nodes.is_empty() {
                st.online.remove(user);
            }
        }
        st.sweep(&self.hub);
        st.last_seen.insert(user.to_owned(), Stamped::now(ts));
        evict_beyond(&mut st.last_seen, STANDALONE_USERS, |s| s.at, |_| false);
        ready(())
    }

    fn last_seen(&self, users: Vec<String>) -> BoxFut<'_, BTreeMap<String, LastSeenEntry>> {
        let st = self.lock();
        let v = users
            .into_iter()
            .map(|u| {
                let e = LastSeenEntry {
                    online: st.online.contains_key(&u),
                    last_seen: st.last_seen.get(&u).map(|s| s.value),
                };
                (u, e)
            })
            .collect();
        ready(v)
    }

    fn acl_update(&self, room: &str, user: &str, allow: bool) -> BoxFut<'_, AclChange> {
        let mut st = self.lock();
        let rooms = st.acl.len();
        let change = if allow {
            match st.acl.get_mut(room) {
                Some(users) if users.contains(user) => AclChange::Unchanged,
                Some(users) if users.len() >= ROOM_ACL_CAP => AclChange::Full,
                None if rooms >= STANDALONE_ACL_ROOMS => AclChange::Full,
                _ => {
                    st.acl
                        .entry(room.to_owned())
                        .or_default()
                        .insert(user.to_owned());
                    AclChange::Changed
                }
            }
        } else {
            let removed = st.acl.get_mut(room).is_some_and(|users| users.remove(user));
            if st.acl.get(room).is_some_and(BTreeSet::is_empty) {
                st.acl.remove(room);
            }
            if removed {
                AclChange::Changed
            } else {
                AclChange::Unchanged
            }
        };
        ready(change)
    }

    fn acl_allows(&self, room: &str, user: &str) -> BoxFut<'_, bool> {
        let st = self.lock();
        ready(st.acl.get(room).is_some_and(|users| users.contains(user)))
    }

    fn acl_list(&self, room: &str) -> BoxFut<'_, Vec<String>> {
        let st = self.lock();
        ready(
            st.acl
                .get(room)
                .map(|u| u.iter().cloned().collect())
                .unwrap_or_default(),
        )
    }

    fn note_contact(&self, a: &str, b: &str) -> BoxFut<'_, ()> {
        let mut st = self.lock();
        st.sweep(&self.hub);
        let now = Instant::now();
        for (user, peer) in [(a, b), (b, a)] {
            let entry = st
                .contacts
                .entry(user.to_owned())
                .or_insert_with(|| Stamped::now(HashMap::new()));
            entry.at = now;
            entry.value.insert(peer.to_owned(), now);
            evict_beyond(&mut entry.value, CONTACTS_CAP, |at| *at, |_| false);
        }
        evict_beyond(&mut st.contacts, STANDALONE_USERS, |c| c.at, |_| false);
        ready(())
    }

    fn contacts_among(&self, user: &str, candidates: Vec<String>) -> BoxFut<'_, BTreeSet<String>> {
        let st = self.lock();
        let now = Instant::now();
        let found = st.contacts.get(user).map_or_else(BTreeSet::new, |c| {
            candidates
                .into_iter()
                .filter(|p| {
                    c.value
                        .get(p)
                        .is_some_and(|at| now.duration_since(*at) < INBOX_TTL)
                })
                .collect()
        });
        ready(found)
    }

    fn room_peers_among(
        &self,
        rooms: Vec<String>,
        candidates: Vec<String>,
    ) -> BoxFut<'_, BTreeSet<String>> {
        let st = self.lock();
        let found = candidates
            .into_iter()
            .filter(|u| {
                rooms.iter().any(|r| {
                    st.presence.get(r).is_some_and(|p| p.contains_key(u))
                        || st.rooms.get(r).is_some_and(|l| l.read.contains_key(u))
                })
            })
            .collect();
        ready(found)
    }

    fn records_get(&self, keys: Vec<String>) -> BoxFut<'_, Vec<Option<String>>> {
        let r = self.records();
        ready(keys.iter().map(|k| r.live(k).cloned()).collect())
    }

    fn record_put(
        &self,
        key: &str,
        value: String,
        ttl: Duration,
        only_new: bool,
    ) -> BoxFut<'_, bool> {
        let mut r = self.records();
        if only_new && r.live(key).is_some() {
            return ready(false);
        }
        if !r.values.contains_key(key) && !r.room_for_one() {
            return Box::pin(std::future::ready(Err(records_full())));
        }
        r.values
            .insert(key.to_owned(), (value, Instant::now() + ttl));
        ready(true)
    }

    fn record_delete(&self, key: &str, only_if: Option<String>) -> BoxFut<'_, ()> {
        let mut r = self.records();
        if only_if.is_none_or(|v| r.live(key) == Some(&v)) {
            r.values.remove(key);
        }
        ready(())
    }

    fn due_put(&self, list: &str, member: &str, at: u64) -> BoxFut<'_, ()> {
        let mut r = self.records();
        if !r.room_for_one() {
            return Box::pin(std::future::ready(Err(records_full())));
        }
        r.due
            .entry(list.to_owned())
            .or_default()
            .insert(member.to_owned(), at);
        ready(())
    }

    fn due_remove(&self, list: &str, member: &str) -> BoxFut<'_, ()> {
        if let Some(l) = self.records().due.get_mut(list) {
            l.remove(member);
        }
        ready(())
    }

    fn due_take(&self, list: &str, now: u64, limit: usize) -> BoxFut<'_, Vec<String>> {
        let mut r = self.records();
        let Some(l) = r.due.get_mut(list) else {
            return ready(Vec::new());
        };
        let taken: Vec<String> = l
            .iter()
            .filter(|(_, at)| **at <= now)
            .take(limit)
            .map(|(m, _)| m.clone())
            .collect();
        for m in &taken {
            l.remove(m);
        }
        ready(taken)
    }

    fn counter_add(&self, key: &str, delta: i64, cap: u64, window: Duration) -> BoxFut<'_, bool> {
        let mut r = self.records();
        let now = Instant::now();
        let (value, until) = match r.counters.get(key) {
            Some((v, until)) if *until > now => (*v, *until),
            _ => (0, now + window),
        };
        let next = if delta >= 0 {
            value.saturating_add(delta.unsigned_abs())
        } else {
            value.saturating_sub(delta.unsigned_abs())
        };
        if delta > 0 && next > cap {
            return ready(false);
        }
        r.counters.insert(key.to_owned(), (next, until));
        ready(true)
    }

    fn healthy(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(room: &str, body: &str) -> Post {
        Post {
            target: room.into(),
            from: "u".into(),
            client_id: None,
            id: "0".into(),
            tail: format!(r#","body":"{body}"}}"#),
        }
    }

    #[tokio::test]
    async fn read_markers_keep_the_most_advanced_within_the_cap() {
        let mut log = Log {
            last: 5000,
            ..Log::default()
        };
        for i in 0..=READ_MARKERS_CAP as u64 {
            assert_eq!(log.set_read(&format!("u{i}"), i + 1), Some(i + 1));
        }
        assert_eq!(log.read.len(), READ_MARKERS_CAP);
        assert!(
            !log.read.contains_key("u0"),
            "the least advanced marker went"
        );
        assert_eq!(log.set_read("u7", 3), None, "markers never move back");
        assert_eq!(
            log.set_read("u7", u64::MAX),
            Some(5000),
            "nor past the newest"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_store_keeps_its_byte_budget_by_forgetting_the_least_recently_used() {
        let hub = Arc::new(Hub::new());
        let store = MemoryBackend::new(hub.clone(), 100).with_store_bytes(20_000);
        let member = Arc::new(crate::hub::SessionHandle::new(1, "m".into(), 4));
        hub.attach(&Topic::room("busy"), &member, false);
        let body = "b".repeat(400);
        store.post(post("busy", &body)).await.expect("post");
        for i in 0..200 {
            tokio::time::advance(Duration::from_millis(10)).await;
            store
                .post(post(&format!("r{i}"), &body))
                .await
                .expect("post");
            store
                .send_dm(post(&format!("u{i}"), &body))
                .await
                .expect("dm");
            assert!(
                store.lock().bytes <= 20_000,
                "within the budget after every write"
            );
        }
        assert_eq!(store.bounds("busy").last, 1, "in use: kept");
        assert_eq!(store.bounds("r0").last, 0, "oldest: forgotten");
        assert_eq!(store.bounds("r199").last, 1, "newest: kept");
        let st = store.lock();
        let counted: usize = st
            .rooms
            .values()
            .chain(st.inboxes.values())
            .map(|l| l.bytes)
            .sum();
        assert_eq!(st.bytes, counted, "the running total matches the logs");
    }

    #[test]
    fn eviction_takes_the_oldest_beyond_the_cap_and_spares_what_is_in_use() {
        let mut map: HashMap<u32, Instant> = HashMap::new();
        let t0 = Instant::now();
        for i in 0..30u32 {
            map.insert(i, t0 + Duration::from_secs(u64::from(i)));
        }
        evict_beyond(&mut map, 20, |t| *t, |k| *k == 0);
        assert_eq!(map.len(), 18, "ten beyond the cap and a tenth of it more");
        assert!(map.contains_key(&0), "in use");
        assert!(!map.contains_key(&1) && map.contains_key(&29));
    }

    #[tokio::test(start_paused = true)]
    async fn rooms_inboxes_and_users_expire_unless_someone_is_in_them() {
        let hub = Arc::new(Hub::new());
        let store = MemoryBackend::new(hub.clone(), 10);
        store.post(post("old", "x")).await.expect("post");
        store.post(post("kept", "x")).await.expect("post");
        store.send_dm(post("bob", "x")).await.expect("dm");
        store.user_offline("carol", "n", 1).await.expect("offline");
        let member = Arc::new(crate::hub::SessionHandle::new(1, "m".into(), 4));
        hub.attach(&Topic::room("kept"), &member, false);
        tokio::time::advance(ROOM_TTL + SWEEP_EVERY).await;
        store
            .post(post("new", "x"))
            .await
            .expect("post triggers the sweep");
        assert_eq!(store.bounds("old").last, 0);
        assert_eq!(store.bounds("kept").last, 1);
        assert_eq!(
            store.dm_state("bob").await.expect("dm state"),
            DmState::default()
        );
        let seen = store.last_seen(vec!["carol".into()]).await.expect("seen");
        assert_eq!(seen["carol"].last_seen, None);
    }
}
