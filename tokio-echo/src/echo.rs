//! The echo itself: an accept loop and a task per connection for streams, a
//! receive loop per worker for datagrams.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket, UnixDatagram, UnixListener};

use crate::counts;

/// Each connection's read buffer (the uring backend's default buffer size).
const STREAM_BUF_BYTES: usize = 16 * 1024;
/// The largest datagram any transport carries; one more byte of buffer tells
/// a datagram that was cut from one that fit exactly.
const MAX_DATAGRAM: usize = 64 * 1024;
/// How long accept waits after running out of descriptors, as `server` does.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts TCP connections forever, each served by its own task.
pub async fn serve_tcp(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                counts::accepted();
                // Inherited from the listener on Linux; said again so that it
                // does not depend on that.
                if stream.set_nodelay(true).is_err() {
                    counts::error();
                }
                tokio::spawn(echo_stream(stream));
            }
            Err(e) => accept_failed(e).await,
        }
    }
}

/// Accepts Unix stream connections forever, each served by its own task.
pub async fn serve_unix(listener: UnixListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                counts::accepted();
                tokio::spawn(echo_stream(stream));
            }
            Err(e) => accept_failed(e).await,
        }
    }
}

/// A client that reset before we took it costs only that client. Anything
/// else (above all, out of descriptors) waits before accepting again rather
/// than spin; clients wait in the listen backlog meanwhile.
async fn accept_failed(e: io::Error) {
    counts::error();
    let client_gone = matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted
    );
    if !client_gone {
        tokio::time::sleep(ACCEPT_BACKOFF).await;
    }
}

/// Reads and writes back until the client shuts down its write side (then
/// everything has been echoed, and dropping the stream sends EOF) or fails.
async fn echo_stream<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let mut buf = vec![0u8; STREAM_BUF_BYTES];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => n,
            Err(_) => return counts::error(),
        };
        if stream.write_all(&buf[..n]).await.is_err() {
            return counts::error();
        }
        counts::echoed(n);
    }
}

/// Echoes UDP datagrams forever, each to the address it came from.
pub async fn serve_udp(socket: UdpSocket) {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(_) => {
                counts::error();
                continue;
            }
        };
        if n > MAX_DATAGRAM {
            counts::error(); // cut to fit: dropped, never echoed in part
            continue;
        }
        match socket.try_send_to(&buf[..n], from) {
            Ok(sent) => counts::echoed(sent),
            Err(_) => counts::error(),
        }
    }
}

/// Echoes Unix datagrams forever, each to the socket file it came from; one
/// such loop per worker shares the one socket.
pub async fn serve_unixgram(socket: Arc<UnixDatagram>) {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(_) => {
                counts::error();
                continue;
            }
        };
        // An unbound sender has no address to answer to.
        let Some(path) = from.as_pathname().filter(|_| n <= MAX_DATAGRAM) else {
            counts::error();
            continue;
        };
        // A peer that does not read its echoes: drop them, as a datagram may be lost.
        match socket.try_send_to(&buf[..n], path) {
            Ok(sent) => counts::echoed(sent),
            Err(_) => counts::error(),
        }
    }
}

/// The std socket of `fd`, in non-blocking mode as tokio needs it.
pub fn nonblocking<T: From<OwnedFd>>(fd: OwnedFd) -> io::Result<T> {
    sockbench::sys::set_nonblocking(std::os::fd::AsFd::as_fd(&fd), true)?;
    Ok(T::from(fd))
}
