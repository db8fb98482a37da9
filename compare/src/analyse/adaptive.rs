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
//! - at the cap: stop, undecided, and the interval is reported as it is;
//! - when the comparison's time budget ends the rounds first: stop with the
//!   reason "time budget" ([`left_open`]).
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
//!
//! # Measured error rates and cost
//!
//! As the tests printed them (`cargo test --release -p compare --lib
//! adaptive -- --nocapture`; seeded, so exactly reproducible). A/A, 4,000
//! and 10,000 trials:
//!
//! ```text
//! A/A, a look per repetition from 5 to 20 at 95% each: lower or higher in 17.0%
//! A/A, worst case, looks 5..=10 at 99.0%: lower or higher in 1.42%
//! A/A, worst case, looks 5..=15 at 99.0%: lower or higher in 2.78%
//! A/A, worst case, looks 5..=20 at 99.0%: lower or higher in 3.74%
//! A/A, sigma 5%, band 10%, cap 20: lower or higher 1.92%, equivalent 97.9%, undecided 0.1%, mean repetitions 10.1
//! A/A, sigma 10%, band 10%, cap 20: lower or higher 3.47%, equivalent 32.8%, undecided 63.7%, mean repetitions 18.5
//! ```
//!
//! A true 10% difference (candidate 0.9 × reference), 4,000 trials:
//!
//! ```text
//! 0.9x, sigma  5%, cap 10: lower 87.1%, higher 0.00%, equivalent 0.38%, undecided 12.5%, mean repetitions 8.7
//! 0.9x, sigma  5%, cap 20: lower 99.2%, higher 0.00%, equivalent 0.83%, undecided 0.0%, mean repetitions 9.0
//! 0.9x, sigma 10%, cap 10: lower 26.9%, higher 0.00%, equivalent 0.23%, undecided 72.9%, mean repetitions 9.7
//! 0.9x, sigma 10%, cap 20: lower 73.5%, higher 0.00%, equivalent 1.50%, undecided 25.0%, mean repetitions 14.5
//! ```
//!
//! The per-look level was chosen from the ignored test
//! `choosing_the_look_coverage` (cap 20):
//!
//! ```text
//! look 98.0%: A/A worst case 7.20%; 0.9x sigma 5%: lower 99.0% in 7.9 repetitions; 0.9x sigma 10%: lower 80.3% in 13.0 repetitions
//! look 98.5%: A/A worst case 5.04%; 0.9x sigma 5%: lower 99.1% in 8.8 repetitions; 0.9x sigma 10%: lower 77.3% in 13.9 repetitions
//! look 99.0%: A/A worst case 3.73%; 0.9x sigma 5%: lower 99.2% in 9.0 repetitions; 0.9x sigma 10%: lower 71.7% in 14.5 repetitions
//! look 99.5%: A/A worst case 1.73%; 0.9x sigma 5%: lower 99.8% in 10.2 repetitions; 0.9x sigma 10%: lower 62.6% in 16.0 repetitions
//! look 99.0%, cap 30: A/A worst case 4.70%
//! ```
//!
//! The default cap, [`DEFAULT_CAP`] = 12, from the ignored test
//! `choosing_the_cap` (3,000 trials a line; σ = 4.5% is matched load's
//! per-run noise, 8.7% closed loop's):
//!
//! ```text
//! 1.0x, sigma 4.5%, cap 10: lower 0.6%, higher 0.4%, equivalent 80.9%, undecided 18.2%, mean repetitions 9.0
//! 1.0x, sigma 4.5%, cap 12: lower 0.6%, higher 0.6%, equivalent 93.7%, undecided 5.1%, mean repetitions 9.3
//! 1.0x, sigma 4.5%, cap 20: lower 0.8%, higher 0.8%, equivalent 98.4%, undecided 0.0%, mean repetitions 9.4
//! 0.9x, sigma 4.5%, cap 12: lower 97.9%, higher 0.0%, equivalent 0.4%, undecided 1.7%, mean repetitions 8.6
//! 0.9x, sigma 4.5%, cap 20: lower 99.5%, higher 0.0%, equivalent 0.5%, undecided 0.0%, mean repetitions 8.6
//! 1.0x, sigma 8.7%, cap 12: lower 0.9%, higher 1.3%, equivalent 11.8%, undecided 86.0%, mean repetitions 11.8
//! 1.0x, sigma 8.7%, cap 20: lower 2.1%, higher 1.7%, equivalent 58.1%, undecided 38.1%, mean repetitions 17.0
//! 0.9x, sigma 8.7%, cap 12: lower 52.6%, higher 0.0%, equivalent 1.0%, undecided 46.4%, mean repetitions 10.7
//! 0.9x, sigma 8.7%, cap 20: lower 86.0%, higher 0.0%, equivalent 1.5%, undecided 12.5%, mean repetitions 13.0
//! A/A, worst case, looks 5..=12 at 99.0%: lower or higher in 2.16%
//! ```
//!
//! No look can stop before 8 pairs ([`first_look`]): the signed-rank
//! interval's widest, `[min, max]`, covers 98.4% at 7. So every point the
//! rule is asked about runs at least 8 repetitions unless the time budget
//! ends the rounds first ([`left_open`] says what such a point reports).
//!
//! 99% is the loosest of these whose worst case stays clearly under 5% at
//! the largest cap allowed, [`MAX_CAP`] = 20. A cap above 20 adds looks: at 30 the worst case
//! is at 5% within simulation error (4.70% here, 5.19% with another seed),
//! so a cap above 20 would need a stricter level, and the cap stops at 20. Noise as at matched load
//! (σ ≈ 5%) decides almost every point in about 10 repetitions, and a 10%
//! difference is found as "lower" 99% of the time. Closed-loop noise
//! (σ ≈ 10%) is too much for a 10% band at 20 repetitions: most A/A
//! points end undecided there, and the report says so.
//!
//! A true ratio of exactly 0.9 sits on the band's edge, so "equivalent
//! within 10%" for it (1.5% at most above) is not a false statement; a
//! difference larger than the band is called equivalent only when the
//! interval misses it.
//!
//! # Where it hooks in
//!
//! The executor runs the first `--repetitions` rounds as before. After each
//! round it builds [`RunFacts`] from the runs so far and runs the next round
//! only at the [`open_points`] of [`label_decisions`], with the peers' order
//! rotated by the round's number as in every round. It stops when no point
//! is open or the cap is reached. For a comparison made this way, the
//! analysis reports each ratio from [`decide`] (the interval at
//! [`LOOK_COVERAGE`] and the rule's verdict), and each label's repetitions
//! and stop reason from [`label_decisions`].

