//! Fragmented MP4 / CMAF for Ghost Stream, with no I/O and no clock.
//!
//! A publisher hands us what `ffmpeg -f mp4 -movflags
//! cmaf+separate_moof+delay_moov+skip_trailer+frag_every_frame` writes to a pipe: an init
//! segment (`ftyp` + `moov`), then fragments (`moof` + `mdat`). Ghost Stream forwards those
//! bytes untouched, so this crate only has to answer three questions about them:
//!
//! - **Where does each item end?** [`Reader`] takes the pipe in chunks of any size and hands
//!   back [`Item::Init`] and [`Item::Fragment`]s, each a zero-copy slice of the input.
//! - **Can a decoder start here?** Each fragment carries a `keyframe` flag read from the sample
//!   flags in its `moof`, which is where Ghost Stream starts a new group.
//! - **What is in the stream?** [`Init::parse`] names each track's codec as RFC 6381 and
//!   WebCodecs spell it (`avc1.64000a`, `mp4a.40.2`, `opus`), with its timescale and picture
//!   size or sample rate, for players that must configure a decoder before the first frame.
//!
//! # Segmentation
//!
//! * **Init**: every top-level box before the first box that starts a fragment (`moof`, or
//!   one of the fragment prefix boxes `styp`, `sidx`, `ssix`, `prft`, `emsg`). It must
//!   contain a `moov`. `free`/`skip` (and any other unknown box) between `moov` and the first
//!   fragment are kept in the init. A second `ftyp` or `moov` anywhere is an error.
//! * **Fragment**: any prefix boxes (`styp`, `sidx`, `prft`, `emsg`, `free`, or any unknown
//!   box), then one `moof`, then the `mdat` that must follow it immediately. Boxes after an
//!   `mdat` belong to the next fragment.
//!
//! The `moov` and every `moof` must decode with mp4-atom ([`Error::Decode`] otherwise); the
//! other boxes are passed through unread.
//!
//! # Keyframes
//!
//! Keyframes are read from sample flags in the `moof` only, without codec parsing. The flags
//! of a track fragment's first sample (the first sample of its first `trun` that has any)
//! come from, in order: `trun` first-sample-flags, the first sample's own flags in `trun`,
//! the `tfhd` default-sample-flags, the `trex` default for the track; with none of them the
//! sample counts as non-sync. Then:
//!
//! * If the init has at least one `vide` track, a fragment is a keyframe when it has a `traf`
//!   of a `vide` track whose first sample has `sample_depends_on == 2` (depends on no other
//!   sample) and `sample_is_non_sync_sample == 0`. Audio fragments are never keyframes then,
//!   so a group of pictures always starts with video.
//! * Otherwise, a fragment is a keyframe when the first sample of its first `traf` has
//!   `sample_is_non_sync_sample == 0` (`sample_depends_on` is ignored, audio codecs rarely
//!   set it).
//!
//! A `traf` without samples never makes a keyframe, and a `traf` whose `track_ID` is not in
//! the `moov` is never a video track.
//!
//! # Memory
//!
//! Box sizes are checked against [`MAX_INIT_SIZE`] / [`MAX_FRAGMENT_SIZE`] as soon as a box
//! header is buffered, before its payload is, so a caller that drains [`Reader::next_item`]
//! after each [`Reader::push`] never holds more than one item's limit plus one pushed chunk.
//! Decoding a `moof` allocates mp4-atom's sample table beside it, at most 40 bytes per 4 input
//! bytes of `trun`, so briefly up to ten times the `moof` on hostile input.
//! Emitted items share their allocation with the reader's buffer (no copy), so a long-held
//! item keeps the buffer chunk it was cut from alive.
//!
//! # Why mp4-atom
//!
//! The boxes themselves (`moov`, `trak`, `trex`, `moof`, `tfhd`, `trun`, the sample entries)
//! are decoded by the [`mp4_atom`] crate, which is maintained for exactly this and also used
//! by the Media-over-QUIC importer of the same ffmpeg pipe. What stays here is what is ours:
//! the top-level framing of an endless pipe (a box may arrive one byte at a time), which boxes
//! belong to the init and which to a fragment, the hard size limits that keep memory bounded
//! on hostile input, and the keyframe rule.
//!
//! # Writing
//!
//! [`mux`] writes the same format for an ingest that receives media frame by frame (RTMP):
//! an init segment, then one `moof` + `mdat` per sample, every box built from [`mp4_atom`]
//! types and encoded by mp4-atom. What it writes reads back through [`Reader`] with the
//! keyframes where they were written. [`mp4_atom`] is re-exported so that writers and callers
//! use the very version the reader decodes with.
//!
//! A stream whose decoder configuration changes mid-stream carries the new init segment at
//! the start of its keyframe fragments; [`split_inline_init`] separates the two for players.

#![forbid(unsafe_code)]

mod error;
mod header;
mod init;
mod inline;
pub mod mux;
mod reader;

pub use error::{DecodeError, Error};
pub use init::{Format, Init, Kind, Track};
pub use inline::split_inline_init;
pub use mp4_atom;
pub use mp4_atom::FourCC;
pub use reader::{Item, MAX_FRAGMENT_SIZE, MAX_INIT_SIZE, Reader};
