//! The matrix: the points every peer runs at (transport, connections,
//! message size), full or `--quick`, and each run's server settings with the
//! scale-downs a machine's caps require.

use serde::{Deserialize, Serialize};
use sockbench::net::Transport;
use sockbench::server::BackendKind;

use super::caps::{
    fd_table_limit, per_conn_task_cap, server_fd_reserve, tables_for, threadpool_cap, Cap, LOADGEN_FD_RESERVE,
    MAX_FIXED_FILES, THREAD_HEADROOM,
};
use super::peers::{Peer, PeerEntry};
use super::spec::{Purpose, RunSpec};

/// Connection counts of the full matrix (128 B over every transport).
///
/// The full run holds both axes and its adaptive rounds in 45 minutes
/// (issues 24 and 27), so the message axis was trimmed (see
/// [`super::Comparison::estimated_duration`] and docs/compare.md, "How long
/// it takes"): the 10-connection point went. What is left keeps one
/// connection (no batching at all), 100 and 1,000 (where the event loops
/// batch) and 10,000 (scale); the message-axis run committed before the
/// trim (`results/` as of commit 62d7e6b) holds the 10-connection figures.
pub const FULL_CONNS: [u64; 4] = [1, 100, 1_000, 10_000];
/// The 4 KiB point of the full matrix: this many connections, over
/// [`FULL_LARGE_TRANSPORTS`] only (the udp and unix 4 KiB points went with
/// the trim: one transport shows what a larger copy costs).
pub const FULL_LARGE: (u64, u64) = (100, 4096);
pub const FULL_LARGE_TRANSPORTS: [Transport; 1] = [Transport::Tcp];
/// The small message of every matrix.
pub const SMALL_BYTES: u64 = 128;
/// Transports of the full matrix.
pub const FULL_TRANSPORTS: [Transport; 3] = [Transport::Tcp, Transport::Udp, Transport::Unix];
/// Connection counts of the matched-load sweep (128 B, every transport).
/// 1,000 connections went with the trim: one matched-load point per
/// transport, at the latency view's count, is what the 45 minutes allow
/// beside the adaptive rounds that decide it.
pub const MATCHED_CONNS: [u64; 1] = [100];
/// The matched-load offered rates, as fractions of the lowest closed-loop
/// peak among the peers at the point: one, half the lowest peak (the
/// latency view's rate). 25% and 75% went with the trim: the full run
/// spends their time on the adaptive rounds that decide 50%'s verdicts;
/// `--quick` has always swept 50% alone, and a sweep over load is a
/// separate run's question.
pub const MATCHED_FRACTIONS: [f64; 1] = [0.5];

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
    /// See [`fd_table_limit`]: the descriptors one table holds.
    pub fd_limit: u64,
    /// Number of loadgen CPUs: loadgen runs a thread per CPU unless its
    /// connections need more descriptor tables.
    pub loadgen_cores: u64,
}

/// The server's `--max-conns` unless told (`default_max_conns` in
/// `src/serve/config.rs`, for every backend but fork).
pub const SERVER_DEFAULT_MAX_CONNS: u64 = 16_384;

