//! The ReLU survey end to end: calibrated activation ranges in compiled plans, the survey table on a
//! small data set, and the composite-minimax ReLU model run encrypted (small insecure
//! parameters) against the plaintext evaluation of the same approximation, with out-of-range
//! activation inputs reported by `--verify`.
//! Run with `cargo test --release --test approx_survey`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use hecc::compile::{compile_graph, load_calibration, CompileOptions};
use hecc::run::{infer, render_range_checks, InferOptions};
use hecc::survey::{survey_graph, SurveyMethod, SurveyOptions};
use hecc_passes::approx::tensor::eval_approx;
use hecc_passes::params::Security;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn model() -> hecc_ir::tensor::Graph {
    hecc_ir::front::load_model(&root().join("models/survey_relu.yaml")).unwrap()
}

fn images() -> PathBuf {
    root().join("models/data/mnist-t10k-first256-images-idx3-ubyte")
}

fn labels() -> PathBuf {
    root().join("models/data/mnist-t10k-first256-labels-idx1-ubyte")
}

#[test]
fn calibrated_compile_records_one_range_per_activation() {
    let g = model();
    let cal = load_calibration(&g, &images(), 100, 0.1).unwrap();
    assert_eq!(cal.samples.shape(), &[100, 1, 28, 28]);
    let opts = CompileOptions {
        layout: hecc::compile::LayoutChoice::Batch,
        batch: Some(4),
        activation: Some(hecc::compile::ActivationChoice::parse("least-squares:6").unwrap()),
        calibration: Some(cal.clone()),
        security: Security::InsecureNone,
        ..Default::default()
    };
    let plan = compile_graph(&g, &opts).unwrap().plan;
    let r = &plan.report.activation_ranges;
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].node.as_str(), r[0].op.as_str()), ("act1", "relu"));
    assert!(r[0].calibrated && r[0].bound > 0.0);
    assert!((r[0].range - r[0].bound * 1.1).abs() < 1e-9);
    assert!(r[0].min < 0.0 && r[0].max > 0.0 && r[0].bound >= r[0].max.max(-r[0].min));
    // The ranges travel with the plan.
    let back = hecc_passes::plan::Plan::from_json(&plan.to_json().unwrap()).unwrap();
    assert_eq!(&back.report.activation_ranges, r);
    let text = hecc::report_text::render(&plan.report);
    assert!(
        text.contains("activation range: act1 (relu) calibrated"),
        "{text}"
    );
    // An explicit range overrides the calibrated one (still recorded).
    let fixed = CompileOptions {
        relu_range: 3.0,
        range_override: true,
        ..opts.clone()
    };
    let plan = compile_graph(&g, &fixed).unwrap().plan;
    assert_eq!(plan.report.activation_ranges[0].range, 3.0);
    // Without calibration every activation is listed with the one range.
    let plain = CompileOptions {
        calibration: None,
        ..opts
    };
    let plan = compile_graph(&g, &plain).unwrap().plan;
    let r = &plan.report.activation_ranges[0];
    assert!(!r.calibrated && r.range == 8.0);
}

