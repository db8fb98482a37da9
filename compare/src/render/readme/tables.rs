//! The tables of the generated README: closed loop, matched load,
//! conversations, loadgen's cost against the server's and open-loop
//! latency. Each reads the same [`Report`](super::Report) as the sections
//! in `mod.rs`.

use std::fmt::Write as _;

use super::*;

/// A transport and message size: one closed-loop table.
#[derive(Clone, Copy, PartialEq)]
pub(super) struct TableKey {
    transport: Transport,
    size_bytes: u64,
}

pub(super) fn closed_loop(w: &mut String, r: &Report) {
    let peak = |p: &&PointStats| p.key.purpose == Purpose::Peak && p.key.conn_msgs.is_none();
    let mut keys: Vec<TableKey> = Vec::new();
    for p in r.analysis.points.iter().filter(peak) {
        let k = TableKey {
            transport: p.key.transport,
            size_bytes: p.key.size_bytes,
        };
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    if keys.is_empty() {
        return;
    }
    let _ = writeln!(w, "## Closed loop\n");
    let _ = writeln!(
        w,
        "Each cell is the median of the label's runs at the point with its order-statistic interval in brackets \
         (see \"How the figures are measured\"); `× {0}` is the median of the per-repetition ratios to {0} with its \
         interval, and the verdict. `limit` is the row's bottleneck; `busy` is the median share of each side's cores \
         in use over its measured window.\n",
        r.analysis.reference
    );
    for key in keys {
        let _ = writeln!(w, "### {}, {}\n", key.transport, size_label(key.size_bytes));
        let _ = writeln!(
            w,
            "| backend | conns | runs | limit | msgs/s | × {0} msgs/s | server CPU µs/msg | × {0} server CPU | {SWITCH_HEADER} | loadgen CPU µs/msg | p99 µs | server busy | loadgen busy | server peak RSS MiB | errors |",
            r.analysis.reference
        );
        let _ = writeln!(
            w,
            "|---|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
        );
        let points = r
            .analysis
            .points
            .iter()
            .filter(peak)
            .filter(|p| p.key.transport == key.transport && p.key.size_bytes == key.size_bytes);
        for point in points {
            for peer in &point.peers {
                closed_loop_row(w, point, peer);
            }
        }
        let _ = writeln!(w);
    }
}

pub(super) fn closed_loop_row(w: &mut String, point: &PointStats, p: &PeerStats) {
    use crate::render::findings_text::{ratio_cell, shown};
    let conns = if p.scaled_down(&point.key) {
        format!("{} (of {})", p.conns, point.key.conns)
    } else {
        p.conns.to_string()
    };
    let s = |v: Option<Summary>, d: usize| v.map_or_else(|| "–".to_string(), |s| s.text(d));
    let pct = |v: Option<Summary>| v.map_or_else(|| "–".to_string(), |s| format!("{:.0}%", 100.0 * s.mid));
    let _ = writeln!(
        w,
        "| {} | {conns} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        shown(&p.label, p.peer),
        p.runs,
        p.bottleneck.map_or("–", |b| b.as_str()),
        s(p.msgs_per_s, 0),
        ratio_cell(p.ratio_msgs_per_s, "slower", "faster"),
        s(p.server_cpu_us_per_msg, 2),
        ratio_cell(p.ratio_server_cpu, "cheaper", "costlier"),
        switch_cells(&p.switches_per_msg),
        s(p.loadgen_cpu_us_per_msg, 2),
        s(p.p99_us, 0),
        pct(p.server_busy),
        pct(p.loadgen_busy),
        p.server_peak_rss_kib
            .map_or_else(|| "–".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
        p.errors
    );
}

/// The three columns of the server's context switches and syscalls per
/// unit (message or connection), beside its CPU.
const SWITCH_HEADER: &str = "server vol. cs | server invol. cs | server syscalls";

/// [`SWITCH_HEADER`]'s cells: medians, `≥` where a task exited inside a
/// window (fork's children in conversation runs), `–` where not measured.
pub(super) fn switch_cells(sw: &SwitchStats) -> String {
    let bound = if sw.lower_bound { "≥ " } else { "" };
    let cell =
        |v: Option<Summary>, bound: &str| v.map_or_else(|| "–".to_string(), |s| format!("{bound}{}", fmt_count(s.mid)));
    format!(
        "{} | {} | {}",
        cell(sw.voluntary, bound),
        cell(sw.involuntary, bound),
        cell(sw.syscalls, "")
    )
}

/// A per-unit count: two significant decimals below 10, whole above.
pub(super) fn fmt_count(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.0}")
    }
}

