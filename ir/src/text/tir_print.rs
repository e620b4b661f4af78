//! Printer of the tensor-graph text form (`.tir`).
//!
//! Contract: [`print_graph`] (also `Display for Graph`) writes a graph so that [`super::parse_graph`]
//! rebuilds the same nodes (ids, names, ops, attributes, operand order),
//! inputs, outputs and weight declarations, and printing the result gives the
//! same text. Layout:
//!
//! ```text
//! graph "lenet"
//! inputs [%0]
//! outputs [%3]
//! weight "fc.weight" : [10, 784]
//! weight "fc.bias" : [10]
//! %0 = input "x" () {shape = [1, 28, 28], mean = [0.0], std = [1.0], range = [0.0, 1.0]} : [1, 28, 28]
//! %1 = flatten "flat" (%0) : [784]
//! %2 = dense "fc" (%1) {out_features = 10, weight = "fc.weight", bias = "fc.bias"} : [10]
//! %3 = relu "act" (%2) : [10]
//! ```
//!
//! Weight *values* are not printed: a weight line records name and shape
//! only, and the parser returns the declarations so the caller can attach the
//! tensors ([`super::ParsedGraph::into_graph`]). The `: [..]` after a node is the
//! shape inferred by the tensor verifier, printed as an annotation when it
//! could be inferred and ignored when parsing. Nodes are printed in
//! topological order (ties by id; nodes on cycles follow in id order).
//! Operands the builder could not resolve (`Graph::dangling`) are listed as
//! comments and are not read back.

use super::lexer::{fmt_f64, quote};
use crate::tensor::verify::analyze;
use crate::tensor::{Graph, NodeId, Op, Shape};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write};

/// Declared weight shapes by name.
pub type WeightShapes = BTreeMap<String, Shape>;

/// The shapes of a graph's weight tensors.
pub fn weight_shapes(g: &Graph) -> WeightShapes {
    g.weights
        .iter()
        .map(|(k, t)| (k.clone(), Shape(t.shape().to_vec())))
        .collect()
}

/// Prints `g`, declaring its weights by name and shape.
pub fn print_graph(g: &Graph) -> String {
    print_graph_with(g, &weight_shapes(g))
}

/// Prints `g` with the given weight declarations (used for parsed graphs,
/// whose weight values are not attached).
pub fn print_graph_with(g: &Graph, weights: &WeightShapes) -> String {
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = write_graph(&mut s, g, weights);
    s
}

impl fmt::Display for Graph {
    /// The `.tir` text form ([`print_graph`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_graph(f, self, &weight_shapes(self))
    }
}

fn order(g: &Graph) -> Vec<NodeId> {
    if let Some(o) = g.topo_order() {
        return o;
    }
    // Kahn's algorithm on the acyclic part, then the rest in id order.
    let mut placed = BTreeSet::new();
    let mut out = Vec::new();
    loop {
        let next = g.node_ids().find(|&id| {
            !placed.contains(&id) && g.operand_ids(id).iter().all(|o| placed.contains(o))
        });
        match next {
            Some(id) => {
                placed.insert(id);
                out.push(id);
            }
            None => break,
        }
    }
    out.extend(g.node_ids().filter(|id| !placed.contains(id)));
    out
}

fn write_ids<W: Write>(w: &mut W, ids: &[NodeId]) -> fmt::Result {
    w.write_str("[")?;
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            w.write_str(", ")?;
        }
        write!(w, "{id}")?;
    }
    w.write_str("]")
}

