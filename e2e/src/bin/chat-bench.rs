//! Load generator: fan-out throughput, cross-node delivery latency and memory per idle connection.
//!
//! By default it starts its own scaled topology (Redis + 2 chat-nodes, release binaries when built,
//! rate limits lifted) on loopback, measures, prints, and stops everything:
//!
//! ```text
//! cargo build --release -p chat-node -p registry
//! cargo run --release -p e2e --bin chat-bench -- --members 200 --messages 2000 --senders 4 --idle 5000
//! ```
//!
//! 1. **Fan-out**: `members` connections (alternating over the two nodes) join one room; `senders`
//!    connections (also alternating) send `messages` in total, each with its send time in the body,
//!    pipelined `window` deep. Every member counts deliveries and the latency send -> receive, measured
//!    at the receiving client; latencies are reported for every delivery and for cross-node ones, and
//!    the servers' CPU time (user + system of every node, `/proc/PID/stat`) per delivery. To compare
//!    two builds, alternate them in one run: `SWITCHBOARD_BIN_DIR=DIR` picks the binaries. With
//!    `--rate`, sends are paced to that many messages per second in all (latency under a given load;
//!    the line "messages/s in" says whether the servers kept up).
//! 2. **Idle memory**: `idle` connections to the first node that only identify; the node's RSS delta
//!    (`/proc/PID/status` VmRSS) divided by the connection count, read `--settle` after the last one
//!    opened (12 s by default: past the node's periodic refresh, which touches every session).
//!
//! Everything is bounded by `--timeout`. The process needs about `idle + members + senders` file
//! descriptors (and the node as many); it checks the soft `RLIMIT_NOFILE` and says to raise it
//! (`ulimit -n 65536`) when too low.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::Parser;
use e2e::client::{ChatClient, frame_type};
use futures_util::StreamExt as _;
use serde_json::json;
use switchboard_runtime::duration;
use switchboard_runtime::report;
use tokio::time::Instant;

/// Switchboard load generator (loopback only, bounded in count and time).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Members of the fan-out room (spread over the nodes).
    #[arg(long, env = "BENCH_MEMBERS", default_value_t = 200)]
    members: usize,
    /// Messages sent to the room in total.
    #[arg(long, env = "BENCH_MESSAGES", default_value_t = 2000)]
    messages: usize,
    /// Sending connections (spread over the nodes).
    #[arg(long, env = "BENCH_SENDERS", default_value_t = 4)]
    senders: usize,
    /// Unacknowledged sends in flight per sender.
    #[arg(long, env = "BENCH_WINDOW", default_value_t = 8)]
    window: usize,
    /// Messages per second over all senders (paced evenly; still at most `window` in flight per
    /// sender); 0 sends as fast as the window allows. For latency under a given load.
    #[arg(long, env = "BENCH_RATE", default_value_t = 0)]
    rate: u32,
    /// Body size in bytes (at least the timestamp).
    #[arg(long, env = "BENCH_BODY_BYTES", default_value_t = 64)]
    body_bytes: usize,
    /// Idle connections opened to the first node for the memory figure (0 skips it).
    #[arg(long, env = "BENCH_IDLE", default_value_t = 5000)]
    idle: usize,
    /// Upper bound for each phase, 1s to 1h.
    #[arg(
        long,
        env = "BENCH_TIMEOUT",
        default_value = "120s",
        value_parser = duration::within(Duration::from_secs(1), Duration::from_secs(3600))
    )]
    timeout: Duration,
    /// How long the idle connections stay open before the node's RSS is read, 0s to 10min. The
    /// default outlasts one round of the node's periodic presence refresh (every 10 s), which
    /// touches every session, so the figure is that of a node at rest with these connections.
    #[arg(
        long,
        env = "BENCH_SETTLE",
        default_value = "12s",
        value_parser = duration::within(Duration::ZERO, Duration::from_secs(600))
    )]
    settle: Duration,
    /// Use running nodes instead of starting a topology: their WebSocket URLs, comma-separated.
    #[arg(long, env = "BENCH_NODES", value_delimiter = ',')]
    nodes: Vec<String>,
    /// With --nodes: the process id of the first node, for the memory figure (and the CPU figure,
    /// of that node only).
    #[arg(long, env = "BENCH_NODE_PID")]
    node_pid: Option<u32>,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> ExitCode {
    report::exit("chat-bench", run().await)
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    e2e::topology::check_open_files(args.idle + args.members + args.senders + 64)?;
    let run_id = format!("{:06x}", fastrand::u32(..0xff_ffff));

    let mut _topology = None;
    let mut node_pids: Vec<u32> = args.node_pid.into_iter().collect();
    let (urls, pid) = if args.nodes.is_empty() {
        let t = e2e::topology::bench_topology(2).await?;
        let urls = vec![t.node_ws_url(0), t.node_ws_url(1)];
        let pid = t.node_pid(0);
        node_pids = (0..t.node_count()).filter_map(|i| t.node_pid(i)).collect();
        _topology = Some(t);
        (urls, pid)
    } else {
        println!("targets: {}", args.nodes.join(", "));
        (args.nodes.clone(), args.node_pid)
    };
    let limit = args.timeout;

    if args.idle > 0 {
        match pid {
            Some(pid) => idle_memory(&urls[0], pid, args.idle, &run_id, limit, args.settle).await?,
            None => println!("idle memory: skipped (no --node-pid for the first node)"),
        }
    }
    fan_out(&args, &urls, &node_pids, &run_id, limit).await?;
    Ok(())
}

