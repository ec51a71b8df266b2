//! `ghost-control`: the control plane. Everything but the process entry lives in the library.

fn main() -> anyhow::Result<()> {
    Ok(server::binary::run(
        "GHOST_CONTROL_OPS",
        "127.0.0.1:9100",
        control::main,
    )?)
}
