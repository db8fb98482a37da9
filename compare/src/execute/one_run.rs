//! One run, start to finish: the confined server, its `listening` line,
//! loadgen confined to the other CPUs, the server tree's cost over loadgen's
//! measured window, and the stop. Never panics on a failing child; every
//! wait is bounded, and a stop signal ends the run at once.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sockbench::sys::signal;

use super::binaries::Binaries;
use super::proc_cpu::{TreeCost, TreeMonitor};
use super::process::{confine_command, file_tail, stop_loadgen, stop_server, Tail};
use super::Interrupted;
use crate::plan::{CpuSplit, RunSpec, Timing};
use crate::record::{LoadgenCost, OtherProcesses, Outcome, RunFileName, RunRecord, ServerCost, RUNS_DIR};

/// How long the server may take to print `listening`.
pub const LISTEN_TIMEOUT: Duration = Duration::from_secs(15);
/// Slack on top of loadgen's own bound (warm-up + duration + connects) before
/// the runner kills it.
pub const LOADGEN_SLACK: Duration = Duration::from_secs(20);

/// Everything that is the same for every run.
pub struct RunContext {
    pub bins: Binaries,
    pub split: CpuSplit,
    /// The output directory: loadgen runs in its `runs/` folder and writes its result files there.
    pub out_dir: PathBuf,
    /// Sockets and logs, removed at the end.
    pub scratch: PathBuf,
    pub timing: Timing,
    /// Above this many cores of other processes the headline says DISTURBED.
    pub disturbed_cores: f64,
    /// Server CPU per message below this is impossible (see [`super::validity`]).
    pub cpu_floor_us_per_msg: f64,
    /// `--count-syscalls`: perf counts the server's system calls in each window.
    pub count_syscalls: bool,
}

/// A finished run and the line the progress output shows for it.
pub struct RunOutput {
    pub record: RunRecord,
    pub headline: Option<String>,
}

/// One run; with `redo`, the second try of a run found invalid, whose
/// files go beside the first's. A failure is recorded in the returned
/// record, not returned.
pub fn run_one(ctx: &RunContext, spec: RunSpec, redo: bool) -> RunOutput {
    let started = Instant::now();
    let unix_path = ctx.scratch.join(format!("{}.sock", spec.name()));
    let server = ctx.bins.server_for(spec.peer);
    let mut record = RunRecord::failed(spec.clone(), "not run");
    if redo {
        record.result_file = RunFileName::for_redo(&spec);
        record.redo = true;
    }
    record.server_cores = ctx.split.server.cpus().len() as u64;
    record.loadgen_cores = ctx.split.loadgen.cpus().len() as u64;
    record.server_argv = spec.server_argv(&server, &unix_path, &ctx.split.server);
    let outcome = drive(ctx, &spec, &unix_path, &mut record);
    record.wall_s = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&unix_path);
    match outcome {
        Ok(headline) => {
            record.outcome = Outcome::Ok;
            RunOutput {
                record,
                headline: Some(headline),
            }
        }
        Err(e) => {
            record.outcome = Outcome::Failed(format!("{e:#}"));
            RunOutput { record, headline: None }
        }
    }
}

/// Starts the server, runs the rest with it, stops it. Fills `record` as it
/// goes, so a failure keeps what was learned.
fn drive(ctx: &RunContext, spec: &RunSpec, unix_path: &Path, record: &mut RunRecord) -> anyhow::Result<String> {
    let argv = &record.server_argv;
    let mut server = {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a final SIGKILL reaches forked children,
            // and a Ctrl-C at the terminal reaches only compare, which stops it.
            .process_group(0);
        confine_command(&mut cmd, &ctx.split.server);
        cmd.spawn().with_context(|| format!("starting {}", argv[0]))?
    };
    let (lines_tx, lines_rx) = mpsc::channel();
    let server_out = Tail::collect(server.stdout.take().expect("piped"), Some(lines_tx));
    let server_err = Tail::collect(server.stderr.take().expect("piped"), None);
    let result = with_server(ctx, spec, &mut server, &lines_rx, unix_path, record);
    let clean_stop = stop_server(&mut server);
    record.server_summary = server_summary(&lines_rx, &server_out);
    match result {
        Err(e) if e.is::<Interrupted>() => Err(e),
        Err(e) => {
            // The server has stopped: its stderr is at EOF, or nearly.
            let err = server_err.text_at_eof(Duration::from_millis(500));
            if err.is_empty() {
                Err(e)
            } else {
                Err(anyhow::anyhow!("{e:#}\nserver stderr:\n{err}"))
            }
        }
        Ok(_) if !clean_stop => {
            bail!(
                "server did not exit within {:?} of SIGTERM (killed)",
                super::process::STOP_TIMEOUT
            )
        }
        Ok(headline) => Ok(headline),
    }
}

