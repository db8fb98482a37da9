//! The four backends behind one interface.
//!
//! A backend receives a bound socket in a [`ServeContext`] and echoes on it
//! until [`crate::serve::Shutdown`] fires. Every backend serves every
//! transport: for streams the socket is a listener, for datagrams it is the
//! socket that receives and answers.

use std::io;

use crate::serve::config::BackendKind;
use crate::serve::ServeContext;

pub mod blocking;
pub mod epoll;
pub mod fork;
pub mod peer_budget;
pub mod threadpool;
pub mod uring;
pub mod workers;

/// The most echo output one stream connection may have waiting to be sent.
/// Above it a backend stops reading from that connection until the backlog
/// drains, so a client that never reads costs at most this much memory.
pub const MAX_PENDING_BYTES: usize = 256 * 1024;

/// One I/O model.
pub trait Backend {
    /// Serves `ctx.socket` until `ctx.shutdown.requested()`, then stops
    /// accepting, closes every connection and returns. Must call
    /// `ctx.ready(details)` exactly once, after all setup that can fail.
    ///
    /// Runs on the main thread. Errors returned here are fatal setup errors;
    /// per-connection failures are counted in `ctx.stats` and never returned.
    fn serve(&self, ctx: ServeContext) -> io::Result<()>;
}

/// The backend for a `--backend` value.
pub fn create(kind: BackendKind) -> Box<dyn Backend> {
    match kind {
        BackendKind::Fork => Box::new(fork::Fork),
        BackendKind::Threadpool => Box::new(threadpool::ThreadPool),
        BackendKind::Epoll => Box::new(epoll::Epoll),
        BackendKind::Uring => Box::new(uring::Uring),
    }
}
