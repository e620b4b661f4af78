//! Nesterov-momentum SGD with separate L2 strengths for weights and activation coefficients.
//!
//! Per parameter `p` with gradient `g` (PyTorch's formulation):
//! `d = g + wd * p`, `v = mu * v + d`, `p -= lr * (d + mu * v)`, where `wd` is
//! [`NesterovSgd::coeff_l2`] for activation coefficients (BEAA's L2 on the coefficients) and
//! [`NesterovSgd::weight_decay`] for every other parameter. Optionally the global gradient norm
//! is clipped first. Parameters without a gradient are left unchanged.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::Tensor;

use crate::net::Net;
use crate::TrainError;

/// The optimiser state and hyper-parameters.
#[derive(Debug)]
pub struct NesterovSgd {
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
    velocity: HashMap<String, Tensor>,
}

impl NesterovSgd {
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
    pub fn step(&mut self, net: &Net, grads: &GradStore) -> Result<f64, TrainError> {
        let mut sq = 0.0;
        for v in net.params().values() {
            if let Some(g) = grads.get(v.as_tensor()) {
                sq += g
                    .sqr()?
                    .sum_all()?
                    .to_dtype(candle_core::DType::F64)?
                    .to_scalar::<f64>()?;
            }
        }
        let norm = sq.sqrt();
        let scale = if self.clip_norm > 0.0 && norm > self.clip_norm {
            self.clip_norm / norm
        } else {
            1.0
        };
        for (name, var) in net.params() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let p = var.as_tensor();
            let wd = if net.is_coeff(name) {
                self.coeff_l2
            } else {
                self.weight_decay
            };
            // Detached: gradients and velocities must not keep the autodiff graph (of this
            // and, through the velocity, every earlier step) alive.
            let mut d = g.detach().affine(scale, 0.0)?;
            if wd != 0.0 {
                d = (d + p.affine(wd, 0.0)?)?;
            }
            let v = match self.velocity.get(name) {
                Some(v) => (v.affine(self.momentum, 0.0)? + &d)?,
                None => d.clone(),
            };
            let upd = (d + v.affine(self.momentum, 0.0)?)?;
            var.set(&(p.detach() - upd.affine(self.lr, 0.0)?)?)?;
            self.velocity.insert(name.clone(), v.detach());
        }
        Ok(norm)
    }
}
