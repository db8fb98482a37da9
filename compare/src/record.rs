//! Stage 2, the records on disk: what `execute` writes and `analyse` and
//! `render` read. The manifest (`compare.json`) holds one typed
//! [`RunRecord`] per run beside the settings of the whole comparison;
//! loadgen's own result file is referred to by name, never copied or edited.
//!
//! Manifests written before this layout (no `schema` key; the server's cost
//! was written into each loadgen file's `extra`) are converted on loading,
//! see [`Manifest::load`].

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sockbench::machine::Machine;

use crate::plan::{MatchedRates, RunSpec};

/// The file in the output directory that lists every run of a comparison.
pub const MANIFEST: &str = "compare.json";

/// The value of the manifest's `schema` key.
pub const MANIFEST_SCHEMA: &str = "sockbench.compare.v2";

/// The folder of the output directory that holds each run's loadgen files
/// (`.json` and `.hgrm`); the report (README, plots, `findings.json`) and
/// the manifest stay at the top. Comparisons written before this layout
/// hold the run files at the top, and are read as they are.
pub const RUNS_DIR: &str = "runs";

/// A file name directly inside the output directory: no directory part, no
/// `..`, not absolute, not hidden. Every path `compare` reads, writes or
/// removes from a manifest goes through this type, so a hand-edited or
/// hostile manifest cannot make it touch anything outside `--out-dir`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RunFileName(String);

impl RunFileName {
    /// `<name>.json` for a run.
    pub fn for_run(spec: &RunSpec) -> RunFileName {
        RunFileName::try_from(format!("{}.json", spec.name())).expect("run names are plain file names")
    }

    /// `<name>-redo.json`: the second try of a run found invalid, beside the first.
    pub fn for_redo(spec: &RunSpec) -> RunFileName {
        RunFileName::try_from(format!("{}-redo.json", spec.name())).expect("run names are plain file names")
    }

    /// Where the file is in the output directory `dir`: under [`RUNS_DIR`],
    /// or at the top in a comparison of the older, flat layout (the one
    /// that holds it there and not under `runs/`).
    pub fn in_dir(&self, dir: &Path) -> PathBuf {
        let flat = dir.join(&self.0);
        let nested = self.written_in(dir);
        if !nested.exists() && flat.exists() {
            flat
        } else {
            nested
        }
    }

    /// Where a new comparison writes it: `dir/runs/NAME`.
    pub fn written_in(&self, dir: &Path) -> PathBuf {
        dir.join(RUNS_DIR).join(&self.0)
    }

    /// The file's path relative to the output directory in the new layout: `runs/NAME`.
    pub fn relative(&self) -> String {
        format!("{RUNS_DIR}/{}", self.0)
    }

