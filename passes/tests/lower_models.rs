//! Lowering + management of the reference models, checked against the tensor evaluator:
//! the plaintext simulation of the managed HE circuit must equal the model's output.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use hecc_ir::he::interp::interpret;
use hecc_ir::he::{verify, VerifyOptions};
use hecc_ir::tensor::eval::eval_batch;
use hecc_ir::tensor::{Graph, Op, Tensor};
use hecc_passes::he::{depth_of, manage, RescalePolicy};
use hecc_passes::lower::{lower_batch, LowerOptions};
use std::path::PathBuf;

fn model(name: &str) -> Graph {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models")
        .join(name);
    hecc_ir::front::load_model(&p).unwrap_or_else(|e| panic!("{name}: {e:?}"))
}

fn pseudo_random(seed: u64, n: usize) -> Vec<f64> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect()
}

/// Batch lowering of `batch` images in as many slots, 40-bit scales, no activation policy.
fn lower_options(batch: u32) -> LowerOptions {
    LowerOptions {
        batch,
        slots: batch,
        log_scale: 40.0,
        activations: Default::default(),
    }
}

/// Lowers, manages with `policy`, simulates on `batch` random images and compares.
fn check(g: &Graph, batch: usize, policy: RescalePolicy) -> (u32, f64) {
    let Op::Input { shape, .. } = &g.node(g.inputs[0]).unwrap().op else {
        panic!("no input")
    };
    let per = shape.numel();
    let data = pseudo_random(7, batch * per);
    let mut dims = vec![batch];
    dims.extend_from_slice(shape);
    let x = Tensor::from_shape_vec(dims, data.clone()).unwrap();
    let want = eval_batch(g, &[x]).unwrap();

    let raw = lower_batch(g, &lower_options(batch as u32)).unwrap().module;
    let m = manage(&raw, policy, None).unwrap();
    verify(&m, &VerifyOptions::STRICT).unwrap_or_else(|e| panic!("{policy:?}: {e:?}"));
    let outs = interpret(&m, |_, index, _, _| {
        Some((0..batch).map(|b| data[b * per + index as usize]).collect())
    })
    .unwrap();
    let want = &want[0];
    let n_out = want.len() / batch;
    assert_eq!(outs.len(), n_out);
    let mut worst = 0.0f64;
    for o in &outs {
        for b in 0..batch {
            let w = want.as_slice().unwrap()[b * n_out + o.index as usize];
            let got = o.slots[b];
            let rel = (got - w).abs() / w.abs().max(1.0);
            worst = worst.max(rel);
        }
    }
    assert!(worst < 1e-6, "{}: relative error {worst}", g.name);
    (depth_of(&m), worst)
}

#[test]
fn cryptonets_batch_matches_the_tensor_model_with_hand_counted_depth() {
    let g = model("cryptonets.yaml");
    for policy in [RescalePolicy::Always, RescalePolicy::Waterline] {
        let (depth, err) = check(&g, 4, policy);
        // conv (mac) 1 + square 1 + fc1 (mac) 1 + square 1 + fc2 (mac) 1 = 5 levels.
        assert_eq!(depth, 5, "{policy:?}");
        eprintln!("cryptonets {policy:?}: depth {depth}, max relative error {err:e}");
    }
}

#[test]
fn lenet5_batch_matches_the_tensor_model() {
    let g = model("lenet5.yaml");
    for policy in [RescalePolicy::Always, RescalePolicy::Waterline] {
        let (depth, err) = check(&g, 2, policy);
        // conv1 1 + act1 1 + conv2 (pool1's sum folded in) 1 + act2 1 + fc1 (pool2 folded) 1
        // + act3 1 + fc2 1 + act4 1 + fc3 1 = 9 levels.
        assert_eq!(depth, 9, "{policy:?}");
        eprintln!("lenet5 {policy:?}: depth {depth}, max relative error {err:e}");
    }
}

#[test]
fn squeezenet_batch_matches_the_tensor_model() {
    let g = model("squeezenet.yaml");
    let (depth, err) = check(&g, 2, RescalePolicy::Waterline);
    eprintln!("squeezenet: depth {depth}, max relative error {err:e}");
}

/// A 2x2 average pooling over a quadratic's outputs is three additions per element: every
/// element carries the pending factor +-1 (up to rounding), so nothing is left for the next
/// layer to fold in. Folded, `conv2` would read the 6x6 window of the unpooled maps (4,608
/// terms per output instead of 1,152) and the plan would hold 40 million `mac` terms, not 17.
#[test]
fn squeezenet_batch_poolings_are_sums() {
    let g = model("squeezenet.yaml");
    let opts = lower_options(2);
    let m = lower_batch(&g, &opts).unwrap().module;
    let (mut widest, mut terms) = (0usize, 0usize);
    for v in m.ids() {
        if let Some(hecc_ir::he::Op::Mac(a)) = m.node(v).map(|n| &n.op) {
            widest = widest.max(a.coeffs.len());
            terms += a.coeffs.len();
        }
    }
    assert_eq!(
        widest,
        128 * 9,
        "the widest mac is conv2's 3x3 window over 128 channels"
    );
    assert!(terms < 17_000_000, "{terms} mac terms");
}

#[test]
#[ignore]
fn time_squeezenet_phases() {
    let g = model("squeezenet.yaml");
    let t = std::time::Instant::now();
    let opts = lower_options(2);
    let raw = lower_batch(&g, &opts).unwrap().module;
    eprintln!("lower: {:?}, {} nodes", t.elapsed(), raw.len());
    let t = std::time::Instant::now();
    let m = manage(&raw, RescalePolicy::Waterline, None).unwrap();
    eprintln!("manage: {:?}, {} nodes", t.elapsed(), m.len());
    let t = std::time::Instant::now();
    verify(&m, &VerifyOptions::STRICT).unwrap();
    eprintln!("verify: {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let _ = interpret(&m, |_, _, _, _| Some(vec![0.5, 0.25])).unwrap();
    eprintln!("interpret: {:?}", t.elapsed());
}
