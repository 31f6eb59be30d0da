// Tests fail by panicking; unwrap states the expectation most plainly.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, Service};
use k8s_openapi::api::networking::v1::NetworkPolicyPort;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;
use crate::crd::ServiceType;
use k8s_openapi::api::core::v1::SecretKeySelector;

fn ctx() -> RenderContext {
    RenderContext {
        cluster_domain: "cluster.local".to_owned(),
        password_hash: Some("abc".to_owned()),
        auth_hash: Some("key".to_owned()),
        redis_tls_hash: None,
        attachments_hash: None,
    }
}

/// [`ctx`] with the attachment store's key available.
fn ctx_with_s3_key(hash: &str) -> RenderContext {
    RenderContext {
        attachments_hash: Some(hash.to_owned()),
        ..ctx()
    }
}

/// `demo` with every attachments setting.
fn with_every_attachment_setting() -> ChatCluster {
    let mut cc = demo()
        .with_attachments("chat-files", "chat-s3")
        .with_attachments_endpoint("http://minio.storage:9000");
    if let Some(a) = cc.spec.attachments.as_mut() {
        a.s3.region = Some("eu-central-1".to_owned());
        a.max_file_bytes = Some(10 << 20);
        a.quota_bytes_per_day = Some(1 << 30);
    }
    cc
}

/// The configuration hash of `d`'s pod template (every chat-node and registry template has one).
fn config_hash(d: &Deployment) -> String {
    d.spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(CONFIG_HASH_ANNOTATION))
        .cloned()
        .unwrap_or_else(|| panic!("{:?} has a configuration hash", d.metadata.name))
}

/// Names of the `SWITCHBOARD_ATTACHMENT*` / `SWITCHBOARD_*ATTACHMENT*` variables of `c`.
fn attachment_env(c: &Container) -> Vec<&str> {
    c.env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .filter(|n| n.contains("ATTACHMENT"))
        .collect()
}

fn demo() -> ChatCluster {
    ChatCluster::test("demo").in_namespace("chat")
}

fn deployment<'a>(d: &'a Desired, name: &str) -> &'a Deployment {
    d.deployments
        .iter()
        .find(|x| x.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("deployment {name} rendered"))
}

fn sts<'a>(d: &'a Desired, name: &str) -> &'a StatefulSet {
    d.stateful_sets
        .iter()
        .find(|x| x.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("statefulset {name} rendered"))
}

fn service<'a>(d: &'a Desired, name: &str) -> &'a Service {
    d.services
        .iter()
        .find(|x| x.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("service {name} rendered"))
}

fn container(d: &Deployment) -> &Container {
    &d.spec.template.spec.as_ref().unwrap().containers[0]
}

fn env<'a>(c: &'a Container, name: &str) -> &'a EnvVar {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("env {name} set"))
}

fn env_value(c: &Container, name: &str) -> String {
    env(c, name).value.clone().unwrap_or_default()
}

/// The command line of an exec probe, joined by spaces; the test fails if there is none.
fn probe_command(probe: &Option<k8s_openapi::api::core::v1::Probe>) -> String {
    let exec = probe.as_ref().and_then(|p| p.exec.as_ref());
    exec.and_then(|e| e.command.as_ref())
        .expect("an exec probe")
        .join(" ")
}

/// The pod's volume called `name`; the test fails naming what is missing.
fn pod_volume(pod: &PodSpec, name: &str) -> k8s_openapi::api::core::v1::Volume {
    pod.volumes
        .iter()
        .flatten()
        .find(|v| v.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("no volume {name}"))
}

fn all_metas(d: &Desired) -> Vec<&kube::api::ObjectMeta> {
    let mut metas: Vec<&kube::api::ObjectMeta> = Vec::new();
    metas.extend(d.config_maps.iter().map(|o| &o.metadata));
    metas.extend(d.services.iter().map(|o| &o.metadata));
    metas.extend(d.stateful_sets.iter().map(|o| &o.metadata));
    metas.extend(d.deployments.iter().map(|o| &o.metadata));
    metas.extend(d.pdbs.iter().map(|o| &o.metadata));
    metas.extend(d.network_policies.iter().map(|o| &o.metadata));
    metas
}

#[test]
fn minimal_cluster_renders_every_owned_object() {
    let d = render(&demo(), &ctx()).unwrap();
    let mut names: Vec<String> = all_metas(&d)
        .iter()
        .map(|m| m.name.clone().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "demo-node",
            "demo-node",
            "demo-node",
            "demo-node",
            "demo-redis",
            "demo-redis",
            "demo-redis",
            "demo-redis-headless",
            "demo-redis-scripts",
            "demo-registry",
            "demo-registry",
            "demo-registry",
            "demo-registry",
            "demo-sentinel",
            "demo-sentinel",
            "demo-sentinel",
            "demo-sentinel-headless",
        ]
    );
}

#[test]
fn every_object_is_controlled_by_the_chat_cluster_and_labelled() {
    let cc = demo();
    let d = render(&cc, &ctx()).unwrap();
    for meta in all_metas(&d) {
        assert_eq!(meta.namespace.as_deref(), Some("chat"));
        let owners = meta.owner_references.as_ref().unwrap();
        assert_eq!(owners.len(), 1);
        let owner = &owners[0];
        assert_eq!(owner.kind, "ChatCluster");
        assert_eq!(owner.api_version, "switchboard.dev/v1alpha1");
        assert_eq!(owner.name, "demo");
        assert_eq!(Some(&owner.uid), cc.metadata.uid.as_ref());
        assert_eq!(owner.controller, Some(true));
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels[label::NAME], "switchboard");
        assert_eq!(labels[label::INSTANCE], "demo");
        assert_eq!(labels[label::MANAGED_BY], "switchboard-operator");
        assert!(labels.contains_key(label::COMPONENT));
        for (key, value) in owned_labels(&cc) {
            assert_eq!(labels.get(&key), Some(&value), "{key}");
        }
    }
    let secret = redis_secret(&cc, "pw").unwrap();
    assert_eq!(
        secret.metadata.owner_references.unwrap()[0].controller,
        Some(true)
    );
    assert_eq!(secret.string_data.unwrap()[PASSWORD_KEY], "pw");
}

#[test]
fn selectors_agree_with_pod_labels_and_services() {
    let d = render(&demo(), &ctx()).unwrap();
    let subset = |sel: &BTreeMap<String, String>, labels: &BTreeMap<String, String>| {
        sel.iter().all(|(k, v)| labels.get(k) == Some(v))
    };
    for dep in &d.deployments {
        let spec = &dep.spec;
        let sel = spec.selector.match_labels.as_ref().unwrap();
        let pod_labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        assert!(subset(sel, pod_labels));
        let svc = service(&d, dep.metadata.name.as_deref().unwrap());
        assert_eq!(svc.spec.as_ref().unwrap().selector.as_ref().unwrap(), sel);
    }
    for set in &d.stateful_sets {
        let spec = &set.spec;
        let sel = spec.selector.match_labels.as_ref().unwrap();
        let pod_labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        assert!(subset(sel, pod_labels));
        let headless = service(&d, spec.service_name.as_deref().unwrap());
        assert_eq!(
            headless.spec.as_ref().unwrap().selector.as_ref().unwrap(),
            sel
        );
        assert_eq!(
            headless.spec.as_ref().unwrap().cluster_ip.as_deref(),
            Some("None")
        );
    }
    for pdb in &d.pdbs {
        let sel = pdb.spec.as_ref().unwrap().selector.as_ref().unwrap();
        let target = pdb.metadata.name.as_deref().unwrap();
        let pod_labels = d
            .deployments
            .iter()
            .find(|x| x.metadata.name.as_deref() == Some(target))
            .map(|x| x.spec.template.metadata.clone())
            .or_else(|| {
                d.stateful_sets
                    .iter()
                    .find(|x| x.metadata.name.as_deref() == Some(target))
                    .map(|x| x.spec.template.metadata.clone())
            })
            .flatten()
            .and_then(|m| m.labels)
            .unwrap();
        assert!(subset(sel.match_labels.as_ref().unwrap(), &pod_labels));
        assert_eq!(
            pdb.spec.as_ref().unwrap().max_unavailable,
            Some(IntOrString::Int(1))
        );
    }
    // Two chat systems in one namespace never select each other's pods.
    let other = render(&ChatCluster::test("other").in_namespace("chat"), &ctx()).unwrap();
    let a = deployment(&d, "demo-node").spec.selector.clone();
    let b = deployment(&other, "other-node").spec.selector.clone();
    assert_ne!(a, b);
}

