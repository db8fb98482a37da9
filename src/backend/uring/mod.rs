//! The `uring` backend: one io_uring per thread, multishot accept, multishot
//! receive into a provided buffer ring, and one `io_uring_enter` per loop turn.
//!
//! - [`setup`]: ring creation with the best setup flags, and kernel probing.
//! - [`buf_ring`]: the provided buffer ring that receives land in.
//! - [`stream`]: TCP and Unix stream connections.
//! - [`datagram`]: UDP and Unix datagrams (multishot recvmsg, sendto back).
//! - [`token`]: the `user_data` encoding.
//!
//! [`Driver`] (a ring, its buffer ring and submission batching), [`setup`],
//! [`buf_ring`] and [`token`] are public because loadgen's io_uring mode
//! drives its client connections with the same machinery.
//!
//! Each worker thread owns a ring, a buffer ring and its own socket: for IP a
//! `SO_REUSEPORT` listener (or datagram socket) of its own, so the kernel
//! spreads flows across rings. Unix sockets have no `SO_REUSEPORT`, so every
//! ring shares the one bound socket; a multishot accept (or recvmsg) on the same
//! socket from several rings is fine, each connection (datagram) goes to one.
//!
//! What each enter and operation costs is kept down: the ring is entered by
//! its registered index (`registered.rs`), connections are slots in the ring's
//! fixed file table (direct accept, `IOSQE_FIXED_FILE`), and sends carry
//! `MSG_DONTWAIT`, so they complete as they are submitted.
//!
//! Each technique can be switched for A/B measurement (`--uring-register-ring`,
//! `--uring-fixed-files`, `--uring-wait`, `--uring-hugepages`,
//! `--uring-min-wait`, `--buf-count`, `--buf-size`); the `listening` line
//! reports which variant runs, and README's uring section has what each did.
//! One was reverted by its A/B: waiting for one completion more than a turn's
//! own sends ([`plan_wait`], `--uring-wait quiet`) saves an enter per echo but
//! needs a timeout, and arming that timer on every enter cost more than the
//! enter it saved. `--uring-min-wait` (off by default) batches wake-ups with
//! the kernel's own min_wait instead (see [`plan_wait`]).
//!
//! Rare ring errors do not end the server ([`EnterError`]): a submission the
//! kernel has no memory for is retried after a back-off, and after dropped
//! completions (`EBADR`) a worker starts over; both count in `ring_errors`.

pub mod buf_ring;
mod datagram;
mod registered;
pub mod setup;
pub use setup::FORCE_SETUP_ENV;
mod stream;
pub mod token;

use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::AtomicUsize;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::Backend;
use crate::net::{self, BindOptions, Endpoint, Transport};
use crate::server::{OnOff, ServeContext, ServerConfig, Shutdown, Stats, UringWait};
use buf_ring::BufRing;
use setup::SetupFlags;

/// io_uring with multishot accept/recv and a provided buffer ring.
pub struct Uring;

/// The buffer group id of each ring's (only) provided buffer ring.
const BGID: u16 = 0;

/// A datagram ring's socket is slot 0 of its fixed file table.
const DGRAM_SOCKET_FILE: u32 = 0;
/// The kernel's largest fixed file table (`IORING_MAX_FIXED_FILES`).
const MAX_FIXED_FILES: u64 = 1 << 20;

/// The largest completion queue we ask for; the kernel clamps to its own
/// limit anyway (`setup_clamp`).
const MAX_CQ_ENTRIES: u32 = 1 << 17;

/// How long shutdown waits for cancelled operations to complete before it
/// gives up and leaks the memory they might still write into.
const QUIESCE_WAIT: Duration = Duration::from_millis(400);

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
    wait: UringWait,
    /// `MADV_HUGEPAGE` on the buffers (asked for, and madvise took it).
    hugepages: bool,
    /// `--uring-min-wait` (0: off); a kernel without it refuses to start.
    min_wait_usec: u32,
}

