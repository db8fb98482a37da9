//! `compare`: runs the whole backend comparison on this machine and leaves
//! the result files, the plots and a generated README in `results/`.
//!
//! - [`matrix`]: which runs to do, and where a backend is scaled down.
//! - [`runner`]: one run: start the server pinned, run loadgen pinned, stop the server.
//! - [`proc_cpu`]: the server tree's CPU time and peak memory during the measured phase.
//! - [`plots`]: SVG plots drawn with `plotters`.
//! - [`report`]: the generated `results/README.md`.
//! - [`stalls`]: the machine's own pauses, measured before the runs.

pub mod matrix;
pub mod plots;
pub mod proc_cpu;
pub mod report;
pub mod runner;
pub mod stalls;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use serde::{Deserialize, Serialize};
use sockbench::cpu::CpuList;
use sockbench::duration::parse_duration;
use sockbench::net::Transport;
use sockbench::server::BackendKind;

use crate::result::RunResult;

/// The file in the output directory that lists every run of the last comparison.
pub const MANIFEST: &str = "compare.json";

/// A run whose window saw other processes use more than this many cores is
/// called disturbed in the progress output and in the report. An idle machine
/// shows well under 0.01 (the census counts whole 10 ms clock ticks).
pub const DISTURBED_CORES: f64 = 0.05;

/// Runs every backend over the comparison matrix and writes results/: result files, SVG plots, README.md.
#[derive(Debug, Parser)]
#[command(name = "compare", version, long_about = None)]
pub struct CompareArgs {
    /// A small matrix that finishes in under 2 minutes (CI smoke, trying it out).
    #[arg(long)]
    pub quick: bool,
    /// Backends to run (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub backends: Option<Vec<BackendKind>>,
    /// Transports to run (comma-separated). Default: tcp, udp, unix (tcp, udp with --quick).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub transports: Option<Vec<Transport>>,
    /// Measured phase of each run (`10s`, `500ms`, `1m`). Default 5s, or 2s with --quick.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Warm-up of each run, not measured. Default 1s, or 500ms with --quick.
    #[arg(long, value_parser = parse_duration)]
    pub warmup: Option<Duration>,
    /// Times the whole matrix is run; each point's tables and plots show its
    /// median run. Default 3, or 1 with --quick.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: Option<u32>,
    /// CPUs for the server. Default: the first half of the CPUs (CPU 0 on 2 cores).
    #[arg(long)]
    pub server_cpus: Option<CpuList>,
    /// CPUs for loadgen. Default: the other half (CPU 1 on 2 cores).
    #[arg(long)]
    pub loadgen_cpus: Option<CpuList>,
    /// Where the result files, plots and README go.
    #[arg(long, default_value = "results")]
    pub out_dir: PathBuf,
    /// Directory holding the `server` and `loadgen` executables. Default: the
    /// directory of this executable (target/release with `cargo run --release`).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Do not run anything: redraw the plots and README from the last run's files in --out-dir.
    #[arg(long)]
    pub report_only: bool,
}


/// How one run ended.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// loadgen wrote its result file.
    Ok,
    /// The run failed; the message says at which step and why.
    Failed(String),
}

/// One run of the comparison, as recorded in [`MANIFEST`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    pub spec: matrix::RunSpec,
    /// The result file, relative to the output directory.
    pub result_file: String,
    /// The exact argv of the server and of loadgen.
    pub server_argv: Vec<String>,
    pub loadgen_argv: Vec<String>,
    pub outcome: Outcome,
    /// loadgen's exit code (non-zero e.g. when an echo was corrupted).
    pub loadgen_exit: Option<i32>,
    /// The server's `summary` line, if it printed one.
    pub server_summary: Option<String>,
    /// Wall time of the whole run, server start to stop.
    pub wall_s: f64,
    /// loadgen's measured throughput, when it wrote a result.
    pub msgs_per_s: Option<f64>,
    /// One line for the progress output: throughput, p99, server cost.
    pub headline: Option<String>,
}

/// Everything the report needs about one comparison.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub started_utc: String,
    pub finished_utc: String,
    pub git_commit: String,
    /// The argv `compare` was started with.
    pub command: Vec<String>,
    pub quick: bool,
    pub server_cpus: String,
    pub loadgen_cpus: String,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// The open-loop rate and how it was chosen.
    pub open_loop_rate: Option<f64>,
    pub open_loop_note: String,
    /// Scale-downs and other notes about the matrix.
    pub notes: Vec<String>,
    pub machine: report::Machine,
    /// Each CPU's pauses with nothing running, measured before the first run.
    #[serde(default)]
    pub platform_stalls: Vec<stalls::CpuStalls>,
    pub runs: Vec<RunRecord>,
}

