//! The ordered receiver: one task per node reads every subscribed channel in order and hands each event
//! to the hub, never trusting pub/sub alone.
//!
//! ```text
//! subscriber ──"<seq> <frame>"──▶ seq 0 (presence, typing, read) ─▶ hub
//!                                 seq ≤ cursor ─▶ dropped (already delivered)
//!                                 seq > cursor + 1 ─▶ fill the gap from the stream ─▶ hub ─▶ this one
//!                                    gap not readable in full yet ─▶ held back: the topic is owed it
//! reconnect of the subscriber (failover), or a lag ─▶ every topic owed a catch-up from its cursor
//! owed topics ─▶ read again (100 ms, doubling to 2 s) until paid; given up after 2 min without progress
//! ```
//!
//! An event is never dispatched past a gap it could not fill: during a failover the read may fail, or
//! land on a store that has not got the newest entries yet, and dispatching anyway would skip the gap
//! for every local listener for good.
//!
//! Cursors (last sequence dispatched per topic) start at the topic's newest sequence when it is
//! subscribed (`subscribe` in the module root; a room's with the join that follows, which reads it) and
//! are dropped with the last local listener.

use super::Inner;
use crate::config::INBOX_CAP;
use crate::hub::{Topic, Wakes};
use fred::interfaces::EventInterface;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::HashMap;
use std::sync::Arc;
use switchboard_runtime::report::chain;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::{Duration, Instant};
use tungstenite::Utf8Bytes;

/// Bus events handed to the hub before the writers they concern are woken: a batch is what the
/// subscriber has already received, up to this many.
const BATCH: usize = 256;

/// How often cursors of topics nobody listens to any more are dropped.
const CURSOR_SWEEP: std::time::Duration = std::time::Duration::from_secs(30);

impl Inner {
    /// The cursors, locked for a lookup or an update only: never across a round trip.
    pub(super) fn cursors(&self) -> std::sync::MutexGuard<'_, HashMap<Topic, u64>> {
        self.cursors.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves `topic`'s cursor up to `seq` (never down).
    pub(super) fn advance(&self, topic: &Topic, seq: u64) {
        let mut cursors = self.cursors();
        let c = cursors.entry(topic.clone()).or_insert(seq);
        *c = (*c).max(seq);
    }

    /// Dispatches one sequenced event, filling a gap from the stream first and dropping duplicates.
    /// Only this task dispatches sequenced events, so reading the gap without holding the cursors
    /// keeps the order; other rooms' joins meanwhile are not held up. A gap that cannot be read in
    /// full now (the store is failing over, or answers from behind) holds the event back: the topic
    /// is owed it, and [`Inner::settle`] reads it from the stream later, in order.
    async fn dispatch_sequenced(
        &self,
        topic: Topic,
        seq: u64,
        frame: Utf8Bytes,
        wakes: &mut Wakes,
        owed: &mut Owed,
    ) {
        let last = self.cursors().get(&topic).copied();
        match last {
            Some(l) if seq <= l => return,
            // Behind a gap already held: it is read again on the retry timer, with this one.
            Some(_) if owed.has_gap(&topic) => {
                owed.hold(topic, seq);
                return;
            }
            Some(l) if seq > l + 1 => {
                // What is queued already goes out while the gap is read.
                wakes.wake();
                let read = self.read_stored(&topic, l, Some(seq - 1), wakes).await;
                if !read.is_ok_and(|c| c >= seq - 1) {
                    owed.hold(topic, seq);
                    return;
                }
            }
            _ => {}
        }
        self.hub.dispatch_to(&topic, seq, &frame, wakes);
        self.advance(&topic, seq);
        owed.reached(&topic, seq);
    }

