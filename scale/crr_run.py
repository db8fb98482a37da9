"""One run of scale/crr-vs-neper.sh: a client against a server, a
connection per request/response (N = 1), measured from outside.

    python3 scale/crr_run.py ROW ROUND OUT.json     (from the project root)

Environment (set by crr-vs-neper.sh): NEPER (tcp_crr's path), BIN (loadgen
and server), WARMUP and MEASURE (seconds), CONNS (concurrent connections),
SIZE (request = response bytes), RATE (conversations/s for the rows that
need it), NETNS (1: this process runs in a network namespace of its own,
made for this run, whose loopback it brings up).

The rows (client -> server):
  neper          neper tcp_crr client -> neper tcp_crr server, neper's default
                 close (SO_LINGER 0: the client resets, no TIME_WAIT)
  neper-tw       the same with --time-wait: the client closes with a FIN
                 first, TIME_WAIT on its side, as loadgen closes
  neper-epoll    neper client (--time-wait) -> server --backend epoll
                 --threads 1 --pin 0
  neper-uring    neper client (--time-wait) -> server --backend uring
  lg-epoll       loadgen --conn-msgs 1 -> the epoll server, closed loop
                 (loadgen's default towards loopback: 8 source addresses)
  lg-epoll-1src  the same from one source address (--local-addrs 127.0.0.1),
                 as neper's client connects
  lg-uring       loadgen --conn-msgs 1 -> the uring server, closed loop
  lg-epoll-rate  loadgen --conn-msgs 1 --rate RATE -> the epoll server, open
                 loop at neper-epoll's rate

There is no loadgen -> neper server row: neper's server is not an echo
server. All flows of a thread share one buffer (rr.c, rr_alloc), and a
response is sent a loop turn after its request was read, so it carries
whatever request was read last; loadgen, which checks every byte, counts
mismatches (17,404 in a 5 s smoke run at 100 connections).

neper's client first talks to neper's server over a control connection
(a 72-byte `struct hs_msg`, control_plane.c: CLI_HELLO, SER_ACK, then
CLI_DONE and SER_BYE at the end). Against our servers this script plays
neper's server side of that connection; it does no data-plane work and its
CPU is not counted.

The measured window starts WARMUP s after the client starts and lasts
MEASURE s, the same for every row. Over it: each process's utime + stime
(/proc/PID/stat, all threads), its context switches (/proc/PID/task/*/status),
the connections opened (TcpActiveOpens of /proc/net/snmp; in a namespace of
its own that is exactly this run's connections) and the busy time of CPUs
0 and 1 (/proc/stat). The tools' own figures are kept beside, as a check.
"""
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from summary import machine  # noqa: E402

ROWS = {
    # name: (client, server, description)
    "neper": ("neper", "neper", "neper client -> neper server, neper's default close (SO_LINGER 0: a reset, no TIME_WAIT)"),
    "neper-tw": ("neper-tw", "neper", "neper client --time-wait -> neper server (the client closes first with a FIN, as loadgen does)"),
    "neper-epoll": ("neper-tw", "epoll", "neper client --time-wait -> epoll server"),
    "neper-uring": ("neper-tw", "uring", "neper client --time-wait -> uring server"),
    "lg-epoll": ("loadgen", "epoll", "loadgen --conn-msgs 1 -> epoll server, closed loop, loadgen's default "
                 "source addresses (127.0.0.1 to 127.0.0.8 towards loopback)"),
    "lg-epoll-1src": ("loadgen-1src", "epoll", "loadgen --conn-msgs 1 --local-addrs 127.0.0.1 -> epoll server, "
                      "closed loop, one source address as neper's client"),
    "lg-uring": ("loadgen", "uring", "loadgen --conn-msgs 1 -> uring server, closed loop"),
    "lg-epoll-rate": ("loadgen-rate", "epoll", "loadgen --conn-msgs 1 --rate RATE -> epoll server, open loop at neper-epoll's rate"),
    # Before the rounds, to find RATE; not a row of the summary.
    "calibrate": ("neper-tw", "epoll", "calibration run (as neper-epoll), to find the open-loop rate"),
}

