//! Matched rates: the offered rates of the matched-load sweep, fractions
//! of the lowest closed-loop peak among the peers at a point.

use serde::{Deserialize, Serialize};

use super::matrix::PointShape;

/// One peer's closed-loop peak at a point: the median over its repetitions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Peak {
    pub label: String,
    pub msgs_per_s: f64,
    /// Successful runs behind the median.
    pub runs: usize,
}

/// One offered rate of the matched-load sweep. At a conversation point
/// (`PointShape::conn_msgs`) `msgs_per_s` counts conversations per second,
/// the unit of loadgen's `--rate` with `--conn-msgs`, and so do the peaks.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OfferedRate {
    pub fraction: f64,
    pub msgs_per_s: f64,
}

/// The matched-load sweep at one point: the lowest peak and the rates from it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MatchedRates {
    pub shape: PointShape,
    /// Each peer's peak (median of its closed-loop runs at the point).
    pub peaks: Vec<Peak>,
    /// The lowest of `peaks`, which the fractions are of; `None` when no
    /// peer had a successful run, and then `rates` is empty.
    pub lowest: Option<Peak>,
    pub rates: Vec<OfferedRate>,
}

/// The median of `xs` (the mean of the two middle values for an even count).
fn median(xs: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (n > 0).then(|| (v[(n - 1) / 2] + v[n / 2]) / 2.0)
}

/// The offered rates at `shape`: `fractions` of the lowest per-peer median
/// of `closed` (each peer's closed-loop msgs/s over its successful runs
/// there, by label). The same rates for every peer, so server CPU per
/// message is compared at the same load.
pub fn matched_rates(shape: PointShape, closed: &[(String, f64)], fractions: &[f64]) -> MatchedRates {
    let mut labels: Vec<&str> = Vec::new();
    for (l, _) in closed {
        if !labels.contains(&l.as_str()) {
            labels.push(l);
        }
    }
    let peaks: Vec<Peak> = labels
        .iter()
        .filter_map(|&l| {
            let xs: Vec<f64> = closed.iter().filter(|(m, _)| m == l).map(|(_, x)| *x).collect();
            Some(Peak {
                label: l.into(),
                msgs_per_s: median(&xs)?,
                runs: xs.len(),
            })
        })
        .collect();
    let lowest = peaks
        .iter()
        .min_by(|a, b| a.msgs_per_s.total_cmp(&b.msgs_per_s))
        .cloned();
    let rates = match &lowest {
        Some(p) => fractions
            .iter()
            .map(|&fraction| OfferedRate {
                fraction,
                msgs_per_s: (p.msgs_per_s * fraction).max(1.0).round(),
            })
            .collect(),
        None => Vec::new(),
    };
    MatchedRates {
        shape,
        peaks,
        lowest,
        rates,
    }
}
