//! The server fits itself to the machine's limits, or says why it cannot:
//! `ulimit -n` against `--max-conns`, the thread limits against
//! threadpool's `--threads`, and threadpool's fixed pool against the
//! connections it accepts.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use std::time::Duration;

use common::client::{pattern, Stream};
use common::{field, run_to_exit, server_bin, with_nofile, ServerProc, Target};

/// What a started server said: its `listening` line (if any), its stderr,
/// and its soft `RLIMIT_NOFILE` as `/proc` shows it while it runs.
struct Started {
    listening: Option<String>,
    stderr: String,
    soft_nofile: Option<u64>,
    code: Option<i32>,
}

/// Starts `cmd`, reads its first stdout line, then stops it with SIGTERM.
fn start_and_stop(mut cmd: Command) -> Started {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn server");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let _ = out.read_line(&mut line);
    let listening = line.starts_with("listening").then(|| line.trim().to_string());
    let soft_nofile = std::fs::read_to_string(format!("/proc/{}/limits", child.id()))
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        });
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    Started {
        listening,
        stderr,
        soft_nofile,
        code: status.code(),
    }
}

fn server(backend: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(server_bin());
    cmd.args(["--backend", backend, "--addr", "127.0.0.1:0"]).args(args);
    if !args.contains(&"--threads") {
        cmd.args(["--threads", "2"]);
    }
    cmd
}

/// A soft `ulimit -n` below what `--max-conns` needs is raised to the hard limit.
#[test]
fn the_soft_fd_limit_is_raised_to_the_hard_one() {
    for backend in ["epoll", "threadpool", "uring", "fork"] {
        let mut cmd = server(backend, &["--max-conns", "2000"]);
        with_nofile(&mut cmd, 256, 4096);
        let s = start_and_stop(cmd);
        let Some(line) = s.listening else {
            if backend == "uring" {
                eprintln!("skipped uring: {}", s.stderr);
                continue;
            }
            panic!("{backend}: did not start: {}", s.stderr);
        };
        assert_eq!(field(&line, "max_conns"), Some("2000"), "{backend}: {line}");
        assert_eq!(s.soft_nofile, Some(4096), "{backend}: soft limit not raised");
        assert!(!s.stderr.contains("lowered"), "{backend}: {}", s.stderr);
    }
}

/// When even the hard limit cannot hold `--max-conns`, the cap is lowered
/// to what fits in the tables the backend spreads connections over, and
/// stderr says so; when nothing fits, exit 2 names the flag.
#[test]
fn max_conns_is_lowered_to_what_the_fd_limit_holds() {
    for backend in ["epoll", "threadpool", "uring"] {
        let mut cmd = server(backend, &["--max-conns", "2000"]);
        with_nofile(&mut cmd, 256, 256);
        let s = start_and_stop(cmd);
        let Some(line) = s.listening else {
            if backend == "uring" {
                eprintln!("skipped uring: {}", s.stderr);
                continue;
            }
            panic!("{backend}: did not start: {}", s.stderr);
        };
        let cap: usize = field(&line, "max_conns").unwrap().parse().unwrap();
        // Two threads: epoll's each have a table, uring's rings a fixed file
        // table each (up to the limit); threadpool's share one table.
        let (tables, per_table) = match backend {
            "epoll" => (2, 256 - (64 + 4 * 2)),
            "uring" => (2, 256),
            _ => (1, 256 - 64),
        };
        assert_eq!(cap, tables * per_table, "{backend}: {line}");
        assert_eq!(
            field(&line, "cap"),
            Some(format!("{tables}x{per_table}").as_str()),
            "{backend}: {line}"
        );
        assert!(
            s.stderr.contains("--max-conns lowered from 2000 to"),
            "{backend}: no warning on stderr: {:?}",
            s.stderr
        );
    }
    let mut cmd = server("epoll", &[]);
    with_nofile(&mut cmd, 40, 40);
    let s = start_and_stop(cmd);
    assert_eq!(s.code, Some(2), "{:?}", s.stderr);
    assert!(
        s.stderr.contains("--max-conns") && s.stderr.contains("ulimit -n"),
        "{}",
        s.stderr
    );
}

/// threadpool's `--threads` is held against the machine's limits before any
/// worker starts: past `kernel.threads-max`/`pid_max`, or past a lowered
/// `RLIMIT_NPROC`, the server exits 2 naming `--threads` and the limit.
/// Event-loop backends keep their 1,024 cap, also exit 2.
#[test]
fn threads_past_the_machines_limits_are_refused_by_name() {
    let limit = Duration::from_secs(10);
    let (code, stderr) = run_to_exit(server("threadpool", &["--threads", "5000000"]), limit);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--threads 5000000"), "{stderr}");
    assert!(
        stderr.contains("threads-max") || stderr.contains("pid_max") || stderr.contains("NPROC"),
        "{stderr}"
    );

    let mut cmd = server("threadpool", &["--threads", "500"]);
    // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 200,
                rlim_max: 200,
            };
            if libc::setrlimit(libc::RLIMIT_NPROC, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (code, stderr) = run_to_exit(cmd, limit);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--threads 500") && stderr.contains("RLIMIT_NPROC"),
        "{stderr}"
    );

    for backend in ["epoll", "uring", "fork"] {
        let (code, stderr) = run_to_exit(server(backend, &["--threads", "2000"]), limit);
        assert_eq!(code, Some(2), "{backend}: {stderr}");
        assert!(stderr.contains("--threads 2000"), "{backend}: {stderr}");
    }
}