#[test]
fn chat_node_probes_drain_and_rollout() {
    let cc = demo().with_nodes(5);
    let d = render(&cc, &ctx()).unwrap();
    let dep = deployment(&d, "demo-node");
    let spec = &dep.spec;
    assert_eq!(spec.replicas, Some(5));
    let rolling = spec
        .strategy
        .as_ref()
        .unwrap()
        .rolling_update
        .as_ref()
        .unwrap();
    assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)));
    assert_eq!(rolling.max_surge, Some(IntOrString::Int(1)));
    let c = container(dep);
    let ready = c
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(ready.path.as_deref(), Some("/readyz"));
    assert_eq!(ready.port, IntOrString::Int(8080));
    let live = c
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(live.path.as_deref(), Some("/healthz"));
    assert_eq!(live.port, IntOrString::Int(8080));
    let pre_stop = c.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap();
    assert_eq!(
        pre_stop.sleep.as_ref().unwrap().seconds,
        PRE_STOP_SLEEP_SECONDS
    );
    let pod = spec.template.spec.as_ref().unwrap();
    // Grace covers the pre-stop pause plus the whole drain.
    assert!(
        pod.termination_grace_period_seconds.unwrap()
            > i64::from(cc.spec.nodes.drain_timeout_seconds) + PRE_STOP_SLEEP_SECONDS
    );
    assert_eq!(
        spec.template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()[CONFIG_HASH_ANNOTATION],
        // The Redis password's and the token signing key's fingerprints together.
        fingerprint(&[b"abc", b"key"])
    );
}

#[test]
fn messages_wait_for_one_replica_by_default_when_managed_redis_has_one() {
    let ack = |cc: &ChatCluster| {
        let d = render(cc, &ctx()).unwrap();
        env_value(
            container(deployment(&d, "demo-node")),
            "SWITCHBOARD_ACK_REPLICAS",
        )
    };
    assert_eq!(ack(&demo()), "1", "3 data nodes: survive the master");
    assert_eq!(ack(&demo().with_redis(1, 1)), "0", "no replica to wait for");
    let mut chosen = demo();
    chosen.spec.redis.ack_replicas = Some(2);
    assert_eq!(ack(&chosen), "2");
}

#[test]
fn a_write_delay_reaches_chat_node_and_its_absence_changes_nothing() {
    let d = render(&demo(), &ctx()).unwrap();
    let c = container(deployment(&d, "demo-node"));
    assert!(
        c.env
            .iter()
            .flatten()
            .all(|e| e.name != "SWITCHBOARD_WRITE_DELAY"),
        "no write delay by default, and no variable"
    );
    let mut delayed = demo();
    delayed.spec.nodes.write_delay_ms = 20;
    let delayed = render(&delayed, &ctx()).unwrap();
    let c = container(deployment(&delayed, "demo-node"));
    assert_eq!(env_value(c, "SWITCHBOARD_WRITE_DELAY"), "20ms");
}

#[test]
fn chat_node_env_follows_the_contract_in_managed_mode() {
    let d = render(&demo(), &ctx()).unwrap();
    let c = container(deployment(&d, "demo-node"));
    assert_eq!(env_value(c, "SWITCHBOARD_LISTEN"), "0.0.0.0:8080");
    let node_id = env(c, "SWITCHBOARD_NODE_ID");
    assert_eq!(
        node_id
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "metadata.name"
    );
    let pod_ip = env(c, "POD_IP");
    assert_eq!(
        pod_ip
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "status.podIP"
    );
    assert_eq!(
        env_value(c, "SWITCHBOARD_ADVERTISE_URL"),
        "ws://$(POD_IP):8080/ws"
    );
    assert_eq!(env_value(c, "SWITCHBOARD_CAPACITY"), "10000");
    assert_eq!(env_value(c, "SWITCHBOARD_MEMBERSHIP"), "operator");
    assert_eq!(env_value(c, "SWITCHBOARD_AUTH"), "jwt");
    assert_eq!(env_value(c, "SWITCHBOARD_CLUSTER_ID"), "chat/demo");
    assert_eq!(env_value(c, "SWITCHBOARD_DRAIN_TIMEOUT"), "30s");
    assert_eq!(
        env_value(c, "SWITCHBOARD_REDIS_SENTINELS"),
        "demo-sentinel-headless.chat.svc.cluster.local:26379"
    );
    // A sentinel count change gives chat-node and registry nothing new: no roll.
    let mut more = demo();
    more.spec.redis.managed.sentinels = 5;
    let more = render(&more, &ctx()).unwrap();
    for name in ["demo-node", "demo-registry"] {
        assert_eq!(
            deployment(&d, name).spec.template,
            deployment(&more, name).spec.template,
            "{name}"
        );
    }
    assert_eq!(env_value(c, "SWITCHBOARD_REDIS_MASTER_NAME"), "mymaster");
    let password = env(c, "SWITCHBOARD_REDIS_PASSWORD")
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    // The password in use (the rotation's applied Secret), not the one asked for.
    assert_eq!(password.name, "demo-redis-applied");
    assert_eq!(password.key, "password");
    assert!(
        c.env
            .iter()
            .flatten()
            .all(|e| e.name != "SWITCHBOARD_REDIS_URL")
    );
    // Env references must be declared before they are used.
    let position = |n: &str| c.env.iter().flatten().position(|e| e.name == n).unwrap();
    assert!(position("POD_IP") < position("SWITCHBOARD_ADVERTISE_URL"));
}

#[test]
fn advertise_url_template_expands_pod_fields() {
    assert_eq!(
        advertise_url("wss://{podName}.chat.example.com:{port}/ws?ns={namespace}"),
        "wss://$(POD_NAME).chat.example.com:8080/ws?ns=$(POD_NAMESPACE)"
    );
}

#[test]
fn external_tls_material_is_mounted_from_secrets_never_put_in_the_environment() {
    let mut cc = demo().with_external_url("rediss://redis.example:6380");
    if let Some(ext) = cc.spec.redis.external.as_mut() {
        ext.tls = Some(crate::crd::ExternalRedisTls {
            ca_secret_ref: Some(SecretKeySelector {
                name: "redis-ca".to_owned(),
                key: "ca.pem".to_owned(),
                optional: None,
            }),
            client_certificate_secret: Some("redis-client".to_owned()),
        });
    }
    let d = render(&cc, &ctx()).unwrap();
    for name in ["demo-node", "demo-registry"] {
        let pod = deployment(&d, name).spec.template.spec.clone().unwrap();
        let c = &pod.containers[0];
        assert_eq!(
            env_value(c, "SWITCHBOARD_REDIS_TLS_CA_FILE"),
            "/var/run/switchboard/redis-tls/ca/ca.crt"
        );
        assert_eq!(
            env_value(c, "SWITCHBOARD_REDIS_TLS_KEY_FILE"),
            "/var/run/switchboard/redis-tls/client/tls.key"
        );
        let secret = pod_volume(&pod, "redis-tls-ca").secret.unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("redis-ca"));
        assert_eq!(secret.items.as_ref().unwrap()[0].key, "ca.pem");
        pod_volume(&pod, "redis-tls-client");
        let mounts = c.volume_mounts.as_ref().unwrap();
        assert!(mounts.iter().all(|m| m.read_only == Some(true)));
    }
}

