//! `loadgen --conn-msgs N`: conversations against in-test servers with known
//! behaviour, each over both I/O paths (`--io epoll`, and `--io uring` where
//! the kernel can: `conversation_io_modes`). Each run is short (at most a few
//! seconds) and every wait is bounded. The project's own server, and what
//! only the ring path does, are in `uring_conversations.rs`.

mod support;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use loadgen::conversation::Conversations;
use support::*;

fn conversations(run: &Run) -> &Conversations {
    run.result()
        .conversations
        .as_ref()
        .unwrap_or_else(|| panic!("no conversations object; stderr:\n{}", run.stderr))
}

/// A short closed-loop conversation run against `target` on I/O path `io`,
/// with `extra` flags.
fn converse(io: &str, target: &str, transport: &str, extra: &[&str]) -> Run {
    let dir = temp_dir("conv");
    let mut args = vec![
        target,
        "--io",
        io,
        "--transport",
        transport,
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--timeout",
        "500ms",
    ];
    args.extend_from_slice(extra);
    let run = run_loadgen(&args, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    run
}

/// Every conversation completed, each with all its echoes checked, on I/O path `io`.
fn assert_clean(run: &Run, io: &str, msgs: u64) {
    assert_eq!(run.code(), 0, "{io}: stderr:\n{}", run.stderr);
    assert_eq!(run.result().settings.io.as_deref(), Some(io));
    let c = conversations(run);
    assert_eq!(c.msgs_per_conn, msgs);
    assert!(c.completed > 10, "only {} conversations", c.completed);
    assert_eq!(c.failed.total(), 0, "{:?}", c.failed);
    assert_eq!(run.result().errors.mismatch, 0);
    assert!(c.connect_us.p50 > 0.0 && c.conversation_us.p50 >= c.connect_us.p50);
    assert_eq!(c.closes_first, "loadgen");
    // Every message of every completed conversation was echoed; only each
    // connection's first conversation in the window may have echoed some of
    // them before the window opened.
    let r = run.result();
    assert!(r.messages + r.settings.conns * (msgs - 1) >= c.completed * msgs);
    assert!(c.loadgen_cpu_us_per_conn.is_some_and(|us| us > 0.0));
}

#[test]
fn tcp4_conversations_of_three_echoes_at_depth_two() {
    let _serial = one_at_a_time();
    let server = tcp_server(Fault::None);
    for io in conversation_io_modes("tcp4") {
        let run = converse(
            io,
            &server.addr,
            "tcp",
            &["--conn-msgs", "3", "--depth", "2", "--conns", "4"],
        );
        assert_clean(&run, io, 3);
        assert!(
            run.stderr.is_empty() || !run.stderr.contains("warning"),
            "{io}: {}",
            run.stderr
        );
        assert!(String::from_utf8_lossy(&run.output.stdout).contains("Conversations"));
    }
}

#[test]
fn unix_connect_request_response_close() {
    let _serial = one_at_a_time();
    let server = unix_server();
    for io in conversation_io_modes("unix") {
        let run = converse(io, &server.addr, "unix", &["--conn-msgs", "1", "--conns", "4"]);
        assert_clean(&run, io, 1);
        assert_eq!(conversations(&run).time_wait_at_end, None, "TIME_WAIT is TCP's");
    }
}

/// A thread-per-connection echo server on [::1]:0, or `None` without IPv6.
fn tcp6_server() -> Option<String> {
    let l = TcpListener::bind("[::1]:0").ok()?;
    let addr = l.local_addr().ok()?.to_string();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let _ = std::io::copy(&mut s, &mut w);
            });
        }
    });
    Some(addr)
}

#[test]
fn tcp6_conversations() {
    let _serial = one_at_a_time();
    let Some(addr) = tcp6_server() else {
        eprintln!("skipped: no IPv6 loopback");
        return;
    };
    for io in conversation_io_modes("tcp6") {
        let run = converse(io, &addr, "tcp", &["--conn-msgs", "2", "--conns", "2"]);
        assert_clean(&run, io, 2);
        assert!(conversations(&run).time_wait_at_end.is_some());
    }
}

#[test]
fn open_loop_conversations_start_on_schedule() {
    let _serial = one_at_a_time();
    let server = tcp_server(Fault::None);
    for io in conversation_io_modes("open loop") {
        let run = converse(
            io,
            &server.addr,
            "tcp",
            &["--conn-msgs", "2", "--conns", "8", "--rate", "200"],
        );
        assert_eq!(run.code(), 0, "{io}: stderr:\n{}", run.stderr);
        assert_eq!(run.result().settings.io.as_deref(), Some(io));
        let c = conversations(&run);
        assert_eq!(c.requested_per_s, Some(200.0));
        let scheduled = c.scheduled.unwrap();
        assert!(
            (190..=210).contains(&scheduled),
            "{io}: {scheduled} scheduled in 1 s at 200/s"
        );
        // Those in flight when the window closes complete after it (a busy
        // shared machine can hold a few of them up).
        assert!(
            c.completed * 10 >= scheduled * 9,
            "{io}: {} of {scheduled} completed",
            c.completed
        );
        assert_eq!(c.failed.total(), 0, "{io}: {:?}", c.failed);
        // The message rate asked for is the conversations' times their messages.
        assert_eq!(run.result().throughput.requested_msgs_per_s, Some(400.0));
    }
}

