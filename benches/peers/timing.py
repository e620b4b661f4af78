"""Shared timing helpers and parameter sets for the peer benchmarks.

Every peer script (one per library, each run in its own subprocess by run.sh)
imports this module, times the same list of operations at the same ring
dimensions and prime bit sizes, and prints one JSON document on stdout:

    {"library": "...", "version": "...", "configs": {
        "N=2^13/L=3": {"params": {...}, "ops": {"encode": 345.1, ...}}}}

Times are medians in microseconds of single calls (or of one whole
multiply-accumulate for the mac ops); "ops_min" holds the fastest sample of
each operation, a check that is less sensitive to other load on the machine.
Only the standard library is used.
"""

import json
import os
import statistics
import sys
import time

# (log2 N, bit sizes of the ciphertext primes q_0..q_{L-1}, bit sizes of the special primes)
# hecc uses the special primes listed here; SEAL can only use one special prime
# (the last prime of its coefficient modulus), so it takes the first of them.
CONFIGS = [
    (13, [60, 40, 40], [60]),
    (14, [60] + [40] * 7, [60]),
    (15, [60] + [40] * 16, [60, 60, 60]),
]

SCALE_BITS = 40
HOIST_STEPS = list(range(1, 9))  # the 8 rotations of "rotate_hoisted8"
MAC_SIZES = [25, 845]
# At most this many distinct ciphertexts feed a multiply-accumulate; the k
# pairs cycle through them (845 fresh ciphertexts at N=2^15 would need 7.5 GB).
MAC_POOL = 16

# Names of the timed operations, in table order, with a one-line meaning.
OPS = [
    ("ntt_forward", "forward NTT of one limb (N coefficients)"),
    ("encode", "encode N/2 real slots at the top level"),
    ("encrypt", "public-key encryption of an encoded plaintext"),
    ("decrypt", "decryption to a plaintext (no decode)"),
    ("decode", "decode a plaintext to N/2 real slots"),
    ("decrypt_decode", "decrypt then decode"),
    ("add", "ciphertext + ciphertext"),
    ("mul_plain", "ciphertext x encoded plaintext"),
    ("mul_scalar", "ciphertext x real constant"),
    ("mul", "ciphertext x ciphertext (3 polynomials out)"),
    ("relinearize", "relinearize a 3-polynomial ciphertext"),
    ("mul_relin", "multiply then relinearize"),
    ("rescale", "rescale by the last prime"),
    ("mul_relin_rescale", "multiply, relinearize, rescale"),
    ("rotate", "rotate slots by 1"),
    ("rotate_hoisted8", "8 rotations (steps 1..8) of one ciphertext"),
    ("mac25", "sum of 25 (ciphertext x constant) products"),
    ("mac845", "sum of 845 (ciphertext x constant) products"),
]


def config_id(log_n, q_bits):
    """The benchmark ID prefix shared with the Rust side, e.g. N=2^14/L=8."""
    return f"N=2^{log_n}/L={len(q_bits)}"


def selected_configs():
    """The configs to run: all, or those whose log N is in $HECC_BENCH_LOGN (e.g. "13,14")."""
    want = os.environ.get("HECC_BENCH_LOGN", "").strip()
    if not want:
        return CONFIGS
    keep = {int(x) for x in want.split(",") if x.strip()}
    return [c for c in CONFIGS if c[0] in keep]


class Timer:
    """Median-of-repetitions timer with a per-operation time budget.

    `budget_s` bounds the time spent on one operation (after `min_reps`
    repetitions are done); `max_reps` caps fast operations.
    """

    def __init__(self, budget_s=None, min_reps=5, max_reps=200):
        if budget_s is None:
            budget_s = float(os.environ.get("HECC_BENCH_BUDGET", "1.0"))
        self.budget_s = budget_s
        self.min_reps = min_reps
        self.max_reps = max_reps
        self.last_min = None

    def median_us(self, op, setup=None, min_reps=None, div=1.0):
        """Median wall time of `op(arg)` in µs, divided by `div`, where `arg = setup()` runs untimed before each call."""
        min_reps = self.min_reps if min_reps is None else min_reps
        arg = setup() if setup else None
        op(arg)  # warm-up (page faults, lazy tables)
        samples = []
        start = time.perf_counter()
        while len(samples) < self.max_reps:
            arg = setup() if setup else None
            t0 = time.perf_counter_ns()
            op(arg)
            t1 = time.perf_counter_ns()
            samples.append((t1 - t0) / 1000.0)
            if len(samples) >= min_reps and time.perf_counter() - start > self.budget_s:
                break
        self.last_min = min(samples) / div
        return statistics.median(samples) / div


def log(msg):
    """Progress to stderr (stdout carries the JSON document only)."""
    print(msg, file=sys.stderr, flush=True)


def emit(doc):
    """Print the result document as JSON on stdout."""
    json.dump(doc, sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")
    sys.stdout.flush()


_MINS = {}


def measure(ops, name, run, timer=None):
    """Store `run()` (a median in µs) as ops[name]; on failure store None and log why.

    With `timer`, the fastest sample of that run is kept for `take_mins()`.
    """
    try:
        ops[name] = run()
        if timer is not None:
            _MINS[name] = timer.last_min
    except Exception as exc:  # one failing operation must not lose the others
        log(f"  {name} failed: {exc!r}")
        ops[name] = None


def take_mins():
    """The fastest samples recorded by `measure` since the last call (µs by op name)."""
    out = dict(_MINS)
    _MINS.clear()
    return out
