//! Runs the comparison: for each run, start the server pinned to its CPUs,
//! wait for its `listening` line, run loadgen pinned to the other CPUs,
//! sample the server tree's cost, stop the server, and annotate the result.
//! Every step is bounded in time; a failed run is recorded, not fatal.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sockbench::cpu::CpuList;

use super::matrix::{MatrixPlan, RunSpec};
use super::proc_cpu::TreeMonitor;
use super::{report, stalls, CompareArgs, Manifest, Outcome, RunRecord};

/// How long the server may take to print `listening`.
pub const LISTEN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the server may take to exit after SIGTERM before it gets SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// loadgen's `--connect-rate`: fast enough that 10,000 connects take 0.5 s,
/// slow enough not to overflow a listen backlog.
pub const CONNECT_RATE: u64 = 20_000;
/// Slack on top of loadgen's own bound (warm-up + duration + connects) before
/// the runner kills it.
pub const LOADGEN_SLACK: Duration = Duration::from_secs(20);
/// Lines of a failed process's output kept for the report.
const TAIL_LINES: usize = 15;

/// Default durations and rounds: full matrix and `--quick`. The full matrix
/// runs every point three times, in rounds, and reports the median run: on a
/// shared machine one run of a point can be 25% off another minutes later.
const DURATION: Duration = Duration::from_secs(5);
const WARMUP: Duration = Duration::from_secs(1);
const ROUNDS: u32 = 3;
const QUICK_DURATION: Duration = Duration::from_secs(2);
const QUICK_WARMUP: Duration = Duration::from_millis(500);
const QUICK_ROUNDS: u32 = 1;
/// How long the machine's own pauses are measured before the runs.
const STALL_CHECK: Duration = Duration::from_secs(10);
const QUICK_STALL_CHECK: Duration = Duration::from_secs(2);

/// The `server` and `loadgen` executables.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub server: PathBuf,
    pub loadgen: PathBuf,
}

impl Binaries {
    /// When started by `cargo run`, builds `server` and `loadgen` with the same
    /// profile first: `cargo run --bin compare` builds only compare, and a
    /// stale server would silently measure old code.
    pub fn build_with_cargo() -> anyhow::Result<()> {
        let Some(cargo) = std::env::var_os("CARGO") else {
            return Ok(());
        };
        let exe = std::env::current_exe().context("finding the compare executable")?;
        let profile = exe
            .parent()
            .and_then(|d| d.file_name())
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("Cargo.toml");
        if !workspace.is_file() {
            return Ok(());
        }
        let mut cmd = Command::new(cargo);
        cmd.arg("build")
            .arg("--manifest-path")
            .arg(&workspace)
            .args(["--bin", "server", "--bin", "loadgen"]);
        match profile.as_str() {
            "debug" => {
                eprintln!("compare: warning: debug build; the figures mean little. Use `cargo run --release -p loadgen --bin compare`.");
            }
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.args(["--profile", other]);
            }
        }
        eprintln!("compare: building server and loadgen ({profile})");
        let status = cmd.status().context("running cargo build")?;
        if !status.success() {
            bail!("`cargo build` of server and loadgen failed ({status})");
        }
        Ok(())
    }

    /// Finds both executables in `dir`, or beside the running executable.
    pub fn locate(dir: Option<&Path>) -> anyhow::Result<Binaries> {
        let dir = match dir {
            Some(d) => d.to_path_buf(),
            None => {
                let exe = std::env::current_exe().context("finding the compare executable")?;
                let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
                // Tests and benches run from target/<profile>/deps.
                if dir.ends_with("deps") {
                    dir.pop();
                }
                dir
            }
        };
        let find = |name: &str| -> anyhow::Result<PathBuf> {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                bail!(
                    "`{name}` not found in {}: build everything first with `cargo build --release` \
                     (`cargo run --release -p loadgen --bin compare` builds them itself), \
                     or point --bin-dir at the directory that has it",
                    dir.display()
                )
            }
        };
        Ok(Binaries {
            server: find("server")?,
            loadgen: find("loadgen")?,
        })
    }
}

/// The CPU split between the two sides.
#[derive(Clone, Debug)]
pub struct CpuSplit {
    pub server: CpuList,
    pub loadgen: CpuList,
    /// Said when both sides share CPUs.
    pub warning: Option<String>,
}