/// Phase 1: one room, many members over the nodes, several senders.
async fn fan_out(
    args: &Args,
    urls: &[String],
    pids: &[u32],
    run_id: &str,
    limit: Duration,
) -> anyhow::Result<()> {
    let room = format!("bench-{run_id}");
    let per_node = |i: usize| i % urls.len();
    let mut members = Vec::with_capacity(args.members);
    let connects = futures_util::stream::iter(0..args.members)
        .map(|i| {
            let url = urls[per_node(i)].clone();
            let room = room.clone();
            let user = format!("m{i}-{run_id}");
            async move {
                let mut c = ChatClient::connect(&url, &user).await?;
                c.join(&room, None).await?;
                Ok::<_, e2e::client::Error>((per_node(i), c))
            }
        })
        .buffer_unordered(64);
    tokio::pin!(connects);
    while let Some(member) = connects.next().await {
        members.push(member.context("connecting a member")?);
    }
    let expected = args.messages;
    let deadline = Instant::now() + limit;
    let mut readers = Vec::new();
    for (node, mut c) in members {
        let room = room.clone();
        readers.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(expected);
            let mut cross = Vec::with_capacity(expected);
            while lat.len() < expected {
                let left = deadline.saturating_duration_since(Instant::now());
                let Ok(frame) = c.next_frame_within(left).await else {
                    break;
                };
                if frame_type(&frame) != Some("message") || frame["room"] != json!(room) {
                    continue;
                }
                let received = now_us();
                let body = frame["body"].as_str().unwrap_or_default();
                let mut parts = body.splitn(3, ' ');
                let from_node: usize = parts
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(usize::MAX);
                let sent: u64 = parts
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(received);
                let us = received.saturating_sub(sent);
                lat.push(us);
                if from_node != node {
                    cross.push(us);
                }
            }
            (lat, cross, Instant::now())
        }));
    }

    let cpu_before = cpu_of(pids)?;
    let started = Instant::now();
    let mut senders = Vec::new();
    for s in 0..args.senders {
        let node = per_node(s);
        let url = urls[node].clone();
        let room = room.clone();
        let count = args.messages / args.senders + usize::from(s < args.messages % args.senders);
        let (window, pad) = (args.window.max(1), args.body_bytes);
        // With a rate, sender s sends its n-th message at n × senders / rate after the start.
        let every = (args.rate > 0)
            .then(|| Duration::from_secs_f64(args.senders as f64 / f64::from(args.rate)));
        let user = format!("s{s}-{run_id}");
        senders.push(tokio::spawn(async move {
            let mut c = ChatClient::connect(&url, &user).await?;
            c.join(&room, None).await?;
            let (mut sent, mut acked) = (0usize, 0usize);
            let paced_from = Instant::now();
            let due = |n: usize| every.map(|e| paced_from + e.mul_f64(n as f64));
            while acked < count {
                while sent < count && sent - acked < window {
                    if due(sent).is_some_and(|at| Instant::now() < at) {
                        break;
                    }
                    let mut body = format!("{node} {} ", now_us());
                    while body.len() < pad {
                        body.push('x');
                    }
                    c.send_frame(&json!({"type": "send", "room": room, "body": body}))
                        .await?;
                    sent += 1;
                }
                let now = Instant::now();
                if now >= deadline {
                    anyhow::bail!(
                        "sender {user}: {acked} of {count} acknowledged within {limit:?}"
                    );
                }
                let mut wait = deadline - now;
                if sent < count && sent - acked < window {
                    // Paced and the window has room: wait for an ack only until the next send.
                    if let Some(at) = due(sent) {
                        wait = wait.min(at.saturating_duration_since(now));
                    }
                }
                let frame = match c.next_frame_within(wait).await {
                    Ok(f) => f,
                    Err(e2e::client::Error::Timeout { .. }) if every.is_some() => continue,
                    Err(e) => return Err(e.into()),
                };
                match frame_type(&frame) {
                    Some("ack") => acked += 1,
                    Some("error") => anyhow::bail!("sender {user}: {frame}"),
                    _ => {}
                }
            }
            Ok::<_, anyhow::Error>(c)
        }));
    }
    let mut sender_clients = Vec::new();
    for s in senders {
        sender_clients.push(s.await.context("sender task")??);
    }
    let mut all = Vec::new();
    let mut cross = Vec::new();
    let mut last = started;
    for r in readers {
        let (l, c, at) = r.await.context("reader task")?;
        all.extend(l);
        cross.extend(c);
        last = last.max(at);
    }
    let secs = (last - started).as_secs_f64().max(1e-9);
    let wanted = args.members * args.messages;
    println!(
        "fan-out: 1 room, {} members over {} nodes, {} senders (window {}{}), {} messages of {} bytes",
        args.members,
        urls.len(),
        args.senders,
        args.window,
        if args.rate > 0 {
            format!(", paced to {} messages/s", args.rate)
        } else {
            String::new()
        },
        args.messages,
        args.body_bytes
    );
    println!(
        "  deliveries: {} of {} in {:.2} s = {:.0} deliveries/s ({:.0} messages/s in)",
        all.len(),
        wanted,
        secs,
        all.len() as f64 / secs,
        args.messages as f64 / secs
    );
    let cpu = cpu_of(pids)? - cpu_before;
    if !pids.is_empty() && !all.is_empty() {
        let per = |s: f64| s * 1e6 / all.len() as f64;
        println!(
            "  servers' CPU (user + system, {} node process{}): {:.2} s = {:.2} µs per delivery \
             (user {:.2}, system {:.2})",
            pids.len(),
            if pids.len() == 1 { "" } else { "es" },
            cpu.total(),
            per(cpu.total()),
            per(cpu.user),
            per(cpu.system)
        );
    }
    report("  latency, every delivery", &mut all);
    report("  latency, across nodes  ", &mut cross);
    if all.len() < wanted {
        println!(
            "  WARNING: {} deliveries missing within {:?}",
            wanted - all.len(),
            limit
        );
    }
    Ok(())
}

