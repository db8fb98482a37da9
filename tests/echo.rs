//! One echo test body, run over every backend x transport (IPv4 and IPv6).
//!
//! Each test starts the real `server` binary on 127.0.0.1:0, [::1]:0 or a
//! temporary socket path, sends real bytes and checks every one. Test names
//! are `<backend>::<target>::<test>`, so `cargo test --test echo -- uring::`
//! runs one backend and `-- unixgram` one transport.

mod common;

use std::io::{self, Read, Write};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::client::{max_datagram, pattern, Dgram, Rng, Stream};
use common::{join_clients, ServerProc, Target, TempDir};

const CLIENTS: usize = 200;
const STREAM_MAX_MSG: usize = 256 * 1024;
/// Pool size for tests that need a free worker beside a stuck one (threadpool).
const WORKERS: &str = "4";

// ---------------------------------------------------------------- streams

/// 200 clients connect, wait for each other, then each echoes two messages of
/// random size (1 B to 256 KiB) with a pattern unique to the client.
fn stream_concurrent(backend: &str, target: Target) {
    let server = ServerProc::start(backend, target, &["--threads", WORKERS]);
    let endpoint = Arc::new(server.endpoint.clone());
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let handles: Vec<_> = (0..CLIENTS as u64)
        .map(|id| {
            let (endpoint, barrier) = (endpoint.clone(), barrier.clone());
            thread::spawn(move || -> Result<u64, String> {
                let mut rng = Rng::new(id + 1);
                let mut conn = Stream::connect(&endpoint).map_err(|e| format!("client {id}: connect: {e}"))?;
                barrier.wait();
                let mut offset = 0u64;
                for _ in 0..2 {
                    let len = rng.range(1, STREAM_MAX_MSG);
                    let msg = pattern(id, offset, len);
                    let back = conn.echo(&msg).map_err(|e| format!("client {id}: {len} B echo: {e}"))?;
                    if back != msg {
                        let at = back.iter().zip(&msg).position(|(a, b)| a != b).unwrap_or(0);
                        return Err(format!(
                            "client {id}: echo of {len} B differs at byte {}",
                            offset + at as u64
                        ));
                    }
                    offset += len as u64;
                }
                Ok(offset)
            })
        })
        .collect();
    let total = join_clients(handles, &format!("{backend}/{target:?}"));
    let stopped = server.stop();
    assert!(
        stopped.status.success(),
        "{backend}/{target:?}: exit {:?}",
        stopped.status
    );
    assert_eq!(
        stopped.count("accepted"),
        CLIENTS as u64,
        "{backend}/{target:?}: accepted count"
    );
    assert_eq!(
        stopped.count("bytes"),
        total,
        "{backend}/{target:?}: bytes echoed per the summary"
    );
}

/// A client sends, shuts down its write side, and must get every byte back
/// and then EOF.
fn stream_half_close(backend: &str, target: Target) {
    let server = ServerProc::start(backend, target, &[]);
    for (i, len) in [1usize, 1000, 300 * 1024].into_iter().enumerate() {
        let mut conn = Stream::connect(&server.endpoint).unwrap();
        let msg = pattern(i as u64, 0, len);
        let mut writer = conn.try_clone().unwrap();
        let to_send = msg.clone();
        let sender = thread::spawn(move || {
            writer.write_all(&to_send).unwrap();
            writer.shutdown_write().unwrap();
        });
        let back = conn
            .read_to_eof()
            .unwrap_or_else(|e| panic!("{backend}/{target:?}: read to EOF after half-close: {e}"));
        sender.join().unwrap();
        assert_eq!(
            back.len(),
            msg.len(),
            "{backend}/{target:?}: bytes back after half-close"
        );
        assert!(back == msg, "{backend}/{target:?}: half-close echo corrupted");
    }
    assert!(server.stop().status.success());
}

/// Clients that reset mid-message (or vanish with unread data) do not take
/// the server down or disturb a client that is being served at the time.
fn stream_reset(backend: &str, target: Target) {
    let server = ServerProc::start(backend, target, &["--threads", WORKERS]);
    let mut steady = Stream::connect(&server.endpoint).unwrap();
    for i in 0..20u64 {
        let mut bad = Stream::connect(&server.endpoint).unwrap();
        // Half a message, part of it echoed and unread, then an abortive close.
        bad.write_all(&pattern(1000 + i, 0, 64 * 1024)).unwrap();
        thread::sleep(Duration::from_millis(2));
        bad.reset();
        let msg = pattern(i, i * 4096, 4096);
        assert!(
            steady.echo(&msg).unwrap() == msg,
            "{backend}/{target:?}: steady client corrupted after reset {i}"
        );
    }
    let mut fresh = Stream::connect(&server.endpoint).unwrap();
    let msg = pattern(7, 0, 100_000);
    assert!(fresh.echo(&msg).unwrap() == msg);
    let mut server = server;
    assert!(server.alive(), "{backend}/{target:?}: server died after resets");
    assert!(server.stop().status.success());
}

