//! Datagram clients (UDP, unixgram) over epoll. A client counts as connected
//! once its probe datagram is echoed; every datagram carries a header
//! (connection id, sequence number) so that answers are matched to what was
//! sent, and lost, duplicate and reordered answers are told apart.

use std::collections::VecDeque;
use std::io;

use sockbench::net::Endpoint;
use sockbench::sys as ssys;

use super::{Conn, Life, Msg, Plan, Proto, Recorder, Socket, Up, Worker, UNSET};
use crate::pattern::{self, DatagramError, DatagramId};

/// Probe datagrams (sent while a datagram client "connects") have this bit set in their sequence number.
const PROBE_BIT: u64 = 1 << 63;
/// Answered datagrams remembered behind the oldest outstanding one, to tell duplicates.
const DUP_MEMORY: usize = 256;
/// The longest wait for a probe's echo, whatever `--timeout` says.
const PROBE_TIMEOUT_NS: u64 = 250_000_000;

/// A datagram connection.
#[allow(dead_code)] // named for readers: the worker holds `Conn<Datagram>`s
pub(super) type DatagramConn = Conn<Datagram>;

/// What happened to one sent datagram.
#[derive(Clone, Copy, Debug)]
enum Slot {
    Out(Msg),
    Answered,
    Lost,
}

/// What a datagram connection keeps once it is up.
pub(super) struct Datagram {
    /// Sequence number of the next datagram to send.
    next_seq: u64,
    /// Sequence number of `window[0]`.
    base_seq: u64,
    /// Every datagram from the oldest outstanding one (or `DUP_MEMORY` back) on.
    window: VecDeque<Slot>,
    max_answered: Option<u64>,
}

impl Proto for Datagram {
    fn open(plan: &Plan, id: u32) -> io::Result<Socket> {
        let local = plan.unixgram_dir.as_ref().map(|d| d.join(format!("c{id}")));
        if let Some(p) = &local {
            let _ = std::fs::remove_file(p);
        }
        let local_ep = local.clone().map(Endpoint::Unix);
        let source = plan.sources.for_conn(id as u64);
        match crate::source::connect_from(plan.transport, &plan.endpoint, local_ep.as_ref(), source) {
            Ok(fd) => Ok(Socket {
                fd: Some(fd),
                bound_path: local.map(std::path::PathBuf::into_boxed_path),
            }),
            Err(e) => {
                if let Some(p) = &local {
                    let _ = std::fs::remove_file(p);
                }
                Err(e)
            }
        }
    }

    fn new_up(_plan: &Plan, _id: u32) -> Datagram {
        Datagram {
            next_seq: 0,
            base_seq: 0,
            window: VecDeque::new(),
            max_answered: None,
        }
    }

    fn pending(w: &mut Worker<'_, Datagram>, k: usize, now: u64) {
        w.send_probe(k, now);
    }

    fn attach(_w: &mut Worker<'_, Datagram>, _k: usize) -> io::Result<()> {
        Ok(())
    }

    fn on_event(w: &mut Worker<'_, Datagram>, k: usize, bits: u32, now: u64) {
        let err_bits = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
        let in_bits = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32 | err_bits;
        match &mut w.conns[k].life {
            Life::Up(up) if bits & libc::EPOLLOUT as u32 != 0 => {
                up.writable = true;
                w.mark_dirty(k);
            }
            Life::Up(_) | Life::Pending { .. } => {}
            Life::Idle { .. } | Life::Dead => return,
        }
        if bits & in_bits != 0 {
            w.read_datagrams(k, now);
        }
    }

    fn send(w: &mut Worker<'_, Datagram>, k: usize, now: u64) {
        w.send_datagrams(k, now);
    }

    fn connect_timeout_ns(plan: &Plan) -> u64 {
        plan.timeout_ns.min(PROBE_TIMEOUT_NS)
    }

    fn expire(w: &mut Worker<'_, Datagram>, k: usize, now: u64) -> Option<u64> {
        let timeout = w.plan.timeout_ns;
        let probe_timeout = Self::connect_timeout_ns(w.plan);
        match &mut w.conns[k].life {
            Life::Pending { since, .. } if now - *since > probe_timeout => {
                let e = io::Error::new(io::ErrorKind::TimedOut, "no answer to a probe datagram");
                w.connect_failed(k, now, &e);
                None
            }
            Life::Pending { since, .. } => Some(*since + probe_timeout + 1),
            Life::Up(up) => {
                let mut resolved = 0;
                let mut next = None;
                for slot in up.proto.window.iter_mut() {
                    match *slot {
                        Slot::Out(m) if m.sent + timeout <= now => {
                            *slot = Slot::Lost;
                            resolved += 1;
                        }
                        Slot::Out(m) => {
                            next = Some(m.sent + timeout);
                            break;
                        }
                        _ => {}
                    }
                }
                if resolved > 0 {
                    w.rec.error(now, |e| e.lost += resolved as u64);
                    w.after_datagrams_resolved(k, resolved, now);
                }
                next
            }
            Life::Idle { .. } | Life::Dead => None,
        }
    }

    fn carried_load(up: &Up<Datagram>) -> bool {
        // Probes are not answers: `max_answered` is set by data datagrams only.
        up.proto.max_answered.is_some()
    }

    fn wait(w: &mut Worker<'_, Datagram>, until: u64, _exact: bool) -> io::Result<()> {
        w.epoll_turn(until.saturating_sub(w.shared.now_ns())).map(|_| ())
    }
}

