//! The reliability suite: hostile clients and faults against every backend,
//! checking that the server keeps serving, stays bounded and loses nothing.
//!
//! The tests in this file run one at a time (`HEAVY`): several open
//! thousands of descriptors, which the test process's `ulimit -n` (20,000 in
//! CI) could not hold twice. Where a backend cannot hold a test's full load
//! by design, the load is scaled down and the test says so.

mod common;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::client::{pattern, Dgram, Rng, Stream};
use common::{server_bin, ServerProc, Target, TempDir};
use sockbench::procfs;

static HEAVY: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Echoes `rounds` 1 KiB messages on a new connection, checking each.
fn check_echo(endpoint: &common::Endpoint, id: u64, rounds: u64) -> Result<(), String> {
    let mut conn = Stream::connect(endpoint).map_err(|e| format!("client {id}: connect: {e}"))?;
    for r in 0..rounds {
        let msg = pattern(id, r * 1024, 1024);
        let back = conn.echo(&msg).map_err(|e| format!("client {id}: round {r}: {e}"))?;
        if back != msg {
            return Err(format!("client {id}: round {r}: echo corrupted"));
        }
    }
    Ok(())
}

/// `n` clients doing `check_echo` at once; panics with the first failure.
fn active_clients(endpoint: &common::Endpoint, n: u64, rounds: u64, what: &str) {
    let endpoint = Arc::new(endpoint.clone());
    let handles: Vec<_> = (0..n)
        .map(|id| {
            let endpoint = endpoint.clone();
            thread::spawn(move || check_echo(&endpoint, id, rounds))
        })
        .collect();
    for h in handles {
        h.join().unwrap().unwrap_or_else(|e| panic!("{what}: {e}"));
    }
}

// ---------------------------------------------------------------- slowloris

/// Idle connections, one in ten holding half a message, while 100 active
/// clients are served. epoll and uring hold 10,000 idle connections; fork
/// holds 1,000 (a process each, on a 2-core machine); threadpool dedicates a
/// worker to each connection by design, so it gets 64 workers and 48 idle
/// connections, leaving 16 workers for the active clients.
fn slowloris(backend: &str) {
    let _heavy = one_at_a_time();
    let (idle, threads) = match backend {
        "fork" => (1_000, "2"),
        "threadpool" => (48, "64"),
        _ => (10_000, "2"),
    };
    let server = ServerProc::start(backend, Target::Tcp4, &["--threads", threads]);
    let mut held = Vec::with_capacity(idle);
    for i in 0..idle {
        let mut conn =
            Stream::connect(&server.endpoint).unwrap_or_else(|e| panic!("{backend}: idle connection {i}: {e}"));
        if i % 10 == 0 {
            conn.write_all(&pattern(i as u64, 0, 50)).unwrap(); // half of a 100 B message
        }
        held.push(conn);
    }
    active_clients(
        &server.endpoint,
        100,
        20,
        &format!("{backend} with {idle} idle connections"),
    );
    let mut server = server;
    assert!(server.alive(), "{backend}: server died under {idle} idle connections");
    drop(held);
    let stopped = server.stop();
    assert!(stopped.status.success());
    assert_eq!(stopped.count("accepted"), idle as u64 + 100);
}

// ---------------------------------------------------------------- never reads

/// A client sends up to 64 MiB and never reads. The server's memory stays
/// bounded by its per-connection cap and 10 other clients are served meanwhile.
fn never_reads_64mib(backend: &str) {
    let _heavy = one_at_a_time();
    let server = ServerProc::start(backend, Target::Tcp4, &["--threads", "4"]);
    check_echo(&server.endpoint, 0, 1).unwrap();
    let rss_before = procfs::tree_rss_kib(server.pid());
    let hog = Stream::connect(&server.endpoint).unwrap();
    hog.set_timeouts(Some(Duration::from_secs(1))).unwrap();
    let mut writer = hog.try_clone().unwrap();
    let hog_thread = thread::spawn(move || {
        let chunk = pattern(1, 0, 256 * 1024);
        let mut sent = 0usize;
        while sent < 64 << 20 {
            match writer.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break, // no progress for 1 s: the server has stopped reading
            }
        }
        sent
    });
    thread::sleep(Duration::from_millis(500));
    active_clients(
        &server.endpoint,
        10,
        20,
        &format!("{backend} beside a client that never reads"),
    );
    let sent = hog_thread.join().unwrap();
    let rss_after = procfs::tree_rss_kib(server.pid());
    assert!(
        sent < 64 << 20,
        "{backend}: the server took all 64 MiB from a client that never reads"
    );
    let growth = rss_after.saturating_sub(rss_before);
    assert!(
        growth < 32 * 1024,
        "{backend}: server memory grew {growth} KiB for one stuck client (sent {sent} B)"
    );
    drop(hog);
    assert!(server.stop().status.success());
}

