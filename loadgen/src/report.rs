//! Output: the final report, units, the histogram encoding and the `.hgrm` text.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use crate::kernel_counters::KernelCounters;
use crate::result::{decode_histogram, Errors, RunResult};

/// HdrHistogram's percentile-distribution text (as `outputPercentileDistribution`
/// writes it, values in microseconds), which existing HdrHistogram plotters read.
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(
                    out,
                    "{:>12.3} {:>2.12} {:>10} {:>14.2}",
                    v.value_iterated_to() as f64,
                    q,
                    (q * h.len() as f64).round() as u64,
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(
                    out,
                    "{:>12.3} {:>2.12} {:>10}",
                    v.value_iterated_to() as f64,
                    q,
                    h.len()
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        h.mean(),
        h.stdev()
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        h.max() as f64,
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        sub_buckets(h)
    );
    out
}

/// A latency in microseconds with a unit scaled to its size, as wrk prints
/// it: `85.00us`, `299.78ms`, `1.25s`. The JSON keeps exact microseconds.
pub fn fmt_us(us: f64) -> String {
    let (unit, suffix) = if us < 1_000.0 {
        (1.0, "us")
    } else if us < 1_000_000.0 {
        (1e3, "ms")
    } else if us < 60_000_000.0 {
        (1e6, "s")
    } else {
        (60e6, "m")
    };
    // Round in hundredths of the unit first: 299775 us is 299.78ms, as wrk
    // prints it, while 299775 / 1e3 in binary is just below 299.775.
    let hundredths = (us * 100.0 / unit).round();
    format!("{:.2}{suffix}", hundredths / 100.0)
}

/// Seconds as humantime writes a duration: `2s`, `500ms`, `1m 30s`.
fn human_secs(s: f64) -> String {
    humantime::format_duration(std::time::Duration::from_secs_f64(s.max(0.0))).to_string()
}

/// `p99.9 1.20ms  ...  max 3.01ms  (mean 90.12us, stdev 20.01us)` for the chosen percentiles.
fn latency_line(h: &Histogram<u64>, percentiles: &[f64]) -> String {
    if h.is_empty() {
        return "no samples".into();
    }
    let mut s = String::new();
    for p in percentiles {
        let _ = write!(s, "p{p} {}  ", fmt_us(h.value_at_quantile(p / 100.0) as f64));
    }
    let _ = write!(
        s,
        "max {}  (mean {}, stdev {})",
        fmt_us(h.max() as f64),
        fmt_us(h.mean()),
        fmt_us(h.stdev())
    );
    s
}

/// Closed loop: the queued view differs from the headline (from the send)
/// by more than this share at p50 before the report shows it.
const QUEUED_SHOWN_ABOVE: f64 = 1.1;

/// Each error kind: its key under `errors`, its plural in a verdict, and what it counts.
const ERROR_KINDS: [(&str, &str, &str); 7] = [
    (
        "connect",
        "connect failures",
        "connect attempts that failed, over the whole run",
    ),
    ("reset", "resets", "connections the server reset or closed mid-run"),
    ("timeout", "timeouts", "stream echoes later than --timeout"),
    (
        "mismatch",
        "mismatches",
        "echoes that differ from what was sent: corruption",
    ),
    ("lost", "lost datagrams", "datagrams not answered within --timeout"),
    ("duplicate", "duplicates", "datagrams answered twice"),
    ("reordered", "reordered", "answers older than one already seen"),
];

fn error_counts(e: &Errors) -> [u64; 7] {
    [
        e.connect,
        e.reset,
        e.timeout,
        e.mismatch,
        e.lost,
        e.duplicate,
        e.reordered,
    ]
}

/// Whether a counter applies to a transport: streams have no lost,
/// duplicate or reordered answers (TCP and Unix streams deliver in order or
/// not at all); datagrams have no resets and time out only as lost.
fn applies(key: &str, stream: bool) -> bool {
    match key {
        "connect" | "mismatch" => true,
        "reset" | "timeout" => stream,
        _ => !stream,
    }
}

/// The counters that apply to the transport, zeros included, and any other
/// that is not zero: `0 connect, 0 reset, 2 timeout, 0 mismatch`.
fn errors_by_kind(e: &Errors, stream: bool) -> String {
    let parts: Vec<String> = ERROR_KINDS
        .iter()
        .zip(error_counts(e))
        .filter(|((key, _, _), n)| *n > 0 || applies(key, stream))
        .map(|((key, _, _), n)| format!("{n} {key}"))
        .collect();
    parts.join(", ")
}

