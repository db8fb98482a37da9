//! Syscall wrappers loadgen needs beyond `sockbench::sys`.

use std::io;

use sockbench::syscall;

/// User + system CPU time of this whole process (all threads), in microseconds.
pub fn process_cpu_us() -> io::Result<u64> {
    // SAFETY: rusage is plain old data; zeroed is a valid value to be overwritten.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    syscall!(getrusage(libc::RUSAGE_SELF, &mut ru))?;
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Ok(tv(ru.ru_utime) + tv(ru.ru_stime))
}

/// `epoll_pwait2(2)`: like `epoll_wait` but with a nanosecond timeout, so an
/// open-loop schedule can sleep until the next send instead of spinning or
/// oversleeping a whole millisecond. Falls back to `epoll_wait` (rounded up
/// to whole milliseconds) on kernels before 5.11. `EINTR` is zero events.
pub fn epoll_wait_ns(
    epfd: std::os::fd::BorrowedFd<'_>,
    events: &mut [libc::epoll_event],
    timeout_ns: u64,
) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicBool, Ordering};
    static NO_PWAIT2: AtomicBool = AtomicBool::new(false);
    if !NO_PWAIT2.load(Ordering::Relaxed) {
        let ts = libc::timespec {
            tv_sec: (timeout_ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: `events` is a live, writable array of `events.len()` entries and
        // `ts` lives across the call; a null sigmask means "do not change it".
        let res = syscall!(epoll_pwait2(
            epfd.as_raw_fd(),
            events.as_mut_ptr(),
            events.len() as libc::c_int,
            &ts,
            std::ptr::null()
        ));
        match res {
            Ok(n) => return Ok(n as usize),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => return Ok(0),
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => NO_PWAIT2.store(true, Ordering::Relaxed),
            Err(e) => return Err(e),
        }
    }
    let ms = timeout_ns.div_ceil(1_000_000).min(i32::MAX as u64) as i32;
    sockbench::sys::epoll_wait(epfd, events, ms)
}