use std::collections::BTreeMap;

use super::points::{PointKey, RunFacts};
use super::stats::{self, Band, Interval, Verdict};

/// The coverage of the interval at every look of the adaptive design; see
/// the module doc for why it is above 95% and the test
/// `a_a_rate_under_the_rule` for the A/A rate it gives.
pub const LOOK_COVERAGE: f64 = 0.99;

/// The repetitions of the first round when nothing else is asked (the
/// fixed design's default).
pub const DEFAULT_FIRST: usize = 5;

/// The per-point cap when nothing else is asked: 12 repetitions.
///
/// Where the rounds can decide, at matched load (per-run noise about 4.5%,
/// the paired ratio's spread about 6%), 12 decides nearly as much as 20:
/// an A/A pair is called equivalent 93.7% of the time (98.4% at 20) and a
/// true 10% difference is found 97.9% of the time (99.5% at 20), in 9.3
/// and 8.6 repetitions on average. Where the noise is 9% or more (closed
/// loop, conversations), the rounds past 12 seldom decide a 10% band (A/A
/// at σ = 8.7%: equivalent 11.8% at 12, 58.1% at 20, in 17 repetitions
/// on average) and cost a run of every peer each: within the full run's 45
/// minutes they would take the time the matched-load points need. Fewer
/// looks also lower the A/A worst case (2.16% at 12 against 3.74% at 20).
/// The figures are the ignored test `choosing_the_cap`'s (module doc).
pub const DEFAULT_CAP: usize = 12;

/// The largest cap `--max-repetitions` allows: above it the looks at 99%
/// no longer keep the A/A rate clearly under 5% (see the module doc).
pub const MAX_CAP: usize = 20;

