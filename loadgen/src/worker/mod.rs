//! One event-loop thread: epoll over its share of the connections, closed or
//! open loop, every echoed byte checked. With `--io uring`, stream connections
//! move to an io_uring once connected ([`ring`]); epoll still watches connects,
//! except for conversations, which live on the ring from `socket` to `close`
//! ([`ring_conversation`]).
//!
//! Connection `c` (global id) belongs to thread `c % threads`. Its first
//! connect is due at `c / connect_rate`, so connects are paced over all
//! threads together. In open loop, message `i` of the global schedule is due
//! at `load_start + i / rate` and goes to connection `i % conns`; each thread
//! walks only the messages of its own connections, so the total schedule is
//! exact however many connections and threads there are.
//!
//! A connection's state is typed by its transport: [`stream::StreamConn`] and
//! [`datagram::DatagramConn`] are both a [`Conn`] over their own connected
//! state, and the thread's [`Worker`] is generic over it, so stream code never
//! sees a datagram window and the other way round. The socket lives inside the
//! states that have one ([`Life::Pending`], [`Life::Up`]): a connection that
//! is idle or dead has no descriptor to reach for.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Acquire, Ordering::Relaxed};
use std::sync::{mpsc, Mutex};
use std::time::Instant;

use sockbench::net::{Endpoint, Transport};
use sockbench::sys as ssys;

mod conversation;
mod datagram;
mod drain;
mod ring;
mod ring_conversation;
pub mod send_bufs;
mod stamp;
mod stream;
pub mod timers;

use crate::cli::IoMode;
use crate::stats::{Interval, Msg, Recorder, ThreadTotals};
use drain::Drain;
pub use ring_conversation::{check_conversation_ring, HIDE_OPCODE_ENV};
use timers::{Due, Timers};

/// An atomic time that is not set yet.
pub const UNSET: u64 = u64::MAX;
/// How soon a connection is looked at again when its oldest message is
/// overdue but cannot be counted yet (its last bytes are still unsent).
const RECHECK_NS: u64 = 20_000_000;
/// Longest sleep, so that report ticks, stop and timeouts are noticed promptly.
const MAX_WAIT_NS: u64 = 5_000_000;
const BUF_LEN: usize = 64 * 1024;
/// Most connect attempts (first connects and retries) one loop turn starts.
/// A connect is not always cheap: once more than half of a source address's
/// ports toward the server are taken, the kernel's port search (even ports
/// first) walks the full half before it finds one, about a millisecond per
/// connect at 25,000 connections per address. Without a bound, a thread whose
/// retries kept coming due stayed in its connect loop for good: no echo sent,
/// no timeout counted, `stop` not seen (the 100,000-connection run of
/// docs/scaling.md). What is left waits for the next turn, which comes at once.
const CONNECTS_PER_TURN: usize = 64;
/// Open loop: most messages waiting on one connection (16 MiB of bookkeeping),
/// so that a stalled server cannot make loadgen's memory grow without bound.
const MAX_QUEUED: usize = 1 << 20;

/// What every thread is told to do.
#[derive(Debug)]
pub struct Plan {
    pub transport: Transport,
    pub endpoint: Endpoint,
    pub conns: u64,
    pub size: usize,
    pub depth: u64,
    /// Open-loop total rate; `None` is closed loop.
    pub rate: Option<f64>,
    /// Open loop: a message due within this many nanoseconds is sent now.
    pub slack_ns: u64,
    pub timeout_ns: u64,
    pub connect_rate: f64,
    pub threads: usize,
    /// Where unixgram clients bind their own sockets.
    pub unixgram_dir: Option<PathBuf>,
    /// How stream connections do their I/O.
    pub io: IoMode,
    /// `--conn-msgs`: each connection is a conversation of this many
    /// echoes, then closes and connects again (see `conversation.rs`).
    pub conn_msgs: Option<u64>,
    /// `--local-addrs`: each connection's source address.
    pub sources: crate::source::SourceAddrs,
}

