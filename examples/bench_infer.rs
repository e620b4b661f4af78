//! Benchmark of encrypted inference: amortized time per image and peak memory per reference
//! model, layout and batch size, at the default 128-bit parameters.
//!
//! `cargo run --release --example bench_infer -- [--models cryptonets,lenet5]
//! [--layouts batch,channel] [--batches 1,64,1024,max] [--insecure]`
//!
//! Each configuration runs in its own child process so that its peak resident memory (VmHWM)
//! is its own. A configuration compiles the model for the layout and batch size (`max` = as
//! many images as the layout packs: N/2 in the batch layout), generates keys, encrypts
//! pseudo-random images in the input's range with the secret key, runs the plan and decrypts;
//! it reports the run time (the server step) divided by the batch, the encryption time, the
//! whole configuration's time and the process's peak memory. A layout that packs fewer
//! images than asked (the channel layout packs a few per ciphertext) compiles for as many as
//! it can: the `images` column is what ran. The parent prints one `RESULT`
//! line per configuration as it finishes, then a Markdown table of all of them, with the
//! machine's load average before and after.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use hecc::compile::{compile, CompileOptions};
use hecc::run::{
    decrypt_outputs, encrypt_images, generate_keys, run_inputs, ClientEncryptor, Images,
    RunOptions, Session,
};
use hecc_passes::params::Security;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

fn arg(args: &[String], key: &str) -> Option<String> {
    args.iter()
        .position(|a| a == key)
        .and_then(|i| args.get(i + 1).cloned())
}

fn one(model: &str, layout: &str, batch: &str, insecure: bool) -> Result<String, String> {
    let t_all = Instant::now();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(format!("{model}.yaml"));
    let mut opts = CompileOptions {
        layout: layout.parse()?,
        ..Default::default()
    };
    if insecure {
        opts.security = Security::InsecureNone;
    }
    opts.batch = match batch {
        "max" => None,
        b => Some(b.parse().map_err(|_| format!("bad batch {b}"))?),
    };
    let t = Instant::now();
    let c = compile(&path, &opts).map_err(|e| format!("{e:?}"))?;
    let t_compile = t.elapsed().as_secs_f64();
    let s = Session::with_security(c.plan, true).map_err(|e| format!("{e:?}"))?;
    let n = s.plan.batch as usize;
    let input = s.input().map_err(|e| format!("{e:?}"))?.clone();
    let per: usize = input.shape.iter().product();
    let [lo, hi] = input.range.unwrap_or([0.0, 1.0]);
    let mut st = 9u64;
    let data: Vec<f64> = (0..n * per)
        .map(|_| {
            st = st
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((st >> 11) as f64 / (1u64 << 53) as f64)
        })
        .collect();
    let images = Images {
        count: n,
        per_image: per,
        data,
    };
    let t = Instant::now();
    let keys = generate_keys(&s).map_err(|e| format!("{e:?}"))?;
    let t_keygen = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut enc = ClientEncryptor::secret(&s, &keys.secret).map_err(|e| format!("{e:?}"))?;
    let x = encrypt_images(&s, &images, &mut enc).map_err(|e| format!("{e:?}"))?;
    let t_encrypt = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let (out, report) = run_inputs(
        &s,
        x,
        &keys.eval,
        &RunOptions {
            progress: None,
            memory_limit: None,
            ..Default::default()
        },
    )
    .map_err(|e| format!("{e:?}"))?;
    let t_run = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let logits = decrypt_outputs(&out, &keys.secret).map_err(|e| format!("{e:?}"))?;
    let t_decrypt = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds();
    let peak = hecc_runtime::exec::read_memory_status().map_or(0, |m| m.peak_rss_bytes);
    Ok(format!(
        "RESULT {model} layout {layout} requested {batch} images {n} N=2^{} compile {t_compile:.2} keygen {t_keygen:.2} \
         encrypt {t_encrypt:.2} run {t_run:.2} decrypt {t_decrypt:.2} total {:.2} ms_per_image {:.3} \
         peak_mib {} cpu_s {cpu:.1} nodes {} logits {}",
        s.plan.params.log_n,
        t_all.elapsed().as_secs_f64(),
        t_run / n as f64 * 1e3,
        peak >> 20,
        report.nodes,
        logits.values.len()
    ))
}

