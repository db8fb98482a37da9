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
