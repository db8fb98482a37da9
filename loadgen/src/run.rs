//! A whole loadgen run: start the threads, drive the phases, collect the result.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering::{self, Relaxed};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use sockbench::cpu::CpuList;
use sockbench::net;
use sockbench::sys::signal;

use crate::cli::{Args, IoMode, DEFAULT_ADDR};
pub use crate::cli::{UsageError, EXIT_USAGE};
use crate::out::OutPlan;
use crate::progress::{IntervalView, Phase, Progress};
use crate::result::{self, new_run_id, Errors, Extra, RunEnv, RunResult, SeriesPoint, Settings, Throughput, SCHEMA};
use crate::source::SourceAddrs;
use crate::stats::{self, Interval, ThreadTotals};
use crate::worker::{self, Plan, Shared, UNSET};
use crate::{pattern, report};

const SECOND_NS: u64 = 1_000_000_000;

/// Grace after the last paced connect before startup gives up waiting.
const CONNECT_GRACE: Duration = Duration::from_secs(3);

/// The machine, for the result file.
pub fn run_env(pin: &str) -> RunEnv {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    RunEnv {
        kernel,
        cpu_model,
        cores: sockbench::cpu::available_cpus(),
        pin: pin.to_string(),
    }
}

/// The commit of the source tree loadgen was built from (`-dirty` with
/// uncommitted changes), else "unknown".
pub fn git_commit() -> String {
    sockbench::machine::git_commit(std::path::Path::new(env!("CARGO_MANIFEST_DIR")))
}

/// The directory unixgram clients bind their sockets in: created fresh with
/// an unpredictable name (mkdtemp, via `tempfile`; the usual mode, not 0700,
/// so that a server running as another user can still answer the clients'
/// sockets), and at the end loadgen removes
/// only the sockets it bound there (`c<id>`) and then the directory if it is
/// empty: a file someone else put there is left alone, and so is the directory.
struct ClientSocketDir {
    dir: PathBuf,
    conns: u64,
}

impl ClientSocketDir {
    fn create(conns: u64) -> anyhow::Result<ClientSocketDir> {
        let dir = tempfile::Builder::new()
            .prefix("loadgen-")
            .tempdir()
            .context("create a private directory for the unixgram client sockets")?
            // Keep it past the TempDir: its drop would remove everything inside.
            .keep();
        Ok(ClientSocketDir { dir, conns })
    }
}

