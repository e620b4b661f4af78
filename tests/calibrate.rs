//! `hecc calibrate` measures every primitive the report needs, and a plan compiled with the
//! table gets a time estimate for every layer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use hecc::compile::{compile, CompileOptions};
use hecc_passes::params::Security;
use std::path::Path;

#[test]
fn calibration_table_feeds_the_report_estimates() {
    // Medians of 5 repetitions: one repetition of a microsecond addition can be inflated by a
    // preemption on a busy machine and pass a key switch.
    let table = hecc::calibrate::calibrate(&[13], 5, |_| {}).unwrap();
    for op in [
        "add",
        "mul",
        "mul_plain",
        "scalar_mul",
        "mac_term",
        "relin",
        "rescale",
        "rotate",
    ] {
        let e = table
            .entries
            .iter()
            .find(|e| e.log_n == 13 && e.op == op)
            .unwrap_or_else(|| panic!("{op} missing"));
        assert!(
            e.us_per_limb > 0.0 && e.us_per_limb.is_finite(),
            "{op}: {}",
            e.us_per_limb
        );
    }
    // Key switching costs more than an addition on any machine.
    let cost = |op: &str| {
        table
            .entries
            .iter()
            .find(|e| e.op == op)
            .map(|e| e.us_per_limb)
            .unwrap()
    };
    assert!(cost("relin") > cost("add"));
    let opts = CompileOptions {
        layout: hecc::compile::LayoutChoice::Batch,
        batch: Some(16),
        security: Security::InsecureNone,
        min_log_n: 13,
        costs: Some(table),
        ..Default::default()
    };
    let plan = compile(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("models/cryptonets.yaml"),
        &opts,
    )
    .unwrap()
    .plan;
    assert_eq!(plan.params.log_n, 13);
    let total = plan
        .report
        .est_seconds
        .expect("estimate with a matching table");
    assert!(total > 0.0);
    let per_layer: f64 = plan
        .report
        .layers
        .iter()
        .map(|l| l.est_seconds.unwrap_or(f64::NAN))
        .sum();
    assert!(
        (per_layer - total).abs() <= 1e-9 * total,
        "{per_layer} vs {total}"
    );
}
