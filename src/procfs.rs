//! What `/proc` says about a process tree: its CPU time, memory and open
//! descriptors. The `compare` runner charges a backend with the CPU of the
//! server's whole tree (the fork backend's children included), and the tests
//! use the same readings to check for leaks.

use std::fs;
use std::io;

/// Clock ticks per second for the `utime`/`stime` fields of `/proc/PID/stat`.
fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// The fields of `/proc/PID/stat` after the command name, which may itself
/// contain spaces and parentheses (so split at the last `)`).
fn stat_fields(pid: u32) -> io::Result<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other("malformed /proc stat"))?;
    Ok(rest.split_whitespace().map(str::to_owned).collect())
}

/// The process's state letter (`R`, `S`, `Z`, ...).
pub fn state(pid: u32) -> io::Result<char> {
    stat_fields(pid)?
        .first()
        .and_then(|s| s.chars().next())
        .ok_or_else(|| io::Error::other("no state"))
}

/// The CPU fields of `/proc/PID/stat`, in microseconds.
struct StatTimes {
    /// utime + stime of the process (all its threads, live and exited).
    own_us: u64,
    /// cutime + cstime: children it has already reaped.
    reaped_children_us: u64,
}

fn stat_times(pid: u32) -> io::Result<StatTimes> {
    let f = stat_fields(pid)?;
    // After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let us = |ticks: u64| ticks * 1_000_000 / ticks_per_second();
    Ok(StatTimes {
        own_us: us(field(11) + field(12)),
        reaped_children_us: us(field(13) + field(14)),
    })
}

/// Time on CPU of one process's live threads, from each thread's
/// `/proc/PID/task/TID/schedstat` (nanoseconds), or its tick-based
/// `utime + stime` when that is larger (it also holds exited threads).
fn live_cpu_us(pid: u32, own_us: u64) -> u64 {
    let mut ns = 0u64;
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(s) = fs::read_to_string(task.path().join("schedstat")) {
                ns += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    (ns / 1_000).max(own_us)
}

/// The direct children of `pid` (from every thread's `children` list).
pub fn children(pid: u32) -> Vec<u32> {
    let mut kids = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return kids;
    };
    for task in tasks.flatten() {
        if let Ok(list) = fs::read_to_string(task.path().join("children")) {
            kids.extend(list.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    kids
}

/// `pid` and all its live descendants.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    // Bounded by the number of processes on the machine: each pid is visited once.
    while i < all.len() {
        for kid in children(all[i]) {
            if !all.contains(&kid) {
                all.push(kid);
            }
        }
        i += 1;
    }
    all
}

/// CPU time of one process's own threads in microseconds, without its children.
pub fn own_cpu_us(pid: u32) -> io::Result<u64> {
    Ok(live_cpu_us(pid, stat_times(pid)?.own_us))
}

/// CPU time of the whole tree rooted at `pid`, in microseconds: every live
/// process's threads, plus the `cutime`/`cstime` of children already reaped.
///
/// Live time comes from per-thread `schedstat` in nanoseconds, not from
/// `utime`/`stime`: those are whole clock ticks per process, so a fork
/// server's children, each using a few milliseconds, would each round down
/// to nothing. A child that exits between listing and reading is in its
/// parent's `cutime` by the next reading.
pub fn tree_cpu_us(pid: u32) -> io::Result<u64> {
    let root = stat_times(pid)?;
    let mut total = root.reaped_children_us + live_cpu_us(pid, root.own_us);
    for p in tree(pid).into_iter().skip(1) {
        if let Ok(st) = stat_times(p) {
            total += st.reaped_children_us + live_cpu_us(p, st.own_us);
        }
    }
    Ok(total)
}

/// A `kB` field of `/proc/PID/status` (e.g. `VmRSS`, `VmHWM`), in KiB.
pub fn status_kib(pid: u32, key: &str) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("no {key} in /proc/{pid}/status")))
}

/// Resident memory of the whole tree in KiB (sum of `VmRSS`; shared pages of
/// forked children are counted once per process, so this is an upper bound).
pub fn tree_rss_kib(pid: u32) -> u64 {
    tree(pid).into_iter().filter_map(|p| status_kib(p, "VmRSS").ok()).sum()
}

/// Open file descriptors of one process.
pub fn fd_count(pid: u32) -> io::Result<usize> {
    Ok(fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(fd_count(me).unwrap() >= 3);
        assert!(status_kib(me, "VmRSS").unwrap() > 0);
        assert!(matches!(state(me).unwrap(), 'R' | 'S'));
        // Burn some CPU and see it counted.
        let before = tree_cpu_us(me).unwrap();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(200) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        assert!(
            tree_cpu_us(me).unwrap() > before,
            "200 ms of spinning did not show as CPU time"
        );
    }

    #[test]
    fn tree_includes_children() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let t = tree(std::process::id());
        assert!(t.contains(&child.id()), "{t:?} lacks child {}", child.id());
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