#[test]
fn datagram_transports_refuse_conn_msgs() {
    let dir = temp_dir("conv-dgram");
    for (transport, target) in [("udp", "127.0.0.1:9"), ("unixgram", "/nonexistent/s.sock")] {
        let run = run_loadgen(
            &[target, "--transport", transport, "--conn-msgs", "1", "--duration", "2s"],
            &dir,
        );
        assert_eq!(run.code(), 2, "{transport}: {}", run.stderr);
        assert!(run.stderr.contains("--conn-msgs"), "{transport}: {}", run.stderr);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn no_server_is_refused_at_once() {
    let _serial = one_at_a_time();
    // A port that was free a moment ago: nothing listens there.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    for io in conversation_io_modes("no server") {
        let run = converse(io, &addr, "tcp", &["--conn-msgs", "1", "--conns", "4"]);
        assert_eq!(run.code(), 1, "{io}: stderr:\n{}", run.stderr);
        assert!(
            run.stderr.contains("cannot reach") && run.stderr.contains("Connection refused"),
            "{io}: {}",
            run.stderr
        );
        assert!(run.elapsed < Duration::from_secs(5), "{io}: took {:?}", run.elapsed);
    }
}

#[test]
fn a_server_that_dies_leaves_refused_conversations_counted() {
    let _serial = one_at_a_time();
    for io in conversation_io_modes("server dies") {
        let server = tcp_server(Fault::DieAfter(Duration::from_millis(400)));
        let run = converse(io, &server.addr, "tcp", &["--conn-msgs", "1", "--conns", "2"]);
        let c = conversations(&run);
        assert!(c.completed > 0, "{io}: none before the server died");
        assert!(c.failed.refused > 0, "{io}: {:?}", c.failed);
        assert_eq!(run.code(), 1, "{io}: refused conversations fail the run");
        assert!(run.stderr.contains("never connected"), "{io}: {}", run.stderr);
        assert!(run.elapsed < Duration::from_secs(6), "{io}: took {:?}", run.elapsed);
    }
}

/// A server that reads a little of each connection, then resets it
/// (`SO_LINGER` 0 and close: an RST, no FIN).
fn resetting_server() -> (String, Arc<AtomicBool>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    l.set_nonblocking(true).unwrap();
    thread::spawn(move || {
        while !stop2.load(SeqCst) {
            let Ok((mut s, _)) = l.accept() else {
                thread::sleep(Duration::from_millis(1));
                continue;
            };
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            let mut buf = [0u8; 16];
            let _ = s.read(&mut buf);
            linger_zero(&s);
        }
    });
    (addr, stop)
}

fn linger_zero(s: &TcpStream) {
    let lg = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `lg` outlives the call, which copies it; the descriptor is open.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&s.as_fd()),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&lg as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

#[test]
fn a_reset_is_counted_and_the_next_conversation_starts() {
    let _serial = one_at_a_time();
    let (addr, stop) = resetting_server();
    for io in conversation_io_modes("reset") {
        let run = converse(io, &addr, "tcp", &["--conn-msgs", "1", "--conns", "2"]);
        let c = conversations(&run);
        assert_eq!(c.completed, 0, "{io}");
        // A back-off follows each failure, so a few, not thousands.
        assert!(c.failed.reset >= 2 && c.failed.reset < 1000, "{io}: {:?}", c.failed);
        assert_eq!(run.result().errors.mismatch, 0);
        assert_eq!(run.code(), 1, "{io}: nothing was echoed: the run fails");
    }
    stop.store(true, SeqCst);
}

#[test]
fn a_listener_that_never_accepts_counts_not_accepted_and_unanswered() {
    let _serial = one_at_a_time();
    // Backlog 0: the kernel completes one handshake (unanswered: nobody
    // reads it), and drops the SYNs after it (the connect never completes).
    for io in conversation_io_modes("never accepts") {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        sockbench::sys::listen(l.as_fd(), 0).unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let run = converse(io, &addr, "tcp", &["--conn-msgs", "1", "--conns", "4"]);
        drop(l);
        let c = conversations(&run);
        assert_eq!(c.completed, 0, "{io}");
        assert!(c.failed.not_accepted > 0, "{io}: {:?}", c.failed);
        assert!(c.failed.not_accepted + c.failed.unanswered >= 4, "{io}: {:?}", c.failed);
        assert_eq!(c.failed.other + c.failed.refused, 0, "{io}: {:?}", c.failed);
        assert!(run.elapsed < Duration::from_secs(6), "{io}: took {:?}", run.elapsed);
    }
}

/// Runs `script` in a new network namespace (as root, with `unshare` and
/// `ip`), or says why it cannot.
fn in_netns(script: &str) -> Result<std::process::Output, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("network namespaces need root".into());
    }
    let out = std::process::Command::new("timeout")
        .args(["20", "unshare", "--net", "sh", "-c", script])
        .output()
        .map_err(|e| format!("unshare: {e}"))?;
    if String::from_utf8_lossy(&out.stderr).contains("unshare failed") {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(out)
}

