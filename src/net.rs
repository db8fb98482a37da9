//! Transports, address parsing and socket setup, shared by `server` and `loadgen`.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::sys::{self, SockAddr};

/// `SO_RCVBUF` of every TCP listener (and so of every accepted connection):
/// the pending-output cap, which the kernel doubles for its bookkeeping.
pub const TCP_RCVBUF: usize = crate::backend::MAX_PENDING_BYTES;
/// What a datagram socket asks for as its receive and send buffers (the
/// kernel doubles it for bookkeeping: `SO_SNDBUF` then reads 8 MiB).
const DATAGRAM_BUF_BYTES: i32 = 4 << 20;

/// The four socket kinds every backend serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Transport {
    /// TCP stream over IPv4 or IPv6.
    Tcp,
    /// UDP datagrams over IPv4 or IPv6.
    Udp,
    /// Unix-domain stream socket.
    Unix,
    /// Unix-domain datagram socket.
    Unixgram,
}

impl Transport {
    pub fn is_stream(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Unix)
    }

    pub fn is_unix(self) -> bool {
        matches!(self, Transport::Unix | Transport::Unixgram)
    }

    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Unix => "unix",
            Transport::Unixgram => "unixgram",
        }
    }

    fn sock_type(self) -> libc::c_int {
        if self.is_stream() {
            libc::SOCK_STREAM
        } else {
            libc::SOCK_DGRAM
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a socket lives: an IP address and port, or a filesystem path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Inet(SocketAddr),
    Unix(PathBuf),
}

impl Endpoint {
    pub fn sockaddr(&self) -> io::Result<SockAddr> {
        match self {
            Endpoint::Inet(a) => Ok(SockAddr::from_inet(*a)),
            Endpoint::Unix(p) => SockAddr::from_path(p),
        }
    }

    fn domain(&self) -> libc::c_int {
        match self {
            Endpoint::Inet(SocketAddr::V4(_)) => libc::AF_INET,
            Endpoint::Inet(SocketAddr::V6(_)) => libc::AF_INET6,
            Endpoint::Unix(_) => libc::AF_UNIX,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Inet(a) => write!(f, "{a}"),
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// What a user typed wrong about an address. Each message names the flag.
#[derive(Debug, thiserror::Error)]
pub enum AddrError {
    #[error("--addr {0:?}: expected HOST:PORT, e.g. 127.0.0.1:7000 or [::1]:7000")]
    BadInet(String),
    #[error("--addr {0:?}: host does not resolve to an address")]
    Unresolved(String),
    #[error("--{flag} is not used with --transport {transport}; use --{want}")]
    WrongFlag {
        flag: &'static str,
        transport: Transport,
        want: &'static str,
    },
    #[error("--path is required with --transport {0}")]
    MissingPath(Transport),
    #[error("--path {0:?}: {1}")]
    BadPath(PathBuf, String),
}

/// Parses `HOST:PORT` (IPv6 in brackets, `[::1]:7000`); a host name is
/// resolved and its first address used.
pub fn parse_inet(s: &str) -> Result<SocketAddr, AddrError> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(|| AddrError::BadInet(s.to_string()))?;
    let numeric = host.chars().all(|c| c.is_ascii_digit() || c == '.');
    if host.is_empty() || numeric || port.parse::<u16>().is_err() || (host.contains(':') && !host.starts_with('[')) {
        // A numeric host that did not parse above is malformed (e.g. `1.2.3`); do not
        // let the resolver read it the legacy inet_aton way.
        return Err(AddrError::BadInet(s.to_string()));
    }
    (s.to_socket_addrs().map_err(|_| AddrError::Unresolved(s.to_string()))?)
        .next()
        .ok_or_else(|| AddrError::Unresolved(s.to_string()))
}

/// Builds the endpoint from `--addr`/`--path` for a transport, checking that
/// the flag fits the transport. `default_addr` is used when neither is given.
pub fn endpoint_from_flags(
    transport: Transport,
    addr: Option<&str>,
    path: Option<&Path>,
    default_addr: &str,
) -> Result<Endpoint, AddrError> {
    if transport.is_unix() {
        if addr.is_some() {
            return Err(AddrError::WrongFlag {
                flag: "addr",
                transport,
                want: "path",
            });
        }
        let path = path.ok_or(AddrError::MissingPath(transport))?;
        SockAddr::from_path(path).map_err(|e| AddrError::BadPath(path.to_path_buf(), e.to_string()))?;
        Ok(Endpoint::Unix(path.to_path_buf()))
    } else {
        if path.is_some() {
            return Err(AddrError::WrongFlag {
                flag: "path",
                transport,
                want: "addr",
            });
        }
        Ok(Endpoint::Inet(parse_inet(addr.unwrap_or(default_addr))?))
    }
}

/// Options for [`bind_server`].
#[derive(Clone, Copy, Debug)]
pub struct BindOptions {
    /// Set `SO_REUSEPORT` (IP transports only), so that several sockets can
    /// share the address and the kernel spreads flows across them.
    pub reuseport: bool,
    /// Create the socket with `O_NONBLOCK`.
    pub nonblocking: bool,
    /// `listen(2)` backlog for stream sockets.
    pub backlog: i32,
}

impl Default for BindOptions {
    fn default() -> Self {
        BindOptions {
            reuseport: true,
            nonblocking: false,
            backlog: 4096,
        }
    }
}

/// Creates, configures and binds a server socket, and listens on it if the
/// transport is a stream. For Unix transports a stale socket file (one that
/// nobody listens on) is removed first; a live one of either kind is an
/// `AddrInUse` error, and any other file an `AlreadyExists` one. For IP
/// transports, the first socket of a server should come after [`claim_inet`].
pub fn bind_server(transport: Transport, endpoint: &Endpoint, opts: BindOptions) -> io::Result<OwnedFd> {
    let fd = sys::socket(endpoint.domain(), transport.sock_type(), opts.nonblocking)?;
    match endpoint {
        Endpoint::Inet(a) => {
            if transport == Transport::Tcp {
                // TIME_WAIT connections of an earlier run do not block a restart.
                // Not on UDP, where it would let any other SO_REUSEADDR socket share the port.
                sys::setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
            }
            if opts.reuseport {
                sys::setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
            }
            if a.is_ipv6() {
                // An explicit [::]:port serves only IPv6; clients pick the family.
                sys::setsockopt_int(fd.as_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
            }
            if transport == Transport::Tcp {
                // Echoes go out at once (no Nagle), as in any request/response
                // server: otherwise an echo written while the previous one is
                // unacknowledged waits for the client's next segment (about one
                // message interval; 1.9 ms at 536 msgs/s per connection). Linux
                // accepted sockets inherit this from the listener.
                sys::setsockopt_int(fd.as_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
                // A fixed receive buffer instead of autotuning (up to
                // tcp_rmem's max, ~6 MiB): it bounds what a client that stops
                // reading its echo can make the server hold. epoll and the
                // blocking backends stop reading at the pending-output cap and
                // leave the rest in this buffer; io_uring's multishot receive
                // keeps emptying it until its cancel lands, so its overshoot is
                // at most this. Every backend gets the same socket, so the
                // comparison stays fair. Inherited by accepted sockets.
                sys::setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, TCP_RCVBUF as i32)?;
            }
        }
        Endpoint::Unix(p) => remove_stale_socket(p)?,
    }
    if !transport.is_stream() {
        // Room for bursts of 64 KiB datagrams, and (unixgram) for echoes
        // that clients have not read yet (see `backend/peer_budget.rs`). The
        // kernel caps these at rmem_max/wmem_max unless we may force them
        // (root): without it, a small buffer leaves less room under pressure.
        for (forced, plain) in [
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        ] {
            if sys::setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, forced, DATAGRAM_BUF_BYTES).is_err() {
                let _ = sys::setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, plain, DATAGRAM_BUF_BYTES);
            }
        }
    }
    sys::bind(fd.as_fd(), &endpoint.sockaddr()?)?;
    if transport.is_stream() {
        sys::listen(fd.as_fd(), opts.backlog)?;
    }
    Ok(fd)
}

/// Removes a stale socket file at `path`, or refuses a live one.
///
/// A socket file is live if anything accepts a connection on it, of either
/// kind: a `connect` with the wrong socket type fails with `EPROTOTYPE`, so
/// the probe tries a stream and then a datagram socket. Only `ECONNREFUSED`
/// (no socket of that type is bound to the file any more) makes the file
/// stale. Any other answer (`EACCES`, ...) leaves the file alone and is
/// returned. The probe is non-blocking, so a stream listener with a full
/// backlog (`EAGAIN`) counts as live rather than stalling the start.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "exists and is not a socket",
        ));
    }
    let addr = SockAddr::from_path(path)?;
    for ty in [libc::SOCK_STREAM, libc::SOCK_DGRAM] {
        let probe = sys::socket(libc::AF_UNIX, ty, true)?;
        match sys::connect(probe.as_fd(), &addr) {
            Ok(()) => return Err(io::Error::from_raw_os_error(libc::EADDRINUSE)),
            Err(e) => match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EINPROGRESS) => return Err(io::Error::from_raw_os_error(libc::EADDRINUSE)),
                Some(libc::EPROTOTYPE) => continue, // a live socket of the other kind, or none: ask the other kind
                Some(libc::ECONNREFUSED) => return std::fs::remove_file(path),
                _ => return Err(e),
            },
        }
    }
    // Neither type got past EPROTOTYPE: not a socket we can tell apart; leave it.
    Err(io::Error::from_raw_os_error(libc::EADDRINUSE))
}