/// State the main thread and the event loops share. Times are nanoseconds since `t0`.
#[derive(Debug)]
pub struct Shared {
    pub t0: Instant,
    /// When load starts (all connections up): closed loops fill, the open-loop schedule begins.
    pub load_start_ns: AtomicU64,
    pub measure_start_ns: AtomicU64,
    pub end_ns: AtomicU64,
    pub stop: AtomicBool,
    /// Bumped by the main thread once per report interval; threads then send an [`Interval`].
    pub tick: AtomicU64,
    /// Connections up right now.
    pub open: AtomicU64,
    /// Connections that were ever up.
    pub ever_up: AtomicU64,
    /// When the first connect was started, and when the last of `--conns`
    /// came up (`UNSET` if they did not all come up): the connect ramp.
    pub first_connect_ns: AtomicU64,
    pub all_up_ns: AtomicU64,
    /// The last connect error, for the "cannot reach" message.
    pub last_connect_error: Mutex<Option<String>>,
    /// Failed connect attempts so far, and how many of them were refused
    /// (`ECONNREFUSED`): the main thread fails fast when all are.
    pub connects_failed: AtomicU64,
    pub connects_refused: AtomicU64,
    /// The last reason a live connection was lost.
    pub last_loss: Mutex<Option<String>>,
    /// With `--io auto`: why io_uring could not be used, if it could not.
    pub io_fallback: Mutex<Option<String>>,
    /// Timestamped receives (open loop over TCP) that came without the
    /// kernel's timestamp: each made its thread wait for every echo from
    /// then on (see `ring.rs`).
    pub unstamped: AtomicU64,
    /// A ring that works without a fixed file table or a registered index,
    /// and why (see `ring.rs`): each echo then costs a descriptor lookup.
    pub plain_fds: Mutex<Option<String>>,
    /// Why a thread ended the run on purpose (with `stop`), in words for
    /// the user: e.g. out of source ports, naming `--local-addrs`.
    pub fatal: Mutex<Option<String>>,
    /// Threads whose end-of-run drain is over (or that are leaving anyway):
    /// none closes its connections before all have drained (see [`Drain`]).
    pub drained_threads: AtomicU64,
}

