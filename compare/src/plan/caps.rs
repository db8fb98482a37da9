//! What this machine allows: the CPU split between the server and loadgen,
//! and how many connections a backend that needs a process or a thread per
//! connection may be given. The only reads of `/proc` and `getrlimit` in
//! the plan.

use sockbench::cpu::CpuList;

/// The CPU split between the two sides.
#[derive(Clone, Debug)]
pub struct CpuSplit {
    pub server: CpuList,
    pub loadgen: CpuList,
    /// Said when both sides share CPUs.
    pub warning: Option<String>,
}

impl CpuSplit {
    /// `--server-cpus` / `--loadgen-cpus`, or the first half of the online
    /// CPUs for the server and the rest for loadgen.
    pub fn choose(server: Option<CpuList>, loadgen: Option<CpuList>) -> anyhow::Result<CpuSplit> {
        let online = core_affinity::get_core_ids()
            .map(|v| v.len())
            .unwrap_or_else(sockbench::cpu::available_cpus)
            .max(1);
        let list = |lo: usize, hi: usize| -> anyhow::Result<CpuList> {
            format!("{lo}-{hi}").parse::<CpuList>().map_err(|e| anyhow::anyhow!(e))
        };
        let half = (online / 2).max(1);
        let server = match server {
            Some(s) => s,
            None => list(0, half - 1)?,
        };
        let loadgen = match loadgen {
            Some(l) => l,
            None if online >= 2 => list(half, online - 1)?,
            None => list(0, 0)?,
        };
        let shared: Vec<usize> = server
            .cpus()
            .iter()
            .copied()
            .filter(|c| loadgen.cpus().contains(c))
            .collect();
        let warning = (!shared.is_empty()).then(|| {
            format!(
                "server and loadgen share CPU(s) {shared:?}: the two sides compete, so figures understate the server"
            )
        });
        Ok(CpuSplit {
            server,
            loadgen,
            warning,
        })
    }

    /// Every CPU of either side, once, in order.
    pub fn all_cpus(&self) -> Vec<usize> {
        let mut all: Vec<usize> = self.server.cpus().iter().chain(self.loadgen.cpus()).copied().collect();
        all.sort_unstable();
        all.dedup();
        all
    }
}

/// How many stream connections fork (a process per connection) may be given
/// on this machine.
///
/// fork's processes draw on the kernel's pid space
/// (`/proc/sys/kernel/pid_max`, 32768 by default, shared with everything else
/// running) and on the per-user process limit. We give it at most a quarter
/// of the smaller of the two, and never more than 4,000: on a small machine
/// the rest of the system (and loadgen's own threads) must still be able to
/// fork, and the fork backend's default `--max-conns` is 4,096.
pub fn per_conn_task_cap() -> u64 {
    let pid_max = read_u64("/proc/sys/kernel/pid_max").unwrap_or(32_768);
    (pid_max.min(nproc_limit()) / 4).min(4_000)
}

/// How many worker threads threadpool (a thread per stream connection) may
/// be given on this machine: what `pid_max`, `threads-max` and
/// `RLIMIT_NPROC` allow, less the threads already running and
/// [`THREAD_HEADROOM`] for loadgen and everything else.
pub fn threadpool_cap() -> u64 {
    let pid_max = read_u64("/proc/sys/kernel/pid_max").unwrap_or(32_768);
    let threads_max = read_u64("/proc/sys/kernel/threads-max").unwrap_or(u64::MAX);
    let limit = pid_max.min(threads_max).min(nproc_limit());
    limit.saturating_sub(threads_running() + THREAD_HEADROOM)
}

/// Threads left free beside threadpool's workers: loadgen's, compare's, and
/// the rest of the machine's.
pub const THREAD_HEADROOM: u64 = 2_048;

/// The descriptors one table may hold for the server and loadgen: the hard
/// `RLIMIT_NOFILE`, to which both raise their soft limit at start. The
/// limit bounds each descriptor table, not the process (issue 25): the
/// epoll server gives each event loop a table of its own and a uring ring
/// keeps its connections in its fixed file table, so more threads hold
/// more connections; loadgen gives each thread a table when the
/// connections do not fit one.
pub fn fd_table_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    match sockbench::syscall!(getrlimit(libc::RLIMIT_NOFILE, &mut lim)) {
        Ok(_) if lim.rlim_max != libc::RLIM_INFINITY => lim.rlim_max,
        Ok(_) => 1 << 20,
        Err(_) => 1_024,
    }
}

/// The descriptors the server keeps for itself in a table: 64, and for
/// epoll and uring 4 more per thread (`fd_reserve` in `src/server/mod.rs`).
pub fn server_fd_reserve(per_thread: bool, threads: u64) -> u64 {
    64 + if per_thread { 4 * threads } else { 0 }
}

/// loadgen's reserve per descriptor table (`loadgen::checks::FD_RESERVE`).
pub const LOADGEN_FD_RESERVE: u64 = loadgen::checks::FD_RESERVE;

/// The kernel's largest fixed file table (`IORING_MAX_FIXED_FILES`): a uring
/// ring holds at most this many connections whatever the descriptor limit.
pub const MAX_FIXED_FILES: u64 = 1 << 20;

/// The fewest tables of `per_table(t)` connections each, `t` of them, that
/// hold `conns` and `slack` more; at least `min`, at most 1,024.
pub fn tables_for(conns: u64, slack: u64, min: u64, per_table: impl Fn(u64) -> u64) -> u64 {
    (min.max(1)..=1_024)
        .find(|&t| t.saturating_mul(per_table(t)) >= conns + slack)
        .unwrap_or(1_024)
}

fn nproc_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    match sockbench::syscall!(getrlimit(libc::RLIMIT_NPROC, &mut lim)) {
        Ok(_) if lim.rlim_cur != libc::RLIM_INFINITY => lim.rlim_cur,
        _ => u64::MAX,
    }
}

/// Threads on the machine now: the second figure of `/proc/loadavg`'s
/// `running/total` field.
fn threads_running() -> u64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().nth(3)?.split_once('/')?.1.parse().ok())
        .unwrap_or(1_000)
}

fn read_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A connection cap and why it exists.
pub(super) struct Cap {
    pub(super) conns: u64,
    pub(super) why: String,
}
