#!/usr/bin/env python3
"""The summary of scale/noise-sources.sh (issue 27, item 3), generated from
its files and nothing else:

    python3 scale/noise_summary.py OUT_DIR

Reads OUT_DIR/calls/index.json (every `compare` call: variant, round, wall
time, command) and each call's compare.json and runs/*.json, and writes
OUT_DIR/summary.md and OUT_DIR/summary.json:

- per variant (measured duration, warm-up) and point (closed loop, matched
  load): each label's per-run noise of server CPU per message, as the SD of
  its natural log (about the coefficient of variation), within calls (the
  noise one comparison sees: its matched-load rate is fixed) and across the
  whole study; the SD of the log of the paired ratio epoll@twin / epoll
  (pairs of one repetition of one call); each SD with a 95% chi-square
  interval (normal runs assumed); how much
  pairing cancels (the paired SD over sqrt(2) x the labels' SD: 1 = none);
  the wall time per pair;
- per point, pooled over variants and labels: how each run's deviation from
  its call's mean goes with the candidate sources measured in the same
  window (steal and interrupt time from /proc/stat, other processes' CPU,
  context switches, throughput): Pearson r of the deviations with 95%
  Fisher interval, and the SD before and after removing the linear fit; the
  same for the paired ratio against the difference of the source between
  the two runs; and between calls, the call's mean deviation against its
  pause census (measured before the call) and its matched-load rate;
- "what helps": each variant's paired-ratio SD against the default's, with
  its interval, and noise x sqrt(wall time per pair) against the default's
  (the fair comparison of longer runs with more runs: the SD of a mean of n
  pairs falls as 1/sqrt(n)); and the sources whose fit lowers the SD.

Exits 1 if no call is found, 0 otherwise.
"""
import json
import math
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from summary import machine, write_atomic  # noqa: E402

REF, TWIN = "epoll", "epoll@twin"
POINTS = (("peak", "closed loop"), ("matched_load", "matched load"))
# analyse::stats::REACHED_RATE_FRACTION: an open-loop run below this share
# of its offered rate is left out of the comparison, and so out of here.
REACHED_RATE_FRACTION = 0.97
Z95 = 1.959964

# Per-run candidate sources: (key, words, function of the run).
SOURCES = (
    ("steal_server_cpu", "steal on the server's CPU (share of the window)", lambda r: r["steal_server"]),
    ("steal_machine", "steal, all CPUs (cores)", lambda r: r["steal_machine"]),
    ("irq_server_cpu", "hard + soft interrupts on the server's CPU (share)", lambda r: r["irq_server"]),
    ("others_cores", "other processes' CPU (cores)", lambda r: r["others_cores"]),
    ("involuntary_per_msg", "involuntary context switches per message", lambda r: r["invol_per_msg"]),
    ("voluntary_per_msg", "voluntary context switches per message", lambda r: r["vol_per_msg"]),
    ("ln_msgs_per_s", "throughput (ln msgs/s)", lambda r: math.log(r["msgs_per_s"])),
)


def cpu_list(text):
    """The CPUs of a list like `0`, `0,2` or `0-3`."""
    cpus = set()
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def per_window(us, window_s):
    return None if us is None or window_s <= 0 else us / 1e6 / window_s


