//! The reader and the codec strings on real ffmpeg output (see `data/README.md` for how each
//! file was made and where the expected values come from).

#![allow(missing_docs)]

use bytes::Bytes;
use fmp4::{Format, Init, Item, Kind, Reader, Track};

const AV: &[u8] = include_bytes!("data/av.mp4");
const VIDEO: &[u8] = include_bytes!("data/video.mp4");
const HEVC_AAC: &[u8] = include_bytes!("data/hevc-aac.mp4");
const AV1: &[u8] = include_bytes!("data/av1.mp4");
const AAC: &[u8] = include_bytes!("data/aac.mp4");

/// What ffprobe says about a fixture: video packets and the indexes of key frames among them,
/// audio packets. `frag_every_frame` makes one fragment per packet.
struct Expected {
    video_fragments: usize,
    keyframe_indexes: &'static [usize],
    audio_fragments: usize,
}

// Track IDs ffmpeg gives the streams, in stream order.
const FIRST_TRACK: u32 = 1;

/// Pushes `input` in chunks of `chunk` bytes, draining after each push.
fn read_all(input: &[u8], chunk: usize) -> Result<Vec<Item>, fmp4::Error> {
    let mut reader = Reader::new();
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

/// The `track_ID`s of a fragment's trafs, by a minimal walk independent of the code under test
/// (the fixtures are well formed).
fn traf_track_ids(fragment: &[u8]) -> Vec<u32> {
    fn walk(data: &[u8], mut visit: impl FnMut(&[u8], &[u8])) {
        let mut pos = 0;
        while pos + 8 <= data.len() {
            let size = u32::from_be_bytes(data[pos..pos + 4].try_into().expect("4 bytes")) as usize;
            visit(&data[pos + 4..pos + 8], &data[pos + 8..pos + size]);
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
                            ids.push(u32::from_be_bytes(tfhd[4..8].try_into().expect("4 bytes")));
                        }
                    });
                }
            });
        }
    });
    ids
}

fn check_fixture(input: &[u8], expected: &Expected) -> Init {
    let whole = read_all(input, input.len()).expect("fixture parses");
    for chunk in [1, 7, 4096, 64 * 1024] {
        assert_eq!(
            read_all(input, chunk).expect("fixture parses in chunks"),
            whole,
            "chunk size {chunk}"
        );
    }

    let Some(Item::Init(init)) = whole.first() else {
        panic!("the first item is not the init");
    };
    assert_eq!(
        whole.iter().filter(|i| matches!(i, Item::Init(_))).count(),
        1
    );
    let joined: Vec<u8> = whole.iter().flat_map(|i| i.data().to_vec()).collect();
    assert_eq!(joined, input);

    let fragments: Vec<(&Bytes, bool)> = whole
        .iter()
        .filter_map(|i| match i {
            Item::Fragment { data, keyframe } => Some((data, *keyframe)),
            Item::Init(_) => None,
        })
        .collect();
    assert_eq!(
        fragments.len(),
        expected.video_fragments + expected.audio_fragments
    );
    assert!(fragments[0].1, "first fragment after init is a keyframe");

    let (mut video, mut audio) = (0, 0);
    for (data, keyframe) in &fragments {
        let ids = traf_track_ids(data);
        assert_eq!(ids.len(), 1, "separate_moof + frag_every_frame: one traf");
        let is_video = ids[0] == FIRST_TRACK && expected.video_fragments > 0;
        if is_video {
            assert_eq!(
                *keyframe,
                expected.keyframe_indexes.contains(&video),
                "video fragment {video}"
            );
            video += 1;
        } else {
            // With video in the stream audio never starts a group; alone, every AAC or Opus
            // frame can.
            assert_eq!(
                *keyframe,
                expected.video_fragments == 0,
                "audio fragment {audio}"
            );
            audio += 1;
        }
    }
    assert_eq!(video, expected.video_fragments);
    assert_eq!(audio, expected.audio_fragments);

    let parsed = Init::parse(init).expect("init parses");
    let mut reader = Reader::new();
    reader.push(input);
    reader.next_item().expect("fixture parses");
    assert_eq!(reader.init(), Some(&parsed), "reader and Init::parse agree");
    parsed
}

