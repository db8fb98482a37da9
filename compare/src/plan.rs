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
#[cfg(test)]
use clap::Parser;

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

/// loadgen's `--connect-rate`: fast enough that 10,000 connects take 0.5 s,
/// slow enough not to overflow a listen backlog.
pub const CONNECT_RATE: u64 = 20_000;

/// What one run costs besides warm-up, measured phase and connecting:
/// starting the server, its `listening` line, loadgen's start and exit,
/// stopping the server (measured from `--quick` runs' `wall_s` on the
/// project's 2-core machine). Used only for the time estimate.
pub const RUN_OVERHEAD: Duration = Duration::from_millis(400);

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

/// A peer as entered on the command line: `PEER[@NAME][:KNOB=VALUE]...`.
///
/// `epoll` is labelled `epoll`; `epoll@twin` is the same server under a
/// second label (an A/A test: the method must find no difference);
/// `epoll@slow:spin=600` is epoll with `server --calibration-spin-ns 600`, a
/// known extra cost per echo (the sensitivity test: the method must find it
/// costlier); `uring@onewait:uring-wait=one` is uring with
/// `server --uring-wait one`, one technique switched for an A/B run (see
/// [`SERVER_KNOBS`]). The label is the identity the analysis groups runs by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerEntry {
    pub peer: Peer,
    pub label: String,
    /// `server --calibration-spin-ns`, epoll only.
    pub calibration_spin_ns: Option<u64>,
    /// Extra server flags from [`SERVER_KNOBS`], as argv (`--uring-wait`, `one`).
    pub server_args: Vec<String>,
}

/// What a server knob's value may be.
#[derive(Clone, Copy, Debug)]
enum KnobValues {
    /// A positive integer (the server checks its range).
    Number,
    /// One of these words.
    OneOf(&'static [&'static str]),
}

/// A server flag a peer may set for an A/B run: `NAME=VALUE` becomes
/// `--NAME VALUE` for that peer's server.
#[derive(Clone, Copy, Debug)]
pub struct ServerKnob {
    pub name: &'static str,
    backend: BackendKind,
    values: KnobValues,
}

const ON_OFF: KnobValues = KnobValues::OneOf(&["on", "off"]);

/// The server flags a peer may set (besides `spin=`): the uring backend's
/// techniques, each of which can be switched for an A/B run.
pub const SERVER_KNOBS: &[ServerKnob] = &[
    ServerKnob { name: "buf-count", backend: BackendKind::Uring, values: KnobValues::Number },
    ServerKnob { name: "buf-size", backend: BackendKind::Uring, values: KnobValues::Number },
    ServerKnob { name: "ring-entries", backend: BackendKind::Uring, values: KnobValues::Number },
    ServerKnob { name: "uring-fixed-files", backend: BackendKind::Uring, values: ON_OFF },
    ServerKnob { name: "uring-register-ring", backend: BackendKind::Uring, values: ON_OFF },
    ServerKnob { name: "uring-wait", backend: BackendKind::Uring, values: KnobValues::OneOf(&["quiet", "one"]) },
    ServerKnob { name: "uring-hugepages", backend: BackendKind::Uring, values: ON_OFF },
    ServerKnob { name: "uring-min-wait", backend: BackendKind::Uring, values: KnobValues::Number },
];

impl ServerKnob {
    /// `--NAME VALUE` for `peer`, or why not.
    fn argv(name: &str, value: &str, peer: Peer) -> Result<[String; 2], String> {
        let names = || SERVER_KNOBS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ");
        let knob = SERVER_KNOBS
            .iter()
            .find(|k| k.name == name)
            .ok_or_else(|| format!("unknown knob {name:?}; known: spin, {}", names()))?;
        if peer != Peer::Backend(knob.backend) {
            return Err(format!("{name}= is a {} server flag", knob.backend.name()));
        }
        let ok = match knob.values {
            KnobValues::Number => value.parse::<u32>().is_ok_and(|n| n > 0),
            KnobValues::OneOf(words) => words.contains(&value),
        };
        if !ok {
            let want = match knob.values {
                KnobValues::Number => "a positive integer".to_string(),
                KnobValues::OneOf(words) => words.join(" or "),
            };
            return Err(format!("{name}={value}: expected {want}"));
        }
        Ok([format!("--{name}"), value.to_string()])
    }
}