impl Drop for ClientSocketDir {
    fn drop(&mut self) {
        use std::os::unix::fs::FileTypeExt as _;
        for id in 0..self.conns {
            let p = self.dir.join(format!("c{id}"));
            if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_socket()) {
                let _ = std::fs::remove_file(&p);
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Refuses, before anything starts, what cannot work: flags that make no
/// sense, a datagram size below the header, too few descriptors.
fn check_flags(args: &Args) -> Result<(), UsageError> {
    args.validate()?;
    crate::conversation::check_flags(args)?;
    if let Some(at) = args.start_at {
        crate::cli::check_start_at(at, std::time::SystemTime::now())?;
    }
    if !args.transport.is_stream() && (args.size as usize) < pattern::HEADER_LEN {
        return Err(UsageError(format!(
            "--size {}: datagrams carry a {}-byte header (connection id, sequence number); use --size {} or more",
            args.size,
            pattern::HEADER_LEN,
            pattern::HEADER_LEN
        )));
    }
    // Raise the soft limit to the hard one first: only past the hard limit is
    // the user's help needed.
    let fd_limit = sockbench::sys::raise_fd_limit().unwrap_or_else(|_| sockbench::sys::fd_limit());
    let threads = args.threads.min(args.conns);
    let fd_need = fds_per_table(args.conns, threads, fd_limit);
    if fd_need > fd_limit {
        let all = args.conns + FD_RESERVE;
        return Err(UsageError(format!(
            "--conns {} needs about {all} descriptors (or {fd_need} per thread with --threads {threads}) \
             but the hard limit is {fd_limit}; raise it (as root with CAP_SYS_RESOURCE: \
             ulimit -Hn {all}; ulimit -n {all}, or prlimit --nofile={all} --pid PID; the kernel's \
             ceiling is /proc/sys/fs/nr_open), use more --threads, or lower --conns",
            args.conns,
        )));
    }
    Ok(())
}

/// Descriptors each thread needs besides its connections (epoll, ring, stdio).
const FD_RESERVE: u64 = 64;

/// Descriptors the fullest descriptor table needs: all connections in one
/// table when they fit under `fd_limit`, else each thread's share in its own
/// table (see [`own_fd_table`]).
fn fds_per_table(conns: u64, threads: u64, fd_limit: u64) -> u64 {
    if conns + FD_RESERVE <= fd_limit {
        conns + FD_RESERVE
    } else {
        conns.div_ceil(threads.max(1)) + FD_RESERVE
    }
}

/// Gives the calling thread its own descriptor table (`unshare(CLONE_FILES)`).
/// `RLIMIT_NOFILE` bounds each table, not the process: where the hard limit
/// cannot be raised (no CAP_SYS_RESOURCE, as in many containers), N threads
/// with a table each hold N times as many connections. Each thread creates
/// its own epoll, ring and sockets and hands no descriptor to another thread.
fn own_fd_table() -> std::io::Result<()> {
    sockbench::syscall!(unshare(libc::CLONE_FILES)).map(|_| ())
}

/// Refuses more connections than the source addresses have ports (naming
/// `--local-addrs`), and sources of the wrong address family.
fn check_sources(sources: &SourceAddrs, args: &Args, endpoint: &net::Endpoint) -> Result<(), UsageError> {
    // Unknown port range (no /proc): do not guess, let connect say.
    let ports = crate::source::ports_per_source().unwrap_or(u64::MAX / 2);
    crate::source::check_capacity(sources, args.transport, endpoint, args.conns, ports).map_err(UsageError)
}

/// Runs loadgen with parsed `args`; `argv` is recorded verbatim. Returns the exit code.
pub fn run(args: Args, argv: Vec<String>) -> anyhow::Result<i32> {
    check_flags(&args)?;
    let args = crate::conversation::resolve(args);
    let out = OutPlan::check(args.out.as_deref(), args.json)?;
    let (addr, path) = args.target_flags()?;
    let endpoint = net::endpoint_from_flags(args.transport, addr.as_deref(), path.as_deref(), DEFAULT_ADDR)
        .map_err(|e| UsageError(e.to_string()))?;
    let sources = args.local_addrs.clone().unwrap_or_else(SourceAddrs::kernel_chosen);
    check_sources(&sources, &args, &endpoint)?;
    let threads = (args.threads).min(args.conns) as usize;
    let socket_dir = match args.transport {
        net::Transport::Unixgram => Some(ClientSocketDir::create(args.conns)?),
        _ => None,
    };
    let plan = Arc::new(Plan {
        transport: args.transport,
        endpoint: endpoint.clone(),
        conns: args.conns,
        size: args.size as usize,
        depth: args.depth,
        rate: args.rate,
        slack_ns: args.slack().map_or(0, |s| s.as_nanos() as u64),
        timeout_ns: args.timeout.as_nanos() as u64,
        connect_rate: args.connect_rate as f64,
        threads,
        unixgram_dir: socket_dir.as_ref().map(|d| d.dir.clone()),
        io: args.io,
        conn_msgs: args.conn_msgs,
        sources: sources.clone(),
    });
    signal::install_stop_handler(-1).context("install the SIGINT/SIGTERM handler")?;
    let shared = Arc::new(Shared::new());
    let (tx, rx) = mpsc::channel::<Interval>();
    let handles = start_threads(&plan, &shared, &tx, args.pin.as_ref())?;
    drop(tx);

    let progress = Progress::new(args.warmup, args.duration);
    let mut phases = Driver::new(&args, &shared, &rx, threads, &progress, endpoint.to_string()).run();
    progress.finish();
    shared.stop.store(true, Relaxed);
    let (totals, thread_error) = join_threads(handles);
    drop(socket_dir);
    if let (Some(e), None | Some(EarlyStop::ThreadFailed(_))) = (thread_error, &phases.stop) {
        phases.stop = Some(EarlyStop::ThreadFailed(format!("event loop failed: {e}")));
    }
    if let Some(EarlyStop::Unreachable(why)) = &phases.stop {
        // Nothing was measured: say so first and only, with no report of zeros.
        eprintln!("loadgen: error: {why}");
        return Ok(1);
    }
    // The final flush's interval is not shown; the result's totals come from `totals`.
    while rx.try_recv().is_ok() {}
    phases.io_used = io_used(&args, &shared, &progress);
    let (mut result, hist) = build_result(&args, argv, &plan, &totals, &phases, threads);
    crate::conversation::attach(
        &mut result,
        crate::conversation::RunFigures {
            args: &args,
            totals: totals.iter().filter_map(|t| t.conversations.as_ref()).collect(),
            measured_s: phases.measured_s,
            loadgen_cpu_us: phases.cpu_us,
            server_cpu_us: phases.server_cpu_us,
        },
    );
    finish(&args, &out, &result, &hist)
}

/// Prints the report (stdout, or stderr when stdout carries the JSON), writes
/// the result, and says why the run failed. Returns the exit code.
fn finish(args: &Args, out: &OutPlan, result: &RunResult, hist: &Histogram<u64>) -> anyhow::Result<i32> {
    for why in &result.failures {
        eprintln!("loadgen: error: {why}");
    }
    let report = report::summary(result, &args.latency_percentiles);
    if out.json_on_stdout() {
        eprint!("{report}");
    } else {
        print!("{report}");
    }
    if let Some(wrote) = out.write(result, hist)? {
        eprintln!("loadgen: {wrote}");
    }
    Ok(if result.failures.is_empty() { 0 } else { 1 })
}

fn start_threads(
    plan: &Arc<Plan>,
    shared: &Arc<Shared>,
    tx: &mpsc::Sender<Interval>,
    pin: Option<&CpuList>,
) -> anyhow::Result<Vec<JoinHandle<std::io::Result<ThreadTotals>>>> {
    let mut handles = Vec::new();
    let split_fds = plan.conns + FD_RESERVE > sockbench::sys::fd_limit();
    for i in 0..plan.threads {
        let (plan, shared, tx, pin) = (plan.clone(), shared.clone(), tx.clone(), pin.cloned());
        let h = std::thread::Builder::new()
            .name(format!("loadgen-{i}"))
            .spawn(move || {
                if let Some(pin) = &pin {
                    if !pin.pin_worker(i) {
                        eprintln!(
                            "loadgen: warning: could not pin thread {i} to CPU {}",
                            pin.for_worker(i)
                        );
                    }
                }
                let res = match split_fds {
                    true => own_fd_table().and_then(|()| worker::run_thread(i, &plan, &shared, tx)),
                    false => worker::run_thread(i, &plan, &shared, tx),
                };
                if res.is_err() {
                    shared.stop.store(true, Relaxed);
                }
                res
            })?;
        handles.push(h);
    }
    Ok(handles)
}

/// Every thread's totals, and the last error a thread ended with.
fn join_threads(
    handles: Vec<JoinHandle<std::io::Result<ThreadTotals>>>,
) -> (Vec<ThreadTotals>, Option<std::io::Error>) {
    let mut totals = Vec::new();
    let mut thread_error = None;
    for h in handles {
        match h.join() {
            Ok(Ok(t)) => totals.push(t),
            Ok(Err(e)) => thread_error = Some(e),
            Err(_) => thread_error = Some(std::io::Error::other("an event-loop thread panicked")),
        }
    }
    (totals, thread_error)
}

/// How the stream clients did their I/O, once the threads have said.
fn io_used(args: &Args, shared: &Shared, progress: &Progress) -> &'static str {
    if !args.transport.is_stream() || args.io == IoMode::Epoll {
        "epoll"
    } else if let Some(why) = shared.io_fallback.lock().unwrap().clone() {
        progress.println(&format!(
            "loadgen: warning: io_uring is not usable ({why}); the stream clients used epoll"
        ));
        "epoll"
    } else {
        if let Some(why) = shared.plain_fds.lock().unwrap().clone() {
            progress.println(&format!(
                "loadgen: warning: the io_uring path runs without {why}; each echo costs a descriptor lookup"
            ));
        }
        let unstamped = shared.unstamped.load(std::sync::atomic::Ordering::Relaxed);
        if unstamped > 0 {
            progress.println(&format!(
                "loadgen: warning: {unstamped} echoes came without the kernel's receive timestamp; \
                 from the first one on, the thread waited for every echo instead of sleeping through them"
            ));
        }
        "uring"
    }
}

/// Why a run ended before its measured phase was over.
#[derive(Clone, Debug)]
enum EarlyStop {
    /// No connection came up: nothing was measured.
    Unreachable(String),
    /// Every connection was lost after load started.
    ServerGone(String),
    /// SIGINT or SIGTERM.
    Interrupted,
    /// An event-loop thread failed.
    ThreadFailed(String),
}

impl EarlyStop {
    fn message(&self) -> String {
        match self {
            EarlyStop::Unreachable(why) | EarlyStop::ServerGone(why) | EarlyStop::ThreadFailed(why) => why.clone(),
            EarlyStop::Interrupted => "interrupted by a signal; the result covers the measured phase up to then".into(),
        }
    }
}

/// What the main thread saw while driving the phases.
struct Phases {
    stop: Option<EarlyStop>,
    series: Vec<SeriesPoint>,
    measured_s: f64,
    cpu_us: Option<u64>,
    server_cpu_us: Option<u64>,
    /// How the stream clients did their I/O, once the threads have said.
    io_used: &'static str,
    /// The measured window's start in wall-clock time, ns since the Unix epoch.
    window_start_unix_ns: Option<u64>,
}

/// One reading of both clocks, to turn the run's monotonic times into
/// wall-clock times (the window) and `--start-at` into a monotonic time.
struct ClockAnchor {
    mono_ns: u64,
    unix_ns: u64,
}

impl ClockAnchor {
    fn now(shared: &Shared) -> ClockAnchor {
        let unix_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        ClockAnchor {
            mono_ns: shared.now_ns(),
            unix_ns,
        }
    }

    fn to_unix_ns(&self, mono_ns: u64) -> u64 {
        (self.unix_ns + mono_ns).saturating_sub(self.mono_ns)
    }

    fn to_mono_ns(&self, at: std::time::SystemTime) -> u64 {
        let at_ns = at
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        (self.mono_ns + at_ns).saturating_sub(self.unix_ns)
    }
}

/// One report interval being collected: the threads' sum so far.
struct PendingTick {
    sum: Interval,
    /// How many threads have reported this tick.
    reported: usize,
    from_ns: u64,
    to_ns: u64,
}

/// CPU times (µs) at the start of the measured phase.
#[derive(Default)]
struct CpuAtStart {
    loadgen: Option<u64>,
    server: Option<u64>,
}

/// The first connects refused before loadgen gives up at once (fewer with
/// fewer connections): a server that is not there refuses every one, while a
/// live one answers the first few.
const FAIL_FAST_REFUSALS: u64 = 3;

/// The main thread's state while it drives startup, warm-up and the measured
/// phase: it starts the phases, ticks the report intervals, collects the
/// threads' intervals into the live display and the series.
struct Driver<'a> {
    args: &'a Args,
    shared: &'a Shared,
    rx: &'a mpsc::Receiver<Interval>,
    threads: usize,
    progress: &'a Progress,
    target: String,
    connect_deadline_ns: u64,
    ph: Phases,
    pending: BTreeMap<u64, PendingTick>,
    tick_no: u64,
    tick_start_ns: u64,
    next_tick_ns: u64,
    end_ns: u64,
    final_tick: Option<u64>,
    cpu_at_start: Option<CpuAtStart>,
    clock: ClockAnchor,
    /// `--start-at` on the monotonic clock.
    start_at_ns: Option<u64>,
}

impl<'a> Driver<'a> {
    fn new(
        args: &'a Args,
        shared: &'a Shared,
        rx: &'a mpsc::Receiver<Interval>,
        threads: usize,
        progress: &'a Progress,
        target: String,
    ) -> Driver<'a> {
        let spread = Duration::from_secs_f64(args.conns as f64 / args.connect_rate as f64);
        let clock = ClockAnchor::now(shared);
        let start_at_ns = args.start_at.map(|at| clock.to_mono_ns(at));
        Driver {
            clock,
            start_at_ns,
            args,
            shared,
            rx,
            threads,
            progress,
            target,
            connect_deadline_ns: (spread + CONNECT_GRACE).as_nanos() as u64,
            ph: Phases {
                stop: None,
                series: Vec::new(),
                measured_s: 0.0,
                cpu_us: None,
                server_cpu_us: None,
                io_used: "epoll",
                window_start_unix_ns: None,
            },
            pending: BTreeMap::new(),
            tick_no: 0,
            tick_start_ns: 0,
            next_tick_ns: SECOND_NS,
            end_ns: UNSET,
            final_tick: None,
            cpu_at_start: None,
        }
    }

