//! The README's **Findings by point**, under the verdict table, written
//! from the statistics alone: one line per point with each backend's server
//! CPU per message and its interval, cheapest first, each label's verdict
//! against the reference in words (cheaper, costlier, "equivalent within
//! 10%", undecided, with "(time budget)" where the budget ended its
//! adaptive rounds), the row's limit and what is notable. The ratios and
//! their intervals are in the table above and the tables below, so a
//! message point's line does not repeat them. Throughput ranks
//! backends only on rows where every backend was server-limited.

use std::fmt::Write as _;

use super::plots::size_label;
use crate::analyse::adaptive::StopReason;
use crate::analyse::stats::{Band, MIN_VERDICT_COVERAGE, SATURATED_BUSY_FRACTION};
use crate::analyse::{points, Analysis, ConvStats, PeerStats, PointStats, Purpose};
use crate::plan::Peer;

/// A label as tables and findings show it: the tokio server is marked
/// `(reference)`, an implementation outside the project run for comparison.
pub fn shown(label: &str, peer: Peer) -> String {
    if peer == Peer::Tokio {
        format!("{label} (reference)")
    } else {
        label.to_string()
    }
}

/// `0.78× [0.74, 0.83], cheaper`, or `–` without a ratio.
pub fn ratio_cell(ratio: Option<points::Ratio>, lower: &'static str, higher: &'static str) -> String {
    ratio.map_or_else(
        || "–".to_string(),
        |r| {
            format!(
                "{:.2}× [{:.2}, {:.2}], {}",
                r.interval.mid,
                r.interval.lo,
                r.interval.hi,
                verdict_text(r, lower, higher)
            )
        },
    )
}

/// The verdict in words (`cheaper`, `equivalent within 10%`, ...), with
/// ` (time budget)` where the comparison's time budget ended the label's
/// adaptive rounds before the rule decided (see `analyse::adaptive::left_open`).
pub fn verdict_text(r: points::Ratio, lower: &'static str, higher: &'static str) -> String {
    let words = r.verdict.words(lower, higher);
    match r.stopped {
        Some(StopReason::TimeBudget) => format!("{words} (time budget)"),
        _ => words,
    }
}

/// The labels of `point` grouped by their server CPU verdict against the
/// reference, in words: `against epoll: cheaper: uring; equivalent within
/// 10%: tokio (reference); costlier: fork, threadpool`. Empty without ratios.
fn verdict_groups(point: &PointStats, reference: &str) -> String {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for p in points::ranked_by_server_cpu(point) {
        let Some(r) = p.ratio_server_cpu else { continue };
        let words = verdict_text(r, "cheaper", "costlier");
        let name = shown(&p.label, p.peer);
        match groups.iter_mut().find(|(w, _)| *w == words) {
            Some((_, names)) => names.push(name),
            None => groups.push((words, vec![name])),
        }
    }
    if groups.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = groups
        .iter()
        .map(|(words, names)| format!("{words}: {}", names.join(", ")))
        .collect();
    format!(" Against {reference}: {}.", parts.join("; "))
}