    /// loadgen's `.hgrm` beside the JSON: `run.json` → `run.hgrm`.
    pub fn hgrm(&self) -> RunFileName {
        let stem = self.0.strip_suffix(".json").unwrap_or(&self.0);
        RunFileName(format!("{stem}.hgrm"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RunFileName {
    type Error = String;
    fn try_from(name: String) -> Result<RunFileName, String> {
        let plain = !name.is_empty()
            && !name.starts_with('.')
            && !name.contains('/')
            && !name.contains('\0')
            && name.len() <= 200;
        if plain {
            Ok(RunFileName(name))
        } else {
            Err(format!(
                "{name:?} is not a plain file name inside the output directory (no `/`, no leading `.`)"
            ))
        }
    }
}

impl From<RunFileName> for String {
    fn from(n: RunFileName) -> String {
        n.0
    }
}

impl std::fmt::Display for RunFileName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A file `compare` wrote into the output directory, as its manifest lists
/// it: a later run may replace or remove a file only while it is still this
/// one (a regular file, not a link, of this size and content hash), so a
/// file the user put there or edited since is never lost.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WrittenFile {
    /// Relative to the output directory: `README.md`, `runs/NAME.json`.
    pub path: String,
    pub size_bytes: u64,
    /// FNV-1a (64 bit) of the content, in hex: not a defence against a
    /// forger, only a check that the file is still the one compare wrote,
    /// and unlike a modification time it survives a `git clone`.
    pub fnv1a64: String,
}

impl WrittenFile {
    /// The file at `dir/path` as it is now; an error for a link or anything
    /// but a regular file.
    pub fn of(dir: &Path, path: &str) -> anyhow::Result<WrittenFile> {
        let full = dir.join(path);
        let meta = full
            .symlink_metadata()
            .with_context(|| format!("reading {}", full.display()))?;
        if !meta.file_type().is_file() {
            bail!("{} is not a regular file", full.display());
        }
        let data = std::fs::read(&full).with_context(|| format!("reading {}", full.display()))?;
        Ok(WrittenFile {
            path: path.to_string(),
            size_bytes: data.len() as u64,
            fnv1a64: format!("{:016x}", fnv1a64(&data)),
        })
    }

    /// Whether `dir/path` is still this file.
    pub fn is_intact(&self, dir: &Path) -> bool {
        let full = dir.join(&self.path);
        let same_size = full
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_file() && m.len() == self.size_bytes);
        same_size && WrittenFile::of(dir, &self.path).is_ok_and(|now| now == *self)
    }
}

/// The 64-bit FNV-1a hash.
fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
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

/// The server's cost over a run's measured window, as `execute` measured it
/// from `/proc`. Per-message figures are derived from these and loadgen's
/// message rate (see `analyse`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ServerCost {
    /// CPU time (user + system) of the server's whole process tree in the
    /// window, µs; `None` when the window never began.
    pub cpu_us: Option<u64>,
    /// Length of the window, seconds.
    pub window_s: f64,
    /// The larger of the tree's summed `VmRSS` samples and the root's `VmHWM`, KiB.
    pub peak_rss_kib: u64,
    /// Most processes seen in the tree at once.
    pub peak_procs: u64,
    /// Context switches of the server tree in the window, from each task's
    /// `/proc/PID/task/TID/status`: those that gave up the CPU (waiting
    /// for I/O) and those preempted. Tasks that exited inside the window
    /// are missing (fork's children in conversation runs: see
    /// `ctxt_tasks_gone` and `execute::proc_cpu::CtxtSwitches`). `None`
    /// in older manifests and when the window never began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voluntary_ctxt_switches: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub involuntary_ctxt_switches: Option<u64>,
    /// Tasks alive at the window's start and gone by its end, whose
    /// switches are therefore not counted: above 0 the counts are a lower bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctxt_tasks_gone: Option<u64>,
    /// System calls the server tree entered in the window (`perf stat -e
    /// raw_syscalls:sys_enter`); `None` where perf cannot count it (the
    /// reason is [`Method::syscalls_not_counted`]).
    #[serde(default)]
    pub syscalls: Option<u64>,
}

impl ServerCost {
    /// Server CPU µs per message at loadgen's measured rate: CPU time over
    /// the messages echoed in the window (`msgs_per_s × window_s`). `None`
    /// when no CPU was seen or the window held less than one message.
    pub fn cpu_us_per_msg(&self, msgs_per_s: f64) -> Option<f64> {
        let cpu_us = self.cpu_us.filter(|&us| us > 0)?;
        let window_msgs = msgs_per_s * self.window_s;
        (self.window_s > 0.0 && window_msgs >= 1.0).then(|| cpu_us as f64 / window_msgs)
    }

    /// Voluntary and involuntary context switches per unit of work, e.g. per
    /// message at `msgs_per_s` (or per connection at conversations/s), over
    /// the same window as [`Self::cpu_us_per_msg`].
    pub fn switches_per(&self, per_s: f64) -> Option<(f64, f64)> {
        let units = per_s * self.window_s;
        (units >= 1.0).then(|| {
            Some((
                self.voluntary_ctxt_switches? as f64 / units,
                self.involuntary_ctxt_switches? as f64 / units,
            ))
        })?
    }

    /// Cores' worth of CPU the server tree used in the window.
    pub fn cores_busy(&self) -> Option<f64> {
        let cpu_us = self.cpu_us.filter(|&us| us > 0)?;
        (self.window_s > 0.0).then(|| cpu_us as f64 / 1e6 / self.window_s)
    }
}

/// loadgen's own CPU over its own measured phase, from its result file
/// (`extra.loadgen_cpu_us`, and the phase's length as `messages /
/// msgs_per_s`). Copied here by `execute` so that each side's CPU sits
/// beside its own window: the server's window ([`ServerCost::window_s`]) is
/// a little shorter than loadgen's phase, and dividing one side's CPU by the
/// other's window gave loadgen 1.03–1.05 busy.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LoadgenCost {
    /// CPU time (user + system) of loadgen over its measured phase, µs.
    pub cpu_us: u64,
    /// Length of loadgen's measured phase, seconds.
    pub window_s: f64,
}

/// CPU that processes outside this runner's tree used in a run's window.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct OtherProcesses {
    pub cpu_us: u64,
    /// `cpu_us` over the window's length: cores' worth.
    pub cores: f64,
}

