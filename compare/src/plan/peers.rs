//! The peer grammar: which server a run measures ([`Peer`]), how the user
//! names one on the command line ([`PeerEntry`]: `PEER[@NAME][:KNOB=VALUE]...`),
//! and the server flags a peer may set ([`SERVER_KNOBS`]).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sockbench::server::BackendKind;

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
    ServerKnob {
        name: "buf-count",
        backend: BackendKind::Uring,
        values: KnobValues::Number,
    },
    ServerKnob {
        name: "buf-size",
        backend: BackendKind::Uring,
        values: KnobValues::Number,
    },
    ServerKnob {
        name: "ring-entries",
        backend: BackendKind::Uring,
        values: KnobValues::Number,
    },
    ServerKnob {
        name: "uring-fixed-files",
        backend: BackendKind::Uring,
        values: ON_OFF,
    },
    ServerKnob {
        name: "uring-register-ring",
        backend: BackendKind::Uring,
        values: ON_OFF,
    },
    ServerKnob {
        name: "uring-wait",
        backend: BackendKind::Uring,
        values: KnobValues::OneOf(&["quiet", "one"]),
    },
    ServerKnob {
        name: "uring-hugepages",
        backend: BackendKind::Uring,
        values: ON_OFF,
    },
    ServerKnob {
        name: "uring-min-wait",
        backend: BackendKind::Uring,
        values: KnobValues::Number,
    },
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

/// Whether `server --backend KIND` accepts the knobs' flags `args`, by the
/// server's own rules: its flag parser (ranges, powers of two) and the checks
/// between flags that `ServerConfig::from_args` makes (`--uring-min-wait`
/// with `--uring-wait quiet`). So a knob the server would refuse fails at
/// planning, naming the flag, instead of failing every run.
///
/// The one call to swap for the server's own validation function once
/// `sockbench` exposes one (issue 29, item 14).
fn server_accepts(kind: BackendKind, args: &[String]) -> Result<(), String> {
    use clap::Parser;
    if args.is_empty() {
        return Ok(());
    }
    let argv = ["server", "--backend", kind.name()]
        .into_iter()
        .map(String::from)
        .chain(args.iter().cloned());
    let parsed = sockbench::server::ServerArgs::try_parse_from(argv).map_err(|e| {
        let text = e.to_string();
        let first = text.lines().next().unwrap_or_default();
        format!("the server refuses it: {}", first.trim_start_matches("error: "))
    })?;
    sockbench::server::ServerConfig::from_args(parsed)
        .map(drop)
        .map_err(|e| format!("the server refuses it: {e}"))
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
        if let Peer::Backend(kind) = peer {
            server_accepts(kind, &server_args).map_err(|e| format!("{s:?}: {e}"))?;
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