/// When a point stops getting repetitions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoppingRule {
    /// The band of "equivalent": `--decide-at`.
    pub band: Band,
    /// The repetitions every point gets before the rule is asked.
    pub first: usize,
    /// The most repetitions a point gets: `--max-repetitions`.
    pub cap: usize,
    /// The coverage of the interval at each look: [`LOOK_COVERAGE`]
    /// (a field so that the tests can show what 95% would do).
    pub look_coverage: f64,
}

impl StoppingRule {
    /// The rule at `band` with a cap, the first round at [`DEFAULT_FIRST`]
    /// (or the cap, if lower) and each look at [`LOOK_COVERAGE`].
    pub fn new(band: Band, cap: usize) -> StoppingRule {
        StoppingRule {
            band,
            first: DEFAULT_FIRST.min(cap),
            cap,
            look_coverage: LOOK_COVERAGE,
        }
    }
}

impl Default for StoppingRule {
    fn default() -> StoppingRule {
        StoppingRule::new(Band::DEFAULT, DEFAULT_CAP)
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
    /// The comparison's wall-clock budget (`--budget`) ended the adaptive
    /// rounds with the verdict still open: see [`left_open`].
    TimeBudget,
    /// The point was outside `--adaptive-points`: it kept its first rounds
    /// and the rule never looked at it (see [`first_rounds_only`]).
    FirstRoundsOnly,
}

impl StopReason {
    /// `differs`, `equivalent`, `cap`, `time budget`: the word in the report data.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Differs => "differs",
            StopReason::Equivalent => "equivalent",
            StopReason::Cap => "cap",
            StopReason::TimeBudget => "time budget",
            StopReason::FirstRoundsOnly => "first rounds only",
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
    let interval = stats::ratio_ci(&valid, rule.look_coverage);
    let at_cap = ratios.len() >= rule.cap;
    let open = if at_cap {
        Step::Stop(StopReason::Cap)
    } else {
        Step::Continue
    };
    let Some(iv) = interval else {
        return Decision {
            interval,
            verdict: Verdict::TooFewRuns,
            step: open,
        };
    };
    let verdict = stats::verdict_at(&iv, rule.band);
    let step = if valid.len() < rule.first || iv.level < rule.look_coverage {
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
            Step::Stop(StopReason::Cap) if iv.level < rule.look_coverage => Verdict::TooFewRuns,
            _ => verdict,
        },
        step,
    }
}

/// The fewest valid ratios at which a look can reach the rule's
/// coverage, and so stop for a difference or equivalence: 8 at 99% (the
/// signed-rank interval's widest, `[min, max]`, covers 1 - 2/2ⁿ: 98.4% at
/// 7, 99.2% at 8). Below it every look continues, whatever the data.
pub fn first_look(rule: &StoppingRule) -> usize {
    (2..=64)
        .find(|&n| {
            let ratios: Vec<f64> = (1..=n).map(|i| 1.0 + i as f64 / 1000.0).collect();
            stats::ratio_ci(&ratios, rule.look_coverage).is_some_and(|iv| iv.level >= rule.look_coverage)
        })
        .unwrap_or(usize::MAX)
}

/// What a label says when the comparison's time budget ended its
/// repetitions while [`decide`] still continued (stop reason
/// [`StopReason::TimeBudget`]):
///
/// - with fewer valid ratios than [`first_look`], the rule has never
///   looked: every look before it continues whatever the data, so the
///   ratios were read once, now. The label gets the fixed design's
///   interval and verdict (at 95% or the nearest attainable level, 93.75%
///   at 5 pairs, as a comparison without adaptive rounds reports it);
/// - from [`first_look`] on, the looks at [`LOOK_COVERAGE`] did not
///   decide, and reading the same ratios again at a laxer level would be
///   the optional stopping the rule exists to avoid: the interval at
///   [`LOOK_COVERAGE`], "undecided".
pub fn left_open(rule: &StoppingRule, ratios: &[f64]) -> Decision {
    let valid: Vec<f64> = ratios.iter().copied().filter(|r| r.is_finite() && *r > 0.0).collect();
    let step = Step::Stop(StopReason::TimeBudget);
    if valid.len() < first_look(rule) {
        let interval = stats::ratio_ci(&valid, stats::TARGET_COVERAGE);
        let verdict = interval.map_or(Verdict::TooFewRuns, |iv| stats::verdict_at(&iv, rule.band));
        return Decision {
            interval,
            verdict,
            step,
        };
    }
    let interval = stats::ratio_ci(&valid, rule.look_coverage);
    Decision {
        interval,
        verdict: Verdict::Undecided,
        step,
    }
}

