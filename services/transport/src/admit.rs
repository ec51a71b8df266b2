//! Who may open a QUIC connection to a server: a cap on the connections one source holds
//! at once, and address validation (a QUIC Retry) once handshakes pile up.
//!
//! A source is a client address, an IPv6 one counted by its /64 (the block one host or home
//! network gets). A source at its cap is refused (`CONNECTION_REFUSED`) only once its address
//! is validated: until then it is sent a Retry, so a flood of Initial packets with a
//! victim's address as source cannot use up that victim's connections. Past
//! [`Limits::retry_above`] handshakes in flight, every unvalidated Initial gets a Retry:
//! a client that really is at its address answers it one round trip later, a spoofed
//! source never does and costs the server one small packet and no connection state.
//!
//! Loopback and the [`Limits::local`] addresses (where the host's own connections come from
//! through Docker's port proxy) are the operator's own and exempt, unless
//! [`Limits::limit_loopback`]. Which addresses are the host's, and how a source is counted,
//! are [`identity::peer`]'s rules, which the viewer gateway's HTTP limits follow too.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use identity::peer::{LocalSource, from_host, source_key};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// What a server allows each source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections (open or in their handshake) one source may hold at once.
    pub per_source: u32,
    /// Handshakes in flight past which unvalidated clients must answer a Retry first.
    /// Zero asks every client for one.
    pub retry_above: u32,
    /// Addresses the host's own connections arrive from, exempt like loopback.
    pub local: Vec<IpAddr>,
    /// Apply the limits to loopback and [`Limits::local`] too.
    pub limit_loopback: bool,
}

impl Limits {
    /// Connections one source may hold by default: a household or an office behind one
    /// address watching many streams, with room to spare, while one machine cannot hold a
    /// relay's every connection.
    pub const PER_SOURCE: u32 = 100;
    /// Handshakes in flight before Retry by default: a join burst of a full relay passes
    /// without an extra round trip, a flood does not.
    pub const RETRY_ABOVE: u32 = 64;

    fn exempt(&self, source: IpAddr) -> bool {
        !self.limit_loopback && from_host(source, &self.local)
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            per_source: Limits::PER_SOURCE,
            retry_above: Limits::RETRY_ABOVE,
            local: Vec::new(),
            limit_loopback: false,
        }
    }
}

/// Per-source limits on QUIC connections, for the QUIC servers (ingest and relays).
#[derive(Debug, Clone, clap::Args)]
pub struct QuicLimits {
    /// QUIC connections one client address (an IPv6 /64) may hold at once; past it, new
    /// ones are refused.
    #[arg(long, env = "GHOST_QUIC_PER_SOURCE", default_value_t = Limits::PER_SOURCE)]
    pub quic_per_source: u32,
    /// Handshakes in flight past which a client must answer a QUIC Retry (prove its
    /// address) before its connection is set up; 0 asks it of every client.
    #[arg(long, env = "GHOST_QUIC_RETRY_ABOVE", default_value_t = Limits::RETRY_ABOVE)]
    pub quic_retry_above: u32,
    /// Apply the per-source limits to loopback and the local source too (by default the
    /// host's own connections are exempt, so `ghost bench` can open hundreds).
    #[arg(long, env = "GHOST_QUIC_LIMIT_LOOPBACK", value_parser = clap::builder::BoolishValueParser::new())]
    pub quic_limit_loopback: bool,
}

impl QuicLimits {
    /// The limits these flags ask for, with `local` (the host's own connections besides
    /// loopback) exempt as loopback is.
    pub fn limits(&self, local: &LocalSource) -> Limits {
        Limits {
            per_source: self.quic_per_source,
            retry_above: self.quic_retry_above,
            local: local.local_source.into_iter().collect(),
            limit_loopback: self.quic_limit_loopback,
        }
    }
}

/// What to do with an incoming connection.
#[derive(Debug)]
pub enum Decision {
    /// Go on with the handshake, holding this slot until the connection ends.
    Accept(Slot),
    /// Ask the client to prove its address first.
    Retry,
    /// Refuse: its source holds all the connections it may.
    Refuse,
}

/// Counters of what admission did, for a service's metrics.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Retries sent.
    pub retries: Counter,
    /// Connections refused because their source was at its cap.
    pub refused: Counter,
    /// Handshakes in flight.
    pub handshakes: Gauge,
}

/// A server's admission state: connections per source and handshakes in flight.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    open: Mutex<HashMap<IpAddr, u32>>,
    handshakes: AtomicU32,
    metrics: Metrics,
}

impl Admission {
    /// Admission under `limits`.
    pub fn new(limits: Limits) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            open: Mutex::new(HashMap::new()),
            handshakes: AtomicU32::new(0),
            metrics: Metrics::default(),
        })
    }

    /// Registers its counters (`quic_retries`, `quic_refused_per_source`,
    /// `quic_handshakes`) in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "quic_retries",
            "QUIC Retries sent to make clients prove their address",
            self.metrics.retries.clone(),
        );
        registry.register(
            "quic_refused_per_source",
            "QUIC connections refused because their source held all it may",
            self.metrics.refused.clone(),
        );
        registry.register(
            "quic_handshakes",
            "QUIC handshakes in flight",
            self.metrics.handshakes.clone(),
        );
    }

    /// Its counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Decides on a connection from `source`; `validated` is whether the client already
    /// answered a Retry.
    pub fn decide(self: &Arc<Self>, source: IpAddr, validated: bool) -> Decision {
        let busy = self.handshakes.load(Ordering::Relaxed) >= self.limits.retry_above;
        if self.limits.exempt(source) {
            return Decision::Accept(self.slot(None, true));
        }
        let key = source_key(source);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let held = open.get(&key).copied().unwrap_or(0);
        if !validated && (busy || held >= self.limits.per_source) {
            self.metrics.retries.inc();
            return Decision::Retry;
        }
        if held >= self.limits.per_source {
            self.metrics.refused.inc();
            return Decision::Refuse;
        }
        open.insert(key, held + 1);
        drop(open);
        Decision::Accept(self.slot(Some(key), held == 0))
    }

    fn slot(self: &Arc<Self>, key: Option<IpAddr>, alone: bool) -> Slot {
        self.handshakes.fetch_add(1, Ordering::Relaxed);
        self.metrics.handshakes.inc();
        Slot {
            admission: self.clone(),
            key,
            handshaking: true,
            alone,
        }
    }
}