HS = struct.Struct("!32siIIIIIQQ")  # control_plane.c's struct hs_msg, 72 bytes
CLI_HELLO, SER_ACK, CLI_DONE, SER_BYE = 1, 2, 3, 4
MAGIC = 42  # neper's default --magic
TICK = os.sysconf("SC_CLK_TCK")


def hs(kind, threads=1, flows=0, length=0):
    # tcp_crr's secret is all zeros (tcp_crr_main.c: `struct options opts = {0}`).
    return HS.pack(b"\0" * 32, MAGIC, kind, threads, flows, length, 0, 0, 0)


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        b = s.recv(n - len(buf))
        if not b:
            raise ConnectionError(f"control connection closed after {len(buf)} of {n} bytes")
        buf += b
    return buf


def check_hs(buf, want):
    f = HS.unpack(buf)
    if f[1] != MAGIC or f[2] != want:
        raise ConnectionError(f"control message: magic {f[1]} type {f[2]}, expected type {want}")


class CtrlServer:
    """neper's server side of the control connection, for neper client -> our server."""

    def __init__(self, port):
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", port))
        self.ls.listen(4)
        self.error = None
        self.done = threading.Event()
        self.t = threading.Thread(target=self._serve, daemon=True)
        self.t.start()

    def _serve(self):
        try:
            self.ls.settimeout(30)
            c, _ = self.ls.accept()
            self.ls.close()
            c.settimeout(None)
            hello = recv_exact(c, HS.size)
            check_hs(hello, CLI_HELLO)
            f = HS.unpack(hello)
            c.sendall(hs(SER_ACK, f[3], f[4], f[5]))
            check_hs(recv_exact(c, HS.size), CLI_DONE)
            c.sendall(hs(SER_BYE))
            c.close()
        except Exception as e:  # reported by the run
            self.error = f"control shim: {e}"
        finally:
            self.done.set()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def listening(port):
    """A TCP socket listens on `port` in this namespace (/proc/net/tcp, state 0A)."""
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            for line in open(path).readlines()[1:]:
                f = line.split()
                if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                    return True
        except OSError:
            pass
    return False


def proc_cpu_ticks(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])  # utime, stime (fields 14, 15)


def ctx_switches(pid):
    vol = invol = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            for line in open(f"/proc/{pid}/task/{tid}/status"):
                if line.startswith("voluntary_ctxt_switches"):
                    vol += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches"):
                    invol += int(line.split()[1])
        except OSError:
            pass
    return vol, invol


def snmp_tcp():
    lines = [l.split() for l in open("/proc/net/snmp") if l.startswith("Tcp:")]
    return dict(zip(lines[0][1:], (int(v) for v in lines[1][1:])))


def tw_overflows():
    """TCPTimeWaitOverflow of /proc/net/netstat: closes that left no TIME_WAIT (the table was full)."""
    lines = [l.split() for l in open("/proc/net/netstat") if l.startswith("TcpExt:")]
    return int(dict(zip(lines[0][1:], lines[1][1:])).get("TCPTimeWaitOverflow", 0))


def cpu_busy(cores=(0, 1)):
    """Per core: ticks busy (user, nice, system), in irq/softirq, and idle."""
    out = {}
    for line in open("/proc/stat"):
        f = line.split()
        if f[0] in {f"cpu{c}" for c in cores}:
            v = [int(x) for x in f[1:]]
            out[f[0]] = {"task": v[0] + v[1] + v[2], "irq": v[5] + v[6], "idle": v[3] + v[4], "steal": v[7]}
    return out


def time_wait():
    for line in open("/proc/net/sockstat"):
        if line.startswith("TCP:"):
            f = line.split()
            return int(f[f.index("tw") + 1])
    return None


def sysctl(name):
    try:
        return open("/proc/sys/" + name.replace(".", "/")).read().split()
    except OSError:
        return None


