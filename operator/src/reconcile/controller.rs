//! The ChatCluster controller's wiring: what it watches and how each change maps to a ChatCluster, and
//! the start-up check that the CRD is installed.
//!
//! ```text
//! ChatCluster (any semantic change) ─────────────────────────────┐
//! owned Deployment / StatefulSet / Service / ConfigMap / PDB / NetworkPolicy ┼─▶ reconcile(ChatCluster)
//! Secret (metadata only) ─▶ ChatClusters whose password/key/S3 key it holds ┤
//! load-set observation changed (crate::observation) ─────────────┘
//! ```

use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use switchboard_runtime::report;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{Error, Reconciler, Result, error_policy, reconcile};
use crate::context::{Context, scoped};
use crate::crd::{self, ChatCluster};
use crate::resources;

/// Fails with [`Error::CrdMissing`] (which says how to install it) unless the CRD is installed.
pub async fn check_crd(client: &Client, namespace: Option<&str>) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    match crds.get_opt(crd::CRD_NAME).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(Error::CrdMissing),
        Err(kube::Error::Api(s)) if s.is_forbidden() => {
            // Without permission to read CRDs (a namespace-scoped install), ask for the resource itself,
            // where this operator may list it.
            let api: Api<ChatCluster> = crate::context::scoped(client, namespace);
            match api.list(&ListParams::default().limit(1)).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => Err(Error::CrdMissing),
                Err(source) => Err(Error::kube("list", "ChatCluster", "")(source)),
            }
        }
        Err(source) => Err(Error::kube(
            "get",
            "CustomResourceDefinition",
            crd::CRD_NAME,
        )(source)),
    }
}

/// Runs the ChatCluster controller until `shutdown` fires. `reconcile_on` receives ChatClusters whose
/// load-set observation changed ([`crate::observation::Observations::new`]).
pub async fn run(
    ctx: Arc<Context>,
    reconcile_on: impl Stream<Item = ObjectRef<ChatCluster>> + Send + 'static,
    shutdown: CancellationToken,
) {
    let client = ctx.client.clone();
    let ns = ctx.config.namespace.clone();
    let clusters: Api<ChatCluster> = scoped(&client, ns.as_deref());
    let owned = watcher::Config::default().labels(&format!(
        "{}={}",
        resources::label::MANAGED_BY,
        resources::MANAGED_BY
    ));
    let controller = Controller::new(clusters, watcher::Config::default().any_semantic());
    let store = controller.store();
    // Secrets are watched as metadata only (their data is never cached) and mapped to the ChatClusters
    // that use them, so a password change rolls the pods.
    let cluster_domain = ctx.config.cluster_domain.clone();
    let reconciler = Reconciler::new(ctx);
    let release = release_deleted(&reconciler, store.clone(), shutdown.clone());
    let controller = controller
        .owns(scoped::<Deployment>(&client, ns.as_deref()), owned.clone())
        .owns(scoped::<StatefulSet>(&client, ns.as_deref()), owned.clone())
        .owns(scoped::<Service>(&client, ns.as_deref()), owned.clone())
        .owns(scoped::<ConfigMap>(&client, ns.as_deref()), owned.clone())
        .owns(
            scoped::<PodDisruptionBudget>(&client, ns.as_deref()),
            owned.clone(),
        )
        .owns(scoped::<NetworkPolicy>(&client, ns.as_deref()), owned)
        .watches(
            scoped::<PartialObjectMeta<Secret>>(&client, ns.as_deref()),
            watcher::Config::default(),
            move |secret| clusters_using_secret(&store, &secret, &cluster_domain),
        )
        .reconcile_on(reconcile_on)
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, reconciler.clone())
        .for_each(|result| async move {
            if let Err(err) = result {
                debug!(error = %report::chain(&err), "reconcile loop");
            }
        });
    tokio::join!(controller, release);
}

/// How often what the reconciler keeps per ChatCluster is checked against the ChatClusters that exist.
const RELEASE_INTERVAL: Duration = Duration::from_secs(60);

/// Forgets deleted ChatClusters every [`RELEASE_INTERVAL`] until `shutdown` fires.
async fn release_deleted(r: &Reconciler, store: Store<ChatCluster>, shutdown: CancellationToken) {
    tokio::select! {
        () = shutdown.cancelled() => return,
        ready = store.wait_until_ready() => if ready.is_err() { return },
    }
    let mut tick = tokio::time::interval(RELEASE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => r.retain(&store.state()),
        }
    }
}

/// The ChatClusters in the Secret's namespace whose Redis password, token signing key or attachment
/// store key it holds.
fn clusters_using_secret(
    store: &Store<ChatCluster>,
    secret: &PartialObjectMeta<Secret>,
    cluster_domain: &str,
) -> Vec<ObjectRef<ChatCluster>> {
    let (Some(ns), name) = (secret.namespace(), secret.name_any()) else {
        return Vec::new();
    };
    store
        .state()
        .iter()
        .filter(|cc| cc.namespace().as_deref() == Some(ns.as_str()))
        .filter(|cc| {
            resources::redis_endpoint(cc, cluster_domain)
                .ok()
                .and_then(|e| e.password)
                .is_some_and(|p| p.secret == name)
                || resources::hmac_key_ref(cc)
                    .ok()
                    .flatten()
                    .is_some_and(|k| k.secret == name)
                || cc
                    .spec
                    .attachments
                    .as_ref()
                    .is_some_and(|a| a.s3.credentials_secret == name)
        })
        .map(|cc| ObjectRef::from_obj(cc.as_ref()))
        .collect()
}
