//! `fuse-activation-batch-norm`: a batch-norm whose operand is a degree-2 activation
//! (`quadratic`, `square`, or `poly` of degree at most 2) used only by it becomes part of that
//! activation: `s (a x^2 + b x + c) + t = (s a) x^2 + (s b) x + (s c + t)` per element. The
//! activation node keeps its id and name and becomes a `quadratic` with a new coefficient tensor
//! (`<bn>.fused.coeffs`): element granularity when the activation was element-wise, channel
//! granularity otherwise (a layer-wise quadratic, `square` or `poly` followed by a per-channel
//! batch-norm is per channel). The batch-norm node is removed; its users and output slots read
//! the activation. This is the BEAA Conv module (`conv -> quadratic -> batch_norm`).
//!
//! Contract: preserves [`hecc_ir::tensor::eval`] outputs up to rounding; idempotent; repeats
//! until nothing can be fused. Activations with other users, higher-degree polynomials and
//! batch-norms whose channel count does not match are left alone.

use super::{batch_norm_affine, bypass_and_remove, drop_unused_weights, fresh_weight_name};
use crate::manager::{Changed, PassCx, PassError, TensorPass};
use hecc_ir::tensor::{verify, Granularity, Graph, NodeId, Op, Tensor};
use std::collections::BTreeSet;

/// The `fuse-activation-batch-norm` pass.
pub struct FuseActivationBatchNorm;

struct Patch {
    bn: NodeId,
    act: NodeId,
    granularity: Granularity,
    coeffs: (String, Tensor),
    old: Option<String>,
}

fn err(node: &str, detail: String) -> PassError {
    PassError::Tensor {
        pass: "fuse-activation-batch-norm",
        node: node.to_string(),
        detail,
    }
}

fn plan_one(
    g: &Graph,
    bn: NodeId,
    shapes: &hecc_ir::tensor::verify::Shapes,
) -> Result<Option<Patch>, PassError> {
    let Some(node) = g.node(bn) else {
        return Ok(None);
    };
    let ops = g.operand_ids(bn);
    let [a] = ops.as_slice() else { return Ok(None) };
    let a = *a;
    if !super::sole_user_is(g, a, bn) || g.outputs.contains(&a) {
        return Ok(None);
    }
    let Some(an) = g.node(a) else { return Ok(None) };
    let Some(shape) = shapes.get(&a) else {
        return Ok(None);
    };
    let n = shape.numel();
    let c = shape.first().copied().unwrap_or(1).max(1);
    let per_c = (n / c).max(1);
    let Some((s, t)) = batch_norm_affine(g, &node.op) else {
        return Ok(None);
    };
    if s.len() != c || n % c != 0 {
        return Ok(None);
    }
    // Source coefficients (a, b, c) of element k, and the target granularity.
    type CoeffFn<'a> = Box<dyn Fn(usize) -> [f64; 3] + 'a>;
    let (gran, src, old): (Granularity, CoeffFn<'_>, Option<String>) = match &an.op {
        Op::Square => (Granularity::Channel, Box::new(|_| [1.0, 0.0, 0.0]), None),
        Op::Poly { coeffs } => {
            let deg = coeffs.iter().rposition(|x| *x != 0.0).unwrap_or(0);
            if deg > 2 {
                return Ok(None);
            }
            let k = |i: usize| coeffs.get(i).copied().unwrap_or(0.0);
            let abc = [k(2), k(1), k(0)];
            (Granularity::Channel, Box::new(move |_| abc), None)
        }
        Op::Quadratic {
            granularity,
            coeffs,
        } => {
            let tt: Vec<f64> = g
                .weights
                .get(coeffs)
                .ok_or_else(|| err(&an.name, format!("weight `{coeffs}` is missing")))?
                .iter()
                .copied()
                .collect();
            let stride = match granularity {
                Granularity::Layer => 1,
                Granularity::Channel => c,
                Granularity::Element => n,
            };
            if tt.len() != 3 * stride {
                return Err(err(
                    &an.name,
                    format!(
                        "coefficient tensor `{coeffs}` has {} values, expected {}",
                        tt.len(),
                        3 * stride
                    ),
                ));
            }
            let gran = *granularity;
            let idx = move |k: usize| match gran {
                Granularity::Layer => 0,
                Granularity::Channel => k / per_c,
                Granularity::Element => k,
            };
            let target = match gran {
                Granularity::Element => Granularity::Element,
                Granularity::Layer | Granularity::Channel => Granularity::Channel,
            };
            (
                target,
                Box::new(move |k| {
                    let i = idx(k);
                    [tt[i], tt[stride + i], tt[2 * stride + i]]
                }),
                Some(coeffs.clone()),
            )
        }
        _ => return Ok(None),
    };
    // One representative element per target coefficient.
    let (count, rep): (usize, Box<dyn Fn(usize) -> usize>) = match gran {
        Granularity::Element => (n, Box::new(|k| k)),
        Granularity::Channel | Granularity::Layer => (c, Box::new(move |ch| ch * per_c)),
    };
    let mut out = vec![0.0; 3 * count];
    for i in 0..count {
        let k = rep(i);
        let ch = k / per_c;
        let [qa, qb, qc] = src(k);
        out[i] = s[ch] * qa;
        out[count + i] = s[ch] * qb;
        out[2 * count + i] = s[ch] * qc + t[ch];
    }
    let coeff_shape = gran.coeff_shape(shape);
    let tensor = Tensor::from_shape_vec(coeff_shape.0.clone(), out)
        .map_err(|e| err(&an.name, e.to_string()))?;
    Ok(Some(Patch {
        bn,
        act: a,
        granularity: gran,
        coeffs: (
            fresh_weight_name(g, &format!("{}.fused.coeffs", node.name)),
            tensor,
        ),
        old,
    }))
}

impl TensorPass for FuseActivationBatchNorm {
    fn name(&self) -> &'static str {
        "fuse-activation-batch-norm"
    }

    fn is_required(&self) -> bool {
        false
    }

    fn run(&self, g: &mut Graph, _cx: &mut PassCx) -> Result<Changed, PassError> {
        let mut changed = false;
        loop {
            let (Some(order), Ok(shapes)) = (g.topo_order(), verify(g)) else {
                // An invalid graph is left for the verifier to report.
                return Ok(Changed::from_bool(changed));
            };
            let mut patches = Vec::new();
            for id in order {
                if matches!(g.node(id).map(|n| &n.op), Some(Op::BatchNorm { .. })) {
                    if let Some(p) = plan_one(g, id, &shapes)? {
                        patches.push(p);
                    }
                }
            }
            if patches.is_empty() {
                return Ok(Changed::from_bool(changed));
            }
            let mut stale = BTreeSet::new();
            for p in patches {
                let name = fresh_weight_name(g, &p.coeffs.0);
                g.add_weight(name.clone(), p.coeffs.1);
                if let Some(node) = g.node_mut(p.act) {
                    node.op = Op::Quadratic {
                        granularity: p.granularity,
                        coeffs: name,
                    };
                }
                if let Some(Op::BatchNorm {
                    gamma,
                    beta,
                    mean,
                    var,
                    ..
                }) = g.node(p.bn).map(|n| &n.op)
                {
                    stale.extend([gamma, beta, mean, var].into_iter().cloned());
                }
                stale.extend(p.old);
                bypass_and_remove(g, p.bn, p.act);
            }
            drop_unused_weights(g, &stale);
            changed = true;
        }
    }
}
