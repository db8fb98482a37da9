//! `findings.json`: the statistics behind the README's Findings, for
//! programs (the A/A and sensitivity tests read it). Written atomically.
//!
//! ```json
//! {"reference": "epoll",
//!  "points": [{"transport": "tcp", "size_bytes": 128, "conns": 100, "purpose": "peak",
//!              "offered_msgs_per_s": null, "bottleneck": "server",
//!              "peers": [{"label": "uring", "peer": "uring", "runs": 5, "conns": 100,
//!                         "msgs_per_s": {"lo": .., "mid": .., "hi": .., "level": 0.9375, "n": 5},
//!                         "server_cpu_us_per_msg": {..}, "loadgen_cpu_us_per_msg": {..}, "p99_us": {..},
//!                         "ratio_server_cpu": {..}, "verdict_server_cpu": "lower",
//!                         "ratio_msgs_per_s": {..}, "verdict_msgs_per_s": "equivalent",
//!                         "bottleneck": "server", "errors": 0, "disturbed": [], "fell_short": []}]}]}
//! ```
//!
//! Verdicts are exactly `lower`, `higher`, `equivalent` (the ratio's
//! interval lies inside the 10% band around 1), `undecided` or
//! `too few runs`; a figure, ratio or verdict that could not be computed is
//! `null` (the reference label has no ratio to itself). `level` is `null`
//! for a single run, whose `lo = mid = hi`.

use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::analyse::stats::{Interval, Verdict};
use crate::analyse::{Analysis, PeerStats, PointStats, Summary};

/// The file name in the output directory.
pub const FINDINGS_FILE: &str = "findings.json";

#[derive(Serialize)]
struct Findings<'a> {
    reference: &'a str,
    points: Vec<Point<'a>>,
}

#[derive(Serialize)]
struct Point<'a> {
    transport: &'a str,
    size_bytes: u64,
    conns: u64,
    purpose: &'a str,
    /// Matched load: the fraction of the lowest closed-loop peak.
    fraction: Option<f64>,
    offered_msgs_per_s: Option<f64>,
    bottleneck: &'a str,
    peers: Vec<Peer<'a>>,
}

#[derive(Serialize)]
struct Peer<'a> {
    label: &'a str,
    peer: &'a str,
    runs: usize,
    conns: u64,
    msgs_per_s: Option<Figure>,
    server_cpu_us_per_msg: Option<Figure>,
    loadgen_cpu_us_per_msg: Option<Figure>,
    p99_us: Option<Figure>,
    ratio_server_cpu: Option<Figure>,
    verdict_server_cpu: Option<&'static str>,
    ratio_msgs_per_s: Option<Figure>,
    verdict_msgs_per_s: Option<&'static str>,
    /// loadgen's CPU per message over this server's, run by run.
    loadgen_over_server_cpu: Option<Figure>,
    bottleneck: Option<&'static str>,
    /// Adaptive comparisons: why the label stopped getting repetitions
    /// (`differs`, `equivalent`, `cap`); absent otherwise. `runs` says how many it took.
    #[serde(skip_serializing_if = "Option::is_none")]
    stopped: Option<&'static str>,
    errors: u64,
    disturbed: &'a [String],
    fell_short: &'a [String],
}

#[derive(Serialize)]
struct Figure {
    lo: f64,
    mid: f64,
    hi: f64,
    level: Option<f64>,
    n: usize,
}

impl From<Summary> for Figure {
    fn from(s: Summary) -> Figure {
        Figure {
            lo: s.lo,
            mid: s.mid,
            hi: s.hi,
            level: s.level,
            n: s.n,
        }
    }
}

impl From<Interval> for Figure {
    fn from(iv: Interval) -> Figure {
        Figure::from(Summary::from(iv))
    }
}

/// The verdict's word in `findings.json`.
pub fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Lower => "lower",
        Verdict::Higher => "higher",
        Verdict::Equivalent(_) => "equivalent",
        Verdict::Undecided => "undecided",
        Verdict::TooFewRuns => "too few runs",
    }
}

