//! Fair use of a unixgram server's send buffer.
//!
//! A datagram sent to a unixgram client stays charged to the *server's* send
//! buffer until the client reads it, and the kernel skips the receive-queue
//! limit for a client connected to the server. A client that floods and never
//! reads would thus fill the server's send buffer for good, and then nobody
//! gets an answer: nothing can take those bytes back.
//!
//! [`PeerBudget`] therefore bounds what any set of clients can hold, so that
//! room is always left for one more:
//! - *calm*: while the unread total stays within [`PRESSURE`] of the buffer,
//!   every echo goes out;
//! - *under pressure*: beyond that, each peer may add at most a fixed cap
//!   ([`SHARE_POOL`] / [`TRACKED_PEERS`]) until the buffer is next nearly
//!   empty, and at most [`TRACKED_PEERS`] peers may do so.
//!
//! Clients that never read thus hold at most `PRESSURE + SHARE_POOL` (6/8 of
//! the buffer), and a newcomer whose echo fits the cap is answered as long as
//! fewer than [`TRACKED_PEERS`] peers were charged under pressure. With the
//! 8 MiB buffer the server asks for, the cap is 10 KiB of kernel memory: a
//! 4,000-byte datagram. Larger echoes go out only while calm. A client that
//! reads frees its share, and when the buffer is nearly empty again every
//! charge is forgotten. Refused echoes are dropped (and counted by the
//! caller), as a datagram may be.
//!
//! Every backend's unixgram path asks a [`SharedPeerBudget`], which threads
//! and forked children alike share: one table, one bound, for the socket.

use std::cell::UnsafeCell;
use std::io;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// Peers that may be charged under pressure before the buffer next drains.
const TRACKED_PEERS: usize = 512;
/// Eighths of the send buffer: unread bytes below which every echo goes out.
const PRESSURE: usize = 1;
/// Eighths of the send buffer: what the per-peer caps add up to.
const SHARE_POOL: usize = 5;
/// Eighths of the send buffer: never queue past this (our charge is an
/// estimate; the kernel refuses only once the buffer is full).
const CEILING: usize = 7;

/// The fairness state of one unixgram socket (see the module docs). It never
/// allocates, so it can live in memory shared with forked children.
pub struct PeerBudget {
    /// Unread bytes up to which every echo goes out.
    pressure: usize,
    /// What one peer may add under pressure.
    cap: usize,
    /// Never queue past this many unread bytes.
    ceiling: usize,
    /// Below this, every peer has read its echoes: forget who was sent what.
    low_water: usize,
    /// Unread bytes in our send buffer (`SIOCOUTQ`, plus what was sent since).
    unread: usize,
    /// (address hash, bytes charged under pressure) since the buffer was last nearly empty.
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
    /// A budget for a send buffer of `sndbuf` bytes (as `SO_SNDBUF` reports it).
    fn for_send_buffer(sndbuf: usize) -> PeerBudget {
        let eighth = sndbuf.max(8) / 8;
        PeerBudget {
            pressure: PRESSURE * eighth,
            cap: SHARE_POOL * eighth / TRACKED_PEERS,
            ceiling: CEILING * eighth,
            low_water: eighth / 2,
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
        self.set_unread(unread.max(0) as usize);
    }

    fn set_unread(&mut self, unread: usize) {
        self.unread = unread;
        if self.unread < self.low_water {
            self.tracked = 0;
        }
    }

    /// Whether to echo `len` bytes to `peer` (the address bytes, as the
    /// kernel gave them), and accounts them if so.
    pub fn allow(&mut self, peer: &[u8], len: usize) -> bool {
        let cost = charge(len);
        if self.unread + cost <= self.pressure {
            self.unread += cost;
            return true;
        }
        // Under pressure. The ceiling holds anyway, as the caps add up to
        // less; it guards against a charge estimated short.
        if cost > self.cap || self.unread + cost > self.ceiling {
            return false;
        }
        let key = fnv1a(peer);
        match self.peers[..self.tracked].iter().position(|&(k, _)| k == key) {
            Some(i) if self.peers[i].1 + cost > self.cap => return false,
            Some(i) => self.peers[i].1 += cost,
            // Every place is taken: a new peer would break the bound.
            None if self.tracked == TRACKED_PEERS => return false,
            None => {
                self.peers[self.tracked] = (key, cost);
                self.tracked += 1;
            }
        }
        self.unread += cost;
        true
    }
}

/// A [`PeerBudget`] in memory shared by every worker answering from one
/// socket, threads or forked processes, behind a small lock of its own.
pub struct SharedPeerBudget {
    /// The thread id of the holder, or 0 when free.
    holder: AtomicI32,
    budget: UnsafeCell<PeerBudget>,
}

// SAFETY: `budget` is only reached through a `BudgetGuard`, which exists only
// while `holder` names its thread (taken with Acquire, released with Release).
unsafe impl Sync for SharedPeerBudget {}

/// Tries before giving up on the lock (the first few spin, the rest yield):
/// a holder keeps it for microseconds, so this is reached only if it died.
const LOCK_TRIES: u32 = 2_000;
const SPINS: u32 = 64;

impl SharedPeerBudget {
    /// The budget of `sock`, in anonymous shared memory that lives for the
    /// rest of the process and its children.
    pub fn new(sock: BorrowedFd<'_>) -> io::Result<&'static SharedPeerBudget> {
        let sndbuf = crate::sys::getsockopt_int(sock, libc::SOL_SOCKET, libc::SO_SNDBUF).unwrap_or(212_992);
        crate::sys::leak_shared(SharedPeerBudget {
            holder: AtomicI32::new(0),
            budget: UnsafeCell::new(PeerBudget::for_send_buffer(sndbuf.max(0) as usize)),
        })
    }

    /// The budget, or `None` if another worker holds it far longer than it
    /// should (the caller then drops the echo). A holder that died (a forked
    /// child killed mid-call) is detected and its lock taken over.
    pub fn lock(&self) -> Option<BudgetGuard<'_>> {
        let me = crate::sys::thread_id();
        for attempt in 0..LOCK_TRIES {
            match self.holder.compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Some(BudgetGuard { owner: self }),
                Err(0) => {}
                Err(holder) if attempt == LOCK_TRIES / 2 && !crate::sys::thread_alive(holder) => {
                    let _ = self.holder.compare_exchange(holder, 0, Ordering::Relaxed, Ordering::Relaxed);
                }
                Err(_) if attempt < SPINS => std::hint::spin_loop(),
                Err(_) => std::thread::yield_now(),
            }
        }
        None
    }
}

