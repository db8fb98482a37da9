//! Conversations (`--conn-msgs N`): a connection per conversation, as
//! Stevens (UNP, ch. 30), neper `tcp_crr` and netperf `TCP_CRR` measure a
//! server. Each client connects, exchanges N checked echoes, closes, and
//! connects again.
//!
//! This module is what the rest of loadgen sees of them: the flag checks,
//! the per-thread totals the event loops fill ([`ConvTotals`]), the
//! `conversations` object of the result file ([`Conversations`]) and its
//! lines in the text report. The event-loop side is `worker/conversation.rs`.
//!
//! Who closes first: loadgen. It closes as soon as the last echo of a
//! conversation is checked, so over TCP the `TIME_WAIT` socket (60 s on
//! Linux) stays on loadgen's side and holds a source port there, not on the
//! server's. On loopback the kernel's default `net.ipv4.tcp_tw_reuse = 2`
//! lets a new connect reuse such a port; elsewhere a high rate of
//! conversations runs out of source ports (`EADDRNOTAVAIL`), which ends the
//! run with a message naming `--local-addrs`. The count of `TIME_WAIT`
//! sockets when the run ends is recorded (`time_wait_at_end`), and so are the
//! closes that left none because the kernel's table of them was full
//! (`time_wait_overflows`).
//!
//! Source addresses: `connect` picks a source port by walking the ports of
//! one parity (`__inet_hash_connect`), and a port whose 4-tuple towards the
//! server is held by a `TIME_WAIT` socket younger than the reuse delay (1 s)
//! is skipped after a check of that socket. With one source address, past
//! about 14,000 conversations/s (half of `ip_local_port_range`'s 28,232 ports
//! a second) every connect walks thousands of such ports: in a profiled
//! smoke run 60% of loadgen's CPU was that search, 101 µs per conversation
//! against 27 µs below the wall, and loadgen stalled near 10,000/s (the
//! bimodal runs of results/conversations are this). So a TCP conversation
//! run towards an IPv4 loopback server spreads its connections over
//! [`LOOPBACK_SOURCES`] (127.0.0.1 to 127.0.0.8) unless `--local-addrs` is
//! given: each address has its own ports towards the server. `--local-addrs
//! 127.0.0.1` keeps the one source address.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::cli::{Args, IoMode, UsageError, DEFAULT_ADDR};
use crate::report::fmt_us;
use crate::result::{encode_histogram, Latency, RunResult};
use crate::source::{parse_local_addrs, SourceAddrs};
use crate::stats::{self, latency_of};

/// The source addresses a TCP conversation run towards an IPv4 loopback
/// server spreads over when `--local-addrs` is not given (see the module's
/// comment): eight times the ports of one address, about 110,000
/// conversations/s before connect's port search gets long.
pub const LOOPBACK_SOURCES: &str = "127.0.0.1-127.0.0.8";

/// `TCPTimeWaitOverflow` when the run started ([`resolve`]), `u64::MAX` if unknown.
static TW_OVERFLOW_AT_START: AtomicU64 = AtomicU64::new(u64::MAX);

/// What each conversation ends as, when it does not end with its last echo checked.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ConvFailures {
    /// The connect was refused (`ECONNREFUSED`; a Unix socket path with no listener).
    pub refused: u64,
    /// The connection was reset or closed by the server before its last echo.
    pub reset: u64,
    /// The connect did not complete within `--timeout` (a full backlog: never
    /// accepted), or a Unix listener's backlog was full (`EAGAIN`).
    pub not_accepted: u64,
    /// Connected, but an echo did not come back within `--timeout`.
    pub unanswered: u64,
    /// No source port left (`EADDRNOTAVAIL`); this ends the run.
    pub out_of_ports: u64,
    /// Open loop: conversations that could not even be queued (their slot's
    /// backlog was full).
    pub not_started: u64,
    /// Any other connect error.
    pub other: u64,
}

impl ConvFailures {
    pub fn total(&self) -> u64 {
        self.refused
            + self.reset
            + self.not_accepted
            + self.unanswered
            + self.out_of_ports
            + self.not_started
            + self.other
    }

