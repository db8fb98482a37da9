//! What a user of wrk, tcpkali or hyperfine expects from loadgen, run as
//! they would run it: where the output goes, how it reads, which flags work,
//! what is refused at once, and that no result is lost, clobbered or doubled.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use loadgen::result::RunResult;
use support::*;

/// Runs loadgen with `args` (no `--out` added) in `cwd`, output captured.
fn loadgen_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(loadgen_bin())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("run loadgen")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn read(path: &Path) -> RunResult {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("a result file")
}

/// Gives a result file the measured window of `like`, as two runs started
/// with the same --start-at would have: for tests that merge runs made one
/// after the other (which a merge refuses for their disjoint windows) about
/// something else.
fn align_window(path: &Path, like: &Path) {
    let mut r = read(path);
    let model = read(like);
    r.extra.window_start_unix_ns = model.extra.window_start_unix_ns;
    r.extra.window_end_unix_ns = model.extra.window_end_unix_ns;
    loadgen::result::write(path, &r).unwrap();
}

/// A short clean closed-loop run's flags against `addr`.
fn short_run<'a>(addr: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![addr, "-c", "4", "-d", "600ms", "--warmup", "100ms"];
    v.extend_from_slice(more);
    v
}

/// A TCP address on which connects are refused for as long as the returned
/// socket lives: bound but never listening (a closed port could be handed to
/// a test running alongside).
fn refusing_addr() -> (std::os::fd::OwnedFd, String) {
    use sockbench::{net, sys};
    use std::os::fd::AsFd;
    let holder = sys::socket(libc::AF_INET, libc::SOCK_STREAM, false).unwrap();
    let any_port: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    sys::bind(holder.as_fd(), &net::Endpoint::Inet(any_port).sockaddr().unwrap()).unwrap();
    let net::Endpoint::Inet(bound) = net::local_endpoint(holder.as_fd()).unwrap() else {
        panic!("a TCP socket has an IP address")
    };
    (holder, bound.to_string())
}

#[test]
fn refused_connects_fail_fast_and_say_so_first() {
    let _serial = one_at_a_time();
    let dir = temp_dir("refused");
    let (_holder, addr) = refusing_addr();
    // 1,000 connections paced at 100/s would take 10 s to try, plus the grace.
    let start = Instant::now();
    let out = loadgen_in(&dir, &[&addr, "-c", "1000", "--connect-rate", "100", "-d", "5s"]);
    let took = start.elapsed();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(took < Duration::from_secs(8), "gave up only after {took:?}");
    // After the two header lines (`Running 5s test @ ...`, as wrk starts).
    let mut lines = stderr.lines();
    assert!(
        lines.next().unwrap_or_default().starts_with("Running 5s test @ tcp "),
        "{stderr}"
    );
    let first = lines.find(|l| !l.starts_with("  ")).unwrap_or_default();
    assert!(
        first.starts_with("loadgen: error: cannot reach") && first.contains(&addr) && first.contains("refused"),
        "the first thing said after the header must be the reason:\n{stderr}"
    );
    assert!(stdout.is_empty(), "no report of zeros: {stdout}");
}

