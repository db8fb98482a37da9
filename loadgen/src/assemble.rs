//! Result assembly: the threads' totals and what the phase clock saw become
//! one [`RunResult`], with the verdict's reasons (`failures`).

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::cli::Args;
use crate::phase_clock::{EarlyStop, Phases};
use crate::result::{self, new_run_id, Errors, Extra, RunEnv, RunResult, Settings, Throughput, SCHEMA};
use crate::stats::{self, ThreadTotals};
use crate::worker::Plan;

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

/// What the verdict looks at, over every thread.
#[derive(Clone, Debug)]
pub struct VerdictInputs<'a> {
    /// Why the run ended early, if it did.
    pub stop: Option<&'a EarlyStop>,
    /// A stream transport (a lost message is a timeout) or datagrams (lost).
    pub stream: bool,
    /// `--conns`.
    pub conns_asked: u64,
    /// Connections that had come up when the measured phase began.
    pub conns_up: u64,
    /// Connections still up at the end with an echo completed.
    pub conns_carried_load: u64,
    /// Connections still up at the end with no echo completed (in a closed
    /// loop each was sent a message at load start, so none was answered).
    pub conns_unanswered: u64,
    /// A closed loop sends on every connection from the start, so each one
    /// must carry load; an open loop at a low rate leaves some idle (a
    /// connection it sent to but got nothing back from counts as timeouts).
    pub closed_loop: bool,
    /// Errors in the measured phase (`connect` over the whole run).
    pub errors: &'a Errors,
    /// Errors before the measured phase.
    pub warmup_errors: &'a Errors,
    /// Mismatched echoes over the whole run, warm-up included.
    pub mismatch_whole_run: u64,
    /// Echoes completed in the measured phase.
    pub messages: u64,
    /// `--timeout`.
    pub timeout: Duration,
    /// `--max-loss`, percent.
    pub max_loss_pct: f64,
    /// Times TCP's retransmission timer fired in the measured phase
    /// (`extra.kernel.tcp_rto`; 0 when unknown). Only adds a hint to the
    /// reasons; it never decides whether the run fails.
    pub tcp_rto: u64,
}

/// Datagrams lost as a percentage of those sent in the measured phase
/// (answered + lost); `None` when nothing was sent.
pub fn loss_pct(errors: &Errors, messages: u64) -> Option<f64> {
    let sent = messages.saturating_add(errors.lost);
    (sent > 0).then(|| 100.0 * errors.lost as f64 / sent as f64)
}

/// Why the run fails (exit code 1), one line per reason, as the result file
/// records them. A run fails when it was cut short; when not every
/// connection came up and carried load; on any corrupted, duplicated or
/// reordered echo (warm-up included); on stream timeouts or resets in the
/// measured phase; on datagram loss above `--max-loss`; and when no echo
/// completed at all.
pub fn failures(v: &VerdictInputs<'_>) -> Vec<String> {
    let mut why: Vec<String> = v.stop.iter().map(|s| s.message()).collect();
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    // A run cut short already says why; its connections were lost with it.
    if v.stop.is_none() && v.conns_up < v.conns_asked {
        why.push(format!(
            "only {} of {} connections were up when the measured phase began (the others' connects \
             failed, were not answered in time, or came after --start-at)",
            v.conns_up, v.conns_asked
        ));
    } else if v.stop.is_none() && v.closed_loop && v.conns_carried_load < v.conns_asked {
        why.push(format!(
            "only {} of {} connections carried load: {} came up but completed no echo or were lost",
            v.conns_carried_load,
            v.conns_asked,
            v.conns_asked - v.conns_carried_load
        ));
    }
    // Said whenever it happened: the kernel completes a handshake into the
    // listener's backlog before the server accepts, so to loadgen these
    // connections are up, and their messages only time out.
    if v.stop.is_none() && v.closed_loop && v.conns_unanswered > 0 {
        why.push(format!(
            "{} never answered: connected, but not one echo came back; is the server's accept \
             backlog or --max-conns full?",
            plural(v.conns_unanswered, "connection", "connections")
        ));
    }
    // Corruption fails the run whenever it happened, warm-up included.
    if v.mismatch_whole_run > 0 {
        why.push(format!(
            "{}: echoes that did not match what was sent (corruption), {} of them in the measured phase",
            plural(v.mismatch_whole_run, "mismatch", "mismatches"),
            v.errors.mismatch
        ));
    }
    let duplicates = v.errors.duplicate + v.warmup_errors.duplicate;
    if duplicates > 0 {
        why.push(format!(
            "{}: datagrams answered twice",
            plural(duplicates, "duplicate", "duplicates")
        ));
    }
    let reordered = v.errors.reordered + v.warmup_errors.reordered;
    if reordered > 0 {
        why.push(format!("{reordered} reordered: answers older than one already seen"));
    }
    if v.errors.timeout > 0 {
        why.push(format!(
            "{}: messages not echoed within --timeout {} of their send in the measured phase{}",
            plural(v.errors.timeout, "timeout", "timeouts"),
            humantime::format_duration(v.timeout),
            rto_hint(v)
        ));
    }
    if v.errors.reset > 0 {
        why.push(format!(
            "{}: connections the server reset or closed in the measured phase",
            plural(v.errors.reset, "reset", "resets")
        ));
    }
    if let Some(loss) = loss_pct(v.errors, v.messages).filter(|&l| !v.stream && l > v.max_loss_pct) {
        why.push(format!(
            "datagram loss {loss:.2}% ({} of {} sent) is above --max-loss {}%",
            v.errors.lost,
            v.messages + v.errors.lost,
            v.max_loss_pct
        ));
    }
    if why.is_empty() && v.messages == 0 {
        why.push(format!("no echo completed in the measured phase{}", rto_hint(v)));
    }
    why
}

