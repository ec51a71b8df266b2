//! The remuxer's rules on hand-built tags: when the init comes, what is dropped, how a
//! configuration change travels, timing, codecs refused by name, and hostile input.
//!
//! Parameter sets and sequence headers are real encoder output (libx264, libx265, libaom);
//! the coded frames are stand-ins, since nothing here decodes pictures (the tests in
//! `tests/remux.rs` decode real streams with ffmpeg).

use fmp4::mp4_atom::{Av1c, Avcc, Decode as _, HvcCArray, Hvcc, Mdat, Moof};
use fmp4::{Format, Init, Item, Reader};

use super::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

const SPS_320X240: &str = "6764000dacd94141fb0110000003001000000303c0f1429960";
const SPS_640X360: &str = "6764001eacd940a02ff970110000030001000003003c0f162d96";
const PPS: &str = "68ef8fcb";

/// The body of the box `atom` encodes to (its record).
fn body(atom: &impl fmp4::mp4_atom::Encode) -> Vec<u8> {
    let mut buf = Vec::new();
    atom.encode(&mut buf).expect("encode");
    buf.split_off(8)
}

fn avc_record(sps: &str) -> Vec<u8> {
    body(&Avcc::new(&hex(sps), &hex(PPS)).expect("avcC"))
}

/// Legacy AVC sequence header: keyframe + codec 7, packet type 0, composition time 0.
fn avc_sequence_header(sps: &str) -> Bytes {
    Bytes::from([&[0x17, 0, 0, 0, 0][..], &avc_record(sps)].concat())
}

/// Legacy AVC NALU packet with one length-prefixed NAL unit.
fn avc_frame(keyframe: bool, composition_ms: i32, nal: &[u8]) -> Bytes {
    let mut body = vec![if keyframe { 0x17 } else { 0x27 }, 1];
    body.extend_from_slice(&composition_ms.to_be_bytes()[1..]);
    body.extend_from_slice(&u32::try_from(nal.len()).expect("small").to_be_bytes());
    body.extend_from_slice(nal);
    Bytes::from(body)
}

/// Legacy AAC: sound format 10, 44 kHz, 16 bit, stereo; packet type 0 (config) or 1 (raw).
fn aac_sequence_header(config: &[u8]) -> Bytes {
    Bytes::from([&[0xaf, 0][..], config].concat())
}

fn aac_frame(data: &[u8]) -> Bytes {
    Bytes::from([&[0xaf, 1][..], data].concat())
}

/// AAC LC, 44.1 kHz, stereo.
const AAC_LC: [u8; 2] = [0x12, 0x10];
/// AAC LC, 48 kHz, mono.
const AAC_48K_MONO: [u8; 2] = [0x11, 0x88];

fn fragment(output: &Output) -> (&Bytes, bool) {
    match output {
        Output::Fragment {
            payload, keyframe, ..
        } => (payload, *keyframe),
        Output::Init(_) => panic!("a fragment, not an init segment"),
    }
}

fn dts_us(output: &Output) -> u64 {
    match output {
        Output::Fragment { dts_us, .. } => *dts_us,
        Output::Init(_) => panic!("a fragment, not an init segment"),
    }
}

/// The moof and the sample of a fragment payload without an inline init.
fn sample_of(payload: &[u8]) -> (Moof, Vec<u8>) {
    let mut buf = payload;
    let moof = Moof::decode(&mut buf).expect("moof");
    let mdat = Mdat::decode(&mut buf).expect("mdat");
    assert!(buf.is_empty());
    (moof, mdat.data)
}

fn init_of(output: &Output) -> Init {
    match output {
        Output::Init(init) => Init::parse(init).expect("init"),
        Output::Fragment { .. } => panic!("an init segment"),
    }
}

