//! What a measurement ran on and when: the machine probe, the source
//! commit and the UTC clock, shared by `loadgen` and `compare` so that a
//! result file and the comparison that made it name the same commit.

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

/// The machine a measurement ran on.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    pub cpu_model: String,
    /// CPUs online on the machine (not just those this process may use).
    pub cores: usize,
    pub kernel: String,
    pub memory_mib: u64,
}

impl Machine {
    /// Reads `/proc` for the CPU model, memory and kernel release.
    pub fn probe() -> Machine {
        Machine {
            cpu_model: cpu_model(),
            cores: crate::cpu::online_cpus(),
            kernel: kernel_release(),
            memory_mib: memory_mib(),
        }
    }
}

/// The first `model name` of `/proc/cpuinfo`, or "unknown".
pub fn cpu_model() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// `uname -r`, from `/proc/sys/kernel/osrelease`, or "unknown".
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// `MemTotal` in MiB, or 0 when unreadable.
pub fn memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| kib / 1024)
        .unwrap_or(0)
}

/// `git rev-parse HEAD` of the work tree that holds `dir`, with `-dirty`
/// when tracked files anywhere in that tree differ from HEAD; "unknown"
/// outside a git work tree or without git. loadgen and compare both call
/// this, so a result file and the comparison that made it name the same
/// commit.
pub fn git_commit(dir: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
    };
    let Some(head) = git(&["rev-parse", "HEAD"]) else {
        return "unknown".into();
    };
    let mut commit = String::from_utf8_lossy(&head.stdout).trim().to_string();
    // `:/` is the top of the work tree (pathspecs are relative to `dir`).
    let status = git(&["status", "--porcelain", "--untracked-files=no", "--", ":/"]);
    if status.is_some_and(|o| !o.stdout.is_empty()) {
        commit.push_str("-dirty");
    }
    commit
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    utc_from_unix(secs)
}

/// `secs` since 1970 as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_from_unix(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm), for dates after 1970.
    let z = days as i64 + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc_from_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_from_unix(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_from_unix(1_798_761_599), "2026-12-31T23:59:59Z");
    }

    #[test]
    fn commit_of_this_tree_is_a_hash_or_unknown() {
        let c = git_commit(Path::new(env!("CARGO_MANIFEST_DIR")));
        let hash = c.trim_end_matches("-dirty");
        assert!(
            c == "unknown" || (hash.len() == 40 && hash.chars().all(|c| c.is_ascii_hexdigit())),
            "{c}"
        );
    }
}
