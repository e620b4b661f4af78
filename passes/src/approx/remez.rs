//! The Remez exchange algorithm: minimax (best uniform) approximation of a function on one or
//! more closed intervals, in a chosen subset of the Chebyshev basis.
//!
//! Contract: on success the returned polynomial's error equioscillates (alternates in sign with
//! equal magnitude, to within [`RemezOptions::tolerance`] relative) on `n + 1` reference points,
//! where `n` is the number of basis functions; the reported `max_error` is measured on a dense
//! grid, not taken from the linear solve. For odd targets on symmetric domains (sign), pass only
//! the positive interval and the odd basis indices: the error on the negative side mirrors it.

use super::{cheb::clenshaw, cheb::ChebSeries, linalg::solve, ApproxError};
use serde::{Deserialize, Serialize};

/// Knobs of the exchange iteration.
#[derive(Clone, Debug)]
pub struct RemezOptions {
    /// Stop when `(max |e| - min |e|) / max |e|` over the reference is below this.
    pub tolerance: f64,
    /// Iteration limit.
    pub max_iterations: usize,
    /// Grid points per interval for the extremum search (before local refinement).
    pub grid: usize,
}

impl Default for RemezOptions {
    fn default() -> Self {
        RemezOptions {
            tolerance: 1e-6,
            max_iterations: 80,
            grid: 3000,
        }
    }
}

/// A minimax approximation found by [`remez`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Minimax {
    /// The polynomial, as a Chebyshev series on `[-u, u]` with `u` the largest |x| of the domain
    /// (or on the domain's hull when it is not symmetric-friendly).
    pub series: ChebSeries,
    /// The levelled error `E` of the last linear solve.
    pub levelled_error: f64,
    /// Maximum absolute error measured on a dense grid of the domain.
    pub max_error: f64,
    /// Final reference points.
    pub reference: Vec<f64>,
    /// Signed errors at the reference points.
    pub reference_errors: Vec<f64>,
    /// Iterations used.
    pub iterations: usize,
}

/// Minimax approximation of `f` on the union of `intervals` using the Chebyshev polynomials
/// `T_j(x / u)` for `j` in `basis` (for example `[1, 3, 5, ...]` for odd polynomials), with `u`
/// the largest absolute endpoint.
pub fn remez(
    f: &dyn Fn(f64) -> f64,
    intervals: &[(f64, f64)],
    basis: &[usize],
    opts: &RemezOptions,
) -> Result<Minimax, ApproxError> {
    if basis.is_empty() {
        return Err(ApproxError::Numerical("remez: empty basis".into()));
    }
    if intervals.is_empty()
        || intervals.iter().any(|&(a, b)| {
            a.partial_cmp(&b) != Some(std::cmp::Ordering::Less) || !a.is_finite() || !b.is_finite()
        })
    {
        return Err(ApproxError::Numerical(format!(
            "remez: bad intervals {intervals:?}"
        )));
    }
    let u = intervals
        .iter()
        .fold(0.0f64, |m, &(a, b)| m.max(a.abs()).max(b.abs()));
    let n = basis.len();
    let max_index = *basis.iter().max().unwrap_or(&0);
    let grid = dense_grid(intervals, opts.grid);

    // Initial reference: Chebyshev extrema spread over the domain, proportionally to length.
    let mut reference = initial_reference(intervals, n + 1);
    let mut best: Option<Minimax> = None;
    for iter in 1..=opts.max_iterations {
        // Solve sum_k c_k phi_k(x_i) + (-1)^i E = f(x_i).
        let mut a = Vec::with_capacity(n + 1);
        let mut b = Vec::with_capacity(n + 1);
        for (i, &x) in reference.iter().enumerate() {
            let mut row: Vec<f64> = basis.iter().map(|&j| cheb_t(j, x / u)).collect();
            row.push(if i % 2 == 0 { 1.0 } else { -1.0 });
            a.push(row);
            b.push(f(x));
        }
        let sol = solve(a, b)?;
        let (c, levelled) = sol.split_at(n);
        let levelled = levelled[0].abs();
        let mut full = vec![0.0; max_index + 1];
        for (k, &j) in basis.iter().enumerate() {
            full[j] = c[k];
        }
        let err = |x: f64| clenshaw(&full, x / u) - f(x);

        // Local extrema of the error over the grid, refined, plus interval ends.
        let mut cands: Vec<(f64, f64)> = Vec::new();
        for seg in &grid {
            let es: Vec<f64> = seg.iter().map(|&x| err(x)).collect();
            for i in 0..seg.len() {
                let is_end = i == 0 || i + 1 == seg.len();
                let is_peak = !is_end
                    && ((es[i] >= es[i - 1] && es[i] >= es[i + 1])
                        || (es[i] <= es[i - 1] && es[i] <= es[i + 1]));
                if is_end {
                    cands.push((seg[i], es[i]));
                } else if is_peak {
                    let x = refine_extremum(&err, seg[i - 1], seg[i + 1], es[i] >= 0.0);
                    cands.push((x, err(x)));
                }
            }
        }
        cands.sort_by(|p, q| p.0.total_cmp(&q.0));
        let chosen = select_alternating(cands, n + 1);
        let max_error = grid
            .iter()
            .flat_map(|s| s.iter())
            .map(|&x| err(x).abs())
            .fold(0.0f64, f64::max)
            .max(
                chosen
                    .iter()
                    .flatten()
                    .map(|p| p.1.abs())
                    .fold(0.0, f64::max),
            );
        let candidate = Minimax {
            series: ChebSeries::new(-u, u, full.clone()),
            levelled_error: levelled,
            max_error,
            reference: reference.clone(),
            reference_errors: reference.iter().map(|&x| err(x)).collect(),
            iterations: iter,
        };
        let improved = best
            .as_ref()
            .is_none_or(|b| candidate.max_error < b.max_error);
        if improved {
            best = Some(candidate);
        }
        let Some(chosen) = chosen else { break };
        let hi = chosen.iter().map(|p| p.1.abs()).fold(0.0, f64::max);
        let lo = chosen
            .iter()
            .map(|p| p.1.abs())
            .fold(f64::INFINITY, f64::min);
        reference = chosen.iter().map(|p| p.0).collect();
        if hi > 0.0 && (hi - lo) / hi < opts.tolerance {
            // Converged: report this reference and its (equal) errors.
            let mut done = best
                .take()
                .ok_or_else(|| ApproxError::Numerical("remez: no iterate".into()))?;
            if improved || (max_error - done.max_error).abs() <= done.max_error * 1e-9 {
                done.reference = reference.clone();
                done.reference_errors = chosen.iter().map(|p| p.1).collect();
            }
            return Ok(done);
        }
    }
    best.ok_or_else(|| ApproxError::Numerical("remez: did not produce an iterate".into()))
}

