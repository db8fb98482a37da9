//! loadgen's command line, and the parsers for durations and rates.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use sockbench::cpu::CpuList;
pub use sockbench::duration::parse_duration;
use sockbench::net::Transport;

/// The address loadgen targets when neither `--addr` nor `--path` is given.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7000";

/// `loadgen`: thousands of checked echo clients with coordinated-omission-correct latency.
///
/// `loadgen merge A.json B.json ... --out TOTAL.json` combines result files.
#[derive(Debug, Clone, Parser)]
#[command(name = "loadgen", version, about, long_about = None)]
pub struct Args {
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
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub conns: u64,
    /// Length of the measured phase, e.g. 500ms, 2s, 1m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
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
    #[arg(long, value_name = "MSGS_PER_S", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Event-loop threads; connections are spread over them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub threads: u64,
    /// Pin thread i to the i-th CPU of this list (wrapping), e.g. 1 or 2-3.
    #[arg(long, value_name = "CPU_LIST")]
    pub pin: Option<CpuList>,
    /// New connections per second during startup (failures back off and retry).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub connect_rate: u64,
    /// An echo not back within this long counts as a timeout (datagrams: lost).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub timeout: Duration,
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
    /// Write the result JSON here, and the .hgrm percentile file beside it.
    #[arg(long, value_name = "FILE.json")]
    pub out: Option<PathBuf>,
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
#[derive(Debug, Parser)]
#[command(
    name = "loadgen merge",
    about = "Merge loadgen result files (histograms and counts are added)"
)]
pub struct MergeArgs {
    /// Result files of runs with matching settings.
    #[arg(required = true, num_args = 1..)]
    pub inputs: Vec<PathBuf>,
    /// Where to write the merged result (and its .hgrm).
    #[arg(long, value_name = "TOTAL.json")]
    pub out: PathBuf,
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
    fn rates() {
        assert_eq!(parse_rate("2.5k").unwrap(), 2500.0);
        assert_eq!(parse_rate("1M").unwrap(), 1e6);
        for bad in ["0", "-5", "k", "", "nan", "inf", "1e3"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
