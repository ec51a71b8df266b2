//! The fuzz targets on the stable toolchain, with no fuzzing engine: every checked-in seed,
//! then a bounded number of inputs made from them by a seeded pseudo-random mutator (bit and
//! byte flips, truncation, insertion, duplication, splicing two seeds, interesting lengths),
//! plus plain random bytes. Deterministic for a given seed, so a failure reproduces; the
//! panic message names the input, which is also written out to be replayed.
//!
//! Not coverage-guided: it checks the properties on many inputs near real ones on every
//! test run; `cargo fuzz` (README.md) searches far deeper when a nightly compiler is at hand.

use std::path::{Path, PathBuf};

/// Inputs per target beyond the seeds: `GHOST_FUZZ_RUNS`, else `default`.
pub fn runs(default: u64) -> u64 {
    std::env::var("GHOST_FUZZ_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The files of a seed directory, sorted by name.
pub fn seeds(dir: &Path) -> Vec<Vec<u8>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    paths.sort();
    paths.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

/// xorshift64*: small, seeded, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Lengths and values that sit on the edges of the decoders' limits.
const INTERESTING: [u32; 10] = [
    0,
    1,
    0x7f,
    0xff,
    0xffff,
    0x0010_0000,
    0x0040_0000,
    0x0040_0001,
    0x7fff_ffff,
    0xffff_ffff,
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    if seeds.is_empty() || rng.below(16) == 0 {
        let len = rng.below(512);
        return (0..len).map(|_| rng.next() as u8).collect();
    }
    let mut data = seeds[rng.below(seeds.len())].clone();
    for _ in 0..=rng.below(4) {
        let at = rng.below(data.len() + 1);
        match rng.below(7) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = rng.next() as u8;
            }
            2 => data.truncate(at),
            3 => {
                let n = rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                data.splice(at..at, bytes);
            }
            4 if !data.is_empty() => {
                let from = rng.below(data.len());
                let to = (from + rng.below(64)).min(data.len());
                let piece = data[from..to].to_vec();
                data.splice(at..at, piece);
            }
            5 => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                data.truncate(at);
                data.extend_from_slice(&other[from..]);
            }
            _ if data.len() >= at + 4 => {
                let v = INTERESTING[rng.below(INTERESTING.len())].to_be_bytes();
                data[at..at + 4].copy_from_slice(&v);
            }
            _ => {}
        }
    }
    data
}

/// Runs `check` on every seed of `dir` and `runs` mutated inputs. A failing input is saved
/// under the system's temporary directory and named in the panic.
pub fn run(name: &str, dir: &Path, runs: u64, check: impl Fn(&[u8]) + std::panic::RefUnwindSafe) {
    let seeds = seeds(dir);
    assert!(!seeds.is_empty(), "{name}: no seeds in {}", dir.display());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
    let inputs = seeds
        .iter()
        .cloned()
        .chain((0..runs).map(|_| mutate(&mut rng, &seeds)));
    for (i, input) in inputs.enumerate() {
        let outcome = std::panic::catch_unwind(|| check(&input));
        if outcome.is_err() {
            let path = std::env::temp_dir().join(format!("fuzz-{name}-failure-{i}"));
            let _ = std::fs::write(&path, &input);
            panic!(
                "{name}: input {i} ({} bytes) broke a property; saved to {} (replay: cargo fuzz run {name} FILE)",
                input.len(),
                path.display()
            );
        }
    }
}
