//! The command line: the flags, turned into the plan's [`Request`]. This
//! module comes after `plan` (it parses peers into the plan's
//! [`PeerEntry`]), and the plan never sees the flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use sockbench::cpu::CpuList;
use sockbench::duration::parse_duration;
use sockbench::net::Transport;

use crate::plan::{PeerEntry, Request};

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
    /// Transports to run (comma-separated). Default: tcp, udp, unix for messages and
    /// tcp, unix for conversations (tcp, udp with --quick).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub transports: Option<Vec<Transport>>,
    /// These connection counts (comma-separated, any count from 1) instead of
    /// the matrix's; the matched-load sweep runs at its count (100) if listed.
    /// Default: every count of the matrix.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub conns: Option<Vec<u64>>,
    /// Workloads: messages (long-lived connections), conversations (a
    /// connection per conversation: `--conn-msgs` messages each, at 1, 100
    /// and 1000 concurrent conversations (or --conns), over tcp and unix; then
    /// matched load at 1 message, 100 conversations), or all. Default: all
    /// (messages with --quick; conversations when --conn-msgs is given).
    #[arg(long, value_enum, value_name = "AXIS")]
    pub axis: Option<crate::plan::Axis>,
    /// Messages per connection of the conversation axis (comma-separated).
    /// Default 1,10,100. Given alone it selects --axis conversations.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub conn_msgs: Option<Vec<u64>>,
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
    /// Adaptive repetitions: after the first --repetitions rounds, run again only
    /// the points where some label's server CPU ratio is neither different from 1
    /// nor within this band of it (`10%`: inside [0.9, 1.1]), until it is, the
    /// cap (--max-repetitions) is reached or the --budget would be exceeded.
    /// Each look uses a 99% interval, so the repeated looks keep the A/A
    /// false-positive rate under 5% (analyse::adaptive). `off`: the fixed design.
    /// Default: 10% for the full run, off with --quick.
    #[arg(long, value_name = "PERCENT|off")]
    pub decide_at: Option<String>,
    /// The per-point cap of adaptive repetitions (2 to 20; default 12). Giving
    /// it turns the adaptive design on (at 10% unless --decide-at says otherwise).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(2..=20))]
    pub max_repetitions: Option<u32>,
    /// Wall-clock budget of the whole comparison (`45m`, `1h`): before each
    /// adaptive round compare estimates its time from the runs so far, and runs
    /// only what ends within the budget; the points left open are reported
    /// "undecided (time budget)". The planned rounds always run. Default: 45m
    /// for the full run, none with --quick.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub budget: Option<Duration>,
    /// Which points the adaptive rounds may repeat: `all`, or `matched-load`
    /// (the other points keep their first --repetitions rounds and report
    /// the fixed design's interval, "first rounds only"). `matched-load` is
    /// for a check of the method at one matched-load point (scale/self-check.sh),
    /// whose closed-loop point only sets the rate. Default: all.
    #[arg(long, value_enum, value_name = "WHICH")]
    pub adaptive_points: Option<AdaptivePoints>,
    /// CPUs for the server. Default: the first half of the CPUs (CPU 0 on 2 cores).
    #[arg(long)]
    pub server_cpus: Option<CpuList>,
    /// CPUs for loadgen. Default: the other half (CPU 1 on 2 cores).
    #[arg(long)]
    pub loadgen_cpus: Option<CpuList>,
    /// Where the plots and README go, and each run's files under its `runs/`.
    /// A new run writes into a fresh directory inside it and replaces the
    /// previous run's files only once it has finished. Default: results, or
    /// results/quick with --quick (so a smoke test never replaces the full run).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Directory holding the `server` and `loadgen` executables. Default: the
    /// directory of this executable (target/release with `cargo run --release`).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Count the server's system calls in each run's window with `perf stat -e
    /// raw_syscalls:sys_enter -p PID` (syscalls per message in the report).
    /// Off by default: the tracepoint adds about 0.13 µs to every system call,
    /// which inflates the CPU figures of the same runs.
    #[arg(long)]
    pub count_syscalls: bool,
    /// Do not run anything: redraw the plots and README from the last run's files in --out-dir.
    #[arg(long)]
    pub report_only: bool,
}

