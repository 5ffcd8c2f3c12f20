#!/usr/bin/env python3
"""make plots: the benchmark results in bench/results/*.jsonl as SVG charts (standard library only).

    scripts/plots.py [--results bench/results] [--out bench/results/plots]

Each line of a results file is one rk-bench record: {"bench", "impl", "metric", "value", "unit",
"n", "machine"}. A file is one run (or a few consecutive runs: repeated records of a series are
summarised by their median). Three charts:

  latency.svg     round-trip latency per implementation against its baselines: for every bench
                  with rtt_p50_ns / rtt_p99_ns, each run's p50 (dot) to p99 (bar end), log scale
  throughput.svg  throughput by configuration (ops/s, msgs/s, elems/s): the latest run of each
                  bench, one bar per implementation, log scale
  runs.svg        results across runs: each bench's key metric per implementation, run by run
                  (files in date order), one panel per bench and metric

The charts are deterministic for given inputs (no time stamps), so regenerating them changes
nothing unless the results did."""

import argparse
import glob
import json
import math
import os
import re
import statistics
import sys
from collections import OrderedDict, defaultdict
from xml.sax.saxutils import escape

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]
FONT = 'font-family="DejaVu Sans, Arial, sans-serif"'


def load(results):
    """{run name: [records]} in date order (the date in the file name, then the name)."""
    runs = []
    for path in glob.glob(os.path.join(results, "*.jsonl")):
        recs = []
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    r = json.loads(line)
                except ValueError:
                    continue  # a torn line: skip it, keep the rest
                if isinstance(r, dict) and {"bench", "impl", "metric", "value"} <= r.keys():
                    recs.append(r)
        name = os.path.basename(path)[: -len(".jsonl")]
        m = re.search(r"(\d{4}-\d{2}-\d{2})", name)
        runs.append(((m.group(1) if m else "0000"), name, recs))
    runs.sort()
    return OrderedDict((name, recs) for _, name, recs in runs)


def series(recs):
    """{(bench, impl, metric): median value} of one run."""
    acc = defaultdict(list)
    for r in recs:
        if isinstance(r["value"], (int, float)):
            acc[(r["bench"], r["impl"], r["metric"])].append(float(r["value"]))
    return {k: statistics.median(v) for k, v in acc.items()}


def human(v, unit=""):
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return "%.3g %s%s" % (v / div, suf, unit)
    return "%.3g %s" % (v, unit) if unit else "%.3g" % v


def ns_label(v):
    if v >= 1e6:
        return "%.3g ms" % (v / 1e6)
    if v >= 1e3:
        return "%.3g µs" % (v / 1e3)
    return "%.3g ns" % v


class Svg:
    def __init__(self, w, h, title):
        self.w, self.h = w, h
        self.parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">' % (w, h, w, h),
                      '<rect width="100%" height="100%" fill="white"/>']
        self.text(w / 2, 24, title, size=16, anchor="middle", weight="bold")

    def text(self, x, y, s, size=11, anchor="start", color="#222", weight="normal"):
        self.parts.append('<text x="%.1f" y="%.1f" font-size="%d" text-anchor="%s" fill="%s" font-weight="%s" %s>%s</text>'
                          % (x, y, size, anchor, color, weight, FONT, escape(str(s))))

    def line(self, x1, y1, x2, y2, color="#999", width=1, dash=None):
        d = ' stroke-dasharray="%s"' % dash if dash else ""
        self.parts.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="%g"%s/>'
                          % (x1, y1, x2, y2, color, width, d))

    def rect(self, x, y, w, h, color, title=None):
        t = "<title>%s</title>" % escape(title) if title else ""
        self.parts.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s">%s</rect>' % (x, y, max(w, 0.5), h, color, t))

    def circle(self, x, y, r, color, title=None):
        t = "<title>%s</title>" % escape(title) if title else ""
        self.parts.append('<circle cx="%.1f" cy="%.1f" r="%g" fill="%s">%s</circle>' % (x, y, r, color, t))

    def polyline(self, pts, color, width=2):
        self.parts.append('<polyline points="%s" fill="none" stroke="%s" stroke-width="%g"/>'
                          % (" ".join("%.1f,%.1f" % p for p in pts), color, width))

    def save(self, path):
        with open(path, "w") as f:
            f.write("\n".join(self.parts + ["</svg>"]) + "\n")


