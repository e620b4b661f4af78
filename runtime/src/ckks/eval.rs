//! Homomorphic operations on ciphertexts.
//!
//! Contract: every operation checks that operand levels are equal (else
//! [`CkksError::LevelMismatch`]) and, for additions, that scales agree within
//! the evaluator's relative tolerance (else [`CkksError::ScaleMismatch`]).
//! Results carry the right level and scale: products multiply scales,
//! [`Evaluator::rescale`] divides by the dropped prime, and
//! [`Evaluator::drop_to_level`] keeps the scale. Each allocating operation
//! `op` has an in-place twin `op_assign` where that saves an allocation.
//! Rotation by `k` moves slot `i + k` to slot `i`.

use std::sync::Arc;

use rayon::prelude::*;

use super::context::Context;
use super::encoding::{check_scale, scalar_limbs, Plaintext};
use super::encrypt::Ciphertext;
use super::error::{CkksError, Result};
use super::keys::{GaloisKeys, KeySwitchKey, RelinKey};
use super::mac;
use super::pointwise::Op;
use super::poly::RnsPoly;
use super::rns;

/// Default relative tolerance when comparing scales of added operands.
pub const DEFAULT_SCALE_TOLERANCE: f64 = 1e-4;

/// Evaluator of one parameter set (stateless apart from the tolerance).
#[derive(Clone, Debug)]
pub struct Evaluator {
    ctx: Arc<Context>,
    scale_tolerance: f64,
}

const ACC_BLOCK: usize = 256;

/// A sum of ciphertexts and of rotations of ciphertexts (one level and
/// scale) whose key switches are accumulated over `Q * P` and brought down
/// by one ModDown at the end ([`Evaluator::finish_rotation_sum`]): cheaper
/// than rotating each term and adding (one ModDown instead of one per
/// rotation) and slightly more precise (one rounding).
#[derive(Debug)]
pub struct RotationSum {
    c0: RnsPoly,
    c1: RnsPoly,
    /// The summed key switches over `Q * P`, once a rotation was added.
    qp: Option<(RnsPoly, RnsPoly)>,
    scale: f64,
}

impl Evaluator {
    /// An evaluator with the default scale tolerance.
    pub fn new(ctx: &Arc<Context>) -> Self {
        Self {
            ctx: ctx.clone(),
            scale_tolerance: DEFAULT_SCALE_TOLERANCE,
        }
    }

    /// Sets the relative tolerance used when scales must match. The relative
    /// error an addition may introduce is bounded by this tolerance.
    pub fn with_scale_tolerance(mut self, tol: f64) -> Self {
        self.scale_tolerance = tol.abs();
        self
    }

    /// The context.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// Whether two scales are equal within the tolerance.
    pub fn scales_match(&self, a: f64, b: f64) -> bool {
        (a - b).abs() <= self.scale_tolerance * a.abs().max(b.abs())
    }

    /// Checks that `ct` is a well-formed ciphertext of this context.
    fn check_ct(&self, ct: &Ciphertext) -> Result<()> {
        if !(2..=3).contains(&ct.polys.len()) {
            return Err(CkksError::CiphertextSize {
                expected: 2,
                found: ct.polys.len(),
            });
        }
        let ql = ct.polys[0].q_limbs;
        for p in &ct.polys {
            p.check_in(&self.ctx, false)?;
            if p.q_limbs != ql {
                return Err(CkksError::InvalidInput(
                    "ciphertext polynomials at different levels".into(),
                ));
            }
        }
        Ok(())
    }

    fn check_pt(&self, pt: &Plaintext) -> Result<()> {
        pt.poly.check_in(&self.ctx, false)
    }

    fn check_levels(a: usize, b: usize) -> Result<()> {
        if a != b {
            return Err(CkksError::LevelMismatch { left: a, right: b });
        }
        Ok(())
    }

