//! RNS algorithms: fast base conversion, hybrid key-switching ModUp/ModDown,
//! the lazy key-switch inner product, and exact rounding rescale.
//!
//! Contract: inputs are polynomials in NTT form with no special limbs unless
//! stated; outputs are in NTT form. Base conversion is the standard fast
//! (approximate) conversion whose error is a small multiple of the source
//! modulus, which hybrid key switching tolerates by design.

use rayon::prelude::*;

use super::context::{BaseConv, Context};
use super::poly::RnsPoly;

/// Products of two values below 2^61 are below 2^122, so 63 of them fit in a u128.
const LAZY_TERMS: usize = 63;
/// Coefficients processed per block of stack accumulators.
const BLOCK: usize = 64;

/// Computes `y_b = x_b * (B/b)^-1 mod b` for the source limbs `src_limbs`
/// (coefficient form, limb-major) into `y`.
fn conv_prepare(ctx: &Context, conv: &BaseConv, src_limbs: &[u64], y: &mut [u64]) {
    let n = ctx.n();
    y.par_chunks_mut(n)
        .zip(src_limbs.par_chunks(n))
        .enumerate()
        .for_each(|(b, (yb, xb))| {
            let m = &ctx.moduli()[conv.src[b]];
            let (w, ws) = conv.hat_inv[b];
            for (o, &x) in yb.iter_mut().zip(xb) {
                *o = m.mul_shoup(x, w, ws);
            }
        });
}

/// `v = round(sum_b y_b / b)` per coefficient: the multiple of `B` to
/// subtract so that the conversion yields the centred representative of
/// `x mod B` in `(-B/2, B/2]` exactly (up to ties), instead of a biased value
/// in `[0, |src| * B)`. Unbiased conversions matter: a constant offset in
/// every coefficient concentrates error in a few slots.
fn conv_round(ctx: &Context, conv: &BaseConv, y: &[u64]) -> Vec<u64> {
    let n = ctx.n();
    let mut acc = vec![0.5f64; n];
    for (b, yb) in y.chunks_exact(n).enumerate() {
        let inv = 1.0 / ctx.moduli()[conv.src[b]].value() as f64;
        for (a, &x) in acc.iter_mut().zip(yb) {
            *a += x as f64 * inv;
        }
    }
    acc.into_iter().map(|a| a as u64).collect()
}

/// Writes `sum_b y_b * hat_mod[d][b] - v * B mod t` into `out` (one destination limb).
fn conv_limb(ctx: &Context, conv: &BaseConv, d: usize, y: &[u64], v: &[u64], out: &mut [u64]) {
    let n = ctx.n();
    let m = &ctx.moduli()[conv.dst[d]];
    let row = &conv.hat_mod[d];
    let bm = conv.prod_mod[d];
    let bms = m.shoup(bm);
    if let [h] = row[..] {
        // One source prime (digits of one limb, as with a single special
        // prime): no u128 accumulation, two Shoup products per coefficient.
        let hs = m.shoup(h);
        for ((o, &x), &vk) in out.iter_mut().zip(&y[..n]).zip(v) {
            *o = m.sub(m.mul_shoup(x, h, hs), m.mul_shoup(vk, bm, bms));
        }
        return;
    }
    for (k0, (o, vb)) in (0..n)
        .step_by(BLOCK)
        .zip(out.chunks_exact_mut(BLOCK).zip(v.chunks_exact(BLOCK)))
    {
        let mut acc = [0u128; BLOCK];
        for (ci, chunk) in row.chunks(LAZY_TERMS).enumerate() {
            if ci > 0 {
                for a in acc.iter_mut() {
                    *a = m.reduce_u128(*a) as u128;
                }
            }
            for (bi, &h) in chunk.iter().enumerate() {
                let b = ci * LAZY_TERMS + bi;
                let yb = &y[b * n + k0..b * n + k0 + BLOCK];
                for (a, &x) in acc.iter_mut().zip(yb) {
                    *a += x as u128 * h as u128;
                }
            }
        }
        for ((o, a), &vk) in o.iter_mut().zip(acc.iter()).zip(vb) {
            *o = m.sub(m.reduce_u128(*a), m.mul_shoup(vk, bm, bms));
        }
    }
}

