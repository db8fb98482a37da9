//! The command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use sockbench::cpu::CpuList;
use sockbench::duration::parse_duration;
use sockbench::net::Transport;

use crate::plan::PeerEntry;

/// Runs every backend over the comparison matrix and writes results/: result files, SVG plots, README.md.
#[derive(Debug, Parser)]
#[command(name = "compare", version, long_about = None)]
pub struct CompareArgs {
    /// A small matrix that finishes in under 2 minutes (CI smoke, trying it out).
    #[arg(long)]
    pub quick: bool,
    /// Peers to run (comma-separated), each `PEER[@NAME][:KNOB=VALUE]...`: PEER is
    /// fork, threadpool, epoll, uring or tokio (the tokio-echo reference). `epoll@twin`
    /// enters epoll a second time under its own label (an A/A test);
    /// `epoll@slow:spin=600` runs `server --calibration-spin-ns 600` (a known extra cost
    /// per echo, for checking the method's sensitivity; epoll over tcp/unix only);
    /// `uring@onewait:uring-wait=one` runs `server --uring-wait one` (an A/B run of one
    /// technique). Knobs: spin, and the uring flags buf-count, buf-size, ring-entries,
    /// uring-fixed-files, uring-register-ring, uring-wait, uring-hugepages, uring-min-wait.
    /// Default: fork,threadpool,epoll,uring,tokio.
    #[arg(long, alias = "backends", value_delimiter = ',', value_name = "PEERS")]
    pub peers: Option<Vec<PeerEntry>>,
    /// The label every ratio is taken against. Default: epoll (else the first peer).
    /// With --report-only: redraw the report against this label instead.
    #[arg(long, value_name = "LABEL")]
    pub reference: Option<String>,
    /// Transports to run (comma-separated). Default: tcp, udp, unix (tcp, udp with --quick).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub transports: Option<Vec<Transport>>,
    /// Only these connection counts (comma-separated) of the matrix and of the
    /// matched-load sweep. Default: every count of the matrix.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub conns: Option<Vec<u64>>,
    /// Measured phase of each run (`10s`, `500ms`, `1m`). Default 1500ms, or 700ms with --quick.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Warm-up of each run, not measured. Default 500ms, or 300ms with --quick.
    #[arg(long, value_parser = parse_duration)]
    pub warmup: Option<Duration>,
    /// Runs of every point, made repetition by repetition over the whole matrix
    /// with the peers' order rotated each time. Default 5: the order-statistic
    /// interval of a median is [min, max] at 93.75% with 5 runs, and 6 to 8 runs
    /// give [min, max] again, so they add time and no resolution (9 is the next
    /// step). Default 2 with --quick (too few for a verdict: a smoke test).
    #[arg(long, alias = "rounds", value_parser = clap::value_parser!(u32).range(1..=20))]
    pub repetitions: Option<u32>,
    /// CPUs for the server. Default: the first half of the CPUs (CPU 0 on 2 cores).
    #[arg(long)]
    pub server_cpus: Option<CpuList>,
    /// CPUs for loadgen. Default: the other half (CPU 1 on 2 cores).
    #[arg(long)]
    pub loadgen_cpus: Option<CpuList>,
    /// Where the result files, plots and README go. A new run writes into a
    /// fresh directory inside it and replaces the previous run's files only
    /// once it has finished.
    #[arg(long, default_value = "results")]
    pub out_dir: PathBuf,
    /// Directory holding the `server` and `loadgen` executables. Default: the
    /// directory of this executable (target/release with `cargo run --release`).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Do not run anything: redraw the plots and README from the last run's files in --out-dir.
    #[arg(long)]
    pub report_only: bool,
}
