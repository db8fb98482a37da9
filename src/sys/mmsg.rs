//! Batched datagram I/O: recvmmsg(2) and sendmmsg(2).
//!
//! An [`MmsgBatch`] owns a fixed set of slots, each a buffer plus a peer
//! address, allocated once. Receiving fills slots `0..n` in one syscall;
//! sending takes a queue of slots in one syscall. No call allocates.
//!
//! The `mmsghdr`/`iovec` arrays point into the batch's own buffers. They are
//! rebuilt right before each syscall instead of once at construction, so no
//! raw pointer outlives a later `&mut` borrow of the buffers (and the batch
//! may move freely); filling 32 headers costs far less than the syscall.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::SockAddr;

/// What one received slot holds. See [`MmsgBatch::received`].
#[derive(Debug)]
pub struct Received<'a> {
    /// The datagram, or its first `buf_size` bytes if it was truncated.
    pub data: &'a [u8],
    /// The kernel cut the datagram to fit the slot (`MSG_TRUNC`): `data` is
    /// not the whole datagram.
    pub truncated: bool,
    /// The sender's address. For `AF_UNIX` an unnamed sender has an address
    /// with no path (see [`Received::has_name`]).
    pub addr: &'a SockAddr,
}

impl Received<'_> {
    /// Whether the sender can be answered: false for an unbound (unnamed)
    /// Unix datagram socket, whose address is just the family.
    pub fn has_name(&self) -> bool {
        self.addr.len() as usize > std::mem::size_of::<libc::sa_family_t>()
    }
}

/// One queued send: which slot, how many bytes, and whether to address it to
/// the slot's stored peer (`sendto`) or leave the name empty (connected socket).
#[derive(Clone, Copy)]
struct QueuedSend {
    slot: u32,
    len: u32,
    to_addr: bool,
}

/// A fixed set of datagram slots for `recvmmsg`/`sendmmsg`.
pub struct MmsgBatch {
    buf_size: usize,
    /// `slots * buf_size` bytes; slot `i` is `bufs[i * buf_size..][..buf_size]`.
    bufs: Vec<u8>,
    addrs: Vec<SockAddr>,
    /// Bytes received into each slot by the last [`MmsgBatch::recv`].
    lens: Vec<u32>,
    /// `msg_flags` the kernel returned for each slot.
    flags: Vec<libc::c_int>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    sends: Vec<QueuedSend>,
}

impl MmsgBatch {
    /// `slots` buffers of `buf_size` bytes each (e.g. 32 x 64 KiB).
    pub fn new(slots: usize, buf_size: usize) -> MmsgBatch {
        assert!(slots > 0 && slots <= u32::MAX as usize && buf_size <= u32::MAX as usize);
        let iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        MmsgBatch {
            buf_size,
            bufs: vec![0; slots * buf_size],
            addrs: vec![SockAddr::empty(); slots],
            lens: vec![0; slots],
            flags: vec![0; slots],
            iovs: vec![iov; slots],
            // SAFETY: mmsghdr is plain old data; all-zero (null pointers, zero lengths) is valid.
            hdrs: vec![unsafe { std::mem::zeroed() }; slots],
            sends: Vec::with_capacity(slots),
        }
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.lens.len()
    }

    /// Size of each slot's buffer: the largest datagram received whole.
    pub fn buf_size(&self) -> usize {
        self.buf_size
    }