#[test]
fn external_redis_is_passed_through_and_nothing_redis_is_rendered() {
    let cc = demo()
        .with_external_url("redis://redis.example:6379/0")
        .with_password_secret("my-redis", "pw");
    let d = render(&cc, &ctx()).unwrap();
    assert!(d.stateful_sets.is_empty());
    assert!(d.config_maps.is_empty());
    assert_eq!(d.services.len(), 2);
    for name in ["demo-node", "demo-registry"] {
        let c = container(deployment(&d, name));
        assert_eq!(
            env_value(c, "SWITCHBOARD_REDIS_URL"),
            "redis://redis.example:6379/0"
        );
        let r = env(c, "SWITCHBOARD_REDIS_PASSWORD")
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .clone()
            .unwrap();
        assert_eq!((r.name.as_str(), r.key.as_str()), ("my-redis", "pw"));
        assert!(
            c.env
                .iter()
                .flatten()
                .all(|e| e.name != "SWITCHBOARD_REDIS_SENTINELS")
        );
    }
    let cc = demo().with_external_sentinels(&["s1:26379", "s2:26379"], "main");
    let d = render(&cc, &ctx()).unwrap();
    let c = container(deployment(&d, "demo-registry"));
    assert_eq!(
        env_value(c, "SWITCHBOARD_REDIS_SENTINELS"),
        "s1:26379,s2:26379"
    );
    assert_eq!(env_value(c, "SWITCHBOARD_REDIS_MASTER_NAME"), "main");
    assert!(
        c.env
            .iter()
            .flatten()
            .all(|e| e.name != "SWITCHBOARD_REDIS_PASSWORD")
    );
}

#[test]
fn registry_probes_port_and_service_type() {
    let mut cc = demo().with_registries(3);
    cc.spec.registries.service.type_ = ServiceType::LoadBalancer;
    cc.spec.registries.service.port = 443;
    let d = render(&cc, &ctx()).unwrap();
    let dep = deployment(&d, "demo-registry");
    assert_eq!(dep.spec.replicas, Some(3));
    let c = container(dep);
    assert_eq!(env_value(c, "SWITCHBOARD_LISTEN"), "0.0.0.0:8081");
    assert_eq!(env_value(c, "SWITCHBOARD_CLUSTER_ID"), "chat/demo");
    let ready = c
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(
        (ready.path.as_deref(), &ready.port),
        (Some("/readyz"), &IntOrString::Int(8081))
    );
    let live = c
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(
        (live.path.as_deref(), &live.port),
        (Some("/healthz"), &IntOrString::Int(8081))
    );
    let svc = service(&d, "demo-registry").spec.as_ref().unwrap();
    assert_eq!(svc.type_.as_deref(), Some("LoadBalancer"));
    let port = &svc.ports.as_ref().unwrap()[0];
    assert_eq!(port.port, 443);
    assert_eq!(
        port.target_port,
        Some(IntOrString::String("http".to_owned()))
    );
}

#[test]
fn redis_and_sentinel_use_stable_hostnames_and_the_secret() {
    let cc = demo().with_redis(3, 5);
    let d = render(&cc, &ctx()).unwrap();
    let redis = &sts(&d, "demo-redis").spec;
    assert_eq!(redis.replicas, Some(3));
    assert_eq!(redis.service_name.as_deref(), Some("demo-redis-headless"));
    let sentinel = &sts(&d, "demo-sentinel").spec;
    assert_eq!(sentinel.replicas, Some(5));
    assert_eq!(
        sentinel.service_name.as_deref(),
        Some("demo-sentinel-headless")
    );
    let hosts = "demo-redis-0.demo-redis-headless.chat.svc.cluster.local \
                 demo-redis-1.demo-redis-headless.chat.svc.cluster.local \
                 demo-redis-2.demo-redis-headless.chat.svc.cluster.local";
    let sentinel_c = &sentinel.template.spec.as_ref().unwrap().containers[0];
    assert_eq!(env_value(sentinel_c, "REDIS_HOSTS"), hosts);
    assert_eq!(
        env_value(sentinel_c, "SENTINEL_HOSTS").split(' ').count(),
        5
    );
    assert_eq!(env_value(sentinel_c, "QUORUM"), "3");
    // The data nodes read the host lists from the scripts ConfigMap.
    let scripts = d
        .config_maps
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("demo-redis-scripts"))
        .unwrap();
    let hosts_env = &scripts.data.as_ref().unwrap()["hosts.env"];
    assert!(
        hosts_env.contains(&format!("REDIS_HOSTS=\"{hosts}\"")),
        "{hosts_env}"
    );
    assert_eq!(hosts_env.matches(".demo-sentinel-headless.").count(), 5);
    for spec in [redis, sentinel] {
        let c = &spec.template.spec.as_ref().unwrap().containers[0];
        assert_eq!(env_value(c, "MASTER_NAME"), "mymaster");
        let pw = env(c, "REDIS_PASSWORD")
            .value_from
            .clone()
            .unwrap()
            .secret_key_ref
            .unwrap();
        assert_eq!(
            (pw.name.as_str(), pw.key.as_str()),
            ("demo-redis-applied", "password")
        );
        let accepted = env(c, "REDIS_PASSWORDS")
            .value_from
            .clone()
            .unwrap()
            .secret_key_ref
            .unwrap();
        assert_eq!(
            (accepted.name.as_str(), accepted.key.as_str()),
            ("demo-redis-applied", "passwords")
        );
        assert!(c.readiness_probe.as_ref().unwrap().exec.is_some());
    }
    let headless = service(&d, "demo-redis-headless").spec.as_ref().unwrap();
    assert_eq!(headless.publish_not_ready_addresses, Some(true));
}

#[test]
fn start_scripts_use_hostnames_bootstrap_and_rediscover_the_master() {
    let d = render(&demo(), &ctx()).unwrap();
    let data = d.config_maps[0].data.as_ref().unwrap();
    let redis = &data["redis.sh"];
    assert!(redis.contains("sentinel get-master-addr-by-name"));
    assert!(redis.contains("replica-announce-ip ${self}"));
    assert!(
        redis.contains(
            "for p in ${REDIS_PASSWORDS:-$REDIS_PASSWORD}; do acl=\"${acl} >${p}\"; done"
        )
    );
    assert!(redis.contains("\n${acl}\n"), "the ACL line in redis.conf");
    assert!(redis.contains("masterauth ${REDIS_PASSWORD}"));
    assert!(redis.contains("[ -n \"$master\" ] || master=\"$first\""));
    assert!(redis.contains("replicaof ${master} ${redis_port}"));
    assert!(redis.contains("redis_port=\"${REDIS_PORT:-6379}\""));
    let sentinel = &data["sentinel.sh"];
    assert!(sentinel.contains("sentinel resolve-hostnames yes"));
    assert!(sentinel.contains("sentinel announce-hostnames yes"));
    assert!(sentinel.contains("sentinel monitor ${MASTER_NAME} ${master} ${redis_port} ${QUORUM}"));
    assert!(sentinel.contains("sentinel auth-pass ${MASTER_NAME} ${REDIS_PASSWORD}"));
    assert!(
        sentinel.contains(
            "for p in ${REDIS_PASSWORDS:-$REDIS_PASSWORD}; do acl=\"${acl} >${p}\"; done"
        )
    );
    assert!(
        sentinel.contains("\n${acl}\n"),
        "the ACL line in sentinel.conf"
    );
    assert!(sentinel.contains("sentinel sentinel-pass ${REDIS_PASSWORD}"));
    for script in [redis, sentinel] {
        assert!(
            script.contains("REDISCLI_AUTH=\"$REDIS_PASSWORD\" timeout 3 redis-cli $cli_tls -h \"$s\" -p \"$sentinel_port\""),
            "sentinels are asked with the password (and TLS when set)"
        );
        assert!(
            script.contains("tls-port ${"),
            "TLS_DIR makes every port TLS only"
        );
        assert!(script.contains("tls-replication yes"));
        assert!(script.contains("<<CONF\n${listen}\n"));
    }
}

