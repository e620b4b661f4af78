//! Evaluation plans: how a polynomial (Chebyshev series on the unit interval) becomes a
//! straight-line program of homomorphic operations, and what that program costs.
//!
//! The planner splits `p = Q * T_{2^k} + R` (Chebyshev division) recursively, with the giant
//! steps `T_{2^k}` obtained by squaring (`T_{2n} = 2 T_n^2 - 1`), until a piece has degree below
//! the baby-step bound `b`; such a leaf is a scalar combination of precomputed `T_1 .. T_{b-1}`
//! when its depth budget allows, and is split further otherwise. Every piece is given the depth
//! at which it must be ready, so the result of a degree-`d` polynomial is ready at depth
//! `ceil(log2(d + 1))`, the minimum for any evaluation with one level per multiplication (scalar
//! multiplications by non-integers count as a level, integer ones do not). Among baby-step
//! bounds the planner keeps the cheapest plan (fewest relinearizations, then products).
//!
//! Relinearization is lazy: a product stays a three-part ciphertext through scalar
//! multiplications and sums, and is relinearized once, when it feeds another product or leaves.

use super::cheb::ChebSeries;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A register of a plan (index into [`EvalPlan::ops`]).
pub type Reg = usize;

/// One operation of an evaluation plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PlanOp {
    /// The input ciphertext (the variable already mapped to `[-1, 1]`).
    Input,
    /// Ciphertext-ciphertext product.
    Mul(Reg, Reg),
    /// Product with a real constant (consumes a level).
    MulScalar(Reg, f64),
    /// Product with a small integer (no level).
    MulInt(Reg, i64),
    /// Sum.
    Add(Reg, Reg),
    /// Difference.
    Sub(Reg, Reg),
    /// Adds a real constant.
    AddScalar(Reg, f64),
}

/// A straight-line program evaluating one polynomial, with its cost.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalPlan {
    /// The operations; register `i` holds the result of `ops[i]`.
    pub ops: Vec<PlanOp>,
    /// Register holding the result.
    pub output: Reg,
    /// Baby-step bound used.
    pub baby_steps: usize,
    /// Cost summary.
    pub cost: EvalCost,
}

/// What an evaluation plan costs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalCost {
    /// Multiplicative depth (levels consumed).
    pub depth: u32,
    /// Ciphertext-ciphertext products.
    pub ct_mults: usize,
    /// Relinearizations with lazy placement.
    pub relins: usize,
    /// Products with non-integer constants.
    pub scalar_mults: usize,
    /// Additions and subtractions of ciphertexts or constants.
    pub additions: usize,
}

impl EvalCost {
    /// Cost of running `a` then `b` on its output (depths add).
    pub fn then(self, b: EvalCost) -> EvalCost {
        EvalCost {
            depth: self.depth + b.depth,
            ct_mults: self.ct_mults + b.ct_mults,
            relins: self.relins + b.relins,
            scalar_mults: self.scalar_mults + b.scalar_mults,
            additions: self.additions + b.additions,
        }
    }
}

/// `ceil(log2(d + 1))`: the depth of a degree-`d` polynomial evaluated well.
pub fn optimal_depth(degree: usize) -> u32 {
    usize::BITS - degree.leading_zeros()
}

struct Builder {
    ops: Vec<PlanOp>,
    depth: Vec<u32>,
    /// Chebyshev polynomials computed so far: index -> register.
    t: HashMap<usize, Reg>,
}

impl Builder {
    fn push(&mut self, op: PlanOp) -> Reg {
        let d = match &op {
            PlanOp::Input => 0,
            PlanOp::Mul(a, b) => self.depth[*a].max(self.depth[*b]) + 1,
            PlanOp::MulScalar(a, _) => self.depth[*a] + 1,
            PlanOp::MulInt(a, _) | PlanOp::AddScalar(a, _) => self.depth[*a],
            PlanOp::Add(a, b) | PlanOp::Sub(a, b) => self.depth[*a].max(self.depth[*b]),
        };
        self.ops.push(op);
        self.depth.push(d);
        self.ops.len() - 1
    }

    /// Register holding `T_i` (i >= 1), built from powers of two and sums of indices.
    fn cheb(&mut self, i: usize) -> Reg {
        if let Some(&r) = self.t.get(&i) {
            return r;
        }
        let r = if i.is_power_of_two() {
            let h = self.cheb(i / 2);
            let sq = self.push(PlanOp::Mul(h, h));
            let two = self.push(PlanOp::MulInt(sq, 2));
            self.push(PlanOp::AddScalar(two, -1.0))
        } else {
            // T_{a+c} = 2 T_a T_c - T_{a-c}, a the largest power of two below i.
            let a = 1usize << (usize::BITS - 1 - i.leading_zeros());
            let c = i - a;
            let (ta, tc) = (self.cheb(a), self.cheb(c));
            let prod = self.push(PlanOp::Mul(ta, tc));
            let two = self.push(PlanOp::MulInt(prod, 2));
            if a - c == 0 {
                self.push(PlanOp::AddScalar(two, -1.0))
            } else {
                let tr = self.cheb(a - c);
                self.push(PlanOp::Sub(two, tr))
            }
        };
        self.t.insert(i, r);
        r
    }

