//! Stream clients (TCP, Unix stream): connect through epoll, then echo over
//! epoll (a `read` and a `send` per echo) or over the thread's ring ([`super::ring`]).
//! Every echoed byte goes through the connection's [`StreamChecker`].

use std::io;
use std::os::fd::AsFd;

use sockbench::net::Transport;
use sockbench::sys as ssys;

use super::{Conn, Life, Msg, Plan, Proto, Recorder, Socket, Up, Worker};
use crate::pattern::{self, StreamChecker};

/// The least time a stream connect is given before its socket is closed and
/// the connect retried. A SYN that a full accept queue dropped is sent again
/// by the kernel 1 s and 3 s later (the initial RTO, doubling); giving up at
/// `--timeout` (1 s by default) raced the first of those, and each retry
/// then cost a new socket and a new port search, which past half of a
/// source address's ports is the expensive part (see `CONNECTS_PER_TURN`).
const MIN_CONNECT_TIMEOUT_NS: u64 = 3_500_000_000;

/// A stream connection.
#[allow(dead_code)] // named for readers: the worker holds `Conn<Stream>`s
pub(super) type StreamConn = Conn<Stream>;

/// What a stream connection keeps once it is up.
pub(super) struct Stream {
    /// Follows the echoed bytes; its `seq` is the oldest message not fully echoed.
    pub(super) recv: StreamChecker,
    /// The next byte to hand to the kernel: message `send_seq`, byte `send_off`.
    pub(super) send_seq: u64,
    pub(super) send_off: u32,
    /// Messages before this one were counted as timed out (or echoed).
    timed_out_seq: u64,
    /// io_uring mode: a receive is armed on the ring for this connection.
    pub(super) recv_armed: bool,
}

impl Up<Stream> {
    /// Writes the queued stream bytes not sent yet into `buf`, as many as fit,
    /// and stamps the messages they start as sent at `now`; returns how many.
    pub(super) fn fill_unsent(&mut self, id: u32, size: usize, now: u64, buf: &mut [u8]) -> usize {
        let s = &self.proto;
        let end_seq = s.recv.seq + self.queue.len() as u64;
        let (mut seq, mut off, mut pos) = (s.send_seq, s.send_off as usize, 0);
        while pos < buf.len() && seq < end_seq {
            let n = (size - off).min(buf.len() - pos);
            pattern::fill(id, seq, off, &mut buf[pos..pos + n]);
            let m = &mut self.queue[(seq - s.recv.seq) as usize];
            if m.sent == 0 {
                m.sent = now;
            }
            pos += n;
            off += n;
            if off == size {
                seq += 1;
                off = 0;
            }
        }
        pos
    }

    /// Records that the kernel took `n` more bytes of the stream.
    pub(super) fn advance_sent(&mut self, size: usize, n: usize) {
        let s = &mut self.proto;
        let total = s.send_off as usize + n;
        s.send_seq += (total / size) as u64;
        s.send_off = (total % size) as u32;
    }

    /// Checks echoed bytes `data`, completes (and records) the messages they
    /// finish and, with `refill`, queues as many new ones (closed loop).
    pub(super) fn absorb(&mut self, data: &[u8], rec: &mut Recorder, refill: bool, now: u64) -> Absorbed {
        let s = &mut self.proto;
        let size = s.recv.size();
        let outstanding = (s.send_seq - s.recv.seq) as usize * size + s.send_off as usize - s.recv.offset as usize;
        let excess = data.len() > outstanding;
        let data = &data[..data.len().min(outstanding)];
        let queue = &mut self.queue;
        let mut done = 0;
        s.recv.feed(data, |_, intact| {
            let m = queue.pop_front().expect("echo of a message that was sent");
            rec.complete(m, now, intact);
            done += 1;
        });
        if refill {
            for _ in 0..done {
                queue.push_back(Msg { intended: now, sent: 0 });
            }
        }
        s.timed_out_seq = s.timed_out_seq.max(s.recv.seq);
        Absorbed {
            completed: done,
            excess,
        }
    }
}

/// What one batch of echoed bytes did.
pub(super) struct Absorbed {
    /// Messages it completed.
    pub(super) completed: usize,
    /// The server sent more bytes than it was sent.
    pub(super) excess: bool,
}

