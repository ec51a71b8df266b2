//! `ghost-control`: the control plane binary.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    if let Some(code) = ghost_common::cli::health_subcommand("GHOST_CONTROL_OPS", "127.0.0.1:9100")
    {
        std::process::exit(code);
    }
    let config = ghost_control::Config::parse();
    tokio::runtime::Runtime::new()?.block_on(ghost_control::main(config))
}
