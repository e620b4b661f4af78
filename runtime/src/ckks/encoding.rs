//! CKKS encoding: the canonical embedding through an O(N log N) special FFT,
//! plaintexts, and exact CRT decoding.
//!
//! Contract: a message of up to `N/2` complex (or real) slots, zero-padded to
//! `N/2`, is mapped to the integer polynomial `round(scale * m)` where `m` has
//! `m(zeta^(5^j)) = z_j` for `zeta = exp(i*pi/N)`, then reduced into the
//! limbs of the requested level and put in NTT form. Decoding reconstructs
//! each coefficient exactly from all limbs (multi-word CRT), centres it
//! around zero, converts to `f64`, divides by the scale and evaluates the
//! embedding. Scalars are encoded without an FFT as constant polynomials.

use std::ops::{Add, Mul, Neg, Sub};
use std::sync::Arc;

use rayon::prelude::*;

use super::context::Context;
use super::error::{CkksError, Result};
use super::pointwise;
use super::poly::RnsPoly;

/// A small complex number type (no external crate).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Complex64 {
    /// Real part.
    pub re: f64,
    /// Imaginary part.
    pub im: f64,
}

impl Complex64 {
    /// `re + i*im`.
    pub const fn new(re: f64, im: f64) -> Self {
        Self { re, im }
    }
    /// Complex conjugate.
    pub fn conj(self) -> Self {
        Self::new(self.re, -self.im)
    }
    /// Modulus `|z|`.
    pub fn norm(self) -> f64 {
        self.re.hypot(self.im)
    }
    /// `exp(i*theta)`.
    pub fn from_angle(theta: f64) -> Self {
        Self::new(theta.cos(), theta.sin())
    }
    /// Multiplies by a real.
    pub fn scale(self, s: f64) -> Self {
        Self::new(self.re * s, self.im * s)
    }
}

impl Add for Complex64 {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self::new(self.re + o.re, self.im + o.im)
    }
}
impl Sub for Complex64 {
    type Output = Self;
    fn sub(self, o: Self) -> Self {
        Self::new(self.re - o.re, self.im - o.im)
    }
}
impl Mul for Complex64 {
    type Output = Self;
    fn mul(self, o: Self) -> Self {
        Self::new(
            self.re * o.re - self.im * o.im,
            self.re * o.im + self.im * o.re,
        )
    }
}
impl Neg for Complex64 {
    type Output = Self;
    fn neg(self) -> Self {
        Self::new(-self.re, -self.im)
    }
}

/// An encoded message: a polynomial in NTT form at a level, with its scale.
#[derive(Clone, Debug, PartialEq)]
pub struct Plaintext {
    pub(crate) poly: RnsPoly,
    pub(crate) scale: f64,
}

impl Plaintext {
    /// Level (number of ciphertext limbs minus one).
    pub fn level(&self) -> usize {
        self.poly.level()
    }
    /// Scale factor.
    pub fn scale(&self) -> f64 {
        self.scale
    }
}

/// Encoder/decoder of one parameter set.
#[derive(Debug, Clone)]
pub struct Encoder {
    ctx: Arc<Context>,
    /// Twiddles of the inverse special FFT at `[lenh + j]` for each stage.
    inv_tw: Vec<Complex64>,
    /// Twiddles of the forward special FFT at `[lenh + j]` for each stage.
    fwd_tw: Vec<Complex64>,
}

fn bit_reverse_permute(v: &mut [Complex64]) {
    let n = v.len();
    let bits = n.trailing_zeros();
    for i in 0..n {
        let j = super::ntt::bit_reverse(i, bits);
        if i < j {
            v.swap(i, j);
        }
    }
}

pub(crate) fn check_scale(scale: f64) -> Result<()> {
    if !(scale.is_finite() && scale >= 1.0) {
        return Err(CkksError::InvalidInput(format!(
            "scale {scale} must be finite and at least 1"
        )));
    }
    Ok(())
}

