//! The Switchboard operator: `operator --help` lists every flag and its environment variable.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = operator::server::Args::parse();
    operator::server::run(args).await?;
    Ok(())
}
