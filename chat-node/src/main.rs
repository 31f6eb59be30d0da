use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    chat_node::run(chat_node::Args::parse()).await
}
