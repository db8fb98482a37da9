#!/usr/bin/env bash
# Several load hosts on one machine: a server network namespace and K client
# namespaces joined by veth pairs to a bridge, addresses 10.77.0.0/24 inside
# those namespaces only. Starts the server in its namespace, one loadgen per
# client namespace with the same --start-at, and merges their results.
#
#   scale/netns.sh [K] [OUT_DIR] [-- LOADGEN_ARGS...]
#     K        client namespaces (default 2, at most 200)
#     OUT_DIR  where client-N.json and merged.json go (default: a new temp dir);
#              a relative OUT_DIR (and BIN) is taken from the caller's directory
#     LOADGEN_ARGS  default: --conns 50 --duration 2s --warmup 500ms
#   Environment: BACKEND (server --backend, default epoll), BIN (default target/release).
#
# Needs root (CAP_NET_ADMIN) and `ip` (iproute2). Every name carries this
# script's pid (sb<pid>...), so it never touches what it did not create, and
# everything it created is removed on exit, error, Ctrl-C or SIGTERM (exit
# 130/143): each name is recorded *before* the call that creates it, and the
# clean-up deletes by name, so a signal between `ip ... add` returning and the
# record being made cannot leak it (deleting a name that was never made is a
# no-op). The clients are started through scale/multi-host.sh, with
# scale/netns-ssh.sh standing in for ssh.
# Prints the merged result's path on the last line: `merged OUT_DIR/merged.json`.
set -euo pipefail
caller=$PWD
root=$(cd "$(dirname "$0")/.." && pwd)
from_caller() { case $1 in /*) echo "$1" ;; *) echo "$caller/$1" ;; esac; }
k=${1:-2}
out_dir=${2:-}
shift $(( $# > 2 ? 2 : $# ))
[ "${1:-}" = "--" ] && shift
lg_args=("$@")
[ ${#lg_args[@]} -gt 0 ] || lg_args=(--conns 50 --duration 2s --warmup 500ms)
backend=${BACKEND:-epoll}
bin=$(from_caller "${BIN:-$root/target/release}")
case "$k" in ''|*[!0-9]*) echo "netns.sh: K must be a number, got $k" >&2; exit 2 ;; esac
[ "$k" -ge 1 ] && [ "$k" -le 200 ] || { echo "netns.sh: K must be 1..200" >&2; exit 2; }
if [ -n "$out_dir" ]; then out_dir=$(from_caller "$out_dir"); else out_dir=$(mktemp -d "${TMPDIR:-/tmp}/netns-XXXXXX"); fi
mkdir -p "$out_dir"

tag="sb$$"            # unique per invocation; names stay within IFNAMSIZ (15)
bridge="${tag}br"
server_ns="${tag}-srv"
created_ns=()
created_links=()
pids=()

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # Every background job, also one started but not yet in pids (a signal can
  # land between `&` and `pids+=`).
  for p in "${pids[@]}" $(jobs -p); do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}" $(jobs -p); do wait "$p" 2>/dev/null || true; done
  # Deleting a namespace deletes the veth ends inside it, and with them their peers.
  for ns in "${created_ns[@]}"; do ip netns delete "$ns" 2>/dev/null || true; done
  for l in "${created_links[@]}"; do ip link delete "$l" 2>/dev/null || true; done
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

created_links+=("$bridge")
ip link add "$bridge" type bridge
ip link set "$bridge" up

# add_host NS INDEX: a namespace with veth to the bridge and 10.77.0.INDEX/24.
add_host() {
  local ns=$1 i=$2
  created_ns+=("$ns")
  ip netns add "$ns"
  # Deleting either end of a veth pair deletes both; the host end stays here.
  created_links+=("${tag}h$i")
  ip link add "${tag}h$i" type veth peer name "${tag}n$i"
  ip link set "${tag}n$i" netns "$ns"
  ip link set "${tag}h$i" master "$bridge" up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "10.77.0.$i/24" dev "${tag}n$i"
  ip -n "$ns" link set "${tag}n$i" up
}

add_host "$server_ns" 1
for c in $(seq 1 "$k"); do add_host "${tag}-c$c" $((c + 1)); done

ip netns exec "$server_ns" "$bin/server" --backend "$backend" --addr 10.77.0.1:7000 \
  >"$out_dir/server.out" 2>"$out_dir/server.err" &
pids+=($!)
for _ in $(seq 100); do grep -q '^listening' "$out_dir/server.out" 2>/dev/null && break; sleep 0.1; done
grep -q '^listening' "$out_dir/server.out" || { echo "netns.sh: server did not start" >&2; cat "$out_dir/server.err" >&2; exit 1; }

# The clients: one loadgen per client namespace, one --start-at 3 s ahead
# (time for the connects), results merged; scale/multi-host.sh does it with
# scale/netns-ssh.sh in place of ssh. In the background, so that a signal
# reaches the trap at once rather than after the clients end.
hosts=()
for c in $(seq 1 "$k"); do hosts+=("${tag}-c$c"); done
"$root/scale/multi-host.sh" --ssh-cmd "$root/scale/netns-ssh.sh" --start-in 3 \
  --remote-loadgen "$bin/loadgen" --loadgen "$bin/loadgen" --out-dir "$out_dir" \
  "${hosts[@]}" -- 10.77.0.1:7000 --backend "$backend" "${lg_args[@]}" >&2 &
pids+=($!)
status=0
wait "$!" || status=$?
[ "$status" -eq 0 ] || { echo "netns.sh: the clients or their merge failed (exit $status)" >&2; exit 1; }
echo "merged $out_dir/merged.json"
