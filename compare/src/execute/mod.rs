//! Stage 3, execute: measure the machine's pauses, then for each planned
//! run start the server confined to its CPUs, wait for its `listening`
//! line, run loadgen confined to the other CPUs, sample the server tree's
//! cost, and stop the server. Each run's record goes into the manifest,
//! which is saved after every run; loadgen's result files are never edited.
//!
//! On SIGINT or SIGTERM the running server's process group and loadgen are
//! stopped and [`Interrupted`] is returned.
//!
//! - [`binaries`]: finding `server` and `loadgen`.
//! - [`process`]: confinement, bounded waits, stopping.
//! - [`one_run`]: one run.
//! - [`proc_cpu`]: the server tree's CPU time and memory.
//! - [`stalls`]: the machine's own pauses.
//! - [`cpu_stat`]: steal, iowait and interrupt time per CPU over a run's window.
//! - [`validity`]: runs whose figures are impossible, redone once.

pub mod binaries;
pub mod cpu_stat;
pub mod one_run;
pub mod proc_cpu;
pub mod process;
pub mod stalls;
pub mod syscalls;
pub mod validity;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use sockbench::sys::signal;

use self::binaries::Binaries;
use self::one_run::{run_one, RunContext};
use crate::plan::{fmt_ms, matched_rates, Comparison, MatchedRates, PointShape, Purpose, RunSpec};
use crate::record::{AdaptiveMethod, CpuStalls, Manifest, Method, Outcome, PeerMethod, MANIFEST_SCHEMA, RUNS_DIR};

/// A run whose window saw other processes use more than this many cores is
/// called disturbed in the progress output and in the report. An idle machine
/// shows well under 0.01 (the census counts whole 10 ms clock ticks).
pub const DISTURBED_CORES: f64 = 0.05;

/// The comparison was stopped by SIGINT or SIGTERM.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by a signal; the server and loadgen were stopped")]
pub struct Interrupted;

/// Fails with [`Interrupted`] once a stop signal has arrived.
fn check_stop() -> anyhow::Result<()> {
    if signal::stop_requested() {
        return Err(Interrupted.into());
    }
    Ok(())
}

/// Adaptive repetitions: rounds after the plan's, up to
/// `method.max_repetitions` at each point and within the plan's budget.
/// `next_round` is given the manifest so far, the output directory and
/// each point's next round (every peer of the point), and returns those of
/// the runs still needed (whole points); an empty list ends the extra
/// rounds. The caller decides (with `analyse::adaptive`), so this stage
/// imports nothing from a later one; this stage decides the order and what
/// the budget allows (see [`adaptive_rounds`]).
pub struct ExtraRounds<'a> {
    pub method: AdaptiveMethod,
    pub next_round: &'a NextRound,
}

/// Given the manifest so far, the output directory and candidate runs,
/// those still needed.
pub type NextRound = dyn Fn(&Manifest, &Path, Vec<RunSpec>) -> Vec<RunSpec>;

/// Time kept free at the end of the budget for the report: analysing the
/// runs, drawing the plots and publishing take a few seconds.
pub const REPORT_RESERVE: Duration = Duration::from_secs(20);

