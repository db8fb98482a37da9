//! Tests of the `compare` runner: plots and README from result files, the
//! `/proc` CPU reader against a real CPU-burning child, and the quick matrix
//! end to end against the real `server` and `loadgen`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use loadgen::compare::matrix::{MatrixPlan, RunSpec};
use loadgen::compare::stalls::CpuStalls;
use loadgen::compare::{plots, report, Manifest, Outcome, RunRecord};
use loadgen::result::{Errors, Latency, RunEnv, RunResult, SeriesPoint, Settings, Throughput, SCHEMA};
use sockbench::cpu::CpuList;
use sockbench::net::Transport;
use sockbench::server::BackendKind;

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sockbench-compare-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A small deterministic generator, so the recorded latencies differ per backend.
struct Lcg(u64);
impl Lcg {
    fn next_f64(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A result whose latency figures all come from a histogram recorded here:
/// `samples` latencies around `base_us` with a long tail.
fn recorded_result(backend: &str, spec: &RunSpec, base_us: f64, samples: usize, seed: u64) -> RunResult {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut rng = Lcg(seed);
    for _ in 0..samples {
        let u = rng.next_f64();
        // Exponential body, and one sample in a thousand 50x slower.
        let mut v = base_us * (1.0 - u.max(1e-12).ln());
        if rng.next_f64() < 0.001 {
            v *= 50.0;
        }
        hist.record(v as u64).unwrap();
    }
    let mut bytes = Vec::new();
    V2DeflateSerializer::new().serialize(&hist, &mut bytes).unwrap();
    let duration_s = 3.0;
    let messages = hist.len();
    let series = (1..=3)
        .map(|t| SeriesPoint {
            t_s: t as f64,
            msgs: messages / 3 + t as u64 * 10,
            p50_us: 0.0,
            p99_us: 0.0,
            errors: 0,
        })
        .collect();
    let mut extra = serde_json::Map::new();
    extra.insert("server_cpu_us_per_msg".into(), (base_us / 4.0).into());
    extra.insert("server_peak_rss_kb".into(), 2048u64.into());
    RunResult {
        schema: SCHEMA.into(),
        command: vec!["loadgen".into()],
        version: "test".into(),
        git_commit: "unknown".into(),
        env: RunEnv {
            kernel: "k".into(),
            cpu_model: "c".into(),
            cores: 2,
            pin: "1".into(),
        },
        settings: Settings {
            backend: Some(backend.into()),
            label: Some(backend.into()),
            transport: spec.transport.clone(),
            target: "127.0.0.1:1".into(),
            conns: spec.conns,
            duration_s,
            warmup_s: 0.5,
            size: spec.size_bytes,
            depth: 1,
            rate: spec.rate,
            threads: 1,
            pin: Some("1".into()),
            connect_rate: 20_000,
            timeout_s: 1.0,
            io: Some("epoll".into()),
        },
        complete: true,
        run_id: format!("{seed:032x}"),
        merged_run_ids: Vec::new(),
        failures: Vec::new(),
        warmup_errors: Errors::default(),
        messages,
        bytes: messages * spec.size_bytes * 2,
        throughput: Throughput {
            msgs_per_s: messages as f64 / duration_s,
            mb_per_s: (messages * spec.size_bytes) as f64 / duration_s / 1e6,
            requested_msgs_per_s: spec.rate,
        },
        latency_us: Latency {
            min: hist.min() as f64,
            mean: hist.mean(),
            p50: hist.value_at_quantile(0.5) as f64,
            p90: hist.value_at_quantile(0.9) as f64,
            p99: hist.value_at_quantile(0.99) as f64,
            p99_9: hist.value_at_quantile(0.999) as f64,
            p99_99: hist.value_at_quantile(0.9999) as f64,
            max: hist.max() as f64,
        },
        errors: Errors::default(),
        series,
        histogram: base64::engine::general_purpose::STANDARD.encode(&bytes),
        extra,
    }
}

fn record(spec: RunSpec) -> RunRecord {
    RunRecord {
        result_file: format!("{}.json", spec.name()),
        server_argv: vec!["server".into(), "--backend".into(), spec.backend.clone()],
        loadgen_argv: vec!["loadgen".into(), "--conns".into(), spec.conns.to_string()],
        spec,
        outcome: Outcome::Ok,
        loadgen_exit: Some(0),
        server_summary: None,
        wall_s: 1.0,
        msgs_per_s: None,
        headline: None,
    }
}

/// Asserts `path` is an SVG with drawn lines and the given labels.
fn assert_svg(path: &Path, labels: &[&str]) {
    let svg = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(svg.starts_with("<svg"), "{} is not an SVG", path.display());
    assert!(
        svg.len() > 2_000,
        "{} is nearly empty ({} bytes)",
        path.display(),
        svg.len()
    );
    assert!(svg.contains("<polyline"), "{} has no line drawn", path.display());
    for label in labels {
        assert!(svg.contains(label), "{} lacks the label {label:?}", path.display());
    }
}

#[test]
fn plots_and_readme_from_result_files() {
    let dir = temp_dir("plots");
    let plan = MatrixPlan::new(
        true,
        Some(vec![BackendKind::Epoll, BackendKind::Fork]),
        Some(vec![Transport::Tcp]),
        1,
    );
    let mut runs = Vec::new();
    for (i, spec) in plan.closed_loop().into_iter().enumerate() {
        let base = if spec.backend == "fork" { 40.0 } else { 12.0 } + spec.conns as f64 / 10.0;
        runs.push((
            record(spec.clone()),
            recorded_result(
                &spec.backend.clone(),
                &spec,
                base,
                (600_000.0 / base) as usize,
                i as u64 + 1,
            ),
        ));
    }
    // fork's most-connection run is over udp; the over-time plot must still
    // compare every backend over the same transport (tcp), not this one.
    let mut fork_udp = plan.closed_loop()[0].clone();
    assert_eq!(fork_udp.backend, "epoll");
    fork_udp.backend = "fork".into();
    fork_udp.transport = "udp".into();
    fork_udp.conns = 10_000;
    fork_udp.requested_conns = 10_000;
    runs.push((
        record(fork_udp.clone()),
        recorded_result("fork", &fork_udp, 30.0, 20_000, 99),
    ));
    for (i, backend) in [BackendKind::Epoll, BackendKind::Fork].into_iter().enumerate() {
        let spec = plan.open_loop(backend, 5_000.0);
        let base = if backend == BackendKind::Fork { 50.0 } else { 15.0 };
        runs.push((
            record(spec.clone()),
            recorded_result(backend.name(), &spec, base, 50_000, 100 + i as u64),
        ));
    }
    for (rec, res) in &runs {
        loadgen::compare::write_result(&dir.join(&rec.result_file), res).unwrap();
    }
    let manifest = Manifest {
        started_utc: report::utc_now(),
        finished_utc: report::utc_now(),
        git_commit: report::git_commit(&dir),
        command: vec!["compare".into(), "--quick".into()],
        quick: true,
        server_cpus: "0".into(),
        loadgen_cpus: "1".into(),
        duration_s: 3.0,
        warmup_s: 0.5,
        open_loop_rate: Some(5_000.0),
        open_loop_note: "5000 msgs/s for every backend".into(),
        notes: vec![],
        machine: report::Machine::probe(),
        platform_stalls: vec![CpuStalls {
            cpu: 1,
            seconds: 10.0,
            stalls: 40,
            stalls_over_1ms: 25,
            max_us: 4_560.0,
            stalled_fraction: 0.0052,
        }],
        runs: runs.iter().map(|(r, _)| r.clone()).collect(),
    };
    manifest.save(&dir).unwrap();

    // Everything below reads the files back, as `compare --report-only` does.
    let manifest = Manifest::load(&dir).unwrap();
    let files = plots::draw_all(&manifest, &dir).unwrap();
    let names: Vec<&str> = files.iter().map(|f| f.file.as_str()).collect();
    assert_eq!(
        names,
        [
            "throughput_vs_conns.svg",
            "server_cpu_vs_conns.svg",
            "throughput_over_time.svg",
            "latency_spectrum.svg"
        ]
    );
    for f in &files {
        assert_svg(&dir.join(&f.file), &["epoll", "fork"]);
    }
    assert_svg(&dir.join("latency_spectrum.svg"), &["99.9%", "99.999%"]);
    assert_svg(&dir.join("throughput_vs_conns.svg"), &["tcp, 128 B", "connections"]);
    assert_svg(
        &dir.join("throughput_over_time.svg"),
        &[
            "(tcp, 128 B)",
            "fork (tcp, 100 conns, 128 B)",
            "epoll (tcp, 100 conns, 128 B)",
        ],
    );
    let over_time = std::fs::read_to_string(dir.join("throughput_over_time.svg")).unwrap();
    assert!(!over_time.contains("udp"), "over-time plot mixes in a udp run");

    report::write_readme(&manifest, &files, &dir).unwrap();
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    for f in &files {
        assert!(
            readme.contains(&format!("]({})", f.file)),
            "README does not embed {}",
            f.file
        );
    }
    assert!(
        readme.contains("| epoll | 100 |"),
        "README lacks the epoll 100-connection row:\n{readme}"
    );
    assert!(readme.contains(&manifest.machine.kernel));
    // The machine's own pauses, as measured before the runs, are in the header.
    assert!(
        readme.contains(
            "| CPU 1 pauses, nothing running | 2.5 per second of 1 ms or more, the longest 4.6 ms; 0.52% of the time"
        ),
        "{readme}"
    );
    assert!(readme.contains("the longest pause was 4.6 ms, on CPU 1"), "{readme}");
    // The p99 in the open-loop table is the one recorded in the histogram.
    let epoll_open = &runs
        .iter()
        .find(|(r, _)| r.spec.is_open_loop() && r.spec.backend == "epoll")
        .unwrap()
        .1;
    assert!(readme.contains(&format!("| {:.0} |", epoll_open.latency_us.p99)));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn scale_down_is_said() {
    let plan = MatrixPlan::new(false, None, None, 1);
    let runs = plan.closed_loop();
    assert_eq!(runs.len(), 4 * 3 * 4 * 2);
    let fork_10k = runs
        .iter()
        .find(|r| r.backend == "fork" && r.transport == "tcp" && r.requested_conns == 10_000)
        .unwrap();
    assert!(fork_10k.conns < 10_000 && fork_10k.note.as_deref().unwrap_or("").contains("scaled down"));
    let pool = runs
        .iter()
        .find(|r| r.backend == "threadpool" && r.transport == "unix" && r.requested_conns == 100)
        .unwrap();
    assert_eq!(pool.server_threads, 100, "threadpool needs a worker per connection");
    let epoll_10k = runs
        .iter()
        .find(|r| r.backend == "epoll" && r.requested_conns == 10_000)
        .unwrap();
    assert_eq!((epoll_10k.conns, epoll_10k.note.as_ref()), (10_000, None));
    let fork_udp = runs
        .iter()
        .find(|r| r.backend == "fork" && r.transport == "udp" && r.requested_conns == 10_000)
        .unwrap();
    assert_eq!(fork_udp.conns, 10_000, "datagrams need no process per client");
}

#[test]
fn proc_cpu_counts_a_burning_child_live_and_reaped() {
    let dir = temp_dir("cpu");
    let stop = dir.join("stop");
    // The parent shell only waits; its forked child burns CPU until told to stop.
    let script = format!("( while [ ! -e '{}' ]; do :; done ); sleep 30", stop.display());
    let mut parent = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = parent.id();
    let before = sockbench::procfs::tree_cpu_us(pid).unwrap();
    // Bounded: the child must show 300 ms of CPU within 20 s.
    let deadline = Instant::now() + Duration::from_secs(20);
    let live = loop {
        let now = sockbench::procfs::tree_cpu_us(pid).unwrap();
        if now - before >= 300_000 || Instant::now() > deadline {
            break now;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let tree = sockbench::procfs::tree(pid);
    let own = sockbench::procfs::own_cpu_us(pid).unwrap();
    std::fs::write(&stop, b"").unwrap();
    assert!(
        live - before >= 300_000,
        "tree CPU grew only {} us while a child spun",
        live - before
    );
    assert!(tree.len() >= 2, "the burning child is not in the tree {tree:?}");
    assert!(
        own < 200_000,
        "the waiting parent itself used {own} us: the time must be the child's"
    );

    // Once the child has exited and been reaped, its time lives in the parent's cutime/cstime.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sockbench::procfs::tree(pid).len() > 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while sockbench::procfs::children(pid)
        .iter()
        .any(|&c| sockbench::procfs::own_cpu_us(c).unwrap_or(0) > 100_000)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = sockbench::procfs::tree_cpu_us(pid).unwrap();
    // cutime is kept in whole clock ticks, so the reaped figure may be up to one tick lower.
    assert!(
        after + 20_000 >= live,
        "tree CPU fell from {live} to {after} us when the child was reaped"
    );
    let _ = parent.kill();
    let _ = parent.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The directory with the built `server` and `loadgen` (target/<profile>).
fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_loadgen"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Why the real binaries cannot run the matrix, if they cannot (only when
/// this test is run without the workspace's binaries built beside it).
fn real_binaries_missing(dir: &Path) -> Option<String> {
    let server = dir.join("server");
    if !server.is_file() {
        return Some(format!("{} is not built (cargo build --release)", server.display()));
    }
    match Command::new(dir.join("loadgen")).arg("--help").output() {
        Ok(help) if help.status.success() => None,
        Ok(help) => Some(format!(
            "loadgen --help failed: {}",
            String::from_utf8_lossy(&help.stderr).trim()
        )),
        Err(e) => Some(format!("cannot run loadgen: {e}")),
    }
}

#[test]
fn quick_matrix_runs_end_to_end() {
    let bins = bin_dir();
    if let Some(why) = real_binaries_missing(&bins) {
        eprintln!("skipped: quick matrix needs the real server and loadgen: {why}");
        return;
    }
    // Every backend: one that fails to serve is a failed run, and fails the test.
    let backends = BackendKind::ALL;
    let names: Vec<&str> = backends.iter().map(|b| b.name()).collect();
    let dir = temp_dir("quick");
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_compare"))
        .args(["--quick", "--backends", &names.join(","), "--bin-dir"])
        .arg(&bins)
        .arg("--out-dir")
        .arg(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "compare --quick failed:\n{stderr}");
    assert!(
        stderr.contains("server on CPU"),
        "the CPU split is not printed:\n{stderr}"
    );
    assert!(stderr.contains("left]"), "no progress line:\n{stderr}");
    eprintln!(
        "compare --quick over {names:?} took {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let manifest = Manifest::load(&dir).unwrap();
    let plan = MatrixPlan::new(true, Some(backends.to_vec()), None, 1);
    assert_eq!(manifest.runs.len(), plan.closed_loop().len() + backends.len());
    let failed: Vec<_> = manifest.runs.iter().filter(|r| r.outcome != Outcome::Ok).collect();
    assert!(failed.is_empty(), "failed runs: {failed:#?}");
    // The machine's pauses were measured on both sides' CPUs before the runs.
    let mut split: Vec<usize> = [&manifest.server_cpus, &manifest.loadgen_cpus]
        .iter()
        .flat_map(|list| list.parse::<CpuList>().unwrap().cpus().to_vec())
        .collect();
    split.sort_unstable();
    split.dedup();
    let measured: Vec<usize> = manifest.platform_stalls.iter().map(|s| s.cpu).collect();
    assert_eq!(measured, split, "{:?}", manifest.platform_stalls);
    assert!(manifest.platform_stalls.iter().all(|s| s.seconds >= 1.9));
    assert!(stderr.contains("measuring the machine's own pauses"), "{stderr}");
    for (rec, res) in manifest.load_results(&dir) {
        assert_eq!(res.settings.backend.as_deref(), Some(rec.spec.backend.as_str()));
        assert!(res.messages > 0, "{}: no messages", rec.spec.name());
        // Other processes' CPU over the window is measured (not judged: tests run beside this one).
        assert!(
            res.extra
                .get("other_processes_cores")
                .and_then(|v| v.as_f64())
                .is_some(),
            "{}: no other_processes_cores: {:?}",
            rec.spec.name(),
            res.extra
        );
        let cpu = plots::server_cpu_us_per_msg(&res);
        assert!(
            cpu.is_some_and(|v| v > 0.0),
            "{}: no server CPU per message: {:?}",
            rec.spec.name(),
            res.extra
        );
        assert!(
            res.extra
                .get("server_peak_rss_kb")
                .and_then(|v| v.as_u64())
                .unwrap_or(0)
                > 0
        );
    }
    assert!(manifest.open_loop_rate.is_some());
    for f in [
        "throughput_vs_conns.svg",
        "server_cpu_vs_conns.svg",
        "throughput_over_time.svg",
        "latency_spectrum.svg",
    ] {
        assert_svg(&dir.join(f), &names);
    }
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    for name in &names {
        assert!(
            readme.contains(&format!("--backend {name}")),
            "README lacks the server command of {name}"
        );
    }
    assert!(readme.contains("--rate"), "README lacks the open-loop loadgen command");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes an executable shell script.
fn script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The runner's own plumbing, without the real binaries: stand-in scripts
/// for `server` (one backend refuses to start; the other burns CPU in a
/// forked child until SIGTERM) and `loadgen` (waits, then writes a result).
#[test]
fn runner_records_a_failed_run_and_goes_on() {
    let dir = temp_dir("runner");
    let bins = dir.join("bin");
    let out = dir.join("out");
    std::fs::create_dir_all(&bins).unwrap();
    let plan = MatrixPlan::new(true, Some(vec![BackendKind::Epoll]), Some(vec![Transport::Tcp]), 1);
    let spec = plan.closed_loop()[0].clone();
    let template = dir.join("template.json");
    loadgen::compare::write_result(&template, &recorded_result("other", &spec, 20.0, 30_000, 7)).unwrap();
    script(
        &bins.join("server"),
        "case \"$*\" in *fork*) echo 'boom: no fork today' >&2; exit 1;; esac\n\
         ( while :; do :; done ) &\n\
         kid=$!\n\
         trap 'kill $kid; echo summary backend=stand-in messages=0; exit 0' TERM\n\
         echo listening addr=127.0.0.1:9 transport=tcp\n\
         while :; do sleep 0.05; done",
    );
    script(
        &bins.join("loadgen"),
        &format!(
            "while [ $# -gt 0 ]; do [ \"$1\" = --out ] && out=$2; shift; done\n\
             sleep 1.6\n\
             cp '{}' \"$out\"",
            template.display()
        ),
    );
    let output = Command::new(env!("CARGO_BIN_EXE_compare"))
        .args([
            "--quick",
            "--backends",
            "epoll,fork",
            "--transports",
            "tcp",
            "--duration",
            "1s",
            "--warmup",
            "300ms",
        ])
        .arg("--bin-dir")
        .arg(&bins)
        .arg("--out-dir")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "one failing backend must not fail the comparison:\n{stderr}"
    );
    assert!(stderr.contains("[6/6, 0 left]"), "progress lines missing:\n{stderr}");

    let manifest = Manifest::load(&out).unwrap();
    assert_eq!(manifest.runs.len(), 6);
    for run in &manifest.runs {
        match (run.spec.backend.as_str(), &run.outcome) {
            ("epoll", Outcome::Ok) => {
                assert_eq!(
                    run.server_summary.as_deref(),
                    Some("summary backend=stand-in messages=0")
                );
                let res = loadgen::compare::read_result(&out.join(&run.result_file)).unwrap();
                assert_eq!(
                    res.settings.backend.as_deref(),
                    Some("epoll"),
                    "settings.backend is set by the runner"
                );
                // The stand-in server's forked child spins on CPU 0 through the window (with
                // other tests sharing that CPU, how much it gets varies: only "some" is certain).
                let cpu_us = res.extra["server_cpu_us"].as_u64().unwrap();
                assert!(cpu_us > 0, "no server tree CPU seen while its child spun");
                assert!(plots::server_cpu_us_per_msg(&res).unwrap() > 0.0);
                assert!(res.extra["server_peak_rss_kb"].as_u64().unwrap() > 0);
            }
            ("fork", Outcome::Failed(why)) => {
                assert!(
                    why.contains("before printing `listening`") && why.contains("boom"),
                    "{why}"
                );
            }
            (b, o) => panic!("unexpected outcome for {b}: {o:?}"),
        }
    }
    let readme = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(
        readme.contains("## Failed runs") && readme.contains("closed-fork-tcp-c1-s128"),
        "{readme}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fork server's children each use a few milliseconds, less than one clock
/// tick: the tree reading must still add them up (not round each to zero).
#[test]
fn proc_cpu_adds_up_many_small_children() {
    const KIDS: usize = 40;
    // Each child does a fixed small amount of work, then sleeps without using CPU.
    let script = format!(
        "for k in $(seq {KIDS}); do ( i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done; exec sleep 30 ) & done; wait"
    );
    let mut parent = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = parent.id();
    // Bounded: wait until every child is up and idle (the tree's CPU stops growing).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = 0;
    let settled = loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = sockbench::procfs::tree_cpu_us(pid).unwrap();
        let kids = sockbench::procfs::children(pid).len();
        if kids == KIDS && now == last && now > 0 {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        last = now;
    };
    let live_total = sockbench::procfs::tree_cpu_us(pid).unwrap();
    eprintln!("{KIDS} children: {live_total} us from per-thread schedstat");
    for kid in sockbench::procfs::children(pid) {
        let _ = Command::new("kill").arg(kid.to_string()).status();
    }
    let _ = parent.kill();
    let _ = parent.wait();
    assert!(settled, "the {KIDS} children did not all start and go idle within 20 s");
    // Once reaped, the kernel's exact total lands in the parent's cutime/cstime;
    // we cannot read it after the parent exits, so compare against the work done:
    // each child spent a measurable time in its loop, far less than the 10 ms
    // clock tick that per-process utime/stime would have rounded it down to.
    assert!(
        live_total >= KIDS as u64 * 200,
        "{KIDS} children that each ran a 3000-step shell loop add up to only {live_total} us"
    );
}

#[test]
fn rounds_show_the_median_run_of_each_point_with_the_range() {
    let plan = MatrixPlan::new(true, Some(vec![BackendKind::Epoll]), Some(vec![Transport::Tcp]), 1);
    let point = plan.closed_loop()[1].clone();
    // Three rounds of one point costing 4, 9 and 6 µs/msg of server CPU (base / 4).
    let runs: Vec<_> = [16.0, 36.0, 24.0]
        .into_iter()
        .enumerate()
        .map(|(i, base)| {
            let spec = RunSpec {
                round: i as u32 + 1,
                ..point.clone()
            };
            let res = recorded_result("epoll", &spec, base, 1_000 + i * 100, i as u64 + 7);
            (record(spec), res)
        })
        .collect();
    let names: Vec<String> = runs.iter().map(|(r, _)| r.result_file.clone()).collect();
    assert_eq!(names.len(), 3);
    assert!(names.iter().all(|n| n.starts_with(&point.point())), "{names:?}");
    assert!(names[2].ends_with("-r3.json"), "{names:?}");

    let medians = loadgen::compare::median_runs(&runs);
    assert_eq!(medians.len(), 1, "one row per point");
    assert_eq!(medians[0].0.spec.round, 3, "the 6 µs/msg run is the median");
    assert_eq!(
        medians[0].1.messages, runs[2].1.messages,
        "every figure from that one run"
    );
    assert_eq!(
        loadgen::compare::server_cpu_range(&runs, &point.point()),
        Some((4.0, 9.0))
    );

    let dir = temp_dir("rounds");
    let manifest = Manifest {
        started_utc: report::utc_now(),
        finished_utc: report::utc_now(),
        git_commit: "test".into(),
        command: vec!["compare".into()],
        quick: false,
        server_cpus: "0".into(),
        loadgen_cpus: "1".into(),
        duration_s: 1.0,
        warmup_s: 0.5,
        open_loop_rate: None,
        open_loop_note: String::new(),
        notes: vec![],
        machine: report::Machine::probe(),
        platform_stalls: vec![],
        runs: runs.iter().map(|(r, _)| r.clone()).collect(),
    };
    let readme = report::render(&manifest, &runs, &[]);
    assert!(readme.contains("| 6.00 (4.00–9.00) |"), "{readme}");
    assert!(readme.contains("3 round(s)"), "{readme}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A run during which other processes took CPU is flagged in the header and
/// listed under "Disturbed runs"; quiet runs are not.
#[test]
fn report_lists_runs_that_other_processes_disturbed() {
    let plan = MatrixPlan::new(
        true,
        Some(vec![BackendKind::Epoll, BackendKind::Uring]),
        Some(vec![Transport::Tcp]),
        1,
    );
    let specs: Vec<RunSpec> = plan.closed_loop().into_iter().take(2).collect();
    assert_eq!(specs.len(), 2);
    let runs: Vec<_> = specs
        .iter()
        .zip([0.004, 0.31])
        .enumerate()
        .map(|(i, (spec, cores))| {
            let mut res = recorded_result(&spec.backend, spec, 20.0, 500, i as u64 + 3);
            res.extra.insert("other_processes_cores".into(), cores.into());
            res.extra
                .insert("other_processes_cpu_us".into(), ((cores * 1e6) as u64).into());
            (record(spec.clone()), res)
        })
        .collect();
    let manifest = Manifest {
        started_utc: report::utc_now(),
        finished_utc: report::utc_now(),
        git_commit: "test".into(),
        command: vec!["compare".into()],
        quick: true,
        server_cpus: "0".into(),
        loadgen_cpus: "1".into(),
        duration_s: 1.0,
        warmup_s: 0.5,
        open_loop_rate: None,
        open_loop_note: String::new(),
        notes: vec![],
        machine: report::Machine::probe(),
        platform_stalls: vec![],
        runs: runs.iter().map(|(r, _)| r.clone()).collect(),
    };
    let readme = report::render(&manifest, &runs, &[]);
    let (quiet, noisy) = (specs[0].name(), specs[1].name());
    assert!(
        readme.contains(&format!(
            "at most 0.310 cores in a run's measured window ({noisy}); 1 of 2 runs above"
        )),
        "{readme}"
    );
    let section = readme
        .split("## Disturbed runs")
        .nth(1)
        .expect("a Disturbed runs section");
    let section = section.split("\n## ").next().unwrap();
    assert!(section.contains(&format!("| {noisy} | 0.310 |")), "{section}");
    assert!(!section.contains(&quiet), "{section}");

    // Every run quiet: no section, and the header still says how quiet.
    let quiet_runs: Vec<_> = runs
        .iter()
        .cloned()
        .map(|(rec, mut res)| {
            res.extra.insert("other_processes_cores".into(), 0.002.into());
            (rec, res)
        })
        .collect();
    let readme = report::render(&manifest, &quiet_runs, &[]);
    assert!(!readme.contains("## Disturbed runs"), "{readme}");
    assert!(readme.contains("0 of 2 runs above"), "{readme}");
}
