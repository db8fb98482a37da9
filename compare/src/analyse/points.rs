//! Each point's figures with their intervals, ratios to the reference label,
//! verdicts and bottlenecks: pure functions over [`RunFacts`], the few
//! numbers of one run that the statistics need (built from a [`super::Run`]
//! by [`super::facts`]).

use std::collections::BTreeMap;

use sockbench::net::Transport;

use super::adaptive::StopReason;
use super::stats::{self, Bottleneck, Interval, Verdict};
use crate::plan::Peer;

/// Why a run was made (mirrors the plan's purpose; see [`super::purpose`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Purpose {
    /// Closed loop: the most the pair can do.
    Peak,
    /// Open loop at one rate, for the latency spectrum.
    Latency,
    /// Open loop at `fraction` of the lowest closed-loop peak at its point.
    MatchedLoad { fraction: f64 },
}

impl Purpose {
    /// `peak`, `latency`, `matched_load`: the word in `findings.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Peak => "peak",
            Purpose::Latency => "latency",
            Purpose::MatchedLoad { .. } => "matched_load",
        }
    }

    /// A key that orders and groups purposes (fractions in permille).
    fn order(self) -> (u8, u64) {
        match self {
            Purpose::Peak => (0, 0),
            Purpose::Latency => (1, 0),
            Purpose::MatchedLoad { fraction } => (2, (fraction * 1000.0).round() as u64),
        }
    }
}

/// A point of the matrix: every label run at it is compared with the others.
/// `conns` is the requested count, so a scaled-down peer stays in its row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PointKey {
    pub transport: Transport,
    pub size_bytes: u64,
    pub conns: u64,
    pub purpose: Purpose,
    /// A conversation point: messages per connection (`--conn-msgs`).
    pub conn_msgs: Option<u64>,
}

impl PointKey {
    /// The open-loop point whose runs make the latency spectrum: a latency
    /// run of older manifests, or the matched-load sweep's 50% run over TCP
    /// at 100 connections and 128 B (the plan runs no separate latency runs).
    pub fn is_latency_view(&self) -> bool {
        match self.purpose {
            Purpose::Latency => true,
            Purpose::MatchedLoad { fraction } => {
                fraction == 0.5
                    && self.transport == Transport::Tcp
                    && self.conns == 100
                    && self.size_bytes == 128
                    && self.conn_msgs.is_none()
            }
            Purpose::Peak => false,
        }
    }

    fn order(&self) -> (Option<u64>, String, u64, u64, (u8, u64)) {
        (
            self.conn_msgs,
            self.transport.name().to_string(),
            self.size_bytes,
            self.conns,
            self.purpose.order(),
        )
    }
}

/// What the statistics need of one successful run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunFacts {
    /// The run's name (its result file's stem), for notes.
    pub name: String,
    /// The name it is compared under (the peer's name unless labelled).
    pub label: String,
    pub peer: Peer,
    pub key: PointKey,
    /// Connections actually opened (below `key.conns` when scaled down).
    pub conns: u64,
    /// Which repetition (runs of one repetition are paired).
    pub repetition: u32,
    pub msgs_per_s: f64,
    pub server_cpu_us_per_msg: Option<f64>,
    pub loadgen_cpu_us_per_msg: Option<f64>,
    pub p99_us: f64,
    /// Busy fraction of the server's cores over its window.
    pub server_busy: Option<f64>,
    /// Busy fraction of loadgen's cores over its own window.
    pub loadgen_busy: Option<f64>,
    /// Open loop: the rate asked for, msgs/s.
    pub offered_per_s: Option<f64>,
    pub errors: u64,
    /// Other processes' CPU above the manifest's limit in this run's window.
    pub disturbed: bool,
    pub server_peak_rss_kib: Option<u64>,
    /// Why it costs what it costs: the server's switches (and syscalls) per message.
    pub switches: SwitchFacts,
    /// A conversation run's figures.
    pub conv: Option<ConvFacts>,
}

