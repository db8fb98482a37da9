//! loadgen's per-message path, one stage at a time: filling the payload into
//! a send buffer, taking an echo from the receive ring and checking it,
//! recording the latency, and keeping the timeouts. Their sum is loadgen's
//! own user-space CPU per message, to set against a server's (the kernel's
//! share, a `send` and a receive per echo, is the same on both sides).
//!
//! `cargo bench -p loadgen --bench hotpath` (`-- --quick` for a short run).
//! Stages that depend on how many connections a thread holds use 10,000,
//! the largest count the targets in docs/loadgen.md ("Hot path") name.

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use loadgen::pattern;

#[path = "support/old_pattern.rs"]
mod old_pattern;
use loadgen::stats::{self, Msg, Recorder};
use loadgen::worker::send_bufs::SendBufs;
use loadgen::worker::timers::Timers;

/// Connections one thread holds in the per-connection stages.
const CONNS: usize = 10_000;
/// The message size of the targets in docs/loadgen.md ("Hot path").
const SIZE: usize = 128;
/// The io_uring receive ring: buffers and their size (worker/ring.rs).
const RING_BUFS: usize = 4096;
const RING_BUF_SIZE: usize = 4096;
/// Sends in flight at once in the send-buffer stage.
const IN_FLIGHT: usize = 64;

/// A spread of latencies from ~10 µs to ~10 ms.
fn next_latency(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    10_000 + (*state >> 40) % 10_000_000
}

fn histogram(c: &mut Criterion) {
    let mut g = c.benchmark_group("loadgen/histogram");
    g.throughput(Throughput::Elements(1));
    let mut h = stats::new_histogram();
    let mut ns = 12_345u64;
    g.bench_function("record", |b| {
        b.iter(|| stats::record_ns(&mut h, black_box(next_latency(&mut ns))))
    });
    // What every echoed message costs the recorder inside the measured window.
    let mut rec = Recorder::new(SIZE, false); // open loop: two histograms, as before
    rec.measure_start = 0;
    rec.end = u64::MAX;
    let mut now = 1_000_000u64;
    g.bench_function("complete_in_window", |b| {
        b.iter(|| {
            now += 1000;
            let lat = next_latency(&mut ns);
            let m = Msg {
                intended: now - lat,
                sent: now - lat / 2,
            };
            rec.complete(black_box(m), now, true);
        })
    });
    g.finish();
}

