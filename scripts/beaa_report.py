#!/usr/bin/env python3
"""The BEAA table (mean and standard deviation over seeds) and its figures, from the outputs of
`scripts/beaa-table.sh`: OUT/<net>-<data>/seed<S>/<row>.history.json (per-epoch history written
by `hecc train --history`) and <row>.safetensors (trained weights).

Usage: beaa_report.py OUT [--nets lenet5 ...] [--datasets mnist ...] [--figures DIR]

Writes OUT/table.md (and prints it) and, with --figures, SVG files into DIR:
  curves-<net>-<data>.svg      test accuracy and training loss per epoch, every row (seed 0)
  coeffs-<net>-<data>.svg      the element-wise + KD network's learned coefficients a, b, c of
                               every activation as heat maps (seed 0)
Only the Python standard library is used (the SVG is written by hand).
"""
import argparse
import base64
import json
import math
import struct
import sys
import zlib
from pathlib import Path

ROWS = [
    ("relu", "ReLU (teacher)"),
    ("layer", "layer-wise"),
    ("channel", "channel-wise"),
    ("element", "element-wise"),
    ("channel-kd", "channel-wise + KD"),
    ("element-kd", "element-wise + KD"),
]
COLOURS = {
    "relu": "#000000",
    "layer": "#8c564b",
    "channel": "#1f77b4",
    "element": "#2ca02c",
    "channel-kd": "#9467bd",
    "element-kd": "#d62728",
}


def history(run_dir, row):
    """The history of one row's network."""
    p = run_dir / f"{row}.history.json"
    if not p.exists():
        return None
    return json.loads(p.read_text()).get("student")


def seeds_of(base):
    return sorted(p for p in base.glob("seed*") if p.is_dir())


def mean_std(xs):
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, float("nan")
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def table(out, nets, datasets):
    cols = [f"{n}-{d}" for n in nets for d in datasets]
    stats = {}
    meta = {}
    for c in cols:
        for sd in seeds_of(out / c):
            for row, _ in ROWS:
                h = history(sd, row)
                if h is None:
                    continue
                stats.setdefault((c, row), []).append(
                    (100.0 * h["test_accuracy"], h["seconds"], len(h["epochs"]), h["best_epoch"]))
            p = sd / "element.history.json"
            if p.exists() and c not in meta:
                meta[c] = json.loads(p.read_text())
    lines = []
    lines.append("Test accuracy (%) on the full 10,000-image test set: the reference evaluator (f64) on")
    lines.append("the exported weights of the exact polynomial network; mean ± sample standard deviation")
    lines.append("over the seeds (n), the mean training time per run and the mean kept (best validation) epoch in")
    lines.append("brackets (KD rows exclude the teacher's training, which is the ReLU row). Settings:")
    for c, m in meta.items():
        lines.append(f"{c}: up to {m['epochs']} epochs, batch {m['batch_size']}, lr {m['lr']} (cosine), "
                     f"validation split {m['validation']} images, patience {m['patience']}, "
                     f"{m['threads']} threads.")
    lines.append("")
    lines.append("| activation | " + " | ".join(cols) + " |")
    lines.append("|---|" + "---|" * len(cols))
    for row, label in ROWS:
        cells = []
        for c in cols:
            v = stats.get((c, row))
            if not v:
                cells.append("-")
                continue
            m, s = mean_std([x[0] for x in v])
            t = sum(x[1] for x in v) / len(v)
            ep = sum(x[3] for x in v) / len(v)
            sd = "" if math.isnan(s) else f" ± {s:.2f}"
            cells.append(f"{m:.2f}{sd} (n={len(v)}, {t:.0f} s, kept epoch {ep:.1f})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    # The paper's ordering, pair by pair, against the seed spread.
    order = ["relu", "element-kd", "element", "channel", "layer"]
    lines.append("The paper's ordering ReLU > element-wise + KD > element-wise > channel-wise > layer-wise,")
    lines.append("pair by pair (difference of the means; 'holds' / 'reversed' when it exceeds the sum of")
    lines.append("the two standard deviations, 'within noise' otherwise):")
    lines.append("")
    for c in cols:
        parts = []
        pairs = list(zip(order, order[1:])) + [("element-kd", "channel"), ("channel-kd", "channel")]
        for a, b in pairs:
            va, vb = stats.get((c, a)), stats.get((c, b))
            if not va or not vb:
                continue
            ma, sa = mean_std([x[0] for x in va])
            mb, sb = mean_std([x[0] for x in vb])
            d = ma - mb
            spread = (0 if math.isnan(sa) else sa) + (0 if math.isnan(sb) else sb)
            verdict = "holds" if d > spread else ("reversed" if -d > spread else "within noise")
            parts.append(f"{a} - {b} = {d:+.2f} ({verdict})")
        lines.append(f"- {c}: " + "; ".join(parts))
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)
    return text


