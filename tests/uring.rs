//! Tests specific to the `uring` backend: many connections on one ring, a
//! tiny buffer ring under load (the ENOBUFS re-arm path), Unix-stream EOF,
//! rare ring errors survived (injected), and a clear error when io_uring is
//! disabled. Every test drives the real
//! `server` binary over loopback or a temporary socket path.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::client::{max_datagram, pattern, Dgram, Stream};
use common::{field, join_clients, kernel_without_uring, run_to_exit, server_bin, ServerProc, Target, TempDir};
use sockbench::backend::uring::FORCE_SINGLE_SHOT_ENV;
use sockbench::ring::INJECT_ENTER_ERROR_ENV;

/// The heavy tests take most of the machine; run them one at a time.
static HEAVY: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts a uring server. On a kernel that cannot run the backend it prints
/// "skipped: ..." and returns `None`; anywhere else a failed start fails the test.
fn start_uring(target: Target, extra: &[&str]) -> Option<ServerProc> {
    started_or_skipped(ServerProc::try_start("uring", target, extra))
}

fn started_or_skipped(started: Result<ServerProc, String>) -> Option<ServerProc> {
    match started {
        Ok(s) => Some(s),
        Err(e) => match kernel_without_uring() {
            // The server names the missing feature on stderr (inherited, so it shows above).
            Some(why) => {
                eprintln!("skipped: {why}; the uring backend cannot start ({e})");
                None
            }
            None => panic!("the uring server failed to start on a kernel that supports it: {e}"),
        },
    }
}

/// A Unix stream server whose connections use the single-shot receive
/// fallback (the path taken on kernels whose multishot receive misses EOF).
fn start_unix_single_shot(extra: &[&str]) -> Option<ServerProc> {
    let dir = TempDir::new("uring-single");
    let mut cmd = Command::new(server_bin());
    cmd.args(["--backend", "uring", "--transport", "unix", "--path"])
        .arg(dir.path("s.sock"))
        .args(extra);
    cmd.env(FORCE_SINGLE_SHOT_ENV, "1");
    let s = started_or_skipped(ServerProc::spawn(cmd, Some(dir)))?;
    assert!(s.listening.contains("unix_recv=single-shot"), "{}", s.listening);
    Some(s)
}

/// 5,000 TCP connections open at once on one ring; each sends two messages
/// unique to it and every byte of every echo is checked. Four client threads
/// each own 1,250 sockets (writing all, then reading all back).
#[test]
fn five_thousand_connections_on_one_thread() {
    const CONNS: usize = 5000;
    const CLIENT_THREADS: usize = 4;
    const MSG: usize = 200;
    let _heavy = one_at_a_time();
    let Some(server) = start_uring(Target::Tcp4, &["--threads", "1"]) else {
        return;
    };
    assert!(server.listening.contains("threads=1"), "{}", server.listening);
    let addr = server.inet();
    let per_thread = CONNS / CLIENT_THREADS;
    // Every thread connects all its sockets, then waits until all 5,000 are
    // open, so they really are concurrent.
    let all_open = Arc::new(Barrier::new(CLIENT_THREADS));
    let handles: Vec<_> = (0..CLIENT_THREADS)
        .map(|t| {
            let all_open = all_open.clone();
            thread::spawn(move || -> Result<u64, String> {
                let mut socks = Vec::with_capacity(per_thread);
                for i in 0..per_thread {
                    let s = TcpStream::connect(addr).map_err(|e| format!("thread {t}: connect {i}: {e}"))?;
                    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
                    socks.push(s);
                }
                all_open.wait();
                let mut total = 0u64;
                for round in 0..2u64 {
                    for (i, s) in socks.iter_mut().enumerate() {
                        let id = (t * per_thread + i) as u64;
                        s.write_all(&pattern(id, round * MSG as u64, MSG))
                            .map_err(|e| format!("conn {id}: write: {e}"))?;
                    }
                    let mut back = vec![0u8; MSG];
                    for (i, s) in socks.iter_mut().enumerate() {
                        let id = (t * per_thread + i) as u64;
                        s.read_exact(&mut back)
                            .map_err(|e| format!("conn {id}: round {round}: read: {e}"))?;
                        if back != pattern(id, round * MSG as u64, MSG) {
                            return Err(format!("conn {id}: round {round}: echo corrupted"));
                        }
                        total += MSG as u64;
                    }
                }
                Ok(total)
            })
        })
        .collect();
    let total = join_clients(handles, "uring");
    let stopped = server.stop();
    assert!(stopped.status.success(), "exit {:?}", stopped.status);
    assert_eq!(stopped.count("accepted"), CONNS as u64);
    assert_eq!(stopped.count("bytes"), total);
}

