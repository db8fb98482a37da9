//! A connection per conversation (issue 24): every backend, over TCP and
//! Unix streams, serves thousands of short conversations (connect, one
//! checked echo, close) and is back where it started afterwards: the same
//! descriptors, threads and child processes, and about the same memory.
//!
//! The baseline is taken after a warm-up of conversations, so that what a
//! backend allocates once (buffer rings, a thread pool's stacks, malloc's
//! arenas) is in it; what grows after that grows per connection, and a
//! leak of even one descriptor or one thread per 1,000 connections shows.
//! Bounded: 2,000 conversations per backend and transport, 4 clients at
//! once, each echo under a 5 s socket timeout.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::client::{pattern, Stream};
use common::*;

/// Conversations before the baseline is taken.
const WARMUP: u64 = 200;
/// Conversations measured against the baseline.
const CONVERSATIONS: u64 = 2_000;
/// Clients conversing at once.
const CLIENTS: u64 = 4;
/// Resident memory may grow this much over the baseline (allocator slack,
/// pages touched for the first time by a later connection), and no more:
/// a leak of 1 KiB per connection is 2 MiB here.
const RSS_SLACK_KIB: u64 = 1536;

/// What the server holds, as /proc shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Holdings {
    fds: usize,
    /// Threads, without io_uring's own workers (`iou-wrk-*`, `iou-sqp-*`),
    /// which the kernel starts and retires on its own schedule.
    threads: usize,
    /// Child processes, live or zombie.
    children: usize,
}

fn holdings(pid: u32) -> Holdings {
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter(|t| {
                    let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
                    !comm.starts_with("iou-")
                })
                .count()
        })
        .unwrap_or(0);
    Holdings {
        fds: sockbench::procfs::fd_count(pid).expect("read the server's /proc/PID/fd"),
        threads,
        children: sockbench::procfs::children(pid).len(),
    }
}

fn rss_kib(pid: u32) -> u64 {
    sockbench::procfs::status_kib(pid, "VmRSS").expect("read the server's VmRSS")
}

/// Runs `count` conversations of one echo each, `CLIENTS` at a time; each
/// one connects, echoes a checked 128-byte message and closes first.
fn converse(endpoint: &Endpoint, first_id: u64, count: u64) {
    let handles: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let endpoint = endpoint.clone();
            thread::spawn(move || -> Result<u64, String> {
                let mut done = 0;
                for i in (c..count).step_by(CLIENTS as usize) {
                    let id = first_id + i;
                    let mut conn = Stream::connect(&endpoint).map_err(|e| format!("connect {id}: {e}"))?;
                    conn.set_timeouts(Some(Duration::from_secs(5)))
                        .map_err(|e| e.to_string())?;
                    let msg = pattern(id, 0, 128);
                    let back = conn.echo(&msg).map_err(|e| format!("echo {id}: {e}"))?;
                    if back != msg {
                        return Err(format!("conversation {id}: the echo differs"));
                    }
                    done += 1;
                }
                Ok(done)
            })
        })
        .collect();
    assert_eq!(join_clients(handles, "conversation"), count);
}

/// Waits (up to 5 s) for the server to hold what it held at `base`.
fn settle(pid: u32, base: Holdings) -> Holdings {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = holdings(pid);
        if now == base || Instant::now() > deadline {
            return now;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The least the server holds over half a second: a warm-up connection
/// still closing (its descriptor, a fork child exiting) is not the baseline.
fn baseline(pid: u32) -> Holdings {
    let mut least = holdings(pid);
    for _ in 0..10 {
        thread::sleep(Duration::from_millis(50));
        let now = holdings(pid);
        least = Holdings {
            fds: least.fds.min(now.fds),
            threads: least.threads.min(now.threads),
            children: least.children.min(now.children),
        };
    }
    least
}

fn no_leak_after_conversations(backend: &str, target: Target) {
    // io_uring receives into a ring of provided buffers that it hands out
    // in turn, so each buffer is touched once before the ring wraps: a
    // ring smaller than the warm-up keeps that first touch out of the
    // comparison (the default 4,096 buffers would add 4 KiB per
    // conversation until the ring wraps, which is not a leak).
    let extra: &[&str] = match backend {
        "uring" => &["--threads", "1", "--buf-count", "64"],
        _ => &["--threads", "1"],
    };
    let server = ServerProc::start(backend, target, extra);
    let pid = server.pid();
    converse(&server.endpoint, 0, WARMUP);
    let base = baseline(pid);
    assert_eq!(
        base.children, 0,
        "{backend}/{target:?}: children left after the warm-up"
    );
    let rss_base = rss_kib(pid);
    converse(&server.endpoint, WARMUP, CONVERSATIONS);
    let after = settle(pid, base);
    let rss_after = rss_kib(pid);
    assert_eq!(
        after, base,
        "{backend}/{target:?}: after {CONVERSATIONS} conversations the server holds {after:?}, not {base:?}"
    );
    assert!(
        rss_after <= rss_base + RSS_SLACK_KIB,
        "{backend}/{target:?}: resident memory grew from {rss_base} KiB to {rss_after} KiB over {CONVERSATIONS} conversations"
    );
    let stopped = server.stop();
    assert!(
        stopped.status.success(),
        "{backend}/{target:?}: server exit {:?}",
        stopped.status
    );
}

macro_rules! conversation_matrix {
    ($($backend:ident),* $(,)?) => {$(
        mod $backend {
            use super::*;
            #[test]
            fn tcp4_no_leak() { no_leak_after_conversations(stringify!($backend), Target::Tcp4); }
            #[test]
            fn unix_no_leak() { no_leak_after_conversations(stringify!($backend), Target::Unix); }
        }
    )*};
}

conversation_matrix!(fork, threadpool, epoll, uring);