#[test]
fn report_on_stdout_with_scaled_units_and_live_lines_on_stderr() {
    let _serial = one_at_a_time();
    let srv = tcp_server(Fault::None);
    let dir = temp_dir("report");
    let json = dir.join("r.json");
    let out = loadgen_in(&dir, &short_run(&srv.addr, &["--out", json.to_str().unwrap()]));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let r = read(&json);
    // The report is on stdout; the live lines are not.
    assert!(stdout.contains("Throughput"), "{stdout}");
    assert!(!stdout.contains("up 4/4"), "live lines on stdout: {stdout}");
    assert!(stderr.contains("msgs/s") && stderr.contains("up 4/4"), "{stderr}");
    // The wrk-style header comes first, on stderr with the live lines.
    assert!(
        stderr.starts_with("Running 600ms test @ tcp ") && stderr.contains("4 connections"),
        "{stderr}"
    );
    // About one live line a second: 100 ms of warm-up and 600 ms measured
    // make two, and never a burst of slivers at the end; each fits 80 columns.
    let live = stderr.lines().filter(|l| l.contains("up 4/4")).count();
    assert!(
        stderr.lines().all(|l| l.len() <= 80 || !l.contains("up 4/4")),
        "{stderr}"
    );
    assert!((1..=3).contains(&live), "{live} live lines:\n{stderr}");
    // Closed loop: one latency line, figures with units, the JSON exact in µs.
    let latency: Vec<&str> = stdout.lines().filter(|l| l.contains("Latency")).collect();
    assert_eq!(latency.len(), 1, "{stdout}");
    let p50 = loadgen::report::fmt_us(r.latency_us.p50);
    assert!(latency[0].contains(&format!("p50 {p50}")), "{stdout}");
    assert!(
        p50.ends_with("us") || p50.ends_with("ms") || p50.ends_with('s'),
        "{p50}"
    );
    assert_eq!(
        r.latency_us.p50,
        r.latency_us.p50.round(),
        "JSON keeps whole microseconds"
    );
    // Every counter that applies to a stream, zeros included; none that does not.
    assert!(
        stdout.contains("Errors      0 connect, 0 reset, 0 timeout, 0 mismatch\n"),
        "{stdout}"
    );
    assert!(stdout.contains("(mean ") && stdout.contains(", stdev "), "{stdout}");
    assert!(
        stdout.contains("  loadgen CPU ") && !stdout.contains("CPU         loadgen"),
        "{stdout}"
    );
    assert_eq!(stdout.lines().last(), Some("ok, 0 errors"), "{stdout}");
}

#[test]
fn scaled_units_read_like_wrk() {
    use loadgen::report::fmt_us;
    assert_eq!(fmt_us(85.0), "85.00us");
    assert_eq!(fmt_us(299_775.0), "299.78ms");
    assert_eq!(fmt_us(1_250_000.0), "1.25s");
}

#[test]
fn open_loop_prints_corrected_and_uncorrected_latency_each_labelled() {
    let _serial = one_at_a_time();
    let srv = tcp_server(Fault::None);
    let dir = temp_dir("openloop");
    let out = loadgen_in(&dir, &short_run(&srv.addr, &["-R", "500"]));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        stdout.contains("Latency, corrected (from intended send time)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Latency, uncorrected (from actual send time)"),
        "{stdout}"
    );
    assert!(stdout.contains("requested 500 msgs/s"), "{stdout}");
}