    /// Depth of `T_i` as built by [`Self::cheb`].
    fn cheb_depth(i: usize) -> u32 {
        if i <= 1 {
            0
        } else {
            optimal_depth(i - 1)
        }
    }

    /// Emits `sum_k c[k] T_k` to be ready at depth `budget`. Returns `None` for the zero
    /// polynomial, `Some(Err(c))` for a constant `c`, `Some(Ok(reg))` otherwise.
    fn poly(&mut self, c: &[f64], budget: u32, baby: usize) -> Option<Result<Reg, f64>> {
        let deg = c.iter().rposition(|v| *v != 0.0)?;
        if deg == 0 {
            return Some(Err(c[0]));
        }
        let leaf_depth = (1..=deg)
            .filter(|&i| c[i] != 0.0)
            .map(Self::cheb_depth)
            .max()
            .unwrap_or(0)
            + 1;
        if deg < baby.max(2) && leaf_depth <= budget || deg == 1 {
            let mut acc: Option<Reg> = None;
            for (i, &ci) in c.iter().enumerate().skip(1) {
                if ci == 0.0 {
                    continue;
                }
                let t = self.cheb(i);
                let term = self.push(PlanOp::MulScalar(t, ci));
                acc = Some(match acc {
                    None => term,
                    Some(a) => self.push(PlanOp::Add(a, term)),
                });
            }
            let mut r = acc?;
            if c[0] != 0.0 {
                r = self.push(PlanOp::AddScalar(r, c[0]));
            }
            return Some(Ok(r));
        }
        // Split at the largest power of two a <= deg: p = Q T_a + R.
        let a = 1usize << (usize::BITS - 1 - deg.leading_zeros());
        let mut q = vec![0.0; deg - a + 1];
        let mut r: Vec<f64> = c[..a].to_vec();
        q[0] = c[a];
        for k in 1..=deg - a {
            q[k] = 2.0 * c[a + k];
            r[a - k] -= c[a + k];
        }
        let ta = self.cheb(a);
        let qa = match self.poly(&q, budget.saturating_sub(1), baby) {
            None => None,
            Some(Err(k)) => Some(self.push(PlanOp::MulScalar(ta, k))),
            Some(Ok(qr)) => Some(self.push(PlanOp::Mul(qr, ta))),
        };
        let rr = self.poly(&r, budget, baby);
        match (qa, rr) {
            (None, rr) => rr,
            (Some(x), None) => Some(Ok(x)),
            (Some(x), Some(Err(k))) => Some(Ok(self.push(PlanOp::AddScalar(x, k)))),
            (Some(x), Some(Ok(y))) => Some(Ok(self.push(PlanOp::Add(x, y)))),
        }
    }
}

impl EvalPlan {
    /// Plans `series` (a Chebyshev series; the plan's input is the unit variable of the series)
    /// for the best baby-step bound.
    pub fn for_series(series: &ChebSeries) -> EvalPlan {
        let deg = series.degree();
        let target = optimal_depth(deg);
        let mut best: Option<EvalPlan> = None;
        let mut baby = 2usize;
        while baby <= (deg + 1).next_power_of_two().max(2) {
            let plan = Self::with_baby_steps(&series.coeffs, target, baby);
            let better = best.as_ref().is_none_or(|b| {
                (
                    plan.cost.depth,
                    plan.cost.relins,
                    plan.cost.ct_mults,
                    plan.cost.scalar_mults,
                ) < (
                    b.cost.depth,
                    b.cost.relins,
                    b.cost.ct_mults,
                    b.cost.scalar_mults,
                )
            });
            if better {
                best = Some(plan);
            }
            baby *= 2;
        }
        best.unwrap_or_else(|| Self::with_baby_steps(&series.coeffs, target, 2))
    }

    fn with_baby_steps(coeffs: &[f64], budget: u32, baby: usize) -> EvalPlan {
        let mut b = Builder {
            ops: Vec::new(),
            depth: Vec::new(),
            t: HashMap::new(),
        };
        let x = b.push(PlanOp::Input);
        b.t.insert(1, x);
        let output = match b.poly(coeffs, budget, baby) {
            Some(Ok(r)) => r,
            Some(Err(k)) => {
                let z = b.push(PlanOp::MulInt(x, 0));
                b.push(PlanOp::AddScalar(z, k))
            }
            None => b.push(PlanOp::MulInt(x, 0)),
        };
        let cost = cost_of(&b.ops, &b.depth, output);
        EvalPlan {
            ops: b.ops,
            output,
            baby_steps: baby,
            cost,
        }
    }

