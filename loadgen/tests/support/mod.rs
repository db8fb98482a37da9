//! Shared by loadgen's integration tests: small in-test echo servers with
//! known faults, running `loadgen` as a user would, and finding the project's
//! `server` binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use loadgen::result::RunResult;

/// Serialises the tests of one test binary that run loadgen. Two at once on a
/// 2-core machine compete for both cores (one test's 2,500 server threads
/// against another's echoes), and an echo held up past `--timeout` is a
/// counted error the test did not cause. A panicking test poisons nothing.
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a test stream server does to the bytes it echoes.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// A correct echo.
    None,
    /// Flips one byte every `n` bytes echoed.
    CorruptEvery(u64),
    /// Flips the one byte at this offset of everything echoed (counted over
    /// every connection), and nothing else: a fault early in a run.
    CorruptByteAt(u64),
    /// Once `after_bytes` have been echoed in total, every connection stalls
    /// until 1 s later.
    StallOnce { after_bytes: u64 },
    /// Reads and discards everything, never echoes (a hung server).
    Hang,
    /// Echoes on the first `n` connections accepted; the later ones are
    /// accepted and then never read (a server at its connection cap, whose
    /// kernel still completes handshakes into the backlog).
    ServeFirst(u64),
    /// This long after the first echo, every connection is reset and the
    /// listener closed (a killed server). Timed from the first echo, not from
    /// the server's start, so that a slow start of loadgen cannot outlast it.
    DieAfter(Duration),
}

/// A running in-test echo server; threads end when the process does.
pub struct TestServer {
    pub addr: String,
    /// For Unix servers: the temp dir holding the socket (removed on drop).
    pub dir: Option<TestDir>,
    pub stop: Arc<AtomicBool>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
    }
}

/// A test's own directory: a `tempfile::TempDir`, so it is removed when it
/// goes out of scope, also when the test fails (a panic unwinds through its
/// drop). Reads as a `&Path`.
pub struct TestDir(tempfile::TempDir);

impl std::ops::Deref for TestDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<Path> for TestDir {
    fn as_ref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<std::ffi::OsStr> for TestDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.path().as_os_str()
    }
}

/// A fresh directory of the test's own (mkdtemp: never one that existed
/// before), removed when the returned [`TestDir`] is dropped.
pub fn temp_dir(tag: &str) -> TestDir {
    TestDir(
        tempfile::Builder::new()
            .prefix(&format!("loadgen-test-{tag}-"))
            .tempdir()
            .unwrap(),
    )
}

struct FaultState {
    fault: Fault,
    echoed: AtomicU64,
    stall_until: Mutex<Option<Instant>>,
    first_echo: OnceLock<Instant>,
}

impl FaultState {
    /// `Fault::DieAfter` has struck.
    fn dead(&self) -> bool {
        match (self.fault, self.first_echo.get()) {
            (Fault::DieAfter(d), Some(first)) => first.elapsed() >= d,
            _ => false,
        }
    }

    /// Applies the fault to `buf` before it is echoed; false means "die now".
    fn apply(&self, buf: &mut [u8]) -> bool {
        let before = self.echoed.fetch_add(buf.len() as u64, SeqCst);
        self.first_echo.get_or_init(Instant::now);
        match self.fault {
            Fault::None | Fault::ServeFirst(_) => {}
            Fault::CorruptEvery(n) => {
                for (i, b) in buf.iter_mut().enumerate() {
                    if (before + i as u64) % n == n - 1 {
                        *b ^= 0x5a;
                    }
                }
            }
            Fault::CorruptByteAt(at) => {
                if (before..before + buf.len() as u64).contains(&at) {
                    buf[(at - before) as usize] ^= 0x5a;
                }
            }
            Fault::StallOnce { after_bytes } => {
                let until = {
                    let mut s = self.stall_until.lock().unwrap();
                    if s.is_none() && before + buf.len() as u64 >= after_bytes {
                        *s = Some(Instant::now() + Duration::from_secs(1));
                    }
                    *s
                };
                if let Some(u) = until {
                    let now = Instant::now();
                    if now < u {
                        thread::sleep(u - now);
                    }
                }
            }
            Fault::DieAfter(_) => return !self.dead(),
            Fault::Hang => buf.iter_mut().for_each(|b| *b = 0),
        }
        true
    }
}

