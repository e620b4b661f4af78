//! Evaluator operations checked against the same arithmetic on plaintext
//! slot vectors, with measured bits of precision.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use std::sync::Arc;

use hecc_runtime::ckks::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

struct Fixture {
    ctx: Arc<Context>,
    enc: Encoder,
    pk_enc: Encryptor,
    dec: Decryptor,
    eval: Evaluator,
    rk: RelinKey,
    gk: GaloisKeys,
    keygen: KeyGenerator,
}

const SCALE: f64 = 1099511627776.0; // 2^40

fn fixture(log_n: u32, scale_primes: usize, special: Vec<u32>, dnum: Option<usize>) -> Fixture {
    let mut b = CkksParameters::builder()
        .log_n(log_n)
        .q0_bits(60)
        .scale_bits(vec![40; scale_primes])
        .special_bits(special)
        .insecure_no_security_check();
    if let Some(d) = dnum {
        b = b.dnum(d);
    }
    let ctx = Context::new(b.build().unwrap()).unwrap();
    let mut keygen = KeyGenerator::new_with_insecure_test_seed(&ctx, 7);
    let pk = keygen.public_key();
    let rk = keygen.relin_key();
    let gk = keygen.galois_keys(&[1, 2, 5, -1, -3, 100], true);
    Fixture {
        enc: Encoder::new(&ctx),
        pk_enc: Encryptor::new_with_insecure_test_seed(&ctx, &pk, 11),
        dec: Decryptor::new(&ctx, keygen.secret_key()),
        eval: Evaluator::new(&ctx),
        rk,
        gk,
        keygen,
        ctx,
    }
}

fn random_vec(rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

/// -log2 of the largest absolute error.
fn bits(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let err = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f64, f64::max);
    -err.max(1e-300).log2()
}

impl Fixture {
    fn encrypt(&mut self, v: &[f64], level: usize) -> Ciphertext {
        let pt = self.enc.encode(v, level, SCALE).unwrap();
        self.pk_enc.encrypt(&pt).unwrap()
    }
    fn decrypt(&self, ct: &Ciphertext) -> Vec<f64> {
        self.enc.decode(&self.dec.decrypt(ct).unwrap()).unwrap()
    }
    fn check(&self, name: &str, ct: &Ciphertext, want: &[f64], min_bits: f64) {
        let b = bits(&self.decrypt(ct), want);
        eprintln!(
            "{name}: {b:.1} bits (level {}, log2 scale {:.3})",
            ct.level(),
            ct.scale().log2()
        );
        assert!(b >= min_bits, "{name}: {b:.1} bits < {min_bits}");
    }
}

#[test]
fn encode_decode_roundtrip_complex_and_real() {
    let f = fixture(12, 2, vec![60], None);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let slots = f.ctx.n() / 2;
    let z: Vec<Complex64> = (0..slots)
        .map(|_| Complex64::new(rng.gen_range(-1.0..1.0), rng.gen_range(-1.0..1.0)))
        .collect();
    for level in 0..=f.ctx.max_level() {
        let pt = f.enc.encode_complex(&z, level, SCALE).unwrap();
        assert_eq!(pt.level(), level);
        let back = f.enc.decode_complex(&pt).unwrap();
        let err = back
            .iter()
            .zip(&z)
            .map(|(a, b)| (*a - *b).norm())
            .fold(0f64, f64::max);
        eprintln!("encode/decode level {level}: {:.1} bits", -err.log2());
        assert!(err < 2f64.powi(-30));
    }
    // fewer values than slots are zero-padded; large values beyond 2^64 decode exactly
    let big = vec![3.0e7, -2.5e7, 1.0];
    let pt = f.enc.encode(&big, 2, 2f64.powi(50)).unwrap();
    let back = f.enc.decode(&pt).unwrap();
    assert!((back[0] - 3.0e7).abs() < 1e-6 && (back[1] + 2.5e7).abs() < 1e-6);
    assert!(back[3..].iter().all(|x| x.abs() < 1e-6));
    // scalar encoding (no FFT)
    let pt = f.enc.encode_scalar(-0.75, 1, SCALE).unwrap();
    assert!(f
        .enc
        .decode(&pt)
        .unwrap()
        .iter()
        .all(|x| (x + 0.75).abs() < 1e-9));
    assert!(f.enc.encode(&vec![0.0; slots + 1], 0, SCALE).is_err());
    assert!(f.enc.encode(&[f64::NAN], 0, SCALE).is_err());
    assert!(f.enc.encode(&[1.0], 9, SCALE).is_err());
    // a message that would wrap around Q at level 0 (60-bit q0, scale 2^40) is refused
    assert!(f.enc.encode(&vec![1.0e6; slots], 0, SCALE).is_err());
    assert!(f.enc.encode_scalar(1.0e6, 0, SCALE).is_err());
    assert!(f.enc.encode(&vec![1.0e5; slots], 0, SCALE).is_ok());
}

