//! Round trips of the HE text form: hand-built modules and random ones.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use hecc_ir::he::gen::{random_module, GenConfig};
use hecc_ir::he::{verify, Layout, Level, LogScale, Meta, Module, Params, VerifyOptions};
use hecc_ir::text::{parse_module, print_module, PrintOptions};
use proptest::prelude::*;

fn sample() -> Module {
    let mut m = Module::new(Meta {
        name: "sample".into(),
        batch: 4,
        log_scale: LogScale(40.0),
    });
    m.params = Some(Params {
        log_n: 4,
        primes: vec![(1 << 60) - 93, (1 << 40) - 87, (1 << 40) - 195],
    });
    let b = m.add_layout("batch", Layout::BATCH).unwrap();
    m.add_layout("img", Layout::dense_channels(1, 2, 2))
        .unwrap();
    let x0 = m.input("x", 0, Level(2), LogScale(40.0), 8, b).unwrap();
    let x1 = m.input("x", 1, Level(2), LogScale(40.0), 8, b).unwrap();
    let k = m.add_constant(vec![0.5, -1.0, 1e-7, 3.0e20, -0.0, 2.0, 0.1, 7.0]);
    let p = m.encode(k, Level(2), LogScale(40.0), b).unwrap();
    let s = m.add(x0, x1).unwrap();
    let sp = m.add_plain(s, p).unwrap();
    let sq = m.square(sp).unwrap();
    let r = m.relinearize(sq).unwrap();
    let r = m.rescale(r).unwrap();
    let mac = m
        .mac(&[(x0, 0.25), (x1, -1.5)], Some(0.125), LogScale(40.0))
        .unwrap();
    let mac = m.rescale(mac).unwrap();
    let d = m.drop_level(mac, Level(1)).unwrap();
    let rot = m.rotate(d, -3).unwrap();
    let y = m.sub(r, rot).unwrap();
    m.output(y, "y", 0).unwrap();
    m
}

#[test]
fn sample_round_trips_and_verifies() {
    let m = sample();
    let text = m.to_string();
    let back = parse_module(&text).unwrap();
    assert_eq!(back.to_string(), text);
    assert_eq!(back.len(), m.len());
    verify(&back, &VerifyOptions::STRUCTURE).unwrap();
    println!("{text}");
}

#[test]
fn elided_constants_are_refused() {
    let m = sample();
    let text = print_module(
        &m,
        &PrintOptions {
            elide_constants: Some(4),
        },
    );
    assert!(text.contains("elided(8)"));
    let err = parse_module(&text).unwrap_err();
    assert!(err.message.contains("elided"), "{}", err.message);
}

#[test]
fn holes_in_ids_are_kept() {
    let mut m = sample();
    // Remove a dead-end node and add a new one: ids keep their numbers.
    let last = m.ids().last().unwrap();
    m.remove(last);
    let text = m.to_string();
    let back = parse_module(&text).unwrap();
    assert_eq!(back.to_string(), text);
    let ids: Vec<_> = back.ids().collect();
    assert_eq!(ids, m.ids().collect::<Vec<_>>());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_modules_round_trip(seed in any::<u64>(), nodes in 0usize..60, special in any::<bool>(), slots in 1u32..20) {
        let cfg = GenConfig { nodes, special_floats: special, slots, ..GenConfig::default() };
        let m = random_module(seed, &cfg);
        prop_assert!(verify(&m, &VerifyOptions::STRUCTURE).is_ok(), "{:?}", verify(&m, &VerifyOptions::STRUCTURE));
        let text = m.to_string();
        let back = parse_module(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(back.to_string(), text);
        prop_assert!(verify(&back, &VerifyOptions::STRUCTURE).is_ok());
    }
}

/// Scale check (run with `cargo test --release -p hecc-ir --test he_roundtrip -- --ignored --nocapture`):
/// a batch-packed module of about a million nodes builds, verifies, prints and parses back.
#[test]
#[ignore = "slow in debug builds; a scale check"]
fn a_million_nodes() {
    use std::time::Instant;
    let mut m = Module::new(Meta {
        name: "big".into(),
        batch: 4096,
        log_scale: LogScale(30.0),
    });
    let b = m.add_layout("batch", Layout::BATCH).unwrap();
    let t = Instant::now();
    let mut layer: Vec<_> = (0..3072)
        .map(|i| {
            m.input("x", i, Level(400), LogScale(30.0), 4096, b)
                .unwrap()
        })
        .collect();
    while m.len() < 1_000_000 {
        let mut next = Vec::with_capacity(layer.len());
        for w in layer.windows(3) {
            let y = m
                .mac(
                    &[(w[0], 0.25), (w[1], 0.5), (w[2], -0.25)],
                    Some(0.1),
                    LogScale(30.0),
                )
                .unwrap();
            let y = m.rescale(y).unwrap();
            let y = m.square(y).unwrap();
            let y = m.relinearize(y).unwrap();
            let y = m.rescale(y).unwrap();
            let l = m.ty(y).unwrap().level();
            next.push(m.drop_level(y, l).unwrap());
            if m.len() >= 1_000_000 {
                break;
            }
        }
        layer = next;
        if layer.len() < 3 {
            break;
        }
    }
    let built = t.elapsed();
    let t = Instant::now();
    verify(&m, &VerifyOptions::STRUCTURE).unwrap();
    let verified = t.elapsed();
    let t = Instant::now();
    let text = m.to_string();
    let printed = t.elapsed();
    let t = Instant::now();
    let back = parse_module(&text).unwrap();
    let parsed = t.elapsed();
    assert_eq!(back.len(), m.len());
    println!(
        "{} nodes, {} MB of text: build {built:?}, verify {verified:?}, print {printed:?}, parse {parsed:?}; \
         size_of HeNode = {} bytes",
        m.len(),
        text.len() / 1_000_000,
        std::mem::size_of::<hecc_ir::he::HeNode>()
    );
}

#[test]
fn generator_covers_every_op() {
    use std::collections::BTreeSet;
    let mut seen = BTreeSet::new();
    for seed in 0..20 {
        let m = random_module(
            seed,
            &GenConfig {
                nodes: 80,
                ..GenConfig::default()
            },
        );
        for v in m.ids() {
            seen.insert(m.node(v).unwrap().op.opcode());
        }
    }
    let all: BTreeSet<_> = hecc_ir::he::Opcode::ALL.iter().copied().collect();
    let missing: Vec<_> = all.difference(&seen).collect();
    assert!(missing.is_empty(), "never generated: {missing:?}");
}
