//! `fold-batch-norm`: a batch-norm whose operand is a `conv2d` or `dense` node used only by it
//! is folded into that node's weights and bias: `W'[o] = s[o] W[o]`, `b'[o] = s[o] b[o] + t[o]`
//! with `s = gamma / sqrt(var + eps)`, `t = beta - mean s`. The new tensors are added to the
//! weight table under fresh names (`<bn>.folded.weight`, `<bn>.folded.bias`), the producer keeps
//! its id and name and now references them, the batch-norm node is removed and its users (and
//! output slots) read the producer. Weights nobody references afterwards are dropped.
//!
//! Contract: preserves [`hecc_ir::tensor::eval`] outputs up to rounding; idempotent; repeats
//! until no batch-norm can be folded (so `conv -> bn -> bn` folds both). A batch-norm whose
//! channel count does not match the producer's outputs is left alone (the verifier reports it).

use super::{batch_norm_affine, bypass_and_remove, drop_unused_weights, fresh_weight_name};
use crate::manager::{Changed, PassCx, PassError, TensorPass};
use hecc_ir::tensor::{Graph, NodeId, Op, Tensor};
use std::collections::BTreeSet;

/// The `fold-batch-norm` pass.
pub struct FoldBatchNorm;

/// One fold, decided before any mutation.
struct Patch {
    bn: NodeId,
    producer: NodeId,
    weight: (String, Tensor),
    bias: (String, Tensor),
    old: Vec<String>,
}

fn plan_one(g: &Graph, bn: NodeId) -> Result<Option<Patch>, PassError> {
    let Some(node) = g.node(bn) else {
        return Ok(None);
    };
    let ops = g.operand_ids(bn);
    let [p] = ops.as_slice() else {
        return Ok(None);
    };
    let p = *p;
    if !super::sole_user_is(g, p, bn) || g.outputs.contains(&p) {
        return Ok(None);
    }
    let Some(pn) = g.node(p) else { return Ok(None) };
    let (outs, weight, bias) = match &pn.op {
        Op::Conv2d {
            out_channels,
            weight,
            bias,
            ..
        } => (*out_channels, weight, bias),
        Op::Dense {
            out_features,
            weight,
            bias,
            ..
        } => (*out_features, weight, bias),
        _ => return Ok(None),
    };
    let Some((s, t)) = batch_norm_affine(g, &node.op) else {
        return Ok(None);
    };
    if s.len() != outs {
        return Ok(None);
    }
    let missing = |w: &str| PassError::Tensor {
        pass: "fold-batch-norm",
        node: pn.name.clone(),
        detail: format!("weight `{w}` is missing"),
    };
    let w = g.weights.get(weight).ok_or_else(|| missing(weight))?;
    let per = w.len() / outs.max(1);
    if per * outs != w.len() {
        return Err(PassError::Tensor {
            pass: "fold-batch-norm",
            node: pn.name.clone(),
            detail: format!(
                "weight `{weight}` has {} values for {outs} outputs",
                w.len()
            ),
        });
    }
    let scaled: Vec<f64> = w
        .iter()
        .enumerate()
        .map(|(i, x)| x * s[i / per.max(1)])
        .collect();
    let new_w =
        Tensor::from_shape_vec(w.shape().to_vec(), scaled).map_err(|e| PassError::Tensor {
            pass: "fold-batch-norm",
            node: pn.name.clone(),
            detail: e.to_string(),
        })?;
    let b: Vec<f64> = match bias {
        Some(b) => {
            let bt = g.weights.get(b).ok_or_else(|| missing(b))?;
            if bt.len() != outs {
                return Ok(None);
            }
            bt.iter().copied().collect()
        }
        None => vec![0.0; outs],
    };
    let new_b: Vec<f64> = (0..outs).map(|o| s[o] * b[o] + t[o]).collect();
    let mut old = vec![weight.clone()];
    old.extend(bias.iter().cloned());
    Ok(Some(Patch {
        bn,
        producer: p,
        weight: (
            fresh_weight_name(g, &format!("{}.folded.weight", node.name)),
            new_w,
        ),
        bias: (
            fresh_weight_name(g, &format!("{}.folded.bias", node.name)),
            Tensor::from_shape_vec(vec![outs], new_b).map_err(|e| PassError::Tensor {
                pass: "fold-batch-norm",
                node: pn.name.clone(),
                detail: e.to_string(),
            })?,
        ),
        old,
    }))
}

impl TensorPass for FoldBatchNorm {
    fn name(&self) -> &'static str {
        "fold-batch-norm"
    }

    fn is_required(&self) -> bool {
        false
    }

    fn run(&self, g: &mut Graph, _cx: &mut PassCx) -> Result<Changed, PassError> {
        let mut changed = false;
        loop {
            let Some(order) = g.topo_order() else {
                return Ok(Changed::from_bool(changed));
            };
            let mut patches = Vec::new();
            for id in order {
                if matches!(g.node(id).map(|n| &n.op), Some(Op::BatchNorm { .. })) {
                    if let Some(p) = plan_one(g, id)? {
                        patches.push(p);
                    }
                }
            }
            if patches.is_empty() {
                return Ok(Changed::from_bool(changed));
            }
            let mut stale = BTreeSet::new();
            for p in patches {
                // Names were chosen against the table before this round; re-check them.
                let wn = fresh_weight_name(g, &p.weight.0);
                g.add_weight(wn.clone(), p.weight.1);
                let bn_name = fresh_weight_name(g, &p.bias.0);
                g.add_weight(bn_name.clone(), p.bias.1);
                if let Some(node) = g.node_mut(p.producer) {
                    match &mut node.op {
                        Op::Conv2d { weight, bias, .. } | Op::Dense { weight, bias, .. } => {
                            *weight = wn;
                            *bias = Some(bn_name);
                        }
                        _ => {}
                    }
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
                bypass_and_remove(g, p.bn, p.producer);
            }
            drop_unused_weights(g, &stale);
            changed = true;
        }
    }
}
