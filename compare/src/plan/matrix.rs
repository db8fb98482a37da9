//! The matrix: the points every peer runs at (transport, connections,
//! message size), full or `--quick`, and each run's server settings with the
//! scale-downs a machine's caps require.

use serde::{Deserialize, Serialize};
use sockbench::net::Transport;
use sockbench::server::BackendKind;

use super::caps::{per_conn_task_cap, threadpool_cap, Cap, THREAD_HEADROOM};
use super::peers::{Peer, PeerEntry};
use super::spec::{Purpose, RunSpec};

/// Connection counts of the full matrix (128 B over every transport).
pub const FULL_CONNS: [u64; 5] = [1, 10, 100, 1_000, 10_000];
/// The 4 KiB points of the full matrix: this many connections, every transport.
pub const FULL_LARGE: (u64, u64) = (100, 4096);
/// The small message of every matrix.
pub const SMALL_BYTES: u64 = 128;
/// Transports of the full matrix.
pub const FULL_TRANSPORTS: [Transport; 3] = [Transport::Tcp, Transport::Udp, Transport::Unix];
/// Connection counts of the matched-load sweep (128 B, every transport).
pub const MATCHED_CONNS: [u64; 2] = [100, 1_000];
/// The matched-load offered rates, as fractions of the lowest closed-loop
/// peak among the peers at the point.
pub const MATCHED_FRACTIONS: [f64; 3] = [0.25, 0.5, 0.75];

/// Connections of the `--quick` matrix.
pub const QUICK_CONNS: [u64; 2] = [1, 100];
/// Transports of the `--quick` matrix.
pub const QUICK_TRANSPORTS: [Transport; 2] = [Transport::Tcp, Transport::Udp];
/// `--quick`'s matched-load sweep: tcp at 100 connections, at half the lowest peak.
pub const QUICK_MATCHED_CONNS: [u64; 1] = [100];
pub const QUICK_MATCHED_FRACTIONS: [f64; 1] = [0.5];

/// The conversation axis (issue 24): echoes per connection (`loadgen --conn-msgs`).
pub const CONV_MSGS: [u64; 3] = [1, 10, 100];
/// Concurrent conversations of the conversation axis.
pub const CONV_CONNS: [u64; 3] = [1, 100, 1_000];
/// Transports of the conversation axis: conversations need connections.
pub const CONV_TRANSPORTS: [Transport; 2] = [Transport::Tcp, Transport::Unix];
/// The conversation axis's matched-load point: one echo per connection
/// (connect, request, response, close) at 100 concurrent conversations, over
/// each of its transports, at half the lowest peer's closed-loop rate of
/// conversations. With the conversation axis alone these are the sweep's
/// only fractions; with both axes the message axis's fractions apply.
pub const CONV_MATCHED: (u64, u64) = (1, 100);
pub const CONV_MATCHED_FRACTIONS: [f64; 1] = [0.5];

/// Which workloads a comparison runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Axis {
    /// Long-lived connections: messages at every connection count and transport (the classic matrix).
    #[default]
    Messages,
    /// A connection per conversation: messages per connection × concurrent
    /// conversations, over tcp and unix.
    Conversations,
    /// Both.
    All,
}

impl Axis {
    pub fn has_messages(self) -> bool {
        matches!(self, Axis::Messages | Axis::All)
    }

    pub fn has_conversations(self) -> bool {
        matches!(self, Axis::Conversations | Axis::All)
    }
}

/// What the matrix is built from.
#[derive(Clone, Debug)]
pub struct MatrixPlan {
    pub peers: Vec<PeerEntry>,
    pub transports: Vec<Transport>,
    /// The closed-loop points, in running order.
    pub points: Vec<PointShape>,
    /// The points of the matched-load sweep.
    pub matched_points: Vec<PointShape>,
    /// The sweep's offered rates as fractions of the lowest peak.
    pub fractions: Vec<f64>,
    /// Number of server CPUs: epoll and uring run one event loop per CPU.
    pub server_cores: u64,
    /// See [`per_conn_task_cap`].
    pub task_cap: u64,
    /// See [`threadpool_cap`].
    pub thread_cap: u64,
}

