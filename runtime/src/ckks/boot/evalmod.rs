//! Homomorphic evaluation of polynomials in the Chebyshev basis, with exact
//! scale management, and the modular reduction step of bootstrapping.
//!
//! Contract: [`ChebEvaluator::evaluate`] takes a ciphertext `u` (values in
//! `[-1, 1]`) at level `l` and returns `p(u)` at level
//! `l - (ceil(log2(deg + 1)) + 1)` with exactly the requested scale: every
//! addition of two ciphertexts is between operands brought to the same level
//! and the same scale (to floating-point rounding), because the constants of
//! each product are encoded at the scale that makes it so. Powers `T_k` are
//! computed once (`T_2k = 2 T_k^2 - 1`, `T_(a+b) = 2 T_a T_b - T_(a-b)`).

use std::collections::BTreeMap;

use super::super::encrypt::Ciphertext;
use super::super::error::{CkksError, Result};
use super::super::eval::Evaluator;
use super::super::keys::RelinKey;

/// Chebyshev coefficients `c_0..c_d` of the interpolant of `f` on `[-1, 1]`
/// at the `d + 1` Chebyshev nodes (`p = sum c_k T_k`).
pub(crate) fn interpolate(f: impl Fn(f64) -> f64, degree: usize) -> Vec<f64> {
    let n = degree + 1;
    let pi = std::f64::consts::PI;
    let vals: Vec<f64> = (0..n)
        .map(|j| f((pi * (j as f64 + 0.5) / n as f64).cos()))
        .collect();
    (0..n)
        .map(|k| {
            let s: f64 = vals
                .iter()
                .enumerate()
                .map(|(j, v)| v * (pi * k as f64 * (j as f64 + 0.5) / n as f64).cos())
                .sum();
            let c = 2.0 * s / n as f64;
            if k == 0 {
                c / 2.0
            } else {
                c
            }
        })
        .collect()
}

/// `sum c_k T_k(x)` by Clenshaw's recurrence.
#[cfg(test)]
pub(crate) fn eval_plain(c: &[f64], x: f64) -> f64 {
    let (mut b1, mut b2) = (0.0, 0.0);
    for &ck in c.iter().skip(1).rev() {
        let b0 = ck + 2.0 * x * b1 - b2;
        b2 = b1;
        b1 = b0;
    }
    c.first().copied().unwrap_or(0.0) + x * b1 - b2
}

/// Depth of [`ChebEvaluator::evaluate`] for a polynomial of degree `d`.
pub(crate) fn depth(degree: usize) -> usize {
    ceil_log2(degree + 1) + 1
}

fn ceil_log2(x: usize) -> usize {
    (usize::BITS - (x.max(1) - 1).leading_zeros()) as usize
}

/// `2 y^2 - 1` (`T_2(y)`, the double-angle step `cos 2a = 2 cos^2 a - 1`),
/// relinearized and rescaled: one level.
pub(crate) fn double_angle(ev: &Evaluator, rk: &RelinKey, y: &Ciphertext) -> Result<Ciphertext> {
    let mut t = ev.square(y)?;
    ev.relinearize_assign(&mut t, rk)?;
    ev.rescale_assign(&mut t)?;
    ev.mul_integer_assign(&mut t, 2)?;
    ev.add_scalar_assign(&mut t, -1.0)?;
    Ok(t)
}

/// Evaluates Chebyshev series on one encrypted input, caching its powers.
pub(crate) struct ChebEvaluator<'a> {
    ev: &'a Evaluator,
    rk: &'a RelinKey,
    powers: BTreeMap<usize, Ciphertext>,
    baby_bits: usize,
}

impl<'a> ChebEvaluator<'a> {
    pub(crate) fn new(ev: &'a Evaluator, rk: &'a RelinKey, x: Ciphertext, degree: usize) -> Self {
        let g = ceil_log2(degree + 1);
        let mut powers = BTreeMap::new();
        powers.insert(1, x);
        Self {
            ev,
            rk,
            powers,
            baby_bits: g.div_ceil(2).max(1),
        }
    }

    fn prime(&self, level: usize) -> f64 {
        self.ev.context().moduli()[level].value() as f64
    }

    /// `ct` brought to `level` with exactly `scale`: unchanged if it is
    /// there already, else dropped to `level + 1`, multiplied by one encoded
    /// at the right scale and rescaled.
    fn match_to(&self, ct: &Ciphertext, level: usize, scale: f64) -> Result<Ciphertext> {
        if ct.level() == level && (ct.scale() - scale).abs() <= 1e-12 * scale {
            return Ok(ct.clone());
        }
        if ct.level() <= level {
            return Err(CkksError::LevelUnavailable {
                requested: level + 1,
                available: ct.level(),
            });
        }
        let t = self.ev.drop_to_level(ct, level + 1)?;
        let sigma = scale * self.prime(level + 1) / t.scale();
        let mut t = self.ev.mul_scalar(&t, 1.0, sigma)?;
        self.ev.rescale_assign(&mut t)?;
        Ok(t)
    }

