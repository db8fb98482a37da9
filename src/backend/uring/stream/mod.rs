//! Stream connections (TCP, Unix): multishot accept, multishot receive into
//! the buffer ring, and sends straight out of the ring buffer.
//!
//! Per connection, one send is in flight at a time, which keeps the echo in
//! order. The fast path is zero-copy: a received buffer is sent back as is and
//! recycled when that send completes. Anything received while a send is in
//! flight is copied to the connection's `backlog` and its buffer recycled at
//! once, and a send that finds the socket full (`EAGAIN`: sends carry
//! `MSG_DONTWAIT`) copies its rest out of the ring too and waits for `POLLOUT`.
//!
//! Fairness: a connection therefore holds at most one ring buffer, and only
//! for as long as the kernel takes to copy it into the socket. A client that
//! never reads costs heap memory (capped at `MAX_PENDING_BYTES`, above which
//! its receive is cancelled until the backlog drains), never ring buffers, so
//! it cannot starve the other connections of buffers however small the ring.
//! A multishot receive empties the socket until the cancel lands, so the
//! backlog can overshoot the cap by one socket receive buffer; `net` sizes
//! that buffer (`SO_RCVBUF` on TCP listeners) so the overshoot stays bounded.
//!
//! When the ring runs dry a multishot receive ends with `ENOBUFS`. The
//! connection then waits in `starved`, and is re-armed, oldest first, once
//! buffers have come back (as many connections per turn as there are free
//! buffers), so a dry ring neither stalls nor spins.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::Ordering;
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types};

use super::files::Files;
use super::token::{self, Op, Token, GEN_MASK};
use super::wait::{plan_wait, WaitPolicy};
use super::Shared;
use crate::backend::MAX_PENDING_BYTES;
use conn::{Conn, Life, Reading, Sending};

mod accept;
mod conn;
mod stop;
use crate::ring::{Completion, Driver};

/// A connection's send and backlog buffers keep this much capacity between
/// bursts; larger ones are freed once sent.
const KEEP_HEAP_CAPACITY: usize = 64 * 1024;
use crate::serve::LocalCounts;

/// How long accept waits after EMFILE/ENFILE before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Within this many connections of `--max-conns`, accept switches from
/// multishot (which may take a whole burst from the backlog before a cancel
/// lands) to: poll the listener, reserve a place, then one single-shot accept.
/// The cap then holds exactly, across rings, without refusing anyone; and a
/// ring reserves a place only when its own listener has a client waiting, so
/// an idle ring cannot hold the last place while another ring's client waits.
const NEAR_CAP: usize = 64;
/// How often a ring whose accept is paused at `--max-conns` looks whether
/// another ring has closed a connection (its own closes are seen at once).
const MAX_CONNS_RECHECK: Duration = Duration::from_millis(50);

/// Where this ring's accept stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Accept {
    /// None armed.
    Off,
    /// A multishot accept is armed; `cancel_sent` once a cancel for it is on
    /// its way (near the cap, out of descriptors, or stopping).
    Multishot { cancel_sent: bool },
    /// Near the cap: a single-shot accept is armed and holds a place it
    /// reserved in `Shared::open`.
    Reserved,
}

struct Slot {
    gen: u32,
    conn: Option<Conn>,
}

/// One ring serving stream connections.
pub(super) struct StreamWorker<'a> {
    d: Driver,
    listener: BorrowedFd<'a>,
    shared: &'a Shared,
    /// How operations name connection sockets (`--uring-fixed-files`).
    files: Files,
    /// `--uring-wait`, `--uring-min-wait`.
    wait: WaitPolicy,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Connections whose receive ended with ENOBUFS, oldest first: (slot, gen).
    starved: VecDeque<(u32, u32)>,
    accept: Accept,
    /// A poll for a pending connection is armed (near the cap). It may
    /// still be armed when the accept is, and is then ignored.
    ready_poll_armed: bool,
    /// The EMFILE back-off timer is armed; no accept is armed until it fires.
    backoff_armed: bool,
    /// The back-off timeout; the kernel reads it when the timeout is submitted.
    backoff_ts: Box<types::Timespec>,
    unix_single_shot: bool,
    stopping: bool,
    counts: LocalCounts,
    errors: u64,
    /// The generation of this ring's own operations (accept, its poll and
    /// back-off timer, the stop poll); bumped when the ring starts over after
    /// dropped completions, so that late completions of the old ones are stale.
    epoch: u32,
    /// Sends queued this turn whose completion needs no follow-up (see `plan_wait`).
    quiet_sends: usize,
    /// Something queued or seen this turn needs the next completions handled at once.
    prompt: bool,
}

