//! Fused multiply-accumulates: several `mac` nodes over the same operand list (a dense layer
//! in the batch layout: every output reads every input) computed in one pass over the
//! operands.
//!
//! Contract: [`multi_mac`] returns, for each coefficient row `coeffs[j]`, exactly what
//! [`Evaluator::mul_scalar_accumulate`] returns for `(cts, coeffs[j])` at `scale` (same
//! encoding of the constants, same level, size, form and scale of the result); it checks the
//! same preconditions. One block of each operand is read once for all outputs, so the pass is
//! compute-bound instead of reading every operand once per output.
//!
//! [`sparse_macs`] does the same for `mac` nodes with different operand lists (a convolution
//! in the batch layout): per limb and block of coefficients, all outputs of the group, so an
//! operand shared by several windows is read from memory once per block. Its contract is the
//! same: output for output, exactly [`Evaluator::mul_scalar_accumulate`].

use crate::ckks::encoding::scalar_limbs;
use crate::ckks::mac::mac_into;
use crate::ckks::poly::RnsPoly;
use crate::ckks::{Ciphertext, CkksError, Evaluator};
use rayon::prelude::*;

/// Bytes of operand data one task reads (its block of every operand stays in L2 while the
/// kernel sweeps the outputs over it).
const TASK_BYTES: usize = 512 * 1024;

/// Coefficients per parallel task for `terms` operands: a power of two in `16..=1024` whose
/// operand blocks fit in [`TASK_BYTES`].
pub(crate) fn chunk_len(terms: usize, n: usize) -> usize {
    let per = TASK_BYTES / (8 * terms.max(1));
    let c = if per < 16 { 16 } else { 1 << per.ilog2() };
    c.min(1024).min(n.max(1))
}

/// `out[j] = sum_t coeffs[j][t] * cts[t]` with the constants encoded at `scale`.
pub(crate) fn multi_mac(
    eval: &Evaluator,
    cts: &[&Ciphertext],
    coeffs: &[&[f64]],
    scale: f64,
) -> Result<Vec<Ciphertext>, CkksError> {
    let ctx = eval.context();
    if !(scale.is_finite() && scale >= 1.0) {
        return Err(CkksError::InvalidInput(format!("bad scale {scale}")));
    }
    let (level, size, ntt) = common_shape(eval, cts)?;
    let first = cts[0];
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
    let chunk = chunk_len(terms, n);
    let mut result: Vec<Ciphertext> = (0..outs)
        .map(|_| Ciphertext {
            polys: (0..size).map(|_| RnsPoly::zero(ctx, ql, 0, ntt)).collect(),
            scale: first.scale * scale,
            seed: None,
        })
        .collect();
    let mut blocks = result_blocks(&mut result, n, chunk);
    blocks.par_iter_mut().try_for_each(|(pi, li, k0, rows)| {
        let len = rows.first().map_or(0, |r| r.len());
        let off = *li * n + *k0;
        let xs: Vec<&[u64]> = cts
            .iter()
            .map(|ct| &ct.polys[*pi].data[off..off + len])
            .collect();
        mac_into(&ctx.moduli()[*li], &xs, &consts[*li], rows)
    })?;
    drop(blocks);
    Ok(result)
}

/// One block of work: polynomial, limb, first coefficient, and that block of every result.
type Block<'a> = (usize, usize, usize, Vec<&'a mut [u64]>);

/// Splits the results (all of one shape) into blocks of `chunk` coefficients of one limb of
/// one polynomial; block `b` holds that block of every result, in order.
fn result_blocks(result: &mut [Ciphertext], n: usize, chunk: usize) -> Vec<Block<'_>> {
    let mut blocks: Vec<Block<'_>> = Vec::new();
    for ct in result.iter_mut() {
        let mut b = 0;
        for (pi, p) in ct.polys.iter_mut().enumerate() {
            for (li, limb) in p.data.chunks_mut(n).enumerate() {
                for (c, part) in limb.chunks_mut(chunk).enumerate() {
                    if b == blocks.len() {
                        blocks.push((pi, li, c * chunk, Vec::new()));
                    }
                    blocks[b].3.push(part);
                    b += 1;
                }
            }
        }
    }
    blocks
}

/// Level, size and NTT form shared by `cts`, checked as [`Evaluator::mul_scalar_accumulate`]
/// checks its operands (same level, matching scales, same size and form, no special limbs).
fn common_shape(eval: &Evaluator, cts: &[&Ciphertext]) -> Result<(usize, usize, bool), CkksError> {
    let first = cts
        .first()
        .ok_or_else(|| CkksError::InvalidInput("empty multiply-accumulate".into()))?;
    let level = first.level();
    let size = first.polys.len();
    let ntt = first
        .polys
        .first()
        .map(|p| p.ntt)
        .ok_or_else(|| CkksError::InvalidInput("ciphertext without polynomials".into()))?;
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
    Ok((level, size, ntt))
}

/// One output of [`sparse_macs`]: `sum_t coeffs[t] * cts[t]`.
pub(crate) struct MacRow<'a> {
    /// The operands.
    pub cts: Vec<&'a Ciphertext>,
    /// One constant per operand.
    pub coeffs: &'a [f64],
}

