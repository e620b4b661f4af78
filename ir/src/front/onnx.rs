//! The ONNX front end: a binary `ModelProto` to a verified tensor [`Graph`].
//!
//! The subset of `onnx.proto` needed is declared by hand in [`proto`] with the official field
//! numbers (prost skips unknown fields). [`SUPPORTED_OPS`] lists the op types imported. Beyond
//! the layers (Conv with dilations, 1-D or 2-D; BatchNormalization; Relu, LeakyRelu, PRelu;
//! average/max/global pooling with `auto_pad`, `ceil_mode` where exact; Gemm; MatMul + Add;
//! Flatten; Reshape; Concat), the importer cleans up what exporters write: constant
//! subgraphs are folded (`Shape -> Gather -> Unsqueeze -> Concat -> Reshape`, Cast, Slice and
//! arithmetic on initializers), no-ops removed (Identity, Dropout, float Cast, zero Pad), a zero
//! Pad folded into the next Conv/AveragePool, Sub/Neg/Div and scalar or per-channel constant
//! Add/Mul turned into `scale` or an affine `batch_norm`, ReduceMean/ReduceSum over the
//! spatial axes into a global average pool, Squeeze/Unsqueeze/Transpose that only move axes of
//! length 1 into `reshape`, a trailing Softmax/LogSoftmax/Sigmoid and non-float outputs
//! (labels) dropped. [`Graph::notes`] records each rewrite.
//!
//! Conventions: the graph input's first dimension is the batch and is dropped (`[N, C, H, W]`
//! becomes `[C, H, W]`); ONNX axes are shifted accordingly. An ONNX `GlobalAveragePool` yields a
//! `[C]` value (ONNX: `[N, C, 1, 1]`), which a following Flatten/Reshape leaves as is.
//!
//! Errors: undecodable bytes give [`FrontError::OnnxDecode`]; unsupported op types give one
//! [`FrontError::OnnxUnsupported`] listing *every* unsupported node by name and op type; a
//! supported op used in an unsupported way gives [`FrontError::OnnxNode`]; graph errors found by
//! the verifier give [`FrontError::Invalid`]. Nothing panics. Graph input dimensions (the batch
//! dimension included, unless symbolic), initializer shapes, folded constants and every
//! inferred shape are checked against the [`limits`](crate::tensor::limits) before anything is
//! allocated for them. A model must import the default opset in a version from [`MIN_OPSET`]
//! to [`MAX_OPSET`], and every value must have one producer ([`FrontError::OnnxModel`]
//! otherwise).

use std::collections::{HashMap, HashSet};

use ndarray::IxDyn;
use prost::Message;

use super::onnx_consts as consts;
use super::weights::decode_le;
use super::{FrontError, Problem};
use crate::tensor::limits::{
    add_parameters, check_activation, check_dims, check_weight, describe, MAX_DIM,
    MAX_TENSOR_ELEMENTS, MAX_WEIGHT_ELEMENTS,
};
use crate::tensor::shape::{infer, ShapeIssue};
use crate::tensor::verify::analyze;
use crate::tensor::{Graph, NodeId, Normalization, Op, Shape, Tensor};

/// Hand-written subset of `onnx.proto` (official field numbers; other fields are skipped).
pub mod proto {
    /// `onnx.ModelProto`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelProto {
        /// IR version.
        #[prost(int64, tag = "1")]
        pub ir_version: i64,
        /// Operator sets used.
        #[prost(message, repeated, tag = "8")]
        pub opset_import: Vec<OperatorSetIdProto>,
        /// Producer name.
        #[prost(string, tag = "2")]
        pub producer_name: String,
        /// The graph.
        #[prost(message, optional, tag = "7")]
        pub graph: Option<GraphProto>,
    }

    /// `onnx.OperatorSetIdProto`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct OperatorSetIdProto {
        /// Domain (empty = default ONNX domain).
        #[prost(string, tag = "1")]
        pub domain: String,
        /// Opset version.
        #[prost(int64, tag = "2")]
        pub version: i64,
    }

    /// `onnx.GraphProto`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GraphProto {
        /// Nodes in topological order.
        #[prost(message, repeated, tag = "1")]
        pub node: Vec<NodeProto>,
        /// Graph name.
        #[prost(string, tag = "2")]
        pub name: String,
        /// Constant tensors (weights).
        #[prost(message, repeated, tag = "5")]
        pub initializer: Vec<TensorProto>,
        /// Graph inputs (may include initializers).
        #[prost(message, repeated, tag = "11")]
        pub input: Vec<ValueInfoProto>,
        /// Graph outputs.
        #[prost(message, repeated, tag = "12")]
        pub output: Vec<ValueInfoProto>,
    }

    /// `onnx.NodeProto`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NodeProto {
        /// Input value names (empty string = omitted optional input).
        #[prost(string, repeated, tag = "1")]
        pub input: Vec<String>,
        /// Output value names.
        #[prost(string, repeated, tag = "2")]
        pub output: Vec<String>,
        /// Node name.
        #[prost(string, tag = "3")]
        pub name: String,
        /// Op type, e.g. `Conv`.
        #[prost(string, tag = "4")]
        pub op_type: String,
        /// Op domain.
        #[prost(string, tag = "7")]
        pub domain: String,
        /// Attributes.
        #[prost(message, repeated, tag = "5")]
        pub attribute: Vec<AttributeProto>,
    }

    /// `onnx.AttributeProto`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AttributeProto {
        /// Attribute name.
        #[prost(string, tag = "1")]
        pub name: String,
        /// AttributeType discriminant.
        #[prost(int32, tag = "20")]
        pub r#type: i32,
        /// Float value.
        #[prost(float, tag = "2")]
        pub f: f32,
        /// Int value.
        #[prost(int64, tag = "3")]
        pub i: i64,
        /// String value.
        #[prost(bytes = "vec", tag = "4")]
        pub s: Vec<u8>,
        /// Tensor value.
        #[prost(message, optional, tag = "5")]
        pub t: Option<TensorProto>,
        /// Float list.
        #[prost(float, repeated, tag = "7")]
        pub floats: Vec<f32>,
        /// Int list.
        #[prost(int64, repeated, tag = "8")]
        pub ints: Vec<i64>,
    }

    /// `onnx.TensorProto`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorProto {
        /// Dimensions.
        #[prost(int64, repeated, tag = "1")]
        pub dims: Vec<i64>,
        /// DataType discriminant (1 = FLOAT, 7 = INT64, 11 = DOUBLE ...).
        #[prost(int32, tag = "2")]
        pub data_type: i32,
        /// FLOAT (and FLOAT16 bits) data.
        #[prost(float, repeated, tag = "4")]
        pub float_data: Vec<f32>,
        /// INT32-like data.
        #[prost(int32, repeated, tag = "5")]
        pub int32_data: Vec<i32>,
        /// INT64 data.
        #[prost(int64, repeated, tag = "7")]
        pub int64_data: Vec<i64>,
        /// Tensor name.
        #[prost(string, tag = "8")]
        pub name: String,
        /// Raw little-endian data.
        #[prost(bytes = "vec", tag = "9")]
        pub raw_data: Vec<u8>,
        /// DOUBLE data.
        #[prost(double, repeated, tag = "10")]
        pub double_data: Vec<f64>,
        /// UINT64/UINT32 data.
        #[prost(uint64, repeated, tag = "11")]
        pub uint64_data: Vec<u64>,
        /// 1 = external data (not supported).
        #[prost(int32, tag = "14")]
        pub data_location: i32,
    }

    /// `onnx.ValueInfoProto`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueInfoProto {
        /// Value name.
        #[prost(string, tag = "1")]
        pub name: String,
        /// Type.
        #[prost(message, optional, tag = "2")]
        pub r#type: Option<TypeProto>,
    }

    /// `onnx.TypeProto` (only the tensor case).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TypeProto {
        /// Tensor type.
        #[prost(message, optional, tag = "1")]
        pub tensor_type: Option<TypeProtoTensor>,
    }

    /// `onnx.TypeProto.Tensor`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TypeProtoTensor {
        /// Element DataType.
        #[prost(int32, tag = "1")]
        pub elem_type: i32,
        /// Shape.
        #[prost(message, optional, tag = "2")]
        pub shape: Option<TensorShapeProto>,
    }

    /// `onnx.TensorShapeProto`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorShapeProto {
        /// Dimensions.
        #[prost(message, repeated, tag = "1")]
        pub dim: Vec<Dimension>,
    }

    /// `onnx.TensorShapeProto.Dimension`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dimension {
        /// Fixed size.
        #[prost(int64, optional, tag = "1")]
        pub dim_value: Option<i64>,
        /// Symbolic size.
        #[prost(string, optional, tag = "2")]
        pub dim_param: Option<String>,
    }
}

use proto::{AttributeProto, NodeProto, TensorProto};

/// Converts an ONNX tensor to an `f64` tensor.
fn tensor_to_f64(t: &TensorProto) -> Result<Tensor, String> {
    if t.data_location == 1 {
        return Err("external tensor data is not supported".into());
    }
    let mut dims = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        dims.push(usize::try_from(d).map_err(|_| format!("negative dimension {d}"))?);
    }
    let n = check_weight(&dims)?;
    let vals: Vec<f64> = if !t.raw_data.is_empty() {
        let code = match t.data_type {
            1 => "f4",
            2 => "u1",
            3 => "i1",
            4 => "u2",
            5 => "i2",
            6 => "i4",
            7 => "i8",
            9 => "b1",
            10 => "f2",
            11 => "f8",
            12 => "u4",
            13 => "u8",
            16 => "bf16",
            d => return Err(format!("unsupported tensor data type {d}")),
        };
        decode_le(code, &t.raw_data).ok_or("undecodable raw data")?
    } else {
        match t.data_type {
            1 => t.float_data.iter().map(|&v| v as f64).collect(),
            11 => t.double_data.clone(),
            7 => t.int64_data.iter().map(|&v| v as f64).collect(),
            2..=6 | 9 => t.int32_data.iter().map(|&v| v as f64).collect(),
            12 | 13 => t.uint64_data.iter().map(|&v| v as f64).collect(),
            d => return Err(format!("unsupported tensor data type {d}")),
        }
    };
    if vals.len() != n {
        return Err(format!(
            "tensor `{}` has {} values for shape {dims:?}",
            t.name,
            vals.len()
        ));
    }
    Tensor::from_shape_vec(IxDyn(&dims), vals).map_err(|e| e.to_string())
}

fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

fn attr_i(n: &NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).map(|a| a.i).unwrap_or(default)
}

