//! loadgen driven as a user would, against small in-test echo servers with
//! known faults (and, when it is built, the project's own `server`).

mod support;

use std::time::Duration;

use support::*;

fn hist_count(encoded: &str) -> u64 {
    loadgen::result::decode_histogram(encoded).unwrap().len()
}

#[test]
fn tcp_closed_loop_writes_every_key_and_checks_every_echo() {
    let _serial = one_at_a_time();
    let srv = tcp_server(Fault::None);
    let dir = temp_dir("keys");
    let run = run_loadgen(
        &[
            "--addr",
            &srv.addr,
            "--conns",
            "8",
            "--depth",
            "4",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
            "--label",
            "test-echo",
        ],
        &dir,
    );
    assert_eq!(run.code(), 0, "{}", run.stderr);
    let r = run.result();
    assert!(r.complete);
    assert!(r.messages > 0);
    assert_eq!(r.bytes, r.messages * 128);
    assert_eq!(r.errors.total(), 0, "{:?}", r.errors);
    assert_eq!(hist_count(&r.histogram), r.messages);
    assert_eq!((r.extra.conns_up, r.extra.conns_carried_load), (Some(8), Some(8)));
    assert_eq!(r.settings.backend.as_deref(), Some("test-echo"));
    // A point per 100 ms of the measured second.
    assert_eq!(r.series_interval_s, Some(0.1));
    assert_eq!(r.series.len(), 10, "{:?}", r.series);
    // The keys other tools rely on, checked on the raw JSON.
    let out = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    for key in [
        "schema",
        "command",
        "version",
        "git_commit",
        "env",
        "settings",
        "complete",
        "messages",
        "bytes",
        "throughput",
        "latency_us",
        "errors",
        "series",
        "series_interval_s",
        "histogram",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    for key in ["min", "mean", "p50", "p90", "p99", "p99_9", "p99_99", "max"] {
        assert!(v["latency_us"].get(key).is_some(), "missing latency_us.{key}");
    }
    for key in [
        "connect",
        "reset",
        "timeout",
        "mismatch",
        "lost",
        "duplicate",
        "reordered",
    ] {
        assert!(v["errors"].get(key).is_some(), "missing errors.{key}");
    }
    for key in ["kernel", "cpu_model", "cores", "pin"] {
        assert!(v["env"].get(key).is_some(), "missing env.{key}");
    }
    let hgrm = std::fs::read_to_string(out.with_extension("hgrm")).unwrap();
    assert!(
        hgrm.contains("Percentile") && hgrm.contains(&format!("Total count    = {:>12}", r.messages)),
        "{hgrm}"
    );
}

#[test]
fn unix_udp_and_unixgram_echo_cleanly() {
    let _serial = one_at_a_time();
    let dir = temp_dir("transports");
    for (transport, srv) in [
        ("unix", unix_server()),
        ("udp", udp_server(0)),
        ("unixgram", unixgram_server()),
    ] {
        let flag = if transport.starts_with("unix") {
            "--path"
        } else {
            "--addr"
        };
        let run = run_loadgen(
            &[
                "--transport",
                transport,
                flag,
                &srv.addr,
                "--conns",
                "6",
                "--depth",
                "2",
                "--duration",
                "700ms",
                "--warmup",
                "100ms",
                // Datagram runs must outlast --timeout (loadgen refuses otherwise).
                "--timeout",
                "500ms",
            ],
            &dir,
        );
        assert_eq!(run.code(), 0, "{transport}: {}", run.stderr);
        let r = run.result();
        assert!(r.messages > 0, "{transport}");
        assert_eq!(
            r.errors.mismatch + r.errors.reset + r.errors.duplicate,
            0,
            "{transport}: {:?}",
            r.errors
        );
        if transport == "unixgram" {
            // The clients' own socket files and their directory are gone at the end.
            let client_dir = std::env::temp_dir().join(format!("loadgen-{}", run.pid));
            assert!(!client_dir.exists(), "{} left behind", client_dir.display());
        }
    }
}

#[test]
fn corrupting_server_is_caught() {
    let _serial = one_at_a_time();
    let srv = tcp_server(Fault::CorruptEvery(10_000));
    let dir = temp_dir("corrupt");
    let run = run_loadgen(
        &[
            "--addr",
            &srv.addr,
            "--conns",
            "4",
            "--duration",
            "700ms",
            "--warmup",
            "0s",
        ],
        &dir,
    );
    assert_ne!(run.code(), 0, "corruption must fail the run: {}", run.stderr);
    let r = run.result();
    assert!(r.errors.mismatch > 0, "{:?}", r.errors);
    assert!(run.stderr.contains("did not match"), "{}", run.stderr);
}

#[test]
fn datagram_loss_is_measured() {
    let _serial = one_at_a_time();
    // The server drops every 10th datagram it receives: 10% loss. A loss is
    // known one timeout after the send, so the warm-up is at least as long as
    // the timeout: the measured window then sees the losses of a full window.
    let srv = udp_server(10);
    let dir = temp_dir("loss");
    let run = run_loadgen(
        &[
            "--transport",
            "udp",
            "--addr",
            &srv.addr,
            "--conns",
            "16",
            "--depth",
            "8",
            "--duration",
            "1500ms",
            "--warmup",
            "300ms",
            "--timeout",
            "300ms",
        ],
        &dir,
    );
    let r = run.result();
    let answered_and_lost = r.messages + r.errors.lost;
    let loss = r.errors.lost as f64 / answered_and_lost as f64;
    assert!(
        (0.07..=0.13).contains(&loss),
        "loss {loss:.3} ({:?}, {} answered)\n{}",
        r.errors,
        r.messages,
        run.stderr
    );
    assert_eq!(r.errors.mismatch + r.errors.duplicate, 0, "{:?}", r.errors);
    // 10% is above the default --max-loss of 1%: the run fails and says so.
    assert_eq!(run.code(), 1, "{}", run.stderr);
    let stdout = String::from_utf8_lossy(&run.output.stdout);
    assert!(stdout.contains("is above --max-loss 1%"), "{stdout}");
    assert_eq!(r.extra.max_loss_pct, Some(1.0));
    assert!(
        r.extra.loss_pct.is_some_and(|l| (7.0..=13.0).contains(&l)),
        "{:?}",
        r.extra.loss_pct
    );
}

#[test]
fn open_loop_shows_a_stall_that_closed_loop_hides() {
    let _serial = one_at_a_time();
    let dir = temp_dir("stall");
    // 3 s at 2,000 msgs/s over 4 connections; the server stalls every
    // connection for 1 s after ~1,000 messages.
    let srv = tcp_server(Fault::StallOnce {
        after_bytes: 1000 * 128,
    });
    let open = run_loadgen(
        &[
            "--addr",
            &srv.addr,
            "--conns",
            "4",
            "--rate",
            "2000",
            "--duration",
            "3s",
            "--warmup",
            "0s",
            "--timeout",
            "5s",
        ],
        &dir,
    );
    assert_eq!(open.code(), 0, "{}", open.stderr);
    let o = open.result();
    // Same stall, closed loop: only the few messages in flight wait, so p99 hides it.
    let srv = tcp_server(Fault::StallOnce {
        after_bytes: 1000 * 128,
    });
    let closed = run_loadgen(
        &[
            "--addr",
            &srv.addr,
            "--conns",
            "4",
            "--duration",
            "3s",
            "--warmup",
            "0s",
            "--timeout",
            "5s",
        ],
        &dir,
    );
    assert_eq!(closed.code(), 0, "{}", closed.stderr);
    let c = closed.result();
    assert!(
        o.latency_us.p99 >= 500_000.0,
        "open-loop p99 {} us should show the 1 s stall",
        o.latency_us.p99
    );
    assert!(
        c.latency_us.max >= 900_000.0,
        "closed loop saw the stall only in max: {:?}",
        c.latency_us
    );
    assert!(
        c.latency_us.p99 < 100_000.0,
        "closed-loop p99 {} us hides the stall",
        c.latency_us.p99
    );
}

/// In open loop over TCP on io_uring, loadgen sleeps through echoes until its
/// next send is due (here 5 ms, the longest sleep, against 50 ms between
/// sends) and takes each echo's arrival from the kernel's receive timestamp.
/// Were the latency taken when the loop looked, it would be about 5 ms.
#[test]
fn open_loop_latency_ends_when_the_echo_arrived_not_when_loadgen_looked() {
    let _serial = one_at_a_time();
    let srv = tcp_server(Fault::None);
    let dir = temp_dir("stamps");
    let run = run_loadgen(
        &[
            "--addr",
            &srv.addr,
            "--io",
            "uring",
            "--conns",
            "1",
            "--rate",
            "20",
            "--duration",
            "2s",
            "--warmup",
            "100ms",
        ],
        &dir,
    );
    assert_eq!(run.code(), 0, "{}", run.stderr);
    let r = run.result();
    assert!(r.messages >= 30, "{} messages at 20/s for 2 s", r.messages);
    assert_eq!(r.errors.total(), 0, "{:?}", r.errors);
    let unc = r
        .extra
        .latency_uncorrected_us
        .as_ref()
        .expect("open loop has the uncorrected view");
    assert!(
        unc.p50 < 1_000.0,
        "uncorrected p50 {} us: the echo's arrival was not taken from its timestamp",
        unc.p50
    );
    assert!(unc.min >= 1.0, "{unc:?}");
}

#[test]
fn rate_is_achieved_and_exact_below_the_connection_count() {
    let _serial = one_at_a_time();
    let srv = tcp_server(Fault::None);
    let dir = temp_dir("rate");
    let run = run_loadgen(
        &[
            "--addr",
            &srv.addr,
            "--conns",
            "10",
            "--rate",
            "2000",
            "--duration",
            "4s",
            "--warmup",
            "200ms",
        ],
        &dir,
    );
    assert_eq!(run.code(), 0, "{}", run.stderr);
    let r = run.result();
    let achieved = r.throughput.msgs_per_s;
    assert_eq!(r.throughput.requested_msgs_per_s, Some(2000.0));
    assert!(
        (1900.0..=2100.0).contains(&achieved),
        "achieved {achieved} of 2000 msgs/s"
    );
    // 50 msgs/s over 200 connections: most connections send nothing in a tick.
    let run = run_loadgen(
        &[
            "--addr",
            &srv.addr,
            "--conns",
            "200",
            "--rate",
            "50",
            "--duration",
            "2s",
            "--warmup",
            "100ms",
        ],
        &dir,
    );
    assert_eq!(run.code(), 0, "{}", run.stderr);
    let r = run.result();
    // The schedule is exact; completions can lose a few to a pause at the end.
    assert_eq!(r.extra.scheduled_messages, Some(100), "{:?}", r.extra);
    assert!(
        (90..=100).contains(&r.messages),
        "{} messages at 50/s for 2 s",
        r.messages
    );
}

#[test]
fn two_thousand_connections_on_one_thread() {
    let _serial = one_at_a_time();
    let srv = tcp_server(Fault::None);
    let dir = temp_dir("many");
    let run = run_loadgen(
        &[
            "--addr",
            &srv.addr,
            "--conns",
            "2500",
            "--threads",
            "1",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
        ],
        &dir,
    );
    assert_eq!(run.code(), 0, "{}", run.stderr);
    let r = run.result();
    assert!(r.messages >= 2500, "{}", r.messages);
    assert_eq!(r.errors.mismatch + r.errors.reset, 0, "{:?}", r.errors);
}

#[test]
fn server_dying_mid_run_ends_the_run_with_an_incomplete_result() {
    let _serial = one_at_a_time();
    let srv = tcp_server(Fault::DieAfter(Duration::from_millis(1500)));
    let dir = temp_dir("die");
    let run = run_loadgen(
        &[
            "--addr",
            &srv.addr,
            "--conns",
            "4",
            "--duration",
            "10s",
            "--warmup",
            "0s",
        ],
        &dir,
    );
    assert_ne!(run.code(), 0);
    // The server dies 1.5 s after its first echo; 10 s were asked for.
    assert!(run.elapsed < Duration::from_secs(7), "took {:?}", run.elapsed);
    let r = run.result();
    assert!(!r.complete);
    assert!(r.errors.reset > 0, "{:?}", r.errors);
    assert!(run.stderr.contains("did the server die"), "{}", run.stderr);
}

#[test]
fn hung_server_run_ends_on_time_with_timeouts() {
    let _serial = one_at_a_time();
    let srv = tcp_server(Fault::Hang);
    let dir = temp_dir("hang");
    let run = run_loadgen(
        &[
            "--addr",
            &srv.addr,
            "--conns",
            "5",
            "--depth",
            "2",
            "--duration",
            "1500ms",
            "--warmup",
            "0s",
            "--timeout",
            "500ms",
        ],
        &dir,
    );
    assert!(run.elapsed < Duration::from_secs(5), "took {:?}", run.elapsed);
    assert_ne!(run.code(), 0, "no echo at all must fail the run");
    let r = run.result();
    assert_eq!(r.messages, 0);
    assert_eq!(
        r.errors.timeout, 10,
        "every in-flight message times out once: {:?}",
        r.errors
    );
}

/// An open loop the echoes cannot keep up with says it fell behind its
/// schedule, and that loadgen had the CPU to keep it.
#[test]
fn open_loop_behind_its_schedule_says_so_and_names_the_side() {
    let _serial = one_at_a_time();
    let srv = tcp_server(Fault::Hang);
    let dir = temp_dir("behind");
    let run = run_loadgen(
        &[
            "--addr",
            &srv.addr,
            "--conns",
            "2",
            "--rate",
            "200",
            "--duration",
            "1s",
            "--warmup",
            "0s",
            "--timeout",
            "300ms",
        ],
        &dir,
    );
    assert_ne!(run.code(), 0, "no echo at all must fail the run");
    let stdout = String::from_utf8_lossy(&run.output.stdout);
    assert!(
        stdout.contains("** Behind schedule: 0 of 200 msgs/s (0.0%)"),
        "{stdout}"
    );
    assert!(stdout.contains("the echoes did not come back fast enough"), "{stdout}");
    // On schedule, nothing is said.
    let srv = tcp_server(Fault::None);
    let run = run_loadgen(
        &[
            "--addr",
            &srv.addr,
            "--conns",
            "2",
            "--rate",
            "200",
            "--duration",
            "1s",
            "--warmup",
            "100ms",
        ],
        &dir,
    );
    assert_eq!(run.code(), 0, "{}", run.stderr);
    let stdout = String::from_utf8_lossy(&run.output.stdout);
    assert!(!stdout.contains("Behind schedule"), "{stdout}");
}

#[test]
fn unreachable_server_fails_fast_with_a_clear_message() {
    let _serial = one_at_a_time();
    let dir = temp_dir("unreach");
    // A port nobody listens on: a TCP socket bound to it but never listening
    // holds it for the whole test (a closed port could be handed to a test
    // running alongside), and connects to it are refused.
    use sockbench::{net, sys};
    use std::os::fd::AsFd;
    let holder = sys::socket(libc::AF_INET, libc::SOCK_STREAM, false).unwrap();
    let any_port: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    sys::bind(holder.as_fd(), &net::Endpoint::Inet(any_port).sockaddr().unwrap()).unwrap();
    let net::Endpoint::Inet(bound) = net::local_endpoint(holder.as_fd()).unwrap() else {
        panic!("a TCP socket has an IP address")
    };
    let addr = bound.to_string();
    let run = run_loadgen(&["--addr", &addr, "--duration", "1s"], &dir);
    assert_eq!(run.code(), 1);
    assert!(run.elapsed < Duration::from_secs(8), "took {:?}", run.elapsed);
    assert!(
        run.stderr.contains("cannot reach") && run.stderr.contains(&addr),
        "{}",
        run.stderr
    );
}

#[test]
fn bad_flags_exit_2_naming_the_flag() {
    for (args, name) in [
        (&["--conns", "zero"][..], "--conns"),
        (&["--duration", "5q"][..], "--duration"),
        (&["--rate", "0"][..], "--rate"),
        (&["--rate=-3"][..], "--rate"),
        (&["--transport", "unix", "--addr", "127.0.0.1:1"][..], "--addr"),
        (&["--transport", "udp", "--size", "8"][..], "--size"),
        (&["--bogus"][..], "--bogus"),
    ] {
        let out = std::process::Command::new(loadgen_bin()).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(name), "{args:?}: {err}");
    }
}