    /// `2 * a * b`, relinearized and rescaled (operands at any levels).
    fn double_product(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        let l = a.level().min(b.level());
        let a = self.ev.drop_to_level(a, l)?;
        let b = self.ev.drop_to_level(b, l)?;
        let mut p = self.ev.mul(&a, &b)?;
        self.ev.relinearize_assign(&mut p, self.rk)?;
        self.ev.rescale_assign(&mut p)?;
        self.ev.mul_integer_assign(&mut p, 2)?;
        Ok(p)
    }

    /// `T_k(x)`.
    fn power(&mut self, k: usize) -> Result<Ciphertext> {
        if let Some(t) = self.powers.get(&k) {
            return Ok(t.clone());
        }
        if k == 0 {
            return Err(CkksError::InvalidInput("T_0 is a constant".into()));
        }
        let a = 1usize << (usize::BITS - 1 - (k - 1).leading_zeros()); // largest power of 2 < k
        let t = if k.is_power_of_two() {
            double_angle(self.ev, self.rk, &self.power(k / 2)?)?
        } else {
            let ta = self.power(a)?;
            let tb = self.power(k - a)?;
            let mut t = self.double_product(&ta, &tb)?;
            let d = 2 * a - k;
            if d == 0 {
                self.ev.add_scalar_assign(&mut t, -1.0)?;
            } else {
                let td = self.power(d)?;
                let td = self.match_to(&td, t.level(), t.scale())?;
                self.ev.sub_assign(&mut t, &td)?;
            }
            t
        };
        self.powers.insert(k, t.clone());
        Ok(t)
    }

    /// `sum c_k T_k(x)` at exactly `level` and `scale`.
    pub(crate) fn evaluate(&mut self, c: &[f64], level: usize, scale: f64) -> Result<Ciphertext> {
        let d = c.iter().rposition(|&v| v != 0.0).unwrap_or(0);
        let c = &c[..=d];
        if d < (1 << self.baby_bits) {
            return self.baby(c, level, scale);
        }
        let m = 1usize << (usize::BITS - 1 - d.leading_zeros()); // largest power of 2 <= d
                                                                 // p = low + T_m * high, from T_k = 2 T_m T_(k-m) - T_(2m-k) for k > m.
        let mut low = c[..m].to_vec();
        let mut high = vec![0.0; d - m + 1];
        high[0] = c[m];
        for k in m + 1..=d {
            high[k - m] += 2.0 * c[k];
            low[2 * m - k] -= c[k];
        }
        let tm = self.power(m)?;
        if tm.level() < level + 1 {
            return Err(CkksError::LevelUnavailable {
                requested: level + 1,
                available: tm.level(),
            });
        }
        let q = self.prime(level + 1);
        let tm_l = self.ev.drop_to_level(&tm, level + 1)?;
        let hd = high.iter().rposition(|&v| v != 0.0).unwrap_or(0);
        let mut term = if hd == 0 {
            self.ev.mul_scalar(&tm_l, high[0], scale * q / tm.scale())?
        } else {
            let r = self.evaluate(&high, level + 1, scale * q / tm.scale())?;
            let mut p = self.ev.mul(&r, &tm_l)?;
            self.ev.relinearize_assign(&mut p, self.rk)?;
            p
        };
        self.ev.rescale_assign(&mut term)?;
        let low = self.evaluate(&low, level, scale)?;
        self.ev.add_assign(&mut term, &low)?;
        Ok(term)
    }

    /// A polynomial of degree below `2^baby_bits`: one scalar multiply-add
    /// level above `level`, then a rescale.
    fn baby(&mut self, c: &[f64], level: usize, scale: f64) -> Result<Ciphertext> {
        let q = self.prime(level + 1);
        let mut acc: Option<Ciphertext> = None;
        for (k, &ck) in c.iter().enumerate().skip(1) {
            if ck == 0.0 {
                continue;
            }
            let t = self.power(k)?;
            if t.level() < level + 1 {
                return Err(CkksError::LevelUnavailable {
                    requested: level + 1,
                    available: t.level(),
                });
            }
            let t_l = self.ev.drop_to_level(&t, level + 1)?;
            let prod = self.ev.mul_scalar(&t_l, ck, scale * q / t.scale())?;
            match acc.as_mut() {
                None => acc = Some(prod),
                Some(a) => self.ev.add_assign(a, &prod)?,
            }
        }
        let mut acc = match acc {
            Some(a) => a,
            None => {
                let t = self.power(1)?;
                let t_l = self.ev.drop_to_level(&t, level + 1)?;
                self.ev.mul_scalar(&t_l, 0.0, scale * q / t.scale())?
            }
        };
        if c[0] != 0.0 {
            self.ev.add_scalar_assign(&mut acc, c[0])?;
        }
        self.ev.rescale_assign(&mut acc)?;
        Ok(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolant_of_a_cosine_is_accurate() {
        let f = |x: f64| (2.0 * std::f64::consts::PI * (17.0 * x - 0.25) / 16.0).cos();
        let c = interpolate(f, 31);
        let err = (0..=2000)
            .map(|i| -1.0 + i as f64 / 1000.0)
            .map(|x| (eval_plain(&c, x) - f(x)).abs())
            .fold(0f64, f64::max);
        assert!(err < 1e-14, "max error {err:e}");
    }

    #[test]
    fn depth_formula() {
        assert_eq!(depth(1), 2);
        assert_eq!(depth(31), 6);
        assert_eq!(depth(32), 7);
        assert_eq!(depth(63), 7);
    }
}
