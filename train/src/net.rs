//! A differentiable network built from a tensor graph, with parameters named as in the spec.
//!
//! [`Net::new`] walks a verified [`Graph`] and creates one trainable parameter per weight the
//! ops reference (`conv1.weight`, `bn1.bias`, `act1.coeffs`, ...; batch-norm running
//! statistics are kept as non-trainable buffers under their spec names). [`Net::forward`]
//! computes the graph on a batch `(N, ...input shape)`, keeping every value on a [`Tape`], and
//! [`Net::backward`] returns the gradient of every parameter (reverse mode over the graph,
//! hand-written per op; kernels in [`crate::kernels`]). The forward pass has exactly the
//! semantics of
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

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use hecc_ir::tensor::verify::Shapes;
use hecc_ir::tensor::window::Window;
use hecc_ir::tensor::{Granularity, Graph, GraphError, NodeId, Op, Shape, Weights};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::kernels::{
    avg_pool_backward, avg_pool_forward, dense_backward, dense_forward, max_pool_forward, Conv,
    Real,
};
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

/// A parameter or buffer: shape and values (row-major).
#[derive(Clone, Debug, PartialEq)]
pub struct Param<F> {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<F>,
}

/// Gradients by parameter name (same layout as the parameter).
pub type Grads<F> = BTreeMap<String, Vec<F>>;

/// One node of the graph in evaluation order, with what its kernels need.
#[derive(Clone, Debug)]
struct Step {
    name: String,
    op: Op,
    /// Step indices of the operands.
    inputs: Vec<usize>,
    /// Per-image shape of the first operand (empty for the input node).
    in_shape: Vec<usize>,
    /// Per-image shape of the result.
    out_shape: Vec<usize>,
    /// Convolution or pooling geometry.
    geom: Option<Conv>,
    /// Last step that reads this step's value.
    last_use: usize,
}

impl Step {
    fn out_len(&self) -> usize {
        self.out_shape.iter().product()
    }
    fn in_len(&self) -> usize {
        self.in_shape.iter().product()
    }
}

/// What a node's backward pass needs besides the values.
#[derive(Clone, Debug)]
enum Aux<F> {
    None,
    /// Batch norm: normalised input and `1 / sqrt(var + eps)` per channel.
    Bn {
        xhat: Vec<F>,
        inv: Vec<F>,
    },
    /// Max pooling: flat input index of every output.
    Max(Vec<usize>),
}

/// A forward pass over a batch: every node's value (kept for the backward pass).
#[derive(Debug)]
pub struct Tape<F> {
    n: usize,
    mode: Mode,
    vals: Vec<Vec<F>>,
    aux: Vec<Aux<F>>,
    out: usize,
    classes: usize,
}

impl<F: Real> Tape<F> {
    /// Class scores, `(N, K)` row-major.
    pub fn logits(&self) -> &[F] {
        &self.vals[self.out]
    }
    /// Number of classes `K`.
    pub fn classes(&self) -> usize {
        self.classes
    }
    /// Batch size `N`.
    pub fn batch(&self) -> usize {
        self.n
    }
    /// Predicted class of every image (first maximum).
    pub fn argmax(&self) -> Vec<usize> {
        argmax_rows(self.logits(), self.classes)
    }
}

/// Index of the first maximum of every row of `k` values.
pub fn argmax_rows<F: Real>(z: &[F], k: usize) -> Vec<usize> {
    z.chunks(k.max(1))
        .map(|r| {
            let mut best = 0;
            for (i, v) in r.iter().enumerate() {
                if *v > r[best] {
                    best = i;
                }
            }
            best
        })
        .collect()
}

/// A trainable network: graph structure, parameters and batch-norm buffers.
#[derive(Debug)]
pub struct Net<F> {
    graph: Graph,
    steps: Vec<Step>,
    out: usize,
    params: BTreeMap<String, Param<F>>,
    coeffs: BTreeSet<String>,
    running: BTreeMap<String, Param<F>>,
    /// Buffers of earlier passes, reused so that a training step does not page in fresh
    /// memory for every value.
    spare: RefCell<Vec<Vec<F>>>,
}

