//! Fused multiply-accumulates: several `mac` nodes over the same operand list (a dense layer
//! in the batch layout: every output reads every input) computed in one pass over the
//! operands.
//!
//! Contract: [`multi_mac`] returns, for each coefficient row `coeffs[j]`, exactly what
//! [`Evaluator::mul_scalar_accumulate`] returns for `(cts, coeffs[j])` at `scale` (same
//! encoding of the constants, same level, size, form and scale of the result); it checks the
//! same preconditions. One block of each operand is read once for all outputs, so the pass is
//! compute-bound instead of reading every operand once per output.

use crate::ckks::encoding::scalar_limbs;
use crate::ckks::poly::RnsPoly;
use crate::ckks::{Ciphertext, CkksError, Evaluator};
use rayon::prelude::*;

/// Coefficients per inner block (accumulators: outputs x BLOCK u128 stay in L1/L2).
const BLOCK: usize = 16;
/// Coefficients per parallel task.
const CHUNK: usize = 1024;
/// Terms between reductions of the u128 accumulators (products are below 2^122).
const LAZY: usize = 32;

/// `out[j] = sum_t coeffs[j][t] * cts[t]` with the constants encoded at `scale`.
pub(crate) fn multi_mac(
    eval: &Evaluator,
    cts: &[&Ciphertext],
    coeffs: &[&[f64]],
    scale: f64,
) -> Result<Vec<Ciphertext>, CkksError> {
    let ctx = eval.context();
    let first = cts
        .first()
        .ok_or_else(|| CkksError::InvalidInput("empty multiply-accumulate".into()))?;
    if !(scale.is_finite() && scale >= 1.0) {
        return Err(CkksError::InvalidInput(format!("bad scale {scale}")));
    }
    let level = first.level();
    let size = first.polys.len();
    let ntt = first.polys[0].ntt;
    for ct in cts {
        if ct.level() != level {
            return Err(CkksError::LevelMismatch {
                left: level,
                right: ct.level(),
            });
        }
        if !eval.scales_match(first.scale, ct.scale) {
            return Err(CkksError::ScaleMismatch {
                left: first.scale,
                right: ct.scale,
            });
        }
        if ct.polys.len() != size {
            return Err(CkksError::CiphertextSize {
                expected: size,
                found: ct.polys.len(),
            });
        }
        if ct.polys.iter().any(|p| p.ntt != ntt || p.p_limbs != 0) {
            return Err(CkksError::InvalidInput(
                "operands in different forms".into(),
            ));
        }
    }
    let terms = cts.len();
    let outs = coeffs.len();
    for c in coeffs {
        if c.len() != terms {
            return Err(CkksError::InvalidInput("coefficient row length".into()));
        }
    }
    let n = ctx.n();
    let ql = level + 1;
    // consts[li][t * outs + j]
    let mut consts = vec![vec![0u64; terms * outs]; ql];
    for (j, row) in coeffs.iter().enumerate() {
        for (t, &c) in row.iter().enumerate() {
            let limbs = scalar_limbs(ctx, c, scale, ql)?;
            for (li, v) in limbs.into_iter().enumerate() {
                consts[li][t * outs + j] = v;
            }
        }
    }
    let chunks = n.div_ceil(CHUNK);
    let tasks: Vec<(usize, usize, usize)> = (0..size)
        .flat_map(|pi| (0..ql).flat_map(move |li| (0..chunks).map(move |c| (pi, li, c))))
        .collect();
    let results: Vec<Vec<u64>> = tasks
        .par_iter()
        .map(|&(pi, li, c)| {
            let m = &ctx.moduli()[li];
            let k0 = c * CHUNK;
            let len = CHUNK.min(n - k0);
            let cs = &consts[li];
            let mut out = vec![0u64; outs * len];
            let mut acc = vec![0u128; outs * BLOCK];
            let mut b0 = 0;
            while b0 < len {
                let bl = BLOCK.min(len - b0);
                acc.iter_mut().for_each(|a| *a = 0);
                for (t, ct) in cts.iter().enumerate() {
                    if t > 0 && t % LAZY == 0 {
                        for a in acc.iter_mut() {
                            *a = m.reduce_u128(*a) as u128;
                        }
                    }
                    let off = li * n + k0 + b0;
                    let x = &ct.polys[pi].data[off..off + bl];
                    let row = &cs[t * outs..(t + 1) * outs];
                    for (j, &cj) in row.iter().enumerate() {
                        let cj = cj as u128;
                        let a = &mut acc[j * BLOCK..j * BLOCK + bl];
                        for (a, &xv) in a.iter_mut().zip(x) {
                            *a += xv as u128 * cj;
                        }
                    }
                }
                for j in 0..outs {
                    for k in 0..bl {
                        out[j * len + b0 + k] = m.reduce_u128(acc[j * BLOCK + k]);
                    }
                }
                b0 += bl;
            }
            out
        })
        .collect();
    let mut result: Vec<Ciphertext> = (0..outs)
        .map(|_| Ciphertext {
            polys: (0..size).map(|_| RnsPoly::zero(ctx, ql, 0, ntt)).collect(),
            scale: first.scale * scale,
            seed: None,
        })
        .collect();
    for (&(pi, li, c), out) in tasks.iter().zip(results) {
        let k0 = c * CHUNK;
        let len = CHUNK.min(n - k0);
        for (j, r) in result.iter_mut().enumerate() {
            r.polys[pi].data[li * n + k0..li * n + k0 + len]
                .copy_from_slice(&out[j * len..(j + 1) * len]);
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ckks::*;

    #[test]
    fn fused_equals_separate_accumulates_exactly() {
        let params = CkksParameters::builder()
            .log_n(12)
            .q0_bits(60)
            .scale_bits(vec![40, 40])
            .special_bits(vec![60])
            .insecure_no_security_check()
            .build()
            .unwrap();
        let ctx = Context::new(params).unwrap();
        let kg = KeyGenerator::new_with_insecure_test_seed(&ctx, 3);
        let sk = kg.secret_key().clone();
        let encoder = Encoder::new(&ctx);
        let mut enc = SymmetricEncryptor::new_with_insecure_test_seed(&ctx, &sk, 4);
        let eval = Evaluator::new(&ctx);
        // 70 terms (more than one lazy-reduction period), 3 outputs, size-3 operands.
        let cts: Vec<Ciphertext> = (0..70)
            .map(|i| {
                let v: Vec<f64> = (0..64).map(|k| ((i * 7 + k) % 13) as f64 * 0.05).collect();
                let c = enc
                    .encrypt(&encoder.encode(&v, 2, 2f64.powi(30)).unwrap())
                    .unwrap();
                eval.square(&c).unwrap()
            })
            .collect();
        let refs: Vec<&Ciphertext> = cts.iter().collect();
        let rows: Vec<Vec<f64>> = (0..3)
            .map(|j| {
                (0..70)
                    .map(|t| ((t * 3 + j * 5) % 11) as f64 * 0.1 - 0.5)
                    .collect()
            })
            .collect();
        let row_refs: Vec<&[f64]> = rows.iter().map(Vec::as_slice).collect();
        let fused = multi_mac(&eval, &refs, &row_refs, 2f64.powi(20)).unwrap();
        for (j, row) in rows.iter().enumerate() {
            let terms: Vec<(&Ciphertext, f64)> =
                refs.iter().copied().zip(row.iter().copied()).collect();
            let want = eval.mul_scalar_accumulate(&terms, 2f64.powi(20)).unwrap();
            assert_eq!(fused[j].polys, want.polys, "output {j}");
            assert_eq!(fused[j].scale, want.scale);
        }
        // Mismatched levels are refused like the evaluator does.
        let low = eval.drop_to_level(&cts[0], 1).unwrap();
        let bad = vec![&cts[1], &low];
        let r = multi_mac(&eval, &bad, &[&[1.0, 1.0]], 2f64.powi(20));
        assert!(matches!(r, Err(CkksError::LevelMismatch { .. })));
    }
}
