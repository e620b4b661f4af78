//! A differentiable network built from a tensor graph, with parameters named as in the spec.
//!
//! [`Net::new`] walks a verified [`Graph`] and creates one trainable `candle` variable per weight
//! the ops reference (`conv1.weight`, `bn1.bias`, `act1.coeffs`, ...; batch-norm running
//! statistics are kept as non-trainable buffers under their spec names). [`Net::forward`]
//! computes the graph on a batch `(N, ...input shape)` with exactly the semantics of
//! [`hecc_ir::tensor::eval`]: the input node normalises `(x - mean) / std`, average pooling
//! divides by the full window (padded zeros count), quadratics are `a x^2 + b x + c` with rows
//! `[a, b, c]` at layer/channel/element granularity. In [`Mode::Train`] batch normalisation uses
//! batch statistics and updates the running ones (momentum 0.1, unbiased running variance, as
//! PyTorch does); in [`Mode::Eval`] it uses the running statistics, as the evaluator does.
//! [`Net::export`] returns the graph with its weight table filled, ready to be written as
//! safetensors and reloaded through the spec.
//!
//! Supported ops: input, conv2d (equal strides), batch_norm, dense, flatten, reshape, avg_pool
//! (equal strides), global_avg_pool, max_pool (kernel = stride, no padding, divisible sizes),
//! concat, add, scale, relu, square, poly, quadratic. Anything else is a
//! [`TrainError::Unsupported`], reported by [`Net::new`] before any training.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use candle_core::{DType, Device, Tensor, Var};
use hecc_ir::tensor::verify::Shapes;
use hecc_ir::tensor::{Granularity, Graph, GraphError, NodeId, Op, Shape, Weights};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::TrainError;

/// Whether batch normalisation uses batch statistics (and updates the running ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Training: batch statistics, running statistics updated.
    Train,
    /// Inference: running statistics, nothing updated.
    Eval,
}

/// How fresh parameters are initialised.
#[derive(Clone, Debug)]
pub struct Init {
    /// Seed of the ChaCha8 generator that draws the weights (in graph order).
    pub seed: u64,
    /// Initial `[a, b, c]` of every quadratic activation (the default `[0.2, 0.5, 0.2]` is the
    /// least-squares fit of ReLU under a standard normal input).
    pub quad: [f64; 3],
}

impl Default for Init {
    fn default() -> Self {
        Init {
            seed: 0,
            quad: [0.2, 0.5, 0.2],
        }
    }
}

/// Batch-norm momentum of the running statistics.
pub const BN_MOMENTUM: f64 = 0.1;

/// A trainable network: graph structure, parameters and batch-norm buffers.
#[derive(Debug)]
pub struct Net {
    graph: Graph,
    order: Vec<NodeId>,
    shapes: Shapes,
    params: BTreeMap<String, Var>,
    coeffs: BTreeSet<String>,
    running: BTreeMap<String, Tensor>,
    dtype: DType,
    device: Device,
}

fn unsupported(node: &str, op: &Op, message: impl Into<String>) -> TrainError {
    TrainError::Unsupported {
        node: node.to_string(),
        op: op.mnemonic().to_string(),
        message: message.into(),
    }
}

/// The weights an op reads with their expected shapes, and whether each is trainable
/// (`false` for batch-norm running statistics) and an activation coefficient tensor.
fn weight_specs(op: &Op, input: &Shape) -> Vec<(String, Vec<usize>, bool, bool)> {
    match op {
        Op::Conv2d {
            out_channels,
            kernel,
            groups,
            weight,
            bias,
            ..
        } => {
            let cin = input.first().copied().unwrap_or(1) / (*groups).max(1);
            let mut v = vec![(
                weight.clone(),
                vec![*out_channels, cin, kernel[0], kernel[1]],
                true,
                false,
            )];
            if let Some(b) = bias {
                v.push((b.clone(), vec![*out_channels], true, false));
            }
            v
        }
        Op::Dense {
            out_features,
            weight,
            bias,
        } => {
            let fin = input.first().copied().unwrap_or(1);
            let mut v = vec![(weight.clone(), vec![*out_features, fin], true, false)];
            if let Some(b) = bias {
                v.push((b.clone(), vec![*out_features], true, false));
            }
            v
        }
        Op::BatchNorm {
            gamma,
            beta,
            mean,
            var,
            ..
        } => {
            let c = vec![input.first().copied().unwrap_or(1)];
            vec![
                (gamma.clone(), c.clone(), true, false),
                (beta.clone(), c.clone(), true, false),
                (mean.clone(), c.clone(), false, false),
                (var.clone(), c, false, false),
            ]
        }
        Op::Quadratic {
            granularity,
            coeffs,
        } => vec![(coeffs.clone(), granularity.coeff_shape(input).0, true, true)],
        _ => Vec::new(),
    }
}

