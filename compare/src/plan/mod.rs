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
use sockbench::server::BackendKind;

pub use caps::{per_conn_task_cap, threadpool_cap, CpuSplit, THREAD_HEADROOM};
pub use matched::{matched_rates, MatchedRates, OfferedRate, Peak};
pub use matrix::{
    Axis, MatrixPlan, PointShape, CONV_CONNS, CONV_MATCHED, CONV_MATCHED_FRACTIONS, CONV_MSGS, CONV_TRANSPORTS,
    FULL_CONNS, FULL_LARGE, FULL_LARGE_TRANSPORTS, FULL_TRANSPORTS, MATCHED_CONNS, MATCHED_FRACTIONS, QUICK_CONNS,
    QUICK_MATCHED_CONNS, QUICK_MATCHED_FRACTIONS, QUICK_TRANSPORTS, SMALL_BYTES,
};
pub use peers::{Peer, PeerEntry, ServerKnob, SERVER_KNOBS};
pub use spec::{datagram_timeout, fmt_ms, Purpose, RunSpec, Timing};

/// loadgen's `--connect-rate`: fast enough that 10,000 connects take 0.5 s,
/// slow enough not to overflow a listen backlog.
pub const CONNECT_RATE: u64 = 20_000;

/// What one run costs besides warm-up, measured phase and connecting:
/// starting the server, its `listening` line, loadgen's start and exit,
/// stopping the server. Fitted, with [`HELD_CONN_COST`], to the `wall_s` of
/// the committed runs on the project's 2-core machine: the message axis's
/// 900 runs (35.2 min measured, 36.0 estimated) and the conversation axis's
/// 500 (17.3 min measured, 17.8 estimated). Used for the time estimate and
/// as the adaptive rounds' fallback before a point has a run of its own.
pub const RUN_OVERHEAD: Duration = Duration::from_millis(120);

/// What held stream connections add to a run beyond connecting them: the
/// server's and loadgen's setup and teardown of each (a thread or a process
/// per connection for threadpool and fork), which grows about as the square
/// root of the count in the committed runs: 14 ms × √conns (0.44 s at 1,000,
/// 1.4 s at 10,000). Conversation runs hold no connection across the window,
/// and datagram runs none at all.
pub const HELD_CONN_COST: Duration = Duration::from_millis(14);

/// The wall-clock budget of the default full run (`--budget`): its base
/// rounds and the adaptive rounds after them end within it
/// (issues 24 and 27: 45 minutes on this machine).
pub const FULL_BUDGET: Duration = Duration::from_secs(45 * 60);

/// What the user asked for, in the plan's terms (`cli` builds it from the
/// flags); `None` takes the default of the full or the `--quick` matrix.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub quick: bool,
    pub peers: Option<Vec<PeerEntry>>,
    pub reference: Option<String>,
    pub transports: Option<Vec<Transport>>,
    pub conns: Option<Vec<u64>>,
    /// Which workloads; `None`: both axes for the full run, the messages
    /// axis with `quick`, or with `conn_msgs` the conversations axis.
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
    /// `--budget`: the wall-clock budget of the whole comparison; `None`
    /// takes [`FULL_BUDGET`] for the full run and no budget with `quick`.
    pub budget: Option<Duration>,
}

