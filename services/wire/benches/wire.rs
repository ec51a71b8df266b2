//! Protocol core costs: encoding and decoding W1-sized frames (8,000 bytes).

#![allow(missing_docs)]

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wire::{Frame, GroupDecoder, GroupEvent, GroupHeader, Message};

const FRAME: usize = 8_000;
const GROUP: usize = 60;

fn encode(c: &mut Criterion) {
    let payload = vec![0x5a; FRAME];
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Bytes(FRAME as u64));
    g.bench_function("encode_8000", |b| {
        b.iter(|| Frame::new(std::hint::black_box(1), &payload).map(|f| f.payload_len()))
    });
    g.finish();
}

fn decode(c: &mut Criterion) {
    let payload = vec![0x5a; FRAME];
    let mut wire = BytesMut::new();
    wire.extend_from_slice(&GroupHeader { sequence: 1 }.to_bytes());
    for i in 0..GROUP {
        let f = Frame::new(i as u64, &payload).expect("frame");
        wire.extend_from_slice(f.encoded());
    }
    let wire = wire.freeze();
    let mut g = c.benchmark_group("group");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    for chunk in [1_200usize, 65_536] {
        g.bench_with_input(
            BenchmarkId::new("decode_60x8000", chunk),
            &chunk,
            |b, &chunk| {
                b.iter(|| {
                    let mut dec = GroupDecoder::new();
                    let mut buf = BytesMut::new();
                    let mut frames = 0;
                    for piece in wire.chunks(chunk) {
                        buf.extend_from_slice(piece);
                        while let Ok(Some(ev)) = dec.decode(&mut buf) {
                            if matches!(ev, GroupEvent::Frame(_)) {
                                frames += 1;
                            }
                        }
                    }
                    frames
                })
            },
        );
    }
    g.finish();
}

fn messages(c: &mut Criterion) {
    let join = Message::Join {
        stream_id: "0123456789abcdef".into(),
        ticket: bytes::Bytes::from(vec![7u8; 80]),
        delivery: wire::Delivery::StreamPerGroup,
    };
    c.bench_function("message/join_round_trip", |b| {
        b.iter(|| {
            let mut buf = BytesMut::new();
            join.encode(&mut buf);
            Message::decode(&mut buf)
        })
    });
}

criterion_group!(benches, encode, decode, messages);
criterion_main!(benches);
