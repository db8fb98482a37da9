//! The server's command line and the configuration every backend receives.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use clap::Parser;

use crate::cpu::{self, CpuList};
use crate::net::{self, AddrError, Endpoint, Transport};

/// A flag value the server refuses before it starts (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Address(#[from] AddrError),
    /// The value of `flag` (alone, or with another flag) cannot work.
    #[error("{flag} {value}: {reason}")]
    Flag {
        flag: &'static str,
        value: String,
        reason: String,
    },
}

/// The four I/O models the server can run with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum BackendKind {
    /// accept() in a loop and fork() a child per connection.
    Fork,
    /// An acceptor thread feeds a fixed pool of blocking worker threads.
    Threadpool,
    /// Edge-triggered epoll, one event loop per thread.
    Epoll,
    /// io_uring with multishot accept/recv and a provided buffer ring.
    Uring,
}

impl BackendKind {
    pub const ALL: [BackendKind; 4] = [
        BackendKind::Fork,
        BackendKind::Threadpool,
        BackendKind::Epoll,
        BackendKind::Uring,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Fork => "fork",
            BackendKind::Threadpool => "threadpool",
            BackendKind::Epoll => "epoll",
            BackendKind::Uring => "uring",
        }
    }

    /// The `--max-conns` default: fork pays a process per connection, so its
    /// cap is lower; the others are bounded by descriptors.
    pub fn default_max_conns(self) -> usize {
        match self {
            BackendKind::Fork => 4096,
            _ => 16384,
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The address `server` listens on when neither `--addr` nor `--path` is given.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7000";

/// The flags that say where and on which CPUs an echo server listens:
/// `server` and the `tokio-echo` reference share them, names, grammar and all.
#[derive(Debug, Clone, clap::Args)]
pub struct ListenArgs {
    /// Socket kind to serve.
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    pub transport: Transport,
    /// HOST:PORT for tcp/udp (IPv6 as [::1]:7000). Port 0 picks a free port. [default: 127.0.0.1:7000]
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<String>,
    /// Socket file for unix/unixgram. A stale file is replaced; it is removed on exit.
    #[arg(long, value_name = "SOCKET_PATH")]
    pub path: Option<PathBuf>,
    /// Pin workers to these CPUs, e.g. 0 or 0-1 or 0,2-3; worker i gets the i-th CPU, wrapping.
    #[arg(long, value_name = "CPU_LIST")]
    pub pin: Option<CpuList>,
}

impl ListenArgs {
    /// The endpoint the flags name, as requested (port 0 not yet resolved).
    pub fn endpoint(&self) -> Result<Endpoint, AddrError> {
        net::endpoint_from_flags(self.transport, self.addr.as_deref(), self.path.as_deref(), DEFAULT_ADDR)
    }
}

/// `server`: an echo server with interchangeable I/O backends.
#[derive(Debug, Parser)]
#[command(name = "server", version, about, long_about = None)]
pub struct ServerArgs {
    /// I/O model.
    #[arg(long, value_enum)]
    pub backend: BackendKind,
    #[command(flatten)]
    pub listen: ListenArgs,
    /// Worker threads (threadpool: pool size, as many as the machine allows; epoll/uring:
    /// event loops, fork: preforked processes for datagram transports, up to 1024 each).
    /// [default: one per core]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub threads: Option<u32>,
    /// Most connections served at once. Past it the server stops accepting until one
    /// closes. [default: 4096 for fork, 16384 otherwise]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_conns: Option<u64>,
    /// uring: submission queue entries per ring, 8 to 32768 (the completion queue is
    /// sized for --max-conns on top of this).
    #[arg(long, default_value_t = UringOptions::DEFAULT.ring_entries)]
    pub ring_entries: u32,
    /// uring: buffers in each thread's provided buffer ring, a power of two from 2 to 32768.
    #[arg(long, default_value_t = UringOptions::DEFAULT.buf_count)]
    pub buf_count: u32,
    /// uring: size of each provided buffer in bytes, 512 to 1048576.
    #[arg(long, default_value_t = UringOptions::DEFAULT.buf_size)]
    pub buf_size: u32,
    /// uring, for A/B measurement: name sockets by slot in each ring's fixed file
    /// table (direct accept, IOSQE_FIXED_FILE), or (off) by ordinary descriptor.
    #[arg(long, value_enum, value_name = "ON|OFF", default_value_t = OnOff::On)]
    pub uring_fixed_files: OnOff,
    /// uring, for A/B measurement: enter each ring by its registered index
    /// (IORING_REGISTER_RING_FDS), or (off) by its descriptor.
    #[arg(long, value_enum, value_name = "ON|OFF", default_value_t = OnOff::On)]
    pub uring_register_ring: OnOff,
    /// uring, for A/B measurement: how many completions a loop turn waits for (one;
    /// quiet: one more than its own sends, with a 1 ms timer, measured 12-21% costlier
    /// at matched load).
    #[arg(long, value_enum, value_name = "QUIET|ONE", default_value_t = UringWait::One)]
    pub uring_wait: UringWait,
    /// uring, for A/B measurement: ask for transparent huge pages
    /// (madvise MADV_HUGEPAGE) for the provided buffers; resident in 2 MiB units then.
    #[arg(long, value_enum, value_name = "ON|OFF", default_value_t = OnOff::Off)]
    pub uring_hugepages: OnOff,
    /// uring, for A/B measurement (Linux 6.12): a waiting turn asks for a batch of
    /// completions, and once it has waited USEC microseconds (at most 10000) returns as
    /// soon as one is there (io_uring min_wait). 0: off, wait for one.
    #[arg(long, value_name = "USEC", default_value_t = 0)]
    pub uring_min_wait: u32,
    /// For checking a comparison's sensitivity only: busy-spin this many ns on every
    /// echo operation, a known extra cost per message. epoll over tcp or unix only.
    #[arg(long, value_name = "NS", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub calibration_spin_ns: Option<u64>,
}

/// The largest `--uring-min-wait`: 10 ms. It delays the completions of a
/// turn's first microseconds by up to this much; past a few milliseconds that
/// is a stall, not batching.
pub const MAX_MIN_WAIT_USEC: u32 = 10_000;

/// `--ring-entries`: the kernel rounds up to a power of two and refuses
/// more than 32768 submission entries (`IORING_MAX_ENTRIES`); below 8 a
/// turn's own reserved operations would not fit.
pub const RING_ENTRIES_RANGE: std::ops::RangeInclusive<u32> = 8..=32768;
/// `--buf-count`: a power of two (the kernel's buffer ring is indexed by a
/// mask) up to 32768 (`IORING` buffer ids are 16 bits, the kernel caps the
/// ring at 32768). At least 2: a multishot receive that fills the only
/// buffer finds none for what follows and ends with `ENOBUFS` at once.
pub const BUF_COUNT_RANGE: std::ops::RangeInclusive<u32> = 2..=32768;
/// `--buf-size`: at least 512 bytes (smaller buffers split every message),
/// at most 1 MiB.
pub const BUF_SIZE_RANGE: std::ops::RangeInclusive<u32> = 512..=1 << 20;

/// A technique switched on or off, for A/B measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

impl OnOff {
    pub fn is_on(self) -> bool {
        self == OnOff::On
    }

    /// As the `listening` line writes a setting.
    pub fn name(on: bool) -> &'static str {
        if on {
            "on"
        } else {
            "off"
        }
    }
}

/// How many completions a uring loop turn waits for (`--uring-wait`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum UringWait {
    /// One more than the turn's own quiet sends, bounded by 1 ms: a quiet echo
    /// costs one enter, but each such enter arms a timer.
    Quiet,
    /// Always one, with no timer: a quiet echo costs two enters (the default).
    One,
}

