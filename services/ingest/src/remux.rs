//! RTMP's FLV media to the stream's CMAF: an init segment, then one `moof` + `mdat` per frame.
//!
//! A [`Remuxer`] takes one RTMP publish's audio and video messages (each an FLV tag body
//! with its millisecond timestamp) and hands back [`Output`]s: the init segment the stream is
//! announced with, then one fragment per frame, each written by [`fmp4::mux`]. It does no
//! I/O, reads no clock and keeps no media beyond the message it is handling.
//!
//! # Codecs
//!
//! H.264 (legacy FLV codec ID 7, or `avc1` over enhanced RTMP) and AAC (sound format 10, or
//! `mp4a`), as OBS sends by default; HEVC (`hvc1`), AV1 (`av01`), VP9 (`vp09`) and Opus
//! (`Opus`) over enhanced RTMP. Anything else is [`RemuxError::Unsupported`]. Of a
//! multitrack message only track 0 (the default track) is written.
//!
//! # When things are written
//!
//! * [`Output::Init`] comes once, before any fragment: as soon as both a video and an audio
//!   configuration are known, or else with the first frame that is written. Frames that come
//!   before their track's configuration, and video frames before the first keyframe, are
//!   dropped. While the stream has video, audio frames before its first keyframe are dropped
//!   too, so that the first fragment starts a group.
//! * A configuration that changes later (a new resolution; an audio track that was not in the
//!   init) takes effect at the next video keyframe: that keyframe's payload starts with the
//!   new init segment, and so does every keyframe's after it, so that viewers joining later
//!   find it too ([`fmp4::split_inline_init`] takes it apart). H.264 and HEVC keyframes then
//!   also carry the parameter sets in-band, for decoders that cannot re-initialise. Video
//!   frames keep the old configuration until that keyframe; audio frames of a changed audio
//!   configuration are dropped until it. Without video, a change takes effect at the next
//!   audio frame. A repeated identical sequence header changes nothing.
//!
//! # Timing
//!
//! Video is written at 90 kHz, audio at its sample rate (see `clock` for unwrapping,
//! backwards steps and audio's sample-exact counting). A sample's duration is the step from
//! its track's previous frame, since the next one is not known yet (the first video frame
//! lasts 1/30 s, audio frames last their codec's frame length); the decode times in the
//! fragments are what players follow.
//!
//! # Errors
//!
//! A message that returns an error leaves the remuxer as it was: the caller may skip it or
//! end the publish. [`RemuxError::TooLarge`] means a frame that cannot travel at all.

use bytes::{Bytes, BytesMut};
use fmp4::mux::{self, Sample, TrackConfig};
use wire::limits::{MAX_FRAME, MAX_INIT};

mod bitstream;
mod clock;
mod config;
mod flv;

use clock::{AudioClock, VIDEO_TIMESCALE, VideoClock};
use config::{AudioConfig, VideoConfig};

/// `track_ID` of the video track, in every init segment.
pub const VIDEO_TRACK_ID: u32 = 1;
/// `track_ID` of the audio track, in every init segment (also when there is no video track).
pub const AUDIO_TRACK_ID: u32 = 2;

/// What the remuxer hands back for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The stream's init segment (`ftyp` + `moov`): emitted exactly once, before any
    /// fragment. This is what the stream is announced with.
    Init(Bytes),
    /// One frame as `moof` + `mdat`, preceded by the current init segment when it is a
    /// keyframe after a configuration change.
    Fragment {
        /// The fragment, at most [`MAX_FRAME`] bytes.
        payload: Bytes,
        /// Whether a group starts here: a video keyframe, or any audio frame of a stream
        /// without video (the rule [`fmp4::Reader`] applies to the same bytes).
        keyframe: bool,
        /// The frame's decode time in microseconds, on the publisher's unwrapped clock.
        dts_us: u64,
    },
}

