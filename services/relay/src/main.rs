//! `ghost-relay`: the relay binary.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    if let Some(code) = server::health::health_subcommand("GHOST_RELAY_OPS", "127.0.0.1:9200") {
        std::process::exit(code);
    }
    let config = relay::Config::parse();
    tokio::runtime::Runtime::new()?.block_on(relay::main(config))
}
