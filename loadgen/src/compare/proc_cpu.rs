//! The server's cost: CPU time and peak memory of its whole process tree,
//! forked children included, read from `/proc` (via [`sockbench::procfs`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sockbench::procfs;

/// How often the monitor samples the tree's memory. Walking a fork server's
/// tree reads a few files per child, so this is kept coarse.
pub const RSS_INTERVAL: Duration = Duration::from_millis(500);

/// CPU time of the tree rooted at `pid` in microseconds: every live process's
/// threads, plus the `cutime`/`cstime` of children already reaped. `None`
/// once the root has gone.
///
/// Live time comes from each thread's `/proc/PID/task/TID/schedstat` (in
/// nanoseconds), not from `utime`/`stime`: those are whole clock ticks per
/// process, so a fork server's children, each using a few milliseconds,
/// would each round down to nothing. A process's `utime + stime` (which also
/// holds its exited threads) is used when it is larger, or when schedstat is
/// not available.
pub fn tree_cpu_us(pid: u32) -> Option<u64> {
    let root = Stat::read(pid)?;
    let mut total_us = root.reaped_children_us;
    total_us += live_cpu_us(pid, &root);
    for p in procfs::tree(pid).into_iter().skip(1) {
        // A child that exits between listing and reading is in its parent's
        // cutime by the next reading; missing it here only once is harmless.
        if let Some(st) = Stat::read(p) {
            total_us += st.reaped_children_us + live_cpu_us(p, &st);
        }
    }
    Some(total_us)
}

/// The fields of `/proc/PID/stat` that matter here, in microseconds.
struct Stat {
    /// utime + stime of the process (all its threads, live and exited).
    own_us: u64,
    /// cutime + cstime: children it has waited for.
    reaped_children_us: u64,
}

impl Stat {
    fn read(pid: u32) -> Option<Stat> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may hold spaces and parentheses: split at the last ')'.
        let rest = stat.rsplit_once(')')?.1;
        let f: Vec<u64> = rest
            .split_whitespace()
            .skip(11)
            .take(4)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        if f.len() < 4 {
            return None;
        }
        let us = |ticks: u64| ticks * 1_000_000 / ticks_per_second();
        Some(Stat {
            own_us: us(f[0] + f[1]),
            reaped_children_us: us(f[2] + f[3]),
        })
    }
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Time on CPU of one process's live threads (schedstat, ns -> µs), or its
/// tick-based `utime + stime` when that is larger.
fn live_cpu_us(pid: u32, stat: &Stat) -> u64 {
    let mut ns = 0u64;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(task.path().join("schedstat")) {
                ns += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    (ns / 1_000).max(stat.own_us)
}

/// Resident memory of the tree rooted at `pid` in KiB: the sum of `VmRSS`
/// over the live processes (pages shared by forked children count once per
/// process, so for fork this is an upper bound).
pub fn tree_rss_kib(pid: u32) -> u64 {
    procfs::tree_rss_kib(pid)
}

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
}

impl TreeCost {
    /// Server CPU spent in the window, µs.
    pub fn cpu_us(&self) -> Option<u64> {
        Some(self.cpu_end_us?.saturating_sub(self.cpu_start_us?))
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
}

impl TreeMonitor {
    /// Starts sampling `pid`'s tree.
    pub fn start(pid: u32) -> TreeMonitor {
        let cost = Arc::new(Mutex::new(TreeCost::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (cost, stop) = (cost.clone(), stop.clone());
            std::thread::spawn(move || {
                // Runs until the runner stops it; each turn sleeps RSS_INTERVAL.
                while !stop.load(Ordering::Relaxed) {
                    let tree = procfs::tree(pid);
                    let rss: u64 = tree
                        .iter()
                        .filter_map(|&p| procfs::status_kib(p, "VmRSS").ok())
                        .sum();
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
        }
    }

    /// Reads the tree's CPU time now: the start of the measured window.
    pub fn mark_start(&mut self) {
        self.marked_start = Some(Instant::now());
        self.cost.lock().unwrap().cpu_start_us = tree_cpu_us(self.pid);
    }

    /// Reads the tree's CPU time now: the end of the measured window.
    pub fn mark_end(&mut self) {
        let cpu = tree_cpu_us(self.pid);
        let mut c = self.cost.lock().unwrap();
        c.cpu_end_us = cpu;
        c.window_s = self
            .marked_start
            .map(|s| s.elapsed().as_secs_f64())
            .unwrap_or(0.0);
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
