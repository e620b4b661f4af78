//! Slot-wise linear transforms in diagonal form and their homomorphic
//! evaluation by baby-step giant-step (BSGS) with hoisted baby rotations.
//!
//! Contract: a [`DiagMatrix`] of period `P` (a power of two dividing `N/2`)
//! maps a slot vector `x` to `y[s] = sum_k d_k[s mod P] * x[s + k]`, offsets
//! `k` taken modulo `P`; inputs are assumed `P`-periodic (or the transform is
//! read on each period). [`Bsgs`] encodes such a matrix once, at one level,
//! as plaintexts pre-rotated for the giant steps; applying it costs one level.

use std::collections::BTreeMap;

use rayon::prelude::*;

use super::super::context::Context;
use super::super::encoding::{Complex64, Encoder, Plaintext};
use super::super::encrypt::Ciphertext;
use super::super::error::{CkksError, Result};
use super::super::eval::Evaluator;
use super::super::keys::GaloisKeys;
use super::super::pointwise;
use super::super::poly::RnsPoly;
use super::super::rns::Scratch;

/// A linear map on `P`-periodic slot vectors, by its nonzero diagonals.
#[derive(Clone, Debug)]
pub(crate) struct DiagMatrix {
    pub(crate) period: usize,
    /// Offset in `0..period` -> diagonal of `period` entries.
    pub(crate) diags: BTreeMap<usize, Vec<Complex64>>,
}

impl DiagMatrix {
    /// The identity of period `p`.
    pub(crate) fn identity(p: usize) -> Self {
        let mut diags = BTreeMap::new();
        diags.insert(0, vec![Complex64::new(1.0, 0.0); p]);
        Self { period: p, diags }
    }

    fn add_to(&mut self, offset: usize, s: usize, v: Complex64) {
        let p = self.period;
        let d = self
            .diags
            .entry(offset % p)
            .or_insert_with(|| vec![Complex64::default(); p]);
        d[s % p] = d[s % p] + v;
    }

    /// `self` followed by `next`: the matrix `next * self`.
    pub(crate) fn then(&self, next: &DiagMatrix) -> DiagMatrix {
        let p = self.period.max(next.period);
        let mut out = DiagMatrix {
            period: p,
            diags: BTreeMap::new(),
        };
        // (B A)_{q+r}[s] += b_q[s] * a_r[s + q]
        for (&q, b) in &next.diags {
            for (&r, a) in &self.diags {
                for s in 0..p {
                    let v = b[s % next.period] * a[(s + q) % self.period];
                    if v.re != 0.0 || v.im != 0.0 {
                        out.add_to(q + r, s, v);
                    }
                }
            }
        }
        out.prune();
        out
    }

    /// Every entry times `c`.
    pub(crate) fn scaled(mut self, c: Complex64) -> DiagMatrix {
        for d in self.diags.values_mut() {
            for x in d.iter_mut() {
                *x = *x * c;
            }
        }
        self
    }

    /// Multiplies row `s` by `mask[s]` (the mask's period may be larger).
    pub(crate) fn masked_rows(&self, mask: &[Complex64]) -> DiagMatrix {
        let p = self.period.max(mask.len());
        let mut out = DiagMatrix {
            period: p,
            diags: BTreeMap::new(),
        };
        for (&k, d) in &self.diags {
            let v: Vec<Complex64> = (0..p)
                .map(|s| d[s % self.period] * mask[s % mask.len()])
                .collect();
            out.diags.insert(k, v);
        }
        out.prune();
        out
    }

    fn prune(&mut self) {
        let max = self
            .diags
            .values()
            .flat_map(|d| d.iter().map(|z| z.norm()))
            .fold(0f64, f64::max);
        let tol = max * 1e-15;
        self.diags.retain(|_, d| d.iter().any(|z| z.norm() > tol));
    }

