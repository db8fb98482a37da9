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
//! **Why the default pool is not sized to the connections.** A fixed pool
//! is what this design is: its user picks it to see what N blocking workers
//! do when more clients than N come, as a servlet container or Apache's
//! worker limit does. Sizing the pool silently to `--max-conns` (16,384
//! threads by default) would make it thread-per-connection, which `fork`
//! already measures, and would be refused by [`check_capacity`] on a small
//! machine. So the pool stays `--threads` (one per core by default), and
//! the server says so where a user looks: at start, when fewer workers than
//! `--max-conns`, stderr says how many connections are served at once and
//! that the rest wait unanswered; the `listening` line has `at_once=N`; and
//! the summary's `queued_max` is the most connections that waited for a
//! worker at once. A run that wants every connection served gives
//! `--threads` at least the connection count.
//!
//! **Datagrams.** Every worker blocks in `recvfrom` on the one shared
//! socket ([`blocking::serve_datagrams`]); the kernel hands each datagram to
//! one of them. The main thread only waits for the stop.
//!
//! **Idle means idle.** A worker blocks in the channel's `recv`, in `read`
//! or in `send`, with no timeout: an idle pool costs no CPU. At a stop the
//! acceptor closes the listener and the channel (waking the workers that wait
//! for a connection), and shuts down every connection a worker is serving
//! (waking its blocked `read` or `send`); connections still queued are closed
//! unserved; `serve` returns once every worker is joined. For datagrams the
//! shared socket is shut down for reading, which wakes every `recvfrom`.
//!
//! **As many workers as the machine allows.** Each worker has a
//! [`WORKER_STACK_BYTES`] stack and takes its 64 KiB read buffer only when it
//! gets its first connection, so 10,000 workers (one per connection, the C10K
//! question asked of this model) cost about 10,000 × 100 KiB at most. Before
//! spawning, [`check_capacity`] holds `--threads` against `RLIMIT_NPROC`,
//! `kernel.threads-max`, `kernel.pid_max` and available memory, and refuses
//! with a message naming the limit rather than failing half-way.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::Receiver;

use super::blocking::{self, AcceptFailure};
use super::peer_budget::SharedPeerBudget;
use super::Backend;
use crate::net::Transport;
use crate::serve::{ServeContext, ServerConfig, Shutdown, Stats};
use crate::sys;

pub struct ThreadPool;

/// Connections accepted and not yet closed (queued plus being served),
/// against `--max-conns`. A worker that closes one while the acceptor is at
/// the cap makes `room` readable, so the acceptor sleeps until then instead
/// of looking on a timer.
struct OpenConns {
    count: AtomicUsize,
    cap: usize,
    room: OwnedFd,
}

impl OpenConns {
    fn new(cap: usize) -> io::Result<OpenConns> {
        Ok(OpenConns {
            count: AtomicUsize::new(0),
            cap,
            room: sys::eventfd()?,
        })
    }

    fn has_room(&self) -> bool {
        self.count() < self.cap
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    fn opened(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
    }

    fn closed(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) >= self.cap {
            let one = 1u64.to_ne_bytes();
            let _ = sys::write(self.room.as_fd(), &one);
        }
    }

    /// At the cap: sleeps until a connection closes or a stop.
    fn wait_for_room(&self, shutdown: Shutdown) {
        let mut count = [0u8; 8];
        let _ = sys::read(self.room.as_fd(), &mut count); // reset, then look again
        if !self.has_room() {
            blocking::wait_readable_or_stop(&[self.room.as_fd()], shutdown, None);
        }
    }
}

/// Stack of each worker. The echo loop's frames (`recv`, `read`, `send`, a
/// few atomics; the buffer is on the heap) and a panic message need a few
/// KiB; 64 KiB leaves a wide margin, and only the pages touched are resident.
pub const WORKER_STACK_BYTES: usize = 64 * 1024;

/// Kernel memory per thread besides its stack: the kernel stack (16 KiB on
/// x86-64) and the task structures.
const KERNEL_BYTES_PER_THREAD: u64 = 24 * 1024;

/// Threads the process needs besides the workers (main, stop backstop) and
/// room for the rest of the system to start a few processes meanwhile.
const THREAD_HEADROOM: u64 = 64;