#[test]
fn init_waits_for_both_configurations() {
    let mut r = Remuxer::new();
    assert_eq!(r.video(0, avc_sequence_header(SPS_320X240)), Ok(vec![]));
    let out = r
        .audio(0, aac_sequence_header(&AAC_LC))
        .expect("audio config");
    assert_eq!(out.len(), 1);
    let init = init_of(&out[0]);
    assert_eq!(
        init.track(VIDEO_TRACK_ID).and_then(|t| t.format),
        Some(Format::Video {
            width: 320,
            height: 240
        })
    );
    assert_eq!(
        init.track(AUDIO_TRACK_ID).map(|t| t.timescale),
        Some(44_100)
    );

    // Before the first keyframe, audio and inter frames are dropped.
    assert_eq!(r.audio(0, aac_frame(&[1; 8])), Ok(vec![]));
    assert_eq!(r.video(0, avc_frame(false, 0, &[0x41, 1])), Ok(vec![]));
    let out = r
        .video(33, avc_frame(true, 0, &[0x65, 1]))
        .expect("keyframe");
    assert_eq!(out.len(), 1);
    assert!(fragment(&out[0]).1);
    let out = r.audio(23, aac_frame(&[2; 8])).expect("audio");
    assert!(
        !fragment(&out[0]).1,
        "audio never starts a group beside video"
    );
    let out = r
        .video(66, avc_frame(false, 0, &[0x41, 2]))
        .expect("inter frame");
    assert!(!fragment(&out[0]).1);
}

#[test]
fn the_first_frame_announces_with_the_configurations_known_by_then() {
    let mut r = Remuxer::new();
    r.video(0, avc_sequence_header(SPS_320X240))
        .expect("config");
    let out = r
        .video(0, avc_frame(true, 0, &[0x65, 1]))
        .expect("keyframe");
    assert_eq!(out.len(), 2);
    let init = init_of(&out[0]);
    assert_eq!(init.tracks.len(), 1);
    assert!(fragment(&out[1]).1);

    // Audio configured later joins at the next keyframe, with the init in front; its
    // frames until then are dropped.
    assert_eq!(r.audio(10, aac_sequence_header(&AAC_LC)), Ok(vec![]));
    assert_eq!(r.audio(10, aac_frame(&[1; 4])), Ok(vec![]));
    r.video(33, avc_frame(false, 0, &[0x41]))
        .expect("inter frame");
    let out = r
        .video(66, avc_frame(true, 0, &[0x65, 2]))
        .expect("keyframe");
    let (payload, keyframe) = fragment(&out[0]);
    assert!(keyframe);
    let (inline, _) = fmp4::split_inline_init(payload);
    let inline = Init::parse(&inline.expect("an inline init")).expect("init");
    assert_eq!(inline.tracks.len(), 2);
    assert_eq!(r.audio(70, aac_frame(&[2; 4])).expect("audio").len(), 1);
}

#[test]
fn frames_before_their_configuration_are_dropped() {
    let mut r = Remuxer::new();
    assert_eq!(r.video(0, avc_frame(true, 0, &[0x65])), Ok(vec![]));
    assert_eq!(r.audio(0, aac_frame(&[1; 4])), Ok(vec![]));
    // An HEVC frame on an AVC stream is not the announced codec either.
    r.video(0, avc_sequence_header(SPS_320X240))
        .expect("config");
    let hevc = Bytes::from([&[0x93][..], b"hvc1", &[0, 0, 0, 1, 0x26]].concat());
    assert_eq!(r.video(0, hevc), Ok(vec![]));
}

