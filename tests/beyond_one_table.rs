//! More connections than one descriptor table holds (issue 25): the epoll
//! server (a descriptor table per event loop) and the uring server (a fixed
//! file table per ring) each hold 25,000 TCP connections from loadgen with a
//! soft AND hard `RLIMIT_NOFILE` of 20,000 on both processes, so neither
//! could do it in one table. loadgen checks every echo; the test asserts that
//! all 25,000 came up and carried load, no error of any kind (connect,
//! reset, timeout, mismatch, in warm-up or measured), and the server's
//! summary `accepted=25000 errors=0 closed_with_pending=0` (loadgen drains
//! its echoes before it closes).
//!
//! In its own file so that it runs alone: it takes both cores for about ten
//! seconds per backend. Connects are paced at 8,000/s, well within what a
//! backlog of `somaxconn` (4,096 here) per listener takes. loadgen runs
//! with `--io epoll` against the epoll server and with its default (io_uring
//! where the kernel has it) against the uring server, so both of its I/O
//! paths drain. The uring half is skipped, saying why, only where io_uring
//! is unavailable. loadgen is the workspace's own build, beside `server`
//! (`cargo test --workspace` builds it).

mod common;

use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use common::{field, kernel_without_uring, loadgen_bin, run_to_exit, server_bin, with_nofile, ServerProc};

const CONNS: u64 = 25_000;
/// Soft and hard `RLIMIT_NOFILE` of both processes: below `CONNS`.
const NOFILE: u64 = 20_000;
/// Paced connects per second (loadgen's `--connect-rate`).
const CONNECT_RATE: &str = "8000";
/// Longest a loadgen run may take: ramp (about 3 s), warm-up, measured
/// phase, drain and closing 25,000 sockets, with room for a busy machine.
const LOADGEN_LIMIT: Duration = Duration::from_secs(60);

/// A number from the loadgen result, by JSON pointer; absent counts as 0.
fn num(result: &serde_json::Value, pointer: &str) -> u64 {
    result.pointer(pointer).and_then(|v| v.as_u64()).unwrap_or(0)
}

/// Runs loadgen (under the same limit) against `addr`; returns its result
/// file, parsed, and its stderr. Killed, and the test failed, past `LOADGEN_LIMIT`.
fn run_loadgen(backend: &str, addr: &str, io: &str) -> (serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("result.json");
    let mut cmd = Command::new(loadgen_bin());
    cmd.arg(addr)
        .args(["--conns", &CONNS.to_string(), "--threads", "2"])
        .args(["--local-addrs", "127.0.0.1-127.0.0.2", "--connect-rate", CONNECT_RATE])
        .args(["--warmup", "1s", "--duration", "3s", "--timeout", "5s", "--io", io])
        .args(["--backend", backend, "--out"])
        .arg(&out);
    with_nofile(&mut cmd, NOFILE, NOFILE);
    let (code, stderr) = run_to_exit(cmd, LOADGEN_LIMIT);
    let code = code.unwrap_or_else(|| panic!("{backend}: loadgen ran past {LOADGEN_LIMIT:?}:\n{stderr}"));
    let text = std::fs::read_to_string(&out)
        .unwrap_or_else(|e| panic!("{backend}: no result file ({e}); loadgen exited {code}:\n{stderr}"));
    let result: serde_json::Value = serde_json::from_str(&text).expect("the result parses");
    assert_eq!(code, 0, "{backend}: loadgen exited {code}:\n{stderr}");
    (result, stderr)
}

/// Each test takes both cores: they run one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn holds_25000_past_one_table(backend: &str, io: &str) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut cmd = Command::new(server_bin());
    cmd.args(["--backend", backend, "--addr", "127.0.0.1:0", "--threads", "2"])
        .args(["--max-conns", &CONNS.to_string()]);
    with_nofile(&mut cmd, NOFILE, NOFILE);
    let server = match ServerProc::spawn(cmd, None) {
        Ok(s) => s,
        Err(e) => match (backend, kernel_without_uring()) {
            ("uring", Some(why)) => {
                eprintln!("skipped uring: {why}; the uring backend cannot start ({e})");
                return;
            }
            _ => panic!("{backend}: the server did not start: {e}"),
        },
    };
    let line = server.listening.clone();
    // Two tables (event loops or rings), each under the limit: the cap is
    // their sum, and `--max-conns` is not lowered.
    let cap = field(&line, "cap").unwrap_or_else(|| panic!("{backend}: no cap= in {line}"));
    assert!(cap.starts_with("2x"), "{backend}: {line}");
    assert_eq!(field(&line, "max_conns"), Some("25000"), "{backend}: {line}");
    let addr = field(&line, "addr").unwrap().to_string();

    let (r, stderr) = run_loadgen(backend, &addr, io);
    let stopped = server.stop();
    let summary = stopped.summary.clone().unwrap_or_default();
    let ctx = format!("{backend}: server {summary:?}\nloadgen stderr:\n{stderr}");

    assert_eq!(r["failures"], serde_json::json!([]), "{ctx}");
    assert_eq!(r["complete"], serde_json::json!(true), "{ctx}");
    for (what, errors) in [("measured", &r["errors"]), ("warm-up", &r["warmup_errors"])] {
        let map = errors.as_object().unwrap_or_else(|| panic!("{ctx}: no {what} errors"));
        assert!(!map.is_empty(), "{ctx}");
        for (kind, n) in map {
            assert_eq!(n.as_u64(), Some(0), "{what} errors: {kind}: {ctx}");
        }
    }
    assert_eq!(num(&r, "/extra/conns_up"), CONNS, "all up: {ctx}");
    assert_eq!(num(&r, "/extra/conns_carried_load"), CONNS, "all carried load: {ctx}");
    assert_eq!(num(&r, "/extra/conns_unanswered"), 0, "{ctx}");
    // Paced at CONNECT_RATE, the last connect is due 3.1 s after the first.
    let ramp = r.pointer("/extra/connect_ramp_s").and_then(|v| v.as_f64());
    assert!(ramp.is_some_and(|s| s >= 3.0), "connect ramp {ramp:?}: {ctx}");
    let messages = num(&r, "/messages");
    assert!(messages > CONNS, "every connection echoed: {messages} echoes: {ctx}");

    assert!(stopped.status.success(), "{ctx}");
    assert_eq!(stopped.count("accepted"), CONNS, "{ctx}");
    assert_eq!(stopped.count("errors"), 0, "{ctx}");
    assert_eq!(stopped.count("closed_with_pending"), 0, "loadgen drained: {ctx}");
    if backend == "uring" {
        assert_eq!(stopped.count("ring_errors"), 0, "{ctx}");
    }
    assert!(
        stopped.count("messages") >= messages,
        "the server echoed at least what loadgen measured: {ctx}"
    );
}

#[test]
fn epoll_holds_25000_connections_past_one_descriptor_table() {
    holds_25000_past_one_table("epoll", "epoll");
}

#[test]
fn uring_holds_25000_connections_past_one_descriptor_table() {
    holds_25000_past_one_table("uring", "auto");
}
