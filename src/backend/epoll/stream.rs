//! The stream (tcp, unix) event loop of the epoll backend.
//!
//! Edge-triggered epoll reports a change once, so the loop remembers what it
//! has not finished:
//! - a connection that is still readable but was not read to `EAGAIN` (a
//!   short read counts as `EAGAIN`, see [`Conn::drive`]),
//!   because its pending output reached [`MAX_PENDING_BYTES`] (reading
//!   resumes once `EPOLLOUT` drains it) or because it used up its read budget
//!   for this turn (it goes on the retry list and the next `epoll_wait` does
//!   not block);
//! - a listener that still has connections queued but was not accepted to
//!   `EAGAIN`, because `--max-conns` is reached (re-checked every
//!   [`AT_CAP_RECHECK_MS`], and at once when this worker closes a connection)
//!   or because descriptors ran out (`EMFILE`/`ENFILE`: accepting pauses for
//!   [`OUT_OF_FDS_BACKOFF`] while existing connections are served; never a spin).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use super::{Counts, Shared, EVENTS_PER_WAIT, SHUTDOWN_TOKEN, SOCKET_TOKEN};
use crate::backend::MAX_PENDING_BYTES;
use crate::serve::ConnEnd;
use crate::sys;

/// Size of the worker's read buffer: the most one `read` takes.
pub(super) const READ_BUF_BYTES: usize = 64 * 1024;
/// Reads per connection per turn before others get a go (1 MiB at 64 KiB).
const READS_PER_TURN: usize = 16;
/// Accepts per turn before connections get a go.
const ACCEPTS_PER_TURN: usize = 64;
/// How long accepting pauses after `EMFILE`/`ENFILE`.
const OUT_OF_FDS_BACKOFF: Duration = Duration::from_millis(100);
/// While at `--max-conns` with connections queued, how often to look whether
/// another worker closed one (this worker's own closes retry at once).
const AT_CAP_RECHECK_MS: i32 = 20;
/// A drained output buffer larger than this is freed rather than kept, so
/// idle connections do not each hold a backlog-sized buffer.
const KEEP_OUT_CAPACITY: usize = 64 * 1024;

/// One connection's state.
struct Conn {
    fd: OwnedFd,
    /// Echo output not yet accepted by the kernel: `out[out_sent..]`.
    out: Vec<u8>,
    out_sent: usize,
    /// Readable (or hung up) and not yet read to `EAGAIN`.
    readable: bool,
    /// The peer shut down its write side: send what is pending, then close.
    peer_eof: bool,
    /// epoll reported `EPOLLRDHUP` or `EPOLLHUP`: read to EOF, never stop at a short read.
    hung_up: bool,
    /// On the retry list for the next turn.
    queued: bool,
}

/// What a connection needs after being driven.
enum Next {
    /// Nothing until the next epoll event.
    Wait,
    /// Still readable, read budget used up: drive again next turn.
    Retry,
    /// Done: close it; `failed` says how it failed, if it did.
    Close { failed: Option<ConnEnd> },
}

impl Conn {
    fn pending(&self) -> usize {
        self.out.len() - self.out_sent
    }

