//! Activation ranges: calibration gives the hand-computed ranges, out-of-range inputs are
//! reported, per-node ranges reach the lowering, and the tensor-level approximate evaluator
//! computes what the lowered circuit computes (relu and max-pool trees).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use hecc_ir::he::interp::interpret;
use hecc_ir::tensor::{Graph, Normalization, Op, Shape, Tensor};
use hecc_passes::approx::tensor::eval_approx;
use hecc_passes::approx::{ActivationApprox, ReluMethod};
use hecc_passes::he::{manage, RescalePolicy};
use hecc_passes::lower::{lower_batch, ActivationPolicy, LowerOptions};
use hecc_passes::ranges::{calibrate_ranges, check_ranges, eval_staged, exact};

/// x [1, 2, 2] -> scale 2 -> relu `r1` -> max_pool 2x2 `mp` -> output [1, 1, 1].
fn tiny() -> Graph {
    let mut g = Graph::new("tiny");
    let x = g.add_node(
        "x",
        Op::Input {
            shape: Shape::from([1, 2, 2]),
            norm: Normalization::default(),
        },
        &[],
    );
    let s = g.add_node("s", Op::Scale { factor: 2.0 }, &[x]);
    let r = g.add_node("r1", Op::Relu, &[s]);
    let m = g.add_node(
        "mp",
        Op::MaxPool {
            kernel: [2, 2],
            stride: [2, 2],
            padding: [0, 0, 0, 0],
        },
        &[r],
    );
    g.add_output(m);
    g
}

fn batch(images: &[[f64; 4]]) -> Tensor {
    let data: Vec<f64> = images.iter().flatten().copied().collect();
    Tensor::from_shape_vec(vec![images.len(), 1, 2, 2], data).unwrap()
}

#[test]
fn calibration_gives_the_hand_computed_ranges() {
    let g = tiny();
    // After the scale: image 0 = [2, -6, 1, 4], image 1 = [-2, 0, 8, -0.5].
    let x = batch(&[[1.0, -3.0, 0.5, 2.0], [-1.0, 0.0, 4.0, -0.25]]);
    let r = calibrate_ranges(&g, &[x], 0.1).unwrap();
    assert_eq!(r.samples, 2);
    assert_eq!(r.ranges.len(), 2);
    let relu = r.get("r1").unwrap();
    assert_eq!(relu.op, "relu");
    assert_eq!((relu.min, relu.max, relu.bound), (-6.0, 8.0, 8.0));
    assert!((relu.range - 8.8).abs() < 1e-12, "{}", relu.range);
    assert!(relu.calibrated);
    // The pool sees relu's output [2, 0, 1, 4] and [0, 0, 8, 0]: window spreads 4 and 8.
    let mp = r.get("mp").unwrap();
    assert_eq!(mp.op, "max_pool");
    assert_eq!((mp.min, mp.max, mp.bound), (0.0, 8.0, 8.0));
    assert!((mp.range - 8.8).abs() < 1e-12);
    // A bigger margin scales B; a negative one is refused, as is an empty sample set.
    let wide = calibrate_ranges(&g, &[batch(&[[1.0, -3.0, 0.5, 2.0]])], 0.5).unwrap();
    assert_eq!(wide.get("r1").unwrap().range, 6.0 * 1.5);
    assert!(calibrate_ranges(&g, &[batch(&[[0.0; 4]])], -0.1).is_err());
    let empty = Tensor::from_shape_vec(vec![0, 1, 2, 2], vec![]).unwrap();
    assert!(calibrate_ranges(&g, &[empty], 0.1).is_err());
}