/// Time `/proc/stat` counted on a group of CPUs in a run's window that was
/// nobody's work there, µs (see `execute::cpu_stat`). Counted in ticks of
/// [`CpuStatWindow::tick_us`], so each figure is a multiple of it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct KernelTimes {
    /// A virtual machine's vCPU ready but not run by the host.
    pub steal_us: u64,
    pub iowait_us: u64,
    /// Hard and soft interrupts.
    pub irq_us: u64,
    pub softirq_us: u64,
}

/// [`KernelTimes`] over a run's window (the same window as `server_cost`),
/// summed over every CPU, over the server's CPUs and over loadgen's.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CpuStatWindow {
    pub machine: KernelTimes,
    pub server_cpus: KernelTimes,
    pub loadgen_cpus: KernelTimes,
    /// One tick of `/proc/stat`, µs (1e6 / USER_HZ: 10,000 at 100 Hz).
    pub tick_us: u64,
}

/// One run of the comparison, as recorded in [`MANIFEST`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    pub spec: RunSpec,
    /// loadgen's result file (its `.hgrm` beside it), in the output directory's `runs/` (at its top in the older layout).
    pub result_file: RunFileName,
    /// The exact argv of the server and of loadgen (loadgen runs in the output directory's `runs/`).
    pub server_argv: Vec<String>,
    pub loadgen_argv: Vec<String>,
    pub outcome: Outcome,
    /// loadgen's exit code (non-zero e.g. when an echo was corrupted).
    pub loadgen_exit: Option<i32>,
    /// The server's `summary` line, if it printed one.
    pub server_summary: Option<String>,
    /// Wall time of the whole run, server start to stop.
    pub wall_s: f64,
    /// What the server's tree cost in the measured window.
    #[serde(default)]
    pub server_cost: Option<ServerCost>,
    /// Other processes' CPU in the same window.
    #[serde(default)]
    pub other_processes: Option<OtherProcesses>,
    /// Steal, iowait and interrupt time the CPUs counted in the same window;
    /// `None` when the window never began, and in older manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_stat: Option<CpuStatWindow>,
    /// CPUs the server was confined to; with `server_cost` its busy
    /// fraction is `cpu_us / 1e6 / (server_cores × window_s)`. 0 in older
    /// manifests until [`Manifest::load`] fills it from `server_cpus`.
    #[serde(default)]
    pub server_cores: u64,
    /// CPUs loadgen was confined to (see `server_cores`).
    #[serde(default)]
    pub loadgen_cores: u64,
    /// loadgen's CPU over its own measured phase; with `loadgen_cores` its
    /// busy fraction. `None` when loadgen did not report it.
    #[serde(default)]
    pub loadgen_cost: Option<LoadgenCost>,
    /// Why the run's figures are impossible (see `execute::validity`), when
    /// they are: such a run is redone once and left out of every statistic,
    /// and the report lists it. `None` for a valid run and in older manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
    /// This run repeats one found invalid (its file is `<name>-redo.json`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redo: bool,
}

impl RunRecord {
    /// Whether the run's figures enter the statistics: it finished and was not found invalid.
    pub fn counts(&self) -> bool {
        self.outcome == Outcome::Ok && self.invalid.is_none()
    }

    /// A run that never started or failed before it learned anything.
    pub fn failed(spec: RunSpec, why: impl Into<String>) -> RunRecord {
        RunRecord {
            result_file: RunFileName::for_run(&spec),
            spec,
            server_argv: Vec::new(),
            loadgen_argv: Vec::new(),
            outcome: Outcome::Failed(why.into()),
            loadgen_exit: None,
            server_summary: None,
            wall_s: 0.0,
            server_cost: None,
            other_processes: None,
            cpu_stat: None,
            server_cores: 0,
            loadgen_cores: 0,
            loadgen_cost: None,
            invalid: None,
            redo: false,
        }
    }
}

/// What one CPU's clock-reading spinner saw before the runs (see `execute::stalls`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuStalls {
    pub cpu: usize,
    /// How long the thread spun.
    pub seconds: f64,
    /// Gaps of at least 100 µs.
    pub stalls: u64,
    /// Of those, gaps of at least 1 ms.
    pub stalls_over_1ms: u64,
    /// The longest gap.
    pub max_us: f64,
    /// The share of the time spent inside stalls.
    pub stalled_fraction: f64,
}

