//! Hard maxima for every length on the wire.

/// Largest frame payload (a 4K keyframe fits with room to spare).
pub const MAX_FRAME: usize = 4 << 20;
/// Most media bytes (frame headers and payloads) in one group. A group runs from one
/// keyframe to the next, so this is a keyframe interval's worth of video: 64 MiB is 10 s of a
/// 53 Mbit/s stream (4K60 at the top of what streaming services take) or 4 s at 134 Mbit/s,
/// which no live encoder sends. Past it the group is cut (see [`crate::Reset::GroupTooLarge`]).
pub const MAX_GROUP: usize = 64 << 20;
/// Most media bytes one stream may hold at one hop: its newest group, the one before it
/// while a slow subscriber still sends its tail, and frames half received. The same bound
/// covers one publisher's connection (a connection carries one stream).
pub const MAX_STREAM: usize = 2 * MAX_GROUP + 4 * MAX_FRAME;
/// Largest init segment (ftyp + moov).
pub const MAX_INIT: usize = 1 << 20;
/// Largest stream name, in bytes.
pub const MAX_NAME: usize = 128;
/// What makes a stream name invalid: the one rule control (which lists streams) and the
/// stream-key store (which must never make a key for a name no stream can have) both apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadName {
    /// No characters at all.
    #[error("is empty")]
    Empty,
    /// Longer than [`MAX_NAME`] bytes.
    #[error("is {0} bytes, at most {MAX_NAME} allowed")]
    TooLong(usize),
    /// A control character (a newline, say), which would break logs and pages.
    #[error("holds control characters")]
    ControlCharacters,
}

/// Checks a stream name: not empty, at most [`MAX_NAME`] bytes, no control characters.
pub fn check_stream_name(name: &str) -> Result<(), BadName> {
    if name.is_empty() {
        return Err(BadName::Empty);
    }
    if name.len() > MAX_NAME {
        return Err(BadName::TooLong(name.len()));
    }
    if name.chars().any(char::is_control) {
        return Err(BadName::ControlCharacters);
    }
    Ok(())
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_for_stream_names() {
        assert_eq!(check_stream_name("cats live"), Ok(()));
        assert_eq!(check_stream_name("ünïcödé 🐈"), Ok(()));
        assert_eq!(check_stream_name(""), Err(BadName::Empty));
        let long = "x".repeat(MAX_NAME + 1);
        assert_eq!(
            check_stream_name(&long),
            Err(BadName::TooLong(MAX_NAME + 1))
        );
        assert_eq!(check_stream_name(&long[..MAX_NAME]), Ok(()));
        assert_eq!(
            check_stream_name("two\nlines"),
            Err(BadName::ControlCharacters)
        );
        assert_eq!(
            BadName::TooLong(200).to_string(),
            "is 200 bytes, at most 128 allowed"
        );
    }
}
