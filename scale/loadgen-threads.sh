#!/usr/bin/env bash
# Does loadgen's throughput grow with --threads, and where does it stop?
#
#   scale/loadgen-threads.sh [CONNS] [OUT_DIR]      (defaults: 1000, results/scale)
#
# One epoll server (one loop) runs on CPU 0 for the whole script. loadgen then
# runs closed loop (TCP, 128 B) in three configurations:
#   t1-cpu1    --threads 1 --pin 1     (what compare does)
#   t2-cpu1    --threads 2 --pin 1     (more threads, same core)
#   t2-cpu0,1  --threads 2 --pin 0,1   (a second core, the server's)
# each REPS times, interleaved with the order rotated every repetition, so that
# drift of the machine falls on all three alike. Environment: REPS (default
# 5), DURATION (default 3s), WARMUP (default 1s).
#
# Writes OUT_DIR/loadgen-threads-cCONNS.json: every run's msgs/s and loadgen
# CPU per message, each configuration's median with its order-statistic
# interval ([min, max] of 5 runs covers the median at 93.75%), the commands,
# commit, kernel, CPU and pinning. The file is written only at the end, through
# a temporary file in OUT_DIR, and OUT_DIR is checked for writing first.
set -euo pipefail
caller=$PWD
cd "$(dirname "$0")/.."
conns=${1:-1000}
out_dir=${2:-results/scale}
# A relative OUT_DIR is the caller's; the default is this checkout's.
[ -z "${2:-}" ] || case $out_dir in /*) ;; *) out_dir="$caller/$out_dir" ;; esac
reps=${REPS:-5}
duration=${DURATION:-3s}
warmup=${WARMUP:-1s}
out="$out_dir/loadgen-threads-c$conns.json"
. scale/lib.sh
check_writable "$out_dir" loadgen-threads

server_cmd=("$bin/server" --backend epoll --addr 127.0.0.1:0 --threads 1 --pin 0)
start_server "${server_cmd[@]}"
addr=$(grep -o 'addr=[^ ]*' "$tmp/server.out" | head -1 | cut -d= -f2)

configs=("1 1" "2 1" "2 0,1")
names=("t1-cpu1" "t2-cpu1" "t2-cpu0,1")
: >"$tmp/runs.tsv"
for rep in $(seq "$reps"); do
  for i in 0 1 2; do
    k=$(( (i + rep - 1) % 3 ))
    read -r threads pin <<<"${configs[$k]}"
    json="$tmp/run-${names[$k]}-r$rep.json"
    "$bin/loadgen" "$addr" --conns "$conns" --threads "$threads" --pin "$pin" \
      --warmup "$warmup" --duration "$duration" --out "$json" >/dev/null 2>"$tmp/lg.err" ||
      { echo "loadgen failed (${names[$k]}, repetition $rep):" >&2; tail -5 "$tmp/lg.err" >&2; exit 1; }
    printf '%s\t%s\t%s\n' "${names[$k]}" "$rep" "$json" >>"$tmp/runs.tsv"
    echo "${names[$k]} r$rep: $(grep -o '"msgs_per_s": *[0-9.]*' "$json" | head -1)" >&2
  done
done

export conns reps duration warmup addr out
export server_cmd_s="${server_cmd[*]}"
export lg_cmd_s="$bin/loadgen $addr --conns $conns --threads T --pin CPUS --warmup $warmup --duration $duration"
PYTHONPATH=scale python3 - "$tmp/runs.tsv" <<'EOF'
import json, os, sys
from summary import machine, median_interval, write_atomic
e = os.environ
runs = {}
for line in open(sys.argv[1]):
    name, rep, path = line.rstrip("\n").split("\t")
    r = json.load(open(path))
    runs.setdefault(name, []).append({
        "repetition": int(rep),
        "msgs_per_s": r["throughput"]["msgs_per_s"],
        "loadgen_cpu_us_per_msg": r["extra"].get("loadgen_cpu_us_per_msg"),
        "errors": r["errors"],
    })
summary = {name: {
    "msgs_per_s": median_interval([r["msgs_per_s"] for r in rs]),
    "loadgen_cpu_us_per_msg": median_interval([r["loadgen_cpu_us_per_msg"] for r in rs]),
} for name, rs in runs.items()}
doc = {
    "what": "loadgen closed loop (tcp, 128 B) against one epoll loop on CPU 0, with 1 or 2 loadgen threads",
    "script": f"scale/loadgen-threads.sh {e['conns']}",
    "server_command": e["server_cmd_s"], "loadgen_command": e["lg_cmd_s"],
    "configurations": {"t1-cpu1": "--threads 1 --pin 1", "t2-cpu1": "--threads 2 --pin 1",
                       "t2-cpu0,1": "--threads 2 --pin 0,1 (CPU 0 shared with the server)"},
    "repetitions": int(e["reps"]), "duration": e["duration"], "warmup": e["warmup"],
    "order": "interleaved, rotated by one each repetition",
    **machine(),
    "pinning": "server --pin 0; loadgen as in configurations",
    "summary": summary, "runs": runs,
}
out = e["out"]
write_atomic(out, doc, ".loadgen-threads.")
for name, s in summary.items():
    m = s["msgs_per_s"]
    print(f"{name:10s} {m['mid']:9.0f} msgs/s [{m['lo']:.0f}, {m['hi']:.0f}]  loadgen {s['loadgen_cpu_us_per_msg']['mid']:.2f} us/msg")
print(f"wrote {out}")
EOF
