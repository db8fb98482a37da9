//! The phase clock: the main thread's loop while the event-loop threads
//! run. It waits for the connections, starts the load (at `--start-at` or
//! when every connection is up), runs the warm-up and the measured phase,
//! ticks the report intervals, and gathers the threads' intervals into the
//! series (one point per bucket, 100 ms in runs up to a minute) and the live
//! display (a line about every second, made of whole buckets). It sees the
//! run only through [`Shared`]'s atomics and the interval channel, and
//! returns [`Phases`].

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::{self, Relaxed};
use std::sync::mpsc;
use std::time::Duration;

use sockbench::sys::signal;

use crate::cli::Args;
use crate::kernel_counters::{KernelCounters, Snapshot};
use crate::progress::{IntervalView, Phase, Progress};
use crate::result::{series_interval, Errors, SeriesPoint};
use crate::stats::{self, Interval};
use crate::worker::{Shared, UNSET};

const SECOND_NS: u64 = 1_000_000_000;

/// Grace after the last paced connect before startup gives up waiting.
const CONNECT_GRACE: Duration = Duration::from_secs(3);

/// Why a run ended before its measured phase was over.
#[derive(Clone, Debug)]
pub enum EarlyStop {
    /// No connection came up: nothing was measured.
    Unreachable(String),
    /// Every connection was lost after load started.
    ServerGone(String),
    /// SIGINT or SIGTERM.
    Interrupted,
    /// An event-loop thread failed.
    ThreadFailed(String),
}

impl EarlyStop {
    pub fn message(&self) -> String {
        match self {
            EarlyStop::Unreachable(why) | EarlyStop::ServerGone(why) | EarlyStop::ThreadFailed(why) => why.clone(),
            EarlyStop::Interrupted => "interrupted by a signal; the result covers the measured phase up to then".into(),
        }
    }
}

/// What the main thread saw while driving the phases.
pub struct Phases {
    /// Why the run ended early, if it did.
    pub stop: Option<EarlyStop>,
    /// One point per bucket of the measured phase.
    pub series: Vec<SeriesPoint>,
    /// The buckets' width, seconds ([`series_interval`] of `--duration`).
    pub series_interval_s: f64,
    /// The measured phase's length in seconds (shorter if cut short).
    pub measured_s: f64,
    /// loadgen's CPU time over the measured phase, µs.
    pub cpu_us: Option<u64>,
    /// The kernel's drops and retransmissions over the measured phase
    /// (`None` if it never began).
    pub kernel: Option<KernelCounters>,
    /// With `--server-pid`: the server tree's CPU time over the measured phase, µs.
    pub server_cpu_us: Option<u64>,
    /// How the stream clients did their I/O, once the threads have said.
    pub io_used: &'static str,
    /// The measured window's start in wall-clock time, ns since the Unix epoch.
    pub window_start_unix_ns: Option<u64>,
    /// Connections that had come up when the measured phase began (or when
    /// the run ended, if it ended before): a connection that comes up later
    /// misses part of the window.
    pub conns_up: u64,
}

/// One reading of both clocks, to turn the run's monotonic times into
/// wall-clock times (the window) and `--start-at` into a monotonic time.
struct ClockAnchor {
    mono_ns: u64,
    unix_ns: u64,
}

impl ClockAnchor {
    fn now(shared: &Shared) -> ClockAnchor {
        let unix_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        ClockAnchor {
            mono_ns: shared.now_ns(),
            unix_ns,
        }
    }

    fn to_unix_ns(&self, mono_ns: u64) -> u64 {
        (self.unix_ns + mono_ns).saturating_sub(self.mono_ns)
    }

    fn to_mono_ns(&self, at: std::time::SystemTime) -> u64 {
        let at_ns = at
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        (self.mono_ns + at_ns).saturating_sub(self.unix_ns)
    }
}

/// One bucket being collected: the threads' sum so far.
struct PendingTick {
    sum: Interval,
    /// How many threads have reported this tick.
    reported: usize,
    from_ns: u64,
    to_ns: u64,
    /// This tick also ends a live report line.
    ends_line: bool,
}

/// The live report line being built from its buckets.
struct LiveLine {
    sum: Interval,
    from_ns: u64,
}

/// CPU times (µs) at the start of the measured phase.
#[derive(Default)]
struct CpuAtStart {
    loadgen: Option<u64>,
    server: Option<u64>,
}

/// The first connects refused before loadgen gives up at once (fewer with
/// fewer connections): a server that is not there refuses every one, while a
/// live one answers the first few.
const FAIL_FAST_REFUSALS: u64 = 3;

