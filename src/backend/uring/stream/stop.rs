//! How a stream ring stops: every connection's socket is shut down, their
//! receives end by themselves, and only what is left is cancelled.
//!
//! Why not one cancel of everything: with thousands of multishot receives
//! armed, that cancel is quadratic in the kernel (see `Driver::quiesce`) and
//! cannot be interrupted. On Linux 6.18 with one ring of 19,000
//! connections it held the ring's thread for about 3.5 s (informal, on a
//! shared 2-core machine), past the server's stop deadline (`STOP_DEADLINE`,
//! 1.5 s), so the backstop printed the summary and exited while the ring
//! still held every socket; with 10,000 it outlasted `QUIESCE_WAIT`, and the
//! sockets were left for the kernel to close after the exit. loadgen met the
//! same cost and ends its receives the same way (`RingIo::quiesce`).
//!
//! A shutdown (`IORING_OP_SHUTDOWN`) is the cheap way to end a receive: the
//! kernel wakes it as it would for the client's EOF, it completes with 0 and
//! leaves the poll table, and the client sees its FIN at once. The kernel
//! runs each shutdown on an io-wq worker (it has no non-blocking form), so
//! they are waited for before the cancel, which would otherwise find them
//! queued there and cancel them.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use io_uring::{cqueue, squeue};

use super::conn::Conn;
use super::{token, Files, Op, StreamWorker, Token};
use crate::ring::Completion;

/// How long the stop waits for the connections' operations to end once
/// their sockets are shut down; what is left then is cancelled. Well inside
/// the stop deadline, with `QUIESCE_WAIT` after it.
const OPS_END_WAIT: Duration = Duration::from_millis(500);

/// How long one wait of the stop may sleep, so that the deadline is seen.
const STOP_TURN: Duration = Duration::from_millis(20);

impl StreamWorker<'_> {
    /// The stop: end every connection's operations (see the module doc),
    /// wait for them, close every connection.
    pub(super) fn close_all(&mut self) {
        self.flush_counts();
        self.let_conn_ops_end();
        let quiesced = self.d.quiesce();
        for s in self.slots.iter_mut() {
            if let Some(conn) = s.conn.take() {
                let Conn { file, heap, .. } = conn;
                match self.files {
                    // Fixed slots close with the ring's file table, below.
                    Files::Fixed => {}
                    // SAFETY: the connection owned this descriptor (a plain
                    // accept's result), and it is dropped here, so nothing
                    // names it again. An operation still in flight holds its
                    // own reference to the socket.
                    Files::Fds => drop(unsafe { OwnedFd::from_raw_fd(file as i32) }),
                }
                if !quiesced {
                    // A send may still read from it; the process exits right after.
                    std::mem::forget(heap);
                }
                self.shared.open.fetch_sub(1, Ordering::AcqRel);
                self.shared.stats.conn_closed();
            }
        }
        if quiesced {
            // Fixed slots close here, not when the kernel gets round to the
            // ring: clients see their close before the server has exited.
            self.d.release_files();
        }
    }

    /// Shuts down every open connection's socket and waits (at most
    /// `OPS_END_WAIT`) until the shutdowns and every operation the
    /// connections had in flight have ended. (`IORING_OP_SHUTDOWN`, Linux
    /// 5.11, is checked for when the ring is set up.)
    fn let_conn_ops_end(&mut self) {
        // Operations whose final completion is awaited: each connection's
        // own (`ops`), and one shutdown per connection.
        let mut awaited = 0usize;
        for slot in 0..self.slots.len() as u32 {
            let Some(conn) = self.slots[slot as usize].conn.as_ref() else {
                continue;
            };
            let (file, ops) = (conn.file, conn.ops as usize);
            let sqe = self.files.shutdown(file).user_data(self.token(Op::ConnShutdown, slot));
            // SAFETY: a shutdown carries no buffer. `push` submits a full
            // queue as it goes, so the shutdowns go in batches of the ring's size.
            if unsafe { self.d.push(sqe) }.is_err() {
                // The ring is failing: leave the rest to the cancel.
                break;
            }
            awaited += ops + 1;
        }
        let deadline = Instant::now() + OPS_END_WAIT;
        while awaited > 0 && Instant::now() < deadline {
            // Receives that deliver data before their EOF need buffers back.
            self.d.bufs.publish();
            if self.d.submit_and_wait(Some(STOP_TURN)).is_err() {
                return;
            }
            let batch = self.d.take_completions();
            for c in batch.iter().copied() {
                awaited = awaited.saturating_sub(self.on_stop_completion(c));
            }
            self.d.return_completions(batch);
        }
    }

    /// Shuts socket `file` down, then closes it: the shutdown ends the
    /// operations still in flight on it, which hold references of their own
    /// and would otherwise keep it open past the close. Linked (a hard link:
    /// the close runs even if the shutdown fails), because the kernel looks
    /// the socket up only when an io-wq worker runs the shutdown, and a close
    /// beside it could empty the slot, or free the descriptor number, first.
    pub(super) fn shut_down_then_close(&mut self, file: u32, user_data: u64) -> io::Result<()> {
        let shutdown = self
            .files
            .shutdown(file)
            .flags(squeue::Flags::IO_HARDLINK)
            .user_data(user_data);
        let close = self.files.close(file).user_data(token::CANCEL);
        // SAFETY: neither carries a buffer.
        unsafe { self.d.push_together(&[shutdown, close]) }
    }

    /// A completion while the ring stops: its buffer goes back to the ring,
    /// a connection accepted meanwhile is closed unused, and the end of a
    /// connection's operation or shutdown is counted. Returns how many
    /// awaited operations it ended (0 or 1).
    fn on_stop_completion(&mut self, c: Completion) -> usize {
        if let Some(bid) = cqueue::buffer_select(c.flags) {
            self.d.bufs.taken(bid);
            self.d.bufs.recycle(bid);
        }
        let Some(t) = Token::decode(c.user_data) else {
            return 0;
        };
        if t.op == Op::Accept && c.result >= 0 {
            // Never counted as accepted: nothing else would close it.
            let _ = self.close_file(c.result as u32);
            return 0;
        }
        let per_conn = matches!(t.op, Op::Recv | Op::Send | Op::Writable | Op::ConnShutdown);
        if !per_conn || cqueue::more(c.flags) || !self.live(t) {
            return 0;
        }
        if t.op != Op::ConnShutdown {
            let conn = self.conn(t.slot);
            conn.ops = conn.ops.saturating_sub(1);
        }
        1
    }
}
