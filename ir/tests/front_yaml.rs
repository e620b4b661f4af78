//! YAML front end: conventions (default weight names, bias, layers vs graph form, npz weights)
//! and robustness (no panic on truncated or mutated specs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use std::path::Path;

use hecc_ir::front::yaml::{parse_spec, parse_spec_structure};
use hecc_ir::front::FrontError;
use hecc_ir::tensor::{verify, Granularity, Op, Shape};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

#[test]
fn default_weight_names_and_forms() {
    let src = r#"
input: { shape: [2, 4, 4], mean: [0.5, 0.25], std: 2 }
graph:
  - { name: a, op: conv2d, inputs: [input], out_channels: 3, kernel: [3, 1], padding: [1, 0] }
  - { name: b, op: conv2d, inputs: [input], out_channels: 1, kernel: 1, bias: false }
  - { name: cat, op: concat, inputs: [a, b] }
  - { name: bn, op: batch_norm, inputs: [cat] }
  - { name: q, op: quadratic, inputs: [bn], granularity: channel }
  - { name: d, op: dense, inputs: [q], out_features: 2, weight: shared, bias: other }
"#;
    let err = parse_spec_structure(src, "m.yaml").unwrap_err();
    // Only the shape mismatch (dense on an image) is reported: weights are not required here.
    assert_eq!(err.problems().len(), 1, "{:?}", err.problems());
    assert!(err.problems()[0].to_string().contains("rank-1"));

    let src = src.replace("inputs: [q], out_features", "inputs: [f], out_features")
        + "  - { name: f, op: flatten, inputs: [q] }\n";
    let g = parse_spec_structure(&src, "m.yaml").unwrap();
    assert_eq!(g.name, "m");
    let op = |n: &str| g.node(g.find(n).unwrap()).unwrap().op.clone();
    assert_eq!(
        op("a"),
        Op::Conv2d {
            out_channels: 3,
            kernel: [3, 1],
            stride: [1, 1],
            padding: [1, 0, 1, 0],
            groups: 1,
            weight: "a.weight".into(),
            bias: Some("a.bias".into()),
        }
    );
    assert!(matches!(op("b"), Op::Conv2d { bias: None, .. }));
    assert_eq!(
        op("bn"),
        Op::BatchNorm {
            gamma: "bn.weight".into(),
            beta: "bn.bias".into(),
            mean: "bn.running_mean".into(),
            var: "bn.running_var".into(),
            epsilon: 1e-5,
        }
    );
    assert_eq!(
        op("q"),
        Op::Quadratic {
            granularity: Granularity::Channel,
            coeffs: "q.coeffs".into()
        }
    );
    assert!(
        matches!(op("d"), Op::Dense { weight, bias: Some(b), .. } if weight == "shared" && b == "other")
    );
    let norm = g.input_normalization().unwrap();
    assert_eq!(norm.mean, vec![0.5, 0.25]);
    assert_eq!(norm.std, vec![2.0]);
    // Weights are missing (structure only), so the verifier reports them, and shapes are known.
    let (shapes, errs) = hecc_ir::tensor::verify::analyze(&g);
    assert!(errs
        .iter()
        .all(|e| e.to_string().contains("missing weight")));
    assert_eq!(shapes[&g.find("cat").unwrap()], Shape::from([4, 4, 4]));
    assert_eq!(shapes[&g.find("f").unwrap()], Shape::from([64]));
}

#[test]
fn npz_weights_next_to_the_spec() {
    let dir = Path::new(ROOT).join("tests/fixtures/front");
    let src = std::fs::read_to_string(dir.join("ok_tiny.yaml")).unwrap();
    let g = parse_spec(&src, "ok_tiny.yaml", Some(&dir)).unwrap();
    assert_eq!(g.weights["conv1.weight"].shape(), &[2, 1, 3, 3]);
    let shapes = verify(&g).unwrap();
    assert_eq!(shapes[&g.find("fc").unwrap()], Shape::from([3]));
}