impl UringWait {
    pub fn name(self) -> &'static str {
        match self {
            UringWait::Quiet => "quiet",
            UringWait::One => "one",
        }
    }
}

/// io_uring settings (ignored by the other backends).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UringOptions {
    pub ring_entries: u32,
    pub buf_count: u32,
    pub buf_size: u32,
    /// `--uring-fixed-files`: sockets are slots in a fixed file table.
    pub fixed_files: bool,
    /// `--uring-register-ring`: enter the ring by its registered index.
    pub register_ring: bool,
    /// `--uring-wait`.
    pub wait: UringWait,
    /// `--uring-hugepages`: `MADV_HUGEPAGE` on the provided buffers.
    pub hugepages: bool,
    /// `--uring-min-wait`: microseconds after which a waiting turn takes any
    /// completion instead of its batch; 0 is off.
    pub min_wait_usec: u32,
}

impl Default for UringOptions {
    fn default() -> Self {
        UringOptions::DEFAULT
    }
}

impl UringOptions {
    /// The server's defaults, as `server --help` shows them.
    pub const DEFAULT: UringOptions = UringOptions {
        ring_entries: 4096,
        buf_count: 4096,
        buf_size: 16384,
        fixed_files: true,
        register_ring: true,
        wait: UringWait::One,
        hugepages: false,
        min_wait_usec: 0,
    };