#[test]
fn managed_tls_mounts_the_certificate_into_the_servers_and_its_authority_into_the_clients() {
    let mut cc = demo();
    cc.spec.redis.managed.tls = Some(crate::crd::ManagedRedisTls {
        secret_name: "redis-cert".to_owned(),
    });
    let mut tls_ctx = ctx();
    tls_ctx.redis_tls_hash = Some("cert-1".to_owned());
    let d = render(&cc, &tls_ctx).unwrap();
    for name in ["demo-redis", "demo-sentinel"] {
        let pod = sts(&d, name).spec.template.spec.clone().unwrap();
        let volume = pod_volume(&pod, "tls");
        assert_eq!(
            volume.secret.unwrap().secret_name.as_deref(),
            Some("redis-cert")
        );
        let c = &pod.containers[0];
        assert_eq!(env_value(c, "TLS_DIR"), "/tls");
        assert!(
            c.volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .any(|m| m.name == "tls" && m.mount_path == "/tls")
        );
        let probe = probe_command(&c.readiness_probe);
        assert!(
            probe.contains("${TLS_DIR:+--tls --cacert $TLS_DIR/ca.crt}"),
            "{probe:?}"
        );
    }
    for name in ["demo-node", "demo-registry"] {
        let c = container(deployment(&d, name));
        assert_eq!(
            env_value(c, "SWITCHBOARD_REDIS_TLS_CA_FILE"),
            "/var/run/switchboard/redis-tls/ca/ca.crt"
        );
    }
    // A renewed certificate restarts the servers (the operator's way) and rolls the clients.
    let mut renewed = tls_ctx.clone();
    renewed.redis_tls_hash = Some("cert-2".to_owned());
    let r = render(&cc, &renewed).unwrap();
    for (a, b) in d.stateful_sets.iter().zip(&r.stateful_sets) {
        assert_ne!(a.spec.template.metadata, b.spec.template.metadata);
    }
    for (a, b) in d.deployments.iter().zip(&r.deployments) {
        assert_ne!(a.spec.template.metadata, b.spec.template.metadata);
    }
    // The operator reaches TLS servers by host name (certificates name hosts, not addresses).
    assert_eq!(
        server_addr(
            &cc,
            "cluster.local",
            "demo-redis-0",
            Some("10.0.0.1"),
            Component::Redis
        )
        .as_deref(),
        Some("demo-redis-0.demo-redis-headless.chat.svc.cluster.local:6379")
    );
    assert_eq!(
        server_addr(
            &demo(),
            "cluster.local",
            "demo-sentinel-1",
            Some("10.0.0.2"),
            Component::Sentinel
        )
        .as_deref(),
        Some("10.0.0.2:26379")
    );
    // Without TLS nothing of it is rendered.
    let plain = render(&demo(), &ctx()).unwrap();
    let c = container(deployment(&plain, "demo-node"));
    assert!(
        c.env
            .as_ref()
            .unwrap()
            .iter()
            .all(|e| e.name != "SWITCHBOARD_REDIS_TLS_CA_FILE")
    );
}

#[test]
fn password_change_rolls_chat_node_and_registry_but_restarts_no_redis_pod() {
    let a = render(&demo(), &ctx()).unwrap();
    let mut other = ctx();
    other.password_hash = Some("def".to_owned());
    let b = render(&demo(), &other).unwrap();
    let hash = |t: &Option<kube::api::ObjectMeta>| {
        t.as_ref().unwrap().annotations.as_ref().unwrap()[CONFIG_HASH_ANNOTATION].clone()
    };
    for (x, y) in a.deployments.iter().zip(&b.deployments) {
        assert_ne!(
            hash(&x.spec.template.metadata),
            hash(&y.spec.template.metadata)
        );
    }
    // Data nodes and sentinels take a new password while running (the rotation).
    for (x, y) in a.stateful_sets.iter().zip(&b.stateful_sets) {
        assert_eq!(x.spec.template, y.spec.template);
    }
    assert_eq!(fingerprint(&[b"x"]), fingerprint(&[b"x"]));
    assert_ne!(fingerprint(&[b"ab", b"c"]), fingerprint(&[b"a", b"bc"]));
}

#[test]
fn storage_adds_claims_deleted_with_the_cluster() {
    let mut cc = demo();
    cc.spec.redis.managed.storage =
        k8s_openapi::apimachinery::pkg::api::resource::Quantity("2Gi".to_owned());
    let d = render(&cc, &ctx()).unwrap();
    let spec = &sts(&d, "demo-redis").spec;
    let claims = spec.volume_claim_templates.as_ref().unwrap();
    assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
    assert_eq!(
        spec.persistent_volume_claim_retention_policy
            .as_ref()
            .unwrap()
            .when_deleted
            .as_deref(),
        Some("Delete")
    );
    let volumes = spec
        .template
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .as_ref()
        .unwrap();
    assert!(volumes.iter().all(|v| v.name != "data"));
    let request = &claims[0].spec.as_ref().unwrap().resources.as_ref().unwrap();
    assert_eq!(request.requests.as_ref().unwrap()["storage"].0, "2Gi");
}

#[test]
fn data_is_on_persistent_volumes_by_default_and_ephemeral_only_when_asked() {
    let claims = |cc: &ChatCluster| {
        let d = render(cc, &ctx()).unwrap();
        let spec = sts(&d, "demo-redis").spec.clone();
        let data_volume = spec
            .template
            .spec
            .unwrap()
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "data");
        (
            spec.volume_claim_templates.map(|c| c.len()),
            data_volume.map(|v| v.empty_dir.is_some()),
        )
    };
    assert_eq!(
        claims(&demo()),
        (Some(1), None),
        "a 1Gi claim per data node by default"
    );
    let mut ephemeral = demo();
    ephemeral.spec.redis.managed.ephemeral = true;
    assert_eq!(claims(&ephemeral), (None, Some(true)));
}

