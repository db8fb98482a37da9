//! Conversations on the event loop (`--conn-msgs N`): each connection slot
//! connects, exchanges N checked echoes (at most `--depth` in flight),
//! closes, and starts again.
//!
//! Closed loop: a slot's next conversation starts the moment its last one
//! ends (after a back-off if it failed, so that a server that refuses is
//! not hammered in a spin). Open loop (`--rate`, conversations per second):
//! conversation `i` of the global schedule is due at `load_start + i / rate`
//! and belongs to slot `i % conns`; a slot still busy queues it, and its
//! conversation time is measured from the intended start, so a server that
//! falls behind shows the wait (coordinated omission corrected, as messages
//! are). A failed conversation is not retried in open loop: the schedule
//! moves on.
//!
//! The per-message histogram measures each echo from when it could be sent
//! on its (established) connection; the connect and the queueing belong to
//! the connect and conversation histograms.
//!
//! loadgen closes first: the socket is closed once the last echo is
//! checked, with nothing unread, so the server sees a FIN (not a reset) and
//! TCP's `TIME_WAIT` stays on loadgen's side. Slot `k` always connects from
//! the same source address (`--local-addrs`, by default towards a loopback
//! server 127.0.0.1 to 127.0.0.8: `crate::conversation::resolve`), so the
//! conversations are spread evenly over the addresses.
//!
//! A conversation's state lives beside [`super::Conn`], in [`Convs`], so
//! that the message-only hot path keeps its two-cache-line connection.
//!
//! This state machine and its accounting serve both I/O paths: on epoll
//! (connect, `read`, `send`, `close` as syscalls on descriptors) and on the
//! ring, where the socket is a direct descriptor and its socket, connect and
//! close are ring operations (`ring_conversation.rs`).

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::Ordering::Relaxed;

use super::stream::Stream;
use super::{Life, Msg, Proto, Worker, UNSET};
use crate::conversation::{ConvFailures, ConvTotals};
use crate::stats::{record_ns, Recorder};

/// Open loop: most conversations queued on one slot, so that a stalled
/// server cannot make loadgen's memory grow without bound.
const MAX_QUEUED_CONVS: usize = 1 << 16;
/// Most scheduled conversations handed out in one loop turn.
const MAX_DISPATCH: usize = 100_000;

/// One thread's conversations: a [`Slot`] per connection it owns.
pub(super) struct Convs {
    /// Echoes per conversation (`--conn-msgs`).
    msgs: u64,
    slots: Vec<Slot>,
    /// Open loop: slots that may start a queued conversation (duplicates
    /// are harmless: a busy slot is skipped).
    ready: Vec<usize>,
    /// Open loop: this thread's place in the global schedule.
    sched_c: u64,
    sched_cycle: u64,
    ns_per_conv: f64,
    pub(super) totals: ConvTotals,
}

/// The times of a slot's current conversation, and its queue (open loop).
#[derive(Default)]
struct Slot {
    /// When its `connect` started.
    connect_at: u64,
    /// When it was meant to start (open loop); closed loop: `connect_at`.
    origin: u64,
    /// Open loop: intended starts of the conversations waiting for this slot.
    queued: VecDeque<u64>,
}

impl Convs {
    /// A thread's conversations, or `None` without `--conn-msgs`.
    pub(super) fn for_plan(plan: &super::Plan, index: usize, slots: usize) -> Option<Convs> {
        Some(Convs {
            msgs: plan.conn_msgs?,
            slots: (0..slots).map(|_| Slot::default()).collect(),
            ready: Vec::new(),
            sched_c: index as u64,
            sched_cycle: 0,
            ns_per_conv: plan.rate.map_or(0.0, |r| 1e9 / r),
            totals: ConvTotals::new(),
        })
    }
}

fn in_window(rec: &Recorder, at: u64) -> bool {
    at >= rec.measure_start && at < rec.end
}

