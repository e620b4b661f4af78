//! RNS polynomials: contiguous limb storage and limb-wise arithmetic.
//!
//! Contract: an [`RnsPoly`] stores `(q_limbs + p_limbs) * N` words in one
//! `Vec<u64>`, limb-major; every word is below its limb's prime. It records
//! whether it is in coefficient or NTT form and how many ciphertext and
//! special limbs it has (its level is `q_limbs - 1`). Binary operations
//! require equal shapes and forms; the callers (evaluator) check this.

use std::mem::MaybeUninit;

use rand::RngCore;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;

use super::context::Context;
use super::error::{CkksError, Result};
use super::pointwise::{self, Op};
use super::zq::Modulus;

/// A polynomial in RNS representation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RnsPoly {
    pub(crate) data: Vec<u64>,
    pub(crate) q_limbs: usize,
    pub(crate) p_limbs: usize,
    pub(crate) ntt: bool,
}

impl RnsPoly {
    /// Checks that the polynomial belongs to `ctx`: ciphertext limbs in `1..=L+1`, no special
    /// limbs unless `full_qp` (then exactly all of them), NTT form, and `N` words per limb.
    pub(crate) fn check_in(&self, ctx: &Context, full_qp: bool) -> Result<()> {
        let (nq, np) = (ctx.params().q().len(), ctx.params().p().len());
        let ok = if full_qp {
            self.q_limbs == nq && self.p_limbs == np
        } else {
            (1..=nq).contains(&self.q_limbs) && self.p_limbs == 0
        };
        if !ok || !self.ntt || self.data.len() != (self.q_limbs + self.p_limbs) * ctx.n() {
            return Err(CkksError::InvalidInput(
                "object does not belong to this context's parameters".into(),
            ));
        }
        Ok(())
    }
}

impl RnsPoly {
    /// The limb of the chain's prime `g` (`0..L+1` ciphertext primes, then the special
    /// primes), for a polynomial over `Q_l * P` that holds it.
    pub(crate) fn limb_of_prime(&self, ctx: &Context, g: usize) -> &[u64] {
        let n = ctx.n();
        debug_assert!(g < self.q_limbs || g >= ctx.q_count(), "prime {g} not held");
        let i = if g < ctx.q_count() {
            g
        } else {
            self.q_limbs + (g - ctx.q_count())
        };
        &self.data[i * n..(i + 1) * n]
    }

    /// The zero polynomial of the given shape.
    pub(crate) fn zero(ctx: &Context, q_limbs: usize, p_limbs: usize, ntt: bool) -> Self {
        Self {
            data: vec![0u64; (q_limbs + p_limbs) * ctx.n()],
            q_limbs,
            p_limbs,
            ntt,
        }
    }

    /// A polynomial of the given shape whose limb `i` is written by
    /// `fill(i, modulus, limb)`, in parallel, without zero-filling first.
    ///
    /// # Safety
    /// `fill` must write every word of the limb it is given, or panic (the
    /// [`pointwise`] `*_into` kernels write every word); the words are then
    /// taken as initialised. A panic leaves nothing uninitialised visible.
    pub(crate) unsafe fn build<F>(
        ctx: &Context,
        q_limbs: usize,
        p_limbs: usize,
        ntt: bool,
        fill: F,
    ) -> Self
    where
        F: Fn(usize, &Modulus, &mut [MaybeUninit<u64>]) + Sync + Send,
    {
        let n = ctx.n();
        let len = (q_limbs + p_limbs) * n;
        let mut data: Vec<u64> = Vec::with_capacity(len);
        data.spare_capacity_mut()[..len]
            .par_chunks_mut(n)
            .enumerate()
            .for_each(|(i, limb)| fill(i, &ctx.moduli()[ctx.limb_modulus(q_limbs, i)], limb));
        // SAFETY: the capacity is at least `len`, and `fill` wrote all `len`
        // words (the caller's obligation), so they are initialised.
        unsafe { data.set_len(len) };
        Self {
            data,
            q_limbs,
            p_limbs,
            ntt,
        }
    }

