//! The blocking echo loops shared by the `fork` and `threadpool` backends.
//!
//! Both backends give one connection a whole thread or process, which sits
//! in a plain blocking `read` and `send`; for datagrams, every worker sits in
//! a blocking `recvfrom` on the one shared socket. A blocked call must still
//! notice a stop request, so each socket gets `SO_RCVTIMEO`/`SO_SNDTIMEO` of
//! [`WAKE_INTERVAL`] ([`set_wake_timeouts`]): a blocked call returns `EAGAIN`
//! at that interval, the loop checks for a stop and blocks again. An idle
//! connection costs ten wake-ups a second; a stop is seen within 100 ms.
//!
//! Back-pressure is the blocking `send` itself: a client that never reads
//! fills its socket buffers, `send` stops returning, and the loop stops
//! reading, so a connection never holds more than one buffer of output.
//!
//! Nothing in these loops allocates or takes a lock, because a forked child
//! of this multi-threaded process runs them: only syscalls and atomics.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use super::peer_budget::PeerBudget;
use crate::server::{LocalCounts, Shutdown, Stats};
use crate::sys::{self, SockAddr};

/// How often a blocked call wakes up to check for a stop request.
pub const WAKE_INTERVAL: Duration = Duration::from_millis(100);

/// Read buffer per stream connection. It is also the most echo output one
/// connection can have in flight in the server, well under
/// [`super::MAX_PENDING_BYTES`].
pub const STREAM_BUF_BYTES: usize = 64 * 1024;

/// Receive buffer per datagram worker: the largest datagram echoed (a UDP
/// payload is at most 65,527 bytes; a unixgram one can be larger and is then
/// dropped as an error, never echoed cut).
pub const DGRAM_BUF_BYTES: usize = 64 * 1024;

/// Echo operations between two flushes of the local counters to the shared
/// [`Stats`] (and between two stop checks while a peer keeps us busy).
const FLUSH_EVERY: u64 = 64;

/// Whether a stop has been requested. Threads see the flag; a forked child
/// has its own copy of the flag, which the parent's signal never sets, but it
/// shares the parent's stop eventfd, which becomes readable at the stop.
pub fn stop_requested(shutdown: Shutdown) -> bool {
    shutdown.requested() || poll_readable(&[shutdown.fd()], 0) > 0
}

/// Blocks until `fd` (if given) is readable, a stop is requested, or
/// `timeout` passes. The caller re-checks whatever it waits for.
pub fn wait_readable_or_stop(fd: Option<BorrowedFd<'_>>, shutdown: Shutdown, timeout: Duration) {
    let timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    match fd {
        Some(fd) => poll_readable(&[shutdown.fd(), fd], timeout_ms),
        None => poll_readable(&[shutdown.fd()], timeout_ms),
    };
}

/// `poll(2)` for `POLLIN` on up to two descriptors; returns how many are
/// ready (0 on timeout, `EINTR` or error: callers only use it to wait).
fn poll_readable(fds: &[BorrowedFd<'_>], timeout_ms: i32) -> usize {
    let mut pfds = [libc::pollfd {
        fd: -1,
        events: libc::POLLIN,
        revents: 0,
    }; 2];
    for (pfd, fd) in pfds.iter_mut().zip(fds) {
        pfd.fd = fd.as_raw_fd();
    }
    let n = fds.len().min(pfds.len());
    // SAFETY: `pfds` holds `n` initialised pollfd entries and outlives the call.
    crate::syscall!(poll(pfds.as_mut_ptr(), n as libc::nfds_t, timeout_ms)).map_or(0, |r| r as usize)
}

/// Sets `SO_RCVTIMEO` and `SO_SNDTIMEO` to [`WAKE_INTERVAL`], so blocking
/// reads and sends on `fd` come back regularly to check for a stop.
pub fn set_wake_timeouts(fd: BorrowedFd<'_>) -> io::Result<()> {
    sys::set_socket_timeout(fd, libc::SO_RCVTIMEO, WAKE_INTERVAL)?;
    sys::set_socket_timeout(fd, libc::SO_SNDTIMEO, WAKE_INTERVAL)
}

/// True for the error a blocking call returns when its socket timeout passes.
fn timed_out(e: &io::Error) -> bool {
    sys::would_block(e)
}

fn interrupted(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINTR)
}

/// How a stream connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The client shut down its write side; everything it sent was echoed
    /// and our write side has been shut down too, so it sees EOF.
    Eof,
    /// A stop was requested; the connection is abandoned.
    Stopped,
    /// The connection failed (reset, `EPIPE`, ...). Counted once, by [`Stats::conn_failed`].
    Failed,
}

