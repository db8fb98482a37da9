//! The `sockbench.result.v1` result file that `loadgen --out` writes and that
//! `loadgen merge` and `compare` read. The key names are a public contract:
//! other tools rely on them (see README.md, "Result files").

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
    /// One entry per second of the measured phase.
    pub series: Vec<SeriesPoint>,
    /// The full latency histogram (microseconds), HdrHistogram V2 compressed, base64.
    pub histogram: String,
    /// Anything a runner adds (e.g. `compare` records server CPU and RSS here).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
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

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SeriesPoint {
    /// Seconds since the measured phase began (end of this interval).
    pub t_s: f64,
    pub msgs: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: u64,
}
