//! Nothing of the user's is clobbered or hijacked: the server deletes only
//! the socket file it bound, never takes over a live socket of either kind,
//! and refuses an IP address another socket holds despite `SO_REUSEPORT`.

mod common;

use std::os::unix::net::{UnixDatagram, UnixListener};
use std::process::Command;
use std::time::Duration;

use common::{server_bin, ServerProc, Target, TempDir};

/// Runs a server that is expected to refuse to start; returns (exit code,
/// stderr). One that starts instead is killed after 5 s and gets code -1.
fn refused(args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(server_bin());
    cmd.args(args);
    let (code, stderr) = common::run_to_exit(cmd, Duration::from_secs(5));
    (code.unwrap_or(-1), stderr)
}

fn start_on_path(backend: &str, transport: &str, path: &std::path::Path) -> ServerProc {
    let mut cmd = Command::new(server_bin());
    cmd.args(["--backend", backend, "--transport", transport, "--path"])
        .arg(path);
    ServerProc::spawn(cmd, None).unwrap_or_else(|e| panic!("{backend}/{transport}: {e}"))
}

/// A file put in place of the socket while the server runs survives its exit.
#[test]
fn a_file_that_replaced_the_socket_is_not_deleted_at_exit() {
    for transport in ["unix", "unixgram"] {
        let dir = TempDir::new("replaced");
        let path = dir.path("server.sock");
        let server = start_on_path("epoll", transport, &path);
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"the user's data").unwrap();
        let stopped = server.stop();
        assert!(stopped.status.success(), "{transport}: {:?}", stopped.status);
        let left = std::fs::read(&path).unwrap_or_else(|e| panic!("{transport}: the user's file was deleted: {e}"));
        assert_eq!(left, b"the user's data", "{transport}");
    }
}

/// The server's own socket file is still removed at exit.
#[test]
fn its_own_socket_file_is_removed_at_exit() {
    for transport in ["unix", "unixgram"] {
        let dir = TempDir::new("own");
        let path = dir.path("server.sock");
        let server = start_on_path("threadpool", transport, &path);
        assert!(path.exists());
        assert!(server.stop().status.success());
        assert!(!path.exists(), "{transport}: socket file left behind");
    }
}

/// A live socket of either kind on the path is refused (exit 2), whatever the
/// new server's kind; it keeps working afterwards.
#[test]
fn a_live_socket_of_any_kind_is_never_taken_over() {
    for first in ["unix", "unixgram"] {
        for second in ["unix", "unixgram"] {
            let dir = TempDir::new("live");
            let path = dir.path("server.sock");
            let server = start_on_path("epoll", first, &path);
            let path_s = path.to_str().unwrap();
            let (code, stderr) = refused(&["--backend", "uring", "--transport", second, "--path", path_s]);
            assert_eq!(code, 2, "{first} then {second}: exit {code}: {stderr}");
            assert!(
                stderr.contains("--path") && stderr.contains("in use"),
                "{first} then {second}: {stderr}"
            );
            // The first server still owns the path and serves on it.
            let ep = server.endpoint.clone();
            let target = if first == "unix" {
                Target::Unix
            } else {
                Target::Unixgram
            };
            if target.is_stream() {
                let mut c = common::client::Stream::connect(&ep).unwrap();
                assert_eq!(c.echo(b"still mine").unwrap(), b"still mine");
            } else {
                let cdir = TempDir::new("livec");
                let c = common::client::Dgram::connect(&ep, &cdir.0, 1).unwrap();
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                assert_eq!(c.echo(b"still mine", deadline).unwrap(), b"still mine");
            }
            assert!(server.stop().status.success());
        }
    }
}

/// Sockets bound by other programs count too, and a stale socket (nobody
/// bound to it any more) is replaced.
#[test]
fn foreign_live_sockets_are_refused_and_stale_ones_replaced() {
    let dir = TempDir::new("foreign");
    let stream_path = dir.path("stream.sock");
    let dgram_path = dir.path("dgram.sock");
    let listener = UnixListener::bind(&stream_path).unwrap();
    let dgram = UnixDatagram::bind(&dgram_path).unwrap();
    for path in [&stream_path, &dgram_path] {
        for transport in ["unix", "unixgram"] {
            let (code, stderr) = refused(&[
                "--backend",
                "fork",
                "--transport",
                transport,
                "--path",
                path.to_str().unwrap(),
            ]);
            assert_eq!(code, 2, "{transport} on {}: {stderr}", path.display());
        }
    }
    // Closed sockets leave stale files behind: those are replaced.
    drop(listener);
    drop(dgram);
    for (path, transport) in [(&stream_path, "unixgram"), (&dgram_path, "unix")] {
        let server = start_on_path("epoll", transport, path);
        assert!(server.stop().status.success());
    }
}

/// A second server on a TCP or UDP port a server already holds is refused
/// with exit 2, across backends, though both set `SO_REUSEPORT`.
#[test]
fn a_held_tcp_or_udp_port_is_refused() {
    for (target, transport) in [(Target::Tcp4, "tcp"), (Target::Tcp6, "tcp"), (Target::Udp4, "udp")] {
        let first = ServerProc::start("epoll", target, &["--threads", "2"]);
        let addr = first.inet().to_string();
        for backend in ["uring", "epoll", "threadpool", "fork"] {
            let (code, stderr) = refused(&["--backend", backend, "--transport", transport, "--addr", &addr]);
            assert_eq!(code, 2, "{backend} on {transport} {addr}: exit {code}: {stderr}");
            assert!(stderr.contains("--addr") && stderr.contains("in use"), "{stderr}");
        }
        assert!(first.stop().status.success());
    }
}

/// A port held by another program's plain (non-reuseport) socket is refused
/// too, and the server still serves on its own several per-thread sockets.
#[test]
fn a_port_held_by_another_program_is_refused_and_own_threads_share() {
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = other.local_addr().unwrap().to_string();
    let (code, stderr) = refused(&["--backend", "epoll", "--addr", &addr]);
    assert_eq!(code, 2, "{stderr}");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let uaddr = udp.local_addr().unwrap().to_string();
    let (code, stderr) = refused(&["--backend", "uring", "--transport", "udp", "--addr", &uaddr]);
    assert_eq!(code, 2, "{stderr}");
    // Four threads, four SO_REUSEPORT sockets on one port: still one server.
    let server = ServerProc::start("epoll", Target::Tcp4, &["--threads", "4"]);
    for i in 0..20u64 {
        let mut c = common::client::Stream::connect(&server.endpoint).unwrap();
        let msg = common::client::pattern(i, 0, 100);
        assert!(c.echo(&msg).unwrap() == msg);
    }
    assert!(server.stop().status.success());
}
