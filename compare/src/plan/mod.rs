//! Stage 1, plan: which runs a comparison does, with which server and
//! loadgen command lines, and where a backend is scaled down because it
//! cannot hold the requested number of connections on this machine.
//!
//! Everything here is typed ([`Peer`], [`Transport`]) and pure, except the
//! few `/proc` and `getrlimit` reads that size the scale-downs. Nothing here
//! starts a process, and nothing here knows the command line: `cli` turns
//! the flags into a [`Request`].
//!
//! - [`peers`]: the peer grammar (`PEER[@NAME][:KNOB=VALUE]...`) and the server knobs.
//! - [`spec`]: one run's settings and argv, and the forms older manifests hold it in.
//! - [`caps`]: the CPU split and the connection caps of this machine.
//! - [`matrix`]: the points of the full and `--quick` matrix.
//! - [`matched`]: the matched-load sweep's offered rates.
//! - this file: the whole [`Comparison`], its defaults and what cannot be planned.

pub mod caps;
pub mod matched;
pub mod matrix;
pub mod peers;
pub mod spec;

use std::time::Duration;

use sockbench::cpu::CpuList;
use sockbench::net::Transport;

pub use caps::{per_conn_task_cap, threadpool_cap, CpuSplit, THREAD_HEADROOM};
pub use matched::{matched_rates, MatchedRates, OfferedRate, Peak};
pub use matrix::{
    Axis, MatrixPlan, PointShape, CONV_CONNS, CONV_MATCHED, CONV_MATCHED_FRACTIONS, CONV_MSGS, CONV_TRANSPORTS,
    FULL_CONNS, FULL_LARGE, FULL_TRANSPORTS, MATCHED_CONNS, MATCHED_FRACTIONS, QUICK_CONNS, QUICK_MATCHED_CONNS,
    QUICK_MATCHED_FRACTIONS, QUICK_TRANSPORTS, SMALL_BYTES,
};
pub use peers::{Peer, PeerEntry, ServerKnob, SERVER_KNOBS};
pub use spec::{datagram_timeout, fmt_ms, Purpose, RunSpec, Timing};

/// loadgen's `--connect-rate`: fast enough that 10,000 connects take 0.5 s,
/// slow enough not to overflow a listen backlog.
pub const CONNECT_RATE: u64 = 20_000;

/// What one run costs besides warm-up, measured phase and connecting:
/// starting the server, its `listening` line, loadgen's start and exit,
/// stopping the server (measured from `--quick` runs' `wall_s` on the
/// project's 2-core machine). Used only for the time estimate.
pub const RUN_OVERHEAD: Duration = Duration::from_millis(400);

/// What the user asked for, in the plan's terms (`cli` builds it from the
/// flags); `None` takes the default of the full or the `--quick` matrix.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub quick: bool,
    pub peers: Option<Vec<PeerEntry>>,
    pub reference: Option<String>,
    pub transports: Option<Vec<Transport>>,
    pub conns: Option<Vec<u64>>,
    /// Which workloads; `None`: the messages axis, or with `conn_msgs` the conversations axis.
    pub axis: Option<Axis>,
    /// Messages per connection of the conversation axis; `None`: [`CONV_MSGS`].
    pub conn_msgs: Option<Vec<u64>>,
    pub duration: Option<Duration>,
    pub warmup: Option<Duration>,
    pub repetitions: Option<u32>,
    pub server_cpus: Option<CpuList>,
    pub loadgen_cpus: Option<CpuList>,
    /// Count the server's system calls in each run with perf (it slows every call).
    pub count_syscalls: bool,
}

/// Default run lengths and repetitions: full matrix and `--quick`.
///
/// Five repetitions: the order-statistic interval of a median from n = 5
/// runs is `[min, max]` at 93.75%, and n = 6, 7, 8 give `[min, max]` again
/// (only wider, at a higher level), so they add cost and no resolution; the
/// next step is n = 9 (see `analyse::stats`). Runs are short (0.5 s warm-up,
/// 1.5 s measured) so that 5 peers × 5 repetitions of the matrix and the
/// matched-load sweep fit in about 40 minutes on 2 cores.
const DURATION: Duration = Duration::from_millis(1500);
const WARMUP: Duration = Duration::from_millis(500);
pub const REPETITIONS: u32 = 5;
const QUICK_DURATION: Duration = Duration::from_millis(700);
const QUICK_WARMUP: Duration = Duration::from_millis(300);
pub const QUICK_REPETITIONS: u32 = 2;
/// How long the machine's own pauses are measured before the runs.
const STALL_CHECK: Duration = Duration::from_secs(10);
const QUICK_STALL_CHECK: Duration = Duration::from_secs(2);
/// The reference peer of the ratios, unless `--reference` says otherwise.
pub const DEFAULT_REFERENCE: &str = "epoll";

