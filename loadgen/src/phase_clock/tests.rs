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
fn lines_are_a_second_apart_but_land_on_phase_bounds_with_no_sliver() {
    let r = rig(&["-c", "1"]);
    let mut c = r.clock();
    assert_eq!(c.plan_line(0, 0), SECOND_NS, "no bound yet: a second later");
    assert_eq!(
        c.plan_line(0, 5 * SECOND_NS),
        6 * SECOND_NS,
        "a loop that fell behind skips to the grid"
    );
    r.shared.measure_start_ns.store(1_200 * MS, Relaxed);
    assert_eq!(
        c.plan_line(0, 0),
        1_200 * MS,
        "a bound within 1.5 s takes the line's end"
    );
    r.shared.measure_start_ns.store(1_600 * MS, Relaxed);
    assert_eq!(
        c.plan_line(0, 0),
        SECOND_NS,
        "a later bound waits for a line of its own"
    );
    c.end_ns = 2_100 * MS;
    assert_eq!(c.plan_line(1_600 * MS, 0), 2_100 * MS, "the end is a bound too");
}

#[test]
fn buckets_are_100ms_on_a_grid_and_end_with_the_lines() {
    let r = rig(&["-c", "1", "-d", "10s"]);
    let mut c = r.clock();
    assert_eq!(c.bucket_ns, 100 * MS);
    c.next_line_ns = SECOND_NS;
    assert_eq!(c.plan_tick(0, 0), 100 * MS);
    assert_eq!(
        c.plan_tick(900 * MS, 901 * MS),
        SECOND_NS,
        "the line's end is on the grid"
    );
    c.next_line_ns = 1_140 * MS;
    assert_eq!(
        c.plan_tick(1_000 * MS, 1_000 * MS),
        1_140 * MS,
        "stretched, not a 40 ms sliver"
    );
    c.next_line_ns = 1_160 * MS;
    assert_eq!(c.plan_tick(1_000 * MS, 1_000 * MS), 1_100 * MS, "then 60 ms");
    c.next_line_ns = 9 * SECOND_NS;
    assert_eq!(
        c.plan_tick(1_000 * MS, 1_010 * MS),
        1_100 * MS,
        "a tick 10 ms late keeps the grid"
    );
    assert_eq!(
        c.plan_tick(1_000 * MS, 1_270 * MS),
        1_400 * MS,
        "one 270 ms late skips the points it missed"
    );
}

/// Drives a whole run on a made-up clock, each thread reporting 100
/// messages per bucket, and returns the live lines it showed.
fn drive(c: &mut PhaseClock<'_>, shared: &Shared, threads: usize, until_ns: u64) -> Vec<IntervalView> {
    let mut lines = Vec::new();
    let mut now = 0;
    shared.open.store(c.args.conns, Relaxed);
    shared.ever_up.store(c.args.conns, Relaxed);
    while now <= until_ns {
        if let Some(t) = c.final_tick {
            if c.tick_no >= t && c.pending.is_empty() {
                break;
            }
        }
        if shared.load_start_ns.load(Relaxed) == UNSET {
            c.startup(now).unwrap();
        } else {
            c.under_load(now).unwrap();
        }
        if now >= c.next_tick_ns {
            c.tick(now);
            let p = c.pending.get_mut(&c.tick_no).unwrap();
            p.sum.msgs = 100 * threads as u64;
            p.reported = threads;
        }
        while let Some(entry) = c.pending.first_entry() {
            let p = entry.remove();
            lines.extend(c.take_bucket(p));
        }
        now += MS;
    }
    lines
}

#[test]
fn the_series_has_a_point_per_100ms_and_the_live_lines_stay_a_second() {
    let r = rig(&["-c", "2", "--warmup", "500ms", "-d", "1500ms"]);
    let mut c = r.clock();
    let lines = drive(&mut c, &r.shared, 1, 5 * SECOND_NS);
    let t: Vec<f64> = c.ph.series.iter().map(|p| p.t_s).collect();
    assert_eq!(t.len(), 15, "{t:?}");
    for (k, t) in t.iter().enumerate() {
        assert!((t - 0.1 * (k + 1) as f64).abs() < 1.5e-3, "{t} is off the grid");
    }
    assert!(c.ph.series.iter().all(|p| p.msgs == 100));
    assert_eq!(c.ph.series_interval_s, 0.1);
    // One line for the warm-up (every connection was up at once), one
    // for the whole measured phase (1.5 s: no 0.5 s line after a second).
    let phases: Vec<Phase> = lines.iter().map(|l| l.phase).collect();
    assert_eq!(phases.last(), Some(&Phase::Measured), "{phases:?}");
    let measured: Vec<&IntervalView> = lines.iter().filter(|l| l.phase == Phase::Measured).collect();
    assert_eq!(measured.len(), 1);
    assert!(
        (measured[0].msgs_per_s - 1_000.0).abs() < 10.0,
        "{}",
        measured[0].msgs_per_s
    );
    assert_eq!(phases, [Phase::Warmup, Phase::Measured]);
}

#[test]
fn a_longer_run_shows_a_line_a_second_made_of_ten_buckets() {
    let r = rig(&["-c", "1", "--warmup", "0s", "-d", "3s"]);
    let mut c = r.clock();
    let lines = drive(&mut c, &r.shared, 2, 10 * SECOND_NS);
    assert_eq!(c.ph.series.len(), 30);
    let measured: Vec<f64> = lines
        .iter()
        .filter(|l| l.phase == Phase::Measured)
        .map(|l| l.msgs_per_s)
        .collect();
    assert_eq!(measured.len(), 3, "{measured:?}");
    // 2 threads × 100 messages per 100 ms bucket.
    assert!(measured.iter().all(|r| (r - 2_000.0).abs() < 25.0), "{measured:?}");
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