impl Backend for Uring {
    fn serve(&self, mut ctx: ServeContext) -> io::Result<()> {
        let threads = ctx.config.threads.max(1);
        let shared = Arc::new(Shared {
            open: AtomicUsize::new(0),
            max_conns: ctx.config.max_conns,
            stats: ctx.stats,
            shutdown: ctx.shutdown,
            unix_budget: match ctx.config.transport == crate::net::Transport::Unixgram {
                true => Some(crate::backend::peer_budget::SharedPeerBudget::new(ctx.socket.as_fd())?),
                false => None,
            },
        });
        // A duplicate, because `ctx` (which owns the original) is still needed for `ready`.
        let primary = Arc::new(ctx.socket.try_clone()?);
        let (setup_tx, setup_rx) = mpsc::channel::<io::Result<RingInfo>>();
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let (config, local, shared, primary, setup_tx) = (
                ctx.config.clone(),
                ctx.local.clone(),
                shared.clone(),
                primary.clone(),
                setup_tx.clone(),
            );
            let worker = std::thread::Builder::new().name(format!("uring-{i}")).spawn(move || {
                config.pin_worker(i);
                let socket = match worker_socket(i, &config, &local, primary) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = setup_tx.send(Err(e));
                        return Ok(());
                    }
                };
                run_worker(&config, socket.as_fd(), &shared, setup_tx)
            })?;
            workers.push(worker);
        }
        drop(setup_tx);

        let mut setup_result = Ok(None);
        for _ in 0..threads {
            match setup_rx.recv() {
                Ok(Ok(info)) => {
                    if let Ok(first @ None) = &mut setup_result {
                        *first = Some(info);
                    }
                }
                Ok(Err(e)) => {
                    setup_result = Err(e);
                    break;
                }
                Err(_) => break,
            }
        }
        match &setup_result {
            Ok(Some(info)) => ctx.ready(&format!(
                "setup={} ring_entries={} cq_entries={} buf_count={} buf_size={} unix_recv={} \
                 fixed_files={} register_ring={} wait={} hugepages={} min_wait_usec={}",
                info.flags.name(),
                info.sq_entries,
                info.cq_entries,
                info.buf_count,
                info.buf_size,
                info.unix_recv,
                OnOff::name(info.files == Files::Fixed),
                OnOff::name(info.registered_ring),
                info.wait.name(),
                OnOff::name(info.hugepages),
                info.min_wait_usec,
            )),
            // A worker failed to set up: stop the others, which are serving already.
            _ => ctx.shutdown.request(),
        }
        let mut result = setup_result.map(drop);
        for w in workers {
            let r = w
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("uring worker panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}

/// The socket a worker serves: the primary one for worker 0 and for Unix
/// transports (no `SO_REUSEPORT`), else a new `SO_REUSEPORT` socket on the
/// same address.
fn worker_socket(i: usize, config: &ServerConfig, local: &Endpoint, primary: Arc<OwnedFd>) -> io::Result<Arc<OwnedFd>> {
    if i == 0 || config.transport.is_unix() {
        return Ok(primary);
    }
    let opts = BindOptions {
        reuseport: true,
        ..BindOptions::default()
    };
    Ok(Arc::new(net::bind_server(config.transport, local, opts)?))
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
        let mut d = Driver::new(opts.ring_entries, cq_entries, buf_count, buf_size)?;
        // Only an optimisation: without it (before 5.18) enters use the fd.
        if opts.register_ring {
            let _ = d.register_ring_fd();
        }
        if files == Files::Fixed {
            register_files(&d, config, socket)?;
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
            registered_ring: d.registered_ring.is_some(),
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

/// `--uring-min-wait`: the kernel must know `min_wait_usec` (Linux 6.12,
/// `IORING_FEAT_MIN_TIMEOUT`). An older one took the field for padding and
/// fails every such wait with `EINVAL`, so the server would die at its first
/// wait; this says why at start-up instead, naming the flag.
fn check_min_wait(d: &Driver, min_wait_usec: u32) -> io::Result<()> {
    if d.ring.params().is_feature_min_timeout() {
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

/// How a ring's operations name their sockets (`--uring-fixed-files`).
///
/// `Fixed`: by slot in the ring's fixed file table, which direct accept fills
/// (`register_files`), with `IOSQE_FIXED_FILE`. `Fds`: by ordinary
/// descriptor, as a ring without a file table does; each operation then looks
/// the file up in the process's (shared) table and takes a reference on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Files {
    Fixed,
    Fds,
}

impl Files {
    /// The operand that names socket `file` (a slot or a descriptor); the
    /// entry must carry [`Files::flags`] too, which say which one it is.
    fn fd(self, file: u32) -> types::Fd {
        types::Fd(file as i32)
    }

    /// `IOSQE_FIXED_FILE` when `file` is a slot: with [`Files::fd`], the same
    /// entry `types::Fixed(file)` builds.
    fn flags(self) -> squeue::Flags {
        match self {
            Files::Fixed => squeue::Flags::FIXED_FILE,
            Files::Fds => squeue::Flags::empty(),
        }
    }

    /// Closes socket `file`. A fixed close names the slot in `file_index`
    /// (and frees it for a later direct accept), not by `IOSQE_FIXED_FILE`,
    /// which the kernel refuses on a close: `types::Fixed` builds it so.
    fn close(self, file: u32) -> squeue::Entry {
        match self {
            Files::Fixed => opcode::Close::new(types::Fixed(file)).build(),
            Files::Fds => opcode::Close::new(types::Fd(file as i32)).build(),
        }
    }

    /// Cancels every operation on socket `file`. A cancel names a slot by
    /// its own flag (`IORING_ASYNC_CANCEL_FD_FIXED`), not `IOSQE_FIXED_FILE`.
    fn cancel_all(self, file: u32) -> squeue::Entry {
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
fn register_files(d: &Driver, config: &ServerConfig, socket: BorrowedFd<'_>) -> io::Result<()> {
    let submitter = d.ring.submitter();
    let result = if config.transport.is_stream() {
        let slots = (config.max_conns as u64)
            .min(crate::sys::fd_limit())
            .clamp(1, MAX_FIXED_FILES);
        submitter.register_files_sparse(slots as u32)
    } else {
        submitter.register_files(&[socket.as_raw_fd()])
    };
    result.map_err(|e| setup::missing("registered file tables (IORING_REGISTER_FILES2, Linux 5.19)", e))
}

/// One completion, copied out of the completion queue.
#[derive(Clone, Copy, Debug)]
pub struct Completion {
    pub user_data: u64,
    pub result: i32,
    pub flags: u32,
}

/// What an `io_uring_enter` error means for the loop that got it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnterError {
    /// Nothing is wrong: reap what is there and go on. `ETIME` (the wait's
    /// timeout passed), `EINTR` (a signal, the stop signal among them),
    /// `EBUSY` (the CQ overflowed; reaping makes room).
    Proceed,
    /// The kernel had no memory for new requests (`EAGAIN`, `ENOMEM`). The
    /// entries it did not take stay in the submission queue: wait a little,
    /// then submit them again.
    BackOff,
    /// Completions were dropped after a CQ overflow (`EBADR`, Linux 5.19+
    /// with `IORING_FEAT_NODROP`: the kernel was out of memory even for its
    /// overflow list). Whoever waited for them never hears back; the owner
    /// of the ring must start over ([`Driver::take_dropped`]).
    Dropped,
    /// Anything else is a bug or a dead ring.
    Fatal,
}

impl EnterError {
    pub fn classify(e: &io::Error) -> EnterError {
        match e.raw_os_error() {
            Some(libc::ETIME | libc::EINTR | libc::EBUSY) => EnterError::Proceed,
            Some(libc::EAGAIN | libc::ENOMEM) => EnterError::BackOff,
            Some(libc::EBADR) => EnterError::Dropped,
            _ => EnterError::Fatal,
        }
    }
}

/// How long to wait before the `n`-th consecutive retry of a submission the
/// kernel had no memory for (n = 1 first): 1 ms, doubling, at most 64 ms, so
/// that a stop request (checked every loop turn) is still seen well within
/// the server's stop deadline.
pub fn backoff_delay(n: u32) -> Duration {
    Duration::from_millis(1 << n.saturating_sub(1).min(6))
}

/// The longest a loop turn waits for one more completion than its quiet
/// sends (see [`plan_wait`]); it bounds the delay in the rare case where a
/// send's completion needs a follow-up after all (a partial send, or
/// `EAGAIN`: the client is not reading fast, so it is not waiting on us).
pub const INLINE_WAIT_BOUND: Duration = Duration::from_millis(1);

/// How many completions a loop turn waits for, and how long at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wait {
    pub want: usize,
    /// With `want > 1`: once this many microseconds have passed, one
    /// completion is enough (io_uring min_wait, Linux 6.12). 0: none.
    pub min_wait_usec: u32,
    pub timeout: Option<Duration>,
}

impl Wait {
    /// One completion, or `timeout`.
    pub fn one(timeout: Option<Duration>) -> Wait {
        Wait {
            want: 1,
            min_wait_usec: 0,
            timeout,
        }
    }
}

/// How a ring's loop waits: `--uring-wait` and `--uring-min-wait`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitPolicy {
    pub mode: UringWait,
    /// 0: off.
    pub min_wait_usec: u32,
}

/// The general timeout of a min_wait wait that has no deadline of its own.
/// The kernel ends a wait that has a min_wait but no timeout as soon as the
/// min_wait has passed, completions or not, so without one an idle ring
/// would wake every min_wait; with it the kernel, once the min_wait has
/// passed with nothing there, sleeps on until one completion (or this). An
/// idle ring therefore wakes once an hour, to wait again.
pub const MIN_WAIT_IDLE_BOUND: Duration = Duration::from_secs(3600);

/// Plans a turn's wait: one completion, with the caller's timeout
/// (`UringWait::One`, the default).
///
/// `UringWait::Quiet` (`--uring-wait quiet`, kept for A/B measurement) tries
/// to save an enter. Sends carry `MSG_DONTWAIT`, so each one the enter
/// submits has completed (or failed with `EAGAIN`) before the enter starts
/// waiting; waiting for one completion then returns at once with nothing but
/// their bookkeeping to do, and the loop enters again only to sleep: two
/// enters per echo at low concurrency. Quiet asks for one completion more
/// than the `quiet_sends` (sends whose completion needs no follow-up for
/// anyone to make progress), bounded by [`INLINE_WAIT_BOUND`]; when anything
/// needs its completion handled at once (`prompt`: bytes queued behind a
/// send, an EOF, a cancel, a ring out of buffers), it waits for one. The
/// bound is a timer armed on every such enter, and at matched load over TCP
/// (100 and 1,000 connections) quiet cost 1.14 to 1.27x one's server CPU
/// per message (results/uring-ab): the timer costs more than the enter.
///
/// `min_wait_usec > 0` (`--uring-min-wait`, which the server refuses to
/// combine with quiet) batches wake-ups instead: each one is expensive here
/// (arming timers and IPIs trap to the hypervisor), so a ring that wakes for
/// one message waits a little for more. The turn asks for its quiet sends'
/// completions plus `batch` (the caller's guess at how many receives can
/// complete before it answers: the stream ring's connections, each of which
/// sends at most one message before it waits for its echo in a closed loop);
/// once `min_wait_usec` has passed the kernel returns as soon as one
/// completion is there, and if none is, sleeps on as for one. Its costs: an
/// hrtimer armed on every enter that sleeps, and up to `min_wait_usec` of
/// delay for what completes early in a wait. Where a batch cannot be more
/// than one completion, or something is `prompt`, it waits for one, as
/// `One` does, and arms nothing.
pub fn plan_wait(
    policy: WaitPolicy,
    quiet_sends: usize,
    batch: usize,
    prompt: bool,
    timeout: Option<Duration>,
) -> Wait {
    if prompt {
        return Wait::one(timeout);
    }
    if policy.min_wait_usec > 0 {
        let want = quiet_sends + batch;
        if want <= 1 {
            return Wait::one(timeout);
        }
        return Wait {
            want,
            min_wait_usec: policy.min_wait_usec,
            timeout: Some(timeout.unwrap_or(MIN_WAIT_IDLE_BOUND)),
        };
    }
    if policy.mode == UringWait::One || quiet_sends == 0 {
        return Wait::one(timeout);
    }
    Wait {
        want: quiet_sends + 1,
        min_wait_usec: 0,
        timeout: Some(timeout.map_or(INLINE_WAIT_BOUND, |t| t.min(INLINE_WAIT_BOUND))),
    }
}

/// Test hook: `ERRNO:EVERY` (e.g. `EAGAIN:3`, `ENOMEM:5`, `EBADR:40`) makes
/// every EVERY-th `io_uring_enter` fail with that errno instead of entering
/// the kernel, exactly as the kernel fails it (nothing submitted, nothing
/// waited for), so that the recovery paths can be tested on a healthy machine.
pub const INJECT_ENTER_ERROR_ENV: &str = "SOCKBENCH_URING_INJECT_ENTER_ERROR";

/// An injected `io_uring_enter` failure (see [`INJECT_ENTER_ERROR_ENV`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct InjectedError {
    errno: i32,
    every: u64,
}

impl InjectedError {
    fn parse(s: &str) -> Option<InjectedError> {
        let (name, every) = s.split_once(':')?;
        let errno = match name {
            "EAGAIN" => libc::EAGAIN,
            "ENOMEM" => libc::ENOMEM,
            "EBADR" => libc::EBADR,
            _ => return None,
        };
        let every = every.parse().ok().filter(|&n| n > 0)?;
        Some(InjectedError { errno, every })
    }

    fn from_env() -> Option<InjectedError> {
        InjectedError::parse(&std::env::var(INJECT_ENTER_ERROR_ENV).ok()?)
    }
}

/// A ring and its buffer ring, with submission batching and in-flight
/// accounting.
pub struct Driver {
    /// Dropped before `bufs` (see `Drop`), so that the kernel has let go of
    /// the buffer ring before its memory is unmapped.
    pub ring: ManuallyDrop<IoUring>,
    /// Freed in `Drop` only if no operation is still in flight; otherwise leaked,
    /// because the kernel could still write into it.
    pub bufs: ManuallyDrop<BufRing>,
    pub flags: SetupFlags,
    /// Submitted operations whose final completion (no `F_MORE`) has not been
    /// seen. Exact, or an over-count after dropped completions (then shutdown
    /// leaks the buffers rather than free them); never an under-count.
    pub in_flight: usize,
    completions: Vec<Completion>,
    /// Rare ring errors survived (back-offs and dropped-completion events)
    /// since the owner last took them ([`Driver::take_ring_errors`]).
    ring_errors: u64,
    /// Completions were dropped since the owner last asked ([`Driver::take_dropped`]).
    dropped: bool,
    /// Consecutive back-offs; reset by any enter that succeeds.
    backoffs_in_a_row: u32,
    inject: Option<InjectedError>,
    enters: u64,
    /// This ring's index in the creating thread's ring table, once
    /// [`Driver::register_ring_fd`] succeeded: enters then go by index.
    registered_ring: Option<u32>,
}

impl Driver {
    pub fn new(sq_entries: u32, cq_entries: u32, buf_count: u32, buf_size: u32) -> io::Result<Driver> {
        let (ring, flags) = setup::build_ring(sq_entries, cq_entries)?;
        setup::probe_opcodes(&ring)?;
        let bufs = BufRing::new(buf_count, buf_size, BGID)?;
        bufs.register(&ring.submitter())
            .map_err(|e| setup::missing("provided buffer rings (IORING_REGISTER_PBUF_RING, Linux 5.19)", e))?;
        Ok(Driver {
            ring: ManuallyDrop::new(ring),
            bufs: ManuallyDrop::new(bufs),
            flags,
            in_flight: 0,
            completions: Vec::with_capacity(1024),
            ring_errors: 0,
            dropped: false,
            backoffs_in_a_row: 0,
            inject: InjectedError::from_env(),
            enters: 0,
            registered_ring: None,
        })
    }

    /// Registers the ring in the calling thread's ring table (Linux 5.18), so
    /// that every enter skips the lookup and reference count of the ring fd.
    /// From then on only this thread may use the driver (the server's rings
    /// are single-issuer anyway). On an older kernel it fails, and enters
    /// keep using the fd.
    pub fn register_ring_fd(&mut self) -> io::Result<()> {
        if self.registered_ring.is_none() {
            self.registered_ring = Some(registered::register(self.ring.as_raw_fd())?);
        }
        Ok(())
    }

    /// Queues `sqe`; if the submission queue is full, submits what is queued first.
    ///
    /// # Safety
    /// Every buffer `sqe` points to must stay valid until its final completion.
    pub unsafe fn push(&mut self, sqe: squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: forwarded to our caller.
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                self.in_flight += 1;
                return Ok(());
            }
            // Reaping makes room when the CQ overflowed (old kernels without
            // NODROP); the completions wait in `self.completions`.
            self.enter(0, 0, None)?;
        }
    }

    /// Submits everything queued without waiting for completions.
    pub fn submit(&mut self) -> io::Result<()> {
        self.enter(0, 0, None)
    }

    /// Submits everything queued and waits for at least one completion, or for
    /// `timeout`. Completions are then available from `take_completions`.
    ///
    /// Rare ring errors do not end the loop: a submission the kernel had no
    /// memory for is retried after a back-off, and dropped completions are
    /// reported through [`Driver::take_dropped`]; both are counted
    /// ([`Driver::take_ring_errors`]).
    pub fn submit_and_wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.enter(1, 0, timeout)
    }

    /// As [`Driver::submit_and_wait`], but waits until `want` completions
    /// (at least one) are posted, or for `timeout`.
    pub fn submit_and_wait_for(&mut self, want: usize, timeout: Option<Duration>) -> io::Result<()> {
        self.enter(want.max(1), 0, timeout)
    }

    /// As [`Driver::submit_and_wait_for`], with the min_wait of a [`Wait`]
    /// from [`plan_wait`]. A min_wait needs a `timeout` (see
    /// [`MIN_WAIT_IDLE_BOUND`]), and the kernel must have it ([`check_min_wait`]).
    pub fn submit_and_wait_planned(&mut self, wait: Wait) -> io::Result<()> {
        debug_assert!(wait.min_wait_usec == 0 || wait.timeout.is_some(), "{wait:?}");
        self.enter(wait.want.max(1), wait.min_wait_usec, wait.timeout)
    }

    /// One `io_uring_enter` that submits and waits for `want` completions (at
    /// most `timeout`; after `min_wait_usec`, if not 0, for one), then reaps;
    /// see [`EnterError`] for what its errors do.
    fn enter(&mut self, want: usize, min_wait_usec: u32, timeout: Option<Duration>) -> io::Result<()> {
        self.enters += 1;
        // Completions reaped by an earlier enter in this turn (`push` on a full
        // queue) are already there to be handled: do not sleep on top of them.
        let want = if self.completions.is_empty() { want } else { 0 };
        let res = match self.inject {
            Some(i) if self.enters % i.every == 0 => Err(io::Error::from_raw_os_error(i.errno)),
            _ => match (self.registered_ring, timeout) {
                (Some(index), timeout) => {
                    let to_submit = self.ring.submission().len() as u32;
                    let cq_overflow = self.ring.submission().cq_overflow();
                    registered::enter(index, to_submit, want as u32, cq_overflow, timeout, min_wait_usec)
                }
                (None, Some(t)) if want > 0 => {
                    let ts = types::Timespec::from(t);
                    let args = types::SubmitArgs::new().timespec(&ts).min_wait_usec(min_wait_usec);
                    self.ring.submitter().submit_with_args(want, &args)
                }
                _ => self.ring.submit_and_wait(want),
            },
        };
        let outcome = match &res {
            Ok(_) => EnterError::Proceed,
            Err(e) => EnterError::classify(e),
        };
        match outcome {
            EnterError::Proceed => self.backoffs_in_a_row = 0,
            EnterError::BackOff => {
                self.ring_errors += 1;
                self.backoffs_in_a_row += 1;
                // Completions already posted are not lost by waiting: reap
                // them first, so that the owner can free what they release.
                self.reap();
                std::thread::sleep(backoff_delay(self.backoffs_in_a_row));
            }
            EnterError::Dropped => {
                // The kernel clears its dropped state as it reports it: the
                // next enter works again.
                self.ring_errors += 1;
                self.dropped = true;
            }
            EnterError::Fatal => return res.map(drop),
        }
        self.reap();
        Ok(())
    }

    /// Copies every posted completion into `self.completions`.
    fn reap(&mut self) {
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in &mut cq {
            if !cqueue::more(cqe.flags()) {
                debug_assert!(self.in_flight > 0, "a final completion with nothing in flight");
                // An under-count would free buffers the kernel may still
                // write into; wrapping instead (release builds) makes shutdown
                // leak them, the safe side.
                self.in_flight = self.in_flight.wrapping_sub(1);
            }
            self.completions.push(Completion {
                user_data: cqe.user_data(),
                result: cqe.result(),
                flags: cqe.flags(),
            });
        }
    }

    /// The completions reaped so far. Give the vector back with
    /// `return_completions` to reuse its allocation.
    pub fn take_completions(&mut self) -> Vec<Completion> {
        std::mem::take(&mut self.completions)
    }

    pub fn return_completions(&mut self, mut v: Vec<Completion>) {
        if self.completions.is_empty() {
            v.clear();
            self.completions = v;
        }
    }

    /// Rare ring errors survived since the last call: submissions backed off
    /// for lack of kernel memory, and dropped-completion events.
    pub fn take_ring_errors(&mut self) -> u64 {
        std::mem::take(&mut self.ring_errors)
    }

    /// Whether completions were dropped (`EBADR`) since the last call. Which
    /// ones is unknowable: any operation in flight may have ended unheard.
    pub fn take_dropped(&mut self) -> bool {
        std::mem::take(&mut self.dropped)
    }

    /// Cancels every operation on the ring and waits (at most `QUIESCE_WAIT`)
    /// for them to complete. Returns whether nothing is left in flight, i.e.
    /// whether buffers that operations pointed into may now be freed.
    pub fn quiesce(&mut self) -> bool {
        let cancel = io_uring::opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(token::CANCEL);
        // SAFETY: a cancel request carries no buffer.
        if unsafe { self.push(cancel) }.is_err() {
            return false;
        }
        let deadline = Instant::now() + QUIESCE_WAIT;
        while self.in_flight > 0 && Instant::now() < deadline {
            if self.submit_and_wait(Some(Duration::from_millis(20))).is_err() {
                return false;
            }
            // Nothing to do with them: the process is stopping, and buffer
            // bookkeeping no longer matters once nothing is in flight.
            self.completions.clear();
        }
        self.in_flight == 0
    }

    /// Takes the buffer ring away from the kernel: after this no operation can
    /// pick a buffer from it. Returns whether the memory may be freed, i.e.
    /// whether nothing is in flight that picked a buffer already.
    fn release_buffers(&mut self) -> bool {
        // An error here (a kernel that never registered it) changes nothing:
        // the ring is dropped before the memory anyway.
        let _ = self.ring.submitter().unregister_buf_ring(self.bufs.bgid());
        if let Some(index) = self.registered_ring.take() {
            // The thread's table holds a reference to the ring: without this,
            // closing the ring fd would not end the ring until the thread exits.
            let _ = registered::unregister(self.ring.as_raw_fd(), index);
        }
        self.in_flight == 0
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // `Drop::drop` runs before any field is dropped, so the order is made
        // here: first the kernel lets go of the buffer ring, then the ring
        // itself is closed, and only then may the memory go.
        let free = self.release_buffers();
        // SAFETY: `ring` is not used again.
        unsafe { ManuallyDrop::drop(&mut self.ring) };
        if free {
            // SAFETY: no operation is in flight and the buffer ring is neither
            // registered nor reachable through a ring any more, so the kernel
            // holds no reference into it; `bufs` is not used again.
            unsafe { ManuallyDrop::drop(&mut self.bufs) };
        }
        // Otherwise the buffer memory is deliberately leaked: an operation
        // still in flight may write into it until the kernel has torn the ring
        // down, and the process is about to exit anyway.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rare_enter_errors_are_survived_and_the_rest_are_fatal() {
        let class = |errno| EnterError::classify(&io::Error::from_raw_os_error(errno));
        assert_eq!(class(libc::EAGAIN), EnterError::BackOff);
        assert_eq!(class(libc::ENOMEM), EnterError::BackOff);
        assert_eq!(class(libc::EBADR), EnterError::Dropped);
        for errno in [libc::ETIME, libc::EINTR, libc::EBUSY] {
            assert_eq!(class(errno), EnterError::Proceed);
        }
        for errno in [libc::EBADF, libc::EFAULT, libc::EINVAL, libc::EOPNOTSUPP] {
            assert_eq!(class(errno), EnterError::Fatal);
        }
    }

    #[test]
    fn back_off_doubles_up_to_a_bound_well_inside_the_stop_deadline() {
        assert_eq!(backoff_delay(1), Duration::from_millis(1));
        assert_eq!(backoff_delay(2), Duration::from_millis(2));
        assert_eq!(backoff_delay(7), Duration::from_millis(64));
        assert_eq!(backoff_delay(u32::MAX), Duration::from_millis(64));
        assert_eq!(backoff_delay(0), Duration::from_millis(1));
        assert!(backoff_delay(u32::MAX) * 4 < crate::server::STOP_DEADLINE);
    }

    const QUIET: WaitPolicy = WaitPolicy {
        mode: UringWait::Quiet,
        min_wait_usec: 0,
    };
    const ONE: WaitPolicy = WaitPolicy {
        mode: UringWait::One,
        min_wait_usec: 0,
    };
    const MIN_WAIT_50: WaitPolicy = WaitPolicy {
        mode: UringWait::One,
        min_wait_usec: 50,
    };

    #[test]
    fn a_turn_waits_past_its_own_sends_only_when_nothing_needs_them_at_once() {
        let none = None;
        // The batch is for min_wait only: quiet ignores it.
        for batch in [0, 1, 100] {
            assert_eq!(plan_wait(QUIET, 0, batch, false, none), Wait::one(none));
            assert_eq!(plan_wait(QUIET, 3, batch, true, none), Wait::one(none));
            let w = plan_wait(QUIET, 3, batch, false, none);
            assert_eq!((w.want, w.min_wait_usec, w.timeout), (4, 0, Some(INLINE_WAIT_BOUND)));
        }
        // A shorter deadline of the caller's own (the --max-conns recheck) still holds.
        let short = Some(Duration::from_micros(100));
        assert_eq!(plan_wait(QUIET, 1, 0, false, short).timeout, short);
        assert_eq!(
            plan_wait(QUIET, 1, 0, false, Some(Duration::from_secs(1))).timeout,
            Some(INLINE_WAIT_BOUND)
        );
    }

    /// `--uring-wait one`: one completion, with the caller's own deadline
    /// (or none) untouched, whatever the turn's sends.
    #[test]
    fn wait_one_always_waits_for_one_completion() {
        for quiet_sends in [0, 1, 3, 1000] {
            for prompt in [false, true] {
                for batch in [0, 1, 100] {
                    assert_eq!(plan_wait(ONE, quiet_sends, batch, prompt, None), Wait::one(None));
                    let recheck = Some(Duration::from_millis(50));
                    assert_eq!(plan_wait(ONE, quiet_sends, batch, prompt, recheck), Wait::one(recheck));
                }
            }
        }
    }

    /// `--uring-min-wait`: the turn's quiet sends plus the batch, with the
    /// min_wait, and always a general timeout (the caller's, or the idle
    /// bound), without which the kernel would end the wait at the min_wait.
    #[test]
    fn min_wait_asks_for_a_batch_with_a_general_timeout() {
        let w = plan_wait(MIN_WAIT_50, 3, 10, false, None);
        assert_eq!(
            w,
            Wait {
                want: 13,
                min_wait_usec: 50,
                timeout: Some(MIN_WAIT_IDLE_BOUND)
            }
        );
        // Idle connections: no sends, a batch of one message each.
        assert_eq!(plan_wait(MIN_WAIT_50, 0, 2, false, None).want, 2);
        let recheck = Some(Duration::from_millis(50));
        assert_eq!(plan_wait(MIN_WAIT_50, 1, 1, false, recheck).timeout, recheck);
        assert!(MIN_WAIT_IDLE_BOUND > Duration::from_micros(crate::server::MAX_MIN_WAIT_USEC as u64));
    }

    /// Where a batch is one completion at most, a min_wait changes nothing
    /// but arms a timer; where something needs handling at once, it waits.
    #[test]
    fn min_wait_waits_for_one_when_a_batch_cannot_form_or_something_is_prompt() {
        for (quiet_sends, batch) in [(0, 0), (1, 0), (0, 1)] {
            assert_eq!(plan_wait(MIN_WAIT_50, quiet_sends, batch, false, None), Wait::one(None));
        }
        let recheck = Some(Duration::from_millis(50));
        assert_eq!(plan_wait(MIN_WAIT_50, 5, 100, true, recheck), Wait::one(recheck));
    }

    #[test]
    fn injection_spec_parses_only_the_errors_it_simulates() {
        assert_eq!(
            InjectedError::parse("EAGAIN:3"),
            Some(InjectedError {
                errno: libc::EAGAIN,
                every: 3
            })
        );
        assert_eq!(InjectedError::parse("EBADR:1").map(|i| i.errno), Some(libc::EBADR));
        for bad in ["EAGAIN", "EAGAIN:0", "EBADF:2", "EAGAIN:x", ""] {
            assert_eq!(InjectedError::parse(bad), None, "{bad:?}");
        }
    }

    /// A driver on a kernel that cannot run this backend: skip with a reason.
    fn driver() -> Option<Driver> {
        match Driver::new(8, 16, 4, 4096) {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("skipped: {e}");
                None
            }
        }
    }

    /// The first step of `Drop`: once released, the kernel no longer picks
    /// buffers from the ring (a receive armed afterwards fails instead of
    /// writing), so unmapping the memory next cannot be written into.
    #[test]
    fn released_buffer_ring_is_out_of_the_kernels_reach_before_it_is_freed() {
        let Some(mut d) = driver() else { return };
        assert!(d.release_buffers(), "nothing in flight: the memory may be freed");
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        use std::io::Write;
        (&b).write_all(b"x").unwrap();
        let recv = io_uring::opcode::Recv::new(
            types::Fd(std::os::fd::AsRawFd::as_raw_fd(&a)),
            std::ptr::null_mut(),
            4096,
        )
        .buf_group(BGID)
        .build()
        .flags(squeue::Flags::BUFFER_SELECT)
        .user_data(token::PROBE);
        // SAFETY: the receive may only select from buffer group BGID, which is
        // no longer registered: it cannot write anywhere.
        unsafe { d.push(recv).unwrap() };
        let deadline = Instant::now() + Duration::from_secs(2);
        while d.in_flight > 0 && Instant::now() < deadline {
            d.submit_and_wait(Some(Duration::from_millis(20))).unwrap();
        }
        let c = d.take_completions();
        assert_eq!(c.len(), 1, "{c:?}");
        assert!(
            c[0].result < 0,
            "a receive into an unregistered buffer group must fail: {c:?}"
        );
        assert_eq!(cqueue::buffer_select(c[0].flags), None);
    }

    /// `SUBMIT_ALL`: an entry that fails as it is submitted does not hold back
    /// the entries behind it until the next enter.
    #[test]
    fn one_failing_entry_does_not_hold_back_the_batch() {
        let Some(mut d) = driver() else { return };
        if d.flags == SetupFlags::Plain {
            eprintln!("skipped: plain setup has no SUBMIT_ALL");
            return;
        }
        let ts = types::Timespec::new();
        // A timeout cannot select a buffer: the kernel refuses it at submission.
        let bad = io_uring::opcode::Timeout::new(&ts)
            .build()
            .flags(squeue::Flags::BUFFER_SELECT)
            .user_data(token::PROBE);
        let nop = io_uring::opcode::Nop::new().build().user_data(token::CANCEL);
        // SAFETY: neither entry carries a buffer; `ts` outlives the submit below,
        // and the timeout fails before it could start.
        unsafe {
            d.push(bad).unwrap();
            d.push(nop).unwrap();
        }
        d.submit().unwrap();
        assert!(
            d.ring.submission().is_empty(),
            "the entry behind the failing one was held back"
        );
        let deadline = Instant::now() + Duration::from_secs(2);
        while d.in_flight > 0 && Instant::now() < deadline {
            d.submit_and_wait(Some(Duration::from_millis(20))).unwrap();
        }
        let c = d.take_completions();
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(c.iter().any(|c| c.user_data == token::PROBE && c.result < 0), "{c:?}");
    }

    /// Entering by registered index submits, waits, times out and reaps as
    /// entering by fd does.
    #[test]
    fn registered_ring_enters_submit_wait_and_time_out() {
        let Some(mut d) = driver() else { return };
        d.register_ring_fd().expect("IORING_REGISTER_RING_FDS (Linux 5.18)");
        assert!(d.registered_ring.is_some());
        for round in 0..3u64 {
            let nop = io_uring::opcode::Nop::new().build().user_data(round);
            // SAFETY: a NOP carries no buffer.
            unsafe { d.push(nop).unwrap() };
            d.submit_and_wait(Some(Duration::from_secs(2))).unwrap();
            let c = d.take_completions();
            assert_eq!(c.iter().map(|c| c.user_data).collect::<Vec<_>>(), [round]);
        }
        // Nothing in flight: the wait ends by its timeout (ETIME), not an error.
        let start = Instant::now();
        d.submit_and_wait_for(1, Some(Duration::from_millis(30))).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(25), "{:?}", start.elapsed());
        assert!(d.take_completions().is_empty());
        assert_eq!(d.in_flight, 0);
    }

    /// A driver for the min_wait tests, entered by registered index or by fd;
    /// `None` (skipped, with the reason) where the kernel lacks either.
    fn min_wait_driver(registered: bool) -> Option<Driver> {
        let mut d = driver()?;
        if check_min_wait(&d, 1).is_err() {
            eprintln!("skipped: kernel lacks io_uring min_wait (Linux 6.12)");
            return None;
        }
        if registered {
            d.register_ring_fd().expect("IORING_REGISTER_RING_FDS (Linux 5.18)");
        }
        Some(d)
    }

    /// Once the min_wait has passed, one completion ends a wait that asked
    /// for four, long before the general timeout: the kernel read our
    /// `min_wait_usec`, by either way of entering.
    #[test]
    fn min_wait_returns_with_fewer_than_asked_once_it_has_passed() {
        for registered in [false, true] {
            let Some(mut d) = min_wait_driver(registered) else {
                return;
            };
            let nop = io_uring::opcode::Nop::new().build().user_data(7);
            // SAFETY: a NOP carries no buffer.
            unsafe { d.push(nop).unwrap() };
            let general = Duration::from_secs(30);
            let start = Instant::now();
            d.submit_and_wait_planned(Wait {
                want: 4,
                min_wait_usec: 1000,
                timeout: Some(general),
            })
            .unwrap();
            let c = d.take_completions();
            assert_eq!(
                c.iter().map(|c| c.user_data).collect::<Vec<_>>(),
                [7],
                "registered={registered}"
            );
            assert!(
                start.elapsed() < general / 2,
                "registered={registered}: the wait ran to its general timeout ({:?})",
                start.elapsed()
            );
        }
    }

    /// With nothing to complete, the min_wait passing does not end the wait:
    /// it sleeps on to its general timeout (so an idle ring stays asleep).
    #[test]
    fn min_wait_with_nothing_to_complete_sleeps_until_its_timeout() {
        for registered in [false, true] {
            let Some(mut d) = min_wait_driver(registered) else {
                return;
            };
            let timeout = Duration::from_millis(100);
            let start = Instant::now();
            d.submit_and_wait_planned(Wait {
                want: 4,
                min_wait_usec: 1000,
                timeout: Some(timeout),
            })
            .unwrap();
            // Timeouts never fire early: a return before it is the min_wait's.
            assert!(
                start.elapsed() >= timeout,
                "registered={registered}: woke after {:?}",
                start.elapsed()
            );
            assert!(d.take_completions().is_empty());
        }
    }

    /// The datagram rings' start-up check: one datagram sent with a
    /// destination address arrives, and nothing is left in flight.
    #[test]
    fn sendto_probe_passes_and_leaves_nothing_in_flight() {
        let Some(mut d) = driver() else { return };
        setup::probe_sendto(&mut d).unwrap();
        assert_eq!(d.in_flight, 0);
    }

    /// With an operation in flight, `Drop` must not free the buffer memory.
    #[test]
    fn buffers_in_use_are_not_freed() {
        let Some(mut d) = driver() else { return };
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let recv = io_uring::opcode::RecvMulti::new(types::Fd(std::os::fd::AsRawFd::as_raw_fd(&a)), BGID)
            .build()
            .user_data(token::PROBE);
        // SAFETY: the receive writes only into the buffer ring, which `Drop`
        // leaks while the receive is in flight (the point of this test).
        unsafe { d.push(recv).unwrap() };
        d.submit().unwrap();
        assert!(
            !d.release_buffers(),
            "a receive is in flight: the memory must be leaked"
        );
    }
}