fn attr_f(n: &NodeProto, name: &str, default: f64) -> f64 {
    attr(n, name).map(|a| a.f as f64).unwrap_or(default)
}

fn attr_ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(n, name).map(|a| a.ints.clone())
}

/// True for the integer (and boolean) ONNX element types.
fn is_int_type(data_type: i32) -> bool {
    matches!(data_type, 2..=7 | 9 | 12 | 13)
}

/// A conv or pooling window on a 2-D (`[C, H, W]`) or 1-D (`[C, L]`, held as `[C, 1, L]`)
/// input: kernel, stride, zero padding `[top, left, bottom, right]` and dilation.
#[derive(Clone, Copy, Debug)]
struct Window {
    kernel: [usize; 2],
    stride: [usize; 2],
    pads: [usize; 4],
    dilation: [usize; 2],
}

impl Window {
    /// The extent of the dilated kernel.
    fn extent(&self) -> [usize; 2] {
        [0, 1].map(|d| {
            (self.kernel[d].max(1) - 1)
                .saturating_mul(self.dilation[d])
                .saturating_add(1)
        })
    }
}

/// What an ONNX value name stands for while importing.
#[derive(Clone)]
enum Value {
    Node(NodeId),
    Const(String),
}

/// Op types whose result is computed at import time when every operand is a constant (or, for
/// `Shape`, when the operand's shape is known).
const FOLDABLE: &[&str] = &[
    "Abs",
    "Add",
    "Cast",
    "Ceil",
    "Concat",
    "ConstantOfShape",
    "Div",
    "Dropout",
    "Floor",
    "Gather",
    "Identity",
    "Mul",
    "Neg",
    "Pow",
    "Reciprocal",
    "Reshape",
    "Shape",
    "Size",
    "Slice",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Transpose",
    "Unsqueeze",
];

/// Non-polynomial ops that are dropped when they produce a graph output (the class scores
/// before them have the same argmax).
pub const MONOTONE_HEADS: &[&str] = &["Softmax", "LogSoftmax", "Sigmoid"];

struct Importer {
    g: Graph,
    values: HashMap<String, Value>,
    shapes: HashMap<NodeId, Shape>,
    /// ONNX's per-image dimensions where they differ from the node's shape: 1-D data `[C, L]`
    /// is held as `[C, 1, L]`; a global average pool's `[C]` is ONNX's `[C, 1, 1]`.
    onnx_dims: HashMap<NodeId, Vec<usize>>,
    consts: HashMap<String, Tensor>,
    /// Constants of an integer type (integer division semantics).
    int_consts: HashSet<String>,
    /// Dense nodes created from MatMul without bias yet (for MatMul + Add fusion).
    matmul: HashMap<NodeId, usize>,
    /// Op types consuming each value name.
    consumers: HashMap<String, Vec<String>>,
    /// Graph output names.
    outputs: HashSet<String>,
    /// Values that reach a kept output through shape-only nodes (Identity, Reshape, ...):
    /// a Softmax/Sigmoid producing one of them is a trailing head.
    trailing: HashSet<String>,
    /// Version of the default ONNX opset the model imports.
    opset: i64,
    /// Zero padding of a removed `Pad`, to add to the padding of its one consumer.
    pads: HashMap<String, [usize; 4]>,
    notes: Vec<String>,
    /// The first shape found beyond the limits while importing: `(node, message)`.
    too_large: Option<(String, String)>,
}

impl Importer {
    fn err(&self, n: &NodeProto, name: &str, message: impl Into<String>) -> FrontError {
        FrontError::OnnxNode {
            node: name.to_string(),
            op_type: n.op_type.clone(),
            message: message.into(),
        }
    }

