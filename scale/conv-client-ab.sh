#!/usr/bin/env bash
# What does a conversation cost loadgen on its io_uring path against its epoll
# path? (issue 24: socket, connect and close as ring operations on direct
# descriptors; docs/loadgen.md, "Conversations on io_uring").
#
#   scale/conv-client-ab.sh [ROUNDS] [OUT_DIR]     (defaults: 5, results/conv-client-ab)
#
# Rows, the same workload against the same server, only loadgen's --io differs:
#   epoll   loadgen --io epoll --conn-msgs 1 --conns 100 -> server --backend epoll
#   uring   loadgen --io uring --conn-msgs 1 --conns 100 -> server --backend epoll
# TCP over loopback, 128 B (connect, one echo, close; loadgen's default towards
# loopback: 8 source addresses). The server runs `--threads 1 --pin 0`, loadgen
# `--pin 1`. Each round runs both rows once, the order rotated by one each
# round. Each run is a fresh server and loadgen in a network namespace made
# for it (unshare -n, root only; NETNS=0 or no root: the shared one), so no run
# inherits another's TIME_WAIT sockets, whose number changes what a connect
# costs; there tcp_max_tw_buckets is raised to TW_BUCKETS (default 1048576).
# Environment: WARMUP (seconds, default 1), MEASURE (seconds, default 5),
# CONNS (100), SIZE (128), NETNS, TW_BUCKETS.
#
# Figures are loadgen's own (its result file): conversations/s, loadgen's and
# the server's (--server-pid) CPU per conversation over the measured window,
# each side's busy share of its core. Writes OUT_DIR/runs/ROW-rN.json (the
# loadgen result files), OUT_DIR/summary.md and summary.json
# (scale/conv_client_ab_summary.py: medians with order-statistic intervals,
# and loadgen's CPU per conversation uring ÷ epoll paired by round). OUT_DIR
# is checked for writing first; the runs go to a scratch directory in OUT_DIR
# and are moved in only at the end; a file in OUT_DIR/runs that this script
# did not write is never replaced or removed. Ctrl-C or SIGTERM stops the run
# in progress and writes nothing (exit 130 or 143).
set -euo pipefail
caller=$PWD
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/.."

if [ "${CONV_AB_ONE_RUN:-}" = 1 ]; then
  # One run (called by the rounds below, in its own namespace if NETNS=1):
  # ROW OUT.json.
  row=$1 json=$2
  . scale/lib.sh
  if [ "$NETNS" = 1 ]; then
    ip link set lo up
    echo "${TW_BUCKETS:-1048576}" >/proc/sys/net/ipv4/tcp_max_tw_buckets
  fi
  start_server "$bin/server" --backend epoll --addr 127.0.0.1:0 --threads 1 --pin 0
  target=$(grep -o 'addr=[^ ]*' "$tmp/server.out" | head -1 | cut -d= -f2)
  "$bin/loadgen" "$target" --io "$row" --conn-msgs 1 --conns "$CONNS" --size "$SIZE" --pin 1 \
    --server-pid "$server_pid" --warmup "${WARMUP}s" --duration "${MEASURE}s" --label "lg-$row" \
    --out "$json" >/dev/null 2>"$tmp/lg.err" ||
    { echo "loadgen --io $row failed:" >&2; tail -5 "$tmp/lg.err" >&2; exit 1; }
  exit 0
fi

rounds=${1:-5}
out_dir=${2:-results/conv-client-ab}
[ -z "${2:-}" ] || case $out_dir in /*) ;; *) out_dir="$caller/$out_dir" ;; esac
case "$rounds" in '' | *[!0-9]* | 0) echo "ROUNDS must be a positive number, not '$rounds'" >&2; exit 2 ;; esac
export WARMUP=${WARMUP:-1} MEASURE=${MEASURE:-5} CONNS=${CONNS:-100} SIZE=${SIZE:-128}
for v in WARMUP MEASURE; do
  case ${!v} in '' | *[!0-9.]* | *.*.*) echo "$v must be seconds (a number), not '${!v}'" >&2; exit 2 ;; esac
done
for b in loadgen server; do
  [ -x "target/release/$b" ] || { echo "no target/release/$b: cargo build --release first" >&2; exit 2; }
done
[ "$(nproc)" -ge 2 ] || { echo "needs 2 CPUs (server on 0, loadgen on 1)" >&2; exit 2; }

if [ "${NETNS:-1}" = 1 ] && command -v unshare >/dev/null && command -v ip >/dev/null && unshare -n true 2>/dev/null; then
  export NETNS=1
  one_run() { CONV_AB_ONE_RUN=1 unshare -n "$self" "$@"; }
else
  [ "${NETNS:-1}" = 0 ] || echo "warning: cannot make a network namespace per run (needs root, unshare and ip); runs share this one" >&2
  export NETNS=0
  one_run() { CONV_AB_ONE_RUN=1 "$self" "$@"; }
fi

. scale/lib.sh
check_writable "$out_dir" conv-client-ab
check_writable "$out_dir/runs" conv-client-ab
staging=$(mktemp -d "$out_dir/.conv-ab-new-XXXXXX")
keep_staging=0
trap 'cleanup; [ "$keep_staging" = 1 ] || rm -rf "$staging"' EXIT

failed=0
rows=(epoll uring)
for round in $(seq "$rounds"); do
  for i in 0 1; do
    row=${rows[$(( (i + round - 1) % 2 ))]}
    json="$staging/$row-r$round.json"
    if one_run "$row" "$json"; then
      echo "$row r$round: $(grep -o '"per_s": *[0-9.]*' "$json" | head -1)" >&2
    else
      echo "run $row round $round failed" >&2
      rm -f "$json" "${json%.json}.hgrm"
      failed=$((failed + 1))
    fi
  done
done

export NETNS ROUNDS=$rounds
python3 scale/conv_client_ab_summary.py publish "$staging" "$out_dir" || { keep_staging=1; exit 1; }
python3 scale/conv_client_ab_summary.py summary "$out_dir"
[ "$failed" -eq 0 ] || { echo "$failed run(s) failed; see above" >&2; exit 1; }
