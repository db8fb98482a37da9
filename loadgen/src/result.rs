//! The `sockbench.result.v1` result file that `loadgen --out` writes and that
//! `loadgen merge` and `compare` read: its one owner. The key names are a
//! public contract: other tools rely on them (see docs/formats.md, "loadgen result files").
//! [`read`] (with the schema check), [`write`], [`encode_histogram`] and
//! [`decode_histogram`] are the only code that reads or writes the format.

use std::path::Path;

use anyhow::{bail, Context};
use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The value of the `schema` key.
pub const SCHEMA: &str = "sockbench.result.v1";

/// One loadgen run (or the merge of several).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunResult {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// The exact argv of the run.
    pub command: Vec<String>,
    /// loadgen's version.
    pub version: String,
    /// `git rev-parse HEAD` of the source tree, or "unknown".
    pub git_commit: String,
    pub env: RunEnv,
    /// Every option of the run; `backend` too when it is known.
    pub settings: Settings,
    /// False when the run was cut short (server died, interrupted).
    pub complete: bool,
    /// This run's unique id (random, 32 hex digits); `loadgen merge` refuses
    /// to add a run to itself. Empty in files written before it existed.
    #[serde(default)]
    pub run_id: String,
    /// A merged result: the `run_id` of every single run it adds up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_run_ids: Vec<String>,
    /// Why the run failed (loadgen exited 1), one line per reason; empty for a
    /// run that passed. A merge keeps every input's reasons.
    #[serde(default)]
    pub failures: Vec<String>,
    /// Errors before the measured window (startup and warm-up), which
    /// `errors` leaves out; `connect` is always counted in `errors`.
    #[serde(default)]
    pub warmup_errors: Errors,
    /// Echoes completed in the measured phase.
    pub messages: u64,
    /// Bytes echoed in the measured phase.
    pub bytes: u64,
    pub throughput: Throughput,
    pub latency_us: Latency,
    pub errors: Errors,
    /// Throughput and latency through the measured phase, one entry per
    /// bucket of about [`RunResult::series_interval_s`].
    pub series: Vec<SeriesPoint>,
    /// The width of `series`' buckets, seconds (see [`series_interval`]).
    /// Absent in files written before it existed, whose buckets are about a
    /// second: read it with [`RunResult::series_interval`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series_interval_s: Option<f64>,
    /// The full latency histogram (microseconds), HdrHistogram V2 compressed, base64.
    pub histogram: String,
    /// loadgen's further measurements. Typed; the key stays `extra` so that
    /// every v1 file reads. Keys it does not know (older runners wrote their
    /// own here) are ignored on reading and not written back.
    #[serde(default, skip_serializing_if = "Extra::is_empty")]
    pub extra: Extra,
    /// `--conn-msgs`: conversations per second, connect and conversation
    /// times, failures by kind, CPU per connection (absent without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversations: Option<crate::conversation::Conversations>,
}

