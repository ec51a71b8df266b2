//! What an init segment says about its tracks, codec strings included.

use std::fmt::Write as _;

use mp4_atom::{Atom as _, Codec, Decode as _, FourCC, Moov};

use crate::{Error, header};

/// The tracks of an init segment, as a player or a remuxer needs them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Init {
    /// In `moov` order.
    pub tracks: Vec<Track>,
}

/// One `trak` of the `moov`, with its `trex` defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    /// `track_ID`, which every fragment's `tfhd` names.
    pub id: u32,
    /// What the track carries, from its handler.
    pub kind: Kind,
    /// Ticks per second of the track's decode and presentation times.
    pub timescale: u32,
    /// The codec as RFC 6381 (and so MSE and WebCodecs) spell it, from the first sample
    /// entry; `None` for a sample entry this crate cannot name.
    pub codec: Option<String>,
    /// Picture size or audio format, from the same sample entry; `None` when it is neither
    /// a visual nor an audio entry that mp4-atom knows.
    pub format: Option<Format>,
    /// `trex` `default_sample_flags`: the flags of every sample whose fragment gives none.
    pub default_sample_flags: Option<u32>,
}

/// A track's handler type (`hdlr`), which says how to present it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `vide`.
    Video,
    /// `soun`.
    Audio,
    /// Any other handler (`text`, `subt`, `meta`, ...).
    Other(FourCC),
}

/// The presentation parameters a sample entry declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A visual sample entry.
    Video {
        /// Coded width in pixels.
        width: u16,
        /// Coded height in pixels.
        height: u16,
    },
    /// An audio sample entry.
    Audio {
        /// Samples per second: the AAC decoder configuration's when it has one, else the
        /// entry's (whose 16.16 field cannot say more than 65535; Opus always says 48000).
        sample_rate: u32,
        /// Channel count: the AAC or Opus decoder configuration's when it has one, else the
        /// entry's.
        channels: u16,
    },
}

impl Init {
    /// Reads the tracks of an init segment: the bytes of an [`Item::Init`](crate::Item::Init),
    /// or any sequence of complete top-level boxes holding exactly one `moov`.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] when mp4-atom rejects the `moov`; [`Error::MissingMoov`] or
    /// [`Error::DuplicateInit`] without exactly one; [`Error::Truncated`] when the last box
    /// runs past the end of `data`; a header error for a box with an impossible size.
    pub fn parse(data: &[u8]) -> Result<Init, Error> {
        let mut init = None;
        let mut pos = 0usize;
        while let Some(rest) = data.get(pos..).filter(|rest| !rest.is_empty()) {
            let offset = pos as u64;
            let truncated = || Error::Truncated {
                item: "init",
                offset,
                buffered: rest.len(),
            };
            let header = header::parse(rest, offset)?.ok_or_else(truncated)?;
            let whole = usize::try_from(header.size)
                .ok()
                .and_then(|size| rest.get(..size))
                .ok_or_else(truncated)?;
            if header.kind == Moov::KIND {
                if init.is_some() {
                    return Err(Error::DuplicateInit {
                        kind: header.kind,
                        offset,
                    });
                }
                init = Some(Init::from(&decode::<Moov>(whole, offset)?));
            }
            pos += whole.len();
        }
        init.ok_or(Error::MissingMoov {
            offset: data.len() as u64,
            init_size: data.len(),
        })
    }

    /// The track with this `track_ID`.
    #[must_use]
    pub fn track(&self, id: u32) -> Option<&Track> {
        self.tracks.iter().find(|track| track.id == id)
    }

    /// Whether any track is video; then only video samples make keyframes.
    #[must_use]
    pub fn has_video(&self) -> bool {
        self.tracks.iter().any(|track| track.kind == Kind::Video)
    }
}

/// The tracks of a decoded `moov`, for a caller that already has one (a remuxer, a test that
/// built it with mp4-atom).
impl From<&Moov> for Init {
    fn from(moov: &Moov) -> Self {
        let trex = moov.mvex.as_ref().map(|mvex| mvex.trex.as_slice());
        let tracks = moov
            .trak
            .iter()
            .map(|trak| {
                let id = trak.tkhd.track_id;
                let mdia = &trak.mdia;
                let entry = mdia.minf.stbl.stsd.codecs.first();
                Track {
                    id,
                    kind: Kind::from(mdia.hdlr.handler),
                    timescale: mdia.mdhd.timescale,
                    codec: entry.and_then(codec_string),
                    format: entry.and_then(format),
                    default_sample_flags: trex
                        .unwrap_or_default()
                        .iter()
                        .find(|trex| trex.track_id == id)
                        .map(|trex| trex.default_sample_flags),
                }
            })
            .collect();
        Init { tracks }
    }
}

impl From<FourCC> for Kind {
    fn from(handler: FourCC) -> Self {
        match &<[u8; 4]>::from(handler) {
            b"vide" => Kind::Video,
            b"soun" => Kind::Audio,
            _ => Kind::Other(handler),
        }
    }
}

