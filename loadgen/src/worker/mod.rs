//! One event-loop thread: epoll over its share of the connections, closed or
//! open loop, every echoed byte checked. With `--io uring`, stream connections
//! move to an io_uring once connected ([`ring`]); epoll still watches connects.
//!
//! Connection `c` (global id) belongs to thread `c % threads`. Its first
//! connect is due at `c / connect_rate`, so connects are paced over all
//! threads together. In open loop, message `i` of the global schedule is due
//! at `load_start + i / rate` and goes to connection `i % conns`; each thread
//! walks only the messages of its own connections, so the total schedule is
//! exact however many connections and threads there are.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Acquire, Ordering::Relaxed};
use std::sync::{mpsc, Mutex};
use std::time::Instant;

use sockbench::net::{Endpoint, Transport};
use sockbench::sys as ssys;

mod ring;

use crate::cli::IoMode;
use crate::pattern::{self, DatagramError, StreamChecker};
use crate::result::Errors;
use crate::stats::{self, Interval, ThreadTotals};

/// An atomic time that is not set yet.
pub const UNSET: u64 = u64::MAX;
/// Probe datagrams (sent while a datagram client "connects") have this bit set in their sequence number.
const PROBE_BIT: u64 = 1 << 63;
/// Answered datagrams remembered behind the oldest outstanding one, to tell duplicates.
const DUP_MEMORY: usize = 256;
/// How often timeouts are swept.
const SWEEP_NS: u64 = 20_000_000;
/// Longest epoll sleep, so that ticks and stop are noticed promptly.
const MAX_WAIT_NS: u64 = 5_000_000;
const BUF_LEN: usize = 64 * 1024;
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
    pub timeout_ns: u64,
    pub connect_rate: f64,
    pub threads: usize,
    /// Where unixgram clients bind their own sockets.
    pub unixgram_dir: Option<PathBuf>,
    /// How stream connections do their I/O.
    pub io: IoMode,
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
            last_connect_error: Mutex::new(None),
            connects_failed: AtomicU64::new(0),
            connects_refused: AtomicU64::new(0),
            last_loss: Mutex::new(None),
            io_fallback: Mutex::new(None),
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }
}

impl Default for Shared {
    fn default() -> Self {
        Shared::new()
    }
}

#[derive(Clone, Copy, Debug)]
struct Msg {
    intended: u64,
    /// When its first byte went out (0: not yet).
    sent: u64,
}

#[derive(Clone, Copy, Debug)]
enum Slot {
    Out(Msg),
    Answered,
    Lost,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    /// Waiting for the first connect or a retry.
    Idle {
        retry_at: u64,
    },
    /// Stream connect in progress.
    Connecting {
        since: u64,
    },
    /// Datagram client waiting for the echo of its probe.
    Probing {
        sent_at: u64,
    },
    Up,
    Dead,
}

struct Conn {
    id: u32,
    fd: Option<OwnedFd>,
    state: State,
    failures: u32,
    writable: bool,
    dirty: bool,
    local_path: Option<PathBuf>,
    /// Stream: messages not yet fully echoed, from `recv.seq` on. Datagram: not yet sent.
    queue: VecDeque<Msg>,
    recv: StreamChecker,
    send_seq: u64,
    send_off: usize,
    timed_out_seq: u64,
    next_seq: u64,
    base_seq: u64,
    window: VecDeque<Slot>,
    max_answered: Option<u64>,
    probes: u64,
    /// io_uring mode: a receive is armed on the ring for this connection.
    recv_armed: bool,
    /// io_uring mode: a send reading from `out` is in flight; `out` must not
    /// change until its completion, even if the connection has died since.
    send_in_flight: bool,
    /// io_uring mode: the bytes of the send in flight. Allocated once, never
    /// resized, and kept until the ring is quiet (see `close_all`).
    out: Vec<u8>,
}

