//! The table in the spirit of Stevens' *UNIX Network Programming* (3rd
//! ed.), Fig. 30.1: server CPU per connection, each design, under a client
//! that connects, sends one request, reads the reply and closes (issue 24).
//! One table per transport, a row per design, from the conversation points
//! with one message per connection: the main columns at 100 concurrent
//! conversations in closed loop (server CPU per connection with its
//! interval, the ratio to the reference with its interval and verdict,
//! connections/s, and the server's context switches and, when counted,
//! syscalls per connection), then the same CPU figure in short at the other
//! concurrencies and at matched load.

use std::fmt::Write as _;

use super::tables::fmt_count;
use super::*;
use crate::render::findings_text::{shown, verdict_text};
use crate::render::verdict::Mark;

/// The concurrency of the main columns (UNP's clients ran many at once).
const MAIN_CONNS: u64 = 100;

pub(super) fn fig30(w: &mut String, r: &Report) {
    let one: Vec<&PointStats> = r
        .analysis
        .points
        .iter()
        .filter(|p| p.key.conn_msgs == Some(1) && p.peers.iter().any(|s| s.conv.is_some()))
        .collect();
    if one.is_empty() {
        return;
    }
    let mut transports: Vec<Transport> = Vec::new();
    for p in &one {
        if !transports.contains(&p.key.transport) {
            transports.push(p.key.transport);
        }
    }
    let reference = &r.analysis.reference;
    let _ = writeln!(w, "## Server CPU per connection, each design (after UNP Fig. 30.1)\n");
    let _ = writeln!(
        w,
        "Stevens compared server designs by the server's CPU time per connection under clients that connect, send \
         one request, read the reply and close (UNIX Network Programming, 3rd ed., Fig. 30.1). Here each client \
         does that with 128 B (`loadgen --conn-msgs 1`), {MAIN_CONNS} conversations at once in closed loop; the \
         server's CPU over its window is divided by the conversations completed in it. Each figure is the median \
         of the design's runs with its interval; `× {reference}` is the paired ratio with its interval and \
         verdict. Context switches are the server tree's per connection, counted over the tasks alive at the \
         window's end: `≥` marks a lower bound, where tasks exited inside the window. That is fork's children, a \
         process per conversation, so fork's switch figures cover little more than its accepting parent (a `≥ \
         0.00` is not none but not measured). The last columns give server CPU µs per connection at the other concurrencies and at \
         matched load (the same rate of new conversations offered to every design), each with its ratio to \
         {reference} and its mark (▼ cheaper, ▲ costlier, = equivalent, ~ undecided, ? too few runs). On \
         loopback the connecting side carries most of the handshake, so loadgen, not the server, usually sets \
         the pace: compare designs by CPU per connection, not by connections/s.\n"
    );
    for t in transports {
        let here: Vec<&PointStats> = one.iter().copied().filter(|p| p.key.transport == t).collect();
        let closed = |conns: u64| {
            here.iter()
                .copied()
                .find(|p| p.key.purpose == Purpose::Peak && p.key.conns == conns)
        };
        let Some(main) = closed(MAIN_CONNS).or_else(|| here.iter().copied().find(|p| p.key.purpose == Purpose::Peak))
        else {
            continue;
        };
        let mut others: Vec<(String, &PointStats)> = Vec::new();
        for p in &here {
            if std::ptr::eq(*p, main) {
                continue;
            }
            let name = match p.key.purpose {
                Purpose::MatchedLoad { fraction } => format!(
                    "matched load {:.0}%, {} at once ({}/s)",
                    100.0 * fraction,
                    p.key.conns,
                    opt(p.offered_per_s, |v| format!("{v:.0}"))
                ),
                _ => format!("{} at once", p.key.conns),
            };
            others.push((name, p));
        }
        others.sort_by_key(|(_, p)| (matches!(p.key.purpose, Purpose::MatchedLoad { .. }), p.key.conns));
        let syscalls = main
            .peers
            .iter()
            .any(|p| p.conv.as_ref().is_some_and(|c| c.switches_per_conn.syscalls.is_some()));
        let _ = writeln!(
            w,
            "### {t}, one message per connection, {} at once, closed loop (limit: {})\n",
            main.key.conns,
            main.limit.as_str()
        );
        let mut head = format!(
            "| design | server CPU µs/conn | × {reference} server CPU | conns/s | server vol. cs/conn | server invol. cs/conn |"
        );
        let mut rule = "|---|--:|--:|--:|--:|--:|".to_string();
        if syscalls {
            head += " server syscalls/conn |";
            rule += "--:|";
        }
        for (name, _) in &others {
            head += &format!(" {name}, µs/conn |");
            rule += "--:|";
        }
        let _ = writeln!(w, "{head}\n{rule}");
        for p in &main.peers {
            let Some(c) = &p.conv else { continue };
            let s = |v: Option<Summary>, d: usize| v.map_or_else(|| "–".to_string(), |s| s.text(d));
            let bound = if c.switches_per_conn.lower_bound { "≥ " } else { "" };
            let count = |v: Option<Summary>, bound: &str| {
                v.map_or_else(|| "–".to_string(), |s| format!("{bound}{}", fmt_count(s.mid)))
            };
            let ratio = c.ratio_server_cpu.map_or_else(
                || "–".to_string(),
                |r| {
                    format!(
                        "{:.2}× [{:.2}, {:.2}], {}",
                        r.interval.mid,
                        r.interval.lo,
                        r.interval.hi,
                        verdict_text(r, "cheaper", "costlier")
                    )
                },
            );
            let mut row = format!(
                "| {} | {} | {ratio} | {} | {} | {} |",
                shown(&p.label, p.peer),
                s(c.server_cpu_us_per_conn, 1),
                opt(c.conns_per_s.map(|s| s.mid), |v| format!("{v:.0}")),
                count(c.switches_per_conn.voluntary, bound),
                count(c.switches_per_conn.involuntary, bound),
            );
            if syscalls {
                row += &format!(" {} |", count(c.switches_per_conn.syscalls, ""));
            }
            for (_, other) in &others {
                row += &format!(" {} |", short_cell(other.peer(&p.label)));
            }
            let _ = writeln!(w, "{row}");
        }
        let _ = writeln!(w);
    }
}

