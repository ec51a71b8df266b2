//! Ghost Stream's protocol core, with no I/O and no clock.
//!
//! A stream is an init segment and a sequence of *groups*. A group starts at a keyframe and
//! holds *frames* in order; every frame carries the publisher's wall-clock capture time in
//! microseconds, so any hop can measure delay. On the wire:
//!
//! - each QUIC connection opens with one bidirectional *session stream* carrying [`Message`]s;
//! - each group travels on its own unidirectional stream: a [`GroupHeader`], then frames, then
//!   FIN. A receiver that falls behind has older group streams reset (code
//!   [`Reset::GroupSkipped`]) and skips whole groups. (A benchmark's viewer may ask for
//!   every group on its session stream instead: [`Delivery::OneStream`].)
//!
//! Every length on the wire has a hard maximum ([`limits`]); anything beyond it is an error
//! that closes that one connection.

#![forbid(unsafe_code)]

pub mod code;
pub mod frame;
pub mod limits;
pub mod message;
pub mod ticket;

pub use code::{Code, Reset};
pub use frame::{Frame, GroupDecoder, GroupEvent, GroupHeader};
pub use message::{Delivery, Message};

/// Everything that can be wrong with bytes received from a peer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// A message type this version does not know.
    #[error("unknown message type {0:#04x}")]
    UnknownMessage(u8),
    /// A length beyond its hard maximum.
    #[error("{what} of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Which field.
        what: &'static str,
        /// The length the peer announced.
        len: u64,
        /// The maximum allowed.
        max: u64,
    },
    /// A field that does not fit the message it is in.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// Text that is not UTF-8.
    #[error("{0} is not valid UTF-8")]
    BadUtf8(&'static str),
    /// A group stream that does not start with a group header.
    #[error("group stream starts with {0:#04x}, not a group header")]
    BadGroupHeader(u8),
    /// A join asking for a delivery this version does not know.
    #[error(
        "unknown delivery {0:#04x} in a join: 1 asks for one stream, none (the field left out) \
         for a stream per group"
    )]
    UnknownDelivery(u8),
    /// The stream ended in the middle of a message or frame.
    #[error("stream ended inside a {0}")]
    Truncated(&'static str),
}

impl WireError {
    /// The QUIC application close code that reports this error to the peer.
    pub fn code(&self) -> Code {
        match self {
            WireError::TooLarge { .. } => Code::TooLarge,
            _ => Code::Protocol,
        }
    }
}