#[test]
fn truncated_and_mutated_specs_never_panic() {
    for model in ["cryptonets", "lenet5", "squeezenet"] {
        let src = std::fs::read_to_string(format!("{ROOT}/models/{model}.yaml")).unwrap();
        let name = format!("{model}.yaml");
        let mut cut = 0;
        while cut < src.len() {
            if src.is_char_boundary(cut) {
                let _ = parse_spec_structure(&src[..cut], &name);
            }
            cut += 7;
        }
        let bytes = src.as_bytes();
        for (i, junk) in (0..bytes.len())
            .step_by(11)
            .zip([b'{', b']', b':', b'-', b'"', b'9'].iter().cycle())
        {
            let mut b = bytes.to_vec();
            b[i] = *junk;
            if let Ok(s) = String::from_utf8(b) {
                let r = parse_spec_structure(&s, &name);
                if let Err(e) = r {
                    // Every error renders.
                    let mut out = String::new();
                    miette::NarratableReportHandler::new()
                        .render_report(&mut out, &e)
                        .unwrap();
                    assert!(!out.is_empty());
                }
            }
        }
    }
    assert!(matches!(
        parse_spec_structure("input: [", "x.yaml"),
        Err(FrontError::Yaml { .. })
    ));
}

#[test]
fn absurd_sizes_are_errors_not_panics() {
    let max = usize::MAX;
    let src = format!(
        r#"
input: {{ shape: [{max}, {max}, 3] }}
layers:
  - {{ name: c, op: conv2d, out_channels: {max}, kernel: {max}, padding: {max}, stride: {max} }}
  - {{ name: p, op: avg_pool, kernel: 2, padding: [{max}, {max}, {max}, {max}] }}
  - {{ name: f, op: flatten }}
  - {{ name: d, op: dense, out_features: {max} }}
  - {{ name: r, op: reshape, shape: [{max}, {max}] }}
"#
    );
    assert!(parse_spec_structure(&src, "huge.yaml").is_err());
    // An input beyond the per-image limits is refused at load.
    let src = "input: { shape: [1000, 1000, 1000] }\nlayers:\n  - { name: f, op: flatten }\n";
    let e = parse_spec_structure(src, "big.yaml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid"), "{e}");
    // A model at the limit verifies, and the evaluator refuses a batch too large for it
    // without allocating.
    let src = "input: { shape: [16777216] }\nlayers:\n  - { name: f, op: flatten }\n";
    let g = parse_spec_structure(src, "big.yaml").unwrap();
    let x = hecc_ir::tensor::Tensor::zeros(ndarray::IxDyn(&[256, 1]));
    assert!(matches!(
        hecc_ir::tensor::eval::eval_batch(&g, &[x]),
        Err(hecc_ir::tensor::eval::EvalError::TooLarge { .. })
    ));
}

/// The reference models load with their weights and evaluate to moderate, finite values on
/// inputs in their declared range (the placeholder weights keep activations bounded).
#[test]
fn reference_models_evaluate_to_moderate_values() {
    let dir = Path::new(ROOT).join("models");
    for model in ["cryptonets", "lenet5", "squeezenet"] {
        let src = std::fs::read_to_string(dir.join(format!("{model}.yaml"))).unwrap();
        let g = parse_spec(&src, &format!("{model}.yaml"), Some(&dir)).unwrap();
        let shape = match &g.node(g.inputs[0]).unwrap().op {
            Op::Input { shape, .. } => shape.clone(),
            other => panic!("first input is {other}"),
        };
        let mut dims = vec![4];
        dims.extend_from_slice(&shape);
        let x = hecc_ir::tensor::Tensor::from_shape_fn(ndarray::IxDyn(&dims), |i| {
            ((i[0] * 7 + ndarray::Dimension::slice(&i).iter().sum::<usize>() * 13) % 17) as f64
                / 16.0
        });
        let y = hecc_ir::tensor::eval::eval_batch(&g, &[x]).unwrap();
        let max = y[0].iter().fold(0.0f64, |m, v| m.max(v.abs()));
        eprintln!("{model}: max |output| = {max}");
        assert!(max.is_finite() && max < 1e6, "{model}: {max}");
        assert!(max > 1e-6, "{model}: outputs vanish");
    }
}
