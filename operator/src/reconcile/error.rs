//! Errors of one reconcile: what failed, in the operator's words; the cause is the `source()`.
//!
//! A problem only the operator can judge (a missing Secret, a spec value the API server refuses) is not an
//! error but a `Degraded` condition (see [`super`]); these errors are for the API server or the renderer
//! failing, and requeue with backoff.

use crate::crd;
use crate::resources;
use crate::secret;

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("{op} {kind} {name}")]
    Kube {
        /// What was being done (`apply`, `get`, `delete`, ...).
        op: &'static str,
        /// Kind of the object.
        kind: String,
        /// Its name.
        name: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// The password Secret could not be read.
    #[error(transparent)]
    Secret(#[from] secret::ReadError),
    /// The objects could not be rendered.
    #[error(transparent)]
    Render(#[from] resources::Error),
    /// PodMonitors could not be discovered, applied or deleted (`spec.monitoring`).
    #[error(transparent)]
    Monitoring(#[from] crate::monitoring::Error),
    /// No random bytes for a new password.
    #[error("reading random bytes for the Redis password")]
    Random(#[source] std::io::Error),
    /// The ChatCluster CRD is not installed.
    #[error(
        "the ChatCluster CRD ({}) is not installed: run `kubectl apply -f crds/` (or `cargo run -p operator --bin crdgen | kubectl apply -f -`)",
        crd::CRD_NAME
    )]
    CrdMissing,
}

impl Error {
    /// A short stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } | Error::Secret(_) => "kube",
            Error::Monitoring(err) => err.metric_label(),
            Error::Render(_) => "render",
            Error::Random(_) => "random",
            Error::CrdMissing => "crd_missing",
        }
    }

    /// Wraps a client error of `op` on `kind` `name`.
    pub(super) fn kube(
        op: &'static str,
        kind: impl Into<String>,
        name: impl Into<String>,
    ) -> impl FnOnce(kube::Error) -> Self {
        let (kind, name) = (kind.into(), name.into());
        move |source| Error::Kube {
            op,
            kind,
            name,
            source,
        }
    }
}

/// Result alias of the reconciler.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use switchboard_runtime::report;

    use super::*;

    #[test]
    fn crd_missing_says_how_to_install_it() {
        let message = Error::CrdMissing.to_string();
        assert!(message.contains("kubectl apply -f crds/"), "{message}");
        assert_eq!(Error::CrdMissing.metric_label(), "crd_missing");
    }

    #[test]
    fn an_error_names_its_cause_only_in_the_chain() {
        let err = Error::Random(std::io::Error::other("no entropy"));
        assert_eq!(
            err.to_string(),
            "reading random bytes for the Redis password"
        );
        assert_eq!(
            report::chain(&err),
            "reading random bytes for the Redis password: no entropy"
        );
    }
}