/// `tcp` and `unix` are streams; `udp` and `unixgram` datagrams.
fn is_stream(transport: &str) -> bool {
    !matches!(transport, "udp" | "unixgram")
}

/// `10 connections`, or `8193 of 10000 connections up` when fewer came up,
/// and how many of those carried load when that is fewer still.
pub fn connections(r: &RunResult) -> String {
    let asked = r.settings.conns;
    let up = r.extra.conns_up.unwrap_or(asked);
    let mut s = if up < asked {
        format!("{up} of {asked} connections up")
    } else {
        format!("{asked} connections")
    };
    if let Some(carried) = r.extra.conns_carried_load.filter(|&c| c < up) {
        let _ = write!(s, " ({carried} carried load");
        if let Some(n) = r.extra.conns_unanswered.filter(|&n| n > 0) {
            let _ = write!(s, ", {n} never answered");
        }
        s.push(')');
    }
    s
}

/// The one-line verdict: `ok, 0 errors`, `ok, 2 errors: 2 timeouts; see ...`
/// or `FAILED: ...`, naming the counter to look at when there are errors.
pub fn verdict(r: &RunResult) -> String {
    let total = r.errors.total() + r.warmup_errors.total();
    let mut kinds = Vec::new();
    let mut fields = Vec::new();
    let mut meanings = Vec::new();
    let counts = error_counts(&r.errors).into_iter().zip(error_counts(&r.warmup_errors));
    for ((key, plural, meaning), (measured, warm)) in ERROR_KINDS.iter().zip(counts) {
        if measured + warm > 0 {
            kinds.push(format!("{} {plural}", measured + warm));
            let field = format!("{}.{key}", if measured > 0 { "errors" } else { "warmup_errors" });
            meanings.push(format!("{field} ({meaning})"));
            fields.push(field);
        }
    }
    if !r.failures.is_empty() {
        // The reasons say what went wrong; name only the counters to look at.
        let see = if fields.is_empty() {
            String::new()
        } else {
            format!("; see {}", fields.join(", "))
        };
        format!("FAILED: {}{see}", r.failures.join("; "))
    } else if total == 0 {
        "ok, 0 errors".into()
    } else {
        format!("ok, {total} errors: {}; see {}", kinds.join(", "), meanings.join(", "))
    }
}

