//! `hecc calibrate`: measures the backend's primitive costs on this machine and writes the cost
//! table the reports use for time estimates (the passes read it as data; they do not depend on
//! the runtime). Costs are stored per limb: a primitive at level `l` is assumed to cost
//! `(l + 1)` times the per-limb figure, which holds for every primitive up to the key-switching
//! constant.

use hecc_passes::report::{CostEntry, CostTable};
use hecc_runtime::ckks::{CkksParameters, Context, Encoder, Encryptor, Evaluator, KeyGenerator};
use miette::{miette, IntoDiagnostic, Result};
use std::time::Instant;

/// Ring degrees with a 128-bit-secure chain used for measuring: (log_n, scale primes, special primes).
fn chain(log_n: u32) -> Option<(usize, usize)> {
    match log_n {
        13 => Some((2, 1)),
        14 => Some((7, 1)),
        15 => Some((16, 3)),
        16 => Some((30, 3)),
        _ => None,
    }
}

fn median_us(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Measures every primitive the report uses at each ring degree in `log_ns`, `reps` times
/// (median), and calls `progress` with a line per measurement.
pub fn calibrate(log_ns: &[u32], reps: usize, mut progress: impl FnMut(&str)) -> Result<CostTable> {
    let mut entries = Vec::new();
    for &log_n in log_ns {
        let (scale_primes, special) = chain(log_n)
            .ok_or_else(|| miette!("calibration supports N = 2^13 .. 2^16, not 2^{log_n}"))?;
        let params = CkksParameters::builder()
            .log_n(log_n)
            .q0_bits(60)
            .scale_bits(vec![40; scale_primes])
            .special_bits(vec![60; special])
            .build()
            .into_diagnostic()?;
        let limbs = (scale_primes + 1) as f64;
        let ctx = Context::new(params).into_diagnostic()?;
        let mut keygen = KeyGenerator::new(&ctx).into_diagnostic()?;
        let pk = keygen.public_key();
        let rk = keygen.relin_key();
        let gk = keygen.galois_keys(&[1], false);
        let encoder = Encoder::new(&ctx);
        let mut enc = Encryptor::new(&ctx, &pk).into_diagnostic()?;
        let eval = Evaluator::new(&ctx);
        let top = ctx.max_level();
        let scale = 2f64.powi(40);
        let x: Vec<f64> = (0..(1usize << (log_n - 1)))
            .map(|i| ((i % 17) as f64 - 8.0) / 16.0)
            .collect();
        let pt = encoder.encode(&x, top, scale).into_diagnostic()?;
        let a = enc.encrypt(&pt).into_diagnostic()?;
        let b = enc.encrypt(&pt).into_diagnostic()?;
        let prod = eval.mul(&a, &b).into_diagnostic()?;
        let relin = eval.relinearize(&prod, &rk).into_diagnostic()?;
        let terms: Vec<(&hecc_runtime::ckks::Ciphertext, f64)> = (0..32)
            .map(|i| (if i % 2 == 0 { &a } else { &b }, 0.01 * i as f64))
            .collect();
        let mut record = |op: &str, us: f64, per: f64| {
            progress(&format!(
                "N=2^{log_n} {op:<11} {us:>12.1} us  ({:.2} us per limb)",
                us / per
            ));
            entries.push(CostEntry {
                log_n,
                op: op.into(),
                us_per_limb: us / per,
            });
        };
        let e = |r: std::result::Result<
            hecc_runtime::ckks::Ciphertext,
            hecc_runtime::ckks::CkksError,
        >| r.map(|_| ()).into_diagnostic();
        record("add", median_us(reps, || e(eval.add(&a, &b)))?, limbs);
        record("mul", median_us(reps, || e(eval.mul(&a, &b)))?, limbs);
        record(
            "mul_plain",
            median_us(reps, || e(eval.mul_plain(&a, &pt)))?,
            limbs,
        );
        record(
            "scalar_mul",
            median_us(reps, || e(eval.mul_scalar(&a, 0.37, scale)))?,
            limbs,
        );
        record(
            "mac_term",
            median_us(reps, || e(eval.mul_scalar_accumulate(&terms, scale)))?,
            limbs * terms.len() as f64,
        );
        record(
            "relin",
            median_us(reps, || e(eval.relinearize(&prod, &rk)))?,
            limbs,
        );
        record(
            "rescale",
            median_us(reps, || e(eval.rescale(&relin)))?,
            limbs,
        );
        record(
            "rotate",
            median_us(reps, || e(eval.rotate(&a, 1, &gk)))?,
            limbs,
        );
    }
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into());
    Ok(CostTable {
        source: format!("hecc calibrate, {} reps, RAYON_NUM_THREADS={threads}", reps),
        entries,
    })
}
