//! Activation input ranges: calibration on sample data and out-of-range detection.
//!
//! The polynomial replacements of `relu` and `max_pool` are only valid on an interval `[-B, B]`
//! of their input. [`calibrate_ranges`] runs the plaintext model ([`hecc_ir::tensor::eval`]) on
//! sample images, records for every activation node the range of what it is applied to, and
//! derives its own `B = bound * (1 + margin)`:
//!
//! * `relu`: the bound is `max |x|` over the node's inputs;
//! * `max_pool`: the circuit computes `max(a, b) = relu(a - b) + b` pairwise, so the quantity
//!   that must stay in `[-B, B]` is a difference of two values of one pooling window; the bound
//!   is the largest window spread `max - min` (padding is skipped, as in the lowering).
//!
//! [`check_ranges`] evaluates the plaintext model on other inputs and counts, per activation,
//! the values outside the recorded interval (a warning for the user, never a failure).
//! [`eval_staged`] is the evaluator both use: the model with each activation computed by a
//! caller-supplied function, so that approximations can be evaluated on tensors too
//! ([`crate::approx::tensor`]). Nothing here panics on bad input; errors are [`RangeError`].

use hecc_ir::tensor::{eval::eval_batch, Graph, NodeId, Normalization, Op, Tensor};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use serde::{Deserialize, Serialize};

/// Why ranges could not be computed or checked.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum RangeError {
    /// The plaintext evaluator failed (graph does not verify, wrong input shape...).
    #[error(transparent)]
    #[diagnostic(transparent)]
    Eval(#[from] hecc_ir::tensor::eval::EvalError),
    /// The request is malformed (no samples, negative margin, ...).
    #[error("{0}")]
    #[diagnostic(code(hecc::ranges::request))]
    BadRequest(String),
    /// An activation function given to [`eval_staged`] failed.
    #[error("activation `{node}`: {detail}")]
    #[diagnostic(code(hecc::ranges::activation))]
    Activation {
        /// The activation node.
        node: String,
        /// What went wrong.
        detail: String,
    },
}

/// The kind of an activation node, with what its evaluation needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SiteKind {
    /// `relu`, element-wise.
    Relu,
    /// `max_pool` with its window.
    MaxPool {
        /// Window `[kh, kw]`.
        kernel: [usize; 2],
        /// Stride `[sh, sw]`.
        stride: [usize; 2],
        /// Padding `[top, left, bottom, right]`.
        padding: [usize; 4],
    },
}

/// One activation node of a graph (a `relu` or a `max_pool`).
#[derive(Clone, Debug, PartialEq)]
pub struct Site {
    /// The node.
    pub id: NodeId,
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: SiteKind,
    /// Per-image shape of its input.
    pub in_shape: Vec<usize>,
    /// Per-image shape of its output.
    pub out_shape: Vec<usize>,
}

impl Site {
    /// The op mnemonic (`relu` or `max_pool`).
    pub fn op(&self) -> &'static str {
        match self.kind {
            SiteKind::Relu => "relu",
            SiteKind::MaxPool { .. } => "max_pool",
        }
    }
}

/// The recorded range of one activation's input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActivationRange {
    /// Activation node name.
    pub node: String,
    /// `relu` or `max_pool`.
    pub op: String,
    /// Smallest input value seen in calibration.
    pub min: f64,
    /// Largest input value seen in calibration.
    pub max: f64,
    /// The calibrated bound: `max |x|` (relu) or the largest window spread (max_pool).
    pub bound: f64,
    /// The half-width `B` the approximation is fitted on.
    pub range: f64,
    /// `min`, `max` and `bound` were measured by calibration (otherwise they are 0 and
    /// `range` is the one range given for every activation).
    #[serde(default)]
    pub calibrated: bool,
}

impl ActivationRange {
    /// An uncalibrated entry: activation `site` uses the given `range`.
    pub fn fixed(site: &Site, range: f64) -> ActivationRange {
        ActivationRange {
            node: site.name.clone(),
            op: site.op().into(),
            min: 0.0,
            max: 0.0,
            bound: 0.0,
            range,
            calibrated: false,
        }
    }
}