/// Why a message cannot be remuxed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemuxError {
    /// A codec or feature the remuxer does not write; the message names it and what is
    /// supported.
    #[error("{0}")]
    Unsupported(String),
    /// A message or configuration that cannot be read.
    #[error("malformed media: {0}")]
    Malformed(String),
    /// Something larger than the stream can carry.
    #[error("{what} of {size} bytes is over the limit of {max}")]
    TooLarge {
        /// `"frame"` or `"init segment"`.
        what: &'static str,
        /// Its size in bytes.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// The init segment in effect and the configurations it was written from.
#[derive(Debug, Clone)]
struct Active {
    init: Bytes,
    video: Option<VideoConfig>,
    audio: Option<AudioConfig>,
}

impl Active {
    /// Whether this init describes exactly these configurations.
    fn describes(&self, video: Option<&VideoConfig>, audio: Option<&AudioConfig>) -> bool {
        let same_video = match (&self.video, video) {
            (None, None) => true,
            (Some(a), Some(b)) => a.same(b),
            _ => false,
        };
        let same_audio = match (&self.audio, audio) {
            (None, None) => true,
            (Some(a), Some(b)) => a.same(b),
            _ => false,
        };
        same_video && same_audio
    }
}

/// Remuxes one RTMP publish. See the [module documentation](self).
#[derive(Debug, Default)]
pub struct Remuxer {
    /// The latest video configuration the publisher sent.
    video: Option<VideoConfig>,
    /// The latest audio configuration the publisher sent.
    audio: Option<AudioConfig>,
    /// The init segment in effect, once one was emitted.
    active: Option<Active>,
    /// Whether keyframes carry the active init segment (after a configuration change).
    inline: bool,
    /// Whether a video keyframe was written under the active init segment.
    video_started: bool,
    video_clock: VideoClock,
    audio_clock: Option<AudioClock>,
    /// `mfhd` sequence number of the next fragment.
    sequence: u32,
}

impl Remuxer {
    /// A remuxer for a new publish.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles an RTMP video message: `data` is the FLV `VIDEODATA` tag body, stamped
    /// `timestamp_ms`.
    ///
    /// # Errors
    ///
    /// [`RemuxError::Unsupported`] for a codec other than H.264, HEVC, AV1 or VP9;
    /// [`RemuxError::Malformed`] for a message or configuration record that cannot be read;
    /// [`RemuxError::TooLarge`] for a frame over [`MAX_FRAME`].
    pub fn video(&mut self, timestamp_ms: u32, data: Bytes) -> Result<Vec<Output>, RemuxError> {
        match flv::video(data)? {
            flv::Video::SequenceStart { codec, record } => {
                if self.video.as_ref().is_some_and(|v| v.is(codec, &record)) {
                    return Ok(Vec::new());
                }
                self.video = Some(VideoConfig::parse(codec, record)?);
                self.announce_when_ready()
            }
            flv::Video::Frame(frame) => self.video_frame(timestamp_ms, frame),
            flv::Video::Ignored => Ok(Vec::new()),
        }
    }

    /// Handles an RTMP audio message: `data` is the FLV `AUDIODATA` tag body, stamped
    /// `timestamp_ms`.
    ///
    /// # Errors
    ///
    /// [`RemuxError::Unsupported`] for a codec other than AAC or Opus;
    /// [`RemuxError::Malformed`] for a message or configuration that cannot be read;
    /// [`RemuxError::TooLarge`] for a frame over [`MAX_FRAME`].
    pub fn audio(&mut self, timestamp_ms: u32, data: Bytes) -> Result<Vec<Output>, RemuxError> {
        match flv::audio(data)? {
            flv::Audio::SequenceStart { codec, config } => {
                if self.audio.as_ref().is_some_and(|a| a.is(codec, &config)) {
                    return Ok(Vec::new());
                }
                self.audio = Some(AudioConfig::parse(codec, config)?);
                self.announce_when_ready()
            }
            flv::Audio::Frame { codec, data } => self.audio_frame(timestamp_ms, codec, data),
            flv::Audio::Ignored => Ok(Vec::new()),
        }
    }

    /// Emits the init segment before any frame once both tracks are fully configured.
    fn announce_when_ready(&mut self) -> Result<Vec<Output>, RemuxError> {
        let ready = self.active.is_none()
            && self.video.as_ref().is_some_and(VideoConfig::has_dimensions)
            && self.audio.is_some();
        if !ready {
            return Ok(Vec::new());
        }
        let active = build(self.video.clone(), self.audio.clone())?;
        let init = active.init.clone();
        self.active = Some(active);
        self.video_started = false;
        Ok(vec![Output::Init(init)])
    }

    fn video_frame(
        &mut self,
        timestamp_ms: u32,
        frame: flv::VideoFrame,
    ) -> Result<Vec<Output>, RemuxError> {
        check_frame_size(frame.data.len())?;
        let frame = match frame.codec {
            flv::VideoCodec::Av1 => flv::VideoFrame {
                data: bitstream::without_temporal_delimiter(frame.data),
                ..frame
            },
            _ => frame,
        };
        // A frame of another codec than the announced one cannot be decoded by anyone.
        let Some(latest) = self.video.as_ref().filter(|v| v.codec == frame.codec) else {
            return Ok(Vec::new());
        };
        let changed = self
            .active
            .as_ref()
            .is_none_or(|active| !active.describes(Some(latest), self.audio.as_ref()));
        // A new init segment takes effect at a keyframe only.
        let fresh = if changed && frame.keyframe {
            let mut video = latest.clone();
            video.learn_dimensions(&frame.data);
            Some(build(Some(video), self.audio.clone())?)
        } else {
            None
        };
        let Some(active) = fresh.as_ref().or(self.active.as_ref()) else {
            return Ok(Vec::new());
        };
        let Some(video) = active.video.as_ref().filter(|v| v.codec == frame.codec) else {
            return Ok(Vec::new());
        };
        let started = fresh.is_some() || self.video_started;
        if !frame.keyframe && !started {
            return Ok(Vec::new());
        }

        let inline = self.inline || (fresh.is_some() && self.active.is_some());
        let prefix = inline && frame.keyframe;
        let data = if prefix && !video.parameter_sets.is_empty() {
            concat(&video.parameter_sets, &frame.data)
        } else {
            frame.data
        };
        let mut clock = self.video_clock;
        let timing = clock.next(timestamp_ms, frame.composition_ms);
        let sample = Sample {
            decode_time: timing.decode_time,
            duration: timing.duration,
            composition_offset: timing.composition_offset,
            keyframe: frame.keyframe,
            data,
        };
        let init = prefix.then_some(&active.init);
        let payload = self.write(VIDEO_TRACK_ID, &sample, init)?;

        // Nothing failed: commit.
        let mut out = Vec::with_capacity(2);
        if let Some(fresh) = fresh {
            if self.active.is_none() {
                out.push(Output::Init(fresh.init.clone()));
            }
            self.active = Some(fresh);
        }
        self.inline = inline;
        self.video_started |= frame.keyframe;
        self.video_clock = clock;
        self.sequence = self.sequence.wrapping_add(1);
        out.push(Output::Fragment {
            payload,
            keyframe: frame.keyframe,
            dts_us: clock::micros(timing.decode_time, VIDEO_TIMESCALE),
        });
        Ok(out)
    }

    fn audio_frame(
        &mut self,
        timestamp_ms: u32,
        codec: flv::AudioCodec,
        data: Bytes,
    ) -> Result<Vec<Output>, RemuxError> {
        check_frame_size(data.len())?;
        let Some(latest) = self.audio.as_ref().filter(|a| a.codec == codec) else {
            return Ok(Vec::new());
        };
        let changed = self
            .active
            .as_ref()
            .is_none_or(|active| !active.describes(self.video.as_ref(), Some(latest)));
        // With video announced, a new init waits for a video keyframe; without, it starts
        // here, every audio frame being a keyframe then.
        let fresh = if changed && self.video.is_none() {
            Some(build(None, Some(latest.clone()))?)
        } else {
            None
        };
        let Some(active) = fresh.as_ref().or(self.active.as_ref()) else {
            return Ok(Vec::new());
        };
        // Frames of a configuration the init does not describe wait for the change.
        let Some(audio) = active.audio.as_ref().filter(|a| a.same(latest)) else {
            return Ok(Vec::new());
        };
        let has_video = active.video.is_some();
        if has_video && !self.video_started {
            return Ok(Vec::new());
        }

        let inline = self.inline || (fresh.is_some() && self.active.is_some());
        let keyframe = !has_video;
        let mut clock = match self.audio_clock {
            Some(clock) if clock.rate() == audio.timescale => clock,
            _ => AudioClock::new(audio.timescale),
        };
        let timing = clock.next(timestamp_ms, audio.frame_samples(&data));
        let sample = Sample {
            decode_time: timing.decode_time,
            duration: timing.duration,
            composition_offset: 0,
            keyframe: true,
            data,
        };
        let init = (inline && keyframe).then_some(&active.init);
        let payload = self.write(AUDIO_TRACK_ID, &sample, init)?;
        let dts_us = clock::micros(timing.decode_time, audio.timescale);

        let mut out = Vec::with_capacity(2);
        if let Some(fresh) = fresh {
            if self.active.is_none() {
                out.push(Output::Init(fresh.init.clone()));
            }
            self.active = Some(fresh);
            self.video_started = false;
        }
        self.inline = inline;
        self.audio_clock = Some(clock);
        self.sequence = self.sequence.wrapping_add(1);
        out.push(Output::Fragment {
            payload,
            keyframe,
            dts_us,
        });
        Ok(out)
    }

    /// One fragment, after `init` when given.
    fn write(
        &self,
        track_id: u32,
        sample: &Sample,
        init: Option<&Bytes>,
    ) -> Result<Bytes, RemuxError> {
        // Sequence numbers start at 1.
        let fragment = mux::fragment(self.sequence.wrapping_add(1), track_id, sample)
            .map_err(|err| RemuxError::Malformed(err.to_string()))?;
        let payload = match init {
            Some(init) => concat(init, &fragment),
            None => fragment,
        };
        if payload.len() > MAX_FRAME {
            return Err(RemuxError::TooLarge {
                what: "frame",
                size: payload.len(),
                max: MAX_FRAME,
            });
        }
        Ok(payload)
    }
}

/// The init segment for these configurations.
fn build(video: Option<VideoConfig>, audio: Option<AudioConfig>) -> Result<Active, RemuxError> {
    let mut tracks = Vec::with_capacity(2);
    if let Some(video) = &video {
        tracks.push(TrackConfig {
            track_id: VIDEO_TRACK_ID,
            timescale: VIDEO_TIMESCALE,
            codec: video.sample_entry(),
        });
    }
    if let Some(audio) = &audio {
        tracks.push(TrackConfig {
            track_id: AUDIO_TRACK_ID,
            timescale: audio.timescale,
            codec: audio.sample_entry(),
        });
    }
    let init = mux::init(&tracks).map_err(|err| RemuxError::Malformed(err.to_string()))?;
    if init.len() > MAX_INIT {
        return Err(RemuxError::TooLarge {
            what: "init segment",
            size: init.len(),
            max: MAX_INIT,
        });
    }
    Ok(Active { init, video, audio })
}

fn check_frame_size(size: usize) -> Result<(), RemuxError> {
    if size > MAX_FRAME {
        return Err(RemuxError::TooLarge {
            what: "frame",
            size,
            max: MAX_FRAME,
        });
    }
    Ok(())
}

fn concat(a: &[u8], b: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(a.len() + b.len());
    out.extend_from_slice(a);
    out.extend_from_slice(b);
    out.freeze()
}

#[cfg(test)]
mod tests;
