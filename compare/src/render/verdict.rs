//! The verdict table that opens the README: one row per workload, one
//! column per label, each cell the label's server CPU per message as a
//! ratio to the reference with a mark saying whether the difference is
//! significant ([`Mark`]). Matched-load rows come first (every backend at
//! the same offered rate, the fair comparison of cost), then closed loop.
//!
//! Server CPU per message is the one figure every row can rank: throughput
//! ranks only where every backend was server-limited, which the findings
//! below the table say point by point.

use std::fmt::Write as _;

use super::findings_text::shown;
use super::plots::size_label;
use crate::analyse::points::Ratio;
use crate::analyse::stats::Verdict;
use crate::analyse::{Analysis, PeerStats, PointStats, Purpose};
use crate::plan::Peer;

/// What a ratio's interval says, as one character.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    Cheaper,
    Costlier,
    /// The interval lies inside the band: any difference is smaller than it.
    Equivalent,
    /// The interval contains 1 but reaches outside the band.
    Undecided,
    TooFewRuns,
}

impl Mark {
    pub fn of(v: Verdict) -> Mark {
        match v {
            Verdict::Lower => Mark::Cheaper,
            Verdict::Higher => Mark::Costlier,
            Verdict::Equivalent(_) => Mark::Equivalent,
            Verdict::Undecided => Mark::Undecided,
            Verdict::TooFewRuns => Mark::TooFewRuns,
        }
    }

    pub fn symbol(self) -> &'static str {
        match self {
            Mark::Cheaper => "▼",
            Mark::Costlier => "▲",
            Mark::Equivalent => "=",
            Mark::Undecided => "~",
            Mark::TooFewRuns => "?",
        }
    }
}

/// The legend under every verdict table.
/// With `conversations` (the table has conversation rows) it says that
/// their cells are per connection.
pub fn legend(reference: &str, conversations: bool) -> String {
    let figure = if conversations {
        "server CPU per message (per connection in the `msg/conn` rows, a connection per conversation)"
    } else {
        "server CPU per message"
    };
    format!(
        "Each cell: {figure} over **{reference}**'s at the same point (the Hodges–Lehmann \
         estimate of the paired per-repetition ratios); ▼ cheaper, ▲ costlier (the ratio's confidence interval excludes 1), = \
         equivalent within the band (the interval contains 1 and lies inside it), ~ undecided (the interval \
         contains 1 and reaches outside the band), ? too few runs to tell; ! the backend had errors or ran fewer connections \
         than asked there (see the findings by point)."
    )
}

/// A row of the table: the points it stands for (the fractions of one
/// matched-load sweep, or one closed-loop point).
pub struct Row<'a> {
    pub name: String,
    pub points: Vec<&'a PointStats>,
}

/// `tcp 128 B, 100 conns`.
pub fn shape_name(p: &PointStats) -> String {
    let noun = if p.key.conns == 1 { "conn" } else { "conns" };
    // A conversation point names its messages per connection: the same
    // transport and count recur once per `--conn-msgs` value.
    let per_conn = match p.key.conn_msgs {
        Some(1) => ", 1 msg/conn".to_string(),
        Some(n) => format!(", {n} msgs/conn"),
        None => String::new(),
    };
    format!(
        "{} {}, {} {noun}{per_conn}",
        p.key.transport,
        size_label(p.key.size_bytes),
        p.key.conns
    )
}

fn same_shape(a: &PointStats, b: &PointStats) -> bool {
    a.key.transport == b.key.transport
        && a.key.size_bytes == b.key.size_bytes
        && a.key.conns == b.key.conns
        && a.key.conn_msgs == b.key.conn_msgs
}

/// The matched-load sweeps, one row per transport, size and connection count.
pub fn matched_rows(analysis: &Analysis) -> Vec<Row<'_>> {
    let mut rows: Vec<Row> = Vec::new();
    for p in analysis
        .points
        .iter()
        .filter(|p| matches!(p.key.purpose, Purpose::MatchedLoad { .. }))
    {
        match rows.iter_mut().find(|r| same_shape(r.points[0], p)) {
            Some(r) => r.points.push(p),
            None => rows.push(Row {
                name: String::new(),
                points: vec![p],
            }),
        }
    }
    for r in &mut rows {
        let pcts: Vec<String> = r
            .points
            .iter()
            .filter_map(|p| match p.key.purpose {
                Purpose::MatchedLoad { fraction } => Some(format!("{:.0}", 100.0 * fraction)),
                _ => None,
            })
            .collect();
        r.name = format!("{}, {}% load", shape_name(r.points[0]), pcts.join("/"));
    }
    rows
}

