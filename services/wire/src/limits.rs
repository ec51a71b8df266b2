//! Hard maxima for every length on the wire.

/// Largest frame payload (a 4K keyframe fits with room to spare).
pub const MAX_FRAME: usize = 4 << 20;
/// Largest init segment (ftyp + moov).
pub const MAX_INIT: usize = 1 << 20;
/// Largest stream name, in bytes.
pub const MAX_NAME: usize = 128;
/// Largest stream key a publisher presents, in bytes (the keys `ghost keys add` makes are
/// far shorter; the cap bounds what a stranger can make ingest hash).
pub const MAX_KEY: usize = 128;
/// Largest stream id, in bytes.
pub const MAX_ID: usize = 64;
/// Largest join ticket.
pub const MAX_TICKET: usize = 512;
/// Largest error reason text.
pub const MAX_REASON: usize = 1024;
/// Largest session message, all fields included.
pub const MAX_MESSAGE: usize = MAX_INIT + 4096;