#[test]
fn out_of_source_ports_ends_the_run_naming_local_addrs() {
    let _serial = one_at_a_time();
    let Some(server) = project_server_bin() else {
        eprintln!("skipped: the project's server is not built");
        return;
    };
    for io in conversation_io_modes("out of ports") {
        // Two source ports, and no reuse of a port in TIME_WAIT: the third
        // conversation cannot connect (EADDRNOTAVAIL).
        let script = format!(
            "ip link set lo up || exit 97; \
             echo '40000 40001' > /proc/sys/net/ipv4/ip_local_port_range || exit 97; \
             echo 0 > /proc/sys/net/ipv4/tcp_tw_reuse || exit 97; \
             {server} --backend epoll --addr 127.0.0.1:7999 --threads 1 >/dev/null 2>&1 & \
             sleep 0.3; \
             {loadgen} 127.0.0.1:7999 --io {io} --conn-msgs 1 --conns 1 --duration 3s --warmup 0s; \
             echo exit=$?; kill $!",
            server = server.display(),
            loadgen = loadgen_bin()
        );
        let out = match in_netns(&script) {
            Ok(o) if o.status.code() != Some(97) => o,
            Ok(o) => return eprintln!("skipped: {}", String::from_utf8_lossy(&o.stderr)),
            Err(why) => return eprintln!("skipped: {why}"),
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stdout.contains("exit=1"), "{io}: stdout:\n{stdout}\nstderr:\n{stderr}");
        assert!(
            stderr.contains("EADDRNOTAVAIL") && stderr.contains("--local-addrs"),
            "{io}: {stderr}"
        );
        assert!(stdout.contains("out of ports 1"), "{io}: {stdout}");
    }
}

#[test]
fn merged_runs_add_their_conversations() {
    let _serial = one_at_a_time();
    let server = tcp_server(Fault::None);
    let dir = temp_dir("conv-merge");
    // Two loadgens at once: merge refuses windows that do not overlap.
    let runs: Vec<Run> = thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let (addr, dir) = (&server.addr, &dir);
                s.spawn(move || {
                    run_loadgen(
                        &[
                            addr,
                            "--conn-msgs",
                            "2",
                            "--conns",
                            "2",
                            "--duration",
                            "1s",
                            "--warmup",
                            "200ms",
                        ],
                        dir,
                    )
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let inputs: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(inputs.len(), 2, "{}", runs[0].stderr);
    let total = dir.join("total.json");
    let out = std::process::Command::new(loadgen_bin())
        .arg("merge")
        .args(&inputs)
        .arg("--out")
        .arg(&total)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let merged: loadgen::result::RunResult = serde_json::from_str(&std::fs::read_to_string(&total).unwrap()).unwrap();
    let c = merged.conversations.expect("merged conversations");
    let sum: u64 = runs.iter().map(|r| conversations(r).completed).sum();
    assert_eq!(c.completed, sum);
    assert_eq!(c.msgs_per_conn, 2);
    assert_eq!(c.server_cpu_us_per_conn, None);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_unix_listener_that_never_accepts_counts_not_accepted() {
    let _serial = one_at_a_time();
    // A full Unix backlog refuses a non-blocking connect with EAGAIN at once.
    for io in conversation_io_modes("unix backlog") {
        let dir = temp_dir("conv-unix-backlog");
        let path = dir.join("s.sock");
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        sockbench::sys::listen(l.as_fd(), 0).unwrap();
        let run = converse(
            io,
            path.to_str().unwrap(),
            "unix",
            &["--conn-msgs", "1", "--conns", "4"],
        );
        drop(l);
        let c = conversations(&run);
        assert_eq!(c.completed, 0, "{io}");
        assert!(c.failed.not_accepted > 0, "{io}: {:?}", c.failed);
        assert!(run.elapsed < Duration::from_secs(6), "{io}: took {:?}", run.elapsed);
    }
}