#[test]
fn passthrough_labels_annotations_and_scheduling_reach_pods_but_never_override_ours() {
    let mut cc = demo()
        .with_label("team", "chat")
        .with_label(label::INSTANCE, "hijack")
        .with_annotation("example.com/owner", "ops");
    cc.spec.scheduling.priority_class_name = Some("high".to_owned());
    cc.spec.scheduling.node_selector =
        Some(BTreeMap::from([("pool".to_owned(), "chat".to_owned())]));
    let d = render(&cc, &ctx()).unwrap();
    let dep = deployment(&d, "demo-node");
    assert_eq!(dep.metadata.labels.as_ref().unwrap()["team"], "chat");
    assert_eq!(
        dep.metadata.labels.as_ref().unwrap()[label::INSTANCE],
        "demo"
    );
    let template = &dep.spec.template;
    let meta = template.metadata.as_ref().unwrap();
    assert_eq!(meta.labels.as_ref().unwrap()["team"], "chat");
    assert_eq!(
        meta.annotations.as_ref().unwrap()["example.com/owner"],
        "ops"
    );
    let pod = template.spec.as_ref().unwrap();
    assert_eq!(pod.priority_class_name.as_deref(), Some("high"));
    assert_eq!(pod.node_selector.as_ref().unwrap()["pool"], "chat");
    let redis_pod = sts(&d, "demo-redis").spec.template.spec.clone().unwrap();
    assert_eq!(redis_pod.priority_class_name.as_deref(), Some("high"));
}

#[test]
fn editing_passthrough_labels_restarts_no_redis_pod_and_reaches_them_in_place() {
    let plain = render(&demo(), &ctx()).unwrap();
    let labelled = demo()
        .with_label("team", "chat")
        .with_label(label::INSTANCE, "hijack")
        .with_annotation("example.com/owner", "ops");
    let edited = render(&labelled, &ctx()).unwrap();
    for name in ["demo-redis", "demo-sentinel"] {
        assert_eq!(
            sts(&plain, name).spec.template,
            sts(&edited, name).spec.template,
            "{name}: the pod template does not change with passthrough labels"
        );
    }
    let patch = redis_pod_passthrough(&labelled, "demo-redis-0");
    assert_eq!(patch["metadata"]["labels"]["team"], "chat");
    assert!(
        patch["metadata"]["labels"].get(label::INSTANCE).is_none(),
        "our labels never pass through: {patch}"
    );
    assert_eq!(patch["metadata"]["annotations"]["example.com/owner"], "ops");
    assert_eq!(
        patch["metadata"]["annotations"][PASSTHROUGH_HASH_ANNOTATION],
        passthrough_hash(&labelled)
    );
    assert_ne!(passthrough_hash(&labelled), passthrough_hash(&demo()));
}

#[test]
fn managed_redis_refuses_writes_at_four_fifths_of_its_memory_instead_of_evicting() {
    assert_eq!(quantity_bytes("256Mi"), Some(256 << 20));
    assert_eq!(quantity_bytes("2G"), Some(2_000_000_000));
    assert_eq!(quantity_bytes("1.5Gi"), None, "fractions are not guessed");
    let d = render(&demo(), &ctx()).unwrap();
    let c = &sts(&d, "demo-redis")
        .spec
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0];
    assert_eq!(
        env_value(c, "MAXMEMORY"),
        ((256u64 << 20) / 5 * 4).to_string(),
        "from the request"
    );
    assert!(REDIS_SCRIPT.contains("maxmemory-policy noeviction"));
}

#[test]
fn changing_the_data_node_or_sentinel_count_restarts_no_data_pod() {
    let template = |cc: ChatCluster| {
        let d = render(&cc, &ctx()).unwrap();
        sts(&d, "demo-redis").spec.template.clone()
    };
    let base = template(demo().with_redis(3, 3));
    assert_eq!(base, template(demo().with_redis(5, 3)));
    assert_eq!(base, template(demo().with_redis(3, 5)));
}

#[test]
fn data_pods_are_restarted_by_the_operator_and_may_take_their_time_to_load() {
    let d = render(&demo(), &ctx()).unwrap();
    let redis = &sts(&d, "demo-redis").spec;
    assert_eq!(
        redis.update_strategy.as_ref().unwrap().type_.as_deref(),
        Some("OnDelete"),
        "a template change alone restarts no data pod"
    );
    let c = &redis.template.spec.as_ref().unwrap().containers[0];
    assert!(probe_command(&c.liveness_probe).contains("LOADING"));
    assert!(probe_command(&c.startup_probe).contains("LOADING"));
    assert!(
        !probe_command(&c.readiness_probe).contains("LOADING"),
        "loading is not ready"
    );
}

#[test]
fn a_master_hands_its_role_over_before_its_pod_stops() {
    let d = render(&demo(), &ctx()).unwrap();
    let pod = sts(&d, "demo-redis").spec.template.spec.clone().unwrap();
    let c = &pod.containers[0];
    let hook = c.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap();
    assert_eq!(
        hook.exec.as_ref().unwrap().command.as_deref().unwrap(),
        ["sh", "/scripts/handover.sh"]
    );
    assert_eq!(
        pod.termination_grace_period_seconds,
        Some(REDIS_TERMINATION_GRACE_SECONDS)
    );
    let data = d.config_maps[0].data.as_ref().unwrap();
    assert_eq!(data["handover.sh"], HANDOVER_SCRIPT);
    for step in [
        "client pause 20000 write",
        "failover \"$MASTER_NAME\"",
        "client kill type normal",
        "client kill type pubsub",
        "client unpause",
    ] {
        assert!(HANDOVER_SCRIPT.contains(step), "handover.sh: {step}");
    }
    // Sentinels have no hook: only a data node holds data to hand over.
    let sentinel = sts(&d, "demo-sentinel").spec.template.spec.clone().unwrap();
    assert!(sentinel.containers[0].lifecycle.is_none());
}

#[test]
fn probes_and_the_stop_hook_use_the_password_in_use_now_not_the_one_at_start() {
    let d = render(&demo(), &ctx()).unwrap();
    for name in ["demo-redis", "demo-sentinel"] {
        let pod = sts(&d, name).spec.template.spec.clone().unwrap();
        // The applied Secret is mounted.
        let secret = pod_volume(&pod, "auth").secret.unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("demo-redis-applied"));
        let items = secret.items.as_ref().unwrap();
        assert_eq!(
            (items[0].key.as_str(), items[0].path.as_str()),
            (PASSWORD_KEY, "password")
        );
        let c = &pod.containers[0];
        let mount = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "auth")
            .unwrap();
        assert_eq!(
            (mount.mount_path.as_str(), mount.read_only),
            (REDIS_AUTH_DIR, Some(true))
        );
        let env = c.env.as_ref().unwrap();
        assert!(
            env.iter()
                .any(|e| e.name == "AUTH_DIR" && e.value.as_deref() == Some(REDIS_AUTH_DIR))
        );
        for probe in [&c.readiness_probe, &c.liveness_probe] {
            assert!(
                probe_command(probe).contains("cat \"$AUTH_DIR/password\""),
                "{name}: a probe reads the mounted password"
            );
        }
    }
    assert!(HANDOVER_SCRIPT.contains("REDIS_PASSWORD=\"$(cat \"$AUTH_DIR/password\")\""));
}

#[test]
fn rendering_without_uid_is_an_error_not_a_panic() {
    let mut cc = demo();
    cc.metadata.uid = None;
    assert!(matches!(
        render(&cc, &ctx()),
        Err(Error::MissingMetadata("uid"))
    ));
}

