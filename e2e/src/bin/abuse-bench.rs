//! The history-request flood of issue 14, measured: a node's resident memory before, during and after
//! `clients` sockets ask for history pages of long messages as fast as the rate limit lets them and
//! never read a byte of the answers.
//!
//! ```text
//! cargo build -p chat-node -p registry -p e2e --bins
//! cargo run -p e2e --bin abuse-bench                       # the defaults are the issue's flood
//! SWITCHBOARD_BIN_DIR=/path/to/other/build cargo run -p e2e --bin abuse-bench   # another chat-node
//! ```
//!
//! It starts one standalone chat-node (the binaries of `SWITCHBOARD_BIN_DIR`, else of this build) on
//! loopback with its default limits, fills a room with `messages` messages of `body_chars`
//! characters, then opens `clients` WebSockets that each send `history limit=page` frames for
//! `duration` without reading. VmRSS of the node (`/proc/PID/status`) is sampled every 250 ms. Then the
//! flood sockets start reading, to see how the node ended each of them (close code, or a connection
//! dropped without one), and a fresh client checks the node still answers. Everything is bounded by
//! `duration` plus a few seconds.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use e2e::client::ChatClient;
use e2e::topology::{Topology, TopologyConfig};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use switchboard_runtime::{duration, report};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// The history-request flood against one standalone node (loopback only, bounded in time).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Flooding sockets.
    #[arg(long, env = "BENCH_CLIENTS", default_value_t = 10)]
    clients: usize,
    /// Messages in the room.
    #[arg(long, env = "BENCH_MESSAGES", default_value_t = 60)]
    messages: usize,
    /// Characters per message body.
    #[arg(long, env = "BENCH_BODY_CHARS", default_value_t = 4000)]
    body_chars: usize,
    /// `limit` of each history request.
    #[arg(long, env = "BENCH_PAGE", default_value_t = 50)]
    page: u32,
    /// History requests per second and socket after a first burst of twice as many: just inside the
    /// node's default rate limit (20 per second, burst 40), so the node never refuses one.
    #[arg(long, env = "BENCH_RATE", default_value_t = 19)]
    rate: u32,
    /// How long the flood lasts (1s to 10m).
    #[arg(
        long,
        env = "BENCH_DURATION",
        default_value = "12s",
        value_parser = duration::within(Duration::from_secs(1), Duration::from_secs(600))
    )]
    duration: Duration,
}

#[tokio::main]
async fn main() -> ExitCode {
    report::exit("abuse-bench", run().await)
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = e2e::topology::bin_dir(&["chat-node", "registry"])?;
    let t = Topology::start(TopologyConfig {
        log_filter: "warn".into(),
        ..TopologyConfig::standalone()
    })
    .await
    .context("starting a standalone chat-node")?;
    let pid = t.node_pid(0).context("the node's process id")?;
    let rss_mib = || t.node_rss_kib(0) as f64 / 1024.0;
    let url = t.node_ws_url(0);
    println!("chat-node {} (pid {pid}), default limits", bin.display());

    let room = format!("flood-{:06x}", fastrand::u32(..0xff_ffff));
    let mut writer = ChatClient::connect(&url, "writer").await?;
    writer.join(&room, None).await?;
    let body = "x".repeat(args.body_chars);
    for i in 0..args.messages {
        // Inside the default rate limit (20 frames/s after a burst of 40).
        writer.send(&room, &body, Some(&format!("w{i}"))).await?;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    println!(
        "room: {} messages of {} characters; {} sockets ask history limit={} ({} per second after a \
         burst of {}) for {:?} and never read",
        args.messages,
        args.body_chars,
        args.clients,
        args.page,
        args.rate,
        args.rate * 2,
        args.duration
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_mib();
    let mut sockets = Vec::new();
    for i in 0..args.clients {
        let ws = format!("{url}?user=flood{i}");
        let (socket, _) = tokio_tungstenite::connect_async(&ws)
            .await
            .with_context(|| format!("flood socket {i}"))?;
        sockets.push(socket);
    }
    let mut senders = Vec::new();
    let mut readers = Vec::new();
    let deadline = Instant::now() + args.duration;
    for socket in sockets {
        let (mut tx, rx) = socket.split();
        readers.push(rx);
        let frames = [
            json!({"type": "join", "room": room}).to_string(),
            json!({"type": "history", "room": room, "limit": args.page}).to_string(),
        ];
        let (burst, gap) = (
            u64::from(args.rate.max(1)) * 2,
            Duration::from_secs(1) / args.rate.max(1),
        );
        senders.push(tokio::spawn(async move {
            let mut sent = 0u64;
            if tx.send(Message::text(frames[0].clone())).await.is_err() {
                return sent;
            }
            let mut tick = tokio::time::interval(gap);
            while Instant::now() < deadline {
                if sent >= burst {
                    tick.tick().await;
                }
                let send = tx.send(Message::text(frames[1].clone()));
                match tokio::time::timeout_at(deadline, send).await {
                    Ok(Ok(())) => sent += 1,
                    _ => break,
                }
            }
            sent
        }));
    }
    let mut peak = before;
    let mut samples = Vec::new();
    let started = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = rss_mib();
        peak = peak.max(now);
        samples.push((started.elapsed().as_secs_f64(), now));
    }
    let at_end = rss_mib();
    let mut requests = 0;
    for s in senders {
        requests += s.await.unwrap_or(0);
    }
    println!("history requests written by the flood sockets: {requests}");
    for (t, mib) in samples.iter().step_by(4) {
        println!("  t={t:5.1}s  VmRSS {mib:7.1} MiB");
    }

    // Now read: what did the node make of each socket?
    let mut closed = std::collections::BTreeMap::<String, usize>::new();
    for mut rx in readers {
        let end = loop {
            match tokio::time::timeout(Duration::from_secs(5), rx.next()).await {
                Err(_) => break "still open after 5 s of reading".to_owned(),
                Ok(None) => break "dropped without a close frame".to_owned(),
                Ok(Some(Err(e))) => break format!("dropped without a close frame ({e})"),
                Ok(Some(Ok(Message::Close(Some(c))))) => break format!("closed {}", c.code),
                Ok(Some(Ok(Message::Close(None)))) => break "closed without a code".to_owned(),
                Ok(Some(Ok(_))) => {}
            }
        };
        *closed.entry(end).or_default() += 1;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_mib();
    let mut probe = ChatClient::connect(&url, "probe").await?;
    let usable = probe.join(&room, None).await.is_ok() && probe.ping().await.is_ok();

    println!("node VmRSS before the flood:  {before:7.1} MiB");
    println!("node VmRSS peak during it:    {peak:7.1} MiB");
    println!("node VmRSS at its end:        {at_end:7.1} MiB");
    println!("node VmRSS after it:          {after:7.1} MiB");
    for (how, n) in &closed {
        println!("flood sockets {how}: {n}");
    }
    println!(
        "a fresh client afterwards: {}",
        if usable { "joins and pings" } else { "FAILS" }
    );
    Ok(())
}