/// The calibrated ranges of every activation of a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActivationRanges {
    /// Sample images used.
    pub samples: usize,
    /// Relative margin added to each bound.
    pub margin: f64,
    /// One entry per activation node, in evaluation order.
    pub ranges: Vec<ActivationRange>,
}

impl ActivationRanges {
    /// The entry of node `name`, if any.
    pub fn get(&self, name: &str) -> Option<&ActivationRange> {
        self.ranges.iter().find(|r| r.node == name)
    }
}

/// How many inputs of one activation fell outside `[-B, B]` (window spreads above `B` for
/// max-pooling).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RangeCheck {
    /// Activation node name.
    pub node: String,
    /// `relu` or `max_pool`.
    pub op: String,
    /// The range `B` checked against.
    pub range: f64,
    /// Values checked (inputs for relu, windows for max_pool), over all images.
    pub checked: usize,
    /// Values outside the range.
    pub outside: usize,
    /// The value of largest magnitude (relu input, or window spread).
    pub worst: f64,
}

/// The activation nodes of `g` in evaluation order, with their shapes.
pub fn sites(g: &Graph) -> Result<Vec<Site>, RangeError> {
    let shapes = hecc_ir::tensor::verify(g)
        .map_err(|errors| hecc_ir::tensor::eval::EvalError::Invalid { errors })?;
    let order = g
        .topo_order()
        .ok_or_else(|| RangeError::BadRequest("the graph has a cycle".into()))?;
    let mut out = Vec::new();
    for id in order {
        let Some(node) = g.node(id) else { continue };
        let kind = match &node.op {
            Op::Relu => SiteKind::Relu,
            Op::MaxPool {
                kernel,
                stride,
                padding,
            } => SiteKind::MaxPool {
                kernel: *kernel,
                stride: *stride,
                padding: *padding,
            },
            _ => continue,
        };
        let operand = g.operand_ids(id).first().copied().ok_or_else(|| {
            RangeError::BadRequest(format!("activation `{}` has no operand", node.name))
        })?;
        let shape_of = |n: NodeId| shapes.get(&n).map(|s| s.0.clone()).unwrap_or_default();
        out.push(Site {
            id,
            name: node.name.clone(),
            kind,
            in_shape: shape_of(operand),
            out_shape: shape_of(id),
        });
    }
    Ok(out)
}

/// Evaluates `g` on a batch (`inputs` as for [`eval_batch`]: `[N, ...]` per graph input) with
/// every activation node computed by `act(site, x)`, where `x` is the node's input batch
/// (`[N, ...in_shape]`, row-major) and the result must have `N * out_shape` values.
/// Everything else is the reference evaluator's semantics. Returns the graph's outputs.
pub fn eval_staged(
    g: &Graph,
    inputs: &[Tensor],
    mut act: impl FnMut(&Site, &[f64]) -> Result<Vec<f64>, RangeError>,
) -> Result<Vec<Tensor>, RangeError> {
    let sites = sites(g)?;
    if sites.is_empty() {
        return Ok(eval_batch(g, inputs)?);
    }
    let n = inputs
        .first()
        .and_then(|t| t.shape().first().copied())
        .unwrap_or(1);
    // The cut graph: every activation becomes an input fed with its computed output.
    let mut cut = g.clone();
    for s in &sites {
        let ix = s.id.index();
        let edges: Vec<_> = cut
            .graph
            .edges_directed(ix, Direction::Incoming)
            .map(|e| e.id())
            .collect();
        for e in edges {
            cut.graph.remove_edge(e);
        }
        if let Some(node) = cut.node_mut(s.id) {
            node.op = Op::Input {
                shape: s.out_shape.clone().into(),
                norm: Normalization::default(),
            };
        }
        cut.inputs.push(s.id);
    }
    let mut feeds: Vec<Tensor> = inputs.to_vec();
    for s in &sites {
        let mut dims = vec![n];
        dims.extend_from_slice(&s.out_shape);
        feeds.push(Tensor::zeros(dims));
    }
    let k0 = inputs.len();
    for (k, s) in sites.iter().enumerate() {
        let operand = g
            .operand_ids(s.id)
            .first()
            .copied()
            .ok_or_else(|| RangeError::BadRequest(format!("`{}` has no operand", s.name)))?;
        cut.outputs = vec![operand];
        let x = eval_batch(&cut, &feeds)?;
        let x: Vec<f64> = x
            .first()
            .map(|t| t.iter().copied().collect())
            .unwrap_or_default();
        let y = act(s, &x)?;
        let per: usize = s.out_shape.iter().product();
        if y.len() != n * per {
            return Err(RangeError::Activation {
                node: s.name.clone(),
                detail: format!("produced {} values, expected {}", y.len(), n * per),
            });
        }
        let mut dims = vec![n];
        dims.extend_from_slice(&s.out_shape);
        feeds[k0 + k] = Tensor::from_shape_vec(dims, y).map_err(|e| RangeError::Activation {
            node: s.name.clone(),
            detail: e.to_string(),
        })?;
    }
    cut.outputs = g.outputs.clone();
    Ok(eval_batch(&cut, &feeds)?)
}

