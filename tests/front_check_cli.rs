//! `hecc check` end to end: exit status 0 and a summary on the reference models and ONNX
//! fixtures; non-zero status and a rendered diagnostic on a malformed model.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use std::process::Command;

fn hecc_check(model: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hecc"))
        .args(["check", model])
        .env("NO_COLOR", "1")
        .output()
        .expect("the hecc binary runs")
}

#[test]
fn check_succeeds_on_reference_models() {
    for (model, summary) in [
        ("models/cryptonets.yaml", "parameters: 85740"),
        ("models/lenet5.yaml", "quadratic/channel"),
        (
            "models/squeezenet.yaml",
            "quadratic/element     10 layer(s)",
        ),
        ("models/onnx/cnn.onnx", "outputs: fc3 [10]"),
        ("models/onnx/branches.onnx", "outputs: fc [5]"),
    ] {
        let out = hecc_check(model);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{model}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(summary),
            "{model}: `{summary}` not in\n{stdout}"
        );
    }
    let out = hecc_check("models/cryptonets.yaml");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("conv1    conv2d             [5, 13, 13]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("flatten  flatten            [845]"),
        "{stdout}"
    );
}

#[test]
fn check_fails_with_a_diagnostic() {
    let out = hecc_check("tests/fixtures/front/shape_mismatch.yaml");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("hecc::graph::shape_mismatch"), "{stderr}");
    assert!(stderr.contains("shape_mismatch.yaml:8:13"), "{stderr}");
    let out = hecc_check("tests/fixtures/front/onnx_unsupported_ops.onnx");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Softmax"));
}
