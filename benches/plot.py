#!/usr/bin/env python3
"""Draws the plots of docs/PERFORMANCE.md from the CSV files `cargo bench --bench compare`
writes (default directory target/shmq-bench). Plain SVG, no dependencies.

    python3 benches/plot.py [results_dir] [output_dir]     # defaults: target/shmq-bench docs/img
"""
import csv
import math
import os
import sys
from collections import defaultdict

def rows(path):
    """The bench's CSV files (labels holding commas are quoted)."""
    with open(path, newline="") as f:
        yield from csv.DictReader(f)


COLORS = ["#222222", "#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
          "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#e6ab02", "#a6cee3", "#b15928", "#6a3d9a",
          "#1b9e77", "#fb9a99"]
W, H = 850, 440
L, R, T, B = 70, 300, 40, 55  # margins (the right one holds the legend)


def svg_start(title):
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
            f'font-family="sans-serif" font-size="12">',
            f'<rect width="{W}" height="{H}" fill="white"/>',
            f'<text x="{W / 2 - R / 2}" y="22" text-anchor="middle" font-size="15">{title}</text>']


def log_axis(lo, hi):
    lo, hi = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    return lo, max(hi, lo + 1)


def frame(out, xlo, xhi, ylo, yhi, xlabel, ylabel, xfmt, yfmt, ylog=True):
    pw, ph = W - L - R, H - T - B
    out.append(f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>')
    for e in range(xlo, xhi + 1):
        x = L + (e - xlo) / (xhi - xlo) * pw
        out.append(f'<line x1="{x}" y1="{T}" x2="{x}" y2="{T + ph}" stroke="#eee"/>')
        out.append(f'<text x="{x}" y="{T + ph + 16}" text-anchor="middle">{xfmt(10 ** e)}</text>')
    if ylog:
        for e in range(ylo, yhi + 1):
            y = T + ph - (e - ylo) / (yhi - ylo) * ph
            out.append(f'<line x1="{L}" y1="{y}" x2="{L + pw}" y2="{y}" stroke="#eee"/>')
            out.append(f'<text x="{L - 6}" y="{y + 4}" text-anchor="end">{yfmt(10 ** e)}</text>')
    out.append(f'<text x="{L + pw / 2}" y="{H - 12}" text-anchor="middle">{xlabel}</text>')
    out.append(f'<text x="16" y="{T + ph / 2}" text-anchor="middle" '
               f'transform="rotate(-90 16 {T + ph / 2})">{ylabel}</text>')


def legend(out, names):
    for i, name in enumerate(names):
        y = T + 10 + i * 18
        x = W - R + 12
        out.append(f'<line x1="{x}" y1="{y}" x2="{x + 22}" y2="{y}" stroke="{COLORS[i % len(COLORS)]}" '
                   f'stroke-width="2.5"/>')
        out.append(f'<text x="{x + 28}" y="{y + 4}">{name}</text>')


def fmt_ns(v):
    return f"{v / 1e6:g} ms" if v >= 1e6 else f"{v / 1e3:g} µs" if v >= 1e3 else f"{v:g} ns"


def fmt_bytes(v):
    # Ticks are powers of ten: decimal units read as round numbers (1 kB, not 0.976562 KiB).
    return f"{v / 1000:g} kB" if v >= 1000 else f"{v:g} B"


def latency_histogram(samples_path, out_path):
    data = defaultdict(list)
    for row in rows(samples_path):
        data[row["transport"]].append(float(row["ns"]))
    if not data:
        return
    allv = [v for vs in data.values() for v in vs if v > 0]
    xlo, xhi = log_axis(min(allv), max(allv))
    bins = 60
    out = svg_start("Round-trip latency, 64 B, two processes on separate cores")
    hists = {}
    for name, vs in data.items():
        counts = [0] * bins
        for v in vs:
            if v <= 0:
                continue
            b = int((math.log10(v) - xlo) / (xhi - xlo) * bins)
            counts[min(max(b, 0), bins - 1)] += 1
        hists[name] = [c / len(vs) for c in counts]
    ymax = max(max(h) for h in hists.values())
    frame(out, xlo, xhi, 0, 1, "round trip (log scale)", "share of samples", fmt_ns, str, False)
    pw, ph = W - L - R, H - T - B
    for i, (name, h) in enumerate(hists.items()):
        pts = []
        for b, c in enumerate(h):
            x0 = L + b / bins * pw
            x1 = L + (b + 1) / bins * pw
            y = T + ph - c / ymax * ph
            pts += [f"{x0:.1f},{y:.1f}", f"{x1:.1f},{y:.1f}"]
        out.append(f'<polyline fill="none" stroke="{COLORS[i % len(COLORS)]}" stroke-width="1.8" '
                   f'points="{" ".join(pts)}"/>')
    legend(out, list(hists))
    out.append("</svg>")
    with open(out_path, "w") as f:
        f.write("\n".join(out))


def throughput_vs_size(results_path, out_path):
    series = defaultdict(dict)
    for row in rows(results_path):
        w = row["workload"]
        if w.startswith("sweep_"):
            size = int(w.split("_")[1])
            series[row["transport"]][size] = float(row["value"]) * size / 1e9
    if not series:
        return
    sizes = sorted({s for v in series.values() for s in v})
    vals = [v for s in series.values() for v in s.values() if v > 0]
    xlo, xhi = log_axis(min(sizes) / 1.5, max(sizes) * 1.5)
    ylo, yhi = log_axis(min(vals), max(vals))
    out = svg_start("One-way throughput vs message size (1 producer, 1 consumer)")
    frame(out, xlo, xhi, ylo, yhi, "message size (log scale)", "GB/s (log scale)", fmt_bytes,
          lambda v: f"{v:g}")
    pw, ph = W - L - R, H - T - B
    for i, (name, pts_by_size) in enumerate(series.items()):
        pts = []
        for s in sorted(pts_by_size):
            v = pts_by_size[s]
            if v <= 0:
                continue
            x = L + (math.log10(s) - xlo) / (xhi - xlo) * pw
            y = T + ph - (math.log10(v) - ylo) / (yhi - ylo) * ph
            pts.append((x, y))
        out.append(f'<polyline fill="none" stroke="{COLORS[i % len(COLORS)]}" stroke-width="2" points="'
                   + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + '"/>')
        for x, y in pts:
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{COLORS[i % len(COLORS)]}"/>')
    legend(out, list(series))
    out.append("</svg>")
    with open(out_path, "w") as f:
        f.write("\n".join(out))


def markdown_table(results_path, out_path):
    """The headline table of docs/PERFORMANCE.md, from the same run."""
    vals = defaultdict(dict)
    for row in rows(results_path):
        vals[row["transport"]][row["workload"]] = float(row["value"])
    cols = [("rtt64", "RTT p50 64 B", "ns"), ("tput64", "64 B msgs/s", "rate"),
            ("tput4k", "4 KiB msgs/s", "rate"), ("tput64_2p2c", "2P+2C 64 B", "rate"),
            ("tput64_4p4c", "4P+4C 64 B", "rate"),
            ("tput64_samecore", "one core 64 B", "rate"),
            ("rtt_samecore", "RTT p50 one core", "ns")]

    def fmt(v, kind):
        if kind == "ns":
            return fmt_ns(round(v)) if v < 1e3 else fmt_ns(round(v, -1 if v < 1e5 else -3))
        return f"{v / 1e6:.2f} M" if v >= 1e6 else f"{v / 1e3:.0f} k"

    lines = ["| transport | " + " | ".join(c[1] for c in cols) + " |",
             "|---" * (len(cols) + 1) + "|"]
    for name, row in vals.items():
        if not any(c[0] in row for c in cols):
            continue
        cells = [fmt(row[c[0]], c[2]) if c[0] in row else "–" for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    with open(out_path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "target/shmq-bench"
    dst = sys.argv[2] if len(sys.argv) > 2 else "docs/img"
    os.makedirs(dst, exist_ok=True)
    latency_histogram(os.path.join(src, "rtt_samples.csv"), os.path.join(dst, "rtt_histogram.svg"))
    throughput_vs_size(os.path.join(src, "results.csv"), os.path.join(dst, "throughput_vs_size.svg"))
    markdown_table(os.path.join(src, "results.csv"), os.path.join(src, "table.md"))
    print(f"wrote {dst}/rtt_histogram.svg, {dst}/throughput_vs_size.svg and {src}/table.md")


if __name__ == "__main__":
    main()
