//! Time the kernel counted on each CPU in a run's window that was nobody's
//! work on it (issue 27): steal (a virtual machine's vCPU waiting for the
//! host), iowait, and the time spent in hard and soft interrupts, read from
//! `/proc/stat` at both ends of the window. Steal is the one candidate source
//! of noise that neither the server's own CPU time nor the census of other
//! processes can see.
//!
//! The kernel counts these in ticks of 1/`USER_HZ` s (10 ms at the usual
//! 100 Hz), so over a 1.5 s window each figure is a coarse count: a few
//! ticks of steal are a sign, not a measurement to the microsecond.

use std::collections::HashMap;

use crate::record::{CpuStatWindow, KernelTimes};

/// One CPU's cumulative counters, in ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ticks {
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

/// Every CPU's counters at one instant, by CPU number.
pub type Snapshot = HashMap<usize, Ticks>;

/// The counters of the `cpuN` lines of a `/proc/stat` text (the summed `cpu`
/// line is left out). Fields missing on an old kernel read as 0; a line that
/// does not parse is skipped.
pub fn parse(stat: &str) -> Snapshot {
    let mut out = Snapshot::new();
    for line in stat.lines() {
        let mut fields = line.split_whitespace();
        let Some(cpu) = fields
            .next()
            .and_then(|name| name.strip_prefix("cpu"))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        // user nice system idle iowait irq softirq steal guest guest_nice
        let values: Vec<u64> = fields.map_while(|v| v.parse().ok()).collect();
        let at = |i: usize| values.get(i).copied().unwrap_or(0);
        out.insert(
            cpu,
            Ticks {
                iowait: at(4),
                irq: at(5),
                softirq: at(6),
                steal: at(7),
            },
        );
    }
    out
}

/// This machine's counters now; `None` where `/proc/stat` does not read.
pub fn snapshot() -> Option<Snapshot> {
    std::fs::read_to_string("/proc/stat").ok().map(|s| parse(&s))
}

/// Microseconds per tick: 1e6 / `USER_HZ`.
pub fn tick_us() -> u64 {
    // SAFETY: sysconf only reads a constant of the C library; it cannot fail
    // for _SC_CLK_TCK except by returning -1, handled below.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        1_000_000 / hz as u64
    } else {
        10_000
    }
}

/// Each CPU's growth from `start` to `end` (a CPU missing at either end is left out).
pub fn between(start: &Snapshot, end: &Snapshot) -> Snapshot {
    end.iter()
        .filter_map(|(cpu, e)| {
            let s = start.get(cpu)?;
            Some((
                *cpu,
                Ticks {
                    iowait: e.iowait.saturating_sub(s.iowait),
                    irq: e.irq.saturating_sub(s.irq),
                    softirq: e.softirq.saturating_sub(s.softirq),
                    steal: e.steal.saturating_sub(s.steal),
                },
            ))
        })
        .collect()
}

/// The window's figures for the record: summed over every CPU, over the
/// server's CPUs and over loadgen's, in µs.
pub fn window(delta: &Snapshot, server_cpus: &[usize], loadgen_cpus: &[usize], tick_us: u64) -> CpuStatWindow {
    let sum = |pick: &dyn Fn(usize) -> bool| {
        let mut t = Ticks::default();
        for (_, d) in delta.iter().filter(|(cpu, _)| pick(**cpu)) {
            t.iowait += d.iowait;
            t.irq += d.irq;
            t.softirq += d.softirq;
            t.steal += d.steal;
        }
        KernelTimes {
            steal_us: t.steal * tick_us,
            iowait_us: t.iowait * tick_us,
            irq_us: t.irq * tick_us,
            softirq_us: t.softirq * tick_us,
        }
    };
    CpuStatWindow {
        machine: sum(&|_| true),
        server_cpus: sum(&|cpu| server_cpus.contains(&cpu)),
        loadgen_cpus: sum(&|cpu| loadgen_cpus.contains(&cpu)),
        tick_us,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "cpu  10 0 20 900 5 1 2 3 0 0\n\
        cpu0 5 0 10 450 2 1 1 1 0 0\n\
        cpu1 5 0 10 450 3 0 1 2 0 0\n\
        intr 12345\nctxt 999\n";
    const AFTER: &str = "cpu  30 0 40 1900 9 4 9 10 0 0\n\
        cpu0 15 0 20 950 2 3 5 4 0 0\n\
        cpu1 15 0 20 950 7 1 4 6 0 0\n\
        intr 22345\nctxt 1999\n";

    #[test]
    fn the_window_sums_each_group_of_cpus() {
        let start = parse(BEFORE);
        assert_eq!(start.len(), 2, "the summed `cpu` line and other lines are not CPUs");
        assert_eq!(
            start[&1],
            Ticks {
                iowait: 3,
                irq: 0,
                softirq: 1,
                steal: 2
            }
        );
        let d = between(&start, &parse(AFTER));
        let w = window(&d, &[0], &[1], 10_000);
        assert_eq!(w.server_cpus.steal_us, 30_000);
        assert_eq!(w.server_cpus.irq_us, 20_000);
        assert_eq!(w.server_cpus.softirq_us, 40_000);
        assert_eq!(w.server_cpus.iowait_us, 0);
        assert_eq!(w.loadgen_cpus.steal_us, 40_000);
        assert_eq!(w.loadgen_cpus.iowait_us, 40_000);
        assert_eq!(w.machine.steal_us, 70_000);
        assert_eq!(w.machine.softirq_us, 70_000);
        assert_eq!(w.tick_us, 10_000);
    }

    #[test]
    fn short_lines_read_as_zero_and_counters_never_go_negative() {
        // A kernel before steal was counted: 7 fields.
        let old = parse("cpu0 1 2 3 4 5 6 7\n");
        assert_eq!(old[&0].steal, 0);
        assert_eq!(old[&0].softirq, 7);
        let d = between(
            &parse("cpu0 0 0 0 0 9 9 9 9\n"),
            &parse("cpu0 0 0 0 0 1 1 1 1\ncpu1 0 0 0 0 1 1 1 1\n"),
        );
        assert_eq!(d.len(), 1, "cpu1 was not there at the start");
        assert_eq!(d[&0], Ticks::default());
    }

    #[test]
    fn this_machine_has_counters_for_every_cpu_it_runs_on() {
        let Some(now) = snapshot() else { return };
        assert!(!now.is_empty(), "no cpuN line in /proc/stat");
        assert!(tick_us() >= 1);
    }
}
