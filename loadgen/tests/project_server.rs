//! loadgen against the project's own `server`, every backend over tcp, udp
//! and unix. `cargo test --workspace` builds `server`; when it is missing the
//! tests say so and pass. Backends whose server reports "not implemented yet"
//! are skipped by name.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::*;

const BACKENDS: [&str; 4] = ["fork", "threadpool", "epoll", "uring"];

struct Server {
    child: Child,
    addr: String,
    _dir: Option<std::path::PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(d) = &self._dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

enum Start {
    Up(Server),
    NotImplemented,
}

fn start(bin: &std::path::Path, backend: &str, transport: &str) -> Start {
    let mut cmd = Command::new(bin);
    cmd.args(["--backend", backend, "--transport", transport, "--threads", "1"]);
    let dir = if transport.starts_with("unix") {
        let d = temp_dir(&format!("srv-{backend}"));
        cmd.arg("--path").arg(d.join("s.sock"));
        Some(d)
    } else {
        cmd.args(["--addr", "127.0.0.1:0"]);
        None
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) if line.starts_with("listening") => {
                let addr = listening_addr(&line).expect("listening line has addr=");
                return Start::Up(Server { child, addr, _dir: dir });
            }
            Ok(_) => continue,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let mut err = String::new();
                let _ = child.stderr.take().unwrap().read_to_string(&mut err);
                if err.contains("not implemented yet") {
                    return Start::NotImplemented;
                }
                panic!("{backend}/{transport}: server did not start: {err}");
            }
        }
    }
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
            let srv = match start(&bin, backend, transport) {
                Start::Up(s) => s,
                Start::NotImplemented => {
                    eprintln!("skipped: {backend}: not implemented yet");
                    break;
                }
            };
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
                r.errors.mismatch + r.errors.reset + r.errors.duplicate + r.errors.connect,
                0,
                "{backend}/{transport}: {:?}",
                r.errors
            );
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
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn server_killed_mid_run_gives_incomplete_result_in_bounded_time() {
    let Some(bin) = project_server_bin() else {
        eprintln!("skipped: the `server` binary is not built beside this test");
        return;
    };
    let Some(mut srv) = BACKENDS.iter().rev().find_map(|b| match start(&bin, b, "tcp") {
        Start::Up(s) => Some(s),
        Start::NotImplemented => None,
    }) else {
        eprintln!("skipped: no backend implemented yet");
        return;
    };
    let dir = temp_dir("killed");
    let pid = srv.child.id() as i32;
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        // SAFETY: kill(2) on our own child process.
        unsafe { libc::kill(pid, libc::SIGKILL) };
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
    killer.join().unwrap();
    let _ = srv.child.wait();
    assert_ne!(run.code(), 0);
    assert!(run.elapsed < Duration::from_secs(8), "took {:?}", run.elapsed);
    let r = run.result();
    assert!(!r.complete);
    assert!(r.errors.reset > 0, "{:?}", r.errors);
    assert!(run.stderr.contains("did the server die"), "{}", run.stderr);
    let _ = std::fs::remove_dir_all(dir);
}
