//! `ghost-relay`: a relay. Everything but the process entry lives in the library.

fn main() -> anyhow::Result<()> {
    Ok(server::binary::run(
        "GHOST_RELAY_OPS",
        "127.0.0.1:9200",
        relay::main,
    )?)
}