    /// Dispatches the stream's entries of `topic` after `after` and moves the cursor along; returns the
    /// cursor then. With `upto` (a sequence seen published) the read stops there and not at the visible
    /// mark: everything up to a published sequence is as durable as it (a post is published only once
    /// replicas hold it, and they hold the stream in order), and a new master may not have the mark yet.
    /// Without, it is a catch-up to the visible mark. Entries trimmed from the stream's start are skipped;
    /// a store that has not got the newest ones yet leaves the rest for later.
    async fn read_stored(
        &self,
        topic: &Topic,
        after: u64,
        upto: Option<u64>,
        wakes: &mut Wakes,
    ) -> crate::backend::Result<u64> {
        let cap = self.history_cap.max(INBOX_CAP);
        let limit = upto.map_or(cap, |u| {
            usize::try_from(u - after).unwrap_or(usize::MAX).min(cap)
        });
        let found = self
            .range_after(self.names.log_of(topic), after, limit, upto.is_none())
            .await
            .inspect_err(|e| {
                tracing::debug!(error = %chain(e), topic = ?topic, "could not read from history yet");
            })?;
        for m in (found.into_iter()).filter(|m| m.seq > after && upto.is_none_or(|u| m.seq <= u)) {
            self.hub.dispatch_to(topic, m.seq, &m.frame, wakes);
            self.advance(topic, m.seq);
        }
        Ok(self.cursors().get(topic).copied().unwrap_or(after))
    }

