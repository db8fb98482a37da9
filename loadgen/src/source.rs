//! Source addresses (`--local-addrs`): more connections than one source
//! address has ephemeral ports.
//!
//! A TCP connection is named by (source address, source port, destination
//! address, destination port); with one source address and one server, only
//! `ip_local_port_range` ports exist, about 28,000 by default. Spreading the
//! connections over several source addresses multiplies that. Each socket is
//! bound to its address before `connect` with `IP_BIND_ADDRESS_NO_PORT`, so
//! the kernel picks the port at `connect` time, for the full 4-tuple, instead
//! of reserving one at `bind` time (which would make every bind compete for
//! the same port space and fail early with `EADDRINUSE`).
//!
//! Connection `id` uses address `id % n`, so the addresses are filled evenly
//! whatever the number of threads.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use sockbench::net::{self, Endpoint, Transport};
use sockbench::sys::{self, SockAddr};

/// The most addresses one `--local-addrs` list may expand to (a /16): a
/// typo like `10.0.0.1-10.9.0.1` should be an error, not a million entries.
pub const MAX_SOURCE_ADDRS: u64 = 65_536;

/// The parsed `--local-addrs` list: the source addresses, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceAddrs {
    addrs: Vec<IpAddr>,
}

impl SourceAddrs {
    /// No `--local-addrs`: the kernel chooses the source address.
    pub fn kernel_chosen() -> SourceAddrs {
        SourceAddrs::default()
    }

    pub fn addrs(&self) -> &[IpAddr] {
        &self.addrs
    }

    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    /// The source address of connection `id`, or `None` when the kernel chooses.
    pub fn for_conn(&self, id: u64) -> Option<IpAddr> {
        if self.addrs.is_empty() {
            None
        } else {
            Some(self.addrs[(id % self.addrs.len() as u64) as usize])
        }
    }
}

/// Parses `--local-addrs`: comma-separated addresses and inclusive ranges,
/// `127.0.0.1-127.0.0.4,10.0.0.7`, `[::1]`, `fd00::1-fd00::8`.
pub fn parse_local_addrs(s: &str) -> Result<SourceAddrs, String> {
    let mut addrs = Vec::new();
    // A set beside the list: a linear `contains` made 65,536 addresses take seconds.
    let mut seen = std::collections::HashSet::new();
    for item in s.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(format!(
                "{s:?}: an empty entry; give addresses like 127.0.0.1-127.0.0.4,[::1]"
            ));
        }
        let (lo, hi) = match item.split_once('-') {
            Some((a, b)) => (parse_ip(a)?, parse_ip(b)?),
            None => {
                let a = parse_ip(item)?;
                (a, a)
            }
        };
        let (lo_n, hi_n) = match (lo, hi) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) as u128, u32::from(b) as u128),
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b)),
            _ => return Err(format!("{item:?}: a range must not mix IPv4 and IPv6")),
        };
        if hi_n < lo_n {
            return Err(format!("{item:?}: the range ends before it starts"));
        }
        // In u128, where `hi - lo + 1` cannot wrap (an IPv6 range can span 2^64 and more).
        if addrs.len() as u128 + (hi_n - lo_n) + 1 > MAX_SOURCE_ADDRS as u128 {
            return Err(format!("{s:?}: more than {MAX_SOURCE_ADDRS} addresses"));
        }
        for n in lo_n..=hi_n {
            let ip = match lo {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(n as u32)),
                IpAddr::V6(_) => IpAddr::V6(n.into()),
            };
            if let Some(why) = not_a_source(ip) {
                return Err(format!("{ip} {why}; give addresses of this host's interfaces"));
            }
            if seen.insert(ip) {
                addrs.push(ip);
            }
        }
    }
    Ok(SourceAddrs { addrs })
}

/// Why `ip` cannot be a connection's source address, if it cannot: the
/// unspecified address (the kernel would choose, so it is no source of its
/// own), broadcast and multicast (no connection comes from one).
fn not_a_source(ip: IpAddr) -> Option<&'static str> {
    if ip.is_unspecified() {
        Some("is the unspecified address (the kernel would pick the source; leave --local-addrs out for that)")
    } else if ip.is_multicast() {
        Some("is a multicast address, which no connection comes from")
    } else if matches!(ip, IpAddr::V4(v4) if v4.is_broadcast()) {
        Some("is the broadcast address, which no connection comes from")
    } else {
        None
    }
}

/// Checks that every source address is one of this host's: binds a socket
/// of the transport's type to each (port 0, with `IP_BIND_ADDRESS_NO_PORT`,
/// so no port is taken). Names the first that is not, before any connect,
/// where it would only show as a connect error.
pub fn check_local(sources: &SourceAddrs, transport: Transport) -> Result<(), String> {
    let ty = if transport.is_stream() {
        libc::SOCK_STREAM
    } else {
        libc::SOCK_DGRAM
    };
    for &addr in sources.addrs() {
        let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
        let bound = sys::socket(domain, ty, true).and_then(|fd| bind_source(fd.as_fd(), addr));
        match bound {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
                return Err(format!(
                    "--local-addrs {addr}: not an address of this host ({e}); give addresses \
                     assigned to an interface here (see `ip addr`)"
                ))
            }
            Err(e) => return Err(format!("--local-addrs {addr}: cannot bind a socket to it: {e}")),
        }
    }
    Ok(())
}

