//! Polynomial replacements for ReLU and max-pooling, by the methods the survey compares, with
//! their measured error and homomorphic cost.
//!
//! Every method yields an [`ActivationApprox`]: a function of `x` on `[-B, B]` made of either one
//! Chebyshev series or `x`, a composite sign and one product (`ReLU(x) = (x + x sign(x)) / 2`).
//! The input scaling `x -> x / B` of the unit variable is a constant multiplication that hecc folds
//! into the preceding linear layer; costs are reported for the folded form.

use super::{
    cheb::{max_error_on, ChebSeries},
    composite::CompositeSign,
    linalg::least_squares,
    plan::{EvalCost, EvalPlan},
    ApproxError,
};
use serde::{Deserialize, Serialize};

/// How to replace ReLU.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ReluMethod {
    /// `x^2` (CryptoNets); not an approximation of ReLU on any interval, kept for comparison.
    Square,
    /// Least-squares fit of degree `d` on `[-B, B]` (uniform weight).
    LeastSquares {
        /// Degree.
        degree: usize,
    },
    /// Interpolation at the Chebyshev points of `[-B, B]`.
    Chebyshev {
        /// Degree.
        degree: usize,
    },
    /// Taylor expansion at 0 of a smooth surrogate of ReLU.
    Taylor {
        /// Degree.
        degree: usize,
        /// The surrogate.
        surrogate: Surrogate,
    },
    /// CryptoDL-style: fit the sigmoid (the derivative of softplus) by least squares with degree
    /// `d - 1`, integrate from 0, and centre the constant so the error is balanced.
    CryptoDl {
        /// Degree of the resulting polynomial.
        degree: usize,
    },
    /// Composite minimax sign (Lee et al.) with precision `alpha` bits, or explicit stage degrees.
    Minimax {
        /// Target precision of sign in bits (used when `degrees` is empty).
        alpha: f64,
        /// Explicit stage degrees, e.g. `[15, 15, 27]`.
        degrees: Vec<usize>,
    },
}

/// Smooth functions whose Taylor series stand in for ReLU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Surrogate {
    /// `ln(1 + e^x)`.
    Softplus,
    /// `x * sigmoid(x)` (SiLU / swish).
    Silu,
}

/// The polynomial part of an approximation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ApproxForm {
    /// One polynomial of `x`, a Chebyshev series on `[-B, B]`.
    Series(ChebSeries),
    /// `B * (t + t * s(t)) / 2` with `t = x / B` and `s` a composite sign.
    SignBased(CompositeSign),
}

/// A replacement for ReLU on `[-B, B]`, with its measured error and cost.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ActivationApprox {
    /// Method name as used on the command line.
    pub method: String,
    /// Input range half-width `B`.
    pub range: f64,
    /// The polynomial(s).
    pub form: ApproxForm,
    /// Degree of the single polynomial, or the stage degrees.
    pub degrees: Vec<usize>,
    /// Maximum `|approx(x) - relu(x)|` on a dense grid of `[-B, B]`.
    pub max_error: f64,
    /// Homomorphic cost (input scaling folded upstream).
    pub cost: EvalCost,
}

/// An approximation method as the user named it (`minimax:10`, `least-squares:6`) and what
/// the name means.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MethodSpec {
    /// The name as given (recorded in plans and reports).
    pub spec: String,
    /// The method it parses to.
    pub method: ReluMethod,
}

/// The activation policy a plan was compiled with: the approximation of every `relu` and
/// `max_pool` (none when the model has neither) and, when `--activation auto` chose it, how.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ActivationSpec {
    /// The approximation; `None` when the model needs none.
    pub approximation: Option<MethodSpec>,
    /// How `auto` chose the approximation.
    pub auto_note: Option<String>,
}

impl std::fmt::Display for ActivationSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.approximation {
            Some(m) => f.write_str(&m.spec)?,
            None => f.write_str("none needed")?,
        }
        match &self.auto_note {
            Some(n) => write!(f, " ({n})"),
            None => Ok(()),
        }
    }
}

/// ReLU.
pub fn relu(x: f64) -> f64 {
    x.max(0.0)
}

/// The logistic sigmoid.
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

impl ActivationApprox {
    /// Evaluates the approximation at `x`.
    pub fn eval(&self, x: f64) -> f64 {
        match &self.form {
            ApproxForm::Series(s) => s.eval(x),
            ApproxForm::SignBased(cs) => {
                let t = x / self.range;
                self.range * (t + t * cs.eval(t)) / 2.0
            }
        }
    }

