//! `ghost-ingest`: the ingest gateway binary.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    if let Some(code) = ghost_common::cli::health_subcommand("GHOST_INGEST_OPS", "127.0.0.1:9101") {
        std::process::exit(code);
    }
    let config = ghost_ingest::Config::parse();
    tokio::runtime::Runtime::new()?.block_on(ghost_ingest::main(config))
}