/// The conversation axis: one table per transport, a row per label at
/// each messages-per-connection, concurrency and purpose (closed loop, then
/// matched load).
pub(super) fn conversations(w: &mut String, r: &Report) {
    use crate::render::findings_text::{ratio_cell, shown};
    let points: Vec<&PointStats> = r.analysis.points.iter().filter(|p| p.key.conn_msgs.is_some()).collect();
    if points.is_empty() {
        return;
    }
    let _ = writeln!(w, "## Conversations: a connection per conversation\n");
    let _ = writeln!(
        w,
        "Each client connects, exchanges `msgs/conn` checked echoes of 128 B, closes and connects again \
         (`loadgen --conn-msgs`); `conns` conversations run at once. `load` is `closed` (as fast as the pair \
         can) or the matched-load share: the same rate of new conversations offered to every backend, a share of \
         the lowest closed-loop rate. Per connection: the server tree's CPU over its window divided by the \
         conversations completed in it, loadgen's own CPU per conversation, and the server's context switches \
         (and syscalls when counted) per connection. `conv p50/p99` is from `connect` to the last echo checked. \
         On loopback the connecting side carries most of the handshake, so `limit` is usually loadgen: compare \
         servers by their CPU per connection, not by connections/s.\n"
    );
    let mut transports: Vec<Transport> = Vec::new();
    for p in &points {
        if !transports.contains(&p.key.transport) {
            transports.push(p.key.transport);
        }
    }
    for t in transports {
        let _ = writeln!(w, "### {t}\n");
        let _ = writeln!(
            w,
            "| backend | msgs/conn | conns | load | runs | limit | conns/s | server CPU µs/conn | × {} server CPU | {SWITCH_HEADER} | loadgen CPU µs/conn | conv p50 µs | conv p99 µs | failed |",
            r.analysis.reference
        );
        let _ = writeln!(w, "|---|--:|--:|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        for point in points.iter().filter(|p| p.key.transport == t) {
            let load = match point.key.purpose {
                Purpose::MatchedLoad { fraction } => format!("{:.0}%", 100.0 * fraction),
                _ => "closed".into(),
            };
            for p in &point.peers {
                let Some(c) = &p.conv else { continue };
                let s = |v: Option<Summary>, d: usize| v.map_or_else(|| "–".to_string(), |s| s.text(d));
                let _ = writeln!(
                    w,
                    "| {} | {} | {} | {load} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    shown(&p.label, p.peer),
                    point.key.conn_msgs.unwrap_or(0),
                    point.key.conns,
                    p.runs,
                    p.bottleneck.map_or("–", |b| b.as_str()),
                    s(c.conns_per_s, 0),
                    s(c.server_cpu_us_per_conn, 1),
                    ratio_cell(c.ratio_server_cpu, "cheaper", "costlier"),
                    switch_cells(&c.switches_per_conn),
                    s(c.loadgen_cpu_us_per_conn, 1),
                    s(c.p50_us, 0),
                    s(c.p99_us, 0),
                    c.failed
                );
            }
        }
        let _ = writeln!(w);
    }
}

