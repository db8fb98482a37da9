//! The blocking echo loops shared by the `fork` and `threadpool` backends.
//!
//! Both backends give one connection a whole thread or process, which sits
//! in a plain blocking `read` and `send`; for datagrams, every worker sits in
//! a blocking `recvfrom` on the one shared socket.
//!
//! **Idle means idle.** A blocked call sleeps until there is work or a stop,
//! never on a timer: an idle connection costs no CPU at all. A stop reaches a
//! blocked call by shutting down its socket, which wakes `read`, `send` and
//! `recvfrom` at once (`read`/`recvfrom` return 0, `send` fails with
//! `EPIPE`); the loop then sees the stop flag and returns [`StreamEnd::Stopped`]
//! without counting anything. Whoever stops the workers does the shutdown:
//! threadpool's main thread for the connections its workers hold and for the
//! shared datagram socket, and, in a fork child, the child's own SIGTERM
//! handler ([`crate::sys::signal::install_child_stop_handler`]). The socket's
//! shutdown state persists, so a stop that lands just before the worker
//! blocks is not lost.
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

use super::peer_budget::SharedPeerBudget;
use crate::serve::{LocalCounts, Shutdown, Stats};
use crate::sys::{self, SockAddr};

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
/// has its own copy of the flag, which its stop handler sets, and shares the
/// parent's stop eventfd, which becomes readable at the stop. Costs a `poll`:
/// for the moments a loop is about to give up, not for every message.
pub fn stop_requested(shutdown: Shutdown) -> bool {
    shutdown.requested() || poll_readable(&[shutdown.fd()], 0) > 0
}

/// Blocks until one of `fds` (at most two) is readable, a stop is requested,
/// or `timeout` passes (`None`: no timeout). The caller re-checks whatever it waits for.
pub fn wait_readable_or_stop(fds: &[BorrowedFd<'_>], shutdown: Shutdown, timeout: Option<Duration>) {
    let timeout_ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
    let mut all = [shutdown.fd(); 3];
    let n = 1 + fds.len().min(2);
    all[1..n].copy_from_slice(&fds[..n - 1]);
    poll_readable(&all[..n], timeout_ms);
}

/// `poll(2)` for `POLLIN` on up to three descriptors; returns how many are
/// ready (0 on timeout, `EINTR` or error: callers only use it to wait).
fn poll_readable(fds: &[BorrowedFd<'_>], timeout_ms: i32) -> usize {
    let mut pfds = [libc::pollfd {
        fd: -1,
        events: libc::POLLIN,
        revents: 0,
    }; 3];
    for (pfd, fd) in pfds.iter_mut().zip(fds) {
        pfd.fd = fd.as_raw_fd();
    }
    let n = fds.len().min(pfds.len());
    // SAFETY: `pfds` holds `n` initialised pollfd entries and outlives the call.
    crate::syscall!(poll(pfds.as_mut_ptr(), n as libc::nfds_t, timeout_ms)).map_or(0, |r| r as usize)
}

/// Wakes every worker blocked on `sock` at a stop: `SHUT_RDWR` for a
/// connection, `SHUT_RD` for a shared datagram socket (its workers may still
/// be sending). The error (`ENOTCONN` on an unconnected datagram socket, which
/// is shut down all the same) is of no use.
pub fn wake_blocked(sock: BorrowedFd<'_>, how: libc::c_int) {
    let _ = sys::shutdown(sock, how);
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
/// client closes, the connection fails or a stop is requested (and `conn`
/// is shut down, see the module docs). Counts echoes and the failure (if
/// any) into `stats`; the caller closes `conn` and counts the close.
pub fn serve_stream(conn: BorrowedFd<'_>, buf: &mut [u8], stats: &Stats, shutdown: Shutdown) -> StreamEnd {
    let mut counts = LocalCounts::default();
    let end = echo_stream(conn, buf, &mut counts, stats, shutdown);
    counts.flush(stats);
    match end {
        // A shut-down socket reads as EOF or fails: at a stop, neither is the client's doing.
        Ok(StreamEnd::Eof) | Err(_) if stop_requested(shutdown) => StreamEnd::Stopped,
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
            // A fork child's stop handler interrupts the call (no SA_RESTART).
            Err(e) if interrupted(&e) && shutdown.requested() => return Ok(StreamEnd::Stopped),
            Err(e) if interrupted(&e) => continue,
            Err(e) => return Err(e),
        };
        if !send_all(conn, &buf[..n], shutdown)? {
            return Ok(StreamEnd::Stopped);
        }
        counts.echoed(n);
        if counts.messages >= FLUSH_EVERY {
            counts.flush(stats);
            // A client that never pauses would otherwise keep us past a stop.
            if shutdown.requested() {
                return Ok(StreamEnd::Stopped);
            }
        }
    }
}

/// Sends all of `data`, blocking while the peer's window is full (that is the
/// back-pressure). Returns `Ok(false)` if a stop interrupted it.
fn send_all(conn: BorrowedFd<'_>, mut data: &[u8], shutdown: Shutdown) -> io::Result<bool> {
    while !data.is_empty() {
        match sys::send(conn, data) {
            Ok(n) => data = &data[n..],
            Err(e) if interrupted(&e) && shutdown.requested() => return Ok(false),
            Err(e) if interrupted(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Echoes datagrams on the shared socket `sock` with blocking `recvfrom`
/// until a stop is requested and `sock` is shut down for reading
/// ([`wake_blocked`]); several workers may run this on the same socket at once.
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
            // A socket shut down for the stop reads as empty; a real empty
            // datagram is echoed as any other.
            Ok((0, _)) if stop_requested(shutdown) => break,
            Ok((n, _)) if n > buf.len() => stats.error(),
            Ok((_, from)) if is_unnamed_unix(&from) => stats.error(),
            Ok((n, from)) if !budget.allow(sock, &from, n) => stats.error(),
            Ok((n, from)) => match send_to_nowait(sock, &buf[..n], &from) {
                Ok(_) => counts.echoed(n),
                Err(_) => stats.error(),
            },
            Err(e) if interrupted(&e) && shutdown.requested() => break,
            Err(e) if interrupted(&e) => continue,
            Err(_) => {
                // Not expected on a bound datagram socket; count it and pause
                // so that a persistent error cannot turn into a busy loop.
                stats.error();
                wait_readable_or_stop(&[], shutdown, Some(Duration::from_millis(10)));
                if stop_requested(shutdown) {
                    break;
                }
            }
        }
        since_check += 1;
        if since_check >= FLUSH_EVERY {
            since_check = 0;
            counts.flush(stats);
            // A steady flood never leaves the queue empty for the shutdown to show.
            if shutdown.requested() {
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

/// Readies an accepted stream connection for [`serve_stream`]: `TCP_NODELAY`
/// on TCP (an echo is answered in one send; Nagle would hold back the tail of
/// a large echo behind a delayed ACK).
pub fn prepare_stream(conn: BorrowedFd<'_>, transport: crate::net::Transport) -> io::Result<()> {
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

/// The [`SharedPeerBudget`] of a unixgram socket; a budget held too long
/// by another worker refuses the echo rather than wait.
impl AnswerBudget for &SharedPeerBudget {
    fn allow(&mut self, sock: BorrowedFd<'_>, peer: &SockAddr, len: usize) -> bool {
        let Some(mut budget) = self.lock() else { return false };
        // One SIOCOUTQ per datagram: blocking workers have no batches to spread it over.
        budget.update(sock);
        budget.allow(peer.as_bytes(), len)
    }
}
