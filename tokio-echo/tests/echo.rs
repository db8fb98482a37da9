//! `tokio-echo` driven as a user (or `compare`) drives it: the real binary,
//! started on 127.0.0.1:0, [::1]:0 or a temporary socket path, waited for by
//! its `listening` line, checked byte for byte, and stopped with a signal.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tokio-echo");
const TIMEOUT: Duration = Duration::from_secs(20);

/// A fresh directory for socket files, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tokio-echo-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `tokio-echo`, killed if a test ends without stopping it.
struct Server {
    child: Option<Child>,
    listening: String,
    lines: mpsc::Receiver<String>,
}

/// The value of `key=` in a `key=value key=value` line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tokio-echo");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let listening = loop {
            match lines.recv_timeout(TIMEOUT) {
                Ok(line) if line.starts_with("listening ") => break line,
                Ok(_) => continue,
                Err(_) => {
                    let _ = child.kill();
                    panic!("tokio-echo {args:?} printed no listening line: {:?}", child.wait());
                }
            }
        };
        Server {
            child: Some(child),
            listening,
            lines,
        }
    }

    fn addr(&self) -> SocketAddr {
        field(&self.listening, "addr").unwrap().parse().unwrap()
    }

    /// Sends `signal`, waits for the exit, returns it with the summary line.
    fn stop_with(mut self, signal: i32) -> (ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("tokio-echo did not stop within 5 s of signal {signal}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let summary = std::iter::from_fn(|| self.lines.recv_timeout(Duration::from_secs(2)).ok())
            .find(|l| l.starts_with("summary "))
            .unwrap_or_default();
        (status, summary)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Bytes that differ from message to message and along each message.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(31) ^ seed.wrapping_mul(131)) as u8)
        .collect()
}

/// Sends each message on a stream and reads its echo back exactly, with a
/// writer thread so a large message cannot deadlock on full buffers.
fn check_stream<S: Read + Write + Send + 'static>(mut reader: S, writer: S, what: &str) {
    let messages: Vec<Vec<u8>> = [1, 128, 4096, 200_000].iter().map(|&n| pattern(n as u64, n)).collect();
    let all: Vec<u8> = messages.concat();
    let sender = {
        let (mut writer, all) = (writer, all.clone());
        std::thread::spawn(move || writer.write_all(&all))
    };
    let mut back = vec![0u8; all.len()];
    reader.read_exact(&mut back).unwrap_or_else(|e| panic!("{what}: {e}"));
    sender.join().unwrap().unwrap();
    assert!(back == all, "{what}: the echo differs from what was sent");
}

fn check_stopped(server: Server, min_messages: u64) {
    let (status, summary) = server.stop_with(libc::SIGTERM);
    assert!(status.success(), "exit {status:?}");
    let messages: u64 = field(&summary, "messages").and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!(messages >= min_messages, "{summary:?}");
    assert_eq!(field(&summary, "backend"), Some("tokio"), "{summary:?}");
}

#[test]
fn tcp_over_ipv4_and_ipv6() {
    for addr in ["127.0.0.1:0", "[::1]:0"] {
        let server = Server::start(&["--transport", "tcp", "--addr", addr, "--threads", "2"]);
        for key in ["transport=tcp", "backend=tokio", "threads=2", "pin=none"] {
            assert!(server.listening.contains(key), "{key}: {}", server.listening);
        }
        let c = TcpStream::connect(server.addr()).unwrap();
        c.set_read_timeout(Some(TIMEOUT)).unwrap();
        check_stream(c.try_clone().unwrap(), c, addr);
        check_stopped(server, 1);
    }
}

/// A client that shuts down its write side gets all of its echo, then EOF.
#[test]
fn tcp_half_close_gets_the_echo_then_eof() {
    let server = Server::start(&["--addr", "127.0.0.1:0"]);
    let mut c = TcpStream::connect(server.addr()).unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    let msg = pattern(7, 5000);
    c.write_all(&msg).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    assert!(back == msg);
    check_stopped(server, 1);
}

#[test]
fn udp_over_ipv4_and_ipv6() {
    for (addr, client) in [("127.0.0.1:0", "127.0.0.1:0"), ("[::1]:0", "[::1]:0")] {
        let server = Server::start(&["--transport", "udp", "--addr", addr, "--threads", "2"]);
        let sock = UdpSocket::bind(client).unwrap();
        sock.connect(server.addr()).unwrap();
        check_datagrams(|m| sock.send(m), |b| sock.recv(b), addr);
        check_stopped(server, 4);
    }
}

