//! Stage 4, analyse: pure functions over the records and loadgen's results
//! (joined as [`Run`]s): which run stands for each point, the spread of the
//! repetitions, derived figures. Reads files, writes nothing.

pub mod adaptive;
pub mod points;
pub mod signed_rank;
#[cfg(test)]
mod sim;
pub mod stats;

use std::path::Path;

use loadgen::result::RunResult;

use crate::plan::Peer;
use crate::record::{Manifest, Outcome, RunRecord};
pub use points::{
    ConvFacts, ConvStats, PeerStats, PointKey, PointStats, Purpose, RowLimit, RunFacts, Summary, SwitchFacts,
    SwitchStats,
};

/// One successful run: what `execute` recorded and what loadgen wrote.
#[derive(Clone, Debug)]
pub struct Run {
    pub record: RunRecord,
    pub result: RunResult,
}

impl Run {
    /// Server CPU µs per message (see [`crate::record::ServerCost::cpu_us_per_msg`]).
    pub fn server_cpu_us_per_msg(&self) -> Option<f64> {
        self.record
            .server_cost
            .as_ref()?
            .cpu_us_per_msg(self.result.throughput.msgs_per_s)
    }

    /// Cores' worth of CPU the server tree used in the window.
    pub fn server_cores_busy(&self) -> Option<f64> {
        self.record.server_cost.as_ref()?.cores_busy()
    }

    /// The server tree's peak RSS, KiB.
    pub fn server_peak_rss_kib(&self) -> Option<u64> {
        Some(self.record.server_cost.as_ref()?.peak_rss_kib)
    }

    /// Other processes' CPU in the window, in cores.
    pub fn other_processes_cores(&self) -> Option<f64> {
        Some(self.record.other_processes.as_ref()?.cores)
    }

    /// The figure that picks a point's median run: server CPU per message
    /// in closed loop (the steadiest figure; time per message where it is
    /// missing), p99 latency in open loop.
    fn median_key(&self) -> f64 {
        if self.record.spec.is_open_loop() {
            self.result.latency_us.p99
        } else {
            self.server_cpu_us_per_msg()
                .unwrap_or(1e6 / self.result.throughput.msgs_per_s.max(1e-9))
        }
    }
}

/// The successful, valid runs of `manifest` with their result files from
/// `dir` (runs whose file is missing or unreadable are left out, and so are
/// runs found invalid: see [`invalid_runs`]).
pub fn load_runs(manifest: &Manifest, dir: &Path) -> Vec<Run> {
    manifest
        .runs
        .iter()
        .filter(|r| r.counts())
        .filter_map(|r| {
            let path = r.result_file.in_dir(dir);
            let result = loadgen::result::read(&path).ok()?;
            Some(Run {
                record: r.clone(),
                result,
            })
        })
        .collect()
}

/// The successful runs of `manifest` with their result files from `dir`,
/// or an error naming every result file that is missing or does not read
/// (for `--report-only`, which must not redraw a report from part of the runs).
pub fn load_runs_strict(manifest: &Manifest, dir: &Path) -> anyhow::Result<Vec<Run>> {
    let mut runs = Vec::new();
    let mut unreadable = Vec::new();
    for r in manifest.runs.iter().filter(|r| r.counts()) {
        let path = r.result_file.in_dir(dir);
        match loadgen::result::read(&path) {
            Ok(result) => runs.push(Run {
                record: r.clone(),
                result,
            }),
            Err(e) => unreadable.push(format!("{}: {e:#}", path.display())),
        }
    }
    if !unreadable.is_empty() {
        anyhow::bail!(
            "{} result file(s) of runs the manifest records as ok could not be read, so the report was not redrawn:\n  {}",
            unreadable.len(),
            unreadable.join("\n  ")
        );
    }
    Ok(runs)
}

