//! The viewer's clock against the relay's, for delay figures that hold across machines.

use std::time::Duration;

/// How often the relay's clock is asked: three times in the first second, for an estimate
/// as soon as the picture starts, then now and then to follow a clock that drifts.
pub(super) fn ping_after(sent: u32) -> Duration {
    if sent < 3 {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(10)
    }
}

/// The viewer's clock against the relay's, from `Ping`/`Pong` exchanges: the offset of the
/// exchange with the shortest round trip, whose one-way times are closest to its half.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ClockOffset {
    best: Option<(u64, i64)>,
}

impl ClockOffset {
    /// One answer: the ping left at `sent_us` and came back at `received_us` (viewer's
    /// clock) carrying the relay's `relay_us`.
    pub fn sample(&mut self, sent_us: u64, relay_us: u64, received_us: u64) {
        let Some(rtt) = received_us.checked_sub(sent_us) else {
            return;
        };
        let midpoint = i128::from(sent_us) + i128::from(rtt / 2);
        let offset = i64::try_from(i128::from(relay_us) - midpoint).unwrap_or(0);
        if self.best.is_none_or(|(best, _)| rtt <= best) {
            self.best = Some((rtt, offset));
        }
    }

    /// Microseconds to add to the viewer's clock to read the relay's; 0 before any answer.
    pub fn us(&self) -> i64 {
        self.best.map_or(0, |(_, offset)| offset)
    }

    /// The estimate, if any answer came.
    pub fn ms(&self) -> Option<f64> {
        self.best.map(|(_, offset)| offset as f64 / 1e3)
    }
}
