//! Reconnect storm: kill one of three chat-nodes under load and measure how its clients come back.
//!
//! Starts Redis + 3 chat-nodes + 1 registry on loopback (release binaries when built), connects
//! `clients` clients through the registry's `/v1/assign`, each joined to one of `rooms` rooms, while
//! one sender per room, connected straight to a node that survives, sends a steady trickle. Then it
//! SIGKILLs node-0 and measures:
//!
//! ```text
//!   clients ──/v1/assign──▶ registry ──▶ node-0 | node-1 | node-2      senders ──▶ node-1, node-2
//!                                          ✕ SIGKILL
//!   node-0's clients: drop ─▶ backoff 250 ms ±50 % ─▶ /v1/assign?avoid=node-0 ─▶ connect ─▶ join {since}
//!                     (503/429 from the registry, refused connects, 1013: back off, doubling to 10 s)
//! ```
//!
//! A client asks the registry to avoid the node it lost (or could not open); `--no-avoid` measures
//! clients that do not, which the registry sends back to the dead node until its heartbeat expires.
//!
//! - spread: clients per surviving node afterwards, and max / even (target ≤ 1.2);
//! - recovery: time from the kill until every client of node-0 has re-joined with `since` and
//!   received everything up to the `last_seq` its `joined` named (target ≤ 5 s);
//! - loss and duplication: every client checks its room's sequence numbers (a gap is a lost message,
//!   a number seen twice a duplicate); after the senders stop, each must reach the last sequence
//!   the senders had acknowledged (target 0 / 0).
//!
//! ```text
//! cargo build --release -p chat-node -p registry -p e2e --bin storm-bench
//! target/release/storm-bench --clients 3000 --rooms 20 --rate 200
//! ```
//!
//! Per-address limits are lifted (every client comes from 127.0.0.1; see [`e2e::bench`]), also the
//! registry's reservations per address. Everything is bounded by `--timeout`. This is a measurement
//! program: it prints figures and fails only when the run itself cannot be carried out.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use e2e::bench::{Backoff, LIFTED_NODE_LIMITS, cpu_seconds, machine_line};
use e2e::client::{ChatClient, Error as ClientError, RoomMessage, frame_type};
use e2e::topology::{Auth, Topology, TopologyConfig};
use switchboard_runtime::duration;
use switchboard_runtime::report;
use tokio::time::Instant;

/// Reconnect-storm benchmark (loopback only, bounded in count and time).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Clients connected through the registry before the kill.
    #[arg(long, default_value_t = 3000)]
    clients: usize,
    /// Rooms; client i joins room i % rooms.
    #[arg(long, default_value_t = 20)]
    rooms: usize,
    /// Messages per second over all rooms while the storm runs.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Seconds of steady traffic before the kill.
    #[arg(long, default_value_t = 3)]
    warmup_secs: u64,
    /// Concurrent connects while the clients first connect.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// The node's heartbeat TTL (how long a dead node can still be assigned).
    #[arg(long, default_value = "3s")]
    heartbeat_ttl: String,
    /// Clients do not tell the registry which node they lost (`/v1/assign?avoid=`), as clients
    /// before it could not: the registry then offers the dead node until its heartbeat expires.
    #[arg(long)]
    no_avoid: bool,
    /// Upper bound for each phase, 1s to 1h.
    #[arg(
        long,
        default_value = "120s",
        value_parser = duration::within(Duration::from_secs(1), Duration::from_secs(3600))
    )]
    timeout: Duration,
}

