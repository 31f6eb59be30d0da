//! In-process store and bus for standalone mode: everything lives in one mutex-guarded state and
//! events are dispatched to the hub while the state is locked, which gives each room one order.

use super::{Backend, Bounds, BoxFut, Post, Posted, Stored};
use crate::hub::{Hub, Topic};
use crate::protocol::{LastSeenEntry, splice_message};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tungstenite::Utf8Bytes;

/// Idempotency keys remembered per room or inbox, as a multiple of the history cap.
const DEDUP_FACTOR: usize = 4;

#[derive(Default)]
struct Log {
    last: u64,
    entries: VecDeque<Stored>,
    dedup: HashMap<(String, String), Posted>,
    dedup_order: VecDeque<(String, String)>,
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
        let ts = crate::protocol::now_ms();
        let frame = Utf8Bytes::from(splice_message(kind, self.last, &post.id, ts, &post.tail));
        self.entries.push_back(Stored {
            seq: self.last,
            frame: frame.clone(),
        });
        while self.entries.len() > cap {
            self.entries.pop_front();
        }
        let posted = Posted {
            seq: self.last,
            id: post.id.clone(),
            ts,
            duplicate: false,
        };
        if let Some(k) = key {
            self.dedup.insert(k.clone(), posted.clone());
            self.dedup_order.push_back(k);
            while self.dedup_order.len() > cap * DEDUP_FACTOR {
                if let Some(old) = self.dedup_order.pop_front() {
                    self.dedup.remove(&old);
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
}

#[derive(Default)]
struct State {
    rooms: HashMap<String, Log>,
    inboxes: HashMap<String, Log>,
    dm_cursor: HashMap<String, u64>,
    presence: HashMap<String, BTreeMap<String, BTreeSet<String>>>,
    read: HashMap<String, BTreeMap<String, u64>>,
    online: HashMap<String, BTreeSet<String>>,
    last_seen: HashMap<String, u64>,
}

/// The standalone store and bus.
pub struct MemoryBackend {
    state: Mutex<State>,
    hub: Arc<Hub>,
    history_cap: usize,
    inbox_cap: usize,
}

impl MemoryBackend {
    /// A store delivering into `hub`, keeping `history_cap` messages per room.
    pub fn new(hub: Arc<Hub>, history_cap: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            hub,
            history_cap: history_cap.max(1),
            inbox_cap: crate::config::INBOX_CAP,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn ready<'a, T: Send + 'a>(v: T) -> BoxFut<'a, T> {
    Box::pin(std::future::ready(Ok(v)))
}

impl Backend for MemoryBackend {
    fn post(&self, post: Post) -> BoxFut<'_, Posted> {
        let mut st = self.lock();
        let log = st.rooms.entry(post.target.clone()).or_default();
        let (posted, frame) = log.append("message", &post, self.history_cap);
        if let Some(frame) = frame {
            self.hub
                .dispatch(&Topic::room(&post.target), posted.seq, &frame);
        }
        drop(st);
        ready(posted)
    }

    fn send_dm(&self, post: Post) -> BoxFut<'_, Posted> {
        let mut st = self.lock();
        let log = st.inboxes.entry(post.target.clone()).or_default();
        let (posted, frame) = log.append("dm", &post, self.inbox_cap);
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

    fn subscribe(&self, _topic: Topic) -> BoxFut<'_, ()> {
        ready(())
    }

    fn unsubscribe(&self, _topic: Topic) -> BoxFut<'_, ()> {
        ready(())
    }

    fn bounds(&self, room: &str) -> BoxFut<'_, Bounds> {
        let st = self.lock();
        let b = st.rooms.get(room).map_or(Bounds::default(), |l| Bounds {
            first: l.entries.front().map_or(0, |s| s.seq),
            last: l.last,
        });
        ready(b)
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

    fn dm_state(&self, user: &str) -> BoxFut<'_, (u64, u64)> {
        let st = self.lock();
        let last = st.inboxes.get(user).map_or(0, |l| l.last);
        let cursor = st.dm_cursor.get(user).copied().unwrap_or(0);
        ready((last, cursor))
    }

    fn dm_delivered(&self, user: &str, seq: u64) -> BoxFut<'_, ()> {
        let mut st = self.lock();
        let c = st.dm_cursor.entry(user.to_owned()).or_default();
        *c = (*c).max(seq);
        ready(())
    }

    fn presence_join(&self, room: &str, user: &str, node: &str) -> BoxFut<'_, bool> {
        let mut st = self.lock();
        let nodes = st
            .presence
            .entry(room.to_owned())
            .or_default()
            .entry(user.to_owned())
            .or_default();
        let first = nodes.is_empty();
        nodes.insert(node.to_owned());
        ready(first)
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

    fn refresh(
        &self,
        _node: &str,
        _rooms: Vec<(String, Vec<String>)>,
        _users: Vec<String>,
    ) -> BoxFut<'_, ()> {
        ready(())
    }

    fn set_read(&self, room: &str, user: &str, seq: u64) -> BoxFut<'_, bool> {
        let mut st = self.lock();
        let m = st
            .read
            .entry(room.to_owned())
            .or_default()
            .entry(user.to_owned())
            .or_default();
        let moved = seq > *m;
        *m = (*m).max(seq);
        ready(moved)
    }

    fn read_markers(&self, room: &str) -> BoxFut<'_, BTreeMap<String, u64>> {
        let v = self.lock().read.get(room).cloned().unwrap_or_default();
        ready(v)
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
        st.last_seen.insert(user.to_owned(), ts);
        ready(())
    }

    fn last_seen(&self, users: Vec<String>) -> BoxFut<'_, BTreeMap<String, LastSeenEntry>> {
        let st = self.lock();
        let v = users
            .into_iter()
            .map(|u| {
                let e = LastSeenEntry {
                    online: st.online.contains_key(&u),
                    last_seen: st.last_seen.get(&u).copied(),
                };
                (u, e)
            })
            .collect();
        ready(v)
    }

    fn healthy(&self) -> bool {
        true
    }
}