/// Many clients each send up to 2 MiB without reading (as much as the
/// kernel takes), so the server pauses every one of them at its
/// pending-output cap; then they all read back what they sent. Every byte must
/// come back: a connection paused while a send was completing must be resumed,
/// not left unread forever. (The uring race this guards against, a send
/// completing while the receive cancel is in flight, is timing-dependent:
/// this exact sequence does not always hit it.)
fn stop_reading_then_drain(backend: &str) {
    const CLIENTS: u64 = 100;
    const EACH: usize = 2 << 20;
    let _heavy = one_at_a_time();
    // threadpool serves one connection per worker; the others use one thread,
    // where every paused connection shares one event loop.
    let threads = if backend == "threadpool" { "128" } else { "1" };
    let server = ServerProc::start(backend, Target::Tcp4, &["--threads", threads]);
    // One client after another, as fast as the kernel takes the bytes: the
    // server's sends complete while its receive cancels are still in flight.
    let mut conns: Vec<Stream> = (0..CLIENTS)
        .map(|id| Stream::connect(&server.endpoint).unwrap_or_else(|e| panic!("client {id}: connect: {e}")))
        .collect();
    let mut sent = Vec::new();
    for (id, conn) in conns.iter_mut().enumerate() {
        conn.set_timeouts(Some(Duration::from_millis(1))).unwrap();
        let data = pattern(id as u64, 0, EACH);
        let mut n = 0;
        while n < EACH {
            match conn.write(&data[n..]) {
                Ok(k) => n += k,
                Err(_) => break, // the kernel takes no more: the server has paused us
            }
        }
        sent.push(n);
    }
    thread::sleep(Duration::from_secs(1));
    let mut failures = Vec::new();
    for (id, conn) in conns.iter_mut().enumerate() {
        conn.set_timeouts(Some(Duration::from_secs(2))).unwrap();
        let mut back = vec![0u8; sent[id]];
        match std::io::Read::read_exact(conn, &mut back) {
            Err(e) => failures.push(format!("client {id}: reading back {} B: {e} (stalled)", sent[id])),
            Ok(()) if back != pattern(id as u64, 0, sent[id]) => failures.push(format!("client {id}: echo corrupted")),
            Ok(()) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{backend}: {} of {CLIENTS} clients failed: {failures:?}",
        failures.len()
    );
    check_echo(&server.endpoint, 999, 5).unwrap();
    assert!(server.stop().status.success());
}

// ---------------------------------------------------------------- out of descriptors

/// The server runs with `ulimit -n 256` and 1,000 clients connect. It must not
/// crash or spin, must keep serving the client it already has, and must accept
/// again once descriptors free up. The fork parent holds no connection
/// descriptors, so for fork the same squeeze comes from `--max-conns 200`.
/// epoll and threadpool get 100 ballast descriptors, or they would fit
/// `--max-conns` to the limit and stop at their cap before running out;
/// uring's connections are slots of a fixed file table sized to the limit,
/// which the flood fills instead (`ENFILE`).
fn out_of_descriptors(backend: &str) {
    let ballast = if matches!(backend, "epoll" | "threadpool") {
        100
    } else {
        0
    };
    out_of_descriptors_with(backend, &[], ballast)
}

/// As `out_of_descriptors`, with `extra` flags, and `ballast` descriptors
/// (fds 100 and up, on /dev/null) that the server inherits without knowing:
/// it fits `--max-conns` to `ulimit -n` as if they were free, so it really
/// runs out of descriptors (`EMFILE`) below its cap, which is checked.
fn out_of_descriptors_with(backend: &str, extra: &[&str], ballast: i32) {
    let _heavy = one_at_a_time();
    let mut cmd = Command::new(server_bin());
    cmd.args([
        "--backend",
        backend,
        "--transport",
        "tcp",
        "--addr",
        "127.0.0.1:0",
        "--threads",
        "4",
    ]);
    if backend == "fork" {
        cmd.args(["--max-conns", "200"]);
    }
    cmd.args(extra);
    // SAFETY: setrlimit and dup2 are async-signal-safe; the closure touches
    // nothing else. Stdin (fd 0) is already /dev/null when it runs.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: 256,
                rlim_max: 256,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            for fd in 100..100 + ballast {
                // dup2 leaves the copy without FD_CLOEXEC: the server inherits it.
                if libc::dup2(0, fd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let server = ServerProc::spawn(cmd, None).unwrap_or_else(|e| panic!("{backend}: {e}"));
    let mut existing = Stream::connect(&server.endpoint).unwrap();
    let first = pattern(1, 0, 1000);
    assert!(existing.echo(&first).unwrap() == first);

    let mut flood = Vec::with_capacity(1000);
    for i in 0..1000u64 {
        // Connects complete in the kernel's backlog even when the server cannot accept.
        match Stream::connect(&server.endpoint) {
            Ok(mut c) => {
                let _ = c.write_all(&pattern(i, 0, 10));
                flood.push(c);
            }
            Err(e) => panic!("{backend}: flood connection {i}: {e}"),
        }
    }
    thread::sleep(Duration::from_millis(500));
    if ballast > 0 {
        // The fullest descriptor table: epoll's workers each have their own.
        let fds = std::fs::read_dir(format!("/proc/{}/task", server.pid()))
            .unwrap()
            .flatten()
            .filter_map(|task| std::fs::read_dir(task.path().join("fd")).ok())
            .map(|table| table.count())
            .max()
            .unwrap_or(0);
        assert!(
            fds >= 250,
            "{backend} {extra:?}: the flood did not use up the descriptors ({fds} of 256 open)"
        );
    }
    let cpu_before = procfs::tree_cpu_us(server.pid()).unwrap();
    let window = Instant::now();
    thread::sleep(Duration::from_secs(2));
    let cpu_us = procfs::tree_cpu_us(server.pid()).unwrap() - cpu_before;
    let wall_us = window.elapsed().as_micros() as u64;
    assert!(
        cpu_us * 4 < wall_us,
        "{backend}: busy while out of descriptors: {cpu_us} µs CPU in {wall_us} µs"
    );

    for i in 0..20u64 {
        let msg = pattern(1, 1000 + i * 100, 100);
        let back = existing
            .echo(&msg)
            .unwrap_or_else(|e| panic!("{backend}: existing client not served: {e}"));
        assert!(back == msg);
    }
    drop(flood);
    // Descriptors free up as the server sees the flood close; a new client gets in.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last_err = String::new();
    while Instant::now() < deadline {
        match check_echo(&server.endpoint, 77, 3) {
            Ok(()) => {
                last_err.clear();
                break;
            }
            Err(e) => last_err = e,
        }
        thread::sleep(Duration::from_millis(200));
    }
    assert!(
        last_err.is_empty(),
        "{backend}: no new connection served after descriptors freed up: {last_err}"
    );
    let mut server = server;
    assert!(server.alive());
    assert!(server.stop().status.success());
}

// ---------------------------------------------------------------- abuse in a loop

/// For 3 s, 4 threads abuse the server at random: resets mid-message,
/// half-closes, partial messages, closes mid-send, connect-and-close, and
/// correct echoes (which must be right). Afterwards the server is alive, its
/// descriptor count is back where it started, and (fork) no process is left.
fn abuse(backend: &str, target: Target) {
    let _heavy = one_at_a_time();
    let server = ServerProc::start(backend, target, &["--threads", "4"]);
    check_echo(&server.endpoint, 0, 2).unwrap();
    thread::sleep(Duration::from_millis(300));
    let pid = server.pid();
    let fds_before = procfs::fd_count(pid).unwrap();
    let procs_before = procfs::tree(pid).len();

    let endpoint = Arc::new(server.endpoint.clone());
    let until = Instant::now() + Duration::from_secs(3);
    let workers: Vec<_> = (0..4u64)
        .map(|t| {
            let endpoint = endpoint.clone();
            thread::spawn(move || -> Result<u64, String> {
                let mut rng = Rng::new(t + 100);
                let mut rounds = 0;
                while Instant::now() < until && rounds < 5_000 {
                    rounds += 1;
                    let Ok(mut c) = Stream::connect(&endpoint) else {
                        continue;
                    };
                    let _ = c.set_timeouts(Some(Duration::from_secs(5)));
                    let len = rng.range(1, 128 * 1024);
                    let msg = pattern(t * 1_000_000 + rounds, 0, len);
                    match rng.range(0, 4) {
                        0 => {
                            let _ = c.write_all(&msg[..len / 2]);
                            c.reset();
                        }
                        1 => {
                            let mut w = c.try_clone().map_err(|e| e.to_string())?;
                            let m = msg.clone();
                            let sender = thread::spawn(move || {
                                let _ = w.write_all(&m);
                                let _ = w.shutdown_write();
                            });
                            let back = c.read_to_eof().map_err(|e| format!("half-close read: {e}"))?;
                            sender.join().unwrap();
                            if back != msg {
                                return Err(format!("half-close: {} B back of {len}", back.len()));
                            }
                        }
                        2 => {
                            let _ = c.write_all(&msg[..len.min(1000)]); // a partial message, then a plain close
                        }
                        3 => drop(c), // connect and close at once
                        _ => {
                            let back = c.echo(&msg).map_err(|e| format!("echo: {e}"))?;
                            if back != msg {
                                return Err("echo corrupted during abuse".into());
                            }
                        }
                    }
                }
                Ok(rounds)
            })
        })
        .collect();
    let mut rounds = 0;
    for w in workers {
        rounds += w
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("{backend}/{target:?}: {e}"));
    }
    let mut server = server;
    assert!(
        server.alive(),
        "{backend}/{target:?}: server died after {rounds} abusive connections"
    );
    check_echo(&server.endpoint, 9, 3).unwrap();

    // Connections close asynchronously: allow the server a moment to see every EOF.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut fds, mut procs) = (usize::MAX, usize::MAX);
    while Instant::now() < deadline {
        fds = procfs::fd_count(pid).unwrap();
        procs = procfs::tree(pid).len();
        if fds <= fds_before && procs <= procs_before {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        fds <= fds_before,
        "{backend}/{target:?}: {fds} fds after abuse, {fds_before} before: a leak"
    );
    assert!(
        procs <= procs_before,
        "{backend}/{target:?}: {procs} processes after abuse, {procs_before} before"
    );
    assert!(server.stop().status.success());
}

// ---------------------------------------------------------------- datagrams

/// 64 KiB datagrams, empty ones, oversized ones (unixgram can carry more than
/// the server's 64 KiB buffer) and a flood from 300 source sockets. The
/// server survives and never sends more bytes than it received.
fn datagram_abuse(backend: &str, target: Target) {
    let _heavy = one_at_a_time();
    let server = ServerProc::start(backend, target, &["--threads", "4"]);
    let dir = TempDir::new("dgram-abuse");
    let mut rng = Rng::new(5);
    let mut sent_bytes = 0u64;
    let max = if target == Target::Unixgram { 100 * 1024 } else { 65_507 };
    let socks: Vec<Dgram> = (0..300)
        .map(|i| Dgram::connect(&server.endpoint, &dir.0, i).unwrap())
        .collect();
    for round in 0..20 {
        for s in &socks {
            let len = match round {
                0 => 0,
                1 => 65_507,
                _ => rng.range(0, max),
            };
            if let Ok(n) = s.send(&pattern(round, 0, len)) {
                sent_bytes += n as u64;
            }
        }
    }
    thread::sleep(Duration::from_millis(500));
    let mut server = server;
    assert!(
        server.alive(),
        "{backend}/{target:?}: server died under a datagram flood"
    );
    let probe = Dgram::connect(&server.endpoint, &dir.0, 9999).unwrap();
    let mut msg = pattern(3, 0, 4000);
    msg[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(probe.echo(&msg, Instant::now() + Duration::from_secs(10)).unwrap() == msg);
    sent_bytes += msg.len() as u64;
    drop(socks);
    let stopped = server.stop();
    assert!(stopped.status.success());
    let echoed = stopped.count("bytes");
    assert!(
        echoed <= sent_bytes,
        "{backend}/{target:?}: amplification: echoed {echoed} B of {sent_bytes} B received"
    );
}

// ---------------------------------------------------------------- uring's buffer ring

/// 200 connections send 64 KiB each, at once, three times, into a ring of 8
/// buffers of 4 KiB: the ring runs dry again and again (ENOBUFS ends the
/// multishot receive), and every connection must be re-armed and finish.
#[test]
fn uring_buffer_ring_exhaustion_recovers() {
    let _heavy = one_at_a_time();
    let server = match ServerProc::try_start(
        "uring",
        Target::Tcp4,
        &["--threads", "1", "--buf-count", "8", "--buf-size", "4096"],
    ) {
        Ok(s) => s,
        Err(e) => {
            panic!("uring server did not start (if the kernel lacks io_uring, the server says which feature): {e}")
        }
    };
    for round in 0..3u64 {
        let endpoint = Arc::new(server.endpoint.clone());
        let handles: Vec<_> = (0..200u64)
            .map(|id| {
                let endpoint = endpoint.clone();
                thread::spawn(move || -> Result<(), String> {
                    let mut c = Stream::connect(&endpoint).map_err(|e| e.to_string())?;
                    let msg = pattern(id, round << 20, 64 * 1024);
                    let back = c.echo(&msg).map_err(|e| format!("connection {id}: {e}"))?;
                    (back == msg)
                        .then_some(())
                        .ok_or_else(|| format!("connection {id}: corrupted"))
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap().unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
    }
    check_echo(&server.endpoint, 1, 5).unwrap();
    assert!(server.stop().status.success());
}

// ---------------------------------------------------------------- idle means idle

/// An idle server uses no CPU: with idle connections held open, up to its
/// `--max-conns` cap (threadpool: 1,000, a worker each and one spare; fork:
/// 200 children; epoll and uring: 1,000), the server's whole process tree
/// uses under 1% of a core over 2 s. Blocked
/// workers must sleep until there is work or a stop, never wake on a timer
/// (1,000 threadpool workers waking every 100 ms used 44% of a core). The
/// stop must still reach every one of them at once.
fn idle_uses_no_cpu(backend: &str) {
    let _heavy = one_at_a_time();
    let (idle, threads) = match backend {
        // One worker more than connections, for the new client at the end.
        "threadpool" => (1_000, "1001"),
        "fork" => (200, "2"),
        _ => (1_000, "2"),
    };
    // At the --max-conns cap, too: a server waiting for room must not poll for it.
    let cap = idle.to_string();
    let server = ServerProc::start(backend, Target::Tcp4, &["--threads", threads, "--max-conns", &cap]);
    let mut held = Vec::with_capacity(idle);
    for i in 0..idle {
        let mut conn = Stream::connect(&server.endpoint).unwrap_or_else(|e| panic!("{backend}: connection {i}: {e}"));
        if i % 100 == 0 {
            // Some of them have been served once, so every worker kind is in its read.
            let msg = pattern(i as u64, 0, 100);
            assert!(conn.echo(&msg).unwrap() == msg, "{backend}: echo on connection {i}");
        }
        held.push(conn);
    }
    // Let the last accepts, forks and thread wake-ups settle.
    thread::sleep(Duration::from_millis(500));
    let cpu_before = procfs::tree_cpu_us(server.pid()).unwrap();
    let window = Instant::now();
    thread::sleep(Duration::from_secs(2));
    let cpu_us = procfs::tree_cpu_us(server.pid()).unwrap() - cpu_before;
    let wall_us = window.elapsed().as_micros() as u64;
    assert!(
        cpu_us * 100 < wall_us,
        "{backend}: {idle} idle connections cost {cpu_us} µs of CPU in {wall_us} µs (1% would be {} µs)",
        wall_us / 100
    );
    // Still serving, on a held connection, and on a new one once a held one
    // closes and makes room under the cap.
    let msg = pattern(9, 0, 100);
    assert!(
        held[idle - 1].echo(&msg).unwrap() == msg,
        "{backend}: idle connection not served after the wait"
    );
    drop(held.pop());
    check_echo(&server.endpoint, 10_001, 2).unwrap();
    let stopped = server.stop();
    assert!(stopped.status.success(), "{backend}: {:?}", stopped.status);
    assert!(
        stopped.elapsed < Duration::from_secs(2),
        "{backend}: stop with {idle} blocked connections took {:?}",
        stopped.elapsed
    );
    assert_eq!(stopped.count("errors"), 0, "{backend}: {:?}", stopped.summary);
    drop(held);
}

// ---------------------------------------------------------------- threadpool C10K

/// threadpool holds 10,000 connections at once with a worker each (the
/// 1,024-worker cap is gone): every connection is echoed while all are open,
/// and the server stops cleanly. The only 10,000-thread test: the machine's
/// pid_max is shared with other test runs.
#[test]
fn threadpool_holds_10000_connections_with_a_worker_each() {
    let _heavy = one_at_a_time();
    const CONNS: usize = 10_000;
    let server = ServerProc::start("threadpool", Target::Tcp4, &["--threads", "10000"]);
    assert_eq!(
        common::field(&server.listening, "workers"),
        Some("10000"),
        "{}",
        server.listening
    );
    let mut held = Vec::with_capacity(CONNS);
    for i in 0..CONNS {
        held.push(Stream::connect(&server.endpoint).unwrap_or_else(|e| panic!("connection {i}: {e}")));
    }
    // Every connection is served while all 10,000 are open: none waits for a worker.
    for (i, conn) in held.iter_mut().enumerate() {
        let msg = pattern(i as u64, 0, 64);
        let back = conn.echo(&msg).unwrap_or_else(|e| panic!("connection {i}: {e}"));
        assert!(back == msg, "connection {i}: echo corrupted");
    }
    let mut server = server;
    assert!(server.alive());
    let stopped = server.stop();
    assert!(stopped.status.success(), "{:?}", stopped.status);
    assert_eq!(stopped.count("accepted"), CONNS as u64);
    assert_eq!(stopped.count("messages"), CONNS as u64);
    assert_eq!(stopped.count("errors"), 0);
    drop(held);
}

// ---------------------------------------------------------------- the matrix

macro_rules! hostile_matrix {
    ($($backend:ident),* $(,)?) => {$(
        mod $backend {
            use super::*;
            const B: &str = stringify!($backend);
            #[test] fn slowloris_idle_connections() { super::slowloris(B) }
            #[test] fn never_reads_64mib() { super::never_reads_64mib(B) }
            #[test] fn stop_reading_then_drain() { super::stop_reading_then_drain(B) }
            #[test] fn out_of_descriptors() { super::out_of_descriptors(B) }
            #[test] fn abuse_tcp() { abuse(B, Target::Tcp4) }
            #[test] fn abuse_unix() { abuse(B, Target::Unix) }
            #[test] fn datagram_abuse_udp() { datagram_abuse(B, Target::Udp4) }
            #[test] fn datagram_abuse_unixgram() { datagram_abuse(B, Target::Unixgram) }
            #[test] fn idle_uses_no_cpu() { super::idle_uses_no_cpu(B) }
        }
    )*};
}

hostile_matrix!(fork, threadpool, epoll, uring);

/// `--uring-fixed-files off` (for A/B measurement): connections are
/// ordinary descriptors, so running out of them is `EMFILE` from accept
/// rather than a full fixed file table, and must be survived the same way.
#[test]
fn uring_fixed_files_off_out_of_descriptors() {
    out_of_descriptors_with("uring", &["--uring-fixed-files", "off"], 100)
}
