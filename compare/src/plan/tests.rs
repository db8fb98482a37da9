//! The plan's unit tests: specs and their on-disk forms, the peer grammar,
//! argv, matched rates.

use std::path::Path;
use std::time::Duration;

use sockbench::cpu::CpuList;
use sockbench::net::Transport;
use sockbench::server::BackendKind;

use super::*;

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
        conn_msgs: None,
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
    let onewait = plan.spec(
        &"uring@onewait:uring-wait=one".parse().unwrap(),
        tcp,
        Purpose::Peak,
        None,
    );
    let argv = onewait
        .server_argv(Path::new("server"), Path::new("unused"), &cpus)
        .join(" ");
    assert!(
        argv.starts_with("server --backend uring ") && argv.ends_with("--uring-wait one"),
        "{argv}"
    );
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
        conn_msgs: None,
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
    let m = matched_rates(shape, &closed, &[0.25, 0.5, 0.75]);
    let lowest = m.lowest.clone().unwrap();
    assert_eq!(
        (lowest.label.as_str(), lowest.msgs_per_s, lowest.runs),
        ("fork", 110_000.0, 3)
    );
    let rates: Vec<f64> = m.rates.iter().map(|r| r.msgs_per_s).collect();
    assert_eq!(rates, [27_500.0, 55_000.0, 82_500.0]);
    assert!(matched_rates(shape, &[], &MATCHED_FRACTIONS).rates.is_empty());
    let half = matched_rates(shape, &closed, &MATCHED_FRACTIONS);
    assert_eq!(half.rates.iter().map(|r| r.msgs_per_s).collect::<Vec<_>>(), [55_000.0]);
}

/// Issue 29, item 14: uring knobs the server would refuse at start fail at
/// planning, naming the knob's flag.
#[test]
fn knobs_the_server_refuses_are_refused_at_planning() {
    for (bad, flag) in [
        ("uring@a:buf-count=3", "--buf-count"),
        ("uring@a:ring-entries=2", "--ring-entries"),
        ("uring@a:buf-size=1", "--buf-size"),
        ("uring@a:uring-min-wait=10001", "--uring-min-wait"),
        ("uring@a:uring-wait=quiet:uring-min-wait=50", "--uring-min-wait"),
    ] {
        let err = bad.parse::<PeerEntry>().unwrap_err();
        assert!(err.contains(flag) && err.contains(bad), "{bad}: {err}");
    }
    for good in [
        "uring@a:buf-count=256:buf-size=4096:ring-entries=8",
        "uring@a:uring-min-wait=10000",
        "uring@a:uring-wait=quiet",
    ] {
        assert!(good.parse::<PeerEntry>().is_ok(), "{good} refused");
    }
}

/// Issue 24, item 3: `--axis conversations` alone, its points, its sweep
/// and its time (the committed run of it took 17.4 minutes).
#[test]
fn the_conversation_axis_runs_alone_in_about_eighteen_minutes() {
    let plan = |axis, conn_msgs: Option<Vec<u64>>| {
        Comparison::from_request(&Request {
            axis,
            conn_msgs,
            ..Request::default()
        })
        .unwrap()
    };
    let conv = plan(Some(Axis::Conversations), None);
    let m = &conv.matrix;
    assert!(m.points.iter().all(|p| p.transport.is_stream() && p.size_bytes == 128));
    let shapes: Vec<(&str, u64, u64)> = m
        .points
        .iter()
        .map(|p| (p.transport.name(), p.conn_msgs.unwrap(), p.conns))
        .collect();
    assert_eq!(shapes.len(), 18);
    assert_eq!(
        &shapes[..4],
        [("tcp", 1, 1), ("tcp", 1, 100), ("tcp", 1, 1000), ("tcp", 10, 1)]
    );
    assert_eq!(shapes[17], ("unix", 100, 1000));
    let matched: Vec<(&str, Option<u64>, u64)> = m
        .matched_points
        .iter()
        .map(|p| (p.transport.name(), p.conn_msgs, p.conns))
        .collect();
    assert_eq!(matched, [("tcp", Some(1), 100), ("unix", Some(1), 100)]);
    assert_eq!(m.fractions, CONV_MATCHED_FRACTIONS);
    // 5 peers × 5 repetitions × (18 closed-loop points + 2 matched points × 1 rate).
    assert_eq!(conv.total_runs(), 500);
    let minutes = conv.estimated_duration().as_secs_f64() / 60.0;
    assert!((17.0..=19.0).contains(&minutes), "{minutes:.1} min");
    // --conn-msgs alone selects the axis; the default full run is both axes.
    let some = plan(None, Some(vec![10, 1]));
    assert_eq!(some.matrix.points.len(), 12);
    assert!(some.matrix.points.iter().all(|p| p.conn_msgs.is_some()));
    let messages = plan(Some(Axis::Messages), None);
    assert!(messages.matrix.points.iter().all(|p| p.conn_msgs.is_none()));
    let all = plan(Some(Axis::All), None);
    assert_eq!(all.matrix.points.len(), messages.matrix.points.len() + 18);
    assert_eq!(
        all.matrix.matched_points.len(),
        messages.matrix.matched_points.len() + 2
    );
    let default = plan(None, None);
    assert_eq!(default.matrix.points, all.matrix.points);
    assert_eq!(default.matrix.matched_points, all.matrix.matched_points);
}

