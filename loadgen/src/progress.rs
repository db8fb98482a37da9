//! Live progress on stderr, so stdout keeps only the final report (or the JSON).
//!
//! On a terminal: one updating line (indicatif) with the measured time done
//! out of the total, the percentage, the current rate and the errors; warm-up
//! is shown as warm-up and not counted as done time. Elsewhere (a pipe, a log
//! file, a test): one plain line per report interval, about once a second.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::report::fmt_us;

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
    /// The word a plain line ends with (nothing for the measured phase).
    fn tag(self) -> &'static str {
        match self {
            Phase::Startup => "startup",
            Phase::Warmup => "warmup",
            Phase::Measured => "",
        }
    }
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
                ProgressStyle::with_template("{prefix:>17} [{bar:16}] {percent:>3}%  {wide_msg}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix("connecting");
            bar
        });
        Progress { bar, warmup, duration }
    }

    /// Moves the bar to `into_phase` of `phase` (a terminal only; called often).
    pub fn at(&self, phase: Phase, into_phase: Duration) {
        let Some(bar) = &self.bar else { return };
        let secs = |d: Duration| format!("{:.1}s", d.as_secs_f64());
        match phase {
            Phase::Startup => bar.set_prefix("connecting"),
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
        let rate = format!("{:.0} msgs/s", iv.msgs_per_s);
        match &self.bar {
            Some(bar) => bar.set_message(format!(
                "{rate}  errors {}  p99 {}  open {}/{}",
                iv.errors,
                fmt_us(iv.p99_us),
                iv.open,
                iv.conns
            )),
            None => {
                let line = format!(
                    "[{:>6.1}s] {rate:>15} {:>8.2} MB/s  p50 {:>9}  p99 {:>9}  errors {:>5}  open {}/{} {}",
                    iv.at_s,
                    iv.mb_per_s,
                    fmt_us(iv.p50_us),
                    fmt_us(iv.p99_us),
                    iv.errors,
                    iv.open,
                    iv.conns,
                    iv.phase.tag()
                );
                eprintln!("{}", line.trim_end());
            }
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
