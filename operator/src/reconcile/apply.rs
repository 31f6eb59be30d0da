//! Writing the rendered objects: server-side apply of each (force, one field manager), and in External
//! mode the deletion of managed-Redis objects left from an earlier Managed spec.
//!
//! ```text
//! Desired ─▶ ConfigMaps ─▶ Services ─▶ StatefulSets ─▶ Deployments ─▶ PDBs     (SSA, in this order)
//!              refused as invalid (422) ─▶ Problem "InvalidSpec" (Degraded), not an error
//!              workloads as returned ─▶ Applied ─▶ status (ready / desired replicas)
//! ```

use std::collections::HashMap;
use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Error, Problem, Result};
use crate::context::FIELD_MANAGER;
use crate::resources::{Desired, Names};

/// What the API server returned for the applied workloads.
#[derive(Default)]
pub(super) struct Applied {
    /// Deployments by name.
    pub(super) deployments: HashMap<String, Deployment>,
    /// StatefulSets by name.
    pub(super) stateful_sets: HashMap<String, StatefulSet>,
}

/// Applies every desired object; objects the API server refuses become `problems`.
pub(super) async fn apply_all(
    client: &Client,
    ns: &str,
    desired: &Desired,
    problems: &mut Vec<Problem>,
) -> Result<Applied> {
    let mut applied = Applied::default();
    for o in &desired.config_maps {
        apply(client, ns, o, problems).await?;
    }
    for o in &desired.services {
        apply(client, ns, o, problems).await?;
    }
    for o in &desired.stateful_sets {
        if let Some(set) = apply(client, ns, o, problems).await? {
            applied.stateful_sets.insert(set.name_any(), set);
        }
    }
    for o in &desired.deployments {
        if let Some(d) = apply(client, ns, o, problems).await? {
            applied.deployments.insert(d.name_any(), d);
        }
    }
    for o in &desired.pdbs {
        apply(client, ns, o, problems).await?;
    }
    Ok(applied)
}

/// Server-side apply of one object. An object the API server refuses as invalid (a spec value only it
/// could judge, e.g. a bad label) becomes a [`Problem`] instead of an error.
async fn apply<K>(
    client: &Client,
    ns: &str,
    obj: &K,
    problems: &mut Vec<Problem>,
) -> Result<Option<K>>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = obj.meta().name.clone().unwrap_or_default();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api.patch(&name, &params, &Patch::Apply(obj)).await {
        Ok(o) => Ok(Some(o)),
        Err(kube::Error::Api(s)) if s.is_invalid() || s.code == 422 => {
            problems.push(Problem {
                reason: "InvalidSpec",
                message: format!(
                    "the API server refused {} {name}: {} — fix the ChatCluster spec",
                    K::kind(&()),
                    s.message
                ),
            });
            Ok(None)
        }
        Err(source) => Err(Error::kube("apply", K::kind(&()), name)(source)),
    }
}

/// In External mode the managed Redis objects must go (e.g. after switching from Managed).
pub(super) async fn prune_managed_redis(client: &Client, ns: &str, names: &Names) -> Result<()> {
    delete::<StatefulSet>(client, ns, names.redis_sts()).await?;
    delete::<StatefulSet>(client, ns, names.sentinel_sts()).await?;
    delete::<Service>(client, ns, names.redis_headless()).await?;
    delete::<Service>(client, ns, names.sentinel_headless()).await?;
    delete::<ConfigMap>(client, ns, names.redis_scripts()).await?;
    delete::<PodDisruptionBudget>(client, ns, names.redis_sts()).await?;
    delete::<PodDisruptionBudget>(client, ns, names.sentinel_sts()).await?;
    Ok(())
}

/// Deletes `name` in the background; an object already gone is fine.
async fn delete<K>(client: &Client, ns: &str, name: String) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    match api.delete(&name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(source) => Err(Error::kube("delete", K::kind(&()), name)(source)),
    }
}