fn fan_in(op: &Op, input: &Shape) -> usize {
    match op {
        Op::Conv2d { kernel, groups, .. } => {
            input.first().copied().unwrap_or(1) / (*groups).max(1) * kernel[0] * kernel[1]
        }
        _ => input.first().copied().unwrap_or(1),
    }
    .max(1)
}

impl Net {
    /// Builds a network from a verified graph. Weights present in `graph.weights` (with the
    /// right shape) are used as initial values; the others are drawn: conv/dense weights and
    /// biases uniform in `±1/sqrt(fan_in)` (PyTorch's default), batch-norm `gamma = 1`,
    /// `beta = 0`, running mean 0 and variance 1, quadratic coefficients `init.quad`.
    pub fn new(graph: Graph, init: &Init, dtype: DType) -> Result<Net, TrainError> {
        // Weights may be absent (they are created here): every other verifier error counts.
        let (shapes, errs) = hecc_ir::tensor::verify::analyze(&graph);
        let errs: Vec<String> = errs
            .iter()
            .filter(|e| !matches!(e, GraphError::MissingWeight { .. }))
            .map(|e| e.to_string())
            .collect();
        if !errs.is_empty() {
            return Err(TrainError::Graph(errs.join("; ")));
        }
        let order = graph
            .topo_order()
            .ok_or_else(|| TrainError::Graph("the graph has a cycle".into()))?;
        if graph.inputs.len() != 1 {
            return Err(TrainError::Graph(format!(
                "the trainer needs exactly one input, the graph has {}",
                graph.inputs.len()
            )));
        }
        let out = *graph
            .outputs
            .first()
            .ok_or_else(|| TrainError::Graph("the graph has no output".into()))?;
        match shapes.get(&out) {
            Some(s) if s.len() == 1 => {}
            s => {
                return Err(TrainError::Graph(format!(
                    "the first output must be a vector of class scores, its shape is {s:?}"
                )))
            }
        }
        let device = Device::Cpu;
        let mut rng = ChaCha8Rng::seed_from_u64(init.seed);
        let mut params = BTreeMap::new();
        let mut coeffs = BTreeSet::new();
        let mut running = BTreeMap::new();
        for &id in &order {
            let node = graph
                .node(id)
                .ok_or_else(|| TrainError::Graph(format!("missing node {id}")))?;
            check_supported(&node.name, &node.op, &graph, id, &shapes)?;
            let input = graph
                .operand_ids(id)
                .first()
                .and_then(|i| shapes.get(i))
                .cloned()
                .unwrap_or_else(|| Shape(Vec::new()));
            for (name, shape, trainable, is_coeff) in weight_specs(&node.op, &input) {
                if params.contains_key(&name) || running.contains_key(&name) {
                    continue;
                }
                let numel: usize = shape.iter().product();
                let given = graph.weights.get(&name);
                let values: Vec<f64> = match given {
                    Some(t) if t.shape() == shape.as_slice() => t.iter().copied().collect(),
                    Some(t) => {
                        return Err(TrainError::Weight {
                            name,
                            message: format!("shape {:?}, expected {shape:?}", t.shape()),
                        })
                    }
                    None => match &node.op {
                        Op::Conv2d { .. } | Op::Dense { .. } => {
                            let bound = 1.0 / (fan_in(&node.op, &input) as f64).sqrt();
                            (0..numel).map(|_| rng.gen_range(-bound..bound)).collect()
                        }
                        Op::BatchNorm { gamma, var, .. } => {
                            let one = name == *gamma || name == *var;
                            vec![if one { 1.0 } else { 0.0 }; numel]
                        }
                        Op::Quadratic { .. } => {
                            let per = numel / 3;
                            (0..numel).map(|i| init.quad[i / per.max(1)]).collect()
                        }
                        _ => vec![0.0; numel],
                    },
                };
                let t = Tensor::from_vec(values, shape.clone(), &device)?.to_dtype(dtype)?;
                if trainable {
                    if is_coeff {
                        coeffs.insert(name.clone());
                    }
                    params.insert(name, Var::from_tensor(&t)?);
                } else {
                    running.insert(name, t);
                }
            }
        }
        Ok(Net {
            graph,
            order,
            shapes,
            params,
            coeffs,
            running,
            dtype,
            device,
        })
    }