/// Runs the whole plan, writing loadgen's files and the manifest into
/// `out_dir`, and returns the manifest. With `extra`, each phase (closed
/// loop, then matched load) runs its planned rounds, and then come the
/// adaptive rounds (see [`adaptive_rounds`]).
pub fn run_comparison(
    plan: &Comparison,
    bins: Binaries,
    out_dir: &Path,
    extra: Option<&ExtraRounds>,
) -> anyhow::Result<Manifest> {
    let started = Instant::now();
    signal::install_stop_handler(-1).context("installing the SIGINT/SIGTERM handler")?;
    announce(plan);
    let platform_stalls = measure_stalls(plan);
    check_stop()?;
    // compare's own threads (the /proc sampler) stay off the server's CPUs.
    let split = &plan.split;
    process::set_affinity(&process::cpu_mask(&split.loadgen)).context("pinning compare to the loadgen CPUs")?;
    eprintln!(
        "compare: each server process tree is confined to CPU {}; loadgen and this runner to CPU {}",
        split.server, split.loadgen
    );
    let cpu_floor_us_per_msg = validity::measure_syscall_floor_us();
    let syscalls_not_counted = syscalls::not_counted_because(plan.count_syscalls);
    if let (true, Some(why)) = (plan.count_syscalls, &syscalls_not_counted) {
        eprintln!("compare: --count-syscalls: no run will count system calls: {why}");
    }
    eprintln!(
        "compare: one system call costs {:.3} µs here; a run whose server CPU per message is below that is invalid",
        cpu_floor_us_per_msg
    );
    // Sockets and logs go into a fresh directory of our own, removed on the
    // way out whatever happens (kept short: a Unix socket path has at most
    // 107 bytes).
    let scratch = tempfile::Builder::new()
        .prefix("sockbench-compare-")
        .tempdir()
        .context("creating a scratch directory in TMPDIR")?;
    let ctx = RunContext {
        bins,
        split: split.clone(),
        out_dir: out_dir.to_path_buf(),
        scratch: scratch.path().to_path_buf(),
        timing: plan.timing,
        disturbed_cores: DISTURBED_CORES,
        cpu_floor_us_per_msg,
        count_syscalls: syscalls_not_counted.is_none(),
    };
    let runs_dir = out_dir.join(RUNS_DIR);
    std::fs::create_dir_all(&runs_dir).with_context(|| format!("creating {}", runs_dir.display()))?;
    let mut manifest = new_manifest(plan, platform_stalls);
    manifest.method.cpu_floor_us_per_msg = Some(cpu_floor_us_per_msg);
    manifest.method.syscalls_not_counted = syscalls_not_counted;
    manifest.method.adaptive = extra.map(|e| e.method);
    let result = run_all(plan, &ctx, &mut manifest, extra, started);
    drop(scratch);
    result?;
    manifest.finished_utc = sockbench::machine::utc_now();
    manifest.save(out_dir)?;
    Ok(manifest)
}

/// The opening lines: the split, the run count and estimated time, the
/// descriptor limit, the notes.
fn announce(plan: &Comparison) {
    let split = &plan.split;
    let (closed, matched) = plan.runs_per_repetition();
    let estimate = plan.estimated_duration().as_secs();
    eprintln!(
        "compare: server on CPU {} ({} core(s)), loadgen on CPU {} ({} core(s)); {} runs: {} repetition(s) of \
         {closed} closed-loop and {matched} matched-load runs, each {} + {} warm-up; about {} min {} s \
         (estimated: the planned rounds; adaptive rounds come on top)",
        split.server,
        split.server.cpus().len(),
        split.loadgen,
        split.loadgen.cpus().len(),
        plan.total_runs(),
        plan.repetitions,
        fmt_ms(plan.timing.duration),
        fmt_ms(plan.timing.warmup),
        estimate / 60,
        estimate % 60,
    );
    if let Some(budget) = plan.budget {
        let left = budget.saturating_sub(plan.estimated_duration());
        if left.is_zero() {
            eprintln!(
                "compare: warning: the planned rounds alone are estimated past the --budget of {} min; \
                 they all run, and no adaptive round will",
                budget.as_secs() / 60
            );
        } else {
            eprintln!(
                "compare: budget {} min {} s for the whole run: adaptive rounds (if on) get what the planned \
                 rounds leave, about {} min",
                budget.as_secs() / 60,
                budget.as_secs() % 60,
                left.as_secs() / 60
            );
        }
    }
    let labels: Vec<&str> = plan.matrix.peers.iter().map(|p| p.label.as_str()).collect();
    eprintln!(
        "compare: peers {} (order rotated each repetition); ratios against {}",
        labels.join(", "),
        plan.reference
    );
    if let Some(w) = &split.warning {
        eprintln!("compare: warning: {w}");
    }
    let fds = sockbench::sys::raise_fd_limit().unwrap_or_else(|_| sockbench::sys::fd_limit());
    let need = plan.fds_needed();
    if fds < need {
        eprintln!(
            "compare: warning: the descriptor limit is {fds}, but a run needs about {need}; raise it (ulimit -n)"
        );
    }
    for note in plan.notes() {
        eprintln!("compare: note: {note}");
    }
}