#[test]
fn start_scripts_are_valid_posix_shell() {
    for (name, script) in [
        ("redis.sh", REDIS_SCRIPT),
        ("sentinel.sh", SENTINEL_SCRIPT),
        ("handover.sh", HANDOVER_SCRIPT),
    ] {
        let out = std::process::Command::new("sh")
            .args(["-n", "-c", script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_rendered_field_survives_the_typed_round_trip() {
    // Every render path, each converted with the round-trip check (rendering would fail otherwise).
    let mut full = demo()
        .with_label("team", "chat")
        .with_annotation("example.com/owner", "ops");
    full.spec.redis.managed.storage =
        k8s_openapi::apimachinery::pkg::api::resource::Quantity("1Gi".to_owned());
    full.spec.redis.managed.storage_class_name = Some("fast".to_owned());
    full.spec.scheduling.priority_class_name = Some("high".to_owned());
    full.spec.registries.service.annotations =
        BTreeMap::from([("lb".to_owned(), "internal".to_owned())]);
    for cc in [
        demo(),
        full,
        demo()
            .with_external_url("redis://r:6379")
            .with_password_secret("s", "k"),
        demo().with_external_sentinels(&["s:26379"], "m"),
    ] {
        render(&cc, &ctx()).unwrap();
    }
    redis_secret(&demo(), "pw").unwrap();
}

#[test]
fn a_field_the_kubernetes_type_lacks_is_an_error_naming_it() {
    let misspelled = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": "x" },
        "spec": { "ports": [{ "port": 80, "targetPort": 8080 }], "publishNotReadyAdresses": true },
    });
    match obj::<Service>("Service", misspelled) {
        Err(Error::Lossy { kind, path }) => {
            assert_eq!(kind, "Service");
            assert_eq!(path, ".spec.publishNotReadyAdresses");
        }
        other => panic!("expected Lossy, got {other:?}"),
    }
    let fine = json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": "x", "annotations": null } });
    assert!(
        obj::<Service>("Service", fine).is_ok(),
        "nulls are absent fields, not losses"
    );
}

/// Every pod spec rendered for `d`, with the component label of its template.
fn pods(d: &Desired) -> Vec<(String, k8s_openapi::api::core::v1::PodSpec)> {
    let component = |m: &Option<kube::api::ObjectMeta>| {
        m.as_ref().unwrap().labels.as_ref().unwrap()[label::COMPONENT].clone()
    };
    let mut pods = Vec::new();
    for x in &d.deployments {
        pods.push((
            component(&x.spec.template.metadata),
            x.spec.template.spec.clone().unwrap(),
        ));
    }
    for x in &d.stateful_sets {
        pods.push((
            component(&x.spec.template.metadata),
            x.spec.template.spec.clone().unwrap(),
        ));
    }
    pods
}

#[test]
fn every_container_requests_cpu_and_memory_by_default_and_the_spec_overrides_it() {
    let d = render(&demo(), &ctx()).unwrap();
    let all = pods(&d);
    assert_eq!(all.len(), 4);
    for (component, pod) in &all {
        for c in &pod.containers {
            let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
            let requests = requests.unwrap_or_else(|| panic!("{component}: no requests"));
            assert!(requests.contains_key("cpu"), "{component}");
            assert!(requests.contains_key("memory"), "{component}");
        }
    }
    let mut cc = demo();
    cc.spec.redis.managed.sentinel_resources.requests = Some(BTreeMap::from([(
        "cpu".to_owned(),
        k8s_openapi::apimachinery::pkg::api::resource::Quantity("1".to_owned()),
    )]));
    let d = render(&cc, &ctx()).unwrap();
    let sentinel = &sts(&d, "demo-sentinel")
        .spec
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0];
    assert_eq!(
        sentinel
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["cpu"]
            .0,
        "1"
    );
}

#[test]
fn every_component_spreads_over_zones_and_hosts_by_default() {
    let d = render(&demo(), &ctx()).unwrap();
    for (component, pod) in pods(&d) {
        let spread = pod.topology_spread_constraints.clone().unwrap();
        let keys: Vec<&str> = spread.iter().map(|c| c.topology_key.as_str()).collect();
        assert_eq!(
            keys,
            ["topology.kubernetes.io/zone", "kubernetes.io/hostname"],
            "{component}"
        );
        for c in &spread {
            assert_eq!(c.max_skew, 1);
            assert_eq!(c.when_unsatisfiable, "ScheduleAnyway");
            let selector = c
                .label_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap();
            assert_eq!(selector[label::COMPONENT], component);
            assert_eq!(selector[label::INSTANCE], "demo");
        }
        let deployment = component == "chat-node" || component == "registry";
        assert_eq!(
            spread[0].match_label_keys.is_some(),
            deployment,
            "{component}: a rolling update's old pods never skew the new ones"
        );
    }
    // The spec's constraints replace the defaults, each with the component's selector filled in.
    let mut cc = demo();
    cc.spec.scheduling.topology_spread_constraints =
        Some(vec![k8s_openapi::api::core::v1::TopologySpreadConstraint {
            max_skew: 2,
            topology_key: "rack".to_owned(),
            when_unsatisfiable: "DoNotSchedule".to_owned(),
            ..Default::default()
        }]);
    let d = render(&cc, &ctx()).unwrap();
    for (component, pod) in pods(&d) {
        let spread = pod.topology_spread_constraints.unwrap();
        assert_eq!(spread.len(), 1);
        assert_eq!(spread[0].topology_key, "rack");
        let selector = spread[0]
            .label_selector
            .clone()
            .unwrap()
            .match_labels
            .unwrap();
        assert_eq!(selector[label::COMPONENT], component);
    }
    cc.spec.scheduling.topology_spread_constraints = Some(Vec::new());
    let d = render(&cc, &ctx()).unwrap();
    assert!(
        pods(&d)
            .iter()
            .all(|(_, p)| p.topology_spread_constraints.is_none())
    );
}

#[test]
fn managed_sentinels_get_the_password_and_every_pod_runs_restricted() {
    let d = render(&demo(), &ctx()).unwrap();
    for name in ["demo-node", "demo-registry"] {
        let c = container(deployment(&d, name));
        let r = env(c, "SWITCHBOARD_REDIS_SENTINEL_PASSWORD")
            .value_from
            .clone()
            .unwrap()
            .secret_key_ref
            .unwrap();
        assert_eq!(
            (r.name.as_str(), r.key.as_str()),
            ("demo-redis-applied", "password")
        );
    }
    for (component, pod) in pods(&d) {
        let p = pod.security_context.clone().unwrap();
        assert_eq!(p.run_as_non_root, Some(true), "{component}");
        assert_eq!(
            p.seccomp_profile.unwrap().type_,
            "RuntimeDefault",
            "{component}"
        );
        if component == "redis" || component == "sentinel" {
            assert_eq!(p.run_as_user, Some(REDIS_UID), "{component}");
            assert_eq!(p.fs_group, Some(REDIS_UID), "{component}");
        }
        for c in &pod.containers {
            let s = c.security_context.clone().unwrap();
            assert_eq!(s.allow_privilege_escalation, Some(false), "{component}");
            assert_eq!(s.read_only_root_filesystem, Some(true), "{component}");
            assert_eq!(s.capabilities.unwrap().drop, Some(vec!["ALL".to_owned()]));
            if component == "sentinel" {
                let probe = probe_command(&c.readiness_probe);
                assert!(probe.contains("REDISCLI_AUTH"), "{probe:?}");
            }
        }
    }
    let ext = render(&demo().with_external_url("redis://r:6379"), &ctx()).unwrap();
    let c = container(deployment(&ext, "demo-node"));
    assert!(
        c.env
            .iter()
            .flatten()
            .all(|e| e.name != "SWITCHBOARD_REDIS_SENTINEL_PASSWORD")
    );
}

#[test]
fn network_policies_let_only_own_pods_and_the_operator_reach_redis_and_clients_only_serving_ports()
{
    let d = render(&demo(), &ctx()).unwrap();
    let policy = |name: &str| {
        d.network_policies
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("policy {name}"))
            .spec
            .clone()
            .unwrap()
    };
    for (name, component, port) in [
        ("demo-redis", "redis", REDIS_PORT),
        ("demo-sentinel", "sentinel", SENTINEL_PORT),
    ] {
        let spec = policy(name);
        assert_eq!(spec.policy_types, Some(vec!["Ingress".to_owned()]));
        assert_eq!(
            spec.pod_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()[label::COMPONENT],
            component
        );
        let rules = spec.ingress.unwrap();
        assert_eq!(rules.len(), 1);
        let from = rules[0].from.clone().unwrap();
        let own = from[0].pod_selector.clone().unwrap().match_labels.unwrap();
        assert_eq!(own[label::INSTANCE], "demo");
        assert_eq!(own[label::NAME], APP_NAME);
        assert!(
            from[0].namespace_selector.is_none(),
            "own pods: this namespace only"
        );
        let operator = from[1].pod_selector.clone().unwrap().match_labels.unwrap();
        assert_eq!(operator[label::NAME], OPERATOR_APP_NAME);
        assert!(from[1].namespace_selector.is_some());
        let ports = rules[0].ports.clone().unwrap();
        assert_eq!(ports[0].port, Some(IntOrString::Int(port)));
    }
    for (name, port) in [("demo-node", NODE_PORT), ("demo-registry", REGISTRY_PORT)] {
        let rules = policy(name).ingress.unwrap();
        assert_eq!(rules.len(), 2, "clients, then scrapers");
        assert!(rules[0].from.is_none(), "clients come from anywhere");
        assert_eq!(
            rules[0].ports.clone().unwrap(),
            vec![NetworkPolicyPort {
                port: Some(IntOrString::Int(port)),
                protocol: Some("TCP".to_owned()),
                end_port: None,
            }],
            "clients reach the serving port only"
        );
        let scrapers = rules[1].from.clone().unwrap();
        assert_eq!(scrapers.len(), 1);
        assert!(scrapers[0].pod_selector.is_none());
        let namespaces = scrapers[0].namespace_selector.clone().unwrap();
        let expr = &namespaces.match_expressions.unwrap()[0];
        assert_eq!(expr.key, "kubernetes.io/metadata.name");
        assert_eq!(expr.operator, "In");
        assert_eq!(expr.values, Some(vec!["monitoring".to_owned()]));
        assert_eq!(
            rules[1].ports.clone().unwrap()[0].port,
            Some(IntOrString::Int(METRICS_PORT))
        );
    }
    let mut closed = demo();
    closed.spec.network_policy.metrics_namespaces.clear();
    let closed = render(&closed, &ctx()).unwrap();
    let node = closed
        .network_policies
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("demo-node"));
    assert_eq!(
        node.unwrap().spec.clone().unwrap().ingress.unwrap().len(),
        1,
        "no metrics namespaces: no scraper admitted"
    );
    let ext = render(&demo().with_external_url("redis://r:6379"), &ctx()).unwrap();
    assert_eq!(ext.network_policies.len(), 2);
    let mut off = demo();
    off.spec.network_policy.enabled = false;
    assert!(render(&off, &ctx()).unwrap().network_policies.is_empty());
}

