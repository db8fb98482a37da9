//! `loadgen merge`: combines result files of several loadgen processes (for
//! example one per client machine) into one. Histograms and counts are added;
//! percentiles are recomputed from the summed histogram, never averaged.

use anyhow::{bail, Context};

use crate::cli::{MergeArgs, DEFAULT_PERCENTILES};
use crate::out::OutPlan;
use crate::report;
use crate::result::{self, new_run_id, Extra, RunResult, SeriesPoint, Settings, SCHEMA};
use crate::stats;

/// Settings that must be equal in every input, by JSON key. `conns` and
/// `rate` are summed; `threads`, `pin`, `label` and `connect_rate` are per
/// process and may differ.
fn must_match(s: &Settings) -> Vec<(&'static str, String)> {
    vec![
        ("backend", format!("{:?}", s.backend)),
        ("transport", s.transport.clone()),
        ("target", s.target.clone()),
        ("size", s.size.to_string()),
        ("depth", s.depth.to_string()),
        ("duration_s", s.duration_s.to_string()),
        ("warmup_s", s.warmup_s.to_string()),
        ("timeout_s", s.timeout_s.to_string()),
        ("slack_s", format!("{:?}", s.slack_s)),
        (
            "rate",
            if s.rate.is_some() {
                "open loop".into()
            } else {
                "closed loop".into()
            },
        ),
    ]
}

/// Merges parsed results; `names` label them in error messages.
pub fn merge(
    results: &[RunResult],
    names: &[String],
    command: Vec<String>,
) -> anyhow::Result<(RunResult, hdrhistogram::Histogram<u64>)> {
    let Some(first) = results.first() else {
        bail!("nothing to merge")
    };
    check_distinct_runs(results, names)?;
    let window = common_window(results, names)?;
    for (r, name) in results.iter().zip(names) {
        if r.schema != SCHEMA {
            bail!("{name}: schema is {:?}, expected {SCHEMA:?}", r.schema);
        }
        for ((key, a), (_, b)) in must_match(&first.settings).into_iter().zip(must_match(&r.settings)) {
            if a != b {
                bail!("settings differ: `{key}` is {a} in {} but {b} in {name}; only runs with the same settings can be merged", names[0]);
            }
        }
    }
    let mut hist = stats::new_histogram();
    let mut unc = stats::new_histogram();
    let mut out = first.clone();
    out.command = command;
    out.messages = 0;
    out.bytes = 0;
    out.errors = Default::default();
    out.complete = true;
    out.run_id = new_run_id();
    out.merged_run_ids = Vec::new();
    out.failures = Vec::new();
    out.warmup_errors = Default::default();
    out.settings.conns = 0;
    out.settings.rate = first.settings.rate.map(|_| 0.0);
    out.throughput = Default::default();
    out.throughput.requested_msgs_per_s = out.settings.rate;
    out.series = Vec::new();
    out.extra = Extra::default();
    let mut has_unc = true;
    for (r, name) in results.iter().zip(names) {
        let h = result::decode_histogram(&r.histogram).with_context(|| name.clone())?;
        hist.add(&h)
            .map_err(|e| anyhow::anyhow!("{name}: histogram does not fit: {e:?}"))?;
        match r.extra.histogram_uncorrected.as_deref().map(result::decode_histogram) {
            Some(Ok(h)) => {
                let _ = unc.add(&h);
            }
            _ => has_unc = false,
        }
        out.messages += r.messages;
        out.bytes += r.bytes;
        out.complete &= r.complete;
        out.merged_run_ids.extend(run_ids(r).iter().cloned());
        out.failures.extend(r.failures.iter().map(|f| format!("{name}: {f}")));
        stats::add_errors(&mut out.errors, &r.errors);
        stats::add_errors(&mut out.warmup_errors, &r.warmup_errors);
        out.settings.conns += r.settings.conns;
        if let (Some(total), Some(rate)) = (out.settings.rate.as_mut(), r.settings.rate) {
            *total += rate;
        }
        out.throughput.msgs_per_s += r.throughput.msgs_per_s;
        out.throughput.mb_per_s += r.throughput.mb_per_s;
        for p in &r.series {
            match out.series.iter_mut().find(|q| (q.t_s - p.t_s).abs() < 0.5) {
                // Per-second percentiles cannot be added: keep the worst (an upper bound).
                Some(q) => {
                    q.msgs += p.msgs;
                    q.errors += p.errors;
                    q.p50_us = q.p50_us.max(p.p50_us);
                    q.p99_us = q.p99_us.max(p.p99_us);
                }
                None => out.series.push(SeriesPoint { ..p.clone() }),
            }
        }
    }
    out.series.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
    out.conversations = crate::conversation::merge(results, names)?;
    out.throughput.requested_msgs_per_s = out.settings.rate;
    out.latency_us = stats::latency_of(&hist);
    out.histogram = result::encode_histogram(&hist);
    out.extra.merged_from = names.to_vec();
    if let Some(w) = &window {
        // Throughput over the common window: what every input echoed inside it.
        let secs = (w.end_ns - w.start_ns) as f64 / 1e9;
        let (mut msgs, mut bytes) = (0.0, 0.0);
        for r in results {
            let m = messages_within(r, w.start_ns, w.end_ns);
            msgs += m;
            bytes += if r.messages > 0 {
                m * r.bytes as f64 / r.messages as f64
            } else {
                0.0
            };
        }
        out.throughput.msgs_per_s = msgs / secs;
        out.throughput.mb_per_s = bytes / secs / 1e6;
        out.extra.window_start_unix_ns = Some(w.start_ns);
        out.extra.window_end_unix_ns = Some(w.end_ns);
        out.extra.window_skew_ns = Some(w.skew_ns);
        out.extra.common_window_messages = Some(msgs);
        out.extra.common_window_s = Some(secs);
    }
    if has_unc {
        out.extra.latency_uncorrected_us = Some(stats::latency_of(&unc));
        out.extra.histogram_uncorrected = Some(result::encode_histogram(&unc));
    }
    Ok((out, hist))
}