fn measure_stalls(plan: &Comparison) -> Vec<CpuStalls> {
    let cpus = plan.split.all_cpus();
    eprintln!(
        "compare: measuring the machine's own pauses: a clock-reading busy loop on CPU {} for {}",
        cpus.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(","),
        fmt_ms(plan.stall_check)
    );
    let measured = stalls::measure(&cpus, plan.stall_check);
    for s in &measured {
        eprintln!(
            "compare: CPU {}: {} pauses of 100 µs or more ({} of 1 ms or more), the longest {:.0} µs, {:.3}% of the time",
            s.cpu,
            s.stalls,
            s.stalls_over_1ms,
            s.max_us,
            s.stalled_fraction * 100.0
        );
    }
    measured
}

fn new_manifest(plan: &Comparison, platform_stalls: Vec<CpuStalls>) -> Manifest {
    Manifest {
        schema: MANIFEST_SCHEMA.into(),
        started_utc: sockbench::machine::utc_now(),
        finished_utc: String::new(),
        // No exclusion for the output directory: its tracked files stay as
        // committed until the finished run replaces them (see `publish`).
        git_commit: sockbench::machine::git_commit(Path::new(env!("CARGO_MANIFEST_DIR"))),
        command: std::env::args().collect(),
        quick: plan.quick,
        server_cpus: plan.split.server.to_string(),
        loadgen_cpus: plan.split.loadgen.to_string(),
        duration_s: plan.timing.duration.as_secs_f64(),
        warmup_s: plan.timing.warmup.as_secs_f64(),
        method: Method {
            connect_rate: plan.timing.connect_rate,
            rss_interval_ms: proc_cpu::RSS_INTERVAL.as_millis() as u64,
            disturbed_cores: DISTURBED_CORES,
            repetitions: plan.repetitions,
            order: ORDER.into(),
            reference: plan.reference.clone(),
            peers: plan
                .matrix
                .peers
                .iter()
                .map(|p| PeerMethod {
                    label: p.label.clone(),
                    peer: p.peer.name().into(),
                    reference_impl: p.is_reference_impl(),
                    calibration_spin_ns: p.calibration_spin_ns,
                    server_args: p.server_args.clone(),
                })
                .collect(),
            matched_load_fractions: plan.matrix.fractions.clone(),
            warmup_s: plan.timing.warmup.as_secs_f64(),
            duration_s: plan.timing.duration.as_secs_f64(),
            cpu_floor_us_per_msg: None,
            syscalls_not_counted: None,
            adaptive: None,
        },
        open_loop_rate: None,
        open_loop_note: String::new(),
        matched_load: Vec::new(),
        notes: plan.notes(),
        machine: sockbench::machine::Machine::probe(),
        platform_stalls,
        runs: Vec::new(),
        files: Vec::new(),
    }
}

/// Counts runs for the progress lines.
struct Progress {
    done: usize,
    total: usize,
}

/// How the runs are ordered, as the manifest records it.
const ORDER: &str = "the closed-loop matrix repetition by repetition, then the matched-load sweep \
repetition by repetition; within a repetition point after point, the peers of a point one after \
another, their order rotated by one place each repetition; then any adaptive rounds, each a \
repetition of the points still undecided, matched-load points first";