impl Conn {
    fn close(&mut self) {
        self.fd = None;
        if let Some(p) = self.local_path.take() {
            let _ = std::fs::remove_file(p);
        }
    }

    /// Writes the queued stream bytes not sent yet into `buf`, as many as fit,
    /// and stamps the messages they start as sent at `now`; returns how many.
    fn fill_unsent(&mut self, size: usize, now: u64, buf: &mut [u8]) -> usize {
        let end_seq = self.recv.seq + self.queue.len() as u64;
        let (mut s, mut off, mut pos) = (self.send_seq, self.send_off, 0);
        while pos < buf.len() && s < end_seq {
            let n = (size - off).min(buf.len() - pos);
            pattern::fill(self.id, s, off, &mut buf[pos..pos + n]);
            let m = &mut self.queue[(s - self.recv.seq) as usize];
            if m.sent == 0 {
                m.sent = now;
            }
            pos += n;
            off += n;
            if off == size {
                s += 1;
                off = 0;
            }
        }
        pos
    }

    /// Records that the kernel took `n` more bytes of the stream.
    fn advance_sent(&mut self, size: usize, n: usize) {
        let total = self.send_off + n;
        self.send_seq += (total / size) as u64;
        self.send_off = total % size;
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.close();
    }
}

/// Counts and histograms of one thread.
struct Recorder {
    size: u64,
    iv_hist: hdrhistogram::Histogram<u64>,
    iv_msgs: u64,
    iv_bytes: u64,
    iv_errors: Errors,
    totals: ThreadTotals,
    measure_start: u64,
    end: u64,
}

impl Recorder {
    #[inline]
    fn complete(&mut self, m: Msg, now: u64, intact: bool) {
        if !intact {
            self.mismatch(now);
            return;
        }
        let lat = now.saturating_sub(m.intended);
        stats::record_ns(&mut self.iv_hist, lat);
        self.iv_msgs += 1;
        self.iv_bytes += self.size;
        if now >= self.measure_start && now < self.end {
            stats::record_ns(&mut self.totals.hist, lat);
            stats::record_ns(
                &mut self.totals.hist_uncorrected,
                now.saturating_sub(m.sent.max(m.intended)),
            );
            self.totals.messages += 1;
            self.totals.bytes += self.size;
        }
    }

    /// Counts an error that happened at `at`: always in the live interval, in
    /// the run's totals only inside the measured window, like messages and bytes.
    #[inline]
    fn error(&mut self, at: u64, f: impl Fn(&mut Errors)) {
        f(&mut self.iv_errors);
        if at >= self.measure_start && at < self.end {
            f(&mut self.totals.errors);
        } else if at < self.measure_start {
            f(&mut self.totals.warmup_errors);
        }
    }

    /// Counts an echo that did not match what was sent.
    #[inline]
    fn mismatch(&mut self, at: u64) {
        self.totals.mismatch_whole_run += 1;
        self.error(at, |e| e.mismatch += 1);
    }

    /// Counts a failed connect: in the totals whatever the phase, since
    /// startup is when connects happen (README.md, "Output").
    fn connect_error(&mut self) {
        self.iv_errors.connect += 1;
        self.totals.errors.connect += 1;
    }
}

struct Worker<'a> {
    index: usize,
    plan: &'a Plan,
    shared: &'a Shared,
    ep: OwnedFd,
    conns: Vec<Conn>,
    buf: Vec<u8>,
    sendbuf: Vec<u8>,
    rec: Recorder,
    tx: mpsc::Sender<Interval>,
    seen_tick: u64,
    /// Connections waiting to reconnect, as (retry time, index), soonest first.
    retry: BinaryHeap<Reverse<(u64, usize)>>,
    next_connect: usize,
    load_start: u64,
    sched_c: u64,
    sched_cycle: u64,
    ns_per_msg: f64,
    dirty: Vec<usize>,
    next_sweep: u64,
    events: Vec<libc::epoll_event>,
    /// io_uring mode (stream transports): the ring connected streams live on.
    ring: Option<ring::RingIo>,
}