/// What loadgen measured besides the headline figures.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Extra {
    /// Latency from each message's actual send time (open loop: not
    /// corrected for coordinated omission).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_uncorrected_us: Option<Latency>,
    /// The histogram behind `latency_uncorrected_us`, encoded as `histogram` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram_uncorrected: Option<String>,
    /// Event-loop threads loadgen ran (`--threads`, at most `--conns`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads_used: Option<u64>,
    /// Open loop: messages the schedule asked for in the measured phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_messages: Option<u64>,
    /// loadgen's own CPU time (user + system) over the measured phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loadgen_cpu_us: Option<u64>,
    /// `loadgen_cpu_us` divided by the messages echoed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loadgen_cpu_us_per_msg: Option<f64>,
    /// With `--server-pid`: the server tree's CPU time over the measured phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cpu_us: Option<u64>,
    /// `server_cpu_us` divided by the messages echoed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cpu_us_per_msg: Option<f64>,
    /// `loadgen merge`: the files this result was merged from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<String>,
    /// The measured window in wall-clock time (`CLOCK_REALTIME`), ns since
    /// the Unix epoch: its start, and its end (start + the measured length).
    /// A merge's window is the inputs' common window. Absent in files written
    /// before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_start_unix_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_end_unix_ns: Option<u64>,
    /// `loadgen merge`: the largest difference, in ns, between the inputs'
    /// window starts or between their ends (the clocks' skew plus the starts').
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_skew_ns: Option<u64>,
    /// `loadgen merge`: messages of all inputs within the common window
    /// (series intervals cut by the window count pro rata), and that window's
    /// length; `throughput.msgs_per_s` is the one over the other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_window_messages: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_window_s: Option<f64>,
    /// Connections that had come up (stream: connected; datagram: probe
    /// answered) when the measured phase began, of `settings.conns` asked
    /// for. Fewer fails the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conns_up: Option<u64>,
    /// Connections that carried load: still up at the end and at least one
    /// echo completed. Fewer than `settings.conns` fails the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conns_carried_load: Option<u64>,
    /// Closed loop: connections still up at the end that never completed an
    /// echo: the kernel answered their handshake, the server never answered
    /// them (a full accept backlog or `--max-conns`). Any fails the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conns_unanswered: Option<u64>,
    /// Seconds from the first connect to the last of `settings.conns` up
    /// (absent if they did not all come up, in conversations and in a merge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_ramp_s: Option<f64>,
    /// The standard deviation of the headline latency (`histogram`), µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_stdev_us: Option<f64>,
    /// Closed loop: latency from when each message was queued (when the echo
    /// before it came back), so including any wait in loadgen's own send
    /// queue; `latency_us` is measured from the send, as `--timeout` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_queued_us: Option<Latency>,
    /// Datagrams: lost ones as a percentage of those sent in the measured
    /// phase (answered + lost), and `--max-loss`, the share above which the
    /// run fails. (In `extra`, not `settings`, so that `Settings` stays as
    /// other tools build it.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_pct: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_loss_pct: Option<f64>,
    /// The kernel's retransmission timeouts, resends and dropped packets
    /// over the measured phase (loadgen's network namespace, and the whole
    /// machine's input backlogs: `scope` says which). Absent when the
    /// measured phase never began, and in a merge (its inputs may have
    /// counted one machine twice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<crate::kernel_counters::KernelCounters>,
}

impl Extra {
    pub fn is_empty(&self) -> bool {
        *self == Extra::default()
    }
}

/// A fresh run id: 16 random bytes from the kernel as 32 hex digits.
pub fn new_run_id() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if random.is_err() {
        // No /dev/urandom (a bare chroot): time and pid are still unique per run on one machine.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes.copy_from_slice(&(nanos ^ ((std::process::id() as u128) << 96)).to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The machine a run happened on.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunEnv {
    pub kernel: String,
    pub cpu_model: String,
    pub cores: usize,
    /// loadgen's `--pin`, or "none".
    pub pin: String,
}

/// Every option of a run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Settings {
    /// The server backend, when known (`--label` or set by a runner).
    #[serde(default)]
    pub backend: Option<String>,
    pub label: Option<String>,
    pub transport: String,
    /// `HOST:PORT` or the socket path.
    pub target: String,
    pub conns: u64,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub size: u64,
    pub depth: u64,
    /// Open-loop total rate in messages per second; `None` for closed loop.
    pub rate: Option<f64>,
    /// Open loop: `--slack`, how far ahead of its due time a message may go out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack_s: Option<f64>,
    pub threads: u64,
    pub pin: Option<String>,
    pub connect_rate: u64,
    pub timeout_s: f64,
    /// How the stream clients did their I/O: `uring` or `epoll` (`--io`, resolved).
    #[serde(default)]
    pub io: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Throughput {
    pub msgs_per_s: f64,
    pub mb_per_s: f64,
    /// Open loop only: the requested rate, next to the achieved `msgs_per_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_msgs_per_s: Option<f64>,
}

/// Round-trip latency in microseconds. Open loop measures from each
/// message's intended send time (coordinated-omission corrected).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub p99_99: f64,
    pub max: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Errors {
    pub connect: u64,
    pub reset: u64,
    pub timeout: u64,
    pub mismatch: u64,
    pub lost: u64,
    pub duplicate: u64,
    pub reordered: u64,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.connect + self.reset + self.timeout + self.mismatch + self.lost + self.duplicate + self.reordered
    }
}

impl RunResult {
    /// The width of `series`' buckets, seconds: `series_interval_s`, or 1 s
    /// for a file written before it was recorded.
    pub fn series_interval(&self) -> f64 {
        self.series_interval_s.unwrap_or(LEGACY_SERIES_INTERVAL_S)
    }
}

/// The bucket width of files without `series_interval_s`: loadgen then
/// recorded one point per live report line, about a second.
pub const LEGACY_SERIES_INTERVAL_S: f64 = 1.0;