    /// Hands one message of the subscriber to the hub (the writers it concerns wait in `wakes`).
    async fn on_message(&self, msg: fred::types::Message, wakes: &mut Wakes, owed: &mut Owed) {
        let Some(topic) = self.names.topic_of(&msg.channel) else {
            return;
        };
        let Some(bytes) = msg.value.into_bytes() else {
            return;
        };
        let Some(space) = bytes.iter().position(|b| *b == b' ') else {
            return;
        };
        let seq: u64 = std::str::from_utf8(&bytes[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let Ok(frame) = Utf8Bytes::try_from(bytes.slice(space + 1..)) else {
            return;
        };
        if seq == 0 {
            self.hub.dispatch_to(&topic, 0, &frame, wakes);
        } else {
            self.dispatch_sequenced(topic, seq, frame, wakes, owed)
                .await;
        }
    }

    /// Reads what `owed` topics are owed from the stream, in order; what cannot be read yet stays
    /// owed.
    async fn settle(&self, owed: &mut Owed) {
        let mut wakes = Wakes::default();
        for (topic, upto) in owed.due() {
            // What the previous topic dispatched goes out while this one is read.
            wakes.wake();
            let Some(cursor) = self.cursors().get(&topic).copied() else {
                owed.forget(&topic);
                continue;
            };
            if !self.hub.has_listeners(&topic) {
                owed.forget(&topic);
                continue;
            }
            // Owed a sequence seen on the bus: up to it; owed a catch-up: up to the visible mark.
            let known = (upto > cursor).then_some(upto);
            match self.read_stored(&topic, cursor, known, &mut wakes).await {
                Ok(now) if known.is_none_or(|u| now >= u) => owed.forget(&topic),
                Ok(now) => owed.retry(&topic, now),
                Err(_) => owed.retry(&topic, cursor),
            }
        }
    }

    /// After a reconnect or lag: every topic listened to is owed whatever was published while we were
    /// not listening.
    async fn catch_up(&self, owed: &mut Owed) {
        let topics: Vec<Topic> = {
            let mut cursors = self.cursors();
            cursors.retain(|t, _| self.hub.has_listeners(t));
            cursors.keys().cloned().collect()
        };
        for topic in topics {
            owed.hold(topic, 0);
        }
        self.settle(owed).await;
    }

    /// The receiver task: runs until `shutdown` fires or the subscriber is gone.
    pub(super) async fn receive(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut messages = self.subscriber.message_rx();
        let mut reconnects = self.subscriber.reconnect_rx();
        let mut sweep = tokio::time::interval(CURSOR_SWEEP);
        let mut owed = Owed::new(&self.hub.stats);
        loop {
            let retry = owed.next_retry();
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = sweep.tick() => {
                    self.cursors().retain(|t, _| self.hub.has_listeners(t));
                }
                () = sleep_until(retry), if retry.is_some() => {
                    self.settle(&mut owed).await;
                }
                r = reconnects.recv() => {
                    if r.is_err() && matches!(r, Err(RecvError::Closed)) {
                        return;
                    }
                    tracing::info!("bus reconnected; catching up from history");
                    self.catch_up(&mut owed).await;
                }
                m = messages.recv() => match m {
                    Ok(msg) => {
                        // This message and whatever else has arrived, then one wake per writer.
                        let mut wakes = Wakes::default();
                        self.on_message(msg, &mut wakes, &mut owed).await;
                        for _ in 1..BATCH {
                            match messages.try_recv() {
                                Ok(msg) => self.on_message(msg, &mut wakes, &mut owed).await,
                                Err(TryRecvError::Empty) => break,
                                Err(TryRecvError::Lagged(n)) => {
                                    wakes.wake();
                                    tracing::warn!(missed = n, "bus receiver lagged; catching up from history");
                                    self.catch_up(&mut owed).await;
                                    break;
                                }
                                Err(TryRecvError::Closed) => return,
                            }
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "bus receiver lagged; catching up from history");
                        self.catch_up(&mut owed).await;
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// The first retry of an owed topic comes this soon; each one that makes no progress doubles it, up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest pause between two tries of an owed topic.
const RETRY_MAX: Duration = Duration::from_secs(2);
/// After this long without progress an owed topic is given up (logged as an error): its listeners
/// miss those sequences, and later ones are dispatched again.
const GIVE_UP: Duration = Duration::from_secs(120);

/// Topics whose events could not all be dispatched in order yet, each with what it is owed; their
/// count and the topics given up are the node's metrics (`bus_owed_topics`, `bus_gaps_given_up`).
struct Owed {
    debts: HashMap<Topic, Debt>,
    count: Gauge,
    given_up: Counter,
}

struct Debt {
    /// The highest sequence seen on the bus and held back; 0 when none is known (catch up to the
    /// visible mark).
    upto: u64,
    /// The cursor at the last progress, and when that was.
    progress: (u64, Instant),
    /// When to try again, and the pause before the try after it.
    next: Instant,
    pause: Duration,
}

impl Owed {
    /// Nothing owed yet; the count and the give-ups go to `stats`.
    fn new(stats: &crate::hub::HubStats) -> Self {
        Self {
            debts: HashMap::new(),
            count: stats.owed_topics.clone(),
            given_up: stats.gaps_given_up.clone(),
        }
    }

    /// The count metric follows the map.
    fn counted(&self) {
        self.count.set(self.debts.len() as i64);
    }

    /// `topic` is owed everything up to `upto` (0: whatever the store shows).
    fn hold(&mut self, topic: Topic, upto: u64) {
        let now = Instant::now();
        if upto > 0 && !self.debts.values().any(|d| d.upto > 0) {
            tracing::warn!(topic = ?topic, seq = upto, "a gap could not be read from history yet; holding events back until it can");
        }
        match self.debts.entry(topic) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                let d = e.get_mut();
                d.upto = d.upto.max(upto);
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                // A catch-up is tried at once; a gap that just failed, a moment later.
                let first = if upto == 0 {
                    Duration::ZERO
                } else {
                    RETRY_FIRST
                };
                e.insert(Debt {
                    upto,
                    progress: (0, now),
                    next: now + first,
                    pause: RETRY_FIRST,
                });
            }
        }
        self.counted();
    }

    /// True when `topic` waits for a gap to be read (events after it are held back).
    fn has_gap(&self, topic: &Topic) -> bool {
        self.debts.get(topic).is_some_and(|d| d.upto > 0)
    }

    /// `topic`'s cursor reached `seq`: a debt up to there is paid.
    fn reached(&mut self, topic: &Topic, seq: u64) {
        if self
            .debts
            .get(topic)
            .is_some_and(|d| d.upto > 0 && d.upto <= seq)
        {
            self.forget(topic);
        }
    }

    fn forget(&mut self, topic: &Topic) {
        if self.debts.remove(topic).is_some() {
            self.counted();
        }
    }

    /// A try left `topic` still owed with its cursor at `cursor`: back off unless it moved, and give up
    /// after [`GIVE_UP`] without progress.
    fn retry(&mut self, topic: &Topic, cursor: u64) {
        let now = Instant::now();
        let Some(d) = self.debts.get_mut(topic) else {
            return;
        };
        if cursor != d.progress.0 {
            d.progress = (cursor, now);
            d.pause = RETRY_FIRST;
        } else if now.duration_since(d.progress.1) >= GIVE_UP {
            tracing::error!(topic = ?topic, after = cursor, upto = d.upto, "sequences could not be read from history; its listeners here miss them");
            self.given_up.inc();
            self.forget(topic);
            return;
        } else {
            d.pause = (d.pause * 2).min(RETRY_MAX);
        }
        d.next = now + d.pause;
    }

    /// Topics whose next try is due, with what each is owed.
    fn due(&self) -> Vec<(Topic, u64)> {
        let now = Instant::now();
        (self.debts.iter())
            .filter(|(_, d)| d.next <= now)
            .map(|(t, d)| (t.clone(), d.upto))
            .collect()
    }

    /// When the next try is due, if anything is owed.
    fn next_retry(&self) -> Option<Instant> {
        self.debts.values().map(|d| d.next).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_debt_is_paid_when_the_cursor_reaches_it_and_a_catch_up_only_when_forgotten() {
        let stats = crate::hub::HubStats::default();
        let mut owed = Owed::new(&stats);
        let (a, b) = (Topic::room("a"), Topic::room("b"));
        owed.hold(a.clone(), 7);
        owed.hold(a.clone(), 5);
        owed.hold(b.clone(), 0);
        assert!(owed.has_gap(&a) && !owed.has_gap(&b));
        assert_eq!(stats.owed_topics.get(), 2, "the metric counts topics");
        owed.reached(&a, 6);
        assert!(owed.has_gap(&a), "7 is still owed");
        owed.reached(&a, 7);
        assert!(!owed.has_gap(&a));
        assert_eq!(stats.owed_topics.get(), 1);
        owed.reached(&b, 100);
        assert_eq!(
            owed.due(),
            [(b.clone(), 0)],
            "a catch-up is due at once and not paid by a sequence"
        );
        owed.forget(&b);
        assert!(owed.next_retry().is_none());
        assert_eq!(stats.owed_topics.get(), 0);
        assert_eq!(stats.gaps_given_up.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_back_off_without_progress_and_give_up_after_the_limit() {
        let stats = crate::hub::HubStats::default();
        let mut owed = Owed::new(&stats);
        let a = Topic::room("a");
        owed.hold(a.clone(), 9);
        assert!(owed.due().is_empty(), "not due at once");
        tokio::time::advance(RETRY_FIRST).await;
        assert_eq!(owed.due(), [(a.clone(), 9)]);
        owed.retry(&a, 3);
        let pauses: Vec<Duration> = (0..6)
            .map(|_| {
                owed.retry(&a, 3);
                owed.next_retry().unwrap_or_else(Instant::now) - Instant::now()
            })
            .collect();
        assert_eq!(
            pauses,
            [200, 400, 800, 1600, 2000, 2000].map(Duration::from_millis),
            "doubling up to the limit"
        );
        // Progress resets the pause.
        owed.retry(&a, 4);
        let next = owed.next_retry().expect("still owed");
        assert_eq!(next - Instant::now(), RETRY_FIRST);
        tokio::time::advance(GIVE_UP).await;
        owed.retry(&a, 4);
        assert!(owed.next_retry().is_none(), "given up");
        assert_eq!(stats.gaps_given_up.get(), 1, "and counted");
        assert_eq!(stats.owed_topics.get(), 0);
    }
}
