//! `ghost-ingest`: the ingest gateway binary.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    if let Some(code) = server::health::health_subcommand("GHOST_INGEST_OPS", "127.0.0.1:9101") {
        std::process::exit(code);
    }
    let config = ingest::Config::parse();
    tokio::runtime::Runtime::new()?.block_on(ingest::main(config))
}