/// A socket file's identity: a file put in its place later has another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    /// The identity of whatever is at `path` now (not following a symlink).
    pub fn of(path: &Path) -> io::Result<FileId> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(path)?;
        Ok(FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

/// Removes the socket file at `path` only if it is still the one with
/// identity `bound` (recorded right after `bind`), so a file someone put in
/// its place while the server ran is never deleted. Returns whether it
/// removed the file. A replacement that happens between the check and the
/// unlink is not caught: no unlink-if-inode call exists.
pub fn remove_socket_file(path: &Path, bound: FileId) -> bool {
    match FileId::of(path) {
        Ok(now) if now == bound => std::fs::remove_file(path).is_ok(),
        _ => false,
    }
}

/// Checks that no other socket holds the IP address `addr` for `transport`,
/// and resolves port 0 to a free port. Returns the address to bind.
///
/// The server's sockets use `SO_REUSEPORT` so that its per-thread sockets can
/// share the address; the kernel would let a second server with the same
/// option (and the same effective UID) share it as well, and split the
/// clients between the two without a word. So first a plain socket, without
/// `SO_REUSEPORT`, is bound to the address: if anything holds it (a listener,
/// or a bound UDP socket, reuseport or not) this fails with `EADDRINUSE`.
/// The probe is closed before the server binds with `SO_REUSEPORT`.
///
/// The residual race: a process of the same UID that binds the address with
/// `SO_REUSEPORT` between the probe's close and the server's bind (a few
/// microseconds) still joins the group. Closing it would take an eBPF
/// reuseport program or `SO_REUSEPORT` left off, which the per-thread sockets need.
pub fn claim_inet(transport: Transport, addr: SocketAddr) -> io::Result<SocketAddr> {
    let endpoint = Endpoint::Inet(addr);
    let probe = sys::socket(endpoint.domain(), transport.sock_type(), false)?;
    if transport == Transport::Tcp {
        // Only so that connections in TIME_WAIT from an earlier run do not
        // count as holders; a listening socket still conflicts.
        sys::setsockopt_int(probe.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    }
    if addr.is_ipv6() {
        sys::setsockopt_int(probe.as_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    }
    sys::bind(probe.as_fd(), &endpoint.sockaddr()?)?;
    match local_endpoint(probe.as_fd())? {
        Endpoint::Inet(resolved) => Ok(resolved),
        Endpoint::Unix(_) => Err(io::Error::other("probe bound to a path")),
    }
}

/// The address a socket is bound to, e.g. to learn the port after binding port 0.
pub fn local_endpoint(fd: BorrowedFd<'_>) -> io::Result<Endpoint> {
    let addr = sys::getsockname(fd)?;
    if let Some(a) = addr.as_inet() {
        Ok(Endpoint::Inet(a))
    } else if let Some(p) = addr.as_path() {
        Ok(Endpoint::Unix(p))
    } else {
        Err(io::Error::other("socket has no address"))
    }
}

/// A client socket for `transport`, connected (streams) or not yet (datagrams).
/// With `nonblocking` a stream connect may return `EINPROGRESS` as `Ok`.
pub fn connect_stream(endpoint: &Endpoint, nonblocking: bool) -> io::Result<OwnedFd> {
    let fd = sys::socket(endpoint.domain(), libc::SOCK_STREAM, nonblocking)?;
    match sys::connect(fd.as_fd(), &endpoint.sockaddr()?) {
        Ok(()) => Ok(fd),
        Err(e) if nonblocking && e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(fd),
        Err(e) => Err(e),
    }
}

/// A datagram client socket bound to `local` (required for `unixgram`, where
/// the server can only answer a named sender) and connected to `server`.
pub fn connect_datagram(server: &Endpoint, local: Option<&Endpoint>, nonblocking: bool) -> io::Result<OwnedFd> {
    let fd = sys::socket(server.domain(), libc::SOCK_DGRAM, nonblocking)?;
    if let Some(local) = local {
        sys::bind(fd.as_fd(), &local.sockaddr()?)?;
    }
    sys::connect(fd.as_fd(), &server.sockaddr()?)?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ipv4_and_ipv6() {
        assert_eq!(parse_inet("127.0.0.1:7000").unwrap(), "127.0.0.1:7000".parse().unwrap());
        assert_eq!(parse_inet("[::1]:0").unwrap(), "[::1]:0".parse().unwrap());
        assert!(parse_inet("localhost:80").is_ok());
    }

    #[test]
    fn rejects_bad_addresses_by_name() {
        for bad in [
            "127.0.0.1",
            "1.2.3:99",
            "::1:7000",
            "1.2.3.4:99999",
            ":80",
            "nohost-xyz.invalid:80",
        ] {
            let err = parse_inet(bad).unwrap_err().to_string();
            assert!(err.contains("--addr"), "{bad}: {err}");
        }
    }

    #[test]
    fn flag_must_match_transport() {
        let e = endpoint_from_flags(Transport::Tcp, None, Some(Path::new("/tmp/x")), "127.0.0.1:1").unwrap_err();
        assert!(e.to_string().contains("--path"));
        let e = endpoint_from_flags(Transport::Unix, Some("1.2.3.4:5"), None, "127.0.0.1:1").unwrap_err();
        assert!(e.to_string().contains("--addr"));
        let e = endpoint_from_flags(Transport::Unixgram, None, None, "127.0.0.1:1").unwrap_err();
        assert!(e.to_string().contains("--path"));
    }

    #[test]
    fn accepted_tcp_connections_have_nagle_off_and_a_fixed_receive_buffer() {
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let listener = bind_server(
                Transport::Tcp,
                &Endpoint::Inet(parse_inet(addr).unwrap()),
                BindOptions::default(),
            )
            .unwrap();
            let local = local_endpoint(listener.as_fd()).unwrap();
            let _client = connect_stream(&local, false).unwrap();
            let conn = sys::accept(listener.as_fd(), false).unwrap();
            let nodelay = sys::getsockopt_int(conn.as_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY).unwrap();
            assert_eq!(nodelay, 1, "{addr}: an accepted connection must not delay small echoes");
            // The kernel doubles SO_RCVBUF; autotuning would report its own figure.
            let rcvbuf = sys::getsockopt_int(conn.as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF).unwrap();
            assert_eq!(
                rcvbuf as usize,
                2 * TCP_RCVBUF,
                "{addr}: the receive buffer bounds a stuck client's cost"
            );
        }
    }
}
