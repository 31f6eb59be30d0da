//! Runs every fault scenario against the local HA topology and prints, per scenario: messages sent,
//! acknowledged, delivered, lost, duplicated, and recovery time p50/p99/max.
//!
//! `cargo run --release -p e2e --bin fault-report -- --help`

use clap::Parser;
use e2e::fault::{Load, Scenario, TABLE_HEADER, run_scenario};
use std::time::Duration;

/// Fault report: every scenario, counted message by message.
#[derive(Parser, Debug)]
#[command(about)]
struct Args {
    /// Room members per scenario.
    #[arg(long, default_value_t = 12)]
    members: usize,
    /// Members that also send.
    #[arg(long, default_value_t = 4)]
    senders: usize,
    /// Messages per sender.
    #[arg(long, default_value_t = 200)]
    messages: usize,
    /// Milliseconds between two sends of one sender.
    #[arg(long, default_value_t = 20)]
    interval_ms: u64,
    /// Only this scenario (node-kill, rolling-restart, redis-master-kill, node-freeze).
    #[arg(long)]
    only: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!("{TABLE_HEADER}");
    let mut clean = true;
    for scenario in Scenario::ALL {
        if args.only.as_deref().is_some_and(|o| o != scenario.name()) {
            continue;
        }
        let load = Load {
            members: args.members,
            senders: args.senders,
            messages_per_sender: args.messages,
            interval: Duration::from_millis(args.interval_ms),
            ..Load::default()
        };
        let o = run_scenario(scenario, load).await?;
        println!("{}", o.table_row(scenario.name()));
        clean &= o.is_clean();
    }
    if !clean {
        anyhow::bail!("a scenario lost, duplicated or reordered acknowledged messages");
    }
    Ok(())
}
