//! Plaintext reference evaluator for the tensor graph, on `f64`.
//!
//! [`eval`] runs one image per graph input (tensor of the input's per-image shape) and
//! [`eval_batch`] a batch (tensors of shape `[N, ...per-image shape]`). The graph is verified
//! first; nothing panics on a bad graph or bad inputs, errors come back as [`EvalError`].
//! This is the reference semantics the passes and the encrypted runtime are checked against;
//! see [`Op`] for each op's definition. Kernels are direct loops over contiguous buffers, except
//! convolution: im2col and a matrix product per image, images in parallel (rayon).

use std::collections::HashMap;

use ndarray::IxDyn;

use super::verify::{verify, GraphError};
use super::window::Window;
use super::{Granularity, Graph, NodeId, Op, Shape, Tensor};

/// Why evaluation failed.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum EvalError {
    /// The graph does not verify.
    #[error("the graph does not verify ({} error(s))", errors.len())]
    #[diagnostic(code(hecc::eval::invalid_graph))]
    Invalid {
        /// Every verifier error.
        #[related]
        errors: Vec<GraphError>,
    },
    /// Wrong number of input tensors.
    #[error("the graph has {expected} input(s), {found} tensor(s) given")]
    #[diagnostic(code(hecc::eval::input_count))]
    InputCount {
        /// Number of graph inputs.
        expected: usize,
        /// Number of tensors given.
        found: usize,
    },
    /// A value would be too large to evaluate in memory.
    #[error(
        "node `{node}` would produce {elements} values, more than the evaluator's limit of {limit}"
    )]
    #[diagnostic(code(hecc::eval::too_large))]
    TooLarge {
        /// Node name.
        node: String,
        /// Number of values (batch x per-image elements).
        elements: usize,
        /// The limit ([`MAX_ELEMENTS`]).
        limit: usize,
    },
    /// A kernel was given buffers of inconsistent sizes (a bug in the evaluator, not in the
    /// graph: the graph verified).
    #[error("internal error evaluating `{node}`: {message}")]
    #[diagnostic(code(hecc::eval::internal))]
    Internal {
        /// Node name.
        node: String,
        /// What went wrong.
        message: String,
    },
    /// An input tensor has the wrong shape.
    #[error("input `{name}` expects shape {expected}, got {found:?}")]
    #[diagnostic(code(hecc::eval::input_shape))]
    InputShape {
        /// Input node name.
        name: String,
        /// Expected shape (per image, or `[N, ...]` for a batch).
        expected: String,
        /// The shape given.
        found: Vec<usize>,
    },
}

/// Largest number of values (batch x per-image elements) one node may produce (2^31).
pub const MAX_ELEMENTS: usize = 1 << 31;

/// A batch of values: `n` images of per-image shape `shape`, row-major.
struct Val {
    shape: Shape,
    data: Vec<f64>,
}