def log_axis(svg, x0, x1, y_top, y_bot, lo, hi, fmt):
    """Vertical grid lines at powers of ten between lo and hi; returns the value -> x map."""
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    if a == b:
        b += 1

    def X(v):
        return x0 + (math.log10(max(v, 10 ** a)) - a) / (b - a) * (x1 - x0)

    for e in range(a, b + 1):
        x = X(10 ** e)
        svg.line(x, y_top, x, y_bot, color="#ddd")
        svg.text(x, y_bot + 14, fmt(10 ** e), size=10, anchor="middle", color="#555")
    return X


def latency_chart(runs, out):
    rows = defaultdict(list)  # (bench, impl) -> [(run, p50, p99)]
    for run, recs in runs.items():
        s = series(recs)
        for (bench, impl, metric), v in s.items():
            if metric == "rtt_p50_ns" and (bench, impl, "rtt_p99_ns") in s:
                rows[(bench, impl)].append((run, v, s[(bench, impl, "rtt_p99_ns")]))
    if not rows:
        return None
    keys = sorted(rows, key=lambda k: (k[0], statistics.median(r[1] for r in rows[k])))
    run_names = [r for r in runs if any(x[0] == r for k in keys for x in rows[k])]
    colors = {r: PALETTE[i % len(PALETTE)] for i, r in enumerate(run_names)}
    left, right, top, rowh = 260, 40, 60, 26
    h = top + rowh * len(keys) + 60 + 16 * len(run_names)
    svg = Svg(900, h, "Round-trip latency: p50 (dot) to p99 (bar end), per run, log scale")
    lo = min(x[1] for k in keys for x in rows[k])
    hi = max(x[2] for k in keys for x in rows[k])
    X = log_axis(svg, left, 900 - right, top - 8, top + rowh * len(keys), lo / 1.5, hi * 1.5, ns_label)
    bench_prev = None
    for i, k in enumerate(keys):
        y = top + i * rowh + rowh / 2
        if k[0] != bench_prev:
            svg.line(10, y - rowh / 2, 900 - right, y - rowh / 2, color="#bbb")
            bench_prev = k[0]
        svg.text(left - 8, y + 4, "%s  %s" % k, anchor="end", weight="bold" if k[1].startswith("ringkernel") else "normal")
        n = len(rows[k])
        for j, (run, p50, p99) in enumerate(rows[k]):
            yy = y - 6 + (12 * j / max(n - 1, 1) if n > 1 else 6)
            svg.line(X(p50), yy, X(p99), yy, color=colors[run], width=3)
            svg.circle(X(p50), yy, 3.5, colors[run], "%s %s %s: p50 %s, p99 %s" % (run, k[0], k[1], ns_label(p50), ns_label(p99)))
    y = top + rowh * len(keys) + 36
    for r in run_names:
        svg.rect(left, y - 9, 12, 10, colors[r])
        svg.text(left + 18, y, r, size=10)
        y += 16
    svg.save(os.path.join(out, "latency.svg"))
    return "latency.svg"


THROUGHPUT = ("ops_per_s", "msgs_per_s", "elems_per_s")


def throughput_chart(runs, out):
    latest = {}  # (bench, metric) -> (run, {impl: value})
    for run, recs in runs.items():
        per = defaultdict(dict)
        for (bench, impl, metric), v in series(recs).items():
            if metric in THROUGHPUT:
                per[(bench, metric)][impl] = v
        for key, impls in per.items():
            latest[key] = (run, impls)  # runs are in date order: the last one wins
    if not latest:
        return None
    groups = sorted(latest)
    nrows = sum(len(latest[g][1]) for g in groups)
    left, right, top, rowh = 260, 110, 60, 18
    h = top + nrows * rowh + len(groups) * 24 + 40
    svg = Svg(900, h, "Throughput by configuration (latest run of each bench), log scale")
    vals = [v for g in groups for v in latest[g][1].values() if v > 0]
    X = log_axis(svg, left, 900 - right, top - 8, h - 40, min(vals) / 2, max(vals) * 2, lambda v: human(v))
    y = top
    for gi, g in enumerate(groups):
        run, impls = latest[g]
        svg.text(10, y + 12, "%s (%s, %s)" % (g[0], g[1].replace("_per_s", "/s"), run), weight="bold", size=11)
        y += 18
        for impl, v in sorted(impls.items(), key=lambda kv: -kv[1]):
            color = PALETTE[0] if impl.startswith("ringkernel") else "#9aa5b1"
            svg.text(left - 8, y + rowh - 5, impl, anchor="end", size=10)
            svg.rect(left, y + 3, X(v) - left, rowh - 6, color, "%s %s: %s" % (g[0], impl, human(v, g[1].replace("_per_s", "/s"))))
            svg.text(X(v) + 4, y + rowh - 5, human(v), size=10, color="#444")
            y += rowh
        y += 6
    svg.save(os.path.join(out, "throughput.svg"))
    return "throughput.svg"