/// One run per point of the matrix and label, in matrix order. Where a
/// point ran in several repetitions, the run whose cost is the median (see
/// [`Run::median_key`]; the lower of the two middle runs for an even
/// count, as a run must be picked, not a mean of two). Every figure shown for a point then comes from one
/// real run, never from numbers mixed across runs. Runs of different labels
/// or purposes (a latency run and a matched-load run at the same shape) are
/// never grouped together.
pub fn median_runs(runs: &[Run]) -> Vec<Run> {
    let mut points: Vec<(String, Vec<&Run>)> = Vec::new();
    for run in runs {
        let point = format!("{}|{}|{:?}", label(run), run.record.spec.point(), purpose(run));
        match points.iter_mut().find(|(p, _)| *p == point) {
            Some((_, group)) => group.push(run),
            None => points.push((point, vec![run])),
        }
    }
    points
        .into_iter()
        .filter_map(|(_, mut group)| {
            // A stable sort: of runs with equal keys, the earlier one stays first.
            group.sort_by(|a, b| a.median_key().total_cmp(&b.median_key()));
            let middle = group.len().checked_sub(1)? / 2;
            Some(group[middle].clone())
        })
        .collect()
}

/// The lowest and highest of a figure over a point's repetitions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range {
    pub lo: f64,
    pub hi: f64,
}

/// The range of server CPU per message over every repetition of `point`.
pub fn server_cpu_range(runs: &[Run], point: &str) -> Option<Range> {
    runs.iter()
        .filter(|r| r.record.spec.point() == point)
        .filter_map(Run::server_cpu_us_per_msg)
        .fold(None, |acc: Option<Range>, v| {
            Some(acc.map_or(Range { lo: v, hi: v }, |r| Range {
                lo: r.lo.min(v),
                hi: r.hi.max(v),
            }))
        })
}

/// The peers that appear in `runs`, in [`Peer::all`]'s order.
pub fn peers_of(runs: &[Run]) -> Vec<Peer> {
    Peer::all()
        .filter(|p| runs.iter().any(|r| r.record.spec.peer == *p))
        .collect()
}

/// The most repetitions any run of the manifest had (1 when each point ran once).
pub fn repetitions(manifest: &Manifest) -> u32 {
    manifest
        .runs
        .iter()
        .map(|r| r.spec.repetition)
        .max()
        .unwrap_or(0)
        .max(1)
}

/// A run's share of other processes' CPU.
#[derive(Clone, Debug)]
pub struct Disturbance {
    pub run_name: String,
    pub cores: f64,
}

