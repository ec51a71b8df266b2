//! QUIC application error codes: why a connection was closed, and why a group's stream was
//! reset. Clients map close codes to exit codes and end reasons, so the numbers are a stable
//! interface; an enum keeps a wrong code from compiling.

/// Why a connection was closed. Numbers from a peer that this version does not know are
/// kept as [`Code::Unknown`], never refused: a newer peer may close with a newer code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// Closed normally (client done, or publisher finished). Code 0.
    Normal,
    /// The stream ended: its publisher stopped or vanished. Code 1.
    Ended,
    /// The relay or ingest is at capacity. Code 2.
    Capacity,
    /// No such stream. Code 3.
    NotFound,
    /// The peer broke the protocol (garbage, wrong message, wrong order). Code 4.
    Protocol,
    /// The peer announced a length beyond its hard maximum. Code 5.
    TooLarge,
    /// The server is shutting down. Code 6.
    Shutdown,
    /// The join ticket is missing, forged, expired or for another relay; or the publisher's
    /// stream key is missing, wrong or for another stream name. Code 7.
    Unauthorized,
    /// An internal failure on the server. Code 8.
    Internal,
    /// The control plane cannot be reached, so no new stream can start. Code 9.
    Unavailable,
    /// Another live stream already has this name. Code 10.
    NameInUse,
    /// The peer took too long to open its session. Code 11.
    Timeout,
    /// A code this version does not know.
    Unknown(u32),
}

impl Code {
    /// A short name, for logs and summaries.
    pub fn name(self) -> &'static str {
        match self {
            Code::Normal => "normal",
            Code::Ended => "ended",
            Code::Capacity => "capacity",
            Code::NotFound => "not_found",
            Code::Protocol => "protocol_error",
            Code::TooLarge => "too_large",
            Code::Shutdown => "shutdown",
            Code::Unauthorized => "unauthorized",
            Code::Internal => "internal_error",
            Code::Unavailable => "unavailable",
            Code::NameInUse => "name_in_use",
            Code::Timeout => "timeout",
            Code::Unknown(_) => "unknown",
        }
    }
}

impl From<Code> for u32 {
    fn from(code: Code) -> u32 {
        match code {
            Code::Normal => 0x0,
            Code::Ended => 0x1,
            Code::Capacity => 0x2,
            Code::NotFound => 0x3,
            Code::Protocol => 0x4,
            Code::TooLarge => 0x5,
            Code::Shutdown => 0x6,
            Code::Unauthorized => 0x7,
            Code::Internal => 0x8,
            Code::Unavailable => 0x9,
            Code::NameInUse => 0xa,
            Code::Timeout => 0xb,
            Code::Unknown(n) => n,
        }
    }
}

impl From<u32> for Code {
    fn from(n: u32) -> Code {
        match n {
            0x0 => Code::Normal,
            0x1 => Code::Ended,
            0x2 => Code::Capacity,
            0x3 => Code::NotFound,
            0x4 => Code::Protocol,
            0x5 => Code::TooLarge,
            0x6 => Code::Shutdown,
            0x7 => Code::Unauthorized,
            0x8 => Code::Internal,
            0x9 => Code::Unavailable,
            0xa => Code::NameInUse,
            0xb => Code::Timeout,
            other => Code::Unknown(other),
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Code::Unknown(n) => write!(f, "unknown ({n:#x})"),
            known => f.write_str(known.name()),
        }
    }
}

/// Why the stream of one group was reset (or a receiver stopped reading it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reset {
    /// The receiver fell behind and skips to a newer group. Code 16.
    GroupSkipped,
    /// The receiver cut the group: it went past the byte limit of a group
    /// ([`crate::limits::MAX_GROUP`]) or of a stream's media held at once
    /// ([`crate::limits::MAX_STREAM`]). Frames up to the cut were kept; the next group is
    /// taken as usual. Code 17.
    GroupTooLarge,
}

impl Reset {
    /// The reset a code number stands for, if this version knows it.
    pub fn from_code(code: u64) -> Option<Reset> {
        match code {
            0x10 => Some(Reset::GroupSkipped),
            0x11 => Some(Reset::GroupTooLarge),
            _ => None,
        }
    }

    /// A short name, for logs and summaries.
    pub fn name(self) -> &'static str {
        match self {
            Reset::GroupSkipped => "group_skipped",
            Reset::GroupTooLarge => "group_too_large",
        }
    }
}

impl From<Reset> for u32 {
    fn from(reset: Reset) -> u32 {
        match reset {
            Reset::GroupSkipped => 0x10,
            Reset::GroupTooLarge => 0x11,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_keeps_its_number() {
        for n in 0..=0x20u32 {
            assert_eq!(u32::from(Code::from(n)), n);
        }
        assert_eq!(u32::from(Code::Timeout), 11);
        assert_eq!(Code::from(2), Code::Capacity);
        assert_eq!(Code::from(99), Code::Unknown(99));
        assert_eq!(u32::from(Reset::GroupSkipped), 16);
        assert_eq!(u32::from(Reset::GroupTooLarge), 17);
        for reset in [Reset::GroupSkipped, Reset::GroupTooLarge] {
            assert_eq!(Reset::from_code(u64::from(u32::from(reset))), Some(reset));
        }
        assert_eq!(Reset::from_code(99), None);
    }
}