impl CpuStalls {
    /// Stalls of at least 1 ms per second.
    pub fn over_1ms_per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.stalls_over_1ms as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Settings of the whole comparison that the report quotes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Method {
    /// loadgen's `--connect-rate`.
    pub connect_rate: u64,
    /// How often the server tree's memory was sampled, ms.
    pub rss_interval_ms: u64,
    /// Above this many cores of other processes a run is called disturbed.
    pub disturbed_cores: f64,
    /// Runs of every point (1 in manifests before repetitions were recorded).
    #[serde(default = "one")]
    pub repetitions: u32,
    /// How the runs were ordered, in words the report can quote.
    #[serde(default)]
    pub order: String,
    /// The label every ratio is taken against.
    #[serde(default)]
    pub reference: String,
    /// The peers in the order entered, with what each one is.
    #[serde(default)]
    pub peers: Vec<PeerMethod>,
    /// The matched-load offered rates as fractions of the lowest closed-loop peak.
    #[serde(default)]
    pub matched_load_fractions: Vec<f64>,
    /// loadgen's `--warmup` and `--duration` of every run, seconds.
    #[serde(default)]
    pub warmup_s: f64,
    #[serde(default)]
    pub duration_s: f64,
    /// The least server CPU a message can cost: one trivial system call,
    /// measured on this machine before the runs (see `execute::validity`).
    /// A run below it is invalid. `None` in older manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_floor_us_per_msg: Option<f64>,
    /// Why no run's `server_cost.syscalls` was counted (perf missing, or the
    /// `raw_syscalls:sys_enter` tracepoint not countable here); probed once
    /// before the runs. `None` when perf counts it, and in older manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscalls_not_counted: Option<String>,
    /// The adaptive design's settings when `--decide-at` or
    /// `--max-repetitions` asked for it; `None` for a fixed design.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<AdaptiveMethod>,
}

/// Adaptive repetitions (see `analyse::adaptive`): after the first
/// `repetitions` rounds, a point runs again until every label's verdict at
/// the band is decided or it has run `max_repetitions` times.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct AdaptiveMethod {
    /// `--decide-at`, in permille of 1 (100 = 10%).
    pub decide_at_permille: u16,
    /// `--max-repetitions`: the per-point cap.
    pub max_repetitions: u32,
    /// `--budget`, seconds: the wall-clock budget of the whole comparison
    /// that adaptive rounds had to end within; `None` without one (and in
    /// older manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_s: Option<f64>,
    /// Whether the budget ended the adaptive rounds while some point was
    /// still open (those points are reported "time budget").
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ended_by_budget: bool,
    /// `--adaptive-points matched-load`: only matched-load points got
    /// adaptive rounds; the others kept their first rounds (false in older
    /// manifests: every point could).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub matched_load_only: bool,
}

fn one() -> u32 {
    1
}

/// One peer of the comparison as the report describes it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PeerMethod {
    /// The identity runs are grouped by (`RunSpec::label`).
    pub label: String,
    /// `fork`, `threadpool`, `epoll`, `uring` or `tokio`.
    pub peer: String,
    /// A reference implementation (tokio-echo), shown beside the backends.
    pub reference_impl: bool,
    /// `server --calibration-spin-ns`: a calibration variant, not a design.
    pub calibration_spin_ns: Option<u64>,
    /// Extra server flags of an A/B variant (`--uring-wait one`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_args: Vec<String>,
}

/// The settings of manifests written before [`Method`] was recorded: the
/// constants of that code.
impl Default for Method {
    fn default() -> Method {
        Method {
            connect_rate: 20_000,
            rss_interval_ms: 500,
            disturbed_cores: 0.05,
            repetitions: 1,
            order: String::new(),
            reference: String::new(),
            peers: Vec::new(),
            matched_load_fractions: Vec::new(),
            warmup_s: 0.0,
            duration_s: 0.0,
            cpu_floor_us_per_msg: None,
            syscalls_not_counted: None,
            adaptive: None,
        }
    }
}

/// Everything the report needs about one comparison.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// [`MANIFEST_SCHEMA`]; empty in manifests of the older layout.
    #[serde(default)]
    pub schema: String,
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
    #[serde(default)]
    pub method: Method,
    /// The offered rate of the latency view (the matched-load run at 50% at
    /// tcp, 100 connections, or the nearest the matrix has) and how it was chosen.
    pub open_loop_rate: Option<f64>,
    pub open_loop_note: String,
    /// The matched-load sweep: per point each peer's peak, the lowest, and
    /// the offered rates derived from it.
    #[serde(default)]
    pub matched_load: Vec<MatchedRates>,
    /// Scale-downs and other notes about the matrix.
    pub notes: Vec<String>,
    pub machine: Machine,
    /// Each CPU's pauses with nothing running, measured before the first run.
    #[serde(default)]
    pub platform_stalls: Vec<CpuStalls>,
    pub runs: Vec<RunRecord>,
    /// Every file this comparison wrote into the output directory but the
    /// manifest itself: the only files a later run may replace or remove
    /// (see `publish`). Empty in manifests written before this list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<WrittenFile>,
}

