//! Leader election on a `coordination.k8s.io/v1` Lease, so two operator replicas never reconcile at once.
//!
//! ```text
//! every renew interval:  get Lease ─┬─ absent ───────────────────────▶ create (holder = me)
//!                                   ├─ holder = me ──────────────────▶ replace renewTime   ─┐
//!                                   ├─ empty or renewTime + duration < now ▶ take over      ├─ compare-and-swap on
//!                                   └─ held by another, fresh ───────▶ stand by             ┘  resourceVersion
//! leading ─▶ controllers run;  a renew that fails for a whole lease duration ─▶ leadership lost
//! shutdown ─▶ controllers stop, then the Lease is released so a standby takes over at once
//! ```
//!
//! Writes are `replace` calls carrying the `resourceVersion` that was read, so of two replicas racing for
//! an expired Lease exactly one succeeds (the other gets 409 Conflict and stands by).

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use switchboard_runtime::report;
use tokio::sync::watch;
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
    /// The Lease could not be renewed within its duration: another replica may lead now.
    #[error("lost the leadership of Lease {0}")]
    Lost(String),
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
    /// How long a Lease stays valid without renewal; a standby takes over after this.
    pub lease_duration: Duration,
    /// How often the leader renews (well under the duration).
    pub renew_interval: Duration,
    /// How often a standby tries to acquire.
    pub retry_interval: Duration,
}

impl LeaseConfig {
    /// Defaults from Kubernetes' own controllers, scaled down: 15 s lease, renew every 5 s, retry every 2 s.
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: identity.to_owned(),
            lease_duration: Duration::from_secs(15),
            renew_interval: Duration::from_secs(5),
            retry_interval: Duration::from_secs(2),
        }
    }
}

/// One replica's side of the election.
#[derive(Clone)]
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
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
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(self.config.identity.as_str());
        if !mine {
            let valid_for = Duration::from_secs(
                u64::try_from(spec.lease_duration_seconds.unwrap_or(duration_secs)).unwrap_or(0),
            );
            let fresh = spec.renew_time.as_ref().is_some_and(|t| {
                Duration::try_from(now.duration_since(t.0)).is_ok_and(|age| age < valid_for)
                    || t.0 > now
            });
            if holder.is_some() && fresh {
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
    /// [`Error::Lost`] when a held Lease could not be renewed for a whole lease duration; on shutdown it
    /// releases the Lease and returns `Ok`.
    pub async fn run(
        &self,
        leading: watch::Sender<bool>,
        shutdown: CancellationToken,
    ) -> Result<()> {
        let mut last_renewal: Option<Instant> = None;
        loop {
            let wait = match self.try_acquire_or_renew().await {
                Ok(true) => {
                    if last_renewal.is_none() {
                        info!(lease = %self.config.name, identity = %self.config.identity, "became the leader");
                    }
                    last_renewal = Some(Instant::now());
                    leading.send_replace(true);
                    self.config.renew_interval
                }
                Ok(false) => {
                    if last_renewal.is_some() {
                        leading.send_replace(false);
                        return Err(Error::Lost(self.config.name.clone()));
                    }
                    self.config.retry_interval
                }
                Err(err) => {
                    warn!(error = %report::chain(&err), "leader election round failed");
                    if last_renewal.is_some_and(|t| t.elapsed() >= self.config.lease_duration) {
                        leading.send_replace(false);
                        return Err(Error::Lost(self.config.name.clone()));
                    }
                    self.config.retry_interval
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => {
                    if last_renewal.is_some() {
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
