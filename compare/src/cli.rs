//! The command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use sockbench::cpu::CpuList;
use sockbench::duration::parse_duration;
use sockbench::net::Transport;
use sockbench::server::BackendKind;

/// Runs every backend over the comparison matrix and writes results/: result files, SVG plots, README.md.
#[derive(Debug, Parser)]
#[command(name = "compare", version, long_about = None)]
pub struct CompareArgs {
    /// A small matrix that finishes in under 2 minutes (CI smoke, trying it out).
    #[arg(long)]
    pub quick: bool,
    /// Backends to run (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub backends: Option<Vec<BackendKind>>,
    /// Transports to run (comma-separated). Default: tcp, udp, unix (tcp, udp with --quick).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub transports: Option<Vec<Transport>>,
    /// Measured phase of each run (`10s`, `500ms`, `1m`). Default 5s, or 2s with --quick.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Warm-up of each run, not measured. Default 1s, or 500ms with --quick.
    #[arg(long, value_parser = parse_duration)]
    pub warmup: Option<Duration>,
    /// Times the whole matrix is run; each point's tables and plots show its
    /// median run. Default 3, or 1 with --quick.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: Option<u32>,
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