def load(out_dir):
    """Every counted run of every call, with its figures and sources."""
    calls_dir = os.path.join(out_dir, "calls")
    with open(os.path.join(calls_dir, "index.json")) as f:
        calls = json.load(f)
    runs, manifests, left_out = [], {}, []
    for call in calls:
        d = os.path.join(calls_dir, call["call"])
        with open(os.path.join(d, "compare.json")) as f:
            m = json.load(f)
        manifests[call["call"]] = m
        server_cpus = cpu_list(m["server_cpus"])
        stalls = [s for s in m.get("platform_stalls", []) if s["cpu"] in server_cpus]
        stalled = sum(s["stalled_fraction"] for s in stalls) / len(stalls) if stalls else None
        for rec in m["runs"]:
            kind = rec["spec"]["purpose"]["kind"]
            if kind not in dict(POINTS):
                continue
            if rec["outcome"] != "ok" or rec.get("invalid"):
                left_out.append(f"{call['call']}/{rec['result_file']}: {rec.get('invalid') or 'failed'}")
                continue
            cost = rec.get("server_cost") or {}
            with open(os.path.join(d, "runs", rec["result_file"])) as f:
                res = json.load(f)
            rate = res["throughput"]["msgs_per_s"]
            offered = rec["spec"].get("rate")
            if offered and rate < REACHED_RATE_FRACTION * offered:
                left_out.append(f"{call['call']}/{rec['result_file']}: reached {rate:.0f} of {offered:.0f} msgs/s")
                continue
            window = cost.get("window_s") or 0.0
            msgs = rate * window
            if not cost.get("cpu_us") or msgs < 1:
                left_out.append(f"{call['call']}/{rec['result_file']}: no server CPU or messages in the window")
                continue
            stat = rec.get("cpu_stat") or {}
            srv, mach = stat.get("server_cpus") or {}, stat.get("machine") or {}
            others = rec.get("other_processes") or {}
            invol, vol = cost.get("involuntary_ctxt_switches"), cost.get("voluntary_ctxt_switches")
            irq = None if not srv else srv["irq_us"] + srv["softirq_us"]
            runs.append({
                "call": call["call"],
                "variant": call["variant"],
                "point": kind,
                "label": rec["spec"]["label"],
                "rep": rec["spec"]["repetition"],
                "x": math.log(cost["cpu_us"] / msgs),
                "msgs_per_s": rate,
                "offered": offered,
                "wall_s": rec["wall_s"],
                "steal_server": per_window(srv.get("steal_us"), window),
                "steal_machine": per_window(mach.get("steal_us"), window),
                "irq_server": per_window(irq, window),
                "others_cores": others.get("cores"),
                "invol_per_msg": None if invol is None else invol / msgs,
                "vol_per_msg": None if vol is None else vol / msgs,
                "stalled": stalled,
                "disturbed": (others.get("cores") or 0) > m["method"].get("disturbed_cores", 0.05),
            })
    return calls, manifests, runs, left_out


def mean(xs):
    return sum(xs) / len(xs)


def groups_of(items, key):
    out = {}
    for it in items:
        out.setdefault(key(it), []).append(it)
    return out


def pooled_sd(groups):
    """The SD pooled within groups (each around its own mean) and its degrees of freedom."""
    ss, df = 0.0, 0
    for g in groups:
        if len(g) >= 2:
            m = mean(g)
            ss += sum((v - m) ** 2 for v in g)
            df += len(g) - 1
    return (math.sqrt(ss / df), df) if df else (None, 0)


def chi2_cdf(x, k):
    """P(X <= x) for chi-square with k degrees of freedom: the regularized
    lower incomplete gamma P(k/2, x/2) by its series (bounded: 5000 terms)."""
    if x <= 0:
        return 0.0
    s, h = k / 2, x / 2
    term = total = 1 / s
    for n in range(1, 5000):
        term *= h / (s + n)
        total += term
        if term < total * 1e-15:
            break
    return min(1.0, math.exp(s * math.log(h) - h - math.lgamma(s)) * total)


def chi2_quantile(p, k):
    """The p quantile of chi-square with k degrees of freedom, by bisection (200 steps)."""
    lo, hi = 0.0, k + 50 * math.sqrt(2 * k) + 50
    for _ in range(200):
        mid = (lo + hi) / 2
        if chi2_cdf(mid, k) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def sd_stat(sd, df):
    """An SD with its 95% chi-square interval."""
    if sd is None or df < 1:
        return {"sd": sd, "df": df, "lo": None, "hi": None}
    return {
        "sd": sd,
        "df": df,
        "lo": sd * math.sqrt(df / chi2_quantile(0.975, df)),
        "hi": sd * math.sqrt(df / chi2_quantile(0.025, df)),
    }


