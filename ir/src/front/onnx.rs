//! The ONNX front end: a binary `ModelProto` to a verified tensor [`Graph`].
//!
//! The subset of `onnx.proto` needed is declared by hand in [`proto`] with the official field
//! numbers (prost skips unknown fields). Supported ops: Conv, BatchNormalization, Relu,
//! AveragePool, GlobalAveragePool, MaxPool, Gemm, MatMul (+ Add of a bias initializer), Add, Mul
//! (`x * x` is `square`, `x * c` with a scalar constant is `scale`), Pow with exponent 2, Flatten,
//! Reshape (shape from an initializer or Constant), Concat, Identity and Dropout (pass-through),
//! Constant. Initializers become weights (converted to `f64`).
//!
//! Conventions: the graph input's first dimension is the batch and is dropped (`[N, C, H, W]`
//! becomes `[C, H, W]`); ONNX axes are shifted accordingly. An ONNX `GlobalAveragePool` yields a
//! `[C]` value (ONNX: `[N, C, 1, 1]`), which a following Flatten/Reshape leaves as is.
//!
//! Errors: undecodable bytes give [`FrontError::OnnxDecode`]; unsupported op types give one
//! [`FrontError::OnnxUnsupported`] listing *every* unsupported node by name and op type; a
//! supported op used in an unsupported way gives [`FrontError::OnnxNode`]; graph errors found by
//! the verifier give [`FrontError::Invalid`]. Nothing panics.

use std::collections::HashMap;

use ndarray::IxDyn;
use prost::Message;

use super::weights::decode_le;
use super::{FrontError, Problem};
use crate::tensor::shape::infer;
use crate::tensor::verify::analyze;
use crate::tensor::{Graph, NodeId, Normalization, Op, Shape, Tensor};

/// ONNX op types this front end understands.
pub const SUPPORTED_OPS: &[&str] = &[
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Concat",
    "Constant",
    "Conv",
    "Dropout",
    "Flatten",
    "Gemm",
    "GlobalAveragePool",
    "Identity",
    "MatMul",
    "MaxPool",
    "Mul",
    "Pow",
    "Relu",
    "Reshape",
];

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
    let n = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("tensor too large")?;
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

/// Kernel, stride and padding (`[top, left, bottom, right]`) of a conv or pooling node.
type Window = ([usize; 2], [usize; 2], [usize; 4]);

/// What an ONNX value name stands for while importing.
#[derive(Clone)]
enum Value {
    Node(NodeId),
    Const(String),
}

struct Importer {
    g: Graph,
    values: HashMap<String, Value>,
    shapes: HashMap<NodeId, Shape>,
    consts: HashMap<String, Tensor>,
    /// Dense nodes created from MatMul without bias yet (for MatMul + Add fusion).
    matmul: HashMap<NodeId, usize>,
}

impl Importer {
    fn err(&self, n: &NodeProto, name: &str, message: impl Into<String>) -> FrontError {
        FrontError::OnnxNode {
            node: name.to_string(),
            op_type: n.op_type.clone(),
            message: message.into(),
        }
    }

