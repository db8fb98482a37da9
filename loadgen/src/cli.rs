//! loadgen's command line, and the parsers for durations and rates.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use sockbench::cpu::CpuList;
pub use sockbench::duration::parse_duration;
use sockbench::net::Transport;

/// The address loadgen targets when neither `--addr` nor `--path` is given.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7000";

/// The percentiles the report prints unless `--latency-percentiles` says otherwise.
pub const DEFAULT_PERCENTILES: [f64; 5] = [50.0, 90.0, 99.0, 99.9, 99.99];

/// Exit code for a run whose verdict is `FAILED` (or a merge of one), and
/// for a run that could not start measuring (server unreachable, I/O error).
pub const EXIT_FAILED: i32 = 1;
/// Exit code for a bad flag (as clap uses).
pub const EXIT_USAGE: i32 = 2;

/// What `loadgen --help` says after the options: the exit codes and what fails a run.
pub const AFTER_HELP: &str = "\
Exit codes:
  0  the run passed: every connection came up and carried load, every echo
     matched, no stream timeout or reset, datagram loss within --max-loss
  1  the verdict is FAILED (the report's last line says why), or nothing
     could be measured (server unreachable, an I/O error); a result file is
     still written for a FAILED run
  2  a flag was wrong (the message names it); nothing was run
`loadgen merge` exits 1 when the merged verdict is FAILED or a run is INCOMPLETE.";

/// A flag-level problem found after parsing: exit code 2 with this message,
/// which names the flag.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// `loadgen`: thousands of checked echo clients with coordinated-omission-correct latency.
#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    about,
    long_about = None,
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: Args,
}

/// loadgen's subcommands; without one, loadgen runs a measurement.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Merge result files of several loadgen processes (histograms and counts are added).
    Merge(MergeArgs),
}

/// The options of a measurement run.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The server, as wrk and tcpkali take it: HOST:PORT for tcp/udp, the
    /// socket path for unix/unixgram. Same as --addr / --path.
    #[arg(value_name = "HOST:PORT")]
    pub target: Option<String>,
    /// Socket kind.
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    pub transport: Transport,
    /// Server HOST:PORT for tcp/udp (IPv6 as [::1]:7000). [default: 127.0.0.1:7000]
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<String>,
    /// Server socket path for unix/unixgram.
    #[arg(long, value_name = "SOCKET_PATH")]
    pub path: Option<PathBuf>,
    /// Concurrent connections (datagram transports: client sockets).
    #[arg(short = 'c', long, visible_alias = "connections", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub conns: u64,
    /// Length of the measured phase, e.g. 500ms, 2s, 1m.
    #[arg(short = 'd', long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Load before measuring starts (samples are not recorded).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Message size in bytes (datagrams: at least 16, the header).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=65_000))]
    pub size: u64,
    /// Messages in flight per connection (closed loop).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub depth: u64,
    /// Open loop: total messages per second over all connections, e.g. 5000, 2.5k, 1M.
    #[arg(short = 'R', long, value_name = "MSGS_PER_S", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Open loop: a message may go out up to this long before it is due,
    /// with the others due by then, so that one wake-up sends them together
    /// (the Linux default timer slack of a thread, the precision an
    /// epoll_wait timeout gets, is the same 50us). Latency is measured from
    /// the earlier of its due time and its send. 0: each message on its own
    /// schedule. [default: 50us]
    #[arg(long, value_parser = parse_duration)]
    pub slack: Option<Duration>,
    /// Conversations: each client connects, exchanges this many checked
    /// echoes (with --size and --depth), closes, and connects again; 1 is
    /// connect-request-response-close. `--conns` conversations run at once;
    /// with --rate, new conversations start at that many per second instead
    /// (then --rate counts conversations, not messages). Stream transports only.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub conn_msgs: Option<u64>,
    /// Event-loop threads; connections are spread over them.
    #[arg(short = 't', long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub threads: u64,
    /// Pin thread i to the i-th CPU of this list (wrapping), e.g. 1 or 2-3.
    #[arg(long, value_name = "CPU_LIST")]
    pub pin: Option<CpuList>,
    /// New connections per second during startup (failures back off and retry).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub connect_rate: u64,
    /// Source addresses to spread the connections over (tcp, udp), e.g.
    /// `127.0.0.1-127.0.0.4` or `10.0.0.5,[::1]`: each one has its own
    /// `ip_local_port_range` of ports towards the server.
    #[arg(long, value_name = "LIST", value_parser = crate::source::parse_local_addrs)]
    pub local_addrs: Option<crate::source::SourceAddrs>,
    /// Start the warm-up at this wall-clock instant (RFC 3339, e.g.
    /// 2026-12-01T13:05:00Z, or Unix seconds), so that loadgens on several
    /// hosts measure the same window; connections are made before it.
    #[arg(long, value_name = "TIME", value_parser = parse_start_at)]
    pub start_at: Option<std::time::SystemTime>,
    /// An echo not back within this long after its send counts as a timeout
    /// (datagrams: lost). At least 10ms: the event loop looks at its timers
    /// every 5ms at most, so a shorter timeout would be counted unevenly.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Datagrams: the run FAILS when more than this percentage of the
    /// datagrams sent in the measured phase were lost (0 to 100, e.g. 0.5).
    /// Streams never lose a message: any timeout or reset fails the run.
    #[arg(long, value_name = "PERCENT", default_value_t = DEFAULT_MAX_LOSS_PCT, value_parser = parse_percent)]
    pub max_loss: f64,
    /// Stream clients' I/O: `uring` (io_uring: multishot receives into a buffer
    /// ring, sends batched into one syscall per loop turn), `epoll` (edge-triggered
    /// epoll with a read and a send syscall per echo), or `auto` (uring where the
    /// kernel has it, else epoll). Datagram clients always use epoll.
    #[arg(long, value_enum, default_value_t = IoMode::Auto)]
    pub io: IoMode,
    /// Free-form name of the run; also `settings.backend` unless --backend is given.
    #[arg(long)]
    pub label: Option<String>,
    /// The server backend under test, recorded as `settings.backend`.
    #[arg(long)]
    pub backend: Option<String>,
    /// Also record this process's CPU time over the measured phase
    /// (`extra.server_cpu_us_per_msg`), e.g. the server's pid on the same machine.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Percentiles the report prints (the JSON always has p50..p99.99 and max).
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_percentile,
          default_value = "50,90,99,99.9,99.99")]
    pub latency_percentiles: Vec<f64>,
    /// Print the result JSON on stdout (then stdout holds only the JSON; the
    /// report goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Write the result JSON here (`-`: stdout, as --json), and the .hgrm
    /// percentile file beside it (run.json -> run.hgrm).
    #[arg(long, value_name = "FILE.json")]
    pub out: Option<PathBuf>,
}

