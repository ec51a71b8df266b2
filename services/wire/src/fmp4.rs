//! Incremental, I/O-free splitter for fragmented MP4 / CMAF streams.
//!
//! The input is what `ffmpeg -f mp4 -movflags cmaf+separate_moof+delay_moov+
//! skip_trailer+frag_every_frame` writes to a pipe: an init segment
//! (`ftyp` + `moov`) followed by fragments (`moof` + `mdat`). Bytes are fed
//! with [`Fmp4Reader::push`] in chunks of any size and complete [`Item`]s come
//! out of [`Fmp4Reader::next_item`]; every item is a slice of the input, so
//! the concatenation of all items is the input byte for byte.
//!
//! # Segmentation
//!
//! * **Init**: every top-level box before the first box that starts a
//!   fragment (`moof`, or one of the fragment prefix boxes `styp`, `sidx`,
//!   `ssix`, `prft`, `emsg`). It must contain a `moov`. `free`/`skip` (and any
//!   other unknown box) between `moov` and the first fragment are kept in the
//!   init. A second `ftyp` or `moov` anywhere is an error.
//! * **Fragment**: any prefix boxes (`styp`, `sidx`, `prft`, `emsg`, `free`,
//!   or any unknown box), then one `moof`, then the `mdat` that must follow it
//!   immediately. Boxes after an `mdat` belong to the next fragment.
//!
//! # Keyframes
//!
//! Keyframes are read from sample flags in the `moof` only, without codec
//! parsing. The flags of a track fragment's first sample come from, in order:
//! `trun` first-sample-flags, the first sample's own flags in `trun`, the
//! `tfhd` default-sample-flags, the `trex` default for the track; with none
//! of them the sample counts as non-sync. Then:
//!
//! * If the init has at least one `vide` track, a fragment is a keyframe when
//!   it has a `traf` of a `vide` track whose first sample has
//!   `sample_depends_on == 2` (depends on no other sample) and
//!   `sample_is_non_sync_sample == 0`. Audio fragments are never keyframes
//!   then, so a group of pictures always starts with video.
//! * Otherwise, a fragment is a keyframe when the first sample of its first
//!   `traf` has `sample_is_non_sync_sample == 0` (`sample_depends_on` is
//!   ignored, audio codecs rarely set it).
//!
//! A `traf` without samples never makes a keyframe, and a `traf` whose
//! `track_ID` is not in the `moov` is never a video track.
//!
//! # Memory
//!
//! Box sizes are checked against [`MAX_INIT_SIZE`] / [`MAX_FRAGMENT_SIZE`] as
//! soon as a box header is buffered, before its payload is, so a caller that
//! drains [`Fmp4Reader::next_item`] after each [`Fmp4Reader::push`] never holds
//! more than one item's limit plus one pushed chunk.
//! Emitted items share their allocation with the reader's buffer (no copy),
//! so a long-held item keeps the buffer chunk it was cut from alive.

use std::collections::HashMap;
use std::fmt;

use bytes::{Bytes, BytesMut};

/// Largest init segment (all boxes before the first fragment) accepted.
pub const MAX_INIT_SIZE: usize = 1 << 20;

/// Largest fragment accepted: its prefix boxes, `moof` and `mdat` together.
pub const MAX_FRAGMENT_SIZE: usize = 4 << 20;

/// A box type, the four bytes after a box's size.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FourCc(pub [u8; 4]);

impl fmt::Display for FourCc {
    /// Printable ASCII as is, anything else as `\xNN`, so garbage input still
    /// yields a readable error message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in &self.0 {
            if b.is_ascii_graphic() || b == b' ' {
                write!(f, "{}", char::from(b))?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for FourCc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FourCc(\"{self}\")")
    }
}

const FTYP: FourCc = FourCc(*b"ftyp");
const MOOV: FourCc = FourCc(*b"moov");
const MOOF: FourCc = FourCc(*b"moof");
const MDAT: FourCc = FourCc(*b"mdat");
const STYP: FourCc = FourCc(*b"styp");
const SIDX: FourCc = FourCc(*b"sidx");
const SSIX: FourCc = FourCc(*b"ssix");
const PRFT: FourCc = FourCc(*b"prft");
const EMSG: FourCc = FourCc(*b"emsg");
const TRAK: FourCc = FourCc(*b"trak");
const TKHD: FourCc = FourCc(*b"tkhd");
const MDIA: FourCc = FourCc(*b"mdia");
const HDLR: FourCc = FourCc(*b"hdlr");
const MVEX: FourCc = FourCc(*b"mvex");
const TREX: FourCc = FourCc(*b"trex");
const TRAF: FourCc = FourCc(*b"traf");
const TFHD: FourCc = FourCc(*b"tfhd");
const TRUN: FourCc = FourCc(*b"trun");
const VIDE: FourCc = FourCc(*b"vide");

/// One unit of output: the init segment or one fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// ftyp + moov (everything before the first fragment).
    Init(Bytes),
    /// One fragment (its prefix boxes, moof, mdat), byte for byte as in the input.
    Fragment {
        /// The fragment's bytes, exactly as they appeared in the input.
        data: Bytes,
        /// Whether a decoder can start at this fragment (see the module docs).
        keyframe: bool,
    },
}

/// Why the input is not an acceptable fragmented MP4 stream.
///
/// Offsets are byte positions in the whole input stream, counted from the
/// first byte ever pushed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fmp4Error {
    /// A box with size 0 ("extends to the end of the file"); a live stream has
    /// no end, and inside a container the form is invalid.
    #[error(
        "box '{kind}' at offset {offset} has size 0 (\"to end of file\"), unsupported in a live stream"
    )]
    BoxSizeZero {
        /// Box type.
        kind: FourCc,
        /// Offset of the box header.
        offset: u64,
    },
    /// A declared box size smaller than the box's own header.
    #[error(
        "box '{kind}' at offset {offset} declares size {size}, smaller than its {header}-byte header"
    )]
    BadBoxSize {
        /// Box type.
        kind: FourCc,
        /// Offset of the box header.
        offset: u64,
        /// Declared size.
        size: u64,
        /// Header length (8, or 16 with a 64-bit size).
        header: u64,
    },
    /// A box that would make the init or fragment exceed its size limit.
    #[error(
        "box '{kind}' at offset {offset} declares {size} bytes, making the {item} {total} bytes, over the limit of {max}"
    )]
    BoxTooLarge {
        /// Box type.
        kind: FourCc,
        /// Offset of the box header.
        offset: u64,
        /// Declared size of the box.
        size: u64,
        /// `"init"` or `"fragment"`.
        item: &'static str,
        /// Size of the item with this box included (saturating).
        total: u64,
        /// The limit: [`MAX_INIT_SIZE`] or [`MAX_FRAGMENT_SIZE`].
        max: usize,
    },
    /// The stream starts with a fragment (or an `mdat`) instead of an init segment.
    #[error("box '{kind}' at offset {offset} starts a fragment before any init segment")]
    FragmentBeforeInit {
        /// Box type.
        kind: FourCc,
        /// Offset of the box header.
        offset: u64,
    },
    /// The first fragment starts but the init segment before it has no `moov`.
    #[error(
        "box '{kind}' at offset {offset} starts the first fragment, but the {init_size}-byte init segment has no moov"
    )]
    MissingMoov {
        /// Type of the box that starts the first fragment.
        kind: FourCc,
        /// Offset of that box.
        offset: u64,
        /// Bytes of init boxes seen before it.
        init_size: usize,
    },
    /// A second `ftyp` or `moov`.
    #[error("box '{kind}' at offset {offset} repeats an init box; a stream has one init segment")]
    DuplicateInit {
        /// Box type (`ftyp` or `moov`).
        kind: FourCc,
        /// Offset of the box header.
        offset: u64,
    },
    /// A `moof` followed by something other than an `mdat`.
    #[error(
        "box '{kind}' at offset {offset} follows the moof at offset {moof_offset} where an mdat must"
    )]
    MoofWithoutMdat {
        /// Type of the box found instead of `mdat`.
        kind: FourCc,
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
    /// A box nested in `moov`/`moof` that extends past its parent.
    #[error(
        "child of '{parent}' at offset {offset} needs {size} bytes but only {available} remain in the parent"
    )]
    ChildOverrun {
        /// Type of the containing box.
        parent: FourCc,
        /// Offset of the child box header.
        offset: u64,
        /// Bytes the child needs (its declared size, or the header length when
        /// not even the header fits).
        size: u64,
        /// Bytes left in the parent from the child's offset.
        available: u64,
    },
    /// A box too short for the fields its version and flags announce.
    #[error(
        "box '{kind}' at offset {offset} has {size} payload bytes, but its fields need {needed}"
    )]
    ShortBox {
        /// Box type.
        kind: FourCc,
        /// Offset of the box header.
        offset: u64,
        /// Payload bytes present.
        size: u64,
        /// Payload bytes the fields need.
        needed: u64,
    },
    /// A full box with a version this parser does not know.
    #[error("box '{kind}' at offset {offset} has unsupported version {version}")]
    UnsupportedVersion {
        /// Box type.
        kind: FourCc,
        /// Offset of the box header.
        offset: u64,
        /// The version found.
        version: u8,
    },
    /// A container missing a mandatory child (`trak` without `tkhd`, ...).
    #[error("box '{parent}' at offset {offset} has no '{kind}' child")]
    MissingChild {
        /// Type of the container.
        parent: FourCc,
        /// Type of the missing child.
        kind: FourCc,
        /// Offset of the container's header.
        offset: u64,
    },
    /// The input ended while an item was incomplete.
    #[error(
        "input ended inside an unfinished {item} starting at offset {offset}, with {buffered} bytes buffered"
    )]
    Truncated {
        /// `"init"` or `"fragment"`.
        item: &'static str,
        /// Offset where the unfinished item starts.
        offset: u64,
        /// Bytes of it buffered.
        buffered: usize,
    },
}