fn volumes(d: &Deployment) -> Vec<k8s_openapi::api::core::v1::Volume> {
    d.spec
        .template
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .clone()
        .unwrap_or_default()
}

fn has_env(c: &Container, name: &str) -> bool {
    c.env.iter().flatten().any(|e| e.name == name)
}

#[test]
fn an_empty_spec_verifies_tokens_with_the_generated_key_mounted_as_a_file() {
    let d = render(&demo(), &ctx()).unwrap();
    let node = deployment(&d, "demo-node");
    let c = container(node);
    assert_eq!(env_value(c, "SWITCHBOARD_AUTH"), "jwt");
    assert_eq!(
        env_value(c, "SWITCHBOARD_JWT_HMAC_SECRET_FILE"),
        "/var/run/switchboard/jwt/hmac"
    );
    let volume = volumes(node).into_iter().find(|v| v.name == "jwt").unwrap();
    let secret = volume.secret.unwrap();
    assert_eq!(secret.secret_name.as_deref(), Some("demo-jwt"));
    let items = secret.items.unwrap();
    assert_eq!(
        (items[0].key.as_str(), items[0].path.as_str()),
        ("hmac", "hmac")
    );
    let mount = c.volume_mounts.as_ref().unwrap();
    assert_eq!(mount[0].mount_path, JWT_MOUNT_DIR);
    assert_eq!(mount[0].read_only, Some(true));
    assert!(generates_hmac_key(&demo()));
    // The generated Secret: the key under `hmac`, controlled by the ChatCluster.
    let generated = jwt_secret(&demo(), "k".repeat(64).as_str()).unwrap();
    assert_eq!(generated.metadata.name.as_deref(), Some("demo-jwt"));
    let uid = demo().metadata.uid.unwrap();
    assert!(is_controlled_by(&generated.metadata, &uid));
    assert!(generated.string_data.unwrap().contains_key(JWT_KEY));
}

#[test]
fn no_secret_is_ever_an_environment_value_or_an_argument() {
    let clusters = [
        demo(),
        demo().with_hmac_secret("my-key", "signing"),
        demo().with_jwks_url("https://id.example.com/jwks.json"),
        demo().with_open_identity(),
        with_every_attachment_setting(),
    ];
    for cc in clusters {
        let d = render(&cc, &ctx_with_s3_key("s3")).unwrap();
        for deployment in &d.deployments {
            let c = container(deployment);
            assert!(c.args.is_none() && c.command.is_none(), "{:?}", c.args);
            for e in c.env.iter().flatten() {
                let secretish = ["PASSWORD", "SECRET", "ACCESS_KEY"]
                    .iter()
                    .any(|w| e.name.contains(w));
                if secretish && e.name != "SWITCHBOARD_JWT_HMAC_SECRET_FILE" {
                    assert!(e.value.is_none(), "{} carries a value", e.name);
                }
            }
        }
    }
}

#[test]
fn a_named_key_secret_is_mounted_under_the_fixed_file_name() {
    let cc = demo().with_hmac_secret("my-key", "signing");
    assert!(!generates_hmac_key(&cc));
    let d = render(&cc, &ctx()).unwrap();
    let node = deployment(&d, "demo-node");
    let secret = volumes(node)[0].secret.clone().unwrap();
    assert_eq!(secret.secret_name.as_deref(), Some("my-key"));
    let items = secret.items.unwrap();
    assert_eq!(
        (items[0].key.as_str(), items[0].path.as_str()),
        ("signing", "hmac")
    );
}

#[test]
fn jwks_issuer_audience_and_origins_reach_chat_node_and_origins_the_registry() {
    let mut cc = demo()
        .with_jwks_url("https://id.example.com/jwks.json")
        .with_allowed_origins(&["https://chat.example.com", "http://localhost:3000"]);
    cc.spec.auth.issuer = Some("https://id.example.com/".to_owned());
    cc.spec.auth.audience = Some("switchboard".to_owned());
    let d = render(&cc, &ctx()).unwrap();
    let node = deployment(&d, "demo-node");
    let c = container(node);
    assert_eq!(env_value(c, "SWITCHBOARD_AUTH"), "jwt");
    assert_eq!(
        env_value(c, "SWITCHBOARD_JWT_JWKS_URL"),
        "https://id.example.com/jwks.json"
    );
    assert_eq!(
        env_value(c, "SWITCHBOARD_JWT_ISSUER"),
        "https://id.example.com/"
    );
    assert_eq!(env_value(c, "SWITCHBOARD_JWT_AUDIENCE"), "switchboard");
    assert!(!has_env(c, "SWITCHBOARD_JWT_HMAC_SECRET_FILE"));
    assert!(volumes(node).is_empty());
    let origins = "https://chat.example.com,http://localhost:3000";
    assert_eq!(env_value(c, "SWITCHBOARD_ALLOWED_ORIGINS"), origins);
    let registry = container(deployment(&d, "demo-registry"));
    assert_eq!(env_value(registry, "SWITCHBOARD_ALLOWED_ORIGINS"), origins);
    assert!(!has_env(registry, "SWITCHBOARD_JWT_HMAC_SECRET_FILE"));
}

