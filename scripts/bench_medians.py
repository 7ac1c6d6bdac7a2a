"""Median over rounds of each criterion benchmark, with ratios to `0-*`.

Usage: python3 scripts/bench_medians.py target/bench-rounds ROUNDS
Reads ROUND/GROUP/ID.json (criterion's estimates.json, nanoseconds per
iteration) and prints per group: median ns/iter, min..max over rounds, and
the ratio of each peer's median to the first (our) entry's.
"""
import json
import os
import statistics
import sys

root, rounds = sys.argv[1], int(sys.argv[2])
groups = {}
for r in range(1, rounds + 1):
    base = os.path.join(root, str(r))
    for dirpath, _, files in os.walk(base):
        for name in files:
            if not name.endswith(".json"):
                continue
            group = os.path.relpath(dirpath, base)
            with open(os.path.join(dirpath, name)) as f:
                est = json.load(f)
            ns = est["median"]["point_estimate"]
            groups.setdefault(group, {}).setdefault(name[:-5], []).append(ns)

per_item = {"bench_batch_push": 256, "bench_batch_pop": 256}
for group in sorted(groups):
    items = per_item.get(group, 1)
    print(f"\n{group}  (ns per item, median of {rounds} rounds)")
    entries = sorted(groups[group].items())
    ours = statistics.median(entries[0][1]) / items
    for name, values in entries:
        med = statistics.median(values) / items
        lo, hi = min(values) / items, max(values) / items
        print(f"  {name:<26} {med:9.2f}   [{lo:.2f} .. {hi:.2f}]   peer/ours {med / ours:5.2f}x")