    /// Drives the run to its end and returns what it saw.
    fn run(mut self) -> Phases {
        loop {
            if let Some(t) = self.final_tick {
                if !self.pending.contains_key(&t) && self.tick_no >= t {
                    break;
                }
            }
            let now = self.shared.now_ns();
            let step = if self.shared.load_start_ns.load(Relaxed) == UNSET {
                self.startup(now)
            } else {
                self.under_load(now)
            };
            if let Err(stop) = step {
                self.ph.stop = Some(stop);
                break;
            }
            self.show_position(now);
            if now >= self.next_tick_ns {
                self.tick(now);
            }
            self.collect();
            self.show_ready();
        }
        self.ph
    }

    fn measure_start_ns(&self) -> u64 {
        self.shared.measure_start_ns.load(Relaxed)
    }

    fn server_cpu_us(&self) -> Option<u64> {
        self.args
            .server_pid
            .and_then(|p| sockbench::procfs::tree_cpu_us(p).ok())
    }

    /// Stops shared by every phase: a failed thread, a signal.
    fn check_stop(&mut self, now: u64) -> Result<(), EarlyStop> {
        if self.shared.stop.load(Relaxed) {
            let why = self.shared.fatal.lock().unwrap().clone();
            return Err(EarlyStop::ThreadFailed(
                why.unwrap_or_else(|| "an event-loop thread failed".into()),
            ));
        }
        if signal::stop_requested() {
            // Ctrl-C or SIGTERM: end now and still write what was measured,
            // marked incomplete, rather than lose the run.
            let ms = self.measure_start_ns();
            if ms != UNSET && now > ms {
                self.close_window(now.min(self.end_ns).saturating_sub(ms) as f64 / 1e9);
            }
            return Err(EarlyStop::Interrupted);
        }
        Ok(())
    }