    /// Builds the replacement of ReLU on `[-range, range]` by `method`.
    pub fn relu(method: &ReluMethod, range: f64) -> Result<ActivationApprox, ApproxError> {
        if !(range > 0.0 && range.is_finite()) {
            return Err(ApproxError::BadRequest(format!(
                "range must be positive and finite, got {range}"
            )));
        }
        let b = range;
        let check_degree = |d: usize| {
            if d == 0 || d > 255 {
                Err(ApproxError::BadRequest(format!(
                    "degree must lie in 1..=255, got {d}"
                )))
            } else {
                Ok(d)
            }
        };
        let (name, form) = match method {
            ReluMethod::Square => (
                "square",
                ApproxForm::Series(ChebSeries::interpolate(-b, b, 2, |x| x * x)),
            ),
            ReluMethod::Chebyshev { degree } => {
                let d = check_degree(*degree)?;
                (
                    "chebyshev",
                    ApproxForm::Series(ChebSeries::interpolate(-b, b, d, relu)),
                )
            }
            ReluMethod::LeastSquares { degree } => {
                let d = check_degree(*degree)?;
                (
                    "least-squares",
                    ApproxForm::Series(fit_least_squares(-b, b, d, relu)?),
                )
            }
            ReluMethod::Taylor { degree, surrogate } => {
                let d = check_degree(*degree)?;
                let power = taylor_coefficients(*surrogate, d);
                // Exact conversion: interpolate the polynomial at d + 1 points.
                let s = ChebSeries::interpolate(-b, b, d, |x| horner(&power, x));
                ("taylor", ApproxForm::Series(s))
            }
            ReluMethod::CryptoDl { degree } => {
                let d = check_degree(*degree)?;
                if d < 2 {
                    return Err(ApproxError::BadRequest("cryptodl needs degree >= 2".into()));
                }
                let deriv = fit_least_squares(-b, b, d - 1, sigmoid)?;
                let mut s = deriv.integral(0.0);
                let (lo, hi) = error_span(&s, b);
                s.coeffs[0] -= 0.5 * (lo + hi);
                ("cryptodl", ApproxForm::Series(s))
            }
            ReluMethod::Minimax { alpha, degrees } => {
                let eps = 2f64.powf(-alpha.max(1.0));
                let cs = if degrees.is_empty() {
                    CompositeSign::for_precision(*alpha, eps)?
                } else {
                    CompositeSign::with_degrees(eps, degrees)?
                };
                ("minimax", ApproxForm::SignBased(cs))
            }
        };
        let (degrees, cost) = match &form {
            ApproxForm::Series(s) => {
                // Plan in the unit variable; the affine map is folded upstream.
                let unit = ChebSeries::new(-1.0, 1.0, s.coeffs.clone());
                (vec![s.degree()], EvalPlan::for_series(&unit).cost)
            }
            ApproxForm::SignBased(cs) => {
                // t * s(t): one more product (and its relinearization), plus the sum with t.
                let tail = EvalCost {
                    depth: 1,
                    ct_mults: 1,
                    relins: 1,
                    scalar_mults: 0,
                    additions: 1,
                };
                (cs.degrees.clone(), cs.cost.then(tail))
            }
        };
        let mut a = ActivationApprox {
            method: name.into(),
            range: b,
            form,
            degrees,
            max_error: 0.0,
            cost,
        };
        a.max_error = max_error_on(|x| a.eval(x), relu, -b, b, 200_001).0;
        Ok(a)
    }
}

/// Discrete least-squares fit in the Chebyshev basis on 4(d+1)+200 equispaced points.
pub fn fit_least_squares(
    lo: f64,
    hi: f64,
    d: usize,
    f: fn(f64) -> f64,
) -> Result<ChebSeries, ApproxError> {
    let m = 4 * (d + 1) + 200;
    let xs: Vec<f64> = (0..m)
        .map(|i| lo + (hi - lo) * i as f64 / (m - 1) as f64)
        .collect();
    let proto = ChebSeries::new(lo, hi, vec![]);
    let rows: Vec<Vec<f64>> = xs
        .iter()
        .map(|&x| {
            let y = proto.to_unit(x);
            (0..=d).map(|k| super::remez::cheb_t(k, y)).collect()
        })
        .collect();
    let rhs: Vec<f64> = xs.iter().map(|&x| f(x)).collect();
    Ok(ChebSeries::new(lo, hi, least_squares(rows, rhs)?))
}

fn error_span(s: &ChebSeries, b: f64) -> (f64, f64) {
    let n = 20_000;
    (0..=n)
        .map(|i| {
            let x = -b + 2.0 * b * i as f64 / n as f64;
            s.eval(x) - relu(x)
        })
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), e| {
            (lo.min(e), hi.max(e))
        })
}