/// `231 (7.62× ▲)`, `29.8` for the reference, `–` where it did not run.
fn short_cell(p: Option<&PeerStats>) -> String {
    let Some(c) = p.and_then(|p| p.conv.as_ref()) else {
        return "–".into();
    };
    let Some(cpu) = c.server_cpu_us_per_conn else {
        return "–".into();
    };
    let value = if cpu.mid >= 100.0 {
        format!("{:.0}", cpu.mid)
    } else {
        format!("{:.1}", cpu.mid)
    };
    match c.ratio_server_cpu {
        Some(r) => format!("{value} ({:.2}× {})", r.interval.mid, Mark::of(r.verdict).symbol()),
        None => value,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::record::{AdaptiveMethod, Manifest};

    /// The committed conversation run (read, never written) renders one
    /// table per transport with a row per design, CPU per connection with
    /// its interval, the ratio with its verdict, the other concurrencies
    /// and matched load; as an adaptive run that the budget stopped at its
    /// first round, every ratio says "(time budget)" and the Repetitions
    /// section gives each point's count and reason.
    #[test]
    fn the_fig_30_1_table_of_the_committed_conversation_run() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../results/conversations");
        if !dir.join(crate::record::MANIFEST).is_file() {
            eprintln!("skipped: no committed results/conversations");
            return;
        }
        let mut manifest = Manifest::load(&dir).unwrap();
        let runs = crate::analyse::load_runs(&manifest, &dir);
        let text = super::super::render(&manifest, &runs, &[]);
        let start = text
            .find("## Server CPU per connection, each design")
            .expect("the section");
        let section = &text[start..text[start..].find("## Findings by point").unwrap() + start];
        eprintln!("{section}");
        assert!(section.contains("### tcp, one message per connection, 100 at once, closed loop"));
        assert!(section.contains("### unix, one message per connection, 100 at once, closed loop"));
        for design in [
            "| fork |",
            "| threadpool |",
            "| epoll |",
            "| uring |",
            "| tokio (reference) |",
        ] {
            assert_eq!(section.matches(design).count(), 2, "{design}");
        }
        let fork = section.lines().find(|l| l.starts_with("| fork |")).unwrap();
        // CPU µs/conn with its interval, the ratio with its interval and verdict.
        assert!(
            fork.contains(" [") && fork.contains("× [") && fork.contains(", costlier |"),
            "{fork}"
        );
        assert!(section.contains("| 1 at once, µs/conn | 1000 at once, µs/conn | matched load 50%, 100 at once ("));
        assert!(
            !section.contains("syscalls/conn"),
            "the committed run counted no syscalls"
        );
        assert!(
            !text.contains("## Repetitions"),
            "a fixed design has no adaptive account"
        );

        manifest.method.adaptive = Some(AdaptiveMethod {
            decide_at_permille: 100,
            max_repetitions: 12,
            budget_s: Some(2700.0),
            ended_by_budget: true,
            matched_load_only: false,
        });
        let text = super::super::render(&manifest, &runs, &[]);
        let fork = text.lines().find(|l| l.starts_with("| fork |")).unwrap();
        assert!(fork.contains(", costlier (time budget) |"), "{fork}");
        let reps = &text[text
            .find("## Repetitions: how many each point took")
            .expect("the section")..];
        assert!(reps.contains("Of 80 label-point verdicts: 80 time budget. Points took 5 to 5 repetitions."));
        assert!(reps.contains("| tcp 128 B, 100 conns, 1 msg/conn, closed loop | 5 | time budget |"));
        assert!(
            text.contains("equivalent within 10% (time budget)"),
            "a fixed-design equivalence stays"
        );
    }
}
