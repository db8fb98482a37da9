//! Conversations (`--conn-msgs N`) on loadgen's io_uring path: against the
//! project's own server over TCP on IPv4 and IPv6 and over a Unix socket,
//! every byte checked; the sockets are direct descriptors, never in
//! loadgen's descriptor table; and a kernel that lacks an opcode gets `--io
//! uring` refused (exit 2, naming the flag) and `--io auto` run on epoll,
//! as the result says. The failure kinds over both paths are in
//! `conversations.rs`. Each run is short and every wait bounded.

mod support;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use loadgen::conversation::Conversations;
use support::*;

fn conversations(run: &Run) -> &Conversations {
    run.result()
        .conversations
        .as_ref()
        .unwrap_or_else(|| panic!("no conversations object; stderr:\n{}", run.stderr))
}

/// The project's server, or `None` (the test then says it skips).
fn server_bin(test: &str) -> Option<PathBuf> {
    let bin = project_server_bin();
    if bin.is_none() {
        eprintln!("{test}: skipped: the `server` binary is not built beside this test (cargo test --workspace)");
    }
    bin
}

/// `--io uring` can run conversations here; else says why the test skips.
fn uring_here(test: &str) -> bool {
    match kernel_without_uring(true) {
        None => true,
        Some(why) => {
            eprintln!("{test}: skipped: {why}");
            false
        }
    }
}

#[test]
fn project_server_over_tcp4_tcp6_and_unix_with_one_and_ten_echoes() {
    let _serial = one_at_a_time();
    let Some(bin) = server_bin("project server") else {
        return;
    };
    if !uring_here("project server") {
        return;
    }
    let dir = temp_dir("uring-conv");
    let ipv6 = TcpListener::bind("[::1]:0").is_ok();
    if !ipv6 {
        eprintln!("project server: [::1] skipped: no IPv6 loopback");
    }
    let targets: Vec<(&str, &str)> = [("tcp", "127.0.0.1:0"), ("tcp", "[::1]:0"), ("unix", "")]
        .into_iter()
        .filter(|&(_, addr)| ipv6 || addr != "[::1]:0")
        .collect();
    for (transport, inet) in targets {
        let srv = start_server(&bin, "epoll", transport, "1", inet);
        for (n, depth) in [("1", "1"), ("10", "3")] {
            let what = format!("{transport} {} N={n}", srv.addr);
            let run = run_loadgen(
                &[
                    &srv.addr,
                    "--transport",
                    transport,
                    "--io",
                    "uring",
                    "--conn-msgs",
                    n,
                    "--depth",
                    depth,
                    "--size",
                    "300",
                    "--conns",
                    "4",
                    "--duration",
                    "700ms",
                    "--warmup",
                    "100ms",
                ],
                &dir,
            );
            assert_eq!(run.code(), 0, "{what}: {}", run.stderr);
            let r = run.result();
            assert_eq!(r.settings.io.as_deref(), Some("uring"), "{what}");
            let c = conversations(&run);
            assert!(c.completed > 10, "{what}: only {} conversations", c.completed);
            assert_eq!(c.failed.total(), 0, "{what}: {:?}", c.failed);
            assert_eq!(r.errors.total(), 0, "{what}: {:?}", r.errors);
            // Every byte of every message was echoed and checked.
            assert_eq!(r.bytes, r.messages * 300, "{what}");
            let n: u64 = n.parse().unwrap();
            assert!(r.messages + 4 * (n - 1) >= c.completed * n, "{what}");
            assert!(c.connect_us.p50 > 0.0 && c.conversation_us.p50 >= c.connect_us.p50);
            assert_eq!(c.time_wait_at_end.is_some(), transport == "tcp", "{what}");
            // Towards 127.0.0.1 the connections spread over 8 source
            // addresses (each bound on the ring); elsewhere the kernel picks.
            let spread = (inet == "127.0.0.1:0").then_some(8);
            assert_eq!(c.source_addrs, spread, "{what}");
        }
    }
}

