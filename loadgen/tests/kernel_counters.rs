//! `extra.kernel`: the kernel's retransmission timeouts and dropped packets
//! over the measured phase, read from /proc by loadgen and named in the
//! report's `Kernel` line. The counters are the machine's and the network
//! namespace's, so other programs can add to them: these tests assert what
//! loadgen itself must cause, never that a count is zero.

mod support;

use support::*;

/// The keys of `extra.kernel`, each a count.
const COUNTS: [&str; 10] = [
    "tcp_rto",
    "tcp_retrans_segs",
    "tcp_loss_probes",
    "syn_retrans",
    "listen_overflows",
    "listen_drops",
    "backlog_drops",
    "rcvq_drops",
    "softnet_dropped",
    "netdev_max_backlog",
];

/// The result file of `run`, as raw JSON (the keys other tools read).
fn raw_json(dir: &std::path::Path) -> serde_json::Value {
    let out = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("a result file");
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

#[test]
fn a_clean_run_records_the_kernel_counters_and_prints_the_line_only_for_loss() {
    let _serial = one_at_a_time();
    let srv = tcp_server(Fault::None);
    let dir = temp_dir("kernel");
    let run = run_loadgen(
        &[&srv.addr, "-c", "50", "--depth", "2", "-d", "1s", "--warmup", "200ms"],
        &dir,
    );
    let r = run.result();
    let v = raw_json(&dir);
    let k = &v["extra"]["kernel"];
    for key in COUNTS {
        // netdev_max_backlog is shown in the initial network namespace only.
        if key == "netdev_max_backlog" && k.get(key).is_none() {
            continue;
        }
        assert!(k[key].is_u64(), "extra.kernel.{key} is not a count: {k}");
    }
    assert!(
        k["scope"]
            .as_str()
            .is_some_and(|s| s.contains("network namespace") && s.contains("whole machine")),
        "{k}"
    );
    let kernel = r.extra.kernel.as_ref().expect("extra.kernel");
    // The report has the line exactly when the kernel saw loss, and the
    // line is the one the counters give (drops elsewhere on the machine count).
    let stdout = String::from_utf8_lossy(&run.output.stdout);
    let line = stdout.lines().find(|l| l.starts_with("  Kernel"));
    match loadgen::report::kernel_line(kernel) {
        None => assert!(line.is_none(), "{stdout}"),
        Some(text) => assert_eq!(line, Some(format!("  Kernel      {text}").as_str()), "{stdout}"),
    }
    // Loss elsewhere never fails a run: the verdict is the echoes'.
    assert_eq!(run.code(), 0, "{}", run.stderr);
}

#[test]
fn syns_dropped_at_a_full_accept_queue_are_counted_and_named() {
    let _serial = one_at_a_time();
    // A listener with an accept queue of one that never accepts: the kernel
    // completes two handshakes into it and drops every later SYN
    // (ListenOverflows, ListenDrops), and each connect still waiting sends
    // its SYN again after 1 s and 3 s (TCPSynRetrans), then loadgen tries
    // again. Those connects go on through the measured phase, whose 3 s hold
    // a SYN of each: no sysctl, no root.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    sockbench::sys::listen(std::os::fd::AsFd::as_fd(&listener), 1).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let dir = temp_dir("kernel-syn");
    let run = run_loadgen(
        &[&addr, "-c", "6", "-d", "3s", "--warmup", "0s", "--timeout", "200ms"],
        &dir,
    );
    drop(listener);
    // Not every connection came up: FAILED, as before.
    assert_eq!(run.code(), 1, "{}", run.stderr);
    let r = run.result();
    let k = r.extra.kernel.as_ref().expect("extra.kernel");
    assert!(k.listen_drops.unwrap() > 0 && k.listen_overflows.unwrap() > 0, "{k:?}");
    assert!(k.syn_retrans.unwrap() > 0, "{k:?}");
    let stdout = String::from_utf8_lossy(&run.output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("  Kernel      "))
        .unwrap_or_else(|| panic!("no Kernel line:\n{stdout}"));
    assert!(
        line.contains("SYN retransmit") && line.contains("listen overflow") && line.contains("listen drop"),
        "{line}"
    );
    assert!(line.contains("packets dropped at input backlogs") || line.contains("packet dropped at input backlogs"));
}
