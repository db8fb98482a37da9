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
//! - echoes the kernel refuses at once: `EAGAIN` (for unixgram, that one
//!   peer's receive queue is full, e.g. a client that never reads; for UDP,
//!   our send buffer), `ENOBUFS`, or a peer that has vanished (`ECONNREFUSED`,
//!   `ENOENT`).
//!
//! Dropping rather than queueing for `EPOLLOUT` is deliberate: an unconnected
//! socket's `EPOLLOUT` says nothing about one peer's full queue, so a backlog
//! could wait on a client that never reads and hold up everyone behind it.
//! Datagram delivery is best-effort anyway; clients resend.
//!
//! # unixgram and the shared send buffer
//!
//! A unixgram echo stays charged to the *server's* send buffer until the
//! client reads it, and the kernel skips the receive-queue limit for a client
//! that is connected to us. One client that floods and never reads would
//! thus fill the server's send buffer for good, and then every echo fails
//! with `EAGAIN`. [`SendBudget`] keeps headroom: once more than a quarter of
//! the send buffer is unread (`SIOCOUTQ`, checked once per batch), each peer
//! may hold only a fair share of half of it, so a client that reads still
//! gets answers beside ones that do not. The budget is shared by all workers,
//! since they answer from the one socket.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;

use super::{Counts, Shared, SHUTDOWN_TOKEN, SOCKET_TOKEN};
use crate::sys::{self, mmsg::MmsgBatch, SockAddr};

/// Datagrams per `recvmmsg`/`sendmmsg`.
pub(super) const BATCH_SLOTS: usize = 32;
/// Buffer per datagram: the largest datagram echoed (64 KiB, enough for any
/// UDP payload and for unixgram up to exactly 64 KiB).
pub(super) const SLOT_BYTES: usize = 64 * 1024;
/// Batches per turn before checking for a stop request.
const BATCHES_PER_TURN: usize = 8;

/// Per-peer fair share of a unixgram socket's send buffer (see the module docs).
pub(super) struct SendBudget {
    /// Above this many unread bytes, each peer gets only a fair share.
    pressure: usize,
    /// What the fair shares add up to.
    share_pool: usize,
    /// Never queue past this, so a newcomer always finds room.
    ceiling: usize,
    /// Below this, everybody has read their echoes: forget who got what.
    low_water: usize,
    /// Unread bytes in the send buffer: `SIOCOUTQ`, plus charges since.
    unread: usize,
    /// Bytes charged per peer (keyed by a hash of its address; a collision
    /// merely makes two peers share one budget) since the buffer was last
    /// nearly empty. Cleared then, so it holds only recent peers.
    charged: HashMap<u64, usize>,
}

impl SendBudget {
    pub(super) fn new(sock: BorrowedFd<'_>) -> SendBudget {
        // The kernel reports (and enforces) the doubled size, in truesize units like SIOCOUTQ.
        let sndbuf = sys::getsockopt_int(sock, libc::SOL_SOCKET, libc::SO_SNDBUF).unwrap_or(212_992).max(4096) as usize;
        SendBudget {
            pressure: sndbuf / 4,
            share_pool: sndbuf / 2,
            ceiling: sndbuf - sndbuf / 8,
            low_water: sndbuf / 16,
            unread: 0,
            charged: HashMap::new(),
        }
    }

    /// Once per batch: how much of the send buffer is still unread.
    fn refresh(&mut self, sock: BorrowedFd<'_>) {
        let mut unread: libc::c_int = 0;
        // SIOCOUTQ (== TIOCOUTQ) writes one int into `unread`, which outlives the call.
        if crate::syscall!(ioctl(sock.as_raw_fd(), libc::TIOCOUTQ, &mut unread as *mut libc::c_int)).is_err() {
            return;
        }
        self.unread = unread.max(0) as usize;
        if self.unread < self.low_water && !self.charged.is_empty() {
            self.charged.clear();
        }
    }

    /// Whether to echo `len` bytes to `peer`; charges it if so.
    fn allow(&mut self, peer: &SockAddr, len: usize) -> bool {
        // What the kernel charges for the skb, on the safe side (a 4 KiB
        // payload lands in an 8 KiB slab object).
        let cost = 2 * len + 1024;
        if self.unread + cost > self.ceiling {
            return false;
        }
        let key = peer_key(peer);
        let so_far = self.charged.get(&key).copied();
        if self.unread > self.pressure {
            let peers = self.charged.len() + usize::from(so_far.is_none());
            if so_far.unwrap_or(0) + cost > self.share_pool / peers.max(1) {
                return false;
            }
        }
        self.charged.insert(key, so_far.unwrap_or(0) + cost);
        self.unread += cost;
        true
    }
}

fn peer_key(addr: &SockAddr) -> u64 {
    // SAFETY: `as_ptr()` points at the address's storage, of which the first
    // `len()` bytes (at most sizeof(sockaddr_storage)) are initialised.
    let bytes = unsafe { std::slice::from_raw_parts(addr.as_ptr() as *const u8, addr.len() as usize) };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// One worker's datagram event loop.
pub(super) struct DgramLoop<'a> {
    shared: &'a Shared<'a>,
    epoll: OwnedFd,
    socket: BorrowedFd<'a>,
    events: Vec<libc::epoll_event>,
    batch: MmsgBatch,
    /// The socket may hold datagrams not yet received (not read to `EAGAIN`).
    readable: bool,
    counts: Counts,
    /// unixgram only: the shared per-peer send budget.
    budget: Option<&'a Mutex<SendBudget>>,
}

impl<'a> DgramLoop<'a> {
    pub(super) fn new(shared: &'a Shared<'a>, epoll: OwnedFd, socket: BorrowedFd<'a>) -> Self {
        DgramLoop {
            shared,
            epoll,
            socket,
            // Only the socket and the stop eventfd are registered.
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 2],
            batch: MmsgBatch::new(BATCH_SLOTS, SLOT_BYTES),
            readable: false,
            counts: Counts::default(),
            budget: shared.unix_budget.as_ref(),
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
            let mut budget = self.budget.map(|b| b.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
            if let Some(b) = budget.as_mut() {
                b.refresh(self.socket);
            }
            for i in 0..n {
                let got = self.batch.received(i);
                let fits = |b: &mut SendBudget| b.allow(got.addr, got.data.len());
                if got.truncated || !got.has_name() || !budget.as_mut().map_or(true, |b| fits(b)) {
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
