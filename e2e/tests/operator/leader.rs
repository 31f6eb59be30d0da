//! Leader election: of two operator replicas one leads on the Lease, and when it dies (no release) the
//! standby takes over within the lease duration and reconciles.

use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::testbed::TestBed;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams};
use operator::crd::ChatCluster;
use operator::leader::LeaseConfig;
use operator::metrics::Metrics;
use operator::server::run_with_leader_election;
use switchboard_testkit::eventually;
use tokio_util::sync::CancellationToken;

use crate::{
    TIMEOUT, bed, create_cluster, demo_deployment_asks_for, logging, new_namespace,
    operator_client, scale_demo, settings, wait_condition,
};

/// One operator replica campaigning on `lease`; aborting the task is a crash (no Lease release).
async fn spawn_elected(
    bed: &TestBed,
    ns: &str,
    identity: &str,
    lease: LeaseConfig,
) -> tokio::task::JoinHandle<Result<(), operator::server::Error>> {
    logging();
    let client = operator_client(bed).await;
    tokio::spawn(run_with_leader_election(
        client,
        settings(ns, identity),
        Arc::new(Metrics::new()),
        lease,
        CancellationToken::new(),
    ))
}

#[tokio::test]
async fn one_operator_leads_on_the_lease_and_a_standby_takes_over_when_it_dies() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-leader").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    let lease_name = format!("switchboard-operator-{n}");
    let lease_config = |identity: &str| {
        LeaseConfig::new("switchboard-system", &lease_name, identity)
            .with_lease_duration(Duration::from_secs(4))
    };
    let first = spawn_elected(bed, n, "operator-a", lease_config("operator-a")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = spawn_elected(bed, n, "operator-b", lease_config("operator-b")).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "switchboard-system");
    let holder = |l: Lease| l.spec.and_then(|s| s.holder_identity).unwrap_or_default();
    let leader = eventually("a leader", TIMEOUT, || async {
        let h = holder(leases.get(&lease_name).await.ok()?);
        (!h.is_empty()).then_some(h)
    })
    .await;
    assert_eq!(leader, "operator-a");
    create_cluster(&client, n, ChatCluster::test("demo").with_nodes(1)).await;
    wait_condition(&client, n, "demo", "Progressing", "False").await;

    // Kill the leader (no release: its future is dropped, as in a crash); the standby takes over.
    first.abort();
    let killed = Instant::now();
    eventually(
        "the standby takes the Lease",
        Duration::from_secs(10),
        || async { (holder(leases.get(&lease_name).await.ok()?) == "operator-b").then_some(()) },
    )
    .await;
    let took = killed.elapsed();
    assert!(
        took <= Duration::from_secs(4) + Duration::from_secs(2),
        "takeover took {took:?}"
    );
    scale_demo(bed, n, 3).await;
    demo_deployment_asks_for(&client, n, 3, "the new leader reconciles").await;
    second.abort();
    let _ = leases.delete(&lease_name, &DeleteParams::default()).await;
}