impl MatrixPlan {
    /// The full or the quick matrix, narrowed by the `--peers` / `--transports` filters.
    pub fn new(
        quick: bool,
        peers: Option<Vec<PeerEntry>>,
        transports: Option<Vec<Transport>>,
        server_cores: u64,
    ) -> Self {
        let transports = transports.unwrap_or_else(|| {
            if quick {
                QUICK_TRANSPORTS.to_vec()
            } else {
                FULL_TRANSPORTS.to_vec()
            }
        });
        let shape = |transport, conns, size_bytes| PointShape {
            transport,
            conns,
            size_bytes,
            conn_msgs: None,
        };
        let mut points = Vec::new();
        let mut matched_points = Vec::new();
        for &t in &transports {
            let conns: &[u64] = if quick { &QUICK_CONNS } else { &FULL_CONNS };
            points.extend(conns.iter().map(|&c| shape(t, c, SMALL_BYTES)));
            if !quick {
                points.push(shape(t, FULL_LARGE.0, FULL_LARGE.1));
            }
            let matched: &[u64] = if quick { &QUICK_MATCHED_CONNS } else { &MATCHED_CONNS };
            // --quick sweeps one point only: the first transport.
            if !quick || matched_points.is_empty() {
                matched_points.extend(matched.iter().map(|&c| shape(t, c, SMALL_BYTES)));
            }
        }
        MatrixPlan {
            peers: peers.unwrap_or_else(PeerEntry::defaults),
            transports,
            points,
            matched_points,
            fractions: if quick {
                QUICK_MATCHED_FRACTIONS.to_vec()
            } else {
                MATCHED_FRACTIONS.to_vec()
            },
            server_cores: server_cores.max(1),
            task_cap: per_conn_task_cap(),
            thread_cap: threadpool_cap(),
        }
    }

    /// `--conns`: the closed-loop points at these connection counts, any
    /// count (128 B over every transport, in ascending order), and the
    /// matrix's 4 KiB points where their count is listed; the matched-load
    /// sweep at those of its own counts that are listed.
    pub fn only_conns(&mut self, conns: &[u64]) {
        let mut counts = conns.to_vec();
        counts.sort_unstable();
        counts.dedup();
        let mut points = Vec::new();
        for &transport in &self.transports {
            points.extend(counts.iter().map(|&conns| PointShape {
                transport,
                conns,
                size_bytes: SMALL_BYTES,
                conn_msgs: None,
            }));
            points.extend(
                self.points
                    .iter()
                    .filter(|p| p.transport == transport && p.size_bytes != SMALL_BYTES && counts.contains(&p.conns)),
            );
        }
        self.points = points;
        self.matched_points.retain(|p| counts.contains(&p.conns));
    }

    /// The conversation axis: with `alone`, in place of the message axis
    /// (its points and sweep); else after it. Closed-loop points at every
    /// stream transport of `transports` (datagrams have no connections),
    /// every count of `conns` and every `msgs` per connection (128 B), then
    /// the matched-load points at [`CONV_MATCHED`] where the lists hold it.
    pub fn add_conversations(&mut self, alone: bool, transports: &[Transport], conns: &[u64], msgs: &[u64]) {
        if alone {
            self.points.clear();
            self.matched_points.clear();
            self.fractions = CONV_MATCHED_FRACTIONS.to_vec();
        }
        let sorted = |xs: &[u64]| {
            let mut v = xs.to_vec();
            v.sort_unstable();
            v.dedup();
            v
        };
        let (conns, msgs) = (sorted(conns), sorted(msgs));
        let shape = |transport, conns, n| PointShape {
            transport,
            conns,
            size_bytes: SMALL_BYTES,
            conn_msgs: Some(n),
        };
        for &t in transports.iter().filter(|t| t.is_stream()) {
            for &n in &msgs {
                self.points.extend(conns.iter().map(|&c| shape(t, c, n)));
            }
            let (n, c) = CONV_MATCHED;
            if msgs.contains(&n) && conns.contains(&c) {
                self.matched_points.push(shape(t, c, n));
            }
        }
    }

