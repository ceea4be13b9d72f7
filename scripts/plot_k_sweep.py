#!/usr/bin/env python3
"""Draws data/cluster_k_sweep.csv (cluster-train, 2 processes, 10 M rows x 32, one run per K) as
an SVG: throughput and bytes sent per worker against K (--merge-every), log scales where they
belong, holdout loss in the labels. Standard library only.

    python3 scripts/plot_k_sweep.py data/cluster_k_sweep.csv data/cluster_k_sweep.svg
"""
import csv
import math
import sys

src, dst = sys.argv[1], sys.argv[2]
rows = list(csv.DictReader(open(src)))
W, H, L, R, T, B = 640, 360, 70, 80, 40, 50
pw, ph = W - L - R, H - T - B
ks = [float(r["k"]) for r in rows]
speed = [float(r["m_rows_per_sec"]) for r in rows]
sent = [float(r["bytes_per_worker"]) for r in rows]
x = lambda k: L + pw * (math.log10(k) - math.log10(min(ks))) / (math.log10(max(ks)) - math.log10(min(ks)))
ys = lambda v: T + ph * (1 - v / (math.ceil(max(speed) / 20) * 20))
lo, hi = math.floor(math.log10(min(sent))), math.ceil(math.log10(max(sent)))
yb = lambda v: T + ph * (1 - (math.log10(v) - lo) / (hi - lo))
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{W/2}" y="20" text-anchor="middle" font-size="14">cluster-train, 2 processes: merge period K against throughput and traffic</text>',
       f'<line x1="{L}" y1="{T+ph}" x2="{L+pw}" y2="{T+ph}" stroke="black"/>',
       f'<line x1="{L}" y1="{T}" x2="{L}" y2="{T+ph}" stroke="#1f77b4"/>',
       f'<line x1="{L+pw}" y1="{T}" x2="{L+pw}" y2="{T+ph}" stroke="#d62728"/>']
for k in ks:
    out.append(f'<text x="{x(k)}" y="{T+ph+16}" text-anchor="middle">{int(k)}</text>')
out.append(f'<text x="{L+pw/2}" y="{H-10}" text-anchor="middle">K = --merge-every (batches per worker between merges), log scale</text>')
top = math.ceil(max(speed) / 20) * 20
for v in range(0, top + 1, 20):
    out.append(f'<text x="{L-6}" y="{ys(v)+4}" text-anchor="end" fill="#1f77b4">{v}</text>')
out.append(f'<text x="18" y="{T+ph/2}" transform="rotate(-90 18 {T+ph/2})" text-anchor="middle" fill="#1f77b4">M rows/s</text>')
for e in range(lo, hi + 1):
    out.append(f'<text x="{L+pw+6}" y="{yb(10**e)+4}" fill="#d62728">1e{e}</text>')
out.append(f'<text x="{W-14}" y="{T+ph/2}" transform="rotate(90 {W-14} {T+ph/2})" text-anchor="middle" fill="#d62728">bytes sent per worker</text>')
for ys_, vals, color in ((ys, speed, "#1f77b4"), (yb, sent, "#d62728")):
    pts = " ".join(f"{x(k):.1f},{ys_(v):.1f}" for k, v in zip(ks, vals))
    out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
    out += [f'<circle cx="{x(k):.1f}" cy="{ys_(v):.1f}" r="3" fill="{color}"/>' for k, v in zip(ks, vals)]
for r, k, v in zip(rows, ks, speed):
    out.append(f'<text x="{x(k):.1f}" y="{ys(v)-8:.1f}" text-anchor="middle" font-size="10">loss {r["holdout_log_loss"]}</text>')
out.append("</svg>")
open(dst, "w").write("\n".join(out) + "\n")
