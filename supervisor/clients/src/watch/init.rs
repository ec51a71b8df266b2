//! An init segment carried inline at the front of a group's first frame (a publisher whose
//! codec setup changed mid-stream).

/// Splits an init segment carried inline (ftyp, then moov) off the front of a frame's
/// payload: `(init, fragment)`. `None` when the payload does not start with ftyp, or when its
/// top-level boxes up to the moov are not whole and well formed: the payload is then taken
/// as the usual moof+mdat.
pub(super) fn split_inline_init(payload: &[u8]) -> Option<(&[u8], &[u8])> {
    let (kind, mut at) = top_level_box(payload, 0)?;
    if &kind != b"ftyp" {
        return None;
    }
    // Every box is at least a header long, so `at` grows on each turn.
    loop {
        let (kind, end) = top_level_box(payload, at)?;
        match &kind {
            b"moov" => return Some(payload.split_at(end)),
            b"moof" | b"mdat" => return None,
            _ => at = end,
        }
    }
}

/// The type of the box starting at `at` in `data`, and where it ends, when its header is
/// whole and the box fits in `data`. Size 1 means a 64-bit size follows the type; size 0, a
/// box running to the end.
fn top_level_box(data: &[u8], at: usize) -> Option<([u8; 4], usize)> {
    let header = data.get(at..at.checked_add(8)?)?;
    let (size, kind) = header.split_at(4);
    let kind: [u8; 4] = kind.try_into().ok()?;
    let (size, header_len) = match u32::from_be_bytes(size.try_into().ok()?) {
        1 => {
            let large = data.get(at.checked_add(8)?..at.checked_add(16)?)?;
            (u64::from_be_bytes(large.try_into().ok()?), 16)
        }
        0 => ((data.len() - at) as u64, 8),
        small => (u64::from(small), 8),
    };
    if size < header_len {
        return None;
    }
    let end = at.checked_add(usize::try_from(size).ok()?)?;
    (end <= data.len()).then_some((kind, end))
}