/// `--max-loss` when not given, in percent: a loopback or LAN echo server that
/// drops more than 1 in 100 datagrams is overloaded (its receive buffer
/// overflows), and a cost per message measured then describes a server that
/// did less work than it was asked to.
pub const DEFAULT_MAX_LOSS_PCT: f64 = 1.0;

/// The shortest `--timeout`: twice the event loop's longest sleep (5ms), the
/// granularity at which it notices a deadline has passed.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(10);

/// `--slack` when not given: the Linux default timer slack.
pub const DEFAULT_SLACK: Duration = Duration::from_micros(50);
/// The most `--slack` may be: beyond it the schedule is no longer the rate's.
pub const MAX_SLACK: Duration = Duration::from_millis(10);

impl Args {
    /// `--slack` as it applies: none in closed loop.
    pub fn slack(&self) -> Option<Duration> {
        self.rate.map(|_| self.slack.unwrap_or(DEFAULT_SLACK))
    }

    /// Where the server is: `--addr`, `--path` or the positional target
    /// (given once), as `(addr, path)` for `sockbench::net::endpoint_from_flags`.
    pub fn target_flags(&self) -> Result<(Option<String>, Option<PathBuf>), UsageError> {
        let Some(target) = &self.target else {
            return Ok((self.addr.clone(), self.path.clone()));
        };
        if self.addr.is_some() || self.path.is_some() {
            return Err(UsageError(format!(
                "the target {target} is given twice: as HOST:PORT and as --addr/--path; give it once"
            )));
        }
        Ok(if matches!(self.transport, Transport::Unix | Transport::Unixgram) {
            (None, Some(PathBuf::from(target)))
        } else {
            (Some(target.clone()), None)
        })
    }