def sd_ratio(a, b):
    """a's SD over b's with a 95% interval (ln of an SD has variance about 1 / (2 df))."""
    if not a["sd"] or not b["sd"] or a["df"] < 1 or b["df"] < 1:
        return None
    r = a["sd"] / b["sd"]
    half = Z95 * math.sqrt(1 / (2 * a["df"]) + 1 / (2 * b["df"]))
    return {"ratio": r, "lo": r * math.exp(-half), "hi": r * math.exp(half)}


def plain_sd(xs):
    return sd_stat(*pooled_sd([xs])) if len(xs) >= 2 else sd_stat(None, 0)


def pairs_of(runs):
    """ln(twin / ref) of every call's repetition where both ran: (call, rep, value, ref run, twin run)."""
    by = groups_of(runs, lambda r: (r["call"], r["rep"]))
    out = []
    for (call, rep), rs in sorted(by.items()):
        lab = {r["label"]: r for r in rs}
        if REF in lab and TWIN in lab:
            out.append((call, rep, lab[TWIN]["x"] - lab[REF]["x"], lab[REF], lab[TWIN]))
    return out


def association(items):
    """items: (group, deviation, source value). Both are centred within their
    group, then: Pearson r with a 95% Fisher interval, and the pooled SD of
    the deviations before and after removing the linear fit."""
    items = [it for it in items if it[2] is not None]
    by = groups_of(items, lambda it: it[0])
    dev, src = [], []
    for g in by.values():
        if len(g) < 2:
            continue
        md, ms = mean([it[1] for it in g]), mean([it[2] for it in g])
        dev += [it[1] - md for it in g]
        src += [it[2] - ms for it in g]
    df = len(dev) - sum(1 for g in by.values() if len(g) >= 2)
    out = {"n": len(dev), "df": df, "r": None, "lo": None, "hi": None, "sd_before": None, "sd_after": None}
    if df < 3:
        return out
    sdd, sss = sum(d * d for d in dev), sum(s * s for s in src)
    out["sd_before"] = math.sqrt(sdd / df)
    scale = max([abs(it[2]) for it in items] + [1e-300])
    if sdd <= 0 or max(abs(v) for v in src) <= 1e-9 * scale:
        out["note"] = "the source did not vary within calls"
        return out
    sds = sum(d * s for d, s in zip(dev, src))
    r = sds / math.sqrt(sdd * sss)
    out["r"] = r
    if len(dev) > 3 and abs(r) < 1:
        z, half = math.atanh(r), Z95 / math.sqrt(len(dev) - 3)
        out["lo"], out["hi"] = math.tanh(z - half), math.tanh(z + half)
    out["sd_after"] = math.sqrt(max(0.0, sdd - sds * sds / sss) / (df - 1))
    return out


def variant_name(call):
    return f"{call['duration']} measured, {call['warmup']} warm-up"


