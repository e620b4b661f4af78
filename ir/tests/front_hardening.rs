//! Inputs the front ends used to accept silently and now refuse with a diagnostic naming the
//! cause: op attributes of absurd magnitude, a non-positive input `std`, an ONNX batch
//! dimension beyond the limits, a value with two producers, an unsupported or missing default
//! opset, and weights files holding tensors of layers the spec does not have. Also checks that
//! every reference model still loads.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use std::path::{Path, PathBuf};

use hecc_ir::front::onnx::{parse_onnx, proto, MAX_OPSET, MIN_OPSET};
use hecc_ir::front::weights::write_safetensors_f32;
use hecc_ir::front::yaml::{parse_spec, parse_spec_structure};
use hecc_ir::front::{load_model, FrontError};
use hecc_ir::tensor::limits::{MAX_WEIGHT_MAGNITUDE, MIN_INPUT_STD};
use hecc_ir::tensor::{verify, Graph, GraphError, Normalization, Op, Shape, Tensor, Weights};
use ndarray::IxDyn;
use prost::Message;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A scratch directory for one test's files (under cargo's target tmp directory).
fn scratch(tag: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("front_hardening-{tag}"));
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

fn assert_has(text: &str, parts: &[&str]) {
    for p in parts {
        assert!(text.contains(p), "`{p}` not in:\n{text}");
    }
}

fn structure_err(src: &str) -> String {
    match parse_spec_structure(src, "m.yaml") {
        Ok(_) => panic!("accepted:\n{src}"),
        Err(e) => render(&e),
    }
}

const LIMIT: &str =
    "above the limit of 2^32 (4294967296) on the magnitude of values that multiply the data";

// ---------------------------------------------------------------------------------------------
// 1. Attributes that multiply the data

/// A one-layer spec on a 4-value input.
fn one_layer(layer: &str) -> String {
    format!("name: m\ninput: {{ shape: [4], range: [0.0, 1.0] }}\nlayers:\n  - {layer}\n")
}

#[test]
fn yaml_attributes_of_absurd_magnitude_are_refused() {
    let cases: &[(&str, &[&str])] = &[
        (
            "{ name: s, op: scale, factor: 3e38 }",
            &["node `s` (scale)", "`factor` is 3e38", LIMIT],
        ),
        (
            "{ name: s, op: scale, factor: -5.0e9 }",
            &["node `s` (scale)", "`factor` is -5e9", LIMIT],
        ),
        (
            "{ name: s, op: scale, factor: .nan }",
            &["node `s` (scale)", "`factor` must be finite, got NaN"],
        ),
        (
            "{ name: s, op: scale, factor: -.inf }",
            &["node `s` (scale)", "`factor` must be finite, got -inf"],
        ),
        (
            "{ name: p, op: poly, coeffs: [0, 1e308, 1e308] }",
            &[
                "node `p` (poly)",
                "`coeffs[1]` is 1e308",
                LIMIT,
                "(2 values beyond it)",
            ],
        ),
        (
            "{ name: p, op: poly, coeffs: [0, 1, .nan] }",
            &["node `p` (poly)", "`coeffs[2]` must be finite, got NaN"],
        ),
        (
            "{ name: bn, op: batch_norm, epsilon: 1e40 }",
            &["node `bn` (batch_norm)", "`epsilon` is 1e40", LIMIT],
        ),
        (
            "{ name: bn, op: batch_norm, epsilon: -1 }",
            &[
                "node `bn` (batch_norm)",
                "`epsilon` must be non-negative, got -1",
            ],
        ),
    ];
    for (layer, want) in cases {
        let e = structure_err(&one_layer(layer));
        assert_has(&e, want);
        // Reported once, at the attribute (not again by the verifier).
        assert_eq!(e.matches("problem(s)").count(), 1, "{e}");
        assert!(e.contains("(1 problem(s))"), "{e}");
    }
    // At the limit is fine.
    let ok = [
        format!("{{ name: s, op: scale, factor: {MAX_WEIGHT_MAGNITUDE} }}"),
        format!("{{ name: p, op: poly, coeffs: [0, -{MAX_WEIGHT_MAGNITUDE}, 0.5] }}"),
    ];
    for layer in ok {
        assert!(
            parse_spec_structure(&one_layer(&layer), "m.yaml").is_ok(),
            "{layer}"
        );
    }
}

