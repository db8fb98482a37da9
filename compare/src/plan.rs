//! Stage 1, plan: which runs a comparison does, with which server and
//! loadgen command lines, and where a backend is scaled down because it
//! cannot hold the requested number of connections on this machine.
//!
//! Everything here is typed ([`Peer`], [`Transport`]) and pure, except the
//! few `/proc` and `getrlimit` reads that size the scale-downs. Nothing here
//! starts a process.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sockbench::cpu::CpuList;
use sockbench::net::Transport;
use sockbench::server::BackendKind;

use crate::cli::CompareArgs;

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

/// loadgen's `--connect-rate`: fast enough that 10,000 connects take 0.5 s,
/// slow enough not to overflow a listen backlog.
pub const CONNECT_RATE: u64 = 20_000;

/// The most worker threads the server's `--threads` accepts: threadpool,
/// which needs a worker per stream connection, is scaled down to this.
pub const SERVER_MAX_THREADS: u64 = 1024;

/// The server a run measures: one of the project's backends, or a
/// reference implementation run beside them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// `server --backend KIND`.
    Backend(BackendKind),
    /// `tokio-echo`, the tokio reference server (same flags as `server`,
    /// less `--backend` and `--max-conns`).
    Tokio,
}

impl Peer {
    /// The name used in file names, tables and plots.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Backend(kind) => kind.name(),
            Peer::Tokio => "tokio",
        }
    }

    /// The executable that serves this peer.
    pub fn executable(self) -> &'static str {
        match self {
            Peer::Backend(_) => "server",
            Peer::Tokio => "tokio-echo",
        }
    }

    /// Every peer in the order tables and plots list them: the backends in
    /// [`BackendKind::ALL`]'s order, then the reference peers.
    pub fn all() -> impl Iterator<Item = Peer> {
        BackendKind::ALL.into_iter().map(Peer::Backend).chain([Peer::Tokio])
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Peer {
    type Err = String;
    fn from_str(s: &str) -> Result<Peer, String> {
        Peer::all()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown peer {s:?}"))
    }
}

impl Serialize for Peer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Peer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Peer, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// `Transport` as its name in JSON (sockbench has no serde on its enums).
mod transport_name {
    use super::*;
    use clap::ValueEnum;

    pub fn serialize<S: Serializer>(t: &Transport, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(t.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Transport, D::Error> {
        let name = String::deserialize(d)?;
        Transport::from_str(&name, false).map_err(serde::de::Error::custom)
    }
}

/// One run: a server configuration and a loadgen configuration.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunSpec {
    /// The server measured (`backend` in manifests before the peer existed).
    #[serde(alias = "backend")]
    pub peer: Peer,
    #[serde(with = "transport_name")]
    pub transport: Transport,
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
    /// Which repetition of the point this is (1, 2, ...), or 0 when each
    /// point runs once (`round` in older manifests).
    #[serde(default, alias = "round")]
    pub repetition: u32,
}

impl RunSpec {
    /// A short name, also the result file's stem: the point, then its repetition.
    pub fn name(&self) -> String {
        match self.repetition {
            0 => self.point(),
            r => format!("{}-r{r}", self.point()),
        }
    }

    /// The point of the matrix this run measures, the same for every repetition.
    pub fn point(&self) -> String {
        let kind = if self.rate.is_some() { "open" } else { "closed" };
        format!(
            "{kind}-{}-{}-c{}-s{}",
            self.peer,
            self.transport.name(),
            self.conns,
            self.size_bytes
        )
    }

    pub fn is_open_loop(&self) -> bool {
        self.rate.is_some()
    }

    /// The server's argv: `listen` is `--path P` for Unix transports, else
    /// `--addr 127.0.0.1:0` (the port comes from the `listening` line).
    pub fn server_argv(&self, server: &Path, unix_path: &Path, server_cpus: &CpuList) -> Vec<String> {
        let mut argv = vec![server.display().to_string()];
        if let Peer::Backend(kind) = self.peer {
            argv.extend(["--backend".into(), kind.name().into()]);
        }
        argv.extend(["--transport".into(), self.transport.name().into()]);
        if self.transport.is_unix() {
            argv.extend(["--path".into(), unix_path.display().to_string()]);
        } else {
            argv.extend(["--addr".into(), "127.0.0.1:0".into()]);
        }
        argv.extend([
            "--threads".into(),
            self.server_threads.to_string(),
            "--pin".into(),
            server_cpus.to_string(),
        ]);
        if let (Some(m), Peer::Backend(_)) = (self.server_max_conns, self.peer) {
            argv.extend(["--max-conns".into(), m.to_string()]);
        }
        argv
    }

    /// loadgen's argv against `target` (`HOST:PORT` or a socket path),
    /// writing its result to `out_file`.
    pub fn loadgen_argv(
        &self,
        loadgen: &Path,
        target: &str,
        timing: &Timing,
        cpus: &CpuList,
        out_file: &str,
    ) -> Vec<String> {
        let mut argv = vec![
            loadgen.display().to_string(),
            "--transport".into(),
            self.transport.name().into(),
            if self.transport.is_unix() { "--path" } else { "--addr" }.into(),
            target.into(),
            "--conns".into(),
            self.conns.to_string(),
            "--duration".into(),
            fmt_ms(timing.duration),
            "--warmup".into(),
            fmt_ms(timing.warmup),
            "--size".into(),
            self.size_bytes.to_string(),
            "--threads".into(),
            cpus.cpus().len().to_string(),
            "--pin".into(),
            cpus.to_string(),
            "--connect-rate".into(),
            timing.connect_rate.to_string(),
            "--label".into(),
            self.peer.name().into(),
            "--backend".into(),
            self.peer.name().into(),
        ];
        if let Some(rate) = self.rate {
            argv.extend(["--rate".into(), format!("{rate}")]);
        }
        argv.extend(["--out".into(), out_file.into()]);
        argv
    }
}

/// `1500ms`: the form in which durations are passed on.
pub fn fmt_ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// The length of every run and how fast loadgen connects.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    pub duration: Duration,
    pub warmup: Duration,
    pub connect_rate: u64,
}

/// Default durations and repetitions: full matrix and `--quick`. The full
/// matrix runs every point three times, in rounds, and reports the median
/// run: on a shared machine one run of a point can be 25% off another
/// minutes later.
const DURATION: Duration = Duration::from_secs(5);
const WARMUP: Duration = Duration::from_secs(1);
const ROUNDS: u32 = 3;
const QUICK_DURATION: Duration = Duration::from_secs(2);
const QUICK_WARMUP: Duration = Duration::from_millis(500);
const QUICK_ROUNDS: u32 = 1;
/// How long the machine's own pauses are measured before the runs.
const STALL_CHECK: Duration = Duration::from_secs(10);
const QUICK_STALL_CHECK: Duration = Duration::from_secs(2);

/// The whole comparison, planned from the command line.
#[derive(Clone, Debug)]
pub struct Comparison {
    pub quick: bool,
    pub matrix: MatrixPlan,
    pub timing: Timing,
    /// Times the whole matrix runs, one repetition after another.
    pub repetitions: u32,
    pub split: CpuSplit,
    /// How long the machine's own pauses are measured first.
    pub stall_check: Duration,
}

impl Comparison {
    pub fn from_args(args: &CompareArgs) -> anyhow::Result<Comparison> {
        let split = CpuSplit::choose(args.server_cpus.clone(), args.loadgen_cpus.clone())?;
        let quick = args.quick;
        let pick = |given: Option<Duration>, full, fast| given.unwrap_or(if quick { fast } else { full });
        let peers = args
            .backends
            .as_ref()
            .map(|b| b.iter().copied().map(Peer::Backend).collect());
        Ok(Comparison {
            quick,
            matrix: MatrixPlan::new(quick, peers, args.transports.clone(), split.server.cpus().len() as u64),
            timing: Timing {
                duration: pick(args.duration, DURATION, QUICK_DURATION),
                warmup: pick(args.warmup, WARMUP, QUICK_WARMUP),
                connect_rate: CONNECT_RATE,
            },
            repetitions: args.rounds.unwrap_or(if quick { QUICK_ROUNDS } else { ROUNDS }).max(1),
            stall_check: if quick { QUICK_STALL_CHECK } else { STALL_CHECK },
            split,
        })
    }

    /// The closed-loop runs of repetition `rep` (1-based), in running
    /// order. Repetition numbers appear in the names only when there are several.
    pub fn closed_loop(&self, rep: u32) -> Vec<RunSpec> {
        let repetition = self.repetition_label(rep);
        self.matrix
            .closed_loop()
            .into_iter()
            .map(|spec| RunSpec { repetition, ..spec })
            .collect()
    }

    /// The open-loop run of `peer` at `rate` in repetition `rep`.
    pub fn open_loop(&self, peer: Peer, rate: f64, rep: u32) -> RunSpec {
        RunSpec {
            repetition: self.repetition_label(rep),
            ..self.matrix.open_loop(peer, rate)
        }
    }

    fn repetition_label(&self, rep: u32) -> u32 {
        if self.repetitions > 1 {
            rep
        } else {
            0
        }
    }

    /// Every run the comparison will do.
    pub fn total_runs(&self) -> usize {
        (self.matrix.closed_loop().len() + self.matrix.peers.len()) * self.repetitions as usize
    }

    /// The scale-down notes of the matrix, once each, and the CPU warning.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        for spec in self.matrix.closed_loop() {
            let Some(note) = &spec.note else { continue };
            let line = format!("{} over {}: {note}", spec.peer, spec.transport);
            if !notes.contains(&line) {
                notes.push(line);
            }
        }
        notes.extend(self.split.warning.clone());
        notes
    }

    /// Descriptors the largest run needs.
    pub fn fds_needed(&self) -> u64 {
        self.matrix.closed_loop().iter().map(|s| s.conns).max().unwrap_or(0) + 64
    }
}

