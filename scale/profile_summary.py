"""Summarises scale/profile-conversations.sh: where each server's CPU per
connection goes, by bucket of kernel and user code, and where uring's
differs from epoll's.

    python3 scale/profile_summary.py RUNS_DIR OUT_DIR COMMAND

RUNS_DIR holds, per run NAME (`epoll-r1`, `uring-r2`, ...): NAME.json (the
loadgen result, with the server's CPU from --server-pid), NAME.perf.txt
(`perf report --stdio -n --no-children --sort dso,symbol -g none`) and
NAME.syscalls.csv (`perf stat -x,`), which may be missing. Writes
OUT_DIR/summary.md and OUT_DIR/summary.json atomically, and copies RUNS_DIR
into OUT_DIR/runs/. Every figure is computed here from those files.
"""

import json
import os
import re
import shutil
import statistics
import sys

from summary import machine, write_atomic, write_text_atomic

# Buckets, first match wins, tried in this order on a kernel symbol. The
# interface buckets come first so that, e.g., `io_accept` counts as
# io_uring's and `ep_poll_callback` as epoll's, not as socket or wake-up code.
BUCKETS = [
    # llist_* is the lock-free list io_uring's task work is queued on.
    ("io_uring's own code", r"^(__)?io_|^io_uring|^tctx_task_work|^__x64_sys_io_uring|^__do_sys_io_uring|^llist_"),
    ("epoll's own code", r"^(__)?ep_|^do_epoll|^__x64_sys_epoll|^epoll_|^__do_sys_epoll"),
    (
        "socket set-up and tear-down (accept, close, file and inode)",
        r"accept|^sock_alloc|^__sock_release|^sock_close|^inet_release|^tcp_close|^__tcp_close|fput|"
        r"^alloc_file|^close_fd|^filp_close|^file_close_fd|^d_alloc|^dput|^__dentry|^new_inode|^alloc_inode|"
        r"inode|^fd_install|^alloc_fd|^__alloc_fd|^put_unused_fd|^__x64_sys_close|^__close_fd|^do_dentry|"
        r"^security_|^apparmor_|^selinux_|^sock_init_data|^sk_alloc|^sk_prot_alloc|^__sk_destruct|^sk_destruct|"
        r"^__sk_free|^sk_free|^tcp_v4_destroy_sock|^inet_csk_destroy_sock|^tcp_set_state|^inet_csk_clone|"
        r"^tcp_create_openreq_child|^sk_clone|^tcp_v4_syn_recv_sock|^inet_sock_destruct",
    ),
    (
        "TCP/IP and loopback",
        r"^(__)?tcp|^(__)?ip_|^(__)?inet|^ipv4_|^(__)?dev_|^(__)?netif|^net_rx|^process_backlog|^(__)?napi|"
        r"skb|^(__)?sk_|^sock_|^release_sock|^lock_sock|^loopback|^nf_|^(__)?raw_v|^__local_bh|^do_softirq|"
        r"^(__)?do_softirq|^handle_softirqs|^irq_exit|^__release_sock|^neigh|^(__)?udp|^fib_|^dst_|^rt_|"
        r"^validate_xmit|^sch_|^(__)?qdisc|^eth_|^csum|^__inet|^security_sock|^bpf_|^__cgroup_bpf|^mem_cgroup_charge_skmem|"
        r"^mem_cgroup_uncharge_skmem|^bbr_|^minmax_|^raw_local_deliver|^(__)?mod_timer|^timer_|^lock_timer_base|"
        r"^__sys_(send|recv)|^__x64_sys_(send|recv|write|read)|^sock_(sendmsg|recvmsg|read|write)",
    ),
    (
        "scheduler and wake-ups",
        r"schedul|^try_to_wake_up|^finish_task_switch|^pick_next|^(__)?enqueue|^(__)?dequeue|^update_curr|"
        r"^(__)?wake_up|wake_function|^ttwu|^sched_|^switch_mm|^__switch_to|^psi_|^select_task_rq|^put_prev|"
        r"^set_next|^update_load|^native_sched_clock|^sched_clock|^reweight|^update_cfs|^avg_vruntime|"
        r"^check_preempt|^resched|^prepare_task_switch|^raw_spin_rq|^hrtimer|^task_work|^do_nanosleep",
    ),
    (
        "system-call entry and exit",
        r"^entry_SYSCALL|^do_syscall_64|^syscall_exit|^syscall_return|^exit_to_user_mode|^__x64_sys_|"
        r"^syscall_enter|^x64_sys_call|^fpregs|^restore_fpregs|^switch_fpu|^arch_exit_to_user_mode",
    ),
    (
        "memory and copies",
        r"^kmem_cache|kmalloc|^kfree|slab|^memcg|^__memcg|^mod_objcg|^obj_cgroup|^refill_obj_stock|"
        r"^__mod_memcg|^page_|^__alloc_pages|^get_page_from_freelist|^rmqueue|^mem|^copy_|^_copy_|"
        r"^rep_movs|^clear_page|^__check_object_size|^check_heap_object|^__virt_addr_valid|^__kasan|^kvfree|"
        r"^__free_pages|^free_unref|^__put_user|^__get_user|^_raw_copy",
    ),
    ("locks and RCU", r"spin|^rcu|^__rcu|^mutex|^down_|^up_|^__mutex|^(__)?refcount|^percpu_ref|^call_rcu"),
]
USER = "user space (the server's own code and libc)"
OTHER = "other kernel code"
ORDER = [b for b, _ in BUCKETS] + [USER, OTHER]
# `perf report -n`: share, samples, dso, [k] or [.], symbol (then srcline
# columns of `-`, which are dropped).
LINE = re.compile(r"^\s*([\d.]+)%\s+(\d+)\s+(\S+)\s+\[(.)\]\s+(.+?)(?:\s+-\s+-)?\s*$")