/// Server CPU per message at each offered rate of the matched-load sweep,
/// one table per transport, size and connection count.
pub(super) fn matched_load(w: &mut String, r: &Report) {
    use crate::render::findings_text::{ratio_cell, shown};
    let sweep: Vec<&PointStats> = r
        .analysis
        .points
        .iter()
        .filter(|p| matches!(p.key.purpose, Purpose::MatchedLoad { .. }) && p.key.conn_msgs.is_none())
        .collect();
    let _ = writeln!(w, "## Cost at matched load\n");
    if sweep.is_empty() {
        let _ = writeln!(
            w,
            "This comparison has no matched-load runs (open-loop runs of every backend at the same fractions of the \
             lowest closed-loop peak).\n"
        );
        return;
    }
    let _ = writeln!(
        w,
        "Every backend ran open loop at the same offered rates: fractions of the lowest closed-loop peak at the \
         point. The figure is server CPU µs per message (median [interval]) with its ratio to {}: how many cores a \
         rate costs. A run that delivered less than {:.0}% of its offered rate fell behind; it is listed and not \
         used.\n",
        r.analysis.reference,
        100.0 * REACHED_RATE_FRACTION
    );
    let mut groups: Vec<(Transport, u64, u64)> = Vec::new();
    for p in &sweep {
        let g = (p.key.transport, p.key.size_bytes, p.key.conns);
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    for (transport, size, conns) in groups {
        let _ = writeln!(w, "### {transport}, {}, {conns} connections\n", size_label(size));
        let _ = writeln!(
            w,
            "| backend | offered msgs/s | share of peak | runs | limit | server CPU µs/msg | × {} server CPU | {SWITCH_HEADER} | achieved msgs/s | p99 µs | fell short |",
            r.analysis.reference
        );
        let _ = writeln!(w, "|---|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|---|");
        let here = sweep
            .iter()
            .filter(|p| p.key.transport == transport && p.key.size_bytes == size && p.key.conns == conns);
        for point in here {
            let fraction = match point.key.purpose {
                Purpose::MatchedLoad { fraction } => format!("{:.0}%", 100.0 * fraction),
                _ => "–".into(),
            };
            for p in &point.peers {
                let s = |v: Option<Summary>, d: usize| v.map_or_else(|| "–".to_string(), |s| s.text(d));
                let _ = writeln!(
                    w,
                    "| {} | {} | {fraction} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    shown(&p.label, p.peer),
                    opt(point.offered_per_s, |v| format!("{v:.0}")),
                    p.runs,
                    p.bottleneck.map_or("–", |b| b.as_str()),
                    s(p.server_cpu_us_per_msg, 2),
                    ratio_cell(p.ratio_server_cpu, "cheaper", "costlier"),
                    switch_cells(&p.switches_per_msg),
                    s(p.msgs_per_s, 0),
                    s(p.p99_us, 0),
                    if p.fell_short.is_empty() {
                        "–".to_string()
                    } else {
                        p.fell_short.join(", ")
                    }
                );
            }
        }
        let _ = writeln!(w);
    }
}

/// loadgen's CPU per message against each server's, at every closed-loop
/// point of the stream transports: a load generator is only a fair judge
/// where it is the cheaper side (issue 16's yardstick: at most the best
/// server's).
pub(super) fn loadgen_cost(w: &mut String, r: &Report) {
    use crate::render::findings_text::shown;
    let streams: Vec<&PointStats> = r
        .analysis
        .points
        .iter()
        .filter(|p| p.key.purpose == Purpose::Peak && p.key.transport.is_stream())
        .collect();
    if streams.is_empty() {
        return;
    }
    let _ = writeln!(w, "## loadgen's cost against the server's\n");
    let _ = writeln!(
        w,
        "loadgen's CPU µs per message over the server's, each run with itself (median of the per-run ratios \
         [interval]). On loopback each side's `send` runs the other side's receive in the kernel, so parity with \
         the cheapest server is the floor; \"cheaper\" means loadgen cost less than that server, with the interval \
         below 1.\n"
    );
    // Every label in the order the points list them (backends first, then
    // the reference implementation), with its display name.
    let mut labels: Vec<(String, String)> = Vec::new();
    for p in streams.iter().flat_map(|p| &p.peers) {
        if !labels.iter().any(|(l, _)| *l == p.label) {
            labels.push((p.label.clone(), shown(&p.label, p.peer)));
        }
    }
    ratio_table(
        w,
        &labels,
        &streams,
        |s| s.loadgen_over_server_cpu,
        |p| {
            let noun = if p.key.conns == 1 { "connection" } else { "connections" };
            format!(
                "{}, {}, {} {noun}",
                p.key.transport,
                size_label(p.key.size_bytes),
                p.key.conns
            )
        },
    );
    open_over_closed(w, r, &labels);
}

/// loadgen's CPU per message in open loop (each matched load) over its own
/// in closed loop at the same point and against the same server.
pub(super) fn open_over_closed(w: &mut String, r: &Report, labels: &[(String, String)]) {
    let open: Vec<&PointStats> = r
        .analysis
        .points
        .iter()
        .filter(|p| p.key.transport.is_stream() && p.peers.iter().any(|s| s.loadgen_open_over_closed.is_some()))
        .collect();
    if open.is_empty() {
        return;
    }
    let _ = writeln!(
        w,
        "loadgen's CPU µs per message in open loop, at each matched load (a share of the lowest closed-loop peak \
         at the point), over its own in closed loop, against the same server at the same point, paired by \
         repetition [interval]. Below saturation each message may cost a wake-up on either \
         side that a closed loop, always busy, does not pay.\n"
    );
    ratio_table(
        w,
        labels,
        &open,
        |s| s.loadgen_open_over_closed,
        |p| {
            let load = match p.key.purpose {
                Purpose::MatchedLoad { fraction } => format!(", {:.0}% load", fraction * 100.0),
                _ => String::new(),
            };
            format!(
                "{}, {}, {} connections{load}",
                p.key.transport,
                size_label(p.key.size_bytes),
                p.key.conns
            )
        },
    );
}

/// A table with a row per point (named by `row`) and a column per label, each
/// cell the label's `ratio` at that point ("–" where it did not run there).
pub(super) fn ratio_table(
    w: &mut String,
    labels: &[(String, String)],
    points: &[&PointStats],
    ratio: fn(&PeerStats) -> Option<analyse::points::Ratio>,
    row: impl Fn(&PointStats) -> String,
) {
    use crate::render::findings_text::ratio_cell;
    let names: Vec<&str> = labels.iter().map(|(_, n)| n.as_str()).collect();
    let _ = writeln!(w, "| point | {} |", names.join(" | "));
    let _ = writeln!(w, "|---|{}", "--:|".repeat(labels.len()));
    for p in points {
        let cells: Vec<String> = labels
            .iter()
            .map(|(l, _)| {
                p.peer(l)
                    .map_or("–".to_string(), |s| ratio_cell(ratio(s), "cheaper", "costlier"))
            })
            .collect();
        let _ = writeln!(w, "| {} | {} |", row(p), cells.join(" | "));
    }
    let _ = writeln!(w);
}

/// The statistics of the latency point and label `run` belongs to.
pub(super) fn latency_stats<'a>(r: &'a Report, run: &Run) -> Option<&'a PeerStats> {
    let spec = &run.record.spec;
    r.analysis
        .points
        .iter()
        .find(|p| {
            p.key.is_latency_view()
                && p.key.purpose == analyse::purpose(run)
                && p.key.transport == spec.transport
                && p.key.size_bytes == spec.size_bytes
                && p.key.conns == spec.requested_conns
        })?
        .peer(&analyse::label(run))
}

