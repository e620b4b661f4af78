//! Size and value limits: absurd models are refused by `load_model` with a diagnostic that
//! names the node or field and the limit, before anything is allocated for them (each of these
//! models used to abort the process with out-of-memory further down the pipeline).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use std::path::{Path, PathBuf};
use std::time::Instant;

use hecc_ir::front::onnx::proto;
use hecc_ir::front::weights::{read_npy, write_safetensors_f32};
use hecc_ir::front::yaml::parse_spec_structure;
use hecc_ir::front::{load_model, FrontError};
use hecc_ir::tensor::limits::{
    MAX_DIM, MAX_PARAMETERS, MAX_TENSOR_ELEMENTS, MAX_WEIGHT_ELEMENTS, MAX_WEIGHT_MAGNITUDE,
};
use hecc_ir::tensor::{GraphError, Tensor, Weights};
use ndarray::IxDyn;
use prost::Message;

/// A scratch directory for one test's files (under cargo's target tmp directory).
fn scratch(tag: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("front_limits-{tag}"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The whole diagnostic as text (message, related problems, causes, help).
fn render(e: &FrontError) -> String {
    let mut out = String::new();
    miette::NarratableReportHandler::new()
        .render_report(&mut out, e)
        .unwrap();
    out
}

/// Writes `text` to `dir/name` and loads it, checking that loading is quick.
fn load(dir: &Path, name: &str, bytes: &[u8]) -> Result<hecc_ir::tensor::Graph, FrontError> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let t = Instant::now();
    let r = load_model(&path);
    assert!(
        t.elapsed().as_secs() < 5,
        "{name}: loading took {:?}",
        t.elapsed()
    );
    r
}

fn load_err(dir: &Path, name: &str, bytes: &[u8]) -> String {
    match load(dir, name, bytes) {
        Ok(_) => panic!("{name} was accepted"),
        Err(e) => render(&e),
    }
}

fn assert_has(text: &str, parts: &[&str]) {
    for p in parts {
        assert!(text.contains(p), "`{p}` not in:\n{text}");
    }
}

#[test]
fn yaml_input_beyond_the_dimension_limit_is_refused() {
    let dir = scratch("yaml-dim");
    let src = "name: a\ninput:\n  shape: [1000000000]\nlayers:\n  - { name: r, op: relu }\n";
    let e = load_err(&dir, "a.yaml", src.as_bytes());
    assert_has(
        &e,
        &[
            "input `input`",
            "`shape`",
            "dimension 0 of [1000000000] is 1000000000",
            "2^24 (16777216) per dimension",
        ],
    );
    // Reported once (not again by the verifier).
    assert_eq!(e.matches("above the limit").count(), 1, "{e}");
    assert_eq!(MAX_DIM, 1 << 24);
}

#[test]
fn yaml_input_beyond_the_element_limit_is_refused() {
    let dir = scratch("yaml-numel");
    let src = "name: b\ninput:\n  shape: [1, 100000, 100000]\nlayers:\n  - { name: pool, op: avg_pool, kernel: 2 }\n";
    let e = load_err(&dir, "b.yaml", src.as_bytes());
    assert_has(
        &e,
        &[
            "`shape`",
            "[1, 100000, 100000] has 10000000000 elements",
            "2^24 (16777216) values per activation tensor per image",
        ],
    );
    assert_eq!(MAX_TENSOR_ELEMENTS, 1 << 24);
}

#[test]
fn yaml_inferred_shapes_beyond_the_limits_are_refused() {
    let cases: &[(&str, &[&str])] = &[
        (
            "input: { shape: [64, 512, 512] }\nlayers:\n  - { name: wide, op: conv2d, out_channels: 128, kernel: 1, bias: false }\n",
            &["node `wide`", "output shape", "[128, 512, 512] has 33554432 elements", "2^24"],
        ),
        (
            "input: { shape: [16] }\nlayers:\n  - { name: fc, op: dense, out_features: 100000000 }\n",
            &["node `fc`", "output shape", "dimension 0 of [100000000]", "2^24"],
        ),
        (
            "input: { shape: [1, 8, 8] }\nlayers:\n  - { name: p, op: avg_pool, kernel: 2, padding: [0, 0, 99999999, 0] }\n",
            &["node `p`", "padded input height", "2^24"],
        ),
    ];
    for (i, (src, want)) in cases.iter().enumerate() {
        let e = match parse_spec_structure(src, "case.yaml") {
            Ok(_) => panic!("case {i} was accepted"),
            Err(e) => render(&e),
        };
        assert_has(&e, want);
    }
    // Exactly at the limits is fine.
    let src = "input: { shape: [64, 512, 512] }\nlayers:\n  - { name: r, op: reshape, shape: [16777216] }\n";
    assert!(parse_spec_structure(src, "edge.yaml").is_ok());
}

#[test]
fn weights_beyond_the_limits_are_refused_even_without_a_weights_file() {
    // The dense weight would be [4096, 2^24] = 2^36 values.
    let src =
        "input: { shape: [16777216] }\nlayers:\n  - { name: fc, op: dense, out_features: 4096 }\n";
    let e = render(&parse_spec_structure(src, "w.yaml").unwrap_err());
    assert_has(
        &e,
        &[
            "node `fc`",
            "weight `fc.weight` would have shape [4096, 16777216]",
            "2^28 (268435456) values per weight tensor",
        ],
    );
    // Three 2^28 weights: each within the per-tensor limit, 3 * 2^28 in total.
    let src = "input: { shape: [16384] }\nlayers:\n\
               - { name: a, op: dense, out_features: 16384, bias: false }\n\
               - { name: b, op: dense, out_features: 16384, bias: false }\n\
               - { name: c, op: dense, out_features: 16384, bias: false }\n";
    let e = match parse_spec_structure(src, "p.yaml") {
        Ok(_) => panic!("accepted"),
        Err(e) => e,
    };
    assert!(e.problems().iter().any(|p| matches!(
        p,
        hecc_ir::front::Problem::Graph(GraphError::TooManyParameters { count, .. })
            if *count == 3 << 28
    )));
    assert_has(
        &render(&e),
        &["805306368 weight values", "2^29 (536870912) per model"],
    );
    assert_eq!((MAX_WEIGHT_ELEMENTS, MAX_PARAMETERS), (1 << 28, 1 << 29));
}

#[test]
fn npy_headers_beyond_the_limits_are_refused_before_reading_data() {
    let mut h = "{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000), }".to_string();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut v = b"\x93NUMPY\x01\x00".to_vec();
    v.extend_from_slice(&(h.len() as u16).to_le_bytes());
    v.extend_from_slice(h.as_bytes());
    let e = read_npy(&v).unwrap_err().to_string();
    assert_has(&e, &["10000000000 elements", "2^28 (268435456)"]);
}

// ---------------------------------------------------------------------------------------------
// ONNX

fn vi(name: &str, dims: &[i64]) -> proto::ValueInfoProto {
    proto::ValueInfoProto {
        name: name.into(),
        r#type: Some(proto::TypeProto {
            tensor_type: Some(proto::TypeProtoTensor {
                elem_type: 1,
                shape: Some(proto::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| proto::Dimension {
                            dim_value: Some(d),
                            dim_param: None,
                        })
                        .collect(),
                }),
            }),
        }),
    }
}

