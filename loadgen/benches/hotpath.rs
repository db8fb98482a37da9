//! loadgen's per-message hot paths: recording a latency, filling and checking
//! the payload pattern, encoding and checking a datagram. Their sum is
//! loadgen's own CPU cost per message, to set against a server's.
//!
//! `cargo bench -p loadgen --bench hotpath` (or `cargo bench -- loadgen`).

use std::hint::black_box;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use loadgen::{pattern, stats};

fn histogram(c: &mut Criterion) {
    let mut g = c.benchmark_group("loadgen/histogram");
    g.throughput(Throughput::Elements(1));
    let mut h = stats::new_histogram();
    let mut ns = 12_345u64;
    g.bench_function("record", |b| {
        b.iter(|| {
            // A spread of latencies from ~10 µs to ~10 ms.
            ns = ns.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            stats::record_ns(&mut h, black_box(10_000 + (ns >> 40) % 10_000_000));
        })
    });
    g.finish();
}

fn payload(c: &mut Criterion) {
    for size in [128usize, 4096] {
        let mut g = c.benchmark_group(format!("loadgen/pattern/{size}B"));
        g.throughput(Throughput::Bytes(size as u64));
        let mut buf = vec![0u8; size];
        let mut seq = 0u64;
        g.bench_function("fill", |b| {
            b.iter(|| {
                seq += 1;
                pattern::fill(black_box(7), seq, 0, &mut buf);
            })
        });
        pattern::fill(7, 99, 0, &mut buf);
        g.bench_function("check", |b| {
            b.iter(|| assert!(pattern::check(black_box(7), 99, 0, black_box(&buf))))
        });
        let mut checker = pattern::StreamChecker::new(7, size);
        let stream: Vec<u8> = (0..64u64)
            .flat_map(|s| {
                let mut m = vec![0u8; size];
                pattern::fill(7, s, 0, &mut m);
                m
            })
            .collect();
        g.throughput(Throughput::Bytes(stream.len() as u64));
        g.bench_function("stream_check_64_msgs", |b| {
            b.iter(|| {
                checker = pattern::StreamChecker::new(7, size);
                let mut ok = 0;
                checker.feed(black_box(&stream), |_, intact| ok += intact as u32);
                assert_eq!(ok, 64);
            })
        });
        g.throughput(Throughput::Elements(1));
        let mut dgram = vec![0u8; size];
        g.bench_function("datagram_encode_decode", |b| {
            b.iter(|| {
                seq += 1;
                pattern::encode_datagram(3, seq, &mut dgram);
                black_box(pattern::decode_datagram(&dgram, size).unwrap());
            })
        });
        g.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = histogram, payload
}
criterion_main!(benches);
