//! The lifecycle, as `server`'s: bind (so that an unusable address fails
//! before anything runs), start the runtime and the echo tasks, print
//! `listening`, wait for SIGINT/SIGTERM, stop the runtime (which closes every
//! connection), remove the Unix socket file it bound, print `summary`.

use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sockbench::net::{self, AddrError, BindOptions, Endpoint, Transport};
use tokio::signal::unix::{signal, SignalKind};

use crate::config::Config;
use crate::{counts, echo};

/// How long the runtime's tasks get to finish once a stop is requested
/// (they are cancelled at their next `.await`, so this is rarely waited).
const STOP_DEADLINE: Duration = Duration::from_millis(1000);

/// What went wrong: the user's flags (exit 2) or anything else (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Address(#[from] AddrError),
    #[error("cannot listen on {what} {endpoint}: {source}")]
    Bind {
        what: &'static str,
        endpoint: Endpoint,
        source: io::Error,
    },
    #[error("{context}: {source}")]
    Setup { context: &'static str, source: io::Error },
}

impl RunError {
    /// 2 for anything the user typed wrong (flags, addresses), 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Address(_) | RunError::Bind { .. } => 2,
            RunError::Setup { .. } => 1,
        }
    }
}

fn setup(context: &'static str) -> impl FnOnce(io::Error) -> RunError {
    move |source| RunError::Setup { context, source }
}

/// The Unix socket file this process bound, and how to know it is still that
/// one: a file put in its place meanwhile is not ours to remove.
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    fn bound(path: &Path) -> io::Result<SocketFile> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok(SocketFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    fn remove(&self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_socket() && m.dev() == self.dev && m.ino() == self.ino);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Serves until SIGINT/SIGTERM, then cleans up and prints the summary.
pub fn run(config: Config) -> Result<(), RunError> {
    let what = if config.transport.is_unix() { "--path" } else { "--addr" };
    let bind_err = |source| RunError::Bind {
        what,
        endpoint: config.endpoint.clone(),
        source,
    };
    let primary = net::bind_server(config.transport, &config.endpoint, BindOptions::default()).map_err(bind_err)?;
    let local = net::local_endpoint(primary.as_fd()).map_err(bind_err)?;
    let socket_file = match &local {
        Endpoint::Unix(p) => Some(SocketFile::bound(p).map_err(bind_err)?),
        Endpoint::Inet(_) => None,
    };
    // Per-worker UDP sockets are bound here too, so that a failure is a bind error.
    let mut udp_extra = Vec::new();
    if config.transport == Transport::Udp {
        for _ in 1..config.threads {
            udp_extra.push(net::bind_server(Transport::Udp, &local, BindOptions::default()).map_err(bind_err)?);
        }
    }

    let runtime = build_runtime(&config).map_err(setup("tokio runtime"))?;
    let served = runtime.block_on(async {
        // Before `listening`: a stop signal from then on must be caught.
        let mut term = signal(SignalKind::terminate()).map_err(setup("SIGTERM handler"))?;
        let mut int = signal(SignalKind::interrupt()).map_err(setup("SIGINT handler"))?;
        spawn_echo(&config, primary, udp_extra).map_err(setup("serving socket"))?;
        sockbench::server::print_listening(
            &local,
            config.transport,
            "tokio",
            config.threads,
            config.pin.as_ref(),
            "runtime=multi_thread",
        );
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        Ok::<(), RunError>(())
    });
    // Cancels every task: connections close, clients see EOF.
    runtime.shutdown_timeout(STOP_DEADLINE);
    if let Some(f) = &socket_file {
        f.remove();
    }
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{}", counts::summary_line());
    let _ = out.flush();
    served
}

/// A multi-thread runtime with `--threads` workers, pinned if `--pin` was given.
fn build_runtime(config: &Config) -> io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(config.threads).enable_all();
    if let Some(pin) = config.pin.clone() {
        let workers = config.threads;
        let started = AtomicUsize::new(0);
        // The runtime starts its workers first, so the first `workers`
        // threads are they; later ones (tokio's blocking pool, unused here)
        // are left unpinned.
        builder.on_thread_start(move || {
            let i = started.fetch_add(1, Ordering::Relaxed);
            if i < workers {
                pin.pin_worker(i);
            }
        });
    }
    builder.build()
}

/// Spawns the echo tasks for the transport: an accept loop for streams, a
/// receive loop per worker for datagrams.
fn spawn_echo(config: &Config, primary: OwnedFd, udp_extra: Vec<OwnedFd>) -> io::Result<()> {
    match config.transport {
        Transport::Tcp => {
            let listener = echo::nonblocking::<std::net::TcpListener>(primary)?;
            tokio::spawn(echo::serve_tcp(tokio::net::TcpListener::from_std(listener)?));
        }
        Transport::Unix => {
            let listener = echo::nonblocking::<std::os::unix::net::UnixListener>(primary)?;
            tokio::spawn(echo::serve_unix(tokio::net::UnixListener::from_std(listener)?));
        }
        Transport::Udp => {
            for fd in std::iter::once(primary).chain(udp_extra) {
                let socket = echo::nonblocking::<std::net::UdpSocket>(fd)?;
                tokio::spawn(echo::serve_udp(tokio::net::UdpSocket::from_std(socket)?));
            }
        }
        Transport::Unixgram => {
            let socket = echo::nonblocking::<std::os::unix::net::UnixDatagram>(primary)?;
            let socket = Arc::new(tokio::net::UnixDatagram::from_std(socket)?);
            for _ in 0..config.threads {
                tokio::spawn(echo::serve_unixgram(socket.clone()));
            }
        }
    }
    Ok(())
}
