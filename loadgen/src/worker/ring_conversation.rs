//! Conversations on the ring (`--conn-msgs N` with `--io uring`, or `auto`
//! where the kernel has what it takes): a conversation's socket never enters
//! the process's descriptor table. Its socket, options, bind, connect,
//! receives, sends, shutdown and close are all ring operations on a *direct
//! descriptor*: slot `k` of the ring's fixed file table, for connection slot
//! `k`. So a conversation costs no syscall of its own: its operations go in
//! with the one `io_uring_enter` of each loop turn that waits, where the
//! epoll path makes about ten (`socket`, `setsockopt`, `bind`, `connect`,
//! `epoll_ctl`, `getsockopt`, a `read` and a `send` per echo, `close`).
//!
//! A conversation starts as one linked chain (a link breaks on the first
//! failure, and the kernel cancels the rest):
//! - `IORING_OP_SOCKET` into slot `k` (Linux 5.19), non-blocking, so that a
//!   full Unix backlog fails the connect with `EAGAIN` as on epoll;
//! - TCP: `TCP_NODELAY`, and with a source address
//!   `IP_BIND_ADDRESS_NO_PORT` and `IORING_OP_BIND` (Linux 6.11); the
//!   options by `IORING_OP_URING_CMD` (`SOCKET_URING_OP_SETSOCKOPT`, 6.7);
//! - `IORING_OP_CONNECT`.
//!
//! A slot's release (a shutdown when a receive or send may still hold the
//! socket, then `IORING_OP_CLOSE` of the slot) is queued when its
//! conversation ends, and goes in hard-linked before the slot's next chain,
//! or on its own at the end of the turn: either way the close of the old
//! socket comes before the new socket takes the slot. Receives are
//! single-shot, so when the last echo is checked nothing holds the socket
//! and the close sends the FIN at once. Each operation's `user_data` carries
//! the slot's generation, bumped with each chain, so a late completion of
//! an ended conversation is never taken for the next one's.
//!
//! What a conversation is (its echoes, failures by kind, histograms,
//! `EADDRNOTAVAIL`, source addresses) is `conversation.rs`'s, shared with
//! the epoll path: this file only replaces the syscalls.
//!
//! Before a run, [`check_conversation_ring`] probes the opcodes and runs the
//! chain once (no connect) on a scratch ring: `--io uring` is refused (exit
//! 2) where that fails, and `--io auto` runs on epoll instead and says so.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types, Probe};
use sockbench::net::{Endpoint, Transport};
use sockbench::ring::setup::missing;
use sockbench::ring::token::GEN_MASK;
use sockbench::ring::Driver;
use sockbench::sys::SockAddr;

use super::ring::{Op, RingIo, Token};
use super::stream::Stream;
use super::{Life, Plan, Proto, Socket, Worker};

/// Test hook: a comma-separated list of opcode names (`IORING_OP_BIND`) the
/// start-up probe takes as missing, so that the fallback and the refusal can
/// be tested on a kernel that has them.
pub const HIDE_OPCODE_ENV: &str = "LOADGEN_URING_HIDE_OPCODE";

/// `SOCKET_URING_OP_SETSOCKOPT` of the kernel's `io_uring_socket_op` (the
/// io-uring crate does not export it).
const SOCKET_URING_OP_SETSOCKOPT: u32 = 3;
/// Where `level`, `optname` and `optlen` sit in a 64-byte submission entry
/// (`struct io_uring_sqe`: `level` and `optname` share `addr`'s 8 bytes,
/// `optlen` shares `file_index`'s 4); `optval` is the command's first 8 bytes.
const SQE_LEVEL: usize = 16;
const SQE_OPTNAME: usize = 20;
const SQE_OPTLEN: usize = 44;
const _: () = assert!(std::mem::size_of::<squeue::Entry>() == 64);
/// The value of every option set here (a flag turned on). Static: the kernel
/// reads it when the linked option is issued, after the entry was submitted.
static ONE: libc::c_int = 1;
/// The longest chain: shutdown and close of the old socket, socket,
/// `IP_BIND_ADDRESS_NO_PORT`, bind, `TCP_NODELAY`, connect.
const MAX_CHAIN: usize = 7;
/// How long the start-up self-test waits for its completions.
const SELF_TEST_WAIT: Duration = Duration::from_secs(2);

