//! Thin wrappers over raw syscalls.
//!
//! Every call goes through [`syscall!`], which turns `-1` into
//! `io::Error::last_os_error()`, so backend code needs almost no `unsafe`.
//! File descriptors become [`OwnedFd`] on the line that creates them.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

pub mod mmsg;
pub mod process;
pub mod signal;
pub mod sockaddr;

pub use process::{thread_alive, thread_id};
pub use sockaddr::SockAddr;

/// Moves `value` into anonymous shared memory that lives for the rest of the
/// process, and is shared with every child it forks from now on (so `T` may
/// hold only what works across processes: atomics, and plain data behind them).
pub fn leak_shared<T: Sync>(value: T) -> io::Result<&'static T> {
    let len = std::mem::size_of::<T>().max(1);
    // SAFETY: an anonymous shared mapping; no fd or existing memory involved.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let ptr = ptr as *mut T;
    // SAFETY: the mapping is page-aligned (enough for any `T` we share), at
    // least `len` bytes, writable, and never unmapped, so `'static` holds.
    unsafe {
        ptr.write(value);
        Ok(&*ptr)
    }
}

/// Calls a `libc` function and maps a `-1` result to `io::Error::last_os_error()`.
#[macro_export]
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        #[allow(unused_unsafe, clippy::macro_metavars_in_unsafe)]
        // SAFETY: callers pass arguments that satisfy the syscall's contract;
        // each call site documents any pointer it hands over.
        let res = unsafe { $crate::libc::$fn($($arg),*) };
        if res == -1 {
            Err(::std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

/// True when an error means "try again later" on a non-blocking fd.
pub fn would_block(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN))
}

/// True when an error means "the process or system is out of file descriptors".
pub fn out_of_fds(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// True when an error means "the peer went away" rather than a server fault.
pub fn peer_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED | libc::ETIMEDOUT | libc::ENOTCONN)
    )
}

fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful syscall and nobody else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// `socket(2)` with `SOCK_CLOEXEC`, plus `SOCK_NONBLOCK` when asked.
pub fn socket(domain: libc::c_int, ty: libc::c_int, nonblocking: bool) -> io::Result<OwnedFd> {
    let flags = libc::SOCK_CLOEXEC | if nonblocking { libc::SOCK_NONBLOCK } else { 0 };
    syscall!(socket(domain, ty | flags, 0)).map(owned)
}

/// Sets or clears `O_NONBLOCK`.
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let flags = syscall!(fcntl(fd.as_raw_fd(), libc::F_GETFL))?;
    let flags = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    syscall!(fcntl(fd.as_raw_fd(), libc::F_SETFL, flags)).map(drop)
}

/// `setsockopt(2)` for an `int` option.
pub fn setsockopt_int(fd: BorrowedFd<'_>, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    syscall!(setsockopt(
        fd.as_raw_fd(),
        level,
        name,
        // SAFETY: points at a live c_int for the duration of the call.
        &value as *const libc::c_int as *const libc::c_void,
        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
    ))
    .map(drop)
}

/// `getsockopt(2)` for an `int` option.
pub fn getsockopt_int(fd: BorrowedFd<'_>, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    syscall!(getsockopt(
        fd.as_raw_fd(),
        level,
        name,
        &mut value as *mut libc::c_int as *mut libc::c_void,
        &mut len
    ))?;
    Ok(value)
}

/// Sets `SO_RCVTIMEO` or `SO_SNDTIMEO`, so that blocking calls on `fd` give
/// up after `timeout`. (The server's blocking backends no longer use it: a
/// stop wakes them by shutting down their sockets, and idle means no wake-ups.)
pub fn set_socket_timeout(fd: BorrowedFd<'_>, name: libc::c_int, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    syscall!(setsockopt(
        fd.as_raw_fd(),
        libc::SOL_SOCKET,
        name,
        &tv as *const libc::timeval as *const libc::c_void,
        std::mem::size_of::<libc::timeval>() as libc::socklen_t,
    ))
    .map(drop)
}

pub fn bind(fd: BorrowedFd<'_>, addr: &SockAddr) -> io::Result<()> {
    syscall!(bind(fd.as_raw_fd(), addr.as_ptr(), addr.len())).map(drop)
}

pub fn listen(fd: BorrowedFd<'_>, backlog: libc::c_int) -> io::Result<()> {
    syscall!(listen(fd.as_raw_fd(), backlog)).map(drop)
}

pub fn connect(fd: BorrowedFd<'_>, addr: &SockAddr) -> io::Result<()> {
    syscall!(connect(fd.as_raw_fd(), addr.as_ptr(), addr.len())).map(drop)
}

