//! Times one CKKS bootstrap and measures its precision; prints one JSON line.
//!
//! `cargo run --release -p hecc-runtime --example bootstrap_bench -- [--log-n 16]
//! [--slots N/2] [--reps 1] [--chain 0] [--network-levels 10] [--insecure]`
//!
//! Threads come from `RAYON_NUM_THREADS`. Inputs are uniform in [-1, 1]
//! (fixed seed), encrypted at level 0 with scale 2^40; precision is
//! `-log2` of the mean and of the largest absolute error over all slots.
//! `--chain K` also runs K rounds of (multiply by an encryption of random
//! signs, rescale, bootstrap) and reports the precision after the last one.
//! Without `--insecure` the parameters pass the 128-bit check (N = 2^16).
//! `--offset C` centres the inputs at C (a large constant component is the
//! hard case for the modular reduction). Tuning flags: `--ratio-bits B --cts L --stc L --degree D --double-angle R
//! --k K --no-compact` (see `BootstrapConfig`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use std::time::Instant;

use hecc_runtime::ckks::*;

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn values(n: usize, period: usize, seed: u64) -> Vec<f64> {
    let mut s = seed;
    let base: Vec<f64> = (0..period)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect();
    (0..n).map(|i| base[i % period]).collect()
}

fn precision(got: &[f64], want: &[f64]) -> (f64, f64) {
    let errs: Vec<f64> = got.iter().zip(want).map(|(a, b)| (a - b).abs()).collect();
    let mean = errs.iter().sum::<f64>() / errs.len() as f64;
    let max = errs.iter().copied().fold(0f64, f64::max);
    (-mean.log2(), -max.log2())
}

fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let log_n: u32 = arg(&args, "--log-n", 16);
    let slots: usize = arg(&args, "--slots", 1usize << (log_n - 1));
    let reps: usize = arg(&args, "--reps", 1).max(1);
    let chain: usize = arg(&args, "--chain", 0);
    let network: usize = arg(&args, "--network-levels", 10);
    let secure = !args.iter().any(|a| a == "--insecure");
    let threads = rayon::current_num_threads();
    let offset: f64 = arg(&args, "--offset", 0.0);
    hecc_runtime::exec::retain_freed_memory();

    let mut cfg = BootstrapConfig::new(slots);
    cfg.message_ratio_bits = arg(&args, "--ratio-bits", cfg.message_ratio_bits);
    cfg.cts_levels = arg(&args, "--cts", cfg.cts_levels);
    cfg.stc_levels = arg(&args, "--stc", cfg.stc_levels);
    cfg.degree = arg(&args, "--degree", cfg.degree);
    cfg.double_angle = arg(&args, "--double-angle", cfg.double_angle);
    cfg.k_bound = arg(&args, "--k", cfg.k_bound);
    cfg.compact_matrices = !args.iter().any(|a| a == "--no-compact");
    let params = bootstrap_parameters(log_n, network, 40, &cfg, secure)?;
    let log_qp = params.log_qp();
    let ctx = Context::new(params)?;
    let t = Instant::now();
    let bt = Bootstrapper::new(&ctx, cfg)?;
    let setup_s = t.elapsed().as_secs_f64();
    eprintln!(
        "N=2^{log_n}, {slots} slots, log2(QP) {log_qp:.1}, {} levels, setup {setup_s:.1} s",
        ctx.max_level()
    );
    let t = Instant::now();
    let mut keygen = KeyGenerator::new(&ctx)?;
    let keys = bt.generate_keys(&mut keygen)?;
    let keygen_s = t.elapsed().as_secs_f64();
    eprintln!(
        "keys: {} Galois keys, {:.2} GB in memory, {keygen_s:.1} s",
        keys.galois_key_count(),
        keys.bytes() as f64 / 1e9
    );
    let encoder = Encoder::new(&ctx);
    let dec = Decryptor::new(&ctx, keygen.secret_key());
    let mut enc = SymmetricEncryptor::new(&ctx, keygen.secret_key())?;
    let scale = 2f64.powi(40);
    // Uniform in [-1, 1], or in [offset - (1 - |offset|), offset + ...] with `--offset`.
    let v: Vec<f64> = values(ctx.n() / 2, slots, 1)
        .into_iter()
        .map(|x| offset + x * (1.0 - offset.abs()))
        .collect();
    let ct = enc.encrypt(&encoder.encode(&v, 0, scale)?)?;
    let mut times = Vec::new();
    let mut out = ct.clone();
    let mut phases = BootstrapTimings::default();
    for i in 0..reps {
        let t = Instant::now();
        let (o, ph) = bt.bootstrap_timed(&ct, &keys)?;
        out = o;
        phases = ph;
        times.push(t.elapsed().as_secs_f64());
        eprintln!("bootstrap {}/{reps}: {:.2} s ({phases:?})", i + 1, times[i]);
    }
    let got = encoder.decode(&dec.decrypt(&out)?)?;
    let (mean, worst) = precision(&got, &v);
    eprintln!("precision: mean {mean:.1} bits, worst {worst:.1} bits");

    let mut chain_prec = (f64::NAN, f64::NAN);
    if chain > 0 {
        let ev = Evaluator::new(&ctx);
        let rk = keygen.relin_key();
        let mut want = v.clone();
        let mut cur = out.clone();
        for round in 0..chain {
            let signs: Vec<f64> = values(ctx.n() / 2, slots, 100 + round as u64)
                .iter()
                .map(|x| if *x < 0.0 { -1.0 } else { 1.0 })
                .collect();
            let w = enc.encrypt(&encoder.encode(&signs, cur.level(), scale)?)?;
            let mut p = ev.mul_relin(&cur, &w, &rk)?;
            ev.rescale_assign(&mut p)?;
            // Back to the input scale: multiply by one at the ratio, rescale.
            let l = p.level();
            let q = ctx.moduli()[l].value() as f64;
            let mut p = ev.mul_scalar(&p, 1.0, scale * q / p.scale())?;
            ev.rescale_assign(&mut p)?;
            for (x, s) in want.iter_mut().zip(&signs) {
                *x *= s;
            }
            cur = bt.bootstrap(&p, &keys)?;
            let got = encoder.decode(&dec.decrypt(&cur)?)?;
            chain_prec = precision(&got, &want);
            eprintln!(
                "chain round {}/{chain}: mean {:.1} bits, worst {:.1} bits",
                round + 1,
                chain_prec.0,
                chain_prec.1
            );
        }
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let h = sorted.len() / 2;
    let median = if sorted.len() % 2 == 1 {
        sorted[h]
    } else {
        (sorted[h - 1] + sorted[h]) / 2.0
    };
    let cost = bt.cost();
    println!(
        "{{\"library\":\"hecc\",\"version\":\"{}\",\"log_n\":{log_n},\"slots\":{slots},\
         \"threads\":{threads},\"offset\":{offset},\"boot_s\":{median:.3},\"boot_s_all\":{times:?},\
         \"keygen_s\":{keygen_s:.3},\"setup_s\":{setup_s:.3},\"prec_mean_bits\":{mean:.2},\
         \"prec_worst_bits\":{worst:.2},\"levels_left\":{},\"key_bytes\":{},\
         \"matrix_bytes\":{},\"galois_keys\":{},\"peak_rss_bytes\":{},\"secure\":{secure},\
         \"log_qp\":{log_qp:.1},\"chain\":{chain},\"chain_prec_mean_bits\":{},\
         \"chain_prec_worst_bits\":{},\"key_switches\":{},\"hoisted_rotations\":{},\
         \"phases_s\":{{\"mod_raise\":{:.3},\"sub_sum\":{:.3},\"cts\":{:.3},\"eval_mod\":{:.3},\"stc\":{:.3}}},\
         \"notes\":\"h=32 sparse-secret encapsulation, K={}, degree {}, {} double angles, CtS/StC levels {}/{}, message ratio 2^{}\"}}",
        env!("CARGO_PKG_VERSION"),
        bt.output_level(),
        keys.bytes(),
        bt.matrix_bytes(),
        keys.galois_key_count(),
        peak_rss(),
        if chain > 0 { format!("{:.2}", chain_prec.0) } else { "null".into() },
        if chain > 0 { format!("{:.2}", chain_prec.1) } else { "null".into() },
        cost.key_switches,
        cost.hoisted_rotations,
        phases.mod_raise,
        phases.sub_sum,
        phases.coeffs_to_slots,
        phases.eval_mod,
        phases.slots_to_coeffs,
        bt.config().k_bound,
        bt.config().degree,
        bt.config().double_angle,
        bt.config().cts_levels,
        bt.config().stc_levels,
        bt.config().message_ratio_bits,
    );
    Ok(())
}
