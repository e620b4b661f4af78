//! The tensor-graph verifier: structure, shape inference and weights, all errors at once.
//!
//! [`verify`] returns the inferred per-image shape of every node, or *every* problem found
//! ([`GraphError`]): duplicate names, dangling operands, wrong arity, cycles, shape mismatches,
//! invalid attributes (including non-finite attributes, attributes that multiply the data
//! beyond [`MAX_WEIGHT_MAGNITUDE`] and a non-positive input `std`), missing weights, weights of the wrong shape, NaN/infinite weights, weights
//! of absurd magnitude and shapes or parameter counts beyond the [`limits`](super::limits).
//! Errors name the node, its id and op, say what was expected, and carry the node's source span
//! when the front end recorded one. A node whose operands failed is skipped (no cascade of
//! follow-up errors). [`analyze`] returns the partial shapes along with the errors.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use miette::SourceSpan;
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use super::limits::{
    check_weight, describe, oversized_values, MAX_PARAMETERS, MAX_WEIGHT_MAGNITUDE,
};
use super::shape::{expected_weights, infer, ShapeIssue};
use super::{Graph, NodeId, Op, Shape};

/// Inferred per-image shape of each node.
pub type Shapes = BTreeMap<NodeId, Shape>;

/// A problem in a tensor graph.
#[derive(Clone, Debug, PartialEq, thiserror::Error, miette::Diagnostic)]
pub enum GraphError {
    /// An operand has the wrong shape for the op.
    #[error("node `{node}` ({id}, {op}): operand {slot} has shape {found}, expected {expected}")]
    #[diagnostic(code(hecc::graph::shape_mismatch))]
    ShapeMismatch {
        /// Node name.
        node: String,
        /// Node id.
        id: NodeId,
        /// Op mnemonic.
        op: &'static str,
        /// Operand slot.
        slot: usize,
        /// What was expected.
        expected: String,
        /// The shape found.
        found: Shape,
        /// Source location of the node.
        #[label("shape mismatch in this node")]
        span: Option<SourceSpan>,
    },
    /// An attribute is invalid (possibly for the given input shape).
    #[error("node `{node}` ({id}, {op}): {message}")]
    #[diagnostic(code(hecc::graph::invalid_attribute))]
    InvalidAttribute {
        /// Node name.
        node: String,
        /// Node id.
        id: NodeId,
        /// Op mnemonic.
        op: &'static str,
        /// What is wrong.
        message: String,
        /// Source location of the node.
        #[label("invalid attribute")]
        span: Option<SourceSpan>,
    },
    /// A weight named by a node is not in the weight table.
    #[error(
        "node `{node}` ({id}, {op}): missing weight `{weight}` ({role}, expected shape {expected})"
    )]
    #[diagnostic(
        code(hecc::graph::missing_weight),
        help("add the tensor to the weights file, or name an existing one in the spec")
    )]
    MissingWeight {
        /// Node name.
        node: String,
        /// Node id.
        id: NodeId,
        /// Op mnemonic.
        op: &'static str,
        /// Role of the weight (`weight`, `bias`, `gamma` ...).
        role: &'static str,
        /// Weight name.
        weight: String,
        /// Expected shape, or `?` when the input shape is unknown.
        expected: String,
        /// Source location of the node.
        #[label("needs weight `{weight}`")]
        span: Option<SourceSpan>,
    },
    /// A weight has the wrong shape.
    #[error("node `{node}` ({id}, {op}): weight `{weight}` ({role}) has shape {found}, expected {expected}")]
    #[diagnostic(code(hecc::graph::weight_shape))]
    WeightShape {
        /// Node name.
        node: String,
        /// Node id.
        id: NodeId,
        /// Op mnemonic.
        op: &'static str,
        /// Role of the weight.
        role: &'static str,
        /// Weight name.
        weight: String,
        /// Expected shape.
        expected: Shape,
        /// Actual shape.
        found: Shape,
        /// Source location of the node.
        #[label("weight `{weight}` has the wrong shape")]
        span: Option<SourceSpan>,
    },
    /// A weight contains NaN or an infinity.
    #[error("weight `{weight}` used by node `{node}` ({op}) has {count} {kind} value(s), first at index {index:?} (flat index {flat})")]
    #[diagnostic(code(hecc::graph::non_finite_weight))]
    NonFiniteWeight {
        /// Weight name.
        weight: String,
        /// First node using it.
        node: String,
        /// Op mnemonic of that node.
        op: &'static str,
        /// `NaN` or `infinite`.
        kind: &'static str,
        /// Number of such values.
        count: usize,
        /// Multi-index of the first one.
        index: Vec<usize>,
        /// Row-major flat index of the first one.
        flat: usize,
        /// Source location of the node.
        #[label("uses a weight with {kind} values")]
        span: Option<SourceSpan>,
    },
    /// A weight has values too large in magnitude for CKKS (above
    /// [`MAX_WEIGHT_MAGNITUDE`]).
    #[error("weight `{weight}` used by node `{node}` ({op}) has {count} value(s) of magnitude above {limit}, first {value:e} at flat index {flat} (index {index:?})")]
    #[diagnostic(
        code(hecc::graph::weight_magnitude),
        help("CKKS encodes round(w * 2^scale): weights this large leave no room for a useful scale; check the export")
    )]
    WeightMagnitude {
        /// Weight name.
        weight: String,
        /// First node using it.
        node: String,
        /// Op mnemonic of that node.
        op: &'static str,
        /// Number of such values.
        count: usize,
        /// The first one.
        value: f64,
        /// Row-major flat index of the first one.
        flat: usize,
        /// Multi-index of the first one.
        index: Vec<usize>,
        /// The limit, as text (`2^32 (4294967296)`).
        limit: String,
        /// Source location of the node.
        #[label("uses a weight with values of absurd magnitude")]
        span: Option<SourceSpan>,
    },
    /// A shape of the node (its input, output, padded input or a weight it needs) is beyond
    /// the [`limits`](super::limits).
    #[error("node `{node}` ({id}, {op}): {message}")]
    #[diagnostic(
        code(hecc::graph::too_large),
        help(
            "hecc refuses tensors this large before allocating them; see hecc_ir::tensor::limits"
        )
    )]
    TooLarge {
        /// Node name.
        node: String,
        /// Node id.
        id: NodeId,
        /// Op mnemonic.
        op: &'static str,
        /// What is too large, with the limit.
        message: String,
        /// Source location of the node.
        #[label("tensor too large")]
        span: Option<SourceSpan>,
    },
    /// The weights of the model hold more values than [`MAX_PARAMETERS`].
    #[error("the model has {count} weight values, above the limit of {limit} per model")]
    #[diagnostic(code(hecc::graph::too_many_parameters))]
    TooManyParameters {
        /// Number of weight values (present, or required by the ops when larger).
        count: usize,
        /// The limit, as text.
        limit: String,
    },
    /// The source names an op that does not exist.
    #[error("node `{node}`: unknown op `{op}`")]
    #[diagnostic(code(hecc::graph::unknown_op))]
    UnknownOp {
        /// Node name.
        node: String,
        /// The unknown op name.
        op: String,
        /// Suggestion (known ops).
        #[help]
        help: Option<String>,
        /// Source location.
        #[label("unknown op")]
        span: Option<SourceSpan>,
    },
    /// The graph has a cycle.
    #[error("cycle through nodes {}", nodes.join(" -> "))]
    #[diagnostic(
        code(hecc::graph::cycle),
        help("a tensor graph must be acyclic: check the `inputs` of these nodes")
    )]
    Cycle {
        /// Names of the nodes on the cycle (a strongly connected component).
        nodes: Vec<String>,
        /// Source location of the first node.
        #[label("part of a cycle")]
        span: Option<SourceSpan>,
    },
    /// An operand refers to something that does not exist.
    #[error(
        "node `{node}` ({id}, {op}): operand {slot} refers to `{reference}`, which is not defined"
    )]
    #[diagnostic(code(hecc::graph::dangling_input))]
    DanglingInput {
        /// Node name.
        node: String,
        /// Node id.
        id: NodeId,
        /// Op mnemonic.
        op: &'static str,
        /// Operand slot.
        slot: u32,
        /// The unresolved reference.
        reference: String,
        /// Source location of the reference (or the node).
        #[label("`{reference}` is not defined")]
        span: Option<SourceSpan>,
    },
    /// A graph output is not a node of the graph.
    #[error("graph output {index} refers to `{reference}`, which is not defined")]
    #[diagnostic(code(hecc::graph::dangling_output))]
    DanglingOutput {
        /// Position in the output list.
        index: usize,
        /// The unresolved reference.
        reference: String,
        /// Source location of the reference.
        #[label("not defined")]
        span: Option<SourceSpan>,
    },
    /// Two nodes have the same name.
    #[error("duplicate node name `{name}` ({id})")]
    #[diagnostic(code(hecc::graph::duplicate_name))]
    DuplicateName {
        /// The name.
        name: String,
        /// The later node.
        id: NodeId,
        /// Where the later node is defined.
        #[label("defined again here")]
        span: Option<SourceSpan>,
        /// Where the first node is defined.
        #[label("first defined here")]
        first: Option<SourceSpan>,
    },
    /// Wrong number of operands, or operand slots not numbered `0..n`.
    #[error("node `{node}` ({id}, {op}): takes {expected}, got {found}")]
    #[diagnostic(code(hecc::graph::arity))]
    Arity {
        /// Node name.
        node: String,
        /// Node id.
        id: NodeId,
        /// Op mnemonic.
        op: &'static str,
        /// What the op takes.
        expected: String,
        /// What it got.
        found: String,
        /// Source location.
        #[label("wrong number of inputs")]
        span: Option<SourceSpan>,
    },
    /// The graph has no input node.
    #[error("the graph has no `input` node")]
    #[diagnostic(code(hecc::graph::no_input))]
    NoInputs,
    /// The graph has no outputs.
    #[error("the graph has no outputs")]
    #[diagnostic(code(hecc::graph::no_output))]
    NoOutputs,
}