    fn check_scales(&self, a: f64, b: f64) -> Result<()> {
        if !self.scales_match(a, b) {
            return Err(CkksError::ScaleMismatch { left: a, right: b });
        }
        Ok(())
    }

    fn check_size(ct: &Ciphertext, expected: usize) -> Result<()> {
        if ct.polys.len() != expected {
            return Err(CkksError::CiphertextSize {
                expected,
                found: ct.polys.len(),
            });
        }
        Ok(())
    }

    // ---------------------------------------------------------------- add/sub

    /// `a + b`.
    pub fn add(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        self.add_sub_new(a, b, false)
    }

    fn add_sub_new(&self, a: &Ciphertext, b: &Ciphertext, sub: bool) -> Result<Ciphertext> {
        self.check_ct(a)?;
        self.check_ct(b)?;
        if a.polys.len() != b.polys.len() {
            let mut r = a.clone();
            self.add_sub_assign(&mut r, b, sub)?;
            return Ok(r);
        }
        Self::check_levels(a.level(), b.level())?;
        self.check_scales(a.scale, b.scale)?;
        let ctx = &self.ctx;
        let polys = a
            .polys
            .iter()
            .zip(&b.polys)
            .map(|(x, y)| RnsPoly::binary(ctx, if sub { Op::Sub } else { Op::Add }, x, y))
            .collect();
        Ok(Ciphertext {
            polys,
            scale: a.scale,
            seed: None,
        })
    }

    /// `a += b`.
    pub fn add_assign(&self, a: &mut Ciphertext, b: &Ciphertext) -> Result<()> {
        self.add_sub_assign(a, b, false)
    }

    /// `a - b`.
    pub fn sub(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        self.add_sub_new(a, b, true)
    }

    /// `a -= b`.
    pub fn sub_assign(&self, a: &mut Ciphertext, b: &Ciphertext) -> Result<()> {
        self.add_sub_assign(a, b, true)
    }

    fn add_sub_assign(&self, a: &mut Ciphertext, b: &Ciphertext, sub: bool) -> Result<()> {
        self.check_ct(a)?;
        self.check_ct(b)?;
        Self::check_levels(a.level(), b.level())?;
        self.check_scales(a.scale, b.scale)?;
        let ctx = &self.ctx;
        while a.polys.len() < b.polys.len() {
            let z = RnsPoly::zero(ctx, a.polys[0].q_limbs, 0, true);
            a.polys.push(z);
        }
        for (x, y) in a.polys.iter_mut().zip(&b.polys) {
            if sub {
                x.sub_assign(ctx, y);
            } else {
                x.add_assign(ctx, y);
            }
        }
        a.seed = None;
        Ok(())
    }

    /// `-a`.
    pub fn negate(&self, a: &Ciphertext) -> Result<Ciphertext> {
        let mut r = a.clone();
        self.negate_assign(&mut r)?;
        Ok(r)
    }

    /// `a = -a`.
    pub fn negate_assign(&self, a: &mut Ciphertext) -> Result<()> {
        self.check_ct(a)?;
        for p in a.polys.iter_mut() {
            p.neg_assign(&self.ctx);
        }
        a.seed = None;
        Ok(())
    }

    /// `ct + pt`.
    pub fn add_plain(&self, ct: &Ciphertext, pt: &Plaintext) -> Result<Ciphertext> {
        let mut r = ct.clone();
        self.add_plain_assign(&mut r, pt)?;
        Ok(r)
    }

    /// `ct += pt`.
    pub fn add_plain_assign(&self, ct: &mut Ciphertext, pt: &Plaintext) -> Result<()> {
        self.check_ct(ct)?;
        self.check_pt(pt)?;
        Self::check_levels(ct.level(), pt.level())?;
        self.check_scales(ct.scale, pt.scale)?;
        ct.polys[0].add_assign(&self.ctx, &pt.poly);
        ct.seed = None;
        Ok(())
    }