impl<P: Proto> Worker<'_, P> {
    /// Slot `k` has just started its `connect`.
    pub(super) fn conv_connect_started(&mut self, k: usize, now: u64) {
        let open_loop = self.plan.rate.is_some();
        if let Some(cv) = &mut self.conv {
            let slot = &mut cv.slots[k];
            slot.connect_at = now;
            if !open_loop {
                slot.origin = now;
            }
        }
    }

    /// Slot `k` is established: its connect time is recorded and its first
    /// messages (up to `--depth`) are queued.
    pub(super) fn conv_established(&mut self, k: usize, now: u64) {
        let Some(cv) = &mut self.conv else { return };
        if in_window(&self.rec, now) {
            record_ns(&mut cv.totals.connect, now.saturating_sub(cv.slots[k].connect_at));
        }
        let first = self.plan.depth.min(cv.msgs);
        if let Some(up) = self.conns[k].life.up_mut() {
            for _ in 0..first {
                up.queue.push_back(Msg { intended: now, sent: 0 });
            }
        }
        self.mark_dirty(k);
    }

    /// A connect of slot `k` failed with `e`: counted by kind. Running out of
    /// source ports ends the run; anything else moves on to the next conversation.
    pub(super) fn conv_connect_failed(&mut self, k: usize, now: u64, e: &io::Error) {
        let Some(cv) = &mut self.conv else { return };
        if in_window(&self.rec, now) {
            cv.totals.failed.count_connect_error(e);
        }
        if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) {
            self.conns[k].life = Life::Dead;
            let n = self.plan.sources.addrs().len();
            let from = match n {
                0 => "one source address (the kernel's choice)".to_string(),
                1 => "one source address".to_string(),
                n => format!("{n} source addresses"),
            };
            let msg = format!(
                "out of source ports (EADDRNOTAVAIL) towards {} from {from}: each conversation's TIME_WAIT \
                 stays on loadgen's side and holds its port; spread the conversations over more source \
                 addresses with --local-addrs, or lower --conns or --rate",
                self.plan.endpoint
            );
            self.shared.fatal.lock().unwrap().get_or_insert(msg);
            self.shared.stop.store(true, Relaxed);
            return;
        }
        self.conv_next(k, now, false);
    }

    /// Slot `k`'s live connection was lost (a reset, or the server closed it early).
    pub(super) fn conv_lost(&mut self, k: usize, now: u64) {
        self.conv_count(now, |f| f.reset += 1);
        self.conv_next(k, now, false);
    }

    pub(super) fn conv_count(&mut self, now: u64, f: impl Fn(&mut ConvFailures)) {
        if let Some(cv) = &mut self.conv {
            if in_window(&self.rec, now) {
                f(&mut cv.totals.failed);
            }
        }
    }

    /// Closes slot `k`'s connection (loadgen closes first). `clean`: the
    /// last echo is in and nothing of the connection is in flight on the ring.
    pub(super) fn conv_close(&mut self, k: usize, clean: bool) {
        let old = std::mem::replace(&mut self.conns[k].life, Life::Idle { retry_at: UNSET });
        if let Life::Up(_) = &old {
            self.shared.open.fetch_sub(1, Relaxed);
            if let Some(ring) = &mut self.ring {
                // A direct socket is closed by the ring (shut down first if
                // a receive or send may still hold it).
                let busy = !clean || ring.sends.busy(k);
                ring.release_direct(k, busy);
            }
        }
        // Dropping a descriptor closes it; epoll forgets a closed descriptor.
        drop(old);
    }

    /// Slot `k`'s conversation is over (`ok`: every echo checked): start the
    /// next one. Closed loop: now, or after a back-off if it failed. Open
    /// loop: the next queued one, from the event loop (never from here,
    /// so that a run of failing connects is a loop, not a recursion).
    pub(super) fn conv_next(&mut self, k: usize, now: u64, ok: bool) {
        if self.shared.stop.load(Relaxed) {
            self.conns[k].life = Life::Dead;
            return;
        }
        if let (Some(cv), Some(_)) = (&mut self.conv, self.plan.rate) {
            self.conns[k].life = Life::Idle { retry_at: UNSET };
            cv.ready.push(k);
        } else if ok {
            self.conns[k].failures = 0;
            self.start_connect(k, now);
        } else {
            self.retry_after_backoff(k, now);
        }
    }

    /// Open loop: queues the conversations of the global schedule due by
    /// `now` (plus the slack) on their slots, starts those whose slot is
    /// free; returns when the next one is due.
    pub(super) fn dispatch_conversations(&mut self, now: u64) -> u64 {
        let next = self.schedule_conversations(now);
        while let Some(k) = self.conv.as_mut().and_then(|cv| cv.ready.pop()) {
            if !matches!(self.conns[k].life, Life::Idle { .. }) {
                continue;
            }
            let Some(cv) = &mut self.conv else { break };
            let Some(origin) = cv.slots[k].queued.pop_front() else {
                continue;
            };
            cv.slots[k].origin = origin;
            self.start_connect(k, now);
        }
        next
    }

    fn schedule_conversations(&mut self, now: u64) -> u64 {
        let Some(cv) = &mut self.conv else { return UNSET };
        let n = self.plan.conns;
        let t = self.plan.threads as u64;
        let horizon = now + self.plan.slack_ns;
        for _ in 0..MAX_DISPATCH {
            let i = cv.sched_cycle * n + cv.sched_c;
            let intended = self.load_start + (i as f64 * cv.ns_per_conv) as u64;
            if intended > horizon {
                return intended;
            }
            let k = (cv.sched_c / t) as usize;
            let counted = in_window(&self.rec, intended);
            if counted {
                cv.totals.scheduled += 1;
            }
            let slot = &mut cv.slots[k];
            if slot.queued.len() < MAX_QUEUED_CONVS {
                slot.queued.push_back(intended);
                cv.ready.push(k);
            } else if counted {
                cv.totals.failed.not_started += 1;
            }
            cv.sched_c += t;
            if cv.sched_c >= n {
                cv.sched_c = self.index as u64;
                cv.sched_cycle += 1;
            }
        }
        now
    }
}

impl Worker<'_, Stream> {
    /// Echoes were checked on slot `k`: the conversation ends with its last
    /// one, else more messages are queued (up to `--depth` in flight).
    pub(super) fn conv_after_echo(&mut self, k: usize, now: u64) {
        let Some(cv) = &mut self.conv else { return };
        let depth = self.plan.depth;
        let Life::Up(up) = &mut self.conns[k].life else { return };
        let done = up.proto.recv.seq;
        if done < cv.msgs {
            let in_flight = up.queue.len() as u64;
            let more = depth.saturating_sub(in_flight).min(cv.msgs - done - in_flight);
            for _ in 0..more {
                up.queue.push_back(Msg { intended: now, sent: 0 });
            }
            if more > 0 {
                self.mark_dirty(k);
            }
            return;
        }
        let slot = &cv.slots[k];
        if in_window(&self.rec, now) {
            record_ns(
                &mut cv.totals.conversation,
                now.saturating_sub(slot.origin.min(slot.connect_at)),
            );
            cv.totals.completed += 1;
        }
        self.conv_close(k, true);
        self.conv_next(k, now, true);
    }

    /// Slot `k` is up but an echo timed out: the conversation is abandoned.
    pub(super) fn conv_unanswered(&mut self, k: usize, now: u64) {
        self.conv_count(now, |f| f.unanswered += 1);
        self.conv_close(k, false);
        self.conv_next(k, now, false);
    }
}