def analyse(calls, manifests, runs):
    variants = sorted({c["variant"] for c in calls})
    names = {c["variant"]: variant_name(c) for c in calls}
    rows = []
    for v in variants:
        vcalls = [c for c in calls if c["variant"] == v]
        for kind, words in POINTS:
            rs = [r for r in runs if r["variant"] == v and r["point"] == kind]
            row = {"variant": v, "variant_name": names[v], "point": words, "labels": {}}
            for label in (REF, TWIN):
                lr = [r for r in rs if r["label"] == label]
                within = sd_stat(*pooled_sd([[r["x"] for r in g] for g in groups_of(lr, lambda r: r["call"]).values()]))
                row["labels"][label] = {"runs": len(lr), "within_calls": within, "across": plain_sd([r["x"] for r in lr])}
            pairs = pairs_of(rs)
            quiet = [p for p in pairs if not (p[3]["disturbed"] or p[4]["disturbed"] or (p[3]["steal_server"] or 0) > 0 or (p[4]["steal_server"] or 0) > 0)]
            row["pairs"] = len(pairs)
            row["paired_within_calls"] = sd_stat(*pooled_sd([[p[2] for p in g] for g in groups_of(pairs, lambda p: p[0]).values()]))
            row["paired_across"] = plain_sd([p[2] for p in pairs])
            row["paired_quiet_within_calls"] = sd_stat(*pooled_sd([[p[2] for p in g] for g in groups_of(quiet, lambda p: p[0]).values()]))
            row["quiet_pairs"] = len(quiet)
            row["ratio_geomean"] = math.exp(mean([p[2] for p in pairs])) if pairs else None
            label_sds = [row["labels"][lab]["within_calls"]["sd"] for lab in (REF, TWIN)]
            if row["paired_within_calls"]["sd"] and all(label_sds):
                row["pairing_factor"] = row["paired_within_calls"]["sd"] / (math.sqrt(2) * math.sqrt(mean([s * s for s in label_sds])))
            else:
                row["pairing_factor"] = None
            row["disturbed_runs"] = sum(r["disturbed"] for r in rs)
            row["runs_with_steal"] = sum(1 for r in rs if (r["steal_server"] or 0) > 0)
            row["wall_s_per_run"] = mean([r["wall_s"] for r in rs]) if rs else None
            row["wall_s_per_pair"] = 2 * row["wall_s_per_run"] if rs else None
            row["call_wall_s"] = sum(c["wall_s"] for c in vcalls)
            rows.append(row)

    assoc = {}
    for kind, words in POINTS:
        rs = [r for r in runs if r["point"] == kind]
        pairs = pairs_of(rs)
        per = {}
        for key, what, f in SOURCES:
            def val(r, f=f):
                try:
                    return f(r)
                except (TypeError, ValueError):
                    return None
            run_items = [((r["call"], r["label"]), r["x"], val(r)) for r in rs]
            pair_items = []
            for call, _rep, d, a, b in pairs:
                va, vb = val(a), val(b)
                pair_items.append((call, d, None if va is None or vb is None else vb - va))
            per[key] = {"what": what, "runs": association(run_items), "pairs": association(pair_items)}
        # Between calls: each call's mean deviation from its variant's mean (over labels).
        call_items = []
        for (v, call), g in groups_of(rs, lambda r: (r["variant"], r["call"])).items():
            call_items.append((v, call, mean([r["x"] for r in g]), g[0]["stalled"], math.log(g[0]["offered"]) if g[0]["offered"] else None))
        between = {
            "pauses_before_call": association([(v, m, s) for v, _c, m, s, _o in call_items]),
        }
        if kind == "matched_load":
            between["ln_offered_rate"] = association([(v, m, o) for v, _c, m, _s, o in call_items])
        assoc[words] = {"per_source": per, "between_calls": between}
    return rows, assoc


def pct(v, digits=1):
    return "—" if v is None else f"{100 * v:.{digits}f}%"


def interval(s):
    if s["sd"] is None:
        return "—"
    if s["lo"] is None:
        return f"{pct(s['sd'])} (df {s['df']})"
    return f"{pct(s['sd'])} [{pct(s['lo'])}, {pct(s['hi'])}] (df {s['df']})"


def num(v, fmt=".2f"):
    return "—" if v is None else format(v, fmt)