    /// `ct - pt`.
    pub fn sub_plain(&self, ct: &Ciphertext, pt: &Plaintext) -> Result<Ciphertext> {
        let mut r = ct.clone();
        self.sub_plain_assign(&mut r, pt)?;
        Ok(r)
    }

    /// `ct -= pt`.
    pub fn sub_plain_assign(&self, ct: &mut Ciphertext, pt: &Plaintext) -> Result<()> {
        self.check_ct(ct)?;
        self.check_pt(pt)?;
        Self::check_levels(ct.level(), pt.level())?;
        self.check_scales(ct.scale, pt.scale)?;
        ct.polys[0].sub_assign(&self.ctx, &pt.poly);
        ct.seed = None;
        Ok(())
    }

    /// `ct + c` in every slot (`c` is encoded at the ciphertext's scale).
    pub fn add_scalar(&self, ct: &Ciphertext, c: f64) -> Result<Ciphertext> {
        let mut r = ct.clone();
        self.add_scalar_assign(&mut r, c)?;
        Ok(r)
    }

    /// `ct += c` in every slot.
    pub fn add_scalar_assign(&self, ct: &mut Ciphertext, c: f64) -> Result<()> {
        self.check_ct(ct)?;
        let consts = scalar_limbs(&self.ctx, c, ct.scale, ct.level() + 1)?;
        ct.polys[0].apply(&self.ctx, |i, m, limb| {
            let v = consts[i];
            for x in limb.iter_mut() {
                *x = m.add(*x, v);
            }
        });
        ct.seed = None;
        Ok(())
    }

    /// `ct - c` in every slot.
    pub fn sub_scalar(&self, ct: &Ciphertext, c: f64) -> Result<Ciphertext> {
        self.add_scalar(ct, -c)
    }

    // ---------------------------------------------------------------- multiply

    /// `a * b` (a size-3 ciphertext; relinearize next). Scale is the product.
    pub fn mul(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        self.check_ct(a)?;
        self.check_ct(b)?;
        Self::check_size(a, 2)?;
        Self::check_size(b, 2)?;
        Self::check_levels(a.level(), b.level())?;
        let ctx = &self.ctx;
        let (a0, a1) = (&a.polys[0], &a.polys[1]);
        let (b0, b1) = (&b.polys[0], &b.polys[1]);
        let c0 = RnsPoly::binary(ctx, Op::Mul, a0, b0);
        let c1 = RnsPoly::mul_add_mul(ctx, a0, b1, a1, b0);
        let c2 = RnsPoly::binary(ctx, Op::Mul, a1, b1);
        Ok(Ciphertext {
            polys: vec![c0, c1, c2],
            scale: a.scale * b.scale,
            seed: None,
        })
    }

    /// `a * a` (a size-3 ciphertext).
    pub fn square(&self, a: &Ciphertext) -> Result<Ciphertext> {
        self.check_ct(a)?;
        Self::check_size(a, 2)?;
        let ctx = &self.ctx;
        let (a0, a1) = (&a.polys[0], &a.polys[1]);
        let c0 = RnsPoly::binary(ctx, Op::Mul, a0, a0);
        // 2 a0 a1 = a0 a1 + a1 a0, one reduction.
        let c1 = RnsPoly::mul_add_mul(ctx, a0, a1, a1, a0);
        let c2 = RnsPoly::binary(ctx, Op::Mul, a1, a1);
        Ok(Ciphertext {
            polys: vec![c0, c1, c2],
            scale: a.scale * a.scale,
            seed: None,
        })
    }

    /// Relinearizes a size-3 ciphertext back to size 2.
    pub fn relinearize(&self, ct: &Ciphertext, rk: &RelinKey) -> Result<Ciphertext> {
        self.check_ct(ct)?;
        rk.key.check_in(&self.ctx)?;
        rk.key.check_serves(ct.level(), 0)?;
        Self::check_size(ct, 3)?;
        // Only c0 and c1 are copied; c2 is read in place.
        let (mut c0, mut c1) = (ct.polys[0].clone(), ct.polys[1].clone());
        let (kb, ka) = (&rk.key.b, &rk.key.a);
        rns::key_switch_add(&self.ctx, &ct.polys[2], kb, ka, None, &mut c0, &mut c1);
        Ok(Ciphertext {
            polys: vec![c0, c1],
            scale: ct.scale,
            seed: None,
        })
    }