    fn node_input(&self, n: &NodeProto, name: &str, i: usize) -> Result<NodeId, FrontError> {
        let v = n
            .input
            .get(i)
            .filter(|s| !s.is_empty())
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
        let v = n
            .input
            .get(i)
            .filter(|s| !s.is_empty())
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
                format!("input {i} (`{v}`) must be an initializer (constant weights)"),
            )),
        }
    }

    fn is_const(&self, n: &NodeProto, i: usize) -> bool {
        n.input
            .get(i)
            .is_some_and(|v| matches!(self.values.get(v), Some(Value::Const(_))))
    }

    /// Stores `t` as weight `name` (unless already stored) and returns the name.
    fn weight(&mut self, name: String, t: Tensor) -> String {
        self.g.weights.entry(name.clone()).or_insert(t);
        name
    }

    fn add(&mut self, n: &NodeProto, name: &str, op: Op, inputs: &[NodeId]) -> NodeId {
        let id = self.g.add_node(name, op, inputs);
        let shapes: Vec<&Shape> = inputs.iter().filter_map(|i| self.shapes.get(i)).collect();
        if shapes.len() == inputs.len() {
            if let Some(node) = self.g.node(id) {
                if let Ok(s) = infer(&node.op, &shapes) {
                    self.shapes.insert(id, s);
                }
            }
        }
        if let Some(out) = n.output.first() {
            self.values.insert(out.clone(), Value::Node(id));
        }
        id
    }

    fn pool_attrs(&self, n: &NodeProto, name: &str) -> Result<Window, FrontError> {
        let to2 =
            |v: Option<Vec<i64>>, d: [usize; 2], what: &str| -> Result<[usize; 2], FrontError> {
                match v {
                    None => Ok(d),
                    Some(v) if v.len() == 2 && v.iter().all(|&x| x >= 0) => {
                        Ok([v[0] as usize, v[1] as usize])
                    }
                    Some(v) => Err(self.err(
                        n,
                        name,
                        format!("`{what}` must be 2 non-negative ints, got {v:?}"),
                    )),
                }
            };
        let kernel = to2(attr_ints(n, "kernel_shape"), [0, 0], "kernel_shape")?;
        let stride = to2(attr_ints(n, "strides"), [1, 1], "strides")?;
        let pads = match attr_ints(n, "pads") {
            None => [0; 4],
            Some(v) if v.len() == 4 && v.iter().all(|&x| x >= 0) => {
                [v[0] as usize, v[1] as usize, v[2] as usize, v[3] as usize]
            }
            Some(v) => {
                return Err(self.err(
                    n,
                    name,
                    format!("`pads` must be 4 non-negative ints, got {v:?}"),
                ))
            }
        };
        if let Some(a) = attr(n, "auto_pad") {
            let s = String::from_utf8_lossy(&a.s);
            if s != "NOTSET" && s != "VALID" && !s.is_empty() {
                return Err(self.err(
                    n,
                    name,
                    format!("auto_pad = {s} is not supported; export with explicit pads"),
                ));
            }
        }
        if let Some(d) = attr_ints(n, "dilations") {
            if d.iter().any(|&x| x != 1) {
                return Err(self.err(n, name, format!("dilations {d:?} are not supported")));
            }
        }
        if attr_i(n, "ceil_mode", 0) != 0 {
            return Err(self.err(n, name, "ceil_mode = 1 is not supported"));
        }
        Ok((kernel, stride, pads))
    }

    fn import_node(&mut self, idx: usize, n: &NodeProto) -> Result<(), FrontError> {
        let name = if n.name.is_empty() {
            format!("{}_{idx}", n.op_type)
        } else {
            n.name.clone()
        };
        let name = name.as_str();
        match n.op_type.as_str() {
            "Identity" | "Dropout" => {
                let v = n
                    .input
                    .first()
                    .and_then(|i| self.values.get(i))
                    .cloned()
                    .ok_or_else(|| self.err(n, name, "input 0 is not defined"))?;
                if let Some(out) = n.output.first() {
                    self.values.insert(out.clone(), v);
                }
                if n.output.len() > 1
                    && n.output[1..].iter().any(|o| !o.is_empty())
                    && n.op_type == "Dropout"
                {
                    return Err(self.err(n, name, "the mask output of Dropout is not supported"));
                }
            }
            "Constant" => {
                let t = attr(n, "value")
                    .and_then(|a| a.t.as_ref())
                    .ok_or_else(|| self.err(n, name, "only a tensor `value` is supported"))?;
                let t = tensor_to_f64(t).map_err(|m| self.err(n, name, m))?;
                if let Some(out) = n.output.first() {
                    self.consts.insert(out.clone(), t);
                    self.values.insert(out.clone(), Value::Const(out.clone()));
                }
            }
            "Conv" => {
                let x = self.node_input(n, name, 0)?;
                let (wname, w) = self.const_input(n, name, 1)?;
                let w = w.clone();
                if w.ndim() != 4 {
                    return Err(self.err(
                        n,
                        name,
                        format!("weight `{wname}` must be 4-D, got {:?}", w.shape()),
                    ));
                }
                let (mut kernel, stride, padding) = self.pool_attrs(n, name)?;
                if kernel == [0, 0] {
                    kernel = [w.shape()[2], w.shape()[3]];
                }
                let group = attr_i(n, "group", 1);
                let bias = if n.input.get(2).is_some_and(|s| !s.is_empty()) {
                    let (b, t) = self.const_input(n, name, 2)?;
                    let t = t.clone();
                    Some(self.weight(b, t))
                } else {
                    None
                };
                let out_channels = w.shape()[0];
                let weight = self.weight(wname, w);
                self.add(
                    n,
                    name,
                    Op::Conv2d {
                        out_channels,
                        kernel,
                        stride,
                        padding,
                        groups: usize::try_from(group).unwrap_or(0),
                        weight,
                        bias,
                    },
                    &[x],
                );
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
            "AveragePool" | "MaxPool" => {
                let x = self.node_input(n, name, 0)?;
                let (kernel, stride, padding) = self.pool_attrs(n, name)?;
                if kernel == [0, 0] {
                    return Err(self.err(n, name, "`kernel_shape` is required"));
                }
                let op = if n.op_type == "MaxPool" {
                    if n.output.iter().skip(1).any(|o| !o.is_empty()) {
                        return Err(self.err(
                            n,
                            name,
                            "the Indices output of MaxPool is not supported",
                        ));
                    }
                    Op::MaxPool {
                        kernel,
                        stride,
                        padding,
                    }
                } else {
                    if padding != [0; 4] && attr_i(n, "count_include_pad", 0) == 0 {
                        return Err(self.err(
                            n,
                            name,
                            "padded AveragePool needs count_include_pad = 1 (hecc divides by the full window)",
                        ));
                    }
                    Op::AvgPool {
                        kernel,
                        stride,
                        padding,
                    }
                };
                self.add(n, name, op, &[x]);
            }
            "GlobalAveragePool" => {
                let x = self.node_input(n, name, 0)?;
                self.add(n, name, Op::GlobalAvgPool, &[x]);
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
                let bias = if n.input.get(2).is_some_and(|s| !s.is_empty()) {
                    let (cname, c) = self.const_input(n, name, 2)?;
                    if c.len() != out_features {
                        return Err(self.err(
                            n,
                            name,
                            format!(
                                "bias C of shape {:?} is not broadcastable as [{out_features}]",
                                c.shape()
                            ),
                        ));
                    }
                    let c = c
                        .clone()
                        .into_shape_with_order(IxDyn(&[out_features]))
                        .map_err(|e| self.err(n, name, e.to_string()))?;
                    if beta == 1.0
                        && c.shape() == [out_features]
                        && self.consts.get(&cname).is_some_and(|t| t.ndim() == 1)
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
            "Add" => {
                let (ci, vi) = if self.is_const(n, 1) { (1, 0) } else { (0, 1) };
                if self.is_const(n, ci) {
                    let x = self.node_input(n, name, vi)?;
                    let (_, c) = self.const_input(n, name, ci)?;
                    let c = c.clone();
                    let Some(&out) = self.matmul.get(&x) else {
                        return Err(self.err(
                            n,
                            name,
                            "Add of a constant is only supported as the bias of a MatMul",
                        ));
                    };
                    if !self.g.users(x).is_empty() || c.len() != out {
                        return Err(self.err(
                            n,
                            name,
                            format!(
                                "cannot fuse constant of shape {:?} as the bias of `{}`",
                                c.shape(),
                                self.g.node(x).map(|n| n.name.as_str()).unwrap_or("?")
                            ),
                        ));
                    }
                    let c = c
                        .into_shape_with_order(IxDyn(&[out]))
                        .map_err(|e| self.err(n, name, e.to_string()))?;
                    let bname = self.weight(format!("{name}.bias"), c);
                    if let Some(Op::Dense { bias, .. }) = self.g.node_mut(x).map(|n| &mut n.op) {
                        *bias = Some(bname);
                    }
                    self.matmul.remove(&x);
                    if let Some(o) = n.output.first() {
                        self.values.insert(o.clone(), Value::Node(x));
                    }
                } else {
                    let a = self.node_input(n, name, 0)?;
                    let b = self.node_input(n, name, 1)?;
                    self.add(n, name, Op::Add, &[a, b]);
                }
            }
            "Mul" => {
                if n.input.len() == 2 && n.input[0] == n.input[1] {
                    let x = self.node_input(n, name, 0)?;
                    self.add(n, name, Op::Square, &[x]);
                } else {
                    let (ci, vi) = if self.is_const(n, 1) { (1, 0) } else { (0, 1) };
                    if !self.is_const(n, ci) {
                        return Err(self.err(
                            n,
                            name,
                            "Mul of two different computed tensors is not supported \
                             (only x * x and x * scalar constant)",
                        ));
                    }
                    let x = self.node_input(n, name, vi)?;
                    let (_, c) = self.const_input(n, name, ci)?;
                    if c.len() != 1 {
                        return Err(self.err(n, name, format!("only multiplication by a scalar constant or x * x is supported, got a constant of shape {:?}", c.shape())));
                    }
                    let factor = c.iter().next().copied().unwrap_or(1.0);
                    self.add(n, name, Op::Scale { factor }, &[x]);
                }
            }
            "Pow" => {
                let x = self.node_input(n, name, 0)?;
                let (_, e) = self.const_input(n, name, 1)?;
                if e.len() != 1 || e.iter().next() != Some(&2.0) {
                    return Err(self.err(n, name, "only Pow with exponent 2 is supported"));
                }
                self.add(n, name, Op::Square, &[x]);
            }
            "Flatten" => {
                let x = self.node_input(n, name, 0)?;
                if attr_i(n, "axis", 1) != 1 {
                    return Err(self.err(n, name, "only Flatten with axis = 1 is supported"));
                }
                self.add(n, name, Op::Flatten, &[x]);
            }
            "Reshape" => {
                let x = self.node_input(n, name, 0)?;
                let (_, s) = self.const_input(n, name, 1)?;
                let target: Vec<i64> = s.iter().map(|&v| v as i64).collect();
                let numel = self
                    .shapes
                    .get(&x)
                    .map(|s| s.numel())
                    .ok_or_else(|| self.err(n, name, "the input shape is unknown"))?;
                let input_dims = self.shapes.get(&x).cloned().unwrap_or_default();
                // Drop the batch dimension (0, -1 or N).
                let rest = target.get(1..).unwrap_or(&[]);
                let mut dims = Vec::with_capacity(rest.len());
                let mut infer_at = None;
                for (i, &d) in rest.iter().enumerate() {
                    match d {
                        -1 if infer_at.is_none() => {
                            infer_at = Some(i);
                            dims.push(1);
                        }
                        0 => dims.push(input_dims.get(i).copied().unwrap_or(0)),
                        d if d > 0 => dims.push(d as usize),
                        d => {
                            return Err(self.err(n, name, format!("invalid reshape dimension {d}")))
                        }
                    }
                }
                if let Some(i) = infer_at {
                    let known: usize = dims.iter().product();
                    dims[i] = numel.checked_div(known).unwrap_or(0);
                }
                if dims.is_empty() {
                    return Err(self.err(
                        n,
                        name,
                        format!("reshape target {target:?} has no per-image dimensions"),
                    ));
                }
                self.add(n, name, Op::Reshape { shape: Shape(dims) }, &[x]);
            }
            "Concat" => {
                let mut ids = Vec::new();
                for i in 0..n.input.len() {
                    ids.push(self.node_input(n, name, i)?);
                }
                let rank = ids
                    .first()
                    .and_then(|i| self.shapes.get(i))
                    .map(|s| s.rank())
                    .unwrap_or(3) as i64;
                let mut axis = attr_i(n, "axis", 1);
                if axis < 0 {
                    axis += rank + 1;
                }
                if axis < 1 {
                    return Err(self.err(
                        n,
                        name,
                        "concatenation along the batch axis is not supported",
                    ));
                }
                self.add(
                    n,
                    name,
                    Op::Concat {
                        axis: (axis - 1) as usize,
                    },
                    &ids,
                );
            }
            other => {
                return Err(self.err(n, name, format!("unsupported op type {other}")));
            }
        }
        Ok(())
    }
}

/// Decodes an ONNX model (`path` names it in diagnostics) and imports it as a verified graph.
pub fn parse_onnx(bytes: &[u8], path: &str) -> Result<Graph, FrontError> {
    let model = proto::ModelProto::decode(bytes).map_err(|e| FrontError::OnnxDecode {
        path: path.to_string(),
        message: e.to_string(),
    })?;
    let decode_err = |m: &str| FrontError::OnnxDecode {
        path: path.to_string(),
        message: m.to_string(),
    };
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| decode_err("the model has no graph"))?;
    if graph.node.is_empty() {
        return Err(decode_err("the graph has no nodes"));
    }

    // Every unsupported node, at once.
    let unsupported: Vec<(String, String)> = graph
        .node
        .iter()
        .enumerate()
        .filter(|(_, n)| {
            !(n.domain.is_empty() || n.domain == "ai.onnx")
                || !SUPPORTED_OPS.contains(&n.op_type.as_str())
        })
        .map(|(i, n)| {
            let name = if n.name.is_empty() {
                format!("{}_{i}", n.op_type)
            } else {
                n.name.clone()
            };
            let op = if n.domain.is_empty() || n.domain == "ai.onnx" {
                n.op_type.clone()
            } else {
                format!("{}::{}", n.domain, n.op_type)
            };
            (name, op)
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
    let mut imp = Importer {
        g: Graph::new(name.clone()),
        values: HashMap::new(),
        shapes: HashMap::new(),
        consts: HashMap::new(),
        matmul: HashMap::new(),
    };
    for t in &graph.initializer {
        let v = tensor_to_f64(t).map_err(|m| FrontError::OnnxDecode {
            path: path.to_string(),
            message: format!("initializer `{}`: {m}", t.name),
        })?;
        imp.consts.insert(t.name.clone(), v);
        imp.values
            .insert(t.name.clone(), Value::Const(t.name.clone()));
    }
    for vi in &graph.input {
        if imp.consts.contains_key(&vi.name) {
            continue;
        }
        let dims: Option<Vec<Option<i64>>> = vi
            .r#type
            .as_ref()
            .and_then(|t| t.tensor_type.as_ref())
            .and_then(|t| t.shape.as_ref())
            .map(|s| s.dim.iter().map(|d| d.dim_value).collect());
        let dims = dims
            .ok_or_else(|| decode_err(&format!("graph input `{}` has no tensor shape", vi.name)))?;
        if !(dims.len() == 2 || dims.len() == 4) {
            return Err(decode_err(&format!(
                "graph input `{}` must be [N, C, H, W] or [N, F], got rank {}",
                vi.name,
                dims.len()
            )));
        }
        let mut shape = Vec::new();
        for d in &dims[1..] {
            match d {
                Some(v) if *v > 0 => shape.push(*v as usize),
                _ => {
                    return Err(decode_err(&format!(
                        "graph input `{}` needs fixed positive dimensions after the batch axis",
                        vi.name
                    )))
                }
            }
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
        imp.shapes.insert(id, shape);
        imp.values.insert(vi.name.clone(), Value::Node(id));
    }
    for (i, n) in graph.node.iter().enumerate() {
        imp.import_node(i, n)?;
    }
    for o in &graph.output {
        match imp.values.get(&o.name) {
            Some(Value::Node(id)) => imp.g.add_output(*id),
            _ => {
                return Err(decode_err(&format!(
                    "graph output `{}` is not computed by any node",
                    o.name
                )))
            }
        }
    }
    let g = imp.g;
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