    fn add(&mut self, o: &ConvFailures) {
        self.refused += o.refused;
        self.reset += o.reset;
        self.not_accepted += o.not_accepted;
        self.unanswered += o.unanswered;
        self.out_of_ports += o.out_of_ports;
        self.not_started += o.not_started;
        self.other += o.other;
    }

    /// Counts a failed connect by its errno.
    pub fn count_connect_error(&mut self, e: &std::io::Error) {
        match e.raw_os_error() {
            Some(libc::ECONNREFUSED | libc::ENOENT) => self.refused += 1,
            Some(libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED) => self.reset += 1,
            Some(libc::ETIMEDOUT | libc::EAGAIN) => self.not_accepted += 1,
            Some(libc::EADDRNOTAVAIL) => self.out_of_ports += 1,
            _ if e.kind() == std::io::ErrorKind::TimedOut => self.not_accepted += 1,
            _ => self.other += 1,
        }
    }
}

/// What one event-loop thread measured of its conversations in the measured phase.
#[derive(Debug)]
pub struct ConvTotals {
    /// From `connect` to established, µs.
    pub connect: Histogram<u64>,
    /// From the conversation's start (closed loop: its `connect`; open loop:
    /// its intended start) to its last echo checked, µs.
    pub conversation: Histogram<u64>,
    /// Conversations whose last echo was checked in the measured phase.
    pub completed: u64,
    /// Conversations that failed in the measured phase, by kind.
    pub failed: ConvFailures,
    /// Open loop: conversations the schedule started in the measured phase.
    pub scheduled: u64,
}

impl ConvTotals {
    pub fn new() -> ConvTotals {
        ConvTotals {
            connect: stats::new_histogram(),
            conversation: stats::new_histogram(),
            completed: 0,
            failed: ConvFailures::default(),
            scheduled: 0,
        }
    }
}

impl Default for ConvTotals {
    fn default() -> Self {
        ConvTotals::new()
    }
}

/// The result file's `conversations` object (present only with `--conn-msgs`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Conversations {
    /// `--conn-msgs`: echoes per conversation.
    pub msgs_per_conn: u64,
    /// Conversations completed in the measured phase (every echo checked).
    pub completed: u64,
    /// `completed` over the measured phase's length.
    pub per_s: f64,
    /// Open loop: the requested rate of new conversations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_per_s: Option<f64>,
    /// Open loop: conversations the schedule started in the measured phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled: Option<u64>,
    /// From `connect` to established.
    pub connect_us: Latency,
    /// `connect_us`'s histogram, encoded as the top-level `histogram` is.
    pub connect_histogram: String,
    /// From the start (closed loop: the `connect`; open loop: the intended
    /// start, so coordinated omission is corrected) to the last echo checked.
    pub conversation_us: Latency,
    /// `conversation_us`'s histogram.
    pub conversation_histogram: String,
    /// Conversations that failed in the measured phase, by kind.
    pub failed: ConvFailures,
    /// loadgen's CPU time over the measured phase per completed conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loadgen_cpu_us_per_conn: Option<f64>,
    /// With `--server-pid`: the server tree's CPU time per completed conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cpu_us_per_conn: Option<f64>,
    /// Which side closes first: always "loadgen" (it closes once the last
    /// echo is checked), so TCP's `TIME_WAIT` is on loadgen's side.
    pub closes_first: String,
    /// TCP: the `TIME_WAIT` sockets of loadgen's network namespace when the
    /// run ended (`tw` in /proc/net/sockstat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_wait_at_end: Option<u64>,
    /// TCP: closes in loadgen's network namespace during the run that left no
    /// `TIME_WAIT` socket because the kernel's table was full
    /// (`net.ipv4.tcp_max_tw_buckets`; `TCPTimeWaitOverflow` of
    /// /proc/net/netstat). Such a close frees its port at once, so connects
    /// are cheaper than in a run that creates them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_wait_overflows: Option<u64>,
    /// TCP over IP: how many source addresses the connections were spread
    /// over (`--local-addrs`, or [`LOOPBACK_SOURCES`] by default towards an
    /// IPv4 loopback server); absent when the kernel chose the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_addrs: Option<u64>,
}

