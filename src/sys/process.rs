//! Process control for the fork backend: fork, waitpid, kill, `_exit`.
//!
//! Everything here is a single syscall and allocates nothing, so a forked
//! child of this multi-threaded process may call it (only async-signal-safe
//! work is allowed between `fork` and `_exit`).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// A process id.
pub type Pid = libc::pid_t;

/// Which side of a [`fork`] the caller is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// The new process. It must only make async-signal-safe calls (no
    /// allocation, no locks: another thread may have held them at the fork)
    /// and must leave with [`exit_now`].
    Child,
    /// The original process; the value is the child's pid.
    Parent(Pid),
}

/// `fork(2)`.
pub fn fork() -> io::Result<Forked> {
    match crate::syscall!(fork())? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// How a reaped child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// `_exit(code)`.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl ExitStatus {
    fn from_raw(status: libc::c_int) -> ExitStatus {
        if libc::WIFSIGNALED(status) {
            ExitStatus::Signal(libc::WTERMSIG(status))
        } else {
            ExitStatus::Code(libc::WEXITSTATUS(status))
        }
    }
}

/// `waitpid(-1, WNOHANG)`: reaps one exited child if there is one.
/// `Ok(None)` means no child has exited yet, or there are no children at all
/// (`ECHILD`).
pub fn reap_any() -> io::Result<Option<(Pid, ExitStatus)>> {
    let mut status: libc::c_int = 0;
    loop {
        match crate::syscall!(waitpid(-1, &mut status, libc::WNOHANG)) {
            Ok(0) => return Ok(None),
            Ok(pid) => return Ok(Some((pid, ExitStatus::from_raw(status)))),
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `kill(2)`. A child that has already exited (but is not yet reaped) still
/// accepts the signal, so this only fails for a pid that is long gone.
pub fn kill(pid: Pid, signal: libc::c_int) -> io::Result<()> {
    crate::syscall!(kill(pid, signal)).map(drop)
}

/// `_exit(2)`: ends the process at once, running no destructors and no
/// `atexit` handlers (a forked child must not flush or free the parent's state).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

/// Closes a descriptor that a forked child inherited but does not own in
/// Rust's sense (the parent's `OwnedFd` came along in the copied memory).
/// Only for a child that will leave with [`exit_now`], so that no destructor
/// closes the same number again.
pub fn close_inherited(fd: BorrowedFd<'_>) {
    // Errors are irrelevant: the descriptor is gone either way (close(2) on Linux).
    let _ = crate::syscall!(close(fd.as_raw_fd()));
}

/// `getpid(2)`.
pub fn current_pid() -> Pid {
    // SAFETY: getpid has no preconditions and cannot fail.
    unsafe { libc::getpid() }
}

/// For a forked child: be killed if `parent` dies (`PR_SET_PDEATHSIG`), so a
/// parent that is SIGKILLed leaves no orphan serving on. If the parent is
/// already gone (it died before the `prctl`), exit at once.
pub fn die_with_parent(parent: Pid) {
    let _ = crate::syscall!(prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0));
    // SAFETY: getppid has no preconditions and cannot fail.
    if unsafe { libc::getppid() } != parent {
        exit_now(0);
    }
}

/// The calling thread's id (its pid if it is the main thread).
pub fn thread_id() -> Pid {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// Whether a thread (or process) with this id still exists.
pub fn thread_alive(tid: Pid) -> bool {
    // Signal 0 checks for existence only; EPERM still means it exists.
    !matches!(kill(tid, 0), Err(e) if e.raw_os_error() == Some(libc::ESRCH))
}
