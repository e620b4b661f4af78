//! The tensor-graph operations, defined in one place.
//!
//! Each [`Op`] variant carries its attributes and is documented with its semantics; shapes are
//! per image (`[C, H, W]` or `[F]`, no batch dimension). [`Op::mnemonic`] gives the snake_case
//! name used by the YAML spec, the text form and the diagnostics ([`MNEMONICS`] lists them all),
//! [`Op::arity`] the number of operands, and [`Op::weight_refs`] the weights an op reads.

use std::fmt;

use super::{Normalization, Shape};

/// How many operands an op takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// Exactly this many.
    Exact(usize),
    /// At least this many.
    AtLeast(usize),
}

impl Arity {
    /// True if `n` operands are acceptable.
    pub fn accepts(self, n: usize) -> bool {
        match self {
            Arity::Exact(k) => n == k,
            Arity::AtLeast(k) => n >= k,
        }
    }
}

impl fmt::Display for Arity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arity::Exact(1) => write!(f, "exactly 1 operand"),
            Arity::Exact(k) => write!(f, "exactly {k} operands"),
            Arity::AtLeast(k) => write!(f, "at least {k} operands"),
        }
    }
}

/// Granularity of a trainable quadratic activation (BEAA terminology).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Granularity {
    /// One polynomial for the whole layer: coefficients of shape `[3]`.
    Layer,
    /// One polynomial per channel: coefficients of shape `[3, C]`.
    Channel,
    /// One polynomial per element: coefficients of shape `[3, C, H, W]` (or `[3, F]`).
    Element,
}

impl Granularity {
    /// The spelling used in specs and text forms: `layer`, `channel`, `element`.
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Layer => "layer",
            Granularity::Channel => "channel",
            Granularity::Element => "element",
        }
    }

    /// Parses `layer`, `channel` or `element`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "layer" => Some(Granularity::Layer),
            "channel" => Some(Granularity::Channel),
            "element" => Some(Granularity::Element),
            _ => None,
        }
    }

    /// The coefficient tensor shape for an activation input of shape `input`.
    pub fn coeff_shape(self, input: &Shape) -> Shape {
        match self {
            Granularity::Layer => Shape::from([3]),
            Granularity::Channel => Shape::from([3, input.first().copied().unwrap_or(1)]),
            Granularity::Element => {
                let mut v = vec![3];
                v.extend_from_slice(input);
                Shape(v)
            }
        }
    }
}

impl fmt::Display for Granularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every op mnemonic, in declaration order.
pub const MNEMONICS: &[&str] = &[
    "input",
    "conv2d",
    "batch_norm",
    "dense",
    "flatten",
    "reshape",
    "avg_pool",
    "global_avg_pool",
    "max_pool",
    "concat",
    "add",
    "scale",
    "relu",
    "square",
    "poly",
    "quadratic",
];

/// A tensor-graph operation with its attributes.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Graph input of shape `shape` (`[C, H, W]` or `[F]`); outputs
    /// `(x - norm.mean[c]) / norm.std[c]` for the raw input `x`. No operands.
    Input {
        /// Per-image shape.
        shape: Shape,
        /// Normalisation and raw value range.
        norm: Normalization,
    },
    /// 2-D cross-correlation (PyTorch/ONNX `Conv`): input `[C, H, W]`, weight
    /// `[out_channels, C / groups, kh, kw]`, optional bias `[out_channels]`, zero padding.
    /// Output `[out_channels, (H + top + bottom - kh) / sh + 1, (W + left + right - kw) / sw + 1]`.
    Conv2d {
        /// Number of output channels.
        out_channels: usize,
        /// Kernel `[kh, kw]`.
        kernel: [usize; 2],
        /// Stride `[sh, sw]`.
        stride: [usize; 2],
        /// Zero padding `[top, left, bottom, right]`.
        padding: [usize; 4],
        /// Number of groups (1 = dense convolution, C = depthwise).
        groups: usize,
        /// Weight tensor name.
        weight: String,
        /// Optional bias tensor name.
        bias: Option<String>,
    },
    /// Inference batch normalisation over channel axis 0:
    /// `y = gamma[c] * (x - mean[c]) / sqrt(var[c] + epsilon) + beta[c]`; all four tensors `[C]`.
    BatchNorm {
        /// Scale tensor name (`[C]`).
        gamma: String,
        /// Shift tensor name (`[C]`).
        beta: String,
        /// Running mean tensor name (`[C]`).
        mean: String,
        /// Running variance tensor name (`[C]`).
        var: String,
        /// Added to the variance.
        epsilon: f64,
    },
    /// Fully connected layer (gemm): input `[F]`, weight `[out_features, F]`, optional bias
    /// `[out_features]`; `y = W x + b`, output `[out_features]`.
    Dense {
        /// Number of outputs.
        out_features: usize,
        /// Weight tensor name (`[out, in]`).
        weight: String,
        /// Optional bias tensor name (`[out]`).
        bias: Option<String>,
    },
    /// Flattens any shape to `[product]` in row-major (C, H, W) order.
    Flatten,
    /// Reinterprets the row-major data with shape `shape` (same element count).
    Reshape {
        /// Target per-image shape.
        shape: Shape,
    },
    /// Average pooling on `[C, H, W]`; padded zeros count in the average (divisor `kh * kw`).
    AvgPool {
        /// Window `[kh, kw]`.
        kernel: [usize; 2],
        /// Stride `[sh, sw]`.
        stride: [usize; 2],
        /// Zero padding `[top, left, bottom, right]`.
        padding: [usize; 4],
    },
    /// Mean over the spatial axes: `[C, H, W] -> [C]`.
    GlobalAvgPool,
    /// Max pooling on `[C, H, W]`; padding is `-inf` (never selected).
    MaxPool {
        /// Window `[kh, kw]`.
        kernel: [usize; 2],
        /// Stride `[sh, sw]`.
        stride: [usize; 2],
        /// Padding `[top, left, bottom, right]`.
        padding: [usize; 4],
    },
    /// Concatenation of all operands (in slot order) along `axis` (0 = channels); the other axes
    /// must agree.
    Concat {
        /// Axis of the per-image shape.
        axis: usize,
    },
    /// Element-wise sum of two or more operands of identical shape.
    Add,
    /// Multiplication by a constant: `y = factor * x`.
    Scale {
        /// The constant.
        factor: f64,
    },
    /// `max(x, 0)`; replaced by a polynomial according to a compile-time policy.
    Relu,
    /// `x * x`.
    Square,
    /// Explicit polynomial `sum_i coeffs[i] * x^i` (ascending powers).
    Poly {
        /// Coefficients, constant term first.
        coeffs: Vec<f64>,
    },
    /// Trainable quadratic `a * x^2 + b * x + c`; the coefficient tensor `coeffs` has rows
    /// `[a, b, c]` and shape `[3]`, `[3, C]` or `[3, ...input shape]` by granularity.
    Quadratic {
        /// Layer, channel or element granularity.
        granularity: Granularity,
        /// Coefficient tensor name.
        coeffs: String,
    },
}

