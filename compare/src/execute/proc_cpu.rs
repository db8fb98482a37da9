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
        }
    }

    /// Reads the tree's CPU time now: the start of the measured window.
    pub fn mark_start(&mut self) {
        self.marked_start = Some(Instant::now());
        self.cost.lock().unwrap().cpu_start_us = procfs::tree_cpu_us(self.pid).ok();
        // After the server's reading, which needs the exact instant; the
        // census reads every process, and this runner's tree is left out.
        self.others_at_start = Some(procfs::OthersCpu::census(std::process::id()));
    }

    /// Reads the tree's CPU time now: the end of the measured window.
    pub fn mark_end(&mut self) {
        let cpu = procfs::tree_cpu_us(self.pid).ok();
        let window_s = self.marked_start.map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0);
        let others = self
            .others_at_start
            .as_ref()
            .map(|start| procfs::OthersCpu::census(std::process::id()).since(start));
        let mut c = self.cost.lock().unwrap();
        c.cpu_end_us = cpu;
        c.window_s = window_s;
        c.others_cpu_us = others;
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
