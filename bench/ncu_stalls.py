#!/usr/bin/env python3
"""ncu_stalls.py - rank a kernel's SASS lines by warp-stall samples.

Reads the CSV of `ncu --import REPORT --page source --csv --print-source sass`
(a report taken with --section SourceCounters, as bench/gpu_profile.sh does
with STALLS=1) and prints the samples by stall reason over the whole kernel,
then the TOP lines with the most samples (in program order) and each one's
three largest reasons.

    python3 bench/ncu_stalls.py SOURCE.csv [TOP]
"""
import collections
import csv
import sys


def main():
    rows = list(csv.reader(open(sys.argv[1])))
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    head = rows[1]  # row 0 names the kernel
    lines = rows[2:]
    samples = head.index("Warp Stall Sampling (All Samples)")
    executed = head.index("Instructions Executed")
    source = head.index("Source")
    reasons = [(i, n[len("stall_"):]) for i, n in enumerate(head)
               if n.startswith("stall_") and "Not Issued" not in n]
    total = collections.Counter()
    for r in lines:
        for i, n in reasons:
            total[n] += int(r[i] or 0)
    print("samples", sum(int(r[samples] or 0) for r in lines),
          "warp instructions", sum(int(r[executed] or 0) for r in lines))
    print(" ".join(f"{n}:{v}" for n, v in total.most_common() if v))
    ranked = sorted(range(len(lines)), key=lambda k: -int(lines[k][samples] or 0))[:top]
    for k in sorted(ranked):
        r = lines[k]
        by = sorted(((int(r[i] or 0), n) for i, n in reasons), reverse=True)[:3]
        print(f"{k:5d} {r[samples]:>5} {r[source].strip()[:60]:60s}",
              " ".join(f"{n}:{v}" for v, n in by if v))


if __name__ == "__main__":
    main()
