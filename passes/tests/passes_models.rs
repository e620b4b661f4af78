//! The tensor passes and the scheduler on the reference models: fusion preserves the tensor
//! semantics, removes every batch-norm of SqueezeNet and saves the levels measured below; the
//! memory schedule is valid, never worse than topological order, and honours a budget.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use hecc_ir::he::{interp::interpret, verify, VerifyOptions};
use hecc_ir::tensor::eval::eval_batch;
use hecc_ir::tensor::{Graph, Op, Tensor};
use hecc_passes::he::{depth_of, manage, RescalePolicy};
use hecc_passes::lower::{lower_batch_with, LowerOptions};
use hecc_passes::manager::{ManagerOptions, PassCx, PassLog, PassManager, Pipeline};
use hecc_passes::schedule::{is_valid, peak_of, schedule, topological, ScheduleError};
use std::path::PathBuf;

fn model(name: &str) -> Graph {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models")
        .join(name);
    hecc_ir::front::load_model(&p).unwrap_or_else(|e| panic!("{name}: {e:?}"))
}

fn images(g: &Graph, batch: usize) -> (Vec<f64>, usize, Tensor) {
    let Some(Op::Input { shape, .. }) = g.node(g.inputs[0]).map(|n| &n.op) else {
        panic!("no input")
    };
    let per = shape.numel();
    let mut s = 11u64;
    let data: Vec<f64> = (0..batch * per)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect();
    let mut dims = vec![batch];
    dims.extend_from_slice(shape);
    let t = Tensor::from_shape_vec(dims, data.clone()).expect("shape");
    (data, per, t)
}

fn fused(g: &Graph) -> Graph {
    let mut f = g.clone();
    let pm = PassManager::new(ManagerOptions {
        verify: true,
        ..Default::default()
    })
    .expect("manager");
    let p = Pipeline::parse("fold-batch-norm,fuse-activation-batch-norm").expect("pipeline");
    pm.run_tensor(&p, &mut f, &mut PassCx::default(), &mut PassLog::default())
        .expect("passes run");
    f
}

fn count_bn(g: &Graph) -> usize {
    g.node_ids()
        .filter(|&id| matches!(g.node(id).map(|n| &n.op), Some(Op::BatchNorm { .. })))
        .count()
}

fn max_rel(a: &[Tensor], b: &[Tensor]) -> f64 {
    let mut worst = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        for (u, v) in x.iter().zip(y.iter()) {
            worst = worst.max((u - v).abs() / u.abs().max(v.abs()).max(1e-300));
        }
    }
    worst
}

#[test]
fn fusion_preserves_the_reference_models() {
    for name in ["cryptonets.yaml", "lenet5.yaml", "squeezenet.yaml"] {
        let g = model(name);
        let f = fused(&g);
        assert_eq!(count_bn(&f), 0, "{name}: batch-norms left");
        let (_, _, x) = images(&g, 2);
        let want = eval_batch(&g, std::slice::from_ref(&x)).expect("eval");
        let got = eval_batch(&f, &[x]).expect("eval fused");
        let rel = max_rel(&want, &got);
        assert!(rel < 1e-9, "{name}: relative error {rel}");
    }
    // SqueezeNet's four Conv modules (conv -> quadratic -> batch_norm) lose their batch-norm.
    let g = model("squeezenet.yaml");
    assert_eq!(count_bn(&g), 4);
    assert_eq!(g.node_count() - fused(&g).node_count(), 4);
}

/// Depth after waterline management of the batch lowering.
fn depth(g: &Graph, fold_affine: bool) -> u32 {
    let opts = LowerOptions {
        batch: 1,
        slots: 1,
        log_scale: 40.0,
        activations: Default::default(),
    };
    let raw = lower_batch_with(g, &opts, fold_affine)
        .expect("lowers")
        .module;
    depth_of(&manage(&raw, RescalePolicy::Waterline, None).expect("manages"))
}

