//! Shared by the end-to-end tests: the repository's paths, the bundled MNIST sample, and the
//! check of an encrypted run against its plaintext references.

use hecc::run::Verification;
use std::path::PathBuf;

/// The repository root (where `models/` and `tests/fixtures/` are).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The bundled first 256 MNIST test images and their labels (IDX files).
#[allow(dead_code)] // not every test file uses it
pub fn mnist() -> (PathBuf, PathBuf) {
    let d = root().join("models/data");
    (
        d.join("mnist-t10k-first256-images-idx3-ubyte"),
        d.join("mnist-t10k-first256-labels-idx1-ubyte"),
    )
}

#[allow(dead_code)] // not every test file uses it
/// Asserts what every end-to-end run must show: encrypted and plaintext argmax agree on all
/// `batch` images, and the output error against the circuit's reference semantics and against
/// the tensor model is finite and below `rel_tol` times the largest logit (at least 1), and
/// every per-stage error is reported and finite.
pub fn assert_matches_plaintext(label: &str, v: &Verification, batch: usize, rel_tol: f64) {
    assert_eq!(
        v.argmax_agree, batch,
        "{label}: encrypted and plaintext argmax must agree on every image"
    );
    let scale = v.output.max_abs_value.max(1.0);
    assert!(
        v.output.max_abs_error.is_finite() && v.output.max_abs_error < rel_tol * scale,
        "{label}: output error {} against values up to {}",
        v.output.max_abs_error,
        v.output.max_abs_value
    );
    assert!(
        v.tensor_max_abs_error < rel_tol * scale,
        "{label}: error against the tensor model {}",
        v.tensor_max_abs_error
    );
    assert!(!v.stages.is_empty(), "per-stage errors are reported");
    for s in &v.stages {
        assert!(
            s.max_abs_error.is_finite(),
            "{}: {}",
            s.name,
            s.max_abs_error
        );
    }
}