fn parse_ip(s: &str) -> Result<IpAddr, String> {
    let t = s.trim();
    let bare = t.strip_prefix('[').and_then(|x| x.strip_suffix(']')).unwrap_or(t);
    bare.parse::<IpAddr>()
        .map_err(|_| format!("{s:?} is not an IP address like 127.0.0.2 or [::1]"))
}

/// Ephemeral ports one source address has towards one server:
/// `/proc/sys/net/ipv4/ip_local_port_range` (inclusive; it also governs IPv6).
pub fn ports_per_source() -> io::Result<u64> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")?;
    parse_port_range(&text).ok_or_else(|| io::Error::other(format!("ip_local_port_range reads {text:?}")))
}

fn parse_port_range(text: &str) -> Option<u64> {
    let mut it = text.split_whitespace().map(|x| x.parse::<u64>());
    match (it.next(), it.next()) {
        (Some(Ok(lo)), Some(Ok(hi))) if hi >= lo => Some(hi - lo + 1),
        _ => None,
    }
}

/// Checks that `conns` connections to `server` fit in the source ports, and
/// that every source address has the server's address family. The message
/// names `--local-addrs`.
/// A warning when the connections take more than half of each source
/// address's ports toward the server (TCP; `None` otherwise). Linux's
/// connect-time port search tries ports of one parity first (even, since
/// 4.6) and checks each one's 4-tuple: once that half is taken, every
/// connect walks all of it before it looks at the other, a millisecond or
/// more per connect at 28,000 ports (`__inet_check_established` was 72% of
/// loadgen's CPU at 25,000 connections per address, docs/scaling.md).
pub fn port_search_warning(sources: &SourceAddrs, server: &Endpoint, conns: u64, ports: u64) -> Option<String> {
    let Endpoint::Inet(server_addr) = server else {
        return None;
    };
    let n = sources.addrs().len().max(1) as u64;
    let per_addr = conns.div_ceil(n);
    if per_addr <= ports / 2 {
        return None;
    }
    let need = conns.div_ceil((ports / 2).max(1));
    Some(format!(
        "{per_addr} connections per source address take more than half of its {ports} ports towards \
         {server_addr}: each connect then searches the full half (slow, and retried connects keep the \
         CPU busy); give {need} or more addresses with --local-addrs"
    ))
}

pub fn check_capacity(
    sources: &SourceAddrs,
    transport: Transport,
    server: &Endpoint,
    conns: u64,
    ports: u64,
) -> Result<(), String> {
    let Endpoint::Inet(server_addr) = server else {
        if !sources.is_empty() {
            return Err(format!("--local-addrs applies to tcp and udp, not to {transport}"));
        }
        return Ok(()); // Unix sockets have no ports.
    };
    if let Some(bad) = sources.addrs().iter().find(|a| a.is_ipv4() != server_addr.is_ipv4()) {
        return Err(format!(
            "--local-addrs {bad}: the server {server_addr} is {}, the source must be too",
            if server_addr.is_ipv4() { "IPv4" } else { "IPv6" }
        ));
    }
    let n = sources.addrs().len().max(1) as u64;
    if conns <= n * ports {
        return Ok(());
    }
    let need = conns.div_ceil(ports);
    let example = match server_addr.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => format!(" (on loopback: --local-addrs 127.0.0.1-127.0.0.{need})"),
        _ => String::new(),
    };
    Err(if sources.is_empty() {
        format!(
            "--conns {conns}: one source address has only {ports} ports towards {server_addr} \
             (ip_local_port_range); spread the connections over {need} or more addresses with \
             --local-addrs{example}"
        )
    } else {
        format!(
            "--conns {conns}: the {n} addresses of --local-addrs have {ports} ports each towards \
             {server_addr} ({} in all); give {need} or more addresses{example}",
            n * ports
        )
    })
}

/// Binds `fd` to `addr` with port 0, the port to be chosen at `connect`
/// (`IP_BIND_ADDRESS_NO_PORT`; without it, `bind` would reserve a port for
/// every 4-tuple and the ports of one address would run out at about 28,000
/// whatever the destinations).
pub fn bind_source(fd: BorrowedFd<'_>, addr: IpAddr) -> io::Result<()> {
    // Datagram sockets ignore the option on older kernels; bind still works.
    sys::setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1)?;
    sys::bind(fd, &SockAddr::from_inet(SocketAddr::new(addr, 0)))
}

