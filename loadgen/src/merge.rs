//! `loadgen merge`: combines result files of several loadgen processes (for
//! example one per client machine) into one. Histograms and counts are added;
//! percentiles are recomputed from the summed histogram, never averaged.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::cli::{MergeArgs, UsageError, DEFAULT_PERCENTILES, EXIT_FAILED};
use crate::out::{hgrm_path, OutPlan};
use crate::report;
use crate::result::{self, new_run_id, Errors, Extra, RunResult, SeriesPoint, Settings, SCHEMA};
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
    check_required_fields(results, names)?;
    check_distinct_runs(results, names)?;
    let bucket_s = series_interval(results, names)?;
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
    out.series_interval_s = results.iter().find_map(|r| r.series_interval_s).map(|_| bucket_s);
    out.extra = Extra {
        // Summed below while every input has them.
        conns_up: Some(0),
        conns_carried_load: Some(0),
        conns_unanswered: Some(0),
        ..Extra::default()
    };
    let mut has_unc = true;
    for (r, name) in results.iter().zip(names) {
        let h = result::decode_histogram(&r.histogram).with_context(|| name.clone())?;
        if h.len() != r.messages {
            bail!(
                "{name}: `messages` is {} but its histogram holds {} samples; loadgen writes them \
                 equal, so the file was edited or damaged",
                r.messages,
                h.len()
            );
        }
        hist.add(&h)
            .map_err(|e| anyhow::anyhow!("{name}: histogram does not fit: {e:?}"))?;
        match r.extra.histogram_uncorrected.as_deref().map(result::decode_histogram) {
            Some(Ok(h)) => {
                let _ = unc.add(&h);
            }
            _ => has_unc = false,
        }
        let sum = |key: &str, a: u64, b: u64| {
            a.checked_add(b).ok_or_else(|| {
                anyhow::anyhow!("{name}: `{key}` overflows when added up; the file was edited or damaged")
            })
        };
        out.messages = sum("messages", out.messages, r.messages)?;
        out.bytes = sum("bytes", out.bytes, r.bytes)?;
        out.complete &= r.complete;
        out.merged_run_ids.extend(run_ids(r).iter().cloned());
        out.failures.extend(r.failures.iter().map(|f| format!("{name}: {f}")));
        out.errors = checked_errors(&out.errors, &r.errors).ok_or_else(|| {
            anyhow::anyhow!("{name}: an `errors` count overflows when added up; the file was edited or damaged")
        })?;
        out.warmup_errors = checked_errors(&out.warmup_errors, &r.warmup_errors).ok_or_else(|| {
            anyhow::anyhow!("{name}: a `warmup_errors` count overflows when added up; the file was edited or damaged")
        })?;
        out.settings.conns = sum("settings.conns", out.settings.conns, r.settings.conns)?;
        for (total, part) in [
            (&mut out.extra.conns_up, r.extra.conns_up),
            (&mut out.extra.conns_carried_load, r.extra.conns_carried_load),
            (&mut out.extra.conns_unanswered, r.extra.conns_unanswered),
        ] {
            *total = match (*total, part) {
                (Some(t), Some(p)) => Some(sum("extra.conns_*", t, p)?),
                _ => None,
            };
        }
        if let (Some(total), Some(rate)) = (out.settings.rate.as_mut(), r.settings.rate) {
            *total += rate;
        }
        out.throughput.msgs_per_s += r.throughput.msgs_per_s;
        out.throughput.mb_per_s += r.throughput.mb_per_s;
        // Buckets are on a grid from each input's own window start: the
        // inputs' buckets at one grid point end within far less than half a
        // bucket of each other.
        for p in &r.series {
            match out.series.iter_mut().find(|q| (q.t_s - p.t_s).abs() < bucket_s / 2.0) {
                // Per-bucket percentiles cannot be added: keep the worst (an upper bound).
                Some(q) => {
                    q.msgs = sum("series.msgs", q.msgs, p.msgs)?;
                    q.errors = sum("series.errors", q.errors, p.errors)?;
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

/// `a + b` for every error kind, or `None` if one overflows.
fn checked_errors(a: &Errors, b: &Errors) -> Option<Errors> {
    Some(Errors {
        connect: a.connect.checked_add(b.connect)?,
        reset: a.reset.checked_add(b.reset)?,
        timeout: a.timeout.checked_add(b.timeout)?,
        mismatch: a.mismatch.checked_add(b.mismatch)?,
        lost: a.lost.checked_add(b.lost)?,
        duplicate: a.duplicate.checked_add(b.duplicate)?,
        reordered: a.reordered.checked_add(b.reordered)?,
    })
}

/// Refuses inputs without the fields merge's safety checks stand on: a run
/// id (without one, a run merged with itself is not caught) and a measured
/// window with its end after its start (without one, disjoint runs are not
/// caught and their rates would be summed).
fn check_required_fields(results: &[RunResult], names: &[String]) -> anyhow::Result<()> {
    for (r, name) in results.iter().zip(names) {
        if run_ids(r).is_empty() {
            bail!(
                "{name} has no `run_id`: merge could not tell it from another input and might count \
                 it twice; merge only files written by a loadgen that records run ids"
            );
        }
        match (r.extra.window_start_unix_ns, r.extra.window_end_unix_ns) {
            (Some(a), Some(b)) if b > a => {}
            (Some(_), Some(_)) => {
                bail!("{name}: its measured window ends before it starts; the file was edited or damaged")
            }
            _ => bail!(
                "{name} has no measured window (`extra.window_start_unix_ns`, `window_end_unix_ns`): \
                 merge could not check that the runs overlap in time; merge only runs that measured"
            ),
        }
    }
    Ok(())
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

/// Messages `r` echoed within [from_ns, to_ns) (wall clock): its series
/// buckets that lie inside count whole, the (at most two) that the
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
    // The series is per bucket and its last one may hold a few
    // echoes completed as the window closed; never count more than the run's.
    total.min(r.messages as f64)
}

/// The width of the inputs' series buckets, seconds: one for all, or an
/// error naming two that differ (a file from a loadgen that recorded a point
/// a second beside one with finer buckets): their points could not be added
/// up bucket by bucket. Inputs without a point do not count.
fn series_interval(results: &[RunResult], names: &[String]) -> anyhow::Result<f64> {
    let mut first: Option<(f64, &str)> = None;
    for (r, name) in results.iter().zip(names) {
        if r.series.is_empty() {
            continue;
        }
        let b = r.series_interval();
        match first {
            None => first = Some((b, name)),
            Some((a, other)) if (a - b).abs() > 1e-9 => bail!(
                "{other} holds its series in {a} s buckets but {name} in {b} s buckets; merge only runs \
                 of one loadgen version and --duration"
            ),
            Some(_) => {}
        }
    }
    Ok(first.map_or(result::LEGACY_SERIES_INTERVAL_S, |(b, _)| b))
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
    check_out_is_no_input(&args.out, &args.inputs)?;
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
    // The verdict's `FAILED:` or `** INCOMPLETE **` is the exit code too.
    Ok(if merged.failures.is_empty() && merged.complete {
        0
    } else {
        EXIT_FAILED
    })
}

/// Refuses an `--out` (or the `.hgrm` beside it) that is one of the inputs
/// or an input's `.hgrm`: the same file, through a symlink or a hard link
/// too. The merge would replace what it reads.
fn check_out_is_no_input(out: &Path, inputs: &[PathBuf]) -> Result<(), UsageError> {
    if out == Path::new("-") {
        return Ok(());
    }
    let outputs = [out.to_path_buf(), hgrm_path(out)];
    for input in inputs {
        for theirs in [input.clone(), hgrm_path(input)] {
            if let Some(ours) = outputs.iter().find(|o| same_file(o, &theirs)) {
                return Err(UsageError(format!(
                    "--out {}: would overwrite {}, which is {}; write the merge to a new file",
                    out.display(),
                    ours.display(),
                    if &theirs == input {
                        format!("the input {}", input.display())
                    } else {
                        format!("the percentile file of the input {}", input.display())
                    }
                )));
            }
        }
    }
    Ok(())
}

/// Both paths name one existing file (links resolved: same device and inode).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{Latency, RunEnv, Throughput};

    /// A result as one loadgen run writes it: `messages` samples in its
    /// histogram, its own run id, a one-second window from `start_s`.
    fn run(id: &str, messages: u64, start_s: u64) -> RunResult {
        let mut h = stats::new_histogram();
        for _ in 0..messages {
            h.record(100).unwrap();
        }
        RunResult {
            schema: SCHEMA.into(),
            command: vec!["loadgen".into()],
            version: "test".into(),
            git_commit: "unknown".into(),
            env: RunEnv {
                kernel: "k".into(),
                cpu_model: "c".into(),
                cores: 2,
                pin: "none".into(),
            },
            settings: Settings {
                backend: None,
                label: None,
                transport: "tcp".into(),
                target: "127.0.0.1:1".into(),
                conns: 2,
                duration_s: 1.0,
                warmup_s: 0.0,
                size: 128,
                depth: 1,
                rate: None,
                slack_s: None,
                threads: 1,
                pin: None,
                connect_rate: 1000,
                timeout_s: 1.0,
                io: None,
            },
            complete: true,
            run_id: id.into(),
            merged_run_ids: Vec::new(),
            failures: Vec::new(),
            warmup_errors: Errors::default(),
            messages,
            bytes: messages * 128,
            throughput: Throughput::default(),
            latency_us: Latency::default(),
            errors: Errors::default(),
            series: Vec::new(),
            series_interval_s: None,
            histogram: result::encode_histogram(&h),
            extra: Extra {
                window_start_unix_ns: Some(start_s * 1_000_000_000),
                window_end_unix_ns: Some((start_s + 1) * 1_000_000_000),
                conns_up: Some(2),
                conns_carried_load: Some(2),
                ..Extra::default()
            },
            conversations: None,
        }
    }

    fn merge_err(inputs: &[RunResult]) -> String {
        let names: Vec<String> = (0..inputs.len()).map(|i| format!("in{i}.json")).collect();
        format!("{:#}", merge(inputs, &names, Vec::new()).unwrap_err())
    }

    #[test]
    fn two_overlapping_runs_merge_and_their_connections_add_up() {
        let names = ["a".to_string(), "b".to_string()];
        let (m, _) = merge(&[run("a", 3, 100), run("b", 4, 100)], &names, Vec::new()).unwrap();
        assert_eq!((m.messages, m.settings.conns), (7, 4));
        assert_eq!((m.extra.conns_up, m.extra.conns_carried_load), (Some(4), Some(4)));
    }

    /// `n` buckets of `width` seconds, `msgs` messages each, ending `skew_s` late.
    fn series(n: usize, width: f64, msgs: u64, skew_s: f64) -> Vec<SeriesPoint> {
        (1..=n)
            .map(|k| SeriesPoint {
                t_s: k as f64 * width + skew_s,
                msgs,
                p50_us: 100.0,
                p99_us: 100.0 + k as f64,
                errors: 0,
            })
            .collect()
    }

    #[test]
    fn series_of_100ms_buckets_add_up_bucket_by_bucket() {
        let (mut a, mut b) = (run("a", 20, 100), run("b", 30, 100));
        (a.series, a.series_interval_s) = (series(10, 0.1, 2, 0.0), Some(0.1));
        (b.series, b.series_interval_s) = (series(10, 0.1, 3, 0.002), Some(0.1));
        let names = ["a".to_string(), "b".to_string()];
        let (m, _) = merge(&[a, b], &names, Vec::new()).unwrap();
        assert_eq!(m.series_interval_s, Some(0.1));
        assert_eq!(m.series.len(), 10, "{:?}", m.series);
        assert!(m.series.iter().all(|p| p.msgs == 5));
        assert_eq!(m.extra.common_window_messages, Some(50.0));
        assert!((m.throughput.msgs_per_s - 50.0).abs() < 1e-9);
    }

    #[test]
    fn old_files_with_a_point_a_second_still_merge_and_never_with_finer_ones() {
        let (mut a, mut b) = (run("a", 4, 100), run("b", 6, 100));
        a.series = series(1, 1.0, 4, 0.0);
        b.series = series(1, 1.0, 6, 0.004);
        let names = ["a".to_string(), "b".to_string()];
        let (m, _) = merge(&[a.clone(), b], &names, Vec::new()).unwrap();
        assert_eq!((m.series.len(), m.series[0].msgs), (1, 10));
        assert_eq!(m.series_interval_s, None, "still an old file's series");
        let mut fine = run("c", 6, 100);
        (fine.series, fine.series_interval_s) = (series(10, 0.1, 0, 0.0), Some(0.1));
        let e = merge_err(&[a, fine]);
        assert!(e.contains("in 1 s buckets but in1.json in 0.1 s buckets"), "{e}");
    }

    #[test]
    fn sums_that_overflow_are_refused_not_wrapped() {
        let (mut a, mut b) = (run("a", 1, 100), run("b", 1, 100));
        a.errors.timeout = u64::MAX;
        b.errors.timeout = u64::MAX;
        assert!(merge_err(&[a, b]).contains("overflows"));
        let (mut a, mut b) = (run("a", 1, 100), run("b", 1, 100));
        a.bytes = u64::MAX;
        b.bytes = 2;
        assert!(merge_err(&[a, b]).contains("`bytes` overflows"));
    }

    #[test]
    fn messages_must_match_the_histogram() {
        let mut a = run("a", 3, 100);
        a.messages = 3_000;
        let e = merge_err(&[a, run("b", 1, 100)]);
        assert!(
            e.contains("`messages` is 3000 but its histogram holds 3 samples"),
            "{e}"
        );
    }

    #[test]
    fn a_run_without_an_id_or_a_window_is_refused() {
        let e = merge_err(&[run("", 1, 100), run("b", 1, 100)]);
        assert!(e.contains("no `run_id`"), "{e}");
        let mut no_window = run("a", 1, 100);
        no_window.extra.window_end_unix_ns = None;
        assert!(merge_err(&[no_window, run("b", 1, 100)]).contains("no measured window"));
        let mut inverted = run("a", 1, 100);
        inverted.extra.window_end_unix_ns = Some(1);
        assert!(merge_err(&[inverted, run("b", 1, 100)]).contains("ends before it starts"));
        // With both windows whole, disjoint runs are refused as before.
        assert!(merge_err(&[run("a", 1, 100), run("b", 1, 200)]).contains("do not overlap"));
    }
}