/// The server's `summary` line: it arrives on stdout as the server exits.
fn server_summary(lines: &mpsc::Receiver<String>, out: &Tail) -> Option<String> {
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        match lines.recv_timeout(Duration::from_millis(50)) {
            Ok(line) if line.starts_with("summary") => return Some(line),
            Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    out.text().lines().find(|l| l.starts_with("summary")).map(str::to_owned)
}

/// Waits (bounded) for `listening` and returns loadgen's target: the
/// socket path, or the `addr=` the server printed.
fn wait_listening(
    spec: &RunSpec,
    server: &mut Child,
    lines: &mpsc::Receiver<String>,
    unix_path: &Path,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + LISTEN_TIMEOUT;
    let listening = loop {
        match lines.recv_timeout(Duration::from_millis(50)) {
            Ok(line) if line.starts_with("listening") => break line,
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                if signal::stop_requested() {
                    return Err(Interrupted.into());
                }
                if let Ok(Some(status)) = server.try_wait() {
                    bail!("server exited ({status}) before printing `listening`");
                }
                if Instant::now() >= deadline {
                    bail!("server printed no `listening` line within {LISTEN_TIMEOUT:?}");
                }
            }
        }
    };
    if spec.transport.is_unix() {
        return Ok(unix_path.display().to_string());
    }
    listening
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("addr="))
        .map(str::to_owned)
        .with_context(|| format!("no addr= in the server's line {listening:?}"))
}

/// With the server listening: loadgen, the measured window, and the result.
fn with_server(
    ctx: &RunContext,
    spec: &RunSpec,
    server: &mut Child,
    lines: &mpsc::Receiver<String>,
    unix_path: &Path,
    record: &mut RunRecord,
) -> anyhow::Result<String> {
    let target = wait_listening(spec, server, lines, unix_path)?;
    let argv = spec.loadgen_argv(
        &ctx.bins.loadgen,
        &target,
        &ctx.timing,
        &ctx.split.loadgen,
        record.result_file.as_str(),
    );
    record.loadgen_argv = argv.clone();
    let log_path = ctx.scratch.join(format!("{}.log", spec.name()));
    let log = File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let monitor = TreeMonitor::start(server.id(), ctx.count_syscalls);
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(ctx.out_dir.join(RUNS_DIR))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    confine_command(&mut cmd, &ctx.split.loadgen);
    let mut loadgen = cmd.spawn().with_context(|| format!("starting {}", argv[0]))?;
    let watched = watch_loadgen(ctx, spec, &mut loadgen, monitor);
    record.server_cost = Some(server_cost(&watched.cost));
    record.other_processes = other_processes(&watched.cost);
    record.cpu_stat = watched.cost.cpu_stat.as_ref().map(|delta| {
        super::cpu_stat::window(
            delta,
            ctx.split.server.cpus(),
            ctx.split.loadgen.cpus(),
            super::cpu_stat::tick_us(),
        )
    });
    let status = match watched.end {
        LoadgenEnd::Exited(status) => status,
        LoadgenEnd::Interrupted => {
            stop_loadgen(&mut loadgen);
            return Err(Interrupted.into());
        }
        LoadgenEnd::Overran(bound) => {
            stop_loadgen(&mut loadgen);
            bail!(
                "loadgen did not finish within {bound:?}; killed. Its last output:\n{}",
                file_tail(&log_path)
            );
        }
    };
    record.loadgen_exit = status.code();
    let headline = check_result(ctx, record, status, &log_path)?;
    let _ = std::fs::remove_file(&log_path);
    Ok(headline)
}

/// How the wait for loadgen ended.
enum LoadgenEnd {
    Exited(ExitStatus),
    /// SIGINT or SIGTERM reached compare.
    Interrupted,
    /// Still running at this bound.
    Overran(Duration),
}

/// What [`watch_loadgen`] saw.
struct Watched {
    end: LoadgenEnd,
    cost: TreeCost,
}

