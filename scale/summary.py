"""Shared by the scale/ scripts' summaries: the median with its
order-statistic interval, what a result file records about the machine, and
writing the JSON atomically."""
import json
import os
import subprocess
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
