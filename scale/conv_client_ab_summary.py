"""scale/conv-client-ab.sh's bookkeeping and summary.

    python3 scale/conv_client_ab_summary.py publish STAGING OUT_DIR
        moves the run files of STAGING into OUT_DIR/runs/ and records them in
        OUT_DIR/.conv-client-ab-files (the files this script wrote there). A
        file of an earlier publish that this one does not replace is removed
        (it was ours); a file in OUT_DIR/runs/ that no publish wrote is never
        touched: if a new file would replace it, nothing is moved and the
        command exits 1.
    python3 scale/conv_client_ab_summary.py summary OUT_DIR
        writes OUT_DIR/summary.md and OUT_DIR/summary.json (through temporary
        files beside them) from the runs the last publish recorded.

Figures are the loadgen result files' own. For each row the median over its
rounds with [min, max] as its interval (scale/summary.py: for 5 rounds that
covers the median at 93.75%); for loadgen's CPU per conversation and for
conversations/s, the median of the per-round ratios uring ÷ epoll (both rows
of one round, run back to back), with the same interval.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from summary import machine, median_interval, publish_runs, read_manifest, write_atomic, write_text_atomic  # noqa: E402

MANIFEST = ".conv-client-ab-files"
ROWS = ["epoll", "uring"]


def publish(staging, out_dir):
    publish_runs(staging, out_dir, MANIFEST, "conv_client_ab_summary.py")
    os.rmdir(staging)


def figures(r):
    """One run's figures, from its loadgen result file."""
    c = r.get("conversations") or {}
    x = r.get("extra") or {}
    window_us = r["settings"]["duration_s"] * 1e6
    lg_busy = (x.get("loadgen_cpu_us") or 0) / window_us
    srv_busy = (x.get("server_cpu_us") or 0) / window_us
    return {
        "conns_per_s": c.get("per_s"),
        "loadgen_cpu_us_per_conn": c.get("loadgen_cpu_us_per_conn"),
        "server_cpu_us_per_conn": c.get("server_cpu_us_per_conn"),
        "connect_p50_us": (c.get("connect_us") or {}).get("p50"),
        "conversation_p50_us": (c.get("conversation_us") or {}).get("p50"),
        "loadgen_busy": lg_busy,
        "server_busy": srv_busy,
        "limit": {(True, True): "both", (True, False): "loadgen", (False, True): "server",
                  (False, False): "neither"}[(lg_busy >= 0.9, srv_busy >= 0.9)],
        "failed_conversations": (c.get("failed") or {}),
        "time_wait_at_end": c.get("time_wait_at_end"),
        "source_addrs": c.get("source_addrs"),
    }


def fmt(iv, digits=1, unit=""):
    if not iv:
        return "–"
    f = f"{{:,.{digits}f}}"
    if iv["n"] == 1:
        return f.format(iv["mid"]) + unit + " (1 run)"
    return f"{f.format(iv['mid'])}{unit} [{f.format(iv['lo'])}, {f.format(iv['hi'])}]"


