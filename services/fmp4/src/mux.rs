//! Writing CMAF: an init segment, then one `moof` + `mdat` per sample.
//!
//! This is the other direction of [`Reader`](crate::Reader), for an ingest that receives
//! media frame by frame (RTMP) instead of as fragmented MP4. Every box is built from
//! [`mp4_atom`] types and encoded by mp4-atom; what stays here is the CMAF profile Ghost
//! Stream needs:
//!
//! * **Init** ([`init`]): `ftyp` (major brand `iso6`, compatible `iso6`, `cmfc`, `mp41`),
//!   then a `moov` with one `trak` per track (empty sample tables) and an `mvex` with one
//!   `trex` per track.
//! * **Fragment** ([`fragment`]): a `moof` holding one `traf` with `tfhd`
//!   (default-base-is-moof), `tfdt` (version 1) and a `trun` of exactly one sample (data
//!   offset, size, duration, flags, and the composition offset when it is not zero, signed in a
//!   version 1 `trun`), then the `mdat` with the sample.
//!
//! One sample per fragment is what keeps a live stream's latency at one frame, and it is what
//! the reader's keyframe rule reads: a keyframe sample is written `sample_depends_on = 2`,
//! `sample_is_non_sync_sample = 0`; any other sample `sample_depends_on = 1`,
//! `sample_is_non_sync_sample = 1`. Audio samples are written as keyframes (every audio frame
//! can start decoding).

use bytes::Bytes;
use mp4_atom::{
    Atom as _, Codec, Dinf, Dref, DrefEntry, Encode, FourCC, Ftyp, Hdlr, Header, Mdat, Mdhd, Mdia,
    Mfhd, Minf, Moof, Moov, Mvex, Mvhd, Smhd, Stbl, Stco, Stsd, Tfdt, Tfhd, Tkhd, Traf, Trak, Trex,
    Trun, TrunEntry, TrunSamples, Url, Vmhd,
};

use crate::Kind;

/// Sample flags of a sample a decoder can start at: depends on no other sample, sync.
pub const SYNC_SAMPLE_FLAGS: u32 = 0x0200_0000;

/// Sample flags of any other sample: depends on others, not a sync sample.
pub const NON_SYNC_SAMPLE_FLAGS: u32 = 0x0101_0000;

/// The brands of every init segment written here: `iso6` for movie fragments with `tfdt`,
/// `cmfc` for the CMAF structure, `mp41` for players that look for nothing newer.
const BRANDS: [&[u8; 4]; 3] = [b"iso6", b"cmfc", b"mp41"];

/// Why a box could not be written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// [`init`] was given no track.
    #[error("an init segment needs at least one track")]
    NoTracks,
    /// A track's sample entry is neither visual nor audio, so it has no handler to write.
    #[error("track {track_id}: the sample entry is neither video nor audio")]
    NotAudioOrVideo {
        /// The track.
        track_id: u32,
    },
    /// Track ID 0 (reserved) or one used by two tracks.
    #[error("track ID {track_id} is reserved or used twice")]
    BadTrackId {
        /// The offending ID.
        track_id: u32,
    },
    /// A track whose timescale is 0, which would make every time infinite.
    #[error("track {track_id} has a timescale of 0")]
    ZeroTimescale {
        /// The track.
        track_id: u32,
    },
    /// A sample too large for a `trun` size field.
    #[error("a {size}-byte sample does not fit in a fragment")]
    SampleTooLarge {
        /// The sample's size in bytes.
        size: usize,
    },
    /// mp4-atom refused to encode a box built from these values (a field out of range for
    /// its box, such as an AVC NAL length size of 5).
    #[error("mp4-atom could not encode the {kind} box")]
    Encode {
        /// The top-level box being written.
        kind: FourCC,
        /// What mp4-atom found wrong.
        source: mp4_atom::Error,
    },
}