def what_helps(rows, assoc):
    lines = []
    for _kind, words in POINTS:
        prow = [r for r in rows if r["point"] == words]
        base = next((r for r in prow if r["variant"] == min(x["variant"] for x in prow)), None) if prow else None
        # Within calls when calls hold more than one pair (BLOCK > 1), else across them.
        key = "paired_within_calls" if all(r["paired_within_calls"]["df"] >= 1 for r in prow) else "paired_across"
        if not base or not base[key]["sd"]:
            lines.append(f"- {words}: too few pairs to say.")
            continue
        for r in prow:
            if r is base:
                continue
            ratio = sd_ratio(r[key], base[key])
            if not ratio or not r["wall_s_per_pair"]:
                lines.append(f"- {words}, {r['variant_name']}: too few pairs to say.")
                continue
            t = r["wall_s_per_pair"] / base["wall_s_per_pair"]
            m, m_lo, m_hi = (ratio[k] * math.sqrt(t) for k in ("ratio", "lo", "hi"))
            if m_hi < 1:
                verdict = "it helps"
            elif m_lo > 1:
                verdict = "it costs more noise per unit of wall time than more default runs"
            else:
                verdict = "no difference is shown either way"
            lines.append(
                f"- {words}, {r['variant_name']} against {base['variant_name']}: paired-ratio SD "
                f"({'within' if key == 'paired_within_calls' else 'across'} calls) "
                f"x{ratio['ratio']:.2f} [{ratio['lo']:.2f}, {ratio['hi']:.2f}] for x{t:.2f} the wall time "
                f"per pair, so noise x sqrt(time) x{m:.2f} [{m_lo:.2f}, {m_hi:.2f}]: **{verdict}**."
            )
        found = []
        for key, a in assoc[words]["per_source"].items():
            p = a["pairs"]
            if p["r"] is not None and p["lo"] is not None and (p["lo"] > 0 or p["hi"] < 0):
                found.append(f"{a['what']} (paired r {p['r']:.2f}: SD {pct(p['sd_before'])} -> {pct(p['sd_after'])} after the fit)")
        if found:
            lines.append(f"- {words}, sources beyond chance: " + "; ".join(found) + ".")
        else:
            lines.append(f"- {words}: no candidate source goes with the paired-ratio deviations beyond chance (every r's 95% interval includes 0, or the source did not vary).")
    return lines


def markdown(doc):
    md = ["# Where the noise of server CPU per message comes from", ""]
    md.append("Generated by `scale/noise_summary.py` from the files in `calls/` (scale/noise-sources.sh); "
              "every figure here is computed from them. SDs are of the natural log of server CPU per message "
              "(about the coefficient of variation); 95% intervals are chi-square (normal runs assumed), "
              "df = degrees of freedom. \"Within calls\" is the noise one comparison sees (its matched-load "
              "rate is fixed); \"across\" also holds the differences between calls.")
    md.append("")
    mch = doc["machine"]
    md.append(f"Runs made at commit {', '.join(doc['runs_commits'])} (summary at {mch['commit']}), kernel {mch['kernel']}, CPU {mch['cpu']} ({mch['cores']} cores); "
              f"server on CPU {doc['server_cpus']}, loadgen on CPU {doc['loadgen_cpus']}; "
              f"{doc['calls']} calls, {doc['runs']} runs counted ({len(doc['left_out'])} left out: failed, invalid or short of the offered rate; listed in summary.json), study wall time {doc['study_wall_s'] / 60:.1f} min.")
    md += ["", "## Per-run noise and the paired ratio", ""]
    md.append("| variant | point | epoll, within calls | epoll@twin, within calls | epoll, across | ln(twin/epoll), within calls | across | quiet pairs only | pairing factor | pairs | disturbed runs | runs with steal | wall s per run |")
    md.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in doc["rows"]:
        md.append(
            f"| {r['variant_name']} | {r['point']} | {interval(r['labels'][REF]['within_calls'])} | "
            f"{interval(r['labels'][TWIN]['within_calls'])} | {pct(r['labels'][REF]['across']['sd'])} | "
            f"{interval(r['paired_within_calls'])} | {pct(r['paired_across']['sd'])} | "
            f"{pct(r['paired_quiet_within_calls']['sd'])} ({r['quiet_pairs']}) | {num(r['pairing_factor'])} | {r['pairs']} | "
            f"{r['disturbed_runs']} | {r['runs_with_steal']} | {num(r['wall_s_per_run'])} |"
        )
    md += ["", "Pairing factor: the paired-ratio SD over sqrt(2) x the labels' SD; 1 means pairing cancels "
           "nothing, below 1 that the two runs of a pair share part of their noise. Quiet pairs: neither run "
           "disturbed (other processes above the comparison's threshold) nor with steal on the server's CPU.", ""]
    for words, a in doc["associations"].items():
        md += [f"## Sources at {words}", ""]
        md.append("Deviations from the call's mean (per run: of each label; per pair: of the log ratio, against "
                  "the source's difference twin - epoll), pooled over variants; r with 95% Fisher interval; "
                  "the SD before and after removing the linear fit.")
        md += ["", "| source | runs: n | r [95%] | SD before -> after | pairs: n | r [95%] | SD before -> after |", "|---|---|---|---|---|---|---|"]
        for _key, s in a["per_source"].items():
            cells = []
            for side in ("runs", "pairs"):
                x = s[side]
                rr = "—" if x["r"] is None else (f"{x['r']:.2f}" + ("" if x["lo"] is None else f" [{x['lo']:.2f}, {x['hi']:.2f}]"))
                if x.get("note"):
                    rr = x["note"]
                cells += [str(x["n"]), rr, f"{pct(x['sd_before'])} -> {pct(x['sd_after'])}"]
            md.append(f"| {s['what']} | " + " | ".join(cells) + " |")
        md += ["", "Between calls (each call's mean against the others' of its variant):", ""]
        for key, x in a["between_calls"].items():
            what = {"pauses_before_call": "the pause census on the server's CPU just before the call (stalled share)",
                    "ln_offered_rate": "the call's matched-load rate (ln)"}[key]
            rr = "—" if x["r"] is None else f"r {x['r']:.2f}" + ("" if x["lo"] is None else f" [{x['lo']:.2f}, {x['hi']:.2f}]")
            md.append(f"- {what}: {x.get('note') or rr}, {x['n']} calls.")
        md.append("")
    md += ["## What helps", ""]
    md.append("Against the first variant (the default), per unit of wall time: noise x sqrt(wall time per pair), "
              "since the SD of a mean of n pairs falls as 1/sqrt(n). Intervals 95%; \"helps\" only when the "
              "whole interval is below 1.")
    md += [""] + doc["what_helps"] + ["", "## Commands", ""]
    if doc.get("study"):
        md += [f"The study: `{doc['study']['command']}`; each call:", ""]
    md += [f"- `{c['command']}` ({c['wall_s']:.0f} s)" for c in doc["commands"]]
    return "\n".join(md) + "\n"


