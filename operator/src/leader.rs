//! Leader election on a `coordination.k8s.io/v1` Lease, so two operator replicas never reconcile at once.
//!
//! ```text
//! every renew interval:  get Lease ─┬─ absent ─────────────────────────────▶ create (holder = me)
//!                                   ├─ holder = me ────────────────────────▶ replace renewTime  ─┐
//!                                   ├─ empty, or unchanged for a whole lease ▶ take over         ├─ compare-and-swap
//!                                   │  duration on MY clock                                      │  on resourceVersion
//!                                   └─ held by another, changed recently ──▶ stand by            ┘
//! leading ─▶ controllers run;  no successful renew for the renew deadline ─▶ step down (lost)
//! shutdown ─▶ controllers stop, then the Lease is released so a standby takes over at once
//! ```
//!
//! No overlap, whatever the clocks of the machines say:
//! - a standby never compares the holder's `renewTime` with its own wall clock. It notes, on its own
//!   monotonic clock, when it last saw the Lease record change ([`Observer`]), and takes over only once
//!   the record has stood still for the whole lease duration;
//! - the leader counts from the moment it *sent* its last successful renew ([`Leadership`]) and steps
//!   down when the renew deadline — strictly shorter than the lease duration — passes without another.
//!   A standby saw that renew no earlier than it was sent, so it waits at least until then + the lease
//!   duration: the leader has stopped `lease duration − renew deadline` before (5 s by default), time for
//!   the controllers to stop. Only the clocks' rates must roughly agree, not their readings.
//!
//! Writes are `replace` calls carrying the `resourceVersion` that was read, so of two replicas racing for
//! an expired Lease exactly one succeeds (the other gets 409 Conflict and stands by).

use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use switchboard_runtime::report;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Errors of leader election.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Lease API call failed.
    #[error("{op} Lease {name}")]
    Kube {
        /// What was being done.
        op: &'static str,
        /// The Lease.
        name: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// The Lease could not be renewed within the renew deadline (or another replica holds it now).
    #[error("lost the leadership of Lease {0}")]
    Lost(String),
    /// The timing settings would let two leaders overlap.
    #[error("leader election timing: {0}")]
    Timing(String),
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Settings of the election.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a Lease stays valid without renewal; a standby takes over after it saw no change for this.
    pub lease_duration: Duration,
    /// The leader steps down when it has not renewed for this long; strictly shorter than the lease
    /// duration, the difference being the time its controllers get to stop.
    pub renew_deadline: Duration,
    /// How often the leader renews (under the renew deadline, so a failed renew can be retried).
    pub renew_interval: Duration,
    /// How often a standby tries to acquire.
    pub retry_interval: Duration,
}

impl LeaseConfig {
    /// Kubernetes' own controller defaults: 15 s lease, 10 s renew deadline; renew every 2 s (client-go's
    /// retry period), retry every 2 s.
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: identity.to_owned(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            renew_interval: Duration::from_secs(2),
            retry_interval: Duration::from_secs(2),
        }
    }

    /// Timing derived from a lease duration in the same proportions as the defaults: the renew deadline
    /// at two thirds of it, renewals and retries every seventh (at least 100 ms).
    #[must_use]
    pub fn with_lease_duration(mut self, lease_duration: Duration) -> Self {
        self.lease_duration = lease_duration;
        self.renew_deadline = lease_duration * 2 / 3;
        self.renew_interval = (lease_duration / 7).max(Duration::from_millis(100));
        self.retry_interval = self.renew_interval;
        self
    }

    /// Refuses timing that could let two leaders overlap: `renew interval < renew deadline < lease
    /// duration`.
    pub fn validate(&self) -> Result<()> {
        if self.renew_deadline >= self.lease_duration {
            return Err(Error::Timing(format!(
                "the renew deadline ({:?}) must be shorter than the lease duration ({:?})",
                self.renew_deadline, self.lease_duration
            )));
        }
        if self.renew_interval >= self.renew_deadline {
            return Err(Error::Timing(format!(
                "the renew interval ({:?}) must be shorter than the renew deadline ({:?})",
                self.renew_interval, self.renew_deadline
            )));
        }
        Ok(())
    }
}

/// The parts of a Lease record whose change shows that its holder is alive.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    transitions: Option<i32>,
}

impl Record {
    fn of(spec: &LeaseSpec) -> Self {
        Self {
            holder: spec.holder_identity.clone().filter(|h| !h.is_empty()),
            renew_time: spec.renew_time.clone(),
            transitions: spec.lease_transitions,
        }
    }
}

/// A candidate's view of someone else's Lease, on its own monotonic clock: when it last saw the record
/// change. The holder's timestamps are only compared with each other, never with this machine's clock.
#[derive(Debug, Default)]
pub struct Observer {
    seen: Option<(Record, Instant)>,
}

