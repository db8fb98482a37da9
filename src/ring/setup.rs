//! Ring setup and kernel feature probing.
//!
//! Each feature is probed before it is relied on, and a missing one is a clear
//! error that names it (the server then exits non-zero), never a crash:
//! - `io_uring_setup` itself (Linux 5.1; `EPERM`/`ENOSYS` when disabled by
//!   `kernel.io_uring_disabled` or a seccomp filter);
//! - setup flags, best first: `SINGLE_ISSUER | DEFER_TASKRUN` (6.1), else
//!   `COOP_TASKRUN` (5.19), else none; the first two with `SUBMIT_ALL` (5.18,
//!   so present wherever they are), see [`build_ring`];
//! - the opcodes we submit (`IORING_REGISTER_PROBE`, 5.6);
//! - provided buffer rings (`IORING_REGISTER_PBUF_RING`, 5.19);
//! - multishot receive (6.0), by a self-test on a socketpair, which also checks
//!   that multishot receive reports EOF on AF_UNIX (see [`SelfTest`]);
//! - datagram rings only: a send with a destination address (`sendto`, 6.1),
//!   by sending one datagram ([`probe_sendto`]).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, types, IoUring, Probe};

use super::token;
use super::Driver;

/// The setup flags a ring got, for the `listening` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupFlags {
    DeferTaskrun,
    CoopTaskrun,
    Plain,
}

impl SetupFlags {
    pub fn name(self) -> &'static str {
        match self {
            SetupFlags::DeferTaskrun => "single_issuer+defer_taskrun",
            SetupFlags::CoopTaskrun => "coop_taskrun",
            SetupFlags::Plain => "plain",
        }
    }
}

/// A clear error for a missing kernel feature.
pub fn missing(feature: &str, source: io::Error) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, format!("kernel lacks {feature}: {source}"))
}

/// Set to `coop_taskrun` or `plain` to start the fallback chain there, so the
/// fallbacks an older kernel would get can be tested on a new one.
pub const FORCE_SETUP_ENV: &str = "SOCKBENCH_URING_SETUP";

/// Creates a ring with `sq_entries` submission entries and `cq_entries`
/// completion entries, with the best setup flags the kernel accepts.
///
/// `SUBMIT_ALL`: without it, an entry that fails as it is submitted (a bad
/// descriptor, an invalid flag) ends the batch, and the entries behind it
/// wait in the queue for the next `io_uring_enter`, which may be a whole wait
/// later. With it, one failing entry gets its error completion and the rest
/// of the batch goes in with the same enter.
pub fn build_ring(sq_entries: u32, cq_entries: u32) -> io::Result<(IoUring, SetupFlags)> {
    let attempts = [SetupFlags::DeferTaskrun, SetupFlags::CoopTaskrun, SetupFlags::Plain];
    let first = match std::env::var(FORCE_SETUP_ENV).as_deref() {
        Ok("coop_taskrun") => 1,
        Ok("plain") => 2,
        _ => 0,
    };
    let mut last_err = None;
    for flags in attempts.into_iter().skip(first) {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(cq_entries).setup_clamp();
        match flags {
            SetupFlags::DeferTaskrun => {
                builder.setup_single_issuer().setup_defer_taskrun().setup_submit_all();
            }
            SetupFlags::CoopTaskrun => {
                builder.setup_coop_taskrun().setup_submit_all();
            }
            SetupFlags::Plain => {}
        }
        match builder.build(sq_entries) {
            Ok(ring) => return Ok((ring, flags)),
            // An older kernel rejects flags it does not know with EINVAL: try the next set.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last_err = Some(e),
            Err(e) => return Err(setup_error(e)),
        }
    }
    Err(setup_error(last_err.expect("at least one attempt")))
}

fn setup_error(e: io::Error) -> io::Error {
    let why = match e.raw_os_error() {
        Some(libc::ENOSYS) => "io_uring is not available (kernel built without it, or blocked by seccomp)",
        Some(libc::EPERM) => "io_uring is disabled (sysctl kernel.io_uring_disabled, or a seccomp filter)",
        Some(libc::ENOMEM) => "io_uring_setup ran out of locked memory (raise RLIMIT_MEMLOCK or lower --ring-entries)",
        Some(libc::EINVAL) => {
            "the kernel rejected every io_uring setup (io_uring needs Linux 5.1, this backend 6.0, its datagrams 6.1)"
        }
        _ => "io_uring_setup failed",
    };
    io::Error::new(io::ErrorKind::Unsupported, format!("{why}: {e}"))
}

