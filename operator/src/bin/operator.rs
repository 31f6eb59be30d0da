//! The Switchboard operator: `operator --help` lists every flag and its environment variable.

use std::process::ExitCode;

use clap::Parser;
use switchboard_runtime::report;

#[tokio::main]
async fn main() -> ExitCode {
    let args = operator::server::Args::parse();
    match operator::server::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: what failed, then each cause once.
            eprintln!("operator: {}", report::chain(&err));
            ExitCode::FAILURE
        }
    }
}
