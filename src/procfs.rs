//! What `/proc` says about a process tree: its CPU time, memory and open
//! descriptors. The `compare` runner charges a backend with the CPU of the
//! server's whole tree (the fork backend's children included), and the tests
//! use the same readings to check for leaks.

use std::collections::HashMap;
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

/// Threads on the whole machine right now (the total after the `/` in the
/// fourth field of `/proc/loadavg`), which count against `kernel.threads-max`
/// and `kernel.pid_max`.
pub fn threads_on_machine() -> Option<u64> {
    let loadavg = fs::read_to_string("/proc/loadavg").ok()?;
    loadavg.split_whitespace().nth(3)?.split_once('/')?.1.parse().ok()
}

/// `MemAvailable` from `/proc/meminfo`, in bytes.
pub fn mem_available_bytes() -> Option<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `PF_KTHREAD` in the `flags` field of `/proc/PID/stat`: a kernel thread.
const PF_KTHREAD: u64 = 0x0020_0000;

/// The CPU time of every user-space process outside one tree, at one instant.
///
/// Two censuses bracket a measured window, and [`OthersCpu::since`] is the
/// CPU that other processes used in it: a build, a test run or a second
/// benchmark sharing the machine (as far as this `/proc` can see: not other
/// containers or virtual machines). Tick-based (`utime + stime`, plus
/// `cutime + cstime`, so that a short-lived process shows in the parent that
/// reaped it), which is fine for noticing a disturbance. Kernel threads are
/// left out: softirq and kworker time is part of the load itself.
#[derive(Clone, Debug, Default)]
pub struct OthersCpu {
    /// Per user-space process, keyed by pid and start time (a reused pid is a
    /// new process): its CPU time and that of its reaped children, µs, and
    /// whether it was outside the tree. The tree's own processes are kept
    /// too, so that one leaving the tree (a dead server's orphaned children)
    /// is measured from its earlier figure, not from zero.
    by_process: HashMap<(u32, u64), Seen>,
}

#[derive(Clone, Copy, Debug)]
struct Seen {
    cpu_us: u64,
    outside: bool,
}

impl OthersCpu {
    /// Every process except kernel threads; those of `root`'s tree are kept
    /// apart and never counted.
    pub fn census(root: u32) -> OthersCpu {
        let mut procs = Vec::new();
        if let Ok(dir) = fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                    continue;
                };
                if let Ok(f) = stat_fields(pid) {
                    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                    // After the name: ppid(1) flags(6) utime(11)..cstime(14) starttime(19).
                    if field(6) & PF_KTHREAD != 0 {
                        continue;
                    }
                    let cpu_us = (field(11) + field(12) + field(13) + field(14)) * 1_000_000 / ticks_per_second();
                    procs.push((pid, field(1) as u32, field(19), cpu_us));
                }
            }
        }
        let parent: HashMap<u32, u32> = procs.iter().map(|&(pid, ppid, ..)| (pid, ppid)).collect();
        // Bounded: a parent chain is at most as long as the process list.
        let in_tree = |mut pid: u32| {
            for _ in 0..=procs.len() {
                if pid == root {
                    return true;
                }
                match parent.get(&pid) {
                    Some(&ppid) if ppid != 0 && ppid != pid => pid = ppid,
                    _ => return false,
                }
            }
            false
        };
        let by_process = procs
            .iter()
            .map(|&(pid, _, start, cpu_us)| {
                let outside = !in_tree(pid);
                ((pid, start), Seen { cpu_us, outside })
            })
            .collect();
        OthersCpu { by_process }
    }

    /// CPU time, µs, that processes outside the tree used between `earlier`
    /// and this census: the growth of each one seen in both (or all of one
    /// that started in between). An outside process that ended in between is
    /// in its reaper's `cutime` with its whole life, so what it had used
    /// before `earlier` is taken off again.
    pub fn since(&self, earlier: &OthersCpu) -> u64 {
        let grown: u64 = self
            .by_process
            .iter()
            .filter(|(_, now)| now.outside)
            .map(|(key, now)| {
                let before = earlier.by_process.get(key).map_or(0, |e| e.cpu_us);
                now.cpu_us.saturating_sub(before)
            })
            .sum();
        let ended_before: u64 = earlier
            .by_process
            .iter()
            .filter(|(key, e)| e.outside && !self.by_process.contains_key(*key))
            .map(|(_, e)| e.cpu_us)
            .sum();
        grown.saturating_sub(ended_before)
    }
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

    /// The CPU time the census holds for `pid`, µs, if it counts that process.
    fn counted(census: &OthersCpu, pid: u32) -> Option<u64> {
        census
            .by_process
            .iter()
            .find(|((p, _), seen)| *p == pid && seen.outside)
            .map(|(_, seen)| seen.cpu_us)
    }

    /// Kills a process when the test ends, however it ends.
    struct KillOnDrop(u32);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }

    #[test]
    fn others_cpu_counts_a_stranger_and_leaves_out_our_tree() {
        let me = std::process::id();
        // Our own child: in our tree, never counted.
        let mut ours = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        // An orphan (its shell exits at once): another tree, counted. Its loop
        // is bounded, and it is killed at the end of the test anyway.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg("sh -c 'i=0; while [ $i -lt 20000000 ]; do i=$((i+1)); done' >/dev/null 2>&1 & echo $!")
            .output()
            .unwrap();
        let stranger: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let _stop_stranger = KillOnDrop(stranger);
        let before = OthersCpu::census(me);
        std::thread::sleep(std::time::Duration::from_millis(800));
        let after = OthersCpu::census(me);
        let _ = ours.kill();
        let _ = ours.wait();
        assert_eq!(counted(&after, ours.id()), None, "our own child was counted");
        assert_eq!(counted(&after, me), None, "the census root was counted");
        let grew = counted(&after, stranger).expect("the orphan is counted")
            - counted(&before, stranger).expect("the orphan is counted");
        assert!(grew >= 50_000, "the orphan spun 0.8 s but grew only {grew} us");
    }

    fn census(entries: &[(u32, u64, bool)]) -> OthersCpu {
        OthersCpu {
            by_process: entries
                .iter()
                .map(|&(pid, cpu_us, outside)| ((pid, 0), Seen { cpu_us, outside }))
                .collect(),
        }
    }

    #[test]
    fn others_cpu_counts_each_microsecond_in_the_window_once() {
        // Outside: 10 grows by 50; 11 ends, having used 400 before and 200 in
        // the window, and its reaper 12 gains all 600 in cutime; 13 is new (70).
        // Our tree: 20 grows by 1,000 and is never counted; 21 leaves the tree
        // (a dead server's orphan) and is counted from its earlier 300 on.
        let before = census(&[
            (10, 100, true),
            (11, 400, true),
            (12, 0, true),
            (20, 0, false),
            (21, 300, false),
        ]);
        let after = census(&[
            (10, 150, true),
            (12, 600, true),
            (13, 70, true),
            (20, 1_000, false),
            (21, 330, true),
        ]);
        assert_eq!(after.since(&before), 50 + 200 + 70 + 30);
        // A process reaped without its reaper's cutime growing (SIGCHLD
        // ignored) cannot take the total below zero.
        let after = census(&[(10, 100, true)]);
        assert_eq!(after.since(&before), 0);
    }
}
