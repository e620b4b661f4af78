//! Composite minimax approximation of `sign` (Lee et al.): `p_k o ... o p_1`, where `p_1` is the
//! minimax odd polynomial of degree `d_1` for sign on `[-1, -eps] U [eps, 1]` and each later `p_i`
//! is minimax on the image of the composition before it.
//!
//! Normalisation: every stage is stored as a Chebyshev series in its *unit* input variable. The
//! image `[lo', hi']` of stage `i` is divided by `hi'` (folded into stage `i`'s coefficients, so it
//! costs nothing when evaluated), so stage `i + 1` is always minimax on `[r, 1]` with
//! `r = lo' / hi'`. Because sign is scale invariant, the best error a degree-`d` stage can reach
//! depends only on `r`, which is what [`CompositeSign::for_precision`] searches over.

use super::{
    cheb::ChebSeries,
    plan::{optimal_depth, EvalCost, EvalPlan},
    remez::{remez, RemezOptions},
    ApproxError,
};
use serde::{Deserialize, Serialize};

/// A composite polynomial approximation of sign on `[-1, -eps] U [eps, 1]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CompositeSign {
    /// Half-width of the excluded interval around zero.
    pub eps: f64,
    /// Degrees of the stages, first applied first.
    pub degrees: Vec<usize>,
    /// The stages as Chebyshev series on `[-1, 1]` (normalised as in the module note).
    pub stages: Vec<ChebSeries>,
    /// Minimax error of each stage on its own (normalised) domain.
    pub stage_errors: Vec<f64>,
    /// Maximum of `|p(x) - sign(x)|` over `[eps, 1]` (and, by symmetry, `[-1, -eps]`),
    /// measured on a dense grid.
    pub max_error: f64,
    /// Largest `|p(x)|` on `[-1, 1]` (values inside `(-eps, eps)` stay within this).
    pub max_abs: f64,
    /// Cost of evaluating all stages.
    pub cost: EvalCost,
}

