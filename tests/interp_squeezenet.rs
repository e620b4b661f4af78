//! The plaintext reference that `hecc infer --verify` runs beside an encrypted run, on
//! SqueezeNet's batch plan at 128-bit (a million nodes, 16,384 slots per value): interpreted in
//! the plan's schedule, its values must stay within 256 MiB above the plan itself (measured 97
//! MiB on 2026-12-08; petgraph's topological order held 425 MiB). Slow (compile and
//! interpretation take about five minutes on 2 cores), so ignored by default:
//!
//! `cargo test --release --test interp_squeezenet -- --ignored --nocapture`
//!
//! With `TOPO=1` it interprets in the topological order instead, for comparison (that run fails
//! the bound).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code may fail loudly

mod common;

use common::root;
use hecc::compile::{compile, CompileOptions, LayoutChoice};
use hecc_ir::he::interp::interpret_scheduled;
use hecc_runtime::exec::read_memory_status;
use std::time::Instant;

#[test]
#[ignore = "slow (minutes): cargo test --release --test interp_squeezenet -- --ignored --nocapture"]
fn squeezenet_batch_reference_fits_in_its_schedule() {
    let t = Instant::now();
    let opts = CompileOptions {
        layout: LayoutChoice::Batch,
        ..Default::default()
    };
    let plan = compile(&root().join("models/squeezenet.yaml"), &opts)
        .unwrap()
        .plan;
    let m = &plan.circuit;
    // Start the peak over from here (Linux: `5` resets VmHWM to the current resident size), so
    // that it measures the interpretation, not the compile.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = read_memory_status().unwrap().rss_bytes;
    eprintln!(
        "compiled in {:.1} s: {} nodes, resident {} MiB",
        t.elapsed().as_secs_f64(),
        m.len(),
        before >> 20
    );
    let t = Instant::now();
    // Pixel values in [0, 1), different in every slot and element.
    let feed = |_: &str, index: u32, _: &hecc_ir::he::Layout, slots: u32| {
        Some(
            (0..slots as u64)
                .map(|s| ((s * 7919 + u64::from(index) * 104_729) % 1000) as f64 / 1000.0)
                .collect(),
        )
    };
    let outs = if std::env::var_os("TOPO").is_some() {
        hecc_ir::he::interp::interpret(m, feed)
    } else {
        interpret_scheduled(m, &plan.schedule, feed)
    }
    .unwrap();
    let peak = read_memory_status().unwrap().peak_rss_bytes;
    eprintln!(
        "interpreted in {:.1} s: {} outputs, peak resident {} MiB",
        t.elapsed().as_secs_f64(),
        outs.len(),
        peak >> 20
    );
    assert_eq!(outs.len(), 10, "one output per class");
    assert!(outs.iter().all(|o| o.slots.iter().all(|v| v.is_finite())));
    assert!(
        peak < before + (256 << 20),
        "the reference held {} MiB above the plan at its peak",
        (peak - before) >> 20
    );
}