impl Proto for Stream {
    fn open(plan: &Plan, id: u32) -> io::Result<Socket> {
        let source = plan.sources.for_conn(id as u64);
        let fd = crate::source::connect_from(plan.transport, &plan.endpoint, None, source)?;
        if plan.transport == Transport::Tcp {
            // Pipelined small messages must not wait for an ACK (Nagle).
            let _ = ssys::setsockopt_int(fd.as_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
        }
        Ok(Socket {
            fd: Some(fd),
            bound_path: None,
        })
    }

    fn new_up(plan: &Plan, id: u32) -> Stream {
        Stream {
            recv: StreamChecker::new(id, plan.size),
            send_seq: 0,
            send_off: 0,
            timed_out_seq: 0,
            recv_armed: false,
        }
    }

    fn pending(_w: &mut Worker<'_, Stream>, _k: usize, _now: u64) {}

    fn attach(w: &mut Worker<'_, Stream>, k: usize) -> io::Result<()> {
        if w.ring.is_some() {
            w.ring_attach(k)?;
        }
        Ok(())
    }

    fn on_event(w: &mut Worker<'_, Stream>, k: usize, bits: u32, now: u64) {
        let err_bits = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
        let in_bits = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32 | err_bits;
        match &mut w.conns[k].life {
            Life::Pending { sock, .. } => {
                if bits & (libc::EPOLLOUT as u32 | err_bits) == 0 {
                    return;
                }
                let err = ssys::getsockopt_int(sock.fd(), libc::SOL_SOCKET, libc::SO_ERROR).unwrap_or(libc::EIO);
                if err == 0 && bits & err_bits == 0 {
                    w.became_up(k, now);
                    // Data may already be waiting (edge-triggered: read it now);
                    // in io_uring mode the receive just armed picks it up.
                    if bits & in_bits != 0 && w.ring.is_none() && w.conns[k].life.is_up() {
                        w.read_stream(k, bits, now);
                    }
                } else {
                    let err = if err == 0 { libc::ECONNREFUSED } else { err };
                    w.connect_failed(k, now, &io::Error::from_raw_os_error(err));
                }
            }
            Life::Up(up) => {
                if bits & libc::EPOLLOUT as u32 != 0 {
                    up.writable = true;
                    w.mark_dirty(k);
                }
                if bits & in_bits != 0 {
                    w.read_stream(k, bits, now);
                }
            }
            Life::Idle { .. } | Life::Dead => {}
        }
    }

    fn send(w: &mut Worker<'_, Stream>, k: usize, now: u64) {
        if w.ring.is_some() {
            w.ring_send(k, now)
        } else {
            w.send_stream(k, now)
        }
    }

    /// `--timeout`, but never less than [`MIN_CONNECT_TIMEOUT_NS`] for the
    /// connections held for the whole run. A conversation (`--conn-msgs`)
    /// times its connect as part of it, by `--timeout` alone, and counts a
    /// connect that does not complete in it as not accepted.
    fn connect_timeout_ns(plan: &Plan) -> u64 {
        match plan.conn_msgs {
            Some(_) => plan.timeout_ns,
            None => plan.timeout_ns.max(MIN_CONNECT_TIMEOUT_NS),
        }
    }

    fn expire(w: &mut Worker<'_, Stream>, k: usize, now: u64) -> Option<u64> {
        let timeout = w.plan.timeout_ns;
        let connect_timeout = Self::connect_timeout_ns(w.plan);
        match &mut w.conns[k].life {
            Life::Pending { since, .. } if now - *since > connect_timeout => {
                w.connect_failed(k, now, &io::Error::from(io::ErrorKind::TimedOut));
                None
            }
            Life::Pending { since, .. } => Some(*since + connect_timeout + 1),
            Life::Up(up) => {
                let s = &mut up.proto;
                s.timed_out_seq = s.timed_out_seq.max(s.recv.seq);
                let mut expired = false;
                while s.timed_out_seq < s.send_seq {
                    let m = up.queue[(s.timed_out_seq - s.recv.seq) as usize];
                    if m.sent + timeout > now {
                        break;
                    }
                    s.timed_out_seq += 1;
                    expired = true;
                    // Counted at its deadline, which may have passed a
                    // little before this look: a message overdue before the
                    // end of the measured phase is a timeout of the window,
                    // one that is not is no timeout of it (see `Drain`).
                    w.rec.error(m.sent + timeout, |e| e.timeout += 1);
                }
                if expired && w.conv.is_some() {
                    // A conversation is not left waiting: it ends unanswered.
                    w.conv_unanswered(k, now);
                    return None;
                }
                // The oldest message not counted yet, if its first byte went
                // out (later ones arm their own deadline when they are sent).
                match up.queue.get((s.timed_out_seq - s.recv.seq) as usize) {
                    Some(m) if m.sent != 0 => Some(m.sent + timeout),
                    _ => None,
                }
            }
            Life::Idle { .. } | Life::Dead => None,
        }
    }

    /// Drops the queued messages not one byte of which was handed out (a
    /// message's `sent` is stamped when its first byte is written into a
    /// send buffer, in order, so these are the queue's tail; the sends in
    /// flight on the ring read only stamped ones).
    fn stop_new(up: &mut Up<Stream>) -> bool {
        while up.queue.back().is_some_and(|m| m.sent == 0) {
            up.queue.pop_back();
        }
        Self::owed(up)
    }

    fn owed(up: &Up<Stream>) -> bool {
        !up.queue.is_empty()
    }

    fn carried_load(up: &Up<Stream>) -> bool {
        up.proto.recv.seq > 0
    }

    fn wait(w: &mut Worker<'_, Stream>, until: u64, exact: bool) -> io::Result<()> {
        if w.ring.is_some() {
            w.ring_turn(until, exact)
        } else {
            w.epoll_turn(until.saturating_sub(w.shared.now_ns())).map(|_| ())
        }
    }
}

impl Worker<'_, Stream> {
    /// Reads and checks echoes. `bits` are the epoll event's: a short read
    /// ends the turn unless they say the peer hung up or failed, which saves
    /// the read that would only say `EAGAIN` (one syscall per message at depth 1).
    /// That is safe with edge-triggered epoll: the event was harvested before
    /// this read, so data or a FIN arriving after it raises a new event, and a
    /// FIN that arrived before it shows as `EPOLLRDHUP` in `bits`.
    fn read_stream(&mut self, k: usize, bits: u32, now: u64) {
        let hung_up = bits & (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0;
        loop {
            let Life::Up(up) = &self.conns[k].life else { return };
            let n = match ssys::read(up.sock.fd(), &mut self.buf) {
                Ok(0) => return self.lost(k, now, "server closed a connection".into()),
                Ok(n) => n,
                Err(e) if ssys::would_block(&e) => return,
                Err(e) => return self.lost(k, now, format!("connection error: {e}")),
            };
            if !self.on_stream_data(k, n, now) {
                return;
            }
            if n < self.buf.len() && !hung_up {
                return;
            }
        }
    }

    /// Checks the `n` echoed bytes in `self.buf` against what connection `k`
    /// sent, completes the messages they finish and queues the next ones
    /// (closed loop). Returns false if the connection was dropped for it.
    fn on_stream_data(&mut self, k: usize, n: usize, now: u64) -> bool {
        let refill = self.refills(now);
        let Life::Up(up) = &mut self.conns[k].life else {
            return false;
        };
        let got = up.absorb(&self.buf[..n], &mut self.rec, refill, now);
        if !self.after_absorb(k, got, now) {
            return false;
        }
        if self.conv.is_some() {
            // The conversation may end here and its slot reconnect: the
            // caller must not read on (it re-checks the connection's state).
            self.conv_after_echo(k, now);
            return self.conns[k].life.is_up();
        }
        true
    }

    /// Acts on what [`Up::absorb`] found; returns false if the connection was dropped.
    pub(super) fn after_absorb(&mut self, k: usize, got: Absorbed, now: u64) -> bool {
        if got.excess {
            // The server sent bytes nobody asked for.
            self.rec.mismatch(now);
            self.lost(k, now, "server sent more bytes than it was sent".into());
            return false;
        }
        if got.completed > 0 {
            self.mark_dirty(k);
        }
        true
    }

    fn send_stream(&mut self, k: usize, now: u64) {
        let size = self.plan.size;
        loop {
            let c = &mut self.conns[k];
            let Life::Up(up) = &mut c.life else { return };
            if !up.writable {
                return;
            }
            let pos = up.fill_unsent(c.id, size, now, &mut self.sendbuf);
            if pos == 0 {
                return;
            }
            self.timers.arm(k, now + self.plan.timeout_ns);
            match ssys::send(up.sock.fd(), &self.sendbuf[..pos]) {
                Ok(w) => {
                    up.advance_sent(size, w);
                    if w < pos {
                        up.writable = false;
                    }
                }
                Err(e) if ssys::would_block(&e) => up.writable = false,
                Err(e) => return self.lost(k, now, format!("send failed: {e}")),
            }
        }
    }
}
