//! Rotation-key composition: with the reduced (power-of-two) key set every needed step is
//! reachable, and the extra rotations reported are exactly the extra key switches.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use hecc_ir::he::{Layout, Level, LogScale, Meta, Module};
use hecc_passes::lower::channel::{lower_channel, ChannelOptions};
use hecc_passes::lower::LowerOptions;
use hecc_passes::rotations::{decompose, plan_keys, step_counts, tradeoff, KeyStrategy};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn check_reachable(counts: &BTreeMap<i32, u64>, slots: u32) {
    let n = i64::from(slots);
    let t = plan_keys(counts, slots, KeyStrategy::PowerOfTwo, 1000);
    let mut extra = 0u64;
    for (&step, &count) in counts {
        let d = t
            .decompositions
            .get(&step)
            .expect("every step is decomposed");
        assert!(!d.is_empty());
        let sum: i64 = d.iter().map(|&s| i64::from(s)).sum();
        assert_eq!(
            (sum - i64::from(step)).rem_euclid(n),
            0,
            "step {step} -> {d:?}"
        );
        for s in d {
            assert!(t.keys.contains(s), "step {step}: key {s} not in the set");
            let a = s.unsigned_abs();
            assert!(a.is_power_of_two(), "key {s} is not a power of two");
        }
        extra += count * (d.len() as u64 - 1);
    }
    assert_eq!(t.extra_rotations, extra);
    assert_eq!(t.key_switches, counts.values().sum::<u64>() + extra);
    assert_eq!(t.key_bytes, 1000 * t.keys.len() as u64);
    let exact = plan_keys(counts, slots, KeyStrategy::Exact, 1000);
    assert_eq!(exact.extra_rotations, 0);
    assert_eq!(exact.keys.len(), counts.len());
    assert!(t.keys.len() <= 2 * slots.trailing_zeros() as usize);
}

#[test]
fn every_step_of_a_range_is_reachable_with_power_of_two_keys() {
    let slots = 1024;
    let counts: BTreeMap<i32, u64> = (-511i32..=512)
        .filter(|k| *k != 0)
        .map(|k| (k, (k.unsigned_abs() % 3 + 1) as u64))
        .collect();
    check_reachable(&counts, slots);
    let t = plan_keys(&counts, slots, KeyStrategy::PowerOfTwo, 1);
    // 1023 steps collapse to at most 2 * log2(1024) keys (+-1 .. +-256 and 512).
    assert!(t.keys.len() <= 20, "{:?}", t.keys);
    assert!(t.extra_rotations > 0);
}

#[test]
fn known_decompositions() {
    assert_eq!(decompose(3, 64, KeyStrategy::PowerOfTwo), vec![-1, 4]);
    assert_eq!(decompose(-5, 64, KeyStrategy::PowerOfTwo), vec![-1, -4]);
    assert_eq!(decompose(31, 64, KeyStrategy::PowerOfTwo), vec![-1, 32]);
    // 63 = -1 modulo 64.
    assert_eq!(decompose(63, 64, KeyStrategy::PowerOfTwo), vec![-1]);
    assert_eq!(decompose(8, 64, KeyStrategy::PowerOfTwo), vec![8]);
}

#[test]
fn tradeoff_of_a_hand_built_circuit_counts_each_rotation() {
    let mut m = Module::new(Meta::default());
    let l = m
        .add_layout("img", Layout::dense_channels(1, 4, 4))
        .unwrap();
    let x = m.input("x", 0, Level(0), LogScale(40.0), 16, l).unwrap();
    // Steps 1 (twice), 3, 7, 16 (= 0 mod 16: no key) and -9 (= 7 mod 16).
    let mut acc = x;
    for k in [1, 1, 3, 7, 16, -9] {
        let r = m.rotate(x, k).unwrap();
        acc = m.add(acc, r).unwrap();
    }
    m.output(acc, "y", 0).unwrap();
    let counts = step_counts(&m, 16);
    assert_eq!(counts, BTreeMap::from([(1, 2), (3, 1), (7, 2)]));
    let t = tradeoff(&m, 16, 10);
    assert_eq!(t.rotations, 5);
    assert_eq!(t.exact.keys, vec![1, 3, 7]);
    assert_eq!(t.exact.key_bytes, 30);
    // 3 = 4 - 1 and 7 = 8 - 1: keys {-1, 1, 4, 8}, two extra switches per composed rotation.
    assert_eq!(t.power_of_two.keys, vec![-1, 1, 4, 8]);
    assert_eq!(t.power_of_two.extra_rotations, 1 + 2);
    check_reachable(&counts, 16);
}

#[test]
fn channel_lowered_squeezenet_keys_are_reachable() {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/squeezenet.yaml");
    let g = hecc_ir::front::load_model(&p).unwrap();
    let low = lower_channel(
        &g,
        &ChannelOptions::new(LowerOptions {
            batch: 1,
            slots: 1024,
            log_scale: 40.0,
            activations: Default::default(),
        }),
    )
    .unwrap();
    let counts = step_counts(&low.lowered.module, 1024);
    assert!(!counts.is_empty());
    check_reachable(&counts, 1024);
    let t = tradeoff(&low.lowered.module, 1024, 1);
    eprintln!(
        "squeezenet channel: {} rotations, {} steps; power-of-two: {} keys, {} extra rotations",
        t.rotations,
        t.steps.len(),
        t.power_of_two.keys.len(),
        t.power_of_two.extra_rotations
    );
    assert!(t.power_of_two.keys.len() <= t.exact.keys.len());
}
