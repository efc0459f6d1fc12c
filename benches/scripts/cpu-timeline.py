#!/usr/bin/env python3
"""CPU utilisation over time, per thread, from a scheduler trace: where a run leaves cores idle.

Sampling profiles (`perf record -F`) say where CPU time goes; they do not show when cores sit idle, which is
what the ratio to the bound loses at the start and end of a migration and between mailboxes. A trace of the
scheduler's context switches does, at almost no cost to the run:

    perf record -e sched:sched_switch -a -o /tmp/sched.data -- \\
        ./target/release/moverd migrate SOURCE /tmp/dest --mailbox m
    python3 benches/scripts/cpu-timeline.py /tmp/sched.data --bin-ms 5

Each line is one time bin: how many CPUs were busy on average (2.00 = both cores of this machine), then the
threads that ran, busiest first (mover-reader, mover-cpu-N, mover-collector, moverd-io for the store's
blocking I/O, ...). The window runs from the first to the last switch of a thread whose name starts with one
of --match. Time the trace gives to a kernel thread that did not really run (events lost, or the hypervisor
taking the vCPU) shows up under that thread's name: check it against /proc/PID/stat if it matters.
See docs/PERFORMANCE.md ("Where the cores sit idle").
"""

import argparse
import collections
import re
import subprocess
import sys

SWITCH = re.compile(r"\s*\[(\d+)\]\s+([\d.]+):\s+\S*sched_switch:\s+(.*)")
PREV = re.compile(r"prev_comm=(.*?) prev_pid=")
NEXT = re.compile(r"next_comm=(.*?) next_pid=")


def switches(path):
    """(time, cpu, prev_comm) of every context switch, in time order."""
    out = subprocess.run(
        ["perf", "script", "-i", path, "-F", "cpu,time,event,trace"], capture_output=True, text=True, check=True
    ).stdout
    rows = []
    for line in out.splitlines():
        m = SWITCH.match(line)
        if not m:
            continue
        prev, nxt = PREV.search(m.group(3)), NEXT.search(m.group(3))
        if prev and nxt:
            rows.append((float(m.group(2)), int(m.group(1)), prev.group(1), nxt.group(1)))
    rows.sort()
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace", help="perf.data recorded with -e sched:sched_switch -a")
    ap.add_argument("--bin-ms", type=float, default=5.0, help="width of a time bin in ms [5]")
    ap.add_argument("--match", default="mover,moverd,e2e", help="comma-separated thread name prefixes [mover,moverd,e2e]")
    ap.add_argument("--top", type=int, default=5, help="threads shown per bin [5]")
    a = ap.parse_args()
    rows = switches(a.trace)
    prefixes = tuple(p for p in a.match.split(",") if p)
    ours = [r for r in rows if r[2].startswith(prefixes) or r[3].startswith(prefixes)]
    if not ours:
        sys.exit("no context switch of a matching thread in the trace")
    t0, t1, width = ours[0][0], ours[-1][0], a.bin_ms / 1000.0
    busy = collections.defaultdict(lambda: collections.Counter())
    last = {}
    for t, cpu, prev, _ in rows:
        start = last.get(cpu)
        last[cpu] = t
        if start is None or prev.startswith("swapper"):
            continue
        a_, b_ = max(start, t0), min(t, t1)
        while a_ < b_:
            k = int((a_ - t0) / width)
            end = min(b_, t0 + (k + 1) * width)
            if end <= a_:  # rounding at a bin edge
                end = min(b_, a_ + 1e-9)
            busy[k][prev] += end - a_
            a_ = end
    total = 0.0
    for k in range(int((t1 - t0) / width) + 1):
        c = busy.get(k, collections.Counter())
        s = sum(c.values())
        total += s
        who = " ".join("%s:%.2f" % (n, v / width) for n, v in c.most_common(a.top))
        print("%8.1f ms  %.2f  %s" % (k * a.bin_ms, s / width, who))
    span = t1 - t0
    print("busy %.1f CPU-ms over %.1f ms: %.2f CPUs on average" % (total * 1000, span * 1000, total / span if span else 0))


if __name__ == "__main__":
    main()