impl CpuSplit {
    /// `--server-cpus` / `--loadgen-cpus`, or the first half of the online
    /// CPUs for the server and the rest for loadgen.
    pub fn choose(server: Option<CpuList>, loadgen: Option<CpuList>) -> anyhow::Result<CpuSplit> {
        let online = core_affinity::get_core_ids()
            .map(|v| v.len())
            .unwrap_or_else(sockbench::cpu::available_cpus)
            .max(1);
        let list = |lo: usize, hi: usize| -> anyhow::Result<CpuList> {
            format!("{lo}-{hi}").parse::<CpuList>().map_err(|e| anyhow::anyhow!(e))
        };
        let half = (online / 2).max(1);
        let server = match server {
            Some(s) => s,
            None => list(0, half - 1)?,
        };
        let loadgen = match loadgen {
            Some(l) => l,
            None if online >= 2 => list(half, online - 1)?,
            None => list(0, 0)?,
        };
        let shared: Vec<usize> = server
            .cpus()
            .iter()
            .copied()
            .filter(|c| loadgen.cpus().contains(c))
            .collect();
        let warning = (!shared.is_empty()).then(|| {
            format!(
                "server and loadgen share CPU(s) {shared:?}: the two sides compete, so figures understate the server"
            )
        });
        Ok(CpuSplit {
            server,
            loadgen,
            warning,
        })
    }
}

/// Everything that is the same for every run.
struct RunContext {
    bins: Binaries,
    split: CpuSplit,
    out_dir: PathBuf,
    scratch: PathBuf,
    duration: Duration,
    warmup: Duration,
}