impl<F: Clone> Clone for Net<F> {
    /// A copy of the structure, parameters and statistics; the spare buffers are not copied
    /// (a best-epoch snapshot must not hold a second pool).
    fn clone(&self) -> Self {
        Net {
            graph: self.graph.clone(),
            steps: self.steps.clone(),
            out: self.out,
            params: self.params.clone(),
            coeffs: self.coeffs.clone(),
            running: self.running.clone(),
            spare: RefCell::new(Vec::new()),
        }
    }
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

impl<F: Real> Net<F> {
    /// Builds a network from a verified graph. Weights present in `graph.weights` (with the
    /// right shape) are used as initial values; the others are drawn: conv/dense weights and
    /// biases uniform in `±1/sqrt(fan_in)` (PyTorch's default), batch-norm `gamma = 1`,
    /// `beta = 0`, running mean 0 and variance 1, quadratic coefficients `init.quad`.
    pub fn new(graph: Graph, init: &Init) -> Result<Net<F>, TrainError> {
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
        let out_id = *graph
            .outputs
            .first()
            .ok_or_else(|| TrainError::Graph("the graph has no output".into()))?;
        match shapes.get(&out_id) {
            Some(s) if s.len() == 1 => {}
            s => {
                return Err(TrainError::Graph(format!(
                    "the first output must be a vector of class scores, its shape is {s:?}"
                )))
            }
        }
        let mut rng = ChaCha8Rng::seed_from_u64(init.seed);
        let mut params = BTreeMap::new();
        let mut coeffs = BTreeSet::new();
        let mut running = BTreeMap::new();
        let mut steps: Vec<Step> = Vec::with_capacity(order.len());
        let mut pos: HashMap<NodeId, usize> = HashMap::new();
        for &id in &order {
            let node = graph
                .node(id)
                .ok_or_else(|| TrainError::Graph(format!("missing node {id}")))?;
            check_supported(&node.name, &node.op, &graph, id, &shapes)?;
            let operands = graph.operand_ids(id);
            let input = operands
                .first()
                .and_then(|i| shapes.get(i))
                .cloned()
                .unwrap_or_else(|| Shape(Vec::new()));
            let out_shape = shapes
                .get(&id)
                .ok_or_else(|| TrainError::Graph(format!("no shape for {}", node.name)))?
                .0
                .clone();
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
                if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
                    return Err(TrainError::Weight {
                        name,
                        message: format!("holds the non-finite value {bad}"),
                    });
                }
                let p = Param {
                    shape: shape.clone(),
                    data: values.into_iter().map(F::of).collect(),
                };
                if trainable {
                    if is_coeff {
                        coeffs.insert(name.clone());
                    }
                    params.insert(name, p);
                } else {
                    running.insert(name, p);
                }
            }
            let inputs = operands
                .iter()
                .map(|o| {
                    pos.get(o)
                        .copied()
                        .ok_or_else(|| TrainError::Graph(format!("operand {o} out of order")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let geom = geometry(&node.op, &input, &out_shape);
            pos.insert(id, steps.len());
            for &i in &inputs {
                steps[i].last_use = steps.len();
            }
            steps.push(Step {
                name: node.name.clone(),
                op: node.op.clone(),
                inputs,
                in_shape: input.0.clone(),
                out_shape,
                geom,
                last_use: 0,
            });
        }
        let out = *pos
            .get(&out_id)
            .ok_or_else(|| TrainError::Graph("the output is not computed".into()))?;
        steps[out].last_use = usize::MAX;
        Ok(Net {
            graph,
            steps,
            out,
            params,
            coeffs,
            running,
            spare: RefCell::new(Vec::new()),
        })
    }

    /// A buffer of `len` values, reusing the smallest spare one that fits. Its contents are
    /// unspecified (values of an earlier pass): every caller overwrites all of it, except
    /// where [`Net::take_zeroed`] is used.
    fn take(&self, len: usize) -> Vec<F> {
        let mut pool = self.spare.borrow_mut();
        let best = pool
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        let mut v = match best {
            Some(i) => pool.swap_remove(i),
            None => Vec::with_capacity(len),
        };
        v.truncate(len);
        v.resize(len, F::zero());
        v
    }

    /// A buffer of `len` zeros.
    fn take_zeroed(&self, len: usize) -> Vec<F> {
        let mut v = self.take(len);
        v.fill(F::zero());
        v
    }

    /// Returns a buffer for reuse (the pool holds a few per node at most).
    fn give(&self, v: Vec<F>) {
        let mut pool = self.spare.borrow_mut();
        if v.capacity() > 0 && pool.len() < 3 * self.steps.len() + 8 {
            pool.push(v);
        }
    }

    /// Hands a tape's buffers back for the next pass.
    pub fn recycle(&self, tape: Tape<F>) {
        for v in tape.vals {
            self.give(v);
        }
        for a in tape.aux {
            if let Aux::Bn { xhat, .. } = a {
                self.give(xhat);
            }
        }
    }

    /// The graph the network computes (its weight table is the one it was built from; use
    /// [`Net::export`] for the trained weights).
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The trainable parameters by weight name.
    pub fn params(&self) -> &BTreeMap<String, Param<F>> {
        &self.params
    }

    /// Mutable access to the trainable parameters (the optimiser's).
    pub fn params_mut(&mut self) -> &mut BTreeMap<String, Param<F>> {
        &mut self.params
    }

    /// True if `name` is an activation-coefficient tensor (a quadratic's `coeffs`).
    pub fn is_coeff(&self, name: &str) -> bool {
        self.coeffs.contains(name)
    }

    /// Number of classes of the output.
    pub fn classes(&self) -> usize {
        self.steps[self.out].out_len()
    }

    /// Overwrites the parameter or running statistic `name` with `values` (same length).
    pub fn set_weight(&mut self, name: &str, values: &[F]) -> Result<(), TrainError> {
        let p = match self.params.get_mut(name) {
            Some(p) => p,
            None => self
                .running
                .get_mut(name)
                .ok_or_else(|| TrainError::Weight {
                    name: name.into(),
                    message: "the network has no such weight".into(),
                })?,
        };
        if p.data.len() != values.len() {
            return Err(TrainError::Weight {
                name: name.into(),
                message: format!("{} values, expected {:?}", values.len(), p.shape),
            });
        }
        p.data.copy_from_slice(values);
        Ok(())
    }

    /// A copy of this network computing in `G` (used to evaluate an `f32`-trained network in
    /// `f64`, as the reference evaluator does, and to round `f64` values to `f32`).
    pub fn to_precision<G: Real>(&self) -> Net<G> {
        let conv = |m: &BTreeMap<String, Param<F>>| {
            m.iter()
                .map(|(k, p)| {
                    let data = p.data.iter().map(|v| G::of(v.f64())).collect();
                    (
                        k.clone(),
                        Param {
                            shape: p.shape.clone(),
                            data,
                        },
                    )
                })
                .collect()
        };
        Net {
            graph: self.graph.clone(),
            steps: self.steps.clone(),
            out: self.out,
            params: conv(&self.params),
            coeffs: self.coeffs.clone(),
            running: conv(&self.running),
            spare: RefCell::new(Vec::new()),
        }
    }

    /// The graph with its weight table replaced by the current parameters and running
    /// statistics (as `f64`), under the spec's names.
    pub fn export(&self) -> Result<Graph, TrainError> {
        let mut weights = Weights::new();
        for (k, p) in self.params.iter().chain(self.running.iter()) {
            let vals: Vec<f64> = p.data.iter().map(|v| v.f64()).collect();
            let arr = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&p.shape), vals)
                .map_err(|e| TrainError::Backend(e.to_string()))?;
            weights.insert(k.clone(), arr);
        }
        let mut g = self.graph.clone();
        g.weights = weights;
        Ok(g)
    }