fn sign(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

fn odd_basis(d: usize) -> Vec<usize> {
    (1..=d).step_by(2).collect()
}

/// Minimax odd polynomial of degree `d` for sign on `[r, 1]`: (series on `[-1, 1]`, error).
pub fn sign_stage(d: usize, r: f64) -> Result<(ChebSeries, f64), ApproxError> {
    if d.is_multiple_of(2) {
        return Err(ApproxError::BadRequest(format!(
            "sign stages need odd degrees, got {d}"
        )));
    }
    if !(r > 0.0 && r < 1.0) {
        return Err(ApproxError::BadRequest(format!(
            "stage domain [{r}, 1] is not inside (0, 1]"
        )));
    }
    let opts = RemezOptions {
        tolerance: 1e-7,
        ..RemezOptions::default()
    };
    let m = remez(&sign, &[(r, 1.0)], &odd_basis(d), &opts)?;
    Ok((m.series, m.max_error))
}

impl CompositeSign {
    /// Builds the composition for the given stage degrees.
    pub fn with_degrees(eps: f64, degrees: &[usize]) -> Result<CompositeSign, ApproxError> {
        if degrees.is_empty() {
            return Err(ApproxError::BadRequest(
                "composite sign needs at least one stage".into(),
            ));
        }
        if !(eps > 0.0 && eps < 1.0) {
            return Err(ApproxError::BadRequest(format!(
                "eps must lie in (0, 1), got {eps}"
            )));
        }
        let mut r = eps;
        let mut stages = Vec::with_capacity(degrees.len());
        let mut stage_errors = Vec::with_capacity(degrees.len());
        for (i, &d) in degrees.iter().enumerate() {
            let (mut s, e) = sign_stage(d, r)?;
            stage_errors.push(e);
            if e >= 1.0 {
                return Err(ApproxError::BadRequest(format!(
                    "stage {} (degree {d}) cannot separate [{r:.3e}, 1] from its negative (error {e:.3})",
                    i + 1
                )));
            }
            if i + 1 < degrees.len() {
                // Image of [r, 1]; minimax keeps it within [1 - e, 1 + e].
                let (lo, hi) = image(&s, r);
                for c in &mut s.coeffs {
                    *c /= hi;
                }
                r = lo / hi;
            }
            stages.push(s);
        }
        let mut cs = CompositeSign {
            eps,
            degrees: degrees.to_vec(),
            stages,
            stage_errors,
            max_error: 0.0,
            max_abs: 0.0,
            cost: EvalCost::default(),
        };
        cs.max_error = cs.measure_error(20_000);
        cs.max_abs = (0..=20_000)
            .map(|i| cs.eval(i as f64 / 20_000.0).abs())
            .fold(0.0, f64::max);
        cs.cost = cs
            .stages
            .iter()
            .map(|s| EvalPlan::for_series(s).cost)
            .fold(EvalCost::default(), EvalCost::then);
        Ok(cs)
    }

    /// Evaluates the composition at `x`.
    pub fn eval(&self, x: f64) -> f64 {
        self.stages.iter().fold(x, |y, s| s.eval(y))
    }

    /// Maximum of `|p(x) - sign(x)|` on a grid of `[eps, 1]` (geometric near `eps`, uniform elsewhere).
    pub fn measure_error(&self, samples: usize) -> f64 {
        let mut worst = 0.0f64;
        for i in 0..=samples {
            let t = i as f64 / samples as f64;
            let uniform = self.eps + (1.0 - self.eps) * t;
            let geometric = self.eps * (1.0 / self.eps).powf(t);
            for x in [uniform, geometric] {
                worst = worst
                    .max((self.eval(x) - 1.0).abs())
                    .max((self.eval(-x) + 1.0).abs());
            }
        }
        worst
    }

    /// The composition of least depth (then fewest relinearizations, then products) whose error
    /// on `[eps, 1]` is at most `2^-alpha`, searching odd stage degrees 3..=31 and 63.
    pub fn for_precision(alpha: f64, eps: f64) -> Result<CompositeSign, ApproxError> {
        if !(alpha > 0.0 && alpha <= 40.0) {
            return Err(ApproxError::BadRequest(format!(
                "alpha must lie in (0, 40] bits, got {alpha}"
            )));
        }
        let target = 2f64.powf(-alpha);
        let candidates: Vec<usize> = (3..=31).step_by(2).chain([63]).collect();
        let generic_cost = |d: usize| {
            let c: Vec<f64> = (0..=d)
                .map(|k| if k % 2 == 1 { 1.0 } else { 0.0 })
                .collect();
            EvalPlan::for_series(&ChebSeries::new(-1.0, 1.0, c)).cost
        };
        let costs: Vec<(usize, EvalCost)> =
            candidates.iter().map(|&d| (d, generic_cost(d))).collect();
        #[derive(Clone)]
        struct State {
            r: f64,
            degrees: Vec<usize>,
            cost: EvalCost,
        }
        let key = |c: &EvalCost| (c.depth, c.relins, c.ct_mults);
        let mut best: Option<(Vec<usize>, EvalCost)> = None;
        let mut states = vec![State {
            r: eps,
            degrees: vec![],
            cost: EvalCost::default(),
        }];
        for _stage in 0..8 {
            let mut next: Vec<State> = Vec::new();
            for s in &states {
                for &(d, c) in &costs {
                    let cost = s.cost.then(c);
                    if best.as_ref().is_some_and(|(_, b)| key(&cost) >= key(b)) {
                        continue;
                    }
                    let Ok((_, e)) = sign_stage(d, s.r) else {
                        continue;
                    };
                    let mut degrees = s.degrees.clone();
                    degrees.push(d);
                    if e <= target {
                        best = Some((degrees, cost));
                    } else if e < 1.0 {
                        next.push(State {
                            r: (1.0 - e) / (1.0 + e),
                            degrees,
                            cost,
                        });
                    }
                }
            }
            // Keep the Pareto front (larger r with smaller cost), at most a few per depth.
            next.sort_by(|a, b| key(&a.cost).cmp(&key(&b.cost)).then(b.r.total_cmp(&a.r)));
            let mut kept: Vec<State> = Vec::new();
            for s in next {
                let dominated = kept
                    .iter()
                    .any(|k| k.r >= s.r && key(&k.cost) <= key(&s.cost));
                let per_depth = kept.iter().filter(|k| k.cost.depth == s.cost.depth).count();
                if !dominated && per_depth < 4 {
                    kept.push(s);
                }
            }
            if kept.is_empty() {
                break;
            }
            states = kept;
        }
        let (degrees, _) = best.ok_or_else(|| {
            ApproxError::BadRequest(format!(
                "no composition of up to 8 stages reaches 2^-{alpha} on [{eps:e}, 1]"
            ))
        })?;
        let cs = CompositeSign::with_degrees(eps, &degrees)?;
        // The search used per-stage errors; check the composed error on the dense grid too.
        if cs.max_error > target * 1.01 {
            return Err(ApproxError::Numerical(format!(
                "composition {:?} measured {:.3e} > 2^-{alpha} on the dense grid",
                cs.degrees, cs.max_error
            )));
        }
        Ok(cs)
    }

    /// Levels consumed: the sum over stages of `ceil(log2(d + 1))`.
    pub fn depth(&self) -> u32 {
        self.degrees.iter().map(|&d| optimal_depth(d)).sum()
    }
}

/// Image `[min, max]` of `[r, 1]` under `s` (dense grid plus ends).
fn image(s: &ChebSeries, r: f64) -> (f64, f64) {
    let n = 20_000;
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for i in 0..=n {
        let t = i as f64 / n as f64;
        for x in [r + (1.0 - r) * t, r * (1.0 / r).powf(t)] {
            let v = s.eval(x);
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_degree_lists_compose_as_their_stages_predict() {
        // Measured here: with eps = 2^-8 both of Lee et al.'s lists reach better than 2^-20;
        // the composed error is the last stage's minimax error on the image of the others.
        for degrees in [vec![15, 15, 27], vec![15, 27, 29]] {
            let cs = CompositeSign::with_degrees(2f64.powi(-8), &degrees).unwrap();
            assert!(
                cs.max_error < 2f64.powi(-20),
                "{degrees:?}: {}",
                cs.max_error
            );
            let last = *cs.stage_errors.last().unwrap();
            assert!(
                (cs.max_error - last).abs() <= 0.02 * last,
                "{} vs {last}",
                cs.max_error
            );
            assert_eq!(cs.cost.depth, cs.depth());
            assert!(
                cs.stage_errors.windows(2).all(|w| w[1] < w[0]),
                "{:?}",
                cs.stage_errors
            );
        }
        // A smaller gap is harder: the same list does worse at eps = 2^-12.
        let near = CompositeSign::with_degrees(2f64.powi(-12), &[15, 15, 27]).unwrap();
        assert!(near.max_error > 2f64.powi(-8));
    }

    #[test]
    fn precision_search_reaches_alpha_on_a_dense_grid() {
        for alpha in [6.0, 10.0] {
            let eps = 2f64.powf(-alpha);
            let cs = CompositeSign::for_precision(alpha, eps).unwrap();
            let measured = cs.measure_error(200_000);
            assert!(
                measured <= 2f64.powf(-alpha) * 1.01,
                "alpha {alpha}: {measured} with {:?}",
                cs.degrees
            );
        }
    }

    #[test]
    fn rejects_impossible_requests() {
        assert!(CompositeSign::with_degrees(0.0, &[15]).is_err());
        assert!(CompositeSign::with_degrees(0.1, &[14]).is_err());
        assert!(CompositeSign::for_precision(0.0, 0.1).is_err());
    }
}