    /// `a op b` coefficient-wise into a new polynomial (same shape as `a`).
    pub(crate) fn binary(ctx: &Context, op: Op, a: &RnsPoly, b: &RnsPoly) -> RnsPoly {
        let n = ctx.n();
        // SAFETY: the pointwise `*_into` kernels write every word of `o`.
        unsafe {
            RnsPoly::build(ctx, a.q_limbs, a.p_limbs, a.ntt, |i, m, o| {
                let r = i * n..(i + 1) * n;
                pointwise::binary_into(m, op, &a.data[r.clone()], &b.data[r], o);
            })
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
        // Two's-complement words, reduced limb by limb without branching on signs.
        let words: Vec<u64> = coeffs.iter().map(|&c| c as u64).collect();
        // SAFETY: the pointwise `*_into` kernels write every word of `o`.
        unsafe {
            Self::build(ctx, q_limbs, p_limbs, false, |_, m, limb| {
                pointwise::reduce_signed_into(m, &words, limb)
            })
        }
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

    /// `a * b + c * d` pointwise in one pass with a single reduction (NTT form).
    pub(crate) fn mul_add_mul(
        ctx: &Context,
        a: &RnsPoly,
        b: &RnsPoly,
        c: &RnsPoly,
        d: &RnsPoly,
    ) -> RnsPoly {
        let n = ctx.n();
        // SAFETY: the pointwise `*_into` kernels write every word of `o`.
        unsafe {
            RnsPoly::build(ctx, a.q_limbs, a.p_limbs, true, |i, m, o| {
                let r = i * n..(i + 1) * n;
                pointwise::mul_add_mul_into(
                    m,
                    &a.data[r.clone()],
                    &b.data[r.clone()],
                    &c.data[r.clone()],
                    &d.data[r],
                    o,
                );
            })
        }
    }

    /// `self += other`.
    pub(crate) fn add_assign(&mut self, ctx: &Context, other: &RnsPoly) {
        self.zip_apply(ctx, other, |m, a, b| {
            pointwise::binary_assign(m, Op::Add, a, b)
        });
    }

    /// `self -= other`.
    pub(crate) fn sub_assign(&mut self, ctx: &Context, other: &RnsPoly) {
        self.zip_apply(ctx, other, |m, a, b| {
            pointwise::binary_assign(m, Op::Sub, a, b)
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
            pointwise::binary_assign(m, Op::Mul, a, b)
        });
    }

    /// `self += a * b` pointwise, where `a` is over all of `Q * P` (every
    /// modulus of the context, like a public key) and `self`, `b` have the
    /// same shape: limb `i` of `self` uses the limb of `a` of the same
    /// modulus, so no restricted copy of `a` is made (NTT form).
    pub(crate) fn add_mul_full_assign(&mut self, ctx: &Context, a: &RnsPoly, b: &RnsPoly) {
        let n = ctx.n();
        let ql = self.q_limbs;
        self.data
            .par_chunks_mut(n)
            .zip(b.data.par_chunks(n))
            .enumerate()
            .for_each(|(i, (o, y))| {
                let g = ctx.limb_modulus(ql, i);
                let x = &a.data[g * n..(g + 1) * n];
                pointwise::add_mul_assign(&ctx.moduli()[g], o, x, y);
            });
    }

    /// Multiplies limb `i` by the constant `consts[i]` (already reduced).
    pub(crate) fn mul_const_assign(&mut self, ctx: &Context, consts: &[u64]) {
        self.apply(ctx, |i, m, a| pointwise::mul_const_assign(m, consts[i], a));
    }

    /// A new polynomial: limb `i` of `self` times the constant `consts[i]`
    /// (already reduced).
    pub(crate) fn mul_const(&self, ctx: &Context, consts: &[u64]) -> RnsPoly {
        let n = ctx.n();
        // SAFETY: the pointwise `*_into` kernels write every word of `o`.
        unsafe {
            RnsPoly::build(ctx, self.q_limbs, self.p_limbs, self.ntt, |i, m, o| {
                pointwise::mul_const_into(m, consts[i], &self.data[i * n..(i + 1) * n], o)
            })
        }
    }

    /// Keeps only the first `q_limbs` ciphertext limbs (requires no special limbs).
    pub(crate) fn truncate_q(&mut self, ctx: &Context, q_limbs: usize) {
        debug_assert_eq!(self.p_limbs, 0);
        self.data.truncate(q_limbs * ctx.n());
        self.q_limbs = q_limbs;
    }

    /// Applies the automorphism `X -> X^g` in NTT form via its index permutation.
    pub(crate) fn automorphism_ntt(&self, ctx: &Context, g: u64) -> RnsPoly {
        let perm = ctx.galois_permutation(g);
        let n = ctx.n();
        // SAFETY: every word `j` of each limb is written (or the index panics).
        unsafe {
            RnsPoly::build(ctx, self.q_limbs, self.p_limbs, true, |i, _, o| {
                let a = &self.data[i * n..(i + 1) * n];
                for (j, x) in o.iter_mut().enumerate() {
                    x.write(a[perm[j] as usize]);
                }
            })
        }
    }
}