/// ModUp of every digit of `d` (NTT form, level `l`): returns one polynomial
/// per digit over `Q_l * P` (`l+1` ciphertext limbs then `K` special limbs),
/// in NTT form. This is the shared "decomposition" of hoisted rotations.
pub(crate) fn decompose(ctx: &Context, d: &RnsPoly) -> Vec<RnsPoly> {
    let n = ctx.n();
    let l = d.level();
    let k = ctx.p_count();
    let mut coeff = d.clone();
    coeff.make_coeff(ctx);
    let tables = &ctx.levels[l];
    tables
        .digits
        .iter()
        .map(|digit| {
            let conv = &digit.conv;
            let mut y = vec![0u64; conv.src.len() * n];
            conv_prepare(
                ctx,
                conv,
                &coeff.data[digit.start * n..digit.end * n],
                &mut y,
            );
            let v = conv_round(ctx, conv, &y);
            let mut ext = RnsPoly::zero(ctx, l + 1, k, true);
            ext.data
                .par_chunks_mut(n)
                .enumerate()
                .for_each(|(e, limb)| {
                    if (digit.start..digit.end).contains(&e) {
                        limb.copy_from_slice(&d.data[e * n..(e + 1) * n]);
                    } else {
                        // destination index: positions are in increasing global order
                        let d_idx = if e < digit.start {
                            e
                        } else {
                            e - (digit.end - digit.start)
                        };
                        conv_limb(ctx, conv, d_idx, &y, &v, limb);
                        ctx.ntt_table(conv.dst[d_idx]).forward(limb);
                    }
                });
            ext
        })
        .collect()
}

/// Inner product of the decomposition with a key-switching key:
/// `(sum_j D_j * b_j, sum_j D_j * a_j)` over `Q_l * P`, with the automorphism
/// permutation `perm` applied to each `D_j` on the fly when given. Products
/// are accumulated in u128 and reduced once per coefficient.
pub(crate) fn key_inner_product(
    ctx: &Context,
    parts: &[RnsPoly],
    key_b: &[RnsPoly],
    key_a: &[RnsPoly],
    perm: Option<&[u32]>,
) -> (RnsPoly, RnsPoly) {
    let n = ctx.n();
    let q_limbs = parts[0].q_limbs;
    let k = parts[0].p_limbs;
    let mut out0 = RnsPoly::zero(ctx, q_limbs, k, true);
    let mut out1 = RnsPoly::zero(ctx, q_limbs, k, true);
    out0.data
        .par_chunks_mut(n)
        .zip(out1.data.par_chunks_mut(n))
        .enumerate()
        .for_each(|(e, (o0, o1))| {
            let g = ctx.limb_modulus(q_limbs, e);
            let m = &ctx.moduli()[g];
            for (blk, (o0, o1)) in o0
                .chunks_exact_mut(BLOCK)
                .zip(o1.chunks_exact_mut(BLOCK))
                .enumerate()
            {
                let k0 = blk * BLOCK;
                let mut acc0 = [0u128; BLOCK];
                let mut acc1 = [0u128; BLOCK];
                for (j, part) in parts.iter().enumerate() {
                    if j > 0 && j % LAZY_TERMS == 0 {
                        for (a0, a1) in acc0.iter_mut().zip(acc1.iter_mut()) {
                            *a0 = m.reduce_u128(*a0) as u128;
                            *a1 = m.reduce_u128(*a1) as u128;
                        }
                    }
                    let src = &part.data[e * n..(e + 1) * n];
                    let kb = &key_b[j].data[g * n + k0..g * n + k0 + BLOCK];
                    let ka = &key_a[j].data[g * n + k0..g * n + k0 + BLOCK];
                    match perm {
                        None => {
                            let s = &src[k0..k0 + BLOCK];
                            for (((a0, a1), &x), (&b, &a)) in acc0
                                .iter_mut()
                                .zip(acc1.iter_mut())
                                .zip(s)
                                .zip(kb.iter().zip(ka))
                            {
                                *a0 += x as u128 * b as u128;
                                *a1 += x as u128 * a as u128;
                            }
                        }
                        Some(p) => {
                            let pp = &p[k0..k0 + BLOCK];
                            for (((a0, a1), &pi), (&b, &a)) in acc0
                                .iter_mut()
                                .zip(acc1.iter_mut())
                                .zip(pp)
                                .zip(kb.iter().zip(ka))
                            {
                                let x = src[pi as usize];
                                *a0 += x as u128 * b as u128;
                                *a1 += x as u128 * a as u128;
                            }
                        }
                    }
                }
                for ((o0, o1), (a0, a1)) in o0
                    .iter_mut()
                    .zip(o1.iter_mut())
                    .zip(acc0.iter().zip(acc1.iter()))
                {
                    *o0 = m.reduce_u128(*a0);
                    *o1 = m.reduce_u128(*a1);
                }
            }
        });
    (out0, out1)
}