    /// Refuses settings that parse but cannot make a measurement, naming the flag.
    pub fn validate(&self) -> Result<(), UsageError> {
        let human = |d: Duration| humantime::format_duration(d).to_string();
        if self.timeout < MIN_TIMEOUT {
            return Err(UsageError(format!(
                "--timeout {}: at least {} (the event loop notices a passed deadline within 5ms; \
                 a shorter timeout would count some late echoes and miss others)",
                human(self.timeout),
                human(MIN_TIMEOUT)
            )));
        }
        if self.duration.is_zero() {
            return Err(UsageError(
                "--duration 0s: nothing would be measured; give a length like 10s".into(),
            ));
        }
        // A datagram is known lost one --timeout after it was sent, and a
        // loss counts when it becomes known: if warm-up plus the measured
        // phase are shorter, no loss could ever be counted, and a lossy
        // server would look perfect. Streams need no such bound: a late echo
        // still arrives and is recorded with its full latency.
        if !self.transport.is_stream() && self.warmup + self.duration <= self.timeout {
            return Err(UsageError(format!(
                "--duration {} (after --warmup {}) is not longer than --timeout {}: a datagram is known \
                 lost only --timeout after it was sent, so no loss could be counted; \
                 lengthen --duration or shorten --timeout",
                human(self.duration),
                human(self.warmup),
                human(self.timeout)
            )));
        }
        if let (Some(slack), None) = (self.slack, self.rate) {
            return Err(UsageError(format!(
                "--slack {}: only an open loop (--rate) has a schedule to send ahead of",
                human(slack)
            )));
        }
        if let Some(slack) = self.slack.filter(|&s| s > MAX_SLACK) {
            return Err(UsageError(format!(
                "--slack {}: at most {} (it moves sends ahead of their schedule)",
                human(slack),
                human(MAX_SLACK)
            )));
        }
        if let Some(rate) = self.rate {
            if rate * self.duration.as_secs_f64() < 1.0 {
                return Err(UsageError(format!(
                    "--rate {rate}: not one message falls in --duration {} at that rate; \
                     raise --rate or lengthen --duration",
                    human(self.duration)
                )));
            }
        }
        Ok(())
    }
}

/// How stream clients do their I/O (`--io`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum IoMode {
    /// io_uring where the kernel supports it, else epoll.
    Auto,
    /// Edge-triggered epoll, one read and one send syscall per echo.
    Epoll,
    /// io_uring with multishot receives into a buffer ring; fails if the kernel lacks it.
    Uring,
}

/// `loadgen merge`: adds histograms and counts of several result files.
#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// Result files of runs with matching settings.
    #[arg(required = true, num_args = 1..)]
    pub inputs: Vec<PathBuf>,
    /// Where to write the merged result (and its .hgrm); `-`: stdout.
    #[arg(long, value_name = "TOTAL.json")]
    pub out: PathBuf,
    /// Print the merged JSON on stdout too (then stdout holds only the JSON).
    #[arg(long)]
    pub json: bool,
    /// Warn when the inputs' measured windows start (or end) further apart
    /// than this; inputs whose windows do not overlap are refused.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub max_skew: Duration,
}

/// The furthest ahead `--start-at` may be: a day (a later time is a typo).
pub const START_AT_MAX_AHEAD: Duration = Duration::from_secs(24 * 3600);

/// The latest Unix second `--start-at` parses (the end of 9999, as RFC 3339 can write).
const START_AT_LATEST_UNIX_S: u64 = 253_402_300_799;

/// Parses `--start-at`: RFC 3339 (`2026-12-01T13:05:00Z`, `...+01:00` is
/// not accepted: give UTC) or Unix seconds (`1796130300`, `1796130300.5`).
pub fn parse_start_at(s: &str) -> Result<std::time::SystemTime, String> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = t.parse().map_err(|_| format!("{s:?} is not Unix seconds"))?;
        // A value past what a time can hold is a typo, not a panic.
        return Duration::try_from_secs_f64(secs)
            .ok()
            .and_then(|d| std::time::UNIX_EPOCH.checked_add(d))
            .filter(|&at| at <= std::time::UNIX_EPOCH + Duration::from_secs(START_AT_LATEST_UNIX_S))
            .ok_or_else(|| format!("{s:?}: Unix seconds past the year 9999; give a time a few seconds ahead"));
    }
    humantime::parse_rfc3339_weak(t)
        .map_err(|e| format!("{s:?} is not a time like 2026-12-01T13:05:00Z (RFC 3339, UTC) or Unix seconds: {e}"))
}

