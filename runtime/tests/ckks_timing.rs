//! Rough single-operation timings (ignored by default; the official numbers
//! come from the criterion benches). Run with
//! `RAYON_NUM_THREADS=1 cargo test --release -p hecc-runtime --test ckks_timing -- --ignored --nocapture`.

use std::time::Instant;

use hecc_runtime::ckks::*;

fn time<T>(reps: u32, mut f: impl FnMut() -> T) -> f64 {
    let _ = f();
    let t = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(f());
    }
    t.elapsed().as_secs_f64() * 1e6 / reps as f64
}

#[test]
#[ignore]
fn print_timings() {
    for (log_n, mids, special) in [
        (13u32, 2usize, vec![60u32]),
        (14, 7, vec![60]),
        (15, 16, vec![60, 60, 60]),
    ] {
        let params = CkksParameters::builder()
            .log_n(log_n)
            .q0_bits(60)
            .scale_bits(vec![40; mids])
            .special_bits(special.clone())
            .build()
            .unwrap();
        let ctx = Context::new(params).unwrap();
        let reps = if log_n == 15 { 5 } else { 20 };
        let mut kg = KeyGenerator::new(&ctx).unwrap();
        let pk = kg.public_key();
        let rk = kg.relin_key();
        let gk = kg.galois_keys(&[1], false);
        let enc = Encoder::new(&ctx);
        let mut e = Encryptor::new(&ctx, &pk).unwrap();
        let dec = Decryptor::new(&ctx, kg.secret_key());
        let ev = Evaluator::new(&ctx);
        let scale = 2f64.powi(40);
        let x: Vec<f64> = (0..ctx.n() / 2).map(|i| (i as f64).sin()).collect();
        let top = ctx.max_level();
        let pt = enc.encode(&x, top, scale).unwrap();
        let ct = e.encrypt(&pt).unwrap();
        let ct2 = ev.mul(&ct, &ct).unwrap();
        let ctr = ev.relinearize(&ct2, &rk).unwrap();
        let mut limb: Vec<u64> = (0..ctx.n() as u64).collect();
        println!(
            "N=2^{log_n}, {} limbs, {} special, dnum {}",
            top + 1,
            special.len(),
            ctx.params().dnum()
        );
        println!(
            "  ntt forward (1 limb) {:>10.1} us",
            time(reps * 20, || ctx.ntt_forward(0, &mut limb).unwrap())
        );
        println!(
            "  encode               {:>10.1} us",
            time(reps, || enc.encode(&x, top, scale).unwrap())
        );
        println!(
            "  encrypt (pk)         {:>10.1} us",
            time(reps, || e.encrypt(&pt).unwrap())
        );
        println!(
            "  decrypt              {:>10.1} us",
            time(reps, || dec.decrypt(&ct).unwrap())
        );
        println!(
            "  decode               {:>10.1} us",
            time(reps, || enc.decode(&pt).unwrap())
        );
        println!(
            "  add                  {:>10.1} us",
            time(reps, || ev.add(&ct, &ct).unwrap())
        );
        println!(
            "  mul_plain            {:>10.1} us",
            time(reps, || ev.mul_plain(&ct, &pt).unwrap())
        );
        println!(
            "  mul (ct x ct)        {:>10.1} us",
            time(reps, || ev.mul(&ct, &ct).unwrap())
        );
        println!(
            "  relinearize          {:>10.1} us",
            time(reps, || ev.relinearize(&ct2, &rk).unwrap())
        );
        println!(
            "  rescale              {:>10.1} us",
            time(reps, || ev.rescale(&ctr).unwrap())
        );
        println!(
            "  rotate 1             {:>10.1} us",
            time(reps, || ev.rotate(&ct, 1, &gk).unwrap())
        );
        let cts = vec![ct.clone(); 16];
        let pairs: Vec<(&Ciphertext, f64)> = cts.iter().map(|c| (c, 0.25)).collect();
        println!(
            "  mul_scalar_acc (16)  {:>10.1} us",
            time(reps, || ev.mul_scalar_accumulate(&pairs, scale).unwrap())
        );
    }
}

/// NTT only, on the calling thread (no rayon): for `perf stat`-style CPU-time checks.
#[test]
#[ignore]
fn ntt_loop() {
    let reps: u32 = std::env::var("NTT_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    for log_n in [13u32, 15] {
        let params = CkksParameters::builder()
            .log_n(log_n)
            .q0_bits(60)
            .scale_bits(vec![40])
            .special_bits(vec![60])
            .build()
            .unwrap();
        let ctx = Context::new(params).unwrap();
        let mut limb: Vec<u64> = (0..ctx.n() as u64).collect();
        let t = Instant::now();
        for _ in 0..reps {
            ctx.ntt_forward(1, &mut limb).unwrap();
        }
        let fwd = t.elapsed().as_secs_f64() * 1e6 / reps as f64;
        let t = Instant::now();
        for _ in 0..reps {
            ctx.ntt_inverse(1, &mut limb).unwrap();
        }
        let inv = t.elapsed().as_secs_f64() * 1e6 / reps as f64;
        println!("N=2^{log_n}: forward {fwd:.1} us, inverse {inv:.1} us (wall clock)");
    }
}

/// Relinearization and rotation at N = 2^15 only (for profiling).
#[test]
#[ignore]
fn keyswitch_loop() {
    let params = CkksParameters::builder()
        .log_n(15)
        .q0_bits(60)
        .scale_bits(vec![40; 16])
        .special_bits(vec![60, 60, 60])
        .build()
        .unwrap();
    let ctx = Context::new(params).unwrap();
    let mut kg = KeyGenerator::new(&ctx).unwrap();
    let pk = kg.public_key();
    let rk = kg.relin_key();
    let gk = kg.galois_keys(&[1], false);
    let enc = Encoder::new(&ctx);
    let mut e = Encryptor::new(&ctx, &pk).unwrap();
    let ev = Evaluator::new(&ctx);
    let x: Vec<f64> = (0..ctx.n() / 2).map(|i| (i as f64).sin()).collect();
    let ct = e
        .encrypt(&enc.encode(&x, ctx.max_level(), 2f64.powi(40)).unwrap())
        .unwrap();
    let ct2 = ev.mul(&ct, &ct).unwrap();
    println!(
        "relinearize {:>10.1} us",
        time(5, || ev.relinearize(&ct2, &rk).unwrap())
    );
    println!(
        "rotate      {:>10.1} us",
        time(5, || ev.rotate(&ct, 1, &gk).unwrap())
    );
    let mut limb: Vec<u64> = (0..ctx.n() as u64).collect();
    println!(
        "ntt         {:>10.1} us",
        time(100, || ctx.ntt_forward(0, &mut limb).unwrap())
    );
}
