//! Tests of hecc-train on tiny synthetic data (each runs in well under a second or a few).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use hecc_ir::front::yaml::{parse_spec, parse_spec_structure};
use hecc_ir::tensor::eval::eval_batch;
use hecc_ir::tensor::{Granularity, Graph};
use hecc_train::data::{load_dir, read_idx, Dataset, Splits};
use hecc_train::export::{eval_predictions, spec_yaml, weights_bytes};
use hecc_train::loss::{cross_entropy, kd_loss, kl_div};
use hecc_train::net::{with_granularity, with_relu, Init, Mode, Net};
use hecc_train::trainer::{train, Event, KdConfig, TrainConfig};
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
fn loss_of(net: &mut Net, x: &Tensor, y: &Tensor) -> f64 {
    let z = net.forward(x, Mode::Eval).unwrap();
    cross_entropy(&z, y).unwrap().to_scalar::<f64>().unwrap()
}

/// Compares autodiff gradients with central finite differences for every parameter entry
/// listed (all of them for small tensors, a sample for large ones).
fn check_gradients(src: &str, gr: Option<Granularity>) {
    let g = match gr {
        Some(gr) => with_granularity(&graph(src), gr),
        None => graph(src),
    };
    // Non-trivial coefficients so that every term matters.
    let init = Init {
        seed: 3,
        quad: [0.3, -0.7, 0.2],
    };
    let mut net = Net::new(g, &init, DType::F64).unwrap();
    let ds = synthetic(6, 5);
    let (x, y) = ds
        .batch(&[0, 1, 2, 3, 4, 5], DType::F64, &Device::Cpu)
        .unwrap();
    // Give per-element coefficients distinct values so a wrong broadcast would show.
    let names: Vec<String> = net.params().keys().cloned().collect();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let coeff_names: Vec<String> = names.iter().filter(|n| net.is_coeff(n)).cloned().collect();
    for n in &coeff_names {
        let p = net.params()[n].as_tensor().clone();
        let noise: Vec<f64> = (0..p.elem_count())
            .map(|_| rng.gen_range(-0.1..0.1))
            .collect();
        let noise = Tensor::from_vec(noise, p.shape(), &Device::Cpu).unwrap();
        net.set_weight(n, &(p + noise).unwrap()).unwrap();
    }
    let z = net.forward(&x, Mode::Eval).unwrap();
    let grads = cross_entropy(&z, &y).unwrap().backward().unwrap();
    let mut checked_coeffs = 0;
    for name in &names {
        let var = &net.params()[name];
        let base = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let dims = var.dims().to_vec();
        let grad = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"))
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let step = (base.len() / 7).max(1);
        for i in (0..base.len()).step_by(step) {
            let h = 1e-6;
            let mut plus = base.clone();
            plus[i] += h;
            net.set_weight(
                name,
                &Tensor::from_vec(plus, dims.clone(), &Device::Cpu).unwrap(),
            )
            .unwrap();
            let lp = loss_of(&mut net, &x, &y);
            let mut minus = base.clone();
            minus[i] -= h;
            net.set_weight(
                name,
                &Tensor::from_vec(minus, dims.clone(), &Device::Cpu).unwrap(),
            )
            .unwrap();
            let lm = loss_of(&mut net, &x, &y);
            net.set_weight(
                name,
                &Tensor::from_vec(base.clone(), dims.clone(), &Device::Cpu).unwrap(),
            )
            .unwrap();
            let fd = (lp - lm) / (2.0 * h);
            let tol = 1e-6 + 1e-4 * fd.abs().max(grad[i].abs());
            assert!(
                (fd - grad[i]).abs() <= tol,
                "{name}[{i}]: autodiff {} vs finite difference {fd} ({gr:?})",
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
    check_gradients(RELU, Some(Granularity::Layer));
}

#[test]
fn quadratic_gradients_match_finite_differences_channel() {
    check_gradients(RELU, Some(Granularity::Channel));
}

#[test]
fn quadratic_gradients_match_finite_differences_element() {
    check_gradients(RELU, Some(Granularity::Element));
}

#[test]
fn gradients_of_the_mixed_network_match_finite_differences() {
    // channel and element quadratics, batch norm (running statistics), add, concat, pools.
    check_gradients(TINY, None);
}

#[test]
fn kd_loss_matches_a_hand_computed_example() {
    // student s = [1, 2, 0], teacher t = [0, 1, 3], label 1, T = 2, alpha = 0.3.
    // softmax(t/T) = softmax([0, 0.5, 1.5]) and softmax(s/T) = softmax([0.5, 1, 0]):
    //   log Z_t = ln(1 + e^0.5 + e^1.5) = 1.8405..., log Z_s = ln(e^0.5 + e + 1) = 1.6644...
    //   KL = sum p_t (log p_t - log p_s) = 0.4729643249573147
    //   CE = ln(e + e^2 + 1) - 2 = 0.4076059644443806
    //   loss = 0.3 * 4 * KL + 0.7 * CE = 0.8528813650598439
    let dev = Device::Cpu;
    let s = Tensor::new(&[[1.0f64, 2.0, 0.0]], &dev).unwrap();
    let t = Tensor::new(&[[0.0f64, 1.0, 3.0]], &dev).unwrap();
    let y = Tensor::new(&[1u32], &dev).unwrap();
    let kl = kl_div(&s, &t, 2.0).unwrap().to_scalar::<f64>().unwrap();
    let ce = cross_entropy(&s, &y).unwrap().to_scalar::<f64>().unwrap();
    let kd = kd_loss(&s, &t, &y, 2.0, 0.3)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!((kl - 0.4729643249573147).abs() < 1e-12, "KL {kl}");
    assert!((ce - 0.4076059644443806).abs() < 1e-12, "CE {ce}");
    assert!((kd - 0.8528813650598439).abs() < 1e-12, "KD {kd}");
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
    // No gradient reaches the teacher; the student's gradient is finite and non-zero.
    let sv = candle_core::Var::from_tensor(&s).unwrap();
    let g = kd_loss(sv.as_tensor(), &t, &y, 2.0, 0.3)
        .unwrap()
        .backward()
        .unwrap();
    let gs = g.get(sv.as_tensor()).unwrap().to_vec2::<f64>().unwrap();
    assert!(gs[0].iter().any(|v| v.abs() > 1e-3));
    assert!(g.get(&t).is_none());
    // Bad configuration is an error, not a panic.
    assert!(kd_loss(&s, &t, &y, 0.0, 0.3).is_err());
    assert!(kd_loss(&s, &t, &y, 2.0, 1.5).is_err());
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
    let mut net = Net::new(out.student.graph.clone(), &Init::default(), DType::F64).unwrap();
    let (x, _) = data
        .test
        .batch(
            &(0..data.test.len()).collect::<Vec<_>>(),
            DType::F64,
            &Device::Cpu,
        )
        .unwrap();
    let ours: Vec<f64> = net
        .forward(&x, Mode::Eval)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
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
        Net::new(graph(mp), &Init::default(), DType::F32),
        Err(hecc_train::TrainError::Unsupported { .. })
    ));
}