/// The CPU split between the two sides.
#[derive(Clone, Debug)]
pub struct CpuSplit {
    pub server: CpuList,
    pub loadgen: CpuList,
    /// Said when both sides share CPUs.
    pub warning: Option<String>,
}

impl CpuSplit {
    /// `--server-cpus` / `--loadgen-cpus`, or the first half of the online
    /// CPUs for the server and the rest for loadgen.
    pub fn choose(server: Option<CpuList>, loadgen: Option<CpuList>) -> anyhow::Result<CpuSplit> {
        let online = core_affinity::get_core_ids()
            .map(|v| v.len())
            .unwrap_or_else(sockbench::cpu::available_cpus)
            .max(1);
        let list = |lo: usize, hi: usize| -> anyhow::Result<CpuList> {
            format!("{lo}-{hi}").parse::<CpuList>().map_err(|e| anyhow::anyhow!(e))
        };
        let half = (online / 2).max(1);
        let server = match server {
            Some(s) => s,
            None => list(0, half - 1)?,
        };
        let loadgen = match loadgen {
            Some(l) => l,
            None if online >= 2 => list(half, online - 1)?,
            None => list(0, 0)?,
        };
        let shared: Vec<usize> = server
            .cpus()
            .iter()
            .copied()
            .filter(|c| loadgen.cpus().contains(c))
            .collect();
        let warning = (!shared.is_empty()).then(|| {
            format!(
                "server and loadgen share CPU(s) {shared:?}: the two sides compete, so figures understate the server"
            )
        });
        Ok(CpuSplit {
            server,
            loadgen,
            warning,
        })
    }

