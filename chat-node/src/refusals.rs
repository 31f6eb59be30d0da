//! Visible refusals: every refused connection or frame that points at abuse or a misconfigured client
//! (bad identity or token, foreign origin, full node, rate limit, flooding, slow consumer, oversize,
//! forbidden access) is counted in `switchboard_refusals_total{reason}` and logged at info with the
//! peer address — the log rate-limited per reason, so a flood cannot flood the log.
//!
//! ```text
//!  refusal ──▶ counter{reason} += 1 (always)
//!          └─▶ bucket[reason]: token? ──yes──▶ info!(reason, peer, user, suppressed = n since last line)
//!                                     └─no───▶ suppressed[reason] += 1
//! ```

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use tokio::time::Instant;

use crate::limits::TokenBucket;

/// Log lines per second and reason, sustained: enough to see who is refused, too few to fill a disk.
pub const LOG_PER_SEC: u32 = 2;
/// Log lines per reason in a burst.
pub const LOG_BURST: u32 = 10;

/// Label of the refusal counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why (`auth_invalid`, `auth_expired`, `origin`, `capacity`, `slow_consumer`, ...).
    pub reason: &'static str,
}

struct Bucket {
    tokens: TokenBucket,
    suppressed: u64,
}

/// The refusal counter and its rate-limited log.
#[derive(Default)]
pub struct Refusals {
    /// `switchboard_refusals_total{reason}` (registered by [`crate::metrics::Metrics`]).
    pub counter: Family<ReasonLabel, Counter>,
    buckets: Mutex<HashMap<&'static str, Bucket>>,
}

impl std::fmt::Debug for Refusals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refusals").finish_non_exhaustive()
    }
}

impl Refusals {
    /// Counts a refusal and logs it unless this reason already logged its share.
    pub fn record(
        &self,
        reason: &'static str,
        peer: Option<SocketAddr>,
        user: Option<&str>,
        detail: &str,
    ) {
        self.counter.get_or_create(&ReasonLabel { reason }).inc();
        let Some(suppressed) = self.take(reason, Instant::now()) else {
            return;
        };
        let peer = peer.map_or_else(|| "-".to_owned(), |p| p.to_string());
        tracing::info!(
            reason,
            peer = %peer,
            user = user.unwrap_or("-"),
            suppressed,
            "refused: {detail}"
        );
    }

    /// Takes a log token for `reason`; returns how many lines were suppressed since the last one, or
    /// `None` when this one is suppressed too.
    fn take(&self, reason: &'static str, now: Instant) -> Option<u64> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let b = buckets.entry(reason).or_insert_with(|| Bucket {
            tokens: TokenBucket::full_at(LOG_PER_SEC, LOG_BURST, now),
            suppressed: 0,
        });
        if b.tokens.take_at(now).is_ok() {
            Some(std::mem::take(&mut b.suppressed))
        } else {
            b.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_flood_logs_a_burst_then_one_line_per_refill_with_the_suppressed_count() {
        let r = Refusals::default();
        let t0 = Instant::now();
        let logged = (0..1000).filter(|_| r.take("origin", t0).is_some()).count();
        assert_eq!(logged, LOG_BURST as usize);
        assert_eq!(
            r.take("origin", t0 + Duration::from_millis(500)),
            Some(1000 - LOG_BURST as u64)
        );
        assert!(
            r.take("capacity", t0).is_some(),
            "reasons have their own buckets"
        );
    }

    #[test]
    fn every_refusal_is_counted_even_when_not_logged() {
        let r = Refusals::default();
        for _ in 0..100 {
            r.record("auth_invalid", None, None, "test");
        }
        let n = r
            .counter
            .get_or_create(&ReasonLabel {
                reason: "auth_invalid",
            })
            .get();
        assert_eq!(n, 100);
    }
}