#[test]
fn encrypt_decrypt_public_and_symmetric() {
    let mut f = fixture(12, 2, vec![60], None);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let x = random_vec(&mut rng, f.ctx.n() / 2);
    for level in 0..=f.ctx.max_level() {
        let ct = f.encrypt(&x, level);
        assert_eq!(ct.level(), level);
        assert_eq!(ct.scale(), SCALE);
        f.check("public-key encrypt", &ct, &x, 25.0);
    }
    let mut sym = SymmetricEncryptor::new_with_insecure_test_seed(&f.ctx, f.keygen.secret_key(), 3);
    let ct = sym.encrypt(&f.enc.encode(&x, 2, SCALE).unwrap()).unwrap();
    assert!(ct.is_seeded());
    f.check("symmetric encrypt", &ct, &x, 25.0);
    // OS-seeded encryptors work too
    let pk = f.keygen.public_key();
    let mut e = Encryptor::new(&f.ctx, &pk).unwrap();
    let ct = e.encrypt(&f.enc.encode(&x, 1, SCALE).unwrap()).unwrap();
    f.check("fresh public key", &ct, &x, 25.0);
}

#[test]
fn every_operation_matches_plaintext_arithmetic() {
    let mut f = fixture(13, 3, vec![60], None);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let slots = f.ctx.n() / 2;
    let x = random_vec(&mut rng, slots);
    let y = random_vec(&mut rng, slots);
    let top = f.ctx.max_level();
    let cx = f.encrypt(&x, top);
    let cy = f.encrypt(&y, top);
    let ev = f.eval.clone();
    let zip = |g: &dyn Fn(f64, f64) -> f64| -> Vec<f64> {
        x.iter().zip(&y).map(|(&a, &b)| g(a, b)).collect()
    };

    f.check("add", &ev.add(&cx, &cy).unwrap(), &zip(&|a, b| a + b), 25.0);
    f.check("sub", &ev.sub(&cx, &cy).unwrap(), &zip(&|a, b| a - b), 25.0);
    f.check("negate", &ev.negate(&cx).unwrap(), &zip(&|a, _| -a), 25.0);
    let py = f.enc.encode(&y, top, SCALE).unwrap();
    f.check(
        "add_plain",
        &ev.add_plain(&cx, &py).unwrap(),
        &zip(&|a, b| a + b),
        25.0,
    );
    f.check(
        "sub_plain",
        &ev.sub_plain(&cx, &py).unwrap(),
        &zip(&|a, b| a - b),
        25.0,
    );
    f.check(
        "add_scalar",
        &ev.add_scalar(&cx, 0.375).unwrap(),
        &zip(&|a, _| a + 0.375),
        25.0,
    );
    f.check(
        "sub_scalar",
        &ev.sub_scalar(&cx, 1.5).unwrap(),
        &zip(&|a, _| a - 1.5),
        25.0,
    );

    let m = ev.mul(&cx, &cy).unwrap();
    assert_eq!(m.size(), 3);
    f.check("mul (size 3)", &m, &zip(&|a, b| a * b), 25.0);
    let r = ev.relinearize(&m, &f.rk).unwrap();
    assert_eq!(r.size(), 2);
    let rs = ev.rescale(&r).unwrap();
    assert_eq!(rs.level(), top - 1);
    let q_top = f.ctx.params().q()[top] as f64;
    assert!((rs.scale() - SCALE * SCALE / q_top).abs() < 1e-6 * rs.scale());
    f.check("mul+relin+rescale", &rs, &zip(&|a, b| a * b), 25.0);

    let sq = ev
        .rescale(&ev.relinearize(&ev.square(&cx).unwrap(), &f.rk).unwrap())
        .unwrap();
    f.check("square+relin+rescale", &sq, &zip(&|a, _| a * a), 25.0);

    let mp = ev.rescale(&ev.mul_plain(&cx, &py).unwrap()).unwrap();
    f.check("mul_plain+rescale", &mp, &zip(&|a, b| a * b), 25.0);

    let ms = ev
        .rescale(&ev.mul_scalar(&cx, -0.3, SCALE).unwrap())
        .unwrap();
    f.check("mul_scalar+rescale", &ms, &zip(&|a, _| -0.3 * a), 25.0);

    let mi = ev.mul_integer(&cx, -7).unwrap();
    assert_eq!(mi.scale(), cx.scale());
    assert_eq!(mi.level(), cx.level());
    f.check("mul_integer", &mi, &zip(&|a, _| -7.0 * a), 22.0);

    let d = ev.drop_to_level(&cx, 1).unwrap();
    assert_eq!((d.level(), d.scale()), (1, cx.scale()));
    f.check("drop_to_level", &d, &x, 25.0);

    // depth 3: (xy)^2 then * scalar, rescaling after each product
    let acc = ev.rescale(&ev.mul_relin(&rs, &rs, &f.rk).unwrap()).unwrap();
    f.check("(xy)^2", &acc, &zip(&|a, b| (a * b) * (a * b)), 20.0);
    let p = ev
        .rescale(&ev.mul_scalar(&acc, 0.5, SCALE).unwrap())
        .unwrap();
    assert_eq!(p.level(), 0);
    f.check(
        "(xy)^2/2 at level 0",
        &p,
        &zip(&|a, b| 0.5 * (a * b) * (a * b)),
        18.0,
    );
    assert!(ev.rescale(&p).is_err());
}

