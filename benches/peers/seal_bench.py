"""Times Microsoft SEAL (seal-python) CKKS operations; prints JSON (see timing.py).

SEAL's layout: coefficient modulus = the ciphertext primes followed by ONE
special prime (the first special prime of the shared config). SEAL has no
scalar multiply, so `mul_scalar` = encode the constant + multiply_plain, and a
multiply-accumulate of k (ciphertext, constant) pairs = k multiply_plain + k
add_inplace with the constants encoded beforehand. SEAL has no hoisted
rotation, so `rotate_hoisted8` = 8 independent rotate_vector calls.
"""

import random

import numpy as np
import seal

from timing import measure, take_mins, HOIST_STEPS, MAC_POOL, MAC_SIZES, SCALE_BITS, Timer, config_id, emit, log, selected_configs


def bench_config(log_n, q_bits, special_bits, timer):
    n = 1 << log_n
    bits = q_bits + special_bits[:1]
    parms = seal.EncryptionParameters(seal.scheme_type.ckks)
    parms.set_poly_modulus_degree(n)
    parms.set_coeff_modulus(seal.CoeffModulus.Create(n, bits))
    ctx = seal.SEALContext(parms, True, seal.sec_level_type.tc128)
    if not ctx.parameters_set():
        raise RuntimeError(f"SEAL rejected the parameters: {ctx.parameter_error_message()}")
    scale = float(2**SCALE_BITS)

    keygen = seal.KeyGenerator(ctx)
    sk = keygen.secret_key()
    pk = keygen.create_public_key()
    rk = keygen.create_relin_keys()
    gk = seal.GaloisKeys()
    keygen.create_galois_keys(HOIST_STEPS, gk)
    encoder = seal.CKKSEncoder(ctx)
    encryptor = seal.Encryptor(ctx, pk)
    decryptor = seal.Decryptor(ctx, sk)
    ev = seal.Evaluator(ctx)

    slots = encoder.slot_count()
    rng = random.Random(7)
    vals = np.array([rng.uniform(-1, 1) for _ in range(slots)])
    vals2 = np.array([rng.uniform(-1, 1) for _ in range(slots)])
    pt = encoder.encode(vals, scale)
    pt2 = encoder.encode(vals2, scale)
    ct = encryptor.encrypt(pt)
    ct2 = encryptor.encrypt(pt2)
    prod = ev.multiply(ct, ct2)
    prod_relin = ev.relinearize(prod, rk)

    # Sanity check: the product decrypts to the product of the inputs.
    check = ev.rescale_to_next(prod_relin)
    out = encoder.decode(decryptor.decrypt(check))
    err = max(abs(out[i] - vals[i] * vals2[i]) for i in range(0, slots, max(1, slots // 64)))
    if err > 1e-3:
        raise RuntimeError(f"SEAL sanity check failed: max error {err}")

    ops = {}
    # Forward NTT of one limb: a ciphertext at the last level has 1 limb and 2
    # polynomials; time transform_to_ntt (2 NTTs) and halve it (div=2).
    last = ctx.last_parms_id()
    ntt_ct = seal.Ciphertext(ct)
    ev.mod_switch_to_inplace(ntt_ct, last)
    if ntt_ct.coeff_modulus_size() != 1:
        raise RuntimeError("expected one limb at the last level")

    def ntt_setup():
        ev.transform_from_ntt_inplace(ntt_ct)
        return ntt_ct

    measure(ops, "ntt_forward", lambda: timer.median_us(lambda c: ev.transform_to_ntt_inplace(c), ntt_setup, div=2.0), timer=timer)
    measure(ops, "encode", lambda: timer.median_us(lambda _: encoder.encode(vals, scale)), timer=timer)
    measure(ops, "encrypt", lambda: timer.median_us(lambda _: encryptor.encrypt(pt)), timer=timer)
    measure(ops, "decrypt", lambda: timer.median_us(lambda _: decryptor.decrypt(ct)), timer=timer)
    ptd = decryptor.decrypt(ct)
    measure(ops, "decode", lambda: timer.median_us(lambda _: encoder.decode(ptd)), timer=timer)
    measure(ops, "decrypt_decode", lambda: timer.median_us(lambda _: encoder.decode(decryptor.decrypt(ct))), timer=timer)
    measure(ops, "add", lambda: timer.median_us(lambda _: ev.add(ct, ct2)), timer=timer)
    measure(ops, "mul_plain", lambda: timer.median_us(lambda _: ev.multiply_plain(ct, pt2)), timer=timer)
    measure(ops, "mul_scalar", lambda: timer.median_us(lambda _: ev.multiply_plain(ct, encoder.encode(0.731, scale))), timer=timer)
    measure(ops, "mul", lambda: timer.median_us(lambda _: ev.multiply(ct, ct2)), timer=timer)
    measure(ops, "relinearize", lambda: timer.median_us(lambda _: ev.relinearize(prod, rk)), timer=timer)
    measure(ops, "mul_relin", lambda: timer.median_us(lambda _: ev.relinearize(ev.multiply(ct, ct2), rk)), timer=timer)
    measure(ops, "rescale", lambda: timer.median_us(lambda _: ev.rescale_to_next(prod_relin)), timer=timer)
    measure(ops, "mul_relin_rescale", lambda: timer.median_us(
        lambda _: ev.rescale_to_next(ev.relinearize(ev.multiply(ct, ct2), rk)))
    , timer=timer)
    measure(ops, "rotate", lambda: timer.median_us(lambda _: ev.rotate_vector(ct, 1, gk)), timer=timer)

    def rot8(_):
        for s in HOIST_STEPS:
            ev.rotate_vector(ct, s, gk)

    measure(ops, "rotate_hoisted8", lambda: timer.median_us(rot8, min_reps=3), timer=timer)

    pool = [encryptor.encrypt(encoder.encode(np.array([rng.uniform(-1, 1) for _ in range(slots)]), scale)) for _ in range(MAC_POOL)]
    for k in MAC_SIZES:
        consts = [encoder.encode(rng.uniform(-1, 1), scale) for _ in range(k)]

        def mac(_, k=k, consts=consts):
            acc = ev.multiply_plain(pool[0], consts[0])
            for i in range(1, k):
                ev.add_inplace(acc, ev.multiply_plain(pool[i % MAC_POOL], consts[i]))
            return acc

        measure(ops, f"mac{k}", lambda: timer.median_us(mac, min_reps=3), timer=timer)

    params = {
        "N": n,
        "q_bits": q_bits,
        "special_bits": special_bits[:1],
        "scale_bits": SCALE_BITS,
        "log_qp": sum(bits),
        "key_switching": "SEAL: per-prime decomposition, one special prime",
        "security": "tc128",
    }
    return {"params": params, "ops": ops, "ops_min": take_mins()}


def main():
    timer = Timer()
    doc = {"library": "Microsoft SEAL (seal-python)", "version": seal.__version__, "configs": {}}
    for log_n, q_bits, special_bits in selected_configs():
        cid = config_id(log_n, q_bits)
        log(f"[seal] {cid} ...")
        try:
            doc["configs"][cid] = bench_config(log_n, q_bits, special_bits, timer)
        except Exception as exc:  # report and go on with the next config
            log(f"[seal] {cid} failed: {exc!r}")
            doc["configs"][cid] = {"error": repr(exc)}
    emit(doc)


if __name__ == "__main__":
    main()
