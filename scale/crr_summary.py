"""scale/crr-vs-neper.sh's bookkeeping and summary.

    python3 scale/crr_summary.py publish STAGING OUT_DIR
        moves the run files of STAGING into OUT_DIR/runs/ and records them in
        OUT_DIR/.crr-vs-neper-files (the files this script wrote there). A
        file of an earlier publish that this one does not replace is removed
        (it was ours); a file in OUT_DIR/runs/ that no publish wrote is never
        touched: if a new file would replace it, nothing is moved and the
        command exits 1.
    python3 scale/crr_summary.py summary OUT_DIR
        writes OUT_DIR/summary.md and OUT_DIR/summary.json (through temporary
        files beside them) from the runs the last publish recorded.

Figures: for every row the median over its rounds with the order-statistic
interval of the median (the widest pair of order statistics symmetric about
the median whose coverage is at least 95%, or [min, max] when n is too
small for 95%; the coverage is printed); for every ratio the median of the
per-round ratios (both rows of one round, runs back to back) with the same
interval.
"""
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from summary import publish_runs, read_manifest, write_text_atomic  # noqa: E402

MANIFEST = ".crr-vs-neper-files"

# Ratios: (title, what is compared, numerator row, denominator row, figure).
RATIOS = [
    ("loadgen ÷ neper client", "client CPU per connection, both against the epoll server, each at its own closed-loop "
     "rate, loadgen from its default 8 source addresses, neper's client from one",
     "lg-epoll", "neper-epoll", "client_cpu_us_per_conn"),
    ("loadgen ÷ neper client", "client CPU per connection, both against the epoll server, each at its own closed-loop "
     "rate, both from one source address",
     "lg-epoll-1src", "neper-epoll", "client_cpu_us_per_conn"),
    ("loadgen ÷ neper client", "client CPU per connection, both against the uring server, each at its own closed-loop rate",
     "lg-uring", "neper-uring", "client_cpu_us_per_conn"),
    ("loadgen ÷ neper client", "client CPU per connection against the epoll server, loadgen in open loop at neper's rate",
     "lg-epoll-rate", "neper-epoll", "client_cpu_us_per_conn"),
    ("loadgen ÷ neper client (reset close)", "client CPU per connection: loadgen → epoll (FIN, TIME_WAIT) over neper → "
     "neper with neper's default close (SO_LINGER 0: a reset, no TIME_WAIT); not the same workload",
     "lg-epoll", "neper", "client_cpu_us_per_conn"),
    ("epoll ÷ neper server", "server CPU per connection under neper's client (--time-wait)",
     "neper-epoll", "neper-tw", "server_cpu_us_per_conn"),
    ("uring ÷ neper server", "server CPU per connection under neper's client (--time-wait)",
     "neper-uring", "neper-tw", "server_cpu_us_per_conn"),
    ("uring ÷ epoll", "server CPU per connection under loadgen (closed loop)",
     "lg-uring", "lg-epoll", "server_cpu_us_per_conn"),
    ("uring ÷ epoll", "server CPU per connection under neper's client (--time-wait)",
     "neper-uring", "neper-epoll", "server_cpu_us_per_conn"),
]

ROW_ORDER = ["neper", "neper-tw", "neper-epoll", "neper-uring", "lg-epoll", "lg-epoll-1src", "lg-uring", "lg-epoll-rate"]


def coverage(n, k):
    """P(X_(k) <= median <= X_(n+1-k)) for n draws of a continuous variable (1-based k)."""
    return 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2 ** n


def median_interval(xs, level=0.95):
    s = sorted(x for x in xs if x is not None)
    n = len(s)
    if n == 0:
        return None
    mid = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    k = 1
    while k + 1 <= (n + 1) // 2 and coverage(n, k + 1) >= level:
        k += 1
    return {"mid": mid, "lo": s[k - 1], "hi": s[n - k], "n": n, "coverage": coverage(n, k) if n > 1 else 0.0}


def publish(staging, out_dir):
    publish_runs(staging, out_dir, MANIFEST, "crr_summary.py")


def port_walls(first, by_row, table):
    """Rows whose clients keep TIME_WAIT and ran at 95% or more of what their
    source addresses' quick ports allow: half the port range per reuse delay each."""
    try:
        lo, hi = (int(x) for x in first["sysctl"]["net.ipv4.ip_local_port_range"])
        delay_s = int((first["sysctl"].get("net.ipv4.tcp_tw_reuse_delay") or ["1000"])[0]) / 1000
    except (TypeError, ValueError, KeyError):
        return None
    budget = (hi - lo + 1) / 2 / delay_s
    rows = []
    for row, runs in by_row.items():
        r = next(iter(runs.values()))
        if r["client"] == "neper":
            continue  # neper's default close resets: no TIME_WAIT
        n = (r["tools"].get("loadgen") or {}).get("source_addrs") or 1
        rate = table[row]["conns_per_s"]["mid"]
        if rate >= 0.95 * budget * n:
            rows.append((row, rate, f"{n} source address" + ("es" if n > 1 else "")))
    return {"budget": budget, "rows": rows} if rows else None