#[test]
fn rotations_conjugation_and_hoisting() {
    let mut f = fixture(12, 2, vec![60], None);
    let slots = f.ctx.n() / 2;
    let x: Vec<f64> = (0..slots)
        .map(|i| (i as f64 / slots as f64) - 0.5)
        .collect();
    let cx = f.encrypt(&x, f.ctx.max_level());
    let steps = [1i64, 2, 5, -1, -3, 100];
    let rot = |k: i64| -> Vec<f64> {
        (0..slots)
            .map(|i| x[((i as i64 + k).rem_euclid(slots as i64)) as usize])
            .collect()
    };
    let mut plain = Vec::new();
    for &k in &steps {
        let r = f.eval.rotate(&cx, k, &f.gk).unwrap();
        f.check(&format!("rotate {k}"), &r, &rot(k), 25.0);
        plain.push(f.decrypt(&r));
    }
    let hoisted = f.eval.rotate_hoisted(&cx, &steps, &f.gk).unwrap();
    assert_eq!(hoisted.len(), steps.len());
    for ((h, p), &k) in hoisted.iter().zip(&plain).zip(&steps) {
        // Same decomposition and key: hoisting must not change a single bit.
        assert_eq!(h, &f.eval.rotate(&cx, k, &f.gk).unwrap());
        let d = f.decrypt(h);
        assert!(bits(&d, p) >= 40.0);
        f.check(&format!("hoisted rotate {k}"), h, &rot(k), 25.0);
    }
    // A sum of rotations with one ModDown: the sum of the rotations, and at
    // least as precise as rotating each term and adding.
    let mut sum = f.eval.rotation_sum(cx.level(), cx.scale());
    let mut eager: Option<Ciphertext> = None;
    let mut want = vec![0.0; slots];
    for &k in steps.iter().chain(&[0i64]) {
        f.eval.add_rotation(&mut sum, &cx, k, &f.gk).unwrap();
        let r = f.eval.rotate(&cx, k, &f.gk).unwrap();
        match eager.as_mut() {
            None => eager = Some(r),
            Some(e) => f.eval.add_assign(e, &r).unwrap(),
        }
        for (w, v) in want.iter_mut().zip(rot(k)) {
            *w += v;
        }
    }
    let lazy = f.eval.finish_rotation_sum(sum);
    let eager = eager.unwrap();
    assert_eq!((lazy.level(), lazy.scale()), (eager.level(), eager.scale()));
    let (bl, be) = (
        bits(&f.decrypt(&lazy), &want),
        bits(&f.decrypt(&eager), &want),
    );
    eprintln!("sum of 7 rotations: one ModDown {bl:.1} bits, one per rotation {be:.1} bits");
    assert!(bl >= 25.0 && bl >= be - 1.0, "{bl:.1} vs {be:.1} bits");
    // its terms are checked like a rotation's
    let mut sum = f.eval.rotation_sum(cx.level(), cx.scale());
    assert!(matches!(
        f.eval.add_rotation(&mut sum, &cx, 7, &f.gk),
        Err(CkksError::MissingGaloisKey { step: 7, .. })
    ));
    let low = f.eval.drop_to_level(&cx, cx.level() - 1).unwrap();
    assert!(matches!(
        f.eval.add_rotation(&mut sum, &low, 1, &f.gk),
        Err(CkksError::LevelMismatch { .. })
    ));
    // composed rotations agree with a single one (a different key path)
    let r23 = f
        .eval
        .rotate(&f.eval.rotate(&cx, 2, &f.gk).unwrap(), -1, &f.gk)
        .unwrap();
    let b = bits(&f.decrypt(&r23), &plain[0]);
    eprintln!("rotate(rotate(x, 2), -1) vs rotate(x, 1): {b:.1} bits");
    assert!(b >= 25.0);
    // rotation by 0 and by a multiple of the slot count is the identity
    let r0 = f.eval.rotate(&cx, slots as i64, &f.gk).unwrap();
    f.check("rotate N/2", &r0, &x, 25.0);
    // missing key is an error naming the step
    match f.eval.rotate(&cx, 7, &f.gk) {
        Err(CkksError::MissingGaloisKey { step: 7, .. }) => {}
        other => panic!("expected MissingGaloisKey, got {other:?}"),
    }
    // conjugation on complex slots
    let z: Vec<Complex64> = (0..slots)
        .map(|i| Complex64::new(x[i], 0.25 - x[i]))
        .collect();
    let pt = f.enc.encode_complex(&z, 1, SCALE).unwrap();
    let cz = f.pk_enc.encrypt(&pt).unwrap();
    let cc = f.eval.conjugate(&cz, &f.gk).unwrap();
    let got = f.enc.decode_complex(&f.dec.decrypt(&cc).unwrap()).unwrap();
    let err = got
        .iter()
        .zip(&z)
        .map(|(a, b)| (*a - b.conj()).norm())
        .fold(0f64, f64::max);
    eprintln!("conjugate: {:.1} bits", -err.log2());
    assert!(err < 2f64.powi(-25));
    // rotation after a multiplication at a lower level
    let sq = f
        .eval
        .rescale(&f.eval.mul_relin(&cx, &cx, &f.rk).unwrap())
        .unwrap();
    let r = f.eval.rotate(&sq, -3, &f.gk).unwrap();
    let want: Vec<f64> = rot(-3).iter().map(|v| v * v).collect();
    f.check("rotate -3 at level 1", &r, &want, 25.0);
}