/// The main thread's state while it drives startup, warm-up and the measured
/// phase: it starts the phases, ticks the buckets, collects the threads'
/// intervals into the series and the live display.
///
/// Ticks end buckets; some of them also end a live line. Both are planned
/// from the last planned tick, not from when the loop got to it, so that
/// the buckets stay on a grid and those of several hosts line up.
pub struct PhaseClock<'a> {
    args: &'a Args,
    shared: &'a Shared,
    rx: &'a mpsc::Receiver<Interval>,
    threads: usize,
    progress: &'a Progress,
    target: String,
    connect_deadline_ns: u64,
    ph: Phases,
    pending: BTreeMap<u64, PendingTick>,
    tick_no: u64,
    /// When the last tick happened, and when it was planned.
    tick_start_ns: u64,
    tick_planned_ns: u64,
    /// When the next tick is due (may be past: the loop ticks at once).
    next_tick_ns: u64,
    /// A bucket's width, ns.
    bucket_ns: u64,
    /// When the last live line was planned to end, and the next one.
    line_planned_ns: u64,
    next_line_ns: u64,
    line: Option<LiveLine>,
    end_ns: u64,
    final_tick: Option<u64>,
    cpu_at_start: Option<CpuAtStart>,
    /// The kernel's counters when the measured phase began.
    kernel_at_start: Option<Snapshot>,
    clock: ClockAnchor,
    /// `--start-at` on the monotonic clock.
    start_at_ns: Option<u64>,
}