/// A ring of 8 buffers and 100 clients sending 64 KiB at the same moment:
/// the ring runs dry over and over (ENOBUFS ends the multishot receive), and
/// every connection must be re-armed and get every byte back.
#[test]
fn tiny_buffer_ring_100_clients() {
    let _heavy = one_at_a_time();
    for (target, single_shot) in [(Target::Tcp4, false), (Target::Unix, false), (Target::Unix, true)] {
        let flags = ["--threads", "1", "--buf-count", "8", "--buf-size", "1024"];
        let server = if single_shot {
            start_unix_single_shot(&flags)
        } else {
            start_uring(target, &flags)
        };
        let Some(server) = server else { return };
        assert!(server.listening.contains("buf_count=8"), "{}", server.listening);
        let endpoint = Arc::new(server.endpoint.clone());
        let start = Arc::new(Barrier::new(100));
        let handles: Vec<_> = (0..100u64)
            .map(|id| {
                let (endpoint, start) = (endpoint.clone(), start.clone());
                thread::spawn(move || -> Result<u64, String> {
                    let mut c = Stream::connect(&endpoint).map_err(|e| format!("client {id}: {e}"))?;
                    start.wait();
                    let msg = pattern(id, 0, 64 * 1024);
                    let back = c.echo(&msg).map_err(|e| format!("client {id}: {e}"))?;
                    (back == msg)
                        .then_some(msg.len() as u64)
                        .ok_or_else(|| format!("client {id}: echo corrupted"))
                })
            })
            .collect();
        let total = join_clients(handles, &format!("{target:?}"));
        let stopped = server.stop();
        assert!(stopped.status.success());
        assert_eq!(stopped.count("bytes"), total, "{target:?}");
    }
}

/// Unix streams: the server notices a client's close (its descriptor goes
/// away), and a client that half-closes gets its echo and then EOF. Kernels
/// have had a bug where multishot receive missed EOF on AF_UNIX; the backend
/// self-tests this at start-up and reports its choice as `unix_recv=`.
#[test]
fn unix_stream_eof_is_noticed() {
    let _heavy = one_at_a_time();
    let Some(server) = start_uring(Target::Unix, &["--threads", "1"]) else {
        return;
    };
    unix_eof(server);
    // The fallback the backend would pick on a kernel with the bug.
    let Some(server) = start_unix_single_shot(&["--threads", "1"]) else {
        return;
    };
    unix_eof(server);
}

fn unix_eof(server: ServerProc) {
    let mode = field(&server.listening, "unix_recv")
        .expect("unix_recv= in the listening line")
        .to_string();
    println!("unix stream receive mode: {mode}");
    let open_before = server_side_conns(&server);

    // Half-close: everything comes back, then EOF.
    let mut c = UnixStream::connect(server.path()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let msg = pattern(7, 0, 100_000);
    c.write_all(&msg).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    c.read_to_end(&mut back)
        .expect("EOF after the echo of a half-closed Unix connection");
    assert!(
        back == msg,
        "echo after half-close: {} of {} bytes",
        back.len(),
        msg.len()
    );

    // Full close: the server closes its side, so its sockets go away.
    let clients: Vec<UnixStream> = (0..50).map(|_| UnixStream::connect(server.path()).unwrap()).collect();
    for (i, mut s) in clients.iter().enumerate() {
        let m = pattern(i as u64, 0, 100);
        s.write_all(&m).unwrap();
        let mut b = vec![0u8; 100];
        s.read_exact(&mut b).unwrap();
        assert_eq!(b, m);
    }
    assert!(server_side_conns(&server) >= open_before + 50);
    drop(clients);
    let open = settled_conns(&server, open_before);
    assert!(
        open <= open_before,
        "server still holds {} sockets of closed Unix clients ({mode} receive)",
        open - open_before
    );
    assert!(server.stop().status.success());
}

/// The server's open connection sockets, from the kernel's socket tables (its
/// connections are fixed files, which /proc/PID/fd does not list): for Unix,
/// sockets bound to its path (accepted ones carry the listener's name) less
/// the listener; for TCP, sockets on its port that are established or whose
/// client has closed (CLOSE_WAIT: the server has not closed its side yet).
fn server_side_conns(server: &ServerProc) -> usize {
    match &server.endpoint {
        sockbench::net::Endpoint::Unix(path) => {
            let path = path.to_str().unwrap();
            let table = std::fs::read_to_string("/proc/net/unix").unwrap();
            let named = table
                .lines()
                .filter(|l| l.split_whitespace().nth(7) == Some(path))
                .count();
            named.saturating_sub(1)
        }
        sockbench::net::Endpoint::Inet(addr) => common::tcp_server_side_conns(addr.port()),
    }
}

/// Waits (at most 5 s) for the server's connections to drop to `target`;
/// returns the last count.
fn settled_conns(server: &ServerProc, target: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut open = server_side_conns(server);
    while open > target && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
        open = server_side_conns(server);
    }
    open
}

/// Connections are fixed files closed with IORING_OP_CLOSE: none may be left
/// open once its client has gone, however it went (a clean close after an
/// echo, a half-close, a reset mid-message, a close with an echo unread).
#[test]
fn closed_connections_leave_no_server_sockets() {
    let _heavy = one_at_a_time();
    for target in [Target::Tcp4, Target::Tcp6, Target::Unix] {
        let Some(server) = start_uring(target, &["--threads", "2"]) else {
            return;
        };
        for i in 0..200u64 {
            let mut c = common::client::Stream::connect(&server.endpoint).unwrap();
            let msg = pattern(i, 0, 300);
            match i % 4 {
                0 => assert_eq!(c.echo(&msg).unwrap(), msg),
                1 => {
                    c.write_all(&msg).unwrap();
                    c.shutdown_write().unwrap();
                    assert_eq!(c.read_to_eof().unwrap(), msg);
                }
                2 => {
                    c.write_all(&msg[..100]).unwrap();
                    c.reset();
                }
                _ => c.write_all(&msg).unwrap(), // and close with the echo unread
            }
        }
        let open = settled_conns(&server, 0);
        assert_eq!(
            open, 0,
            "{target:?}: {open} server sockets left open after their clients went"
        );
        let stopped = server.stop();
        assert!(stopped.status.success(), "{target:?}: {stopped:?}");
    }
}