/// `T_j(y)` by the trigonometric/hyperbolic closed form (stable for |y| slightly above 1 too).
pub fn cheb_t(j: usize, y: f64) -> f64 {
    if y.abs() <= 1.0 {
        (j as f64 * y.acos()).cos()
    } else {
        let s = if y < 0.0 && j % 2 == 1 { -1.0 } else { 1.0 };
        s * (j as f64 * y.abs().acosh()).cosh()
    }
}

fn dense_grid(intervals: &[(f64, f64)], per: usize) -> Vec<Vec<f64>> {
    intervals
        .iter()
        .map(|&(a, b)| {
            let mut g: Vec<f64> = (0..per)
                .map(|i| {
                    let t = std::f64::consts::PI * i as f64 / (per - 1) as f64;
                    0.5 * (a + b) - 0.5 * (b - a) * t.cos()
                })
                .collect();
            // Geometric points near each end: minimax errors of steep targets crowd there.
            let w = b - a;
            for k in 1..200 {
                let d = w * 1e-6f64.powf(k as f64 / 200.0) * 0.5;
                g.push(a + d);
                g.push(b - d);
            }
            g.push(a);
            g.push(b);
            g.sort_by(f64::total_cmp);
            g.dedup();
            g
        })
        .collect()
}

fn initial_reference(intervals: &[(f64, f64)], m: usize) -> Vec<f64> {
    let total: f64 = intervals.iter().map(|&(a, b)| b - a).sum();
    let mut counts: Vec<usize> = intervals
        .iter()
        .map(|&(a, b)| (((b - a) / total) * m as f64).floor() as usize)
        .collect();
    let mut assigned: usize = counts.iter().sum();
    let mut i = 0;
    let k = counts.len();
    while assigned < m {
        counts[i % k] += 1;
        assigned += 1;
        i += 1;
    }
    let mut pts = Vec::with_capacity(m);
    for (&(a, b), &k) in intervals.iter().zip(&counts) {
        for j in 0..k {
            let t = if k == 1 {
                0.5
            } else {
                j as f64 / (k - 1) as f64
            };
            pts.push(0.5 * (a + b) - 0.5 * (b - a) * (std::f64::consts::PI * t).cos());
        }
    }
    pts.sort_by(f64::total_cmp);
    pts
}

/// Golden-section refinement of a local maximum (or minimum) of `e` in `[a, b]`.
fn refine_extremum(e: &dyn Fn(f64) -> f64, mut a: f64, mut b: f64, maximum: bool) -> f64 {
    let g = |x: f64| if maximum { e(x) } else { -e(x) };
    let r = 0.5 * (5f64.sqrt() - 1.0);
    let mut c = b - r * (b - a);
    let mut d = a + r * (b - a);
    let (mut gc, mut gd) = (g(c), g(d));
    for _ in 0..60 {
        if (b - a).abs() <= 1e-15 * (a.abs() + b.abs()).max(1e-300) {
            break;
        }
        if gc > gd {
            b = d;
            d = c;
            gd = gc;
            c = b - r * (b - a);
            gc = g(c);
        } else {
            a = c;
            c = d;
            gc = gd;
            d = a + r * (b - a);
            gd = g(d);
        }
    }
    0.5 * (a + b)
}

