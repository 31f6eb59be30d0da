//! Per-connection limits: the frame-rate token bucket, flood detection and typing coalescing.
//!
//! All clocks are `tokio::time::Instant`, so tests drive them with `tokio::time::pause`/`advance`.

use std::collections::HashMap;
use std::time::Duration;
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
    /// Close a connection that sent nothing for this long.
    pub idle_timeout: Duration,
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
            idle_timeout: Duration::from_secs(60),
            max_rooms: 100,
            history_page_max: 200,
            max_last_seen_users: 100,
            typing_interval: Duration::from_secs(2),
            flood_refusals: 100,
            flood_window: Duration::from_secs(10),
        }
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
