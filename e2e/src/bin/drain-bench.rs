//! Drain benchmark: how hard a drained node's clients hit the rest of the cluster, and how long until
//! they are all back.
//!
//! It starts Redis, `1 + receivers` chat-nodes and a registry (via `e2e::topology`, open identity,
//! capacity lifted), connects `clients` clients to node-0, drains node-0 (SIGTERM) and lets every
//! client behave as a careful real one: on `reconnect` it waits the notice's `retry_after_ms`, on a
//! close it goes at once; then it asks the registry (`/v1/assign`) and connects to the node named,
//! retrying with backoff and jitter until it is welcomed by a node other than node-0. It prints
//!
//! - reconnects per second, both as they hit the cluster (a client's first `/v1/assign` after its
//!   notice) and as they complete (welcomed by another node): the maximum over any 1 s window and the
//!   median over the 1 s buckets between the first and the last one;
//! - when the first and the last notice arrived, and how many clients were closed without one;
//! - the time from SIGTERM until every client is back on another node.
//!
//! ```text
//! cargo build -p chat-node -p registry
//! cargo run -p e2e --bin drain-bench -- --clients 3000
//! # main's behaviour: point SWITCHBOARD_BIN_DIR at a directory with main's chat-node and registry
//! SWITCHBOARD_BIN_DIR=/path/to/main/bins cargo run -p e2e --bin drain-bench -- --clients 3000
//! ```
//!
//! On a loaded machine completions lag behind attempts (the registry, the receiving nodes and this
//! process share the CPU), so the attempt figures are the ones that show the pacing.
//!
//! Bounded: at most 20 000 clients, and the whole run is cut at `--timeout`. It needs about two file
//! descriptors per client (and the nodes as many); it checks the soft `RLIMIT_NOFILE` first.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use e2e::client::{Assignment, ChatClient, Error, frame_type};
use e2e::topology::{Auth, Topology, TopologyConfig};
use futures_util::StreamExt as _;
use switchboard_runtime::{duration, report};
use tokio::sync::Barrier;
use tokio::time::Instant;

/// Most clients one run may open.
const MAX_CLIENTS: u32 = 20_000;
/// Connections opened to node-0 at once while setting up.
const CONNECT_CONCURRENCY: usize = 100;

/// Switchboard drain benchmark (loopback only, bounded in count and time).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Clients connected to the drained node (1 to 20000).
    #[arg(long, env = "BENCH_CLIENTS", default_value_t = 3000,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_CLIENTS)))]
    clients: u32,
    /// Nodes that take the clients over.
    #[arg(long, env = "BENCH_RECEIVERS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=16))]
    receivers: u32,
    /// The drained node's --drain-timeout.
    #[arg(long, env = "BENCH_DRAIN_TIMEOUT", default_value = "10s",
          value_parser = duration::within(Duration::ZERO, Duration::from_secs(600)))]
    drain_timeout: Duration,
    /// The nodes' --drain-notice-rate (omitted: the binary's default; leave it out for a binary that
    /// predates paced drains).
    #[arg(long, env = "BENCH_DRAIN_NOTICE_RATE")]
    drain_notice_rate: Option<u32>,
    /// Upper bound of the whole run, 10s to 1h.
    #[arg(long, env = "BENCH_TIMEOUT", default_value = "180s",
          value_parser = duration::within(Duration::from_secs(10), Duration::from_secs(3600)))]
    timeout: Duration,
}

/// What happened to one client.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    /// When its `reconnect` notice arrived (None: closed without one).
    told: Option<Duration>,
    /// When it first asked the registry again.
    asked: Duration,
    /// When a node other than node-0 welcomed it back.
    back: Duration,
    /// Assignments or connections that failed before it was back.
    retries: u32,
}

