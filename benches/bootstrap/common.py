"""Helpers shared by openfhe_boot.py and desilo_boot.py (standard library + numpy only).

Each benchmark script prints exactly ONE JSON line on stdout; everything else
(progress, warnings) goes to stderr.
"""

import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

SEED = 20261204  # fixed numpy seed: every library bootstraps the same input vector


def parse_args(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--log-n", type=int, default=16, help="log2 of the ring dimension N")
    p.add_argument("--slots", type=int, default=0, help="number of slots (default N/2)")
    p.add_argument("--threads", type=int, default=1, help="worker threads for the library")
    p.add_argument("--reps", type=int, default=1, help="bootstraps to time (median is reported)")
    p.add_argument("--chain", type=int, default=0,
                   help="extra test: K rounds of (bootstrap, x <- x*x - 0.5, drop to lowest level)")
    p.add_argument("--insecure", action="store_true",
                   help="small test parameters without a security guarantee")
    return p


def set_thread_env(threads):
    """Must run before the FHE library is imported (OpenMP reads these at load time)."""
    for var in ("OMP_NUM_THREADS", "RAYON_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    # numpy's BLAS is not used on the hot path; keep it single threaded anyway.
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def input_vector(slots):
    import numpy as np
    rng = np.random.default_rng(SEED)
    return rng.uniform(-1.0, 1.0, slots)


def chain_reference(x, rounds):
    """Plaintext model of the --chain test: each round x <- x*x - 0.5."""
    import numpy as np
    y = np.array(x, dtype=np.float64)
    for _ in range(rounds):
        y = y * y - 0.5
    return y


class ErrStats:
    """Pools absolute errors over several decryptions."""

    def __init__(self):
        self.total = 0.0
        self.count = 0
        self.max = 0.0

    def add(self, got, want):
        import numpy as np
        # Real parts only: the inputs are real, and every library is measured the same way.
        got = np.real(np.asarray(got))[: len(want)]
        if len(got) < len(want):
            raise RuntimeError(f"decryption returned {len(got)} values, expected {len(want)}")
        err = np.abs(got - np.asarray(want, dtype=np.float64))
        self.total += float(err.sum())
        self.count += len(err)
        self.max = max(self.max, float(err.max()))

    def bits(self):
        """(mean, worst) precision in bits: -log2(mean |err|), -log2(max |err|)."""
        def b(e):
            if e <= 0.0:
                return None  # exact: no finite precision figure
            return round(-math.log2(e), 2)
        mean = self.total / self.count if self.count else float("nan")
        return b(mean), b(self.max)


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def mem_available_bytes():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class Clock:
    def __init__(self):
        self.t = time.perf_counter()

    def lap(self):
        now = time.perf_counter()
        dt, self.t = now - self.t, now
        return dt


def timed(fn):
    t0 = time.perf_counter()
    r = fn()
    return r, time.perf_counter() - t0


def emit(record):
    base = {
        "library": None, "version": None, "log_n": None, "slots": None, "threads": None,
        "boot_s": None, "boot_s_all": [], "keygen_s": None,
        "prec_mean_bits": None, "prec_worst_bits": None, "levels_left": None,
        "key_bytes": None, "peak_rss_bytes": peak_rss_bytes(), "secure": None, "notes": "",
    }
    base.update(record)
    if base["boot_s_all"] and base["boot_s"] is None:
        base["boot_s"] = statistics.median(base["boot_s_all"])
    for k in ("boot_s", "keygen_s"):
        if isinstance(base[k], float):
            base[k] = round(base[k], 4)
    base["boot_s_all"] = [round(t, 4) for t in base["boot_s_all"]]
    print(json.dumps(base), flush=True)