impl Encoder {
    /// Precomputes the FFT twiddles of the context's ring degree.
    pub fn new(ctx: &Arc<Context>) -> Self {
        let n = ctx.n();
        let slots = n / 2;
        let m = 2 * n; // order of zeta
        let mut rot = Vec::with_capacity(slots);
        let mut g = 1usize;
        for _ in 0..slots {
            rot.push(g);
            g = (g * 5) % m;
        }
        let root =
            |k: usize| Complex64::from_angle(2.0 * std::f64::consts::PI * k as f64 / m as f64);
        let mut inv_tw = vec![Complex64::default(); slots];
        let mut fwd_tw = vec![Complex64::default(); slots];
        let mut len = 2;
        while len <= slots {
            let lenh = len / 2;
            let lenq = len * 4;
            for j in 0..lenh {
                let r = rot[j] % lenq;
                fwd_tw[lenh + j] = root(r * (m / lenq));
                inv_tw[lenh + j] = root((lenq - r) * (m / lenq));
            }
            len *= 2;
        }
        Self {
            ctx: ctx.clone(),
            inv_tw,
            fwd_tw,
        }
    }

    /// Number of slots, `N/2`.
    pub fn slots(&self) -> usize {
        self.ctx.n() / 2
    }

    /// Evaluates the embedding: coefficients (folded) -> slot values.
    fn fft_special(&self, v: &mut [Complex64]) {
        let size = v.len();
        bit_reverse_permute(v);
        let mut len = 2;
        while len <= size {
            let lenh = len / 2;
            let tw = &self.fwd_tw[lenh..len];
            for chunk in v.chunks_exact_mut(len) {
                let (a, b) = chunk.split_at_mut(lenh);
                for ((u, w), &t) in a.iter_mut().zip(b.iter_mut()).zip(tw) {
                    let x = *u;
                    let y = *w * t;
                    *u = x + y;
                    *w = x - y;
                }
            }
            len *= 2;
        }
    }

    /// Inverse of [`Self::fft_special`].
    fn fft_special_inv(&self, v: &mut [Complex64]) {
        let size = v.len();
        let mut len = size;
        while len >= 2 {
            let lenh = len / 2;
            let tw = &self.inv_tw[lenh..len];
            for chunk in v.chunks_exact_mut(len) {
                let (a, b) = chunk.split_at_mut(lenh);
                for ((u, w), &t) in a.iter_mut().zip(b.iter_mut()).zip(tw) {
                    let x = *u + *w;
                    let y = (*u - *w) * t;
                    *u = x;
                    *w = y;
                }
            }
            len /= 2;
        }
        bit_reverse_permute(v);
        let inv = 1.0 / size as f64;
        for x in v.iter_mut() {
            *x = x.scale(inv);
        }
    }

    fn check_level(&self, level: usize) -> Result<()> {
        if level > self.ctx.max_level() {
            return Err(CkksError::LevelUnavailable {
                requested: level,
                available: self.ctx.max_level(),
            });
        }
        Ok(())
    }

    /// Encodes up to `N/2` complex values at `level` and `scale`.
    pub fn encode_complex(
        &self,
        values: &[Complex64],
        level: usize,
        scale: f64,
    ) -> Result<Plaintext> {
        self.check_level(level)?;
        check_scale(scale)?;
        let slots = self.slots();
        if values.len() > slots {
            return Err(CkksError::InvalidInput(format!(
                "{} values exceed the {slots} slots",
                values.len()
            )));
        }
        if values
            .iter()
            .any(|z| !(z.re.is_finite() && z.im.is_finite()))
        {
            return Err(CkksError::InvalidInput("non-finite value".into()));
        }
        let mut v = vec![Complex64::default(); slots];
        v[..values.len()].copy_from_slice(values);
        self.fft_special_inv(&mut v);
        let n = self.ctx.n();
        let ctx = &self.ctx;
        // Unrounded scaled coefficients: real parts, then imaginary parts.
        let scaled = || {
            v.iter()
                .map(move |z| z.re * scale)
                .chain(v.iter().map(move |z| z.im * scale))
        };
        // max |round(x)| = round(max |x|).
        let max = scaled().fold(0f64, |a, c| a.max(c.abs())).round();
        check_fits(ctx, max, level + 1)?;
        let mut poly = if max < 9.0e18 {
            // Every coefficient fits an i64: round once, then reduce each
            // limb (two's-complement words, vector kernel).
            let ints: Vec<u64> = scaled().map(|c| round_i64(c) as u64).collect();
            // SAFETY: `reduce_signed_into` writes every word of `limb`.
            unsafe {
                RnsPoly::build(ctx, level + 1, 0, false, |_, m, limb| {
                    pointwise::reduce_signed_into(m, &ints, limb)
                })
            }
        } else {
            let coeffs: Vec<f64> = scaled().map(f64::round).collect();
            debug_assert_eq!(coeffs.len(), n);
            // SAFETY: every word `j` of each limb is written (or the index panics).
            unsafe {
                RnsPoly::build(ctx, level + 1, 0, false, |_, m, limb| {
                    for (j, o) in limb.iter_mut().enumerate() {
                        o.write(m.reduce_f64(coeffs[j]));
                    }
                })
            }
        };
        poly.make_ntt(ctx);
        Ok(Plaintext { poly, scale })
    }

