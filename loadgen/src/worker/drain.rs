//! The end-of-run drain: after the measured phase, wait for the echoes in
//! flight before closing (see [`Drain`]).

use std::sync::atomic::Ordering::{AcqRel, Acquire};

use super::{Life, Proto, Worker};

/// The longest end-of-run drain (see [`Drain`]), whatever `--timeout` says:
/// the run ends at most this long after its measured phase.
const MAX_DRAIN_NS: u64 = 5_000_000_000;
/// How long past its own drain deadline a thread that is done waits for the
/// others to be done too before it closes anyway (see [`Drain`]). They have
/// the same deadline, so only a thread kept off the CPU is this late.
const MAX_WAIT_FOR_OTHERS_NS: u64 = 1_000_000_000;

/// The end-of-run drain. When the measured phase ends, a thread sends no new
/// message (queued ones never started are dropped, closed loops stop
/// refilling, the open-loop schedule stops), waits for the echoes still in
/// flight, checks them, and only then closes its connections. A connection
/// closed with an echo on its way makes the server's write or read fail
/// (`ECONNRESET`, `EPIPE`: its `closed_with_pending`), and one closed with
/// echoed bytes unread resets the server's end: at 100,000 connections, a
/// round trip of almost a second, thousands of them did.
///
/// Bounded: the drain ends when every connection of the thread is quiet, or
/// at `--timeout` after the end of the measured phase (at most
/// [`MAX_DRAIN_NS`]), when every message sent before the end is overdue
/// anyway. What completes in the drain is checked (a mismatch still fails
/// the run) but not measured: it is past the window. A message still
/// missing then counts as a timeout only if it was overdue within the
/// window (timeouts count at their deadline, see `Recorder::error`).
/// Conversations (`--conn-msgs`) close on their own schedule and are not
/// drained; neither are datagram clients, which leave nothing pending in a
/// server.
///
/// Closing together: a thread whose drain is over does not close its
/// connections until every thread's drain is over (`Shared::drained_threads`;
/// at most [`MAX_WAIT_FOR_OTHERS_NS`] past its deadline). Closing is not free,
/// and the threads may share a CPU (`--pin 1` puts them all on one): a
/// thread closing while another still drained could keep that one off the
/// CPU past its deadline, and it then closed connections whose echoes had
/// arrived unread, which resets the server's end. At 100,000 connections
/// (6 threads of 16,667 on one CPU) each thread's close held the CPU for
/// about 3.5 s, until `RingIo::quiesce` stopped cancelling thousands of
/// receives at once, and the servers counted 1 and 28 `closed_with_pending`
/// (docs/scaling.md).
pub(super) struct Drain {
    pub(super) deadline: u64,
    /// Connections that still had echoes outstanding when last looked at.
    pub(super) busy: Vec<usize>,
    /// This thread has counted itself in `Shared::drained_threads`.
    told: bool,
}

impl<'a, P: Proto> Worker<'a, P> {
    /// The measured phase is over: no new message goes out from now on, and
    /// the connections that are owed echoes are the drain's to wait for.
    /// A run of conversations has no drain (see [`Drain`]).
    pub(super) fn start_drain(&mut self, now: u64) {
        // What the measured phase ended with: a connection the server drops
        // during the drain (past the window, like its reset) still held to the end.
        self.count_held();
        let deadline = match self.conv {
            Some(_) => now,
            None => self.rec.end.saturating_add(self.plan.timeout_ns.min(MAX_DRAIN_NS)),
        };
        let mut busy = Vec::new();
        if self.conv.is_none() {
            for (k, c) in self.conns.iter_mut().enumerate() {
                if let Life::Up(up) = &mut c.life {
                    if P::stop_new(up) {
                        busy.push(k);
                    }
                }
            }
        }
        self.drain = Some(Drain {
            deadline,
            busy,
            told: false,
        });
    }

    /// Counts the connections up now that carried load, and those that
    /// never completed an echo.
    pub(super) fn count_held(&mut self) {
        for c in &self.conns {
            if let Life::Up(up) = &c.life {
                match P::carried_load(up) {
                    true => self.rec.totals.conns_carried_load += 1,
                    false => self.rec.totals.conns_unanswered += 1,
                }
            }
        }
    }

    /// Whether the thread may stop and close its connections: its own drain
    /// is over (see [`Worker::drained`]) and so is every other thread's
    /// ("Closing together" in [`Drain`]), or it waited for them long enough,
    /// or the run was cut short (no drain; a signal).
    pub(super) fn may_close(&mut self, now: u64) -> bool {
        if !self.drained(now) {
            return false;
        }
        let Some(deadline) = self.drain.as_ref().map(|d| d.deadline) else {
            return true;
        };
        self.tell_drained();
        self.shared.drained_threads.load(Acquire) >= self.plan.threads as u64
            || now >= deadline.saturating_add(MAX_WAIT_FOR_OTHERS_NS)
            || sockbench::sys::signal::stop_requested()
    }

    /// Counts this thread in `Shared::drained_threads`, once.
    pub(super) fn tell_drained(&mut self) {
        if let Some(Drain { told: true, .. }) = self.drain {
            return;
        }
        self.shared.drained_threads.fetch_add(1, AcqRel);
        if let Some(d) = &mut self.drain {
            d.told = true;
        }
    }

    /// Whether the thread's own drain is over: every connection is quiet,
    /// or the deadline has come, or there is none (the run was cut short
    /// before its end). Once the deadline has passed, the messages still
    /// owed are looked at one last time, so that those overdue within the
    /// measured phase are counted.
    pub(super) fn drained(&mut self, now: u64) -> bool {
        let Some(d) = &mut self.drain else { return true };
        let conns = &self.conns;
        d.busy
            .retain(|&k| matches!(&conns[k].life, Life::Up(up) if P::owed(up)));
        if d.busy.is_empty() {
            return true;
        }
        if now < d.deadline && !sockbench::sys::signal::stop_requested() {
            return false;
        }
        for k in std::mem::take(&mut d.busy) {
            let _ = P::expire(self, k, now);
        }
        true
    }
}
