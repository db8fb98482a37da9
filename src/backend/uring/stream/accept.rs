//! A stream ring's accept: multishot while there is room under
//! `--max-conns`, then (near the cap) a poll, a reserved place and one
//! single-shot accept; a back-off when out of descriptors.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

use io_uring::{cqueue, opcode, types};

use super::conn::Conn;
use super::{Accept, Slot, StreamWorker, NEAR_CAP};
use crate::backend::uring::files::Files;
use crate::backend::uring::token::Op;
use crate::ring::setup::missing;
use crate::ring::Completion;

impl StreamWorker<'_> {
    /// Arms accept when we may take connections, cancels it when we may not.
    pub(super) fn update_accept(&mut self) -> io::Result<()> {
        let open = self.shared.open.load(Ordering::Acquire);
        let near_cap = open + NEAR_CAP >= self.shared.max_conns;
        let multishot_ok = !self.stopping && !self.backoff_armed && !near_cap;
        if self.accept == Accept::Off && !self.stopping && !self.backoff_armed {
            let fd = types::Fd(self.listener.as_raw_fd());
            if multishot_ok {
                // Fixed: each connection goes straight into a free slot of the
                // table. Descriptors: close-on-exec, as any server's accept4.
                let sqe = match self.files {
                    Files::Fixed => opcode::AcceptMulti::new(fd).allocate_file_index(true),
                    Files::Fds => opcode::AcceptMulti::new(fd).flags(libc::SOCK_CLOEXEC),
                }
                .build()
                .user_data(self.own(Op::Accept));
                // SAFETY: a multishot accept passes no address buffer.
                unsafe { self.d.push(sqe)? };
                self.accept = Accept::Multishot { cancel_sent: false };
            } else if !self.ready_poll_armed && open < self.shared.max_conns {
                let sqe = opcode::PollAdd::new(fd, libc::POLLIN as u32)
                    .build()
                    .user_data(self.own(Op::AcceptReady));
                // SAFETY: a poll carries no buffer.
                unsafe { self.d.push(sqe)? };
                self.ready_poll_armed = true;
            }
            // else at the cap: look again when a connection closes.
        } else if !multishot_ok && self.accept == (Accept::Multishot { cancel_sent: false }) {
            self.cancel(self.own(Op::Accept))?;
            self.accept = Accept::Multishot { cancel_sent: true };
        }
        Ok(())
    }

    /// Near the cap, a client is waiting on our listener: reserve a place for
    /// it and accept it with a single-shot accept.
    pub(super) fn on_accept_ready(&mut self, c: Completion) -> io::Result<()> {
        self.ready_poll_armed = false;
        if c.result < 0 || self.accept != Accept::Off || self.stopping || !self.reserve_place() {
            return Ok(());
        }
        let fd = types::Fd(self.listener.as_raw_fd());
        let accept = opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut());
        let sqe = match self.files {
            Files::Fixed => accept.file_index(Some(types::DestinationSlot::auto_target())),
            Files::Fds => accept.flags(libc::SOCK_CLOEXEC),
        }
        .build()
        .user_data(self.own(Op::Accept));
        // SAFETY: the accept passes no address buffer.
        unsafe { self.d.push(sqe)? };
        self.accept = Accept::Reserved;
        Ok(())
    }

    /// Takes one place under `--max-conns`, if there is one.
    fn reserve_place(&self) -> bool {
        let max = self.shared.max_conns;
        self.shared
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .is_ok()
    }

    pub(super) fn on_accept(&mut self, c: Completion) -> io::Result<()> {
        let reserved = self.accept == Accept::Reserved;
        if !cqueue::more(c.flags) {
            self.accept = Accept::Off;
            if reserved && c.result < 0 {
                self.shared.open.fetch_sub(1, Ordering::AcqRel); // the place was not used
            }
        }
        if c.result >= 0 {
            // A direct accept's result is the fixed file slot it filled; a
            // plain one's, the new descriptor.
            let file = c.result as u32;
            let open = if reserved {
                self.shared.open.load(Ordering::Acquire)
            } else {
                self.shared.open.fetch_add(1, Ordering::AcqRel) + 1
            };
            if self.stopping || (!reserved && open > self.shared.max_conns) {
                // Accepted before our cancel took effect (or another ring took the
                // last place first): closing it keeps `--max-conns` a hard cap.
                self.shared.open.fetch_sub(1, Ordering::AcqRel);
                return self.close_file(file);
            }
            self.shared.stats.conn_opened();
            let slot = self.insert(file);
            return self.arm_recv(slot);
        }
        match -c.result {
            libc::ECANCELED => {}
            libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM => {
                // Out of descriptors (fixed files: ENFILE, the table is full;
                // descriptors: EMFILE, the process's, or ENFILE, the system's):
                // stop accepting for a while instead of spinning; connections
                // wait in the listen backlog meanwhile.
                if self.accept == (Accept::Multishot { cancel_sent: false }) {
                    self.cancel(self.own(Op::Accept))?;
                    self.accept = Accept::Multishot { cancel_sent: true };
                }
                if !self.backoff_armed {
                    let sqe = opcode::Timeout::new(&*self.backoff_ts as *const types::Timespec)
                        .build()
                        .user_data(self.own(Op::AcceptBackoff));
                    // SAFETY: the timespec is boxed in `self` and outlives the
                    // submission (the kernel copies it when the timeout starts).
                    unsafe { self.d.push(sqe)? };
                    self.backoff_armed = true;
                }
            }
            libc::EINVAL => {
                return Err(missing(
                    "multishot accept (IORING_ACCEPT_MULTISHOT, Linux 5.19)",
                    io::Error::from_raw_os_error(libc::EINVAL),
                ))
            }
            // ECONNABORTED and the like: that client is gone, keep accepting.
            _ => self.errors += 1,
        }
        Ok(())
    }

    pub(super) fn insert(&mut self, file: u32) -> u32 {
        let conn = Conn::new(file);
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize].conn = Some(conn);
                slot
            }
            None => {
                self.slots.push(Slot {
                    gen: 0,
                    conn: Some(conn),
                });
                (self.slots.len() - 1) as u32
            }
        }
    }
}
