//! A connection's outbound queue: what the connection writes next, in order.
//!
//! ```text
//!   hub dispatch, replies ──push──▶ [ Out, Out, … ] ──ready / try_next──▶ connection task ──▶ socket
//!                                        │ empty: no slots held
//! ```
//!
//! The bounds are not here: the session handle's lanes count the frames and bytes queued per lane
//! (`crate::hub::SessionHandle`) and refuse or wait before anything is pushed. This keeps only the order
//! and the wake-up, and holds no memory while empty — an idle connection pays for a lock and a
//! wake-up, not for a block of slots (a bounded channel allocates its first block of 32 at creation).
//!
//! The wake-up is the connection's only one: whatever its task must react to — a frame queued, a kick,
//! a revocation, the drain — wakes it here ([`Outbox::wake`]), and each waiter says what it waits for
//! ([`Outbox::until`]). One wait in an idle connection, not one per kind of event.
//!
//! The fan-out queues without waking ([`Outbox::push_quiet`]) and wakes each writer once after a whole
//! batch of bus events ([`crate::hub::Wakes`]): a writer then finds several frames and sends them in one
//! write, instead of being woken, and writing, once per frame.

use crate::hub::Out;
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use tokio::sync::Notify;

/// The queue between a session and its writer.
#[derive(Debug, Default)]
pub struct Outbox {
    queue: Mutex<VecDeque<Out>>,
    ready: Notify,
}

impl Outbox {
    /// An empty queue (no allocation).
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Out>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `out` and wakes the writer if the queue was empty. A queue that was not is already
    /// owed a wake, or its writer is still taking from it and finds `out` before it waits again
    /// (every wait for the queue checks it first: [`Outbox::until`]).
    pub fn push(&self, out: Out) {
        if self.push_quiet(out) {
            self.wake();
        }
    }

    /// Appends `out` without waking the writer. True when the queue was empty, so the writer may be
    /// waiting and must be woken ([`Outbox::wake`]) once the caller has queued what it has; false
    /// when a wake is already owed for what is ahead of it (or the writer is still taking it).
    pub fn push_quiet(&self, out: Out) -> bool {
        let mut queue = self.lock();
        let was_empty = queue.is_empty();
        queue.push_back(out);
        was_empty
    }

