//! Latency histograms and error counters kept by each event-loop thread.

use hdrhistogram::Histogram;

use crate::result::{Errors, Latency};

/// Highest latency the histograms hold: one hour, in microseconds.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// Records a latency given in nanoseconds (clamped to 1 µs .. one hour).
#[inline]
pub fn record_ns(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record((ns / 1000).clamp(1, MAX_LATENCY_US));
}

/// The `latency_us` summary of a histogram.
pub fn latency_of(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency::default();
    }
    let q = |p: f64| h.value_at_quantile(p) as f64;
    Latency {
        min: h.min() as f64,
        mean: h.mean(),
        p50: q(0.50),
        p90: q(0.90),
        p99: q(0.99),
        p99_9: q(0.999),
        p99_99: q(0.9999),
        max: h.max() as f64,
    }
}

/// Adds `b` into `a`.
pub fn add_errors(a: &mut Errors, b: &Errors) {
    a.connect += b.connect;
    a.reset += b.reset;
    a.timeout += b.timeout;
    a.mismatch += b.mismatch;
    a.lost += b.lost;
    a.duplicate += b.duplicate;
    a.reordered += b.reordered;
}

/// One thread's samples for one live-report interval (all phases).
#[derive(Debug)]
pub struct Interval {
    pub thread: usize,
    /// The tick this interval ends at.
    pub tick: u64,
    pub hist: Histogram<u64>,
    pub msgs: u64,
    pub bytes: u64,
    pub errors: Errors,
}

/// What one thread measured over the measured phase, returned when it ends.
#[derive(Debug)]
pub struct ThreadTotals {
    /// Latency from each message's intended send time (the corrected view).
    pub hist: Histogram<u64>,
    /// Latency from the moment its first byte was actually sent.
    pub hist_uncorrected: Histogram<u64>,
    pub messages: u64,
    pub bytes: u64,
    /// Errors inside the measured window; `connect` over the whole run.
    pub errors: Errors,
    /// Errors before the measured window (startup and warm-up); `connect` stays in `errors`.
    pub warmup_errors: Errors,
    /// Mismatched echoes over the whole run: corruption in warm-up fails the run too.
    pub mismatch_whole_run: u64,
    /// Open loop: messages the schedule asked this thread to send in the measured phase.
    pub scheduled: u64,
}