#[test]
fn out_of_range_inputs_are_reported() {
    let g = tiny();
    let cal = calibrate_ranges(&g, &[batch(&[[1.0, -3.0, 0.5, 2.0]])], 0.0).unwrap();
    // r1: B = 6 (|-6|), mp: B = 4 (spread of [2, 0, 1, 4]).
    let inside = check_ranges(&g, &[batch(&[[1.0, -2.0, 0.0, 1.5]])], &cal.ranges).unwrap();
    assert!(inside.iter().all(|c| c.outside == 0), "{inside:?}");
    // 2 * 5 = 10 > 6 and 2 * -3.5 = -7 < -6: two relu inputs outside, worst 10; the window
    // [10, 0, 0, 0] spreads 10 > 4.
    let bad = check_ranges(&g, &[batch(&[[5.0, -3.5, 0.0, 0.0]])], &cal.ranges).unwrap();
    let r1 = bad.iter().find(|c| c.node == "r1").unwrap();
    assert_eq!((r1.checked, r1.outside, r1.worst), (4, 2, 10.0));
    let mp = bad.iter().find(|c| c.node == "mp").unwrap();
    assert_eq!((mp.checked, mp.outside, mp.worst), (1, 1, 10.0));
}

#[test]
fn staged_evaluation_with_exact_activations_is_the_reference() {
    let g = tiny();
    let x = batch(&[[1.0, -3.0, 0.5, 2.0], [-1.0, 0.0, 4.0, -0.25]]);
    let want = hecc_ir::tensor::eval::eval_batch(&g, std::slice::from_ref(&x)).unwrap();
    let got = eval_staged(&g, &[x], |s, v| Ok(exact(s, v))).unwrap();
    assert_eq!(got, want);
    assert_eq!(got[0].iter().copied().collect::<Vec<_>>(), vec![4.0, 8.0]);
}

#[test]
fn approximate_evaluation_is_what_the_circuit_computes() {
    // Per-node approximations on calibrated ranges, lowered in the batch layout and
    // interpreted, against the tensor-level evaluator.
    let g = tiny();
    let images = [
        [1.0, -3.0, 0.5, 2.0],
        [-1.0, 0.0, 4.0, -0.25],
        [0.3, 0.7, -0.9, 0.1],
    ];
    let x = batch(&images);
    let cal = calibrate_ranges(&g, std::slice::from_ref(&x), 0.1).unwrap();
    let method = ReluMethod::Minimax {
        alpha: 8.0,
        degrees: vec![],
    };
    let mut policy = ActivationPolicy::default();
    for r in &cal.ranges {
        policy.per_node.insert(
            r.node.clone(),
            ActivationApprox::relu(&method, r.range).unwrap(),
        );
    }
    let n = images.len();
    let opts = LowerOptions {
        batch: n as u32,
        slots: n as u32,
        log_scale: 40.0,
        activations: policy.clone(),
    };
    let lowered = lower_batch(&g, &opts).unwrap();
    let m = manage(&lowered.module, RescalePolicy::Waterline, None).unwrap();
    let outs = interpret(&m, |_, index, _, _| {
        Some(images.iter().map(|im| im[index as usize]).collect())
    })
    .unwrap();
    let tensor = eval_approx(&g, &[x], |s| policy.per_node.get(&s.name)).unwrap();
    assert_eq!(tensor.checks.len(), 2);
    assert!(tensor.checks.iter().all(|c| c.outside == 0));
    let want: Vec<f64> = tensor.outputs[0].iter().copied().collect();
    assert_eq!(outs.len(), 1);
    for (i, w) in want.iter().enumerate() {
        let got = outs[0].slots[i];
        assert!(
            (got - w).abs() < 1e-9,
            "image {i}: circuit {got}, tensor {w}"
        );
    }
    // The approximation is not the exact max: the evaluator really used it.
    let exact_out = [4.0, 8.0, 1.4];
    assert!(want
        .iter()
        .zip(exact_out)
        .any(|(a, b)| (a - b).abs() > 1e-9));
    // With no per-node entry the lowering asks for a policy.
    let none = LowerOptions {
        activations: ActivationPolicy::default(),
        ..opts
    };
    assert!(lower_batch(&g, &none).is_err());
}