fn horner(p: &[f64], x: f64) -> f64 {
    p.iter().rev().fold(0.0, |acc, c| acc * x + c)
}

/// Power-series coefficients (at 0, up to `degree`) of the surrogate, by series arithmetic:
/// `sigmoid = 1 / (1 + e^-x)`, `softplus = ln 2 + integral of sigmoid`, `silu = x sigmoid`.
pub fn taylor_coefficients(s: Surrogate, degree: usize) -> Vec<f64> {
    let n = degree + 1;
    // e^-x
    let mut fact = 1.0;
    let mut denom: Vec<f64> = (0..n)
        .map(|k| {
            if k > 0 {
                fact *= k as f64;
            }
            if k % 2 == 0 {
                1.0 / fact
            } else {
                -1.0 / fact
            }
        })
        .collect();
    denom[0] += 1.0; // 1 + e^-x
                     // 1 / denom by the recurrence q_k = -(sum_{j=1..k} d_j q_{k-j}) / d_0.
    let mut sig = vec![0.0; n];
    sig[0] = 1.0 / denom[0];
    for k in 1..n {
        let s: f64 = (1..=k).map(|j| denom[j] * sig[k - j]).sum();
        sig[k] = -s / denom[0];
    }
    let mut out = vec![0.0; n];
    match s {
        Surrogate::Softplus => {
            out[0] = std::f64::consts::LN_2;
            for k in 1..n {
                out[k] = sig[k - 1] / k as f64;
            }
        }
        Surrogate::Silu => {
            out[1..n].copy_from_slice(&sig[..n - 1]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmoid_series_matches_known_coefficients() {
        // sigmoid(x) = 1/2 + x/4 - x^3/48 + x^5/480 - ...
        let silu = taylor_coefficients(Surrogate::Silu, 6);
        let want = [0.0, 0.5, 0.25, 0.0, -1.0 / 48.0, 0.0, 1.0 / 480.0];
        for (g, w) in silu.iter().zip(want) {
            assert!((g - w).abs() < 1e-15, "{silu:?}");
        }
        let sp = taylor_coefficients(Surrogate::Softplus, 4);
        // softplus = ln2 + x/2 + x^2/8 - x^4/192
        let want = [std::f64::consts::LN_2, 0.5, 0.125, 0.0, -1.0 / 192.0];
        for (g, w) in sp.iter().zip(want) {
            assert!((g - w).abs() < 1e-15, "{sp:?}");
        }
    }

    #[test]
    fn stated_max_error_is_what_a_dense_grid_measures() {
        let b = 8.0;
        for m in [
            ReluMethod::Square,
            ReluMethod::LeastSquares { degree: 8 },
            ReluMethod::Chebyshev { degree: 16 },
            ReluMethod::Taylor {
                degree: 6,
                surrogate: Surrogate::Softplus,
            },
            ReluMethod::CryptoDl { degree: 4 },
            ReluMethod::Minimax {
                alpha: 7.0,
                degrees: vec![],
            },
        ] {
            let a = ActivationApprox::relu(&m, b).unwrap();
            // A finer, differently placed grid must not find a larger error (up to 0.5%).
            let (fine, at) = max_error_on(|x| a.eval(x), relu, -b, b, 1_000_003);
            assert!(
                fine <= a.max_error * 1.005 + 1e-12,
                "{m:?}: {fine} at {at} > {}",
                a.max_error
            );
            assert!(a.max_error > 0.0);
        }
    }

    #[test]
    fn better_methods_are_more_precise() {
        let b = 8.0;
        let e = |m: ReluMethod| ActivationApprox::relu(&m, b).unwrap().max_error;
        let lsq = e(ReluMethod::LeastSquares { degree: 8 });
        let minimax = e(ReluMethod::Minimax {
            alpha: 10.0,
            degrees: vec![],
        });
        let square = e(ReluMethod::Square);
        assert!(
            minimax < lsq && lsq < square,
            "minimax {minimax}, lsq {lsq}, square {square}"
        );
        // Minimax at alpha bits: the error in x-units is about B * 2^-alpha or better.
        assert!(minimax <= b * 2f64.powi(-10), "{minimax}");
    }

    #[test]
    fn bad_requests_are_errors() {
        assert!(ActivationApprox::relu(&ReluMethod::Chebyshev { degree: 0 }, 1.0).is_err());
        assert!(ActivationApprox::relu(&ReluMethod::Square, f64::NAN).is_err());
        assert!(ActivationApprox::relu(&ReluMethod::CryptoDl { degree: 1 }, 1.0).is_err());
    }
}