def sample(pids):
    return {
        "t": time.monotonic(),
        "cpu": {k: proc_cpu_ticks(p) for k, p in pids.items()},
        "ctx": {k: ctx_switches(p) for k, p in pids.items()},
        "snmp": snmp_tcp(),
        "cores": cpu_busy(),
        "tw": time_wait(),
        "tw_overflows": tw_overflows(),
    }


def neper_kv(text):
    kv = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(" "):
            k, v = line.split("=", 1)
            kv[k.strip()] = v.strip()
    return kv


def neper_report(kv):
    """neper's own figures: transactions, its throughput, its rusage CPU."""
    def f(k):
        try:
            return float(kv[k])
        except (KeyError, ValueError):
            return None
    out = {k: kv.get(k) for k in ("num_transactions", "throughput", "time_wait", "request_size",
                                   "response_size", "num_flows", "num_threads", "test_length") if k in kv}
    parts = [f("utime_end"), f("utime_start"), f("stime_end"), f("stime_start")]
    if None not in parts:
        out["rusage_cpu_s"] = parts[0] - parts[1] + parts[2] - parts[3]
    return out


def main():
    row, rnd, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if row not in ROWS:
        sys.exit(f"crr_run.py: unknown row {row}; rows: {', '.join(ROWS)}")
    client_kind, server_kind, what = ROWS[row]
    e = os.environ
    neper, bindir = e["NEPER"], e.get("BIN", "target/release")
    warmup, measure = float(e.get("WARMUP", "2")), float(e.get("MEASURE", "5"))
    conns, size = int(e.get("CONNS", "100")), int(e.get("SIZE", "128"))
    rate = e.get("RATE")
    netns = e.get("NETNS") == "1"
    if netns:
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        # Room for every close's TIME_WAIT socket: at the default cap (131,072
        # here) a fast run would fill the table within its window and its later
        # closes would leave none, a cheaper workload than its start's.
        with open("/proc/sys/net/ipv4/tcp_max_tw_buckets", "w") as f:
            f.write(e.get("TW_BUCKETS", "1048576"))
    # The client runs this long: the warm-up, the window and a second after it.
    length = int(warmup + measure + 1.999)
    scratch = os.path.dirname(os.path.abspath(out))
    logs = {}
    procs = {}
    problems = []
    ctrl_port = 12866 if netns else free_port()
    data_port = 12867 if netns else free_port()

    def spawn(name, cmd):
        lo = open(os.path.join(scratch, f".{os.path.basename(out)}.{name}.out"), "w+")
        le = open(os.path.join(scratch, f".{os.path.basename(out)}.{name}.err"), "w+")
        logs[name] = (lo, le)
        procs[name] = subprocess.Popen(cmd, stdout=lo, stderr=le, stdin=subprocess.DEVNULL)
        return procs[name]

    def text(name, which=0):
        f = logs[name][which]
        f.flush()
        f.seek(0)
        return f.read()

    try:
        # The server, on CPU 0.
        # --logtostderr: neper otherwise writes a log file into the working directory.
        neper_common = ["-F", str(conns), "-T", "1", "-Q", str(size), "-R", str(size),
                        "-C", str(ctrl_port), "-P", str(data_port), "--logtostderr"]
        if server_kind == "neper":
            server_cmd = ["taskset", "-c", "0", neper] + neper_common
        else:
            server_cmd = ["taskset", "-c", "0", f"{bindir}/server", "--backend", server_kind, "--addr", f"127.0.0.1:{data_port}",
                          "--threads", "1", "--pin", "0"]
        spawn("server", server_cmd)
        deadline = time.monotonic() + 10
        while not listening(data_port):
            if procs["server"].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {text('server', 1)[-2000:]}")
            time.sleep(0.02)

        # neper's control connection, where the server is ours.
        ctrl_server = None
        if server_kind != "neper" and client_kind.startswith("neper"):
            ctrl_server = CtrlServer(ctrl_port)

        # The client, on CPU 1.
        # loadgen's own result, kept beside the run's file (with its .hgrm).
        lg_json = (out[:-5] if out.endswith(".json") else out) + ".loadgen.json"
        if client_kind.startswith("neper"):
            client_cmd = ["taskset", "-c", "1", neper, "-c", "-H", "127.0.0.1", "-l", str(length)] + neper_common
            if client_kind == "neper-tw":
                client_cmd.append("--time-wait")
        else:
            client_cmd = ["taskset", "-c", "1", f"{bindir}/loadgen", f"127.0.0.1:{data_port}", "--conn-msgs", "1",
                          "--conns", str(conns), "--size", str(size), "--pin", "1",
                          "--warmup", f"{round(warmup * 1000)}ms", "--duration", f"{round((length - warmup) * 1000)}ms",
                          "--server-pid", str(procs["server"].pid), "--out", lg_json]
            if client_kind == "loadgen-1src":
                client_cmd += ["--local-addrs", "127.0.0.1"]
            if client_kind == "loadgen-rate":
                if not rate:
                    raise RuntimeError(f"row {row} needs RATE")
                client_cmd += ["--rate", rate]
        t0 = time.monotonic()
        spawn("client", client_cmd)
        pids = {"client": procs["client"].pid, "server": procs["server"].pid}

        time.sleep(max(0.0, t0 + warmup - time.monotonic()))
        a = sample(pids)
        time.sleep(max(0.0, t0 + warmup + measure - time.monotonic()))
        b = sample(pids)

        # The end: the client stops by itself after `length` s.
        try:
            procs["client"].wait(timeout=length + 30)
        except subprocess.TimeoutExpired:
            problems.append("the client did not end in time; killed")
            procs["client"].kill()
            procs["client"].wait()
        if procs["client"].returncode != 0:
            problems.append(f"client exited {procs['client'].returncode}: {text('client', 1)[-600:].strip()}")
        if ctrl_server:
            ctrl_server.done.wait(10)
            if ctrl_server.error:
                problems.append(ctrl_server.error)
        if server_kind == "neper":
            try:
                procs["server"].wait(timeout=15)
            except subprocess.TimeoutExpired:
                problems.append("neper's server did not end after the client's CLI_DONE; killed")
        if procs["server"].poll() is None:
            procs["server"].send_signal(signal.SIGTERM)
            try:
                procs["server"].wait(timeout=10)
            except subprocess.TimeoutExpired:
                procs["server"].kill()
                procs["server"].wait()

        window = b["t"] - a["t"]
        opens = b["snmp"]["ActiveOpens"] - a["snmp"]["ActiveOpens"]
        passive = b["snmp"]["PassiveOpens"] - a["snmp"]["PassiveOpens"]
        fig = {"window_s": window, "connections": opens, "passive_opens": passive,
               "conns_per_s": opens / window if window > 0 else None,
               "attempt_fails": b["snmp"]["AttemptFails"] - a["snmp"]["AttemptFails"],
               "estab_resets": b["snmp"]["EstabResets"] - a["snmp"]["EstabResets"],
               "time_wait_at_start": a["tw"], "time_wait_at_end": b["tw"],
               "time_wait_overflows": b["tw_overflows"] - a["tw_overflows"]}
        for side in ("client", "server"):
            cpu_s = (b["cpu"][side] - a["cpu"][side]) / TICK
            vol = b["ctx"][side][0] - a["ctx"][side][0]
            invol = b["ctx"][side][1] - a["ctx"][side][1]
            fig[f"{side}_cpu_s"] = cpu_s
            fig[f"{side}_busy"] = cpu_s / window if window > 0 else None
            fig[f"{side}_cpu_us_per_conn"] = cpu_s * 1e6 / opens if opens else None
            fig[f"{side}_voluntary_switches_per_conn"] = vol / opens if opens else None
            fig[f"{side}_involuntary_switches_per_conn"] = invol / opens if opens else None
        cores = {}
        for c in a["cores"]:
            d = {k: (b["cores"][c][k] - a["cores"][c][k]) / TICK for k in a["cores"][c]}
            cores[c] = {f"{k}_share": v / window for k, v in d.items()}
        fig["cores"] = cores
        # CPU time on cores 0 and 1 outside this run's two processes (task
        # time only: irq/softirq time, which the kernel may account apart
        # from the task that ran it, is in `cores`).
        ours = fig["client_cpu_s"] + fig["server_cpu_s"]
        fig["others_cores"] = max(0.0, sum(v["task_share"] for v in cores.values()) - ours / window)
        fig["limit"] = {(True, True): "both", (True, False): "client", (False, True): "server",
                        (False, False): "neither"}[(fig["client_busy"] >= 0.9, fig["server_busy"] >= 0.9)]

        tools = {}
        if client_kind.startswith("neper"):
            tools["neper_client"] = neper_report(neper_kv(text("client")))
            if not tools["neper_client"].get("num_transactions"):
                problems.append("neper's client reported no num_transactions")
        else:
            try:
                r = json.load(open(lg_json))
                c = r.get("conversations") or {}
                tools["loadgen"] = {
                    "conversations_per_s": c.get("per_s"), "completed": c.get("completed"),
                    "requested_per_s": c.get("requested_per_s"),
                    "loadgen_cpu_us_per_conn": c.get("loadgen_cpu_us_per_conn"),
                    "server_cpu_us_per_conn": c.get("server_cpu_us_per_conn"),
                    "connect_us": c.get("connect_us"), "conversation_us": c.get("conversation_us"),
                    "failed": c.get("failed"), "errors": r.get("errors"), "failures": r.get("failures"),
                    "time_wait_at_end": c.get("time_wait_at_end"),
                    "time_wait_overflows": c.get("time_wait_overflows"), "source_addrs": c.get("source_addrs"),
                    "io": r.get("settings", {}).get("io"),
                }
                if r.get("failures"):
                    problems.append("loadgen: " + "; ".join(r["failures"]))
            except (OSError, ValueError) as ex:
                problems.append(f"no loadgen result: {ex}")
        if server_kind == "neper":
            tools["neper_server"] = neper_report(neper_kv(text("server")))
        else:
            err = text("server", 1).strip().splitlines()
            tools["server_stderr_lines"] = len(err)
            tools["server_stderr_tail"] = err[-5:]

        doc = {
            "row": row, "round": rnd, "what": what,
            "client": client_kind, "server": server_kind,
            "client_command": [os.path.basename(x) if x == lg_json else x for x in client_cmd],
            "server_command": server_cmd,
            "control_shim": "neper's server side of the control connection (SER_ACK, SER_BYE), played by crr_run.py"
                            if ctrl_server else None,
            "pinning": "server on CPU 0, client on CPU 1 (taskset; loadgen also --pin 1, the server --pin 0)",
            "conns": conns, "size": size, "warmup_s": warmup, "measure_s": measure, "client_length_s": length,
            "rate": float(rate) if rate and client_kind == "loadgen-rate" else None,
            "netns": netns,
            "sysctl": {k: sysctl(k) for k in ("net.ipv4.tcp_tw_reuse", "net.ipv4.tcp_tw_reuse_delay",
                                               "net.ipv4.ip_local_port_range", "net.ipv4.tcp_max_tw_buckets",
                                               "net.ipv4.tcp_timestamps")},
            "neper_source": e.get("NEPER_SOURCE"),
            **machine(),
            "started_unix": time.time() - (time.monotonic() - t0),
            "figures": fig, "tools": tools,
            "ok": not problems, "problems": problems,
        }
        tmp = out + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(doc, fh, indent=1)
        os.replace(tmp, out)
        print(f"{row} r{rnd}: {fig['conns_per_s']:.0f} conn/s, client {fig['client_cpu_us_per_conn'] or 0:.1f} us/conn "
              f"({fig['client_busy']:.2f} busy), server {fig['server_cpu_us_per_conn'] or 0:.1f} us/conn "
              f"({fig['server_busy']:.2f} busy), TIME_WAIT {fig['time_wait_at_start']}->{fig['time_wait_at_end']}"
              + ("" if not problems else "  PROBLEMS: " + " | ".join(problems)), file=sys.stderr)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        for lo, le in logs.values():
            for f in (lo, le):
                f.close()
                os.unlink(f.name)
        if os.path.exists(out + ".tmp"):
            os.unlink(out + ".tmp")


if __name__ == "__main__":
    main()