/// Runs the whole matrix and returns (and saves) the manifest.
pub fn run_comparison(args: &CompareArgs) -> anyhow::Result<Manifest> {
    if args.bin_dir.is_none() {
        Binaries::build_with_cargo()?;
    }
    let bins = Binaries::locate(args.bin_dir.as_deref())?;
    let split = CpuSplit::choose(args.server_cpus.clone(), args.loadgen_cpus.clone())?;
    let duration = args
        .duration
        .unwrap_or(if args.quick { QUICK_DURATION } else { DURATION });
    let warmup = args.warmup.unwrap_or(if args.quick { QUICK_WARMUP } else { WARMUP });
    let rounds = args
        .rounds
        .unwrap_or(if args.quick { QUICK_ROUNDS } else { ROUNDS })
        .max(1);
    std::fs::create_dir_all(&args.out_dir).with_context(|| format!("creating {}", args.out_dir.display()))?;
    remove_previous_run(&args.out_dir);
    let scratch = std::env::temp_dir().join(format!("sockbench-compare-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;

    let plan = MatrixPlan::new(
        args.quick,
        args.backends.clone(),
        args.transports.clone(),
        split.server.cpus().len() as u64,
    );
    let closed = plan.closed_loop();
    let total = (closed.len() + plan.backends.len()) * rounds as usize;

    eprintln!(
        "compare: server on CPU {} ({} core(s)), loadgen on CPU {} ({} core(s)); {} runs ({} round(s) of {}) of {} + {} warm-up each",
        split.server,
        split.server.cpus().len(),
        split.loadgen,
        split.loadgen.cpus().len(),
        total,
        rounds,
        total / rounds as usize,
        fmt_duration(duration),
        fmt_duration(warmup)
    );
    if let Some(w) = &split.warning {
        eprintln!("compare: warning: {w}");
    }
    let fds = sockbench::sys::raise_fd_limit().unwrap_or_else(|_| sockbench::sys::fd_limit());
    let need = closed.iter().map(|s| s.conns).max().unwrap_or(0) + 64;
    if fds < need {
        eprintln!(
            "compare: warning: the descriptor limit is {fds}, but a run needs about {need}; raise it (ulimit -n)"
        );
    }
    let stall_check = if args.quick { QUICK_STALL_CHECK } else { STALL_CHECK };
    let mut all_cpus: Vec<usize> = split
        .server
        .cpus()
        .iter()
        .chain(split.loadgen.cpus())
        .copied()
        .collect();
    all_cpus.sort_unstable();
    all_cpus.dedup();
    eprintln!(
        "compare: measuring the machine's own pauses: a clock-reading busy loop on CPU {} for {}",
        all_cpus.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(","),
        fmt_duration(stall_check)
    );
    let platform_stalls = stalls::measure(&all_cpus, stall_check);
    for s in &platform_stalls {
        eprintln!(
            "compare: CPU {}: {} pauses of 100 µs or more ({} of 1 ms or more), the longest {:.0} µs, {:.3}% of the time",
            s.cpu,
            s.stalls,
            s.stalls_over_1ms,
            s.max_us,
            s.stalled_fraction * 100.0
        );
    }
    // compare's own threads (the /proc sampler) stay off the server's CPUs.
    set_affinity(&cpu_mask(&split.loadgen)).context("pinning compare to the loadgen CPUs")?;
    eprintln!(
        "compare: each server process tree is confined to CPU {}; loadgen and this runner to CPU {}",
        split.server, split.loadgen
    );
    let mut notes = Vec::new();
    for spec in closed.iter().filter(|s| s.note.is_some()) {
        let line = format!(
            "{} over {}: {}",
            spec.backend,
            spec.transport,
            spec.note.as_deref().unwrap_or("")
        );
        if !notes.contains(&line) {
            eprintln!("compare: note: {line}");
            notes.push(line);
        }
    }
    if let Some(w) = &split.warning {
        notes.push(w.clone());
    }

    let ctx = RunContext {
        bins,
        split,
        out_dir: args.out_dir.clone(),
        scratch,
        duration,
        warmup,
    };
    let mut manifest = Manifest {
        started_utc: report::utc_now(),
        finished_utc: String::new(),
        git_commit: report::git_commit(&args.out_dir),
        command: std::env::args().collect(),
        quick: args.quick,
        server_cpus: ctx.split.server.to_string(),
        loadgen_cpus: ctx.split.loadgen.to_string(),
        duration_s: duration.as_secs_f64(),
        warmup_s: warmup.as_secs_f64(),
        open_loop_rate: None,
        open_loop_note: String::new(),
        notes,
        machine: report::Machine::probe(),
        platform_stalls,
        runs: Vec::new(),
    };

    // Round after round of the whole matrix, so that a slow spell of the
    // machine hits one repeat of many points rather than every repeat of one.
    let round_of = |r: u32| if rounds > 1 { r } else { 0 };
    let mut done = 0;
    for round in 1..=rounds {
        for spec in &closed {
            done += 1;
            let spec = RunSpec {
                round: round_of(round),
                ..spec.clone()
            };
            let record = run_with_progress(&ctx, spec, done, total);
            manifest.runs.push(record);
            manifest.save(&ctx.out_dir)?;
        }
    }

    // Open loop: every backend at the same offered rate, half of the slowest
    // backend's peak closed-loop throughput at the open-loop run's size, so
    // that every backend can sustain it and latency is compared on equal terms.
    let (rate, rate_note) = open_loop_rate(&manifest, &plan);
    manifest.open_loop_rate = rate;
    manifest.open_loop_note = rate_note.clone();
    eprintln!("compare: open loop: {rate_note}");
    for (round, &backend) in (1..=rounds).flat_map(|r| plan.backends.iter().map(move |b| (r, b))) {
        done += 1;
        match rate {
            Some(rate) => {
                let spec = RunSpec {
                    round: round_of(round),
                    ..plan.open_loop(backend, rate)
                };
                let record = run_with_progress(&ctx, spec, done, total);
                manifest.runs.push(record);
            }
            None => {
                let why = "not run: no successful closed-loop run to derive the offered rate from";
                eprintln!("[{done}/{total}] open loop {backend}: {why}");
                let spec = plan.open_loop(backend, 0.0);
                manifest.runs.push(RunRecord {
                    result_file: format!("{}.json", spec.name()),
                    spec,
                    server_argv: Vec::new(),
                    loadgen_argv: Vec::new(),
                    outcome: Outcome::Failed(why.into()),
                    loadgen_exit: None,
                    server_summary: None,
                    wall_s: 0.0,
                    msgs_per_s: None,
                    headline: None,
                });
            }
        }
        manifest.save(&ctx.out_dir)?;
    }
    manifest.finished_utc = report::utc_now();
    manifest.save(&ctx.out_dir)?;
    let _ = std::fs::remove_dir_all(&ctx.scratch);
    Ok(manifest)
}

/// Removes the files the previous comparison in `dir` wrote (and only
/// those, as its manifest lists them), so no stale result outlives a rerun.
fn remove_previous_run(dir: &Path) {
    let Ok(old) = Manifest::load(dir) else { return };
    for run in &old.runs {
        let json = dir.join(&run.result_file);
        let _ = std::fs::remove_file(json.with_extension("hgrm"));
        let _ = std::fs::remove_file(json);
    }
    for plot in super::plots::PLOT_FILES {
        let _ = std::fs::remove_file(dir.join(plot));
    }
}

/// Half of the smallest per-backend peak among the closed-loop runs of the
/// open-loop run's size.
fn open_loop_rate(manifest: &Manifest, plan: &MatrixPlan) -> (Option<f64>, String) {
    let Some(&first) = plan.backends.first() else {
        return (None, "no backends".into());
    };
    let shape = plan.open_loop(first, 0.0);
    // The open-loop run's own shape, so every backend has shown it can carry
    // twice the rate in exactly that configuration.
    let (size, transport, conns) = (shape.size_bytes, shape.transport, shape.conns);
    let mut slowest: Option<(String, f64)> = None;
    for backend in &plan.backends {
        let peak = manifest
            .runs
            .iter()
            .filter(|r| r.outcome == Outcome::Ok && r.spec.backend == backend.name())
            .filter(|r| r.spec.size_bytes == size && r.spec.transport == transport && r.spec.conns == conns)
            .filter_map(|r| r.msgs_per_s)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
        if let Some(peak) = peak {
            if slowest.as_ref().map_or(true, |(_, s)| peak < *s) {
                slowest = Some((backend.name().to_string(), peak));
            }
        }
    }
    match slowest {
        Some((name, peak)) => {
            let rate = (peak / 2.0).max(1.0).round();
            (
                Some(rate),
                format!(
                    "{rate} msgs/s for every backend: half of the slowest backend's closed-loop throughput \
                     ({name}, best of its runs: {} msgs/s over {transport}, {conns} connections, {size} B)",
                    peak.round()
                ),
            )
        }
        None => (None, "no successful closed-loop run, so no open-loop rate".to_string()),
    }
}

fn run_with_progress(ctx: &RunContext, spec: RunSpec, n: usize, total: usize) -> RunRecord {
    let left = total - n;
    let scaled = spec
        .note
        .as_ref()
        .map(|_| format!(" (scaled down from {})", spec.requested_conns))
        .unwrap_or_default();
    let rate = spec.rate.map(|r| format!(" open loop {r} msgs/s")).unwrap_or_default();
    eprintln!(
        "[{n}/{total}, {left} left] {} {} conns={}{scaled} size={}{rate} ...",
        spec.backend, spec.transport, spec.conns, spec.size_bytes
    );
    let record = run_one(ctx, spec);
    match &record.outcome {
        Outcome::Ok => eprintln!(
            "[{n}/{total}]   ok in {:.1}s: {}",
            record.wall_s,
            record.headline.as_deref().unwrap_or("")
        ),
        Outcome::Failed(why) => eprintln!("[{n}/{total}]   FAILED: {why}"),
    }
    record
}

/// A spawned child whose output lines are collected by a thread.
struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    fn collect<R: Read + Send + 'static>(from: R, lines_tx: Option<mpsc::Sender<String>>) -> Tail {
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let t = tail.clone();
        std::thread::spawn(move || {
            // Ends at EOF, i.e. when the child exits (or closes the pipe).
            for line in BufReader::new(from).lines() {
                let Ok(line) = line else { break };
                if let Some(tx) = &lines_tx {
                    let _ = tx.send(line.clone());
                }
                let mut t = t.lock().unwrap();
                if t.len() == TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(line);
            }
        });
        Tail(tail)
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

/// The last lines of a file (loadgen's log).
fn file_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}


/// The kernel CPU mask for `cpus`.
fn cpu_mask(cpus: &CpuList) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus.cpus() {
        // SAFETY: CpuList only holds online CPU ids, far below CPU_SETSIZE (1024).
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    set
}

/// Restricts the calling thread (and what it later spawns or forks) to `set`.
fn set_affinity(set: &libc::cpu_set_t) -> std::io::Result<()> {
    sockbench::syscall!(sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set)).map(|_| ())
}