/// `accept4(2)` with `SOCK_CLOEXEC`, plus `SOCK_NONBLOCK` when asked.
pub fn accept(fd: BorrowedFd<'_>, nonblocking: bool) -> io::Result<OwnedFd> {
    let flags = libc::SOCK_CLOEXEC | if nonblocking { libc::SOCK_NONBLOCK } else { 0 };
    syscall!(accept4(
        fd.as_raw_fd(),
        std::ptr::null_mut(),
        std::ptr::null_mut(),
        flags
    ))
    .map(owned)
}

pub fn getsockname(fd: BorrowedFd<'_>) -> io::Result<SockAddr> {
    let mut addr = SockAddr::empty();
    syscall!(getsockname(fd.as_raw_fd(), addr.as_mut_ptr(), addr.len_mut()))?;
    Ok(addr)
}

/// `read(2)`.
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    syscall!(read(fd.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len())).map(|n| n as usize)
}

/// `write(2)` (for eventfds and pipes; sockets use [`send`]).
pub fn write(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    syscall!(write(fd.as_raw_fd(), buf.as_ptr() as *const libc::c_void, buf.len())).map(|n| n as usize)
}

/// `send(2)` with `MSG_NOSIGNAL`: a vanished peer gives `EPIPE`, never `SIGPIPE`.
pub fn send(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    syscall!(send(
        fd.as_raw_fd(),
        buf.as_ptr() as *const libc::c_void,
        buf.len(),
        libc::MSG_NOSIGNAL
    ))
    .map(|n| n as usize)
}

/// `recvfrom(2)`: returns the datagram length and its source. `MSG_TRUNC`
/// makes the returned length the datagram's real size, so callers can tell
/// a truncated datagram by `len > buf.len()`.
pub fn recv_from(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, SockAddr)> {
    let mut addr = SockAddr::empty();
    let n = syscall!(recvfrom(
        fd.as_raw_fd(),
        buf.as_mut_ptr() as *mut libc::c_void,
        buf.len(),
        libc::MSG_TRUNC,
        addr.as_mut_ptr(),
        addr.len_mut()
    ))?;
    Ok((n as usize, addr))
}

/// `sendto(2)` with `MSG_NOSIGNAL`.
pub fn send_to(fd: BorrowedFd<'_>, buf: &[u8], addr: &SockAddr) -> io::Result<usize> {
    syscall!(sendto(
        fd.as_raw_fd(),
        buf.as_ptr() as *const libc::c_void,
        buf.len(),
        libc::MSG_NOSIGNAL,
        addr.as_ptr(),
        addr.len()
    ))
    .map(|n| n as usize)
}

/// `shutdown(2)`.
pub fn shutdown(fd: BorrowedFd<'_>, how: libc::c_int) -> io::Result<()> {
    syscall!(shutdown(fd.as_raw_fd(), how)).map(drop)
}

/// An `eventfd(2)` in non-blocking, close-on-exec mode.
pub fn eventfd() -> io::Result<OwnedFd> {
    syscall!(eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK)).map(owned)
}

/// `epoll_create1(EPOLL_CLOEXEC)`.
pub fn epoll_create() -> io::Result<OwnedFd> {
    syscall!(epoll_create1(libc::EPOLL_CLOEXEC)).map(owned)
}

/// `epoll_ctl(2)` with an event mask and a 64-bit token.
pub fn epoll_ctl(epfd: BorrowedFd<'_>, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    syscall!(epoll_ctl(epfd.as_raw_fd(), op, fd, &mut ev)).map(drop)
}

/// `epoll_wait(2)`; `EINTR` is reported as zero events.
pub fn epoll_wait(epfd: BorrowedFd<'_>, events: &mut [libc::epoll_event], timeout_ms: i32) -> io::Result<usize> {
    match syscall!(epoll_wait(
        epfd.as_raw_fd(),
        events.as_mut_ptr(),
        events.len() as libc::c_int,
        timeout_ms
    )) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(0),
        Err(e) => Err(e),
    }
}

/// The soft `RLIMIT_NOFILE`, for messages and sizing.
pub fn fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    match syscall!(getrlimit(libc::RLIMIT_NOFILE, &mut lim)) {
        Ok(_) => lim.rlim_cur,
        Err(_) => 1024,
    }
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (children
/// inherit it) and returns the soft limit now in force. Never lowers it.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    syscall!(getrlimit(libc::RLIMIT_NOFILE, &mut lim))?;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        syscall!(setrlimit(libc::RLIMIT_NOFILE, &raised))?;
        return Ok(raised.rlim_cur);
    }
    Ok(lim.rlim_cur)
}
