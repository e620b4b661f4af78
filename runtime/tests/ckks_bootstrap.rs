//! Bootstrapping on small, explicitly insecure parameters (N = 2^12), so that
//! each test runs in seconds: every check decrypts and compares with the
//! plaintext it started from, with the error in bits.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use std::sync::Arc;

use hecc_runtime::ckks::*;

struct Setup {
    ctx: Arc<Context>,
    bt: Bootstrapper,
    keys: BootstrapKeys,
    keygen: KeyGenerator,
    encoder: Encoder,
}

fn setup(slots: usize, network_levels: usize) -> Setup {
    let cfg = BootstrapConfig::new(slots);
    let params = bootstrap_parameters(12, network_levels, 40, &cfg, false).expect("params");
    let ctx = Context::new(params).expect("context");
    let bt = Bootstrapper::new(&ctx, cfg).expect("bootstrapper");
    let mut keygen = KeyGenerator::new_with_insecure_test_seed(&ctx, 7);
    let keys = bt.generate_keys(&mut keygen).expect("keys");
    let encoder = Encoder::new(&ctx);
    Setup {
        ctx,
        bt,
        keys,
        keygen,
        encoder,
    }
}

/// Uniform values in [-1, 1] from a fixed LCG, repeated with period `period`
/// over all `total` slots.
fn values(period: usize, total: usize, seed: u64) -> Vec<f64> {
    let mut s = seed;
    let base: Vec<f64> = (0..period)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect();
    (0..total).map(|i| base[i % period]).collect()
}

/// (mean, worst) bits of precision: -log2 of the mean and max absolute error.
fn precision(got: &[f64], want: &[f64]) -> (f64, f64) {
    let errs: Vec<f64> = got.iter().zip(want).map(|(a, b)| (a - b).abs()).collect();
    let mean = errs.iter().sum::<f64>() / errs.len() as f64;
    let max = errs.iter().copied().fold(0f64, f64::max);
    (-mean.log2(), -max.log2())
}

fn encrypt_at(s: &Setup, v: &[f64], level: usize) -> Ciphertext {
    let pt = s.encoder.encode(v, level, 2f64.powi(40)).expect("encode");
    let mut enc =
        SymmetricEncryptor::new_with_insecure_test_seed(&s.ctx, s.keygen.secret_key(), 11);
    enc.encrypt(&pt).expect("encrypt")
}

fn decrypt(s: &Setup, ct: &Ciphertext) -> Vec<f64> {
    let dec = Decryptor::new(&s.ctx, s.keygen.secret_key());
    s.encoder
        .decode(&dec.decrypt(ct).expect("decrypt"))
        .expect("decode")
}

#[test]
fn full_slot_bootstrap_restores_levels_and_keeps_the_message() {
    let s = setup(2048, 2);
    let v = values(2048, 2048, 1);
    let ct = encrypt_at(&s, &v, 0);
    let out = s.bt.bootstrap(&ct, &s.keys).expect("bootstrap");
    assert_eq!(out.level(), s.bt.output_level());
    assert_eq!(out.level(), 2);
    assert!((out.scale() / 2f64.powi(40) - 1.0).abs() < 1e-9);
    let got = decrypt(&s, &out);
    let (mean, worst) = precision(&got, &v);
    eprintln!("full slots: precision mean {mean:.1} bits, worst {worst:.1} bits");
    assert!(
        mean > 18.0 && worst > 14.0,
        "mean {mean:.1} worst {worst:.1}"
    );
}

#[test]
fn sparse_slot_bootstrap_keeps_the_message() {
    let s = setup(256, 1);
    let v = values(256, 2048, 2);
    let ct = encrypt_at(&s, &v, 0);
    let out = s.bt.bootstrap(&ct, &s.keys).expect("bootstrap");
    assert_eq!(out.level(), 1);
    let got = decrypt(&s, &out);
    let (mean, worst) = precision(&got, &v);
    eprintln!("256 slots: precision mean {mean:.1} bits, worst {worst:.1} bits");
    assert!(
        mean > 18.0 && worst > 14.0,
        "mean {mean:.1} worst {worst:.1}"
    );
}

