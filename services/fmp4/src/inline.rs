//! Init segments carried inside a fragment's payload.
//!
//! When a stream's decoder configuration changes mid-stream (an RTMP publisher changing
//! resolution), the new init segment cannot be announced again, so it travels in-band: every
//! keyframe fragment from the change on starts with the complete new `ftyp` + `moov`,
//! followed by its `moof` + `mdat`. A player that sees one re-initialises its decoder there;
//! one that joins later finds it on the first keyframe it gets.

use bytes::Bytes;
use mp4_atom::{Atom as _, FourCC, Mdat, Moof, Moov};

use crate::header;

const FTYP: FourCC = FourCC::new(b"ftyp");

/// Splits a fragment payload into the init segment it starts with, if any, and the rest.
///
/// The init is the run of complete top-level boxes from a leading `ftyp` up to and including
/// the first `moov`; it is returned only when the payload starts with an `ftyp` and such a
/// `moov` follows. Otherwise (an ordinary fragment, or boxes too short or malformed to
/// delimit one) the answer is `(None, payload)`, so a player can call this on every payload.
/// Both parts share the payload's allocation. A [`Reader`](crate::Reader) refuses a second
/// init in its pipe, so such payloads are split before anything is pushed into one.
#[must_use]
pub fn split_inline_init(payload: &Bytes) -> (Option<Bytes>, Bytes) {
    match inline_init_len(payload) {
        Some(len) => (Some(payload.slice(..len)), payload.slice(len..)),
        None => (None, payload.clone()),
    }
}

/// Length of the leading `ftyp` ... `moov`, when `data` starts with one.
fn inline_init_len(data: &[u8]) -> Option<usize> {
    let mut pos = 0usize;
    loop {
        let rest = data.get(pos..)?;
        let header = header::parse(rest, pos as u64).ok()??;
        let fragment = header.kind == Moof::KIND || header.kind == Mdat::KIND;
        if (pos == 0 && header.kind != FTYP) || fragment {
            return None;
        }
        let size = usize::try_from(header.size).ok()?;
        if size > rest.len() {
            return None;
        }
        pos += size;
        if header.kind == Moov::KIND {
            return Some(pos);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bx(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut out = u32::try_from(payload.len() + 8)
            .expect("small box")
            .to_be_bytes()
            .to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn splits_a_leading_init() {
        let init = [bx(b"ftyp", b"iso6"), bx(b"free", b""), bx(b"moov", b"xx")].concat();
        let fragment = [bx(b"moof", b"m"), bx(b"mdat", b"data")].concat();
        let payload = Bytes::from([init.clone(), fragment.clone()].concat());
        let (found, rest) = split_inline_init(&payload);
        assert_eq!(found.as_deref(), Some(&init[..]));
        assert_eq!(rest, fragment);
    }

    #[test]
    fn leaves_anything_else_whole() {
        let fragment = [bx(b"moof", b"m"), bx(b"mdat", b"data")].concat();
        let moov_first = [bx(b"moov", b""), fragment.clone()].concat();
        let no_moov = [bx(b"ftyp", b"iso6"), fragment.clone()].concat();
        let mut truncated = [bx(b"ftyp", b"iso6"), bx(b"moov", b"xxxx")].concat();
        truncated.truncate(truncated.len() - 1);
        for payload in [
            fragment,
            moov_first,
            no_moov,
            truncated,
            vec![],
            vec![0, 0, 0],
        ] {
            let payload = Bytes::from(payload);
            assert_eq!(split_inline_init(&payload), (None, payload.clone()));
        }
    }
}