/// The server tree's context switches and system calls per unit of work
/// (see `record::ServerCost`); `None` where not measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SwitchFacts {
    pub voluntary: Option<f64>,
    pub involuntary: Option<f64>,
    pub syscalls: Option<f64>,
    /// Some task of the tree exited inside the window: the switch counts
    /// are a lower bound (fork's children in conversation runs).
    pub lower_bound: bool,
}

/// What the statistics need of a conversation run (loadgen's
/// `conversations` object and the server's cost per connection).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConvFacts {
    /// Completed conversations (connections) per second.
    pub conns_per_s: f64,
    pub server_cpu_us_per_conn: Option<f64>,
    pub loadgen_cpu_us_per_conn: Option<f64>,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Failed conversations in the measured phase.
    pub failed: u64,
    /// The server's switches per connection.
    pub switches: SwitchFacts,
}

impl RunFacts {
    /// The run's bottleneck, when both sides' busy fractions are known.
    pub fn bottleneck(&self) -> Option<Bottleneck> {
        stats::classify(self.server_busy?, self.loadgen_busy?)
    }

    /// An open-loop run that delivered less than [`stats::REACHED_RATE_FRACTION`] of its rate.
    pub fn fell_short(&self) -> bool {
        self.offered_per_s
            .is_some_and(|offered| !stats::reached_rate(offered, self.msgs_per_s))
    }
}

/// [`SwitchFacts`] over a label's runs at a point.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SwitchStats {
    pub voluntary: Option<Summary>,
    pub involuntary: Option<Summary>,
    pub syscalls: Option<Summary>,
    /// Some run's counts are a lower bound (a task exited in its window).
    pub lower_bound: bool,
}

impl SwitchStats {
    fn of(runs: &[&SwitchFacts]) -> SwitchStats {
        let summary =
            |f: fn(&SwitchFacts) -> Option<f64>| Summary::of(&runs.iter().filter_map(|r| f(r)).collect::<Vec<f64>>());
        SwitchStats {
            voluntary: summary(|s| s.voluntary),
            involuntary: summary(|s| s.involuntary),
            syscalls: summary(|s| s.syscalls),
            lower_bound: runs.iter().any(|r| r.lower_bound),
        }
    }
}

/// [`ConvFacts`] over a label's runs at a conversation point.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvStats {
    pub conns_per_s: Option<Summary>,
    pub server_cpu_us_per_conn: Option<Summary>,
    pub loadgen_cpu_us_per_conn: Option<Summary>,
    pub p50_us: Option<Summary>,
    pub p99_us: Option<Summary>,
    /// Server CPU per connection against the reference label's, paired by repetition.
    pub ratio_server_cpu: Option<Ratio>,
    pub failed: u64,
    pub switches_per_conn: SwitchStats,
}

/// A figure over a label's runs at a point: the median with its interval,
/// or the one value when there was a single run (`level` then `None`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub lo: f64,
    pub mid: f64,
    pub hi: f64,
    /// The interval's coverage (0.9375 at n = 5); `None` for one run.
    pub level: Option<f64>,
    pub n: usize,
}

impl Summary {
    /// The median and order-statistic interval of the finite values.
    pub fn of(values: &[f64]) -> Option<Summary> {
        if let Some(iv) = stats::median_ci(values) {
            return Some(Summary::from(iv));
        }
        let one = values.iter().copied().find(|v| v.is_finite())?;
        Some(Summary {
            lo: one,
            mid: one,
            hi: one,
            level: None,
            n: 1,
        })
    }

    /// `mid [lo, hi]` with `decimals`, or `mid (1 run)`.
    pub fn text(&self, decimals: usize) -> String {
        match self.level {
            Some(_) => format!("{:.d$} [{:.d$}, {:.d$}]", self.mid, self.lo, self.hi, d = decimals),
            None => format!("{:.d$} (1 run)", self.mid, d = decimals),
        }
    }
}

impl From<Interval> for Summary {
    fn from(iv: Interval) -> Summary {
        Summary {
            lo: iv.lo,
            mid: iv.mid,
            hi: iv.hi,
            level: Some(iv.level),
            n: iv.n,
        }
    }
}