def write_text_atomic(path, text, prefix):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=prefix)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def main():
    if len(sys.argv) != 2:
        print("usage: noise_summary.py OUT_DIR", file=sys.stderr)
        sys.exit(2)
    out_dir = sys.argv[1]
    if not os.path.exists(os.path.join(out_dir, "calls", "index.json")):
        print(f"OUT_DIR: no calls/index.json in {out_dir}", file=sys.stderr)
        sys.exit(1)
    calls, manifests, runs, left_out = load(out_dir)
    study_path = os.path.join(out_dir, "calls", "study.json")
    study = json.load(open(study_path)) if os.path.exists(study_path) else None
    if not calls:
        print(f"no calls in {out_dir}/calls/index.json", file=sys.stderr)
        sys.exit(1)
    rows, assoc = analyse(calls, manifests, runs)
    first = manifests[calls[0]["call"]]
    doc = {
        "what": "per-run noise of server CPU per message (A/A: epoll, epoll@twin; tcp, 100 connections, 128 B) "
                "by run length and warm-up, and its association with candidate sources (issue 27)",
        "machine": machine(),
        "runs_commits": sorted({m.get("git_commit", "?") for m in manifests.values()}),
        "server_cpus": first["server_cpus"],
        "loadgen_cpus": first["loadgen_cpus"],
        "study": study,
        "calls": len(calls),
        "runs": len(runs),
        "left_out": left_out,
        "study_wall_s": sum(c["wall_s"] for c in calls),
        "rows": rows,
        "associations": assoc,
        "commands": [{"call": c["call"], "command": c["command"], "wall_s": c["wall_s"]} for c in calls],
    }
    doc["what_helps"] = what_helps(rows, assoc)
    write_atomic(os.path.join(out_dir, "summary.json"), doc, ".summary")
    os.chmod(os.path.join(out_dir, "summary.json"), 0o644)
    write_text_atomic(os.path.join(out_dir, "summary.md"), markdown(doc), ".summary-md")
    print(f"noise: {len(runs)} runs of {len(calls)} calls; {out_dir}/summary.md")
    for line in doc["what_helps"]:
        print(line)


if __name__ == "__main__":
    main()
