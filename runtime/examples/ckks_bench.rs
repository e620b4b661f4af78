//! hecc's side of the peer comparison (`benches/peers/run.sh`): times every
//! operation of `benches/common/mod.rs` at the three parameter sets and
//! prints medians in µs, as a table or (with `--json`) as the JSON document
//! the peer scripts print (`{"library", "version", "configs": {id: {"params",
//! "ops"}}}`).
//!
//! ```text
//! cargo run --release -p hecc-runtime --example ckks_bench -- [--json]
//!     [--logn 13,14,15] [--budget SECONDS] [--ops add,rotate]
//!     [--outside-pool]         # call the backend from main(), not from a rayon worker
//!     [--loop ID/OP COUNT]     # run one op COUNT times (for perf record)
//! ```
//! `HECC_BENCH_LOGN` and `HECC_BENCH_BUDGET` are read as defaults for
//! `--logn` and `--budget` (run.sh sets them). Timing: one warm-up call, then
//! repetitions until at least 5 (3 for the multi-rotation and
//! multiply-accumulate ops) are done and the budget (default 1 s) is spent,
//! at most 200; the median is reported (and the fastest sample, as
//! `ops_min`). Set `RAYON_NUM_THREADS=1` for
//! single-threaded figures. By default everything runs inside the rayon pool
//! (`rayon::scope`), as an executor running on the pool would; with
//! `--outside-pool` each parallel call is handed from the main thread to the
//! pool, which adds a thread wake-up per call.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use std::process::ExitCode;
use std::time::Instant;

#[path = "../benches/common/mod.rs"]
mod common;

use common::{selected_configs, BenchConfig, Fixture, OPS};

