#!/usr/bin/env bash
# What the per-run noise of server CPU per message is made of on this
# machine (issue 27, item 3), and whether longer runs or a longer warm-up
# lower it for its cost in wall time.
#
#   scale/noise-sources.sh [REPS] [OUT_DIR]   (defaults: 12, results/noise)
#
# The A/A pair epoll,epoll@twin over TCP, 100 connections, 128 B, at the two
# points `compare --quick --transports tcp --conns 100 --peers
# epoll,epoll@twin --decide-at off` plans: closed loop, then matched load
# (open loop at 50% of the lower of the two closed-loop peaks, measured in
# the same call). Three variants of (measured duration, warm-up):
#   1500ms,500ms    the full comparison's default
#   1500ms,2000ms   a longer warm-up
#   4000ms,500ms    longer runs
# (override with DURATIONS="1500ms 1500ms 4000ms" WARMUPS="500ms 2000ms 500ms",
# the same number of words in each). Each variant gets REPS repetitions per
# label and point, made BLOCK (default 3) at a time in one `compare` call:
# rounds are the outer loop and variants the inner one, their order rotated
# each round, so slow drift of the machine falls on every variant alike. A
# call of BLOCK repetitions, not of one, because the matched-load rate comes
# from the call's own closed-loop peaks: within a call it is fixed, as in
# the real comparison, and the noise within calls is the comparison's noise
# (the summary also gives it across calls).
#
# Expected time on the project's 2-core VM (12 repetitions, BLOCK 3, so 4
# rounds): a run is warm-up + duration + about 0.2 s, a call adds about 2.5 s
# (the 2 s pause census of --quick, the system-call floor, start-up). A round
# is 3 calls of 4 x 3 runs: 12 x (2.2 + 3.7 + 4.7) s + 3 x 2.5 s = 135 s,
# so 4 rounds take about 9 minutes, 10 with the build. Each extra 3
# repetitions add about 2.3 minutes.
#
# Writes OUT_DIR/calls/ (each call's compare.json and loadgen result files,
# runs/*.json, plus index.json: every call's variant, round, wall time and
# command; study.json: the settings) and, from those files only, OUT_DIR/summary.md and summary.json
# (scale/noise_summary.py; re-run it alone to redraw them). Nothing is
# written to OUT_DIR until every call has finished. OUT_DIR/calls is
# replaced only when an earlier run of this script made it.
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-12}
out_dir=${2:-results/noise}
block=${BLOCK:-3}
read -r -a durations <<<"${DURATIONS:-1500ms 1500ms 4000ms}"
read -r -a warmups <<<"${WARMUPS:-500ms 2000ms 500ms}"
case "$reps" in '' | *[!0-9]* | 0) echo "REPS must be a number from 1, not '$reps'" >&2; exit 2 ;; esac
case "$block" in '' | *[!0-9]* | 0) echo "BLOCK must be a number from 1, not '$block'" >&2; exit 2 ;; esac
if [ "${#durations[@]}" -eq 0 ] || [ "${#durations[@]}" -ne "${#warmups[@]}" ]; then
  echo "DURATIONS and WARMUPS must list as many values each (got '${durations[*]}' and '${warmups[*]}')" >&2
  exit 2
fi
for v in "${durations[@]}" "${warmups[@]}"; do
  [[ "$v" =~ ^[0-9]+(ms|s)$ ]] || { echo "DURATIONS and WARMUPS take values like 1500ms or 4s, not '$v'" >&2; exit 2; }
done
if [ -e "$out_dir/calls" ] && [ ! -e "$out_dir/calls/.noise-sources" ]; then
  echo "$out_dir/calls exists and was not written by this script; choose another OUT_DIR" >&2
  exit 2
fi
. scale/lib.sh
check_writable "$out_dir" noise

cargo build --release --quiet -p sockbench -p loadgen -p compare
ulimit -n 20000 2>/dev/null || true
compare=("$bin/compare" --quick --transports tcp --conns 100 --peers epoll,epoll@twin --decide-at off --bin-dir "$bin")
rounds=$(((reps + block - 1) / block))
variants=${#durations[@]}
echo "noise-sources: $reps repetitions in $rounds rounds of $block, variants: ${durations[*]} (warm-up ${warmups[*]})" >&2

calls="$tmp/calls"
mkdir -p "$calls"
touch "$calls/.noise-sources"
index="$tmp/index.jsonl"
: >"$index"
for round in $(seq 1 "$rounds"); do
  left=$((reps - (round - 1) * block))
  n=$((left < block ? left : block))
  for k in $(seq 0 $((variants - 1))); do
    v=$(((k + round - 1) % variants))
    name="v$v-r$round"
    cmd=("${compare[@]}" --duration "${durations[$v]}" --warmup "${warmups[$v]}" --repetitions "$n" --out-dir "$tmp/out-$name")
    t0=$(date +%s.%N)
    "${cmd[@]}" >"$tmp/call.out" 2>"$tmp/call.err" ||
      { echo "call $name (${cmd[*]}) failed:" >&2; tail -5 "$tmp/call.err" >&2; exit 1; }
    t1=$(date +%s.%N)
    mkdir -p "$calls/$name/runs"
    cp "$tmp/out-$name/compare.json" "$calls/$name/"
    cp "$tmp/out-$name"/runs/*.json "$calls/$name/runs/"
    rm -rf "$tmp/out-$name"
    python3 - "$name" "$v" "${durations[$v]}" "${warmups[$v]}" "$round" "$n" "$t0" "$t1" "${cmd[*]}" >>"$index" <<'EOF'
import json, sys
name, v, dur, warm, rnd, n, t0, t1, cmd = sys.argv[1:]
print(json.dumps({"call": name, "variant": int(v), "duration": dur, "warmup": warm, "round": int(rnd),
                  "repetitions": int(n), "wall_s": float(t1) - float(t0), "command": cmd}))
EOF
    echo "noise-sources: round $round of $rounds, variant ${durations[$v]}/${warmups[$v]} done" >&2
  done
done
python3 -c 'import json, sys; print(json.dumps([json.loads(l) for l in open(sys.argv[1])], indent=1))' "$index" >"$calls/index.json"
python3 - "$reps" "$block" "${durations[*]}" "${warmups[*]}" "$out_dir" >"$calls/study.json" <<'EOF'
import json, sys
reps, block, durations, warmups, out_dir = sys.argv[1:]
command = f'DURATIONS="{durations}" WARMUPS="{warmups}" BLOCK={block} scale/noise-sources.sh {reps} {out_dir}'
print(json.dumps({"command": command, "reps": int(reps), "block": int(block),
                  "durations": durations.split(), "warmups": warmups.split()}, indent=1))
EOF

# Into OUT_DIR: the new calls copied beside the old (a name of our own),
# then swapped in; the old ones carry this script's mark (checked above).
staged=$(mktemp -d "$out_dir/.calls.XXXXXX")
chmod 755 "$staged"
cp -r "$calls/." "$staged/"
if [ -e "$out_dir/calls" ]; then
  old=$(mktemp -d "$out_dir/.calls-old.XXXXXX")
  mv "$out_dir/calls" "$old/calls"
  rm -rf "$old"
fi
mv "$staged" "$out_dir/calls"
python3 scale/noise_summary.py "$out_dir"
