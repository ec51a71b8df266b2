//! What the writer writes reads back: through [`Reader`] (items and keyframes) and through
//! mp4-atom (every field it was given).

use mp4_atom::esds::{DecoderConfig, DecoderSpecific, EsDescriptor};
use mp4_atom::{Audio, Avc1, Avcc, Decode as _, Esds, Mp4a, Visual};

use super::*;
use crate::{Format, Init, Item, Reader};

const VIDEO: u32 = 1;
const AUDIO: u32 = 2;

fn avc1(width: u16, height: u16) -> Codec {
    // SPS bytes only need their profile and level here: nothing decodes the picture.
    let avcc = Avcc::new(&[0x67, 0x64, 0x00, 0x1f, 0xac], &[0x68, 0xee, 0x3c, 0x80])
        .expect("an SPS of four bytes or more");
    Codec::Avc1(Avc1 {
        visual: Visual {
            data_reference_index: 1,
            width,
            height,
            ..Default::default()
        },
        avcc,
        ..Default::default()
    })
}

fn mp4a() -> Codec {
    Codec::Mp4a(Mp4a {
        audio: Audio {
            data_reference_index: 1,
            channel_count: 2,
            sample_size: 16,
            sample_rate: 48000.into(),
        },
        esds: Esds {
            es_desc: EsDescriptor {
                es_id: 2,
                dec_config: DecoderConfig {
                    object_type_indication: 0x40,
                    stream_type: 5,
                    dec_specific: Some(DecoderSpecific {
                        profile: 2,
                        freq_index: 3,
                        chan_conf: 2,
                        raw: vec![0x11, 0x90],
                    }),
                    ..Default::default()
                },
                ..Default::default()
            },
        },
        btrt: None,
        taic: None,
    })
}

fn av_tracks() -> Vec<TrackConfig> {
    vec![
        TrackConfig {
            track_id: VIDEO,
            timescale: 90_000,
            codec: avc1(320, 240),
        },
        TrackConfig {
            track_id: AUDIO,
            timescale: 48_000,
            codec: mp4a(),
        },
    ]
}

fn sample(decode_time: u64, composition_offset: i32, keyframe: bool, data: &[u8]) -> Sample {
    Sample {
        decode_time,
        duration: 3000,
        composition_offset,
        keyframe,
        data: Bytes::copy_from_slice(data),
    }
}

fn read_all(input: &[u8]) -> Vec<Item> {
    let mut reader = Reader::new();
    reader.push(input);
    let mut items = Vec::new();
    while let Some(item) = reader
        .next_item()
        .expect("the reader accepts what mux wrote")
    {
        items.push(item);
    }
    reader.finish().expect("nothing left over");
    items
}

#[test]
fn reader_sees_init_fragments_and_keyframes_where_written() {
    let init = init(&av_tracks()).expect("init");
    // (track, keyframe): video keyframes start groups, audio never does beside video.
    let written = [
        (VIDEO, true),
        (AUDIO, true),
        (VIDEO, false),
        (VIDEO, false),
        (AUDIO, true),
        (VIDEO, true),
        (VIDEO, false),
    ];
    let mut stream = init.to_vec();
    let mut fragments = Vec::new();
    for (seq, &(track, keyframe)) in (1..).zip(&written) {
        let data = vec![seq as u8; 10 + seq as usize];
        let frag = fragment(
            seq,
            track,
            &sample(u64::from(seq) * 3000, 0, keyframe, &data),
        )
        .expect("fragment");
        stream.extend_from_slice(&frag);
        fragments.push(frag);
    }

    let items = read_all(&stream);
    assert_eq!(items.len(), 1 + written.len());
    assert_eq!(items[0], Item::Init(init.clone()));
    for ((item, frag), &(track, keyframe)) in items[1..].iter().zip(&fragments).zip(&written) {
        let expected = keyframe && track == VIDEO;
        assert_eq!(
            item,
            &Item::Fragment {
                data: frag.clone(),
                keyframe: expected
            }
        );
    }

    let parsed = Init::parse(&init).expect("init parses");
    let video = parsed.track(VIDEO).expect("video track");
    assert_eq!(video.kind, Kind::Video);
    assert_eq!(video.timescale, 90_000);
    assert_eq!(video.codec.as_deref(), Some("avc1.64001f"));
    assert_eq!(
        video.format,
        Some(Format::Video {
            width: 320,
            height: 240
        })
    );
    let audio = parsed.track(AUDIO).expect("audio track");
    assert_eq!(audio.kind, Kind::Audio);
    assert_eq!(audio.codec.as_deref(), Some("mp4a.40.2"));
    assert_eq!(
        audio.format,
        Some(Format::Audio {
            sample_rate: 48000,
            channels: 2
        })
    );
}

#[test]
fn audio_only_fragments_are_all_keyframes() {
    let tracks = [TrackConfig {
        track_id: 1,
        timescale: 48_000,
        codec: mp4a(),
    }];
    let mut stream = init(&tracks).expect("init").to_vec();
    for seq in 1..=3 {
        let frag = fragment(seq, 1, &sample(u64::from(seq) * 1024, 0, true, &[1, 2, 3]));
        stream.extend_from_slice(&frag.expect("fragment"));
    }
    let items = read_all(&stream);
    assert_eq!(items.len(), 4);
    assert!(
        items[1..]
            .iter()
            .all(|item| matches!(item, Item::Fragment { keyframe: true, .. }))
    );
}

