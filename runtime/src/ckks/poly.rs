//! RNS polynomials: contiguous limb storage and limb-wise arithmetic.
//!
//! Contract: an [`RnsPoly`] stores `(q_limbs + p_limbs) * N` words in one
//! `Vec<u64>`, limb-major; every word is below its limb's prime. It records
//! whether it is in coefficient or NTT form and how many ciphertext and
//! special limbs it has (its level is `q_limbs - 1`). Binary operations
//! require equal shapes and forms; the callers (evaluator) check this.

use rand::RngCore;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;

use super::context::Context;

/// A polynomial in RNS representation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RnsPoly {
    pub(crate) data: Vec<u64>,
    pub(crate) q_limbs: usize,
    pub(crate) p_limbs: usize,
    pub(crate) ntt: bool,
}

impl RnsPoly {
    /// The zero polynomial of the given shape.
    pub(crate) fn zero(ctx: &Context, q_limbs: usize, p_limbs: usize, ntt: bool) -> Self {
        Self {
            data: vec![0u64; (q_limbs + p_limbs) * ctx.n()],
            q_limbs,
            p_limbs,
            ntt,
        }
    }

    /// Level (`q_limbs - 1`).
    pub(crate) fn level(&self) -> usize {
        self.q_limbs.saturating_sub(1)
    }

    /// Reduces signed small coefficients into every limb (coefficient form).
    pub(crate) fn from_signed(
        ctx: &Context,
        coeffs: &[i64],
        q_limbs: usize,
        p_limbs: usize,
    ) -> Self {
        let n = ctx.n();
        let mut p = Self::zero(ctx, q_limbs, p_limbs, false);
        p.data.par_chunks_mut(n).enumerate().for_each(|(i, limb)| {
            let m = &ctx.moduli()[ctx.limb_modulus(q_limbs, i)];
            for (o, &c) in limb.iter_mut().zip(coeffs) {
                *o = m.reduce_i64(c);
            }
        });
        p
    }

    /// Uniform polynomial in NTT form expanded from `seed`. Limb `i` uses the
    /// ChaCha20 stream number equal to its global modulus index, so the
    /// expansion at a lower level is a prefix of the expansion at a higher one.
    pub(crate) fn uniform_from_seed(
        ctx: &Context,
        seed: &[u8; 32],
        q_limbs: usize,
        p_limbs: usize,
    ) -> Self {
        let n = ctx.n();
        let mut p = Self::zero(ctx, q_limbs, p_limbs, true);
        p.data.par_chunks_mut(n).enumerate().for_each(|(i, limb)| {
            let g = ctx.limb_modulus(q_limbs, i);
            let q = ctx.moduli()[g].value();
            let mask = u64::MAX >> q.leading_zeros();
            let mut rng = ChaCha20Rng::from_seed(*seed);
            rng.set_stream(g as u64);
            for o in limb.iter_mut() {
                loop {
                    let v = rng.next_u64() & mask;
                    if v < q {
                        *o = v;
                        break;
                    }
                }
            }
        });
        p
    }

    /// Converts to NTT form (no-op if already there).
    pub(crate) fn make_ntt(&mut self, ctx: &Context) {
        if self.ntt {
            return;
        }
        let n = ctx.n();
        let ql = self.q_limbs;
        self.data
            .par_chunks_mut(n)
            .enumerate()
            .for_each(|(i, limb)| ctx.ntt_table(ctx.limb_modulus(ql, i)).forward(limb));
        self.ntt = true;
    }

    /// Converts to coefficient form (no-op if already there).
    pub(crate) fn make_coeff(&mut self, ctx: &Context) {
        if !self.ntt {
            return;
        }
        let n = ctx.n();
        let ql = self.q_limbs;
        self.data
            .par_chunks_mut(n)
            .enumerate()
            .for_each(|(i, limb)| ctx.ntt_table(ctx.limb_modulus(ql, i)).inverse(limb));
        self.ntt = false;
    }

    /// Applies `f(modulus, self_limb, other_limb)` limb by limb in parallel.
    pub(crate) fn zip_apply<F>(&mut self, ctx: &Context, other: &RnsPoly, f: F)
    where
        F: Fn(&super::zq::Modulus, &mut [u64], &[u64]) + Sync + Send,
    {
        let n = ctx.n();
        let ql = self.q_limbs;
        self.data
            .par_chunks_mut(n)
            .zip(other.data.par_chunks(n))
            .enumerate()
            .for_each(|(i, (a, b))| f(&ctx.moduli()[ctx.limb_modulus(ql, i)], a, b));
    }

    /// Applies `f(limb_index, modulus, limb)` limb by limb in parallel.
    pub(crate) fn apply<F>(&mut self, ctx: &Context, f: F)
    where
        F: Fn(usize, &super::zq::Modulus, &mut [u64]) + Sync + Send,
    {
        let n = ctx.n();
        let ql = self.q_limbs;
        self.data
            .par_chunks_mut(n)
            .enumerate()
            .for_each(|(i, a)| f(i, &ctx.moduli()[ctx.limb_modulus(ql, i)], a));
    }

    /// A new polynomial `f(a_k, b_k)` coefficient-wise (same shape as `a`), in
    /// one pass without copying `a` first.
    pub(crate) fn map2<F>(ctx: &Context, a: &RnsPoly, b: &RnsPoly, f: F) -> RnsPoly
    where
        F: Fn(&super::zq::Modulus, u64, u64) -> u64 + Sync + Send,
    {
        let n = ctx.n();
        let ql = a.q_limbs;
        let mut out = RnsPoly::zero(ctx, a.q_limbs, a.p_limbs, a.ntt);
        out.data
            .par_chunks_mut(n)
            .zip(a.data.par_chunks(n).zip(b.data.par_chunks(n)))
            .enumerate()
            .for_each(|(i, (o, (x, y)))| {
                let m = &ctx.moduli()[ctx.limb_modulus(ql, i)];
                for ((o, &x), &y) in o.iter_mut().zip(x).zip(y) {
                    *o = f(m, x, y);
                }
            });
        out
    }