    /// Wakes everyone waiting in [`Outbox::until`]: the writer for what [`Outbox::push_quiet`] queued,
    /// or the connection for whatever else changed.
    pub fn wake(&self) {
        self.ready.notify_waiters();
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Waits until `cond` holds, checking it at first and after every [`Outbox::wake`] (or push); a
    /// wake between a check and the wait is not lost.
    pub async fn until(&self, mut cond: impl FnMut() -> bool) {
        loop {
            // Made before the check: a wake after it ends the wait at once.
            let woken = self.ready.notified();
            if cond() {
                return;
            }
            woken.await;
        }
    }

    /// The next item if one is queued.
    pub fn try_next(&self) -> Option<Out> {
        let mut queue = self.lock();
        let out = queue.pop_front();
        if queue.is_empty() && queue.capacity() > 0 {
            // Idle from here on, as far as anyone knows: the next frame allocates again.
            *queue = VecDeque::new();
        }
        out
    }

    /// The next item, waiting for one (tests read queues so; the connection's writing takes items
    /// only as the socket can take them, [`Outbox::ready`] then [`Outbox::try_next`]).
    pub async fn next(&self) -> Out {
        loop {
            self.ready().await;
            if let Some(out) = self.try_next() {
                return out;
            }
        }
    }

    /// Waits until something is queued, without taking it: the writer then takes items with
    /// [`Outbox::try_next`] only when it can hand them to the socket at once, so that dropping it
    /// mid-write loses nothing.
    pub async fn ready(&self) {
        self.until(|| !self.is_empty()).await
    }

    /// Slots held by the queue now (for tests of the idle footprint).
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.lock().capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;
    use tungstenite::Utf8Bytes;

    fn frame(i: usize) -> Out {
        Out::Frame(Utf8Bytes::from(format!("f{i}")))
    }

    fn text(out: Out) -> String {
        match out {
            Out::Frame(b) | Out::Reply(b) => b.to_string(),
            Out::Close(code, _) => format!("close {code}"),
            Out::Pong(_) => "pong".into(),
            Out::Ping => "ping".into(),
        }
    }

    #[tokio::test]
    async fn items_come_out_in_order_and_a_waiting_writer_is_woken() {
        let outbox = Arc::new(Outbox::new());
        let writer = {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                for _ in 0..3 {
                    got.push(text(outbox.next().await));
                }
                got
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        outbox.push(frame(1));
        outbox.push(Out::Reply(Utf8Bytes::from_static("r")));
        outbox.push(Out::Close(1000, ""));
        let got = tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .expect("the writer is woken")
            .expect("writer task");
        assert_eq!(got, ["f1", "r", "close 1000"]);
    }

    #[tokio::test]
    async fn a_quiet_push_asks_for_one_wake_per_empty_queue() {
        let outbox = Arc::new(Outbox::new());
        assert!(
            outbox.push_quiet(frame(1)),
            "the first push finds the queue empty"
        );
        assert!(!outbox.push_quiet(frame(2)), "a wake is already owed");
        let writer = {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                let mut got = vec![text(outbox.next().await)];
                got.extend(std::iter::from_fn(|| outbox.try_next()).map(text));
                got.push(text(outbox.next().await));
                got
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(
            outbox.push_quiet(frame(3)),
            "the writer took everything: the next push owes a wake"
        );
        outbox.wake();
        let got = tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .expect("the writer is woken")
            .expect("writer task");
        assert_eq!(got, ["f1", "f2", "f3"]);
    }

    #[tokio::test]
    async fn a_wake_reaches_every_waiter_each_for_its_own_condition() {
        let outbox = Arc::new(Outbox::new());
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // One waits for something queued, the other for the flag: one wake-up serves both.
        let for_queue = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.ready().await })
        };
        let for_flag = {
            let (outbox, flag) = (outbox.clone(), flag.clone());
            tokio::spawn(async move {
                outbox
                    .until(|| flag.load(std::sync::atomic::Ordering::Acquire))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!for_queue.is_finished() && !for_flag.is_finished());
        flag.store(true, std::sync::atomic::Ordering::Release);
        outbox.wake();
        tokio::time::timeout(Duration::from_secs(5), for_flag)
            .await
            .expect("the flag's waiter is woken")
            .expect("task");
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!for_queue.is_finished(), "nothing queued yet: it waits on");
        outbox.push(frame(1));
        tokio::time::timeout(Duration::from_secs(5), for_queue)
            .await
            .expect("the queue's waiter is woken")
            .expect("task");
        // A condition already true ends the wait at once, with no wake at all.
        tokio::time::timeout(Duration::from_secs(5), outbox.until(|| true))
            .await
            .expect("no wait");
    }

    #[test]
    fn an_emptied_queue_gives_its_slots_back() {
        let outbox = Outbox::new();
        assert_eq!(outbox.capacity(), 0, "a new queue holds nothing");
        for i in 0..100 {
            outbox.push(frame(i));
        }
        assert!(outbox.capacity() >= 100);
        let drained: Vec<String> = std::iter::from_fn(|| outbox.try_next()).map(text).collect();
        assert_eq!(drained.len(), 100);
        assert_eq!(drained.first().map(String::as_str), Some("f0"));
        assert_eq!(
            outbox.capacity(),
            0,
            "emptied after a burst: slots given back"
        );
        outbox.push(frame(0));
        assert!(outbox.try_next().is_some());
        assert_eq!(outbox.capacity(), 0, "and after a single frame");
    }
}
