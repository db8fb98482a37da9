//! Child processes: confined to CPUs, their output collected, every wait
//! bounded, and stopped for sure (the server's whole process group).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sockbench::cpu::CpuList;

/// How long the server may take to exit after SIGTERM before it gets SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long loadgen may take to write its (incomplete) result after SIGTERM.
pub const LOADGEN_STOP_TIMEOUT: Duration = Duration::from_secs(3);
/// Lines of a failed process's output kept for the report.
const TAIL_LINES: usize = 15;

/// The kernel CPU mask for `cpus`.
pub fn cpu_mask(cpus: &CpuList) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus.cpus() {
        // SAFETY: CpuList only holds online CPU ids, far below CPU_SETSIZE (1024).
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    set
}

/// Restricts the calling thread (and what it later spawns or forks) to `set`.
pub fn set_affinity(set: &libc::cpu_set_t) -> std::io::Result<()> {
    sockbench::syscall!(sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set)).map(|_| ())
}

/// Starts `cmd` already confined to `cpus`, so that every thread and forked
/// child of it (not only the workers its own `--pin` places) stays there.
pub fn confine_command(cmd: &mut Command, cpus: &CpuList) {
    use std::os::unix::process::CommandExt;
    let set = cpu_mask(cpus);
    // SAFETY: the closure runs in the child between fork and exec; it makes one
    // async-signal-safe syscall on a mask that was copied in before the fork.
    unsafe {
        cmd.pre_exec(move || set_affinity(&set));
    }
}

/// Sends `sig` to a process, or with a negative id to a process group.
pub fn send_signal(pid: i32, sig: libc::c_int) {
    // Failure means it already exited, which is what we want anyway.
    let _ = sockbench::syscall!(kill(pid, sig));
}

/// Waits for `child` up to `timeout`, polling.
pub fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

/// SIGTERM, a bounded wait, then SIGKILL to the server's whole process group
/// (the fork backend's children too). Returns true if it stopped on SIGTERM.
/// The server must have been started in its own process group.
pub fn stop_server(server: &mut Child) -> bool {
    let pid = server.id() as i32;
    send_signal(pid, libc::SIGTERM);
    let clean = wait_bounded(server, STOP_TIMEOUT).is_some();
    // This reaches any child that outlived it.
    send_signal(-pid, libc::SIGKILL);
    if !clean {
        let _ = server.wait();
    }
    clean
}

/// SIGTERM (loadgen then writes what it measured, marked incomplete), a
/// bounded wait, then SIGKILL.
pub fn stop_loadgen(loadgen: &mut Child) {
    send_signal(loadgen.id() as i32, libc::SIGTERM);
    if wait_bounded(loadgen, LOADGEN_STOP_TIMEOUT).is_none() {
        send_signal(loadgen.id() as i32, libc::SIGKILL);
        let _ = loadgen.wait();
    }
}

/// A spawned child whose output lines are collected by a thread.
pub struct Tail(Arc<Mutex<VecDeque<String>>>, Arc<std::sync::atomic::AtomicBool>);

impl Tail {
    /// Collects `from` until EOF; each line is also sent to `lines_tx`, if given.
    pub fn collect<R: Read + Send + 'static>(from: R, lines_tx: Option<mpsc::Sender<String>>) -> Tail {
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (t, d) = (tail.clone(), done.clone());
        std::thread::spawn(move || {
            // Ends at EOF, i.e. when the child exits (or closes the pipe).
            for line in BufReader::new(from).lines() {
                let Ok(line) = line else { break };
                if let Some(tx) = &lines_tx {
                    let _ = tx.send(line.clone());
                }
                let mut t = t.lock().unwrap();
                if t.len() == TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(line);
            }
            d.store(true, std::sync::atomic::Ordering::Release);
        });
        Tail(tail, done)
    }

    /// The text once the pipe has reached EOF (the child has exited), waiting
    /// at most `wait` for the reader to catch up.
    pub fn text_at_eof(&self, wait: Duration) -> String {
        let deadline = std::time::Instant::now() + wait;
        while !self.1.load(std::sync::atomic::Ordering::Acquire) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.text()
    }

    pub fn text(&self) -> String {
        self.0.lock().unwrap().iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

/// The last lines of a file (loadgen's log).
pub fn file_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}
