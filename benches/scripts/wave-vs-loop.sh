#!/usr/bin/env bash
# A wave of mailboxes two ways, interleaved: a shell loop of `moverd migrate` (one process per mailbox) against one
# `moverd migrate-many --each` (one process for the wave), each into a fresh destination and index cache, then the
# no-change pass of each. Prints the median wall time (with the range), the median CPU (user + sys) and the largest
# peak RSS of each. PERFORMANCE.md run N.
#
#   benches/scripts/wave-vs-loop.sh REPS DIR [MOVERD]
#   moverd gen-corpus /tmp/gm80 --mailboxes 80 --messages 400 && benches/scripts/wave-vs-loop.sh 5 /tmp/gm80/maildir
set -euo pipefail
reps=$1 dir=$2 moverd=${3:-target/release/moverd}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
warm() { find "$dir"/ -type f -exec cat {} + >/dev/null; }   # the page cache, as the bench runner does
timed() { /usr/bin/time -f "$1 %e %U %S %M" "${@:2}" >/dev/null; }
for _ in $(seq "$reps"); do
    warm; rm -rf "$work"/d "$work"/c
    timed "loop-first" bash -c "for m in '$dir'/*; do '$moverd' migrate \"\$m\" '$work/d' --index-cache '$work/c' -q; done"
    timed "loop-rerun" bash -c "for m in '$dir'/*; do '$moverd' migrate \"\$m\" '$work/d' --index-cache '$work/c' -q; done"
    warm; rm -rf "$work"/d "$work"/c
    timed "many-first" "$moverd" migrate-many "$work/d" --each "$dir" --index-cache "$work/c" -q
    timed "many-rerun" "$moverd" migrate-many "$work/d" --each "$dir" --index-cache "$work/c" -q
done 2>&1 | python3 -c '
import sys, collections, statistics
runs = collections.defaultdict(list)
for line in sys.stdin:
    w = line.split()
    if len(w) == 5 and w[0].startswith(("loop", "many")):
        runs[w[0]].append((float(w[1]), float(w[2]) + float(w[3]), int(w[4])))
for k in ("loop-first", "many-first", "loop-rerun", "many-rerun"):
    v = runs[k]
    wall = [x[0] for x in v]
    print(f"{k:<11} wall {statistics.median(wall):.2f} s ({min(wall):.2f}-{max(wall):.2f}), "
          f"CPU {statistics.median(x[1] for x in v):.2f} s, peak RSS {max(x[2] for x in v) / 1024:.0f} MiB, n={len(v)}")
'
