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
    /// The headline latency. Open loop: from each message's intended send
    /// time (the corrected view). Closed loop: from its send, as `--timeout` is.
    pub hist: Histogram<u64>,
    /// Latency from the moment its first byte was actually sent.
    pub hist_uncorrected: Histogram<u64>,
    /// Closed loop only: latency from when the message was queued (the echo
    /// before it came back), so including the time it waited in loadgen's own
    /// send queue behind a full socket buffer (`--depth` × `--size` past it).
    pub hist_queued: Option<Histogram<u64>>,
    /// Connections of this thread still up at the end that completed at least
    /// one echo: the ones that carried load (set as the thread ends).
    pub conns_carried_load: u64,
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
    /// `--conn-msgs`: what this thread measured of its conversations.
    pub conversations: Option<crate::conversation::ConvTotals>,
}

/// One message's times, in nanoseconds since the run's `t0`.
#[derive(Clone, Copy, Debug)]
pub struct Msg {
    /// When it was due: the corrected latency is measured from here, or from
    /// its send if that was earlier (`--slack`).
    pub intended: u64,
    /// When its first byte went out (0: not yet).
    pub sent: u64,
}

/// Counts and histograms of one event-loop thread.
pub struct Recorder {
    size: u64,
    /// Closed loop: the headline latency starts at the send, not at the queueing.
    closed_loop: bool,
    /// This live-report interval (all phases).
    pub iv_hist: Histogram<u64>,
    pub iv_msgs: u64,
    pub iv_bytes: u64,
    pub iv_errors: Errors,
    /// The measured window.
    pub totals: ThreadTotals,
    /// The measured window, in nanoseconds since the run's `t0` (`u64::MAX`: not set yet).
    pub measure_start: u64,
    pub end: u64,
}

impl Recorder {
    /// A recorder for `size`-byte messages in a closed or an open loop,
    /// before the measured window is known.
    pub fn new(size: usize, closed_loop: bool) -> Recorder {
        Recorder {
            size: size as u64,
            closed_loop,
            iv_hist: new_histogram(),
            iv_msgs: 0,
            iv_bytes: 0,
            iv_errors: Errors::default(),
            totals: ThreadTotals {
                hist: new_histogram(),
                hist_uncorrected: new_histogram(),
                hist_queued: closed_loop.then(new_histogram),
                conns_carried_load: 0,
                messages: 0,
                bytes: 0,
                errors: Errors::default(),
                warmup_errors: Errors::default(),
                mismatch_whole_run: 0,
                scheduled: 0,
                conversations: None,
            },
            measure_start: u64::MAX,
            end: u64::MAX,
        }
    }

    /// Records a message echoed at `now` that was due at `m.intended` and
    /// went out at `m.sent`; one that came back changed counts as a mismatch.
    #[inline]
    pub fn complete(&mut self, m: Msg, now: u64, intact: bool) {
        if !intact {
            self.mismatch(now);
            return;
        }
        // A message sent ahead of its due time (open loop's `--slack`) is
        // measured from its send: the corrected view never starts later
        // than the message went out.
        let (from_due, from_sent) = match m.sent {
            0 => (m.intended, m.intended),
            sent => (m.intended.min(sent), sent),
        };
        // A closed loop has no schedule: a message is "due" when the echo
        // before it came back, and with more in flight than the socket
        // buffers hold it then waits in loadgen's own queue. Its headline
        // latency starts at its send, where `--timeout` starts too; the
        // wait in the queue is kept apart (`hist_queued`).
        let headline_from = if self.closed_loop { from_sent } else { from_due };
        let lat = now.saturating_sub(headline_from);
        record_ns(&mut self.iv_hist, lat);
        self.iv_msgs += 1;
        self.iv_bytes += self.size;
        if now >= self.measure_start && now < self.end {
            record_ns(&mut self.totals.hist, lat);
            record_ns(&mut self.totals.hist_uncorrected, now.saturating_sub(from_sent));
            if let Some(h) = &mut self.totals.hist_queued {
                record_ns(h, now.saturating_sub(m.intended));
            }
            self.totals.messages += 1;
            self.totals.bytes += self.size;
        }
    }

    /// Counts an error that happened at `at`: always in the live interval, in
    /// the run's totals only inside the measured window, like messages and bytes.
    #[inline]
    pub fn error(&mut self, at: u64, f: impl Fn(&mut Errors)) {
        f(&mut self.iv_errors);
        if at >= self.measure_start && at < self.end {
            f(&mut self.totals.errors);
        } else if at < self.measure_start {
            f(&mut self.totals.warmup_errors);
        }
    }

    /// Counts an echo that did not match what was sent.
    #[inline]
    pub fn mismatch(&mut self, at: u64) {
        self.totals.mismatch_whole_run += 1;
        self.error(at, |e| e.mismatch += 1);
    }

    /// Counts a failed connect: in the totals whatever the phase, since
    /// startup is when connects happen (docs/loadgen.md, "How it drives load", Errors).
    pub fn connect_error(&mut self) {
        self.iv_errors.connect += 1;
        self.totals.errors.connect += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder() -> Recorder {
        recorder_for(false)
    }

    fn recorder_for(closed_loop: bool) -> Recorder {
        let mut r = Recorder::new(128, closed_loop);
        r.measure_start = 0;
        r.end = u64::MAX;
        r
    }

    #[test]
    fn a_message_sent_ahead_of_its_due_time_is_measured_from_its_send() {
        let mut r = recorder();
        // Due at 100 us, sent 30 us early (--slack), echoed at 150 us.
        r.complete(
            Msg {
                intended: 100_000,
                sent: 70_000,
            },
            150_000,
            true,
        );
        assert_eq!(
            r.totals.hist.max(),
            80,
            "corrected: from the send, not from the later due time"
        );
        assert_eq!(r.totals.hist_uncorrected.max(), 80);
    }

    #[test]
    fn a_late_send_counts_from_the_due_time_in_the_corrected_view_only() {
        let mut r = recorder();
        r.complete(
            Msg {
                intended: 100_000,
                sent: 400_000,
            },
            450_000,
            true,
        );
        assert_eq!(r.totals.hist.max(), 350);
        assert_eq!(r.totals.hist_uncorrected.max(), 50);
    }

    #[test]
    fn a_closed_loop_measures_from_the_send_and_keeps_the_queue_wait_apart() {
        // Queued at 0 (its predecessor's echo), sent at 20 ms once the socket
        // buffer had room, echoed at 20.3 ms: 300 us from the send, as
        // --timeout counts, and 20.3 ms including loadgen's own queue.
        let mut r = recorder_for(true);
        r.complete(
            Msg {
                intended: 1_000,
                sent: 20_001_000,
            },
            20_301_000,
            true,
        );
        assert_eq!(r.totals.hist.max(), 300);
        assert_eq!(r.totals.hist_uncorrected.max(), 300);
        let queued = r
            .totals
            .hist_queued
            .as_ref()
            .expect("closed loop keeps the queued view");
        assert!((20_290..=20_310).contains(&queued.max()), "{}", queued.max());
        assert!(
            recorder().totals.hist_queued.is_none(),
            "an open loop has no queued view"
        );
    }
}