/// Decodes the complete top-level box `whole`, which sits at stream offset `offset`.
pub(crate) fn decode<T: mp4_atom::Atom>(whole: &[u8], offset: u64) -> Result<T, Error> {
    T::decode(&mut &whole[..]).map_err(|source| Error::Decode {
        kind: T::KIND,
        offset,
        source: source.into(),
    })
}

fn format(entry: &Codec) -> Option<Format> {
    if let Some(visual) = entry.visual() {
        return Some(Format::Video {
            width: visual.width,
            height: visual.height,
        });
    }
    let audio = entry.audio()?;
    let mut sample_rate = u32::from(audio.sample_rate.integer());
    let mut channels = audio.channel_count;
    // The decoder configuration is what a decoder is set up with, and muxers fill the sample
    // entry loosely (ffmpeg writes 2 channels for mono AAC there), so it wins when it says.
    match entry {
        Codec::Mp4a(mp4a) => {
            if let Some(specific) = &mp4a.esds.es_desc.dec_config.dec_specific {
                // ISO/IEC 14496-3, 1.6.3.3 and 1.6.3.4: index 15 means an explicit rate, and
                // channel configuration 0 means "given elsewhere".
                if let Some(&rate) = AAC_SAMPLE_RATES.get(usize::from(specific.freq_index)) {
                    sample_rate = rate;
                }
                match specific.chan_conf {
                    1..=6 => channels = u16::from(specific.chan_conf),
                    7 => channels = 8,
                    _ => {}
                }
            }
        }
        Codec::Opus(opus) => channels = u16::from(opus.dops.output_channel_count),
        _ => {}
    }
    Some(Format::Audio {
        sample_rate,
        channels,
    })
}

/// AudioSpecificConfig `samplingFrequencyIndex` values 0 to 12.
const AAC_SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// The RFC 6381 `codecs` parameter for a sample entry, in the forms the WebCodecs codec
/// registry lists.
fn codec_string(entry: &Codec) -> Option<String> {
    Some(match entry {
        // ISO/IEC 14496-15 annex E: profile, constraint flags and level bytes of the avcC.
        Codec::Avc1(avc1) => avc_string("avc1", &avc1.avcc),
        Codec::Avc3(avc3) => avc_string("avc3", &avc3.avcc),
        Codec::Hvc1(hvc1) => hevc_string("hvc1", &hvc1.hvcc),
        Codec::Hev1(hev1) => hevc_string("hev1", &hev1.hvcc),
        Codec::Av01(av01) => av1_string(&av01.av1c),
        // VP codec ISO-BMFF binding: profile, level and bit depth, two digits each.
        Codec::Vp09(vp09) => format!(
            "vp09.{:02}.{:02}.{:02}",
            vp09.vpcc.profile, vp09.vpcc.level, vp09.vpcc.bit_depth
        ),
        Codec::Vp08(_) => "vp8".to_owned(),
        Codec::Mp4a(mp4a) => {
            // RFC 6381 section 3.3: the object type in hex, then for MPEG-4 audio (0x40) the
            // audio object type in decimal.
            let config = &mp4a.esds.es_desc.dec_config;
            let mut codec = format!("mp4a.{:02x}", config.object_type_indication);
            if let Some(specific) = config
                .dec_specific
                .as_ref()
                .filter(|s| config.object_type_indication == 0x40 && s.profile != 0)
            {
                let _ = write!(codec, ".{}", specific.profile);
            }
            codec
        }
        Codec::Opus(_) => "opus".to_owned(),
        Codec::Flac(_) => "flac".to_owned(),
        Codec::Mp3(_) => "mp3".to_owned(),
        Codec::Ac3(_) => "ac-3".to_owned(),
        Codec::Eac3(_) => "ec-3".to_owned(),
        _ => return None,
    })
}

fn avc_string(prefix: &str, avcc: &mp4_atom::Avcc) -> String {
    format!(
        "{prefix}.{:02x}{:02x}{:02x}",
        avcc.avc_profile_indication, avcc.profile_compatibility, avcc.avc_level_indication
    )
}

/// ISO/IEC 14496-15 annex E.3: profile space and profile, the compatibility flags
/// bit-reversed in hex, tier and level, then the constraint bytes in hex without the trailing
/// zero ones.
fn hevc_string(prefix: &str, hvcc: &mp4_atom::Hvcc) -> String {
    let space = match hvcc.general_profile_space {
        1 => "A",
        2 => "B",
        3 => "C",
        _ => "",
    };
    let compatibility = u32::from_be_bytes(hvcc.general_profile_compatibility_flags).reverse_bits();
    let tier = if hvcc.general_tier_flag { 'H' } else { 'L' };
    let mut codec = format!(
        "{prefix}.{space}{}.{compatibility:X}.{tier}{}",
        hvcc.general_profile_idc, hvcc.general_level_idc
    );
    let flags = &hvcc.general_constraint_indicator_flags;
    let used = flags
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |last| last + 1);
    for byte in &flags[..used] {
        let _ = write!(codec, ".{byte:X}");
    }
    codec
}