/// Runs thread `index` until the end time or `stop`; returns its totals.
pub fn run_thread(index: usize, plan: &Plan, shared: &Shared, tx: mpsc::Sender<Interval>) -> io::Result<ThreadTotals> {
    let ep = ssys::epoll_create()?;
    let count = (plan.conns as usize - index).div_ceil(plan.threads);
    let conns = (0..count)
        .map(|k| {
            let id = (index + k * plan.threads) as u32;
            Conn {
                id,
                fd: None,
                state: State::Idle {
                    retry_at: (id as f64 * 1e9 / plan.connect_rate) as u64,
                },
                failures: 0,
                writable: false,
                dirty: false,
                local_path: None,
                queue: VecDeque::new(),
                recv: StreamChecker::new(id, plan.size),
                send_seq: 0,
                send_off: 0,
                timed_out_seq: 0,
                next_seq: 0,
                base_seq: 0,
                window: VecDeque::new(),
                max_answered: None,
                probes: 0,
                recv_armed: false,
                send_in_flight: false,
                out: Vec::new(),
            }
        })
        .collect();
    let totals = ThreadTotals {
        hist: stats::new_histogram(),
        hist_uncorrected: stats::new_histogram(),
        messages: 0,
        bytes: 0,
        errors: Errors::default(),
        warmup_errors: Errors::default(),
        mismatch_whole_run: 0,
        scheduled: 0,
    };
    let mut w = Worker {
        index,
        plan,
        shared,
        ep,
        conns,
        buf: vec![0; BUF_LEN],
        sendbuf: vec![0; BUF_LEN.max(plan.size)],
        rec: Recorder {
            size: plan.size as u64,
            iv_hist: stats::new_histogram(),
            iv_msgs: 0,
            iv_bytes: 0,
            iv_errors: Errors::default(),
            totals,
            measure_start: UNSET,
            end: UNSET,
        },
        tx,
        seen_tick: 0,
        retry: BinaryHeap::new(),
        next_connect: 0,
        load_start: UNSET,
        sched_c: index as u64,
        sched_cycle: 0,
        ns_per_msg: plan.rate.map(|r| 1e9 / r).unwrap_or(0.0),
        dirty: Vec::new(),
        next_sweep: 0,
        events: vec![libc::epoll_event { events: 0, u64: 0 }; 1024],
        ring: None,
    };
    if plan.transport.is_stream() && plan.io != IoMode::Epoll {
        match ring::RingIo::new(count, plan.transport == Transport::Unix) {
            Ok(r) => w.ring = Some(r),
            Err(e) if plan.io == IoMode::Auto => {
                *shared.io_fallback.lock().unwrap() = Some(e.to_string());
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("--io uring: {e}"))),
        }
    }
    let res = w.event_loop();
    w.flush_interval(w.shared.tick.load(Relaxed));
    w.close_all();
    res.map(|()| w.rec.totals)
}