    /// The graph the network computes (its weight table is the one it was built from; use
    /// [`Net::export`] for the trained weights).
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The trainable parameters by weight name.
    pub fn params(&self) -> &BTreeMap<String, Var> {
        &self.params
    }

    /// True if `name` is an activation-coefficient tensor (a quadratic's `coeffs`).
    pub fn is_coeff(&self, name: &str) -> bool {
        self.coeffs.contains(name)
    }

    /// The element type of the parameters and activations.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device (always the CPU).
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Overwrites the parameter or running statistic `name` with `values` (same shape).
    pub fn set_weight(&mut self, name: &str, values: &Tensor) -> Result<(), TrainError> {
        let v = values.to_dtype(self.dtype)?;
        if let Some(p) = self.params.get(name) {
            if p.shape() != v.shape() {
                return Err(TrainError::Weight {
                    name: name.into(),
                    message: format!("shape {:?}, expected {:?}", v.dims(), p.dims()),
                });
            }
            p.set(&v)?;
            Ok(())
        } else if let Some(r) = self.running.get_mut(name) {
            if r.shape() != v.shape() {
                return Err(TrainError::Weight {
                    name: name.into(),
                    message: format!("shape {:?}, expected {:?}", v.dims(), r.dims()),
                });
            }
            *r = v;
            Ok(())
        } else {
            Err(TrainError::Weight {
                name: name.into(),
                message: "the network has no such weight".into(),
            })
        }
    }

    /// A copy of this network with every parameter and buffer converted to `dtype` (used to
    /// evaluate an `f32`-trained network in `f64`, as the reference evaluator does).
    pub fn to_dtype(&self, dtype: DType) -> Result<Net, TrainError> {
        let mut params = BTreeMap::new();
        for (k, v) in &self.params {
            params.insert(
                k.clone(),
                Var::from_tensor(&v.as_tensor().to_dtype(dtype)?)?,
            );
        }
        let mut running = BTreeMap::new();
        for (k, v) in &self.running {
            running.insert(k.clone(), v.to_dtype(dtype)?);
        }
        Ok(Net {
            graph: self.graph.clone(),
            order: self.order.clone(),
            shapes: self.shapes.clone(),
            params,
            coeffs: self.coeffs.clone(),
            running,
            dtype,
            device: self.device.clone(),
        })
    }

