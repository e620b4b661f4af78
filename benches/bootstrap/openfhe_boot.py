"""OpenFHE CKKS bootstrapping benchmark; prints one JSON line (see common.emit).

Secure parameters (default), as measured in ../shared/PEERS.md: HEStd_128_classic,
UNIFORM_TERNARY secret, FLEXIBLEAUTO scaling, ring dimension 2^log_n, level budget
[4, 4], 55-bit scaling primes, 60-bit first prime, HYBRID key switching with 4 digits.
The levels kept after bootstrapping (--levels-after) default to the largest number,
from 10 down, that OpenFHE accepts as 128-bit secure at that ring dimension.
--insecure uses HEStd_NotSet (any ring dimension; for tests at log-n 12..13) and
--levels-after 2 unless given.

The input (uniform in [-1, 1], fixed seed) is encrypted at level depth-1, i.e. with
all levels used up, then bootstrapped --reps times (each from the same input).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (ErrStats, chain_reference, emit, input_vector, log, parse_args,  # noqa: E402
                    set_thread_env, timed)

LEVEL_BUDGET = [4, 4]
# FHECKKSRNS::GetBootstrapDepth(levelBudget, UNIFORM_TERNARY) is not exposed in the Python
# API: the approximate modular reduction takes 14 levels for a uniform ternary secret
# (Chebyshev series of depth 8 plus 6 double-angle steps), plus the level budget.
APPROX_MOD_DEPTH_UNIFORM = 14


def main():
    ap = parse_args(__doc__)
    ap.add_argument("--levels-after", type=int, default=0,
                    help="levels kept after bootstrapping (default: auto; 2 with --insecure)")
    ap.add_argument("--dnum", type=int, default=4, help="key-switching digits")
    ap.add_argument("--scale-bits", type=int, default=55)
    ap.add_argument("--first-mod-bits", type=int, default=60)
    args = ap.parse_args()
    set_thread_env(args.threads)
    import numpy as np
    import openfhe as fhe

    n = 1 << args.log_n
    slots = args.slots or n // 2
    if slots > n // 2 or slots & (slots - 1):
        raise SystemExit(f"--slots must be a power of two <= N/2 = {n // 2}")
    boot_depth = APPROX_MOD_DEPTH_UNIFORM + sum(LEVEL_BUDGET)
    secure = not args.insecure

    def make_context(levels_after):
        depth = levels_after + boot_depth
        p = fhe.CCParamsCKKSRNS()
        p.SetSecretKeyDist(fhe.UNIFORM_TERNARY)
        p.SetSecurityLevel(fhe.HEStd_128_classic if secure else fhe.HEStd_NotSet)
        p.SetRingDim(n)
        p.SetBatchSize(slots)
        p.SetScalingTechnique(fhe.FLEXIBLEAUTO)
        p.SetScalingModSize(args.scale_bits)
        p.SetFirstModSize(args.first_mod_bits)
        p.SetKeySwitchTechnique(fhe.HYBRID)
        p.SetNumLargeDigits(args.dnum)
        p.SetMultiplicativeDepth(depth)
        cc = fhe.GenCryptoContext(p)
        if cc.GetRingDimension() != n:
            raise RuntimeError(f"OpenFHE chose ring dimension {cc.GetRingDimension()}, not {n}")
        return cc, depth

    if args.levels_after:
        candidates = [args.levels_after]
    elif secure:
        candidates = list(range(10, 0, -1))
    else:
        candidates = [2]
    cc = None
    for la in candidates:
        try:
            cc, depth = make_context(la)
            levels_after = la
            break
        except Exception as e:  # OpenFHE raises when Q*P is too large for 128-bit at this N
            msg = str(e).strip().split("(): ", 1)[-1]
            log(f"openfhe: {la} levels after bootstrapping rejected: {msg[:200]}")
    if cc is None:
        raise SystemExit("openfhe: no parameter set accepted")
    log(f"openfhe: N=2^{args.log_n}, slots={slots}, depth={depth} "
        f"({levels_after} after bootstrapping), threads={args.threads}, secure={secure}")
    for feat in (fhe.PKE, fhe.KEYSWITCH, fhe.LEVELEDSHE, fhe.ADVANCEDSHE, fhe.FHE):
        cc.Enable(feat)

    _, setup_s = timed(lambda: cc.EvalBootstrapSetup(LEVEL_BUDGET, [0, 0], slots))
    log(f"openfhe: EvalBootstrapSetup {setup_s:.2f} s")

    def keygen():
        keys = cc.KeyGen()
        cc.EvalMultKeyGen(keys.secretKey)
        cc.EvalBootstrapKeyGen(keys.secretKey, slots)
        return keys
    keys, keygen_s = timed(keygen)
    sk, pk = keys.secretKey, keys.publicKey
    log(f"openfhe: KeyGen + EvalMultKeyGen + EvalBootstrapKeyGen {keygen_s:.2f} s")

    # Key size: OpenFHE's Python API can serialize the whole automorphism-key map only
    # (that would copy several GB), so serialize the relinearization key, which has the
    # same shape (dnum digits x 2 polynomials over all Q and P primes) as every rotation
    # key, and multiply by the number of keys.
    key_bytes = None
    n_auto = None
    try:
        tag = sk.GetKeyTag()
        n_auto = len(cc.GetExistingEvalAutomorphismKeyIndices(tag))
        relin = cc.GetEvalMultKeyVector(tag)[0]
        one = len(fhe.Serialize(relin, fhe.BINARY))
        key_bytes = one * (1 + n_auto)
    except Exception as e:
        log(f"openfhe: key size unavailable: {e}")

    x = input_vector(slots)
    pt = cc.MakeCKKSPackedPlaintext(x, 1, depth - 1, None, slots)
    ct = cc.Encrypt(pk, pt)
    log(f"openfhe: input at level {ct.GetLevel()} of {depth} (lowest: {depth - 1})")

    def decrypt(c):
        out = cc.Decrypt(sk, c)
        out.SetLength(slots)
        return np.array(out.GetRealPackedValue())

    errs = ErrStats()
    times = []
    levels_left = None
    for r in range(args.reps):
        out, dt = timed(lambda: cc.EvalBootstrap(ct))
        times.append(dt)
        errs.add(decrypt(out), x)
        levels_left = depth - out.GetLevel() - (out.GetNoiseScaleDeg() - 1)
        log(f"openfhe: bootstrap {r + 1}/{args.reps}: {dt:.3f} s, levels left {levels_left}")
    mean_bits, worst_bits = errs.bits()

    rec = {}
    if args.chain:
        # K rounds of: bootstrap, x <- x*x - 0.5 (ct x ct, relinearize, rescale). FLEXIBLEAUTO
        # rescales by itself; EvalBootstrap starts from whatever level it is given.
        c = ct
        chain_t = 0.0
        for k in range(args.chain):
            c, dt = timed(lambda: cc.EvalBootstrap(c))
            chain_t += dt
            c = cc.EvalSub(cc.EvalMult(c, c), 0.5)
        ce = ErrStats()
        ce.add(decrypt(c), chain_reference(x, args.chain))
        cm, cw = ce.bits()
        rec.update(chain_k=args.chain, chain_boot_s=round(chain_t, 4),
                   chain_prec_mean_bits=cm, chain_prec_worst_bits=cw)
        log(f"openfhe: chain of {args.chain}: precision worst/mean {cw}/{cm} bits")

    notes = (f"level budget {LEVEL_BUDGET}, depth {depth} ({levels_after} after bootstrapping), "
             f"{args.scale_bits}-bit scaling, {args.first_mod_bits}-bit first prime, dnum {args.dnum}, "
             f"FLEXIBLEAUTO, UNIFORM_TERNARY, {'HEStd_128_classic' if secure else 'HEStd_NotSet'}; "
             f"keygen_s excludes EvalBootstrapSetup (setup_s); "
             f"key_bytes = serialized relinearization key x (1 + {n_auto} automorphism keys)")
    rec.update(library="openfhe", version=getattr(fhe, "__version__", None), log_n=args.log_n,
               slots=slots, threads=args.threads, boot_s_all=times, keygen_s=keygen_s,
               setup_s=round(setup_s, 4),
               prec_mean_bits=mean_bits, prec_worst_bits=worst_bits, levels_left=levels_left,
               key_bytes=key_bytes, secure=secure, notes=notes)
    emit(rec)


if __name__ == "__main__":
    main()