/// Clients that hang up without reading their last echo are not server
/// errors: each is counted once in `closed_with_pending=`, and `errors=`
/// stays 0. Clients that read everything and close add to neither.
fn stream_close_with_echo_pending(backend: &str, target: Target) {
    const HANG_UP: usize = 20;
    // threadpool: a worker for every client, so each is served before it hangs up.
    let threads = if backend == "threadpool" { "32" } else { WORKERS };
    let server = ServerProc::start(backend, target, &["--threads", threads, "--max-conns", "64"]);
    for i in 0..10u64 {
        let mut polite = Stream::connect(&server.endpoint).unwrap();
        let msg = pattern(i, 0, 1000);
        assert!(polite.echo(&msg).unwrap() == msg);
    }
    let mut rude = Vec::new();
    for i in 0..HANG_UP as u64 {
        let mut c = Stream::connect(&server.endpoint).unwrap();
        c.write_all(&pattern(100 + i, 0, 1000)).unwrap();
        rude.push(c);
    }
    // Let every echo land unread in its client's receive buffer, then close:
    // a close with unread data resets the connection.
    thread::sleep(Duration::from_millis(300));
    drop(rude);
    // fork: each hang-up ends a child, so wait (bounded) until all have gone,
    // which on a busy machine takes longer than the sleep the others get.
    let deadline = Instant::now() + Duration::from_secs(10);
    thread::sleep(Duration::from_millis(300));
    while backend == "fork" && !sockbench::procfs::children(server.pid()).is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let stopped = server.stop();
    assert!(stopped.status.success());
    assert_eq!(
        stopped.count("errors"),
        0,
        "{backend}/{target:?}: hang-ups counted as errors: {:?}",
        stopped.summary
    );
    assert_eq!(
        stopped.count("closed_with_pending"),
        HANG_UP as u64,
        "{backend}/{target:?}: {:?}",
        stopped.summary
    );
}

