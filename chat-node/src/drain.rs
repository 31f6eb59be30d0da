//! Paced drains: when a node drains, its clients are told to `reconnect` in batches spread over the first
//! half of the drain window, not all at once, so rolling a full node is not a reconnect storm for the
//! registry, Redis and the nodes that take the clients over.
//!
//! ```text
//!  drain starts ─▶ not ready, admission closed ─▶ out of the load set ─▶ Drain::begin(clients)
//!                                                                          │
//!  pacer task: every BATCH_EVERY ─▶ `per_batch` more permits ─┐            │ (spawned)
//!  every connection: Drain::turn() ─▶ waits in line (FIFO) ◀──┘ for one permit
//!                                     └─▶ `reconnect` (retry_after_ms within the batch gap), then
//!                                         retry_after + LEAVE_GRACE to go, else 1012
//! ```
//!
//! The rate is `max(--drain-notice-rate, clients / notice window)`, the notice window being half of
//! `--drain-timeout`: a node tells its clients at the configured rate, and faster only when that is
//! needed to tell every one of them within the window (so the second half is left for the last ones to
//! reconnect and for the node to flush and stop). The peak rate is therefore bounded by
//! `max(rate, capacity / window)`, and stays so when the node falls behind: a late batch is followed by
//! the next one a whole gap later, never by a catch-up burst (the window may then stretch; whoever is
//! left at `--drain-timeout` is closed with 1012). Clients not told yet are served as usual meanwhile.
//! Each notice's `retry_after_ms` is random within the gap between two batches, so reconnects arrive
//! evenly rather than in one burst per batch.

use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::Instrument;

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

impl Pacing {
    /// Clients told per batch when `clients` are to be told.
    pub fn per_batch(&self, clients: u64) -> u64 {
        let batches_in_window = (self.timeout / 2).as_millis() / BATCH_EVERY.as_millis();
        if batches_in_window == 0 {
            // No room to pace (a drain timeout under 200 ms): everybody at once.
            return clients.max(1);
        }
        let by_rate = u128::from(self.rate) * BATCH_EVERY.as_millis() / 1000;
        let by_window = u128::from(clients).div_ceil(batches_in_window);
        u64::try_from(by_rate.max(by_window).max(1)).unwrap_or(u64::MAX)
    }
}

/// A notice a connection is to send now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notice {
    /// How long the client should wait before it asks the registry again.
    pub retry_after: Duration,
    leave_within: Duration,
}

impl Notice {
    /// When the connection is closed with 1012 if the client has not left, counted from the notice:
    /// `retry_after` + [`LEAVE_GRACE`], but never after the end of the drain.
    pub fn leave_within(&self) -> Duration {
        self.leave_within
    }
}

/// The drain of one node: started once by [`Drain::begin`], awaited by every connection through
/// [`Drain::turn`]. Connections wait in line on a semaphore that the pacer task fills one batch at a
/// time; once every client counted at the start has had its turn, or at the end of the drain, the
/// semaphore closes, and anyone still waiting (a session that slipped in as admission closed, or a
/// node that fell far behind) is told at once and closed by the end of the drain.
#[derive(Debug)]
pub struct Drain {
    pacing: Pacing,
    /// Permits are turns; closed when the pacer is done.
    turns: Arc<Semaphore>,
    /// The end of the drain, once it has begun.
    deadline: OnceLock<Instant>,
    started: tokio_util::sync::CancellationToken,
}