/// Checks that the kernel knows every opcode this backend submits.
pub fn probe_opcodes(ring: &IoUring) -> io::Result<()> {
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| missing("IORING_REGISTER_PROBE (Linux 5.6)", e))?;
    let needed: [(u8, &str); 9] = [
        (opcode::AcceptMulti::CODE, "IORING_OP_ACCEPT"),
        (opcode::RecvMulti::CODE, "IORING_OP_RECV"),
        (opcode::Send::CODE, "IORING_OP_SEND"),
        (opcode::RecvMsgMulti::CODE, "IORING_OP_RECVMSG"),
        (opcode::PollAdd::CODE, "IORING_OP_POLL_ADD"),
        (opcode::Timeout::CODE, "IORING_OP_TIMEOUT"),
        (opcode::AsyncCancel::CODE, "IORING_OP_ASYNC_CANCEL"),
        (opcode::Close::CODE, "IORING_OP_CLOSE"),
        // Linux 5.11: a stream ring's stop, and its start over, end each
        // connection's receive with it rather than cancel them all at once.
        (opcode::Shutdown::CODE, "IORING_OP_SHUTDOWN"),
    ];
    for (code, name) in needed {
        if !probe.is_supported(code) {
            return Err(missing(name, io::Error::from_raw_os_error(libc::EOPNOTSUPP)));
        }
    }
    Ok(())
}

/// What the start-up self-test found.
#[derive(Clone, Copy, Debug)]
pub struct SelfTest {
    /// Whether multishot receive on an AF_UNIX stream posts a completion when
    /// the peer closes. Some kernels missed that EOF; where it is missed, Unix
    /// stream connections use single-shot receives (still with buffer select),
    /// which always see EOF, at the price of one submission per receive.
    pub unix_multishot_eof: bool,
}

/// How long the self-test waits for the kernel to deliver the byte (and for a
/// cancel to end). It normally answers at once; the bound is generous so that
/// a server descheduled on a busy machine does not take its own pause for a
/// missing kernel feature.
const SELF_TEST_WAIT: Duration = Duration::from_secs(2);

/// How long, once the byte has arrived, the self-test waits for the EOF. On a
/// kernel with the AF_UNIX EOF bug it never comes, and every ring waits this long.
const EOF_WAIT: Duration = Duration::from_millis(300);

/// Arms a multishot receive on one end of an AF_UNIX socketpair, writes a byte
/// and closes the other end: a kernel without multishot receive (6.0) fails
/// the receive with EINVAL; a kernel with the AF_UNIX EOF bug never reports
/// the close.
pub fn self_test(d: &mut Driver) -> io::Result<SelfTest> {
    let mut fds = [0; 2];
    crate::syscall!(socketpair(
        libc::AF_UNIX,
        libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
        0,
        fds.as_mut_ptr()
    ))?;
    // SAFETY: socketpair just returned these two descriptors and nobody else owns them.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let recv = opcode::RecvMulti::new(types::Fd(ours.as_raw_fd()), d.bufs.bgid())
        .build()
        .user_data(token::PROBE);
    // SAFETY: the receive writes only into the registered buffer ring, which the
    // driver keeps alive until every operation has completed.
    unsafe { d.push(recv)? };
    crate::syscall!(write(theirs.as_raw_fd(), b"x".as_ptr() as *const libc::c_void, 1))?;
    drop(theirs);

    let mut deadline = Instant::now() + SELF_TEST_WAIT;
    let (mut got_data, mut got_eof, mut ended) = (false, false, false);
    while !ended && Instant::now() < deadline {
        d.submit_and_wait(Some(Duration::from_millis(20)))?;
        for cqe in d.take_completions() {
            if cqe.user_data != token::PROBE {
                continue;
            }
            if let Some(bid) = cqueue::buffer_select(cqe.flags) {
                d.bufs.taken(bid);
                d.bufs.recycle(bid);
            }
            ended |= !cqueue::more(cqe.flags);
            match cqe.result {
                1 => {
                    got_data = true;
                    deadline = deadline.min(Instant::now() + EOF_WAIT);
                }
                0 => got_eof = true,
                e if e == -libc::EINVAL => {
                    return Err(missing(
                        "multishot receive (IORING_RECV_MULTISHOT, Linux 6.0)",
                        io::Error::from_raw_os_error(libc::EINVAL),
                    ))
                }
                e if e < 0 => return Err(io::Error::from_raw_os_error(-e)),
                _ => {}
            }
        }
        d.bufs.publish();
    }
    if !ended {
        // EOF never came: cancel the receive and wait (bounded) for it to end,
        // so that nothing is left in flight on the socket we are about to close.
        let cancel = opcode::AsyncCancel::new(token::PROBE).build().user_data(token::CANCEL);
        // SAFETY: a cancel request carries no buffer.
        unsafe { d.push(cancel)? };
        let deadline = Instant::now() + SELF_TEST_WAIT;
        while d.in_flight > 0 && Instant::now() < deadline {
            d.submit_and_wait(Some(Duration::from_millis(20)))?;
            for cqe in d.take_completions() {
                if let Some(bid) = cqueue::buffer_select(cqe.flags) {
                    d.bufs.taken(bid);
                    d.bufs.recycle(bid);
                }
            }
            d.bufs.publish();
        }
    }
    if !got_data {
        return Err(missing(
            "multishot receive into a buffer ring (no data arrived in the self-test)",
            io::Error::from_raw_os_error(libc::ETIMEDOUT),
        ));
    }
    Ok(SelfTest {
        unix_multishot_eof: got_eof,
    })
}