    /// Every CPU of either side, once, in order.
    pub fn all_cpus(&self) -> Vec<usize> {
        let mut all: Vec<usize> = self.server.cpus().iter().chain(self.loadgen.cpus()).copied().collect();
        all.sort_unstable();
        all.dedup();
        all
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

/// A connection cap and why it exists.
struct Cap {
    conns: u64,
    why: String,
}

/// What the matrix is built from.
#[derive(Clone, Debug)]
pub struct MatrixPlan {
    pub peers: Vec<Peer>,
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
    pub fn new(quick: bool, peers: Option<Vec<Peer>>, transports: Option<Vec<Transport>>, server_cores: u64) -> Self {
        let (conns, sizes, default_transports): (&[u64], &[u64], &[Transport]) = if quick {
            (&QUICK_CONNS, &QUICK_SIZES, &QUICK_TRANSPORTS)
        } else {
            (&FULL_CONNS, &FULL_SIZES, &FULL_TRANSPORTS)
        };
        MatrixPlan {
            peers: peers.unwrap_or_else(|| BackendKind::ALL.map(Peer::Backend).to_vec()),
            transports: transports.unwrap_or_else(|| default_transports.to_vec()),
            conns: conns.to_vec(),
            sizes: sizes.to_vec(),
            server_cores: server_cores.max(1),
            task_cap: per_conn_task_cap(),
        }
    }

    /// The closed-loop runs of one repetition, every peer side by side at
    /// each point, so that the runs compared with each other are minutes
    /// apart at most.
    pub fn closed_loop(&self) -> Vec<RunSpec> {
        let mut runs = Vec::new();
        for &transport in &self.transports {
            for &size in &self.sizes {
                for &conns in &self.conns {
                    for &peer in &self.peers {
                        runs.push(self.spec(peer, transport, conns, size, None));
                    }
                }
            }
        }
        runs
    }

    /// The open-loop latency run of one peer at `rate` msgs/s.
    pub fn open_loop(&self, peer: Peer, rate: f64) -> RunSpec {
        let shape = self.open_loop_shape();
        self.spec(peer, shape.transport, shape.conns, shape.size_bytes, Some(rate))
    }

    /// Transport, connections and size of the open-loop runs: tcp (else the
    /// first transport), [`OPEN_LOOP_CONNS`] or the largest count below it,
    /// the first size.
    pub fn open_loop_shape(&self) -> PointShape {
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
        PointShape {
            transport,
            conns,
            size_bytes: self.sizes[0],
        }
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
                conns: self.task_cap.min(SERVER_MAX_THREADS),
                why: format!(
                    "threadpool needs a worker thread per connection, and the server's --threads takes at most \
                     {SERVER_MAX_THREADS} (and at most min(pid_max, RLIMIT_NPROC) / 4)"
                ),
            }),
            _ => None,
        }
    }

    /// One run, with the server settings and any scale-down it needs.
    pub fn spec(&self, peer: Peer, transport: Transport, requested: u64, size: u64, rate: Option<f64>) -> RunSpec {
        let mut conns = requested;
        let mut note = None;
        if let Some(cap) = self.cap(peer, transport).filter(|c| requested > c.conns) {
            conns = cap.conns;
            note = Some(format!(
                "scaled down from {requested} to {conns} connections: {}",
                cap.why
            ));
        }
        let stream = transport.is_stream();
        let (server_threads, server_max_conns) = match peer {
            // Each worker serves one connection until it closes, so the pool
            // must have a worker per connection or the rest never get served.
            Peer::Backend(BackendKind::Threadpool) if stream => (conns, Some(conns.max(16) + 16)),
            Peer::Backend(BackendKind::Fork) if stream => (self.server_cores, Some(conns.max(16) + 16)),
            _ => (self.server_cores, None),
        };
        RunSpec {
            peer,
            transport,
            conns,
            requested_conns: requested,
            size_bytes: size,
            rate,
            server_threads,
            server_max_conns,
            note,
            repetition: 0,
        }
    }
}

