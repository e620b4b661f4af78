//! Plaintext evaluation of a model with its activations replaced by approximations, computing
//! exactly what the lowered circuit computes (up to the CKKS noise).
//!
//! The lowering ([`crate::lower`]) replaces `relu(x)` by [`ActivationApprox::eval`] element by
//! element, and `max_pool` by a tree of pairwise maxima `max(a, b) = approx_relu(a - b) + b`
//! over each window's in-bounds values in row-major order, pairing neighbours level by level
//! (an odd value out is carried up unchanged). [`eval_approx`] applies the same rules on
//! tensors, through [`crate::ranges::eval_staged`]; [`ApproxChoice`] says, per activation node,
//! which approximation is used (`None` keeps the exact activation).

use super::ActivationApprox;
use crate::ranges::{eval_staged, exact, windows, RangeCheck, RangeError, Site, SiteKind};
use hecc_ir::tensor::{Graph, Tensor};

/// The approximation of one activation node, or `None` for the exact activation.
pub type ApproxChoice<'a> = Option<&'a ActivationApprox>;

/// The lowering's tree of pairwise approximate maxima over one window's values.
pub fn approx_max(a: &ActivationApprox, values: &[f64]) -> f64 {
    let mut layer = values.to_vec();
    if layer.is_empty() {
        return 0.0;
    }
    while layer.len() > 1 {
        layer = layer
            .chunks(2)
            .map(|p| match p {
                [x, y] => a.eval(x - y) + y,
                [x] => *x,
                _ => 0.0,
            })
            .collect();
    }
    layer[0]
}

/// One activation node applied to its input batch `x` with approximation `a`.
pub fn apply(site: &Site, a: &ActivationApprox, x: &[f64]) -> Vec<f64> {
    match site.kind {
        SiteKind::Relu => x.iter().map(|&v| a.eval(v)).collect(),
        SiteKind::MaxPool {
            kernel,
            stride,
            padding,
        } => windows(x, &site.in_shape, &site.out_shape, kernel, stride, padding)
            .map(|w| approx_max(a, &w))
            .collect(),
    }
}

/// What [`eval_approx`] returns: the model outputs and, per approximated activation, how many of
/// its inputs fell outside the approximation's range.
#[derive(Clone, Debug)]
pub struct ApproxEval {
    /// One tensor per graph output, `[N, ...]`.
    pub outputs: Vec<Tensor>,
    /// Range checks of the approximated activations, in evaluation order.
    pub checks: Vec<RangeCheck>,
}

/// Evaluates `g` on a batch with each activation node replaced by `choose(site)` (exact when it
/// returns `None`), as the compiled circuit would compute it, and checks every approximated
/// activation's inputs against the approximation's range.
pub fn eval_approx<'a>(
    g: &Graph,
    inputs: &[Tensor],
    mut choose: impl FnMut(&Site) -> ApproxChoice<'a>,
) -> Result<ApproxEval, RangeError> {
    let mut checks = Vec::new();
    let outputs = eval_staged(g, inputs, |site, x| {
        Ok(match choose(site) {
            Some(a) => {
                checks.push(crate::ranges::check_values(site, x, a.range));
                apply(site, a, x)
            }
            None => exact(site, x),
        })
    })?;
    Ok(ApproxEval { outputs, checks })
}
