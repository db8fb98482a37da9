//! Property tests of everything in loadgen that parses input: the echo and
//! datagram checkers (bytes from a server), and the command line's durations,
//! rates and addresses.

use loadgen::cli::{parse_duration, parse_rate};
use loadgen::pattern::{self, DatagramError, DatagramId, StreamChecker, HEADER_LEN};
use proptest::prelude::*;
use sockbench::net::{endpoint_from_flags, parse_inet, Transport};

fn message_stream(conn: u32, size: usize, count: u64) -> Vec<u8> {
    let mut v = vec![0u8; size * count as usize];
    for (seq, chunk) in v.chunks_mut(size).enumerate() {
        pattern::fill(conn, seq as u64, 0, chunk);
    }
    v
}

/// Feeds `data` to a checker in pieces cut at `cuts`; returns (seq, intact) per completed message.
fn feed_in_pieces(conn: u32, size: usize, data: &[u8], cuts: &[usize]) -> Vec<(u64, bool)> {
    let mut checker = StreamChecker::new(conn, size);
    let mut done = Vec::new();
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    cuts.sort_unstable();
    let mut last = 0;
    for c in cuts.into_iter().chain([data.len()]) {
        checker.feed(&data[last..c], |seq, ok| done.push((seq, ok)));
        last = c;
    }
    done
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn datagram_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), size in 0usize..300) {
        let _ = pattern::decode_datagram(&bytes, size);
    }

    #[test]
    fn datagrams_round_trip(conn in any::<u32>(), seq in any::<u64>(), size in HEADER_LEN..2000) {
        let mut buf = vec![0u8; size];
        pattern::encode_datagram(conn, seq, &mut buf);
        prop_assert_eq!(pattern::decode_datagram(&buf, size), Ok(DatagramId { conn, seq }));
        prop_assert_eq!(pattern::decode_datagram(&buf[..size - 1], size), Err(DatagramError::Size));
    }

    #[test]
    fn any_changed_byte_of_a_datagram_is_caught(conn in any::<u32>(), seq in any::<u64>(), size in HEADER_LEN..600, at in any::<usize>(), flip in 1u8..=255) {
        let mut buf = vec![0u8; size];
        pattern::encode_datagram(conn, seq, &mut buf);
        buf[at % size] ^= flip;
        // A changed header byte may still parse, but never as the original (conn, seq).
        prop_assert_ne!(pattern::decode_datagram(&buf, size), Ok(DatagramId { conn, seq }));
    }

    #[test]
    fn another_connections_datagram_is_not_taken_for_ours(a in any::<u32>(), b in any::<u32>(), seq in any::<u64>(), size in (HEADER_LEN + 8)..600) {
        prop_assume!(a != b);
        let mut buf = vec![0u8; size];
        pattern::encode_datagram(a, seq, &mut buf);
        // Splice b's header onto a's payload: a server that mixed buffers.
        buf[4..8].copy_from_slice(&b.to_le_bytes());
        prop_assert_eq!(pattern::decode_datagram(&buf, size), Err(DatagramError::Payload(DatagramId { conn: b, seq })));
    }

    #[test]
    fn stream_checker_accepts_any_split_of_a_correct_stream(conn in any::<u32>(), size in 1usize..700, count in 1u64..12, cuts in proptest::collection::vec(any::<usize>(), 0..20)) {
        let data = message_stream(conn, size, count);
        let done = feed_in_pieces(conn, size, &data, &cuts);
        prop_assert_eq!(done, (0..count).map(|s| (s, true)).collect::<Vec<_>>());
    }

    #[test]
    fn stream_checker_flags_exactly_the_corrupted_message(conn in any::<u32>(), size in 1usize..700, count in 1u64..12, at in any::<usize>(), flip in 1u8..=255, cuts in proptest::collection::vec(any::<usize>(), 0..20)) {
        let mut data = message_stream(conn, size, count);
        let at = at % data.len();
        data[at] ^= flip;
        let done = feed_in_pieces(conn, size, &data, &cuts);
        let bad = (at / size) as u64;
        prop_assert_eq!(done, (0..count).map(|s| (s, s != bad)).collect::<Vec<_>>());
    }

    #[test]
    fn stream_checker_catches_another_connections_bytes(a in any::<u32>(), b in any::<u32>(), size in 4usize..300) {
        prop_assume!(a != b);
        let data = message_stream(b, size, 1);
        let done = feed_in_pieces(a, size, &data, &[]);
        prop_assert_eq!(done, vec![(0, false)]);
    }

    #[test]
    fn duration_parser_never_panics(s in "\\PC{0,12}") {
        let _ = parse_duration(&s);
    }

    #[test]
    fn durations_parse_to_their_value(n in 0u64..10_000, unit in prop::sample::select(vec!["ms", "s", "m", "us", ""])) {
        let d = parse_duration(&format!("{n}{unit}")).unwrap();
        let ns = match unit { "ms" => n * 1_000_000, "s" | "" => n * 1_000_000_000, "m" => n * 60_000_000_000, _ => n * 1000 };
        // Parsed through f64: exact to within a nanosecond or so.
        prop_assert!((d.as_nanos() as i128 - ns as i128).abs() <= 1 + ns as i128 / 1_000_000_000_000, "{n}{unit} -> {d:?}");
    }

    #[test]
    fn rate_parser_never_panics_and_accepts_only_positive_finite(s in "[0-9.kKMe+-]{0,10}|\\PC{0,10}") {
        if let Ok(r) = parse_rate(&s) {
            prop_assert!(r > 0.0 && r.is_finite() && r <= 1e9);
        }
    }

    #[test]
    fn rates_parse_to_their_value(n in 1u64..1_000_000) {
        prop_assert_eq!(parse_rate(&n.to_string()).unwrap(), n as f64);
        prop_assert_eq!(parse_rate(&format!("{n}k")).unwrap(), n as f64 * 1e3);
    }

    // Only digits, dots, colons and brackets: no host names, so no resolver lookups.
    #[test]
    fn address_parser_never_panics(s in "[0-9.:\\[\\]]{0,24}") {
        if let Ok(a) = parse_inet(&s) {
            prop_assert_eq!(a, s.parse::<std::net::SocketAddr>().unwrap());
        }
        let _ = endpoint_from_flags(Transport::Tcp, Some(&s), None, "127.0.0.1:1");
    }

    #[test]
    fn addresses_round_trip(ip in any::<std::net::IpAddr>(), port in any::<u16>()) {
        let a = std::net::SocketAddr::new(ip, port);
        prop_assert_eq!(parse_inet(&a.to_string()).unwrap(), a);
    }
}

