//! A network impairment lab for `ghost bench`: benchmark viewers run behind a network path
//! with a chosen round-trip time, jitter, random or bursty loss and a bandwidth cap, while the
//! stack under test runs unchanged on the host's loopback addresses. Both TCP (WebSocket) and
//! UDP (QUIC) cross the real kernel stacks on either end, so congestion control, loss recovery
//! and pacing are the ones the product meets in the field.
//!
//! How it is built, and why:
//! - The viewers' sockets live in an anonymous network namespace of the lab's own, made by
//!   `unshare` on a thread; nothing is named under the system's namespace directory, so the
//!   namespace exists only while the lab (or a socket made in it) holds a reference.
//! - A non-persistent TUN device in that namespace is the viewers' default route; a second one
//!   in the host's namespace leads to the stack. A user-space forwarder reads packets from one,
//!   applies the impairment ([`Impairment`]) and writes them to the other, in both directions.
//!   The kernel removes such devices when their descriptor closes, so even a killed process
//!   leaves no device, route or namespace behind.
//! - The stack's addresses are 127.0.0.1 ports, and the lab reaches them unchanged: inside the
//!   namespace loopback stays down, so 127.0.0.1 is not local there and follows the default
//!   route into the TUN device; on the host side `route_localnet` lets the kernel accept a
//!   packet for 127.0.0.1 that came in on the TUN device (and send the answer back out of it),
//!   which it otherwise drops as martian. No address is rewritten and no firewall rule is
//!   added to the host. Each lab's two ends use a pair of addresses from the benchmarking
//!   range 198.18.0.0/15, chosen by the host device's interface index, so labs running side by
//!   side (in one process or several) do not collide.
//! - The impairment itself (a state machine per direction) does no I/O and reads no clock, so its
//!   queueing, loss and delay rules are unit-tested with made-up instants.
//!
//! The lab speaks IPv4 only, and it needs root (CAP_NET_ADMIN): see [`Error::NeedsRoot`].

#![forbid(unsafe_code)]

mod forward;
mod impairment;
mod lab;
mod path;

pub use forward::{DirectionStats, Stats};
pub use impairment::{Impairment, ParseError};
pub use lab::{Error, Lab};
