//! Datagram sockets (UDP, unixgram): multishot recvmsg into the buffer ring,
//! and a send of each datagram straight out of its buffer back to its source.
//!
//! Each buffer holds a whole datagram (64 KiB plus the recvmsg header), so a
//! datagram is never split. The buffer also holds the source address, right
//! after the header, and the echo is a plain send with that address as its
//! destination (`sendto`: `IORING_OP_SEND` with `addr2`, Linux 6.1, checked
//! at start-up by [`crate::ring::setup::probe_sendto`]): payload and address stay
//! put in the buffer until the send completes, so nothing is copied out and
//! no `msghdr` has to outlive the submission.
//!
//! Sends carry `MSG_DONTWAIT`: a receiver whose queue is full (a unixgram
//! client that never reads) loses that echo, as a datagram may be lost,
//! instead of holding a ring buffer until it reads.
//!
//! Unixgram answers go through [`PeerBudget`] (see `backend/peer_budget.rs`),
//! so that clients which never read cannot fill our send buffer for everyone.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::Ordering;

use io_uring::types::RecvMsgOut;
use io_uring::{cqueue, opcode, types};

use super::files::Files;
use super::token::{self, Op, Token};
use super::wait::{plan_wait, WaitPolicy};
use super::Shared;
use crate::backend::peer_budget::SharedPeerBudget;
use crate::ring::{Completion, Driver};
use crate::serve::LocalCounts;

/// With `--uring-min-wait`, how many datagrams a turn waits for before its
/// min_wait has passed. One socket serves every peer, so the ring cannot know
/// how many are sending (as a stream ring counts its connections); 32 is a
/// batch that amortises a wake-up, and never more than the free buffers,
/// since each datagram holds one until its echo is sent and a receive past
/// the last one ends (`ENOBUFS`).
const MIN_WAIT_BATCH: u32 = 32;

/// An empty `msghdr`, from which the recvmsg template is made.
fn zeroed_msghdr() -> libc::msghdr {
    // SAFETY: msghdr is a plain C struct for which all-zero (null pointers,
    // zero lengths) is a valid value.
    unsafe { std::mem::zeroed() }
}

/// One ring serving a datagram socket.
pub(super) struct DgramWorker<'a> {
    d: Driver,
    sock: BorrowedFd<'a>,
    /// How operations name `sock` (`--uring-fixed-files`).
    files: Files,
    /// `sock` as operations name it: `DGRAM_SOCKET_FILE` or its descriptor.
    file: u32,
    /// `--uring-wait`, `--uring-min-wait`.
    wait: WaitPolicy,
    shared: &'a Shared,
    /// The recvmsg template: only `msg_namelen` and `msg_controllen` matter.
    /// Boxed so its address is stable while the multishot recvmsg is armed.
    template: Box<libc::msghdr>,
    recv_armed: bool,
    /// The last receive ended with ENOBUFS: re-arm once buffers are back.
    starved: bool,
    stopping: bool,
    counts: LocalCounts,
    errors: u64,
    /// Only for unixgram, where unread echoes count against our send buffer.
    budget: Option<&'static SharedPeerBudget>,
    /// The generation of the receive and stop poll; bumped when they are armed
    /// anew after dropped completions (see `start_over`).
    epoch: u32,
    /// Sends queued this turn: their completions only give buffers back (see `plan_wait`).
    quiet_sends: usize,
}

impl<'a> DgramWorker<'a> {
    pub(super) fn new(d: Driver, sock: BorrowedFd<'a>, shared: &'a Shared, files: Files, wait: WaitPolicy) -> Self {
        let mut template = Box::new(zeroed_msghdr());
        template.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let budget = shared.unix_budget;
        let file = match files {
            Files::Fixed => super::files::DGRAM_SOCKET_FILE,
            Files::Fds => sock.as_raw_fd() as u32,
        };
        DgramWorker {
            d,
            sock,
            files,
            file,
            wait,
            shared,
            template,
            recv_armed: false,
            starved: false,
            stopping: false,
            counts: LocalCounts::default(),
            errors: 0,
            budget,
            epoch: 0,
            quiet_sends: 0,
        }
    }

    /// The `user_data` of one of this ring's own operations, in this epoch.
    fn own(&self, op: Op) -> u64 {
        Token::new(op, self.epoch, 0).encode()
    }

