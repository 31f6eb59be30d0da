//! Real pods: the install a user does, a managed-Redis ChatCluster, two clients outside
//! the cluster that chat through the registry's Service, then the routine operations and
//! failures of a running chat system under a counted load (every message sent, acked,
//! delivered, lost, duplicated; recovery times):
//!
//! ```text
//! install ─▶ Ready ─▶ chat ─▶ chat-node pod deleted ─▶ chat-node rolled to a new tag
//!   ─▶ Redis master pod deleted ─▶ every Redis pod rolled (operator-driven)
//!   ─▶ Redis password rotated (no Redis restart) ─▶ sentinels 3 → 5 (no client pod restart)
//!   ─▶ history intact
//!   ─▶ scale out while the operator pod is deleted ─▶ scale in ─▶ delete leaves nothing
//! ```
//!
//! It needs a cluster whose pods really run the project's images and whose Service
//! and pod addresses this machine reaches. With `KUBECONFIG` unset it starts the test
//! bed with a real node (`testbed up --real`: root and the Debian packages listed in
//! `e2e/TESTBED.md`, "A real node") and removes it afterwards; with `KUBECONFIG` set
//! it uses that cluster and leaves it as it was (its namespace is deleted).
//!
//! `./scripts/test` installs those packages and runs it; alone:
//! `cargo test -p e2e --test real_pods -- --nocapture` (as root). The fault table (sent, acked, lost,
//! recovery times per scenario) is also written to `<target>/tmp/real-pods-faults.txt`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use e2e::client::{self, ChatClient, Credentials};
use e2e::fault::{self, Load, Outcome};
use e2e::testbed::{self, Layout};

/// The one real-node cluster this test starts (one per machine).
const CLUSTER: &str = "real-pods";
/// Messages each client sends in the counted exchange.
const MESSAGES: usize = 20;

