//! The `fork` backend: the textbook process-per-connection server.
//!
//! **Streams.** The parent (the main thread) waits in `poll` for the
//! listener, `accept`s, and `fork`s a child per connection. The child closes
//! the listener, puts SIGINT/SIGTERM back to their defaults, echoes with
//! blocking `read`/`send` ([`blocking::serve_stream`]) and `_exit`s. The
//! parent closes its copy of the connection and goes back to `accept`.
//!
//! Children are reaped with `waitpid(WNOHANG)` after every accept and
//! whenever one exits: SIGCHLD writes to an eventfd the parent waits on
//! beside the listener and the stop eventfd ([`ChildExits`]), so an exited
//! child is a zombie only for a moment and an idle parent never wakes. `--max-conns` caps live children: at the cap the
//! parent stops accepting (new clients wait in the listen backlog) until a
//! child exits. It never accepts-and-refuses, and never forks past the cap.
//!
//! **Datagrams** have no connection to fork for: `--threads` children are
//! preforked, and all of them run [`blocking::serve_datagrams`] on the one
//! socket. The parent only waits, and replaces a child that dies early.
//!
//! **Stop.** A child blocks in `read`, `send` or `recvfrom` with no timeout,
//! so an idle child costs nothing. At a stop the parent closes the listener
//! and sends every child SIGTERM; the child's handler sets its stop flag and
//! shuts down its socket (its connection, or the shared datagram socket for
//! reading), which wakes the blocked call; the child publishes its counters
//! and exits. A child still there after [`STOP_GRACE`] gets SIGKILL. The
//! parent returns once every child is reaped.
//!
//! **After fork.** The process is multi-threaded (the server's stop backstop
//! is a thread), so a child may only make async-signal-safe calls: another
//! thread could have held the allocator's lock at the moment of the fork.
//! The child's buffer is therefore allocated by the parent before the first
//! fork (the child gets a copy-on-write copy), and the loops in
//! [`blocking`] make only syscalls. The counters are in shared memory
//! ([`Stats`]), so a child's counts reach the parent's summary. The parent
//! counts a connection open when it accepts it and closed when it reaps the
//! child that served it.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use super::blocking::{self, AcceptFailure};
use super::peer_budget::SharedPeerBudget;
use super::Backend;
use crate::serve::{ServeContext, ServerConfig, Shutdown, Stats};
use crate::sys::process::{self, ExitStatus, Forked, Pid};
use crate::sys::{self, signal};

pub struct Fork;

/// An eventfd that SIGCHLD makes readable: the parent sleeps on it instead
/// of reaping on a timer.
struct ChildExits {
    fd: OwnedFd,
}

impl ChildExits {
    fn install() -> io::Result<ChildExits> {
        let fd = sys::eventfd()?;
        // The handler writes to this fd for the rest of the process: the
        // server serves once, so it is never closed (see `Drop`).
        signal::install_child_exit_handler(fd.as_raw_fd())?;
        Ok(ChildExits { fd })
    }

    /// Resets the eventfd before a reap, so that an exit after it wakes the next wait.
    fn clear(&self) {
        let mut count = [0u8; 8];
        let _ = sys::read(self.fd.as_fd(), &mut count);
    }
}

impl Drop for ChildExits {
    fn drop(&mut self) {
        // A late SIGCHLD must not write into whatever reuses the fd number.
        let _ = signal::install_child_exit_handler(-1);
    }
}

/// How long children get to exit after SIGTERM before they are sent SIGKILL.
const STOP_GRACE: Duration = Duration::from_millis(500);

/// How long after SIGKILL before giving up.
const KILL_GRACE: Duration = Duration::from_millis(200);

const STOP_SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

impl Backend for Fork {
    fn serve(&self, ctx: ServeContext) -> io::Result<()> {
        if ctx.config.transport.is_stream() {
            serve_streams(ctx)
        } else {
            serve_datagrams(ctx)
        }
    }
}