/// 2,000 workers start (past the old 1,024 cap) and serve.
#[test]
fn threadpool_starts_past_the_old_1024_worker_cap() {
    let cmd = server("threadpool", &["--threads", "2000"]);
    let s = start_and_stop(cmd);
    let line = s.listening.unwrap_or_else(|| panic!("did not start: {}", s.stderr));
    assert_eq!(field(&line, "workers"), Some("2000"), "{line}");
    assert_eq!(s.code, Some(0), "{}", s.stderr);
}

/// threadpool's pool is fixed (see its module doc): with 2 workers, the
/// start says that 2 connections are served at once (stderr, and `at_once=`
/// in `listening`); a third and fourth client are accepted but wait
/// unanswered until a worker is free, and the summary's `queued_max` counts
/// them.
#[test]
fn threadpool_says_it_serves_only_its_pool_and_counts_the_queue() {
    let s = start_and_stop(server("threadpool", &["--threads", "2", "--max-conns", "100"]));
    let line = s.listening.unwrap_or_else(|| panic!("did not start: {}", s.stderr));
    assert_eq!(field(&line, "at_once"), Some("2"), "{line}");
    assert!(
        s.stderr.contains("serves 2 connections at once") && s.stderr.contains("98 more"),
        "{}",
        s.stderr
    );

    let server = ServerProc::start("threadpool", Target::Tcp4, &["--threads", "2"]);
    let mut clients: Vec<Stream> = (0..4).map(|_| Stream::connect(&server.endpoint).unwrap()).collect();
    let msg = pattern(9, 0, 100);
    for c in &mut clients[..2] {
        assert_eq!(c.echo(&msg).unwrap(), msg, "a worker is free for each of the first two");
    }
    let mut queued = clients.split_off(2);
    for c in &mut queued {
        c.write_all(&msg).unwrap();
        c.set_timeouts(Some(Duration::from_millis(300))).unwrap();
        let mut byte = [0u8; 1];
        let got = c.read(&mut byte);
        assert!(got.is_err(), "a queued connection was answered: {got:?}");
        c.set_timeouts(Some(Duration::from_secs(10))).unwrap();
    }
    // A worker comes free: the first queued client is served, every byte.
    drop(clients);
    let mut back = vec![0u8; msg.len()];
    queued[0].read_exact(&mut back).unwrap();
    assert_eq!(back, msg);
    let stopped = server.stop();
    assert_eq!(stopped.count("queued_max"), 2, "{:?}", stopped.summary);
}

/// Descriptor limits bound each table, not the process: an epoll worker
/// takes a table of its own and a uring ring's connections sit in its fixed
/// file table, so with `ulimit -n` 256 two workers hold 300 connections
/// (more than one table could; epoll's cap is 2 x 184, uring's 2 x 256),
/// every echo checked; the `listening` line
/// shows the cap as tables x connections per table. threadpool's threads
/// share one table, and its cap says so.
#[test]
fn connections_past_one_descriptor_table_are_held_by_epoll_and_uring() {
    const CONNS: usize = 300;
    for backend in ["epoll", "uring"] {
        let mut cmd = Command::new(server_bin());
        cmd.args([
            "--backend",
            backend,
            "--addr",
            "127.0.0.1:0",
            "--threads",
            "2",
            "--max-conns",
            "360",
        ]);
        with_nofile(&mut cmd, 256, 256);
        let server = match ServerProc::spawn(cmd, None) {
            Ok(s) => s,
            Err(e) if backend == "uring" => {
                eprintln!("skipped uring: {e}");
                continue;
            }
            Err(e) => panic!("{backend}: {e}"),
        };
        let line = server.listening.clone();
        assert_eq!(field(&line, "max_conns"), Some("360"), "{backend}: not lowered: {line}");
        let cap = field(&line, "cap").unwrap_or_else(|| panic!("{backend}: no cap= in {line}"));
        assert!(cap.starts_with("2x"), "{backend}: {line}");
        let mut clients: Vec<Stream> = (0..CONNS)
            .map(|i| Stream::connect(&server.endpoint).unwrap_or_else(|e| panic!("{backend}: connect {i}: {e}")))
            .collect();
        for (i, c) in clients.iter_mut().enumerate() {
            c.set_timeouts(Some(Duration::from_secs(5))).unwrap();
            let msg = pattern(i as u64, 0, 64);
            let back = c
                .echo(&msg)
                .unwrap_or_else(|e| panic!("{backend}: connection {i} unanswered: {e}"));
            assert_eq!(back, msg, "{backend}: connection {i}");
        }
        drop(clients);
        let stopped = server.stop();
        assert_eq!(
            stopped.count("accepted"),
            CONNS as u64,
            "{backend}: {:?}",
            stopped.summary
        );
        assert_eq!(stopped.count("errors"), 0, "{backend}: {:?}", stopped.summary);
    }
    let mut cmd = server("threadpool", &["--max-conns", "400"]);
    with_nofile(&mut cmd, 256, 256);
    let s = start_and_stop(cmd);
    let line = s.listening.unwrap_or_else(|| panic!("did not start: {}", s.stderr));
    assert_eq!(field(&line, "cap"), Some("1x192"), "{line}");
    assert!(
        s.stderr.contains("lowered from 400 to 192 (1 table of 192)"),
        "{}",
        s.stderr
    );
}
