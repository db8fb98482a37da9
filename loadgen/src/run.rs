//! A whole loadgen run: start the threads, drive the phases, collect the result.

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use anyhow::Context;
use hdrhistogram::Histogram;
use sockbench::cpu::CpuList;
use sockbench::net;
use sockbench::sys::signal;

use crate::assemble::build_result;
use crate::checks::{check_flags, check_sources, FD_RESERVE};
use crate::cli::{Args, IoMode, DEFAULT_ADDR};
pub use crate::cli::{UsageError, EXIT_FAILED, EXIT_USAGE};
use crate::out::OutPlan;
use crate::phase_clock::{EarlyStop, PhaseClock};
use crate::progress::Progress;
use crate::report;
use crate::result::RunResult;
use crate::source::SourceAddrs;
use crate::stats::{Interval, ThreadTotals};
use crate::worker::{self, Plan, Shared};

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

/// Gives the calling thread its own descriptor table (`unshare(CLONE_FILES)`).
/// `RLIMIT_NOFILE` bounds each table, not the process: where the hard limit
/// cannot be raised (no CAP_SYS_RESOURCE, as in many containers), N threads
/// with a table each hold N times as many connections. Each thread creates
/// its own epoll, ring and sockets and hands no descriptor to another thread.
pub(crate) fn own_fd_table() -> std::io::Result<()> {
    sockbench::syscall!(unshare(libc::CLONE_FILES)).map(|_| ())
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
    let mut plan = Plan {
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
    };
    let io_fallback = crate::conversation::check_io(&mut plan)?;
    let plan = Arc::new(plan);
    signal::install_stop_handler(-1).context("install the SIGINT/SIGTERM handler")?;
    let shared = Arc::new(Shared::new());
    *shared.io_fallback.lock().unwrap() = io_fallback;
    let (tx, rx) = mpsc::channel::<Interval>();
    let handles = start_threads(&plan, &shared, &tx, args.pin.as_ref())?;
    drop(tx);

    let progress = Progress::new(args.warmup, args.duration);
    progress.println(&crate::progress::start_header(&args, &endpoint.to_string(), threads));
    let mut phases = PhaseClock::new(&args, &shared, &rx, threads, &progress, endpoint.to_string()).run();
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
        return Ok(EXIT_FAILED);
    }
    // The final flush's interval is not shown; the result's totals come from `totals`.
    while rx.try_recv().is_ok() {}
    phases.io_used = io_used(&args, &shared, &progress);
    let (mut result, hist) = build_result(&args, argv, &plan, &totals, &phases, threads);
    result.extra.connect_ramp_s = shared.connect_ramp_s();
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
    Ok(if result.failures.is_empty() { 0 } else { EXIT_FAILED })
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
                if let Err(e) = &res {
                    // Said now: the other threads stop at their next turn,
                    // and this is the one line that says why.
                    eprintln!("loadgen: error: thread {i} failed: {e}");
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
        let unstamped = shared.unstamped.load(Relaxed);
        if unstamped > 0 {
            progress.println(&format!(
                "loadgen: warning: {unstamped} echoes came without the kernel's receive timestamp; \
                 from the first one on, the thread waited for every echo instead of sleeping through them"
            ));
        }
        "uring"
    }
}
