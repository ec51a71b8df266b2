//! The remuxer on real encoder output. ffmpeg encodes; its FLV tags (or enhanced RTMP tags
//! built around the samples ffmpeg wrote into fragmented MP4, since this ffmpeg's FLV muxer
//! predates enhanced RTMP) go through the [`Remuxer`]; ffmpeg then decodes what came out and
//! must report no error.
//!
//! Every test prints a line and passes when ffmpeg is not installed.

use std::path::Path;
use std::process::{Command, Output as Process};

use bytes::{BufMut as _, Bytes, BytesMut};
use fmp4::mp4_atom::{self, Any, Codec, Decode as _, Moof, Moov};
use fmp4::{Init, Item, Reader, split_inline_init};
use ingest::remux::{AUDIO_TRACK_ID, Output, Remuxer, VIDEO_TRACK_ID};

const AUDIO: u8 = 8;
const VIDEO: u8 = 9;

/// One FLV tag: its type (8 audio, 9 video, 18 script), timestamp and body.
#[derive(Debug, Clone)]
struct Tag {
    kind: u8,
    timestamp: u32,
    body: Bytes,
}

fn have_ffmpeg() -> bool {
    let found = ["ffmpeg", "ffprobe"].iter().all(|tool| {
        Command::new(tool)
            .arg("-version")
            .output()
            .is_ok_and(|out| out.status.success())
    });
    if !found {
        println!("ffmpeg or ffprobe is not installed: skipping");
    }
    found
}

