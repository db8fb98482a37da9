//! The server's cost: CPU time and peak memory of its whole process tree,
//! forked children included, read from `/proc` (via [`sockbench::procfs`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sockbench::procfs;

use super::cpu_stat;
use super::syscalls::SyscallCounter;

/// How often the monitor samples the tree's memory. Walking a fork server's
/// tree reads a few files per child, so this is kept coarse.
pub const RSS_INTERVAL: Duration = Duration::from_millis(500);

/// What the monitor saw over a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TreeCost {
    /// Tree CPU time at the start and end of the window, µs.
    pub cpu_start_us: Option<u64>,
    pub cpu_end_us: Option<u64>,
    /// Seconds between the two CPU readings.
    pub window_s: f64,
    /// Largest summed `VmRSS` of the tree over the samples, KiB.
    pub peak_tree_rss_kib: u64,
    /// `VmHWM` of the root process (its own high-water mark), KiB.
    pub root_hwm_kib: u64,
    /// Largest number of processes seen in the tree.
    pub peak_procs: usize,
    /// CPU time other processes (not this runner's tree, not kernel threads)
    /// used between the two marks, µs: a disturbance of the run.
    pub others_cpu_us: Option<u64>,
    /// The tree's context switches in the window (see [`CtxtSwitches`]).
    pub ctxt_switches: Option<CtxtSwitches>,
    /// System calls the tree entered in the window, when counted (see [`super::syscalls`]).
    pub syscalls: Option<u64>,
    /// Each CPU's steal, iowait and interrupt ticks in the window (see [`cpu_stat`]).
    pub cpu_stat: Option<cpu_stat::Snapshot>,
}

/// Context switches of the server tree between the two marks, summed over
/// every task (thread of every process) alive at the end mark: for a task
/// already alive at the start its count then less its count at the start,
/// for a task born since its whole count.
///
/// The kernel keeps these per task only (`/proc/PID/task/TID/status`); a
/// process's exited children's switches are folded nowhere that can be read
/// from outside (only the parent's own `getrusage(RUSAGE_CHILDREN)`). So a
/// task that exits inside the window is missing: for fork with long-lived
/// connections that is nothing (every child lives through the window), for
/// fork with a connection per conversation it is every child but those alive
/// at the end mark, and fork's figure there covers its accept loop only.
/// `tasks_gone` counts the tasks alive at the start and gone at the end, so
/// the report can say when a figure is a lower bound.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CtxtSwitches {
    pub voluntary: u64,
    pub involuntary: u64,
    /// Tasks alive at the start mark and gone by the end mark.
    pub tasks_gone: u64,
}

/// Each task's (voluntary, involuntary) switch counts in `pid`'s tree, by tid.
type TaskSwitches = HashMap<u32, (u64, u64)>;

fn tree_switches(pid: u32) -> TaskSwitches {
    let mut all = TaskSwitches::new();
    for p in procfs::tree(pid) {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(status) = std::fs::read_to_string(task.path().join("status")) {
                if let Some(counts) = switches_in_status(&status) {
                    all.insert(tid, counts);
                }
            }
        }
    }
    all
}

/// `voluntary_ctxt_switches` and `nonvoluntary_ctxt_switches` of a `status` file.
fn switches_in_status(status: &str) -> Option<(u64, u64)> {
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some((
        field("voluntary_ctxt_switches:")?,
        field("nonvoluntary_ctxt_switches:")?,
    ))
}

/// The switches between two readings of one tree (see [`CtxtSwitches`]).
fn switches_between(start: &TaskSwitches, end: &TaskSwitches) -> CtxtSwitches {
    let mut d = CtxtSwitches::default();
    for (tid, &(v, i)) in end {
        let (v0, i0) = start.get(tid).copied().unwrap_or((0, 0));
        d.voluntary += v.saturating_sub(v0);
        d.involuntary += i.saturating_sub(i0);
    }
    d.tasks_gone = start.keys().filter(|t| !end.contains_key(t)).count() as u64;
    d
}

impl TreeCost {
    /// Server CPU spent in the window, µs.
    pub fn cpu_us(&self) -> Option<u64> {
        Some(self.cpu_end_us?.saturating_sub(self.cpu_start_us?))
    }

    /// Cores' worth of CPU that other processes used in the window.
    pub fn others_cores(&self) -> Option<f64> {
        let us = self.others_cpu_us?;
        (self.window_s > 0.0).then(|| us as f64 / 1e6 / self.window_s)
    }

    /// The peak RSS figure `compare` reports: the larger of the summed tree
    /// RSS samples and the root's own high-water mark.
    pub fn peak_rss_kib(&self) -> u64 {
        self.peak_tree_rss_kib.max(self.root_hwm_kib)
    }
}

/// Samples one server tree in a background thread: memory every
/// [`RSS_INTERVAL`], CPU at the two instants the runner marks.
pub struct TreeMonitor {
    pid: u32,
    cost: Arc<Mutex<TreeCost>>,
    stop: Arc<AtomicBool>,
    sampler: Option<JoinHandle<()>>,
    marked_start: Option<Instant>,
    /// Other processes' CPU at the start mark.
    others_at_start: Option<procfs::OthersCpu>,
    /// The tree's per-task context switches at the start mark.
    switches_at_start: Option<TaskSwitches>,
    /// `/proc/stat` at the start mark.
    stat_at_start: Option<cpu_stat::Snapshot>,
    /// Count the tree's system calls over the window (`--count-syscalls`).
    count_syscalls: bool,
    syscall_counter: Option<SyscallCounter>,
}