/// Refuses `--conn-msgs` where it cannot work, naming the flag.
pub fn check_flags(args: &Args) -> Result<(), UsageError> {
    let Some(n) = args.conn_msgs else { return Ok(()) };
    if !args.transport.is_stream() {
        return Err(UsageError(format!(
            "--conn-msgs {n}: conversations need a stream transport (tcp or unix); --transport {} has no connections",
            args.transport
        )));
    }
    Ok(())
}

/// The settings the run actually uses: with `--conn-msgs`, a TCP run towards
/// an IPv4 loopback server without `--local-addrs` spreads over
/// [`LOOPBACK_SOURCES`]. Also notes the kernel's `TIME_WAIT` overflow count,
/// for `time_wait_overflows`. (Whether `--io uring` or `auto` can run the
/// conversations on the ring is [`check_io`]'s, once the plan is made.)
pub fn resolve(mut args: Args) -> Args {
    if args.conn_msgs.is_none() {
        return args;
    }
    if args.transport == sockbench::net::Transport::Tcp {
        if args.local_addrs.is_none() && loopback_v4_target(&args) {
            // Where 127.0.0.2 and up cannot be bound (no 127/8 route), the
            // kernel keeps choosing, as before.
            let spread = loopback_sources();
            if crate::source::check_local(&spread, args.transport).is_ok() {
                args.local_addrs = Some(spread);
            }
        }
        if let Some(n) = time_wait_overflows() {
            TW_OVERFLOW_AT_START.store(n, Relaxed);
        }
    }
    args
}

/// Which I/O path `plan`'s conversations take: the ring with `--io uring`
/// or `auto` where [`check_conversation_ring`] passes. Where it fails,
/// `--io uring` is refused naming the flag and what the kernel lacks (exit
/// 2), and `--io auto` becomes epoll; the reason is returned, for the
/// warning and `settings.io`.
///
/// [`check_conversation_ring`]: crate::worker::check_conversation_ring
pub fn check_io(plan: &mut crate::worker::Plan) -> Result<Option<String>, UsageError> {
    if plan.conn_msgs.is_none() || plan.io == IoMode::Epoll {
        return Ok(None);
    }
    let Err(e) = crate::worker::check_conversation_ring(plan) else {
        return Ok(None);
    };
    if plan.io == IoMode::Uring {
        return Err(UsageError(format!(
            "--io uring: conversations (--conn-msgs) on io_uring need socket, connect and close as ring \
             operations on direct descriptors, and this kernel cannot: {e}; use --io epoll, or --io auto \
             (which falls back to epoll)"
        )));
    }
    plan.io = IoMode::Epoll;
    Ok(Some(format!("conversations on io_uring: {e}")))
}

/// [`LOOPBACK_SOURCES`], parsed.
pub fn loopback_sources() -> SourceAddrs {
    parse_local_addrs(LOOPBACK_SOURCES).expect("LOOPBACK_SOURCES parses")
}

/// The target is an IPv4 loopback address (as `run` will parse it; a target
/// that does not parse is left for `run` to refuse).
fn loopback_v4_target(args: &Args) -> bool {
    let Ok((addr, path)) = args.target_flags() else {
        return false;
    };
    match sockbench::net::endpoint_from_flags(args.transport, addr.as_deref(), path.as_deref(), DEFAULT_ADDR) {
        Ok(sockbench::net::Endpoint::Inet(a)) => matches!(a.ip(), IpAddr::V4(v4) if v4.is_loopback()),
        _ => false,
    }
}

/// `TCPTimeWaitOverflow` of /proc/net/netstat: closes that found the
/// kernel's `TIME_WAIT` table full, in this network namespace.
fn time_wait_overflows() -> Option<u64> {
    crate::kernel_counters::Snapshot::take().time_wait_overflows
}

/// The figures of a whole run, from what the threads recorded.
pub struct RunFigures<'a> {
    pub args: &'a Args,
    pub totals: Vec<&'a ConvTotals>,
    pub measured_s: f64,
    pub loadgen_cpu_us: Option<u64>,
    pub server_cpu_us: Option<u64>,
}

