//! One direction of the impaired path, without I/O and without a clock of its own: packets
//! come in through [`Path::handle_packet`] with the time they arrived, and leave through
//! [`Path::poll_release`] once [`Path::poll_timeout`] has passed. The forwarder drives it; the
//! unit tests drive it with made-up instants.
//!
//! A packet meets, in order: the bottleneck's queue (tail drop when full), the bottleneck
//! itself (serialisation at the rate cap), the loss model (a lost packet still used the
//! link's time, as on a real wire), then the propagation delay with its jitter.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::Impairment;

/// Queueing time the rate cap's queue holds before it drops at its tail: deep enough for
/// TCP to reach the cap, shallow enough that a flood cannot add seconds of delay.
const QUEUE_TIME: Duration = Duration::from_millis(100);

/// The smallest queue, in bytes, so that a low cap still takes a burst of full packets.
const MIN_QUEUE_BYTES: u64 = 16 * 1500;

/// Packets held in the delay line at most; only a flood through a path with no rate cap
/// reaches it, and it keeps that flood from taking all memory.
const MAX_IN_FLIGHT: usize = 65_536;

/// What became of a packet handed to [`Path::handle_packet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It will leave at the given instant.
    Queued(Instant),
    /// The loss model dropped it.
    Lost,
    /// The bottleneck's queue was full.
    Overflow,
}

/// The state of the two-state loss model.
#[derive(Debug, Clone)]
enum Loss {
    None,
    Random(f64),
    Burst {
        enter_bad: f64,
        leave_bad: f64,
        bad: bool,
    },
}

impl Loss {
    fn handle_packet(&mut self, rng: &mut impl Rng) -> bool {
        match self {
            Loss::None => false,
            Loss::Random(p) => rng.random_bool(*p),
            Loss::Burst {
                enter_bad,
                leave_bad,
                bad,
            } => {
                // The state moves first, then decides this packet: a burst's first packet is
                // the one that found the path gone bad.
                let flip = if *bad { *leave_bad } else { *enter_bad };
                if rng.random_bool(flip) {
                    *bad = !*bad;
                }
                *bad
            }
        }
    }
}

/// One direction of a lab's path.
#[derive(Debug)]
pub(crate) struct Path<P> {
    delay: Duration,
    /// Half-width of the uniform jitter added to `delay`.
    jitter: Duration,
    loss: Loss,
    rate_bps: Option<u64>,
    queue_bytes: u64,
    /// When the bottleneck has sent everything it was given; `None` or a past instant when it
    /// is idle.
    link_free: Option<Instant>,
    /// Packets in flight, in release order: release instants never decrease.
    in_flight: VecDeque<(Instant, P)>,
}

impl<P> Path<P> {
    /// A path applying `impairment`'s share to one direction.
    pub(crate) fn new(impairment: &Impairment) -> Self {
        let loss = match impairment.burst_transitions() {
            Some((enter_bad, leave_bad)) => Loss::Burst {
                enter_bad: enter_bad.clamp(0.0, 1.0),
                leave_bad: leave_bad.clamp(0.0, 1.0),
                bad: false,
            },
            None if impairment.loss_percent > 0.0 => {
                Loss::Random((impairment.loss_percent / 100.0).clamp(0.0, 1.0))
            }
            None => Loss::None,
        };
        let queue_bytes = impairment.rate_bps.map_or(0, |rate| {
            (u128::from(rate) * QUEUE_TIME.as_micros() / 8_000_000)
                .try_into()
                .unwrap_or(u64::MAX)
                .max(MIN_QUEUE_BYTES)
        });
        Path {
            delay: impairment.rtt / 2,
            jitter: impairment.jitter / 2,
            loss,
            rate_bps: impairment.rate_bps,
            queue_bytes,
            link_free: None,
            in_flight: VecDeque::new(),
        }
    }