    /// Refuses sizes and combinations the uring backend cannot run with,
    /// naming the flag, as the server does before it starts (exit 2). Pure:
    /// it looks at no kernel, so a planner (`compare --peers`) can refuse at
    /// planning what every run would fail at start. What only the kernel
    /// can refuse (memory for the buffers, a feature) the server names the
    /// flag of at start.
    pub fn check(&self) -> Result<(), ConfigError> {
        let refuse = |flag: &'static str, value: u32, reason: String| ConfigError::Flag {
            flag,
            value: value.to_string(),
            reason,
        };
        let range = |r: &std::ops::RangeInclusive<u32>| format!("{} to {}", r.start(), r.end());
        if !RING_ENTRIES_RANGE.contains(&self.ring_entries) {
            let reason = format!("submission queue entries must be {}", range(&RING_ENTRIES_RANGE));
            return Err(refuse("--ring-entries", self.ring_entries, reason));
        }
        if !BUF_COUNT_RANGE.contains(&self.buf_count) || !self.buf_count.is_power_of_two() {
            let reason = format!(
                "buffers per ring must be a power of two from {} (a multishot receive needs a free buffer beside the one it fills)",
                range(&BUF_COUNT_RANGE)
            );
            return Err(refuse("--buf-count", self.buf_count, reason));
        }
        if !BUF_SIZE_RANGE.contains(&self.buf_size) {
            let reason = format!("bytes per buffer must be {}", range(&BUF_SIZE_RANGE));
            return Err(refuse("--buf-size", self.buf_size, reason));
        }
        if self.min_wait_usec > MAX_MIN_WAIT_USEC {
            let reason = format!(
                "at most {MAX_MIN_WAIT_USEC} (10 ms): past a few milliseconds a min_wait is a stall, not batching"
            );
            return Err(refuse("--uring-min-wait", self.min_wait_usec, reason));
        }
        if self.min_wait_usec > 0 && self.wait == UringWait::Quiet {
            // Two answers to one question (how long a turn waits): an A/B run
            // must switch one technique at a time.
            let reason =
                "replaces --uring-wait quiet's bounded wait; use it with --uring-wait one (the default)".into();
            return Err(refuse("--uring-min-wait", self.min_wait_usec, reason));
        }
        Ok(())
    }
}

/// Everything a backend needs to know, validated.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub backend: BackendKind,
    pub transport: Transport,
    /// The endpoint as requested (port 0 not yet resolved).
    pub endpoint: Endpoint,
    pub threads: usize,
    pub pin: Option<CpuList>,
    pub max_conns: usize,
    pub uring: UringOptions,
    /// `--calibration-spin-ns`, see [`calibration_spin`].
    pub calibration_spin_ns: Option<u64>,
}