fn span_of(g: &Graph, id: NodeId) -> Option<SourceSpan> {
    g.node(id).and_then(|n| n.span).map(Into::into)
}

/// Verifies `g` and returns the shape of every node, or every error found.
pub fn verify(g: &Graph) -> Result<Shapes, Vec<GraphError>> {
    let (shapes, errors) = analyze(g);
    if errors.is_empty() {
        Ok(shapes)
    } else {
        Err(errors)
    }
}

/// Runs every check and returns the shapes that could be inferred together with all errors.
pub fn analyze(g: &Graph) -> (Shapes, Vec<GraphError>) {
    let mut errors = Vec::new();

    // Duplicate names.
    let mut first_by_name: HashMap<&str, NodeId> = HashMap::new();
    for id in g.node_ids() {
        let Some(n) = g.node(id) else { continue };
        match first_by_name.get(n.name.as_str()) {
            Some(&first) => errors.push(GraphError::DuplicateName {
                name: n.name.clone(),
                id,
                span: span_of(g, id),
                first: span_of(g, first),
            }),
            None => {
                first_by_name.insert(n.name.as_str(), id);
            }
        }
    }

    // Inputs and outputs.
    let has_input = g
        .node_ids()
        .any(|id| matches!(g.node(id).map(|n| &n.op), Some(Op::Input { .. })));
    if !has_input {
        errors.push(GraphError::NoInputs);
    }
    if g.outputs.is_empty() {
        errors.push(GraphError::NoOutputs);
    }
    for (index, &o) in g.outputs.iter().enumerate() {
        if g.node(o).is_none() {
            errors.push(GraphError::DanglingOutput {
                index,
                reference: o.to_string(),
                span: None,
            });
        }
    }

    // Dangling operands recorded by the builder.
    let mut broken: BTreeSet<NodeId> = BTreeSet::new();
    for d in &g.dangling {
        broken.insert(d.node);
        let (node, op) = g
            .node(d.node)
            .map(|n| (n.name.clone(), n.op.mnemonic()))
            .unwrap_or_else(|| (d.node.to_string(), "?"));
        errors.push(GraphError::DanglingInput {
            node,
            id: d.node,
            op,
            slot: d.slot,
            reference: d.reference.clone(),
            span: d.span.map(Into::into).or_else(|| span_of(g, d.node)),
        });
    }

    // Arity and operand slots.
    for id in g.node_ids() {
        let Some(n) = g.node(id) else { continue };
        let mut slots: Vec<u32> = g
            .graph
            .edges_directed(id.index(), Direction::Incoming)
            .map(|e| e.weight().0)
            .collect();
        slots.extend(g.dangling.iter().filter(|d| d.node == id).map(|d| d.slot));
        slots.sort_unstable();
        let arity = n.op.arity();
        let contiguous = slots.iter().enumerate().all(|(i, &s)| s as usize == i);
        if !arity.accepts(slots.len()) || !contiguous {
            broken.insert(id);
            let found = if contiguous {
                format!("{} operand(s)", slots.len())
            } else {
                format!("operand slots {slots:?} (expected 0..{})", slots.len())
            };
            errors.push(GraphError::Arity {
                node: n.name.clone(),
                id,
                op: n.op.mnemonic(),
                expected: arity.to_string(),
                found,
                span: n.span.map(Into::into),
            });
        }
    }

    // Cycles: each non-trivial strongly connected component, once.
    let order = match g.topo_order() {
        Some(o) => o,
        None => {
            let mut on_cycle = BTreeSet::new();
            for scc in petgraph::algo::tarjan_scc(&g.graph) {
                let self_loop = scc.len() == 1
                    && g.graph
                        .edges_directed(scc[0], Direction::Outgoing)
                        .any(|e| e.target() == scc[0]);
                if scc.len() > 1 || self_loop {
                    let mut ids: Vec<NodeId> = scc.iter().map(|&i| NodeId::from(i)).collect();
                    ids.sort();
                    on_cycle.extend(ids.iter().copied());
                    errors.push(GraphError::Cycle {
                        nodes: ids
                            .iter()
                            .filter_map(|&i| g.node(i).map(|n| n.name.clone()))
                            .collect(),
                        span: ids.first().and_then(|&i| span_of(g, i)),
                    });
                }
            }
            broken.extend(on_cycle);
            acyclic_prefix(g)
        }
    };

    // Shape inference and weight checks in topological order.
    let mut shapes = Shapes::new();
    for &id in &order {
        let Some(n) = g.node(id) else { continue };
        let ops = g.operand_ids(id);
        let operand_shapes: Vec<&Shape> = ops.iter().filter_map(|o| shapes.get(o)).collect();
        let name = || n.name.clone();
        let span = n.span.map(Into::into);
        // Weights that do not exist at all, when the expected shapes cannot be computed.
        let report_absent = |errors: &mut Vec<GraphError>| {
            for (role, w) in n.op.weight_refs() {
                if !g.weights.contains_key(w) {
                    errors.push(GraphError::MissingWeight {
                        node: name(),
                        id,
                        op: n.op.mnemonic(),
                        role,
                        weight: w.to_string(),
                        expected: "?".into(),
                        span,
                    });
                }
            }
        };
        if broken.contains(&id) || operand_shapes.len() != ops.len() {
            report_absent(&mut errors);
            continue;
        }
        let inferred = infer(&n.op, &operand_shapes);
        if inferred.is_err() {
            report_absent(&mut errors);
        }
        match inferred {
            Ok(s) => {
                if let Some(x) = operand_shapes.first() {
                    check_weights(g, id, x, &mut errors);
                }
                shapes.insert(id, s);
            }
            Err(ShapeIssue::Mismatch {
                slot,
                expected,
                found,
            }) => {
                errors.push(GraphError::ShapeMismatch {
                    node: name(),
                    id,
                    op: n.op.mnemonic(),
                    slot,
                    expected,
                    found,
                    span,
                });
            }
            Err(ShapeIssue::Attribute(message)) => errors.push(GraphError::InvalidAttribute {
                node: name(),
                id,
                op: n.op.mnemonic(),
                message,
                span,
            }),
            Err(ShapeIssue::TooLarge(message)) => errors.push(GraphError::TooLarge {
                node: name(),
                id,
                op: n.op.mnemonic(),
                message,
                span,
            }),
        }
    }

    // Parameter count: the weights present, or those the ops need when that is more (a graph
    // whose weights are still to be generated).
    let mut needed: BTreeMap<&str, usize> = BTreeMap::new();
    for &id in &order {
        let (Some(n), Some(x)) = (
            g.node(id),
            g.operand_ids(id).first().and_then(|o| shapes.get(o)),
        ) else {
            continue;
        };
        for (_, w, expected) in expected_weights(&n.op, x) {
            // Weights beyond the per-tensor limit are reported on their node.
            if let Ok(k) = check_weight(&expected) {
                needed.insert(w, k);
            }
        }
    }
    let needed = needed.values().fold(0usize, |a, &b| a.saturating_add(b));
    let present = g
        .weights
        .values()
        .fold(0usize, |a, t| a.saturating_add(t.len()));
    let count = needed.max(present);
    if count > MAX_PARAMETERS {
        errors.push(GraphError::TooManyParameters {
            count,
            limit: describe(MAX_PARAMETERS),
        });
    }

    // Non-finite weights, once per referenced weight.
    let mut seen = BTreeSet::new();
    for id in g.node_ids() {
        let Some(n) = g.node(id) else { continue };
        for (_, w) in n.op.weight_refs() {
            if !seen.insert(w.to_string()) {
                continue;
            }
            let Some(t) = g.weights.get(w) else { continue };
            let mut first: Option<(usize, bool)> = None;
            let mut count = 0;
            for (i, v) in t.iter().enumerate() {
                if !v.is_finite() {
                    count += 1;
                    if first.is_none() {
                        first = Some((i, v.is_nan()));
                    }
                }
            }
            if let Some((flat, nan)) = first {
                errors.push(GraphError::NonFiniteWeight {
                    weight: w.to_string(),
                    node: n.name.clone(),
                    op: n.op.mnemonic(),
                    kind: if nan { "NaN" } else { "infinite" },
                    count,
                    index: unravel(flat, t.shape()),
                    flat,
                    span: n.span.map(Into::into),
                });
            }
            if let Some((flat, value, count)) = oversized_values(t.iter()) {
                errors.push(GraphError::WeightMagnitude {
                    weight: w.to_string(),
                    node: n.name.clone(),
                    op: n.op.mnemonic(),
                    count,
                    value,
                    flat,
                    index: unravel(flat, t.shape()),
                    limit: describe(MAX_WEIGHT_MAGNITUDE as usize),
                    span: n.span.map(Into::into),
                });
            }
        }
    }

    (shapes, errors)
}

