//! Paced drains: when a node drains, its clients are told to `reconnect` in batches spread over the first
//! half of the drain window, not all at once, so rolling a full node is not a reconnect storm for the
//! registry, Redis and the nodes that take the clients over.
//!
//! ```text
//!  drain starts ─▶ not ready, admission closed ─▶ out of the load set ─▶ Drain::begin(clients)
//!                                                                          │ plan: batch size, start
//!  every connection: Drain::turn() ── ticket k ──▶ sleep until start + BATCH_EVERY · (k / batch)
//!                                                 └─▶ `reconnect` (retry_after_ms within the batch gap),
//!                                                     then LEAVE_GRACE + retry_after to go, else 1012
//! ```
//!
//! The rate is `max(--drain-notice-rate, clients / notice window)`, the notice window being half of
//! `--drain-timeout`: a node tells its clients at the configured rate, and faster only when that is
//! needed to tell every one of them within the window (so the second half is left for the last ones to
//! reconnect and for the node to flush and stop). The peak rate is therefore bounded by
//! `max(rate, capacity / window)`. Clients not told yet are served as usual meanwhile. Each notice's
//! `retry_after_ms` is random within the gap between two batches, so reconnects arrive evenly rather
//! than in one burst per batch.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Gap between two batches of notices: short enough for an even flow, long enough that a batch is more
/// than a handful of clients on a busy node.
pub const BATCH_EVERY: Duration = Duration::from_millis(100);
/// Time a told client has, after its `retry_after_ms`, to leave by itself before it is closed with 1012.
pub const LEAVE_GRACE: Duration = Duration::from_secs(2);
/// Lowest `--drain-notice-rate`: one client per batch.
pub const MIN_NOTICE_RATE: u32 = 10;
/// Highest `--drain-notice-rate` (a million per second is "all at once" for any node).
pub const MAX_NOTICE_RATE: u32 = 1_000_000;
/// Default of `--drain-notice-rate`: a few hundred reconnects per second is what one registry and the
/// receiving nodes absorb without noticing, and a node of up to 1000 clients is told within 5 s.
pub const DEFAULT_NOTICE_RATE: u32 = 200;

/// How a drain paces its notices (from `--drain-timeout` and `--drain-notice-rate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pacing {
    /// The whole drain: notices go out within its first half.
    pub timeout: Duration,
    /// Notices per second when the window does not demand more.
    pub rate: u32,
}

impl Default for Pacing {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            rate: DEFAULT_NOTICE_RATE,
        }
    }
}

/// When one batch is due and how many clients are in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    start: Instant,
    per_batch: u64,
}

impl Plan {
    /// The plan for telling `clients` clients from `start` on.
    pub fn new(start: Instant, clients: u64, pacing: Pacing) -> Self {
        let window = pacing.timeout / 2;
        let batches_in_window = window.as_millis() / BATCH_EVERY.as_millis();
        let per_batch = if batches_in_window == 0 {
            // No room to pace (a drain timeout under 200 ms): everybody at once.
            u64::MAX
        } else {
            let by_rate = u128::from(pacing.rate) * BATCH_EVERY.as_millis() / 1000;
            let by_window = u128::from(clients).div_ceil(batches_in_window);
            u64::try_from(by_rate.max(by_window).max(1)).unwrap_or(u64::MAX)
        };
        Self { start, per_batch }
    }

    /// When the client holding `ticket` (0, 1, 2, ... in the order they ask) is told.
    pub fn due(&self, ticket: u64) -> Instant {
        let batch = u32::try_from(ticket / self.per_batch).unwrap_or(u32::MAX);
        self.start + BATCH_EVERY.saturating_mul(batch)
    }

    /// Clients per batch.
    pub fn per_batch(&self) -> u64 {
        self.per_batch
    }
}

/// A notice a connection is to send now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notice {
    /// How long the client should wait before it asks the registry again.
    pub retry_after: Duration,
}

impl Notice {
    /// When the connection is closed with 1012 if the client has not left, counted from the notice.
    pub fn leave_within(&self) -> Duration {
        self.retry_after + LEAVE_GRACE
    }
}