/// Every repetition of the closed-loop matrix, then every repetition of the
/// matched-load sweep at the rates the closed-loop runs allow, then the
/// adaptive rounds. Repetition after repetition of the whole matrix, so
/// that a slow spell of the machine hits one repeat of many points rather
/// than every repeat of one; the peers of a point run back to back, so
/// that their runs of one repetition can be paired.
fn run_all(
    plan: &Comparison,
    ctx: &RunContext,
    manifest: &mut Manifest,
    extra: Option<&ExtraRounds>,
    started: Instant,
) -> anyhow::Result<()> {
    let mut progress = Progress {
        done: 0,
        total: plan.total_runs(),
    };
    let peers = plan.matrix.peers.len();
    for rep in 1..=plan.repetitions {
        run_points(ctx, plan.closed_loop(rep), peers, &mut progress, manifest)?;
    }
    let rates: Vec<MatchedRates> = plan
        .matrix
        .matched_points
        .iter()
        .map(|&shape| {
            matched_rates(
                shape,
                &closed_loop_rates(manifest, shape, &ctx.out_dir),
                &plan.matrix.fractions,
            )
        })
        .collect();
    for m in &rates {
        announce_rates(m);
    }
    let planned = plan.matrix.matched_points.len() * plan.matrix.fractions.len() * plan.matrix.peers.len();
    let runnable: usize = rates.iter().map(|m| m.rates.len()).sum::<usize>() * plan.matrix.peers.len();
    progress.total -= (planned - runnable) * plan.repetitions as usize;
    manifest.matched_load = rates.clone();
    (manifest.open_loop_rate, manifest.open_loop_note) = latency_view(&rates);
    for rep in 1..=plan.repetitions {
        run_points(ctx, plan.matched_load(rep, &rates), peers, &mut progress, manifest)?;
    }
    if let Some(extra) = extra {
        let points = planned_points(plan, &rates);
        let ended_by_budget = adaptive_rounds(plan, ctx, extra, &points, started, &mut progress, manifest)?;
        if let Some(a) = manifest.method.adaptive.as_mut() {
            a.ended_by_budget = ended_by_budget;
        }
    }
    Ok(())
}

/// A point of the plan as the adaptive rounds see it: its shape, purpose
/// and offered rate (matched load), and its tier ([`Comparison::adaptive_tier`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlannedPoint {
    pub shape: PointShape,
    pub purpose: Purpose,
    pub rate: Option<f64>,
    pub tier: u8,
}

/// Every closed-loop point, then every matched-load point that has a rate.
fn planned_points(plan: &Comparison, rates: &[MatchedRates]) -> Vec<PlannedPoint> {
    let mut points: Vec<PlannedPoint> = plan
        .matrix
        .points
        .iter()
        .map(|&shape| PlannedPoint {
            shape,
            purpose: Purpose::Peak,
            rate: None,
            tier: Comparison::adaptive_tier(shape, Purpose::Peak),
        })
        .collect();
    for m in rates {
        for r in &m.rates {
            let purpose = Purpose::MatchedLoad { fraction: r.fraction };
            points.push(PlannedPoint {
                shape: m.shape,
                purpose,
                rate: Some(r.msgs_per_s),
                tier: Comparison::adaptive_tier(m.shape, purpose),
            });
        }
    }
    points
}

/// One point's next round, with its estimated time.
type Candidate = (PlannedPoint, Vec<RunSpec>, Duration);

