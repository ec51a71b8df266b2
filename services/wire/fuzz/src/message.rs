//! Session-stream messages: `Message::decode` on arbitrary bytes, fed in arbitrary chunks.
//!
//! Input: byte 0 picks the chunk size (0 = everything at once, else 1..=255 bytes per push),
//! the rest is the stream. Checks, besides "never panics":
//! - `Ok(None)` leaves the buffer untouched (as documented);
//! - chunked decoding yields the same messages and the same final error as decoding the
//!   whole input at once;
//! - every decoded message re-encodes (`to_bytes`) to exactly the bytes it was decoded from,
//!   and those decode back to the same value.

use bytes::BytesMut;
use wire::{Message, WireError};

/// What a connection gets out of a stream: the messages, each with the bytes it came from,
/// and the error that closed it, if any.
#[derive(Debug, PartialEq)]
struct Outcome {
    messages: Vec<(Message, Vec<u8>)>,
    error: Option<WireError>,
}

fn run(stream: &[u8], chunk: usize) -> Outcome {
    let mut buf = BytesMut::new();
    let mut pushed = 0;
    let mut messages = Vec::new();
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        pushed += piece.len();
        loop {
            let before = buf.clone();
            let start = pushed - buf.len();
            match Message::decode(&mut buf) {
                Ok(Some(msg)) => {
                    let end = pushed - buf.len();
                    messages.push((msg, stream[start..end].to_vec()));
                }
                Ok(None) => {
                    assert_eq!(buf, before, "Ok(None) must leave the buffer untouched");
                    break;
                }
                Err(err) => {
                    return Outcome {
                        messages,
                        error: Some(err),
                    };
                }
            }
        }
    }
    Outcome {
        messages,
        error: None,
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

    let chunked = run(stream, chunk);

    for (msg, wire) in &chunked.messages {
        let encoded = msg.to_bytes();
        assert_eq!(
            &encoded[..],
            &wire[..],
            "re-encoding {msg:?} differs from the bytes it was decoded from"
        );
        let mut again = BytesMut::from(&encoded[..]);
        let decoded = Message::decode(&mut again)
            .expect("re-encoded message decodes")
            .expect("re-encoded message is complete");
        assert_eq!(&decoded, msg, "re-encoded message decodes to another value");
        assert!(again.is_empty(), "re-encoded message has trailing bytes");
    }

    if chunk < stream.len() {
        let whole = run(stream, stream.len().max(1));
        assert_eq!(chunked, whole, "chunk size {chunk} changes the outcome");
    }
}