    /// In-place [`Self::relinearize`].
    pub fn relinearize_assign(&self, ct: &mut Ciphertext, rk: &RelinKey) -> Result<()> {
        self.check_ct(ct)?;
        rk.key.check_in(&self.ctx)?;
        rk.key.check_serves(ct.level(), 0)?;
        Self::check_size(ct, 3)?;
        let ctx = &self.ctx;
        let c2 = ct.polys.pop().ok_or(CkksError::CiphertextSize {
            expected: 3,
            found: 0,
        })?;
        let (p0, p1) = ct.polys.split_at_mut(1);
        rns::key_switch_add(ctx, &c2, &rk.key.b, &rk.key.a, None, &mut p0[0], &mut p1[0]);
        ct.seed = None;
        Ok(())
    }

    /// `a * b` followed by relinearization.
    pub fn mul_relin(&self, a: &Ciphertext, b: &Ciphertext, rk: &RelinKey) -> Result<Ciphertext> {
        let mut r = self.mul(a, b)?;
        self.relinearize_assign(&mut r, rk)?;
        Ok(r)
    }

    /// `ct * pt`; scale is the product.
    pub fn mul_plain(&self, ct: &Ciphertext, pt: &Plaintext) -> Result<Ciphertext> {
        self.check_ct(ct)?;
        self.check_pt(pt)?;
        Self::check_levels(ct.level(), pt.level())?;
        let polys = ct
            .polys
            .iter()
            .map(|p| RnsPoly::binary(&self.ctx, Op::Mul, p, &pt.poly))
            .collect();
        Ok(Ciphertext {
            polys,
            scale: ct.scale * pt.scale,
            seed: None,
        })
    }

    /// `ct *= pt`.
    pub fn mul_plain_assign(&self, ct: &mut Ciphertext, pt: &Plaintext) -> Result<()> {
        self.check_ct(ct)?;
        self.check_pt(pt)?;
        Self::check_levels(ct.level(), pt.level())?;
        for p in ct.polys.iter_mut() {
            p.mul_assign(&self.ctx, &pt.poly);
        }
        ct.scale *= pt.scale;
        ct.seed = None;
        Ok(())
    }

    /// `ct * c` with the real constant `c` encoded as `round(c * scale)`; the
    /// result's scale is `ct.scale() * scale`.
    pub fn mul_scalar(&self, ct: &Ciphertext, c: f64, scale: f64) -> Result<Ciphertext> {
        // Same checks and constants as `mul_scalar_assign`, but the products
        // go straight into new polynomials (no copy of `ct` first).
        self.check_ct(ct)?;
        check_scale(scale)?;
        let consts = scalar_limbs(&self.ctx, c, scale, ct.level() + 1)?;
        Ok(Ciphertext {
            polys: ct
                .polys
                .iter()
                .map(|p| p.mul_const(&self.ctx, &consts))
                .collect(),
            scale: ct.scale * scale,
            seed: None,
        })
    }

    /// In-place [`Self::mul_scalar`].
    pub fn mul_scalar_assign(&self, ct: &mut Ciphertext, c: f64, scale: f64) -> Result<()> {
        self.check_ct(ct)?;
        check_scale(scale)?;
        let consts = scalar_limbs(&self.ctx, c, scale, ct.level() + 1)?;
        for p in ct.polys.iter_mut() {
            p.mul_const_assign(&self.ctx, &consts);
        }
        ct.scale *= scale;
        ct.seed = None;
        Ok(())
    }

