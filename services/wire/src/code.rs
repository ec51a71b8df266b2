//! QUIC application error codes: connection close codes and stream reset codes.
//!
//! Clients map close codes to exit codes and end reasons, so these values are a stable interface.

/// Closed normally (client done, or publisher finished).
pub const NORMAL: u32 = 0x0;
/// The stream ended: its publisher stopped or vanished.
pub const ENDED: u32 = 0x1;
/// The relay is at its viewer capacity.
pub const CAPACITY: u32 = 0x2;
/// No such stream.
pub const NOT_FOUND: u32 = 0x3;
/// The peer broke the protocol (garbage, wrong message, wrong order).
pub const PROTOCOL: u32 = 0x4;
/// The peer announced a length beyond its hard maximum.
pub const TOO_LARGE: u32 = 0x5;
/// The server is shutting down.
pub const SHUTDOWN: u32 = 0x6;
/// The join ticket is missing, forged, expired or for another relay.
pub const UNAUTHORIZED: u32 = 0x7;
/// An internal failure on the server.
pub const INTERNAL: u32 = 0x8;
/// The control plane cannot be reached, so no new stream can start.
pub const UNAVAILABLE: u32 = 0x9;
/// Another live stream already has this name.
pub const NAME_IN_USE: u32 = 0xa;
/// The peer took too long to open its session.
pub const TIMEOUT: u32 = 0xb;

/// Stream reset code: this group was skipped because the receiver fell behind.
pub const GROUP_SKIPPED: u32 = 0x10;

/// A short name for a close code, for logs and summaries.
pub fn name(code: u32) -> &'static str {
    match code {
        NORMAL => "normal",
        ENDED => "ended",
        CAPACITY => "capacity",
        NOT_FOUND => "not_found",
        PROTOCOL => "protocol_error",
        TOO_LARGE => "too_large",
        SHUTDOWN => "shutdown",
        UNAUTHORIZED => "unauthorized",
        INTERNAL => "internal_error",
        UNAVAILABLE => "unavailable",
        NAME_IN_USE => "name_in_use",
        TIMEOUT => "timeout",
        GROUP_SKIPPED => "group_skipped",
        _ => "unknown",
    }
}
