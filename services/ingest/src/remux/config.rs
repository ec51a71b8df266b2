//! Decoder configurations: a sequence header's bytes in, an MP4 sample entry out.
//!
//! The video records are the bodies of the boxes mp4-atom decodes (`avcC`, `hvcC`, `av1C`,
//! `vpcC`), so mp4-atom reads them; AAC's AudioSpecificConfig is mp4-atom's
//! `DecoderSpecific`; an OpusHead becomes mp4-atom's `dOps` field by field.

use bytes::{BufMut as _, Bytes, BytesMut};
use fmp4::mp4_atom::esds::{DecoderConfig, DecoderSpecific, EsDescriptor};
use fmp4::mp4_atom::{
    self, Atom, Audio, Av01, Av1c, Avc1, Avcc, Codec, Decode as _, Dops, Encode as _, Esds, Hvc1,
    Hvcc, Mp4a, Opus, OpusChannelMapping, Visual, Vp09, VpcC,
};

use super::RemuxError;
use super::bitstream;
use super::flv::{AudioCodec, VideoCodec};

/// Opus always runs at 48 kHz, whatever rate its input had (RFC 7845, 5.1).
const OPUS_RATE: u32 = 48_000;
/// An Opus packet's length when its TOC byte cannot say: the 20 ms encoders default to.
const OPUS_DEFAULT_SAMPLES: u32 = 960;

/// A video track's decoder configuration.
#[derive(Debug, Clone)]
pub(super) struct VideoConfig {
    pub(super) codec: VideoCodec,
    /// The record as the publisher sent it: a repeat of the same bytes changes nothing.
    record: Bytes,
    decoded: DecodedVideo,
    /// Picture size, once known: from the record's SPS or sequence header, else (VP9, or an
    /// AV1 record without one) from the first keyframe.
    dimensions: Option<(u16, u16)>,
    /// The record's parameter sets (AVC SPS and PPS, HEVC VPS, SPS and PPS), each prefixed
    /// with its length in the stream's NAL length size, ready to lead a keyframe sample;
    /// empty for AV1 and VP9, whose keyframes carry their own sequence headers.
    pub(super) parameter_sets: Bytes,
}

#[derive(Debug, Clone)]
enum DecodedVideo {
    Avc(Avcc),
    Hevc(Hvcc),
    Av1(Av1c),
    Vp9(VpcC),
}

impl VideoConfig {
    /// Decodes a video sequence header's configuration record.
    pub(super) fn parse(codec: VideoCodec, record: Bytes) -> Result<Self, RemuxError> {
        let (decoded, dimensions, parameter_sets) = match codec {
            VideoCodec::Avc => {
                let avcc = decode_record::<Avcc>(&record, "AVC")?;
                let sps = avcc.sequence_parameter_sets.first().ok_or_else(|| {
                    RemuxError::Malformed(
                        "AVC decoder configuration record without an SPS".to_owned(),
                    )
                })?;
                let dimensions = bitstream::h264_dimensions(sps);
                let sets = avcc
                    .sequence_parameter_sets
                    .iter()
                    .chain(&avcc.picture_parameter_sets);
                let parameter_sets = length_prefixed(sets, avcc.length_size);
                (DecodedVideo::Avc(avcc), dimensions, parameter_sets)
            }
            VideoCodec::Hevc => {
                let hvcc = decode_record::<Hvcc>(&record, "HEVC")?;
                let nalus = |kind: u8| {
                    hvcc.arrays
                        .iter()
                        .filter(move |array| array.nal_unit_type == kind)
                        .flat_map(|array| &array.nalus)
                };
                let dimensions = nalus(HEVC_SPS).find_map(|sps| bitstream::hevc_dimensions(sps));
                let sets = nalus(HEVC_VPS)
                    .chain(nalus(HEVC_SPS))
                    .chain(nalus(HEVC_PPS));
                let parameter_sets = length_prefixed(sets, hvcc.length_size_minus_one + 1);
                (DecodedVideo::Hevc(hvcc), dimensions, parameter_sets)
            }
            VideoCodec::Av1 => {
                let av1c = decode_record::<Av1c>(&record, "AV1")?;
                let dimensions = bitstream::av1_dimensions(&av1c.config_obus);
                (DecodedVideo::Av1(av1c), dimensions, Bytes::new())
            }
            VideoCodec::Vp9 => {
                // Enhanced RTMP carries the VPCodecConfigurationRecord alone; the vpcC box
                // mp4-atom decodes is a full box around it (version 1, no flags).
                let mut full = Vec::with_capacity(4 + record.len());
                full.extend_from_slice(&[1, 0, 0, 0]);
                full.extend_from_slice(&record);
                let vpcc = decode_record::<VpcC>(&full, "VP9")?;
                (DecodedVideo::Vp9(vpcc), None, Bytes::new())
            }
        };
        let config = Self {
            codec,
            record,
            decoded,
            dimensions: dimensions.and_then(fit_u16),
            parameter_sets,
        };
        check_entry(&config.sample_entry(), "video")?;
        Ok(config)
    }