def summary(out_dir):
    by_row = {}
    problems = []
    command = {}
    for rel in read_manifest(out_dir, MANIFEST):
        if not rel.endswith(".json"):
            continue
        name = os.path.basename(rel)[:-len(".json")]
        row, _, rnd = name.rpartition("-r")
        r = json.load(open(os.path.join(out_dir, rel)))
        f = figures(r)
        bad = []
        if r["settings"].get("io") != row:
            bad.append(f"asked for --io {row}, ran on {r['settings'].get('io')}")
        if r.get("failures"):
            bad.extend(r["failures"])
        if bad:
            problems.append({"row": row, "round": int(rnd), "problems": bad})
            continue
        by_row.setdefault(row, {})[int(rnd)] = f
        command.setdefault(row, " ".join(r["command"]))
    if not by_row:
        sys.exit(f"conv_client_ab_summary.py: no usable runs recorded in {out_dir}/{MANIFEST}")
    names = ["conns_per_s", "loadgen_cpu_us_per_conn", "server_cpu_us_per_conn", "connect_p50_us",
             "conversation_p50_us", "loadgen_busy", "server_busy"]
    table = {}
    for row, runs in by_row.items():
        t = {n: median_interval([f[n] for f in runs.values()]) for n in names}
        t["limits"] = {}
        for f in runs.values():
            t["limits"][f["limit"]] = t["limits"].get(f["limit"], 0) + 1
        t["command"] = command[row]
        table[row] = t
    ratios = {}
    if "epoll" in by_row and "uring" in by_row:
        rounds = sorted(set(by_row["epoll"]) & set(by_row["uring"]))
        for n in ("loadgen_cpu_us_per_conn", "conns_per_s", "server_cpu_us_per_conn"):
            vals = [by_row["uring"][k][n] / by_row["epoll"][k][n] for k in rounds
                    if by_row["uring"][k][n] and by_row["epoll"][k][n]]
            iv = median_interval(vals)
            if iv:
                iv["per_round"] = vals
                iv["verdict"] = ("one round" if iv["n"] == 1 else "below 1" if iv["hi"] < 1
                                 else "above 1" if iv["lo"] > 1 else "interval includes 1")
                ratios[n] = iv
    m = machine()
    netns = os.environ.get("NETNS") == "1"
    lines = []
    w = lines.append
    w("# loadgen's conversation client: io_uring against epoll")
    w("")
    w("Generated by `scale/conv_client_ab_summary.py` from the runs in `runs/` (written by "
      "`scale/conv-client-ab.sh`); do not edit by hand.")
    w("")
    w("`loadgen --conn-msgs 1` (connect, one echo, close) against `server --backend epoll --threads 1 --pin 0`, "
      "loadgen `--pin 1`, TCP over loopback; the rows differ only in loadgen's `--io`. Each run is a fresh server "
      "and loadgen" + (" in a network namespace made for it." if netns else " in the shared network namespace.")
      + " The rows ran in rounds, the order rotated by one each round. Figures are loadgen's own, over its "
      "measured window.")
    w("")
    w(f"- commit `{m['commit']}`, kernel {m['kernel']}, CPU {m['cpu']} ({m['cores']} cores)")
    w(f"- {sum(len(v) for v in by_row.values())} usable runs" + (f", {len(problems)} left out (below)" if problems else ""))
    w("")
    w("| row | conversations/s | loadgen CPU µs/conv | server CPU µs/conv | connect p50 µs | conversation p50 µs "
      "| loadgen busy | server busy | limit |")
    w("|---|--:|--:|--:|--:|--:|--:|--:|---|")
    for row in [r for r in ROWS if r in table]:
        t = table[row]
        lim = ", ".join(f"{k} {v}" for k, v in sorted(t["limits"].items()))
        w(f"| `{row}` | {fmt(t['conns_per_s'], 0)} | {fmt(t['loadgen_cpu_us_per_conn'], 2)} | "
          f"{fmt(t['server_cpu_us_per_conn'], 2)} | {fmt(t['connect_p50_us'], 0)} | {fmt(t['conversation_p50_us'], 0)} | "
          f"{fmt(t['loadgen_busy'], 2)} | {fmt(t['server_busy'], 2)} | {lim} |")
    w("")
    iv = next(iter(table.values()))["conns_per_s"]
    if iv and iv["n"] > 1:
        w(f"Medians over the rounds, [min, max] in brackets (covers the median at {iv['level']:.2%} for {iv['n']} runs). "
          "`busy` is the share of its core the side used; `limit` counts the runs by the side at 0.9 or more.")
    else:
        w("One round: single runs, no intervals.")
    w("")
    if ratios:
        w("| uring ÷ epoll, paired by round | median [min, max] | |")
        w("|---|--:|---|")
        for n, title in (("loadgen_cpu_us_per_conn", "loadgen CPU per conversation"),
                         ("conns_per_s", "conversations/s"),
                         ("server_cpu_us_per_conn", "server CPU per conversation")):
            if n in ratios:
                w(f"| {title} | {fmt(ratios[n], 2, '×')} | {ratios[n]['verdict']} |")
        w("")
        w("In closed loop each row runs as fast as it goes, so the rows may differ in rate as well as in CPU per "
          "conversation; compare the limits.")
        w("")
    for row in [r for r in ROWS if r in table]:
        w(f"- `{row}`: `{table[row]['command']}`")
    if problems:
        w("")
        w("## Runs left out")
        w("")
        for p in problems:
            w(f"- `{p['row']}` round {p['round']}: {'; '.join(p['problems'])[:400]}")
    doc = {"rows": table, "ratios_uring_over_epoll": ratios, "runs": by_row, "left_out": problems,
           "netns": netns, **m}
    write_atomic(os.path.join(out_dir, "summary.json"), doc, ".summary.json.")
    write_text_atomic(os.path.join(out_dir, "summary.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {os.path.join(out_dir, 'summary.md')}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "publish":
        publish(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "summary":
        summary(sys.argv[2])
    else:
        sys.exit(__doc__)
