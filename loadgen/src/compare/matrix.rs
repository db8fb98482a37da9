//! Which runs a comparison does, and where a backend is scaled down because
//! it cannot hold the requested number of connections on this machine.

use serde::{Deserialize, Serialize};
use sockbench::net::Transport;
use sockbench::server::BackendKind;

/// Connection counts of the full matrix.
pub const FULL_CONNS: [u64; 4] = [1, 100, 1_000, 10_000];
/// Message sizes of the full matrix: 128 B and 4 KiB.
pub const FULL_SIZES: [u64; 2] = [128, 4096];
/// Transports of the full matrix.
pub const FULL_TRANSPORTS: [Transport; 3] = [Transport::Tcp, Transport::Udp, Transport::Unix];

/// Connections of the `--quick` matrix.
pub const QUICK_CONNS: [u64; 2] = [1, 100];
/// Message size of the `--quick` matrix.
pub const QUICK_SIZES: [u64; 1] = [128];
/// Transports of the `--quick` matrix.
pub const QUICK_TRANSPORTS: [Transport; 2] = [Transport::Tcp, Transport::Udp];

/// The open-loop latency runs use this many connections (or the largest
/// count in the matrix below it) and the first size of the matrix.
pub const OPEN_LOOP_CONNS: u64 = 100;

/// One run: a server configuration and a loadgen configuration.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunSpec {
    pub backend: String,
    pub transport: String,
    /// Connections loadgen opens (after any scale-down).
    pub conns: u64,
    /// Connections the matrix asked for.
    pub requested_conns: u64,
    pub size_bytes: u64,
    /// Open loop: total messages per second; `None` for closed loop.
    pub rate: Option<f64>,
    /// The server's `--threads`.
    pub server_threads: u64,
    /// The server's `--max-conns`, when the default would not do.
    pub server_max_conns: Option<u64>,
    /// Why the run differs from what the matrix asked for, if it does.
    pub note: Option<String>,
    /// Which repeat of the point this is (1, 2, ...), or 0 when each point runs once.
    #[serde(default)]
    pub round: u32,
}

impl RunSpec {
    /// A short name, also the result file's stem: the point, then its round.
    pub fn name(&self) -> String {
        match self.round {
            0 => self.point(),
            r => format!("{}-r{r}", self.point()),
        }
    }

    /// The point of the matrix this run measures, the same for every round.
    pub fn point(&self) -> String {
        let kind = if self.rate.is_some() { "open" } else { "closed" };
        format!(
            "{kind}-{}-{}-c{}-s{}",
            self.backend, self.transport, self.conns, self.size_bytes
        )
    }

    pub fn is_open_loop(&self) -> bool {
        self.rate.is_some()
    }
}

/// How many stream connections a backend that spends a process or a thread
/// per connection may be given on this machine.
///
/// fork needs one process and threadpool one thread per connection; both
/// draw on the kernel's pid space (`/proc/sys/kernel/pid_max`, 32768 by
/// default, shared with everything else running) and on the per-user process
/// limit. We give them at most a quarter of the smaller of the two, and never
/// more than 4,000: on a small machine the rest of the system (and loadgen's
/// own threads) must still be able to fork, and the fork backend's default
/// `--max-conns` is 4,096.
pub fn per_conn_task_cap() -> u64 {
    let pid_max = read_u64("/proc/sys/kernel/pid_max").unwrap_or(32_768);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let nproc = match sockbench::syscall!(getrlimit(libc::RLIMIT_NPROC, &mut lim)) {
        Ok(_) if lim.rlim_cur != libc::RLIM_INFINITY => lim.rlim_cur,
        _ => u64::MAX,
    };
    (pid_max.min(nproc) / 4).min(4_000)
}

fn read_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The most worker threads the server's `--threads` accepts: threadpool,
/// which needs a worker per stream connection, is scaled down to this.
pub const SERVER_MAX_THREADS: u64 = 1024;

