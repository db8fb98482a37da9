//! Fair use of a unixgram server's send buffer.
//!
//! A datagram sent to a unixgram client stays charged to the *server's* send
//! buffer until the client reads it, and the kernel skips the receive-queue
//! limit for a client connected to the server. A client that floods and never
//! reads would thus fill the server's send buffer for good, and then nobody
//! gets an answer. [`PeerBudget`] keeps headroom: when more than a quarter of
//! the send buffer is unread, each peer gets only a fair share of it, so a
//! client that reads still gets answers beside many that do not. Echoes past a
//! peer's share are dropped (and counted by the caller), as a datagram may be.
//!
//! Every backend's unixgram path asks [`PeerBudget::allow`] before it answers.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Per-peer fairness for a unixgram socket (see the module docs). Share one
/// per socket among every thread that answers from it (behind a `Mutex`).
pub struct PeerBudget {
    /// Above this many unread bytes in our send buffer, each peer gets a fair share.
    pressure: usize,
    /// What the fair shares add up to.
    share_pool: usize,
    /// Never queue past this (the send buffer minus room to answer a newcomer).
    ceiling: usize,
    /// Below this, every peer has read its echoes: forget who was sent what.
    low_water: usize,
    /// Unread bytes in our send buffer (`SIOCOUTQ`, plus what was sent since).
    unread: usize,
    /// Bytes echoed to each peer (by address) since the send buffer was last nearly empty.
    sent: HashMap<Vec<u8>, usize>,
}

/// What the kernel charges our send buffer for a datagram of `len` bytes, on
/// the safe side: the skb's truesize (a 4 KiB payload lands in an 8 KiB slab
/// object; big ones add page fragments and bookkeeping).
fn charge(len: usize) -> usize {
    2 * len + 1024
}

impl PeerBudget {
    pub fn new(sock: BorrowedFd<'_>) -> PeerBudget {
        let sndbuf = crate::sys::getsockopt_int(sock, libc::SOL_SOCKET, libc::SO_SNDBUF).unwrap_or(212_992).max(1) as usize;
        PeerBudget {
            pressure: sndbuf / 4,
            share_pool: sndbuf / 2,
            ceiling: sndbuf - sndbuf / 8,
            low_water: sndbuf / 16,
            unread: 0,
            sent: HashMap::new(),
        }
    }

    /// Once per loop turn: how much of our send buffer is unread.
    pub fn update(&mut self, sock: BorrowedFd<'_>) {
        let mut unread: libc::c_int = 0;
        // SIOCOUTQ writes one int into `unread`, which outlives the call.
        if crate::syscall!(ioctl(sock.as_raw_fd(), libc::TIOCOUTQ, &mut unread as *mut libc::c_int)).is_err() {
            return;
        }
        self.unread = unread.max(0) as usize;
        if self.unread < self.low_water && !self.sent.is_empty() {
            self.sent.clear();
        }
    }

    /// Whether to echo `len` bytes to `peer` (and account them if so). Under
    /// pressure a peer gets at most an equal share of `share_pool` among the
    /// peers sent to since the buffer was last nearly empty; so a newcomer (a
    /// client that reads) still finds room when many others never read.
    pub fn allow(&mut self, peer: &[u8], len: usize) -> bool {
        let cost = charge(len);
        if self.unread + cost > self.ceiling {
            return false;
        }
        let sent = self.sent.get(peer).copied();
        if self.unread > self.pressure {
            let peers = self.sent.len() + usize::from(sent.is_none());
            if sent.unwrap_or(0) + cost > self.share_pool / peers.max(1) {
                return false;
            }
        }
        // Bounded: cleared whenever clients catch up, and at most one entry per
        // peer echoed to since.
        self.sent.insert(peer.to_vec(), sent.unwrap_or(0) + cost);
        self.unread += cost;
        true
    }
}
