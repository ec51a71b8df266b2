//! Messages on a connection's session stream (the first bidirectional stream).
//!
//! Each message is `type: u8`, `length: u32` (big endian), then `length` bytes of fields.
//! Strings are `u16` length + UTF-8, blobs `u32` length + bytes.
//!
//! | direction | opening message | answer |
//! |---|---|---|
//! | publisher → ingest | [`Message::Announce`] | [`Message::Announced`] or [`Message::Error`] |
//! | relay → ingest | [`Message::Subscribe`] | [`Message::Init`] or [`Message::Error`] |
//! | viewer → relay | [`Message::Join`] | [`Message::Init`] or a close code |
//!
//! A join may end with a [`Delivery`] byte; a join without it (every viewer before the field
//! existed) asks for [`Delivery::StreamPerGroup`], and one for that delivery is encoded
//! without it, so such joins are byte for byte what they always were.
//!
//! [`Message::End`] says the stream is over: from the publisher when it stops cleanly, from
//! ingest and relays to their subscribers when the publisher has gone.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::Code;
use crate::WireError;
use crate::limits::{MAX_ID, MAX_INIT, MAX_KEY, MAX_MESSAGE, MAX_NAME, MAX_REASON, MAX_TICKET};

const HEADER: usize = 5;

/// One session-stream message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A publisher goes live under `name`, with the stream's init segment (empty for
    /// synthetic media).
    Announce {
        /// Stream name chosen by the streamer.
        name: String,
        /// The stream key the operator gave the streamer, or empty for none. Ingest may
        /// require one (`--require-keys`); a key also decides the name it publishes under.
        key: String,
        /// ftyp+moov, or empty.
        init: Bytes,
    },
    /// Ingest confirms: the stream is live and listed under this id.
    Announced {
        /// The id control gave the stream.
        stream_id: String,
    },
    /// A relay asks ingest for a stream.
    Subscribe {
        /// The stream, by the id control gave it.
        stream_id: String,
    },
    /// A viewer asks a relay for a stream.
    Join {
        /// The stream, by id: the ticket is bound to it.
        stream_id: String,
        /// Join ticket from control (may be empty where the relay checks none).
        ticket: Bytes,
        /// How the viewer asks to receive the groups.
        delivery: Delivery,
    },
    /// Answer to Subscribe and Join: the stream exists; groups follow on uni streams.
    Init {
        /// The stream's id, so a client that asked by name learns it.
        stream_id: String,
        /// Stream name.
        name: String,
        /// ftyp+moov, or empty.
        init: Bytes,
    },
    /// The stream is over. `last_group` is the sequence of the last group sent on this
    /// connection (`None` when none was), so the receiver knows what is still in flight.
    End {
        /// Last group sequence sent, if any.
        last_group: Option<u64>,
    },
    /// A refusal: the close code that follows it, and why, for people.
    Error {
        /// The code the connection is about to be closed with.
        code: Code,
        /// Why.
        reason: String,
    },
    /// A viewer asks for the relay's clock (on the session stream, after `Init`), to tell
    /// how far its own clock is off: a frame's capture time is on the stack's clock.
    Ping {
        /// The viewer's clock when it sent this, Unix microseconds (echoed back).
        sent_us: u64,
    },
    /// The relay's answer to `Ping`, at once.
    Pong {
        /// The `Ping`'s `sent_us`.
        sent_us: u64,
        /// The relay's clock when it answered, Unix microseconds.
        relay_us: u64,
    },
}

/// How a viewer asks a relay to carry the groups: the last field of [`Message::Join`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Delivery {
    /// Each group on a unidirectional stream of its own, so a lost packet holds up only its
    /// own group: what every viewer gets. Left out on the wire.
    #[default]
    StreamPerGroup,
    /// Every message and group on the session stream itself, in the WebSocket carrier's
    /// framing (`ghost-ws.1`), as that carrier sends them on one TCP connection: TCP's
    /// head-of-line blocking with QUIC's loss recovery. A benchmark's control case, to tell
    /// what streams per group buy from what QUIC's loss recovery buys; native QUIC only.
    /// `1` on the wire.
    OneStream,
}

