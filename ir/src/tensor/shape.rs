//! Per-image shapes and per-op shape inference.
//!
//! [`Shape`] is a list of dimensions without batch axis (`[C, H, W]` or `[F]`). [`infer`] computes
//! an op's output shape from its operand shapes, and [`expected_weights`] the shape every weight
//! the op names must have. Both are pure and never panic; problems come back as a
//! [`ShapeIssue`], which the verifier turns into a [`GraphError`](super::GraphError) naming the node.

use std::fmt;
use std::ops::Deref;

use super::limits::{
    check_activation, check_input_std, check_multipliers, describe, fmt_value, MAX_DIM,
};
use super::op::Op;

/// A per-image tensor shape (no batch dimension).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Shape(pub Vec<usize>);

impl Shape {
    /// Number of elements (product of the dimensions; 1 for rank 0), saturating at
    /// `usize::MAX` for absurd shapes.
    pub fn numel(&self) -> usize {
        self.0.iter().fold(1usize, |a, &d| a.saturating_mul(d))
    }

    /// Number of elements, or `None` if the product overflows `usize`.
    pub fn checked_numel(&self) -> Option<usize> {
        self.0.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.len()
    }
}

impl Deref for Shape {
    type Target = [usize];
    fn deref(&self) -> &[usize] {
        &self.0
    }
}

impl<const N: usize> From<[usize; N]> for Shape {
    fn from(a: [usize; N]) -> Self {
        Shape(a.to_vec())
    }
}

impl From<Vec<usize>> for Shape {
    fn from(v: Vec<usize>) -> Self {
        Shape(v)
    }
}

impl From<&[usize]> for Shape {
    fn from(v: &[usize]) -> Self {
        Shape(v.to_vec())
    }
}

impl fmt::Display for Shape {
    /// Prints as `[1, 28, 28]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

/// Why an op's output shape could not be inferred.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShapeIssue {
    /// An operand has the wrong shape.
    Mismatch {
        /// Which operand (slot).
        slot: usize,
        /// Description of what was expected (e.g. `a rank-3 [C, H, W] tensor`).
        expected: String,
        /// The shape found.
        found: Shape,
    },
    /// An attribute is invalid, possibly for this input (zero stride, kernel larger than the
    /// padded input, groups not dividing the channels ...).
    Attribute(String),
    /// A shape exceeds the limits of [`limits`](super::limits) (the message names the shape,
    /// the offending size and the limit).
    TooLarge(String),
}

fn rank3(op_slot: usize, s: &Shape) -> Result<(usize, usize, usize), ShapeIssue> {
    match s.0[..] {
        [c, h, w] => Ok((c, h, w)),
        _ => Err(ShapeIssue::Mismatch {
            slot: op_slot,
            expected: "a rank-3 [C, H, W] tensor".into(),
            found: s.clone(),
        }),
    }
}

/// Output size of a sliding window along one axis, or an attribute error.
fn window(
    axis: &str,
    size: usize,
    k: usize,
    s: usize,
    pad_lo: usize,
    pad_hi: usize,
) -> Result<usize, ShapeIssue> {
    if k == 0 {
        return Err(ShapeIssue::Attribute(format!(
            "kernel {axis} must be at least 1, got 0"
        )));
    }
    if s == 0 {
        return Err(ShapeIssue::Attribute(format!(
            "stride {axis} must be at least 1, got 0"
        )));
    }
    let Some(padded) = size.checked_add(pad_lo).and_then(|p| p.checked_add(pad_hi)) else {
        return Err(ShapeIssue::Attribute(format!(
            "padding {pad_lo} + {pad_hi} along {axis} is too large"
        )));
    };
    if padded > MAX_DIM {
        return Err(ShapeIssue::TooLarge(format!(
            "padding {pad_lo} + {pad_hi} along {axis} makes the padded input {axis} {padded}, \
             above the limit of {} per dimension",
            describe(MAX_DIM)
        )));
    }
    if k > padded {
        return Err(ShapeIssue::Attribute(format!(
            "kernel {axis} {k} is larger than the padded input {axis} {padded} ({size} + {pad_lo} + {pad_hi})"
        )));
    }
    Ok((padded - k) / s + 1)
}

fn windowed(
    input: &Shape,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 4],
) -> Result<(usize, usize, usize), ShapeIssue> {
    let (c, h, w) = rank3(0, input)?;
    let oh = window("height", h, kernel[0], stride[0], padding[0], padding[2])?;
    let ow = window("width", w, kernel[1], stride[1], padding[1], padding[3])?;
    Ok((c, oh, ow))
}

