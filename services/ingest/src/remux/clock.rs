//! RTMP timestamps to decode times.
//!
//! RTMP stamps every message with a 32-bit millisecond count that wraps after 49.7 days and
//! that nothing stops from stepping backwards. Each track keeps its own clock: the timestamp
//! is unwrapped by taking the difference from the previous one as a wrapping signed 32-bit
//! value, then turned into the track's timescale. Decode times never go backwards: a
//! timestamp a little behind the previous one is written one tick after it, and one more
//! than a second behind (a publisher's clock reset) shifts the rest of the track so that it
//! continues where it was.
//!
//! Video keeps the millisecond timestamps (in 90 kHz ticks). Audio counts samples: frames
//! that follow each other within a frame's length of their timestamps are written back to
//! back, so decode times stay exact even though RTMP rounds each to the millisecond; a larger
//! difference (a gap, a drift) re-syncs to the timestamp.

/// Ticks per second of the video track.
pub(super) const VIDEO_TIMESCALE: u32 = 90_000;
/// Duration of a stream's first video frame, before any difference is known: 1/30 s.
const FIRST_VIDEO_DURATION: u32 = VIDEO_TIMESCALE / 30;
/// Longest duration written for a video frame, so that a pause in the publisher's clock does
/// not stretch the frame before it over the whole pause.
const MAX_VIDEO_DURATION: u32 = VIDEO_TIMESCALE;

/// Unwraps RTMP's 32-bit millisecond timestamps.
#[derive(Debug, Clone, Copy, Default)]
struct Unwrap {
    /// The previous timestamp as received and unwrapped.
    last: Option<(u32, i64)>,
}

impl Unwrap {
    fn next(&mut self, timestamp: u32) -> i64 {
        let unwrapped = match self.last {
            None => i64::from(timestamp),
            Some((raw, unwrapped)) => {
                // The difference as a wrapping i32: a wrap past u32::MAX is a small step
                // forwards, a step of more than 2^31 ms is a step backwards.
                let step = timestamp.wrapping_sub(raw) as i32;
                unwrapped.saturating_add(i64::from(step))
            }
        };
        self.last = Some((timestamp, unwrapped));
        unwrapped
    }
}

/// Decode time, duration and composition offset of one sample, in the track's timescale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Timing {
    pub(super) decode_time: u64,
    pub(super) duration: u32,
    pub(super) composition_offset: i32,
}

/// The video track's clock.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct VideoClock {
    unwrap: Unwrap,
    /// Added to every unwrapped time (in ticks) after a step backwards.
    shift: i64,
    /// Decode time and duration of the previous frame.
    last: Option<(i64, u32)>,
}

impl VideoClock {
    /// The timing of the frame stamped `timestamp` ms whose composition time is
    /// `composition_ms` after its decode time.
    pub(super) fn next(&mut self, timestamp: u32, composition_ms: i32) -> Timing {
        let ticks_per_ms = i64::from(VIDEO_TIMESCALE / 1000);
        let mut time = self
            .unwrap
            .next(timestamp)
            .saturating_mul(ticks_per_ms)
            .saturating_add(self.shift);
        let (decode_time, duration) = match self.last {
            None => {
                if time < 0 {
                    self.shift = self.shift.saturating_sub(time);
                    time = 0;
                }
                (time, FIRST_VIDEO_DURATION)
            }
            Some((last, last_duration)) => {
                let decode_time = if time > last {
                    time
                } else if last.saturating_sub(time) > i64::from(VIDEO_TIMESCALE) {
                    let resume = last.saturating_add(i64::from(last_duration));
                    self.shift = self.shift.saturating_add(resume.saturating_sub(time));
                    time = resume;
                    resume
                } else {
                    last.saturating_add(1)
                };
                let step = decode_time.saturating_sub(last);
                let duration = u32::try_from(step)
                    .map_or(MAX_VIDEO_DURATION, |step| step.clamp(1, MAX_VIDEO_DURATION));
                (decode_time, duration)
            }
        };
        self.last = Some((decode_time, duration));
        // The presentation time stays where the timestamp put it, also when the decode time
        // had to move a tick or two.
        let composition = i64::from(composition_ms)
            .saturating_mul(ticks_per_ms)
            .saturating_add(time.saturating_sub(decode_time));
        Timing {
            decode_time: u64::try_from(decode_time).unwrap_or(0),
            duration,
            composition_offset: saturate_i32(composition),
        }
    }
}

/// The audio track's clock, counting samples at the sample rate.
#[derive(Debug, Clone, Copy)]
pub(super) struct AudioClock {
    rate: u32,
    unwrap: Unwrap,
    /// Added to every unwrapped time (in samples) after a step backwards.
    shift: i64,
    /// Decode time of the previous frame and where it ends.
    last: Option<(i64, i64)>,
}

impl AudioClock {
    /// A clock for a track of `rate` samples per second.
    pub(super) fn new(rate: u32) -> Self {
        Self {
            rate,
            unwrap: Unwrap::default(),
            shift: 0,
            last: None,
        }
    }

    /// The sample rate this clock counts.
    pub(super) fn rate(&self) -> u32 {
        self.rate
    }

