//! Wall-clock helpers. Capture times on the wire are Unix microseconds, so every hop on one
//! host (or on hosts with synchronised clocks) can measure delay against them.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    now_us() / 1_000
}
