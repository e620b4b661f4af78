//! Serialization round trips and rejection of corrupted, truncated and
//! mismatched data.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use std::sync::Arc;

use hecc_runtime::ckks::serial::HEADER_LEN;
use hecc_runtime::ckks::*;

struct Setup {
    ctx: Arc<Context>,
    other: Arc<Context>,
    kg: KeyGenerator,
    enc: Encoder,
}

fn setup() -> Setup {
    let params = CkksParameters::builder()
        .log_n(12)
        .q0_bits(55)
        .scale_bits(vec![40, 40])
        .special_bits(vec![55, 55])
        .dnum(2)
        .insecure_no_security_check()
        .build()
        .unwrap();
    let other = CkksParameters::builder()
        .log_n(12)
        .q0_bits(55)
        .scale_bits(vec![40, 40])
        .special_bits(vec![55, 55])
        .dnum(3)
        .insecure_no_security_check()
        .build()
        .unwrap();
    let ctx = Context::new(params).unwrap();
    Setup {
        kg: KeyGenerator::new_with_insecure_test_seed(&ctx, 42),
        enc: Encoder::new(&ctx),
        other: Context::new(other).unwrap(),
        ctx,
    }
}

const SCALE: f64 = 1099511627776.0;

fn decrypt(s: &Setup, sk: &SecretKey, ct: &Ciphertext) -> Vec<f64> {
    s.enc
        .decode(&Decryptor::new(&s.ctx, sk).decrypt(ct).unwrap())
        .unwrap()
}

fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
    a.iter().zip(b).all(|(x, y)| (x - y).abs() < tol)
}

#[test]
fn round_trips_of_every_object() {
    let mut s = setup();
    let ctx = s.ctx.clone();
    // parameters
    let pb = ctx.params().to_bytes();
    assert_eq!(&CkksParameters::from_bytes(&pb).unwrap(), ctx.params());
    // secret key
    let sk = s.kg.secret_key().clone();
    let skb = sk.to_bytes(&ctx);
    let sk2 = SecretKey::from_bytes(&ctx, &skb).unwrap();
    assert_eq!(sk2, sk);
    // public key: seeded, so about half the size of (b, a)
    let pk = s.kg.public_key();
    let pkb = pk.to_bytes(&ctx);
    let pk2 = PublicKey::from_bytes(&ctx, &pkb).unwrap();
    assert_eq!(pk2, pk);
    let poly_bytes = (ctx.q_count() + ctx.p_count()) * ctx.n() * 8;
    assert!(
        pkb.len() < poly_bytes + 200,
        "{} vs {}",
        pkb.len(),
        poly_bytes
    );
    // relinearization and Galois keys
    let rk = s.kg.relin_key();
    let rk2 = RelinKey::from_bytes(&ctx, &rk.to_bytes(&ctx)).unwrap();
    assert_eq!(rk2, rk);
    let gk = s.kg.galois_keys(&[1, -2], true);
    let gkb = gk.to_bytes(&ctx);
    let gk2 = GaloisKeys::from_bytes(&ctx, &gkb).unwrap();
    assert_eq!(gk2, gk);
    assert_eq!(gk2.galois_elements().len(), 3);
    // The same keys read from a stream, one polynomial at a time; a stream that ends early
    // or a length beyond the keys is refused.
    let mut r = &gkb[..];
    let gk3 = GaloisKeys::read_from(&ctx, &mut r, gkb.len() as u64).unwrap();
    assert_eq!(gk3, gk);
    assert!(r.is_empty());
    let mut short = &gkb[..gkb.len() - 10];
    assert!(matches!(
        GaloisKeys::read_from(&ctx, &mut short, gkb.len() as u64),
        Err(CkksError::Truncated { .. })
    ));
    let mut longer = gkb.clone();
    longer.extend_from_slice(&[0u8; 8]);
    assert!(GaloisKeys::read_from(&ctx, &mut &longer[..], longer.len() as u64).is_err());
    // plaintext
    let x: Vec<f64> = (0..100).map(|i| i as f64 / 100.0).collect();
    let pt = s.enc.encode(&x, 1, SCALE).unwrap();
    let pt2 = Plaintext::from_bytes(&ctx, &pt.to_bytes(&ctx)).unwrap();
    assert_eq!(pt2, pt);
    // public-key ciphertext (loaded keys still work)
    let mut e = Encryptor::new(&ctx, &pk2).unwrap();
    let ct = e.encrypt(&s.enc.encode(&x, 2, SCALE).unwrap()).unwrap();
    let ctb = ct.to_bytes(&ctx);
    let ct2 = Ciphertext::from_bytes(&ctx, &ctb).unwrap();
    assert_eq!(ct2, ct);
    let ev = Evaluator::new(&ctx);
    let r = ev
        .rotate(
            &ev.rescale(&ev.mul_relin(&ct2, &ct2, &rk2).unwrap())
                .unwrap(),
            1,
            &gk2,
        )
        .unwrap();
    let out = decrypt(&s, &sk2, &r);
    let want: Vec<f64> = (0..99).map(|i| x[i + 1] * x[i + 1]).collect();
    assert!(close(&out[..99], &want, 1e-6));
    // size-3 ciphertext at a lower level
    let m = ev
        .mul(
            &ev.drop_to_level(&ct, 1).unwrap(),
            &ev.drop_to_level(&ct, 1).unwrap(),
        )
        .unwrap();
    let m2 = Ciphertext::from_bytes(&ctx, &m.to_bytes(&ctx)).unwrap();
    assert_eq!(m2, m);
    // symmetric ciphertext: c1 stored as a seed
    let mut se = SymmetricEncryptor::new(&ctx, &sk).unwrap();
    let sct = se.encrypt(&s.enc.encode(&x, 2, SCALE).unwrap()).unwrap();
    let sb = sct.to_bytes(&ctx);
    assert!(
        sb.len() < ctb.len() / 2 + 100,
        "{} vs {}",
        sb.len(),
        ctb.len()
    );
    let sct2 = Ciphertext::from_bytes(&ctx, &sb).unwrap();
    assert!(sct2.is_seeded());
    assert_eq!(sct2, sct);
    assert!(close(&decrypt(&s, &sk, &sct2)[..100], &x, 1e-7));
    // evaluated ciphertexts are no longer seeded
    assert!(!ev.add(&sct, &sct).unwrap().is_seeded());
}

