//! Parameter generation, the security table, and the parameter known-answer test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use hecc_runtime::ckks::*;

fn builder(log_n: u32, q0: u32, mids: Vec<u32>, special: Vec<u32>) -> CkksParametersBuilder {
    CkksParameters::builder()
        .log_n(log_n)
        .q0_bits(q0)
        .scale_bits(mids)
        .special_bits(special)
}

#[test]
fn security_table_accepts_and_refuses() {
    // (log_n, bits of QP that fit at 128-bit, limit)
    let table = [(12u32, 109u32), (13, 218), (14, 438), (15, 881), (16, 1772)];
    for (log_n, limit) in table {
        assert_eq!(SecurityLevel::Classical128.max_log_qp(log_n), Some(limit));
        // accept: 60 + 40*k + 60 as large as possible below the limit (primes are < 2^bits)
        let k = (limit.saturating_sub(120) / 40) as usize;
        let ok = builder(log_n, 60, vec![40; k], vec![60]).build();
        if log_n == 12 {
            // 60 + 60 = 120 > 109: even the smallest such chain is refused at N = 2^12
            assert!(ok.is_err());
            let small = builder(12, 50, vec![], vec![50]).build().unwrap();
            assert!(small.log_qp() <= 109.0);
        } else {
            let p = ok.unwrap();
            assert!(p.log_qp() <= limit as f64, "N=2^{log_n}");
        }
        // refuse: one more 40-bit prime (if still above the limit) or a bigger chain
        let too_big = builder(log_n, 60, vec![40; k + 2], vec![60]).build();
        match too_big {
            Err(CkksError::Insecure {
                limit: l,
                log_n: ln,
                ref level,
                log_qp,
            }) => {
                assert_eq!((l, ln), (limit, log_n));
                assert!(log_qp > limit as f64);
                assert!(level.contains("128"));
                let msg = too_big.unwrap_err().to_string();
                assert!(msg.contains(&format!("limit of {limit} bits")), "{msg}");
            }
            other => panic!("N=2^{log_n}: expected Insecure, got {other:?}"),
        }
    }
    assert_eq!(SecurityLevel::Classical192.max_log_qp(13), Some(152));
    assert_eq!(SecurityLevel::Classical256.max_log_qp(16), Some(956));
    assert_eq!(SecurityLevel::Classical192.max_log_qp(15), Some(611));
    assert_eq!(SecurityLevel::Classical256.max_log_qp(14), Some(237));
    assert_eq!(SecurityLevel::Classical128.max_log_qp(11), None);
    // 192-bit refuses what 128-bit accepts
    let b = builder(13, 60, vec![40, 40], vec![60]);
    assert!(b.clone().build().is_ok());
    let e = b
        .clone()
        .security_level(SecurityLevel::Classical192)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("152"), "{e}");
    // the explicit opt-out accepts it
    let p = b
        .security_level(SecurityLevel::Classical256)
        .insecure_no_security_check()
        .build()
        .unwrap();
    assert_eq!(p.security_level(), None);
}

#[test]
fn invalid_parameters_are_errors() {
    assert!(builder(11, 60, vec![40], vec![60]).build().is_err());
    assert!(builder(17, 60, vec![40], vec![60]).build().is_err());
    assert!(builder(13, 49, vec![40], vec![60]).build().is_err());
    assert!(builder(13, 61, vec![40], vec![60]).build().is_err());
    assert!(builder(13, 60, vec![19], vec![60]).build().is_err());
    assert!(builder(13, 60, vec![40], vec![]).build().is_err());
    assert!(builder(13, 60, vec![40], vec![62]).build().is_err());
    assert!(builder(13, 60, vec![40], vec![60]).dnum(3).build().is_err());
    assert!(builder(13, 60, vec![40], vec![60]).dnum(0).build().is_err());
    assert!(builder(13, 60, vec![40], vec![60])
        .secret_distribution(SecretDistribution::FixedHammingWeight(0))
        .build()
        .is_err());
    // explicit primes: not 1 mod 2N, repeated, not prime
    let good = builder(13, 60, vec![40], vec![60]).build().unwrap();
    let q = good.q().to_vec();
    let p = good.p().to_vec();
    let sd = SecretDistribution::UniformTernary;
    assert!(CkksParameters::from_primes(13, q.clone(), p.clone(), 2, sd, None).is_ok());
    assert!(CkksParameters::from_primes(13, vec![q[0], q[0]], p.clone(), 2, sd, None).is_err());
    assert!(
        CkksParameters::from_primes(13, vec![q[0], 1_000_000_007], p.clone(), 2, sd, None).is_err()
    );
    assert!(CkksParameters::from_primes(13, vec![q[0], q[1] + 2 * 8192], p, 2, sd, None).is_err());
}

#[test]
fn primes_are_ntt_friendly_distinct_and_deterministic() {
    let a = builder(15, 60, vec![40; 16], vec![60, 60, 60])
        .build()
        .unwrap();
    let b = builder(15, 60, vec![40; 16], vec![60, 60, 60])
        .build()
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(a.dnum(), 6); // ceil(17 / 3)
    assert_eq!(a.max_level(), 16);
    let all: Vec<u64> = a.q().iter().chain(a.p()).copied().collect();
    for (i, &x) in all.iter().enumerate() {
        assert_eq!(x % (1 << 16), 1);
        assert!(!all[..i].contains(&x));
    }
    assert_eq!(64 - a.q()[0].leading_zeros(), 60);
    assert!(a.q()[1..].iter().all(|&x| 64 - x.leading_zeros() == 40));
    assert!(a.log_qp() <= 881.0);
}

#[test]
fn parameter_encoding_known_answer() {
    // Primes cross-checked with an independent Python Miller-Rabin scan.
    // Pins the prime generator and the canonical encoding: any change here
    // breaks every stored key and ciphertext, so it must be deliberate (and
    // come with a format version bump).
    let p = builder(13, 60, vec![40, 40], vec![60]).build().unwrap();
    assert_eq!(
        p.q(),
        &[1152921504606830593, 1099511480321, 1099510890497][..]
    );
    assert_eq!(p.p(), &[1152921504606748673][..]);
    assert_eq!(p.dnum(), 3);
    let hex: String = p.fingerprint().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, KAT_FINGERPRINT);
    assert_eq!(
        p.canonical_encoding().len(),
        16 + 4 + 4 + 3 * 8 + 4 + 8 + 4 + 1 + 4
    );
}

/// SHA-256 of the canonical encoding, computed independently (Python
/// `hashlib` over the documented little-endian layout).
const KAT_FINGERPRINT: &str = "e8f9627b0af21312e76f107fe0661bbfdd95b975a7e6c95c26c3b3f57c52ddca";