impl PeerEntry {
    /// The peer under its own name, no calibration.
    pub fn plain(peer: Peer) -> PeerEntry {
        PeerEntry {
            peer,
            label: peer.name().into(),
            calibration_spin_ns: None,
            server_args: Vec::new(),
        }
    }

    /// The default peers: every backend and the tokio reference.
    pub fn defaults() -> Vec<PeerEntry> {
        Peer::all().map(PeerEntry::plain).collect()
    }

    /// Whether this peer is a reference implementation, shown beside the
    /// backends rather than as one of them.
    pub fn is_reference_impl(&self) -> bool {
        self.peer == Peer::Tokio
    }
}

impl std::str::FromStr for PeerEntry {
    type Err = String;
    fn from_str(s: &str) -> Result<PeerEntry, String> {
        let mut parts = s.split(':');
        let head = parts.next().unwrap_or_default();
        let knobs: Vec<&str> = parts.collect();
        let (name, suffix) = match head.split_once('@') {
            Some((n, suf)) => (n, Some(suf)),
            None => (head, None),
        };
        let peer: Peer = name.parse()?;
        if let Some(suf) = suffix {
            let plain = !suf.is_empty() && suf.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !plain {
                return Err(format!("{s:?}: the name after @ must be letters, digits, - or _"));
            }
        }
        let mut calibration_spin_ns = None;
        let mut server_args: Vec<String> = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        for knob in &knobs {
            let (name, value) = knob
                .split_once('=')
                .ok_or_else(|| format!("{s:?}: expected NAME=VALUE after ':', got {knob:?}"))?;
            if seen.contains(&name) {
                return Err(format!("{s:?}: {name}= is given twice"));
            }
            seen.push(name);
            if name == "spin" {
                let ns = value
                    .parse::<u64>()
                    .ok()
                    .filter(|&n| (1..=1_000_000).contains(&n))
                    .ok_or_else(|| format!("{s:?}: expected :spin=NS after the peer, NS from 1 to 1000000"))?;
                if peer != Peer::Backend(BackendKind::Epoll) {
                    return Err(format!("{s:?}: spin= is implemented by the epoll backend only"));
                }
                calibration_spin_ns = Some(ns);
            } else {
                server_args.extend(ServerKnob::argv(name, value, peer).map_err(|e| format!("{s:?}: {e}"))?);
            }
        }
        if !knobs.is_empty() && suffix.is_none() {
            return Err(format!(
                "{s:?}: a peer with knobs needs its own label, e.g. epoll@slow:spin=600 or uring@onewait:uring-wait=one"
            ));
        }
        Ok(PeerEntry {
            peer,
            label: head.to_string(),
            calibration_spin_ns,
            server_args,
        })
    }
}

/// What a run is for.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Purpose {
    /// Closed loop: the pair's saturation throughput.
    Peak,
    /// Open loop at one rate for every peer, for the latency spectrum
    /// (manifests before the matched-load sweep; now the sweep's 50% run at
    /// tcp, 100 connections serves).
    Latency,
    /// Open loop at `fraction` of the lowest closed-loop peak (median over
    /// repetitions) among the peers at this point: the same offered rate for
    /// every peer, for server CPU per message at matched load.
    MatchedLoad { fraction: f64 },
}

