//! Live progress on stderr, so stdout keeps only the final report (or the JSON).
//!
//! It opens with a header as wrk prints one (`Running 10s test @ ...`). Then,
//! on a terminal: one updating line (indicatif) with the phase and its time
//! done out of its total, the last second's rate, p99 and errors, and the
//! connections up (while connecting too); warm-up is labelled and not counted
//! as done time. Elsewhere (a pipe, a log file, a test): one plain line per
//! report interval, about once a second, labelled with its phase. Either fits
//! 80 columns; every figure with `/s` is per second.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::Args;

/// Which phase a moment or an interval belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Connecting; no load yet.
    Startup,
    /// Load runs but is not measured.
    Warmup,
    /// The measured phase.
    Measured,
}

impl Phase {
    /// The word a plain line starts with.
    fn tag(self) -> &'static str {
        match self {
            Phase::Startup => "connect",
            Phase::Warmup => "warm-up",
            Phase::Measured => "measured",
        }
    }
}

/// The header printed at the start, as wrk prints it:
/// `Running 10s test @ tcp 127.0.0.1:7000 (after 1s warm-up)` and a line of
/// threads, connections and load.
pub fn start_header(args: &Args, target: &str, threads: usize) -> String {
    let human = |d: Duration| humantime::format_duration(d).to_string();
    let mode = match args.rate {
        Some(rate) => format!("open loop at {} msgs/s", compact(rate)),
        None => format!("closed loop, depth {}", args.depth),
    };
    format!(
        "Running {} test @ {} {target} (after {} warm-up)\n  {threads} thread{} and {} connection{}, \
         {}-byte messages, {mode}",
        human(args.duration),
        args.transport,
        human(args.warmup),
        if threads == 1 { "" } else { "s" },
        args.conns,
        if args.conns == 1 { "" } else { "s" },
        args.size
    )
}

/// A count or rate to three digits: `950`, `12.3k`, `1.25M`.
pub fn compact(v: f64) -> String {
    match v {
        v if v < 1e3 => format!("{v:.0}"),
        v if v < 1e6 => three_digits(v / 1e3, "k"),
        v if v < 1e9 => three_digits(v / 1e6, "M"),
        v => three_digits(v / 1e9, "G"),
    }
}

/// A latency to three digits for the live line: `85.0us`, `1.20ms`, `59.0s`
/// (the final report has `report::fmt_us`'s two decimals).
fn short_us(us: f64) -> String {
    match us {
        us if us < 1e3 => three_digits(us, "us"),
        us if us < 1e6 => three_digits(us / 1e3, "ms"),
        us => three_digits(us / 1e6, "s"),
    }
}

fn three_digits(v: f64, unit: &str) -> String {
    let decimals = if v >= 99.95 {
        0
    } else if v >= 9.995 {
        1
    } else {
        2
    };
    format!("{v:.decimals$}{unit}")
}

/// What one report interval saw, over every thread.
#[derive(Clone, Debug)]
pub struct IntervalView {
    /// End of the interval, seconds since loadgen started.
    pub at_s: f64,
    pub msgs_per_s: f64,
    pub mb_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: u64,
    pub open: u64,
    pub conns: u64,
    /// The phase the interval began in.
    pub phase: Phase,
}

/// The live display: a bar on a terminal, plain lines elsewhere.
pub struct Progress {
    bar: Option<ProgressBar>,
    warmup: Duration,
    duration: Duration,
}

