//! `testbed`: build, start and stop the local Kubernetes test bed (see `e2e/TESTBED.md`).
//!
//! `up` prints the kubeconfig path as the last line of standard output; everything
//! else goes to standard error.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use e2e::testbed::{self, ClusterSpec, Layout};
use switchboard_runtime::report;
use tracing_subscriber::EnvFilter;

/// Build, start and stop the local Kubernetes test bed (a real control plane, kwok nodes).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build the pinned binaries into the cache, or check that they are there.
    Build,
    /// Start (or replace) a cluster and print its kubeconfig path last.
    Up {
        /// The cluster's name.
        #[arg(long, env = "SWITCHBOARD_TESTBED_NAME", default_value = "switchboard")]
        name: String,
        /// How many simulated nodes (default 3; with --real, 0).
        #[arg(long, env = "SWITCHBOARD_TESTBED_NODES")]
        nodes: Option<usize>,
        /// Add a real node: kubelet, containerd and kube-proxy in a network namespace of
        /// their own, with the project's images built and loaded (needs root; see
        /// e2e/TESTBED.md, "A real node").
        #[arg(long, env = "SWITCHBOARD_TESTBED_REAL")]
        real: bool,
    },
    /// Build (or reuse) helm and fetch the Prometheus Operator's CRDs (the chart and monitoring tests);
    /// print helm's path last.
    Tools,
    /// Build (or reuse) the real node's programs and the project's container images;
    /// print the image archive's path last.
    Images,
    /// Delete a cluster (nothing to do if there is none).
    Down {
        /// The cluster's name.
        #[arg(long, env = "SWITCHBOARD_TESTBED_NAME", default_value = "switchboard")]
        name: String,
    },
    /// List the clusters, with each component's pid and resident memory.
    Status,
}

#[tokio::main]
async fn main() -> ExitCode {
    report::exit("testbed", run().await)
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let layout = Layout::discover()?;
    match args.command {
        Cmd::Build => {
            let bins = testbed::ensure_built(&layout).await?;
            eprintln!(
                "test bed {} ready in {}",
                layout.versions.key(),
                bins.dir().display()
            );
        }
        Cmd::Up { name, nodes, real } => {
            let bins = testbed::ensure_built(&layout).await?;
            let cluster = if real {
                testbed::real::up(&layout, &bins, &name, nodes.unwrap_or(0))
                    .await
                    .with_context(|| {
                        format!("starting test bed cluster {name:?} with a real node")
                    })?
            } else {
                let spec = ClusterSpec::named(name).with_nodes(nodes.unwrap_or(3));
                testbed::up(&layout, &bins, &spec)
                    .await
                    .with_context(|| format!("starting test bed cluster {:?}", spec.name))?
            };
            println!("{}", cluster.kubeconfig.display());
        }
        Cmd::Tools => {
            let tools = testbed::tools::ensure(&layout).await?;
            eprintln!(
                "Prometheus Operator CRDs: {}",
                tools.prometheus_operator_crds().display()
            );
            println!("{}", tools.helm().display());
        }
        Cmd::Images => {
            let (_, archive) = testbed::real::images(&layout).await?;
            eprintln!("images: {}", archive.names.join(" "));
            println!("{}", archive.path.display());
        }
        Cmd::Down { name } => {
            let bins = testbed::cached(&layout);
            if testbed::real::down(&layout, bins.as_ref(), &name).await? {
                eprintln!("deleted cluster {name}");
            } else {
                eprintln!("no cluster {name}");
            }
        }
        Cmd::Status => status(&layout),
    }
    Ok(())
}

fn status(layout: &Layout) {
    for name in testbed::list(layout) {
        let dir = layout.cluster_dir(&name);
        let mut total_kib = 0;
        println!("{name}\t{}", dir.join("kubeconfig.yaml").display());
        for (component, pid) in testbed::component_pids(&dir) {
            let rss = e2e::testbed::real::rss_kib(pid);
            total_kib += rss;
            println!("  {component:<24} pid {pid:<8} rss {:>6} MiB", rss / 1024);
        }
        for (what, pid, rss) in testbed::real::memory(layout, &name) {
            total_kib += rss;
            println!("  {what:<24} pid {pid:<8} rss {:>6} MiB", rss / 1024);
        }
        println!(
            "  {:<24} {:<12} rss {:>6} MiB",
            "total",
            "",
            total_kib / 1024
        );
    }
}
