//! Small builders for `ChatCluster` values in tests (unit, rendering and end-to-end):
//! `ChatCluster::test("demo").in_namespace("chat").with_nodes(5)`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::SecretKeySelector;
use kube::api::ObjectMeta;

use crate::crd::{
    AttachmentsSpec, ChatCluster, ChatClusterSpec, ExternalRedis, RedisMode, S3Store,
};

impl ChatCluster {
    /// A `ChatCluster` named `name` in namespace `default` with the defaults of `spec: {}`, a uid and
    /// generation 1 (as if the API server had stored it).
    pub fn test(name: &str) -> Self {
        let mut cc = ChatCluster::new(name, ChatClusterSpec::default());
        cc.metadata = ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some("default".to_owned()),
            uid: Some(format!("00000000-0000-4000-8000-{:012x}", name.len())),
            generation: Some(1),
            ..ObjectMeta::default()
        };
        cc
    }

    /// Moves it to `namespace`.
    #[must_use]
    pub fn in_namespace(mut self, namespace: &str) -> Self {
        self.metadata.namespace = Some(namespace.to_owned());
        self
    }

    /// Sets the socket-server count.
    #[must_use]
    pub fn with_nodes(mut self, replicas: i32) -> Self {
        self.spec.nodes.replicas = replicas;
        self
    }

    /// Sets the registry count.
    #[must_use]
    pub fn with_registries(mut self, replicas: i32) -> Self {
        self.spec.registries.replicas = replicas;
        self
    }

    /// Sets managed Redis data-node and sentinel counts.
    #[must_use]
    pub fn with_redis(mut self, data_nodes: i32, sentinels: i32) -> Self {
        self.spec.redis.managed.replicas = data_nodes;
        self.spec.redis.managed.sentinels = sentinels;
        self
    }

    /// External Redis at `url`, without a password.
    #[must_use]
    pub fn with_external_url(mut self, url: &str) -> Self {
        self.spec.redis.mode = RedisMode::External;
        self.spec.redis.external = Some(ExternalRedis {
            url: Some(url.to_owned()),
            sentinels: None,
            master_name: crate::crd::DEFAULT_MASTER_NAME.to_owned(),
            password_secret_ref: None,
            tls: None,
        });
        self
    }

    /// External Redis through `sentinels` monitoring `master_name`.
    #[must_use]
    pub fn with_external_sentinels(mut self, sentinels: &[&str], master_name: &str) -> Self {
        self.spec.redis.mode = RedisMode::External;
        self.spec.redis.external = Some(ExternalRedis {
            url: None,
            sentinels: Some(sentinels.iter().map(|s| (*s).to_owned()).collect()),
            master_name: master_name.to_owned(),
            password_secret_ref: None,
            tls: None,
        });
        self
    }

    /// The external Redis password comes from `secret`'s `key` (External mode must be set first).
    #[must_use]
    pub fn with_password_secret(mut self, secret: &str, key: &str) -> Self {
        if let Some(external) = self.spec.redis.external.as_mut() {
            external.password_secret_ref = Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: None,
            });
        }
        self
    }

    /// Adds a passthrough label.
    #[must_use]
    pub fn with_label(mut self, key: &str, value: &str) -> Self {
        self.spec.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Adds a passthrough annotation.
    #[must_use]
    pub fn with_annotation(mut self, key: &str, value: &str) -> Self {
        self.spec
            .annotations
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// Adds an annotation on the `ChatCluster` itself (e.g. the pause switch).
    #[must_use]
    pub fn with_meta_annotation(mut self, key: &str, value: &str) -> Self {
        self.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// Open identity (`spec.auth.mode: open`).
    #[must_use]
    pub fn with_open_identity(mut self) -> Self {
        self.spec.auth.mode = crate::crd::AuthMode::Open;
        self
    }

    /// Token auth with the HS256 key in `secret`'s `key`.
    #[must_use]
    pub fn with_hmac_secret(mut self, secret: &str, key: &str) -> Self {
        self.spec.auth.hmac_secret_ref = Some(SecretKeySelector {
            name: secret.to_owned(),
            key: key.to_owned(),
            optional: None,
        });
        self
    }

    /// Token auth with keys from a JWKS URL.
    #[must_use]
    pub fn with_jwks_url(mut self, url: &str) -> Self {
        self.spec.auth.jwks_url = Some(url.to_owned());
        self
    }

    /// Web origins allowed besides each server's own.
    #[must_use]
    pub fn with_allowed_origins(mut self, origins: &[&str]) -> Self {
        self.spec.auth.allowed_origins = origins.iter().map(|&o| o.to_owned()).collect();
        self
    }

    /// Attachments in S3 bucket `bucket` (AWS, no region) with the key in Secret `credentials_secret`.
    #[must_use]
    pub fn with_attachments(mut self, bucket: &str, credentials_secret: &str) -> Self {
        self.spec.attachments = Some(AttachmentsSpec {
            s3: S3Store {
                bucket: bucket.to_owned(),
                endpoint: None,
                region: None,
                credentials_secret: credentials_secret.to_owned(),
            },
            max_file_bytes: None,
            quota_bytes_per_day: None,
        });
        self
    }

    /// The S3-compatible endpoint of the attachments bucket (`with_attachments` first).
    #[must_use]
    pub fn with_attachments_endpoint(mut self, endpoint: &str) -> Self {
        if let Some(attachments) = self.spec.attachments.as_mut() {
            attachments.s3.endpoint = Some(endpoint.to_owned());
        }
        self
    }
}
