//! Who may take a seat: the relay's capacity, shared by every carrier, its drain switch, and
//! the join tickets already used (each seats one viewer).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wire::Code;

/// Why a viewer could not join: the close code it gets, and why, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) code: Code,
    pub(crate) reason: String,
}

pub(crate) fn refusal(code: Code, reason: &str) -> Refusal {
    Refusal {
        code,
        reason: reason.to_string(),
    }
}

/// The relay's seats: at most `capacity` viewers at once, over QUIC, WebTransport and
/// WebSocket together; none once draining.
#[derive(Debug)]
pub(crate) struct Seats {
    capacity: u32,
    /// False once draining: viewers stay, new ones are refused and control stops placing.
    accepting: AtomicBool,
    free: Arc<Semaphore>,
}

impl Seats {
    pub(crate) fn new(capacity: u32) -> Seats {
        Seats {
            capacity,
            accepting: AtomicBool::new(true),
            free: Arc::new(Semaphore::new(capacity as usize)),
        }
    }

    pub(crate) fn capacity(&self) -> u32 {
        self.capacity
    }

    pub(crate) fn accepting(&self) -> bool {
        self.accepting.load(Ordering::Relaxed)
    }

    /// No new viewers from now on; those seated stay.
    pub(crate) fn drain(&self) {
        self.accepting.store(false, Ordering::Relaxed);
    }

    /// A seat for one more viewer, held while it is served.
    pub(crate) fn admit(&self) -> Result<OwnedSemaphorePermit, Refusal> {
        if !self.accepting() {
            return Err(refusal(
                Code::Capacity,
                "relay draining: join again for another relay",
            ));
        }
        self.free.clone().try_acquire_owned().map_err(|_| {
            refusal(
                Code::Capacity,
                &format!("relay at capacity ({} viewers)", self.capacity),
            )
        })
    }
}

/// Tickets already taken, until they expire: each one seats a single viewer.
#[derive(Debug, Default)]
pub(crate) struct UsedTickets {
    seen: Mutex<(HashSet<wire::ticket::Verified>, usize)>,
}

impl UsedTickets {
    /// Marks `ticket` used; false when it already was. Forgets expired ones when the set has
    /// doubled since the last sweep, so it holds about the tickets of one ticket lifetime at
    /// an amortised constant cost per join.
    pub(crate) fn take(&self, ticket: wire::ticket::Verified, now_ms: u64) -> bool {
        let mut guard = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let (seen, sweep_at) = &mut *guard;
        if seen.len() >= (*sweep_at).max(1024) {
            seen.retain(|t| t.expires_ms >= now_ms);
            *sweep_at = seen.len() * 2;
        }
        seen.insert(ticket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(nonce: u64, expires_ms: u64) -> wire::ticket::Verified {
        wire::ticket::Verified { expires_ms, nonce }
    }

    #[test]
    fn seats_run_out_at_capacity_and_come_back() {
        let seats = Seats::new(2);
        let one = seats.admit().expect("first");
        let _two = seats.admit().expect("second");
        let full = seats.admit().expect_err("third");
        assert_eq!(full.code, Code::Capacity);
        assert!(full.reason.contains("at capacity (2 viewers)"), "{full:?}");
        drop(one);
        assert!(seats.admit().is_ok(), "a seat given back is taken again");
    }

    #[test]
    fn a_draining_relay_seats_nobody_and_keeps_its_viewers() {
        let seats = Seats::new(5);
        let seated = seats.admit().expect("seated");
        seats.drain();
        assert!(!seats.accepting());
        let refused = seats.admit().expect_err("draining");
        assert_eq!(refused.code, Code::Capacity);
        assert!(refused.reason.contains("draining"), "{refused:?}");
        drop(seated);
        assert!(seats.admit().is_err(), "still draining after a viewer left");
    }

    #[test]
    fn a_capacity_of_zero_seats_nobody() {
        assert!(Seats::new(0).admit().is_err());
    }

    #[test]
    fn a_ticket_seats_once() {
        let used = UsedTickets::default();
        assert!(used.take(ticket(1, 10_000), 0));
        assert!(!used.take(ticket(1, 10_000), 5), "the same ticket again");
        assert!(used.take(ticket(2, 10_000), 5), "another ticket");
    }

    #[test]
    fn expired_tickets_are_forgotten_and_the_set_stays_bounded() {
        let used = UsedTickets::default();
        for n in 0..2000u64 {
            assert!(used.take(ticket(n, n), n), "ticket {n}");
        }
        let held = used.seen.lock().map(|g| g.0.len()).unwrap_or(usize::MAX);
        assert!(held < 2000, "expired tickets kept: {held}");
    }
}