    /// Records the measured phase's length and the CPU spent in it.
    fn close_window(&mut self, measured_s: f64) {
        self.ph.measured_s = measured_s;
        let Some(at_start) = &self.cpu_at_start else { return };
        if let (Some(a), Ok(b)) = (at_start.loadgen, crate::sys::process_cpu_us()) {
            self.ph.cpu_us = Some(b.saturating_sub(a));
        }
        if let (Some(a), Some(b)) = (at_start.server, self.server_cpu_us()) {
            self.ph.server_cpu_us = Some(b.saturating_sub(a));
        }
    }

    /// Startup: waits for the connections, starts the load, or gives up.
    fn startup(&mut self, now: u64) -> Result<(), EarlyStop> {
        self.check_stop(now)?;
        let (up, conns) = (self.shared.open.load(Relaxed), self.args.conns);
        let due = match self.start_at_ns {
            // Conversations connect once load has started, each measured whole.
            Some(at) if self.args.conn_msgs.is_some() => now >= at,
            None if self.args.conn_msgs.is_some() => true,
            // --start-at: load starts at that instant, with the connections up by then.
            Some(at) => now >= at && up > 0,
            None => up == conns || (now >= self.connect_deadline_ns && up > 0),
        };
        if due {
            if self.args.conn_msgs.is_some() {
                // Conversations have not connected yet: nothing to warn about.
            } else if up < conns && self.start_at_ns.is_some() {
                self.progress.println(&format!(
                    "loadgen: warning: only {up} of {conns} connections up at --start-at; going on with those \
                     (give a later --start-at, or a higher --connect-rate)"
                ));
            } else if up < conns {
                self.progress.println(&format!(
                    "loadgen: warning: only {up} of {conns} connections up after {:.1}s; going on with those",
                    now as f64 / 1e9
                ));
            }
            self.start_load(now);
            return Ok(());
        }
        if self.all_refused() || (now >= self.connect_deadline_ns.max(self.start_at_ns.unwrap_or(0)) && up == 0) {
            return Err(EarlyStop::Unreachable(self.unreachable()));
        }
        Ok(())
    }