impl Shared {
    pub fn new() -> Shared {
        Shared {
            t0: Instant::now(),
            load_start_ns: AtomicU64::new(UNSET),
            measure_start_ns: AtomicU64::new(UNSET),
            end_ns: AtomicU64::new(UNSET),
            stop: AtomicBool::new(false),
            tick: AtomicU64::new(0),
            open: AtomicU64::new(0),
            ever_up: AtomicU64::new(0),
            first_connect_ns: AtomicU64::new(UNSET),
            all_up_ns: AtomicU64::new(UNSET),
            last_connect_error: Mutex::new(None),
            connects_failed: AtomicU64::new(0),
            connects_refused: AtomicU64::new(0),
            last_loss: Mutex::new(None),
            io_fallback: Mutex::new(None),
            unstamped: AtomicU64::new(0),
            plain_fds: Mutex::new(None),
            fatal: Mutex::new(None),
            drained_threads: AtomicU64::new(0),
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    /// Seconds from the first connect to the last of the run's connections
    /// up, if they all came up.
    pub fn connect_ramp_s(&self) -> Option<f64> {
        let (first, all) = (self.first_connect_ns.load(Relaxed), self.all_up_ns.load(Relaxed));
        (first != UNSET && all != UNSET).then(|| all.saturating_sub(first) as f64 / 1e9)
    }
}

impl Default for Shared {
    fn default() -> Self {
        Shared::new()
    }
}

/// A socket a connection owns: its descriptor, and for a unixgram client the
/// path it is bound to, removed when the socket is dropped.
struct Socket {
    /// `None`: a direct descriptor, which lives only in the ring's fixed file
    /// table, at the connection's slot (conversations on io_uring, see
    /// `ring_conversation.rs`); the ring closes it, not a drop.
    fd: Option<OwnedFd>,
    /// Boxed: a stream's is always `None`, and the inline path would make
    /// every connection's state 8 bytes longer (see [`Conn`]).
    bound_path: Option<Box<std::path::Path>>,
}

impl Socket {
    /// A socket that lives in the ring's fixed file table only.
    fn direct() -> Socket {
        Socket {
            fd: None,
            bound_path: None,
        }
    }

    fn is_direct(&self) -> bool {
        self.fd.is_none()
    }

    /// The descriptor of a socket that has one (every socket off the ring's
    /// conversation path, the only one that makes direct sockets).
    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_ref().expect("a socket with a descriptor").as_fd()
    }

    /// The descriptor, or -1 for a direct socket.
    fn raw_fd(&self) -> RawFd {
        self.fd.as_ref().map_or(-1, |f| f.as_raw_fd())
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        if let Some(p) = self.bound_path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Where a connection is in its life. `P` is what the transport keeps once
/// it is up; the socket lives only in the states that have one.
enum Life<P> {
    /// Waiting for the first connect or a retry.
    Idle {
        retry_at: u64,
    },
    /// Stream: connect in progress. Datagram: waiting for the echo of its probe.
    Pending {
        sock: Socket,
        since: u64,
    },
    Up(Up<P>),
    /// Lost for good (a live connection is never reconnected).
    Dead,
}

impl<P> Life<P> {
    fn is_up(&self) -> bool {
        matches!(self, Life::Up(_))
    }

    fn up_mut(&mut self) -> Option<&mut Up<P>> {
        match self {
            Life::Up(up) => Some(up),
            _ => None,
        }
    }
}

/// A connection that is up.
struct Up<P> {
    sock: Socket,
    /// The socket took everything so far (epoll mode; always true on the ring).
    writable: bool,
    /// Stream: messages not yet fully echoed, from the checker's `seq` on.
    /// Datagram: not yet sent.
    queue: VecDeque<Msg>,
    proto: P,
}

/// One client connection over transport state `P`.
///
/// Aligned to a cache line, and for a stream at most two of them (a test
/// says so): the event loop visits connections in the order their echoes
/// come back, so at 10,000 connections nearly every visit misses the cache,
/// and a connection straddling three lines costs a third miss. (A
/// datagram connection, bigger, is padded to three.)
#[repr(align(64))]
struct Conn<P> {
    id: u32,
    /// Failed connect attempts so far (they set the back-off; saturates).
    failures: u16,
    /// Queued in `Worker::dirty` for a send this turn.
    dirty: bool,
    life: Life<P>,
}

/// What a transport adds to the generic event loop. Each method gets the
/// whole worker, typed by that transport's connection state.
trait Proto: Sized {
    /// Opens a non-blocking socket for connection `id` and starts its connect.
    fn open(plan: &Plan, id: u32) -> io::Result<Socket>;
    /// The state of connection `id` when it comes up.
    fn new_up(plan: &Plan, id: u32) -> Self;
    /// Connection `k` just went `Pending` (a datagram client sends its probe).
    fn pending(w: &mut Worker<'_, Self>, k: usize, now: u64);
    /// Connection `k` just came up (a stream moves to the ring, if there is one).
    fn attach(w: &mut Worker<'_, Self>, k: usize) -> io::Result<()>;
    /// An epoll event for connection `k`.
    fn on_event(w: &mut Worker<'_, Self>, k: usize, bits: u32, now: u64);
    /// Sends what connection `k` (up and writable) has queued.
    fn send(w: &mut Worker<'_, Self>, k: usize, now: u64);
    /// How long a connect (or probe) may take.
    fn connect_timeout_ns(plan: &Plan) -> u64;
    /// The drain begins: a connection that is up drops the messages it
    /// queued but never started to send; returns whether echoes are still
    /// owed to it (so that the drain waits for it). Datagram clients are
    /// not drained (see [`Drain`]).
    fn stop_new(_up: &mut Up<Self>) -> bool {
        false
    }
    /// A connection that is up still waits for echoes.
    fn owed(_up: &Up<Self>) -> bool {
        false
    }
    /// Counts connection `k`'s connect and echo timeouts due at `now`;
    /// returns when its next one could be, if it has one pending.
    fn expire(w: &mut Worker<'_, Self>, k: usize, now: u64) -> Option<u64>;
    /// The connection completed at least one echo (it carried load).
    fn carried_load(up: &Up<Self>) -> bool;
    /// Waits for I/O until `until` (nanoseconds since `t0`) at the latest and
    /// handles it. Unless `exact`, the wait may run to the next periodic tick
    /// instead (at most `MAX_WAIT_NS`).
    fn wait(w: &mut Worker<'_, Self>, until: u64, exact: bool) -> io::Result<()>;
}

struct Worker<'a, P> {
    index: usize,
    plan: &'a Plan,
    shared: &'a Shared,
    ep: OwnedFd,
    conns: Vec<Conn<P>>,
    buf: Vec<u8>,
    sendbuf: Vec<u8>,
    rec: Recorder,
    tx: mpsc::Sender<Interval>,
    seen_tick: u64,
    /// Connections waiting to reconnect, soonest first.
    retry: BinaryHeap<Reverse<Due>>,
    next_connect: usize,
    load_start: u64,
    sched_c: u64,
    sched_cycle: u64,
    ns_per_msg: f64,
    dirty: Vec<usize>,
    /// Connect, probe and echo timeouts.
    timers: Timers,
    events: Vec<libc::epoll_event>,
    /// io_uring mode (stream transports only): the ring connected streams live on.
    ring: Option<ring::RingIo>,
    /// `--conn-msgs`: the conversations of this thread's connections.
    conv: Option<conversation::Convs>,
    /// The end-of-run drain, once the measured phase is over.
    drain: Option<Drain>,
}

/// Runs thread `index` until the end time or `stop`; returns its totals.
pub fn run_thread(index: usize, plan: &Plan, shared: &Shared, tx: mpsc::Sender<Interval>) -> io::Result<ThreadTotals> {
    if plan.transport.is_stream() {
        let mut w = Worker::<stream::Stream>::new(index, plan, shared, tx)?;
        w.ring = ring::RingIo::for_plan(plan, w.conns.len(), shared)?;
        w.run()
    } else {
        Worker::<datagram::Datagram>::new(index, plan, shared, tx)?.run()
    }
}

impl<'a, P: Proto> Worker<'a, P> {
    fn new(index: usize, plan: &'a Plan, shared: &'a Shared, tx: mpsc::Sender<Interval>) -> io::Result<Self> {
        let count = (plan.conns as usize - index).div_ceil(plan.threads);
        let conns = (0..count)
            .map(|k| {
                let id = (index + k * plan.threads) as u32;
                Conn {
                    id,
                    failures: 0,
                    dirty: false,
                    life: Life::Idle {
                        retry_at: (id as f64 * 1e9 / plan.connect_rate) as u64,
                    },
                }
            })
            .collect();
        Ok(Worker {
            index,
            plan,
            shared,
            ep: ssys::epoll_create()?,
            conns,
            buf: vec![0; BUF_LEN],
            sendbuf: vec![0; BUF_LEN.max(plan.size)],
            // A conversation's messages are a closed loop, also when conversations start at --rate.
            rec: Recorder::new(plan.size, plan.rate.is_none() || plan.conn_msgs.is_some()),
            tx,
            seen_tick: 0,
            retry: BinaryHeap::new(),
            next_connect: 0,
            load_start: UNSET,
            sched_c: index as u64,
            sched_cycle: 0,
            ns_per_msg: plan.rate.map(|r| 1e9 / r).unwrap_or(0.0),
            dirty: Vec::new(),
            timers: Timers::new(count),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 1024],
            ring: None,
            conv: conversation::Convs::for_plan(plan, index, count),
            drain: None,
        }
        .without_paced_connects_in_open_loop_conversations())
    }

    /// Open-loop conversations start on the schedule only, not paced at startup.
    fn without_paced_connects_in_open_loop_conversations(mut self) -> Self {
        if self.conv.is_some() && self.plan.rate.is_some() {
            self.next_connect = self.conns.len();
        }
        self
    }

    fn run(mut self) -> io::Result<ThreadTotals> {
        let res = self.event_loop();
        // Counted as drained however the loop ended (a failed thread too),
        // so that no other thread waits for it to close its own.
        self.tell_drained();
        self.flush_interval(self.shared.tick.load(Relaxed));
        if self.drain.is_none() {
            // Cut short: the connections are counted as they are now.
            self.count_held();
        }
        self.close_all();
        let conversations = self.conv.take().map(|c| c.totals);
        res.map(|()| ThreadTotals {
            conversations,
            ..self.rec.totals
        })
    }

    fn event_loop(&mut self) -> io::Result<()> {
        loop {
            let now = self.shared.now_ns();
            if self.drain.is_none() && now >= self.rec.end {
                self.start_drain(now);
            }
            // The main thread says when to stop (after the last tick), so that the
            // final interval is reported; samples past the end are not recorded.
            // After a measured phase that ran to its end, the thread first
            // finishes its drain, and waits for the other threads to finish theirs.
            if self.shared.stop.load(Relaxed) && self.may_close(now) {
                return Ok(());
            }
            let tick = self.shared.tick.load(Relaxed);
            if tick != self.seen_tick {
                self.flush_interval(tick);
            }
            if self.load_start == UNSET {
                self.notice_load_start(now);
            }
            // What must happen on time (paced connects, the open-loop
            // schedule), and what may wait for the next tick (timeouts).
            // Conversations connect only once load has started: each is measured whole.
            let mut exact = match (&self.conv, self.load_start) {
                (Some(_), UNSET) => UNSET,
                _ => self.start_due_connects(now),
            };
            if self.plan.rate.is_some() && self.load_start != UNSET && self.drain.is_none() {
                exact = exact.min(match self.conv {
                    Some(_) => self.dispatch_conversations(now),
                    None => self.dispatch_open_loop(now),
                });
            }
            let lazy = self.expire_due(now).min(now + MAX_WAIT_NS);
            self.flush_dirty(now);

            P::wait(self, exact.min(lazy), exact < lazy)?;
            self.flush_dirty(self.shared.now_ns());
        }
    }

    /// Picks up the load start (and measurement window) once the main thread
    /// sets it; closed loops then fill every connection that is up.
    fn notice_load_start(&mut self, now: u64) {
        // Acquire: pairs with the main thread's Release store, so the
        // measurement window stored before it is visible here.
        let ls = self.shared.load_start_ns.load(Acquire);
        if ls == UNSET {
            return;
        }
        self.load_start = ls;
        self.rec.measure_start = self.shared.measure_start_ns.load(Relaxed);
        self.rec.end = self.shared.end_ns.load(Relaxed);
        if self.plan.rate.is_none() && self.conv.is_none() {
            for k in 0..self.conns.len() {
                if self.conns[k].life.is_up() {
                    self.fill_closed_loop(k, now);
                }
            }
        }
    }

    /// Starts the paced first connects and the retries that are due, at most
    /// [`CONNECTS_PER_TURN`] of them; returns when the next one is (`now` if
    /// some due ones were left for the next turn, `UNSET` if none is waiting).
    fn start_due_connects(&mut self, now: u64) -> u64 {
        let mut next = UNSET;
        let mut budget = CONNECTS_PER_TURN;
        while self.next_connect < self.conns.len() {
            let Life::Idle { retry_at } = self.conns[self.next_connect].life else {
                unreachable!("connections past next_connect have not been started")
            };
            if retry_at > now {
                next = retry_at;
                break;
            }
            if budget == 0 {
                return now;
            }
            budget -= 1;
            // Counted as started before the attempt, so that an attempt
            // failing inside start_connect is queued for a retry.
            let k = self.next_connect;
            self.next_connect += 1;
            self.start_connect(k, now);
        }
        while let Some(&Reverse(r)) = self.retry.peek() {
            if r.at > now {
                return next.min(r.at);
            }
            if budget == 0 {
                return now;
            }
            budget -= 1;
            self.retry.pop();
            // An entry is only pushed by connect_failed, which leaves the
            // connection Idle until this retry; check anyway.
            if matches!(self.conns[r.k].life, Life::Idle { retry_at } if retry_at == r.at) {
                self.start_connect(r.k, now);
            }
        }
        next
    }

    /// Handles the timeouts due at `now`; returns when the next one could be.
    fn expire_due(&mut self, now: u64) -> u64 {
        while let Some(k) = self.timers.pop_due(now) {
            if let Some(at) = P::expire(self, k, now) {
                self.timers.rearm(k, if at > now { at } else { now + RECHECK_NS });
            }
        }
        self.timers.next_at()
    }

    /// Waits up to `timeout_ns` for epoll events and handles them; returns
    /// whether the event array came back full (more may be ready).
    fn epoll_turn(&mut self, timeout_ns: u64) -> io::Result<bool> {
        let n = crate::sys::epoll_wait_ns(self.ep.as_fd(), &mut self.events, timeout_ns)?;
        let now = self.shared.now_ns();
        for i in 0..n {
            let ev = self.events[i];
            P::on_event(self, ev.u64 as usize, ev.events, now);
        }
        Ok(n == self.events.len())
    }

    /// Closes every connection at the end of the run; in io_uring mode, first
    /// ends what is in flight and waits (bounded) for it to finish.
    fn close_all(&mut self) {
        if let Some(ring) = &mut self.ring {
            // Shut down first: each receive armed on the ring then ends by
            // itself (EOF), and `quiesce` has (almost) nothing left to cancel
            // (see `RingIo::quiesce`). The server sees the close now.
            for c in &self.conns {
                // A conversation's direct descriptor (no `fd`) is the ring's to close.
                if let Life::Up(up) = &c.life {
                    if let Some(fd) = &up.sock.fd {
                        let _ = ssys::shutdown(fd.as_fd(), libc::SHUT_RDWR);
                    }
                }
            }
            ring.quiesce();
        }
        for c in &mut self.conns {
            c.life = Life::Dead;
        }
    }

    fn flush_interval(&mut self, tick: u64) {
        self.seen_tick = tick;
        let iv = Interval {
            thread: self.index,
            tick,
            hist: self.rec.iv_hist.clone(),
            msgs: self.rec.iv_msgs,
            bytes: self.rec.iv_bytes,
            errors: std::mem::take(&mut self.rec.iv_errors),
        };
        self.rec.iv_hist.reset();
        self.rec.iv_msgs = 0;
        self.rec.iv_bytes = 0;
        let _ = self.tx.send(iv);
    }

    fn start_connect(&mut self, k: usize, now: u64) {
        if k == 0 {
            // Each thread's first paced connect is its connection 0.
            self.shared.first_connect_ns.fetch_min(now, Relaxed);
        }
        let sock = match self.open_socket(k) {
            Ok(sock) => sock,
            Err(e) => return self.connect_failed(k, now, &e),
        };
        self.conns[k].life = Life::Pending { sock, since: now };
        self.conv_connect_started(k, now);
        self.timers.arm(k, now + P::connect_timeout_ns(self.plan));
        P::pending(self, k, now);
    }

    /// Opens connection `k`'s socket and starts its connect: on the ring for
    /// conversations there (`ring_conversation.rs`), else as a descriptor
    /// that epoll watches.
    fn open_socket(&mut self, k: usize) -> io::Result<Socket> {
        if self.ring.as_ref().is_some_and(|r| r.direct.is_some()) {
            return self.open_direct(k);
        }
        let sock = P::open(self.plan, self.conns[k].id)?;
        let bits = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
        ssys::epoll_ctl(self.ep.as_fd(), libc::EPOLL_CTL_ADD, sock.raw_fd(), bits, k as u64)?;
        Ok(sock)
    }

    /// A connect attempt failed: its socket is closed and a retry is due after a back-off.
    fn connect_failed(&mut self, k: usize, now: u64, e: &io::Error) {
        if let Some(ring) = &mut self.ring {
            // A direct socket: its connect (if in flight) is cancelled, the slot closed.
            ring.release_direct(k, false);
        }
        self.rec.connect_error();
        *self.shared.last_connect_error.lock().unwrap() = Some(e.to_string());
        self.shared.connects_failed.fetch_add(1, Relaxed);
        if e.raw_os_error() == Some(libc::ECONNREFUSED) {
            self.shared.connects_refused.fetch_add(1, Relaxed);
        }
        if self.conv.is_some() {
            self.conns[k].life = Life::Idle { retry_at: UNSET };
            return self.conv_connect_failed(k, now, e);
        }
        self.retry_after_backoff(k, now);
    }

    /// Connection `k` tries again after a back-off that doubles with each
    /// failure in a row (10 ms to 1 s); its socket, if any, is closed.
    fn retry_after_backoff(&mut self, k: usize, now: u64) {
        let c = &mut self.conns[k];
        c.failures = c.failures.saturating_add(1);
        let backoff = (10_000_000u64 << c.failures.min(7)).min(1_000_000_000);
        c.life = Life::Idle {
            retry_at: now + backoff,
        };
        if k < self.next_connect {
            self.retry.push(Reverse(Due { at: now + backoff, k }));
        }
    }

    /// Connection `k`'s connect (or probe) succeeded.
    fn became_up(&mut self, k: usize, now: u64) {
        let c = &mut self.conns[k];
        let Life::Pending { sock, .. } = std::mem::replace(&mut c.life, Life::Dead) else {
            unreachable!("only a pending connection comes up")
        };
        c.life = Life::Up(Up {
            sock,
            writable: true,
            queue: VecDeque::new(),
            proto: P::new_up(self.plan, c.id),
        });
        self.shared.open.fetch_add(1, Relaxed);
        // A held connection comes up once (a lost one is not reconnected):
        // the one that makes `--conns` ends the connect ramp. Conversations
        // come up again and again, and have no ramp.
        if self.shared.ever_up.fetch_add(1, Relaxed) + 1 == self.plan.conns && self.conv.is_none() {
            self.shared.all_up_ns.store(now, Relaxed);
        }
        // The connect's deadline may be later than a send's (see
        // `Proto::connect_timeout_ns`): the first send arms its own.
        self.timers.disarm(k);
        if let Err(e) = P::attach(self, k) {
            return self.lost(k, now, format!("io_uring: {e}"));
        }
        if self.conv.is_some() {
            self.conv_established(k, now);
        } else if self.refills(now) {
            self.fill_closed_loop(k, now);
        }
    }

    /// A closed loop sends a new message for each echo now: load has
    /// started and the measured phase is not over (see [`Drain`]).
    fn refills(&self, now: u64) -> bool {
        self.plan.rate.is_none() && self.conv.is_none() && self.load_start != UNSET && now < self.rec.end
    }

    /// A live connection is gone: counted as a reset.
    fn lost(&mut self, k: usize, now: u64, why: String) {
        let old = std::mem::replace(&mut self.conns[k].life, Life::Dead);
        if let Life::Up(up) = &old {
            self.shared.open.fetch_sub(1, Relaxed);
            if let Some(ring) = &mut self.ring {
                ring.let_go(k, &up.sock);
            }
        }
        drop(old);
        self.rec.error(now, |e| e.reset += 1);
        *self.shared.last_loss.lock().unwrap() = Some(why);
        if self.conv.is_some() {
            self.conv_lost(k, now);
        }
    }

    fn fill_closed_loop(&mut self, k: usize, now: u64) {
        if let Some(up) = self.conns[k].life.up_mut() {
            for _ in 0..self.plan.depth {
                up.queue.push_back(Msg { intended: now, sent: 0 });
            }
        }
        self.mark_dirty(k);
    }

    fn mark_dirty(&mut self, k: usize) {
        if !self.conns[k].dirty {
            self.conns[k].dirty = true;
            self.dirty.push(k);
        }
    }

    fn flush_dirty(&mut self, now: u64) {
        while let Some(k) = self.dirty.pop() {
            let c = &mut self.conns[k];
            c.dirty = false;
            if matches!(&c.life, Life::Up(up) if up.writable) {
                P::send(self, k, now);
            }
        }
    }

    /// Hands the messages of the global schedule due by `now` (plus the
    /// slack) to this thread's connections; returns when the next one is due.
    fn dispatch_open_loop(&mut self, now: u64) -> u64 {
        let n = self.plan.conns;
        let t = self.plan.threads as u64;
        // What is due by `now + slack` goes now; the wake-up is then at the
        // next due time, which sends the next slack's worth: a wake-up per
        // slack interval (or per message, if they are further apart).
        let horizon = now + self.plan.slack_ns;
        for _ in 0..100_000 {
            let i = self.sched_cycle * n + self.sched_c;
            let intended = self.load_start + (i as f64 * self.ns_per_msg) as u64;
            // Nothing due after the measured phase goes out (see `Drain`).
            if intended > horizon || intended >= self.rec.end {
                return intended;
            }
            let k = (self.sched_c / t) as usize;
            if intended >= self.rec.measure_start && intended < self.rec.end {
                self.rec.totals.scheduled += 1;
            }
            match self.conns[k].life.up_mut() {
                Some(up) if up.queue.len() < MAX_QUEUED => {
                    up.queue.push_back(Msg { intended, sent: 0 });
                    self.mark_dirty(k);
                }
                // Its connection is not up (or has a backlog of MAX_QUEUED): the
                // message cannot be sent in time.
                _ => self.rec.error(intended, |e| e.timeout += 1),
            }
            self.sched_c += t;
            if self.sched_c >= n {
                self.sched_c = self.index as u64;
                self.sched_cycle += 1;
            }
        }
        now
    }
}
#[cfg(test)]
mod layout {
    use super::{stream::Stream, Conn};

    /// The hot path touches one connection per echo, in the order echoes
    /// come back: its state must not grow past two cache lines unnoticed.
    #[test]
    fn a_stream_connection_is_two_cache_lines() {
        assert_eq!(std::mem::align_of::<Conn<Stream>>(), 64);
        assert!(
            std::mem::size_of::<Conn<Stream>>() <= 128,
            "Conn<Stream> is {} bytes",
            std::mem::size_of::<Conn<Stream>>()
        );
    }
}