/// ModDown: maps `c` over `Q_l * P` (NTT form) to `round(c / P)` over `Q_l`
/// (NTT form), up to the small error of the fast base conversion.
pub(crate) fn mod_down(ctx: &Context, c: &RnsPoly) -> RnsPoly {
    let n = ctx.n();
    let ql = c.q_limbs;
    let k = c.p_limbs;
    let conv = &ctx.p_to_q;
    let mut p_part = c.data[ql * n..(ql + k) * n].to_vec();
    p_part
        .par_chunks_mut(n)
        .enumerate()
        .for_each(|(i, limb)| ctx.ntt_table(ctx.q_count() + i).inverse(limb));
    let mut y = vec![0u64; k * n];
    conv_prepare(ctx, conv, &p_part, &mut y);
    let v = conv_round(ctx, conv, &y);
    let mut out = RnsPoly::zero(ctx, ql, 0, true);
    out.data
        .par_chunks_mut(n)
        .enumerate()
        .for_each(|(i, limb)| {
            conv_limb(ctx, conv, i, &y, &v, limb);
            let m = &ctx.moduli()[i];
            ctx.ntt_table(i).forward(limb);
            let (w, ws) = ctx.p_inv_mod_q[i];
            let src = &c.data[i * n..(i + 1) * n];
            for (o, &x) in limb.iter_mut().zip(src) {
                *o = m.mul_shoup(m.sub(x, *o), w, ws);
            }
        });
    out
}

/// Full key switch of `d` (NTT, level `l`) with key `(b_j, a_j)`:
/// returns `(u0, u1)` over `Q_l` with `u0 + u1*s ~ d * s'`.
pub(crate) fn key_switch(
    ctx: &Context,
    d: &RnsPoly,
    key_b: &[RnsPoly],
    key_a: &[RnsPoly],
) -> (RnsPoly, RnsPoly) {
    let parts = decompose(ctx, d);
    let (c0, c1) = key_inner_product(ctx, &parts, key_b, key_a, None);
    (mod_down(ctx, &c0), mod_down(ctx, &c1))
}

