//! The server's lifecycle: parse flags, bind, hand the socket to a backend,
//! stop on SIGINT/SIGTERM, clean up and print a summary.
//!
//! The lifecycle is the same for every backend:
//! 1. `SIGPIPE` is ignored; SIGINT/SIGTERM set a flag and wake an eventfd ([`Shutdown`]).
//! 2. The primary socket is bound here, so an unusable address fails before any backend runs.
//! 3. The backend's [`Backend::serve`] runs on the main thread. It calls
//!    [`ServeContext::ready`] once it can serve, which prints the `listening` line.
//! 4. When `serve` returns (or, as a backstop, 1.5 s after a stop signal), the Unix
//!    socket file is removed if it is still the file `bind` created (same device
//!    and inode), and the summary line is printed.

pub use crate::serve::config;

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};

pub use crate::serve::config::{
    BackendKind, ConfigError, OnOff, ServerArgs, ServerConfig, UringOptions, UringWait, MAX_MIN_WAIT_USEC,
};
pub use crate::serve::stats::{ConnEnd, LocalCounts, Stats};
pub use crate::serve::{ServeContext, Shutdown, STOP_DEADLINE};

use crate::backend;
use crate::net::{self, BindOptions, Endpoint, Transport};
use crate::sys::{self, signal};

/// An error in what the user asked for (exit code 2) or a runtime failure (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Address(#[from] net::AddrError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {what} {endpoint}: {source}")]
    Bind {
        what: &'static str,
        endpoint: Endpoint,
        source: io::Error,
    },
    #[error("backend {backend}: {source}")]
    Backend { backend: BackendKind, source: io::Error },
    #[error("setup: {0}")]
    Setup(io::Error),
    /// The machine or the process limits cannot hold what a flag asks for.
    #[error("{flag} {value}: {reason}")]
    Capacity {
        flag: &'static str,
        value: usize,
        reason: String,
    },
}

impl ServerError {
    /// 2 for anything the user typed wrong (flags, addresses), 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            ServerError::Address(_)
            | ServerError::Config(_)
            | ServerError::Bind { .. }
            | ServerError::Capacity { .. } => 2,
            _ => 1,
        }
    }
}

static SERVE_DONE: AtomicBool = AtomicBool::new(false);

/// Runs the server until SIGINT/SIGTERM, then cleans up and prints the summary.
pub fn run(mut config: ServerConfig) -> Result<(), ServerError> {
    check_threads(&config)?;
    let cap = fit_max_conns_to_fd_limit(&mut config)?;
    signal::ignore_sigpipe().map_err(ServerError::Setup)?;
    let shutdown = Shutdown::install().map_err(ServerError::Setup)?;
    let stats = Stats::new_shared().map_err(ServerError::Setup)?;

    let what = if config.transport.is_unix() { "--path" } else { "--addr" };
    let bind_err = |source| ServerError::Bind {
        what,
        endpoint: config.endpoint.clone(),
        source,
    };
    let endpoint = match &config.endpoint {
        // Refuse an address another socket holds, SO_REUSEPORT or not; port 0 resolved here.
        Endpoint::Inet(a) => Endpoint::Inet(net::claim_inet(config.transport, *a).map_err(bind_err)?),
        unix => unix.clone(),
    };
    let socket = net::bind_server(config.transport, &endpoint, BindOptions::default()).map_err(bind_err)?;
    let local = net::local_endpoint(socket.as_fd()).map_err(bind_err)?;

    // The socket file is ours only while it is the very file bind created.
    let socket_file = match &local {
        Endpoint::Unix(p) => Some(SocketFile {
            id: net::FileId::of(p).map_err(bind_err)?,
            path: p.clone(),
        }),
        Endpoint::Inet(_) => None,
    };
    let (backend_kind, transport) = (config.backend, config.transport);
    spawn_stop_backstop(shutdown, stats, (backend_kind, transport), socket_file.clone());

    let announce = {
        let (config, local) = (config.clone(), local.clone());
        Box::new(move |details: &str| {
            // A cap on connections means nothing to a datagram socket.
            // `cap=TxS`: T tables (rings or threads) of S connections each.
            let cap = cap
                .map(|c| format!(" cap={}x{}", c.tables, c.per_table))
                .unwrap_or_default();
            let details = match config.transport.is_stream() {
                true => format!(
                    "max_conns={}{cap}{}{details}",
                    config.max_conns,
                    if details.is_empty() { "" } else { " " }
                ),
                false => details.to_string(),
            };
            print_listening(
                &local,
                config.transport,
                config.backend.name(),
                config.threads,
                config.pin.as_ref(),
                &details,
            );
        })
    };
    let ctx = ServeContext::new(config, socket, local, stats, shutdown, announce);
    let result = backend::create(backend_kind).serve(ctx);
    SERVE_DONE.store(true, Ordering::SeqCst);
    finish(stats, (backend_kind, transport), socket_file.as_ref());
    result.map_err(|source| match config_error(source) {
        Ok(flag) => ServerError::Config(flag),
        Err(source) => ServerError::Backend {
            backend: backend_kind,
            source,
        },
    })
}

