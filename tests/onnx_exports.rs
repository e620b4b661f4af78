//! Models exported unmodified by PyTorch (`torch.onnx.export`) and scikit-learn (skl2onnx),
//! committed with the framework's own outputs on the 256 bundled MNIST images
//! (`models/onnx/export/`, written by `export_models.py` there). The importer must reproduce
//! the framework's outputs in plaintext, and the encrypted runs at 128-bit must keep the
//! framework's predictions. The ResNet-style export takes about ten minutes encrypted on two
//! cores: `cargo test --release --test onnx_exports -- --ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

mod common;

use common::{mnist, root};
use hecc::compile::{CompileOptions, ModelArgs};
use hecc::eval::eval_model;
use hecc::run::{compare_reference, infer_graph, load_reference, InferOptions};
use hecc_ir::tensor::Graph;

fn export(name: &str) -> std::path::PathBuf {
    root().join("models/onnx/export").join(name)
}

/// The export `name`, with MNIST's mean/std normalisation for the PyTorch models (applied
/// outside the model by the training script, declared here without editing the file).
fn load(name: &str) -> Graph {
    let args = ModelArgs {
        normalize: name
            .ends_with("_torch")
            .then(|| "0.1307/0.3081".to_string()),
        input_range: None,
    };
    args.load(&export(&format!("{name}.onnx")))
        .unwrap_or_else(|e| panic!("{name}: {e:?}"))
}

fn argmax(row: &[f64]) -> usize {
    row.iter()
        .enumerate()
        .fold(
            (0, f64::NEG_INFINITY),
            |b, (i, &v)| if v > b.1 { (i, v) } else { b },
        )
        .0
}

#[test]
fn exports_import_unmodified_and_match_the_framework_in_plaintext() {
    for name in ["lenet5_torch", "resnet_torch", "mlp_sklearn"] {
        let g = load(name);
        let r = eval_model(
            &g,
            &mnist().0,
            Some(&mnist().1),
            &[],
            None,
            &CompileOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let (want, classes) = load_reference(&export(&format!("{name}.logits.npy"))).unwrap();
        let exact = &r.rows[0];
        assert_eq!(exact.classes, classes, "{name}: classes");
        assert_eq!(r.images, 256, "{name}: images");
        let mut agree = 0;
        let mut max_diff = 0.0f64;
        for i in 0..r.images {
            let got = &exact.logits[i * classes..(i + 1) * classes];
            let refr = &want[i * classes..(i + 1) * classes];
            agree += usize::from(argmax(got) == argmax(refr));
            if name.ends_with("_torch") {
                for (a, b) in got.iter().zip(refr) {
                    max_diff = max_diff.max((a - b).abs());
                }
            }
        }
        // sklearn's reference holds probabilities (its Softmax is dropped at import): only the
        // argmax compares; PyTorch's holds logits, compared value by value (float32 there).
        assert_eq!(agree, 256, "{name}: argmax agreement with the framework");
        assert!(max_diff < 1e-3, "{name}: max |logit difference| {max_diff}");
    }
}

/// `hecc infer` at 128-bit with the policy `activation` (`auto` calibrates on the images)
/// and the reference agreement.
fn infer_export(name: &str, layout: &str, activation: &str) -> (usize, usize) {
    let g = load(name);
    let (images, labels) = mnist();
    let mut compile = CompileOptions {
        layout: layout.parse().unwrap(),
        activation: Some(hecc::compile::ActivationChoice::parse(activation).unwrap()),
        ..Default::default()
    };
    if activation != "auto" {
        let spec = hecc::compile::input_tensor(&g).unwrap();
        let all = hecc::run::load_images(&images, &spec).unwrap();
        let mut dims = vec![all.count];
        dims.extend_from_slice(&spec.shape);
        compile.calibration = Some(hecc::compile::Calibration {
            samples: hecc_ir::tensor::Tensor::from_shape_vec(dims, all.data).unwrap(),
            margin: 0.1,
        });
    }
    let opts = InferOptions {
        compile,
        batch: None,
        verify: false,
        progress: None,
        memory_limit: None,
        no_memory_check: false,
        ..Default::default()
    };
    let rep =
        infer_graph(&g, &images, Some(&labels), &opts).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    eprintln!("{}", hecc::run::render_infer(&rep));
    assert_eq!(rep.security, "128-bit", "{name}: security");
    let a = compare_reference(&rep, &export(&format!("{name}.logits.npy"))).unwrap();
    (a.agree, a.images)
}

#[test]
fn sklearn_mlp_runs_encrypted_at_128_bits_and_keeps_the_frameworks_predictions() {
    let (agree, n) = infer_export("mlp_sklearn", "batch", "auto");
    assert_eq!(n, 256);
    assert!(agree >= 253, "agreement with scikit-learn {agree}/256");
}

#[test]
#[ignore = "about ten minutes on two cores"]
fn torch_resnet_runs_encrypted_at_128_bits_and_keeps_the_frameworks_predictions() {
    let (agree, n) = infer_export("resnet_torch", "channel", "chebyshev:31");
    assert_eq!(n, 256);
    assert!(agree >= 253, "agreement with PyTorch {agree}/256");
}

/// ResNet-8 trained on Fashion-MNIST with exact ReLU (`train_resnet8_fashion.py`): the spec with
/// its weights and the PyTorch export both reproduce PyTorch's logits on the 256 bundled test
/// images, and Lee et al.'s swap (every ReLU replaced by the composite minimax polynomial, ranges
/// calibrated on the images, no retraining) keeps the predictions.
#[test]
fn fashion_resnet8_imports_and_keeps_its_predictions_under_the_minimax_swap() {
    let images = root().join("models/data/fashion-mnist-t10k-first256-images-idx3-ubyte");
    let labels = root().join("models/data/fashion-mnist-t10k-first256-labels-idx1-ubyte");
    let (want, classes) = load_reference(&export("resnet8_fashion_torch.logits.npy")).unwrap();
    let onnx = ModelArgs {
        normalize: Some("0.2860/0.3530".to_string()),
        input_range: None,
    }
    .load(&export("resnet8_fashion_torch.onnx"))
    .unwrap();
    let spec = hecc_ir::front::load_model(&root().join("models/resnet8_28.yaml")).unwrap();
    for (what, g) in [("export", onnx), ("spec", spec)] {
        let r = eval_model(
            &g,
            &images,
            Some(&labels),
            &["minimax:15,15,27".to_string()],
            None,
            &CompileOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{what}: {e:?}"));
        let exact = &r.rows[0];
        assert_eq!(exact.classes, classes);
        assert_eq!(r.images, 256, "{what}: images");
        assert_eq!(exact.logits.len(), want.len(), "{what}: logits");
        let max_diff = exact
            .logits
            .iter()
            .zip(&want)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(max_diff < 1e-3, "{what}: max |logit difference| {max_diff}");
        let swapped = &r.rows[1];
        let agree = swapped.agreement(exact);
        assert!(
            agree >= 254,
            "{what}: minimax keeps {agree}/256 predictions"
        );
        assert_eq!(swapped.outside.0, 0, "{what}: inputs outside the ranges");
    }
}
