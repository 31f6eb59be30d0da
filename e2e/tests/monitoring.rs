//! `monitoring/`: every query of the Grafana dashboard and every alert rule names a metric the binaries
//! really export — read from the `/metrics` of a running chat-node and registry (real processes, real
//! Redis) and from the operator's registry (what its `/metrics` serves) — so a misspelled or renamed
//! metric fails here. The dashboard covers what an operator of a chat system watches, and every alert
//! carries a runbook.

use std::collections::BTreeSet;
use std::time::Duration;

use e2e::client::ChatClient;

use e2e::promql::{exposed_names, metric_names, variable_query_names};
use e2e::topology::{Topology, TopologyConfig};
use serde_json::Value;
use switchboard_runtime::report;

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
/// The one series the queries may use that no binary exports: Prometheus's own per-target `up`.
const PROMETHEUS_SERIES: [&str; 1] = ["up"];
const T: Duration = Duration::from_secs(10);

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{REPO}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every sample name the chat-node, the registry and the operator expose.
async fn exported() -> BTreeSet<String> {
    let t = Topology::start(TopologyConfig::scaled(1, 1))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "start a chat-node and a registry with Redis: {}",
                report::chain(&e)
            )
        });
    // Labelled families appear once they have a sample: give each one, as clients and the cluster would.
    let refused = ChatClient::connect(&t.node_ws_url(0), "nobody").await;
    assert!(refused.is_err(), "a client without a token is refused");
    let mut alice = t.connect(0, "alice").await.expect("alice connects");
    alice
        .send_text(r#"{"type":"no-such-frame"}"#)
        .await
        .expect("send");
    alice.expect_type("error", T).await.expect("an error frame");
    let assign = format!("{}/v1/assign", t.registry_url(0));
    reqwest::get(&assign)
        .await
        .unwrap_or_else(|e| panic!("GET {assign}: {e}"));
    let operator = operator::metrics::Metrics::new();
    operator.failed("chatcluster", "kube");

    let mut names = BTreeSet::new();
    for url in [t.node_http_url(0), t.registry_url(0)] {
        let text = reqwest::get(format!("{url}/metrics"))
            .await
            .and_then(reqwest::Response::error_for_status)
            .unwrap_or_else(|e| panic!("GET {url}/metrics: {e}"))
            .text()
            .await
            .expect("metrics text");
        names.extend(exposed_names(&text));
    }
    names.extend(exposed_names(&operator.encode()));
    names.extend(PROMETHEUS_SERIES.map(str::to_owned));
    names
}

/// (where, expression) of every query of the dashboard, its variables included.
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard: Value =
        serde_json::from_str(&read("monitoring/grafana-dashboard.json")).expect("dashboard JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .expect("every target has a PromQL expr");
            queries.push((format!("panel {}", panel["title"]), expr.to_owned()));
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if var["type"] == "query" {
            let query = var["query"]["query"].as_str().expect("a variable query");
            queries.push((format!("variable {}", var["name"]), query.to_owned()));
        }
    }
    queries
}

/// (alert, rule) of every alerting rule.
fn alert_rules() -> Vec<(String, Value)> {
    let doc: Value =
        serde_yaml::from_str(&read("monitoring/prometheus-rules.yaml")).expect("rules YAML");
    doc["spec"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .map(|r| {
            (
                r["alert"]
                    .as_str()
                    .unwrap_or("(a recording rule)")
                    .to_owned(),
                r,
            )
        })
        .collect()
}

#[tokio::test]
async fn every_dashboard_and_alert_query_names_an_exported_metric() {
    let exported = exported().await;
    let mut checked = 0;
    let mut unknown = Vec::new();
    let queries = dashboard_queries()
        .into_iter()
        .chain(alert_rules().into_iter().map(|(alert, rule)| {
            (
                format!("alert {alert}"),
                rule["expr"].as_str().unwrap_or_default().to_owned(),
            )
        }));
    for (place, query) in queries {
        let names = if place.starts_with("variable") {
            variable_query_names(&query)
        } else {
            metric_names(&query)
        };
        assert!(!names.is_empty(), "{place} queries no metric: {query}");
        for name in names {
            checked += 1;
            if !exported.contains(&name) {
                unknown.push(format!("{place}: {name}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics no binary exports (misspelled or renamed?):\n{}\nexported: {exported:?}",
        unknown.join("\n")
    );
    assert!(checked > 20, "only {checked} metric references checked");
}

#[test]
fn the_dashboard_shows_what_running_a_chat_system_needs() {
    let names: BTreeSet<String> = dashboard_queries()
        .iter()
        .flat_map(|(_, q)| metric_names(q))
        .collect();
    for (what, metric) in [
        ("connections", "switchboard_connections"),
        ("rooms", "switchboard_rooms"),
        ("messages/s", "switchboard_messages_total"),
        ("deliveries/s", "switchboard_deliveries_total"),
        ("publish latency", "switchboard_bus_publish_seconds_bucket"),
        (
            "slow-consumer kicks",
            "switchboard_slow_consumers_dropped_total",
        ),
        ("refusals by code", "switchboard_errors_total"),
        ("refusals by reason", "switchboard_refusals_total"),
        (
            "Redis failovers",
            "switchboard_operator_redis_failovers_total",
        ),
        (
            "operator reconcile errors",
            "switchboard_operator_reconcile_errors_total",
        ),
    ] {
        assert!(
            names.contains(metric),
            "the dashboard shows no {what} ({metric})"
        );
    }
}

#[test]
fn every_alert_has_a_severity_and_a_runbook() {
    let rules = alert_rules();
    assert!(rules.len() >= 10, "{} alerts", rules.len());
    let mut seen = BTreeSet::new();
    for (alert, rule) in rules {
        assert!(alert.starts_with("Switchboard"), "{alert}");
        assert!(seen.insert(alert.clone()), "{alert} twice");
        assert!(
            ["critical", "warning", "info"]
                .contains(&rule["labels"]["severity"].as_str().unwrap_or_default()),
            "{alert}: severity"
        );
        for annotation in ["summary", "description", "runbook"] {
            let text = rule["annotations"][annotation].as_str().unwrap_or_default();
            assert!(text.len() > 20, "{alert}: {annotation} is missing or empty");
        }
    }
}
