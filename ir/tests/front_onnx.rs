//! ONNX import: the imported fixtures evaluate to the outputs computed by the fixture script
//! (`models/onnx/make_fixtures.py`, onnx.reference.ReferenceEvaluator in numpy, float32).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use std::path::PathBuf;

use hecc_ir::front::weights::read_npy;
use hecc_ir::front::{load_model, FrontError};
use hecc_ir::tensor::eval::eval_batch;
use hecc_ir::tensor::{Op, Tensor};

fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

fn npy(path: PathBuf) -> Tensor {
    read_npy(&std::fs::read(&path).unwrap()).unwrap()
}

fn compare(stem: &str) -> hecc_ir::tensor::Graph {
    let dir = models().join("onnx");
    let g = load_model(&dir.join(format!("{stem}.onnx"))).unwrap();
    let x = npy(dir.join(format!("{stem}.input.npy")));
    let want = npy(dir.join(format!("{stem}.output.npy")));
    let got = eval_batch(&g, &[x]).unwrap();
    assert_eq!(got[0].shape(), want.shape());
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (a, b) in got[0].iter().zip(want.iter()) {
        // The reference ran in float32; hecc evaluates in f64.
        assert!((a - b).abs() <= 1e-4 * scale, "{stem}: {a} vs {b}");
    }
    g
}

#[test]
fn cnn_fixture_matches_reference() {
    let g = compare("cnn");
    let ops: Vec<&str> = g
        .topo_order()
        .unwrap()
        .iter()
        .map(|&i| g.node(i).unwrap().op.mnemonic())
        .collect();
    assert_eq!(
        ops,
        [
            "input",
            "conv2d",
            "batch_norm",
            "relu",
            "avg_pool",
            "conv2d",
            "square",
            "max_pool",
            "flatten",
            "dense",
            "square",
            "scale",
            "dense",
            "dense"
        ]
    );
    // MatMul + Add became one dense with a bias; node names are kept.
    let fc3 = g.node(g.find("fc3").unwrap()).unwrap();
    assert!(matches!(&fc3.op, Op::Dense { bias: Some(_), .. }));
    assert!(g.find("conv2").is_some());
}

#[test]
fn branches_fixture_matches_reference() {
    let g = compare("branches");
    assert!(matches!(
        g.node(g.find("fire").unwrap()).unwrap().op,
        Op::Concat { axis: 0 }
    ));
    assert_eq!(g.operand_ids(g.find("residual").unwrap()).len(), 2);
    // Unnamed nodes are named after their op type and index; Identity/Dropout vanish; the
    // Reshape target came from a Constant node and, since it only drops the pool's two unit
    // axes, the Reshape is no node at all.
    assert!(matches!(
        g.node(g.find("Mul_8").unwrap()).unwrap().op,
        Op::Square
    ));
    assert!(g.find("identity").is_none() && g.find("dropout").is_none());
    assert!(g.find("reshape").is_none());
    assert!(
        matches!(&g.node(g.find("fc").unwrap()).unwrap().op, Op::Dense { out_features, .. } if *out_features > 0)
    );
}

#[test]
fn bad_bytes_are_errors_not_panics() {
    let bytes = std::fs::read(models().join("onnx/cnn.onnx")).unwrap();
    for cut in (0..bytes.len()).step_by(97) {
        let r = hecc_ir::front::onnx::parse_onnx(&bytes[..cut], "cut.onnx");
        assert!(r.is_err(), "prefix of {cut} bytes was accepted");
    }
    // Flipping bytes must never panic (result may be Ok or Err).
    for i in (0..bytes.len()).step_by(13) {
        let mut b = bytes.clone();
        b[i] ^= 0xA5;
        let _ = hecc_ir::front::onnx::parse_onnx(&b, "flip.onnx");
    }
    assert!(matches!(
        hecc_ir::front::onnx::parse_onnx(&[], "empty.onnx"),
        Err(FrontError::OnnxDecode { .. })
    ));
}
