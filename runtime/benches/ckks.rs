//! Criterion benchmarks of hecc's CKKS backend, one group per parameter set,
//! with IDs like `N=2^14/L=8/relinearize`.
//!
//! Run: `cargo bench -p hecc-runtime --bench ckks` (all three sets take a few
//! minutes on one core; set `RAYON_NUM_THREADS=1` for single-threaded
//! figures comparable with SEAL). Restrict with a criterion filter, which is
//! a regular expression, so escape the caret (`-- 'N=2\^13'`; a plain
//! `N=2^13` matches nothing), and, to skip key generation of unused sets,
//! `HECC_BENCH_LOGN=13,14`. The operations and inputs are those of
//! `benches/common/mod.rs`, shared with `examples/ckks_bench.rs` (the peer
//! comparison); sample sizes are kept small on purpose. The benchmarks run
//! on a rayon worker thread (see `main`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use std::time::Duration;

use criterion::{criterion_group, Criterion, SamplingMode};

mod common;

use common::{is_heavy, selected_configs, Fixture, OPS};

fn bench_ckks(c: &mut Criterion) {
    for config in selected_configs() {
        let mut fx = match Fixture::new(&config) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("skipping {}: {e}", config.id());
                continue;
            }
        };
        let mut group = c.benchmark_group(config.id());
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(200))
            .measurement_time(Duration::from_millis(if config.log_n >= 15 {
                1500
            } else {
                800
            }));
        for &op in OPS {
            group.sampling_mode(if is_heavy(op, config.log_n) {
                SamplingMode::Flat
            } else {
                SamplingMode::Auto
            });
            // Fail loudly (in the bench binary only) if an operation errors.
            if let Err(e) = fx.run(op) {
                eprintln!("{}/{op} failed: {e}", config.id());
                continue;
            }
            group.bench_function(op, |b| {
                b.iter(|| fx.run(op).expect("operation succeeded once above"))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench_ckks);

/// Like `criterion_main!`, but runs inside the rayon pool (as
/// `examples/ckks_bench.rs` does), so that with `RAYON_NUM_THREADS=1` the
/// backend's parallel iterators run inline rather than waking a pool thread
/// on every call.
fn main() {
    rayon::scope(|_| {
        benches();
        Criterion::default().configure_from_args().final_summary();
    });
}