/// The inputs' common measured window in wall-clock time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommonWindow {
    /// The latest start and the earliest end, ns since the Unix epoch.
    pub start_ns: u64,
    pub end_ns: u64,
    /// The largest difference between the starts, or between the ends.
    pub skew_ns: u64,
}

/// The window every input measured, or `None` when an input has no window
/// (a file from before windows were recorded: then the windows are only as
/// aligned as the processes' starts, and rates are summed as they are).
/// Refuses inputs whose windows do not overlap: their sum would describe no
/// instant the server saw.
pub fn common_window(results: &[RunResult], names: &[String]) -> anyhow::Result<Option<CommonWindow>> {
    let mut windows = Vec::new();
    for r in results {
        match (r.extra.window_start_unix_ns, r.extra.window_end_unix_ns) {
            (Some(a), Some(b)) if b > a => windows.push((a, b)),
            _ => return Ok(None),
        }
    }
    let latest_start = (0..windows.len()).max_by_key(|&i| windows[i].0).unwrap_or(0);
    let earliest_end = (0..windows.len()).min_by_key(|&i| windows[i].1).unwrap_or(0);
    let (start_ns, end_ns) = (windows[latest_start].0, windows[earliest_end].1);
    if end_ns <= start_ns {
        bail!(
            "the measured windows do not overlap: {} ended at {} but {} started at {}; \
             start the loadgens with the same --start-at (and synchronized clocks)",
            names[earliest_end],
            show_unix_ns(end_ns),
            names[latest_start],
            show_unix_ns(start_ns)
        );
    }
    let spread = |f: fn(&(u64, u64)) -> u64| {
        let v: Vec<u64> = windows.iter().map(f).collect();
        v.iter().max().unwrap_or(&0) - v.iter().min().unwrap_or(&0)
    };
    let skew_ns = spread(|w| w.0).max(spread(|w| w.1));
    Ok(Some(CommonWindow {
        start_ns,
        end_ns,
        skew_ns,
    }))
}