/// The human-readable final report, as wrk and hyperfine users expect:
/// throughput, the chosen latency `percentiles`, errors by kind, a verdict.
pub fn summary(r: &RunResult, percentiles: &[f64]) -> String {
    let mut s = String::new();
    let st = &r.settings;
    let mode = match (st.rate, &r.conversations) {
        (Some(rate), Some(c)) => format!(
            "conversations of {} echoes, open loop at {rate} conversations/s",
            c.msgs_per_conn
        ),
        (None, Some(c)) => format!(
            "conversations of {} echoes, closed loop, depth {}",
            c.msgs_per_conn, st.depth
        ),
        (Some(rate), None) => format!("open loop at {rate} msgs/s"),
        (None, None) => format!("closed loop, depth {}", st.depth),
    };
    let _ = writeln!(
        s,
        "loadgen {} {}: {}, {}-byte messages, {mode}, {} measured after {} warm-up{}",
        st.transport,
        st.target,
        connections(r),
        st.size,
        human_secs(st.duration_s),
        human_secs(st.warmup_s),
        if r.complete { "" } else { "  ** INCOMPLETE **" }
    );
    let _ = write!(
        s,
        "  Throughput  {:.0} msgs/s  {:.2} MB/s  ({} messages)",
        r.throughput.msgs_per_s, r.throughput.mb_per_s, r.messages
    );
    if let Some(req) = r.throughput.requested_msgs_per_s {
        let _ = write!(
            s,
            ", requested {req:.0} msgs/s ({:.1}%)",
            100.0 * r.throughput.msgs_per_s / req
        );
    }
    let _ = writeln!(s);
    if let Some(note) = behind_schedule(r) {
        let _ = writeln!(s, "  {note}");
    }
    let hist = decode_histogram(&r.histogram).unwrap_or_else(|_| crate::stats::new_histogram());
    let uncorrected = r
        .extra
        .histogram_uncorrected
        .as_deref()
        .and_then(|t| decode_histogram(t).ok());
    match (st.rate, uncorrected) {
        // Open loop: both views differ and both matter, each labelled.
        (Some(_), Some(unc)) => {
            let _ = writeln!(s, "  Latency, corrected (from intended send time):");
            let _ = writeln!(s, "              {}", latency_line(&hist, percentiles));
            let _ = writeln!(s, "  Latency, uncorrected (from actual send time):");
            let _ = writeln!(s, "              {}", latency_line(&unc, percentiles));
        }
        // Closed loop: measured from the send, as --timeout is; the wait in
        // loadgen's own queue shows only when there was one.
        _ => {
            let _ = writeln!(s, "  Latency     {}", latency_line(&hist, percentiles));
            if let Some(q) = r
                .extra
                .latency_queued_us
                .as_ref()
                .filter(|q| q.p50 > QUEUED_SHOWN_ABOVE * r.latency_us.p50.max(1.0))
            {
                let _ = writeln!(
                    s,
                    "  Latency incl. loadgen's send queue (--depth x --size past the socket buffers):\n              \
                     p50 {}  p99 {}  max {}  (the line above is from the send, as --timeout is)",
                    fmt_us(q.p50),
                    fmt_us(q.p99),
                    fmt_us(q.max)
                );
            }
        }
    }
    let stream = is_stream(&st.transport);
    let _ = writeln!(s, "  Errors      {}", errors_by_kind(&r.errors, stream));
    if r.warmup_errors.total() > 0 {
        let _ = writeln!(
            s,
            "  Before the measured phase: {}",
            errors_by_kind(&r.warmup_errors, stream)
        );
    }
    if let Some(loss) = r.extra.loss_pct {
        let max = r
            .extra
            .max_loss_pct
            .map(|m| format!(" (--max-loss {m}%)"))
            .unwrap_or_default();
        let _ = writeln!(s, "  Loss        {loss:.2}% of datagrams{max}");
    }
    if let Some(line) = r.extra.kernel.as_ref().and_then(kernel_line) {
        let _ = writeln!(s, "  Kernel      {line}");
    }
    s.push_str(&crate::conversation::report_lines(r.conversations.as_ref()));
    if let Some(l) = r.extra.loadgen_cpu_us_per_msg {
        let _ = writeln!(s, "  loadgen CPU {}/msg", fmt_us(l));
    }
    if let Some(sv) = r.extra.server_cpu_us_per_msg {
        let _ = writeln!(s, "  server CPU  {}/msg", fmt_us(sv));
    }
    let _ = writeln!(s, "{}", verdict(r));
    s
}

/// An open loop that delivered less than this share of its rate says so.
pub const ON_SCHEDULE: f64 = 0.97;
/// loadgen's threads busy at least this share of the window: loadgen was the limit.
const LOADGEN_SATURATED: f64 = 0.9;

