//! Tests of hecc-train on tiny synthetic data (each runs in well under a second or a few).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use std::path::PathBuf;

use hecc_ir::front::yaml::{parse_spec, parse_spec_structure};
use hecc_ir::tensor::eval::eval_batch;
use hecc_ir::tensor::{Granularity, Graph};
use hecc_train::data::{load_dir, read_idx, Dataset, Splits};
use hecc_train::export::{eval_predictions, spec_yaml, weights_bytes};
use hecc_train::loss::{cross_entropy, kd_loss, kl_div};
use hecc_train::net::{with_granularity, with_relu, Init, Mode, Net};
use hecc_train::trainer::{train, Event, KdConfig, Precision, TrainConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A small network using most supported ops (both padding forms, batch norm, add, concat,
/// scale, avg_pool with padding, quadratics at channel and element granularity).
const TINY: &str = r#"
name: tiny
input: { shape: [1, 8, 8], mean: 0.5, std: 0.25, range: [0.0, 1.0] }
graph:
  - { name: c1, op: conv2d, inputs: [input], out_channels: 3, kernel: 3, padding: 1 }
  - { name: bn1, op: batch_norm, inputs: [c1] }
  - { name: q1, op: quadratic, inputs: [bn1], granularity: channel }
  - { name: c2, op: conv2d, inputs: [input], out_channels: 3, kernel: 3, padding: [0, 0, 2, 2] }
  - { name: sum, op: add, inputs: [q1, c2] }
  - { name: cat, op: concat, inputs: [sum, q1] }
  - { name: p1, op: avg_pool, inputs: [cat], kernel: 2, padding: 1 }
  - { name: s1, op: scale, inputs: [p1], factor: 0.5 }
  - { name: f, op: flatten, inputs: [s1] }
  - { name: d1, op: dense, inputs: [f], out_features: 12 }
  - { name: q2, op: quadratic, inputs: [d1], granularity: element }
  - { name: d2, op: dense, inputs: [q2], out_features: 4 }
outputs: [d2]
"#;

/// Max pooling, tiling average pooling, batch norm after a dense layer (rank-1 batch norm), relu.
const MAXPOOL: &str = r#"
name: small_maxpool
input: { shape: [1, 8, 8], range: [0.0, 1.0] }
layers:
  - { name: conv1, op: conv2d, out_channels: 3, kernel: 3, padding: 1 }
  - { name: bn1, op: batch_norm }
  - { name: act1, op: relu }
  - { name: pool, op: max_pool, kernel: 2, stride: 2 }
  - { name: conv2, op: conv2d, out_channels: 4, kernel: 1, groups: 1 }
  - { name: act2, op: quadratic, granularity: element }
  - { name: ap, op: avg_pool, kernel: 2, stride: 2 }
  - { name: f, op: flatten }
  - { name: fc1, op: dense, out_features: 5 }
  - { name: bn2, op: batch_norm }
  - { name: act3, op: quadratic, granularity: layer }
  - { name: fc2, op: dense, out_features: 4 }
"#;

/// A relu network (teacher-style) whose relus `--granularity` turns into quadratics.
const RELU: &str = r#"
name: small_relu
input: { shape: [1, 8, 8], range: [0.0, 1.0] }
layers:
  - { name: conv1, op: conv2d, out_channels: 4, kernel: 3, stride: 2, padding: 1 }
  - { name: act1, op: relu }
  - { name: pool, op: global_avg_pool }
  - { name: fc1, op: dense, out_features: 6 }
  - { name: act2, op: square }
  - { name: fc2, op: dense, out_features: 4 }
"#;

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hecc-train-test-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Synthetic 4-class 8x8 images: class k has a bright 4x4 quadrant k, plus noise.
fn synthetic(n: usize, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut images = Vec::with_capacity(n * 64);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let k: u8 = rng.gen_range(0..4);
        for y in 0..8 {
            for x in 0..8 {
                let q = (y / 4) * 2 + x / 4;
                let base = if q == k as usize { 0.7 } else { 0.2 };
                images.push((base + rng.gen_range(-0.2f32..0.2)).clamp(0.0, 1.0));
            }
        }
        labels.push(k);
    }
    Dataset {
        images,
        labels,
        shape: [1, 8, 8],
    }
}

fn splits(n_train: usize, n_test: usize) -> Splits {
    Splits {
        train: synthetic(n_train, 1),
        test: synthetic(n_test, 2),
    }
}

fn graph(src: &str) -> Graph {
    parse_spec_structure(src, "test.yaml").unwrap()
}

fn cfg(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        teacher_epochs: epochs,
        batch_size: 16,
        lr: 0.05,
        ..TrainConfig::default()
    }
}