impl Worker<'_> {
    fn event_loop(&mut self) -> io::Result<()> {
        loop {
            let now = self.shared.now_ns();
            // The main thread says when to stop (after the last tick), so that the
            // final interval is reported; samples past the end are not recorded.
            if self.shared.stop.load(Relaxed) {
                return Ok(());
            }
            let tick = self.shared.tick.load(Relaxed);
            if tick != self.seen_tick {
                self.flush_interval(tick);
            }
            if self.load_start == UNSET {
                // Acquire: pairs with the main thread's Release store, so the
                // measurement window stored before it is visible here.
                let ls = self.shared.load_start_ns.load(Acquire);
                if ls != UNSET {
                    self.load_start = ls;
                    self.rec.measure_start = self.shared.measure_start_ns.load(Relaxed);
                    self.rec.end = self.shared.end_ns.load(Relaxed);
                    if self.plan.rate.is_none() {
                        for k in 0..self.conns.len() {
                            if self.conns[k].state == State::Up {
                                self.fill_closed_loop(k, now);
                            }
                        }
                    }
                }
            }
            let mut wake = now + MAX_WAIT_NS;
            // Paced first connects, then retries that are due.
            while self.next_connect < self.conns.len() {
                let State::Idle { retry_at } = self.conns[self.next_connect].state else {
                    unreachable!()
                };
                if retry_at > now {
                    wake = wake.min(retry_at);
                    break;
                }
                // Counted as started before the attempt, so that an attempt
                // failing inside start_connect is queued for a retry.
                let k = self.next_connect;
                self.next_connect += 1;
                self.start_connect(k, now);
            }
            while let Some(&Reverse((at, k))) = self.retry.peek() {
                if at > now {
                    wake = wake.min(at);
                    break;
                }
                self.retry.pop();
                // An entry is only pushed by connect_failed, which leaves the
                // connection Idle until this retry; check anyway.
                if self.conns[k].state == (State::Idle { retry_at: at }) {
                    self.start_connect(k, now);
                }
            }
            if self.plan.rate.is_some() && self.load_start != UNSET {
                wake = wake.min(self.dispatch_open_loop(now));
            }
            if now >= self.next_sweep {
                self.sweep(now);
                self.next_sweep = now + SWEEP_NS;
            }
            self.flush_dirty(now);

            let timeout = wake.saturating_sub(self.shared.now_ns());
            if self.ring.is_some() {
                self.ring_turn(timeout)?;
            } else {
                self.epoll_turn(timeout)?;
            }
            self.flush_dirty(self.shared.now_ns());
        }
    }

    /// Waits up to `timeout_ns` for epoll events and handles them; returns
    /// whether the event array came back full (more may be ready).
    fn epoll_turn(&mut self, timeout_ns: u64) -> io::Result<bool> {
        let n = crate::sys::epoll_wait_ns(self.ep.as_fd(), &mut self.events, timeout_ns)?;
        let now = self.shared.now_ns();
        for i in 0..n {
            let (bits, k) = (self.events[i].events, self.events[i].u64 as usize);
            self.on_event(k, bits, now);
        }
        Ok(n == self.events.len())
    }

    /// Closes every connection at the end of the run; in io_uring mode, first
    /// cancels what is in flight and waits (bounded) for it to finish.
    fn close_all(&mut self) {
        if let Some(ring) = &mut self.ring {
            if !ring.quiesce() {
                // The kernel may still write into a send buffer: leak them, the
                // process is about to exit (the ring leaks its buffer ring too).
                for c in &mut self.conns {
                    std::mem::forget(std::mem::take(&mut c.out));
                }
            }
        }
        for c in &mut self.conns {
            c.close();
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

    fn is_stream(&self) -> bool {
        self.plan.transport.is_stream()
    }

    fn start_connect(&mut self, k: usize, now: u64) {
        let plan = self.plan;
        let c = &mut self.conns[k];
        let res = if plan.transport.is_stream() {
            crate::source::connect_from(plan.transport, &plan.endpoint, None, plan.sources.for_conn(c.id as u64))
        } else {
            let local = plan.unixgram_dir.as_ref().map(|d| d.join(format!("c{}", c.id)));
            if let Some(p) = &local {
                let _ = std::fs::remove_file(p);
            }
            let local_ep = local.clone().map(Endpoint::Unix);
            c.local_path = local;
            crate::source::connect_from(
                plan.transport,
                &plan.endpoint,
                local_ep.as_ref(),
                plan.sources.for_conn(c.id as u64),
            )
        };
        let fd = match res {
            Ok(fd) => fd,
            Err(e) => return self.connect_failed(k, now, &e),
        };
        if plan.transport == Transport::Tcp {
            // Pipelined small messages must not wait for an ACK (Nagle).
            let _ = ssys::setsockopt_int(fd.as_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
        }
        let bits = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
        if let Err(e) = ssys::epoll_ctl(self.ep.as_fd(), libc::EPOLL_CTL_ADD, fd.as_raw_fd(), bits, k as u64) {
            return self.connect_failed(k, now, &e);
        }
        let c = &mut self.conns[k];
        c.fd = Some(fd);
        c.writable = true;
        if plan.transport.is_stream() {
            c.state = State::Connecting { since: now };
        } else {
            self.send_probe(k, now);
        }
    }

    fn send_probe(&mut self, k: usize, now: u64) {
        let size = self.plan.size;
        let c = &mut self.conns[k];
        c.probes += 1;
        pattern::encode_datagram(c.id, PROBE_BIT | c.probes, &mut self.sendbuf[..size]);
        c.state = State::Probing { sent_at: now };
        match ssys::send(c.fd.as_ref().unwrap().as_fd(), &self.sendbuf[..size]) {
            Ok(_) => {}
            Err(e) if ssys::would_block(&e) => {}
            Err(e) => self.connect_failed(k, now, &e),
        }
    }

    fn connect_failed(&mut self, k: usize, now: u64, e: &io::Error) {
        self.rec.connect_error();
        *self.shared.last_connect_error.lock().unwrap() = Some(e.to_string());
        self.shared.connects_failed.fetch_add(1, Relaxed);
        if e.raw_os_error() == Some(libc::ECONNREFUSED) {
            self.shared.connects_refused.fetch_add(1, Relaxed);
        }
        let c = &mut self.conns[k];
        c.close();
        c.failures += 1;
        let backoff = (10_000_000u64 << c.failures.min(7)).min(1_000_000_000);
        c.state = State::Idle {
            retry_at: now + backoff,
        };
        if k < self.next_connect {
            self.retry.push(Reverse((now + backoff, k)));
        }
    }

    fn became_up(&mut self, k: usize, now: u64) {
        self.conns[k].state = State::Up;
        self.conns[k].writable = true;
        self.shared.open.fetch_add(1, Relaxed);
        self.shared.ever_up.fetch_add(1, Relaxed);
        if self.ring.is_some() {
            if let Err(e) = self.ring_attach(k) {
                return self.lost(k, now, format!("io_uring: {e}"));
            }
        }
        if self.load_start != UNSET && self.plan.rate.is_none() {
            self.fill_closed_loop(k, now);
        }
    }

    /// A live connection is gone: counted as a reset.
    fn lost(&mut self, k: usize, now: u64, why: String) {
        let c = &mut self.conns[k];
        if c.state == State::Up {
            self.shared.open.fetch_sub(1, Relaxed);
        }
        c.state = State::Dead;
        if self.ring.is_some() {
            // A receive armed on the ring holds the socket open past close():
            // shutdown ends it (and any send) and tells the server now.
            if let Some(fd) = &c.fd {
                let _ = ssys::shutdown(fd.as_fd(), libc::SHUT_RDWR);
            }
        }
        c.close();
        c.queue.clear();
        c.window.clear();
        self.rec.error(now, |e| e.reset += 1);
        *self.shared.last_loss.lock().unwrap() = Some(why);
    }

    fn fill_closed_loop(&mut self, k: usize, now: u64) {
        for _ in 0..self.plan.depth {
            self.conns[k].queue.push_back(Msg { intended: now, sent: 0 });
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
            self.conns[k].dirty = false;
            if self.conns[k].state == State::Up && self.conns[k].writable {
                if self.is_stream() {
                    self.send_stream(k, now);
                } else {
                    self.send_datagrams(k, now);
                }
            }
        }
    }

    /// Hands due messages of the global schedule to this thread's connections;
    /// returns when the next one is due.
    fn dispatch_open_loop(&mut self, now: u64) -> u64 {
        let n = self.plan.conns;
        let t = self.plan.threads as u64;
        for _ in 0..100_000 {
            let i = self.sched_cycle * n + self.sched_c;
            let intended = self.load_start + (i as f64 * self.ns_per_msg) as u64;
            if intended > now {
                return intended;
            }
            let k = (self.sched_c / t) as usize;
            if intended >= self.rec.measure_start && intended < self.rec.end {
                self.rec.totals.scheduled += 1;
            }
            if self.conns[k].state == State::Up && self.conns[k].queue.len() < MAX_QUEUED {
                self.conns[k].queue.push_back(Msg { intended, sent: 0 });
                self.mark_dirty(k);
            } else {
                // Its connection is not up (or has a backlog of MAX_QUEUED): the
                // message cannot be sent in time.
                self.rec.error(intended, |e| e.timeout += 1);
            }
            self.sched_c += t;
            if self.sched_c >= n {
                self.sched_c = self.index as u64;
                self.sched_cycle += 1;
            }
        }
        now
    }

    fn on_event(&mut self, k: usize, bits: u32, now: u64) {
        let err_bits = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
        let in_bits = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32 | err_bits;
        match self.conns[k].state {
            State::Connecting { .. } => {
                if bits & (libc::EPOLLOUT as u32 | err_bits) == 0 {
                    return;
                }
                let fd = self.conns[k].fd.as_ref().unwrap();
                let err = ssys::getsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_ERROR).unwrap_or(libc::EIO);
                if err == 0 && bits & err_bits == 0 {
                    self.became_up(k, now);
                    // Data may already be waiting (edge-triggered: read it now);
                    // in io_uring mode the receive just armed picks it up.
                    if bits & in_bits != 0 && self.ring.is_none() && self.conns[k].state == State::Up {
                        self.read_stream(k, bits, now);
                    }
                } else {
                    let err = if err == 0 { libc::ECONNREFUSED } else { err };
                    self.connect_failed(k, now, &io::Error::from_raw_os_error(err));
                }
            }
            State::Up | State::Probing { .. } => {
                if bits & libc::EPOLLOUT as u32 != 0 {
                    self.conns[k].writable = true;
                    self.mark_dirty(k);
                }
                if bits & in_bits != 0 {
                    if self.is_stream() {
                        self.read_stream(k, bits, now);
                    } else {
                        self.read_datagrams(k, now);
                    }
                }
            }
            State::Idle { .. } | State::Dead => {}
        }
    }

    /// Reads and checks echoes. `bits` are the epoll event's: a short read
    /// ends the turn unless they say the peer hung up or failed, which saves
    /// the read that would only say `EAGAIN` (one syscall per message at depth 1).
    /// That is safe with edge-triggered epoll: the event was harvested before
    /// this read, so data or a FIN arriving after it raises a new event, and a
    /// FIN that arrived before it shows as `EPOLLRDHUP` in `bits`.
    fn read_stream(&mut self, k: usize, bits: u32, now: u64) {
        let hung_up = bits & (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0;
        loop {
            let c = &mut self.conns[k];
            let Some(fd) = c.fd.as_ref() else { return };
            let n = match ssys::read(fd.as_fd(), &mut self.buf) {
                Ok(0) => return self.lost(k, now, "server closed a connection".into()),
                Ok(n) => n,
                Err(e) if ssys::would_block(&e) => return,
                Err(e) => return self.lost(k, now, format!("connection error: {e}")),
            };
            if !self.on_stream_data(k, n, now) {
                return;
            }
            if n < self.buf.len() && !hung_up {
                return;
            }
        }
    }

    /// Checks the `n` echoed bytes in `self.buf` against what connection `k`
    /// sent, completes the messages they finish and queues the next ones
    /// (closed loop). Returns false if the connection was dropped for it.
    fn on_stream_data(&mut self, k: usize, n: usize, now: u64) -> bool {
        let size = self.plan.size;
        let closed_loop = self.plan.rate.is_none();
        {
            let c = &mut self.conns[k];
            let outstanding = (c.send_seq - c.recv.seq) as usize * size + c.send_off - c.recv.offset;
            let mut data = &self.buf[..n];
            let extra = n > outstanding;
            if extra {
                data = &data[..outstanding];
            }
            let Conn { recv, queue, .. } = c;
            let rec = &mut self.rec;
            let mut done = 0;
            recv.feed(data, |_, intact| {
                let m = queue.pop_front().expect("echo of a message that was sent");
                rec.complete(m, now, intact);
                done += 1;
            });
            if closed_loop && self.load_start != UNSET {
                for _ in 0..done {
                    c.queue.push_back(Msg { intended: now, sent: 0 });
                }
            }
            c.timed_out_seq = c.timed_out_seq.max(c.recv.seq);
            if extra {
                // The server sent bytes nobody asked for.
                self.rec.mismatch(now);
                self.lost(k, now, "server sent more bytes than it was sent".into());
                return false;
            }
            if done > 0 {
                self.mark_dirty(k);
            }
        }
        true
    }

    fn send_stream(&mut self, k: usize, now: u64) {
        if self.ring.is_some() {
            return self.ring_send(k, now);
        }
        let size = self.plan.size;
        loop {
            let c = &mut self.conns[k];
            if !c.writable {
                return;
            }
            let pos = c.fill_unsent(size, now, &mut self.sendbuf);
            if pos == 0 {
                return;
            }
            match ssys::send(c.fd.as_ref().unwrap().as_fd(), &self.sendbuf[..pos]) {
                Ok(w) => {
                    c.advance_sent(size, w);
                    if w < pos {
                        c.writable = false;
                    }
                }
                Err(e) if ssys::would_block(&e) => c.writable = false,
                Err(e) => return self.lost(k, now, format!("send failed: {e}")),
            }
        }
    }

    fn send_datagrams(&mut self, k: usize, now: u64) {
        let size = self.plan.size;
        loop {
            let c = &mut self.conns[k];
            if !c.writable {
                return;
            }
            let Some(&m) = c.queue.front() else { return };
            pattern::encode_datagram(c.id, c.next_seq, &mut self.sendbuf[..size]);
            match ssys::send(c.fd.as_ref().unwrap().as_fd(), &self.sendbuf[..size]) {
                Ok(_) => {
                    c.queue.pop_front();
                    c.window.push_back(Slot::Out(Msg {
                        intended: m.intended,
                        sent: now,
                    }));
                    c.next_seq += 1;
                }
                Err(e) if ssys::would_block(&e) || e.raw_os_error() == Some(libc::ENOBUFS) => c.writable = false,
                Err(e) => return self.lost(k, now, format!("send failed: {e}")),
            }
        }
    }

    fn read_datagrams(&mut self, k: usize, now: u64) {
        let size = self.plan.size;
        let mut resolved = 0;
        loop {
            let c = &mut self.conns[k];
            let Some(fd) = c.fd.as_ref() else { return };
            let n = match ssys::recv_from(fd.as_fd(), &mut self.buf) {
                Ok((n, _)) => n,
                Err(e) if ssys::would_block(&e) => break,
                Err(e) => {
                    if matches!(c.state, State::Probing { .. }) {
                        return self.connect_failed(k, now, &e);
                    }
                    return self.lost(k, now, format!("receive failed: {e}"));
                }
            };
            let data = &self.buf[..n.min(self.buf.len())];
            let decoded = if n > self.buf.len() {
                Err(DatagramError::Size)
            } else {
                pattern::decode_datagram(data, size)
            };
            let (conn, seq, intact) = match decoded {
                Ok((conn, seq)) => (conn, seq, true),
                Err(DatagramError::Payload(conn, seq)) => (conn, seq, false),
                Err(_) => {
                    self.rec.mismatch(now);
                    continue;
                }
            };
            if conn != c.id {
                // Another client's datagram: the server mixed up its peers.
                self.rec.mismatch(now);
                continue;
            }
            if seq & PROBE_BIT != 0 {
                if !intact {
                    self.rec.mismatch(now);
                } else if matches!(c.state, State::Probing { .. }) {
                    self.became_up(k, now);
                }
                continue;
            }
            if seq >= c.next_seq {
                self.rec.mismatch(now);
                continue;
            }
            if seq < c.base_seq {
                // Older than the duplicate memory: it was answered or declared lost long ago.
                continue;
            }
            let idx = (seq - c.base_seq) as usize;
            match c.window[idx] {
                Slot::Out(m) => {
                    c.window[idx] = Slot::Answered;
                    resolved += 1;
                    if c.max_answered.is_some_and(|mx| seq < mx) {
                        self.rec.error(now, |e| e.reordered += 1);
                    }
                    let c = &mut self.conns[k];
                    c.max_answered = Some(c.max_answered.map_or(seq, |mx| mx.max(seq)));
                    self.rec.complete(m, now, intact);
                }
                Slot::Answered => self.rec.error(now, |e| e.duplicate += 1),
                // Answered after --timeout: already counted as lost.
                Slot::Lost => {}
            }
        }
        self.after_datagrams_resolved(k, resolved, now);
    }

    fn after_datagrams_resolved(&mut self, k: usize, resolved: usize, now: u64) {
        let closed_loop = self.plan.rate.is_none() && self.load_start != UNSET;
        let c = &mut self.conns[k];
        while c.window.len() > DUP_MEMORY && !matches!(c.window.front(), Some(Slot::Out(_))) {
            c.window.pop_front();
            c.base_seq += 1;
        }
        if closed_loop && c.state == State::Up {
            for _ in 0..resolved {
                c.queue.push_back(Msg { intended: now, sent: 0 });
            }
        }
        if resolved > 0 || !c.queue.is_empty() {
            self.mark_dirty(k);
        }
    }

    /// Connect, probe and echo timeouts.
    fn sweep(&mut self, now: u64) {
        let timeout = self.plan.timeout_ns;
        let probe_timeout = timeout.min(250_000_000);
        for k in 0..self.conns.len() {
            match self.conns[k].state {
                State::Connecting { since } if now - since > timeout => {
                    self.connect_failed(k, now, &io::Error::from(io::ErrorKind::TimedOut));
                }
                State::Probing { sent_at } if now - sent_at > probe_timeout => {
                    self.connect_failed(
                        k,
                        now,
                        &io::Error::new(io::ErrorKind::TimedOut, "no answer to a probe datagram"),
                    );
                }
                State::Up if self.is_stream() => {
                    let c = &mut self.conns[k];
                    c.timed_out_seq = c.timed_out_seq.max(c.recv.seq);
                    while c.timed_out_seq < c.send_seq {
                        let m = c.queue[(c.timed_out_seq - c.recv.seq) as usize];
                        if m.sent + timeout > now {
                            break;
                        }
                        c.timed_out_seq += 1;
                        self.rec.error(now, |e| e.timeout += 1);
                    }
                }
                State::Up => {
                    let c = &mut self.conns[k];
                    let mut resolved = 0;
                    for slot in c.window.iter_mut() {
                        match *slot {
                            Slot::Out(m) if m.sent + timeout <= now => {
                                *slot = Slot::Lost;
                                resolved += 1;
                            }
                            Slot::Out(_) => break,
                            _ => {}
                        }
                    }
                    if resolved > 0 {
                        self.rec.error(now, |e| e.lost += resolved as u64);
                        self.after_datagrams_resolved(k, resolved, now);
                    }
                }
                _ => {}
            }
        }
    }
}
