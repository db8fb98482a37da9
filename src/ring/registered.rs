//! Entering the ring through its registered index (`IORING_REGISTER_RING_FDS`,
//! Linux 5.18).
//!
//! Each `io_uring_enter` on a plain ring fd looks the fd up and, because the
//! process has several threads (its file table is shared), takes and drops a
//! reference on the file. A ring registered in the calling thread's own table
//! is entered by index with `IORING_ENTER_REGISTERED_RING`, which skips both.
//! The io-uring crate forgets a registration between `submitter()` calls, so
//! the two calls are made here. The table is per thread: only the thread that
//! registered the ring may enter it by index.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use io_uring::EnterFlags;

const IORING_REGISTER_RING_FDS: libc::c_uint = 20;
const IORING_UNREGISTER_RING_FDS: libc::c_uint = 21;

/// `struct io_uring_rsrc_update`.
#[repr(C)]
struct RsrcUpdate {
    offset: u32,
    resv: u32,
    data: u64,
}

/// `struct __kernel_timespec`.
#[repr(C)]
struct KernelTimespec {
    tv_sec: i64,
    tv_nsec: i64,
}

/// `struct io_uring_getevents_arg`.
#[repr(C)]
struct GeteventsArg {
    sigmask: u64,
    sigmask_sz: u32,
    /// 0 means none. Linux 6.12+ (`IORING_FEAT_MIN_TIMEOUT`); before that the
    /// field was padding, and an enter with it set fails with `EINVAL`.
    min_wait_usec: u32,
    ts: u64,
}

/// Registers `ring_fd` in the calling thread's ring table; returns its index.
pub fn register(ring_fd: RawFd) -> io::Result<u32> {
    let mut up = RsrcUpdate {
        offset: u32::MAX, // any free slot; the kernel writes back which
        resv: 0,
        data: ring_fd as u64,
    };
    // SAFETY: `up` is a valid io_uring_rsrc_update for the duration of the call.
    crate::syscall!(syscall(
        libc::SYS_io_uring_register,
        ring_fd,
        IORING_REGISTER_RING_FDS,
        &mut up as *mut RsrcUpdate,
        1
    ))?;
    Ok(up.offset)
}

/// Removes index `index` from the calling thread's ring table.
pub fn unregister(ring_fd: RawFd, index: u32) -> io::Result<()> {
    let up = RsrcUpdate {
        offset: index,
        resv: 0,
        data: 0,
    };
    // SAFETY: `up` is a valid io_uring_rsrc_update for the duration of the call.
    crate::syscall!(syscall(
        libc::SYS_io_uring_register,
        ring_fd,
        IORING_UNREGISTER_RING_FDS,
        &up as *const RsrcUpdate,
        1
    ))
    .map(drop)
}

/// `io_uring_enter` by registered `index`: submits `to_submit` entries and,
/// if `want > 0` (or the kernel has overflowed completions to flush), waits
/// for `want` completions or `timeout`; with `min_wait_usec > 0`, for `want`
/// completions until that much time has passed and from then on for one
/// (see `Driver::submit_and_wait_planned` for why it needs a `timeout`).
pub fn enter(
    index: u32,
    to_submit: u32,
    want: u32,
    cq_overflow: bool,
    timeout: Option<Duration>,
    min_wait_usec: u32,
) -> io::Result<usize> {
    let mut flags = EnterFlags::REGISTERED_RING;
    if want > 0 || cq_overflow {
        flags |= EnterFlags::GETEVENTS;
    }
    let ts = timeout.map(|t| KernelTimespec {
        tv_sec: t.as_secs() as i64,
        tv_nsec: t.subsec_nanos() as i64,
    });
    let ext = (want > 0 && (ts.is_some() || min_wait_usec > 0)).then(|| GeteventsArg {
        sigmask: 0,
        sigmask_sz: 0,
        min_wait_usec,
        ts: ts.as_ref().map_or(0, |ts| ts as *const KernelTimespec as u64),
    });
    let (arg, argsz) = match &ext {
        Some(ext) => {
            flags |= EnterFlags::EXT_ARG;
            (
                ext as *const GeteventsArg as *const libc::c_void,
                std::mem::size_of::<GeteventsArg>(),
            )
        }
        None => (std::ptr::null(), 0),
    };
    // SAFETY: `arg` is null or points to `ext`, which (with the timespec it
    // points to, if any) lives until the call returns; the kernel only reads it.
    crate::syscall!(syscall(
        libc::SYS_io_uring_enter,
        index,
        to_submit,
        want,
        flags.bits(),
        arg,
        argsz
    ))
    .map(|n| n as usize)
}
