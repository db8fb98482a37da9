#!/usr/bin/env python3
"""Hunts the multi-ring stall (docs/scaling.md): runs the configuration it was
seen in, over and over, and when a run stops echoing, records where every
byte and every thread is at that moment.

    python3 scale/stall_hunt.py RUNS OUT_DIR [--pair NAME=SERVER:LOADGEN ...]
        [--backend uring|epoll] [--conns N] [--connect-rate R] [--rings 4,2] [--burn K]

What was seen once (2026-12-01, 89f93de, `scale/memory.sh` with THREADS=4,
load average about 10): 15,000 TCP connections from one source address to
`server --backend uring --threads 4` echoed about one message each and then
none. Each run here is that: `--conns 15000`, one source address
(127.0.0.1, past half its ports), `--connect-rate 20000`, 1 s warm-up and
10 s measured, every echo checked; with the server's rings (4 or 2), pinning
(server on CPU 0 and loadgen on CPU 1, or neither pinned), loadgen's threads
(1 or 2), the uring wait (`quiet`, the default then, or `one`) and CPU
burners beside the run (0, or BURN busy loops for the load average of then)
rotated so that every combination comes round, interleaved with the
server and loadgen binaries given (`--pair old=OLD/server:OLD/loadgen`; by
default this tree's). The options change the defaults above, e.g. for the
same session's one-loop failure at 19,000 (`--backend epoll --conns 19000
--rings 1`). Before each run, as `scale/memory.sh` did then,
reclaimable slab is dropped (`vm/drop_caches` 2). `--backlogs 1000,10000`
also rotates `net.core.netdev_max_backlog` (machine-wide, so nothing else
should run beside it; the value found is put back at exit).

Every run has a network namespace of its own (`sbhunt<pid>`, loopback only,
deleted afterwards), so its 15,000 ports and TIME_WAIT sockets touch nothing
else; the kernel's TCP memory is shared with the machine, and is recorded.

A stall is: loadgen running, past its ramp and warm-up, and the namespace's
TCP segment counter (`InSegs`, both ends of every connection) grows by fewer
than 100 in 2 s. At the first one in a run the script writes `stall-N/`:
each server and loadgen thread's state, wait channel and kernel stack; the
fdinfo of every io_uring they hold (queue heads and tails, overflow list);
bytes queued per socket side (`ss`), split into the server's sockets and
loadgen's, receive and send queues; the namespace's TCP counters (`nstat`);
the machine's socket memory, load and busiest processes.

Writes OUT_DIR/runs.jsonl (one line per run: configuration, binaries,
outcome, the namespace's TCP counters and the input-backlog drops over the
run, InSegs at 4 Hz), OUT_DIR/stall-N/ for stalled runs, and
OUT_DIR/summary.md (stalls and pauses per configuration, with a 95%
Clopper-Pearson interval on the stall rate; `--resummarize OUT_DIR` writes it
again from runs.jsonl). Needs
root (network namespaces, kernel stacks). Exits 0 when no run stalled, 1 when
one did, 2 on bad arguments, 130/143 on Ctrl-C/SIGTERM after cleaning up.
"""

import argparse
import itertools
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from summary import clopper_pearson, machine, write_text_atomic  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DURATION_S = 10
WARMUP_S = 1
STALL_WINDOW_S = 2.0
STALL_SEGMENTS = 100
RUN_GRACE_S = 40
# The namespace's TCP counters each run records (over that run alone): the
# retransmission timer firing (a segment or its ACK lost, 1 s or 3 s before
# the handshake gave an RTT), tail loss probes, drops at the listener, the
# socket backlog and the receive queue, and TIME_WAIT reuse.
RUN_COUNTERS = ("TcpRetransSegs", "TcpExtTCPTimeouts", "TcpExtTCPLossProbes", "TcpExtListenOverflows",
                "TcpExtListenDrops", "TcpExtTCPBacklogDrop", "TcpExtTCPRcvQDrop", "TcpExtTCPReqQFullDrop",
                "TcpExtTCPReqQFullDoCookies", "TcpExtSyncookiesSent", "TcpExtTWRecycled", "TcpExtPAWSOldAck",
                "TcpExtPAWSEstab", "TcpExtTCPSynRetrans", "TcpExtTCPAbortOnClose", "TcpExtTCPDelayedACKLocked",
                "TcpExtTCPSpuriousRTOs", "TcpExtTCPMemoryPressures", "TcpExtPruneCalled", "TcpExtTCPOFODrop")