    fn arm_shutdown_poll(&mut self) -> io::Result<()> {
        let poll = opcode::PollAdd::new(types::Fd(self.shared.shutdown.fd().as_raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(self.own(Op::Shutdown));
        // SAFETY: a poll carries no buffer; the eventfd lives for the whole process.
        unsafe { self.d.push(poll) }
    }

    /// Completions were dropped (`EBADR`). Datagrams are independent, so
    /// nothing but the dropped ones is lost; what may be stuck is our own
    /// state: the receive may have ended unheard (we would never re-arm it),
    /// and so may the stop poll. Both are armed anew in a new epoch (the old
    /// receive cancelled first); a send whose completion was dropped keeps its
    /// buffer for good, which only shrinks the ring by one.
    fn start_over(&mut self) -> io::Result<()> {
        if self.recv_armed {
            let cancel = opcode::AsyncCancel::new(self.own(Op::DgramRecv))
                .build()
                .user_data(token::CANCEL);
            // SAFETY: a cancel request carries no buffer.
            unsafe { self.d.push(cancel)? };
        }
        self.epoch = (self.epoch + 1) & token::GEN_MASK;
        self.recv_armed = false;
        self.starved = false;
        self.arm_shutdown_poll()
    }

    pub(super) fn run(mut self) -> io::Result<()> {
        self.arm_shutdown_poll()?;
        let result = self.event_loop();
        self.flush_counts();
        if self.d.quiesce() {
            // The socket in slot 0 closes now, not when the kernel gets
            // round to the ring, so its port is free as soon as we exit.
            self.d.release_files();
        } else {
            // The recvmsg may still read the template: leak it, as `Driver`
            // leaks the buffers; the process is exiting.
            std::mem::forget(std::mem::replace(&mut self.template, Box::new(zeroed_msghdr())));
        }
        result
    }

    fn event_loop(&mut self) -> io::Result<()> {
        loop {
            if !self.recv_armed && (!self.starved || self.d.bufs.available() > 0) {
                self.arm_recv()?;
            }
            self.d.bufs.publish();
            self.flush_counts();
            // Out of buffers, the receive waits for the sends to give some back.
            let prompt = self.starved || !self.recv_armed;
            let batch = MIN_WAIT_BATCH.min(self.d.bufs.available()) as usize;
            let wait = plan_wait(self.wait, self.quiet_sends, batch, prompt, None);
            self.quiet_sends = 0;
            self.d.submit_and_wait_planned(wait)?;
            if let Some(mut b) = self.budget.and_then(|b| b.lock()) {
                b.update(self.sock);
            }
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

    fn arm_recv(&mut self) -> io::Result<()> {
        let sqe = opcode::RecvMsgMulti::new(self.files.fd(self.file), &*self.template, self.d.bufs.bgid())
            .build()
            .flags(self.files.flags())
            .user_data(self.own(Op::DgramRecv));
        // SAFETY: the receive writes into the buffer ring, which outlives every
        // operation (see `Driver`), and reads the boxed template, which lives
        // in `self` until the ring has quiesced (or is leaked).
        unsafe { self.d.push(sqe)? };
        self.recv_armed = true;
        self.starved = false;
        Ok(())
    }

    fn dispatch(&mut self, c: Completion) -> io::Result<()> {
        let Some(t) = Token::decode(c.user_data) else {
            return Ok(());
        };
        match t.op {
            // Cancelled only at shutdown (never dispatched then): a stop.
            Op::Shutdown => self.stopping |= c.result >= 0,
            Op::DgramRecv => self.on_recv(t, c)?,
            Op::DgramSend => self.on_send(t.slot as u16, c),
            _ => {
                if let Some(bid) = cqueue::buffer_select(c.flags) {
                    self.d.bufs.taken(bid);
                    self.d.bufs.recycle(bid);
                }
            }
        }
        Ok(())
    }

    fn on_recv(&mut self, t: Token, c: Completion) -> io::Result<()> {
        // A datagram from a receive of an older epoch is echoed all the same;
        // only the current receive's end matters.
        if !cqueue::more(c.flags) && t.gen == self.epoch {
            self.recv_armed = false;
        }
        let bid = cqueue::buffer_select(c.flags);
        if let Some(bid) = bid {
            self.d.bufs.taken(bid);
        }
        let (bid, len) = match (bid, c.result) {
            (Some(bid), n) if n >= 0 => (bid, n as usize),
            (bid, res) => {
                if let Some(bid) = bid {
                    self.d.bufs.recycle(bid);
                }
                match -res {
                    libc::ENOBUFS => self.starved = true,
                    libc::ECANCELED => {}
                    _ => self.errors += 1,
                }
                return Ok(());
            }
        };
        let sockaddr_min = std::mem::size_of::<libc::sa_family_t>();
        let parsed = RecvMsgOut::parse(self.d.bufs.slice(bid, len), &self.template);
        let echo = match parsed {
            // Too big for a buffer: dropped (and counted) rather than echoed in part.
            Ok(out) if out.is_payload_truncated() => None,
            // An unbound unixgram sender has no address to answer to.
            Ok(out) if out.name_data().len() <= sockaddr_min || out.is_name_data_truncated() => None,
            // A peer that does not read its echoes while our send buffer fills up.
            Ok(out)
                if !self.budget.map_or(true, |b| {
                    b.lock()
                        .is_some_and(|mut b| b.allow(out.name_data(), out.payload_data().len()))
                }) =>
            {
                None
            }
            Ok(out) => {
                let (name, payload) = (out.name_data(), out.payload_data());
                // Both in buffer `bid`: see the SAFETY note at the push.
                Some(
                    opcode::Send::new(self.files.fd(self.file), payload.as_ptr(), payload.len() as u32)
                        .dest_addr(name.as_ptr() as *const libc::sockaddr)
                        .dest_addr_len(name.len() as libc::socklen_t),
                )
            }
            Err(()) => None,
        };
        let Some(send) = echo else {
            self.errors += 1;
            self.d.bufs.recycle(bid);
            return Ok(());
        };
        let sqe = send
            .flags(libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
            .build()
            .flags(self.files.flags())
            .user_data(Token::new(Op::DgramSend, 0, bid as u32).encode());
        // SAFETY: the payload and the destination address both lie in ring
        // buffer `bid` (the recvmsg header, then the source's name, then the
        // datagram), which is recycled only in `on_send`, after this send's
        // completion: the kernel can read them for as long as it needs.
        unsafe { self.d.push(sqe)? };
        self.quiet_sends += 1;
        Ok(())
    }

    fn on_send(&mut self, bid: u16, c: Completion) {
        if c.result >= 0 {
            self.counts.echoed(c.result as usize);
        } else {
            // EAGAIN: the receiver's queue is full; ECONNREFUSED/ENOENT: a
            // unixgram sender that vanished. The echo is dropped either way.
            self.errors += 1;
        }
        self.d.bufs.recycle(bid);
    }
}
