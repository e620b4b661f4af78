"""Times OpenFHE (openfhe-python) CKKS operations; prints JSON (see timing.py).

Parameters: ring dimension N, first prime 60 bits, scaling primes 40 bits,
multiplicative depth L-1 (so L ciphertext primes), FIXEDMANUAL scaling (rescale
is explicit, as in SEAL and hecc), HYBRID key switching with $HECC_OPENFHE_DNUM
digits (default: one digit per ciphertext prime, which makes OpenFHE pick a
single ~60-bit special prime as SEAL does), security HEStd_NotSet so that the
chosen N is kept (the moduli are within the 128-bit bound anyway).

OpenFHE's Python API has no NTT entry point (no `ntt_forward`), and its
Decrypt also decodes (only `decrypt_decode` is reported). `mul_scalar` is
EvalMult(ct, float); the multiply-accumulate is EvalLinearWSum; the hoisted
rotations are EvalFastRotationPrecompute + 8 EvalFastRotation.
"""

import math
import os
import random

import openfhe as fhe

from timing import measure, take_mins, HOIST_STEPS, MAC_POOL, MAC_SIZES, SCALE_BITS, Timer, config_id, emit, log, selected_configs


def bench_config(log_n, q_bits, special_bits, timer):
    n = 1 << log_n
    levels = len(q_bits)
    dnum = int(os.environ.get("HECC_OPENFHE_DNUM", "0")) or levels
    p = fhe.CCParamsCKKSRNS()
    p.SetMultiplicativeDepth(levels - 1)
    p.SetFirstModSize(q_bits[0])
    p.SetScalingModSize(SCALE_BITS)
    p.SetRingDim(n)
    p.SetBatchSize(n // 2)
    p.SetScalingTechnique(fhe.FIXEDMANUAL)
    p.SetKeySwitchTechnique(fhe.HYBRID)
    p.SetNumLargeDigits(dnum)
    p.SetSecurityLevel(fhe.HEStd_NotSet)
    cc = fhe.GenCryptoContext(p)
    cc.Enable(fhe.PKESchemeFeature.PKE)
    cc.Enable(fhe.PKESchemeFeature.KEYSWITCH)
    cc.Enable(fhe.PKESchemeFeature.LEVELEDSHE)
    cc.Enable(fhe.PKESchemeFeature.ADVANCEDSHE)
    if cc.GetRingDimension() != n:
        raise RuntimeError(f"OpenFHE chose ring dimension {cc.GetRingDimension()}, not {n}")

    keys = cc.KeyGen()
    cc.EvalMultKeyGen(keys.secretKey)
    cc.EvalRotateKeyGen(keys.secretKey, HOIST_STEPS)
    sk, pk = keys.secretKey, keys.publicKey

    slots = n // 2
    rng = random.Random(7)
    vals = [rng.uniform(-1, 1) for _ in range(slots)]
    vals2 = [rng.uniform(-1, 1) for _ in range(slots)]
    pt = cc.MakeCKKSPackedPlaintext(vals)
    pt2 = cc.MakeCKKSPackedPlaintext(vals2)
    ct = cc.Encrypt(pk, pt)
    ct2 = cc.Encrypt(pk, pt2)
    prod = cc.EvalMultNoRelin(ct, ct2)
    prod_relin = cc.Relinearize(prod)

    check = cc.Decrypt(sk, cc.Rescale(prod_relin))
    check.SetLength(slots)
    out = check.GetRealPackedValue()
    err = max(abs(out[i] - vals[i] * vals2[i]) for i in range(0, slots, max(1, slots // 64)))
    if err > 1e-3:
        raise RuntimeError(f"OpenFHE sanity check failed: max error {err}")

    ops = {}
    measure(ops, "encode", lambda: timer.median_us(lambda _: cc.MakeCKKSPackedPlaintext(vals)), timer=timer)
    measure(ops, "encrypt", lambda: timer.median_us(lambda _: cc.Encrypt(pk, pt)), timer=timer)
    measure(ops, "decrypt_decode", lambda: timer.median_us(lambda _: cc.Decrypt(sk, ct)), timer=timer)
    measure(ops, "add", lambda: timer.median_us(lambda _: cc.EvalAdd(ct, ct2)), timer=timer)
    measure(ops, "mul_plain", lambda: timer.median_us(lambda _: cc.EvalMult(ct, pt2)), timer=timer)
    measure(ops, "mul_scalar", lambda: timer.median_us(lambda _: cc.EvalMult(ct, 0.731)), timer=timer)
    measure(ops, "mul", lambda: timer.median_us(lambda _: cc.EvalMultNoRelin(ct, ct2)), timer=timer)
    measure(ops, "relinearize", lambda: timer.median_us(lambda _: cc.Relinearize(prod)), timer=timer)
    measure(ops, "mul_relin", lambda: timer.median_us(lambda _: cc.EvalMult(ct, ct2)), timer=timer)
    measure(ops, "rescale", lambda: timer.median_us(lambda _: cc.Rescale(prod_relin)), timer=timer)
    measure(ops, "mul_relin_rescale", lambda: timer.median_us(lambda _: cc.Rescale(cc.EvalMult(ct, ct2))), timer=timer)
    measure(ops, "rotate", lambda: timer.median_us(lambda _: cc.EvalRotate(ct, 1)), timer=timer)
    m = cc.GetCyclotomicOrder()

    def rot8(_):
        pre = cc.EvalFastRotationPrecompute(ct)
        for s in HOIST_STEPS:
            cc.EvalFastRotation(ct, s, m, pre)

    measure(ops, "rotate_hoisted8", lambda: timer.median_us(rot8, min_reps=3), timer=timer)

    pool = [cc.Encrypt(pk, cc.MakeCKKSPackedPlaintext([rng.uniform(-1, 1) for _ in range(slots)])) for _ in range(MAC_POOL)]
    for k in MAC_SIZES:
        cts = [pool[i % MAC_POOL] for i in range(k)]
        ws = [rng.uniform(-1, 1) for _ in range(k)]
        measure(ops, f"mac{k}", lambda: timer.median_us(lambda _, cts=cts, ws=ws: cc.EvalLinearWSum(cts, ws), min_reps=3), timer=timer)

    params = {
        "N": n,
        "q_bits": q_bits,
        "special_bits": f"chosen by OpenFHE (HYBRID, dnum={dnum})",
        "scale_bits": SCALE_BITS,
        "log_q": round(math.log2(cc.GetModulus()), 1),
        "key_switching": f"HYBRID, {dnum} digits",
        "scaling": "FIXEDMANUAL",
        "security": "HEStd_NotSet (parameters chosen by hand)",
    }
    return {"params": params, "ops": ops, "ops_min": take_mins()}


def main():
    timer = Timer()
    doc = {"library": "OpenFHE (openfhe-python)", "version": getattr(fhe, "__version__", "?"), "configs": {}}
    for log_n, q_bits, special_bits in selected_configs():
        cid = config_id(log_n, q_bits)
        log(f"[openfhe] {cid} ...")
        try:
            doc["configs"][cid] = bench_config(log_n, q_bits, special_bits, timer)
        except Exception as exc:  # report and go on with the next config
            log(f"[openfhe] {cid} failed: {exc!r}")
            doc["configs"][cid] = {"error": repr(exc)}
    emit(doc)


if __name__ == "__main__":
    main()
