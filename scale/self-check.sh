#!/usr/bin/env bash
# The comparison's method checked on this machine (issue 27, item 4): how
# often it calls two copies of one server different, and how often it finds
# a known 10% extra cost.
#
#   scale/self-check.sh [POINTS] [OUT_DIR]   (defaults: 20, results/self-check)
#
# Every point is one independent `compare` at matched load (open loop at
# half the lowest closed-loop peak), TCP, 100 connections, 128 B, with
# three labels paired repetition by repetition, their order rotated:
#   epoll                       the reference
#   epoll@twin                  epoll again under another label: an A/A point
#   epoll@slow:spin=NS          epoll plus a calibration spin of NS per echo,
#                               a tenth of epoll's server CPU per message
#                               (measured by a pilot of 3 repetitions first)
# So POINTS runs give POINTS A/A points and POINTS calibration points. The
# verdict judged is the one on server CPU per message against epoll.
#
# Repetitions: each point is adaptive (--repetitions 5 --decide-at 10%
# --max-repetitions ${MAX_REPS:-20}: repetitions are added until both labels
# are decided, each look at 99%) at the matched-load point only
# (--adaptive-points matched-load): the closed-loop point only sets the rate,
# and its noise (about 9%) would hold every A/A pair open to the cap for
# nothing. Runs are the full comparison's length (1.5 s measured, 0.5 s
# warm-up), so the check measures the method as it is used.
#
# Expected time on the project's 2-core VM: a run is about 2.4 s (0.5 s
# warm-up, 1.5 s measured, 0.4 s overhead). A point is 5 rounds of both
# points (5 x 6 runs, 72 s) and then about 5 more matched-load rounds
# (3 runs each, 36 s): about 1.8 minutes, 36 to 40 minutes for 20 points,
# 56 at most (every pair to the cap of 20). Add a minute for the pilot.
#
# Writes OUT_DIR/summary.md (the paragraph README quotes) and OUT_DIR/self-check.json: each point's two verdicts and ratio
# intervals, the false-positive rate of the A/A points (lower or higher) and
# the detection rate of the calibration points (higher, the right
# direction; lower is counted apart as the wrong direction), each with its
# 95% Clopper–Pearson interval, the spin, the commands, commit, kernel and
# CPU; and OUT_DIR/points/NN.json, each point's findings.json. Nothing is
# written until the end.
set -euo pipefail
cd "$(dirname "$0")/.."
points=${1:-20}
out_dir=${2:-results/self-check}
max_reps=${MAX_REPS:-20}
case "$points" in '' | *[!0-9]*) echo "POINTS must be a number, not '$points'" >&2; exit 2 ;; esac
. scale/lib.sh
check_writable "$out_dir" self-check

cargo build --release --quiet -p sockbench -p loadgen -p compare
# DURATION and WARMUP exist to try the script quickly; a published check
# uses the defaults, the full comparison's run length.
compare=("$bin/compare" --quick --transports tcp --conns 100 --duration "${DURATION:-1500ms}" --warmup "${WARMUP:-500ms}" --bin-dir "$bin")
design=(--repetitions 5 --decide-at 10% --max-repetitions "$max_reps" --adaptive-points matched-load)

# The pilot: epoll's server CPU per message at this point.
"${compare[@]}" --peers epoll --repetitions 3 --out-dir "$tmp/pilot" >/dev/null 2>"$tmp/pilot.err" ||
  { echo "the pilot failed:" >&2; tail -5 "$tmp/pilot.err" >&2; exit 1; }
spin_ns=$(python3 - "$tmp/pilot/findings.json" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
point = next(p for p in doc["points"] if p["purpose"] == "matched_load")
epoll = next(p for p in point["peers"] if p["label"] == "epoll")
print(max(50, round(epoll["server_cpu_us_per_msg"]["mid"] * 1000 * 0.10)))
EOF
)
echo "self-check: calibration spin ${spin_ns} ns, ${points} points, ${design[*]}" >&2
peers="epoll,epoll@twin,epoll@slow:spin=$spin_ns"

mkdir -p "$tmp/points"
for i in $(seq -w 1 "$points"); do
  "${compare[@]}" "${design[@]}" --peers "$peers" --out-dir "$tmp/run-$i" >/dev/null 2>"$tmp/run.err" ||
    { echo "point $i failed:" >&2; tail -5 "$tmp/run.err" >&2; exit 1; }
  cp "$tmp/run-$i/findings.json" "$tmp/points/$i.json"
  rm -rf "$tmp/run-$i"
  echo "self-check: point $i of $points done" >&2