/// On streams, when TCP's retransmission timer fired in the measured phase:
/// a note that echoes which waited for it are late. The timer is never under
/// `RtoMin` (200 ms); it is 1 s on a connection with no round trip measured
/// yet, 3 s after a retried handshake. It says what the kernel counted, not
/// that those were the late echoes: the count is the namespace's, other
/// connections' included.
fn rto_hint(v: &VerdictInputs<'_>) -> String {
    if !v.stream || v.tcp_rto == 0 {
        return String::new();
    }
    format!(
        " (TCP's retransmission timer fired {} in the measured phase; an echo that waited for it \
         takes at least 200 ms, 1 s or more on a fresh connection: see the Kernel line, extra.kernel)",
        if v.tcp_rto == 1 {
            "once".to_string()
        } else {
            format!("{} times", v.tcp_rto)
        }
    )
}

/// The `extra` keys loadgen adds (docs/loadgen.md, "Output"; each field in
/// docs/formats.md, "loadgen result files").
fn extra_fields(args: &Args, ph: &Phases, sums: &Sums, threads: usize, stream: bool) -> Extra {
    let messages = sums.messages;
    let unc = &sums.unc;
    // The CPU times are recorded even without a message (a run that fell
    // behind says which side was busy); per message only with messages.
    let per_msg = |cpu: Option<u64>| cpu.filter(|_| messages > 0).map(|cpu| cpu as f64 / messages as f64);
    let (loadgen_cpu, server_cpu) = (ph.cpu_us, ph.server_cpu_us);
    Extra {
        latency_uncorrected_us: Some(stats::latency_of(unc)),
        histogram_uncorrected: Some(result::encode_histogram(unc)),
        threads_used: Some(threads as u64),
        scheduled_messages: args.rate.map(|_| sums.scheduled),
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
        conns_up: Some(ph.conns_up),
        conns_carried_load: Some(sums.conns_carried_load),
        conns_unanswered: (args.rate.is_none() && args.conn_msgs.is_none()).then_some(sums.conns_unanswered),
        latency_stdev_us: (!sums.hist.is_empty()).then(|| sums.hist.stdev()),
        latency_queued_us: sums.queued.as_ref().map(stats::latency_of),
        loss_pct: (!stream).then(|| loss_pct(&sums.errors, messages)).flatten(),
        max_loss_pct: (!stream).then_some(args.max_loss),
        kernel: ph.kernel.clone(),
        ..Extra::default()
    }
}

/// The threads' totals, added up.
struct Sums {
    hist: Histogram<u64>,
    unc: Histogram<u64>,
    /// Closed loop: from the queueing (see `ThreadTotals::hist_queued`).
    queued: Option<Histogram<u64>>,
    errors: Errors,
    warmup_errors: Errors,
    messages: u64,
    bytes: u64,
    scheduled: u64,
    mismatch_whole_run: u64,
    conns_carried_load: u64,
    conns_unanswered: u64,
}

