//! The phase clock: the main thread's loop while the event-loop threads
//! run. It waits for the connections, starts the load (at `--start-at` or
//! when every connection is up), runs the warm-up and the measured phase,
//! ticks the report intervals, and gathers the threads' intervals into the
//! live display and the per-second series. It sees the run only through
//! [`Shared`]'s atomics and the interval channel, and returns [`Phases`].

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::{self, Relaxed};
use std::sync::mpsc;
use std::time::Duration;

use sockbench::sys::signal;

use crate::cli::Args;
use crate::progress::{IntervalView, Phase, Progress};
use crate::result::{Errors, SeriesPoint};
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
    /// One point per report interval of the measured phase.
    pub series: Vec<SeriesPoint>,
    /// The measured phase's length in seconds (shorter if cut short).
    pub measured_s: f64,
    /// loadgen's CPU time over the measured phase, µs.
    pub cpu_us: Option<u64>,
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

/// One report interval being collected: the threads' sum so far.
struct PendingTick {
    sum: Interval,
    /// How many threads have reported this tick.
    reported: usize,
    from_ns: u64,
    to_ns: u64,
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
/// phase: it starts the phases, ticks the report intervals, collects the
/// threads' intervals into the live display and the series.
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
    tick_start_ns: u64,
    next_tick_ns: u64,
    end_ns: u64,
    final_tick: Option<u64>,
    cpu_at_start: Option<CpuAtStart>,
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
                measured_s: 0.0,
                cpu_us: None,
                server_cpu_us: None,
                io_used: "epoll",
                window_start_unix_ns: None,
                conns_up: 0,
            },
            pending: BTreeMap::new(),
            tick_no: 0,
            tick_start_ns: 0,
            next_tick_ns: SECOND_NS,
            end_ns: UNSET,
            final_tick: None,
            cpu_at_start: None,
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

    /// Records the measured phase's length and the CPU spent in it.
    fn close_window(&mut self, measured_s: f64) {
        self.ph.measured_s = measured_s;
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
        // Ticks fall on the measured phase's bounds, so warm-up stays out of the series.
        self.next_tick_ns = self.plan_tick(self.tick_start_ns, now);
    }

    /// The tick after one at `last`: a second later, or at the next phase
    /// bound if that comes within 1.5 s, so that no interval is a sliver
    /// (and the live lines do not come 0.1 s apart).
    fn plan_tick(&self, last: u64, now: u64) -> u64 {
        let regular = last + SECOND_NS;
        let stretched = regular + SECOND_NS / 2;
        let bound = [self.measure_start_ns(), self.end_ns]
            .into_iter()
            .filter(|&b| b != UNSET && b > last)
            .min();
        let next = match bound {
            Some(b) if b <= stretched => b,
            _ => regular,
        };
        next.max(now)
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
            // One last tick collects the final partial interval; the threads stop after it.
            self.next_tick_ns = now;
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

    /// Ends a report interval: the threads each send theirs for it.
    fn tick(&mut self, now: u64) {
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
            },
        );
        self.tick_start_ns = now;
        self.shared.tick.store(self.tick_no, Relaxed);
        // After the final tick the threads stop; the next one is never due
        // before they have, and the loop ends when the final interval is in.
        self.next_tick_ns = self.plan_tick(now, now);
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

    /// Shows every interval all threads have reported (or that waited long
    /// enough), and adds the measured ones to the series.
    fn show_ready(&mut self) {
        let now = self.shared.now_ns();
        let closing = self.final_tick.is_some();
        let ready: Vec<u64> = self
            .pending
            .iter()
            .filter(|(&t, p)| {
                p.reported >= self.threads || ((t < self.tick_no || closing) && now > p.to_ns + 300_000_000)
            })
            .map(|(&t, _)| t)
            .collect();
        for t in ready {
            if let Some(p) = self.pending.remove(&t) {
                self.show_interval(p);
            }
        }
    }

    fn show_interval(&mut self, p: PendingTick) {
        let secs = (p.to_ns - p.from_ns).max(1) as f64 / 1e9;
        let ms = self.measure_start_ns();
        let phase = if ms == UNSET {
            Phase::Startup
        } else if p.from_ns < ms {
            Phase::Warmup
        } else {
            Phase::Measured
        };
        let (p50_us, p99_us) = (
            p.sum.hist.value_at_quantile(0.5) as f64,
            p.sum.hist.value_at_quantile(0.99) as f64,
        );
        self.progress.interval(&IntervalView {
            at_s: p.to_ns as f64 / 1e9,
            msgs_per_s: p.sum.msgs as f64 / secs,
            mb_per_s: p.sum.bytes as f64 / secs / 1e6,
            p50_us,
            p99_us,
            errors: p.sum.errors.total(),
            open: self.shared.open.load(Relaxed),
            conns: self.args.conns,
            phase,
        });
        if phase == Phase::Measured {
            self.ph.series.push(SeriesPoint {
                t_s: ((p.to_ns - ms) as f64 / 1e9 * 1000.0).round() / 1000.0,
                msgs: p.sum.msgs,
                p50_us,
                p99_us,
                errors: p.sum.errors.total(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    /// What a clock needs around it: flags, the shared state, a channel, a display.
    struct Rig {
        args: Args,
        shared: Shared,
        rx: mpsc::Receiver<Interval>,
        progress: Progress,
    }

    fn rig(flags: &[&str]) -> Rig {
        let mut argv = vec!["loadgen"];
        argv.extend_from_slice(flags);
        let args = crate::cli::Cli::parse_from(argv).run;
        let (_tx, rx) = mpsc::channel();
        let progress = Progress::new(args.warmup, args.duration);
        Rig {
            args,
            shared: Shared::new(),
            rx,
            progress,
        }
    }

    impl Rig {
        fn clock(&self) -> PhaseClock<'_> {
            PhaseClock::new(&self.args, &self.shared, &self.rx, 1, &self.progress, "test".into())
        }
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn load_starts_when_every_connection_is_up_and_sets_the_window() {
        let r = rig(&["-c", "4", "--warmup", "1s", "-d", "2s"]);
        let mut c = r.clock();
        r.shared.open.store(3, Relaxed);
        c.startup(100 * MS).unwrap();
        assert_eq!(
            r.shared.load_start_ns.load(Relaxed),
            UNSET,
            "3 of 4 up: still connecting"
        );
        r.shared.open.store(4, Relaxed);
        c.startup(200 * MS).unwrap();
        assert_eq!(r.shared.load_start_ns.load(Relaxed), 200 * MS);
        assert_eq!(r.shared.measure_start_ns.load(Relaxed), 1_200 * MS, "after the warm-up");
        assert_eq!(r.shared.end_ns.load(Relaxed), 3_200 * MS, "after the measured phase");
        let start = c.ph.window_start_unix_ns.unwrap();
        assert_eq!(start, c.clock.to_unix_ns(1_200 * MS));
    }

    #[test]
    fn with_no_connection_up_after_the_grace_the_server_is_unreachable() {
        let r = rig(&["-c", "2", "--connect-rate", "1000"]);
        let mut c = r.clock();
        assert!(
            c.startup(CONNECT_GRACE.as_nanos() as u64 - MS).is_ok(),
            "still within the grace"
        );
        match c.startup(CONNECT_GRACE.as_nanos() as u64 + 3 * MS) {
            Err(EarlyStop::Unreachable(why)) => assert!(why.contains("cannot reach the server"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_connection_lost_under_load_ends_the_run() {
        let r = rig(&["-c", "2", "--warmup", "0s", "-d", "1s"]);
        let mut c = r.clock();
        r.shared.open.store(2, Relaxed);
        c.startup(0).unwrap();
        assert!(c.under_load(10 * MS).is_ok());
        assert_eq!(c.ph.conns_up, 0, "nothing ever came up in this rig");
        r.shared.open.store(0, Relaxed);
        assert!(matches!(c.under_load(20 * MS), Err(EarlyStop::ServerGone(_))));
    }

    #[test]
    fn the_end_of_the_measured_phase_closes_the_window_and_asks_for_a_last_tick() {
        let r = rig(&["-c", "1", "--warmup", "0s", "-d", "1s"]);
        let mut c = r.clock();
        r.shared.open.store(1, Relaxed);
        r.shared.ever_up.store(1, Relaxed);
        c.startup(0).unwrap();
        c.under_load(MS).unwrap();
        assert_eq!(c.ph.conns_up, 1, "counted as the measured phase begins");
        assert!(c.final_tick.is_none());
        c.under_load(1_000 * MS).unwrap();
        assert_eq!(c.ph.measured_s, 1.0);
        assert_eq!(c.final_tick, Some(c.tick_no + 1));
        assert_eq!(c.next_tick_ns, 1_000 * MS, "the last tick is due now");
    }

    #[test]
    fn ticks_are_a_second_apart_but_land_on_phase_bounds_with_no_sliver() {
        let r = rig(&["-c", "1"]);
        let mut c = r.clock();
        assert_eq!(c.plan_tick(0, 0), SECOND_NS, "no bound yet: a second later");
        r.shared.measure_start_ns.store(1_200 * MS, Relaxed);
        assert_eq!(c.plan_tick(0, 0), 1_200 * MS, "a bound within 1.5 s takes the tick");
        r.shared.measure_start_ns.store(1_600 * MS, Relaxed);
        assert_eq!(c.plan_tick(0, 0), SECOND_NS, "a later bound waits for its own tick");
        c.end_ns = 2_100 * MS;
        assert_eq!(c.plan_tick(1_600 * MS, 0), 2_100 * MS, "the end is a bound too");
        assert_eq!(c.plan_tick(0, 5 * SECOND_NS), 5 * SECOND_NS, "never in the past");
    }

    #[test]
    fn the_clock_anchor_converts_both_ways() {
        let shared = Shared::new();
        let anchor = ClockAnchor {
            mono_ns: 5 * SECOND_NS,
            unix_ns: 1_796_130_300 * SECOND_NS,
        };
        assert_eq!(anchor.to_unix_ns(6 * SECOND_NS), 1_796_130_301 * SECOND_NS);
        let at = std::time::UNIX_EPOCH + Duration::from_secs(1_796_130_302);
        assert_eq!(anchor.to_mono_ns(at), 7 * SECOND_NS);
        // Before the monotonic clock's start: saturates at 0, never wraps.
        assert_eq!(anchor.to_mono_ns(std::time::UNIX_EPOCH), 0);
        let now = ClockAnchor::now(&shared);
        assert!(now.unix_ns > 1_700_000_000 * SECOND_NS);
    }
}
