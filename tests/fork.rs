//! fork-only behaviour: `--max-conns` caps live children (the next client
//! waits in the backlog and is served once one closes), and children do not
//! outlive a parent that is killed outright.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::client::{pattern, Stream};
use common::{ServerProc, Target};
use sockbench::procfs;

/// Processes in the server's tree besides the server itself.
fn children(pid: u32) -> usize {
    procfs::tree(pid).len().saturating_sub(1)
}

#[test]
fn max_conns_caps_children_and_the_next_client_waits() {
    let server = ServerProc::start("fork", Target::Tcp4, &["--max-conns", "3"]);
    let mut held: Vec<Stream> = (0..3u64)
        .map(|i| {
            let mut c = Stream::connect(&server.endpoint).unwrap();
            let msg = pattern(i, 0, 100);
            assert!(c.echo(&msg).unwrap() == msg);
            c
        })
        .collect();
    // The fourth connects (the kernel's backlog) but is not served while three are open.
    let mut waiting = Stream::connect(&server.endpoint).unwrap();
    waiting.set_timeouts(Some(Duration::from_millis(500))).unwrap();
    let msg = pattern(9, 0, 100);
    assert!(
        waiting.echo(&msg).is_err(),
        "a fourth client was served past --max-conns 3"
    );
    assert_eq!(children(server.pid()), 3, "children past the cap");
    // One closes: the waiting client is accepted and gets its bytes.
    held.pop();
    waiting.set_timeouts(Some(Duration::from_secs(10))).unwrap();
    let mut back = vec![0u8; msg.len()];
    std::io::Read::read_exact(&mut waiting, &mut back).expect("the waiting client was not served after a slot freed");
    assert!(back == msg);
    drop(held);
    drop(waiting);
    let stopped = server.stop();
    assert!(stopped.status.success());
    assert_eq!(stopped.count("accepted"), 4);
}

#[test]
fn children_die_with_a_killed_parent() {
    for target in [Target::Tcp4, Target::Udp4] {
        let server = ServerProc::start("fork", target, &["--threads", "2"]);
        let _conn = (target == Target::Tcp4).then(|| {
            let mut c = Stream::connect(&server.endpoint).unwrap();
            let msg = pattern(1, 0, 10);
            assert!(c.echo(&msg).unwrap() == msg);
            c
        });
        let kids: Vec<u32> = procfs::tree(server.pid())
            .into_iter()
            .filter(|&p| p != server.pid())
            .collect();
        assert!(!kids.is_empty(), "{target:?}: no children to watch");
        drop(server); // SIGKILL, no chance to clean up
        let deadline = Instant::now() + Duration::from_secs(3);
        let alive = |p: &u32| procfs::state(*p).map(|s| s != 'Z').unwrap_or(false);
        while kids.iter().any(alive) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let left: Vec<_> = kids.iter().filter(|p| alive(p)).collect();
        assert!(
            left.is_empty(),
            "{target:?}: children {left:?} outlived their killed parent"
        );
    }
}