#[test]
fn a_killed_server_leaves_refused_conversations_counted() {
    let _serial = one_at_a_time();
    let Some(bin) = server_bin("killed server") else { return };
    if !uring_here("killed server") {
        return;
    }
    let mut srv = start_server(&bin, "epoll", "tcp", "1", "127.0.0.1:0");
    let pid = srv.child.id();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        // SAFETY: kill(2) on our own child process, not reaped yet.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    });
    let dir = temp_dir("uring-conv-killed");
    let run = run_loadgen(
        &[
            &srv.addr,
            "--io",
            "uring",
            "--conn-msgs",
            "1",
            "--conns",
            "2",
            "--duration",
            "1500ms",
            "--warmup",
            "100ms",
        ],
        &dir,
    );
    killer.join().unwrap();
    let _ = srv.child.wait();
    let c = conversations(&run);
    assert!(c.completed > 0, "none before the server died");
    assert!(c.failed.refused > 0, "{:?}", c.failed);
    assert_eq!(run.code(), 1, "refused conversations fail the run: {}", run.stderr);
}

/// Counts the sockets in `pid`'s descriptor table.
fn socket_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:")))
                .count()
        })
        .unwrap_or(0)
}

/// The most sockets loadgen had in its descriptor table at once, sampled
/// while it ran 40 conversations at a time on `io`.
fn most_socket_fds(server: &str, io: &str) -> usize {
    let mut child = Command::new(loadgen_bin())
        .args([server, "--io", io, "--conn-msgs", "1", "--conns", "40"])
        .args(["--duration", "800ms", "--warmup", "100ms"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn loadgen");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut most = 0;
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        most = most.max(socket_fds(child.id()));
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{io}: {}", String::from_utf8_lossy(&out.stderr));
    most
}

#[test]
fn ring_conversations_keep_their_sockets_out_of_the_descriptor_table() {
    let _serial = one_at_a_time();
    if !uring_here("descriptor table") {
        return;
    }
    let srv = tcp_server(Fault::None);
    // The measurement sees sockets where there are some: epoll's are
    // descriptors, most of 40 open at any moment.
    let epoll = most_socket_fds(&srv.addr, "epoll");
    assert!(epoll >= 10, "epoll: at most {epoll} socket descriptors seen");
    let uring = most_socket_fds(&srv.addr, "uring");
    assert_eq!(
        uring, 0,
        "uring: direct descriptors only, but {uring} socket descriptors seen"
    );
}

#[test]
fn a_missing_opcode_refuses_io_uring_and_auto_runs_on_epoll() {
    let _serial = one_at_a_time();
    let srv = tcp_server(Fault::None);
    let dir = temp_dir("uring-conv-missing");
    let run_with = |io: &str| {
        let out = dir.join(format!("{io}.json"));
        let o = Command::new(loadgen_bin())
            .env(loadgen::worker::HIDE_OPCODE_ENV, "IORING_OP_SOCKET")
            .args([&srv.addr, "--io", io, "--conn-msgs", "1", "--conns", "2"])
            .args(["--duration", "500ms", "--warmup", "100ms", "--out"])
            .arg(&out)
            .output()
            .unwrap();
        let result: Option<loadgen::result::RunResult> = std::fs::read_to_string(&out)
            .ok()
            .map(|t| serde_json::from_str(&t).unwrap());
        (o, result)
    };
    let (o, result) = run_with("uring");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--io uring") && stderr.contains("IORING_OP_SOCKET"),
        "{stderr}"
    );
    assert!(result.is_none(), "nothing was run");
    let (o, result) = run_with("auto");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("IORING_OP_SOCKET"),
        "{stderr}"
    );
    let r = result.expect("a result file");
    assert_eq!(r.settings.io.as_deref(), Some("epoll"), "the path that ran");
    assert!(r.conversations.expect("conversations").completed > 0);
}

#[test]
fn auto_runs_conversations_on_the_ring_where_the_kernel_can() {
    let _serial = one_at_a_time();
    if !uring_here("auto") {
        return;
    }
    let srv = unix_server();
    let dir = temp_dir("uring-conv-auto");
    let run = run_loadgen(
        &[
            &srv.addr,
            "--transport",
            "unix",
            "--conn-msgs",
            "2",
            "--conns",
            "3",
            "--duration",
            "500ms",
            "--warmup",
            "100ms",
        ],
        &dir,
    );
    assert_eq!(run.code(), 0, "{}", run.stderr);
    assert_eq!(run.result().settings.io.as_deref(), Some("uring"));
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);
    assert!(conversations(&run).completed > 10);
}
