//! io_uring mode for stream connections (`--io uring`, the default where the
//! kernel has it).
//!
//! Connects of held connections still go through epoll: they are paced,
//! non-blocking and retried, and a connect is rare next to an echo (a
//! conversation's socket, connect and close are ring operations on a direct
//! descriptor instead: `ring_conversation.rs`). Once a stream is up it leaves
//! epoll and lives on the ring:
//! - a multishot receive into a provided buffer ring (single-shot, still with
//!   buffer select, on AF_UNIX where the kernel misses EOF on multishot);
//! - at most one send in flight per connection, from a buffer it holds
//!   until the send completes, even if the connection died meanwhile
//!   ([`SendBufs`]: one per send in flight, the last freed taken next);
//! - the ring is the one thing the thread waits on: a multishot poll on the
//!   epoll descriptor says when a connect has finished;
//! - operations name a connection by its slot in the ring's fixed file table
//!   (slot `k` for connection `k`, filled when it attaches), and the ring is
//!   entered by its registered index: as in the uring server, no operation
//!   and no wait looks up and reference-counts a descriptor (a profile at
//!   1,000 Unix connections had 3.6% of loadgen's time in `fget`). Where the
//!   kernel refuses either, operations fall back to plain descriptors.
//!
//! In open loop over TCP the receive is a multishot `recvmsg` that brings the
//! kernel's receive timestamp (`SO_TIMESTAMPNS`) with each echo, and the loop
//! sleeps from one send deadline to the next instead of waking for every echo
//! ([`RingIo::stamps`]): an echo's latency ends when the kernel got it, not
//! when the loop looked. Below saturation that saves loadgen a wake-up per
//! echo, and the server's sends the cost of waking loadgen (docs/loadgen.md,
//! "Hot path", "Open loop against closed loop", has the figures).
//!
//! Every submission of a loop turn goes in with the one `io_uring_enter` that
//! waits, so an echo costs no syscall of its own. That wait needs no timeout
//! of its own either, unless something is due sooner than the next tick: a
//! multishot timeout completes every [`MAX_WAIT_NS`] (Linux 6.4; where the
//! kernel refuses it, every wait carries a timeout as before), so the loop
//! notices report ticks, stop and timeouts without arming and cancelling a
//! timer on every wait. This is the server's uring
//! design (the same [`Driver`]), so that loadgen spends less CPU per echo than
//! the servers it measures rather than as much.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types};
use sockbench::net::Transport;
use sockbench::ring::token::OpKind;
use sockbench::ring::{setup, Completion, Driver};
use sockbench::sys as ssys;

use super::ring_conversation::Direct;
use super::send_bufs::SendBufs;
use super::stamp::{realtime_ns, stamped_data, STAMP_CONTROL_LEN};
use super::stream::Stream;
use super::{Conn, Life, Plan, Shared, Socket, Worker, BUF_LEN, MAX_WAIT_NS, UNSET};
use crate::cli::IoMode;

/// Submission queue entries per ring.
const RING_ENTRIES: u32 = 4096;
/// Receive buffers per ring. Each is checked in place and given back in the
/// turn it arrives, so the ring only has to cover one turn's receives; if it runs dry
/// the receive ends with ENOBUFS and is re-armed once the buffers are back.
const BUF_COUNT: u32 = 4096;
const BUF_SIZE: u32 = 4096;
/// How long the end of the run waits for the receives of the sockets it
/// shut down to end by themselves (see [`RingIo::quiesce`]).
const RECEIVES_END_WAIT: Duration = Duration::from_millis(500);
/// The largest completion queue asked for (the kernel clamps to its own limit).
const MAX_CQ_ENTRIES: u32 = 1 << 17;
/// `user_data` of the periodic tick: an op byte [`Op`] does not use, so
/// `Token::decode` passes it by.
const TICK: u64 = 0xF0 << 56;
/// How many completions ahead of the one being handled the state of the
/// connection it names is prefetched: about the time a cache miss takes, in
/// completions handled. (Prefetching the connection's oldest message as
/// well, two completions ahead, made no difference that 8 pairs of runs
/// could see.)
const PREFETCH_AHEAD: usize = 4;