    /// `ct * k` for a small integer `k`, without scale growth.
    pub fn mul_integer(&self, ct: &Ciphertext, k: i64) -> Result<Ciphertext> {
        let mut r = ct.clone();
        self.mul_integer_assign(&mut r, k)?;
        Ok(r)
    }

    /// In-place [`Self::mul_integer`].
    pub fn mul_integer_assign(&self, ct: &mut Ciphertext, k: i64) -> Result<()> {
        self.check_ct(ct)?;
        let consts: Vec<u64> = self.ctx.moduli()[..=ct.level()]
            .iter()
            .map(|m| m.reduce_i64(k))
            .collect();
        for p in ct.polys.iter_mut() {
            p.mul_const_assign(&self.ctx, &consts);
        }
        ct.seed = None;
        Ok(())
    }

    /// `sum_i c_i * ct_i` with every `c_i` encoded at `scale`; products are
    /// accumulated in u128 and reduced once per 63 terms. All ciphertexts must
    /// share level, size and (within tolerance) scale; the result's scale is
    /// `ct.scale() * scale`.
    pub fn mul_scalar_accumulate(
        &self,
        terms: &[(&Ciphertext, f64)],
        scale: f64,
    ) -> Result<Ciphertext> {
        check_scale(scale)?;
        let (first, _) = terms
            .first()
            .ok_or_else(|| CkksError::InvalidInput("empty multiply-accumulate".into()))?;
        let level = first.level();
        let size = first.polys.len();
        for (ct, _) in terms {
            self.check_ct(ct)?;
            Self::check_levels(level, ct.level())?;
            self.check_scales(first.scale, ct.scale)?;
            Self::check_size(ct, size)?;
        }
        let ctx = &self.ctx;
        let n = ctx.n();
        let ql = level + 1;
        let consts: Vec<Vec<u64>> = terms
            .iter()
            .map(|(_, c)| scalar_limbs(ctx, *c, scale, ql))
            .collect::<Result<_>>()?;
        let mut polys: Vec<RnsPoly> = (0..size).map(|_| RnsPoly::zero(ctx, ql, 0, true)).collect();
        let mut chunks: Vec<(usize, usize, &mut [u64])> = Vec::with_capacity(size * ql);
        for (pi, p) in polys.iter_mut().enumerate() {
            for (li, limb) in p.data.chunks_mut(n).enumerate() {
                chunks.push((pi, li, limb));
            }
        }
        chunks.into_par_iter().try_for_each(|(pi, li, out)| {
            let m = &ctx.moduli()[li];
            let limb_consts: Vec<u64> = consts.iter().map(|c| c[li]).collect();
            let mut xs: Vec<&[u64]> = Vec::with_capacity(terms.len());
            for (blk, o) in out.chunks_mut(ACC_BLOCK).enumerate() {
                let k0 = li * n + blk * ACC_BLOCK;
                xs.clear();
                xs.extend(
                    terms
                        .iter()
                        .map(|(ct, _)| &ct.polys[pi].data[k0..k0 + o.len()]),
                );
                mac::mac_rows(m, &xs, &limb_consts, 1, o)?;
            }
            Ok::<(), CkksError>(())
        })?;
        Ok(Ciphertext {
            polys,
            scale: first.scale * scale,
            seed: None,
        })
    }

    // ---------------------------------------------------------------- levels

    /// Divides by the last prime `q_l` with rounding: level `l -> l-1`, scale
    /// `s -> s / q_l`.
    pub fn rescale(&self, ct: &Ciphertext) -> Result<Ciphertext> {
        self.check_ct(ct)?;
        let l = ct.level();
        if l == 0 {
            return Err(CkksError::LevelUnavailable {
                requested: 0,
                available: 0,
            });
        }
        let q = self.ctx.moduli()[l].value() as f64;
        Ok(Ciphertext {
            polys: ct
                .polys
                .iter()
                .map(|p| rns::rescaled(&self.ctx, p))
                .collect(),
            scale: ct.scale / q,
            seed: None,
        })
    }