/// Echoes one stream connection with blocking `read` and `send` until the
/// client closes, the connection fails or a stop is requested. `conn` must
/// have [`set_wake_timeouts`] applied. Counts echoes and the error (if any)
/// into `stats`; the caller closes `conn` and counts the close.
pub fn serve_stream(conn: BorrowedFd<'_>, buf: &mut [u8], stats: &Stats, shutdown: Shutdown) -> StreamEnd {
    let mut counts = LocalCounts::default();
    let end = echo_stream(conn, buf, &mut counts, stats, shutdown);
    counts.flush(stats);
    match end {
        Ok(StreamEnd::Eof) => {
            // Every byte has been sent; the FIN follows it. The peer may
            // already be gone, which changes nothing for us.
            let _ = sys::shutdown(conn, libc::SHUT_WR);
            StreamEnd::Eof
        }
        Ok(other) => other,
        Err(e) => {
            // One count per failed connection: a client that hung up mid-echo
            // is `closed_with_pending`, anything else an error.
            stats.conn_failed(&e);
            StreamEnd::Failed
        }
    }
}

fn echo_stream(
    conn: BorrowedFd<'_>,
    buf: &mut [u8],
    counts: &mut LocalCounts,
    stats: &Stats,
    shutdown: Shutdown,
) -> io::Result<StreamEnd> {
    loop {
        let n = match sys::read(conn, buf) {
            Ok(0) => return Ok(StreamEnd::Eof),
            Ok(n) => n,
            Err(e) if timed_out(&e) => {
                // Idle: a good moment to publish the counts.
                counts.flush(stats);
                if stop_requested(shutdown) {
                    return Ok(StreamEnd::Stopped);
                }
                continue;
            }
            Err(e) if interrupted(&e) => continue,
            Err(e) => return Err(e),
        };
        if !send_all(conn, &buf[..n], shutdown)? {
            return Ok(StreamEnd::Stopped);
        }
        counts.echoed(n);
        if counts.messages >= FLUSH_EVERY {
            counts.flush(stats);
            // A client that never pauses never lets a read time out.
            if stop_requested(shutdown) {
                return Ok(StreamEnd::Stopped);
            }
        }
    }
}