    /// The "cannot reach" message, with the last connect error.
    fn unreachable(&self) -> String {
        let why = self
            .shared
            .last_connect_error
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| "no answer".into());
        format!(
            "cannot reach the server at {} {}: {why}; is it running?",
            self.args.transport, self.target
        )
    }

    /// No connection ever came up and the first connects were all refused.
    fn all_refused(&self) -> bool {
        let refused = self.shared.connects_refused.load(Relaxed);
        self.shared.ever_up.load(Relaxed) == 0
            && refused >= FAIL_FAST_REFUSALS.min(self.args.conns)
            && refused == self.shared.connects_failed.load(Relaxed)
    }

    /// Every connection is up (or the grace is over): load starts now.
    fn start_load(&mut self, now: u64) {
        let ms = now + self.args.warmup.as_nanos() as u64;
        self.end_ns = ms + self.args.duration.as_nanos() as u64;
        self.ph.window_start_unix_ns = Some(self.clock.to_unix_ns(ms));
        self.shared.measure_start_ns.store(ms, Relaxed);
        self.shared.end_ns.store(self.end_ns, Relaxed);
        self.shared.load_start_ns.store(now, Ordering::Release);
        // Ticks fall on the measured phase's bounds, so warm-up stays out of the series.
        self.next_tick_ns = self.plan_tick(self.tick_start_ns, now);
    }

    /// The tick after one at `last`: a second later, or at the next phase
    /// bound if that comes within 1.5 s, so that no interval is a sliver
    /// (and the live lines do not come 0.1 s apart).
    fn plan_tick(&self, last: u64, now: u64) -> u64 {
        let regular = last + SECOND_NS;
        let stretched = regular + SECOND_NS / 2;
        let bound = [self.measure_start_ns(), self.end_ns]
            .into_iter()
            .filter(|&b| b != UNSET && b > last)
            .min();
        let next = match bound {
            Some(b) if b <= stretched => b,
            _ => regular,
        };
        next.max(now)
    }

    /// Warm-up and the measured phase: watch for the end and for a dead server.
    fn under_load(&mut self, now: u64) -> Result<(), EarlyStop> {
        self.check_stop(now)?;
        let ms = self.measure_start_ns();
        if now >= ms && self.cpu_at_start.is_none() {
            self.cpu_at_start = Some(CpuAtStart {
                loadgen: crate::sys::process_cpu_us().ok(),
                server: self.server_cpu_us(),
            });
        }
        if self.args.conn_msgs.is_some() {
            // Connections come and go; only a server that refuses the first
            // ones is given up on (a later failure is counted, by kind).
            return match self.all_refused() {
                true => Err(EarlyStop::Unreachable(self.unreachable())),
                false => self.end_due(now),
            };
        }
        if self.shared.open.load(Relaxed) == 0 {
            let why = self.shared.last_loss.lock().unwrap().clone().unwrap_or_default();
            self.ph.measured_s = now.saturating_sub(ms) as f64 / 1e9;
            return Err(EarlyStop::ServerGone(format!(
                "every connection to {} is gone ({why}); did the server die?",
                self.target
            )));
        }
        self.end_due(now)
    }

    /// At the end of the measured phase: the last tick is planned.
    fn end_due(&mut self, now: u64) -> Result<(), EarlyStop> {
        if now >= self.end_ns && self.final_tick.is_none() {
            self.close_window(self.args.duration.as_secs_f64());
            // One last tick collects the final partial interval; the threads stop after it.
            self.next_tick_ns = now;
            self.final_tick = Some(self.tick_no + 1);
        }
        Ok(())
    }

    /// Moves the live display to where the run is.
    fn show_position(&self, now: u64) {
        let ms = self.measure_start_ns();
        let (phase, into) = match self.shared.load_start_ns.load(Relaxed) {
            UNSET => (Phase::Startup, 0),
            start if now < ms => (Phase::Warmup, now.saturating_sub(start)),
            _ => (Phase::Measured, now.saturating_sub(ms)),
        };
        self.progress.at(phase, Duration::from_nanos(into));
    }

    /// Ends a report interval: the threads each send theirs for it.
    fn tick(&mut self, now: u64) {
        self.tick_no += 1;
        let empty = Interval {
            thread: 0,
            tick: self.tick_no,
            hist: stats::new_histogram(),
            msgs: 0,
            bytes: 0,
            errors: Errors::default(),
        };
        self.pending.insert(
            self.tick_no,
            PendingTick {
                sum: empty,
                reported: 0,
                from_ns: self.tick_start_ns,
                to_ns: now,
            },
        );
        self.tick_start_ns = now;
        self.shared.tick.store(self.tick_no, Relaxed);
        // After the final tick the threads stop; the next one is never due
        // before they have, and the loop ends when the final interval is in.
        self.next_tick_ns = self.plan_tick(now, now);
    }

    /// Waits a little for the threads' intervals and adds them up by tick.
    fn collect(&mut self) {
        // Before load, wake for --start-at too, so that hosts start within a millisecond of it.
        let due = match self.start_at_ns {
            Some(at) if self.shared.load_start_ns.load(Relaxed) == UNSET => self.next_tick_ns.min(at),
            _ => self.next_tick_ns,
        };
        let wait = due.saturating_sub(self.shared.now_ns());
        let wait = Duration::from_nanos(wait.clamp(1_000_000, 50_000_000));
        let Ok(first) = self.rx.recv_timeout(wait) else { return };
        for iv in std::iter::once(first).chain(self.rx.try_iter()) {
            if let Some(p) = self.pending.get_mut(&iv.tick) {
                let _ = p.sum.hist.add(&iv.hist);
                p.sum.msgs += iv.msgs;
                p.sum.bytes += iv.bytes;
                stats::add_errors(&mut p.sum.errors, &iv.errors);
                p.reported += 1;
            }
        }
    }

    /// Shows every interval all threads have reported (or that waited long
    /// enough), and adds the measured ones to the series.
    fn show_ready(&mut self) {
        let now = self.shared.now_ns();
        let closing = self.final_tick.is_some();
        let ready: Vec<u64> = self
            .pending
            .iter()
            .filter(|(&t, p)| {
                p.reported >= self.threads || ((t < self.tick_no || closing) && now > p.to_ns + 300_000_000)
            })
            .map(|(&t, _)| t)
            .collect();
        for t in ready {
            if let Some(p) = self.pending.remove(&t) {
                self.show_interval(p);
            }
        }
    }

    fn show_interval(&mut self, p: PendingTick) {
        let secs = (p.to_ns - p.from_ns).max(1) as f64 / 1e9;
        let ms = self.measure_start_ns();
        let phase = if ms == UNSET {
            Phase::Startup
        } else if p.from_ns < ms {
            Phase::Warmup
        } else {
            Phase::Measured
        };
        let (p50_us, p99_us) = (
            p.sum.hist.value_at_quantile(0.5) as f64,
            p.sum.hist.value_at_quantile(0.99) as f64,
        );
        self.progress.interval(&IntervalView {
            at_s: p.to_ns as f64 / 1e9,
            msgs_per_s: p.sum.msgs as f64 / secs,
            mb_per_s: p.sum.bytes as f64 / secs / 1e6,
            p50_us,
            p99_us,
            errors: p.sum.errors.total(),
            open: self.shared.open.load(Relaxed),
            conns: self.args.conns,
            phase,
        });
        if phase == Phase::Measured {
            self.ph.series.push(SeriesPoint {
                t_s: ((p.to_ns - ms) as f64 / 1e9 * 1000.0).round() / 1000.0,
                msgs: p.sum.msgs,
                p50_us,
                p99_us,
                errors: p.sum.errors.total(),
            });
        }
    }
}