    /// The graph with its weight table replaced by the current parameters and running
    /// statistics (as `f64`), under the spec's names.
    pub fn export(&self) -> Result<Graph, TrainError> {
        let mut weights = Weights::new();
        let all = self
            .params
            .iter()
            .map(|(k, v)| (k, v.as_tensor()))
            .chain(self.running.iter());
        for (k, t) in all {
            let vals = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            let arr = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(t.dims()), vals)
                .map_err(|e| TrainError::Backend(e.to_string()))?;
            weights.insert(k.clone(), arr);
        }
        let mut g = self.graph.clone();
        g.weights = weights;
        Ok(g)
    }

    fn param(&self, name: &str) -> Result<&Tensor, TrainError> {
        self.params
            .get(name)
            .map(|v| v.as_tensor())
            .ok_or_else(|| TrainError::Weight {
                name: name.into(),
                message: "missing parameter".into(),
            })
    }

    fn buffer(&self, name: &str) -> Result<&Tensor, TrainError> {
        self.running.get(name).ok_or_else(|| TrainError::Weight {
            name: name.into(),
            message: "missing running statistic".into(),
        })
    }

    /// Computes the first graph output (class scores, `(N, K)`) for a raw input batch
    /// `(N, ...input shape)`.
    pub fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor, TrainError> {
        let n = x.dim(0)?;
        let x = x.to_dtype(self.dtype)?;
        let mut vals: HashMap<NodeId, Tensor> = HashMap::new();
        let mut updates: Vec<(String, Tensor)> = Vec::new();
        let order = self.order.clone();
        for id in order {
            let node = self
                .graph
                .node(id)
                .ok_or_else(|| TrainError::Graph(format!("missing node {id}")))?;
            let ops: Vec<&Tensor> = self
                .graph
                .operand_ids(id)
                .iter()
                .map(|o| {
                    vals.get(o)
                        .ok_or_else(|| TrainError::Graph(format!("operand {o} not computed")))
                })
                .collect::<Result<_, _>>()?;
            let out_shape = self
                .shapes
                .get(&id)
                .ok_or_else(|| TrainError::Graph(format!("no shape for {id}")))?;
            let y = match &node.op {
                Op::Input { shape, norm } => {
                    let mut want = vec![n];
                    want.extend_from_slice(shape);
                    if x.dims() != want.as_slice() {
                        return Err(TrainError::Graph(format!(
                            "input batch has shape {:?}, expected {want:?}",
                            x.dims()
                        )));
                    }
                    if norm.is_identity() {
                        x.clone()
                    } else {
                        let bshape = channel_bshape(shape.len() + 1, norm.mean.len());
                        let m = Tensor::from_vec(norm.mean.clone(), bshape.clone(), &self.device)?
                            .to_dtype(self.dtype)?;
                        let s = Tensor::from_vec(norm.std.clone(), bshape, &self.device)?
                            .to_dtype(self.dtype)?;
                        x.broadcast_sub(&m)?.broadcast_div(&s)?
                    }
                }
                Op::Conv2d {
                    out_channels,
                    stride,
                    padding,
                    groups,
                    weight,
                    bias,
                    ..
                } => {
                    let (xin, p) = pad_input(ops[0], padding)?;
                    let mut y = xin.conv2d(self.param(weight)?, p, stride[0], 1, *groups)?;
                    if let Some(b) = bias {
                        y =
                            y.broadcast_add(&self.param(b)?.reshape((1, *out_channels, 1, 1))?)?;
                    }
                    y
                }
                Op::BatchNorm {
                    gamma,
                    beta,
                    mean,
                    var,
                    epsilon,
                } => {
                    let xin = ops[0];
                    let c = xin.dim(1)?;
                    let inner = xin.elem_count() / (n * c).max(1);
                    let x3 = xin.reshape((n, c, inner))?;
                    let (mu, va) = match mode {
                        Mode::Train => {
                            let mu = x3.mean_keepdim(2)?.mean_keepdim(0)?;
                            let d = x3.broadcast_sub(&mu)?;
                            let va = d.sqr()?.mean_keepdim(2)?.mean_keepdim(0)?;
                            let count = (n * inner) as f64;
                            let unbiased = if count > 1.0 {
                                count / (count - 1.0)
                            } else {
                                1.0
                            };
                            let rm = self.buffer(mean)?;
                            let rv = self.buffer(var)?;
                            let new_m = ((rm * (1.0 - BN_MOMENTUM))?
                                + (mu.detach().flatten_all()? * BN_MOMENTUM)?)?;
                            let new_v = ((rv * (1.0 - BN_MOMENTUM))?
                                + (va.detach().flatten_all()? * (BN_MOMENTUM * unbiased))?)?;
                            updates.push((mean.clone(), new_m));
                            updates.push((var.clone(), new_v));
                            (mu, va)
                        }
                        Mode::Eval => (
                            self.buffer(mean)?.reshape((1, c, 1))?,
                            self.buffer(var)?.reshape((1, c, 1))?,
                        ),
                    };
                    let g = self.param(gamma)?.reshape((1, c, 1))?;
                    let b = self.param(beta)?.reshape((1, c, 1))?;
                    let inv = (va + *epsilon)?.sqrt()?.recip()?;
                    let y = x3
                        .broadcast_sub(&mu)?
                        .broadcast_mul(&inv)?
                        .broadcast_mul(&g)?
                        .broadcast_add(&b)?;
                    y.reshape(xin.dims())?
                }
                Op::Dense { weight, bias, .. } => {
                    let mut y = ops[0].matmul(&self.param(weight)?.t()?)?;
                    if let Some(b) = bias {
                        y = y.broadcast_add(self.param(b)?)?;
                    }
                    y
                }
                Op::Flatten | Op::Reshape { .. } => {
                    let mut s = vec![n];
                    s.extend_from_slice(out_shape);
                    ops[0].reshape(s)?
                }
                Op::AvgPool {
                    kernel,
                    stride,
                    padding,
                } => {
                    let xin = ops[0];
                    let (_, c, _, _) = xin.dims4()?;
                    let xp = xin
                        .pad_with_zeros(2, padding[0], padding[2])?
                        .pad_with_zeros(3, padding[1], padding[3])?;
                    let (_, _, hp, wp) = xp.dims4()?;
                    let k = Tensor::ones((1, 1, kernel[0], kernel[1]), self.dtype, &self.device)?
                        .affine(1.0 / (kernel[0] * kernel[1]) as f64, 0.0)?;
                    let y = xp
                        .reshape((n * c, 1, hp, wp))?
                        .conv2d(&k, 0, stride[0], 1, 1)?;
                    y.reshape((n, c, out_shape[1], out_shape[2]))?
                }
                Op::GlobalAvgPool => ops[0].flatten_from(2)?.mean(2)?,
                Op::MaxPool { kernel, stride, .. } => {
                    ops[0].max_pool2d_with_stride((kernel[0], kernel[1]), (stride[0], stride[1]))?
                }
                Op::Concat { axis } => Tensor::cat(&ops, axis + 1)?,
                Op::Add => {
                    let mut acc = ops[0].clone();
                    for o in &ops[1..] {
                        acc = (acc + *o)?;
                    }
                    acc
                }
                Op::Scale { factor } => ops[0].affine(*factor, 0.0)?,
                Op::Relu => ops[0].relu()?,
                Op::Square => ops[0].sqr()?,
                Op::Poly { coeffs } => {
                    let xin = ops[0];
                    match coeffs.split_last() {
                        None => xin.zeros_like()?,
                        Some((&last, rest)) => {
                            let mut acc = xin.ones_like()?.affine(last, 0.0)?;
                            for &c in rest.iter().rev() {
                                acc = (acc * xin)?.affine(1.0, c)?;
                            }
                            acc
                        }
                    }
                }
                Op::Quadratic {
                    granularity,
                    coeffs,
                } => {
                    let xin = ops[0];
                    let q = self.param(coeffs)?;
                    let rank = xin.rank();
                    let bshape: Vec<usize> = match granularity {
                        Granularity::Layer => vec![1; rank],
                        Granularity::Channel => channel_bshape(rank, xin.dim(1)?),
                        Granularity::Element => {
                            let mut s = vec![1];
                            s.extend_from_slice(&xin.dims()[1..]);
                            s
                        }
                    };
                    let a = q.get(0)?.reshape(bshape.clone())?;
                    let b = q.get(1)?.reshape(bshape.clone())?;
                    let c = q.get(2)?.reshape(bshape)?;
                    xin.sqr()?
                        .broadcast_mul(&a)?
                        .add(&xin.broadcast_mul(&b)?)?
                        .broadcast_add(&c)?
                }
            };
            vals.insert(id, y);
        }
        for (k, v) in updates {
            self.running.insert(k, v);
        }
        let out = self.graph.outputs[0];
        vals.remove(&out)
            .ok_or_else(|| TrainError::Graph("output not computed".into()))
    }
}

