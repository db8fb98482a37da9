//! The `uring` backend: one io_uring per thread, multishot accept, multishot
//! receive into a provided buffer ring, and one `io_uring_enter` per loop turn.
//!
//! - [`setup`]: ring creation with the best setup flags, and kernel probing.
//! - [`buf_ring`]: the provided buffer ring that receives land in.
//! - [`stream`]: TCP and Unix stream connections.
//! - [`datagram`]: UDP and Unix datagrams (multishot recvmsg, sendmsg back).
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

pub mod buf_ring;
mod datagram;
pub mod setup;
pub use setup::FORCE_SETUP_ENV;
mod stream;
pub mod token;

use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::AtomicUsize;
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use io_uring::{cqueue, squeue, types, IoUring};

use super::Backend;
use crate::net::{self, BindOptions, Endpoint, Transport};
use crate::server::{ServeContext, ServerConfig, Shutdown, Stats};
use buf_ring::BufRing;
use setup::SetupFlags;

/// io_uring with multishot accept/recv and a provided buffer ring.
pub struct Uring;

/// The buffer group id of each ring's (only) provided buffer ring.
const BGID: u16 = 0;

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
    unix_budget: OnceLock<Mutex<crate::backend::peer_budget::PeerBudget>>,
}

/// The sizes a ring actually got, for the `listening` line.
#[derive(Clone, Debug)]
struct RingInfo {
    flags: SetupFlags,
    sq_entries: u32,
    cq_entries: u32,
    buf_count: u32,
    buf_size: u32,
    unix_recv: &'static str,
}

impl Backend for Uring {
    fn serve(&self, mut ctx: ServeContext) -> io::Result<()> {
        let threads = ctx.config.threads.max(1);
        let shared = Arc::new(Shared {
            open: AtomicUsize::new(0),
            max_conns: ctx.config.max_conns,
            stats: ctx.stats,
            shutdown: ctx.shutdown,
            unix_budget: OnceLock::new(),
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
                "setup={} ring_entries={} cq_entries={} buf_count={} buf_size={} unix_recv={}",
                info.flags.name(),
                info.sq_entries,
                info.cq_entries,
                info.buf_count,
                info.buf_size,
                info.unix_recv
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
    let setup = (|| {
        let mut d = Driver::new(opts.ring_entries, cq_entries, buf_count, buf_size)?;
        let test = setup::self_test(&mut d)?;
        let forced = std::env::var_os(FORCE_SINGLE_SHOT_ENV).is_some();
        let unix_single_shot = config.transport == Transport::Unix && (forced || !test.unix_multishot_eof);
        let info = RingInfo {
            flags: d.flags,
            sq_entries: d.ring.params().sq_entries(),
            cq_entries: d.ring.params().cq_entries(),
            buf_count,
            buf_size,
            unix_recv: if unix_single_shot { "single-shot" } else { "multishot" },
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
    if stream {
        stream::StreamWorker::new(d, socket, shared, unix_single_shot).run()
    } else {
        datagram::DgramWorker::new(d, socket, shared).run()
    }
}

/// One completion, copied out of the completion queue.
#[derive(Clone, Copy, Debug)]
pub struct Completion {
    pub user_data: u64,
    pub result: i32,
    pub flags: u32,
}

/// A ring and its buffer ring, with submission batching and in-flight
/// accounting.
pub struct Driver {
    pub ring: IoUring,
    /// Freed in `Drop` only if no operation is still in flight; otherwise leaked,
    /// because the kernel could still write into it.
    pub bufs: ManuallyDrop<BufRing>,
    pub flags: SetupFlags,
    /// Submitted operations whose final completion (no `F_MORE`) has not been seen.
    pub in_flight: usize,
    completions: Vec<Completion>,
}

impl Driver {
    pub fn new(sq_entries: u32, cq_entries: u32, buf_count: u32, buf_size: u32) -> io::Result<Driver> {
        let (ring, flags) = setup::build_ring(sq_entries, cq_entries)?;
        setup::probe_opcodes(&ring)?;
        let bufs = BufRing::new(buf_count, buf_size, BGID)?;
        bufs.register(&ring.submitter())
            .map_err(|e| setup::missing("provided buffer rings (IORING_REGISTER_PBUF_RING, Linux 5.19)", e))?;
        Ok(Driver {
            ring,
            bufs: ManuallyDrop::new(bufs),
            flags,
            in_flight: 0,
            completions: Vec::with_capacity(1024),
        })
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
            match self.ring.submit() {
                Ok(_) => {}
                // The completion queue overflowed (old kernels without NODROP):
                // reap completions so the kernel can post more, then retry.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => self.reap(),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Submits everything queued and waits for at least one completion, or for
    /// `timeout`. Completions are then available from `take_completions`.
    pub fn submit_and_wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let res = match timeout {
            Some(t) => {
                let ts = types::Timespec::from(t);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
            None => self.ring.submit_and_wait(1),
        };
        match res {
            Ok(_) => {}
            // ETIME: the timeout passed; EINTR: a signal (the stop signal
            // among them); EBUSY: the CQ overflowed, reaping below frees room.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => {}
            Err(e) => return Err(e),
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
                // Saturating: a miscount must not wrap and make shutdown wait in vain.
                self.in_flight = self.in_flight.saturating_sub(1);
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
}

impl Drop for Driver {
    fn drop(&mut self) {
        if self.in_flight == 0 {
            // SAFETY: no operation is in flight, so the kernel holds no reference
            // into the buffers; `bufs` is not used again.
            unsafe { ManuallyDrop::drop(&mut self.bufs) };
        }
        // Otherwise the buffer memory is deliberately leaked: the kernel may
        // still write into it until the ring (dropped right after) is torn down,
        // and the process is about to exit anyway.
    }
}