/// The adaptive rounds, after every planned round. Each round is one more
/// repetition (every peer, in the rotated order) at the points the rule
/// leaves open, taken tier by tier: only the lowest tier that has an open
/// point runs, so the rounds go first where they decide most per minute
/// (matched load, whose noise is lowest; see
/// [`Comparison::adaptive_tier`]). Before each round its time is estimated
/// point by point from the mean wall time of the same runs so far; the
/// points that would end past the budget (less [`REPORT_RESERVE`]) are left
/// out, and once one is, no further round runs. Returns whether the budget
/// ended the rounds with some point still open.
fn adaptive_rounds(
    plan: &Comparison,
    ctx: &RunContext,
    extra: &ExtraRounds,
    points: &[PlannedPoint],
    started: Instant,
    progress: &mut Progress,
    manifest: &mut Manifest,
) -> anyhow::Result<bool> {
    let peers = plan.matrix.peers.len();
    loop {
        let candidates: Vec<(PlannedPoint, Vec<RunSpec>)> = points
            .iter()
            .filter_map(|p| {
                let next = last_repetition(manifest, p) + 1;
                (next <= extra.method.max_repetitions).then(|| (*p, plan.point_round(p.shape, p.purpose, p.rate, next)))
            })
            .collect();
        let all: Vec<RunSpec> = candidates.iter().flat_map(|(_, specs)| specs.clone()).collect();
        let needed = (extra.next_round)(manifest, &ctx.out_dir, all);
        let open: Vec<Candidate> = candidates
            .into_iter()
            .filter(|(_, specs)| specs.iter().any(|s| needed.contains(s)))
            .map(|(p, specs)| {
                let est = specs.iter().map(|s| estimated_wall(plan, manifest, s)).sum();
                (p, specs, est)
            })
            .collect();
        let left = plan
            .budget
            .map(|b| b.saturating_sub(started.elapsed()).saturating_sub(REPORT_RESERVE));
        let Some(tier) = open.iter().map(|(p, _, _)| p.tier).min() else {
            return Ok(false);
        };
        let still_open = open.len();
        let (round, cut) = next_round(open, tier, left);
        if round.is_empty() {
            eprintln!(
                "compare: adaptive rounds end: the next round would not end within the --budget; \
                 {still_open} point(s) still undecided (time budget)"
            );
            return Ok(true);
        }
        let specs: Vec<RunSpec> = round.iter().flat_map(|(_, specs, _)| specs.clone()).collect();
        let est: Duration = round.iter().map(|(_, _, d)| *d).sum();
        eprintln!(
            "compare: adaptive round: {} runs at {} undecided point(s) of tier {tier} (up to repetition {}), \
             about {} s",
            specs.len(),
            round.len(),
            specs.iter().map(|s| s.repetition).max().unwrap_or(0),
            est.as_secs()
        );
        progress.total += specs.len();
        run_points(ctx, specs, peers, progress, manifest)?;
        if cut > 0 {
            eprintln!(
                "compare: adaptive rounds end: {cut} point(s) left out of the last round by the --budget; \
                 the points still open are undecided (time budget)"
            );
            return Ok(true);
        }
    }
}

/// The next adaptive round from the `open` points: those of `tier`, in
/// order, while their estimated time fits in `left` (all of them when
/// there is no budget); and how many of the tier's were left out.
pub fn next_round(open: Vec<Candidate>, tier: u8, left: Option<Duration>) -> (Vec<Candidate>, usize) {
    let mut left = left.unwrap_or(Duration::MAX);
    let mut round = Vec::new();
    let mut cut = 0;
    for c in open.into_iter().filter(|(p, _, _)| p.tier == tier) {
        if c.2 <= left {
            left -= c.2;
            round.push(c);
        } else {
            cut += 1;
        }
    }
    (round, cut)
}

/// The highest repetition the manifest has at point `p` (any label).
fn last_repetition(manifest: &Manifest, p: &PlannedPoint) -> u32 {
    manifest
        .runs
        .iter()
        .filter(|r| r.spec.purpose == p.purpose && r.spec.shape() == p.shape)
        .map(|r| r.spec.repetition)
        .max()
        .unwrap_or(0)
}

/// The expected wall time of `spec`: the mean `wall_s` of the runs of the
/// same label at the same point so far, else the plan's estimate.
fn estimated_wall(plan: &Comparison, manifest: &Manifest, spec: &RunSpec) -> Duration {
    let point = spec.point();
    let seen: Vec<f64> = manifest
        .runs
        .iter()
        .filter(|r| r.spec.point() == point && r.wall_s > 0.0)
        .map(|r| r.wall_s)
        .collect();
    if seen.is_empty() {
        return plan.estimated_run(spec.shape());
    }
    Duration::from_secs_f64(seen.iter().sum::<f64>() / seen.len() as f64)
}

