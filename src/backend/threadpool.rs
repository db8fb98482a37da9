//! The `threadpool` backend: an acceptor and a fixed pool of blocking workers.
//!
//! **Streams.** The acceptor (the main thread) waits in `poll` for the
//! listener, `accept`s, and sends each connection (its `OwnedFd`) over a
//! `crossbeam-channel` to `--threads` workers. A worker takes one connection,
//! echoes it with blocking `read`/`send` ([`blocking::serve_stream`]) until it
//! closes, and only then takes the next.
//!
//! **That is this model's cost, and it is deliberate:** a worker is busy for
//! the whole life of its connection. With N workers, connection N+1 waits in
//! the channel (the client is connected but gets no answer) until one of the
//! N closes; a client that never reads holds its worker, blocked in `send`
//! (which is the back-pressure), until it goes away or the server stops.
//!
//! `--max-conns` counts connections queued plus served; at the cap the
//! acceptor stops accepting (new clients wait in the listen backlog) until
//! one closes.
//!
//! **Datagrams.** Every worker blocks in `recvfrom` on the one shared
//! socket ([`blocking::serve_datagrams`]); the kernel hands each datagram to
//! one of them. The main thread only waits for the stop.
//!
//! **Stop.** The acceptor closes the listener; workers notice the stop within
//! [`blocking::WAKE_INTERVAL`] and close their connection; connections still
//! queued are closed unserved; `serve` returns once every worker is joined.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::blocking::{self, AcceptFailure};
use super::peer_budget::PeerBudget;
use super::Backend;
use crate::net::Transport;
use crate::server::{ServeContext, ServerConfig, Shutdown, Stats};
use crate::sys;

pub struct ThreadPool;

/// How often an acceptor at the `--max-conns` cap looks whether a connection closed.
const CAP_POLL_INTERVAL: Duration = Duration::from_millis(20);

impl Backend for ThreadPool {
    fn serve(&self, ctx: ServeContext) -> io::Result<()> {
        if ctx.config.transport.is_stream() {
            serve_streams(ctx)
        } else {
            serve_datagrams(ctx)
        }
    }
}