/// The `conversations` object of a run with `--conn-msgs`; `None` without.
pub fn summarise(f: RunFigures<'_>) -> Option<Conversations> {
    let n = f.args.conn_msgs?;
    let mut sum = ConvTotals::new();
    for t in &f.totals {
        let _ = sum.connect.add(&t.connect);
        let _ = sum.conversation.add(&t.conversation);
        sum.completed += t.completed;
        sum.failed.add(&t.failed);
        sum.scheduled += t.scheduled;
    }
    let per_conn = |cpu: Option<u64>| {
        cpu.filter(|_| sum.completed > 0)
            .map(|c| c as f64 / sum.completed as f64)
    };
    Some(Conversations {
        msgs_per_conn: n,
        completed: sum.completed,
        // As the message throughput is: a run cut short before its window
        // closed is divided by the length it was asked for.
        per_s: sum.completed as f64
            / match f.measured_s {
                s if s > 0.0 => s,
                _ => f.args.duration.as_secs_f64(),
            },
        requested_per_s: f.args.rate,
        scheduled: f.args.rate.map(|_| sum.scheduled),
        connect_us: latency_of(&sum.connect),
        connect_histogram: encode_histogram(&sum.connect),
        conversation_us: latency_of(&sum.conversation),
        conversation_histogram: encode_histogram(&sum.conversation),
        failed: sum.failed,
        loadgen_cpu_us_per_conn: per_conn(f.loadgen_cpu_us),
        server_cpu_us_per_conn: per_conn(f.server_cpu_us),
        closes_first: "loadgen".into(),
        time_wait_at_end: match f.args.transport {
            sockbench::net::Transport::Tcp => time_wait_sockets(),
            _ => None,
        },
        time_wait_overflows: match (f.args.transport, TW_OVERFLOW_AT_START.load(Relaxed)) {
            (sockbench::net::Transport::Tcp, start) if start != u64::MAX => {
                time_wait_overflows().map(|now| now.saturating_sub(start))
            }
            _ => None,
        },
        source_addrs: f
            .args
            .local_addrs
            .as_ref()
            .filter(|s| !s.is_empty())
            .map(|s| s.addrs().len() as u64),
    })
}

/// Adds the `conversations` object to a run's result (with `--conn-msgs`).
/// In open loop `--rate` counts conversations; the message figures that
/// compare a rate with what was done (`requested_msgs_per_s`,
/// `extra.scheduled_messages`) are then in messages: N per conversation.
pub fn attach(result: &mut RunResult, f: RunFigures<'_>) {
    let Some(c) = summarise(f) else { return };
    if let (Some(rate), Some(scheduled)) = (c.requested_per_s, c.scheduled) {
        result.throughput.requested_msgs_per_s = Some(rate * c.msgs_per_conn as f64);
        result.extra.scheduled_messages = Some(scheduled * c.msgs_per_conn);
    }
    // Resets and unanswered echoes already fail the run as errors.reset and
    // errors.timeout; a conversation that never got connected fails it too.
    let f = &c.failed;
    let unconnected = f.refused + f.not_accepted + f.not_started + f.other;
    if unconnected > 0 {
        result.failures.push(format!(
            "{unconnected} conversations never connected in the measured phase (refused {}, not accepted {}, \
             not started {}, other {})",
            f.refused, f.not_accepted, f.not_started, f.other
        ));
    }
    result.conversations = Some(c);
}