/// From sorted candidate extrema, keeps `m` points with alternating error signs, preferring
/// larger |error|. Returns `None` when fewer than `m` alternations exist.
fn select_alternating(cands: Vec<(f64, f64)>, m: usize) -> Option<Vec<(f64, f64)>> {
    let mut alt: Vec<(f64, f64)> = Vec::new();
    for c in cands {
        if c.1 == 0.0 {
            continue;
        }
        match alt.last_mut() {
            Some(last) if last.1.signum() == c.1.signum() => {
                if c.1.abs() > last.1.abs() {
                    *last = c;
                }
            }
            _ => alt.push(c),
        }
    }
    if alt.len() < m {
        return None;
    }
    while alt.len() > m {
        // Drop the weaker end, or the weakest adjacent pair when that keeps more of the peaks.
        let first = alt[0].1.abs();
        let last = alt[alt.len() - 1].1.abs();
        if alt.len() - m >= 2 {
            let (k, pair) = (0..alt.len() - 1)
                .map(|k| (k, alt[k].1.abs().max(alt[k + 1].1.abs())))
                .min_by(|p, q| p.1.total_cmp(&q.1))
                .unwrap_or((0, f64::INFINITY));
            if pair < first.min(last) {
                alt.drain(k..k + 2);
                continue;
            }
        }
        if first < last {
            alt.remove(0);
        } else {
            alt.pop();
        }
    }
    Some(alt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(x: f64) -> f64 {
        if x > 0.0 {
            1.0
        } else if x < 0.0 {
            -1.0
        } else {
            0.0
        }
    }

    fn equioscillates(m: &Minimax, rel: f64) {
        let e = &m.reference_errors;
        for w in e.windows(2) {
            assert!(
                w[0].signum() != w[1].signum(),
                "errors do not alternate: {e:?}"
            );
        }
        let hi = e.iter().map(|v| v.abs()).fold(0.0, f64::max);
        let lo = e.iter().map(|v| v.abs()).fold(f64::INFINITY, f64::min);
        assert!((hi - lo) / hi < rel, "errors not levelled: {e:?}");
        assert!(
            (m.max_error - hi).abs() / hi < 1e-3,
            "grid max error {} differs from reference error {hi}",
            m.max_error
        );
    }

    #[test]
    fn degree_one_sign_matches_closed_form() {
        // Best p(x) = c x on [eps, 1]: error (1 - eps) / (1 + eps).
        let eps = 0.1;
        let m = remez(&sign, &[(eps, 1.0)], &[1], &RemezOptions::default()).unwrap();
        let want = (1.0 - eps) / (1.0 + eps);
        assert!(
            (m.max_error - want).abs() < 1e-9,
            "{} vs {want}",
            m.max_error
        );
        equioscillates(&m, 1e-6);
    }

    #[test]
    fn exp_degree_one_matches_closed_form() {
        // Best a + m x for e^x on [-1, 1]: m = sinh 1, error (1/e + m ln m) / 2 = 0.27880...
        let m = remez(&f64::exp, &[(-1.0, 1.0)], &[0, 1], &RemezOptions::default()).unwrap();
        let s = 1f64.sinh();
        let want = ((-1f64).exp() + s * s.ln()) / 2.0;
        assert!(
            (m.max_error - want).abs() < 1e-9,
            "{} vs {want}",
            m.max_error
        );
        equioscillates(&m, 1e-6);
    }

    #[test]
    fn exp_degree_four_beats_interpolation_and_equioscillates() {
        let basis: Vec<usize> = (0..=4).collect();
        let m = remez(&f64::exp, &[(-1.0, 1.0)], &basis, &RemezOptions::default()).unwrap();
        equioscillates(&m, 1e-6);
        let interp = ChebSeries::interpolate(-1.0, 1.0, 4, f64::exp);
        let (ie, _) = interp.max_error_on_grid(f64::exp, 20001);
        assert!(
            m.max_error < ie,
            "minimax {} not better than interpolation {ie}",
            m.max_error
        );
        // de la Vallee Poussin: no degree-4 polynomial does better than the levelled error.
        assert!(m.levelled_error <= m.max_error * (1.0 + 1e-6));
    }

    #[test]
    fn odd_sign_equioscillates_at_standard_degrees() {
        for (eps, d) in [(0.05, 7usize), (0.01, 15), (1.0 / 64.0, 27)] {
            let basis: Vec<usize> = (1..=d).step_by(2).collect();
            let m = remez(&sign, &[(eps, 1.0)], &basis, &RemezOptions::default()).unwrap();
            equioscillates(&m, 1e-5);
            assert!(m.max_error < 1.0, "eps {eps} degree {d}: {}", m.max_error);
        }
    }
}