/// The listening line says which setup the kernel allowed. On a kernel with
/// DEFER_TASKRUN (6.1) it must be the best one; on an older one the test says
/// it was skipped instead of passing silently.
#[test]
fn best_setup_flags_where_the_kernel_has_them() {
    let Some(server) = start_uring(Target::Tcp4, &["--threads", "1"]) else {
        return;
    };
    let setup = field(&server.listening, "setup")
        .expect("setup= in the listening line")
        .to_string();
    if setup != "single_issuer+defer_taskrun" {
        println!("skipped: kernel lacks IORING_SETUP_DEFER_TASKRUN (got setup={setup})");
        return;
    }
    for key in ["ring_entries", "cq_entries", "buf_count", "buf_size"] {
        assert!(
            field(&server.listening, key).is_some(),
            "{key}= missing: {}",
            server.listening
        );
    }
    // The CQ is sized for the connection cap (2 completions per connection).
    let cq: u64 = field(&server.listening, "cq_entries").unwrap().parse().unwrap();
    assert!(cq >= 2 * 10_000, "cq_entries={cq} is too small for 10,000 connections");
    assert!(server.stop().status.success());
}

/// Starts a uring server whose every `every`-th `io_uring_enter` fails with
/// `errno_name` (see `INJECT_ENTER_ERROR_ENV`).
fn start_with_enter_errors(target: Target, errno_name: &str, every: u32) -> Option<ServerProc> {
    let dir = TempDir::new("uring-inject");
    let mut cmd = Command::new(server_bin());
    cmd.args([
        "--backend",
        "uring",
        "--threads",
        "1",
        "--transport",
        target.transport().name(),
    ]);
    match target {
        Target::Tcp4 | Target::Udp4 => cmd.args(["--addr", "127.0.0.1:0"]),
        Target::Tcp6 | Target::Udp6 => cmd.args(["--addr", "[::1]:0"]),
        Target::Unix | Target::Unixgram => cmd.arg("--path").arg(dir.path("s.sock")),
    };
    cmd.env(INJECT_ENTER_ERROR_ENV, format!("{errno_name}:{every}"));
    started_or_skipped(ServerProc::spawn(cmd, Some(dir)))
}

/// A submission the kernel has no memory for (`EAGAIN`, `ENOMEM`) is retried
/// after a back-off: no echo is lost or damaged, nothing counts as an error,
/// and the summary line counts the retries as `ring_errors`.
#[test]
fn submissions_without_kernel_memory_are_retried() {
    for (target, errno) in [
        (Target::Tcp4, "EAGAIN"),
        (Target::Unix, "ENOMEM"),
        (Target::Udp4, "EAGAIN"),
    ] {
        let Some(server) = start_with_enter_errors(target, errno, 3) else {
            return;
        };
        if target.is_stream() {
            let mut c = common::client::Stream::connect(&server.endpoint).unwrap();
            for i in 0..200u64 {
                let msg = pattern(i, 0, 100);
                assert_eq!(c.echo(&msg).unwrap(), msg, "{target:?} {errno}: echo {i}");
            }
        } else {
            let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            sock.connect(server.inet()).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = [0u8; 256];
            for i in 0..200u64 {
                let msg = pattern(i, 0, 100);
                sock.send(&msg).unwrap();
                let n = sock.recv(&mut buf).unwrap();
                assert_eq!(&buf[..n], &msg[..], "{target:?} {errno}: datagram {i}");
            }
        }
        let stopped = server.stop();
        assert!(stopped.status.success(), "{target:?} {errno}: {stopped:?}");
        assert!(stopped.count("ring_errors") > 0, "{target:?} {errno}: {stopped:?}");
        assert_eq!(stopped.count("errors"), 0, "{target:?} {errno}: {stopped:?}");
    }
}

/// Dropped completions (`EBADR`) do not end the server. A stream connection
/// whose state can no longer be trusted is closed (never echoed with a hole
/// in it), a client that reconnects is served again, and datagrams keep being
/// echoed; the summary counts the events as `ring_errors`.
#[test]
fn dropped_completions_close_streams_and_serving_goes_on() {
    for target in [Target::Tcp4, Target::Unix] {
        let Some(server) = start_with_enter_errors(target, "EBADR", 25) else {
            return;
        };
        let (mut echoed, mut reconnects) = (0u64, 0u64);
        let mut client = common::client::Stream::connect(&server.endpoint).unwrap();
        client.set_timeouts(Some(Duration::from_secs(10))).unwrap();
        while echoed < 300 {
            let msg = pattern(echoed, 0, 64);
            let mut back = vec![0u8; msg.len()];
            let round = client.write_all(&msg).and_then(|()| client.read_exact(&mut back));
            match round {
                Ok(()) => {
                    assert_eq!(back, msg, "{target:?}: echo {echoed}");
                    echoed += 1;
                }
                // Closed by the server after a drop (EOF or reset); a timeout
                // would be a connection left stuck, and fails here.
                Err(e) if e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut => {
                    reconnects += 1;
                    assert!(reconnects < 200, "{target:?}: the server closes every connection");
                    client = common::client::Stream::connect(&server.endpoint).unwrap();
                    client.set_timeouts(Some(Duration::from_secs(10))).unwrap();
                }
                Err(e) => panic!("{target:?}: a connection was left stuck after dropped completions: {e}"),
            }
        }
        let stopped = server.stop();
        assert!(stopped.status.success(), "{target:?}: {stopped:?}");
        assert!(reconnects > 0, "{target:?}: no drop was injected in 300 echoes");
        assert!(stopped.count("ring_errors") > 0, "{target:?}: {stopped:?}");
    }

    let Some(server) = start_with_enter_errors(Target::Udp4, "EBADR", 25) else {
        return;
    };
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(server.inet()).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 256];
    for i in 0..300u64 {
        let msg = pattern(i, 0, 64);
        sock.send(&msg).unwrap();
        let n = sock
            .recv(&mut buf)
            .expect("the server stopped echoing after dropped completions");
        assert_eq!(&buf[..n], &msg[..], "datagram {i}");
    }
    let stopped = server.stop();
    assert!(stopped.status.success(), "{stopped:?}");
    assert!(stopped.count("ring_errors") > 0, "{stopped:?}");
}