/// What a slot's ended conversation still needs from the ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
enum Release {
    #[default]
    None,
    Close,
    /// A receive or send may still hold the socket: shut it down, then close.
    ShutdownClose,
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// The generation of the slot's current (or last) chain.
    gen: u32,
    /// Its connect is in flight.
    connecting: bool,
    release: Release,
}

/// A ring's conversations: where they connect to and from, and each slot's state.
pub(super) struct Direct {
    domain: libc::c_int,
    tcp: bool,
    server: SockAddr,
    /// `--local-addrs`, port 0: connection `id` binds to `sources[id % len]`
    /// (as `SourceAddrs::for_conn` picks); empty when the kernel chooses.
    sources: Vec<SockAddr>,
    slots: Vec<Slot>,
    /// Slots with a release queued (some may have been taken by a chain since).
    releasing: Vec<usize>,
}

impl Direct {
    fn new(plan: &Plan, slots: usize) -> io::Result<Direct> {
        let domain = match &plan.endpoint {
            Endpoint::Inet(SocketAddr::V4(_)) => libc::AF_INET,
            Endpoint::Inet(SocketAddr::V6(_)) => libc::AF_INET6,
            Endpoint::Unix(_) => libc::AF_UNIX,
        };
        Ok(Direct {
            domain,
            tcp: plan.transport == Transport::Tcp,
            server: plan.endpoint.sockaddr()?,
            sources: (plan.sources.addrs().iter())
                .map(|&ip| SockAddr::from_inet(SocketAddr::new(ip, 0)))
                .collect(),
            slots: vec![Slot::default(); slots],
            releasing: Vec::new(),
        })
    }

    /// The opcodes the chains need, with the names a refusal gives.
    fn opcodes(&self) -> Vec<(u8, &'static str)> {
        let mut ops = vec![
            (opcode::Socket::CODE, "IORING_OP_SOCKET (Linux 5.19)"),
            (opcode::Connect::CODE, "IORING_OP_CONNECT (Linux 5.5)"),
            (opcode::Shutdown::CODE, "IORING_OP_SHUTDOWN (Linux 5.11)"),
        ];
        if self.tcp {
            ops.push((opcode::UringCmd16::CODE, "IORING_OP_URING_CMD (Linux 5.19)"));
        }
        if self.tcp && !self.sources.is_empty() {
            ops.push((opcode::Bind::CODE, "IORING_OP_BIND (Linux 6.11)"));
        }
        ops
    }