#[tokio::main]
async fn main() -> ExitCode {
    report::exit("drain-bench", run().await)
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    e2e::topology::check_open_files(args.clients as usize * 2 + 256)?;
    match tokio::time::timeout(args.timeout, bench(&args)).await {
        Ok(result) => result,
        Err(_) => bail!("the run did not finish within --timeout {:?}", args.timeout),
    }
}

async fn bench(args: &Args) -> anyhow::Result<()> {
    let mut node_args = vec![
        "--capacity".to_owned(),
        "1000000".into(),
        "--drain-timeout".into(),
        format!("{}ms", args.drain_timeout.as_millis()),
    ];
    if let Some(rate) = args.drain_notice_rate {
        node_args.extend(["--drain-notice-rate".to_owned(), rate.to_string()]);
    }
    let config = TopologyConfig {
        log_filter: "warn".into(),
        auth: Auth::Open,
        ..TopologyConfig::scaled(1 + args.receivers as usize, 1).with_node_args(node_args)
    };
    let bin = e2e::topology::bin_dir_or_build(&["chat-node", "registry"])?;
    let mut t = Topology::start(config)
        .await
        .context("starting Redis, the chat-nodes and a registry")?;
    println!(
        "topology: redis + {} chat-nodes + 1 registry, binaries from {}",
        1 + args.receivers,
        bin.display()
    );
    let drained_url = t.node_ws_url(0);
    let drained_id = t.node_id(0);
    let registry = t.registry_url(0);
    let run_id = format!("{:06x}", fastrand::u32(..0xff_ffff));
    // One HTTP client (pooled connections) for every client's /v1/assign: a client per request would
    // make this process, not the cluster, the bottleneck.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .context("building the HTTP client")?;
    let assign_url = format!("{}/v1/assign", registry.trim_end_matches('/'));

    let clients = args.clients as usize;
    let connected: Vec<ChatClient> = futures_util::stream::iter(0..clients)
        .map(|i| {
            let url = drained_url.clone();
            let user = format!("d{i}-{run_id}");
            async move { ChatClient::connect(&url, &user).await }
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .context("connecting the clients to node-0")?;
    println!(
        "{clients} clients on {drained_id}; draining it (--drain-timeout {:?}, --drain-notice-rate {})",
        args.drain_timeout,
        args.drain_notice_rate
            .map_or("default".to_owned(), |r| r.to_string())
    );

    // Every client task is waiting before the clock starts.
    let start = Arc::new(Barrier::new(clients + 1));
    let tasks: Vec<_> = connected
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let start = start.clone();
            let way_back = WayBack {
                http: http.clone(),
                assign_url: assign_url.clone(),
                drained: drained_id.clone(),
                user: format!("d{i}-{run_id}"),
            };
            tokio::spawn(async move {
                start.wait().await;
                way_back.come_back(c, Instant::now()).await
            })
        })
        .collect();
    start.wait().await;
    let sigterm = Instant::now();
    t.signal_term_node(0).context("SIGTERM node-0")?;
    let mut outcomes = Vec::with_capacity(clients);
    let mut held = Vec::with_capacity(clients);
    for task in tasks {
        let (outcome, client) = task.await.context("client task")??;
        // The barrier released every task within microseconds of `sigterm`; times are from there.
        outcomes.push(outcome);
        held.push(client);
    }
    let exit = t
        .wait_node_exit(0, args.drain_timeout + Duration::from_secs(30))
        .await
        .context("node-0 did not exit after its drain")?;
    print_report(&outcomes, sigterm.elapsed(), exit.success());
    drop(held);
    Ok(())
}

/// How one client finds its way back.
struct WayBack {
    http: reqwest::Client,
    assign_url: String,
    drained: String,
    user: String,
}

