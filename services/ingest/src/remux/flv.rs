//! FLV tag bodies (legacy and enhanced RTMP) into what the remuxer acts on.
//!
//! scuffle-flv reads the tag headers: legacy or enhanced, frame type, codec ID or FourCC,
//! packet type, modifier extensions, multitrack layout. The bodies are cut here rather than by
//! scuffle's body demuxers, because those parse sequence headers into their own types while
//! the remuxer wants the configuration record's bytes, which are exactly the body of the
//! `avcC` / `hvcC` / `av1C` box mp4-atom decodes.

use std::io::Cursor;

use bytes::{Buf as _, Bytes};
use scuffle_flv::audio::AudioData;
use scuffle_flv::audio::body::AudioTagBody;
use scuffle_flv::audio::body::enhanced::{AudioPacket, ExAudioTagBody};
use scuffle_flv::audio::body::legacy::LegacyAudioTagBody;
use scuffle_flv::audio::body::legacy::aac::AacAudioData;
use scuffle_flv::audio::header::enhanced::AudioFourCc;
use scuffle_flv::audio::header::legacy::SoundFormat;
use scuffle_flv::video::header::enhanced::{
    ExVideoTagHeader, ExVideoTagHeaderContent, VideoFourCc, VideoPacketType,
};
use scuffle_flv::video::header::legacy::{
    LegacyVideoTagHeader, LegacyVideoTagHeaderAvcPacket, VideoCodecId,
};
use scuffle_flv::video::header::{VideoFrameType, VideoTagHeader, VideoTagHeaderData};

use super::RemuxError;

/// The video codecs the remuxer writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum VideoCodec {
    Avc,
    Hevc,
    Av1,
    Vp9,
}

/// The audio codecs the remuxer writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AudioCodec {
    Aac,
    Opus,
}

/// What one video message asks of the remuxer.
#[derive(Debug)]
pub(super) enum Video {
    /// A decoder configuration record.
    SequenceStart { codec: VideoCodec, record: Bytes },
    /// One coded picture.
    Frame(VideoFrame),
    /// Nothing to write: metadata, commands, end of sequence, a track other than the first.
    Ignored,
}

/// One coded picture.
#[derive(Debug)]
pub(super) struct VideoFrame {
    pub(super) codec: VideoCodec,
    pub(super) keyframe: bool,
    /// Presentation minus decode time, in milliseconds.
    pub(super) composition_ms: i32,
    pub(super) data: Bytes,
}

/// What one audio message asks of the remuxer.
#[derive(Debug)]
pub(super) enum Audio {
    /// An AudioSpecificConfig (AAC) or an OpusHead (Opus).
    SequenceStart { codec: AudioCodec, config: Bytes },
    /// One coded frame.
    Frame { codec: AudioCodec, data: Bytes },
    /// Nothing to write.
    Ignored,
}

const SUPPORTED_VIDEO: &str = "send H.264, or HEVC, AV1 or VP9 over enhanced RTMP";
const SUPPORTED_AUDIO: &str = "send AAC or Opus";

/// Reads the body of an RTMP video message (an FLV `VIDEODATA` tag body).
pub(super) fn video(data: Bytes) -> Result<Video, RemuxError> {
    let mut cursor = Cursor::new(data);
    let header = VideoTagHeader::demux(&mut cursor)
        .map_err(|err| RemuxError::Malformed(format!("video tag header: {err}")))?;
    let body = rest(cursor);
    if header.frame_type == VideoFrameType::Command {
        return Ok(Video::Ignored);
    }
    // Generated keyframes are keyframes a server made; either way a decoder can start there.
    let keyframe = matches!(
        header.frame_type,
        VideoFrameType::KeyFrame | VideoFrameType::GeneratedKeyFrame
    );
    match header.data {
        VideoTagHeaderData::Legacy(legacy) => legacy_video(legacy, keyframe, body),
        VideoTagHeaderData::Enhanced(enhanced) => enhanced_video(&enhanced, keyframe, body),
    }
}

