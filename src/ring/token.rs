//! `user_data` encoding, generic over each ring user's own operations.
//!
//! Layout of the 64 bits: `op` (8) | `gen` (24) | `slot` (32). `op` is a
//! byte of the user's own [`OpKind`] enum (the server's backend has one,
//! loadgen another; neither knows the other's). `slot` indexes the user's
//! connection slab (or whatever its op names); `gen` is bumped each time a
//! slab slot is reused, so a completion that arrives for a connection that
//! has since been replaced is recognised as stale instead of being applied
//! to the newcomer.
//!
//! Op byte [`RING_OP`] belongs to this layer: the start-up self-tests
//! ([`PROBE`]) and [`crate::ring::Driver::quiesce`]'s cancel ([`CANCEL`]).
//! [`Token::decode`] returns `None` for them, as for any byte the user's
//! enum does not know.

/// The operations one ring user submits. Each variant's byte must be
/// neither 0 nor [`RING_OP`]; `from_u8` returns `None` for any other byte.
pub trait OpKind: Copy + Eq + std::fmt::Debug {
    fn to_u8(self) -> u8;
    fn from_u8(v: u8) -> Option<Self>;
}

/// The op byte of this layer's own operations.
pub const RING_OP: u8 = 0xFF;
/// The start-up probes of [`crate::ring::setup`].
pub const PROBE: u64 = encode_raw(RING_OP, 0, 1);
/// The cancel of [`crate::ring::Driver::quiesce`] (and any cancel whose
/// completion carries nothing its submitter needs).
pub const CANCEL: u64 = encode_raw(RING_OP, 0, 2);

const GEN_BITS: u32 = 24;
/// Generations wrap at this mask; 16 million reuses of one slot between a
/// submission and its completion is not a concern.
pub const GEN_MASK: u32 = (1 << GEN_BITS) - 1;

/// The `user_data` of op byte `op`, generation `gen` (masked) and `slot`;
/// `const`, so that a user can name its reserved values as constants.
pub const fn encode_raw(op: u8, gen: u32, slot: u32) -> u64 {
    ((op as u64) << 56) | (((gen & GEN_MASK) as u64) << 32) | slot as u64
}

/// A decoded `user_data` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token<O> {
    pub op: O,
    pub gen: u32,
    pub slot: u32,
}

impl<O: OpKind> Token<O> {
    pub fn new(op: O, gen: u32, slot: u32) -> Token<O> {
        Token {
            op,
            gen: gen & GEN_MASK,
            slot,
        }
    }

    pub fn encode(self) -> u64 {
        let op = self.op.to_u8();
        debug_assert!(op != 0 && op != RING_OP, "{:?} uses a reserved op byte", self.op);
        encode_raw(op, self.gen, self.slot)
    }

    /// `None` for a value this user never submitted (the ring layer's own
    /// included).
    pub fn decode(user_data: u64) -> Option<Token<O>> {
        let byte = (user_data >> 56) as u8;
        if byte == RING_OP {
            return None;
        }
        Some(Token {
            op: O::from_u8(byte)?,
            gen: ((user_data >> 32) as u32) & GEN_MASK,
            slot: user_data as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum TestOp {
        A = 1,
        B = 2,
    }

    impl OpKind for TestOp {
        fn to_u8(self) -> u8 {
            self as u8
        }
        fn from_u8(v: u8) -> Option<Self> {
            match v {
                1 => Some(TestOp::A),
                2 => Some(TestOp::B),
                _ => None,
            }
        }
    }

    #[test]
    fn round_trips() {
        let t = Token::new(TestOp::B, 0x00ab_cdef, 0xdead_beef);
        assert_eq!(Token::decode(t.encode()), Some(t));
        assert_eq!(Token::<TestOp>::new(TestOp::A, GEN_MASK + 2, 1).gen, 1);
        assert_eq!(Token::<TestOp>::decode(encode_raw(1, 0, 0)).unwrap().op, TestOp::A);
        assert_eq!(Token::<TestOp>::decode(0), None);
    }

    /// The layer's own values never decode as a user's op, even one whose
    /// enum (wrongly) claimed the reserved byte.
    #[test]
    fn the_ring_layers_own_values_decode_as_nothing() {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        struct Greedy;
        impl OpKind for Greedy {
            fn to_u8(self) -> u8 {
                RING_OP
            }
            fn from_u8(_: u8) -> Option<Self> {
                Some(Greedy)
            }
        }
        assert_eq!(Token::<Greedy>::decode(PROBE), None);
        assert_eq!(Token::<Greedy>::decode(CANCEL), None);
        assert_ne!(PROBE, CANCEL);
    }
}