impl Progress {
    /// A bar when stderr is a terminal, plain lines otherwise.
    pub fn new(warmup: Duration, duration: Duration) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(duration.as_millis().max(1) as u64), ProgressDrawTarget::stderr());
            bar.set_style(
                // 16 + 12 + 52: the message (`bar_message`) fits the rest of 80 columns.
                ProgressStyle::with_template("{prefix:>16} [{bar:8}] {wide_msg}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix("connecting");
            bar
        });
        Progress { bar, warmup, duration }
    }

    /// Moves the bar to `into_phase` of `phase`, with `up` of `conns`
    /// connections up (a terminal only; called often).
    pub fn at(&self, phase: Phase, into_phase: Duration, up: u64, conns: u64) {
        let Some(bar) = &self.bar else { return };
        let secs = |d: Duration| format!("{:.1}s", d.as_secs_f64());
        match phase {
            Phase::Startup => {
                bar.set_prefix(format!("connecting {}", secs(into_phase)));
                bar.set_message(format!("up {up}/{conns}"));
            }
            Phase::Warmup => {
                bar.set_prefix(format!("warm-up {}/{}", secs(into_phase), secs(self.warmup)));
                bar.set_position(0);
            }
            Phase::Measured => {
                let done = into_phase.min(self.duration);
                bar.set_prefix(format!("{}/{}", secs(done), secs(self.duration)));
                bar.set_position(done.as_millis() as u64);
            }
        }
    }

    /// Shows one report interval: the bar's message, or a plain line.
    pub fn interval(&self, iv: &IntervalView) {
        match &self.bar {
            Some(bar) if iv.phase != Phase::Startup => bar.set_message(bar_message(iv)),
            Some(_) => {} // connecting: `at` shows the connections up
            None => eprintln!("{}", plain_line(iv)),
        }
    }

    /// Prints a message (a warning) without tearing the bar.
    pub fn println(&self, msg: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{msg}")),
            None => eprintln!("{msg}"),
        }
    }

    /// Removes the bar, so that the report starts on a clean line.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The bar's message for one interval, at most 52 characters:
/// `123k msgs/s p99 1.20ms err/s 0 up 10000/10000`.
fn bar_message(iv: &IntervalView) -> String {
    format!(
        "{} msgs/s p99 {} err/s {} up {}/{}",
        compact(iv.msgs_per_s),
        short_us(iv.p99_us),
        compact(iv.errors as f64),
        iv.open,
        iv.conns
    )
}

/// One plain line for one interval, at most 80 characters:
/// `[  12.0s] measured  123k msgs/s p50/p99 85.0us/1.20ms err/s 0 up 8/8`.
pub fn plain_line(iv: &IntervalView) -> String {
    format!(
        "[{:>6.1}s] {:<8} {} msgs/s p50/p99 {}/{} err/s {} up {}/{}",
        iv.at_s,
        iv.phase.tag(),
        compact(iv.msgs_per_s),
        short_us(iv.p50_us),
        short_us(iv.p99_us),
        compact(iv.errors as f64),
        iv.open,
        iv.conns
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_lines_fit_80_columns_at_their_widest() {
        let iv = IntervalView {
            at_s: 9999.9,
            msgs_per_s: 999_000_000.0,
            mb_per_s: 1e5,
            p50_us: 999_000.0,
            p99_us: 59_000_000.0,
            errors: 999_000,
            open: 1_000_000,
            conns: 1_000_000,
            phase: Phase::Measured,
        };
        let line = plain_line(&iv);
        assert!(line.len() <= 80, "{} columns: {line}", line.len());
        assert!(line.contains("err/s") && line.contains("msgs/s"), "{line}");
        // The bar: a 16-column prefix, ` [` + 8 + `] `, then the message.
        let bar = bar_message(&iv);
        assert!(16 + 12 + bar.len() <= 80, "{} columns: {bar}", 28 + bar.len());
        assert_eq!(
            (compact(950.0), compact(12_345.0), compact(1_250_000.0)),
            ("950".into(), "12.3k".into(), "1.25M".into())
        );
        assert_eq!((short_us(85.0), short_us(1_200.0)), ("85.0us".into(), "1.20ms".into()));
        let warm = plain_line(&IntervalView {
            phase: Phase::Warmup,
            ..iv
        });
        assert!(warm.contains("] warm-up "), "{warm}");
    }

    #[test]
    fn the_header_reads_like_wrks() {
        use clap::Parser as _;
        let cli = crate::cli::Cli::parse_from(["loadgen", "-c", "10", "-d", "10s", "-R", "2500"]);
        let h = start_header(&cli.run, "127.0.0.1:7000", 1);
        assert!(
            h.starts_with("Running 10s test @ tcp 127.0.0.1:7000 (after 1s warm-up)\n"),
            "{h}"
        );
        assert!(
            h.contains("1 thread and 10 connections, 128-byte messages, open loop at 2.50k msgs/s"),
            "{h}"
        );
    }
}
