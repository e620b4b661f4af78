//! End to end for SqueezeNet (`models/squeezenet.yaml`, 3x32x32, random weights) in the
//! `channel` layout (one ciphertext per channel, slot = pixel): compile, keygen, encrypt, run,
//! decrypt, compared with the plaintext tensor model on every image. The batch layout needs
//! tens of GiB for this network; the channel layout at small insecure parameters fits.
//!
//! Inputs: the first four CIFAR-10 test images, stored channel-major (`[4, 3, 32, 32]` IDX) in
//! `tests/fixtures/cifar10/` with their labels.
//! Run with `cargo test --release --test e2e_squeezenet -- --ignored` (slow; the debug profile
//! is much slower still).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

mod common;

use common::root;

use hecc::compile::CompileOptions;
use hecc::run::*;
use hecc_passes::params::Security;

/// Channel layout at small insecure parameters: N = 2^12 holds two 32x32 images (1024 slots
/// each) side by side.
fn channel_opts() -> CompileOptions {
    CompileOptions {
        security: Security::InsecureNone,
        min_log_n: 12,
        layout: hecc::compile::LayoutChoice::Channel,
        ..Default::default()
    }
}

#[test]
#[ignore = "slow (about 4 minutes, 7.7 GiB on 2 cores): cargo test --release --test e2e_squeezenet -- --ignored"]
fn squeezenet_channel_infer_matches_plaintext() {
    let fixtures = root().join("tests/fixtures/cifar10");
    let images = fixtures.join("cifar10-test-first4-chw-images-idx4-ubyte");
    let labels = fixtures.join("cifar10-test-first4-labels-idx1-ubyte");
    let batch = 2;
    let opts = InferOptions {
        compile: channel_opts(),
        batch: Some(batch),
        verify: true,
        progress: None,
        memory_limit: None,
        no_memory_check: false,
        ..Default::default()
    };
    let model = root().join("models/squeezenet.yaml");
    let rep = infer(&model, &images, Some(&labels), &opts)
        .unwrap_or_else(|e| panic!("squeezenet: {e:?}"));
    eprintln!("{}", render_infer(&rep));
    let v = rep.verification.as_ref().expect("verification requested");
    assert_eq!(rep.images, batch, "images run");
    assert_eq!(rep.logits.classes, 10, "ten CIFAR-10 classes");
    assert_eq!(v.output.values, batch * rep.logits.classes);
    eprintln!(
        "squeezenet channel N=2^{}: argmax agreement {}/{batch}, max |err| vs circuit {:.3e} \
         ({:.1} bits), vs tensor model {:.3e} ({:.1} bits), logits up to {:.3e}",
        rep.log_n,
        v.argmax_agree,
        v.output.max_abs_error,
        v.output.bits(),
        v.tensor_max_abs_error,
        precision_bits(v.tensor_max_abs_error),
        v.output.max_abs_value
    );
    common::assert_matches_plaintext("squeezenet", v, batch, 1e-4);
}