    /// The timing of the frame of `samples` samples stamped `timestamp` ms.
    pub(super) fn next(&mut self, timestamp: u32, samples: u32) -> Timing {
        let ms = i128::from(self.unwrap.next(timestamp));
        let time = i64::try_from(ms * i128::from(self.rate) / 1000)
            .unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX })
            .saturating_add(self.shift);
        let frame = i64::from(samples);
        let decode_time = match self.last {
            None => {
                if time < 0 {
                    self.shift = self.shift.saturating_sub(time);
                }
                time.max(0)
            }
            Some((last, end)) => {
                let drift = time.saturating_sub(end);
                if drift.unsigned_abs() <= u64::from(samples) {
                    end
                } else if drift > 0 {
                    time
                } else if drift < -i64::from(self.rate) {
                    self.shift = self.shift.saturating_sub(drift);
                    end
                } else {
                    time.max(last.saturating_add(1))
                }
            }
        };
        self.last = Some((decode_time, decode_time.saturating_add(frame)));
        Timing {
            decode_time: u64::try_from(decode_time).unwrap_or(0),
            duration: samples,
            composition_offset: 0,
        }
    }
}

/// Microseconds of `ticks` at `timescale` ticks per second.
pub(super) fn micros(ticks: u64, timescale: u32) -> u64 {
    let micros = u128::from(ticks) * 1_000_000 / u128::from(timescale.max(1));
    u64::try_from(micros).unwrap_or(u64::MAX)
}

fn saturate_i32(value: i64) -> i32 {
    i32::try_from(value).unwrap_or(if value < 0 { i32::MIN } else { i32::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(clock: &mut VideoClock, timestamp: u32, composition_ms: i32) -> (u64, u32, i32) {
        let t = clock.next(timestamp, composition_ms);
        (t.decode_time, t.duration, t.composition_offset)
    }

    #[test]
    fn video_ticks_durations_and_offsets() {
        let mut clock = VideoClock::default();
        assert_eq!(video(&mut clock, 1000, 66), (90_000, 3000, 5940));
        // 33 ms later: the duration is that step; a B-frame's negative offset stays.
        assert_eq!(video(&mut clock, 1033, -33), (92_970, 2970, -2970));
        assert_eq!(video(&mut clock, 1067, 0), (96_030, 3060, 0));
    }

    #[test]
    fn video_timestamps_unwrap_past_u32() {
        let mut clock = VideoClock::default();
        let start = u32::MAX - 20;
        let first = video(&mut clock, start, 0).0;
        // 40 ms later, the timestamp has wrapped to 19.
        let (second, duration, _) = video(&mut clock, 19, 0);
        assert_eq!(second - first, 40 * 90);
        assert_eq!(duration, 40 * 90);
        assert!(second > u64::from(u32::MAX));
    }

    #[test]
    fn video_never_goes_backwards() {
        let mut clock = VideoClock::default();
        video(&mut clock, 1000, 0);
        // 5 ms behind: one tick later, the presentation time kept (offset 90 x 25 - 450 - 1).
        let (dts, duration, offset) = video(&mut clock, 995, 25);
        assert_eq!((dts, duration), (90_001, 1));
        assert_eq!(
            u64::try_from(i64::from(offset)).expect("positive") + dts,
            995 * 90 + 25 * 90
        );
        // A reset to 0: the track continues right after, then follows the new timestamps.
        let (dts, _, _) = video(&mut clock, 0, 0);
        assert_eq!(dts, 90_002);
        let (next, duration, _) = video(&mut clock, 40, 0);
        assert_eq!((next - dts, duration), (40 * 90, 40 * 90));
    }

    #[test]
    fn video_duration_is_bounded() {
        let mut clock = VideoClock::default();
        video(&mut clock, 0, 0);
        let (dts, duration, _) = video(&mut clock, 60_000, 0);
        assert_eq!((dts, duration), (60_000 * 90, MAX_VIDEO_DURATION));
    }

    #[test]
    fn audio_stays_sample_exact_within_a_frame() {
        let mut clock = AudioClock::new(44_100);
        let mut times = Vec::new();
        // AAC frames of 1024 samples are 23.22 ms: RTMP rounds them to 23 or 24.
        for timestamp in [0, 23, 46, 70, 93] {
            times.push(clock.next(timestamp, 1024).decode_time);
        }
        assert_eq!(times, [0, 1024, 2048, 3072, 4096]);
        // A 500 ms gap re-syncs to the timestamp.
        let t = clock.next(616, 1024);
        assert_eq!(t.decode_time, 616 * 44_100 / 1000);
        assert_eq!(t.duration, 1024);
    }

    #[test]
    fn audio_steps_backwards() {
        let mut clock = AudioClock::new(48_000);
        clock.next(1000, 960);
        clock.next(1020, 960);
        // 100 ms behind: resyncs, but after the previous frame's start.
        let t = clock.next(940, 960);
        assert_eq!(t.decode_time, 48_960 + 1);
        // A reset by 10 s: continues where it was.
        let t = clock.next(0, 960);
        assert_eq!(t.decode_time, 48_961 + 960);
        assert_eq!(clock.next(20, 960).decode_time, 48_961 + 1920);
    }

    #[test]
    fn microseconds() {
        assert_eq!(micros(90_000, VIDEO_TIMESCALE), 1_000_000);
        assert_eq!(micros(1024, 44_100), 23_219);
        assert_eq!(micros(u64::MAX, 1), u64::MAX);
    }
}
