//! The kernel's own count of lost packets and retransmissions, read before
//! and after the measured phase, so that a run whose echoes waited on TCP's
//! retransmission timer says so.
//!
//! Why: on loopback the sending CPU queues every packet on its own input
//! backlog (`netif_rx`), and a burst longer than `net.core.netdev_max_backlog`
//! (1,000 by default) is dropped there. Unless a loss probe brings it back
//! sooner, a dropped segment is resent when the retransmission timer fires:
//! never under 200 ms (`RtoMin`), 1 s on a connection with no round trip
//! measured yet, 3 s after a retried handshake, doubling on each further loss.
//! Its echo takes that long, and loadgen counts timeouts that no server
//! caused. loadgen cannot see the drop itself; the kernel counts it, and this
//! module reads the counts.
//!
//! What it reads, each cheaply (a few small text files, no syscall per
//! connection), and each optional: a file or field this kernel does not have
//! is `None`, never an error, since the run itself does not depend on it.
//! - `/proc/net/netstat`, `TcpExt:` (loadgen's network namespace): the
//!   retransmission timer (`TCPTimeouts`), tail-loss probes, SYN retransmits,
//!   listen-queue overflows and drops, socket backlog and receive-queue
//!   drops, and `TIME_WAIT` table overflows.
//! - `/proc/net/snmp`, `Tcp: RetransSegs` (the namespace): segments resent.
//! - `/proc/net/softnet_stat` (the whole machine: the per-CPU backlogs are not
//!   the namespace's): column 2, in hex, the packets each CPU's input backlog
//!   dropped, summed over the CPUs.
//! - `/proc/sys/net/core/netdev_max_backlog` (the whole machine): the
//!   backlog's length. The kernel shows it in the initial network namespace
//!   only, so in another one it is `None`.
//!
//! The delta over the measured phase is [`KernelCounters`], `extra.kernel`
//! of the result file (docs/formats.md).

use std::path::Path;

use serde::{Deserialize, Serialize};

/// What `extra.kernel.scope` says: which counters are whose.
pub const SCOPE: &str = "tcp_rto, tcp_retrans_segs, tcp_loss_probes, syn_retrans, listen_overflows, listen_drops, \
                         backlog_drops, rcvq_drops: loadgen's network namespace; softnet_dropped, \
                         netdev_max_backlog: the whole machine";

/// One reading of the counters, as the kernel keeps them (totals since boot,
/// or since the namespace was created).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// `TcpExt: TCPTimeouts`: the retransmission timer fired (RTO).
    pub tcp_timeouts: Option<u64>,
    /// `TcpExt: TCPLossProbes`: tail-loss probes sent (resends before the RTO).
    pub tcp_loss_probes: Option<u64>,
    /// `TcpExt: TCPSynRetrans`: SYNs and SYN-ACKs resent.
    pub syn_retrans: Option<u64>,
    /// `TcpExt: ListenOverflows`: handshakes completed into a full accept queue.
    pub listen_overflows: Option<u64>,
    /// `TcpExt: ListenDrops`: SYNs and handshakes a listener dropped (overflows included).
    pub listen_drops: Option<u64>,
    /// `TcpExt: TCPBacklogDrop`: segments dropped because a socket's backlog was full.
    pub backlog_drops: Option<u64>,
    /// `TcpExt: TCPRcvQDrop`: segments dropped for want of receive memory.
    pub rcvq_drops: Option<u64>,
    /// `TcpExt: TCPTimeWaitOverflow`: closes that left no `TIME_WAIT` socket (table full).
    pub time_wait_overflows: Option<u64>,
    /// `Tcp: RetransSegs` of /proc/net/snmp: segments resent, by any means.
    pub retrans_segs: Option<u64>,
    /// /proc/net/softnet_stat: packets dropped at the CPUs' input backlogs, summed.
    pub softnet_dropped: Option<u64>,
    /// `net.core.netdev_max_backlog`.
    pub netdev_max_backlog: Option<u64>,
}

impl Snapshot {
    /// Reads the counters now, from `/proc`.
    pub fn take() -> Snapshot {
        Snapshot::read_from(Path::new("/proc"))
    }

    /// Reads the counters from a `/proc`-like directory (tests give their own).
    pub fn read_from(proc_root: &Path) -> Snapshot {
        let read = |rel: &str| std::fs::read_to_string(proc_root.join(rel)).ok();
        let mut s = Snapshot::default();
        if let Some(tcp_ext) = read("net/netstat").as_deref().and_then(|t| Table::of(t, "TcpExt")) {
            s.tcp_timeouts = tcp_ext.get("TCPTimeouts");
            s.tcp_loss_probes = tcp_ext.get("TCPLossProbes");
            s.syn_retrans = tcp_ext.get("TCPSynRetrans");
            s.listen_overflows = tcp_ext.get("ListenOverflows");
            s.listen_drops = tcp_ext.get("ListenDrops");
            s.backlog_drops = tcp_ext.get("TCPBacklogDrop");
            s.rcvq_drops = tcp_ext.get("TCPRcvQDrop");
            s.time_wait_overflows = tcp_ext.get("TCPTimeWaitOverflow");
        }
        s.retrans_segs = read("net/snmp")
            .as_deref()
            .and_then(|t| Table::of(t, "Tcp"))
            .and_then(|tcp| tcp.get("RetransSegs"));
        s.softnet_dropped = read("net/softnet_stat").as_deref().and_then(softnet_dropped);
        s.netdev_max_backlog = read("sys/net/core/netdev_max_backlog").and_then(|t| t.trim().parse().ok());
        s
    }

