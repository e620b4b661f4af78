//! Lowering: from a verified tensor graph to an *unmanaged* HE circuit (no rescales, no level
//! drops; every value at level 0 and its natural scale). The management passes
//! ([`crate::he::manage`]) then place rescales and level drops by policy.
//!
//! Only the `batch` layout (BEAA element-wise packing: slot `i` holds image `i`, one ciphertext
//! per tensor element) is lowered here. In it every linear op (conv, dense, pooling) is a
//! multiply-accumulate of (ciphertext, scalar) pairs and needs no rotation; batch-norm, scaling
//! and normalisation are absorbed by the lazy affine values of [`lazy`]; a quadratic costs one
//! level; a polynomial of degree `d` costs `ceil(log2(d + 1))` levels through
//! [`crate::approx::EvalPlan`].

mod batch_ops;
pub mod channel;
pub mod lazy;

use crate::approx::{ActivationApprox, ApproxForm, ChebSeries, EvalPlan, PlanOp};
use hecc_ir::he::{HeError, Layout, LogScale, Meta, Module};
use hecc_ir::tensor::{verify, Granularity, Graph, GraphError, NodeId, Op, Shape, Tensor};
use lazy::{Emitter, Lazy};
use std::collections::HashMap;
use std::rc::Rc;

/// A lowered tensor element: a lazy ciphertext, or a linear combination not yet materialised
/// (pooling outputs, so that the next linear layer absorbs the pooling weights and no level is
/// spent on the pooling itself).
#[derive(Clone, Debug)]
enum Elem {
    L(Lazy),
    Lin(Rc<(Vec<(Lazy, f64)>, f64)>),
}

/// Most terms a folded linear combination may reach before it is materialised instead.
const MAX_FOLDED_TERMS: usize = 4096;

fn expand(terms: &[(&Elem, f64)]) -> (Vec<(Lazy, f64)>, f64) {
    let mut out = Vec::with_capacity(terms.len());
    let mut bias = 0.0;
    for &(e, w) in terms {
        match e {
            Elem::L(x) => out.push((*x, w)),
            Elem::Lin(l) => {
                out.extend(l.0.iter().map(|&(x, c)| (x, c * w)));
                bias += w * l.1;
            }
        }
    }
    (out, bias)
}

fn materialize(em: &mut Emitter<'_>, e: &Elem) -> Result<Lazy, HeError> {
    match e {
        Elem::L(x) => Ok(*x),
        Elem::Lin(l) => em.mac(&l.0, l.1),
    }
}

/// How relu and max-pool are replaced when lowering.
#[derive(Clone, Debug, Default)]
pub struct ActivationPolicy {
    /// The replacement of `relu`; `None` makes `relu` an error.
    pub relu: Option<ActivationApprox>,
    /// The sign approximation for `max_pool`, with the bound on `|a - b|` it is valid for.
    pub max: Option<ActivationApprox>,
    /// Per-node replacements (by node name, e.g. fitted on calibrated ranges) that take
    /// precedence over `relu` and `max`.
    pub per_node: std::collections::BTreeMap<String, ActivationApprox>,
}

impl ActivationPolicy {
    /// The replacement of the `relu` node `node`.
    pub fn relu_for(&self, node: &str) -> Option<ActivationApprox> {
        self.per_node.get(node).or(self.relu.as_ref()).cloned()
    }

    /// The replacement used by the `max_pool` node `node`.
    pub fn max_for(&self, node: &str) -> Option<ActivationApprox> {
        self.per_node.get(node).or(self.max.as_ref()).cloned()
    }

    /// The approximation of relu node `node`, or the error asking for a policy.
    pub fn require_relu(&self, node: &str) -> Result<ActivationApprox, LowerError> {
        self.relu_for(node).ok_or_else(|| LowerError::NeedsApproximation {
            node: node.to_string(),
            op: "relu",
            hint: "choose a ReLU policy with --activation (square, least-squares, chebyshev, minimax ...)",
        })
    }