    /// The closed-loop runs of one repetition in the peers' listed order
    /// (repetition 0: no rotation).
    pub fn closed_loop(&self) -> Vec<RunSpec> {
        let mut runs = Vec::new();
        for &shape in &self.points {
            for peer in &self.peers {
                runs.push(self.spec(peer, shape, Purpose::Peak, None));
            }
        }
        runs
    }

    /// The matched-load run of `peer` at half the lowest peak (`rate`) at the
    /// first matched point: the latency view.
    pub fn latency_view(&self, peer: &PeerEntry, rate: f64) -> RunSpec {
        self.spec(
            peer,
            self.matched_points[0],
            Purpose::MatchedLoad { fraction: 0.5 },
            Some(rate),
        )
    }

    /// Where a peer that needs a process or thread per connection is capped.
    fn cap(&self, peer: Peer, transport: Transport) -> Option<Cap> {
        match peer {
            Peer::Backend(BackendKind::Fork) if transport.is_stream() => Some(Cap {
                conns: self.task_cap,
                why: format!(
                    "fork needs a process per connection (cap = min(pid_max, RLIMIT_NPROC) / 4, at most 4000, here {})",
                    self.task_cap
                ),
            }),
            Peer::Backend(BackendKind::Threadpool) if transport.is_stream() => Some(Cap {
                conns: self.thread_cap,
                why: format!(
                    "threadpool needs a worker thread per connection, and this machine has room for {} more \
                     (min(pid_max, threads-max, RLIMIT_NPROC) less the threads running and {THREAD_HEADROOM} spare)",
                    self.thread_cap
                ),
            }),
            _ => None,
        }
    }

    /// One run of `peer` at `shape`, with the server settings and any scale-down it needs.
    pub fn spec(&self, peer: &PeerEntry, shape: PointShape, purpose: Purpose, rate: Option<f64>) -> RunSpec {
        let requested = shape.conns;
        let mut conns = requested;
        let mut note = None;
        if let Some(cap) = self.cap(peer.peer, shape.transport).filter(|c| requested > c.conns) {
            conns = cap.conns.max(1);
            note = Some(format!(
                "scaled down from {requested} to {conns} connections: {}",
                cap.why
            ));
        }
        let stream = shape.transport.is_stream();
        let (server_threads, server_max_conns) = match peer.peer {
            // Each worker serves one connection until it closes, so the pool
            // must have a worker per connection or the rest never get served.
            Peer::Backend(BackendKind::Threadpool) if stream => (conns, Some(conns.max(16) + 16)),
            Peer::Backend(BackendKind::Fork) if stream => (self.server_cores, Some(conns.max(16) + 16)),
            _ => (self.server_cores, None),
        };
        // Conversations: a closed connection's child or worker may not have
        // gone yet when its client's next connect arrives; room for a second
        // generation keeps the server from refusing it.
        let server_max_conns = match shape.conn_msgs {
            Some(_) => server_max_conns.map(|_| 2 * conns.max(16) + 16),
            None => server_max_conns,
        };
        RunSpec {
            peer: peer.peer,
            label: peer.label.clone(),
            calibration_spin_ns: peer.calibration_spin_ns,
            server_args: peer.server_args.clone(),
            purpose,
            transport: shape.transport,
            conns,
            requested_conns: requested,
            size_bytes: shape.size_bytes,
            rate,
            conn_msgs: shape.conn_msgs,
            server_threads,
            server_max_conns,
            note,
            repetition: 0,
        }
    }
}

/// Transport, connection count and message size of a point.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointShape {
    #[serde(with = "super::spec::transport_name")]
    pub transport: Transport,
    pub conns: u64,
    pub size_bytes: u64,
    /// A conversation point: echoes per connection (`loadgen --conn-msgs`);
    /// `None` for long-lived connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn_msgs: Option<u64>,
}
