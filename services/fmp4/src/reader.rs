//! The incremental splitter: pipe framing, item boundaries, limits and the keyframe rule.

use bytes::{Bytes, BytesMut};
use mp4_atom::{Atom as _, FourCC, Moof, Moov};

use crate::init::{self, Init, Kind};
use crate::{Error, header};

/// Largest init segment (all boxes before the first fragment) accepted.
pub const MAX_INIT_SIZE: usize = 1 << 20;

/// Largest fragment accepted: its prefix boxes, `moof` and `mdat` together.
pub const MAX_FRAGMENT_SIZE: usize = 4 << 20;

const FTYP: FourCC = FourCC::new(b"ftyp");
const MDAT: FourCC = FourCC::new(b"mdat");
/// Top-level boxes that open a fragment, so end the init segment.
const FRAGMENT_START: [FourCC; 6] = [
    Moof::KIND,
    FourCC::new(b"styp"),
    FourCC::new(b"sidx"),
    FourCC::new(b"ssix"),
    FourCC::new(b"prft"),
    FourCC::new(b"emsg"),
];

/// One unit of output: the init segment or one fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// `ftyp` + `moov` (everything before the first fragment), byte for byte as in the input.
    Init(Bytes),
    /// One fragment (its prefix boxes, `moof`, `mdat`), byte for byte as in the input.
    Fragment {
        /// The fragment's bytes, a slice of the input.
        data: Bytes,
        /// Whether a decoder can start at this fragment (see the crate docs, "Keyframes").
        keyframe: bool,
    },
}

impl Item {
    /// The item's bytes, exactly as they appeared in the input.
    #[must_use]
    pub fn data(&self) -> &Bytes {
        match self {
            Item::Init(data) | Item::Fragment { data, .. } => data,
        }
    }
}

/// Splits a pushed byte stream into [`Item`]s.
///
/// Drain [`next_item`](Self::next_item) until it returns `Ok(None)` after each
/// [`push`](Self::push); that keeps buffered memory within one item's limit plus one pushed
/// chunk. The concatenation of all items is the input, byte for byte.
#[derive(Debug, Default)]
pub struct Reader {
    /// Unconsumed input. Starts at the first byte of the item being assembled.
    buf: BytesMut,
    /// Stream offset of `buf[0]`.
    base: u64,
    /// Length of the prefix of `buf` made of complete boxes of the current item. Invariant:
    /// `pending <= buf.len()`, and `pending` is within the current item's size limit.
    pending: usize,
    /// Whether the init segment has been emitted.
    init_done: bool,
    /// Whether the init boxes so far include an `ftyp`.
    seen_ftyp: bool,
    /// The decoded `moov`, once it has been buffered.
    init: Option<Init>,
    /// The current fragment's `moof`, once decoded; the next box must be `mdat`.
    moof: Option<MoofSeen>,
    /// The error that stopped the reader; returned again on every later call.
    failed: Option<Error>,
}

/// A decoded `moof` waiting for its `mdat`.
#[derive(Debug, Clone, Copy)]
struct MoofSeen {
    offset: u64,
    keyframe: bool,
}

/// Outcome of one parsing step.
enum Step {
    NeedMore,
    Continue,
    Emit(Item),
}

impl Reader {
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

    /// Returns the next complete item, `Ok(None)` when more input is needed. After an `Err`
    /// the reader is unusable: every later call returns the same error, and the buffered
    /// input is dropped.
    ///
    /// # Errors
    ///
    /// Any [`Error`] but [`Error::Truncated`], when the buffered input cannot be the start of
    /// a valid stream.
    pub fn next_item(&mut self) -> Result<Option<Item>, Error> {
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

    /// Call at end of input: `Ok(())` when nothing is buffered, `Err(Truncated)` otherwise.
    /// Buffered complete boxes of an unfinished item (an init not yet followed by a
    /// fragment, a `moof` without its `mdat`) count as truncation too, since they would
    /// never be emitted.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] when input is buffered, or the error that stopped the reader.
    pub fn finish(&self) -> Result<(), Error> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        Err(Error::Truncated {
            item: if self.init_done { "fragment" } else { "init" },
            offset: self.base,
            buffered: self.buf.len(),
        })
    }

    /// The tracks of the stream, once its `moov` has been read (possibly before
    /// [`Item::Init`] is emitted, which waits for the first fragment to start).
    #[must_use]
    pub fn init(&self) -> Option<&Init> {
        self.init.as_ref()
    }

    /// Header of the box following the current item's complete boxes, if buffered, with its
    /// stream offset.
    fn next_header(&self) -> Result<Option<(header::BoxHeader, u64)>, Error> {
        let rest = self.buf.get(self.pending..).unwrap_or_default();
        let offset = self.base.saturating_add(self.pending as u64);
        Ok(header::parse(rest, offset)?.map(|header| (header, offset)))
    }

