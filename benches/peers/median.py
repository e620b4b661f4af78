"""Median hecc/SEAL ratios over several runs of run.sh.

Usage: python3 median.py OUT_DIR [OUT_DIR ...]   (each OUT_DIR written by `run.sh --out`)

For every ring size and operation: the hecc/SEAL ratio of medians in each run, then the
median of those ratios across runs, with the smallest and largest in brackets. Checks the
issue's targets on the median ratios: every op <= 1.0, relinearize and rotate <= 0.5 at
N=2^15. Prints a Markdown table.
"""

import statistics
import sys

from compare import load
from timing import OPS


def main():
    outs = sys.argv[1:]
    if not outs:
        print(__doc__)
        return 2
    runs = [(load(o, "hecc"), load(o, "seal")) for o in outs]
    configs = []
    for h, _ in runs:
        for c in (h or {}).get("configs", {}):
            if c not in configs:
                configs.append(c)
    missed = []
    print(f"hecc/SEAL, median of {len(outs)} runs [min, max]\n")
    print("| op | " + " | ".join(configs) + " |")
    print("|---|" + "---:|" * len(configs))
    for op, _ in OPS:
        cells = []
        for c in configs:
            ratios = []
            for h, s in runs:
                hv = (h or {}).get("configs", {}).get(c, {}).get("ops", {}).get(op)
                sv = (s or {}).get("configs", {}).get(c, {}).get("ops", {}).get(op)
                if hv and sv:
                    ratios.append(hv / sv)
            if not ratios:
                cells.append("—")
                continue
            m = statistics.median(ratios)
            cells.append(f"{m:.2f} [{min(ratios):.2f}, {max(ratios):.2f}]")
            limit = 0.5 if (op in ("relinearize", "rotate") and c.startswith("N=2^15")) else 1.0
            if m > limit:
                missed.append(f"{op} at {c}: {m:.2f} > {limit}")
        if any(x != "—" for x in cells):
            print(f"| {op} | " + " | ".join(cells) + " |")
    print()
    print("Targets missed: " + ("; ".join(missed) if missed else "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
