//! Fault tests (issue: high availability): each scenario runs a counted load on the HA topology
//! (Redis master + 2 replicas + 3 sentinels with a password, 3 chat-nodes acking after one replica,
//! 2 registries) and requires every acknowledged message at every member exactly once, in order.

use e2e::fault::{Load, Scenario, run_scenario};
use std::time::Duration;

fn load() -> Load {
    Load {
        members: 8,
        senders: 3,
        messages_per_sender: 60,
        interval: Duration::from_millis(25),
        ..Load::default()
    }
}

async fn check(scenario: Scenario) {
    let outcome = run_scenario(scenario, load())
        .await
        .expect("scenario set-up");
    println!("{}: {outcome}", scenario.name());
    assert!(outcome.is_clean(), "{}: {outcome}", scenario.name());
    assert_eq!(
        outcome.delivered,
        outcome.acked * load().members,
        "every member got every message"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_killed_with_sigkill_loses_nothing() {
    check(Scenario::NodeKill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_loses_nothing() {
    check(Scenario::RollingRestart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_master_failover_loses_nothing() {
    check(Scenario::MasterKill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_frozen_and_resumed_loses_nothing() {
    check(Scenario::NodeFreeze).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_planned_failover_loses_nothing() {
    check(Scenario::PlannedFailover).await;
}