/// What a ring operation was for: loadgen's own op bytes in the shared
/// ring layer's `user_data` layout (`sockbench::ring::token`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Op {
    /// Receive on connection `slot`.
    Recv = 1,
    /// Send on connection `slot`.
    Send = 2,
    /// The multishot poll on the epoll descriptor, which still watches
    /// connects in progress while the ring carries the data.
    Poll = 3,
    /// A conversation's socket, socket option or bind, linked before its connect.
    Chain = 4,
    /// A conversation's connect.
    Connect = 5,
    /// A conversation's shutdown, close or cancel: its result changes nothing.
    Release = 6,
}

impl OpKind for Op {
    fn to_u8(self) -> u8 {
        self as u8
    }

    fn from_u8(v: u8) -> Option<Op> {
        match v {
            1 => Some(Op::Recv),
            2 => Some(Op::Send),
            3 => Some(Op::Poll),
            4 => Some(Op::Chain),
            5 => Some(Op::Connect),
            6 => Some(Op::Release),
            _ => None,
        }
    }
}

pub(super) type Token = sockbench::ring::token::Token<Op>;

/// The periodic tick (a multishot timeout every `MAX_WAIT_NS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tick {
    /// Not armed: armed with the next submission.
    Off,
    Armed,
    /// The kernel refused a multishot timeout (before 6.4): waits carry a timeout.
    Unsupported,
}

/// A thread's ring, with what it decided at setup.
pub struct RingIo {
    pub(super) d: Driver,
    /// AF_UNIX on a kernel whose multishot receive misses EOF, or
    /// conversations: single-shot receives.
    pub(super) single_shot: bool,
    /// The multishot poll on the epoll descriptor is armed.
    poll_armed: bool,
    tick: Tick,
    /// The tick's period, read by the kernel when the tick is submitted.
    tick_period: Box<types::Timespec>,
    /// The buffers of the sends in flight: connection `k`'s must not change
    /// until its send completes, even if the connection died since.
    pub(super) sends: SendBufs,
    /// Open loop over TCP: the template of the receives' multishot
    /// `recvmsg` (no name, room for one timestamp), which the kernel reads
    /// when each receive is armed. With it, echoes carry their arrival time
    /// and the loop waits lazily (see [`Worker::ring_turn`]).
    stamps: Option<Box<libc::msghdr>>,
    /// CLOCK_REALTIME minus the run's clock (`Shared::now_ns`), in
    /// nanoseconds, read at the start of the turn: maps the kernel's
    /// timestamps onto the run's clock.
    realtime_offset: i128,
    /// Completions the lazy wait asks for: as many as the completion queue
    /// holds, so only a deadline ends it (or a queue about to overflow).
    lazy_want: usize,
    /// A timestamped receive came without its timestamp: from then on the
    /// loop wakes for every echo, so that an echo's latency never includes
    /// a sleep it was not timed through.
    stamps_missed: bool,
    /// The ring has a sparse fixed file table with a slot per connection.
    pub(super) fixed_files: bool,
    /// Conversations: their sockets are direct descriptors, made, connected
    /// and closed by the ring.
    pub(super) direct: Option<Box<Direct>>,
    /// Why the ring works without a fixed file table or a registered index,
    /// if it does (recorded as a warning: it costs more per echo).
    pub plain_fds: Option<String>,
}

impl Drop for RingIo {
    /// Fields drop in order, the driver (closing the ring) before the send
    /// buffers, and the kernel tears a ring down in the background: if
    /// anything is still in flight (a thread that ended without
    /// `quiesce`), a send may still read its buffer, which is then leaked.
    fn drop(&mut self) {
        if self.d.in_flight > 0 {
            self.sends.leak();
        }
    }
}

