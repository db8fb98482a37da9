//! The machine's own pauses, measured with nothing else running.
//!
//! One thread per CPU spins reading the monotonic clock. Any gap between two
//! reads longer than [`STALL_MIN`] is time the CPU was taken away from the
//! thread: an interrupt, a kernel thread, or, on a virtual machine, the host
//! descheduling the vCPU (which the guest may not even count as steal time).
//! No server design can echo faster than such a pause allows, so the report
//! prints these figures beside the latency tails they bound from below.

use std::time::{Duration, Instant};

use crate::record::CpuStalls;

/// A gap between two clock reads this long or longer counts as a stall. A read
/// takes tens of nanoseconds; 100 µs is far above that and far below the
/// millisecond-scale pauses that move a p99.9.
pub const STALL_MIN: Duration = Duration::from_micros(100);

/// Spins on every CPU in `cpus` at once for `length`, each thread pinned to
/// its CPU, and returns what each saw (CPUs it could not pin to are left out).
pub fn measure(cpus: &[usize], length: Duration) -> Vec<CpuStalls> {
    let threads: Vec<_> = cpus
        .iter()
        .map(|&cpu| std::thread::spawn(move || spin_on(cpu, length)))
        .collect();
    threads.into_iter().filter_map(|t| t.join().ok().flatten()).collect()
}

fn spin_on(cpu: usize, length: Duration) -> Option<CpuStalls> {
    if !sockbench::cpu::pin_current_thread(cpu) {
        return None;
    }
    let start = Instant::now();
    let mut prev = start;
    let mut out = CpuStalls {
        cpu,
        ..CpuStalls::default()
    };
    let mut stalled = Duration::ZERO;
    let mut max = Duration::ZERO;
    loop {
        let now = Instant::now();
        let gap = now - prev;
        prev = now;
        if gap >= STALL_MIN {
            out.stalls += 1;
            if gap >= Duration::from_millis(1) {
                out.stalls_over_1ms += 1;
            }
            stalled += gap;
            max = max.max(gap);
        }
        if now - start >= length {
            break;
        }
    }
    let total = prev - start;
    out.seconds = total.as_secs_f64();
    out.max_us = max.as_secs_f64() * 1e6;
    out.stalled_fraction = stalled.as_secs_f64() / total.as_secs_f64().max(1e-9);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cpu_reports_and_the_figures_are_consistent() {
        let cpus: Vec<usize> = (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
        let seen = measure(&cpus, Duration::from_millis(200));
        assert_eq!(seen.iter().map(|s| s.cpu).collect::<Vec<_>>(), cpus);
        for s in &seen {
            assert!(s.seconds >= 0.2 && s.seconds < 5.0, "{s:?}");
            assert!(s.stalls_over_1ms <= s.stalls, "{s:?}");
            assert!((0.0..=1.0).contains(&s.stalled_fraction), "{s:?}");
            // A stall is at least STALL_MIN long, so the stalled time bounds the count.
            assert!(
                s.stalls as f64 * 100e-6 <= s.seconds * s.stalled_fraction + 1e-9,
                "{s:?}"
            );
            if s.stalls == 0 {
                assert_eq!(s.max_us, 0.0);
            } else {
                assert!(s.max_us >= 100.0, "{s:?}");
            }
        }
    }

    #[test]
    fn another_busy_thread_on_the_cpu_shows_as_stalls() {
        // Another thread on the same CPU takes it away for ~20 ms at a time:
        // the spinner must see gaps that long.
        let cpu = 0;
        let hog = std::thread::spawn(move || {
            sockbench::cpu::pin_current_thread(cpu);
            let end = Instant::now() + Duration::from_millis(300);
            while Instant::now() < end {
                let busy = Instant::now() + Duration::from_millis(20);
                while Instant::now() < busy {}
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let seen = measure(&[cpu], Duration::from_millis(300));
        hog.join().unwrap();
        let s = &seen[0];
        assert!(s.stalls_over_1ms > 0, "{s:?}");
        assert!(s.stalled_fraction > 0.1, "{s:?}");
    }
}
