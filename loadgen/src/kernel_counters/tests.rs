//! The parsers on text captured from the project's VM (kernel 6.18, 2 CPUs):
//! `samples/netstat`, `samples/snmp` and `samples/softnet_stat` are `cat`s
//! of the /proc files, unedited.

use super::*;

const NETSTAT: &str = include_str!("samples/netstat");
const SNMP: &str = include_str!("samples/snmp");
const SOFTNET: &str = include_str!("samples/softnet_stat");

/// A `/proc`-like directory holding the samples (and the backlog sysctl).
fn proc_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (rel, text) in files {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

#[test]
fn netstat_tcpext_fields_are_read_by_name() {
    let t = Table::of(NETSTAT, "TcpExt").unwrap();
    assert_eq!(t.get("TCPTimeouts"), Some(5619));
    assert_eq!(t.get("TCPLossProbes"), Some(109_586));
    assert_eq!(t.get("TCPSynRetrans"), Some(3189));
    assert_eq!(t.get("ListenOverflows"), Some(23_733));
    assert_eq!(t.get("ListenDrops"), Some(23_733));
    assert_eq!(t.get("TCPBacklogDrop"), Some(0));
    assert_eq!(t.get("TCPRcvQDrop"), Some(0));
    assert_eq!(t.get("TCPTimeWaitOverflow"), Some(12_190_604));
    assert_eq!(t.get("NoSuchCounter"), None);
    // The last section's fields are found too, and a prefix is not a section:
    // "Tcp" is not "TcpExt", nor "IpExt" "Ip".
    assert_eq!(Table::of(NETSTAT, "MPTcpExt").unwrap().get("WinProbe"), Some(0));
    assert!(Table::of(NETSTAT, "Tcp").is_none());
    assert!(Table::of(NETSTAT, "Ip").is_none());
}

#[test]
fn snmp_tcp_retrans_segs_is_read_and_a_negative_field_is_none() {
    let t = Table::of(SNMP, "Tcp").unwrap();
    assert_eq!(t.get("RetransSegs"), Some(115_195));
    assert_eq!(t.get("RtoMin"), Some(200));
    // MaxConn is -1 ("no limit"): not a count.
    assert_eq!(t.get("MaxConn"), None);
}

#[test]
fn softnet_drops_are_column_two_in_hex_summed_over_cpus() {
    // 0x0014aa88 + 0x0005fd13.
    assert_eq!(softnet_dropped(SOFTNET), Some(1_354_376 + 392_467));
    // Older kernels print fewer columns; the second is still `dropped`.
    assert_eq!(
        softnet_dropped("00000010 000000ff 00000000\n00000001 00000001 0\n"),
        Some(256)
    );
    // Nothing to sum, or a line without the column, or not hex: unknown, not 0.
    assert_eq!(softnet_dropped(""), None);
    assert_eq!(softnet_dropped("00000010\n"), None);
    assert_eq!(softnet_dropped("00000010 zz 0\n"), None);
}

#[test]
fn a_snapshot_reads_every_file_and_what_is_missing_is_none() {
    let full = proc_dir(&[
        ("net/netstat", NETSTAT),
        ("net/snmp", SNMP),
        ("net/softnet_stat", SOFTNET),
        ("sys/net/core/netdev_max_backlog", "1000\n"),
    ]);
    let s = Snapshot::read_from(full.path());
    assert_eq!(
        s,
        Snapshot {
            tcp_timeouts: Some(5619),
            tcp_loss_probes: Some(109_586),
            syn_retrans: Some(3189),
            listen_overflows: Some(23_733),
            listen_drops: Some(23_733),
            backlog_drops: Some(0),
            rcvq_drops: Some(0),
            time_wait_overflows: Some(12_190_604),
            retrans_segs: Some(115_195),
            softnet_dropped: Some(1_746_843),
            netdev_max_backlog: Some(1000),
        }
    );
    // No files at all (no /proc, or another OS): every counter unknown, no failure.
    let empty = proc_dir(&[]);
    assert_eq!(Snapshot::read_from(empty.path()), Snapshot::default());
    // A kernel without some fields (TCPRcvQDrop came in 5.x) and no sysctl
    // (a network namespace other than the first): those alone are None.
    let old_netstat = "TcpExt: ListenOverflows ListenDrops TCPTimeouts\nTcpExt: 1 2 3\n";
    let partial = proc_dir(&[("net/netstat", old_netstat), ("net/softnet_stat", SOFTNET)]);
    let p = Snapshot::read_from(partial.path());
    assert_eq!(
        (p.listen_overflows, p.listen_drops, p.tcp_timeouts),
        (Some(1), Some(2), Some(3))
    );
    assert_eq!((p.rcvq_drops, p.syn_retrans, p.retrans_segs), (None, None, None));
    assert_eq!((p.softnet_dropped, p.netdev_max_backlog), (Some(1_746_843), None));
    // A names line with no values line after it: the section is unknown.
    let cut = proc_dir(&[("net/netstat", "TcpExt: TCPTimeouts\nIpExt: InNoRoutes\nIpExt: 0\n")]);
    assert_eq!(Snapshot::read_from(cut.path()).tcp_timeouts, None);
}

#[test]
fn the_delta_is_each_counters_growth_and_unknown_where_either_end_is() {
    let start = Snapshot {
        tcp_timeouts: Some(10),
        retrans_segs: Some(100),
        softnet_dropped: Some(5_000),
        syn_retrans: Some(7),
        netdev_max_backlog: Some(1000),
        ..Snapshot::default()
    };
    let end = Snapshot {
        tcp_timeouts: Some(24),
        retrans_segs: Some(150),
        // A per-CPU u32 wrapped: 0, not a huge count.
        softnet_dropped: Some(4_000),
        syn_retrans: None,
        tcp_loss_probes: Some(3),
        netdev_max_backlog: Some(2000),
        ..Snapshot::default()
    };
    let d = start.until(&end);
    assert_eq!(
        (d.tcp_rto, d.tcp_retrans_segs, d.softnet_dropped),
        (Some(14), Some(50), Some(0))
    );
    // Missing at the end, or at the start: unknown.
    assert_eq!((d.syn_retrans, d.tcp_loss_probes), (None, None));
    // The backlog's length is the one at the end.
    assert_eq!(d.netdev_max_backlog, Some(2000));
    assert_eq!(d.scope, SCOPE);
    assert!(d.saw_loss());
    let quiet = start.until(&start);
    assert_eq!(quiet.tcp_rto, Some(0));
    assert!(!quiet.saw_loss());
    // Loss probes and resent segments alone are no loss worth a line.
    let probes = KernelCounters {
        tcp_loss_probes: Some(4),
        tcp_retrans_segs: Some(4),
        ..KernelCounters::default()
    };
    assert!(!probes.saw_loss());
}

#[test]
fn this_machines_counters_are_read() {
    // Every Linux since 2.6 has TcpExt in /proc/net/netstat, Tcp in
    // /proc/net/snmp and /proc/net/softnet_stat.
    let s = Snapshot::take();
    assert!(s.tcp_timeouts.is_some() && s.time_wait_overflows.is_some(), "{s:?}");
    assert!(s.retrans_segs.is_some() && s.softnet_dropped.is_some(), "{s:?}");
}