def bucket_of(dso, kind, sym):
    if kind != "k" and "kernel" not in dso:
        return USER
    for name, pattern in BUCKETS:
        if re.search(pattern, sym):
            return name
    return OTHER


def read_profile(path):
    """Shares (0..1) per bucket and per symbol from a perf report text."""
    buckets = {b: 0.0 for b in ORDER}
    symbols = {}
    samples = 0
    for line in open(path):
        m = LINE.match(line)
        if not m:
            continue
        share, dso, kind, sym = float(m.group(1)) / 100, m.group(3), m.group(4), m.group(5)
        samples += int(m.group(2))
        buckets[bucket_of(dso, kind, sym)] += share
        key = f"{sym} [{kind}]"
        symbols[key] = symbols.get(key, 0.0) + share
    return buckets, symbols, samples


def read_syscalls(path):
    if not os.path.exists(path):
        return None
    for line in open(path):
        fields = line.strip().split(",")
        if len(fields) > 2 and "raw_syscalls:sys_enter" in fields[2] and fields[0].isdigit():
            return int(fields[0])
    return None


def load(runs_dir):
    runs = []
    for name in sorted(os.listdir(runs_dir)):
        if not name.endswith(".json"):
            continue
        stem = name[:-5]
        backend, rnd = stem.rsplit("-r", 1)
        res = json.load(open(os.path.join(runs_dir, name)))
        conv = res.get("conversations") or {}
        extra = res.get("extra") or {}
        conns = conv.get("completed")
        cpu = extra.get("server_cpu_us")
        per_s = conv.get("per_s")
        buckets, symbols, samples = read_profile(os.path.join(runs_dir, stem + ".perf.txt"))
        syscalls = read_syscalls(os.path.join(runs_dir, stem + ".syscalls.csv"))
        runs.append(
            {
                "run": stem,
                "backend": backend,
                "round": int(rnd),
                "conns_per_s": per_s,
                "server_cpu_us_per_conn": cpu / conns if cpu and conns else None,
                "syscalls_per_conn": syscalls / (per_s * 3.0) if syscalls and per_s else None,
                "samples": samples,
                "buckets": buckets,
                "symbols": symbols,
                "errors": res.get("errors"),
                "loadgen_command": " ".join(res.get("command", [])),
            }
        )
    return runs


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=1):
    return "–" if x is None else f"{x:,.{digits}f}"


