//! The adaptive design's account (issue 27): how the rounds were decided,
//! how many repetitions each point took and why each label stopped
//! (`differs`, `equivalent`, `cap`, `time budget`). Only for a comparison
//! made with `--decide-at` (the default full run).

use std::fmt::Write as _;

use super::*;
use crate::analyse::adaptive::{self, StopReason};
use crate::render::findings_text::shown;
use crate::render::verdict::shape_name;

pub(super) fn repetitions(w: &mut String, r: &Report) {
    let Some(a) = r.m.method.adaptive else {
        return;
    };
    let Some(rule) = analyse::stopping_rule(r.m) else {
        return;
    };
    let reference = &r.analysis.reference;
    let band = Band::from_permille(a.decide_at_permille).unwrap_or(Band::DEFAULT);
    let _ = writeln!(w, "## Repetitions: how many each point took, and why it stopped\n");
    let budget = match a.budget_s {
        Some(s) => format!(
            ", and only while the whole comparison could still end within its budget of {:.0} minutes \
             (`--budget`)",
            s / 60.0
        ),
        None => String::new(),
    };
    let _ = writeln!(
        w,
        "This comparison used adaptive repetitions. After the first {first} repetitions of every point, further \
         interleaved rounds (every peer, the order still rotated) ran only at the points where some label's server \
         CPU ratio to {reference} (per connection at a conversation point) was neither different from 1 nor \
         equivalent within {band}, up to {cap} repetitions a point{budget}. Each look reads the signed-rank \
         interval at {look:.0}%, so that looking after every round keeps the A/A false-positive rate under 5%; no \
         look can decide before {first_look} pairs. The rounds went to the matched-load points first (their noise \
         is lowest, so they decide soonest), then to the closed-loop conversation points with one message per \
         connection, then to the other closed-loop points. A label's **stop** is `differs` (the interval excludes \
         1), `equivalent` (it lies inside [{lo}, {hi}]), `cap` (still open at {cap}: undecided) or `time budget` \
         (the budget ended the rounds first: with fewer than {first_look} pairs the rule had not looked yet, and \
         the verdict is the fixed design's at its interval's level, 93.75% with 5 pairs; from {first_look} on it \
         is undecided){only}.\n",
        only = if a.matched_load_only {
            "; with `--adaptive-points matched-load` only matched-load points got further rounds, and the \
             others stop at `first rounds only` (the fixed design's interval and verdict)"
        } else {
            ""
        },
        first = rule.first,
        cap = a.max_repetitions,
        look = 100.0 * adaptive::LOOK_COVERAGE,
        first_look = adaptive::first_look(&rule),
        lo = 1.0 - band.fraction(),
        hi = 1.0 + band.fraction(),
    );
    let mut counts: Vec<(StopReason, usize)> = Vec::new();
    for p in r.analysis.points.iter().flat_map(|p| &p.peers) {
        if let Some(s) = p.stopped {
            match counts.iter_mut().find(|(r, _)| *r == s) {
                Some((_, n)) => *n += 1,
                None => counts.push((s, 1)),
            }
        }
    }
    counts.sort_by_key(|(s, _)| *s as u8);
    let total: usize = counts.iter().map(|(_, n)| n).sum();
    let mut reps: Vec<u32> = r.analysis.points.iter().map(|p| point_repetitions(r.m, p)).collect();
    reps.sort_unstable();
    let ended = if a.ended_by_budget {
        " The budget ended the rounds while some points were still open."
    } else {
        ""
    };
    let _ = writeln!(
        w,
        "Of {total} label-point verdicts: {}. Points took {} to {} repetitions.{ended}\n",
        counts
            .iter()
            .map(|(s, n)| format!("{n} {}", s.as_str()))
            .collect::<Vec<_>>()
            .join(", "),
        reps.first().copied().unwrap_or(0),
        reps.last().copied().unwrap_or(0),
    );
    let labels: Vec<(String, crate::plan::Peer)> = super::super::verdict::columns(&r.analysis)
        .into_iter()
        .filter(|(l, _)| l != reference)
        .collect();
    if labels.is_empty() {
        return;
    }
    let names: Vec<String> = labels.iter().map(|(l, p)| shown(l, *p)).collect();
    let _ = writeln!(w, "| point | repetitions | {} |", names.join(" | "));
    let _ = writeln!(w, "|---|--:|{}", "---|".repeat(labels.len()));
    for p in &r.analysis.points {
        let load = match p.key.purpose {
            Purpose::MatchedLoad { fraction } => format!("{:.0}% load", 100.0 * fraction),
            _ => "closed loop".into(),
        };
        let cells: Vec<String> = labels
            .iter()
            .map(|(l, _)| {
                p.peer(l)
                    .and_then(|s| s.stopped)
                    .map_or_else(|| "–".to_string(), |s| s.as_str().to_string())
            })
            .collect();
        let _ = writeln!(
            w,
            "| {}, {load} | {} | {} |",
            shape_name(p),
            point_repetitions(r.m, p),
            cells.join(" | ")
        );
    }
    let _ = writeln!(w);
}

/// The highest repetition any run of point `p` had.
fn point_repetitions(m: &crate::record::Manifest, p: &PointStats) -> u32 {
    m.runs
        .iter()
        .filter(|run| analyse::spec_key(&run.spec) == p.key)
        .map(|run| run.spec.repetition)
        .max()
        .unwrap_or(0)
}
