//! CPU lists (`0`, `0-1`, `0,2-3`) and thread pinning.

use std::fmt;
use std::str::FromStr;

/// An ordered, de-duplicated list of CPU ids, as given to `--pin`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuList(Vec<usize>);

impl CpuList {
    pub fn cpus(&self) -> &[usize] {
        &self.0
    }

    /// The CPU for worker `i`: workers wrap around the list.
    pub fn for_worker(&self, i: usize) -> usize {
        self.0[i % self.0.len()]
    }

    /// Pins the calling thread to worker `i`'s CPU. Returns false if the OS refused.
    pub fn pin_worker(&self, i: usize) -> bool {
        pin_current_thread(self.for_worker(i))
    }
}

/// Pins the calling thread to one CPU.
pub fn pin_current_thread(cpu: usize) -> bool {
    core_affinity::set_for_current(core_affinity::CoreId { id: cpu })
}

/// Number of CPUs this process may run on.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Number of CPUs online on the machine, whatever this process's affinity.
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as usize
    } else {
        available_cpus()
    }
}

impl FromStr for CpuList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        // The machine's CPUs, not the ones this process may use: under taskset
        // (or when `compare` confines a server to CPU 1) `--pin 1` must still parse.
        let online = online_cpus();
        let mut cpus = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (part, part),
            };
            let lo: usize = lo
                .parse()
                .map_err(|_| format!("{s:?} is not a CPU list like 0, 0-1 or 0,2-3"))?;
            let hi: usize = hi
                .parse()
                .map_err(|_| format!("{s:?} is not a CPU list like 0, 0-1 or 0,2-3"))?;
            if lo > hi {
                return Err(format!("{s:?}: range {lo}-{hi} is backwards"));
            }
            for cpu in lo..=hi {
                if cpu >= online {
                    return Err(format!(
                        "CPU {cpu} does not exist (this machine has CPUs 0-{})",
                        online - 1
                    ));
                }
                if !cpus.contains(&cpu) {
                    cpus.push(cpu);
                }
            }
        }
        Ok(CpuList(cpus))
    }
}

impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|c| c.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists() {
        assert_eq!("0".parse::<CpuList>().unwrap().cpus(), &[0]);
        assert!("0-1".parse::<CpuList>().unwrap().cpus().starts_with(&[0]));
        assert!("x".parse::<CpuList>().is_err());
        assert!("1-0".parse::<CpuList>().is_err());
        assert!("9999".parse::<CpuList>().unwrap_err().contains("does not exist"));
    }
}