/// Exact `max_pool` of a batch `x` (`[N, C, H, W]` row-major), padding skipped.
pub fn max_pool_exact(
    x: &[f64],
    in_shape: &[usize],
    out_shape: &[usize],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 4],
) -> Vec<f64> {
    windows(x, in_shape, out_shape, kernel, stride, padding)
        .map(|w| w.iter().copied().fold(f64::NEG_INFINITY, f64::max))
        .collect()
}

/// The pooling windows of a batch, in output order (image, channel, row, column); each window
/// lists its in-bounds values in row-major window order (the order the lowering pairs them in).
pub fn windows<'a>(
    x: &'a [f64],
    in_shape: &[usize],
    out_shape: &[usize],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 4],
) -> impl Iterator<Item = Vec<f64>> + 'a {
    let dim = |s: &[usize], i: usize| s.get(i).copied().unwrap_or(1);
    let (h, w) = (dim(in_shape, 1), dim(in_shape, 2));
    let (oh, ow) = (dim(out_shape, 1), dim(out_shape, 2));
    let plane = (h * w).max(1);
    x.chunks_exact(plane).flat_map(move |p| {
        (0..oh).flat_map(move |oy| {
            (0..ow).map(move |ox| {
                let mut v = Vec::with_capacity(kernel[0] * kernel[1]);
                for ky in 0..kernel[0] {
                    let iy = (oy * stride[0] + ky) as isize - padding[0] as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    for kx in 0..kernel[1] {
                        let ix = (ox * stride[1] + kx) as isize - padding[1] as isize;
                        if ix < 0 || ix >= w as isize {
                            continue;
                        }
                        if let Some(&val) = p.get(iy as usize * w + ix as usize) {
                            v.push(val);
                        }
                    }
                }
                v
            })
        })
    })
}

/// The exact activation (what the plaintext model computes).
pub fn exact(site: &Site, x: &[f64]) -> Vec<f64> {
    match site.kind {
        SiteKind::Relu => x.iter().map(|v| v.max(0.0)).collect(),
        SiteKind::MaxPool {
            kernel,
            stride,
            padding,
        } => max_pool_exact(x, &site.in_shape, &site.out_shape, kernel, stride, padding),
    }
}

/// The quantities that must lie in `[-B, B]`: the inputs (relu) or the window spreads
/// (max_pool).
fn checked_values(site: &Site, x: &[f64]) -> Vec<f64> {
    match site.kind {
        SiteKind::Relu => x.to_vec(),
        SiteKind::MaxPool {
            kernel,
            stride,
            padding,
        } => windows(x, &site.in_shape, &site.out_shape, kernel, stride, padding)
            .map(|w| {
                let (lo, hi) = w
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
                        (l.min(v), h.max(v))
                    });
                if w.is_empty() {
                    0.0
                } else {
                    hi - lo
                }
            })
            .collect(),
    }
}