    /// Applies the matrix to a plain vector of length `len` (a multiple of the period).
    #[cfg(test)]
    pub(crate) fn apply_plain(&self, x: &[Complex64]) -> Vec<Complex64> {
        let len = x.len();
        (0..len)
            .map(|s| {
                self.diags
                    .iter()
                    .fold(Complex64::default(), |acc, (&k, d)| {
                        acc + d[s % self.period] * x[(s + k) % len]
                    })
            })
            .collect()
    }
}

/// Signed representative of `k` modulo `p` in `(-p/2, p/2]`.
fn signed(k: usize, p: usize) -> i64 {
    let k = (k % p) as i64;
    if k > (p / 2) as i64 {
        k - p as i64
    } else {
        k
    }
}

/// One encoded diagonal: NTT form at the transform's level, or compact (the
/// rounded integer coefficients, as two's-complement words) and reduced and
/// transformed limb by limb when used.
#[derive(Debug)]
enum Diag {
    Ntt(Plaintext),
    Compact(Vec<u64>),
}

/// A diagonal matrix encoded for BSGS evaluation at one level.
#[derive(Debug)]
pub(crate) struct Bsgs {
    level: usize,
    pt_scale: f64,
    /// Baby-step rotations (including 0 when used).
    baby: Vec<i64>,
    /// Giant-step rotation -> (index into `baby`, diagonal) terms.
    giants: Vec<(i64, Vec<(usize, Diag)>)>,
}