fn legacy_video(
    header: LegacyVideoTagHeader,
    keyframe: bool,
    body: Bytes,
) -> Result<Video, RemuxError> {
    let packet = match header {
        LegacyVideoTagHeader::AvcPacket(packet) => packet,
        LegacyVideoTagHeader::VideoCommand(_) => return Ok(Video::Ignored),
        LegacyVideoTagHeader::Other { video_codec_id } => {
            return Err(RemuxError::Unsupported(format!(
                "video codec {} is not supported: {SUPPORTED_VIDEO}",
                legacy_video_name(video_codec_id)
            )));
        }
    };
    Ok(match packet {
        LegacyVideoTagHeaderAvcPacket::SequenceHeader => Video::SequenceStart {
            codec: VideoCodec::Avc,
            record: body,
        },
        LegacyVideoTagHeaderAvcPacket::Nalu {
            composition_time_offset,
        } => Video::Frame(VideoFrame {
            codec: VideoCodec::Avc,
            keyframe,
            composition_ms: sign_extend_24(composition_time_offset),
            data: body,
        }),
        LegacyVideoTagHeaderAvcPacket::EndOfSequence
        | LegacyVideoTagHeaderAvcPacket::Unknown { .. } => Video::Ignored,
    })
}

fn enhanced_video(
    header: &ExVideoTagHeader,
    keyframe: bool,
    body: Bytes,
) -> Result<Video, RemuxError> {
    let Some((four_cc, body)) = first_video_track(&header.content, body)? else {
        return Ok(Video::Ignored);
    };
    let codec = match four_cc {
        VideoFourCc::Avc => VideoCodec::Avc,
        VideoFourCc::Hevc => VideoCodec::Hevc,
        VideoFourCc::Av1 => VideoCodec::Av1,
        VideoFourCc::Vp9 => VideoCodec::Vp9,
        VideoFourCc::Vp8 => {
            return Err(RemuxError::Unsupported(format!(
                "video codec VP8 is not supported: {SUPPORTED_VIDEO}"
            )));
        }
        VideoFourCc(other) => {
            return Err(RemuxError::Unsupported(format!(
                "video codec FourCC '{}' is not supported: {SUPPORTED_VIDEO}",
                printable(&other)
            )));
        }
    };
    Ok(match header.video_packet_type {
        VideoPacketType::SequenceStart => Video::SequenceStart {
            codec,
            record: body,
        },
        VideoPacketType::CodedFrames if matches!(codec, VideoCodec::Avc | VideoCodec::Hevc) => {
            let mut body = body;
            let offset = take(&mut body, 3, "video composition time")?;
            let offset = u32::from_be_bytes([0, offset[0], offset[1], offset[2]]);
            Video::Frame(VideoFrame {
                codec,
                keyframe,
                composition_ms: sign_extend_24(offset),
                data: body,
            })
        }
        VideoPacketType::CodedFrames | VideoPacketType::CodedFramesX => Video::Frame(VideoFrame {
            codec,
            keyframe,
            composition_ms: 0,
            data: body,
        }),
        // Metadata (HDR colour info), sequence end, the MPEG-2 TS form of an AV1 sequence
        // start (superseded by SequenceStart), and types this version does not know.
        _ => Video::Ignored,
    })
}

