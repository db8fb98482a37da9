//! loadgen against the project's own `server`, every backend over tcp, udp
//! and unix. `cargo test --workspace` builds `server`; when it is missing the
//! tests say so and pass. A backend that fails to start fails the test.

mod support;

use std::time::{Duration, Instant};

use support::*;

const BACKENDS: [&str; 4] = ["fork", "threadpool", "epoll", "uring"];

fn start(bin: &std::path::Path, backend: &str, transport: &str) -> ProjectServer {
    // A thread pool serves one stream connection per thread at a time; the
    // others wait unserved, and loadgen fails such a run: its pool holds the
    // 20 connections of these runs. Datagrams keep one thread: several
    // threads reading one socket answer out of order, which fails a run too.
    let threads = if backend == "threadpool" && transport != "udp" {
        "20"
    } else {
        "1"
    };
    start_server(bin, backend, transport, threads, "127.0.0.1:0")
}

#[test]
fn every_backend_over_tcp_udp_and_unix() {
    let Some(bin) = project_server_bin() else {
        eprintln!("skipped: the `server` binary is not built beside this test (run `cargo test --workspace`)");
        return;
    };
    let dir = temp_dir("project");
    let mut ran = 0;
    for backend in BACKENDS {
        for transport in ["tcp", "udp", "unix"] {
            let srv = start(&bin, backend, transport);
            let flag = if transport == "unix" { "--path" } else { "--addr" };
            let run = run_loadgen(
                &[
                    "--transport",
                    transport,
                    flag,
                    &srv.addr,
                    "--conns",
                    "20",
                    "--depth",
                    "2",
                    "--duration",
                    "1s",
                    "--warmup",
                    "200ms",
                    "--backend",
                    backend,
                ],
                &dir,
            );
            assert_eq!(run.code(), 0, "{backend}/{transport}: {}", run.stderr);
            let r = run.result();
            assert!(r.complete && r.messages > 0, "{backend}/{transport}");
            assert_eq!(r.settings.backend.as_deref(), Some(backend));
            assert_eq!(
                r.errors.mismatch + r.errors.reset + r.errors.duplicate,
                0,
                "{backend}/{transport}: {:?}",
                r.errors
            );
            // A stream connect either works or fails. A datagram "connection" is
            // up once a probe comes back, and a probe not back within 250 ms is
            // sent again (a connect error), which a busy machine can cause; what
            // must hold is that every client came up.
            if transport == "udp" {
                assert!(
                    !run.stderr.contains("connections up after"),
                    "{backend}/{transport}: {}",
                    run.stderr
                );
            } else {
                assert_eq!(r.errors.connect, 0, "{backend}/{transport}: {:?}", r.errors);
            }
            assert!(
                r.errors.lost * 100 <= r.messages,
                "{backend}/{transport}: {:?}",
                r.errors
            );
            eprintln!(
                "{backend}/{transport}: {:.0} msgs/s p99 {} us",
                r.throughput.msgs_per_s, r.latency_us.p99
            );
            ran += 1;
        }
    }
    eprintln!("{ran} backend x transport runs");
}

#[test]
fn server_killed_mid_run_gives_incomplete_result_in_bounded_time() {
    let Some(bin) = project_server_bin() else {
        eprintln!("skipped: the `server` binary is not built beside this test");
        return;
    };
    let mut srv = start(&bin, "uring", "tcp");
    let dir = temp_dir("killed");
    let pid = srv.child.id();
    let killer = std::thread::spawn(move || {
        // Kill it mid-run: once loadgen's 50 connections are accepted (each a
        // descriptor in the server; bounded by 10 s), and 500 ms into the load.
        let idle_fds = sockbench::procfs::fd_count(pid).unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(10);
        while sockbench::procfs::fd_count(pid).unwrap_or(0) < idle_fds + 50 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(500));
        // SAFETY: kill(2) on our own child process.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        Instant::now()
    });
    let run = run_loadgen(
        &[
            "--addr",
            &srv.addr,
            "--conns",
            "50",
            "--duration",
            "20s",
            "--warmup",
            "0s",
        ],
        &dir,
    );
    let after_kill = killer.join().unwrap().elapsed();
    let _ = srv.child.wait();
    assert_ne!(run.code(), 0);
    assert!(
        after_kill < Duration::from_secs(5),
        "loadgen ran on {after_kill:?} after the server died (20 s asked for)\n{}",
        run.stderr
    );
    let r = run.result();
    assert!(!r.complete);
    assert!(r.errors.reset > 0, "{:?}", r.errors);
    assert!(run.stderr.contains("did the server die"), "{}", run.stderr);
}
