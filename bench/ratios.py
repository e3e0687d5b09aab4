#!/usr/bin/env python3
"""Summarise bench/results/proxy.txt: per scenario, the median of each figure for each proxy over
the rounds, and peergate's ratio to each other proxy.  python3 bench/ratios.py [proxy.txt]"""
import re, statistics, sys
from collections import defaultdict

path = sys.argv[1] if len(sys.argv) > 1 else "bench/results/proxy.txt"
runs = defaultdict(lambda: defaultdict(list))  # (scenario) -> target -> [fields]
for line in open(path):
    if not line.startswith("label="):
        continue
    f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
    parts = f["label"].split("/")
    if parts[0].startswith("flooder"):
        continue
    runs[parts[0]][parts[1]].append(f)

def med(rows, key):
    vals = [float(r[key]) for r in rows if key in r and r[key] not in ("", "timeout")]
    return statistics.median(vals) if vals else None

figures = {"connect": ["conns_per_s", "p99_us", "cpu_us_per_conn"], "bulk": ["mb_per_s", "cpu_s"],
           "scale": ["load_s", "pss_mb"]}
for scen, targets in runs.items():
    keys = figures["bulk" if scen == "bulk" else "scale" if scen == "scale" else "connect"]
    print(f"## {scen} ({len(targets.get('peergate', []))} rounds)")
    print("| proxy | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for t, rows in targets.items():
        print(f"| {t} | " + " | ".join(f"{med(rows, k):g}" if med(rows, k) is not None else "-" for k in keys) + " |")
    pg = targets.get("peergate")
    for other in targets:
        if other == "peergate" or not pg:
            continue
        ratios = []
        for k in keys:
            a, b = med(pg, k), med(targets[other], k)
            ratios.append(f"{k} {a / b:.2f}x" if a is not None and b else f"{k} -")
        print(f"peergate / {other}: " + ", ".join(ratios))
    print()
for sfx in ("", "1m"):
    if "calm" + sfx not in runs or "flood" + sfx not in runs:
        continue
    print(f"## flood{sfx} vs calm{sfx}, each proxy against itself")
    for t in runs["calm" + sfx]:
        c, f = runs["calm" + sfx][t], runs["flood" + sfx].get(t, [])
        if f:
            print(f"{t}: allowed p99 {med(f, 'p99_us') / med(c, 'p99_us'):.2f}x, "
                  f"allowed conns/s {med(f, 'conns_per_s') / med(c, 'conns_per_s'):.2f}x under the flood")
