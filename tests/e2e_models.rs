//! End to end: each reference model compiled, keyed, encrypted, run and decrypted, compared
//! with the plaintext model (tensor evaluator) and the circuit's reference semantics.
//! Small insecure parameters keep the tests fast, except the one 128-bit run.
//! Run with `cargo test --release --test e2e_models` (the debug profile is slow).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

mod common;

use common::{mnist, root};

use hecc::compile::CompileOptions;
use hecc::run::{infer, npy_bytes, InferOptions};
use hecc_passes::params::Security;
use std::path::Path;

fn insecure() -> CompileOptions {
    CompileOptions {
        security: Security::InsecureNone,
        min_log_n: 12,
        layout: hecc::compile::LayoutChoice::Batch,
        ..Default::default()
    }
}

fn check(model: &str, images: &Path, labels: Option<&Path>, batch: usize, compile: CompileOptions) {
    let opts = InferOptions {
        compile,
        batch: Some(batch),
        verify: true,
        progress: None,
        memory_limit: None,
        no_memory_check: false,
        ..Default::default()
    };
    let rep = infer(&root().join("models").join(model), images, labels, &opts)
        .unwrap_or_else(|e| panic!("{model}: {e:?}"));
    let v = rep.verification.as_ref().expect("verification requested");
    eprintln!("{}", hecc::run::render_infer(&rep));
    assert_eq!(rep.images, batch);
    assert!(v.output.values > 0);
    common::assert_matches_plaintext(model, v, batch, 1e-3);
}

#[test]
fn cryptonets_encrypted_matches_plaintext_on_mnist() {
    let (images, labels) = mnist();
    check("cryptonets.yaml", &images, Some(&labels), 32, insecure());
}

#[test]
fn lenet5_encrypted_matches_plaintext_on_mnist() {
    // About 20 s on 2 cores (N=2^12, depth 9, 41,676 nodes).
    let (images, labels) = mnist();
    check("lenet5.yaml", &images, Some(&labels), 8, insecure());
}

#[test]
fn an_infer_that_spills_matches_the_plaintext_model() {
    // CryptoNets with its live values held to half its plan's peak: two runs of 4 images, each
    // writing values to the directory and reading them back.
    let (images, labels) = mnist();
    let model = root().join("models").join("cryptonets.yaml");
    let mut compile = insecure();
    compile.batch = Some(4);
    let plan = hecc::compile::compile(&model, &compile).unwrap().plan;
    let peak = plan.report.schedule.as_ref().unwrap().peak.bytes;
    let budget = peak / 2;
    let dir = std::env::temp_dir().join(format!("hecc-e2e-infer-spill-{}", std::process::id()));
    let opts = InferOptions {
        compile,
        batch: Some(8),
        verify: true,
        spill: Some(hecc::run::SpillSettings {
            dir: dir.clone(),
            budget: Some(budget),
            checkpoint_every: None,
        }),
        ..Default::default()
    };
    let rep = infer(&model, &images, Some(&labels), &opts).unwrap();
    let v = rep.verification.as_ref().expect("verification requested");
    assert_eq!(rep.images, 8);
    assert_eq!(rep.runs, 2);
    common::assert_matches_plaintext("cryptonets.yaml", v, 8, 1e-3);
    let sp = rep.run.spill.as_ref().expect("a spill report");
    eprintln!(
        "plan peak {peak} bytes, budget {budget}: spilled {} values ({} bytes), read back {} ({} bytes), at most {} bytes on disk",
        sp.values_written, sp.bytes_written, sp.values_read, sp.bytes_read, sp.peak_disk_bytes
    );
    assert_eq!(sp.budget, budget);
    assert!(sp.values_written > 0 && sp.values_read >= sp.values_written);
    // A finished run leaves nothing behind.
    let left = std::fs::read_dir(&dir).map_or(0, |d| d.count());
    assert_eq!(left, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cryptonets_from_npy_floats() {
    // Floating-point .npy input is taken as is (already in the input's range).
    let mut s = 3u64;
    let data: Vec<f64> = (0..4 * 784)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("hecc-e2e-npy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("x.npy");
    std::fs::write(&p, npy_bytes(4, 784, &data)).unwrap();
    check("cryptonets.yaml", &p, None, 4, insecure());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cryptonets_at_128_bit_parameters() {
    let (images, labels) = mnist();
    check(
        "cryptonets.yaml",
        &images,
        Some(&labels),
        64,
        CompileOptions {
            layout: hecc::compile::LayoutChoice::Batch,
            ..Default::default()
        },
    );
}