impl Manifest {
    /// Reads `dir/compare.json`. A manifest of the older layout gets each
    /// run's server cost and other processes' CPU from the keys the old
    /// runner wrote into loadgen's file (`extra.server_*`,
    /// `extra.other_processes_*`), in memory; the files are not changed.
    pub fn load(dir: &Path) -> anyhow::Result<Manifest> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut manifest: Manifest =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        match manifest.schema.as_str() {
            MANIFEST_SCHEMA => {}
            "" => legacy::convert(&mut manifest, dir),
            other => bail!("{}: schema {other:?}, expected {MANIFEST_SCHEMA:?}", path.display()),
        }
        // Manifests before the per-run core counts: every run had the comparison's split.
        let cores = |list: &str| {
            list.parse::<sockbench::cpu::CpuList>()
                .map_or(0, |l| l.cpus().len() as u64)
        };
        let (server_cores, loadgen_cores) = (cores(&manifest.server_cpus), cores(&manifest.loadgen_cpus));
        for run in manifest.runs.iter_mut().filter(|r| r.server_cores == 0) {
            run.server_cores = server_cores;
            run.loadgen_cores = loadgen_cores;
        }
        Ok(manifest)
    }

    /// Writes `dir/compare.json`.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(MANIFEST);
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }
}

/// The one-time conversion of the layout before `compare.v2`.
mod legacy {
    use super::*;
    use serde_json::Value;

    pub fn convert(manifest: &mut Manifest, dir: &Path) {
        for run in manifest.runs.iter_mut().filter(|r| r.outcome == Outcome::Ok) {
            let Some(extra) = read_extra(&run.result_file.in_dir(dir)) else {
                continue;
            };
            run.server_cost = Some(server_cost(&extra));
            run.other_processes = other_processes(&extra);
        }
        manifest.schema = MANIFEST_SCHEMA.into();
    }

    fn read_extra(path: &Path) -> Option<serde_json::Map<String, Value>> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut value: Value = serde_json::from_str(&text).ok()?;
        match value.get_mut("extra")?.take() {
            Value::Object(map) => Some(map),
            _ => None,
        }
    }

    fn server_cost(extra: &serde_json::Map<String, Value>) -> ServerCost {
        let u64_of = |k: &str| extra.get(k).and_then(Value::as_u64);
        ServerCost {
            cpu_us: u64_of("server_cpu_us"),
            window_s: extra.get("server_cpu_window_s").and_then(Value::as_f64).unwrap_or(0.0),
            // Named `_kb`, but it held KiB.
            peak_rss_kib: u64_of("server_peak_rss_kb").unwrap_or(0),
            peak_procs: u64_of("server_peak_procs").unwrap_or(0),
            ..ServerCost::default()
        }
    }

    fn other_processes(extra: &serde_json::Map<String, Value>) -> Option<OtherProcesses> {
        Some(OtherProcesses {
            cpu_us: extra.get("other_processes_cpu_us")?.as_u64()?,
            cores: extra.get("other_processes_cores")?.as_f64()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_published_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn run_file_names_stay_inside_the_directory() {
        for bad in [
            "../victim.json",
            "/etc/passwd",
            "a/b.json",
            "..",
            ".",
            "",
            ".hidden.json",
        ] {
            assert!(RunFileName::try_from(bad.to_string()).is_err(), "{bad:?} accepted");
            let json = format!("{:?}", bad);
            assert!(serde_json::from_str::<RunFileName>(&json).is_err(), "{bad:?} parsed");
        }
        let ok = RunFileName::try_from("closed-epoll-tcp-c1-s128-r1.json".to_string()).unwrap();
        assert_eq!(ok.hgrm().as_str(), "closed-epoll-tcp-c1-s128-r1.hgrm");
        assert_eq!(
            ok.in_dir(Path::new("/nonexistent/results")),
            Path::new("/nonexistent/results/runs/closed-epoll-tcp-c1-s128-r1.json")
        );
    }
}
