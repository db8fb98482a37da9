# Shared by the scale/ scripts that run one server and then loadgen against
# it: sourced (`. scale/lib.sh` from the project root), not run.

bin=target/release

# check_writable DIR NAME: DIR exists and can take a new file (checked by
# making and removing an empty one of our own), else exit 2 before anything runs.
check_writable() {
  mkdir -p "$1"
  local probe
  probe=$(mktemp "$1/.$2.XXXXXX") || { echo "cannot write to $1" >&2; exit 2; }
  rm -f "$probe"
}

# A scratch directory of our own ($tmp) for the server's output and the runs'
# files, removed on exit with the server (and a child script a driver runs in
# the background, $child_pid) stopped first. Ctrl-C or SIGTERM stops the
# script after that clean-up, with exit code 130 or 143.
tmp=$(mktemp -d)
server_pid=""
child_pid=""
cleanup() {
  # A child script cleans up after itself on SIGTERM (its own server and loadgen).
  [ -n "$child_pid" ] && kill "$child_pid" 2>/dev/null && wait "$child_pid" 2>/dev/null || true
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_server CMD...: starts the server in the background (output in
# $tmp/server.out and .err), sets server_pid and waits up to 10 s for its
# `listening` line; exits 1 with its stderr if none comes.
start_server() {
  "$@" >"$tmp/server.out" 2>"$tmp/server.err" &
  server_pid=$!
  for _ in $(seq 100); do grep -q '^listening' "$tmp/server.out" 2>/dev/null && break; sleep 0.1; done
  grep -q '^listening' "$tmp/server.out" || { echo "server did not start:" >&2; cat "$tmp/server.err" >&2; exit 1; }
}