#[test]
fn multiply_rescale_bootstrap_rounds_keep_precision() {
    let s = setup(2048, 2);
    let ev = Evaluator::new(&s.ctx);
    let rk = {
        let mut kg =
            KeyGenerator::from_secret_key(&s.ctx, s.keygen.secret_key().clone()).expect("keygen");
        kg.relin_key()
    };
    let scale = 2f64.powi(40);
    let mut want = values(2048, 2048, 3);
    let mut ct = encrypt_at(&s, &want, 0);
    for round in 0..3u64 {
        ct = s.bt.bootstrap(&ct, &s.keys).expect("bootstrap");
        // Multiply by an encryption of random signs (no growth), then bring
        // the scale back to 2^40 with one more level.
        let signs: Vec<f64> = values(2048, 2048, 50 + round)
            .iter()
            .map(|x| x.signum())
            .collect();
        let w = encrypt_at(&s, &signs, ct.level());
        let mut p = ev.mul_relin(&ct, &w, &rk).expect("mul");
        ev.rescale_assign(&mut p).expect("rescale");
        let q = s.ctx.moduli()[p.level()].value() as f64;
        let mut p = ev
            .mul_scalar(&p, 1.0, scale * q / p.scale())
            .expect("scalar");
        ev.rescale_assign(&mut p).expect("rescale");
        assert_eq!(p.level(), 0);
        for (x, sg) in want.iter_mut().zip(&signs) {
            *x *= sg;
        }
        ct = p;
    }
    let out = s.bt.bootstrap(&ct, &s.keys).expect("bootstrap");
    let (mean, worst) = precision(&decrypt(&s, &out), &want);
    eprintln!("after 4 bootstraps and 3 products: mean {mean:.1} bits, worst {worst:.1} bits");
    assert!(
        mean > 17.0 && worst > 13.0,
        "mean {mean:.1} worst {worst:.1}"
    );
}

#[test]
fn keys_round_trip_through_bytes_and_are_checked() {
    let s = setup(256, 1);
    let bytes = s.keys.to_bytes(&s.ctx);
    let back = s.bt.keys_from_bytes(&bytes).expect("read keys");
    assert_eq!(back.bytes(), s.keys.bytes());
    let v = values(256, 2048, 4);
    let out =
        s.bt.bootstrap(&encrypt_at(&s, &v, 0), &back)
            .expect("bootstrap");
    let (mean, _) = precision(&decrypt(&s, &out), &v);
    assert!(mean > 18.0, "{mean}");
    // Truncated, or a byte flipped in a length field: refused with an error.
    assert!(s.bt.keys_from_bytes(&bytes[..bytes.len() - 1]).is_err());
    let mut bad = bytes.clone();
    bad[48] ^= 0x40;
    assert!(s.bt.keys_from_bytes(&bad).is_err());
    // Keys of a bootstrapper with other slots lack rotations this one needs.
    let other = setup(2048, 1);
    let other_bytes = other.keys.to_bytes(&other.ctx);
    let err = s.bt.keys_from_bytes(&other_bytes);
    assert!(err.is_err());
}

#[test]
fn wrong_scale_and_size_are_refused() {
    let s = setup(2048, 1);
    let v = values(2048, 2048, 5);
    let pt = s.encoder.encode(&v, 0, 2f64.powi(35)).expect("encode");
    let mut enc = SymmetricEncryptor::new_with_insecure_test_seed(&s.ctx, s.keygen.secret_key(), 1);
    let ct = enc.encrypt(&pt).expect("encrypt");
    assert!(matches!(
        s.bt.bootstrap(&ct, &s.keys),
        Err(CkksError::InvalidInput(m)) if m.contains("scale")
    ));
    let ev = Evaluator::new(&s.ctx);
    let ct = encrypt_at(&s, &v, 1);
    let sq = ev.mul(&ct, &ct).expect("mul");
    assert!(matches!(
        s.bt.bootstrap(&sq, &s.keys),
        Err(CkksError::CiphertextSize { .. })
    ));
}