/// Datagrams of 0 B to 60 KiB come back whole; each is retried if lost.
fn check_datagrams(
    send: impl Fn(&[u8]) -> std::io::Result<usize>,
    recv: impl Fn(&mut [u8]) -> std::io::Result<usize>,
    what: &str,
) {
    let mut buf = vec![0u8; 70_000];
    for (i, len) in [0usize, 1, 1400, 60_000].into_iter().enumerate() {
        let msg = pattern(i as u64, len);
        let deadline = Instant::now() + TIMEOUT;
        let n = loop {
            send(&msg).unwrap();
            match recv(&mut buf) {
                Ok(n) => break n,
                Err(e) if Instant::now() < deadline => eprintln!("{what}: retrying a lost datagram: {e}"),
                Err(e) => panic!("{what}: no echo of a {len} B datagram: {e}"),
            }
        };
        assert!(buf[..n] == msg[..], "{what}: the {len} B datagram came back different");
    }
}

#[test]
fn unix_stream_and_its_socket_file() {
    let dir = TempDir::new("unix");
    let path = dir.path("echo.sock");
    let server = Server::start(&["--transport", "unix", "--path", path.to_str().unwrap()]);
    assert_eq!(field(&server.listening, "addr").map(Path::new), Some(path.as_path()));
    let c = UnixStream::connect(&path).unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    check_stream(c.try_clone().unwrap(), c, "unix");
    check_stopped(server, 1);
    assert!(!path.exists(), "the socket file it created must be removed on exit");
}

#[test]
fn unixgram() {
    let dir = TempDir::new("unixgram");
    let path = dir.path("echo.sock");
    let server = Server::start(&[
        "--transport",
        "unixgram",
        "--path",
        path.to_str().unwrap(),
        "--threads",
        "2",
    ]);
    let sock = UnixDatagram::bind(dir.path("client.sock")).unwrap();
    sock.connect(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    check_datagrams(|m| sock.send(m), |b| sock.recv(b), "unixgram");
    check_stopped(server, 4);
    assert!(!path.exists(), "the socket file it created must be removed on exit");
}

/// A file put in place of its socket while it runs is not the server's to delete.
#[test]
fn only_its_own_socket_file_is_removed() {
    let dir = TempDir::new("replaced");
    let path = dir.path("echo.sock");
    let server = Server::start(&["--transport", "unix", "--path", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"someone else's file").unwrap();
    let (status, _) = server.stop_with(libc::SIGINT);
    assert!(status.success(), "exit {status:?}");
    assert_eq!(std::fs::read(&path).unwrap(), b"someone else's file");
}

/// Pinned workers serve; SIGINT stops it with exit 0 as SIGTERM does.
#[test]
fn pinned_workers_and_sigint() {
    let server = Server::start(&["--addr", "127.0.0.1:0", "--threads", "2", "--pin", "0"]);
    assert!(server.listening.contains("pin=0"), "{}", server.listening);
    let mut c = TcpStream::connect(server.addr()).unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    c.write_all(b"pinned").unwrap();
    let mut back = [0u8; 6];
    c.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"pinned");
    let (status, summary) = server.stop_with(libc::SIGINT);
    assert!(status.success(), "exit {status:?}");
    assert!(summary.contains("accepted=1"), "{summary:?}");
}

/// A bad flag or an unusable address: exit 2, and the message names the flag.
#[test]
fn bad_flags_exit_2_naming_the_flag() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let cases: [(&[&str], &str); 7] = [
        (&["--transport", "carrier-pigeon"], "--transport"),
        (&["--addr", "nonsense"], "--addr"),
        (&["--threads", "0"], "--threads"),
        (&["--pin", "9999"], "--pin"),
        (&["--transport", "unix"], "--path"),
        (&["--transport", "tcp", "--path", "/tmp/x.sock"], "--path"),
        (&["--addr", &busy_addr], "--addr"),
    ];
    for (args, flag) in cases {
        let out = Command::new(BIN).args(args).stdin(Stdio::null()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(flag),
            "{args:?}: the message does not name {flag}: {stderr}"
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"), "{args:?}");
    }
}
