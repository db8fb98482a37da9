//! The start-up that the two event-loop backends (epoll, uring) share: a
//! socket per worker, the unixgram send budget, and the worker threads
//! (spawned, pinned, joined).
//!
//! A worker that fails stops the whole server (it requests the stop) rather
//! than leave the clients the kernel hashes to it unserved while the others
//! go on.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::peer_budget::SharedPeerBudget;
use crate::net::{self, BindOptions, Endpoint, Transport};
use crate::serve::{ServerConfig, Shutdown};

/// The socket each worker serves.
///
/// IP transports: worker 0 serves the primary socket and every other worker
/// a `SO_REUSEPORT` socket of its own on the same address, so the kernel
/// spreads flows across workers. Unix transports have no `SO_REUSEPORT`:
/// every worker serves the primary.
pub struct WorkerSockets {
    /// A duplicate of the primary socket, so that the caller keeps its own.
    primary: OwnedFd,
    /// Workers 1.. (IP only).
    own: Vec<OwnedFd>,
}

impl WorkerSockets {
    /// Binds the sockets of `threads` workers; `nonblocking` for each new
    /// one (the primary's mode is the caller's to set).
    pub fn bind(
        transport: Transport,
        local: &Endpoint,
        primary: BorrowedFd<'_>,
        threads: usize,
        nonblocking: bool,
    ) -> io::Result<WorkerSockets> {
        let mut own = Vec::new();
        if !transport.is_unix() {
            let opts = BindOptions {
                reuseport: true,
                nonblocking,
                ..BindOptions::default()
            };
            for _ in 1..threads {
                own.push(net::bind_server(transport, local, opts)?);
            }
        }
        Ok(WorkerSockets {
            primary: primary.try_clone_to_owned()?,
            own,
        })
    }

    /// Worker `i`'s socket.
    pub fn get(&self, i: usize) -> BorrowedFd<'_> {
        match i.checked_sub(1).and_then(|j| self.own.get(j)) {
            Some(own) => own.as_fd(),
            None => self.primary.as_fd(),
        }
    }
}

/// unixgram: the send-buffer budget every worker shares (see
/// `peer_budget`); `None` for the other transports.
pub fn unix_budget(transport: Transport, socket: BorrowedFd<'_>) -> io::Result<Option<&'static SharedPeerBudget>> {
    match transport {
        Transport::Unixgram => SharedPeerBudget::new(socket).map(Some),
        _ => Ok(None),
    }
}

/// Runs `work(i, input)` for each of the workers' `inputs` (one per worker)
/// on a thread of its own named `{name}-{i}`, pinned by `--pin` first, and
/// `meanwhile` on the calling thread once they are spawned; then joins them. A worker's error
/// requests the stop. Returns `meanwhile`'s error if it failed,
/// else the first error of a spawn or a worker.
pub fn run<T, W, M>(
    name: &str,
    config: &ServerConfig,
    shutdown: Shutdown,
    inputs: Vec<T>,
    work: W,
    meanwhile: M,
) -> io::Result<()>
where
    T: Send,
    W: Fn(usize, T) -> io::Result<()> + Sync,
    M: FnOnce() -> io::Result<()>,
{
    let work = &work;
    std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(inputs.len());
        let mut first_error = None;
        for (i, input) in inputs.into_iter().enumerate() {
            let spawned = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn_scoped(scope, move || {
                    config.pin_worker(i);
                    let result = work(i, input);
                    if result.is_err() {
                        shutdown.request();
                    }
                    result
                });
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    shutdown.request();
                    first_error = Some(e);
                    break;
                }
            }
        }
        let meanwhile = meanwhile();
        for h in handles {
            let result = h
                .join()
                .unwrap_or_else(|_| Err(io::Error::other(format!("{name} worker panicked"))));
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        meanwhile.and(first_error.map_or(Ok(()), Err))
    })
}
