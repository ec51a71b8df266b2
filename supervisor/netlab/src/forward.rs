//! The forwarder: moves packets between the lab's two TUN devices through one [`Path`] per
//! direction, sleeping until the next packet is due or the next one arrives.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::SmallRng;
use tun_rs::AsyncDevice;

use crate::Impairment;
use crate::path::{Path, Verdict};

/// Largest packet a TUN device hands over; the devices' MTU is far below it.
const MAX_PACKET: usize = 65_536;

/// Half of tokio's timer tick. Its timer rounds every deadline up to the next millisecond, so
/// waiting for a packet's exact due time would add half a millisecond on average to each
/// direction (and a millisecond at worst). Waking half a tick early and sending what is due
/// within half a tick centres the error: packets leave within about ±0.5 ms of their time.
const HALF_TICK: Duration = Duration::from_micros(500);

/// What one direction of the path did with the packets it was given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// IPv4 packets taken in (other packets, such as the kernel's IPv6 chatter, are ignored).
    pub received: u64,
    /// Packets handed on to the other side.
    pub delivered: u64,
    /// Bytes of the delivered packets, IP headers included.
    pub delivered_bytes: u64,
    /// Packets the loss model dropped.
    pub lost: u64,
    /// Packets dropped at the tail of the rate cap's full queue.
    pub overflowed: u64,
    /// Packets the other side's device refused.
    pub unsent: u64,
}

/// Counts of both directions; what is neither delivered nor dropped is still in flight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// From the viewers to the stack.
    pub to_stack: DirectionStats,
    /// From the stack to the viewers.
    pub to_viewers: DirectionStats,
}

/// Live counters of one direction, written by the forwarder and read by [`crate::Lab::stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    received: AtomicU64,
    delivered: AtomicU64,
    delivered_bytes: AtomicU64,
    lost: AtomicU64,
    overflowed: AtomicU64,
    unsent: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> DirectionStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        DirectionStats {
            received: read(&self.received),
            delivered: read(&self.delivered),
            delivered_bytes: read(&self.delivered_bytes),
            lost: read(&self.lost),
            overflowed: read(&self.overflowed),
            unsent: read(&self.unsent),
        }
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Both directions' counters, shared between the forwarder and the [`crate::Lab`].
#[derive(Debug, Default)]
pub(crate) struct SharedStats {
    pub(crate) to_stack: Counters,
    pub(crate) to_viewers: Counters,
}

/// Forwards between the viewers' device and the stack's until a device fails; the lab ends
/// it by dropping the future.
pub(crate) async fn run(
    viewers: &AsyncDevice,
    stack: &AsyncDevice,
    impairment: &Impairment,
    stats: &SharedStats,
) -> io::Result<()> {
    tokio::try_join!(
        direction(viewers, stack, Path::new(impairment), &stats.to_stack),
        direction(stack, viewers, Path::new(impairment), &stats.to_viewers),
    )?;
    Ok(())
}

async fn direction(
    from: &AsyncDevice,
    to: &AsyncDevice,
    mut path: Path<Vec<u8>>,
    counters: &Counters,
) -> io::Result<()> {
    let mut rng = SmallRng::from_os_rng();
    let mut buffer = vec![0u8; MAX_PACKET];
    loop {
        // What is due goes first, without a timer when it is due already: an unimpaired
        // path then adds no timer tick at all.
        let now = Instant::now() + HALF_TICK;
        while let Some(packet) = path.poll_release(now) {
            match to.send(&packet).await {
                Ok(_) => {
                    Counters::add(&counters.delivered, 1);
                    Counters::add(&counters.delivered_bytes, packet.len() as u64);
                }
                // A packet the kernel refuses (say, while a device goes down) is one lost
                // packet, not the end of the lab.
                Err(error) => {
                    tracing::debug!(%error, "a TUN device refused a packet");
                    Counters::add(&counters.unsent, 1);
                }
            }
        }
        let due = path
            .poll_timeout()
            .map(|at| tokio::time::Instant::from_std(at.checked_sub(HALF_TICK).unwrap_or(at)));
        tokio::select! {
            received = from.recv(&mut buffer) => {
                let len = received?;
                let packet = &buffer[..len];
                // The version nibble: the lab routes IPv4 only.
                if packet.first().is_none_or(|first| first >> 4 != 4) {
                    continue;
                }
                Counters::add(&counters.received, 1);
                match path.handle_packet(Instant::now(), len, packet.to_vec(), &mut rng) {
                    Verdict::Queued(_) => {}
                    Verdict::Lost => Counters::add(&counters.lost, 1),
                    Verdict::Overflow => Counters::add(&counters.overflowed, 1),
                }
            }
            () = sleep_until(due) => {}
        }
    }
}

async fn sleep_until(due: Option<tokio::time::Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
