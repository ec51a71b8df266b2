//! Synthetic streams for every rule and error the fixtures do not reach.
//!
//! Init segments are encoded with mp4-atom (a `moov` must decode whole); fragments are written
//! byte by byte, so that each test controls exactly which flags and fields are present.

use mp4_atom::{Encode as _, Ftyp, Hdlr, Mdia, Moov, Mvex, Tkhd, Trak, Trex};

use super::*;

// Made by the commands in tests/data/README.md.
const AV: &[u8] = include_bytes!("../../tests/data/av.mp4");
const VIDEO: &[u8] = include_bytes!("../../tests/data/video.mp4");

const MOOF: FourCC = Moof::KIND;
const MOOV: FourCC = Moov::KIND;

/// Pushes `input` in chunks of `chunk` bytes, draining after each push.
fn read_all(input: &[u8], chunk: usize) -> Result<Vec<Item>, Error> {
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

fn bx(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(payload);
    out
}

fn full(kind: &[u8; 4], version: u8, flags: u32, fields: &[u32]) -> Vec<u8> {
    let mut payload = ((u32::from(version) << 24) | flags).to_be_bytes().to_vec();
    for f in fields {
        payload.extend_from_slice(&f.to_be_bytes());
    }
    bx(kind, &payload)
}

/// `ftyp` (16 bytes) and a `moov` with one `trak` per (track_ID, handler) and one `trex` per
/// (track_ID, default_sample_flags).
fn init(tracks: &[(u32, &[u8; 4])], trexes: &[(u32, u32)]) -> Vec<u8> {
    let ftyp = Ftyp {
        major_brand: b"iso6".into(),
        minor_version: 0,
        compatible_brands: vec![],
    };
    let moov = Moov {
        trak: tracks
            .iter()
            .map(|&(id, handler)| Trak {
                tkhd: Tkhd {
                    track_id: id,
                    ..Default::default()
                },
                mdia: Mdia {
                    hdlr: Hdlr {
                        handler: handler.into(),
                        name: String::new(),
                    },
                    ..Default::default()
                },
                ..Default::default()
            })
            .collect(),
        mvex: Some(Mvex {
            mehd: None,
            trex: trexes
                .iter()
                .map(|&(track_id, default_sample_flags)| Trex {
                    track_id,
                    default_sample_description_index: 1,
                    default_sample_flags,
                    ..Default::default()
                })
                .collect(),
        }),
        ..Default::default()
    };
    let mut out = Vec::new();
    ftyp.encode(&mut out).expect("ftyp encodes");
    moov.encode(&mut out).expect("moov encodes");
    out
}

/// moof with one traf per (track_ID, tfhd default flags, trun boxes), followed by a 16-byte
/// mdat.
fn fragment(trafs: &[(u32, Option<u32>, Vec<u8>)]) -> Vec<u8> {
    let mut moof = full(b"mfhd", 0, 0, &[1]);
    for (id, default_flags, trun) in trafs {
        let tfhd = match default_flags {
            Some(f) => full(b"tfhd", 0, 0x2_0020, &[*id, *f]),
            None => full(b"tfhd", 0, 0x2_0000, &[*id]),
        };
        let tfdt = full(b"tfdt", 1, 0, &[0, 0]);
        moof.extend(bx(b"traf", &[tfhd, tfdt, trun.clone()].concat()));
    }
    [bx(b"moof", &moof), bx(b"mdat", &[0; 8])].concat()
}

const KEY: u32 = 0x0200_0000;
const NON_KEY: u32 = 0x0101_0000;
const UNKNOWN_SYNC: u32 = 0;

fn keyframes(stream: &[u8]) -> Vec<bool> {
    read_all(stream, stream.len())
        .expect("synthetic stream parses")
        .into_iter()
        .filter_map(|i| match i {
            Item::Fragment { keyframe, .. } => Some(keyframe),
            Item::Init(_) => None,
        })
        .collect()
}

#[test]
fn first_sample_flag_sources() {
    let head = init(&[(1, b"vide")], &[(1, KEY)]);
    let frags = [
        // trun first-sample-flags beat the tfhd default, either way.
        fragment(&[(1, Some(NON_KEY), full(b"trun", 0, 0x005, &[1, 0, KEY]))]),
        fragment(&[(1, Some(KEY), full(b"trun", 0, 0x005, &[1, 0, NON_KEY]))]),
        // Per-sample flags of the first sample, after duration and size.
        fragment(&[(
            1,
            Some(NON_KEY),
            full(b"trun", 0, 0x701, &[2, 0, 9, 9, KEY, 9, 9, NON_KEY]),
        )]),
        fragment(&[(1, Some(KEY), full(b"trun", 0, 0x401, &[1, 0, NON_KEY]))]),
        // tfhd default beats trex default.
        fragment(&[(1, Some(NON_KEY), full(b"trun", 0, 0x001, &[1, 0]))]),
        // trex default (KEY) when nothing else is given.
        fragment(&[(1, None, full(b"trun", 0, 0x001, &[1, 0]))]),
        // No samples: never a keyframe.
        fragment(&[(1, Some(KEY), full(b"trun", 0, 0x001, &[0, 0]))]),
        // depends_on unknown is not a video sync sample.
        fragment(&[(1, Some(UNKNOWN_SYNC), full(b"trun", 0, 0x001, &[1, 0]))]),
        // A later trun with samples supplies the first sample.
        fragment(&[(
            1,
            Some(NON_KEY),
            [full(b"trun", 0, 0, &[0]), full(b"trun", 0, 0x4, &[1, KEY])].concat(),
        )]),
    ];
    let stream = [head, frags.concat()].concat();
    assert_eq!(
        keyframes(&stream),
        [true, false, true, false, false, true, false, false, true]
    );
}

#[test]
fn first_sample_flags_and_per_sample_flags_together_are_refused() {
    // ISO/IEC 14496-12 8.8.8.1: with first-sample-flags, sample-flags-present shall not be
    // set. mp4-atom then reads one flags field too few and finds bytes left over.
    let head = init(&[(1, b"vide")], &[]);
    let frag = fragment(&[(
        1,
        None,
        full(b"trun", 0, 0x405, &[2, 0, KEY, NON_KEY, NON_KEY]),
    )]);
    let err = first_error(&[head.clone(), frag].concat());
    assert!(
        matches!(err, Error::Decode { kind: MOOF, offset, .. } if offset == head.len() as u64),
        "{err:?}"
    );
}

#[test]
fn no_flags_anywhere_is_not_sync() {
    let head = init(&[(1, b"soun")], &[]);
    let frag = fragment(&[(1, None, full(b"trun", 0, 0x001, &[1, 0]))]);
    assert_eq!(keyframes(&[head, frag].concat()), [false]);
}

#[test]
fn audio_only_uses_non_sync_bit_of_first_traf() {
    let head = init(&[(1, b"soun"), (2, b"soun")], &[(1, 0), (2, 0)]);
    let trun = |flags: u32| full(b"trun", 0, 0x005, &[1, 0, flags]);
    let frags = [
        fragment(&[(1, None, trun(KEY))]),
        fragment(&[(1, None, trun(UNKNOWN_SYNC))]),
        fragment(&[(1, None, trun(NON_KEY))]),
        // Only the first traf counts.
        fragment(&[(1, None, trun(NON_KEY)), (2, None, trun(KEY))]),
        fragment(&[(2, None, trun(KEY)), (1, None, trun(NON_KEY))]),
        // Unknown track in the first traf: trex default does not apply, but explicit flags
        // do.
        fragment(&[(9, None, trun(KEY))]),
        fragment(&[(9, None, full(b"trun", 0, 0x001, &[1, 0]))]),
    ];
    let stream = [head, frags.concat()].concat();
    assert_eq!(
        keyframes(&stream),
        [true, true, false, false, true, true, false]
    );
}

#[test]
fn with_video_only_video_trafs_count() {
    let head = init(&[(1, b"vide"), (2, b"soun")], &[]);
    let trun = |flags: u32| full(b"trun", 0, 0x005, &[1, 0, flags]);
    let frags = [
        fragment(&[(2, None, trun(KEY))]),
        fragment(&[(2, None, trun(KEY)), (1, None, trun(KEY))]),
        fragment(&[(2, None, trun(KEY)), (1, None, trun(NON_KEY))]),
        fragment(&[(9, None, trun(KEY))]),
    ];
    let stream = [head, frags.concat()].concat();
    assert_eq!(keyframes(&stream), [false, true, false, false]);
}

#[test]
fn optional_tfhd_fields() {
    let head = init(&[(7, b"vide")], &[]);
    // All optional tfhd fields: base offset (u64), description index, duration, size, then
    // the default flags.
    let tfhd = full(b"tfhd", 0, 0x3b, &[7, 0, 0, 1, 1024, 100, KEY]);
    let trun = full(b"trun", 0, 0x001, &[1, 0]);
    let moof = bx(
        b"moof",
        &[
            full(b"mfhd", 0, 0, &[1]),
            bx(b"traf", &[tfhd, trun].concat()),
        ]
        .concat(),
    );
    let stream = [head, moof, bx(b"mdat", &[])].concat();
    assert_eq!(keyframes(&stream), [true]);
}

#[test]
fn reader_exposes_the_tracks_before_the_init_is_emitted() {
    let head = init(&[(1, b"vide"), (2, b"soun")], &[(1, NON_KEY)]);
    let mut reader = Reader::new();
    reader.push(&head);
    // The init ends only when a fragment starts, but the moov is already read.
    assert_eq!(reader.next_item(), Ok(None));
    let tracks = &reader.init().expect("moov read").tracks;
    assert_eq!(tracks.len(), 2);
    assert_eq!(tracks[0].kind, Kind::Video);
    assert_eq!(tracks[0].default_sample_flags, Some(NON_KEY));
    assert_eq!(tracks[1].kind, Kind::Audio);
    // No sample entry: nothing to name.
    assert_eq!(tracks[1].codec, None);
    assert_eq!(tracks[1].format, None);
    assert_eq!(
        Init::parse(&head).as_ref(),
        Ok(reader.init().expect("read"))
    );
}

#[test]
fn prefix_and_free_boxes() {
    let head = init(&[(1, b"vide")], &[]);
    let free = bx(b"free", b"xx");
    let frag = fragment(&[(1, Some(KEY), full(b"trun", 0, 0x001, &[1, 0]))]);
    let styp = bx(b"styp", b"msdh\0\0\0\0");
    let prft = full(b"prft", 1, 0, &[1, 0, 0, 0, 0]);
    let stream = [
        head.clone(),
        free.clone(),
        frag.clone(),
        styp.clone(),
        prft.clone(),
        frag.clone(),
        free.clone(),
        frag.clone(),
    ]
    .concat();
    let items = read_all(&stream, 3).expect("stream parses");
    let expected = vec![
        Item::Init(Bytes::from([head, free.clone()].concat())),
        Item::Fragment {
            data: Bytes::from(frag.clone()),
            keyframe: true,
        },
        Item::Fragment {
            data: Bytes::from([styp, prft, frag.clone()].concat()),
            keyframe: true,
        },
        Item::Fragment {
            data: Bytes::from([free, frag].concat()),
            keyframe: true,
        },
    ];
    assert_eq!(items, expected);
}

#[test]
fn largesize_header() {
    let mut ftyp = 1u32.to_be_bytes().to_vec();
    ftyp.extend_from_slice(b"ftyp");
    ftyp.extend_from_slice(&24u64.to_be_bytes());
    ftyp.extend_from_slice(b"iso6\0\0\0\0");
    let head = init(&[(1, b"vide")], &[]);
    let frag = fragment(&[(1, Some(KEY), full(b"trun", 0, 0x001, &[1, 0]))]);
    // Replace the 16-byte ftyp of `init` with the largesize one.
    let stream = [ftyp.clone(), head[16..].to_vec(), frag].concat();
    let items = read_all(&stream, 1).expect("stream parses");
    assert_eq!(items[0].data()[..24], ftyp[..]);
    assert_eq!(items.len(), 2);
}

// ---- Errors ----

/// Pushes everything and drains; returns the first error.
fn first_error(stream: &[u8]) -> Error {
    let mut reader = Reader::new();
    reader.push(stream);
    loop {
        match reader.next_item() {
            Ok(Some(_)) => {}
            Ok(None) => return reader.finish().expect_err("stream is invalid"),
            Err(err) => {
                // The reader stays failed with the same error, and buffers nothing more.
                assert_eq!(reader.next_item().expect_err("reader stays failed"), err);
                assert_eq!(reader.finish().expect_err("reader stays failed"), err);
                reader.push(b"more");
                assert_eq!(reader.buf.len(), 0);
                return err;
            }
        }
    }
}

fn good_init() -> Vec<u8> {
    init(&[(1, b"vide")], &[(1, 0)])
}

fn good_fragment() -> Vec<u8> {
    fragment(&[(1, Some(KEY), full(b"trun", 0, 0x001, &[1, 0]))])
}

#[test]
fn size_zero_box() {
    let err = first_error(&[0, 0, 0, 0, b'f', b't', b'y', b'p']);
    assert_eq!(
        err,
        Error::BoxSizeZero {
            kind: FTYP,
            offset: 0
        }
    );
    assert!(err.to_string().contains("size 0"), "{err}");
}

#[test]
fn size_smaller_than_header() {
    let err = first_error(&[0, 0, 0, 7, b'f', b't', b'y', b'p']);
    assert_eq!(
        err,
        Error::BadBoxSize {
            kind: FTYP,
            offset: 0,
            size: 7,
            header: 8
        }
    );
    let mut large = vec![0, 0, 0, 1];
    large.extend_from_slice(b"ftyp");
    large.extend_from_slice(&15u64.to_be_bytes());
    assert!(matches!(
        first_error(&large),
        Error::BadBoxSize {
            size: 15,
            header: 16,
            ..
        }
    ));
}

#[test]
fn huge_boxes_fail_from_the_header_alone() {
    // 1 GiB ftyp: only its 8-byte header is ever pushed.
    let mut reader = Reader::new();
    reader.push(&(1u32 << 30).to_be_bytes());
    assert_eq!(reader.next_item(), Ok(None));
    reader.push(b"ftyp");
    let err = reader.next_item().expect_err("1 GiB box");
    assert_eq!(
        err,
        Error::BoxTooLarge {
            kind: FTYP,
            offset: 0,
            size: 1 << 30,
            item: "init",
            total: 1 << 30,
            max: MAX_INIT_SIZE,
        }
    );
    assert!(err.to_string().contains("1073741824"), "{err}");

    // A 64-bit size near u64::MAX must not overflow the limit check.
    let mut large = vec![0, 0, 0, 1];
    large.extend_from_slice(b"moov");
    large.extend_from_slice(&u64::MAX.to_be_bytes());
    assert!(matches!(first_error(&large), Error::BoxTooLarge { .. }));

    // An mdat that would push the fragment past MAX_FRAGMENT_SIZE.
    let head = good_init();
    let frag = good_fragment();
    let moof_len = frag.len() - 16;
    let mut stream = [head.clone(), frag[..moof_len].to_vec()].concat();
    let mdat_size = (MAX_FRAGMENT_SIZE - moof_len + 1) as u32;
    stream.extend_from_slice(&mdat_size.to_be_bytes());
    stream.extend_from_slice(b"mdat");
    assert_eq!(
        first_error(&stream),
        Error::BoxTooLarge {
            kind: MDAT,
            offset: (head.len() + moof_len) as u64,
            size: u64::from(mdat_size),
            item: "fragment",
            total: MAX_FRAGMENT_SIZE as u64 + 1,
            max: MAX_FRAGMENT_SIZE,
        }
    );
}

#[test]
fn fragment_at_the_limit_is_accepted() {
    let head = good_init();
    let frag = good_fragment();
    let moof = &frag[..frag.len() - 16];
    let mdat = bx(b"mdat", &vec![0; MAX_FRAGMENT_SIZE - moof.len() - 8]);
    let stream = [head, moof.to_vec(), mdat].concat();
    let items = read_all(&stream, 64 * 1024).expect("stream parses");
    assert_eq!(items[1].data().len(), MAX_FRAGMENT_SIZE);
}

#[test]
fn fragment_before_init() {
    assert_eq!(
        first_error(&good_fragment()),
        Error::FragmentBeforeInit {
            kind: MOOF,
            offset: 0
        }
    );
    assert!(matches!(
        first_error(&bx(b"mdat", b"")),
        Error::FragmentBeforeInit { kind: MDAT, .. }
    ));
}

#[test]
fn init_without_moov() {
    let ftyp = bx(b"ftyp", b"iso6\0\0\0\0");
    let stream = [ftyp.clone(), good_fragment()].concat();
    let err = first_error(&stream);
    assert_eq!(
        err,
        Error::MissingMoov {
            offset: ftyp.len() as u64,
            init_size: ftyp.len()
        }
    );
    assert_eq!(Init::parse(&ftyp), Err(err));
}

#[test]
fn truncated_at_finish() {
    for cut in [1, 5, 8, 100, AV.len() / 2, AV.len() - 1] {
        let mut reader = Reader::new();
        reader.push(&AV[..cut]);
        while reader.next_item().expect("prefix is valid").is_some() {}
        assert!(
            matches!(reader.finish(), Err(Error::Truncated { .. })),
            "cut at {cut}"
        );
    }
    // Init complete but no fragment yet: nothing was emitted, so that is truncation too.
    let head = good_init();
    assert_eq!(
        first_error(&head),
        Error::Truncated {
            item: "init",
            offset: 0,
            buffered: head.len()
        }
    );
    // A moof without its mdat at the end.
    let frag = good_fragment();
    let stream = [head.clone(), frag[..frag.len() - 16].to_vec()].concat();
    assert_eq!(
        first_error(&stream),
        Error::Truncated {
            item: "fragment",
            offset: head.len() as u64,
            buffered: frag.len() - 16
        }
    );
    assert_eq!(Reader::new().finish(), Ok(()));
}

#[test]
fn init_parse_errors() {
    let head = good_init();
    // The moov cut short.
    assert_eq!(
        Init::parse(&head[..head.len() - 1]),
        Err(Error::Truncated {
            item: "init",
            offset: 16,
            buffered: head.len() - 17
        })
    );
    let moov = &head[16..];
    assert!(matches!(
        Init::parse(&[&head[..], moov].concat()),
        Err(Error::DuplicateInit { kind: MOOV, offset }) if offset == head.len() as u64
    ));
    assert!(matches!(
        Init::parse(&[0, 0, 0, 0, b'm', b'o', b'o', b'v']),
        Err(Error::BoxSizeZero { kind: MOOV, .. })
    ));
    // Boxes other than the moov are not read: a free box and even a fragment may follow.
    let with_more = [head.clone(), bx(b"free", b""), good_fragment()].concat();
    assert_eq!(Init::parse(&with_more), Init::parse(&head));
}

#[test]
fn garbage() {
    let err = first_error(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n");
    // "GET " read as a size is 0x47455420, far over the init limit.
    assert!(matches!(err, Error::BoxTooLarge { .. }), "{err}");
    assert!(matches!(
        first_error(&[0xff; 64]),
        Error::BoxTooLarge { .. }
    ));
    let err = first_error(&[0x00, 0x00, 0x00, 0x05, 0xde, 0xad, 0xbe, 0xef]);
    assert!(err.to_string().contains("\\xde\\xad\\xbe\\xef"), "{err}");
}

#[test]
fn ordering_errors() {
    let head = good_init();
    let frag = good_fragment();
    let moof = frag[..frag.len() - 16].to_vec();
    let mdat = frag[frag.len() - 16..].to_vec();
    let at = |parts: &[&[u8]]| parts.iter().map(|p| p.len()).sum::<usize>() as u64;

    let stream = [head.clone(), moof.clone(), moof.clone()].concat();
    assert_eq!(
        first_error(&stream),
        Error::MoofWithoutMdat {
            kind: MOOF,
            offset: at(&[&head, &moof]),
            moof_offset: head.len() as u64
        }
    );
    let stream = [head.clone(), moof.clone(), bx(b"free", b"")].concat();
    assert!(matches!(
        first_error(&stream),
        Error::MoofWithoutMdat { .. }
    ));

    let stream = [head.clone(), frag.clone(), mdat.clone()].concat();
    assert_eq!(
        first_error(&stream),
        Error::MdatWithoutMoof {
            offset: at(&[&head, &frag])
        }
    );
    let stream = [head.clone(), mdat.clone()].concat();
    assert!(matches!(
        first_error(&stream),
        Error::MdatWithoutMoof { .. }
    ));

    let stream = [head.clone(), frag.clone(), head.clone()].concat();
    assert_eq!(
        first_error(&stream),
        Error::DuplicateInit {
            kind: FTYP,
            offset: at(&[&head, &frag])
        }
    );
    let moov = head[16..].to_vec();
    let stream = [head.clone(), moov].concat();
    assert!(matches!(
        first_error(&stream),
        Error::DuplicateInit { kind: MOOV, .. }
    ));
}

#[test]
fn malformed_nested_boxes() {
    let head = good_init();
    let moof_at = head.len() as u64;
    let decode_error = |stream: &[u8], kind: FourCC, offset: u64| match first_error(stream) {
        Error::Decode {
            kind: k,
            offset: o,
            source,
        } if k == kind && o == offset => source,
        other => panic!("expected a decode error in '{kind}' at {offset}, got {other:?}"),
    };
    let mfhd = full(b"mfhd", 0, 0, &[1]);

    // A traf claiming more bytes than its moof holds.
    let moof = bx(b"moof", &[&mfhd[..], &[0, 0, 0, 64], b"traf"].concat());
    decode_error(
        &[&head[..], &moof, &bx(b"mdat", b"")].concat(),
        MOOF,
        moof_at,
    );

    // A trun whose sample table runs past the box.
    let traf = bx(
        b"traf",
        &[
            full(b"tfhd", 0, 0, &[1]),
            full(b"trun", 0, 0x300, &[1000, 1, 2]),
        ]
        .concat(),
    );
    let moof = bx(b"moof", &[mfhd.clone(), traf].concat());
    decode_error(
        &[&head[..], &moof, &bx(b"mdat", b"")].concat(),
        MOOF,
        moof_at,
    );

    // A traf without tfhd: mp4-atom names the missing box.
    let traf = bx(b"traf", &full(b"trun", 0, 0, &[0]));
    let moof = bx(b"moof", &[mfhd.clone(), traf].concat());
    let source = decode_error(
        &[&head[..], &moof, &bx(b"mdat", b"")].concat(),
        MOOF,
        moof_at,
    );
    assert!(
        matches!(source.get(), mp4_atom::Error::MissingBox(kind) if *kind == FourCC::new(b"tfhd")),
        "{source:?}"
    );

    // A moof without mfhd, which mp4-atom requires.
    let moof = bx(
        b"moof",
        &bx(
            b"traf",
            &[full(b"tfhd", 0, 0, &[1]), full(b"trun", 0, 0, &[0])].concat(),
        ),
    );
    decode_error(
        &[&head[..], &moof, &bx(b"mdat", b"")].concat(),
        MOOF,
        moof_at,
    );

    // tkhd version 2, in the moov.
    let ftyp = bx(b"ftyp", b"");
    let tkhd = full(b"tkhd", 2, 0, &[0, 0, 1]);
    let moov = bx(b"moov", &bx(b"trak", &tkhd));
    let err = first_error(&[ftyp.clone(), moov].concat());
    assert!(
        matches!(
            &err,
            Error::Decode {
                kind: MOOV,
                offset: 8,
                ..
            }
        ),
        "{err:?}"
    );
    // The cause stays attached for `{:#}`-style reports.
    assert!(std::error::Error::source(&err).is_some());
}

/// Tiny deterministic PRNG, enough to vary mutations.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut XorShift, src: &[u8]) -> Vec<u8> {
    let mut data = src.to_vec();
    for _ in 0..=rng.below(3) {
        // Half the edits land in the first 1.5 KB, where the moov and the first moof are,
        // since mdat payload damage is invisible here.
        let len = data.len();
        let pos = if rng.next() & 1 == 0 {
            rng.below(len)
        } else {
            rng.below(len.min(1500))
        };
        match rng.below(5) {
            0 | 1 => {
                for i in 0..=rng.below(4) {
                    if let Some(b) = data.get_mut(pos + i) {
                        *b ^= (rng.next() as u8) | 1;
                    }
                }
            }
            2 => data.truncate(pos),
            3 => {
                let from = rng.below(src.len());
                let to = (from + rng.below(300)).min(src.len());
                let pos = pos.min(data.len());
                data.splice(pos..pos, src[from..to].iter().copied());
            }
            _ => {
                let end = (pos + rng.below(300)).min(data.len());
                data.drain(pos.min(end)..end);
            }
        }
    }
    data
}

#[test]
fn mutations_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut complete = 0;
    for round in 0..10_000 {
        let src = if round % 2 == 0 { AV } else { VIDEO };
        let data = mutate(&mut rng, src);
        let mut reader = Reader::new();
        let mut emitted = Vec::new();
        let mut pos = 0;
        let mut failed = false;
        while pos < data.len() && !failed {
            let end = (pos + 1 + rng.below(4096)).min(data.len());
            reader.push(&data[pos..end]);
            pos = end;
            loop {
                match reader.next_item() {
                    Ok(Some(item)) => emitted.extend_from_slice(item.data()),
                    Ok(None) => break,
                    Err(err) => {
                        // Formatting must not panic either.
                        let _ = err.to_string();
                        failed = true;
                        break;
                    }
                }
            }
        }
        // Items are always a prefix of the input, in order.
        assert_eq!(emitted[..], data[..emitted.len()], "round {round}");
        if reader.finish().is_ok() {
            assert_eq!(emitted, data, "round {round}");
            complete += 1;
        }
    }
    // Some mutations (payload bytes, whole-fragment cuts) leave a valid stream; the test must
    // exercise both outcomes.
    assert!(complete > 0 && complete < 10_000, "{complete}");
}