/// The FourCC and packet body of the default track (ID 0) of an enhanced video message, or
/// `None` when the message has no such track.
fn first_video_track(
    content: &ExVideoTagHeaderContent,
    mut body: Bytes,
) -> Result<Option<(VideoFourCc, Bytes)>, RemuxError> {
    let four_cc = match content {
        ExVideoTagHeaderContent::NoMultiTrack(four_cc) => return Ok(Some((*four_cc, body))),
        ExVideoTagHeaderContent::VideoCommand(_) => return Ok(None),
        ExVideoTagHeaderContent::OneTrack(four_cc) => {
            let track_id = take(&mut body, 1, "video track ID")?[0];
            return Ok((track_id == 0).then_some((*four_cc, body)));
        }
        ExVideoTagHeaderContent::ManyTracks(four_cc) => Some(*four_cc),
        ExVideoTagHeaderContent::ManyTracksManyCodecs => None,
        ExVideoTagHeaderContent::Unknown {
            video_multitrack_type,
            ..
        } => {
            return Err(RemuxError::Unsupported(format!(
                "video multitrack type {} is not supported",
                video_multitrack_type.0
            )));
        }
    };
    // Each track: [FourCC when codecs differ], track ID, 24-bit size, that many bytes.
    while body.has_remaining() {
        let track_four_cc = match four_cc {
            Some(four_cc) => four_cc,
            None => {
                let raw = take(&mut body, 4, "video track FourCC")?;
                VideoFourCc([raw[0], raw[1], raw[2], raw[3]])
            }
        };
        let track_id = take(&mut body, 1, "video track ID")?[0];
        let size = take(&mut body, 3, "video track size")?;
        let size = usize::from(size[0]) << 16 | usize::from(size[1]) << 8 | usize::from(size[2]);
        let track = take(&mut body, size, "video track")?;
        if track_id == 0 {
            return Ok(Some((track_four_cc, track)));
        }
    }
    Ok(None)
}

/// Reads the body of an RTMP audio message (an FLV `AUDIODATA` tag body).
pub(super) fn audio(data: Bytes) -> Result<Audio, RemuxError> {
    // Audio bodies are opaque bytes to scuffle-flv (it parses no AAC or Opus configuration),
    // so its whole demuxer is used, multitrack splitting included.
    let audio = AudioData::demux(&mut Cursor::new(data))
        .map_err(|err| RemuxError::Malformed(format!("audio tag: {err}")))?;
    match audio.body {
        AudioTagBody::Legacy(LegacyAudioTagBody::Aac(aac)) => Ok(match aac {
            AacAudioData::SequenceHeader(config) => Audio::SequenceStart {
                codec: AudioCodec::Aac,
                config,
            },
            AacAudioData::Raw(data) => Audio::Frame {
                codec: AudioCodec::Aac,
                data,
            },
            AacAudioData::Unknown { .. } => Audio::Ignored,
        }),
        AudioTagBody::Legacy(LegacyAudioTagBody::Other { .. }) => {
            let scuffle_flv::audio::header::AudioTagHeader::Legacy(header) = audio.header else {
                return Err(RemuxError::Malformed(
                    "a legacy audio body under an enhanced header".to_owned(),
                ));
            };
            Err(RemuxError::Unsupported(format!(
                "audio codec {} is not supported: {SUPPORTED_AUDIO}",
                legacy_audio_name(header.sound_format)
            )))
        }
        AudioTagBody::Enhanced(ExAudioTagBody::NoMultitrack {
            audio_four_cc,
            packet,
        }) => enhanced_audio(audio_four_cc, packet),
        AudioTagBody::Enhanced(ExAudioTagBody::ManyTracks(tracks)) => {
            match tracks.into_iter().find(|track| track.audio_track_id == 0) {
                Some(track) => enhanced_audio(track.audio_four_cc, track.packet),
                None => Ok(Audio::Ignored),
            }
        }
    }
}