    /// The approximation of max_pool node `node`, or the error asking for a policy.
    pub fn require_max(&self, node: &str) -> Result<ActivationApprox, LowerError> {
        self.max_for(node).ok_or_else(|| LowerError::NeedsApproximation {
            node: node.to_string(),
            op: "max_pool",
            hint: "choose a max-pool policy with --activation (e.g. minimax:15,15,27 with calibrated ranges)",
        })
    }
}

/// Options of the lowering.
#[derive(Clone, Debug)]
pub struct LowerOptions {
    /// Images per ciphertext (batch layout).
    pub batch: u32,
    /// Slots per ciphertext (`N / 2`).
    pub slots: u32,
    /// log2 of the scale of fresh ciphertexts and of encoded scalars.
    pub log_scale: f64,
    /// Replacements of the non-polynomial activations.
    pub activations: ActivationPolicy,
}

/// Why a graph could not be lowered.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum LowerError {
    /// The graph does not verify.
    #[error("the model does not verify ({} problem(s)); run `hecc check` for details", .0.len())]
    #[diagnostic(code(hecc::lower::invalid))]
    Invalid(Vec<GraphError>),
    /// An op needs an approximation policy that was not given.
    #[error("node `{node}` ({op}) needs an approximation: {hint}")]
    #[diagnostic(code(hecc::lower::needs_approximation))]
    NeedsApproximation {
        /// Node name.
        node: String,
        /// Op mnemonic.
        op: &'static str,
        /// What to pass.
        hint: &'static str,
    },
    /// A weight named by a node is missing (the verifier normally catches this).
    #[error("node `{node}`: weight `{weight}` is missing")]
    #[diagnostic(code(hecc::lower::missing_weight))]
    MissingWeight {
        /// Node name.
        node: String,
        /// Weight name.
        weight: String,
    },
    /// A batch-norm whose tensors do not give a finite per-channel scale.
    #[error("batch-norm `{node}`: its tensors do not give a finite per-channel scale (variance + epsilon must be positive, all four of length C)")]
    #[diagnostic(code(hecc::lower::batch_norm))]
    BadBatchNorm {
        /// Node name.
        node: String,
    },
    /// An output element does not depend on the input.
    #[error("output `{output}` element {index} is a constant ({value}); nothing to encrypt")]
    #[diagnostic(code(hecc::lower::constant_output))]
    ConstantOutput {
        /// Output node name.
        output: String,
        /// Element index.
        index: usize,
        /// The constant.
        value: f64,
    },
    /// The batch does not fit the slots.
    #[error("batch of {batch} images does not fit {slots} slots")]
    #[diagnostic(
        code(hecc::lower::batch),
        help("use a smaller --batch or a larger ring degree")
    )]
    BatchTooLarge {
        /// Requested batch.
        batch: u32,
        /// Slots available.
        slots: u32,
    },
    /// Building the HE IR failed (a lowering bug if it happens).
    #[error("building the HE circuit failed at node `{node}`: {source}")]
    #[diagnostic(code(hecc::lower::build))]
    Build {
        /// Tensor node being lowered.
        node: String,
        /// The builder error.
        #[source]
        source: HeError,
    },
}

/// A tensor-graph node and the HE nodes its lowering created.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LayerSpan {
    /// Node name.
    pub name: String,
    /// Op mnemonic.
    pub op: String,
    /// Output shape.
    pub shape: Vec<usize>,
    /// HE node ids from the previous span's `end` up to (excluding) this `end`.
    pub end: u32,
}

/// The result of lowering.
#[derive(Clone, Debug)]
pub struct Lowered {
    /// The unmanaged circuit.
    pub module: Module,
    /// Which HE nodes each tensor node produced, in lowering order.
    pub layers: Vec<LayerSpan>,
}