#[test]
fn training_reduces_loss() {
    let data = splits(256, 64);
    let mut losses = Vec::new();
    let out = train(&graph(TINY), &data, None, &cfg(4), &mut |e| {
        if let Event::Epoch(s) = e {
            losses.push(s.loss);
        }
    })
    .unwrap();
    assert_eq!(losses.len(), 4);
    assert!(
        losses[3] < 0.5 * losses[0],
        "loss did not fall enough: {losses:?}"
    );
    assert!(
        out.student.test_accuracy > 0.8,
        "test accuracy {}",
        out.student.test_accuracy
    );
}

#[test]
fn training_is_deterministic_for_a_seed() {
    let data = splits(64, 16);
    let run = |seed| {
        let c = TrainConfig { seed, ..cfg(1) };
        train(&graph(TINY), &data, None, &c, &mut |_| {}).unwrap()
    };
    let (a, b, c) = (run(7), run(7), run(8));
    assert_eq!(a.student.graph.weights, b.student.graph.weights);
    assert_ne!(a.student.graph.weights, c.student.graph.weights);
}

/// Cross-entropy of `net` on a fixed batch, in f64.
fn loss_of(net: &mut Net<f64>, x: &[f64], y: &[usize], mode: Mode) -> f64 {
    let t = net.forward(x, y.len(), mode).unwrap();
    cross_entropy(t.logits(), t.classes(), y).unwrap().value
}

/// Compares the reverse-mode gradients with central finite differences for every parameter
/// entry listed (all of them for small tensors, a sample for large ones), with batch norm on
/// running statistics (`Mode::Eval`) or on batch statistics (`Mode::Train`).
fn check_gradients(src: &str, gr: Option<Granularity>, mode: Mode) {
    // One thread (all six images in one chunk, products over several images) and two (chunks
    // of three, gradients summed over the chunks).
    for threads in [1, 2] {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| check_gradients_on(src, gr, mode, &[0, 1, 2, 3, 4, 5]));
    }
}

/// [`check_gradients`] on the images `batch` of the synthetic set (one image exercises the
/// one-image-per-product convolution path, several the side-by-side one).
fn check_gradients_on(src: &str, gr: Option<Granularity>, mode: Mode, batch: &[usize]) {
    let g = match gr {
        Some(gr) => with_granularity(&graph(src), gr),
        None => graph(src),
    };
    // Non-trivial coefficients so that every term matters.
    let init = Init {
        seed: 3,
        quad: [0.3, -0.7, 0.2],
    };
    let mut net = Net::<f64>::new(g, &init).unwrap();
    let ds = synthetic(6, 5);
    let (x, y) = ds.batch::<f64>(batch).unwrap();
    // Give per-element coefficients distinct values so a wrong broadcast would show.
    let names: Vec<String> = net.params().keys().cloned().collect();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let coeff_names: Vec<String> = names.iter().filter(|n| net.is_coeff(n)).cloned().collect();
    for n in &coeff_names {
        let p: Vec<f64> = net.params()[n]
            .data
            .iter()
            .map(|v| v + rng.gen_range(-0.1..0.1))
            .collect();
        net.set_weight(n, &p).unwrap();
    }
    let tape = net.forward(&x, y.len(), mode).unwrap();
    let loss = cross_entropy(tape.logits(), tape.classes(), &y).unwrap();
    let grads = net.backward(&tape, &loss.grad).unwrap();
    let mut checked_coeffs = 0;
    for name in &names {
        let base = net.params()[name].data.clone();
        let grad = grads
            .get(name)
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        assert_eq!(grad.len(), base.len(), "{name}");
        let step = (base.len() / 7).max(1);
        for i in (0..base.len()).step_by(step) {
            let h = 1e-6;
            let mut plus = base.clone();
            plus[i] += h;
            net.set_weight(name, &plus).unwrap();
            let lp = loss_of(&mut net, &x, &y, mode);
            let mut minus = base.clone();
            minus[i] -= h;
            net.set_weight(name, &minus).unwrap();
            let lm = loss_of(&mut net, &x, &y, mode);
            net.set_weight(name, &base).unwrap();
            let fd = (lp - lm) / (2.0 * h);
            let tol = 1e-6 + 1e-4 * fd.abs().max(grad[i].abs());
            assert!(
                (fd - grad[i]).abs() <= tol,
                "{name}[{i}]: reverse mode {} vs finite difference {fd} ({gr:?}, {mode:?})",
                grad[i]
            );
            if net.is_coeff(name) {
                checked_coeffs += 1;
            }
        }
    }
    assert!(
        checked_coeffs >= 3,
        "no quadratic coefficients were checked"
    );
}