#[test]
fn multiply_accumulate_matches_sum_of_products() {
    let mut f = fixture(12, 2, vec![60], None);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let slots = f.ctx.n() / 2;
    let terms = 150; // exceeds the 63-term lazy window
    let xs: Vec<Vec<f64>> = (0..terms).map(|_| random_vec(&mut rng, slots)).collect();
    let ws: Vec<f64> = (0..terms).map(|_| rng.gen_range(-0.1..0.1)).collect();
    let top = f.ctx.max_level();
    let cts: Vec<Ciphertext> = xs.iter().map(|x| f.encrypt(x, top)).collect();
    let pairs: Vec<(&Ciphertext, f64)> = cts.iter().zip(&ws).map(|(c, &w)| (c, w)).collect();
    let acc = f.eval.mul_scalar_accumulate(&pairs, SCALE).unwrap();
    assert_eq!(acc.scale(), SCALE * SCALE);
    let acc = f.eval.rescale(&acc).unwrap();
    let want: Vec<f64> = (0..slots)
        .map(|i| xs.iter().zip(&ws).map(|(x, w)| x[i] * w).sum())
        .collect();
    f.check("mul_scalar_accumulate (150 terms)", &acc, &want, 22.0);
    // reference: the same via mul_scalar + add
    let mut r = f.eval.mul_scalar(&cts[0], ws[0], SCALE).unwrap();
    for (c, &w) in cts.iter().zip(&ws).skip(1) {
        f.eval
            .add_assign(&mut r, &f.eval.mul_scalar(c, w, SCALE).unwrap())
            .unwrap();
    }
    let r = f.eval.rescale(&r).unwrap();
    assert!(bits(&f.decrypt(&r), &f.decrypt(&acc)) > 30.0);
    assert!(f.eval.mul_scalar_accumulate(&[], SCALE).is_err());
    // objects of another parameter set are refused, not a panic
    let g = fixture(12, 1, vec![60], None);
    let foreign = {
        let mut g = g;
        g.encrypt(&[0.5], 1)
    };
    assert!(matches!(
        f.eval.add(&cts[0], &foreign),
        Err(CkksError::LevelMismatch { .. })
    ));
    let h = fixture(13, 2, vec![60], None);
    let mut h = h;
    let alien = h.encrypt(&[0.5], 2);
    assert!(matches!(
        f.eval.add(&cts[0], &alien),
        Err(CkksError::InvalidInput(_))
    ));
    assert!(f.eval.negate(&alien).is_err());
    assert!(f.eval.mul_integer(&alien, 3).is_err());
    assert!(f.dec.decrypt(&alien).is_err());
    assert!(f
        .eval
        .relinearize(&f.eval.mul(&cts[0], &cts[0]).unwrap(), &h.rk)
        .is_err());
    assert!(f.eval.rotate(&cts[0], 1, &h.gk).is_err());
}