/// The whole comparison, planned from the command line.
#[derive(Clone, Debug)]
pub struct Comparison {
    pub quick: bool,
    pub matrix: MatrixPlan,
    pub timing: Timing,
    /// Times the whole matrix runs, one repetition after another.
    pub repetitions: u32,
    /// The label every ratio is taken against.
    pub reference: String,
    pub split: CpuSplit,
    /// How long the machine's own pauses are measured first.
    pub stall_check: Duration,
    /// `--count-syscalls`: perf counts the server's system calls in every run.
    pub count_syscalls: bool,
}

/// What the user asked for that cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("--peers: the label {0:?} appears twice; enter a second copy as PEER@NAME")]
    DuplicateLabel(String),
    #[error("--reference {0:?} is not among the peers' labels ({1})")]
    UnknownReference(String, String),
    #[error(
        "--peers {0}: spin= is implemented by the epoll backend over tcp and unix only; drop udp from --transports"
    )]
    SpinOverDatagrams(String),
    #[error("--conns 0: a run needs at least one connection")]
    NoConnections,
    #[error("--conn-msgs 0: a conversation needs at least one message")]
    NoConnMsgs,
    #[error("--axis conversations: conversations need a stream transport (tcp or unix) in --transports")]
    NoStreamForConversations,
}

impl Comparison {
    /// Plans what `args` asks for; a [`PlanError`] when it cannot be planned.
    pub fn from_request(args: &Request) -> anyhow::Result<Comparison> {
        let split = CpuSplit::choose(args.server_cpus.clone(), args.loadgen_cpus.clone())?;
        let quick = args.quick;
        let pick = |given: Option<Duration>, full, fast| given.unwrap_or(if quick { fast } else { full });
        let mut matrix = MatrixPlan::new(
            quick,
            args.peers.clone(),
            args.transports.clone(),
            split.server.cpus().len() as u64,
        );
        if let Some(conns) = &args.conns {
            if conns.contains(&0) {
                return Err(PlanError::NoConnections.into());
            }
            matrix.only_conns(conns);
        }
        let axis = args.axis.unwrap_or(if args.conn_msgs.is_some() {
            Axis::Conversations
        } else {
            Axis::Messages
        });
        if axis.has_conversations() {
            let msgs = args.conn_msgs.clone().unwrap_or_else(|| CONV_MSGS.to_vec());
            if msgs.contains(&0) {
                return Err(PlanError::NoConnMsgs.into());
            }
            let transports = args.transports.clone().unwrap_or_else(|| CONV_TRANSPORTS.to_vec());
            if !transports.iter().any(|t| t.is_stream()) {
                return Err(PlanError::NoStreamForConversations.into());
            }
            let conns = args.conns.clone().unwrap_or_else(|| CONV_CONNS.to_vec());
            matrix.add_conversations(!axis.has_messages(), &transports, &conns, &msgs);
        }
        let labels: Vec<&str> = matrix.peers.iter().map(|p| p.label.as_str()).collect();
        for (i, l) in labels.iter().enumerate() {
            if labels[..i].contains(l) {
                return Err(PlanError::DuplicateLabel(l.to_string()).into());
            }
        }
        if let Some(p) = matrix.peers.iter().find(|p| p.calibration_spin_ns.is_some()) {
            if matrix.transports.iter().any(|t| !t.is_stream()) {
                return Err(PlanError::SpinOverDatagrams(p.label.clone()).into());
            }
        }
        let reference = match &args.reference {
            Some(r) if labels.contains(&r.as_str()) => r.clone(),
            Some(r) => return Err(PlanError::UnknownReference(r.clone(), labels.join(", ")).into()),
            None if labels.contains(&DEFAULT_REFERENCE) => DEFAULT_REFERENCE.into(),
            None => labels[0].to_string(),
        };
        Ok(Comparison {
            quick,
            matrix,
            timing: Timing {
                duration: pick(args.duration, DURATION, QUICK_DURATION),
                warmup: pick(args.warmup, WARMUP, QUICK_WARMUP),
                connect_rate: CONNECT_RATE,
            },
            repetitions: args
                .repetitions
                .unwrap_or(if quick { QUICK_REPETITIONS } else { REPETITIONS })
                .max(1),
            reference,
            stall_check: if quick { QUICK_STALL_CHECK } else { STALL_CHECK },
            split,
            count_syscalls: args.count_syscalls,
        })
    }

