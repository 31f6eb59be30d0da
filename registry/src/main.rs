//! The `registry` binary: parses flags and runs [`registry::run`].

use std::process::ExitCode;

use clap::Parser;
use switchboard_runtime::report;

#[tokio::main]
async fn main() -> ExitCode {
    report::exit("registry", registry::run(registry::Args::parse()).await)
}
