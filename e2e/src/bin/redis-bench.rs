//! Redis ceiling: how much of one Redis master's CPU a room message, a direct message and a join cost,
//! with 2, 4 and 8 chat-nodes on the same Redis.
//!
//! For each node count it starts Redis + N chat-nodes on loopback (release binaries when built), puts
//! `members` members on every node into each of `rooms` rooms (so every room message fans out through
//! Redis pub/sub to every node), and runs three phases, reading the `redis-server` process's CPU time
//! (`/proc/PID/stat`, user + system) before and after each:
//!
//! ```text
//!   senders (spread over nodes, `window` sends in flight each) ──send──▶ node ──script+stream──▶ Redis
//!                                                                        Redis ──PUBLISH──▶ N nodes ──▶ members
//!   1. room messages   2. direct messages (to members on other nodes)   3. joins of fresh rooms
//! ```
//!
//! Per phase it prints operations per second, Redis CPU seconds, Redis CPU per operation (the idle
//! rate — heartbeats, presence refreshes — measured for 2 s beforehand is subtracted) and how busy
//! Redis was (CPU / wall time). One Redis core saturates at about 1 / (CPU per operation) operations
//! per second; on this machine the client process and the nodes share the cores with Redis, so the
//! throughput printed is bounded by the machine, the CPU per operation is the figure that carries over.
//!
//! ```text
//! cargo build --release -p chat-node -p registry -p e2e --bin redis-bench
//! target/release/redis-bench --node-counts 2,4,8 --messages 20000
//! ```

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use e2e::bench::{LIFTED_NODE_LIMITS, cpu_seconds, machine_line};
use e2e::client::{ChatClient, Error as ClientError, frame_type};
use e2e::topology::{Auth, Topology, TopologyConfig};
use serde_json::json;
use switchboard_runtime::duration;
use switchboard_runtime::report;
use tokio::time::Instant;

/// Redis ceiling benchmark (loopback only, bounded in count and time).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Node counts to measure, one topology each.
    #[arg(long, value_delimiter = ',', default_value = "2,4,8")]
    node_counts: Vec<usize>,
    /// Rooms the messages go to (round robin).
    #[arg(long, default_value_t = 8)]
    rooms: usize,
    /// Members per node in every room.
    #[arg(long, default_value_t = 2)]
    members: usize,
    /// Room messages in phase 1.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Direct messages in phase 2.
    #[arg(long, default_value_t = 10_000)]
    dms: usize,
    /// Joins in phase 3 (each of a fresh room).
    #[arg(long, default_value_t = 4_000)]
    joins: usize,
    /// Sending connections (spread over the nodes).
    #[arg(long, default_value_t = 8)]
    senders: usize,
    /// Requests in flight per sender.
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Upper bound for each phase, 1s to 1h.
    #[arg(
        long,
        default_value = "120s",
        value_parser = duration::within(Duration::from_secs(1), Duration::from_secs(3600))
    )]
    timeout: Duration,
}