#[test]
fn fragment_fields_decode_back() {
    let data = b"coded picture";
    // A decode time past u32 (tfdt version 1) and a negative offset (trun version 1).
    let decode_time = (1u64 << 33) + 7;
    for (offset, keyframe) in [(-3003, false), (6006, true), (0, true)] {
        let written = Sample {
            decode_time,
            duration: 1501,
            composition_offset: offset,
            keyframe,
            data: Bytes::from_static(data),
        };
        let frag = fragment(42, VIDEO, &written).expect("fragment");

        let mut buf = &frag[..];
        let moof = Moof::decode(&mut buf).expect("moof decodes");
        let moof_len = frag.len() - buf.len();
        let mdat = Mdat::decode(&mut buf).expect("mdat decodes");
        assert!(buf.is_empty());
        assert_eq!(mdat.data, data);

        assert_eq!(moof.mfhd.sequence_number, 42);
        let [traf] = &moof.traf[..] else {
            panic!("one traf: {moof:?}");
        };
        assert_eq!(traf.tfhd.track_id, VIDEO);
        assert!(traf.tfhd.default_base_is_moof);
        assert_eq!(traf.tfhd.base_data_offset, None);
        assert_eq!(
            traf.tfdt.as_ref().map(|t| t.base_media_decode_time),
            Some(decode_time)
        );
        let [trun] = &traf.trun[..] else {
            panic!("one trun: {traf:?}");
        };
        // The data offset, counted from the moof, lands on the sample.
        let data_offset = usize::try_from(trun.data_offset.expect("data offset")).expect("≥ 0");
        assert_eq!(data_offset, moof_len + 8);
        assert_eq!(&frag[data_offset..], data);
        let entries: Vec<_> = trun.samples.iter().collect();
        assert_eq!(
            entries,
            [TrunEntry {
                duration: Some(1501),
                size: Some(data.len() as u32),
                flags: Some(if keyframe {
                    SYNC_SAMPLE_FLAGS
                } else {
                    NON_SYNC_SAMPLE_FLAGS
                }),
                cts: (offset != 0).then_some(i64::from(offset)),
            }]
        );
    }
}

#[test]
fn negative_offsets_are_written_in_a_version_1_trun() {
    let frag = fragment(1, VIDEO, &sample(0, -1, false, b"x")).expect("fragment");
    let trun = frag
        .windows(4)
        .position(|w| w == b"trun")
        .expect("a trun box");
    // The version byte follows the type; offset -1 as a signed 32-bit field.
    assert_eq!(frag[trun + 4], 1);
    let mut buf = &frag[..];
    let moof = Moof::decode(&mut buf).expect("moof");
    let cts = moof.traf[0].trun[0].samples.get(0).and_then(|e| e.cts);
    assert_eq!(cts, Some(-1));
}

#[test]
fn moov_decodes_back() {
    let init = init(&av_tracks()).expect("init");
    let mut buf = &init[..];
    let ftyp = Ftyp::decode(&mut buf).expect("ftyp");
    assert_eq!(ftyp.major_brand, FourCC::new(b"iso6"));
    assert_eq!(
        ftyp.compatible_brands,
        [b"iso6", b"cmfc", b"mp41"].map(FourCC::new)
    );
    let moov = Moov::decode(&mut buf).expect("moov");
    assert!(buf.is_empty());
    assert_eq!(moov.mvhd.next_track_id, 3);
    let trex = &moov.mvex.as_ref().expect("mvex").trex;
    assert_eq!(
        trex.iter().map(|t| t.track_id).collect::<Vec<_>>(),
        [VIDEO, AUDIO]
    );
    let [video, audio] = &moov.trak[..] else {
        panic!("two traks");
    };
    assert_eq!(video.mdia.hdlr.handler, FourCC::new(b"vide"));
    assert!(video.mdia.minf.vmhd.is_some() && video.mdia.minf.smhd.is_none());
    assert_eq!(
        (video.tkhd.width.integer(), video.tkhd.height.integer()),
        (320, 240)
    );
    assert_eq!(audio.mdia.hdlr.handler, FourCC::new(b"soun"));
    assert!(audio.mdia.minf.smhd.is_some() && audio.mdia.minf.vmhd.is_none());
    assert_eq!(audio.mdia.mdhd.timescale, 48_000);
    assert_eq!(audio.mdia.minf.stbl.stsd.codecs, [mp4a()]);
}

#[test]
fn init_refuses_what_it_cannot_write() {
    assert!(matches!(init(&[]), Err(Error::NoTracks)));

    let mut twice = av_tracks();
    twice[1].track_id = VIDEO;
    assert!(matches!(
        init(&twice),
        Err(Error::BadTrackId { track_id: VIDEO })
    ));

    let mut zero = av_tracks();
    zero[0].timescale = 0;
    assert!(matches!(
        init(&zero),
        Err(Error::ZeroTimescale { track_id: VIDEO })
    ));

    let mut unknown = av_tracks();
    unknown[1].codec = Codec::Unknown(FourCC::new(b"dvh1"), vec![]);
    assert!(matches!(
        init(&unknown),
        Err(Error::NotAudioOrVideo { track_id: AUDIO })
    ));

    // A value the box cannot carry: an AVC NAL length size of 5.
    let mut bad = av_tracks();
    if let Codec::Avc1(avc1) = &mut bad[0].codec {
        avc1.avcc.length_size = 5;
    }
    assert!(matches!(init(&bad), Err(Error::Encode { .. })));
}