/// A client socket to `server` from `source` (or the kernel's choice):
/// `net::connect_stream` / `net::connect_datagram` with a bind in between.
/// `local` is the unixgram client's own socket path, as `connect_datagram` takes.
pub fn connect_from(
    transport: Transport,
    server: &Endpoint,
    local: Option<&Endpoint>,
    source: Option<IpAddr>,
) -> io::Result<OwnedFd> {
    let Some(source) = source else {
        return if transport.is_stream() {
            net::connect_stream(server, true)
        } else {
            net::connect_datagram(server, local, true)
        };
    };
    let ty = if transport.is_stream() {
        libc::SOCK_STREAM
    } else {
        libc::SOCK_DGRAM
    };
    let domain = if source.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let fd = sys::socket(domain, ty, true)?;
    bind_source(fd.as_fd(), source)?;
    match sys::connect(fd.as_fd(), &server.sockaddr()?) {
        Ok(()) => Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(fd),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_ranges() {
        let s = parse_local_addrs("127.0.0.1-127.0.0.4, [::1],10.0.0.255-10.0.1.0").unwrap();
        let want: Vec<IpAddr> = [
            "127.0.0.1",
            "127.0.0.2",
            "127.0.0.3",
            "127.0.0.4",
            "::1",
            "10.0.0.255",
            "10.0.1.0",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        assert_eq!(s.addrs(), &want[..]);
        assert_eq!(s.for_conn(0), Some(want[0]));
        assert_eq!(s.for_conn(8), Some(want[1]));
        for bad in [
            "",
            "1.2.3",
            "127.0.0.4-127.0.0.1",
            "127.0.0.1-::1",
            "10.0.0.0-10.2.0.0",
            "a,b",
            "1.2.3.4,",
        ] {
            assert!(parse_local_addrs(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn capacity_names_the_flag() {
        let server = Endpoint::Inet("127.0.0.1:7000".parse().unwrap());
        let none = SourceAddrs::kernel_chosen();
        assert!(check_capacity(&none, Transport::Tcp, &server, 28_232, 28_232).is_ok());
        let e = check_capacity(&none, Transport::Tcp, &server, 100_000, 28_232).unwrap_err();
        assert!(e.contains("--local-addrs 127.0.0.1-127.0.0.4"), "{e}");
        let four = parse_local_addrs("127.0.0.1-127.0.0.4").unwrap();
        assert!(check_capacity(&four, Transport::Tcp, &server, 100_000, 28_232).is_ok());
        let e = check_capacity(&four, Transport::Tcp, &server, 200_000, 28_232).unwrap_err();
        assert!(e.contains("give 8 or more"), "{e}");
        let v6 = parse_local_addrs("[::1]").unwrap();
        assert!(check_capacity(&v6, Transport::Tcp, &server, 1, 28_232)
            .unwrap_err()
            .contains("IPv4"));
        assert_eq!(parse_port_range("32768\t60999\n"), Some(28_232));
    }

    #[test]
    fn past_half_of_the_ports_per_address_the_port_search_is_named() {
        let server = Endpoint::Inet("127.0.0.1:7000".parse().unwrap());
        let four = parse_local_addrs("127.0.0.1-127.0.0.4").unwrap();
        assert_eq!(
            port_search_warning(&four, &server, 56_000, 28_232),
            None,
            "14,000 each: under half"
        );
        let w = port_search_warning(&four, &server, 100_000, 28_232).expect("25,000 each: past half");
        assert!(w.contains("give 8 or more addresses with --local-addrs"), "{w}");
        let unix = Endpoint::Unix("/tmp/x".into());
        assert_eq!(port_search_warning(&four, &unix, 100_000, 28_232), None);
    }

    #[test]
    fn huge_ranges_and_addresses_no_connection_comes_from_are_refused() {
        // 2^64 addresses: once wrapped past the cap and hung.
        let e = parse_local_addrs("::-::ffff:ffff:ffff:ffff").unwrap_err();
        assert!(e.contains("more than 65536"), "{e}");
        assert!(parse_local_addrs("::1-::ffff:ffff:ffff:ffff:ffff").is_err());
        assert!(parse_local_addrs("10.0.0.0-10.0.255.255").is_ok(), "exactly the cap");
        for (bad, why) in [
            ("0.0.0.0", "unspecified"),
            ("[::]", "unspecified"),
            ("255.255.255.255", "broadcast"),
            ("224.0.0.1", "multicast"),
            ("ff02::1", "multicast"),
            ("223.255.255.255-224.0.0.0", "multicast"),
        ] {
            let e = parse_local_addrs(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn a_source_not_on_this_host_is_named() {
        let here = parse_local_addrs("127.0.0.1").unwrap();
        assert_eq!(check_local(&here, Transport::Tcp), Ok(()));
        // TEST-NET-1 (RFC 5737): assigned to no host.
        let elsewhere = parse_local_addrs("127.0.0.1,192.0.2.1").unwrap();
        for t in [Transport::Tcp, Transport::Udp] {
            let e = check_local(&elsewhere, t).unwrap_err();
            assert!(
                e.contains("--local-addrs 192.0.2.1") && e.contains("not an address of this host"),
                "{e}"
            );
        }
    }
}
