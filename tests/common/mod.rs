//! Shared by the end-to-end tests: the repository's paths, the bundled MNIST sample, and the
//! check of an encrypted run against its plaintext references.

use hecc::run::Verification;
use hecc_ir::tensor::{Graph, Normalization, Op, Shape, Tensor};
use std::path::PathBuf;

/// The repository root (where `models/` and `tests/fixtures/` are).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The bundled first 256 MNIST test images and their labels (IDX files).
#[allow(dead_code)] // not every test file uses it
pub fn mnist() -> (PathBuf, PathBuf) {
    let d = root().join("models/data");
    (
        d.join("mnist-t10k-first256-images-idx3-ubyte"),
        d.join("mnist-t10k-first256-labels-idx1-ubyte"),
    )
}

#[allow(dead_code)] // not every test file uses it
/// Asserts what every end-to-end run must show: encrypted and plaintext argmax agree on all
/// `batch` images, and the output error against the circuit's reference semantics and against
/// the tensor model is finite and below `rel_tol` times the largest logit (at least 1), and
/// every per-stage error is reported and finite.
pub fn assert_matches_plaintext(label: &str, v: &Verification, batch: usize, rel_tol: f64) {
    assert_eq!(
        v.argmax_agree, batch,
        "{label}: encrypted and plaintext argmax must agree on every image"
    );
    let scale = v.output.max_abs_value.max(1.0);
    assert!(
        v.output.max_abs_error.is_finite() && v.output.max_abs_error < rel_tol * scale,
        "{label}: output error {} against values up to {}",
        v.output.max_abs_error,
        v.output.max_abs_value
    );
    assert!(
        v.tensor_max_abs_error < rel_tol * scale,
        "{label}: error against the tensor model {}",
        v.tensor_max_abs_error
    );
    assert!(!v.stages.is_empty(), "per-stage errors are reported");
    for s in &v.stages {
        assert!(
            s.max_abs_error.is_finite(),
            "{}: {}",
            s.name,
            s.max_abs_error
        );
    }
}

/// Deterministic weights, uniform in `[-a, a]` with `a = sqrt(6 / fan_in)` (He-style).
#[allow(dead_code)] // not every test file uses it
pub fn weights(n: usize, fan_in: usize, seed: u64) -> Vec<f64> {
    let a = (6.0 / fan_in as f64).sqrt();
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (s >> 11) as f64 / (1u64 << 53) as f64;
            a * (2.0 * u - 1.0)
        })
        .collect()
}

#[allow(dead_code)] // not every test file uses it
/// The 1x28x28 input `x`.
pub fn input(g: &mut Graph) -> hecc_ir::tensor::NodeId {
    g.add_node(
        "x",
        Op::Input {
            shape: Shape::from([1, 28, 28]),
            norm: Normalization::default(),
        },
        &[],
    )
}

#[allow(dead_code)] // not every test file uses it
/// A dense layer `name` of deterministic weights on `x`.
pub fn dense(
    g: &mut Graph,
    name: &str,
    x: hecc_ir::tensor::NodeId,
    n_in: usize,
    n_out: usize,
    seed: u64,
) -> hecc_ir::tensor::NodeId {
    let w = format!("{name}.w");
    let b = format!("{name}.b");
    g.add_weight(
        w.clone(),
        Tensor::from_shape_vec(vec![n_out, n_in], weights(n_out * n_in, n_in, seed)).unwrap(),
    );
    g.add_weight(
        b.clone(),
        Tensor::from_shape_vec(vec![n_out], weights(n_out, n_in, seed + 1)).unwrap(),
    );
    g.add_node(
        name,
        Op::Dense {
            out_features: n_out,
            weight: w,
            bias: Some(b),
        },
        &[x],
    )
}

/// flatten -> (dense 16 -> relu) x `layers` -> dense 10.
#[allow(dead_code)] // not every test file uses it
pub fn mlp(layers: usize) -> Graph {
    mlp_of_width(layers, 16)
}

#[allow(dead_code)] // not every test file uses it
/// `layers` dense layers of `width` units, each followed by an exact ReLU, then a 10-way head.
pub fn mlp_of_width(layers: usize, width: usize) -> Graph {
    let mut g = Graph::new(format!("mlp{layers}x{width}"));
    let x = input(&mut g);
    let mut h = g.add_node("flatten", Op::Flatten, &[x]);
    let mut n_in = 784;
    for k in 0..layers {
        let d = dense(&mut g, &format!("fc{k}"), h, n_in, width, 20 + 2 * k as u64);
        h = g.add_node(format!("relu{k}"), Op::Relu, &[d]);
        n_in = width;
    }
    let out = dense(&mut g, "head", h, n_in, 10, 40);
    g.add_output(out);
    g
}