fn echo_stream<S: Read + Write>(mut s: S, st: &FaultState, stop: &AtomicBool, reset: impl Fn(&S)) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if stop.load(SeqCst) {
            return;
        }
        let n = match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                if st.dead() {
                    return reset(&s);
                }
                continue;
            }
            Err(_) => return,
        };
        if !st.apply(&mut buf[..n]) {
            return reset(&s);
        }
        if matches!(st.fault, Fault::Hang) {
            continue;
        }
        if s.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

/// Closes a TCP stream with RST (SO_LINGER 0), as a killed process's sockets are.
fn rst(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid fd and a live linger struct for the call.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
}

/// Room in a test listener's accept queue for every connection a test opens.
/// std listens with a backlog of 128; loadgen opens hundreds of connections
/// within milliseconds, and on a busy machine the thread-per-connection
/// acceptor falls behind. A full TCP queue drops the SYN (the client's retry
/// comes a second later, past its connect timeout); a full Unix queue refuses
/// the connect. Either is a connect error the test did not ask for.
const TEST_BACKLOG: libc::c_int = 4096;

/// Deepens the accept queue of a listener that is already listening (Linux
/// takes a second `listen(2)` as a new backlog).
fn deepen_backlog(l: &impl AsFd) {
    sockbench::sys::listen(l.as_fd(), TEST_BACKLOG).expect("listen again with a deeper backlog");
}

/// A thread-per-connection TCP echo server on 127.0.0.1:0.
pub fn tcp_server(fault: Fault) -> TestServer {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    deepen_backlog(&l);
    let addr = l.local_addr().unwrap().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let st = Arc::new(FaultState {
        fault,
        echoed: AtomicU64::new(0),
        stall_until: Mutex::new(None),
        first_echo: OnceLock::new(),
    });
    let stop2 = stop.clone();
    l.set_nonblocking(true).unwrap();
    let mut accepted = 0u64;
    thread::spawn(move || loop {
        if stop2.load(SeqCst) {
            return;
        }
        if st.dead() {
            return; // drops the listener: new connects are refused
        }
        match l.accept() {
            Ok((s, _)) if matches!(st.fault, Fault::ServeFirst(n) if accepted >= n) => {
                let stop = stop2.clone();
                thread::spawn(move || {
                    let _held = s;
                    while !stop.load(SeqCst) {
                        thread::sleep(Duration::from_millis(20));
                    }
                });
            }
            Ok((s, _)) => {
                accepted += 1;
                s.set_nonblocking(false).unwrap();
                s.set_nodelay(true).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
                let (st, stop) = (st.clone(), stop2.clone());
                thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        echo_stream(s, &st, &stop, |s: &TcpStream| {
                            rst(s);
                        })
                    })
                    .unwrap();
            }
            Err(_) => thread::sleep(Duration::from_millis(1)),
        }
    });
    TestServer { addr, dir: None, stop }
}

/// A thread-per-connection Unix stream echo server in a temp dir.
pub fn unix_server() -> TestServer {
    unix_server_after(Duration::ZERO)
}

/// A Unix stream echo server whose socket only appears `delay` from now (a
/// server that starts late: connects fail with ENOENT until then).
pub fn unix_server_after(delay: Duration) -> TestServer {
    let dir = temp_dir("unix");
    let path = dir.join("s.sock");
    let addr = path.display().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let st = Arc::new(FaultState {
        fault: Fault::None,
        echoed: AtomicU64::new(0),
        stall_until: Mutex::new(None),
        first_echo: OnceLock::new(),
    });
    let stop2 = stop.clone();
    thread::spawn(move || {
        thread::sleep(delay);
        let l = UnixListener::bind(&path).unwrap();
        deepen_backlog(&l);
        for s in l.incoming() {
            let Ok(s) = s else { return };
            s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            let (st, stop) = (st.clone(), stop2.clone());
            thread::spawn(move || echo_stream(s, &st, &stop, |_: &UnixStream| {}));
        }
    });
    TestServer {
        addr,
        dir: Some(dir),
        stop,
    }
}