    fn input_name<'a>(&self, n: &'a NodeProto, i: usize) -> Option<&'a str> {
        n.input.get(i).map(String::as_str).filter(|s| !s.is_empty())
    }

    fn node_input(&self, n: &NodeProto, name: &str, i: usize) -> Result<NodeId, FrontError> {
        let v = self
            .input_name(n, i)
            .ok_or_else(|| self.err(n, name, format!("missing input {i}")))?;
        match self.values.get(v) {
            Some(Value::Node(id)) => Ok(*id),
            Some(Value::Const(_)) => Err(self.err(
                n,
                name,
                format!("input {i} (`{v}`) is a constant; a computed tensor is expected"),
            )),
            None => Err(self.err(n, name, format!("input {i} (`{v}`) is not defined"))),
        }
    }

    fn const_input(
        &self,
        n: &NodeProto,
        name: &str,
        i: usize,
    ) -> Result<(String, &Tensor), FrontError> {
        let v = self
            .input_name(n, i)
            .ok_or_else(|| self.err(n, name, format!("missing input {i}")))?;
        match self.values.get(v) {
            Some(Value::Const(k)) => self
                .consts
                .get(k)
                .map(|t| (k.clone(), t))
                .ok_or_else(|| self.err(n, name, format!("constant `{v}` has no data"))),
            _ => Err(self.err(
                n,
                name,
                format!("input {i} (`{v}`) must be an initializer or a constant expression"),
            )),
        }
    }

    /// An optional constant input as integers (axes, pads, shapes).
    fn const_ints(
        &self,
        n: &NodeProto,
        name: &str,
        i: usize,
    ) -> Result<Option<Vec<i64>>, FrontError> {
        if self.input_name(n, i).is_none() {
            return Ok(None);
        }
        let (_, t) = self.const_input(n, name, i)?;
        consts::ints(t).map(Some).map_err(|m| self.err(n, name, m))
    }

    /// Integer list from attribute `attr_name`, or else from input `i` (the opset moved many
    /// attributes to inputs).
    fn ints_attr_or_input(
        &self,
        n: &NodeProto,
        name: &str,
        attr_name: &str,
        i: usize,
    ) -> Result<Option<Vec<i64>>, FrontError> {
        match attr_ints(n, attr_name) {
            Some(v) => Ok(Some(v)),
            None => self.const_ints(n, name, i),
        }
    }

    fn is_const(&self, n: &NodeProto, i: usize) -> bool {
        self.input_name(n, i)
            .is_some_and(|v| matches!(self.values.get(v), Some(Value::Const(_))))
    }

    /// Binds output 0 of `n` to `v`.
    fn bind(&mut self, n: &NodeProto, v: Value) {
        if let Some(out) = n.output.first() {
            self.values.insert(out.clone(), v);
        }
    }

    fn bind_const(&mut self, n: &NodeProto, t: Tensor, int: bool) {
        if let Some(out) = n.output.first() {
            self.consts.insert(out.clone(), t);
            if int {
                self.int_consts.insert(out.clone());
            } else {
                self.int_consts.remove(out);
            }
            self.values.insert(out.clone(), Value::Const(out.clone()));
        }
    }

    /// Stores `t` as weight `name` (unless already stored) and returns the name.
    fn weight(&mut self, name: String, t: Tensor) -> String {
        self.g.weights.entry(name.clone()).or_insert(t);
        name
    }

    /// ONNX per-image dimensions of a computed value.
    fn dims(&self, id: NodeId) -> Option<Vec<usize>> {
        self.onnx_dims
            .get(&id)
            .cloned()
            .or_else(|| self.shapes.get(&id).map(|s| s.0.clone()))
    }

    /// Adds a node without binding an ONNX value to it.
    fn add_aux(&mut self, name: &str, op: Op, inputs: &[NodeId]) -> NodeId {
        let elementwise = matches!(
            op,
            Op::BatchNorm { .. }
                | Op::Relu
                | Op::Scale { .. }
                | Op::Square
                | Op::Poly { .. }
                | Op::Quadratic { .. }
                | Op::Add
        );
        let id = self.g.add_node(name, op, inputs);
        let shapes: Vec<&Shape> = inputs.iter().filter_map(|i| self.shapes.get(i)).collect();
        if shapes.len() == inputs.len() {
            if let Some(node) = self.g.node(id) {
                match infer(&node.op, &shapes) {
                    Ok(s) => {
                        self.shapes.insert(id, s);
                    }
                    Err(ShapeIssue::TooLarge(m)) if self.too_large.is_none() => {
                        self.too_large = Some((name.to_string(), m));
                    }
                    // Other problems are reported by the verifier.
                    Err(_) => {}
                }
            }
        }
        if elementwise {
            if let Some(d) = inputs.first().and_then(|i| self.onnx_dims.get(i)).cloned() {
                self.onnx_dims.insert(id, d);
            }
        }
        id
    }

    /// Adds a node and binds output 0 of `n` to it.
    fn add(&mut self, n: &NodeProto, name: &str, op: Op, inputs: &[NodeId]) -> NodeId {
        let id = self.add_aux(name, op, inputs);
        self.bind(n, Value::Node(id));
        id
    }

    /// `x * mul + add` with constants broadcast against `x` (ONNX rules, batch axis first):
    /// a scalar factor becomes `scale`, per-channel constants a `batch_norm` with unit
    /// variance; constants that vary within a channel are refused.
    fn affine(
        &mut self,
        n: &NodeProto,
        name: &str,
        x: NodeId,
        mul: Option<Tensor>,
        add: Option<Tensor>,
    ) -> Result<NodeId, FrontError> {
        let xd = self
            .dims(x)
            .ok_or_else(|| self.err(n, name, "the input shape is unknown"))?;
        let mut full = vec![1];
        full.extend_from_slice(&xd);
        let channels = xd.first().copied().unwrap_or(1).max(1);
        let numel: usize = xd.iter().product();
        let per_c = numel / channels;
        let per_channel = |t: &Tensor| -> Result<Vec<f64>, String> {
            if consts::broadcast_shape(t.shape(), &full).as_deref() != Some(&full[..]) {
                return Err(format!(
                    "a constant of shape {:?} does not broadcast to the input {full:?}",
                    t.shape()
                ));
            }
            let b = t
                .broadcast(IxDyn(&full))
                .ok_or_else(|| format!("cannot broadcast {:?}", t.shape()))?;
            let flat: Vec<f64> = b.iter().copied().collect();
            let mut v = Vec::with_capacity(channels);
            for c in 0..channels {
                let slab = &flat[c * per_c..(c + 1) * per_c];
                if slab.iter().any(|&y| y != slab[0]) {
                    return Err(format!(
                        "a constant of shape {:?} varies within a channel; only scalar and \
                         per-channel constants are supported",
                        t.shape()
                    ));
                }
                v.push(slab[0]);
            }
            Ok(v)
        };
        let m = mul
            .as_ref()
            .map(&per_channel)
            .transpose()
            .map_err(|e| self.err(n, name, e))?;
        let a = add
            .as_ref()
            .map(&per_channel)
            .transpose()
            .map_err(|e| self.err(n, name, e))?;
        let at = |m: &Option<Vec<f64>>| m.iter().flatten().any(|v| !v.is_finite());
        if at(&m) || at(&a) {
            return Err(self.err(n, name, "the constant is not finite"));
        }
        let uniform = |v: &[f64]| v.iter().all(|&y| y == v[0]);
        let id = match (m, a) {
            (Some(m), None) if uniform(&m) => self.add_aux(name, Op::Scale { factor: m[0] }, &[x]),
            (None, None) => x,
            (m, a) => {
                let gamma = m.unwrap_or_else(|| vec![1.0; channels]);
                let beta = a.unwrap_or_else(|| vec![0.0; channels]);
                let g = self.weight(format!("{name}.scale"), consts::vector(&gamma));
                let b = self.weight(format!("{name}.shift"), consts::vector(&beta));
                let mean =
                    self.weight(format!("{name}.zero"), consts::vector(&vec![0.0; channels]));
                let var = self.weight(format!("{name}.one"), consts::vector(&vec![1.0; channels]));
                self.add_aux(
                    name,
                    Op::BatchNorm {
                        gamma: g,
                        beta: b,
                        mean,
                        var,
                        epsilon: 0.0,
                    },
                    &[x],
                )
            }
        };
        self.bind(n, Value::Node(id));
        Ok(id)
    }

    /// The window attributes of a Conv or pooling node on input `x`; `kernel` is the
    /// weight's kernel for Conv.
    fn window(
        &self,
        n: &NodeProto,
        name: &str,
        x: NodeId,
        kernel: Option<[usize; 2]>,
    ) -> Result<Window, FrontError> {
        let xd = self
            .dims(x)
            .ok_or_else(|| self.err(n, name, "the input shape is unknown"))?;
        let spatial = match xd.len() {
            3 => 2,
            2 => 1,
            r => {
                return Err(self.err(
                    n,
                    name,
                    format!(
                        "the input must be [N, C, H, W] or [N, C, L], got rank {}",
                        r + 1
                    ),
                ))
            }
        };
        let hw = match self.shapes.get(&x).map(|s| s.0.as_slice()) {
            Some([_, h, w]) => [*h, *w],
            _ => return Err(self.err(n, name, "the input shape is unknown")),
        };
        let list = |what: &str, default: usize| -> Result<Option<[usize; 2]>, FrontError> {
            match attr_ints(n, what) {
                None => Ok(None),
                Some(v) if v.len() == spatial && v.iter().all(|&x| x >= 0) => {
                    Ok(Some(if spatial == 2 {
                        [v[0] as usize, v[1] as usize]
                    } else {
                        [default, v[0] as usize]
                    }))
                }
                Some(v) => Err(self.err(
                    n,
                    name,
                    format!("`{what}` must be {spatial} non-negative ints, got {v:?}"),
                )),
            }
        };
        let kernel = match (list("kernel_shape", 1)?, kernel) {
            (Some(k), _) | (None, Some(k)) => k,
            (None, None) => return Err(self.err(n, name, "`kernel_shape` is required")),
        };
        let stride = list("strides", 1)?.unwrap_or([1, 1]);
        let dilation = list("dilations", 1)?.unwrap_or([1, 1]);
        if stride.contains(&0) || dilation.contains(&0) || kernel.contains(&0) {
            return Err(self.err(n, name, "kernel, strides and dilations must be positive"));
        }
        let mut pads = match attr_ints(n, "pads") {
            None => [0; 4],
            Some(v) if v.len() == 2 * spatial && v.iter().all(|&x| x >= 0) => {
                let u: Vec<usize> = v.iter().map(|&x| x as usize).collect();
                if spatial == 2 {
                    [u[0], u[1], u[2], u[3]]
                } else {
                    [0, u[0], 0, u[1]]
                }
            }
            Some(v) => {
                return Err(self.err(
                    n,
                    name,
                    format!(
                        "`pads` must be {} non-negative ints, got {v:?}",
                        2 * spatial
                    ),
                ))
            }
        };
        let mut w = Window {
            kernel,
            stride,
            pads,
            dilation,
        };
        if let Some(a) = attr(n, "auto_pad") {
            match String::from_utf8_lossy(&a.s).as_ref() {
                "" | "NOTSET" => {}
                "VALID" => w.pads = [0; 4],
                mode @ ("SAME_UPPER" | "SAME_LOWER") => {
                    let ext = w.extent();
                    for d in 0..2 {
                        let out = hw[d].div_ceil(stride[d]);
                        let total = ((out.max(1) - 1).saturating_mul(stride[d]))
                            .saturating_add(ext[d])
                            .saturating_sub(hw[d]);
                        let (small, big) = (total / 2, total - total / 2);
                        let (begin, end) = if mode == "SAME_UPPER" {
                            (small, big)
                        } else {
                            (big, small)
                        };
                        pads[d] = begin;
                        pads[d + 2] = end;
                    }
                    w.pads = pads;
                }
                other => return Err(self.err(n, name, format!("auto_pad = {other} is not known"))),
            }
        }
        Ok(w)
    }

    /// Adds the zero padding of a removed `Pad` feeding input 0 of `n`, if any.
    fn absorb_pad(&self, n: &NodeProto, w: &mut Window) {
        if let Some(p) = n.input.first().and_then(|i| self.pads.get(i)) {
            for (a, b) in w.pads.iter_mut().zip(p) {
                *a = a.saturating_add(*b);
            }
        }
    }

    /// Output dims of a conv/pool on a 1-D input are recorded as ONNX's `[C, L]`.
    fn keep_1d(&mut self, x: NodeId, y: NodeId) {
        if self.dims(x).is_some_and(|d| d.len() == 2) {
            if let Some(s) = self.shapes.get(&y) {
                if let [c, 1, l] = s.0[..] {
                    self.onnx_dims.insert(y, vec![c, l]);
                }
            }
        }
    }

    /// Computes `n` at import time if every operand is constant; returns whether it did.
    fn fold(&mut self, n: &NodeProto, name: &str) -> Result<bool, FrontError> {
        let op = n.op_type.as_str();
        if !FOLDABLE.contains(&op) {
            return Ok(false);
        }
        let inputs: Vec<&str> = n
            .input
            .iter()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .collect();
        if op == "Shape" || op == "Size" {
            let Some(Value::Node(x)) = inputs.first().and_then(|i| self.values.get(*i)).cloned()
            else {
                if !inputs.first().is_some_and(|i| self.consts.contains_key(*i)) {
                    return Ok(false);
                }
                let (_, t) = self.const_input(n, name, 0)?;
                let d: Vec<f64> = t.shape().iter().map(|&v| v as f64).collect();
                let t = if op == "Size" {
                    Tensor::from_elem(IxDyn(&[]), d.iter().product())
                } else {
                    consts::vector(&d)
                };
                self.bind_const(n, t, true);
                return Ok(true);
            };
            let dims = self
                .dims(x)
                .ok_or_else(|| self.err(n, name, "the input shape is unknown"))?;
            // The batch dimension is read as 1: exporters use it only to rebuild the leading
            // axis of a Reshape, which the importer drops.
            let mut full = vec![1.0];
            full.extend(dims.iter().map(|&d| d as f64));
            let t = if op == "Size" {
                Tensor::from_elem(IxDyn(&[]), full.iter().product())
            } else {
                let r = full.len() as i64;
                let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
                let start = clampi(attr_i(n, "start", 0));
                let end = attr(n, "end").map_or(full.len(), |a| clampi(a.i));
                consts::vector(full.get(start..end.max(start)).unwrap_or(&[]))
            };
            self.notes.push(format!(
                "`{name}` ({op}) folded to a constant (batch dimension read as 1)"
            ));
            self.bind_const(n, t, true);
            return Ok(true);
        }
        if inputs.is_empty() && op != "ConstantOfShape" {
            return Ok(false);
        }
        if !inputs.iter().all(|i| self.consts.contains_key(*i)) {
            return Ok(false);
        }
        let c = |i: usize| -> Result<&Tensor, FrontError> { Ok(self.const_input(n, name, i)?.1) };
        let int0 = inputs.first().is_some_and(|i| self.int_consts.contains(*i));
        let e = |m: String| self.err(n, name, m);
        let (t, int) = match op {
            "Identity" | "Dropout" => (c(0)?.clone(), int0),
            "Cast" => {
                let to = attr_i(n, "to", 1) as i32;
                let t = c(0)?;
                if is_int_type(to) {
                    (t.mapv(f64::trunc), true)
                } else {
                    (t.clone(), false)
                }
            }
            "Neg" => (c(0)?.mapv(|v| -v), int0),
            "Abs" => (c(0)?.mapv(f64::abs), int0),
            "Sqrt" => (c(0)?.mapv(f64::sqrt), false),
            "Reciprocal" => (c(0)?.mapv(|v| 1.0 / v), false),
            "Floor" => (c(0)?.mapv(f64::floor), int0),
            "Ceil" => (c(0)?.mapv(f64::ceil), int0),
            "Add" | "Sub" | "Mul" | "Div" | "Pow" => {
                let (a, b) = (c(0)?, c(1)?);
                let r = match op {
                    "Add" => consts::binary(a, b, |x, y| x + y),
                    "Sub" => consts::binary(a, b, |x, y| x - y),
                    "Mul" => consts::binary(a, b, |x, y| x * y),
                    "Pow" => consts::binary(a, b, f64::powf),
                    _ if int0 => consts::binary(a, b, |x, y| (x / y).trunc()),
                    _ => consts::binary(a, b, |x, y| x / y),
                };
                (r.map_err(e)?, int0)
            }
            "Gather" => (
                consts::gather(c(0)?, c(1)?, attr_i(n, "axis", 0)).map_err(e)?,
                int0,
            ),
            "Unsqueeze" | "Squeeze" => {
                let t = c(0)?;
                let axes = self.ints_attr_or_input(n, name, "axes", 1)?;
                let dims = if op == "Unsqueeze" {
                    let axes = axes.ok_or_else(|| self.err(n, name, "`axes` is required"))?;
                    consts::unsqueeze_dims(t.shape(), &axes)
                } else {
                    consts::squeeze_dims(t.shape(), axes.as_deref())
                }
                .map_err(e)?;
                let r = t
                    .clone()
                    .into_shape_with_order(IxDyn(&dims))
                    .map_err(|x| self.err(n, name, x.to_string()))?;
                (r, int0)
            }
            "Concat" => {
                let ts: Vec<&Tensor> = (0..inputs.len()).map(c).collect::<Result<_, _>>()?;
                let rank = ts.first().map_or(1, |t| t.ndim());
                let ax = consts::axis(attr_i(n, "axis", 0), rank).map_err(e)?;
                let total = ts.iter().fold(0usize, |a, t| a.saturating_add(t.len()));
                if total > MAX_WEIGHT_ELEMENTS {
                    return Err(self.err(
                        n,
                        name,
                        format!(
                            "the concatenation has {total} values, above the limit of {} values \
                             per weight tensor",
                            describe(MAX_WEIGHT_ELEMENTS)
                        ),
                    ));
                }
                let views: Vec<_> = ts.iter().map(|t| t.view()).collect();
                let r = ndarray::concatenate(ndarray::Axis(ax), &views)
                    .map_err(|x| self.err(n, name, format!("cannot concatenate: {x}")))?;
                (r, int0)
            }
            "Reshape" => {
                let t = c(0)?;
                let target = consts::ints(c(1)?).map_err(e)?;
                let dims = consts::reshape_dims(t.shape(), &target).map_err(e)?;
                let r = t
                    .clone()
                    .into_shape_with_order(IxDyn(&dims))
                    .map_err(|x| self.err(n, name, x.to_string()))?;
                (r, int0)
            }
            "Slice" => {
                let t = c(0)?;
                let (starts, ends, axes, steps) = if attr(n, "starts").is_some() {
                    (
                        attr_ints(n, "starts").unwrap_or_default(),
                        attr_ints(n, "ends").unwrap_or_default(),
                        attr_ints(n, "axes"),
                        None,
                    )
                } else {
                    (
                        self.const_ints(n, name, 1)?.unwrap_or_default(),
                        self.const_ints(n, name, 2)?.unwrap_or_default(),
                        self.const_ints(n, name, 3)?,
                        self.const_ints(n, name, 4)?,
                    )
                };
                let r = consts::slice(t, &starts, &ends, axes.as_deref(), steps.as_deref())
                    .map_err(e)?;
                (r, int0)
            }
            "Transpose" => (
                consts::transpose(c(0)?, &attr_ints(n, "perm").unwrap_or_default()).map_err(e)?,
                int0,
            ),
            "ConstantOfShape" => {
                let dims = self.const_ints(n, name, 0)?.unwrap_or_default();
                let mut shape = Vec::with_capacity(dims.len());
                for d in dims {
                    shape.push(
                        usize::try_from(d).map_err(|_| self.err(n, name, "negative dimension"))?,
                    );
                }
                check_dims(&shape, MAX_TENSOR_ELEMENTS, "constant")
                    .map_err(|m| self.err(n, name, m))?;
                let (v, int) = match attr(n, "value").and_then(|a| a.t.as_ref()) {
                    Some(t) => (
                        tensor_to_f64(t)
                            .map_err(e)?
                            .iter()
                            .next()
                            .copied()
                            .unwrap_or(0.0),
                        is_int_type(t.data_type),
                    ),
                    None => (0.0, false),
                };
                (Tensor::from_elem(IxDyn(&shape), v), int)
            }
            _ => return Ok(false),
        };
        self.bind_const(n, t, int);
        Ok(true)
    }

    fn import_node(&mut self, idx: usize, n: &NodeProto) -> Result<(), FrontError> {
        let name = if n.name.is_empty() {
            format!("{}_{idx}", n.op_type)
        } else {
            n.name.clone()
        };
        let name = name.as_str();
        if n.op_type != "Constant" && self.fold(n, name)? {
            return Ok(());
        }
        match n.op_type.as_str() {
            "Identity" | "Dropout" | "Cast" => {
                if n.op_type == "Cast" && is_int_type(attr_i(n, "to", 1) as i32) {
                    return Err(self.err(
                        n,
                        name,
                        "a Cast of a computed tensor to an integer type is not supported",
                    ));
                }
                if n.op_type == "Dropout"
                    && n.output.len() > 1
                    && n.output[1..].iter().any(|o| !o.is_empty())
                {
                    return Err(self.err(n, name, "the mask output of Dropout is not supported"));
                }
                if n.op_type == "Dropout" && self.input_name(n, 2).is_some() {
                    // training_mode (input 2) true with a non-zero ratio drops and rescales:
                    // not an inference graph.
                    let training = self
                        .const_ints(n, name, 2)?
                        .is_some_and(|v| v.iter().any(|&b| b != 0));
                    let ratio = if self.input_name(n, 1).is_some() {
                        let (_, t) = self.const_input(n, name, 1)?;
                        t.iter().copied().next().unwrap_or(0.5)
                    } else {
                        0.5
                    };
                    if training && ratio != 0.0 {
                        return Err(self.err(
                            n,
                            name,
                            "Dropout in training mode (training_mode = true) is random: export the model in eval mode",
                        ));
                    }
                }
                let x = self.node_input(n, name, 0)?;
                self.bind(n, Value::Node(x));
            }
            "Constant" => {
                let t = if let Some(t) = attr(n, "value").and_then(|a| a.t.as_ref()) {
                    let int = is_int_type(t.data_type);
                    (tensor_to_f64(t).map_err(|m| self.err(n, name, m))?, int)
                } else if let Some(a) = attr(n, "value_float") {
                    (Tensor::from_elem(IxDyn(&[]), a.f as f64), false)
                } else if let Some(a) = attr(n, "value_floats") {
                    (
                        consts::vector(&a.floats.iter().map(|&v| v as f64).collect::<Vec<_>>()),
                        false,
                    )
                } else if let Some(a) = attr(n, "value_int") {
                    (Tensor::from_elem(IxDyn(&[]), a.i as f64), true)
                } else if let Some(a) = attr(n, "value_ints") {
                    (
                        consts::vector(&a.ints.iter().map(|&v| v as f64).collect::<Vec<_>>()),
                        true,
                    )
                } else {
                    return Err(self.err(n, name, "only a numeric `value` is supported"));
                };
                self.bind_const(n, t.0, t.1);
            }
            "Conv" => {
                let x = self.node_input(n, name, 0)?;
                let (wname, w) = self.const_input(n, name, 1)?;
                let mut w = w.clone();
                let mut wname = wname;
                if w.ndim() == 3 {
                    let s = w.shape().to_vec();
                    w = w
                        .into_shape_with_order(IxDyn(&[s[0], s[1], 1, s[2]]))
                        .map_err(|e| self.err(n, name, e.to_string()))?;
                    wname = format!("{name}.weight");
                }
                if w.ndim() != 4 {
                    return Err(self.err(
                        n,
                        name,
                        format!("weight `{wname}` must be 3-D or 4-D, got {:?}", w.shape()),
                    ));
                }
                let mut win = self.window(n, name, x, Some([w.shape()[2], w.shape()[3]]))?;
                self.absorb_pad(n, &mut win);
                if win.kernel != [w.shape()[2], w.shape()[3]] {
                    return Err(self.err(
                        n,
                        name,
                        format!(
                            "kernel_shape {:?} does not match the weight {:?}",
                            win.kernel,
                            w.shape()
                        ),
                    ));
                }
                if win.dilation != [1, 1] {
                    // A dilated kernel is the kernel with zeros between its taps.
                    let ext = win.extent();
                    let s = w.shape().to_vec();
                    let dims = [s[0], s[1], ext[0], ext[1]];
                    check_weight(&dims).map_err(|m| {
                        self.err(
                            n,
                            name,
                            format!("dilations {:?}: the dilated kernel {m}", win.dilation),
                        )
                    })?;
                    let mut d = Tensor::zeros(IxDyn(&dims));
                    for ((o, i, y, x), v) in w
                        .view()
                        .into_dimensionality::<ndarray::Ix4>()
                        .map_err(|e| self.err(n, name, e.to_string()))?
                        .indexed_iter()
                    {
                        d[[o, i, y * win.dilation[0], x * win.dilation[1]]] = *v;
                    }
                    w = d;
                    win.kernel = ext;
                    wname = format!("{name}.weight");
                    self.notes.push(format!(
                        "`{name}` (Conv): dilations {:?} expanded into a {}x{} kernel",
                        win.dilation, ext[0], ext[1]
                    ));
                }
                let group = attr_i(n, "group", 1);
                let bias = if self.input_name(n, 2).is_some() {
                    let (b, t) = self.const_input(n, name, 2)?;
                    let t = t.clone();
                    Some(self.weight(b, t))
                } else {
                    None
                };
                let out_channels = w.shape()[0];
                let weight = self.weight(wname, w);
                let y = self.add(
                    n,
                    name,
                    Op::Conv2d {
                        out_channels,
                        kernel: win.kernel,
                        stride: win.stride,
                        padding: win.pads,
                        groups: usize::try_from(group).unwrap_or(0),
                        weight,
                        bias,
                    },
                    &[x],
                );
                self.keep_1d(x, y);
            }
            "ConvTranspose" => {
                return Err(self.err(
                    n,
                    name,
                    "transposed convolution is not supported yet (it is linear, but hecc has no \
                     lowering for it); an Upsample-free model, or a strided Conv, compiles",
                ))
            }
            "BatchNormalization" => {
                let x = self.node_input(n, name, 0)?;
                if attr_i(n, "training_mode", 0) != 0 {
                    return Err(self.err(n, name, "training_mode = 1 is not supported"));
                }
                let mut names = Vec::new();
                for i in 1..5 {
                    let (k, t) = self.const_input(n, name, i)?;
                    let t = t.clone();
                    names.push(self.weight(k, t));
                }
                if n.output.iter().skip(1).any(|o| !o.is_empty()) {
                    return Err(self.err(
                        n,
                        name,
                        "training-mode outputs (running mean/var) are not supported",
                    ));
                }
                let [gamma, beta, mean, var]: [String; 4] = names
                    .try_into()
                    .map_err(|_| self.err(n, name, "expected 5 inputs"))?;
                self.add(
                    n,
                    name,
                    Op::BatchNorm {
                        gamma,
                        beta,
                        mean,
                        var,
                        epsilon: attr_f(n, "epsilon", 1e-5),
                    },
                    &[x],
                );
            }
            "Relu" => {
                let x = self.node_input(n, name, 0)?;
                self.add(n, name, Op::Relu, &[x]);
            }
            "LeakyRelu" | "PRelu" => {
                // y = relu(x) + s * min(x, 0) = (1 - s) * relu(x) + s * x.
                let x = self.node_input(n, name, 0)?;
                let slope = if n.op_type == "LeakyRelu" {
                    Tensor::from_elem(IxDyn(&[]), attr_f(n, "alpha", 0.01))
                } else {
                    self.const_input(n, name, 1)?.1.clone()
                };
                let r = self.add_aux(&format!("{name}/relu"), Op::Relu, &[x]);
                let pos = self.affine(
                    n,
                    &format!("{name}/pos"),
                    r,
                    Some(slope.mapv(|s| 1.0 - s)),
                    None,
                )?;
                let lin = self.affine(n, &format!("{name}/lin"), x, Some(slope), None)?;
                self.add(n, name, Op::Add, &[pos, lin]);
            }
            op if MONOTONE_HEADS.contains(&op) => {
                let x = self.node_input(n, name, 0)?;
                let is_output = n.output.first().is_some_and(|o| self.trailing.contains(o));
                if !is_output {
                    return Err(self.err(
                        n,
                        name,
                        format!(
                            "{op} is not a polynomial and cannot be evaluated on ciphertexts; \
                             only a trailing {op} (whose argmax equals its input's) is dropped \
                             automatically: cut the graph before this node"
                        ),
                    ));
                }
                if op != "Sigmoid" {
                    // Softmax keeps the argmax only when it normalises over all of an image's
                    // scores: a 1-D score vector (axis 1 or -1), or, before opset 13, any rank
                    // with axis 1 (the input is flattened from the axis on).
                    let rank = self.dims(x).map_or(1, |d| d.len()) as i64 + 1;
                    let default_axis = if self.opset < 13 { 1 } else { -1 };
                    let axis = attr_i(n, "axis", default_axis);
                    let axis = if axis < 0 { axis + rank } else { axis };
                    let whole = axis == 1 && (self.opset < 13 || rank == 2);
                    if !whole {
                        return Err(self.err(
                            n,
                            name,
                            format!(
                                "a trailing {op} over axis {axis} of a rank-{rank} output normalises \
                                 groups of scores, which changes the argmax over the image's \
                                 outputs: cut the graph before this node"
                            ),
                        ));
                    }
                }
                self.notes.push(format!(
                    "trailing `{name}` ({op}) dropped: the outputs are the scores before it \
                     (same argmax)"
                ));
                self.bind(n, Value::Node(x));
            }
            "AveragePool" | "MaxPool" => {
                let x = self.node_input(n, name, 0)?;
                let mut win = self.window(n, name, x, None)?;
                let own_pad = win.pads != [0; 4];
                self.absorb_pad(n, &mut win);
                let hw = match self.shapes.get(&x).map(|s| s.0.as_slice()) {
                    Some([_, h, w]) => [*h, *w],
                    _ => return Err(self.err(n, name, "the input shape is unknown")),
                };
                let max = n.op_type == "MaxPool";
                if win.dilation != [1, 1] {
                    return Err(self.err(
                        n,
                        name,
                        format!("dilations {:?} are not supported for pooling", win.dilation),
                    ));
                }
                if attr_i(n, "ceil_mode", 0) != 0 {
                    let ext = win.extent();
                    let mut extra = [0usize; 2];
                    for d in 0..2 {
                        let span = hw[d]
                            .saturating_add(win.pads[d])
                            .saturating_add(win.pads[d + 2]);
                        if span < ext[d] {
                            continue;
                        }
                        let floor = (span - ext[d]) / win.stride[d] + 1;
                        let mut ceil = (span - ext[d]).div_ceil(win.stride[d]) + 1;
                        // A last window starting in the end padding is dropped.
                        if (ceil - 1).saturating_mul(win.stride[d])
                            >= hw[d].saturating_add(win.pads[d])
                        {
                            ceil -= 1;
                        }
                        if ceil > floor {
                            extra[d] = ((ceil - 1).saturating_mul(win.stride[d]))
                                .saturating_add(ext[d])
                                .saturating_sub(span);
                        }
                    }
                    if extra != [0, 0] {
                        if !max {
                            return Err(self.err(
                                n,
                                name,
                                "ceil_mode = 1 makes the last windows partial here, and their \
                                 divisor differs from the window size (not supported)",
                            ));
                        }
                        win.pads[2] = win.pads[2].saturating_add(extra[0]);
                        win.pads[3] = win.pads[3].saturating_add(extra[1]);
                    }
                }
                let op = if max {
                    if n.output.iter().skip(1).any(|o| !o.is_empty()) {
                        return Err(self.err(
                            n,
                            name,
                            "the Indices output of MaxPool is not supported",
                        ));
                    }
                    Op::MaxPool {
                        kernel: win.kernel,
                        stride: win.stride,
                        padding: win.pads,
                    }
                } else {
                    if own_pad && attr_i(n, "count_include_pad", 0) == 0 {
                        return Err(self.err(
                            n,
                            name,
                            "padded AveragePool with count_include_pad = 0 divides border windows \
                             by fewer elements (not supported; export with count_include_pad = 1)",
                        ));
                    }
                    Op::AvgPool {
                        kernel: win.kernel,
                        stride: win.stride,
                        padding: win.pads,
                    }
                };
                let y = self.add(n, name, op, &[x]);
                self.keep_1d(x, y);
            }
            "GlobalAveragePool" | "GlobalMaxPool" => {
                let x = self.node_input(n, name, 0)?;
                let xd = self.dims(x).unwrap_or_default();
                let y = if n.op_type == "GlobalAveragePool" {
                    self.add(n, name, Op::GlobalAvgPool, &[x])
                } else {
                    let hw = match self.shapes.get(&x).map(|s| s.0.as_slice()) {
                        Some([_, h, w]) => [*h, *w],
                        _ => {
                            return Err(self.err(
                                n,
                                name,
                                "the input must be [N, C, H, W] or [N, C, L]",
                            ))
                        }
                    };
                    let p = self.add_aux(
                        &format!("{name}/window"),
                        Op::MaxPool {
                            kernel: hw,
                            stride: [1, 1],
                            padding: [0; 4],
                        },
                        &[x],
                    );
                    self.add(n, name, Op::Flatten, &[p])
                };
                let mut d = vec![xd.first().copied().unwrap_or(1)];
                d.extend(std::iter::repeat_n(1, xd.len().saturating_sub(1)));
                self.onnx_dims.insert(y, d);
            }
            "ReduceMean" | "ReduceSum" => {
                let x = self.node_input(n, name, 0)?;
                let xd = self
                    .dims(x)
                    .ok_or_else(|| self.err(n, name, "the input shape is unknown"))?;
                let rank = xd.len() + 1;
                let axes = self.ints_attr_or_input(n, name, "axes", 1)?;
                let mut axes: Vec<usize> = match axes {
                    Some(a) if !a.is_empty() => a
                        .iter()
                        .map(|&v| consts::axis(v, rank))
                        .collect::<Result<_, _>>()
                        .map_err(|m| self.err(n, name, m))?,
                    _ if attr_i(n, "noop_with_empty_axes", 0) != 0 => {
                        let x = self.node_input(n, name, 0)?;
                        self.bind(n, Value::Node(x));
                        return Ok(());
                    }
                    _ => (0..rank).collect(),
                };
                axes.sort_unstable();
                let spatial: Vec<usize> = (2..rank).collect();
                if rank < 3 || axes != spatial {
                    return Err(self.err(
                        n,
                        name,
                        format!(
                            "{} over axes {axes:?} of a rank-{rank} tensor: only the spatial axes \
                             {spatial:?} (a global average pool) are supported",
                            n.op_type
                        ),
                    ));
                }
                let keep = attr_i(n, "keepdims", 1) != 0;
                let area: usize = xd[1..].iter().product();
                let gap_name = if n.op_type == "ReduceSum" {
                    format!("{name}/mean")
                } else {
                    name.to_string()
                };
                let mut y = self.add_aux(&gap_name, Op::GlobalAvgPool, &[x]);
                if n.op_type == "ReduceSum" {
                    y = self.add_aux(
                        name,
                        Op::Scale {
                            factor: area as f64,
                        },
                        &[y],
                    );
                }
                self.bind(n, Value::Node(y));
                if keep {
                    let mut d = vec![xd[0]];
                    d.extend(std::iter::repeat_n(1, xd.len() - 1));
                    self.onnx_dims.insert(y, d);
                }
            }
            "Gemm" => {
                let x = self.node_input(n, name, 0)?;
                if attr_i(n, "transA", 0) != 0 {
                    return Err(self.err(n, name, "transA = 1 is not supported"));
                }
                let (bname, b) = self.const_input(n, name, 1)?;
                if b.ndim() != 2 {
                    return Err(self.err(n, name, format!("B must be 2-D, got {:?}", b.shape())));
                }
                let alpha = attr_f(n, "alpha", 1.0);
                let beta = attr_f(n, "beta", 1.0);
                let trans_b = attr_i(n, "transB", 0) != 0;
                let w = if trans_b { b.clone() } else { b.t().to_owned() };
                let out_features = w.shape()[0];
                let weight = if trans_b && alpha == 1.0 {
                    self.weight(bname, w)
                } else {
                    self.weight(format!("{name}.weight"), w.mapv(|v| v * alpha))
                };
                let bias = if self.input_name(n, 2).is_some() {
                    let (cname, c) = self.const_input(n, name, 2)?;
                    if c.len() != out_features && c.len() != 1 {
                        return Err(self.err(
                            n,
                            name,
                            format!(
                                "bias C of shape {:?} is not broadcastable as [{out_features}]",
                                c.shape()
                            ),
                        ));
                    }
                    let c = if c.len() == 1 {
                        Tensor::from_elem(
                            IxDyn(&[out_features]),
                            c.iter().next().copied().unwrap_or(0.0),
                        )
                    } else {
                        c.clone()
                            .into_shape_with_order(IxDyn(&[out_features]))
                            .map_err(|e| self.err(n, name, e.to_string()))?
                    };
                    if beta == 1.0
                        && self
                            .consts
                            .get(&cname)
                            .is_some_and(|t| t.ndim() == 1 && t.len() == out_features)
                    {
                        Some(self.weight(cname, c))
                    } else {
                        Some(self.weight(format!("{name}.bias"), c.mapv(|v| v * beta)))
                    }
                } else {
                    None
                };
                self.add(
                    n,
                    name,
                    Op::Dense {
                        out_features,
                        weight,
                        bias,
                    },
                    &[x],
                );
            }
            "MatMul" => {
                let x = self.node_input(n, name, 0)?;
                let (_, b) = self.const_input(n, name, 1)?;
                if b.ndim() != 2 {
                    return Err(self.err(n, name, format!("B must be 2-D, got {:?}", b.shape())));
                }
                let w = b.t().to_owned();
                let out_features = w.shape()[0];
                let weight = self.weight(format!("{name}.weight"), w);
                let id = self.add(
                    n,
                    name,
                    Op::Dense {
                        out_features,
                        weight,
                        bias: None,
                    },
                    &[x],
                );
                self.matmul.insert(id, out_features);
            }
            "Add" | "Sub" | "Mul" | "Div" | "Sum" => self.arith(n, name)?,
            "Neg" => {
                let x = self.node_input(n, name, 0)?;
                self.add(n, name, Op::Scale { factor: -1.0 }, &[x]);
            }
            "Pow" => {
                let x = self.node_input(n, name, 0)?;
                let (_, e) = self.const_input(n, name, 1)?;
                match (e.len(), e.iter().next()) {
                    (1, Some(&2.0)) => {
                        self.add(n, name, Op::Square, &[x]);
                    }
                    (1, Some(&1.0)) => self.bind(n, Value::Node(x)),
                    _ => {
                        return Err(self.err(n, name, "only Pow with exponent 1 or 2 is supported"))
                    }
                }
            }
            "Flatten" => {
                let x = self.node_input(n, name, 0)?;
                let rank = self.dims(x).map_or(2, |d| d.len() + 1);
                let ax =
                    consts::axis(attr_i(n, "axis", 1), rank).map_err(|m| self.err(n, name, m))?;
                if ax != 1 {
                    return Err(self.err(
                        n,
                        name,
                        format!("Flatten with axis = {ax} mixes the batch axis with the others; only axis = 1 is supported"),
                    ));
                }
                self.add(n, name, Op::Flatten, &[x]);
            }
            "Reshape" | "Squeeze" | "Unsqueeze" | "Transpose" => self.reshape(n, name)?,
            "Concat" => {
                let mut ids = Vec::new();
                for i in 0..n.input.len() {
                    ids.push(self.node_input(n, name, i)?);
                }
                let first = *ids.first().ok_or_else(|| self.err(n, name, "no inputs"))?;
                let od = self.dims(first).unwrap_or_default();
                let hd = self
                    .shapes
                    .get(&first)
                    .map(|s| s.0.clone())
                    .unwrap_or_default();
                let ax = consts::axis(attr_i(n, "axis", 1), od.len() + 1)
                    .map_err(|m| self.err(n, name, m))?;
                if ax < 1 {
                    return Err(self.err(
                        n,
                        name,
                        "concatenation along the batch axis is not supported",
                    ));
                }
                let axis = if od == hd || ax == 1 {
                    ax - 1
                } else {
                    return Err(self.err(n, name, "concatenation of 1-D or pooled data along a non-channel axis is not supported"));
                };
                let y = self.add(n, name, Op::Concat { axis }, &ids);
                if od != hd {
                    if let Some(s) = self.shapes.get(&y) {
                        let mut d = od.clone();
                        d[0] = s[0];
                        self.onnx_dims.insert(y, d);
                    }
                }
            }
            "Pad" => self.pad(n, name)?,
            other => {
                return Err(self.err(n, name, format!("unsupported op type {other}")));
            }
        }
        Ok(())
    }

    /// Add, Sub, Mul, Div and Sum with computed and constant operands.
    fn arith(&mut self, n: &NodeProto, name: &str) -> Result<(), FrontError> {
        let op = n.op_type.as_str();
        if op == "Sum" {
            let mut ids = Vec::new();
            for i in 0..n.input.len() {
                ids.push(self.node_input(n, name, i)?);
            }
            match ids[..] {
                [] => return Err(self.err(n, name, "no inputs")),
                [x] => self.bind(n, Value::Node(x)),
                _ => {
                    self.add(n, name, Op::Add, &ids);
                }
            }
            return Ok(());
        }
        let (c0, c1) = (self.is_const(n, 0), self.is_const(n, 1));
        match (op, c0, c1) {
            ("Mul", false, false) if n.input.len() == 2 && n.input[0] == n.input[1] => {
                let x = self.node_input(n, name, 0)?;
                self.add(n, name, Op::Square, &[x]);
            }
            ("Mul", false, false) => {
                return Err(self.err(
                    n,
                    name,
                    "Mul of two different computed tensors is not supported (only x * x and \
                     multiplication by constants)",
                ))
            }
            ("Add", false, false) => {
                let a = self.node_input(n, name, 0)?;
                let b = self.node_input(n, name, 1)?;
                self.add(n, name, Op::Add, &[a, b]);
            }
            ("Sub", false, false) => {
                let a = self.node_input(n, name, 0)?;
                let b = self.node_input(n, name, 1)?;
                let nb = self.add_aux(&format!("{name}/neg"), Op::Scale { factor: -1.0 }, &[b]);
                self.add(n, name, Op::Add, &[a, nb]);
            }
            ("Div", _, false) => {
                return Err(self.err(
                    n,
                    name,
                    "division by a computed tensor is not a polynomial and is not supported",
                ))
            }
            (_, true, true) => return Err(self.err(n, name, "both operands are constant")),
            _ => {
                let (ci, vi) = if c1 { (1, 0) } else { (0, 1) };
                let x = self.node_input(n, name, vi)?;
                let c = self.const_input(n, name, ci)?.1.clone();
                match op {
                    "Add" => {
                        // The bias of a preceding MatMul, if it can be fused.
                        if let Some(&out) = self.matmul.get(&x) {
                            if self.g.users(x).is_empty() && c.len() == out {
                                let c = c
                                    .into_shape_with_order(IxDyn(&[out]))
                                    .map_err(|e| self.err(n, name, e.to_string()))?;
                                let bname = self.weight(format!("{name}.bias"), c);
                                if let Some(Op::Dense { bias, .. }) =
                                    self.g.node_mut(x).map(|n| &mut n.op)
                                {
                                    *bias = Some(bname);
                                }
                                self.matmul.remove(&x);
                                self.bind(n, Value::Node(x));
                                return Ok(());
                            }
                        }
                        self.affine(n, name, x, None, Some(c))?;
                    }
                    "Sub" if c1 => {
                        self.affine(n, name, x, None, Some(c.mapv(|v| -v)))?;
                    }
                    "Sub" => {
                        let m = Tensor::from_elem(IxDyn(&[]), -1.0);
                        self.affine(n, name, x, Some(m), Some(c))?;
                    }
                    "Mul" => {
                        self.affine(n, name, x, Some(c), None)?;
                    }
                    _ => {
                        if c.iter().any(|&v| v == 0.0) {
                            return Err(self.err(
                                n,
                                name,
                                "division by a constant that contains 0",
                            ));
                        }
                        self.affine(n, name, x, Some(c.mapv(|v| 1.0 / v)), None)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Reshape, Squeeze, Unsqueeze and Transpose of a computed tensor: the batch axis must stay
    /// first and untouched; the result is a `reshape` (or nothing, if the shape is unchanged).
    fn reshape(&mut self, n: &NodeProto, name: &str) -> Result<(), FrontError> {
        let x = self.node_input(n, name, 0)?;
        let xd = self
            .dims(x)
            .ok_or_else(|| self.err(n, name, "the input shape is unknown"))?;
        let mut full = vec![1];
        full.extend_from_slice(&xd);
        let e = |m: String| self.err(n, name, m);
        let out: Vec<usize> = match n.op_type.as_str() {
            "Reshape" => {
                let (_, s) = self.const_input(n, name, 1)?;
                let mut target = consts::ints(s).map_err(e)?;
                // A positive leading entry is the exporter's batch size: read it as 1.
                if target.first().is_some_and(|&d| d > 0) {
                    target[0] = 1;
                }
                consts::reshape_dims(&full, &target).map_err(e)?
            }
            "Unsqueeze" => {
                let axes = self
                    .ints_attr_or_input(n, name, "axes", 1)?
                    .ok_or_else(|| self.err(n, name, "`axes` is required"))?;
                consts::unsqueeze_dims(&full, &axes).map_err(e)?
            }
            "Squeeze" => {
                let axes = self.ints_attr_or_input(n, name, "axes", 1)?;
                let axes = axes.unwrap_or_else(|| {
                    (1..full.len() as i64)
                        .filter(|&a| full[a as usize] == 1)
                        .collect()
                });
                consts::squeeze_dims(&full, Some(&axes)).map_err(e)?
            }
            _ => {
                let perm =
                    attr_ints(n, "perm").unwrap_or_else(|| (0..full.len() as i64).rev().collect());
                let p: Vec<usize> = perm
                    .iter()
                    .map(|&a| consts::axis(a, full.len()))
                    .collect::<Result<_, _>>()
                    .map_err(e)?;
                let moved: Vec<usize> = p.iter().copied().filter(|&a| full[a] != 1).collect();
                let mut sorted = p.clone();
                sorted.sort_unstable();
                if sorted != (0..full.len()).collect::<Vec<_>>()
                    || moved.windows(2).any(|w| w[0] > w[1])
                {
                    return Err(self.err(
                        n,
                        name,
                        format!("Transpose {perm:?} of {full:?} moves data between axes (not supported; only axes of length 1 may move)"),
                    ));
                }
                p.iter().map(|&a| full[a]).collect()
            }
        };
        let numel = |d: &[usize]| d.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
        if out.first() != Some(&1) || numel(&out).is_none() || numel(&out) != numel(&full) {
            return Err(self.err(
                n,
                name,
                format!("the result {out:?} mixes the batch axis with the others"),
            ));
        }
        let mut per: Vec<usize> = out[1..].to_vec();
        if per.is_empty() {
            per.push(1);
        }
        let hd = self.shapes.get(&x).map(|s| s.0.clone()).unwrap_or_default();
        if per == hd {
            self.bind(n, Value::Node(x));
            return Ok(());
        }
        if per == xd {
            // Only ONNX's view changed (e.g. [C, 1, 1] after a global pool).
            let y = self.add(
                n,
                name,
                Op::Reshape {
                    shape: Shape(hd.clone()),
                },
                &[x],
            );
            self.onnx_dims.insert(y, per);
            return Ok(());
        }
        // 1-D data stays [C, 1, L] for the node if ONNX sees [C, L].
        let (shape, onnx) = match per[..] {
            [c, l] if matches!(self.shapes.get(&x).map(|s| s.rank()), Some(3)) => {
                (vec![c, 1, l], Some(per.clone()))
            }
            _ => (per.clone(), None),
        };
        let y = self.add(
            n,
            name,
            Op::Reshape {
                shape: Shape(shape),
            },
            &[x],
        );
        if let Some(d) = onnx {
            self.onnx_dims.insert(y, d);
        }
        Ok(())
    }

    /// Pad with a constant 0 on the spatial axes: nothing if all pads are 0, folded into the
    /// next Conv/AveragePool if that is its only consumer, a depthwise 1x1 identity
    /// convolution with padding otherwise.
    fn pad(&mut self, n: &NodeProto, name: &str) -> Result<(), FrontError> {
        let x = self.node_input(n, name, 0)?;
        let xd = self
            .dims(x)
            .ok_or_else(|| self.err(n, name, "the input shape is unknown"))?;
        let rank = xd.len() + 1;
        let mode = attr(n, "mode").map_or("constant".to_string(), |a| {
            String::from_utf8_lossy(&a.s).into_owned()
        });
        let pads = self
            .ints_attr_or_input(n, name, "pads", 1)?
            .ok_or_else(|| self.err(n, name, "`pads` is required"))?;
        let value = if attr(n, "value").is_some() {
            attr_f(n, "value", 0.0)
        } else if self.input_name(n, 2).is_some() {
            self.const_input(n, name, 2)?
                .1
                .iter()
                .next()
                .copied()
                .unwrap_or(0.0)
        } else {
            0.0
        };
        // Pads over the listed axes (opset 18) or all of them.
        let axes: Vec<usize> = match self.const_ints(n, name, 3)? {
            Some(a) => a
                .iter()
                .map(|&v| consts::axis(v, rank))
                .collect::<Result<_, _>>()
                .map_err(|m| self.err(n, name, m))?,
            None => (0..rank).collect(),
        };
        if pads.len() != 2 * axes.len() {
            return Err(self.err(
                n,
                name,
                format!("{} pads for {} axes", pads.len(), axes.len()),
            ));
        }
        let mut begin = vec![0i64; rank];
        let mut end = vec![0i64; rank];
        for (k, &a) in axes.iter().enumerate() {
            begin[a] = pads[k];
            end[a] = pads[k + axes.len()];
        }
        if begin.iter().chain(&end).all(|&p| p == 0) {
            self.notes
                .push(format!("`{name}` (Pad) pads nothing: removed"));
            self.bind(n, Value::Node(x));
            return Ok(());
        }
        if begin.iter().chain(&end).any(|&p| p < 0) {
            return Err(self.err(n, name, "negative pads (cropping) are not supported"));
        }
        if mode != "constant" || value != 0.0 {
            return Err(self.err(
                n,
                name,
                format!("only zero padding is supported (mode {mode}, value {value})"),
            ));
        }
        if begin[..2.min(rank)]
            .iter()
            .chain(&end[..2.min(rank)])
            .any(|&p| p != 0)
            || rank < 3
        {
            return Err(self.err(
                n,
                name,
                "only the spatial axes may be padded (not the batch, channel or feature axis)",
            ));
        }
        let p = |v: i64| v as usize;
        let spatial = if rank == 4 {
            [p(begin[2]), p(begin[3]), p(end[2]), p(end[3])]
        } else {
            [0, p(begin[2]), 0, p(end[2])]
        };
        let out = n.output.first().cloned().unwrap_or_default();
        let users = self.consumers.get(&out).cloned().unwrap_or_default();
        if users.len() == 1
            && matches!(users[0].as_str(), "Conv" | "AveragePool")
            && !self.outputs.contains(&out)
        {
            self.notes.push(format!(
                "`{name}` (Pad) folded into the padding of the {} after it",
                users[0]
            ));
            self.pads.insert(out, spatial);
            self.bind(n, Value::Node(x));
            return Ok(());
        }
        let c = xd[0];
        let w = self.weight(
            format!("{name}.identity"),
            Tensor::ones(IxDyn(&[c, 1, 1, 1])),
        );
        self.notes.push(format!(
            "`{name}` (Pad) became a depthwise 1x1 identity convolution with padding"
        ));
        let y = self.add(
            n,
            name,
            Op::Conv2d {
                out_channels: c,
                kernel: [1, 1],
                stride: [1, 1],
                padding: spatial,
                groups: c,
                weight: w,
                bias: None,
            },
            &[x],
        );
        self.keep_1d(x, y);
        Ok(())
    }
}

/// Op types [`parse_onnx`] imports (some only in the forms its errors describe).
pub const SUPPORTED_OPS: &[&str] = &[
    "Abs",
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Ceil",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "Div",
    "Dropout",
    "Flatten",
    "Floor",
    "Gather",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Identity",
    "LeakyRelu",
    "LogSoftmax",
    "MatMul",
    "MaxPool",
    "Mul",
    "Neg",
    "PRelu",
    "Pad",
    "Pow",
    "Reciprocal",
    "ReduceMean",
    "ReduceSum",
    "Relu",
    "Reshape",
    "Shape",
    "Sigmoid",
    "Size",
    "Slice",
    "Softmax",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Sum",
    "Transpose",
    "Unsqueeze",
];

/// The help text of an unsupported-op error: the op types grouped by where they are accepted
/// (anywhere, on constant operands only, as the graph's last node only).
pub fn supported_ops_help() -> String {
    let tensor_ops = [
        "Add",
        "Mul",
        "Sub",
        "Div",
        "Neg",
        "Pow",
        "Sum",
        "Concat",
        "Reshape",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Transpose",
        "Identity",
        "Dropout",
        "Cast",
        "Pad",
    ];
    let layers: Vec<&str> = SUPPORTED_OPS
        .iter()
        .copied()
        .filter(|o| {
            *o != "Constant"
                && !MONOTONE_HEADS.contains(o)
                && (!FOLDABLE.contains(o) || tensor_ops.contains(o))
        })
        .collect();
    let consts: Vec<&str> = SUPPORTED_OPS
        .iter()
        .copied()
        .filter(|o| FOLDABLE.contains(o) && !tensor_ops.contains(o))
        .chain(["Constant"])
        .collect();
    format!(
        "supported ONNX ops: {}; on constant operands only (folded at import): {}; \
         at the output only (dropped, the argmax is unchanged): {}",
        layers.join(", "),
        consts.join(", "),
        MONOTONE_HEADS.join(", ")
    )
}

/// The values whose only path to a graph output goes through shape-only nodes (Identity,
/// Dropout, Cast, Reshape, Flatten, Squeeze, Unsqueeze), each their input's only consumer:
/// skl2onnx, for one, writes `Softmax -> Reshape -> output`.
fn trailing_values<'a>(
    nodes: &[(usize, &NodeProto)],
    outputs: impl Iterator<Item = &'a str>,
) -> HashSet<String> {
    const PASS: &[&str] = &[
        "Identity",
        "Dropout",
        "Cast",
        "Reshape",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
    ];
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for (_, n) in nodes {
        for i in &n.input {
            *uses.entry(i.as_str()).or_default() += 1;
        }
    }
    let mut set: HashSet<String> = outputs.map(str::to_string).collect();
    // ONNX nodes are topologically sorted: one backward sweep follows every chain.
    for (_, n) in nodes.iter().rev() {
        let out_trailing = n.output.first().is_some_and(|o| set.contains(o));
        if out_trailing && PASS.contains(&n.op_type.as_str()) {
            if let Some(x) = n.input.first() {
                if uses.get(x.as_str()) == Some(&1) {
                    set.insert(x.clone());
                }
            }
        }
    }
    set
}

fn node_label(i: usize, n: &NodeProto) -> String {
    if n.name.is_empty() {
        format!("{}_{i}", n.op_type)
    } else {
        n.name.clone()
    }
}

/// Oldest version of the default ONNX opset (domain `""` or `ai.onnx`) [`parse_onnx`] accepts.
/// Opset 7 made the element-wise ops (Add, Sub, Mul, Div, Pow, Gemm's `C`, PRelu) broadcast
/// numpy-style, which the importer assumes; before it they took `broadcast`/`axis` attributes
/// with other semantics. The attribute forms that later opsets moved to inputs (Squeeze,
/// Unsqueeze, ReduceMean/ReduceSum `axes`, Pad `pads`, Slice, Dropout's ratio) are read in
/// either form, and the Softmax default axis follows the opset.
pub const MIN_OPSET: i64 = 7;

/// Newest version of the default ONNX opset [`parse_onnx`] accepts: the newest of ONNX's own
/// node tests in `tests/fixtures/onnx_node` (each op there at its newest version, up to Cast at
/// 28), which the importer is checked against. A later opset may change the semantics of an
/// op, so it is refused until it is checked.
pub const MAX_OPSET: i64 = 28;

/// The version of the default ONNX opset `model` imports, or a message: none imported, or a
/// version outside [`MIN_OPSET`]`..=`[`MAX_OPSET`].
fn default_opset(model: &proto::ModelProto) -> Result<i64, String> {
    let mut versions = model
        .opset_import
        .iter()
        .filter(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version);
    let supported = format!(
        "hecc imports the default ONNX opset in versions {MIN_OPSET} to {MAX_OPSET} (opset \
         {MIN_OPSET} introduced the numpy-style broadcasting the importer assumes; {MAX_OPSET} is \
         the newest it is checked against)"
    );
    let Some(first) = versions.next() else {
        return Err(format!(
            "the model imports no version of the default ONNX opset (domain \"\" or \
             \"ai.onnx\"), so the semantics of its ops are unknown; {supported}"
        ));
    };
    for v in std::iter::once(first).chain(versions) {
        if !(MIN_OPSET..=MAX_OPSET).contains(&v) {
            return Err(format!(
                "the model imports version {v} of the default ONNX opset, which is not \
                 supported; {supported}"
            ));
        }
    }
    Ok(first)
}

/// Checks that every value name is produced once: by one node, and by no node if it is an
/// initializer or a graph input (ONNX graphs are in SSA form). Empty names (omitted optional
/// outputs) are skipped.
fn single_producers(graph: &proto::GraphProto) -> Result<(), String> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    let inits: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: HashSet<&str> = graph.input.iter().map(|v| v.name.as_str()).collect();
    let label = |i: usize| {
        let n = &graph.node[i];
        format!("`{}` (node {i}, {})", node_label(i, n), n.op_type)
    };
    for (i, n) in graph.node.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            if let Some(&j) = producer.get(o.as_str()) {
                return Err(format!(
                    "value `{o}` is produced by two nodes, {} and {}; every value must have one \
                     producer (is a node duplicated?)",
                    label(j),
                    label(i)
                ));
            }
            let source = if inits.contains(o.as_str()) {
                Some("an initializer")
            } else if inputs.contains(o.as_str()) {
                Some("a graph input")
            } else {
                None
            };
            if let Some(source) = source {
                return Err(format!(
                    "value `{o}` is produced by node {} but is also {source}; every value must \
                     have one producer",
                    label(i)
                ));
            }
            producer.insert(o, i);
        }
    }
    Ok(())
}

