#!/usr/bin/env bash
# Issue 25's connection-count points in one command: epoll and uring holding
# 19,000, 50,000 and 100,000 TCP connections, each point one run of
# scale/memory.sh, then the generated summary (scale/connections_summary.py).
#
#   scale/connections.sh [OUT_DIR]          (default results/scale)
#
# Every point: the server on CPU 0 with THREADS event loops or rings (each
# holds one descriptor table of connections: 6 x 19,9xx under a hard
# RLIMIT_NOFILE of 20,000, enough for 100,000), loadgen on CPU 1 with
# LG_THREADS threads (a table each) and SOURCES source addresses
# (--local-addrs: 8 keep each address under half its ports at 100,000),
# --timeout 5s, closed loop, 128 B, depth 1, WARMUP then DURATION measured,
# every echo checked; the same THREADS, LG_THREADS and SOURCES at every
# count, so that the marginal memory from the lowest count to the highest
# leaves the fixed costs (rings, buffers, threads) out. memory.sh records
# server RSS and kernel socket memory in the middle of the measured phase,
# loadgen's result (errors of every kind, connections held, the connect ramp
# `extra.connect_ramp_s`) and the server's summary line.
#
# Before each point the script waits (at most 75 s) until at most 500 TIME_WAIT
# sockets are left (the previous point leaves one per connection for 60 s):
# they hold kernel memory that would otherwise be freed during the next point
# and lower its kernel delta. Each point records the count it started with.
#
# Writes OUT_DIR/memory-BACKEND-cCONNS.json and run-BACKEND-cCONNS.json (+ .hgrm)
# per point (memory.sh), and OUT_DIR/connections-summary.md and .json (the
# table of points, the marginal memory per connection against issue 25's
# targets), regenerable with `python3 scale/connections_summary.py OUT_DIR`.
# Exits 0 when every point was clean (every connection held, no error of any
# kind, the server's summary clean), 1 otherwise, 130 or 143 after cleaning up
# on Ctrl-C or SIGTERM.
#
# Environment: BACKENDS (default "epoll uring"), COUNTS (default "19000 50000
# 100000"), DURATION (30s), WARMUP (2s), TIMEOUT (5s), THREADS (6), LG_THREADS
# (6), SOURCES (127.0.0.1-127.0.0.8), CONNECT_RATE (10000: 100,000 connect in
# 10 s, within what the listeners' backlogs take), DROP_CACHES (0, see memory.sh).
set -euo pipefail
caller=$PWD
cd "$(dirname "$0")/.."
out_dir=${1:-results/scale}
[ -z "${1:-}" ] || case $out_dir in /*) ;; *) out_dir="$caller/$out_dir" ;; esac
backends=${BACKENDS:-epoll uring}
counts=${COUNTS:-19000 50000 100000}
export DURATION=${DURATION:-30s} WARMUP=${WARMUP:-2s} TIMEOUT=${TIMEOUT:-5s}
export THREADS=${THREADS:-6} LG_THREADS=${LG_THREADS:-6} SOURCES=${SOURCES:-127.0.0.1-127.0.0.8}
export CONNECT_RATE=${CONNECT_RATE:-10000} DROP_CACHES=${DROP_CACHES:-0}
. scale/lib.sh
check_writable "$out_dir" connections
for b in server loadgen; do
  [ -x "$bin/$b" ] || { echo "$bin/$b is not built: cargo build --release --workspace" >&2; exit 2; }
done

tcp_time_wait() { awk '/^TCP:/{for(i=1;i<NF;i++) if($i=="tw") print $(i+1)}' /proc/net/sockstat; }
# Waits until (almost) no TIME_WAIT socket is left, 75 s at most: TCP holds
# one for 60 s, and the machine may have its own.
settle() {
  local limit=$((SECONDS + 75))
  while [ "$(tcp_time_wait)" -gt 500 ] && [ $SECONDS -lt $limit ]; do sleep 1; done
}

for conns in $counts; do
  for backend in $backends; do
    settle
    echo "== $backend, $conns connections (TIME_WAIT now $(tcp_time_wait))" >&2
    bash scale/memory.sh "$backend" "$conns" "$out_dir" &
    child_pid=$!
    wait "$child_pid" || echo "scale/memory.sh $backend $conns exited $?" >&2
    child_pid=""
  done
done

summary_args=("$out_dir" --backends "$backends" --counts "$counts")
python3 scale/connections_summary.py "${summary_args[@]}"