#[test]
fn merge_adds_histograms_and_refuses_different_settings() {
    let _serial = one_at_a_time();
    let srv = tcp_server(Fault::None);
    let dir = temp_dir("merge");
    let a = run_loadgen(
        &[
            "--addr",
            &srv.addr,
            "--conns",
            "2",
            "--duration",
            "500ms",
            "--warmup",
            "0s",
        ],
        &dir,
    );
    let b = run_loadgen(
        &[
            "--addr",
            &srv.addr,
            "--conns",
            "3",
            "--duration",
            "500ms",
            "--warmup",
            "0s",
        ],
        &dir,
    );
    // Made one after the other, the runs' windows are disjoint, which a merge
    // refuses; b is given a's window, as the same --start-at would have.
    let ra = a.result();
    let mut rb = b.result().clone();
    rb.extra.window_start_unix_ns = ra.extra.window_start_unix_ns;
    rb.extra.window_end_unix_ns = ra.extra.window_end_unix_ns;
    let rb = &rb;
    let (pa, pb, total) = (dir.join("a.json"), dir.join("b.json"), dir.join("total.json"));
    std::fs::write(&pa, serde_json::to_string(ra).unwrap()).unwrap();
    std::fs::write(&pb, serde_json::to_string(rb).unwrap()).unwrap();
    let out = std::process::Command::new(loadgen_bin())
        .arg("merge")
        .arg(&pa)
        .arg(&pb)
        .arg("--out")
        .arg(&total)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m: loadgen::result::RunResult = serde_json::from_str(&std::fs::read_to_string(&total).unwrap()).unwrap();
    let mut union = loadgen::result::decode_histogram(&ra.histogram).unwrap();
    union
        .add(loadgen::result::decode_histogram(&rb.histogram).unwrap())
        .unwrap();
    assert_eq!(loadgen::result::decode_histogram(&m.histogram).unwrap(), union);
    assert_eq!(m.messages, ra.messages + rb.messages);
    assert_eq!(m.settings.conns, 5);
    assert_eq!(m.latency_us.p99, union.value_at_quantile(0.99) as f64);
    assert!(total.with_extension("hgrm").is_file());

    let mut rc = rb.clone();
    rc.settings.size = 4096;
    std::fs::write(&pb, serde_json::to_string(&rc).unwrap()).unwrap();
    let out = std::process::Command::new(loadgen_bin())
        .arg("merge")
        .arg(&pa)
        .arg(&pb)
        .arg("--out")
        .arg(&total)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("`size`"), "{err}");
}