done

PYTHONPATH=scale python3 - "$tmp/points" "$out_dir" "$spin_ns" "${compare[*]} ${design[*]} --peers $peers" "$max_reps" <<'EOF'
import json, os, shutil, sys
from summary import clopper_pearson, machine, write_atomic

points_dir, out_dir, spin_ns, command, cap = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])

rows = []
for name in sorted(os.listdir(points_dir)):
    doc = json.load(open(os.path.join(points_dir, name)))
    point = next(p for p in doc["points"] if p["purpose"] == "matched_load")
    by_label = {p["label"]: p for p in point["peers"]}
    row = {"point": name[:-5]}
    for label, key in (("epoll@twin", "a_a"), ("epoll@slow", "calibration")):
        p = by_label[label]
        row[key] = {
            "verdict": p["verdict_server_cpu"],
            "ratio": p["ratio_server_cpu"],
            "runs": p["runs"],
            "disturbed": p["disturbed"],
        }
    rows.append(row)

n = len(rows)
verdicts = lambda key: [r[key]["verdict"] for r in rows]
count = lambda key, words: sum(v in words for v in verdicts(key))
doc = {
    "what": "compare's method on this machine: A/A points (epoll against epoll@twin) and calibration "
    "points (epoll plus a spin of a tenth of its cost against epoll), matched load 50%, tcp, 100 connections",
    "command": command,
    "spin_ns": spin_ns,
    "points": n,
    "a_a_false_positive": clopper_pearson(count("a_a", ("lower", "higher")), n),
    "a_a_equivalent": clopper_pearson(count("a_a", ("equivalent",)), n),
    "calibration_detected": clopper_pearson(count("calibration", ("higher",)), n),
    "calibration_wrong_direction": clopper_pearson(count("calibration", ("lower",)), n),
    "targets": "detected at >= 90% of calibration points; A/A lower or higher at <= 1 of 20",
    "machine": machine(),
    "rows": rows,
}
os.makedirs(os.path.join(out_dir, "points"), exist_ok=True)
for name in sorted(os.listdir(points_dir)):
    shutil.copy(os.path.join(points_dir, name), os.path.join(out_dir, "points", name))
write_atomic(os.path.join(out_dir, "self-check.json"), doc, ".self-check")


def rate(c):
    return f"{c['k']} of {c['n']} (95% interval {100 * c['lo']:.0f}% to {100 * c['hi']:.0f}%)"


def met(ok):
    return "met" if ok else "NOT met"


reps = sorted(max(r["a_a"]["runs"], r["calibration"]["runs"]) for r in rows)
fp, det = doc["a_a_false_positive"], doc["calibration_detected"]
wrong, eq = doc["calibration_wrong_direction"], doc["a_a_equivalent"]
m = doc["machine"]
summary = (
    f"The method, checked on this machine by `scale/self-check.sh {n}` (commit {m.get('commit', '?')}, "
    f"kernel {m.get('kernel', '?')}): {n} independent comparisons at matched load (TCP, 100 connections, "
    f"128 B, half the lowest peak), each with an A/A pair (epoll against itself under a second label) and a "
    f"calibration pair (epoll plus a spin of {spin_ns} ns per echo, a tenth of its server CPU per message), "
    f"adaptive at 10% with a cap of {cap} repetitions.\n\n"
    f"- A/A pairs called lower or higher: {rate(fp)}; target at most 1 of 20: {met(fp['k'] * 20 <= n)}. "
    f"Called equivalent within 10%: {rate(eq)}.\n"
    f"- Calibration pairs found higher: {rate(det)}; target at least 90%: {met(det['k'] >= 0.9 * n)}. "
    f"Found lower (the wrong direction): {wrong['k']} of {n}.\n"
    f"- Repetitions a point took: median {reps[len(reps) // 2]}, from {reps[0]} to {reps[-1]}.\n"
)
tmp_path = os.path.join(out_dir, ".summary.md.tmp")
with open(tmp_path, "w") as f:
    f.write(summary)
os.replace(tmp_path, os.path.join(out_dir, "summary.md"))
fp, det = doc["a_a_false_positive"], doc["calibration_detected"]
print(
    f"A/A: lower or higher at {fp['k']} of {n} [{100 * fp['lo']:.1f}%, {100 * fp['hi']:.1f}%]; "
    f"calibration: found higher at {det['k']} of {n} [{100 * det['lo']:.1f}%, {100 * det['hi']:.1f}%]; "
    f"in {out_dir}/self-check.json"
)
EOF