#[test]
fn yaml_input_mean_of_absurd_magnitude_is_refused() {
    let src =
        "input: { shape: [2, 2, 2], mean: [0.5, 1e12] }\nlayers:\n  - { name: r, op: relu }\n";
    let e = structure_err(src);
    assert_has(&e, &["input `mean[1]` is 1e12", LIMIT]);
    assert!(e.contains("(1 problem(s))"), "{e}");
}

fn node_error(g: &Graph) -> String {
    let errs = verify(g).expect_err("accepted");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        matches!(errs[0], GraphError::InvalidAttribute { .. }),
        "{errs:?}"
    );
    errs[0].to_string()
}

fn graph_with(op: Op) -> Graph {
    let mut g = Graph::new("g");
    let x = g.add_node(
        "x",
        Op::Input {
            shape: Shape::from([4]),
            norm: Normalization::default(),
        },
        &[],
    );
    let y = g.add_node("y", op, &[x]);
    g.add_output(y);
    g
}

#[test]
fn the_verifier_bounds_every_multiplying_attribute() {
    // Whatever the front end (ONNX, the text form, a pass), the verifier refuses them.
    let e = node_error(&graph_with(Op::Scale { factor: 3e38 }));
    assert_has(&e, &["node `y` (%1, scale)", "`factor` is 3e38", LIMIT]);
    let e = node_error(&graph_with(Op::Poly {
        coeffs: vec![0.0, 1e308, 1e308],
    }));
    assert_has(&e, &["node `y` (%1, poly)", "`coeffs[1]` is 1e308", LIMIT]);
    let e = node_error(&graph_with(Op::Poly {
        coeffs: vec![f64::INFINITY],
    }));
    assert_has(&e, &["`coeffs[0]` must be finite, got inf"]);
    let mut g = graph_with(Op::BatchNorm {
        gamma: "g".into(),
        beta: "b".into(),
        mean: "m".into(),
        var: "v".into(),
        epsilon: 1e300,
    });
    for w in ["g", "b", "m", "v"] {
        g.add_weight(w, Tensor::ones(IxDyn(&[4])));
    }
    let e = node_error(&g);
    assert_has(
        &e,
        &["node `y` (%1, batch_norm)", "`epsilon` is 1e300", LIMIT],
    );

    // The input normalisation.
    let input = |mean: Vec<f64>, std: Vec<f64>| {
        let mut g = Graph::new("g");
        let x = g.add_node(
            "x",
            Op::Input {
                shape: Shape::from([2, 2]),
                norm: Normalization {
                    mean,
                    std,
                    range: None,
                },
            },
            &[],
        );
        g.add_output(x);
        node_error(&g)
    };
    assert_has(
        &input(vec![0.0], vec![-1.0]),
        &[
            "node `x` (%0, input)",
            "normalisation `std` is -1: std must be positive",
        ],
    );
    assert_has(
        &input(vec![0.0], vec![1.0, 0.0]),
        &["normalisation `std[1]` must be non-zero"],
    );
    assert_has(
        &input(vec![0.0], vec![1e-12]),
        &[
            "normalisation `std` is 1e-12, below the limit of 2^-32",
            LIMIT,
        ],
    );
    assert_has(
        &input(vec![-1e20], vec![1.0]),
        &["normalisation `mean` is -1e20", LIMIT],
    );
    assert!(verify(&graph_with(Op::Scale {
        factor: -MAX_WEIGHT_MAGNITUDE
    }))
    .is_ok());
}

#[test]
fn onnx_constant_factors_of_absurd_magnitude_are_refused() {
    // `x * 3e38` becomes a `scale` node: refused by the verifier, naming the ONNX node.
    let bytes = onnx_model(
        &[Some(1), Some(4)],
        vec![node("mul", "Mul", &["x", "c"], "y")],
        vec![f32_tensor("c", &[], &[3e38])],
        17,
    );
    let e = render(&parse_onnx(&bytes, "mul.onnx").unwrap_err());
    assert_has(
        &e,
        &["node `mul` (%1, scale)", "`factor` is 3", "e38", LIMIT],
    );
    // `x / 1e-12` too.
    let bytes = onnx_model(
        &[Some(1), Some(4)],
        vec![node("div", "Div", &["x", "c"], "y")],
        vec![f32_tensor("c", &[], &[1e-12])],
        17,
    );
    let e = render(&parse_onnx(&bytes, "div.onnx").unwrap_err());
    assert_has(&e, &["node `div`", "`factor` is 1", "e12", LIMIT]);
}

