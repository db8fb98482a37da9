//! The `uring` backend: one io_uring per thread, multishot accept, multishot
//! receive into a provided buffer ring, and one `io_uring_enter` per loop turn.
//!
//! - [`crate::ring`]: the ring itself ([`Driver`]), its setup and probes,
//!   the buffer ring and the `user_data` layout, shared with loadgen.
//! - `stream`: TCP and Unix stream connections.
//! - `datagram`: UDP and Unix datagrams (multishot recvmsg, sendto back).
//! - `token`: this backend's operations, in the ring's `user_data` layout.
//! - `files`: how operations name sockets (fixed file table or descriptors).
//! - `wait`: how many completions a loop turn waits for.
//!
//! Each worker thread owns a ring, a buffer ring and its own socket: for IP a
//! `SO_REUSEPORT` listener (or datagram socket) of its own, so the kernel
//! spreads flows across rings. Unix sockets have no `SO_REUSEPORT`, so every
//! ring shares the one bound socket; a multishot accept (or recvmsg) on the same
//! socket from several rings is fine, each connection (datagram) goes to one.
//!
//! What each enter and operation costs is kept down: the ring is entered by
//! its registered index (`ring::registered`), connections are slots in the ring's
//! fixed file table (direct accept, `IOSQE_FIXED_FILE`), and sends carry
//! `MSG_DONTWAIT`, so they complete as they are submitted.
//!
//! Each technique can be switched for A/B measurement (`--uring-register-ring`,
//! `--uring-fixed-files`, `--uring-wait`, `--uring-hugepages`,
//! `--uring-min-wait`, `--buf-count`, `--buf-size`); the `listening` line
//! reports which variant runs, and docs/uring.md ("What each uring technique
//! did") has what each did.
//! One was reverted by its A/B: waiting for one completion more than a turn's
//! own sends (`wait::plan_wait`, `--uring-wait quiet`) saves an enter per echo but
//! needs a timeout, and arming that timer on every enter cost more than the
//! enter it saved. `--uring-min-wait` (off by default) batches wake-ups with
//! the kernel's own min_wait instead (see `wait::plan_wait`).
//!
//! Rare ring errors do not end the server ([`crate::ring::EnterError`]): a submission the
//! kernel has no memory for is retried after a back-off, and after dropped
//! completions (`EBADR`) a worker starts over; both count in `ring_errors`.

mod datagram;
mod files;
mod stream;
mod token;
mod wait;

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc;

use super::workers::{self, WorkerSockets};
use super::Backend;
use crate::net::Transport;
use crate::ring::buf_ring::BufRing;
use crate::ring::setup::{self, SetupFlags};
use crate::ring::{Driver, RingPart, SizeRefused};
use crate::serve::config::{ConfigError, OnOff, UringOptions};
use crate::serve::{ServeContext, ServerConfig, Shutdown, Stats};
use files::{register_files, Files};
use wait::WaitPolicy;

/// io_uring with multishot accept/recv and a provided buffer ring.
pub struct Uring;

/// The largest completion queue we ask for; the kernel clamps to its own
/// limit anyway (`setup_clamp`).
const MAX_CQ_ENTRIES: u32 = 1 << 17;

/// The recvmsg header plus a `sockaddr_storage` name in front of each datagram
/// (see `io_uring::types::RecvMsgOut`).
const DGRAM_HEADER: u32 = 16 + std::mem::size_of::<libc::sockaddr_storage>() as u32;
/// The largest datagram any transport carries (unixgram; UDP is a little less).
const MAX_DATAGRAM: u32 = 64 * 1024;
/// Datagram buffers must each hold a whole datagram, so they are bigger than
/// stream buffers; this caps their number per ring (about 17 MiB).
const MAX_DGRAM_BUFS: u32 = 256;

/// Set (to anything) to make Unix stream connections use single-shot
/// receives even where the kernel reports EOF on multishot ones, so that the
/// fallback path can be tested on any kernel.
pub const FORCE_SINGLE_SHOT_ENV: &str = "SOCKBENCH_URING_UNIX_SINGLE_SHOT";

/// State shared by every worker thread.
struct Shared {
    /// Connections open across all rings, for `--max-conns`.
    open: AtomicUsize,
    max_conns: usize,
    stats: &'static Stats,
    shutdown: Shutdown,
    /// Unixgram only: the send-buffer fairness every ring shares.
    unix_budget: Option<&'static crate::backend::peer_budget::SharedPeerBudget>,
}