/// Starts `cmd` already confined to `cpus`, so that every thread and forked
/// child of it (not only the workers its own `--pin` places) stays there.
fn confine_command(cmd: &mut Command, cpus: &CpuList) {
    use std::os::unix::process::CommandExt;
    let set = cpu_mask(cpus);
    // SAFETY: the closure runs in the child between fork and exec; it makes one
    // async-signal-safe syscall on a mask that was copied in before the fork.
    unsafe {
        cmd.pre_exec(move || set_affinity(&set));
    }
}

/// Sends `sig` to a process, or with a negative id to a process group.
fn send_signal(pid: i32, sig: libc::c_int) {
    // Failure means it already exited, which is what we want anyway.
    let _ = sockbench::syscall!(kill(pid, sig));
}

/// Waits for `child` up to `timeout`, polling.
fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

/// SIGTERM, a bounded wait, then SIGKILL to the server's whole process group
/// (the fork backend's children too). Returns true if it stopped on SIGTERM.
fn stop_server(server: &mut Child) -> bool {
    let pid = server.id() as i32;
    send_signal(pid, libc::SIGTERM);
    let clean = wait_bounded(server, STOP_TIMEOUT).is_some();
    // The server runs in its own process group (see `run_one`): this reaches
    // any child that outlived it.
    send_signal(-pid, libc::SIGKILL);
    if !clean {
        let _ = server.wait();
    }
    clean
}

