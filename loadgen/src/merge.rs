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
    out.throughput.requested_msgs_per_s = out.settings.rate;
    out.latency_us = stats::latency_of(&hist);
    out.histogram = result::encode_histogram(&hist);
    out.extra.merged_from = names.to_vec();
    if has_unc {
        out.extra.latency_uncorrected_us = Some(stats::latency_of(&unc));
        out.extra.histogram_uncorrected = Some(result::encode_histogram(&unc));
    }
    Ok((out, hist))
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
