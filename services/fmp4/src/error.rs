use std::fmt;
use std::sync::Arc;

use mp4_atom::FourCC;

/// Why the input is not an acceptable fragmented MP4 stream or init segment.
///
/// Offsets are byte positions in the whole input, counted from the first byte ever pushed
/// into the [`Reader`](crate::Reader) (or from the start of the data given to
/// [`Init::parse`](crate::Init::parse)). The reader returns the same error again on every
/// later call, hence `Clone` and `PartialEq`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A box with size 0 ("extends to the end of the file"): a live stream has no end.
    #[error(
        "box '{}' at offset {offset} has size 0 (\"to end of file\"), unsupported in a live stream",
        Printable(*.kind)
    )]
    BoxSizeZero {
        /// Box type.
        kind: FourCC,
        /// Offset of the box header.
        offset: u64,
    },
    /// A declared box size smaller than the box's own header.
    #[error(
        "box '{}' at offset {offset} declares size {size}, smaller than its {header}-byte header",
        Printable(*.kind)
    )]
    BadBoxSize {
        /// Box type.
        kind: FourCC,
        /// Offset of the box header.
        offset: u64,
        /// Declared size.
        size: u64,
        /// Header length: 8, or 16 with a 64-bit size.
        header: u64,
    },
    /// A box that would make the init or the fragment exceed its size limit. Raised from the
    /// box header alone, before any of the payload is buffered.
    #[error(
        "box '{}' at offset {offset} declares {size} bytes, making the {item} {total} bytes, over the limit of {max}",
        Printable(*.kind)
    )]
    BoxTooLarge {
        /// Box type.
        kind: FourCC,
        /// Offset of the box header.
        offset: u64,
        /// Declared size of the box.
        size: u64,
        /// `"init"` or `"fragment"`.
        item: &'static str,
        /// Size of the item with this box included (saturating).
        total: u64,
        /// The limit: [`MAX_INIT_SIZE`](crate::MAX_INIT_SIZE) or
        /// [`MAX_FRAGMENT_SIZE`](crate::MAX_FRAGMENT_SIZE).
        max: usize,
    },
    /// The stream starts with a fragment (or an `mdat`) instead of an init segment.
    #[error(
        "box '{}' at offset {offset} starts a fragment before any init segment",
        Printable(*.kind)
    )]
    FragmentBeforeInit {
        /// Box type.
        kind: FourCC,
        /// Offset of the box header.
        offset: u64,
    },
    /// The init segment ends without having had a `moov`.
    #[error("the {init_size}-byte init segment ending at offset {offset} has no moov")]
    MissingMoov {
        /// Where the init segment ends: the offset of the box that starts the first fragment,
        /// or the end of the data.
        offset: u64,
        /// Bytes of init boxes before that offset.
        init_size: usize,
    },
    /// A second `ftyp` or `moov`.
    #[error(
        "box '{}' at offset {offset} repeats an init box; a stream has one init segment",
        Printable(*.kind)
    )]
    DuplicateInit {
        /// Box type (`ftyp` or `moov`).
        kind: FourCC,
        /// Offset of the box header.
        offset: u64,
    },
    /// A `moof` followed by something other than an `mdat`.
    #[error(
        "box '{}' at offset {offset} follows the moof at offset {moof_offset} where an mdat must",
        Printable(*.kind)
    )]
    MoofWithoutMdat {
        /// Type of the box found instead of `mdat`.
        kind: FourCC,
        /// Offset of that box.
        offset: u64,
        /// Offset of the `moof` still waiting for its `mdat`.
        moof_offset: u64,
    },
    /// An `mdat` that does not directly follow a `moof`.
    #[error("mdat at offset {offset} is not preceded by a moof")]
    MdatWithoutMoof {
        /// Offset of the `mdat` header.
        offset: u64,
    },
    /// A `moov` or `moof` whose contents mp4-atom rejects: a child running past its parent, a
    /// box too short for its fields, an unknown version, a mandatory child missing...
    #[error("box '{}' at offset {offset} is malformed", Printable(*.kind))]
    Decode {
        /// Type of the top-level box.
        kind: FourCC,
        /// Offset of its header.
        offset: u64,
        /// What mp4-atom found wrong inside it.
        source: DecodeError,
    },
    /// The input ended while an item was incomplete.
    #[error(
        "input ended inside an unfinished {item} starting at offset {offset}, with {buffered} bytes buffered"
    )]
    Truncated {
        /// `"init"` or `"fragment"`.
        item: &'static str,
        /// Offset where the unfinished item (or, for [`Init::parse`](crate::Init::parse), the
        /// unfinished box) starts.
        offset: u64,
        /// Bytes of it buffered.
        buffered: usize,
    },
}

/// An [`mp4_atom::Error`], made cloneable and comparable so that [`Error`] can be.
///
/// Two are equal when mp4-atom describes them identically (same variant, same box type);
/// that is what a test or a fuzz target comparing two runs over the same bytes needs.
#[derive(Clone)]
pub struct DecodeError(Arc<mp4_atom::Error>);

impl DecodeError {
    /// The error as mp4-atom reported it.
    #[must_use]
    pub fn get(&self) -> &mp4_atom::Error {
        &self.0
    }
}

impl From<mp4_atom::Error> for DecodeError {
    fn from(err: mp4_atom::Error) -> Self {
        Self(Arc::new(err))
    }
}

impl fmt::Debug for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for DecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for DecodeError {
    fn eq(&self, other: &Self) -> bool {
        // mp4_atom::Error is not PartialEq (it can hold an io::Error, which never happens when
        // decoding from memory); its Debug form carries every field.
        format!("{:?}", self.0) == format!("{:?}", other.0)
    }
}

impl Eq for DecodeError {}

/// A box type for error messages: printable ASCII as is, anything else as `\xNN`, so that
/// garbage input still gives a readable message (mp4-atom's own Display replaces such bytes
/// with U+FFFD, which hides what they were).
struct Printable(FourCC);

impl fmt::Display for Printable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in <[u8; 4]>::from(self.0) {
            if b.is_ascii_graphic() || b == b' ' {
                write!(f, "{}", char::from(b))?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}