/// `--out-dir` unless given: the committed full run's, or `--quick`'s own.
pub const DEFAULT_OUT_DIR: &str = "results";
pub const QUICK_OUT_DIR: &str = "results/quick";

impl CompareArgs {
    /// The output directory: `--out-dir`, else [`DEFAULT_OUT_DIR`] or with
    /// `--quick` [`QUICK_OUT_DIR`].
    pub fn out_dir(&self) -> PathBuf {
        match &self.out_dir {
            Some(dir) => dir.clone(),
            None if self.quick => PathBuf::from(QUICK_OUT_DIR),
            None => PathBuf::from(DEFAULT_OUT_DIR),
        }
    }

    /// What the flags ask the plan for.
    pub fn request(&self) -> Request {
        Request {
            quick: self.quick,
            peers: self.peers.clone(),
            reference: self.reference.clone(),
            transports: self.transports.clone(),
            conns: self.conns.clone(),
            axis: self.axis,
            conn_msgs: self.conn_msgs.clone(),
            duration: self.duration,
            warmup: self.warmup,
            repetitions: self.repetitions,
            server_cpus: self.server_cpus.clone(),
            loadgen_cpus: self.loadgen_cpus.clone(),
            count_syscalls: self.count_syscalls,
            budget: self.budget,
        }
    }
}