fn serve_streams(mut ctx: ServeContext) -> io::Result<()> {
    sys::set_nonblocking(ctx.socket.as_fd(), true)?;
    let (stats, shutdown, transport) = (ctx.stats, ctx.shutdown, ctx.config.transport);
    let cap = ctx.config.max_conns;
    // Unbounded, but never holds more than `cap`: `open` is checked before each accept.
    let (queue, requests) = crossbeam_channel::unbounded::<OwnedFd>();
    // Connections accepted and not yet closed: queued plus being served.
    let open = Arc::new(AtomicUsize::new(0));
    let workers = spawn_workers(&ctx.config, shutdown, |_| {
        let (requests, open) = (requests.clone(), open.clone());
        move || stream_worker(requests, &open, transport, stats, shutdown)
    })?;
    ctx.ready(&format!("workers={}", workers.len()));
    let ServeContext { socket: listener, .. } = ctx;

    while !shutdown.requested() {
        if open.load(Ordering::Acquire) >= cap {
            blocking::wait_readable_or_stop(None, shutdown, CAP_POLL_INTERVAL);
            continue;
        }
        blocking::wait_readable_or_stop(Some(listener.as_fd()), shutdown, blocking::WAKE_INTERVAL);
        while open.load(Ordering::Acquire) < cap && !shutdown.requested() {
            let conn = match sys::accept(listener.as_fd(), false) {
                Ok(conn) => conn,
                Err(e) => match blocking::accept_failure(&e) {
                    AcceptFailure::Drained => break,
                    AcceptFailure::Retry => continue,
                    AcceptFailure::BackOff => {
                        // Typically EMFILE: the workers keep serving, and the
                        // pending clients wait in the backlog until fds free up.
                        stats.error();
                        blocking::wait_readable_or_stop(None, shutdown, blocking::ACCEPT_BACKOFF);
                        break;
                    }
                },
            };
            stats.conn_opened();
            open.fetch_add(1, Ordering::AcqRel);
            if let Err(lost) = queue.send(conn) {
                // Only if every worker is gone (it panicked): close the client.
                drop(lost);
                stats.error();
                stats.conn_closed();
                open.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
    // Stop accepting: clients still in the backlog are refused, not left hanging.
    drop(listener);
    drop(queue);
    join_all(workers);
    // Whatever is still queued was never served: close it.
    for conn in requests.try_iter() {
        drop(conn);
        stats.conn_closed();
    }
    Ok(())
}

/// Serves one connection at a time from `requests` until the stop.
fn stream_worker(
    requests: Receiver<OwnedFd>,
    open: &AtomicUsize,
    transport: Transport,
    stats: &Stats,
    shutdown: Shutdown,
) {
    let mut buf = vec![0u8; blocking::STREAM_BUF_BYTES];
    while !shutdown.requested() {
        let conn = match requests.recv_timeout(blocking::WAKE_INTERVAL) {
            Ok(conn) => conn,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if blocking::prepare_stream(conn.as_fd(), transport).is_ok() {
            blocking::serve_stream(conn.as_fd(), &mut buf, stats, shutdown);
        } else {
            stats.error();
        }
        drop(conn);
        stats.conn_closed();
        open.fetch_sub(1, Ordering::AcqRel);
    }
}

fn serve_datagrams(mut ctx: ServeContext) -> io::Result<()> {
    blocking::set_wake_timeouts(ctx.socket.as_fd())?;
    let (stats, shutdown) = (ctx.stats, ctx.shutdown);
    // The workers share the socket; this thread keeps it until they are done.
    let sock = Arc::new(ctx.socket.try_clone()?);
    // Unixgram: one budget for the socket, shared by every worker (see `peer_budget`).
    let budget = ctx
        .config
        .transport
        .is_unix()
        .then(|| Arc::new(Mutex::new(PeerBudget::new(sock.as_fd(), 1))));
    let workers = spawn_workers(&ctx.config, shutdown, |_| {
        let (sock, budget) = (sock.clone(), budget.clone());
        move || {
            let mut buf = vec![0u8; blocking::DGRAM_BUF_BYTES];
            match &budget {
                Some(budget) => blocking::serve_datagrams(sock.as_fd(), &mut buf, &mut &**budget, stats, shutdown),
                None => blocking::serve_datagrams(sock.as_fd(), &mut buf, &mut blocking::Unlimited, stats, shutdown),
            }
        }
    })?;
    ctx.ready(&format!("workers={}", workers.len()));
    while !shutdown.requested() {
        blocking::wait_readable_or_stop(None, shutdown, blocking::WAKE_INTERVAL);
    }
    join_all(workers);
    Ok(())
}

/// Starts `--threads` workers, each pinned per `--pin`; `make(i)` builds
/// worker i's body. If one cannot be started, the server is stopped (that is
/// fatal), the others are joined, and the error returned.
fn spawn_workers<F, B>(config: &ServerConfig, shutdown: Shutdown, mut make: F) -> io::Result<Vec<JoinHandle<()>>>
where
    F: FnMut(usize) -> B,
    B: FnOnce() + Send + 'static,
{
    let mut workers = Vec::with_capacity(config.threads);
    for i in 0..config.threads {
        let body = make(i);
        let pin = config.clone();
        let spawned = std::thread::Builder::new().name(format!("worker-{i}")).spawn(move || {
            pin.pin_worker(i);
            body()
        });
        match spawned {
            Ok(handle) => workers.push(handle),
            Err(e) => {
                shutdown.request();
                join_all(workers);
                return Err(e);
            }
        }
    }
    Ok(workers)
}

fn join_all(workers: Vec<JoinHandle<()>>) {
    for w in workers {
        // A panicking worker already printed its message; the others still stop.
        let _ = w.join();
    }
}