/// Access to a [`SharedPeerBudget`]'s state; the lock is released on drop.
pub struct BudgetGuard<'a> {
    owner: &'a SharedPeerBudget,
}

impl Deref for BudgetGuard<'_> {
    type Target = PeerBudget;
    fn deref(&self) -> &PeerBudget {
        // SAFETY: this guard holds the lock (see `SharedPeerBudget`'s Sync).
        unsafe { &*self.owner.budget.get() }
    }
}

impl DerefMut for BudgetGuard<'_> {
    fn deref_mut(&mut self) -> &mut PeerBudget {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference.
        unsafe { &mut *self.owner.budget.get() }
    }
}

impl Drop for BudgetGuard<'_> {
    fn drop(&mut self) {
        self.owner.holder.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNDBUF: usize = 8 << 20;

    /// `n` distinct peer addresses.
    fn peer(i: usize) -> [u8; 8] {
        (i as u64).to_le_bytes()
    }

    /// Non-readers flood with every size the server echoes until nothing more
    /// is accepted; what they hold stays within 6/8 of the buffer, and a
    /// newcomer's 4,000-byte echo still goes out.
    #[test]
    fn non_readers_leave_room_for_a_newcomer() {
        let mut b = PeerBudget::for_send_buffer(SNDBUF);
        for round in 0..50 {
            for p in 0..TRACKED_PEERS - 1 {
                let len = [0, 65_507, 4000, 100, 30_000][(round + p) % 5];
                b.allow(&peer(p), len);
            }
        }
        assert!(b.unread <= 6 * SNDBUF / 8, "non-readers hold {} of {SNDBUF}", b.unread);
        assert!(b.allow(&peer(100_000), 4000), "the newcomer was refused");
        // The table is now full: one more new peer would break the bound.
        assert!(!b.allow(&peer(100_001), 100));
    }

    #[test]
    fn calm_answers_everything_and_draining_forgets_charges() {
        let mut b = PeerBudget::for_send_buffer(SNDBUF);
        assert!(b.allow(&peer(1), 65_507));
        b.set_unread(6 * SNDBUF / 8);
        assert!(!b.allow(&peer(1), 65_507), "a 64 KiB echo exceeds the cap under pressure");
        assert!(b.allow(&peer(1), 4000));
        assert!(!b.allow(&peer(1), 4000), "a second one exceeds peer 1's cap");
        b.set_unread(0);
        assert!(b.allow(&peer(1), 65_507), "a drained buffer is calm again");
        b.set_unread(SNDBUF / 8 + 1);
        assert!(b.allow(&peer(1), 4000), "charges were forgotten when the buffer drained");
    }

    #[test]
    fn lock_is_exclusive_and_released() {
        let shared = SharedPeerBudget {
            holder: AtomicI32::new(0),
            budget: UnsafeCell::new(PeerBudget::for_send_buffer(SNDBUF)),
        };
        let guard = shared.lock().expect("a free lock");
        assert_eq!(shared.holder.load(Ordering::Relaxed), crate::sys::thread_id());
        std::thread::scope(|s| {
            s.spawn(|| assert!(shared.lock().is_none(), "taken while held"));
        });
        drop(guard);
        assert!(shared.lock().is_some());
    }
}