#[test]
fn mismatched_levels_and_scales_are_errors() {
    let mut f = fixture(12, 2, vec![60], None);
    let x = vec![0.5; 4];
    let a = f.encrypt(&x, 2);
    let b = f.encrypt(&x, 1);
    assert!(matches!(
        f.eval.add(&a, &b),
        Err(CkksError::LevelMismatch { left: 2, right: 1 })
    ));
    assert!(matches!(
        f.eval.mul(&a, &b),
        Err(CkksError::LevelMismatch { .. })
    ));
    let pt = f.enc.encode(&x, 2, SCALE * 2.0).unwrap();
    assert!(matches!(
        f.eval.add_plain(&a, &pt),
        Err(CkksError::ScaleMismatch { .. })
    ));
    let sq = f.eval.mul(&a, &a).unwrap();
    assert!(matches!(
        f.eval.add(&sq, &a),
        Err(CkksError::ScaleMismatch { .. })
    ));
    assert!(matches!(
        f.eval.rotate(&sq, 1, &f.gk),
        Err(CkksError::CiphertextSize { .. })
    ));
    assert!(matches!(
        f.eval.relinearize(&a, &f.rk),
        Err(CkksError::CiphertextSize { .. })
    ));
    // a rescaled product (scale D^2/q) is accepted against D within the tolerance
    let r = f
        .eval
        .rescale(&f.eval.mul_relin(&a, &a, &f.rk).unwrap())
        .unwrap();
    let c = f.encrypt(&x, 1);
    let s = f.eval.add(&r, &c).unwrap();
    let mut want = vec![0.0; f.ctx.n() / 2];
    want[..4].fill(0.75);
    f.check("add rescaled + fresh", &s, &want, 12.0);
    // ... but not with a zero tolerance
    let strict = Evaluator::new(&f.ctx).with_scale_tolerance(0.0);
    assert!(strict.add(&r, &c).is_err());
    assert!(matches!(
        f.eval.drop_to_level(&b, 2),
        Err(CkksError::LevelUnavailable { .. })
    ));
}

