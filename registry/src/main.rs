//! The `registry` binary: parses flags and runs [`registry::run`].

use clap::Parser;

#[tokio::main]
async fn main() {
    if let Err(error) = registry::run(registry::Args::parse()).await {
        // One line with the whole cause chain, e.g. "Redis rejected the password (...): wrong password: ..."
        eprintln!("registry: {error:#}");
        std::process::exit(1);
    }
}