/// Evaluates `g` on one image per graph input; returns one tensor per graph output, each of the
/// output's per-image shape.
pub fn eval(g: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>, EvalError> {
    let batched: Vec<Tensor> = inputs
        .iter()
        .map(|t| t.clone().insert_axis(ndarray::Axis(0)))
        .collect();
    let out = eval_impl(g, &batched, false)?;
    Ok(out
        .into_iter()
        .map(|t| t.index_axis_move(ndarray::Axis(0), 0))
        .collect())
}

/// Evaluates `g` on a batch: each input tensor has shape `[N, ...per-image shape]` (same `N`
/// for all); returns `[N, ...]` tensors, one per graph output.
pub fn eval_batch(g: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>, EvalError> {
    eval_impl(g, inputs, true)
}

fn eval_impl(g: &Graph, inputs: &[Tensor], batched: bool) -> Result<Vec<Tensor>, EvalError> {
    let shapes = verify(g).map_err(|errors| EvalError::Invalid { errors })?;
    if inputs.len() != g.inputs.len() {
        return Err(EvalError::InputCount {
            expected: g.inputs.len(),
            found: inputs.len(),
        });
    }
    let n = inputs
        .first()
        .map(|t| t.shape().first().copied().unwrap_or(0));
    let n = n.unwrap_or(1);
    // Only the nodes the outputs depend on are computed (a staged evaluation asks for one
    // activation's operand at a time, with every other activation fed as an input).
    let mut needed: std::collections::HashSet<NodeId> = std::collections::HashSet::new();
    let mut stack: Vec<NodeId> = g.outputs.clone();
    while let Some(id) = stack.pop() {
        if needed.insert(id) {
            stack.extend(g.operand_ids(id));
        }
    }
    for (id, s) in shapes.iter().filter(|(id, _)| needed.contains(id)) {
        let elements = s.numel().saturating_mul(n);
        if elements > MAX_ELEMENTS {
            return Err(EvalError::TooLarge {
                node: g.node(*id).map(|x| x.name.clone()).unwrap_or_default(),
                elements,
                limit: MAX_ELEMENTS,
            });
        }
    }
    let mut vals: HashMap<NodeId, Val> = HashMap::new();
    for (&id, t) in g.inputs.iter().zip(inputs) {
        if !needed.contains(&id) {
            continue;
        }
        let (name, shape) = match g.node(id) {
            Some(node) => (
                node.name.clone(),
                shapes.get(&id).cloned().unwrap_or_default(),
            ),
            None => continue,
        };
        if t.shape().first() != Some(&n) || t.shape()[1..] != shape[..] {
            return Err(EvalError::InputShape {
                name,
                expected: if batched {
                    format!(
                        "[{n}, {}]",
                        &shape.to_string()[1..shape.to_string().len() - 1]
                    )
                } else {
                    shape.to_string()
                },
                found: if batched {
                    t.shape().to_vec()
                } else {
                    t.shape()[1..].to_vec()
                },
            });
        }
        vals.insert(
            id,
            Val {
                shape,
                data: t.iter().copied().collect(),
            },
        );
    }
    // verify() succeeded, so the order exists and every operand has a value when reached.
    let order = g.topo_order().unwrap_or_default();
    for id in order {
        if !needed.contains(&id) {
            continue;
        }
        let Some(node) = g.node(id) else { continue };
        let Some(out_shape) = shapes.get(&id).cloned() else {
            continue;
        };
        let ops: Vec<&Val> = g
            .operand_ids(id)
            .iter()
            .filter_map(|o| vals.get(o))
            .collect();
        let w = |name: &str| -> Vec<f64> {
            g.weights
                .get(name)
                .map(|t| t.iter().copied().collect())
                .unwrap_or_default()
        };
        let data = match &node.op {
            Op::Input { norm, .. } => {
                let Some(v) = vals.get(&id) else { continue };
                let c = out_shape.first().copied().unwrap_or(1);
                let inner = out_shape.numel() / c.max(1);
                let mut d = v.data.clone();
                for (e, x) in d.iter_mut().enumerate() {
                    let ch = (e % out_shape.numel()) / inner.max(1);
                    let m = norm
                        .mean
                        .get(ch)
                        .or(norm.mean.first())
                        .copied()
                        .unwrap_or(0.0);
                    let s = norm
                        .std
                        .get(ch)
                        .or(norm.std.first())
                        .copied()
                        .unwrap_or(1.0);
                    *x = (*x - m) / s;
                }
                d
            }
            Op::Conv2d {
                kernel,
                stride,
                padding,
                groups,
                weight,
                bias,
                ..
            } => conv2d(
                &node.name,
                ops[0],
                &out_shape,
                n,
                &w(weight),
                bias.as_deref().map(w).as_deref(),
                *kernel,
                *stride,
                *padding,
                *groups,
            )?,
            Op::BatchNorm {
                gamma,
                beta,
                mean,
                var,
                epsilon,
            } => {
                let (ga, be, mu, va) = (w(gamma), w(beta), w(mean), w(var));
                let c = out_shape[0];
                let inner = out_shape.numel() / c.max(1);
                let mut d = ops[0].data.clone();
                for (e, x) in d.iter_mut().enumerate() {
                    let ch = (e / inner) % c;
                    *x = ga[ch] * (*x - mu[ch]) / (va[ch] + epsilon).sqrt() + be[ch];
                }
                d
            }
            Op::Dense {
                out_features,
                weight,
                bias,
            } => {
                let wt = w(weight);
                let b = bias.as_deref().map(w);
                let fin = ops[0].shape.numel();
                let mut d = vec![0.0; n * out_features];
                for (img, out) in d.chunks_mut(*out_features).enumerate() {
                    let x = &ops[0].data[img * fin..(img + 1) * fin];
                    for (o, y) in out.iter_mut().enumerate() {
                        let row = &wt[o * fin..(o + 1) * fin];
                        let mut acc: f64 = row.iter().zip(x).map(|(a, b)| a * b).sum();
                        if let Some(b) = &b {
                            acc += b[o];
                        }
                        *y = acc;
                    }
                }
                d
            }
            Op::Flatten | Op::Reshape { .. } => ops[0].data.clone(),
            Op::AvgPool {
                kernel,
                stride,
                padding,
            } => pool(ops[0], &out_shape, n, *kernel, *stride, *padding, false),
            Op::MaxPool {
                kernel,
                stride,
                padding,
            } => pool(ops[0], &out_shape, n, *kernel, *stride, *padding, true),
            Op::GlobalAvgPool => {
                let x = ops[0];
                let inner = x.shape.numel() / x.shape[0].max(1);
                x.data
                    .chunks(inner.max(1))
                    .map(|c| c.iter().sum::<f64>() / inner as f64)
                    .collect()
            }
            Op::Concat { axis } => {
                let outer: usize = out_shape[..*axis].iter().product();
                let mut d = Vec::with_capacity(n * out_shape.numel());
                for img in 0..n {
                    for o in 0..outer {
                        for v in &ops {
                            let chunk = v.shape[*axis..].iter().product::<usize>();
                            let base = img * v.shape.numel() + o * chunk;
                            d.extend_from_slice(&v.data[base..base + chunk]);
                        }
                    }
                }
                d
            }
            Op::Add => {
                let mut d = ops[0].data.clone();
                for v in &ops[1..] {
                    for (a, b) in d.iter_mut().zip(&v.data) {
                        *a += b;
                    }
                }
                d
            }
            Op::Scale { factor } => ops[0].data.iter().map(|x| x * factor).collect(),
            Op::Relu => ops[0].data.iter().map(|x| x.max(0.0)).collect(),
            Op::Square => ops[0].data.iter().map(|x| x * x).collect(),
            Op::Poly { coeffs } => ops[0]
                .data
                .iter()
                .map(|&x| coeffs.iter().rev().fold(0.0, |acc, c| acc * x + c))
                .collect(),
            Op::Quadratic {
                granularity,
                coeffs,
            } => {
                let k = w(coeffs);
                let stride = k.len() / 3;
                let per = out_shape.numel();
                let c = out_shape.first().copied().unwrap_or(1).max(1);
                let inner = per / c;
                ops[0]
                    .data
                    .iter()
                    .enumerate()
                    .map(|(e, &x)| {
                        let e = e % per;
                        let j = match granularity {
                            Granularity::Layer => 0,
                            Granularity::Channel => e / inner.max(1),
                            Granularity::Element => e,
                        };
                        k[j] * x * x + k[stride + j] * x + k[2 * stride + j]
                    })
                    .collect()
            }
        };
        vals.insert(
            id,
            Val {
                shape: out_shape,
                data,
            },
        );
    }
    let mut outs = Vec::with_capacity(g.outputs.len());
    for o in &g.outputs {
        let Some(v) = vals.get(o) else { continue };
        let mut dims = vec![n];
        dims.extend_from_slice(&v.shape);
        // Lengths agree by construction (every kernel writes n * numel values).
        if let Ok(t) = Tensor::from_shape_vec(IxDyn(&dims), v.data.clone()) {
            outs.push(t);
        }
    }
    Ok(outs)
}

#[allow(clippy::too_many_arguments)]
/// Convolution of a batch: per image (in parallel) and per group, im2col and one matrix
/// product `W_g (Co/g x K) * col (K x OH*OW)`, then the bias.
fn conv2d(
    node: &str,
    x: &Val,
    out_shape: &Shape,
    n: usize,
    w: &[f64],
    bias: Option<&[f64]>,
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 4],
    groups: usize,
) -> Result<Vec<f64>, EvalError> {
    use ndarray::linalg::general_mat_mul;
    use ndarray::{ArrayView2, ArrayViewMut2};
    use rayon::prelude::*;

    let (c, h, wd) = (x.shape[0], x.shape[1], x.shape[2]);
    let (oc, oh, ow) = (out_shape[0], out_shape[1], out_shape[2]);
    let groups = groups.max(1);
    let (cin_g, cout_g) = (c / groups, oc / groups);
    let win = Window {
        h,
        w: wd,
        kh: kernel[0],
        kw: kernel[1],
        stride,
        pad,
        oh,
        ow,
    };
    let (k, p) = (cin_g * kernel[0] * kernel[1], win.positions());
    let (il, ol) = (c * h * wd, oc * p);
    let internal = |e: ndarray::ShapeError| EvalError::Internal {
        node: node.to_string(),
        message: e.to_string(),
    };
    let mut out = vec![0.0; n * ol];
    if il == 0 || ol == 0 {
        return Ok(out);
    }
    out.par_chunks_mut(ol)
        .zip(x.data.par_chunks(il))
        .try_for_each_init(
            || vec![0.0; if win.is_identity() { 0 } else { k * p }],
            |col, (yi, xi)| {
                for g in 0..groups {
                    let planes = &xi[g * cin_g * h * wd..][..cin_g * h * wd];
                    let colv = if win.is_identity() {
                        ArrayView2::from_shape((k, p), planes)
                    } else {
                        win.im2col(planes, cin_g, 0.0, col, p);
                        ArrayView2::from_shape((k, p), &col[..])
                    }
                    .map_err(internal)?;
                    let wg =
                        ArrayView2::from_shape((cout_g, k), &w[g * cout_g * k..][..cout_g * k])
                            .map_err(internal)?;
                    let mut yv = ArrayViewMut2::from_shape(
                        (cout_g, p),
                        &mut yi[g * cout_g * p..][..cout_g * p],
                    )
                    .map_err(internal)?;
                    general_mat_mul(1.0, &wg, &colv, 0.0, &mut yv);
                }
                if let Some(b) = bias {
                    for (plane, &bv) in yi.chunks_mut(p).zip(b) {
                        plane.iter_mut().for_each(|v| *v += bv);
                    }
                }
                Ok(())
            },
        )?;
    Ok(out)
}

fn pool(
    x: &Val,
    out_shape: &Shape,
    n: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 4],
    max: bool,
) -> Vec<f64> {
    let (c, h, wd) = (x.shape[0], x.shape[1], x.shape[2]);
    let (oh, ow) = (out_shape[1], out_shape[2]);
    let div = (kernel[0] * kernel[1]) as f64;
    let mut out = Vec::with_capacity(n * c * oh * ow);
    for plane in x.data.chunks(h * wd).take(n * c) {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = if max { f64::NEG_INFINITY } else { 0.0 };
                for ky in 0..kernel[0] {
                    let iy = (oy * stride[0] + ky) as isize - pad[0] as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    for kx in 0..kernel[1] {
                        let ix = (ox * stride[1] + kx) as isize - pad[1] as isize;
                        if ix < 0 || ix >= wd as isize {
                            continue;
                        }
                        let v = plane[iy as usize * wd + ix as usize];
                        if max {
                            acc = acc.max(v);
                        } else {
                            acc += v;
                        }
                    }
                }
                out.push(if max { acc } else { acc / div });
            }
        }
    }
    out
}