#[test]
fn key_switching_variants_dnum_and_special_primes() {
    // (special primes, dnum): one digit per limb, one digit overall with many special primes,
    // and a partial last digit.
    for (special, dnum) in [
        (vec![60], Some(5)),
        (vec![60, 60, 60, 60], Some(1)),
        (vec![60, 50], Some(3)),
        (vec![61, 61], None),
    ] {
        let mut f = fixture(12, 4, special.clone(), dnum);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let x = random_vec(&mut rng, 64);
        let cx = f.encrypt(&x, f.ctx.max_level());
        let sq = f
            .eval
            .rescale(&f.eval.mul_relin(&cx, &cx, &f.rk).unwrap())
            .unwrap();
        let want: Vec<f64> = x.iter().map(|v| v * v).collect();
        let got = &f.decrypt(&sq)[..64];
        let b = bits(got, &want);
        eprintln!("special {special:?} dnum {dnum:?}: mul {b:.1} bits");
        assert!(b >= 25.0);
        let r = f.eval.rotate(&sq, 1, &f.gk).unwrap();
        let got = f.decrypt(&r);
        let b = bits(&got[..63], &want[1..]);
        eprintln!("special {special:?} dnum {dnum:?}: rotate {b:.1} bits");
        assert!(b >= 25.0);
        // the same at a low level (partial digits)
        let low = f.eval.drop_to_level(&cx, 1).unwrap();
        let r = f
            .eval
            .rescale(&f.eval.mul_relin(&low, &low, &f.rk).unwrap())
            .unwrap();
        assert!(bits(&f.decrypt(&r)[..64], &want) >= 25.0);
    }
}