/// The number after "err/s" on a live line (errors in that interval, per second).
fn live_errors(line: &str) -> Option<u64> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == "err/s")?;
    words.next()?.parse().ok()
}

#[test]
fn connects_that_fail_at_once_are_retried_until_the_server_is_up() {
    let _serial = one_at_a_time();
    // The socket appears 1.5 s in; connects are paced at 2/s, so the first
    // attempts fail inside connect() (ENOENT) and must be retried.
    let srv = unix_server_after(Duration::from_millis(1500));
    let dir = temp_dir("late");
    let run = run_loadgen(
        &[
            "--transport",
            "unix",
            "--path",
            &srv.addr,
            "--conns",
            "4",
            "--connect-rate",
            "2",
            "--duration",
            "500ms",
            "--warmup",
            "0s",
        ],
        &dir,
    );
    assert_eq!(run.code(), 0, "{}", run.stderr);
    assert!(!run.stderr.contains("connections up after"), "{}", run.stderr);
    let r = run.result();
    assert!(r.messages > 0);
    // Startup connect failures stay in the result (errors.connect covers the whole run).
    assert!(r.errors.connect >= 2, "{:?}", r.errors);
    assert_eq!(r.errors.total(), r.errors.connect, "{:?}", r.errors);
}

#[test]
fn errors_in_warm_up_stay_out_of_the_result() {
    let _serial = one_at_a_time();
    // Open loop with a 1 s stall early in a 3 s warm-up and a 500 ms timeout:
    // timeouts happen, but only in warm-up, and the result covers the measured
    // phase. (The timeout leaves room for a busy machine's own pauses.)
    let srv = tcp_server(Fault::StallOnce { after_bytes: 100 * 128 });
    let dir = temp_dir("warmerr");
    let run = run_loadgen(
        &[
            "--addr",
            &srv.addr,
            "--conns",
            "2",
            "--rate",
            "1000",
            "--duration",
            "1s",
            "--warmup",
            "3s",
            "--timeout",
            "500ms",
        ],
        &dir,
    );
    assert_eq!(run.code(), 0, "{}", run.stderr);
    let warm_errors: u64 = run
        .stderr
        .lines()
        .filter(|l| l.contains("] warm-up "))
        .filter_map(live_errors)
        .sum();
    assert!(
        warm_errors > 0,
        "the stall should time messages out in warm-up:\n{}",
        run.stderr
    );
    let r = run.result();
    assert!(r.messages > 0);
    assert_eq!(r.errors.total(), 0, "{:?}\n{}", r.errors, run.stderr);
    assert!(r.series.iter().all(|p| p.errors == 0), "{:?}", r.series);
}

