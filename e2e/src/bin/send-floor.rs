//! The floor under a node's CPU per delivery on this machine: what one loopback TCP send of a chat
//! frame costs the thread that sends it, with nothing of a chat node around it.
//!
//! ```text
//!   sending thread ──write (k frames)──▶ loopback TCP ×sockets ──▶ readers (one thread, tokio, 8 KiB reads)
//!        └ its CPU time per frame (/proc/thread-self/stat) is the figure
//! ```
//!
//! A plain thread writes `--per-send` encoded WebSocket text frames of `--frame-bytes` (about a fan-out
//! delivery with a 64-byte body) in one `write` to each of `--sockets` loopback connections (`TCP_NODELAY`,
//! as the node's), `--rounds` times. Between rounds it waits until the readers have read everything, so
//! they are idle in `epoll_wait` when a round arrives — a room with one message in flight, where every
//! member's socket gets one frame per message. The readers are one thread like the load client's
//! (`chat-bench`): a tokio runtime reading 8 KiB at a time. Only the sending loop's CPU is counted.
//!
//! ```text
//! cargo run --release -p e2e --bin send-floor -- --sockets 1000 --rounds 300 --per-send 1,8
//! ```
//!
//! On loopback a send also does the receiving side's TCP work and wakes the reader, so its system time
//! is what a chat node pays per frame it writes on its own: no server writing one frame per send can
//! spend less CPU per delivery than the `1 frame per send` line. Bounded by `--timeout`.

use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use e2e::bench::{CpuSplit, machine_line, thread_cpu_split};
use switchboard_runtime::{duration, report};
use tokio::io::AsyncReadExt as _;

/// What one loopback send of a chat frame costs the sending thread (loopback only, bounded).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Loopback connections written to in each round (a room's members on one node).
    #[arg(long, default_value_t = 1000)]
    sockets: usize,
    /// Rounds: each writes to every socket once.
    #[arg(long, default_value_t = 300)]
    rounds: usize,
    /// Bytes of each frame, header included (125 to 65,535).
    #[arg(long, default_value_t = 200)]
    frame_bytes: usize,
    /// Frames per write, one run for each value: 1 is a node writing every delivery at once.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    per_send: Vec<usize>,
    /// Upper bound for the whole run, 1 s to 10 min.
    #[arg(long, default_value = "120s", value_parser = duration::within(Duration::from_secs(1), Duration::from_secs(600)))]
    timeout: Duration,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("send-floor: {}", report::chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    if !(126..=65_535).contains(&args.frame_bytes) || args.sockets == 0 || args.rounds == 0 {
        bail!(
            "--frame-bytes must be 126 to 65535 and --sockets, --rounds at least 1 (got {}, {}, {})",
            args.frame_bytes,
            args.sockets,
            args.rounds
        );
    }
    if let Some(k) = args.per_send.iter().find(|k| !(1..=64).contains(*k)) {
        bail!("--per-send values must be 1 to 64 (got {k})");
    }
    let deadline = Instant::now() + args.timeout;
    println!("{}", machine_line());
    println!(
        "loopback sends: {} sockets x {} rounds, frames of {} bytes, readers idle between rounds",
        args.sockets, args.rounds, args.frame_bytes
    );
    for &k in &args.per_send {
        let m = measure(args, k, deadline)?;
        let frames = (args.sockets * args.rounds * k) as f64;
        let per = |s: f64| s * 1e6 / frames;
        println!(
            "  {k:>2} frame(s) per send: sending thread {:.2} µs per frame (user {:.2}, system {:.2}); readers {:.2} µs per frame",
            per(m.sender.total()),
            per(m.sender.user),
            per(m.sender.system),
            per(m.readers.total()),
        );
    }
    Ok(())
}

/// CPU time of the sending loop and of the readers' thread over one run.
struct Measured {
    sender: CpuSplit,
    readers: CpuSplit,
}

/// One run: `per_send` frames per write to every socket, `args.rounds` times.
fn measure(args: &Args, per_send: usize, deadline: Instant) -> anyhow::Result<Measured> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    let addr = listener.local_addr()?;
    let mut senders = Vec::with_capacity(args.sockets);
    let mut accepted = Vec::with_capacity(args.sockets);
    for _ in 0..args.sockets {
        let s = TcpStream::connect(addr).context(
            "connecting on loopback (too few file descriptors? raise them with `ulimit -n 65536`)",
        )?;
        s.set_nodelay(true)?;
        senders.push(s);
        let (a, _) = listener.accept()?;
        a.set_nonblocking(true)?;
        accepted.push(a);
    }
    let read = Arc::new(AtomicU64::new(0));
    let readers = {
        let read = read.clone();
        std::thread::Builder::new()
            .name("readers".into())
            .spawn(move || read_all(accepted, read))?
    };

    let batch = frames(args.frame_bytes, per_send);
    let mut sender = CpuSplit::default();
    let mut expected = 0u64;
    for _ in 0..args.rounds {
        let before = thread_cpu_split().context("reading /proc/thread-self/stat")?;
        for s in &mut senders {
            s.write_all(&batch)
                .context("writing to a loopback socket")?;
        }
        sender = sender + (thread_cpu_split().context("reading /proc/thread-self/stat")? - before);
        expected += (batch.len() * args.sockets) as u64;
        // One message in flight: the readers take the whole round before the next one leaves.
        while read.load(Ordering::Acquire) < expected {
            if Instant::now() >= deadline {
                bail!("the readers did not keep up within --timeout");
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    drop(senders);
    let readers = readers
        .join()
        .map_err(|_| anyhow::anyhow!("the readers' thread panicked"))??;
    Ok(Measured { sender, readers })
}

/// `count` unmasked WebSocket text frames of `bytes` each (header included), back to back.
fn frames(bytes: usize, count: usize) -> Vec<u8> {
    let payload = bytes - 4;
    let mut frame = vec![0x81, 126];
    frame.extend_from_slice(&(payload as u16).to_be_bytes());
    frame.resize(bytes, b'x');
    frame.repeat(count)
}

/// Reads every socket until it closes, on one thread (a current-thread tokio runtime, 8 KiB reads),
/// adding what it read to `read`; the thread's CPU time over it.
fn read_all(sockets: Vec<TcpStream>, read: Arc<AtomicU64>) -> anyhow::Result<CpuSplit> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let start = thread_cpu_split().context("reading /proc/thread-self/stat")?;
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for s in sockets {
            let mut s = tokio::net::TcpStream::from_std(s)?;
            let read = read.clone();
            tasks.spawn(async move {
                let mut buf = vec![0u8; 8 * 1024];
                while let Ok(n @ 1..) = s.read(&mut buf).await {
                    read.fetch_add(n as u64, Ordering::AcqRel);
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        anyhow::Ok(())
    })?;
    Ok(thread_cpu_split().context("reading /proc/thread-self/stat")? - start)
}