/// Checks that `threads` workers fit the machine before any is spawned:
/// `RLIMIT_NPROC` (which counts threads; the kernel exempts root, the server
/// honours the limit the user set), `kernel.threads-max` and `kernel.pid_max`
/// (each thread takes a pid) against the threads already running, and
/// `MemAvailable` against each worker's stack, read buffer and kernel share.
/// The message names the limit that does not fit.
pub fn check_capacity(threads: usize) -> Result<(), String> {
    let threads = threads as u64;
    let running = crate::procfs::threads_on_machine().unwrap_or(0);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    if crate::syscall!(getrlimit(libc::RLIMIT_NPROC, &mut lim)).is_ok()
        && lim.rlim_cur != libc::RLIM_INFINITY
        && threads + THREAD_HEADROOM > lim.rlim_cur
    {
        return Err(format!(
            "RLIMIT_NPROC (`ulimit -u`) is {}, too low for {threads} worker threads; raise it or lower --threads",
            lim.rlim_cur
        ));
    }
    for (sysctl, path) in [
        ("kernel.threads-max", "/proc/sys/kernel/threads-max"),
        ("kernel.pid_max", "/proc/sys/kernel/pid_max"),
    ] {
        let Some(max) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
        else {
            continue;
        };
        if running + threads + THREAD_HEADROOM > max {
            return Err(format!(
                "{sysctl} is {max} and {running} threads are running: no room for {threads} more; lower --threads"
            ));
        }
    }
    let per_worker = (WORKER_STACK_BYTES + blocking::STREAM_BUF_BYTES) as u64 + KERNEL_BYTES_PER_THREAD;
    if let Some(available) = crate::procfs::mem_available_bytes() {
        if threads * per_worker > available {
            return Err(format!(
                "{threads} workers need up to {} MiB ({} KiB each) and {} MiB are available; lower --threads",
                (threads * per_worker) >> 20,
                per_worker >> 10,
                available >> 20
            ));
        }
    }
    Ok(())
}

/// The connection each worker is serving, so that a stop can shut it down
/// and wake the worker's blocked `read` or `send`. The `Arc` keeps the
/// descriptor open while it is listed here, so the stop can never shut down
/// a reused descriptor number.
struct Serving {
    slots: Vec<Mutex<Option<Arc<OwnedFd>>>>,
}

impl Serving {
    fn new(workers: usize) -> Serving {
        Serving {
            slots: (0..workers).map(|_| Mutex::new(None)).collect(),
        }
    }

    fn slot(&self, worker: usize) -> std::sync::MutexGuard<'_, Option<Arc<OwnedFd>>> {
        self.slots[worker]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// At a stop (after the stop flag is set): wakes every worker serving a
    /// connection. A worker that lists one after this sees the flag.
    fn wake_all(&self) {
        for i in 0..self.slots.len() {
            if let Some(conn) = self.slot(i).as_ref() {
                blocking::wake_blocked(conn.as_fd(), libc::SHUT_RDWR);
            }
        }
    }
}

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
    // Unbounded, but never holds more than `--max-conns`: `open` is checked before each accept.
    let (queue, requests) = crossbeam_channel::unbounded::<OwnedFd>();
    let open = Arc::new(OpenConns::new(ctx.config.max_conns)?);
    let serving = Arc::new(Serving::new(ctx.config.threads));
    let workers = spawn_workers(&ctx.config, shutdown, |i| {
        let (requests, open, serving) = (requests.clone(), open.clone(), serving.clone());
        move || stream_worker(i, requests, &open, &serving, transport, stats, shutdown)
    })?;
    let pool = workers.len();
    announce_pool(pool, ctx.config.max_conns);
    ctx.ready(&format!("workers={0} at_once={0}", workers.len()));
    let ServeContext { socket: listener, .. } = ctx;

    while !shutdown.requested() {
        if !open.has_room() {
            open.wait_for_room(shutdown);
            continue;
        }
        blocking::wait_readable_or_stop(&[listener.as_fd()], shutdown, None);
        while open.has_room() && !shutdown.requested() {
            let conn = match sys::accept(listener.as_fd(), false) {
                Ok(conn) => conn,
                Err(e) => match blocking::accept_failure(&e) {
                    AcceptFailure::Drained => break,
                    AcceptFailure::Retry => continue,
                    AcceptFailure::BackOff => {
                        // Typically EMFILE: the workers keep serving, and the
                        // pending clients wait in the backlog until fds free up.
                        stats.error();
                        blocking::wait_readable_or_stop(&[], shutdown, Some(blocking::ACCEPT_BACKOFF));
                        break;
                    }
                },
            };
            stats.conn_opened();
            open.opened();
            if let Err(lost) = queue.send(conn) {
                // Only if every worker is gone (it panicked): close the client.
                drop(lost);
                stats.error();
                stats.conn_closed();
                open.closed();
            }
            // Open beyond what the pool serves at once: connected, and left
            // unanswered until a worker is free. (Not the channel's length,
            // which also counts, for a moment, those a free worker is about
            // to take.)
            stats.queued(open.count().saturating_sub(pool) as u64);
        }
    }
    // Stop accepting: clients still in the backlog are refused, not left hanging.
    drop(listener);
    // Wakes the workers waiting for a connection, then those serving one.
    drop(queue);
    serving.wake_all();
    join_all(workers);
    // Whatever is still queued was never served: close it.
    for conn in requests.try_iter() {
        drop(conn);
        stats.conn_closed();
    }
    Ok(())
}

