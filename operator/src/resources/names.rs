//! Names of the objects of one ChatCluster, in one place so the renderer, the reconciler and the tests
//! agree.

use crate::crd::ChatCluster;

use super::{Error, Result};

/// Object names derived from a ChatCluster's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    base: String,
    namespace: String,
}

impl Names {
    /// Names for `cc` (which must have a name and a namespace).
    pub fn of(cc: &ChatCluster) -> Result<Self> {
        Ok(Self {
            base: cc
                .metadata
                .name
                .clone()
                .ok_or(Error::MissingMetadata("name"))?,
            namespace: cc
                .metadata
                .namespace
                .clone()
                .ok_or(Error::MissingMetadata("namespace"))?,
        })
    }

    /// chat-node Deployment, Service and PodDisruptionBudget.
    pub fn node(&self) -> String {
        format!("{}-node", self.base)
    }

    /// registry Deployment, Service and PodDisruptionBudget.
    pub fn registry(&self) -> String {
        format!("{}-registry", self.base)
    }

    /// Redis data-node StatefulSet.
    pub fn redis_sts(&self) -> String {
        format!("{}-redis", self.base)
    }

    /// Headless Service giving each data node a stable name.
    pub fn redis_headless(&self) -> String {
        format!("{}-redis-headless", self.base)
    }

    /// Sentinel StatefulSet.
    pub fn sentinel_sts(&self) -> String {
        format!("{}-sentinel", self.base)
    }

    /// Headless Service giving each sentinel a stable name.
    pub fn sentinel_headless(&self) -> String {
        format!("{}-sentinel-headless", self.base)
    }

    /// The generated Redis password Secret.
    pub fn redis_secret(&self) -> String {
        format!("{}-redis-auth", self.base)
    }

    /// The Redis passwords in use now (operator-owned; [`crate::resources::applied_passwords_secret`]):
    /// the one clients and servers use, and every one the servers accept — two during a rotation.
    pub fn redis_applied_secret(&self) -> String {
        format!("{}-redis-applied", self.base)
    }

    /// The generated token signing key Secret (`spec.auth` jwt mode without a key of its own).
    pub fn jwt_secret(&self) -> String {
        format!("{}-jwt", self.base)
    }

    /// ConfigMap with the Redis and Sentinel start scripts.
    pub fn redis_scripts(&self) -> String {
        format!("{}-redis-scripts", self.base)
    }

    /// Stable hostnames of the first `count` data nodes.
    pub fn redis_hosts(&self, count: i32, domain: &str) -> Vec<String> {
        self.hosts(&self.redis_sts(), &self.redis_headless(), count, domain)
    }

    /// Stable hostnames of the first `count` sentinels.
    pub fn sentinel_hosts(&self, count: i32, domain: &str) -> Vec<String> {
        self.hosts(
            &self.sentinel_sts(),
            &self.sentinel_headless(),
            count,
            domain,
        )
    }

    /// The sentinels' headless Service: one name that resolves to every sentinel pod, whatever their
    /// count (clients try each address), so changing the count changes nothing clients are given.
    pub fn sentinel_service_host(&self, domain: &str) -> String {
        format!(
            "{}.{}.svc.{domain}",
            self.sentinel_headless(),
            self.namespace
        )
    }

    /// The stable hostname of pod `pod` behind headless Service `service`.
    pub fn pod_host(&self, pod: &str, service: &str, domain: &str) -> String {
        format!("{pod}.{service}.{}.svc.{domain}", self.namespace)
    }

    fn hosts(&self, sts: &str, service: &str, count: i32, domain: &str) -> Vec<String> {
        (0..count.max(0))
            .map(|i| format!("{sts}-{i}.{service}.{}.svc.{domain}", self.namespace))
            .collect()
    }
}
