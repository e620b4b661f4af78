#!/usr/bin/env python3
"""The batch-size curve of an encrypted batch-layout network: total server time and amortised
time per image against the number of images in the run, from the `run.txt` records that
`benches/runs/sq-batch.sh` leaves (its `hecc run` summary line), as an SVG.

Usage: scripts/batch_curve.py OUT.svg RUN_DIR [RUN_DIR ...]
Each RUN_DIR holds a run.txt; the points are sorted by image count. Prints a Markdown table.
"""
import math
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from beaa_report import Svg  # noqa: E402

SUMMARY = re.compile(r"^run: (\d+) nodes in ([0-9.]+) s \(([0-9.]+) ms per image over (\d+) images\)"
                     r".*peak memory (\d+) MiB")


def point(run_dir):
    for line in (Path(run_dir) / "run.txt").read_text().replace("\r", "\n").splitlines():
        m = SUMMARY.match(line)
        if m:
            return {"images": int(m[4]), "total": float(m[2]), "per_image": float(m[3]) / 1000,
                    "peak_mib": int(m[5]), "dir": run_dir}
    sys.exit(f"{run_dir}/run.txt has no run summary line (an unfinished run?)")


def axis_panel(svg, x0, y0, w, h, pts, key, title, ylabel):
    xs = [math.log2(p["images"]) for p in pts]
    ys = [p[key] for p in pts]
    xlo, xhi = min(xs) - 1, max(xs) + 1
    yhi = max(ys) * 1.15
    sx = lambda x: x0 + (x - xlo) / (xhi - xlo) * w  # noqa: E731
    sy = lambda y: y0 + h - y / yhi * h  # noqa: E731
    svg.line(x0, y0 + h, x0 + w, y0 + h)
    svg.line(x0, y0, x0, y0 + h)
    for i in range(5):
        v = yhi * i / 4
        svg.line(x0 - 4, sy(v), x0, sy(v))
        svg.text(x0 - 6, sy(v) + 4, f"{v:.3g}", 10, "end")
    for p, x in zip(pts, xs):
        svg.line(sx(x), y0 + h, sx(x), y0 + h + 4)
        svg.text(sx(x), y0 + h + 16, f"{p['images']:,}", 10, "middle")
    svg.poly([(sx(x), sy(y)) for x, y in zip(xs, ys)], "#1f77b4", 2)
    for x, y in zip(xs, ys):
        svg.add(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" fill="#1f77b4"/>')
        svg.text(sx(x) + 6, sy(y) - 6, f"{y:.3g}", 10)
    svg.text(x0 + w / 2, y0 - 8, title, 13, "middle")
    svg.text(x0 + w / 2, y0 + h + 32, "images in the run (log scale)", 11, "middle")
    svg.text(x0 - 48, y0 + h / 2, ylabel, 11, "middle", rotate=-90)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    pts = sorted((point(d) for d in sys.argv[2:]), key=lambda p: p["images"])
    svg = Svg(900, 380)
    axis_panel(svg, 80, 40, 330, 280, pts, "total", "server run, total", "seconds")
    axis_panel(svg, 530, 40, 330, 280, pts, "per_image", "server run, amortised per image", "seconds per image")
    svg.save(Path(sys.argv[1]))
    print("| images | total (s) | per image (s) | peak resident (MiB) | record |")
    print("|---:|---:|---:|---:|---|")
    for p in pts:
        print(f"| {p['images']:,} | {p['total']:.1f} | {p['per_image']:.3f} | {p['peak_mib']:,} | {p['dir']} |")


if __name__ == "__main__":
    main()
