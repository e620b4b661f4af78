//! Checks shared by the end-to-end tests: an encrypted run against its plaintext references.

use hecc::run::Verification;

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
