//! The generated `results/README.md`: machine, date, commit, pinning, the
//! numbers in tables, the exact commands, and the plots.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::plots::{server_cpu_us_per_msg, size_label, PlotFile};
use super::{Manifest, Outcome, RunRecord, DISTURBED_CORES};
use crate::result::RunResult;

/// The machine a comparison ran on.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub kernel: String,
    pub memory_mib: u64,
}

impl Machine {
    /// Reads `/proc` for the CPU model, memory and kernel release.
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let memory_mib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map(|kib| kib / 1024)
            .unwrap_or(0);
        Machine {
            cpu_model,
            cores: online_cpus(),
            kernel,
            memory_mib,
        }
    }
}

/// CPUs online on the machine (not just those this process may use: the
/// runner pins itself).
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as usize
    } else {
        sockbench::cpu::available_cpus()
    }
}

/// `git rev-parse HEAD`, with `-dirty` when the tree has uncommitted changes.
///
/// `-dirty` is added when tracked files differ from HEAD, except under
/// `out_dir`: a rerun replaces the results that are committed there.
pub fn git_commit(out_dir: &Path) -> String {
    let run = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
    };
    match run(&["rev-parse", "HEAD"]) {
        Some(out) => {
            let mut commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let exclude = format!(":(exclude){}", out_dir.display());
            let status = run(&["status", "--porcelain", "--untracked-files=no", "--", ".", &exclude])
                .or_else(|| run(&["status", "--porcelain", "--untracked-files=no"]));
            if status.is_some_and(|o| !o.stdout.is_empty()) {
                commit.push_str("-dirty");
            }
            commit
        }
        None => "unknown".into(),
    }
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm), for dates after 1970.
    let z = days as i64 + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// An argv as one shell-ready line, with paths under the current directory made relative.