/// A datagram ring echoes with `IORING_OP_SEND` and a destination address
/// (`sendto`, Linux 6.1). A 6.0 kernel refuses such a send (`EINVAL`: it
/// takes the address field for one it must be zero), which would fail every
/// echo while the server seemed to run; so one datagram is sent here, from a
/// fresh AF_UNIX datagram socket to another one's autobound name, and must
/// arrive.
pub fn probe_sendto(d: &mut Driver) -> io::Result<()> {
    let socket = || -> io::Result<OwnedFd> {
        let fd = crate::syscall!(socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0))?;
        // SAFETY: socket just returned this descriptor and nobody else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let (to, from) = (socket()?, socket()?);
    // SAFETY: sockaddr_un is a plain C struct; all-zero is a valid value.
    let mut name: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    name.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let family_only = std::mem::size_of::<libc::sa_family_t>() as libc::socklen_t;
    // SAFETY: `name` is a valid sockaddr_un of at least `family_only` bytes;
    // an address of just the family autobinds to a fresh abstract name.
    crate::syscall!(bind(
        to.as_raw_fd(),
        &name as *const _ as *const libc::sockaddr,
        family_only
    ))?;
    let mut name_len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: `name` has room for `name_len` bytes, which the kernel writes back.
    crate::syscall!(getsockname(
        to.as_raw_fd(),
        &mut name as *mut _ as *mut libc::sockaddr,
        &mut name_len
    ))?;
    let byte = [0x5au8];
    let send = opcode::Send::new(types::Fd(from.as_raw_fd()), byte.as_ptr(), 1)
        .dest_addr(&name as *const _ as *const libc::sockaddr)
        .dest_addr_len(name_len)
        .flags(libc::MSG_DONTWAIT)
        .build()
        .user_data(token::PROBE);
    // SAFETY: the send carries MSG_DONTWAIT, so it completes as the next
    // enter submits it, and the kernel reads `byte` and `name` then; both
    // live until this function returns, after that enter.
    unsafe { d.push(send)? };
    let deadline = Instant::now() + SELF_TEST_WAIT;
    let mut result = None;
    while result.is_none() && Instant::now() < deadline {
        d.submit_and_wait(Some(Duration::from_millis(20)))?;
        result = d
            .take_completions()
            .into_iter()
            .find(|c| c.user_data == token::PROBE)
            .map(|c| c.result);
    }
    let lacks = |e: i32| {
        missing(
            "a send with a destination address (sendto, Linux 6.1)",
            io::Error::from_raw_os_error(e),
        )
    };
    match result {
        Some(1) => {}
        Some(e) if e < 0 => return Err(lacks(-e)),
        _ => return Err(lacks(libc::ETIMEDOUT)),
    }
    let mut got = [0u8; 2];
    // SAFETY: `got` has room for the 2 bytes asked for.
    let n = crate::syscall!(recv(
        to.as_raw_fd(),
        got.as_mut_ptr() as *mut libc::c_void,
        2,
        libc::MSG_DONTWAIT
    ))?;
    if n != 1 || got[0] != byte[0] {
        return Err(lacks(libc::EIO));
    }
    Ok(())
}