/// The sizes a ring actually got and the techniques it runs with (as
/// effective, not as asked for), for the `listening` line.
#[derive(Clone, Debug)]
struct RingInfo {
    flags: SetupFlags,
    sq_entries: u32,
    cq_entries: u32,
    buf_count: u32,
    buf_size: u32,
    unix_recv: &'static str,
    files: Files,
    /// Entered by registered index (asked for, and the kernel has it).
    registered_ring: bool,
    wait: crate::serve::config::UringWait,
    /// `MADV_HUGEPAGE` on the buffers (asked for, and madvise took it).
    hugepages: bool,
    /// `--uring-min-wait` (0: off); a kernel without it refuses to start.
    min_wait_usec: u32,
}

impl Backend for Uring {
    fn serve(&self, mut ctx: ServeContext) -> io::Result<()> {
        let threads = ctx.config.threads.max(1);
        let transport = ctx.config.transport;
        let shared = Shared {
            open: AtomicUsize::new(0),
            max_conns: ctx.config.max_conns,
            stats: ctx.stats,
            shutdown: ctx.shutdown,
            unix_budget: workers::unix_budget(transport, ctx.socket.as_fd())?,
        };
        let sockets = WorkerSockets::bind(transport, &ctx.local, ctx.socket.as_fd(), threads, false)?;
        let (setup_tx, setup_rx) = mpsc::channel::<io::Result<RingInfo>>();
        let setup_txs = vec![setup_tx; threads];
        let config = ctx.config.clone();
        let work = |i: usize, setup_tx| run_worker(&config, sockets.get(i), &shared, setup_tx);
        let announce = || {
            let setup = first_ring_info(&setup_rx, threads);
            match &setup {
                Ok(Some(info)) => ctx.ready(&info.details()),
                // A worker failed to set up: stop the others, which are serving already.
                _ => ctx.shutdown.request(),
            }
            setup.map(drop)
        };
        workers::run("uring", &config, shared.shutdown, setup_txs, work, announce)
    }
}