    /// Flushes pending output, then reads and echoes while the backlog is under
    /// the cap, until `EAGAIN`, EOF or the read budget.
    ///
    /// A short read (less than asked) ends the reading too, unless the peer
    /// hung up or `to_eagain` is set: the socket was empty at that moment and
    /// edge-triggered epoll reports the next arrival, as epoll(7) documents
    /// for stream sockets. With one message in flight this saves a `read`
    /// that would only return `EAGAIN` on every echo. A connection driven
    /// from the retry list (`to_eagain`) was not woken by a fresh edge, so it
    /// reads until `EAGAIN`.
    fn drive(&mut self, buf: &mut [u8], counts: &mut Counts, to_eagain: bool) -> Next {
        if self.pending() > 0 {
            match self.flush(counts) {
                Ok(()) => {}
                Err(e) if sys::would_block(&e) => {} // EPOLLOUT resumes it
                Err(e) => {
                    return Next::Close {
                        failed: Some(ConnEnd::of(&e)),
                    }
                }
            }
        }
        let mut reads = 0;
        while self.readable && !self.peer_eof {
            let room = MAX_PENDING_BYTES - self.pending();
            if room == 0 {
                // Stop reading until EPOLLOUT drains the backlog; `readable` stays set.
                return Next::Wait;
            }
            if reads == READS_PER_TURN {
                return Next::Retry;
            }
            reads += 1;
            let want = room.min(buf.len());
            match sys::read(self.fd.as_fd(), &mut buf[..want]) {
                Ok(0) => {
                    self.peer_eof = true;
                    self.readable = false;
                }
                Ok(n) => {
                    counts.echo.messages += 1;
                    crate::serve::config::calibration_spin();
                    if let Err(e) = self.echo(&buf[..n], counts) {
                        return Next::Close {
                            failed: Some(ConnEnd::of(&e)),
                        };
                    }
                    if n < want && !self.hung_up && !to_eagain {
                        self.readable = false;
                    }
                }
                Err(e) if sys::would_block(&e) => self.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Next::Close {
                        failed: Some(ConnEnd::of(&e)),
                    }
                }
            }
        }
        if self.peer_eof && self.pending() == 0 {
            // Everything the client sent has been handed to the kernel; closing
            // sends it, then EOF (the receive queue is empty, so no reset).
            return Next::Close { failed: None };
        }
        Next::Wait
    }

    /// Sends `data` now if nothing is queued before it, and queues whatever
    /// the kernel does not take.
    fn echo(&mut self, data: &[u8], counts: &mut Counts) -> io::Result<()> {
        let mut sent = 0;
        if self.pending() == 0 {
            match sys::send(self.fd.as_fd(), data) {
                Ok(n) => sent = n,
                Err(e) if sys::would_block(&e) => {}
                Err(e) => return Err(e),
            }
            counts.echo.bytes += sent as u64;
        }
        if sent < data.len() {
            if self.out_sent > 0 {
                self.out.drain(..self.out_sent);
                self.out_sent = 0;
            }
            self.out.extend_from_slice(&data[sent..]);
        }
        Ok(())
    }

    /// Sends pending output until it is gone or the kernel says `EAGAIN`
    /// (returned as the error; `EPOLLOUT` resumes it).
    fn flush(&mut self, counts: &mut Counts) -> io::Result<()> {
        while self.pending() > 0 {
            match sys::send(self.fd.as_fd(), &self.out[self.out_sent..]) {
                Ok(n) => {
                    self.out_sent += n;
                    counts.echo.bytes += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.out.capacity() > KEEP_OUT_CAPACITY {
            self.out = Vec::new();
        } else {
            self.out.clear();
        }
        self.out_sent = 0;
        Ok(())
    }
}

/// Connections keyed by token: a `Vec` of slots and a free list.
#[derive(Default)]
struct Slab {
    slots: Vec<Option<Conn>>,
    free: Vec<usize>,
}

impl Slab {
    fn insert(&mut self, conn: Conn) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(conn);
                i
            }
            None => {
                self.slots.push(Some(conn));
                self.slots.len() - 1
            }
        }
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut Conn> {
        self.slots.get_mut(i).and_then(Option::as_mut)
    }

    fn remove(&mut self, i: usize) -> Option<Conn> {
        let conn = self.slots.get_mut(i)?.take()?;
        self.free.push(i);
        Some(conn)
    }
}

/// One worker's stream event loop.
pub(super) struct StreamLoop<'a> {
    shared: &'a Shared,
    epoll: OwnedFd,
    listener: BorrowedFd<'a>,
    conns: Slab,
    events: Vec<libc::epoll_event>,
    read_buf: Vec<u8>,
    /// Connections to drive again next turn, and a spare list to swap with.
    retry: Vec<usize>,
    retry_spare: Vec<usize>,
    /// The listener may have queued connections not yet accepted.
    listener_ready: bool,
    /// No accepting before this instant (after `EMFILE`/`ENFILE`).
    accept_paused_until: Option<Instant>,
    /// Accepting keeps failing for want of descriptors: count it once, not per retry.
    out_of_fds: bool,
    counts: Counts,
}