impl RingIo {
    /// Sets up a ring for `conns` connections, probing what it needs; the
    /// error names a missing kernel feature.
    pub fn new(conns: usize, slot_len: usize, unix: bool, stamped: bool) -> io::Result<RingIo> {
        // A receive and a send completion per connection can be pending at once.
        let cq_entries = (conns as u32)
            .saturating_mul(2)
            .saturating_add(64)
            .clamp(2 * RING_ENTRIES, MAX_CQ_ENTRIES)
            .next_power_of_two();
        let mut d = Driver::new(RING_ENTRIES, cq_entries, BUF_COUNT, BUF_SIZE)?;
        let test = setup::self_test(&mut d)?;
        // Both are optional: without them every operation and wait looks up
        // its descriptor, as before (Linux 5.18 and 5.19 have them). The
        // table is bounded by RLIMIT_NOFILE, which bounds `conns` already.
        let ring_fd = d
            .register_ring_fd()
            .err()
            .map(|e| format!("registered ring index: {e}"));
        let files = d.ring.submitter().register_files_sparse(conns.max(1) as u32);
        let fixed_files = files.is_ok();
        let files = files.err().map(|e| format!("fixed file table of {conns}: {e}"));
        let plain_fds = match (ring_fd, files) {
            (None, None) => None,
            (a, b) => Some(a.into_iter().chain(b).collect::<Vec<_>>().join("; ")),
        };
        Ok(RingIo {
            d,
            single_shot: unix && !test.unix_multishot_eof,
            poll_armed: false,
            tick: Tick::Off,
            tick_period: Box::new(types::Timespec::from(Duration::from_nanos(MAX_WAIT_NS))),
            sends: SendBufs::new(conns, slot_len),
            stamps: stamped.then(|| {
                // SAFETY: msghdr is plain old data; all-zero is a valid value.
                let mut hdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
                hdr.msg_controllen = STAMP_CONTROL_LEN as usize;
                hdr
            }),
            realtime_offset: 0,
            lazy_want: cq_entries as usize,
            stamps_missed: false,
            fixed_files,
            direct: None,
            plain_fds,
        })
    }

    /// The ring a stream thread of `plan` with `conns` connections uses, if
    /// any: none with `--io epoll`, none with `--io auto` where the kernel
    /// lacks what it needs (`shared` says why), an error with `--io uring`.
    pub fn for_plan(plan: &Plan, conns: usize, shared: &Shared) -> io::Result<Option<RingIo>> {
        if plan.io == IoMode::Epoll {
            return Ok(None);
        }
        let slot_len = send_slot_len(plan.size, plan.depth, plan.rate.is_some());
        // Only TCP stamps stream data on receive (AF_UNIX streams do not). A
        // conversation's messages are a closed loop, which answers each echo at once.
        let stamped = plan.rate.is_some() && plan.transport == Transport::Tcp && plan.conn_msgs.is_none();
        let ring = RingIo::new(conns, slot_len, plan.transport == Transport::Unix, stamped).and_then(|mut r| {
            if plan.conn_msgs.is_some() {
                r.enable_direct(plan, conns)?;
            }
            Ok(r)
        });
        match ring {
            Ok(r) => {
                if let Some(why) = &r.plain_fds {
                    *shared.plain_fds.lock().unwrap() = Some(why.clone());
                }
                Ok(Some(r))
            }
            Err(e) if plan.io == IoMode::Auto => {
                *shared.io_fallback.lock().unwrap() = Some(e.to_string());
                Ok(None)
            }
            Err(e) => Err(io::Error::new(e.kind(), format!("--io uring: {e}"))),
        }
    }

    /// Ends everything in flight and waits (bounded) for it. If the ring
    /// does not go quiet, the kernel may still read a send buffer: they are
    /// leaked (the process is about to exit; the driver leaks its buffer ring too).
    ///
    /// The caller has shut down every connection's socket, so their
    /// receives end by themselves: those are waited for first, and only
    /// what is left is cancelled. One cancel of everything with thousands of
    /// multishot receives armed is quadratic in the kernel (Linux 6.18: each
    /// request it cancels starts a new walk of the whole poll table, in
    /// `io_poll_cancel`), and it runs without a preemption point: at 16,667
    /// connections it held the thread's CPU for about 3.5 s (95% of
    /// loadgen's samples in `io_cancel_req_match`), and with `--pin 1` that
    /// CPU was every loadgen thread's (see `Drain`).
    pub fn quiesce(&mut self) {
        self.let_receives_end();
        if !self.d.quiesce() {
            self.sends.leak();
            // Before Linux 6.13 unregistering the files waits for every
            // request in flight, without a bound: the ring's teardown at
            // exit drops the table instead.
            return;
        }
        // Lets the sockets close with their descriptors, now, rather than
        // when the ring goes.
        if self.fixed_files {
            let _ = self.d.ring.submitter().unregister_files();
            self.fixed_files = false;
        }
    }