#[test]
fn open_identity_is_rendered_only_when_chosen_and_without_a_key() {
    let d = render(&demo().with_open_identity(), &ctx()).unwrap();
    let node = deployment(&d, "demo-node");
    let c = container(node);
    assert_eq!(env_value(c, "SWITCHBOARD_AUTH"), "open");
    assert!(!has_env(c, "SWITCHBOARD_JWT_HMAC_SECRET_FILE"));
    assert!(volumes(node).is_empty());
    assert!(
        hmac_key_ref(&demo().with_open_identity())
            .unwrap()
            .is_none()
    );
    assert!(!has_env(c, "SWITCHBOARD_ALLOWED_ORIGINS"));
}

#[test]
fn a_key_change_rolls_the_chat_nodes_and_nothing_else() {
    let a = render(&demo(), &ctx()).unwrap();
    let mut other = ctx();
    other.auth_hash = Some("new-key".to_owned());
    let b = render(&demo(), &other).unwrap();
    assert_ne!(
        config_hash(deployment(&a, "demo-node")),
        config_hash(deployment(&b, "demo-node"))
    );
    assert_eq!(
        config_hash(deployment(&a, "demo-registry")),
        config_hash(deployment(&b, "demo-registry"))
    );
    for (x, y) in a.stateful_sets.iter().zip(&b.stateful_sets) {
        assert_eq!(x.spec.template.metadata, y.spec.template.metadata);
    }
}

#[test]
fn without_attachments_chat_nodes_run_with_the_store_off_and_the_registry_knows_nothing_of_it() {
    let d = render(&demo(), &ctx()).unwrap();
    let node = container(deployment(&d, "demo-node"));
    assert_eq!(env_value(node, ENV_ATTACHMENTS_STORE), "off");
    assert_eq!(attachment_env(node), [ENV_ATTACHMENTS_STORE]);
    let registry = container(deployment(&d, "demo-registry"));
    assert!(attachment_env(registry).is_empty());
}

#[test]
fn attachments_render_the_bucket_endpoint_region_limits_and_the_key_through_secret_key_refs() {
    let d = render(&with_every_attachment_setting(), &ctx_with_s3_key("s3")).unwrap();
    let c = container(deployment(&d, "demo-node"));
    assert_eq!(env_value(c, ENV_ATTACHMENTS_STORE), "s3://chat-files");
    assert_eq!(
        env_value(c, "SWITCHBOARD_ATTACHMENTS_S3_ENDPOINT"),
        "http://minio.storage:9000"
    );
    assert_eq!(
        env_value(c, "SWITCHBOARD_ATTACHMENTS_S3_REGION"),
        "eu-central-1"
    );
    assert_eq!(env_value(c, "SWITCHBOARD_MAX_ATTACHMENT_BYTES"), "10485760");
    assert_eq!(
        env_value(c, "SWITCHBOARD_ATTACHMENT_QUOTA_BYTES"),
        "1073741824"
    );
    for (name, key) in [
        (
            switchboard_attachments::config::ENV_ACCESS_KEY_ID,
            "accessKeyId",
        ),
        (
            switchboard_attachments::config::ENV_SECRET_ACCESS_KEY,
            "secretAccessKey",
        ),
    ] {
        let e = env(c, name);
        assert!(e.value.is_none(), "{name} carries a value");
        let r = e
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .unwrap_or_else(|| panic!("{name} comes from a secretKeyRef"));
        assert_eq!((r.name.as_str(), r.key.as_str()), ("chat-s3", key));
        assert_ne!(r.optional, Some(true), "{name}: the key is required");
    }
    // Nothing of it reaches the registry, which never touches files.
    let registry = container(deployment(&d, "demo-registry"));
    assert!(attachment_env(registry).is_empty());
}

#[test]
fn unset_attachment_settings_are_left_to_chat_node_defaults() {
    let cc = demo().with_attachments("chat-files", "chat-s3");
    let d = render(&cc, &ctx_with_s3_key("s3")).unwrap();
    let c = container(deployment(&d, "demo-node"));
    assert_eq!(env_value(c, ENV_ATTACHMENTS_STORE), "s3://chat-files");
    for unset in [
        "SWITCHBOARD_ATTACHMENTS_S3_ENDPOINT",
        "SWITCHBOARD_ATTACHMENTS_S3_REGION",
        "SWITCHBOARD_MAX_ATTACHMENT_BYTES",
        "SWITCHBOARD_ATTACHMENT_QUOTA_BYTES",
    ] {
        assert!(!has_env(c, unset), "{unset} is set");
    }
    assert!(has_env(
        c,
        switchboard_attachments::config::ENV_ACCESS_KEY_ID
    ));
}

#[test]
fn while_the_s3_key_is_unavailable_chat_nodes_run_with_attachments_off_and_reference_no_secret() {
    // The reconciler leaves the hash out when the credentials Secret or one of its keys is missing: a
    // secretKeyRef to it would keep every new chat-node pod from starting.
    let d = render(&with_every_attachment_setting(), &ctx()).unwrap();
    let c = container(deployment(&d, "demo-node"));
    assert_eq!(env_value(c, ENV_ATTACHMENTS_STORE), "off");
    assert_eq!(attachment_env(c), [ENV_ATTACHMENTS_STORE]);
    assert!(c.env.iter().flatten().all(|e| {
        e.value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .is_none_or(|r| r.name != "chat-s3")
    }));
}

#[test]
fn a_new_s3_key_rolls_the_chat_nodes_and_nothing_else() {
    let cc = with_every_attachment_setting();
    let a = render(&cc, &ctx_with_s3_key("key-1")).unwrap();
    let b = render(&cc, &ctx_with_s3_key("key-2")).unwrap();
    assert_ne!(
        config_hash(deployment(&a, "demo-node")),
        config_hash(deployment(&b, "demo-node"))
    );
    assert_eq!(
        config_hash(deployment(&a, "demo-registry")),
        config_hash(deployment(&b, "demo-registry"))
    );
    for (x, y) in a.stateful_sets.iter().zip(&b.stateful_sets) {
        assert_eq!(x.spec.template.metadata, y.spec.template.metadata);
    }
    // The key becoming available rolls them too (from attachments off to the bucket).
    let off = render(&cc, &ctx()).unwrap();
    assert_ne!(
        config_hash(deployment(&off, "demo-node")),
        config_hash(deployment(&a, "demo-node"))
    );
}

#[test]
fn attachment_env_names_are_the_ones_the_attachments_flags_and_credentials_read() {
    use clap::Args;
    let command = switchboard_attachments::AttachmentArgs::augment_args(clap::Command::new("node"));
    let mut read: Vec<String> = command
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    read.extend([
        ENV_ACCESS_KEY_ID.to_owned(),
        ENV_SECRET_ACCESS_KEY.to_owned(),
    ]);
    let d = render(&with_every_attachment_setting(), &ctx_with_s3_key("s3")).unwrap();
    let c = container(deployment(&d, "demo-node"));
    let rendered: Vec<&str> = c
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .filter(|n| n.contains("ATTACHMENT"))
        .collect();
    assert_eq!(rendered.len(), 7, "{rendered:?}");
    for name in rendered {
        assert!(
            read.iter().any(|r| r == name),
            "{name} is read by no attachments flag: {read:?}"
        );
    }
}