    /// The rounded integer coefficients `round(scale * iFFT(values))` of the
    /// encoding of up to `N/2` complex values (checked to fit the modulus at
    /// `level` and an `i64`), in coefficient order.
    pub(crate) fn integer_coefficients(
        &self,
        values: &[Complex64],
        level: usize,
        scale: f64,
    ) -> Result<Vec<i64>> {
        self.check_level(level)?;
        check_scale(scale)?;
        let slots = self.slots();
        if values.len() > slots
            || values
                .iter()
                .any(|z| !(z.re.is_finite() && z.im.is_finite()))
        {
            return Err(CkksError::InvalidInput(
                "too many or non-finite values".into(),
            ));
        }
        let mut v = vec![Complex64::default(); slots];
        v[..values.len()].copy_from_slice(values);
        self.fft_special_inv(&mut v);
        let scaled: Vec<f64> = v
            .iter()
            .map(|z| z.re * scale)
            .chain(v.iter().map(|z| z.im * scale))
            .collect();
        let max = scaled.iter().fold(0f64, |a, c| a.max(c.abs())).round();
        check_fits(&self.ctx, max, level + 1)?;
        if max >= 9.0e18 {
            return Err(CkksError::InvalidInput(format!(
                "coefficient 2^{:.1} does not fit 63 bits",
                max.log2()
            )));
        }
        Ok(scaled.into_iter().map(round_i64).collect())
    }

    /// Encodes up to `N/2` real values at `level` and `scale`.
    pub fn encode(&self, values: &[f64], level: usize, scale: f64) -> Result<Plaintext> {
        let v: Vec<Complex64> = values.iter().map(|&x| Complex64::new(x, 0.0)).collect();
        self.encode_complex(&v, level, scale)
    }

    /// Encodes the real constant `c` in every slot (no FFT): the constant
    /// polynomial `round(c * scale)`.
    pub fn encode_scalar(&self, c: f64, level: usize, scale: f64) -> Result<Plaintext> {
        self.check_level(level)?;
        check_scale(scale)?;
        let consts = scalar_limbs(&self.ctx, c, scale, level + 1)?;
        let mut poly = RnsPoly::zero(&self.ctx, level + 1, 0, true);
        poly.apply(&self.ctx, |i, _, limb| limb.fill(consts[i]));
        Ok(Plaintext { poly, scale })
    }

    /// Decodes all `N/2` complex slots.
    pub fn decode_complex(&self, pt: &Plaintext) -> Result<Vec<Complex64>> {
        let ctx = &self.ctx;
        let n = ctx.n();
        let slots = n / 2;
        check_scale(pt.scale)?;
        pt.poly.check_in(ctx, false)?;
        let mut poly = pt.poly.clone();
        poly.make_coeff(ctx);
        let coeffs = crt_reconstruct_f64(ctx, &poly);
        let inv = 1.0 / pt.scale;
        let mut v: Vec<Complex64> = (0..slots)
            .map(|i| Complex64::new(coeffs[i] * inv, coeffs[i + slots] * inv))
            .collect();
        self.fft_special(&mut v);
        Ok(v)
    }

    /// Decodes the real parts of all `N/2` slots.
    pub fn decode(&self, pt: &Plaintext) -> Result<Vec<f64>> {
        Ok(self.decode_complex(pt)?.into_iter().map(|z| z.re).collect())
    }
}

/// `x.round()` (half away from zero) as an integer, for finite `|x| < 2^63`,
/// without the libm call that `f64::round` is on baseline x86-64.
#[inline]
fn round_i64(x: f64) -> i64 {
    let t = x as i64; // truncates toward zero
    let frac = x - t as f64; // exact: |x| < 2^52 here, or x is an integer
    t + (frac >= 0.5) as i64 - (frac <= -0.5) as i64
}