/// One track of an init segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackConfig {
    /// `track_ID`, which each of the track's fragments names; not 0, unique in an init.
    pub track_id: u32,
    /// Ticks per second of the track's decode times, durations and composition offsets.
    pub timescale: u32,
    /// The sample entry, written into `stsd` as given: its `data_reference_index` should be 1
    /// (the one `dref` entry), and a visual entry's width and height also go into `tkhd`.
    pub codec: Codec,
}

impl TrackConfig {
    /// Whether the sample entry is visual ([`Kind::Video`], handler `vide`, `vmhd`) or audio
    /// ([`Kind::Audio`], handler `soun`, `smhd`); `None` for any other entry, which [`init`]
    /// refuses.
    #[must_use]
    pub fn kind(&self) -> Option<Kind> {
        if self.codec.visual().is_some() {
            Some(Kind::Video)
        } else if self.codec.audio().is_some() {
            Some(Kind::Audio)
        } else {
            None
        }
    }
}

/// One sample, written as one fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Decode time of the sample in the track's timescale (`tfdt`).
    pub decode_time: u64,
    /// Duration in the track's timescale.
    pub duration: u32,
    /// Presentation time minus decode time, in the track's timescale; negative is allowed.
    pub composition_offset: i32,
    /// Whether a decoder can start at this sample. Write `true` for every audio sample.
    pub keyframe: bool,
    /// The coded sample, as the sample entry's format stores it (length-prefixed NAL units
    /// for AVC and HEVC, a temporal unit of OBUs for AV1, a raw frame for AAC and Opus).
    pub data: Bytes,
}

/// Writes an init segment (`ftyp` + `moov`) for these tracks, in this order.
///
/// # Errors
///
/// [`Error::NoTracks`], [`Error::BadTrackId`], [`Error::ZeroTimescale`],
/// [`Error::NotAudioOrVideo`], or [`Error::Encode`] when a sample entry holds a value its
/// box cannot carry.
pub fn init(tracks: &[TrackConfig]) -> Result<Bytes, Error> {
    let mut trak = Vec::with_capacity(tracks.len());
    let mut trex = Vec::with_capacity(tracks.len());
    let mut last_id = 0;
    for (index, track) in tracks.iter().enumerate() {
        let track_id = track.track_id;
        let reused = tracks[..index].iter().any(|t| t.track_id == track_id);
        if track_id == 0 || reused {
            return Err(Error::BadTrackId { track_id });
        }
        if track.timescale == 0 {
            return Err(Error::ZeroTimescale { track_id });
        }
        last_id = last_id.max(track_id);
        trak.push(track_box(track)?);
        trex.push(Trex {
            track_id,
            default_sample_description_index: 1,
            default_sample_duration: 0,
            default_sample_size: 0,
            default_sample_flags: 0,
        });
    }
    if trak.is_empty() {
        return Err(Error::NoTracks);
    }
    let ftyp = Ftyp {
        major_brand: BRANDS[0].into(),
        minor_version: 0,
        compatible_brands: BRANDS.iter().map(|&brand| brand.into()).collect(),
    };
    let moov = Moov {
        mvhd: Mvhd {
            timescale: 1000,
            rate: 1.into(),
            volume: 1.into(),
            // Saturates only for a track ID of u32::MAX, where 0 means "search for a free one".
            next_track_id: last_id.checked_add(1).unwrap_or(0),
            ..Default::default()
        },
        mvex: Some(Mvex { mehd: None, trex }),
        trak,
        ..Default::default()
    };
    let mut buf = Vec::new();
    encode(&ftyp, Ftyp::KIND, &mut buf)?;
    encode(&moov, Moov::KIND, &mut buf)?;
    Ok(Bytes::from(buf))
}

