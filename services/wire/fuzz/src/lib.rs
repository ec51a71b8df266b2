//! The wire crate's fuzz targets. Each module's `check` is one target's body: the cargo-fuzz
//! binaries in `fuzz_targets/` call it under libFuzzer (nightly flags), and the tests below
//! run it on the stable toolchain over the checked-in seeds and mutations of them, as part of
//! the project's test command.

pub mod group;
pub mod message;
pub mod stable;
pub mod ticket;

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn seeds(target: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("seeds")
            .join(target)
    }

    #[test]
    fn message_holds_on_seeds_and_mutations() {
        crate::stable::run(
            "message",
            &seeds("message"),
            crate::stable::runs(20_000),
            crate::message::check,
        );
    }

    #[test]
    fn group_holds_on_seeds_and_mutations() {
        crate::stable::run(
            "group",
            &seeds("group"),
            crate::stable::runs(20_000),
            crate::group::check,
        );
    }

    #[test]
    fn ticket_holds_on_seeds_and_mutations() {
        crate::stable::run(
            "ticket",
            &seeds("ticket"),
            crate::stable::runs(20_000),
            crate::ticket::check,
        );
    }
}