#[test]
fn a_late_stream_echo_is_one_timeout_and_one_latency_sample() {
    let _serial = one_at_a_time();
    // Closed loop, 2 connections x depth 1; the server stalls 1 s, longer than
    // --timeout (500 ms: room both ways, for a busy machine's shorter pauses
    // and for loadgen reading the late echo a little late):
    // each message in flight then counts one timeout, and its echo, which
    // still arrives, is a completed message with its (late) latency.
    let srv = tcp_server(Fault::StallOnce { after_bytes: 50 * 128 });
    let dir = temp_dir("late-echo");
    let run = run_loadgen(
        &[
            "--addr",
            &srv.addr,
            "--conns",
            "2",
            "--duration",
            "2s",
            "--warmup",
            "0s",
            "--timeout",
            "500ms",
        ],
        &dir,
    );
    // A timeout fails the run (it used to end "ok, 2 errors").
    assert_eq!(run.code(), 1, "{}", run.stderr);
    let verdict = String::from_utf8_lossy(&run.output.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(verdict.starts_with("FAILED: 2 timeouts"), "{verdict}");
    let r = run.result();
    assert_eq!(r.errors.timeout, 2, "{:?}", r.errors);
    assert_eq!(r.errors.total(), 2, "{:?}", r.errors);
    assert!(r.latency_us.max >= 600_000.0, "{:?}", r.latency_us);
    assert_eq!(hist_count(&r.histogram), r.messages);
}

#[test]
fn a_fin_right_behind_the_last_echo_is_noticed() {
    let _serial = one_at_a_time();
    // Every connection gets one echo and then a FIN in the same breath; the
    // server keeps reading, so nothing but that EOF says the connections are done.
    let conns = 40;
    let srv = tcp_echo_once_then_fin(128);
    let dir = temp_dir("fin");
    let run = run_loadgen(
        &[
            "--addr",
            &srv.addr,
            "--conns",
            &conns.to_string(),
            "--duration",
            "10s",
            "--warmup",
            "0s",
            "--timeout",
            "30s",
        ],
        &dir,
    );
    assert_eq!(run.code(), 1, "{}", run.stderr);
    assert!(
        run.elapsed < Duration::from_secs(6),
        "took {:?}\n{}",
        run.elapsed,
        run.stderr
    );
    assert!(run.stderr.contains("did the server die"), "{}", run.stderr);
    let r = run.result();
    assert!(!r.complete);
    assert_eq!(r.messages, conns);
    assert_eq!(r.errors.reset, conns, "{:?}", r.errors);
}

#[test]
fn ctrl_c_mid_run_writes_the_measured_part_marked_incomplete() {
    let _serial = one_at_a_time();
    let srv = tcp_server(Fault::None);
    let dir = temp_dir("sigint");
    let run = run_loadgen_signalled(
        &[
            "--addr",
            &srv.addr,
            "--conns",
            "4",
            "--duration",
            "30s",
            "--warmup",
            "200ms",
        ],
        &dir,
        Some((libc::SIGINT, Duration::from_millis(2500))),
    );
    assert_eq!(run.code(), 1, "{}", run.stderr);
    assert!(
        run.elapsed < Duration::from_secs(8),
        "took {:?}\n{}",
        run.elapsed,
        run.stderr
    );
    assert!(run.stderr.contains("interrupted by a signal"), "{}", run.stderr);
    let r = run.result();
    assert!(!r.complete);
    assert!(r.messages > 0, "the measured part before the signal is kept");
    assert_eq!(hist_count(&r.histogram), r.messages);
    assert_eq!(r.errors.total(), 0, "{:?}", r.errors);
    // Throughput is over the time actually measured (about 2.3 s), not the 30 s asked for.
    let implied_s = r.messages as f64 / r.throughput.msgs_per_s;
    assert!(implied_s > 0.5 && implied_s < 6.0, "measured {implied_s} s");
}

/// Both I/O modes of the stream clients, and what each must report as used.
const IO_MODES: [&str; 2] = ["uring", "epoll"];

#[test]
fn both_io_modes_check_every_echo_over_tcp_and_unix() {
    let _serial = one_at_a_time();
    let dir = temp_dir("io-modes");
    for io in IO_MODES {
        for (transport, srv) in [("tcp", tcp_server(Fault::None)), ("unix", unix_server())] {
            let flag = if transport == "unix" { "--path" } else { "--addr" };
            let args = [
                "--transport",
                transport,
                flag,
                &srv.addr,
                "--io",
                io,
                "--conns",
                "300",
                "--depth",
                "3",
                "--size",
                "1000",
                "--duration",
                "700ms",
                "--warmup",
                "100ms",
            ];
            let run = run_loadgen(&args, &dir);
            assert_eq!(run.code(), 0, "{io} {transport}: {}", run.stderr);
            let r = run.result();
            assert_eq!(r.settings.io.as_deref(), Some(io), "{io} {transport}");
            assert!(r.messages >= 300, "{io} {transport}: {}", r.messages);
            assert_eq!(r.bytes, r.messages * 1000);
            // stderr names the last connect error, if any.
            assert_eq!(r.errors.total(), 0, "{io} {transport}: {:?}\n{}", r.errors, run.stderr);
            assert_eq!(hist_count(&r.histogram), r.messages);
        }
    }
}

#[test]
fn both_io_modes_catch_corruption_and_a_fin_behind_the_last_echo() {
    let _serial = one_at_a_time();
    let dir = temp_dir("io-faults");
    for io in IO_MODES {
        let srv = tcp_server(Fault::CorruptEvery(10_000));
        let args = [
            "--addr",
            &srv.addr,
            "--io",
            io,
            "--conns",
            "4",
            "--duration",
            "700ms",
            "--warmup",
            "0s",
        ];
        let run = run_loadgen(&args, &dir);
        assert_ne!(run.code(), 0, "{io}: corruption must fail the run: {}", run.stderr);
        assert!(run.result().errors.mismatch > 0, "{io}: {:?}", run.result().errors);

        let conns = 40;
        let srv = tcp_echo_once_then_fin(128);
        let n = conns.to_string();
        let args = [
            "--addr",
            &srv.addr,
            "--io",
            io,
            "--conns",
            &n,
            "--duration",
            "10s",
            "--warmup",
            "0s",
        ];
        let run = run_loadgen(&args, &dir);
        assert_eq!(run.code(), 1, "{io}: {}", run.stderr);
        assert!(run.elapsed < Duration::from_secs(6), "{io}: took {:?}", run.elapsed);
        let r = run.result();
        assert_eq!(r.messages, conns, "{io}");
        assert_eq!(r.errors.reset, conns, "{io}: {:?}", r.errors);
    }
}

/// A connection loadgen drops mid-run is closed then, not when the run ends.
/// On the ring an armed receive and the connection's fixed file slot each
/// hold the socket past close(): loadgen shuts it down and empties the slot
/// (the slot alone is tested in `worker/ring.rs`). The server here sends one
/// byte too many on its first connection (loadgen drops it, as it must) and
/// echoes the others. After the FIN it keeps writing to that first
/// connection until a reset fails a write, which must happen long before
/// loadgen exits.
#[test]
fn a_dropped_connection_closes_while_the_run_goes_on() {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    let _serial = one_at_a_time();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let reset_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let reset = reset_at.clone();
    std::thread::spawn(move || {
        for (i, s) in listener.incoming().take(4).enumerate() {
            let Ok(mut s) = s else { return };
            let reset = reset.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let mut buf = [0u8; 4096];
                let mut first = i == 0;
                loop {
                    match s.read(&mut buf) {
                        Ok(0) if i == 0 => {
                            // Bounded: 40 writes 50 ms apart.
                            for _ in 0..40 {
                                if s.write_all(b"x").is_err() {
                                    *reset.lock().unwrap() = Some(Instant::now());
                                    return;
                                }
                                std::thread::sleep(Duration::from_millis(50));
                            }
                            return;
                        }
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let mut out = buf[..n].to_vec();
                            if first {
                                out.push(0);
                                first = false;
                            }
                            if s.write_all(&out).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    let dir = temp_dir("dropped");
    let run = run_loadgen(
        &[
            "--addr",
            &addr,
            "--conns",
            "4",
            "--duration",
            "3s",
            "--warmup",
            "0s",
            "--io",
            "uring",
        ],
        &dir,
    );
    let ended = Instant::now();
    assert_ne!(run.code(), 0, "a dropped connection fails the run: {}", run.stderr);
    assert!(run.stderr.contains("did not match"), "{}", run.stderr);
    let reset = reset_at
        .lock()
        .unwrap()
        .expect("the dropped connection was shut down but never closed");
    assert!(
        ended.duration_since(reset) > Duration::from_secs(1),
        "closed only {:?} before loadgen exited",
        ended.duration_since(reset)
    );
}

#[test]
fn connections_held_in_the_backlog_fail_the_run_and_are_counted() {
    let _serial = one_at_a_time();
    // The server serves 3 connections and holds the other 3 unread, as a
    // server at its --max-conns does: they are up, but carry no load.
    let srv = tcp_server(Fault::ServeFirst(3));
    let dir = temp_dir("backlog");
    let run = run_loadgen(
        &[
            &srv.addr,
            "-c",
            "6",
            "-d",
            "700ms",
            "--warmup",
            "0s",
            "--timeout",
            "300ms",
        ],
        &dir,
    );
    assert_eq!(run.code(), 1, "{}", run.stderr);
    let r = run.result();
    assert_eq!((r.extra.conns_up, r.extra.conns_carried_load), (Some(6), Some(3)));
    assert_eq!(r.extra.conns_unanswered, Some(3));
    assert!(r.errors.timeout >= 3, "{:?}", r.errors);
    let stdout = String::from_utf8_lossy(&run.output.stdout);
    let verdict = stdout.lines().last().unwrap_or_default();
    assert!(
        verdict.starts_with("FAILED: only 3 of 6 connections carried load")
            && verdict.contains("3 connections never answered")
            && verdict.contains("accept backlog or --max-conns full?")
            && verdict.contains("timeouts"),
        "{stdout}"
    );
    assert!(
        stdout.contains("6 connections (3 carried load, 3 never answered)"),
        "{stdout}"
    );
}

#[test]
fn a_listener_that_never_accepts_is_named_as_never_answering() {
    let _serial = one_at_a_time();
    // A plain listener that accepts nothing: the kernel completes each
    // handshake into its backlog, so every connection is up to loadgen,
    // and none is ever answered.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let dir = temp_dir("neveraccept");
    let run = run_loadgen(
        &[&addr, "-c", "4", "-d", "500ms", "--warmup", "0s", "--timeout", "200ms"],
        &dir,
    );
    drop(listener);
    assert_eq!(run.code(), 1, "{}", run.stderr);
    let r = run.result();
    assert_eq!(
        (r.extra.conns_up, r.extra.conns_carried_load, r.extra.conns_unanswered),
        (Some(4), Some(0), Some(4))
    );
    assert!(
        r.failures.iter().any(|f| f.starts_with("4 connections never answered")),
        "{:?}",
        r.failures
    );
}

#[test]
fn connections_not_up_when_the_measured_phase_begins_fail_the_run() {
    let _serial = one_at_a_time();
    // 6 connections at 4 a second, but the run starts 0.6 s from now: about
    // 3 are up. They start measuring with what is there, and the run says so.
    let srv = tcp_server(Fault::None);
    let dir = temp_dir("notup");
    let at = std::time::SystemTime::now() + Duration::from_millis(600);
    let at = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let run = run_loadgen(
        &[
            &srv.addr,
            "-c",
            "6",
            "--connect-rate",
            "4",
            "--start-at",
            &format!("{at:.3}"),
            "-d",
            "500ms",
            "--warmup",
            "0s",
        ],
        &dir,
    );
    assert_eq!(run.code(), 1, "{}", run.stderr);
    let r = run.result();
    let up = r.extra.conns_up.unwrap();
    assert!((1..6).contains(&up), "{up} up");
    let stdout = String::from_utf8_lossy(&run.output.stdout);
    assert!(
        stdout.contains(&format!("{up} of 6 connections up"))
            && stdout.contains(&format!("FAILED: only {up} of 6 connections were up")),
        "{stdout}"
    );
}

#[test]
fn a_closed_loop_deeper_than_the_socket_buffers_is_measured_from_the_send() {
    let _serial = one_at_a_time();
    // 256 x 16 KiB in flight on one connection: 4 MiB, more than loopback's
    // socket buffers hold, so messages wait in loadgen's own queue. The
    // headline latency starts at the send, as --timeout does; the queued view
    // is recorded beside it and is never shorter.
    let srv = tcp_server(Fault::None);
    let dir = temp_dir("deep");
    let run = run_loadgen(
        &[
            &srv.addr, "-c", "1", "--depth", "256", "--size", "16384", "-d", "1s", "--warmup", "200ms",
        ],
        &dir,
    );
    let r = run.result();
    let queued = r
        .extra
        .latency_queued_us
        .as_ref()
        .expect("a closed loop records the queued view");
    assert!(queued.p50 >= r.latency_us.p50, "{queued:?} vs {:?}", r.latency_us);
    // Late echoes are counted against the same start as the latency.
    if r.latency_us.p50 > 1e6 {
        assert!(r.errors.timeout > 0, "{:?}", r.errors);
    }
    assert_eq!(run.code(), if r.errors.total() == 0 { 0 } else { 1 }, "{}", run.stderr);
}