/// A paired ratio to the reference and what it says.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ratio {
    pub interval: Interval,
    pub verdict: Verdict,
    /// In an adaptive comparison, why the label stopped getting
    /// repetitions at the point (the report says "(time budget)" beside a
    /// verdict the budget left); `None` in a fixed design.
    pub stopped: Option<StopReason>,
}

/// One label at one point.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerStats {
    pub label: String,
    pub peer: Peer,
    /// Runs behind the figures (matched-load runs that fell short excluded).
    pub runs: usize,
    /// The most connections any of its runs opened.
    pub conns: u64,
    pub msgs_per_s: Option<Summary>,
    pub server_cpu_us_per_msg: Option<Summary>,
    pub loadgen_cpu_us_per_msg: Option<Summary>,
    pub p99_us: Option<Summary>,
    /// Server CPU µs/msg over the reference's, paired by repetition.
    pub ratio_server_cpu: Option<Ratio>,
    /// msgs/s over the reference's, paired by repetition.
    pub ratio_msgs_per_s: Option<Ratio>,
    /// The server's voluntary and involuntary context switches and
    /// syscalls per message (medians over the runs).
    pub switches_per_msg: SwitchStats,
    /// A conversation point: connections per second, CPU and switches per
    /// connection, conversation time.
    pub conv: Option<ConvStats>,
    /// loadgen's CPU per message over the server's, run by run (the two
    /// sides of one run are as paired as figures get): below 1, loadgen is
    /// the cheaper side and cannot be what limits the pair.
    pub loadgen_over_server_cpu: Option<Ratio>,
    /// Matched load: loadgen's CPU per message in these open-loop runs over
    /// its CPU per message in the same label's closed-loop runs at the same
    /// transport, size and connection count, paired by repetition (issue
    /// 16's open-loop yardstick: at most 1.5 at half the peak).
    pub loadgen_open_over_closed: Option<Ratio>,
    /// Busy fractions of each side's cores over its window.
    pub server_busy: Option<Summary>,
    pub loadgen_busy: Option<Summary>,
    /// [`stats::classify_runs`] over its runs.
    pub bottleneck: Option<Bottleneck>,
    /// The largest peak RSS of the server tree over its runs.
    pub server_peak_rss_kib: Option<u64>,
    pub errors: u64,
    /// Names of its runs that other processes disturbed.
    pub disturbed: Vec<String>,
    /// Names of its matched-load runs that fell short of the offered rate
    /// (left out of every figure above).
    pub fell_short: Vec<String>,
    /// In an adaptive comparison, why this label stopped getting
    /// repetitions (see `analyse::adaptive`); `None` otherwise and for the
    /// reference.
    pub stopped: Option<StopReason>,
}

impl PeerStats {
    /// Whether it ran with fewer connections than the point asked for.
    pub fn scaled_down(&self, key: &PointKey) -> bool {
        self.conns < key.conns
    }
}

/// The limit of a whole point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowLimit {
    /// Every label's runs had this bottleneck.
    Same(Bottleneck),
    /// The labels disagree (or one is unknown): no single limit.
    Mixed,
}

impl RowLimit {
    /// `server`, `loadgen`, `both`, `neither` or `mixed`.
    pub fn as_str(self) -> &'static str {
        match self {
            RowLimit::Same(b) => b.as_str(),
            RowLimit::Mixed => "mixed",
        }
    }
}

/// One point: every label's statistics, in [`Peer::all`] order then by label.
#[derive(Clone, Debug, PartialEq)]
pub struct PointStats {
    pub key: PointKey,
    /// Open loop: the offered rate (the median of the runs' rates), msgs/s.
    pub offered_per_s: Option<f64>,
    pub limit: RowLimit,
    pub peers: Vec<PeerStats>,
}

impl PointStats {
    /// Throughput may rank the labels only when every one was server-limited.
    pub fn server_limited(&self) -> bool {
        self.limit == RowLimit::Same(Bottleneck::Server)
    }