/// What the matrix is built from.
#[derive(Clone, Debug)]
pub struct MatrixPlan {
    pub backends: Vec<BackendKind>,
    pub transports: Vec<Transport>,
    pub conns: Vec<u64>,
    pub sizes: Vec<u64>,
    /// Number of server CPUs: epoll and uring run one event loop per CPU.
    pub server_cores: u64,
    /// See [`per_conn_task_cap`].
    pub task_cap: u64,
}

impl MatrixPlan {
    /// The full or the quick matrix, narrowed by the `--backends` / `--transports` filters.
    pub fn new(
        quick: bool,
        backends: Option<Vec<BackendKind>>,
        transports: Option<Vec<Transport>>,
        server_cores: u64,
    ) -> Self {
        let (conns, sizes, default_transports): (&[u64], &[u64], &[Transport]) = if quick {
            (&QUICK_CONNS, &QUICK_SIZES, &QUICK_TRANSPORTS)
        } else {
            (&FULL_CONNS, &FULL_SIZES, &FULL_TRANSPORTS)
        };
        MatrixPlan {
            backends: backends.unwrap_or_else(|| BackendKind::ALL.to_vec()),
            transports: transports.unwrap_or_else(|| default_transports.to_vec()),
            conns: conns.to_vec(),
            sizes: sizes.to_vec(),
            server_cores: server_cores.max(1),
            task_cap: per_conn_task_cap(),
        }
    }

    /// The closed-loop runs, every backend side by side at each point, so
    /// that the runs compared with each other are minutes apart at most.
    pub fn closed_loop(&self) -> Vec<RunSpec> {
        let mut runs = Vec::new();
        for &transport in &self.transports {
            for &size in &self.sizes {
                for &conns in &self.conns {
                    for &backend in &self.backends {
                        runs.push(self.spec(backend, transport, conns, size, None));
                    }
                }
            }
        }
        runs
    }

    /// The open-loop latency run of one backend at `rate` msgs/s.
    pub fn open_loop(&self, backend: BackendKind, rate: f64) -> RunSpec {
        let transport = if self.transports.contains(&Transport::Tcp) {
            Transport::Tcp
        } else {
            self.transports[0]
        };
        let conns = self
            .conns
            .iter()
            .copied()
            .filter(|&c| c <= OPEN_LOOP_CONNS)
            .max()
            .unwrap_or(1);
        self.spec(backend, transport, conns, self.sizes[0], Some(rate))
    }

    /// One run, with the server settings and any scale-down it needs.
    pub fn spec(
        &self,
        backend: BackendKind,
        transport: Transport,
        requested: u64,
        size: u64,
        rate: Option<f64>,
    ) -> RunSpec {
        let mut conns = requested;
        let mut note = None;
        let cap = match backend {
            BackendKind::Fork if transport.is_stream() => Some((
                self.task_cap,
                format!(
                    "fork needs a process per connection (cap = min(pid_max, RLIMIT_NPROC) / 4, at most 4000, here {})",
                    self.task_cap
                ),
            )),
            BackendKind::Threadpool if transport.is_stream() => {
                let cap = self.task_cap.min(SERVER_MAX_THREADS);
                Some((
                    cap,
                    format!(
                        "threadpool needs a worker thread per connection, and the server's --threads takes at most \
                     {SERVER_MAX_THREADS} (and at most min(pid_max, RLIMIT_NPROC) / 4)"
                    ),
                ))
            }
            _ => None,
        };
        if let Some((cap, why)) = cap {
            if requested > cap {
                conns = cap;
                note = Some(format!("scaled down from {requested} to {conns} connections: {why}"));
            }
        }
        let (server_threads, server_max_conns) = match backend {
            // Each worker serves one connection until it closes, so the pool
            // must have a worker per connection or the rest never get served.
            BackendKind::Threadpool if transport.is_stream() => (conns, Some(conns.max(16) + 16)),
            BackendKind::Fork if transport.is_stream() => (self.server_cores, Some(conns.max(16) + 16)),
            _ => (self.server_cores, None),
        };
        RunSpec {
            backend: backend.name().to_string(),
            transport: transport.name().to_string(),
            conns,
            requested_conns: requested,
            size_bytes: size,
            rate,
            server_threads,
            server_max_conns,
            note,
            round: 0,
        }
    }
}