impl Worker<'_, Datagram> {
    /// Sends connection `k`'s probe: its echo makes the connection up. The
    /// probe's number is the attempt's, so each attempt's probe differs.
    fn send_probe(&mut self, k: usize, now: u64) {
        let size = self.plan.size;
        let Conn { id, failures, life, .. } = &mut self.conns[k];
        let Life::Pending { sock, since } = life else { return };
        pattern::encode_datagram(*id, PROBE_BIT | (*failures as u64 + 1), &mut self.sendbuf[..size]);
        *since = now;
        match ssys::send(sock.fd(), &self.sendbuf[..size]) {
            Ok(_) => {}
            Err(e) if ssys::would_block(&e) => {}
            Err(e) => self.connect_failed(k, now, &e),
        }
    }

    fn send_datagrams(&mut self, k: usize, now: u64) {
        let size = self.plan.size;
        loop {
            let c = &mut self.conns[k];
            let Life::Up(up) = &mut c.life else { return };
            if !up.writable {
                return;
            }
            let Some(&m) = up.queue.front() else { return };
            pattern::encode_datagram(c.id, up.proto.next_seq, &mut self.sendbuf[..size]);
            match ssys::send(up.sock.fd(), &self.sendbuf[..size]) {
                Ok(_) => {
                    self.timers.arm(k, now + self.plan.timeout_ns);
                    up.queue.pop_front();
                    up.proto.window.push_back(Slot::Out(Msg {
                        intended: m.intended,
                        sent: now,
                    }));
                    up.proto.next_seq += 1;
                }
                Err(e) if ssys::would_block(&e) || e.raw_os_error() == Some(libc::ENOBUFS) => up.writable = false,
                Err(e) => return self.lost(k, now, format!("send failed: {e}")),
            }
        }
    }

    fn read_datagrams(&mut self, k: usize, now: u64) {
        let mut resolved = 0;
        loop {
            let (sock, pending) = match &self.conns[k].life {
                Life::Pending { sock, .. } => (sock, true),
                Life::Up(up) => (&up.sock, false),
                Life::Idle { .. } | Life::Dead => return,
            };
            let n = match ssys::recv_from(sock.fd(), &mut self.buf) {
                Ok((n, _)) => n,
                Err(e) if ssys::would_block(&e) => break,
                Err(e) if pending => return self.connect_failed(k, now, &e),
                Err(e) => return self.lost(k, now, format!("receive failed: {e}")),
            };
            if self.on_datagram(k, n, now) {
                resolved += 1;
            }
        }
        self.after_datagrams_resolved(k, resolved, now);
    }

    /// Checks the datagram of `n` bytes in `self.buf` and settles what it
    /// answers; true if it answered an outstanding datagram.
    fn on_datagram(&mut self, k: usize, n: usize, now: u64) -> bool {
        let decoded = if n > self.buf.len() {
            Err(DatagramError::Size)
        } else {
            pattern::decode_datagram(&self.buf[..n], self.plan.size)
        };
        let (id, intact) = match decoded {
            Ok(id) => (id, true),
            Err(DatagramError::Payload(id)) => (id, false),
            Err(_) => {
                self.rec.mismatch(now);
                return false;
            }
        };
        let c = &mut self.conns[k];
        if id.conn != c.id {
            // Another client's datagram: the server mixed up its peers.
            self.rec.mismatch(now);
            return false;
        }
        if id.seq & PROBE_BIT != 0 {
            if !intact {
                self.rec.mismatch(now);
            } else if matches!(c.life, Life::Pending { .. }) {
                self.became_up(k, now);
            }
            return false;
        }
        let Life::Up(up) = &mut c.life else {
            // A numbered datagram before any was sent.
            self.rec.mismatch(now);
            return false;
        };
        up.proto.settle(id, intact, &mut self.rec, now)
    }

    /// After `resolved` outstanding datagrams were answered or declared lost:
    /// forgets old answers and, in closed loop, queues as many new datagrams.
    fn after_datagrams_resolved(&mut self, k: usize, resolved: usize, now: u64) {
        let closed_loop = self.plan.rate.is_none() && self.load_start != UNSET;
        let Life::Up(up) = &mut self.conns[k].life else { return };
        let d = &mut up.proto;
        while d.window.len() > DUP_MEMORY && !matches!(d.window.front(), Some(Slot::Out(_))) {
            d.window.pop_front();
            d.base_seq += 1;
        }
        if closed_loop {
            for _ in 0..resolved {
                up.queue.push_back(Msg { intended: now, sent: 0 });
            }
        }
        if resolved > 0 || !up.queue.is_empty() {
            self.mark_dirty(k);
        }
    }
}

impl Datagram {
    /// Settles our numbered answer `id`; true if it answered an outstanding datagram.
    fn settle(&mut self, id: DatagramId, intact: bool, rec: &mut Recorder, now: u64) -> bool {
        let seq = id.seq;
        if seq >= self.next_seq {
            rec.mismatch(now);
            return false;
        }
        if seq < self.base_seq {
            // Older than the duplicate memory: it was answered or declared lost long ago.
            return false;
        }
        let idx = (seq - self.base_seq) as usize;
        match self.window[idx] {
            Slot::Out(m) => {
                self.window[idx] = Slot::Answered;
                if self.max_answered.is_some_and(|mx| seq < mx) {
                    rec.error(now, |e| e.reordered += 1);
                }
                self.max_answered = Some(self.max_answered.map_or(seq, |mx| mx.max(seq)));
                rec.complete(m, now, intact);
                true
            }
            Slot::Answered => {
                rec.error(now, |e| e.duplicate += 1);
                false
            }
            // Answered after --timeout: already counted as lost.
            Slot::Lost => false,
        }
    }
}
