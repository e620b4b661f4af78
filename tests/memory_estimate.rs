//! The plan's memory estimate against the live bytes the executor holds, on 128-bit plans of
//! the reference models: the same encrypted inputs run with the default bound (the estimate
//! plus 5 %), with no bound, and strictly in schedule order. Slow (LeNet-5 in the batch layout
//! takes minutes), so ignored by default:
//!
//! `cargo test --release --test memory_estimate -- --ignored --nocapture`
//!
//! `HECC_MEM_CASES=cryptonets:channel,lenet5:batch` picks the cases (default: CryptoNets and
//! LeNet-5 in both layouts); each line printed gives the figures, and the test fails when a
//! default run holds more than 10 % over the estimate.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code may fail loudly

use hecc::client::Client;
use hecc::compile::{compile, CompileOptions, LayoutChoice};
use hecc::run::{load_images, Session};
use hecc_runtime::ckks::{Encoder, Evaluator};
use hecc_runtime::exec::{execute, ExecOptions};
use std::collections::HashMap;
use std::path::PathBuf;

#[test]
#[ignore = "slow (minutes): cargo test --release --test memory_estimate -- --ignored --nocapture"]
fn runs_hold_what_the_plan_estimates() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cases = std::env::var("HECC_MEM_CASES").unwrap_or_else(|_| {
        "cryptonets:batch,cryptonets:channel,lenet5:channel,lenet5:batch".into()
    });
    for case in cases.split(',') {
        let (model, layout) = case.split_once(':').expect("MODEL:LAYOUT");
        let opts = CompileOptions {
            layout: if layout == "batch" {
                LayoutChoice::Batch
            } else {
                LayoutChoice::Channel
            },
            batch: Some(16),
            batch_at_most: true,
            ..Default::default()
        };
        let plan = compile(&root.join(format!("models/{model}.yaml")), &opts)
            .unwrap()
            .plan;
        let est = plan.report.schedule.as_ref().unwrap().peak.bytes;
        let (mut client, eval) = Client::generate(Session::new(plan.clone()).unwrap()).unwrap();
        let s = Session::new(plan).unwrap();
        let images = load_images(
            &root.join("models/data/mnist-t10k-first256-images-idx3-ubyte"),
            s.input().unwrap(),
        )
        .unwrap()
        .take(s.plan.batch as usize);
        let x = client.encrypt(&images).unwrap();
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        let mut line = format!(
            "{model} {layout} N=2^{}: estimate {:.1} MiB",
            s.plan.params.log_n,
            mib(est)
        );
        for (label, wave, lookahead, limit) in [
            ("default", 64, 256, None),
            ("unbounded", 64, 256, Some(u64::MAX)),
            ("strict order", 1, 1, None),
        ] {
            let inputs: HashMap<(String, u32), _> = x
                .meta
                .elements
                .iter()
                .cloned()
                .zip(x.cts.iter().cloned())
                .collect();
            let eo = ExecOptions {
                schedule: s.schedule(),
                max_wavefront: wave,
                lookahead,
                memory_limit: limit,
                release_memory: true,
                ..Default::default()
            };
            let t = std::time::Instant::now();
            let r = execute(
                s.module(),
                &Evaluator::new(&s.ctx),
                &Encoder::new(&s.ctx),
                eval.as_exec(&s).unwrap(),
                inputs,
                &eo,
            )
            .unwrap();
            let live = r.report.peak_live_bytes;
            line += &format!(
                "; {label} {:.1} MiB ({:.2}x, {:.2} s)",
                mib(live),
                live as f64 / est as f64,
                t.elapsed().as_secs_f64()
            );
            if label == "default" {
                assert!(
                    live as f64 <= 1.10 * est as f64,
                    "{model} {layout}: {live} B live against an estimate of {est} B"
                );
            }
        }
        println!("{line}");
    }
}