# The metric each bench is followed by across runs (lower or higher is better: in the title).
KEY_METRICS = ("rtt_p50_ns", "ops_per_s", "msgs_per_s", "elems_per_s", "host_rounds_per_msg", "latency_p50_ns", "ns_per_op")


def runs_chart(runs, out):
    panels = OrderedDict()  # (bench, metric) -> {impl: [(run index, value)]}
    names = list(runs)
    for ri, (run, recs) in enumerate(runs.items()):
        for (bench, impl, metric), v in series(recs).items():
            if metric in KEY_METRICS:
                panels.setdefault((bench, metric), defaultdict(list))[impl].append((ri, v))
    # only panels with at least two runs: the chart is about change across runs
    panels = OrderedDict((k, v) for k, v in sorted(panels.items()) if len({ri for pts in v.values() for ri, _ in pts}) >= 2)
    if not panels:
        return None
    cols, pw, ph = 2, 430, 230
    nrows = (len(panels) + cols - 1) // cols
    svg = Svg(cols * pw + 20, 50 + nrows * ph + 20 + 14 * len(names), "Results across runs (median per run; x: runs in date order)")
    for pi, ((bench, metric), impls) in enumerate(panels.items()):
        ox, oy = 10 + (pi % cols) * pw, 50 + (pi // cols) * ph
        x0, x1, y0, y1 = ox + 60, ox + pw - 20, oy + 30, oy + ph - 50
        svg.text(ox + pw / 2, oy + 16, "%s — %s" % (bench, metric), anchor="middle", weight="bold", size=11)
        allv = [v for pts in impls.values() for _, v in pts]
        lo, hi = min(allv), max(allv)
        logy = lo > 0 and hi / lo > 20  # series orders of magnitude apart: a log axis
        fmt = ns_label if metric.endswith("_ns") else human
        ris = sorted({ri for pts in impls.values() for ri, _ in pts})

        def X(ri):
            return x0 + (ris.index(ri) / max(len(ris) - 1, 1)) * (x1 - x0)

        if logy:
            a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))

            def Y(v):
                return y1 - (math.log10(v) - a) / (b - a) * (y1 - y0)

            ticks = [10 ** e for e in range(a, b + 1)]
            svg.text(x1, y0 - 6, "log scale", size=9, anchor="end", color="#888")
        else:
            if hi == lo:
                hi = lo * 1.1 + 1e-9
            lo = 0 if lo > 0 and lo < hi / 3 else lo - (hi - lo) * 0.1
            top_v = hi * 1.05

            def Y(v):
                return y1 - (v - lo) / (top_v - lo) * (y1 - y0)

            ticks = [lo + (top_v - lo) * t / 4 for t in range(5)]
        for v in ticks:
            svg.line(x0, Y(v), x1, Y(v), color="#eee")
            svg.text(x0 - 4, Y(v) + 3, fmt(v), size=9, anchor="end", color="#555")
        for ri in ris:
            svg.text(X(ri), y1 + 12, "r%d" % (ri + 1), size=9, anchor="middle", color="#555")
        for ii, (impl, pts) in enumerate(sorted(impls.items())):
            color = PALETTE[ii % len(PALETTE)]
            pts = sorted(pts)
            if len(pts) > 1:
                svg.polyline([(X(ri), Y(v)) for ri, v in pts], color)
            for ri, v in pts:
                svg.circle(X(ri), Y(v), 3, color, "%s %s %s: %s" % (names[ri], bench, impl, human(v)))
            svg.text(x0 + (ii % 3) * 120, y1 + 26 + (ii // 3) * 12, impl, size=9, color=color)
    y = 50 + nrows * ph + 10
    for ri, n in enumerate(names):
        svg.text(20, y, "r%d = %s" % (ri + 1, n), size=10, color="#444")
        y += 14
    svg.save(os.path.join(out, "runs.svg"))
    return "runs.svg"


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", default=os.path.join(here, "..", "bench", "results"))
    ap.add_argument("--out", default=None, help="default: <results>/plots")
    a = ap.parse_args(argv)
    out = a.out or os.path.join(a.results, "plots")
    os.makedirs(out, exist_ok=True)
    runs = load(a.results)
    if not runs:
        print("plots: no results in %s" % a.results, file=sys.stderr)
        return 1
    made = [f for f in (latency_chart(runs, out), throughput_chart(runs, out), runs_chart(runs, out)) if f]
    for f in made:
        print("plots: %s" % os.path.join(out, f))
    return 0


if __name__ == "__main__":
    sys.exit(main())