/// Divides `p` (NTT form, level `l >= 1`, no special limbs) by its last prime
/// `q_l` with rounding, dropping that limb.
pub(crate) fn rescale_poly(ctx: &Context, p: &mut RnsPoly) {
    let n = ctx.n();
    let l = p.level();
    let ql = &ctx.moduli()[l];
    let half = ql.value() >> 1;
    let mut last = p.data[l * n..(l + 1) * n].to_vec();
    ctx.ntt_table(l).inverse(&mut last);
    for x in last.iter_mut() {
        *x = ql.add(*x, half);
    }
    let tables = &ctx.levels[l];
    p.data[..l * n].par_chunks_mut(n).enumerate().for_each_init(
        || vec![0u64; n],
        |tmp, (i, limb)| {
            let m = &ctx.moduli()[i];
            let h = tables.rescale_half[i];
            for (t, &x) in tmp.iter_mut().zip(last.iter()) {
                *t = m.sub(m.reduce(x), h);
            }
            ctx.ntt_table(i).forward(tmp);
            let (w, ws) = tables.rescale_inv[i];
            for (o, &t) in limb.iter_mut().zip(tmp.iter()) {
                *o = m.mul_shoup(m.sub(*o, t), w, ws);
            }
        },
    );
    p.truncate_q(ctx, l);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ckks::encoding::crt_reconstruct_f64;
    use crate::ckks::params::CkksParameters;
    use num_bigint::{BigInt, Sign};
    use rand::{Rng, SeedableRng};
    use std::sync::Arc;

    fn ctx(dnum: usize, special: Vec<u32>) -> Arc<Context> {
        let p = CkksParameters::builder()
            .log_n(12)
            .q0_bits(60)
            .scale_bits(vec![50, 45, 40, 40])
            .special_bits(special)
            .dnum(dnum)
            .insecure_no_security_check()
            .build()
            .unwrap();
        Context::new(p).unwrap()
    }

    fn random_poly(ctx: &Context, ql: usize, pl: usize, seed: u64) -> RnsPoly {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut p = RnsPoly::zero(ctx, ql, pl, false);
        let n = ctx.n();
        for (i, limb) in p.data.chunks_mut(n).enumerate() {
            let q = ctx.moduli()[ctx.limb_modulus(ql, i)].value();
            limb.iter_mut().for_each(|x| *x = rng.gen_range(0..q));
        }
        p
    }

    fn big(x: u64) -> BigInt {
        BigInt::from(x)
    }

    /// CRT of coefficient `k` over the listed global moduli, centred.
    fn crt(ctx: &Context, p: &RnsPoly, k: usize, limbs: &[usize]) -> (BigInt, BigInt) {
        let n = ctx.n();
        let mut q = big(1);
        for &i in limbs {
            q *= big(ctx.moduli()[ctx.limb_modulus(p.q_limbs, i)].value());
        }
        let mut x = big(0);
        for &i in limbs {
            let qi = big(ctx.moduli()[ctx.limb_modulus(p.q_limbs, i)].value());
            let hat = &q / &qi;
            let inv = (&hat % &qi).modpow(&(&qi - 2), &qi);
            x += big(p.data[i * n + k]) * inv % &qi * &hat;
        }
        x %= &q;
        if &x * 2 > q {
            x -= &q;
        }
        (x, q)
    }

    fn residue(x: &BigInt, q: u64) -> u64 {
        let r = ((x % big(q)) + big(q)) % big(q);
        let (_, d) = r.to_u64_digits();
        d.first().copied().unwrap_or(0)
    }

    fn to_f64(x: &BigInt) -> f64 {
        let (sign, d) = x.to_u64_digits();
        let v = d
            .iter()
            .rev()
            .fold(0f64, |a, &w| a * 18446744073709551616.0 + w as f64);
        if sign == Sign::Minus {
            -v
        } else {
            v
        }
    }

    #[test]
    fn crt_reconstruction_matches_bigint() {
        let c = ctx(5, vec![60]);
        for ql in 1..=5 {
            let p = random_poly(&c, ql, 0, ql as u64);
            let got = crt_reconstruct_f64(&c, &p);
            let limbs: Vec<usize> = (0..ql).collect();
            for k in (0..c.n()).step_by(37) {
                let (x, _) = crt(&c, &p, k, &limbs);
                let want = to_f64(&x);
                assert!((got[k] - want).abs() <= want.abs() * 1e-15, "ql {ql} k {k}");
            }
            // small values around zero reconstruct exactly
            let mut s = RnsPoly::zero(&c, ql, 0, false);
            for (i, limb) in s.data.chunks_mut(c.n()).enumerate() {
                let m = &c.moduli()[i];
                for (k, x) in limb.iter_mut().enumerate() {
                    *x = m.reduce_i64(k as i64 - 2048);
                }
            }
            let got = crt_reconstruct_f64(&c, &s);
            assert!(got.iter().enumerate().all(|(k, &v)| v == k as f64 - 2048.0));
        }
    }

    #[test]
    fn modup_is_exact_centred_base_extension() {
        for (dnum, special) in [(5, vec![60]), (3, vec![61, 61]), (1, vec![61, 61, 61, 61])] {
            let c = ctx(dnum, special);
            for level in [4usize, 2, 0] {
                let mut d = random_poly(&c, level + 1, 0, 7 + level as u64);
                let coeff = d.clone();
                d.make_ntt(&c);
                let parts = decompose(&c, &d);
                let digits = &c.levels[level].digits;
                assert_eq!(parts.len(), digits.len());
                for (part, digit) in parts.iter().zip(digits) {
                    let mut pc = part.clone();
                    pc.make_coeff(&c);
                    let src: Vec<usize> = (digit.start..digit.end).collect();
                    for k in (0..c.n()).step_by(101) {
                        let (x, _) = crt(&c, &coeff, k, &src);
                        for e in 0..pc.q_limbs + pc.p_limbs {
                            let q = c.moduli()[c.limb_modulus(pc.q_limbs, e)].value();
                            assert_eq!(pc.data[e * c.n() + k], residue(&x, q), "limb {e}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn moddown_divides_by_p_with_rounding() {
        let c = ctx(3, vec![61, 61]);
        for level in [4usize, 1] {
            let mut x = random_poly(&c, level + 1, c.p_count(), 99);
            let coeff = x.clone();
            x.make_ntt(&c);
            let mut out = mod_down(&c, &x);
            out.make_coeff(&c);
            let all: Vec<usize> = (0..level + 1 + c.p_count()).collect();
            let p: BigInt = c.params().p().iter().map(|&v| big(v)).product();
            let mut off_by_one = 0;
            for k in (0..c.n()).step_by(13) {
                let (v, _) = crt(&c, &coeff, k, &all);
                // round(v / P) for signed v
                let twice: BigInt = &v * 2 + &p;
                let mut r = &twice / (&p * 2);
                if twice.sign() == Sign::Minus && &r * (&p * 2) != twice {
                    r -= 1;
                }
                for i in 0..=level {
                    let q = c.moduli()[i].value();
                    let got = out.data[i * c.n() + k];
                    if got != residue(&r, q) {
                        off_by_one += 1;
                        assert!(got == residue(&(&r + 1), q) || got == residue(&(&r - 1), q));
                    }
                }
            }
            assert_eq!(off_by_one, 0);
        }
    }

    #[test]
    fn rescale_is_exact_rounding_division() {
        let c = ctx(5, vec![60]);
        for level in [4usize, 2, 1] {
            let mut x = random_poly(&c, level + 1, 0, 5);
            let coeff = x.clone();
            x.make_ntt(&c);
            rescale_poly(&c, &mut x);
            assert_eq!(x.level(), level - 1);
            x.make_coeff(&c);
            let all: Vec<usize> = (0..=level).collect();
            let ql = big(c.moduli()[level].value());
            for k in (0..c.n()).step_by(11) {
                let (v, q) = crt(&c, &coeff, k, &all);
                let v = if v.sign() == Sign::Minus { v + q } else { v };
                let r = (v + &ql / 2) / &ql;
                for i in 0..level {
                    assert_eq!(x.data[i * c.n() + k], residue(&r, c.moduli()[i].value()));
                }
            }
        }
    }

    #[test]
    fn galois_permutation_matches_coefficient_automorphism() {
        let c = ctx(5, vec![60]);
        let n = c.n();
        let coeff = random_poly(&c, 2, 0, 3);
        for g in [
            c.galois_element(1),
            c.galois_element(-7),
            c.conjugation_element(),
        ] {
            let mut expect = RnsPoly::zero(&c, 2, 0, false);
            for i in 0..2 {
                let m = &c.moduli()[i];
                for j in 0..n {
                    let t = (j as u64 * g) % (2 * n as u64);
                    let v = coeff.data[i * n + j];
                    let (pos, val) = if t < n as u64 {
                        (t, v)
                    } else {
                        (t - n as u64, m.neg(v))
                    };
                    expect.data[i * n + pos as usize] = val;
                }
            }
            let mut ntt = coeff.clone();
            ntt.make_ntt(&c);
            let mut got = ntt.automorphism_ntt(&c, g);
            got.make_coeff(&c);
            assert_eq!(got, expect, "g = {g}");
        }
    }
}
