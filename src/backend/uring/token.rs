//! `user_data` encoding: which operation a completion belongs to.
//!
//! Layout of the 64 bits: `op` (8) | `gen` (24) | `slot` (32). `slot` indexes
//! the worker's connection slab (or, for datagram sends, the buffer id whose
//! send slot is in use); `gen` is bumped each time a slab slot is reused, so a
//! completion that arrives for a connection that has since been replaced is
//! recognised as stale instead of being applied to the newcomer.

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
    /// A cancel request; its own completion carries nothing we need.
    Cancel = 7,
    /// Multishot recvmsg on a datagram socket.
    DgramRecv = 8,
    /// The send (sendto) of one echoed datagram; `slot` is the buffer id.
    DgramSend = 9,
    /// The start-up self-test of multishot receive.
    Probe = 10,
    /// Near `--max-conns`: a poll for a pending connection, before a place is
    /// reserved and a single-shot accept armed.
    AcceptReady = 11,
    /// loadgen only: a multishot poll on its epoll descriptor, which still
    /// watches connects in progress while the ring carries the data.
    Poll = 12,
}

impl Op {
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
            10 => Op::Probe,
            11 => Op::AcceptReady,
            12 => Op::Poll,
            _ => return None,
        })
    }
}

/// A decoded `user_data` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    pub op: Op,
    pub gen: u32,
    pub slot: u32,
}

const GEN_BITS: u32 = 24;
/// Generations wrap at this mask; 16 million reuses of one slot between a
/// submission and its completion is not a concern.
pub const GEN_MASK: u32 = (1 << GEN_BITS) - 1;

// The server's own reserved operations (accept, its poll and timer, the stop
// poll, the datagram receive) carry the worker's epoch in `gen`, bumped when a
// ring starts over after dropped completions; these constants are epoch 0.

/// The accept on this ring's listener (there is at most one).
pub const ACCEPT: u64 = Token::reserved(Op::Accept);
/// The poll on the shutdown eventfd.
pub const SHUTDOWN: u64 = Token::reserved(Op::Shutdown);
/// The poll for a pending connection near `--max-conns`.
pub const ACCEPT_READY: u64 = Token::reserved(Op::AcceptReady);
/// The EMFILE back-off timer.
pub const ACCEPT_BACKOFF: u64 = Token::reserved(Op::AcceptBackoff);
/// Every cancel request.
pub const CANCEL: u64 = Token::reserved(Op::Cancel);
/// The datagram socket's multishot recvmsg (there is one per ring).
pub const DGRAM_RECV: u64 = Token::reserved(Op::DgramRecv);
/// The start-up probe.
pub const PROBE: u64 = Token::reserved(Op::Probe);

impl Token {
    pub const fn new(op: Op, gen: u32, slot: u32) -> Token {
        Token {
            op,
            gen: gen & GEN_MASK,
            slot,
        }
    }

    const fn reserved(op: Op) -> u64 {
        Token::new(op, 0, 0).encode()
    }

    pub const fn encode(self) -> u64 {
        ((self.op as u64) << 56) | (((self.gen & GEN_MASK) as u64) << 32) | self.slot as u64
    }

    /// `None` for a value this backend never submitted.
    pub fn decode(user_data: u64) -> Option<Token> {
        let op = Op::from_u8((user_data >> 56) as u8)?;
        Some(Token {
            op,
            gen: ((user_data >> 32) as u32) & GEN_MASK,
            slot: user_data as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let t = Token::new(Op::Send, 0x00ab_cdef, 0xdead_beef);
        assert_eq!(Token::decode(t.encode()), Some(t));
        assert_eq!(Token::decode(ACCEPT).unwrap().op, Op::Accept);
        assert_eq!(Token::new(Op::Recv, GEN_MASK + 2, 1).gen, 1);
        assert_eq!(Token::decode(0), None);
    }
}