#[test]
fn keys_made_for_lower_levels_switch_up_to_their_level_only() {
    // 6 ciphertext primes, 3 digits of 2 (one partial-digit level in between): keys capped at
    // every level rotate correctly at and below it, refuse above it, survive serialization,
    // and hold fewer limbs and digits.
    let mut f = fixture(12, 5, vec![60, 60], Some(3));
    let top = f.ctx.max_level();
    let slots = f.ctx.n() / 2;
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let x = random_vec(&mut rng, slots);
    let want: Vec<f64> = (0..slots).map(|i| x[(i + 3) % slots]).collect();
    let cx = f.encrypt(&x, top);
    let full = f.gk.memory_bytes() / f.gk.galois_elements().len();
    for cap in 0..=top {
        let gk = f
            .keygen
            .galois_keys_to_levels(&[(3, cap), (3, 0)], Some(cap));
        let g = f.ctx.galois_element(3);
        assert_eq!(gk.top_level(g), Some(cap));
        assert_eq!(
            gk.galois_elements().len(),
            2,
            "one rotation key and conjugation"
        );
        let bytes = gk.memory_bytes() / 2;
        assert!(
            cap == top || bytes < full,
            "cap {cap}: {bytes} vs {full} bytes"
        );
        let bytes = gk.to_bytes(&f.ctx);
        let back = GaloisKeys::from_bytes(&f.ctx, &bytes).unwrap();
        assert_eq!(back, gk);
        // Written in pieces (key files are streamed): the same bytes, of the announced length.
        let mut pieces = Vec::new();
        gk.write_pieces(&f.ctx, &mut |b: &[u8]| -> std::result::Result<(), ()> {
            pieces.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        assert!(pieces == bytes, "cap {cap}: pieces differ from to_bytes");
        assert_eq!(gk.serialized_len(&f.ctx), bytes.len() as u64);
        for level in 0..=top {
            let c = f.eval.drop_to_level(&cx, level).unwrap();
            match f.eval.rotate(&c, 3, &back) {
                Ok(r) => {
                    assert!(level <= cap, "cap {cap} rotated at level {level}");
                    f.check(&format!("cap {cap} level {level}"), &r, &want, 25.0);
                    // the hoisted path and the lazy sum read the same limbs
                    let h = f.eval.rotate_hoisted(&c, &[3], &back).unwrap();
                    assert_eq!(h[0], r);
                    let mut sum = f.eval.rotation_sum(level, c.scale());
                    f.eval.add_rotation(&mut sum, &c, 3, &back).unwrap();
                    f.check("lazy sum", &f.eval.finish_rotation_sum(sum), &want, 25.0);
                }
                Err(CkksError::KeyLevel {
                    step: 3,
                    key_level,
                    level: l,
                }) => assert!(level > cap && key_level == cap && l == level),
                Err(e) => panic!("cap {cap} level {level}: {e}"),
            }
            if level > cap {
                assert!(matches!(
                    f.eval.conjugate(&c, &back),
                    Err(CkksError::KeyLevel { step: 0, .. })
                ));
            }
        }
    }
    // A key with its digit count edited to disagree with its level is refused on reading.
    let gk = f.keygen.galois_keys_to_levels(&[(3, 1)], None);
    let mut bytes = gk.to_bytes(&f.ctx);
    let g = f.ctx.galois_element(3);
    let at = bytes.windows(8).position(|w| w == g.to_le_bytes()).unwrap() + 8;
    bytes[at..at + 4].copy_from_slice(&2u32.to_le_bytes());
    assert!(GaloisKeys::from_bytes(&f.ctx, &bytes).is_err());
}

#[test]
fn full_keys_written_with_empty_trailing_digits_still_read() {
    // 6 ciphertext primes and dnum 4: digits of 2 primes, so 3 digits cover the chain. Keys
    // written before keys could stop below the top carried a 4th digit covering no prime;
    // such a file still reads (the empty digit dropped); a key below the top with an extra
    // digit does not.
    let mut f = fixture(12, 5, vec![60, 60], Some(4));
    let n = f.ctx.n();
    for (cap, ok) in [(f.ctx.max_level(), true), (3, false)] {
        let gk = f.keygen.galois_keys_to_levels(&[(1, cap)], None);
        let mut bytes = gk.to_bytes(&f.ctx);
        let g = f.ctx.galois_element(1);
        let at = bytes.windows(8).position(|w| w == g.to_le_bytes()).unwrap() + 8;
        let need = (cap as u32 + 1).div_ceil(2);
        assert_eq!(bytes[at..at + 4], need.to_le_bytes()[..], "cap {cap}");
        bytes[at..at + 4].copy_from_slice(&(need + 1).to_le_bytes());
        // The one key is the tail of the file: repeat its last digit (polynomial and seed).
        let digit = 1 + 4 + 4 + (cap + 1 + 2) * n * 8 + 32;
        let last = bytes[bytes.len() - digit..].to_vec();
        bytes.extend_from_slice(&last);
        match GaloisKeys::from_bytes(&f.ctx, &bytes) {
            Ok(back) => assert!(ok && back == gk, "cap {cap}"),
            Err(e) => assert!(!ok, "cap {cap}: {e}"),
        }
    }
}

#[test]
fn too_small_special_modulus_is_refused() {
    let r = CkksParameters::builder()
        .log_n(12)
        .q0_bits(60)
        .scale_bits(vec![40; 4])
        .special_bits(vec![60, 50])
        .dnum(2)
        .insecure_no_security_check()
        .build();
    match r {
        Err(CkksError::InvalidParameters(msg)) => assert!(msg.contains("special modulus"), "{msg}"),
        other => panic!("expected refusal, got {other:?}"),
    }
}

#[test]
fn fixed_hamming_weight_secret() {
    let params = CkksParameters::builder()
        .log_n(12)
        .q0_bits(55)
        .scale_bits(vec![40])
        .special_bits(vec![55])
        .secret_distribution(SecretDistribution::FixedHammingWeight(64))
        .insecure_no_security_check()
        .build()
        .unwrap();
    let ctx = Context::new(params).unwrap();
    let mut kg = KeyGenerator::new(&ctx).unwrap();
    let rk = kg.relin_key();
    let enc = Encoder::new(&ctx);
    let mut e = SymmetricEncryptor::new(&ctx, kg.secret_key()).unwrap();
    let dec = Decryptor::new(&ctx, kg.secret_key());
    let ev = Evaluator::new(&ctx);
    let x = vec![0.5, -0.25, 0.125];
    let c = e.encrypt(&enc.encode(&x, 1, SCALE).unwrap()).unwrap();
    let c = ev.rescale(&ev.mul_relin(&c, &c, &rk).unwrap()).unwrap();
    let out = enc.decode(&dec.decrypt(&c).unwrap()).unwrap();
    for (o, v) in out.iter().zip(&x) {
        assert!((o - v * v).abs() < 1e-7);
    }
}

#[test]
fn real_128_bit_parameter_set() {
    // N = 2^14, 60 + 6*40 + 60-bit special: log2(QP) ~ 360 <= 438.
    let params = CkksParameters::builder()
        .log_n(14)
        .q0_bits(60)
        .scale_bits(vec![40; 6])
        .special_bits(vec![60])
        .build()
        .unwrap();
    assert_eq!(params.security_level(), Some(SecurityLevel::Classical128));
    let ctx = Context::new(params).unwrap();
    let mut kg = KeyGenerator::new(&ctx).unwrap();
    let pk = kg.public_key();
    let rk = kg.relin_key();
    let gk = kg.galois_keys(&[3], false);
    let enc = Encoder::new(&ctx);
    let mut e = Encryptor::new(&ctx, &pk).unwrap();
    let dec = Decryptor::new(&ctx, kg.secret_key());
    let ev = Evaluator::new(&ctx);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let x = random_vec(&mut rng, ctx.n() / 2);
    let mut c = e
        .encrypt(&enc.encode(&x, ctx.max_level(), SCALE).unwrap())
        .unwrap();
    let mut want = x.clone();
    for _ in 0..3 {
        c = ev
            .rescale(&ev.square(&c).and_then(|s| ev.relinearize(&s, &rk)).unwrap())
            .unwrap();
        want.iter_mut().for_each(|v| *v *= *v);
    }
    c = ev.rotate(&c, 3, &gk).unwrap();
    let n2 = want.len();
    let want: Vec<f64> = (0..n2).map(|i| want[(i + 3) % n2]).collect();
    let got = enc.decode(&dec.decrypt(&c).unwrap()).unwrap();
    let b = bits(&got, &want);
    eprintln!(
        "128-bit set, x^8 then rotate: {b:.1} bits at level {}",
        c.level()
    );
    assert!(b >= 20.0);
}
