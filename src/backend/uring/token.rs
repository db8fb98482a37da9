//! The uring backend's operations, in the ring layer's `user_data` layout
//! ([`crate::ring::token`]): which operation a completion belongs to.
//!
//! `slot` indexes the worker's connection slab (or, for datagram sends, the
//! buffer id whose send slot is in use); `gen` is the slot's generation, or
//! for the ring's own operations its epoch.

use crate::ring::token::{encode_raw, OpKind};

pub use crate::ring::token::GEN_MASK;

/// A decoded `user_data` value of this backend.
pub type Token = crate::ring::token::Token<Op>;

/// The kind of operation a submission was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// Multishot accept on the listener (one per ring).
    Accept = 1,
    /// Receive on a stream connection (multishot, or single-shot for AF_UNIX on buggy kernels).
    Recv = 2,
    /// Send of echo bytes on a stream connection.
    Send = 3,
    /// One-shot `POLLOUT` wait after a send found the socket full.
    Writable = 4,
    /// Poll on the shutdown eventfd.
    Shutdown = 5,
    /// Timer that ends an EMFILE back-off, after which accept is re-armed.
    AcceptBackoff = 6,
    /// A cancel or close request; its own completion carries nothing we need.
    Cancel = 7,
    /// Multishot recvmsg on a datagram socket.
    DgramRecv = 8,
    /// The send (sendto) of one echoed datagram; `slot` is the buffer id.
    DgramSend = 9,
    /// Near `--max-conns`: a poll for a pending connection, before a place is
    /// reserved and a single-shot accept armed.
    AcceptReady = 11,
    /// `shutdown(2)` of connection `slot`'s socket, when the ring stops or
    /// starts over: it ends the connection's receive (EOF) and its wait for
    /// `POLLOUT` without a cancel.
    ConnShutdown = 12,
}

impl OpKind for Op {
    fn to_u8(self) -> u8 {
        self as u8
    }

    fn from_u8(v: u8) -> Option<Op> {
        Some(match v {
            1 => Op::Accept,
            2 => Op::Recv,
            3 => Op::Send,
            4 => Op::Writable,
            5 => Op::Shutdown,
            6 => Op::AcceptBackoff,
            7 => Op::Cancel,
            8 => Op::DgramRecv,
            9 => Op::DgramSend,
            11 => Op::AcceptReady,
            12 => Op::ConnShutdown,
            _ => return None,
        })
    }
}

/// Every cancel and close request.
pub const CANCEL: u64 = encode_raw(Op::Cancel as u8, 0, 0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_round_trips() {
        use Op::*;
        for op in [
            Accept,
            Recv,
            Send,
            Writable,
            Shutdown,
            AcceptBackoff,
            Cancel,
            DgramRecv,
            DgramSend,
            AcceptReady,
            ConnShutdown,
        ] {
            let t = Token::new(op, 5, 9);
            assert_eq!(Token::decode(t.encode()), Some(t));
        }
        assert_eq!(Token::decode(CANCEL).map(|t| t.op), Some(Op::Cancel));
        assert_eq!(Token::decode(crate::ring::token::PROBE), None);
    }
}
