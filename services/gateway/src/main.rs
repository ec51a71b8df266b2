//! `ghost-gateway`: the viewer gateway. Everything but the process entry lives in the library.

fn main() -> anyhow::Result<()> {
    Ok(server::binary::run(
        "GHOST_GATEWAY_LISTEN",
        "127.0.0.1:8080",
        gateway::main,
    )?)
}
