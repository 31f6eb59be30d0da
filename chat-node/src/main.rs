//! The `chat-node` binary: parses flags and runs [`chat_node::run`].

use clap::Parser;

#[tokio::main]
async fn main() {
    if let Err(error) = chat_node::run(chat_node::Args::parse()).await {
        // One line with the whole cause chain, e.g. "cannot listen on 127.0.0.1:80: Permission denied".
        eprintln!("chat-node: {error:#}");
        std::process::exit(1);
    }
}