/// Every run's other-processes figure, where it was measured.
pub fn disturbances(runs: &[Run]) -> Vec<Disturbance> {
    runs.iter()
        .filter_map(|r| {
            Some(Disturbance {
                run_name: r.record.spec.name(),
                cores: r.other_processes_cores()?,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------
// Adapters: the only functions that read a run's label, purpose, core
// counts and CPU windows, falling back on older manifests' fields (the
// peer's name, the manifest's CPU lists, loadgen's `extra`).
// ---------------------------------------------------------------------

/// The label a run is compared under: the peer's name unless it was
/// entered under another (`epoll@twin`, a calibration variant).
pub fn label(run: &Run) -> String {
    match run.record.spec.label.as_str() {
        "" => run.record.spec.peer.name().to_string(),
        l => l.to_string(),
    }
}

/// Why the run was made, from the plan's purpose.
pub fn purpose(run: &Run) -> Purpose {
    match run.record.spec.purpose {
        crate::plan::Purpose::Peak => Purpose::Peak,
        crate::plan::Purpose::Latency => Purpose::Latency,
        crate::plan::Purpose::MatchedLoad { fraction } => Purpose::MatchedLoad { fraction },
    }
}

/// The label every other is compared with: the manifest's method's, else epoll.
pub fn reference_label(manifest: &Manifest) -> String {
    match manifest.method.reference.as_str() {
        "" => "epoll".to_string(),
        r => r.to_string(),
    }
}

/// The server's cores: the record's count, else counted from the manifest's `server_cpus`.
fn server_cores(run: &Run, manifest: &Manifest) -> Option<usize> {
    match run.record.server_cores {
        0 => count_cpus(&manifest.server_cpus),
        n => Some(n as usize),
    }
}

/// loadgen's cores: the record's count, else counted from the manifest's `loadgen_cpus`.
fn loadgen_cores(run: &Run, manifest: &Manifest) -> Option<usize> {
    match run.record.loadgen_cores {
        0 => count_cpus(&manifest.loadgen_cpus),
        n => Some(n as usize),
    }
}

/// loadgen's CPU seconds and the length of its own measured window: the
/// record's `loadgen_cost`, else loadgen's `extra.loadgen_cpu_us` over its
/// measured phase (`settings.duration_s`).
fn loadgen_cpu_window(run: &Run) -> Option<(f64, f64)> {
    if let Some(c) = &run.record.loadgen_cost {
        return Some((c.cpu_us as f64 / 1e6, c.window_s));
    }
    let cpu_us = run.result.extra.loadgen_cpu_us?;
    Some((cpu_us as f64 / 1e6, run.result.settings.duration_s))
}

/// The number of CPUs in a list such as `0`, `0-3` or `0,2-3`.
pub fn count_cpus(list: &str) -> Option<usize> {
    let mut n = 0;
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let (lo, hi): (usize, usize) = (lo.trim().parse().ok()?, hi.trim().parse().ok()?);
        n += hi.checked_sub(lo)? + 1;
    }
    (n > 0).then_some(n)
}

// ---------------------------------------------------------------------

impl Run {
    /// Busy fraction of the server's cores over its measured window.
    pub fn server_busy(&self, manifest: &Manifest) -> Option<f64> {
        let cost = self.record.server_cost.as_ref()?;
        stats::busy_fraction(cost.cpu_us? as f64 / 1e6, server_cores(self, manifest)?, cost.window_s)
    }

    /// Busy fraction of loadgen's cores over its own measured window.
    pub fn loadgen_busy(&self, manifest: &Manifest) -> Option<f64> {
        let (cpu_s, window_s) = loadgen_cpu_window(self)?;
        stats::busy_fraction(cpu_s, loadgen_cores(self, manifest)?, window_s)
    }

    /// The run's bottleneck ([`stats::classify`]).
    pub fn bottleneck(&self, manifest: &Manifest) -> Option<stats::Bottleneck> {
        stats::classify(self.server_busy(manifest)?, self.loadgen_busy(manifest)?)
    }
}

/// The point `run` measures.
pub fn point_key(run: &Run) -> PointKey {
    spec_key(&run.record.spec)
}

/// The point a planned run measures.
pub fn spec_key(spec: &crate::plan::RunSpec) -> PointKey {
    PointKey {
        transport: spec.transport,
        size_bytes: spec.size_bytes,
        conns: spec.requested_conns,
        purpose: match spec.purpose {
            crate::plan::Purpose::Peak => Purpose::Peak,
            crate::plan::Purpose::Latency => Purpose::Latency,
            crate::plan::Purpose::MatchedLoad { fraction } => Purpose::MatchedLoad { fraction },
        },
        conn_msgs: spec.conn_msgs,
    }
}

/// What the statistics need of `run`.
pub fn facts(run: &Run, manifest: &Manifest) -> RunFacts {
    let spec = &run.record.spec;
    let res = &run.result;
    RunFacts {
        name: spec.name(),
        label: label(run),
        peer: spec.peer,
        key: point_key(run),
        conns: spec.conns,
        repetition: spec.repetition,
        msgs_per_s: res.throughput.msgs_per_s,
        server_cpu_us_per_msg: run.server_cpu_us_per_msg(),
        loadgen_cpu_us_per_msg: res.extra.loadgen_cpu_us_per_msg,
        p99_us: res.latency_us.p99,
        server_busy: run.server_busy(manifest),
        loadgen_busy: run.loadgen_busy(manifest),
        offered_per_s: res.throughput.requested_msgs_per_s.or(spec.rate),
        errors: res.errors.total(),
        disturbed: run
            .other_processes_cores()
            .is_some_and(|c| c > manifest.method.disturbed_cores),
        server_peak_rss_kib: run.server_peak_rss_kib(),
        switches: run.switches_per(res.throughput.msgs_per_s),
        conv: run.conv_facts(),
    }
}

impl Run {
    /// The server's switches and syscalls per unit of work at `per_s` units
    /// per second (messages, or connections).
    pub fn switches_per(&self, per_s: f64) -> SwitchFacts {
        let Some(cost) = &self.record.server_cost else {
            return SwitchFacts::default();
        };
        let units = per_s * cost.window_s;
        let per = |n: Option<u64>| n.filter(|_| units >= 1.0).map(|n| n as f64 / units);
        SwitchFacts {
            voluntary: per(cost.voluntary_ctxt_switches),
            involuntary: per(cost.involuntary_ctxt_switches),
            syscalls: per(cost.syscalls),
            lower_bound: cost.ctxt_tasks_gone.is_some_and(|n| n > 0),
        }
    }

    /// A conversation run's figures: loadgen's, and the server's cost per
    /// connection over its window at loadgen's rate of conversations.
    pub fn conv_facts(&self) -> Option<ConvFacts> {
        let c = self.result.conversations.as_ref()?;
        Some(ConvFacts {
            conns_per_s: c.per_s,
            server_cpu_us_per_conn: self.record.server_cost.as_ref()?.cpu_us_per_msg(c.per_s),
            loadgen_cpu_us_per_conn: c.loadgen_cpu_us_per_conn,
            p50_us: c.conversation_us.p50,
            p99_us: c.conversation_us.p99,
            failed: c.failed.total(),
            switches: self.switches_per(c.per_s),
        })
    }
}

/// A run whose figures were impossible, left out of every statistic (see
/// `execute::validity`); what the report lists.
#[derive(Clone, Debug, PartialEq)]
pub struct InvalidRun {
    /// The run's name (its result file's stem).
    pub run_name: String,
    pub label: String,
    /// Why its figures are impossible.
    pub why: String,
    /// Whether this was already the redo (a run is redone once).
    pub redo: bool,
    /// Whether its redo was valid and entered the statistics in its place.
    pub replaced: bool,
}

/// Every run of `manifest` found invalid, in running order.
pub fn invalid_runs(manifest: &Manifest) -> Vec<InvalidRun> {
    let runs = &manifest.runs;
    runs.iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let why = r.invalid.clone()?;
            let replaced = !r.redo
                && runs[i + 1..]
                    .iter()
                    .any(|later| later.redo && later.spec == r.spec && later.counts());
            Some(InvalidRun {
                run_name: r.result_file.as_str().trim_end_matches(".json").to_string(),
                label: r.spec.label.clone(),
                why,
                redo: r.redo,
                replaced,
            })
        })
        .collect()
}

/// How a comparison's runs ended, for its closing line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunCounts {
    /// Every run made, redos included.
    pub total: usize,
    pub failed: usize,
    /// Valid runs in whose window other processes used more than the manifest's limit.
    pub disturbed: usize,
    /// Runs found invalid (left out), and of them how many were redos.
    pub invalid: usize,
    pub redone: usize,
}

/// The counts of `manifest`'s runs; `runs` are its valid runs (for the disturbed count).
pub fn run_counts(manifest: &Manifest, runs: &[Run]) -> RunCounts {
    let limit = manifest.method.disturbed_cores;
    RunCounts {
        total: manifest.runs.len(),
        failed: manifest.runs.iter().filter(|r| r.outcome != Outcome::Ok).count(),
        disturbed: runs
            .iter()
            .filter(|r| r.other_processes_cores().is_some_and(|c| c > limit))
            .count(),
        invalid: manifest.runs.iter().filter(|r| r.invalid.is_some()).count(),
        redone: manifest.runs.iter().filter(|r| r.redo).count(),
    }
}

/// The one result a closing line can give: at the headline point, the
/// label with the lowest median server CPU per message and its ratio to the
/// reference (or, when that is the reference, the next cheapest's).
#[derive(Clone, Debug, PartialEq)]
pub struct Headline {
    pub key: PointKey,
    /// The cheapest label there.
    pub cheapest: String,
    /// The label the ratio is of (the cheapest, or the runner-up when the
    /// cheapest is the reference) and the ratio with its verdict.
    pub compared: Option<(String, points::Ratio)>,
    pub reference: String,
}

/// The headline of `analysis`: at the latency-view point (matched load,
/// tcp, 100 connections), else the first matched-load point, else the
/// first point; `None` when no label there has a server CPU figure.
pub fn headline(analysis: &Analysis) -> Option<Headline> {
    let matched = |p: &&PointStats| matches!(p.key.purpose, Purpose::MatchedLoad { .. });
    let point = analysis
        .points
        .iter()
        .find(|p| p.key.is_latency_view())
        .or_else(|| analysis.points.iter().find(matched))
        .or_else(|| analysis.points.first())?;
    let ranked = points::ranked_by_server_cpu(point);
    let cheapest = ranked.first().filter(|p| p.server_cpu_us_per_msg.is_some())?;
    let other = if cheapest.label == analysis.reference {
        ranked.get(1).copied()
    } else {
        Some(*cheapest)
    };
    Some(Headline {
        key: point.key,
        cheapest: cheapest.label.clone(),
        compared: other.and_then(|p| Some((p.label.clone(), p.ratio_server_cpu?))),
        reference: analysis.reference.clone(),
    })
}

/// Everything the report says about a comparison.
#[derive(Clone, Debug)]
pub struct Analysis {
    /// The label the ratios are to.
    pub reference: String,
    pub points: Vec<PointStats>,
}

/// The statistics of every point of `runs`. In an adaptive comparison the
/// server CPU ratios are the stopping rule's (its 99% interval and verdict,
/// which the repeated looks need) and each label says why it stopped; a
/// label the rule would still continue was left open by the time budget
/// ([`adaptive::left_open`]). At a conversation point the rule judges
/// server CPU per connection, and its decision stands for both ratios
/// (per message and per connection), so that every part of the report
/// gives the point one verdict.
pub fn analyse(manifest: &Manifest, runs: &[Run]) -> Analysis {
    let reference = reference_label(manifest);
    let facts: Vec<RunFacts> = runs.iter().map(|r| facts(r, manifest)).collect();
    let mut points = points::point_stats(&facts, &reference);
    if let Some(rule) = stopping_rule(manifest) {
        for d in adaptive::label_decisions(&facts, &reference, &rule) {
            let peer = points
                .iter_mut()
                .filter(|p| p.key == d.key)
                .flat_map(|p| p.peers.iter_mut())
                .find(|p| p.label == d.label);
            let Some(peer) = peer else { continue };
            let decision = match d.decision.step {
                _ if !adaptive_at(manifest, &d.key) => adaptive::first_rounds_only(&rule, &d.ratios),
                adaptive::Step::Continue => adaptive::left_open(&rule, &d.ratios),
                adaptive::Step::Stop(_) => d.decision,
            };
            let reason = match decision.step {
                adaptive::Step::Stop(reason) => Some(reason),
                adaptive::Step::Continue => None,
            };
            let ratio = decision.interval.map(|interval| points::Ratio {
                interval,
                verdict: decision.verdict,
                stopped: reason,
            });
            peer.ratio_server_cpu = ratio;
            peer.stopped = reason;
            if let Some(conv) = peer.conv.as_mut() {
                conv.ratio_server_cpu = ratio;
            }
        }
    }
    Analysis { points, reference }
}

/// The rule an adaptive comparison ran under, from its manifest; `None`
/// for a fixed design.
pub fn stopping_rule(manifest: &Manifest) -> Option<adaptive::StoppingRule> {
    let a = manifest.method.adaptive?;
    Some(adaptive::StoppingRule {
        first: manifest.method.repetitions as usize,
        ..adaptive::StoppingRule::new(
            stats::Band::from_permille(a.decide_at_permille)?,
            a.max_repetitions as usize,
        )
    })
}

/// For adaptive rounds: the runs of `round` at the points where the rule
/// (from `manifest`) says some label continues, judged on the runs in
/// `dir` so far. Every peer of such a point runs, so each stays paired.
pub fn undecided_runs(manifest: &Manifest, dir: &Path, round: Vec<crate::plan::RunSpec>) -> Vec<crate::plan::RunSpec> {
    let Some(rule) = stopping_rule(manifest) else {
        return Vec::new();
    };
    let runs = load_runs(manifest, dir);
    let facts: Vec<RunFacts> = runs.iter().map(|r| facts(r, manifest)).collect();
    let open = adaptive::open_points(&adaptive::label_decisions(&facts, &reference_label(manifest), &rule));
    round
        .into_iter()
        .filter(|s| open.contains(&spec_key(s)) && adaptive_at(manifest, &spec_key(s)))
        .collect()
}

/// Whether adaptive rounds may repeat the point `key`: every point, or
/// only matched-load points under `--adaptive-points matched-load`.
fn adaptive_at(manifest: &Manifest, key: &PointKey) -> bool {
    let only_matched = manifest.method.adaptive.as_ref().is_some_and(|a| a.matched_load_only);
    !only_matched || matches!(key.purpose, Purpose::MatchedLoad { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(count_cpus("0"), Some(1));
        assert_eq!(count_cpus("0-3"), Some(4));
        assert_eq!(count_cpus("0,2-3"), Some(3));
        assert_eq!(count_cpus(""), None);
        assert_eq!(count_cpus("x"), None);
        assert_eq!(count_cpus("3-1"), None);
    }
}