    /// The peers in the order they run in repetition `rep` (1-based): the
    /// list rotated by `rep - 1`, so that over the repetitions each peer
    /// runs in each position and drift of the machine falls on all alike.
    pub fn peers_in(&self, rep: u32) -> Vec<&PeerEntry> {
        let n = self.matrix.peers.len();
        let shift = (rep.saturating_sub(1) as usize) % n.max(1);
        (0..n).map(|i| &self.matrix.peers[(i + shift) % n]).collect()
    }

    /// The closed-loop runs of repetition `rep` (1-based), in running
    /// order: point after point, the peers of one point next to each other
    /// in the rotated order.
    pub fn closed_loop(&self, rep: u32) -> Vec<RunSpec> {
        let mut runs = Vec::new();
        for &shape in &self.matrix.points {
            for peer in self.peers_in(rep) {
                runs.push(RunSpec {
                    repetition: self.repetition_label(rep),
                    ..self.matrix.spec(peer, shape, Purpose::Peak, None)
                });
            }
        }
        runs
    }

    /// The matched-load runs of repetition `rep` at the offered rates in
    /// `rates`: point after point, fraction after fraction, the peers in the
    /// rotated order. Points without a rate (no peer had a successful
    /// closed-loop run there) are left out.
    pub fn matched_load(&self, rep: u32, rates: &[MatchedRates]) -> Vec<RunSpec> {
        let mut runs = Vec::new();
        for point in rates {
            for r in &point.rates {
                for peer in self.peers_in(rep) {
                    let purpose = Purpose::MatchedLoad { fraction: r.fraction };
                    runs.push(RunSpec {
                        repetition: self.repetition_label(rep),
                        ..self.matrix.spec(peer, point.shape, purpose, Some(r.msgs_per_s))
                    });
                }
            }
        }
        runs
    }

    fn repetition_label(&self, rep: u32) -> u32 {
        if self.repetitions > 1 {
            rep
        } else {
            0
        }
    }

    /// Runs per repetition: closed loop, then the matched-load sweep.
    pub fn runs_per_repetition(&self) -> (usize, usize) {
        let peers = self.matrix.peers.len();
        let matched = self.matrix.matched_points.len() * self.matrix.fractions.len() * peers;
        (self.matrix.points.len() * peers, matched)
    }

    /// Every run the comparison will do (matched-load runs included, as
    /// planned before any is known to be impossible).
    pub fn total_runs(&self) -> usize {
        let (closed, matched) = self.runs_per_repetition();
        (closed + matched) * self.repetitions as usize
    }

    /// The expected wall time: the stall check, then per run warm-up,
    /// measured phase, connecting at the connect rate and [`RUN_OVERHEAD`].
    pub fn estimated_duration(&self) -> Duration {
        let t = &self.timing;
        let run = |conns: u64| {
            t.warmup + t.duration + RUN_OVERHEAD + Duration::from_secs_f64(conns as f64 / t.connect_rate as f64)
        };
        let peers = self.matrix.peers.len() as u32;
        let closed: Duration = self.matrix.points.iter().map(|p| run(p.conns) * peers).sum();
        let matched: Duration = self
            .matrix
            .matched_points
            .iter()
            .map(|p| run(p.conns) * peers * self.matrix.fractions.len() as u32)
            .sum();
        self.stall_check + (closed + matched) * self.repetitions
    }

    /// The scale-down notes of the matrix, once each, and the CPU warning.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        for spec in self.closed_loop(1) {
            let Some(note) = &spec.note else { continue };
            let line = format!("{} over {}: {note}", spec.label, spec.transport);
            if !notes.contains(&line) {
                notes.push(line);
            }
        }
        notes.extend(self.split.warning.clone());
        notes
    }

    /// Descriptors the largest run needs.
    pub fn fds_needed(&self) -> u64 {
        self.matrix.points.iter().map(|s| s.conns).max().unwrap_or(0) + 64
    }
}

#[cfg(test)]
mod tests;