fn node(
    name: &str,
    op: &str,
    inputs: &[&str],
    attrs: Vec<proto::AttributeProto>,
) -> proto::NodeProto {
    proto::NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![format!("{name}_out")],
        name: name.into(),
        op_type: op.into(),
        attribute: attrs,
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> proto::AttributeProto {
    proto::AttributeProto {
        name: name.into(),
        r#type: 7,
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn f32_tensor(name: &str, dims: &[i64], vals: &[f32]) -> proto::TensorProto {
    proto::TensorProto {
        dims: dims.to_vec(),
        data_type: 1,
        name: name.into(),
        raw_data: vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn model(
    input: proto::ValueInfoProto,
    nodes: Vec<proto::NodeProto>,
    init: Vec<proto::TensorProto>,
) -> Vec<u8> {
    let out = nodes
        .last()
        .map(|n| n.output[0].clone())
        .unwrap_or_default();
    proto::ModelProto {
        ir_version: 8,
        opset_import: vec![proto::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(proto::GraphProto {
            node: nodes,
            name: "limits".into(),
            initializer: init,
            input: vec![input],
            output: vec![vi(&out, &[1])],
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

#[test]
fn onnx_relu_input_with_a_huge_dimension_is_refused() {
    let dir = scratch("onnx-input");
    // The graph input itself.
    let bytes = model(
        vi("x", &[1, 1_000_000_000_000]),
        vec![node("act", "Relu", &["x"], vec![])],
        vec![],
    );
    let e = load_err(&dir, "relu.onnx", &bytes);
    assert_has(
        &e,
        &[
            "graph input `x`",
            "dimension 0 of [1000000000000] is 1000000000000",
            "2^24 (16777216) per dimension",
        ],
    );
    // Every dimension within the limit, their product not.
    let bytes = model(
        vi("x", &[1, 4096, 4096, 4096]),
        vec![node("act", "Relu", &["x"], vec![])],
        vec![],
    );
    let e = load_err(&dir, "cube.onnx", &bytes);
    assert_has(&e, &["graph input `x`", "68719476736 elements", "2^24"]);
    // A Pad that makes the Relu's input 1e12 wide.
    let bytes = model(
        vi("x", &[1, 1, 4, 4]),
        vec![
            node("pad", "Pad", &["x", "pads"], vec![]),
            node("act", "Relu", &["pad_out"], vec![]),
        ],
        vec![proto::TensorProto {
            dims: vec![8],
            data_type: 7,
            name: "pads".into(),
            int64_data: vec![0, 0, 0, 0, 0, 0, 0, 1_000_000_000_000],
            ..Default::default()
        }],
    );
    let e = load_err(&dir, "pad.onnx", &bytes);
    assert_has(
        &e,
        &[
            "`pad`",
            "padded input width",
            "2^24 (16777216) per dimension",
        ],
    );
}

#[test]
fn onnx_constants_beyond_the_limits_are_refused() {
    let dir = scratch("onnx-consts");
    // An initializer declaring 1e12 values (without the data).
    let bytes = model(
        vi("x", &[1, 4]),
        vec![node("fc", "MatMul", &["x", "w"], vec![])],
        vec![proto::TensorProto {
            dims: vec![1_000_000, 1_000_000],
            data_type: 1,
            name: "w".into(),
            ..Default::default()
        }],
    );
    let e = load_err(&dir, "init.onnx", &bytes);
    assert_has(
        &e,
        &[
            "initializer `w`",
            "1000000000000 elements",
            "2^28 (268435456)",
        ],
    );
    // A folded Mul of [65536, 1] and [1, 65536] constants would broadcast to 2^32 values.
    let bytes = model(
        vi("x", &[1, 4]),
        vec![
            node("outer", "Mul", &["a", "b"], vec![]),
            node("fc", "MatMul", &["x", "outer_out"], vec![]),
        ],
        vec![
            f32_tensor("a", &[65536, 1], &vec![1.0; 65536]),
            f32_tensor("b", &[1, 65536], &vec![1.0; 65536]),
        ],
    );
    let e = load_err(&dir, "mul.onnx", &bytes);
    assert_has(
        &e,
        &["`outer`", "broadcast result", "4294967296 elements", "2^28"],
    );
    // Dilations that would expand a 3x3 kernel beyond the limits.
    let bytes = model(
        vi("x", &[1, 1, 8, 8]),
        vec![node(
            "conv",
            "Conv",
            &["x", "k"],
            vec![ints("dilations", &[1 << 40, 1 << 40])],
        )],
        vec![f32_tensor("k", &[1, 1, 3, 3], &[1.0; 9])],
    );
    let e = load_err(&dir, "dilated.onnx", &bytes);
    assert_has(
        &e,
        &["`conv`", "dilated kernel", "2^24 (16777216) per dimension"],
    );
}

// ---------------------------------------------------------------------------------------------
// Weight values

fn spec_with_weight(dir: &Path, w: Tensor) -> String {
    let mut weights = Weights::new();
    weights.insert("fc.weight".into(), w);
    let bytes = write_safetensors_f32(&weights).unwrap();
    std::fs::write(dir.join("net.safetensors"), bytes).unwrap();
    "input: { shape: [3] }\nlayers:\n  - { name: fc, op: dense, out_features: 2, bias: false }\n"
        .to_string()
}

#[test]
fn non_finite_weights_are_refused_with_tensor_and_flat_index() {
    let dir = scratch("nan");
    for (bad, kind) in [(f64::NAN, "NaN"), (f64::NEG_INFINITY, "infinite")] {
        let mut w = Tensor::zeros(IxDyn(&[2, 3]));
        w[[1, 1]] = bad;
        w[[1, 2]] = bad;
        let src = spec_with_weight(&dir, w);
        let e = load_err(&dir, "net.yaml", src.as_bytes());
        assert_has(
            &e,
            &[
                "weight `fc.weight`",
                &format!("has 2 {kind} value(s)"),
                "first at index [1, 1] (flat index 4)",
            ],
        );
    }
    // ONNX initializers too.
    let bytes = model(
        vi("x", &[1, 3]),
        vec![node("fc", "Gemm", &["x", "w"], vec![])],
        vec![f32_tensor(
            "w",
            &[3, 2],
            &[0.0, 0.0, 0.0, f32::NAN, 0.0, 0.0],
        )],
    );
    let e = load_err(&dir, "nan.onnx", &bytes);
    assert_has(&e, &["has 1 NaN value(s)", "(flat index"]);
}

#[test]
fn weights_of_absurd_magnitude_are_refused() {
    let dir = scratch("huge");
    let mut w = Tensor::zeros(IxDyn(&[2, 3]));
    w[[0, 2]] = 3e38;
    w[[1, 0]] = -5e9;
    let src = spec_with_weight(&dir, w);
    let e = load_err(&dir, "net.yaml", src.as_bytes());
    assert_has(
        &e,
        &[
            "weight `fc.weight`",
            "2 value(s) of magnitude above 2^32 (4294967296)",
            "first 3",
            "e38 at flat index 2 (index [0, 2])",
        ],
    );
    // At the limit is fine.
    let mut w = Tensor::zeros(IxDyn(&[2, 3]));
    w[[0, 0]] = -MAX_WEIGHT_MAGNITUDE;
    let src = spec_with_weight(&dir, w);
    assert!(load(&dir, "net.yaml", src.as_bytes()).is_ok());
    // ONNX.
    let bytes = model(
        vi("x", &[1, 3]),
        vec![node("fc", "Gemm", &["x", "w"], vec![])],
        vec![f32_tensor("w", &[3, 2], &[0.0, 0.0, 0.0, 0.0, 0.0, 3e38])],
    );
    let e = load_err(&dir, "huge.onnx", &bytes);
    assert_has(
        &e,
        &["used by node `fc`", "magnitude above 2^32", "flat index"],
    );
}