impl Purpose {
    /// The prefix of run names: `closed`, `open`, `load50`.
    pub fn prefix(self) -> String {
        match self {
            Purpose::Peak => "closed".into(),
            Purpose::Latency => "open".into(),
            Purpose::MatchedLoad { fraction } => format!("load{}", (fraction * 100.0).round()),
        }
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
#[serde(from = "RunSpecOnDisk")]
pub struct RunSpec {
    /// The server measured.
    pub peer: Peer,
    /// The identity the analysis groups by: the peer's name unless it was
    /// entered under another (`epoll@twin`).
    pub label: String,
    /// `server --calibration-spin-ns`, for the sensitivity check only.
    pub calibration_spin_ns: Option<u64>,
    /// Extra server flags of an A/B variant (`--uring-wait one`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_args: Vec<String>,
    /// What the run is for.
    pub purpose: Purpose,
    #[serde(with = "transport_name")]
    pub transport: Transport,
    /// Connections loadgen opens (after any scale-down).
    pub conns: u64,
    /// Connections the matrix asked for.
    pub requested_conns: u64,
    pub size_bytes: u64,
    /// Open loop: the offered rate, total messages per second; `None` for closed loop.
    pub rate: Option<f64>,
    /// The server's `--threads`.
    pub server_threads: u64,
    /// The server's `--max-conns`, when the default would not do.
    pub server_max_conns: Option<u64>,
    /// Why the run differs from what the matrix asked for, if it does.
    pub note: Option<String>,
    /// Which repetition of the point this is (1, 2, ...), or 0 when each
    /// point runs once (`round` in older manifests).
    pub repetition: u32,
}

/// [`RunSpec`] as manifests hold it, older layouts included: `backend` for
/// `peer`, `round` for `repetition`; without `label` the peer's name, without
/// `purpose` `latency` for an open-loop run and `peak` otherwise.
#[derive(Deserialize)]
struct RunSpecOnDisk {
    #[serde(alias = "backend")]
    peer: Peer,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    calibration_spin_ns: Option<u64>,
    #[serde(default)]
    server_args: Vec<String>,
    #[serde(default)]
    purpose: Option<Purpose>,
    #[serde(with = "transport_name")]
    transport: Transport,
    conns: u64,
    requested_conns: u64,
    size_bytes: u64,
    rate: Option<f64>,
    server_threads: u64,
    server_max_conns: Option<u64>,
    note: Option<String>,
    #[serde(default, alias = "round")]
    repetition: u32,
}

impl From<RunSpecOnDisk> for RunSpec {
    fn from(d: RunSpecOnDisk) -> RunSpec {
        let default_purpose = if d.rate.is_some() {
            Purpose::Latency
        } else {
            Purpose::Peak
        };
        RunSpec {
            label: d.label.unwrap_or_else(|| d.peer.name().into()),
            peer: d.peer,
            calibration_spin_ns: d.calibration_spin_ns,
            server_args: d.server_args,
            purpose: d.purpose.unwrap_or(default_purpose),
            transport: d.transport,
            conns: d.conns,
            requested_conns: d.requested_conns,
            size_bytes: d.size_bytes,
            rate: d.rate,
            server_threads: d.server_threads,
            server_max_conns: d.server_max_conns,
            note: d.note,
            repetition: d.repetition,
        }
    }
}

impl RunSpec {
    /// A short name, also the result file's stem: the point, then its repetition.
    pub fn name(&self) -> String {
        match self.repetition {
            0 => self.point(),
            r => format!("{}-r{r}", self.point()),
        }
    }

    /// The point of the matrix this run measures, the same for every
    /// repetition: purpose, label, transport, connections, size.
    pub fn point(&self) -> String {
        format!(
            "{}-{}-{}-c{}-s{}",
            self.purpose.prefix(),
            self.label,
            self.transport.name(),
            self.conns,
            self.size_bytes
        )
    }

    pub fn is_open_loop(&self) -> bool {
        self.rate.is_some()
    }

    /// Transport, connections asked for, and size: the point without the peer.
    pub fn shape(&self) -> PointShape {
        PointShape {
            transport: self.transport,
            conns: self.requested_conns,
            size_bytes: self.size_bytes,
        }
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
        if let Some(ns) = self.calibration_spin_ns {
            argv.extend(["--calibration-spin-ns".into(), ns.to_string()]);
        }
        argv.extend(self.server_args.iter().cloned());
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
            self.label.clone(),
            "--backend".into(),
            self.peer.name().into(),
        ];
        if let Some(rate) = self.rate {
            argv.extend(["--rate".into(), format!("{rate}")]);
        }
        if !self.transport.is_stream() {
            argv.extend(["--timeout".into(), fmt_ms(datagram_timeout(timing))]);
        }
        argv.extend(["--out".into(), out_file.into()]);
        argv
    }
}

/// loadgen's `--timeout` for datagram runs: a datagram is counted lost only
/// that long after it was sent, so it must be well inside the run (loadgen
/// refuses a run no longer than its timeout), yet far above a loaded
/// round trip (10,000 sockets at 100k msgs/s: about 0.1 s). Half the run,
/// at most loadgen's default of 1 s.
pub fn datagram_timeout(timing: &Timing) -> Duration {
    ((timing.warmup + timing.duration) / 2).min(Duration::from_secs(1))
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
    #[error("--conns {0}: none of these counts is in the matrix")]
    NoPoints(String),
}

impl Comparison {
    pub fn from_args(args: &CompareArgs) -> anyhow::Result<Comparison> {
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
            matrix.points.retain(|p| conns.contains(&p.conns));
            matrix.matched_points.retain(|p| conns.contains(&p.conns));
            if matrix.points.is_empty() {
                return Err(PlanError::NoPoints(format!("{conns:?}")).into());
            }
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

/// How many stream connections fork (a process per connection) may be given
/// on this machine.
///
/// fork's processes draw on the kernel's pid space
/// (`/proc/sys/kernel/pid_max`, 32768 by default, shared with everything else
/// running) and on the per-user process limit. We give it at most a quarter
/// of the smaller of the two, and never more than 4,000: on a small machine
/// the rest of the system (and loadgen's own threads) must still be able to
/// fork, and the fork backend's default `--max-conns` is 4,096.
pub fn per_conn_task_cap() -> u64 {
    let pid_max = read_u64("/proc/sys/kernel/pid_max").unwrap_or(32_768);
    (pid_max.min(nproc_limit()) / 4).min(4_000)
}

/// How many worker threads threadpool (a thread per stream connection) may
/// be given on this machine: what `pid_max`, `threads-max` and
/// `RLIMIT_NPROC` allow, less the threads already running and
/// [`THREAD_HEADROOM`] for loadgen and everything else.
pub fn threadpool_cap() -> u64 {
    let pid_max = read_u64("/proc/sys/kernel/pid_max").unwrap_or(32_768);
    let threads_max = read_u64("/proc/sys/kernel/threads-max").unwrap_or(u64::MAX);
    let limit = pid_max.min(threads_max).min(nproc_limit());
    limit.saturating_sub(threads_running() + THREAD_HEADROOM)
}

/// Threads left free beside threadpool's workers: loadgen's, compare's, and
/// the rest of the machine's.
pub const THREAD_HEADROOM: u64 = 2_048;

fn nproc_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    match sockbench::syscall!(getrlimit(libc::RLIMIT_NPROC, &mut lim)) {
        Ok(_) if lim.rlim_cur != libc::RLIM_INFINITY => lim.rlim_cur,
        _ => u64::MAX,
    }
}

/// Threads on the machine now: the second figure of `/proc/loadavg`'s
/// `running/total` field.
fn threads_running() -> u64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().nth(3)?.split_once('/')?.1.parse().ok())
        .unwrap_or(1_000)
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
    #[serde(with = "transport_name")]
    pub transport: Transport,
    pub conns: u64,
    pub size_bytes: u64,
}