    /// Takes a packet of `len` bytes that arrived at `now`.
    pub(crate) fn handle_packet(
        &mut self,
        now: Instant,
        len: usize,
        packet: P,
        rng: &mut impl Rng,
    ) -> Verdict {
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            return Verdict::Overflow;
        }
        let sent = match self.rate_bps {
            None => now,
            Some(rate) => {
                let start = self.link_free.filter(|free| *free > now).unwrap_or(now);
                // What the queue holds is the time the link still needs, at the cap.
                let backlog = start.duration_since(now);
                let backlog_bytes = u128::from(rate) * backlog.as_nanos() / 8_000_000_000;
                if backlog_bytes + len as u128 > u128::from(self.queue_bytes) {
                    return Verdict::Overflow;
                }
                let serialise =
                    Duration::from_nanos((len as u64 * 8_000_000_000).div_ceil(rate.max(1)));
                let done = start + serialise;
                self.link_free = Some(done);
                done
            }
        };
        if self.loss.handle_packet(rng) {
            return Verdict::Lost;
        }
        let mut release = sent + self.delay;
        if !self.jitter.is_zero() {
            let spread = self.jitter.as_nanos() as u64;
            let offset = rng.random_range(0..=2 * spread);
            // Uniform in ±jitter around the delay, never before the packet was sent.
            release = (release + Duration::from_nanos(offset))
                .checked_sub(self.jitter)
                .unwrap_or(sent)
                .max(sent);
        }
        // One direction is one FIFO: a packet does not overtake the one before it.
        if let Some((last, _)) = self.in_flight.back() {
            release = release.max(*last);
        }
        self.in_flight.push_back((release, packet));
        Verdict::Queued(release)
    }

    /// When the next packet is due to leave, if any is in flight.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.in_flight.front().map(|(at, _)| *at)
    }

    /// The next packet whose time has come by `now`.
    pub(crate) fn poll_release(&mut self, now: Instant) -> Option<P> {
        match self.in_flight.front() {
            Some((at, _)) if *at <= now => self.in_flight.pop_front().map(|(_, p)| p),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;

    fn path(text: &str) -> Path<u32> {
        Path::new(&text.parse().expect("valid impairment"))
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn delays_by_half_the_rtt() {
        let mut path = path("rtt=100ms");
        let mut rng = SmallRng::seed_from_u64(1);
        let t0 = Instant::now();
        assert_eq!(
            path.handle_packet(t0, 100, 7, &mut rng),
            Verdict::Queued(t0 + ms(50))
        );
        assert_eq!(path.poll_timeout(), Some(t0 + ms(50)));
        assert_eq!(path.poll_release(t0 + ms(49)), None);
        assert_eq!(path.poll_release(t0 + ms(50)), Some(7));
        assert_eq!(path.poll_timeout(), None);
    }

    #[test]
    fn jitter_stays_in_bounds_and_keeps_order() {
        let mut path = path("rtt=100ms,jitter=20ms");
        let mut rng = SmallRng::seed_from_u64(2);
        let t0 = Instant::now();
        let mut last = t0;
        let mut spread = (Duration::MAX, Duration::ZERO);
        for i in 0..2_000u32 {
            // Packets 20 ms apart: wider than the jitter, so order never needs enforcing.
            let now = t0 + ms(20) * i;
            let Verdict::Queued(at) = path.handle_packet(now, 100, i, &mut rng) else {
                panic!("no loss configured");
            };
            let delay = at - now;
            spread = (spread.0.min(delay), spread.1.max(delay));
            assert!(at >= last, "packet {i} overtook the one before");
            last = at;
        }
        assert!(spread.0 >= ms(40) && spread.0 < ms(41), "{spread:?}");
        assert!(spread.1 <= ms(60) && spread.1 > ms(59), "{spread:?}");
        let mut released = Vec::new();
        while let Some(p) = path.poll_release(last) {
            released.push(p);
        }
        assert!(released.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn random_loss_reaches_its_rate() {
        let mut path = path("loss=5%");
        let mut rng = SmallRng::seed_from_u64(3);
        let now = Instant::now();
        let lost = (0..100_000)
            .filter(|i| {
                let verdict = path.handle_packet(now, 100, *i, &mut rng);
                // Drained at once, so the delay line's bound never comes into play.
                while path.poll_release(now).is_some() {}
                verdict == Verdict::Lost
            })
            .count();
        assert!((4_700..5_300).contains(&lost), "{lost}");
    }

    /// Mean length of runs of consecutive losses, and the loss rate, over `n` packets.
    fn loss_runs(text: &str, n: u32) -> (f64, f64) {
        let mut path = path(text);
        let mut rng = SmallRng::seed_from_u64(4);
        let now = Instant::now();
        let (mut lost, mut runs, mut previous) = (0u32, 0u32, false);
        for i in 0..n {
            let is_lost = path.handle_packet(now, 100, i, &mut rng) == Verdict::Lost;
            while path.poll_release(now).is_some() {}
            lost += u32::from(is_lost);
            runs += u32::from(is_lost && !previous);
            previous = is_lost;
        }
        (
            f64::from(lost) / f64::from(runs),
            f64::from(lost) / f64::from(n),
        )
    }

    #[test]
    fn bursty_loss_has_long_runs_at_the_same_rate() {
        let (random_run, random_rate) = loss_runs("loss=5%", 400_000);
        let (burst_run, burst_rate) = loss_runs("loss=5%,burst=6", 400_000);
        assert!(random_run < 1.1, "{random_run}");
        assert!((5.5..6.5).contains(&burst_run), "{burst_run}");
        assert!((random_rate - 0.05).abs() < 0.003, "{random_rate}");
        assert!((burst_rate - 0.05).abs() < 0.005, "{burst_rate}");
    }

    #[test]
    fn rate_cap_serialises_packets() {
        // 8 Mbit/s: a 1000-byte packet takes 1 ms on the link.
        let mut path = path("rate=8mbit");
        let mut rng = SmallRng::seed_from_u64(5);
        let t0 = Instant::now();
        for i in 0..5u32 {
            assert_eq!(
                path.handle_packet(t0, 1000, i, &mut rng),
                Verdict::Queued(t0 + ms(1) * (i + 1))
            );
        }
        // After the link went idle, a packet leaves one serialisation after it came.
        assert_eq!(
            path.handle_packet(t0 + ms(10), 1000, 9, &mut rng),
            Verdict::Queued(t0 + ms(11))
        );
    }

    #[test]
    fn rate_cap_drops_at_the_tail_of_a_full_queue() {
        // 8 Mbit/s holds 100 ms of queue: 100 kB, so 100 packets of 1000 bytes.
        let mut path = path("rate=8mbit");
        let mut rng = SmallRng::seed_from_u64(6);
        let t0 = Instant::now();
        let verdicts: Vec<_> = (0..150u32)
            .map(|i| path.handle_packet(t0, 1000, i, &mut rng))
            .collect();
        let queued = verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::Queued(_)))
            .count();
        assert_eq!(queued, 100);
        assert!(verdicts[100..].iter().all(|v| *v == Verdict::Overflow));
        // Once the link has drained part of its queue, packets are taken again.
        assert!(matches!(
            path.handle_packet(t0 + ms(10), 1000, 200, &mut rng),
            Verdict::Queued(_)
        ));
    }

    #[test]
    fn rate_and_delay_add_up() {
        let mut path = path("rtt=40ms,rate=8mbit");
        let mut rng = SmallRng::seed_from_u64(7);
        let t0 = Instant::now();
        assert_eq!(
            path.handle_packet(t0, 1000, 1, &mut rng),
            Verdict::Queued(t0 + ms(21))
        );
    }
}