fn shell_line(argv: &[String]) -> String {
    let cwd = std::env::current_dir().ok().map(|d| format!("{}/", d.display()));
    argv.iter()
        .map(|a| {
            let a = match &cwd {
                Some(c) => a.strip_prefix(c.as_str()).unwrap_or(a),
                None => a,
            };
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "[]*?'\"$;&|<>()".contains(c)) {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                a.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "–".into())
}

fn extra_u64(res: &RunResult, key: &str) -> Option<u64> {
    res.extra.get(key).and_then(|v| v.as_u64())
}

fn extra_f64(res: &RunResult, key: &str) -> Option<f64> {
    res.extra.get(key).and_then(|v| v.as_f64())
}

/// Writes `dir/README.md`.
pub fn write_readme(manifest: &Manifest, plots: &[PlotFile], dir: &Path) -> anyhow::Result<()> {
    let text = render(manifest, &manifest.load_results(dir), plots);
    let path = dir.join("README.md");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

/// The README text.
pub fn render(m: &Manifest, all_runs: &[(RunRecord, RunResult)], plots: &[PlotFile]) -> String {
    let medians = super::median_runs(all_runs);
    let runs = &medians[..];
    let rounds = m.runs.iter().map(|r| r.spec.round).max().unwrap_or(0).max(1);
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(w, "# Backend comparison results\n");
    let _ = writeln!(
        w,
        "Generated by `compare` (`loadgen/src/compare/`); do not edit by hand. Re-run with \
         `cargo run --release -p loadgen --bin compare`{}.\n",
        if m.quick {
            " (this is a `--quick` run: a small matrix with short runs, for smoke testing, not for conclusions)"
        } else {
            ""
        }
    );
    let _ = writeln!(w, "| | |\n|---|---|");
    let _ = writeln!(w, "| date (UTC) | {} to {} |", m.started_utc, m.finished_utc);
    let _ = writeln!(w, "| commit | `{}` |", m.git_commit);
    let _ = writeln!(w, "| command | `{}` |", shell_line(&m.command));
    let _ = writeln!(w, "| CPU | {} |", m.machine.cpu_model);
    let _ = writeln!(w, "| cores | {} |", m.machine.cores);
    let _ = writeln!(w, "| memory | {} MiB |", m.machine.memory_mib);
    let _ = writeln!(w, "| kernel | {} |", m.machine.kernel);
    let _ = writeln!(w, "| server pinned to CPU | {} |", m.server_cpus);
    let _ = writeln!(w, "| loadgen pinned to CPU | {} |", m.loadgen_cpus);
    let mut io: Vec<String> = runs
        .iter()
        .filter(|(rec, _)| rec.spec.transport != "udp" && rec.spec.transport != "unixgram")
        .filter_map(|(_, res)| res.settings.io.clone())
        .collect();
    io.sort();
    io.dedup();
    if !io.is_empty() {
        let _ = writeln!(w, "| loadgen stream I/O | {} (datagrams: epoll) |", io.join(", "));
    }
    let _ = writeln!(
        w,
        "| per run | {} s warm-up, then {} s measured; {} round(s) of the matrix |",
        m.warmup_s, m.duration_s, rounds
    );
    for st in &m.platform_stalls {
        let _ = writeln!(
            w,
            "| CPU {} pauses, nothing running | {:.1} per second of 1 ms or more, the longest {:.1} ms; {:.2}% of the time in pauses of 100 µs or more |",
            st.cpu,
            st.over_1ms_per_s(),
            st.max_us / 1000.0,
            st.stalled_fraction * 100.0
        );
    }
    let disturbance: Vec<(&RunRecord, f64)> = all_runs
        .iter()
        .filter_map(|(rec, res)| Some((rec, extra_f64(res, "other_processes_cores")?)))
        .collect();
    if let Some((worst, cores)) = disturbance.iter().max_by(|a, b| a.1.total_cmp(&b.1)) {
        let over = disturbance.iter().filter(|(_, c)| *c > DISTURBED_CORES).count();
        let _ = writeln!(
            w,
            "| other processes during runs | at most {:.3} cores in a run's measured window ({}); {} of {} runs above {} cores |",
            cores,
            worst.spec.name(),
            over,
            disturbance.len(),
            DISTURBED_CORES
        );
    }
    let ok = m.runs.iter().filter(|r| r.outcome == Outcome::Ok).count();
    let _ = writeln!(
        w,
        "| runs | {} ({} ok, {} failed) |\n",
        m.runs.len(),
        ok,
        m.runs.len() - ok
    );

    if !m.notes.is_empty() {
        let _ = writeln!(w, "## Notes on the matrix\n");
        for n in &m.notes {
            let _ = writeln!(w, "- {n}");
        }
        let _ = writeln!(w);
    }

    let disturbed: Vec<_> = disturbance.iter().filter(|(_, c)| *c > DISTURBED_CORES).collect();
    if !disturbed.is_empty() {
        let _ = writeln!(w, "## Disturbed runs\n");
        let _ = writeln!(
            w,
            "Other processes used more than {DISTURBED_CORES} cores during these runs' measured windows, so their \
             throughput and latency may be low; server CPU per message is less affected. Re-run on a quiet machine \
             before drawing conclusions from them.\n"
        );
        let _ = writeln!(w, "| run | other processes, cores |\n|---|--:|");
        for (rec, cores) in disturbed {
            let _ = writeln!(w, "| {} | {:.3} |", rec.spec.name(), cores);
        }
        let _ = writeln!(w);
    }

    if !plots.is_empty() {
        let _ = writeln!(w, "## Plots\n");
        for p in plots {
            let _ = writeln!(w, "### {}\n\n![{}]({})\n", p.title, p.title, p.file);
        }
    }

    let _ = writeln!(w, "## How the figures are measured\n");
    if rounds > 1 {
        let _ = writeln!(
            w,
            "- **Rounds.** The whole matrix ran {rounds} times, one round after another, with every backend side by \
             side at each point. Each row and plot point is the point's median run: the one with the median server \
             CPU per message (closed loop) or the median p99 (open loop), so every figure in a row comes from one real \
             run. The server CPU column shows the lowest and highest of the {rounds} runs in brackets. Every run's \
             result file is here (`-r1`, `-r2`, ... in the name)."
        );
    }
    let _ = writeln!(
        w,
        "- **Throughput and latency** come from loadgen's result file of each run (closed loop: each connection \
         keeps one message in flight; open loop: a fixed schedule, latency measured from each message's intended \
         send time). Messages are counted only in the measured phase, after connecting and warm-up.\n\
         - **Server CPU µs/msg** is the CPU time of the server's whole process tree: every live thread of the \
         server and of its live forked children (found through `/proc/PID/task/*/children`), from \
         `/proc/PID/task/TID/schedstat` in nanoseconds (per-process `utime`/`stime` are whole clock ticks, which \
         would round each short-lived fork child down to nothing), plus `cutime`/`cstime` of children already \
         reaped. It is read twice: once loadgen's connects (at {} per second) and warm-up should be over, and again \
         just before the measured phase should end. It is divided by loadgen's measured rate times that window's \
         length. Load is steady through warm-up and measurement, so this is the ratio of two steady rates even when \
         connecting took longer than planned. It is the modern form of the \"process control CPU time\" that \
         Stevens compared across server designs (UNIX Network Programming, ch. 30).\n\
         - **loadgen CPU µs/msg** is loadgen's own figure (`extra.loadgen_cpu_us_per_msg`, when it records one): \
         when it is near the server's, loadgen's core may be the limit rather than the server.\n\
         - **Server peak RSS** is the largest of the summed `VmRSS` of the live server tree, sampled every {} ms, \
         and the main process's `VmHWM`. For fork it is an upper bound: pages the children share are counted once \
         per child.\n\
         - **Pinning.** The server is started already confined to its CPUs (`sched_setaffinity` before `exec`, so \
         every thread and forked child stays there) and also gets `--pin`; loadgen likewise on its CPUs. The runner \
         itself, including its `/proc` sampler, runs on loadgen's CPUs, never on the server's.\n\
         - The server runs with `--threads` = its CPU count for epoll and uring (one event loop per CPU). \
         threadpool gets `--threads` = connections on streams, because each worker serves one connection until it \
         closes; fork forks one child per stream connection. Both are scaled down where the machine cannot hold a \
         process or thread per connection (see the notes).\n",
        super::runner::CONNECT_RATE,
        super::proc_cpu::RSS_INTERVAL.as_millis()
    );

    if let Some(worst) = m.platform_stalls.iter().max_by(|a, b| a.max_us.total_cmp(&b.max_us)) {
        let secs = m.platform_stalls.iter().map(|s| s.seconds).fold(0.0, f64::max);
        let _ = writeln!(
            w,
            "- **The machine's own pauses.** Before the first run, one thread per CPU spun for {secs:.0} s reading \
             the clock, with nothing else of ours running; a gap between two reads is time the CPU was taken away \
             (an interrupt, a kernel thread, or on a virtual machine the host descheduling the vCPU, which the guest \
             may not count as steal time). The header gives each CPU's figures; the longest pause was {:.1} ms, on \
             CPU {}. Every run shares these pauses, whatever the backend: they set a floor under the tail latency, \
             and a p99.9 or max of about their length comes from the machine, not from the server design.\n",
            worst.max_us / 1000.0,
            worst.cpu
        );
    }

    if !disturbance.is_empty() {
        let _ = writeln!(
            w,
            "- **Other processes.** At both ends of each run's window the runner also reads the CPU time of every \
             process it can see in `/proc` outside its own tree (the runner, the server and loadgen) and outside the \
             kernel's threads (`/proc/PID/stat`: `utime + stime + cutime + cstime`, whole clock ticks; a process \
             that exited shows in the parent that reaped it, less what it had used before the window). The growth is CPU that something else took from the \
             benchmark: a build, a test run, another benchmark. A run above {DISTURBED_CORES} cores is listed as \
             disturbed.\n"
        );
    }

    // Closed-loop tables, one per transport and size.
    let mut keys: Vec<(String, u64)> = Vec::new();
    for (r, _) in runs.iter().filter(|(r, _)| !r.spec.is_open_loop()) {
        let k = (r.spec.transport.clone(), r.spec.size_bytes);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    if !keys.is_empty() {
        let _ = writeln!(w, "## Closed loop\n");
    }
    for (transport, size) in keys {
        let _ = writeln!(w, "### {transport}, {}\n", size_label(size));
        let _ = writeln!(
            w,
            "| backend | conns | msgs/s | MB/s | p50 µs | p99 µs | p99.9 µs | max µs | server CPU µs/msg | server cores busy | loadgen CPU µs/msg | server peak RSS MiB | errors |"
        );
        let _ = writeln!(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        for (r, res) in runs
            .iter()
            .filter(|(r, _)| !r.spec.is_open_loop() && r.spec.transport == transport && r.spec.size_bytes == size)
        {
            let conns = if r.spec.conns != r.spec.requested_conns {
                format!("{} (of {})", r.spec.conns, r.spec.requested_conns)
            } else {
                r.spec.conns.to_string()
            };
            let l = &res.latency_us;
            let _ = writeln!(
                w,
                "| {} | {conns} | {:.0} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {} |",
                r.spec.backend,
                res.throughput.msgs_per_s,
                res.throughput.mb_per_s,
                l.p50,
                l.p99,
                l.p99_9,
                l.max,
                opt(server_cpu_us_per_msg(res), |v| {
                    match super::server_cpu_range(all_runs, &r.spec.point()) {
                        Some((lo, hi)) if rounds > 1 => format!("{v:.2} ({lo:.2}–{hi:.2})"),
                        _ => format!("{v:.2}"),
                    }
                }),
                opt(extra_f64(res, "server_cpu_cores_busy"), |v| format!("{v:.2}")),
                opt(extra_f64(res, "loadgen_cpu_us_per_msg"), |v| format!("{v:.2}")),
                opt(extra_u64(res, "server_peak_rss_kb").map(|k| k as f64), |k| format!(
                    "{:.1}",
                    k / 1024.0
                )),
                res.errors.total()
            );
        }
        let _ = writeln!(w);
    }

    let open: Vec<_> = runs.iter().filter(|(r, _)| r.spec.is_open_loop()).collect();
    if !open.is_empty() || !m.open_loop_note.is_empty() {
        let _ = writeln!(w, "## Open loop: latency at the same offered rate\n");
        let _ = writeln!(w, "{}\n", m.open_loop_note);
    }
    if !open.is_empty() {
        let _ = writeln!(
            w,
            "| backend | transport | conns | size | requested msgs/s | achieved msgs/s | p50 µs | p90 µs | p99 µs | p99.9 µs | p99.99 µs | max µs | server CPU µs/msg | errors |"
        );
        let _ = writeln!(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        for (r, res) in open {
            let l = &res.latency_us;
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} |",
                r.spec.backend,
                r.spec.transport,
                r.spec.conns,
                size_label(r.spec.size_bytes),
                opt(res.throughput.requested_msgs_per_s.or(r.spec.rate), |v| format!(
                    "{v:.0}"
                )),
                res.throughput.msgs_per_s,
                l.p50,
                l.p90,
                l.p99,
                l.p99_9,
                l.p99_99,
                l.max,
                opt(server_cpu_us_per_msg(res), |v| format!("{v:.2}")),
                res.errors.total()
            );
        }
        let _ = writeln!(w);
    }

    let failed: Vec<_> = m.runs.iter().filter(|r| r.outcome != Outcome::Ok).collect();
    if !failed.is_empty() {
        let _ = writeln!(w, "## Failed runs\n");
        let _ = writeln!(w, "| run | why |\n|---|---|");
        for r in failed {
            if let Outcome::Failed(why) = &r.outcome {
                let first = why.lines().next().unwrap_or("").replace('|', "\\|");
                let _ = writeln!(w, "| {} | {} |", r.spec.name(), first);
            }
        }
        let _ = writeln!(w, "\nThe full messages are in `compare.json`.\n");
    }

    let _ = writeln!(w, "## Exact commands\n");
    let _ = writeln!(
        w,
        "Each run starts the server, waits for its `listening` line (the port comes from its `addr=`), runs \
         loadgen, then stops the server with SIGTERM. Result files are named after the run.\n"
    );
    let _ = writeln!(
        w,
        "<details><summary>server and loadgen command of every run</summary>\n"
    );
    for r in m.runs.iter().filter(|r| !r.server_argv.is_empty()) {
        let _ = writeln!(w, "`{}`\n", r.spec.name());
        let _ = writeln!(
            w,
            "```sh\n{}\n{}\n```\n",
            shell_line(&r.server_argv),
            shell_line(&r.loadgen_argv)
        );
    }
    let _ = writeln!(w, "</details>");
    s
}