/// The first ring's [`RingInfo`] once every ring has set up, or the first
/// setup error; `Ok(None)` if the workers went away first.
fn first_ring_info(setup_rx: &mpsc::Receiver<io::Result<RingInfo>>, threads: usize) -> io::Result<Option<RingInfo>> {
    let mut first = None;
    for _ in 0..threads {
        match setup_rx.recv() {
            Ok(Ok(info)) => {
                first.get_or_insert(info);
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => break,
        }
    }
    Ok(first)
}

impl RingInfo {
    /// The `listening` line's uring details.
    fn details(&self) -> String {
        format!(
            "setup={} ring_entries={} cq_entries={} buf_count={} buf_size={} unix_recv={} \
             fixed_files={} register_ring={} wait={} hugepages={} min_wait_usec={}",
            self.flags.name(),
            self.sq_entries,
            self.cq_entries,
            self.buf_count,
            self.buf_size,
            self.unix_recv,
            OnOff::name(self.files == Files::Fixed),
            OnOff::name(self.registered_ring),
            self.wait.name(),
            OnOff::name(self.hugepages),
            self.min_wait_usec,
        )
    }
}

/// Sets up one ring and serves on it until shutdown. Setup errors go to
/// `setup_tx` (the main thread reports them); later errors are returned.
fn run_worker(
    config: &ServerConfig,
    socket: BorrowedFd<'_>,
    shared: &Shared,
    setup_tx: mpsc::Sender<io::Result<RingInfo>>,
) -> io::Result<()> {
    let stream = config.transport.is_stream();
    let opts = &config.uring;
    let (buf_count, buf_size) = if stream {
        (opts.buf_count, opts.buf_size)
    } else {
        (
            opts.buf_count.min(MAX_DGRAM_BUFS),
            opts.buf_size.max(MAX_DATAGRAM + DGRAM_HEADER),
        )
    };
    // Every connection can have a receive and a send (or poll) completion
    // pending at once, plus a few reserved operations per ring.
    let cq_entries = (opts.ring_entries.saturating_mul(2))
        .max((config.max_conns as u32).saturating_mul(2).saturating_add(64))
        .min(MAX_CQ_ENTRIES)
        .next_power_of_two();
    let files = if opts.fixed_files { Files::Fixed } else { Files::Fds };
    let setup = (|| {
        let mut d = Driver::new(opts.ring_entries, cq_entries, buf_count, buf_size)
            .map_err(|e| name_refused_size(e, opts, buf_count, buf_size))?;
        // Only an optimisation: without it (before 5.18) enters use the fd.
        if opts.register_ring {
            let _ = d.register_ring_fd();
        }
        if files == Files::Fixed {
            register_files(&d, stream, config.max_conns, socket)?;
        }
        // Before any receive has touched the buffers, so that their first
        // faults already get huge pages.
        let hugepages = opts.hugepages && advise_hugepages(&d.bufs);
        if opts.min_wait_usec > 0 {
            check_min_wait(&d, opts.min_wait_usec)?;
        }
        let test = setup::self_test(&mut d)?;
        if !stream {
            setup::probe_sendto(&mut d)?;
        }
        let forced = std::env::var_os(FORCE_SINGLE_SHOT_ENV).is_some();
        let unix_single_shot = config.transport == Transport::Unix && (forced || !test.unix_multishot_eof);
        let info = RingInfo {
            flags: d.flags,
            sq_entries: d.ring.params().sq_entries(),
            cq_entries: d.ring.params().cq_entries(),
            buf_count,
            buf_size,
            unix_recv: if unix_single_shot { "single-shot" } else { "multishot" },
            files,
            registered_ring: d.ring_registered(),
            wait: opts.wait,
            hugepages,
            min_wait_usec: opts.min_wait_usec,
        };
        Ok::<_, io::Error>((d, info, unix_single_shot))
    })();
    let (d, unix_single_shot) = match setup {
        Ok((d, info, single)) => {
            let _ = setup_tx.send(Ok(info));
            (d, single)
        }
        Err(e) => {
            let _ = setup_tx.send(Err(e));
            return Ok(());
        }
    };
    drop(setup_tx);
    let wait = WaitPolicy {
        mode: opts.wait,
        min_wait_usec: opts.min_wait_usec,
    };
    if stream {
        stream::StreamWorker::new(d, socket, shared, files, wait, unix_single_shot).run()
    } else {
        datagram::DgramWorker::new(d, socket, shared, files, wait).run()
    }
}

/// A size the kernel refused, as a refusal of the flag that set it (the
/// server then exits 2 naming it); any other error as it is.
fn name_refused_size(e: io::Error, opts: &UringOptions, buf_count: u32, buf_size: u32) -> io::Error {
    let Some(refused) = SizeRefused::of(&e) else {
        return e;
    };
    let flag = match refused.part {
        RingPart::Queues => ConfigError::Flag {
            flag: "--ring-entries",
            value: opts.ring_entries.to_string(),
            reason: format!("the kernel refused a ring of this size: {}; try fewer", refused.source),
        },
        RingPart::Buffers => ConfigError::Flag {
            flag: "--buf-count",
            value: format!("{buf_count} with --buf-size {buf_size}"),
            reason: format!(
                "the kernel refused {} MiB of buffers per ring: {}; try fewer or smaller buffers",
                (buf_count as u64 * buf_size as u64) >> 20,
                refused.source
            ),
        },
    };
    io::Error::other(flag)
}

/// `--uring-min-wait`: the kernel must know `min_wait_usec` (Linux 6.12,
/// `IORING_FEAT_MIN_TIMEOUT`). An older one took the field for padding and
/// fails every such wait with `EINVAL`, so the server would die at its first
/// wait; this says why at start-up instead, naming the flag.
fn check_min_wait(d: &Driver, min_wait_usec: u32) -> io::Result<()> {
    if d.supports_min_wait() {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "--uring-min-wait {min_wait_usec}: kernel lacks io_uring min_wait (IORING_FEAT_MIN_TIMEOUT, Linux 6.12); \
             run without it (--uring-min-wait 0)"
        ),
    ))
}

/// `--uring-hugepages on`: asks for transparent huge pages for the buffer
/// ring's buffers. Returns whether madvise took it; if not, says so on stderr
/// (once per process, not once per ring) and the server runs without.
fn advise_hugepages(bufs: &BufRing) -> bool {
    static WARNED: std::sync::Once = std::sync::Once::new();
    match bufs.advise_hugepages() {
        Ok(()) => true,
        Err(e) => {
            WARNED.call_once(|| {
                eprintln!("server: warning: --uring-hugepages on: madvise(MADV_HUGEPAGE) failed ({e}); running without huge pages")
            });
            false
        }
    }
}