impl Observer {
    /// Notes `record` seen at `now`; the clock restarts only when the record differs from the last one.
    fn observe(&mut self, record: Record, now: Instant) {
        match &self.seen {
            Some((last, _)) if *last == record => {}
            _ => self.seen = Some((record, now)),
        }
    }

    /// Whether the last record seen has stood still for `duration` at `now` (or names no holder).
    fn expired(&self, now: Instant, duration: Duration) -> bool {
        match &self.seen {
            None => false,
            Some((record, _)) if record.holder.is_none() => true,
            Some((_, since)) => now.duration_since(*since) >= duration,
        }
    }
}

/// The leader's side: when it sent its last successful renew, and whether the deadline has passed.
#[derive(Debug, Default)]
pub struct Leadership {
    renewed: Option<Instant>,
}

impl Leadership {
    /// A renew sent at `sent` succeeded.
    fn renewed(&mut self, sent: Instant) {
        self.renewed = Some(sent);
    }

    /// Whether this replica leads (has renewed at least once and not stepped down).
    fn leading(&self) -> bool {
        self.renewed.is_some()
    }

    /// Time left at `now` before the leader must step down (zero when it must now).
    fn remaining(&self, now: Instant, deadline: Duration) -> Duration {
        self.renewed
            .map(|sent| deadline.saturating_sub(now.duration_since(sent)))
            .unwrap_or_default()
    }
}

/// One replica's side of the election.
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    observer: Mutex<Observer>,
}

impl std::fmt::Debug for Elector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elector")
            .field("config", &self.config)
            .finish()
    }
}