fn fmt_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// One run, start to finish. Never panics on a failing child; every wait is bounded.
fn run_one(ctx: &RunContext, spec: RunSpec) -> RunRecord {
    let started = Instant::now();
    let name = spec.name();
    let result_file = format!("{name}.json");
    let stream_path = ctx.scratch.join(format!("{name}.sock"));
    let unix = spec.transport.starts_with("unix");

    let mut server_argv: Vec<String> = vec![ctx.bins.server.display().to_string()];
    server_argv.extend([
        "--backend".into(),
        spec.backend.clone(),
        "--transport".into(),
        spec.transport.clone(),
    ]);
    if unix {
        server_argv.extend(["--path".into(), stream_path.display().to_string()]);
    } else {
        server_argv.extend(["--addr".into(), "127.0.0.1:0".into()]);
    }
    server_argv.extend([
        "--threads".into(),
        spec.server_threads.to_string(),
        "--pin".into(),
        ctx.split.server.to_string(),
    ]);
    if let Some(m) = spec.server_max_conns {
        server_argv.extend(["--max-conns".into(), m.to_string()]);
    }

    let mut record = RunRecord {
        spec: spec.clone(),
        result_file: result_file.clone(),
        server_argv: server_argv.clone(),
        loadgen_argv: Vec::new(),
        outcome: Outcome::Failed("not run".into()),
        loadgen_exit: None,
        server_summary: None,
        wall_s: 0.0,
        msgs_per_s: None,
        headline: None,
    };
    let outcome = drive(ctx, &spec, &server_argv, &stream_path, &mut record);
    record.outcome = match outcome {
        Ok(()) => Outcome::Ok,
        Err(e) => Outcome::Failed(format!("{e:#}")),
    };
    record.wall_s = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&stream_path);
    record
}

