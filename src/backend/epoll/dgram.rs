//! The datagram (udp, unixgram) event loop of the epoll backend.
//!
//! Each worker receives up to [`BATCH_SLOTS`] datagrams with one `recvmmsg`
//! into buffers allocated once, and sends the echoes back with `sendmmsg`
//! straight from the same buffers to the addresses they came from.
//!
//! Datagrams that cannot be echoed are dropped and counted as errors:
//! - truncated ones (larger than [`SLOT_BYTES`]; unixgram can carry more),
//!   never echoed cut;
//! - ones from an unnamed (unbound) unixgram socket, which has no address to
//!   answer;
//! - echoes the kernel refuses at once: `EAGAIN` (our send buffer is full,
//!   or, for an unconnected unixgram peer, its receive queue), `ENOBUFS`, or
//!   a peer that has vanished (`ECONNREFUSED`, `ENOENT`);
//! - for unixgram, echoes past a peer's fair share of the server's send
//!   buffer ([`PeerBudget`]): a client that never reads would otherwise fill
//!   it for good and starve every other client. The budget is shared by all
//!   workers (they answer from the one socket) and checked once per batch.
//!
//! Dropping rather than queueing for `EPOLLOUT` is deliberate: an unconnected
//! socket's `EPOLLOUT` says nothing about one peer's full queue, so a backlog
//! could wait on a client that never reads and hold up everyone behind it.
//! Datagram delivery is best-effort anyway; clients resend.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::{Counts, Shared, SHUTDOWN_TOKEN, SOCKET_TOKEN};
use crate::backend::peer_budget::SharedPeerBudget;
use crate::sys::{self, mmsg::MmsgBatch};

/// Datagrams per `recvmmsg`/`sendmmsg`.
pub(super) const BATCH_SLOTS: usize = 32;
/// Buffer per datagram: the largest datagram echoed (64 KiB, enough for any
/// UDP payload and for unixgram up to exactly 64 KiB).
pub(super) const SLOT_BYTES: usize = 64 * 1024;
/// Batches per turn before checking for a stop request.
const BATCHES_PER_TURN: usize = 8;

/// One worker's datagram event loop.
pub(super) struct DgramLoop<'a> {
    shared: &'a Shared,
    epoll: OwnedFd,
    socket: BorrowedFd<'a>,
    events: Vec<libc::epoll_event>,
    batch: MmsgBatch,
    /// The socket may hold datagrams not yet received (not read to `EAGAIN`).
    readable: bool,
    counts: Counts,
    /// unixgram only: the shared per-peer send budget.
    budget: Option<&'static SharedPeerBudget>,
}

impl<'a> DgramLoop<'a> {
    pub(super) fn new(shared: &'a Shared, epoll: OwnedFd, socket: BorrowedFd<'a>) -> Self {
        DgramLoop {
            shared,
            epoll,
            socket,
            // Only the socket and the stop eventfd are registered.
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 2],
            batch: MmsgBatch::new(BATCH_SLOTS, SLOT_BYTES),
            readable: false,
            counts: Counts::default(),
            budget: shared.unix_budget,
        }
    }

    /// Serves until a stop is requested.
    pub(super) fn run(mut self) -> io::Result<()> {
        let result = self.serve();
        self.counts.flush(self.shared.stats);
        result
    }

    fn serve(&mut self) -> io::Result<()> {
        loop {
            if self.shared.shutdown.requested() {
                return Ok(());
            }
            let timeout = if self.readable { 0 } else { -1 };
            let n = sys::epoll_wait(self.epoll.as_fd(), &mut self.events, timeout)?;
            for i in 0..n {
                let token = self.events[i].u64;
                match token {
                    SHUTDOWN_TOKEN => return Ok(()),
                    SOCKET_TOKEN => self.readable = true,
                    _ => {}
                }
            }
            if self.readable {
                self.echo_batches();
            }
            self.counts.flush(self.shared.stats);
        }
    }

    /// Receives and echoes batches until `EAGAIN` or this turn's budget.
    fn echo_batches(&mut self) {
        for _ in 0..BATCHES_PER_TURN {
            let n = match self.batch.recv(self.socket) {
                Ok(n) => n,
                Err(e) if sys::would_block(&e) => {
                    self.readable = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    // Unexpected: count it and wait for the next datagram's edge
                    // (epoll signals every arrival) rather than retry in a spin.
                    self.counts.errors += 1;
                    self.readable = false;
                    return;
                }
            };
            self.batch.clear_sends();
            // Unixgram: one lock and one SIOCOUTQ per batch. A budget held too
            // long by another worker (`None`) refuses the batch's echoes.
            let mut budget = self.budget.map(|b| b.lock());
            if let Some(Some(b)) = budget.as_mut() {
                b.update(self.socket);
            }
            for i in 0..n {
                let got = self.batch.received(i);
                let allowed = match budget.as_mut() {
                    None => true,
                    Some(None) => false,
                    Some(Some(b)) => b.allow(got.addr.as_bytes(), got.data.len()),
                };
                if got.truncated || !got.has_name() || !allowed {
                    self.counts.errors += 1;
                } else {
                    self.batch.queue_reply(i);
                }
            }
            drop(budget);
            self.send_replies();
        }
    }

    /// Sends every queued echo, dropping (and counting) any the kernel refuses.
    fn send_replies(&mut self) {
        let total = self.batch.queued();
        let mut from = 0;
        while from < total {
            match self.batch.send_queued(self.socket, from) {
                Ok(sent) => {
                    for j in from..from + sent {
                        self.counts.echo.echoed(self.batch.queued_len(j));
                    }
                    // sendmmsg sends at least one or fails; guard against 0 anyway.
                    from += sent.max(1);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // The error belongs to datagram `from`: drop it, go on with the rest.
                    self.counts.errors += 1;
                    from += 1;
                }
            }
        }
    }
}