    /// Hands `f` the chain's entries before its connect, for connection
    /// `id` in fixed slot `slot`, each with what it needs of the kernel.
    fn steps(
        &self,
        slot: u32,
        id: u32,
        mut f: impl FnMut(squeue::Entry, &'static str) -> io::Result<()>,
    ) -> io::Result<()> {
        let dest = types::DestinationSlot::try_from_slot_target(slot)
            .map_err(|s| io::Error::other(format!("fixed file slot {s} out of range")))?;
        let socket = opcode::Socket::new(self.domain, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0)
            .file_index(Some(dest))
            .build();
        f(socket, "IORING_OP_SOCKET into a fixed file slot (Linux 5.19)")?;
        if !self.tcp {
            return Ok(());
        }
        if !self.sources.is_empty() {
            let src = &self.sources[id as usize % self.sources.len()];
            f(
                setsockopt(slot, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT),
                "IP_BIND_ADDRESS_NO_PORT by SOCKET_URING_OP_SETSOCKOPT (Linux 6.7)",
            )?;
            // The kernel copies the address as the entry is submitted; it
            // lives in the ring's boxed state anyway.
            f(
                opcode::Bind::new(types::Fixed(slot), src.as_ptr(), src.len()).build(),
                "IORING_OP_BIND (Linux 6.11)",
            )?;
        }
        f(
            setsockopt(slot, libc::IPPROTO_TCP, libc::TCP_NODELAY),
            "TCP_NODELAY by SOCKET_URING_OP_SETSOCKOPT (Linux 6.7)",
        )
    }
}

/// A `setsockopt(level, name, 1)` on the socket in fixed slot `slot`, as an
/// `IORING_OP_URING_CMD` (`SOCKET_URING_OP_SETSOCKOPT`).
fn setsockopt(slot: u32, level: libc::c_int, name: libc::c_int) -> squeue::Entry {
    let mut cmd = [0u8; 16];
    cmd[..8].copy_from_slice(&(&ONE as *const libc::c_int as u64).to_ne_bytes());
    let mut sqe = opcode::UringCmd16::new(types::Fixed(slot), SOCKET_URING_OP_SETSOCKOPT)
        .cmd(cmd)
        .build();
    let p = (&mut sqe as *mut squeue::Entry).cast::<u8>();
    // SAFETY: `squeue::Entry` is `repr(C)` around the kernel's 64-byte
    // `io_uring_sqe` (asserted above); the three offsets are 4-byte integer
    // fields inside it (the crate's builder has no setter for them), and an
    // unaligned write of a u32 is valid at any address within the entry.
    unsafe {
        p.add(SQE_LEVEL).cast::<u32>().write_unaligned(level as u32);
        p.add(SQE_OPTNAME).cast::<u32>().write_unaligned(name as u32);
        p.add(SQE_OPTLEN)
            .cast::<u32>()
            .write_unaligned(std::mem::size_of::<libc::c_int>() as u32);
    }
    sqe
}

/// Submits what is queued if fewer than `n` submission entries are free, so
/// that no submit in the middle of a chain cuts its links.
fn reserve(d: &mut Driver, n: usize) -> io::Result<()> {
    let free = {
        let sq = d.ring.submission();
        sq.capacity() - sq.len()
    };
    if free < n {
        d.submit()?;
    }
    Ok(())
}

/// Checks that the kernel knows `ops` (unless [`HIDE_OPCODE_ENV`] hides one).
fn probe_opcodes(d: &Driver, ops: &[(u8, &'static str)]) -> io::Result<()> {
    let hidden = std::env::var(HIDE_OPCODE_ENV).unwrap_or_default();
    let mut probe = Probe::new();
    d.ring
        .submitter()
        .register_probe(&mut probe)
        .map_err(|e| missing("IORING_REGISTER_PROBE (Linux 5.6)", e))?;
    for &(code, name) in ops {
        let is_hidden = hidden
            .split(',')
            .any(|h| !h.is_empty() && name.split(' ').next() == Some(h));
        if is_hidden || !probe.is_supported(code) {
            return Err(missing(name, io::Error::from_raw_os_error(libc::EOPNOTSUPP)));
        }
    }
    Ok(())
}

/// Runs the chain of connection 0 without its connect, on fixed slot 0 of
/// `d` (empty), then closes the slot: every step must succeed. The kernel
/// knowing an opcode is not enough: a socket command (Linux 6.7) is a
/// `URING_CMD` the socket layer must know, and only trying tells.
fn self_test(d: &mut Driver, dx: &Direct) -> io::Result<()> {
    let mut names = Vec::new();
    dx.steps(0, 0, |sqe, name| {
        let step = names.len() as u32;
        names.push(name);
        // SAFETY: the socket option's value is static, and a bind's address
        // is copied as the entry is submitted; `dx` outlives the wait below.
        unsafe {
            d.push(
                sqe.flags(squeue::Flags::IO_LINK)
                    .user_data(Token::new(Op::Chain, step, 0).encode()),
            )
        }
    })?;
    // Linked after the chain: the scratch socket is closed if the chain
    // succeeded (else the scratch ring's end closes it).
    let close = opcode::Close::new(types::Fixed(0))
        .build()
        .user_data(Token::new(Op::Release, 0, 0).encode());
    // SAFETY: a close carries no buffer.
    unsafe { d.push(close)? };
    let deadline = Instant::now() + SELF_TEST_WAIT;
    let mut results = vec![None; names.len()];
    while d.in_flight > 0 && Instant::now() < deadline {
        d.submit_and_wait(Some(Duration::from_millis(20)))?;
        for c in d.take_completions() {
            if let Some(t) = Token::decode(c.user_data).filter(|t| t.op == Op::Chain) {
                results[t.gen as usize] = Some(c.result);
            }
        }
    }
    for (name, res) in names.iter().zip(results) {
        match res {
            Some(0) | Some(1..) => {}
            Some(e) => return Err(missing(name, io::Error::from_raw_os_error(-e))),
            None => return Err(missing(name, io::Error::from_raw_os_error(libc::ETIMEDOUT))),
        }
    }
    Ok(())
}

/// Whether this kernel runs `plan`'s conversations on the ring: the opcodes
/// probed and the chain tried once on a small scratch ring. The error names
/// what is missing.
pub fn check_conversation_ring(plan: &Plan) -> io::Result<()> {
    let mut d = Driver::new(8, 16, 4, 4096)?;
    // What every ring of loadgen's needs (the threads' rings test it again).
    sockbench::ring::setup::self_test(&mut d)?;
    d.ring
        .submitter()
        .register_files_sparse(1)
        .map_err(|e| missing("a sparse fixed file table (Linux 5.19)", e))?;
    let dx = Direct::new(plan, 1)?;
    probe_opcodes(&d, &dx.opcodes())?;
    self_test(&mut d, &dx)
}

impl RingIo {
    /// Makes this ring run `plan`'s conversations over `conns` slots, with
    /// direct descriptors; the error names what the kernel lacks.
    pub(super) fn enable_direct(&mut self, plan: &Plan, conns: usize) -> io::Result<()> {
        if !self.fixed_files {
            let why = self.plain_fds.clone().unwrap_or_default();
            return Err(missing(
                "a fixed file table for direct descriptors",
                io::Error::other(why),
            ));
        }
        let dx = Direct::new(plan, conns)?;
        probe_opcodes(&self.d, &dx.opcodes())?;
        self.single_shot = true;
        self.direct = Some(Box::new(dx));
        Ok(())
    }

    /// The generation of slot `k`'s conversation (0 without conversations).
    #[inline]
    pub(super) fn gen(&self, k: usize) -> u32 {
        self.direct.as_ref().map_or(0, |dx| dx.slots[k].gen)
    }

    /// Queues slot `k`'s chain: the release of its last socket, if one is
    /// queued, then socket, options, bind and connect for connection `id`.
    fn connect_direct(&mut self, k: usize, id: u32) -> io::Result<()> {
        reserve(&mut self.d, MAX_CHAIN)?;
        let dx = self.direct.as_mut().expect("conversations on the ring");
        let slot = &mut dx.slots[k];
        slot.gen = (slot.gen + 1) & GEN_MASK;
        slot.connecting = true;
        let (gen, release) = (slot.gen, std::mem::take(&mut slot.release));
        let d = &mut self.d;
        let tok = |op| Token::new(op, gen, k as u32).encode();
        let fixed = types::Fixed(k as u32);
        let hard = squeue::Flags::IO_HARDLINK;
        // SAFETY (each push below): a shutdown, a close and a socket carry no
        // buffer; a bind's and a connect's addresses are copied as the entry
        // is submitted, and live in the boxed `Direct` until the ring is gone
        // anyway; the socket option's value is static.
        if release == Release::ShutdownClose {
            let sqe = opcode::Shutdown::new(fixed, libc::SHUT_RDWR).build();
            unsafe { d.push(sqe.flags(hard).user_data(tok(Op::Release)))? };
        }
        if release != Release::None {
            let sqe = opcode::Close::new(fixed).build();
            unsafe { d.push(sqe.flags(hard).user_data(tok(Op::Release)))? };
        }
        dx.steps(k as u32, id, |sqe, _| unsafe {
            d.push(sqe.flags(squeue::Flags::IO_LINK).user_data(tok(Op::Chain)))
        })?;
        let connect = opcode::Connect::new(fixed, dx.server.as_ptr(), dx.server.len()).build();
        unsafe { d.push(connect.user_data(tok(Op::Connect))) }
    }

    /// Slot `k`'s conversation is over (no-op without conversations): a
    /// connect in flight is cancelled, and the slot's socket is closed
    /// (after a shutdown, with `shutdown`) before the slot is used again.
    pub(super) fn release_direct(&mut self, k: usize, shutdown: bool) {
        let Some(dx) = self.direct.as_mut() else { return };
        let s = &mut dx.slots[k];
        if std::mem::take(&mut s.connecting) {
            let cancel = opcode::AsyncCancel::new(Token::new(Op::Connect, s.gen, k as u32).encode())
                .build()
                .user_data(Token::new(Op::Release, s.gen, k as u32).encode());
            // SAFETY: a cancel carries no buffer. If it fails, the close
            // below still ends the socket once the connect lets go of it.
            let _ = unsafe { self.d.push(cancel) };
        }
        if s.release == Release::None {
            dx.releasing.push(k);
        }
        s.release = s.release.max(match shutdown {
            true => Release::ShutdownClose,
            false => Release::Close,
        });
    }

    /// Queues the releases no chain took this turn (see [`Direct`]).
    pub(super) fn flush_releases(&mut self) -> io::Result<()> {
        let Some(dx) = self.direct.as_mut() else { return Ok(()) };
        for k in dx.releasing.drain(..) {
            let release = std::mem::take(&mut dx.slots[k].release);
            if release == Release::None {
                continue;
            }
            reserve(&mut self.d, 2)?;
            let tok = Token::new(Op::Release, dx.slots[k].gen, k as u32).encode();
            let fixed = types::Fixed(k as u32);
            // SAFETY: a shutdown and a close carry no buffer.
            unsafe {
                if release == Release::ShutdownClose {
                    let sqe = opcode::Shutdown::new(fixed, libc::SHUT_RDWR).build();
                    self.d.push(sqe.flags(squeue::Flags::IO_HARDLINK).user_data(tok))?;
                }
                self.d.push(opcode::Close::new(fixed).build().user_data(tok))?;
            }
        }
        Ok(())
    }
}

impl<P: Proto> Worker<'_, P> {
    /// Starts connection `k`'s conversation on the ring: its socket is the
    /// direct descriptor in slot `k`.
    pub(super) fn open_direct(&mut self, k: usize) -> io::Result<Socket> {
        let id = self.conns[k].id;
        self.ring.as_mut().expect("io_uring mode").connect_direct(k, id)?;
        Ok(Socket::direct())
    }

    /// A completion is about slot `k`'s current conversation, still connecting.
    fn connecting(&mut self, k: usize, gen: u32) -> bool {
        matches!(self.conns[k].life, Life::Pending { .. }) && self.ring.as_ref().is_some_and(|r| r.gen(k) == gen)
    }
}

impl Worker<'_, Stream> {
    /// A step of slot `k`'s chain before its connect completed: a failure
    /// fails the connect (the kernel cancels the rest of the chain; those
    /// completions say `ECANCELED` and change nothing).
    pub(super) fn on_chain(&mut self, k: usize, gen: u32, result: i32, now: u64) {
        if result >= 0 || result == -libc::ECANCELED || !self.connecting(k, gen) {
            return;
        }
        if let Some(dx) = self.ring.as_mut().and_then(|r| r.direct.as_mut()) {
            dx.slots[k].connecting = false;
        }
        self.connect_failed(k, now, &io::Error::from_raw_os_error(-result));
    }

    /// Slot `k`'s connect completed: the conversation is up, or failed as an
    /// epoll connect would have (counted by kind, `conv_connect_failed`).
    pub(super) fn on_connect(&mut self, k: usize, gen: u32, result: i32, now: u64) {
        if !self.connecting(k, gen) {
            return;
        }
        if let Some(dx) = self.ring.as_mut().and_then(|r| r.direct.as_mut()) {
            dx.slots[k].connecting = false;
        }
        match result {
            0 => self.became_up(k, now),
            e => self.connect_failed(k, now, &io::Error::from_raw_os_error(-e)),
        }
    }
}