    /// Whether this is the configuration `record` of `codec` already.
    pub(super) fn is(&self, codec: VideoCodec, record: &[u8]) -> bool {
        self.codec == codec && self.record == record
    }

    /// Whether both describe the same stream (the same record).
    pub(super) fn same(&self, other: &Self) -> bool {
        self.is(other.codec, &other.record)
    }

    /// Whether the picture size is known.
    pub(super) fn has_dimensions(&self) -> bool {
        self.dimensions.is_some()
    }

    /// Learns the picture size from a keyframe when the record did not give it.
    pub(super) fn learn_dimensions(&mut self, keyframe: &[u8]) {
        if self.dimensions.is_some() {
            return;
        }
        self.dimensions = match self.decoded {
            DecodedVideo::Vp9(_) => bitstream::vp9_dimensions(keyframe),
            DecodedVideo::Av1(_) => bitstream::av1_dimensions(keyframe),
            DecodedVideo::Avc(_) | DecodedVideo::Hevc(_) => None,
        }
        .and_then(fit_u16);
    }

    /// The `stsd` entry: `avc1`, `hvc1`, `av01` or `vp09`, 0x0 if the size is still unknown.
    pub(super) fn sample_entry(&self) -> Codec {
        let (width, height) = self.dimensions.unwrap_or_default();
        let visual = Visual {
            data_reference_index: 1,
            width,
            height,
            ..Default::default()
        };
        match &self.decoded {
            DecodedVideo::Avc(avcc) => Codec::Avc1(Avc1 {
                visual,
                avcc: avcc.clone(),
                ..Default::default()
            }),
            DecodedVideo::Hevc(hvcc) => Codec::Hvc1(Hvc1 {
                visual,
                hvcc: hvcc.clone(),
                ..Default::default()
            }),
            DecodedVideo::Av1(av1c) => Codec::Av01(Av01 {
                visual,
                av1c: av1c.clone(),
                ..Default::default()
            }),
            DecodedVideo::Vp9(vpcc) => Codec::Vp09(Vp09 {
                visual,
                vpcc: vpcc.clone(),
                ..Default::default()
            }),
        }
    }
}

const HEVC_VPS: u8 = 32;
const HEVC_SPS: u8 = 33;
const HEVC_PPS: u8 = 34;

/// An audio track's decoder configuration.
#[derive(Debug, Clone)]
pub(super) struct AudioConfig {
    pub(super) codec: AudioCodec,
    /// The sequence header as the publisher sent it.
    config: Bytes,
    entry: Codec,
    /// The sample rate, which is the track's timescale.
    pub(super) timescale: u32,
    /// Samples per AAC frame; Opus packets say their own.
    aac_frame_length: u32,
}

impl AudioConfig {
    /// Decodes an audio sequence header: an AudioSpecificConfig or an OpusHead.
    pub(super) fn parse(codec: AudioCodec, config: Bytes) -> Result<Self, RemuxError> {
        let parsed = match codec {
            AudioCodec::Aac => aac(config)?,
            AudioCodec::Opus => opus(config)?,
        };
        check_entry(&parsed.entry, "audio")?;
        Ok(parsed)
    }

    /// Whether this is the sequence header `config` of `codec` already.
    pub(super) fn is(&self, codec: AudioCodec, config: &[u8]) -> bool {
        self.codec == codec && self.config == config
    }

    /// Whether both describe the same stream.
    pub(super) fn same(&self, other: &Self) -> bool {
        self.is(other.codec, &other.config)
    }

    /// The `stsd` entry: `mp4a` or `Opus`.
    pub(super) fn sample_entry(&self) -> Codec {
        self.entry.clone()
    }