/// One admitted connection's place: its handshake counts as in flight until
/// [`Slot::established`], and its source's count goes down when the slot is dropped.
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
    key: Option<IpAddr>,
    handshaking: bool,
    alone: bool,
}

impl Slot {
    /// Whether its source held no other connection when it was admitted (the host's own
    /// connections always count as alone): a server may keep a reserve for such sources,
    /// which a flood from a few addresses cannot take.
    pub fn alone(&self) -> bool {
        self.alone
    }

    /// The handshake is over (either way).
    pub fn established(&mut self) {
        if std::mem::take(&mut self.handshaking) {
            self.admission.handshakes.fetch_sub(1, Ordering::Relaxed);
            self.admission.metrics.handshakes.dec();
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.established();
        let Some(key) = self.key else { return };
        let mut open = self
            .admission
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(held) = open.get_mut(&key) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                open.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    fn limits(per_source: u32, retry_above: u32) -> Limits {
        Limits {
            per_source,
            retry_above,
            ..Limits::default()
        }
    }

    #[test]
    fn a_slot_knows_whether_its_source_held_another() {
        let a = Admission::new(limits(4, 100));
        let accept = |d| match d {
            Decision::Accept(slot) => slot,
            other => panic!("refused: {other:?}"),
        };
        let first = accept(a.decide(ip("203.0.113.5"), true));
        let second = accept(a.decide(ip("203.0.113.5"), true));
        let elsewhere = accept(a.decide(ip("198.51.100.1"), true));
        assert!(first.alone() && !second.alone() && elsewhere.alone());
        drop((first, second));
        assert!(accept(a.decide(ip("203.0.113.5"), true)).alone());
        // The host's own connections are exempt, and count as alone.
        let own = accept(a.decide(ip("127.0.0.1"), true));
        let own_again = accept(a.decide(ip("127.0.0.1"), true));
        assert!(own.alone() && own_again.alone());
    }

    #[test]
    fn a_source_at_its_cap_is_asked_to_validate_then_refused() {
        let a = Admission::new(limits(2, 100));
        let one = a.decide(ip("203.0.113.5"), false);
        let two = a.decide(ip("203.0.113.5"), false);
        assert!(matches!(one, Decision::Accept(_)));
        assert!(matches!(two, Decision::Accept(_)));
        assert!(matches!(
            a.decide(ip("203.0.113.5"), false),
            Decision::Retry
        ));
        assert!(matches!(
            a.decide(ip("203.0.113.5"), true),
            Decision::Refuse
        ));
        assert!(
            matches!(a.decide(ip("203.0.113.6"), false), Decision::Accept(_)),
            "another source is not affected"
        );
        drop(one);
        assert!(
            matches!(a.decide(ip("203.0.113.5"), true), Decision::Accept(_)),
            "a closed connection frees its place"
        );
        assert_eq!(a.metrics().refused.get(), 1);
        assert_eq!(a.metrics().retries.get(), 1);
    }

    #[test]
    fn an_ipv6_source_is_its_64() {
        let a = Admission::new(limits(1, 100));
        let _held = a.decide(ip("2001:db8:1:2::1"), true);
        assert!(matches!(
            a.decide(ip("2001:db8:1:2:ffff::9"), true),
            Decision::Refuse
        ));
        assert!(matches!(
            a.decide(ip("2001:db8:1:3::1"), true),
            Decision::Accept(_)
        ));
        assert_eq!(source_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn handshakes_past_the_threshold_need_a_retry() {
        let a = Admission::new(limits(100, 2));
        let mut first = match a.decide(ip("198.51.100.1"), false) {
            Decision::Accept(slot) => slot,
            other => panic!("first handshake: {other:?}"),
        };
        let _second = a.decide(ip("198.51.100.2"), false);
        assert!(matches!(
            a.decide(ip("198.51.100.3"), false),
            Decision::Retry
        ));
        assert!(
            matches!(a.decide(ip("198.51.100.3"), true), Decision::Accept(_)),
            "a validated address goes on"
        );
        // The validated one's slot is gone already: only the second is still in flight.
        first.established();
        first.established();
        assert_eq!(a.metrics().handshakes.get(), 1, "counted down once");
    }

    #[test]
    fn loopback_and_local_sources_are_exempt_unless_asked() {
        let local = Limits {
            local: vec![ip("172.18.0.1")],
            ..limits(0, 0)
        };
        let a = Admission::new(local.clone());
        for source in ["127.0.0.1", "::1", "172.18.0.1", "::ffff:127.0.0.1"] {
            assert!(
                matches!(a.decide(ip(source), false), Decision::Accept(_)),
                "{source}"
            );
        }
        let strict = Admission::new(Limits {
            limit_loopback: true,
            ..local
        });
        assert!(matches!(
            strict.decide(ip("127.0.0.1"), false),
            Decision::Retry
        ));
    }
}