/// Splits a pushed byte stream into [`Item`]s.
///
/// Drain [`next_item`](Self::next_item) until it returns `Ok(None)` after each
/// [`push`](Self::push); that keeps buffered memory within one item's limit
/// plus one pushed chunk.
#[derive(Debug, Default)]
pub struct Fmp4Reader {
    /// Unconsumed input. Starts at the first byte of the item being assembled.
    buf: BytesMut,
    /// Stream offset of `buf[0]`.
    base: u64,
    /// Length of the prefix of `buf` made of complete boxes of the current
    /// item. Invariant: `pending <= buf.len()`, and `pending` is within the
    /// current item's size limit.
    pending: usize,
    /// Whether the init segment has been emitted.
    init_done: bool,
    /// Whether the init boxes so far include an `ftyp`.
    seen_ftyp: bool,
    /// Whether the init boxes so far include a `moov`.
    seen_moov: bool,
    /// The current fragment's `moof`, once parsed; the next box must be `mdat`.
    moof: Option<MoofSeen>,
    /// What the `moov` says about the tracks.
    tracks: HashMap<u32, Track>,
    /// Whether any track is a `vide` track.
    has_video: bool,
    /// The error that stopped the reader; returned again on every later call.
    failed: Option<Fmp4Error>,
}

/// A parsed `moof` waiting for its `mdat`.
#[derive(Debug, Clone, Copy)]
struct MoofSeen {
    offset: u64,
    keyframe: bool,
}

/// What the init says about one track.
#[derive(Debug, Clone, Copy)]
struct Track {
    handler: FourCc,
    /// `trex` `default_sample_flags`, when the `mvex` has a `trex` for the track.
    default_sample_flags: Option<u32>,
}

/// Outcome of one parsing step.
enum Step {
    NeedMore,
    Continue,
    Emit(Item),
}

impl Fmp4Reader {
    /// Creates a reader expecting the start of a stream.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends input bytes. Ignored once the reader has failed.
    pub fn push(&mut self, data: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// Returns the next complete item, Ok(None) when more input is needed.
    /// After an Err the reader is unusable: every later call returns the same
    /// error, and the buffered input is dropped.
    ///
    /// # Errors
    ///
    /// Any [`Fmp4Error`] but [`Fmp4Error::Truncated`], when the buffered
    /// input cannot be the start of a valid stream.
    pub fn next_item(&mut self) -> Result<Option<Item>, Fmp4Error> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        loop {
            let step = if self.init_done {
                self.step_fragment()
            } else {
                self.step_init()
            };
            match step {
                Ok(Step::Continue) => {}
                Ok(Step::NeedMore) => return Ok(None),
                Ok(Step::Emit(item)) => return Ok(Some(item)),
                Err(err) => {
                    self.failed = Some(err.clone());
                    self.buf = BytesMut::new();
                    self.pending = 0;
                    return Err(err);
                }
            }
        }
    }

    /// Call at end of input: Ok(()) when no partial box is buffered,
    /// Err(Truncated) otherwise. Buffered complete boxes of an unfinished item
    /// (an init not yet followed by a fragment, a `moof` without its `mdat`)
    /// count as truncation too, since they would never be emitted.
    ///
    /// # Errors
    ///
    /// [`Fmp4Error::Truncated`] when input is buffered, or the error that
    /// stopped the reader earlier.
    pub fn finish(&self) -> Result<(), Fmp4Error> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        Err(Fmp4Error::Truncated {
            item: if self.init_done { "fragment" } else { "init" },
            offset: self.base,
            buffered: self.buf.len(),
        })
    }

    /// Header of the box following the current item's complete boxes, if
    /// buffered, with its stream offset.
    fn next_header(&self) -> Result<Option<(BoxHeader, u64)>, Fmp4Error> {
        let rest = self.buf.get(self.pending..).unwrap_or_default();
        let offset = self.base.saturating_add(self.pending as u64);
        match parse_header(rest, offset)? {
            HeaderParse::Complete(header) => Ok(Some((header, offset))),
            HeaderParse::Incomplete { .. } => Ok(None),
        }
    }

    /// Checks that the box fits the current item's limit and returns its size
    /// as usize. Runs before the payload is buffered.
    fn box_size_within(
        &self,
        header: &BoxHeader,
        offset: u64,
        item: &'static str,
        max: usize,
    ) -> Result<usize, Fmp4Error> {
        let total = (self.pending as u64).saturating_add(header.size);
        let too_large = || Fmp4Error::BoxTooLarge {
            kind: header.kind,
            offset,
            size: header.size,
            item,
            total,
            max,
        };
        if total > max as u64 {
            return Err(too_large());
        }
        usize::try_from(header.size).map_err(|_| too_large())
    }

    /// The whole box at `pending` of `size` bytes, once buffered.
    fn buffered_box(&self, size: usize) -> Option<&[u8]> {
        let end = self.pending.checked_add(size)?;
        self.buf.get(self.pending..end)
    }

    /// Removes the first `len` buffered bytes as an item.
    fn take(&mut self, len: usize) -> Bytes {
        let len = len.min(self.buf.len());
        let data = self.buf.split_to(len).freeze();
        self.base = self.base.saturating_add(len as u64);
        self.pending = 0;
        data
    }

    /// One box while the init segment is being collected.
    fn step_init(&mut self) -> Result<Step, Fmp4Error> {
        let Some((header, offset)) = self.next_header()? else {
            return Ok(Step::NeedMore);
        };
        let kind = header.kind;
        if starts_fragment(kind) || kind == MDAT {
            if self.pending == 0 {
                return Err(Fmp4Error::FragmentBeforeInit { kind, offset });
            }
            if kind == MDAT {
                return Err(Fmp4Error::MdatWithoutMoof { offset });
            }
            if !self.seen_moov {
                return Err(Fmp4Error::MissingMoov {
                    kind,
                    offset,
                    init_size: self.pending,
                });
            }
            let data = self.take(self.pending);
            self.init_done = true;
            return Ok(Step::Emit(Item::Init(data)));
        }
        if (kind == FTYP && self.seen_ftyp) || (kind == MOOV && self.seen_moov) {
            return Err(Fmp4Error::DuplicateInit { kind, offset });
        }
        let size = self.box_size_within(&header, offset, "init", MAX_INIT_SIZE)?;
        let Some(whole) = self.buffered_box(size) else {
            return Ok(Step::NeedMore);
        };
        if kind == MOOV {
            let payload = whole.get(header.header_len..).unwrap_or_default();
            let payload_offset = offset.saturating_add(header.header_len as u64);
            let (tracks, has_video) = parse_moov(payload, payload_offset)?;
            self.tracks = tracks;
            self.has_video = has_video;
            self.seen_moov = true;
        } else if kind == FTYP {
            self.seen_ftyp = true;
        }
        self.pending += size;
        Ok(Step::Continue)
    }

    /// One box once the init segment has been emitted.
    fn step_fragment(&mut self) -> Result<Step, Fmp4Error> {
        let Some((header, offset)) = self.next_header()? else {
            return Ok(Step::NeedMore);
        };
        let kind = header.kind;
        if kind == FTYP || kind == MOOV {
            return Err(Fmp4Error::DuplicateInit { kind, offset });
        }
        match self.moof {
            Some(moof) if kind != MDAT => {
                return Err(Fmp4Error::MoofWithoutMdat {
                    kind,
                    offset,
                    moof_offset: moof.offset,
                });
            }
            None if kind == MDAT => return Err(Fmp4Error::MdatWithoutMoof { offset }),
            _ => {}
        }
        let size = self.box_size_within(&header, offset, "fragment", MAX_FRAGMENT_SIZE)?;
        let Some(whole) = self.buffered_box(size) else {
            return Ok(Step::NeedMore);
        };
        if kind == MOOF {
            let payload = whole.get(header.header_len..).unwrap_or_default();
            let payload_offset = offset.saturating_add(header.header_len as u64);
            let keyframe = moof_is_keyframe(&self.tracks, self.has_video, payload, payload_offset)?;
            self.moof = Some(MoofSeen { offset, keyframe });
            self.pending += size;
            return Ok(Step::Continue);
        }
        if let (MDAT, Some(moof)) = (kind, self.moof) {
            self.moof = None;
            let data = self.take(self.pending + size);
            return Ok(Step::Emit(Item::Fragment {
                data,
                keyframe: moof.keyframe,
            }));
        }
        // A prefix box (styp, sidx, prft, emsg, free, unknown): part of the
        // fragment whose moof follows.
        self.pending += size;
        Ok(Step::Continue)
    }
}

