//! Rough single-operation timings in process CPU time (ignored by default; the official numbers
//! come from the criterion benches). Run with
//! `RAYON_NUM_THREADS=1 cargo test --release -p hecc-runtime --test ckks_timing -- --ignored --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use hecc_runtime::ckks::*;

/// Process CPU time in seconds (utime + stime from /proc/self/stat; 10 ms
/// ticks), so timings stay meaningful on a loaded machine.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Microseconds of CPU time per call, repeating until at least 0.3 s of CPU time.
fn time<T>(mut f: impl FnMut() -> T) -> f64 {
    let _ = f();
    let start = cpu_seconds();
    let mut reps = 0u32;
    while cpu_seconds() - start < 0.3 {
        std::hint::black_box(f());
        reps += 1;
    }
    (cpu_seconds() - start) * 1e6 / reps as f64
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
            time(|| ctx.ntt_forward(0, &mut limb).unwrap())
        );
        println!(
            "  encode               {:>10.1} us",
            time(|| enc.encode(&x, top, scale).unwrap())
        );
        println!(
            "  encrypt (pk)         {:>10.1} us",
            time(|| e.encrypt(&pt).unwrap())
        );
        println!(
            "  decrypt              {:>10.1} us",
            time(|| dec.decrypt(&ct).unwrap())
        );
        println!(
            "  decode               {:>10.1} us",
            time(|| enc.decode(&pt).unwrap())
        );
        println!(
            "  add                  {:>10.1} us",
            time(|| ev.add(&ct, &ct).unwrap())
        );
        println!(
            "  mul_plain            {:>10.1} us",
            time(|| ev.mul_plain(&ct, &pt).unwrap())
        );
        println!(
            "  mul (ct x ct)        {:>10.1} us",
            time(|| ev.mul(&ct, &ct).unwrap())
        );
        println!(
            "  relinearize          {:>10.1} us",
            time(|| ev.relinearize(&ct2, &rk).unwrap())
        );
        println!(
            "  rescale              {:>10.1} us",
            time(|| ev.rescale(&ctr).unwrap())
        );
        println!(
            "  rotate 1             {:>10.1} us",
            time(|| ev.rotate(&ct, 1, &gk).unwrap())
        );
        let cts = vec![ct.clone(); 16];
        let pairs: Vec<(&Ciphertext, f64)> = cts.iter().map(|c| (c, 0.25)).collect();
        println!(
            "  mul_scalar_acc (16)  {:>10.1} us",
            time(|| ev.mul_scalar_accumulate(&pairs, scale).unwrap())
        );
    }
}

/// NTT only, on the calling thread (no rayon): for `perf stat`-style CPU-time checks.
#[test]
#[ignore]
fn ntt_loop() {
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
        let fwd = time(|| ctx.ntt_forward(1, &mut limb).unwrap());
        let inv = time(|| ctx.ntt_inverse(1, &mut limb).unwrap());
        println!("N=2^{log_n}: forward {fwd:.1} us, inverse {inv:.1} us (CPU time)");
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
        time(|| ev.relinearize(&ct2, &rk).unwrap())
    );
    println!(
        "rotate      {:>10.1} us",
        time(|| ev.rotate(&ct, 1, &gk).unwrap())
    );
    let mut limb: Vec<u64> = (0..ctx.n() as u64).collect();
    println!(
        "ntt         {:>10.1} us",
        time(|| ctx.ntt_forward(0, &mut limb).unwrap())
    );
}