/// `--adaptive-points`: where adaptive rounds may add repetitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AdaptivePoints {
    /// Every point of the comparison.
    All,
    /// Only the matched-load points.
    MatchedLoad,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::plan::Comparison;

    fn plan(argv: &[&str]) -> anyhow::Result<Comparison> {
        Comparison::from_request(&CompareArgs::try_parse_from(argv).unwrap().request())
    }

    #[test]
    fn quick_writes_beside_the_full_run_unless_told() {
        let dir = |argv: &[&str]| CompareArgs::try_parse_from(argv).unwrap().out_dir();
        assert_eq!(dir(&["compare"]), PathBuf::from("results"));
        assert_eq!(dir(&["compare", "--quick"]), PathBuf::from("results/quick"));
        assert_eq!(dir(&["compare", "--quick", "--out-dir", "x"]), PathBuf::from("x"));
    }

    #[test]
    fn repetitions_rotate_the_peers_and_keep_a_point_together() {
        let args = CompareArgs::try_parse_from([
            "compare",
            "--quick",
            "--transports",
            "tcp",
            "--peers",
            "fork,epoll,uring",
        ])
        .unwrap();
        let plan = Comparison::from_request(&args.request()).unwrap();
        assert_eq!(plan.reference, "epoll");
        let order = |rep| -> Vec<String> {
            plan.closed_loop(rep)
                .iter()
                .map(|s| format!("{}/{}", s.label, s.conns))
                .collect()
        };
        assert_eq!(
            order(1),
            ["fork/1", "epoll/1", "uring/1", "fork/100", "epoll/100", "uring/100"]
        );
        assert_eq!(
            order(2),
            ["epoll/1", "uring/1", "fork/1", "epoll/100", "uring/100", "fork/100"]
        );
        assert_eq!(order(4), order(1));
        assert!(plan.closed_loop(2).iter().all(|s| s.repetition == 2));
    }

    /// Issues 24 and 27: the default full run holds both axes, and its
    /// planned rounds leave the adaptive rounds at least 10 of its 45
    /// minutes; `--quick` stays small and fixed.
    #[test]
    fn the_default_run_leaves_its_adaptive_rounds_room_in_45_minutes_and_quick_under_two() {
        use crate::plan::{Purpose, FULL_BUDGET};
        let plan = |argv: &[&str]| plan(argv).unwrap();
        let full = plan(&["compare"]);
        // 5 peers × 5 repetitions × (13 + 18 closed-loop points + 3 + 2 matched-load points × 1 rate).
        let conv = |p: &&crate::plan::PointShape| p.conn_msgs.is_some();
        assert_eq!(full.matrix.points.iter().filter(conv).count(), 18);
        assert_eq!(full.matrix.points.len(), 31);
        assert_eq!(full.matrix.matched_points.len(), 5);
        assert_eq!(full.matrix.fractions, [0.5]);
        assert_eq!(full.total_runs(), 900);
        assert_eq!(full.budget, Some(Duration::from_secs(45 * 60)));
        assert_eq!(FULL_BUDGET, Duration::from_secs(45 * 60));
        let base = full.estimated_duration();
        let minutes = base.as_secs_f64() / 60.0;
        eprintln!("the full run's planned rounds: {minutes:.1} min");
        assert!((32.0..=35.0).contains(&minutes), "{minutes:.1} min");
        assert!(
            base + Duration::from_secs(10 * 60) <= full.budget.unwrap(),
            "the adaptive rounds must get at least 10 of the 45 minutes"
        );
        // The adaptive tiers: matched load first (messages, then conversations),
        // then the Fig. 30.1 points, then the rest.
        let tier = |p: &crate::plan::PointShape, purpose| Comparison::adaptive_tier(*p, purpose);
        let matched = Purpose::MatchedLoad { fraction: 0.5 };
        let tiers: Vec<u8> = full.matrix.matched_points.iter().map(|p| tier(p, matched)).collect();
        assert_eq!(tiers, [0, 0, 0, 1, 1]);
        let closed: Vec<u8> = full.matrix.points.iter().map(|p| tier(p, Purpose::Peak)).collect();
        assert_eq!(closed.iter().filter(|&&t| t == 2).count(), 6);
        assert_eq!(closed.iter().filter(|&&t| t == 3).count(), 25);
        let quick = plan(&["compare", "--quick"]);
        assert_eq!(quick.total_runs(), 50);
        assert_eq!(quick.budget, None);
        assert!(
            quick.estimated_duration() < Duration::from_secs(100),
            "{:?}",
            quick.estimated_duration()
        );
        // The message axis alone, as before the conversation axis joined the default.
        let messages = plan(&["compare", "--axis", "messages"]);
        assert!(messages.matrix.points.iter().all(|p| p.conn_msgs.is_none()));
        assert_eq!(messages.total_runs(), 400);
    }

    #[test]
    fn bad_peer_lists_are_refused() {
        assert!(plan(&["compare", "--peers", "epoll,epoll"]).is_err());
        assert!(plan(&["compare", "--peers", "epoll,uring", "--reference", "fork"]).is_err());
        assert!(
            plan(&["compare", "--peers", "epoll,epoll@slow:spin=600"]).is_err(),
            "udp with a spin"
        );
        let ok = plan(&["compare", "--peers", "fork,uring", "--transports", "tcp"]).unwrap();
        assert_eq!(ok.reference, "fork");
        let one = plan(&["compare", "--quick", "--conns", "100", "--transports", "tcp"]).unwrap();
        assert_eq!(one.runs_per_repetition(), (5, 5));
        // Any count is allowed (issue 28): 7 connections over each transport.
        let seven = plan(&["compare", "--axis", "messages", "--conns", "7,1"]).unwrap();
        let shapes: Vec<(u64, u64)> = seven.matrix.points.iter().map(|p| (p.conns, p.size_bytes)).collect();
        assert_eq!(shapes, [(1, 128), (7, 128), (1, 128), (7, 128), (1, 128), (7, 128)]);
        assert!(seven.matrix.matched_points.is_empty());
        let large = plan(&[
            "compare",
            "--axis",
            "messages",
            "--conns",
            "100,50",
            "--transports",
            "tcp",
        ])
        .unwrap();
        let shapes: Vec<(u64, u64)> = large.matrix.points.iter().map(|p| (p.conns, p.size_bytes)).collect();
        assert_eq!(shapes, [(50, 128), (100, 128), (100, 4096)]);
        assert_eq!(large.matrix.matched_points.len(), 1);
        assert!(plan(&["compare", "--conns", "0"]).is_err());
    }
}

#[test]
fn adaptive_flags_parse_within_their_ranges() {
    let args = CompareArgs::try_parse_from(["compare", "--decide-at", "5%", "--max-repetitions", "12"]).unwrap();
    assert_eq!(
        (args.decide_at.as_deref(), args.max_repetitions),
        (Some("5%"), Some(12))
    );
    assert!(CompareArgs::try_parse_from(["compare", "--max-repetitions", "21"]).is_err());
    assert!(CompareArgs::try_parse_from(["compare", "--max-repetitions", "1"]).is_err());
    let fixed = CompareArgs::try_parse_from(["compare"]).unwrap();
    assert_eq!((fixed.decide_at, fixed.max_repetitions), (None, None));
}
