#!/usr/bin/env bash
# Memory per connection: server RSS and kernel socket memory while a server
# holds N checked echo connections from one loadgen (closed loop).
#
#   scale/memory.sh BACKEND CONNS [OUT_DIR]
#     BACKEND: epoll | uring | threadpool | fork | tokio
#     CONNS:   connections, e.g. 10000 50000 100000
#     OUT_DIR: default results/scale (of this checkout); a relative OUT_DIR is
#              taken from the caller's directory
#
# Writes OUT_DIR/memory-BACKEND-cCONNS.json (the figures, the command lines,
# commit, kernel, CPU, pinning) and the loadgen result
# OUT_DIR/run-BACKEND-cCONNS.json (+ .hgrm). The server runs on CPU 0, loadgen
# on CPU 1. Kernel figures are machine-wide deltas from just before the server
# starts to the middle of the measured phase; on loopback they cover BOTH ends
# of each connection (loadgen's socket and the server's), which the JSON says.
# Environment: DURATION (default 10s), WARMUP (default 1s), TIMEOUT (loadgen's
# --timeout, default 1s), THREADS (server event loops or rings, default 1;
# each holds one descriptor table of connections, so past RLIMIT_NOFILE the
# server needs more, see docs/scaling.md), LG_THREADS (loadgen threads,
# default 1; likewise a table each), SOURCES (loadgen's --local-addrs,
# default 127.0.0.1-127.0.0.N with N = CONNS / 14,000 rounded up: each
# address under half its ports), CONNECT_RATE (default 20000), DROP_CACHES
# (default 0). scale/connections.sh runs the issue-25 points through this
# script and summarises them.
#
# DROP_CACHES=1 first runs `echo 2 > /proc/sys/vm/drop_caches` (root only): the
# kernel then frees its reclaimable slab (dentries and inodes) MACHINE-WIDE,
# which slows every other program on the machine until its caches refill. It
# makes the slab deltas steadier. Off by default; the JSON records
# `dropped_caches`. The files in results/scale/ from before this switch
# existed were made with it on.
#
# Ctrl-C or SIGTERM stops loadgen and the server, removes the scratch
# directory and exits 130 or 143; no JSON is written then.
set -euo pipefail
caller=$PWD
cd "$(dirname "$0")/.."
backend=${1:?usage: scale/memory.sh BACKEND CONNS [OUT_DIR]}
conns=${2:?usage: scale/memory.sh BACKEND CONNS [OUT_DIR]}
out_dir=${3:-results/scale}
[ -z "${3:-}" ] || case $out_dir in /*) ;; *) out_dir="$caller/$out_dir" ;; esac
drop_caches=${DROP_CACHES:-0}
duration=${DURATION:-10s}
warmup=${WARMUP:-1s}
timeout=${TIMEOUT:-1s}
threads=${THREADS:-1}
lg_threads=${LG_THREADS:-1}
connect_rate=${CONNECT_RATE:-20000}
mkdir -p "$out_dir"

# Raise the descriptor limit as far as this shell may (the hard limit needs
# CAP_SYS_RESOURCE; without it the binaries work within the hard limit).
ulimit -Hn 1048576 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

bin=target/release
case "$backend" in
  tokio) server_cmd=("$bin/tokio-echo" --addr 127.0.0.1:0 --threads "$threads" --pin 0) ;;
  threadpool) server_cmd=("$bin/server" --backend threadpool --addr 127.0.0.1:0 --threads "$conns" --pin 0 --max-conns "$conns") ;;
  *) server_cmd=("$bin/server" --backend "$backend" --addr 127.0.0.1:0 --threads "$threads" --pin 0 --max-conns $((conns + 1000))) ;;
esac

# Sources: one loopback address per 14,000 connections, under half of the
# 28,232 ports each has by default (past half, each connect's port search is
# slow: docs/scaling.md, "loadgen at 100,000").
n_src=$(( (conns + 13999) / 14000 ))
sources=${SOURCES:-127.0.0.1-127.0.0.$n_src}

tmp=$(mktemp -d)
server_pid=""; lg_pid=""
cleanup() {
  # loadgen ends its run on SIGTERM (its result says complete: false); wait
  # for it, so that nothing of ours outlives the script.
  [ -n "$lg_pid" ] && kill "$lg_pid" 2>/dev/null && wait "$lg_pid" 2>/dev/null || true
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  rm -rf "$tmp"
}
# A signal stops the script after the clean-up (the EXIT trap runs it once).
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

tree_pss_kb() { # proportional set size: shared pages split among the processes sharing them
  local pid=$1 p
  for p in $pid $(pgrep -P "$pid" || true); do cat "/proc/$p/smaps_rollup" 2>/dev/null || true; done |
    awk '/^Pss:/{s+=$2} END{print s+0}'
}
kernel_snapshot() { # prints: slab_kb sunreclaim_kb sockstat_tcp_mem_pages tcp_slab_bytes tcp_objs tcp_time_wait
  local slab sunr mem tcpb objs tw
  slab=$(awk '/^Slab:/{print $2}' /proc/meminfo)
  sunr=$(awk '/^SUnreclaim:/{print $2}' /proc/meminfo)
  mem=$(awk '/^TCP:/{for(i=1;i<NF;i++) if($i=="mem") print $(i+1)}' /proc/net/sockstat)
  tw=$(awk '/^TCP:/{for(i=1;i<NF;i++) if($i=="tw") print $(i+1)}' /proc/net/sockstat)
  tcpb=$(awk '$1=="TCP"||$1=="TCPv6"{b+=$2*$4; o+=$2} END{print b+0}' /proc/slabinfo)
  objs=$(awk '$1=="TCP"||$1=="TCPv6"{o+=$2} END{print o+0}' /proc/slabinfo)
  echo "$slab $sunr $mem $tcpb $objs ${tw:-0}"
}
tree_rss_kb() { # RSS of a process and its children (fork: one child per connection)
  local pid=$1 p
  # One awk over every status file: thousands of children must be read in well
  # under a second. A child exiting meanwhile (or a zombie) counts 0.
  for p in $pid $(pgrep -P "$pid" || true); do cat "/proc/$p/status" 2>/dev/null || true; done |
    awk '/^VmRSS:/{s+=$2} END{print s+0}'
}

if [ "$drop_caches" = 1 ]; then # machine-wide: see the header
  sync; echo 2 > /proc/sys/vm/drop_caches 2>/dev/null || true
fi
read -r slab0 sunr0 mem0 tcpb0 objs0 tw0 < <(kernel_snapshot)

"${server_cmd[@]}" >"$tmp/server.out" 2>"$tmp/server.err" &
server_pid=$!
for _ in $(seq 100); do grep -q '^listening' "$tmp/server.out" 2>/dev/null && break; sleep 0.1; done
addr=$(grep -o 'addr=[^ ]*' "$tmp/server.out" | head -1 | cut -d= -f2)
[ -n "$addr" ] || { echo "server did not start:"; cat "$tmp/server.err"; exit 1; }
listening=$(grep '^listening' "$tmp/server.out")
rss_idle=$(tree_rss_kb "$server_pid")
pss_idle=$(tree_pss_kb "$server_pid")

run_json="$out_dir/run-$backend-c$conns.json"
lg_cmd=("$bin/loadgen" "$addr" --conns "$conns" --threads "$lg_threads" --pin 1
  --local-addrs "$sources" --connect-rate "$connect_rate" --warmup "$warmup" --duration "$duration"
  --timeout "$timeout"
  --backend "$backend" --server-pid "$server_pid" --out "$run_json")
"${lg_cmd[@]}" >"$tmp/lg.out" 2>"$tmp/lg.err" &
lg_pid=$!

# Sample in the middle of the measured phase: wait for loadgen's first
# measured interval line (about 1 s in), then for half the duration less that.
# (The live line reads "[   2.1s] measured ... up N/N"; older loadgens ended it
# with "open N/N" and no phase.) A sample taken after loadgen has ended would
# measure an idle server: then no JSON is written, and the script exits 1.
dur_s=${duration%s}
measured_line='^\[.*(\] measured |open [0-9]+/[0-9]+$)'
until grep -qE "$measured_line" "$tmp/lg.err" 2>/dev/null || ! kill -0 "$lg_pid" 2>/dev/null; do sleep 0.2; done
sleep "$(python3 -c "print(max(0, $dur_s/2 - 1))")"
open=$(grep -oE '(open|up) [0-9]+/[0-9]+' "$tmp/lg.err" | tail -1 || true)
under_load=0
grep -qE "$measured_line" "$tmp/lg.err" && kill -0 "$lg_pid" 2>/dev/null && under_load=1
lg_rss=$(awk '/^VmRSS:/{print $2}' "/proc/$lg_pid/status" 2>/dev/null || echo 0)
read -r slab1 sunr1 mem1 tcpb1 objs1 tw1 < <(kernel_snapshot)
rss_load=$(tree_rss_kb "$server_pid")
pss_load=$(tree_pss_kb "$server_pid")
set +e
wait "$lg_pid"; lg_rc=$?
set -e
lg_pid=""
kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
summary=$(grep '^summary' "$tmp/server.out" || true)
server_pid=""
tail -8 "$tmp/lg.out"
if [ "$under_load" != 1 ]; then
  echo "memory.sh: loadgen (exit $lg_rc) was not in its measured phase when the sample was due; no figures written:" >&2
  grep -v '^\[' "$tmp/lg.err" | tail -5 >&2 || true
  exit 1
fi

export drop_caches backend conns addr sources listening summary open rss_idle rss_load pss_idle pss_load lg_rss lg_rc \
  slab0 sunr0 mem0 tcpb0 objs0 tw0 slab1 sunr1 mem1 tcpb1 objs1 tw1 run_json duration warmup timeout threads lg_threads \
  connect_rate
export server_cmd_s="${server_cmd[*]}" lg_cmd_s="${lg_cmd[*]}"
python3 - "$out_dir/memory-$backend-c$conns.json" <<'EOF'
import json, os, subprocess, sys
e = os.environ
n = int(e["conns"]); i = lambda k: int(e[k])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
page_kb = os.sysconf("SC_PAGE_SIZE") // 1024
res = json.load(open(e["run_json"])) if os.path.exists(e["run_json"]) else {}
doc = {
    "what": "server RSS and kernel socket memory while the server holds `conns` checked echo connections "
            "(closed loop, 128 B, depth 1), sampled in the middle of the measured phase",
    "backend": e["backend"], "conns": n,
    "server_command": e["server_cmd_s"], "loadgen_command": e["lg_cmd_s"],
    "script": " ".join(f"{k}={e[v]}" for k, v in [("DURATION", "duration"), ("WARMUP", "warmup"),
                       ("TIMEOUT", "timeout"), ("THREADS", "threads"), ("LG_THREADS", "lg_threads"),
                       ("SOURCES", "sources"), ("CONNECT_RATE", "connect_rate"), ("DROP_CACHES", "drop_caches")])
              + " scale/memory.sh " + e["backend"] + " " + e["conns"],
    "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
    "kernel": open("/proc/sys/kernel/osrelease").read().strip(), "cpu": cpu, "cores": os.cpu_count(),
    "pinning": "server --pin 0, loadgen --pin 1",
    "dropped_caches": e["drop_caches"] == "1",
    "server_listening_line": e["listening"], "server_summary_line": e["summary"],
    "connections_open_at_sample": e["open"],
    "loadgen_exit_code": i("lg_rc"),
    "loadgen_result": e["run_json"],
    "loadgen_messages": res.get("messages"), "loadgen_errors": res.get("errors"),
    "loadgen_warmup_errors": res.get("warmup_errors"),
    "loadgen_failures": res.get("failures"),
    "loadgen_msgs_per_s": res.get("throughput", {}).get("msgs_per_s"),
    "loadgen_latency_p99_us": res.get("latency_us", {}).get("p99"),
    "conns_up": res.get("extra", {}).get("conns_up"),
    "conns_carried_load": res.get("extra", {}).get("conns_carried_load"),
    "connect_ramp_s": res.get("extra", {}).get("connect_ramp_s"),
    "server_summary": {kv.split("=", 1)[0]: int(kv.split("=", 1)[1]) for kv in e["summary"].split()[1:]
                       if "=" in kv and kv.split("=", 1)[1].isdigit()},
    "server_rss_idle_kb": i("rss_idle"), "server_rss_loaded_kb": i("rss_load"),
    "server_rss_bytes_per_conn": round((i("rss_load") - i("rss_idle")) * 1024 / n, 1),
    "server_rss_note": "VmRSS of the server and its children summed: fork's children each count the pages "
                       "they share; server_pss_* splits shared pages among the sharers",
    "server_pss_idle_kb": i("pss_idle"), "server_pss_loaded_kb": i("pss_load"),
    "server_pss_bytes_per_conn": round((i("pss_load") - i("pss_idle")) * 1024 / n, 1),
    "loadgen_rss_kb": i("lg_rss"),
    "kernel_note": "machine-wide deltas; on loopback each connection is two TCP sockets (client and server), "
                   "so *_per_conn covers both ends; *_per_socket is half of it",
    "slab_delta_kb": i("slab1") - i("slab0"), "sunreclaim_delta_kb": i("sunr1") - i("sunr0"),
    "sockstat_tcp_mem_pages_delta": i("mem1") - i("mem0"),
    "tcp_slab_objects_delta": i("objs1") - i("objs0"),
    "tcp_slab_bytes_delta": i("tcpb1") - i("tcpb0"),
    "tcp_time_wait_before": i("tw0"), "tcp_time_wait_at_sample": i("tw1"),
    "sunreclaim_bytes_per_conn": round((i("sunr1") - i("sunr0")) * 1024 / n, 1),
    "sunreclaim_bytes_per_socket": round((i("sunr1") - i("sunr0")) * 1024 / n / 2, 1),
    "tcp_slab_bytes_per_socket": round((i("tcpb1") - i("tcpb0")) / max(1, i("objs1") - i("objs0")), 1),
    "sockstat_mem_bytes_per_conn": round((i("mem1") - i("mem0")) * page_kb * 1024 / n, 1),
}
json.dump(doc, open(sys.argv[1], "w"), indent=2)
print(json.dumps({k: doc[k] for k in ["backend", "conns", "connections_open_at_sample", "loadgen_exit_code",
      "server_rss_bytes_per_conn", "sunreclaim_bytes_per_conn", "tcp_slab_bytes_per_socket",
      "sockstat_mem_bytes_per_conn", "connect_ramp_s", "loadgen_errors"]}))
EOF