/// Calibrates the input range of every activation of `g` on `samples` (`[N, ...input shape]`,
/// already in the model input's domain, one tensor per graph input) and adds the relative
/// `margin`: `B = bound * (1 + margin)` (see the module note for `bound`). An activation whose
/// inputs are all zero gets `B = 1`.
pub fn calibrate_ranges(
    g: &Graph,
    samples: &[Tensor],
    margin: f64,
) -> Result<ActivationRanges, RangeError> {
    if !(margin >= 0.0 && margin.is_finite()) {
        return Err(RangeError::BadRequest(format!(
            "the range margin must be a finite non-negative number, got {margin}"
        )));
    }
    let count = samples
        .first()
        .and_then(|t| t.shape().first().copied())
        .unwrap_or(0);
    if count == 0 {
        return Err(RangeError::BadRequest(
            "calibration needs at least one sample image".into(),
        ));
    }
    let mut ranges = Vec::new();
    eval_staged(g, samples, |site, x| {
        let (min, max) = x
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
                (l.min(v), h.max(v))
            });
        if !(min.is_finite() && max.is_finite()) {
            return Err(RangeError::Activation {
                node: site.name.clone(),
                detail: "non-finite input values in calibration".into(),
            });
        }
        let bound = checked_values(site, x)
            .iter()
            .fold(0.0f64, |b, v| b.max(v.abs()));
        let range = if bound > 0.0 {
            bound * (1.0 + margin)
        } else {
            1.0
        };
        ranges.push(ActivationRange {
            node: site.name.clone(),
            op: site.op().into(),
            min,
            max,
            bound,
            range,
            calibrated: true,
        });
        Ok(exact(site, x))
    })?;
    Ok(ActivationRanges {
        samples: count,
        margin,
        ranges,
    })
}

/// Evaluates the plaintext model on `inputs` and counts, for every activation listed in
/// `ranges`, the values outside its `[-B, B]` (window spreads above `B` for max-pooling).
/// Activations not listed are skipped. Returns one entry per checked activation.
pub fn check_ranges(
    g: &Graph,
    inputs: &[Tensor],
    ranges: &[ActivationRange],
) -> Result<Vec<RangeCheck>, RangeError> {
    let mut out = Vec::new();
    eval_staged(g, inputs, |site, x| {
        if let Some(r) = ranges.iter().find(|r| r.node == site.name) {
            out.push(check_values(site, x, r.range));
        }
        Ok(exact(site, x))
    })?;
    Ok(out)
}

/// Counts the values of one activation input batch `x` outside `[-range, range]`.
pub fn check_values(site: &Site, x: &[f64], range: f64) -> RangeCheck {
    let v = checked_values(site, x);
    let mut c = RangeCheck {
        node: site.name.clone(),
        op: site.op().into(),
        range,
        checked: v.len(),
        outside: 0,
        worst: 0.0,
    };
    for &x in &v {
        if x.abs() > range || x.is_nan() {
            c.outside += 1;
        }
        if x.abs() > c.worst.abs() || x.is_nan() {
            c.worst = x;
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_the_lowering_order_and_skip_padding() {
        // One 1x3x3 image, 2x2 windows, stride 2, padding 1 on the bottom/right only.
        let x: Vec<f64> = (0..9).map(f64::from).collect();
        let w: Vec<Vec<f64>> =
            windows(&x, &[1, 3, 3], &[1, 2, 2], [2, 2], [2, 2], [0, 0, 1, 1]).collect();
        assert_eq!(
            w,
            vec![
                vec![0.0, 1.0, 3.0, 4.0],
                vec![2.0, 5.0],
                vec![6.0, 7.0],
                vec![8.0]
            ]
        );
    }
}