#[test]
fn quadratic_gradients_match_finite_differences_layer() {
    check_gradients(RELU, Some(Granularity::Layer), Mode::Eval);
}

#[test]
fn quadratic_gradients_match_finite_differences_channel() {
    check_gradients(RELU, Some(Granularity::Channel), Mode::Eval);
}

#[test]
fn quadratic_gradients_match_finite_differences_element() {
    check_gradients(RELU, Some(Granularity::Element), Mode::Eval);
}

#[test]
fn gradients_of_the_mixed_network_match_finite_differences() {
    // channel and element quadratics, batch norm (running statistics), add, concat, pools.
    check_gradients(TINY, None, Mode::Eval);
    check_gradients_on(TINY, None, Mode::Eval, &[4]);
}

#[test]
fn gradients_through_batch_statistics_match_finite_differences() {
    // Batch norm in training mode: the gradient flows through the batch mean and variance.
    check_gradients(TINY, None, Mode::Train);
    check_gradients(MAXPOOL, None, Mode::Train);
}

#[test]
fn f32_and_f64_training_agree_on_the_first_steps() {
    // The same seed in both precisions: after one short epoch the weights differ only by
    // f32 rounding, not by a different computation.
    let data = splits(48, 16);
    let run = |precision| {
        let c = TrainConfig {
            precision,
            ..cfg(1)
        };
        train(&graph(TINY), &data, None, &c, &mut |_| {}).unwrap()
    };
    let (a, b) = (run(Precision::F32), run(Precision::F64));
    for (name, wa) in &a.student.graph.weights {
        let wb = &b.student.graph.weights[name];
        for (x, y) in wa.iter().zip(wb.iter()) {
            assert!(
                (x - y).abs() <= 1e-3 * (1.0 + y.abs()),
                "{name}: {x} vs {y}"
            );
        }
    }
}