/// User and system CPU time of the processes `pids` so far, in seconds.
fn cpu_of(pids: &[u32]) -> anyhow::Result<e2e::bench::CpuSplit> {
    pids.iter()
        .try_fold(e2e::bench::CpuSplit::default(), |sum, &pid| {
            let cpu =
                e2e::bench::cpu_split(pid).with_context(|| format!("reading /proc/{pid}/stat"))?;
            Ok(sum + cpu)
        })
}

fn report(label: &str, us: &mut [u64]) {
    if us.is_empty() {
        println!("{label}: no samples");
        return;
    }
    us.sort_unstable();
    let pct = |p: f64| us[((us.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0;
    println!(
        "{label}: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({} samples)",
        pct(0.50),
        pct(0.99),
        pct(1.0),
        us.len()
    );
}

/// Phase 2: RSS delta of one node per idle (identified, silent) connection.
async fn idle_memory(
    url: &str,
    pid: u32,
    count: usize,
    run_id: &str,
    limit: Duration,
    settle: Duration,
) -> anyhow::Result<()> {
    let before = rss_kib(pid)?;
    let started = Instant::now();
    let mut clients = Vec::with_capacity(count);
    let connects = futures_util::stream::iter(0..count)
        .map(|i| {
            let url = url.to_owned();
            let user = format!("i{i}-{run_id}");
            async move { ChatClient::connect(&url, &user).await }
        })
        .buffer_unordered(128);
    tokio::pin!(connects);
    while let Some(c) = connects.next().await {
        clients.push(c.context("opening an idle connection")?);
        if started.elapsed() > limit {
            bail!(
                "opened only {} idle connections within {limit:?}",
                clients.len()
            );
        }
    }
    let opened = started.elapsed();
    // Let the node settle (queued writes, its periodic refresh) before reading its RSS.
    tokio::time::sleep(settle).await;
    let after = rss_kib(pid)?;
    let delta = after.saturating_sub(before);
    println!(
        "idle memory: {count} connections on one node: VmRSS {:.1} MiB -> {:.1} MiB = {:.1} KiB per connection \
         (opened in {:.1} s, read {:.0} s later)",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        delta as f64 / count as f64,
        opened.as_secs_f64(),
        settle.as_secs_f64()
    );
    let closes = futures_util::stream::iter(clients)
        .map(|c| c.close())
        .buffer_unordered(256);
    tokio::pin!(closes);
    while closes.next().await.is_some() {}
    Ok(())
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS line")
}
