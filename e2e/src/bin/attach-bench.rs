//! Memory of a chat-node while large attachments stream through it: uploads a file of `--mib` MiB
//! (generated on the fly, never held by this program either) to a node backed by a real MinIO, then
//! downloads it, sampling the node's resident memory every 50 ms; prints the figures.
//!
//! ```text
//! cargo build --release -p chat-node -p registry
//! cargo run --release -p e2e --bin attach-bench -- --mib 1024 --mode single
//! ```
//!
//! `--mode single` sends the whole file in one request; `--mode chunked` in 8 MiB chunks (as the SDK
//! does). The node keeps at most one 8 MiB part per upload in memory, so its RSS should stay flat
//! whatever the file's size.

use anyhow::{Context as _, bail};
use clap::Parser;
use e2e::topology::{Topology, TopologyConfig};
use serde_json::json;
use std::time::{Duration, Instant};
use switchboard_attachments::CHUNK_BYTES;
use switchboard_testkit::s3::S3Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Stream a large attachment through a chat-node and print its memory.
#[derive(Debug, Parser)]
struct Args {
    /// Size of the file in MiB.
    #[arg(long, default_value_t = 1024)]
    mib: u64,
    /// `single` (one PUT) or `chunked` (8 MiB chunks).
    #[arg(long, default_value = "single")]
    mode: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let size = args.mib * 1024 * 1024;
    let s3 = S3Server::start().await.context("starting MinIO")?;
    let max = (size + 1).to_string();
    let topo = Topology::start(TopologyConfig::scaled(1, 1).with_s3(&s3).with_node_args([
        "--max-attachment-bytes",
        max.as_str(),
        "--attachment-quota-bytes",
        max.as_str(),
    ]))
    .await
    .context("starting the topology")?;
    let mut client = topo.connect(0, "bench").await.context("connecting")?;
    client.join("bench", None).await.context("joining")?;
    let ack = client
        .request(
            json!({"type": "send", "room": "bench", "body": "",
                   "attachments": [{"name": "big.zip", "size": size, "type": "application/zip"}]}),
            Duration::from_secs(10),
        )
        .await
        .context("sending")?;
    let Some(url) = ack["attachments"][0]["upload_url"].as_str() else {
        bail!("no upload URL in {ack}");
    };
    let port: u16 = topo
        .node_http_url(0)
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .context("node port")?;

    let baseline = topo.node_rss_kib(0);
    let sampler = Sampler::start(&topo);
    let started = Instant::now();
    match args.mode.as_str() {
        "single" => put(port, url, 0, size, size).await?,
        "chunked" => {
            let mut start = 0;
            while start < size {
                let end = (start + CHUNK_BYTES).min(size);
                put(port, url, start, end, size).await?;
                start = end;
            }
        }
        other => bail!("--mode {other}: use single or chunked"),
    }
    let upload = started.elapsed();
    let (upload_peak, upload_last) = sampler.stop().await;

    let ready = client
        .wait_for(|f| f["type"] == "attachment", Duration::from_secs(60))
        .await
        .context("the ready update")?;
    let Some(download_url) = ready["attachment"]["url"].as_str() else {
        bail!("not ready: {ready}");
    };
    let sampler = Sampler::start(&topo);
    let started = Instant::now();
    let got = get(port, download_url).await?;
    let download = started.elapsed();
    let (download_peak, download_last) = sampler.stop().await;
    if got != size {
        bail!("downloaded {got} bytes of {size}");
    }
    let mib = |kib: u64| kib as f64 / 1024.0;
    let rate = |d: Duration| args.mib as f64 / d.as_secs_f64();
    println!("attach-bench: {} MiB, upload mode {}", args.mib, args.mode);
    println!("  node RSS before      {:8.1} MiB", mib(baseline));
    println!(
        "  upload               {:8.1} s  {:7.1} MiB/s   node RSS peak {:7.1} MiB, after {:7.1} MiB",
        upload.as_secs_f64(),
        rate(upload),
        mib(upload_peak),
        mib(upload_last)
    );
    println!(
        "  download             {:8.1} s  {:7.1} MiB/s   node RSS peak {:7.1} MiB, after {:7.1} MiB",
        download.as_secs_f64(),
        rate(download),
        mib(download_peak),
        mib(download_last)
    );
    println!(
        "  peak above baseline  {:8.1} MiB (file: {} MiB)",
        mib(upload_peak.max(download_peak).saturating_sub(baseline)),
        args.mib
    );
    Ok(())
}

/// Samples a node's RSS on a timer until stopped; returns (peak, last) in KiB.
struct Sampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<(u64, u64)>,
}

impl Sampler {
    fn start(topo: &Topology) -> Self {
        let pid = topo.node_pid(0);
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut peak = 0;
            loop {
                let last = pid.map_or(0, e2e::testbed::real::rss_kib);
                peak = peak.max(last);
                tokio::select! {
                    _ = &mut stopped => return (peak, last),
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        });
        Self { stop, task }
    }

    async fn stop(self) -> (u64, u64) {
        let _ = self.stop.send(());
        self.task.await.unwrap_or((0, 0))
    }
}

/// One PUT of bytes `start..end` of a `total`-byte ZIP-looking file, written as it is generated.
async fn put(port: u16, url: &str, start: u64, end: u64, total: u64) -> anyhow::Result<()> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let head = format!(
        "PUT {url} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{total}\r\nConnection: close\r\n\r\n",
        end - start,
        end - 1
    );
    tcp.write_all(head.as_bytes()).await?;
    let mut block = vec![0x5au8; 256 * 1024];
    let mut at = start;
    while at < end {
        let n = (end - at).min(block.len() as u64) as usize;
        if at == 0 {
            block[..4].copy_from_slice(b"PK\x03\x04");
        }
        tcp.write_all(&block[..n]).await?;
        if at == 0 {
            block[..4].copy_from_slice(&[0x5a; 4]);
        }
        at += n as u64;
    }
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await?;
    let text = String::from_utf8_lossy(&answer);
    if !text.starts_with("HTTP/1.1 200") {
        bail!("upload refused: {}", text.lines().next().unwrap_or(""));
    }
    Ok(())
}

/// Downloads a URL, counting and dropping the bytes; returns the body length.
async fn get(port: u16, url: &str) -> anyhow::Result<u64> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let head = format!("GET {url} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    tcp.write_all(head.as_bytes()).await?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    let mut header_end = None;
    let mut head_bytes = Vec::new();
    loop {
        let n = tcp.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        match header_end {
            Some(_) => total += n as u64,
            None => {
                head_bytes.extend_from_slice(&buf[..n]);
                if let Some(i) = head_bytes.windows(4).position(|w| w == b"\r\n\r\n") {
                    header_end = Some(i);
                    total += (head_bytes.len() - i - 4) as u64;
                    if !head_bytes.starts_with(b"HTTP/1.1 200") {
                        bail!(
                            "download refused: {}",
                            String::from_utf8_lossy(&head_bytes[..i])
                        );
                    }
                }
            }
        }
    }
    Ok(total)
}