/// Waits for loadgen and marks the CPU window. loadgen connects (at the
/// connect rate), warms up, then measures. The tree's CPU is read once the
/// warm-up should be over and again just before the measured phase should
/// end. Load is steady through warm-up and measurement, so CPU per message
/// over this window is the ratio of two steady rates even if connecting took
/// longer than planned.
fn watch_loadgen(ctx: &RunContext, spec: &RunSpec, loadgen: &mut Child, mut monitor: TreeMonitor) -> Watched {
    let timing = &ctx.timing;
    let spawned = Instant::now();
    let connect_est = Duration::from_secs_f64(spec.conns as f64 / timing.connect_rate as f64);
    let window_start = connect_est + timing.warmup;
    // End a little before loadgen's measured phase does, so that its teardown is never inside.
    let guard = Duration::from_millis(250).min(timing.duration / 10);
    let window_end = window_start + timing.duration.saturating_sub(guard);
    let bound = window_start + timing.duration + LOADGEN_SLACK;
    let mut end_marked = false;
    let end = loop {
        if let Ok(Some(status)) = loadgen.try_wait() {
            // Exited before the planned end (e.g. a failure): the window ends here.
            if monitor.has_start() && !end_marked {
                monitor.mark_end();
            }
            break LoadgenEnd::Exited(status);
        }
        if signal::stop_requested() {
            break LoadgenEnd::Interrupted;
        }
        let t = spawned.elapsed();
        if !monitor.has_start() && t >= window_start {
            monitor.mark_start();
        } else if monitor.has_start() && !end_marked && t >= window_end {
            monitor.mark_end();
            end_marked = true;
        }
        if t >= bound {
            break LoadgenEnd::Overran(bound);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Watched {
        end,
        cost: monitor.finish(),
    }
}

fn server_cost(cost: &TreeCost) -> ServerCost {
    ServerCost {
        cpu_us: cost.cpu_us(),
        window_s: cost.window_s,
        peak_rss_kib: cost.peak_rss_kib(),
        peak_procs: cost.peak_procs as u64,
        voluntary_ctxt_switches: cost.ctxt_switches.map(|c| c.voluntary),
        involuntary_ctxt_switches: cost.ctxt_switches.map(|c| c.involuntary),
        ctxt_tasks_gone: cost.ctxt_switches.map(|c| c.tasks_gone),
        syscalls: cost.syscalls,
    }
}

fn other_processes(cost: &TreeCost) -> Option<OtherProcesses> {
    Some(OtherProcesses {
        cpu_us: cost.others_cpu_us?,
        cores: cost.others_cores()?,
    })
}

/// Reads loadgen's result (never changing it) and returns the progress
/// headline, or why the run failed.
fn check_result(
    ctx: &RunContext,
    record: &mut RunRecord,
    status: ExitStatus,
    log_path: &Path,
) -> anyhow::Result<String> {
    let path = record.result_file.in_dir(&ctx.out_dir);
    let result = loadgen::result::read(&path).with_context(|| {
        format!(
            "loadgen exited with {status} and wrote no readable result. Its last output:\n{}",
            file_tail(log_path)
        )
    })?;
    if !status.success() {
        bail!(
            "loadgen exited with {status} (result kept: {} errors). Its last output:\n{}",
            result.errors.total(),
            file_tail(log_path)
        );
    }
    record.loadgen_cost = loadgen_cost(&result);
    let cost = record.server_cost.clone().unwrap_or_default();
    let per_msg = cost.cpu_us_per_msg(result.throughput.msgs_per_s);
    let mut headline = format!(
        "{:.0} msgs/s, p50 {:.0} us, p99 {:.0} us, server {} us/msg, peak RSS {} KiB, errors {}",
        result.throughput.msgs_per_s,
        result.latency_us.p50,
        result.latency_us.p99,
        per_msg.map(|v| format!("{v:.2}")).unwrap_or_else(|| "?".into()),
        cost.peak_rss_kib,
        result.errors.total()
    );
    let conversations = &result.conversations;
    if let Some(c) = conversations {
        let per_conn = cost.cpu_us_per_msg(c.per_s);
        headline.push_str(&format!(
            "; {:.0} conversations/s, server {} us/conn, {} failed",
            c.per_s,
            per_conn.map(|v| format!("{v:.1}")).unwrap_or_else(|| "?".into()),
            c.failed.total()
        ));
    }
    if let Some(offered) = record.spec.rate {
        // With --conn-msgs the offered rate counts conversations.
        let (achieved, unit) = match conversations {
            Some(c) => (c.per_s, "conversations"),
            None => (result.throughput.msgs_per_s, "msgs"),
        };
        headline.push_str(&format!(
            "; achieved {:.1}% of the offered {offered:.0} {unit}/s",
            achieved / offered * 100.0
        ));
    }
    if let Some(o) = record
        .other_processes
        .as_ref()
        .filter(|o| o.cores > ctx.disturbed_cores)
    {
        headline.push_str(&format!("; DISTURBED: other processes used {:.2} cores", o.cores));
    }
    // Steal is invisible in every other figure (the server's CPU time does
    // not grow while its vCPU waits for the host), so it is named when seen.
    if let Some(steal_us) = record
        .cpu_stat
        .as_ref()
        .map(|s| s.server_cpus.steal_us)
        .filter(|&us| us > 0)
    {
        headline.push_str(&format!("; steal {:.0} ms on the server's CPUs", steal_us as f64 / 1e3));
    }
    Ok(headline)
}

/// loadgen's CPU over its own measured phase, whose length is its messages
/// over its rate (loadgen computes the rate over the phase it measured).
fn loadgen_cost(result: &loadgen::result::RunResult) -> Option<LoadgenCost> {
    let cpu_us = result.extra.loadgen_cpu_us?;
    let rate = result.throughput.msgs_per_s;
    let window_s = if result.messages > 0 && rate > 0.0 {
        result.messages as f64 / rate
    } else {
        result.settings.duration_s
    };
    Some(LoadgenCost { cpu_us, window_s })
}