impl Op {
    /// The snake_case name of the op (YAML spec, text form, diagnostics).
    pub fn mnemonic(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Conv2d { .. } => "conv2d",
            Op::BatchNorm { .. } => "batch_norm",
            Op::Dense { .. } => "dense",
            Op::Flatten => "flatten",
            Op::Reshape { .. } => "reshape",
            Op::AvgPool { .. } => "avg_pool",
            Op::GlobalAvgPool => "global_avg_pool",
            Op::MaxPool { .. } => "max_pool",
            Op::Concat { .. } => "concat",
            Op::Add => "add",
            Op::Scale { .. } => "scale",
            Op::Relu => "relu",
            Op::Square => "square",
            Op::Poly { .. } => "poly",
            Op::Quadratic { .. } => "quadratic",
        }
    }

    /// How many operands the op takes.
    pub fn arity(&self) -> Arity {
        match self {
            Op::Input { .. } => Arity::Exact(0),
            Op::Concat { .. } => Arity::AtLeast(1),
            Op::Add => Arity::AtLeast(2),
            Op::Conv2d { .. }
            | Op::BatchNorm { .. }
            | Op::Dense { .. }
            | Op::Flatten
            | Op::Reshape { .. }
            | Op::AvgPool { .. }
            | Op::GlobalAvgPool
            | Op::MaxPool { .. }
            | Op::Scale { .. }
            | Op::Relu
            | Op::Square
            | Op::Poly { .. }
            | Op::Quadratic { .. } => Arity::Exact(1),
        }
    }

    /// The weights this op reads, as `(role, name)`; role is e.g. `weight`, `bias`, `gamma`.
    pub fn weight_refs(&self) -> Vec<(&'static str, &str)> {
        match self {
            Op::Conv2d { weight, bias, .. } | Op::Dense { weight, bias, .. } => {
                let mut v = vec![("weight", weight.as_str())];
                if let Some(b) = bias {
                    v.push(("bias", b.as_str()));
                }
                v
            }
            Op::BatchNorm {
                gamma,
                beta,
                mean,
                var,
                ..
            } => vec![
                ("gamma", gamma.as_str()),
                ("beta", beta.as_str()),
                ("mean", mean.as_str()),
                ("var", var.as_str()),
            ],
            Op::Quadratic { coeffs, .. } => vec![("coeffs", coeffs.as_str())],
            Op::Input { .. }
            | Op::Flatten
            | Op::Reshape { .. }
            | Op::AvgPool { .. }
            | Op::GlobalAvgPool
            | Op::MaxPool { .. }
            | Op::Concat { .. }
            | Op::Add
            | Op::Scale { .. }
            | Op::Relu
            | Op::Square
            | Op::Poly { .. } => Vec::new(),
        }
    }

    /// True for the element-wise non-linear activations (`relu`, `square`, `poly`, `quadratic`).
    pub fn is_activation(&self) -> bool {
        matches!(
            self,
            Op::Relu | Op::Square | Op::Poly { .. } | Op::Quadratic { .. }
        )
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mnemonic())
    }
}
