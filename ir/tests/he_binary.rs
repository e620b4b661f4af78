//! The binary form of HE modules (what plan files store): exact round trips of hand-built and
//! random modules, and no panic on damaged bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code may fail loudly

use hecc_ir::he::binary::{decode, encode};
use hecc_ir::he::gen::{random_module, GenConfig};
use hecc_ir::he::{Layout, Level, LogScale, Meta, Module, Params, ValueId};
use proptest::prelude::*;

/// A module with every table filled, a hole in its ids, shared mac patterns and a tiled constant.
fn sample() -> Module {
    let mut m = Module::new(Meta {
        name: "sample \"quoted\"".into(),
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
    let xs: Vec<ValueId> = (0..6)
        .map(|i| m.input("x", i, Level(2), LogScale(40.0), 8, b).unwrap())
        .collect();
    let k = m.add_constant(vec![0.5, -1.0, 1e-7, 3.0e20, -0.0, 2.0, f64::NAN, 7.0]);
    let mut tiled = vec![0.0; 128];
    tiled[3] = 1.5;
    tiled[67] = 1.5;
    m.add_constant(tiled);
    let p = m.encode(k, Level(2), LogScale(40.0), b).unwrap();
    let dead = m.negate(xs[5]).unwrap();
    let s = m.add(xs[0], xs[1]).unwrap();
    let sp = m.add_plain(s, p).unwrap();
    let sq = m.square(sp).unwrap();
    let r = m.relinearize(sq).unwrap();
    let r = m.rescale(r).unwrap();
    // Two macs of the same window shape and coefficients over shifted operands.
    let w = [0.25, -1.5, 1e-300];
    let m1 = m
        .mac(
            &[(xs[0], w[0]), (xs[1], w[1]), (xs[3], w[2])],
            Some(0.125),
            LogScale(40.0),
        )
        .unwrap();
    let m2 = m
        .mac(
            &[(xs[1], w[0]), (xs[2], w[1]), (xs[4], w[2])],
            None,
            LogScale(40.0),
        )
        .unwrap();
    let mac = m.add(m1, m2).unwrap();
    let mac = m.rescale(mac).unwrap();
    let d = m.drop_level(mac, Level(1)).unwrap();
    let rot = m.rotate(d, -3).unwrap();
    let y = m.sub(r, rot).unwrap();
    let y = m.mul_scalar(y, -0.5, LogScale(20.0)).unwrap();
    let y = m.add_scalar(y, 2.0).unwrap();
    let y = m.mul_integer(y, -7).unwrap();
    m.output(y, "y", 0).unwrap();
    m.remove(dead);
    m
}

#[test]
fn a_module_comes_back_identical() {
    let m = sample();
    let bytes = encode(&m);
    let back = decode(&bytes).unwrap();
    assert_eq!(back.to_string(), m.to_string());
    assert_eq!(back.len(), m.len());
    assert_eq!(encode(&back), bytes);
    // The two macs share one operand pattern and one coefficient list: the second costs a few
    // bytes more than a node without attributes, not three more coefficients.
    assert!(bytes.len() < 900, "{} bytes", bytes.len());
}

#[test]
fn damaged_bytes_are_refused_with_the_place() {
    let bytes = encode(&sample());
    let e = decode(&bytes[..bytes.len() - 3]).unwrap_err();
    assert!(e.to_string().contains("at byte"), "{e}");
    let e = decode(b"not a circuit").unwrap_err();
    assert!(e.message.contains("magic"), "{e}");
    let mut v = bytes.clone();
    v[8] = 9;
    assert!(decode(&v).unwrap_err().message.contains("version 9"));
    let mut v = bytes.clone();
    v.push(0);
    assert!(decode(&v)
        .unwrap_err()
        .message
        .contains("follow the last node"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_modules_round_trip(seed in any::<u64>(), nodes in 1usize..80) {
        let cfg = GenConfig { nodes, ..GenConfig::default() };
        let m = random_module(seed, &cfg);
        let bytes = encode(&m);
        let back = decode(&bytes).unwrap();
        prop_assert_eq!(back.to_string(), m.to_string());
    }

    /// Flipped, dropped and inserted bytes: a module or an error, never a panic or a huge
    /// allocation.
    #[test]
    fn damaged_bytes_never_panic(
        seed in any::<u64>(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let mut bytes = encode(&random_module(seed, &GenConfig::default()));
        for (at, b, kind) in edits {
            let i = at % bytes.len().max(1);
            match kind {
                0 if !bytes.is_empty() => bytes[i] = b,
                1 if !bytes.is_empty() => { bytes.remove(i); }
                _ => bytes.insert(i.min(bytes.len()), b),
            }
        }
        let _ = decode(&bytes);
    }
}