// ---------------------------------------------------------------------------------------------
// 2. The input std

#[test]
fn yaml_input_std_must_be_positive() {
    let spec = |std: &str| {
        format!("input:\n  shape: [2, 4, 4]\n  std: {std}\nlayers:\n  - {{ name: r, op: relu }}\n")
    };
    let e = structure_err(&spec("-1"));
    assert_has(
        &e,
        &[
            "input `std` is -1: std must be positive",
            "(a negative std mirrors the input)",
        ],
    );
    assert!(e.contains("(1 problem(s))"), "{e}");
    let e = structure_err(&spec("[0.5, -0.25]"));
    assert_has(&e, &["input `std[1]` is -0.25: std must be positive"]);
    // Zero keeps its message.
    let e = structure_err(&spec("0"));
    assert_has(&e, &["input `std` must be non-zero"]);
    let e = structure_err(&spec("1e-12"));
    assert_has(
        &e,
        &["input `std` is 1e-12, below the limit of 2^-32", LIMIT],
    );
    // The smallest std accepted, and a usual one.
    assert!(parse_spec_structure(&spec(&MIN_INPUT_STD.to_string()), "m.yaml").is_ok());
    assert!(parse_spec_structure(&spec("[0.247, 0.243]"), "m.yaml").is_ok());
}

// ---------------------------------------------------------------------------------------------
// ONNX models

fn vi(name: &str, dims: &[Option<i64>]) -> proto::ValueInfoProto {
    proto::ValueInfoProto {
        name: name.into(),
        r#type: Some(proto::TypeProto {
            tensor_type: Some(proto::TypeProtoTensor {
                elem_type: 1,
                shape: Some(proto::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| proto::Dimension {
                            dim_value: d,
                            dim_param: d.is_none().then(|| "N".to_string()),
                        })
                        .collect(),
                }),
            }),
        }),
    }
}