/// The value after `key` in a `RESULT` line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let mut it = line.split_whitespace();
    while let Some(w) = it.next() {
        if w == key {
            return it.next().unwrap_or("?");
        }
    }
    "?"
}

/// One Markdown table row of a `RESULT` or `FAILED` line.
fn table_row(model: &str, layout: &str, batch: &str, line: &str) -> String {
    if !line.starts_with("RESULT") {
        let why = line.split_once(": ").map_or(line, |(_, w)| w);
        return format!(
            "| {model} | {layout} | {batch} | - | - | - | - | - | - | - | failed: {why} |"
        );
    }
    let n = field(line, "images");
    let run: f64 = field(line, "run").parse().unwrap_or(f64::NAN);
    let ms = field(line, "ms_per_image");
    format!(
        "| {model} | {layout} | {batch} | {n} | {} | {run:.2} | {ms} | {} | {} | {} | {} |",
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("N="))
            .unwrap_or("?"),
        field(line, "encrypt"),
        field(line, "total"),
        field(line, "peak_mib"),
        field(line, "cpu_s"),
    )
}

/// `/proc/loadavg`'s first three fields.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// User + system CPU seconds of this process (Linux `/proc/self/stat`, 100 ticks/s).
fn cpu_seconds() -> f64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    let Some(rest) = s.rsplit(')').next() else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| {
        f.get(i)
            .and_then(|x| x.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (tick(11) + tick(12)) / 100.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let insecure = args.iter().any(|a| a == "--insecure");
    if let Some(i) = args.iter().position(|a| a == "--one") {
        let (Some(model), Some(layout), Some(batch)) =
            (args.get(i + 1), args.get(i + 2), args.get(i + 3))
        else {
            eprintln!("--one MODEL LAYOUT BATCH");
            std::process::exit(2);
        };
        match one(model, layout, batch, insecure) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                println!(
                    "FAILED {model} layout {layout} batch {batch}: {}",
                    e.lines().next().unwrap_or("")
                );
                std::process::exit(1);
            }
        }
        return;
    }
    let models = arg(&args, "--models").unwrap_or_else(|| "cryptonets".into());
    let layouts = arg(&args, "--layouts").unwrap_or_else(|| "batch".into());
    let batches = arg(&args, "--batches").unwrap_or_else(|| "1,64,1024,max".into());
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot find this executable: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "# bench_infer: {} parameters, {} threads, load average before: {}",
        if insecure { "insecure test" } else { "128-bit" },
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        load()
    );
    let mut rows = Vec::new();
    for model in models.split(',') {
        for layout in layouts.split(',') {
            for batch in batches.split(',') {
                let mut cmd = Command::new(&exe);
                cmd.args(["--one", model, layout, batch]);
                if insecure {
                    cmd.arg("--insecure");
                }
                let line = match cmd.output() {
                    Ok(o) => {
                        if !o.status.success() {
                            eprint!("{}", String::from_utf8_lossy(&o.stderr));
                        }
                        let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
                        if out.is_empty() {
                            format!("FAILED {model} layout {layout} batch {batch}: {}", o.status)
                        } else {
                            out
                        }
                    }
                    Err(e) => format!("FAILED {model} layout {layout} batch {batch}: {e}"),
                };
                println!("{line}");
                rows.push(table_row(model, layout, batch, &line));
            }
        }
    }
    println!();
    println!(
        "| model | layout | batch asked | images | N | run (s) | run per image (ms) | \
         encrypt (s) | total (s) | peak memory (MiB) | CPU (s) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    println!();
    println!("load average after: {}", load());
}
