//! Criterion benchmarks of the server backends, driven from outside as a
//! client would: each group starts `server` once, as a separate process pinned
//! to CPU 0, and this process (the client) pins itself to CPU 1. Forking
//! inside a multi-threaded bench process would not be safe, and a separate
//! process is what users run anyway.
//!
//! - `roundtrip/<backend>/<transport>/<size>`: a **latency**. One
//!   connection, one message in flight: the time of one echo (send, the
//!   server's turn, receive), 128 B and 4 KiB, for tcp, udp and unix.
//!   Criterion reports it as time per iteration, which is time per echo;
//!   there is deliberately no bytes-per-second figure, because at one
//!   message in flight that would only be the size divided by the latency.
//! - `throughput/<backend>/tcp`: a **rate**, in messages per second
//!   (`Throughput::Elements`; criterion's "elem/s"). 64 connections, and on
//!   each 16 messages of 128 B are written back to back (pipelined) before
//!   any echo is read: 1,024 messages in flight per iteration. The depth of
//!   16 keeps every connection's socket busy while the client is writing to
//!   the others, so the figure is the server's capacity for many busy
//!   connections, not one round trip's latency times 64; it is not
//!   comparable with loadgen's closed loop, which keeps one message in
//!   flight per connection unless `--depth` says otherwise. threadpool gets
//!   one worker per connection (it serves one connection per worker), the
//!   others one thread.
//!
//! (`fill_old`/`check_old` are not here: they are in loadgen's
//! `benches/hotpath.rs`, the payload pattern before the Weyl sequence, kept
//! for a back-to-back comparison with `fill`/`check`.)
//!
//! Filter by backend: `cargo bench --bench echo -- uring`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{ServerProc, Target, BACKENDS};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const SIZES: [usize; 2] = [128, 4096];
const SERVER_CPU: &str = "0";
const CLIENT_CPU: usize = 1;
const THROUGHPUT_CONNS: usize = 64;
const THROUGHPUT_DEPTH: usize = 16;
const THROUGHPUT_SIZE: usize = 128;

/// Starts a server for a bench group, or says why the group is skipped.
fn start(backend: &str, target: Target, threads: usize) -> Option<ServerProc> {
    let threads = threads.to_string();
    match ServerProc::try_start(backend, target, &["--threads", &threads, "--pin", SERVER_CPU]) {
        Ok(server) => Some(server),
        Err(e) => {
            eprintln!("skipped: {backend} {target:?}: {e}");
            None
        }
    }
}

/// One blocking client connection of any bench transport.
enum Client {
    Tcp(TcpStream),
    Unix(UnixStream),
    Udp(UdpSocket),
}

impl Client {
    fn connect(server: &ServerProc, target: Target) -> Client {
        let timeout = Some(Duration::from_secs(2));
        match target {
            Target::Tcp4 => {
                let s = TcpStream::connect(server.inet()).expect("connect tcp");
                s.set_nodelay(true).unwrap();
                s.set_read_timeout(timeout).unwrap();
                Client::Tcp(s)
            }
            Target::Unix => {
                let s = UnixStream::connect(server.path()).expect("connect unix");
                s.set_read_timeout(timeout).unwrap();
                Client::Unix(s)
            }
            Target::Udp4 => {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                s.connect(server.inet()).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
                Client::Udp(s)
            }
            other => unreachable!("no bench for {other:?}"),
        }
    }

    /// Sends `msg` and waits for its whole echo in `buf`.
    fn round_trip(&mut self, msg: &[u8], buf: &mut [u8]) {
        match self {
            Client::Tcp(s) => {
                s.write_all(msg).unwrap();
                s.read_exact(&mut buf[..msg.len()]).unwrap();
            }
            Client::Unix(s) => {
                s.write_all(msg).unwrap();
                s.read_exact(&mut buf[..msg.len()]).unwrap();
            }
            Client::Udp(s) => {
                // Loopback does not drop at depth 1, but a lost datagram must
                // not hang the bench: resend a bounded number of times.
                for _ in 0..10 {
                    s.send(msg).unwrap();
                    if let Ok(n) = s.recv(buf) {
                        assert_eq!(n, msg.len());
                        return;
                    }
                }
                panic!("udp echo lost 10 times in a row");
            }
        }
        assert_eq!(&buf[..msg.len()], msg);
    }
}

fn roundtrip(c: &mut Criterion) {
    common::pin_to(CLIENT_CPU);
    for backend in BACKENDS {
        for target in [Target::Tcp4, Target::Udp4, Target::Unix] {
            let Some(server) = start(backend, target, 1) else {
                continue;
            };
            let transport = target.transport().name();
            let mut group = c.benchmark_group(format!("roundtrip/{backend}/{transport}"));
            let mut client = Client::connect(&server, target);
            let mut buf = vec![0u8; 65536];
            for size in SIZES {
                let msg: Vec<u8> = (0..size).map(|i| (i * 7 + 3) as u8).collect();
                // No `group.throughput`: the figure is the time per echo.
                group.bench_with_input(BenchmarkId::from_parameter(size), &msg, |b, msg| {
                    b.iter(|| client.round_trip(msg, &mut buf))
                });
            }
            group.finish();
            drop(client);
            server.stop();
        }
    }
}

fn throughput(c: &mut Criterion) {
    common::pin_to(CLIENT_CPU);
    let batch: Vec<u8> = (0..THROUGHPUT_SIZE * THROUGHPUT_DEPTH)
        .map(|i| (i * 13 + 1) as u8)
        .collect();
    for backend in BACKENDS {
        // threadpool serves one connection per worker: give it one per connection.
        let threads = if backend == "threadpool" { THROUGHPUT_CONNS } else { 1 };
        let Some(server) = start(backend, Target::Tcp4, threads) else {
            continue;
        };
        let mut conns: Vec<TcpStream> = (0..THROUGHPUT_CONNS)
            .map(|_| {
                let s = TcpStream::connect(server.inet()).expect("connect");
                s.set_nodelay(true).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                s
            })
            .collect();
        let mut buf = vec![0u8; batch.len()];
        let mut group = c.benchmark_group(format!("throughput/{backend}"));
        group.throughput(Throughput::Elements((THROUGHPUT_CONNS * THROUGHPUT_DEPTH) as u64));
        group.bench_function("tcp", |b| {
            b.iter(|| {
                // Every connection gets its 16 messages before any echo is read,
                // so the server sees 64 connections busy at once.
                for conn in conns.iter_mut() {
                    conn.write_all(&batch).unwrap();
                }
                for conn in conns.iter_mut() {
                    conn.read_exact(&mut buf).unwrap();
                    assert_eq!(buf, batch);
                }
            })
        });
        group.finish();
        drop(conns);
        server.stop();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = roundtrip, throughput
}
criterion_main!(benches);