/// Why the run fails (exit code 1), one line per reason, as the result
/// file records them: a run cut short, corruption in any phase, no echo.
fn failures(ph: &Phases, totals: &[ThreadTotals], errors: &Errors, messages: u64) -> Vec<String> {
    let mut why: Vec<String> = ph.stop.iter().map(EarlyStop::message).collect();
    // Corruption fails the run whenever it happened, warm-up included.
    let mismatched: u64 = totals.iter().map(|t| t.mismatch_whole_run).sum();
    if mismatched > 0 {
        let noun = if mismatched == 1 { "mismatch" } else { "mismatches" };
        why.push(format!(
            "{mismatched} {noun}: echoes that did not match what was sent (corruption), {} of them in the measured phase",
            errors.mismatch
        ));
    }
    if why.is_empty() && messages == 0 {
        why.push("no echo completed in the measured phase".into());
    }
    why
}

/// The `extra` keys loadgen adds (README.md, "Output").
fn extra_fields(
    args: &Args,
    ph: &Phases,
    unc: &Histogram<u64>,
    threads: usize,
    scheduled: u64,
    messages: u64,
) -> Extra {
    // The CPU times are recorded even without a message (a run that fell
    // behind says which side was busy); per message only with messages.
    let per_msg = |cpu: Option<u64>| cpu.filter(|_| messages > 0).map(|cpu| cpu as f64 / messages as f64);
    let (loadgen_cpu, server_cpu) = (ph.cpu_us, ph.server_cpu_us);
    Extra {
        latency_uncorrected_us: Some(stats::latency_of(unc)),
        histogram_uncorrected: Some(result::encode_histogram(unc)),
        threads_used: Some(threads as u64),
        scheduled_messages: args.rate.map(|_| scheduled),
        loadgen_cpu_us: loadgen_cpu,
        loadgen_cpu_us_per_msg: per_msg(loadgen_cpu),
        server_cpu_us: server_cpu,
        server_cpu_us_per_msg: per_msg(server_cpu),
        merged_from: Vec::new(),
        window_start_unix_ns: ph.window_start_unix_ns.filter(|_| ph.measured_s > 0.0),
        window_end_unix_ns: ph
            .window_start_unix_ns
            .filter(|_| ph.measured_s > 0.0)
            .map(|start| start + (ph.measured_s * 1e9) as u64),
        ..Extra::default()
    }
}

