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
    fit_max_conns_to_fd_limit(&mut config)?;
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
    let backend_kind = config.backend;
    spawn_stop_backstop(shutdown, stats, backend_kind, socket_file.clone());

    let announce = {
        let (config, local) = (config.clone(), local.clone());
        Box::new(move |details: &str| {
            let details = format!(
                "max_conns={}{}{details}",
                config.max_conns,
                if details.is_empty() { "" } else { " " }
            );
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
    finish(stats, backend_kind, socket_file.as_ref());
    result.map_err(|source| ServerError::Backend {
        backend: backend_kind,
        source,
    })
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
/// their connection.
fn fd_reserve(config: &ServerConfig) -> usize {
    match config.backend {
        BackendKind::Fork | BackendKind::Threadpool => 64,
        BackendKind::Epoll | BackendKind::Uring => 64 + 4 * config.threads,
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, then makes sure
/// `--max-conns` connections fit in it: if not, the cap is lowered to what
/// fits and stderr says so. fork's parent holds no connection descriptors
/// (each child holds its own one), so only the raise applies to it.
fn fit_max_conns_to_fd_limit(config: &mut ServerConfig) -> Result<(), ServerError> {
    let limit = sys::raise_fd_limit().unwrap_or_else(|_| sys::fd_limit());
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if config.backend == BackendKind::Fork {
        return Ok(());
    }
    let reserve = fd_reserve(config);
    if limit.saturating_sub(reserve) >= config.max_conns {
        return Ok(());
    }
    let fits = limit.saturating_sub(reserve);
    if fits == 0 {
        return Err(ServerError::Capacity {
            flag: "--max-conns",
            value: config.max_conns,
            reason: format!(
                "`ulimit -n` is {limit} (hard limit included), and {reserve} descriptors are needed before the first connection; raise it"
            ),
        });
    }
    eprintln!(
        "server: warning: `ulimit -n` is {limit} (hard limit included): --max-conns lowered from {} to {fits}",
        config.max_conns
    );
    config.max_conns = fits;
    Ok(())
}

/// The Unix socket file the server bound, and its identity at bind time.
#[derive(Clone, Debug)]
struct SocketFile {
    path: std::path::PathBuf,
    id: net::FileId,
}

/// Removes the socket file (if it is still ours) and prints the summary line.
fn finish(stats: &Stats, backend: BackendKind, socket_file: Option<&SocketFile>) {
    if let Some(f) = socket_file {
        net::remove_socket_file(&f.path, f.id);
    }
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{}", stats.summary_line(backend.name()));
    let _ = out.flush();
}

/// A thread that waits for the stop request and, if the backend has not
/// returned within [`STOP_DEADLINE`], finishes and exits the process itself.
/// This bounds shutdown time even if a backend is stuck in a blocking call.
fn spawn_stop_backstop(
    shutdown: Shutdown,
    stats: &'static Stats,
    backend: BackendKind,
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
                finish(stats, backend, socket_file.as_ref());
                std::process::exit(0);
            }
        })
        .expect("spawn stop-backstop thread");
}

/// Prints the `listening` line that scripts and `compare` wait for, in the
/// one format every sockbench server uses (`server` and `tokio-echo`):
/// `listening addr=… transport=… backend=… threads=… pin=… DETAILS`.
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
        "listening addr={local} transport={transport} backend={backend} threads={threads} pin={pin} {details}"
    );
    let _ = out.flush();
}