/// The rotation plan of a set of signed offsets: `(stride, n1)` and the
/// baby and giant rotations it needs.
fn plan(offsets: &[i64]) -> (Vec<i64>, Vec<i64>, i64, i64) {
    let stride = offsets.iter().fold(0i64, |g, &k| gcd(g, k.abs())).max(1);
    let units: Vec<i64> = offsets.iter().map(|k| k / stride).collect();
    let mut best: Option<(f64, i64)> = None;
    let mut n1 = 1i64;
    let span = units.iter().max().unwrap_or(&0) - units.iter().min().unwrap_or(&0) + 1;
    while n1 <= 2 * span.max(1) {
        let mut babies: Vec<i64> = units.iter().map(|u| u.rem_euclid(n1)).collect();
        babies.sort_unstable();
        babies.dedup();
        let mut giants: Vec<i64> = units.iter().map(|u| u.div_euclid(n1)).collect();
        giants.sort_unstable();
        giants.dedup();
        // Hoisted baby rotations cost about half of a full rotation.
        let cost = 0.5 * babies.iter().filter(|&&b| b != 0).count() as f64
            + giants.iter().filter(|&&g| g != 0).count() as f64;
        if best.is_none_or(|(c, _)| cost < c) {
            best = Some((cost, n1));
        }
        n1 *= 2;
    }
    let n1 = best.map_or(1, |(_, n)| n);
    let mut babies: Vec<i64> = units.iter().map(|u| u.rem_euclid(n1) * stride).collect();
    babies.sort_unstable();
    babies.dedup();
    let mut giants: Vec<i64> = units
        .iter()
        .map(|u| u.div_euclid(n1) * n1 * stride)
        .collect();
    giants.sort_unstable();
    giants.dedup();
    (babies, giants, n1, stride)
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The rotations a BSGS evaluation of `m` needs keys for, and its key switches (hoisted baby
/// steps, giant steps), without encoding it: the same plan as [`Bsgs::new`].
pub(crate) fn rotation_plan(m: &DiagMatrix) -> (Vec<i64>, (usize, usize)) {
    let offsets: Vec<i64> = m.diags.keys().map(|&k| signed(k, m.period)).collect();
    let (baby, giants, _, _) = plan(&offsets);
    let count = |v: &[i64]| v.iter().filter(|&&r| r != 0).count();
    let switches = (count(&baby), count(&giants));
    let rotations = baby.into_iter().chain(giants).filter(|&r| r != 0).collect();
    (rotations, switches)
}

impl Bsgs {
    /// Encodes `m` at `level`; plaintexts at scale `pt_scale`, kept in NTT
    /// form unless `compact`.
    pub(crate) fn new(
        encoder: &Encoder,
        m: &DiagMatrix,
        level: usize,
        pt_scale: f64,
        compact: bool,
    ) -> Result<Self> {
        let slots = encoder.slots();
        let p = m.period;
        if p == 0 || !slots.is_multiple_of(p) {
            return Err(CkksError::InvalidInput(format!(
                "transform period {p} does not divide the {slots} slots"
            )));
        }
        let offsets: Vec<i64> = m.diags.keys().map(|&k| signed(k, p)).collect();
        let (baby, _giants, n1, stride) = plan(&offsets);
        let mut by_giant: BTreeMap<i64, Vec<(usize, &Vec<Complex64>)>> = BTreeMap::new();
        for (&k, d) in &m.diags {
            let u = signed(k, p) / stride;
            let g = u.div_euclid(n1) * n1 * stride;
            let b = u.rem_euclid(n1) * stride;
            let bi = baby.iter().position(|&x| x == b).unwrap_or(0);
            by_giant.entry(g).or_default().push((bi, d));
        }
        let jobs: Vec<(i64, usize, &Vec<Complex64>)> = by_giant
            .iter()
            .flat_map(|(&g, v)| v.iter().map(move |&(bi, d)| (g, bi, d)))
            .collect();
        // Pre-rotate each diagonal by -g: d'[s] = d[s - g].
        let pts: Vec<Diag> = jobs
            .par_iter()
            .map(|&(g, _, d)| {
                let vals: Vec<Complex64> = (0..slots)
                    .map(|s| d[(s as i64 - g).rem_euclid(p as i64) as usize])
                    .collect();
                if compact {
                    let ints = encoder.integer_coefficients(&vals, level, pt_scale)?;
                    Ok(Diag::Compact(ints.into_iter().map(|c| c as u64).collect()))
                } else {
                    Ok(Diag::Ntt(encoder.encode_complex(&vals, level, pt_scale)?))
                }
            })
            .collect::<Result<_>>()?;
        let mut giants: Vec<(i64, Vec<(usize, Diag)>)> = Vec::new();
        for ((g, bi, _), pt) in jobs.into_iter().zip(pts) {
            match giants.last_mut() {
                Some((last, v)) if *last == g => v.push((bi, pt)),
                _ => giants.push((g, vec![(bi, pt)])),
            }
        }
        Ok(Self {
            level,
            pt_scale,
            baby,
            giants,
        })
    }

    /// The rotations this transform needs keys for.
    pub(crate) fn rotations(&self) -> Vec<i64> {
        self.baby
            .iter()
            .copied()
            .chain(self.giants.iter().map(|(g, _)| *g))
            .filter(|&r| r != 0)
            .collect()
    }

    /// Number of key switches of one application (baby, giant).
    pub(crate) fn key_switches(&self) -> (usize, usize) {
        (
            self.baby.iter().filter(|&&b| b != 0).count(),
            self.giants.iter().filter(|(g, _)| *g != 0).count(),
        )
    }

    /// Bytes of the encoded plaintexts.
    pub(crate) fn bytes(&self) -> usize {
        self.giants
            .iter()
            .flat_map(|(_, v)| v.iter())
            .map(|(_, d)| match d {
                Diag::Ntt(pt) => pt.poly.data.len() * 8,
                Diag::Compact(c) => c.len() * 8,
            })
            .sum()
    }

    /// Applies the transform to `ct` (at this transform's level), without
    /// rescaling: the result's scale is `ct.scale() * pt_scale`.
    pub(crate) fn apply(
        &self,
        ev: &Evaluator,
        ct: &Ciphertext,
        gk: &GaloisKeys,
    ) -> Result<Ciphertext> {
        if ct.level() != self.level {
            return Err(CkksError::LevelMismatch {
                left: ct.level(),
                right: self.level,
            });
        }
        if self.giants.is_empty() {
            return Err(CkksError::InvalidInput("empty linear transform".into()));
        }
        let ctx = ev.context();
        let rotated = ev.rotate_hoisted(ct, &self.baby, gk)?;
        // Giant steps one after another (each is parallel over limbs), their
        // key switches summed over Q*P and brought down once.
        let mut sum = ev.rotation_sum(ct.level(), ct.scale * self.pt_scale);
        for (g, terms) in &self.giants {
            let acc = Ciphertext {
                polys: mac_diagonals(ctx, &rotated, terms),
                scale: ct.scale * self.pt_scale,
                seed: None,
            };
            ev.add_rotation(&mut sum, &acc, *g, gk)?;
        }
        Ok(ev.finish_rotation_sum(sum))
    }
}

/// `sum_t rotated[b_t] * d_t` for the terms `(b_t, d_t)` of one giant step,
/// limb by limb (compact diagonals are reduced and transformed per limb).
fn mac_diagonals(ctx: &Context, rotated: &[Ciphertext], terms: &[(usize, Diag)]) -> Vec<RnsPoly> {
    let n = ctx.n();
    let ql = rotated[0].polys[0].q_limbs;
    let mut c0 = RnsPoly::zero(ctx, ql, 0, true);
    let mut c1 = RnsPoly::zero(ctx, ql, 0, true);
    c0.data
        .par_chunks_mut(n)
        .zip(c1.data.par_chunks_mut(n))
        .enumerate()
        .for_each(|(i, (o0, o1))| {
            let m = &ctx.moduli()[i];
            let r = i * n..(i + 1) * n;
            let mut tmp = Scratch::take(n);
            for (b, d) in terms {
                let y: &[u64] = match d {
                    Diag::Ntt(pt) => &pt.poly.data[r.clone()],
                    Diag::Compact(words) => {
                        // SAFETY: a u64 slice viewed as initialised MaybeUninit words.
                        let out = unsafe {
                            std::slice::from_raw_parts_mut(
                                tmp.as_mut_ptr() as *mut std::mem::MaybeUninit<u64>,
                                n,
                            )
                        };
                        pointwise::reduce_signed_into(m, words, out);
                        ctx.ntt_table(i).forward(&mut tmp[..n]);
                        &tmp[..n]
                    }
                };
                let x = &rotated[*b].polys;
                pointwise::add_mul_assign(m, o0, &x[0].data[r.clone()], y);
                pointwise::add_mul_assign(m, o1, &x[1].data[r.clone()], y);
            }
        });
    vec![c0, c1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(re: f64, im: f64) -> Complex64 {
        Complex64::new(re, im)
    }

    #[test]
    fn composition_matches_sequential_application() {
        // A (period 4) on 4-periodic inputs, then B (period 8).
        let mut a = DiagMatrix {
            period: 4,
            diags: BTreeMap::new(),
        };
        let mut b = DiagMatrix {
            period: 8,
            diags: BTreeMap::new(),
        };
        for s in 0..4 {
            a.add_to(1, s, c(s as f64 + 1.0, 0.5));
            a.add_to(3, s, c(-0.25, s as f64));
        }
        for s in 0..8 {
            b.add_to(0, s, c(2.0, -1.0));
            b.add_to(6, s, c(s as f64, 1.0));
        }
        let x: Vec<Complex64> = (0..16)
            .map(|i| c((i % 4) as f64 * 0.1, 1.0 - (i % 4) as f64))
            .collect();
        let seq = b.apply_plain(&a.apply_plain(&x));
        let fused = a.then(&b).apply_plain(&x);
        for (u, v) in seq.iter().zip(&fused) {
            assert!((*u - *v).norm() < 1e-12, "{u:?} vs {v:?}");
        }
    }

    #[test]
    fn rotation_plan_covers_every_offset() {
        let offsets: Vec<i64> = (-7..=7).map(|k| k * 4).collect();
        let (baby, giants, n1, stride) = plan(&offsets);
        assert_eq!(stride, 4);
        for k in offsets {
            let u = k / stride;
            assert!(baby.contains(&(u.rem_euclid(n1) * stride)));
            assert!(giants.contains(&(u.div_euclid(n1) * n1 * stride)));
        }
        assert!(baby.len() + giants.len() < 15);
    }
}
