#!/usr/bin/env bash
# What does open loop cost loadgen next to closed loop, and what does --slack
# trade for it?
#
#   scale/loadgen-slack.sh [TRANSPORT] [CONNS] [OUT_DIR]   (defaults: tcp, 100, results/scale)
#
# One uring server (one ring) runs on CPU 0 for the whole script; loadgen runs
# on CPU 1. First REPS closed-loop runs find the peak; the open-loop rate is
# half its median (issue 16's point: 50% of the closed-loop peak). Then each
# repetition runs, in an order rotated by one every repetition:
#   closed      closed loop, one message in flight per connection
#   slack-0     open loop at the rate, every message on its own schedule
#   slack-50us  open loop at the rate, loadgen's default --slack
# Environment: REPS (default 5), DURATION (default 3s), WARMUP (default 1s).
#
# Writes OUT_DIR/loadgen-slack-TRANSPORT-cCONNS.json: every run's loadgen and
# server CPU per message, msgs/s and latency (p50, p99; corrected and from the
# actual send), each side's busy share of its core and the run's limit (the
# side at 0.9 or more; both, neither), each configuration's median with its
# order-statistic interval
# ([min, max] of 5 runs covers the median at 93.75%), the open loops' loadgen
# CPU per message over the closed loop's of the same repetition (median of
# the paired ratios, same interval), the commands, commit, kernel, CPU and
# pinning. OUT_DIR is checked for writing first; the file is written only at
# the end, through a temporary file in OUT_DIR.
set -euo pipefail
caller=$PWD
cd "$(dirname "$0")/.."
transport=${1:-tcp}
conns=${2:-100}
out_dir=${3:-results/scale}
# A relative OUT_DIR is the caller's; the default is this checkout's.
[ -z "${3:-}" ] || case $out_dir in /*) ;; *) out_dir="$caller/$out_dir" ;; esac
reps=${REPS:-5}
duration=${DURATION:-3s}
warmup=${WARMUP:-1s}
case "$transport" in tcp | unix) ;; *) echo "TRANSPORT must be tcp or unix, not '$transport'" >&2; exit 2 ;; esac
case "$conns" in '' | *[!0-9]*) echo "CONNS must be a number, not '$conns'" >&2; exit 2 ;; esac
out="$out_dir/loadgen-slack-$transport-c$conns.json"
. scale/lib.sh
check_writable "$out_dir" loadgen-slack

if [ "$transport" = tcp ]; then
  server_cmd=("$bin/server" --backend uring --addr 127.0.0.1:0 --threads 1 --pin 0)
else
  server_cmd=("$bin/server" --backend uring --transport unix --path "$tmp/echo.sock" --threads 1 --pin 0)
fi
start_server "${server_cmd[@]}"
if [ "$transport" = tcp ]; then
  target=$(grep -o 'addr=[^ ]*' "$tmp/server.out" | head -1 | cut -d= -f2)
else
  target="$tmp/echo.sock"
fi

# run NAME REP [loadgen flags...]: one loadgen run, its result in $tmp.
run() {
  local name=$1 rep=$2
  shift 2
  local json="$tmp/run-$name-r$rep.json"
  "$bin/loadgen" --transport "$transport" "$target" --conns "$conns" --pin 1 --server-pid "$server_pid" \
    --warmup "$warmup" --duration "$duration" --out "$json" "$@" >/dev/null 2>"$tmp/lg.err" ||
    { echo "loadgen failed ($name, repetition $rep):" >&2; tail -5 "$tmp/lg.err" >&2; exit 1; }
  printf '%s\t%s\t%s\n' "$name" "$rep" "$json" >>"$tmp/runs.tsv"
  echo "$name r$rep: $(grep -o '"msgs_per_s": *[0-9.]*' "$json" | head -1)" >&2
}

: >"$tmp/runs.tsv"
for rep in $(seq "$reps"); do run peak "$rep"; done
rate=$(python3 -c '
import json, statistics, sys
rates = [json.load(open(l.split("\t")[2].strip()))["throughput"]["msgs_per_s"] for l in open(sys.argv[1])]
print(round(statistics.median(rates) / 2))' "$tmp/runs.tsv")
echo "open loop at $rate msgs/s (half the median closed-loop peak)" >&2

names=(closed slack-0 slack-50us)
for rep in $(seq "$reps"); do
  for i in 0 1 2; do
    k=$(( (i + rep - 1) % 3 ))
    case ${names[$k]} in
      closed) run closed "$rep" ;;
      slack-0) run slack-0 "$rep" --rate "$rate" --slack 0 ;;
      slack-50us) run slack-50us "$rep" --rate "$rate" ;;
    esac
  done
done

export transport conns reps duration warmup rate out
export server_cmd_s="${server_cmd[*]}"
export lg_cmd_s="$bin/loadgen --transport $transport TARGET --conns $conns --pin 1 --server-pid PID --warmup $warmup --duration $duration [--rate $rate [--slack 0]]"
PYTHONPATH=scale python3 - "$tmp/runs.tsv" <<'EOF'
import json, os, sys
from summary import machine, median_interval, write_atomic
e = os.environ
runs = {}
for line in open(sys.argv[1]):
    name, rep, path = line.rstrip("\n").split("\t")
    r = json.load(open(path))
    x = r["extra"]
    unc = x.get("latency_uncorrected_us") or r["latency_us"]
    runs.setdefault(name, []).append({
        "repetition": int(rep),
        "msgs_per_s": r["throughput"]["msgs_per_s"],
        "loadgen_cpu_us_per_msg": x.get("loadgen_cpu_us_per_msg"),
        "server_cpu_us_per_msg": x.get("server_cpu_us_per_msg"),
        "p50_us": r["latency_us"]["p50"], "p99_us": r["latency_us"]["p99"],
        "p50_from_send_us": unc["p50"], "p99_from_send_us": unc["p99"],
        "errors": r["errors"],
    })
    # Busy share of each side's one core over the measured window, and which
    # side limited the run (at 0.9 or more, as compare counts it).
    run = runs[name][-1]
    window_us = r["settings"]["duration_s"] * 1e6
    run["loadgen_busy"] = (x.get("loadgen_cpu_us") or 0) / window_us
    run["server_busy"] = (x.get("server_cpu_us") or 0) / window_us
    run["limit"] = {(True, True): "both", (True, False): "loadgen", (False, True): "server",
                    (False, False): "neither"}[(run["loadgen_busy"] >= 0.9, run["server_busy"] >= 0.9)]
figures = ["msgs_per_s", "loadgen_cpu_us_per_msg", "server_cpu_us_per_msg",
           "p50_us", "p99_us", "p50_from_send_us", "p99_from_send_us", "loadgen_busy", "server_busy"]
summary = {name: {f: median_interval([r[f] for r in rs]) for f in figures} for name, rs in runs.items()}
for name, rs in runs.items():
    summary[name]["limits"] = {l: sum(r["limit"] == l for r in rs) for l in sorted({r["limit"] for r in rs})}
closed = {r["repetition"]: r["loadgen_cpu_us_per_msg"] for r in runs.get("closed", [])}
for name in ("slack-0", "slack-50us"):
    ratios = [r["loadgen_cpu_us_per_msg"] / closed[r["repetition"]] for r in runs.get(name, [])
              if r["loadgen_cpu_us_per_msg"] and closed.get(r["repetition"])]
    summary[name]["loadgen_cpu_over_closed"] = median_interval(ratios)
doc = {
    "what": f"loadgen open loop at half the closed-loop peak against closed loop ({e['transport']}, 128 B, "
            f"{e['conns']} connections), one uring ring on CPU 0",
    "script": f"scale/loadgen-slack.sh {e['transport']} {e['conns']}",
    "server_command": e["server_cmd_s"], "loadgen_command": e["lg_cmd_s"],
    "open_loop_rate": int(e["rate"]),
    "configurations": {"peak": "closed loop, to find the rate (not interleaved)", "closed": "closed loop",
                       "slack-0": "--rate RATE --slack 0", "slack-50us": "--rate RATE (default --slack 50us)"},
    "repetitions": int(e["reps"]), "duration": e["duration"], "warmup": e["warmup"],
    "order": "closed, slack-0, slack-50us interleaved, rotated by one each repetition",
    **machine(),
    "pinning": "server --pin 0; loadgen --pin 1",
    "summary": summary, "runs": runs,
}
out = e["out"]
write_atomic(out, doc, ".loadgen-slack.")
for name, s in summary.items():
    if name == "peak":
        continue
    cpu = s["loadgen_cpu_us_per_msg"]
    line = f"{name:11s} loadgen {cpu['mid']:.2f} us/msg [{cpu['lo']:.2f}, {cpu['hi']:.2f}]"
    if "loadgen_cpu_over_closed" in s and s["loadgen_cpu_over_closed"]:
        o = s["loadgen_cpu_over_closed"]
        line += f"  x closed {o['mid']:.2f} [{o['lo']:.2f}, {o['hi']:.2f}]"
    line += f"  p50 from send {s['p50_from_send_us']['mid']:.0f} us  limit {s['limits']}"
    print(line)
print(f"wrote {out}")
EOF