/// Writes one sample of track `track_id` as a fragment (`moof` + `mdat`) with `mfhd`
/// sequence number `sequence`.
///
/// # Errors
///
/// [`Error::SampleTooLarge`] for a sample over `u32::MAX` bytes.
pub fn fragment(sequence: u32, track_id: u32, sample: &Sample) -> Result<Bytes, Error> {
    let too_large = || Error::SampleTooLarge {
        size: sample.data.len(),
    };
    let size = u32::try_from(sample.data.len()).map_err(|_| too_large())?;
    let mdat = Header {
        kind: Mdat::KIND,
        size: Some(sample.data.len()),
    };
    let mut mdat_header = Vec::with_capacity(16);
    encode(&mdat, Mdat::KIND, &mut mdat_header)?;

    let entry = TrunEntry {
        duration: Some(sample.duration),
        size: Some(size),
        flags: Some(if sample.keyframe {
            SYNC_SAMPLE_FLAGS
        } else {
            NON_SYNC_SAMPLE_FLAGS
        }),
        // Left out when zero: the trun then has no composition offset field at all.
        cts: (sample.composition_offset != 0).then_some(i64::from(sample.composition_offset)),
    };
    let moof = |data_offset: i32| Moof {
        mfhd: Mfhd {
            sequence_number: sequence,
        },
        traf: vec![Traf {
            tfhd: Tfhd {
                track_id,
                default_base_is_moof: true,
                ..Default::default()
            },
            tfdt: Some(Tfdt {
                base_media_decode_time: sample.decode_time,
            }),
            trun: vec![Trun {
                data_offset: Some(data_offset),
                samples: TrunSamples::Explicit(vec![entry]),
            }],
            ..Default::default()
        }],
    };

    // The data offset counts from the first byte of the moof to the sample, so the moof is
    // encoded once to learn its size (which the offset's value does not change), then again.
    let mut buf = Vec::with_capacity(256 + mdat_header.len() + sample.data.len());
    encode(&moof(0), Moof::KIND, &mut buf)?;
    let data_offset = buf
        .len()
        .checked_add(mdat_header.len())
        .and_then(|offset| i32::try_from(offset).ok())
        .ok_or_else(too_large)?;
    buf.clear();
    encode(&moof(data_offset), Moof::KIND, &mut buf)?;
    // mp4-atom's Mdat owns a Vec, which would copy the sample once more; its header is all
    // that needs encoding.
    buf.extend_from_slice(&mdat_header);
    buf.extend_from_slice(&sample.data);
    Ok(Bytes::from(buf))
}

fn track_box(track: &TrackConfig) -> Result<Trak, Error> {
    let track_id = track.track_id;
    let kind = track.kind().ok_or(Error::NotAudioOrVideo { track_id })?;
    let video = kind == Kind::Video;
    let (width, height) = track
        .codec
        .visual()
        .map_or((0, 0), |visual| (visual.width, visual.height));
    let (handler, name) = if video {
        (b"vide", "VideoHandler")
    } else {
        (b"soun", "SoundHandler")
    };
    Ok(Trak {
        tkhd: Tkhd {
            track_id,
            enabled: true,
            in_movie: true,
            volume: u8::from(!video).into(),
            width: width.into(),
            height: height.into(),
            ..Default::default()
        },
        mdia: Mdia {
            mdhd: Mdhd {
                timescale: track.timescale,
                language: "und".to_owned(),
                ..Default::default()
            },
            hdlr: Hdlr {
                handler: handler.into(),
                name: name.to_owned(),
            },
            minf: Minf {
                vmhd: video.then(Vmhd::default),
                smhd: (!video).then(Smhd::default),
                dinf: Dinf {
                    dref: Dref {
                        // An empty location: the media is in this file.
                        entries: vec![DrefEntry::Url(Url::default())],
                    },
                },
                stbl: Stbl {
                    stsd: Stsd {
                        codecs: vec![track.codec.clone()],
                    },
                    // Fragmented: the sample tables stay empty, but stco is mandatory.
                    stco: Some(Stco::default()),
                    ..Default::default()
                },
                ..Default::default()
            },
        },
        ..Default::default()
    })
}

fn encode<T: Encode>(atom: &T, kind: FourCC, buf: &mut Vec<u8>) -> Result<(), Error> {
    atom.encode(buf)
        .map_err(|source| Error::Encode { kind, source })
}

#[cfg(test)]
mod tests;