/// Refuses a `--start-at` more than a second in the past or more than
/// [`START_AT_MAX_AHEAD`] ahead of `now`.
pub fn check_start_at(at: std::time::SystemTime, now: std::time::SystemTime) -> Result<(), UsageError> {
    let shown = humantime::format_rfc3339_millis(at);
    match at.duration_since(now) {
        Err(past) if past.duration() > Duration::from_secs(1) => Err(UsageError(format!(
            "--start-at {shown} is {:.1}s in the past (now {}); give a time a few seconds ahead, \
             after the connections are up",
            past.duration().as_secs_f64(),
            humantime::format_rfc3339_millis(now)
        ))),
        Ok(ahead) if ahead > START_AT_MAX_AHEAD => Err(UsageError(format!(
            "--start-at {shown} is more than a day ahead (now {}); is the date right?",
            humantime::format_rfc3339_millis(now)
        ))),
        _ => Ok(()),
    }
}

/// Parses a percentile above 0 and at most 100: `99.9`.
pub fn parse_percentile(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 100.0 => Ok(p),
        _ => Err(format!("{s:?} is not a percentile above 0 and at most 100, like 99.9")),
    }
}

/// Parses a percentage from 0 to 100, with or without `%`: `1`, `0.5%`.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let t = t.strip_suffix('%').unwrap_or(t).trim();
    match t.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a percentage from 0 to 100, like 1 or 0.5%")),
    }
}

/// Parses a positive rate in messages per second: `5000`, `2.5k`, `1M`.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (num, scale) = match t.as_bytes().last() {
        Some(b'k' | b'K') => (&t[..t.len() - 1], 1e3),
        Some(b'M') => (&t[..t.len() - 1], 1e6),
        _ => (t, 1.0),
    };
    let bad = || format!("{s:?} is not a rate in messages per second like 5000, 2.5k or 1M");
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad());
    }
    let v: f64 = num.parse::<f64>().map_err(|_| bad())? * scale;
    if v.is_nan() || v <= 0.0 || !v.is_finite() || v > 1e9 {
        return Err(format!(
            "{s:?}: rate must be above 0 and at most 1e9 messages per second"
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_times() {
        let at = parse_start_at("2026-12-01T13:05:00Z").unwrap();
        assert_eq!(at, std::time::UNIX_EPOCH + Duration::from_secs(1_796_130_300));
        assert_eq!(parse_start_at("1796130300.5").unwrap(), at + Duration::from_millis(500));
        assert!(parse_start_at("tomorrow").is_err());
        let now = at;
        assert!(check_start_at(at - Duration::from_millis(900), now).is_ok());
        assert!(check_start_at(at - Duration::from_secs(2), now)
            .unwrap_err()
            .0
            .contains("--start-at"));
        assert!(check_start_at(at + Duration::from_secs(3600), now).is_ok());
        assert!(check_start_at(at + Duration::from_secs(2 * 86400), now).is_err());
        // Past what a SystemTime or a Duration holds: refused, never a panic.
        for huge in ["99999999999999999999", "1e30", "253402300800", "18446744073709551616.5"] {
            assert!(parse_start_at(huge).is_err(), "{huge}");
        }
        assert!(parse_start_at("253402300799").is_ok());
    }

    #[test]
    fn percents() {
        assert_eq!(parse_percent("1").unwrap(), 1.0);
        assert_eq!(parse_percent("0.5%").unwrap(), 0.5);
        assert_eq!(parse_percent("0").unwrap(), 0.0);
        for bad in ["-1", "101", "x", "", "nan"] {
            assert!(parse_percent(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timeouts_below_the_loops_granularity_are_refused_by_name() {
        use clap::Parser as _;
        for (t, ok) in [
            ("0s", false),
            ("1ns", false),
            ("9ms", false),
            ("10ms", true),
            ("1s", true),
        ] {
            let cli = Cli::try_parse_from(["loadgen", "--timeout", t]).unwrap();
            let res = cli.run.validate();
            assert_eq!(res.is_ok(), ok, "{t}: {res:?}");
            if let Err(e) = res {
                assert!(e.0.contains("--timeout"), "{e}");
            }
        }
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("2.5k").unwrap(), 2500.0);
        assert_eq!(parse_rate("1M").unwrap(), 1e6);
        for bad in ["0", "-5", "k", "", "nan", "inf", "1e3"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
