//! Per-connection limits: the frame-rate token bucket, flood detection, typing coalescing and the
//! byte budget of a connection's outbound queue.
//!
//! All clocks are `tokio::time::Instant`, so tests drive them with `tokio::time::pause`/`advance`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Limits a node enforces on every connection (announced to clients in `welcome`).
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Largest WebSocket message accepted; larger ones close the connection with 1009.
    pub max_frame_bytes: usize,
    /// Longest message body, in characters.
    pub max_body_chars: usize,
    /// Sustained client frames per second.
    pub rate_per_sec: u32,
    /// Frames allowed above the sustained rate in a burst.
    pub rate_burst: u32,
    /// Frames queued towards one client before it counts as a slow consumer.
    pub outbound_queue: usize,
    /// Bytes queued towards one client (frames not yet handed to the socket) before it counts as a
    /// slow consumer. At least twice [`Limits::max_reply_bytes`].
    pub outbound_bytes: usize,
    /// Largest reply the node builds (a history page, `joined`): longer pages are cut (`has_more`).
    /// At least one message ([`Limits::max_frame_bytes`] plus its envelope) always fits.
    pub max_reply_bytes: usize,
    /// How long a reply to the client's own request (history, `joined`, recovery) may wait for room
    /// in the outbound queue before the client counts as a slow consumer.
    pub reply_wait: Duration,
    /// Close a connection that sent nothing for this long.
    pub idle_timeout: Duration,
    /// How long a connection holds live events before writing them, so that those arriving meanwhile
    /// leave in the same write (fewer system calls per delivery, at the cost of this much latency).
    /// Zero writes at once. A live lane half full is written without waiting; replies to the client's
    /// own requests are never held.
    pub write_delay: Duration,
    /// Rooms one connection may join.
    pub max_rooms: usize,
    /// Largest history page.
    pub history_page_max: u32,
    /// Users in one `last_seen` request.
    pub max_last_seen_users: usize,
    /// Minimum gap between two relayed typing indicators of one user in one room.
    pub typing_interval: Duration,
    /// Refused frames within [`Limits::flood_window`] that close the connection with 4029.
    pub flood_refusals: u32,
    /// Window for counting refused frames.
    pub flood_window: Duration,
    /// What a socket must pass before it is served (`server::door`).
    pub door: DoorLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // 64 KiB: ten times the largest legal body, small enough that a hostile frame costs little.
            max_frame_bytes: 64 * 1024,
            max_body_chars: 4000,
            rate_per_sec: 20,
            rate_burst: 40,
            outbound_queue: 1024,
            // 1 MiB: four full history pages in flight; ten thousand connections could hold 10 GB
            // only if every one of them stopped reading at once.
            outbound_bytes: 1024 * 1024,
            // 256 KiB: a default page of 50 messages of 4000 ASCII characters (about 210 KB) fits.
            max_reply_bytes: 256 * 1024,
            reply_wait: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            write_delay: Duration::ZERO,
            max_rooms: 100,
            history_page_max: 200,
            max_last_seen_users: 100,
            typing_interval: Duration::from_secs(2),
            flood_refusals: 100,
            flood_window: Duration::from_secs(10),
            door: DoorLimits::default(),
        }
    }
}

/// The door's limits (flags of `chat-node`, see [`crate::config::Args`]).
#[derive(Clone, Debug, PartialEq)]
pub struct DoorLimits {
    /// Sockets one peer may hold (upgraded or not); 0 for no limit.
    pub connections_per_ip: u32,
    /// New sockets per second one peer may open (a burst of four times as many); 0 for no limit.
    pub handshakes_per_ip: u32,
    /// Time a socket has for each request head, from its accept or its previous response.
    pub header_timeout: Duration,
    /// Sockets not yet upgraded to a WebSocket, from all peers.
    pub max_pending: u32,
}

impl Default for DoorLimits {
    fn default() -> Self {
        Self {
            connections_per_ip: 1000,
            handshakes_per_ip: 50,
            header_timeout: Duration::from_secs(10),
            max_pending: 1024,
        }
    }
}

impl Limits {
    /// Bytes a single stored message frame may take: the largest accepted client frame (its body can
    /// only shrink on the way out) plus the envelope the node adds (type, seq, id, from, ts, room).
    pub fn max_message_frame_bytes(&self) -> usize {
        self.max_frame_bytes + 1024
    }

    /// These limits with the byte bounds made consistent: a reply holds at least one message, and the
    /// outbound budget holds at least two replies.
    pub fn normalized(mut self) -> Self {
        self.max_reply_bytes = self.max_reply_bytes.max(self.max_message_frame_bytes());
        self.outbound_bytes = self.outbound_bytes.max(2 * self.max_reply_bytes);
        self
    }
}

/// How many bytes may wait in one connection's outbound queue: the hub and the session reserve a
/// frame's bytes before queueing it, the writer releases them once the frame is handed to the socket.
/// Fan-out never waits (no room means slow consumer); replies to the client's own requests may wait.
#[derive(Debug)]
pub struct ByteBudget {
    max: usize,
    queued: AtomicUsize,
    released: Notify,
}

