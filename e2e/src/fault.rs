//! Fault scenarios that count every message: a load of resilient room members runs while a fault
//! strikes, and afterwards every acknowledged message is checked at every member.
//!
//! ```text
//!  members (some also send) ──assign──▶ registry ──▶ node ──join(since)──▶ room
//!      │ send(client_id) … ack      reconnect with backoff + jitter, re-join with since,
//!      │                            resend every unacked client_id (idempotent)
//!      ▼
//!  Outcome: sent, acked, delivered, lost, duplicated, out of order, recovery times
//! ```
//!
//! A member behaves as a careful real client would: it treats a `reconnect` notice, a closed socket, or
//! an ack that does not come within `ack_timeout` as "this node is gone", asks a registry again and
//! resends with the same `client_id` whatever it has not seen acknowledged.

use crate::client::{self, ChatClient, Frame};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The load a scenario runs.
#[derive(Clone, Debug)]
pub struct Load {
    /// Room members (each one connection).
    pub members: usize,
    /// How many of the members also send.
    pub senders: usize,
    /// Messages each sender sends.
    pub messages_per_sender: usize,
    /// Gap between two sends of one sender.
    pub interval: Duration,
    /// An ack later than this means the node is gone.
    pub ack_timeout: Duration,
    /// Upper bound for the whole run after the fault started.
    pub deadline: Duration,
    /// Room name.
    pub room: String,
}

impl Default for Load {
    fn default() -> Self {
        Self {
            members: 12,
            senders: 4,
            messages_per_sender: 100,
            interval: Duration::from_millis(20),
            ack_timeout: Duration::from_secs(3),
            deadline: Duration::from_secs(90),
            room: format!("fault-{:08x}", fastrand::u32(..)),
        }
    }
}

/// What a scenario measured.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Messages sent (first attempts; resends not counted).
    pub sent: usize,
    /// Distinct messages acknowledged.
    pub acked: usize,
    /// (member, acknowledged message) pairs delivered.
    pub delivered: usize,
    /// (member, acknowledged message) pairs never delivered.
    pub lost: usize,
    /// Extra deliveries of a message a member already had.
    pub duplicated: usize,
    /// Deliveries whose sequence was not above the previous one's.
    pub out_of_order: usize,
    /// Time from losing a node to being joined again, per reconnect.
    pub recoveries: Vec<Duration>,
    /// Members that had not caught up when the deadline passed.
    pub unfinished: usize,
    /// A few of the lost (member, sequence) pairs, for the report.
    pub lost_examples: Vec<(String, u64)>,
}

impl Outcome {
    /// True when nothing acknowledged was lost, duplicated or reordered and every member finished.
    pub fn is_clean(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.out_of_order == 0
            && self.unfinished == 0
            && self.acked == self.sent
    }

    /// Recovery-time percentile (0–100), if any recovery happened.
    pub fn recovery_percentile(&self, p: f64) -> Option<Duration> {
        if self.recoveries.is_empty() {
            return None;
        }
        let mut v = self.recoveries.clone();
        v.sort();
        let idx = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        v.get(idx.min(v.len() - 1)).copied()
    }
}

/// Column headings of [`Outcome::table_row`].
pub const TABLE_HEADER: &str = "scenario             sent  acked delivered  lost   dup order unfinished reconnects  rec p50  rec p99  rec max";

impl Outcome {
    /// One line of the fault report, under [`TABLE_HEADER`].
    pub fn table_row(&self, scenario: &str) -> String {
        let ms = |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{}ms", d.as_millis()));
        format!(
            "{:<18} {:>6} {:>6} {:>9} {:>5} {:>5} {:>5} {:>10} {:>10} {:>8} {:>8} {:>8}",
            scenario,
            self.sent,
            self.acked,
            self.delivered,
            self.lost,
            self.duplicated,
            self.out_of_order,
            self.unfinished,
            self.recoveries.len(),
            ms(self.recovery_percentile(50.0)),
            ms(self.recovery_percentile(99.0)),
            ms(self.recovery_percentile(100.0)),
        )
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{TABLE_HEADER}\n{}", self.table_row("outcome"))?;
        if !self.lost_examples.is_empty() {
            write!(f, "\nlost (member, seq): {:?}", self.lost_examples)?;
        }
        Ok(())
    }
}

