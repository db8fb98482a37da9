#!/usr/bin/env bash
# Where a connection's cost goes, uring against epoll (issue 24): a kernel
# profile of each server at one message per connection, 100 conversations at
# once over TCP (the point of the uring-against-epoll target), as a
# reproducible command with a generated summary instead of a hand-read
# `perf report`.
#
#   scale/profile-conversations.sh [ROUNDS] [OUT_DIR]   (defaults: 3, results/profile)
#
# Each round runs epoll and uring (the order rotated), each once:
#   server --backend B --addr 127.0.0.1:0 --threads 1 --pin 0
#   loadgen ADDR --conn-msgs 1 --conns 100 --pin 1 --warmup 1s --duration 10s --server-pid PID
# and, while loadgen's measured phase runs, one after the other on the
# server's process (so neither sees the other's overhead):
#   perf record -F 2999 -g -p PID -- sleep 3          (where the samples fall)
#   perf stat -e raw_syscalls:sys_enter -p PID -- sleep 3   (system calls)
# Both tools add cost to what they watch, equally to both servers for the
# profile; the loadgen result's server CPU per connection is therefore read
# "under the profiler", and only ratios and shares are compared.
#
# scale/profile_summary.py then sorts every sample's symbol into a few
# buckets (the I/O interface's own code, TCP/IP, socket set-up and tear-down,
# the scheduler and wake-ups, system-call entry, memory, user space, other
# kernel) and writes OUT_DIR/summary.md and summary.json: each bucket's share
# and its µs per connection (share × server CPU per connection), the median
# over the rounds, and uring minus epoll per bucket: where the difference goes.
# OUT_DIR/runs/ keeps each run's loadgen result and the text of its perf
# report (the perf.data files are not kept: they are large and name this
# machine's kernel build).
#
# Expected time: about 13 s a run, 2 runs a round, under 2 minutes for 3.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
out_dir=${2:-results/profile}
case "$rounds" in '' | *[!0-9]* | 0) echo "ROUNDS must be a number from 1, not '$rounds'" >&2; exit 2 ;; esac
command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf or linux-tools)" >&2; exit 2; }
. scale/lib.sh
check_writable "$out_dir" profile

cargo build --release --quiet -p sockbench -p loadgen
ulimit -n 20000 2>/dev/null || true
mkdir -p "$tmp/runs"
backends=(epoll uring)
for round in $(seq 1 "$rounds"); do
  for k in 0 1; do
    b=${backends[$(((round + k) % 2))]}
    name="$b-r$round"
    start_server "$bin/server" --backend "$b" --addr 127.0.0.1:0 --threads 1 --pin 0
    addr=$(sed -n 's/^listening addr=\([^ ]*\).*/\1/p' "$tmp/server.out")
    lg=("$bin/loadgen" "$addr" --conn-msgs 1 --conns 100 --pin 1 --warmup 1s --duration 10s
      --server-pid "$server_pid" --out "$tmp/runs/$name.json")
    "${lg[@]}" >"$tmp/loadgen.out" 2>"$tmp/loadgen.err" &
    lg_pid=$!
    sleep 2
    perf record -q -F 2999 -g -p "$server_pid" -o "$tmp/$name.data" -- sleep 3 >/dev/null 2>&1
    perf stat -x, -e raw_syscalls:sys_enter -p "$server_pid" -o "$tmp/runs/$name.syscalls.csv" -- sleep 3 >/dev/null 2>&1 ||
      echo "raw_syscalls:sys_enter cannot be counted here; the summary leaves syscalls out" >&2
    wait "$lg_pid" || { echo "loadgen failed ($name):" >&2; tail -5 "$tmp/loadgen.err" >&2; exit 1; }
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    grep '^summary' "$tmp/server.out" >"$tmp/runs/$name.server-summary" || true
    server_pid=""
    perf report -i "$tmp/$name.data" --stdio -n --no-children --sort dso,symbol -g none --percent-limit 0 \
      >"$tmp/runs/$name.perf.txt" 2>/dev/null
    rm -f "$tmp/$name.data"
    echo "profile: $name done" >&2
  done
done

command_line="scale/profile-conversations.sh $rounds $out_dir"
PYTHONPATH=scale python3 scale/profile_summary.py "$tmp/runs" "$out_dir" "$command_line"
