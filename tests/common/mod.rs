//! Shared harness for integration tests: starts the real `server` binary as a
//! user would, waits for its `listening` line, and stops it with SIGTERM.
#![allow(dead_code)]

pub mod client;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use sockbench::net::{Endpoint, Transport};

/// Every backend name, in the order tests run them.
pub const BACKENDS: [&str; 4] = ["fork", "threadpool", "epoll", "uring"];

/// A transport plus the address family or path to test it on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Tcp4,
    Tcp6,
    Udp4,
    Udp6,
    Unix,
    Unixgram,
}

impl Target {
    pub const ALL: [Target; 6] = [
        Target::Tcp4,
        Target::Tcp6,
        Target::Udp4,
        Target::Udp6,
        Target::Unix,
        Target::Unixgram,
    ];

    pub fn transport(self) -> Transport {
        match self {
            Target::Tcp4 | Target::Tcp6 => Transport::Tcp,
            Target::Udp4 | Target::Udp6 => Transport::Udp,
            Target::Unix => Transport::Unix,
            Target::Unixgram => Transport::Unixgram,
        }
    }

    pub fn is_stream(self) -> bool {
        self.transport().is_stream()
    }
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory (mkdtemp: never one that existed before), removed on drop.
    pub fn new(tag: &str) -> TempDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("sockbench-{tag}-"))
            .tempdir()
            .expect("create temp dir");
        TempDir(dir.keep())
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `server` process.
pub struct ServerProc {
    child: Option<Child>,
    /// The `listening` line, verbatim.
    pub listening: String,
    /// Where clients connect.
    pub endpoint: Endpoint,
    lines: mpsc::Receiver<String>,
    _dir: Option<TempDir>,
}

/// What a stopped server left behind.
#[derive(Debug)]
pub struct Stopped {
    pub status: ExitStatus,
    pub elapsed: Duration,
    /// The `summary ...` line, if it printed one.
    pub summary: Option<String>,
}

impl Stopped {
    /// A `key=value` number from the summary line.
    pub fn count(&self, key: &str) -> u64 {
        let line = self.summary.as_deref().expect("no summary line");
        field(line, key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
    }
}

/// The value of `key=` in a `key=value key=value` line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

pub fn server_bin() -> &'static str {
    env!("CARGO_BIN_EXE_server")
}

impl ServerProc {
    /// Starts `server --backend B` for `target` on a free port or a temp socket
    /// path, with `extra` flags, and waits (up to 10 s) for `listening`.
    pub fn start(backend: &str, target: Target, extra: &[&str]) -> ServerProc {
        Self::try_start(backend, target, extra).unwrap_or_else(|e| panic!("{backend}/{target:?}: {e}"))
    }

    pub fn try_start(backend: &str, target: Target, extra: &[&str]) -> Result<ServerProc, String> {
        let mut cmd = Command::new(server_bin());
        cmd.args(["--backend", backend, "--transport", target.transport().name()]);
        let dir = match target {
            Target::Tcp4 | Target::Udp4 => {
                cmd.args(["--addr", "127.0.0.1:0"]);
                None
            }
            Target::Tcp6 | Target::Udp6 => {
                cmd.args(["--addr", "[::1]:0"]);
                None
            }
            Target::Unix | Target::Unixgram => {
                let dir = TempDir::new(backend);
                cmd.arg("--path").arg(dir.path("server.sock"));
                Some(dir)
            }
        };
        cmd.args(extra);
        Self::spawn(cmd, dir)
    }

    /// Spawns a fully prepared `server` command (for tests that need odd flags or
    /// limits) and waits for its `listening` line.
    pub fn spawn(mut cmd: Command, dir: Option<TempDir>) -> Result<ServerProc, String> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().map_err(|e| format!("spawn server: {e}"))?;
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("listening") => {
                    let addr = field(&line, "addr").ok_or("listening line has no addr=")?;
                    let endpoint = match addr.parse::<SocketAddr>() {
                        Ok(a) => Endpoint::Inet(a),
                        Err(_) => Endpoint::Unix(PathBuf::from(addr)),
                    };
                    return Ok(ServerProc {
                        child: Some(child),
                        listening: line,
                        endpoint,
                        lines: rx,
                        _dir: dir,
                    });
                }
                Ok(_) => continue,
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    return Err(format!("server did not print a listening line (exit: {status:?})"));
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn inet(&self) -> SocketAddr {
        match &self.endpoint {
            Endpoint::Inet(a) => *a,
            Endpoint::Unix(p) => panic!("server is on a Unix path {}", p.display()),
        }
    }

    pub fn path(&self) -> &Path {
        match &self.endpoint {
            Endpoint::Unix(p) => p,
            Endpoint::Inet(a) => panic!("server is on {a}, not a path"),
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().unwrap().try_wait(), Ok(None))
    }