/// What a label says at a point that `--adaptive-points` kept out of the
/// adaptive rounds: the rule never looked at it, so its ratios are read
/// once, as the fixed design reads them (95%, or the nearest attainable
/// level), and the stop reason says so.
pub fn first_rounds_only(rule: &StoppingRule, ratios: &[f64]) -> Decision {
    let valid: Vec<f64> = ratios.iter().copied().filter(|r| r.is_finite() && *r > 0.0).collect();
    let interval = stats::ratio_ci(&valid, stats::TARGET_COVERAGE);
    Decision {
        interval,
        verdict: interval.map_or(Verdict::TooFewRuns, |iv| stats::verdict_at(&iv, rule.band)),
        step: Step::Stop(StopReason::FirstRoundsOnly),
    }
}

/// Where the rule stands for one candidate label at one point.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelDecision {
    pub key: PointKey,
    pub label: String,
    /// Repetitions the label has run at the point (failed or short runs
    /// included: they cost a repetition).
    pub repetitions: usize,
    /// The paired ratios, one per repetition (NaN where a pair is missing).
    pub ratios: Vec<f64>,
    pub decision: Decision,
}

/// The rule applied to every candidate label at every point of `facts`
/// (the runs so far), on server CPU per message (per connection at a
/// conversation point) against `reference`, paired by repetition: the
/// figure the Findings rank designs by. A
/// matched-load run that fell short of its rate, a failed run or a
/// repetition the reference lacks gives no ratio but counts as a
/// repetition. Points without a reference run are left out: there is
/// nothing to decide there.
///
/// The executor asks [`open_points`] of this after each round; the report
/// states each label's repetitions and [`Decision::step`] (why it stopped).
pub fn label_decisions(facts: &[RunFacts], reference: &str, rule: &StoppingRule) -> Vec<LabelDecision> {
    let mut keys: Vec<PointKey> = Vec::new();
    for f in facts {
        if !keys.contains(&f.key) {
            keys.push(f.key);
        }
    }
    let mut out = Vec::new();
    for key in keys {
        let at: Vec<&RunFacts> = facts.iter().filter(|f| f.key == key).collect();
        let by_rep = |label: &str| -> BTreeMap<u32, Option<f64>> {
            at.iter()
                .filter(|f| f.label == label)
                .map(|f| (f.repetition, judged_figure(f).filter(|_| !f.fell_short())))
                .collect()
        };
        let reference_runs = by_rep(reference);
        if reference_runs.is_empty() {
            continue;
        }
        let mut labels: Vec<&str> = Vec::new();
        for f in &at {
            if f.label != reference && !labels.contains(&f.label.as_str()) {
                labels.push(&f.label);
            }
        }
        for label in labels {
            let ratios: Vec<f64> = by_rep(label)
                .iter()
                .map(|(rep, cand)| match (cand, reference_runs.get(rep).copied().flatten()) {
                    (Some(c), Some(r)) => c / r,
                    _ => f64::NAN,
                })
                .collect();
            out.push(LabelDecision {
                key,
                label: label.to_string(),
                repetitions: ratios.len(),
                decision: decide(rule, &ratios),
                ratios,
            });
        }
    }
    out
}

/// The figure the rule judges a run by: server CPU per connection at a
/// conversation point (the figure its Findings rank by), per message
/// elsewhere.
fn judged_figure(f: &RunFacts) -> Option<f64> {
    match f.key.conn_msgs {
        Some(_) => f.conv.as_ref()?.server_cpu_us_per_conn,
        None => f.server_cpu_us_per_msg,
    }
}

