//! What every backend serves with, and what the server's lifecycle
//! (`crate::server`) hands it: the configuration ([`config`]), the
//! counters ([`stats`]), the stop request ([`Shutdown`]) and the bound
//! socket ([`ServeContext`]).
//!
//! Both `server` (which runs a backend) and `backend` (which serves) import
//! from here, and this module imports from neither, so the two do not form
//! an import circle.

pub mod config;
pub mod stats;

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

pub use config::ServerConfig;
pub use stats::{ConnEnd, LocalCounts, Stats};

use crate::net::Endpoint;
use crate::sys::{self, signal};

/// How long a stop may take before the backstop ends the process anyway.
pub const STOP_DEADLINE: Duration = Duration::from_millis(1500);

/// A handle to the process-wide stop request. Copyable and cheap: a flag set by
/// the signal handler, and an eventfd that becomes (and stays) readable at the
/// same moment, so any event loop can wait on it.
#[derive(Clone, Copy, Debug)]
pub struct Shutdown {
    wake_fd: RawFd,
}

impl Shutdown {
    /// Whether a stop has been requested.
    #[inline]
    pub fn requested(&self) -> bool {
        signal::stop_requested()
    }

    /// An eventfd that is readable once a stop has been requested. Never read
    /// it: it stays readable so that every waiter sees it.
    pub fn fd(&self) -> BorrowedFd<'static> {
        // SAFETY: the eventfd is created once in `install` and never closed.
        unsafe { BorrowedFd::borrow_raw(self.wake_fd) }
    }

    /// Requests a stop, exactly as SIGTERM would.
    pub fn request(&self) {
        signal::request_stop()
    }

    /// Installs the SIGINT/SIGTERM handler and its eventfd; once per process.
    pub fn install() -> io::Result<Shutdown> {
        let fd: OwnedFd = sys::eventfd()?;
        let raw = fd.as_raw_fd();
        std::mem::forget(fd); // lives for the whole process, see `fd()`
        signal::install_stop_handler(raw)?;
        Ok(Shutdown { wake_fd: raw })
    }
}

/// Prints the `listening` line with a backend's details, once.
pub type Announce = Box<dyn FnOnce(&str)>;

/// What a backend gets to serve with.
pub struct ServeContext {
    pub config: ServerConfig,
    /// The bound primary socket (listening, for streams), in blocking mode.
    /// IP sockets have `SO_REUSEPORT` set, so a backend may bind more sockets
    /// to [`ServeContext::local`] with [`crate::net::bind_server`].
    pub socket: OwnedFd,
    /// The address actually bound (port 0 resolved).
    pub local: Endpoint,
    pub stats: &'static Stats,
    pub shutdown: Shutdown,
    ready: Option<Announce>,
}

impl ServeContext {
    /// Announces that the backend is serving: prints the `listening` line with
    /// the backend's own `details` (e.g. `setup=defer_taskrun`). Call once,
    /// after all setup that can fail.
    pub fn ready(&mut self, details: &str) {
        if let Some(announce) = self.ready.take() {
            announce(details);
        }
    }
}

impl ServeContext {
    /// A context whose [`ServeContext::ready`] calls `announce` (once).
    pub fn new(
        config: ServerConfig,
        socket: OwnedFd,
        local: Endpoint,
        stats: &'static Stats,
        shutdown: Shutdown,
        announce: Announce,
    ) -> ServeContext {
        ServeContext {
            config,
            socket,
            local,
            stats,
            shutdown,
            ready: Some(announce),
        }
    }
}
