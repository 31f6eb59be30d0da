//! The `chat-node` binary: parses flags and runs [`chat_node::run`].

use std::process::ExitCode;

use clap::Parser;
use switchboard_runtime::report;

#[tokio::main]
async fn main() -> ExitCode {
    report::exit("chat-node", chat_node::run(chat_node::Args::parse()).await)
}