/// One peer's closed-loop peak at a point: the median over its repetitions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Peak {
    pub label: String,
    pub msgs_per_s: f64,
    /// Successful runs behind the median.
    pub runs: usize,
}

/// One offered rate of the matched-load sweep.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OfferedRate {
    pub fraction: f64,
    pub msgs_per_s: f64,
}

/// The matched-load sweep at one point: the lowest peak and the rates from it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MatchedRates {
    pub shape: PointShape,
    /// Each peer's peak (median of its closed-loop runs at the point).
    pub peaks: Vec<Peak>,
    /// The lowest of `peaks`, which the fractions are of; `None` when no
    /// peer had a successful run, and then `rates` is empty.
    pub lowest: Option<Peak>,
    pub rates: Vec<OfferedRate>,
}

/// The median of `xs` (the mean of the two middle values for an even count).
fn median(xs: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (n > 0).then(|| (v[(n - 1) / 2] + v[n / 2]) / 2.0)
}

/// The offered rates at `shape`: `fractions` of the lowest per-peer median
/// of `closed` (each peer's closed-loop msgs/s over its successful runs
/// there, by label). The same rates for every peer, so server CPU per
/// message is compared at the same load.
pub fn matched_rates(shape: PointShape, closed: &[(String, f64)], fractions: &[f64]) -> MatchedRates {
    let mut labels: Vec<&str> = Vec::new();
    for (l, _) in closed {
        if !labels.contains(&l.as_str()) {
            labels.push(l);
        }
    }
    let peaks: Vec<Peak> = labels
        .iter()
        .filter_map(|&l| {
            let xs: Vec<f64> = closed.iter().filter(|(m, _)| m == l).map(|(_, x)| *x).collect();
            Some(Peak {
                label: l.into(),
                msgs_per_s: median(&xs)?,
                runs: xs.len(),
            })
        })
        .collect();
    let lowest = peaks
        .iter()
        .min_by(|a, b| a.msgs_per_s.total_cmp(&b.msgs_per_s))
        .cloned();
    let rates = match &lowest {
        Some(p) => fractions
            .iter()
            .map(|&fraction| OfferedRate {
                fraction,
                msgs_per_s: (p.msgs_per_s * fraction).max(1.0).round(),
            })
            .collect(),
        None => Vec::new(),
    };
    MatchedRates {
        shape,
        peaks,
        lowest,
        rates,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoll() -> PeerEntry {
        PeerEntry::plain(Peer::Backend(BackendKind::Epoll))
    }

    #[test]
    fn specs_round_trip_and_old_manifests_read() {
        let plan = MatrixPlan::new(true, None, None, 1);
        let shape = plan.points[1];
        let spec = plan.spec(
            &"epoll@slow:spin=600".parse().unwrap(),
            shape,
            Purpose::MatchedLoad { fraction: 0.5 },
            Some(1e4),
        );
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<RunSpec>(&json).unwrap(), spec);
        assert_eq!(spec.name(), "load50-epoll@slow-tcp-c100-s128");
        let old = r#"{"backend":"uring","transport":"unix","conns":4000,"requested_conns":10000,"size_bytes":128,
            "rate":null,"server_threads":1,"server_max_conns":null,"note":null,"round":2}"#;
        let old: RunSpec = serde_json::from_str(old).unwrap();
        assert_eq!(old.peer, Peer::Backend(BackendKind::Uring));
        assert_eq!((old.label.as_str(), old.purpose), ("uring", Purpose::Peak));
        assert_eq!(old.transport, Transport::Unix);
        assert_eq!(old.name(), "closed-uring-unix-c4000-s128-r2");
        let old_open = r#"{"peer":"epoll","transport":"tcp","conns":100,"requested_conns":100,"size_bytes":128,
            "rate":5000.0,"server_threads":1,"server_max_conns":null,"note":null,"repetition":0}"#;
        let old_open: RunSpec = serde_json::from_str(old_open).unwrap();
        assert_eq!(
            (old_open.purpose, old_open.name().as_str()),
            (Purpose::Latency, "open-epoll-tcp-c100-s128")
        );
    }

    #[test]
    fn peer_entries_parse() {
        let twin: PeerEntry = "epoll@twin".parse().unwrap();
        assert_eq!(
            (twin.peer, twin.label.as_str(), twin.calibration_spin_ns),
            (Peer::Backend(BackendKind::Epoll), "epoll@twin", None)
        );
        let slow: PeerEntry = "epoll@slow:spin=600".parse().unwrap();
        assert_eq!(
            (slow.label.as_str(), slow.calibration_spin_ns),
            ("epoll@slow", Some(600))
        );
        assert_eq!("tokio".parse::<PeerEntry>().unwrap(), PeerEntry::plain(Peer::Tokio));
        let variant: PeerEntry = "uring@small:buf-count=256:uring-fixed-files=off".parse().unwrap();
        assert_eq!(
            (variant.label.as_str(), variant.server_args.join(" ")),
            ("uring@small", "--buf-count 256 --uring-fixed-files off".to_string())
        );
        let min_wait: PeerEntry = "uring@mw50:uring-min-wait=50".parse().unwrap();
        assert_eq!(
            (min_wait.label.as_str(), min_wait.server_args.join(" ")),
            ("uring@mw50", "--uring-min-wait 50".to_string())
        );
        for bad in [
            "uring@x:spin=5",
            "epoll:spin=5",
            "epoll@:x",
            "epoll@a/b",
            "epoll@s:spin=0",
            "nginx",
            "uring:uring-wait=one",
            "uring@w:uring-wait=two",
            "uring@w:uring-wait=one:uring-wait=quiet",
            "uring@n:buf-count=0",
            "uring@n:buf-count",
            "epoll@h:uring-hugepages=on",
            "epoll@m:uring-min-wait=50",
            "uring@m:uring-min-wait=soon",
            "uring@x:threads=4",
        ] {
            assert!(bad.parse::<PeerEntry>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn argv_is_built_from_the_typed_spec() {
        let plan = MatrixPlan::new(true, None, Some(vec![Transport::Unix]), 1);
        let shape = PointShape {
            transport: Transport::Unix,
            conns: 100,
            size_bytes: 128,
        };
        let fork = PeerEntry::plain(Peer::Backend(BackendKind::Fork));
        let spec = plan.spec(&fork, shape, Purpose::Peak, None);
        let cpus: CpuList = "0".parse().unwrap();
        let argv = spec.server_argv(Path::new("bin/server"), Path::new("/tmp/s.sock"), &cpus);
        assert_eq!(
            argv.join(" "),
            "bin/server --backend fork --transport unix --path /tmp/s.sock --threads 1 --pin 0 --max-conns 116"
        );
        let tcp = PointShape {
            transport: Transport::Tcp,
            ..shape
        };
        let tokio = plan.spec(&PeerEntry::plain(Peer::Tokio), tcp, Purpose::Peak, None);
        let argv = tokio.server_argv(Path::new("bin/tokio-echo"), Path::new("unused"), &cpus);
        assert_eq!(
            argv.join(" "),
            "bin/tokio-echo --transport tcp --addr 127.0.0.1:0 --threads 1 --pin 0"
        );
        let slow = plan.spec(&"epoll@slow:spin=600".parse().unwrap(), tcp, Purpose::Peak, None);
        let argv = slow
            .server_argv(Path::new("server"), Path::new("unused"), &cpus)
            .join(" ");
        assert!(argv.ends_with("--calibration-spin-ns 600"), "{argv}");
        let onewait = plan.spec(&"uring@onewait:uring-wait=one".parse().unwrap(), tcp, Purpose::Peak, None);
        let argv = onewait.server_argv(Path::new("server"), Path::new("unused"), &cpus).join(" ");
        assert!(argv.starts_with("server --backend uring ") && argv.ends_with("--uring-wait one"), "{argv}");
        let timing = Timing {
            duration: Duration::from_secs(1),
            warmup: Duration::from_millis(300),
            connect_rate: 20_000,
        };
        let lg = slow
            .loadgen_argv(Path::new("loadgen"), "x:1", &timing, &cpus, "f.json")
            .join(" ");
        assert!(lg.contains("--label epoll@slow --backend epoll"), "{lg}");
    }

    #[test]
    fn matched_rates_are_fractions_of_the_lowest_median_peak() {
        let shape = PointShape {
            transport: Transport::Tcp,
            conns: 100,
            size_bytes: 128,
        };
        let closed: Vec<(String, f64)> = [
            ("epoll", 170_000.0),
            ("fork", 90_000.0),
            ("fork", 110_000.0),
            ("fork", 300_000.0),
            ("epoll", 160_000.0),
        ]
        .iter()
        .map(|(l, x)| (l.to_string(), *x))
        .collect();
        let m = matched_rates(shape, &closed, &MATCHED_FRACTIONS);
        let lowest = m.lowest.clone().unwrap();
        assert_eq!(
            (lowest.label.as_str(), lowest.msgs_per_s, lowest.runs),
            ("fork", 110_000.0, 3)
        );
        let rates: Vec<f64> = m.rates.iter().map(|r| r.msgs_per_s).collect();
        assert_eq!(rates, [27_500.0, 55_000.0, 82_500.0]);
        assert!(matched_rates(shape, &[], &MATCHED_FRACTIONS).rates.is_empty());
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
        let plan = Comparison::from_args(&args).unwrap();
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
        let _ = epoll();
    }

    #[test]
    fn the_default_run_takes_about_forty_minutes_and_quick_under_two() {
        let plan = |argv: &[&str]| Comparison::from_args(&CompareArgs::try_parse_from(argv).unwrap()).unwrap();
        let full = plan(&["compare"]);
        // 5 peers × 5 repetitions × (18 closed-loop points + 6 matched points × 3 rates).
        assert_eq!(full.total_runs(), 900);
        let minutes = full.estimated_duration().as_secs_f64() / 60.0;
        assert!((34.0..=42.0).contains(&minutes), "{minutes:.1} min");
        let quick = plan(&["compare", "--quick"]);
        assert_eq!(quick.total_runs(), 50);
        assert!(
            quick.estimated_duration() < Duration::from_secs(100),
            "{:?}",
            quick.estimated_duration()
        );
    }

    #[test]
    fn bad_peer_lists_are_refused() {
        let plan = |argv: &[&str]| Comparison::from_args(&CompareArgs::try_parse_from(argv).unwrap());
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
        assert!(plan(&["compare", "--conns", "7"]).is_err());
    }
}
