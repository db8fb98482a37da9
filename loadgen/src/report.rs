//! Output: the live line, the final summary, the JSON result and the `.hgrm` file.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;

use crate::result::{self, Latency, RunResult};

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

/// The `.hgrm` path beside a JSON path: `run.json` → `run.hgrm`.
pub fn hgrm_path(json: &Path) -> PathBuf {
    json.with_extension("hgrm")
}

/// Writes the JSON result and the `.hgrm` beside it.
pub fn write_result(path: &Path, result: &RunResult, hist: &Histogram<u64>) -> anyhow::Result<()> {
    use anyhow::Context;
    result::write(path, result).with_context(|| format!("--out {}", path.display()))?;
    let hp = hgrm_path(path);
    std::fs::write(&hp, hgrm(hist)).with_context(|| format!("cannot write {}", hp.display()))?;
    Ok(())
}

fn lat(l: &Latency) -> String {
    format!(
        "p50 {:.0}  p90 {:.0}  p99 {:.0}  p99.9 {:.0}  p99.99 {:.0}  max {:.0}  (min {:.0}, mean {:.1}) us",
        l.p50, l.p90, l.p99, l.p99_9, l.p99_99, l.max, l.min, l.mean
    )
}

/// The human-readable final summary.
pub fn summary(r: &RunResult) -> String {
    let mut s = String::new();
    let st = &r.settings;
    let _ = writeln!(
        s,
        "loadgen {} {} conns={} size={} {}{}",
        st.transport,
        st.target,
        st.conns,
        st.size,
        match st.rate {
            Some(rate) => format!("open loop rate={rate}"),
            None => format!("closed loop depth={}", st.depth),
        },
        if r.complete { "" } else { "  ** INCOMPLETE **" }
    );
    let _ = write!(
        s,
        "  throughput: {:.0} msgs/s  {:.2} MB/s  ({} messages in {}s)",
        r.throughput.msgs_per_s, r.throughput.mb_per_s, r.messages, st.duration_s
    );
    if let Some(req) = r.throughput.requested_msgs_per_s {
        let _ = write!(
            s,
            "  requested {req:.0} msgs/s ({:.1}%)",
            100.0 * r.throughput.msgs_per_s / req
        );
    }
    let _ = writeln!(s);
    let corrected = if st.rate.is_some() {
        " (from intended send time)"
    } else {
        ""
    };
    let _ = writeln!(s, "  latency{corrected}: {}", lat(&r.latency_us));
    if let Some(u) = &r.extra.latency_uncorrected_us {
        let _ = writeln!(s, "  latency (from actual send, uncorrected): {}", lat(u));
    }
    if let Some(l) = r.extra.loadgen_cpu_us_per_msg {
        let _ = write!(s, "  cpu: loadgen {l:.2} us/msg");
        if let Some(sv) = r.extra.server_cpu_us_per_msg {
            let _ = write!(s, ", server {sv:.2} us/msg");
        }
        let _ = writeln!(s);
    }
    let e = &r.errors;
    let _ = writeln!(
        s,
        "  errors: connect {}  reset {}  timeout {}  mismatch {}  lost {}  duplicate {}  reordered {}",
        e.connect, e.reset, e.timeout, e.mismatch, e.lost, e.duplicate, e.reordered
    );
    s
}

/// HdrHistogram's sub-bucket count for the histogram's precision.
fn sub_buckets(h: &Histogram<u64>) -> u64 {
    let largest_single_unit = 2.0 * 10f64.powi(h.sigfig() as i32);
    2u64.pow(largest_single_unit.log2().ceil() as u32)
}
