#!/bin/sh
# Writes the loadgen transcripts that docs/loadgen.md quotes: a closed loop,
# an open loop, and a run against a server that corrupts one byte.
# Each file holds the command, stdout, then stderr. The figures show the
# format only: they come from a short run on whatever machine ran this.
#
#   docs/examples/loadgen.sh [TARGET_DIR]     (default: target)
set -eu
bin=${1:-target}/release
out=$(dirname "$0")/loadgen
mkdir -p "$out"
commit=$(git -C "$(dirname "$0")" rev-parse --short HEAD 2>/dev/null || echo unknown)
tmp=$(mktemp -d)
trap 'kill $srv 2>/dev/null || true; rm -rf "$tmp"' EXIT

"$bin/server" --backend epoll --addr 127.0.0.1:0 --threads 1 >"$tmp/srv" 2>&1 &
srv=$!
while ! grep -q '^listening' "$tmp/srv"; do sleep 0.1; done
addr=$(sed -n 's/^listening addr=\([^ ]*\).*/\1/p' "$tmp/srv")

# transcript NAME ARGS...: runs loadgen, writes NAME.txt (stdout, then stderr).
transcript() {
    name=$1; shift
    rc=0
    "$bin/loadgen" "$@" >"$tmp/o" 2>"$tmp/e" || rc=$?
    {
        echo "# docs/examples/loadgen.sh at commit $commit, $(date -u +%Y-%m-%dT%H:%MZ); figures show the format only"
        echo "\$ loadgen $*" | sed "s|$tmp|/tmp|g"
        cat "$tmp/o"
        echo "\$ # stderr:"
        sed "s|$tmp|/tmp|g" "$tmp/e"
        echo "\$ # exit code $rc"
    } >"$out/$name.txt"
}

transcript closed-loop -c 10 -d 1s --warmup 500ms "$addr" --out "$tmp/run.json"
transcript open-loop -c 10 -R 5k -d 1s --warmup 500ms "$addr"
kill $srv

# An echo server that flips byte 5,000 of all it echoes on a connection.
cat >"$tmp/flip.py" <<'PY'
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(64)
print(s.getsockname()[1], flush=True)
def serve(c):
    seen = 0
    while True:
        try: b = bytearray(c.recv(65536))
        except OSError: return
        if not b: return
        if seen <= 5000 < seen + len(b): b[5000 - seen] ^= 1
        seen += len(b); c.sendall(b)
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
python3 "$tmp/flip.py" >"$tmp/port" 2>/dev/null &
srv=$!
while ! [ -s "$tmp/port" ]; do sleep 0.1; done
transcript warm-up-mismatch -c 4 -d 1s --warmup 500ms "127.0.0.1:$(cat "$tmp/port")" --out "$tmp/bad.json"