    /// `a * b + c * d` pointwise in one pass with a single reduction (NTT form).
    pub(crate) fn mul_add_mul(
        ctx: &Context,
        a: &RnsPoly,
        b: &RnsPoly,
        c: &RnsPoly,
        d: &RnsPoly,
    ) -> RnsPoly {
        let n = ctx.n();
        let ql = a.q_limbs;
        let mut out = RnsPoly::zero(ctx, a.q_limbs, a.p_limbs, true);
        out.data
            .par_chunks_mut(n)
            .zip(a.data.par_chunks(n).zip(b.data.par_chunks(n)))
            .zip(c.data.par_chunks(n).zip(d.data.par_chunks(n)))
            .enumerate()
            .for_each(|(i, ((o, (a, b)), (c, d)))| {
                let m = &ctx.moduli()[ctx.limb_modulus(ql, i)];
                for ((o, (&a, &b)), (&c, &d)) in
                    o.iter_mut().zip(a.iter().zip(b)).zip(c.iter().zip(d))
                {
                    *o = m.reduce_u128(a as u128 * b as u128 + c as u128 * d as u128);
                }
            });
        out
    }

    /// `self += other`.
    pub(crate) fn add_assign(&mut self, ctx: &Context, other: &RnsPoly) {
        self.zip_apply(ctx, other, |m, a, b| {
            for (x, &y) in a.iter_mut().zip(b) {
                *x = m.add(*x, y);
            }
        });
    }

    /// `self -= other`.
    pub(crate) fn sub_assign(&mut self, ctx: &Context, other: &RnsPoly) {
        self.zip_apply(ctx, other, |m, a, b| {
            for (x, &y) in a.iter_mut().zip(b) {
                *x = m.sub(*x, y);
            }
        });
    }

    /// `self = -self`.
    pub(crate) fn neg_assign(&mut self, ctx: &Context) {
        self.apply(ctx, |_, m, a| {
            for x in a.iter_mut() {
                *x = m.neg(*x);
            }
        });
    }

    /// `self *= other` pointwise (both in NTT form).
    pub(crate) fn mul_assign(&mut self, ctx: &Context, other: &RnsPoly) {
        self.zip_apply(ctx, other, |m, a, b| {
            for (x, &y) in a.iter_mut().zip(b) {
                *x = m.mul(*x, y);
            }
        });
    }

    /// `self += a * b` pointwise (all in NTT form).
    pub(crate) fn add_mul_assign(&mut self, ctx: &Context, a: &RnsPoly, b: &RnsPoly) {
        let n = ctx.n();
        let ql = self.q_limbs;
        self.data
            .par_chunks_mut(n)
            .zip(a.data.par_chunks(n).zip(b.data.par_chunks(n)))
            .enumerate()
            .for_each(|(i, (o, (x, y)))| {
                let m = &ctx.moduli()[ctx.limb_modulus(ql, i)];
                for ((o, &x), &y) in o.iter_mut().zip(x).zip(y) {
                    *o = m.reduce_u128(*o as u128 + x as u128 * y as u128);
                }
            });
    }

    /// Multiplies limb `i` by the constant `consts[i]` (already reduced).
    pub(crate) fn mul_const_assign(&mut self, ctx: &Context, consts: &[u64]) {
        self.apply(ctx, |i, m, a| {
            let w = consts[i];
            let ws = m.shoup(w);
            for x in a.iter_mut() {
                *x = m.mul_shoup(*x, w, ws);
            }
        });
    }

    /// Keeps only the first `q_limbs` ciphertext limbs (requires no special limbs).
    pub(crate) fn truncate_q(&mut self, ctx: &Context, q_limbs: usize) {
        debug_assert_eq!(self.p_limbs, 0);
        self.data.truncate(q_limbs * ctx.n());
        self.q_limbs = q_limbs;
    }

    /// From a polynomial over all of `Q * P`, the copy over `Q_l * P` with
    /// `q_limbs = l + 1` (the special limbs are kept).
    pub(crate) fn restrict_q(&self, ctx: &Context, q_limbs: usize) -> RnsPoly {
        let n = ctx.n();
        let mut data = Vec::with_capacity((q_limbs + self.p_limbs) * n);
        data.extend_from_slice(&self.data[..q_limbs * n]);
        data.extend_from_slice(&self.data[self.q_limbs * n..]);
        RnsPoly {
            data,
            q_limbs,
            p_limbs: self.p_limbs,
            ntt: self.ntt,
        }
    }

    /// Applies the automorphism `X -> X^g` in NTT form via its index permutation.
    pub(crate) fn automorphism_ntt(&self, ctx: &Context, g: u64) -> RnsPoly {
        let perm = ctx.galois_permutation(g);
        let n = ctx.n();
        let mut out = RnsPoly::zero(ctx, self.q_limbs, self.p_limbs, true);
        out.data
            .par_chunks_mut(n)
            .zip(self.data.par_chunks(n))
            .for_each(|(o, a)| {
                for (x, &p) in o.iter_mut().zip(perm.iter()) {
                    *x = a[p as usize];
                }
            });
        out
    }
}