fn payload(c: &mut Criterion) {
    for size in [SIZE, 4096] {
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
        // The pattern before the Weyl sequence, for a back-to-back comparison.
        g.bench_function("fill_old", |b| {
            b.iter(|| {
                seq += 1;
                old_pattern::fill(black_box(7), seq, 0, &mut buf);
            })
        });
        old_pattern::fill(7, 99, 0, &mut buf);
        g.bench_function("check_old", |b| {
            b.iter(|| assert!(old_pattern::check(black_box(7), 99, 0, black_box(&buf))))
        });
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
                let mut checker = pattern::StreamChecker::new(7, size);
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

/// Taking one 128-byte echo from the io_uring receive ring: the kernel puts
/// consecutive receives in consecutive buffers of the ring, so they walk
/// through 16 MiB. Either copied out into the thread's 64 KiB buffer and
/// checked there, or checked where it lies.
fn receive(c: &mut Criterion) {
    let mut g = c.benchmark_group("loadgen/receive/128B");
    g.throughput(Throughput::Elements(1));
    let mut ring = vec![0u8; RING_BUFS * RING_BUF_SIZE];
    for (i, slot) in ring.chunks_mut(RING_BUF_SIZE).enumerate() {
        pattern::fill(7, i as u64, 0, &mut slot[..SIZE]);
    }
    let mut scratch = vec![0u8; 64 * 1024];
    let mut checker = pattern::StreamChecker::new(7, SIZE);
    let mut bid = 0usize;
    g.bench_function("copy_then_check", |b| {
        b.iter(|| {
            if bid == RING_BUFS {
                bid = 0;
                checker = pattern::StreamChecker::new(7, SIZE);
            }
            let slot = &ring[bid * RING_BUF_SIZE..][..SIZE];
            scratch[..SIZE].copy_from_slice(slot);
            checker.feed(black_box(&scratch[..SIZE]), |_, ok| assert!(ok));
            bid += 1;
        })
    });
    let mut checker = pattern::StreamChecker::new(7, SIZE);
    let mut bid = 0usize;
    g.bench_function("check_in_place", |b| {
        b.iter(|| {
            if bid == RING_BUFS {
                bid = 0;
                checker = pattern::StreamChecker::new(7, SIZE);
            }
            let slot = &ring[bid * RING_BUF_SIZE..][..SIZE];
            checker.feed(black_box(slot), |_, ok| assert!(ok));
            bid += 1;
        })
    });
    g.finish();
}

/// Filling one 128-byte message into the send buffer of the next of 10,000
/// connections (round robin, as echoes come back): a 4 KiB buffer each, so
/// that every send touches its own page; slots carved from one slab; or a
/// buffer per send in flight (`worker/send_bufs.rs`).
fn send_buffers(c: &mut Criterion) {
    let mut g = c.benchmark_group("loadgen/send_buffer/128B");
    g.throughput(Throughput::Elements(1));
    let mut vecs: Vec<Vec<u8>> = (0..CONNS).map(|_| vec![0u8; 4096]).collect();
    let (mut k, mut seq) = (0usize, 0u64);
    g.bench_function("page_per_conn", |b| {
        b.iter(|| {
            k = (k + 1) % CONNS;
            seq += 1;
            pattern::fill(k as u32, seq, 0, &mut vecs[k][..SIZE]);
            black_box(vecs[k].as_ptr());
        })
    });
    let mut slab = vec![0u8; CONNS * SIZE];
    g.bench_function("slab_slot", |b| {
        b.iter(|| {
            k = (k + 1) % CONNS;
            seq += 1;
            pattern::fill(k as u32, seq, 0, &mut slab[k * SIZE..][..SIZE]);
            black_box(slab.as_ptr());
        })
    });
    // The worker's way now: a buffer per send in flight, the last freed taken
    // next. Here 64 sends are in flight, each completing 64 sends later.
    let mut bufs = SendBufs::new(CONNS, SIZE);
    let mut flying: VecDeque<usize> = VecDeque::with_capacity(IN_FLIGHT);
    g.bench_function("pooled_last_freed", |b| {
        b.iter(|| {
            if flying.len() == IN_FLIGHT {
                bufs.release(flying.pop_front().unwrap());
            }
            k = (k + 1) % CONNS;
            seq += 1;
            let out = bufs.take(k);
            pattern::fill(k as u32, seq, 0, &mut out[..SIZE]);
            black_box(out.as_ptr());
            flying.push_back(k);
        })
    });
    g.finish();
}

/// A model of one stream connection as the timeout sweep sees it: its
/// checker position, what it sent, and its queue of outstanding messages,
/// padded to the size of the worker's `Conn<Stream>` (about 150 bytes).
struct SweptConn {
    recv_seq: u64,
    send_seq: u64,
    timed_out_seq: u64,
    queue: VecDeque<Msg>,
    _rest: [u64; 11],
}

/// Timeouts. The sweep loadgen had: every 20 ms, a visit to each of 10,000
/// connections, each with one message in flight that is not overdue. Its
/// cost per message is this figure times 50 a second, divided by the
/// thread's messages a second. Then the timer heap that replaced it.
fn timeouts(c: &mut Criterion) {
    let mut g = c.benchmark_group("loadgen/timeouts");
    g.throughput(Throughput::Elements(CONNS as u64));
    let timeout = 1_000_000_000u64;
    let mut conns: Vec<SweptConn> = (0..CONNS)
        .map(|i| SweptConn {
            recv_seq: i as u64,
            send_seq: i as u64 + 1,
            timed_out_seq: i as u64,
            queue: VecDeque::from([Msg { intended: 10, sent: 10 }]),
            _rest: [0; 11],
        })
        .collect();
    g.bench_function("sweep_10k_conns", |b| {
        b.iter_batched_ref(
            || (),
            |_| {
                let mut timed_out = 0u64;
                for c in conns.iter_mut() {
                    c.timed_out_seq = c.timed_out_seq.max(c.recv_seq);
                    while c.timed_out_seq < c.send_seq {
                        let m = c.queue[(c.timed_out_seq - c.recv_seq) as usize];
                        if m.sent + timeout > black_box(1000) {
                            break;
                        }
                        c.timed_out_seq += 1;
                        timed_out += 1;
                    }
                }
                black_box(timed_out)
            },
            BatchSize::SmallInput,
        )
    });
    // What replaced the sweep (worker/timers.rs). Per message: arming a
    // connection whose entry is already waiting, a flag test.
    g.throughput(Throughput::Elements(1));
    let mut timers = Timers::new(CONNS);
    for k in 0..CONNS {
        timers.arm(k, timeout + k as u64);
    }
    let mut k = 0usize;
    g.bench_function("timers_arm_already_armed", |b| {
        b.iter(|| {
            k = (k + 1) % CONNS;
            timers.arm(black_box(k), 5);
        })
    });
    // About once per --timeout per connection: its entry comes due, and the
    // connection is armed again for its next deadline, in a heap of 10,000.
    let mut now = timeout;
    g.bench_function("timers_due_and_rearm_10k", |b| {
        b.iter(|| {
            now += 1;
            let k = timers.pop_due(u64::MAX).expect("an entry is waiting");
            timers.rearm(k, now + timeout + k as u64);
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = histogram, payload, receive, send_buffers, timeouts
}
criterion_main!(benches);