    /// Sends `signal` and waits up to 5 s for the exit; kills it if it hangs.
    pub fn stop_with(mut self, signal: i32) -> Stopped {
        let mut child = self.child.take().unwrap();
        let start = Instant::now();
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait server") {
                break status;
            }
            if start.elapsed() > Duration::from_secs(5) {
                let _ = child.kill();
                break child.wait().expect("wait killed server");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let elapsed = start.elapsed();
        // The reader thread may not have passed on the last lines yet: read
        // until stdout closes (bounded, in case a child still holds it).
        let mut summary = None;
        let drain_until = Instant::now() + Duration::from_secs(2);
        while let Ok(line) = self
            .lines
            .recv_timeout(drain_until.saturating_duration_since(Instant::now()))
        {
            if line.starts_with("summary") {
                summary = Some(line);
            }
        }
        Stopped {
            status,
            elapsed,
            summary,
        }
    }

    /// Stops with SIGTERM.
    pub fn stop(self) -> Stopped {
        self.stop_with(libc::SIGTERM)
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `cmd` (stdout discarded) until it exits, or kills it after `limit`.
/// Returns its exit code (`None` if it had to be killed: it kept running
/// where it should have refused to start) and its stderr.
pub fn run_to_exit(mut cmd: Command, limit: Duration) -> (Option<i32>, String) {
    use std::io::Read;
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (code, reader.join().unwrap_or_default())
}

/// Pins the calling thread to `cpu` if it exists (benches pin the client to a
/// different core than the server).
pub fn pin_to(cpu: usize) -> bool {
    cpu < sockbench::cpu::available_cpus() && sockbench::cpu::pin_current_thread(cpu)
}

/// Joins client threads that each return the bytes they echoed (or what went
/// wrong) and adds up the bytes; a client's error fails the test, named by `what`.
pub fn join_clients(handles: Vec<std::thread::JoinHandle<Result<u64, String>>>, what: &str) -> u64 {
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .expect("client thread panicked")
                .unwrap_or_else(|e| panic!("{what}: {e}"))
        })
        .sum()
}

/// Why this machine cannot run the uring backend, if it cannot: Linux older
/// than 6.1 (multishot receive is 6.0, datagram echoes by sendto 6.1), io_uring switched off by sysctl, or
/// `io_uring_setup` refused (a seccomp filter, as container runtimes install).
/// Anywhere else a uring server that fails to start is a test failure, not a skip.
pub fn kernel_without_uring() -> Option<String> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < (6, 1) {
        return Some(format!("Linux {} is older than 6.1", release.trim()));
    }
    if let Ok(v) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        if v.trim() != "0" {
            return Some(format!("kernel.io_uring_disabled = {}", v.trim()));
        }
    }
    match io_uring::IoUring::new(2) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::ENOSYS)) => {
            Some(format!("io_uring_setup is refused here ({e})"))
        }
        _ => None,
    }
}

/// The workspace's loadgen binary, beside the tests' `server`.
pub fn loadgen_bin() -> PathBuf {
    let bin = PathBuf::from(server_bin()).with_file_name("loadgen");
    assert!(
        bin.is_file(),
        "{} is not built: run this test with `cargo test --workspace` (it builds loadgen)",
        bin.display()
    );
    bin
}

/// TCP sockets whose local port is `port` and whose server side is still
/// open: established, or closed by the client only (CLOSE_WAIT). Read from
/// the kernel's socket tables, so it sees fixed files too, which no
/// descriptor table lists.
pub fn tcp_server_side_conns(port: u16) -> usize {
    let port = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(t).ok())
        .map(|table| {
            table
                .lines()
                .filter(|l| {
                    let f: Vec<&str> = l.split_whitespace().take(4).collect();
                    f.len() == 4 && f[1].ends_with(&port) && matches!(f[3], "01" | "08")
                })
                .count()
        })
        .sum()
}

/// What a stopped server left behind, and what `at_summary` saw.
#[derive(Debug)]
pub struct StoppedSeen<T> {
    pub stopped: Stopped,
    /// `at_summary`'s answer, if a summary line came.
    pub at_summary: Option<T>,
}

impl ServerProc {
    /// Sends `signal`, calls `at_summary` the moment the summary line is read
    /// (the process may still be exiting), then waits for the exit. Each
    /// wait is bounded by `limit`, a hang guard; past it the server is killed.
    pub fn stop_seeing_summary<T>(
        mut self,
        signal: i32,
        limit: Duration,
        at_summary: impl FnOnce(&str) -> T,
    ) -> StoppedSeen<T> {
        let mut child = self.child.take().unwrap();
        let start = Instant::now();
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = start + limit;
        let mut summary = None;
        let mut seen = None;
        // Stdout closes when the process is gone, which ends this loop.
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if line.starts_with("summary") {
                seen = Some(at_summary(&line));
                summary = Some(line);
                break;
            }
        }
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait server") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break child.wait().expect("wait killed server");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        StoppedSeen {
            stopped: Stopped {
                status,
                elapsed: start.elapsed(),
                summary,
            },
            at_summary: seen,
        }
    }
}

/// Sets `RLIMIT_NOFILE` (soft, hard) in the child before exec.
pub fn with_nofile(cmd: &mut Command, soft: u64, hard: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
