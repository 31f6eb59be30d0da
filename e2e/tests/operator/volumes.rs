//! Growing the managed Redis volumes: a bigger `spec.redis.managed.storage` reaches every data claim and
//! the StatefulSet is replaced with its pods kept; a storage class that cannot expand is `Degraded` with
//! the reason and the StatefulSet keeps its size.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use switchboard_testkit::eventually;

use crate::{
    TIMEOUT, bed, condition, kubectl_ok, new_namespace, start_operator, wait_condition, wait_event,
};

/// A ChatCluster `name` whose two data volumes come from storage class `class`.
fn with_class(name: &str, class: &str) -> String {
    format!(
        "apiVersion: switchboard.dev/v1alpha1\nkind: ChatCluster\nmetadata: {{name: {name}}}\n\
         spec: {{redis: {{managed: {{replicas: 2, sentinels: 1, storage: 1Gi, storageClassName: {class}}}}}}}\n"
    )
}

/// A storage class like the bed's default (hostPath volumes, bound at once) that may or may not expand.
fn storage_class(class: &str, expands: bool) -> String {
    format!(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {{name: {class}}}\n\
         provisioner: kubernetes.io/host-path\nreclaimPolicy: Delete\nvolumeBindingMode: Immediate\n\
         allowVolumeExpansion: {expands}\n"
    )
}

/// What the claims `data-<name>-redis-N` ask for, once `count` of them are bound.
async fn bound_claims(
    client: &Client,
    ns: &str,
    name: &str,
    count: usize,
) -> Vec<(String, String)> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let prefix = format!("data-{name}-redis-");
    eventually(
        &format!("{count} bound claims of {name}"),
        TIMEOUT,
        || async {
            let list = claims.list(&ListParams::default()).await.ok()?;
            let bound: Vec<(String, String)> = list
                .items
                .iter()
                .filter(|c| c.name_any().starts_with(&prefix))
                .filter(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
                .map(|c| {
                    let asks = c
                        .spec
                        .as_ref()
                        .and_then(|s| s.resources.as_ref())
                        .and_then(|r| r.requests.as_ref())
                        .and_then(|r| r.get("storage"))
                        .map(|q| q.0.clone())
                        .unwrap_or_default();
                    (c.name_any(), asks)
                })
                .collect();
            (bound.len() == count).then_some(bound)
        },
    )
    .await
}

/// The data StatefulSet's uid and the size its claim template asks for.
async fn data_set(client: &Client, ns: &str, name: &str) -> Option<(String, String)> {
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let set = sets.get_opt(&format!("{name}-redis")).await.ok()??;
    let size = set
        .spec
        .volume_claim_templates
        .as_ref()?
        .first()?
        .spec
        .as_ref()?;
    let size = size
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")?
        .0
        .clone();
    Some((set.uid()?, size))
}

/// Uids of the data pods of `name`.
async fn data_pods(client: &Client, ns: &str, name: &str) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = format!("app.kubernetes.io/instance={name},app.kubernetes.io/component=redis");
    let mut uids: Vec<String> = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map(|l| l.items.iter().filter_map(|p| p.uid()).collect())
        .unwrap_or_default();
    uids.sort();
    uids
}

#[tokio::test]
async fn a_grown_storage_size_reaches_every_data_claim_without_restarting_redis() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-grow").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    // A class like the bed's default (hostPath, bound at once) that allows expansion.
    let class = format!("expandable-{n}");
    kubectl_ok(
        bed,
        &["apply", "-f", "-"],
        Some(&storage_class(&class, true)),
    )
    .await;
    let _operator = start_operator(bed, n).await;
    kubectl_ok(
        bed,
        &["apply", "-n", n, "-f", "-"],
        Some(&with_class("grow", &class)),
    )
    .await;
    let before = bound_claims(&client, n, "grow", 2).await;
    assert!(before.iter().all(|(_, asks)| asks == "1Gi"), "{before:?}");
    let (old_uid, size) = data_set(&client, n, "grow")
        .await
        .expect("data StatefulSet");
    assert_eq!(size, "1Gi");
    let pods = eventually("both data pods", TIMEOUT, || async {
        let pods = data_pods(&client, n, "grow").await;
        (pods.len() == 2).then_some(pods)
    })
    .await;

    // Shrinking is refused at admission with the rule's message.
    let (ok, out) = crate::kubectl(
        bed,
        &[
            "patch",
            "-n",
            n,
            "chatcluster/grow",
            "--type=merge",
            "-p",
            r#"{"spec":{"redis":{"managed":{"storage":"512Mi"}}}}"#,
        ],
        None,
    )
    .await;
    assert!(!ok && out.contains("can grow but not shrink"), "{out}");

    grow_to_2gi(bed, n, "grow").await;
    let (_, _, note) = wait_event(&client, n, "grow", "VolumeResize").await;
    assert!(note.contains("1Gi → 2Gi"), "{note}");
    let after = bound_claims(&client, n, "grow", 2).await;
    assert!(
        after.iter().all(|(_, asks)| asks == "2Gi"),
        "every claim asks for 2Gi: {after:?}"
    );
    let (new_uid, size) = eventually("the data StatefulSet asks for 2Gi", TIMEOUT, || async {
        data_set(&client, n, "grow")
            .await
            .filter(|(_, size)| size == "2Gi")
    })
    .await;
    assert_ne!(
        new_uid, old_uid,
        "the StatefulSet was replaced (its claim template is immutable)"
    );
    assert_eq!(size, "2Gi");
    assert_eq!(
        data_pods(&client, n, "grow").await,
        pods,
        "no data pod was replaced"
    );
    let cc = wait_condition(&client, n, "grow", "Degraded", "False").await;
    assert_eq!(
        condition(&cc, "Degraded").map(|c| c.0),
        Some("False".to_owned())
    );
    kubectl_ok(
        bed,
        &["delete", "storageclass", &class, "--wait=false"],
        None,
    )
    .await;
}

