//! What the lab's tests share: starting a lab or skipping where the machine cannot make one.

use netlab::{Error, Lab};

/// A lab with `impairment`, or `None` (with the reason printed) where the tests do not run as
/// root; CI, which sets `CI` and runs as root, fails instead of skipping.
pub fn lab(impairment: &str) -> Option<Lab> {
    match Lab::start(impairment.parse().expect("a valid impairment")) {
        Ok(lab) => Some(lab),
        Err(Error::NeedsRoot(why)) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs as root and needs the network lab: {why}"
            );
            eprintln!("skipped: the network lab needs root ({why})");
            None
        }
        Err(error) => panic!("cannot start the lab: {error:?}"),
    }
}
