//! Blocking test clients for every transport, and a payload pattern that
//! differs per client and per offset, so that an echo which mixes bytes
//! between connections or reorders them is caught.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use super::{Endpoint, Target};

/// A small deterministic PRNG (xorshift64*), so failures are reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}

/// `len` bytes of client `client`'s stream starting at byte `offset`.
pub fn pattern(client: u64, offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| {
            let x = (offset + i)
                .wrapping_mul(0x9E37_79B9)
                .wrapping_add(client.wrapping_mul(0x85EB_CA6B));
            (x ^ (x >> 13) ^ (x >> 24)) as u8
        })
        .collect()
}

/// A connected stream client (TCP or Unix).
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    /// Connects to a stream server at `endpoint` (a `ServerProc`'s `endpoint`).
    pub fn connect(endpoint: &Endpoint) -> io::Result<Stream> {
        let s = match endpoint {
            Endpoint::Inet(a) => {
                let s = TcpStream::connect(a)?;
                s.set_nodelay(true)?;
                Stream::Tcp(s)
            }
            Endpoint::Unix(p) => Stream::Unix(UnixStream::connect(p)?),
        };
        s.set_timeouts(Some(Duration::from_secs(30)))?;
        Ok(s)
    }

    pub fn set_timeouts(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
            Stream::Unix(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
        }
    }

    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
        }
    }

    /// Closes with an RST instead of a FIN (TCP: SO_LINGER 0). Unix sockets
    /// have no reset; closing with unread data is the nearest thing.
    pub fn reset(self) {
        if let Stream::Tcp(s) = &self {
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: setsockopt reads `linger` for the duration of the call.
            unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(s),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    &linger as *const libc::linger as *const libc::c_void,
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                );
            }
        }
    }

    /// Sends `data` from a second thread while this one reads the echo back,
    /// so a large message cannot deadlock on full socket buffers. Returns the
    /// bytes read back (exactly `data.len()` unless the server misbehaved).
    pub fn echo(&mut self, data: &[u8]) -> io::Result<Vec<u8>> {
        let mut writer = self.try_clone()?;
        let to_send = data.to_vec();
        let sender = std::thread::spawn(move || writer.write_all(&to_send));
        let mut back = vec![0u8; data.len()];
        let read = self.read_exact(&mut back);
        sender.join().expect("writer thread")?;
        read?;
        Ok(back)
    }

    /// Reads until EOF (or the timeout), returning everything read.
    pub fn read_to_eof(&mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_to_end(&mut out)?;
        Ok(out)
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A connected datagram client (UDP or unixgram, bound to its own path in `dir`).
pub struct Dgram {
    sock: DgramSocket,
    /// Datagrams [`Dgram::echo`] sent again after no echo came in time: each
    /// may still bring a late echo, which is waited for before the socket
    /// goes (a unixgram server answering a socket that is gone counts an error).
    resent: Cell<u32>,
}

enum DgramSocket {
    Udp(UdpSocket),
    Unix(UnixDatagram, std::path::PathBuf),
}

impl Dgram {
    /// A datagram client of the server at `endpoint`; a unixgram client
    /// binds `client-<id>.sock` in `dir`, since only a named sender can be answered.
    pub fn connect(endpoint: &Endpoint, dir: &Path, id: u64) -> io::Result<Dgram> {
        let d = match endpoint {
            Endpoint::Inet(a) => {
                let s = UdpSocket::bind(if a.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" })?;
                s.connect(a)?;
                DgramSocket::Udp(s)
            }
            Endpoint::Unix(server) => {
                let path = dir.join(format!("client-{id}.sock"));
                let _ = std::fs::remove_file(&path);
                let s = UnixDatagram::bind(&path)?;
                s.connect(server)?;
                DgramSocket::Unix(s, path)
            }
        };
        Ok(Dgram {
            sock: d,
            resent: Cell::new(0),
        })
    }

    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        match &self.sock {
            DgramSocket::Udp(s) => s.send(buf),
            DgramSocket::Unix(s, _) => s.send(buf),
        }
    }

    pub fn recv(&self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        match &self.sock {
            DgramSocket::Udp(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.recv(buf)
            }
            DgramSocket::Unix(s, _) => {
                s.set_read_timeout(Some(timeout))?;
                s.recv(buf)
            }
        }
    }

    /// Sends `msg` and waits for its echo, resending on loss (loopback drops
    /// datagrams when receive queues overflow). Stale echoes of earlier sends
    /// are told apart by the first 8 bytes, which the caller makes unique.
    /// Returns the echo, which the caller checks.
    pub fn echo(&self, msg: &[u8], deadline: Instant) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; 70_000];
        let key = &msg[..msg.len().min(8)];
        let mut sent = false;
        while Instant::now() < deadline {
            match self.send(msg) {
                Ok(_) if std::mem::replace(&mut sent, true) => self.resent.set(self.resent.get() + 1),
                Ok(_) => {}
                // The socket's send queue is full: wait and retry.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) || e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                Err(e) => return Err(e),
            }
            let wait_until = Instant::now() + Duration::from_millis(300);
            loop {
                let left = wait_until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match self.recv(&mut buf, left) {
                    Ok(n) if n == msg.len() && buf[..key.len()] == *key => return Ok(buf[..n].to_vec()),
                    Ok(n) if n >= key.len() && buf[..key.len()] != *key => continue, // a late echo of an earlier message
                    Ok(n) => return Ok(buf[..n].to_vec()),
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => break,
                    Err(e) => return Err(e),
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no echo of a {} B datagram before the deadline", msg.len()),
        ))
    }
}

impl Drop for Dgram {
    fn drop(&mut self) {
        // Take the late echoes of resent datagrams (at most one each, within
        // a bounded wait: a datagram the server never got brings none).
        let mut buf = vec![0u8; 70_000];
        let until = Instant::now() + Duration::from_secs(2);
        for _ in 0..self.resent.get() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || self.recv(&mut buf, left).is_err() {
                break;
            }
        }
        if let DgramSocket::Unix(_, path) = &self.sock {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The largest datagram payload a target can carry (UDP over IPv4 has the
/// smallest limit: 65,535 minus the IP and UDP headers).
pub fn max_datagram(target: Target) -> usize {
    match target {
        Target::Udp4 => 65_507,
        Target::Udp6 => 65_527,
        _ => 65_536,
    }
}
