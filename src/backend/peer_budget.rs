//! Fair use of a unixgram server's send buffer.
//!
//! A datagram sent to a unixgram client stays charged to the *server's* send
//! buffer until the client reads it, and the kernel skips the receive-queue
//! limit for a client connected to the server. A client that floods and never
//! reads would thus fill the server's send buffer for good, and then nobody
//! gets an answer: nothing can take those bytes back.
//!
//! [`PeerBudget`] splits the buffer (in eighths, [`PRESSURE`] and friends):
//! - *calm*: while unread bytes stay within the first eighth, every echo goes out;
//! - *under pressure*, a peer already answered since the buffer was last
//!   calm gets a fair share of the *pool* (5/8): the pool divided by
//!   the peers answered, but never more than a quarter of it
//!   ([`MIN_SHARERS`]), and all of them together at most the pool;
//! - the last eighth below the ceiling is kept for *newcomers*, peers not
//!   seen since the buffer was last calm: each gets one echo of up to
//!   [`NEWCOMER_COST`] from it, so a client arriving while others hog the
//!   buffer is still answered.
//!
//! So clients that never read hold at most 6/8 of the buffer plus what
//! newcomers took, and a client that reads gets a share however many others
//! do not. Charges are forgotten only when the buffer is calm again: a
//! client beside a persistent non-reader gets a quarter of the pool (with
//! the 8 MiB buffer the server forces as root, 1.3 MiB of kernel memory, some
//! 600 echoes of 512 bytes) and then waits for the buffer to drain. Telling
//! which client read what would need the kernel to say whose bytes left the
//! buffer; it only gives the total (`SIOCOUTQ`). Refused echoes are dropped
//! (and counted by the caller), as a datagram may be.
//!
//! Every backend's unixgram path asks a [`SharedPeerBudget`], which threads
//! and forked children alike share: one table, one bound, for the socket.

use std::cell::UnsafeCell;
use std::io;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// Slots of the peer table (a power of two); at most [`TRACKED_PEERS`] are used.
const TABLE_SLOTS: usize = 1024;
/// Peers told apart since the buffer was last calm. Past this, new
/// peers are answered only while calm.
const TRACKED_PEERS: usize = TABLE_SLOTS * 3 / 4;
/// Eighths of the send buffer: unread bytes up to which every echo goes out.
const PRESSURE: usize = 1;
/// Eighths of the send buffer: what known peers may add under pressure, together.
const POOL: usize = 5;
/// Eighths of the send buffer: never queue past this. What is left between
/// `PRESSURE + POOL` and this is the newcomers' reserve.
const CEILING: usize = 7;
/// A known peer's share is at most the pool divided by this many.
const MIN_SHARERS: usize = 4;
/// The largest charge a newcomer's first echo may take from the reserve.
const NEWCOMER_COST: usize = 16 * 1024;

