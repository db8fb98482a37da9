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

use std::os::fd::{AsRawFd, BorrowedFd};

/// Peers one [`PeerBudget`] tells apart at a time. When the table is full, a
/// new peer takes the place of the one charged most, so a newcomer is never
/// locked out by a table full of clients that do not read (the ceiling still
/// bounds what they all hold together).
const TRACKED_PEERS: usize = 1024;

/// Per-peer fairness for a unixgram socket (see the module docs).
///
/// It never allocates, so a forked child may use it; threads share one
/// behind a `Mutex`, and each of `sharers` processes answering from the same
/// socket keeps its own with `1 / sharers` of the share pool, so that all
/// together keep the same headroom. The unread total is the kernel's
/// (`SIOCOUTQ`), so it is right across threads and processes alike.
pub struct PeerBudget {
    /// Above this many unread bytes in our send buffer, each peer gets a fair share.
    pressure: usize,
    /// What the fair shares of this budget add up to.
    share_pool: usize,
    /// Never queue past this (the send buffer minus room to answer a newcomer).
    ceiling: usize,
    /// Below this, every peer has read its echoes: forget who was sent what.
    low_water: usize,
    /// Unread bytes in our send buffer (`SIOCOUTQ`, plus what was sent since).
    unread: usize,
    /// (address hash, bytes charged) per peer since the buffer was last nearly empty.
    peers: [(u64, usize); TRACKED_PEERS],
    tracked: usize,
}

/// What the kernel charges our send buffer for a datagram of `len` bytes, on
/// the safe side: the skb's truesize (a 4 KiB payload lands in an 8 KiB slab
/// object; big ones add page fragments and bookkeeping).
fn charge(len: usize) -> usize {
    2 * len + 1024
}

/// FNV-1a: a peer address's table key, without allocating.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

impl PeerBudget {
    /// Sizes the budget from `sock`'s send buffer, for one of `sharers`
    /// processes answering from it (1 for threads sharing one budget).
    pub fn new(sock: BorrowedFd<'_>, sharers: usize) -> PeerBudget {
        let sndbuf = crate::sys::getsockopt_int(sock, libc::SOL_SOCKET, libc::SO_SNDBUF)
            .unwrap_or(212_992)
            .max(1) as usize;
        PeerBudget {
            pressure: sndbuf / 4,
            share_pool: sndbuf / 2 / sharers.max(1),
            ceiling: sndbuf - sndbuf / 8,
            low_water: sndbuf / 16,
            unread: 0,
            peers: [(0, 0); TRACKED_PEERS],
            tracked: 0,
        }
    }

    /// How much of our send buffer is unread: call before a batch of `allow`s.
    pub fn update(&mut self, sock: BorrowedFd<'_>) {
        let mut unread: libc::c_int = 0;
        // SAFETY: SIOCOUTQ writes one int into `unread`, which outlives the call.
        if crate::syscall!(ioctl(sock.as_raw_fd(), libc::TIOCOUTQ, &mut unread as *mut libc::c_int)).is_err() {
            return;
        }
        self.unread = unread.max(0) as usize;
        if self.unread < self.low_water {
            self.tracked = 0;
        }
    }

    /// Whether to echo `len` bytes to `peer` (the address bytes, as the
    /// kernel gave them), and accounts them if so. Under pressure a peer gets
    /// at most an equal share of the pool among the peers answered since the
    /// buffer was last nearly empty, so a newcomer (a client that reads) still
    /// finds room when many others never read.
    pub fn allow(&mut self, peer: &[u8], len: usize) -> bool {
        let cost = charge(len);
        if self.unread + cost > self.ceiling {
            return false;
        }
        let key = fnv1a(peer);
        let mut slot = self.peers[..self.tracked].iter().position(|&(k, _)| k == key);
        if slot.is_none() && self.tracked == TRACKED_PEERS {
            let hog = (0..TRACKED_PEERS).max_by_key(|&i| self.peers[i].1).unwrap_or(0);
            self.peers[hog] = (key, 0);
            slot = Some(hog);
        }
        if self.unread > self.pressure {
            let peers = self.tracked + usize::from(slot.is_none());
            let sent = slot.map_or(0, |i| self.peers[i].1);
            if sent + cost > self.share_pool / peers.max(1) {
                return false;
            }
        }
        match slot {
            Some(i) => self.peers[i].1 += cost,
            None => {
                // Room is certain: a full table gave up a place above.
                self.peers[self.tracked] = (key, cost);
                self.tracked += 1;
            }
        }
        self.unread += cost;
        true
    }
}