#[test]
fn audio_only_streams_are_all_keyframes_and_sample_exact() {
    let mut r = Remuxer::new();
    r.audio(0, aac_sequence_header(&AAC_LC)).expect("config");
    let mut stream = Vec::new();
    let mut outputs = Vec::new();
    for (i, timestamp) in [0u32, 23, 46, 70, 93].into_iter().enumerate() {
        for output in r.audio(timestamp, aac_frame(&[i as u8; 6])).expect("frame") {
            stream.extend_from_slice(match &output {
                Output::Init(init) => init,
                Output::Fragment { payload, .. } => payload,
            });
            outputs.push(output);
        }
    }
    assert_eq!(outputs.len(), 6);
    assert!(outputs[1..].iter().all(|o| fragment(o).1));
    let decode_times: Vec<u64> = outputs[1..]
        .iter()
        .map(|o| {
            let (moof, _) = sample_of(fragment(o).0);
            moof.traf[0]
                .tfdt
                .as_ref()
                .expect("tfdt")
                .base_media_decode_time
        })
        .collect();
    assert_eq!(decode_times, [0, 1024, 2048, 3072, 4096]);
    assert_eq!(dts_us(&outputs[2]), 1024 * 1_000_000 / 44_100);

    // The reader agrees: an audio-only stream's fragments are all keyframes.
    let mut reader = Reader::new();
    reader.push(&stream);
    let mut fragments = 0;
    while let Some(item) = reader.next_item().expect("reads") {
        if let Item::Fragment { keyframe, .. } = item {
            assert!(keyframe);
            fragments += 1;
        }
    }
    assert_eq!(fragments, 5);

    // A new audio configuration takes effect at once, and from then on every frame (all
    // keyframes) carries the init segment.
    assert_eq!(r.audio(100, aac_sequence_header(&AAC_48K_MONO)), Ok(vec![]));
    // The 48 kHz clock starts from the timestamp, then counts 1024 samples a frame.
    for (timestamp, expected) in [(120, 5760), (141, 5760 + 1024)] {
        let out = r.audio(timestamp, aac_frame(&[9; 6])).expect("frame");
        let (inline, rest) = fmp4::split_inline_init(fragment(&out[0]).0);
        let inline = Init::parse(&inline.expect("inline init")).expect("init");
        assert_eq!(
            inline.track(AUDIO_TRACK_ID).map(|t| t.timescale),
            Some(48_000)
        );
        let (moof, _) = sample_of(&rest);
        let dts = moof.traf[0]
            .tfdt
            .as_ref()
            .expect("tfdt")
            .base_media_decode_time;
        assert_eq!(dts, expected);
    }
}

#[test]
fn a_repeated_sequence_header_changes_nothing() {
    let mut r = Remuxer::new();
    r.video(0, avc_sequence_header(SPS_320X240))
        .expect("config");
    r.audio(0, aac_sequence_header(&AAC_LC)).expect("config");
    r.video(0, avc_frame(true, 0, &[0x65])).expect("keyframe");
    assert_eq!(r.video(30, avc_sequence_header(SPS_320X240)), Ok(vec![]));
    assert_eq!(r.audio(30, aac_sequence_header(&AAC_LC)), Ok(vec![]));
    let out = r
        .video(33, avc_frame(true, 0, &[0x65, 1]))
        .expect("keyframe");
    assert_eq!(fmp4::split_inline_init(fragment(&out[0]).0).0, None);
    assert_eq!(r.audio(40, aac_frame(&[1])).expect("audio").len(), 1);
}

#[test]
fn a_resolution_change_leads_every_keyframe_after_it() {
    let mut r = Remuxer::new();
    r.video(0, avc_sequence_header(SPS_320X240))
        .expect("config");
    r.audio(0, aac_sequence_header(&AAC_LC)).expect("config");
    r.video(0, avc_frame(true, 0, &[0x65, 0]))
        .expect("keyframe");
    assert_eq!(r.video(33, avc_sequence_header(SPS_640X360)), Ok(vec![]));

    // Until the next keyframe, frames belong to the old configuration.
    let out = r
        .video(33, avc_frame(false, 0, &[0x41, 1]))
        .expect("inter frame");
    let (payload, _) = fragment(&out[0]);
    assert_eq!(fmp4::split_inline_init(payload).0, None);
    assert_eq!(sample_of(payload).1, [0, 0, 0, 2, 0x41, 1]);

    // Then every keyframe carries the new init and the parameter sets in-band.
    let sps = hex(SPS_640X360);
    let mut parameter_sets = u32::try_from(sps.len())
        .expect("small")
        .to_be_bytes()
        .to_vec();
    parameter_sets.extend_from_slice(&sps);
    parameter_sets.extend_from_slice(&[0, 0, 0, 4]);
    parameter_sets.extend_from_slice(&hex(PPS));
    for (timestamp, keyframe) in [(66, true), (100, false), (133, true)] {
        let out = r
            .video(timestamp, avc_frame(keyframe, 0, &[7]))
            .expect("frame");
        let (payload, is_keyframe) = fragment(&out[0]);
        assert_eq!(is_keyframe, keyframe);
        let (inline, rest) = fmp4::split_inline_init(payload);
        let frame = [0, 0, 0, 1, 7];
        if keyframe {
            let init = Init::parse(&inline.expect("inline init")).expect("init");
            assert_eq!(
                init.track(VIDEO_TRACK_ID).and_then(|t| t.format),
                Some(Format::Video {
                    width: 640,
                    height: 360
                })
            );
            assert_eq!(sample_of(&rest).1, [&parameter_sets[..], &frame].concat());
        } else {
            assert_eq!(inline, None);
            assert_eq!(sample_of(&rest).1, frame);
        }
    }
}

