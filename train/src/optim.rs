//! Nesterov-momentum SGD with separate L2 strengths for weights and activation coefficients.
//!
//! Per parameter `p` with gradient `g` (PyTorch's formulation):
//! `d = g + wd * p`, `v = mu * v + d`, `p -= lr * (d + mu * v)`, where `wd` is
//! [`NesterovSgd::coeff_l2`] for activation coefficients (BEAA's L2 on the coefficients) and
//! [`NesterovSgd::weight_decay`] for every other parameter. Optionally the global gradient norm
//! is clipped first. Parameters without a gradient are left unchanged.

use std::collections::HashMap;

use crate::kernels::Real;
use crate::net::{Grads, Net};

/// The optimiser state and hyper-parameters.
#[derive(Debug)]
pub struct NesterovSgd<F> {
    /// Learning rate (changed by the schedule between epochs).
    pub lr: f64,
    /// Momentum `mu`.
    pub momentum: f64,
    /// L2 strength on conv/dense/batch-norm parameters.
    pub weight_decay: f64,
    /// L2 strength on activation coefficients.
    pub coeff_l2: f64,
    /// Global gradient-norm clip (0 = none).
    pub clip_norm: f64,
    velocity: HashMap<String, Vec<F>>,
}

impl<F: Real> NesterovSgd<F> {
    /// A fresh optimiser (zero velocities).
    pub fn new(lr: f64, momentum: f64, weight_decay: f64, coeff_l2: f64, clip_norm: f64) -> Self {
        NesterovSgd {
            lr,
            momentum,
            weight_decay,
            coeff_l2,
            clip_norm,
            velocity: HashMap::new(),
        }
    }

    /// Applies one update to `net`'s parameters from `grads`; returns the gradient norm
    /// before clipping.
    pub fn step(&mut self, net: &mut Net<F>, grads: &Grads<F>) -> f64 {
        let sq: f64 = grads
            .values()
            .map(|g| g.iter().map(|v| v.f64() * v.f64()).sum::<f64>())
            .sum();
        let norm = sq.sqrt();
        let scale = if self.clip_norm > 0.0 && norm > self.clip_norm {
            self.clip_norm / norm
        } else {
            1.0
        };
        let coeffs: Vec<bool> = net.params().keys().map(|k| net.is_coeff(k)).collect();
        let (mu, lr, sc) = (F::of(self.momentum), F::of(self.lr), F::of(scale));
        for ((name, p), is_coeff) in net.params_mut().iter_mut().zip(coeffs) {
            let Some(g) = grads.get(name) else { continue };
            let wd = F::of(if is_coeff {
                self.coeff_l2
            } else {
                self.weight_decay
            });
            let fresh = !self.velocity.contains_key(name);
            let v = self
                .velocity
                .entry(name.clone())
                .or_insert_with(|| vec![F::zero(); g.len()]);
            for ((pv, &gv), vv) in p.data.iter_mut().zip(g).zip(v.iter_mut()) {
                let d = gv * sc + wd * *pv;
                *vv = if fresh { d } else { mu * *vv + d };
                *pv -= lr * (d + mu * *vv);
            }
        }
        norm
    }
}