impl TreeMonitor {
    /// Starts sampling `pid`'s tree; with `count_syscalls`, its system calls
    /// are counted over the window too.
    pub fn start(pid: u32, count_syscalls: bool) -> TreeMonitor {
        let cost = Arc::new(Mutex::new(TreeCost::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (cost, stop) = (cost.clone(), stop.clone());
            std::thread::spawn(move || {
                // Runs until the runner stops it; each turn sleeps RSS_INTERVAL.
                while !stop.load(Ordering::Relaxed) {
                    let tree = procfs::tree(pid);
                    let rss: u64 = tree.iter().filter_map(|&p| procfs::status_kib(p, "VmRSS").ok()).sum();
                    let hwm = procfs::status_kib(pid, "VmHWM").unwrap_or(0);
                    {
                        let mut c = cost.lock().unwrap();
                        c.peak_tree_rss_kib = c.peak_tree_rss_kib.max(rss);
                        c.root_hwm_kib = c.root_hwm_kib.max(hwm);
                        c.peak_procs = c.peak_procs.max(tree.len());
                    }
                    sleep_unless_stopped(&stop, RSS_INTERVAL);
                }
            })
        };
        TreeMonitor {
            pid,
            cost,
            stop,
            sampler: Some(sampler),
            marked_start: None,
            others_at_start: None,
            switches_at_start: None,
            stat_at_start: None,
            count_syscalls,
            syscall_counter: None,
        }
    }

    /// Reads the tree's CPU time now: the start of the measured window.
    pub fn mark_start(&mut self) {
        self.marked_start = Some(Instant::now());
        self.cost.lock().unwrap().cpu_start_us = procfs::tree_cpu_us(self.pid).ok();
        self.switches_at_start = Some(tree_switches(self.pid));
        if self.count_syscalls {
            self.syscall_counter = SyscallCounter::start(self.pid);
        }
        // After the server's reading, which needs the exact instant; the
        // census reads every process, and this runner's tree is left out.
        self.others_at_start = Some(procfs::OthersCpu::census(std::process::id()));
        self.stat_at_start = cpu_stat::snapshot();
    }

    /// Reads the tree's CPU time now: the end of the measured window.
    pub fn mark_end(&mut self) {
        let cpu = procfs::tree_cpu_us(self.pid).ok();
        let syscalls = self.syscall_counter.take().and_then(SyscallCounter::finish);
        let switches = self
            .switches_at_start
            .as_ref()
            .map(|start| switches_between(start, &tree_switches(self.pid)));
        let window_s = self.marked_start.map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0);
        let others = self
            .others_at_start
            .as_ref()
            .map(|start| procfs::OthersCpu::census(std::process::id()).since(start));
        let stat = self
            .stat_at_start
            .as_ref()
            .zip(cpu_stat::snapshot())
            .map(|(start, end)| cpu_stat::between(start, &end));
        let mut c = self.cost.lock().unwrap();
        c.cpu_end_us = cpu;
        c.window_s = window_s;
        c.others_cpu_us = others;
        c.ctxt_switches = switches;
        c.syscalls = syscalls;
        c.cpu_stat = stat;
    }

    pub fn has_start(&self) -> bool {
        self.marked_start.is_some()
    }

    /// Stops sampling and returns what was seen. Call before stopping the server.
    pub fn finish(mut self) -> TreeCost {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.sampler.take() {
            let _ = h.join();
        }
        let hwm = procfs::status_kib(self.pid, "VmHWM").unwrap_or(0);
        let mut c = self.cost.lock().unwrap().clone();
        c.root_hwm_kib = c.root_hwm_kib.max(hwm);
        c
    }
}

impl Drop for TreeMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn sleep_unless_stopped(stop: &AtomicBool, total: Duration) {
    let step = Duration::from_millis(50);
    let end = Instant::now() + total;
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        std::thread::sleep(step);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_count_tasks_alive_at_the_end_and_name_those_gone() {
        let status = "Name:\tserver\nvoluntary_ctxt_switches:\t120\nnonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(switches_in_status(status), Some((120, 7)));
        assert_eq!(switches_in_status("Name:\tx\n"), None);
        let start: TaskSwitches = [(10, (100, 5)), (11, (50, 1)), (12, (9, 9))].into();
        // 10 lives through, 11 exited, 13 was born in the window.
        let end: TaskSwitches = [(10, (130, 6)), (12, (9, 9)), (13, (4, 2))].into();
        let d = switches_between(&start, &end);
        assert_eq!((d.voluntary, d.involuntary, d.tasks_gone), (34, 3, 1));
    }

    #[test]
    fn this_process_switches_when_it_sleeps() {
        let pid = std::process::id();
        let before = tree_switches(pid);
        std::thread::sleep(Duration::from_millis(5));
        let d = switches_between(&before, &tree_switches(pid));
        assert!(d.voluntary >= 1, "{d:?}");
    }
}