/// The body of [`run_one`]: fills `record` as it goes so a failure keeps what was learned.
fn drive(
    ctx: &RunContext,
    spec: &RunSpec,
    server_argv: &[String],
    path: &Path,
    record: &mut RunRecord,
) -> anyhow::Result<()> {
    let out_path = ctx.out_dir.join(&record.result_file);
    // A stale file from an earlier comparison must not pass for this run's result.
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(out_path.with_extension("hgrm"));

    let mut server = {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(&server_argv[0]);
        cmd.args(&server_argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that a final SIGKILL reaches forked children.
            .process_group(0);
        confine_command(&mut cmd, &ctx.split.server);
        cmd.spawn().with_context(|| format!("starting {}", server_argv[0]))?
    };
    let (lines_tx, lines_rx) = mpsc::channel();
    let server_out = Tail::collect(server.stdout.take().expect("piped"), Some(lines_tx));
    let server_err = Tail::collect(server.stderr.take().expect("piped"), None);
    let result = drive_with_server(ctx, spec, &mut server, &lines_rx, path, record);
    let clean_stop = stop_server(&mut server);
    // The summary line arrives on stdout as the server exits.
    let deadline = Instant::now() + Duration::from_millis(500);
    while record.server_summary.is_none() && Instant::now() < deadline {
        match lines_rx.recv_timeout(Duration::from_millis(50)) {
            Ok(line) if line.starts_with("summary") => record.server_summary = Some(line),
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if record.server_summary.is_none() {
        record.server_summary = server_out
            .text()
            .lines()
            .find(|l| l.starts_with("summary"))
            .map(str::to_owned);
    }
    match result {
        Err(e) => {
            let err = server_err.text();
            if err.is_empty() {
                Err(e)
            } else {
                Err(anyhow::anyhow!("{e:#}\nserver stderr:\n{err}"))
            }
        }
        Ok(()) if !clean_stop => {
            bail!("server did not exit within {STOP_TIMEOUT:?} of SIGTERM (killed)")
        }
        Ok(()) => Ok(()),
    }
}

fn drive_with_server(
    ctx: &RunContext,
    spec: &RunSpec,
    server: &mut Child,
    lines: &mpsc::Receiver<String>,
    path: &Path,
    record: &mut RunRecord,
) -> anyhow::Result<()> {
    // 1. Wait for `listening`, bounded, noticing an early exit.
    let deadline = Instant::now() + LISTEN_TIMEOUT;
    let listening = loop {
        match lines.recv_timeout(Duration::from_millis(50)) {
            Ok(line) if line.starts_with("listening") => break line,
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                if let Ok(Some(status)) = server.try_wait() {
                    bail!("server exited ({status}) before printing `listening`");
                }
                if Instant::now() >= deadline {
                    bail!("server printed no `listening` line within {LISTEN_TIMEOUT:?}");
                }
            }
        }
    };
    let target = if spec.transport.starts_with("unix") {
        path.display().to_string()
    } else {
        listening
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("addr="))
            .map(str::to_owned)
            .with_context(|| format!("no addr= in the server's line {listening:?}"))?
    };

    // 2. loadgen, pinned to the other CPUs, output to a log file.
    let out_path = ctx.out_dir.join(&record.result_file);
    let mut argv: Vec<String> = vec![
        ctx.bins.loadgen.display().to_string(),
        "--transport".into(),
        spec.transport.clone(),
    ];
    argv.extend([
        if spec.transport.starts_with("unix") {
            "--path"
        } else {
            "--addr"
        }
        .into(),
        target,
    ]);
    argv.extend([
        "--conns".into(),
        spec.conns.to_string(),
        "--duration".into(),
        fmt_duration(ctx.duration),
        "--warmup".into(),
        fmt_duration(ctx.warmup),
        "--size".into(),
        spec.size_bytes.to_string(),
        "--threads".into(),
        ctx.split.loadgen.cpus().len().to_string(),
        "--pin".into(),
        ctx.split.loadgen.to_string(),
        "--connect-rate".into(),
        CONNECT_RATE.to_string(),
        "--label".into(),
        spec.backend.clone(),
        "--backend".into(),
        spec.backend.clone(),
    ]);
    if let Some(rate) = spec.rate {
        argv.extend(["--rate".into(), format!("{rate}")]);
    }
    argv.extend(["--out".into(), out_path.display().to_string()]);
    record.loadgen_argv = argv.clone();

    let log_path = ctx.scratch.join(format!("{}.log", spec.name()));
    let log = File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let mut monitor = TreeMonitor::start(server.id());
    let spawned = Instant::now();
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    confine_command(&mut cmd, &ctx.split.loadgen);
    let mut loadgen = cmd.spawn().with_context(|| format!("starting {}", argv[0]))?;

    // 3. The CPU window: loadgen connects (at CONNECT_RATE), warms up, then
    // measures. We read the tree's CPU once the warm-up should be over and
    // again just before the measured phase should end. Load is steady through
    // warm-up and measurement, so CPU per message over this window is the
    // ratio of two steady rates even if connecting took longer than planned.
    let connect_est = Duration::from_secs_f64(spec.conns as f64 / CONNECT_RATE as f64);
    let window_start = connect_est + ctx.warmup;
    // End a little before loadgen's measured phase does, so that its teardown is never inside.
    let guard = Duration::from_millis(250).min(ctx.duration / 10);
    let window_end = window_start + ctx.duration.saturating_sub(guard);
    let bound = window_start + ctx.duration + LOADGEN_SLACK;
    let mut end_marked = false;
    let status = loop {
        if let Some(status) = loadgen.try_wait().context("waiting for loadgen")? {
            // Exited before the planned end (e.g. a failure): the window ends here.
            if monitor.has_start() && !end_marked {
                monitor.mark_end();
            }
            break Some(status);
        }
        let t = spawned.elapsed();
        if !monitor.has_start() && t >= window_start {
            monitor.mark_start();
        } else if monitor.has_start() && !end_marked && t >= window_end {
            monitor.mark_end();
            end_marked = true;
        }
        if t >= bound {
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let cost = monitor.finish();
    let Some(status) = status else {
        send_signal(loadgen.id() as i32, libc::SIGKILL);
        let _ = loadgen.wait();
        bail!(
            "loadgen did not finish within {:?}; killed. Its last output:\n{}",
            bound,
            file_tail(&log_path)
        );
    };
    record.loadgen_exit = status.code();

    // 4. The result, annotated with the backend and the server's cost.
    let mut result = super::read_result(&out_path).with_context(|| {
        format!(
            "loadgen exited with {status} and wrote no readable result. Its last output:\n{}",
            file_tail(&log_path)
        )
    })?;
    result.settings.backend = Some(spec.backend.clone());
    let extra = &mut result.extra;
    // Only this run's measurements: never a figure left in `extra` by someone else.
    extra.retain(|k, _| !k.starts_with("server_") && !k.starts_with("other_processes_"));
    let mut put = |k: &str, v: serde_json::Value| {
        extra.insert(k.to_string(), v);
    };
    put("runner", "compare".into());
    put("server_argv", serde_json::to_value(&record.server_argv)?);
    put("server_threads", spec.server_threads.into());
    put("server_cpus", ctx.split.server.to_string().into());
    put("server_cores", (ctx.split.server.cpus().len() as u64).into());
    put("loadgen_cpus", ctx.split.loadgen.to_string().into());
    put("loadgen_cores", (ctx.split.loadgen.cpus().len() as u64).into());
    put("requested_conns", spec.requested_conns.into());
    if let Some(note) = &spec.note {
        put("scale_down", note.clone().into());
    }
    put("server_peak_rss_kb", cost.peak_rss_kib().into());
    put("server_peak_procs", (cost.peak_procs as u64).into());
    let window_msgs = result.throughput.msgs_per_s * cost.window_s;
    let cpu_per_msg = match cost.cpu_us() {
        Some(0) => {
            put("server_cpu_note", "no server CPU time seen in the window".into());
            None
        }
        Some(cpu_us) if cost.window_s > 0.0 && window_msgs >= 1.0 => {
            put("server_cpu_us", cpu_us.into());
            put("server_cpu_window_s", cost.window_s.into());
            put("server_cpu_cores_busy", (cpu_us as f64 / 1e6 / cost.window_s).into());
            let v = cpu_us as f64 / window_msgs;
            put("server_cpu_us_per_msg", v.into());
            Some(v)
        }
        _ => {
            put(
                "server_cpu_note",
                "not measured: loadgen ended before the measured window began".into(),
            );
            None
        }
    };
    if let Some(summary) = &record.server_summary {
        put("server_summary", summary.clone().into());
    }
    if let (Some(us), Some(cores)) = (cost.others_cpu_us, cost.others_cores()) {
        put("other_processes_cpu_us", us.into());
        put("other_processes_cores", cores.into());
    }
    super::write_result(&out_path, &result)?;
    record.msgs_per_s = Some(result.throughput.msgs_per_s);
    record.headline = Some(format!(
        "{:.0} msgs/s, p50 {:.0} us, p99 {:.0} us, server {} us/msg, peak RSS {} KiB, errors {}",
        result.throughput.msgs_per_s,
        result.latency_us.p50,
        result.latency_us.p99,
        cpu_per_msg.map(|v| format!("{v:.2}")).unwrap_or_else(|| "?".into()),
        cost.peak_rss_kib(),
        result.errors.total()
    ));
    if let Some(cores) = cost.others_cores().filter(|&c| c > super::DISTURBED_CORES) {
        if let Some(h) = record.headline.as_mut() {
            h.push_str(&format!("; DISTURBED: other processes used {cores:.2} cores"));
        }
    }
    if !status.success() {
        bail!(
            "loadgen exited with {status} (result kept: {} errors). Its last output:\n{}",
            result.errors.total(),
            file_tail(&log_path)
        );
    }
    let _ = std::fs::remove_file(&log_path);
    Ok(())
}