/// What one client reports, shared with the main task.
#[derive(Debug, Default)]
struct Stat {
    /// Node index it is connected to; `usize::MAX` while it is not.
    node: AtomicUsize,
    /// Highest room sequence seen.
    last_seq: AtomicU64,
    /// Sequence numbers skipped (gaps).
    lost: AtomicU64,
    /// Sequence numbers seen again.
    dups: AtomicU64,
    /// Times it connected after the first.
    reconnects: AtomicU64,
    /// Microseconds since the run's epoch when it last completed a (re)join and caught up; 0: never.
    recovered_us: AtomicU64,
    /// Microseconds since the epoch of its last first connect attempt after a drop, its last
    /// `welcome` and its last `joined` (where the recovery time goes).
    dropped_us: AtomicU64,
    assigned_us: AtomicU64,
    welcomed_us: AtomicU64,
    joined_us: AtomicU64,
    /// Refusals met while reconnecting: registry 503, 429, 1013 / other closes, refused TCP connects.
    refused_503: AtomicU64,
    refused_429: AtomicU64,
    refused_1013: AtomicU64,
    refused_connect: AtomicU64,
    /// Whether the first join was done (the count of ready clients).
    ready: AtomicBool,
}

/// What every client task shares.
struct Shared {
    http: reqwest::Client,
    registry: String,
    stop: Arc<AtomicBool>,
    /// Bounds the concurrent first connects (the ramp before the kill).
    gate: Arc<tokio::sync::Semaphore>,
    epoch: Instant,
    /// Whether clients ask the registry to avoid the node they lost.
    avoid: bool,
}

const OFF: usize = usize::MAX;

#[tokio::main]
async fn main() -> ExitCode {
    report::exit("storm-bench", run().await)
}

fn room_name(run_id: &str, r: usize) -> String {
    format!("storm-{run_id}-{r}")
}