    /// Checks that the box fits the current item's limit and returns its size as usize.
    /// Runs before the payload is buffered.
    fn box_size_within(
        &self,
        header: &header::BoxHeader,
        offset: u64,
        item: &'static str,
        max: usize,
    ) -> Result<usize, Error> {
        let total = (self.pending as u64).saturating_add(header.size);
        let too_large = || Error::BoxTooLarge {
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
    fn step_init(&mut self) -> Result<Step, Error> {
        let Some((header, offset)) = self.next_header()? else {
            return Ok(Step::NeedMore);
        };
        let kind = header.kind;
        if FRAGMENT_START.contains(&kind) || kind == MDAT {
            if self.pending == 0 {
                return Err(Error::FragmentBeforeInit { kind, offset });
            }
            if kind == MDAT {
                return Err(Error::MdatWithoutMoof { offset });
            }
            if self.init.is_none() {
                return Err(Error::MissingMoov {
                    offset,
                    init_size: self.pending,
                });
            }
            let data = self.take(self.pending);
            self.init_done = true;
            return Ok(Step::Emit(Item::Init(data)));
        }
        if (kind == FTYP && self.seen_ftyp) || (kind == Moov::KIND && self.init.is_some()) {
            return Err(Error::DuplicateInit { kind, offset });
        }
        let size = self.box_size_within(&header, offset, "init", MAX_INIT_SIZE)?;
        let Some(whole) = self.buffered_box(size) else {
            return Ok(Step::NeedMore);
        };
        if kind == Moov::KIND {
            let moov = init::decode::<Moov>(whole, offset)?;
            self.init = Some(Init::from(&moov));
        } else if kind == FTYP {
            self.seen_ftyp = true;
        }
        self.pending += size;
        Ok(Step::Continue)
    }

    /// One box once the init segment has been emitted.
    fn step_fragment(&mut self) -> Result<Step, Error> {
        let Some((header, offset)) = self.next_header()? else {
            return Ok(Step::NeedMore);
        };
        let kind = header.kind;
        if kind == FTYP || kind == Moov::KIND {
            return Err(Error::DuplicateInit { kind, offset });
        }
        match self.moof {
            Some(moof) if kind != MDAT => {
                return Err(Error::MoofWithoutMdat {
                    kind,
                    offset,
                    moof_offset: moof.offset,
                });
            }
            None if kind == MDAT => return Err(Error::MdatWithoutMoof { offset }),
            _ => {}
        }
        let size = self.box_size_within(&header, offset, "fragment", MAX_FRAGMENT_SIZE)?;
        let Some(whole) = self.buffered_box(size) else {
            return Ok(Step::NeedMore);
        };
        if kind == Moof::KIND {
            let moof = init::decode::<Moof>(whole, offset)?;
            let keyframe = self.init.as_ref().is_some_and(|i| is_keyframe(i, &moof));
            self.moof = Some(MoofSeen { offset, keyframe });
            self.pending += size;
            return Ok(Step::Continue);
        }
        if let Some(moof) = self.moof.take() {
            // Only an mdat gets here with a moof waiting (checked above).
            let data = self.take(self.pending + size);
            return Ok(Step::Emit(Item::Fragment {
                data,
                keyframe: moof.keyframe,
            }));
        }
        // A prefix box (styp, sidx, prft, emsg, free, unknown): part of the fragment whose
        // moof follows.
        self.pending += size;
        Ok(Step::Continue)
    }
}

/// Whether the `moof` starts a group, per the rules in the module docs.
fn is_keyframe(init: &Init, moof: &Moof) -> bool {
    let has_video = init.has_video();
    let mut keyframe = false;
    for (index, traf) in moof.traf.iter().enumerate() {
        let track = init.track(traf.tfhd.track_id);
        // mp4-atom already puts trun first-sample-flags in place of the first sample's own.
        let first = traf.trun.iter().find_map(|run| run.samples.get(0));
        let flags = first.and_then(|sample| {
            sample
                .flags
                .or(traf.tfhd.default_sample_flags)
                .or_else(|| track.and_then(|t| t.default_sample_flags))
        });
        if has_video {
            let video = track.is_some_and(|t| t.kind == Kind::Video);
            keyframe |= video && flags.is_some_and(|f| depends_on(f) == 2 && !is_non_sync(f));
        } else if index == 0 {
            keyframe = flags.is_some_and(|f| !is_non_sync(f));
        }
    }
    keyframe
}

/// Sample flags bit layout (ISO/IEC 14496-12, 8.8.3.1): `sample_depends_on` is bits 24..25,
/// `sample_is_non_sync_sample` is bit 16.
fn depends_on(flags: u32) -> u32 {
    (flags >> 24) & 0x3
}

fn is_non_sync(flags: u32) -> bool {
    (flags >> 16) & 0x1 == 1
}

#[cfg(test)]
mod tests;
