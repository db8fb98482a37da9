//! Server-wide counters, in shared memory so that forked children count too.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::config::BackendKind;
use crate::net::Transport;

/// Counters for the summary line. Lives in a `MAP_SHARED` mapping, so a
/// forked child's increments are seen by the parent.
#[repr(C)]
#[derive(Default)]
pub struct Stats {
    /// Connections accepted (stream transports).
    pub accepted: AtomicU64,
    /// Echo operations: one per datagram, or one per read-then-write on a stream.
    pub messages: AtomicU64,
    /// Bytes echoed back.
    pub bytes: AtomicU64,
    /// Faults only: failed accepts and socket calls, datagrams dropped
    /// (truncated, unanswerable, past a peer's budget, refused by the kernel),
    /// and connections that failed for any reason other than the client
    /// closing (see `closed_with_pending`).
    pub errors: AtomicU64,
    /// Connections open right now.
    pub conns_open: AtomicU64,
    /// Stream connections the client closed (or reset) while an echo was
    /// still in flight: the server saw `ECONNRESET` or `EPIPE`. A client that
    /// hangs up without reading its last echo does this; it is not a fault.
    pub closed_with_pending: AtomicU64,
    /// uring: rare ring errors survived instead of ending the server (a
    /// submission the kernel had no memory for, retried after a back-off; or
    /// completions the kernel dropped, after which the ring starts over).
    pub ring_errors: AtomicU64,
    /// threadpool streams: the most connections open at once beyond the
    /// pool's workers, which wait unanswered for a free worker.
    pub queued_max: AtomicU64,
}

impl Stats {
    /// Allocates the counters in anonymous shared memory that lives for the
    /// rest of the process (and its children).
    pub fn new_shared() -> io::Result<&'static Stats> {
        crate::sys::leak_shared(Stats::default())
    }

    /// Records `messages` echo operations that sent back `bytes` bytes.
    #[inline]
    pub fn echoed(&self, messages: u64, bytes: u64) {
        // Bytes can arrive without a new message (a backlog sent on a later
        // turn), so each counter is added on its own.
        if messages > 0 {
            self.messages.fetch_add(messages, Relaxed);
        }
        if bytes > 0 {
            self.bytes.fetch_add(bytes, Relaxed);
        }
    }

    #[inline]
    pub fn error(&self) {
        self.errors.fetch_add(1, Relaxed);
    }

    /// A stream connection ended with `e`: counted as `closed_with_pending`
    /// if the client went away mid-echo ([`ConnEnd::of`]), else as an error.
    #[inline]
    pub fn conn_failed(&self, e: &io::Error) {
        match ConnEnd::of(e) {
            ConnEnd::ClosedWithPending => self.closed_with_pending.fetch_add(1, Relaxed),
            ConnEnd::Fault => self.errors.fetch_add(1, Relaxed),
        };
    }

    /// A connection was accepted and is now open.
    #[inline]
    pub fn conn_opened(&self) {
        self.accepted.fetch_add(1, Relaxed);
        self.conns_open.fetch_add(1, Relaxed);
    }

    #[inline]
    pub fn conn_closed(&self) {
        self.conns_open.fetch_sub(1, Relaxed);
    }

    pub fn open(&self) -> u64 {
        self.conns_open.load(Relaxed)
    }

    /// The one-line summary printed at exit. Counters that cannot move for
    /// this backend and transport are left out: `ring_errors` but for uring,
    /// `queued_max` but for threadpool's streams.
    pub fn summary_line(&self, backend: BackendKind, transport: Transport) -> String {
        let mut line = format!(
            "summary backend={backend} accepted={} messages={} bytes={} errors={} closed_with_pending={}",
            self.accepted.load(Relaxed),
            self.messages.load(Relaxed),
            self.bytes.load(Relaxed),
            self.errors.load(Relaxed),
            self.closed_with_pending.load(Relaxed),
        );
        if backend == BackendKind::Uring {
            line += &format!(" ring_errors={}", self.ring_errors.load(Relaxed));
        }
        if backend == BackendKind::Threadpool && transport.is_stream() {
            line += &format!(" queued_max={}", self.queued_max.load(Relaxed));
        }
        line
    }

    /// `n` connections wait for a free worker now (threadpool).
    #[inline]
    pub fn queued(&self, n: u64) {
        self.queued_max.fetch_max(n, Relaxed);
    }
}

/// Which counter a stream connection that ended in an error goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnEnd {
    /// `ECONNRESET` or `EPIPE`: the client closed while an echo was in
    /// flight (a close with unread data sends a reset). Not a server fault.
    ClosedWithPending,
    /// Anything else.
    Fault,
}

impl ConnEnd {
    pub fn of(e: &io::Error) -> ConnEnd {
        Self::of_errno(e.raw_os_error().unwrap_or(0))
    }

    /// For a positive errno (an io_uring completion's `-res`).
    pub fn of_errno(errno: i32) -> ConnEnd {
        match errno {
            libc::ECONNRESET | libc::EPIPE => ConnEnd::ClosedWithPending,
            _ => ConnEnd::Fault,
        }
    }
}

/// Per-thread counters, added to [`Stats`] in batches so that the hot path
/// does not touch a shared cache line per message.
#[derive(Default, Debug)]
pub struct LocalCounts {
    pub messages: u64,
    pub bytes: u64,
}

impl LocalCounts {
    #[inline]
    pub fn echoed(&mut self, bytes: usize) {
        self.messages += 1;
        self.bytes += bytes as u64;
    }

    /// Adds the batch to `stats` and starts a new one.
    #[inline]
    pub fn flush(&mut self, stats: &Stats) {
        stats.echoed(self.messages, self.bytes);
        *self = LocalCounts::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each backend's summary names only the counters it can move.
    #[test]
    fn summary_omits_counters_that_do_not_apply() {
        let stats = Stats::default();
        let line = |b, t| stats.summary_line(b, t);
        assert!(line(BackendKind::Uring, Transport::Tcp).contains(" ring_errors=0"));
        for b in [BackendKind::Epoll, BackendKind::Fork, BackendKind::Threadpool] {
            assert!(!line(b, Transport::Tcp).contains("ring_errors"), "{b}");
        }
        assert!(line(BackendKind::Threadpool, Transport::Unix).contains(" queued_max=0"));
        assert!(!line(BackendKind::Threadpool, Transport::Udp).contains("queued_max"));
        assert!(!line(BackendKind::Epoll, Transport::Tcp).contains("queued_max"));
    }
}