    pub fn peer(&self, label: &str) -> Option<&PeerStats> {
        self.peers.iter().find(|p| p.label == label)
    }
}

/// Every point's statistics against the `reference` label, ordered by
/// transport, size, connections and purpose.
pub fn point_stats(facts: &[RunFacts], reference: &str) -> Vec<PointStats> {
    let mut keys: Vec<PointKey> = Vec::new();
    for f in facts {
        if !keys.contains(&f.key) {
            keys.push(f.key);
        }
    }
    keys.sort_by_key(PointKey::order);
    keys.into_iter()
        .map(|key| {
            let at: Vec<&RunFacts> = facts.iter().filter(|f| f.key == key).collect();
            let closed_key = PointKey {
                purpose: Purpose::Peak,
                ..key
            };
            let closed: Vec<&RunFacts> = match key.purpose {
                Purpose::MatchedLoad { .. } => facts.iter().filter(|f| f.key == closed_key).collect(),
                _ => Vec::new(),
            };
            one_point(key, &at, &closed, reference)
        })
        .collect()
}

/// The statistics of point `key` from its runs `at`; `closed` are the
/// closed-loop runs at the same transport, size and connection count when
/// `key` is an open-loop point.
fn one_point(key: PointKey, at: &[&RunFacts], closed: &[&RunFacts], reference: &str) -> PointStats {
    let mut labels: Vec<(Peer, String)> = Vec::new();
    for f in at {
        if !labels.iter().any(|(_, l)| *l == f.label) {
            labels.push((f.peer, f.label.clone()));
        }
    }
    let peer_rank = |p: Peer| Peer::all().position(|q| q == p).unwrap_or(usize::MAX);
    labels.sort_by(|a, b| (peer_rank(a.0), &a.1).cmp(&(peer_rank(b.0), &b.1)));
    let matched = matches!(key.purpose, Purpose::MatchedLoad { .. });
    let used = |f: &&&RunFacts| !(matched && f.fell_short());
    let reference_runs: Vec<&RunFacts> = at
        .iter()
        .filter(|f| f.label == reference)
        .filter(used)
        .copied()
        .collect();
    let peers: Vec<PeerStats> = labels
        .iter()
        .map(|(peer, label)| {
            let all: Vec<&RunFacts> = at.iter().filter(|f| f.label == *label).copied().collect();
            let kept: Vec<&RunFacts> = all.iter().filter(used).copied().collect();
            let reference_runs: &[&RunFacts] = if label == reference { &[] } else { &reference_runs };
            let mut stats = peer_stats(*peer, label, &all, &kept, reference_runs);
            let own_closed: Vec<&RunFacts> = closed.iter().filter(|f| f.label == *label).copied().collect();
            stats.loadgen_open_over_closed = paired_ratio(&kept, &own_closed, |r| r.loadgen_cpu_us_per_msg);
            stats
        })
        .collect();
    let offered: Vec<f64> = at.iter().filter_map(|f| f.offered_per_s).collect();
    PointStats {
        key,
        offered_per_s: (!offered.is_empty()).then(|| stats::median(&offered)),
        limit: row_limit(&peers),
        peers,
    }
}

fn row_limit(peers: &[PeerStats]) -> RowLimit {
    let first = peers.first().and_then(|p| p.bottleneck);
    match first {
        Some(b) if peers.iter().all(|p| p.bottleneck == Some(b)) => RowLimit::Same(b),
        _ => RowLimit::Mixed,
    }
}

