//! Relay hot path without the network: group bookkeeping, and one frame dispatched to N
//! subscribers of a track (each takes its shared copy, as a per-viewer sender does).

#![allow(missing_docs)]

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use transport::track::{Limits, Track, TrackInfo};
use wire::Frame;

/// A track without byte limits: the benches push into one group for as long as they run.
fn track() -> Track {
    Track::with_limits(
        TrackInfo {
            id: "s".into(),
            name: "bench".into(),
            init: Bytes::new(),
        },
        Limits {
            group: usize::MAX,
            stream: usize::MAX,
        },
    )
}

fn bookkeeping(c: &mut Criterion) {
    let frame = Frame::new(1, &vec![0u8; 8_000]).expect("frame");
    c.bench_function("track/group_of_60_frames", |b| {
        let t = track();
        let mut seq = 0;
        b.iter(|| {
            seq += 1;
            let mut g = t.start_group(seq).expect("newer group");
            for _ in 0..60 {
                g.push(frame.clone()).expect("no limit");
            }
        })
    });
}

fn dispatch(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let frame = Frame::new(1, &vec![0u8; 8_000]).expect("frame");
    let mut g = c.benchmark_group("dispatch_one_frame");
    for n in [1usize, 50, 200, 350] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            let t = track();
            let mut w = t.start_group(1).expect("group");
            let mut readers: Vec<_> = (0..n).map(|_| t.subscribe()).collect();
            let mut groups: Vec<_> = rt.block_on(async {
                let mut out = Vec::new();
                for r in readers.iter_mut() {
                    out.push(r.next_group().await.expect("group"));
                }
                out
            });
            b.iter(|| {
                w.push(frame.clone()).expect("no limit");
                rt.block_on(async {
                    for g in groups.iter_mut() {
                        std::hint::black_box(g.next_frame().await);
                    }
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bookkeeping, dispatch);
criterion_main!(benches);