impl Sums {
    fn of(totals: &[ThreadTotals]) -> Sums {
        let mut s = Sums {
            hist: stats::new_histogram(),
            unc: stats::new_histogram(),
            queued: None,
            errors: Errors::default(),
            warmup_errors: Errors::default(),
            messages: 0,
            bytes: 0,
            scheduled: 0,
            mismatch_whole_run: 0,
            conns_carried_load: 0,
            conns_unanswered: 0,
        };
        for t in totals {
            let _ = s.hist.add(&t.hist);
            let _ = s.unc.add(&t.hist_uncorrected);
            if let Some(q) = &t.hist_queued {
                let _ = s.queued.get_or_insert_with(stats::new_histogram).add(q);
            }
            stats::add_errors(&mut s.errors, &t.errors);
            stats::add_errors(&mut s.warmup_errors, &t.warmup_errors);
            s.messages += t.messages;
            s.bytes += t.bytes;
            s.scheduled += t.scheduled;
            s.mismatch_whole_run += t.mismatch_whole_run;
            s.conns_carried_load += t.conns_carried_load;
            s.conns_unanswered += t.conns_unanswered;
        }
        s
    }
}

/// The run's result, and its headline histogram for the `.hgrm` file.
pub fn build_result(
    args: &Args,
    argv: Vec<String>,
    plan: &Plan,
    totals: &[ThreadTotals],
    ph: &Phases,
    threads: usize,
) -> (RunResult, Histogram<u64>) {
    let sums = Sums::of(totals);
    let stream = plan.transport.is_stream();
    // Conversations' connections come and go, so the verdicts on connections
    // up and carrying load do not apply; failed conversations are counted by
    // kind, and their resets and timeouts fail the run as they do here.
    let conversations = args.conn_msgs.is_some();
    let failures = failures(&VerdictInputs {
        stop: ph.stop.as_ref(),
        stream,
        conns_asked: args.conns,
        conns_up: if conversations { args.conns } else { ph.conns_up },
        conns_carried_load: if conversations {
            args.conns
        } else {
            sums.conns_carried_load
        },
        // A conversation's connections come and go: none is held unanswered.
        conns_unanswered: if conversations { 0 } else { sums.conns_unanswered },
        closed_loop: args.rate.is_none(),
        errors: &sums.errors,
        warmup_errors: &sums.warmup_errors,
        mismatch_whole_run: sums.mismatch_whole_run,
        messages: sums.messages,
        timeout: args.timeout,
        max_loss_pct: args.max_loss,
        tcp_rto: ph.kernel.as_ref().and_then(|k| k.tcp_rto).unwrap_or(0),
    });
    let (messages, bytes) = (sums.messages, sums.bytes);
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
        failures,
        warmup_errors: sums.warmup_errors.clone(),
        messages,
        bytes,
        throughput: Throughput {
            msgs_per_s: messages as f64 / secs,
            mb_per_s: bytes as f64 / secs / 1e6,
            requested_msgs_per_s: args.rate,
        },
        latency_us: stats::latency_of(&sums.hist),
        errors: sums.errors.clone(),
        series: ph.series.clone(),
        series_interval_s: Some(ph.series_interval_s),
        histogram: result::encode_histogram(&sums.hist),
        extra: extra_fields(args, ph, &sums, threads, stream),
        conversations: None,
    };
    (result, sums.hist)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(errors: &Errors) -> VerdictInputs<'_> {
        VerdictInputs {
            stop: None,
            stream: true,
            conns_asked: 10,
            conns_up: 10,
            conns_carried_load: 10,
            conns_unanswered: 0,
            closed_loop: true,
            errors,
            warmup_errors: errors,
            mismatch_whole_run: 0,
            messages: 1000,
            timeout: Duration::from_secs(1),
            max_loss_pct: 1.0,
            tcp_rto: 0,
        }
    }

    fn one(v: &VerdictInputs<'_>) -> String {
        let f = failures(v);
        assert_eq!(f.len(), 1, "{f:?}");
        f[0].clone()
    }

    #[test]
    fn a_clean_run_passes() {
        let none = Errors::default();
        assert!(failures(&clean(&none)).is_empty());
        // Connect failures that were retried until every connection came up do not fail it.
        let retried = Errors {
            connect: 3,
            ..Errors::default()
        };
        assert!(failures(&VerdictInputs {
            errors: &retried,
            ..clean(&none)
        })
        .is_empty());
    }

    #[test]
    fn each_cause_fails_the_run_and_names_itself() {
        let none = Errors::default();
        let v = clean(&none);
        let up = one(&VerdictInputs {
            conns_up: 8,
            conns_carried_load: 8,
            ..v.clone()
        });
        assert!(up.contains("only 8 of 10 connections were up"), "{up}");
        let load = one(&VerdictInputs {
            conns_carried_load: 2,
            ..v.clone()
        });
        assert!(load.contains("only 2 of 10 connections carried load"), "{load}");
        // Up but never answered: named as such, besides the load they did not carry.
        let held = failures(&VerdictInputs {
            conns_carried_load: 7,
            conns_unanswered: 3,
            ..v.clone()
        });
        assert_eq!(held.len(), 2, "{held:?}");
        assert!(
            held[1].starts_with("3 connections never answered") && held[1].contains("accept backlog or --max-conns"),
            "{held:?}"
        );
        // An open loop at a low rate may leave connections idle.
        assert!(failures(&VerdictInputs {
            conns_carried_load: 2,
            closed_loop: false,
            ..v.clone()
        })
        .is_empty());
        let corrupt = one(&VerdictInputs {
            mismatch_whole_run: 1,
            ..v.clone()
        });
        assert!(corrupt.contains("1 mismatch:"), "{corrupt}");
        let dup = Errors {
            duplicate: 2,
            ..Errors::default()
        };
        assert!(one(&VerdictInputs {
            warmup_errors: &dup,
            ..v.clone()
        })
        .contains("2 duplicates"));
        let reord = Errors {
            reordered: 1,
            ..Errors::default()
        };
        assert!(one(&VerdictInputs {
            errors: &reord,
            ..v.clone()
        })
        .contains("1 reordered"));
        let late = Errors {
            timeout: 3,
            ..Errors::default()
        };
        let t = one(&VerdictInputs {
            errors: &late,
            ..v.clone()
        });
        assert!(t.contains("3 timeouts") && t.contains("--timeout 1s"), "{t}");
        let reset = Errors {
            reset: 1,
            ..Errors::default()
        };
        assert!(one(&VerdictInputs {
            errors: &reset,
            ..v.clone()
        })
        .contains("1 reset:"));
        assert_eq!(
            one(&VerdictInputs {
                messages: 0,
                ..v.clone()
            }),
            "no echo completed in the measured phase"
        );
    }

    #[test]
    fn retransmission_timeouts_add_a_hint_to_timeouts_and_decide_nothing() {
        let none = Errors::default();
        let late = Errors {
            timeout: 3,
            ..Errors::default()
        };
        let fired = VerdictInputs {
            errors: &late,
            tcp_rto: 14,
            ..clean(&none)
        };
        let t = one(&fired);
        assert!(
            t.starts_with("3 timeouts: messages not echoed within --timeout 1s")
                && t.contains("retransmission timer fired 14 times in the measured phase")
                && t.contains("at least 200 ms, 1 s or more on a fresh connection: see the Kernel line"),
            "{t}"
        );
        let once = one(&VerdictInputs {
            tcp_rto: 1,
            ..fired.clone()
        });
        assert!(once.contains("fired once"), "{once}");
        // No echo at all: the same note.
        let silent = one(&VerdictInputs {
            messages: 0,
            tcp_rto: 2,
            ..clean(&none)
        });
        assert!(
            silent.starts_with("no echo completed") && silent.contains("fired 2 times"),
            "{silent}"
        );
        // The timer alone fails nothing, and without it there is no note.
        assert!(failures(&VerdictInputs {
            tcp_rto: 14,
            ..clean(&none)
        })
        .is_empty());
        assert!(!one(&VerdictInputs {
            tcp_rto: 0,
            ..fired.clone()
        })
        .contains("retransmission"));
        // Datagrams have no TCP timer to wait for.
        let dgram = VerdictInputs {
            stream: false,
            messages: 0,
            tcp_rto: 5,
            ..clean(&none)
        };
        assert_eq!(one(&dgram), "no echo completed in the measured phase");
    }

    #[test]
    fn datagram_loss_fails_only_above_max_loss() {
        let none = Errors::default();
        let lossy = Errors {
            lost: 2,
            ..Errors::default()
        };
        let dgram = VerdictInputs {
            stream: false,
            errors: &lossy,
            messages: 98,
            ..clean(&none)
        };
        // 2 of 100 sent: 2%.
        let f = one(&dgram);
        assert!(
            f.contains("datagram loss 2.00% (2 of 100 sent) is above --max-loss 1%"),
            "{f}"
        );
        assert!(failures(&VerdictInputs {
            max_loss_pct: 2.0,
            ..dgram.clone()
        })
        .is_empty());
        assert_eq!(loss_pct(&lossy, 98), Some(2.0));
        assert_eq!(loss_pct(&none, 0), None);
    }
}