/// The most points a run's `series` holds, about: the buckets widen for
/// long runs so that a result file stays small.
pub const MAX_SERIES_POINTS: f64 = 600.0;

/// The width of the `series` buckets for a measured phase of `duration`: the
/// finest of 100 ms, 200 ms, 500 ms and 1 s that keeps the series within
/// [`MAX_SERIES_POINTS`] (100 ms up to a minute), else 1 s. Each divides the
/// live report's second, so the live lines are made of whole buckets.
pub fn series_interval(duration: std::time::Duration) -> std::time::Duration {
    [100, 200, 500]
        .into_iter()
        .map(std::time::Duration::from_millis)
        .find(|b| duration.as_secs_f64() / b.as_secs_f64() <= MAX_SERIES_POINTS)
        .unwrap_or(std::time::Duration::from_secs(1))
}

/// One bucket of the measured phase. Buckets are `series_interval_s` wide
/// on a grid from the phase's start, except the one that the phase's end
/// closes when the length is no multiple of the width (between half and one
/// and a half widths) and the last of a run cut short (any shorter). A
/// bucket's rate is its `msgs` over the time since the previous point's
/// `t_s` (since 0 for the first).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SeriesPoint {
    /// Seconds since the measured phase began (end of this bucket).
    pub t_s: f64,
    pub msgs: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: u64,
}

/// Reads one result file and checks its schema.
pub fn read(path: &Path) -> anyhow::Result<RunResult> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let result: RunResult =
        serde_json::from_str(&text).with_context(|| format!("{} is not a loadgen result file", path.display()))?;
    if result.schema != SCHEMA {
        bail!("{}: schema is {:?}, expected {SCHEMA:?}", path.display(), result.schema);
    }
    Ok(result)
}

/// The result as its file holds it: pretty JSON, newline-terminated.
pub fn to_json(result: &RunResult) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(result)? + "\n")
}

/// Writes one result file atomically (see [`write_atomic`]).
pub fn write(path: &Path, result: &RunResult) -> anyhow::Result<()> {
    write_atomic(path, to_json(result)?.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

/// Writes `bytes` to a temporary file beside `path` and renames it over
/// `path`: readers see the old file or the new one, never a part, and a
/// crash or a full disk never leaves half a file where a whole one was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    // tempfile creates 0600; a result file is as readable as any other the user writes.
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Encodes a histogram as HdrHistogram V2 compressed, base64 (the `histogram` field).
pub fn encode_histogram(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut bytes)
        .expect("serialize histogram");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes [`encode_histogram`]'s output.
pub fn decode_histogram(s: &str) -> anyhow::Result<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .context("histogram is not base64")?;
    Deserializer::new()
        .deserialize(&mut std::io::Cursor::new(bytes))
        .map_err(|e| anyhow::anyhow!("histogram does not decode: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_round_trips() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for v in [1, 50, 700, 12_000] {
            h.record(v).unwrap();
        }
        let back = decode_histogram(&encode_histogram(&h)).unwrap();
        assert_eq!((back.len(), back.max()), (h.len(), h.max()));
        assert!(decode_histogram("not base64!").is_err());
    }

    #[test]
    fn unknown_extra_keys_are_ignored_and_known_ones_typed() {
        let extra: Extra = serde_json::from_str(
            r#"{"threads_used": 2, "loadgen_cpu_us_per_msg": 3.5, "server_peak_rss_kb": 9, "runner": "compare"}"#,
        )
        .unwrap();
        assert_eq!(extra.threads_used, Some(2));
        assert_eq!(extra.loadgen_cpu_us_per_msg, Some(3.5));
        assert_eq!(
            serde_json::to_string(&extra).unwrap(),
            r#"{"threads_used":2,"loadgen_cpu_us_per_msg":3.5}"#
        );
    }

    #[test]
    fn series_buckets_are_100ms_up_to_a_minute_and_widen_after() {
        let ms = |n: u64| std::time::Duration::from_millis(n);
        assert_eq!(series_interval(ms(1_500)), ms(100));
        assert_eq!(series_interval(ms(60_000)), ms(100));
        assert_eq!(series_interval(ms(60_001)), ms(200));
        assert_eq!(series_interval(ms(300_000)), ms(500));
        assert_eq!(series_interval(ms(3_600_000)), ms(1_000));
    }
}