fn enhanced_audio(four_cc: AudioFourCc, packet: AudioPacket) -> Result<Audio, RemuxError> {
    let codec = match four_cc {
        AudioFourCc::Aac => AudioCodec::Aac,
        AudioFourCc::Opus => AudioCodec::Opus,
        AudioFourCc::Mp3 => return Err(unsupported_audio("MP3")),
        AudioFourCc::Flac => return Err(unsupported_audio("FLAC")),
        AudioFourCc::Ac3 => return Err(unsupported_audio("AC-3")),
        AudioFourCc::Eac3 => return Err(unsupported_audio("E-AC-3")),
        AudioFourCc(other) => {
            return Err(unsupported_audio(&format!(
                "FourCC '{}'",
                printable(&other)
            )));
        }
    };
    Ok(match packet {
        AudioPacket::SequenceStart { header_data } => Audio::SequenceStart {
            codec,
            config: header_data,
        },
        AudioPacket::CodedFrames { data } => Audio::Frame { codec, data },
        // Channel order signalling (Opus carries its own mapping in the OpusHead), sequence
        // end and unknown packet types.
        _ => Audio::Ignored,
    })
}

fn unsupported_audio(name: &str) -> RemuxError {
    RemuxError::Unsupported(format!(
        "audio codec {name} is not supported: {SUPPORTED_AUDIO}"
    ))
}

fn legacy_video_name(id: VideoCodecId) -> String {
    match id {
        VideoCodecId::SorensonH263 => "Sorenson H.263".to_owned(),
        VideoCodecId::ScreenVideo => "Screen Video".to_owned(),
        VideoCodecId::On2VP6 => "On2 VP6".to_owned(),
        VideoCodecId::On2VP6WithAlphaChannel => "On2 VP6 with alpha".to_owned(),
        VideoCodecId::ScreenVideoVersion2 => "Screen Video 2".to_owned(),
        // Some servers and encoders use 12 for HEVC outside any specification.
        VideoCodecId(12) => "HEVC with the non-standard FLV codec ID 12".to_owned(),
        VideoCodecId(other) => format!("with FLV codec ID {other}"),
    }
}

fn legacy_audio_name(format: SoundFormat) -> String {
    match format {
        SoundFormat::LinearPcmPlatformEndian => "linear PCM".to_owned(),
        SoundFormat::Adpcm => "ADPCM".to_owned(),
        SoundFormat::Mp3 => "MP3".to_owned(),
        SoundFormat::LinearPcmLittleEndian => "linear PCM (little endian)".to_owned(),
        SoundFormat::Nellymoser16KhzMono
        | SoundFormat::Nellymoser8KhzMono
        | SoundFormat::Nellymoser => "Nellymoser".to_owned(),
        SoundFormat::G711ALaw => "G.711 A-law".to_owned(),
        SoundFormat::G711MuLaw => "G.711 mu-law".to_owned(),
        SoundFormat::Speex => "Speex".to_owned(),
        SoundFormat::Mp38Khz => "MP3 8 kHz".to_owned(),
        SoundFormat::DeviceSpecificSound => "device-specific sound".to_owned(),
        SoundFormat(other) => format!("with FLV sound format {other}"),
    }
}

/// What is left of the message after the header scuffle-flv read.
fn rest(cursor: Cursor<Bytes>) -> Bytes {
    let position = usize::try_from(cursor.position()).unwrap_or(usize::MAX);
    let data = cursor.into_inner();
    data.slice(position.min(data.len())..)
}

/// Splits the first `len` bytes off `body`.
fn take(body: &mut Bytes, len: usize, what: &str) -> Result<Bytes, RemuxError> {
    if body.len() < len {
        return Err(RemuxError::Malformed(format!(
            "{what}: {len} bytes needed, {} left",
            body.len()
        )));
    }
    Ok(body.split_to(len))
}

/// FLV's signed 24-bit composition time, as scuffle-flv's legacy header hands it unsigned.
fn sign_extend_24(value: u32) -> i32 {
    // The shift puts bit 23 in the sign bit; the arithmetic shift back extends it.
    ((value << 8) as i32) >> 8
}

fn printable(four_cc: &[u8; 4]) -> String {
    four_cc
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composition_time_is_signed() {
        assert_eq!(sign_extend_24(0x00_0021), 33);
        assert_eq!(sign_extend_24(0xff_ffdf), -33);
        assert_eq!(sign_extend_24(0x80_0000), -(1 << 23));
    }
}