/// The points at which some label still continues: the next round runs
/// these (every label at them, so that each is paired with the reference's
/// run of that round), and no others.
pub fn open_points(decisions: &[LabelDecision]) -> Vec<PointKey> {
    let mut open: Vec<PointKey> = Vec::new();
    for d in decisions {
        if d.decision.step == Step::Continue && !open.contains(&d.key) {
            open.push(d.key);
        }
    }
    open
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyse::sim::{Machine, SplitMix64};

    /// One simulated point under `rule`: repetitions are added one at a
    /// time until the rule stops. Returns the decision and the repetitions.
    fn run_point(rng: &mut SplitMix64, rule: &StoppingRule, machine: Machine) -> (Decision, usize) {
        let mut ratios = machine.ratios(rng, rule.first);
        loop {
            let d = decide(rule, &ratios);
            if d.step != Step::Continue {
                return (d, ratios.len());
            }
            ratios.extend(machine.ratios(rng, 1));
        }
    }

    /// What `trials` simulated points under `rule` ended with.
    #[derive(Debug, Default)]
    struct Outcomes {
        lower: f64,
        higher: f64,
        equivalent: f64,
        undecided: f64,
        mean_repetitions: f64,
    }

    fn outcomes(rng: &mut SplitMix64, trials: usize, rule: &StoppingRule, machine: Machine) -> Outcomes {
        let mut o = Outcomes::default();
        let share = 1.0 / trials as f64;
        for _ in 0..trials {
            let (d, reps) = run_point(rng, rule, machine);
            match d.verdict {
                Verdict::Lower => o.lower += share,
                Verdict::Higher => o.higher += share,
                Verdict::Equivalent(_) => o.equivalent += share,
                Verdict::Undecided | Verdict::TooFewRuns => o.undecided += share,
            }
            o.mean_repetitions += reps as f64 * share;
        }
        o
    }

    /// A band so narrow that no simulated interval fits in it: the rule
    /// then never stops for equivalence, the worst case for the A/A rate.
    fn no_equivalence_stop(look_coverage: f64, cap: usize) -> StoppingRule {
        StoppingRule {
            band: Band::from_permille(1).unwrap(),
            look_coverage,
            ..StoppingRule::new(Band::DEFAULT, cap)
        }
    }

    #[test]
    fn the_rule_stops_for_each_reason() {
        let rule = StoppingRule::default();
        // Fewer than 2 ratios: nothing to look at.
        assert_eq!(step(&rule, &[]), Step::Continue);
        assert_eq!(decide(&rule, &[0.9]).verdict, Verdict::TooFewRuns);
        // Five ratios all below 1: [min, max] covers only 93.75% < 99%, so
        // the fixed design would say "lower" and the adaptive one goes on.
        let five = [0.90, 0.88, 0.91, 0.89, 0.92];
        assert_eq!(step(&rule, &five), Step::Continue);
        // Eight ratios all well below 1: differs.
        let eight = [0.90, 0.88, 0.91, 0.89, 0.92, 0.90, 0.87, 0.91];
        let d = decide(&rule, &eight);
        assert_eq!(d.step, Step::Stop(StopReason::Differs));
        assert_eq!(d.verdict, Verdict::Lower);
        assert!(d.interval.unwrap().level >= LOOK_COVERAGE);
        // Eight ratios tight around 1: equivalent within 10%.
        let flat = [1.01, 0.99, 1.02, 0.98, 1.00, 1.01, 0.99, 1.00];
        let d = decide(&rule, &flat);
        assert_eq!(d.step, Step::Stop(StopReason::Equivalent));
        assert_eq!(d.verdict, Verdict::Equivalent(Band::DEFAULT));
        // Wide around 1: continue below the cap, stop at it as undecided.
        let wide = [1.3, 0.8, 1.2, 0.75, 1.25, 0.9, 1.1, 0.85];
        assert_eq!(step(&rule, &wide), Step::Continue);
        let capped = StoppingRule::new(Band::DEFAULT, 8);
        let d = decide(&capped, &wide);
        assert_eq!(d.step, Step::Stop(StopReason::Cap));
        assert_eq!(d.verdict, Verdict::Undecided);
        assert!(d.interval.unwrap().contains(1.0));
        // A cap the interval cannot reach LOOK_COVERAGE at: no verdict.
        let d = decide(&StoppingRule::new(Band::DEFAULT, 5), &five);
        assert_eq!((d.step, d.verdict), (Step::Stop(StopReason::Cap), Verdict::TooFewRuns));
        // A failed run (NaN) costs a repetition but is not counted.
        let mut failed = eight.to_vec();
        failed.push(f64::NAN);
        assert_eq!(decide(&rule, &failed).interval.unwrap().n, 8);
        assert_eq!(step(&capped, &failed), Step::Stop(StopReason::Differs));
    }

    #[test]
    fn decisions_from_the_runs_so_far() {
        use crate::analyse::points::tests::fact;
        use crate::plan::Peer;
        use sockbench::server::BackendKind;
        let epoll = Peer::Backend(BackendKind::Epoll);
        let uring = Peer::Backend(BackendKind::Uring);
        let mut facts = Vec::new();
        // uring at 0.8 × epoll for 8 repetitions: differs; a twin of epoll
        // that wanders ±20%: still open.
        let wander = [1.2, 0.8, 1.15, 0.85, 1.2, 0.8, 1.1, 0.9];
        for (i, w) in wander.iter().enumerate() {
            let rep = i as u32 + 1;
            facts.push(fact("epoll", epoll, rep, 5.0, 100.0, (0.99, 0.5)));
            facts.push(fact("uring", uring, rep, 4.0 + 0.01 * i as f64, 100.0, (0.99, 0.5)));
            facts.push(fact("epoll@twin", epoll, rep, 5.0 * w, 100.0, (0.99, 0.5)));
        }
        let d = label_decisions(&facts, "epoll", &StoppingRule::default());
        assert_eq!(d.len(), 2);
        let of = |label: &str| d.iter().find(|x| x.label == label).unwrap();
        assert_eq!(of("uring").decision.step, Step::Stop(StopReason::Differs));
        assert_eq!(of("uring").repetitions, 8);
        assert_eq!(of("epoll@twin").decision.step, Step::Continue);
        assert_eq!(open_points(&d), vec![facts[0].key]);
        // A repetition without the reference's run costs one, adds no ratio.
        facts.retain(|f| !(f.label == "epoll" && f.repetition == 8));
        let d = label_decisions(&facts, "epoll", &StoppingRule::default());
        let uring = d.iter().find(|x| x.label == "uring").unwrap();
        assert_eq!((uring.repetitions, uring.decision.interval.unwrap().n), (8, 7));
        // No reference at a point: nothing to decide.
        assert!(label_decisions(&facts, "tokio", &StoppingRule::default()).is_empty());
    }

    #[test]
    fn optional_stopping_at_95_inflates_the_a_a_rate() {
        // Looking after every repetition from 5 to 20 at 95% each, and
        // stopping at the first interval that excludes 1.
        let mut rng = SplitMix64(0x0057_0095);
        let trials = 4000;
        let aa = Machine {
            sigma: 0.10,
            true_ratio: 1.0,
        };
        let naive = no_equivalence_stop(0.95, 20);
        let o = outcomes(&mut rng, trials, &naive, aa);
        let rate = o.lower + o.higher;
        println!(
            "A/A, a look per repetition from 5 to 20 at 95% each: lower or higher in {:.1}%",
            100.0 * rate
        );
        assert!(rate > 0.10, "{o:?}");
    }

    #[test]
    fn a_a_rate_under_the_rule() {
        // The worst case (no stop for equivalence), which holds for any
        // continuous noise, then the machine's noise with the 10% band.
        let mut rng = SplitMix64(0x0057_00AA);
        let trials = 10_000;
        let aa = |sigma| Machine { sigma, true_ratio: 1.0 };
        for cap in [10, 15, 20] {
            let o = outcomes(&mut rng, trials, &no_equivalence_stop(LOOK_COVERAGE, cap), aa(0.10));
            let rate = o.lower + o.higher;
            println!(
                "A/A, worst case, looks 5..={cap} at {:.1}%: lower or higher in {:.2}%",
                100.0 * LOOK_COVERAGE,
                100.0 * rate
            );
            assert!(rate < 0.05, "cap {cap}: {o:?}");
        }
        for sigma in [0.05, 0.10] {
            let o = outcomes(&mut rng, trials, &StoppingRule::new(Band::DEFAULT, MAX_CAP), aa(sigma));
            println!(
                "A/A, sigma {:.0}%, band 10%, cap 20: lower or higher {:.2}%, equivalent {:.1}%, undecided {:.1}%, mean repetitions {:.1}",
                100.0 * sigma,
                100.0 * (o.lower + o.higher),
                100.0 * o.equivalent,
                100.0 * o.undecided,
                o.mean_repetitions
            );
            assert!(o.lower + o.higher < 0.05, "sigma {sigma}: {o:?}");
        }
    }

    #[test]
    fn a_true_ten_percent_difference_under_the_rule() {
        // Candidate at 0.9 × reference: found (lower), called equivalent
        // (the band's edge: an interval inside [0.9, 1.1] that contains 1
        // must miss the truth), left undecided at the cap, and the cost.
        let mut rng = SplitMix64(0x0057_0010);
        let trials = 4000;
        for sigma in [0.05, 0.10] {
            for cap in [10, 20] {
                let rule = StoppingRule::new(Band::DEFAULT, cap);
                let o = outcomes(&mut rng, trials, &rule, Machine { sigma, true_ratio: 0.9 });
                println!(
                    "0.9x, sigma {:>2.0}%, cap {cap}: lower {:.1}%, higher {:.2}%, equivalent {:.2}%, undecided {:.1}%, mean repetitions {:.1}",
                    100.0 * sigma,
                    100.0 * o.lower,
                    100.0 * o.higher,
                    100.0 * o.equivalent,
                    100.0 * o.undecided,
                    o.mean_repetitions
                );
                assert!(o.higher < 0.005, "{o:?}");
                assert!(o.equivalent < 0.02, "{o:?}");
                if sigma == 0.05 && cap == MAX_CAP {
                    assert!(o.lower > 0.9, "{o:?}");
                }
            }
        }
    }

    #[test]
    #[ignore = "a table for choosing LOOK_COVERAGE: about a minute"]
    fn choosing_the_look_coverage() {
        let mut rng = SplitMix64(0x0057_00C0);
        let trials = 10_000;
        for look_coverage in [0.98, 0.985, 0.99, 0.995] {
            let aa = outcomes(
                &mut rng,
                trials,
                &no_equivalence_stop(look_coverage, 20),
                Machine {
                    sigma: 0.1,
                    true_ratio: 1.0,
                },
            );
            let mut line = format!(
                "look {:.1}%: A/A worst case {:.2}%",
                100.0 * look_coverage,
                100.0 * (aa.lower + aa.higher)
            );
            for sigma in [0.05, 0.10] {
                let rule = StoppingRule {
                    look_coverage,
                    ..StoppingRule::new(Band::DEFAULT, MAX_CAP)
                };
                let o = outcomes(&mut rng, trials / 4, &rule, Machine { sigma, true_ratio: 0.9 });
                line += &format!(
                    "; 0.9x sigma {:.0}%: lower {:.1}% in {:.1} repetitions",
                    100.0 * sigma,
                    100.0 * o.lower,
                    o.mean_repetitions
                );
            }
            println!("{line}");
        }
        let past = outcomes(
            &mut rng,
            trials,
            &no_equivalence_stop(LOOK_COVERAGE, 30),
            Machine {
                sigma: 0.1,
                true_ratio: 1.0,
            },
        );
        println!(
            "look {:.1}%, cap 30: A/A worst case {:.2}%",
            100.0 * LOOK_COVERAGE,
            100.0 * (past.lower + past.higher)
        );
    }

    /// At a conversation point the rule judges server CPU per connection.
    #[test]
    fn conversation_points_are_judged_per_connection() {
        use crate::analyse::points::tests::fact;
        use crate::analyse::ConvFacts;
        use crate::plan::Peer;
        use sockbench::server::BackendKind;
        let mut facts = Vec::new();
        for rep in 1..=8 {
            for (label, peer, per_conn) in [
                ("epoll", Peer::Backend(BackendKind::Epoll), 30.0),
                ("fork", Peer::Backend(BackendKind::Fork), 200.0 + rep as f64),
            ] {
                // The same CPU per message: only the per-connection figure differs.
                let mut f = fact(label, peer, rep, 5.0, 20_000.0, (0.5, 0.99));
                f.key.conn_msgs = Some(1);
                f.conv = Some(ConvFacts {
                    conns_per_s: 10_000.0,
                    server_cpu_us_per_conn: Some(per_conn),
                    loadgen_cpu_us_per_conn: None,
                    p50_us: 80.0,
                    p99_us: 200.0,
                    failed: 0,
                    switches: Default::default(),
                });
                facts.push(f);
            }
        }
        let d = label_decisions(&facts, "epoll", &StoppingRule::default());
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].decision.step, Step::Stop(StopReason::Differs));
        assert_eq!(d[0].decision.verdict, Verdict::Higher);
        assert_eq!(d[0].ratios.len(), 8);
    }

    #[test]
    fn a_point_outside_the_adaptive_points_reads_its_first_rounds_once() {
        let rule = StoppingRule::default();
        let five = [1.10, 1.12, 1.09, 1.11, 1.13];
        let d = first_rounds_only(&rule, &five);
        assert_eq!(d.step, Step::Stop(StopReason::FirstRoundsOnly));
        assert_eq!(d.verdict, Verdict::Higher, "[min, max] at 93.75% excludes 1");
        assert!(d.interval.unwrap().level < LOOK_COVERAGE);
        assert_eq!(StopReason::FirstRoundsOnly.as_str(), "first rounds only");
    }

    #[test]
    fn a_point_left_open_by_the_time_budget() {
        let rule = StoppingRule::default();
        assert_eq!(first_look(&rule), 8);
        // 5 pairs, all below 1: the rule never looked (it cannot before 8),
        // so the fixed design's reading: [min, max] at 93.75%, lower.
        let five = [0.90, 0.88, 0.91, 0.89, 0.92];
        assert_eq!(step(&rule, &five), Step::Continue);
        let d = left_open(&rule, &five);
        assert_eq!(d.step, Step::Stop(StopReason::TimeBudget));
        assert_eq!(d.verdict, Verdict::Lower);
        assert_eq!(d.interval.unwrap().level, 0.9375);
        // 9 pairs wide around 1: looked at 99% and not decided: undecided.
        let nine = [1.2, 0.85, 1.18, 0.86, 1.15, 0.88, 1.1, 0.9, 1.0];
        assert_eq!(step(&rule, &nine), Step::Continue);
        let d = left_open(&rule, &nine);
        assert_eq!(
            (d.step, d.verdict),
            (Step::Stop(StopReason::TimeBudget), Verdict::Undecided)
        );
        assert!(d.interval.unwrap().level >= LOOK_COVERAGE);
        assert_eq!(StopReason::TimeBudget.as_str(), "time budget");
    }

    /// The table behind [`DEFAULT_CAP`]: A/A and a true 10% difference at
    /// the per-run noise of matched load (σ = 4.5%) and of closed loop
    /// (8.7%), caps 10 to 20. Seeded: `cargo test --release -p compare --lib
    /// choosing_the_cap -- --ignored --nocapture`.
    #[test]
    #[ignore = "a table for choosing DEFAULT_CAP: about half a minute"]
    fn choosing_the_cap() {
        let mut rng = SplitMix64(0x0057_00CA);
        let trials = 3000;
        for sigma in [0.045, 0.087] {
            for true_ratio in [1.0, 0.9] {
                for cap in [10, 12, 16, 20] {
                    let rule = StoppingRule::new(Band::DEFAULT, cap);
                    let o = outcomes(&mut rng, trials, &rule, Machine { sigma, true_ratio });
                    println!(
                        "{true_ratio:.1}x, sigma {:.1}%, cap {cap}: lower {:.1}%, higher {:.1}%, equivalent {:.1}%, undecided {:.1}%, mean repetitions {:.1}",
                        100.0 * sigma,
                        100.0 * o.lower,
                        100.0 * o.higher,
                        100.0 * o.equivalent,
                        100.0 * o.undecided,
                        o.mean_repetitions
                    );
                }
            }
        }
        let worst = outcomes(
            &mut rng,
            10_000,
            &no_equivalence_stop(LOOK_COVERAGE, DEFAULT_CAP),
            Machine {
                sigma: 0.1,
                true_ratio: 1.0,
            },
        );
        println!(
            "A/A, worst case, looks 5..={DEFAULT_CAP} at {:.1}%: lower or higher in {:.2}%",
            100.0 * LOOK_COVERAGE,
            100.0 * (worst.lower + worst.higher)
        );
    }
}