/// Refuses integer coefficients of magnitude `max` that would wrap around
/// `Q_l / 2` (the product of the first `q_limbs` primes).
fn check_fits(ctx: &Context, max: f64, q_limbs: usize) -> Result<()> {
    let log_q: f64 = ctx.moduli()[..q_limbs]
        .iter()
        .map(|m| (m.value() as f64).log2())
        .sum();
    if !max.is_finite() || (max > 0.0 && max.log2() >= log_q - 1.0) {
        return Err(CkksError::InvalidInput(format!(
            "scaled value 2^{:.1} does not fit the modulus Q (2^{log_q:.1}) at this level",
            max.log2()
        )));
    }
    Ok(())
}

/// `round(c * scale)` reduced modulo each of the first `q_limbs` primes.
pub(crate) fn scalar_limbs(ctx: &Context, c: f64, scale: f64, q_limbs: usize) -> Result<Vec<u64>> {
    let v = (c * scale).round();
    check_fits(ctx, v.abs(), q_limbs)?;
    Ok(ctx.moduli()[..q_limbs]
        .iter()
        .map(|m| m.reduce_f64(v))
        .collect())
}

/// Exact CRT reconstruction of every coefficient of `poly` (coefficient form,
/// no special limbs), centred in `(-Q/2, Q/2]`, converted to `f64`.
///
/// Garner's algorithm with *balanced* mixed-radix digits: `v = a_0 + q_0 (a_1 + q_1 (a_2 +
/// ...))` with `|a_i| <= (q_i - 1) / 2`. For odd moduli every integer of `[-(Q-1)/2, (Q-1)/2]`
/// has exactly one such representation, so the digits give the centred value directly, and
/// Horner's rule in `f64` keeps full relative precision (no cancellation against `Q`).
/// `O(l^2)` Shoup multiplications per coefficient and no multi-word arithmetic. Groups of 8
/// coefficients go through the AVX-512 kernel [`pointwise::crt_f64_prefix`] when available
/// (bit-identical results).
/// Coefficient `k` of the `moduli.len()`-limb RNS polynomial `data` (limb-major, `n` words
/// per limb) as a float, by Garner's algorithm with balanced mixed-radix digits: digit `i` is
/// the centred residue of `(x - sum_{j<i} d_j * prod_{t<j} q_t) / prod_{t<i} q_t` mod `q_i`
/// (`inv[i][j]` = `q_j^-1 mod q_i` with its Shoup quotient), and the value is
/// `d_0 + q_0 (d_1 + q_1 (d_2 + ...))` evaluated in floating point from the last digit. The
/// scalar reference of the vector kernel `pointwise::crt_f64_prefix` (bit-identical).
/// `digits` is scratch space of at least `moduli.len()` entries.
pub(crate) fn garner_coefficient(
    moduli: &[crate::ckks::zq::Modulus],
    inv: &[Vec<(u64, u64)>],
    data: &[u64],
    n: usize,
    k: usize,
    digits: &mut [i64],
) -> f64 {
    let l1 = moduli.len();
    for (i, mi) in moduli.iter().enumerate() {
        let mut t = data[i * n + k];
        for (j, &(w, ws)) in inv[i].iter().enumerate() {
            t = mi.mul_shoup(mi.sub(t, mi.reduce_i64(digits[j])), w, ws);
        }
        let q = mi.value();
        digits[i] = if t > q / 2 {
            t as i64 - q as i64
        } else {
            t as i64
        };
    }
    let mut acc = digits[l1 - 1] as f64;
    for i in (0..l1 - 1).rev() {
        acc = digits[i] as f64 + moduli[i].value() as f64 * acc;
    }
    acc
}

pub(crate) fn crt_reconstruct_f64(ctx: &Context, poly: &RnsPoly) -> Vec<f64> {
    let n = ctx.n();
    let l = poly.level();
    let moduli = &ctx.moduli()[..=l];
    let inv = &ctx.levels[l].crt.inv;
    let qs: Vec<u64> = moduli.iter().map(|m| m.value()).collect();
    let mut out = vec![0f64; n];
    out.par_chunks_mut(256).enumerate().for_each_init(
        || vec![0i64; l + 1],
        |digits, (blk, chunk)| {
            let done = pointwise::crt_f64_prefix(&qs, inv, &poly.data, n, blk * 256, chunk);
            for (kk, o) in chunk.iter_mut().enumerate().skip(done) {
                *o = garner_coefficient(moduli, inv, &poly.data, n, blk * 256 + kk, digits);
            }
        },
    );
    out
}