    /// Samples in one coded frame.
    pub(super) fn frame_samples(&self, frame: &[u8]) -> u32 {
        match self.codec {
            AudioCodec::Aac => self.aac_frame_length,
            AudioCodec::Opus => {
                bitstream::opus_packet_samples(frame).unwrap_or(OPUS_DEFAULT_SAMPLES)
            }
        }
    }
}

fn aac(config: Bytes) -> Result<AudioConfig, RemuxError> {
    let parsed = bitstream::aac_config(&config).ok_or_else(|| {
        RemuxError::Malformed(format!(
            "AAC AudioSpecificConfig {config:02x?} names no valid sample rate"
        ))
    })?;
    // mp4-atom keeps the whole config as the esds DecoderSpecificInfo and reads the object
    // type, rate index and channels out of it for its own fields.
    let specific = DecoderSpecific::decode(&mut &config[..])
        .map_err(|err| RemuxError::Malformed(format!("AAC AudioSpecificConfig: {err}")))?;
    let channel_count = match parsed.channel_configuration {
        channels @ 1..=6 => channels,
        7 => 8,
        // 0 means a program config element says; the sample entry needs some number.
        _ => 2,
    };
    let entry = Codec::Mp4a(Mp4a {
        audio: audio_entry(channel_count, parsed.sample_rate),
        esds: Esds {
            es_desc: EsDescriptor {
                dec_config: DecoderConfig {
                    // ISO/IEC 14496-1 table 5: MPEG-4 audio; table 6: an audio stream.
                    object_type_indication: 0x40,
                    stream_type: 0x05,
                    dec_specific: Some(specific),
                    ..Default::default()
                },
                ..Default::default()
            },
        },
        btrt: None,
        taic: None,
    });
    Ok(AudioConfig {
        codec: AudioCodec::Aac,
        config,
        entry,
        timescale: parsed.sample_rate,
        aac_frame_length: parsed.frame_length,
    })
}

/// An OpusHead (RFC 7845, 5.1) as `dOps`: the same fields, big endian and without the magic.
fn opus(config: Bytes) -> Result<AudioConfig, RemuxError> {
    let dops = if config.is_empty() {
        // Enhanced RTMP: an empty sequence start means plain stereo.
        Dops {
            output_channel_count: 2,
            pre_skip: 0,
            input_sample_rate: OPUS_RATE,
            output_gain: 0,
            channel_mapping: None,
        }
    } else {
        opus_head(&config)?
    };
    let entry = Codec::Opus(Opus {
        audio: audio_entry(u32::from(dops.output_channel_count), OPUS_RATE),
        dops,
        btrt: None,
    });
    Ok(AudioConfig {
        codec: AudioCodec::Opus,
        config,
        entry,
        timescale: OPUS_RATE,
        aac_frame_length: 0,
    })
}

fn opus_head(head: &[u8]) -> Result<Dops, RemuxError> {
    let malformed = |why: &str| RemuxError::Malformed(format!("OpusHead: {why}"));
    let fixed = head
        .get(..19)
        .filter(|fixed| fixed.starts_with(b"OpusHead"))
        .ok_or_else(|| malformed("not 19 bytes starting with \"OpusHead\""))?;
    // Versions 0 to 15 share this layout (the upper nibble is the incompatible part).
    if fixed[8] >> 4 != 0 {
        return Err(malformed(&format!("unsupported version {}", fixed[8])));
    }
    let output_channel_count = fixed[9];
    if output_channel_count == 0 {
        return Err(malformed("no channels"));
    }
    let family = fixed[18];
    let channel_mapping = match family {
        0 => None,
        family => {
            let table = head
                .get(19..21 + usize::from(output_channel_count))
                .ok_or_else(|| malformed("channel mapping table cut short"))?;
            Some(OpusChannelMapping {
                family,
                stream_count: table[0],
                coupled_count: table[1],
                channel_mapping: table[2..].to_vec(),
            })
        }
    };
    Ok(Dops {
        output_channel_count,
        pre_skip: u16::from_le_bytes([fixed[10], fixed[11]]),
        input_sample_rate: u32::from_le_bytes([fixed[12], fixed[13], fixed[14], fixed[15]]),
        output_gain: i16::from_le_bytes([fixed[16], fixed[17]]),
        channel_mapping,
    })
}

