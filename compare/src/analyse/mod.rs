//! Stage 4, analyse: pure functions over the records and loadgen's results
//! (joined as [`Run`]s): which run stands for each point, the spread of the
//! repetitions, derived figures. Reads files, writes nothing.

use std::path::Path;

use loadgen::result::RunResult;

use crate::plan::Peer;
use crate::record::{Manifest, Outcome, RunRecord};

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

/// The successful runs of `manifest` with their result files from `dir`
/// (runs whose file is missing or unreadable are left out).
pub fn load_runs(manifest: &Manifest, dir: &Path) -> Vec<Run> {
    manifest
        .runs
        .iter()
        .filter(|r| r.outcome == Outcome::Ok)
        .filter_map(|r| {
            let result = loadgen::result::read(&r.result_file.in_dir(dir)).ok()?;
            Some(Run {
                record: r.clone(),
                result,
            })
        })
        .collect()
}

/// The index of the median of `keys` (the lower median for an even count).
pub fn median_index(keys: &[f64]) -> Option<usize> {
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by(|&a, &b| keys[a].total_cmp(&keys[b]));
    order.get(keys.len().checked_sub(1)? / 2).copied()
}

/// One run per point of the matrix, in matrix order. Where a point ran in
/// several repetitions, the run whose cost is the median (see
/// [`Run::median_key`]). Every figure shown for a point then comes from one
/// real run, never from numbers mixed across runs.
pub fn median_runs(runs: &[Run]) -> Vec<Run> {
    let mut points: Vec<(String, Vec<&Run>)> = Vec::new();
    for run in runs {
        let point = run.record.spec.point();
        match points.iter_mut().find(|(p, _)| *p == point) {
            Some((_, group)) => group.push(run),
            None => points.push((point, vec![run])),
        }
    }
    points
        .into_iter()
        .filter_map(|(_, group)| {
            let keys: Vec<f64> = group.iter().map(|r| r.median_key()).collect();
            median_index(&keys).map(|i| group[i].clone())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_index_takes_the_lower_middle() {
        assert_eq!(median_index(&[]), None);
        assert_eq!(median_index(&[5.0]), Some(0));
        assert_eq!(median_index(&[4.0, 9.0, 6.0]), Some(2));
        assert_eq!(median_index(&[4.0, 9.0, 6.0, 1.0]), Some(0));
    }
}