/// Infers the output shape of `op` applied to operands of shapes `operands` (slot order).
/// The caller checks arity first; missing operands give a [`ShapeIssue::Attribute`]. An input
/// shape or an output shape beyond the [`limits`](super::limits) gives a
/// [`ShapeIssue::TooLarge`].
pub fn infer(op: &Op, operands: &[&Shape]) -> Result<Shape, ShapeIssue> {
    if let Op::Input { shape, .. } = op {
        if !shape.is_empty() && !shape.contains(&0) {
            check_activation(shape)
                .map_err(|m| ShapeIssue::TooLarge(format!("input shape: {m}")))?;
        }
    }
    let out = infer_unchecked(op, operands)?;
    check_activation(&out).map_err(|m| ShapeIssue::TooLarge(format!("output shape: {m}")))?;
    Ok(out)
}

fn infer_unchecked(op: &Op, operands: &[&Shape]) -> Result<Shape, ShapeIssue> {
    let first = || {
        operands
            .first()
            .copied()
            .ok_or_else(|| ShapeIssue::Attribute("missing operand".into()))
    };
    match op {
        Op::Input { shape, norm } => {
            if shape.is_empty() || shape.contains(&0) {
                return Err(ShapeIssue::Attribute(format!(
                    "input shape {shape} must be non-empty with positive dimensions"
                )));
            }
            let c = shape[0];
            for (what, v) in [("mean", &norm.mean), ("std", &norm.std)] {
                if !(v.len() == 1 || v.len() == c) || v.iter().any(|x| !x.is_finite()) {
                    return Err(ShapeIssue::Attribute(format!(
                        "normalisation {what} must be 1 or {c} finite values, got {v:?}"
                    )));
                }
            }
            check_multipliers("mean", &norm.mean, norm.mean.len() > 1)
                .and_then(|()| check_input_std("std", &norm.std))
                .map_err(|m| ShapeIssue::Attribute(format!("normalisation {m}")))?;
            if let Some([lo, hi]) = norm.range {
                if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                    return Err(ShapeIssue::Attribute(format!(
                        "input range [{lo}, {hi}] must be finite with lo < hi"
                    )));
                }
            }
            Ok(shape.clone())
        }
        Op::Conv2d {
            out_channels,
            kernel,
            stride,
            padding,
            groups,
            ..
        } => {
            let x = first()?;
            let (c, _, _) = rank3(0, x)?;
            if *out_channels == 0 {
                return Err(ShapeIssue::Attribute(
                    "out_channels must be at least 1".into(),
                ));
            }
            if *groups == 0 || c % groups != 0 || out_channels % groups != 0 {
                return Err(ShapeIssue::Attribute(format!(
                    "groups = {groups} must divide both the input channels ({c}) and out_channels ({out_channels})"
                )));
            }
            let (_, oh, ow) = windowed(x, *kernel, *stride, *padding)?;
            Ok(Shape::from([*out_channels, oh, ow]))
        }
        Op::MaxPool {
            kernel, padding, ..
        } if padding[0].max(padding[2]) >= kernel[0] || padding[1].max(padding[3]) >= kernel[1] => {
            Err(ShapeIssue::Attribute(format!(
                "max_pool padding {padding:?} must be smaller than the kernel {kernel:?}"
            )))
        }
        Op::AvgPool {
            kernel,
            stride,
            padding,
        }
        | Op::MaxPool {
            kernel,
            stride,
            padding,
        } => {
            let (c, oh, ow) = windowed(first()?, *kernel, *stride, *padding)?;
            Ok(Shape::from([c, oh, ow]))
        }
        Op::GlobalAvgPool => {
            let (c, _, _) = rank3(0, first()?)?;
            Ok(Shape::from([c]))
        }
        Op::Dense { out_features, .. } => {
            let x = first()?;
            if x.rank() != 1 {
                return Err(ShapeIssue::Mismatch {
                    slot: 0,
                    expected: "a rank-1 [F] tensor (insert a `flatten` before `dense`)".into(),
                    found: x.clone(),
                });
            }
            if *out_features == 0 {
                return Err(ShapeIssue::Attribute(
                    "out_features must be at least 1".into(),
                ));
            }
            Ok(Shape::from([*out_features]))
        }
        Op::Flatten => Ok(Shape::from([first()?.numel()])),
        Op::Reshape { shape } => {
            let x = first()?;
            if shape.is_empty() || shape.checked_numel() != Some(x.numel()) {
                return Err(ShapeIssue::Mismatch {
                    slot: 0,
                    expected: format!(
                        "a tensor with {} elements to reshape to {shape}",
                        shape.numel()
                    ),
                    found: x.clone(),
                });
            }
            Ok(shape.clone())
        }
        Op::Concat { axis } => {
            let x = first()?;
            if *axis >= x.rank() {
                return Err(ShapeIssue::Attribute(format!(
                    "concat axis {axis} is out of range for rank-{} operands",
                    x.rank()
                )));
            }
            let mut out = x.clone();
            for (slot, s) in operands.iter().enumerate().skip(1) {
                let ok = s.rank() == x.rank()
                    && s.iter()
                        .zip(x.iter())
                        .enumerate()
                        .all(|(i, (a, b))| i == *axis || a == b);
                if !ok {
                    let mut want: Vec<String> = x.iter().map(|d| d.to_string()).collect();
                    want[*axis] = "*".into();
                    return Err(ShapeIssue::Mismatch {
                        slot,
                        expected: format!(
                            "[{}] (all axes but {axis} equal to operand 0)",
                            want.join(", ")
                        ),
                        found: (*s).clone(),
                    });
                }
                out.0[*axis] = out.0[*axis].saturating_add(s[*axis]);
            }
            Ok(out)
        }
        Op::Add => {
            let x = first()?;
            for (slot, s) in operands.iter().enumerate().skip(1) {
                if *s != x {
                    return Err(ShapeIssue::Mismatch {
                        slot,
                        expected: format!("{x} (the shape of operand 0)"),
                        found: (*s).clone(),
                    });
                }
            }
            Ok(x.clone())
        }
        Op::BatchNorm { epsilon, .. } => {
            let x = first()?;
            if x.rank() == 0 {
                return Err(ShapeIssue::Mismatch {
                    slot: 0,
                    expected: "a tensor with a channel axis".into(),
                    found: x.clone(),
                });
            }
            if *epsilon < 0.0 {
                return Err(ShapeIssue::Attribute(format!(
                    "`epsilon` must be non-negative, got {}",
                    fmt_value(*epsilon)
                )));
            }
            check_multipliers("epsilon", &[*epsilon], false).map_err(ShapeIssue::Attribute)?;
            Ok(x.clone())
        }
        Op::Scale { factor } => {
            check_multipliers("factor", &[*factor], false).map_err(ShapeIssue::Attribute)?;
            Ok(first()?.clone())
        }
        Op::Poly { coeffs } => {
            if coeffs.is_empty() {
                return Err(ShapeIssue::Attribute(
                    "poly needs at least one coefficient".into(),
                ));
            }
            check_multipliers("coeffs", coeffs, true).map_err(ShapeIssue::Attribute)?;
            Ok(first()?.clone())
        }
        Op::Relu | Op::Square | Op::Quadratic { .. } => Ok(first()?.clone()),
    }
}