#[test]
fn the_slack_an_open_loop_ran_with_is_in_its_result() {
    let _serial = one_at_a_time();
    let srv = tcp_server(Fault::None);
    let dir = temp_dir("slack");
    let path = dir.join("open.json");
    let out = loadgen_in(
        &dir,
        &short_run(&srv.addr, &["-R", "500", "--out", path.to_str().unwrap()]),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(read(&path).settings.slack_s, Some(50e-6), "the default, recorded");
    let out = loadgen_in(
        &dir,
        &short_run(
            &srv.addr,
            &["-R", "500", "--slack", "0", "--out", path.to_str().unwrap()],
        ),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(read(&path).settings.slack_s, Some(0.0));
    let closed = dir.join("closed.json");
    let out = loadgen_in(&dir, &short_run(&srv.addr, &["--out", closed.to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(read(&closed).settings.slack_s, None, "closed loop has no schedule");
}

#[test]
fn json_and_out_dash_leave_only_the_json_on_stdout() {
    let _serial = one_at_a_time();
    let srv = tcp_server(Fault::None);
    let dir = temp_dir("json");
    for flags in [&["--json"][..], &["--out", "-"][..]] {
        let out = loadgen_in(&dir, &short_run(&srv.addr, flags));
        assert_eq!(out.status.code(), Some(0), "{flags:?}: {}", text(&out.stderr));
        let r: RunResult = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{flags:?}: stdout is not only the JSON ({e}):\n{}", text(&out.stdout)));
        assert!(r.messages > 0);
        // The report still reaches the user, on stderr.
        assert!(text(&out.stderr).contains("ok, 0 errors"), "{flags:?}");
    }
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "`--out -` wrote files: {left:?}");
}

#[test]
fn familiar_flags_and_a_positional_target() {
    let _serial = one_at_a_time();
    let srv = tcp_server(Fault::None);
    let dir = temp_dir("aliases");
    let json = dir.join("a.json");
    let args = [
        &srv.addr,
        "--connections",
        "3",
        "-d",
        "700ms",
        "-t",
        "2",
        "-R",
        "300",
        "--warmup",
        "100ms",
        "--latency-percentiles",
        "50,99.9",
        "--out",
        json.to_str().unwrap(),
    ];
    let out = loadgen_in(&dir, &args);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let r = read(&json);
    assert_eq!(r.settings.target, srv.addr);
    assert_eq!((r.settings.conns, r.settings.threads), (3, 2));
    assert_eq!((r.settings.duration_s, r.settings.rate), (0.7, Some(300.0)));
    assert!(stdout.contains("p50 ") && stdout.contains("p99.9 "), "{stdout}");
    assert!(!stdout.contains("p90 "), "only the percentiles asked for: {stdout}");
    // -c is --conns; the target given twice is refused.
    let out = loadgen_in(&dir, &[&srv.addr, "-c", "2", "--addr", &srv.addr]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn nonsense_is_refused_at_once_with_exit_2_naming_the_flag() {
    let dir = temp_dir("nonsense");
    // No server anywhere: each must be refused before a connect is tried (exit 2, not 1).
    let (_holder, addr) = refusing_addr();
    let not_a_dir = dir.join("file");
    std::fs::write(&not_a_dir, "x").unwrap();
    let under_file = not_a_dir.join("x.json");
    for (args, flag) in [
        (vec!["-d", "0s"], "--duration"),
        (
            vec!["--transport", "udp", "-d", "300ms", "--warmup", "0s"],
            "--duration",
        ),
        (vec!["-R", "0.5", "-d", "1s"], "--rate"),
        (vec!["--slack", "1ms"], "--slack"),
        (vec!["-R", "1000", "--slack", "20ms"], "--slack"),
        (vec!["-R", "1000", "--slack", "soon"], "--slack"),
        (vec!["--latency-percentiles", "50,101"], "--latency-percentiles"),
        (vec!["--out", "/nonexistent/dir/x.json"], "--out"),
        (vec!["--out", under_file.to_str().unwrap()], "--out"),
        (vec!["--out", "/proc/loadgen-test.json"], "--out"),
        (vec!["--out", "run.hgrm"], "--out"),
        (vec!["--timeout", "0s"], "--timeout"),
        (vec!["--timeout", "1ns"], "--timeout"),
        (vec!["--max-loss", "101"], "--max-loss"),
        (vec!["--start-at", "99999999999999999999"], "--start-at"),
        (vec!["--local-addrs", "::-::ffff:ffff:ffff:ffff"], "--local-addrs"),
        (vec!["--local-addrs", "0.0.0.0"], "--local-addrs"),
        (vec!["--local-addrs", "255.255.255.255"], "--local-addrs"),
        (vec!["--local-addrs", "224.0.0.1"], "--local-addrs"),
        (vec!["--local-addrs", "192.0.2.1"], "--local-addrs"),
    ] {
        let mut full = vec![addr.as_str()];
        full.extend(args.iter().copied());
        let start = Instant::now();
        let out = loadgen_in(&dir, &full);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(flag), "{args:?}: {err}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{args:?} was not refused at once"
        );
    }
}

#[test]
fn merge_is_a_subcommand_with_its_own_help() {
    let out = Command::new(loadgen_bin()).arg("--help").output().unwrap();
    let help = text(&out.stdout);
    assert!(out.status.success());
    assert!(
        help.lines().any(|l| l.trim_start().starts_with("merge ")),
        "merge is not listed:\n{help}"
    );
    let out = Command::new(loadgen_bin()).args(["merge", "--help"]).output().unwrap();
    let help = text(&out.stdout);
    assert!(out.status.success());
    assert!(
        help.contains("Usage: loadgen merge") && help.contains("--out"),
        "{help}"
    );
}

#[test]
fn out_names_never_clobber_each_other_and_leave_no_temp_files() {
    let _serial = one_at_a_time();
    let srv = tcp_server(Fault::None);
    let dir = temp_dir("outnames");
    // A name without .json gets `.hgrm` added, never replacing its own name.
    let out = loadgen_in(&dir, &short_run(&srv.addr, &["--out", "run.out"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let r = read(&dir.join("run.out"));
    assert!(r.messages > 0);
    let hgrm = std::fs::read_to_string(dir.join("run.out.hgrm")).unwrap();
    assert!(hgrm.contains("Percentile"), "{hgrm}");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["run.out", "run.out.hgrm"], "temporary files left behind");
}

#[test]
fn merge_refuses_a_run_merged_with_itself() {
    let _serial = one_at_a_time();
    let srv = tcp_server(Fault::None);
    let dir = temp_dir("selfmerge");
    let (a, b) = (dir.join("a.json"), dir.join("b.json"));
    for p in [&a, &b] {
        let out = loadgen_in(&dir, &short_run(&srv.addr, &["--out", p.to_str().unwrap()]));
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    align_window(&b, &a);
    let (ra, rb) = (read(&a), read(&b));
    assert_eq!(ra.run_id.len(), 32);
    assert_ne!(ra.run_id, rb.run_id);
    let copy = dir.join("copy-of-a.json");
    std::fs::copy(&a, &copy).unwrap();
    let total = dir.join("total.json");
    let merge = |inputs: &[&Path]| {
        let mut cmd = Command::new(loadgen_bin());
        cmd.arg("merge").args(inputs).arg("--out").arg(&total);
        cmd.output().unwrap()
    };
    for inputs in [[&a, &a], [&a, &copy]] {
        let out = merge(&[inputs[0].as_path(), inputs[1].as_path()]);
        assert!(!out.status.success(), "{inputs:?} merged");
        assert!(text(&out.stderr).contains("twice"), "{}", text(&out.stderr));
    }
    // Two different runs merge; the merge then carries both ids, so adding
    // one of them again is refused too.
    let out = merge(&[a.as_path(), b.as_path()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let m = read(&total);
    assert_eq!(m.merged_run_ids, [ra.run_id.clone(), rb.run_id.clone()]);
    let again = dir.join("total-again.json");
    std::fs::copy(&total, &again).unwrap();
    let out = merge(&[again.as_path(), b.as_path()]);
    assert!(!out.status.success(), "a merge merged with one of its own runs");
    // An --out that is an input, directly, through a symlink, or as the
    // input's .hgrm, is refused (exit 2) and the input is left as it was.
    let before = std::fs::read(&a).unwrap();
    let link = dir.join("link.json");
    std::os::unix::fs::symlink(&a, &link).unwrap();
    let a_hgrm_named = dir.join("a.hgrm");
    std::fs::write(&a_hgrm_named, "percentiles").unwrap();
    for out_path in [&a, &link, &dir.join("a")] {
        let out = Command::new(loadgen_bin())
            .arg("merge")
            .args([&a, &b])
            .arg("--out")
            .arg(out_path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--out {out_path:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("would overwrite"), "{}", text(&out.stderr));
    }
    assert_eq!(std::fs::read(&a).unwrap(), before, "the input was overwritten");
    assert_eq!(std::fs::read_to_string(&a_hgrm_named).unwrap(), "percentiles");
}

#[test]
fn corruption_in_warm_up_is_recorded_in_the_file_and_survives_a_merge() {
    let _serial = one_at_a_time();
    let dir = temp_dir("warmcorrupt");
    // One byte flipped 1,000 bytes in: deep inside a 1 s warm-up.
    let srv = tcp_server(Fault::CorruptByteAt(1_000));
    let bad = dir.join("bad.json");
    let out = loadgen_in(
        &dir,
        &[
            &srv.addr,
            "-c",
            "4",
            "-d",
            "500ms",
            "--warmup",
            "1s",
            "--out",
            bad.to_str().unwrap(),
        ],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let r = read(&bad);
    assert_eq!(r.errors.mismatch, 0, "the measured phase was clean: {:?}", r.errors);
    assert!(r.warmup_errors.mismatch >= 1, "{:?}", r.warmup_errors);
    assert!(
        r.failures.iter().any(|f| f.contains("mismatch")),
        "the file must say why the run failed: {:?}",
        r.failures
    );
    let verdict = stdout.lines().last().unwrap_or_default();
    assert!(
        verdict.starts_with("FAILED: ") && verdict.contains("warmup_errors.mismatch"),
        "the verdict names the counter to look at: {stdout}"
    );
    // Merged with a clean run (the same server: its one fault is spent), the
    // result still says it failed.
    let good = dir.join("good.json");
    let out = loadgen_in(
        &dir,
        &[
            &srv.addr,
            "-c",
            "4",
            "-d",
            "500ms",
            "--warmup",
            "1s",
            "--out",
            good.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    align_window(&bad, &good);
    let total = dir.join("total.json");
    let out = Command::new(loadgen_bin())
        .arg("merge")
        .args([&good, &bad])
        .arg("--out")
        .arg(&total)
        .output()
        .unwrap();
    // The merge is written, and its FAILED verdict is its exit code too.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let m = read(&total);
    assert!(m.warmup_errors.mismatch >= 1 && !m.failures.is_empty(), "{m:?}");
    assert!(text(&out.stdout).contains("FAILED: "), "{}", text(&out.stdout));
}

#[test]
fn unixgram_clients_use_a_fresh_directory_and_remove_only_their_sockets() {
    let _serial = one_at_a_time();
    let srv = unixgram_server();
    let tmp = temp_dir("tmpdir");
    let mut child = Command::new(loadgen_bin())
        .args([
            "--transport",
            "unixgram",
            &srv.addr,
            "-c",
            "4",
            "-d",
            "3s",
            "--warmup",
            "0s",
        ])
        .args(["--timeout", "500ms"])
        .env("TMPDIR", &tmp)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let predictable = format!("loadgen-{}", child.id());
    // Wait for the clients' directory to appear, then leave a file of someone else's in it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let client_dir = loop {
        let found = std::fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.join("c0").exists());
        if let Some(d) = found {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "no client socket directory in {}",
            tmp.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_ne!(client_dir.file_name().unwrap().to_string_lossy(), predictable);
    let theirs = client_dir.join("not-loadgens.txt");
    std::fs::write(&theirs, "keep me").unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(theirs.is_file(), "loadgen removed a file it did not create");
    assert!(!client_dir.join("c0").exists(), "loadgen left its own socket behind");
}

#[test]
fn on_a_terminal_progress_is_one_updating_line() {
    let _serial = one_at_a_time();
    // `script` gives loadgen a terminal; without it, skip.
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` to provide a terminal");
        return;
    }
    let srv = tcp_server(Fault::None);
    let dir = temp_dir("tty");
    let cmd = format!("{} {} -c 2 -d 2s --warmup 1s 2>&1", loadgen_bin(), srv.addr);
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let tty = text(&out.stdout);
    assert!(out.status.success(), "{tty}");
    // The bar redraws in place (carriage returns / erase), shows warm-up as
    // such and the measured time out of the total, and is not a stack of lines.
    assert!(tty.contains("warm-up"), "{tty}");
    assert!(tty.contains("/2.0s") && tty.contains("up 2/2"), "{tty}");
    assert!(tty.contains('\r') || tty.contains("\x1b["), "{tty:?}");
    assert!(!tty.contains("] warm-up "), "plain lines on a terminal: {tty}");
    assert!(tty.contains("ok, 0 errors"), "{tty}");
}

/// Unix seconds `ahead` from now, as `--start-at` takes them.
fn unix_secs_ahead(ahead: Duration) -> String {
    let t = std::time::SystemTime::now() + ahead;
    format!("{:.3}", t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64())
}

#[test]
fn start_at_aligns_two_loadgens_and_merge_adds_them_over_the_common_window() {
    let _serial = one_at_a_time();
    let srv = tcp_server(Fault::None);
    let dir = temp_dir("startat");
    let at = unix_secs_ahead(Duration::from_millis(1500));
    let (a, b) = (dir.join("a.json"), dir.join("b.json"));
    let spawn = |p: &Path| {
        Command::new(loadgen_bin())
            .args(short_run(&srv.addr, &["--start-at", &at, "--out", p.to_str().unwrap()]))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (ca, cb) = (spawn(&a), spawn(&b));
    for c in [ca, cb] {
        let out = c.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    let (ra, rb) = (read(&a), read(&b));
    let at_ns = (at.parse::<f64>().unwrap() * 1e9) as u64;
    for r in [&ra, &rb] {
        // The window starts one --warmup (100 ms) after --start-at.
        let start = r.extra.window_start_unix_ns.expect("window recorded");
        let late_ms = (start as f64 - at_ns as f64 - 100e6) / 1e6;
        // Bounded loosely: on a loaded 2-core machine the wake-up at --start-at
        // was seen 75 ms late; what matters is that it waits for the time at
        // all (1.5 s ahead), not the scheduler's latency.
        assert!((-1.0..400.0).contains(&late_ms), "window starts {late_ms} ms late");
        assert_eq!(r.extra.window_end_unix_ns, Some(start + 600_000_000));
    }
    let total = dir.join("total.json");
    let out = Command::new(loadgen_bin())
        .args([
            "merge",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "--out",
            total.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("skew"), "{}", text(&out.stderr));
    let m = read(&total);
    assert_eq!(m.messages, ra.messages + rb.messages);
    let count = |r: &RunResult| loadgen::result::decode_histogram(&r.histogram).unwrap().len();
    assert_eq!(count(&m), count(&ra) + count(&rb));
    let skew = m.extra.window_skew_ns.unwrap();
    assert!(skew < 50_000_000, "skew {skew} ns");
    let common = m.extra.common_window_messages.unwrap();
    assert!(
        common <= m.messages as f64 && common > 0.8 * m.messages as f64,
        "{common} of {}",
        m.messages
    );

    // A run measured after the others' windows ended does not overlap them.
    let c = dir.join("c.json");
    let out = loadgen_in(&dir, &short_run(&srv.addr, &["--out", c.to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = Command::new(loadgen_bin())
        .args([
            "merge",
            a.to_str().unwrap(),
            c.to_str().unwrap(),
            "--out",
            total.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("do not overlap"), "{}", text(&out.stderr));
}

#[test]
fn start_at_in_the_past_and_too_many_connections_per_source_are_refused_by_name() {
    let dir = temp_dir("startat-past");
    let out = loadgen_in(&dir, &["127.0.0.1:9", "--start-at", "2020-01-01T00:00:00Z"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--start-at") && text(&out.stderr).contains("past"));
    // More connections than one source address has ports: named, exit 2, before any connect.
    let ports = loadgen::source::ports_per_source().unwrap();
    let conns = (ports + 1).to_string();
    let out = loadgen_in(&dir, &["127.0.0.1:9", "-c", &conns, "-t", "4"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--local-addrs"), "{}", text(&out.stderr));
}

#[test]
fn local_addrs_spread_connections_over_the_source_addresses() {
    use std::collections::BTreeSet;
    let _serial = one_at_a_time();
    // A listener of this test's own: accept() tells each client's source address.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = std::thread::spawn(move || {
        let mut seen = BTreeSet::new();
        let mut conns = Vec::new();
        for _ in 0..8 {
            let (s, peer) = listener.accept().unwrap();
            seen.insert(peer.ip().to_string());
            conns.push(s);
        }
        seen
    });
    let dir = temp_dir("localaddrs");
    // Nothing echoes, so the run fails; only the sources matter here.
    let _ = loadgen_in(
        &dir,
        &[
            &addr,
            "-c",
            "8",
            "-d",
            "200ms",
            "--warmup",
            "0s",
            "--local-addrs",
            "127.0.0.2-127.0.0.3,127.0.0.5",
        ],
    );
    let seen = accepted.join().unwrap();
    assert_eq!(
        seen,
        BTreeSet::from(["127.0.0.2".into(), "127.0.0.3".into(), "127.0.0.5".into()])
    );
}

#[test]
fn more_connections_than_one_descriptor_table_holds_run_on_per_thread_tables() {
    let _serial = one_at_a_time();
    if Command::new("prlimit").arg("--version").output().is_err() {
        println!("skipped: prlimit (util-linux) is not installed");
        return;
    }
    let srv = tcp_server(Fault::None);
    let dir = temp_dir("fdsplit");
    let run = |threads: &str| {
        Command::new("prlimit")
            .args(["--nofile=300:300", loadgen_bin(), &srv.addr, "-c", "400", "-t", threads])
            .args(["-d", "500ms", "--warmup", "100ms"])
            .current_dir(&dir)
            .output()
            .unwrap()
    };
    // 400 connections do not fit a hard limit of 300 on one thread: refused by name.
    let out = run("1");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--threads"), "{}", text(&out.stderr));
    // On two threads each holds 200 in its own table: every connection up, every echo checked.
    let out = run("2");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ok, 0 errors"), "{}", text(&out.stdout));
}