impl Drain {
    /// A drain that has not begun.
    pub fn new(pacing: Pacing) -> Self {
        Self {
            pacing,
            turns: Arc::new(Semaphore::new(0)),
            deadline: OnceLock::new(),
            started: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// Starts telling clients, `clients` of them (the connections open now: admission is closed), from
    /// a task of its own; every connection is closed by `deadline`, the end of the drain. Only the first
    /// call counts; call it inside the runtime.
    pub fn begin(&self, clients: u64, deadline: Instant) {
        if self.deadline.set(deadline).is_err() {
            return;
        }
        let per_batch = self.pacing.per_batch(clients);
        tracing::info!(
            clients,
            per_batch,
            every_ms = BATCH_EVERY.as_millis() as u64,
            "telling clients to reconnect"
        );
        let turns = self.turns.clone();
        self.started.cancel();
        let pacer = async move {
            let pace = async {
                let mut tick = tokio::time::interval(BATCH_EVERY);
                // After a stall the next batch waits a whole gap: the rate bound holds.
                tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                let mut released = 0;
                while released < clients {
                    tick.tick().await;
                    let batch = per_batch.min(clients - released);
                    turns.add_permits(usize::try_from(batch).unwrap_or(Semaphore::MAX_PERMITS));
                    released += batch;
                }
                tick.tick().await;
            };
            let _ = tokio::time::timeout_at(deadline, pace).await;
            turns.close();
        };
        // Ends once every counted client had its turn (within half the drain timeout, or a little
        // later on a node that falls behind), at the end of the drain at the latest.
        tokio::spawn(pacer.instrument(tracing::info_span!("drain pacer")));
    }

    /// True once the drain has begun. The node then wakes every session ([`crate::node::Node::begin_drain`]),
    /// and each connection takes its [`Drain::turn`].
    pub fn has_begun(&self) -> bool {
        self.started.is_cancelled()
    }

    /// Resolves when it is this connection's turn to be told (never, unless the drain begins). Create
    /// it once per connection: it takes a place in line when first polled after the drain began.
    pub async fn turn(&self) -> Notice {
        self.started.cancelled().await;
        if let Ok(permit) = self.turns.acquire().await {
            permit.forget();
        }
        let retry_after = Duration::from_millis(fastrand::u64(..BATCH_EVERY.as_millis() as u64));
        let left = self.deadline.get().map_or(Duration::MAX, |d| {
            d.saturating_duration_since(Instant::now())
        });
        Notice {
            retry_after,
            leave_within: (retry_after + LEAVE_GRACE).min(left),
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

    #[test]
    fn a_small_node_is_told_at_the_configured_rate() {
        // 50 clients at 100/s: 10 per batch, 5 batches.
        assert_eq!(pacing(10, 100).per_batch(50), 10);
        assert_eq!(pacing(10, 10).per_batch(3), 1);
    }

    #[test]
    fn a_full_node_is_spread_over_half_the_drain_timeout_not_beyond() {
        // 3000 clients at 200/s would take 15 s; the window (5 s, 50 batches) demands 60 per batch.
        assert_eq!(pacing(10, 200).per_batch(3000), 60);
        assert_eq!(pacing(10, 200).per_batch(100_000), 2000);
        assert_eq!(pacing(30, 200).per_batch(3000), 20);
    }

    #[test]
    fn a_drain_without_time_to_pace_tells_everybody_at_once() {
        let short = Pacing {
            timeout: Duration::from_millis(150),
            rate: MIN_NOTICE_RATE,
        };
        assert_eq!(short.per_batch(10_000), 10_000);
        assert_eq!(pacing(0, MIN_NOTICE_RATE).per_batch(0), 1);
    }

    /// When each of `n` connections waiting on `drain` is told, counted from `begin(clients)` (a drain
    /// of `drain_ms`), and how long each may stay after its notice, in ms.
    async fn told(drain: Drain, n: usize, clients: u64, drain_ms: u64) -> Vec<(u128, u128)> {
        let drain = Arc::new(drain);
        let waiting: Vec<_> = (0..n)
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
            waiting.iter().all(|t| !t.is_finished()),
            "nobody is told before the drain begins"
        );
        let begun = Instant::now();
        drain.begin(clients, begun + Duration::from_millis(drain_ms));
        let mut at = Vec::new();
        for t in waiting {
            let (when, notice) = t.await.expect("turn");
            assert!(notice.retry_after < BATCH_EVERY);
            at.push((
                (when - begun).as_millis(),
                notice.leave_within().as_millis(),
            ));
        }
        at.sort_unstable();
        at
    }

    /// When each of `n` connections is told, in a drain long enough not to cut anything short.
    async fn told_at(drain: Drain, n: usize, clients: u64) -> Vec<u128> {
        let told = told(drain, n, clients, 60_000).await;
        for &(_, stay) in &told {
            assert!((2000..2100).contains(&stay), "retry_after + 2 s: {stay}");
        }
        told.into_iter().map(|(at, _)| at).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn connections_are_told_batch_by_batch_after_the_drain_begins() {
        // 20/s is 2 per batch: 0, 0, 100, 100, 200 ms.
        let at = told_at(Drain::new(pacing(10, 20)), 5, 5).await;
        assert_eq!(at, [0, 0, 100, 100, 200]);
    }

    #[tokio::test(start_paused = true)]
    async fn connections_beyond_the_count_are_told_once_the_counted_ones_were() {
        // Counted 3 at 1 per batch (0, 100, 200 ms); the 2 that slipped in go together one gap later.
        let at = told_at(Drain::new(pacing(10, 10)), 5, 3).await;
        assert_eq!(at, [0, 100, 200, 300, 300]);
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_end_of_the_drain_everybody_left_is_told_and_closed() {
        // 5 clients at 1 per 100 ms in a drain of 250 ms: 0, 100, 200 ms in turn, the rest at 250 ms
        // and closed at once; nobody may stay beyond 250 ms.
        let told = told(Drain::new(pacing(10, 10)), 5, 5, 250).await;
        let at: Vec<u128> = told.iter().map(|&(at, _)| at).collect();
        assert_eq!(at, [0, 100, 200, 250, 250]);
        for (at, stay) in told {
            assert!(at + stay <= 250, "told at {at} ms, may stay {stay} ms");
        }
    }
}
