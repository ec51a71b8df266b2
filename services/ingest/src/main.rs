//! `ghost-ingest`: the ingest gateway. Everything but the process entry lives in the library.

fn main() -> anyhow::Result<()> {
    Ok(server::binary::run(
        "GHOST_INGEST_OPS",
        "127.0.0.1:9101",
        ingest::main,
    )?)
}