fn run(program: &str, args: &[&str], dir: &Path) -> Process {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ffmpeg(dir: &Path, args: &str) {
    let args: Vec<&str> = ["-hide_banner", "-loglevel", "error", "-y"]
        .into_iter()
        .chain(args.split_whitespace())
        .collect();
    run("ffmpeg", &args, dir);
}

/// Splits an FLV file into tags: a 9-byte header and PreviousTagSize0, then tags of an
/// 11-byte header (type, 24-bit size, 24-bit timestamp and its 8-bit extension, stream ID),
/// body and PreviousTagSize.
fn flv_tags(flv: &[u8]) -> Vec<Tag> {
    assert_eq!(&flv[..3], b"FLV");
    let mut pos = 9 + 4;
    let mut tags = Vec::new();
    while pos + 11 <= flv.len() {
        let h = &flv[pos..pos + 11];
        let size = usize::from(h[1]) << 16 | usize::from(h[2]) << 8 | usize::from(h[3]);
        let timestamp =
            u32::from(h[7]) << 24 | u32::from(h[4]) << 16 | u32::from(h[5]) << 8 | u32::from(h[6]);
        let body = Bytes::copy_from_slice(&flv[pos + 11..pos + 11 + size]);
        tags.push(Tag {
            kind: h[0] & 0x1f,
            timestamp,
            body,
        });
        pos += 11 + size + 4;
    }
    assert_eq!(pos, flv.len(), "the FLV ends with a whole tag");
    tags
}

/// Feeds the tags through a remuxer.
fn remux(tags: &[Tag]) -> Vec<Output> {
    let mut remuxer = Remuxer::new();
    let mut outputs = Vec::new();
    for tag in tags {
        let result = match tag.kind {
            AUDIO => remuxer.audio(tag.timestamp, tag.body.clone()),
            VIDEO => remuxer.video(tag.timestamp, tag.body.clone()),
            _ => continue,
        };
        outputs.extend(result.expect("remuxes"));
    }
    outputs
}

/// The init segment and every fragment, as one file.
fn concat(outputs: &[Output]) -> Vec<u8> {
    assert!(matches!(outputs.first(), Some(Output::Init(_))));
    let inits = outputs
        .iter()
        .filter(|o| matches!(o, Output::Init(_)))
        .count();
    assert_eq!(inits, 1, "one init segment");
    outputs
        .iter()
        .flat_map(|output| match output {
            Output::Init(init) => init.to_vec(),
            Output::Fragment { payload, .. } => payload.to_vec(),
        })
        .collect()
}

fn fragments(outputs: &[Output]) -> impl Iterator<Item = (&Bytes, bool, u64)> {
    outputs.iter().filter_map(|output| match output {
        Output::Fragment {
            payload,
            keyframe,
            dts_us,
        } => Some((payload, *keyframe, *dts_us)),
        Output::Init(_) => None,
    })
}

/// What ffmpeg says when decoding every stream of `file` (nothing when all decodes).
fn decode_errors(dir: &Path, file: &str) -> String {
    let out = run(
        "ffmpeg",
        &["-v", "error", "-i", file, "-f", "null", "-"],
        dir,
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// One `-show_frames` field of every decoded frame of `stream` (`v` or `a`).
fn frame_field(dir: &Path, file: &str, stream: &str, field: &str) -> Vec<String> {
    let entries = format!("frame={field}");
    let out = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-select_streams",
            stream,
            "-show_entries",
            &entries,
            "-of",
            "csv=p=0",
            file,
        ],
        dir,
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| line.trim_end_matches(',').to_owned())
        .filter(|line| !line.is_empty())
        .collect()
}

fn numbers(values: &[String]) -> Vec<i64> {
    values
        .iter()
        .map(|v| v.parse().expect("a number"))
        .collect()
}

fn encode_flv(dir: &Path, name: &str, size: &str, seconds: u32) -> Vec<Tag> {
    ffmpeg(
        dir,
        &format!(
            "-f lavfi -i testsrc2=size={size}:rate=30 -f lavfi -i sine=frequency=440 -t {seconds} \
             -c:v libx264 -preset veryfast -g 60 -bf 2 -c:a aac -f flv {name}"
        ),
    );
    flv_tags(&std::fs::read(dir.join(name)).expect("read the FLV"))
}

#[test]
fn h264_and_aac_from_an_flv_decode_cleanly() {
    if !have_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let tags = encode_flv(dir.path(), "in.flv", "320x240", 3);
    let outputs = remux(&tags);
    let file = concat(&outputs);
    std::fs::write(dir.path().join("out.mp4"), &file).expect("write");

    // Every coded frame is written (sequence headers and metadata are not frames), and
    // keyframes are the source's keyframes.
    let video_frames = tags
        .iter()
        .filter(|t| t.kind == VIDEO && t.body[1] == 1)
        .count();
    let audio_frames = tags
        .iter()
        .filter(|t| t.kind == AUDIO && t.body[1] == 1)
        .count();
    let source_keyframes = tags
        .iter()
        .filter(|t| t.kind == VIDEO && t.body[1] == 1 && t.body[0] >> 4 == 1)
        .count();
    assert_eq!(video_frames, 90);
    assert_eq!(fragments(&outputs).count(), video_frames + audio_frames);
    assert_eq!(
        fragments(&outputs).filter(|(_, key, _)| *key).count(),
        source_keyframes
    );
    assert!(fragments(&outputs).next().is_some_and(|(_, key, _)| key));

    // The reader splits the file back into the very same items, keyframes included.
    let mut reader = Reader::new();
    reader.push(&file);
    let mut items = Vec::new();
    while let Some(item) = reader.next_item().expect("reads") {
        items.push(item);
    }
    reader.finish().expect("nothing left over");
    assert_eq!(items.len(), outputs.len());
    for (item, output) in items.iter().zip(&outputs) {
        match (item, output) {
            (Item::Init(a), Output::Init(b)) => assert_eq!(a, b),
            (
                Item::Fragment { data, keyframe },
                Output::Fragment {
                    payload,
                    keyframe: written,
                    ..
                },
            ) => assert_eq!((data, keyframe), (payload, written)),
            _ => panic!("{item:?} where {output:?} was written"),
        }
    }
    let init = reader.init().expect("tracks");
    let video = init.track(VIDEO_TRACK_ID).expect("video");
    assert!(
        video
            .codec
            .as_deref()
            .is_some_and(|c| c.starts_with("avc1.64"))
    );
    assert_eq!(
        video.format,
        Some(fmp4::Format::Video {
            width: 320,
            height: 240
        })
    );
    let audio = init.track(AUDIO_TRACK_ID).expect("audio");
    assert_eq!(audio.codec.as_deref(), Some("mp4a.40.2"));
    assert_eq!(audio.timescale, 44_100);

    // ffmpeg decodes all of it, in presentation order (B-frames placed right).
    assert_eq!(decode_errors(dir.path(), "out.mp4"), "");
    let pts = numbers(&frame_field(dir.path(), "out.mp4", "v", "pts"));
    assert_eq!(pts.len(), 90);
    assert!(pts.windows(2).all(|w| w[0] < w[1]), "{pts:?}");
    let widths = frame_field(dir.path(), "out.mp4", "v", "width");
    assert!(widths.iter().all(|w| w == "320"));
    let audio_decoded = frame_field(dir.path(), "out.mp4", "a", "pts").len();
    assert_eq!(audio_decoded, audio_frames);

    // Decode times in microseconds only move forwards, per track.
    for track in [true, false] {
        let dts: Vec<u64> = fragments(&outputs)
            .filter(|(payload, ..)| is_video(payload) == track)
            .map(|(.., dts)| dts)
            .collect();
        assert!(dts.windows(2).all(|w| w[0] < w[1]));
    }
}

fn is_video(fragment: &[u8]) -> bool {
    let moof = Moof::decode(&mut &fragment[..]).expect("moof");
    moof.traf[0].tfhd.track_id == VIDEO_TRACK_ID
}

#[test]
fn a_resolution_change_reinitialises_at_the_next_keyframe() {
    if !have_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let first = encode_flv(dir.path(), "a.flv", "320x240", 2);
    let second = encode_flv(dir.path(), "b.flv", "640x360", 3);
    let shift = first.iter().map(|t| t.timestamp).max().expect("tags") + 40;
    let tags: Vec<Tag> = first
        .into_iter()
        .chain(second.into_iter().map(|tag| Tag {
            timestamp: tag.timestamp + shift,
            ..tag
        }))
        .collect();
    let outputs = remux(&tags);
    let file = concat(&outputs);
    std::fs::write(dir.path().join("out.mp4"), &file).expect("write");

    // The second encode's keyframes (two, 2 s apart) start with the new init segment, and
    // nothing before them does.
    let mut inline = Vec::new();
    for (payload, keyframe, _) in fragments(&outputs) {
        let (init, rest) = split_inline_init(payload);
        if let Some(init) = init {
            assert!(keyframe);
            assert_eq!(&rest[4..8], b"moof");
            inline.push(Init::parse(&init).expect("an init segment"));
        }
    }
    assert_eq!(inline.len(), 2);
    for init in &inline {
        let video = init.track(VIDEO_TRACK_ID).expect("video");
        assert_eq!(
            video.format,
            Some(fmp4::Format::Video {
                width: 640,
                height: 360
            })
        );
        assert!(init.track(AUDIO_TRACK_ID).is_some());
    }

    // ffmpeg skips the repeated moov; the in-band parameter sets switch its decoder over.
    assert_eq!(decode_errors(dir.path(), "out.mp4"), "");
    let widths = frame_field(dir.path(), "out.mp4", "v", "width");
    assert_eq!(widths.len(), 60 + 90);
    assert!(widths[..60].iter().all(|w| w == "320"), "{widths:?}");
    assert!(widths[60..].iter().all(|w| w == "640"), "{widths:?}");
    let pts = numbers(&frame_field(dir.path(), "out.mp4", "v", "pts"));
    assert!(pts.windows(2).all(|w| w[0] < w[1]), "{pts:?}");
}

/// Enhanced RTMP tags carrying what ffmpeg wrote into a fragmented MP4 (one sample per
/// fragment): a sequence start per track from its sample entry, then a coded frame per
/// sample, stamped with its decode time in milliseconds.
fn enhanced_tags(mp4: &[u8]) -> Vec<Tag> {
    let mut reader = Reader::new();
    reader.push(mp4);
    let mut moov = None;
    let mut tags = Vec::new();
    while let Some(item) = reader.next_item().expect("ffmpeg's fragmented MP4") {
        match item {
            Item::Init(init) => {
                let mut buf = &init[..];
                while !buf.is_empty() {
                    if let Any::Moov(found) = Any::decode(&mut buf).expect("box") {
                        moov = Some(found);
                    }
                }
                let moov: &Moov = moov.as_ref().expect("a moov");
                for trak in &moov.trak {
                    let codec = &trak.mdia.minf.stbl.stsd.codecs[0];
                    tags.push(sequence_start(codec));
                }
            }
            Item::Fragment { data, .. } => {
                let moov = moov.as_ref().expect("init first");
                tags.extend(coded_frames(moov, &data));
            }
        }
    }
    tags
}

fn body_of(atom: &impl mp4_atom::Encode, header: usize) -> Bytes {
    let mut buf = Vec::new();
    atom.encode(&mut buf).expect("encode");
    Bytes::from(buf).slice(header..)
}

fn sequence_start(codec: &Codec) -> Tag {
    let (kind, four_cc, record) = match codec {
        Codec::Avc1(avc1) => (VIDEO, b"avc1", body_of(&avc1.avcc, 8)),
        Codec::Hvc1(hvc1) => (VIDEO, b"hvc1", body_of(&hvc1.hvcc, 8)),
        Codec::Av01(av01) => (VIDEO, b"av01", body_of(&av01.av1c, 8)),
        // The vpcC box is a full box; the record is what follows its version and flags.
        Codec::Vp09(vp09) => (VIDEO, b"vp09", body_of(&vp09.vpcc, 12)),
        Codec::Opus(opus) => {
            let dops = &opus.dops;
            let mut head = BytesMut::from(&b"OpusHead"[..]);
            head.put_u8(1);
            head.put_u8(dops.output_channel_count);
            head.put_u16_le(dops.pre_skip);
            head.put_u32_le(dops.input_sample_rate);
            head.put_i16_le(dops.output_gain);
            head.put_u8(0);
            (AUDIO, b"Opus", head.freeze())
        }
        Codec::Mp4a(mp4a) => {
            let specific = mp4a.esds.es_desc.dec_config.dec_specific.as_ref();
            let raw = specific.expect("an AudioSpecificConfig").raw.clone();
            (AUDIO, b"mp4a", Bytes::from(raw))
        }
        other => panic!("no enhanced RTMP form written for {other:?}"),
    };
    let mut body = BytesMut::new();
    // Packet type 0, a sequence start, after the enhanced header bit and frame type 1
    // (keyframe) for video, or sound format 9 (enhanced) for audio: the same byte.
    body.put_u8(0x90);
    body.put_slice(four_cc);
    body.put_slice(&record);
    Tag {
        kind,
        timestamp: 0,
        body: body.freeze(),
    }
}

/// A tag per sample of the fragment (ffmpeg puts two in its first one).
fn coded_frames(moov: &Moov, fragment: &Bytes) -> Vec<Tag> {
    let moof = Moof::decode(&mut &fragment[..]).expect("moof");
    let mut tags = Vec::new();
    for traf in &moof.traf {
        let track_id = traf.tfhd.track_id;
        let trak = moov
            .trak
            .iter()
            .find(|t| t.tkhd.track_id == track_id)
            .expect("the fragment's track");
        let trex = moov
            .mvex
            .as_ref()
            .and_then(|mvex| mvex.trex.iter().find(|trex| trex.track_id == track_id))
            .expect("trex");
        let timescale = u64::from(trak.mdia.mdhd.timescale);
        let codec = &trak.mdia.minf.stbl.stsd.codecs[0];
        let mut decode_time = traf.tfdt.as_ref().expect("tfdt").base_media_decode_time;
        for trun in &traf.trun {
            let mut offset = usize::try_from(trun.data_offset.expect("offset")).expect("≥ 0");
            for sample in trun.samples.iter() {
                let flags = sample
                    .flags
                    .or(traf.tfhd.default_sample_flags)
                    .unwrap_or(trex.default_sample_flags);
                let size = sample
                    .size
                    .or(traf.tfhd.default_sample_size)
                    .unwrap_or(trex.default_sample_size) as usize;
                let duration = sample
                    .duration
                    .or(traf.tfhd.default_sample_duration)
                    .unwrap_or(trex.default_sample_duration);
                let data = fragment.slice(offset..offset + size);
                let timestamp = u32::try_from(decode_time * 1000 / timescale).expect("ms");
                let cts_ms = sample.cts.unwrap_or(0) * 1000 / i64::try_from(timescale).expect("");
                let keyframe = (flags >> 16) & 1 == 0;
                tags.push(coded_frame(codec, timestamp, cts_ms, keyframe, &data));
                offset += size;
                decode_time += u64::from(duration);
            }
        }
    }
    tags
}

fn coded_frame(codec: &Codec, timestamp: u32, cts_ms: i64, keyframe: bool, data: &[u8]) -> Tag {
    let mut body = BytesMut::new();
    let kind = match codec {
        Codec::Opus(_) | Codec::Mp4a(_) => {
            body.put_u8(0x91); // sound format 9, coded frames
            body.put_slice(if matches!(codec, Codec::Opus(_)) {
                b"Opus"
            } else {
                b"mp4a"
            });
            AUDIO
        }
        _ => {
            let frame_type: u8 = if keyframe { 1 } else { 2 };
            let (four_cc, with_cts) = match codec {
                Codec::Avc1(_) => (b"avc1", true),
                Codec::Hvc1(_) => (b"hvc1", true),
                Codec::Av01(_) => (b"av01", false),
                Codec::Vp09(_) => (b"vp09", false),
                other => panic!("no enhanced RTMP form written for {other:?}"),
            };
            // Coded frames (1) with a composition time for AVC and HEVC, else without (3).
            let packet_type = if with_cts { 1 } else { 3 };
            body.put_u8(0x80 | frame_type << 4 | packet_type);
            body.put_slice(four_cc);
            if with_cts {
                let cts = i32::try_from(cts_ms).expect("small").to_be_bytes();
                body.put_slice(&cts[1..]);
            }
            VIDEO
        }
    };
    body.put_slice(data);
    Tag {
        kind,
        timestamp,
        body: body.freeze(),
    }
}

const CMAF: &str = "-f mp4 -movflags cmaf+separate_moof+delay_moov+skip_trailer+frag_every_frame";

/// Encodes with `codecs` into fragmented MP4, sends it as enhanced RTMP, checks the output
/// decodes with the picture size and frame counts of the source.
fn enhanced_round_trip(codecs: &str, size: (u32, u32), codec_prefix: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (width, height) = size;
    ffmpeg(
        dir.path(),
        &format!(
            "-f lavfi -i testsrc2=size={width}x{height}:rate=30 -f lavfi -i sine=frequency=440 \
             -t 2 {codecs} {CMAF} in.mp4"
        ),
    );
    let tags = enhanced_tags(&std::fs::read(dir.path().join("in.mp4")).expect("read"));
    // Coded frames: the first byte's low nibble is the packet type, 0 a sequence start.
    let coded = |kind| {
        tags.iter()
            .filter(|t| t.kind == kind && t.body[0] & 0x0f != 0)
            .count()
    };
    let (source_video, source_audio) = (coded(VIDEO), coded(AUDIO));
    let outputs = remux(&tags);
    std::fs::write(dir.path().join("out.mp4"), concat(&outputs)).expect("write");

    let Some(Output::Init(init)) = outputs.first() else {
        panic!("no init segment");
    };
    let init = Init::parse(init).expect("init");
    let video = init.track(VIDEO_TRACK_ID).expect("video track");
    assert!(
        video
            .codec
            .as_deref()
            .is_some_and(|c| c.starts_with(codec_prefix)),
        "{video:?}"
    );
    assert_eq!(
        video.format,
        Some(fmp4::Format::Video {
            width: u16::try_from(width).expect("small"),
            height: u16::try_from(height).expect("small"),
        })
    );

    assert_eq!(decode_errors(dir.path(), "out.mp4"), "");
    let widths = frame_field(dir.path(), "out.mp4", "v", "width");
    assert_eq!(widths.len(), source_video);
    assert!(widths.iter().all(|w| *w == width.to_string()));
    let pts = numbers(&frame_field(dir.path(), "out.mp4", "v", "pts"));
    assert!(pts.windows(2).all(|w| w[0] < w[1]), "{pts:?}");
    assert_eq!(
        frame_field(dir.path(), "out.mp4", "a", "pts").len(),
        source_audio
    );
}

#[test]
fn enhanced_rtmp_hevc_with_opus() {
    if !have_ffmpeg() {
        return;
    }
    enhanced_round_trip(
        "-c:v libx265 -preset ultrafast -x265-params log-level=error:keyint=30:bframes=2 \
         -tag:v hvc1 -c:a libopus",
        (320, 240),
        "hvc1.",
    );
}

#[test]
fn enhanced_rtmp_av1_with_aac() {
    if !have_ffmpeg() {
        return;
    }
    enhanced_round_trip(
        "-c:v libaom-av1 -cpu-used 8 -g 30 -b:v 200k -c:a aac",
        (256, 144),
        "av01.",
    );
}

#[test]
fn enhanced_rtmp_vp9_and_avc() {
    if !have_ffmpeg() {
        return;
    }
    // VP9's size comes from its first keyframe; AVC over enhanced RTMP with B-frames.
    enhanced_round_trip(
        "-c:v libvpx-vp9 -deadline realtime -cpu-used 8 -g 30 -b:v 200k -c:a libopus",
        (200, 120),
        "vp09.",
    );
    enhanced_round_trip(
        "-c:v libx264 -preset veryfast -g 30 -bf 2 -c:a libopus",
        (176, 144),
        "avc1.",
    );
}