impl WayBack {
    /// Wait for the notice (or the close), then come back through the registry.
    async fn come_back(
        &self,
        mut c: ChatClient,
        t0: Instant,
    ) -> anyhow::Result<(Outcome, ChatClient)> {
        let limit = Duration::from_secs(3600);
        let told = match c
            .wait_for(|f| frame_type(f) == Some("reconnect"), limit)
            .await
        {
            Ok(notice) => {
                let told = t0.elapsed();
                let retry = notice["retry_after_ms"].as_u64().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(retry)).await;
                Some(told)
            }
            Err(Error::Closed { .. }) => None,
            Err(e) => return Err(e).context("waiting for the reconnect notice"),
        };
        drop(c);
        let asked = t0.elapsed();
        let mut retries = 0;
        let mut backoff = Duration::from_millis(50);
        loop {
            if let Some(a) = self.assign().await
                && a.node != self.drained
                && let Ok(back) = ChatClient::connect(&a.url, &self.user).await
            {
                let outcome = Outcome {
                    told,
                    asked,
                    back: t0.elapsed(),
                    retries,
                };
                return Ok((outcome, back));
            }
            retries += 1;
            let jitter = fastrand::u64(..=backoff.as_millis() as u64);
            tokio::time::sleep(backoff / 2 + Duration::from_millis(jitter / 2)).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// `GET /v1/assign`; None on any failure (the caller backs off and asks again).
    async fn assign(&self) -> Option<Assignment> {
        let response = self.http.get(&self.assign_url).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }
}

fn print_report(outcomes: &[Outcome], elapsed: Duration, clean_exit: bool) {
    let mut back: Vec<Duration> = outcomes.iter().map(|o| o.back).collect();
    back.sort();
    let mut asked: Vec<Duration> = outcomes.iter().map(|o| o.asked).collect();
    asked.sort();
    let told: Vec<Duration> = outcomes.iter().filter_map(|o| o.told).collect();
    let unannounced = outcomes.len() - told.len();
    let retries: u64 = outcomes.iter().map(|o| u64::from(o.retries)).sum();
    let (first, last) = (back[0], back[back.len() - 1]);
    println!(
        "notices: {} (first at {:.2}s, last at {:.2}s); closed without a notice: {unannounced}",
        told.len(),
        told.iter().min().map_or(0.0, Duration::as_secs_f64),
        told.iter().max().map_or(0.0, Duration::as_secs_f64),
    );
    print_rate("reconnects/s as they hit the registry", &asked);
    print_rate("reconnects/s completed (welcomed back)", &back);
    println!(
        "back on other nodes: first {:.2}s, p50 {:.2}s, all {:.2}s after SIGTERM; {retries} retries",
        first.as_secs_f64(),
        back[back.len() / 2].as_secs_f64(),
        last.as_secs_f64(),
    );
    println!(
        "node-0 exited {} {:.2}s after SIGTERM",
        if clean_exit {
            "cleanly"
        } else {
            "with an error"
        },
        elapsed.as_secs_f64()
    );
}

/// Prints the maximum over 1 s windows and the median of 1 s buckets of `sorted` (ascending) events.
fn print_rate(what: &str, sorted: &[Duration]) {
    let per_bucket = buckets(sorted);
    let mut ordered = per_bucket.clone();
    ordered.sort_unstable();
    println!(
        "{what}: max over 1 s windows {}, p50 of 1 s buckets {} (buckets: {per_bucket:?})",
        max_in_window(sorted, Duration::from_secs(1)),
        ordered[ordered.len() / 2],
    );
}

/// Events per 1 s bucket, from the bucket of the first to that of the last (`sorted` ascending).
fn buckets(sorted: &[Duration]) -> Vec<usize> {
    let first = sorted[0].as_secs();
    let last = sorted[sorted.len() - 1].as_secs();
    let mut counts = vec![0; (last - first + 1) as usize];
    for t in sorted {
        counts[(t.as_secs() - first) as usize] += 1;
    }
    counts
}

/// Most events within any window of `width` (`sorted` ascending).
fn max_in_window(sorted: &[Duration], width: Duration) -> usize {
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..sorted.len() {
        while sorted[hi] - sorted[lo] >= width {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}