/// Runs `specs`, `per_point` at a time (the peers of one point, back to
/// back), and after each point judges its runs: one found invalid is
/// redone once, right away, and its redo judged against the same peers.
fn run_points(
    ctx: &RunContext,
    specs: Vec<RunSpec>,
    per_point: usize,
    progress: &mut Progress,
    manifest: &mut Manifest,
) -> anyhow::Result<()> {
    for point in specs.chunks(per_point.max(1)) {
        let first = manifest.runs.len();
        for spec in point {
            run_and_record(ctx, spec.clone(), false, progress, manifest)?;
        }
        let invalid = judge(ctx, manifest, first, None);
        for i in invalid {
            progress.total += 1;
            run_and_record(ctx, manifest.runs[i].spec.clone(), true, progress, manifest)?;
            let redo = manifest.runs.len() - 1;
            judge(ctx, manifest, first, Some(redo));
            manifest.save(&ctx.out_dir)?;
        }
    }
    Ok(())
}

/// Marks the invalid runs of the point whose runs start at `first` (only
/// the run `only`, when given) and returns their indices. Each run is
/// judged against the point's other runs that are not themselves invalid.
fn judge(ctx: &RunContext, manifest: &mut Manifest, first: usize, only: Option<usize>) -> Vec<usize> {
    let seen: Vec<Option<validity::Observed>> = manifest.runs[first..]
        .iter()
        .map(|r| validity::Observed::of(r, &ctx.out_dir))
        .collect();
    let mut invalid = Vec::new();
    for (k, run) in seen.iter().enumerate() {
        let i = first + k;
        let Some(run) = run.as_ref().filter(|_| only.is_none() || only == Some(i)) else {
            continue;
        };
        let others: Vec<&validity::Observed> = seen
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != k && manifest.runs[first + j].invalid.is_none())
            .filter_map(|(_, o)| o.as_ref())
            .collect();
        if let Some(why) = validity::why_invalid(run, &others, ctx.cpu_floor_us_per_msg) {
            eprintln!("  INVALID {}: {why}", manifest.runs[i].result_file);
            manifest.runs[i].invalid = Some(why);
            invalid.push(i);
        }
    }
    invalid
}

fn announce_rates(m: &MatchedRates) {
    let s = &m.shape;
    let (unit, msgs) = match s.conn_msgs {
        Some(n) => ("conversations", format!(", {n} msgs/conn")),
        None => ("msgs", String::new()),
    };
    match &m.lowest {
        Some(p) => eprintln!(
            "compare: matched load over {}, {} conns, {} B{msgs}: {} {unit}/s offered to every peer ({:?} of {}'s median peak {:.0} {unit}/s, the lowest)",
            s.transport,
            s.conns,
            s.size_bytes,
            m.rates.iter().map(|r| format!("{:.0}", r.msgs_per_s)).collect::<Vec<_>>().join(", "),
            m.rates.iter().map(|r| r.fraction).collect::<Vec<_>>(),
            p.label,
            p.msgs_per_s
        ),
        None => eprintln!(
            "compare: matched load over {}, {} conns, {} B: not run, no successful closed-loop run there",
            s.transport, s.conns, s.size_bytes
        ),
    }
}

/// The offered rate of the latency view: the 50% rate (else the middle
/// one) at the first matched point, with how it was chosen.
fn latency_view(rates: &[MatchedRates]) -> (Option<f64>, String) {
    let Some(m) = rates.iter().find(|m| !m.rates.is_empty()) else {
        return (
            None,
            "no successful closed-loop run to derive an offered rate from".into(),
        );
    };
    let r = m
        .rates
        .iter()
        .find(|r| r.fraction == 0.5)
        .unwrap_or(&m.rates[m.rates.len() / 2]);
    let lowest = m.lowest.as_ref().expect("rates come from a lowest peak");
    let note = format!(
        "{:.0} msgs/s for every peer: {:.0}% of the lowest closed-loop peak at {}, {} connections, {} B \
         ({}, median of {} runs: {:.0} msgs/s)",
        r.msgs_per_s,
        r.fraction * 100.0,
        m.shape.transport,
        m.shape.conns,
        m.shape.size_bytes,
        lowest.label,
        lowest.runs,
        lowest.msgs_per_s
    );
    (Some(r.msgs_per_s), note)
}

