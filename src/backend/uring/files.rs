//! How a ring's operations name their sockets (`--uring-fixed-files`), and
//! the fixed file table that names them by slot.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use io_uring::{opcode, squeue, types};

use crate::ring::{setup, Driver};

/// A datagram ring's socket is slot 0 of its fixed file table.
pub(super) const DGRAM_SOCKET_FILE: u32 = 0;

/// How a ring's operations name their sockets (`--uring-fixed-files`).
///
/// `Fixed`: by slot in the ring's fixed file table, which direct accept fills
/// (`register_files`), with `IOSQE_FIXED_FILE`. `Fds`: by ordinary
/// descriptor, as a ring without a file table does; each operation then looks
/// the file up in the process's (shared) table and takes a reference on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Files {
    Fixed,
    Fds,
}

impl Files {
    /// The operand that names socket `file` (a slot or a descriptor); the
    /// entry must carry [`Files::flags`] too, which say which one it is.
    pub(super) fn fd(self, file: u32) -> types::Fd {
        types::Fd(file as i32)
    }

    /// `IOSQE_FIXED_FILE` when `file` is a slot: with [`Files::fd`], the same
    /// entry `types::Fixed(file)` builds.
    pub(super) fn flags(self) -> squeue::Flags {
        match self {
            Files::Fixed => squeue::Flags::FIXED_FILE,
            Files::Fds => squeue::Flags::empty(),
        }
    }

    /// Closes socket `file`. A fixed close names the slot in `file_index`
    /// (and frees it for a later direct accept), not by `IOSQE_FIXED_FILE`,
    /// which the kernel refuses on a close: `types::Fixed` builds it so.
    pub(super) fn close(self, file: u32) -> squeue::Entry {
        match self {
            Files::Fixed => opcode::Close::new(types::Fixed(file)).build(),
            Files::Fds => opcode::Close::new(types::Fd(file as i32)).build(),
        }
    }

    /// Shuts socket `file` down both ways (`IORING_OP_SHUTDOWN`, Linux
    /// 5.11): the client sees EOF, and a receive or a wait for `POLLOUT`
    /// on it ends by itself. Unlike a close, it names a slot by
    /// `IOSQE_FIXED_FILE`, as reads and writes do.
    pub(super) fn shutdown(self, file: u32) -> squeue::Entry {
        opcode::Shutdown::new(self.fd(file), libc::SHUT_RDWR)
            .build()
            .flags(self.flags())
    }

    /// Cancels every operation on socket `file`. A cancel names a slot by
    /// its own flag (`IORING_ASYNC_CANCEL_FD_FIXED`), not `IOSQE_FIXED_FILE`.
    pub(super) fn cancel_all(self, file: u32) -> squeue::Entry {
        let which = match self {
            Files::Fixed => types::CancelBuilder::fd(types::Fixed(file)),
            Files::Fds => types::CancelBuilder::fd(types::Fd(file as i32)),
        };
        opcode::AsyncCancel2::new(which.all()).build()
    }
}

/// `--uring-fixed-files on` (the default): gives the ring a fixed file
/// table, so that operations name sockets by slot (`IOSQE_FIXED_FILE`) and
/// the kernel neither looks up nor reference counts the file on each one
/// (the process has several threads, so its file table is shared). Streams: a sparse table that direct accept fills,
/// one slot per connection, as large as `--max-conns` allows within
/// `RLIMIT_NOFILE` (the kernel's bound for it); past it, accept gets
/// `ENFILE` and backs off as it does when out of descriptors. Datagrams: the
/// socket, in slot 0 (`DGRAM_SOCKET_FILE`).
pub(super) fn register_files(d: &Driver, stream: bool, max_conns: usize, socket: BorrowedFd<'_>) -> io::Result<()> {
    let submitter = d.ring.submitter();
    let result = if stream {
        let slots = (max_conns as u64)
            .min(crate::sys::fd_limit())
            .clamp(1, crate::ring::MAX_FIXED_FILES as u64);
        submitter.register_files_sparse(slots as u32)
    } else {
        submitter.register_files(&[socket.as_raw_fd()])
    };
    result.map_err(|e| setup::missing("registered file tables (IORING_REGISTER_FILES2, Linux 5.19)", e))
}