#[tokio::main]
async fn main() -> ExitCode {
    report::exit("redis-bench", run().await)
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.rooms == 0 || args.rooms > 90 || args.senders == 0 || args.members == 0 {
        bail!(
            "--rooms must be 1..=90 (a session joins at most 100 rooms), --senders and --members positive"
        );
    }
    println!("{}", machine_line());
    let bin = e2e::topology::bin_dir_or_build(&["chat-node", "registry"])?;
    println!("binaries from {}", bin.display());
    println!(
        "{:>5} {:>12} {:>9} {:>10} {:>10} {:>12} {:>11}",
        "nodes", "phase", "ops", "ops/s", "redis s", "redis µs/op", "redis busy"
    );
    for &n in &args.node_counts {
        if n == 0 {
            continue;
        }
        measure(&args, n)
            .await
            .with_context(|| format!("{n} nodes"))?;
    }
    println!(
        "redis busy = Redis CPU / wall time of the phase; redis µs/op has the idle rate subtracted. \
         Bound: one client process, every node and Redis share {} cores.",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    Ok(())
}

/// One topology of `n` nodes, three phases.
async fn measure(args: &Args, n: usize) -> anyhow::Result<()> {
    let run_id = format!("{:06x}", fastrand::u32(..0xff_ffff));
    let config = TopologyConfig {
        log_filter: "warn".into(),
        auth: Auth::Open,
        ..TopologyConfig::scaled(n, 0).with_node_args(LIFTED_NODE_LIMITS)
    };
    let topology = Topology::start(config)
        .await
        .context("starting Redis + nodes")?;
    let server = topology.redis().context("the topology started no Redis")?;
    let redis = Redis {
        pid: server
            .pid()
            .context("the topology's redis-server has no process id")?,
        addr: server.addr(),
        password: server.password().map(str::to_owned),
    };
    let redis_pid = redis.pid;
    let rooms: Vec<String> = (0..args.rooms)
        .map(|r| format!("rb-{run_id}-{r}"))
        .collect();

    // Members: `members` per node, each in every room, draining their sockets and counting.
    let stop = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(AtomicU64::new(0));
    let dms_in = Arc::new(AtomicU64::new(0));
    let mut member_names = Vec::new();
    let mut readers = Vec::new();
    for node in 0..n {
        for m in 0..args.members {
            let user = format!("m{node}x{m}-{run_id}");
            let mut c = ChatClient::connect(&topology.node_ws_url(node), &user)
                .await
                .context("connecting a member")?;
            for room in &rooms {
                c.join(room, None).await.context("member join")?;
            }
            member_names.push((node, user));
            let (stop, delivered, dms_in) = (stop.clone(), delivered.clone(), dms_in.clone());
            readers.push(tokio::spawn(async move {
                loop {
                    match c.next_frame_within(Duration::from_millis(200)).await {
                        Ok(f) => match frame_type(&f) {
                            Some("message") => {
                                delivered.fetch_add(1, Ordering::Relaxed);
                            }
                            Some("dm") => {
                                dms_in.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => {}
                        },
                        Err(ClientError::Timeout { .. }) => {
                            if stop.load(Ordering::Relaxed) {
                                return Ok(());
                            }
                        }
                        Err(e) => return Err(anyhow::Error::new(e).context("member connection")),
                    }
                }
            }));
        }
    }
    let mut senders = Vec::new();
    for s in 0..args.senders {
        let user = format!("s{s}-{run_id}");
        let mut c = ChatClient::connect(&topology.node_ws_url(s % n), &user)
            .await
            .context("connecting a sender")?;
        for room in &rooms {
            c.join(room, None).await.context("sender join")?;
        }
        senders.push((s % n, c));
    }

    let idle_rate = {
        let before = cpu(redis_pid)?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        (cpu(redis_pid)? - before) / 2.0
    };
    println!(
        "{n:>5} {:>12} Redis CPU at rest (heartbeats, presence): {:.1} % of a core",
        "idle",
        idle_rate * 100.0
    );

    // Phase 1: room messages.
    let deliveries_wanted = (args.messages * n * args.members) as u64;
    let cost = timed(&redis, || {
        drive(
            &mut senders,
            args,
            args.messages,
            "ack",
            args.timeout,
            |s, k| json!({"type": "send", "room": rooms[(s + k) % rooms.len()], "body": format!("r{k}")}),
        )
    })
    .await?;
    print_row(n, "room msg", args.messages, &cost, idle_rate);
    let deadline = Instant::now() + args.timeout;
    while delivered.load(Ordering::Relaxed) < deliveries_wanted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = delivered.load(Ordering::Relaxed);
    if got < deliveries_wanted {
        println!("      WARNING: {got} of {deliveries_wanted} member deliveries arrived");
    }

    // Phase 2: direct messages, each to a member on another node than the sender's.
    let names = member_names.clone();
    let cost = timed(&redis, || {
        drive(
            &mut senders,
            args,
            args.dms,
            "dm_ack",
            args.timeout,
            |s_node, k| {
                let candidates: Vec<&String> = names
                    .iter()
                    .filter(|(node, _)| *node != s_node)
                    .map(|(_, u)| u)
                    .collect();
                let to = candidates
                    .get(k % candidates.len().max(1))
                    .map_or(names[0].1.as_str(), |u| u.as_str());
                json!({"type": "dm", "to": to, "body": format!("d{k}")})
            },
        )
    })
    .await?;
    print_row(n, "direct msg", args.dms, &cost, idle_rate);

    // Phase 3: joins of fresh rooms, one connection per 80 joins (a session holds at most 100 rooms).
    let per_conn = 80;
    let conns = args.joins.div_ceil(per_conn);
    let mut joiners = Vec::new();
    for j in 0..conns {
        let user = format!("j{j}-{run_id}");
        joiners.push(
            ChatClient::connect(&topology.node_ws_url(j % n), &user)
                .await
                .context("connecting a joiner")?,
        );
    }
    let joins = args.joins;
    let cost = timed(&redis, || async {
        let mut tasks = Vec::new();
        for (j, mut c) in joiners.into_iter().enumerate() {
            let count = per_conn.min(joins - j * per_conn);
            let run_id = run_id.clone();
            tasks.push(tokio::spawn(async move {
                for k in 0..count {
                    c.join(&format!("rj-{run_id}-{j}-{k}"), None).await?;
                }
                Ok::<_, ClientError>(c)
            }));
        }
        for t in tasks {
            t.await.context("joiner task")?.context("join")?;
        }
        Ok(())
    })
    .await?;
    print_row(n, "join", joins, &cost, idle_rate);

    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.context("reader task")??;
    }
    drop(topology);
    Ok(())
}

fn cpu(pid: u32) -> anyhow::Result<f64> {
    cpu_seconds(pid).with_context(|| format!("reading /proc/{pid}/stat of redis-server"))
}

/// The Redis under test: its process (CPU time) and address (`INFO commandstats`).
struct Redis {
    pid: u32,
    addr: String,
    password: Option<String>,
}

/// Calls and microseconds per Redis command (`INFO commandstats`, Redis's own accounting: command
/// execution only, without reading requests and writing replies).
type CommandStats = BTreeMap<String, (u64, u64)>;

impl Redis {
    /// `INFO commandstats` through `redis-cli` (the password, if any, in `REDISCLI_AUTH`, never on the
    /// command line).
    fn commandstats(&self) -> anyhow::Result<CommandStats> {
        let (host, port) = self.addr.rsplit_once(':').context("redis address")?;
        let mut cli = std::process::Command::new("redis-cli");
        cli.args(["-h", host, "-p", port, "INFO", "commandstats"]);
        if let Some(password) = &self.password {
            cli.env("REDISCLI_AUTH", password);
        }
        let out = cli
            .output()
            .context("running redis-cli (install it with `apt-get install redis-tools`)")?;
        if !out.status.success() {
            bail!("redis-cli INFO commandstats: {}", out.status);
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut stats = BTreeMap::new();
        for line in text.lines() {
            let Some((name, fields)) = line
                .trim()
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let field = |key: &str| {
                fields
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(key))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            stats.insert(name.to_owned(), (field("calls="), field("usec=")));
        }
        Ok(stats)
    }
}

/// What a phase cost: wall seconds, Redis process CPU seconds, and the commands it ran.
struct Cost {
    secs: f64,
    redis_cpu: f64,
    commands: CommandStats,
}

/// Run `work`, returning what it cost Redis.
async fn timed<F, Fut>(redis: &Redis, work: F) -> anyhow::Result<Cost>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let stats_before = redis.commandstats()?;
    let before = cpu(redis.pid)?;
    let started = Instant::now();
    work().await?;
    let secs = started.elapsed().as_secs_f64();
    let redis_cpu = cpu(redis.pid)? - before;
    let mut commands = redis.commandstats()?;
    for (name, (calls, usec)) in &mut commands {
        let (c0, u0) = stats_before.get(name).copied().unwrap_or((0, 0));
        *calls = calls.saturating_sub(c0);
        *usec = usec.saturating_sub(u0);
    }
    commands.retain(|_, (calls, _)| *calls > 0);
    Ok(Cost {
        secs,
        redis_cpu,
        commands,
    })
}

fn print_row(n: usize, phase: &str, ops: usize, cost: &Cost, idle_rate: f64) {
    let (secs, redis) = (cost.secs, cost.redis_cpu);
    let work = (redis - idle_rate * secs).max(0.0);
    println!(
        "{:>5} {:>12} {:>9} {:>10.0} {:>10.2} {:>12.1} {:>10.0}%",
        n,
        phase,
        ops,
        ops as f64 / secs.max(1e-9),
        redis,
        work * 1e6 / ops.max(1) as f64,
        redis / secs.max(1e-9) * 100.0
    );
    let ops = ops.max(1) as f64;
    let mut commands: Vec<(&String, &(u64, u64))> = cost.commands.iter().collect();
    commands.sort_by_key(|(_, (_, usec))| std::cmp::Reverse(*usec));
    let listed: Vec<String> = commands
        .iter()
        .filter(|(_, (calls, _))| *calls as f64 / ops >= 0.01)
        .map(|(name, (calls, usec))| {
            format!(
                "{name} {:.2}x {:.1}µs",
                *calls as f64 / ops,
                *usec as f64 / ops
            )
        })
        .collect();
    // A script's time includes the commands it calls, which are also counted under their own names:
    // the sum would count them twice, so none is printed.
    println!(
        "{:>18} per op: {} (a script's time includes the commands it runs; process CPU {:.1} µs)",
        "",
        listed.join(", "),
        work * 1e6 / ops
    );
}

/// Every sender sends its share of `total` requests built by `frame(sender_node, k)`, `window` in
/// flight, and waits for as many `reply` frames; an `error` frame ends the run.
async fn drive(
    senders: &mut [(usize, ChatClient)],
    args: &Args,
    total: usize,
    reply: &'static str,
    limit: Duration,
    frame: impl Fn(usize, usize) -> serde_json::Value,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    let count = senders.len();
    let mut work = Vec::new();
    for (s, (node, c)) in senders.iter_mut().enumerate() {
        let share = total / count + usize::from(s < total % count);
        let frames: Vec<serde_json::Value> =
            (0..share).map(|k| frame(*node, k * count + s)).collect();
        let window = args.window.max(1);
        work.push(async move {
            let (mut sent, mut done) = (0usize, 0usize);
            while done < share {
                while sent < share && sent - done < window {
                    c.send_frame(&frames[sent]).await?;
                    sent += 1;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                let f = c.next_frame_within(left).await?;
                match frame_type(&f) {
                    Some(t) if t == reply => done += 1,
                    Some("error") => bail!("{reply} expected, got {f}"),
                    _ => {}
                }
            }
            Ok(())
        });
    }
    for r in futures_util::future::join_all(work).await {
        r?;
    }
    Ok(())
}