fn peer_stats(peer: Peer, label: &str, all: &[&RunFacts], kept: &[&RunFacts], reference: &[&RunFacts]) -> PeerStats {
    let values = |f: fn(&RunFacts) -> Option<f64>| -> Vec<f64> { kept.iter().filter_map(|r| f(r)).collect() };
    let summary = |f: fn(&RunFacts) -> Option<f64>| Summary::of(&values(f));
    let busy = |f: fn(&RunFacts) -> Option<f64>| -> Vec<f64> { values(f) };
    // `reference` is empty for the reference label itself: no ratio to itself.
    let ratio = |f: fn(&RunFacts) -> Option<f64>| paired_ratio(kept, reference, f);
    PeerStats {
        label: label.to_string(),
        peer,
        runs: kept.len(),
        conns: all.iter().map(|r| r.conns).max().unwrap_or(0),
        msgs_per_s: summary(|r| Some(r.msgs_per_s)),
        server_cpu_us_per_msg: summary(|r| r.server_cpu_us_per_msg),
        loadgen_cpu_us_per_msg: summary(|r| r.loadgen_cpu_us_per_msg),
        p99_us: summary(|r| Some(r.p99_us)),
        ratio_server_cpu: ratio(|r| r.server_cpu_us_per_msg),
        ratio_msgs_per_s: ratio(|r| Some(r.msgs_per_s)),
        loadgen_over_server_cpu: loadgen_over_server(kept),
        loadgen_open_over_closed: None,
        server_busy: summary(|r| r.server_busy),
        loadgen_busy: summary(|r| r.loadgen_busy),
        bottleneck: stats::classify_runs(&busy(|r| r.server_busy), &busy(|r| r.loadgen_busy)),
        server_peak_rss_kib: kept.iter().filter_map(|r| r.server_peak_rss_kib).max(),
        switches_per_msg: SwitchStats::of(&kept.iter().map(|r| &r.switches).collect::<Vec<_>>()),
        conv: conv_stats(kept, reference),
        errors: all.iter().map(|r| r.errors).sum(),
        disturbed: all.iter().filter(|r| r.disturbed).map(|r| r.name.clone()).collect(),
        fell_short: all
            .iter()
            .filter(|r| r.fell_short() && kept.iter().all(|k| k.name != r.name))
            .map(|r| r.name.clone())
            .collect(),
        stopped: None,
    }
}

/// The conversation figures of `kept` (`None` at a point without conversations).
fn conv_stats(kept: &[&RunFacts], reference: &[&RunFacts]) -> Option<ConvStats> {
    let convs: Vec<&ConvFacts> = kept.iter().filter_map(|r| r.conv.as_ref()).collect();
    if convs.is_empty() {
        return None;
    }
    let summary =
        |f: fn(&ConvFacts) -> Option<f64>| Summary::of(&convs.iter().filter_map(|c| f(c)).collect::<Vec<f64>>());
    Some(ConvStats {
        conns_per_s: summary(|c| Some(c.conns_per_s)),
        server_cpu_us_per_conn: summary(|c| c.server_cpu_us_per_conn),
        loadgen_cpu_us_per_conn: summary(|c| c.loadgen_cpu_us_per_conn),
        p50_us: summary(|c| Some(c.p50_us)),
        p99_us: summary(|c| Some(c.p99_us)),
        ratio_server_cpu: paired_ratio(kept, reference, |r| r.conv?.server_cpu_us_per_conn),
        failed: convs.iter().map(|c| c.failed).sum(),
        switches_per_conn: SwitchStats::of(&convs.iter().map(|c| &c.switches).collect::<Vec<_>>()),
    })
}

/// `figure` of `candidate` over that of `reference`, paired by repetition.
fn paired_ratio(
    candidate: &[&RunFacts],
    reference: &[&RunFacts],
    figure: fn(&RunFacts) -> Option<f64>,
) -> Option<Ratio> {
    let (cand, refr) = paired_by_repetition(candidate, reference, figure);
    let interval = stats::paired_ratio_ci(&cand, &refr)?;
    Some(Ratio {
        interval,
        verdict: stats::verdict(&interval),
        stopped: None,
    })
}

/// loadgen's CPU per message over the server's, each run with itself.
fn loadgen_over_server(runs: &[&RunFacts]) -> Option<Ratio> {
    let loadgen: Vec<Option<f64>> = runs.iter().map(|r| r.loadgen_cpu_us_per_msg).collect();
    let server: Vec<Option<f64>> = runs.iter().map(|r| r.server_cpu_us_per_msg).collect();
    // Two different figures of one run: not exchangeable, so the sign test.
    let interval = stats::paired_median_ratio_ci(&loadgen, &server)?;
    Some(Ratio {
        interval,
        verdict: stats::verdict(&interval),
        stopped: None,
    })
}