impl ByteBudget {
    /// A budget of `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            queued: AtomicUsize::new(0),
            released: Notify::new(),
        }
    }

    /// Reserves `n` bytes if they fit now.
    pub fn try_reserve(&self, n: usize) -> bool {
        self.try_take(n).is_some()
    }

    /// Reserves `n` bytes if they fit now, returning what was reserved before them.
    pub fn try_take(&self, n: usize) -> Option<usize> {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                q.checked_add(n).filter(|&t| t <= self.max)
            })
            .ok()
    }

    /// Reserves `n` bytes, waiting for the writer to release enough. Never completes for `n` above
    /// the whole budget; callers bound the wait.
    pub async fn reserve(&self, n: usize) {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if self.try_reserve(n) {
                return;
            }
            released.await;
        }
    }

    /// Gives back `n` reserved bytes.
    pub fn release(&self, n: usize) {
        let _ = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                Some(q.saturating_sub(n))
            });
        self.released.notify_waiters();
    }

    /// Bytes reserved now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// The budget.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        Self::full_at(rate_per_sec, burst, Instant::now())
    }

    /// A bucket that was full at `now`.
    pub fn full_at(rate_per_sec: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: f64::from(rate_per_sec.max(1)),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token, or says how long until one is available.
    pub fn take(&mut self) -> Result<(), Duration> {
        self.take_at(Instant::now())
    }

    /// [`take`](Self::take) at the time `now`.
    pub fn take_at(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// Counts refused frames; too many inside the window means the client is flooding.
#[derive(Debug)]
pub struct FloodGuard {
    limit: u32,
    window: Duration,
    count: u32,
    since: Instant,
}

impl FloodGuard {
    /// A guard allowing `limit` refusals per `window`.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            count: 0,
            since: Instant::now(),
        }
    }

    /// Records one refusal; true when the client is flooding.
    pub fn refused(&mut self) -> bool {
        let now = Instant::now();
        if now.duration_since(self.since) > self.window {
            self.since = now;
            self.count = 0;
        }
        self.count += 1;
        self.count > self.limit
    }
}

/// Lets at most one typing indicator per room through every `interval`.
#[derive(Debug)]
pub struct TypingGate {
    interval: Duration,
    last: HashMap<String, Instant>,
}

impl TypingGate {
    /// A gate with the given minimum gap.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: HashMap::new(),
        }
    }

    /// True when a typing indicator for `room` may be relayed now.
    pub fn allow(&mut self, room: &str) -> bool {
        let now = Instant::now();
        match self.last.get_mut(room) {
            Some(t) if now.duration_since(*t) < self.interval => false,
            Some(t) => {
                *t = now;
                true
            }
            None => {
                self.last.insert(room.to_owned(), now);
                true
            }
        }
    }

    /// Forgets a room the connection left.
    pub fn forget(&mut self, room: &str) {
        self.last.remove(room);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_a_burst_then_the_sustained_rate() {
        let mut b = TokenBucket::new(10, 5);
        for _ in 0..5 {
            assert!(b.take().is_ok());
        }
        let wait = b.take().expect_err("bucket must be empty");
        assert!(wait <= Duration::from_millis(100));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(b.take().is_ok());
        assert!(b.take().is_err());
        tokio::time::advance(Duration::from_secs(10)).await;
        for _ in 0..5 {
            assert!(b.take().is_ok());
        }
        assert!(b.take().is_err(), "tokens never exceed the burst");
    }

    #[tokio::test(start_paused = true)]
    async fn flood_guard_trips_only_inside_its_window() {
        let mut g = FloodGuard::new(3, Duration::from_secs(10));
        assert!(!g.refused());
        assert!(!g.refused());
        assert!(!g.refused());
        assert!(g.refused());
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!g.refused());
    }

    #[tokio::test]
    async fn byte_budget_refuses_what_does_not_fit_and_waiters_resume_on_release() {
        let b = std::sync::Arc::new(ByteBudget::new(100));
        assert!(b.try_reserve(60));
        assert!(!b.try_reserve(50), "60 + 50 is over the budget");
        assert!(b.try_reserve(40));
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.reserve(30).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "nothing released yet");
        b.release(60);
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the waiter resumes once bytes are released")
            .expect("waiter task");
        assert_eq!(b.queued(), 70);
    }

    #[test]
    fn normalized_limits_fit_one_message_per_reply_and_two_replies_per_budget() {
        let l = Limits {
            max_frame_bytes: 512 * 1024,
            max_reply_bytes: 1,
            outbound_bytes: 1,
            ..Limits::default()
        }
        .normalized();
        assert!(l.max_reply_bytes >= l.max_message_frame_bytes());
        assert!(l.outbound_bytes >= 2 * l.max_reply_bytes);
    }

    #[tokio::test(start_paused = true)]
    async fn typing_is_coalesced_per_room() {
        let mut g = TypingGate::new(Duration::from_secs(2));
        assert!(g.allow("a"));
        assert!(!g.allow("a"));
        assert!(g.allow("b"));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(g.allow("a"));
    }
}