impl Elector {
    /// An elector for `config`.
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observer: Mutex::new(Observer::default()),
        }
    }

    /// The settings.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    fn err(&self, op: &'static str) -> impl FnOnce(kube::Error) -> Error {
        let name = self.config.name.clone();
        move |source| Error::Kube { op, name, source }
    }

    /// One round: acquires, renews or takes over the Lease. `Ok(true)` while this replica holds it.
    pub async fn try_acquire_or_renew(&self) -> Result<bool> {
        let now = Timestamp::now();
        let duration_secs = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(self.err("get"))?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(false),
                Err(source) => Err(self.err("create")(source)),
            };
        };
        let mut spec = lease.spec.take().unwrap_or_default();
        let record = Record::of(&spec);
        let mine = record.holder.as_deref() == Some(self.config.identity.as_str());
        if !mine {
            let valid_for = Duration::from_secs(
                u64::try_from(spec.lease_duration_seconds.unwrap_or(duration_secs)).unwrap_or(0),
            );
            let expired = match self.observer.lock() {
                Ok(mut observer) => {
                    observer.observe(record, Instant::now());
                    observer.expired(Instant::now(), valid_for)
                }
                Err(_) => false,
            };
            if !expired {
                return Ok(false);
            }
            spec.holder_identity = Some(self.config.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.lease_duration_seconds = Some(duration_secs);
        spec.renew_time = Some(MicroTime(now));
        lease.spec = Some(spec);
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(false),
            Err(source) => Err(self.err("update")(source)),
        }
    }

    /// Gives the Lease up if this replica holds it, so a standby need not wait for it to expire.
    pub async fn release(&self) -> Result<()> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(self.err("get"))?
        else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.acquire_time = None;
        spec.renew_time = None;
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(()),
            Err(source) => Err(self.err("release")(source)),
        }
    }

    /// Campaigns until `shutdown`, publishing whether this replica leads on `leading`. Returns
    /// [`Error::Lost`] when a held Lease was not renewed within the renew deadline (or another replica
    /// took it); on shutdown it releases the Lease and returns `Ok`. Refuses timing that could overlap
    /// ([`LeaseConfig::validate`]).
    pub async fn run(
        &self,
        leading: watch::Sender<bool>,
        shutdown: CancellationToken,
    ) -> Result<()> {
        self.config.validate()?;
        let mut leadership = Leadership::default();
        loop {
            let sent = Instant::now();
            let attempt = if leadership.leading() {
                // A renew still pending at the deadline is as good as failed.
                let left = leadership.remaining(sent, self.config.renew_deadline);
                match tokio::time::timeout(left, self.try_acquire_or_renew()).await {
                    Ok(result) => result,
                    Err(_) => Ok(false),
                }
            } else {
                self.try_acquire_or_renew().await
            };
            let wait = match attempt {
                Ok(true) => {
                    if !leadership.leading() {
                        info!(lease = %self.config.name, identity = %self.config.identity, "became the leader");
                    }
                    leadership.renewed(sent);
                    leading.send_replace(true);
                    self.config.renew_interval
                }
                Ok(false) if leadership.leading() => {
                    leading.send_replace(false);
                    return Err(Error::Lost(self.config.name.clone()));
                }
                Ok(false) => self.config.retry_interval,
                Err(err) => {
                    warn!(error = %report::chain(&err), "leader election round failed");
                    self.config.retry_interval
                }
            };
            let wait = if leadership.leading() {
                let left = leadership.remaining(Instant::now(), self.config.renew_deadline);
                if left.is_zero() {
                    leading.send_replace(false);
                    return Err(Error::Lost(self.config.name.clone()));
                }
                wait.min(left)
            } else {
                wait
            };
            tokio::select! {
                () = shutdown.cancelled() => {
                    if leadership.leading() {
                        leading.send_replace(false);
                        if let Err(err) = self.release().await {
                            warn!(error = %report::chain(&err), "could not release the Lease");
                        }
                    }
                    return Ok(());
                }
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn record(holder: Option<&str>, renew: &str) -> Record {
        Record {
            holder: holder.map(str::to_owned),
            renew_time: Some(MicroTime(renew.parse::<Timestamp>().unwrap_or_default())),
            transitions: Some(0),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_standby_judges_expiry_on_its_own_clock_from_when_the_lease_last_changed() {
        let duration = Duration::from_secs(15);
        let mut observer = Observer::default();
        // The holder's renewTime is years in the past by any clock: irrelevant, only change counts.
        let old = record(Some("a"), "2001-01-01T00:00:00Z");
        observer.observe(old.clone(), Instant::now());
        assert!(
            !observer.expired(Instant::now(), duration),
            "first sight never expires at once"
        );
        tokio::time::advance(Duration::from_secs(14)).await;
        observer.observe(old.clone(), Instant::now());
        assert!(
            !observer.expired(Instant::now(), duration),
            "the same record does not restart the clock, 14 s < 15 s"
        );
        // A renew (a changed renewTime, even one in the future) restarts the clock.
        let renewed = record(Some("a"), "2999-01-01T00:00:00Z");
        observer.observe(renewed.clone(), Instant::now());
        tokio::time::advance(Duration::from_secs(14)).await;
        observer.observe(renewed.clone(), Instant::now());
        assert!(!observer.expired(Instant::now(), duration));
        tokio::time::advance(Duration::from_secs(1)).await;
        observer.observe(renewed, Instant::now());
        assert!(
            observer.expired(Instant::now(), duration),
            "unchanged for the whole duration"
        );
        // A released Lease (no holder) may be taken at once.
        let mut fresh = Observer::default();
        fresh.observe(record(None, "2001-01-01T00:00:00Z"), Instant::now());
        assert!(fresh.expired(Instant::now(), duration));
    }

    #[tokio::test(start_paused = true)]
    async fn the_leader_steps_down_before_any_standby_can_take_over() {
        let config = LeaseConfig::new("ns", "lease", "a");
        config.validate().unwrap_or_else(|e| panic!("{e}"));
        let mut leadership = Leadership::default();
        let mut standby = Observer::default();
        // The leader sends a renew; the write lands and the standby sees it a little later.
        let sent = Instant::now();
        tokio::time::advance(Duration::from_millis(300)).await;
        leadership.renewed(sent);
        let renewed = record(Some("a"), "2026-01-01T00:00:00Z");
        tokio::time::advance(Duration::from_millis(200)).await;
        standby.observe(renewed.clone(), Instant::now());
        // From here every renew fails. Step through time in small steps.
        let mut stepped_down = None;
        let mut taken_over = None;
        for _ in 0..400 {
            tokio::time::advance(Duration::from_millis(50)).await;
            let now = Instant::now();
            if stepped_down.is_none() && leadership.remaining(now, config.renew_deadline).is_zero()
            {
                stepped_down = Some(now);
            }
            standby.observe(renewed.clone(), now);
            if taken_over.is_none() && standby.expired(now, config.lease_duration) {
                taken_over = Some(now);
            }
        }
        let (Some(down), Some(over)) = (stepped_down, taken_over) else {
            panic!("both happen within 20 s: {stepped_down:?} {taken_over:?}");
        };
        assert!(
            down < over,
            "leader stepped down at {down:?}, standby took over at {over:?}"
        );
        assert!(
            over.duration_since(down) >= config.lease_duration - config.renew_deadline,
            "the controllers get lease duration - renew deadline to stop"
        );
    }

    #[test]
    fn timing_that_could_overlap_is_refused() {
        let config = LeaseConfig::new("ns", "lease", "a");
        assert!(config.renew_deadline < config.lease_duration);
        assert!(config.validate().is_ok());
        let derived = config.clone().with_lease_duration(Duration::from_secs(3));
        assert!(derived.validate().is_ok(), "{derived:?}");
        assert_eq!(derived.renew_deadline, Duration::from_secs(2));
        let mut bad = config.clone();
        bad.renew_deadline = bad.lease_duration;
        assert!(
            matches!(bad.validate(), Err(Error::Timing(m)) if m.contains("shorter than the lease duration"))
        );
        let mut bad = config;
        bad.renew_interval = bad.renew_deadline;
        assert!(
            matches!(bad.validate(), Err(Error::Timing(m)) if m.contains("shorter than the renew deadline"))
        );
    }
}
