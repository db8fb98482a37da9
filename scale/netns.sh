#!/usr/bin/env bash
# Several load hosts on one machine: a server network namespace and K client
# namespaces joined by veth pairs to a bridge, addresses 10.77.0.0/24 inside
# those namespaces only. Starts the server in its namespace, one loadgen per
# client namespace with the same --start-at, and merges their results.
#
#   scale/netns.sh [K] [OUT_DIR] [-- LOADGEN_ARGS...]
#     K        client namespaces (default 2, at most 200)
#     OUT_DIR  where client-N.json and merged.json go (default: a new temp dir)
#     LOADGEN_ARGS  default: --conns 50 --duration 2s --warmup 500ms
#   Environment: BACKEND (server --backend, default epoll), BIN (default target/release).
#
# Needs root (CAP_NET_ADMIN) and `ip` (iproute2). Every name carries this
# script's pid (sb<pid>...), so it never touches what it did not create, and
# everything it created is removed on exit, error, Ctrl-C or SIGTERM.
# Prints the merged result's path on the last line: `merged OUT_DIR/merged.json`.
set -euo pipefail
cd "$(dirname "$0")/.."
k=${1:-2}
out_dir=${2:-}
shift $(( $# > 2 ? 2 : $# ))
[ "${1:-}" = "--" ] && shift
lg_args=("$@")
[ ${#lg_args[@]} -gt 0 ] || lg_args=(--conns 50 --duration 2s --warmup 500ms)
backend=${BACKEND:-epoll}
bin=${BIN:-target/release}
case "$k" in ''|*[!0-9]*) echo "netns.sh: K must be a number, got $k" >&2; exit 2 ;; esac
[ "$k" -ge 1 ] && [ "$k" -le 200 ] || { echo "netns.sh: K must be 1..200" >&2; exit 2; }
[ -n "$out_dir" ] || out_dir=$(mktemp -d "${TMPDIR:-/tmp}/netns-XXXXXX")
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
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  # Deleting a namespace deletes the veth ends inside it, and with them their peers.
  for ns in "${created_ns[@]}"; do ip netns delete "$ns" 2>/dev/null || true; done
  for l in "${created_links[@]}"; do ip link delete "$l" 2>/dev/null || true; done
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ip link add "$bridge" type bridge
created_links+=("$bridge")
ip link set "$bridge" up

# add_host NS INDEX: a namespace with veth to the bridge and 10.77.0.INDEX/24.
add_host() {
  local ns=$1 i=$2
  ip netns add "$ns"
  created_ns+=("$ns")
  ip link add "${tag}h$i" type veth peer name "${tag}n$i"
  created_links+=("${tag}h$i")
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

# One instant for every client: 3 s ahead, time for the connects.
start_at=$(date -u -d "@$(( $(date +%s) + 3 ))" +%Y-%m-%dT%H:%M:%SZ)
lg_pids=()
for c in $(seq 1 "$k"); do
  ip netns exec "${tag}-c$c" "$bin/loadgen" 10.77.0.1:7000 --backend "$backend" \
    --label "client-$c" --start-at "$start_at" "${lg_args[@]}" --out "$out_dir/client-$c.json" \
    >"$out_dir/client-$c.out" 2>"$out_dir/client-$c.err" &
  lg_pids+=($!)
  pids+=($!)
done
status=0
for p in "${lg_pids[@]}"; do wait "$p" || status=1; done
if [ "$status" -ne 0 ]; then
  echo "netns.sh: a loadgen failed:" >&2
  tail -n 5 "$out_dir"/client-*.err >&2
  exit 1
fi
inputs=()
for c in $(seq 1 "$k"); do inputs+=("$out_dir/client-$c.json"); done
"$bin/loadgen" merge "${inputs[@]}" --out "$out_dir/merged.json"
echo "merged $out_dir/merged.json"