# ---- SVG ------------------------------------------------------------------------------------

def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Svg:
    def __init__(self, w, h):
        self.w, self.h, self.items = w, h, []

    def add(self, s):
        self.items.append(s)

    def text(self, x, y, s, size=12, anchor="start", rotate=None):
        rot = f' transform="rotate({rotate} {x} {y})"' if rotate else ""
        self.add(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}"'
                 f' font-family="sans-serif"{rot}>{esc(s)}</text>')

    def line(self, x1, y1, x2, y2, colour="#000", width=1):
        self.add(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                 f'stroke="{colour}" stroke-width="{width}"/>')

    def poly(self, pts, colour, width=1.5):
        p = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        self.add(f'<polyline points="{p}" fill="none" stroke="{colour}" stroke-width="{width}"/>')

    def rect(self, x, y, w, h, fill):
        self.add(f'<rect x="{x:.2f}" y="{y:.2f}" width="{w:.2f}" height="{h:.2f}" fill="{fill}"/>')

    def save(self, path):
        body = "\n".join(self.items)
        path.write_text(f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.w}" height="{self.h}" '
                        f'viewBox="0 0 {self.w} {self.h}">\n<rect width="100%" height="100%" '
                        f'fill="white"/>\n{body}\n</svg>\n')


def panel(svg, x0, y0, w, h, series, title, ylabel, xmax):
    """Line chart of `series` [(name, colour, [(x, y)])] in the box (x0, y0, w, h)."""
    ys = [y for _, _, pts in series for _, y in pts if y is not None and math.isfinite(y)]
    if not ys:
        return
    lo, hi = min(ys), max(ys)
    if hi - lo < 1e-9:
        hi = lo + 1
    pad = 0.05 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    sx = lambda x: x0 + (x - 1) / max(xmax - 1, 1) * w
    sy = lambda y: y0 + h - (y - lo) / (hi - lo) * h
    svg.line(x0, y0 + h, x0 + w, y0 + h)
    svg.line(x0, y0, x0, y0 + h)
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        svg.line(x0 - 4, sy(v), x0, sy(v))
        svg.text(x0 - 6, sy(v) + 4, f"{v:.2f}" if hi - lo < 10 else f"{v:.1f}", 10, "end")
    for e in range(1, xmax + 1, max(1, xmax // 10)):
        svg.line(sx(e), y0 + h, sx(e), y0 + h + 4)
        svg.text(sx(e), y0 + h + 16, e, 10, "middle")
    svg.text(x0 + w / 2, y0 - 8, title, 13, "middle")
    svg.text(x0 + w / 2, y0 + h + 32, "epoch", 11, "middle")
    svg.text(x0 - 44, y0 + h / 2, ylabel, 11, "middle", rotate=-90)
    for _, colour, pts in series:
        pts = [(sx(x), sy(y)) for x, y in pts if y is not None and math.isfinite(y)]
        if len(pts) > 1:
            svg.poly(pts, colour)


def curves(out, figures, net, ds):
    sd = (out / f"{net}-{ds}" / "seed0")
    acc, loss, xmax = [], [], 1
    for row, label in ROWS:
        h = history(sd, row)
        if not h:
            continue
        ep = h["epochs"]
        xmax = max(xmax, len(ep))
        acc.append((label, COLOURS[row],
                    [(e["epoch"], None if e["test_accuracy"] is None else 100 * e["test_accuracy"])
                     for e in ep]))
        loss.append((label, COLOURS[row], [(e["epoch"], e["loss"]) for e in ep]))
    if not acc:
        return None
    svg = Svg(980, 400)
    panel(svg, 70, 40, 360, 290, acc, f"{net} on {ds}: test accuracy (%)", "accuracy (%)", xmax)
    panel(svg, 530, 40, 360, 290, loss, f"{net} on {ds}: training loss", "loss", xmax)
    for i, (label, colour, _) in enumerate(acc):
        y = 60 + 18 * i
        svg.line(900, y - 4, 920, y - 4, colour, 2)
        svg.text(924, y, label, 10)
    p = figures / f"curves-{net}-{ds}.svg"
    svg.save(p)
    return p


def read_safetensors(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        fmt = {"F32": "f", "F64": "d"}.get(meta["dtype"])
        if fmt is None:
            continue
        size = struct.calcsize(fmt)
        vals = struct.unpack(f"<{(b - a) // size}{fmt}", raw[8 + n + a:8 + n + b])
        out[name] = (meta["shape"], vals)
    return out


def rgb(v, lim):
    """Diverging blue-white-red for v in [-lim, lim]."""
    t = max(-1.0, min(1.0, v / lim)) if lim > 0 else 0.0
    if t >= 0:
        return 255, int(255 * (1 - t)), int(255 * (1 - t))
    return int(255 * (1 + t)), int(255 * (1 + t)), 255


def png(width, rows):
    """A PNG (8-bit RGB) of `rows`, each a list of (r, g, b) of length `width`."""
    def chunk(kind, data):
        c = kind + data
        return struct.pack(">I", len(data)) + c + struct.pack(">I", zlib.crc32(c) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + bytes(v for px in row for v in px) for row in rows)
    ihdr = struct.pack(">IIBBBBB", width, len(rows), 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


def coeffs(out, figures, net, ds, row="element-kd"):
    p = out / f"{net}-{ds}" / "seed0" / f"{row}.safetensors"
    if not p.exists():
        return None
    w = read_safetensors(p)
    acts = [(k, v) for k, v in sorted(w.items()) if k.endswith(".coeffs")]
    if not acts:
        return None
    # One band per activation: rows a, b, c; a [C, H, W] tensor is shown as C tiles of H x W,
    # a vector [F] as one strip.
    cell, gap, left = 3, 14, 90
    bands = []
    width = 0
    for name, (shape, vals) in acts:
        per = len(vals) // 3
        inner = shape[1:]
        if len(inner) == 3:
            c, h, ww = inner
        elif len(inner) == 1:
            c, h, ww = 1, 1, inner[0]
        else:
            c, h, ww = 1, 1, per
        tiles_w = (c * (ww + 1) - 1) * cell
        width = max(width, tiles_w)
        bands.append((name, c, h, ww, vals, per))
    height = sum(3 * (h * cell + 6) + gap + 18 for _, _, h, _, _, _ in bands) + 40
    svg = Svg(left + max(width, 300) + 120, height)
    svg.text(10, 20, f"{net} on {ds}, {row}: learned a, b, c of y = a x^2 + b x + c (seed 0; "
             "blue < 0 < red, each row scaled to its largest |value|)", 12)
    y = 40
    for name, c, h, ww, vals, per in bands:
        svg.text(10, y + 10, name, 11)
        y += 16
        for k, letter in enumerate("abc"):
            part = vals[k * per:(k + 1) * per]
            lim = max(abs(v) for v in part) or 1.0
            svg.text(left - 10, y + h * cell / 2 + 4, f"{letter} (±{lim:.2g})", 10, "end")
            # One image per row: the C tiles side by side, one blank pixel column apart.
            pw = c * (ww + 1) - 1
            rows = []
            for i in range(h):
                row = []
                for ch in range(c):
                    if ch:
                        row.append((255, 255, 255))
                    row.extend(rgb(part[(ch * h + i) * ww + j], lim) for j in range(ww))
                rows.append(row)
            data = base64.b64encode(png(pw, rows)).decode()
            svg.add(f'<image x="{left}" y="{y}" width="{pw * cell}" height="{h * cell}" '
                    f'style="image-rendering:pixelated" preserveAspectRatio="none" '
                    f'href="data:image/png;base64,{data}"/>')
            y += h * cell + 6
        y += gap
    p = figures / f"coeffs-{net}-{ds}.svg"
    svg.save(p)
    return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--nets", nargs="+", default=["lenet5", "squeezenet28"])
    ap.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist"])
    ap.add_argument("--figures")
    a = ap.parse_args()
    out = Path(a.out)
    nets = [n for n in a.nets if (out / f"{n}-{a.datasets[0]}").exists()
            or any((out / f"{n}-{d}").exists() for d in a.datasets)]
    sys.stdout.write(table(out, nets, a.datasets))
    if a.figures:
        fig = Path(a.figures)
        fig.mkdir(parents=True, exist_ok=True)
        for n in nets:
            for d in a.datasets:
                for p in (curves(out, fig, n, d), coeffs(out, fig, n, d)):
                    if p:
                        print(f"wrote {p}")


if __name__ == "__main__":
    main()