impl Manifest {
    /// Reads `dir/compare.json`.
    pub fn load(dir: &Path) -> anyhow::Result<Manifest> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Writes `dir/compare.json`.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(MANIFEST);
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }

    /// The successful runs with their result files.
    pub fn load_results(&self, dir: &Path) -> Vec<(RunRecord, RunResult)> {
        self.runs
            .iter()
            .filter(|r| r.outcome == Outcome::Ok)
            .filter_map(|r| read_result(&dir.join(&r.result_file)).ok().map(|res| (r.clone(), res)))
            .collect()
    }
}

/// One run per point of the matrix, in matrix order. Where a point ran in
/// several rounds, the run whose cost is the median: server CPU per message
/// in closed loop (the steadiest figure; time per message where it is
/// missing), p99 latency in open loop. Every figure shown for a point then
/// comes from one real run, never from numbers mixed across runs.
pub fn median_runs(runs: &[(RunRecord, RunResult)]) -> Vec<(RunRecord, RunResult)> {
    let cost = |(rec, res): &&(RunRecord, RunResult)| {
        if rec.spec.is_open_loop() {
            res.latency_us.p99
        } else {
            plots::server_cpu_us_per_msg(res).unwrap_or(1e6 / res.throughput.msgs_per_s.max(1e-9))
        }
    };
    let mut points: Vec<(String, Vec<&(RunRecord, RunResult)>)> = Vec::new();
    for run in runs {
        let point = run.0.spec.point();
        match points.iter_mut().find(|(p, _)| *p == point) {
            Some((_, group)) => group.push(run),
            None => points.push((point, vec![run])),
        }
    }
    points
        .into_iter()
        .map(|(_, mut group)| {
            group.sort_by(|a, b| cost(a).total_cmp(&cost(b)));
            group[(group.len() - 1) / 2].clone()
        })
        .collect()
}

/// The lowest and highest server CPU per message over every round of `point`.
pub fn server_cpu_range(runs: &[(RunRecord, RunResult)], point: &str) -> Option<(f64, f64)> {
    runs.iter()
        .filter(|(rec, _)| rec.spec.point() == point)
        .filter_map(|(_, res)| plots::server_cpu_us_per_msg(res))
        .fold(None, |acc, v| {
            Some(acc.map_or((v, v), |(lo, hi): (f64, f64)| (lo.min(v), hi.max(v))))
        })
}

/// Reads one `sockbench.result.v1` file.
pub fn read_result(path: &Path) -> anyhow::Result<RunResult> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let result: RunResult = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if result.schema != crate::result::SCHEMA {
        bail!(
            "{}: schema {:?}, expected {:?}",
            path.display(),
            result.schema,
            crate::result::SCHEMA
        );
    }
    Ok(result)
}

/// Writes one result file (pretty JSON).
pub fn write_result(path: &Path, result: &RunResult) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(result)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// The whole comparison: plan, run, plot, report.
pub fn run(args: CompareArgs) -> anyhow::Result<()> {
    if args.report_only {
        let manifest = Manifest::load(&args.out_dir)?;
        let plots = plots::draw_all(&manifest, &args.out_dir)?;
        report::write_readme(&manifest, &plots, &args.out_dir)?;
        eprintln!(
            "compare: redrew {} plots and {}",
            plots.len(),
            args.out_dir.join("README.md").display()
        );
        return Ok(());
    }
    let manifest = runner::run_comparison(&args)?;
    let plots = plots::draw_all(&manifest, &args.out_dir)?;
    report::write_readme(&manifest, &plots, &args.out_dir)?;
    let failed: Vec<_> = manifest.runs.iter().filter(|r| r.outcome != Outcome::Ok).collect();
    eprintln!(
        "compare: {} runs, {} failed; results, {} plots and README.md in {}",
        manifest.runs.len(),
        failed.len(),
        plots.len(),
        args.out_dir.display()
    );
    for r in &failed {
        if let Outcome::Failed(why) = &r.outcome {
            eprintln!("  FAILED {}: {why}", r.spec.name());
        }
    }
    if !failed.is_empty() && failed.len() == manifest.runs.len() {
        bail!("every run failed");
    }
    Ok(())
}