/// Fault-detection properties of the pattern itself: what a server that mixes
/// up messages, positions or connections would produce must not pass.
mod pattern_faults {
    use super::*;

    fn message(conn: u32, seq: u64, size: usize) -> Vec<u8> {
        let mut m = vec![0u8; size];
        pattern::fill(conn, seq, 0, &mut m);
        m
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn another_message_of_the_same_connection_is_caught(conn in any::<u32>(), a in any::<u64>(), b in any::<u64>(), size in 8usize..700, offset in 0usize..64) {
            prop_assume!(a != b);
            let offset = offset.min(size - 8);
            let theirs = message(conn, b, size);
            prop_assert!(!pattern::check(conn, a, offset, &theirs[offset..]));
        }

        #[test]
        fn another_connections_message_at_the_same_seq_is_caught(a in any::<u32>(), b in any::<u32>(), seq in any::<u64>(), size in 8usize..700) {
            prop_assume!(a != b);
            prop_assert!(!pattern::check(a, seq, 0, &message(b, seq, size)));
        }

        #[test]
        fn bytes_from_another_position_are_caught(conn in any::<u32>(), seq in any::<u64>(), size in 16usize..700, from in any::<usize>(), to in any::<usize>(), len in 8usize..64) {
            let mut m = message(conn, seq, size);
            let len = len.min(size / 2);
            let (from, to) = (from % (size - len + 1), to % (size - len + 1));
            prop_assume!(from != to);
            m.copy_within(from..from + len, to);
            prop_assert!(!pattern::check(conn, seq, 0, &m));
        }

        #[test]
        fn a_dropped_or_repeated_byte_is_caught(conn in any::<u32>(), size in 16usize..300, count in 2u64..8, at in any::<usize>(), repeat in any::<bool>()) {
            let mut data = message_stream(conn, size, count);
            // Early enough that at least 8 shifted bytes land in messages that
            // complete (a drop in the last message only leaves it unfinished,
            // which the worker reports as a timeout).
            let at = at % ((count as usize - 1) * size - 8);
            if repeat {
                data.insert(at, data[at]);
            } else {
                data.remove(at);
            }
            let done = feed_in_pieces(conn, size, &data, &[]);
            prop_assert!(done.iter().any(|&(_, ok)| !ok), "fault at byte {} not caught: {:?}", at, done);
        }

        #[test]
        fn check_agrees_with_fill_at_every_offset_and_split(conn in any::<u32>(), seq in any::<u64>(), size in 1usize..300, start in any::<usize>(), flip_at in any::<usize>(), flip in 1u8..=255) {
            let m = message(conn, seq, size);
            let start = start % size;
            prop_assert!(pattern::check(conn, seq, start, &m[start..]));
            let mut part = m[start..].to_vec();
            let i = flip_at % part.len();
            part[i] ^= flip;
            prop_assert!(!pattern::check(conn, seq, start, &part));
        }
    }
}