/// The figure of each side by repetition, aligned: index `i` of both
/// vectors is the same repetition, `None` where one side has no run.
fn paired_by_repetition(
    candidate: &[&RunFacts],
    reference: &[&RunFacts],
    figure: fn(&RunFacts) -> Option<f64>,
) -> (Vec<Option<f64>>, Vec<Option<f64>>) {
    let by_rep =
        |runs: &[&RunFacts]| -> BTreeMap<u32, Option<f64>> { runs.iter().map(|r| (r.repetition, figure(r))).collect() };
    let (c, r) = (by_rep(candidate), by_rep(reference));
    c.iter().map(|(rep, v)| (*v, r.get(rep).copied().flatten())).unzip()
}

/// The labels at a point ordered by median server CPU per message, cheapest
/// first; labels without the figure last.
pub fn ranked_by_server_cpu(point: &PointStats) -> Vec<&PeerStats> {
    let mut v: Vec<&PeerStats> = point.peers.iter().collect();
    let key = |p: &PeerStats| p.server_cpu_us_per_msg.map_or(f64::INFINITY, |s| s.mid);
    v.sort_by(|a, b| key(a).total_cmp(&key(b)));
    v
}

/// The labels ordered by median msgs/s, fastest first.
pub fn ranked_by_throughput(point: &PointStats) -> Vec<&PeerStats> {
    let mut v: Vec<&PeerStats> = point.peers.iter().collect();
    let key = |p: &PeerStats| p.msgs_per_s.map_or(f64::NEG_INFINITY, |s| s.mid);
    v.sort_by(|a, b| key(b).total_cmp(&key(a)));
    v
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use sockbench::server::BackendKind;

    pub(crate) fn fact(label: &str, peer: Peer, rep: u32, cpu: f64, msgs: f64, busy: (f64, f64)) -> RunFacts {
        RunFacts {
            name: format!("{label}-r{rep}"),
            label: label.into(),
            peer,
            key: PointKey {
                transport: Transport::Tcp,
                size_bytes: 128,
                conns: 100,
                purpose: Purpose::Peak,
                conn_msgs: None,
            },
            conns: 100,
            repetition: rep,
            msgs_per_s: msgs,
            server_cpu_us_per_msg: Some(cpu),
            loadgen_cpu_us_per_msg: Some(cpu),
            p99_us: 100.0,
            server_busy: Some(busy.0),
            loadgen_busy: Some(busy.1),
            offered_per_s: None,
            errors: 0,
            disturbed: false,
            server_peak_rss_kib: None,
            switches: SwitchFacts::default(),
            conv: None,
        }
    }

    const EPOLL: Peer = Peer::Backend(BackendKind::Epoll);
    const URING: Peer = Peer::Backend(BackendKind::Uring);

    #[test]
    fn ratios_pair_runs_of_the_same_repetition() {
        // Drift moves both runs of a repetition; uring always 0.8 × epoll.
        let drift = [1.0, 1.3, 0.8, 1.1, 0.9];
        let mut facts = Vec::new();
        for (i, d) in drift.iter().enumerate() {
            let rep = i as u32 + 1;
            facts.push(fact("epoll", EPOLL, rep, 5.0 * d, 100.0 / d, (0.99, 0.5)));
            facts.push(fact("uring", URING, rep, 4.0 * d, 125.0 / d, (0.99, 0.5)));
        }
        let points = point_stats(&facts, "epoll");
        assert_eq!(points.len(), 1);
        let p = &points[0];
        assert_eq!(p.limit, RowLimit::Same(Bottleneck::Server));
        assert_eq!(
            p.peers.iter().map(|s| s.label.as_str()).collect::<Vec<_>>(),
            ["epoll", "uring"]
        );
        let uring = p.peer("uring").unwrap();
        let r = uring.ratio_server_cpu.unwrap();
        assert!(
            (r.interval.lo - 0.8).abs() < 1e-9 && (r.interval.hi - 0.8).abs() < 1e-9,
            "{r:?}"
        );
        assert_eq!(r.verdict, Verdict::Lower);
        assert_eq!(uring.ratio_msgs_per_s.unwrap().verdict, Verdict::Higher);
        assert_eq!(uring.server_cpu_us_per_msg.unwrap().level, Some(0.9375));
        assert!(
            p.peer("epoll").unwrap().ratio_server_cpu.is_none(),
            "no ratio to itself"
        );
        assert_eq!(ranked_by_server_cpu(p)[0].label, "uring");
        assert_eq!(ranked_by_throughput(p)[0].label, "uring");
    }

    #[test]
    fn three_rounds_are_too_few_and_mixed_limits_do_not_rank() {
        let mut facts = Vec::new();
        for rep in 1..=3 {
            facts.push(fact("epoll", EPOLL, rep, 5.0, 100.0, (0.99, 0.5)));
            facts.push(fact("uring", URING, rep, 4.0, 110.0, (0.7, 0.97)));
        }
        let p = &point_stats(&facts, "epoll")[0];
        let uring = p.peer("uring").unwrap();
        assert_eq!(uring.ratio_server_cpu.unwrap().verdict, Verdict::TooFewRuns);
        assert_eq!(uring.server_cpu_us_per_msg.unwrap().level, Some(0.75));
        assert_eq!(uring.bottleneck, Some(Bottleneck::Loadgen));
        assert_eq!(p.limit, RowLimit::Mixed);
        assert!(!p.server_limited());
    }

    #[test]
    fn loadgen_in_open_loop_is_set_against_its_own_closed_loop_by_repetition() {
        // Drift moves both runs of a repetition; open loop always costs loadgen 1.5 ×.
        let drift = [1.0, 1.3, 0.8, 1.1, 0.9];
        let mut facts = Vec::new();
        for (i, d) in drift.iter().enumerate() {
            let rep = i as u32 + 1;
            for (label, peer, lg) in [("epoll", EPOLL, 6.0), ("uring", URING, 5.0)] {
                let mut closed = fact(label, peer, rep, 5.0, 100.0, (0.99, 0.99));
                closed.loadgen_cpu_us_per_msg = Some(lg * d);
                let mut open = closed.clone();
                open.key.purpose = Purpose::MatchedLoad { fraction: 0.5 };
                open.offered_per_s = Some(50.0);
                open.msgs_per_s = 50.0;
                open.loadgen_cpu_us_per_msg = Some(1.5 * lg * d);
                facts.extend([closed, open]);
            }
        }
        let points = point_stats(&facts, "epoll");
        assert_eq!(points.len(), 2);
        assert!(
            points[0].peers.iter().all(|s| s.loadgen_open_over_closed.is_none()),
            "closed loop has none"
        );
        for s in &points[1].peers {
            let r = s
                .loadgen_open_over_closed
                .unwrap_or_else(|| panic!("{}: no ratio", s.label));
            assert!(
                (r.interval.lo - 1.5).abs() < 1e-9 && (r.interval.hi - 1.5).abs() < 1e-9,
                "{r:?}"
            );
            assert_eq!(r.verdict, Verdict::Higher);
        }
    }

    #[test]
    fn matched_load_runs_that_fell_short_are_left_out() {
        let mut facts = Vec::new();
        for rep in 1..=5 {
            for (label, peer, cpu) in [("epoll", EPOLL, 5.0), ("uring", URING, 4.0)] {
                let mut f = fact(label, peer, rep, cpu, 10_000.0, (0.5, 0.4));
                f.key.purpose = Purpose::MatchedLoad { fraction: 0.5 };
                f.offered_per_s = Some(10_000.0);
                if label == "uring" && rep == 2 {
                    f.msgs_per_s = 9_000.0;
                    f.server_cpu_us_per_msg = Some(100.0);
                }
                facts.push(f);
            }
        }
        let p = &point_stats(&facts, "epoll")[0];
        assert_eq!(p.offered_per_s, Some(10_000.0));
        let uring = p.peer("uring").unwrap();
        assert_eq!(uring.runs, 4);
        assert_eq!(uring.fell_short, ["uring-r2"]);
        assert_eq!(
            uring.server_cpu_us_per_msg.unwrap().hi,
            4.0,
            "the short run is not used"
        );
        // 4 pairs: an 87.5% interval, too few for a verdict.
        assert_eq!(uring.ratio_server_cpu.unwrap().verdict, Verdict::TooFewRuns);
        assert_eq!(p.limit, RowLimit::Same(Bottleneck::Neither));
    }

    #[test]
    fn one_run_is_a_value_without_an_interval() {
        let s = Summary::of(&[f64::NAN, 3.5]).unwrap();
        assert_eq!((s.mid, s.level, s.n), (3.5, None, 1));
        assert_eq!(s.text(2), "3.50 (1 run)");
        assert_eq!(Summary::of(&[1.0, 2.0, 3.0]).unwrap().text(1), "2.0 [1.0, 3.0]");
        assert_eq!(Summary::of(&[]), None);
    }
}

