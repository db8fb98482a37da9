//! One run, [`RunSpec`]: its typed settings, the server's and loadgen's
//! argv built from them, and on-disk compatibility: a spec deserializes
//! through `RunSpecOnDisk`, which also reads the layouts of older manifests.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sockbench::cpu::CpuList;
use sockbench::net::Transport;

use super::matrix::PointShape;
use super::peers::Peer;

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
pub(super) mod transport_name {
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
    /// Open loop: the offered rate, total messages per second (conversations
    /// per second at a conversation point); `None` for closed loop.
    pub rate: Option<f64>,
    /// A conversation run: echoes per connection (`loadgen --conn-msgs`),
    /// each client connecting, conversing and closing over and over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn_msgs: Option<u64>,
    /// The server's `--threads`.
    pub server_threads: u64,
    /// The server's `--max-conns`, when the default would not do.
    pub server_max_conns: Option<u64>,
    /// loadgen's `--threads` when its connections need more descriptor
    /// tables than it has CPUs; `None`: a thread per loadgen CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loadgen_threads: Option<u64>,
    /// loadgen's `--local-addrs` when one source address has too few ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_addrs: Option<String>,
    /// loadgen's `--timeout` for a stream run at a scale where a round trip
    /// nears the default of 1 s, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
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
    #[serde(default)]
    conn_msgs: Option<u64>,
    server_threads: u64,
    server_max_conns: Option<u64>,
    #[serde(default)]
    loadgen_threads: Option<u64>,
    #[serde(default)]
    local_addrs: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
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
            conn_msgs: d.conn_msgs,
            server_threads: d.server_threads,
            server_max_conns: d.server_max_conns,
            loadgen_threads: d.loadgen_threads,
            local_addrs: d.local_addrs,
            timeout_ms: d.timeout_ms,
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
    /// repetition: purpose, label, transport, connections, size, and at a
    /// conversation point the messages per connection (`-m10`).
    pub fn point(&self) -> String {
        let msgs = self.conn_msgs.map(|n| format!("-m{n}")).unwrap_or_default();
        format!(
            "{}-{}-{}-c{}-s{}{msgs}",
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
            conn_msgs: self.conn_msgs,
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
            self.loadgen_threads.unwrap_or(cpus.cpus().len() as u64).to_string(),
            "--pin".into(),
            cpus.to_string(),
            "--connect-rate".into(),
            timing.connect_rate.to_string(),
            "--label".into(),
            self.label.clone(),
            "--backend".into(),
            self.peer.name().into(),
        ];
        if let Some(n) = self.conn_msgs {
            argv.extend(["--conn-msgs".into(), n.to_string()]);
        }
        // With --conn-msgs, loadgen's --rate counts new conversations per second.
        if let Some(rate) = self.rate {
            argv.extend(["--rate".into(), format!("{rate}")]);
        }
        if !self.transport.is_stream() {
            argv.extend(["--timeout".into(), fmt_ms(datagram_timeout(timing))]);
        } else if let Some(ms) = self.timeout_ms {
            argv.extend(["--timeout".into(), format!("{ms}ms")]);
        }
        if let Some(addrs) = &self.local_addrs {
            argv.extend(["--local-addrs".into(), addrs.clone()]);
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
