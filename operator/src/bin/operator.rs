//! The Switchboard operator: `operator --help` lists every flag and its environment variable.

use std::process::ExitCode;

use clap::Parser;
use switchboard_runtime::report;

#[tokio::main]
async fn main() -> ExitCode {
    report::exit(
        "operator",
        operator::server::run(operator::server::Args::parse()).await,
    )
}