/// The weights `op` reads and the shape each must have, given the shape of operand 0, as
/// `(role, weight name, expected shape)`.
pub fn expected_weights<'a>(op: &'a Op, input: &Shape) -> Vec<(&'static str, &'a str, Shape)> {
    let ch = input.first().copied().unwrap_or(0);
    match op {
        Op::Conv2d {
            out_channels,
            kernel,
            groups,
            weight,
            bias,
            ..
        } => {
            let g = (*groups).max(1);
            let mut v = vec![(
                "weight",
                weight.as_str(),
                Shape::from([*out_channels, ch / g, kernel[0], kernel[1]]),
            )];
            if let Some(b) = bias {
                v.push(("bias", b.as_str(), Shape::from([*out_channels])));
            }
            v
        }
        Op::Dense {
            out_features,
            weight,
            bias,
        } => {
            let mut v = vec![(
                "weight",
                weight.as_str(),
                Shape::from([*out_features, input.numel()]),
            )];
            if let Some(b) = bias {
                v.push(("bias", b.as_str(), Shape::from([*out_features])));
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
            ("gamma", gamma.as_str(), Shape::from([ch])),
            ("beta", beta.as_str(), Shape::from([ch])),
            ("mean", mean.as_str(), Shape::from([ch])),
            ("var", var.as_str(), Shape::from([ch])),
        ],
        Op::Quadratic {
            granularity,
            coeffs,
        } => vec![("coeffs", coeffs.as_str(), granularity.coeff_shape(input))],
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
