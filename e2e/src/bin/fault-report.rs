//! Runs every fault scenario against the local HA topology and prints, per scenario: messages sent,
//! acknowledged, delivered, lost, duplicated, and recovery time p50/p99/max.
//!
//! `cargo run --release -p e2e --bin fault-report -- --help`

use clap::Parser;
use e2e::fault::{Load, Scenario, run_scenario};
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
    println!(
        "{:<18} {:>6} {:>6} {:>9} {:>5} {:>5} {:>5} {:>10} {:>8} {:>8} {:>8}",
        "scenario",
        "sent",
        "acked",
        "delivered",
        "lost",
        "dup",
        "order",
        "reconnects",
        "rec p50",
        "rec p99",
        "rec max"
    );
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
        let ms = |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{}ms", d.as_millis()));
        println!(
            "{:<18} {:>6} {:>6} {:>9} {:>5} {:>5} {:>5} {:>10} {:>8} {:>8} {:>8}",
            scenario.name(),
            o.sent,
            o.acked,
            o.delivered,
            o.lost,
            o.duplicated,
            o.out_of_order,
            o.recoveries.len(),
            ms(o.recovery_percentile(50.0)),
            ms(o.recovery_percentile(99.0)),
            ms(o.recovery_percentile(100.0)),
        );
        clean &= o.is_clean();
    }
    if !clean {
        anyhow::bail!("a scenario lost, duplicated or reordered acknowledged messages");
    }
    Ok(())
}
