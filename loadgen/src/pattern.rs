//! The payload pattern: every message's bytes depend on its connection id,
//! sequence number and offset, so a server that mixes buffers between
//! connections, drops, repeats or reorders bytes is caught by [`check`].
//!
//! A message is a Weyl sequence of 8-byte words from a per-message seed: the
//! seed costs one hash per message, each word one add, and [`check`] compares
//! the echo where it lies, a word at a time (see `STEP` for what that catches).
//!
//! Datagrams also carry a [`HEADER_LEN`]-byte header (magic, connection id,
//! sequence number) so that the answer can be matched to what was sent.

/// Bytes of the datagram header: magic (4), connection id (4), sequence number (8).
pub const HEADER_LEN: usize = 16;
/// Marks a loadgen datagram; anything else is a mismatch.
pub const MAGIC: u32 = 0x5342_4447; // "SBDG"

#[inline]
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The first word of message `seq` of connection `conn`. For one connection
/// it is a bijection of `seq` (splitmix is), so two messages of a connection
/// never share a pattern; across connections the connection's own hash keeps
/// them apart.
#[inline]
fn seed(conn: u32, seq: u64) -> u64 {
    splitmix(seq ^ splitmix(conn as u64 ^ 0x5EED))
}

/// Word `i` of a message is `seed + i * STEP` (a Weyl sequence): one add per
/// 8 bytes, to fill and to check. STEP is odd and none of its bytes is 0 or
/// 0xff, so stepping one word changes every byte lane, and lane 0 repeats
/// only after 256 words: a word moved by whole words within a 2 KiB span
/// never matches.
const STEP: u64 = 0x9E37_79B9_7F4A_7C15;

#[inline]
fn word(seed: u64, index: u64) -> u64 {
    seed.wrapping_add(index.wrapping_mul(STEP))
}

/// Byte `pos` of the message whose first word is `seed`.
#[inline]
fn byte_at(seed: u64, pos: usize) -> u8 {
    (word(seed, (pos / 8) as u64) >> ((pos % 8) * 8)) as u8
}

/// Fills `buf` with the bytes of message `seq` of connection `conn`, starting
/// at byte `offset` of the message.
pub fn fill(conn: u32, seq: u64, offset: usize, buf: &mut [u8]) {
    fill_seeded(seed(conn, seq), offset, buf);
}

fn fill_seeded(s: u64, offset: usize, buf: &mut [u8]) {
    // Unaligned head (up to the next word of the message), whole words, tail.
    let head = ((8 - offset % 8) % 8).min(buf.len());
    for (i, b) in buf[..head].iter_mut().enumerate() {
        *b = byte_at(s, offset + i);
    }
    let pos = offset + head;
    let mut w = word(s, (pos / 8) as u64);
    let mut chunks = buf[head..].chunks_exact_mut(8);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&w.to_le_bytes());
        w = w.wrapping_add(STEP);
    }
    let tail = chunks.into_remainder();
    let n = tail.len();
    tail.copy_from_slice(&w.to_le_bytes()[..n]);
}

/// True when `data` is exactly the bytes of message `seq` of connection
/// `conn` starting at byte `offset`. Compared where `data` lies, a word at a
/// time, with no scratch copy.
pub fn check(conn: u32, seq: u64, offset: usize, data: &[u8]) -> bool {
    check_seeded(seed(conn, seq), offset, data)
}

fn check_seeded(s: u64, offset: usize, data: &[u8]) -> bool {
    let head = ((8 - offset % 8) % 8).min(data.len());
    let mut diff = 0u8;
    for (i, &b) in data[..head].iter().enumerate() {
        diff |= b ^ byte_at(s, offset + i);
    }
    let pos = offset + head;
    let mut w = word(s, (pos / 8) as u64);
    // Differences are OR-ed, not branched on: a corrupt echo is rare, and a
    // loop without early exit runs at a word per cycle.
    let mut wdiff = 0u64;
    let mut chunks = data[head..].chunks_exact(8);
    for chunk in &mut chunks {
        wdiff |= u64::from_le_bytes(chunk.try_into().expect("8 bytes")) ^ w;
        w = w.wrapping_add(STEP);
    }
    let tail = chunks.remainder();
    let expect = w.to_le_bytes();
    for (b, e) in tail.iter().zip(expect) {
        diff |= b ^ e;
    }
    diff == 0 && wdiff == 0
}