def git_describe(path):
    """The commit a binary was built from: the describe of its work tree."""
    tree = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(path))))
    r = subprocess.run(["git", "-C", tree, "describe", "--always", "--dirty", "--abbrev=7"],
                       capture_output=True, text=True)
    return r.stdout.strip() or "unknown"


def softnet_drops():
    """Packets the kernel dropped because a CPU's input backlog (loopback's
    path: netif_rx, at most net.core.netdev_max_backlog packets) was full,
    summed over CPUs; machine-wide, whatever the namespace."""
    with open("/proc/net/softnet_stat") as f:
        return sum(int(line.split()[1], 16) for line in f)


def in_segs(pid):
    """The TCP InSegs counter of the network namespace `pid` lives in."""
    with open(f"/proc/{pid}/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Tcp:")]
    return int(rows[1][rows[0].index("InSegs")])


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        return f"<{e.strerror}>"


def threads_of(pid):
    """Each thread's state, wait channel, kernel stack, and the system call it
    is in with its arguments (`syscall`: number, then six arguments in hex;
    for io_uring_enter, 426: fd, to_submit, min_complete, flags, arg, argsz),
    read twice 0.5 s apart with its CPU time (`schedstat`), so that a thread
    that loops can be told from one that sleeps."""
    def one():
        out = []
        for tid in sorted(os.listdir(f"/proc/{pid}/task"), key=int):
            base = f"/proc/{pid}/task/{tid}"
            stat = read(f"{base}/stat")
            state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
            out.append({"tid": int(tid), "comm": read(f"{base}/comm").strip(), "state": state,
                        "wchan": read(f"{base}/wchan").strip(), "stack": read(f"{base}/stack"),
                        "syscall": read(f"{base}/syscall").strip(),
                        "schedstat": read(f"{base}/schedstat").strip()})
        return out
    first = one()
    time.sleep(0.5)
    again = {t["tid"]: t for t in one()}
    for t in first:
        later = again.get(t["tid"], {})
        t["syscall_0_5s_later"] = later.get("syscall")
        t["schedstat_0_5s_later"] = later.get("schedstat")
    return first


def rings_of(pid):
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if "io_uring" in target:
            # The queue state, without the per-entry lists (thousands of lines).
            info = read(f"/proc/{pid}/fdinfo/{fd}").splitlines()
            out[fd] = [l for l in info if not re.match(r"^\s*\d+:", l)][:60]
    return out


def queued_bytes(ns, server_port):
    """Sockets with bytes queued, by side (server or loadgen) and queue."""
    r = subprocess.run(["ip", "netns", "exec", ns, "ss", "-tnH"], capture_output=True, text=True)
    sides = {f"{side}_{q}": [0, 0] for side in ("server", "loadgen") for q in ("recv_q", "send_q")}
    established = 0
    for line in r.stdout.splitlines():
        p = line.split()
        if len(p) < 5 or p[0] != "ESTAB":
            continue
        established += 1
        side = "server" if p[3].rsplit(":", 1)[-1] == str(server_port) else "loadgen"
        for q, v in (("recv_q", int(p[1])), ("send_q", int(p[2]))):
            if v > 0:
                sides[f"{side}_{q}"][0] += 1
                sides[f"{side}_{q}"][1] += v
    return {"established": established,
            **{k: {"sockets": v[0], "bytes": v[1]} for k, v in sides.items()}}


