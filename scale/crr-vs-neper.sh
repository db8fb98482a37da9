#!/usr/bin/env bash
# loadgen and this project's servers against google/neper's tcp_crr (issue
# 24's neper targets): a connection per request/response, N = 1, 100
# connections at once, TCP over loopback, server on CPU 0, client on CPU 1.
#
#   scale/crr-vs-neper.sh [REPS] [OUT_DIR]     (defaults: 5, results/neper)
#
# Needs target/release/{loadgen,server} (cargo build --release) and neper's
# tcp_crr (scale/neper-build.sh; NEPER=path/to/tcp_crr, default
# ../neper-build/src/tcp_crr beside this checkout, or NEPER_DIR/src/tcp_crr).
#
# Rows (scale/crr_run.py says more):
#   neper          neper client -> neper server, neper's default close
#                  (SO_LINGER 0: a reset, no TIME_WAIT), as the issue quotes it
#   neper-tw       neper client --time-wait -> neper server: the client closes
#                  first with a FIN and keeps the TIME_WAIT, as loadgen does
#   neper-epoll    neper client --time-wait -> server --backend epoll
#   neper-uring    neper client --time-wait -> server --backend uring
#   lg-epoll       loadgen --conn-msgs 1 -c 100 -> the epoll server (loadgen's
#                  default towards loopback: 8 source addresses)
#   lg-epoll-1src  the same from one source address, as neper's client
#   lg-uring       loadgen --conn-msgs 1 -c 100 -> the uring server
#   lg-epoll-rate  loadgen in open loop (--rate) at neper-epoll's rate -> epoll
# Our servers run `--threads 1 --pin 0`; neper `-F 100 -T 1 -Q 128 -R 128`.
# (loadgen -> neper's server is not a row: neper's server shares one buffer
# among a thread's connections, so its responses are not echoes and loadgen,
# which checks every byte, fails them.)
#
# Each round runs every row once, in an order rotated by one each round.
# Each run is one process tree in a network namespace made for it (unshare -n,
# root only; NETNS=0 or no root: the shared one, with free ports), so no run
# inherits another's TIME_WAIT sockets, whose number changes what a connect
# costs; there tcp_max_tw_buckets is raised to TW_BUCKETS (default 1048576)
# so that no run fills the table and leaves its later closes without one.
# Each run measures the same window: MEASURE s (default 5) starting WARMUP s
# (default 2) after the client starts.
# Before the rounds, CAL_RUNS (default 1) calibration runs of neper-epoll
# give the open-loop rate (their median); RATE=N sets it instead.
# Environment: ROWS (space-separated subset, default all), WARMUP, MEASURE,
# RATE, CAL_RUNS, NETNS, NEPER, CONNS (100), SIZE (128), TW_BUCKETS.
#
# Writes OUT_DIR/runs/ROW-rN.json (figures, command lines, commit, kernel,
# CPU model, pinning, sysctls, neper's source; loadgen runs also
# ROW-rN.loadgen.json and .hgrm), OUT_DIR/summary.md and summary.json
# (scale/crr_summary.py: medians, order-statistic intervals, paired ratios).
# OUT_DIR is checked for writing first; the runs go to a scratch directory in
# OUT_DIR and are moved in only at the end; a file in OUT_DIR/runs that this
# script did not write is never replaced or removed. Ctrl-C or SIGTERM stops
# the run in progress and writes nothing (exit 130 or 143).
set -euo pipefail
caller=$PWD
cd "$(dirname "$0")/.."
root=$PWD
reps=${1:-5}
out_dir=${2:-results/neper}
[ -z "${2:-}" ] || case $out_dir in /*) ;; *) out_dir="$caller/$out_dir" ;; esac
case "$reps" in '' | *[!0-9]* | 0) echo "REPS must be a positive number, not '$reps'" >&2; exit 2 ;; esac
all_rows="neper neper-tw neper-epoll neper-uring lg-epoll lg-epoll-1src lg-uring lg-epoll-rate"
rows=${ROWS:-$all_rows}
for r in $rows; do
  case " $all_rows " in *" $r "*) ;; *) echo "unknown row '$r'; rows: $all_rows" >&2; exit 2 ;; esac
done
export WARMUP=${WARMUP:-2} MEASURE=${MEASURE:-5} CONNS=${CONNS:-100} SIZE=${SIZE:-128}
cal_runs=${CAL_RUNS:-1}
neper_dir=${NEPER_DIR:-$root/../neper-build}
case $neper_dir in /*) ;; *) neper_dir="$caller/$neper_dir" ;; esac
export NEPER=${NEPER:-$neper_dir/src/tcp_crr}
case $NEPER in /*) ;; *) NEPER="$caller/$NEPER" ;; esac
[ -x "$NEPER" ] || { echo "no neper tcp_crr at $NEPER: run scale/neper-build.sh (or set NEPER)" >&2; exit 2; }
NEPER="$(cd "$(dirname "$NEPER")" && pwd)/$(basename "$NEPER")"
src_file="$(dirname "$(dirname "$NEPER")")/SOURCE"
export NEPER_SOURCE="$( [ -f "$src_file" ] && cat "$src_file" || echo "binary=$NEPER (no SOURCE file beside it)")"
export BIN=$root/target/release
for b in loadgen server; do
  [ -x "$BIN/$b" ] || { echo "no $BIN/$b: cargo build --release first" >&2; exit 2; }
done
command -v taskset >/dev/null || { echo "needs taskset (util-linux)" >&2; exit 2; }
[ "$(nproc)" -ge 2 ] || { echo "needs 2 CPUs (server on 0, client on 1)" >&2; exit 2; }

if [ "${NETNS:-1}" = 1 ] && command -v unshare >/dev/null && command -v ip >/dev/null && unshare -n true 2>/dev/null; then
  export NETNS=1
  in_run() { unshare -n python3 scale/crr_run.py "$@"; }
else
  [ "${NETNS:-1}" = 0 ] || echo "warning: cannot make a network namespace per run (needs root, unshare and ip); runs share this one" >&2
  export NETNS=0
  in_run() { python3 scale/crr_run.py "$@"; }
fi

. scale/lib.sh
check_writable "$out_dir" crr-vs-neper
check_writable "$out_dir/runs" crr-vs-neper
staging=$(mktemp -d "$out_dir/.crr-new-XXXXXX")
keep_staging=0
trap 'cleanup; [ "$keep_staging" = 1 ] || rm -rf "$staging"' EXIT

failed=0
run() { # ROW ROUND
  in_run "$1" "$2" "$staging/$1-r$2.json" || { echo "run $1 round $2 failed" >&2; failed=$((failed + 1)); }
}

if [[ " $rows " == *" lg-epoll-rate "* ]] && [ -z "${RATE:-}" ]; then
  for i in $(seq "$cal_runs"); do run calibrate "$i"; done
  RATE=$(python3 -c '
import glob, json, statistics, sys
rates = [json.load(open(p))["figures"]["conns_per_s"] for p in glob.glob(sys.argv[1] + "/calibrate-r*.json")]
print(round(statistics.median(rates)) if rates else "")' "$staging")
  [ -n "$RATE" ] || { echo "calibration gave no rate; set RATE" >&2; exit 1; }
  echo "open-loop rate for lg-epoll-rate: $RATE conversations/s (neper-epoll's)" >&2
fi
export RATE=${RATE:-}

read -r -a row_list <<<"$rows"
n=${#row_list[@]}
for rep in $(seq "$reps"); do
  for i in $(seq 0 $((n - 1))); do
    run "${row_list[$(( (i + rep - 1) % n ))]}" "$rep"
  done
done

python3 scale/crr_summary.py publish "$staging" "$out_dir" || { keep_staging=1; exit 1; }
python3 scale/crr_summary.py summary "$out_dir"
[ "$failed" -eq 0 ] || { echo "$failed run(s) failed to record; see above" >&2; exit 1; }