/// `[1, C, 1, ...]` of the given rank (or all ones when `c == 1`, a scalar broadcast).
fn channel_bshape(rank: usize, c: usize) -> Vec<usize> {
    let mut s = vec![1; rank];
    if rank > 1 {
        s[1] = c;
    }
    s
}

/// Applies `[top, left, bottom, right]` zero padding: symmetric padding is passed to the
/// convolution, the rest is padded explicitly.
fn pad_input(x: &Tensor, p: &[usize; 4]) -> Result<(Tensor, usize), TrainError> {
    if p.iter().all(|&v| v == p[0]) {
        return Ok((x.clone(), p[0]));
    }
    let x = x
        .pad_with_zeros(2, p[0], p[2])?
        .pad_with_zeros(3, p[1], p[3])?;
    Ok((x, 0))
}

/// Rejects ops and attributes the trainer cannot differentiate exactly like the evaluator.
fn check_supported(
    name: &str,
    op: &Op,
    g: &Graph,
    id: NodeId,
    shapes: &Shapes,
) -> Result<(), TrainError> {
    let input = g
        .operand_ids(id)
        .first()
        .and_then(|i| shapes.get(i))
        .cloned();
    match op {
        Op::Conv2d { stride, .. } | Op::AvgPool { stride, .. } if stride[0] != stride[1] => Err(
            unsupported(name, op, "different vertical and horizontal strides"),
        ),
        Op::MaxPool {
            kernel,
            stride,
            padding,
        } => {
            let divisible = input
                .as_ref()
                .is_some_and(|s| s.len() == 3 && s[1] % kernel[0] == 0 && s[2] % kernel[1] == 0);
            if kernel != stride || padding.iter().any(|&p| p != 0) || !divisible {
                Err(unsupported(
                    name,
                    op,
                    "only max pooling with stride = kernel, no padding and divisible sizes",
                ))
            } else {
                Ok(())
            }
        }
        Op::AvgPool { .. } | Op::Conv2d { .. } if input.as_ref().is_some_and(|s| s.len() != 3) => {
            Err(unsupported(name, op, "input must be [C, H, W]"))
        }
        _ => Ok(()),
    }
}

