//! A viewer's frame timing as a load test reads it, beyond what `ghost watch` summarises:
//! every measured delay (so that percentiles over many viewers are exact, not averages of
//! each one's), frames that came too late to be shown live, and the time the picture froze.
//!
//! It does no I/O and reads no clock: the viewer hands in each frame's arrival instant and
//! delay, and the instant it stopped, so the rules are unit-tested with made-up instants.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// A frame later than this (capture to arrival) is late: a live player with a usual
/// buffer would have skipped it or frozen waiting for it.
pub const LATE: Duration = Duration::from_millis(250);

/// A wait for the next frame longer than this many frame intervals is a stall.
const STALL_INTERVALS: u32 = 2;

/// One viewer's frame timing over the measured time.
///
/// A *stall* is a wait for the next frame longer than two frame intervals; its stall time is
/// the wait less one interval (the time a frame is shown anyway), so a steady stream stalls
/// for zero and a picture frozen for a second at 30 fps stalls for about 0.97 s. The wait
/// from the measurement start to the first frame, and from the last frame to the end, count
/// as waits too: a viewer that got nothing stalled the whole time.
#[derive(Debug, Clone)]
pub struct Timing {
    interval: Duration,
    from: Instant,
    last: Option<Instant>,
    end: Option<Instant>,
    delays_us: Histogram<u64>,
    late: u64,
    stalled: Duration,
    stalls: u64,
}

impl Timing {
    /// Timing of a stream with `interval` between frames, measured from `from` on.
    pub fn new(interval: Duration, from: Instant) -> Self {
        Timing {
            interval,
            from,
            last: None,
            end: None,
            // Bounds of one microsecond to an hour, three significant digits: the ranges of
            // `ghost watch`'s own histogram, so the two read alike.
            delays_us: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant histogram bounds are valid"),
            late: 0,
            stalled: Duration::ZERO,
            stalls: 0,
        }
    }

    /// A frame arrived at `at`, `delay` after its capture (`None` when the delay cannot be
    /// told yet, or the frame is one of the join's catch-up frames, which are old by design).
    pub fn handle_frame(&mut self, at: Instant, delay: Option<Duration>) {
        if at < self.from {
            self.last = Some(at);
            return;
        }
        self.handle_gap(at);
        self.last = Some(at);
        if let Some(delay) = delay {
            let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX).max(1);
            // Out of the histogram's range (over an hour) is no delay a viewer measures.
            let _ = self.delays_us.record(us);
            if delay > LATE {
                self.late += 1;
            }
        }
    }

    /// The viewer stopped watching at `at`: the wait since its last frame counts too.
    pub fn handle_end(&mut self, at: Instant) {
        if at <= self.from || self.end.is_some() {
            return;
        }
        self.handle_gap(at);
        self.end = Some(at);
    }

    fn handle_gap(&mut self, at: Instant) {
        let since = self.last.map_or(self.from, |last| last.max(self.from));
        let gap = at.saturating_duration_since(since);
        if gap > self.interval * STALL_INTERVALS {
            self.stalled += gap - self.interval;
            self.stalls += 1;
        }
    }

    /// Measured delays, microseconds.
    pub fn delays_us(&self) -> &Histogram<u64> {
        &self.delays_us
    }

    /// Frames later than [`LATE`].
    pub fn late_frames(&self) -> u64 {
        self.late
    }

    /// Time the picture froze, over all stalls.
    pub fn stalled(&self) -> Duration {
        self.stalled
    }

    /// How many stalls there were.
    pub fn stalls(&self) -> u64 {
        self.stalls
    }

    /// Time watched from the measurement start to the end (zero before [`Self::handle_end`]).
    pub fn watched(&self) -> Duration {
        self.end.map_or(Duration::ZERO, |end| {
            end.saturating_duration_since(self.from)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_steady_stream_never_stalls() {
        let t0 = Instant::now();
        let mut timing = Timing::new(ms(33), t0);
        for i in 0..300u32 {
            timing.handle_frame(t0 + ms(33) * i, Some(ms(40)));
        }
        timing.handle_end(t0 + ms(33) * 300);
        assert_eq!((timing.stalls(), timing.stalled()), (0, Duration::ZERO));
        assert_eq!(timing.late_frames(), 0);
        assert_eq!(timing.watched(), ms(9900));
        assert_eq!(timing.delays_us().len(), 300);
    }

    #[test]
    fn a_frozen_second_is_one_stall_less_an_interval() {
        let t0 = Instant::now();
        let mut timing = Timing::new(ms(33), t0);
        timing.handle_frame(t0 + ms(10), Some(ms(40)));
        timing.handle_frame(t0 + ms(1010), Some(ms(300)));
        // Two intervals exactly is no stall yet.
        timing.handle_frame(t0 + ms(1076), Some(ms(40)));
        timing.handle_end(t0 + ms(1100));
        assert_eq!(timing.stalls(), 1);
        assert_eq!(timing.stalled(), ms(1000 - 33));
        assert_eq!(timing.late_frames(), 1);
    }

    #[test]
    fn frames_before_the_measurement_count_for_nothing() {
        let t0 = Instant::now();
        let from = t0 + ms(1000);
        let mut timing = Timing::new(ms(33), from);
        timing.handle_frame(t0, Some(ms(900)));
        // The wait across the measurement start counts from the start only.
        timing.handle_frame(from + ms(100), None);
        timing.handle_end(from + ms(110));
        assert_eq!(timing.late_frames(), 0);
        assert_eq!(timing.delays_us().len(), 0);
        assert_eq!(timing.stalled(), ms(100 - 33));
    }

    #[test]
    fn a_viewer_that_got_nothing_stalled_throughout() {
        let t0 = Instant::now();
        let mut timing = Timing::new(ms(33), t0);
        timing.handle_end(t0 + ms(5000));
        timing.handle_end(t0 + ms(9000));
        assert_eq!(timing.stalled(), ms(5000 - 33));
        assert_eq!(timing.watched(), ms(5000));
    }
}
