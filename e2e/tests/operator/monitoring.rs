//! Monitoring on the bed: a ChatCluster asking for PodMonitors says so in its `Monitoring` condition while
//! the Prometheus Operator's CRDs are missing (and stays Ready), gets them once the CRDs are installed,
//! and loses them when it stops asking; the chart's ServiceMonitor and PrometheusRule, and
//! `monitoring/prometheus-rules.yaml`, are accepted by the API server with those CRDs; the chart ships the
//! Grafana dashboard as a ConfigMap for Grafana's sidecar.
//!
//! One test, in order, because the CRDs are cluster-wide: no other test of this binary installs them.

use std::collections::BTreeMap;

use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use operator::crd::{ChatCluster, MonitoringSpec, PodMonitorSpec};
use operator::monitoring::pod_monitor_resource;
use switchboard_testkit::{RedisServer, eventually};

use crate::helm::{ChartOperator, chart, helm_ok, tools};
use crate::{
    REPO, TIMEOUT, bed, condition, create_cluster, documents, kubectl, kubectl_ok, new_namespace,
    wait_condition,
};

/// The PodMonitors in `ns`, by name.
async fn pod_monitors(client: &Client, ns: &str) -> BTreeMap<String, DynamicObject> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &pod_monitor_resource());
    api.list(&Default::default())
        .await
        .map(|l| {
            l.items
                .into_iter()
                .map(|m| (m.metadata.name.clone().unwrap_or_default(), m))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn pod_monitors_follow_the_prometheus_operator_crds_and_the_chart_installs_monitors_and_rules()
 {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-mon").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    let crds = tools().await.prometheus_operator_crds();
    let (served, _) = kubectl(
        bed,
        &["get", "crd", "podmonitors.monitoring.coreos.com"],
        None,
    )
    .await;
    assert!(
        !served,
        "this test installs the Prometheus Operator's CRDs itself: run it on a cluster without them"
    );

    // A cluster-wide release, confined to this test's namespace by watchNamespace.
    let release = format!("sb-{n}");
    let fullname = format!("{release}-switchboard-operator");
    helm_ok(
        bed,
        &[
            "install",
            &release,
            &chart(),
            "--namespace",
            n,
            "--set",
            &format!("watchNamespace={n}"),
            "--wait",
            "--timeout",
            "120s",
        ],
    )
    .await;
    let _operator = ChartOperator::start(bed, &client, n, &fullname).await;
    let redis = RedisServer::start().await.expect("redis-server");
    let mut cc = ChatCluster::test("mon")
        .with_nodes(1)
        .with_external_url(&redis.url());
    cc.spec.monitoring = MonitoringSpec {
        pod_monitor: PodMonitorSpec {
            enabled: true,
            interval: Some("15s".to_owned()),
            labels: BTreeMap::from([("release".to_owned(), "prometheus".to_owned())]),
        },
    };
    create_cluster(&client, n, cc).await;

    // No CRDs: the condition says what to install; serving is not held back by it.
    let cc = wait_condition(&client, n, "mon", "Monitoring", "False").await;
    let (_, reason, message) = condition(&cc, "Monitoring").expect("Monitoring");
    assert_eq!(reason, "PrometheusOperatorMissing");
    assert!(
        message.contains("install the Prometheus Operator"),
        "{message}"
    );
    wait_condition(&client, n, "mon", "Ready", "True").await;

    // The CRDs arrive: the PodMonitors are applied (and so validated by the API server).
    for name in e2e::testbed::tools::CRD_NAMES {
        ns.delete_crd_on_drop(name);
    }
    let crds = crds.to_string_lossy().into_owned();
    kubectl_ok(bed, &["apply", "--server-side", "-f", &crds], None).await;
    for name in e2e::testbed::tools::CRD_NAMES {
        let crd = format!("crd/{name}");
        kubectl_ok(
            bed,
            &["wait", "--for=condition=Established", &crd, "--timeout=60s"],
            None,
        )
        .await;
    }
    let cc = wait_condition(&client, n, "mon", "Monitoring", "True").await;
    assert_eq!(
        condition(&cc, "Monitoring").map(|c| c.1).as_deref(),
        Some("PodMonitorsApplied")
    );
    assert_eq!(
        condition(&cc, "Ready").map(|c| c.0).as_deref(),
        Some("True")
    );
    let monitors = pod_monitors(&client, n).await;
    assert_eq!(
        monitors.keys().collect::<Vec<_>>(),
        ["mon-node", "mon-registry"]
    );
    for (monitor, component) in monitors.values().zip(["chat-node", "registry"]) {
        let spec = &monitor.data["spec"];
        assert_eq!(
            spec["selector"]["matchLabels"]["app.kubernetes.io/component"],
            component
        );
        assert_eq!(spec["podMetricsEndpoints"][0]["port"], "metrics");
        assert_eq!(spec["podMetricsEndpoints"][0]["interval"], "15s");
        let labels = monitor.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get("release").map(String::as_str),
            Some("prometheus")
        );
    }

    // The chart's ServiceMonitor and PrometheusRule, and the plain rules file, are accepted.
    helm_ok(
        bed,
        &[
            "upgrade",
            &release,
            &chart(),
            "--namespace",
            n,
            "--reuse-values",
            "--set",
            "metrics.serviceMonitor.enabled=true,prometheusRule.enabled=true,grafanaDashboard.enabled=true",
            "--wait",
        ],
    )
    .await;
    let out = kubectl_ok(
        bed,
        &[
            "get",
            "-n",
            n,
            "servicemonitor,prometheusrule",
            "-o",
            "name",
        ],
        None,
    )
    .await;
    assert!(
        out.contains(&format!("servicemonitor.monitoring.coreos.com/{fullname}"))
            && out.contains(&format!("prometheusrule.monitoring.coreos.com/{fullname}")),
        "{out}"
    );
    let installed = kubectl_ok(
        bed,
        &["get", "-n", n, "prometheusrule", &fullname, "-o", "json"],
        None,
    )
    .await;
    let installed: serde_json::Value = serde_json::from_str(&installed).expect("json");
    let shipped = documents("monitoring/prometheus-rules.yaml");
    assert_eq!(
        installed["spec"], shipped[0]["spec"],
        "the chart installs the shipped rules"
    );
    let dashboard = kubectl_ok(
        bed,
        &[
            "get",
            "-n",
            n,
            "configmap",
            &format!("{fullname}-dashboard"),
            "-o",
            "json",
        ],
        None,
    )
    .await;
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).expect("json");
    let shipped = std::fs::read_to_string(format!("{REPO}/monitoring/grafana-dashboard.json"))
        .expect("dashboard");
    assert_eq!(
        dashboard["data"]["switchboard.json"].as_str(),
        Some(shipped.trim_end())
    );
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let rules = format!("{REPO}/monitoring/prometheus-rules.yaml");
    kubectl_ok(
        bed,
        &["apply", "--dry-run=server", "-n", n, "-f", &rules],
        None,
    )
    .await;

    // Asked no more: the PodMonitors go, and so does the condition.
    let clusters: Api<ChatCluster> = Api::namespaced(client.clone(), n);
    clusters
        .patch(
            "mon",
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"spec": {"monitoring": {"podMonitor": {"enabled": false}}}}),
            ),
        )
        .await
        .expect("turn monitoring off");
    eventually("the PodMonitors are deleted", TIMEOUT, || async {
        pod_monitors(&client, n).await.is_empty().then_some(())
    })
    .await;
    eventually("the Monitoring condition is gone", TIMEOUT, || async {
        let cc = clusters.get("mon").await.ok()?;
        condition(&cc, "Monitoring").is_none().then_some(())
    })
    .await;
    helm_ok(bed, &["uninstall", &release, "--namespace", n, "--wait"]).await;
}
