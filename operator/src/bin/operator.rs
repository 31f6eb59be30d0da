//! The Switchboard operator: `operator --help` lists every flag and its environment variable.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let args = operator::server::Args::parse();
    match operator::server::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line that says what is wrong (each error already names its cause).
            eprintln!("operator: {err}");
            ExitCode::FAILURE
        }
    }
}
