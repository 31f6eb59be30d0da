//! The `registry` binary: parses flags and runs [`registry::run`].

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    registry::run(registry::Args::parse()).await
}