/// A backend's refusal of a flag's value that only the kernel could judge
/// (a ring size, say), carried as a [`ConfigError`] inside the `io::Error`.
fn config_error(e: io::Error) -> Result<ConfigError, io::Error> {
    if !e.get_ref().is_some_and(|inner| inner.is::<ConfigError>()) {
        return Err(e);
    }
    let kind = e.kind();
    let inner = e.into_inner().expect("a custom error, checked above");
    inner
        .downcast::<ConfigError>()
        .map(|flag| *flag)
        .map_err(|other| io::Error::new(kind, other))
}

/// The most event loops (epoll, uring) or preforked datagram processes (fork):
/// more than one per core buys nothing, and each costs memory.
pub const MAX_LOOP_THREADS: usize = 1024;

/// `--threads` against what the backend and the machine can hold.
fn check_threads(config: &ServerConfig) -> Result<(), ServerError> {
    let refuse = |reason: String| ServerError::Capacity {
        flag: "--threads",
        value: config.threads,
        reason,
    };
    match config.backend {
        BackendKind::Threadpool => backend::threadpool::check_capacity(config.threads).map_err(refuse),
        _ if config.threads > MAX_LOOP_THREADS => Err(refuse(format!(
            "at most {MAX_LOOP_THREADS} for --backend {}; only threadpool runs a thread per connection",
            config.backend
        ))),
        _ => Ok(()),
    }
}

/// Descriptors a server process needs besides one per connection: stdio,
/// the stop eventfd, the listener, and (epoll, uring) per thread an epoll or
/// ring fd and a socket, with room to spare. threadpool's workers hold only
/// their connection. An epoll worker's own table starts as a copy of all of
/// these, so each table keeps the same reserve.
fn fd_reserve(config: &ServerConfig) -> usize {
    match config.backend {
        BackendKind::Fork | BackendKind::Threadpool => 64,
        BackendKind::Epoll | BackendKind::Uring => 64 + 4 * config.threads,
    }
}

/// Where a backend's connections live, and so how many it can hold under
/// `RLIMIT_NOFILE`, which bounds each table, not the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnCap {
    /// Tables the connections are spread over.
    pub tables: usize,
    /// Connections one table holds.
    pub per_table: usize,
}

impl ConnCap {
    pub fn total(self) -> usize {
        self.tables.saturating_mul(self.per_table)
    }

