"""Shared by the scale/ scripts' summaries: the median with its
order-statistic interval, what a result file records about the machine,
writing JSON and text atomically, and publishing a run directory's files
without touching files the script did not write."""
import json
import math
import os
import subprocess
import sys
import tempfile


def median_interval(xs):
    """The median of the values that are not None, with [min, max] as its
    interval: for 5 to 8 runs that covers the median at >= 93.75%; `level` is
    the coverage of [min, max] for n runs. None for no values."""
    s = sorted(v for v in xs if v is not None)
    n = len(s)
    if n == 0:
        return None
    mid = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    return {"mid": mid, "lo": s[0], "hi": s[-1], "n": n, "level": 1 - 2 * 0.5 ** n}


def machine():
    """The commit, kernel, CPU model and core count, for a result file."""
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
    return {
        "commit": subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip(),
        "kernel": open("/proc/sys/kernel/osrelease").read().strip(),
        "cpu": cpu,
        "cores": os.cpu_count(),
    }


def write_atomic(path, doc, prefix):
    """Writes `doc` as JSON to `path` through a temporary file beside it."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=prefix)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, path)


def write_text_atomic(path, text):
    """Writes `text` to `path` through a temporary file beside it, with the
    mode a plain `open` would give (mkstemp's is 0600)."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix="." + os.path.basename(path) + ".")
    mask = os.umask(0)
    os.umask(mask)
    os.fchmod(fd, 0o666 & ~mask)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def read_manifest(out_dir, manifest):
    """The files (relative to `out_dir`) a script's manifest says it wrote."""
    try:
        return [l.strip() for l in open(os.path.join(out_dir, manifest)) if l.strip()]
    except FileNotFoundError:
        return []


def publish_runs(staging, out_dir, manifest, who):
    """Moves the files of `staging` into `out_dir/runs/`, replacing or
    removing only files that `manifest` lists (files this script wrote
    before); a file there it did not write stops everything, naming it, with
    the new runs left in `staging`. Then rewrites the manifest."""
    runs = os.path.join(out_dir, "runs")
    os.makedirs(runs, exist_ok=True)
    old = set(read_manifest(out_dir, manifest))
    new = sorted(f for f in os.listdir(staging) if not f.startswith("."))
    clash = [f for f in new if os.path.exists(os.path.join(runs, f)) and os.path.join("runs", f) not in old]
    if clash:
        sys.exit(f"{who}: {runs} holds files this script did not write ({', '.join(clash[:5])}); "
                 f"nothing moved, the new runs are in {staging}")
    for f in new:
        os.replace(os.path.join(staging, f), os.path.join(runs, f))
    for rel in old - {os.path.join("runs", f) for f in new}:
        p = os.path.join(out_dir, rel)
        if rel.startswith("runs/") and os.path.isfile(p):
            os.unlink(p)
    write_text_atomic(os.path.join(out_dir, manifest), "".join(os.path.join("runs", f) + "\n" for f in new))


def clopper_pearson(k, n, level=0.95):
    """The exact (Clopper–Pearson) interval of a binomial proportion k/n."""
    a = (1 - level) / 2

    def tail_at_least(p):  # P(X >= k)
        return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))

    def tail_at_most(p):  # P(X <= k)
        return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(0, k + 1))

    def solve(f, increasing):
        lo, hi = 0.0, 1.0
        for _ in range(100):
            mid = (lo + hi) / 2
            if (f(mid) < a) == increasing:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    lower = 0.0 if k == 0 else solve(tail_at_least, True)
    upper = 1.0 if k == n else solve(tail_at_most, False)
    return {"k": k, "n": n, "rate": k / n if n else None, "lo": lower, "hi": upper, "level": level}
