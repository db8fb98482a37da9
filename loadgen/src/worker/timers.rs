//! Timeouts without a sweep: each connection has at most one entry in a
//! min-heap, for the earliest moment one of its timeouts could be due.
//!
//! A sweep visits every connection on a fixed period (10,000 connections
//! every 20 ms is 500,000 visits a second, most of them cache misses). Here a
//! connection is visited when its entry comes due, which with `--timeout 1s`
//! is about once a second while it echoes, and arming costs one flag test per
//! message, because an entry already there is early enough: it was armed no
//! later than `--timeout` after an earlier send. The visit then works out the
//! connection's next deadline from its oldest outstanding message and arms
//! that. So the heap may be early, never late: the check it triggers is the
//! same exact comparison the sweep made.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// When connection `k` is to be looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Due {
    pub at: u64,
    pub k: usize,
}

/// At most one pending deadline per connection, soonest first.
#[derive(Debug)]
pub struct Timers {
    heap: BinaryHeap<Reverse<Due>>,
    armed: Vec<bool>,
}

impl Timers {
    /// Timers for connections `0..conns`.
    pub fn new(conns: usize) -> Timers {
        Timers {
            heap: BinaryHeap::with_capacity(conns),
            armed: vec![false; conns],
        }
    }

    /// Makes sure connection `k` is looked at no later than `at`, unless an
    /// entry for it is already waiting (which is then at least as early, as
    /// long as callers arm at every send with `send time + timeout`).
    #[inline]
    pub fn arm(&mut self, k: usize, at: u64) {
        if !self.armed[k] {
            self.armed[k] = true;
            self.heap.push(Reverse(Due { at, k }));
        }
    }

    /// Arms connection `k` at `at`, even if it was armed (its entry has just
    /// been taken by [`Timers::pop_due`], so it is not).
    #[inline]
    pub fn rearm(&mut self, k: usize, at: u64) {
        self.armed[k] = false;
        self.arm(k, at);
    }

    /// Lets the next [`Timers::arm`] of connection `k` push an entry even if
    /// one is waiting: for an entry armed for a longer deadline than the
    /// sends' (a connect's). The old entry stays in the heap; when it comes
    /// due it is one early look, which is harmless.
    #[inline]
    pub fn disarm(&mut self, k: usize) {
        self.armed[k] = false;
    }

    /// Takes the next connection whose entry is due at `now`.
    #[inline]
    pub fn pop_due(&mut self, now: u64) -> Option<usize> {
        match self.heap.peek() {
            Some(&Reverse(d)) if d.at <= now => {
                self.heap.pop();
                self.armed[d.k] = false;
                Some(d.k)
            }
            _ => None,
        }
    }

    /// When the soonest entry is due (`u64::MAX` if none is waiting).
    pub fn next_at(&self) -> u64 {
        self.heap.peek().map_or(u64::MAX, |&Reverse(d)| d.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_per_connection_soonest_first() {
        let mut t = Timers::new(3);
        t.arm(2, 50);
        t.arm(0, 30);
        t.arm(2, 10); // already armed at 50: ignored
        assert_eq!(t.next_at(), 30);
        assert_eq!(t.pop_due(29), None);
        assert_eq!(t.pop_due(60), Some(0));
        assert_eq!(t.pop_due(60), Some(2));
        assert_eq!(t.pop_due(60), None);
        t.arm(2, 70);
        assert_eq!(t.next_at(), 70);
    }

    #[test]
    fn a_disarmed_connection_can_be_armed_sooner() {
        let mut t = Timers::new(1);
        t.arm(0, 3_500); // a connect's deadline
        t.disarm(0);
        t.arm(0, 300); // the first send's
        assert_eq!(t.pop_due(300), Some(0));
    }
}