/// Issue 24: conversation points carry their per-connection figures, with a
/// paired ratio of server CPU per connection; switches are summarised per
/// unit and a lower bound is marked.
#[cfg(test)]
mod conversation_tests {
    use super::tests::fact;
    use super::*;
    use sockbench::server::BackendKind;

    fn conv_fact(label: &str, peer: Peer, rep: u32, cpu_per_conn: f64, gone: bool) -> RunFacts {
        let mut f = fact(label, peer, rep, cpu_per_conn / 10.0, 100_000.0, (0.5, 0.99));
        f.key.conn_msgs = Some(10);
        let switches = SwitchFacts {
            voluntary: Some(cpu_per_conn / 10.0),
            involuntary: Some(0.5),
            syscalls: None,
            lower_bound: gone,
        };
        f.switches = switches;
        f.conv = Some(ConvFacts {
            conns_per_s: 10_000.0 + rep as f64,
            server_cpu_us_per_conn: Some(cpu_per_conn * (1.0 + 0.01 * rep as f64)),
            loadgen_cpu_us_per_conn: Some(40.0),
            p50_us: 90.0,
            p99_us: 300.0,
            failed: 1,
            switches,
        });
        f
    }

    #[test]
    fn conversation_points_compare_cpu_per_connection() {
        let fork = Peer::Backend(BackendKind::Fork);
        let epoll = Peer::Backend(BackendKind::Epoll);
        let mut facts = Vec::new();
        for rep in 1..=5 {
            facts.push(conv_fact("epoll", epoll, rep, 30.0, false));
            facts.push(conv_fact("fork", fork, rep, 230.0, true));
        }
        // A message point beside it is a point of its own.
        facts.push(fact("epoll", epoll, 1, 2.0, 100_000.0, (0.5, 0.5)));
        let points = point_stats(&facts, "epoll");
        assert_eq!(points.len(), 2);
        assert!(points[0].key.conn_msgs.is_none() && points[1].key.conn_msgs == Some(10));
        let at = &points[1];
        let f = at.peer("fork").unwrap().conv.as_ref().unwrap();
        let ratio = f.ratio_server_cpu.unwrap().interval;
        assert!((7.0..8.0).contains(&ratio.mid), "{ratio:?}");
        assert_eq!(f.failed, 5);
        assert_eq!(f.conns_per_s.unwrap().n, 5);
        assert!(f.switches_per_conn.lower_bound);
        assert_eq!(f.switches_per_conn.voluntary.unwrap().mid, 23.0);
        let e = at.peer("epoll").unwrap();
        assert!(
            e.conv.as_ref().unwrap().ratio_server_cpu.is_none(),
            "no ratio to itself"
        );
        assert!(!e.switches_per_msg.lower_bound);
        assert!(points[0].peers[0].conv.is_none());
    }
}