    /// The cap of `config`'s backend under a descriptor limit of `limit`;
    /// `None` where descriptors cap nothing (fork's parent holds no
    /// connection, each child has its own table; a datagram socket has no
    /// connections).
    ///
    /// - uring with fixed files: a direct-accepted socket is a slot in its
    ///   ring's fixed file table and in no descriptor table, and a ring's
    ///   table may hold up to `RLIMIT_NOFILE` slots: rings × slots.
    /// - epoll: each event loop takes a descriptor table of its own once its
    ///   listener and epoll instance are set up (`unshare(CLONE_FILES)`):
    ///   threads × (table − reserve).
    /// - threadpool, and uring with `--uring-fixed-files off`: one table,
    ///   shared by every thread.
    pub fn of(config: &ServerConfig, limit: usize) -> Option<ConnCap> {
        if config.backend == BackendKind::Fork || !config.transport.is_stream() {
            return None;
        }
        let threads = config.threads.max(1);
        let one_table = limit.saturating_sub(fd_reserve(config));
        Some(match config.backend {
            BackendKind::Uring if config.uring.fixed_files => ConnCap {
                tables: threads,
                per_table: limit.min(crate::ring::MAX_FIXED_FILES),
            },
            BackendKind::Epoll => ConnCap {
                tables: threads,
                per_table: one_table,
            },
            _ => ConnCap {
                tables: 1,
                per_table: one_table,
            },
        })
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, then makes sure
/// `--max-conns` connections fit in the tables the backend spreads them
/// over ([`ConnCap::of`]): if not, the cap is lowered to what fits and
/// stderr says so. Returns the cap, for the `listening` line.
fn fit_max_conns_to_fd_limit(config: &mut ServerConfig) -> Result<Option<ConnCap>, ServerError> {
    let limit = sys::raise_fd_limit().unwrap_or_else(|_| sys::fd_limit());
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let Some(cap) = ConnCap::of(config, limit) else {
        return Ok(None);
    };
    let fits = cap.total();
    if fits >= config.max_conns {
        return Ok(Some(cap));
    }
    if fits == 0 {
        let reserve = fd_reserve(config);
        return Err(ServerError::Capacity {
            flag: "--max-conns",
            value: config.max_conns,
            reason: format!(
                "`ulimit -n` is {limit} (hard limit included), and {reserve} descriptors are needed before the first connection; raise it"
            ),
        });
    }
    eprintln!(
        "server: warning: `ulimit -n` is {limit} (hard limit included): --max-conns lowered from {} to {fits} ({} table{} of {})",
        config.max_conns,
        cap.tables,
        if cap.tables == 1 { "" } else { "s" },
        cap.per_table
    );
    config.max_conns = fits;
    Ok(Some(cap))
}

/// The Unix socket file the server bound, and its identity at bind time.
#[derive(Clone, Debug)]
struct SocketFile {
    path: std::path::PathBuf,
    id: net::FileId,
}

/// Removes the socket file (if it is still ours) and prints the summary line.
fn finish(stats: &Stats, (backend, transport): (BackendKind, Transport), socket_file: Option<&SocketFile>) {
    if let Some(f) = socket_file {
        net::remove_socket_file(&f.path, f.id);
    }
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{}", stats.summary_line(backend, transport));
    let _ = out.flush();
}

/// A thread that waits for the stop request and, if the backend has not
/// returned within [`STOP_DEADLINE`], finishes and exits the process itself.
/// This bounds shutdown time even if a backend is stuck in a blocking call.
fn spawn_stop_backstop(
    shutdown: Shutdown,
    stats: &'static Stats,
    backend: (BackendKind, Transport),
    socket_file: Option<SocketFile>,
) {
    std::thread::Builder::new()
        .name("stop-backstop".into())
        .spawn(move || {
            let mut pfd = libc::pollfd {
                fd: shutdown.fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            while !shutdown.requested() {
                // No timeout: the eventfd stays readable once a stop is requested.
                // SAFETY: `pfd` is a valid pollfd for the duration of the call.
                unsafe { libc::poll(&mut pfd, 1, -1) };
            }
            std::thread::sleep(STOP_DEADLINE);
            if !SERVE_DONE.load(Ordering::SeqCst) {
                // Said, so that a stop that took this path can be told from
                // an orderly one: the counts are what the backend had
                // flushed, and connections it still held are closed by the
                // kernel as the process exits.
                eprintln!(
                    "server: warning: the backend did not stop within {:?}; exiting without it",
                    STOP_DEADLINE
                );
                finish(stats, backend, socket_file.as_ref());
                std::process::exit(0);
            }
        })
        .expect("spawn stop-backstop thread");
}

/// Prints the `listening` line that scripts and `compare` wait for, in the
/// one format every sockbench server uses (`server` and `tokio-echo`):
/// `listening addr=… transport=… backend=… pid=… threads=… pin=… DETAILS`
/// (`pid=` for `loadgen --server-pid`).
pub fn print_listening(
    local: &Endpoint,
    transport: Transport,
    backend: &str,
    threads: usize,
    pin: Option<&crate::cpu::CpuList>,
    details: &str,
) {
    let pin = pin.map(|p| p.to_string()).unwrap_or_else(|| "none".into());
    let mut out = io::stdout().lock();
    let _ = writeln!(
        out,
        "listening addr={local} transport={transport} backend={backend} pid={} threads={threads} pin={pin} {details}",
        std::process::id()
    );
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::config::UringOptions;

    fn config(backend: BackendKind, transport: Transport, fixed_files: bool) -> ServerConfig {
        ServerConfig {
            backend,
            transport,
            endpoint: Endpoint::Inet("127.0.0.1:0".parse().unwrap()),
            threads: 4,
            pin: None,
            max_conns: 100_000,
            uring: UringOptions {
                fixed_files,
                ..UringOptions::default()
            },
            calibration_spin_ns: None,
        }
    }

    /// Issue 25's arithmetic: at `ulimit -n` 20,000, 4 uring rings hold
    /// 80,000 connections and 4 epoll threads 4 tables less their reserve;
    /// threadpool and uring without fixed files one table; fork and
    /// datagrams are not capped by descriptors.
    #[test]
    fn the_connection_cap_is_tables_times_what_each_holds() {
        let cap = |b, t, fixed| ConnCap::of(&config(b, t, fixed), 20_000);
        let reserve = 64 + 4 * 4;
        assert_eq!(
            cap(BackendKind::Uring, Transport::Tcp, true),
            Some(ConnCap {
                tables: 4,
                per_table: 20_000
            })
        );
        assert_eq!(cap(BackendKind::Uring, Transport::Tcp, true).unwrap().total(), 80_000);
        assert_eq!(
            cap(BackendKind::Epoll, Transport::Unix, true),
            Some(ConnCap {
                tables: 4,
                per_table: 20_000 - reserve
            })
        );
        assert_eq!(
            cap(BackendKind::Uring, Transport::Tcp, false),
            Some(ConnCap {
                tables: 1,
                per_table: 20_000 - reserve
            })
        );
        assert_eq!(
            cap(BackendKind::Threadpool, Transport::Tcp, true),
            Some(ConnCap {
                tables: 1,
                per_table: 20_000 - 64
            })
        );
        assert_eq!(cap(BackendKind::Fork, Transport::Tcp, true), None);
        assert_eq!(cap(BackendKind::Epoll, Transport::Udp, true), None);
    }
}
