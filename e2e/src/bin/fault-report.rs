//! Runs every fault scenario against the local HA topology and prints, per scenario: messages sent,
//! acknowledged, delivered, lost, duplicated, and recovery time p50/p99/max.
//!
//! `cargo run --release -p e2e --bin fault-report -- --help`

use clap::Parser;
use e2e::fault::{Load, Scenario, TABLE_HEADER, run_scenario};
use std::process::ExitCode;
use std::time::Duration;
use switchboard_runtime::duration;
use switchboard_runtime::report;

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
    /// Pause between two sends of one sender, 0ms to 1m.
    #[arg(long, default_value = "20ms", value_parser = duration::within(Duration::ZERO, Duration::from_secs(60)))]
    interval: Duration,
    /// Only this scenario (node-kill, rolling-restart, redis-master-kill, node-freeze).
    #[arg(long)]
    only: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    report::exit("fault-report", run().await)
}

async fn run() -> anyhow::Result<()> {
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
            interval: args.interval,
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
