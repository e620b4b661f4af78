"""DESILO FHE (desilofhe, CPU package) CKKS bootstrapping benchmark; prints one JSON line.

DESILO's bootstrapping engine has one fixed parameter set: N=2^16, 32,768 slots,
maximum level 17, and the library's own (128-bit) parameters; bootstrapping takes a
level-0 ciphertext to level 17. It has no smaller ring and no sparse-slot option, so
--insecure, --log-n other than 16 and --slots other than 32768 print a record with
"skipped" set (and boot_s null) instead of running.

Keys (--key):
  medium  create_bootstrap_key(sk, size="medium"): ~15.3 GB key, ~17.4 GB peak memory
  large   create_bootstrap_key(sk, size="large"): bigger and faster
  small   create_small_bootstrap_key + roll key: ~4 GB key, ~6.8 GB peak, slower
  auto    (default) medium if at least 20 GiB of memory is available, else small
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (ErrStats, chain_reference, emit, input_vector, log,  # noqa: E402
                    mem_available_bytes, parse_args, set_thread_env, timed)

LOG_N, SLOTS = 16, 32768


def version():
    try:
        import importlib.metadata as md
        return md.version("desilofhe")
    except Exception:
        return None


def main():
    ap = parse_args(__doc__)
    ap.add_argument("--key", choices=["auto", "small", "medium", "large"], default="auto")
    args = ap.parse_args()
    set_thread_env(args.threads)
    slots = args.slots or (1 << args.log_n) // 2
    common = dict(library="desilo", version=version(), log_n=args.log_n, slots=slots,
                  threads=args.threads, secure=True)

    why = None
    if args.insecure:
        why = "no small/insecure parameter set (bootstrapping engine is N=2^16 only)"
    elif args.log_n != LOG_N:
        why = f"bootstrapping engine is N=2^{LOG_N} only"
    elif slots != SLOTS:
        why = f"no sparse-slot bootstrapping: always {SLOTS} slots"
    if why:
        log(f"desilo: skipped: {why}")
        emit(dict(common, skipped=why, notes=why, secure=not args.insecure))
        return

    key_kind = args.key
    if key_kind == "auto":
        avail = mem_available_bytes() or 0
        key_kind = "medium" if avail >= 20 * 2**30 else "small"
        log(f"desilo: {avail / 2**30:.1f} GiB available -> {key_kind} bootstrap key")

    import numpy as np
    import desilofhe

    engine = desilofhe.Engine(mode="cpu", bootstrap=True, thread_count=args.threads)
    if engine.slot_count != SLOTS:
        raise RuntimeError(f"DESILO engine has {engine.slot_count} slots, expected {SLOTS}")
    log(f"desilo {common['version']}: N=2^{LOG_N}, slots={engine.slot_count}, "
        f"max level {engine.max_level}, threads={args.threads}, key={key_kind}")

    def keygen():
        sk = engine.create_secret_key()
        pk = engine.create_public_key(sk)
        rk = engine.create_relinearization_key(sk)
        ck = engine.create_conjugation_key(sk)
        if key_kind == "small":
            roll = engine.create_roll_key(sk)
            sbk = engine.create_small_bootstrap_key(sk)
            boot = lambda c: engine.bootstrap(c, rk, ck, roll, sbk)  # noqa: E731
            kb = rk.nbytes + ck.nbytes + roll.nbytes + sbk.nbytes
            parts = (f"relin {rk.nbytes}, conj {ck.nbytes}, roll {roll.nbytes}, "
                     f"small bootstrap {sbk.nbytes}")
        else:
            bk = engine.create_bootstrap_key(sk, size=key_kind)
            boot = lambda c: engine.bootstrap(c, rk, ck, bk)  # noqa: E731
            kb = rk.nbytes + ck.nbytes + bk.nbytes
            parts = f"relin {rk.nbytes}, conj {ck.nbytes}, bootstrap {bk.nbytes}"
        return sk, pk, rk, boot, kb, parts
    (sk, pk, rk, boot, key_bytes, parts), keygen_s = timed(keygen)
    log(f"desilo: keys in {keygen_s:.1f} s ({parts} bytes)")

    x = input_vector(SLOTS)
    ct = engine.encrypt(x, pk, level=0)
    log(f"desilo: input at level {ct.level} (lowest: 0)")

    errs = ErrStats()
    times = []
    levels_left = None
    for r in range(args.reps):
        out, dt = timed(lambda: boot(ct))
        times.append(dt)
        errs.add(engine.decrypt(out, sk), x)
        levels_left = out.level
        log(f"desilo: bootstrap {r + 1}/{args.reps}: {dt:.3f} s, level after {levels_left}")
    mean_bits, worst_bits = errs.bits()

    rec = {}
    if args.chain:
        # K rounds of: bootstrap, x <- x*x - 0.5 (ct x ct with relinearization; DESILO
        # rescales inside multiply), then drop to level 0 for the next bootstrap.
        c = ct
        chain_t = 0.0
        for k in range(args.chain):
            c, dt = timed(lambda: boot(c))
            chain_t += dt
            c = engine.subtract(engine.multiply(c, c, rk), 0.5)
            c = engine.level_down(c, 0)
        ce = ErrStats()
        ce.add(engine.decrypt(c, sk), chain_reference(x, args.chain))
        cm, cw = ce.bits()
        rec.update(chain_k=args.chain, chain_boot_s=round(chain_t, 4),
                   chain_prec_mean_bits=cm, chain_prec_worst_bits=cw)
        log(f"desilo: chain of {args.chain}: precision worst/mean {cw}/{cm} bits")

    notes = (f"{key_kind} bootstrap key; key_bytes = nbytes of {parts}; "
             f"level 0 -> {levels_left}; library's fixed 128-bit parameters")
    rec.update(common, boot_s_all=times, keygen_s=keygen_s, prec_mean_bits=mean_bits,
               prec_worst_bits=worst_bits, levels_left=levels_left, key_bytes=key_bytes,
               notes=notes)
    emit(rec)


if __name__ == "__main__":
    main()