#[test]
fn conversation_runs_pass_conn_msgs_and_leave_room_for_a_second_generation() {
    let mut plan = MatrixPlan::new(false, None, Some(vec![Transport::Tcp]), 1);
    plan.add_conversations(true, &[Transport::Tcp, Transport::Udp], &[100], &[10]);
    assert_eq!(plan.points.len(), 1, "udp has no conversations");
    let shape = plan.points[0];
    let fork = plan.spec(
        &PeerEntry::plain(Peer::Backend(BackendKind::Fork)),
        shape,
        Purpose::Peak,
        None,
    );
    assert_eq!(fork.name(), "closed-fork-tcp-c100-s128-m10");
    assert_eq!(fork.server_max_conns, Some(216));
    let timing = Timing {
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(300),
        connect_rate: 20_000,
    };
    let cpus: CpuList = "1".parse().unwrap();
    let matched = plan.spec(
        &PeerEntry::plain(Peer::Tokio),
        shape,
        Purpose::MatchedLoad { fraction: 0.5 },
        Some(4000.0),
    );
    let lg = matched
        .loadgen_argv(Path::new("loadgen"), "x:1", &timing, &cpus, "f.json")
        .join(" ");
    assert!(lg.contains(" --conn-msgs 10 --rate 4000 "), "{lg}");
    // Older manifests have no conn_msgs: the spec reads back the same.
    let json = serde_json::to_string(&fork).unwrap();
    assert!(json.contains("\"conn_msgs\":10"));
    assert_eq!(serde_json::from_str::<RunSpec>(&json).unwrap(), fork);
    let old = serde_json::to_string(&plan.spec(
        &PeerEntry::plain(Peer::Tokio),
        PointShape {
            conn_msgs: None,
            ..shape
        },
        Purpose::Peak,
        None,
    ))
    .unwrap();
    assert!(!old.contains("conn_msgs"));
    assert!(Comparison::from_request(&Request {
        conn_msgs: Some(vec![0]),
        ..Request::default()
    })
    .is_err());
    assert!(Comparison::from_request(&Request {
        axis: Some(Axis::Conversations),
        transports: Some(vec![Transport::Udp]),
        ..Request::default()
    })
    .is_err());
}