/// Accept in the parent, a child per connection.
fn serve_streams(mut ctx: ServeContext) -> io::Result<()> {
    sys::set_nonblocking(ctx.socket.as_fd(), true)?;
    // Every child uses its copy of this buffer: allocated here, before any fork.
    let mut buf = vec![0u8; blocking::STREAM_BUF_BYTES];
    let cap = ctx.config.max_conns;
    ctx.ready(&format!("children_cap={cap}"));
    let ServeContext {
        socket: listener,
        config,
        stats,
        shutdown,
        ..
    } = ctx;

    let exits = ChildExits::install()?;
    let mut children = Children::default();
    let mut forked: usize = 0;
    while !shutdown.requested() {
        exits.clear();
        children.reap(|_, _| stats.conn_closed());
        if children.len() >= cap {
            // At the cap: leave new clients in the backlog until a child exits.
            blocking::wait_readable_or_stop(&[exits.fd.as_fd()], shutdown, None);
            continue;
        }
        blocking::wait_readable_or_stop(&[listener.as_fd(), exits.fd.as_fd()], shutdown, None);
        while children.len() < cap && !shutdown.requested() {
            let conn = match sys::accept(listener.as_fd(), false) {
                Ok(conn) => conn,
                Err(e) => match blocking::accept_failure(&e) {
                    AcceptFailure::Drained => break,
                    AcceptFailure::Retry => continue,
                    AcceptFailure::BackOff => {
                        stats.error();
                        blocking::wait_readable_or_stop(&[], shutdown, Some(blocking::ACCEPT_BACKOFF));
                        break;
                    }
                },
            };
            stats.conn_opened();
            if blocking::prepare_stream(conn.as_fd(), config.transport).is_err() {
                stats.error();
                stats.conn_closed();
                continue;
            }
            let worker = forked;
            let spawned = spawn_child((conn.as_fd(), libc::SHUT_RDWR), || {
                process::close_inherited(listener.as_fd());
                config.pin_worker(worker);
                blocking::serve_stream(conn.as_fd(), &mut buf, stats, shutdown);
                // `_exit` closes the connection; the stop handler may shut it down until then.
                0
            });
            // The parent's copy is closed at once: the child holds the connection.
            drop(conn);
            match spawned {
                Ok(pid) => {
                    children.insert(pid, worker);
                    forked = forked.wrapping_add(1);
                }
                Err(_) => {
                    // EAGAIN (process limit) or ENOMEM: that client is closed;
                    // pause rather than fail the next one the same way at once.
                    stats.error();
                    stats.conn_closed();
                    blocking::wait_readable_or_stop(&[], shutdown, Some(blocking::ACCEPT_BACKOFF));
                    break;
                }
            }
            // Keep zombies from piling up during a burst of short connections.
            children.reap(|_, _| stats.conn_closed());
        }
    }
    // Stop accepting: clients still in the backlog are refused, not left hanging.
    drop(listener);
    children.stop_all(|_, _| stats.conn_closed());
    Ok(())
}

/// `--threads` preforked children share the datagram socket.
fn serve_datagrams(mut ctx: ServeContext) -> io::Result<()> {
    let mut buf = vec![0u8; blocking::DGRAM_BUF_BYTES];
    let workers = ctx.config.threads;
    let (stats, shutdown) = (ctx.stats, ctx.shutdown);
    // Unixgram: one budget in shared memory for every child (see `peer_budget`).
    let budget = match ctx.config.transport.is_unix() {
        true => Some(SharedPeerBudget::new(ctx.socket.as_fd())?),
        false => None,
    };
    let exits = ChildExits::install()?;
    let mut children = Children::default();
    for slot in 0..workers {
        match spawn_datagram_child(ctx.socket.as_fd(), &ctx.config, slot, budget, &mut buf, stats, shutdown) {
            Ok(pid) => children.insert(pid, slot),
            Err(e) => {
                children.stop_all(|_, _| {});
                return Err(e);
            }
        }
    }
    ctx.ready(&format!("prefork={workers}"));

    // The parent has nothing to do but replace a child that dies early.
    let mut missing: Vec<usize> = Vec::new();
    while !shutdown.requested() {
        // A child that could not be replaced is retried after a pause.
        let retry = (!missing.is_empty()).then_some(blocking::ACCEPT_BACKOFF);
        blocking::wait_readable_or_stop(&[exits.fd.as_fd()], shutdown, retry);
        exits.clear();
        children.reap(|slot, _| {
            stats.error();
            missing.push(slot);
        });
        if shutdown.requested() {
            break;
        }
        let mut still_missing = Vec::new();
        for slot in missing.drain(..) {
            match spawn_datagram_child(ctx.socket.as_fd(), &ctx.config, slot, budget, &mut buf, stats, shutdown) {
                Ok(pid) => children.insert(pid, slot),
                Err(_) => still_missing.push(slot), // retried after a pause
            }
        }
        missing = still_missing;
    }
    // Every child's SIGTERM handler does this too; once is enough, and early.
    blocking::wake_blocked(ctx.socket.as_fd(), libc::SHUT_RD);
    children.stop_all(|_, _| {});
    Ok(())
}

