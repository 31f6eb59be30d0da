//! Real pods: the install a user does, a managed-Redis ChatCluster, and two clients
//! outside the cluster that chat through the registry's Service.
//!
//! It needs a cluster whose pods really run the project's images and whose Service
//! and pod addresses this machine reaches. With `KUBECONFIG` unset it starts the test
//! bed with a real node (`testbed up --real`: root and the Debian packages listed in
//! `e2e/TESTBED.md`, "A real node") and removes it afterwards; with `KUBECONFIG` set
//! it uses that cluster and leaves it as it was (its namespace is deleted).
//!
//! `./scripts/test` installs those packages and runs it; alone:
//! `cargo test -p e2e --test real_pods -- --nocapture` (as root).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use e2e::client::{self, ChatClient};
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

    // 3. Clients outside the cluster ask the registry's Service, then open the URL it gives.
    let ip = bed
        .kubectl(&[
            "-n",
            ns,
            "get",
            "service",
            "chat-registry",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])
        .await?;
    let port = bed
        .kubectl(&[
            "-n",
            ns,
            "get",
            "service",
            "chat-registry",
            "-o",
            "jsonpath={.spec.ports[0].port}",
        ])
        .await?;
    let registry = format!("http://{}:{}", ip.trim(), port.trim());
    let (mut alice, at_alice) = ChatClient::connect_assigned(&registry, "alice")
        .await
        .with_context(|| format!("alice asks {registry} and connects"))?;
    // The registry answers with the least-loaded node; once alice's node counts her,
    // it names the other one.
    let deadline = Instant::now() + Duration::from_secs(60);
    let at_bob = loop {
        let a = client::assign(&registry).await?;
        if a.node != at_alice.node {
            break a;
        }
        if Instant::now() > deadline {
            bail!("the registry kept assigning {} for 60s", a.node);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut bob = ChatClient::connect(&at_bob.url, "bob").await?;
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
    Ok(())
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