/// Says on stderr, at start, that at most `workers` connections are served
/// at once when `--max-conns` lets more in (see the module doc).
fn announce_pool(workers: usize, max_conns: usize) {
    if workers < max_conns {
        eprintln!(
            "server: note: threadpool serves {workers} connections at once (one per worker, --threads {workers}); \
             up to {} more are accepted and wait unanswered for a free worker (the summary's queued_max counts them)",
            max_conns - workers
        );
    }
}

/// Worker `worker`: serves one connection at a time from `requests` until
/// the stop closes the channel.
fn stream_worker(
    worker: usize,
    requests: Receiver<OwnedFd>,
    open: &OpenConns,
    serving: &Serving,
    transport: Transport,
    stats: &Stats,
    shutdown: Shutdown,
) {
    // Taken at the first connection: a worker that never serves costs no buffer.
    let mut buf = Vec::new();
    while let Ok(conn) = requests.recv() {
        let conn = Arc::new(conn);
        *serving.slot(worker) = Some(conn.clone());
        // Listed first, then the flag: a stop either sees the listing or is seen here.
        if !shutdown.requested() {
            if buf.is_empty() {
                buf = vec![0u8; blocking::STREAM_BUF_BYTES];
            }
            if blocking::prepare_stream(conn.as_fd(), transport).is_ok() {
                blocking::serve_stream(conn.as_fd(), &mut buf, stats, shutdown);
            } else {
                stats.error();
            }
        }
        // Unlisted before the close, under the lock the stop takes.
        serving.slot(worker).take();
        drop(conn);
        stats.conn_closed();
        open.closed();
    }
}

fn serve_datagrams(mut ctx: ServeContext) -> io::Result<()> {
    let (stats, shutdown) = (ctx.stats, ctx.shutdown);
    // The workers share the socket; this thread keeps it until they are done.
    let sock = Arc::new(ctx.socket.try_clone()?);
    // Unixgram: one budget for the socket, shared by every worker (see `peer_budget`).
    let budget = match ctx.config.transport.is_unix() {
        true => Some(SharedPeerBudget::new(sock.as_fd())?),
        false => None,
    };
    let workers = spawn_workers(&ctx.config, shutdown, |_| {
        let sock = sock.clone();
        move || {
            let mut buf = vec![0u8; blocking::DGRAM_BUF_BYTES];
            match budget {
                Some(mut budget) => blocking::serve_datagrams(sock.as_fd(), &mut buf, &mut budget, stats, shutdown),
                None => blocking::serve_datagrams(sock.as_fd(), &mut buf, &mut blocking::Unlimited, stats, shutdown),
            }
        }
    })?;
    ctx.ready(&format!("workers={}", workers.len()));
    while !shutdown.requested() {
        blocking::wait_readable_or_stop(&[], shutdown, None);
    }
    // Every worker's blocked recvfrom returns; they see the stop and end.
    blocking::wake_blocked(sock.as_fd(), libc::SHUT_RD);
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
        let spawned = std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .stack_size(WORKER_STACK_BYTES)
            .spawn(move || {
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
