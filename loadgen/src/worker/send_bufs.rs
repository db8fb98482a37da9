//! Send buffers for the ring: one per send in flight, not one per connection,
//! and the one freed last is the one taken next.
//!
//! A send on the ring reads its buffer until it completes, so a connection
//! needs a buffer of its own only while its send flies; once it completes the
//! bytes are in the socket and the buffer is free. A buffer per connection
//! (as before) made every send write a cold slot: 128 B × 10,000 connections
//! is 1.25 MiB, and at that count loadgen, not the server, limited the
//! comparison's Unix runs. Taken last-freed first, the few dozen buffers of
//! one turn's sends stay in cache whatever the connection count.
//!
//! The memory is one allocation of a buffer per connection (at most one send
//! per connection is in flight, so it never runs out), zeroed: the kernel
//! backs a page only once a buffer in it is first written, so the memory
//! touched is what the most sends ever in flight at once needed.

/// No buffer: the connection has no send in flight.
const NONE: u32 = u32::MAX;

pub struct SendBufs {
    /// `count` buffers of `len` bytes. Never resized; freed only once nothing
    /// is in flight (the owner leaks it otherwise).
    slab: Vec<u8>,
    len: usize,
    /// Buffers free, and used before: taken from the end.
    free: Vec<u32>,
    /// Buffers `fresh..count` were never used.
    fresh: u32,
    /// Connection `k`'s send in flight reads buffer `held[k]` (or `NONE`).
    held: Vec<u32>,
}

impl SendBufs {
    /// Buffers of `len` bytes for `conns` connections.
    pub fn new(conns: usize, len: usize) -> SendBufs {
        SendBufs {
            slab: vec![0; conns * len],
            len,
            free: Vec::new(),
            fresh: 0,
            held: vec![NONE; conns],
        }
    }

    /// Connection `k` has a send in flight.
    #[inline]
    pub fn busy(&self, k: usize) -> bool {
        self.held[k] != NONE
    }

    /// Gives connection `k` (no send in flight) a buffer, held until
    /// [`SendBufs::release`]. Its old bytes are whatever the last user left.
    ///
    /// The slice is built from a raw pointer, not by slicing the slab, so
    /// that no reference covers the other buffers, which the kernel may be
    /// reading for sends in flight.
    #[inline]
    pub fn take(&mut self, k: usize) -> &mut [u8] {
        assert!(!self.busy(k), "connection {k} already holds a send buffer");
        let b = match self.free.pop() {
            Some(b) => b,
            None => {
                // One buffer per connection, at most one held by each: never
                // out of fresh ones while a connection has none.
                let b = self.fresh;
                self.fresh += 1;
                b
            }
        };
        let start = b as usize * self.len;
        assert!(start + self.len <= self.slab.len());
        self.held[k] = b;
        // SAFETY: in bounds (checked above); buffer `b` was free, so no send
        // in flight reads it, and only connection `k` holds it from now on.
        unsafe { std::slice::from_raw_parts_mut(self.slab.as_mut_ptr().add(start), self.len) }
    }

    /// Connection `k`'s send completed (or was never submitted): its buffer
    /// is free again, first in line to be taken.
    #[inline]
    pub fn release(&mut self, k: usize) {
        let b = std::mem::replace(&mut self.held[k], NONE);
        if b != NONE {
            self.free.push(b);
        }
    }

    /// Buffers ever used: the most that were held at once.
    #[cfg(test)]
    fn touched(&self) -> usize {
        self.fresh as usize
    }

    /// Gives up the memory without freeing it: the kernel may still read it
    /// (a ring that would not go quiet; the process is about to exit).
    pub fn leak(&mut self) {
        std::mem::forget(std::mem::take(&mut self.slab));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_freed_last_is_taken_next() {
        let mut s = SendBufs::new(4, 64);
        let a = s.take(0).as_ptr();
        let b = s.take(1).as_ptr();
        assert_ne!(a, b);
        assert!(s.busy(0) && s.busy(1) && !s.busy(2));
        s.release(0);
        assert!(!s.busy(0));
        assert_eq!(s.take(2).as_ptr(), a, "the buffer just freed, not a fresh one");
        s.release(1);
        s.release(2);
        assert_eq!(s.take(3).as_ptr(), a, "last freed first");
        assert_eq!(s.touched(), 2, "two sends in flight at most, two buffers touched");
    }

    #[test]
    fn every_connection_can_hold_one_at_once_and_they_never_overlap() {
        let n = 8;
        let mut s = SendBufs::new(n, 64);
        let mut starts: Vec<usize> = (0..n).map(|k| s.take(k).as_ptr() as usize).collect();
        starts.sort();
        for w in starts.windows(2) {
            assert!(w[1] - w[0] >= 64, "buffers overlap");
        }
        // Releasing one that holds nothing changes nothing.
        s.release(0);
        s.release(0);
        assert_eq!(s.free.len(), 1);
    }

    #[test]
    #[should_panic(expected = "already holds")]
    fn a_connection_never_holds_two() {
        let mut s = SendBufs::new(2, 64);
        s.take(0);
        s.take(0);
    }
}