/// Open loop: when the run fell behind its schedule, which side was short.
/// loadgen's busy share is its CPU time over its threads' time in the
/// measured window; at [`LOADGEN_SATURATED`] or more, loadgen itself could
/// not keep the rate, else the echoes did not come back fast enough.
pub fn behind_schedule(r: &RunResult) -> Option<String> {
    let requested = r.throughput.requested_msgs_per_s?;
    let share = r.throughput.msgs_per_s / requested;
    if share >= ON_SCHEDULE {
        return None;
    }
    let window_us = match (r.extra.window_start_unix_ns, r.extra.window_end_unix_ns) {
        (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e3,
        _ => r.settings.duration_s * 1e6,
    };
    let threads = r.extra.threads_used.unwrap_or(r.settings.threads).max(1) as f64;
    let busy = r.extra.loadgen_cpu_us.map(|cpu| cpu as f64 / (threads * window_us));
    let why = match busy {
        Some(b) if b >= LOADGEN_SATURATED => format!(
            "loadgen's threads were busy {:.0}% of the window: loadgen could not keep the schedule \
             (more --threads on more cores, or a lower --rate)",
            100.0 * b
        ),
        Some(b) => format!(
            "loadgen's threads were busy only {:.0}% of the window: the echoes did not come back fast enough \
             (the server, or the network, is the limit)",
            100.0 * b
        ),
        None => "loadgen's CPU time is unknown".to_string(),
    };
    Some(format!(
        "** Behind schedule: {:.0} of {requested:.0} msgs/s ({:.1}%); {why} **",
        r.throughput.msgs_per_s,
        100.0 * share
    ))
}

/// The `Kernel` line's text, when TCP's retransmission timer fired or
/// packets were dropped in the measured phase (else `None`, and no line):
/// `14 retransmission timeouts, 12,617 packets dropped at input backlogs
/// (netdev_max_backlog 1000, machine-wide)`, then any other drop counted.
/// The TCP counts are loadgen's network namespace's (docs/loadgen.md,
/// "The Kernel line").
pub fn kernel_line(k: &KernelCounters) -> Option<String> {
    if !k.saw_loss() {
        return None;
    }
    let count = |n: u64, one: &str, many: &str| format!("{} {}", thousands(n), if n == 1 { one } else { many });
    let mut parts = Vec::new();
    if let Some(n) = k.tcp_rto {
        parts.push(count(n, "retransmission timeout", "retransmission timeouts"));
    }
    if let Some(n) = k.softnet_dropped {
        let backlog = k
            .netdev_max_backlog
            // As `sysctl` prints it, to be searched for and set.
            .map(|b| format!("netdev_max_backlog {b}, "))
            .unwrap_or_default();
        parts.push(format!(
            "{} at input backlogs ({backlog}machine-wide)",
            count(n, "packet dropped", "packets dropped")
        ));
    }
    let others = [
        (k.syn_retrans, "SYN retransmit", "SYN retransmits"),
        (k.listen_overflows, "listen overflow", "listen overflows"),
        (k.listen_drops, "listen drop", "listen drops"),
        (k.backlog_drops, "socket backlog drop", "socket backlog drops"),
        (k.rcvq_drops, "receive queue drop", "receive queue drops"),
    ];
    for (n, one, many) in others {
        if let Some(n) = n.filter(|&n| n > 0) {
            parts.push(count(n, one, many));
        }
    }
    Some(parts.join(", "))
}

/// `12617` as `12,617`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut s = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            s.push(',');
        }
        s.push(c);
    }
    s
}

/// HdrHistogram's sub-bucket count for the histogram's precision.
fn sub_buckets(h: &Histogram<u64>) -> u64 {
    let largest_single_unit = 2.0 * 10f64.powi(h.sigfig() as i32);
    2u64.pow(largest_single_unit.log2().ceil() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_line_names_timeouts_and_drops_and_is_absent_without_them() {
        let k = KernelCounters {
            tcp_rto: Some(14),
            tcp_retrans_segs: Some(40),
            tcp_loss_probes: Some(9),
            syn_retrans: Some(0),
            listen_overflows: Some(0),
            listen_drops: Some(0),
            backlog_drops: Some(0),
            rcvq_drops: Some(0),
            softnet_dropped: Some(12_617),
            netdev_max_backlog: Some(1000),
            scope: crate::kernel_counters::SCOPE.into(),
        };
        assert_eq!(
            kernel_line(&k).as_deref(),
            Some("14 retransmission timeouts, 12,617 packets dropped at input backlogs (netdev_max_backlog 1000, machine-wide)")
        );
        // Other drops join the line; an unknown backlog length is left out.
        let more = KernelCounters {
            tcp_rto: Some(1),
            softnet_dropped: Some(0),
            syn_retrans: Some(3),
            listen_overflows: Some(1),
            netdev_max_backlog: None,
            ..k.clone()
        };
        assert_eq!(
            kernel_line(&more).as_deref(),
            Some("1 retransmission timeout, 0 packets dropped at input backlogs (machine-wide), 3 SYN retransmits, 1 listen overflow")
        );
        // All zero (loss probes and resends alone included): no line.
        let quiet = KernelCounters {
            tcp_rto: Some(0),
            softnet_dropped: Some(0),
            ..k.clone()
        };
        assert_eq!(kernel_line(&quiet), None);
        assert_eq!(kernel_line(&KernelCounters::default()), None);
    }

    #[test]
    fn thousands_are_grouped() {
        for (n, s) in [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (12_617, "12,617"),
            (1_234_567, "1,234,567"),
        ] {
            assert_eq!(thousands(n), s);
        }
    }
}
