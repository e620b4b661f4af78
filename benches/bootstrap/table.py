#!/usr/bin/env python3
"""Markdown table of bootstrapping results (standard library only).

  table.py RESULTS.jsonl
      prints the table: one row per (library, log N, slots, threads); the ratio is
      library time / hecc time for the same log N, slots and threads (above 1: hecc is
      faster), so hecc's own rows read 1.00.
  table.py --append RESULTS.jsonl --defaults JSON [--unavailable REASON] < program_stdout
      (used by run.sh) takes the last JSON object line of stdin, fills the keys it lacks
      (or has as null) from --defaults and appends it to RESULTS.jsonl; with --unavailable
      it appends the defaults plus {"unavailable": REASON} instead. Exits 1 when stdin
      holds no JSON object and --unavailable is not given.
"""

import argparse
import json
import sys

LIB_ORDER = {"hecc": 0, "openfhe": 1, "desilo": 2}


def append(path, defaults, unavailable):
    defaults = json.loads(defaults) if defaults else {}
    if unavailable is not None:
        rec = dict(defaults, unavailable=unavailable)
    else:
        rec = None
        for line in sys.stdin.read().splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if isinstance(obj, dict):
                    rec = obj
        if rec is None:
            return 1
        for k, v in defaults.items():
            if rec.get(k) is None:
                rec[k] = v
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")
    return 0


def fmt_s(t):
    if t is None:
        return "—"
    return f"{t:.3f} s" if t < 10 else f"{t:.1f} s"


def fmt_gb(b):
    if b is None:
        return "—"
    return f"{b / 1e9:.2f} GB" if b < 1e10 else f"{b / 1e9:.1f} GB"


def fmt_bits(w, m):
    def one(b):
        return "—" if b is None else f"{b:.1f}"
    if w is None and m is None:
        return "—"
    return f"{one(w)} / {one(m)}"


def table(path):
    recs = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    recs.append(json.loads(line))
                except ValueError:
                    print(f"skipping a line that is not JSON: {line[:80]}", file=sys.stderr)
    if not recs:
        print("(no results)")
        return 0

    def key(r):
        return (r.get("log_n"), r.get("slots"), r.get("threads"))
    hecc = {key(r): r["boot_s"] for r in recs
            if r.get("library") == "hecc" and r.get("boot_s")}
    recs.sort(key=lambda r: (r.get("log_n") or 0, -(r.get("slots") or 0), r.get("threads") or 0,
                             LIB_ORDER.get(r.get("library"), 9), r.get("library") or ""))
    chain = any(r.get("chain_k") for r in recs)
    head = ["library", "log N", "slots", "threads", "bootstrap (median)", "ratio to hecc",
            "precision worst / mean (bits)", "levels left", "key size", "peak memory", "keygen"]
    if chain:
        head.append("chain: rounds, worst / mean bits")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|")
    notes = []
    for r in recs:
        lib = r.get("library") or "?"
        if r.get("version"):
            lib += f" {r['version']}"
        if r.get("secure") is False:
            lib += " (insecure)"
        slots = r.get("slots")
        cells = [lib, str(r.get("log_n", "—")), f"{slots:,}" if isinstance(slots, int) else "—",
                 str(r.get("threads", "—"))]
        why = r.get("unavailable") or r.get("skipped")
        if why or r.get("boot_s") is None:
            label = "unavailable" if r.get("unavailable") else "skipped"
            cells += [f"{label}: {why or 'no time reported'}"] + ["—"] * (len(head) - 5)
        else:
            reps = len(r.get("boot_s_all") or [])
            t = fmt_s(r["boot_s"]) + (f" ({reps} runs)" if reps > 1 else "")
            other = r.get("other_cpu_s")
            busy = sum(r.get("boot_s_all") or [r["boot_s"]]) + (r.get("keygen_s") or 0)
            if isinstance(other, (int, float)) and other > 0.1 * busy + 1:
                t += " (!)"
                notes.append((f"{lib}, {slots:,} slots, {r.get('threads')} threads",
                              f"(!) other work took {other:.0f} CPU-seconds during this run"))
            h = hecc.get(key(r))
            ratio = f"{r['boot_s'] / h:.2f}" if h else "—"
            cells += [t, ratio, fmt_bits(r.get("prec_worst_bits"), r.get("prec_mean_bits")),
                      "—" if r.get("levels_left") is None else str(r["levels_left"]),
                      fmt_gb(r.get("key_bytes")), fmt_gb(r.get("peak_rss_bytes")),
                      fmt_s(r.get("keygen_s"))]
            if chain:
                cells.append(f"{r['chain_k']}: " + fmt_bits(r.get("chain_prec_worst_bits"),
                                                            r.get("chain_prec_mean_bits"))
                             if r.get("chain_k") else "—")
            if r.get("notes"):
                notes.append((f"{cells[0]}, {cells[2]} slots", r["notes"]))
        print("| " + " | ".join(cells) + " |")
    if notes:
        print()
        print("Notes:")
        # the same notes repeat for each thread count; print each once
        seen = set()
        for who, text in notes:
            if (who, text) not in seen:
                seen.add((who, text))
                print(f"- {who}: {text}")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results")
    ap.add_argument("--append", action="store_true")
    ap.add_argument("--defaults", default="")
    ap.add_argument("--unavailable", default=None)
    # run.sh calls: table.py --append FILE ...; argparse then takes FILE as `results`
    args = ap.parse_args()
    if args.append:
        return append(args.results, args.defaults, args.unavailable)
    return table(args.results)


if __name__ == "__main__":
    sys.exit(main())
