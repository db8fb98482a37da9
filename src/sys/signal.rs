//! Signal dispositions: SIGPIPE ignored, SIGINT/SIGTERM turned into a flag
//! plus an eventfd that every event loop can wait on.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_stop_signal(_: libc::c_int) {
    REQUESTED.store(true, Ordering::SeqCst);
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: write(2) is async-signal-safe; `one` outlives the call.
        unsafe { libc::write(fd, &one as *const u64 as *const libc::c_void, 8) };
    }
}

/// Ignores SIGPIPE process-wide. Sends use MSG_NOSIGNAL too; this covers any
/// plain `write` to a socket.
pub fn ignore_sigpipe() -> io::Result<()> {
    set_handler(libc::SIGPIPE, libc::SIG_IGN)
}

/// Routes SIGINT and SIGTERM to a flag and a write to `wake_fd`. No
/// `SA_RESTART`: a blocking call in the main thread returns `EINTR`.
pub fn install_stop_handler(wake_fd: RawFd) -> io::Result<()> {
    WAKE_FD.store(wake_fd, Ordering::SeqCst);
    let handler = on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    set_handler(libc::SIGINT, handler)?;
    set_handler(libc::SIGTERM, handler)
}

static CHILD_EXIT_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_child_exit(_: libc::c_int) {
    let fd = CHILD_EXIT_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: write(2) is async-signal-safe; `one` outlives the call.
        unsafe { libc::write(fd, &one as *const u64 as *const libc::c_void, 8) };
    }
}

/// Routes SIGCHLD to a write to `wake_fd` (an eventfd that lives as long as
/// the process), so a parent can sleep until a child exits instead of
/// polling for it on a timer. `SA_RESTART`, so other threads' calls are not
/// disturbed; `poll` still returns early, which is all the parent needs.
pub fn install_child_exit_handler(wake_fd: RawFd) -> io::Result<()> {
    CHILD_EXIT_FD.store(wake_fd, Ordering::SeqCst);
    // SAFETY: sigaction is plain old data; zeroed means empty mask, no flags.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_child_exit as extern "C" fn(libc::c_int) as libc::sighandler_t;
    sa.sa_flags = libc::SA_RESTART | libc::SA_NOCLDSTOP;
    crate::syscall!(sigaction(libc::SIGCHLD, &sa, std::ptr::null_mut())).map(drop)
}

/// The socket a forked child's stop handler shuts down, and how.
static CHILD_SOCKET: AtomicI32 = AtomicI32::new(-1);
static CHILD_SHUTDOWN_HOW: AtomicI32 = AtomicI32::new(libc::SHUT_RDWR);

extern "C" fn on_child_stop_signal(_: libc::c_int) {
    REQUESTED.store(true, Ordering::SeqCst);
    let fd = CHILD_SOCKET.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: shutdown(2) is async-signal-safe; `fd` is the child's socket,
        // open for the child's whole life (it `_exit`s without closing it first).
        unsafe { libc::shutdown(fd, CHILD_SHUTDOWN_HOW.load(Ordering::SeqCst)) };
    }
}

/// For a forked child, which the parent stops with SIGTERM: SIGINT/SIGTERM
/// set the child's own stop flag and shut down `socket` with `how`, so a
/// blocking call on it returns at once, and so does any later one (the
/// shutdown persists: a signal that lands just before the call blocks is not
/// lost). The parent's stop eventfd is no longer written. No `SA_RESTART`:
/// other blocking calls return `EINTR`. Call with the stop signals blocked.
pub fn install_child_stop_handler(socket: RawFd, how: libc::c_int) -> io::Result<()> {
    WAKE_FD.store(-1, Ordering::SeqCst);
    // The child has no children; never poke the parent's child-exit eventfd.
    CHILD_EXIT_FD.store(-1, Ordering::SeqCst);
    CHILD_SOCKET.store(socket, Ordering::SeqCst);
    CHILD_SHUTDOWN_HOW.store(how, Ordering::SeqCst);
    let handler = on_child_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    set_handler(libc::SIGINT, handler)?;
    set_handler(libc::SIGTERM, handler)
}

/// Whether SIGINT or SIGTERM has arrived, or a stop was requested in-process.
pub fn stop_requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Requests a stop as if a signal had arrived.
pub fn request_stop() {
    on_stop_signal(0)
}

fn set_handler(sig: libc::c_int, handler: libc::sighandler_t) -> io::Result<()> {
    // SAFETY: sigaction is plain old data; zeroed means empty mask, no flags.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = handler;
    crate::syscall!(sigaction(sig, &sa, std::ptr::null_mut())).map(drop)
}

/// Sets the calling thread's signal mask to `how` (`SIG_BLOCK`, `SIG_UNBLOCK`,
/// `SIG_SETMASK`) for the given signals.
pub fn thread_sigmask(how: libc::c_int, signals: &[libc::c_int]) -> io::Result<()> {
    // SAFETY: sigset_t is plain old data, initialised by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t for both calls.
    unsafe {
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
    }
    // SAFETY: `set` lives for the call; the old mask is not requested.
    let rc = unsafe { libc::pthread_sigmask(how, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}
