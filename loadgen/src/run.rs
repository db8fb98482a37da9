//! A whole loadgen run: start the threads, drive the phases, collect the result.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use sockbench::net;
use sockbench::sys::signal;

use crate::cli::{Args, IoMode, DEFAULT_ADDR};
use crate::result::{self, Errors, Extra, RunEnv, RunResult, SeriesPoint, Settings, Throughput, SCHEMA};
use crate::stats::{self, Interval, ThreadTotals};
use crate::worker::{self, Plan, Shared, UNSET};
use crate::{pattern, report};

/// Exit code for a bad flag (as clap uses).
pub const EXIT_USAGE: i32 = 2;

/// A flag-level problem found after parsing: exit code 2 with this message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Grace after the last paced connect before startup gives up waiting.
const CONNECT_GRACE: Duration = Duration::from_secs(3);

/// The machine, for the result file.
pub fn run_env(pin: &str) -> RunEnv {
    RunEnv {
        kernel: sockbench::machine::kernel_release(),
        cpu_model: sockbench::machine::cpu_model(),
        cores: sockbench::cpu::available_cpus(),
        pin: pin.to_string(),
    }
}

/// The commit of the source tree loadgen was built from (`-dirty` with
/// uncommitted changes), else "unknown".
pub fn git_commit() -> String {
    sockbench::machine::git_commit(std::path::Path::new(env!("CARGO_MANIFEST_DIR")))
}

