//! The `epoll` backend: one edge-triggered event loop per thread over
//! non-blocking sockets.
//!
//! Each of the `--threads` workers owns an epoll instance, pinned with
//! `--pin`. Streams are served by [`stream::StreamLoop`] (accept until
//! `EAGAIN`, read until `EAGAIN` or a short read, partial writes kept per connection and
//! resumed on `EPOLLOUT`); datagrams by [`dgram::DgramLoop`] (`recvmmsg` and
//! `sendmmsg` in batches).
//!
//! # How the threads share the address
//!
//! - **IP (tcp, udp): `SO_REUSEPORT`, one socket per thread.** Every worker
//!   binds its own socket to the resolved address, and the kernel hashes each
//!   flow to one of them. There is no shared accept queue to contend on, no
//!   thundering herd, and a worker that is busy only delays the flows hashed
//!   to it. For UDP this is the only way for several threads to receive
//!   without sharing one socket's queue lock.
//! - **Unix (unix, unixgram): one shared socket, `EPOLLEXCLUSIVE`.** Linux
//!   has no `SO_REUSEPORT` for `AF_UNIX`, so every worker registers the one
//!   socket with `EPOLLEXCLUSIVE`, which wakes one idle waiter per event
//!   instead of all of them. A busy worker still gets the event queued on its
//!   ready list, so no wakeup is lost; the woken worker accepts (or receives)
//!   until `EAGAIN`, and the others just see `EAGAIN`.
//!
//! # Descriptor tables
//!
//! `RLIMIT_NOFILE` bounds a descriptor table, not a process. Each stream
//! worker takes a table of its own once its listener and epoll instance are
//! set up ([`own_table`], `unshare(CLONE_FILES)`), so `--threads` workers
//! hold that many tables of connections: the `listening` line's `cap=TxS`.
//! A connection is then known only to the worker that accepted it, which is
//! how this backend works anyway.
//!
//! # Tokens
//!
//! Connection state lives in a slab keyed by the epoll token (its index);
//! the top of the token space is reserved for [`SHUTDOWN_TOKEN`] (the stop
//! eventfd, never read: it stays readable) and [`SOCKET_TOKEN`] (the
//! listener or datagram socket).
//!
//! # Stop
//!
//! Every loop watches the stop eventfd, so a stop request wakes all of them
//! at once. Each worker then stops accepting, closes its connections and
//! returns, and [`Epoll::serve`] joins them.

mod dgram;
mod stream;

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use super::workers::{self, WorkerSockets};
use super::Backend;
use crate::serve::{LocalCounts, ServeContext, Shutdown, Stats};
use crate::sys;

/// Token of the stop eventfd.
const SHUTDOWN_TOKEN: u64 = u64::MAX;
/// Token of the listener (streams) or the datagram socket.
const SOCKET_TOKEN: u64 = u64::MAX - 1;
/// Events taken from one `epoll_wait`.
const EVENTS_PER_WAIT: usize = 256;

/// Gives the calling stream worker a descriptor table of its own
/// (`unshare(CLONE_FILES)`), a copy of the process's as it is now, with the
/// listeners, the epoll instances and the stop eventfd in it. The
/// connections it accepts from then on are in its table only, so the
/// `RLIMIT_NOFILE` that bounds each table bounds each worker, and `--threads`
/// workers hold that many tables of connections. Returns the worker's own
/// copy of its epoll instance `epoll`.
///
/// What this costs: a descriptor opened by one worker afterwards is unknown
/// to every other thread, so nothing may pass a connection between workers
/// (none does: a connection lives and dies on the worker that accepted it);
/// and each table holds a copy of every descriptor open at the time, so a
/// listener is closed only once every worker has exited (they are joined
/// before `serve` returns).
fn own_table(epoll: RawFd) -> io::Result<OwnedFd> {
    crate::syscall!(unshare(libc::CLONE_FILES))?;
    // SAFETY: after the unshare, descriptor `epoll` in this thread's table is
    // a copy that only this worker uses and closes; the process's copy is
    // closed by its own `OwnedFd` in the main thread's table.
    Ok(unsafe { OwnedFd::from_raw_fd(epoll) })
}

/// The epoll backend. See the module documentation.
pub struct Epoll;

/// How the workers share the server address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sharing {
    /// One `SO_REUSEPORT` socket per worker (IP transports).
    ReusePort,
    /// One socket registered by every worker with `EPOLLEXCLUSIVE` (Unix transports).
    Exclusive,
}

impl Sharing {
    fn name(self) -> &'static str {
        match self {
            Sharing::ReusePort => "reuseport",
            Sharing::Exclusive => "exclusive",
        }
    }
}

/// What all workers share: read-only settings and the global connection count.
struct Shared {
    stats: &'static Stats,
    shutdown: Shutdown,
    conns: ConnLimit,
    /// unixgram: the send-buffer budget all workers share (see `dgram`).
    unix_budget: Option<&'static super::peer_budget::SharedPeerBudget>,
}