#[tokio::test]
async fn a_storage_class_that_cannot_expand_is_degraded_until_it_can() {
    let bed = bed().await;
    let ns = new_namespace(bed, "op-nogrow").await;
    let n = ns.name();
    let client = bed.client().expect("client");
    let class = format!("fixed-{n}");
    kubectl_ok(
        bed,
        &["apply", "-f", "-"],
        Some(&storage_class(&class, false)),
    )
    .await;
    let _operator = start_operator(bed, n).await;
    kubectl_ok(
        bed,
        &["apply", "-n", n, "-f", "-"],
        Some(&with_class("fixed", &class)),
    )
    .await;
    bound_claims(&client, n, "fixed", 2).await;
    let (old_uid, _) = data_set(&client, n, "fixed")
        .await
        .expect("data StatefulSet");
    let pods = eventually("both data pods", TIMEOUT, || async {
        let pods = data_pods(&client, n, "fixed").await;
        (pods.len() == 2).then_some(pods)
    })
    .await;
    grow_to_2gi(bed, n, "fixed").await;
    let api: Api<operator::crd::ChatCluster> = Api::namespaced(client.clone(), n);
    let cc = eventually("Degraded VolumeResizeRefused", TIMEOUT, || async {
        let cc = api.get("fixed").await.ok()?;
        (condition(&cc, "Degraded")?.1 == "VolumeResizeRefused").then_some(cc)
    })
    .await;
    let (status, _, message) = condition(&cc, "Degraded").expect("Degraded");
    assert_eq!(status, "True");
    assert!(message.contains("allowVolumeExpansion"), "{message}");
    assert_eq!(
        data_set(&client, n, "fixed").await,
        Some((old_uid.clone(), "1Gi".to_owned())),
        "the StatefulSet is kept as it was"
    );
    let claims = bound_claims(&client, n, "fixed", 2).await;
    assert!(claims.iter().all(|(_, asks)| asks == "1Gi"), "{claims:?}");

    // The class is allowed to expand: the operator grows the volumes and the condition clears.
    kubectl_ok(
        bed,
        &["apply", "-f", "-"],
        Some(&storage_class(&class, true)),
    )
    .await;
    wait_condition(&client, n, "fixed", "Degraded", "False").await;
    let (new_uid, _) = eventually("the data StatefulSet asks for 2Gi", TIMEOUT, || async {
        data_set(&client, n, "fixed")
            .await
            .filter(|(_, size)| size == "2Gi")
    })
    .await;
    assert_ne!(new_uid, old_uid);
    assert_eq!(
        data_pods(&client, n, "fixed").await,
        pods,
        "no data pod was replaced"
    );
    kubectl_ok(
        bed,
        &["delete", "storageclass", &class, "--wait=false"],
        None,
    )
    .await;
}

/// `kubectl patch` of ChatCluster `name` to 2Gi data volumes.
async fn grow_to_2gi(bed: &e2e::testbed::TestBed, ns: &str, name: &str) {
    kubectl_ok(
        bed,
        &[
            "patch",
            "-n",
            ns,
            &format!("chatcluster/{name}"),
            "--type=merge",
            "-p",
            r#"{"spec":{"redis":{"managed":{"storage":"2Gi"}}}}"#,
        ],
        None,
    )
    .await;
}