/// A client that writes and never reads fills its buffers; another client is
/// still served, and the server's memory for the stuck one is bounded.
fn stream_never_reads(backend: &str, target: Target) {
    let server = ServerProc::start(backend, target, &["--threads", WORKERS]);
    let hog = Stream::connect(&server.endpoint).unwrap();
    // Write up to 64 MiB, until the kernel buffers and the server's cap are
    // full and writes stop getting through (a 1 s write timeout says so).
    hog.set_timeouts(Some(Duration::from_secs(1))).unwrap();
    let mut hog_writer = hog.try_clone().unwrap();
    let hog_thread = thread::spawn(move || {
        let chunk = pattern(99, 0, 64 * 1024);
        let mut sent = 0usize;
        while sent < 64 << 20 {
            match hog_writer.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        sent
    });
    thread::sleep(Duration::from_millis(300));
    let mut other = Stream::connect(&server.endpoint).unwrap();
    for i in 0..50u64 {
        let msg = pattern(i, i * 4096, 4096);
        let back = other
            .echo(&msg)
            .unwrap_or_else(|e| panic!("{backend}/{target:?}: client blocked by a non-reader: {e}"));
        assert!(back == msg);
    }
    let sent = hog_thread.join().unwrap();
    assert!(
        sent < 64 << 20,
        "{backend}/{target:?}: a client that never reads pushed {sent} bytes: no back-pressure"
    );
    let rss = rss_kib(server.pid());
    assert!(
        rss < 256 * 1024,
        "{backend}/{target:?}: server RSS {rss} KiB with one stuck client"
    );
    drop(hog);
    assert!(server.stop().status.success());
}

// ---------------------------------------------------------------- datagrams

/// 200 clients each echo three datagrams of random size (8 B to the largest
/// the transport carries), all at once; every byte is checked.
fn dgram_concurrent(backend: &str, target: Target) {
    let server = ServerProc::start(backend, target, &["--threads", WORKERS]);
    let endpoint = Arc::new(server.endpoint.clone());
    let dir = Arc::new(TempDir::new("dgram"));
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let deadline = Instant::now() + Duration::from_secs(60);
    let handles: Vec<_> = (0..CLIENTS as u64)
        .map(|id| {
            let (endpoint, dir, barrier) = (endpoint.clone(), dir.clone(), barrier.clone());
            thread::spawn(move || -> Result<(), String> {
                let mut rng = Rng::new(id + 77);
                let sock = Dgram::connect(&endpoint, &dir.0, id).map_err(|e| format!("client {id}: {e}"))?;
                barrier.wait();
                for seq in 0..3u64 {
                    let len = rng.range(8, max_datagram(target));
                    let mut msg = pattern(id, seq << 20, len);
                    msg[..4].copy_from_slice(&(id as u32).to_le_bytes());
                    msg[4..8].copy_from_slice(&(seq as u32).to_le_bytes());
                    let back = sock
                        .echo(&msg, deadline)
                        .map_err(|e| format!("client {id} seq {seq}: {e}"))?;
                    if back != msg {
                        return Err(format!(
                            "client {id} seq {seq}: {len} B datagram came back as {} B, or changed",
                            back.len()
                        ));
                    }
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join()
            .expect("client thread panicked")
            .unwrap_or_else(|e| panic!("{backend}/{target:?}: {e}"));
    }
    let stopped = server.stop();
    assert!(
        stopped.status.success(),
        "{backend}/{target:?}: exit {:?}",
        stopped.status
    );
    assert!(
        stopped.count("messages") >= 3 * CLIENTS as u64,
        "{backend}/{target:?}: messages per the summary"
    );
}

/// Zero-length and largest datagrams come back unchanged.
fn dgram_edge_sizes(backend: &str, target: Target) {
    let server = ServerProc::start(backend, target, &[]);
    let dir = TempDir::new("edge");
    let sock = Dgram::connect(&server.endpoint, &dir.0, 0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let max = max_datagram(target);
    for (i, len) in [0usize, 1, 8, 1500, max - 1, max].into_iter().enumerate() {
        let mut msg = pattern(i as u64, 0, len);
        if len >= 8 {
            msg[..8].copy_from_slice(&(i as u64).to_le_bytes());
        }
        let back = sock
            .echo(&msg, deadline)
            .unwrap_or_else(|e| panic!("{backend}/{target:?}: {len} B: {e}"));
        assert_eq!(
            back.len(),
            len,
            "{backend}/{target:?}: {len} B datagram came back as {} B",
            back.len()
        );
        assert!(back == msg, "{backend}/{target:?}: {len} B datagram changed");
    }
    assert!(server.stop().status.success());
}

/// Clients that send and vanish before the echo (their address is gone when
/// the server answers) do not disturb the server or the next client.
fn dgram_vanish(backend: &str, target: Target) {
    let server = ServerProc::start(backend, target, &[]);
    let dir = TempDir::new("vanish");
    for i in 0..50u64 {
        let sock = Dgram::connect(&server.endpoint, &dir.0, 1000 + i).unwrap();
        sock.send(&pattern(i, 0, 2000)).unwrap();
        drop(sock);
    }
    let sock = Dgram::connect(&server.endpoint, &dir.0, 1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    for seq in 0..20u64 {
        let mut msg = pattern(1, seq, 1000);
        msg[..8].copy_from_slice(&seq.to_le_bytes());
        assert!(sock.echo(&msg, deadline).unwrap() == msg);
    }
    let mut server = server;
    assert!(server.alive());
    assert!(server.stop().status.success());
}

/// A datagram client that floods and never reads does not stop the server
/// from answering another client.
fn dgram_never_reads(backend: &str, target: Target) {
    let server = ServerProc::start(backend, target, &["--threads", WORKERS]);
    let dir = TempDir::new("dgram-hog");
    let hog = Dgram::connect(&server.endpoint, &dir.0, 500).unwrap();
    let chunk = pattern(5, 0, 4096);
    let flood_until = Instant::now() + Duration::from_millis(500);
    let mut sent = 0;
    while Instant::now() < flood_until && sent < 20_000 {
        if hog.send(&chunk).is_ok() {
            sent += 1;
        }
    }
    let sock = Dgram::connect(&server.endpoint, &dir.0, 1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    for seq in 0..50u64 {
        let mut msg = pattern(2, seq, 512);
        msg[..8].copy_from_slice(&seq.to_le_bytes());
        let back = sock
            .echo(&msg, deadline)
            .unwrap_or_else(|e| panic!("{backend}/{target:?}: blocked by a flooder: {e}"));
        assert!(back == msg);
    }
    drop(hog);
    assert!(server.stop().status.success());
}

// ---------------------------------------------------------------- every transport

/// SIGTERM with clients connected (one idle, one mid-message): exit 0 within
/// 2 s, a summary line, and the socket file removed. The start and summary
/// lines name only what applies (see [`lines_name_what_applies`]).
fn sigterm_shutdown(backend: &str, target: Target) {
    let server = ServerProc::start(backend, target, &[]);
    let (listening, pid) = (server.listening.clone(), server.pid());
    let socket_file = matches!(target, Target::Unix | Target::Unixgram).then(|| server.path().to_path_buf());
    let _held: Vec<Stream> = if target.is_stream() {
        let idle = Stream::connect(&server.endpoint).unwrap();
        let mut busy = Stream::connect(&server.endpoint).unwrap();
        let msg = pattern(3, 0, 1000);
        assert!(busy.echo(&msg).unwrap() == msg);
        busy.write_all(&pattern(3, 1000, 500)).unwrap();
        vec![idle, busy]
    } else {
        let dir = TempDir::new("term");
        let sock = Dgram::connect(&server.endpoint, &dir.0, 1).unwrap();
        let msg = pattern(3, 0, 100);
        assert!(sock.echo(&msg, Instant::now() + Duration::from_secs(10)).unwrap() == msg);
        Vec::new()
    };
    let stopped = server.stop();
    assert!(
        stopped.status.success(),
        "{backend}/{target:?}: exit {:?}",
        stopped.status
    );
    assert!(
        stopped.elapsed < Duration::from_secs(2),
        "{backend}/{target:?}: stop took {:?}",
        stopped.elapsed
    );
    assert!(stopped.summary.is_some(), "{backend}/{target:?}: no summary line");
    lines_name_what_applies(backend, target, &listening, pid, stopped.summary.as_deref().unwrap());
    if let Some(path) = socket_file {
        assert!(
            !path.exists(),
            "{backend}/{target:?}: socket file {} left behind",
            path.display()
        );
    }
}

/// `listening` gives the server's pid (for `loadgen --server-pid`), and
/// `max_conns` only where there are connections to cap; the summary has
/// `ring_errors` only for uring, and `queued_max` only for threadpool's streams.
fn lines_name_what_applies(backend: &str, target: Target, listening: &str, pid: u32, summary: &str) {
    let what = format!("{backend}/{target:?}");
    assert_eq!(
        common::field(listening, "pid"),
        Some(pid.to_string().as_str()),
        "{what}: {listening}"
    );
    assert_eq!(
        common::field(listening, "max_conns").is_some(),
        target.is_stream(),
        "{what}: {listening}"
    );
    assert_eq!(
        common::field(summary, "ring_errors").is_some(),
        backend == "uring",
        "{what}: {summary}"
    );
    let queues = backend == "threadpool" && target.is_stream();
    assert_eq!(
        common::field(summary, "queued_max").is_some(),
        queues,
        "{what}: {summary}"
    );
}

/// Third-party clients work as they are: socat sends its stdin, shuts down
/// its write side at EOF, and prints everything that comes back.
fn socat_interop(backend: &str, target: Target) {
    let server = ServerProc::start(backend, target, &[]);
    let peer = match target {
        Target::Tcp4 | Target::Tcp6 => format!("TCP:{}", server.inet()),
        Target::Unix => format!("UNIX-CONNECT:{}", server.path().display()),
        Target::Udp4 | Target::Udp6 => format!("UDP:{}", server.inet()),
        Target::Unixgram => format!("UNIX-SENDTO:{}", server.path().display()),
    };
    let dir = TempDir::new("socat");
    let mut cmd = std::process::Command::new("socat");
    cmd.arg("-t2");
    if target == Target::Unixgram {
        // The server can only answer a named sender.
        cmd.args(["-", &format!("{peer},bind={}", dir.path("socat.sock").display())]);
    } else {
        cmd.args(["-", &peer]);
    }
    let input: Vec<u8> = if target.is_stream() {
        pattern(11, 0, 200_000)
    } else {
        b"hello datagram\n".to_vec()
    };
    let out = run_with_stdin(cmd, &input).unwrap_or_else(|e| panic!("socat is needed (installed by .ci/run): {e}"));
    assert!(
        out == input,
        "{backend}/{target:?}: socat got {} B back of {}",
        out.len(),
        input.len()
    );
    assert!(server.stop().status.success());
}

/// ncat too: it shuts down its write side at stdin EOF and exits at the server's EOF.
fn ncat_interop(backend: &str, target: Target) {
    let server = ServerProc::start(backend, target, &[]);
    let mut cmd = std::process::Command::new("ncat");
    match target {
        Target::Unix => {
            cmd.args(["-U"]).arg(server.path());
        }
        _ => {
            let a = server.inet();
            cmd.args([a.ip().to_string(), a.port().to_string()]);
        }
    }
    let input = pattern(12, 0, 100_000);
    let out = run_with_stdin(cmd, &input).unwrap_or_else(|e| panic!("ncat is needed (installed by .ci/run): {e}"));
    assert!(
        out == input,
        "{backend}/{target:?}: ncat got {} B back of {}",
        out.len(),
        input.len()
    );
    assert!(server.stop().status.success());
}

// ---------------------------------------------------------------- helpers

/// Runs `cmd` with `input` on stdin and returns its stdout; killed after 20 s.
fn run_with_stdin(mut cmd: std::process::Command, input: &[u8]) -> io::Result<Vec<u8>> {
    use std::process::Stdio;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    let start = Instant::now();
    while child.try_wait()?.is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.wait();
    writer.join().unwrap();
    Ok(reader.join().unwrap())
}

/// Resident set size of a process in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------- the matrix

macro_rules! stream_tests {
    ($backend:expr, $target:expr) => {
        #[test]
        fn concurrent_clients() {
            super::stream_concurrent($backend, $target)
        }
        #[test]
        fn half_close() {
            super::stream_half_close($backend, $target)
        }
        #[test]
        fn reset_mid_stream() {
            super::stream_reset($backend, $target)
        }
        #[test]
        fn never_reads() {
            super::stream_never_reads($backend, $target)
        }
        #[test]
        fn close_with_echo_pending() {
            super::stream_close_with_echo_pending($backend, $target)
        }
        #[test]
        fn sigterm_shutdown() {
            super::sigterm_shutdown($backend, $target)
        }
        #[test]
        fn socat_interop() {
            super::socat_interop($backend, $target)
        }
        #[test]
        fn ncat_interop() {
            super::ncat_interop($backend, $target)
        }
    };
}

macro_rules! dgram_tests {
    ($backend:expr, $target:expr) => {
        #[test]
        fn concurrent_clients() {
            super::dgram_concurrent($backend, $target)
        }
        #[test]
        fn edge_sizes() {
            super::dgram_edge_sizes($backend, $target)
        }
        #[test]
        fn vanished_sender() {
            super::dgram_vanish($backend, $target)
        }
        #[test]
        fn never_reads() {
            super::dgram_never_reads($backend, $target)
        }
        #[test]
        fn sigterm_shutdown() {
            super::sigterm_shutdown($backend, $target)
        }
        #[test]
        fn socat_interop() {
            super::socat_interop($backend, $target)
        }
    };
}

macro_rules! backend_matrix {
    ($($backend:ident),* $(,)?) => {$(
        mod $backend {
            use super::*;
            const B: &str = stringify!($backend);
            mod tcp4 { use super::*; stream_tests!(B, Target::Tcp4); }
            mod tcp6 { use super::*; stream_tests!(B, Target::Tcp6); }
            mod unix { use super::*; stream_tests!(B, Target::Unix); }
            mod udp4 { use super::*; dgram_tests!(B, Target::Udp4); }
            mod udp6 { use super::*; dgram_tests!(B, Target::Udp6); }
            mod unixgram { use super::*; dgram_tests!(B, Target::Unixgram); }
        }
    )*};
}

backend_matrix!(fork, threadpool, epoll, uring);

/// fork only: 500 connections, one after another, leave no zombie behind.
mod fork_processes {
    use super::*;

    #[test]
    fn no_zombies_after_500_connections() {
        let server = ServerProc::start("fork", Target::Tcp4, &[]);
        for i in 0..500u64 {
            let mut conn = Stream::connect(&server.endpoint).unwrap();
            let msg = pattern(i, 0, 100);
            assert!(conn.echo(&msg).unwrap() == msg, "connection {i}");
        }
        // Children exit when their client closes; the parent must reap each one.
        let deadline = Instant::now() + Duration::from_secs(3);
        let (mut live, mut zombies) = children_of(server.pid());
        while (live > 0 || zombies > 0) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
            (live, zombies) = children_of(server.pid());
        }
        assert_eq!(zombies, 0, "zombie children of the fork server after 500 connections");
        assert_eq!(live, 0, "children still running after their clients closed");
        let stopped = server.stop();
        assert!(stopped.status.success());
        assert_eq!(stopped.count("accepted"), 500);
    }

    /// (running, zombie) child processes of `pid`.
    fn children_of(pid: u32) -> (usize, usize) {
        let mut kids = Vec::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            kids.extend(list.split_whitespace().map(str::to_owned));
        }
        let zombies = kids
            .iter()
            .filter(|k| {
                let stat = std::fs::read_to_string(format!("/proc/{k}/stat")).unwrap_or_default();
                stat.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().starts_with('Z'))
                    .unwrap_or(false)
            })
            .count();
        (kids.len() - zombies, zombies)
    }
}
