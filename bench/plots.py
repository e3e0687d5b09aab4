#!/usr/bin/env python3
"""Draw BENCHMARKS.md's side-by-side comparisons as SVG bar charts, from the bench scripts' results
(no plotting library needed: plain SVG).  python3 bench/plots.py [OUTDIR]   (default bench/results)

  cpu-per-conn.svg   CPU per short proxied connection (µs), per scenario and proxy (bench/proxy.sh)
  flood-p99.svg      allowed clients' p99 (ms), calm vs under a denied flood, per proxy
                     (bench/proxy.sh calm/flood and calm1m/flood1m)
Each bar is the median over the rounds of its run; compare bars within one chart only."""
import os, re, statistics, sys
from collections import defaultdict

out = sys.argv[1] if len(sys.argv) > 1 else "bench/results"
here = os.path.dirname(os.path.abspath(__file__))

def load(*names):
    runs = defaultdict(lambda: defaultdict(list))  # scenario -> proxy -> [fields]
    for name in names:
        path = os.path.join(here, "results", name)
        if not os.path.exists(path):
            continue
        for line in open(path):
            if not line.startswith("label="):
                continue
            f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            scen, proxy = f["label"].split("/")[:2]
            if not scen.startswith("flooder"):
                runs[scen][proxy].append(f)
    return runs

def med(rows, key):
    vals = [float(r[key]) for r in rows if r.get(key, "") not in ("", "timeout")]
    return statistics.median(vals) if vals else None

COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b2"]

def bars(title, unit, groups, series, path):
    """groups: [group label]; series: [(name, [value or None per group])]."""
    vmax = max((v for _, vals in series for v in vals if v is not None), default=1) or 1
    bw, gap, left, top, h = 22, 90, 60, 40, 220
    width = left + len(groups) * (len(series) * bw + gap) + 150
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{top + h + 60}" font-family="sans-serif" font-size="12">',
           f'<text x="{left}" y="20" font-size="14">{title}</text>',
           f'<line x1="{left}" y1="{top + h}" x2="{width - 140}" y2="{top + h}" stroke="#333"/>']
    for i in range(5):
        v = vmax * i / 4
        y = top + h - h * i / 4
        svg.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end">{v:.3g}</text>')
        svg.append(f'<line x1="{left}" y1="{y}" x2="{width - 140}" y2="{y}" stroke="#ddd"/>')
    svg.append(f'<text x="12" y="{top + h / 2}" transform="rotate(-90 12 {top + h / 2})" text-anchor="middle">{unit}</text>')
    for g, label in enumerate(groups):
        x0 = left + gap / 2 + g * (len(series) * bw + gap)
        for s, (name, vals) in enumerate(series):
            v = vals[g]
            if v is None:
                continue
            bh = h * v / vmax
            x = x0 + s * bw
            svg.append(f'<rect x="{x}" y="{top + h - bh}" width="{bw - 2}" height="{bh}" fill="{COLORS[s % len(COLORS)]}"><title>{name} {label}: {v:g} {unit}</title></rect>')
        cx = x0 + len(series) * bw / 2
        for n, part in enumerate(label.split(" ", 1)):  # "proxy (scenario)" on two lines
            svg.append(f'<text x="{cx}" y="{top + h + 16 + 14 * n}" text-anchor="middle">{part}</text>')
    for s, (name, _) in enumerate(series):
        y = top + 10 + s * 18
        svg.append(f'<rect x="{width - 130}" y="{y - 10}" width="12" height="12" fill="{COLORS[s % len(COLORS)]}"/>')
        svg.append(f'<text x="{width - 112}" y="{y}">{name}</text>')
    svg.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(svg) + "\n")
    print("wrote", path)

os.makedirs(out, exist_ok=True)
runs = load("proxy.txt")
scens = [s for s in ("acl10", "acl100k", "calm") if s in runs]
proxies = sorted({p for s in scens for p in runs[s]})
if scens:
    bars("CPU per short proxied connection (bench/proxy.sh, one pinned core each)", "µs / connection", scens,
         [(p, [med(runs[s].get(p, []), "cpu_us_per_conn") for s in scens]) for p in proxies],
         os.path.join(out, "cpu-per-conn.svg"))
runs.update(load("proxy-flood1m.txt"))
groups, series = [], defaultdict(list)
for calm, flood in (("calm", "flood"), ("calm1m", "flood1m")):
    if calm not in runs or flood not in runs:
        continue
    for p in sorted(runs[calm]):
        if p not in runs[flood]:
            continue
        groups.append(f"{p} ({flood})")
        c, f = med(runs[calm][p], "p99_us"), med(runs[flood][p], "p99_us")
        series["calm"].append(c / 1000 if c else None)
        series["under flood"].append(f / 1000 if f else None)
if groups:
    bars("Allowed clients' p99, calm vs a denied flood (bench/proxy.sh)", "ms", groups, list(series.items()),
         os.path.join(out, "flood-p99.svg"))
