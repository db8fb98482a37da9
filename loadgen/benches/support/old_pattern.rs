//! The payload pattern loadgen had before the Weyl sequence (commit 20a9dba,
//! `loadgen/src/pattern.rs`): a splitmix hash per 8-byte word, and a check
//! that fills a zeroed 512-byte scratch buffer and compares. Kept here only
//! so that the bench compares old and new back to back on the same machine.

#![allow(dead_code)]

#[inline]
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[inline]
fn seed(conn: u32, seq: u64) -> u64 {
    splitmix(((conn as u64) << 40) ^ seq.rotate_left(17) ^ 0x5EED)
}

#[inline]
fn word(seed: u64, index: u64) -> u64 {
    splitmix(seed.wrapping_add(index.wrapping_mul(0xD6E8_FEB8_6659_FD93)))
}

/// Fills `buf` with the bytes of message `seq` of connection `conn`, starting
/// at byte `offset` of the message.
pub fn fill(conn: u32, seq: u64, offset: usize, buf: &mut [u8]) {
    let s = seed(conn, seq);
    let mut pos = offset;
    let mut i = 0;
    // Unaligned head, then whole 8-byte words.
    while i < buf.len() && pos % 8 != 0 {
        buf[i] = (word(s, (pos / 8) as u64) >> ((pos % 8) * 8)) as u8;
        i += 1;
        pos += 1;
    }
    let mut chunks = buf[i..].chunks_exact_mut(8);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&word(s, (pos / 8) as u64).to_le_bytes());
        pos += 8;
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let w = word(s, (pos / 8) as u64).to_le_bytes();
        let n = tail.len();
        tail.copy_from_slice(&w[..n]);
    }
}

/// True when `data` is exactly the bytes of message `seq` of connection
/// `conn` starting at byte `offset`.
pub fn check(conn: u32, seq: u64, offset: usize, data: &[u8]) -> bool {
    let mut expect = [0u8; 512];
    let mut pos = offset;
    for chunk in data.chunks(expect.len()) {
        let e = &mut expect[..chunk.len()];
        fill(conn, seq, pos, e);
        if e != chunk {
            return false;
        }
        pos += chunk.len();
    }
    true
}