#[tokio::test]
async fn install_then_a_chat_cluster_serves_clients_from_outside() -> anyhow::Result<()> {
    let bed = Bed::start().await?;
    let ns = format!("real-pods-{:06x}", fastrand::u32(..0xff_ffff));
    let result = scenario(&bed, &ns).await;
    if result.is_err() {
        // How this machine reaches the cluster, and what the pods said, for the report.
        for args in [["route", "show"], ["-br", "link"]] {
            if let Ok(out) = tokio::process::Command::new("ip").args(args).output().await {
                eprintln!(
                    "ip {}:\n{}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
        let _ = bed
            .kubectl(&["-n", &ns, "get", "pods,chatcluster", "-o", "wide"])
            .await
            .map(|o| eprintln!("{o}"));
        let _ = bed
            .kubectl(&["-n", &ns, "get", "events", "--sort-by=.lastTimestamp"])
            .await
            .map(|o| eprintln!("{o}"));
        // The pods' own account: what each component logged last.
        for component in ["chat-node", "registry", "redis", "sentinel"] {
            let selector =
                format!("app.kubernetes.io/instance=chat,app.kubernetes.io/component={component}");
            let _ = bed
                .kubectl(&[
                    "-n",
                    &ns,
                    "logs",
                    "-l",
                    &selector,
                    "--prefix",
                    "--tail=60",
                    "--all-containers",
                ])
                .await
                .map(|o| eprintln!("{component} logs:\n{o}"));
        }
        if let Err(err) = &result {
            eprintln!("failed: {err:#}");
        }
    }
    let _ = bed
        .kubectl(&["delete", "namespace", &ns, "--wait=false"])
        .await;
    bed.stop().await?;
    result
}

async fn scenario(bed: &Bed, ns: &str) -> anyhow::Result<()> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let t = Instant::now();
    // 1. Install exactly as a user does.
    bed.kubectl(&[
        "apply",
        "--server-side",
        "-f",
        &repo.join("crds").to_string_lossy(),
        "-f",
        &repo.join("manifests").to_string_lossy(),
    ])
    .await?;
    bed.kubectl(&[
        "-n",
        "switchboard-system",
        "rollout",
        "status",
        "deployment/switchboard-operator",
        "--timeout=180s",
    ])
    .await
    .context("the operator runs from its image")?;
    let holder = bed
        .kubectl(&[
            "-n",
            "switchboard-system",
            "get",
            "lease",
            "switchboard-operator",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
        .await
        .context("the operator takes the Lease")?;
    ensure!(
        holder.starts_with("switchboard-operator-"),
        "the Lease is held by {holder:?}, not an operator pod"
    );
    eprintln!(
        "operator running, Lease held by {holder} ({:.0}s)",
        t.elapsed().as_secs_f64()
    );

    // 2. A managed-Redis ChatCluster with defaults becomes Ready.
    bed.kubectl(&["create", "namespace", ns]).await?;
    bed.kubectl(&[
        "-n",
        ns,
        "apply",
        "-f",
        &repo
            .join("manifests/examples/minimal.yaml")
            .to_string_lossy(),
    ])
    .await?;
    bed.kubectl(&[
        "-n",
        ns,
        "wait",
        "--for=condition=Ready",
        "chatcluster/chat",
        "--timeout=300s",
    ])
    .await
    .context("the ChatCluster becomes Ready")?;
    eprintln!("ChatCluster Ready ({:.0}s)", t.elapsed().as_secs_f64());

    // 3. Clients outside the cluster ask the registry's Service, then open the URL it gives. Both are
    //    reached at the node's own address (10.250.0.2 on the test bed's real node, a kind node's on
    //    kind): the registry's Service as a NodePort, each chat-node through its own NodePort Service
    //    (spec.nodes.expose), which registries hand out instead of the pod IP.
    let node_ip = bed
        .kubectl(&[
            "get",
            "nodes",
            "-l",
            "type!=kwok",
            "-o",
            "jsonpath={.items[0].status.addresses[?(@.type==\"InternalIP\")].address}",
        ])
        .await?;
    let node_ip = node_ip.trim().to_owned();
    let expose = format!(
        r#"{{"spec":{{"registries":{{"service":{{"type":"NodePort"}}}},"nodes":{{"expose":{{"type":"NodePort","host":"{node_ip}"}}}}}}}}"#
    );
    bed.patch_chat(ns, &expose).await?;
    let registry_port = wait_for(
        "the registry's node port",
        Duration::from_secs(60),
        || async {
            let port = bed
                .kubectl(&[
                    "-n",
                    ns,
                    "get",
                    "service",
                    "chat-registry",
                    "-o",
                    "jsonpath={.spec.ports[0].nodePort}",
                ])
                .await?;
            Ok((!port.trim().is_empty()).then(|| port.trim().to_owned()))
        },
    )
    .await?;
    let registry = format!("http://{node_ip}:{registry_port}");

    // Identity: `spec: {}` means tokens signed with the key the operator generated into `chat-jwt`;
    // the embedding application (this test) mints them with it.
    let key = bed
        .kubectl(&[
            "-n",
            ns,
            "get",
            "secret",
            "chat-jwt",
            "-o",
            "jsonpath={.data.hmac}",
        ])
        .await?;
    let key = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, key.trim())
        .context("the generated key is base64 in the Secret")?;
    let issuer = client::TokenIssuer::new(key);
    let token = |user: &str| issuer.mint(user, client::tokens::TEST_TOKEN_TTL);

    let outside = format!("ws://{node_ip}:");
    let deadline = Instant::now() + Duration::from_secs(90);
    let at_alice = loop {
        let a = assign_retrying(&registry, deadline).await?;
        if a.url.starts_with(&outside) {
            break a;
        }
        if Instant::now() > deadline {
            bail!(
                "the registry still hands out {} after 90s, not a node port",
                a.url
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut alice = connect_retrying(&at_alice.url, &token("alice"))
        .await
        .with_context(|| format!("alice opens {}", at_alice.url))?;
    // The registry answers with the least-loaded node; once alice's node counts her,
    // it names the other one.
    let deadline = Instant::now() + Duration::from_secs(60);
    let at_bob = loop {
        let a = assign_retrying(&registry, deadline).await?;
        if a.node != at_alice.node {
            break a;
        }
        if Instant::now() > deadline {
            bail!("the registry kept assigning {} for 60s", a.node);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    ensure!(
        at_bob.url.starts_with(&outside),
        "bob is handed {}",
        at_bob.url
    );
    let mut bob = connect_retrying(&at_bob.url, &token("bob")).await?;

    // Metrics are not on the ports clients reach; they are on each pod's `metrics` port (9090), which
    // the NetworkPolicy opens to the monitoring namespace only (read here through the API server's
    // pod proxy).
    let node_http = at_alice
        .url
        .replacen("ws://", "http://", 1)
        .replace("/ws", "/metrics");
    for url in [format!("{registry}/metrics"), node_http] {
        let status = reqwest::get(&url).await?.status();
        ensure!(
            status == reqwest::StatusCode::NOT_FOUND,
            "{url} answered {status}"
        );
    }
    for component in ["chat-node", "registry"] {
        let pod = first_pod(bed, ns, component).await?;
        let text = bed
            .kubectl(&[
                "get",
                "--raw",
                &format!("/api/v1/namespaces/{ns}/pods/{pod}:9090/proxy/metrics"),
            ])
            .await?;
        ensure!(text.ends_with("# EOF\n"), "{pod}:9090/metrics: {text}");
    }
    eprintln!(
        "alice on {} ({}), bob on {} ({})",
        at_alice.node, at_alice.url, at_bob.node, at_bob.url
    );

    // Room, presence, counted messages both ways, DM, history.
    let room = "lobby";
    let wait = Duration::from_secs(15);
    alice.join(room, None).await?;
    bob.join(room, None).await?;
    alice
        .wait_for_named(
            "bob's presence join",
            |f| {
                f.get("type").and_then(|v| v.as_str()) == Some("presence")
                    && f.get("user").and_then(|v| v.as_str()) == Some("bob")
            },
            wait,
        )
        .await?;
    let mut counts = Counts::default();
    exchange(&mut alice, &mut bob, "a", room, &mut counts).await?;
    exchange(&mut bob, &mut alice, "b", room, &mut counts).await?;
    eprintln!(
        "room {room}: sent {} acked {} delivered {} lost {} duplicated {}",
        counts.sent, counts.acked, counts.delivered, counts.lost, counts.duplicated
    );
    ensure!(counts.lost == 0 && counts.duplicated == 0, "{counts:?}");

    alice.dm("bob", "psst", Some("dm-1")).await?;
    bob.wait_for_named(
        "alice's dm",
        |f| {
            f.get("type").and_then(|v| v.as_str()) == Some("dm")
                && f.get("body").and_then(|v| v.as_str()) == Some("psst")
        },
        wait,
    )
    .await?;
    let page = bob.history(room, None, Some(100)).await?;
    let bodies: Vec<&str> = page.messages.iter().map(|m| m.body.as_str()).collect();
    ensure!(
        bodies.len() == 2 * MESSAGES
            && bodies.first() == Some(&"a-0")
            && bodies.last() == Some(&"b-19"),
        "history of {room}: {bodies:?}"
    );
    eprintln!(
        "dm delivered, history holds all {} messages in order ({:.0}s)",
        bodies.len(),
        t.elapsed().as_secs_f64()
    );
    drop((alice, bob));

    let credentials = Credentials::Token(issuer.clone());
    let mut report = Vec::new();
    let outcome = under_load(bed, ns, &registry, &credentials, &mut report).await;
    eprintln!("\n{}", fault::TABLE_HEADER);
    for line in &report {
        eprintln!("{line}");
    }
    // The table outlives a run whose output was captured (./scripts/test): recovery times to compare.
    let table = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("real-pods-faults.txt");
    let text = format!("{}\n{}\n", fault::TABLE_HEADER, report.join("\n"));
    if let Err(err) = std::fs::write(&table, text) {
        eprintln!("could not write {}: {err}", table.display());
    }
    outcome?;

    // Everything acknowledged before the Redis pods were replaced is still there.
    let mut reader =
        ChatClient::connect_token(&client::assign(&registry).await?.url, &token("reader")).await?;
    reader.join(room, None).await?;
    let page = reader.history(room, None, Some(100)).await?;
    ensure!(
        page.messages.len() == 2 * MESSAGES,
        "history of {room} after the Redis scenarios: {} messages, not {}",
        page.messages.len(),
        2 * MESSAGES
    );
    drop(reader);

    scale_out_without_operator(bed, ns, &registry, &token("newcomer")).await?;
    delete_leaves_nothing(bed, ns).await?;
    eprintln!("all scenarios passed ({:.0}s)", t.elapsed().as_secs_f64());
    Ok(())
}

/// Asks the registry as a client does: an unreachable registry is asked again until `deadline` (right
/// after the ChatCluster turns Ready, kube-proxy may not have programmed the registry's node port yet:
/// the full run failed once on a refused connect there).
async fn assign_retrying(registry: &str, deadline: Instant) -> anyhow::Result<client::Assignment> {
    retrying(&format!("asking {registry}"), deadline, || {
        client::assign(registry)
    })
    .await
}

/// Connects as a client does: a refused connection is tried again for a while (a node port can take a
/// moment after its Service routes to the pod before every proxy rule is in place).
async fn connect_retrying(url: &str, token: &str) -> anyhow::Result<ChatClient> {
    let deadline = Instant::now() + Duration::from_secs(20);
    retrying(&format!("connecting to {url}"), deadline, || {
        ChatClient::connect_token(url, token)
    })
    .await
}

/// Runs `attempt` every 500 ms until it succeeds; its last error once `deadline` has passed.
async fn retrying<T, F, Fut>(what: &str, deadline: Instant, mut attempt: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, client::Error>>,
{
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(err) if Instant::now() < deadline => {
                eprintln!("{what}: {err}; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(err) => return Err(err.into()),
        }
    }
}

/// A load of room members, sized for this 2-core machine, lasting about `seconds`.
fn load(seconds: u64) -> Load {
    let interval = Duration::from_millis(250);
    Load {
        members: 6,
        senders: 2,
        messages_per_sender: (seconds * 1000 / interval.as_millis() as u64) as usize,
        interval,
        ack_timeout: Duration::from_secs(3),
        deadline: Duration::from_secs(seconds + 120),
        ..Load::default()
    }
}

/// Runs `fault` while a load of about `seconds` runs through `registry`; the outcome, and how long
/// load and fault took together.
async fn loaded(
    registry: &str,
    credentials: &Credentials,
    seconds: u64,
    fault: impl std::future::Future<Output = ()>,
) -> (Outcome, Duration) {
    let t = Instant::now();
    let outcome = fault::run(
        vec![registry.to_owned()],
        credentials.clone(),
        load(seconds),
        fault,
    )
    .await;
    (outcome, t.elapsed())
}

/// Each fault under load; `report` gets one table row per scenario, whatever happens.
async fn under_load(
    bed: &Bed,
    ns: &str,
    registry: &str,
    credentials: &Credentials,
    report: &mut Vec<String>,
) -> anyhow::Result<()> {
    let mut check = |name: &str, (outcome, took): (Outcome, Duration)| -> anyhow::Result<()> {
        report.push(format!(
            "{}  ({:.0}s)",
            outcome.table_row(name),
            took.as_secs_f64()
        ));
        eprintln!("{}", report.last().map(String::as_str).unwrap_or_default());
        ensure!(outcome.is_clean(), "{name}:\n{outcome}");
        Ok(())
    };

    // 1. A chat-node pod is deleted: it drains, its clients go elsewhere through the registry.
    let victim = first_pod(bed, ns, "chat-node").await?;
    let outcome = loaded(registry, credentials, 20, async {
        bed.delete_pod_reported(ns, &victim).await;
    })
    .await;
    check("node-pod-delete", outcome)?;
    wait_ready(bed, ns, "after the chat-node pod was replaced").await?;

    // 2. The chat-node Deployment rolls to a new image tag.
    let outcome = loaded(registry, credentials, 60, async {
        let patch = format!(
            r#"{{"spec":{{"nodes":{{"image":"{}"}}}}}}"#,
            testbed::real::ROLLOUT_NODE_IMAGE
        );
        let rolled = async {
            bed.patch_chat(ns, &patch).await?;
            bed.kubectl(&[
                "-n",
                ns,
                "rollout",
                "status",
                "deployment/chat-node",
                "--timeout=240s",
            ])
            .await
        };
        if let Err(err) = rolled.await {
            eprintln!("rolling chat-node: {err:#}");
        }
    })
    .await;
    check("node-rolling-update", outcome)?;
    wait_ready(bed, ns, "after the chat-node rollout").await?;

    // 3. The Redis master pod is deleted: its stop hook hands the role over (writes held, replicas
    //    caught up, a sentinel promotes one, clients sent on); acknowledged messages were confirmed
    //    by a replica (ackReplicas defaults to 1), so none is lost.
    let master = current_master_pod(bed, ns).await?;
    let outcome = loaded(registry, credentials, 40, async {
        bed.delete_pod_reported(ns, &master).await;
    })
    .await;
    check("redis-master-delete", outcome)?;
    wait_ready(bed, ns, "after the Redis master was replaced").await?;
    let promoted = current_master_pod(bed, ns).await?;
    eprintln!("the Redis master moved from {master} to {promoted}");

    // 4. A change that needs every data pod restarted: the operator restarts the replicas, each back
    //    in sync before the next, then fails the master over and restarts it.
    let outcome = loaded(registry, credentials, 90, async {
        let patch = r#"{"spec":{"redis":{"managed":{"resources":{"requests":{"cpu":"60m","memory":"64Mi"}}}}}}"#;
        let rolled = async {
            bed.patch_chat(ns, patch)
                .await?;
            wait_for("every data pod restarted", Duration::from_secs(300), || async {
                let status = bed
                    .kubectl(&["-n", ns, "get", "statefulset", "chat-redis", "-o",
                        "jsonpath={.metadata.generation} {.status.observedGeneration} {.status.updatedReplicas} {.status.readyReplicas} {.spec.replicas}"])
                    .await?;
                let f: Vec<&str> = status.split_whitespace().collect();
                Ok(matches!(f.as_slice(), [g, o, u, r, n] if g == o && u == n && r == n).then_some(()))
            })
            .await
        };
        if let Err(err) = rolled.await {
            eprintln!("rolling Redis: {err:#}");
        }
    })
    .await;
    check("redis-rolled", outcome)?;
    wait_ready(bed, ns, "after every Redis pod was replaced").await?;
    let steps: Vec<String> = bed
        .events(ns)
        .await?
        .into_iter()
        .filter(|l| l.starts_with("RedisUpdate") || l.starts_with("RedisFailover"))
        .collect();
    eprintln!(
        "operator steps of the Redis update:\n  {}",
        steps.join("\n  ")
    );
    ensure!(
        steps.iter().any(|l| l.starts_with("RedisFailover")),
        "the master was restarted without a failover first: {steps:?}"
    );

    // 5. The Redis password is rotated: the servers take it while running, the clients roll to it, and
    //    only then is the old one refused — no Redis or sentinel pod restarts, no message is lost.
    let servers_before = [
        pods(bed, ns, "redis").await?,
        pods(bed, ns, "sentinel").await?,
    ];
    let nodes_before = pod_names(bed, ns, "chat-node").await?;
    let new_password = format!("rotated{:08x}", fastrand::u32(..));
    let outcome = loaded(registry, credentials, 90, async {
        let rotated = async {
            let patch = format!(r#"{{"stringData":{{"password":"{new_password}"}}}}"#);
            bed.kubectl(&[
                "-n",
                ns,
                "patch",
                "secret",
                "chat-redis-auth",
                "--type=merge",
                "-p",
                &patch,
            ])
            .await?;
            wait_for(
                "the rotation's last step",
                Duration::from_secs(300),
                || async {
                    Ok(bed
                        .events(ns)
                        .await?
                        .iter()
                        .any(|l| l.starts_with("PasswordRotated"))
                        .then_some(()))
                },
            )
            .await
        };
        if let Err(err) = rotated.await {
            eprintln!("rotating the password: {err:#}");
        }
    })
    .await;
    check("password-rotated", outcome)?;
    wait_ready(bed, ns, "after the password rotation").await?;
    let steps: Vec<String> = bed
        .events(ns)
        .await?
        .into_iter()
        .filter(|l| l.starts_with("PasswordRotat") || l.starts_with("PasswordSwitched"))
        .collect();
    eprintln!("operator steps of the rotation:\n  {}", steps.join("\n  "));
    ensure!(steps.len() == 3, "three steps, each announced: {steps:?}");
    ensure!(
        [
            pods(bed, ns, "redis").await?,
            pods(bed, ns, "sentinel").await?
        ] == servers_before,
        "a Redis or sentinel pod restarted for the rotation"
    );
    let applied = bed
        .kubectl(&[
            "-n",
            ns,
            "get",
            "secret",
            "chat-redis-applied",
            "-o",
            "jsonpath={.data.passwords}",
        ])
        .await?;
    let applied =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, applied.trim())?;
    ensure!(
        applied == new_password.as_bytes(),
        "the servers accept only the new password"
    );
    let nodes_after = pod_names(bed, ns, "chat-node").await?;
    ensure!(
        nodes_after.iter().all(|n| !nodes_before.contains(n)),
        "every chat-node pod rolled to the new password: {nodes_before:?} -> {nodes_after:?}"
    );

    // 6. Two more sentinels: they start, and no chat-node or registry pod restarts (they reach the
    //    sentinels through one Service name).
    let clients_before = [
        pods(bed, ns, "chat-node").await?,
        pods(bed, ns, "registry").await?,
    ];
    let outcome = loaded(registry, credentials, 40, async {
        let scaled = async {
            bed.patch_chat(ns, r#"{"spec":{"redis":{"managed":{"sentinels":5}}}}"#).await?;
            wait_for("five sentinels rolled and ready", Duration::from_secs(240), || async {
                let status = bed
                    .kubectl(&["-n", ns, "get", "statefulset", "chat-sentinel", "-o",
                        "jsonpath={.metadata.generation} {.status.observedGeneration} {.status.updatedReplicas} {.status.readyReplicas}"])
                    .await?;
                let f: Vec<&str> = status.split_whitespace().collect();
                Ok(matches!(f.as_slice(), [g, o, "5", "5"] if g == o).then_some(()))
            })
            .await
        };
        if let Err(err) = scaled.await {
            eprintln!("scaling the sentinels: {err:#}");
        }
    })
    .await;
    check("sentinels-3-to-5", outcome)?;
    wait_ready(bed, ns, "after the sentinels were scaled").await?;
    ensure!(
        [
            pods(bed, ns, "chat-node").await?,
            pods(bed, ns, "registry").await?
        ] == clients_before,
        "a chat-node or registry pod restarted for the sentinel count"
    );
    // A minute after the rotation the data pods, which kept the old password in their environment,
    // are still ready and were not restarted (their probes read the password in use from the mounted
    // Secret), and no stop hook failed on the way (the master's hand-over in step 3).
    servers_steady(bed, ns).await
}

/// Every data pod ready with no container restart, and no pod's stop hook failed.
async fn servers_steady(bed: &Bed, ns: &str) -> anyhow::Result<()> {
    let out = bed
        .kubectl(&["-n", ns, "get", "pods", "-l",
            "app.kubernetes.io/instance=chat,app.kubernetes.io/component=redis",
            "-o", "jsonpath={range .items[*]}{.metadata.name} {.status.containerStatuses[0].ready} {.status.containerStatuses[0].restartCount}{\"\\n\"}{end}"])
        .await?;
    let unsteady: Vec<&str> = out.lines().filter(|l| !l.ends_with(" true 0")).collect();
    ensure!(
        !out.trim().is_empty() && unsteady.is_empty(),
        "data pods not ready or restarted (name, ready, restarts): {unsteady:?}"
    );
    let failed = bed
        .events_where(ns, "reason=FailedPreStopHook", "{.involvedObject.name}")
        .await?;
    ensure!(failed.is_empty(), "a stop hook failed: {failed:?}");
    Ok(())
}

/// The operator pod is deleted right after a scale-out: the new chat-node still gets clients once
/// it is ready, and the ChatCluster becomes Ready again (with the operator's replacement or without it).
async fn scale_out_without_operator(
    bed: &Bed,
    ns: &str,
    registry: &str,
    token: &str,
) -> anyhow::Result<()> {
    let t = Instant::now();
    let before = pod_names(bed, ns, "chat-node").await?;
    bed.kubectl(&["-n", ns, "scale", "chatcluster", "chat", "--replicas=3"])
        .await?;
    bed.kubectl(&[
        "-n",
        "switchboard-system",
        "delete",
        "pod",
        "-l",
        "app.kubernetes.io/name=switchboard-operator",
        "--wait=false",
    ])
    .await?;
    let new_pod = wait_for(
        "a third chat-node pod",
        Duration::from_secs(120),
        || async {
            let now = pod_names(bed, ns, "chat-node").await?;
            Ok(now.into_iter().find(|p| !before.contains(p)))
        },
    )
    .await?;
    let assigned = wait_for(
        "the registry to assign the new pod",
        Duration::from_secs(180),
        || {
            let new_pod = new_pod.clone();
            async move {
                let a = client::assign(registry).await?;
                Ok((a.node == new_pod).then_some(a))
            }
        },
    )
    .await?;
    // kube-proxy programs the new pod's own NodePort a moment after the pod is ready, and the registry
    // may name the pod before that: a refused connect is tried again, as clients do (they back off and
    // ask again; PROTOCOL.md section 1).
    let url = assigned.url.as_str();
    let mut client = wait_for(
        "the new pod's address to take a connection",
        Duration::from_secs(60),
        || async move { Ok(Some(ChatClient::connect_token(url, token).await?)) },
    )
    .await?;
    client.join("lobby", None).await?;
    drop(client);
    wait_ready(bed, ns, "after the scale-out").await?;
    eprintln!(
        "scale-out with the operator pod deleted: {new_pod} assigned and serving ({:.0}s)",
        t.elapsed().as_secs_f64()
    );
    bed.kubectl(&["-n", ns, "scale", "chatcluster", "chat", "--replicas=2"])
        .await?;
    wait_for("two chat-node pods", Duration::from_secs(180), || async {
        Ok((pod_names(bed, ns, "chat-node").await?.len() == 2).then_some(()))
    })
    .await?;
    wait_ready(bed, ns, "after the scale-in").await
}

/// `kubectl delete chatcluster` removes every object it owned.
async fn delete_leaves_nothing(bed: &Bed, ns: &str) -> anyhow::Result<()> {
    let t = Instant::now();
    bed.kubectl(&[
        "-n",
        ns,
        "delete",
        "chatcluster",
        "chat",
        "--wait=true",
        "--timeout=120s",
    ])
    .await?;
    let kinds = "deployments,statefulsets,replicasets,pods,services,configmaps,secrets,\
                 poddisruptionbudgets,networkpolicies,persistentvolumeclaims,endpointslices";
    wait_for(
        "every owned object to be gone",
        Duration::from_secs(180),
        || async {
            let left = bed
                .kubectl(&[
                    "-n",
                    ns,
                    "get",
                    kinds,
                    "-l",
                    "app.kubernetes.io/instance=chat",
                    "-o",
                    "name",
                ])
                .await?;
            if left.trim().is_empty() {
                Ok(Some(()))
            } else {
                eprintln!(
                    "still there: {}",
                    left.split_whitespace().collect::<Vec<_>>().join(" ")
                );
                Ok(None)
            }
        },
    )
    .await?;
    eprintln!(
        "delete left nothing behind ({:.0}s)",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Polls `probe` every 2 s until it yields a value, for at most `limit`.
async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let last = match probe().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => String::new(),
            Err(err) => format!(": {err:#}"),
        };
        if Instant::now() > deadline {
            bail!("waited {limit:?} for {what}{last}");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn wait_ready(bed: &Bed, ns: &str, when: &str) -> anyhow::Result<()> {
    bed.kubectl(&[
        "-n",
        ns,
        "wait",
        "--for=condition=Ready",
        "chatcluster/chat",
        "--timeout=300s",
    ])
    .await
    .with_context(|| format!("the ChatCluster is Ready again {when}"))
    .map(drop)
}

/// (name, uid) of the running (not terminating) pods of `component`.
async fn pods(bed: &Bed, ns: &str, component: &str) -> anyhow::Result<Vec<(String, String)>> {
    let out = bed
        .kubectl(&["-n", ns, "get", "pods", "-l",
            &format!("app.kubernetes.io/instance=chat,app.kubernetes.io/component={component}"),
            "-o", "jsonpath={range .items[*]}{.metadata.name} {.metadata.uid} {.metadata.deletionTimestamp}{\"\\n\"}{end}"])
        .await?;
    // Terminating pods (a deletion timestamp after the uid) are on their way out.
    let mut pods: Vec<(String, String)> = out
        .lines()
        .filter_map(
            |l| match l.split_whitespace().collect::<Vec<_>>().as_slice() {
                [name, uid] => Some(((*name).to_owned(), (*uid).to_owned())),
                _ => None,
            },
        )
        .collect();
    pods.sort();
    Ok(pods)
}

async fn pod_names(bed: &Bed, ns: &str, component: &str) -> anyhow::Result<Vec<String>> {
    Ok(pods(bed, ns, component)
        .await?
        .into_iter()
        .map(|(name, _)| name)
        .collect())
}

async fn first_pod(bed: &Bed, ns: &str, component: &str) -> anyhow::Result<String> {
    pod_names(bed, ns, component)
        .await?
        .into_iter()
        .next()
        .with_context(|| format!("no {component} pod"))
}

/// The data pod the ChatCluster's status names as master (`<pod>.<headless>…:6379`).
async fn current_master_pod(bed: &Bed, ns: &str) -> anyhow::Result<String> {
    let master = bed
        .kubectl(&[
            "-n",
            ns,
            "get",
            "chatcluster",
            "chat",
            "-o",
            "jsonpath={.status.redis.currentMaster}",
        ])
        .await?;
    let pod = master
        .split(['.', ':'])
        .next()
        .unwrap_or_default()
        .to_owned();
    ensure!(
        pod.starts_with("chat-redis-"),
        "status names the master {master:?}"
    );
    Ok(pod)
}

/// `from` sends [`MESSAGES`] to `room`; each acknowledged one must reach `to` exactly once.
async fn exchange(
    from: &mut ChatClient,
    to: &mut ChatClient,
    who: &str,
    room: &str,
    counts: &mut Counts,
) -> anyhow::Result<()> {
    let wait = Duration::from_secs(15);
    let mut acked = Vec::new();
    for i in 0..MESSAGES {
        counts.sent += 1;
        let id = format!("{who}-{i}");
        let ack = from.send(room, &id, Some(&id)).await?;
        counts.acked += 1;
        acked.push(ack.seq);
    }
    for seq in &acked {
        match to.wait_message(room, |m| m.seq == *seq, wait).await {
            Ok(_) => counts.delivered += 1,
            Err(err) => {
                counts.lost += 1;
                eprintln!("seq {seq} not delivered: {err}");
            }
        }
    }
    // A second copy of a seq still buffered is a duplicate.
    counts.duplicated += to
        .take_buffered()
        .iter()
        .filter(|f| {
            f.get("type").and_then(|v| v.as_str()) == Some("message")
                && f.get("seq")
                    .and_then(serde_json::Value::as_u64)
                    .is_some_and(|s| acked.contains(&s))
        })
        .count();
    Ok(())
}

#[derive(Debug, Default)]
struct Counts {
    sent: usize,
    acked: usize,
    delivered: usize,
    lost: usize,
    duplicated: usize,
}

/// The cluster under test: started here (and removed by [`Bed::stop`]) or named by `KUBECONFIG`.
struct Bed {
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    started: Option<(Layout, testbed::Binaries)>,
}

impl Bed {
    async fn start() -> anyhow::Result<Self> {
        if let Some(path) = std::env::var_os("KUBECONFIG") {
            let kubectl = std::env::var_os("SWITCHBOARD_KUBECTL")
                .map(PathBuf::from)
                .or_else(|| {
                    Layout::discover()
                        .ok()
                        .and_then(|l| testbed::cached(&l))
                        .map(|b| b.kubectl())
                })
                .or_else(|| testbed::find_on_path("kubectl"))
                .context("no kubectl: build the test bed or put kubectl on PATH")?;
            return Ok(Self {
                kubeconfig: PathBuf::from(path),
                kubectl,
                started: None,
            });
        }
        let layout = Layout::discover()?;
        let bins = testbed::ensure_built(&layout).await?;
        let t = Instant::now();
        let cluster = testbed::real::up(&layout, &bins, CLUSTER, 0).await?;
        eprintln!(
            "test bed with a real node up in {:.0}s",
            t.elapsed().as_secs_f64()
        );
        Ok(Self {
            kubeconfig: cluster.kubeconfig,
            kubectl: bins.kubectl(),
            started: Some((layout, bins)),
        })
    }

    async fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = tokio::process::Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .kill_on_drop(true)
            .output()
            .await
            .with_context(|| format!("running {}", self.kubectl.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        ensure!(
            output.status.success(),
            "kubectl {}: {}{}",
            args.join(" "),
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(stdout)
    }

    /// The ChatCluster's Events, one `Reason: message` line each.
    async fn events(&self, ns: &str) -> anyhow::Result<Vec<String>> {
        self.events_where(ns, "involvedObject.kind=ChatCluster", "{.reason}")
            .await
    }

    /// The Events in `ns` that match the field `selector`, one `<head>: message` line each, `head`
    /// a JSONPath into the Event.
    async fn events_where(
        &self,
        ns: &str,
        selector: &str,
        head: &str,
    ) -> anyhow::Result<Vec<String>> {
        let format = format!("jsonpath={{range .items[*]}}{head}: {{.message}}{{\"\\n\"}}{{end}}");
        let out = self
            .kubectl(&[
                "-n",
                ns,
                "get",
                "events",
                "--field-selector",
                selector,
                "-o",
                &format,
            ])
            .await?;
        Ok(out.lines().map(str::to_owned).collect())
    }

    /// Merge-patches the ChatCluster `chat` in `ns`.
    async fn patch_chat(&self, ns: &str, patch: &str) -> anyhow::Result<String> {
        self.kubectl(&[
            "-n",
            ns,
            "patch",
            "chatcluster",
            "chat",
            "--type=merge",
            "-p",
            patch,
        ])
        .await
    }

    /// Deletes pod `name` without waiting for it to go; a failure is reported, not fatal (the
    /// scenario's counts show what it did).
    async fn delete_pod_reported(&self, ns: &str, name: &str) {
        if let Err(err) = self
            .kubectl(&["-n", ns, "delete", "pod", name, "--wait=false"])
            .await
        {
            eprintln!("deleting {name}: {err:#}");
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        if std::env::var_os("SWITCHBOARD_TESTBED_KEEP").is_some() {
            return Ok(());
        }
        if let Some((layout, bins)) = &self.started {
            testbed::real::down(layout, Some(bins), CLUSTER).await?;
        }
        Ok(())
    }
}