/// Decodes an ONNX model (`path` names it in diagnostics) and imports it as a verified graph.
///
/// Before import the graph is cleaned up: outputs that are not float tensors (a class label
/// from ArgMax, sklearn's ZipMap) are dropped when a float output remains, and nodes that no
/// kept output needs are removed. During import, constant subgraphs (shape arithmetic) are
/// folded, no-ops removed and trailing Softmax/Sigmoid dropped; [`Graph::notes`] lists what
/// was done.
pub fn parse_onnx(bytes: &[u8], path: &str) -> Result<Graph, FrontError> {
    let model = proto::ModelProto::decode(bytes).map_err(|e| FrontError::OnnxDecode {
        path: path.to_string(),
        message: e.to_string(),
    })?;
    let decode_err = |m: &str| FrontError::OnnxDecode {
        path: path.to_string(),
        message: m.to_string(),
    };
    let model_err = |m: String| FrontError::OnnxModel {
        path: path.to_string(),
        message: m,
    };
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| decode_err("the model has no graph"))?;
    if graph.node.is_empty() {
        return Err(decode_err("the graph has no nodes"));
    }
    let opset = default_opset(&model).map_err(model_err)?;
    single_producers(graph).map_err(model_err)?;
    let mut notes = Vec::new();

    // Outputs to keep: float tensors (drop labels and maps when a float output remains).
    let is_float_tensor = |o: &proto::ValueInfoProto| {
        o.r#type
            .as_ref()
            .and_then(|t| t.tensor_type.as_ref())
            .is_some_and(|t| !is_int_type(t.elem_type))
    };
    let mut kept: Vec<&proto::ValueInfoProto> =
        graph.output.iter().filter(|o| is_float_tensor(o)).collect();
    if kept.is_empty() {
        kept = graph.output.iter().collect();
    }
    for o in &graph.output {
        if !kept.iter().any(|k| k.name == o.name) {
            notes.push(format!(
                "output `{}` (not a float tensor: a class label or map) dropped; hecc returns the \
                 scores and their argmax",
                o.name
            ));
        }
    }
    // Nodes the kept outputs need.
    let producer: HashMap<&str, usize> = graph
        .node
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i)))
        .collect();
    let mut live = vec![false; graph.node.len()];
    let mut stack: Vec<&str> = kept.iter().map(|o| o.name.as_str()).collect();
    while let Some(v) = stack.pop() {
        if let Some(&i) = producer.get(v) {
            if !live[i] {
                live[i] = true;
                stack.extend(graph.node[i].input.iter().map(String::as_str));
            }
        }
    }
    let dead = live.iter().filter(|l| !**l).count();
    if dead > 0 {
        notes.push(format!(
            "{dead} node(s) no kept output depends on were removed"
        ));
    }
    let nodes: Vec<(usize, &NodeProto)> = graph
        .node
        .iter()
        .enumerate()
        .filter(|(i, _)| live[*i])
        .collect();

    // Every unsupported node, at once (a Softmax/Sigmoid counts unless it is a trailing one).
    let trailing = trailing_values(&nodes, kept.iter().map(|o| o.name.as_str()));
    let at_output = |n: &NodeProto| n.output.first().is_some_and(|o| trailing.contains(o));
    let unsupported: Vec<(String, String)> = nodes
        .iter()
        .filter(|(_, n)| {
            !(n.domain.is_empty() || n.domain == "ai.onnx")
                || !SUPPORTED_OPS.contains(&n.op_type.as_str())
                || (MONOTONE_HEADS.contains(&n.op_type.as_str()) && !at_output(n))
        })
        .map(|(i, n)| {
            let op = if !(n.domain.is_empty() || n.domain == "ai.onnx") {
                format!("{}::{}", n.domain, n.op_type)
            } else if MONOTONE_HEADS.contains(&n.op_type.as_str()) {
                format!("{}, not at the output", n.op_type)
            } else {
                n.op_type.clone()
            };
            (node_label(*i, n), op)
        })
        .collect();
    if !unsupported.is_empty() {
        return Err(FrontError::OnnxUnsupported {
            path: path.to_string(),
            nodes: unsupported,
        });
    }

    let name = if graph.name.is_empty() {
        std::path::Path::new(path)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("model")
            .to_string()
    } else {
        graph.name.clone()
    };
    let mut consumers: HashMap<String, Vec<String>> = HashMap::new();
    for (_, n) in &nodes {
        for i in &n.input {
            consumers
                .entry(i.clone())
                .or_default()
                .push(n.op_type.clone());
        }
    }
    let mut imp = Importer {
        g: Graph::new(name.clone()),
        values: HashMap::new(),
        shapes: HashMap::new(),
        onnx_dims: HashMap::new(),
        consts: HashMap::new(),
        int_consts: HashSet::new(),
        matmul: HashMap::new(),
        consumers,
        outputs: kept.iter().map(|o| o.name.clone()).collect(),
        trailing,
        opset,
        pads: HashMap::new(),
        notes,
        too_large: None,
    };
    let mut total = 0usize;
    for t in &graph.initializer {
        let v = tensor_to_f64(t)
            .and_then(|v| add_parameters(&mut total, v.len()).map(|()| v))
            .map_err(|m| FrontError::OnnxDecode {
                path: path.to_string(),
                message: format!("initializer `{}`: {m}", t.name),
            })?;
        imp.consts.insert(t.name.clone(), v);
        if is_int_type(t.data_type) {
            imp.int_consts.insert(t.name.clone());
        }
        imp.values
            .insert(t.name.clone(), Value::Const(t.name.clone()));
    }
    let used: HashSet<&str> = nodes
        .iter()
        .flat_map(|(_, n)| n.input.iter().map(String::as_str))
        .chain(kept.iter().map(|o| o.name.as_str()))
        .collect();
    let data_inputs: Vec<&proto::ValueInfoProto> = graph
        .input
        .iter()
        .filter(|vi| !imp.consts.contains_key(&vi.name))
        .collect();
    let (used_inputs, unused): (Vec<_>, Vec<_>) = data_inputs
        .into_iter()
        .partition(|vi| used.contains(vi.name.as_str()));
    for vi in unused {
        imp.notes
            .push(format!("graph input `{}` is not used: ignored", vi.name));
    }
    if used_inputs.len() > 1 {
        return Err(model_err(format!(
            "the graph has {} inputs ({}); hecc plans take one input tensor per image (merge the \
             inputs into one tensor, or make the others initializers)",
            used_inputs.len(),
            used_inputs
                .iter()
                .map(|v| format!("`{}`", v.name))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    for vi in used_inputs {
        let ty = vi.r#type.as_ref().and_then(|t| t.tensor_type.as_ref());
        if let Some(t) = ty {
            if is_int_type(t.elem_type) {
                return Err(model_err(format!(
                    "graph input `{}` has an integer element type; hecc encrypts real values",
                    vi.name
                )));
            }
        }
        let dims: Option<Vec<Option<i64>>> = ty
            .and_then(|t| t.shape.as_ref())
            .map(|s| s.dim.iter().map(|d| d.dim_value).collect());
        let dims = dims
            .ok_or_else(|| model_err(format!("graph input `{}` has no tensor shape", vi.name)))?;
        if !(2..=4).contains(&dims.len()) {
            return Err(model_err(format!(
                "graph input `{}` must be [N, F], [N, C, L] or [N, C, H, W], got rank {}",
                vi.name,
                dims.len()
            )));
        }
        // The batch axis: symbolic (`N`), unknown (-1, or 0 from some exporters) or a fixed
        // size within the limits (hecc plans take one image at a time whatever it is).
        if let Some(b) = dims[0].filter(|&b| b < -1 || b > MAX_DIM as i64) {
            return Err(model_err(format!(
                "graph input `{}` has batch dimension {b} (dimension 0 of [{}]); the batch \
                 dimension must be symbolic (e.g. `N`) or a size of at most {}, the limit per \
                 dimension",
                vi.name,
                dims.iter()
                    .map(|d| d.map_or("?".to_string(), |v| v.to_string()))
                    .collect::<Vec<_>>()
                    .join(", "),
                describe(MAX_DIM)
            )));
        }
        let mut shape = Vec::new();
        for d in &dims[1..] {
            match d.map(usize::try_from) {
                Some(Ok(v)) if v > 0 => shape.push(v),
                _ => {
                    return Err(model_err(format!(
                        "graph input `{}` needs fixed positive dimensions after the batch axis, \
                         got {:?}",
                        vi.name,
                        &dims[1..]
                    )))
                }
            }
        }
        check_activation(&shape).map_err(|m| {
            model_err(format!(
                "graph input `{}` (per-image dimensions after the batch axis): {m}",
                vi.name
            ))
        })?;
        let onnx = shape.clone();
        if shape.len() == 2 && dims.len() == 3 {
            shape.insert(1, 1);
        }
        let shape = Shape(shape);
        let id = imp.g.add_node(
            vi.name.clone(),
            Op::Input {
                shape: shape.clone(),
                norm: Normalization::default(),
            },
            &[],
        );
        if onnx != shape.0 {
            imp.onnx_dims.insert(id, onnx);
        }
        imp.shapes.insert(id, shape);
        imp.values.insert(vi.name.clone(), Value::Node(id));
    }
    for (i, n) in &nodes {
        imp.import_node(*i, n)?;
        if let Some((node, message)) = imp.too_large.take() {
            return Err(FrontError::OnnxNode {
                node,
                op_type: n.op_type.clone(),
                message,
            });
        }
    }
    for o in &kept {
        match imp.values.get(&o.name) {
            Some(Value::Node(id)) => imp.g.add_output(*id),
            Some(Value::Const(_)) => {
                return Err(model_err(format!(
                    "graph output `{}` is a constant (it does not depend on the input)",
                    o.name
                )))
            }
            None => {
                return Err(model_err(format!(
                    "graph output `{}` is not computed by any node",
                    o.name
                )))
            }
        }
    }
    let mut g = imp.g;
    g.notes = imp.notes;
    let (_, errors) = analyze(&g);
    if errors.is_empty() {
        Ok(g)
    } else {
        Err(FrontError::Invalid {
            model: name,
            src: None,
            problems: errors.into_iter().map(Problem::Graph).collect(),
        })
    }
}