#[test]
fn composition_offsets_and_decode_times() {
    let mut r = Remuxer::new();
    r.video(0, avc_sequence_header(SPS_320X240))
        .expect("config");
    // I P B in decode order: the B-frame is presented 33 ms before its decode time would
    // suggest; a timestamp stepping back 2 ms moves one tick, keeping the presentation time.
    let frames = [
        (1000, true, 66),
        (1033, false, 100),
        (1066, false, -33),
        (1064, false, 33),
    ];
    let mut dts = Vec::new();
    let mut cts = Vec::new();
    for (timestamp, keyframe, composition) in frames {
        let out = r.video(timestamp, avc_frame(keyframe, composition, &[1]));
        let out = out.expect("frame");
        let (moof, _) = sample_of(fragment(out.last().expect("fragment")).0);
        let traf = &moof.traf[0];
        dts.push(traf.tfdt.as_ref().expect("tfdt").base_media_decode_time);
        cts.push(traf.trun[0].samples.get(0).and_then(|s| s.cts).unwrap_or(0));
    }
    assert_eq!(dts, [90_000, 92_970, 95_940, 95_941]);
    assert_eq!(cts, [5940, 9000, -2970, 2970 + 95_760 - 95_941]);
}

#[test]
fn timestamps_unwrap_past_u32() {
    let mut r = Remuxer::new();
    r.video(0, avc_sequence_header(SPS_320X240))
        .expect("config");
    let start = u32::MAX - 40;
    let mut last = 0;
    for i in 0..4u32 {
        let timestamp = start.wrapping_add(i * 33);
        let out = r
            .video(timestamp, avc_frame(i == 0, 0, &[1]))
            .expect("frame");
        let dts = dts_us(out.last().expect("fragment"));
        if i > 0 {
            assert_eq!(dts - last, 33_000);
        }
        last = dts;
    }
    assert!(last > u64::from(u32::MAX) * 1000);
}

#[test]
fn unsupported_codecs_are_named() {
    let cases: [(bool, Vec<u8>, &[&str]); 8] = [
        (true, vec![0x12, 0], &["Sorenson H.263", "H.264"]),
        (true, vec![0x14, 0], &["VP6"]),
        (true, vec![0x1c, 0], &["codec ID 12", "enhanced RTMP"]),
        (true, [&[0x90][..], b"vp08"].concat(), &["VP8"]),
        (false, vec![0x2f, 0xff], &["MP3", "send AAC or Opus"]),
        (false, vec![0xb6, 0], &["Speex"]),
        (false, vec![0x6e, 0], &["Nellymoser"]),
        (false, [&[0x90][..], b"fLaC"].concat(), &["FLAC"]),
    ];
    for (video, body, words) in cases {
        let mut r = Remuxer::new();
        let result = if video {
            r.video(0, Bytes::from(body))
        } else {
            r.audio(0, Bytes::from(body))
        };
        let Err(RemuxError::Unsupported(message)) = result else {
            panic!("unsupported, not {result:?}");
        };
        for word in words {
            assert!(message.contains(word), "{message:?} names {word}");
        }
    }
}

#[test]
fn frames_too_large_to_carry_are_refused() {
    let mut r = Remuxer::new();
    r.video(0, avc_sequence_header(SPS_320X240))
        .expect("config");
    let huge = vec![0x65; MAX_FRAME];
    assert!(matches!(
        r.video(0, avc_frame(true, 0, &huge)),
        Err(RemuxError::TooLarge { what: "frame", .. })
    ));
    // Nothing was committed: the next keyframe still brings the init segment.
    let out = r.video(33, avc_frame(true, 0, &[0x65])).expect("keyframe");
    assert!(matches!(out[0], Output::Init(_)));
}