/// An instant as RFC 3339 UTC with milliseconds.
fn show_unix_ns(ns: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns)).to_string()
}

/// Messages `r` echoed within [from_ns, to_ns) (wall clock): its per-second
/// series intervals that lie inside count whole, the (at most two) that the
/// bounds cut count pro rata to the part inside. Without a series, the whole
/// window's messages pro rata.
fn messages_within(r: &RunResult, from_ns: u64, to_ns: u64) -> f64 {
    let (Some(ws), Some(we)) = (r.extra.window_start_unix_ns, r.extra.window_end_unix_ns) else {
        return r.messages as f64;
    };
    let inside = |a: u64, b: u64| -> f64 {
        let (lo, hi) = (a.max(from_ns), b.min(to_ns));
        if b <= a || hi <= lo {
            0.0
        } else {
            (hi - lo) as f64 / (b - a) as f64
        }
    };
    if r.series.is_empty() {
        return r.messages as f64 * inside(ws, we);
    }
    let mut prev = ws;
    let mut total = 0.0;
    for p in &r.series {
        let end = (ws + (p.t_s * 1e9) as u64).min(we.max(prev));
        total += p.msgs as f64 * inside(prev, end.max(prev + 1));
        prev = end;
    }
    // The series is per report interval and its last one may hold a few
    // echoes completed as the window closed; never count more than the run's.
    total.min(r.messages as f64)
}

/// The single runs a result adds up: its own id, or a merge's inputs'.
fn run_ids(r: &RunResult) -> Vec<String> {
    if !r.merged_run_ids.is_empty() {
        r.merged_run_ids.clone()
    } else if !r.run_id.is_empty() {
        vec![r.run_id.clone()]
    } else {
        Vec::new() // written before run ids existed
    }
}

/// Refuses to add a run to itself: the same run id twice, directly or
/// inside an earlier merge, would double its counts.
fn check_distinct_runs(results: &[RunResult], names: &[String]) -> anyhow::Result<()> {
    let mut seen: std::collections::HashMap<String, &str> = Default::default();
    for (r, name) in results.iter().zip(names) {
        for id in run_ids(r) {
            if let Some(other) = seen.insert(id.clone(), name) {
                bail!("{other} and {name} both contain run {id}; merging a run with itself would count it twice");
            }
        }
    }
    Ok(())
}

/// `loadgen merge INPUTS... --out OUT`. Returns the exit code.
pub fn run_merge(args: &MergeArgs, command: Vec<String>) -> anyhow::Result<i32> {
    let out = OutPlan::check(Some(&args.out), args.json)?;
    let results = args
        .inputs
        .iter()
        .map(|p| result::read(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let names: Vec<String> = args.inputs.iter().map(|p| p.display().to_string()).collect();
    let (merged, hist) = merge(&results, &names, command)?;
    if let (Some(skew), Some(secs)) = (merged.extra.window_skew_ns, merged.extra.common_window_s) {
        let skew_s = skew as f64 / 1e9;
        eprintln!(
            "loadgen: measured windows overlap for {secs:.3}s; skew {:.1}ms",
            skew_s * 1e3
        );
        if skew_s > args.max_skew.as_secs_f64() {
            eprintln!(
                "loadgen: warning: the measured windows start or end {skew_s:.3}s apart, above --max-skew {}; \
                 throughput counts only the common {secs:.3}s (check the clocks' sync and --start-at)",
                humantime::format_duration(args.max_skew)
            );
        }
    }
    let report = report::summary(&merged, &DEFAULT_PERCENTILES);
    if out.json_on_stdout() {
        eprint!("{report}");
    } else {
        print!("{report}");
    }
    if let Some(wrote) = out.write(&merged, &hist)? {
        eprintln!("loadgen: merged {} files; {wrote}", args.inputs.len());
    }
    Ok(0)
}
