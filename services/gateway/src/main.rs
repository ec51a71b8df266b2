//! `ghost-gateway`: the viewer gateway binary.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    if let Some(code) = server::health::health_subcommand("GHOST_GATEWAY_LISTEN", "127.0.0.1:8080")
    {
        std::process::exit(code);
    }
    let config = gateway::Config::parse();
    tokio::runtime::Runtime::new()?.block_on(gateway::main(config))
}