/// Top-level boxes that open a fragment, so end the init segment.
fn starts_fragment(kind: FourCc) -> bool {
    [MOOF, STYP, SIDX, SSIX, PRFT, EMSG].contains(&kind)
}

/// A validated box header: `header_len <= size`.
#[derive(Debug, Clone, Copy)]
struct BoxHeader {
    kind: FourCc,
    /// Whole box size, header included.
    size: u64,
    /// 8, or 16 with a 64-bit largesize.
    header_len: usize,
}

enum HeaderParse {
    Complete(BoxHeader),
    /// `data` is shorter than the header; `needed` bytes make it whole.
    Incomplete {
        needed: u64,
    },
}

/// Parses and validates the box header at the start of `data`, located at
/// stream offset `offset`.
fn parse_header(data: &[u8], offset: u64) -> Result<HeaderParse, Fmp4Error> {
    let (Some(size32), Some(kind)) = (be_u32(data, 0), data.get(4..8)) else {
        return Ok(HeaderParse::Incomplete { needed: 8 });
    };
    let mut kind_bytes = [0u8; 4];
    kind_bytes.copy_from_slice(kind);
    let kind = FourCc(kind_bytes);
    let (size, header_len) = match size32 {
        0 => return Err(Fmp4Error::BoxSizeZero { kind, offset }),
        1 => match be_u64(data, 8) {
            Some(large) => (large, 16),
            None => return Ok(HeaderParse::Incomplete { needed: 16 }),
        },
        n => (u64::from(n), 8),
    };
    if size < header_len as u64 {
        return Err(Fmp4Error::BadBoxSize {
            kind,
            offset,
            size,
            header: header_len as u64,
        });
    }
    Ok(HeaderParse::Complete(BoxHeader {
        kind,
        size,
        header_len,
    }))
}

fn be_u32(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

fn be_u64(data: &[u8], at: usize) -> Option<u64> {
    let bytes = data.get(at..at.checked_add(8)?)?;
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// A box nested in a container that was fully buffered.
struct Child<'a> {
    kind: FourCc,
    /// Stream offset of the child's header.
    offset: u64,
    /// 8, or 16 with a 64-bit largesize.
    header_len: usize,
    /// The child's payload (after its header).
    payload: &'a [u8],
}

impl Child<'_> {
    /// The boxes inside this one.
    fn children(&self) -> Children<'_> {
        let base = self.offset.saturating_add(self.header_len as u64);
        Children::new(self.kind, self.payload, base)
    }

    /// Reader for a full box's fields (version and flags first).
    fn fields(&self) -> Fields<'_> {
        Fields {
            kind: self.kind,
            offset: self.offset,
            data: self.payload,
            pos: 0,
        }
    }
}

/// Iterates over the boxes packed in a container's payload. Every child must
/// lie entirely inside the payload; after the first error it yields nothing.
struct Children<'a> {
    parent: FourCc,
    data: &'a [u8],
    pos: usize,
    /// Stream offset of `data[0]`.
    base: u64,
}

impl<'a> Children<'a> {
    fn new(parent: FourCc, data: &'a [u8], base: u64) -> Self {
        Self {
            parent,
            data,
            pos: 0,
            base,
        }
    }
}

impl<'a> Iterator for Children<'a> {
    type Item = Result<Child<'a>, Fmp4Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.data.get(self.pos..).filter(|r| !r.is_empty())?;
        let offset = self.base.saturating_add(self.pos as u64);
        let available = rest.len() as u64;
        let result = match parse_header(rest, offset) {
            Err(err) => Err(err),
            Ok(HeaderParse::Incomplete { needed }) => Err(Fmp4Error::ChildOverrun {
                parent: self.parent,
                offset,
                size: needed,
                available,
            }),
            Ok(HeaderParse::Complete(header)) => {
                let body = usize::try_from(header.size)
                    .ok()
                    .and_then(|size| rest.get(header.header_len..size));
                match body {
                    Some(payload) => {
                        // header.size <= rest.len() here, so this cannot overflow.
                        self.pos += payload.len() + header.header_len;
                        Ok(Child {
                            kind: header.kind,
                            offset,
                            header_len: header.header_len,
                            payload,
                        })
                    }
                    None => Err(Fmp4Error::ChildOverrun {
                        parent: self.parent,
                        offset,
                        size: header.size,
                        available,
                    }),
                }
            }
        };
        if result.is_err() {
            self.pos = self.data.len();
        }
        Some(result)
    }
}

/// Sequential reader of a box's fixed fields, failing with
/// [`Fmp4Error::ShortBox`] when the payload runs out.
struct Fields<'a> {
    kind: FourCc,
    /// Stream offset of the box header, for errors.
    offset: u64,
    data: &'a [u8],
    pos: usize,
}