    /// In-place [`Self::rescale`].
    pub fn rescale_assign(&self, ct: &mut Ciphertext) -> Result<()> {
        self.check_ct(ct)?;
        let l = ct.level();
        if l == 0 {
            return Err(CkksError::LevelUnavailable {
                requested: 0,
                available: 0,
            });
        }
        let q = self.ctx.moduli()[l].value() as f64;
        for p in ct.polys.iter_mut() {
            rns::rescale_poly(&self.ctx, p);
        }
        ct.scale /= q;
        ct.seed = None;
        Ok(())
    }

    /// Drops limbs down to `level` (scale unchanged).
    pub fn drop_to_level(&self, ct: &Ciphertext, level: usize) -> Result<Ciphertext> {
        let mut r = ct.clone();
        self.drop_to_level_assign(&mut r, level)?;
        Ok(r)
    }

    /// In-place [`Self::drop_to_level`].
    pub fn drop_to_level_assign(&self, ct: &mut Ciphertext, level: usize) -> Result<()> {
        self.check_ct(ct)?;
        if level > ct.level() {
            return Err(CkksError::LevelUnavailable {
                requested: level,
                available: ct.level(),
            });
        }
        for p in ct.polys.iter_mut() {
            p.truncate_q(&self.ctx, level + 1);
        }
        if level != ct.level() {
            ct.seed = None;
        }
        Ok(())
    }

    // ---------------------------------------------------------------- rotations