    /// `recvmmsg(2)` into every slot; returns how many datagrams arrived
    /// (slots `0..n`). Blocks or not as the socket does; `EAGAIN` comes back
    /// as an error on a non-blocking socket with nothing queued.
    pub fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        let slots = self.slots();
        let base = self.bufs.as_mut_ptr();
        for i in 0..slots {
            // SAFETY: `i * buf_size` is within `bufs`, which holds `slots * buf_size` bytes.
            self.iovs[i] = libc::iovec {
                iov_base: unsafe { base.add(i * self.buf_size) }.cast(),
                iov_len: self.buf_size,
            };
            let addr = &mut self.addrs[i];
            *addr = SockAddr::empty();
            let hdr = &mut self.hdrs[i];
            hdr.msg_hdr.msg_name = addr.storage_mut() as *mut libc::sockaddr_storage as *mut libc::c_void;
            hdr.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_hdr.msg_iov = &mut self.iovs[i];
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_control = std::ptr::null_mut();
            hdr.msg_hdr.msg_controllen = 0;
            hdr.msg_hdr.msg_flags = 0;
            hdr.msg_len = 0;
        }
        // SAFETY: every header points at a live iovec, buffer and sockaddr_storage
        // owned by `self`, which stays mutably borrowed for the whole call; the
        // kernel writes at most `iov_len` / `msg_namelen` bytes into them.
        let n = crate::syscall!(recvmmsg(
            fd.as_raw_fd(),
            self.hdrs.as_mut_ptr(),
            slots as libc::c_uint,
            0,
            std::ptr::null_mut()
        ))? as usize;
        for i in 0..n {
            let hdr = &self.hdrs[i];
            self.lens[i] = hdr.msg_len;
            self.flags[i] = hdr.msg_hdr.msg_flags;
            let namelen = hdr.msg_hdr.msg_namelen;
            self.addrs[i].set_len(namelen);
        }
        Ok(n)
    }

    /// Slot `i` as filled by the last [`MmsgBatch::recv`] (`i < n`).
    pub fn received(&self, i: usize) -> Received<'_> {
        let len = (self.lens[i] as usize).min(self.buf_size);
        Received {
            data: &self.bufs[i * self.buf_size..][..len],
            truncated: self.flags[i] & libc::MSG_TRUNC != 0,
            addr: &self.addrs[i],
        }
    }

    /// Slot `i`'s whole buffer, to fill before [`MmsgBatch::queue_send`].
    pub fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.bufs[i * self.buf_size..][..self.buf_size]
    }

    /// Forgets all queued sends.
    pub fn clear_sends(&mut self) {
        self.sends.clear();
    }

    /// Queues slot `i`'s received datagram to go back, unchanged, to its sender.
    pub fn queue_reply(&mut self, i: usize) {
        let len = self.lens[i].min(self.buf_size as u32);
        self.sends.push(QueuedSend {
            slot: i as u32,
            len,
            to_addr: true,
        });
    }

    /// Queues the first `len` bytes of slot `i` for a connected socket (no address).
    pub fn queue_send(&mut self, i: usize, len: usize) {
        assert!(len <= self.buf_size);
        self.sends.push(QueuedSend {
            slot: i as u32,
            len: len as u32,
            to_addr: false,
        });
    }

    /// Number of queued sends.
    pub fn queued(&self) -> usize {
        self.sends.len()
    }

    /// Length of queued send `j`.
    pub fn queued_len(&self, j: usize) -> usize {
        self.sends[j].len as usize
    }

    /// `sendmmsg(2)` of queued sends `from..` with `MSG_NOSIGNAL`; returns how
    /// many went out (at least one), in order. An error means queued send
    /// `from` itself failed: the kernel reports an error only for the first
    /// message of a call, so after a short count call again from the first
    /// unsent one to learn why it stopped.
    pub fn send_queued(&mut self, fd: BorrowedFd<'_>, from: usize) -> io::Result<usize> {
        let count = self.sends.len().saturating_sub(from);
        if count == 0 {
            return Ok(0);
        }
        let base = self.bufs.as_mut_ptr();
        for (j, send) in self.sends[from..].iter().enumerate() {
            let slot = send.slot as usize;
            // SAFETY: `slot * buf_size` is within `bufs`, and `len <= buf_size`.
            self.iovs[j] = libc::iovec {
                iov_base: unsafe { base.add(slot * self.buf_size) }.cast(),
                iov_len: send.len as usize,
            };
            let hdr = &mut self.hdrs[j];
            if send.to_addr {
                let addr = &mut self.addrs[slot];
                hdr.msg_hdr.msg_namelen = addr.len();
                hdr.msg_hdr.msg_name = addr.storage_mut() as *mut libc::sockaddr_storage as *mut libc::c_void;
            } else {
                hdr.msg_hdr.msg_name = std::ptr::null_mut();
                hdr.msg_hdr.msg_namelen = 0;
            }
            hdr.msg_hdr.msg_iov = &mut self.iovs[j];
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_control = std::ptr::null_mut();
            hdr.msg_hdr.msg_controllen = 0;
            hdr.msg_hdr.msg_flags = 0;
            hdr.msg_len = 0;
        }
        // SAFETY: headers `0..count` point at live iovecs, buffers and addresses
        // owned by `self`, mutably borrowed for the call; the kernel only reads them
        // (and writes `msg_len`).
        let n = crate::syscall!(sendmmsg(
            fd.as_raw_fd(),
            self.hdrs.as_mut_ptr(),
            count as libc::c_uint,
            libc::MSG_NOSIGNAL
        ))?;
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, OwnedFd};

    fn unix_dgram_pair() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        crate::syscall!(socketpair(
            libc::AF_UNIX,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
            fds.as_mut_ptr()
        ))
        .unwrap();
        // SAFETY: socketpair just returned two new descriptors that nobody else owns.
        unsafe {
            (
                std::os::fd::FromRawFd::from_raw_fd(fds[0]),
                std::os::fd::FromRawFd::from_raw_fd(fds[1]),
            )
        }
    }

    #[test]
    fn batch_round_trip_keeps_sizes_and_flags_truncation() {
        let (a, b) = unix_dgram_pair();
        let mut tx = MmsgBatch::new(4, 16);
        for (i, len) in [0usize, 5, 16].into_iter().enumerate() {
            tx.slot_mut(i)[..len].fill(i as u8 + 1);
            tx.queue_send(i, len);
        }
        assert_eq!(tx.send_queued(a.as_fd(), 0).unwrap(), 3);
        // One too big for the receiver's 16-byte slots.
        crate::sys::send(a.as_fd(), &[9u8; 20]).unwrap();

        let mut rx = MmsgBatch::new(8, 16);
        assert_eq!(rx.recv(b.as_fd()).unwrap(), 4);
        let got: Vec<(usize, bool)> = (0..4)
            .map(|i| (rx.received(i).data.len(), rx.received(i).truncated))
            .collect();
        assert_eq!(got, [(0, false), (5, false), (16, false), (16, true)]);
        assert!(rx.received(1).data.iter().all(|&x| x == 2));
        // A socketpair peer is unnamed: it cannot be answered by address.
        assert!(!rx.received(0).has_name());
        assert!(crate::sys::would_block(&rx.recv(b.as_fd()).unwrap_err()));
    }
}
