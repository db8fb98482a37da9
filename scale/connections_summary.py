#!/usr/bin/env python3
"""The summary of scale/connections.sh's points (issue 25), generated from
their files and nothing else:

    python3 scale/connections_summary.py OUT_DIR [--backends "epoll uring"]
                                                 [--counts "19000 50000 100000"]

Reads OUT_DIR/memory-BACKEND-cCONNS.json (scale/memory.sh, which points at
loadgen's run-BACKEND-cCONNS.json) and writes OUT_DIR/connections-summary.md
and OUT_DIR/connections-summary.json:

- per backend and connection count: connections held (up when the measured
  phase began and carrying load at its end), echoes checked in the measured
  phase and echoed by the server over the whole run, loadgen's errors of
  every kind (measured and warm-up), the server's summary line, the connect
  ramp (first connect to all up), throughput and p99, and whether the point
  is clean (all of that, and loadgen's verdict);
- per backend, the MARGINAL memory per connection from the lowest count to
  the highest: server RSS as ((loaded - idle) at the highest count - the
  same at the lowest) / (difference in connections), against issue 25's
  targets (at most 200 B for epoll, 400 B for uring), and the kernel's
  unreclaimable slab (SUnreclaim) and TCP buffer pages (sockstat mem) the
  same way. Kernel figures are machine-wide and on loopback cover both ends
  of each connection; per server socket is half.

Exits 1 if a point is missing or not clean, else 0.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from summary import write_atomic  # noqa: E402

# Issue 25: server RSS growth per connection from 19,000 to 100,000.
RSS_TARGET_B = {"epoll": 200, "uring": 400}


def load(out_dir, backend, conns):
    path = os.path.join(out_dir, f"memory-{backend}-c{conns}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        doc = json.load(f)
    doc["_file"] = os.path.basename(path)
    return doc


def loadgen_errors(doc):
    """Every error loadgen counted, measured and warm-up, by kind."""
    total = {}
    for key in ("loadgen_errors", "loadgen_warmup_errors"):
        for kind, n in (doc.get(key) or {}).items():
            total[kind] = total.get(kind, 0) + (n or 0)
    return total


def server_clean(doc):
    s = doc.get("server_summary") or {}
    return (
        s.get("accepted") == doc["conns"]
        and s.get("errors") == 0
        and s.get("closed_with_pending") == 0
        and s.get("ring_errors", 0) == 0
    )


def point(doc):
    n = doc["conns"]
    errors = loadgen_errors(doc)
    s = doc.get("server_summary") or {}
    row = {
        "backend": doc["backend"],
        "conns": n,
        "file": doc["_file"],
        "conns_up": doc.get("conns_up"),
        "conns_held": doc.get("conns_carried_load"),
        "echoes_checked_measured": doc.get("loadgen_messages"),
        "echoes_server_whole_run": s.get("messages"),
        "loadgen_errors": errors,
        "loadgen_errors_total": sum(errors.values()),
        "loadgen_failures": doc.get("loadgen_failures") or [],
        "server_summary_line": doc.get("server_summary_line"),
        "connect_ramp_s": doc.get("connect_ramp_s"),
        "tcp_time_wait_before": doc.get("tcp_time_wait_before"),
        "msgs_per_s": doc.get("loadgen_msgs_per_s"),
        "p99_ms": None if doc.get("loadgen_latency_p99_us") is None else doc["loadgen_latency_p99_us"] / 1000,
        "server_rss_bytes_per_conn": doc.get("server_rss_bytes_per_conn"),
        "sunreclaim_bytes_per_conn": doc.get("sunreclaim_bytes_per_conn"),
        "sockstat_mem_bytes_per_conn": doc.get("sockstat_mem_bytes_per_conn"),
        "server_command": doc.get("server_command"),
        "loadgen_command": doc.get("loadgen_command"),
        "script": doc.get("script"),
        "commit": doc.get("commit"),
    }
    row["clean"] = (
        doc.get("loadgen_exit_code") == 0
        and not row["loadgen_failures"]
        and row["loadgen_errors_total"] == 0
        and row["conns_up"] == n
        and row["conns_held"] == n
        and server_clean(doc)
    )
    return row


def marginal(lo, hi):
    """Memory per connection from point `lo` to point `hi` (their docs)."""
    dn = hi["conns"] - lo["conns"]
    page = os.sysconf("SC_PAGE_SIZE")
    rss = lambda d: d["server_rss_loaded_kb"] - d["server_rss_idle_kb"]  # noqa: E731
    rss_b = (rss(hi) - rss(lo)) * 1024 / dn
    sunr_b = (hi["sunreclaim_delta_kb"] - lo["sunreclaim_delta_kb"]) * 1024 / dn
    mem_b = (hi["sockstat_tcp_mem_pages_delta"] - lo["sockstat_tcp_mem_pages_delta"]) * page / dn
    target = RSS_TARGET_B.get(hi["backend"])
    return {
        "backend": hi["backend"],
        "from_conns": lo["conns"],
        "to_conns": hi["conns"],
        "server_rss_kb": [rss(lo), rss(hi)],
        "server_rss_bytes_per_conn": round(rss_b, 1),
        "server_rss_target_bytes": target,
        "server_rss_within_target": None if target is None else rss_b <= target,
        "sunreclaim_delta_kb": [lo["sunreclaim_delta_kb"], hi["sunreclaim_delta_kb"]],
        "sunreclaim_bytes_per_conn_both_ends": round(sunr_b, 1),
        "sunreclaim_bytes_per_server_socket": round(sunr_b / 2, 1),
        "sockstat_tcp_mem_pages_delta": [lo["sockstat_tcp_mem_pages_delta"], hi["sockstat_tcp_mem_pages_delta"]],
        "sockstat_mem_bytes_per_conn_both_ends": round(mem_b, 1),
        "tcp_slab_bytes_per_socket": hi.get("tcp_slab_bytes_per_socket"),
        "both_points_clean": point(lo)["clean"] and point(hi)["clean"],
    }


def fmt(v, spec=",.0f", none="–"):
    return none if v is None else format(v, spec)


def markdown(points, margins, missing, out_dir):
    lines = [
        "# Connections past one descriptor table: the points",
        "",
        "Generated by `scale/connections_summary.py` from the `memory-*.json` files beside",
        "it (made by `scale/connections.sh`, one `scale/memory.sh` run per point); every",
        "figure below is read from those files, each of which has its exact commands.",
        "",
    ]
    first = points[0] if points else None
    if first:
        lines += [
            f"Commit {first['commit']}. Per point, e.g. `{first['script']}`:",
            "",
            f"- server: `{first['server_command']}`",
            f"- loadgen: `{first['loadgen_command']}`",
            "",
        ]
    lines += [
        "| backend | conns | held | echoes checked (measured) | echoed by the server (run) | msgs/s | p99 | "
        "loadgen errors (all kinds, warm-up too) | server summary | connect ramp | clean | TIME_WAIT at start | file |",
        "|---|--:|--:|--:|--:|--:|--:|--:|---|--:|---|--:|---|",
    ]
    for p in points:
        s = p["server_summary_line"] or "(none)"
        s = " ".join(kv for kv in s.split() if kv.split("=")[0] in
                     ("accepted", "errors", "closed_with_pending", "ring_errors"))
        lines.append(
            f"| {p['backend']} | {p['conns']:,} | {fmt(p['conns_held'])} | {fmt(p['echoes_checked_measured'])} "
            f"| {fmt(p['echoes_server_whole_run'])} | {fmt(p['msgs_per_s'])} | {fmt(p['p99_ms'], ',.0f')} ms "
            f"| {p['loadgen_errors_total']:,} | `{s}` | {fmt(p['connect_ramp_s'], '.1f')} s "
            f"| {'yes' if p['clean'] else 'NO'} | {fmt(p['tcp_time_wait_before'])} | `{p['file']}` |"
        )
    for p in points:
        if p["loadgen_failures"]:
            lines.append(f"\n{p['backend']} at {p['conns']:,}: loadgen FAILED: " + "; ".join(p["loadgen_failures"]))
    if missing:
        lines.append("\nMissing points (no file): " + ", ".join(f"{b} at {n:,}" for b, n in missing))
    lines += [
        "",
        "## Memory per connection, marginal",
        "",
        "From the lowest count to the highest, so fixed costs (rings and their buffers,",
        "threads, listeners) drop out: server RSS is (loaded − idle) at each point;",
        "kernel figures are machine-wide deltas from before the server started to the",
        "middle of the measured phase, and on loopback cover both ends of each connection;",
        "TIME_WAIT sockets left at a point's start (the table above) expire during it and",
        "lower its kernel delta by their share (a few hundred bytes each).",
        "",
        "| backend | server RSS / conn | target | `SUnreclaim` / conn (both ends) | per server socket "
        "| `sockstat` TCP mem / conn (both ends) | TCP slab object | both points clean |",
        "|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    for m in margins:
        dn = m["to_conns"] - m["from_conns"]
        rss = (f"({m['server_rss_kb'][1]:,} − {m['server_rss_kb'][0]:,}) kB / {dn:,} = "
               f"**{m['server_rss_bytes_per_conn']:,.0f} B**")
        sunr = (f"({m['sunreclaim_delta_kb'][1]:,} − {m['sunreclaim_delta_kb'][0]:,}) kB / {dn:,} = "
                f"{m['sunreclaim_bytes_per_conn_both_ends']:,.0f} B")
        target = "–" if m["server_rss_target_bytes"] is None else (
            f"≤ {m['server_rss_target_bytes']} B: {'met' if m['server_rss_within_target'] else 'NOT met'}")
        lines.append(
            f"| {m['backend']} | {rss} | {target} | {sunr} | {m['sunreclaim_bytes_per_server_socket']:,.0f} B "
            f"| {m['sockstat_mem_bytes_per_conn_both_ends']:,.0f} B | {fmt(m['tcp_slab_bytes_per_socket'])} B "
            f"| {'yes' if m['both_points_clean'] else 'NO'} |"
        )
    if not margins:
        lines.append("| (needs two counts of a backend) | | | | | | | |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--backends", default="epoll uring")
    ap.add_argument("--counts", default="19000 50000 100000")
    a = ap.parse_args()
    backends = a.backends.split()
    counts = sorted(int(c) for c in a.counts.split())
    points, margins, missing = [], [], []
    for b in backends:
        docs = [(n, load(a.out_dir, b, n)) for n in counts]
        missing += [(b, n) for n, d in docs if d is None]
        have = [d for _, d in docs if d is not None]
        points += [point(d) for d in have]
        if len(have) >= 2:
            margins.append(marginal(have[0], have[-1]))
    md = markdown(points, margins, missing, a.out_dir)
    with open(os.path.join(a.out_dir, "connections-summary.md"), "w") as f:
        f.write(md)
    write_atomic(os.path.join(a.out_dir, "connections-summary.json"),
                 {"points": points, "marginal": margins, "missing": [list(m) for m in missing]},
                 ".connections-summary.")
    print(md, end="")
    ok = not missing and all(p["clean"] for p in points)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