#[test]
fn survey_table_on_a_small_set() {
    // A data directory with the 256 test images serving as training images too.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("approx_survey_data");
    std::fs::create_dir_all(&dir).unwrap();
    for (from, to) in [
        (images(), "train-images-idx3-ubyte"),
        (images(), "t10k-images-idx3-ubyte"),
        (labels(), "t10k-labels-idx1-ubyte"),
    ] {
        std::fs::copy(from, dir.join(to)).unwrap();
    }
    let m = |p: Option<&str>| SurveyMethod {
        label: p.unwrap_or("relu").into(),
        policy: p.map(String::from),
    };
    let opts = SurveyOptions {
        data: dir,
        calibrate_count: 256,
        margin: 0.1,
        limit: None,
        methods: vec![m(None), m(Some("square")), m(Some("minimax:7"))],
    };
    let g = model();
    let s = survey_graph(&g, &opts).unwrap();
    assert_eq!(s.calibration_images, 256);
    assert_eq!(s.rows.len(), 3);
    // Exact ReLU: the reference evaluator's accuracy.
    let cal = load_calibration(&g, &images(), 256, 0.0).unwrap();
    let out = hecc_ir::tensor::eval::eval_batch(&g, &[cal.samples]).unwrap();
    let flat: Vec<f64> = out[0].iter().copied().collect();
    let pred = hecc::run::argmax_rows(&flat, 10);
    let lab = hecc::run::load_labels(&labels()).unwrap();
    let correct = pred.iter().zip(&lab).filter(|(p, l)| p == l).count();
    assert_eq!(s.rows[0].correct, correct);
    assert_eq!(s.rows[0].total, 256);
    // Calibrated on the same images with a margin: nothing out of range.
    assert!(s
        .rows
        .iter()
        .all(|r| r.outside.0 == 0 && r.outside.1 == 256 * 128));
    // Minimax is close to ReLU, the square far from it.
    let (relu, square, minimax) = (s.rows[0].correct, s.rows[1].correct, s.rows[2].correct);
    assert!(
        relu.abs_diff(minimax) <= 3,
        "relu {relu}, minimax {minimax}"
    );
    assert!(square + 20 < relu, "square {square}, relu {relu}");
    assert!(s.rows[2].depth.unwrap() > s.rows[1].depth.unwrap());
    let table = hecc::survey::render(&s);
    assert!(table.contains("| minimax:7 |"), "{table}");
}

#[test]
fn minimax_relu_runs_encrypted_and_out_of_range_inputs_are_reported() {
    let g = model();
    let n = 4;
    let cal = load_calibration(&g, &images(), 256, 0.1).unwrap();
    let compile = CompileOptions {
        layout: hecc::compile::LayoutChoice::Batch,
        activation: Some(hecc::compile::ActivationChoice::parse("minimax:7").unwrap()),
        calibration: Some(cal.clone()),
        security: Security::InsecureNone,
        min_log_n: 12,
        ..Default::default()
    };
    let opts = InferOptions {
        compile: compile.clone(),
        batch: Some(n),
        verify: true,
        progress: None,
        memory_limit: None,
        no_memory_check: false,
        ..Default::default()
    };
    let path = root().join("models/survey_relu.yaml");
    let rep = infer(&path, &images(), Some(&labels()), &opts).unwrap();
    // The plaintext evaluation of the same per-node approximation.
    let (policy, _) = hecc::compile::activation_policy(&g, &compile).unwrap();
    let x = load_calibration(&g, &images(), n, 0.0).unwrap().samples;
    let want = eval_approx(&g, &[x], |s| policy.per_node.get(&s.name)).unwrap();
    let want: Vec<f64> = want.outputs[0].iter().copied().collect();
    assert_eq!(want.len(), rep.logits.values.len());
    let err = want
        .iter()
        .zip(&rep.logits.values)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(err < 1e-3, "encrypted vs plaintext approximation: {err}");
    let v = rep.verification.as_ref().unwrap();
    assert_eq!(v.ranges.len(), 1);
    assert_eq!(v.ranges[0].outside, 0);
    assert_eq!(render_range_checks(&v.ranges), "");

    // A range far too small: the reference counts the inputs outside it (a warning only).
    let small = InferOptions {
        compile: CompileOptions {
            activation: Some(hecc::compile::ActivationChoice::parse("least-squares:4").unwrap()),
            relu_range: 0.5,
            range_override: true,
            ..compile
        },
        ..opts
    };
    let rep = infer(&path, &images(), Some(&labels()), &small).unwrap();
    let v = rep.verification.as_ref().unwrap();
    let c = &v.ranges[0];
    assert_eq!(
        (c.node.as_str(), c.range, c.checked),
        ("act1", 0.5, n * 128)
    );
    assert!(c.outside > 0 && c.worst.abs() > 0.5, "{c:?}");
    let warning = render_range_checks(&v.ranges);
    assert!(
        warning.starts_with("warning: activation `act1` (relu)"),
        "{warning}"
    );
    assert!(hecc::run::render_infer(&rep).contains(&warning));
}
