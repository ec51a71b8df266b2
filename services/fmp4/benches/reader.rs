//! Splitting cost: the av fixture (video + audio, 152 fragments) fed in chunk sizes from one
//! byte to 64 KiB.

#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fmp4::{Init, Item, Reader};

const AV: &[u8] = include_bytes!("../tests/data/av.mp4");

fn split(c: &mut Criterion) {
    let mut g = c.benchmark_group("reader");
    g.throughput(Throughput::Bytes(AV.len() as u64));
    for chunk in [1usize, 1_500, 65_536] {
        g.bench_with_input(BenchmarkId::new("av", chunk), &chunk, |b, &chunk| {
            b.iter(|| {
                let mut reader = Reader::new();
                let mut keyframes = 0;
                for piece in AV.chunks(chunk) {
                    reader.push(piece);
                    while let Some(item) = reader.next_item().expect("fixture parses") {
                        if matches!(item, Item::Fragment { keyframe: true, .. }) {
                            keyframes += 1;
                        }
                    }
                }
                keyframes
            })
        });
    }
    g.finish();
}

fn init(c: &mut Criterion) {
    let mut reader = Reader::new();
    reader.push(AV);
    let Some(Item::Init(init)) = reader.next_item().expect("fixture parses") else {
        panic!("the fixture starts with an init segment");
    };
    c.bench_function("init_parse_av", |b| {
        b.iter(|| Init::parse(std::hint::black_box(&init)).map(|i| i.tracks.len()))
    });
}

criterion_group!(benches, split, init);
criterion_main!(benches);
