//! Syscalls per message: `perf stat -e raw_syscalls:sys_enter -p PID` over
//! the server's measured window, with `--count-syscalls`.
//!
//! Opt-in, because counting costs the server: every system call then
//! passes the tracepoint. On the project's machine (2 cores, 6.x kernel) a
//! `dd bs=1` loop of 2 M syscalls took 0.44–0.53 s alone and 0.70–0.84 s
//! under `perf stat -p`: about 0.13 µs more per syscall, a large share of an
//! echo's 1–3 µs. So a run that counts syscalls has CPU figures inflated by
//! the counting, and the manifest says so ([`why_not_counted`] is `None`
//! only when counting was asked for and works).
//!
//! perf's counters are inherited by tasks the server forks or spawns after
//! the attach, and a child's count is added to its parent's when it exits,
//! so fork's figure covers its short-lived children too (unlike the context
//! switches, see `proc_cpu::CtxtSwitches`). perf attaches a few ms after the
//! start mark and is stopped (SIGINT) at the end mark.
//!
//! Where perf cannot count the tracepoint (no perf, `perf_event_paranoid`
//! too strict, a container that hides tracepoints), every run records
//! `syscalls: null` and the manifest says why, instead of a guess.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The tracepoint counted.
pub const EVENT: &str = "raw_syscalls:sys_enter";

/// What the manifest records as `syscalls_not_counted`: why runs carry no
/// syscall count, or `None` when `asked` and perf counts [`EVENT`] here.
pub fn not_counted_because(asked: bool) -> Option<String> {
    if !asked {
        return Some(
            "not asked for (--count-syscalls): perf's tracepoint adds about 0.13 µs to each of the server's \
             system calls, which would inflate the CPU figures beside it"
                .into(),
        );
    }
    why_not_counted()
}

/// `None` when perf counts [`EVENT`] here; else why not, in a sentence.
pub fn why_not_counted() -> Option<String> {
    let out = Command::new("perf")
        .args(["stat", "-x", ",", "-e", EVENT, "--", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    let out = match out {
        Ok(out) => out,
        Err(e) => return Some(format!("perf could not be started ({e})")),
    };
    let text = String::from_utf8_lossy(&out.stderr);
    why_not_in_output(out.status.success(), &text)
}

/// A `perf stat` attached to the server for one window.
pub struct SyscallCounter {
    perf: Child,
}

impl SyscallCounter {
    /// Attaches perf to `pid` (and the tasks it creates from now on).
    pub fn start(pid: u32) -> Option<SyscallCounter> {
        let perf = Command::new("perf")
            .args(["stat", "-x", ",", "-e", EVENT, "-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        Some(SyscallCounter { perf })
    }

    /// Stops perf (SIGINT, then SIGKILL after 2 s) and returns its count.
    pub fn finish(mut self) -> Option<u64> {
        // SAFETY: kill(2) on our own child's pid, which it keeps until we wait for it.
        unsafe { libc::kill(self.perf.id() as libc::pid_t, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.perf.try_wait().ok()?.is_none() {
            if Instant::now() >= deadline {
                let _ = self.perf.kill();
                let _ = self.perf.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut text = String::new();
        self.perf.stderr.take()?.read_to_string(&mut text).ok()?;
        count_in_output(&text)
    }
}

impl Drop for SyscallCounter {
    fn drop(&mut self) {
        if let Ok(None) = self.perf.try_wait() {
            let _ = self.perf.kill();
            let _ = self.perf.wait();
        }
    }
}

/// The count on [`EVENT`]'s line of `perf stat -x,` output.
fn count_in_output(stderr: &str) -> Option<u64> {
    let line = stderr.lines().find(|l| l.contains(EVENT))?;
    line.split(',').next()?.trim().parse().ok()
}

/// Reads `perf stat -x,` output: the first field of the event's line is the
/// count, or `<not counted>` / `<not supported>`.
fn why_not_in_output(exited_ok: bool, stderr: &str) -> Option<String> {
    let line = stderr.lines().find(|l| l.contains(EVENT));
    match line.and_then(|l| l.split(',').next()) {
        Some(count) if count.trim().parse::<u64>().is_ok() && exited_ok => None,
        Some(count) => Some(format!(
            "perf stat -e {EVENT} reports {} here (perf_event_paranoid {}, or the tracepoint is hidden)",
            count.trim(),
            std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into())
        )),
        None => Some(format!(
            "perf stat -e {EVENT} failed: {}",
            stderr
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no output")
                .trim()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_output_is_read() {
        assert_eq!(
            why_not_in_output(true, "1234,,raw_syscalls:sys_enter,100,100.00,,\n"),
            None
        );
        let not = why_not_in_output(true, "<not counted>,,raw_syscalls:sys_enter,0,100.00,,\n").unwrap();
        assert!(not.contains("<not counted>"), "{not}");
        let failed = why_not_in_output(false, "event syntax error: 'raw_syscalls:sys_enter'\n");
        assert!(failed.is_some());
        let missing = why_not_in_output(false, "\nperf: command not found\n").unwrap();
        assert!(missing.contains("perf: command not found"), "{missing}");
        assert_eq!(
            count_in_output("1234,,raw_syscalls:sys_enter,100,100.00,,\n"),
            Some(1234)
        );
        assert_eq!(count_in_output("<not counted>,,raw_syscalls:sys_enter,0,0,,\n"), None);
    }

    /// Counts this test's own child, a shell running a few commands; skipped where perf cannot.
    #[test]
    fn a_busy_child_is_counted() {
        if let Some(why) = why_not_counted() {
            eprintln!("skipped: {why}");
            return;
        }
        let mut child = Command::new("sh")
            .args(["-c", "while :; do : > /dev/null; done"])
            .spawn()
            .unwrap();
        let counter = SyscallCounter::start(child.id()).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let n = counter.finish();
        let _ = child.kill();
        let _ = child.wait();
        assert!(n.is_some_and(|n| n > 0), "{n:?}");
    }
}
