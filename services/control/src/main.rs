//! `ghost-control`: the control plane binary.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    if let Some(code) = server::health::health_subcommand("GHOST_CONTROL_OPS", "127.0.0.1:9100") {
        std::process::exit(code);
    }
    let config = control::Config::parse();
    tokio::runtime::Runtime::new()?.block_on(control::main(config))
}