    /// Runs the ring (bounded) until nothing is in flight but the poll on
    /// the epoll descriptor and the tick: the receives of sockets that were
    /// shut down end with EOF. What completes is dropped, its buffer given
    /// back, so that no receive ends for want of one.
    fn let_receives_end(&mut self) {
        let deadline = Instant::now() + RECEIVES_END_WAIT;
        loop {
            let persistent = usize::from(self.poll_armed) + usize::from(self.tick == Tick::Armed);
            if self.d.in_flight <= persistent || Instant::now() >= deadline {
                return;
            }
            self.d.bufs.publish();
            if self.d.submit_and_wait(Some(Duration::from_millis(20))).is_err() {
                return;
            }
            let completions = self.d.take_completions();
            for c in &completions {
                if let Some(bid) = cqueue::buffer_select(c.flags) {
                    self.d.bufs.taken(bid);
                    self.d.bufs.recycle(bid);
                }
                if !cqueue::more(c.flags) {
                    if c.user_data == TICK {
                        self.tick = Tick::Off;
                    } else if Token::decode(c.user_data).is_some_and(|t| t.op == Op::Poll) {
                        self.poll_armed = false;
                    }
                }
            }
            self.d.return_completions(completions);
        }
    }

    /// How an operation names connection `k` whose socket is `fd`: by its
    /// fixed file slot, with the flag that says so, or by descriptor.
    fn target(&self, k: usize, fd: RawFd) -> (types::Fd, squeue::Flags) {
        if self.fixed_files {
            (types::Fd(k as i32), squeue::Flags::FIXED_FILE)
        } else {
            (types::Fd(fd), squeue::Flags::empty())
        }
    }

    /// Puts socket `fd` in connection `k`'s fixed file slot (a no-op
    /// without a fixed file table).
    fn install(&self, k: usize, fd: RawFd) -> io::Result<()> {
        if self.fixed_files {
            self.d.ring.submitter().register_files_update(k as u32, &[fd])?;
        }
        Ok(())
    }

    /// Empties connection `k`'s fixed file slot, so that closing its
    /// descriptor closes the socket (the table holds a reference of its own;
    /// operations still in flight hold theirs).
    pub fn forget(&self, k: usize) {
        if self.fixed_files {
            let _ = self.d.ring.submitter().register_files_update(k as u32, &[-1]);
        }
    }

    /// Connection `k`, up on the ring, is dropped. A receive armed on the ring
    /// holds the socket open past close(), as does the ring's fixed file slot:
    /// shutdown ends the receive (and any send) and tells the server now; the
    /// slot is emptied (a direct socket's by the ring, before its next use).
    pub(super) fn let_go(&mut self, k: usize, sock: &Socket) {
        if sock.is_direct() {
            return self.release_direct(k, true);
        }
        let _ = ssys::shutdown(sock.fd(), libc::SHUT_RDWR);
        self.forget(k);
    }

    /// Receives carry their kernel timestamps, and every one so far had it.
    fn sleeps_through_echoes(&self) -> bool {
        self.stamps.is_some() && !self.stamps_missed
    }
}

/// The length of a send buffer. In closed loop at most `--depth` messages
/// are queued, so that is all a send needs (rounded up to a cache line). In
/// open loop a stall can queue more, and draining that backlog takes fewer
/// sends from a bigger buffer: a page or more. Never more than `BUF_LEN`.
fn send_slot_len(size: usize, depth: u64, open_loop: bool) -> usize {
    let need = size.saturating_mul(depth as usize);
    let len = if open_loop { need.max(4096) } else { need };
    len.min(BUF_LEN).next_multiple_of(64)
}