    /// The key of Galois element `g` (rotation `step`) for a ciphertext at `level`.
    fn key_for<'a>(
        &self,
        gk: &'a GaloisKeys,
        g: u64,
        step: i64,
        level: usize,
    ) -> Result<&'a KeySwitchKey> {
        let key = gk.keys.get(&g).ok_or(CkksError::MissingGaloisKey {
            step,
            galois_element: g,
        })?;
        key.check_in(&self.ctx)?;
        key.check_serves(level, step)?;
        Ok(key)
    }

    /// The automorphism `g` of `ct` with key switching; `parts` is the
    /// precomputed decomposition of `c1` (hoisting) or `None` to compute it
    /// limb by limb. Both give bit-identical results.
    fn apply_galois(
        &self,
        ct: &Ciphertext,
        parts: Option<&rns::Decomposition>,
        key: &KeySwitchKey,
        g: u64,
    ) -> Ciphertext {
        let ctx = &self.ctx;
        let perm = ctx.galois_permutation(g);
        let mut c0 = ct.polys[0].automorphism_ntt(ctx, g);
        let mut c1 = RnsPoly::zero(ctx, c0.q_limbs, 0, true);
        match parts {
            Some(parts) => rns::key_switch_hoisted_add(
                ctx,
                parts,
                &key.b,
                &key.a,
                Some(&perm),
                &mut c0,
                &mut c1,
            ),
            None => rns::key_switch_add(
                ctx,
                &ct.polys[1],
                &key.b,
                &key.a,
                Some(&perm),
                &mut c0,
                &mut c1,
            ),
        }
        Ciphertext {
            polys: vec![c0, c1],
            scale: ct.scale,
            seed: None,
        }
    }

    /// Rotates by `step`: slot `i + step` moves to slot `i`.
    pub fn rotate(&self, ct: &Ciphertext, step: i64, gk: &GaloisKeys) -> Result<Ciphertext> {
        self.check_ct(ct)?;
        Self::check_size(ct, 2)?;
        let g = self.ctx.galois_element(step);
        if g == 1 {
            return Ok(ct.clone());
        }
        let key = self.key_for(gk, g, step, ct.level())?;
        Ok(self.apply_galois(ct, None, key, g))
    }

    /// Complex conjugation of every slot.
    pub fn conjugate(&self, ct: &Ciphertext, gk: &GaloisKeys) -> Result<Ciphertext> {
        self.check_ct(ct)?;
        Self::check_size(ct, 2)?;
        let g = self.ctx.conjugation_element();
        let key = self.key_for(gk, g, 0, ct.level())?;
        Ok(self.apply_galois(ct, None, key, g))
    }

    /// An empty [`RotationSum`] at `level` and `scale`.
    pub fn rotation_sum(&self, level: usize, scale: f64) -> RotationSum {
        let ql = level + 1;
        RotationSum {
            c0: RnsPoly::zero(&self.ctx, ql, 0, true),
            c1: RnsPoly::zero(&self.ctx, ql, 0, true),
            qp: None,
            scale,
        }
    }

    /// `sum += rotate(ct, step)`, with the key switch left over `Q * P`
    /// (`step` 0, or a multiple of the slot count, adds `ct` itself).
    pub fn add_rotation(
        &self,
        sum: &mut RotationSum,
        ct: &Ciphertext,
        step: i64,
        gk: &GaloisKeys,
    ) -> Result<()> {
        self.check_ct(ct)?;
        Self::check_size(ct, 2)?;
        Self::check_levels(sum.c0.q_limbs - 1, ct.level())?;
        self.check_scales(sum.scale, ct.scale)?;
        let ctx = &self.ctx;
        let g = ctx.galois_element(step);
        if g == 1 {
            sum.c0.add_assign(ctx, &ct.polys[0]);
            sum.c1.add_assign(ctx, &ct.polys[1]);
            return Ok(());
        }
        let key = self.key_for(gk, g, step, ct.level())?;
        let perm = ctx.galois_permutation(g);
        sum.c0
            .add_assign(ctx, &ct.polys[0].automorphism_ntt(ctx, g));
        let ql = sum.c0.q_limbs;
        let (acc0, acc1) = sum.qp.get_or_insert_with(|| {
            (
                RnsPoly::zero(ctx, ql, ctx.p_count(), true),
                RnsPoly::zero(ctx, ql, ctx.p_count(), true),
            )
        });
        rns::key_switch_add_qp(ctx, &ct.polys[1], &key.b, &key.a, Some(&perm), acc0, acc1);
        Ok(())
    }

    /// The ciphertext a [`RotationSum`] stands for: one ModDown of the
    /// summed key switches.
    pub fn finish_rotation_sum(&self, sum: RotationSum) -> Ciphertext {
        let RotationSum {
            mut c0,
            mut c1,
            qp,
            scale,
        } = sum;
        if let Some((acc0, acc1)) = qp {
            rns::mod_down_add(&self.ctx, &acc0, &mut c0);
            rns::mod_down_add(&self.ctx, &acc1, &mut c1);
        }
        Ciphertext {
            polys: vec![c0, c1],
            scale,
            seed: None,
        }
    }

    /// Rotations of one ciphertext by each of `steps`, sharing one ModUp
    /// decomposition of `c1` (hoisting). Output `i` is the rotation by `steps[i]`.
    pub fn rotate_hoisted(
        &self,
        ct: &Ciphertext,
        steps: &[i64],
        gk: &GaloisKeys,
    ) -> Result<Vec<Ciphertext>> {
        self.check_ct(ct)?;
        Self::check_size(ct, 2)?;
        let mut keys = Vec::with_capacity(steps.len());
        for &k in steps {
            let g = self.ctx.galois_element(k);
            keys.push((
                g,
                if g == 1 {
                    None
                } else {
                    Some(self.key_for(gk, g, k, ct.level())?)
                },
            ));
        }
        if keys.iter().all(|(_, k)| k.is_none()) {
            return Ok(vec![ct.clone(); steps.len()]);
        }
        let parts = rns::decompose(&self.ctx, &ct.polys[1]);
        Ok(keys
            .into_iter()
            .map(|(g, key)| match key {
                None => {
                    let mut c = ct.clone();
                    c.seed = None;
                    c
                }
                Some(key) => self.apply_galois(ct, Some(&parts), key, g),
            })
            .collect())
    }
}