fn audio_entry(channels: u32, sample_rate: u32) -> Audio {
    Audio {
        data_reference_index: 1,
        channel_count: u16::try_from(channels).unwrap_or(u16::MAX),
        sample_size: 16,
        // A 16.16 field: rates above 65535 Hz are 0 here and exact in the decoder config.
        sample_rate: u16::try_from(sample_rate).unwrap_or(0).into(),
    }
}

/// A configuration record decoded as the body of its box.
fn decode_record<T: Atom>(record: &[u8], codec: &str) -> Result<T, RemuxError> {
    T::decode_body(&mut &record[..]).map_err(|err| {
        RemuxError::Malformed(format!("{codec} decoder configuration record: {err}"))
    })
}

/// Encodes the sample entry once, so that a value its box cannot carry (a NAL length size
/// of 3, an Opus mapping naming a missing stream) is refused with its sequence header rather
/// than when the init segment is written.
fn check_entry(entry: &Codec, track: &str) -> Result<(), RemuxError> {
    entry
        .encode(&mut Vec::new())
        .map_err(|err: mp4_atom::Error| {
            RemuxError::Malformed(format!("{track} sequence header: {err}"))
        })
}

/// NAL units each prefixed with their length in `size` bytes; empty when one is too long
/// for that (then nothing is put in-band rather than something a decoder misreads).
fn length_prefixed<'a>(nalus: impl Iterator<Item = &'a Vec<u8>>, size: u8) -> Bytes {
    let mut out = BytesMut::new();
    for nalu in nalus {
        let len = nalu.len() as u64;
        if !(1..=4).contains(&size) || len >> (8 * u32::from(size)) != 0 {
            return Bytes::new();
        }
        out.put_uint(len, usize::from(size));
        out.extend_from_slice(nalu);
    }
    out.freeze()
}

fn fit_u16((width, height): (u32, u32)) -> Option<(u16, u16)> {
    Some((u16::try_from(width).ok()?, u16::try_from(height).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opus_head_becomes_dops() {
        // Version 1, 2 channels, pre-skip 312, 44.1 kHz input, gain -256, family 0.
        let mut head = b"OpusHead".to_vec();
        head.extend_from_slice(&[1, 2, 0x38, 0x01, 0x44, 0xac, 0, 0, 0x00, 0xff, 0]);
        let config = AudioConfig::parse(AudioCodec::Opus, Bytes::from(head)).expect("valid");
        let Codec::Opus(opus) = config.sample_entry() else {
            panic!("an Opus entry");
        };
        assert_eq!(
            opus.dops,
            Dops {
                output_channel_count: 2,
                pre_skip: 312,
                input_sample_rate: 44100,
                output_gain: -256,
                channel_mapping: None,
            }
        );
        assert_eq!(config.timescale, 48_000);
    }

    #[test]
    fn opus_head_with_a_mapping_table() {
        // Family 1, 3 channels: 2 streams, 1 coupled, mapping 0 2 1.
        let mut head = b"OpusHead".to_vec();
        head.extend_from_slice(&[1, 3, 0, 0, 0x80, 0xbb, 0, 0, 0, 0, 1, 2, 1, 0, 2, 1]);
        let config = AudioConfig::parse(AudioCodec::Opus, Bytes::from(head.clone()));
        let Codec::Opus(opus) = config.expect("valid").sample_entry() else {
            panic!("an Opus entry");
        };
        let mapping = opus.dops.channel_mapping.expect("a mapping");
        assert_eq!(
            (mapping.family, mapping.stream_count, mapping.coupled_count),
            (1, 2, 1)
        );
        assert_eq!(mapping.channel_mapping, [0, 2, 1]);

        // The table names stream 3 of 3 decoded channels: refused with the header.
        let mut bad = head;
        bad[23] = 3;
        assert!(matches!(
            AudioConfig::parse(AudioCodec::Opus, Bytes::from(bad)),
            Err(RemuxError::Malformed(_))
        ));
    }

    #[test]
    fn length_prefix_fits_the_size_or_nothing_is_written() {
        let nalus = [vec![0x67, 1, 2], vec![0x68, 3]];
        assert_eq!(
            &length_prefixed(nalus.iter(), 4)[..],
            [0, 0, 0, 3, 0x67, 1, 2, 0, 0, 0, 2, 0x68, 3]
        );
        assert_eq!(
            &length_prefixed(nalus.iter(), 1)[..],
            [3, 0x67, 1, 2, 2, 0x68, 3]
        );
        let long = [vec![0; 256]];
        assert!(length_prefixed(long.iter(), 1).is_empty());
    }
}