impl<'a> StreamLoop<'a> {
    pub(super) fn new(shared: &'a Shared, epoll: OwnedFd, listener: BorrowedFd<'a>) -> Self {
        StreamLoop {
            shared,
            epoll,
            listener,
            conns: Slab::default(),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS_PER_WAIT],
            read_buf: vec![0; READ_BUF_BYTES],
            retry: Vec::new(),
            retry_spare: Vec::new(),
            listener_ready: false,
            accept_paused_until: None,
            out_of_fds: false,
            counts: Counts::default(),
        }
    }

    /// Serves until a stop is requested, then closes every connection.
    pub(super) fn run(mut self) -> io::Result<()> {
        let result = self.serve();
        self.counts.flush(self.shared.stats);
        for slot in std::mem::take(&mut self.conns.slots) {
            if slot.is_some() {
                self.shared.stats.conn_closed();
                self.shared.conns.release();
            }
        }
        result
    }

    fn serve(&mut self) -> io::Result<()> {
        loop {
            if self.shared.shutdown.requested() {
                return Ok(());
            }
            let timeout = self.wait_timeout();
            let n = sys::epoll_wait(self.epoll.as_fd(), &mut self.events, timeout)?;
            for i in 0..n {
                // Copy out of the (possibly packed) event before using it.
                let ev = self.events[i];
                let (token, flags) = (ev.u64, ev.events);
                match token {
                    SHUTDOWN_TOKEN => return Ok(()),
                    SOCKET_TOKEN => self.listener_ready = true,
                    _ => {
                        let idx = token as usize;
                        if let Some(conn) = self.conns.get_mut(idx) {
                            let in_flags = libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR;
                            if flags & in_flags as u32 != 0 {
                                conn.readable = true;
                            }
                            if flags & (libc::EPOLLRDHUP | libc::EPOLLHUP) as u32 != 0 {
                                conn.hung_up = true;
                            }
                            self.drive(idx, false);
                        }
                    }
                }
            }
            if !self.retry.is_empty() {
                let mut list = std::mem::replace(&mut self.retry, std::mem::take(&mut self.retry_spare));
                for &idx in &list {
                    if let Some(conn) = self.conns.get_mut(idx) {
                        conn.queued = false;
                        self.drive(idx, true);
                    }
                }
                list.clear();
                self.retry_spare = list;
            }
            self.accept_ready();
            self.counts.flush(self.shared.stats);
        }
    }

    /// 0 when there is work left over, a short timeout while the listener waits
    /// for room or descriptors, else block until an event.
    fn wait_timeout(&mut self) -> i32 {
        if !self.retry.is_empty() {
            return 0;
        }
        if !self.listener_ready {
            return -1;
        }
        if let Some(until) = self.accept_paused_until {
            let left = until.saturating_duration_since(Instant::now());
            if !left.is_zero() {
                return left.as_millis() as i32 + 1;
            }
            self.accept_paused_until = None;
        }
        if self.shared.conns.has_room() {
            0
        } else {
            AT_CAP_RECHECK_MS
        }
    }

    fn drive(&mut self, idx: usize, to_eagain: bool) {
        let Some(conn) = self.conns.get_mut(idx) else { return };
        match conn.drive(&mut self.read_buf, &mut self.counts, to_eagain) {
            Next::Wait => {}
            Next::Retry => {
                if !conn.queued {
                    conn.queued = true;
                    self.retry.push(idx);
                }
            }
            Next::Close { failed } => {
                // Dropping the fd closes it, which also removes it from epoll.
                drop(self.conns.remove(idx));
                self.shared.stats.conn_closed();
                self.shared.conns.release();
                match failed {
                    Some(ConnEnd::ClosedWithPending) => self.counts.closed_with_pending += 1,
                    Some(ConnEnd::Fault) => self.counts.errors += 1,
                    None => {}
                }
            }
        }
    }

    /// Accepts while the listener has connections, there is room under
    /// `--max-conns`, descriptors last, and this turn's budget allows.
    fn accept_ready(&mut self) {
        if !self.listener_ready {
            return;
        }
        if let Some(until) = self.accept_paused_until {
            if Instant::now() < until {
                return;
            }
            self.accept_paused_until = None;
        }
        for _ in 0..ACCEPTS_PER_TURN {
            if !self.shared.conns.try_acquire() {
                return; // at the cap: `listener_ready` stays set
            }
            match sys::accept(self.listener, true) {
                Ok(fd) => {
                    self.out_of_fds = false;
                    if let Err(e) = self.add_conn(fd) {
                        self.shared.conns.release();
                        self.counts.errors += 1;
                        if sys::out_of_fds(&e) {
                            self.accept_paused_until = Some(Instant::now() + OUT_OF_FDS_BACKOFF);
                            return;
                        }
                    }
                }
                Err(e) => {
                    self.shared.conns.release();
                    match e.raw_os_error() {
                        Some(libc::EAGAIN) => {
                            self.listener_ready = false;
                            return;
                        }
                        // The client gave up before we accepted it: take the next one.
                        Some(libc::ECONNABORTED | libc::EPROTO | libc::EINTR) => {}
                        _ => {
                            // Out of descriptors (or something unexpected): pause
                            // accepting instead of spinning; the backlog waits.
                            if !(self.out_of_fds && sys::out_of_fds(&e)) {
                                self.counts.errors += 1;
                            }
                            self.out_of_fds = sys::out_of_fds(&e);
                            self.accept_paused_until = Some(Instant::now() + OUT_OF_FDS_BACKOFF);
                            return;
                        }
                    }
                }
            }
        }
    }

    fn add_conn(&mut self, fd: OwnedFd) -> io::Result<()> {
        let raw = fd.as_raw_fd();
        let idx = self.conns.insert(Conn {
            fd,
            out: Vec::new(),
            out_sent: 0,
            readable: false,
            peer_eof: false,
            hung_up: false,
            queued: false,
        });
        // Registered once for both directions: with edge-triggering, EPOLLOUT
        // only fires when a full send buffer gains room, so no epoll_ctl is
        // needed when a backlog starts or ends. Data already queued is reported
        // by the first epoll_wait.
        let events = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
        if let Err(e) = sys::epoll_ctl(self.epoll.as_fd(), libc::EPOLL_CTL_ADD, raw, events, idx as u64) {
            drop(self.conns.remove(idx));
            return Err(e);
        }
        self.shared.stats.conn_opened();
        Ok(())
    }
}