impl Delivery {
    /// Its name, for logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            Delivery::StreamPerGroup => "stream_per_group",
            Delivery::OneStream => "one_stream",
        }
    }
}

/// [`Delivery::OneStream`] on the wire.
const ONE_STREAM: u8 = 1;

mod kind {
    pub const ANNOUNCE: u8 = 1;
    pub const ANNOUNCED: u8 = 2;
    pub const SUBSCRIBE: u8 = 3;
    pub const JOIN: u8 = 4;
    pub const INIT: u8 = 5;
    pub const END: u8 = 6;
    pub const ERROR: u8 = 7;
    pub const PING: u8 = 8;
    pub const PONG: u8 = 9;
}

impl Message {
    /// Its kind's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Announce { .. } => "announce",
            Message::Announced { .. } => "announced",
            Message::Subscribe { .. } => "subscribe",
            Message::Join { .. } => "join",
            Message::Init { .. } => "init",
            Message::End { .. } => "end",
            Message::Error { .. } => "error",
            Message::Ping { .. } => "ping",
            Message::Pong { .. } => "pong",
        }
    }

    /// Appends the encoded message to `out`.
    ///
    /// Fields longer than their maximum are cut to it (the encoder is used for our own
    /// messages, whose fields are checked where they are made).
    pub fn encode(&self, out: &mut BytesMut) {
        let mut body = BytesMut::new();
        let kind = match self {
            Message::Announce { name, key, init } => {
                put_str(&mut body, name, MAX_NAME);
                put_str(&mut body, key, MAX_KEY);
                put_blob(&mut body, init, MAX_INIT);
                kind::ANNOUNCE
            }
            Message::Announced { stream_id } => {
                put_str(&mut body, stream_id, MAX_ID);
                kind::ANNOUNCED
            }
            Message::Subscribe { stream_id } => {
                put_str(&mut body, stream_id, MAX_ID);
                kind::SUBSCRIBE
            }
            Message::Join {
                stream_id,
                ticket,
                delivery,
            } => {
                put_str(&mut body, stream_id, MAX_ID);
                put_blob(&mut body, ticket, MAX_TICKET);
                match delivery {
                    Delivery::StreamPerGroup => {}
                    Delivery::OneStream => body.put_u8(ONE_STREAM),
                }
                kind::JOIN
            }
            Message::Init {
                stream_id,
                name,
                init,
            } => {
                put_str(&mut body, stream_id, MAX_ID);
                put_str(&mut body, name, MAX_NAME);
                put_blob(&mut body, init, MAX_INIT);
                kind::INIT
            }
            Message::End { last_group } => {
                body.put_u64(last_group.map_or(u64::MAX, |g| g));
                kind::END
            }
            Message::Error { code, reason } => {
                body.put_u32(u32::from(*code));
                put_str(&mut body, reason, MAX_REASON);
                kind::ERROR
            }
            Message::Ping { sent_us } => {
                body.put_u64(*sent_us);
                kind::PING
            }
            Message::Pong { sent_us, relay_us } => {
                body.put_u64(*sent_us);
                body.put_u64(*relay_us);
                kind::PONG
            }
        };
        out.reserve(HEADER + body.len());
        out.put_u8(kind);
        // The body is bounded by the field limits, far below u32::MAX.
        out.put_u32(body.len() as u32);
        out.extend_from_slice(&body);
    }

    /// The encoded message as one buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.freeze()
    }

    /// Takes one complete message off the front of `buf`.
    ///
    /// `Ok(None)` means more bytes are needed; `buf` is then left untouched. A length beyond
    /// [`MAX_MESSAGE`] fails as soon as the header is in, before its body is buffered.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<Message>, WireError> {
        if buf.len() < HEADER {
            return Ok(None);
        }
        let kind = buf[0];
        if !(kind::ANNOUNCE..=kind::PONG).contains(&kind) {
            return Err(WireError::UnknownMessage(kind));
        }
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if len > MAX_MESSAGE {
            return Err(WireError::TooLarge {
                what: "message",
                len: len as u64,
                max: MAX_MESSAGE as u64,
            });
        }
        if buf.len() < HEADER + len {
            return Ok(None);
        }
        buf.advance(HEADER);
        let mut body = buf.split_to(len).freeze();
        let msg = Self::decode_body(kind, &mut body)?;
        if body.has_remaining() {
            return Err(WireError::Malformed("message with trailing bytes"));
        }
        Ok(Some(msg))
    }

    fn decode_body(kind: u8, body: &mut Bytes) -> Result<Message, WireError> {
        Ok(match kind {
            kind::ANNOUNCE => Message::Announce {
                name: get_str(body, "stream name", MAX_NAME)?,
                key: get_str(body, "stream key", MAX_KEY)?,
                init: get_blob(body, "init segment", MAX_INIT)?,
            },
            kind::ANNOUNCED => Message::Announced {
                stream_id: get_str(body, "stream id", MAX_ID)?,
            },
            kind::SUBSCRIBE => Message::Subscribe {
                stream_id: get_str(body, "stream id", MAX_ID)?,
            },
            kind::JOIN => Message::Join {
                stream_id: get_str(body, "stream id", MAX_ID)?,
                ticket: get_blob(body, "ticket", MAX_TICKET)?,
                delivery: match body.has_remaining().then(|| body.get_u8()) {
                    None => Delivery::StreamPerGroup,
                    Some(ONE_STREAM) => Delivery::OneStream,
                    // `0` too: the default is left out, so that each join has one encoding.
                    Some(other) => return Err(WireError::UnknownDelivery(other)),
                },
            },
            kind::INIT => Message::Init {
                stream_id: get_str(body, "stream id", MAX_ID)?,
                name: get_str(body, "stream name", MAX_NAME)?,
                init: get_blob(body, "init segment", MAX_INIT)?,
            },
            kind::END => {
                if body.remaining() < 8 {
                    return Err(WireError::Malformed("end message"));
                }
                let last = body.get_u64();
                Message::End {
                    last_group: (last != u64::MAX).then_some(last),
                }
            }
            kind::ERROR => {
                if body.remaining() < 4 {
                    return Err(WireError::Malformed("error message"));
                }
                Message::Error {
                    code: Code::from(body.get_u32()),
                    reason: get_str(body, "reason", MAX_REASON)?,
                }
            }
            kind::PING => {
                if body.remaining() < 8 {
                    return Err(WireError::Malformed("ping message"));
                }
                Message::Ping {
                    sent_us: body.get_u64(),
                }
            }
            kind::PONG => {
                if body.remaining() < 16 {
                    return Err(WireError::Malformed("pong message"));
                }
                Message::Pong {
                    sent_us: body.get_u64(),
                    relay_us: body.get_u64(),
                }
            }
            other => return Err(WireError::UnknownMessage(other)),
        })
    }
}

