//! The managed Redis certificate (`spec.redis.managed.tls`): the Secret is checked (a missing Secret or
//! key is `Degraded`, not servers that cannot start), fingerprinted — a renewed certificate restarts the
//! data nodes and sentinels the operator's way and rolls the clients — and turned into the TLS settings
//! of the operator's own connections to the servers.

use fred::types::config::TlsConfig;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use switchboard_redis::RedisArgs;
use switchboard_runtime::report;

use super::{Error, Problem, Result};
use crate::context::Context;
use crate::crd::ChatCluster;
use crate::resources::{self, TLS_CA_KEY};

/// The managed servers' certificate as the operator uses it.
pub(super) struct ServerTls {
    /// Fingerprint of the Secret's certificate, key and authority.
    pub(super) hash: String,
    /// TLS settings trusting the Secret's authority.
    pub(super) tls: TlsConfig,
}

/// The certificate Secret of `cc`'s managed Redis; `Ok(Ok(None))` without `spec.redis.managed.tls`.
pub(super) async fn resolve(
    cc: &ChatCluster,
    ctx: &Context,
    ns: &str,
) -> Result<Result<Option<ServerTls>, Problem>> {
    let Some(wanted) = &cc.spec.redis.managed.tls else {
        return Ok(Ok(None));
    };
    let name = &wanted.secret_name;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let Some(secret) = secrets
        .get_opt(name)
        .await
        .map_err(Error::kube("get", "Secret", name))?
    else {
        return Ok(Err(Problem {
            reason: "TlsSecretNotFound",
            message: format!(
                "Secret {ns}/{name} named by spec.redis.managed.tls.secretName does not exist: create \
                 it with tls.crt, tls.key and ca.crt (a cert-manager Certificate writes exactly that)"
            ),
        }));
    };
    let data = secret.data.unwrap_or_default();
    let value = |key: &str| data.get(key).map(|v| v.0.clone()).filter(|v| !v.is_empty());
    let (Some(cert), Some(key), Some(ca)) = (value("tls.crt"), value("tls.key"), value(TLS_CA_KEY))
    else {
        return Ok(Err(Problem {
            reason: "TlsSecretIncomplete",
            message: format!(
                "Secret {ns}/{name} named by spec.redis.managed.tls.secretName needs non-empty keys \
                 tls.crt, tls.key and ca.crt"
            ),
        }));
    };
    let endpoint = resources::redis_endpoint(cc, &ctx.config.cluster_domain)?;
    let mut args = RedisArgs::from_sentinels(endpoint.sentinels, endpoint.master_name);
    args.redis_tls_ca_pem = Some(ca.clone());
    let tls = match args.access() {
        Ok(access) => access.tls,
        Err(err) => {
            return Ok(Err(Problem {
                reason: "TlsSecretInvalid",
                message: format!(
                    "Secret {ns}/{name}: ca.crt is not a usable authority: {}",
                    report::chain(&err)
                ),
            }));
        }
    };
    Ok(Ok(tls.map(|tls| ServerTls {
        hash: resources::fingerprint(&[&cert, &key, &ca]),
        tls,
    })))
}