#[test]
fn rejects_corrupted_truncated_and_mismatched_data() {
    let mut s = setup();
    let ctx = s.ctx.clone();
    let pk = s.kg.public_key();
    let mut e = Encryptor::new_with_insecure_test_seed(&ctx, &pk, 1);
    let ct = e.encrypt(&s.enc.encode(&[0.5], 2, SCALE).unwrap()).unwrap();
    let good = ct.to_bytes(&ctx);

    // bad magic
    let mut b = good.clone();
    b[0] ^= 0xff;
    assert_eq!(Ciphertext::from_bytes(&ctx, &b), Err(CkksError::BadMagic));
    // unsupported version
    let mut b = good.clone();
    b[8] = 99;
    assert!(matches!(
        Ciphertext::from_bytes(&ctx, &b),
        Err(CkksError::UnsupportedVersion { found: 99, .. })
    ));
    // wrong kind
    assert!(matches!(
        PublicKey::from_bytes(&ctx, &good),
        Err(CkksError::WrongKind { .. })
    ));
    let e_kind = Plaintext::from_bytes(&ctx, &good).unwrap_err().to_string();
    assert!(
        e_kind.contains("Plaintext") && e_kind.contains("Ciphertext"),
        "{e_kind}"
    );
    // other parameters: fingerprint mismatch
    assert!(matches!(
        Ciphertext::from_bytes(&s.other, &good),
        Err(CkksError::FingerprintMismatch { .. })
    ));
    assert!(matches!(
        PublicKey::from_bytes(&s.other, &pk.to_bytes(&ctx)),
        Err(CkksError::FingerprintMismatch { .. })
    ));
    // truncation anywhere
    for cut in [
        0,
        5,
        HEADER_LEN - 1,
        HEADER_LEN + 3,
        good.len() / 2,
        good.len() - 1,
    ] {
        let r = Ciphertext::from_bytes(&ctx, &good[..cut]);
        assert!(
            matches!(r, Err(CkksError::Truncated { .. })),
            "cut {cut}: {r:?}"
        );
    }
    // trailing garbage
    let mut b = good.clone();
    b.push(0);
    assert!(matches!(
        Ciphertext::from_bytes(&ctx, &b),
        Err(CkksError::Malformed(_))
    ));
    // a limb value not below its modulus: overwrite the first word of c0
    let first_word = HEADER_LEN + 8 + 2 + 9;
    let mut b = good.clone();
    b[first_word..first_word + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    match Ciphertext::from_bytes(&ctx, &b) {
        Err(CkksError::LimbOutOfRange {
            limb: 0,
            value,
            modulus,
        }) => {
            assert_eq!(value, u64::MAX);
            assert_eq!(modulus, ctx.params().q()[0]);
        }
        other => panic!("expected LimbOutOfRange, got {other:?}"),
    }
    // the value equal to the modulus of the last limb of c0 is also refused
    let n = ctx.n();
    let last = first_word + 2 * n * 8;
    let mut b = good.clone();
    b[last..last + 8].copy_from_slice(&ctx.params().q()[2].to_le_bytes());
    assert!(matches!(
        Ciphertext::from_bytes(&ctx, &b),
        Err(CkksError::LimbOutOfRange { limb: 2, .. })
    ));
    // a shape that does not fit the parameters (too many limbs)
    let mut b = good.clone();
    let ql_off = HEADER_LEN + 8 + 2 + 1;
    b[ql_off..ql_off + 4].copy_from_slice(&9u32.to_le_bytes());
    assert!(matches!(
        Ciphertext::from_bytes(&ctx, &b),
        Err(CkksError::Malformed(_))
    ));
    // a corrupted scale
    let mut b = good.clone();
    b[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&f64::NAN.to_bits().to_le_bytes());
    assert!(matches!(
        Ciphertext::from_bytes(&ctx, &b),
        Err(CkksError::Malformed(_))
    ));
    // parameters: tampered prime no longer matches the fingerprint (or is refused)
    let mut pb = ctx.params().to_bytes();
    let prime_off = HEADER_LEN + 16 + 4 + 4;
    pb[prime_off] ^= 0x02;
    assert!(CkksParameters::from_bytes(&pb).is_err());
    // parameters: header fingerprint tampered
    let mut pb = ctx.params().to_bytes();
    pb[HEADER_LEN - 1] ^= 1;
    assert!(matches!(
        CkksParameters::from_bytes(&pb),
        Err(CkksError::FingerprintMismatch { .. })
    ));
    // Galois keys and relinearization keys: truncated and mismatched
    let gk = s.kg.galois_keys(&[1], false);
    let gkb = gk.to_bytes(&ctx);
    assert!(matches!(
        GaloisKeys::from_bytes(&ctx, &gkb[..gkb.len() - 10]),
        Err(CkksError::Truncated { .. })
    ));
    let rk = s.kg.relin_key();
    assert!(RelinKey::from_bytes(&s.other, &rk.to_bytes(&ctx)).is_err());
    assert!(SecretKey::from_bytes(&ctx, &[]).is_err());
}