/// Issue 25: `compare --conns 100000 --peers epoll,uring --axis messages
/// --transports tcp` plans runs that can hold 100,000 connections under a
/// hard descriptor limit of 20,000: the server gets a descriptor table (an
/// epoll event loop) or a fixed file table (a uring ring) per 20,000, with
/// --max-conns past its default; loadgen a table per thread, 8 source
/// addresses and a 5 s --timeout; a peer held to one table is scaled down
/// with a note. Planned only: nothing runs at this scale in a test.
#[test]
fn a_hundred_thousand_connections_get_the_tables_and_addresses_they_need() {
    let request = |peers: &str| Request {
        peers: Some(peers.split(',').map(|p| p.parse().unwrap()).collect()),
        axis: Some(Axis::Messages),
        transports: Some(vec![Transport::Tcp]),
        conns: Some(vec![100_000]),
        ..Request::default()
    };
    let mut plan = Comparison::from_request(&request("epoll,uring,tokio")).unwrap();
    // This machine's figures, fixed: 1 server CPU, 1 loadgen CPU, `ulimit -Hn` 20,000.
    plan.matrix.server_cores = 1;
    plan.matrix.loadgen_cores = 1;
    plan.matrix.fd_limit = 20_000;
    assert!(plan.matrix.matched_points.is_empty());
    let runs = plan.closed_loop(1);
    assert_eq!(runs.len(), 3);
    let of = |label: &str| runs.iter().find(|r| r.label == label).unwrap();
    let timing = plan.timing;
    let cpus: CpuList = "0".parse().unwrap();
    let argv = |r: &RunSpec| {
        (
            r.server_argv(Path::new("server"), Path::new("unused"), &cpus).join(" "),
            r.loadgen_argv(
                Path::new("loadgen"),
                "127.0.0.1:9",
                &timing,
                &"1".parse().unwrap(),
                "f.json",
            )
            .join(" "),
        )
    };
    // epoll: 6 event loops of 20,000 - (64 + 4 × 6) descriptors each = 119,472 ≥ 100,016.
    let epoll = of("epoll");
    assert_eq!(
        (epoll.conns, epoll.server_threads, epoll.server_max_conns),
        (100_000, 6, Some(100_016))
    );
    let (server, loadgen) = argv(epoll);
    assert!(server.contains("--threads 6 --pin 0 --max-conns 100016"), "{server}");
    assert!(
        loadgen.contains("--conns 100000 ")
            && loadgen.contains("--threads 6 --pin 1 ")
            && loadgen.contains("--timeout 5000ms --local-addrs 127.0.0.1-127.0.0.8 "),
        "{loadgen}"
    );
    // uring: 6 rings of 20,000 fixed files = 120,000 ≥ 100,016 (5 hold 100,000 exactly, no room).
    let uring = of("uring");
    assert_eq!(
        (uring.conns, uring.server_threads, uring.server_max_conns),
        (100_000, 6, Some(100_016))
    );
    assert_eq!(uring.note, None);
    // tokio-echo holds one table: scaled down, with a note that says why.
    let tokio = of("tokio");
    assert_eq!(tokio.conns, 19_936);
    assert!(
        tokio.note.as_deref().unwrap().contains("one descriptor table"),
        "{:?}",
        tokio.note
    );
    let notes = plan.notes().join("\n");
    assert!(
        notes.contains("epoll over tcp at 100000 connections: --threads 6 on 1 CPU(s)"),
        "{notes}"
    );
    assert!(
        notes.contains("loadgen over tcp at 100000 connections: --threads 6"),
        "{notes}"
    );
    assert!(
        notes.contains("tokio over tcp: scaled down from 100000 to 19936"),
        "{notes}"
    );
    // The fullest table: tokio-echo's, 19,936 connections and its 64.
    assert_eq!(plan.fds_needed(), 20_000);
    // uring without fixed files keeps one table too.
    let mut plain = Comparison::from_request(&request("uring@nofixed:uring-fixed-files=off")).unwrap();
    plain.matrix.server_cores = 1;
    plain.matrix.fd_limit = 20_000;
    let nofixed = &plain.closed_loop(1)[0];
    assert_eq!((nofixed.conns, nofixed.server_threads), (20_000 - 68, 1));
    // The default matrix is untouched: 10,000 connections fit one table.
    let mut full = Comparison::from_request(&Request::default()).unwrap();
    full.matrix.server_cores = 1;
    full.matrix.fd_limit = 20_000;
    for r in full.closed_loop(1) {
        assert_eq!(
            r.server_threads,
            if r.label == "threadpool" && r.transport.is_stream() {
                r.conns
            } else {
                1
            },
            "{}",
            r.name()
        );
        assert_eq!(
            (r.loadgen_threads, r.local_addrs.as_deref(), r.timeout_ms),
            (None, None, None),
            "{}",
            r.name()
        );
    }
}