fn peer(p: &PeerStats) -> Peer<'_> {
    Peer {
        label: &p.label,
        peer: p.peer.name(),
        runs: p.runs,
        conns: p.conns,
        msgs_per_s: p.msgs_per_s.map(Figure::from),
        server_cpu_us_per_msg: p.server_cpu_us_per_msg.map(Figure::from),
        loadgen_cpu_us_per_msg: p.loadgen_cpu_us_per_msg.map(Figure::from),
        p99_us: p.p99_us.map(Figure::from),
        ratio_server_cpu: p.ratio_server_cpu.map(|r| r.interval.into()),
        verdict_server_cpu: p.ratio_server_cpu.map(|r| verdict_word(r.verdict)),
        ratio_msgs_per_s: p.ratio_msgs_per_s.map(|r| r.interval.into()),
        verdict_msgs_per_s: p.ratio_msgs_per_s.map(|r| verdict_word(r.verdict)),
        loadgen_over_server_cpu: p.loadgen_over_server_cpu.map(|r| r.interval.into()),
        bottleneck: p.bottleneck.map(|b| b.as_str()),
        stopped: p.stopped.map(|s| s.as_str()),
        errors: p.errors,
        disturbed: &p.disturbed,
        fell_short: &p.fell_short,
    }
}

fn point(p: &PointStats) -> Point<'_> {
    Point {
        transport: p.key.transport.name(),
        size_bytes: p.key.size_bytes,
        conns: p.key.conns,
        purpose: p.key.purpose.as_str(),
        fraction: match p.key.purpose {
            crate::analyse::Purpose::MatchedLoad { fraction } => Some(fraction),
            _ => None,
        },
        offered_msgs_per_s: p.offered_per_s,
        bottleneck: p.limit.as_str(),
        peers: p.peers.iter().map(peer).collect(),
    }
}

/// The JSON text of `analysis`.
pub fn to_json(analysis: &Analysis) -> String {
    let f = Findings {
        reference: &analysis.reference,
        points: analysis.points.iter().map(point).collect(),
    };
    serde_json::to_string_pretty(&f).expect("findings serialize") + "\n"
}

/// Writes `dir/findings.json` atomically.
pub fn write(analysis: &Analysis, dir: &Path) -> anyhow::Result<()> {
    let path = dir.join(FINDINGS_FILE);
    loadgen::result::write_atomic(&path, to_json(analysis).as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyse::points::point_stats;
    use crate::analyse::points::tests::fact;
    use crate::plan::Peer;
    use sockbench::server::BackendKind;

    #[test]
    fn findings_json_has_the_agreed_shape_and_words() {
        let (epoll, uring) = (Peer::Backend(BackendKind::Epoll), Peer::Backend(BackendKind::Uring));
        let mut facts = Vec::new();
        for rep in 1..=5 {
            let d = 1.0 + rep as f64 / 10.0;
            facts.push(fact("epoll", epoll, rep, 5.0 * d, 100.0 / d, (0.99, 0.5)));
            facts.push(fact(
                "uring",
                uring,
                rep,
                4.0 * d,
                100.0 / d * (1.0 + (rep as f64 - 3.0) / 50.0),
                (0.99, 0.5),
            ));
        }
        let analysis = Analysis {
            reference: "epoll".into(),
            points: point_stats(&facts, "epoll"),
        };
        let v: serde_json::Value = serde_json::from_str(&to_json(&analysis)).unwrap();
        assert_eq!(v["reference"], "epoll");
        let point = &v["points"][0];
        assert_eq!(
            (
                &point["transport"],
                &point["size_bytes"],
                &point["conns"],
                &point["purpose"],
                &point["bottleneck"]
            ),
            (
                &"tcp".into(),
                &128.into(),
                &100.into(),
                &"peak".into(),
                &"server".into()
            )
        );
        let uring = &point["peers"][1];
        assert_eq!(uring["label"], "uring");
        assert_eq!(uring["verdict_server_cpu"], "lower");
        // Ratios 0.96 to 1.04: inside the 10% band around 1.
        assert_eq!(uring["verdict_msgs_per_s"], "equivalent");
        assert_eq!(uring["bottleneck"], "server");
        assert_eq!(uring["server_cpu_us_per_msg"]["level"], 0.9375);
        assert_eq!(uring["server_cpu_us_per_msg"]["n"], 5);
        for k in ["lo", "mid", "hi"] {
            assert!(uring["ratio_server_cpu"][k].as_f64().unwrap() < 1.0);
        }
        assert!(
            point["peers"][0]["ratio_server_cpu"].is_null(),
            "the reference has no ratio to itself"
        );
        assert_eq!(verdict_word(Verdict::TooFewRuns), "too few runs");
    }
}
