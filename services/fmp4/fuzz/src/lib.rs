//! The fmp4 crate's fuzz target. `reader::check` is its body: the cargo-fuzz binary in
//! `fuzz_targets/` calls it under libFuzzer (nightly flags), and the test below runs it on the
//! stable toolchain over the checked-in seeds and mutations of them, as part of the project's
//! test command.

pub mod reader;

// The same seeded mutator as the wire crate's targets.
#[path = "../../../wire/fuzz/src/stable.rs"]
pub mod stable;

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn reader_holds_on_seeds_and_mutations() {
        let seeds = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("seeds")
            .join("reader");
        crate::stable::run(
            "reader",
            &seeds,
            crate::stable::runs(20_000),
            crate::reader::check,
        );
    }
}