fn put_str(out: &mut BytesMut, s: &str, max: usize) {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.put_u16(end as u16);
    out.extend_from_slice(&s.as_bytes()[..end]);
}

fn put_blob(out: &mut BytesMut, b: &[u8], max: usize) {
    let end = b.len().min(max);
    out.put_u32(end as u32);
    out.extend_from_slice(&b[..end]);
}

fn get_str(body: &mut Bytes, what: &'static str, max: usize) -> Result<String, WireError> {
    if body.remaining() < 2 {
        return Err(WireError::Malformed(what));
    }
    let len = body.get_u16() as usize;
    let raw = take(body, len, what, max)?;
    String::from_utf8(raw.to_vec()).map_err(|_| WireError::BadUtf8(what))
}

fn get_blob(body: &mut Bytes, what: &'static str, max: usize) -> Result<Bytes, WireError> {
    if body.remaining() < 4 {
        return Err(WireError::Malformed(what));
    }
    let len = body.get_u32() as usize;
    take(body, len, what, max)
}

fn take(body: &mut Bytes, len: usize, what: &'static str, max: usize) -> Result<Bytes, WireError> {
    if len > max {
        return Err(WireError::TooLarge {
            what,
            len: len as u64,
            max: max as u64,
        });
    }
    if body.remaining() < len {
        return Err(WireError::Malformed(what));
    }
    Ok(body.split_to(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Message> {
        vec![
            Message::Announce {
                name: "cats".into(),
                key: "gs_abcdefghijklmnopqrstuvwxyz234567".into(),
                init: Bytes::from_static(b"ftypmoov"),
            },
            Message::Announce {
                name: "dogs".into(),
                key: String::new(),
                init: Bytes::new(),
            },
            Message::Announced {
                stream_id: "abc".into(),
            },
            Message::Subscribe {
                stream_id: "abc".into(),
            },
            Message::Ping { sent_us: 17 },
            Message::Pong {
                sent_us: 17,
                relay_us: u64::MAX - 1,
            },
            Message::Join {
                stream_id: "abc".into(),
                ticket: Bytes::from_static(&[1, 2, 3]),
                delivery: Delivery::StreamPerGroup,
            },
            Message::Join {
                stream_id: "abc".into(),
                ticket: Bytes::new(),
                delivery: Delivery::OneStream,
            },
            Message::Init {
                stream_id: "abc".into(),
                name: "cats".into(),
                init: Bytes::new(),
            },
            Message::End {
                last_group: Some(7),
            },
            Message::End { last_group: None },
            Message::Error {
                code: Code::Capacity,
                reason: "full".into(),
            },
        ]
    }

    #[test]
    fn round_trip_whole_and_byte_by_byte() {
        let mut wire = BytesMut::new();
        for m in all() {
            m.encode(&mut wire);
        }
        let whole = wire.clone();
        let mut out = Vec::new();
        while let Some(m) = Message::decode(&mut wire).expect("valid") {
            out.push(m);
        }
        assert_eq!(out, all());
        assert!(wire.is_empty());

        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for b in whole.iter() {
            buf.put_u8(*b);
            while let Some(m) = Message::decode(&mut buf).expect("valid") {
                out.push(m);
            }
        }
        assert_eq!(out, all());
    }

    #[test]
    fn oversized_length_fails_before_body_arrives() {
        let mut buf = BytesMut::from(&[kind::ANNOUNCE, 0xff, 0xff, 0xff, 0xff][..]);
        let err = Message::decode(&mut buf).expect_err("too large");
        assert!(matches!(
            err,
            WireError::TooLarge {
                what: "message",
                ..
            }
        ));
        assert_eq!(err.code(), Code::TooLarge);
    }

    #[test]
    fn oversized_field_is_refused() {
        let mut body = BytesMut::new();
        body.put_u16(MAX_NAME as u16 + 1);
        body.extend_from_slice(&[b'a'; MAX_NAME + 1]);
        body.put_u32(0);
        let mut buf = BytesMut::new();
        buf.put_u8(kind::ANNOUNCE);
        buf.put_u32(body.len() as u32);
        buf.extend_from_slice(&body);
        assert!(matches!(
            Message::decode(&mut buf),
            Err(WireError::TooLarge {
                what: "stream name",
                ..
            })
        ));
    }

    #[test]
    fn oversized_key_is_refused() {
        let mut body = BytesMut::new();
        body.put_u16(4);
        body.extend_from_slice(b"cats");
        body.put_u16(MAX_KEY as u16 + 1);
        body.extend_from_slice(&[b'k'; MAX_KEY + 1]);
        body.put_u32(0);
        let mut buf = BytesMut::new();
        buf.put_u8(kind::ANNOUNCE);
        buf.put_u32(body.len() as u32);
        buf.extend_from_slice(&body);
        let err = Message::decode(&mut buf).expect_err("too large");
        assert!(matches!(
            err,
            WireError::TooLarge {
                what: "stream key",
                ..
            }
        ));
        assert_eq!(err.code(), Code::TooLarge);
    }

    #[test]
    fn a_key_at_its_maximum_round_trips() {
        let announce = Message::Announce {
            name: "cats".into(),
            key: "k".repeat(MAX_KEY),
            init: Bytes::new(),
        };
        let mut buf = BytesMut::from(&announce.to_bytes()[..]);
        assert_eq!(Message::decode(&mut buf), Ok(Some(announce)));
    }

    /// A join as `ghost-view/1` viewers sent it before [`Delivery`]: stream id, ticket.
    fn join_body(tail: &[u8]) -> BytesMut {
        let mut body = BytesMut::new();
        body.put_u16(3);
        body.extend_from_slice(b"abc");
        body.put_u32(2);
        body.extend_from_slice(&[7, 8]);
        body.extend_from_slice(tail);
        let mut buf = BytesMut::new();
        buf.put_u8(kind::JOIN);
        buf.put_u32(body.len() as u32);
        buf.extend_from_slice(&body);
        buf
    }

    #[test]
    fn a_join_without_a_delivery_asks_for_a_stream_per_group_and_encodes_as_before() {
        let old = join_body(&[]);
        let join = Message::Join {
            stream_id: "abc".into(),
            ticket: Bytes::from_static(&[7, 8]),
            delivery: Delivery::StreamPerGroup,
        };
        assert_eq!(Message::decode(&mut old.clone()), Ok(Some(join.clone())));
        assert_eq!(&join.to_bytes()[..], &old[..]);
        let one = join_body(&[ONE_STREAM]);
        assert_eq!(
            Message::decode(&mut one.clone()),
            Ok(Some(Message::Join {
                stream_id: "abc".into(),
                ticket: Bytes::from_static(&[7, 8]),
                delivery: Delivery::OneStream,
            }))
        );
    }

    #[test]
    fn a_join_with_an_unknown_delivery_is_refused_and_says_which() {
        for value in [0, 2, 0xff] {
            let err = Message::decode(&mut join_body(&[value])).expect_err("unknown delivery");
            assert_eq!(err, WireError::UnknownDelivery(value));
            assert_eq!(err.code(), Code::Protocol);
            assert!(err.to_string().contains(&format!("{value:#04x}")), "{err}");
        }
        // A second byte after a known delivery is trailing garbage, not a new field.
        assert_eq!(
            Message::decode(&mut join_body(&[ONE_STREAM, 0])),
            Err(WireError::Malformed("message with trailing bytes"))
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(
            Message::decode(&mut BytesMut::from(&b"GET / HTTP/1.1\r\n"[..])),
            Err(WireError::UnknownMessage(b'G'))
        );
        // A field length pointing past the body.
        let mut buf = BytesMut::from(&[kind::SUBSCRIBE, 0, 0, 0, 2, 0, 9][..]);
        assert_eq!(
            Message::decode(&mut buf),
            Err(WireError::Malformed("stream id"))
        );
        // Invalid UTF-8.
        let mut buf = BytesMut::from(&[kind::SUBSCRIBE, 0, 0, 0, 3, 0, 1, 0xff][..]);
        assert_eq!(
            Message::decode(&mut buf),
            Err(WireError::BadUtf8("stream id"))
        );
        // Trailing bytes.
        let mut buf = BytesMut::from(&[kind::SUBSCRIBE, 0, 0, 0, 3, 0, 0, 0][..]);
        assert!(Message::decode(&mut buf).is_err());
    }

    #[test]
    fn every_prefix_and_mutation_is_handled() {
        let mut wire = BytesMut::new();
        for m in all() {
            m.encode(&mut wire);
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut bytes = wire.to_vec();
            let at = (seed as usize) % bytes.len();
            bytes[at] = (seed >> 32) as u8;
            bytes.truncate(((seed >> 16) as usize) % (bytes.len() + 1));
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = Message::decode(&mut buf) {}
        }
    }
}