pub(super) fn open_loop(w: &mut String, r: &Report) {
    let open: Vec<_> = r
        .medians
        .iter()
        .filter(|run| analyse::point_key(run).is_latency_view())
        .collect();
    if !open.is_empty() || !r.m.open_loop_note.is_empty() {
        let _ = writeln!(w, "## Open loop: latency at the same offered rate\n");
        let _ = writeln!(w, "{}\n", r.m.open_loop_note);
    }
    if open.is_empty() {
        return;
    }
    let _ = writeln!(
        w,
        "The p99 and server CPU columns are medians over the backend's runs with their intervals; the other \
         percentiles are those of its median run (by p99).\n"
    );
    let _ = writeln!(
        w,
        "| backend | transport | conns | size | runs | limit | requested msgs/s | achieved msgs/s | p50 µs | p90 µs | p99 µs | p99.9 µs | p99.99 µs | max µs | server CPU µs/msg | errors |"
    );
    let _ = writeln!(w, "|---|---|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for run in open {
        let (spec, res) = (&run.record.spec, &run.result);
        let stats = latency_stats(r, run);
        let l = &res.latency_us;
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {} | {:.0} | {:.0} | {:.0} | {} | {} |",
            crate::render::findings_text::shown(&analyse::label(run), spec.peer),
            spec.transport,
            spec.conns,
            size_label(spec.size_bytes),
            stats.map_or(1, |p| p.runs),
            stats.and_then(|p| p.bottleneck).map_or("–", |b| b.as_str()),
            opt(res.throughput.requested_msgs_per_s.or(spec.rate), |v| format!("{v:.0}")),
            res.throughput.msgs_per_s,
            l.p50,
            l.p90,
            stats
                .and_then(|p| p.p99_us)
                .map_or_else(|| format!("{:.0}", l.p99), |s| s.text(0)),
            l.p99_9,
            l.p99_99,
            l.max,
            stats.and_then(|p| p.server_cpu_us_per_msg).map_or_else(
                || opt(run.server_cpu_us_per_msg(), |v| format!("{v:.2}")),
                |s| s.text(2)
            ),
            res.errors.total()
        );
    }
    let _ = writeln!(w);
}
