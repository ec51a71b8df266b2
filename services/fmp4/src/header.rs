//! Top-level box headers of the pipe.
//!
//! mp4-atom decodes a header too, but its error for a bad size names neither the box nor the
//! sizes, and the reader must tell "not all of the header is here yet" from "this header is
//! wrong" one byte at a time; so the eight (or sixteen) bytes are read here.

use mp4_atom::FourCC;

use crate::Error;

/// A validated box header: `header_len <= size`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BoxHeader {
    pub(crate) kind: FourCC,
    /// Whole box size, header included.
    pub(crate) size: u64,
}

/// The header at the start of `data`, which sits at stream offset `offset`; `Ok(None)` while
/// `data` is too short to hold all of it.
pub(crate) fn parse(data: &[u8], offset: u64) -> Result<Option<BoxHeader>, Error> {
    let (Some(size32), Some(kind)) = (be_bytes::<4>(data, 0), be_bytes::<4>(data, 4)) else {
        return Ok(None);
    };
    let kind = FourCC::new(&kind);
    let (size, header_len) = match u32::from_be_bytes(size32) {
        0 => return Err(Error::BoxSizeZero { kind, offset }),
        1 => match be_bytes::<8>(data, 8) {
            Some(large) => (u64::from_be_bytes(large), 16),
            None => return Ok(None),
        },
        n => (u64::from(n), 8),
    };
    if size < header_len {
        return Err(Error::BadBoxSize {
            kind,
            offset,
            size,
            header: header_len,
        });
    }
    Ok(Some(BoxHeader { kind, size }))
}

fn be_bytes<const N: usize>(data: &[u8], at: usize) -> Option<[u8; N]> {
    data.get(at..at.checked_add(N)?)?.try_into().ok()
}