/// The drain of one node: started once by [`Drain::begin`], awaited by every connection through
/// [`Drain::turn`].
#[derive(Debug)]
pub struct Drain {
    pacing: Pacing,
    begun: CancellationToken,
    plan: OnceLock<Plan>,
    next_ticket: AtomicU64,
}

impl Drain {
    /// A drain that has not begun.
    pub fn new(pacing: Pacing) -> Self {
        Self {
            pacing,
            begun: CancellationToken::new(),
            plan: OnceLock::new(),
            next_ticket: AtomicU64::new(0),
        }
    }

    /// Starts telling clients, `clients` of them (the connections open now: admission is closed).
    /// Only the first call counts.
    pub fn begin(&self, clients: u64) {
        let plan = *self
            .plan
            .get_or_init(|| Plan::new(Instant::now(), clients, self.pacing));
        tracing::info!(
            clients,
            per_batch = plan.per_batch(),
            every_ms = BATCH_EVERY.as_millis() as u64,
            "telling clients to reconnect"
        );
        self.begun.cancel();
    }

    /// Resolves when it is this connection's turn to be told (never, unless the drain begins). Create
    /// it once per connection: each call takes a place in the queue once the drain has begun.
    pub async fn turn(&self) -> Notice {
        self.begun.cancelled().await;
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        if let Some(plan) = self.plan.get() {
            tokio::time::sleep_until(plan.due(ticket)).await;
        }
        Notice {
            retry_after: Duration::from_millis(fastrand::u64(..BATCH_EVERY.as_millis() as u64)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacing(timeout_secs: u64, rate: u32) -> Pacing {
        Pacing {
            timeout: Duration::from_secs(timeout_secs),
            rate,
        }
    }

    /// When the last of `clients` is told, counted from the start.
    fn last_told(clients: u64, pacing: Pacing) -> Duration {
        let start = Instant::now();
        Plan::new(start, clients, pacing).due(clients - 1) - start
    }

    #[tokio::test(start_paused = true)]
    async fn a_small_node_is_told_at_the_configured_rate() {
        // 50 clients at 100/s: 10 per batch, 5 batches.
        let plan = Plan::new(Instant::now(), 50, pacing(10, 100));
        assert_eq!(plan.per_batch(), 10);
        assert_eq!(last_told(50, pacing(10, 100)), Duration::from_millis(400));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_node_is_spread_over_half_the_drain_timeout_not_beyond() {
        // 3000 clients at 200/s would take 15 s; the window (5 s, 50 batches) demands 60 per batch.
        let p = pacing(10, 200);
        assert_eq!(Plan::new(Instant::now(), 3000, p).per_batch(), 60);
        assert_eq!(last_told(3000, p), Duration::from_millis(4900));
        assert!(last_told(100_000, p) < Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_without_time_to_pace_tells_everybody_at_once() {
        let p = Pacing {
            timeout: Duration::from_millis(150),
            rate: 1,
        };
        assert_eq!(last_told(10_000, p), Duration::ZERO);
        assert_eq!(last_told(1, pacing(0, 1)), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn connections_are_told_batch_by_batch_after_the_drain_begins() {
        let drain = std::sync::Arc::new(Drain::new(pacing(10, 20)));
        let told: Vec<_> = (0..5)
            .map(|_| {
                let drain = drain.clone();
                tokio::spawn(async move {
                    let notice = drain.turn().await;
                    (Instant::now(), notice)
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(
            told.iter().all(|t| !t.is_finished()),
            "nobody is told before the drain begins"
        );
        let begun = Instant::now();
        drain.begin(5);
        let mut at = Vec::new();
        for t in told {
            let (when, notice) = t.await.expect("turn");
            assert!(notice.retry_after < BATCH_EVERY);
            assert_eq!(notice.leave_within(), notice.retry_after + LEAVE_GRACE);
            at.push(when - begun);
        }
        at.sort();
        // 20/s is 2 per batch: 0, 0, 100, 100, 200 ms.
        let ms: Vec<u128> = at.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [0, 0, 100, 100, 200]);
    }
}