/// AV1 codec ISO-BMFF binding, "Codecs Parameter String": profile, level with tier, bit
/// depth (the optional colour fields are left out, as their defaults allow).
fn av1_string(av1c: &mp4_atom::Av1c) -> String {
    let tier = if av1c.seq_tier_0 { 'H' } else { 'M' };
    let depth = match (av1c.high_bitdepth, av1c.twelve_bit) {
        (true, true) => 12,
        (true, false) => 10,
        (false, _) => 8,
    };
    format!(
        "av01.{}.{:02}{tier}.{depth:02}",
        av1c.seq_profile, av1c.seq_level_idx_0
    )
}

#[cfg(test)]
mod tests {
    use mp4_atom::esds::{DecoderConfig, DecoderSpecific, EsDescriptor};
    use mp4_atom::{Audio, Av01, Av1c, Avc3, Avcc, Esds, Hev1, Hvcc, Mp4a, Visual, Vp09, VpcC};

    use super::*;

    // The fixtures cover avc1, hvc1, av01, mp4a.40.2 and Opus; these are the other branches,
    // checked against the examples of the specifications they follow.

    #[test]
    fn avc3_keeps_its_own_prefix() {
        let entry = Codec::Avc3(Avc3 {
            visual: Visual::default(),
            avcc: Avcc {
                avc_profile_indication: 0x42,
                profile_compatibility: 0xe0,
                avc_level_indication: 0x1e,
                ..Default::default()
            },
            ..Default::default()
        });
        assert_eq!(codec_string(&entry).as_deref(), Some("avc3.42e01e"));
    }

    #[test]
    fn hevc_main10_high_tier_with_profile_space() {
        let hvcc = Hvcc {
            general_profile_space: 1,
            general_tier_flag: true,
            general_profile_idc: 2,
            // Main 10 compatible: bit 2 counted from the most significant.
            general_profile_compatibility_flags: [0x20, 0, 0, 0],
            general_constraint_indicator_flags: [0xb0, 0, 0x12, 0, 0, 0],
            general_level_idc: 153,
            ..Hvcc::new()
        };
        let entry = Codec::Hev1(Hev1 {
            hvcc,
            ..Default::default()
        });
        assert_eq!(
            codec_string(&entry).as_deref(),
            Some("hev1.A2.4.H153.B0.0.12")
        );
    }

    #[test]
    fn av1_ten_bit_high_tier() {
        let entry = Codec::Av01(Av01 {
            av1c: Av1c {
                seq_profile: 0,
                seq_level_idx_0: 13,
                seq_tier_0: true,
                high_bitdepth: true,
                ..Default::default()
            },
            ..Default::default()
        });
        assert_eq!(codec_string(&entry).as_deref(), Some("av01.0.13H.10"));
    }

    #[test]
    fn vp9() {
        let entry = Codec::Vp09(Vp09 {
            vpcc: VpcC {
                level: 10,
                ..Default::default()
            },
            ..Default::default()
        });
        assert_eq!(codec_string(&entry).as_deref(), Some("vp09.00.10.08"));
    }

    fn mp4a(object_type: u8, specific: Option<DecoderSpecific>) -> Codec {
        Codec::Mp4a(Mp4a {
            audio: Audio {
                data_reference_index: 1,
                channel_count: 2,
                sample_size: 16,
                sample_rate: 48000.into(),
            },
            esds: Esds {
                es_desc: EsDescriptor {
                    dec_config: DecoderConfig {
                        object_type_indication: object_type,
                        dec_specific: specific,
                        ..Default::default()
                    },
                    ..Default::default()
                },
            },
            btrt: None,
            taic: None,
        })
    }

    #[test]
    fn mp4a_variants() {
        let he_aac = DecoderSpecific {
            profile: 5,
            freq_index: 6,
            chan_conf: 0,
            raw: vec![],
        };
        let entry = mp4a(0x40, Some(he_aac));
        assert_eq!(codec_string(&entry).as_deref(), Some("mp4a.40.5"));
        // Rate from the AudioSpecificConfig (index 6 is 24 kHz); channel configuration 0
        // leaves the entry's count.
        assert_eq!(
            format(&entry),
            Some(Format::Audio {
                sample_rate: 24000,
                channels: 2
            })
        );
        // MPEG-1 audio layer 3 in an mp4a entry: the object type alone.
        assert_eq!(codec_string(&mp4a(0x6b, None)).as_deref(), Some("mp4a.6b"));
        assert_eq!(codec_string(&mp4a(0x40, None)).as_deref(), Some("mp4a.40"));
    }

    #[test]
    fn unknown_entries_have_no_name() {
        let entry = Codec::Unknown(FourCC::new(b"dvh1"), vec![]);
        assert_eq!(codec_string(&entry), None);
        assert_eq!(format(&entry), None);
        assert_eq!(
            Kind::from(FourCC::new(b"subt")),
            Kind::Other(FourCC::new(b"subt"))
        );
    }
}
