//! Group streams: a [`GroupHeader`], then frames, then FIN.
//!
//! Header: `0x47 ('G')`, `sequence: u64`. Frame: `capture_us: u64`, `length: u32`, payload
//! (all big endian). A frame is kept in its encoded form ([`Frame::encoded`]) from the
//! publisher to the viewer: ingest and relays forward the very same buffer to every
//! subscriber, with no copy and no re-encoding.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::WireError;
use crate::limits::MAX_FRAME;

/// First byte of every group stream.
pub const GROUP_MAGIC: u8 = b'G';
/// Bytes in a group header.
pub const GROUP_HEADER_LEN: usize = 9;
/// Bytes in a frame header.
pub const FRAME_HEADER_LEN: usize = 12;

/// Opens a group stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupHeader {
    /// Group sequence number: increases by one per group of a stream.
    pub sequence: u64,
}

impl GroupHeader {
    /// The encoded header.
    pub fn to_bytes(self) -> Bytes {
        let mut b = BytesMut::with_capacity(GROUP_HEADER_LEN);
        b.put_u8(GROUP_MAGIC);
        b.put_u64(self.sequence);
        b.freeze()
    }
}

/// One frame in its encoded form: header and payload in one shared buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    capture_us: u64,
    encoded: Bytes,
}

impl Frame {
    /// Encodes a frame; fails when the payload exceeds [`MAX_FRAME`].
    pub fn new(capture_us: u64, payload: &[u8]) -> Result<Frame, WireError> {
        if payload.len() > MAX_FRAME {
            return Err(WireError::TooLarge {
                what: "frame",
                len: payload.len() as u64,
                max: MAX_FRAME as u64,
            });
        }
        let mut b = BytesMut::with_capacity(FRAME_HEADER_LEN + payload.len());
        b.put_u64(capture_us);
        b.put_u32(payload.len() as u32);
        b.extend_from_slice(payload);
        Ok(Frame {
            capture_us,
            encoded: b.freeze(),
        })
    }

    /// The publisher's wall-clock capture time, microseconds since the Unix epoch.
    pub fn capture_us(&self) -> u64 {
        self.capture_us
    }

    /// Header and payload, ready to write to a group stream.
    pub fn encoded(&self) -> &Bytes {
        &self.encoded
    }

    /// The media payload.
    pub fn payload(&self) -> Bytes {
        self.encoded.slice(FRAME_HEADER_LEN..)
    }

    /// Payload length in bytes.
    pub fn payload_len(&self) -> usize {
        self.encoded.len() - FRAME_HEADER_LEN
    }
}

/// What a group stream yields, in order: one header, then frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupEvent {
    /// The group's header.
    Header(GroupHeader),
    /// The next frame.
    Frame(Frame),
}

/// Incremental decoder of one group stream.
#[derive(Debug, Default)]
pub struct GroupDecoder {
    seen_header: bool,
}

impl GroupDecoder {
    /// A decoder at the start of a group stream.
    pub fn new() -> GroupDecoder {
        GroupDecoder::default()
    }

    /// Bytes needed before [`GroupDecoder::decode`] can make progress, given what is buffered:
    /// lets a reader fetch exactly one frame without over-reading.
    pub fn wanted(&self, buf: &BytesMut) -> usize {
        if !self.seen_header {
            return GROUP_HEADER_LEN.saturating_sub(buf.len());
        }
        if buf.len() < FRAME_HEADER_LEN {
            return FRAME_HEADER_LEN - buf.len();
        }
        let len = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
        (FRAME_HEADER_LEN + len.min(MAX_FRAME)).saturating_sub(buf.len())
    }