impl Fields<'_> {
    fn short(&self, len: u64) -> Fmp4Error {
        Fmp4Error::ShortBox {
            kind: self.kind,
            offset: self.offset,
            size: self.data.len() as u64,
            needed: (self.pos as u64).saturating_add(len),
        }
    }

    /// Fails unless `len` more bytes are present, without consuming them.
    fn require(&self, len: u64) -> Result<(), Fmp4Error> {
        let left = (self.data.len() - self.pos.min(self.data.len())) as u64;
        if len > left {
            return Err(self.short(len));
        }
        Ok(())
    }

    fn skip(&mut self, len: usize) -> Result<(), Fmp4Error> {
        self.require(len as u64)?;
        self.pos += len;
        Ok(())
    }

    fn u32(&mut self) -> Result<u32, Fmp4Error> {
        let value = be_u32(self.data, self.pos).ok_or_else(|| self.short(4))?;
        self.pos += 4;
        Ok(value)
    }

    /// The version byte and 24-bit flags that open every full box.
    fn version_flags(&mut self) -> Result<(u8, u32), Fmp4Error> {
        let word = self.u32()?;
        let [version, ..] = word.to_be_bytes();
        Ok((version, word & 0x00ff_ffff))
    }
}

/// Track table from the `moov` payload: handler and `trex` defaults per
/// `track_ID`, and whether any track is video.
fn parse_moov(payload: &[u8], base: u64) -> Result<(HashMap<u32, Track>, bool), Fmp4Error> {
    let mut tracks = HashMap::new();
    let mut trex_defaults = Vec::new();
    for child in Children::new(MOOV, payload, base) {
        let child = child?;
        if child.kind == TRAK {
            let (id, handler) = parse_trak(&child)?;
            tracks.insert(
                id,
                Track {
                    handler,
                    default_sample_flags: None,
                },
            );
        } else if child.kind == MVEX {
            for ext in child.children() {
                let ext = ext?;
                if ext.kind == TREX {
                    let mut fields = ext.fields();
                    fields.version_flags()?;
                    let track_id = fields.u32()?;
                    // default_sample_description_index, _duration, _size.
                    fields.skip(12)?;
                    let flags = fields.u32()?;
                    trex_defaults.push((track_id, flags));
                }
            }
        }
    }
    // mvex may come before or after the traks, so defaults are applied last.
    // A trex for a track_ID without a trak has nothing to apply to.
    for (track_id, flags) in trex_defaults {
        if let Some(track) = tracks.get_mut(&track_id) {
            track.default_sample_flags = Some(flags);
        }
    }
    let has_video = tracks.values().any(|t| t.handler == VIDE);
    Ok((tracks, has_video))
}

/// `track_ID` (from `tkhd`) and `handler_type` (from `mdia/hdlr`) of a `trak`.
fn parse_trak(trak: &Child<'_>) -> Result<(u32, FourCc), Fmp4Error> {
    let mut track_id = None;
    let mut handler = None;
    for child in trak.children() {
        let child = child?;
        if child.kind == TKHD && track_id.is_none() {
            let mut fields = child.fields();
            let (version, _) = fields.version_flags()?;
            // creation_time and modification_time: 32 bits each in version 0,
            // 64 bits each in version 1.
            match version {
                0 => fields.skip(8)?,
                1 => fields.skip(16)?,
                _ => {
                    return Err(Fmp4Error::UnsupportedVersion {
                        kind: TKHD,
                        offset: child.offset,
                        version,
                    });
                }
            }
            track_id = Some(fields.u32()?);
        } else if child.kind == MDIA && handler.is_none() {
            for item in child.children() {
                let item = item?;
                if item.kind == HDLR {
                    let mut fields = item.fields();
                    fields.version_flags()?;
                    // pre_defined
                    fields.skip(4)?;
                    handler = Some(FourCc(fields.u32()?.to_be_bytes()));
                    break;
                }
            }
            if handler.is_none() {
                return Err(Fmp4Error::MissingChild {
                    parent: MDIA,
                    kind: HDLR,
                    offset: child.offset,
                });
            }
        }
    }
    let missing = |kind| Fmp4Error::MissingChild {
        parent: TRAK,
        kind,
        offset: trak.offset,
    };
    let track_id = track_id.ok_or_else(|| missing(TKHD))?;
    let handler = handler.ok_or_else(|| missing(MDIA))?;
    Ok((track_id, handler))
}

/// What a `traf` says about its first sample's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FirstSample {
    /// No `trun` has samples.
    None,
    /// Flags written in the `trun` (first-sample-flags or per-sample flags).
    Explicit(u32),
    /// A sample exists; its flags come from the tfhd or trex defaults.
    Defaulted,
}

/// A `traf` reduced to what keyframe detection needs.
struct TrafSummary {
    track_id: u32,
    /// `tfhd` default-sample-flags, when present.
    default_flags: Option<u32>,
    first_sample: FirstSample,
}

/// Sample flags bit layout (ISO/IEC 14496-12, 8.8.3.1): `sample_depends_on` is
/// bits 24..25, `sample_is_non_sync_sample` is bit 16.
fn depends_on(flags: u32) -> u32 {
    (flags >> 24) & 0x3
}

fn is_non_sync(flags: u32) -> bool {
    (flags >> 16) & 0x1 == 1
}

/// Whether the `moof` (payload at stream offset `base`) starts a group, per
/// the rules in the module docs.
fn moof_is_keyframe(
    tracks: &HashMap<u32, Track>,
    has_video: bool,
    payload: &[u8],
    base: u64,
) -> Result<bool, Fmp4Error> {
    let mut keyframe = false;
    let mut first_traf = true;
    // Every traf is parsed even once the answer is known, so that a malformed
    // moof is rejected the same way wherever the damage is.
    for child in Children::new(MOOF, payload, base) {
        let child = child?;
        if child.kind != TRAF {
            continue;
        }
        let traf = parse_traf(&child)?;
        let track = tracks.get(&traf.track_id);
        let flags = match traf.first_sample {
            FirstSample::None => None,
            FirstSample::Explicit(flags) => Some(flags),
            FirstSample::Defaulted => traf
                .default_flags
                .or_else(|| track.and_then(|t| t.default_sample_flags)),
        };
        if has_video {
            let is_video = track.is_some_and(|t| t.handler == VIDE);
            let sync = flags.is_some_and(|f| depends_on(f) == 2 && !is_non_sync(f));
            keyframe |= is_video && sync;
        } else if first_traf {
            keyframe = flags.is_some_and(|f| !is_non_sync(f));
        }
        first_traf = false;
    }
    Ok(keyframe)
}

/// tfhd optional field flags, in the order the fields appear.
const TFHD_BASE_DATA_OFFSET: u32 = 0x01;
const TFHD_SAMPLE_DESCRIPTION_INDEX: u32 = 0x02;
const TFHD_DEFAULT_DURATION: u32 = 0x08;
const TFHD_DEFAULT_SIZE: u32 = 0x10;
const TFHD_DEFAULT_FLAGS: u32 = 0x20;

/// trun optional field flags; the 0x100..0x800 ones are per sample.
const TRUN_DATA_OFFSET: u32 = 0x01;
const TRUN_FIRST_SAMPLE_FLAGS: u32 = 0x04;
const TRUN_SAMPLE_DURATION: u32 = 0x100;
const TRUN_SAMPLE_SIZE: u32 = 0x200;
const TRUN_SAMPLE_FLAGS: u32 = 0x400;
const TRUN_SAMPLE_CTS_OFFSET: u32 = 0x800;

fn parse_traf(traf: &Child<'_>) -> Result<TrafSummary, Fmp4Error> {
    let mut header = None;
    let mut first_sample = FirstSample::None;
    for child in traf.children() {
        let child = child?;
        if child.kind == TFHD && header.is_none() {
            header = Some(parse_tfhd(&child)?);
        } else if child.kind == TRUN {
            // Each trun is validated; the first one with samples holds the
            // traf's first sample.
            let run = parse_trun(&child)?;
            if first_sample == FirstSample::None {
                first_sample = run;
            }
        }
    }
    let (track_id, default_flags) = header.ok_or(Fmp4Error::MissingChild {
        parent: TRAF,
        kind: TFHD,
        offset: traf.offset,
    })?;
    Ok(TrafSummary {
        track_id,
        default_flags,
        first_sample,
    })
}