/// `TIME_WAIT` sockets in this network namespace (`tw` of /proc/net/sockstat).
pub fn time_wait_sockets() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let tcp = text.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = tcp.split_whitespace();
    while let Some(w) = words.next() {
        if w == "tw" {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// The text report's conversation lines (empty without `--conn-msgs`).
pub fn report_lines(c: Option<&Conversations>) -> String {
    use std::fmt::Write as _;
    let Some(c) = c else { return String::new() };
    let mut s = String::new();
    let _ = write!(
        s,
        "  Conversations  {:.0}/s  ({} completed, {} messages each",
        c.per_s, c.completed, c.msgs_per_conn
    );
    if let (Some(req), Some(sched)) = (c.requested_per_s, c.scheduled) {
        let _ = write!(s, "; requested {req:.0}/s, {sched} scheduled");
    }
    let _ = writeln!(s, "; loadgen closes first)");
    let lat = |l: &Latency| {
        format!(
            "p50 {}  p99 {}  p99.9 {}  max {}",
            fmt_us(l.p50),
            fmt_us(l.p99),
            fmt_us(l.p99_9),
            fmt_us(l.max)
        )
    };
    let _ = writeln!(s, "    connect       {}", lat(&c.connect_us));
    let _ = writeln!(s, "    conversation  {}", lat(&c.conversation_us));
    let f = &c.failed;
    let _ = writeln!(
        s,
        "    failed        {} (refused {}, reset {}, not accepted {}, unanswered {}, out of ports {}, not started {}, other {})",
        f.total(),
        f.refused,
        f.reset,
        f.not_accepted,
        f.unanswered,
        f.out_of_ports,
        f.not_started,
        f.other
    );
    if let Some(l) = c.loadgen_cpu_us_per_conn {
        let _ = write!(s, "    CPU           loadgen {}/conn", fmt_us(l));
        if let Some(sv) = c.server_cpu_us_per_conn {
            let _ = write!(s, ", server {}/conn", fmt_us(sv));
        }
        let _ = writeln!(s);
    }
    if let Some(tw) = c.time_wait_at_end {
        let _ = write!(s, "    TIME_WAIT     {tw} sockets at the end (on loadgen's side)");
        if let Some(o) = c.time_wait_overflows.filter(|&o| o > 0) {
            let _ = write!(s, "; {o} closes left none, the kernel's table being full");
        }
        let _ = writeln!(s);
    }
    if let Some(n) = c.source_addrs {
        let _ = writeln!(s, "    sources       {n} source addresses");
    }
    s
}

/// `loadgen merge`: the inputs' `conversations` added up (histograms and
/// counts; rates summed, as the message rates are; `time_wait_at_end` and
/// `time_wait_overflows` the most of any, `source_addrs` kept where all agree). Refuses inputs with
/// different `--conn-msgs`, or a mix of runs with and without it. The
/// server's CPU per connection is left out: each input measured the same
/// server, so it cannot be added.
pub fn merge(results: &[RunResult], names: &[String]) -> anyhow::Result<Option<Conversations>> {
    let Some(first) = results.first().and_then(|r| r.conversations.as_ref()) else {
        if let Some(i) = results.iter().position(|r| r.conversations.is_some()) {
            anyhow::bail!(
                "settings differ: {} has conversations (--conn-msgs) but {} has none",
                names[i],
                names[0]
            );
        }
        return Ok(None);
    };
    let mut connect = stats::new_histogram();
    let mut conversation = stats::new_histogram();
    let mut out = Conversations {
        completed: 0,
        per_s: 0.0,
        requested_per_s: first.requested_per_s.map(|_| 0.0),
        scheduled: first.scheduled.map(|_| 0),
        failed: ConvFailures::default(),
        loadgen_cpu_us_per_conn: Some(0.0),
        server_cpu_us_per_conn: None,
        time_wait_at_end: first.time_wait_at_end.map(|_| 0),
        time_wait_overflows: first.time_wait_overflows.map(|_| 0),
        ..first.clone()
    };
    let mut loadgen_cpu_us = 0.0;
    for (r, name) in results.iter().zip(names) {
        let Some(c) = r
            .conversations
            .as_ref()
            .filter(|c| c.msgs_per_conn == first.msgs_per_conn)
        else {
            anyhow::bail!(
                "settings differ: `--conn-msgs` is {} in {} but not in {name}; only runs with the same settings can be merged",
                first.msgs_per_conn,
                names[0]
            );
        };
        let decode = |s: &str| crate::result::decode_histogram(s).map_err(|e| anyhow::anyhow!("{name}: {e}"));
        let _ = connect.add(decode(&c.connect_histogram)?);
        let _ = conversation.add(decode(&c.conversation_histogram)?);
        out.completed += c.completed;
        out.per_s += c.per_s;
        out.requested_per_s = out.requested_per_s.zip(c.requested_per_s).map(|(a, b)| a + b);
        out.scheduled = out.scheduled.zip(c.scheduled).map(|(a, b)| a + b);
        out.failed.add(&c.failed);
        // Inputs on one host see the same sockets: the most any saw, not a sum.
        out.time_wait_at_end = out.time_wait_at_end.zip(c.time_wait_at_end).map(|(a, b)| a.max(b));
        out.time_wait_overflows = out
            .time_wait_overflows
            .zip(c.time_wait_overflows)
            .map(|(a, b)| a.max(b));
        out.source_addrs = out.source_addrs.filter(|&n| c.source_addrs == Some(n));
        match c.loadgen_cpu_us_per_conn {
            Some(us) => loadgen_cpu_us += us * c.completed as f64,
            None => out.loadgen_cpu_us_per_conn = None,
        }
    }
    out.connect_us = latency_of(&connect);
    out.connect_histogram = encode_histogram(&connect);
    out.conversation_us = latency_of(&conversation);
    out.conversation_histogram = encode_histogram(&conversation);
    out.loadgen_cpu_us_per_conn = out
        .loadgen_cpu_us_per_conn
        .filter(|_| out.completed > 0)
        .map(|_| loadgen_cpu_us / out.completed as f64);
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(argv: &[&str]) -> Args {
        use clap::Parser as _;
        resolve(crate::cli::Cli::try_parse_from(argv).unwrap().run)
    }

    fn sources(args: &Args) -> Option<usize> {
        args.local_addrs.as_ref().map(|s| s.addrs().len())
    }

    #[test]
    fn tcp_conversations_towards_ipv4_loopback_spread_over_eight_sources() {
        let a = resolved(&["loadgen", "127.0.0.1:7000", "--conn-msgs", "1"]);
        assert_eq!(a.local_addrs, Some(loopback_sources()));
        assert_eq!(sources(&a), Some(8));
        assert_eq!(a.io, IoMode::Auto, "--io is resolved with the plan (check_io)");
        // --addr and any 127/8 target count too.
        assert_eq!(
            sources(&resolved(&["loadgen", "--addr", "127.0.0.9:1", "--conn-msgs", "3"])),
            Some(8)
        );
        // Given sources are kept, one address included (the way to opt out).
        let one = [
            "loadgen",
            "127.0.0.1:7000",
            "--conn-msgs",
            "1",
            "--local-addrs",
            "127.0.0.1",
        ];
        assert_eq!(sources(&resolved(&one)), Some(1));
        // Not towards IPv4 loopback, not TCP, or not conversations: the kernel chooses.
        for argv in [
            &["loadgen", "192.0.2.1:7000", "--conn-msgs", "1"][..],
            &["loadgen", "[::1]:7000", "--conn-msgs", "1"],
            &["loadgen", "--transport", "unix", "/tmp/x.sock", "--conn-msgs", "1"],
            &["loadgen", "127.0.0.1:7000"],
            &["loadgen", "not-an-address", "--conn-msgs", "1"],
        ] {
            assert_eq!(sources(&resolved(argv)), None, "{argv:?}");
        }
    }

    #[test]
    fn the_time_wait_overflow_counter_is_read() {
        // Every Linux since 2.6 has it in /proc/net/netstat.
        assert!(time_wait_overflows().is_some());
    }

    #[test]
    fn connect_errors_are_counted_by_kind() {
        let mut f = ConvFailures::default();
        for errno in [
            libc::ECONNREFUSED,
            libc::ENOENT,
            libc::ECONNRESET,
            libc::ETIMEDOUT,
            libc::EAGAIN,
            libc::EADDRNOTAVAIL,
            libc::EHOSTUNREACH,
        ] {
            f.count_connect_error(&std::io::Error::from_raw_os_error(errno));
        }
        f.count_connect_error(&std::io::Error::from(std::io::ErrorKind::TimedOut));
        let want = ConvFailures {
            refused: 2,
            reset: 1,
            not_accepted: 3,
            out_of_ports: 1,
            other: 1,
            ..ConvFailures::default()
        };
        assert_eq!(f, want);
        assert_eq!(f.total(), 8);
    }
}