/// `--max-conns` across all threads. A slot is reserved before `accept` and
/// given back if the accept fails, so the cap holds exactly even when several
/// workers accept at once.
struct ConnLimit {
    open: AtomicUsize,
    max: usize,
}

impl ConnLimit {
    fn try_acquire(&self) -> bool {
        self.open
            .fetch_update(Relaxed, Relaxed, |n| (n < self.max).then_some(n + 1))
            .is_ok()
    }

    fn release(&self) {
        self.open.fetch_sub(1, Relaxed);
    }

    fn has_room(&self) -> bool {
        self.open.load(Relaxed) < self.max
    }
}

/// One worker's counters, added to [`Stats`] once per loop turn.
#[derive(Default)]
struct Counts {
    echo: LocalCounts,
    errors: u64,
    /// Connections the client closed with an echo in flight (not errors).
    closed_with_pending: u64,
}

impl Counts {
    /// Adds this turn's counts to `stats`, including bytes sent in a turn
    /// with no new message (a backlog drained on `EPOLLOUT`).
    fn flush(&mut self, stats: &Stats) {
        self.echo.flush(stats);
        if self.errors != 0 {
            stats.errors.fetch_add(self.errors, Relaxed);
            self.errors = 0;
        }
        if self.closed_with_pending != 0 {
            stats.closed_with_pending.fetch_add(self.closed_with_pending, Relaxed);
            self.closed_with_pending = 0;
        }
    }
}

impl Backend for Epoll {
    fn serve(&self, mut ctx: ServeContext) -> io::Result<()> {
        let threads = ctx.config.threads.max(1);
        let transport = ctx.config.transport;
        let sharing = if transport.is_unix() {
            Sharing::Exclusive
        } else {
            Sharing::ReusePort
        };

        // All setup that can fail happens before `ready`.
        sys::set_nonblocking(ctx.socket.as_fd(), true)?;
        let sockets = WorkerSockets::bind(transport, &ctx.local, ctx.socket.as_fd(), threads, true)?;
        let mut epolls: Vec<OwnedFd> = Vec::with_capacity(threads);
        for i in 0..threads {
            let epoll = sys::epoll_create()?;
            let mut events = (libc::EPOLLIN | libc::EPOLLET) as u32;
            if sharing == Sharing::Exclusive {
                events |= libc::EPOLLEXCLUSIVE as u32;
            }
            sys::epoll_ctl(
                epoll.as_fd(),
                libc::EPOLL_CTL_ADD,
                sockets.get(i).as_raw_fd(),
                events,
                SOCKET_TOKEN,
            )?;
            // Level-triggered: the eventfd stays readable once a stop is requested.
            let stop_fd = ctx.shutdown.fd().as_raw_fd();
            sys::epoll_ctl(
                epoll.as_fd(),
                libc::EPOLL_CTL_ADD,
                stop_fd,
                libc::EPOLLIN as u32,
                SHUTDOWN_TOKEN,
            )?;
            epolls.push(epoll);
        }

        let details = if transport.is_stream() {
            format!(
                "listeners={} read_buf={} max_pending={}",
                sharing.name(),
                stream::READ_BUF_BYTES,
                super::MAX_PENDING_BYTES
            )
        } else {
            format!(
                "sockets={} batch={} buf={}",
                sharing.name(),
                dgram::BATCH_SLOTS,
                dgram::SLOT_BYTES
            )
        };
        let unix_budget = workers::unix_budget(transport, ctx.socket.as_fd())?;
        ctx.ready(&details);

        let shared = Shared {
            stats: ctx.stats,
            shutdown: ctx.shutdown,
            conns: ConnLimit {
                open: AtomicUsize::new(0),
                max: ctx.config.max_conns,
            },
            unix_budget,
        };
        // The process's copies of the epoll instances stay here, and close
        // when `serve` returns; each worker serves with its own.
        let epoll_fds: Vec<RawFd> = epolls.iter().map(|e| e.as_raw_fd()).collect();
        let work = |i: usize, epoll: RawFd| {
            let socket = sockets.get(i);
            if transport.is_stream() {
                stream::StreamLoop::new(&shared, own_table(epoll)?, socket).run()
            } else {
                // SAFETY: nothing else closes this descriptor: the process's
                // copy is `epolls[i]`, dropped only after every worker is joined,
                // and this duplicate is the worker's alone.
                let epoll = unsafe { BorrowedFd::borrow_raw(epoll) }.try_clone_to_owned()?;
                dgram::DgramLoop::new(&shared, epoll, socket).run()
            }
        };
        let result = workers::run("epoll", &ctx.config, ctx.shutdown, epoll_fds, work, || Ok(()));
        drop(epolls);
        result
    }
}