/// Each successful closed-loop run's (label, msgs/s) at `shape`, read from
/// loadgen's result files.
fn closed_loop_rates(manifest: &Manifest, shape: crate::plan::PointShape, out_dir: &Path) -> Vec<(String, f64)> {
    manifest
        .runs
        .iter()
        .filter(|r| r.counts() && r.spec.purpose == Purpose::Peak && r.spec.shape() == shape)
        .filter_map(|r| {
            let path = r.result_file.in_dir(out_dir);
            let per_s = match shape.conn_msgs {
                // A conversation point's rates count conversations (loadgen's --rate with --conn-msgs).
                Some(_) => loadgen::result::read(&path).ok()?.conversations?.per_s,
                None => loadgen::result::read(&path).ok()?.throughput.msgs_per_s,
            };
            Some((r.spec.label.clone(), per_s))
        })
        .collect()
}

/// One run (with `redo`, the second try of an invalid one) with its
/// progress lines; the manifest is saved after it.
fn run_and_record(
    ctx: &RunContext,
    spec: RunSpec,
    redo: bool,
    progress: &mut Progress,
    manifest: &mut Manifest,
) -> anyhow::Result<()> {
    progress.done += 1;
    let (n, total) = (progress.done, progress.total);
    let scaled = spec
        .note
        .as_ref()
        .map(|_| format!(" (scaled down from {})", spec.requested_conns))
        .unwrap_or_default();
    let unit = if spec.conn_msgs.is_some() {
        "conversations"
    } else {
        "msgs"
    };
    let rate = spec
        .rate
        .map(|r| format!(" open loop {r} {unit}/s"))
        .unwrap_or_default();
    let again = if redo { " (redo of an invalid run)" } else { "" };
    let msgs = spec.conn_msgs.map(|m| format!(" msgs/conn={m}")).unwrap_or_default();
    eprintln!(
        "[{n}/{total}, {} left] {} {} conns={}{scaled} size={}{msgs}{rate}{again} ...",
        total.saturating_sub(n),
        spec.label,
        spec.transport,
        spec.conns,
        spec.size_bytes
    );
    let out = run_one(ctx, spec, redo);
    check_stop()?;
    match &out.record.outcome {
        Outcome::Ok => eprintln!(
            "[{n}/{total}]   ok in {:.1}s: {}",
            out.record.wall_s,
            out.headline.as_deref().unwrap_or("")
        ),
        Outcome::Failed(why) => eprintln!("[{n}/{total}]   FAILED: {why}"),
    }
    manifest.runs.push(out.record);
    manifest.save(&ctx.out_dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sockbench::net::Transport;

    fn point(conns: u64, tier: u8) -> PlannedPoint {
        PlannedPoint {
            shape: PointShape {
                transport: Transport::Tcp,
                conns,
                size_bytes: 128,
                conn_msgs: None,
            },
            purpose: Purpose::Peak,
            rate: None,
            tier,
        }
    }

    /// A round takes only the lowest open tier, in order, while it fits the
    /// time left; without a budget, all of that tier.
    #[test]
    fn a_round_is_the_lowest_tier_cut_to_the_budget() {
        let secs = Duration::from_secs;
        let open: Vec<Candidate> = vec![
            (point(1, 3), Vec::new(), secs(10)),
            (point(2, 0), Vec::new(), secs(10)),
            (point(3, 0), Vec::new(), secs(30)),
            (point(4, 0), Vec::new(), secs(10)),
        ];
        let conns = |r: &[Candidate]| r.iter().map(|(p, _, _)| p.shape.conns).collect::<Vec<_>>();
        let (round, cut) = next_round(open.clone(), 0, None);
        assert_eq!((conns(&round), cut), (vec![2, 3, 4], 0));
        // 25 s left: the 30 s point does not fit, the next 10 s one does.
        let (round, cut) = next_round(open.clone(), 0, Some(secs(25)));
        assert_eq!((conns(&round), cut), (vec![2, 4], 1));
        let (round, cut) = next_round(open.clone(), 0, Some(secs(5)));
        assert_eq!((round.len(), cut), (0, 3));
        let (round, _) = next_round(open, 3, Some(secs(60)));
        assert_eq!(conns(&round), [1]);
    }
}
