//! The provided buffer ring (`IORING_REGISTER_PBUF_RING`, Linux 5.19).
//!
//! The kernel picks a buffer from the ring for each receive, and tells us its
//! id in the completion. We give the buffer back ([`BufRing::recycle`]) once
//! the echo that reads from it has been sent, and publish all the buffers given
//! back in one loop turn with a single tail store ([`BufRing::publish`]).

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::Submitter;

/// An anonymous private mapping, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh anonymous mapping; no existing memory or fd is involved.
        // MAP_NORESERVE: pages cost memory only once the kernel writes into them.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr as *mut u8,
            len,
        })
    }

    /// Asks for transparent huge pages (`MADV_HUGEPAGE`; with THP in `madvise`
    /// mode nothing else gets them). Pages faulted in afterwards come in
    /// 2 MiB units where the range is 2 MiB-aligned, so MAP_NORESERVE then
    /// saves memory only per 2 MiB, not per 4 KiB page.
    fn advise_hugepages(&self) -> io::Result<()> {
        // SAFETY: `ptr`/`len` are our own mapping; the advice changes how
        // pages are allocated, never the contents or validity of the memory.
        crate::syscall!(madvise(self.ptr as *mut libc::c_void, self.len, libc::MADV_HUGEPAGE)).map(drop)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` came from our own successful mmap, and the owner
        // (`BufRing`) is only dropped once the kernel has let go of it (see
        // `Driver`'s `Drop`).
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

/// A ring of `count` buffers of `size` bytes, registered as buffer group `bgid`.
///
/// Must outlive every operation that may select from it: the owner unregisters
/// it and drops the `IoUring` first (see `Driver`'s `Drop`), and leaks it if
/// operations could not be drained at shutdown.
pub struct BufRing {
    entries: Mapping,
    buffers: Mapping,
    count: u16,
    size: u32,
    bgid: u16,
    /// Our copy of the tail; published to the kernel by `publish`.
    tail: u16,
    /// Buffers handed out by the kernel and not yet recycled.
    held: u32,
}

impl BufRing {
    /// Allocates `count` (a power of two, at most 32768) buffers of `size` bytes,
    /// all initially available to the kernel once registered.
    pub fn new(count: u32, size: u32, bgid: u16) -> io::Result<BufRing> {
        assert!(count.is_power_of_two() && count <= 32768);
        let entries = Mapping::new(count as usize * std::mem::size_of::<BufRingEntry>())?;
        let buffers = Mapping::new(count as usize * size as usize)?;
        let mut ring = BufRing {
            entries,
            buffers,
            count: count as u16,
            size,
            bgid,
            tail: 0,
            held: count,
        };
        for bid in 0..count {
            ring.recycle(bid as u16);
        }
        ring.publish();
        Ok(ring)
    }

    /// Registers the ring with `submitter`'s io_uring.
    pub fn register(&self, submitter: &Submitter<'_>) -> io::Result<()> {
        // SAFETY: the entries mapping stays valid until the ring is dropped, and
        // `Driver`'s `Drop` unregisters it and closes the io_uring before that.
        unsafe { submitter.register_buf_ring_with_flags(self.entries.ptr as u64, self.count, self.bgid, 0) }
    }

    pub fn bgid(&self) -> u16 {
        self.bgid
    }

    pub fn count(&self) -> u32 {
        self.count as u32
    }

    pub fn buf_size(&self) -> u32 {
        self.size
    }

    /// Asks for transparent huge pages for the buffers (not the small entry
    /// array); best called before any receive has touched them.
    pub fn advise_hugepages(&self) -> io::Result<()> {
        self.buffers.advise_hugepages()
    }

    /// Buffers the kernel can still pick from (by our accounting: completions not
    /// yet reaped may have taken some more).
    pub fn available(&self) -> u32 {
        self.count as u32 - self.held
    }

    /// Records that a completion handed us buffer `bid`.
    pub fn taken(&mut self, _bid: u16) {
        self.held += 1;
    }

    /// The first `len` bytes of buffer `bid`, which a completion handed us.
    pub fn slice(&self, bid: u16, len: usize) -> &[u8] {
        assert!(bid < self.count && len <= self.size as usize);
        // SAFETY: in bounds of the buffers mapping (checked above); the kernel
        // wrote these bytes before posting the completion and does not touch the
        // buffer again until we recycle it.
        unsafe { std::slice::from_raw_parts(self.buf_ptr(bid), len) }
    }

    /// The address of buffer `bid`, for a send that reads from it.
    pub fn buf_ptr(&self, bid: u16) -> *mut u8 {
        // SAFETY: bid < count, so the offset is inside the buffers mapping.
        unsafe { self.buffers.ptr.add(bid as usize * self.size as usize) }
    }

    /// Gives buffer `bid` back to the kernel (visible after `publish`).
    pub fn recycle(&mut self, bid: u16) {
        let mask = self.count - 1;
        let idx = (self.tail & mask) as usize;
        // SAFETY: idx < count, inside the entries mapping. The kernel only reads
        // entries between its head and our published tail, and this slot is past
        // the published tail, so we are its only user.
        let entry = unsafe { &mut *(self.entries.ptr as *mut BufRingEntry).add(idx) };
        entry.set_addr(self.buf_ptr(bid) as u64);
        entry.set_len(self.size);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        self.held -= 1;
    }

    /// Publishes every recycled buffer to the kernel with one release store.
    pub fn publish(&self) {
        // SAFETY: the tail lives in entry 0's reserved field, inside the entries
        // mapping, for as long as the ring exists; the kernel reads it with an
        // acquire load, so it is accessed atomically on both sides.
        unsafe {
            let tail = BufRingEntry::tail(self.entries.ptr as *const BufRingEntry) as *mut u16;
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }
}