/// Several multiply-accumulates with *different* operand lists (a batch-layout convolution:
/// each output reads a window of the inputs), computed block by block: for each limb and
/// block of coefficients, every output of the group is accumulated from the block of its
/// operands, so an operand shared by several outputs is read from memory once per block
/// instead of once per output.
///
/// Contract: output `j` is exactly [`Evaluator::mul_scalar_accumulate`] of
/// `(rows[j].cts, rows[j].coeffs)` at `scale`, with the same checks per row; all rows must
/// also share the level, size and form of their operands (else an error).
pub(crate) fn sparse_macs(
    eval: &Evaluator,
    rows: &[MacRow<'_>],
    scale: f64,
) -> Result<Vec<Ciphertext>, CkksError> {
    let ctx = eval.context();
    if !(scale.is_finite() && scale >= 1.0) {
        return Err(CkksError::InvalidInput(format!("bad scale {scale}")));
    }
    let mut shape = None;
    for row in rows {
        if row.cts.len() != row.coeffs.len() {
            return Err(CkksError::InvalidInput("coefficient row length".into()));
        }
        let s = common_shape(eval, &row.cts)?;
        match shape {
            None => shape = Some(s),
            Some(prev) if prev != s => {
                return Err(CkksError::InvalidInput(
                    "grouped multiply-accumulates at different levels, sizes or forms".into(),
                ))
            }
            Some(_) => {}
        }
    }
    let Some((level, size, ntt)) = shape else {
        return Ok(Vec::new());
    };
    let n = ctx.n();
    let ql = level + 1;
    // consts[j][li * terms_j + t]
    let mut consts: Vec<Vec<u64>> = Vec::with_capacity(rows.len());
    for row in rows {
        let terms = row.cts.len();
        let mut c = vec![0u64; ql * terms];
        for (t, &w) in row.coeffs.iter().enumerate() {
            for (li, v) in scalar_limbs(ctx, w, scale, ql)?.into_iter().enumerate() {
                c[li * terms + t] = v;
            }
        }
        consts.push(c);
    }
    let distinct: std::collections::HashSet<*const Ciphertext> = rows
        .iter()
        .flat_map(|r| r.cts.iter().map(|c| *c as *const Ciphertext))
        .collect();
    let chunk = chunk_len(distinct.len(), n);
    let mut result: Vec<Ciphertext> = rows
        .iter()
        .map(|row| Ciphertext {
            polys: (0..size).map(|_| RnsPoly::zero(ctx, ql, 0, ntt)).collect(),
            scale: row.cts[0].scale * scale,
            seed: None,
        })
        .collect();
    let mut blocks = result_blocks(&mut result, n, chunk);
    blocks.par_iter_mut().try_for_each(|(pi, li, k0, outs)| {
        let m = &ctx.moduli()[*li];
        let mut xs: Vec<&[u64]> = Vec::new();
        for ((row, cs), o) in rows.iter().zip(&consts).zip(outs.iter_mut()) {
            let len = o.len();
            let off = *li * n + *k0;
            let terms = row.cts.len();
            xs.clear();
            xs.extend(row.cts.iter().map(|ct| &ct.polys[*pi].data[off..off + len]));
            mac_into(m, &xs, &cs[*li * terms..(*li + 1) * terms], &mut [&mut **o])?;
        }
        Ok::<(), CkksError>(())
    })?;
    drop(blocks);
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
        // Different operand lists per output (a convolution window), grouped.
        let windows: Vec<Vec<usize>> = vec![vec![0, 1, 2], vec![1, 2, 3, 4], vec![5], vec![0, 69]];
        let coeffs: Vec<Vec<f64>> = windows
            .iter()
            .enumerate()
            .map(|(j, w)| w.iter().map(|&t| (t as f64 - j as f64) * 0.07).collect())
            .collect();
        let rows: Vec<MacRow<'_>> = windows
            .iter()
            .zip(&coeffs)
            .map(|(w, c)| MacRow {
                cts: w.iter().map(|&t| &cts[t]).collect(),
                coeffs: c,
            })
            .collect();
        let grouped = sparse_macs(&eval, &rows, 2f64.powi(20)).unwrap();
        for (row, got) in rows.iter().zip(&grouped) {
            let terms: Vec<(&Ciphertext, f64)> = row
                .cts
                .iter()
                .copied()
                .zip(row.coeffs.iter().copied())
                .collect();
            let want = eval.mul_scalar_accumulate(&terms, 2f64.powi(20)).unwrap();
            assert_eq!(got.polys, want.polys);
            assert_eq!(got.scale, want.scale);
        }
        // Rows at different levels are refused.
        let low1 = eval.drop_to_level(&cts[1], 1).unwrap();
        let mixed = vec![
            MacRow {
                cts: vec![&cts[0]],
                coeffs: &[1.0],
            },
            MacRow {
                cts: vec![&low1],
                coeffs: &[1.0],
            },
        ];
        assert!(sparse_macs(&eval, &mixed, 2f64.powi(20)).is_err());
        // Mismatched levels are refused like the evaluator does.
        let low = eval.drop_to_level(&cts[0], 1).unwrap();
        let bad = vec![&cts[1], &low];
        let r = multi_mac(&eval, &bad, &[&[1.0, 1.0]], 2f64.powi(20));
        assert!(matches!(r, Err(CkksError::LevelMismatch { .. })));
    }
}
