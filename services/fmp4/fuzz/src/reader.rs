//! fMP4 splitting: `Reader::push` in arbitrary chunks, draining `next_item` after each push,
//! then `finish`.
//!
//! Input: byte 0 picks the chunk size (0 = everything at once, else 1..=255 bytes per push),
//! the rest is the stream. Checks, besides "never panics":
//! - the bytes of the emitted items (Init, then Fragments), concatenated, are a prefix of the
//!   input, byte for byte;
//! - an `Init` comes first and only once;
//! - after an error, `next_item` and `finish` keep returning that same error;
//! - without an error, `finish` is `Ok` exactly when every input byte was emitted, and
//!   otherwise reports `Truncated` at the right offset with the right byte count;
//! - chunked reading yields the same items and the same error as one push of everything;
//! - once an `Init` is out, `Init::parse` of its bytes agrees with what the reader decoded;
//! - `Init::parse` of the raw stream never panics either.

use fmp4::{Error, Init, Item, Reader};

#[derive(Debug)]
struct Outcome {
    items: Vec<Item>,
    error: Option<Error>,
    finish: Result<(), Error>,
    /// The reader's tracks at the end.
    init: Option<Init>,
}

fn run(stream: &[u8], chunk: usize) -> Outcome {
    let mut reader = Reader::new();
    let mut items = Vec::new();
    let mut error = None;
    'feed: for piece in stream.chunks(chunk) {
        reader.push(piece);
        loop {
            match reader.next_item() {
                Ok(Some(item)) => items.push(item),
                Ok(None) => break,
                Err(err) => {
                    error = Some(err);
                    break 'feed;
                }
            }
        }
    }
    if let Some(err) = &error {
        // The reader is dead: more input changes nothing, the same error comes back.
        reader.push(b"\0\0\0\x08free");
        assert_eq!(
            reader.next_item().as_ref(),
            Err(err),
            "next_item after an error"
        );
        assert_eq!(reader.finish().as_ref(), Err(err), "finish after an error");
    }
    let finish = reader.finish();
    Outcome {
        items,
        error,
        finish,
        init: reader.init().cloned(),
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

    let _ = Init::parse(stream);
    let out = run(stream, chunk);

    let mut emitted = 0usize;
    for (i, item) in out.items.iter().enumerate() {
        assert_eq!(
            matches!(item, Item::Init(_)),
            i == 0,
            "item {i} is {}",
            if i == 0 {
                "not an Init"
            } else {
                "a second Init"
            }
        );
        let bytes = item.data();
        assert!(!bytes.is_empty(), "item {i} is empty");
        let end = emitted + bytes.len();
        assert!(
            end <= stream.len() && &stream[emitted..end] == bytes,
            "item {i} ({} bytes) is not the input at offset {emitted}",
            bytes.len()
        );
        emitted = end;
    }

    if let Some(Item::Init(init)) = out.items.first() {
        // The reader decoded this very moov before emitting it, and nothing later changes
        // its tracks, error or not.
        assert_eq!(
            Init::parse(init).as_ref().ok(),
            out.init.as_ref(),
            "Init::parse disagrees with the reader"
        );
    }

    if out.error.is_none() {
        if emitted == stream.len() {
            assert_eq!(out.finish, Ok(()), "finish with every byte emitted");
        } else {
            match &out.finish {
                Err(Error::Truncated {
                    offset, buffered, ..
                }) => {
                    assert_eq!(*offset, emitted as u64, "Truncated offset");
                    assert_eq!(*buffered, stream.len() - emitted, "Truncated byte count");
                }
                other => panic!(
                    "finish = {other:?} with {} of {} bytes emitted",
                    emitted,
                    stream.len()
                ),
            }
        }
    }

    if chunk < stream.len() {
        let whole = run(stream, stream.len().max(1));
        assert_eq!(
            (&out.items, &out.error),
            (&whole.items, &whole.error),
            "chunk size {chunk} changes the outcome"
        );
        if out.error.is_none() {
            assert_eq!(out.finish, whole.finish);
        }
    }
}