struct Shared {
    registries: Vec<String>,
    credentials: client::Credentials,
    load: Load,
    joined: AtomicUsize,
    go: AtomicBool,
    senders_done: AtomicUsize,
    max_acked_seq: AtomicU64,
    target: AtomicU64,
    stop: AtomicBool,
}

#[derive(Default)]
struct MemberReport {
    user: String,
    sent: usize,
    acks: HashMap<String, u64>,
    received: Vec<(u64, String)>,
    recoveries: Vec<Duration>,
    finished: bool,
}

struct Member {
    index: usize,
    user: String,
    sends: usize,
    shared: Arc<Shared>,
    report: MemberReport,
    last_seq: u64,
    ever_joined: bool,
    /// client_id -> (body, when last sent; None = send again)
    pending: BTreeMap<String, (String, Option<Instant>)>,
    next_send: Instant,
}

enum Gone {
    /// The node is gone (closed, reconnect notice, silent): reconnect.
    Node,
    /// The run is over.
    Done,
}

impl Member {
    async fn run(mut self) -> MemberReport {
        let mut lost_at: Option<Instant> = None;
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 0usize;
        // The node this member lost or could not open last: the registry is asked to avoid it.
        let mut lost_node: Option<String> = None;
        loop {
            if self.shared.stop.load(Ordering::Acquire) {
                return self.report;
            }
            let registry =
                &self.shared.registries[(self.index + attempt) % self.shared.registries.len()];
            attempt += 1;
            let mut tried = None;
            let connected = async {
                // A careful client asks the registry not to send it back to the node it lost.
                let avoid: Vec<&str> = lost_node.iter().map(String::as_str).collect();
                let a = client::assign_avoiding(registry, &avoid).await?;
                tried = Some(a.node.clone());
                let options = self.shared.credentials.options(&self.user);
                let mut c = ChatClient::connect_with(&a.url, options).await?;
                let since = self.ever_joined.then_some(self.last_seq);
                let mut join = serde_json::json!({"type":"join","room":self.shared.load.room});
                if let Some(s) = since {
                    join["since"] = s.into();
                }
                c.send_frame(&join).await?;
                c.expect_type("joined", Duration::from_secs(5)).await?;
                Ok::<_, client::Error>(c)
            }
            .await;
            let mut c = match connected {
                Ok(c) => c,
                Err(_) => {
                    lost_node = tried.or(lost_node);
                    let jitter = fastrand::u64(0..=backoff.as_millis() as u64 / 2);
                    tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            if let Some(t) = lost_at.take() {
                self.report.recoveries.push(t.elapsed());
            }
            if !self.ever_joined {
                self.ever_joined = true;
                self.shared.joined.fetch_add(1, Ordering::AcqRel);
            }
            for (_, sent_at) in self.pending.values_mut() {
                *sent_at = None;
            }
            match self.session(&mut c).await {
                Gone::Done => {
                    let _ = c.close().await;
                    self.report.finished = true;
                    return self.report;
                }
                Gone::Node => {
                    lost_at = Some(Instant::now());
                    lost_node = tried;
                }
            }
        }
    }

    fn sending_done(&self) -> bool {
        self.report.sent >= self.sends && self.pending.is_empty()
    }

    async fn session(&mut self, c: &mut ChatClient) -> Gone {
        let room = self.shared.load.room.clone();
        let mut reported_done = false;
        loop {
            if self.shared.stop.load(Ordering::Acquire) {
                return Gone::Done;
            }
            let now = Instant::now();
            if self.shared.go.load(Ordering::Acquire)
                && self.report.sent < self.sends
                && now >= self.next_send
            {
                let n = self.report.sent;
                let cid = format!("{}-{n}", self.user);
                self.pending
                    .insert(cid, (format!("{} #{n}", self.user), None));
                self.report.sent += 1;
                self.next_send = now + self.shared.load.interval;
            }
            let mut failed = false;
            for (cid, (body, sent_at)) in self.pending.iter_mut() {
                match sent_at {
                    Some(t) if t.elapsed() > self.shared.load.ack_timeout => return Gone::Node,
                    Some(_) => {}
                    None => {
                        let f = serde_json::json!({"type":"send","room":room,"body":body,"client_id":cid});
                        if c.send_frame(&f).await.is_err() {
                            failed = true;
                            break;
                        }
                        *sent_at = Some(Instant::now());
                    }
                }
            }
            if failed {
                return Gone::Node;
            }
            if self.sending_done() && !reported_done {
                reported_done = true;
                if self.sends > 0 {
                    self.shared.senders_done.fetch_add(1, Ordering::AcqRel);
                }
            }
            let target = self.shared.target.load(Ordering::Acquire);
            if reported_done && target > 0 && self.last_seq >= target {
                return Gone::Done;
            }
            match c.next_frame_within(Duration::from_millis(10)).await {
                Ok(f) => {
                    if let Some(g) = self.on_frame(&f, &room) {
                        return g;
                    }
                }
                Err(client::Error::Timeout { .. }) => {}
                Err(_) => return Gone::Node,
            }
        }
    }

    fn on_frame(&mut self, f: &Frame, room: &str) -> Option<Gone> {
        match f["type"].as_str() {
            Some("message") if f["room"] == room => {
                let seq = f["seq"].as_u64().unwrap_or(0);
                let cid = f["client_id"].as_str().unwrap_or("").to_owned();
                self.report.received.push((seq, cid));
                self.last_seq = self.last_seq.max(seq);
            }
            Some("ack") => {
                let cid = f["client_id"].as_str().unwrap_or("").to_owned();
                let seq = f["seq"].as_u64().unwrap_or(0);
                if self.pending.remove(&cid).is_some() || !self.report.acks.contains_key(&cid) {
                    self.report.acks.insert(cid, seq);
                    self.shared.max_acked_seq.fetch_max(seq, Ordering::AcqRel);
                }
            }
            Some("error") if f["code"] == "unavailable" || f["code"] == "rate_limited" => {
                // Nothing was stored (or not durably): send again after a pause.
                for (_, sent_at) in self.pending.values_mut() {
                    if sent_at.is_some_and(|t| t.elapsed() > Duration::from_millis(200)) {
                        *sent_at = None;
                    }
                }
            }
            Some("reconnect") => return Some(Gone::Node),
            _ => {}
        }
        None
    }
}

/// Runs `load` against the registries (members identify with `credentials`), starts `fault` once
/// every member has joined and sending has begun, and returns what every member saw.
pub async fn run<F>(
    registries: Vec<String>,
    credentials: client::Credentials,
    load: Load,
    fault: F,
) -> Outcome
where
    F: std::future::Future<Output = ()>,
{
    let shared = Arc::new(Shared {
        registries,
        credentials,
        load: load.clone(),
        joined: AtomicUsize::new(0),
        go: AtomicBool::new(false),
        senders_done: AtomicUsize::new(0),
        max_acked_seq: AtomicU64::new(0),
        target: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let senders = load.senders.min(load.members);
    let handles: Vec<_> = (0..load.members)
        .map(|i| {
            let user = format!("m{i}-{:04x}", fastrand::u16(..));
            let m = Member {
                index: i,
                user: user.clone(),
                sends: if i < senders {
                    load.messages_per_sender
                } else {
                    0
                },
                shared: shared.clone(),
                report: MemberReport {
                    user,
                    ..MemberReport::default()
                },
                last_seq: 0,
                ever_joined: false,
                pending: BTreeMap::new(),
                next_send: Instant::now(),
            };
            tokio::spawn(m.run())
        })
        .collect();
    let started = Instant::now();
    while shared.joined.load(Ordering::Acquire) < load.members
        && started.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shared.go.store(true, Ordering::Release);
    let begun = Instant::now();
    tokio::time::sleep(load.interval * 10).await;
    fault.await;
    while shared.senders_done.load(Ordering::Acquire) < senders && begun.elapsed() < load.deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shared.target.store(
        shared.max_acked_seq.load(Ordering::Acquire).max(1),
        Ordering::Release,
    );
    let mut reports = Vec::new();
    let watchdog = {
        let shared = shared.clone();
        let left = load
            .deadline
            .saturating_sub(begun.elapsed())
            .max(Duration::from_secs(10));
        tokio::spawn(async move {
            tokio::time::sleep(left).await;
            shared.stop.store(true, Ordering::Release);
        })
    };
    for h in handles {
        if let Ok(r) = h.await {
            reports.push(r);
        }
    }
    watchdog.abort();
    analyse(&reports)
}

fn analyse(reports: &[MemberReport]) -> Outcome {
    let mut acked: HashMap<&str, u64> = HashMap::new();
    let mut out = Outcome::default();
    for r in reports {
        out.sent += r.sent;
        for (cid, seq) in &r.acks {
            acked.insert(cid, *seq);
        }
        out.recoveries.extend(r.recoveries.iter().copied());
        if !r.finished {
            out.unfinished += 1;
        }
    }
    out.acked = acked.len();
    for r in reports {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        let mut last = 0;
        for (seq, cid) in &r.received {
            if *seq <= last {
                out.out_of_order += 1;
            }
            last = last.max(*seq);
            *counts.entry(cid.as_str()).or_default() += 1;
        }
        for cid in acked.keys() {
            match counts.get(cid) {
                Some(n) => {
                    out.delivered += 1;
                    out.duplicated += n - 1;
                }
                None => {
                    out.lost += 1;
                    if out.lost_examples.len() < 10 {
                        out.lost_examples
                            .push((r.user.clone(), acked.get(cid).copied().unwrap_or(0)));
                    }
                }
            }
        }
    }
    out
}

/// A fault to inject while the load runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// One chat-node dies with SIGKILL.
    NodeKill,
    /// Every chat-node is drained (SIGTERM) and restarted, one after another.
    RollingRestart,
    /// The Redis master dies with SIGKILL; Sentinel promotes a replica.
    MasterKill,
    /// One chat-node is frozen (SIGSTOP) for some seconds, cut off from Redis and its clients, then
    /// resumed (SIGCONT).
    NodeFreeze,
    /// The master role is handed to a replica as the operator does before it restarts the master:
    /// writes held, replicas caught up, `SENTINEL FAILOVER`.
    PlannedFailover,
}

impl Scenario {
    /// Every scenario, in report order.
    pub const ALL: [Scenario; 5] = [
        Scenario::NodeKill,
        Scenario::RollingRestart,
        Scenario::MasterKill,
        Scenario::NodeFreeze,
        Scenario::PlannedFailover,
    ];

    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::NodeKill => "node-kill",
            Scenario::RollingRestart => "rolling-restart",
            Scenario::MasterKill => "redis-master-kill",
            Scenario::NodeFreeze => "node-freeze",
            Scenario::PlannedFailover => "redis-planned-failover",
        }
    }
}

/// Errors setting a scenario up (the outcome itself is data, not an error).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Redis master, replicas or sentinels did not start.
    #[error("starting the HA Redis")]
    Redis(#[source] std::io::Error),
    /// The chat-nodes or registries did not start.
    #[error("starting the HA topology")]
    Start(#[source] crate::topology::Error),
    /// The fault could not be injected.
    #[error("injecting {scenario}")]
    Inject {
        /// Scenario name.
        scenario: &'static str,
        /// What failed.
        #[source]
        source: InjectError,
    },
}

/// Nodes of the HA topology.
pub const HA_NODES: usize = 3;
/// Registries of the HA topology.
pub const HA_REGISTRIES: usize = 2;
/// How long a frozen node stays frozen.
pub const FREEZE: Duration = Duration::from_secs(5);

/// Starts the HA topology (master, 2 replicas, 3 sentinels, 3 nodes acking after one replica confirms,
/// 2 registries), runs `load` while `scenario` strikes, and returns the outcome.
pub async fn run_scenario(scenario: Scenario, load: Load) -> Result<Outcome, Error> {
    let redis = crate::ha::RedisHa::start().await.map_err(Error::Redis)?;
    let mut config = crate::topology::TopologyConfig::scaled(HA_NODES, HA_REGISTRIES)
        .with_node_args([
            "--ack-replicas",
            "1",
            "--ack-timeout",
            "2s",
            "--drain-timeout",
            "5s",
            "--heartbeat-ttl",
            "2s",
        ]);
    config.external_redis = Some(redis.flags());
    let mut topology = crate::topology::Topology::start(config)
        .await
        .map_err(Error::Start)?;
    let registries: Vec<String> = (0..topology.registry_count())
        .map(|i| topology.registry_url(i))
        .collect();
    let credentials = topology.credentials().clone();
    let mut redis = redis;
    let mut injected: Result<(), InjectError> = Ok(());
    let outcome = {
        let topology = &mut topology;
        let redis = &mut redis;
        let injected = &mut injected;
        run(registries, credentials, load, async move {
            *injected = inject(scenario, topology, redis).await;
        })
        .await
    };
    injected.map_err(|source| Error::Inject {
        scenario: scenario.name(),
        source,
    })?;
    Ok(outcome)
}

/// Why a fault could not be injected.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// A chat-node could not be killed, signalled, awaited or restarted.
    #[error("acting on a chat-node")]
    Node(#[from] crate::topology::Error),
    /// The Redis master could not be killed or no failover followed.
    #[error("killing the Redis master")]
    Redis(#[from] std::io::Error),
    /// The node to freeze had already exited.
    #[error("node {0} is not running")]
    NotRunning(usize),
}

async fn inject(
    scenario: Scenario,
    t: &mut crate::topology::Topology,
    redis: &mut crate::ha::RedisHa,
) -> Result<(), InjectError> {
    match scenario {
        Scenario::NodeKill => t.kill_node(0)?,
        Scenario::RollingRestart => {
            for i in 0..t.node_count() {
                t.signal_term_node(i)?;
                t.wait_node_exit(i, Duration::from_secs(20)).await?;
                t.restart_node(i).await?;
            }
        }
        Scenario::MasterKill => {
            redis.kill_master(Duration::from_secs(30)).await?;
        }
        Scenario::NodeFreeze => {
            let pid = t.node_pid(1).ok_or(InjectError::NotRunning(1))?;
            crate::topology::signal(pid, "STOP")?;
            tokio::time::sleep(FREEZE).await;
            crate::topology::signal(pid, "CONT")?;
        }
        Scenario::PlannedFailover => {
            redis.planned_failover(Duration::from_secs(30)).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analysis_counts_losses_duplicates_and_disorder() {
        let sender = MemberReport {
            sent: 3,
            acks: [
                ("a".to_owned(), 1),
                ("b".to_owned(), 2),
                ("c".to_owned(), 3),
            ]
            .into(),
            received: vec![(1, "a".into()), (2, "b".into()), (3, "c".into())],
            finished: true,
            ..Default::default()
        };
        let unlucky = MemberReport {
            received: vec![(1, "a".into()), (1, "a".into()), (3, "c".into())],
            finished: true,
            ..Default::default()
        };
        let o = analyse(&[sender, unlucky]);
        assert_eq!((o.sent, o.acked, o.delivered), (3, 3, 5));
        assert_eq!((o.lost, o.duplicated, o.out_of_order), (1, 1, 1));
        assert!(!o.is_clean());
    }

    #[test]
    fn percentiles_pick_from_sorted_recoveries() {
        let o = Outcome {
            recoveries: (1..=100).rev().map(Duration::from_millis).collect(),
            ..Default::default()
        };
        assert_eq!(o.recovery_percentile(50.0), Some(Duration::from_millis(51)));
        assert_eq!(
            o.recovery_percentile(100.0),
            Some(Duration::from_millis(100))
        );
        assert_eq!(Outcome::default().recovery_percentile(50.0), None);
    }
}
