//! cargo-fuzz entry point; the checks live in `src/message.rs`, where the test command also runs
//! them on the stable toolchain (see README.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz::message::check(data));