/// Nodes reachable in topological order when the graph has cycles (nodes on or after a cycle
/// are left out).
fn acyclic_prefix(g: &Graph) -> Vec<NodeId> {
    let mut indeg: HashMap<NodeId, usize> = g
        .node_ids()
        .map(|id| {
            (
                id,
                g.graph
                    .edges_directed(id.index(), Direction::Incoming)
                    .count(),
            )
        })
        .collect();
    let mut ready: Vec<NodeId> = g.node_ids().filter(|id| indeg[id] == 0).collect();
    ready.sort_by(|a, b| b.cmp(a));
    let mut out = Vec::new();
    while let Some(id) = ready.pop() {
        out.push(id);
        for (u, _) in g.users(id) {
            if let Some(d) = indeg.get_mut(&u) {
                *d = d.saturating_sub(1);
                if *d == 0 {
                    ready.push(u);
                }
            }
        }
    }
    out
}

fn check_weights(g: &Graph, id: NodeId, input: &Shape, errors: &mut Vec<GraphError>) {
    let Some(n) = g.node(id) else { return };
    for (role, w, expected) in expected_weights(&n.op, input) {
        if let Err(m) = check_weight(&expected) {
            errors.push(GraphError::TooLarge {
                node: n.name.clone(),
                id,
                op: n.op.mnemonic(),
                message: format!("{role} `{w}` would have shape {expected}: {m}"),
                span: n.span.map(Into::into),
            });
            continue;
        }
        match g.weights.get(w) {
            None => errors.push(GraphError::MissingWeight {
                node: n.name.clone(),
                id,
                op: n.op.mnemonic(),
                role,
                weight: w.to_string(),
                expected: expected.to_string(),
                span: n.span.map(Into::into),
            }),
            Some(t) if t.shape() != &expected[..] => errors.push(GraphError::WeightShape {
                node: n.name.clone(),
                id,
                op: n.op.mnemonic(),
                role,
                weight: w.to_string(),
                expected,
                found: Shape::from(t.shape()),
                span: n.span.map(Into::into),
            }),
            Some(_) => {}
        }
    }
}

fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (i, &d) in shape.iter().enumerate().rev() {
        if d > 0 {
            idx[i] = flat % d;
            flat /= d;
        }
    }
    idx
}