/// The levels of the intervals in `analysis`, e.g. "75% (3 runs)".
fn coverage_words(analysis: &Analysis) -> String {
    let mut seen: Vec<(usize, f64)> = Vec::new();
    for p in analysis.points.iter().flat_map(|p| &p.peers) {
        if let Some(s) = p.server_cpu_us_per_msg.or(p.msgs_per_s) {
            let level = s.level.unwrap_or(0.0);
            if !seen.iter().any(|&(n, _)| n == s.n) {
                seen.push((s.n, level));
            }
        }
    }
    seen.sort_by_key(|&(n, _)| n);
    seen.iter()
        .map(|&(n, level)| match n {
            1 => "a single value (1 run, no interval)".to_string(),
            _ => format!("{:.2}% with {n} runs", 100.0 * level),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The Findings section.
pub fn findings(w: &mut String, analysis: &Analysis, quick: bool) {
    let reference = &analysis.reference;
    let _ = writeln!(w, "## Findings by point\n");
    // Throughput is ranked on message lines only (a conversation line gives
    // connections/s), so the count is of those.
    let messages = analysis.points.iter().filter(|p| p.key.conn_msgs.is_none());
    let ranked = messages.clone().filter(|p| p.server_limited()).count();
    let message_points = messages.count();
    let conversations = analysis.points.len() - message_points;
    // A conversation line's figures are per connection, not per message.
    let per_conn = if conversations > 0 {
        " (per connection on the lines of a connection per conversation, `1 msg/connection` and the like: the \
         server's CPU over the conversations completed, and their ratios are of that)"
    } else {
        ""
    };
    let ratios = if super::verdict::columns(analysis).len() < 2 {
        "A single label ran, so there are no ratios.".to_string()
    } else {
        format!(
            "The verdict table above and the tables below give each ratio to **{reference}** with its interval; a \
             ratio is called a difference only when its interval excludes 1 and covers at least {:.2}%.",
            100.0 * MIN_VERDICT_COVERAGE
        )
    };
    let _ = writeln!(
        w,
        "Each figure is server CPU µs per message{per_conn}: the median of a backend's runs at the point, with the \
         order-statistic confidence interval for the median in brackets (coverage {}). {ratios} A ratio pairs the \
         runs of one repetition: the Hodges–Lehmann estimate of the per-repetition ratios with its signed-rank \
         interval; \"equivalent within {band}\" when the interval contains 1 and lies inside [{band_lo}, {band_hi}], \
         otherwise \"undecided\" or \"too few runs to tell\". The limit is the side whose cores were busy at least \
         {:.0}% of the measured window (`server`, `loadgen`, `both`, `neither`; `mixed` when backends differ); \
         throughput is ranked only where every backend was server-limited ({ranked} of {message_points} points \
         with long-lived connections).\n",
        coverage_words(analysis),
        100.0 * SATURATED_BUSY_FRACTION,
        band = Band::DEFAULT,
        band_lo = 1.0 - Band::DEFAULT.fraction(),
        band_hi = 1.0 + Band::DEFAULT.fraction(),
    );
    if quick {
        let _ = writeln!(
            w,
            "This is a `--quick` run: too short and too few runs for conclusions.\n"
        );
    }
    let peaks: Vec<&PointStats> = analysis
        .points
        .iter()
        .filter(|p| p.key.purpose == Purpose::Peak && p.key.conn_msgs.is_none())
        .collect();
    let conversations: Vec<&PointStats> = analysis.points.iter().filter(|p| p.key.conn_msgs.is_some()).collect();
    if peaks.is_empty() && conversations.is_empty() {
        let _ = writeln!(w, "No closed-loop run succeeded, so there is nothing to compare.\n");
    }
    for point in peaks {
        peak_line(w, point, analysis);
    }
    for point in analysis
        .points
        .iter()
        .filter(|p| matches!(p.key.purpose, Purpose::MatchedLoad { .. }) && p.key.conn_msgs.is_none())
    {
        matched_line(w, point, reference);
    }
    for point in conversations {
        conversation_line(w, point, reference);
    }
    let _ = writeln!(w);
}

/// A conversation point in words: ranked by server CPU per connection,
/// each ratio to the reference, connections/s, and the switches that explain
/// the cost.
fn conversation_line(w: &mut String, point: &PointStats, reference: &str) {
    let load = match point.key.purpose {
        Purpose::MatchedLoad { fraction } => format!(
            "matched load, {:.0}% of the lowest peak ({} conversations/s offered)",
            100.0 * fraction,
            point.offered_per_s.map_or("?".into(), |r| format!("{r:.0}"))
        ),
        _ => "closed loop".into(),
    };
    let msgs = point.key.conn_msgs.unwrap_or(0);
    let mut line = format!(
        "- **{}, {msgs} msg{}/connection, {} at once, {load}** (limit: {}).",
        point.key.transport,
        if msgs == 1 { "" } else { "s" },
        point.key.conns,
        point.limit.as_str()
    );
    let mut ranked: Vec<(&PeerStats, &ConvStats)> =
        point.peers.iter().filter_map(|p| Some((p, p.conv.as_ref()?))).collect();
    let cpu = |c: &ConvStats| c.server_cpu_us_per_conn.map_or(f64::INFINITY, |s| s.mid);
    ranked.sort_by(|a, b| cpu(a.1).total_cmp(&cpu(b.1)));
    let by_cpu: Vec<String> = ranked
        .iter()
        .filter_map(|(p, c)| {
            let vol = c.switches_per_conn.voluntary.map_or(String::new(), |v| {
                let bound = if c.switches_per_conn.lower_bound { "≥ " } else { "" };
                format!(", {bound}{:.1} voluntary switches", v.mid)
            });
            Some(format!(
                "{} {}{vol}",
                shown(&p.label, p.peer),
                c.server_cpu_us_per_conn?.text(1)
            ))
        })
        .collect();
    if !by_cpu.is_empty() {
        line += &format!(" Server CPU µs per connection, cheapest first: {}.", by_cpu.join("; "));
    }
    let ratios: Vec<String> = ranked
        .iter()
        .filter_map(|(p, c)| {
            let words = ratio_words(c.ratio_server_cpu, reference, "cheaper", "costlier")?;
            Some(format!("{} {words}", shown(&p.label, p.peer)))
        })
        .collect();
    if !ratios.is_empty() {
        line += &format!(" {}.", ratios.join("; "));
    }
    let rates: Vec<String> = ranked
        .iter()
        .filter_map(|(p, c)| Some(format!("{} {:.0}", shown(&p.label, p.peer), c.conns_per_s?.mid)))
        .collect();
    if !rates.is_empty() {
        line += &format!(" Connections/s: {}.", rates.join(", "));
    }
    let _ = writeln!(w, "{line}");
}

/// `tcp, 128 B, 100 connections` (`1 connection`).
fn point_name(p: &PointStats) -> String {
    let noun = if p.key.conns == 1 { "connection" } else { "connections" };
    format!(
        "{}, {}, {} {noun}",
        p.key.transport,
        size_label(p.key.size_bytes),
        p.key.conns
    )
}

/// A ratio to the reference in words: `0.78× epoll [0.74, 0.83], cheaper`.
fn ratio_words(
    ratio: Option<points::Ratio>,
    reference: &str,
    lower: &'static str,
    higher: &'static str,
) -> Option<String> {
    let r = ratio?;
    Some(format!(
        "{:.2}× {reference} [{:.2}, {:.2}], {}",
        r.interval.mid,
        r.interval.lo,
        r.interval.hi,
        verdict_text(r, lower, higher)
    ))
}

/// The ranking by server CPU per message with each median's interval: the
/// part every finding line shares.
fn cpu_words(point: &PointStats) -> String {
    let by_cpu: Vec<String> = points::ranked_by_server_cpu(point)
        .into_iter()
        .filter_map(|p| {
            Some(format!(
                "{} {}",
                shown(&p.label, p.peer),
                p.server_cpu_us_per_msg?.text(2)
            ))
        })
        .collect();
    if by_cpu.is_empty() {
        return String::new();
    }
    format!(" Server CPU µs/msg, cheapest first: {}.", by_cpu.join("; "))
}

fn peak_line(w: &mut String, point: &PointStats, analysis: &Analysis) {
    let reference = analysis.reference.as_str();
    let mut line = format!("- **{}** (limit: {}).", point_name(point), point.limit.as_str());
    line += &cpu_words(point);
    line += &verdict_groups(point, reference);
    line += &throughput_words(point, reference);
    let notable = notable(point, analysis);
    if !notable.is_empty() {
        line += &format!(" Notable: {}.", notable.join("; "));
    }
    let _ = writeln!(w, "{line}");
}

/// The throughput ranking where every backend was server-limited, else nothing.
fn throughput_words(point: &PointStats, reference: &str) -> String {
    if !point.server_limited() {
        return String::new();
    }
    let ranked: Vec<String> = points::ranked_by_throughput(point)
        .into_iter()
        .filter_map(|p| {
            let s = p.msgs_per_s?;
            let ratio = ratio_words(p.ratio_msgs_per_s, reference, "slower", "faster")
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            Some(format!("{} {} msgs/s{ratio}", shown(&p.label, p.peer), s.text(0)))
        })
        .collect();
    format!(" Throughput, fastest first: {}.", ranked.join("; "))
}

/// Errors, scale-downs, disturbed runs and matched-load runs that fell short at this point.
fn notable(point: &PointStats, analysis: &Analysis) -> Vec<String> {
    let mut out = Vec::new();
    for p in &point.peers {
        if p.scaled_down(&point.key) {
            out.push(format!("{} scaled down to {} connections", p.label, p.conns));
        }
        if p.errors > 0 {
            out.push(format!("{} {} errors over {} runs", p.label, p.errors, p.runs));
        }
        if !p.disturbed.is_empty() {
            out.push(format!("{} disturbed: {}", p.label, p.disturbed.join(", ")));
        }
        if p.msgs_per_s.is_some() && p.server_cpu_us_per_msg.is_none() {
            out.push(format!("{} has no server CPU figure", p.label));
        }
    }
    let short: Vec<&String> = analysis
        .points
        .iter()
        .filter(|q| {
            matches!(q.key.purpose, Purpose::MatchedLoad { .. })
                && q.key.transport == point.key.transport
                && q.key.size_bytes == point.key.size_bytes
                && q.key.conns == point.key.conns
        })
        .flat_map(|q| q.peers.iter().flat_map(|p| &p.fell_short))
        .collect();
    if !short.is_empty() {
        out.push(format!(
            "matched-load runs that fell short of their rate (not used): {}",
            short.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    out
}

fn matched_line(w: &mut String, point: &PointStats, reference: &str) {
    let Purpose::MatchedLoad { fraction } = point.key.purpose else {
        return;
    };
    let rate = point
        .offered_per_s
        .map(|r| format!(", {r:.0} msgs/s"))
        .unwrap_or_default();
    let mut line = format!(
        "- **{} at matched load** ({:.0}% of the lowest peak{rate}; limit: {}).",
        point_name(point),
        100.0 * fraction,
        point.limit.as_str()
    );
    line += &cpu_words(point);
    line += &verdict_groups(point, reference);
    let short: Vec<&str> = point
        .peers
        .iter()
        .flat_map(|p| &p.fell_short)
        .map(String::as_str)
        .collect();
    if !short.is_empty() {
        line += &format!(" Fell short of the offered rate, not used: {}.", short.join(", "));
    }
    let _ = writeln!(w, "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyse::points::point_stats;
    use crate::analyse::points::tests::fact;
    use sockbench::server::BackendKind;

    const EPOLL: Peer = Peer::Backend(BackendKind::Epoll);
    const URING: Peer = Peer::Backend(BackendKind::Uring);

    fn text(points: Vec<PointStats>) -> String {
        let mut w = String::new();
        let analysis = Analysis {
            reference: "epoll".into(),
            points,
        };
        findings(&mut w, &analysis, false);
        w
    }

    #[test]
    fn conversation_points_are_ranked_by_server_cpu_per_connection() {
        let mut facts = Vec::new();
        for rep in 1..=5 {
            for (label, peer, per_conn) in [("epoll", EPOLL, 30.0), ("uring", URING, 26.0)] {
                let mut f = fact(label, peer, rep, per_conn / 2.0, 20_000.0, (0.5, 0.99));
                f.key.conn_msgs = Some(1);
                f.conv = Some(crate::analyse::ConvFacts {
                    conns_per_s: 20_000.0,
                    server_cpu_us_per_conn: Some(per_conn * (1.0 + 0.01 * rep as f64)),
                    loadgen_cpu_us_per_conn: Some(45.0),
                    p50_us: 80.0,
                    p99_us: 200.0,
                    failed: 0,
                    switches: crate::analyse::SwitchFacts {
                        voluntary: Some(2.0),
                        ..Default::default()
                    },
                });
                facts.push(f);
            }
        }
        let w = text(point_stats(&facts, "epoll"));
        let line = w
            .lines()
            .find(|l| l.starts_with("- **") && l.contains("1 msg/connection"))
            .expect("a conversation line");
        assert!(
            line.starts_with("- **tcp, 1 msg/connection, 100 at once, closed loop** (limit: loadgen)."),
            "{line}"
        );
        assert!(
            line.contains("cheapest first: uring 26.") && line.contains("2.0 voluntary switches"),
            "{line}"
        );
        assert!(line.contains("uring 0.87× epoll ["), "{line}");
        // The opening says which figure such a line holds, and counts only
        // message points as rankable by throughput.
        assert!(
            w.contains(
                "Each figure is server CPU µs per message (per connection on the lines of a connection per \
                        conversation, `1 msg/connection` and the like"
            ),
            "{w}"
        );
        assert!(w.contains("(0 of 0 points with long-lived connections)"), "{w}");
        assert!(!w.contains("No closed-loop run succeeded"), "{w}");
    }

    /// Issue 27: a message point's line names each label's verdict in
    /// words, "equivalent within 10%" among them, and "(time budget)" where
    /// the budget ended the label's rounds.
    #[test]
    fn message_lines_say_equivalent_within_the_band() {
        let fork = Peer::Backend(BackendKind::Fork);
        let mut facts = Vec::new();
        for rep in 1..=5 {
            let wobble = 1.0 + 0.01 * (rep as f64 - 3.0);
            for (label, peer, cpu) in [
                ("epoll", EPOLL, 5.0),
                ("uring", URING, 5.0 * wobble),
                ("fork", fork, 7.5),
            ] {
                let mut f = fact(label, peer, rep, cpu, 20_000.0, (0.5, 0.4));
                f.key.purpose = Purpose::MatchedLoad { fraction: 0.5 };
                f.offered_per_s = Some(20_000.0);
                facts.push(f);
            }
        }
        let mut points = point_stats(&facts, "epoll");
        let w = text(points.clone());
        let line = w
            .lines()
            .find(|l| l.contains("at matched load"))
            .expect("a matched line");
        assert!(
            line.contains(" Against epoll: equivalent within 10%: uring; costlier: fork."),
            "{line}"
        );
        let uring = points[0].peers.iter_mut().find(|p| p.label == "uring").unwrap();
        uring.ratio_server_cpu.as_mut().unwrap().stopped = Some(StopReason::TimeBudget);
        let w = text(points);
        assert!(w.contains("equivalent within 10% (time budget): uring"), "{w}");
    }

    #[test]
    fn throughput_ranks_only_server_limited_rows() {
        let mut server = Vec::new();
        let mut loadgen = Vec::new();
        for rep in 1..=5 {
            let d = 1.0 + rep as f64 / 10.0;
            server.push(fact("epoll", EPOLL, rep, 5.0 * d, 100_000.0 / d, (0.99, 0.5)));
            server.push(fact("uring", URING, rep, 4.0 * d, 125_000.0 / d, (0.99, 0.5)));
            loadgen.push(fact("epoll", EPOLL, rep, 5.0 * d, 100_000.0 / d, (0.8, 0.99)));
            loadgen.push(fact("uring", URING, rep, 4.0 * d, 125_000.0 / d, (0.7, 0.99)));
        }
        let w = text(point_stats(&server, "epoll"));
        assert!(w.contains("(limit: server)"), "{w}");
        assert!(w.contains("cheapest first: uring 5.20"), "{w}");
        assert!(w.contains("Throughput, fastest first: uring"), "{w}");
        assert!(w.contains("(1.25× epoll [1.25, 1.25], faster)"), "{w}");
        assert!(w.contains("93.75% with 5 runs"), "{w}");

        let w = text(point_stats(&loadgen, "epoll"));
        assert!(w.contains("(limit: loadgen)"), "{w}");
        assert!(w.contains("cheapest first: uring 5.20"), "{w}");
        assert!(!w.contains("fastest first"), "{w}");
    }

    #[test]
    fn matched_load_lines_name_the_rate_and_short_runs() {
        let mut facts = Vec::new();
        for rep in 1..=5 {
            for (label, peer, cpu) in [("epoll", EPOLL, 5.0), ("uring", URING, 5.0)] {
                let mut f = fact(label, peer, rep, cpu * (1.0 + rep as f64 / 100.0), 20_000.0, (0.5, 0.4));
                f.key.purpose = Purpose::MatchedLoad { fraction: 0.25 };
                f.offered_per_s = Some(20_000.0);
                if label == "uring" && rep == 5 {
                    f.msgs_per_s = 15_000.0;
                }
                facts.push(f);
            }
        }
        let w = text(point_stats(&facts, "epoll"));
        assert!(
            w.contains(
                "**tcp, 128 B, 100 connections at matched load** (25% of the lowest peak, 20000 msgs/s; limit: neither)"
            ),
            "{w}"
        );
        assert!(w.contains("Fell short of the offered rate, not used: uring-r5"), "{w}");
    }
}
