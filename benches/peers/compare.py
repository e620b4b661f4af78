"""Reads the per-library JSON results of run.sh and prints the hecc/peer ratio table.

Usage: python3 compare.py OUT_DIR   (OUT_DIR holds hecc.json, seal.json, openfhe.json;
a missing or failed file makes that column "n/a"). Writes OUT_DIR/table.md too.

ratio = hecc median / peer median: below 1 means hecc is faster. The "(min)"
columns divide the fastest samples instead, a cross-check that other load on
the machine disturbs less. Targets checked (on medians): every op <= 1.0
against SEAL, and relinearize and rotate <= 0.5 against SEAL at N=2^15.
"""

import glob
import json
import os
import sys

from timing import OPS

PEERS = [("seal", "SEAL"), ("openfhe", "OpenFHE")]
STRICT = {"relinearize", "rotate"}  # target 0.5 at N=2^15


def load(out, name):
    """Merges OUT/name.json and OUT/name-<logN>.json; None if there is none."""
    doc = None
    paths = sorted(glob.glob(os.path.join(out, f"{name}.json")) + glob.glob(os.path.join(out, f"{name}-*.json")))
    for path in paths:
        try:
            with open(path) as f:
                part = json.load(f)
        except (OSError, ValueError):
            continue
        if doc is None:
            doc = part
        else:
            doc.setdefault("configs", {}).update(part.get("configs", {}))
    return doc


def fmt_us(v):
    if v is None:
        return "—"
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


def fmt_ratio(h, p):
    if h is None or p is None or p <= 0:
        return "—"
    return f"{h / p:.2f}"


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "out"
    docs = {name: load(out, name) for name in ["hecc", "seal", "openfhe"]}
    lines = []
    try:
        with open(os.path.join(out, "load.txt")) as f:
            lines.extend(l.rstrip() for l in f if l.strip())
    except OSError:
        pass
    for name, d in docs.items():
        if d:
            lines.append(f"{name}: {d.get('library', name)} {d.get('version', '')}")
    misses = []
    cids = []
    for d in docs.values():
        if d:
            for cid in d.get("configs", {}):
                if cid not in cids:
                    cids.append(cid)
    cids.sort(key=lambda c: int(c.split("^")[1].split("/")[0]))
    for name, d in docs.items():
        if d is None:
            lines.append(f"{name}: unavailable (no result; see {out}/{name}*.log)")
    for cid in cids:
        cfg = {n: ((d or {}).get("configs", {}).get(cid) or {}) for n, d in docs.items()}
        for n, c in cfg.items():
            if "error" in c:
                lines.append(f"{n} {cid}: failed: {c['error']}")
        lines.append("")
        lines.append(f"### {cid}")
        lines.append("")
        for n, c in cfg.items():
            if "params" in c:
                lines.append(f"- {n}: " + ", ".join(f"{k}={v}" for k, v in c["params"].items()))
        lines.append("")
        head = "| op | hecc µs | SEAL µs | OpenFHE µs | hecc/SEAL | hecc/OpenFHE | hecc/SEAL (min) | hecc/OpenFHE (min) |"
        lines.append(head)
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        ops = {n: c.get("ops", {}) for n, c in cfg.items()}
        mins = {n: c.get("ops_min", {}) for n, c in cfg.items()}
        for op, _ in OPS:
            h = ops["hecc"].get(op)
            s = ops["seal"].get(op)
            o = ops["openfhe"].get(op)
            if h is None and s is None and o is None:
                continue
            rs = fmt_ratio(h, s)
            hm, sm, om = mins["hecc"].get(op), mins["seal"].get(op), mins["openfhe"].get(op)
            lines.append(
                f"| {op} | {fmt_us(h)} | {fmt_us(s)} | {fmt_us(o)} | {rs} | {fmt_ratio(h, o)} "
                f"| {fmt_ratio(hm, sm)} | {fmt_ratio(hm, om)} |"
            )
            if h is not None and s is not None and s > 0:
                target = 0.5 if (op in STRICT and cid.startswith("N=2^15")) else 1.0
                if h / s > target:
                    misses.append(f"{cid}/{op}: hecc/SEAL = {h / s:.2f} > {target}")
    lines.append("")
    if docs["hecc"] and docs["seal"]:
        lines.append("Targets missed (hecc/SEAL): " + ("none" if not misses else ""))
        lines.extend(f"- {m}" for m in misses)
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