/// Sends all of `data`, blocking while the peer's window is full. Returns
/// `Ok(false)` if a stop was requested before everything went out.
fn send_all(conn: BorrowedFd<'_>, mut data: &[u8], shutdown: Shutdown) -> io::Result<bool> {
    while !data.is_empty() {
        match sys::send(conn, data) {
            Ok(n) => data = &data[n..],
            Err(e) if timed_out(&e) => {
                // The client is not reading: keep waiting (that is the
                // back-pressure) unless the server is stopping.
                if stop_requested(shutdown) {
                    return Ok(false);
                }
            }
            Err(e) if interrupted(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Echoes datagrams on the shared socket `sock` with blocking `recvfrom`
/// until a stop is requested. `sock` must have [`set_wake_timeouts`]
/// applied; several workers may run this on the same socket at once.
///
/// Each datagram goes back unchanged to its sender. Counted as an error and
/// dropped: a datagram larger than `buf` (never echoed cut), one from an
/// unnamed unixgram socket (there is no address to answer), and one whose
/// echo cannot be sent. Echoes are sent with `MSG_DONTWAIT`: a unixgram peer
/// whose receive queue is full (it stopped reading) would otherwise stall
/// the worker, and with it every other client, for the whole send timeout.
///
/// `budget` decides whether an echo may be queued (see [`AnswerBudget`]);
/// a refused echo is dropped and counted as an error.
pub fn serve_datagrams(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    budget: &mut impl AnswerBudget,
    stats: &Stats,
    shutdown: Shutdown,
) {
    let mut counts = LocalCounts::default();
    let mut since_check = 0u64;
    loop {
        match sys::recv_from(sock, buf) {
            Ok((n, _)) if n > buf.len() => stats.error(),
            Ok((_, from)) if is_unnamed_unix(&from) => stats.error(),
            Ok((n, from)) if !budget.allow(sock, &from, n) => stats.error(),
            Ok((n, from)) => match send_to_nowait(sock, &buf[..n], &from) {
                Ok(_) => counts.echoed(n),
                Err(_) => stats.error(),
            },
            Err(e) if timed_out(&e) => {
                counts.flush(stats);
                if stop_requested(shutdown) {
                    break;
                }
                continue;
            }
            Err(e) if interrupted(&e) => continue,
            Err(_) => {
                // Not expected on a bound datagram socket; count it and pause
                // so that a persistent error cannot turn into a busy loop.
                stats.error();
                wait_readable_or_stop(None, shutdown, Duration::from_millis(10));
            }
        }
        since_check += 1;
        if since_check >= FLUSH_EVERY {
            since_check = 0;
            counts.flush(stats);
            // A steady flood never lets `recvfrom` time out.
            if stop_requested(shutdown) {
                break;
            }
        }
    }
    counts.flush(stats);
}

/// A Unix-domain sender that never bound a name: its address is only the
/// family, and nothing can be sent back to it.
fn is_unnamed_unix(addr: &SockAddr) -> bool {
    addr.family() == libc::AF_UNIX && addr.len() as usize <= std::mem::size_of::<libc::sa_family_t>()
}

/// `sendto(2)` with `MSG_DONTWAIT | MSG_NOSIGNAL` on a blocking socket.
fn send_to_nowait(fd: BorrowedFd<'_>, data: &[u8], to: &SockAddr) -> io::Result<usize> {
    // SAFETY: `data` and `to` are live for the call, with their true lengths.
    crate::syscall!(sendto(
        fd.as_raw_fd(),
        data.as_ptr() as *const libc::c_void,
        data.len(),
        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        to.as_ptr(),
        to.len()
    ))
    .map(|n| n as usize)
}

/// Readies an accepted stream connection for [`serve_stream`]: wake-up
/// timeouts, and `TCP_NODELAY` on TCP (an echo is answered in one send;
/// Nagle would hold back the tail of a large echo behind a delayed ACK).
pub fn prepare_stream(conn: BorrowedFd<'_>, transport: crate::net::Transport) -> io::Result<()> {
    set_wake_timeouts(conn)?;
    if transport == crate::net::Transport::Tcp {
        sys::setsockopt_int(conn, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    }
    Ok(())
}

/// What to do after `accept` failed with `e`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptFailure {
    /// Nothing (more) to accept now.
    Drained,
    /// That one connection failed before we got it (aborted, interrupted); accept the next.
    Retry,
    /// Out of descriptors or memory, or an unexpected error: count it, and
    /// wait [`ACCEPT_BACKOFF`] before accepting again instead of spinning.
    BackOff,
}

/// How long an acceptor pauses after an accept error it cannot retry at once
/// (typically `EMFILE`): the pending clients stay in the listen backlog.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Classifies an `accept` error on a non-blocking listener.
pub fn accept_failure(e: &io::Error) -> AcceptFailure {
    if sys::would_block(e) {
        return AcceptFailure::Drained;
    }
    match e.raw_os_error() {
        // accept(2): these are errors of the new connection, not of the listener.
        Some(
            libc::EINTR
            | libc::ECONNABORTED
            | libc::EPROTO
            | libc::ENETDOWN
            | libc::ENOPROTOOPT
            | libc::EHOSTDOWN
            | libc::ENONET
            | libc::EHOSTUNREACH
            | libc::ENETUNREACH
            | libc::EPERM,
        ) => AcceptFailure::Retry,
        // EMFILE/ENFILE/ENOBUFS/ENOMEM (`sys::out_of_fds`) and anything else.
        _ => AcceptFailure::BackOff,
    }
}

/// Decides, before each datagram echo, whether it may be queued. A unixgram
/// echo stays charged to the server's send buffer until the client reads it,
/// and the kernel skips the receive-queue limit for a client connected to the
/// server: a client that floods and never reads would fill the shared send
/// buffer for good and starve everyone (see `backend/peer_budget.rs`).
pub trait AnswerBudget {
    /// Whether to echo `len` bytes to `peer` from `sock` (and account them if so).
    fn allow(&mut self, sock: BorrowedFd<'_>, peer: &SockAddr, len: usize) -> bool;
}

/// No budget: UDP echoes are never held by the peer (a full receive queue
/// drops them at the peer, not in our send buffer).
pub struct Unlimited;

impl AnswerBudget for Unlimited {
    fn allow(&mut self, _: BorrowedFd<'_>, _: &SockAddr, _: usize) -> bool {
        true
    }
}

/// The shared [`PeerBudget`] of a unixgram socket, for workers that are threads.
impl AnswerBudget for &std::sync::Mutex<PeerBudget> {
    fn allow(&mut self, sock: BorrowedFd<'_>, peer: &SockAddr, len: usize) -> bool {
        let mut budget = self.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // One SIOCOUTQ per datagram: blocking workers have no batches to spread it over.
        budget.update(sock);
        budget.allow(peer.as_bytes(), len)
    }
}

/// A process's own [`PeerBudget`] (fork's preforked datagram children).
impl AnswerBudget for PeerBudget {
    fn allow(&mut self, sock: BorrowedFd<'_>, peer: &SockAddr, len: usize) -> bool {
        self.update(sock);
        PeerBudget::allow(self, peer.as_bytes(), len)
    }
}