/// A TCP server that echoes the first `size` bytes of each connection, then
/// half-closes it (FIN right behind the echo) and reads and discards the rest.
pub fn tcp_echo_once_then_fin(size: usize) -> TestServer {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    deepen_backlog(&l);
    let addr = l.local_addr().unwrap().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    l.set_nonblocking(true).unwrap();
    thread::spawn(move || {
        while !stop2.load(SeqCst) {
            let Ok((mut s, _)) = l.accept() else {
                thread::sleep(Duration::from_millis(1));
                continue;
            };
            s.set_nonblocking(false).unwrap();
            s.set_nodelay(true).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            let stop = stop2.clone();
            thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    let mut buf = vec![0u8; size.max(4096)];
                    let mut got = 0;
                    while got < size && !stop.load(SeqCst) {
                        match s.read(&mut buf[got..size]) {
                            Ok(0) => return,
                            Ok(n) => got += n,
                            Err(e)
                                if e.kind() == std::io::ErrorKind::WouldBlock
                                    || e.kind() == std::io::ErrorKind::TimedOut => {}
                            Err(_) => return,
                        }
                    }
                    // Echo and FIN back to back, so they tend to arrive in one epoll edge.
                    if s.write_all(&buf[..size]).is_err() || s.shutdown(std::net::Shutdown::Write).is_err() {
                        return;
                    }
                    while !stop.load(SeqCst) {
                        match s.read(&mut buf) {
                            Ok(0) => return,
                            Ok(_) => {}
                            Err(e)
                                if e.kind() == std::io::ErrorKind::WouldBlock
                                    || e.kind() == std::io::ErrorKind::TimedOut => {}
                            Err(_) => return,
                        }
                    }
                })
                .unwrap();
        }
    });
    TestServer { addr, dir: None, stop }
}

/// A UDP echo server that drops every `drop_every`-th datagram (0: none).
pub fn udp_server(drop_every: u64) -> TestServer {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = s.local_addr().unwrap().to_string();
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        let mut n_seen = 0u64;
        while !stop2.load(SeqCst) {
            let Ok((n, from)) = s.recv_from(&mut buf) else {
                continue;
            };
            n_seen += 1;
            if drop_every > 0 && n_seen % drop_every == 0 {
                continue;
            }
            let _ = s.send_to(&buf[..n], from);
        }
    });
    TestServer { addr, dir: None, stop }
}

/// A unixgram echo server in a temp dir.
pub fn unixgram_server() -> TestServer {
    let dir = temp_dir("unixgram");
    let path = dir.join("s.sock");
    let s = UnixDatagram::bind(&path).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while !stop2.load(SeqCst) {
            let Ok((n, from)) = s.recv_from(&mut buf) else {
                continue;
            };
            if let Some(p) = from.as_pathname() {
                let _ = s.send_to(&buf[..n], p);
            }
        }
    });
    TestServer {
        addr: path.display().to_string(),
        dir: Some(dir),
        stop,
    }
}

/// The outcome of one loadgen process.
pub struct Run {
    pub output: Output,
    pub elapsed: Duration,
    pub result: Option<RunResult>,
    pub stderr: String,
    pub pid: u32,
}

impl Run {
    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }

    pub fn result(&self) -> &RunResult {
        self.result
            .as_ref()
            .unwrap_or_else(|| panic!("no result file; stderr:\n{}", self.stderr))
    }
}

pub fn loadgen_bin() -> &'static str {
    env!("CARGO_BIN_EXE_loadgen")
}

/// Runs loadgen with `args` plus `--out` into `dir`, bounded by a 60 s kill.
pub fn run_loadgen(args: &[&str], dir: &Path) -> Run {
    run_loadgen_signalled(args, dir, None)
}