#[test]
fn fusion_saves_levels_on_squeezenet() {
    let g = model("squeezenet.yaml");
    // Measured (waterline, no parameters): 17 levels with fusion (tensor passes + lazy affine
    // folding); 28 with the tensor fusions but every pending affine factor materialised (input
    // normalisation, each quadratic's leading coefficient and the pooling divisors then cost a
    // level each); 32 with neither: the four Conv modules (conv -> quadratic -> batch_norm) each
    // pay one more level for their batch-norm, the one level per Conv module the tensor fusion
    // saves.
    let with = depth(&fused(&g), true);
    let tensor_only = depth(&fused(&g), false);
    let without = depth(&g, false);
    assert_eq!((with, tensor_only, without), (17, 28, 32));
    assert_eq!(without - tensor_only, 4, "one level per Conv module");
    // Lazy folding alone already absorbs the batch-norms: fusing first changes nothing.
    assert_eq!(depth(&g, true), with);
}

#[test]
fn unfused_lowering_is_still_exact() {
    let g = model("lenet5.yaml");
    let batch = 3;
    let (data, per, x) = images(&g, batch);
    let want = eval_batch(&g, &[x]).expect("eval");
    let opts = LowerOptions {
        batch: batch as u32,
        slots: batch as u32,
        log_scale: 40.0,
        activations: Default::default(),
    };
    let raw = lower_batch_with(&g, &opts, false).expect("lowers").module;
    let m = manage(&raw, RescalePolicy::Waterline, None).expect("manages");
    verify(&m, &VerifyOptions::STRICT).expect("strict");
    let outs = interpret(&m, |_, index, _, _| {
        Some((0..batch).map(|b| data[b * per + index as usize]).collect())
    })
    .expect("interprets");
    let want = want[0].as_slice().expect("contiguous");
    let n_out = want.len() / batch;
    for o in &outs {
        for b in 0..batch {
            let w = want[b * n_out + o.index as usize];
            assert!((o.slots[b] - w).abs() / w.abs().max(1.0) < 1e-6);
        }
    }
}

#[test]
fn schedule_is_valid_no_worse_than_topological_and_honours_budgets() {
    for name in ["cryptonets.yaml", "lenet5.yaml"] {
        let g = model(name);
        let opts = LowerOptions {
            batch: 1,
            slots: 1,
            log_scale: 40.0,
            activations: Default::default(),
        };
        let raw = lower_batch_with(&g, &opts, true).expect("lowers").module;
        let m = manage(&raw, RescalePolicy::Waterline, None).expect("manages");
        let log_n = 13;
        let s = schedule(&m, log_n, 1000, None).expect("schedules");
        assert!(is_valid(&m, &s.order), "{name}: invalid order");
        let topo = topological(&m).expect("acyclic");
        let tp = peak_of(&m, &topo, log_n);
        assert_eq!(s.summary.topological, tp);
        assert!(s.summary.peak.bytes <= tp.bytes);
        assert_eq!(s.summary.total_bytes, s.summary.peak.bytes + 1000);
        // Exactly at the budget is fine; one byte less is refused with the numbers.
        let ok = schedule(&m, log_n, 1000, Some(s.summary.total_bytes));
        assert!(ok.is_ok());
        match schedule(&m, log_n, 1000, Some(s.summary.total_bytes - 1)) {
            Err(ScheduleError::OverBudget { needed, .. }) => {
                assert_eq!(needed, s.summary.total_bytes)
            }
            other => panic!(
                "{name}: expected over-budget, got {:?}",
                other.map(|s| s.summary)
            ),
        }
        // Every input ciphertext is there when the run starts: the peak is at least all of
        // them, whichever order, and moving the inputs to the front changes nothing.
        let inputs: Vec<_> = m.inputs().into_iter().map(|(v, _, _)| v).collect();
        let all_inputs: u64 = inputs
            .iter()
            .map(|&v| {
                let t = m.ty(v).unwrap();
                t.bytes(log_n)
            })
            .sum();
        assert!(
            s.summary.peak.bytes >= all_inputs,
            "{name}: peak below the inputs"
        );
        let mut front: Vec<_> = inputs.clone();
        front.extend(s.order.iter().filter(|v| !inputs.contains(v)));
        assert!(is_valid(&m, &front));
        assert_eq!(peak_of(&m, &front, log_n), s.summary.peak, "{name}");
        // An order that breaks a dependency is rejected.
        let mut bad = s.order.clone();
        bad.reverse();
        assert!(!is_valid(&m, &bad));
    }
}
