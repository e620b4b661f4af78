//! Chebyshev series on an interval `[lo, hi]`: the numerically stable basis in which hecc keeps
//! polynomial approximations of every degree.
//!
//! A series `sum_k c_k T_k(y)` with `y = (2x - lo - hi) / (hi - lo)` is evaluated by Clenshaw's
//! recurrence; interpolation at Chebyshev nodes, derivative, integral, products and the conversion to
//! the power basis in `y` are provided for the fits and for the evaluation planner.

use serde::{Deserialize, Serialize};

/// A Chebyshev series on `[lo, hi]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChebSeries {
    /// Left end of the interval the series is defined on.
    pub lo: f64,
    /// Right end of the interval.
    pub hi: f64,
    /// Coefficients of `T_0, T_1, ...` in the variable mapped to `[-1, 1]`.
    pub coeffs: Vec<f64>,
}

impl ChebSeries {
    /// A series from its coefficients.
    pub fn new(lo: f64, hi: f64, coeffs: Vec<f64>) -> Self {
        ChebSeries { lo, hi, coeffs }
    }

    /// Degree (index of the last non-zero coefficient; 0 for the zero series).
    pub fn degree(&self) -> usize {
        self.coeffs.iter().rposition(|c| *c != 0.0).unwrap_or(0)
    }

    /// Maps `x` in `[lo, hi]` to `y` in `[-1, 1]`.
    pub fn to_unit(&self, x: f64) -> f64 {
        (2.0 * x - self.lo - self.hi) / (self.hi - self.lo)
    }

    /// Evaluates the series at `x` (Clenshaw).
    pub fn eval(&self, x: f64) -> f64 {
        clenshaw(&self.coeffs, self.to_unit(x))
    }

    /// Interpolates `f` at the `degree + 1` Chebyshev points of the first kind on `[lo, hi]`.
    pub fn interpolate(lo: f64, hi: f64, degree: usize, f: impl Fn(f64) -> f64) -> Self {
        let n = degree + 1;
        let nodes: Vec<f64> = (0..n)
            .map(|j| (std::f64::consts::PI * (j as f64 + 0.5) / n as f64).cos())
            .collect();
        let values: Vec<f64> = nodes
            .iter()
            .map(|y| f(0.5 * (hi - lo) * y + 0.5 * (hi + lo)))
            .collect();
        let coeffs = (0..n)
            .map(|k| {
                let s: f64 = (0..n)
                    .map(|j| {
                        values[j]
                            * (std::f64::consts::PI * k as f64 * (j as f64 + 0.5) / n as f64).cos()
                    })
                    .sum();
                if k == 0 {
                    s / n as f64
                } else {
                    2.0 * s / n as f64
                }
            })
            .collect();
        ChebSeries { lo, hi, coeffs }
    }

    /// The derivative with respect to `x`, as a series on the same interval.
    pub fn derivative(&self) -> Self {
        let n = self.coeffs.len();
        if n <= 1 {
            return ChebSeries::new(self.lo, self.hi, vec![0.0]);
        }
        let mut d = vec![0.0; n - 1];
        // c'_{k-1} = c'_{k+1} + 2 k c_k, run downwards.
        for k in (1..n).rev() {
            let next = if k + 1 < n - 1 { d[k + 1] } else { 0.0 };
            d[k - 1] = next + 2.0 * k as f64 * self.coeffs[k];
        }
        d[0] *= 0.5;
        let f = 2.0 / (self.hi - self.lo);
        ChebSeries::new(self.lo, self.hi, d.into_iter().map(|c| c * f).collect())
    }

    /// An antiderivative with respect to `x`, chosen to vanish at `x0`.
    pub fn integral(&self, x0: f64) -> Self {
        let n = self.coeffs.len();
        let c = |k: usize| if k < n { self.coeffs[k] } else { 0.0 };
        let mut out = vec![0.0; n + 1];
        for (k, slot) in out.iter_mut().enumerate().skip(1) {
            let prev = if k == 1 { 2.0 * c(0) } else { c(k - 1) };
            *slot = (prev - c(k + 1)) / (2.0 * k as f64);
        }
        let f = 0.5 * (self.hi - self.lo);
        for v in &mut out {
            *v *= f;
        }
        let mut s = ChebSeries::new(self.lo, self.hi, out);
        let at = s.eval(x0);
        s.coeffs[0] -= at;
        s
    }