impl ServerConfig {
    /// Validates the flags. With `--calibration-spin-ns` it also arms the
    /// process-wide spin that [`calibration_spin`] performs.
    pub fn from_args(args: ServerArgs) -> Result<Self, ConfigError> {
        let endpoint = args.listen.endpoint()?;
        let transport = args.listen.transport;
        if let Some(ns) = args.calibration_spin_ns {
            if args.backend != BackendKind::Epoll || !transport.is_stream() {
                return Err(ConfigError::Flag {
                    flag: "--calibration-spin-ns",
                    value: ns.to_string(),
                    reason: format!(
                        "implemented for --backend epoll over tcp or unix only, not --backend {} --transport {}",
                        args.backend, transport
                    ),
                });
            }
            CALIBRATION_SPIN_NS.store(ns, Relaxed);
        }
        let uring = UringOptions {
            ring_entries: args.ring_entries,
            buf_count: args.buf_count,
            buf_size: args.buf_size,
            fixed_files: args.uring_fixed_files.is_on(),
            register_ring: args.uring_register_ring.is_on(),
            wait: args.uring_wait,
            hugepages: args.uring_hugepages.is_on(),
            min_wait_usec: args.uring_min_wait,
        };
        // Checked whatever the backend: a flag the server accepts it honours.
        uring.check()?;
        Ok(ServerConfig {
            backend: args.backend,
            transport,
            endpoint,
            threads: args.threads.map(|t| t as usize).unwrap_or_else(cpu::available_cpus),
            pin: args.listen.pin,
            max_conns: args
                .max_conns
                .map(|m| m as usize)
                .unwrap_or_else(|| args.backend.default_max_conns()),
            uring,
            calibration_spin_ns: args.calibration_spin_ns,
        })
    }

    /// Pins the calling worker thread if `--pin` was given.
    pub fn pin_worker(&self, worker: usize) {
        if let Some(pin) = &self.pin {
            pin.pin_worker(worker);
        }
    }
}

/// `--calibration-spin-ns`, process-wide so that no backend's state has to
/// carry it; 0 (the default) costs the echo path one relaxed load.
static CALIBRATION_SPIN_NS: AtomicU64 = AtomicU64::new(0);

/// Busy-spins for `--calibration-spin-ns` (if set), on every echo operation
/// of the epoll stream loop: a known extra cost per message with which
/// `compare` checks that its method detects a difference of that size. Never
/// for measuring anything else.
#[inline]
pub fn calibration_spin() {
    let ns = CALIBRATION_SPIN_NS.load(Relaxed);
    if ns != 0 {
        let until = Instant::now() + Duration::from_nanos(ns);
        while Instant::now() < until {
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut UringOptions)) -> UringOptions {
        let mut o = UringOptions::default();
        f(&mut o);
        o
    }

    /// The flag named in the refusal of each value that cannot work.
    fn refused_flag(o: UringOptions) -> Option<&'static str> {
        match o.check() {
            Err(ConfigError::Flag { flag, .. }) => Some(flag),
            _ => None,
        }
    }

    #[test]
    fn uring_options_refuse_what_cannot_work_naming_the_flag() {
        assert_eq!(UringOptions::default().check().ok(), Some(()));
        let cases: [(UringOptions, &str); 9] = [
            (with(|o| o.buf_count = 1), "--buf-count"),
            (with(|o| o.buf_count = 3), "--buf-count"),
            (with(|o| o.buf_count = 65536), "--buf-count"),
            (with(|o| o.ring_entries = 2), "--ring-entries"),
            (with(|o| o.ring_entries = 65536), "--ring-entries"),
            (with(|o| o.buf_size = 1), "--buf-size"),
            (with(|o| o.buf_size = (1 << 20) + 1), "--buf-size"),
            (with(|o| o.min_wait_usec = MAX_MIN_WAIT_USEC + 1), "--uring-min-wait"),
            (
                with(|o| {
                    o.min_wait_usec = 50;
                    o.wait = UringWait::Quiet
                }),
                "--uring-min-wait",
            ),
        ];
        for (o, flag) in cases {
            assert_eq!(refused_flag(o.clone()), Some(flag), "{o:?}");
        }
        for o in [
            with(|o| o.buf_count = 2),
            with(|o| o.buf_count = 32768),
            with(|o| o.ring_entries = 8),
            with(|o| o.ring_entries = 32768),
            with(|o| o.buf_size = 512),
            with(|o| o.buf_size = 1 << 20),
            with(|o| o.min_wait_usec = MAX_MIN_WAIT_USEC),
        ] {
            assert_eq!(o.check().ok(), Some(()), "{o:?}");
        }
    }
}