impl<'a> PhaseClock<'a> {
    pub fn new(
        args: &'a Args,
        shared: &'a Shared,
        rx: &'a mpsc::Receiver<Interval>,
        threads: usize,
        progress: &'a Progress,
        target: String,
    ) -> PhaseClock<'a> {
        let spread = Duration::from_secs_f64(args.conns as f64 / args.connect_rate as f64);
        let clock = ClockAnchor::now(shared);
        let start_at_ns = args.start_at.map(|at| clock.to_mono_ns(at));
        let bucket_ns = series_interval(args.duration).as_nanos() as u64;
        PhaseClock {
            clock,
            start_at_ns,
            args,
            shared,
            rx,
            threads,
            progress,
            target,
            connect_deadline_ns: (spread + CONNECT_GRACE).as_nanos() as u64,
            ph: Phases {
                stop: None,
                series: Vec::new(),
                series_interval_s: series_interval(args.duration).as_secs_f64(),
                measured_s: 0.0,
                cpu_us: None,
                kernel: None,
                server_cpu_us: None,
                io_used: "epoll",
                window_start_unix_ns: None,
                conns_up: 0,
            },
            pending: BTreeMap::new(),
            tick_no: 0,
            tick_start_ns: 0,
            tick_planned_ns: 0,
            next_tick_ns: bucket_ns,
            bucket_ns,
            line_planned_ns: 0,
            next_line_ns: SECOND_NS,
            line: None,
            end_ns: UNSET,
            final_tick: None,
            cpu_at_start: None,
            kernel_at_start: None,
        }
    }

    /// Drives the run to its end and returns what it saw.
    pub fn run(mut self) -> Phases {
        loop {
            if let Some(t) = self.final_tick {
                if !self.pending.contains_key(&t) && self.tick_no >= t {
                    break;
                }
            }
            let now = self.shared.now_ns();
            let step = if self.shared.load_start_ns.load(Relaxed) == UNSET {
                self.startup(now)
            } else {
                self.under_load(now)
            };
            if let Err(stop) = step {
                self.ph.stop = Some(stop);
                break;
            }
            self.show_position(now);
            if now >= self.next_tick_ns {
                self.tick(now);
            }
            self.collect();
            self.show_ready();
        }
        if self.cpu_at_start.is_none() {
            self.ph.conns_up = self.shared.ever_up.load(Relaxed);
        }
        // A run that ended early without closing its window (the server
        // gone, a thread failed): the counters up to now, when the lost
        // packets may be why.
        if self.ph.kernel.is_none() {
            self.ph.kernel = self.kernel_at_start.as_ref().map(|k| k.until(&Snapshot::take()));
        }
        self.ph
    }

    fn measure_start_ns(&self) -> u64 {
        self.shared.measure_start_ns.load(Relaxed)
    }

    fn server_cpu_us(&self) -> Option<u64> {
        self.args
            .server_pid
            .and_then(|p| sockbench::procfs::tree_cpu_us(p).ok())
    }

    /// Stops shared by every phase: a failed thread, a signal.
    fn check_stop(&mut self, now: u64) -> Result<(), EarlyStop> {
        if self.shared.stop.load(Relaxed) {
            // A thread that ends the run on purpose says why (e.g. out of source ports).
            let why = self.shared.fatal.lock().unwrap().clone();
            return Err(EarlyStop::ThreadFailed(
                why.unwrap_or_else(|| "an event-loop thread failed".into()),
            ));
        }
        if signal::stop_requested() {
            // Ctrl-C or SIGTERM: end now and still write what was measured,
            // marked incomplete, rather than lose the run.
            let ms = self.measure_start_ns();
            if ms != UNSET && now > ms {
                self.close_window(now.min(self.end_ns).saturating_sub(ms) as f64 / 1e9);
            }
            return Err(EarlyStop::Interrupted);
        }
        Ok(())
    }

    /// Records the measured phase's length, the CPU spent in it and the
    /// kernel's counters over it.
    fn close_window(&mut self, measured_s: f64) {
        self.ph.measured_s = measured_s;
        self.ph.kernel = self.kernel_at_start.as_ref().map(|k| k.until(&Snapshot::take()));
        let Some(at_start) = &self.cpu_at_start else { return };
        if let (Some(a), Ok(b)) = (at_start.loadgen, crate::sys::process_cpu_us()) {
            self.ph.cpu_us = Some(b.saturating_sub(a));
        }
        if let (Some(a), Some(b)) = (at_start.server, self.server_cpu_us()) {
            self.ph.server_cpu_us = Some(b.saturating_sub(a));
        }
    }

    /// Startup: waits for the connections, starts the load, or gives up.
    fn startup(&mut self, now: u64) -> Result<(), EarlyStop> {
        self.check_stop(now)?;
        let (up, conns) = (self.shared.open.load(Relaxed), self.args.conns);
        let conversations = self.args.conn_msgs.is_some();
        let due = match self.start_at_ns {
            // Conversations connect once load has started, each measured whole.
            Some(at) if conversations => now >= at,
            None if conversations => true,
            // --start-at: load starts at that instant, with the connections up by then.
            Some(at) => now >= at && up > 0,
            None => up == conns || (now >= self.connect_deadline_ns && up > 0),
        };
        if due {
            if conversations {
                // Nothing has connected yet: nothing to warn about.
            } else if up < conns && self.start_at_ns.is_some() {
                self.progress.println(&format!(
                    "loadgen: warning: only {up} of {conns} connections up at --start-at; going on with those, \
                     and the run will be FAILED (give a later --start-at, or a higher --connect-rate)"
                ));
            } else if up < conns {
                self.progress.println(&format!(
                    "loadgen: warning: only {up} of {conns} connections up after {:.1}s; going on with those, \
                     and the run will be FAILED",
                    now as f64 / 1e9
                ));
            }
            self.start_load(now);
            return Ok(());
        }
        if self.all_refused() || (now >= self.connect_deadline_ns.max(self.start_at_ns.unwrap_or(0)) && up == 0) {
            return Err(EarlyStop::Unreachable(self.unreachable()));
        }
        Ok(())
    }

    /// The "cannot reach" message, with the last connect error.
    fn unreachable(&self) -> String {
        let why = self
            .shared
            .last_connect_error
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| "no answer".into());
        format!(
            "cannot reach the server at {} {}: {why}; is it running?",
            self.args.transport, self.target
        )
    }

    /// No connection ever came up and the first connects were all refused.
    fn all_refused(&self) -> bool {
        let refused = self.shared.connects_refused.load(Relaxed);
        self.shared.ever_up.load(Relaxed) == 0
            && refused >= FAIL_FAST_REFUSALS.min(self.args.conns)
            && refused == self.shared.connects_failed.load(Relaxed)
    }

    /// Every connection is up (or the grace is over): load starts now.
    fn start_load(&mut self, now: u64) {
        let ms = now + self.args.warmup.as_nanos() as u64;
        self.end_ns = ms + self.args.duration.as_nanos() as u64;
        self.ph.window_start_unix_ns = Some(self.clock.to_unix_ns(ms));
        self.shared.measure_start_ns.store(ms, Relaxed);
        self.shared.end_ns.store(self.end_ns, Relaxed);
        self.shared.load_start_ns.store(now, Ordering::Release);
        // Ticks fall on the measured phase's bounds, so warm-up stays out of
        // the series, and its buckets are on a grid from its start.
        self.next_line_ns = self.plan_line(self.line_planned_ns, now);
        self.next_tick_ns = self.plan_tick(self.tick_planned_ns, now);
    }

    /// The end of the live line after one planned to end at `last`: a
    /// second later, or at the next phase bound if that comes within 1.5 s,
    /// so that no line covers a sliver (nor do lines come 0.1 s apart).
    /// Every phase bound ends a line.
    fn plan_line(&self, last: u64, now: u64) -> u64 {
        let regular = on_grid_after(last, SECOND_NS, now);
        let stretched = regular + SECOND_NS / 2;
        let bound = [self.measure_start_ns(), self.end_ns]
            .into_iter()
            .filter(|&b| b != UNSET && b > last)
            .min();
        match bound {
            Some(b) if b <= stretched => b,
            _ => regular,
        }
    }

    /// The tick after one planned at `last`: a bucket later, or at the end of
    /// the live line if that comes within a bucket and a half, so that no
    /// bucket is a sliver and every line is made of whole buckets (and ends
    /// at the phase bounds with them).
    fn plan_tick(&self, last: u64, now: u64) -> u64 {
        let regular = on_grid_after(last, self.bucket_ns, now);
        if self.next_line_ns <= regular + self.bucket_ns / 2 {
            self.next_line_ns
        } else {
            regular
        }
    }

    /// Warm-up and the measured phase: watch for the end and for a dead server.
    fn under_load(&mut self, now: u64) -> Result<(), EarlyStop> {
        self.check_stop(now)?;
        let ms = self.measure_start_ns();
        if now >= ms && self.cpu_at_start.is_none() {
            self.ph.conns_up = self.shared.ever_up.load(Relaxed);
            self.cpu_at_start = Some(CpuAtStart {
                loadgen: crate::sys::process_cpu_us().ok(),
                server: self.server_cpu_us(),
            });
            // A few small /proc files, read on this thread, not the event loops'.
            self.kernel_at_start = Some(Snapshot::take());
        }
        if self.args.conn_msgs.is_some() {
            // Connections come and go; only a server that refuses the first
            // ones is given up on (a later failure is counted, by kind).
            if self.all_refused() {
                return Err(EarlyStop::Unreachable(self.unreachable()));
            }
        } else if self.shared.open.load(Relaxed) == 0 {
            let why = self.shared.last_loss.lock().unwrap().clone().unwrap_or_default();
            self.ph.measured_s = now.saturating_sub(ms) as f64 / 1e9;
            return Err(EarlyStop::ServerGone(format!(
                "every connection to {} is gone ({why}); did the server die?",
                self.target
            )));
        }
        if now >= self.end_ns && self.final_tick.is_none() {
            self.close_window(self.args.duration.as_secs_f64());
            // One last tick collects the final partial interval and ends the
            // last line; the threads stop after it.
            self.next_tick_ns = now;
            self.next_line_ns = now;
            self.final_tick = Some(self.tick_no + 1);
        }
        Ok(())
    }

    /// Moves the live display to where the run is.
    fn show_position(&self, now: u64) {
        let ms = self.measure_start_ns();
        let (phase, into) = match self.shared.load_start_ns.load(Relaxed) {
            UNSET => (Phase::Startup, now),
            start if now < ms => (Phase::Warmup, now.saturating_sub(start)),
            _ => (Phase::Measured, now.saturating_sub(ms)),
        };
        self.progress.at(
            phase,
            Duration::from_nanos(into),
            self.shared.open.load(Relaxed),
            self.args.conns,
        );
    }

    /// Ends a bucket (and maybe a live line): the threads each send theirs for it.
    fn tick(&mut self, now: u64) {
        let planned = self.next_tick_ns;
        let ends_line = planned >= self.next_line_ns;
        self.tick_no += 1;
        let empty = Interval {
            thread: 0,
            tick: self.tick_no,
            hist: stats::new_histogram(),
            msgs: 0,
            bytes: 0,
            errors: Errors::default(),
        };
        self.pending.insert(
            self.tick_no,
            PendingTick {
                sum: empty,
                reported: 0,
                from_ns: self.tick_start_ns,
                to_ns: now,
                ends_line,
            },
        );
        self.tick_start_ns = now;
        self.tick_planned_ns = planned;
        self.shared.tick.store(self.tick_no, Relaxed);
        if ends_line {
            self.line_planned_ns = planned;
            self.next_line_ns = self.plan_line(planned, now);
        }
        // After the final tick the threads stop; the next one is never due
        // before they have, and the loop ends when the final interval is in.
        self.next_tick_ns = self.plan_tick(planned, now);
    }

    /// Waits a little for the threads' intervals and adds them up by tick.
    fn collect(&mut self) {
        // Before load, wake for --start-at too, so that hosts start within a millisecond of it.
        let due = match self.start_at_ns {
            Some(at) if self.shared.load_start_ns.load(Relaxed) == UNSET => self.next_tick_ns.min(at),
            _ => self.next_tick_ns,
        };
        let wait = due.saturating_sub(self.shared.now_ns());
        let wait = Duration::from_nanos(wait.clamp(1_000_000, 50_000_000));
        let Ok(first) = self.rx.recv_timeout(wait) else { return };
        for iv in std::iter::once(first).chain(self.rx.try_iter()) {
            if let Some(p) = self.pending.get_mut(&iv.tick) {
                let _ = p.sum.hist.add(&iv.hist);
                p.sum.msgs += iv.msgs;
                p.sum.bytes += iv.bytes;
                stats::add_errors(&mut p.sum.errors, &iv.errors);
                p.reported += 1;
            }
        }
    }

    /// Takes in every bucket all threads have reported (or that waited long
    /// enough), in order: the measured ones go into the series, and each
    /// live line is shown once its last bucket is in.
    fn show_ready(&mut self) {
        let now = self.shared.now_ns();
        let closing = self.final_tick.is_some();
        while let Some(entry) = self.pending.first_entry() {
            let (t, p) = (*entry.key(), entry.get());
            let ready = p.reported >= self.threads || ((t < self.tick_no || closing) && now > p.to_ns + 300_000_000);
            if !ready {
                break;
            }
            let p = entry.remove();
            if let Some(view) = self.take_bucket(p) {
                self.progress.interval(&view);
            }
        }
    }

    /// The phase an interval from `from_ns` began in.
    fn phase_at(&self, from_ns: u64) -> Phase {
        let ms = self.measure_start_ns();
        if ms == UNSET {
            Phase::Startup
        } else if from_ns < ms {
            Phase::Warmup
        } else {
            Phase::Measured
        }
    }

    /// Adds one bucket to the series (if measured) and to the live line;
    /// returns the line if the bucket ends it.
    fn take_bucket(&mut self, p: PendingTick) -> Option<IntervalView> {
        if self.phase_at(p.from_ns) == Phase::Measured {
            let ms = self.measure_start_ns();
            self.ph.series.push(SeriesPoint {
                // To the microsecond: a bucket's rate is its messages over
                // the time since the previous point.
                t_s: ((p.to_ns - ms) as f64 / 1e3).round() / 1e6,
                msgs: p.sum.msgs,
                p50_us: p.sum.hist.value_at_quantile(0.5) as f64,
                p99_us: p.sum.hist.value_at_quantile(0.99) as f64,
                errors: p.sum.errors.total(),
            });
        }
        let (ends_line, to_ns) = (p.ends_line, p.to_ns);
        match &mut self.line {
            None => {
                self.line = Some(LiveLine {
                    from_ns: p.from_ns,
                    sum: p.sum,
                })
            }
            Some(line) => {
                let _ = line.sum.hist.add(&p.sum.hist);
                line.sum.msgs += p.sum.msgs;
                line.sum.bytes += p.sum.bytes;
                stats::add_errors(&mut line.sum.errors, &p.sum.errors);
            }
        }
        if !ends_line {
            return None;
        }
        let line = self.line.take()?;
        let secs = (to_ns - line.from_ns).max(1) as f64 / 1e9;
        Some(IntervalView {
            at_s: to_ns as f64 / 1e9,
            msgs_per_s: line.sum.msgs as f64 / secs,
            mb_per_s: line.sum.bytes as f64 / secs / 1e6,
            p50_us: line.sum.hist.value_at_quantile(0.5) as f64,
            p99_us: line.sum.hist.value_at_quantile(0.99) as f64,
            errors: line.sum.errors.total(),
            open: self.shared.open.load(Relaxed),
            conns: self.args.conns,
            phase: self.phase_at(line.from_ns),
        })
    }
}

/// The first point of the grid `last + k·step` (k ≥ 1) at least half a
/// step after `now`: a loop that fell behind skips the points it missed
/// rather than catching up in slivers.
fn on_grid_after(last: u64, step: u64, now: u64) -> u64 {
    let next = last + step;
    let earliest = now + step / 2;
    if next < earliest {
        next + (earliest - next).div_ceil(step) * step
    } else {
        next
    }
}

#[cfg(test)]
mod tests;