#[test]
fn kd_loss_matches_a_hand_computed_example() {
    // student s = [1, 2, 0], teacher t = [0, 1, 3], label 1, T = 2, alpha = 0.3.
    // softmax(t/T) = softmax([0, 0.5, 1.5]) and softmax(s/T) = softmax([0.5, 1, 0]):
    //   log Z_t = ln(1 + e^0.5 + e^1.5) = 1.8405..., log Z_s = ln(e^0.5 + e + 1) = 1.6644...
    //   KL = sum p_t (log p_t - log p_s) = 0.4729643249573147
    //   CE = ln(e + e^2 + 1) - 2 = 0.4076059644443806
    //   loss = 0.3 * 4 * KL + 0.7 * CE = 0.8528813650598439
    let s = [1.0f64, 2.0, 0.0];
    let t = [0.0f64, 1.0, 3.0];
    let y = [1usize];
    let kl = kl_div(&s, &t, 3, 2.0).unwrap().value;
    let ce = cross_entropy(&s, 3, &y).unwrap().value;
    let kd = kd_loss(&s, &t, 3, &y, 2.0, 0.3).unwrap();
    assert!((kl - 0.4729643249573147).abs() < 1e-12, "KL {kl}");
    assert!((ce - 0.4076059644443806).abs() < 1e-12, "CE {ce}");
    assert!(
        (kd.value - 0.8528813650598439).abs() < 1e-12,
        "KD {}",
        kd.value
    );
    // The closed form again, written out independently.
    let (zt, zs) = (
        (1.0f64 + 0.5f64.exp() + 1.5f64.exp()).ln(),
        (0.5f64.exp() + 1f64.exp() + 1.0).ln(),
    );
    let pt = [(-zt).exp(), (0.5 - zt).exp(), (1.5 - zt).exp()];
    let lps = [0.5 - zs, 1.0 - zs, -zs];
    let lpt = [-zt, 0.5 - zt, 1.5 - zt];
    let kl2: f64 = (0..3).map(|i| pt[i] * (lpt[i] - lps[i])).sum();
    assert!((kl - kl2).abs() < 1e-12);
    // The gradient with respect to the student's scores matches finite differences.
    for j in 0..3 {
        let h = 1e-6;
        let (mut p, mut m) = (s, s);
        p[j] += h;
        m[j] -= h;
        let fd = (kd_loss(&p, &t, 3, &y, 2.0, 0.3).unwrap().value
            - kd_loss(&m, &t, 3, &y, 2.0, 0.3).unwrap().value)
            / (2.0 * h);
        assert!(
            (fd - kd.grad[j]).abs() < 1e-8,
            "d/ds{j}: {} vs {fd}",
            kd.grad[j]
        );
    }
    assert!(kd.grad.iter().any(|v| v.abs() > 1e-3));
    // Bad configuration is an error, not a panic.
    assert!(kd_loss(&s, &t, 3, &y, 0.0, 0.3).is_err());
    assert!(kd_loss(&s, &t, 3, &y, 2.0, 1.5).is_err());
    assert!(cross_entropy(&s, 3, &[3]).is_err());
}

/// Logits of a graph from the reference evaluator.
fn eval_logits(g: &Graph, ds: &Dataset) -> Vec<f64> {
    eval_batch(g, &[ds.to_ndarray().unwrap()]).unwrap()[0]
        .iter()
        .copied()
        .collect()
}