    /// Runs the plan on a plaintext value (the reference semantics of the plan).
    pub fn eval(&self, y: f64) -> f64 {
        let mut v: Vec<f64> = Vec::with_capacity(self.ops.len());
        for op in &self.ops {
            let x = match *op {
                PlanOp::Input => y,
                PlanOp::Mul(a, b) => v[a] * v[b],
                PlanOp::MulScalar(a, c) => v[a] * c,
                PlanOp::MulInt(a, k) => v[a] * k as f64,
                PlanOp::Add(a, b) => v[a] + v[b],
                PlanOp::Sub(a, b) => v[a] - v[b],
                PlanOp::AddScalar(a, c) => v[a] + c,
            };
            v.push(x);
        }
        v.get(self.output).copied().unwrap_or(f64::NAN)
    }
}

/// Counts the cost of the live part of a plan (ops the output depends on).
fn cost_of(ops: &[PlanOp], depth: &[u32], output: Reg) -> EvalCost {
    let mut live = vec![false; ops.len()];
    if output < ops.len() {
        live[output] = true;
    }
    for i in (0..ops.len()).rev() {
        if !live[i] {
            continue;
        }
        match ops[i] {
            PlanOp::Input => {}
            PlanOp::Mul(a, b) | PlanOp::Add(a, b) | PlanOp::Sub(a, b) => {
                live[a] = true;
                live[b] = true;
            }
            PlanOp::MulScalar(a, _) | PlanOp::MulInt(a, _) | PlanOp::AddScalar(a, _) => {
                live[a] = true
            }
        }
    }
    // Size-3 tracking for lazy relinearization.
    let mut big = vec![false; ops.len()];
    let mut relinearized = vec![false; ops.len()];
    let mut c = EvalCost {
        depth: depth.get(output).copied().unwrap_or(0),
        ..EvalCost::default()
    };
    for (i, op) in ops.iter().enumerate() {
        if !live[i] {
            continue;
        }
        match *op {
            PlanOp::Input => {}
            PlanOp::Mul(a, b) => {
                c.ct_mults += 1;
                for r in [a, b] {
                    if big[r] && !relinearized[r] {
                        relinearized[r] = true;
                        c.relins += 1;
                    }
                }
                big[i] = true;
            }
            PlanOp::MulScalar(a, _) => {
                c.scalar_mults += 1;
                big[i] = big[a] && !relinearized[a];
            }
            PlanOp::MulInt(a, _) => big[i] = big[a] && !relinearized[a],
            PlanOp::AddScalar(a, _) => {
                c.additions += 1;
                big[i] = big[a] && !relinearized[a];
            }
            PlanOp::Add(a, b) | PlanOp::Sub(a, b) => {
                c.additions += 1;
                big[i] = (big[a] && !relinearized[a]) || (big[b] && !relinearized[b]);
            }
        }
    }
    if big[output] && !relinearized[output] {
        c.relins += 1;
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(seed: u64, n: usize) -> Vec<f64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn plans_compute_the_series_at_optimal_depth() {
        for deg in 1..=64 {
            let coeffs = pseudo_random(deg as u64, deg + 1);
            let s = ChebSeries::new(-1.0, 1.0, coeffs);
            let plan = EvalPlan::for_series(&s);
            assert_eq!(
                plan.cost.depth,
                optimal_depth(deg),
                "degree {deg}: {:?}",
                plan.cost
            );
            for k in 0..=40 {
                let y = -1.0 + 2.0 * k as f64 / 40.0;
                let (got, want) = (plan.eval(y), s.eval(y));
                assert!(
                    (got - want).abs() < 1e-10 * (1.0 + want.abs()),
                    "deg {deg} y {y}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn odd_polynomials_stay_cheap() {
        // An odd degree-15 polynomial: depth 4 and a handful of products.
        let mut c = vec![0.0; 16];
        for (k, v) in c.iter_mut().enumerate() {
            if k % 2 == 1 {
                *v = 1.0 / k as f64;
            }
        }
        let plan = EvalPlan::for_series(&ChebSeries::new(-1.0, 1.0, c));
        assert_eq!(plan.cost.depth, 4);
        assert!(plan.cost.ct_mults <= 10, "{:?}", plan.cost);
    }

    #[test]
    fn optimal_depth_values() {
        assert_eq!(
            [1, 2, 3, 4, 7, 8, 15, 16, 27, 29, 31].map(optimal_depth),
            [1, 2, 2, 3, 3, 4, 4, 5, 5, 5, 5]
        );
    }
}