/// Asks the CPU to bring the cache line holding `p` closer; a hint that
/// never faults, whatever `p` is.
#[inline(always)]
fn prefetch(p: *const u8) {
    // SAFETY: SSE is part of x86_64's baseline, and a prefetch reads
    // nothing: any address is allowed.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

impl Worker<'_, Stream> {
    fn ring(&mut self) -> &mut RingIo {
        self.ring.as_mut().expect("io_uring mode")
    }

    /// Moves connection `k`, just connected, from epoll to the ring.
    pub(super) fn ring_attach(&mut self, k: usize) -> io::Result<()> {
        let Life::Up(up) = &self.conns[k].life else {
            return Ok(());
        };
        if up.sock.is_direct() {
            // Made on the ring, in its slot already; epoll never saw it.
            return self.arm_recv(k);
        }
        ssys::epoll_ctl(self.ep.as_fd(), libc::EPOLL_CTL_DEL, up.sock.raw_fd(), 0, 0)?;
        let ring = self.ring.as_ref().expect("io_uring mode");
        if ring.stamps.is_some() {
            ssys::setsockopt_int(up.sock.fd(), libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)?;
        }
        ring.install(k, up.sock.raw_fd())?;
        self.arm_recv(k)
    }

    fn arm_recv(&mut self, k: usize) -> io::Result<()> {
        let ring = self.ring.as_mut().expect("io_uring mode");
        let Life::Up(up) = &mut self.conns[k].life else {
            return Ok(());
        };
        let (fd, file_flags) = ring.target(k, up.sock.raw_fd());
        let bgid = ring.d.bufs.bgid();
        let sqe = if let Some(hdr) = &ring.stamps {
            opcode::RecvMsgMulti::new(fd, &**hdr, bgid).build()
        } else if ring.single_shot {
            opcode::Recv::new(fd, std::ptr::null_mut(), BUF_SIZE)
                .buf_group(bgid)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT)
        } else {
            opcode::RecvMulti::new(fd, bgid).build()
        };
        let sqe = sqe
            .flags(file_flags)
            .user_data(Token::new(Op::Recv, ring.gen(k), k as u32).encode());
        // SAFETY: the receive writes only into the registered buffer ring, which
        // the driver keeps until nothing is in flight (or leaks). A recvmsg
        // reads its template when it is armed; the template is boxed in the
        // ring and never changes.
        unsafe { ring.d.push(sqe)? };
        up.proto.recv_armed = true;
        Ok(())
    }

    /// Sends connection `k`'s unsent bytes, unless a send is in flight (its
    /// completion calls back here through `mark_dirty`).
    pub(super) fn ring_send(&mut self, k: usize, now: u64) {
        let size = self.plan.size;
        let ring = self.ring.as_mut().expect("io_uring mode");
        let c = &mut self.conns[k];
        let Life::Up(up) = &mut c.life else { return };
        if ring.sends.busy(k) {
            return;
        }
        let out = ring.sends.take(k);
        let len = up.fill_unsent(c.id, size, now, out);
        let out = out.as_ptr();
        if len == 0 {
            ring.sends.release(k);
            return;
        }
        self.timers.arm(k, now + self.plan.timeout_ns);
        let (fd, file_flags) = ring.target(k, up.sock.raw_fd());
        let sqe = opcode::Send::new(fd, out, len as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .flags(file_flags)
            .user_data(Token::new(Op::Send, ring.gen(k), k as u32).encode());
        // SAFETY: connection `k` holds its buffer until the send's completion
        // (`on_send`), and nothing else writes it meanwhile; the buffers are
        // never moved, and freed only once the ring is quiet
        // (`RingIo::quiesce` leaks them otherwise).
        if let Err(e) = unsafe { ring.d.push(sqe) } {
            ring.sends.release(k);
            self.lost(k, now, format!("io_uring submit failed: {e}"));
        }
    }

    /// One loop turn: submits what the last turn queued, waits for
    /// completions (until `until` if `exact`, else until the next tick at
    /// most), and handles them.
    ///
    /// With timestamped receives, once the open loop runs, the wait is lazy:
    /// it lasts until `until` whatever completes meanwhile, so that the echoes
    /// of a burst of sends are handled together at the next send deadline
    /// (their latency comes from their kernel timestamps). Every other wait
    /// ends at the first completion.
    pub(super) fn ring_turn(&mut self, until: u64, exact: bool) -> io::Result<()> {
        let ep = self.ep.as_raw_fd();
        let started = self.load_start != UNSET;
        let now = self.shared.now_ns();
        let ring = self.ring();
        let lazy = started && ring.sleeps_through_echoes();
        ring.flush_releases()?;
        if !ring.poll_armed {
            let sqe = opcode::PollAdd::new(types::Fd(ep), libc::POLLIN as u32)
                .multi(true)
                .build()
                .user_data(Token::new(Op::Poll, 0, 0).encode());
            // SAFETY: a poll carries no buffer.
            unsafe { ring.d.push(sqe)? };
            ring.poll_armed = true;
        }
        if ring.tick == Tick::Off {
            let sqe = opcode::Timeout::new(&*ring.tick_period)
                .flags(types::TimeoutFlags::MULTISHOT)
                .build()
                .user_data(TICK);
            // SAFETY: the kernel reads the timespec when the entry is submitted;
            // it is boxed in the ring, which outlives every submission.
            unsafe { ring.d.push(sqe)? };
            ring.tick = Tick::Armed;
        }
        ring.d.bufs.publish();
        let timeout = Duration::from_nanos(until.saturating_sub(now).max(1));
        if lazy {
            ring.d.submit_and_wait_for(ring.lazy_want, Some(timeout))?;
        } else if exact || ring.tick != Tick::Armed {
            ring.d.submit_and_wait(Some(timeout))?;
        } else {
            ring.d.submit_and_wait(None)?;
        }
        let completions = ring.d.take_completions();
        let now = self.shared.now_ns();
        let ring = self.ring();
        if ring.stamps.is_some() {
            ring.realtime_offset = realtime_ns() - now as i128;
        }
        for (i, &cqe) in completions.iter().enumerate() {
            if let Some(ahead) = completions.get(i + PREFETCH_AHEAD) {
                self.prefetch_conn(ahead.user_data);
            }
            self.on_completion(cqe, now)?;
        }
        let ring = self.ring();
        ring.d.return_completions(completions);
        ring.d.bufs.publish();
        Ok(())
    }

    /// Starts loading the state of the connection a completion names into
    /// the cache, a few completions before it is handled: at 10,000
    /// connections nearly every connection visited is a cache miss, and the
    /// turn's completions say in advance which ones come next.
    #[inline]
    fn prefetch_conn(&self, user_data: u64) {
        let Some(t) = Token::decode(user_data) else { return };
        if matches!(t.op, Op::Recv | Op::Send) {
            if let Some(c) = self.conns.get(t.slot as usize) {
                let p = (c as *const Conn<Stream>).cast::<u8>();
                prefetch(p);
                prefetch(p.wrapping_add(64));
            }
        }
    }

    fn on_completion(&mut self, cqe: Completion, now: u64) -> io::Result<()> {
        if cqe.user_data == TICK {
            if !cqueue::more(cqe.flags) {
                // Each expiry completes with -ETIME and more to come; an end
                // without that is a cancel (re-armed next turn) or a kernel
                // that does not know multishot timeouts.
                self.ring().tick = if cqe.result == -libc::EINVAL {
                    Tick::Unsupported
                } else {
                    Tick::Off
                };
            }
            return Ok(());
        }
        let Some(t) = Token::decode(cqe.user_data) else {
            return Ok(());
        };
        match t.op {
            Op::Poll => {
                if !cqueue::more(cqe.flags) {
                    self.ring().poll_armed = false;
                }
                // The poll fires on a wakeup, not while events stay ready, so take
                // them all: a full array means there may be more.
                while self.epoll_turn(0)? {}
            }
            Op::Recv => self.on_recv(t.slot as usize, t.gen, cqe, now),
            Op::Send => self.on_send(t.slot as usize, t.gen, cqe, now),
            Op::Chain => self.on_chain(t.slot as usize, t.gen, cqe.result, now),
            Op::Connect => self.on_connect(t.slot as usize, t.gen, cqe.result, now),
            Op::Release => {}
        }
        Ok(())
    }

    fn on_recv(&mut self, k: usize, gen: u32, cqe: Completion, now: u64) {
        let refill = self.refills(now);
        let ring = self.ring.as_mut().expect("io_uring mode");
        let bid = cqueue::buffer_select(cqe.flags);
        if let Some(bid) = bid {
            ring.d.bufs.taken(bid);
        }
        let current = ring.gen(k) == gen;
        let Some(up) = self.conns[k].life.up_mut().filter(|_| current) else {
            // A connection already dropped (or a conversation already
            // over, its slot since reused): its last receives end here.
            if let Some(bid) = bid {
                ring.d.bufs.recycle(bid);
            }
            return;
        };
        if !cqueue::more(cqe.flags) {
            up.proto.recv_armed = false;
        }
        // The echo is checked where the kernel put it, then the buffer goes back.
        // A timestamped receive holds a header before the data; it ends
        // (the server closed) with no data rather than with 0.
        let mut closed = cqe.result == 0;
        let absorbed = bid.map(|bid| {
            let buf = ring.d.bufs.slice(bid, cqe.result.max(0) as usize);
            let got = match (&ring.stamps, cqe.result > 0) {
                (_, false) => None,
                (None, true) => Some(up.absorb(buf, &mut self.rec, refill, now)),
                (Some(hdr), true) => match stamped_data(buf, hdr) {
                    Some(([], _)) => {
                        closed = true;
                        None
                    }
                    Some((data, stamp)) => {
                        if stamp.is_none() {
                            ring.stamps_missed = true;
                            self.shared.unstamped.fetch_add(1, Relaxed);
                        }
                        // On the run's clock; never later than now, so a clock
                        // step cannot make a latency grow.
                        let arrived = stamp.map_or(now, |rt| (rt - ring.realtime_offset).clamp(0, now as i128) as u64);
                        Some(up.absorb(data, &mut self.rec, refill, arrived))
                    }
                    None => None,
                },
            };
            ring.d.bufs.recycle(bid);
            got
        });
        if closed {
            return self.lost(k, now, "server closed a connection".into());
        }
        match cqe.result {
            n if n > 0 => {
                let Some(Some(got)) = absorbed else {
                    return self.lost(k, now, "io_uring: data without a buffer".into());
                };
                if !self.after_absorb(k, got, now) {
                    return;
                }
                if self.conv.is_some() {
                    // The conversation may end here (no receive is re-armed
                    // below once its slot is not up any more).
                    self.conv_after_echo(k, now);
                }
            }
            0 => return self.lost(k, now, "server closed a connection".into()),
            e if -e == libc::ENOBUFS => {} // the buffer ring ran dry: re-armed below
            e => {
                let e = io::Error::from_raw_os_error(-e);
                return self.lost(k, now, format!("connection error: {e}"));
            }
        }
        if matches!(&self.conns[k].life, Life::Up(up) if !up.proto.recv_armed) {
            if let Err(e) = self.arm_recv(k) {
                self.lost(k, now, format!("io_uring submit failed: {e}"));
            }
        }
    }

    fn on_send(&mut self, k: usize, gen: u32, cqe: Completion, now: u64) {
        let ring = self.ring();
        ring.sends.release(k);
        if ring.gen(k) != gen {
            // The send of a conversation already over: the slot's next one
            // may be waiting for the buffer.
            return self.mark_dirty(k);
        }
        let Life::Up(up) = &mut self.conns[k].life else { return };
        if cqe.result < 0 {
            let e = io::Error::from_raw_os_error(-cqe.result);
            return self.lost(k, now, format!("send failed: {e}"));
        }
        up.advance_sent(self.plan.size, cqe.result as usize);
        // The rest of a partial send, or what was queued while this one flew.
        self.mark_dirty(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixed file table holds a socket open by itself: closing the
    /// descriptor does not close the socket (its peer sees no EOF) until
    /// the slot is emptied. That is why a dropped connection's slot is
    /// emptied (`Worker::lost`).
    #[test]
    fn a_socket_in_a_fixed_slot_closes_only_when_the_slot_is_emptied() {
        use std::io::Read;
        use std::os::unix::net::UnixStream;

        let ring = RingIo::new(2, 128, true, false).expect("io_uring");
        assert!(
            ring.fixed_files,
            "this kernel has sparse fixed file tables: {:?}",
            ring.plain_fds
        );
        let (ours, mut peer) = UnixStream::pair().unwrap();
        peer.set_nonblocking(true).unwrap();
        ring.install(1, std::os::fd::AsRawFd::as_raw_fd(&ours)).unwrap();
        drop(ours);
        let mut buf = [0u8; 8];
        let err = peer.read(&mut buf).expect_err("no EOF while the slot holds the socket");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        ring.forget(1);
        peer.set_nonblocking(false).unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(peer.read(&mut buf).unwrap(), 0, "EOF once the slot is emptied");
    }
}
