//! One stream connection's state on a ring: what its receive is doing
//! ([`Reading`]), whether it is closing ([`Life`]), and what its send reads
//! from ([`Sending`]).
//!
//! The receive's state is one enum rather than a flag per reason it may be
//! off, so that "may a receive be armed now" is written once
//! ([`Conn::may_arm_recv`]).

/// What the in-flight (or next) send reads from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sending {
    Idle,
    /// Bytes `off..len` of ring buffer `bid`.
    Ring {
        bid: u16,
        off: u32,
        len: u32,
    },
    /// Bytes `off..` of the connection's `heap` vector.
    Heap {
        off: usize,
    },
}

/// Where a connection's receive stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reading {
    /// A receive is armed (multishot, or single-shot on AF_UNIX where
    /// multishot misses EOF). `cancelling`: too much is waiting to be sent,
    /// and a cancel of the receive is on its way.
    Armed { cancelling: bool },
    /// No receive armed, and one may be armed.
    Idle,
    /// No receive armed: too much is waiting to be sent. It may be armed
    /// again once the backlog has halved.
    Paused,
    /// No receive armed: the ring ran out of buffers (`ENOBUFS`), and the
    /// connection waits in `StreamWorker::starved`; `paused` as for
    /// [`Reading::Paused`], if that holds too.
    Starved { paused: bool },
    /// The peer shut down its write side: no receive is armed again.
    Eof,
}

impl Reading {
    /// The armed receive ended (its final completion, without `F_MORE`).
    pub(super) fn ended(&mut self) {
        if let Reading::Armed { cancelling } = *self {
            *self = if cancelling { Reading::Paused } else { Reading::Idle };
        }
    }

    /// Too much is waiting to be sent: stop receiving. Returns whether the
    /// armed receive must be cancelled now (not already on its way).
    pub(super) fn pause(&mut self) -> bool {
        match *self {
            Reading::Armed { cancelling: false } => {
                *self = Reading::Armed { cancelling: true };
                true
            }
            Reading::Idle => {
                *self = Reading::Paused;
                false
            }
            Reading::Starved { .. } => {
                *self = Reading::Starved { paused: true };
                false
            }
            Reading::Armed { cancelling: true } | Reading::Paused | Reading::Eof => false,
        }
    }

    /// The backlog has halved. A cancel already on its way is left to land
    /// (the receive then ends as [`Reading::Paused`] and is resumed here).
    pub(super) fn unpause(&mut self) {
        match *self {
            Reading::Paused => *self = Reading::Idle,
            Reading::Starved { paused: true } => *self = Reading::Starved { paused: false },
            _ => {}
        }
    }

    /// The ring ran out of buffers as the receive ended.
    pub(super) fn starve(&mut self) {
        let paused = *self == Reading::Paused;
        *self = Reading::Starved { paused };
    }

    /// Buffers came back to a starved connection.
    pub(super) fn fed(&mut self) {
        if let Reading::Starved { paused } = *self {
            *self = if paused { Reading::Paused } else { Reading::Idle };
        }
    }
}

/// Whether a connection is still serving or on its way out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Life {
    Open,
    /// Closing: its slot is freed when the last operation in flight has
    /// completed; `cancel_sent` once they have been cancelled.
    Closing {
        cancel_sent: bool,
    },
}

pub(super) struct Conn {
    /// The socket: its slot in the ring's fixed file table (direct accept),
    /// or its descriptor with `--uring-fixed-files off` (see `Files`). It is
    /// closed with an `IORING_OP_CLOSE` (batched like any other operation),
    /// except at shutdown.
    pub(super) file: u32,
    /// Operations in flight on this connection; the slot is freed at zero once closing.
    pub(super) ops: u32,
    pub(super) reading: Reading,
    pub(super) life: Life,
    /// A send, or the `POLLOUT` wait that precedes a retry, is in flight.
    pub(super) send_in_flight: bool,
    pub(super) sending: Sending,
    /// Source of `Sending::Heap`; not modified while a send reads from it.
    pub(super) heap: Vec<u8>,
    /// Received bytes queued behind the current send.
    pub(super) backlog: Vec<u8>,
}

impl Conn {
    pub(super) fn new(file: u32) -> Conn {
        Conn {
            file,
            ops: 0,
            reading: Reading::Idle,
            life: Life::Open,
            send_in_flight: false,
            sending: Sending::Idle,
            heap: Vec::new(),
            backlog: Vec::new(),
        }
    }

    /// Bytes received and not yet sent back.
    pub(super) fn unsent(&self) -> usize {
        let current = match self.sending {
            Sending::Idle => 0,
            Sending::Ring { off, len, .. } => (len - off) as usize,
            Sending::Heap { off } => self.heap.len() - off,
        };
        current + self.backlog.len()
    }

    pub(super) fn drained(&self) -> bool {
        !self.send_in_flight && self.sending == Sending::Idle && self.backlog.is_empty()
    }

    pub(super) fn closing(&self) -> bool {
        self.life != Life::Open
    }

    /// The one re-arm condition: no receive armed, and none of pause,
    /// starvation, EOF or closing holds it back.
    pub(super) fn may_arm_recv(&self) -> bool {
        self.reading == Reading::Idle && self.life == Life::Open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pause while the receive is armed cancels it once; the receive then
    /// ends paused, and is armed again only after the backlog halves.
    #[test]
    fn a_paused_receive_is_cancelled_once_and_resumed_after_it_ends() {
        let mut c = Conn::new(3);
        c.reading = Reading::Armed { cancelling: false };
        assert!(c.reading.pause(), "the armed receive must be cancelled");
        assert!(!c.reading.pause(), "a second cancel while the first is on its way");
        c.reading.unpause();
        assert_eq!(
            c.reading,
            Reading::Armed { cancelling: true },
            "the cancel is still on its way"
        );
        c.reading.ended();
        assert_eq!(c.reading, Reading::Paused);
        assert!(!c.may_arm_recv());
        c.reading.unpause();
        assert!(c.may_arm_recv());
    }

    /// Starved and paused at once: buffers coming back do not re-arm a
    /// paused receive, and unpausing does not re-arm a starved one.
    #[test]
    fn starved_and_paused_both_hold_the_receive_back() {
        let mut c = Conn::new(3);
        c.reading = Reading::Armed { cancelling: false };
        assert!(c.reading.pause());
        c.reading.ended();
        c.reading.starve();
        assert_eq!(c.reading, Reading::Starved { paused: true });
        c.reading.unpause();
        assert!(!c.may_arm_recv(), "still starved");
        c.reading.fed();
        assert!(c.may_arm_recv());

        let mut c = Conn::new(3);
        c.reading.starve();
        c.reading.pause();
        c.reading.fed();
        assert_eq!(c.reading, Reading::Paused);
        assert!(!c.may_arm_recv(), "still paused");
    }

    #[test]
    fn eof_and_closing_are_never_re_armed() {
        let mut c = Conn::new(3);
        c.reading = Reading::Eof;
        c.reading.unpause();
        c.reading.fed();
        c.reading.ended();
        assert!(!c.may_arm_recv());
        let mut c = Conn::new(3);
        c.life = Life::Closing { cancel_sent: false };
        assert!(c.closing() && !c.may_arm_recv());
    }
}