def fmt(iv, digits=1, unit=""):
    if not iv:
        return "–"
    f = f"{{:,.{digits}f}}"
    if iv["n"] == 1:
        return f.format(iv["mid"]) + unit + " (1 run)"
    return f"{f.format(iv['mid'])}{unit} [{f.format(iv['lo'])}, {f.format(iv['hi'])}]"


def summary(out_dir):
    runs = []
    for rel in read_manifest(out_dir, MANIFEST):
        if rel.endswith(".json") and not rel.endswith(".loadgen.json"):
            runs.append(json.load(open(os.path.join(out_dir, rel))))
    if not runs:
        sys.exit(f"crr_summary.py: no runs recorded in {out_dir}/{MANIFEST}")
    measured = [r for r in runs if r["row"] != "calibrate"]
    ok = [r for r in measured if r["ok"]]
    bad = [r for r in measured if not r["ok"]]
    by_row = {}
    for r in ok:
        by_row.setdefault(r["row"], {})[r["round"]] = r
    rows = [x for x in ROW_ORDER if x in by_row] + sorted(set(by_row) - set(ROW_ORDER))

    figs = ["conns_per_s", "client_cpu_us_per_conn", "server_cpu_us_per_conn", "client_busy", "server_busy",
            "client_voluntary_switches_per_conn", "server_voluntary_switches_per_conn", "time_wait_at_end",
            "time_wait_overflows", "others_cores"]
    table = {}
    for row in rows:
        rs = list(by_row[row].values())
        t = {f: median_interval([r["figures"].get(f) for r in rs]) for f in figs}
        t["limits"] = {}
        for r in rs:
            t["limits"][r["figures"]["limit"]] = t["limits"].get(r["figures"]["limit"], 0) + 1
        t["what"] = rs[0]["what"]
        t["client_command"] = " ".join(rs[0]["client_command"])
        t["server_command"] = " ".join(rs[0]["server_command"])
        table[row] = t

    ratios = []
    for title, what, a, b, fig in RATIOS:
        if a not in by_row or b not in by_row:
            continue
        pairs = [(by_row[a][k], by_row[b][k]) for k in sorted(by_row[a]) if k in by_row[b]]
        vals = [x["figures"][fig] / y["figures"][fig] for x, y in pairs if x["figures"].get(fig) and y["figures"].get(fig)]
        iv = median_interval(vals)
        if not iv:
            continue
        ra, rb = table[a]["conns_per_s"]["mid"], table[b]["conns_per_s"]["mid"]
        verdict = ("below 1" if iv["hi"] < 1 else "above 1" if iv["lo"] > 1 else "interval includes 1") if iv["n"] > 1 else "one round"
        ratios.append({"title": title, "what": what, "a": a, "b": b, "figure": fig, "ratio": iv,
                       "per_round": vals, "rate_a": ra, "rate_b": rb, "verdict": verdict,
                       "rates_differ": abs(ra - rb) > 0.05 * max(ra, rb)})

    first = ok[0] if ok else measured[0]
    cal = [r for r in runs if r["row"] == "calibrate"]
    lines = []
    w = lines.append
    w("# loadgen and this project's servers against neper `tcp_crr`")
    w("")
    w("Generated by `scale/crr_summary.py` from the runs in `runs/` (written by "
      "`scale/crr-vs-neper.sh`); do not edit by hand.")
    w("")
    w("A connection per request/response (N = 1): connect, one "
      f"{first['size']} B request, its {first['size']} B response, close; {first['conns']} connections at once, "
      "TCP over loopback. Server on CPU 0, client on CPU 1. Every run measures the same window, "
      f"{first['measure_s']:g} s starting {first['warmup_s']:g} s after the client starts, from outside: each "
      "process's utime + stime (/proc/PID/stat) and the connections opened (TcpActiveOpens, "
      + ("in a network namespace made for the run, so no other traffic and no TIME_WAIT left by an earlier run"
         if first.get("netns") else "machine-wide: other TCP traffic on the machine would count too")
      + "). The rows ran in rounds, the order rotated by one each round.")
    w("")
    w(f"- commit `{first['commit']}`, kernel {first['kernel']}, CPU {first['cpu']} ({first['cores']} cores)")
    src = first.get("neper_source") or ""
    if src:
        kv = dict(l.split("=", 1) for l in src.splitlines() if "=" in l)
        w(f"- neper `{kv.get('commit', '?')}` (upstream {kv.get('upstream', '?')}, fetched from {kv.get('url', '?')}), "
          f"built by `scale/neper-build.sh` with {kv.get('compiler', '?')}")
    w(f"- sysctls in the run's namespace: " + ", ".join(f"{k} = {' '.join(v or ['?'])}" for k, v in first["sysctl"].items()))
    nrounds = max((r["round"] for r in measured), default=0)
    w(f"- {len(measured)} runs in {nrounds} rounds, {len(ok)} ok" + (f", {len(bad)} with problems (left out, listed below)" if bad else ""))
    rate = next((r["rate"] for r in ok if r.get("rate")), None)
    if rate:
        how = (f"the median rate of {len(cal)} calibration run(s) of neper's client against the epoll server before "
               "the rounds" if cal else "given as RATE")
        w(f"- `lg-epoll-rate`'s open-loop rate: {rate:,.0f} conversations/s, {how}")
    w("")
    w("## Rows")
    w("")
    widest = max((t["conns_per_s"] for t in table.values()), key=lambda iv: iv["n"], default=None)
    if widest and widest["n"] > 1:
        w("Medians over the rounds, with the order-statistic interval of the median in brackets (it covers the "
          f"median at {widest['coverage']:.2%} for {widest['n']} runs).")
    else:
        w("One round: single runs, no intervals.")
    w("`busy` is the share of its core the side used; `limit` counts the runs by the side at 0.9 or more. "
      "`others` is CPU time on cores 0 and 1 outside the two processes, in cores (the machine was quiet if it is near 0). "
      "In brackets after the TIME_WAIT count: the most closes of any run's window that left no TIME_WAIT socket because "
      "the kernel's table was full (0 unless a run outgrew `tcp_max_tw_buckets`).")
    w("")
    w("| row | connections/s | client CPU µs/conn | server CPU µs/conn | client busy | server busy | limit | "
      "client / server voluntary switches per conn | TIME_WAIT at the window's end (overflows) | others |")
    w("|---|--:|--:|--:|--:|--:|---|--:|--:|--:|")
    for row in rows:
        t = table[row]
        lim = ", ".join(f"{k} {v}" for k, v in sorted(t["limits"].items()))
        cs = t["client_voluntary_switches_per_conn"]
        ss = t["server_voluntary_switches_per_conn"]
        w(f"| `{row}` | {fmt(t['conns_per_s'], 0)} | {fmt(t['client_cpu_us_per_conn'])} | "
          f"{fmt(t['server_cpu_us_per_conn'])} | {fmt(t['client_busy'], 2)} | {fmt(t['server_busy'], 2)} | {lim} | "
          f"{cs['mid']:.2f} / {ss['mid']:.2f} | {t['time_wait_at_end']['mid']:,.0f} ({t['time_wait_overflows']['hi']:,.0f}) | "
          f"{t['others_cores']['hi']:.2f} max |")
    w("")
    for row in rows:
        t = table[row]
        w(f"- `{row}`: {t['what']}.  ")
        w(f"  client: `{t['client_command']}`  ")
        w(f"  server: `{t['server_command']}`")
    w("")
    w("## Ratios")
    w("")
    w("Each ratio pairs the two rows' runs of one round; median of the per-round ratios, order-statistic interval.")
    w("")
    w("| ratio | what | median [interval] | | rates (conn/s, medians) |")
    w("|---|---|--:|---|---|")
    for x in ratios:
        rates = f"{x['a']} {x['rate_a']:,.0f}, {x['b']} {x['rate_b']:,.0f}" + (" (**the rates differ**)" if x["rates_differ"] else "")
        w(f"| {x['title']} | {x['what']} (`{x['a']}` ÷ `{x['b']}`) | {fmt(x['ratio'], 2, '×')} | {x['verdict']} | {rates} |")
    w("")
    w("A closed-loop row runs as fast as its pair goes, so two closed-loop rows differ in rate as well as in "
      "CPU per connection; `lg-epoll-rate` is loadgen at neper's rate, the like-for-like pair for the client.")
    walls = port_walls(first, by_row, table)
    if walls:
        w("")
        w("At the port wall: a client that closes first keeps each connection's TIME_WAIT, and the kernel lets a "
          "connect take that port again only after the reuse delay; it tries the ports of one parity first. So one "
          "source address runs out of quick ports near half of `ip_local_port_range` per reuse delay "
          f"({walls['budget']:,.0f} connections/s here), and its connects get dearer there (loadgen's "
          "`docs/loadgen.md`, \"Source addresses and connect's port search\"). Rows at 95% of that or more per source "
          "address: " + ", ".join(f"`{r}` ({v:,.0f}/s from {n})" for r, v, n in walls["rows"]) + ".")
    if bad:
        w("")
        w("## Runs with problems (left out)")
        w("")
        for r in bad:
            w(f"- `{r['row']}` round {r['round']}: {'; '.join(r['problems'])[:400]}")
    doc = {"rows": table, "ratios": ratios, "runs_ok": len(ok), "runs_with_problems": len(bad),
           "commit": first["commit"], "kernel": first["kernel"], "cpu": first["cpu"]}
    write_text_atomic(os.path.join(out_dir, "summary.json"), json.dumps(doc, indent=1) + "\n")
    write_text_atomic(os.path.join(out_dir, "summary.md"), "\n".join(lines) + "\n")
    print(f"wrote {os.path.join(out_dir, 'summary.md')}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "publish":
        publish(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "summary":
        summary(sys.argv[2])
    else:
        sys.exit(__doc__)