/// `track_ID` and default-sample-flags of a `tfhd`.
fn parse_tfhd(tfhd: &Child<'_>) -> Result<(u32, Option<u32>), Fmp4Error> {
    let mut fields = tfhd.fields();
    let (_, flags) = fields.version_flags()?;
    let track_id = fields.u32()?;
    if flags & TFHD_BASE_DATA_OFFSET != 0 {
        fields.skip(8)?;
    }
    for flag in [
        TFHD_SAMPLE_DESCRIPTION_INDEX,
        TFHD_DEFAULT_DURATION,
        TFHD_DEFAULT_SIZE,
    ] {
        if flags & flag != 0 {
            fields.skip(4)?;
        }
    }
    let default_flags = if flags & TFHD_DEFAULT_FLAGS != 0 {
        Some(fields.u32()?)
    } else {
        None
    };
    Ok((track_id, default_flags))
}

/// The first sample of a `trun`, after checking that the whole sample table
/// fits in the box.
fn parse_trun(trun: &Child<'_>) -> Result<FirstSample, Fmp4Error> {
    let mut fields = trun.fields();
    let (_, flags) = fields.version_flags()?;
    let sample_count = fields.u32()?;
    if flags & TRUN_DATA_OFFSET != 0 {
        fields.skip(4)?;
    }
    let first_sample_flags = if flags & TRUN_FIRST_SAMPLE_FLAGS != 0 {
        Some(fields.u32()?)
    } else {
        None
    };
    let per_sample = u64::from(
        (flags
            & (TRUN_SAMPLE_DURATION
                | TRUN_SAMPLE_SIZE
                | TRUN_SAMPLE_FLAGS
                | TRUN_SAMPLE_CTS_OFFSET))
            .count_ones(),
    ) * 4;
    // At most 2^32 * 16 bytes: no overflow in u64.
    fields.require(u64::from(sample_count) * per_sample)?;
    if sample_count == 0 {
        return Ok(FirstSample::None);
    }
    if let Some(first) = first_sample_flags {
        return Ok(FirstSample::Explicit(first));
    }
    if flags & TRUN_SAMPLE_FLAGS == 0 {
        return Ok(FirstSample::Defaulted);
    }
    // Within a sample record, duration and size precede the flags.
    for flag in [TRUN_SAMPLE_DURATION, TRUN_SAMPLE_SIZE] {
        if flags & flag != 0 {
            fields.skip(4)?;
        }
    }
    Ok(FirstSample::Explicit(fields.u32()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made by the commands in tests/data/README.md.
    const AV: &[u8] = include_bytes!("../tests/data/av.mp4");
    const VIDEO: &[u8] = include_bytes!("../tests/data/video.mp4");

    // Obtained with
    // `ffprobe -v error -select_streams v -show_frames -show_entries frame=key_frame -of csv FILE`
    // (3 frames with key_frame=1, at frames 0, 10 and 20) and
    // `ffprobe -v error -count_packets -show_entries stream=index,codec_type,nb_read_packets -of csv FILE`
    // (25 video packets, and 126 audio packets in av.mp4), for both fixtures.
    // frag_every_frame makes one fragment per packet.
    const KEYFRAMES: usize = 3;
    const KEYFRAME_INDEXES: [usize; 3] = [0, 10, 20];
    const VIDEO_FRAGMENTS: usize = 25;
    const AUDIO_FRAGMENTS: usize = 126;
    // Track IDs ffmpeg gives the streams, in stream order.
    const VIDEO_TRACK: u32 = 1;
    const AUDIO_TRACK: u32 = 2;

    /// Pushes `input` in chunks of `chunk` bytes, draining after each push.
    fn read_all(input: &[u8], chunk: usize) -> Result<Vec<Item>, Fmp4Error> {
        let mut reader = Fmp4Reader::new();
        let mut items = Vec::new();
        for part in input.chunks(chunk.max(1)) {
            reader.push(part);
            while let Some(item) = reader.next_item()? {
                items.push(item);
            }
        }
        reader.finish()?;
        Ok(items)
    }

    fn item_bytes(item: &Item) -> &Bytes {
        match item {
            Item::Init(data) | Item::Fragment { data, .. } => data,
        }
    }

    /// The `track_ID`s of a fragment's trafs, by a minimal walk independent of
    /// the parser under test (the fixtures are well formed).
    fn traf_track_ids(fragment: &[u8]) -> Vec<u32> {
        fn walk(data: &[u8], mut visit: impl FnMut(&[u8; 4], &[u8])) {
            let mut pos = 0;
            while pos + 8 <= data.len() {
                let size =
                    u32::from_be_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]])
                        as usize;
                let kind = [data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]];
                visit(&kind, &data[pos + 8..pos + size]);
                pos += size;
            }
        }
        let mut ids = Vec::new();
        walk(fragment, |kind, moof| {
            if kind == b"moof" {
                walk(moof, |kind, traf| {
                    if kind == b"traf" {
                        walk(traf, |kind, tfhd| {
                            if kind == b"tfhd" {
                                ids.push(u32::from_be_bytes([tfhd[4], tfhd[5], tfhd[6], tfhd[7]]));
                            }
                        });
                    }
                });
            }
        });
        ids
    }

    fn check_fixture(input: &[u8], audio_fragments: usize) {
        let whole = read_all(input, input.len()).expect("fixture parses");
        for chunk in [1, 7, 4096] {
            assert_eq!(
                read_all(input, chunk).expect("fixture parses in chunks"),
                whole,
                "chunk size {chunk}"
            );
        }

        assert!(matches!(whole.first(), Some(Item::Init(_))));
        assert_eq!(
            whole.iter().filter(|i| matches!(i, Item::Init(_))).count(),
            1
        );
        let joined: Vec<u8> = whole.iter().flat_map(|i| item_bytes(i).to_vec()).collect();
        assert_eq!(joined, input);

        let fragments: Vec<(&Bytes, bool)> = whole
            .iter()
            .filter_map(|i| match i {
                Item::Fragment { data, keyframe } => Some((data, *keyframe)),
                Item::Init(_) => None,
            })
            .collect();
        assert_eq!(fragments.len(), VIDEO_FRAGMENTS + audio_fragments);
        assert!(fragments[0].1, "first fragment after init is a keyframe");
        assert_eq!(fragments.iter().filter(|f| f.1).count(), KEYFRAMES);

        let mut video_index = 0;
        let mut audio = 0;
        for (data, keyframe) in &fragments {
            let ids = traf_track_ids(data);
            assert_eq!(ids.len(), 1, "separate_moof + frag_every_frame: one traf");
            if ids[0] == VIDEO_TRACK {
                assert_eq!(*keyframe, KEYFRAME_INDEXES.contains(&video_index));
                video_index += 1;
            } else {
                assert_eq!(ids[0], AUDIO_TRACK);
                assert!(!keyframe, "audio fragment marked keyframe");
                audio += 1;
            }
        }
        assert_eq!(video_index, VIDEO_FRAGMENTS);
        assert_eq!(audio, audio_fragments);
    }

    #[test]
    fn av_fixture() {
        check_fixture(AV, AUDIO_FRAGMENTS);
    }

    #[test]
    fn video_fixture() {
        check_fixture(VIDEO, 0);
    }

    #[test]
    fn init_holds_tracks() {
        let mut reader = Fmp4Reader::new();
        reader.push(AV);
        assert!(matches!(reader.next_item(), Ok(Some(Item::Init(_)))));
        assert!(reader.has_video);
        assert_eq!(reader.tracks.len(), 2);
        let video = reader.tracks[&VIDEO_TRACK];
        assert_eq!(video.handler, VIDE);
        assert_eq!(video.default_sample_flags, Some(0));
        assert_eq!(reader.tracks[&AUDIO_TRACK].handler, FourCc(*b"soun"));
    }

    // ---- Synthetic streams ----

    fn bx(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut out = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(payload);
        out
    }

    fn full(kind: &[u8; 4], version: u8, flags: u32, fields: &[u32]) -> Vec<u8> {
        let mut payload = ((u32::from(version) << 24) | flags).to_be_bytes().to_vec();
        for f in fields {
            payload.extend_from_slice(&f.to_be_bytes());
        }
        bx(kind, &payload)
    }

    fn trak(id: u32, handler: &[u8; 4]) -> Vec<u8> {
        // tkhd v0: creation, modification, track_ID, then the rest (ignored).
        let tkhd = full(b"tkhd", 0, 3, &[0, 0, id, 0, 0]);
        let hdlr = full(b"hdlr", 0, 0, &[0, u32::from_be_bytes(*handler), 0, 0, 0]);
        bx(b"trak", &[tkhd, bx(b"mdia", &hdlr)].concat())
    }

    fn trex(id: u32, flags: u32) -> Vec<u8> {
        full(b"trex", 0, 0, &[id, 1, 0, 0, flags])
    }

    fn init(traks: &[Vec<u8>], trexes: &[Vec<u8>]) -> Vec<u8> {
        let ftyp = bx(b"ftyp", b"iso6\0\0\0\0");
        let mut moov = traks.concat();
        moov.extend(bx(b"mvex", &trexes.concat()));
        [ftyp, bx(b"moov", &moov)].concat()
    }

    /// moof with one traf per (track_ID, tfhd default flags, trun fields),
    /// followed by an 8-byte mdat.
    fn fragment(trafs: &[(u32, Option<u32>, Vec<u8>)]) -> Vec<u8> {
        let mut moof = full(b"mfhd", 0, 0, &[1]);
        for (id, default_flags, trun) in trafs {
            let tfhd = match default_flags {
                Some(f) => full(b"tfhd", 0, 0x2_0020, &[*id, *f]),
                None => full(b"tfhd", 0, 0x2_0000, &[*id]),
            };
            let tfdt = full(b"tfdt", 1, 0, &[0, 0]);
            moof.extend(bx(b"traf", &[tfhd, tfdt, trun.clone()].concat()));
        }
        [bx(b"moof", &moof), bx(b"mdat", &[0; 8])].concat()
    }

    const KEY: u32 = 0x0200_0000;
    const NON_KEY: u32 = 0x0101_0000;
    const UNKNOWN_SYNC: u32 = 0;

    fn keyframes(stream: &[u8]) -> Vec<bool> {
        read_all(stream, stream.len())
            .expect("synthetic stream parses")
            .into_iter()
            .filter_map(|i| match i {
                Item::Fragment { keyframe, .. } => Some(keyframe),
                Item::Init(_) => None,
            })
            .collect()
    }

    #[test]
    fn first_sample_flag_sources() {
        let head = init(&[trak(1, b"vide")], &[trex(1, KEY)]);
        let frags = [
            // trun first-sample-flags beats per-sample flags and defaults.
            fragment(&[(
                1,
                Some(NON_KEY),
                full(b"trun", 0, 0x405, &[2, 0, KEY, NON_KEY, NON_KEY]),
            )]),
            fragment(&[(1, Some(KEY), full(b"trun", 0, 0x005, &[1, 0, NON_KEY]))]),
            // Per-sample flags of the first sample, after duration and size.
            fragment(&[(
                1,
                Some(NON_KEY),
                full(b"trun", 0, 0x701, &[2, 0, 9, 9, KEY, 9, 9, NON_KEY]),
            )]),
            fragment(&[(1, Some(KEY), full(b"trun", 0, 0x401, &[1, 0, NON_KEY]))]),
            // tfhd default beats trex default.
            fragment(&[(1, Some(NON_KEY), full(b"trun", 0, 0x001, &[1, 0]))]),
            // trex default (KEY) when nothing else is given.
            fragment(&[(1, None, full(b"trun", 0, 0x001, &[1, 0]))]),
            // No samples: never a keyframe.
            fragment(&[(1, Some(KEY), full(b"trun", 0, 0x001, &[0, 0]))]),
            // depends_on unknown is not a video sync sample.
            fragment(&[(1, Some(UNKNOWN_SYNC), full(b"trun", 0, 0x001, &[1, 0]))]),
            // A later trun with samples supplies the first sample.
            fragment(&[(
                1,
                Some(NON_KEY),
                [full(b"trun", 0, 0, &[0]), full(b"trun", 0, 0x4, &[1, KEY])].concat(),
            )]),
        ];
        let stream = [head, frags.concat()].concat();
        assert_eq!(
            keyframes(&stream),
            [true, false, true, false, false, true, false, false, true]
        );
    }

    #[test]
    fn no_flags_anywhere_is_not_sync() {
        let head = init(&[trak(1, b"soun")], &[]);
        let frag = fragment(&[(1, None, full(b"trun", 0, 0x001, &[1, 0]))]);
        assert_eq!(keyframes(&[head, frag].concat()), [false]);
    }

    #[test]
    fn audio_only_uses_non_sync_bit_of_first_traf() {
        let head = init(
            &[trak(1, b"soun"), trak(2, b"soun")],
            &[trex(1, 0), trex(2, 0)],
        );
        let trun = |flags: u32| full(b"trun", 0, 0x005, &[1, 0, flags]);
        let frags = [
            fragment(&[(1, None, trun(KEY))]),
            fragment(&[(1, None, trun(UNKNOWN_SYNC))]),
            fragment(&[(1, None, trun(NON_KEY))]),
            // Only the first traf counts.
            fragment(&[(1, None, trun(NON_KEY)), (2, None, trun(KEY))]),
            fragment(&[(2, None, trun(KEY)), (1, None, trun(NON_KEY))]),
            // Unknown track in the first traf: trex default does not apply,
            // but explicit flags do.
            fragment(&[(9, None, trun(KEY))]),
            fragment(&[(9, None, full(b"trun", 0, 0x001, &[1, 0]))]),
        ];
        let stream = [head, frags.concat()].concat();
        assert_eq!(
            keyframes(&stream),
            [true, true, false, false, true, true, false]
        );
    }

    #[test]
    fn with_video_only_video_trafs_count() {
        let head = init(&[trak(1, b"vide"), trak(2, b"soun")], &[]);
        let trun = |flags: u32| full(b"trun", 0, 0x005, &[1, 0, flags]);
        let frags = [
            fragment(&[(2, None, trun(KEY))]),
            fragment(&[(2, None, trun(KEY)), (1, None, trun(KEY))]),
            fragment(&[(2, None, trun(KEY)), (1, None, trun(NON_KEY))]),
            fragment(&[(9, None, trun(KEY))]),
        ];
        let stream = [head, frags.concat()].concat();
        assert_eq!(keyframes(&stream), [false, true, false, false]);
    }

    #[test]
    fn tkhd_version_1_and_optional_tfhd_fields() {
        let tkhd = full(b"tkhd", 1, 3, &[0, 0, 0, 0, 7, 0]);
        let hdlr = full(b"hdlr", 0, 0, &[0, u32::from_be_bytes(*b"vide"), 0, 0, 0]);
        let trak = bx(b"trak", &[tkhd, bx(b"mdia", &hdlr)].concat());
        let head = init(&[trak], &[]);
        // All optional tfhd fields: base offset (u64), description index,
        // duration, size, then the default flags.
        let tfhd = full(b"tfhd", 0, 0x3b, &[7, 0, 0, 1, 1024, 100, KEY]);
        let trun = full(b"trun", 0, 0x001, &[1, 0]);
        let moof = bx(b"moof", &bx(b"traf", &[tfhd, trun].concat()));
        let stream = [head, moof, bx(b"mdat", &[])].concat();
        assert_eq!(keyframes(&stream), [true]);
    }

    #[test]
    fn prefix_and_free_boxes() {
        let head = init(&[trak(1, b"vide")], &[]);
        let free = bx(b"free", b"xx");
        let frag = fragment(&[(1, Some(KEY), full(b"trun", 0, 0x001, &[1, 0]))]);
        let styp = bx(b"styp", b"msdh\0\0\0\0");
        let prft = full(b"prft", 1, 0, &[1, 0, 0, 0, 0]);
        let stream = [
            head.clone(),
            free.clone(),
            frag.clone(),
            styp.clone(),
            prft.clone(),
            frag.clone(),
            free.clone(),
            frag.clone(),
        ]
        .concat();
        let items = read_all(&stream, 3).expect("stream parses");
        let expected = vec![
            Item::Init(Bytes::from([head, free.clone()].concat())),
            Item::Fragment {
                data: Bytes::from(frag.clone()),
                keyframe: true,
            },
            Item::Fragment {
                data: Bytes::from([styp, prft, frag.clone()].concat()),
                keyframe: true,
            },
            Item::Fragment {
                data: Bytes::from([free, frag].concat()),
                keyframe: true,
            },
        ];
        assert_eq!(items, expected);
    }

    #[test]
    fn largesize_header() {
        let mut ftyp = 1u32.to_be_bytes().to_vec();
        ftyp.extend_from_slice(b"ftyp");
        ftyp.extend_from_slice(&24u64.to_be_bytes());
        ftyp.extend_from_slice(b"iso6\0\0\0\0");
        let head = init(&[trak(1, b"vide")], &[]);
        let frag = fragment(&[(1, Some(KEY), full(b"trun", 0, 0x001, &[1, 0]))]);
        // Replace the 16-byte ftyp of `init` with the largesize one.
        let stream = [ftyp.clone(), head[16..].to_vec(), frag].concat();
        let items = read_all(&stream, 1).expect("stream parses");
        assert_eq!(item_bytes(&items[0])[..24], ftyp[..]);
        assert_eq!(items.len(), 2);
    }

    // ---- Errors ----

    /// Pushes everything and drains; returns the first error.
    fn first_error(stream: &[u8]) -> Fmp4Error {
        let mut reader = Fmp4Reader::new();
        reader.push(stream);
        loop {
            match reader.next_item() {
                Ok(Some(_)) => {}
                Ok(None) => return reader.finish().expect_err("stream is invalid"),
                Err(err) => {
                    // The reader stays failed with the same error.
                    assert_eq!(reader.next_item().expect_err("reader stays failed"), err);
                    assert_eq!(reader.finish().expect_err("reader stays failed"), err);
                    reader.push(b"more");
                    assert_eq!(reader.buf.len(), 0);
                    return err;
                }
            }
        }
    }

    fn good_init() -> Vec<u8> {
        init(&[trak(1, b"vide")], &[trex(1, 0)])
    }

    fn good_fragment() -> Vec<u8> {
        fragment(&[(1, Some(KEY), full(b"trun", 0, 0x001, &[1, 0]))])
    }

    #[test]
    fn size_zero_box() {
        let err = first_error(&[0, 0, 0, 0, b'f', b't', b'y', b'p']);
        assert_eq!(
            err,
            Fmp4Error::BoxSizeZero {
                kind: FTYP,
                offset: 0
            }
        );
        assert!(err.to_string().contains("size 0"), "{err}");
    }

    #[test]
    fn size_smaller_than_header() {
        let err = first_error(&[0, 0, 0, 7, b'f', b't', b'y', b'p']);
        assert_eq!(
            err,
            Fmp4Error::BadBoxSize {
                kind: FTYP,
                offset: 0,
                size: 7,
                header: 8
            }
        );
        let mut large = vec![0, 0, 0, 1];
        large.extend_from_slice(b"ftyp");
        large.extend_from_slice(&15u64.to_be_bytes());
        assert!(matches!(
            first_error(&large),
            Fmp4Error::BadBoxSize {
                size: 15,
                header: 16,
                ..
            }
        ));
    }

    #[test]
    fn huge_boxes_fail_from_the_header_alone() {
        // 1 GiB ftyp: only its 8-byte header is ever pushed.
        let mut reader = Fmp4Reader::new();
        reader.push(&(1u32 << 30).to_be_bytes());
        assert_eq!(reader.next_item(), Ok(None));
        reader.push(b"ftyp");
        let err = reader.next_item().expect_err("1 GiB box");
        assert_eq!(
            err,
            Fmp4Error::BoxTooLarge {
                kind: FTYP,
                offset: 0,
                size: 1 << 30,
                item: "init",
                total: 1 << 30,
                max: MAX_INIT_SIZE,
            }
        );
        assert!(err.to_string().contains("1073741824"), "{err}");

        // A 64-bit size near u64::MAX must not overflow the limit check.
        let mut large = vec![0, 0, 0, 1];
        large.extend_from_slice(b"moov");
        large.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(matches!(first_error(&large), Fmp4Error::BoxTooLarge { .. }));

        // An mdat that would push the fragment past MAX_FRAGMENT_SIZE.
        let head = good_init();
        let frag = good_fragment();
        let moof_len = frag.len() - 16;
        let mut stream = [head.clone(), frag[..moof_len].to_vec()].concat();
        let mdat_size = (MAX_FRAGMENT_SIZE - moof_len + 1) as u32;
        stream.extend_from_slice(&mdat_size.to_be_bytes());
        stream.extend_from_slice(b"mdat");
        assert_eq!(
            first_error(&stream),
            Fmp4Error::BoxTooLarge {
                kind: MDAT,
                offset: (head.len() + moof_len) as u64,
                size: u64::from(mdat_size),
                item: "fragment",
                total: MAX_FRAGMENT_SIZE as u64 + 1,
                max: MAX_FRAGMENT_SIZE,
            }
        );
    }

    #[test]
    fn fragment_at_the_limit_is_accepted() {
        let head = good_init();
        let frag = good_fragment();
        let moof = &frag[..frag.len() - 16];
        let mdat = bx(b"mdat", &vec![0; MAX_FRAGMENT_SIZE - moof.len() - 8]);
        let stream = [head, moof.to_vec(), mdat].concat();
        let items = read_all(&stream, 64 * 1024).expect("stream parses");
        assert_eq!(item_bytes(&items[1]).len(), MAX_FRAGMENT_SIZE);
    }

    #[test]
    fn fragment_before_init() {
        assert_eq!(
            first_error(&good_fragment()),
            Fmp4Error::FragmentBeforeInit {
                kind: MOOF,
                offset: 0
            }
        );
        assert!(matches!(
            first_error(&bx(b"mdat", b"")),
            Fmp4Error::FragmentBeforeInit { kind: MDAT, .. }
        ));
    }

    #[test]
    fn init_without_moov() {
        let ftyp = bx(b"ftyp", b"iso6\0\0\0\0");
        let stream = [ftyp.clone(), good_fragment()].concat();
        assert_eq!(
            first_error(&stream),
            Fmp4Error::MissingMoov {
                kind: MOOF,
                offset: ftyp.len() as u64,
                init_size: ftyp.len()
            }
        );
    }

    #[test]
    fn truncated_at_finish() {
        for cut in [1, 5, 8, 100, AV.len() / 2, AV.len() - 1] {
            let mut reader = Fmp4Reader::new();
            reader.push(&AV[..cut]);
            while reader.next_item().expect("prefix is valid").is_some() {}
            assert!(
                matches!(reader.finish(), Err(Fmp4Error::Truncated { .. })),
                "cut at {cut}"
            );
        }
        // Init complete but no fragment yet: nothing was emitted, so that is
        // truncation too.
        let head = good_init();
        assert_eq!(
            first_error(&head),
            Fmp4Error::Truncated {
                item: "init",
                offset: 0,
                buffered: head.len()
            }
        );
        // A moof without its mdat at the end.
        let frag = good_fragment();
        let stream = [head.clone(), frag[..frag.len() - 16].to_vec()].concat();
        assert_eq!(
            first_error(&stream),
            Fmp4Error::Truncated {
                item: "fragment",
                offset: head.len() as u64,
                buffered: frag.len() - 16
            }
        );
        assert_eq!(Fmp4Reader::new().finish(), Ok(()));
    }

    #[test]
    fn garbage() {
        let err = first_error(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n");
        // "GET " read as a size is 0x47455420, far over the init limit.
        assert!(matches!(err, Fmp4Error::BoxTooLarge { .. }), "{err}");
        assert!(matches!(
            first_error(&[0xff; 64]),
            Fmp4Error::BoxTooLarge { .. }
        ));
        let err = first_error(&[0x00, 0x00, 0x00, 0x05, 0xde, 0xad, 0xbe, 0xef]);
        assert!(err.to_string().contains("\\xde\\xad\\xbe\\xef"), "{err}");
    }

    #[test]
    fn ordering_errors() {
        let head = good_init();
        let frag = good_fragment();
        let moof = frag[..frag.len() - 16].to_vec();
        let mdat = frag[frag.len() - 16..].to_vec();
        let at = |parts: &[&[u8]]| parts.iter().map(|p| p.len()).sum::<usize>() as u64;

        let stream = [head.clone(), moof.clone(), moof.clone()].concat();
        assert_eq!(
            first_error(&stream),
            Fmp4Error::MoofWithoutMdat {
                kind: MOOF,
                offset: at(&[&head, &moof]),
                moof_offset: head.len() as u64
            }
        );
        let stream = [head.clone(), moof.clone(), bx(b"free", b"")].concat();
        assert!(matches!(
            first_error(&stream),
            Fmp4Error::MoofWithoutMdat { .. }
        ));

        let stream = [head.clone(), frag.clone(), mdat.clone()].concat();
        assert_eq!(
            first_error(&stream),
            Fmp4Error::MdatWithoutMoof {
                offset: at(&[&head, &frag])
            }
        );
        let stream = [head.clone(), mdat.clone()].concat();
        assert!(matches!(
            first_error(&stream),
            Fmp4Error::MdatWithoutMoof { .. }
        ));

        let stream = [head.clone(), frag.clone(), head.clone()].concat();
        assert_eq!(
            first_error(&stream),
            Fmp4Error::DuplicateInit {
                kind: FTYP,
                offset: at(&[&head, &frag])
            }
        );
        let moov = head[16..].to_vec();
        let stream = [head.clone(), moov].concat();
        assert!(matches!(
            first_error(&stream),
            Fmp4Error::DuplicateInit { kind: MOOV, .. }
        ));
    }

    #[test]
    fn malformed_nested_boxes() {
        let head = good_init();
        // A traf claiming more bytes than its moof holds.
        let traf_overrun = bx(b"moof", &[0, 0, 0, 64, b't', b'r', b'a', b'f']);
        let stream = [head.clone(), traf_overrun, bx(b"mdat", b"")].concat();
        assert_eq!(
            first_error(&stream),
            Fmp4Error::ChildOverrun {
                parent: MOOF,
                offset: head.len() as u64 + 8,
                size: 64,
                available: 8
            }
        );
        // A trun whose sample table runs past the box.
        let traf = bx(
            b"traf",
            &[
                full(b"tfhd", 0, 0, &[1]),
                full(b"trun", 0, 0x300, &[1000, 1, 2]),
            ]
            .concat(),
        );
        let stream = [head.clone(), bx(b"moof", &traf), bx(b"mdat", b"")].concat();
        assert!(matches!(
            first_error(&stream),
            Fmp4Error::ShortBox {
                kind: TRUN,
                size: 16,
                needed: 8008,
                ..
            }
        ));
        // A traf without tfhd.
        let traf = bx(b"traf", &full(b"trun", 0, 0, &[0]));
        let stream = [head.clone(), bx(b"moof", &traf), bx(b"mdat", b"")].concat();
        assert!(matches!(
            first_error(&stream),
            Fmp4Error::MissingChild {
                parent: TRAF,
                kind: TFHD,
                ..
            }
        ));
        // Three stray bytes at the end of a moov.
        let ftyp = bx(b"ftyp", b"");
        let moov = bx(b"moov", &[trak(1, b"vide"), vec![0, 0, 0]].concat());
        assert!(matches!(
            first_error(&[ftyp.clone(), moov].concat()),
            Fmp4Error::ChildOverrun {
                parent: MOOV,
                size: 8,
                available: 3,
                ..
            }
        ));
        // tkhd version 2.
        let tkhd = full(b"tkhd", 2, 0, &[0, 0, 1]);
        let moov = bx(b"moov", &bx(b"trak", &tkhd));
        assert!(matches!(
            first_error(&[ftyp.clone(), moov].concat()),
            Fmp4Error::UnsupportedVersion {
                kind: TKHD,
                version: 2,
                ..
            }
        ));
        // trak without mdia.
        let moov = bx(b"moov", &bx(b"trak", &full(b"tkhd", 0, 0, &[0, 0, 1])));
        assert!(matches!(
            first_error(&[ftyp.clone(), moov].concat()),
            Fmp4Error::MissingChild {
                parent: TRAK,
                kind: MDIA,
                ..
            }
        ));
        // Nested size 0.
        let moov = bx(b"moov", &[0, 0, 0, 0, b't', b'r', b'a', b'k']);
        assert!(matches!(
            first_error(&[ftyp, moov].concat()),
            Fmp4Error::BoxSizeZero { kind: TRAK, .. }
        ));
    }

    /// Tiny deterministic PRNG, enough to vary mutations.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn mutate(rng: &mut XorShift, src: &[u8]) -> Vec<u8> {
        let mut data = src.to_vec();
        for _ in 0..=rng.below(3) {
            // Half the edits land in the first 1.5 KB, where the moov and the
            // first moof are, since mdat payload damage is invisible here.
            let len = data.len();
            let pos = if rng.next() & 1 == 0 {
                rng.below(len)
            } else {
                rng.below(len.min(1500))
            };
            match rng.below(5) {
                0 | 1 => {
                    for i in 0..=rng.below(4) {
                        if let Some(b) = data.get_mut(pos + i) {
                            *b ^= (rng.next() as u8) | 1;
                        }
                    }
                }
                2 => data.truncate(pos),
                3 => {
                    let from = rng.below(src.len());
                    let to = (from + rng.below(300)).min(src.len());
                    let pos = pos.min(data.len());
                    data.splice(pos..pos, src[from..to].iter().copied());
                }
                _ => {
                    let end = (pos + rng.below(300)).min(data.len());
                    data.drain(pos.min(end)..end);
                }
            }
        }
        data
    }

    #[test]
    fn mutations_never_panic() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut complete = 0;
        for round in 0..10_000 {
            let src = if round % 2 == 0 { AV } else { VIDEO };
            let data = mutate(&mut rng, src);
            let mut reader = Fmp4Reader::new();
            let mut emitted = Vec::new();
            let mut pos = 0;
            let mut failed = false;
            while pos < data.len() && !failed {
                let end = (pos + 1 + rng.below(4096)).min(data.len());
                reader.push(&data[pos..end]);
                pos = end;
                loop {
                    match reader.next_item() {
                        Ok(Some(item)) => emitted.extend_from_slice(item_bytes(&item)),
                        Ok(None) => break,
                        Err(err) => {
                            // Formatting must not panic either.
                            let _ = err.to_string();
                            failed = true;
                            break;
                        }
                    }
                }
            }
            // Items are always a prefix of the input, in order.
            assert_eq!(emitted[..], data[..emitted.len()], "round {round}");
            if reader.finish().is_ok() {
                assert_eq!(emitted, data, "round {round}");
                complete += 1;
            }
        }
        // Some mutations (payload bytes, whole-fragment cuts) leave a valid
        // stream; the test must exercise both outcomes.
        assert!(complete > 0 && complete < 10_000, "{complete}");
    }
}