/// An `hvcC` record with libx265's parameter sets for 1280x720.
fn hevc_record() -> Vec<u8> {
    let array = |nal_unit_type, nalu: &str| HvcCArray {
        completeness: true,
        nal_unit_type,
        nalus: vec![hex(nalu)],
    };
    body(&Hvcc {
        general_profile_idc: 1,
        general_profile_compatibility_flags: [0x60, 0, 0, 0],
        general_constraint_indicator_flags: [0x90, 0, 0, 0, 0, 0],
        general_level_idc: 93,
        chroma_format_idc: 1,
        length_size_minus_one: 3,
        num_temporal_layers: 1,
        temporal_id_nested: true,
        arrays: vec![
            array(32, "40010c01ffff01600000030090000003000003005d959809"),
            array(
                33,
                "42010101600000030090000003000003005da00280802d165959a4932bc05a02000003000200\
                 0003003c10",
            ),
            array(34, "4401c172b46240"),
        ],
        ..Hvcc::new()
    })
}

/// An enhanced video tag: keyframe, `packet_type`, `four_cc`, body.
fn enhanced_video(packet_type: u8, four_cc: &[u8; 4], body: &[u8]) -> Bytes {
    Bytes::from([&[0x80 | 1 << 4 | packet_type][..], four_cc, body].concat())
}

#[test]
fn enhanced_hevc_sequence_start() {
    let mut r = Remuxer::new();
    assert_eq!(
        r.video(0, enhanced_video(0, b"hvc1", &hevc_record())),
        Ok(vec![])
    );
    let out = r
        .video(0, enhanced_video(3, b"hvc1", &[0, 0, 0, 2, 0x26, 1]))
        .expect("keyframe");
    let init = init_of(&out[0]);
    let video = init.track(VIDEO_TRACK_ID).expect("video");
    assert_eq!(video.codec.as_deref(), Some("hvc1.1.6.L93.90"));
    assert_eq!(
        video.format,
        Some(Format::Video {
            width: 1280,
            height: 720
        })
    );
    assert_eq!(sample_of(fragment(&out[1]).0).1, [0, 0, 0, 2, 0x26, 1]);
}

#[test]
fn enhanced_av1_sequence_start_and_temporal_delimiters() {
    let av1c = Av1c {
        seq_level_idx_0: 1,
        chroma_subsampling_x: true,
        chroma_subsampling_y: true,
        config_obus: hex("0a0b00000004457e3e6d7c8020"),
        ..Default::default()
    };
    let mut r = Remuxer::new();
    r.video(0, enhanced_video(0, b"av01", &body(&av1c)))
        .expect("config");
    // A temporal delimiter, then a (stand-in) frame OBU.
    let unit = hex("1200320401020304");
    let out = r
        .video(0, enhanced_video(1, b"av01", &unit))
        .expect("keyframe");
    let video = init_of(&out[0]);
    let video = video.track(VIDEO_TRACK_ID).expect("video");
    assert_eq!(video.codec.as_deref(), Some("av01.0.01M.08"));
    assert_eq!(
        video.format,
        Some(Format::Video {
            width: 352,
            height: 288
        })
    );
    assert_eq!(sample_of(fragment(&out[1]).0).1, hex("320401020304"));
}

#[test]
fn enhanced_opus_sequence_start() {
    // OpusHead: version 1, stereo, pre-skip 312, 48 kHz, no gain, family 0.
    let mut head = b"OpusHead".to_vec();
    head.extend_from_slice(&[1, 2, 0x38, 0x01, 0x80, 0xbb, 0, 0, 0, 0, 0]);
    let mut r = Remuxer::new();
    let config = Bytes::from([&[0x90][..], b"Opus", &head].concat());
    assert_eq!(r.audio(0, config), Ok(vec![]));
    // A 20 ms CELT packet, then a 10 ms one: durations follow the TOC byte.
    let mut durations = Vec::new();
    for (timestamp, toc) in [(0, 31 << 3), (20, 30 << 3)] {
        let frame = Bytes::from([&[0x91][..], b"Opus", &[toc, 0xaa]].concat());
        let out = r.audio(timestamp, frame).expect("frame");
        let (moof, _) = sample_of(fragment(out.last().expect("fragment")).0);
        durations.push(moof.traf[0].trun[0].samples.get(0).and_then(|s| s.duration));
    }
    assert_eq!(durations, [Some(960), Some(480)]);
}