fn spawn_datagram_child(
    sock: BorrowedFd<'_>,
    config: &ServerConfig,
    slot: usize,
    budget: Option<&'static SharedPeerBudget>,
    buf: &mut [u8],
    stats: &'static Stats,
    shutdown: Shutdown,
) -> io::Result<Pid> {
    spawn_child((sock, libc::SHUT_RD), || {
        config.pin_worker(slot);
        match budget {
            Some(mut budget) => blocking::serve_datagrams(sock, buf, &mut budget, stats, shutdown),
            None => blocking::serve_datagrams(sock, buf, &mut blocking::Unlimited, stats, shutdown),
        }
        0
    })
}

/// Forks; the child runs `child_main` and `_exit`s with its result, the
/// parent gets the child's pid. `child_main` must be async-signal-safe (see
/// the module docs). In the child, SIGINT/SIGTERM shut down `wake.0` with
/// `wake.1` ([`signal::install_child_stop_handler`]), waking its blocked call.
fn spawn_child(wake: (BorrowedFd<'_>, libc::c_int), child_main: impl FnOnce() -> i32) -> io::Result<Pid> {
    // Hold the stop signals in this thread across the fork: one arriving in
    // the child before it restored the defaults would run the parent's
    // handler there, which pokes the stop eventfd the parent shares. While
    // they are held here, the parent's stop signals go to another thread.
    let parent = process::current_pid();
    signal::thread_sigmask(libc::SIG_BLOCK, &STOP_SIGNALS)?;
    match process::fork() {
        Ok(Forked::Child) => {
            // The fork happens on the main thread, which lives as long as the
            // process, so the death signal fires only when the parent is gone.
            process::die_with_parent(parent);
            let _ = signal::install_child_stop_handler(wake.0.as_raw_fd(), wake.1);
            let _ = signal::thread_sigmask(libc::SIG_UNBLOCK, &STOP_SIGNALS);
            let code = child_main();
            process::exit_now(code)
        }
        Ok(Forked::Parent(pid)) => {
            let _ = signal::thread_sigmask(libc::SIG_UNBLOCK, &STOP_SIGNALS);
            Ok(pid)
        }
        Err(e) => {
            let _ = signal::thread_sigmask(libc::SIG_UNBLOCK, &STOP_SIGNALS);
            Err(e)
        }
    }
}

/// The live children, each with its worker slot (the connection's number
/// for streams, the preforked worker's index for datagrams).
#[derive(Default)]
struct Children {
    live: HashMap<Pid, usize>,
}

impl Children {
    fn insert(&mut self, pid: Pid, slot: usize) {
        self.live.insert(pid, slot);
    }

    fn len(&self) -> usize {
        self.live.len()
    }

    /// Reaps every child that has exited, calling `on_exit(slot, status)` for each.
    fn reap(&mut self, mut on_exit: impl FnMut(usize, ExitStatus)) {
        while let Ok(Some((pid, status))) = process::reap_any() {
            if let Some(slot) = self.live.remove(&pid) {
                on_exit(slot, status);
            }
        }
    }

    /// At a stop: sends every child SIGTERM (its handler wakes it, it
    /// publishes its counters and exits), then SIGKILL to stragglers,
    /// reaping every one. Bounded to well under the server's stop deadline.
    fn stop_all(&mut self, mut on_exit: impl FnMut(usize, ExitStatus)) {
        for (signal, grace) in [(libc::SIGTERM, STOP_GRACE), (libc::SIGKILL, KILL_GRACE)] {
            for &pid in self.live.keys() {
                let _ = process::kill(pid, signal);
            }
            if self.wait_all(grace, &mut on_exit) {
                return;
            }
        }
    }

    /// Reaps until no child is left (true) or `limit` passes (false).
    fn wait_all(&mut self, limit: Duration, on_exit: &mut impl FnMut(usize, ExitStatus)) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            self.reap(&mut *on_exit);
            if self.live.is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
