//! Adaptive repetitions: after the first round, a point gets another
//! interleaved repetition only while its verdict at the band is still
//! open. [`step`] is the stopping rule, a pure function of the paired ratios
//! so far; the executor asks it after every round and runs the next round
//! only at the points (and labels) it says to continue.
//!
//! # The rule
//!
//! With the ratios of `n` repetitions, the signed-rank interval at
//! [`LOOK_COVERAGE`] ([`super::stats::ratio_ci`]):
//!
//! - excludes 1: stop, the candidate is lower or higher;
//! - contains 1 and lies inside `[1 - band, 1 + band]`: stop, equivalent;
//! - otherwise, with `n` below the cap: continue;
//! - at the cap: stop, undecided, and the interval is reported as it is.
//!
//! A look whose interval cannot reach [`LOOK_COVERAGE`] (n ≤ 6: `[min, max]`
//! covers 93.75% at 5 and 96.9% at 6) decides nothing and continues.
//!
//! # Why a stricter level at each look
//!
//! Looking after every repetition and stopping at the first interval that
//! excludes 1 gives a difference that is not there more chances than one:
//! with 95% at each of the looks from 5 to 20, A/A pairs would be called
//! different far more often than 5% (the test
//! `optional_stopping_at_95_inflates_the_a_a_rate` measures it). So each look
//! uses [`LOOK_COVERAGE`], a constant per-look level in the manner of
//! Pocock's group-sequential boundary, chosen by the simulation in
//! `a_a_rate_under_the_rule` so that the whole sequence of looks, first
//! round to cap, calls an A/A point different at most 5% of the time.
//!
//! That rate does not depend on the noise: under "no difference" with
//! exchangeable runs, the signs of the log ratios are fair coins
//! independent of their magnitudes, and the sequential ranks of continuous
//! i.i.d. magnitudes have one law whatever their distribution. Stopping for
//! equivalence only ends sequences early, which can only remove false
//! differences. So the simulation with equivalence stops switched off is an
//! upper bound that holds for any continuous noise.

use super::stats::{self, Band, Interval, Verdict};

/// The coverage of the interval at every look of the adaptive design; see
/// the module doc for why it is above 95% and the test
/// `a_a_rate_under_the_rule` for the A/A rate it gives.
pub const LOOK_COVERAGE: f64 = 0.99;

/// The repetitions of the first round when nothing else is asked (the
/// fixed design's default).
pub const DEFAULT_FIRST: usize = 5;

/// The per-point cap when nothing else is asked.
pub const DEFAULT_CAP: usize = 20;

/// When a point stops getting repetitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoppingRule {
    /// The band of "equivalent": `--decide-at`.
    pub band: Band,
    /// The repetitions every point gets before the rule is asked.
    pub first: usize,
    /// The most repetitions a point gets: `--max-repetitions`.
    pub cap: usize,
}

impl Default for StoppingRule {
    fn default() -> StoppingRule {
        StoppingRule {
            band: Band::DEFAULT,
            first: DEFAULT_FIRST,
            cap: DEFAULT_CAP,
        }
    }
}

/// Why a point stopped getting repetitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The interval excludes 1.
    Differs,
    /// The interval lies inside the band around 1.
    Equivalent,
    /// The cap was reached with the verdict still open.
    Cap,
}

impl StopReason {
    /// `differs`, `equivalent`, `cap`: the word in the report data.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Differs => "differs",
            StopReason::Equivalent => "equivalent",
            StopReason::Cap => "cap",
        }
    }
}

/// What the rule says after a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Run another repetition of this point.
    Continue,
    /// Stop here, for this reason.
    Stop(StopReason),
}

/// A label's state at a point: the interval at [`LOOK_COVERAGE`] and its
/// verdict at the band (both `None`/[`Verdict::TooFewRuns`] for fewer than
/// 2 ratios), and what the rule says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub interval: Option<Interval>,
    pub verdict: Verdict,
    pub step: Step,
}

/// The stopping rule on the valid paired ratios (candidate over reference)
/// of one label at one point, in repetition order. Ratios that are not
/// finite or not positive are dropped, so a failed run costs a repetition
/// but is never counted as one.
pub fn step(rule: &StoppingRule, ratios: &[f64]) -> Step {
    decide(rule, ratios).step
}

/// [`step`] with the interval and verdict that led to it.
pub fn decide(rule: &StoppingRule, ratios: &[f64]) -> Decision {
    let valid: Vec<f64> = ratios.iter().copied().filter(|r| r.is_finite() && *r > 0.0).collect();
    let interval = stats::ratio_ci(&valid, LOOK_COVERAGE);
    let at_cap = ratios.len() >= rule.cap;
    let open = if at_cap { Step::Stop(StopReason::Cap) } else { Step::Continue };
    let Some(iv) = interval else {
        return Decision {
            interval,
            verdict: Verdict::TooFewRuns,
            step: open,
        };
    };
    let verdict = stats::verdict_at(&iv, rule.band);
    let step = if valid.len() < rule.first || iv.level < LOOK_COVERAGE {
        open
    } else {
        match verdict {
            Verdict::Lower | Verdict::Higher => Step::Stop(StopReason::Differs),
            Verdict::Equivalent(_) => Step::Stop(StopReason::Equivalent),
            Verdict::Undecided | Verdict::TooFewRuns => open,
        }
    };
    Decision {
        interval,
        verdict: match step {
            // A look below LOOK_COVERAGE may show an interval that excludes
            // 1, but the rule did not stop on it: no verdict from it.
            Step::Stop(StopReason::Cap) if iv.level < LOOK_COVERAGE => Verdict::TooFewRuns,
            _ => verdict,
        },
        step,
    }
}

/// A point continues while any of its labels does: every label at a point
/// is paired with the same reference runs, so the reference runs again if
/// any label needs another pair. `labels` holds each candidate label's
/// ratios so far.
pub fn point_step(rule: &StoppingRule, labels: &[Vec<f64>]) -> Step {
    let steps: Vec<Step> = labels.iter().map(|r| step(rule, r)).collect();
    if steps.contains(&Step::Continue) {
        Step::Continue
    } else if steps.contains(&Step::Stop(StopReason::Cap)) {
        Step::Stop(StopReason::Cap)
    } else if steps.iter().all(|s| *s == Step::Stop(StopReason::Equivalent)) && !steps.is_empty() {
        Step::Stop(StopReason::Equivalent)
    } else {
        Step::Stop(StopReason::Differs)
    }
}