impl Lowered {
    /// Index into [`Lowered::layers`] of the layer that created HE node `v`.
    pub fn layer_of(&self, v: hecc_ir::he::ValueId) -> Option<usize> {
        let i = self.layers.partition_point(|l| l.end <= v.0);
        (i < self.layers.len()).then_some(i)
    }
}

/// Lowers `g` to an unmanaged HE module in the batch layout.
pub fn lower_batch(g: &Graph, opts: &LowerOptions) -> Result<Lowered, LowerError> {
    lower_batch_with(g, opts, true)
}

/// Like [`lower_batch`]; with `fold_affine` off, every pending affine factor is materialised
/// right after the op that produced it ([`lazy::Emitter::settle`]), which measures the depth of
/// the circuit without fusion.
pub fn lower_batch_with(
    g: &Graph,
    opts: &LowerOptions,
    fold_affine: bool,
) -> Result<Lowered, LowerError> {
    let shapes = verify(g).map_err(LowerError::Invalid)?;
    lower_batch_shaped(g, &shapes, opts, fold_affine)
}

/// [`lower_batch_with`] with the shapes of `g` already known (the result of
/// [`hecc_ir::tensor::verify`] on this same graph), so a compile that lowers several times
/// verifies once.
pub fn lower_batch_shaped(
    g: &Graph,
    shapes: &hecc_ir::tensor::verify::Shapes,
    opts: &LowerOptions,
    fold_affine: bool,
) -> Result<Lowered, LowerError> {
    if opts.batch == 0 || opts.batch > opts.slots {
        return Err(LowerError::BatchTooLarge {
            batch: opts.batch,
            slots: opts.slots,
        });
    }
    let order = g.topo_order().ok_or_else(|| LowerError::Invalid(vec![]))?;
    let mut module = Module::new(Meta {
        name: g.name.clone(),
        batch: opts.batch,
        log_scale: LogScale(opts.log_scale),
    });
    let layout = module
        .add_layout("batch", Layout::BATCH)
        .map_err(|source| LowerError::Build {
            node: "<module>".into(),
            source,
        })?;
    let mut em = Emitter::new(&mut module, LogScale(opts.log_scale));
    em.fold_affine = fold_affine;
    let mut vals: HashMap<NodeId, Vec<Elem>> = HashMap::new();
    let mut layers: Vec<LayerSpan> = Vec::new();
    for id in order {
        let Some(node) = g.node(id) else { continue };
        let name = node.name.clone();
        let build = |source: HeError| LowerError::Build {
            node: name.clone(),
            source,
        };
        let elems: Vec<&Vec<Elem>> = g
            .operand_ids(id)
            .iter()
            .filter_map(|o| vals.get(o))
            .collect();
        // Linear ops read elements as they are; every other op reads materialised values.
        let linear = matches!(
            node.op,
            Op::Conv2d { .. }
                | Op::Dense { .. }
                | Op::AvgPool { .. }
                | Op::GlobalAvgPool
                | Op::Flatten
                | Op::Reshape { .. }
                | Op::Concat { .. }
        );
        let mut ins_owned: Vec<Vec<Lazy>> = Vec::new();
        if !linear {
            for e in &elems {
                ins_owned.push(
                    e.iter()
                        .map(|x| materialize(&mut em, x))
                        .collect::<Result<_, _>>()
                        .map_err(&build)?,
                );
            }
        }
        let ins: Vec<&Vec<Lazy>> = ins_owned.iter().collect();
        let in_shape = g
            .operand_ids(id)
            .first()
            .and_then(|o| shapes.get(o))
            .cloned()
            .unwrap_or_default();
        let out_shape = shapes.get(&id).cloned().unwrap_or_default();
        let weight = |w: &str| -> Result<&Tensor, LowerError> {
            g.weights.get(w).ok_or_else(|| LowerError::MissingWeight {
                node: node.name.clone(),
                weight: w.into(),
            })
        };
        let out: Vec<Elem> = match &node.op {
            Op::Input { shape, norm } => batch_ops::input(
                &mut em,
                &node.name,
                shape,
                norm,
                (LogScale(opts.log_scale), opts.slots, layout),
            )
            .map_err(&build)?,
            Op::Conv2d {
                out_channels,
                kernel,
                stride,
                padding,
                groups,
                weight: w,
                bias,
            } => {
                let wt: Vec<f64> = weight(w)?.iter().copied().collect();
                let bs: Option<Vec<f64>> = match bias {
                    Some(b) => Some(weight(b)?.iter().copied().collect()),
                    None => None,
                };
                let conv = batch_ops::Conv {
                    out_channels: *out_channels,
                    groups: *groups,
                    kernel: *kernel,
                    stride: *stride,
                    padding: *padding,
                };
                batch_ops::conv2d(
                    &mut em,
                    elems[0],
                    [&in_shape, &out_shape],
                    &conv,
                    &wt,
                    bs.as_deref(),
                )
                .map_err(&build)?
            }
            Op::Dense {
                out_features,
                weight: w,
                bias,
            } => {
                let wt: Vec<f64> = weight(w)?.iter().copied().collect();
                let bs: Option<Vec<f64>> = match bias {
                    Some(b) => Some(weight(b)?.iter().copied().collect()),
                    None => None,
                };
                batch_ops::dense(&mut em, elems[0], *out_features, &wt, bs.as_deref())
                    .map_err(&build)?
            }
            Op::BatchNorm {
                gamma,
                beta,
                mean,
                var,
                ..
            } => {
                for w in [gamma, beta, mean, var] {
                    weight(w)?;
                }
                let (scale, shift) =
                    crate::tensor::batch_norm_affine(g, &node.op).ok_or_else(|| {
                        LowerError::BadBatchNorm {
                            node: node.name.clone(),
                        }
                    })?;
                let c = in_shape.first().copied().unwrap_or(1).max(1);
                let per_c = (in_shape.numel() / c).max(1);
                ins[0]
                    .iter()
                    .enumerate()
                    .map(|(k, x)| {
                        let ch = k / per_c;
                        let s = scale.get(ch).copied().unwrap_or(1.0);
                        let t = shift.get(ch).copied().unwrap_or(0.0);
                        Elem::L(x.affine(s, t))
                    })
                    .collect()
            }
            Op::Flatten | Op::Reshape { .. } => elems[0].clone(),
            Op::AvgPool {
                kernel,
                stride,
                padding,
            } => {
                let div = 1.0 / (kernel[0] * kernel[1]) as f64;
                pool(
                    &in_shape,
                    &out_shape,
                    *kernel,
                    *stride,
                    *padding,
                    elems[0],
                    |terms| sum_scaled(&mut em, terms, div),
                )
                .map_err(&build)?
            }
            Op::GlobalAvgPool => {
                let (c, hw) = (in_shape[0], in_shape[1] * in_shape[2]);
                let div = 1.0 / hw as f64;
                let mut v = Vec::with_capacity(c);
                for ch in 0..c {
                    let t: Vec<&Elem> = (0..hw).map(|k| &elems[0][ch * hw + k]).collect();
                    v.push(sum_scaled(&mut em, &t, div).map_err(&build)?);
                }
                v
            }
            Op::MaxPool {
                kernel,
                stride,
                padding,
            } => {
                let approx = opts.activations.require_max(&node.name)?;
                let x: Vec<Elem> = ins[0].iter().map(|&l| Elem::L(l)).collect();
                pool(
                    &in_shape,
                    &out_shape,
                    *kernel,
                    *stride,
                    *padding,
                    &x,
                    |terms| {
                        let mut layer: Vec<Lazy> = terms
                            .iter()
                            .map(|e| match e {
                                Elem::L(l) => *l,
                                Elem::Lin(_) => Lazy::constant(0.0),
                            })
                            .collect();
                        while layer.len() > 1 {
                            let mut next = Vec::with_capacity(layer.len().div_ceil(2));
                            for pair in layer.chunks(2) {
                                next.push(if pair.len() == 2 {
                                    max2(&mut em, &approx, pair[0], pair[1])?
                                } else {
                                    pair[0]
                                });
                            }
                            layer = next;
                        }
                        Ok(Elem::L(layer[0]))
                    },
                )
                .map_err(&build)?
            }
            Op::Concat { axis } => concat(
                &elems,
                &g.operand_ids(id)
                    .iter()
                    .map(|o| shapes.get(o).cloned().unwrap_or_default())
                    .collect::<Vec<_>>(),
                *axis,
            ),
            Op::Add => {
                let mut acc = ins[0].clone();
                for other in &ins[1..] {
                    for (a, b) in acc.iter_mut().zip(other.iter()) {
                        *a = em.add(*a, *b).map_err(&build)?;
                    }
                }
                acc.into_iter().map(Elem::L).collect()
            }
            Op::Scale { factor } => ins[0]
                .iter()
                .map(|x| Elem::L(x.affine(*factor, 0.0)))
                .collect(),
            Op::Square => ins[0]
                .iter()
                .map(|&x| em.quadratic(x, 1.0, 0.0, 0.0).map(Elem::L))
                .collect::<Result<_, _>>()
                .map_err(&build)?,
            Op::Poly { coeffs } => {
                let deg = coeffs.iter().rposition(|c| *c != 0.0).unwrap_or(0);
                if deg <= 2 {
                    let c = |i: usize| coeffs.get(i).copied().unwrap_or(0.0);
                    ins[0]
                        .iter()
                        .map(|&x| em.quadratic(x, c(2), c(1), c(0)).map(Elem::L))
                        .collect::<Result<_, _>>()
                        .map_err(&build)?
                } else {
                    // The polynomial itself, as a Chebyshev series on [-1, 1] (exact conversion).
                    let series = ChebSeries::interpolate(-1.0, 1.0, deg, |x| {
                        coeffs.iter().rev().fold(0.0, |a, c| a * x + c)
                    });
                    let plan = EvalPlan::for_series(&series);
                    ins[0]
                        .iter()
                        .map(|&x| run_plan(&mut em, &plan, x).map(Elem::L))
                        .collect::<Result<_, _>>()
                        .map_err(&build)?
                }
            }
            Op::Quadratic {
                granularity,
                coeffs,
            } => {
                let t: Vec<f64> = weight(coeffs)?.iter().copied().collect();
                let n = in_shape.numel();
                let c = in_shape.first().copied().unwrap_or(1).max(1);
                let per_c = n / c;
                let (stride, idx): (usize, Box<dyn Fn(usize) -> usize>) = match granularity {
                    Granularity::Layer => (1, Box::new(|_| 0)),
                    Granularity::Channel => (c, Box::new(move |k| k / per_c.max(1))),
                    Granularity::Element => (n, Box::new(|k| k)),
                };
                ins[0]
                    .iter()
                    .enumerate()
                    .map(|(k, &x)| {
                        let i = idx(k);
                        em.quadratic(x, t[i], t[stride + i], t[2 * stride + i])
                            .map(Elem::L)
                    })
                    .collect::<Result<_, _>>()
                    .map_err(&build)?
            }
            Op::Relu => {
                let approx = opts.activations.require_relu(&node.name)?;
                ins[0]
                    .iter()
                    .map(|&x| apply_approx(&mut em, &approx, x).map(Elem::L))
                    .collect::<Result<_, _>>()
                    .map_err(&build)?
            }
        };
        let out = if fold_affine {
            out
        } else {
            out.iter()
                .map(|e| {
                    let x = materialize(&mut em, e)?;
                    em.settle(x).map(Elem::L)
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(&build)?
        };
        vals.insert(id, out);
        layers.push(LayerSpan {
            name: node.name.clone(),
            op: node.op.mnemonic().to_string(),
            shape: out_shape.0.clone(),
            end: em
                .module
                .graph()
                .node_indices()
                .next_back()
                .map_or(0, |i| i.index() as u32 + 1),
        });
    }
    for &out in &g.outputs {
        let Some(node) = g.node(out) else { continue };
        let elems = vals.get(&out).cloned().unwrap_or_default();
        for (k, e) in elems.into_iter().enumerate() {
            let build = |source: HeError| LowerError::Build {
                node: node.name.clone(),
                source,
            };
            let x = materialize(&mut em, &e).map_err(&build)?;
            let Some(v) = em.materialize(x).map_err(&build)? else {
                return Err(LowerError::ConstantOutput {
                    output: node.name.clone(),
                    index: k,
                    value: x.o,
                });
            };
            em.module.output(v, &node.name, k as u32).map_err(&build)?;
        }
        if let Some(last) = layers.last_mut() {
            last.end = em
                .module
                .graph()
                .node_indices()
                .next_back()
                .map_or(0, |i| i.index() as u32 + 1);
        }
    }
    Ok(Lowered { module, layers })
}

/// `div * sum(terms)`: plain additions when the terms share their pending factor up to sign (no
/// level), else a linear combination left for the next linear layer to absorb, else a
/// multiply-accumulate.
fn sum_scaled(em: &mut Emitter<'_>, terms: &[&Elem], div: f64) -> Result<Elem, HeError> {
    let lazies: Option<Vec<Lazy>> = terms
        .iter()
        .map(|e| match e {
            Elem::L(l) => Some(*l),
            Elem::Lin(_) => None,
        })
        .collect();
    if let Some(ls) = lazies {
        // Up to rounding: a quadratic leaves a factor of +-1 only to within an ulp or two,
        // and an exact comparison would turn most poolings into multiply-accumulates folded
        // into the next layer (four times its terms after a 2x2 pooling).
        let m0 = ls.iter().find(|l| l.ct.is_some()).map(|l| l.m.abs());
        let same = ls
            .iter()
            .all(|l| l.ct.is_none() || m0.is_some_and(|m| lazy::close(l.m.abs(), m)));
        if same {
            let mut acc = Lazy::constant(0.0);
            for l in ls {
                acc = em.add(acc, l)?;
            }
            return Ok(Elem::L(acc.affine(div, 0.0)));
        }
    }
    let t: Vec<(&Elem, f64)> = terms.iter().map(|&x| (x, div)).collect();
    let (t, b) = expand(&t);
    Ok(if t.len() <= MAX_FOLDED_TERMS {
        Elem::Lin(Rc::new((t, b)))
    } else {
        Elem::L(em.mac(&t, b)?)
    })
}

/// Runs an evaluation plan on a lazy value.
pub fn run_plan(em: &mut Emitter<'_>, plan: &EvalPlan, x: Lazy) -> Result<Lazy, HeError> {
    // Powers of the input multiply its pending factor too: bring it to 1 first, for free when
    // the producer is a fresh multiply-accumulate, else with one scalar product.
    let x = em.rescale_fresh(x, x.m.abs());
    let x = if x.ct.is_some() && x.m != 1.0 {
        em.scale(x, 1.0)?
    } else {
        x
    };
    let mut regs: Vec<Lazy> = Vec::with_capacity(plan.ops.len());
    for op in &plan.ops {
        let r = match *op {
            PlanOp::Input => x,
            PlanOp::Mul(a, b) => em.mul(regs[a], regs[b])?,
            // The plan budgets a level for every scalar product, so it is applied for real:
            // folding it (and the integer factors) lazily would let the pending factor drift by
            // orders of magnitude through a high-degree plan, pushing the ciphertext's content
            // towards overflow or underflow.
            PlanOp::MulScalar(a, c) => em.scale(regs[a], c)?,
            PlanOp::MulInt(a, k) => em.scale_int(regs[a], k)?,
            PlanOp::Add(a, b) => em.add(regs[a], regs[b])?,
            PlanOp::Sub(a, b) => em.add(regs[a], regs[b].affine(-1.0, 0.0))?,
            PlanOp::AddScalar(a, c) => regs[a].affine(1.0, c),
        };
        regs.push(r);
    }
    Ok(regs.get(plan.output).copied().unwrap_or(x))
}

/// Applies an activation approximation to a lazy value.
pub fn apply_approx(em: &mut Emitter<'_>, a: &ActivationApprox, x: Lazy) -> Result<Lazy, HeError> {
    match &a.form {
        ApproxForm::Series(s) => {
            // Unit variable y = (2x - lo - hi) / (hi - lo): free on a lazy value.
            let k = 2.0 / (s.hi - s.lo);
            let y = x.affine(k, -(s.lo + s.hi) / (s.hi - s.lo));
            let unit = ChebSeries::new(-1.0, 1.0, s.coeffs.clone());
            run_plan(em, &EvalPlan::for_series(&unit), y)
        }
        ApproxForm::SignBased(cs) => {
            // t is used twice (sign input and product): normalise it once, up front.
            let t = x.affine(1.0 / a.range, 0.0);
            let t = em.rescale_fresh(t, t.m.abs());
            let mut s = t;
            for stage in &cs.stages {
                s = run_plan(em, &EvalPlan::for_series(stage), s)?;
            }
            let ts = em.mul(t, s)?;
            let sum = em.add(t, ts)?;
            Ok(sum.affine(a.range / 2.0, 0.0))
        }
    }
}

/// `max(a, b) = ((a + b) + (a - b) sign(a - b)) / 2`, using the sign-based approximation's
/// composite sign scaled to its range.
fn max2(em: &mut Emitter<'_>, a: &ActivationApprox, x: Lazy, y: Lazy) -> Result<Lazy, HeError> {
    let d = em.add(x, y.affine(-1.0, 0.0))?;
    // relu(d) + y = max(x, y)
    let r = apply_approx(em, a, d)?;
    em.add(r, y)
}

fn pool(
    in_shape: &Shape,
    out_shape: &Shape,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 4],
    x: &[Elem],
    mut f: impl FnMut(&[&Elem]) -> Result<Elem, HeError>,
) -> Result<Vec<Elem>, HeError> {
    let (c, h, w) = (in_shape[0], in_shape[1], in_shape[2]);
    let (oh, ow) = (out_shape[1], out_shape[2]);
    let mut v = Vec::with_capacity(out_shape.numel());
    for ch in 0..c {
        for y in 0..oh {
            for xx in 0..ow {
                let mut terms = Vec::with_capacity(kernel[0] * kernel[1]);
                for i in 0..kernel[0] {
                    let iy = (y * stride[0] + i) as isize - padding[0] as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    for j in 0..kernel[1] {
                        let ix = (xx * stride[1] + j) as isize - padding[1] as isize;
                        if ix < 0 || ix >= w as isize {
                            continue;
                        }
                        terms.push(&x[(ch * h + iy as usize) * w + ix as usize]);
                    }
                }
                v.push(f(&terms)?);
            }
        }
    }
    Ok(v)
}

fn concat(ins: &[&Vec<Elem>], shapes: &[Shape], axis: usize) -> Vec<Elem> {
    // Row-major: outer = product of dims before axis, inner = product after.
    let outer: usize = shapes
        .first()
        .map_or(1, |s| s[..axis.min(s.len())].iter().product());
    let mut v = Vec::new();
    for o in 0..outer {
        for (x, s) in ins.iter().zip(shapes) {
            let block: usize = s[axis.min(s.len())..].iter().product();
            v.extend_from_slice(&x[o * block..(o + 1) * block]);
        }
    }
    v
}
