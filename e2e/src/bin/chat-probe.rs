//! Proves that two clients chat across two chat-nodes: alice on one node, bob on another, one room;
//! each message must reach the other with the same sequence. Exit status 0 on success.
//!
//! Used by `deploy/kind-e2e.sh` (over `kubectl port-forward` to two chat-node pods) and runnable
//! against any two nodes: `cargo run -p e2e --bin chat-probe -- --a ws://HOST:PORT/ws --b ws://HOST:PORT/ws`.

use anyhow::{Context as _, bail};
use clap::Parser;
use e2e::client::ChatClient;
use std::process::ExitCode;
use std::time::Duration;
use switchboard_runtime::report;

/// Cross-node chat probe.
#[derive(Parser, Debug)]
#[command(about)]
struct Args {
    /// WebSocket URL of the first node (alice connects here).
    #[arg(long)]
    a: String,
    /// WebSocket URL of the second node (bob connects here).
    #[arg(long)]
    b: String,
    /// Room to use (a fresh one by default).
    #[arg(long)]
    room: Option<String>,
    /// HS256 secret file of nodes that require tokens (`--auth jwt`); without it the probe connects
    /// in open mode (`?user=`).
    #[arg(long, env = "SWITCHBOARD_JWT_HMAC_SECRET_FILE")]
    jwt_hmac_secret_file: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    report::exit("chat-probe", run().await)
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let room = args
        .room
        .unwrap_or_else(|| format!("probe-{:08x}", fastrand::u32(..)));
    let wait = Duration::from_secs(10);
    let credentials = match &args.jwt_hmac_secret_file {
        Some(path) => e2e::client::Credentials::Token(e2e::client::TokenIssuer::new(
            switchboard_runtime::secret::read_bytes(path)?,
        )),
        None => e2e::client::Credentials::Open,
    };
    let mut alice = ChatClient::connect_with(&args.a, credentials.options("probe-alice"))
        .await
        .context("alice connects")?;
    let mut bob = ChatClient::connect_with(&args.b, credentials.options("probe-bob"))
        .await
        .context("bob connects")?;
    if alice.node().is_some() && alice.node() == bob.node() {
        bail!(
            "both URLs reach the same node ({:?}); give two different nodes",
            alice.node()
        );
    }
    alice.join(&room, None).await.context("alice joins")?;
    bob.join(&room, None).await.context("bob joins")?;
    let ack = alice
        .send(&room, "hello from alice", Some("probe-1"))
        .await
        .context("alice sends")?;
    let got = bob
        .wait_message(&room, |m| m.seq == ack.seq, wait)
        .await
        .context("bob receives alice's message")?;
    if got.body != "hello from alice" {
        bail!("bob got {:?} at seq {}", got.body, got.seq);
    }
    let reply = bob
        .send(&room, "hello from bob", Some("probe-2"))
        .await
        .context("bob sends")?;
    alice
        .wait_message(&room, |m| m.seq == reply.seq, wait)
        .await
        .context("alice receives bob's reply")?;
    println!(
        "chat-probe: {:?} <-> {:?} in room {room}: seq {} and {} delivered across nodes",
        alice.node(),
        bob.node(),
        ack.seq,
        reply.seq
    );
    Ok(())
}