def main():
    runs_dir, out_dir, command = sys.argv[1], sys.argv[2], sys.argv[3]
    runs = load(runs_dir)
    by = {b: [r for r in runs if r["backend"] == b] for b in ("epoll", "uring")}
    if not by["epoll"] or not by["uring"]:
        sys.exit("profile_summary: runs of both epoll and uring are needed")
    rounds = sorted({r["round"] for r in runs})
    paired = [
        (e, u)
        for n in rounds
        for e in by["epoll"]
        if e["round"] == n
        for u in by["uring"]
        if u["round"] == n
    ]
    ratios = [u["server_cpu_us_per_conn"] / e["server_cpu_us_per_conn"] for e, u in paired
              if e["server_cpu_us_per_conn"] and u["server_cpu_us_per_conn"]]

    def us(r, b):
        c = r["server_cpu_us_per_conn"]
        return None if c is None else r["buckets"][b] * c

    rows = []
    for b in ORDER:
        diffs = [us(u, b) - us(e, b) for e, u in paired if us(u, b) is not None and us(e, b) is not None]
        rows.append(
            {
                "bucket": b,
                "epoll_share": med(r["buckets"][b] for r in by["epoll"]),
                "uring_share": med(r["buckets"][b] for r in by["uring"]),
                "epoll_us_per_conn": med(us(r, b) for r in by["epoll"]),
                "uring_us_per_conn": med(us(r, b) for r in by["uring"]),
                "uring_minus_epoll_us": med(diffs),
                "uring_minus_epoll_range": [min(diffs), max(diffs)] if diffs else None,
            }
        )

    def top(rs, k=8):
        keys = set().union(*(r["symbols"] for r in rs))
        meds = {s: med(r["symbols"].get(s, 0.0) for r in rs) for s in keys}
        return sorted(meds.items(), key=lambda kv: -kv[1])[:k]

    m = machine()
    doc = {
        "what": "where the server's CPU per connection goes at --conn-msgs 1, 100 conversations, TCP, "
        "closed loop: perf samples by bucket, epoll and uring",
        "command": command,
        "machine": m,
        "pinning": "server CPU 0 (--pin 0, one thread), loadgen CPU 1",
        "rounds": len(rounds),
        "server_cpu_ratio_uring_over_epoll": {"median": med(ratios), "min": min(ratios), "max": max(ratios)}
        if ratios
        else None,
        "rows": rows,
        "runs": [{k: v for k, v in r.items() if k != "symbols"} for r in runs],
        "top_symbols": {b: top(by[b]) for b in by},
    }

    lines = [
        "# Where a connection's cost goes: uring against epoll",
        "",
        f"Generated by `scale/profile_summary.py` from the runs of `{command}` "
        f"(commit {m['commit']}, kernel {m['kernel']}, {m['cpu']}, {m['cores']} cores; server on CPU 0, "
        f"loadgen on CPU 1). Workload: `--conn-msgs 1 --conns 100`, TCP, closed loop (loadgen the limit), "
        f"{len(rounds)} round(s), epoll and uring each once a round, the order rotated. Every figure is "
        "read \"under the profiler\": `perf record -F 2999 -g` for 3 s, then `perf stat -e "
        "raw_syscalls:sys_enter` for 3 s, on the server's process. Each run's loadgen command and perf "
        "report are under `runs/`.",
        "",
    ]
    if ratios:
        lines += [
            f"Server CPU per connection, uring ÷ epoll, paired by round: median {med(ratios):.2f}× "
            f"(min {min(ratios):.2f}×, max {max(ratios):.2f}× over {len(ratios)} pairs; "
            "a description of these runs, not an interval: results/README.md has the comparison's).",
            "",
        ]
    lines += [
        "| | epoll | uring |",
        "|---|--:|--:|",
        f"| server CPU per connection (µs, median) | {fmt(med(r['server_cpu_us_per_conn'] for r in by['epoll']))} "
        f"| {fmt(med(r['server_cpu_us_per_conn'] for r in by['uring']))} |",
        f"| connections/s (median) | {fmt(med(r['conns_per_s'] for r in by['epoll']), 0)} "
        f"| {fmt(med(r['conns_per_s'] for r in by['uring']), 0)} |",
        f"| system calls per connection (median) | {fmt(med(r['syscalls_per_conn'] for r in by['epoll']), 2)} "
        f"| {fmt(med(r['syscalls_per_conn'] for r in by['uring']), 2)} |",
        f"| perf samples per run (median) | {fmt(med(r['samples'] for r in by['epoll']), 0)} "
        f"| {fmt(med(r['samples'] for r in by['uring']), 0)} |",
        "",
        "By bucket: each bucket's share of the server's samples, that share of its CPU per connection, and "
        "uring minus epoll (median of the paired rounds, with their range): where the difference goes. "
        "Buckets are regular expressions on the symbol names, in `scale/profile_summary.py`.",
        "",
        "| bucket | epoll share | uring share | epoll µs/conn | uring µs/conn | uring − epoll µs/conn (range) |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        rng = row["uring_minus_epoll_range"]
        lines.append(
            f"| {row['bucket']} | {100 * row['epoll_share']:.1f}% | {100 * row['uring_share']:.1f}% "
            f"| {fmt(row['epoll_us_per_conn'], 2)} | {fmt(row['uring_us_per_conn'], 2)} "
            f"| {row['uring_minus_epoll_us']:+.2f} ({rng[0]:+.2f} to {rng[1]:+.2f}) |"
            if row["uring_minus_epoll_us"] is not None
            else f"| {row['bucket']} | – | – | – | – | – |"
        )
    for b in ("epoll", "uring"):
        lines += ["", f"The {b} server's largest symbols (median share):", ""]
        lines += [f"- `{s}`: {100 * share:.1f}%" for s, share in doc["top_symbols"][b]]
    lines.append("")

    os.makedirs(os.path.join(out_dir, "runs"), exist_ok=True)
    for name in sorted(os.listdir(runs_dir)):
        shutil.copy(os.path.join(runs_dir, name), os.path.join(out_dir, "runs", name))
    write_atomic(os.path.join(out_dir, "summary.json"), doc, ".summary")
    write_text_atomic(os.path.join(out_dir, "summary.md"), "\n".join(lines))
    print(f"profile: {out_dir}/summary.md")


if __name__ == "__main__":
    main()