def capture(dir_, ns, server, loadgen, server_port):
    os.makedirs(dir_)
    doc = {
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "loadavg": read("/proc/loadavg").strip(),
        "sockstat": read("/proc/net/sockstat"),
        "queued": queued_bytes(ns, server_port),
        "server": {"threads": threads_of(server.pid), "rings": rings_of(server.pid)},
        "loadgen": {"threads": threads_of(loadgen.pid), "rings": rings_of(loadgen.pid)},
    }
    nstat = subprocess.run(["ip", "netns", "exec", ns, "nstat", "-az"], capture_output=True, text=True)
    doc["nstat"] = [l for l in nstat.stdout.splitlines() if re.search(r"\s[1-9]", l)]
    ps = subprocess.run(["ps", "-eo", "pid,pcpu,stat,comm", "--sort=-pcpu"], capture_output=True, text=True)
    doc["ps"] = ps.stdout.splitlines()[:12]
    with open(os.path.join(dir_, "capture.json"), "w") as f:
        json.dump(doc, f, indent=1)
    return doc["queued"]


def one_run(i, cfg, args, out_dir, ns):
    server_bin, loadgen_bin = args.pairs[cfg["server"]]
    cmd = [server_bin, "--backend", args.backend, "--addr", "127.0.0.1:0", "--threads", str(cfg["rings"]),
           "--max-conns", str(args.conns + 1000)]
    if cfg["pinned"]:
        cmd += ["--pin", "0"]
    if cfg["wait"] != "default":
        cmd += ["--uring-wait", cfg["wait"]]
    ns_exec = ["ip", "netns", "exec", ns]
    # The namespace's TCP counters over this run alone (nstat keeps its own
    # history file, here one of ours, so the machine's is never touched).
    nstat_env = {**os.environ, "NSTAT_HISTORY": os.path.join(args.scratch, "nstat.history")}
    subprocess.run(ns_exec + ["nstat", "-n"], env=nstat_env, capture_output=True)
    drops_before = softnet_drops()
    server = subprocess.Popen(ns_exec + cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = server.stdout.readline()
    m = re.search(r"addr=(\S+)", line)
    if not m:
        server.kill()
        return {"run": i, **cfg, "outcome": "server did not start", "stall": None, "loadgen_rc": None,
                "stderr": server.stderr.read()[-2000:]}
    addr = m.group(1)
    port = addr.rsplit(":", 1)[-1]
    out_json = os.path.join(args.scratch, f"run-{i}.json")
    lg_cmd = [loadgen_bin, addr, "--conns", str(args.conns), "--threads", str(cfg["lg_threads"]),
              "--local-addrs", "127.0.0.1-127.0.0.1", "--connect-rate", str(args.connect_rate),
              "--warmup", f"{WARMUP_S}s", "--duration", f"{DURATION_S}s", "--out", out_json]
    if cfg["pinned"]:
        lg_cmd += ["--pin", "1"]
    burners = [subprocess.Popen(["sh", "-c", "while :; do :; done"]) for _ in range(cfg["burn"])]
    started = time.monotonic()
    lg = subprocess.Popen(ns_exec + lg_cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stall = None
    samples = []
    try:
        # loadgen's output is read after it exits; it writes little (live
        # lines go to a pipe buffer of 64 KiB, far more than a 12 s run prints).
        while lg.poll() is None and time.monotonic() - started < DURATION_S + WARMUP_S + RUN_GRACE_S:
            t = time.monotonic() - started
            samples.append((t, in_segs(server.pid)))
            past_ramp = t > args.conns / args.connect_rate + WARMUP_S + 2
            old = [s for s in samples if t - s[0] >= STALL_WINDOW_S]
            if stall is None and past_ramp and t < DURATION_S + WARMUP_S and old:
                grown = samples[-1][1] - old[-1][1]
                if grown < STALL_SEGMENTS:
                    d = os.path.join(out_dir, f"stall-{i}")
                    stall = {"at_s": round(t, 1), "segments_in_2s": grown,
                             "queued": capture(d, ns, server, lg, port), "dir": os.path.basename(d)}
            time.sleep(0.25)
        if lg.poll() is None:
            lg.kill()
        lg_out = lg.communicate()[0]
    finally:
        if lg.poll() is None:
            lg.kill()
            lg.wait()
        for b in burners:
            b.kill()
            b.wait()
        server.send_signal(signal.SIGTERM)
        try:
            server_out, server_err = server.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server_out, server_err = server.communicate()
    nstat = subprocess.run(ns_exec + ["nstat", "-z"], env=nstat_env, capture_output=True, text=True)
    counters = {"softnet_dropped": softnet_drops() - drops_before,
                "netdev_max_backlog": int(read("/proc/sys/net/core/netdev_max_backlog").strip() or 0)}
    for line in nstat.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit() and parts[0] in RUN_COUNTERS:
            counters[parts[0]] = int(parts[1])
    result = {}
    if os.path.exists(out_json):
        with open(out_json) as f:
            result = json.load(f)
    summary_line = next((l for l in server_out.splitlines() if l.startswith("summary")), "")
    # From the printed report, which both loadgen versions share.
    max_latency_s = report_longest_echo_s(lg_out)
    m = re.search(r"(\d+) timeout", lg_out)
    timeouts = int(m.group(1)) if m else None
    return {"run": i, **cfg, "server_bin": server_bin, "loadgen_bin": loadgen_bin,
            "server_cmd": " ".join(cmd), "loadgen_cmd": " ".join(lg_cmd),
            "in_segs_per_quarter_s": [b[1] - a[1] for a, b in zip(samples, samples[1:])],
            "loadgen_rc": lg.returncode, "stall": stall, "max_latency_s": max_latency_s, "timeouts": timeouts,
            "messages": result.get("messages", result.get("total", {}).get("messages")),
            "loadgen_tail": lg_out.splitlines()[-6:], "tcp_counters": counters, "server_summary": summary_line,
            "server_err": server_err[-500:]}


def report_longest_echo_s(text):
    """The `max` of loadgen's printed latency line, in seconds, or None."""
    m = re.search(r"max ([\d.]+)(µs|us|ms|s)\b", text)
    return float(m.group(1)) * {"µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)] if m else None


def longest_echo_s(run):
    """The run's longest echo: recorded, or read from the report's tail
    (records of the first passes, made before the field existed)."""
    if run.get("max_latency_s") is not None:
        return run["max_latency_s"]
    return report_longest_echo_s(" ".join(run.get("loadgen_tail") or [])) or 0.0


def by_setting(runs):
    """Runs that rotated the input backlog, by (backlog, busy loops)."""
    out = {}
    for r in runs:
        if r.get("backlog") is not None:
            out.setdefault((r["backlog"], r["burn"]), []).append(r)
    return out


def write_summary(out_dir, runs, argv, machine_doc):
    keys = ("server", "rings", "pinned", "lg_threads", "wait", "burn", "backlog")
    by = {}
    for r in runs:
        by.setdefault(tuple(r.get(k, "–") for k in keys), []).append(r)
    n, k = len(runs), sum(1 for r in runs if r["stall"])
    cp = clopper_pearson(k, n)
    lo, hi = cp["lo"], cp["hi"]
    failed = sum(1 for r in runs if r["loadgen_rc"] != 0)
    paused = sum(1 for r in runs if longest_echo_s(r) >= 1.0)
    counted = [r for r in runs if "softnet_dropped" in (r.get("tcp_counters") or {})]
    slow = [r for r in counted if longest_echo_s(r) >= 1.0]
    fast = [r for r in counted if longest_echo_s(r) < 1.0]

    def share(rs, pred):
        return f"{sum(1 for r in rs if pred(r))} of {len(rs)}"
    rto = lambda r: r["tcp_counters"].get("TcpExtTCPTimeouts", 0) > 0  # noqa: E731
    dropped = lambda r: r["tcp_counters"]["softnet_dropped"] > 0  # noqa: E731
    causes = [] if not counted else [
        "Where the pauses come from (runs that recorded the kernel's counters):", "",
        f"- runs with an echo of 1 s or more: the retransmission timer fired in {share(slow, rto)}, "
        f"packets were dropped at a CPU's input backlog in {share(slow, dropped)};",
        f"- runs without: the timer fired in {share(fast, rto)}, drops in {share(fast, dropped)}.", ""]
    for (backlog, burn), rs in sorted(by_setting(counted).items()):
        causes.insert(-1, f"- input backlog {backlog}, {burn} busy loops beside: drops in {share(rs, dropped)} runs, "
                          f"the timer fired in {share(rs, rto)}, an echo of 1 s or more in "
                          f"{share(rs, lambda r: longest_echo_s(r) >= 1.0)};")
    bullets = [i for i, line in enumerate(causes) if line.startswith("- ")]
    for i in bullets:
        causes[i] = causes[i].rstrip(";.") + (";" if i != bullets[-1] else ".")
    lines = ["# The multi-ring stall hunt", "",
             "<!-- generated by scale/stall_hunt.py, do not edit -->", "",
             f"Command: `{' '.join(argv)}`", "",
             f"Machine (at the start): {json.dumps(machine_doc)}", "",
             f"**{k} of {n} runs stalled** (95% Clopper-Pearson interval {lo:.1%} to {hi:.1%}); "
             f"{paused} of {n} runs had an echo take 1 s or more (a pause shorter than the 2 s a stall needs, "
             f"or a stall); {failed} of {n} runs ended with loadgen non-zero.", "",
             *causes,
             "| server | rings | pinned | loadgen threads | uring wait | burners | input backlog | runs | stalled "
             "| echo ≥ 1 s | loadgen non-zero |",
             "|---|--:|---|--:|---|--:|--:|--:|--:|--:|--:|"]
    for key, rs in sorted(by.items(), key=lambda kv: str(kv[0])):
        s = sum(1 for r in rs if r["stall"])
        bad = sum(1 for r in rs if r["loadgen_rc"] != 0)
        slow = sum(1 for r in rs if longest_echo_s(r) >= 1.0)
        lines.append("| " + " | ".join(str(v) for v in key) + f" | {len(rs)} | {s} | {slow} | {bad} |")
    write_text_atomic(os.path.join(out_dir, "summary.md"), "\n".join(lines) + "\n")
    return k


def resummarize(out_dir):
    """Rewrites OUT_DIR/summary.md from its runs.jsonl, keeping the command
    and the machine the summary recorded when the hunt ran."""
    with open(os.path.join(out_dir, "summary.md")) as f:
        old = f.read()
    command = re.search(r"^Command: `(.*)`$", old, re.M).group(1)
    machine_doc = json.loads(re.search(r"^Machine \(at the start\): (.*)$", old, re.M).group(1))
    with open(os.path.join(out_dir, "runs.jsonl")) as f:
        runs = [json.loads(line) for line in f]
    write_summary(out_dir, runs, command.split(" "), machine_doc)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--resummarize":
        resummarize(sys.argv[2])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=int)
    p.add_argument("out_dir")
    p.add_argument("--pair", action="append", default=[], metavar="NAME=SERVER:LOADGEN",
                   help="a server and loadgen binary to rotate in (default: this tree's)")
    p.add_argument("--burn", type=int, default=6, help="busy loops beside half the runs (0: none)")
    p.add_argument("--backend", choices=("uring", "epoll"), default="uring")
    p.add_argument("--conns", type=int, default=15000)
    p.add_argument("--connect-rate", type=int, default=20000)
    p.add_argument("--rings", default="4,2", help="the server --threads values to rotate")
    p.add_argument("--pinned", default="yes,no", help="pinned (yes), unpinned (no), or both")
    p.add_argument("--lg-threads", default="1,2", help="the loadgen --threads values to rotate")
    p.add_argument("--backlogs", default="",
                   help="net.core.netdev_max_backlog values to rotate (machine-wide; the value found is "
                        "restored at exit); default: leave it")
    args = p.parse_args()
    if args.runs < 1 or args.runs > 10000:
        p.error(f"RUNS must be 1..10000, got {args.runs}")
    pairs = {}
    default = f"this={ROOT}/target/release/server:{ROOT}/target/release/loadgen"
    for s in args.pair or [default]:
        name, _, paths = s.partition("=")
        server, _, loadgen = paths.partition(":")
        if not all(b and os.access(b, os.X_OK) for b in (server, loadgen)):
            p.error(f"--pair {s}: not NAME=SERVER:LOADGEN, two executables")
        pairs[name] = (server, loadgen)
    args.pairs = pairs
    try:
        rings = [int(r) for r in args.rings.split(",")]
        lg_threads = [int(t) for t in args.lg_threads.split(",")]
    except ValueError:
        p.error("--rings and --lg-threads take comma-separated numbers")
    pinned = [{"yes": True, "no": False}.get(v) for v in args.pinned.split(",")]
    if None in pinned:
        p.error(f"--pinned {args.pinned}: yes, no or yes,no")
    burns = sorted({0, args.burn})
    backlog_path = "/proc/sys/net/core/netdev_max_backlog"
    try:
        backlogs = [int(b) for b in args.backlogs.split(",")] if args.backlogs else [None]
    except ValueError:
        p.error(f"--backlogs {args.backlogs}: comma-separated numbers")
    if any(b is not None and not 100 <= b <= 1_000_000 for b in backlogs):
        p.error(f"--backlogs {args.backlogs}: each 100..1000000")
    backlog_found = read(backlog_path).strip()
    if not 1 <= args.conns <= 19000 or not 100 <= args.connect_rate <= 100000:
        p.error("--conns must be 1..19000 (one table, one address) and --connect-rate 100..100000")
    os.makedirs(args.out_dir, exist_ok=True)
    if os.path.exists(os.path.join(args.out_dir, "runs.jsonl")):
        p.error(f"{args.out_dir}/runs.jsonl exists: give a new OUT_DIR")
    args.scratch = os.path.join(args.out_dir, ".scratch")
    os.makedirs(args.scratch)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    machine_doc = machine()
    ns = f"sbhunt{os.getpid()}"
    stop = {"sig": 0}

    def on_signal(sig, _frame):
        stop["sig"] = sig
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    waits = ("default", "quiet") if args.backend == "uring" else ("default",)
    combos = list(itertools.product(sorted(pairs), rings, pinned, lg_threads, waits, burns, backlogs))
    # A server from before `--uring-wait` (89f93de) had only the quiet wait.
    has_wait = {name: "--uring-wait" in subprocess.run([s, "--help"], capture_output=True, text=True).stdout
                for name, (s, _) in pairs.items()}
    combos = [c for c in combos if has_wait[c[0]] or c[4] == "default"]
    # A fixed shuffle, so that neighbouring runs differ in several settings.
    combos = [combos[(j * 37) % len(combos)] for j in range(len(combos))]
    runs = []
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        with open(os.path.join(args.out_dir, "runs.jsonl"), "a") as log:
            for i in range(args.runs):
                server, rings, pinned, lg_threads, wait, burn, backlog = combos[i % len(combos)]
                if backlog is not None:
                    with open(backlog_path, "w") as f:
                        f.write(str(backlog))
                cfg = {"server": server, "server_commit": git_describe(pairs[server][0]),
                       "loadgen_commit": git_describe(pairs[server][1]), "rings": rings,
                       "pinned": pinned, "lg_threads": lg_threads, "wait": wait, "burn": burn,
                       "backlog": int(read(backlog_path).strip())}
                with open("/proc/sys/vm/drop_caches", "w") as f:
                    f.write("2")
                r = one_run(i, cfg, args, args.out_dir, ns)
                runs.append(r)
                log.write(json.dumps(r) + "\n")
                log.flush()
                mark = "STALL" if r["stall"] else "ok"
                print(f"[{i + 1}/{args.runs}] {mark} {cfg} rc={r.get('loadgen_rc')}", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        if backlogs != [None] and backlog_found.isdigit():
            with open(backlog_path, "w") as f:
                f.write(backlog_found)
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
        shutil.rmtree(args.scratch, ignore_errors=True)
    stalled = write_summary(args.out_dir, runs, sys.argv, machine_doc) if runs else 0
    if stop["sig"] == signal.SIGTERM:
        sys.exit(143)
    if len(runs) < args.runs:
        sys.exit(130)
    sys.exit(1 if stalled else 0)


if __name__ == "__main__":
    main()
