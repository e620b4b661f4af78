//! Every activation policy on the shapes that used to break scale management: a CNN with
//! max-pooling, and MLPs with two and three ReLU layers in a row. Each model is compiled in
//! both layouts with every policy; the max-pooling CNN and the three-layer MLP run encrypted in
//! the channel layout and the two-layer MLP in the batch layout, and every run is compared with
//! the plaintext circuit reference (the same polynomials, evaluated exactly). Small insecure
//! parameters keep the runs fast.
//! Run with `cargo test --release --test e2e_activations`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

mod common;

use common::{dense, input, mlp, mnist, weights};
use hecc::compile::{compile_graph, input_tensor, Calibration, CompileOptions};
use hecc::run::{infer_graph, load_images, InferOptions};
use hecc_ir::tensor::{Graph, Op, Tensor};
use hecc_passes::params::Security;

/// Every policy family `--activation` accepts.
const POLICIES: &[&str] = &[
    "square",
    "least-squares:8",
    "chebyshev:15",
    "taylor:6",
    "silu-taylor:6",
    "cryptodl:4",
    "minimax:7",
    "minimax:15,15,27",
];

/// conv 5x5 stride 2 (2 channels) -> relu -> max-pool 2x2 -> dense 10.
fn cnn() -> Graph {
    cnn_with(2, 0)
}

/// conv 5x5 stride 2 (2 channels) -> relu -> max-pool `k`x`k` stride 2 padding `pad` ->
/// dense 10 (6x6 pooled positions either way).
fn cnn_with(k: usize, pad: usize) -> Graph {
    let mut g = Graph::new(format!("maxpool{k}p{pad}_cnn"));
    let x = input(&mut g);
    g.add_weight(
        "conv.w",
        Tensor::from_shape_vec(vec![2, 1, 5, 5], weights(50, 25, 7)).unwrap(),
    );
    let c = g.add_node(
        "conv",
        Op::Conv2d {
            out_channels: 2,
            kernel: [5, 5],
            stride: [2, 2],
            padding: [0; 4],
            groups: 1,
            weight: "conv.w".into(),
            bias: None,
        },
        &[x],
    );
    let r = g.add_node("relu", Op::Relu, &[c]);
    let p = g.add_node(
        "pool",
        Op::MaxPool {
            kernel: [k, k],
            stride: [2, 2],
            padding: [pad, pad, pad, pad],
        },
        &[r],
    );
    let f = g.add_node("flatten", Op::Flatten, &[p]);
    let out = dense(&mut g, "fc", f, 72, 10, 11);
    g.add_output(out);
    g
}

/// Options for `policy` in `layout`, with every activation's range calibrated on 32 images.
fn options(g: &Graph, layout: &str, policy: &str) -> CompileOptions {
    let spec = input_tensor(g).unwrap();
    let images = load_images(&mnist().0, &spec).unwrap().take(32);
    let mut dims = vec![images.count];
    dims.extend_from_slice(&spec.shape);
    CompileOptions {
        security: Security::InsecureNone,
        min_log_n: 13,
        layout: layout.parse().unwrap(),
        activation: Some(hecc::compile::ActivationChoice::parse(policy).unwrap()),
        calibration: Some(Calibration {
            samples: Tensor::from_shape_vec(dims, images.data).unwrap(),
            margin: 0.1,
        }),
        ..Default::default()
    }
}

/// Runs `g` encrypted on 4 images and checks the decrypted outputs against the plaintext
/// circuit reference; returns the output precision in bits.
fn run(g: &Graph, layout: &str, policy: &str) -> f64 {
    let label = format!("{} {layout} {policy}", g.name);
    let opts = InferOptions {
        compile: options(g, layout, policy),
        batch: Some(4),
        verify: true,
        progress: None,
        memory_limit: None,
        no_memory_check: false,
        ..Default::default()
    };
    let (images, labels) = mnist();
    let rep =
        infer_graph(g, &images, Some(&labels), &opts).unwrap_or_else(|e| panic!("{label}: {e:?}"));
    let v = rep.verification.as_ref().expect("verification requested");
    let a = rep
        .approximation
        .as_ref()
        .unwrap_or_else(|| panic!("{label}: no approximation agreement reported"));
    assert_eq!(a.images, 4, "{label}: agreement over the run's images");
    let scale = v.output.max_abs_value.max(1.0);
    let err = v.output.max_abs_error;
    assert!(
        err.is_finite() && err < 1e-3 * scale,
        "{label}: output error {err} against the circuit reference (values up to {scale})"
    );
    if policy.starts_with("minimax") {
        // The precise approximation keeps every prediction of the exact model.
        assert_eq!(a.agree, a.images, "{label}: agreement with the exact model");
    }
    let bits = (scale / err.max(f64::MIN_POSITIVE)).log2();
    eprintln!(
        "{label}: {bits:.1} bits, agreement with the exact model {}/{}",
        a.agree, a.images
    );
    bits
}

#[test]
fn every_policy_compiles_in_both_layouts() {
    for g in [cnn(), mlp(2), mlp(3)] {
        for layout in ["batch", "channel"] {
            for p in POLICIES {
                let c = compile_graph(&g, &options(&g, layout, p))
                    .unwrap_or_else(|e| panic!("{} {layout} {p}: {e:?}", g.name));
                assert_eq!(
                    c.plan.activation.to_string(),
                    *p,
                    "{} {layout}: policy recorded",
                    g.name
                );
            }
        }
    }
}

#[test]
fn maxpool_cnn_runs_encrypted_in_the_channel_layout_with_every_policy() {
    let g = cnn();
    for p in POLICIES {
        run(&g, "channel", p);
    }
}

#[test]
fn padded_maxpool_after_relu_runs_encrypted_in_the_channel_layout() {
    // 3x3 windows, stride 2, padding 1 (the ResNet stem's pooling): the channel layout reads
    // the padding as zero, neutral after a ReLU. (The batch layout, which skips padded
    // window elements, also matches its reference, but takes ten minutes here: 8 pairwise
    // maxima for each of 72 outputs, one ciphertext each.)
    run(&cnn_with(3, 1), "channel", "minimax:7");
}

#[test]
fn three_relu_layers_run_encrypted_with_every_policy() {
    let g = mlp(3);
    for p in POLICIES {
        run(&g, "channel", p);
    }
}

#[test]
fn two_relu_layers_run_encrypted_in_the_batch_layout_with_composite_minimax() {
    let g = mlp(2);
    for p in ["chebyshev:15", "minimax:15,15,27"] {
        run(&g, "batch", p);
    }
}

#[test]
fn a_model_with_relu_needs_an_activation_policy() {
    let g = mlp(2);
    let mut o = options(&g, "batch", "square");
    o.activation = None;
    let err = compile_graph(&g, &o)
        .err()
        .expect("compiling without a policy must fail");
    let text = format!("{err:?}");
    assert!(
        text.contains("relu"),
        "the error names the activations: {text}"
    );
}