struct Args {
    json: bool,
    outside_pool: bool,
    budget_s: f64,
    ops: Option<Vec<String>>,
    looping: Option<(String, usize)>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        json: false,
        outside_pool: false,
        budget_s: std::env::var("HECC_BENCH_BUDGET")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1.0),
        ops: None,
        looping: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--json" => args.json = true,
            "--outside-pool" => args.outside_pool = true,
            "--logn" => std::env::set_var("HECC_BENCH_LOGN", value("--logn")?),
            "--budget" => {
                args.budget_s = value("--budget")?
                    .parse()
                    .map_err(|e| format!("--budget: {e}"))?
            }
            "--ops" => {
                args.ops = Some(value("--ops")?.split(',').map(str::to_string).collect())
            }
            "--loop" => {
                let id = value("--loop")?;
                let count = value("--loop")?
                    .parse()
                    .map_err(|e| format!("--loop count: {e}"))?;
                args.looping = Some((id, count));
            }
            "-h" | "--help" => {
                return Err("usage: ckks_bench [--json] [--outside-pool] [--logn 13,14,15] [--budget S] [--ops a,b] [--loop N=2^15/L=17/OP COUNT]".into())
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

/// Median and minimum wall time of `f` in µs (see the module doc for the
/// repetition rule).
fn time_us(
    budget_s: f64,
    min_reps: usize,
    mut f: impl FnMut() -> Result<(), hecc_runtime::ckks::CkksError>,
) -> Result<(f64, f64), hecc_runtime::ckks::CkksError> {
    f()?; // warm-up
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < 200 {
        let t0 = Instant::now();
        f()?;
        samples.push(t0.elapsed().as_secs_f64() * 1e6);
        if samples.len() >= min_reps && start.elapsed().as_secs_f64() > budget_s {
            break;
        }
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let n = samples.len();
    let median = if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    };
    Ok((median, samples[0]))
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_list(v: &[u32]) -> String {
    let items: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    format!("[{}]", items.join(", "))
}

/// The SIMD / bit-manipulation features this binary was compiled with
/// (`-C target-cpu=native` turns them on; the portable default has none),
/// plus the kernels picked at run time.
fn target_features(fx: &Fixture) -> String {
    let compiled = compiled_features();
    if fx.ctx.uses_simd_ntt() {
        format!("{compiled}, runtime AVX-512F/DQ NTT")
    } else {
        compiled
    }
}

fn compiled_features() -> String {
    let feats = [
        ("bmi2", cfg!(target_feature = "bmi2")),
        ("avx2", cfg!(target_feature = "avx2")),
        ("avx512f", cfg!(target_feature = "avx512f")),
        ("avx512ifma", cfg!(target_feature = "avx512ifma")),
    ];
    let on: Vec<&str> = feats.iter().filter(|(_, b)| *b).map(|(n, _)| *n).collect();
    if on.is_empty() {
        "baseline x86-64".to_string()
    } else {
        on.join("+")
    }
}

fn params_json(fx: &Fixture, cfg: &BenchConfig) -> String {
    let p = fx.ctx.params();
    format!(
        "{{\"N\": {}, \"q_bits\": {}, \"special_bits\": {}, \"scale_bits\": {}, \"log_qp\": {:.1}, \"key_switching\": {}, \"security\": \"128-bit classical (checked)\", \"threads\": {}, \"build\": {}}}",
        p.n(),
        json_list(&cfg.q_bits()),
        json_list(&cfg.special_bits),
        common::SCALE_BITS,
        p.log_qp(),
        json_str(&format!("hybrid, dnum={} digits of {} primes", p.dnum(), p.digit_size())),
        rayon::current_num_threads(),
        json_str(&target_features(fx))
    )
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.outside_pool {
        run(args)
    } else {
        // Run on a rayon worker thread, so that the backend's parallel
        // iterators execute inline (with RAYON_NUM_THREADS=1) instead of
        // handing every call over to the pool's thread and waiting for it.
        rayon::scope(|_| run(args))
    }
}

fn run(args: Args) -> ExitCode {
    if let Some((id, count)) = &args.looping {
        return run_loop(id, *count);
    }
    let mut configs_json = Vec::new();
    let mut failed = false;
    for cfg in selected_configs() {
        eprintln!("[hecc] {} ...", cfg.id());
        let t0 = Instant::now();
        let mut fx = match Fixture::new(&cfg) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("[hecc] {} failed: {e}", cfg.id());
                configs_json.push(format!(
                    "{}: {{\"error\": {}}}",
                    json_str(&cfg.id()),
                    json_str(&e.to_string())
                ));
                failed = true;
                continue;
            }
        };
        eprintln!(
            "[hecc]   keys and inputs in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        let mut ops_json = Vec::new();
        let mut mins_json = Vec::new();
        if !args.json {
            println!("{} ({} thread(s))", cfg.id(), rayon::current_num_threads());
        }
        for &op in OPS {
            if let Some(sel) = &args.ops {
                if !sel.iter().any(|s| s == op) {
                    continue;
                }
            }
            let min_reps = if op.starts_with("mac") || op == "rotate_hoisted8" {
                3
            } else {
                5
            };
            match time_us(args.budget_s, min_reps, || fx.run(op)) {
                Ok((us, min)) => {
                    if !args.json {
                        println!("  {op:<20} {us:>14.1} µs  (min {min:.1})");
                    }
                    ops_json.push(format!("{}: {:.3}", json_str(op), us));
                    mins_json.push(format!("{}: {:.3}", json_str(op), min));
                }
                Err(e) => {
                    eprintln!("[hecc]   {op} failed: {e}");
                    ops_json.push(format!("{}: null", json_str(op)));
                }
            }
        }
        configs_json.push(format!(
            "  {}: {{\"params\": {}, \"ops\": {{{}}}, \"ops_min\": {{{}}}}}",
            json_str(&cfg.id()),
            params_json(&fx, &cfg),
            ops_json.join(", "),
            mins_json.join(", ")
        ));
    }
    if args.json {
        println!(
            "{{\"library\": \"hecc\", \"version\": {}, \"configs\": {{\n{}\n}}}}",
            json_str(env!("CARGO_PKG_VERSION")),
            configs_json.join(",\n")
        );
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `--loop N=2^15/L=17/relinearize 50`: runs one operation repeatedly, for profilers.
fn run_loop(id: &str, count: usize) -> ExitCode {
    let Some((cfg_id, op)) = id.rsplit_once('/') else {
        eprintln!("--loop expects CONFIG/OP, e.g. N=2^15/L=17/relinearize");
        return ExitCode::from(2);
    };
    let Some(cfg) = common::all_configs().into_iter().find(|c| c.id() == cfg_id) else {
        eprintln!("unknown config {cfg_id}");
        return ExitCode::from(2);
    };
    let t_setup = Instant::now();
    let mut fx = match Fixture::new(&cfg) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "{cfg_id}: keys and inputs in {:.2} s (use `perf record -D` to skip them)",
        t_setup.elapsed().as_secs_f64()
    );
    let cpu0 = thread_cpu_ns();
    let t0 = Instant::now();
    for _ in 0..count {
        if let Err(e) = fx.run(op) {
            eprintln!("{op}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let wall = t0.elapsed().as_secs_f64() * 1e6 / count.max(1) as f64;
    match (cpu0, thread_cpu_ns()) {
        (Some(a), Some(b)) => eprintln!(
            "{id}: {count} runs, mean {wall:.1} µs wall, {:.1} µs on-CPU (this thread)",
            (b - a) as f64 / 1e3 / count.max(1) as f64
        ),
        _ => eprintln!("{id}: {count} runs, mean {wall:.1} µs"),
    }
    ExitCode::SUCCESS
}

/// Time the calling thread has spent on a CPU, in ns (Linux
/// `/proc/thread-self/schedstat`), which is less disturbed than wall time
/// when other jobs share the cores; `None` elsewhere.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