#[test]
fn multitrack_messages_write_track_zero() {
    let mut r = Remuxer::new();
    r.audio(0, aac_sequence_header(&AAC_LC)).expect("config");
    let record = avc_record(SPS_320X240);
    // Multitrack (6), one track (0) of avc1, track ID 0, then a sequence start.
    let one_track = [&[0x80 | 1 << 4 | 6, 0x00][..], b"avc1", &[0], &record].concat();
    let out = r.video(0, Bytes::from(one_track)).expect("config");
    assert!(matches!(out[..], [Output::Init(_)]));
    // Many tracks of avc1 (1), coded frames X (3): track 1 first, then track 0.
    let mut many = [&[0x80 | 1 << 4 | 6, 0x13][..], b"avc1"].concat();
    for (track, nal) in [(1u8, 0x11u8), (0, 0x22)] {
        many.extend_from_slice(&[track, 0, 0, 5, 0, 0, 0, 1, nal]);
    }
    let out = r.video(0, Bytes::from(many)).expect("keyframe");
    assert_eq!(sample_of(fragment(&out[0]).0).1, [0, 0, 0, 1, 0x22]);
}

/// A small deterministic generator (xorshift), so the test needs no dependency.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn hostile_input_never_panics() {
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let mut opus_head = b"OpusHead".to_vec();
    opus_head.extend_from_slice(&[1, 2, 0x38, 0x01, 0x80, 0xbb, 0, 0, 0, 0, 0]);
    let valid: Vec<(bool, Bytes)> = vec![
        (true, avc_sequence_header(SPS_640X360)),
        (false, aac_sequence_header(&AAC_LC)),
        (true, avc_frame(true, -33, &[0x65, 1, 2, 3])),
        (false, aac_frame(&[1, 2, 3])),
        (true, enhanced_video(0, b"hvc1", &hevc_record())),
        (
            true,
            enhanced_video(1, b"hvc1", &[0, 0, 1, 0, 0, 0, 1, 0x26]),
        ),
        (
            true,
            enhanced_video(0, b"av01", &hex("81000c000a0b00000004457e3e6d7c8020")),
        ),
        (true, enhanced_video(0, b"vp09", &hex("001e800101010000"))),
        (
            true,
            enhanced_video(3, b"vp09", &hex("824983420018f012b604")),
        ),
        (
            false,
            Bytes::from([&[0x90][..], b"Opus", &opus_head].concat()),
        ),
        (
            false,
            Bytes::from([&[0x91][..], b"Opus", &[0xf8, 1]].concat()),
        ),
    ];
    let mut inputs: Vec<(bool, Bytes)> = Vec::new();
    for (video, message) in &valid {
        // Every truncation, and a hundred copies with a few bytes changed.
        for len in 0..message.len() {
            inputs.push((*video, message.slice(..len)));
        }
        // The header kept (up to the FourCC of an enhanced tag), a random body after it.
        for _ in 0..100 {
            let keep = message.len().min(5);
            let len = (noise.next() % 64) as usize;
            let body = [&message[..keep], &noise.bytes(len)].concat();
            inputs.push((*video, Bytes::from(body)));
        }
        for _ in 0..100 {
            let mut changed = message.to_vec();
            for _ in 0..1 + noise.next() % 4 {
                let at = (noise.next() % changed.len() as u64) as usize;
                changed[at] = noise.next() as u8;
            }
            inputs.push((*video, Bytes::from(changed)));
        }
    }
    // Random headers over random bodies.
    for _ in 0..2000 {
        let len = (noise.next() % 48) as usize;
        inputs.push((
            noise.next().is_multiple_of(2),
            Bytes::from(noise.bytes(len)),
        ));
    }

    // One remuxer through everything (state carried across garbage), and a fresh one per
    // message after the valid configurations.
    let mut shared = Remuxer::new();
    for (i, (video, message)) in inputs.iter().enumerate() {
        let timestamp = (noise.next() % 5000) as u32;
        let _ = if *video {
            shared.video(timestamp, message.clone())
        } else {
            shared.audio(timestamp, message.clone())
        };
        let mut fresh = Remuxer::new();
        for (video, config) in valid.iter().take(2) {
            let _ = if *video {
                fresh.video(0, config.clone())
            } else {
                fresh.audio(0, config.clone())
            };
        }
        let _ = if i % 2 == 0 {
            fresh.video(timestamp, message.clone())
        } else {
            fresh.audio(timestamp, message.clone())
        };
    }
}