/// With io_uring blocked by seccomp (as a container runtime or
/// `kernel.io_uring_disabled` would), the server exits non-zero with a message
/// that says so, instead of crashing.
#[test]
#[cfg(target_arch = "x86_64")]
fn io_uring_blocked_is_a_clear_error() {
    use std::os::unix::process::CommandExt;
    for errno in [libc::EPERM, libc::ENOSYS] {
        let mut cmd = Command::new(server_bin());
        cmd.args(["--backend", "uring", "--addr", "127.0.0.1:0", "--threads", "1"]);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null());
        // SAFETY: the closure only makes two prctl calls, which are async-signal-safe.
        unsafe { cmd.pre_exec(move || block_io_uring_setup(errno)) };
        let out = cmd.output().expect("run server");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "server ran without io_uring: {stdout}");
        assert_ne!(out.status.code(), None, "server died from a signal: {stderr}");
        assert!(
            !stdout.contains("listening"),
            "announced listening without io_uring: {stdout}"
        );
        assert!(stderr.contains("io_uring"), "error does not name io_uring: {stderr}");
        assert!(!stderr.contains("panicked"), "server panicked: {stderr}");
        println!("errno {errno}: exit {:?}: {}", out.status.code(), stderr.trim());
    }
}

/// Installs a seccomp filter that fails `io_uring_setup` with `errno`.
#[cfg(target_arch = "x86_64")]
fn block_io_uring_setup(errno: i32) -> std::io::Result<()> {
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    let stmt = |code: u16, k: u32| libc::sock_filter { code, jt: 0, jf: 0, k };
    let jump = |code: u16, k: u32, jt: u8, jf: u8| libc::sock_filter { code, jt, jf, k };
    let ld_w_abs = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let jeq = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    let filter = [
        stmt(ld_w_abs, 4), // seccomp_data.arch
        jump(jeq, AUDIT_ARCH_X86_64, 1, 0),
        stmt(ret, SECCOMP_RET_ALLOW),
        stmt(ld_w_abs, 0), // seccomp_data.nr
        jump(jeq, libc::SYS_io_uring_setup as u32, 0, 1),
        stmt(ret, SECCOMP_RET_ERRNO | errno as u32),
        stmt(ret, SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: plain prctl calls; `prog` and `filter` outlive them (the kernel copies the filter).
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `--max-conns` holds across rings: past the cap a new client waits in the
/// backlog (it is neither served nor refused) and is served once another
/// connection closes.
#[test]
fn max_conns_waits_then_serves() {
    let _heavy = one_at_a_time();
    for threads in ["1", "2"] {
        let Some(server) = start_uring(Target::Tcp4, &["--threads", threads, "--max-conns", "3"]) else {
            return;
        };
        let mut first: Vec<Stream> = (0..3u64)
            .map(|i| {
                let mut c = Stream::connect(&server.endpoint).unwrap();
                let m = pattern(i, 0, 100);
                assert_eq!(c.echo(&m).unwrap(), m);
                c
            })
            .collect();
        let mut waiting = TcpStream::connect(server.inet()).expect("connect completes in the backlog");
        waiting.write_all(b"over the cap").unwrap();
        waiting.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut buf = [0u8; 12];
        let early = waiting.read(&mut buf);
        assert!(
            matches!(&early, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut),
            "threads={threads}: a 4th connection was served (or refused) past --max-conns 3: {early:?}"
        );
        drop(first.pop());
        waiting.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        waiting.read_exact(&mut buf).expect("served once a place frees up");
        assert_eq!(&buf, b"over the cap");
        drop(first);
        let stopped = server.stop();
        assert!(stopped.status.success());
        assert_eq!(stopped.count("accepted"), 4, "threads={threads}");
    }
}

/// The setups an older kernel falls back to (COOP_TASKRUN, 5.19; no flags)
/// serve correctly too: forced here, since this kernel would pick the best.
#[test]
fn fallback_setups_serve() {
    use sockbench::ring::FORCE_SETUP_ENV;
    let _heavy = one_at_a_time();
    for setup in ["coop_taskrun", "plain"] {
        let mut cmd = Command::new(server_bin());
        cmd.args(["--backend", "uring", "--addr", "127.0.0.1:0", "--threads", "2"])
            .env(FORCE_SETUP_ENV, setup);
        let server = ServerProc::spawn(cmd, None).unwrap_or_else(|e| panic!("setup={setup}: {e}"));
        assert_eq!(field(&server.listening, "setup"), Some(setup), "{}", server.listening);
        let handles: Vec<_> = (0..20u64)
            .map(|id| {
                let endpoint = server.endpoint.clone();
                thread::spawn(move || {
                    let mut c = Stream::connect(&endpoint).unwrap();
                    let msg = pattern(id, 0, 100_000);
                    c.echo(&msg).unwrap() == msg
                })
            })
            .collect();
        for h in handles {
            assert!(h.join().unwrap(), "setup={setup}: echo corrupted");
        }
        let stopped = server.stop();
        assert!(stopped.status.success());
        assert_eq!(stopped.count("bytes"), 20 * 100_000, "setup={setup}");
    }
}

// ---------------------------------------------------------------- A/B switches

/// The transports an A/B switch must serve: both stream kinds and both datagram kinds.
const SWITCH_TARGETS: [Target; 4] = [Target::Tcp4, Target::Unix, Target::Udp4, Target::Unixgram];

/// A uring server on 2 rings with an A/B switch (`flags`), on `target`; its
/// `listening` line must report the variant as `key=shown`.
fn start_switched(target: Target, flags: &[&str], key: &str, shown: &str) -> Option<ServerProc> {
    let mut args = vec!["--threads", "2"];
    args.extend_from_slice(flags);
    let server = start_uring(target, &args)?;
    assert_eq!(
        field(&server.listening, key),
        Some(shown),
        "{flags:?} {target:?}: {}",
        server.listening
    );
    Some(server)
}

/// Real bytes through a switched server: streams, 10 clients at once, each
/// echoing 1 B, 1,000 B and 200 KiB (larger than a socket buffer, so sends
/// go partial and wait for POLLOUT) and then a half-close (its echo, then
/// EOF); datagrams, 10 clients each echoing 8 B, 1,000 B and the largest
/// datagram. Every byte is checked. Afterwards no stream connection is left
/// open on the server side, and the server stops cleanly with no errors.
fn switched_echo(server: ServerProc, target: Target, what: &str) {
    switched_echo_with(server, target, what, |_| {})
}

/// As `switched_echo`, calling `before_stop` once the echoes are done.
fn switched_echo_with(server: ServerProc, target: Target, what: &str, before_stop: impl FnOnce(&ServerProc)) {
    let endpoint = Arc::new(server.endpoint.clone());
    let dir = Arc::new(TempDir::new("uring-switch"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let handles: Vec<_> = (0..10u64)
        .map(|id| {
            let (endpoint, dir) = (endpoint.clone(), dir.clone());
            thread::spawn(move || -> Result<u64, String> {
                let mut echoed = 0u64;
                if target.is_stream() {
                    let mut c = Stream::connect(&endpoint).map_err(|e| format!("client {id}: {e}"))?;
                    c.set_timeouts(Some(Duration::from_secs(20))).unwrap();
                    for (round, len) in [1usize, 1000, 200 * 1024].into_iter().enumerate() {
                        let msg = pattern(id, (round as u64) << 20, len);
                        let back = c.echo(&msg).map_err(|e| format!("client {id}: {len} B: {e}"))?;
                        if back != msg {
                            return Err(format!("client {id}: {len} B echo corrupted"));
                        }
                        echoed += len as u64;
                    }
                    let msg = pattern(id, 3 << 20, 5000);
                    c.write_all(&msg).map_err(|e| format!("client {id}: {e}"))?;
                    c.shutdown_write().map_err(|e| format!("client {id}: {e}"))?;
                    let back = c.read_to_eof().map_err(|e| format!("client {id}: half-close: {e}"))?;
                    if back != msg {
                        return Err(format!(
                            "client {id}: half-close echo: {} of 5000 B, or changed",
                            back.len()
                        ));
                    }
                    echoed += msg.len() as u64;
                } else {
                    let sock = Dgram::connect(&endpoint, &dir.0, id).map_err(|e| format!("client {id}: {e}"))?;
                    for (seq, len) in [8usize, 1000, max_datagram(target)].into_iter().enumerate() {
                        let mut msg = pattern(id, (seq as u64) << 20, len);
                        msg[..4].copy_from_slice(&(id as u32).to_le_bytes());
                        msg[4..8].copy_from_slice(&(seq as u32).to_le_bytes());
                        let back = sock
                            .echo(&msg, deadline)
                            .map_err(|e| format!("client {id}: {len} B: {e}"))?;
                        if back != msg {
                            return Err(format!(
                                "client {id}: {len} B datagram came back as {} B, or changed",
                                back.len()
                            ));
                        }
                        echoed += len as u64;
                    }
                }
                Ok(echoed)
            })
        })
        .collect();
    let total = join_clients(handles, &format!("{what} {target:?}"));
    if target.is_stream() {
        let open = settled_conns(&server, 0);
        assert_eq!(open, 0, "{what} {target:?}: {open} server sockets left open");
    }
    before_stop(&server);
    let stopped = server.stop();
    assert!(stopped.status.success(), "{what} {target:?}: {stopped:?}");
    assert_eq!(stopped.count("errors"), 0, "{what} {target:?}: {stopped:?}");
    if target.is_stream() {
        assert_eq!(stopped.count("accepted"), 10, "{what} {target:?}");
        assert_eq!(stopped.count("bytes"), total, "{what} {target:?}");
    } else {
        // A datagram resent after a loss is echoed twice.
        assert!(stopped.count("bytes") >= total, "{what} {target:?}: {stopped:?}");
    }
}

/// The server's descriptors that are sockets (`/proc/PID/fd`).
fn socket_fds(server: &ServerProc) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

/// `--uring-fixed-files off`: connections are ordinary descriptors (they
/// show in `/proc/PID/fd`, where fixed files do not), the datagram socket is
/// used by descriptor, and every transport still echoes and closes.
#[test]
fn fixed_files_off_serves_every_transport() {
    let _heavy = one_at_a_time();
    for (value, shown) in [("off", "off"), ("on", "on")] {
        let flags = ["--uring-fixed-files", value];
        let Some(server) = start_switched(Target::Tcp4, &flags, "fixed_files", shown) else {
            return;
        };
        let before = socket_fds(&server);
        let mut held: Vec<Stream> = (0..20u64)
            .map(|i| {
                let mut c = Stream::connect(&server.endpoint).unwrap();
                let m = pattern(i, 0, 100);
                assert_eq!(c.echo(&m).unwrap(), m);
                c
            })
            .collect();
        let during = socket_fds(&server);
        match value {
            "off" => assert!(
                during >= before + 20,
                "fixed files off: {before} socket fds, then {during} with 20 clients"
            ),
            _ => assert_eq!(during, before, "fixed files on: connections became descriptors"),
        }
        held.clear();
        assert_eq!(settled_conns(&server, 0), 0, "--uring-fixed-files {value}");
        assert!(server.stop().status.success());
    }
    for target in SWITCH_TARGETS {
        let Some(server) = start_switched(target, &["--uring-fixed-files", "off"], "fixed_files", "off") else {
            return;
        };
        switched_echo(server, target, "--uring-fixed-files off");
    }
}

/// `--uring-register-ring off`: enters go by the ring's descriptor.
#[test]
fn register_ring_off_serves_every_transport() {
    let _heavy = one_at_a_time();
    for target in SWITCH_TARGETS {
        let flags = ["--uring-register-ring", "off"];
        let Some(server) = start_switched(target, &flags, "register_ring", "off") else {
            return;
        };
        switched_echo(server, target, "--uring-register-ring off");
    }
}

/// `--uring-wait quiet`: a turn waits for one completion more than its own
/// quiet sends, bounded by a timer (the default waits for one).
#[test]
fn wait_quiet_serves_every_transport() {
    let _heavy = one_at_a_time();
    for target in SWITCH_TARGETS {
        let Some(server) = start_switched(target, &["--uring-wait", "quiet"], "wait", "quiet") else {
            return;
        };
        switched_echo(server, target, "--uring-wait quiet");
    }
}

/// `--uring-hugepages on`: every ring's buffer mapping is marked for
/// transparent huge pages (`THPeligible: 1` in smaps; with THP in `madvise`
/// mode, as here, only an `MADV_HUGEPAGE` range is, so the default server has
/// none), and every transport still echoes. Whether the kernel then finds free
/// huge pages is its business: printed, not asserted.
#[test]
fn hugepages_on_serves_every_transport() {
    let _heavy = one_at_a_time();
    let Ok(thp) = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled") else {
        println!("skipped: this kernel has no transparent huge pages");
        return;
    };
    let marked = thp.contains("[madvise]");
    if !marked {
        println!(
            "THP mode is {:?}, not madvise: the smaps checks are skipped",
            thp.trim()
        );
    }
    let stream_bufs = 4096 * 16384;
    if marked {
        let Some(server) = start_switched(Target::Tcp4, &[], "hugepages", "off") else {
            return;
        };
        assert_eq!(huge_page_bytes(&server), 0, "huge pages without the flag");
        assert!(server.stop().status.success());
    }
    for target in SWITCH_TARGETS {
        let Some(server) = start_switched(target, &["--uring-hugepages", "on"], "hugepages", "on") else {
            return;
        };
        // Stream rings: 4,096 x 16 KiB; datagram rings: 256 buffers of over 64 KiB.
        let buf_bytes = if target.is_stream() { stream_bufs } else { 256 * 65536 };
        if marked {
            // Both rings' (the kernel may merge the two mappings into one).
            let n = huge_page_bytes(&server);
            assert!(
                n >= 2 * buf_bytes,
                "{target:?}: {n} B marked for huge pages, want 2 x {buf_bytes} B"
            );
        }
        switched_echo_with(server, target, "--uring-hugepages on", |server| {
            let rollup = std::fs::read_to_string(format!("/proc/{}/smaps_rollup", server.pid())).unwrap_or_default();
            let huge = rollup
                .lines()
                .find(|l| l.starts_with("AnonHugePages:"))
                .unwrap_or("AnonHugePages: ?");
            println!("{target:?} after the echoes: {huge}");
        });
    }
}

/// Whether this kernel knows io_uring's min_wait (Linux 6.12,
/// `IORING_FEAT_MIN_TIMEOUT`), as the server checks it.
fn kernel_has_min_wait() -> bool {
    io_uring::IoUring::new(2).is_ok_and(|r| r.params().is_feature_min_timeout())
}

/// Starts a uring server with `--uring-min-wait` and `extra` flags (on 2
/// rings; `start_switched` checks the listening line). On a kernel without
/// min_wait the server must refuse to start, naming the flag: checked, then
/// `None`.
fn start_min_wait(target: Target, usec: &str, extra: &[&str]) -> Option<ServerProc> {
    if kernel_without_uring().is_none() && !kernel_has_min_wait() {
        let mut cmd = Command::new(server_bin());
        cmd.args(["--backend", "uring", "--addr", "127.0.0.1:0", "--uring-min-wait", usec]);
        let (code, stderr) = run_to_exit(cmd, Duration::from_secs(10));
        assert!(matches!(code, Some(c) if c != 0), "exit {code:?}: {stderr}");
        assert!(
            stderr.contains("--uring-min-wait") && stderr.contains("6.12"),
            "{stderr}"
        );
        println!("skipped: kernel lacks io_uring min_wait (Linux 6.12); the server refused it by name");
        return None;
    }
    let mut flags = vec!["--uring-min-wait", usec];
    flags.extend_from_slice(extra);
    start_switched(target, &flags, "min_wait_usec", usec)
}

/// `--uring-min-wait 50`: turns wait for a batch and take what is there
/// once 50 µs have passed; every transport still echoes every byte (the
/// 200 KiB stream echo goes partial and through POLLOUT), half-closes and
/// closes. So it does entering by descriptor (the io-uring crate's
/// `SubmitArgs` rather than our own `io_uring_getevents_arg`), and on a ring
/// without DEFER_TASKRUN, whose waits the kernel wakes another way. Without
/// the flag the listening line says 0.
#[test]
fn min_wait_serves_every_transport() {
    use sockbench::ring::FORCE_SETUP_ENV;
    let _heavy = one_at_a_time();
    let Some(server) = start_switched(Target::Tcp4, &[], "min_wait_usec", "0") else {
        return;
    };
    assert!(server.stop().status.success());
    for target in SWITCH_TARGETS {
        let Some(server) = start_min_wait(target, "50", &[]) else {
            return;
        };
        switched_echo(server, target, "--uring-min-wait 50");
    }
    for target in [Target::Tcp4, Target::Udp4] {
        let Some(server) = start_min_wait(target, "50", &["--uring-register-ring", "off"]) else {
            return;
        };
        assert_eq!(field(&server.listening, "register_ring"), Some("off"));
        switched_echo(server, target, "--uring-min-wait 50 --uring-register-ring off");
    }
    let mut cmd = Command::new(server_bin());
    cmd.args(["--backend", "uring", "--addr", "127.0.0.1:0", "--threads", "2"])
        .args(["--uring-min-wait", "50"])
        .env(FORCE_SETUP_ENV, "coop_taskrun");
    let server = ServerProc::spawn(cmd, None).unwrap();
    assert_eq!(field(&server.listening, "setup"), Some("coop_taskrun"));
    assert_eq!(field(&server.listening, "min_wait_usec"), Some("50"));
    switched_echo(server, Target::Tcp4, "--uring-min-wait 50, setup coop_taskrun");
}

/// A bad `--uring-min-wait` (not a number, negative, past 10 ms, or with
/// `--uring-wait quiet`, which answers the same question) exits 2 with a
/// message naming the flag, before any ring is set up.
#[test]
fn min_wait_bad_values_exit_2_naming_the_flag() {
    let too_long = (sockbench::server::MAX_MIN_WAIT_USEC + 1).to_string();
    let cases: [&[&str]; 5] = [
        &["--uring-min-wait", "soon"],
        &["--uring-min-wait=-1"],
        &["--uring-min-wait", &too_long],
        &["--uring-min-wait", "1.5"],
        &["--uring-min-wait", "50", "--uring-wait", "quiet"],
    ];
    for flags in cases {
        let mut cmd = Command::new(server_bin());
        cmd.args(["--backend", "uring", "--addr", "127.0.0.1:0"]).args(flags);
        let (code, stderr) = run_to_exit(cmd, Duration::from_secs(10));
        assert_eq!(code, Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains("--uring-min-wait"), "{flags:?}: {stderr}");
    }
}

/// Context switches of every thread of `pid` so far: each time one went to
/// sleep or was woken (voluntary) or preempted (not).
fn context_switches(pid: u32) -> u64 {
    let mut n = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        n += status
            .lines()
            .filter(|l| l.starts_with("voluntary_ctxt_switches:") || l.starts_with("nonvoluntary_ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    n
}

/// Idle stays idle with `--uring-min-wait`: once its clients are quiet (10
/// connections held open, or a datagram peer), a server whose turns ask for
/// a batch sleeps. The kernel ends a min_wait wait that has no general
/// timeout when the min_wait passes, completions or not, so a server that
/// left the timeout out would wake every 50 µs: some 40,000 context switches
/// in 2 s. Asleep, its threads switch a handful of times, and use next to no CPU.
#[test]
fn min_wait_idle_server_sleeps() {
    let _heavy = one_at_a_time();
    for target in [Target::Tcp4, Target::Udp4] {
        let Some(server) = start_min_wait(target, "50", &[]) else {
            return;
        };
        let dir = TempDir::new("uring-idle");
        let mut held = Vec::new();
        let mut peers = Vec::new();
        for id in 0..10u64 {
            let msg = pattern(id, 0, 100);
            if target.is_stream() {
                let mut c = Stream::connect(&server.endpoint).unwrap();
                assert_eq!(c.echo(&msg).unwrap(), msg);
                held.push(c);
            } else {
                let sock = Dgram::connect(&server.endpoint, &dir.0, id).unwrap();
                let deadline = Instant::now() + Duration::from_secs(10);
                assert_eq!(sock.echo(&msg, deadline).unwrap(), msg);
                peers.push(sock);
            }
        }
        // Let the rings handle the last send completions and go to sleep.
        thread::sleep(Duration::from_millis(200));
        let pid = server.pid();
        let (switches, cpu_us) = (context_switches(pid), sockbench::procfs::own_cpu_us(pid).unwrap());
        thread::sleep(Duration::from_secs(2));
        let switches = context_switches(pid) - switches;
        let cpu_us = sockbench::procfs::own_cpu_us(pid).unwrap() - cpu_us;
        println!("{target:?}: idle 2 s: {switches} context switches, {cpu_us} us CPU");
        assert!(
            switches < 50,
            "{target:?}: {switches} context switches in 2 s idle: the server wakes periodically"
        );
        assert!(cpu_us < 50_000, "{target:?}: {cpu_us} us CPU in 2 s idle");
        drop(held);
        let stopped = server.stop();
        assert!(stopped.status.success(), "{target:?}: {stopped:?}");
        assert_eq!(stopped.count("errors"), 0, "{target:?}: {stopped:?}");
    }
}

/// Bytes in the server's large mappings (16 MiB or more, as the buffer rings
/// are; not its thread stacks) marked for transparent huge pages
/// (`THPeligible: 1` in `/proc/PID/smaps`).
fn huge_page_bytes(server: &ServerProc) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", server.pid())).unwrap();
    let (mut total, mut size_kb) = (0, 0u64);
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        match (f.next(), f.next()) {
            (Some("Size:"), Some(kb)) => size_kb = kb.parse().unwrap_or(0),
            (Some("THPeligible:"), Some("1")) if size_kb >= 16 * 1024 => total += size_kb * 1024,
            _ => {}
        }
    }
    total
}

/// A uring server that exits lets go of its port at once: stopped, it can be
/// started again on the same port straight away, over UDP (its socket sits
/// in each ring's fixed file table, which the ring used to release only
/// after the exit, about 100 ms later) and TCP. Several rings, so that
/// every worker's own `SO_REUSEPORT` socket must go too.
#[test]
fn a_stopped_server_frees_its_port_for_an_immediate_restart() {
    for target in [Target::Udp4, Target::Tcp4] {
        for fixed in ["on", "off"] {
            let flags = ["--threads", "2", "--uring-fixed-files", fixed];
            let Some(first) = start_uring(target, &flags) else {
                return;
            };
            let addr = first.inet().to_string();
            assert!(first.stop().status.success());
            let mut cmd = Command::new(server_bin());
            cmd.args([
                "--backend",
                "uring",
                "--transport",
                target.transport().name(),
                "--addr",
                &addr,
            ])
            .args(flags);
            let again = ServerProc::spawn(cmd, None)
                .unwrap_or_else(|e| panic!("{target:?} fixed files {fixed}: restart on {addr}: {e}"));
            assert!(again.stop().status.success());
        }
    }
}

/// Ring sizes the server cannot run with are refused before any ring is
/// set up, with exit 2 and the flag named: one provided buffer (a multishot
/// receive needs a free buffer beside the one it fills), a count that is
/// not a power of two, ring and buffer sizes out of range.
#[test]
fn ring_sizes_that_cannot_work_exit_2_naming_the_flag() {
    let cases: [(&[&str], &str); 6] = [
        (&["--buf-count", "1"], "--buf-count"),
        (&["--buf-count", "3"], "--buf-count"),
        (&["--buf-count", "65536"], "--buf-count"),
        (&["--ring-entries", "2"], "--ring-entries"),
        (&["--buf-size", "1"], "--buf-size"),
        (&["--buf-size", "2000000"], "--buf-size"),
    ];
    for (flags, flag) in cases {
        let mut cmd = Command::new(server_bin());
        cmd.args(["--backend", "uring", "--addr", "127.0.0.1:0"]).args(flags);
        let (code, stderr) = run_to_exit(cmd, Duration::from_secs(10));
        assert_eq!(code, Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(flag), "{flags:?}: {stderr}");
    }
}

/// Buffers the kernel will not map (here: more than the address-space limit
/// allows) stop the server at start with exit 2, naming `--buf-count` and
/// `--buf-size`, rather than a bare "Cannot allocate memory".
#[test]
fn buffers_the_kernel_refuses_exit_2_naming_the_flags() {
    use std::os::unix::process::CommandExt;
    if let Some(why) = kernel_without_uring() {
        eprintln!("skipped: {why}");
        return;
    }
    let mut cmd = Command::new(server_bin());
    cmd.args(["--backend", "uring", "--addr", "127.0.0.1:0", "--threads", "1"])
        .args(["--buf-count", "32768", "--buf-size", "1048576"]);
    // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 4 << 30,
                rlim_max: 4 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (code, stderr) = run_to_exit(cmd, Duration::from_secs(10));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--buf-count 32768 with --buf-size 1048576"), "{stderr}");
}