    fn param(&self, name: &str) -> Result<&[F], TrainError> {
        lookup(&self.params, name, "missing parameter")
    }

    fn buffer(&self, name: &str) -> Result<&[F], TrainError> {
        lookup(&self.running, name, "missing running statistic")
    }

    /// Runs the graph on a raw input batch (`n` images, row-major `(N, ...input shape)`) and
    /// keeps every value for [`Net::backward`]. In [`Mode::Train`] batch normalisation uses
    /// batch statistics and updates the running ones.
    pub fn forward(&mut self, x: &[F], n: usize, mode: Mode) -> Result<Tape<F>, TrainError> {
        self.run(x, n, mode, true)
    }

    /// Class scores `(N, K)` of a batch in inference mode, without keeping the values.
    pub fn logits(&mut self, x: &[F], n: usize) -> Result<Vec<F>, TrainError> {
        let mut t = self.run(x, n, Mode::Eval, false)?;
        Ok(std::mem::take(&mut t.vals[t.out]))
    }

    fn run(&mut self, x: &[F], n: usize, mode: Mode, keep: bool) -> Result<Tape<F>, TrainError> {
        let mut vals: Vec<Vec<F>> = Vec::with_capacity(self.steps.len());
        let mut aux: Vec<Aux<F>> = Vec::with_capacity(self.steps.len());
        let mut updates: Vec<(String, Vec<F>)> = Vec::new();
        for (si, st) in self.steps.iter().enumerate() {
            let y = self.take(n * st.out_len());
            let (y, a) = self.step_forward(st, &vals, x, n, mode, keep, y, &mut updates)?;
            vals.push(y);
            aux.push(a);
            if !keep {
                for &i in &st.inputs {
                    if self.steps[i].last_use == si {
                        let v = std::mem::take(&mut vals[i]);
                        self.give(v);
                    }
                }
            }
        }
        for (k, v) in updates {
            if let Some(p) = self.running.get_mut(&k) {
                p.data = v;
            }
        }
        Ok(Tape {
            n,
            mode,
            vals,
            aux,
            out: self.out,
            classes: self.classes(),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn step_forward(
        &self,
        st: &Step,
        vals: &[Vec<F>],
        x: &[F],
        n: usize,
        mode: Mode,
        keep: bool,
        mut y: Vec<F>,
        updates: &mut Vec<(String, Vec<F>)>,
    ) -> Result<(Vec<F>, Aux<F>), TrainError> {
        let ol = st.out_len();
        let arg = |k: usize| -> &[F] { &vals[st.inputs[k]] };
        let geom = || {
            st.geom
                .ok_or_else(|| TrainError::Graph(format!("{}: no geometry", st.name)))
        };
        let mut aux = Aux::None;
        match &st.op {
            Op::Input { norm, .. } => {
                if x.len() != n * ol {
                    return Err(TrainError::Graph(format!(
                        "input batch has {} values, expected {n} images of shape {:?}",
                        x.len(),
                        st.out_shape
                    )));
                }
                let groups = norm.mean.len().max(norm.std.len()).max(1);
                let plane = ol / groups;
                for (yi, xi) in y.chunks_mut(ol).zip(x.chunks(ol)) {
                    for c in 0..groups {
                        let m = norm.mean.get(c).or(norm.mean.first()).copied();
                        let s = norm.std.get(c).or(norm.std.first()).copied();
                        let (m, s) = (F::of(m.unwrap_or(0.0)), F::of(s.unwrap_or(1.0)));
                        for (d, &v) in yi[c * plane..][..plane].iter_mut().zip(&xi[c * plane..]) {
                            *d = (v - m) / s;
                        }
                    }
                }
            }
            Op::Conv2d { weight, bias, .. } => {
                let b = bias.as_deref().map(|b| self.param(b)).transpose()?;
                geom()?.forward(arg(0), self.param(weight)?, b, &mut y)?;
            }
            Op::BatchNorm {
                gamma,
                beta,
                mean,
                var,
                epsilon,
            } => {
                let xin = arg(0);
                let c = st.in_shape.first().copied().unwrap_or(1).max(1);
                let inner = st.in_len() / c;
                let (g, b) = (self.param(gamma)?, self.param(beta)?);
                let (mu, va): (Vec<f64>, Vec<f64>) = match mode {
                    Mode::Train => {
                        if n * inner < 2 {
                            return Err(TrainError::Config(format!(
                                "batch norm `{}` needs more than one value per channel in training \
                                 (a batch of {n} image(s) of {inner} value(s) per channel)",
                                st.name
                            )));
                        }
                        let (mu, va) = channel_moments(xin, n, c, inner);
                        let count = (n * inner) as f64;
                        let unbiased = if count > 1.0 {
                            count / (count - 1.0)
                        } else {
                            1.0
                        };
                        let m = BN_MOMENTUM;
                        let rm = self.buffer(mean)?;
                        let rv = self.buffer(var)?;
                        let nm = (0..c)
                            .map(|i| F::of(rm[i].f64() * (1.0 - m) + mu[i] * m))
                            .collect();
                        let nv = (0..c)
                            .map(|i| F::of(rv[i].f64() * (1.0 - m) + va[i] * m * unbiased))
                            .collect();
                        updates.push((mean.clone(), nm));
                        updates.push((var.clone(), nv));
                        (mu, va)
                    }
                    Mode::Eval => (
                        self.buffer(mean)?.iter().map(|v| v.f64()).collect(),
                        self.buffer(var)?.iter().map(|v| v.f64()).collect(),
                    ),
                };
                let inv: Vec<F> = va
                    .iter()
                    .map(|v| F::of(1.0 / (v + epsilon).sqrt()))
                    .collect();
                let mu: Vec<F> = mu.into_iter().map(F::of).collect();
                let mut xhat = if keep {
                    self.take(xin.len())
                } else {
                    Vec::new()
                };
                for (i, (yi, xi)) in y.chunks_mut(inner).zip(xin.chunks(inner)).enumerate() {
                    let ch = i % c;
                    for (j, (d, &v)) in yi.iter_mut().zip(xi).enumerate() {
                        let h = (v - mu[ch]) * inv[ch];
                        if keep {
                            xhat[i * inner + j] = h;
                        }
                        *d = g[ch] * h + b[ch];
                    }
                }
                if keep {
                    aux = Aux::Bn { xhat, inv };
                }
            }
            Op::Dense {
                out_features,
                weight,
                bias,
            } => {
                let b = bias.as_deref().map(|b| self.param(b)).transpose()?;
                let (i, o) = (st.in_len(), *out_features);
                dense_forward(arg(0), self.param(weight)?, b, n, i, o, &mut y)?;
            }
            Op::Flatten | Op::Reshape { .. } => y.copy_from_slice(arg(0)),
            Op::AvgPool { .. } => avg_pool_forward(arg(0), &geom()?, &mut y),
            Op::GlobalAvgPool => {
                let plane = st.in_len() / ol.max(1);
                let s = F::of(1.0 / plane.max(1) as f64);
                for (d, xi) in y.iter_mut().zip(arg(0).chunks(plane.max(1))) {
                    let mut acc = F::zero();
                    xi.iter().for_each(|&v| acc += v);
                    *d = acc * s;
                }
            }
            Op::MaxPool { .. } => {
                let a = max_pool_forward(arg(0), &geom()?, &mut y);
                if keep {
                    aux = Aux::Max(a);
                }
            }
            Op::Concat { axis } => {
                let outer: usize = st.out_shape[..*axis].iter().product();
                let mut off = 0;
                for (k, &i) in st.inputs.iter().enumerate() {
                    let block: usize = self.steps[i].out_shape[*axis..].iter().product();
                    let src = arg(k);
                    for b in 0..n * outer {
                        y[b * (ol / outer) + off..][..block]
                            .copy_from_slice(&src[b * block..][..block]);
                    }
                    off += block;
                }
            }
            Op::Add => {
                y.copy_from_slice(arg(0));
                for k in 1..st.inputs.len() {
                    y.iter_mut().zip(arg(k)).for_each(|(d, &v)| *d += v);
                }
            }
            Op::Scale { factor } => {
                let f = F::of(*factor);
                y.iter_mut().zip(arg(0)).for_each(|(d, &v)| *d = v * f);
            }
            Op::Relu => y.iter_mut().zip(arg(0)).for_each(|(d, &v)| {
                *d = if v > F::zero() { v } else { F::zero() };
            }),
            Op::Square => y.iter_mut().zip(arg(0)).for_each(|(d, &v)| *d = v * v),
            Op::Poly { coeffs } => {
                let c: Vec<F> = coeffs.iter().map(|&v| F::of(v)).collect();
                y.iter_mut().zip(arg(0)).for_each(|(d, &v)| {
                    let mut acc = F::zero();
                    for &k in c.iter().rev() {
                        acc = acc * v + k;
                    }
                    *d = acc;
                });
            }
            Op::Quadratic {
                granularity,
                coeffs,
            } => {
                let q = self.param(coeffs)?;
                let rows = q.len() / 3;
                let div = coeff_divisor(*granularity, &st.in_shape);
                let (qa, qb, qc) = (&q[..rows], &q[rows..2 * rows], &q[2 * rows..]);
                for (yi, xi) in y.chunks_mut(ol).zip(arg(0).chunks(ol)) {
                    if div == 1 {
                        for ((d, &v), ((&a, &b), &c)) in
                            yi.iter_mut().zip(xi).zip(qa.iter().zip(qb).zip(qc))
                        {
                            *d = (a * v + b) * v + c;
                        }
                        continue;
                    }
                    for (j, (yr, xr)) in yi.chunks_mut(div).zip(xi.chunks(div)).enumerate() {
                        let j = j.min(rows.saturating_sub(1));
                        let (a, b, c) = (qa[j], qb[j], qc[j]);
                        for (d, &v) in yr.iter_mut().zip(xr) {
                            *d = (a * v + b) * v + c;
                        }
                    }
                }
            }
        }
        Ok((y, aux))
    }

    /// Gradients of every parameter for the loss gradient `dlogits` (`(N, K)`) of a tape
    /// from [`Net::forward`].
    pub fn backward(&self, tape: &Tape<F>, dlogits: &[F]) -> Result<Grads<F>, TrainError> {
        let n = tape.n;
        if dlogits.len() != tape.vals[self.out].len() {
            return Err(TrainError::Graph(format!(
                "loss gradient has {} values, the scores {}",
                dlogits.len(),
                tape.vals[self.out].len()
            )));
        }
        let mut grads: Grads<F> = BTreeMap::new();
        let mut gv: Vec<Option<Vec<F>>> = vec![None; self.steps.len()];
        gv[self.out] = Some(dlogits.to_vec());
        let add = |gv: &mut Vec<Option<Vec<F>>>, i: usize, d: Vec<F>| match &mut gv[i] {
            Some(acc) => {
                acc.iter_mut().zip(&d).for_each(|(a, &v)| *a += v);
                self.give(d);
            }
            slot => *slot = Some(d),
        };
        let mut addp = |name: &str, d: Vec<F>| match grads.get_mut(name) {
            Some(acc) => acc.iter_mut().zip(d).for_each(|(a, v)| *a += v),
            None => {
                grads.insert(name.to_string(), d);
            }
        };
        for si in (0..self.steps.len()).rev() {
            let Some(dy) = gv[si].take() else { continue };
            let st = &self.steps[si];
            // Operands that are the input node need no gradient.
            let wants = |k: usize| !matches!(self.steps[st.inputs[k]].op, Op::Input { .. });
            let xin = |k: usize| -> &[F] { &tape.vals[st.inputs[k]] };
            let geom = || {
                st.geom
                    .ok_or_else(|| TrainError::Graph(format!("{}: no geometry", st.name)))
            };
            match &st.op {
                Op::Input { .. } => {}
                Op::Conv2d { weight, bias, .. } => {
                    let g = geom()?;
                    let mut dx = if wants(0) {
                        Some(self.take(xin(0).len()))
                    } else {
                        None
                    };
                    let (dw, db) = g.backward(
                        xin(0),
                        self.param(weight)?,
                        &dy,
                        dx.as_deref_mut(),
                        bias.is_some(),
                    )?;
                    addp(weight, dw);
                    if let Some(b) = bias {
                        addp(b, db);
                    }
                    if let Some(dx) = dx {
                        add(&mut gv, st.inputs[0], dx);
                    }
                }
                Op::BatchNorm { gamma, beta, .. } => {
                    let Aux::Bn { xhat, inv } = &tape.aux[si] else {
                        return Err(TrainError::Graph(format!(
                            "{}: tape without statistics",
                            st.name
                        )));
                    };
                    let c = st.in_shape.first().copied().unwrap_or(1).max(1);
                    let inner = st.in_len() / c;
                    let g = self.param(gamma)?;
                    let mut dg = vec![0f64; c];
                    let mut dbeta = vec![0f64; c];
                    for (i, (dyi, hi)) in dy.chunks(inner).zip(xhat.chunks(inner)).enumerate() {
                        let ch = i % c;
                        for (&d, &h) in dyi.iter().zip(hi) {
                            dg[ch] += (d * h).f64();
                            dbeta[ch] += d.f64();
                        }
                    }
                    if wants(0) {
                        let mut dx = self.take(dy.len());
                        let m = (n * inner) as f64;
                        for (i, ((dxi, dyi), hi)) in dx
                            .chunks_mut(inner)
                            .zip(dy.chunks(inner))
                            .zip(xhat.chunks(inner))
                            .enumerate()
                        {
                            let ch = i % c;
                            let k = g[ch] * inv[ch];
                            if tape.mode == Mode::Train {
                                let (sb, sg) = (F::of(dbeta[ch] / m), F::of(dg[ch] / m));
                                for ((d, &v), &h) in dxi.iter_mut().zip(dyi).zip(hi) {
                                    *d = k * (v - sb - h * sg);
                                }
                            } else {
                                dxi.iter_mut().zip(dyi).for_each(|(d, &v)| *d = k * v);
                            }
                        }
                        add(&mut gv, st.inputs[0], dx);
                    }
                    addp(gamma, dg.into_iter().map(F::of).collect());
                    addp(beta, dbeta.into_iter().map(F::of).collect());
                }
                Op::Dense {
                    out_features,
                    weight,
                    bias,
                } => {
                    let (dw, db, dx) = dense_backward(
                        xin(0),
                        self.param(weight)?,
                        &dy,
                        n,
                        st.in_len(),
                        *out_features,
                    )?;
                    addp(weight, dw);
                    if let Some(b) = bias {
                        addp(b, db);
                    }
                    if wants(0) {
                        add(&mut gv, st.inputs[0], dx);
                    }
                }
                Op::Flatten | Op::Reshape { .. } => {
                    if wants(0) {
                        add(&mut gv, st.inputs[0], dy);
                        continue;
                    }
                }
                Op::AvgPool { .. } => {
                    if wants(0) {
                        let mut dx = self.take(xin(0).len());
                        avg_pool_backward(&dy, &geom()?, &mut dx);
                        add(&mut gv, st.inputs[0], dx);
                    }
                }
                Op::GlobalAvgPool => {
                    if wants(0) {
                        let ol = st.out_len();
                        let plane = (st.in_len() / ol.max(1)).max(1);
                        let s = F::of(1.0 / plane as f64);
                        let mut dx = self.take(xin(0).len());
                        for (dxi, &d) in dx.chunks_mut(plane).zip(&dy) {
                            dxi.fill(d * s);
                        }
                        add(&mut gv, st.inputs[0], dx);
                    }
                }
                Op::MaxPool { .. } => {
                    let Aux::Max(arg) = &tape.aux[si] else {
                        return Err(TrainError::Graph(format!(
                            "{}: tape without indices",
                            st.name
                        )));
                    };
                    if wants(0) {
                        let mut dx = self.take_zeroed(xin(0).len());
                        for (&i, &d) in arg.iter().zip(&dy) {
                            dx[i] += d;
                        }
                        add(&mut gv, st.inputs[0], dx);
                    }
                }
                Op::Concat { axis } => {
                    let ol = st.out_len();
                    let outer: usize = st.out_shape[..*axis].iter().product();
                    let mut off = 0;
                    for (k, &i) in st.inputs.iter().enumerate() {
                        let block: usize = self.steps[i].out_shape[*axis..].iter().product();
                        if wants(k) {
                            let mut dx = self.take(n * outer * block);
                            for b in 0..n * outer {
                                dx[b * block..][..block]
                                    .copy_from_slice(&dy[b * (ol / outer) + off..][..block]);
                            }
                            add(&mut gv, i, dx);
                        }
                        off += block;
                    }
                }
                Op::Add => {
                    for k in 0..st.inputs.len() {
                        if wants(k) {
                            let mut d = self.take(dy.len());
                            d.copy_from_slice(&dy);
                            add(&mut gv, st.inputs[k], d);
                        }
                    }
                }
                Op::Scale { factor } => {
                    if wants(0) {
                        let f = F::of(*factor);
                        add(&mut gv, st.inputs[0], dy.iter().map(|&d| d * f).collect());
                    }
                }
                Op::Relu | Op::Square | Op::Poly { .. } => {
                    if wants(0) {
                        let mut dx = self.take(dy.len());
                        let pairs = dx.iter_mut().zip(dy.iter().zip(xin(0)));
                        match &st.op {
                            Op::Relu => pairs.for_each(|(o, (&d, &v))| {
                                *o = if v > F::zero() { d } else { F::zero() };
                            }),
                            Op::Square => {
                                let two = F::of(2.0);
                                pairs.for_each(|(o, (&d, &v))| *o = two * v * d);
                            }
                            Op::Poly { coeffs } => {
                                let dc: Vec<F> = coeffs
                                    .iter()
                                    .enumerate()
                                    .skip(1)
                                    .map(|(k, &c)| F::of(k as f64 * c))
                                    .collect();
                                pairs.for_each(|(o, (&d, &v))| {
                                    let mut acc = F::zero();
                                    for &k in dc.iter().rev() {
                                        acc = acc * v + k;
                                    }
                                    *o = acc * d;
                                });
                            }
                            _ => {}
                        }
                        add(&mut gv, st.inputs[0], dx);
                    }
                }
                Op::Quadratic {
                    granularity,
                    coeffs,
                } => {
                    let q = self.param(coeffs)?;
                    let rows = q.len() / 3;
                    let div = coeff_divisor(*granularity, &st.in_shape);
                    let ol = st.out_len();
                    let mut dq = vec![F::zero(); q.len()];
                    let mut dx = if wants(0) {
                        self.take(dy.len())
                    } else {
                        Vec::new()
                    };
                    let two = F::of(2.0);
                    let (qa, qb) = (&q[..rows], &q[rows..2 * rows]);
                    for (i, (dyi, xi)) in dy.chunks(ol).zip(xin(0).chunks(ol)).enumerate() {
                        let (da, rest) = dq.split_at_mut(rows);
                        let (db, dc) = rest.split_at_mut(rows);
                        if div == 1 {
                            for (e, (&d, &v)) in dyi.iter().zip(xi).enumerate() {
                                let dv = d * v;
                                da[e] += dv * v;
                                db[e] += dv;
                                dc[e] += d;
                            }
                            if !dx.is_empty() {
                                let out = &mut dx[i * ol..][..ol];
                                for (e, (o, (&d, &v))) in
                                    out.iter_mut().zip(dyi.iter().zip(xi)).enumerate()
                                {
                                    *o = (two * qa[e] * v + qb[e]) * d;
                                }
                            }
                            continue;
                        }
                        for (j, (dr, xr)) in dyi.chunks(div).zip(xi.chunks(div)).enumerate() {
                            let j = j.min(rows.saturating_sub(1));
                            let (mut sa, mut sb, mut sc) = (F::zero(), F::zero(), F::zero());
                            for (&d, &v) in dr.iter().zip(xr) {
                                let dv = d * v;
                                sa += dv * v;
                                sb += dv;
                                sc += d;
                            }
                            da[j] += sa;
                            db[j] += sb;
                            dc[j] += sc;
                            if !dx.is_empty() {
                                let (a2, b) = (two * qa[j], qb[j]);
                                let out = &mut dx[i * ol + j * div..][..dr.len()];
                                for ((o, &d), &v) in out.iter_mut().zip(dr).zip(xr) {
                                    *o = (a2 * v + b) * d;
                                }
                            }
                        }
                    }
                    addp(coeffs, dq);
                    if !dx.is_empty() {
                        add(&mut gv, st.inputs[0], dx);
                    }
                }
            }
            self.give(dy);
        }
        Ok(grads)
    }
}

/// The values of `name` in `map`, or a weight error saying `missing`.
fn lookup<'a, F>(
    map: &'a BTreeMap<String, Param<F>>,
    name: &str,
    missing: &str,
) -> Result<&'a [F], TrainError> {
    map.get(name)
        .map(|p| p.data.as_slice())
        .ok_or_else(|| TrainError::Weight {
            name: name.into(),
            message: missing.into(),
        })
}

/// Per-channel mean and biased variance of `(n, c, inner)` values, in `f64`.
fn channel_moments<F: Real>(x: &[F], n: usize, c: usize, inner: usize) -> (Vec<f64>, Vec<f64>) {
    let mut sum = vec![0f64; c];
    for (i, xi) in x.chunks(inner.max(1)).enumerate() {
        sum[i % c] += xi.iter().map(|v| v.f64()).sum::<f64>();
    }
    let count = (n * inner).max(1) as f64;
    let mu: Vec<f64> = sum.iter().map(|s| s / count).collect();
    let mut sq = vec![0f64; c];
    for (i, xi) in x.chunks(inner.max(1)).enumerate() {
        let m = mu[i % c];
        sq[i % c] += xi.iter().map(|v| (v.f64() - m).powi(2)).sum::<f64>();
    }
    (mu, sq.iter().map(|s| s / count).collect())
}

/// Elements of the per-image tensor that share one coefficient column: everything (layer),
/// one channel's plane (channel), one element (element).
fn coeff_divisor(g: Granularity, shape: &[usize]) -> usize {
    let total: usize = shape.iter().product();
    match g {
        Granularity::Layer => total.max(1),
        Granularity::Channel => (total / shape.first().copied().unwrap_or(1).max(1)).max(1),
        Granularity::Element => 1,
    }
}

/// Convolution or pooling geometry of an op on a `[C, H, W]` input.
fn geometry(op: &Op, input: &Shape, out: &[usize]) -> Option<Conv> {
    let (c, h, w) = match input.0.as_slice() {
        [c, h, w] => (*c, *h, *w),
        _ => return None,
    };
    let (oh, ow) = match out {
        [_, oh, ow] => (*oh, *ow),
        _ => return None,
    };
    let win = Window {
        h,
        w,
        kh: 1,
        kw: 1,
        stride: [1, 1],
        pad: [0; 4],
        oh,
        ow,
    };
    let pooled = |kernel: &[usize; 2], stride: &[usize; 2], pad: [usize; 4]| Conv {
        c,
        co: c,
        groups: 1,
        win: Window {
            kh: kernel[0],
            kw: kernel[1],
            stride: *stride,
            pad,
            ..win
        },
    };
    match op {
        Op::Conv2d {
            out_channels,
            kernel,
            stride,
            padding,
            groups,
            ..
        } => Some(Conv {
            co: *out_channels,
            groups: (*groups).max(1),
            ..pooled(kernel, stride, *padding)
        }),
        Op::AvgPool {
            kernel,
            stride,
            padding,
        } => Some(pooled(kernel, stride, *padding)),
        Op::MaxPool { kernel, stride, .. } => Some(pooled(kernel, stride, [0; 4])),
        _ => None,
    }
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
