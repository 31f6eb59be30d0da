//! Big-room benchmark: how long N members take to join one room, and how many presence frames each
//! of them receives meanwhile, for each presence mode (`PROTOCOL.md`, section 4, "Big rooms").
//!
//! It starts its own scaled topology (Redis + `--nodes` chat-nodes, release binaries when built, every
//! per-client limit lifted) on loopback, and for each mode and member count: connects `N` members
//! (alternating over the nodes, `--concurrency` at a time) that each join a fresh room with that mode,
//! then reads until no frame arrived for `--quiet`. It prints the join time (first connect to last
//! `joined`), and the presence frames (`presence`, `presence_batch`, `presence_count`) per member:
//!
//! ```text
//! cargo build --release -p chat-node -p registry
//! cargo run --release -p e2e --bin room-bench -- --members 1000,10000 --modes events,batch,count
//! ```
//!
//! `events` (one frame per join, the default and the only behaviour before `batch`/`count`) sends
//! about N² frames in all: it is run only up to `--events-max` members. Everything is bounded by
//! `--timeout` per phase; the process needs about N file descriptors and checks the soft
//! `RLIMIT_NOFILE`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use e2e::client::{ChatClient, frame_type};
use serde_json::json;
use switchboard_runtime::{duration, report};
use tokio::time::Instant;

/// Switchboard big-room benchmark (loopback only, bounded in count and time).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Member counts, one room each (at most 10000).
    #[arg(
        long,
        env = "BENCH_MEMBERS",
        value_delimiter = ',',
        default_value = "1000"
    )]
    members: Vec<usize>,
    /// Presence modes to measure: events, batch, count.
    #[arg(
        long,
        env = "BENCH_MODES",
        value_delimiter = ',',
        default_value = "events,batch,count"
    )]
    modes: Vec<String>,
    /// Largest room measured in `events` mode (it costs about N² frames).
    #[arg(long, env = "BENCH_EVENTS_MAX", default_value_t = 2000)]
    events_max: usize,
    /// Chat-nodes (1 or 2).
    #[arg(long, env = "BENCH_NODES_COUNT", default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2))]
    nodes: u8,
    /// Members connecting and joining at the same time.
    #[arg(long, env = "BENCH_CONCURRENCY", default_value_t = 128)]
    concurrency: usize,
    /// The room counts as settled once no frame arrived for this long.
    #[arg(
        long,
        env = "BENCH_QUIET",
        default_value = "2s",
        value_parser = duration::within(Duration::from_millis(100), Duration::from_secs(60))
    )]
    quiet: Duration,
    /// Upper bound for each phase, 1s to 1h.
    #[arg(
        long,
        env = "BENCH_TIMEOUT",
        default_value = "300s",
        value_parser = duration::within(Duration::from_secs(1), Duration::from_secs(3600))
    )]
    timeout: Duration,
}

/// Most members of one room.
const MAX_MEMBERS: usize = 10_000;

#[tokio::main]
async fn main() -> ExitCode {
    report::exit("room-bench", run().await)
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(n) = args.members.iter().find(|n| **n == 0 || **n > MAX_MEMBERS) {
        bail!("--members {n}: each count must be 1 to {MAX_MEMBERS}");
    }
    if let Some(m) = args
        .modes
        .iter()
        .find(|m| !matches!(m.as_str(), "events" | "batch" | "count"))
    {
        bail!("--modes {m}: each mode must be events, batch or count");
    }
    let most = args.members.iter().copied().max().unwrap_or(0);
    e2e::topology::check_open_files(most + 64)?;
    let t = e2e::topology::bench_topology(args.nodes.into()).await?;
    let urls: Vec<String> = (0..t.node_count()).map(|i| t.node_ws_url(i)).collect();
    let run_id = format!("{:06x}", fastrand::u32(..0xff_ffff));
    println!(
        "{:>6} {:>7} {:>10} {:>12} {:>12} {:>14}",
        "mode", "members", "join s", "frames/mbr", "max/mbr", "frames total"
    );
    for &n in &args.members {
        for mode in &args.modes {
            if mode == "events" && n > args.events_max {
                println!(
                    "{mode:>6} {n:>7}   skipped (above --events-max {})",
                    args.events_max
                );
                continue;
            }
            let room = format!("big-{mode}-{n}-{run_id}");
            let r = phase(&args, &urls, mode, n, &room)
                .await
                .with_context(|| format!("{mode} with {n} members"))?;
            println!(
                "{mode:>6} {n:>7} {:>10.2} {:>12.1} {:>12} {:>14}",
                r.join.as_secs_f64(),
                r.frames as f64 / n as f64,
                r.most,
                r.frames
            );
        }
    }
    Ok(())
}

/// What one phase measured.
struct Outcome {
    /// First connect to the last `joined`.
    join: Duration,
    /// Presence frames received by all members.
    frames: u64,
    /// Presence frames received by the member that got the most.
    most: u64,
}

fn is_presence(f: &serde_json::Value) -> bool {
    matches!(
        frame_type(f),
        Some("presence" | "presence_batch" | "presence_count")
    )
}

/// N members join `room` in `mode`; each reads (and counts its presence frames) from its join on,
/// as a client does, until everyone has joined and the room has been quiet for `--quiet`.
async fn phase(
    args: &Args,
    urls: &[String],
    mode: &str,
    n: usize,
    room: &str,
) -> anyhow::Result<Outcome> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let deadline = Instant::now() + args.timeout;
    let started = Instant::now();
    let permits = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let joined = Arc::new(AtomicUsize::new(0));
    let quiet = args.quiet;
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let url = urls[i % urls.len()].clone();
        let user = format!("m{i}-{room}");
        let join = json!({"type": "join", "room": room, "presence": mode});
        let (permits, joined) = (permits.clone(), joined.clone());
        tasks.push(tokio::spawn(async move {
            let permit = permits.acquire_owned().await;
            let mut c = ChatClient::connect(&url, &user).await?;
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = c.request(join, left).await?;
            if frame_type(&reply) != Some("joined") {
                return Err(e2e::client::Error::Unexpected(format!("join: {reply}")));
            }
            let joined_at = Instant::now();
            joined.fetch_add(1, Ordering::AcqRel);
            drop(permit);
            let mut frames = c.take_buffered().iter().filter(|f| is_presence(f)).count() as u64;
            while Instant::now() < deadline {
                match c.next_frame_within(quiet).await {
                    Ok(f) if is_presence(&f) => frames += 1,
                    Ok(_) => {}
                    Err(e2e::client::Error::Timeout { .. })
                        if joined.load(Ordering::Acquire) < n => {}
                    Err(_) => break,
                }
            }
            // Stay connected until every member is done: a leave would count as presence for the
            // others.
            Ok((joined_at, frames, c))
        }));
    }
    let mut last_join = started;
    let mut counts = Vec::with_capacity(n);
    let mut connected = Vec::with_capacity(n);
    for t in tasks {
        let (joined_at, frames, c) = t.await.context("member task")?.context("a member")?;
        last_join = last_join.max(joined_at);
        counts.push(frames);
        connected.push(c);
    }
    drop(connected);
    Ok(Outcome {
        join: last_join - started,
        frames: counts.iter().sum(),
        most: counts.iter().copied().max().unwrap_or(0),
    })
}