/// Default run lengths and repetitions: full matrix and `--quick`.
///
/// Five repetitions: the order-statistic interval of a median from n = 5
/// runs is `[min, max]` at 93.75%, and n = 6, 7, 8 give `[min, max]` again
/// (only wider, at a higher level), so they add cost and no resolution; the
/// next step is n = 9 (see `analyse::stats`). Runs are short (0.5 s warm-up,
/// 1.5 s measured).
///
/// The default full run (issues 24 and 27) is both axes: 5 peers × 5
/// repetitions of 31 closed-loop points (13 of the message axis, 18 of the
/// conversation axis) and 5 matched-load points (3 and 2), 900 runs
/// estimated at 34.6 minutes ([`Comparison::estimated_duration`]; the same
/// model put the two committed runs 2 to 3% above what they took), then adaptive
/// rounds at the points still undecided within the [`FULL_BUDGET`] of 45
/// minutes: about 10 minutes, some 55 rounds of one point's 5 peers. To
/// leave those minutes, the message axis was trimmed from 18 closed-loop
/// points and 18 matched-load runs per peer and repetition to 13 and 3: the
/// 10-connection points, the 4 KiB points over udp and unix, the
/// matched-load sweep at 1,000 connections and its 25% and 75% rates (see
/// [`matrix`]'s constants and docs/compare.md, "How long it takes").
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
    /// The wall-clock budget of the whole comparison: adaptive rounds that
    /// would not end within it are not run. `None`: no budget.
    pub budget: Option<Duration>,
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
        matrix.loadgen_cores = split.loadgen.cpus().len().max(1) as u64;
        if let Some(conns) = &args.conns {
            if conns.contains(&0) {
                return Err(PlanError::NoConnections.into());
            }
            matrix.only_conns(conns);
        }
        let axis = args.axis.unwrap_or(if args.conn_msgs.is_some() {
            Axis::Conversations
        } else if quick {
            Axis::Messages
        } else {
            Axis::All
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
            budget: args.budget.or((!quick).then_some(FULL_BUDGET)),
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

    /// The expected wall time of the planned rounds (adaptive rounds come
    /// on top, within [`Comparison::budget`]): the stall check, then
    /// [`Comparison::estimated_run`] for every run.
    pub fn estimated_duration(&self) -> Duration {
        let peers = self.matrix.peers.len() as u32;
        let closed: Duration = self.matrix.points.iter().map(|&p| self.estimated_run(p) * peers).sum();
        let matched: Duration = self
            .matrix
            .matched_points
            .iter()
            .map(|&p| self.estimated_run(p) * peers * self.matrix.fractions.len() as u32)
            .sum();
        self.stall_check + (closed + matched) * self.repetitions
    }

    /// The expected wall time of one run at `shape`: warm-up, measured
    /// phase, [`RUN_OVERHEAD`], connecting at the connect rate and, for
    /// connections held through the run over a stream transport,
    /// [`HELD_CONN_COST`] × √conns.
    pub fn estimated_run(&self, shape: PointShape) -> Duration {
        let t = &self.timing;
        let conns = shape.conns as f64;
        let held = if shape.transport.is_stream() && shape.conn_msgs.is_none() {
            HELD_CONN_COST.mul_f64(conns.sqrt())
        } else {
            Duration::ZERO
        };
        t.warmup + t.duration + RUN_OVERHEAD + Duration::from_secs_f64(conns / t.connect_rate as f64) + held
    }

    /// Which adaptive rounds come first (lower first; see `execute`): the
    /// rounds go where they decide most per minute. 0: matched-load points
    /// of the message axis (per-run noise about 5%: most decide within 12
    /// repetitions); 1: matched-load points of the conversation axis; 2:
    /// closed-loop conversation points with one message per connection (the
    /// Fig. 30.1 table); 3: every other closed-loop point (noise about 9%
    /// to 15%, where a 10% band is rarely decided within the cap).
    pub fn adaptive_tier(shape: PointShape, purpose: Purpose) -> u8 {
        match (purpose, shape.conn_msgs) {
            (Purpose::MatchedLoad { .. }, None) => 0,
            (Purpose::MatchedLoad { .. }, Some(_)) => 1,
            (_, Some(1)) => 2,
            _ => 3,
        }
    }

    /// The runs of repetition `rep` at one point: every peer, in the order
    /// of [`Comparison::peers_in`], closed loop (`rate` `None`) or at the
    /// offered rate.
    pub fn point_round(&self, shape: PointShape, purpose: Purpose, rate: Option<f64>, rep: u32) -> Vec<RunSpec> {
        self.peers_in(rep)
            .into_iter()
            .map(|peer| RunSpec {
                repetition: self.repetition_label(rep),
                ..self.matrix.spec(peer, shape, purpose, rate)
            })
            .collect()
    }

    /// The scale-down notes of the matrix, once each; where the server or
    /// loadgen gets more threads than its CPUs for the descriptor tables
    /// its connections need; and the CPU warning.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        let mut push = |line: String| {
            if !notes.contains(&line) {
                notes.push(line);
            }
        };
        let cores = self.matrix.server_cores;
        for spec in self.closed_loop(1) {
            if let Some(note) = &spec.note {
                push(format!("{} over {}: {note}", spec.label, spec.transport));
            }
            let event_loops = matches!(spec.peer, Peer::Backend(BackendKind::Epoll | BackendKind::Uring));
            if event_loops && spec.server_threads > cores {
                push(format!(
                    "{} over {} at {} connections: --threads {} on {cores} CPU(s), for the descriptor tables that \
                     many connections need (a table holds at most the hard RLIMIT_NOFILE, {}; issue 25)",
                    spec.label, spec.transport, spec.conns, spec.server_threads, self.matrix.fd_limit
                ));
            }
            if let Some(t) = spec.loadgen_threads {
                push(format!(
                    "loadgen over {} at {} connections: --threads {t} on {} CPU(s), a descriptor table each",
                    spec.transport,
                    spec.conns,
                    self.split.loadgen.cpus().len()
                ));
            }
        }
        notes.extend(self.split.warning.clone());
        notes
    }

    /// Descriptors the largest run needs in one table, on either side.
    pub fn fds_needed(&self) -> u64 {
        self.closed_loop(1)
            .iter()
            .map(|s| {
                let lg = s.conns.div_ceil(s.loadgen_threads.unwrap_or(1)) + caps::LOADGEN_FD_RESERVE;
                let sv = match s.peer {
                    Peer::Backend(BackendKind::Epoll | BackendKind::Uring) => {
                        s.conns.div_ceil(s.server_threads.max(1)) + 64
                    }
                    _ => s.conns + 64,
                };
                lg.max(sv)
            })
            .max()
            .unwrap_or(64)
    }
}

#[cfg(test)]
mod tests;