/// The fairness state of one unixgram socket (see the module docs). It never
/// allocates, so it can live in memory shared with forked children.
pub struct PeerBudget {
    pressure: usize,
    pool: usize,
    ceiling: usize,
    /// Unread bytes in our send buffer (`SIOCOUTQ`, plus what was sent since).
    unread: usize,
    /// What known peers were charged under pressure since the buffer was last calm.
    pool_used: usize,
    /// Open addressing by address hash: (generation, hash, bytes charged
    /// under pressure), for every peer seen since the buffer was last calm.
    /// An entry of an older generation is empty, so forgetting is O(1).
    peers: [(u32, u64, usize); TABLE_SLOTS],
    generation: u32,
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
            pool: POOL * eighth,
            ceiling: CEILING * eighth,
            unread: 0,
            pool_used: 0,
            peers: [(0, 0, 0); TABLE_SLOTS],
            generation: 1,
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
        // Calm again: what is unread is within the calm eighth whoever holds
        // it, so the charges made under pressure can be forgotten.
        if self.unread < self.pressure && self.tracked > 0 {
            self.forget_all();
        }
    }

    fn forget_all(&mut self) {
        self.generation = self.generation.wrapping_add(1).max(1);
        self.tracked = 0;
        self.pool_used = 0;
    }

    /// The table slot of `key`: its entry, or the empty slot it would take.
    fn slot(&self, key: u64) -> usize {
        let mut i = key as usize % TABLE_SLOTS;
        // At most 3/4 full, so an empty slot ends every probe.
        while self.peers[i].0 == self.generation && self.peers[i].1 != key {
            i = (i + 1) % TABLE_SLOTS;
        }
        i
    }

    /// Whether to echo `len` bytes to `peer` (the address bytes, as the
    /// kernel gave them), and accounts them if so.
    pub fn allow(&mut self, peer: &[u8], len: usize) -> bool {
        let cost = charge(len);
        if self.unread + cost > self.ceiling {
            return false;
        }
        let calm = self.unread + cost <= self.pressure;
        let key = fnv1a(peer);
        let i = self.slot(key);
        let known = self.peers[i].0 == self.generation;
        if !known && self.tracked == TRACKED_PEERS {
            // Untracked: answered only while calm, so nothing escapes the bounds.
            self.unread += if calm { cost } else { 0 };
            return calm;
        }
        if !known {
            self.peers[i] = (self.generation, key, 0);
            self.tracked += 1;
        }
        let allowed = if calm {
            true
        } else if !known {
            // A newcomer's one echo from the reserve (the ceiling bounds it).
            cost <= NEWCOMER_COST
        } else {
            let share = self.pool / self.tracked.max(MIN_SHARERS);
            let ok = self.peers[i].2 + cost <= share && self.pool_used + cost <= self.pool;
            if ok {
                self.pool_used += cost;
            }
            ok
        };
        if allowed {
            if !calm {
                self.peers[i].2 += cost;
            }
            self.unread += cost;
        }
        allowed
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
            match self
                .holder
                .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return Some(BudgetGuard { owner: self }),
                Err(0) => {}
                Err(holder) if attempt == LOCK_TRIES / 2 && !crate::sys::thread_alive(holder) => {
                    let _ = self
                        .holder
                        .compare_exchange(holder, 0, Ordering::Relaxed, Ordering::Relaxed);
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

    fn peer(i: usize) -> [u8; 8] {
        (i as u64).to_le_bytes()
    }

    /// 300 non-readers, seen while calm, flood with every size the server
    /// echoes until nothing more is accepted: they hold at most 6/8 of the
    /// buffer, and a newcomer's 4,000-byte echo still goes out.
    #[test]
    fn non_readers_leave_room_for_a_newcomer() {
        let mut b = PeerBudget::for_send_buffer(SNDBUF);
        for p in 0..300 {
            assert!(b.allow(&peer(p), 0), "calm");
        }
        for round in 0..50 {
            for p in 0..300 {
                b.allow(&peer(p), [65_507, 4000, 100, 30_000, 0][(round + p) % 5]);
            }
        }
        assert!(b.unread <= 6 * SNDBUF / 8, "non-readers hold {} of {SNDBUF}", b.unread);
        assert!(b.allow(&peer(100_000), 4000), "the newcomer was refused");
        assert!(
            !b.allow(&peer(100_000), 4000),
            "a second echo needs a share of the spent pool"
        );
    }

    /// One hog fills the buffer first; a client that reads (the kernel's
    /// count stays where the hog left it) gets a share of its own.
    #[test]
    fn a_reader_beside_a_hog_gets_its_share() {
        let mut b = PeerBudget::for_send_buffer(SNDBUF);
        let mut hog = 0;
        while b.allow(&peer(1), 4096) {
            hog += 1;
        }
        assert!(hog > 100, "the hog got {hog} echoes");
        let held = b.unread;
        let mut answered = 0;
        for _ in 0..500 {
            b.set_unread(held); // the reader read its echo
            answered += usize::from(b.allow(&peer(2), 512));
        }
        assert_eq!(answered, 500, "the reader was cut off");
        assert!(!b.allow(&peer(1), 4096), "the hog is still over its share");
    }

    #[test]
    fn draining_forgets_charges_and_more_peers_than_tracked_are_served_while_calm() {
        let mut b = PeerBudget::for_send_buffer(SNDBUF);
        for p in 0..TRACKED_PEERS + 10 {
            assert!(b.allow(&peer(p), 0));
        }
        b.set_unread(SNDBUF / 4);
        assert!(
            !b.allow(&peer(TRACKED_PEERS + 20), 0),
            "an untracked peer under pressure"
        );
        assert!(b.allow(&peer(3), 100), "a known peer under pressure");
        b.set_unread(0);
        assert_eq!((b.tracked, b.pool_used), (0, 0));
        assert!(b.allow(&peer(TRACKED_PEERS + 20), 65_507), "calm again");
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