/// Transport, connection count and message size of a point.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PointShape {
    pub transport: Transport,
    pub conns: u64,
    pub size_bytes: u64,
}

/// A peer's best closed-loop throughput at the open-loop shape.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Peak {
    pub peer: Peer,
    pub msgs_per_s: f64,
}

/// The offered rate of the open-loop runs and how it was chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenLoopRate {
    pub rate: Option<f64>,
    pub note: String,
}

/// Half of the slowest peer's peak, so that every peer can sustain it and
/// latency is compared on equal terms. `peaks` holds each peer's best
/// closed-loop throughput at `shape` (peers without a successful run left out).
pub fn open_loop_rate(peaks: &[Peak], shape: PointShape) -> OpenLoopRate {
    let Some(slowest) = peaks.iter().min_by(|a, b| a.msgs_per_s.total_cmp(&b.msgs_per_s)) else {
        return OpenLoopRate {
            rate: None,
            note: "no successful closed-loop run, so no open-loop rate".into(),
        };
    };
    let rate = (slowest.msgs_per_s / 2.0).max(1.0).round();
    OpenLoopRate {
        rate: Some(rate),
        note: format!(
            "{rate} msgs/s for every backend: half of the slowest backend's closed-loop throughput \
             ({}, best of its runs: {} msgs/s over {}, {} connections, {} B)",
            slowest.peer,
            slowest.msgs_per_s.round(),
            shape.transport,
            shape.conns,
            shape.size_bytes
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_round_trip_and_old_manifests_read() {
        let plan = MatrixPlan::new(true, None, None, 1);
        let spec = plan.closed_loop()[0].clone();
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<RunSpec>(&json).unwrap(), spec);
        let old = r#"{"backend":"uring","transport":"unix","conns":4000,"requested_conns":10000,"size_bytes":128,
            "rate":null,"server_threads":1,"server_max_conns":null,"note":null,"round":2}"#;
        let old: RunSpec = serde_json::from_str(old).unwrap();
        assert_eq!(old.peer, Peer::Backend(BackendKind::Uring));
        assert_eq!(old.transport, Transport::Unix);
        assert_eq!(old.name(), "closed-uring-unix-c4000-s128-r2");
    }

    #[test]
    fn argv_is_built_from_the_typed_spec() {
        let plan = MatrixPlan::new(true, None, Some(vec![Transport::Unix]), 1);
        let spec = plan.spec(Peer::Backend(BackendKind::Fork), Transport::Unix, 100, 128, None);
        let cpus: CpuList = "0".parse().unwrap();
        let argv = spec.server_argv(Path::new("bin/server"), Path::new("/tmp/s.sock"), &cpus);
        assert_eq!(
            argv.join(" "),
            "bin/server --backend fork --transport unix --path /tmp/s.sock --threads 1 --pin 0 --max-conns 116"
        );
        let tokio = plan.spec(Peer::Tokio, Transport::Tcp, 100, 128, None);
        let argv = tokio.server_argv(Path::new("bin/tokio-echo"), Path::new("unused"), &cpus);
        assert_eq!(
            argv.join(" "),
            "bin/tokio-echo --transport tcp --addr 127.0.0.1:0 --threads 1 --pin 0"
        );
    }

    #[test]
    fn open_loop_rate_is_half_the_slowest_peak() {
        let shape = PointShape {
            transport: Transport::Tcp,
            conns: 100,
            size_bytes: 128,
        };
        let peaks = [
            Peak {
                peer: Peer::Backend(BackendKind::Epoll),
                msgs_per_s: 170_000.0,
            },
            Peak {
                peer: Peer::Backend(BackendKind::Fork),
                msgs_per_s: 107_989.0,
            },
        ];
        let r = open_loop_rate(&peaks, shape);
        assert_eq!(r.rate, Some(53_995.0));
        assert!(r
            .note
            .contains("(fork, best of its runs: 107989 msgs/s over tcp, 100 connections, 128 B)"));
        assert_eq!(open_loop_rate(&[], shape).rate, None);
    }
}
