//! Group streams: `GroupDecoder::decode` on arbitrary bytes fed in arbitrary chunks, then
//! `finish` at FIN.
//!
//! Input: byte 0 picks the chunk size (0 = everything at once, else 1..=255 bytes per push),
//! the rest is the stream. Checks, besides "never panics":
//! - the first event is the only `Header`, every later one a `Frame`;
//! - each event re-encodes (`GroupHeader::to_bytes`, `Frame::new`) to exactly the bytes it
//!   was decoded from, and a frame's `encoded()` is those bytes;
//! - `wanted` is non-zero whenever `decode` returns `Ok(None)`;
//! - chunked decoding yields the same events and the same final error as decoding the whole
//!   input at once;
//! - without a decode error, `finish` is `Ok` exactly when a header was seen and no bytes are
//!   left over.

use bytes::BytesMut;
use wire::{Frame, GroupDecoder, GroupEvent, WireError};

#[derive(Debug)]
struct Outcome {
    events: Vec<(GroupEvent, Vec<u8>)>,
    error: Option<WireError>,
    finish: Result<(), WireError>,
    leftover: usize,
}

fn run(stream: &[u8], chunk: usize) -> Outcome {
    let mut dec = GroupDecoder::new();
    let mut buf = BytesMut::new();
    let mut pushed = 0;
    let mut events = Vec::new();
    let mut error = None;
    'feed: for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        pushed += piece.len();
        loop {
            let start = pushed - buf.len();
            match dec.decode(&mut buf) {
                Ok(Some(event)) => {
                    let end = pushed - buf.len();
                    events.push((event, stream[start..end].to_vec()));
                }
                Ok(None) => {
                    assert!(
                        dec.wanted(&buf) > 0,
                        "decode needs more bytes but wanted() asks for none"
                    );
                    break;
                }
                Err(err) => {
                    error = Some(err);
                    break 'feed;
                }
            }
        }
    }
    Outcome {
        events,
        error,
        finish: dec.finish(&buf),
        leftover: buf.len(),
    }
}

/// The target's body: panics on any input that breaks a property above.
pub fn check(data: &[u8]) {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let chunk = if selector == 0 {
        stream.len().max(1)
    } else {
        usize::from(selector)
    };

    let out = run(stream, chunk);

    for (i, (event, wire)) in out.events.iter().enumerate() {
        match event {
            GroupEvent::Header(header) => {
                assert_eq!(i, 0, "a header after the first event");
                assert_eq!(
                    &header.to_bytes()[..],
                    &wire[..],
                    "header re-encodes differently"
                );
            }
            GroupEvent::Frame(frame) => {
                assert_ne!(i, 0, "a frame before the header");
                assert_eq!(
                    &frame.encoded()[..],
                    &wire[..],
                    "encoded() is not the input bytes"
                );
                assert_eq!(frame.payload_len(), frame.payload().len());
                let rebuilt =
                    Frame::new(frame.capture_us(), &frame.payload()).expect("payload within limit");
                assert_eq!(&rebuilt, frame, "frame re-encodes differently");
            }
        }
    }

    if out.error.is_none() {
        let complete = !out.events.is_empty() && out.leftover == 0;
        assert_eq!(
            out.finish.is_ok(),
            complete,
            "finish() = {:?} with {} events and {} bytes left",
            out.finish,
            out.events.len(),
            out.leftover
        );
    }

    if chunk < stream.len() {
        let whole = run(stream, stream.len().max(1));
        assert_eq!(
            (&out.events, &out.error),
            (&whole.events, &whole.error),
            "chunk size {chunk} changes the outcome"
        );
        if out.error.is_none() {
            // After an error the chunked run stops feeding, so only then are these comparable.
            assert_eq!((&out.finish, out.leftover), (&whole.finish, whole.leftover));
        }
    }
}
