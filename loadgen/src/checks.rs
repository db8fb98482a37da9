//! The checks a run passes before anything starts: flags that parse but
//! cannot make a measurement, descriptors, and source addresses. Each
//! refusal is a [`UsageError`] naming the flag (exit code 2).

use sockbench::net;

use crate::cli::{Args, UsageError};
use crate::pattern;
use crate::source::SourceAddrs;

/// Refuses, before anything starts, what cannot work: flags that make no
/// sense, a datagram size below the header, too few descriptors.
pub fn check_flags(args: &Args) -> Result<(), UsageError> {
    args.validate()?;
    crate::conversation::check_flags(args)?;
    if let Some(at) = args.start_at {
        crate::cli::check_start_at(at, std::time::SystemTime::now())?;
    }
    if !args.transport.is_stream() && (args.size as usize) < pattern::HEADER_LEN {
        return Err(UsageError(format!(
            "--size {}: datagrams carry a {}-byte header (connection id, sequence number); use --size {} or more",
            args.size,
            pattern::HEADER_LEN,
            pattern::HEADER_LEN
        )));
    }
    // Raise the soft limit to the hard one first: only past the hard limit is
    // the user's help needed.
    let fd_limit = sockbench::sys::raise_fd_limit().unwrap_or_else(|_| sockbench::sys::fd_limit());
    let threads = args.threads.min(args.conns);
    let fd_need = fds_per_table(args.conns, threads, fd_limit);
    if fd_need > fd_limit {
        let all = args.conns + FD_RESERVE;
        return Err(UsageError(format!(
            "--conns {} needs about {all} descriptors (or {fd_need} per thread with --threads {threads}) \
             but the hard limit is {fd_limit}; raise it (as root with CAP_SYS_RESOURCE: \
             ulimit -Hn {all}; ulimit -n {all}, or prlimit --nofile={all} --pid PID; the kernel's \
             ceiling is /proc/sys/fs/nr_open), use more --threads, or lower --conns",
            args.conns,
        )));
    }
    Ok(())
}

/// Descriptors each thread needs besides its connections (epoll, ring, stdio).
pub const FD_RESERVE: u64 = 64;

/// Descriptors the fullest descriptor table needs: all connections in one
/// table when they fit under `fd_limit`, else each thread's share in its own
/// table (see `run::own_fd_table`).
pub fn fds_per_table(conns: u64, threads: u64, fd_limit: u64) -> u64 {
    if conns + FD_RESERVE <= fd_limit {
        conns + FD_RESERVE
    } else {
        conns.div_ceil(threads.max(1)) + FD_RESERVE
    }
}

/// Refuses more connections than the source addresses have ports (naming
/// `--local-addrs`), sources of the wrong address family, and sources that
/// are not this host's.
pub fn check_sources(sources: &SourceAddrs, args: &Args, endpoint: &net::Endpoint) -> Result<(), UsageError> {
    // Unknown port range (no /proc): do not guess, let connect say.
    let ports = crate::source::ports_per_source().unwrap_or(u64::MAX / 2);
    crate::source::check_capacity(sources, args.transport, endpoint, args.conns, ports).map_err(UsageError)?;
    crate::source::check_local(sources, args.transport).map_err(UsageError)
}