/// Writes datagram `seq` of connection `conn` (header, then pattern) into `buf`,
/// whose length is the datagram size (at least [`HEADER_LEN`]).
pub fn encode_datagram(conn: u32, seq: u64, buf: &mut [u8]) {
    assert!(buf.len() >= HEADER_LEN, "datagram shorter than its header");
    buf[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    buf[4..8].copy_from_slice(&conn.to_le_bytes());
    buf[8..16].copy_from_slice(&seq.to_le_bytes());
    fill(conn, seq, HEADER_LEN, &mut buf[HEADER_LEN..]);
}

/// Which datagram a header names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatagramId {
    pub conn: u32,
    pub seq: u64,
}

/// Why an answered datagram is not what was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatagramError {
    /// Not the expected size (truncated, padded, or a foreign datagram).
    Size,
    /// The header is not a loadgen header.
    Header,
    /// Header fine, payload bytes differ: carries the datagram the header names.
    Payload(DatagramId),
}

/// Checks one received datagram of `expected_size` bytes; returns the
/// connection id and sequence number it carries.
pub fn decode_datagram(buf: &[u8], expected_size: usize) -> Result<DatagramId, DatagramError> {
    if buf.len() != expected_size || buf.len() < HEADER_LEN {
        return Err(DatagramError::Size);
    }
    let magic = u32::from_le_bytes(buf[0..4].try_into().unwrap());
    if magic != MAGIC {
        return Err(DatagramError::Header);
    }
    let conn = u32::from_le_bytes(buf[4..8].try_into().unwrap());
    let seq = u64::from_le_bytes(buf[8..16].try_into().unwrap());
    let id = DatagramId { conn, seq };
    if !check(conn, seq, HEADER_LEN, &buf[HEADER_LEN..]) {
        return Err(DatagramError::Payload(id));
    }
    Ok(id)
}

/// Follows one connection's byte stream of echoed `size`-byte messages and
/// checks every byte as it arrives, however the stream is split.
#[derive(Clone, Debug)]
pub struct StreamChecker {
    conn: u32,
    /// u32, like `offset`, to keep a connection's state small (the worker's
    /// `Conn`); `new` refuses a larger size.
    size: u32,
    /// Sequence number of the message being received.
    pub seq: u64,
    /// Bytes of it received so far.
    pub offset: u32,
    /// The first word of message `seq`'s pattern.
    seed: u64,
    bad: bool,
}

impl StreamChecker {
    pub fn new(conn: u32, size: usize) -> StreamChecker {
        assert!(size > 0);
        let size = u32::try_from(size).expect("message size fits in 32 bits");
        StreamChecker {
            conn,
            size,
            seq: 0,
            offset: 0,
            seed: seed(conn, 0),
            bad: false,
        }
    }

    /// The message size it was made for.
    pub fn size(&self) -> usize {
        self.size as usize
    }

    /// Checks `data`; calls `done(seq, intact)` for each message it completes.
    pub fn feed(&mut self, mut data: &[u8], mut done: impl FnMut(u64, bool)) {
        while !data.is_empty() {
            let take = ((self.size - self.offset) as usize).min(data.len());
            if !check_seeded(self.seed, self.offset as usize, &data[..take]) {
                self.bad = true;
            }
            self.offset += take as u32;
            data = &data[take..];
            if self.offset == self.size {
                done(self.seq, !self.bad);
                self.seq += 1;
                self.offset = 0;
                self.seed = seed(self.conn, self.seq);
                self.bad = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_at_offset_matches_whole() {
        let mut whole = vec![0u8; 100];
        fill(3, 9, 0, &mut whole);
        for off in 0..100 {
            let mut part = vec![0u8; 100 - off];
            fill(3, 9, off, &mut part);
            assert_eq!(part, whole[off..]);
        }
        let mut other = vec![0u8; 100];
        fill(4, 9, 0, &mut other);
        assert_ne!(other, whole);
        fill(3, 10, 0, &mut other);
        assert_ne!(other, whole);
    }
}