fn node(name: &str, op: &str, inputs: &[&str], output: &str) -> proto::NodeProto {
    proto::NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: name.into(),
        op_type: op.into(),
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

/// A model with input `x` of dimensions `dims`, the nodes (the last one's output is the graph
/// output) and initializers, importing version `opset` of the default domain.
fn onnx_model(
    dims: &[Option<i64>],
    nodes: Vec<proto::NodeProto>,
    init: Vec<proto::TensorProto>,
    opset: i64,
) -> Vec<u8> {
    with_opsets(
        dims,
        nodes,
        init,
        vec![proto::OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
    )
}

fn with_opsets(
    dims: &[Option<i64>],
    nodes: Vec<proto::NodeProto>,
    init: Vec<proto::TensorProto>,
    opset_import: Vec<proto::OperatorSetIdProto>,
) -> Vec<u8> {
    let out = nodes.last().map(|n| n.output[0].clone()).unwrap();
    proto::ModelProto {
        ir_version: 8,
        opset_import,
        graph: Some(proto::GraphProto {
            node: nodes,
            name: "hardening".into(),
            initializer: init,
            input: vec![vi("x", dims)],
            output: vec![vi(&out, &[None, Some(4)])],
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn relu(dims: &[Option<i64>], opset: i64) -> Vec<u8> {
    onnx_model(dims, vec![node("act", "Relu", &["x"], "y")], vec![], opset)
}

fn onnx_err(bytes: &[u8]) -> String {
    match parse_onnx(bytes, "m.onnx") {
        Ok(_) => panic!("accepted"),
        Err(e) => render(&e),
    }
}

// 3. The batch dimension

#[test]
fn onnx_batch_dimension_beyond_the_limit_is_refused() {
    let e = onnx_err(&relu(&[Some(1_000_000_000_000), Some(4)], 17));
    assert_has(
        &e,
        &[
            "graph input `x` has batch dimension 1000000000000 (dimension 0 of [1000000000000, 4])",
            "symbolic (e.g. `N`) or a size of at most 2^24 (16777216), the limit per dimension",
        ],
    );
    let e = onnx_err(&relu(&[Some(-7), Some(4)], 17));
    assert_has(&e, &["batch dimension -7"]);
    // Symbolic, unknown (-1 or 0), 1, a fixed batch and the limit itself are accepted.
    for b in [None, Some(-1), Some(0), Some(1), Some(64), Some(1 << 24)] {
        let g = parse_onnx(&relu(&[b, Some(4)], 17), "m.onnx");
        assert!(g.is_ok(), "batch {b:?}: {:?}", g.err());
    }
}

// 4. Two producers of one value

#[test]
fn onnx_values_with_two_producers_are_refused() {
    // A duplicated node (same name, same output), as a mutation of a real graph.
    let bytes = onnx_model(
        &[None, Some(4)],
        vec![
            node("act", "Relu", &["x"], "h"),
            node("act", "Relu", &["x"], "h"),
            node("out", "Relu", &["h"], "y"),
        ],
        vec![],
        17,
    );
    let e = onnx_err(&bytes);
    assert_has(
        &e,
        &[
            "value `h` is produced by two nodes, `act` (node 0, Relu) and `act` (node 1, Relu)",
            "every value must have one producer",
        ],
    );
    // Two different nodes writing the same value; an unnamed one is labelled by op and index.
    let mut second = node("", "Abs", &["x"], "h");
    second.name.clear();
    let bytes = onnx_model(
        &[None, Some(4)],
        vec![
            node("first", "Relu", &["x"], "h"),
            second,
            node("out", "Relu", &["h"], "y"),
        ],
        vec![],
        17,
    );
    let e = onnx_err(&bytes);
    assert_has(
        &e,
        &["value `h` is produced by two nodes, `first` (node 0, Relu) and `Abs_1` (node 1, Abs)"],
    );
    // A node overwriting an initializer or the graph input.
    let bytes = onnx_model(
        &[None, Some(4)],
        vec![
            node("shadow", "Relu", &["x"], "w"),
            node("fc", "MatMul", &["x", "w"], "y"),
        ],
        vec![f32_tensor("w", &[4, 4], &[0.5; 16])],
        17,
    );
    assert_has(
        &onnx_err(&bytes),
        &["value `w` is produced by node `shadow` (node 0, Relu) but is also an initializer"],
    );
    let bytes = onnx_model(
        &[None, Some(4)],
        vec![
            node("loop", "Relu", &["x"], "x"),
            node("out", "Relu", &["x"], "y"),
        ],
        vec![],
        17,
    );
    assert_has(
        &onnx_err(&bytes),
        &["value `x` is produced by node `loop` (node 0, Relu) but is also a graph input"],
    );
}

// 5. Opset versions

#[test]
fn onnx_opsets_outside_the_supported_range_are_refused() {
    let range = "hecc imports the default ONNX opset in versions 7 to 28";
    for v in [999, 29, 6, 1, 0, -3] {
        let e = onnx_err(&relu(&[None, Some(4)], v));
        assert_has(
            &e,
            &[
                &format!("imports version {v} of the default ONNX opset, which is not supported"),
                range,
            ],
        );
    }
    // `ai.onnx` is the default domain too, and every import of it is checked.
    let both = |a: i64, b: i64| {
        with_opsets(
            &[None, Some(4)],
            vec![node("act", "Relu", &["x"], "y")],
            vec![],
            vec![
                proto::OperatorSetIdProto {
                    domain: String::new(),
                    version: a,
                },
                proto::OperatorSetIdProto {
                    domain: "ai.onnx".into(),
                    version: b,
                },
            ],
        )
    };
    assert_has(&onnx_err(&both(17, 999)), &["version 999", range]);
    assert!(parse_onnx(&both(17, 17), "m.onnx").is_ok());
    // No default-domain import at all (only another domain).
    let bytes = with_opsets(
        &[None, Some(4)],
        vec![node("act", "Relu", &["x"], "y")],
        vec![],
        vec![proto::OperatorSetIdProto {
            domain: "ai.onnx.ml".into(),
            version: 3,
        }],
    );
    assert_has(
        &onnx_err(&bytes),
        &[
            "the model imports no version of the default ONNX opset (domain \"\" or \"ai.onnx\")",
            range,
        ],
    );
    // The bounds themselves.
    assert_eq!((MIN_OPSET, MAX_OPSET), (7, 28));
    for v in [MIN_OPSET, 13, 21, MAX_OPSET] {
        let g = parse_onnx(&relu(&[None, Some(4)], v), "m.onnx");
        assert!(g.is_ok(), "opset {v}: {:?}", g.err());
    }
}

#[test]
fn every_onnx_fixture_imports_a_supported_opset() {
    // The reference exports and ONNX's node tests (whatever their status) all declare an opset
    // in the supported range, so the range refuses none of them.
    let mut files = vec![
        root().join("models/onnx/cnn.onnx"),
        root().join("models/onnx/branches.onnx"),
        root().join("models/onnx/export/lenet5_torch.onnx"),
        root().join("models/onnx/export/mlp_sklearn.onnx"),
        root().join("models/onnx/export/resnet_torch.onnx"),
    ];
    let nodes = root().join("tests/fixtures/onnx_node");
    for d in std::fs::read_dir(&nodes).unwrap().flatten() {
        let p = d.path().join("model.onnx");
        if p.exists() {
            files.push(p);
        }
    }
    assert!(files.len() > 200, "{}", files.len());
    for p in files {
        let m = proto::ModelProto::decode(std::fs::read(&p).unwrap().as_slice()).unwrap();
        let v: Vec<i64> = m
            .opset_import
            .iter()
            .filter(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map(|o| o.version)
            .collect();
        assert!(
            !v.is_empty() && v.iter().all(|v| (MIN_OPSET..=MAX_OPSET).contains(v)),
            "{}: {v:?}",
            p.display()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Weights no layer uses

fn write_weights(dir: &Path, file: &str, tensors: &[(&str, &[usize])]) {
    let mut w = Weights::new();
    for (name, shape) in tensors {
        w.insert(name.to_string(), Tensor::from_elem(IxDyn(shape), 0.5));
    }
    std::fs::write(dir.join(file), write_safetensors_f32(&w).unwrap()).unwrap();
}

#[test]
fn weights_of_layers_the_spec_does_not_have_are_refused() {
    let dir = scratch("unused");
    write_weights(
        &dir,
        "net.safetensors",
        &[
            ("fc1.weight", &[3, 4]),
            ("fc1.bias", &[3]),
            ("fc2.weight", &[2, 3]),
            ("fc2.bias", &[2]),
        ],
    );
    let full = "input: { shape: [4] }\nweights: net.safetensors\nlayers:\n\
                - { name: fc1, op: dense, out_features: 3 }\n\
                - { name: act, op: square }\n\
                - { name: fc2, op: dense, out_features: 2 }\n";
    assert!(parse_spec(full, "net.yaml", Some(&dir)).is_ok());
    // Truncated after `act`: fc2's tensors are left over.
    let cut = &full[..full.find("- { name: fc2").unwrap()];
    let e = render(&parse_spec(cut, "net.yaml", Some(&dir)).unwrap_err());
    assert_has(
        &e,
        &[
            "weights file `net.safetensors` has 2 tensor(s) no layer uses: `fc2.bias`, `fc2.weight`",
            "the spec has no layer `fc2`: it may be truncated, or written for another weights file",
        ],
    );
    assert!(e.contains("(1 problem(s))"), "{e}");

    // The default weights file (`<stem>.safetensors` next to the spec), through load_model.
    std::fs::copy(dir.join("net.safetensors"), dir.join("short.safetensors")).unwrap();
    std::fs::write(
        dir.join("short.yaml"),
        cut.replace("weights: net.safetensors\n", ""),
    )
    .unwrap();
    let e = render(&load_model(&dir.join("short.yaml")).unwrap_err());
    assert_has(
        &e,
        &["weights file `short.safetensors` has 2 tensor(s) no layer uses"],
    );

    // Unused tensors of an existing layer, or not named `<layer>.<param>`, are allowed
    // (alternatives, bookkeeping such as `bn.num_batches_tracked`).
    write_weights(
        &dir,
        "extra.safetensors",
        &[
            ("fc1.weight", &[3, 4]),
            ("fc1.bias", &[3]),
            ("fc1.num_batches_tracked", &[1]),
            ("spare", &[3, 4]),
        ],
    );
    let src = "input: { shape: [4] }\nweights: extra.safetensors\nlayers:\n\
               - { name: fc1, op: dense, out_features: 3 }\n";
    assert!(parse_spec(src, "extra.yaml", Some(&dir)).is_ok());

    // Only reported on an otherwise valid spec: with another problem, a node left out would
    // make its weights look unused.
    let bad = cut.replace("op: square", "op: sqare");
    let e = render(&parse_spec(&bad, "net.yaml", Some(&dir)).unwrap_err());
    assert_has(&e, &["unknown op `sqare`"]);
    assert!(!e.contains("no layer uses"), "{e}");

    // Many left-over tensors are listed up to ten.
    let many: Vec<(String, Vec<usize>)> = (0..12)
        .map(|i| (format!("extra{i:02}.weight"), vec![1]))
        .chain([
            ("fc1.weight".to_string(), vec![3, 4]),
            ("fc1.bias".into(), vec![3]),
        ])
        .collect();
    let refs: Vec<(&str, &[usize])> = many.iter().map(|(n, s)| (n.as_str(), &s[..])).collect();
    write_weights(&dir, "many.safetensors", &refs);
    let src = "input: { shape: [4] }\nweights: many.safetensors\nlayers:\n\
               - { name: fc1, op: dense, out_features: 3 }\n";
    let e = render(&parse_spec(src, "many.yaml", Some(&dir)).unwrap_err());
    assert_has(
        &e,
        &[
            "has 12 tensor(s) no layer uses: `extra00.weight`",
            "`extra09.weight`, and 2 more",
        ],
    );
}

#[test]
fn truncated_cryptonets_spec_is_refused() {
    // The mutation that found the problem: models/cryptonets.yaml cut before `act2`, next to
    // its weights.
    let dir = scratch("cryptonets");
    std::fs::copy(
        root().join("models/cryptonets.safetensors"),
        dir.join("cryptonets.safetensors"),
    )
    .unwrap();
    let src = std::fs::read_to_string(root().join("models/cryptonets.yaml")).unwrap();
    let cut = &src[..src.find("  - { name: act2").unwrap()];
    std::fs::write(dir.join("cryptonets.yaml"), cut).unwrap();
    let e = render(&load_model(&dir.join("cryptonets.yaml")).unwrap_err());
    assert_has(
        &e,
        &[
            "weights file `cryptonets.safetensors` has 2 tensor(s) no layer uses: `fc2.bias`, `fc2.weight`",
            "no layer `fc2`",
        ],
    );
    std::fs::write(dir.join("cryptonets.yaml"), &src).unwrap();
    assert!(load_model(&dir.join("cryptonets.yaml")).is_ok());
}

// ---------------------------------------------------------------------------------------------
// The reference models

#[test]
fn every_reference_model_loads() {
    let mut specs = Vec::new();
    for dir in ["models", "models/beaa"] {
        for e in std::fs::read_dir(root().join(dir)).unwrap().flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "yaml") {
                specs.push(p);
            }
        }
    }
    specs.sort();
    assert!(specs.len() >= 6, "{specs:?}");
    let mut loaded = 0;
    for p in &specs {
        // A spec whose weights are not committed (squeezenet28, resnet8_28) is checked for
        // structure only.
        let has_weights = ["safetensors", "npz"]
            .iter()
            .any(|x| p.with_extension(x).exists());
        let r = if has_weights {
            load_model(p)
        } else {
            let text = std::fs::read_to_string(p).unwrap();
            parse_spec_structure(&text, &p.display().to_string())
        };
        assert!(r.is_ok(), "{}: {}", p.display(), render(&r.unwrap_err()));
        loaded += usize::from(has_weights);
    }
    assert!(loaded >= 5, "{loaded}");
    for rel in [
        "models/onnx/cnn.onnx",
        "models/onnx/branches.onnx",
        "models/onnx/export/lenet5_torch.onnx",
        "models/onnx/export/mlp_sklearn.onnx",
        "models/onnx/export/resnet_torch.onnx",
        "models/onnx/export/resnet20_torch.onnx",
        "tests/fixtures/front/ok_tiny.yaml",
    ] {
        let r = load_model(&root().join(rel));
        assert!(r.is_ok(), "{rel}: {}", render(&r.unwrap_err()));
    }
}