#[test]
fn exported_weights_reload_through_the_spec_and_give_the_same_predictions() {
    let data = splits(128, 48);
    let out = train(&graph(TINY), &data, None, &cfg(2), &mut |_| {}).unwrap();
    let dir = tmpdir("reload");
    std::fs::write(dir.join("tiny.yaml"), TINY).unwrap();
    std::fs::write(
        dir.join("tiny.safetensors"),
        weights_bytes(&out.student.graph).unwrap(),
    )
    .unwrap();
    // Through the spec: default weights file next to it, every weight name as the spec says.
    let g = parse_spec(TINY, "tiny.yaml", Some(&dir)).unwrap();
    for name in [
        "c1.weight",
        "c1.bias",
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn1.running_var",
        "q1.coeffs",
        "q2.coeffs",
        "d2.bias",
    ] {
        assert!(g.weights.contains_key(name), "missing {name}");
    }
    // Batch norm ran in training mode: the running statistics moved away from 0 / 1.
    assert!(g.weights["bn1.running_mean"].iter().any(|v| v.abs() > 1e-3));
    let pred = eval_predictions(&g, &data.test, 20).unwrap();
    assert_eq!(pred, out.student.predictions);
    // Same scores, not just the same argmax: trainer (f64, stored weights) vs evaluator.
    let mut net = Net::<f64>::new(out.student.graph.clone(), &Init::default()).unwrap();
    let all: Vec<usize> = (0..data.test.len()).collect();
    let (x, _) = data.test.batch::<f64>(&all).unwrap();
    let ours = net.logits(&x, all.len()).unwrap();
    let theirs = eval_logits(&g, &data.test);
    for (a, b) in ours.iter().zip(&theirs) {
        assert!((a - b).abs() <= 1e-9 * (1.0 + b.abs()), "{a} vs {b}");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn granularity_override_and_kd_write_a_spec_that_reloads() {
    let data = splits(128, 32);
    let c = TrainConfig {
        granularity: Some(Granularity::Element),
        kd: Some(KdConfig {
            temperature: 3.0,
            alpha: 0.5,
        }),
        ..cfg(2)
    };
    let mut phases = Vec::new();
    let out = train(&graph(RELU), &data, None, &c, &mut |e| {
        if let Event::Epoch(s) = e {
            phases.push(s.phase);
        }
    })
    .unwrap();
    assert_eq!(phases.len(), 4, "teacher then student epochs");
    let teacher = out.teacher.as_ref().unwrap();
    assert!(!teacher.graph.weights.contains_key("act1.coeffs"));
    // The student's relu became an element-wise quadratic on [4, 4, 4]; square stays.
    assert_eq!(
        out.student.graph.weights["act1.coeffs"].shape(),
        &[3, 4, 4, 4]
    );
    assert!(!out.student.graph.weights.contains_key("act2.coeffs"));
    let dir = tmpdir("spec");
    std::fs::write(
        dir.join("student.safetensors"),
        weights_bytes(&out.student.graph).unwrap(),
    )
    .unwrap();
    let text = spec_yaml(&out.student.graph, "student.safetensors", "test").unwrap();
    std::fs::write(dir.join("student.yaml"), &text).unwrap();
    let g = hecc_ir::front::load_model(&dir.join("student.yaml")).unwrap();
    assert_eq!(
        eval_predictions(&g, &data.test, 7).unwrap(),
        out.student.predictions
    );
    // The teacher's weights load into a ReLU student run as `--teacher`.
    let tw = teacher.graph.weights.clone();
    let c2 = TrainConfig { epochs: 1, ..c };
    let mut loaded = None;
    train(&graph(RELU), &data, Some(&tw), &c2, &mut |e| {
        if let Event::TeacherLoaded { test_accuracy } = e {
            loaded = Some(*test_accuracy);
        }
    })
    .unwrap();
    assert_eq!(loaded, Some(teacher.test_accuracy));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn teacher_graph_replaces_every_activation_by_relu() {
    let t = with_relu(&graph(TINY));
    let acts: Vec<&str> = t
        .node_ids()
        .filter_map(|i| t.node(i))
        .filter(|n| n.op.is_activation())
        .map(|n| n.op.mnemonic())
        .collect();
    assert_eq!(acts, vec!["relu", "relu"]);
}

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

#[test]
fn idx_files_load_channel_first_and_scaled() {
    let dir = tmpdir("idx");
    // Two 1x2 RGB images, channels last: pixel (y, x) = [r, g, b].
    let px = [10u8, 20, 30, 40, 50, 60, 255, 0, 255, 0, 255, 0];
    std::fs::write(dir.join("tiny-images-idx4-ubyte"), idx(&[2, 1, 2, 3], &px)).unwrap();
    std::fs::write(dir.join("tiny-labels-idx1-ubyte"), idx(&[2], &[3, 7])).unwrap();
    let ds = Dataset::from_idx_files(
        &dir.join("tiny-images-idx4-ubyte"),
        &dir.join("tiny-labels-idx1-ubyte"),
        255.0,
        [0.0, 2.0],
    )
    .unwrap();
    assert_eq!(ds.shape, [3, 1, 2]);
    let first: Vec<f32> = ds.images[..6]
        .iter()
        .map(|v| (v * 255.0 / 2.0).round())
        .collect();
    assert_eq!(first, vec![10.0, 40.0, 20.0, 50.0, 30.0, 60.0]);
    assert_eq!(ds.labels, vec![3, 7]);
    // A single pair is split 80/20 by load_dir.
    let s = load_dir(&dir, [0.0, 1.0]).unwrap();
    assert_eq!((s.train.len(), s.test.len()), (1, 1));
    // Malformed files are errors.
    assert!(read_idx(&[0, 0, 8, 1, 0, 0, 0, 5, 1, 2]).is_err());
    assert!(read_idx(&[1, 2, 3]).is_err());
    std::fs::write(dir.join("tiny-labels-idx1-ubyte"), idx(&[3], &[1, 2, 3])).unwrap();
    assert!(load_dir(&dir, [0.0, 1.0]).is_err());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn unsupported_and_mismatched_inputs_are_errors() {
    let data = splits(8, 4);
    // Data shape does not match the spec.
    let wrong = r#"
input: { shape: [1, 6, 6] }
layers:
  - { name: f, op: flatten }
  - { name: d, op: dense, out_features: 4 }
"#;
    assert!(train(&graph(wrong), &data, None, &cfg(1), &mut |_| {}).is_err());
    // Zero epochs.
    assert!(train(&graph(TINY), &data, None, &cfg(0), &mut |_| {}).is_err());
    // Overlapping max pooling cannot be differentiated here: reported, not a panic.
    let mp = r#"
input: { shape: [1, 8, 8] }
layers:
  - { name: m, op: max_pool, kernel: 3, stride: 1 }
  - { name: f, op: flatten }
  - { name: d, op: dense, out_features: 4 }
"#;
    assert!(matches!(
        Net::<f32>::new(graph(mp), &Init::default()),
        Err(hecc_train::TrainError::Unsupported { .. })
    ));
}

#[test]
fn validation_split_keeps_the_best_epoch_and_stops_early() {
    let data = splits(160, 32);
    let c = TrainConfig {
        validation: 32,
        patience: Some(1),
        // A rate far too high: validation accuracy soon stops improving.
        lr: 2.0,
        clip_norm: 0.0,
        ..cfg(12)
    };
    let mut stopped = None;
    let mut vals = Vec::new();
    let res = train(&graph(RELU), &data, None, &c, &mut |e| match e {
        Event::Epoch(s) => vals.push(s.val_accuracy.unwrap()),
        Event::EarlyStop { best_epoch, .. } => stopped = Some(*best_epoch),
        _ => {}
    });
    // Either it diverged (an error naming the epoch) or it stopped early on the best epoch.
    if let Ok(out) = res {
        let best = out.student.best_epoch;
        assert!(best >= 1 && best <= vals.len());
        let top = vals.iter().cloned().fold(f64::MIN, f64::max);
        assert_eq!(vals[best - 1], top, "kept epoch {best} of {vals:?}");
        assert!(vals.iter().take(best - 1).all(|&v| v < top));
        if vals.len() < 12 {
            assert_eq!(stopped, Some(best));
            assert_eq!(vals.len(), best + 1);
        }
    }
    // The training split excludes the validation images: 128 images in batches of 16.
    let mut batches = 0;
    let c2 = TrainConfig {
        validation: 32,
        ..cfg(1)
    };
    train(&graph(RELU), &data, None, &c2, &mut |e| {
        if let Event::Start { batches: b, .. } = e {
            batches = *b;
        }
    })
    .unwrap();
    assert_eq!(batches, 8);
    // Patience without a validation split, or a split as large as the data, are refused.
    let bad = TrainConfig {
        patience: Some(2),
        ..cfg(1)
    };
    assert!(train(&graph(RELU), &data, None, &bad, &mut |_| {}).is_err());
    let bad = TrainConfig {
        validation: 160,
        ..cfg(1)
    };
    assert!(train(&graph(RELU), &data, None, &bad, &mut |_| {}).is_err());
}

#[test]
fn the_relu_network_trains_and_serves_as_a_teacher() {
    let data = splits(128, 32);
    let c = TrainConfig {
        relu: true,
        ..cfg(2)
    };
    let out = train(&graph(TINY), &data, None, &c, &mut |_| {}).unwrap();
    // Every activation became a ReLU: no coefficient tensors.
    assert!(out
        .student
        .graph
        .weights
        .keys()
        .all(|k| !k.ends_with(".coeffs")));
    assert!(out.teacher.is_none());
    // Its weights load as the teacher of a distilled quadratic student.
    let s = TrainConfig {
        kd: Some(KdConfig {
            temperature: 4.0,
            alpha: 0.5,
        }),
        ..cfg(1)
    };
    let mut loaded = None;
    train(
        &graph(TINY),
        &data,
        Some(&out.student.graph.weights),
        &s,
        &mut |e| {
            if let Event::TeacherLoaded { test_accuracy } = e {
                loaded = Some(*test_accuracy);
            }
        },
    )
    .unwrap();
    assert_eq!(loaded, Some(out.student.test_accuracy));
    // ReLU with a granularity or with distillation is a configuration error.
    let bad = TrainConfig {
        granularity: Some(Granularity::Element),
        ..c
    };
    assert!(train(&graph(TINY), &data, None, &bad, &mut |_| {}).is_err());
}