fn build_result(
    args: &Args,
    argv: Vec<String>,
    plan: &Plan,
    totals: &[ThreadTotals],
    ph: &Phases,
    threads: usize,
) -> (RunResult, Histogram<u64>) {
    let mut hist = stats::new_histogram();
    let mut unc = stats::new_histogram();
    let mut errors = Errors::default();
    let mut warmup_errors = Errors::default();
    let (mut messages, mut bytes, mut scheduled) = (0, 0, 0);
    for t in totals {
        let _ = hist.add(&t.hist);
        let _ = unc.add(&t.hist_uncorrected);
        stats::add_errors(&mut errors, &t.errors);
        stats::add_errors(&mut warmup_errors, &t.warmup_errors);
        messages += t.messages;
        bytes += t.bytes;
        scheduled += t.scheduled;
    }
    let secs = if ph.measured_s > 0.0 {
        ph.measured_s
    } else {
        args.duration.as_secs_f64()
    };
    let pin = args
        .pin
        .as_ref()
        .map(|p| p.cpus().iter().map(|c| c.to_string()).collect::<Vec<_>>().join(","));
    let result = RunResult {
        schema: SCHEMA.into(),
        command: argv,
        version: env!("CARGO_PKG_VERSION").into(),
        git_commit: git_commit(),
        env: run_env(pin.as_deref().unwrap_or("none")),
        settings: Settings {
            backend: args.backend.clone().or_else(|| args.label.clone()),
            label: args.label.clone(),
            transport: plan.transport.name().into(),
            target: plan.endpoint.to_string(),
            conns: args.conns,
            duration_s: args.duration.as_secs_f64(),
            warmup_s: args.warmup.as_secs_f64(),
            size: args.size,
            depth: args.depth,
            rate: args.rate,
            slack_s: args.slack().map(|s| s.as_secs_f64()),
            threads: args.threads,
            pin,
            connect_rate: args.connect_rate,
            timeout_s: args.timeout.as_secs_f64(),
            io: Some(ph.io_used.into()),
        },
        complete: ph.stop.is_none(),
        run_id: new_run_id(),
        merged_run_ids: Vec::new(),
        failures: failures(ph, totals, &errors, messages),
        warmup_errors,
        messages,
        bytes,
        throughput: Throughput {
            msgs_per_s: messages as f64 / secs,
            mb_per_s: bytes as f64 / secs / 1e6,
            requested_msgs_per_s: args.rate,
        },
        latency_us: stats::latency_of(&hist),
        errors,
        series: ph.series.clone(),
        histogram: result::encode_histogram(&hist),
        extra: extra_fields(args, ph, &unc, threads, scheduled, messages),
        conversations: None,
    };
    (result, hist)
}