    /// Coefficients in the power basis of the unit variable `y` (`sum_k a_k y^k`). Exact in exact
    /// arithmetic; in f64 fine for the degrees hecc evaluates in that basis (say up to 30).
    pub fn to_power_basis_unit(&self) -> Vec<f64> {
        let n = self.coeffs.len();
        let mut out = vec![0.0; n.max(1)];
        // T_0 = 1, T_1 = y, T_{k+1} = 2 y T_k - T_{k-1}, as power-basis vectors.
        let (mut older, mut old): (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
        for (k, &c) in self.coeffs.iter().enumerate() {
            let t = match k {
                0 => vec![1.0],
                1 => vec![0.0, 1.0],
                _ => {
                    let mut next = vec![0.0; k + 1];
                    for (i, v) in old.iter().enumerate() {
                        next[i + 1] += 2.0 * v;
                    }
                    for (i, v) in older.iter().enumerate() {
                        next[i] -= v;
                    }
                    next
                }
            };
            for (o, v) in out.iter_mut().zip(&t) {
                *o += c * v;
            }
            older = std::mem::replace(&mut old, t);
        }
        out
    }

    /// Maximum of `|self(x) - f(x)|` over a grid of `samples` points of `[lo, hi]` (both ends
    /// included), and where it occurs.
    pub fn max_error_on_grid(&self, f: impl Fn(f64) -> f64, samples: usize) -> (f64, f64) {
        max_error_on(|x| self.eval(x), f, self.lo, self.hi, samples)
    }
}

/// Clenshaw evaluation of `sum_k c_k T_k(y)`.
pub fn clenshaw(c: &[f64], y: f64) -> f64 {
    let (mut b1, mut b2) = (0.0, 0.0);
    for &ck in c.iter().skip(1).rev() {
        let b0 = ck + 2.0 * y * b1 - b2;
        b2 = b1;
        b1 = b0;
    }
    c.first().copied().unwrap_or(0.0) + y * b1 - b2
}

/// Maximum of `|p(x) - f(x)|` over `samples` equispaced points of `[lo, hi]`, and its location.
pub fn max_error_on(
    p: impl Fn(f64) -> f64,
    f: impl Fn(f64) -> f64,
    lo: f64,
    hi: f64,
    samples: usize,
) -> (f64, f64) {
    let samples = samples.max(2);
    let mut worst = (0.0f64, lo);
    for i in 0..samples {
        let x = lo + (hi - lo) * i as f64 / (samples - 1) as f64;
        let e = (p(x) - f(x)).abs();
        if e > worst.0 || e.is_nan() {
            worst = (e, x);
        }
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clenshaw_matches_closed_forms() {
        // T_3(y) = 4y^3 - 3y, T_4(y) = 8y^4 - 8y^2 + 1
        for &y in &[-1.0, -0.3, 0.0, 0.7, 1.0] {
            let t3 = clenshaw(&[0.0, 0.0, 0.0, 1.0], y);
            let t4 = clenshaw(&[0.0, 0.0, 0.0, 0.0, 1.0], y);
            assert!((t3 - (4.0 * y * y * y - 3.0 * y)).abs() < 1e-14);
            assert!((t4 - (8.0 * y.powi(4) - 8.0 * y * y + 1.0)).abs() < 1e-14);
        }
    }

    #[test]
    fn interpolation_is_exact_on_polynomials_and_converts_to_power_basis() {
        let f = |x: f64| 1.0 - 2.0 * x + 0.5 * x.powi(3);
        let s = ChebSeries::interpolate(-1.0, 1.0, 3, f);
        let (e, _) = s.max_error_on_grid(f, 101);
        assert!(e < 1e-13, "{e}");
        let p = s.to_power_basis_unit();
        for (got, want) in p.iter().zip([1.0, -2.0, 0.0, 0.5]) {
            assert!((got - want).abs() < 1e-13, "{p:?}");
        }
    }

    #[test]
    fn derivative_and_integral_invert_each_other() {
        let s = ChebSeries::interpolate(-3.0, 5.0, 12, |x: f64| (0.4 * x).sin());
        let d = s.derivative();
        let (e, _) = d.max_error_on_grid(|x| 0.4 * (0.4 * x).cos(), 401);
        assert!(e < 1e-8, "derivative error {e}");
        let back = d.integral(0.0);
        let (e2, _) = back.max_error_on_grid(|x| s.eval(x) - s.eval(0.0), 401);
        assert!(e2 < 1e-12, "integral error {e2}");
    }
}