fn node_index(node: &str) -> usize {
    node.strip_prefix("node-")
        .and_then(|n| n.parse().ok())
        .unwrap_or(OFF)
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.clients == 0 || args.rooms == 0 || args.rate == 0 {
        bail!("--clients, --rooms and --rate must be positive");
    }
    // The client process holds every socket; the nodes inherit the limit and hold theirs.
    e2e::topology::check_open_files(args.clients + args.rooms + 256)?;
    println!("{}", machine_line());
    let run_id = format!("{:06x}", fastrand::u32(..0xff_ffff));
    let config = TopologyConfig {
        log_filter: "warn".into(),
        auth: Auth::Open,
        registry_args: vec!["--reservations-per-ip".into(), "1000000".into()],
        ..TopologyConfig::scaled(3, 1)
            .with_node_args(LIFTED_NODE_LIMITS)
            .with_node_args(["--heartbeat-ttl", args.heartbeat_ttl.as_str()])
    };
    let bin = e2e::topology::bin_dir_or_build(&["chat-node", "registry"])?;
    let mut topology = Topology::start(config)
        .await
        .context("starting Redis + 3 chat-nodes + registry")?;
    println!(
        "topology: redis + 3 chat-nodes + 1 registry, binaries from {}, heartbeat ttl {}, clients {}",
        bin.display(),
        args.heartbeat_ttl,
        if args.no_avoid {
            "never avoid a lost node (--no-avoid)"
        } else {
            "ask the registry to avoid the node they lost"
        }
    );
    let registry = topology.registry_url(0);
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let limit = args.timeout;

    // Senders: one per room, alternating over the surviving nodes 1 and 2.
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..args.rooms).map(|_| AtomicU64::new(0)).collect());
    let send_failures = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    let per_room_interval = Duration::from_secs_f64(args.rooms as f64 / f64::from(args.rate));
    for r in 0..args.rooms {
        let url = topology.node_ws_url(1 + r % 2);
        let room = room_name(&run_id, r);
        let (stop, acked, failures) = (stop.clone(), acked.clone(), send_failures.clone());
        let user = format!("sender{r}-{run_id}");
        let mut c = ChatClient::connect(&url, &user)
            .await
            .context("connecting a sender")?;
        c.join(&room, None).await.context("sender join")?;
        senders.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(per_room_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                n += 1;
                let id = format!("{user}-{n}");
                match c.send(&room, &format!("m{n}"), Some(&id)).await {
                    Ok(ack) => {
                        acked[r].fetch_max(ack.seq, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                // The sender is a member too: drop its own copies.
                c.take_buffered();
            }
        }));
    }

    // Clients, connected in bounded batches through the registry.
    let stats: Vec<Arc<Stat>> = (0..args.clients)
        .map(|_| {
            Arc::new(Stat {
                node: AtomicUsize::new(OFF),
                ..Default::default()
            })
        })
        .collect();
    // One HTTP client for every `/v1/assign` (as a browser keeps one): building one per request costs
    // more client CPU than the request itself and would be measured as recovery time.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .context("building the HTTP client")?;
    let started = Instant::now();
    let shared = Arc::new(Shared {
        http,
        registry: registry.clone(),
        stop: stop.clone(),
        gate: Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency.max(1))),
        epoch,
        avoid: !args.no_avoid,
    });
    let mut tasks = Vec::with_capacity(args.clients);
    for (i, stat) in stats.iter().enumerate() {
        let user = format!("c{i}-{run_id}");
        let room = room_name(&run_id, i % args.rooms);
        tasks.push(tokio::spawn(client(
            shared.clone(),
            user,
            room,
            stat.clone(),
        )));
    }
    wait_until(limit, || {
        stats.iter().all(|s| s.ready.load(Ordering::Relaxed))
    })
    .await
    .with_context(|| {
        format!(
            "only {} of {} clients joined within {limit:?}",
            stats
                .iter()
                .filter(|s| s.ready.load(Ordering::Relaxed))
                .count(),
            args.clients
        )
    })?;
    println!(
        "connected and joined: {} clients over {} rooms in {:.1} s; per node {:?}",
        args.clients,
        args.rooms,
        started.elapsed().as_secs_f64(),
        per_node(&stats)
    );
    tokio::time::sleep(Duration::from_secs(args.warmup_secs)).await;

    // The kill.
    let victims: Vec<usize> = (0..stats.len())
        .filter(|&i| stats[i].node.load(Ordering::Relaxed) == 0)
        .collect();
    let redis_pid = topology.redis().and_then(|r| r.pid());
    // Redis and this client process, to see what bounded the storm.
    let others = || {
        [
            redis_pid.and_then(cpu_seconds),
            cpu_seconds(std::process::id()),
        ]
    };
    let others_before = others();
    let cpu_before: Vec<Option<f64>> = (1..3)
        .map(|i| topology.node_pid(i).and_then(cpu_seconds))
        .collect();
    let killed_at = Instant::now();
    let killed_us = micros(epoch, killed_at);
    topology.kill_node(0).context("killing node-0")?;
    println!(
        "SIGKILL node-0 with {} clients; trickle {} msg/s over {} rooms from nodes 1 and 2",
        victims.len(),
        args.rate,
        args.rooms
    );
    let recovered = |i: &usize| stats[*i].recovered_us.load(Ordering::Relaxed) > killed_us;
    let all_back = wait_until(limit, || victims.iter().all(recovered)).await;
    let storm_secs = killed_at.elapsed().as_secs_f64();
    let cpu_after: Vec<Option<f64>> = (1..3)
        .map(|i| topology.node_pid(i).and_then(cpu_seconds))
        .collect();
    let others_after = others();
    let mut times: Vec<f64> = victims
        .iter()
        .filter(|i| recovered(i))
        .map(|&i| (stats[i].recovered_us.load(Ordering::Relaxed) - killed_us) as f64 / 1e6)
        .collect();
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        times
            .get(((times.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    match all_back {
        Ok(()) => println!(
            "recovery: all {} clients of node-0 re-joined and caught up {:.2} s after the kill \
             (p50 {:.2} s, p90 {:.2} s, p99 {:.2} s)",
            victims.len(),
            pct(1.0),
            pct(0.5),
            pct(0.9),
            pct(0.99)
        ),
        Err(_) => println!(
            "recovery: only {} of {} clients of node-0 recovered within {limit:?}",
            times.len(),
            victims.len()
        ),
    }
    let phase = |f: fn(&Stat) -> &AtomicU64| {
        let mut v: Vec<f64> = victims
            .iter()
            .map(|&i| f(&stats[i]).load(Ordering::Relaxed))
            .filter(|&us| us > killed_us)
            .map(|us| (us - killed_us) as f64 / 1e6)
            .collect();
        v.sort_by(f64::total_cmp);
        let at = |p: f64| {
            v.get(((v.len() as f64 - 1.0) * p).round() as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        format!("p50 {:.2} s, max {:.2} s", at(0.5), at(1.0))
    };
    println!(
        "  after the kill: drop seen {}; last assign {}; welcome {}; joined {}; caught up {}",
        phase(|s| &s.dropped_us),
        phase(|s| &s.assigned_us),
        phase(|s| &s.welcomed_us),
        phase(|s| &s.joined_us),
        phase(|s| &s.recovered_us)
    );
    let spread = per_node(&stats);
    let survivors: Vec<usize> = vec![
        spread.get(&1).copied().unwrap_or(0),
        spread.get(&2).copied().unwrap_or(0),
    ];
    let even = args.clients as f64 / 2.0;
    let max = survivors.iter().copied().max().unwrap_or(0) as f64;
    println!(
        "spread after the storm: node-1 {}, node-2 {} (other/none: {}); max/even = {:.3}",
        survivors[0],
        survivors[1],
        args.clients - survivors[0] - survivors[1],
        max / even
    );
    let moved: BTreeMap<usize, usize> = victims.iter().fold(BTreeMap::new(), |mut m, &i| {
        *m.entry(stats[i].node.load(Ordering::Relaxed)).or_insert(0) += 1;
        m
    });
    println!("  node-0's clients went to {moved:?} (node index -> clients)");
    let sum = |f: fn(&Stat) -> &AtomicU64| {
        stats
            .iter()
            .map(|s| f(s).load(Ordering::Relaxed))
            .sum::<u64>()
    };
    println!(
        "  refusals met while reconnecting: registry 503 {}, 429 {}, close 1013/other {}, TCP/handshake {}; \
         reconnects {}",
        sum(|s| &s.refused_503),
        sum(|s| &s.refused_429),
        sum(|s| &s.refused_1013),
        sum(|s| &s.refused_connect),
        sum(|s| &s.reconnects)
    );
    for (k, (b, a)) in cpu_before.iter().zip(&cpu_after).enumerate() {
        if let (Some(b), Some(a)) = (b, a) {
            println!(
                "  node-{} CPU during the storm: {:.2} s over {:.2} s",
                k + 1,
                a - b,
                storm_secs
            );
        }
    }

    for (name, (b, a)) in ["redis-server", "this client process"]
        .iter()
        .zip(others_before.iter().zip(&others_after))
    {
        if let (Some(b), Some(a)) = (b, a) {
            println!(
                "  {name} CPU during the storm: {:.2} s over {storm_secs:.2} s",
                a - b
            );
        }
    }

    // Drain: stop the senders, then every client must reach its room's last acknowledged sequence.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.context("sender task")?;
    }
    let finals: Vec<u64> = acked.iter().map(|a| a.load(Ordering::Relaxed)).collect();
    let caught_up = |i: usize| stats[i].last_seq.load(Ordering::Relaxed) >= finals[i % args.rooms];
    let drained = wait_until(Duration::from_secs(10).min(limit), || {
        (0..stats.len()).all(caught_up)
    })
    .await;
    let short: u64 = (0..stats.len())
        .map(|i| finals[i % args.rooms].saturating_sub(stats[i].last_seq.load(Ordering::Relaxed)))
        .sum();
    let behind: Vec<String> = (0..stats.len())
        .filter(|&i| !caught_up(i))
        .take(5)
        .map(|i| {
            let s = &stats[i];
            format!(
                "client {i} (room {}, node {}, reconnects {}): at {} of {}",
                i % args.rooms,
                match s.node.load(Ordering::Relaxed) {
                    OFF => "none".to_owned(),
                    n => n.to_string(),
                },
                s.reconnects.load(Ordering::Relaxed),
                s.last_seq.load(Ordering::Relaxed),
                finals[i % args.rooms]
            )
        })
        .collect();
    for b in &behind {
        println!("  behind: {b}");
    }
    let behind_where: BTreeMap<(usize, usize, u64), usize> = (0..stats.len())
        .filter(|&i| !caught_up(i))
        .fold(BTreeMap::new(), |mut m, i| {
            let s = &stats[i];
            let key = (
                i % args.rooms,
                s.node.load(Ordering::Relaxed),
                finals[i % args.rooms].saturating_sub(s.last_seq.load(Ordering::Relaxed)),
            );
            *m.entry(key).or_insert(0) += 1;
            m
        });
    if !behind_where.is_empty() {
        println!(
            "  behind, by (room, node, messages short) -> clients: {behind_where:?}; members per room on each \
             node: about {}",
            args.clients / args.rooms / 2
        );
    }
    let lost = sum(|s| &s.lost) + short;
    let dups = sum(|s| &s.dups);
    let acked_total: u64 = finals.iter().sum();
    println!(
        "messages: {} acknowledged ({} sends failed); per client: lost {} (gaps {}, never reached {}), \
         duplicated {}{}",
        acked_total,
        send_failures.load(Ordering::Relaxed),
        lost,
        lost - short,
        short,
        dups,
        if drained.is_ok() {
            ""
        } else {
            " (some clients had not caught up 10 s after the senders stopped)"
        }
    );
    println!(
        "bounds: one client process (tokio, {} worker threads) drives every socket on the same {} cores as \
         3 nodes, the registry and Redis",
        std::thread::available_parallelism().map_or(0, usize::from),
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    for t in tasks {
        t.abort();
    }
    Ok(())
}

fn micros(epoch: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch).as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

fn per_node(stats: &[Arc<Stat>]) -> BTreeMap<usize, usize> {
    let mut m = BTreeMap::new();
    for s in stats {
        let n = s.node.load(Ordering::Relaxed);
        if n != OFF {
            *m.entry(n).or_insert(0) += 1;
        }
    }
    m
}

/// Poll `done` every 20 ms until it holds or `limit` passes.
async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            bail!("not done within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// One client for the whole run: assign, connect, join (with `since` after the first time), read and
/// check sequence numbers; on a drop, back off and start again.
async fn client(ctx: Arc<Shared>, user: String, room: String, stat: Arc<Stat>) {
    let Shared {
        http,
        registry,
        stop,
        gate,
        epoch,
        avoid,
    } = &*ctx;
    let epoch = *epoch;
    let mut first = true;
    // The node this client last lost or could not open: the registry offers it only if no other
    // node has room.
    let mut lost: Option<String> = None;
    let mut backoff = Backoff::default();
    while !stop.load(Ordering::Relaxed) {
        // Only the first connects are gated (a bounded ramp); reconnects are the storm itself.
        let permit = if first {
            gate.clone().acquire_owned().await.ok()
        } else {
            None
        };
        let connected = connect(http, registry, &user, &stat, epoch, lost.as_deref()).await;
        let (mut c, node_id) = match connected {
            Ok(c) => c,
            Err(failed) => {
                if *avoid && failed.is_some() {
                    lost = failed;
                }
                drop(permit);
                tokio::time::sleep(backoff.next_wait()).await;
                continue;
            }
        };
        stat.welcomed_us
            .store(micros(epoch, Instant::now()), Ordering::Relaxed);
        let node = c.node().map_or(OFF, node_index);
        let last = stat.last_seq.load(Ordering::Relaxed);
        let since = (!first).then_some(last);
        let joined = match c.join(&room, since).await {
            Ok(j) => j,
            Err(e) => {
                count_refusal(&stat, &e);
                if *avoid {
                    lost = Some(node_id);
                }
                drop(permit);
                tokio::time::sleep(backoff.next_wait()).await;
                continue;
            }
        };
        drop(permit);
        lost = None;
        stat.joined_us
            .store(micros(epoch, Instant::now()), Ordering::Relaxed);
        // Messages numbered up to here are before this client's account starts (first join only).
        let base = if first { joined.last_seq } else { 0 };
        if first {
            stat.last_seq.store(joined.last_seq, Ordering::Relaxed);
        } else {
            stat.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        let target = joined.last_seq;
        let mut caught_up = false;
        let mut check = |stat: &Stat| {
            if !caught_up && stat.last_seq.load(Ordering::Relaxed) >= target {
                caught_up = true;
                stat.recovered_us
                    .store(micros(epoch, Instant::now()), Ordering::Relaxed);
            }
        };
        stat.node.store(node, Ordering::Relaxed);
        check(&stat);
        stat.ready.store(true, Ordering::Relaxed);
        first = false;
        backoff.reset();
        loop {
            // A quiet moment is no reason to stop reading, not even once the senders stopped: each
            // may still send one message after that, which every client must reach (the run's end
            // aborts these tasks). Stopping here once cut clients off one message short.
            let frame = match c.next_frame_within(Duration::from_millis(500)).await {
                Ok(f) => f,
                Err(ClientError::Timeout { .. }) => continue,
                Err(_) => break,
            };
            if frame_type(&frame) != Some("message") {
                continue;
            }
            let Ok(m) = serde_json::from_value::<RoomMessage>(frame) else {
                continue;
            };
            if m.room != room || m.seq <= base {
                continue;
            }
            let last = stat.last_seq.load(Ordering::Relaxed);
            if m.seq <= last {
                stat.dups.fetch_add(1, Ordering::Relaxed);
            } else {
                if m.seq > last + 1 {
                    stat.lost.fetch_add(m.seq - last - 1, Ordering::Relaxed);
                }
                stat.last_seq.store(m.seq, Ordering::Relaxed);
            }
            check(&stat);
        }
        // The connection dropped (the node died): wait a jittered moment before asking again.
        if *avoid {
            lost = Some(node_id);
        }
        stat.node.store(OFF, Ordering::Relaxed);
        stat.dropped_us
            .store(micros(epoch, Instant::now()), Ordering::Relaxed);
        tokio::time::sleep(backoff.next_wait()).await;
    }
}

/// `/v1/assign` (avoiding the node named), then open the named node: the client and the node's id.
/// On failure, counts the refusal kind and gives the id of the node that could not be opened, if
/// one was named.
async fn connect(
    http: &reqwest::Client,
    registry: &str,
    user: &str,
    stat: &Stat,
    epoch: Instant,
    avoid: Option<&str>,
) -> Result<(ChatClient, String), Option<String>> {
    let assignment = match e2e::client::assign_via(http, registry, avoid.as_slice()).await {
        Ok(a) => a,
        Err(e) => {
            count_refusal(stat, &e);
            return Err(None);
        }
    };
    stat.assigned_us
        .store(micros(epoch, Instant::now()), Ordering::Relaxed);
    match ChatClient::connect(&assignment.url, user).await {
        Ok(c) => Ok((c, assignment.node)),
        Err(e) => {
            count_refusal(stat, &e);
            Err(Some(assignment.node))
        }
    }
}

fn count_refusal(stat: &Stat, e: &ClientError) {
    let counter = match e {
        ClientError::Unavailable { status: 429, .. } | ClientError::Refused { status: 429, .. } => {
            &stat.refused_429
        }
        ClientError::Unavailable { .. } | ClientError::Refused { status: 503, .. } => {
            &stat.refused_503
        }
        ClientError::Closed { .. } => &stat.refused_1013,
        _ => &stat.refused_connect,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}