/// Removes the unixgram clients' directory at the end of the run.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs loadgen with parsed `args`; `argv` is recorded verbatim. Returns the exit code.
pub fn run(args: Args, argv: Vec<String>) -> anyhow::Result<i32> {
    let endpoint = net::endpoint_from_flags(args.transport, args.addr.as_deref(), args.path.as_deref(), DEFAULT_ADDR)
        .map_err(|e| UsageError(e.to_string()))?;
    if !args.transport.is_stream() && (args.size as usize) < pattern::HEADER_LEN {
        return Err(UsageError(format!(
            "--size {}: datagrams carry a {}-byte header (connection id, sequence number); use --size {} or more",
            args.size,
            pattern::HEADER_LEN,
            pattern::HEADER_LEN
        ))
        .into());
    }
    let fd_need = args.conns + 64;
    // Raise the soft limit to the hard one first: only past the hard limit is
    // the user's help needed.
    let fd_limit = sockbench::sys::raise_fd_limit().unwrap_or_else(|_| sockbench::sys::fd_limit());
    if fd_need > fd_limit {
        return Err(UsageError(format!(
            "--conns {} needs about {fd_need} descriptors but the hard limit is {fd_limit}; \
             raise it (as root: ulimit -Hn {fd_need}; ulimit -n {fd_need}) or lower --conns",
            args.conns,
        ))
        .into());
    }
    let threads = (args.threads).min(args.conns) as usize;
    let unixgram_dir = if args.transport == net::Transport::Unixgram {
        let dir = std::env::temp_dir().join(format!("loadgen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Some(dir)
    } else {
        None
    };
    let _cleanup = unixgram_dir.clone().map(TempDir);
    let plan = Arc::new(Plan {
        transport: args.transport,
        endpoint: endpoint.clone(),
        conns: args.conns,
        size: args.size as usize,
        depth: args.depth,
        rate: args.rate,
        timeout_ns: args.timeout.as_nanos() as u64,
        connect_rate: args.connect_rate as f64,
        threads,
        unixgram_dir,
        io: args.io,
    });
    signal::install_stop_handler(-1).context("install the SIGINT/SIGTERM handler")?;
    let shared = Arc::new(Shared::new());
    let (tx, rx) = mpsc::channel::<Interval>();
    let mut handles = Vec::new();
    for i in 0..threads {
        let (plan, shared, tx, pin) = (plan.clone(), shared.clone(), tx.clone(), args.pin.clone());
        let h = std::thread::Builder::new()
            .name(format!("loadgen-{i}"))
            .spawn(move || {
                if let Some(pin) = &pin {
                    if !pin.pin_worker(i) {
                        eprintln!(
                            "loadgen: warning: could not pin thread {i} to CPU {}",
                            pin.for_worker(i)
                        );
                    }
                }
                let res = worker::run_thread(i, &plan, &shared, tx);
                if res.is_err() {
                    shared.stop.store(true, Relaxed);
                }
                res
            })?;
        handles.push(h);
    }
    drop(tx);

    let mut phases = drive(&args, &shared, &rx, threads);
    shared.stop.store(true, Relaxed);
    let mut totals = Vec::new();
    let mut thread_error = None;
    for h in handles {
        match h.join() {
            Ok(Ok(t)) => totals.push(t),
            Ok(Err(e)) => thread_error = Some(e),
            Err(_) => thread_error = Some(std::io::Error::other("an event-loop thread panicked")),
        }
    }
    let mut fatal = phases.fatal.clone();
    if let Some(e) = thread_error {
        fatal.get_or_insert(format!("event loop failed: {e}"));
    }
    // The final flush's interval is not shown; the result's totals come from `totals`.
    while rx.try_recv().is_ok() {}

    phases.io_used = if !plan.transport.is_stream() || args.io == IoMode::Epoll {
        "epoll"
    } else if let Some(why) = shared.io_fallback.lock().unwrap().clone() {
        eprintln!("loadgen: warning: io_uring is not usable ({why}); the stream clients used epoll");
        "epoll"
    } else {
        "uring"
    };
    let result = build_result(&args, argv, &plan, &totals, &phases, fatal.is_none(), threads);
    eprint!("{}", report::summary(&result.0));
    if let Some(out) = &args.out {
        report::write_result(out, &result.0, &result.1)?;
        eprintln!("  wrote {} and {}", out.display(), report::hgrm_path(out).display());
    }
    let mut code = 0;
    if let Some(msg) = &fatal {
        eprintln!("loadgen: error: {msg}");
        code = 1;
    }
    // Corruption fails the run whenever it happened, warm-up included.
    let mismatched: u64 = totals.iter().map(|t| t.mismatch_whole_run).sum();
    if mismatched > 0 {
        eprintln!(
            "loadgen: error: {mismatched} echoes did not match what was sent (corruption; {} in the measured phase)",
            result.0.errors.mismatch
        );
        code = 1;
    }
    if code == 0 && result.0.messages == 0 {
        eprintln!("loadgen: error: no echo completed in the measured phase");
        code = 1;
    }
    Ok(code)
}

/// What the main thread saw while driving the phases.
struct Phases {
    fatal: Option<String>,
    series: Vec<SeriesPoint>,
    measured_s: f64,
    cpu_us: Option<u64>,
    server_cpu_us: Option<u64>,
    /// How the stream clients did their I/O, once the threads have said.
    io_used: &'static str,
}

/// Drives startup, warm-up and the measured phase, printing the live line.
fn drive(args: &Args, shared: &Shared, rx: &mpsc::Receiver<Interval>, threads: usize) -> Phases {
    let target = match (&args.addr, &args.path) {
        (_, Some(p)) => p.display().to_string(),
        (Some(a), _) => a.clone(),
        _ => DEFAULT_ADDR.to_string(),
    };
    let mut ph = Phases {
        fatal: None,
        series: Vec::new(),
        measured_s: 0.0,
        cpu_us: None,
        server_cpu_us: None,
        io_used: "epoll",
    };
    let server_cpu = || args.server_pid.and_then(|p| sockbench::procfs::tree_cpu_us(p).ok());
    let mut server_cpu_at_start = None;
    let spread = Duration::from_secs_f64(args.conns as f64 / args.connect_rate as f64);
    let connect_deadline = (spread + CONNECT_GRACE).as_nanos() as u64;
    let mut next_tick = 1_000_000_000u64;
    let mut tick_start = 0u64;
    let mut tick_no = 0u64;
    // Intervals by tick, and how many threads have reported each.
    let mut pending: BTreeMap<u64, PendingTick> = BTreeMap::new();
    let mut measure_tick_first = None;
    let mut cpu_at_start = None;
    let mut end = UNSET;
    let mut final_tick: Option<u64> = None;
    loop {
        if let Some(t) = final_tick {
            if !pending.contains_key(&t) && tick_no >= t {
                break;
            }
        }
        let now = shared.now_ns();
        if shared.stop.load(Relaxed) {
            ph.fatal.get_or_insert("an event-loop thread failed".into());
            break;
        }
        if signal::stop_requested() {
            // Ctrl-C or SIGTERM: end now and still write what was measured,
            // marked incomplete, rather than lose the run.
            let ms = shared.measure_start_ns.load(Relaxed);
            if ms != UNSET && now > ms {
                ph.measured_s = now.min(end).saturating_sub(ms) as f64 / 1e9;
                if let (Some(a), Ok(b)) = (cpu_at_start, crate::sys::process_cpu_us()) {
                    ph.cpu_us = Some(b.saturating_sub(a));
                }
                if let (Some(a), Some(b)) = (server_cpu_at_start, server_cpu()) {
                    ph.server_cpu_us = Some(b.saturating_sub(a));
                }
            }
            ph.fatal = Some("interrupted by a signal; the result covers the measured phase up to then".into());
            break;
        }
        let load_start = shared.load_start_ns.load(Relaxed);
        if load_start == UNSET {
            let up = shared.open.load(Relaxed);
            if up == args.conns || (now >= connect_deadline && up > 0) {
                if up < args.conns {
                    eprintln!(
                        "loadgen: warning: only {up} of {} connections up after {:.1}s; going on with those",
                        args.conns,
                        now as f64 / 1e9
                    );
                }
                let ms = now + args.warmup.as_nanos() as u64;
                end = ms + args.duration.as_nanos() as u64;
                shared.measure_start_ns.store(ms, Relaxed);
                shared.end_ns.store(end, Relaxed);
                shared.load_start_ns.store(now, std::sync::atomic::Ordering::Release);
                // A tick falls on the measured phase's start, so warm-up stays out of the series.
                next_tick = next_tick.min(ms.max(now + 1));
            } else if now >= connect_deadline {
                let why = shared
                    .last_connect_error
                    .lock()
                    .unwrap()
                    .clone()
                    .unwrap_or_else(|| "no answer".into());
                ph.fatal = Some(format!("cannot reach the server at {} {target}: {why}", args.transport));
                break;
            }
        } else {
            let ms = shared.measure_start_ns.load(Relaxed);
            if now >= ms && cpu_at_start.is_none() {
                cpu_at_start = crate::sys::process_cpu_us().ok();
                server_cpu_at_start = server_cpu();
            }
            if shared.open.load(Relaxed) == 0 {
                let why = shared.last_loss.lock().unwrap().clone().unwrap_or_default();
                ph.fatal = Some(format!(
                    "every connection to {target} is gone ({why}); did the server die?"
                ));
                ph.measured_s = (now.saturating_sub(ms)) as f64 / 1e9;
                break;
            }
            if now >= end && final_tick.is_none() {
                ph.measured_s = args.duration.as_secs_f64();
                if let (Some(a), Ok(b)) = (cpu_at_start, crate::sys::process_cpu_us()) {
                    ph.cpu_us = Some(b.saturating_sub(a));
                }
                if let (Some(a), Some(b)) = (server_cpu_at_start, server_cpu()) {
                    ph.server_cpu_us = Some(b.saturating_sub(a));
                }
                // One last tick collects the final partial second; the threads stop after it.
                next_tick = now;
                final_tick = Some(tick_no + 1);
            }
        }
        if now >= next_tick {
            tick_no += 1;
            let ms = shared.measure_start_ns.load(Relaxed);
            if measure_tick_first.is_none() && ms != UNSET && now >= ms {
                measure_tick_first = Some(tick_no);
            }
            pending.insert(
                tick_no,
                PendingTick {
                    sum: empty_interval(tick_no),
                    reported: 0,
                    from_ns: tick_start,
                    to_ns: now,
                },
            );
            tick_start = now;
            shared.tick.store(tick_no, Relaxed);
            next_tick = now + 1_000_000_000;
            let ms = shared.measure_start_ns.load(Relaxed);
            if ms != UNSET && ms > now {
                next_tick = next_tick.min(ms);
            }
            if end != UNSET && end > now {
                next_tick = next_tick.min(end);
            }
        }
        // Collect intervals: each thread's report at tick n covers (n-1, n].
        let wait = Duration::from_nanos(next_tick.saturating_sub(shared.now_ns()).clamp(1_000_000, 50_000_000));
        if let Ok(iv) = rx.recv_timeout(wait) {
            absorb(&mut pending, iv);
            while let Ok(iv) = rx.try_recv() {
                absorb(&mut pending, iv);
            }
        }
        let ready: Vec<u64> = pending
            .iter()
            .filter(|(&t, p)| {
                p.reported >= threads
                    || ((t < tick_no || final_tick.is_some()) && shared.now_ns() > p.to_ns + 300_000_000)
            })
            .map(|(&t, _)| t)
            .collect();
        for t in ready {
            let PendingTick {
                sum: iv,
                from_ns: from,
                to_ns: to,
                ..
            } = pending.remove(&t).unwrap();
            let secs = (to - from).max(1) as f64 / 1e9;
            let ms = shared.measure_start_ns.load(Relaxed);
            let phase = if ms == UNSET {
                "startup"
            } else if from < ms {
                "warmup"
            } else {
                ""
            };
            eprintln!(
                "[{:>6.1}s] {:>10.0} msgs/s {:>8.2} MB/s  p50 {:>6} us  p99 {:>7} us  errors {:>5}  open {}/{} {}",
                to as f64 / 1e9,
                iv.msgs as f64 / secs,
                iv.bytes as f64 / secs / 1e6,
                iv.hist.value_at_quantile(0.5),
                iv.hist.value_at_quantile(0.99),
                iv.errors.total(),
                shared.open.load(Relaxed),
                args.conns,
                phase
            );
            if ms != UNSET && from >= ms {
                ph.series.push(SeriesPoint {
                    t_s: ((to - ms) as f64 / 1e9 * 1000.0).round() / 1000.0,
                    msgs: iv.msgs,
                    p50_us: iv.hist.value_at_quantile(0.5) as f64,
                    p99_us: iv.hist.value_at_quantile(0.99) as f64,
                    errors: iv.errors.total(),
                });
            }
        }
    }
    ph
}

fn empty_interval(tick: u64) -> Interval {
    Interval {
        thread: 0,
        tick,
        hist: stats::new_histogram(),
        msgs: 0,
        bytes: 0,
        errors: Errors::default(),
    }
}

/// One second of the run being summed over the threads' reports.
struct PendingTick {
    /// The reports so far, added up.
    sum: Interval,
    /// How many threads have reported.
    reported: usize,
    /// The second's start and end, ns since the run began.
    from_ns: u64,
    to_ns: u64,
}

fn absorb(pending: &mut BTreeMap<u64, PendingTick>, iv: Interval) {
    if let Some(p) = pending.get_mut(&iv.tick) {
        let _ = p.sum.hist.add(&iv.hist);
        p.sum.msgs += iv.msgs;
        p.sum.bytes += iv.bytes;
        stats::add_errors(&mut p.sum.errors, &iv.errors);
        p.reported += 1;
    }
}

fn build_result(
    args: &Args,
    argv: Vec<String>,
    plan: &Plan,
    totals: &[ThreadTotals],
    ph: &Phases,
    ok: bool,
    threads: usize,
) -> (RunResult, Histogram<u64>) {
    let mut hist = stats::new_histogram();
    let mut unc = stats::new_histogram();
    let mut errors = Errors::default();
    let (mut messages, mut bytes, mut scheduled) = (0, 0, 0);
    for t in totals {
        let _ = hist.add(&t.hist);
        let _ = unc.add(&t.hist_uncorrected);
        stats::add_errors(&mut errors, &t.errors);
        messages += t.messages;
        bytes += t.bytes;
        scheduled += t.scheduled;
    }
    let secs = if ph.measured_s > 0.0 {
        ph.measured_s
    } else {
        args.duration.as_secs_f64()
    };
    let pin = args
        .pin
        .as_ref()
        .map(|p| p.cpus().iter().map(|c| c.to_string()).collect::<Vec<_>>().join(","));
    let per_msg = |cpu: Option<u64>| cpu.filter(|_| messages > 0);
    let loadgen_cpu = per_msg(ph.cpu_us);
    let server_cpu = per_msg(ph.server_cpu_us);
    let extra = Extra {
        latency_uncorrected_us: Some(stats::latency_of(&unc)),
        histogram_uncorrected: Some(result::encode_histogram(&unc)),
        threads_used: Some(threads as u64),
        scheduled_messages: args.rate.map(|_| scheduled),
        loadgen_cpu_us: loadgen_cpu,
        loadgen_cpu_us_per_msg: loadgen_cpu.map(|cpu| cpu as f64 / messages as f64),
        server_cpu_us: server_cpu,
        server_cpu_us_per_msg: server_cpu.map(|cpu| cpu as f64 / messages as f64),
        merged_from: Vec::new(),
    };
    let result = RunResult {
        schema: SCHEMA.into(),
        command: argv,
        version: env!("CARGO_PKG_VERSION").into(),
        git_commit: git_commit(),
        env: run_env(pin.as_deref().unwrap_or("none")),
        settings: Settings {
            backend: args.backend.clone().or_else(|| args.label.clone()),
            label: args.label.clone(),
            transport: plan.transport.name().into(),
            target: plan.endpoint.to_string(),
            conns: args.conns,
            duration_s: args.duration.as_secs_f64(),
            warmup_s: args.warmup.as_secs_f64(),
            size: args.size,
            depth: args.depth,
            rate: args.rate,
            threads: args.threads,
            pin,
            connect_rate: args.connect_rate,
            timeout_s: args.timeout.as_secs_f64(),
            io: Some(ph.io_used.into()),
        },
        complete: ok,
        messages,
        bytes,
        throughput: Throughput {
            msgs_per_s: messages as f64 / secs,
            mb_per_s: bytes as f64 / secs / 1e6,
            requested_msgs_per_s: args.rate,
        },
        latency_us: stats::latency_of(&hist),
        errors,
        series: ph.series.clone(),
        histogram: result::encode_histogram(&hist),
        extra,
    };
    (result, hist)
}