impl<'a> StreamWorker<'a> {
    pub(super) fn new(
        d: Driver,
        listener: BorrowedFd<'a>,
        shared: &'a Shared,
        files: Files,
        wait: WaitPolicy,
        unix_single_shot: bool,
    ) -> Self {
        StreamWorker {
            d,
            listener,
            shared,
            files,
            wait,
            slots: Vec::new(),
            free: Vec::new(),
            starved: VecDeque::new(),
            accept: Accept::Off,
            ready_poll_armed: false,
            backoff_armed: false,
            backoff_ts: Box::new(types::Timespec::from(ACCEPT_BACKOFF)),
            unix_single_shot,
            stopping: false,
            counts: LocalCounts::default(),
            errors: 0,
            epoch: 0,
            quiet_sends: 0,
            prompt: false,
        }
    }

    pub(super) fn run(mut self) -> io::Result<()> {
        self.arm_shutdown_poll()?;
        let result = self.event_loop();
        self.close_all();
        result
    }

    fn arm_shutdown_poll(&mut self) -> io::Result<()> {
        let poll = opcode::PollAdd::new(types::Fd(self.shared.shutdown.fd().as_raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(self.own(Op::Shutdown));
        // SAFETY: a poll carries no buffer; the eventfd lives for the whole process.
        unsafe { self.d.push(poll) }
    }

    /// The `user_data` of one of this ring's own operations, in this epoch.
    fn own(&self, op: Op) -> u64 {
        Token::new(op, self.epoch, 0).encode()
    }

    fn event_loop(&mut self) -> io::Result<()> {
        loop {
            self.update_accept()?;
            self.rearm_starved()?;
            self.d.bufs.publish();
            self.flush_counts();
            let at_cap = self.accept == Accept::Off && !self.ready_poll_armed && !self.backoff_armed && !self.stopping;
            let prompt = self.prompt || !self.starved.is_empty();
            let recheck = at_cap.then_some(MAX_CONNS_RECHECK);
            // With min_wait, a batch of one message from each connection:
            // in a closed loop none sends a second before its echo, so more
            // could not come, and a smaller batch would wake before all have sent.
            let conns = self.slots.len() - self.free.len();
            let wait = plan_wait(self.wait, self.quiet_sends, conns, prompt, recheck);
            (self.quiet_sends, self.prompt) = (0, false);
            self.d.submit_and_wait_planned(wait)?;
            let batch = self.d.take_completions();
            for c in batch.iter().copied() {
                self.dispatch(c)?;
            }
            self.d.return_completions(batch);
            if self.d.take_dropped() {
                self.start_over()?;
            }
            if self.stopping || self.shared.shutdown.requested() {
                return Ok(());
            }
        }
    }

    fn flush_counts(&mut self) {
        // Messages are counted when received and bytes when sent, so a turn
        // may have bytes and no messages: `flush` carries both.
        self.counts.flush(self.shared.stats);
        if self.errors > 0 {
            self.shared.stats.errors.fetch_add(self.errors, Ordering::Relaxed);
            self.errors = 0;
        }
        let ring_errors = self.d.take_ring_errors();
        if ring_errors > 0 {
            self.shared.stats.ring_errors.fetch_add(ring_errors, Ordering::Relaxed);
        }
    }

    /// Completions were dropped (`EBADR`): some operations ended unheard, and
    /// which ones is unknowable. A connection that missed a receive completion
    /// has lost part of its stream, and one that missed a send's does not know
    /// what it sent, so no connection's state can be trusted. Rather than end
    /// the server (or echo a stream with a hole in it), the ring starts over:
    /// every connection is shut down and closed (its client sees the close;
    /// each counts as an error), the ring's own operations are cancelled,
    /// and accept and the stop poll are armed again in a new epoch, so late
    /// completions of the old operations are recognised as stale.
    ///
    /// Not one cancel of everything: with thousands of receives armed it would
    /// hold the thread for seconds (see `stop`). A shutdown ends a
    /// connection's operations by themselves, and a cancel by `user_data`
    /// finds its one request by hash.
    fn start_over(&mut self) -> io::Result<()> {
        self.prompt = true;
        self.cancel_own_ops()?;
        self.epoch = (self.epoch + 1) & GEN_MASK;
        if self.accept == Accept::Reserved {
            // A late completion of that accept is stale: it is closed unused.
            self.shared.open.fetch_sub(1, Ordering::AcqRel);
        }
        self.accept = Accept::Off;
        self.ready_poll_armed = false;
        self.backoff_armed = false;
        self.starved.clear();
        for slot in 0..self.slots.len() as u32 {
            self.abandon(slot)?;
        }
        self.arm_shutdown_poll()
    }

    /// Cancels, each by its `user_data`, this epoch's own operations that may
    /// still be in flight. One whose end went unheard is not found, which
    /// does no harm; none can be in flight that our state says is not.
    fn cancel_own_ops(&mut self) -> io::Result<()> {
        let maybe_armed = [
            // The stop poll ends only with a stop, or here.
            (Op::Shutdown, true),
            (Op::Accept, self.accept != Accept::Off),
            (Op::AcceptReady, self.ready_poll_armed),
            (Op::AcceptBackoff, self.backoff_armed),
        ];
        for (op, armed) in maybe_armed {
            if armed {
                self.cancel(self.own(op))?;
            }
        }
        Ok(())
    }

    /// Closes a connection whose operations may still be in flight (see
    /// `start_over`); its slot gets a new generation, so their completions are stale.
    fn abandon(&mut self, slot: u32) -> io::Result<()> {
        let shutdown_token = self.token(Op::ConnShutdown, slot);
        let s = &mut self.slots[slot as usize];
        let Some(conn) = s.conn.take() else {
            return Ok(());
        };
        s.gen = (s.gen + 1) & GEN_MASK;
        self.free.push(slot);
        let Conn {
            file,
            heap,
            sending,
            send_in_flight,
            ..
        } = conn;
        if send_in_flight {
            // The kernel may read the bytes being sent until the shutdown ends
            // the send: the heap buffer is leaked, and a ring buffer stays taken for good.
            std::mem::forget(heap);
        } else if let Sending::Ring { bid, .. } = sending {
            self.d.bufs.recycle(bid);
        }
        self.errors += 1;
        self.shared.open.fetch_sub(1, Ordering::AcqRel);
        self.shared.stats.conn_closed();
        self.shut_down_then_close(file, shutdown_token)
    }

    /// Closes socket `file` (the client sees EOF); a fixed slot is freed for
    /// a later accept.
    fn close_file(&mut self, file: u32) -> io::Result<()> {
        let sqe = self.files.close(file).user_data(token::CANCEL);
        // SAFETY: a close carries no buffer.
        unsafe { self.d.push(sqe) }
    }

    fn dispatch(&mut self, c: Completion) -> io::Result<()> {
        let Some(t) = Token::decode(c.user_data) else {
            return Ok(());
        };
        let own_op = matches!(t.op, Op::Shutdown | Op::Accept | Op::AcceptReady | Op::AcceptBackoff);
        if own_op && t.gen != self.epoch {
            // From before `start_over`: a connection it accepted is closed unused.
            if t.op == Op::Accept && c.result >= 0 {
                return self.close_file(c.result as u32);
            }
            return Ok(());
        }
        match t.op {
            // Cancelled only by `start_over`, which arms a new one.
            Op::Shutdown => self.stopping |= c.result >= 0,
            Op::Accept => self.on_accept(c)?,
            Op::AcceptReady => self.on_accept_ready(c)?,
            Op::AcceptBackoff => self.backoff_armed = false,
            Op::Recv => self.on_recv(t, c)?,
            Op::Send => self.on_send(t, c)?,
            Op::Writable => self.on_writable(t, c)?,
            Op::Cancel | Op::DgramRecv | Op::DgramSend | Op::ConnShutdown => {
                if let Some(bid) = cqueue::buffer_select(c.flags) {
                    self.d.bufs.taken(bid);
                    self.d.bufs.recycle(bid);
                }
            }
        }
        Ok(())
    }

    fn cancel(&mut self, user_data: u64) -> io::Result<()> {
        self.prompt = true;
        let sqe = opcode::AsyncCancel::new(user_data).build().user_data(token::CANCEL);
        // SAFETY: a cancel request carries no buffer.
        unsafe { self.d.push(sqe) }
    }

    // ------------------------------------------------------------ connections

    fn conn(&mut self, slot: u32) -> &mut Conn {
        self.slots[slot as usize].conn.as_mut().expect("live connection slot")
    }

    /// The connection a completion is for, unless the slot has been reused since.
    fn live(&self, t: Token) -> bool {
        self.slots
            .get(t.slot as usize)
            .is_some_and(|s| s.gen == t.gen && s.conn.is_some())
    }

    fn token(&self, op: Op, slot: u32) -> u64 {
        Token::new(op, self.slots[slot as usize].gen, slot).encode()
    }

    fn arm_recv(&mut self, slot: u32) -> io::Result<()> {
        let ud = self.token(Op::Recv, slot);
        let (bgid, buf_size, single) = (self.d.bufs.bgid(), self.d.bufs.buf_size(), self.unix_single_shot);
        let fd = self.files.fd(self.conn(slot).file);
        let sqe = if single {
            opcode::Recv::new(fd, std::ptr::null_mut(), buf_size)
                .buf_group(bgid)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT)
        } else {
            opcode::RecvMulti::new(fd, bgid).build()
        };
        // SAFETY: the receive writes only into the registered buffer ring, which
        // outlives every operation (see `Driver`).
        unsafe { self.d.push(sqe.flags(self.files.flags()).user_data(ud))? };
        let conn = self.conn(slot);
        conn.reading = Reading::Armed { cancelling: false };
        conn.ops += 1;
        Ok(())
    }

    /// Sends what `sending` points at.
    fn start_send(&mut self, slot: u32) -> io::Result<()> {
        let ud = self.token(Op::Send, slot);
        let (ptr, len, fd, quiet) = {
            let bufs = &self.d.bufs;
            let conn = self.slots[slot as usize].conn.as_ref().expect("live connection slot");
            let (ptr, len) = match conn.sending {
                Sending::Idle => return Ok(()),
                // SAFETY (pointer arithmetic): off < len <= buf_size, inside buffer `bid`.
                Sending::Ring { bid, off, len } => {
                    (unsafe { bufs.buf_ptr(bid).add(off as usize) } as *const u8, len - off)
                }
                Sending::Heap { off } => (conn.heap[off..].as_ptr(), (conn.heap.len() - off) as u32),
            };
            // Straight from a ring buffer, nothing queued behind it, no EOF
            // to act on: its completion only gives the buffer back.
            let quiet =
                matches!(conn.sending, Sending::Ring { .. }) && conn.backlog.is_empty() && conn.reading != Reading::Eof;
            (ptr, len, conn.file, quiet)
        };
        let sqe = opcode::Send::new(self.files.fd(fd), ptr, len)
            .flags(libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
            .build()
            .flags(self.files.flags())
            .user_data(ud);
        // SAFETY: a ring buffer being sent is recycled only after this send
        // completes; `heap` is not modified while `send_in_flight`, and the
        // connection (owning `heap`) is freed only when no operation is in flight.
        unsafe { self.d.push(sqe)? };
        if quiet {
            self.quiet_sends += 1;
        } else {
            self.prompt = true;
        }
        let conn = self.conn(slot);
        conn.send_in_flight = true;
        conn.ops += 1;
        Ok(())
    }

    fn on_recv(&mut self, t: Token, c: Completion) -> io::Result<()> {
        let bid = cqueue::buffer_select(c.flags);
        if let Some(bid) = bid {
            self.d.bufs.taken(bid);
        }
        if !self.live(t) {
            if let Some(bid) = bid {
                self.d.bufs.recycle(bid);
            }
            return Ok(());
        }
        let slot = t.slot;
        let more = cqueue::more(c.flags);
        let conn = self.conn(slot);
        if !more {
            conn.reading.ended();
            conn.ops -= 1;
        }
        if conn.closing() {
            if let Some(bid) = bid {
                self.d.bufs.recycle(bid);
            }
            return self.maybe_free(slot);
        }
        match (c.result, bid) {
            (n, Some(bid)) if n > 0 => {
                let n = n as u32;
                self.counts.messages += 1;
                let conn = self.slots[slot as usize].conn.as_mut().expect("live connection slot");
                if conn.sending == Sending::Idle && conn.backlog.is_empty() && !conn.send_in_flight {
                    conn.sending = Sending::Ring { bid, off: 0, len: n };
                    self.start_send(slot)?;
                } else {
                    conn.backlog.extend_from_slice(self.d.bufs.slice(bid, n as usize));
                    self.d.bufs.recycle(bid);
                    // The send in flight must be followed by this one promptly.
                    self.prompt = true;
                }
                let conn = self.conn(slot);
                if conn.unsent() > MAX_PENDING_BYTES {
                    // The client is not reading its echo: stop receiving until it does.
                    if conn.reading.pause() {
                        let ud = self.token(Op::Recv, slot);
                        self.cancel(ud)?;
                    }
                } else if conn.may_arm_recv() {
                    // Single-shot receive, or a multishot that ended for its own reasons.
                    self.arm_recv(slot)?;
                }
            }
            (0, _) => {
                if let Some(bid) = bid {
                    self.d.bufs.recycle(bid);
                }
                self.prompt = true; // the client waits for the rest of its echo, then EOF
                let conn = self.conn(slot);
                conn.reading = Reading::Eof;
                if conn.drained() {
                    self.begin_close(slot)?;
                }
            }
            (res, _) => {
                if let Some(bid) = bid {
                    self.d.bufs.recycle(bid);
                }
                let gen = self.slots[slot as usize].gen;
                let conn = self.conn(slot);
                match -res {
                    libc::ENOBUFS if !more => {
                        conn.reading.starve();
                        self.starved.push_back((slot, gen));
                    }
                    // A receive cancelled for the cap is armed again unless the
                    // connection is still over it: a send may have drained it
                    // while the cancel was in flight, and then nothing else
                    // would re-arm it. (A final ENOBUFS went to `starved` above.)
                    libc::ECANCELED if !more => return self.maybe_resume(slot),
                    libc::ENOBUFS | libc::ECANCELED => {}
                    // An error (a reset is the client closing mid-echo, not
                    // a fault: see `Stats::conn_failed`), or (never expected)
                    // data without a buffer.
                    _ => {
                        self.shared.stats.conn_failed(&io::Error::from_raw_os_error(-res));
                        self.begin_close(slot)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn on_send(&mut self, t: Token, c: Completion) -> io::Result<()> {
        if !self.live(t) {
            return Ok(());
        }
        let slot = t.slot;
        let conn = self.conn(slot);
        conn.ops -= 1;
        conn.send_in_flight = false;
        if conn.closing() {
            self.release_sending(slot);
            return self.maybe_free(slot);
        }
        if c.result > 0 {
            let n = c.result as u32;
            self.counts.bytes += n as u64;
            let conn = self.conn(slot);
            let done = match &mut conn.sending {
                Sending::Ring { off, len, .. } => {
                    *off += n;
                    *off >= *len
                }
                Sending::Heap { off } => {
                    *off += n as usize;
                    *off >= conn.heap.len()
                }
                Sending::Idle => true,
            };
            if !done {
                // A partial send: resubmit the rest.
                return self.start_send(slot);
            }
            self.release_sending(slot);
            let conn = self.conn(slot);
            if conn.heap.capacity() > KEEP_HEAP_CAPACITY {
                // A burst (or a client that stopped reading) grew it: give the
                // memory back rather than keep the high-water mark per connection.
                conn.heap = Vec::new();
            } else {
                conn.heap.clear();
            }
            if !conn.backlog.is_empty() {
                std::mem::swap(&mut conn.heap, &mut conn.backlog);
                conn.sending = Sending::Heap { off: 0 };
                self.start_send(slot)?;
            } else if conn.reading == Reading::Eof {
                return self.begin_close(slot);
            }
            return self.maybe_resume(slot);
        }
        if c.result == -libc::EAGAIN {
            // The socket is full. Move the rest out of the ring buffer so the
            // ring is not held hostage by a slow reader, and wait for POLLOUT.
            if let Sending::Ring { bid, off, len } = self.conn(slot).sending {
                let rest = self.d.bufs.slice(bid, len as usize)[off as usize..].to_vec();
                self.d.bufs.recycle(bid);
                let conn = self.conn(slot);
                conn.heap = rest;
                conn.sending = Sending::Heap { off: 0 };
            }
            let ud = self.token(Op::Writable, slot);
            let fd = self.files.fd(self.conn(slot).file);
            let sqe = opcode::PollAdd::new(fd, libc::POLLOUT as u32)
                .build()
                .flags(self.files.flags())
                .user_data(ud);
            // SAFETY: a poll carries no buffer.
            unsafe { self.d.push(sqe)? };
            let conn = self.conn(slot);
            conn.send_in_flight = true;
            conn.ops += 1;
            return Ok(());
        }
        // 0 bytes for a non-empty send, or an error (EPIPE, ECONNRESET...): the peer is gone.
        self.shared.stats.conn_failed(&io::Error::from_raw_os_error(-c.result));
        self.release_sending(slot);
        self.begin_close(slot)
    }

    fn on_writable(&mut self, t: Token, c: Completion) -> io::Result<()> {
        if !self.live(t) {
            return Ok(());
        }
        let slot = t.slot;
        let conn = self.conn(slot);
        conn.ops -= 1;
        conn.send_in_flight = false;
        if conn.closing() {
            return self.maybe_free(slot);
        }
        if c.result < 0 {
            self.shared.stats.conn_failed(&io::Error::from_raw_os_error(-c.result));
            return self.begin_close(slot);
        }
        // Writable, or an error condition that the send will report.
        self.start_send(slot)
    }

    /// Gives back a ring buffer the current send was reading from.
    fn release_sending(&mut self, slot: u32) {
        let conn = self.slots[slot as usize].conn.as_mut().expect("live connection slot");
        if let Sending::Ring { bid, .. } = conn.sending {
            self.d.bufs.recycle(bid);
        }
        conn.sending = Sending::Idle;
    }

    /// Receives again once a paused connection's backlog has halved.
    fn maybe_resume(&mut self, slot: u32) -> io::Result<()> {
        let conn = self.conn(slot);
        if conn.unsent() <= MAX_PENDING_BYTES / 2 {
            conn.reading.unpause();
        }
        if conn.may_arm_recv() {
            self.arm_recv(slot)?;
        }
        Ok(())
    }

    /// Re-arms starved receives, oldest first, as many as there are free buffers.
    fn rearm_starved(&mut self) -> io::Result<()> {
        let mut budget = self.d.bufs.available();
        while budget > 0 {
            let Some((slot, gen)) = self.starved.pop_front() else {
                break;
            };
            let Some(s) = self.slots.get_mut(slot as usize) else {
                continue;
            };
            let Some(conn) = s.conn.as_mut().filter(|_| s.gen == gen) else {
                continue;
            };
            conn.reading.fed();
            if conn.may_arm_recv() {
                self.arm_recv(slot)?;
                budget -= 1;
            }
        }
        Ok(())
    }

    /// Starts closing: cancels what is in flight; the slot is freed when the
    /// last operation completes.
    fn begin_close(&mut self, slot: u32) -> io::Result<()> {
        let conn = self.conn(slot);
        let cancel_sent = conn.life == Life::Closing { cancel_sent: true };
        conn.life = Life::Closing { cancel_sent };
        if conn.ops > 0 && !cancel_sent {
            conn.life = Life::Closing { cancel_sent: true };
            let file = conn.file;
            self.prompt = true;
            let sqe = self.files.cancel_all(file).user_data(token::CANCEL);
            // SAFETY: a cancel request carries no buffer.
            unsafe { self.d.push(sqe)? };
        }
        self.maybe_free(slot)
    }

    fn maybe_free(&mut self, slot: u32) -> io::Result<()> {
        let s = &mut self.slots[slot as usize];
        if s.conn.as_ref().is_some_and(|c| c.closing() && c.ops == 0) {
            let conn = s.conn.take().expect("checked above");
            s.gen = (s.gen + 1) & GEN_MASK;
            self.free.push(slot);
            if let Sending::Ring { bid, .. } = conn.sending {
                self.d.bufs.recycle(bid);
            }
            self.shared.open.fetch_sub(1, Ordering::AcqRel);
            self.shared.stats.conn_closed();
            return self.close_file(conn.file); // the client sees EOF
        }
        Ok(())
    }
}
