//! The `chat-node` binary: parses flags and runs [`chat_node::run`].

use std::process::ExitCode;

use clap::Parser;
use switchboard_runtime::report;

/// jemalloc, configured in `.cargo/config.toml`: chosen by measurement over glibc's allocator for the
/// memory an idle node keeps per connection (docs/scale.md, "Allocator").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    report::exit("chat-node", chat_node::run(chat_node::Args::parse()).await)
}
