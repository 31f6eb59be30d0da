//! Start a local Switchboard topology (Redis, N chat-nodes, M registries) as processes on loopback,
//! print every URL, and run until Ctrl-C.
//!
//! ```text
//! cargo build -p chat-node -p registry
//! cargo run -p e2e --bin topology -- --nodes 3 --registries 2
//! ```

use anyhow::Context as _;
use clap::Parser;
use e2e::topology::{Topology, TopologyConfig};
use std::process::ExitCode;
use switchboard_runtime::report;

/// Run a local Switchboard topology until Ctrl-C.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Number of chat-node processes.
    #[arg(long, env = "TOPOLOGY_NODES", default_value_t = 2)]
    nodes: usize,
    /// Number of registry processes.
    #[arg(long, env = "TOPOLOGY_REGISTRIES", default_value_t = 1)]
    registries: usize,
    /// Highly available Redis: a master, two replicas and three sentinels with a password; chat-nodes
    /// ack a message once one replica has it (`--ack-replicas 1`). Use with `--nodes 3 --registries 2`.
    #[arg(long, env = "TOPOLOGY_HA", conflicts_with = "standalone")]
    ha: bool,
    /// One chat-node without Redis (ignores --nodes and --registries).
    #[arg(long, env = "TOPOLOGY_STANDALONE")]
    standalone: bool,
    /// Extra argument for every chat-node (repeat: --node-arg=--capacity --node-arg=100).
    #[arg(
        long = "node-arg",
        env = "TOPOLOGY_NODE_ARGS",
        value_delimiter = ' ',
        allow_hyphen_values = true
    )]
    node_args: Vec<String>,
    /// Let anyone claim any user name (`--auth open`) instead of requiring tokens (scaled default:
    /// HS256 tokens, with the development token issuer on the registries for the web page).
    #[arg(long, env = "TOPOLOGY_OPEN")]
    open: bool,
    /// Cluster id shared by the processes.
    #[arg(long, env = "TOPOLOGY_CLUSTER_ID", default_value = "local")]
    cluster_id: String,
    /// `RUST_LOG` for the processes.
    #[arg(long, env = "TOPOLOGY_LOG", default_value = "info")]
    log: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    report::exit("topology", run().await)
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let ha = if args.ha {
        Some(
            e2e::ha::RedisHa::start()
                .await
                .context("starting Redis with Sentinel")?,
        )
    } else {
        None
    };
    let mut node_args = args.node_args;
    if ha.is_some() {
        node_args.extend(["--ack-replicas".to_owned(), "1".to_owned()]);
    }
    let auth = if args.open || args.standalone {
        e2e::topology::Auth::Open
    } else {
        e2e::topology::Auth::Jwt
    };
    let config = TopologyConfig {
        auth,
        nodes: args.nodes,
        registries: args.registries,
        redis: !args.standalone,
        node_args,
        registry_args: Vec::new(),
        cluster_id: args.cluster_id,
        log_filter: args.log,
        external_redis: ha.as_ref().map(e2e::ha::RedisHa::flags),
        ..TopologyConfig::default()
    };
    e2e::topology::bin_dir_or_build(&["chat-node", "registry"])?;
    let mut topology = Topology::start(config)
        .await
        .context("starting the topology")?;
    println!(
        "Switchboard topology is up (logs in {}):",
        topology.log_dir().display()
    );
    if let Some(redis) = topology.redis_url() {
        println!("  redis          {redis}");
    }
    if let Some(ha) = &ha {
        let master = ha
            .master_port()
            .await
            .map(|p| format!("127.0.0.1:{p}"))
            .unwrap_or_else(|e| e.to_string());
        println!(
            "  redis master   {master} (password in a file named by the node flags; replicas 2)"
        );
        println!(
            "  sentinels      {}  master name switchboard",
            ha.sentinel_addrs().join(",")
        );
    }
    if let Some(secret) = topology.secret_file() {
        println!(
            "  auth           jwt (HS256 secret in {}; the web page signs in through /v1/dev-token)",
            secret.display()
        );
    }
    for i in 0..topology.registry_count() {
        let url = topology.registry_url(i);
        println!("  registry-{i}     {url}/  (web chat)  {url}/v1/assign  {url}/v1/nodes");
    }
    for i in 0..topology.node_count() {
        println!(
            "  {}         {}  http {}  (/healthz /readyz /metrics)",
            topology.node_id(i),
            topology.node_ws_url(i),
            topology.node_http_url(i)
        );
    }
    if topology.registry_count() == 0 {
        println!("  web chat       {}/", topology.assign_base());
    }
    println!("Ctrl-C (or SIGTERM) stops everything.");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    println!("stopping ...");
    topology.shutdown();
    Ok(())
}