/// Like [`run_loadgen`], and sends loadgen `signal` once `after` has passed.
pub fn run_loadgen_signalled(args: &[&str], dir: &Path, signal: Option<(i32, Duration)>) -> Run {
    let out = dir.join(format!("r{}.json", {
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, SeqCst)
    }));
    let start = Instant::now();
    let mut child = Command::new(loadgen_bin())
        .args(args)
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn loadgen");
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut signal = signal;
    while child.try_wait().unwrap().is_none() {
        if let Some((sig, after)) = signal {
            if start.elapsed() >= after {
                // SAFETY: kill(2) on our own child, which has not been reaped yet.
                unsafe { libc::kill(pid as i32, sig) };
                signal = None;
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let elapsed = start.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let result = std::fs::read_to_string(&out)
        .ok()
        .map(|t| serde_json::from_str(&t).expect("result parses"));
    Run {
        output,
        elapsed,
        result,
        stderr,
        pid,
    }
}

/// The project's `server` binary beside this test's target dir
/// (`target/<profile>/deps/<test>` → `target/<profile>/server`), if built.
pub fn project_server_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("server");
    p.is_file().then_some(p)
}

/// The first address a server printed in its `listening addr=...` line.
pub fn listening_addr(line: &str) -> Option<String> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix("addr="))
        .map(str::to_string)
}

pub fn parse_sockaddr(s: &str) -> Option<SocketAddr> {
    s.parse().ok()
}

/// A running project `server`, killed (and its socket directory removed) on drop.
pub struct ProjectServer {
    pub child: Child,
    /// Where it listens, from its `listening` line (a socket path for unix).
    pub addr: String,
    _dir: Option<TestDir>,
}

impl Drop for ProjectServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `bin --backend BACKEND --transport TRANSPORT --threads THREADS`,
/// on `inet` (e.g. `127.0.0.1:0`, `[::1]:0`) or, for unix transports, a
/// socket in a fresh temp dir; waits (10 s at most) for its `listening` line.
pub fn start_server(bin: &Path, backend: &str, transport: &str, threads: &str, inet: &str) -> ProjectServer {
    let mut cmd = Command::new(bin);
    cmd.args(["--backend", backend, "--transport", transport, "--threads", threads]);
    let dir = if transport.starts_with("unix") {
        let d = temp_dir(&format!("srv-{backend}"));
        cmd.arg("--path").arg(d.join("s.sock"));
        Some(d)
    } else {
        cmd.args(["--addr", inet]);
        None
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) if line.starts_with("listening") => {
                let addr = listening_addr(&line).expect("listening line has addr=");
                return ProjectServer { child, addr, _dir: dir };
            }
            Ok(_) => continue,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let mut err = String::new();
                let _ = child.stderr.take().unwrap().read_to_string(&mut err);
                panic!("{backend}/{transport} on {inet}: server did not start: {err}");
            }
        }
    }
}

/// Why loadgen's io_uring paths cannot run here, if they cannot: io_uring
/// missing or switched off (Linux before 6.1, `kernel.io_uring_disabled`,
/// `io_uring_setup` refused by seccomp, as in many containers), or, for
/// conversations (`--conn-msgs`), a kernel older than 6.11, whose rings
/// cannot bind a socket (`IORING_OP_BIND`). Judged by the kernel's version,
/// not by loadgen's own probe, so that a broken probe fails the tests
/// instead of skipping them. Anywhere else a uring run that fails is a
/// test failure.
pub fn kernel_without_uring(conversations: bool) -> Option<String> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    let need = if conversations { (6, 11) } else { (6, 1) };
    if version < need {
        return Some(format!("Linux {} is older than {}.{}", release.trim(), need.0, need.1));
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

/// The `--io` modes a conversation test runs under: epoll always, uring
/// where the kernel can (else the test says why it skips that half).
pub fn conversation_io_modes(test: &str) -> Vec<&'static str> {
    match kernel_without_uring(true) {
        None => vec!["epoll", "uring"],
        Some(why) => {
            eprintln!("{test}: --io uring skipped: {why}");
            vec!["epoll"]
        }
    }
}