    /// Takes the next header or frame off the front of `buf`; `Ok(None)` when more bytes are
    /// needed. An oversized frame length fails as soon as its header is in.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<GroupEvent>, WireError> {
        if !self.seen_header {
            if buf.len() < GROUP_HEADER_LEN {
                return Ok(None);
            }
            if buf[0] != GROUP_MAGIC {
                return Err(WireError::BadGroupHeader(buf[0]));
            }
            buf.advance(1);
            let sequence = buf.get_u64();
            self.seen_header = true;
            return Ok(Some(GroupEvent::Header(GroupHeader { sequence })));
        }
        if buf.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
        if len > MAX_FRAME {
            return Err(WireError::TooLarge {
                what: "frame",
                len: len as u64,
                max: MAX_FRAME as u64,
            });
        }
        if buf.len() < FRAME_HEADER_LEN + len {
            return Ok(None);
        }
        let capture_us = u64::from_be_bytes([
            buf[0], buf[1], buf[2], buf[3], buf[4], buf[5], buf[6], buf[7],
        ]);
        let encoded = buf.split_to(FRAME_HEADER_LEN + len).freeze();
        Ok(Some(GroupEvent::Frame(Frame {
            capture_us,
            encoded,
        })))
    }

    /// Call at FIN: an error when the stream stopped inside a header or frame.
    pub fn finish(&self, buf: &BytesMut) -> Result<(), WireError> {
        match (self.seen_header, buf.is_empty()) {
            (false, _) => Err(WireError::Truncated("group header")),
            (true, false) => Err(WireError::Truncated("frame")),
            (true, true) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> (BytesMut, Vec<Frame>) {
        let frames: Vec<Frame> = (0..5)
            .map(|i| Frame::new(1_000 + i, &vec![i as u8; (i * 100) as usize]).expect("small"))
            .collect();
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&GroupHeader { sequence: 42 }.to_bytes());
        for f in &frames {
            wire.extend_from_slice(f.encoded());
        }
        (wire, frames)
    }

    #[test]
    fn round_trip_in_any_chunking() {
        let (wire, frames) = stream();
        for chunk in [1, 3, 12, 13, 4096] {
            let mut dec = GroupDecoder::new();
            let mut buf = BytesMut::new();
            let mut events = Vec::new();
            for piece in wire.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Some(e) = dec.decode(&mut buf).expect("valid") {
                    events.push(e);
                }
            }
            dec.finish(&buf).expect("complete");
            assert_eq!(events[0], GroupEvent::Header(GroupHeader { sequence: 42 }));
            let got: Vec<Frame> = events[1..]
                .iter()
                .map(|e| match e {
                    GroupEvent::Frame(f) => f.clone(),
                    GroupEvent::Header(_) => panic!("second header"),
                })
                .collect();
            assert_eq!(got, frames);
            assert_eq!(got[3].payload(), Bytes::from(vec![3u8; 300]));
            assert_eq!(got[3].capture_us(), 1_003);
        }
    }

    #[test]
    fn wanted_asks_for_exactly_one_frame() {
        let (wire, _) = stream();
        let mut dec = GroupDecoder::new();
        let mut buf = BytesMut::new();
        assert_eq!(dec.wanted(&buf), GROUP_HEADER_LEN);
        buf.extend_from_slice(&wire[..GROUP_HEADER_LEN]);
        assert!(dec.decode(&mut buf).expect("header").is_some());
        assert_eq!(dec.wanted(&buf), FRAME_HEADER_LEN);
        buf.extend_from_slice(&wire[GROUP_HEADER_LEN..GROUP_HEADER_LEN + FRAME_HEADER_LEN]);
        assert_eq!(dec.wanted(&buf), 0); // frame 0 has an empty payload
    }

    #[test]
    fn oversized_and_garbage_fail() {
        let mut dec = GroupDecoder::new();
        let mut buf = BytesMut::from(&b"XXXXXXXXXXXX"[..]);
        assert_eq!(dec.decode(&mut buf), Err(WireError::BadGroupHeader(b'X')));

        let mut dec = GroupDecoder::new();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&GroupHeader { sequence: 1 }.to_bytes());
        buf.put_u64(5);
        buf.put_u32(u32::MAX);
        assert!(dec.decode(&mut buf).expect("header").is_some());
        assert!(matches!(
            dec.decode(&mut buf),
            Err(WireError::TooLarge { what: "frame", .. })
        ));
        assert!(Frame::new(0, &vec![0; MAX_FRAME + 1]).is_err());
    }

    #[test]
    fn truncation_is_reported() {
        let (wire, _) = stream();
        let mut dec = GroupDecoder::new();
        let mut buf = BytesMut::from(&wire[..wire.len() - 1]);
        while dec.decode(&mut buf).expect("valid so far").is_some() {}
        assert_eq!(dec.finish(&buf), Err(WireError::Truncated("frame")));
        assert_eq!(
            GroupDecoder::new().finish(&BytesMut::new()),
            Err(WireError::Truncated("group header"))
        );
    }
}