    /// What happened between this reading and `later`: each counter's
    /// growth (`None` where either reading lacks it), and the backlog's
    /// length as `later` has it.
    pub fn until(&self, later: &Snapshot) -> KernelCounters {
        // The kernel's counters only grow; a smaller later value (a per-CPU
        // u32 of softnet_stat wrapping, a CPU gone offline) reads as 0 rather
        // than as a huge count.
        let grew = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?));
        KernelCounters {
            tcp_rto: grew(self.tcp_timeouts, later.tcp_timeouts),
            tcp_retrans_segs: grew(self.retrans_segs, later.retrans_segs),
            tcp_loss_probes: grew(self.tcp_loss_probes, later.tcp_loss_probes),
            syn_retrans: grew(self.syn_retrans, later.syn_retrans),
            listen_overflows: grew(self.listen_overflows, later.listen_overflows),
            listen_drops: grew(self.listen_drops, later.listen_drops),
            backlog_drops: grew(self.backlog_drops, later.backlog_drops),
            rcvq_drops: grew(self.rcvq_drops, later.rcvq_drops),
            softnet_dropped: grew(self.softnet_dropped, later.softnet_dropped),
            netdev_max_backlog: later.netdev_max_backlog,
            scope: SCOPE.into(),
        }
    }
}

/// `extra.kernel`: the kernel's counters over the measured phase (each the
/// growth from its start to its end; absent where the kernel does not show
/// the counter). [`SCOPE`] says which are loadgen's network namespace's and
/// which the whole machine's: other programs' packets count too.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct KernelCounters {
    /// TCP's retransmission timer fired (`TCPTimeouts`): each time, a segment
    /// waited about 1 s or more (doubling per retry) before it was resent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_rto: Option<u64>,
    /// TCP segments resent, by the timer, a loss probe or fast retransmit (`RetransSegs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_retrans_segs: Option<u64>,
    /// Tail-loss probes sent (`TCPLossProbes`): a resend after about two
    /// round trips with no ACK, before the timer would fire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_loss_probes: Option<u64>,
    /// SYNs and SYN-ACKs resent (`TCPSynRetrans`): a handshake that took 1 s or more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syn_retrans: Option<u64>,
    /// Handshakes that found the accept queue full (`ListenOverflows`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_overflows: Option<u64>,
    /// Connection requests a listener dropped, overflows included (`ListenDrops`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_drops: Option<u64>,
    /// Segments dropped at a busy socket's full backlog (`TCPBacklogDrop`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog_drops: Option<u64>,
    /// Segments dropped for want of receive-buffer memory (`TCPRcvQDrop`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rcvq_drops: Option<u64>,
    /// Packets the CPUs' input backlogs dropped (/proc/net/softnet_stat,
    /// column 2, summed over the CPUs; the whole machine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub softnet_dropped: Option<u64>,
    /// `net.core.netdev_max_backlog` at the end: each CPU's input backlog, in
    /// packets (absent outside the initial network namespace, which alone shows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netdev_max_backlog: Option<u64>,
    /// Which counters are the network namespace's and which the machine's ([`SCOPE`]).
    #[serde(default)]
    pub scope: String,
}

impl KernelCounters {
    /// The timer fired, or packets were lost on the way, in the measured
    /// phase: what the report's `Kernel` line is for. Loss probes and resent
    /// segments alone are not in it: they resend without a wait of a second.
    pub fn saw_loss(&self) -> bool {
        [
            self.tcp_rto,
            self.softnet_dropped,
            self.syn_retrans,
            self.listen_overflows,
            self.listen_drops,
            self.backlog_drops,
            self.rcvq_drops,
        ]
        .into_iter()
        .any(|n| n.unwrap_or(0) > 0)
    }
}

/// One section of /proc/net/netstat or /proc/net/snmp: a line of names and
/// the line of values after it, both starting with `Section:`.
struct Table<'a> {
    names: Vec<&'a str>,
    values: Vec<&'a str>,
}

impl<'a> Table<'a> {
    /// The first `section` of `text` (its names line and the next line with
    /// the same prefix), or `None` if there is none.
    fn of(text: &'a str, section: &str) -> Option<Table<'a>> {
        let mut lines = text.lines().filter_map(|l| l.strip_prefix(section)?.strip_prefix(':'));
        let (names, values) = (lines.next()?, lines.next()?);
        Some(Table {
            names: names.split_whitespace().collect(),
            values: values.split_whitespace().collect(),
        })
    }

    /// The field `name` as a count: `None` if absent or not a number (some,
    /// as `Tcp: MaxConn`, can be -1).
    fn get(&self, name: &str) -> Option<u64> {
        let i = self.names.iter().position(|&n| n == name)?;
        self.values.get(i)?.parse().ok()
    }
}

/// The packets dropped at every CPU's input backlog: column 2 (hex) of each
/// line of /proc/net/softnet_stat, one line per CPU, summed. `None` if a
/// line does not have it (a format this parser does not know) or there is no line.
fn softnet_dropped(text: &str) -> Option<u64> {
    let mut sum: Option<u64> = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let dropped = u32::from_str_radix(line.split_whitespace().nth(1)?, 16).ok()?;
        sum = Some(sum.unwrap_or(0) + u64::from(dropped));
    }
    sum
}

#[cfg(test)]
mod tests;