/// Connections one source address should carry at most: under half its
/// ports (14,116 of the default 28,232), past which each connect walks the
/// taken half of the port space (docs/scaling.md, "loadgen at 100,000").
/// Past [`ONE_SOURCE_ADDR`] connections loadgen gets `--local-addrs` with
/// this many per address, and at least 8 addresses from 50,000 on.
pub const CONNS_PER_SOURCE_ADDR: u64 = 12_500;
pub const ONE_SOURCE_ADDR: u64 = 14_000;

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
            if !quick && FULL_LARGE_TRANSPORTS.contains(&t) {
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
            fd_limit: fd_table_limit(),
            loadgen_cores: 1,
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

    /// Where a peer that needs a process or thread per connection, or keeps
    /// every connection in one descriptor table, is capped.
    fn cap(&self, peer: &PeerEntry, transport: Transport) -> Option<Cap> {
        if !transport.is_stream() {
            return None;
        }
        let one_table = |reserve: u64| self.fd_limit.saturating_sub(reserve);
        let table_why = |who: &str, reserve: u64| {
            format!(
                "{who} keeps every connection in one descriptor table, which holds {} here (the hard \
                 RLIMIT_NOFILE, {}, less {reserve} kept back)",
                one_table(reserve),
                self.fd_limit
            )
        };
        match peer.peer {
            Peer::Backend(BackendKind::Fork) => Some(Cap {
                conns: self.task_cap,
                why: format!(
                    "fork needs a process per connection (cap = min(pid_max, RLIMIT_NPROC) / 4, at most 4000, here {})",
                    self.task_cap
                ),
            }),
            Peer::Backend(BackendKind::Threadpool) if one_table(64) < self.thread_cap => Some(Cap {
                conns: one_table(64),
                why: table_why("threadpool", 64),
            }),
            Peer::Backend(BackendKind::Threadpool) => Some(Cap {
                conns: self.thread_cap,
                why: format!(
                    "threadpool needs a worker thread per connection, and this machine has room for {} more \
                     (min(pid_max, threads-max, RLIMIT_NPROC) less the threads running and {THREAD_HEADROOM} spare)",
                    self.thread_cap
                ),
            }),
            Peer::Backend(BackendKind::Uring) if !fixed_files(peer) => {
                let reserve = server_fd_reserve(true, self.server_cores);
                Some(Cap {
                    conns: one_table(reserve),
                    why: table_why("uring with --uring-fixed-files off", reserve),
                })
            }
            Peer::Tokio => Some(Cap {
                conns: one_table(64),
                why: table_why("tokio-echo", 64),
            }),
            _ => None,
        }
    }

    /// One run of `peer` at `shape`, with the server settings and any scale-down it needs.
    pub fn spec(&self, peer: &PeerEntry, shape: PointShape, purpose: Purpose, rate: Option<f64>) -> RunSpec {
        let requested = shape.conns;
        let mut conns = requested;
        let mut note = None;
        if let Some(cap) = self.cap(peer, shape.transport).filter(|c| requested > c.conns) {
            conns = cap.conns.max(1);
            note = Some(format!(
                "scaled down from {requested} to {conns} connections: {}",
                cap.why
            ));
        }
        let stream = shape.transport.is_stream();
        // Past the server's default --max-conns, room for every connection
        // and 16 more; the descriptor tables below hold that many.
        let wanted = conns + 16;
        let big = (wanted > SERVER_DEFAULT_MAX_CONNS).then_some(wanted);
        let cores = self.server_cores;
        let (server_threads, server_max_conns) = match peer.peer {
            // Each worker serves one connection until it closes, so the pool
            // must have a worker per connection or the rest never get served.
            Peer::Backend(BackendKind::Threadpool) if stream => (conns, Some(conns.max(16) + 16)),
            Peer::Backend(BackendKind::Fork) if stream => (cores, Some(conns.max(16) + 16)),
            // Issue 25: each event loop has a descriptor table of its own, and
            // each ring a fixed file table as large as the descriptor limit,
            // so past one table's worth the server gets more of them (more
            // threads than cores: the server's CPUs are shared by them).
            Peer::Backend(BackendKind::Epoll) if stream => (
                tables_for(conns, 16, cores, |t| {
                    self.fd_limit.saturating_sub(server_fd_reserve(true, t))
                }),
                big,
            ),
            Peer::Backend(BackendKind::Uring) if stream && fixed_files(peer) => (
                tables_for(conns, 16, cores, |_| self.fd_limit.min(MAX_FIXED_FILES)),
                big,
            ),
            _ => (cores, None),
        };
        // loadgen: a descriptor table per thread once the connections do not
        // fit one; source addresses past what one holds well; and at a scale
        // where a closed-loop round trip nears loadgen's 1 s default, a longer
        // --timeout (about 0.85 s per round trip at 100,000 connections on
        // one server core: 50 µs per connection gives 5 s there).
        let lg_threads = tables_for(conns, 0, self.loadgen_cores, |_| {
            self.fd_limit.saturating_sub(LOADGEN_FD_RESERVE)
        });
        let loadgen_threads = (lg_threads > self.loadgen_cores).then_some(lg_threads);
        let local_addrs = (!shape.transport.is_unix() && conns > ONE_SOURCE_ADDR).then(|| {
            let n = conns.div_ceil(CONNS_PER_SOURCE_ADDR);
            let n = if conns >= 50_000 { n.max(8) } else { n.max(2) }.min(254);
            format!("127.0.0.1-127.0.0.{n}")
        });
        let timeout_ms = (stream && conns > 20_000).then(|| (conns / 20).min(30_000));
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
            loadgen_threads,
            local_addrs,
            timeout_ms,
            note,
            repetition: 0,
        }
    }
}

/// Whether a uring peer keeps its connections in fixed file tables (the
/// server's default; `uring-fixed-files=off` turns it off).
fn fixed_files(peer: &PeerEntry) -> bool {
    !peer
        .server_args
        .windows(2)
        .any(|w| w[0] == "--uring-fixed-files" && w[1] == "off")
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