fn usizes(v: &[usize]) -> String {
    let parts: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

fn floats(v: &[f64]) -> String {
    let parts: Vec<String> = v.iter().map(|x| fmt_f64(*x)).collect();
    format!("[{}]", parts.join(", "))
}

/// The attributes of `op` as `key = value` strings, in a fixed order.
pub fn op_attrs(op: &Op) -> Vec<(&'static str, String)> {
    match op {
        Op::Input { shape, norm } => {
            let mut v = vec![
                ("shape", usizes(shape)),
                ("mean", floats(&norm.mean)),
                ("std", floats(&norm.std)),
            ];
            if let Some(r) = norm.range {
                v.push(("range", floats(&r)));
            }
            v
        }
        Op::Conv2d {
            out_channels,
            kernel,
            stride,
            padding,
            groups,
            weight,
            bias,
        } => {
            let mut v = vec![
                ("out_channels", out_channels.to_string()),
                ("kernel", usizes(kernel)),
                ("stride", usizes(stride)),
                ("padding", usizes(padding)),
                ("groups", groups.to_string()),
                ("weight", quote(weight)),
            ];
            if let Some(b) = bias {
                v.push(("bias", quote(b)));
            }
            v
        }
        Op::BatchNorm {
            gamma,
            beta,
            mean,
            var,
            epsilon,
        } => vec![
            ("gamma", quote(gamma)),
            ("beta", quote(beta)),
            ("mean", quote(mean)),
            ("var", quote(var)),
            ("epsilon", fmt_f64(*epsilon)),
        ],
        Op::Dense {
            out_features,
            weight,
            bias,
        } => {
            let mut v = vec![
                ("out_features", out_features.to_string()),
                ("weight", quote(weight)),
            ];
            if let Some(b) = bias {
                v.push(("bias", quote(b)));
            }
            v
        }
        Op::Reshape { shape } => vec![("shape", usizes(shape))],
        Op::AvgPool {
            kernel,
            stride,
            padding,
        }
        | Op::MaxPool {
            kernel,
            stride,
            padding,
        } => vec![
            ("kernel", usizes(kernel)),
            ("stride", usizes(stride)),
            ("padding", usizes(padding)),
        ],
        Op::Concat { axis } => vec![("axis", axis.to_string())],
        Op::Scale { factor } => vec![("factor", fmt_f64(*factor))],
        Op::Poly { coeffs } => vec![("coeffs", floats(coeffs))],
        Op::Quadratic {
            granularity,
            coeffs,
        } => vec![
            ("granularity", granularity.as_str().to_string()),
            ("coeffs", quote(coeffs)),
        ],
        Op::Flatten | Op::GlobalAvgPool | Op::Add | Op::Relu | Op::Square => Vec::new(),
    }
}

fn write_graph<W: Write>(w: &mut W, g: &Graph, weights: &WeightShapes) -> fmt::Result {
    writeln!(w, "graph {}", quote(&g.name))?;
    w.write_str("inputs ")?;
    write_ids(w, &g.inputs)?;
    w.write_str("\noutputs ")?;
    write_ids(w, &g.outputs)?;
    writeln!(w)?;
    for (name, shape) in weights {
        writeln!(w, "weight {} : {shape}", quote(name))?;
    }
    for d in &g.dangling {
        writeln!(
            w,
            "// dangling operand: {} slot {} -> {}",
            d.node,
            d.slot,
            d.reference.escape_debug()
        )?;
    }
    let (shapes, _) = analyze(g);
    for id in order(g) {
        let Some(n) = g.node(id) else { continue };
        write!(w, "{id} = {} {}", n.op.mnemonic(), quote(&n.name))?;
        w.write_str(" (")?;
        for (i, o) in g.operand_ids(id).iter().enumerate() {
            if i > 0 {
                w.write_str(", ")?;
            }
            write!(w, "{o}")?;
        }
        w.write_str(")")?;
        let attrs = op_attrs(&n.op);
        if !attrs.is_empty() {
            w.write_str(" {")?;
            for (i, (k, v)) in attrs.iter().enumerate() {
                if i > 0 {
                    w.write_str(", ")?;
                }
                write!(w, "{k} = {v}")?;
            }
            w.write_str("}")?;
        }
        if let Some(s) = shapes.get(&id) {
            write!(w, " : {s}")?;
        }
        writeln!(w)?;
    }
    Ok(())
}
