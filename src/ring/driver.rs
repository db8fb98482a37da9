//! [`Driver`]: a ring and its provided buffer ring, with submission
//! batching, in-flight accounting and the handling of rare enter errors.

use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use io_uring::{cqueue, squeue, types, IoUring};

use super::buf_ring::BufRing;
use super::setup::{self, SetupFlags};
use super::{registered, token, BGID};

/// How long shutdown waits for cancelled operations to complete before it
/// gives up and leaks the memory they might still write into.
const QUIESCE_WAIT: Duration = Duration::from_millis(400);

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

/// How many completions an enter waits for, and how long at most.
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

/// The part of a new [`Driver`] whose size the kernel refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingPart {
    /// The submission and completion queues (`io_uring_setup`).
    Queues,
    /// The provided buffers' memory.
    Buffers,
}

/// The kernel refused a size [`Driver::new`] asked for (`ENOMEM`, or
/// `EINVAL` for queue sizes), inside the `io::Error` it returns.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct SizeRefused {
    pub part: RingPart,
    pub source: io::Error,
}

impl SizeRefused {
    /// `e`, with a [`SizeRefused`] inside if it is a refused size.
    fn wrap(part: RingPart, e: io::Error) -> io::Error {
        let sized = match part {
            RingPart::Queues => matches!(e.raw_os_error(), Some(libc::ENOMEM | libc::EINVAL)),
            RingPart::Buffers => e.raw_os_error() == Some(libc::ENOMEM),
        };
        if !sized {
            return e;
        }
        io::Error::new(e.kind(), SizeRefused { part, source: e })
    }

    /// The [`SizeRefused`] inside `e`, if there is one.
    pub fn of(e: &io::Error) -> Option<&SizeRefused> {
        e.get_ref()?.downcast_ref()
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
    /// A ring of `sq_entries` submission and `cq_entries` completion
    /// entries, with `buf_count` provided buffers of `buf_size` bytes. An
    /// error that is the kernel refusing one of those sizes carries a
    /// [`SizeRefused`] (`get_ref()`, then `downcast_ref`), so that the
    /// caller can name what set it.
    pub fn new(sq_entries: u32, cq_entries: u32, buf_count: u32, buf_size: u32) -> io::Result<Driver> {
        let (ring, flags) =
            setup::build_ring(sq_entries, cq_entries).map_err(|e| SizeRefused::wrap(RingPart::Queues, e))?;
        setup::probe_opcodes(&ring)?;
        let bufs = BufRing::new(buf_count, buf_size, BGID).map_err(|e| SizeRefused::wrap(RingPart::Buffers, e))?;
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

    /// Whether the kernel reads `min_wait_usec` (Linux 6.12,
    /// `IORING_FEAT_MIN_TIMEOUT`). An older one took the field for padding
    /// and fails every wait that sets it with `EINVAL`.
    pub fn supports_min_wait(&self) -> bool {
        self.ring.params().is_feature_min_timeout()
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

    /// Whether enters go by the registered index ([`Driver::register_ring_fd`] succeeded).
    pub fn ring_registered(&self) -> bool {
        self.registered_ring.is_some()
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

    /// Queues `sqes` side by side, so that one submission carries them all
    /// (a link chain split across two submissions is two chains); if they do
    /// not fit, submits what is queued first. At most the queue's size.
    ///
    /// # Safety
    /// Every buffer the entries point to must stay valid until their final completions.
    pub unsafe fn push_together(&mut self, sqes: &[squeue::Entry]) -> io::Result<()> {
        assert!(
            sqes.len() <= self.ring.params().sq_entries() as usize,
            "more entries than the queue holds"
        );
        loop {
            // SAFETY: forwarded to our caller.
            if unsafe { self.ring.submission().push_multiple(sqes) }.is_ok() {
                self.in_flight += sqes.len();
                return Ok(());
            }
            // As in `push`: the enter empties the queue, or reaps to make room.
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

    /// As [`Driver::submit_and_wait_for`], with the min_wait of a [`Wait`].
    /// A min_wait needs a `timeout` (without one the kernel ends the wait as
    /// soon as the min_wait has passed), and the kernel must have it
    /// ([`Driver::supports_min_wait`]).
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
    ///
    /// The one cancel of everything is quadratic in the number of polled
    /// operations it finds (Linux 6.18: each request it cancels starts a new
    /// walk of the ring's poll table, `io_cancel_req_match`) and runs without
    /// a preemption point: with thousands of multishot receives armed it
    /// holds the thread in the kernel for seconds. Owners with many
    /// connections end those receives first (a shutdown of each socket ends
    /// its receive with EOF), so that it finds almost nothing.
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

    /// Empties the ring's fixed file table now, so that a socket only the
    /// table holds is closed before this returns (and its port is free),
    /// rather than when the kernel tears the ring down, which it does in
    /// the background after the ring is closed. Call it once quiet
    /// ([`Driver::quiesce`] returned true): before Linux 6.13 the unregister
    /// waits for requests in flight, without bound. Without a table it does
    /// nothing.
    pub fn release_files(&mut self) {
        let _ = self.ring.submitter().unregister_files();
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
    fn back_off_doubles_up_to_64_ms() {
        assert_eq!(backoff_delay(1), Duration::from_millis(1));
        assert_eq!(backoff_delay(2), Duration::from_millis(2));
        assert_eq!(backoff_delay(7), Duration::from_millis(64));
        assert_eq!(backoff_delay(u32::MAX), Duration::from_millis(64));
        assert_eq!(backoff_delay(0), Duration::from_millis(1));
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

    /// A driver on a kernel that cannot run it: skip with a reason.
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

    /// Two entries that do not fit beside what is queued go in after a
    /// submit, side by side: a link between them is never split across two
    /// submissions.
    #[test]
    fn entries_pushed_together_are_never_split() {
        let Some(mut d) = driver() else { return };
        let capacity = d.ring.params().sq_entries() as u64;
        let nop = |ud| io_uring::opcode::Nop::new().build().user_data(ud);
        for ud in 0..capacity - 1 {
            // SAFETY: a NOP carries no buffer.
            unsafe { d.push(nop(ud)).unwrap() };
        }
        let pair = [nop(100).flags(squeue::Flags::IO_HARDLINK), nop(101)];
        // SAFETY: NOPs carry no buffer.
        unsafe { d.push_together(&pair).unwrap() };
        assert_eq!(d.ring.submission().len(), 2, "the pair was split or not queued");
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut c = Vec::new();
        while d.in_flight > 0 && Instant::now() < deadline {
            d.submit_and_wait(Some(Duration::from_millis(20))).unwrap();
            // Taken each turn: completions left waiting make the next enter
            // skip its wait, which is where deferred task work (the linked
            // entry's issue) runs.
            c.extend(d.take_completions());
        }
        assert_eq!(c.len() as u64, capacity + 1, "{c:?}");
        assert!(c.iter().all(|c| c.result == 0), "{c:?}");
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
        if !d.supports_min_wait() {
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