/// The teacher network of a spec: every non-linear activation (`square`, `poly`, `quadratic`)
/// replaced by `relu`. Weights of removed coefficient tensors are dropped.
pub fn with_relu(g: &Graph) -> Graph {
    let mut out = g.clone();
    let ids: Vec<NodeId> = out.node_ids().collect();
    let mut dropped = Vec::new();
    for id in ids {
        if let Some(node) = out.node_mut(id) {
            if let Op::Quadratic { coeffs, .. } = &node.op {
                dropped.push(coeffs.clone());
            }
            if node.op.is_activation() {
                node.op = Op::Relu;
            }
        }
    }
    for c in dropped {
        out.weights.remove(&c);
    }
    out
}

/// The student network for `--granularity`: every `relu` and every `quadratic` becomes a
/// quadratic of granularity `gr` (coefficients `<node>.coeffs` for former relus, the existing
/// name otherwise; old coefficient values are dropped since their shape changes). `square` and
/// `poly` are kept.
pub fn with_granularity(g: &Graph, gr: Granularity) -> Graph {
    let mut out = g.clone();
    let ids: Vec<NodeId> = out.node_ids().collect();
    let mut dropped = Vec::new();
    for id in ids {
        if let Some(node) = out.node_mut(id) {
            let name = match &node.op {
                Op::Relu => format!("{}.coeffs", node.name),
                Op::Quadratic { coeffs, .. } => coeffs.clone(),
                _ => continue,
            };
            node.op = Op::Quadratic {
                granularity: gr,
                coeffs: name.clone(),
            };
            dropped.push(name);
        }
    }
    for c in dropped {
        out.weights.remove(&c);
    }
    out
}