/// One row per closed-loop point.
pub fn closed_rows(analysis: &Analysis) -> Vec<Row<'_>> {
    analysis
        .points
        .iter()
        .filter(|p| p.key.purpose == Purpose::Peak)
        .map(|p| Row {
            name: format!("{}, closed loop", shape_name(p)),
            points: vec![p],
        })
        .collect()
}

/// Every label of the analysis with its peer, in the points' order.
pub fn columns(analysis: &Analysis) -> Vec<(String, Peer)> {
    let mut cols: Vec<(String, Peer)> = Vec::new();
    for p in analysis.points.iter().flat_map(|p| &p.peers) {
        if !cols.iter().any(|(l, _)| *l == p.label) {
            cols.push((p.label.clone(), p.peer));
        }
    }
    cols
}

/// Whether `p` had errors or fewer connections than `point` asked for.
pub fn caveat(point: &PointStats, p: &PeerStats) -> bool {
    p.errors > 0 || p.scaled_down(&point.key)
}

/// A cell: `1.64× ▲`, or over a sweep `1.23–1.53× ▲▲▲` (one mark per
/// fraction, in the row's order); `1` in the reference's column.
fn cell(row: &Row, label: &str, reference: &str) -> String {
    if label == reference {
        return "1".into();
    }
    let found: Vec<(&PointStats, &PeerStats)> = row
        .points
        .iter()
        .filter_map(|pt| Some((*pt, pt.peer(label)?)))
        .collect();
    // A conversation point's cell is per connection, the figure its
    // Findings rank by and the adaptive rule judges (in an adaptive
    // comparison the two ratios carry the same decision anyway).
    let ratios: Vec<Ratio> = found
        .iter()
        .filter_map(|(_, p)| match &p.conv {
            Some(conv) => conv.ratio_server_cpu,
            None => p.ratio_server_cpu,
        })
        .collect();
    if ratios.is_empty() {
        return "–".into();
    }
    let lo = ratios.iter().map(|r| r.interval.mid).fold(f64::MAX, f64::min);
    let hi = ratios.iter().map(|r| r.interval.mid).fold(f64::MIN, f64::max);
    let figure = if format!("{lo:.2}") == format!("{hi:.2}") {
        format!("{lo:.2}×")
    } else {
        format!("{lo:.2}–{hi:.2}×")
    };
    let marks: String = ratios.iter().map(|r| Mark::of(r.verdict).symbol()).collect();
    let bang = if found.iter().any(|(pt, p)| caveat(pt, p)) {
        " !"
    } else {
        ""
    };
    format!("{figure} {marks}{bang}")
}

/// The table over `rows`, headed by `first` (the rows' column title);
/// nothing when there is no second label to compare.
pub fn table(w: &mut String, analysis: &Analysis, first: &str, rows: &[Row]) {
    let cols = columns(analysis);
    if rows.is_empty() || cols.len() < 2 {
        return;
    }
    let names: Vec<String> = cols.iter().map(|(l, p)| shown(l, *p)).collect();
    let _ = writeln!(w, "| {first} | {} |", names.join(" | "));
    let _ = writeln!(w, "|---|{}", "--:|".repeat(cols.len()));
    for row in rows {
        let cells: Vec<String> = cols.iter().map(|(l, _)| cell(row, l, &analysis.reference)).collect();
        let _ = writeln!(w, "| {} | {} |", row.name, cells.join(" | "));
    }
    let _ = writeln!(w);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyse::points::point_stats;
    use crate::analyse::points::tests::fact;
    use sockbench::server::BackendKind;

    #[test]
    fn a_sweep_is_one_row_with_a_mark_per_fraction() {
        let (epoll, fork) = (Peer::Backend(BackendKind::Epoll), Peer::Backend(BackendKind::Fork));
        let mut facts = Vec::new();
        for fraction in [0.25, 0.5, 0.75] {
            for rep in 1..=5 {
                let d = 1.0 + rep as f64 / 10.0;
                for (label, peer, cpu) in [("epoll", epoll, 5.0), ("fork", fork, 5.0 * (1.0 + fraction))] {
                    let mut f = fact(label, peer, rep, cpu * d, 20_000.0, (0.5, 0.4));
                    f.key.purpose = Purpose::MatchedLoad { fraction };
                    f.offered_per_s = Some(20_000.0);
                    facts.push(f);
                }
            }
        }
        let analysis = Analysis {
            reference: "epoll".into(),
            points: point_stats(&facts, "epoll"),
        };
        let rows = matched_rows(&analysis);
        assert_eq!(rows.len(), 1);
        let mut w = String::new();
        table(&mut w, &analysis, "matched load", &rows);
        assert!(
            w.contains("| tcp 128 B, 100 conns, 25/50/75% load | 1.25–1.75× ▲▲▲ | 1 |"),
            "{w}"
        );
    }
}