const GOP_10_OF_25: &[usize] = &[0, 10, 20];
const GOP_5_OF_10: &[usize] = &[0, 5];

fn h264_64x64(id: u32) -> Track {
    Track {
        id,
        kind: Kind::Video,
        timescale: 10240,
        codec: Some("avc1.64000a".into()),
        format: Some(Format::Video {
            width: 64,
            height: 64,
        }),
        default_sample_flags: Some(0),
    }
}

#[test]
fn av_h264_opus() {
    let init = check_fixture(
        AV,
        &Expected {
            video_fragments: 25,
            keyframe_indexes: GOP_10_OF_25,
            audio_fragments: 126,
        },
    );
    let opus = Track {
        id: 2,
        kind: Kind::Audio,
        timescale: 48000,
        codec: Some("opus".into()),
        format: Some(Format::Audio {
            sample_rate: 48000,
            channels: 1,
        }),
        default_sample_flags: Some(0),
    };
    assert_eq!(init.tracks, [h264_64x64(1), opus]);
    assert!(init.has_video());
}

#[test]
fn video_h264() {
    let init = check_fixture(
        VIDEO,
        &Expected {
            video_fragments: 25,
            keyframe_indexes: GOP_10_OF_25,
            audio_fragments: 0,
        },
    );
    assert_eq!(init.tracks, [h264_64x64(1)]);
}

#[test]
fn hevc_aac() {
    let init = check_fixture(
        HEVC_AAC,
        &Expected {
            video_fragments: 10,
            keyframe_indexes: GOP_5_OF_10,
            audio_fragments: 45,
        },
    );
    let names: Vec<_> = init.tracks.iter().map(|t| t.codec.as_deref()).collect();
    // hvcC: Main profile (1), compatibility flags 0x60000000 (6 once bit-reversed), main
    // tier, level_idc 30, constraint bytes 90 00 00 00 00 00. esds: AAC LC.
    assert_eq!(names, [Some("hvc1.1.6.L30.90"), Some("mp4a.40.2")]);
    assert_eq!(
        init.tracks[1].format,
        Some(Format::Audio {
            sample_rate: 44100,
            channels: 1
        })
    );
    assert_eq!(init.tracks[1].timescale, 44100);
}

#[test]
fn av1() {
    let init = check_fixture(
        AV1,
        &Expected {
            video_fragments: 10,
            keyframe_indexes: GOP_5_OF_10,
            audio_fragments: 0,
        },
    );
    let [track] = init.tracks.as_slice() else {
        panic!("one track: {:?}", init.tracks);
    };
    // av1C: seq_profile 0, seq_level_idx_0 0, main tier, 8 bits.
    assert_eq!(track.codec.as_deref(), Some("av01.0.00M.08"));
    assert_eq!(
        track.format,
        Some(Format::Video {
            width: 64,
            height: 64
        })
    );
}

#[test]
fn audio_only_aac() {
    let init = check_fixture(
        AAC,
        &Expected {
            video_fragments: 0,
            keyframe_indexes: &[],
            audio_fragments: 45,
        },
    );
    assert!(!init.has_video());
    assert_eq!(init.tracks[0].codec.as_deref(), Some("mp4a.40.2"));
}

/// The brief's acceptance check, spelled out: one byte at a time and 64 KiB at a time give
/// the very same items, and every item is a slice of one buffer, not a copy.
#[test]
fn one_byte_and_64k_chunks_split_identically() {
    for input in [AV, VIDEO, HEVC_AAC, AV1, AAC] {
        let tiny = read_all(input, 1).expect("1-byte chunks");
        let large = read_all(input, 64 * 1024).expect("64 KiB chunks");
        assert_eq!(tiny, large);
        assert_eq!(
            tiny.iter().map(|i| i.data().len()).sum::<usize>(),
            input.len()
        );
    }
}
