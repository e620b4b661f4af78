//! Passes on the tensor graph (before lowering): fusions that remove batch-norm nodes.
//!
//! Contract shared by every pass here: the pass preserves the plaintext semantics of the graph
//! ([`hecc_ir::tensor::eval`] outputs agree up to rounding), keeps node ids of the nodes it does
//! not remove, keeps the graph verifying, and is idempotent (a second run reports
//! [`crate::manager::Changed::No`]). Each pass first analyses the graph and collects its edits,
//! then applies them; a rewrite that would change a graph output's identity is not done (the
//! output moves to the surviving node instead).

pub mod fold_batch_norm;
pub mod fuse_activation_bn;

pub use fold_batch_norm::FoldBatchNorm;
pub use fuse_activation_bn::FuseActivationBatchNorm;

use hecc_ir::tensor::{Graph, NodeId, Op, Operand};
use std::collections::BTreeSet;

/// The per-channel affine map `y = s[c] * x + t[c]` of a batch-norm node, if `op` is one and
/// its four tensors exist with the same length.
pub fn batch_norm_affine(g: &Graph, op: &Op) -> Option<(Vec<f64>, Vec<f64>)> {
    let Op::BatchNorm {
        gamma,
        beta,
        mean,
        var,
        epsilon,
    } = op
    else {
        return None;
    };
    let get =
        |n: &String| -> Option<Vec<f64>> { Some(g.weights.get(n)?.iter().copied().collect()) };
    let (ga, be, me, va) = (get(gamma)?, get(beta)?, get(mean)?, get(var)?);
    let c = ga.len();
    if be.len() != c || me.len() != c || va.len() != c {
        return None;
    }
    let mut s = Vec::with_capacity(c);
    let mut t = Vec::with_capacity(c);
    for i in 0..c {
        let si = ga[i] / (va[i] + epsilon).sqrt();
        if !si.is_finite() {
            return None;
        }
        s.push(si);
        t.push(be[i] - me[i] * si);
    }
    Some((s, t))
}

/// A weight name not used yet in `g`, built from `base`.
pub fn fresh_weight_name(g: &Graph, base: &str) -> String {
    if !g.weights.contains_key(base) {
        return base.to_string();
    }
    (2..)
        .map(|i| format!("{base}.{i}"))
        .find(|n| !g.weights.contains_key(n))
        .unwrap_or_else(|| base.to_string())
}

/// Makes every user of `old` (and every graph output slot naming it) use `new` instead, then
/// removes `old`.
pub fn bypass_and_remove(g: &mut Graph, old: NodeId, new: NodeId) {
    for (user, slot) in g.users(old) {
        g.graph.add_edge(new.index(), user.index(), Operand(slot));
    }
    for o in g.outputs.iter_mut() {
        if *o == old {
            *o = new;
        }
    }
    g.graph.remove_node(old.index());
}

/// Removes the weights in `candidates` that no node references any more.
pub fn drop_unused_weights(g: &mut Graph, candidates: &BTreeSet<String>) {
    let used: BTreeSet<String> = g
        .node_ids()
        .filter_map(|id| g.node(id))
        .flat_map(|n| n.op.weight_refs().into_iter().map(|(_, w)| w.to_string()))
        .collect();
    for c in candidates {
        if !used.contains(c) {
            g.weights.remove(c);
        }
    }
}

/// Whether `id` has exactly one user, which is `user`, through one operand slot.
pub fn sole_user_is(g: &Graph, id: NodeId, user: NodeId) -> bool {
    let users = g.users(id);
    users.len() == 1 && users[0].0 == user
}
