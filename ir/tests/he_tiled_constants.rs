//! Long constant-pool vectors are printed in the compact `tile(...)` form and read back bit for
//! bit; malformed compact constants are refused with an error, never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use hecc_ir::he::{Layout, Level, LogScale, Meta, Module};
use hecc_ir::text::parse_module;

fn module_with(values: Vec<f64>) -> Module {
    let n = values.len() as u32;
    let mut m = Module::new(Meta {
        name: "tiled".into(),
        batch: 1,
        log_scale: LogScale(40.0),
    });
    let l = m.add_layout("batch", Layout::BATCH).unwrap();
    let x = m.input("x", 0, Level(0), LogScale(40.0), n, l).unwrap();
    let k = m.add_constant(values);
    let p = m.encode(k, Level(0), LogScale(40.0), l).unwrap();
    let y = m.mul_plain(x, p).unwrap();
    m.output(y, "y", 0).unwrap();
    m
}

fn values_of(m: &Module) -> Vec<u64> {
    m.constants()
        .flat_map(|(_, c)| c.values().iter().map(|x| x.to_bits()).collect::<Vec<_>>())
        .collect()
}

#[test]
fn tiled_masks_print_compactly_and_round_trip() {
    // Eight images of 256 slots: a 28-slot mask, two weights and a negative zero in each.
    let mut v = vec![0.0; 2048];
    for img in 0..8 {
        for j in 0..28 {
            v[img * 256 + 5 + j] = 1.0;
        }
        v[img * 256 + 100] = 0.123456789;
        v[img * 256 + 101] = -3.5e-9;
        v[img * 256 + 200] = -0.0;
    }
    let m = module_with(v);
    let text = m.to_string();
    let line = text.lines().find(|l| l.starts_with("const")).unwrap();
    assert_eq!(
        line,
        "const @0 = tile(len = 2048, period = 256, count = 8) \
         {5: [1.0 * 28], 100: [0.123456789, -3.5e-9], 200: [-0.0]}"
    );
    let back = parse_module(&text).unwrap();
    assert_eq!(back.to_string(), text);
    assert_eq!(values_of(&back), values_of(&m));
    // Held compact in memory, in the module built and in the one read back, and expanded to
    // the same bits (the negative zero included).
    for mm in [&m, &back] {
        let (_, c) = mm.constants().next().unwrap();
        assert!(c.is_compact());
        assert_eq!(c.len(), 2048);
        assert_eq!(c.values()[200].to_bits(), (-0.0f64).to_bits());
    }
}

#[test]
fn dense_and_short_vectors_stay_plain_lists() {
    let v: Vec<f64> = (0..100).map(|i| f64::from(i) * 0.5 + 1.0).collect();
    let m = module_with(v);
    let text = m.to_string();
    assert!(!text.contains("tile("), "{text}");
    let back = parse_module(&text).unwrap();
    assert_eq!(values_of(&back), values_of(&m));
    let short = module_with(vec![0.0; 16]);
    assert!(!short.to_string().contains("tile("));
    // A vector without runs is held as it is.
    let (_, c) = m.constants().next().unwrap();
    assert!(!c.is_compact());
    assert_eq!(c.values().len(), 100);
}

#[test]
fn malformed_tiled_constants_are_refused() {
    let good = module_with({
        let mut v = vec![0.0; 128];
        v[3] = 1.0;
        v[67] = 1.0;
        v
    })
    .to_string();
    assert!(
        good.contains("tile(len = 128, period = 64, count = 2) {3: [1.0]}"),
        "{good}"
    );
    for (bad, why) in [
        (
            "tile(len = 128, period = 64, count = 3) {3: [1.0]}",
            "exceeds the length",
        ),
        (
            "tile(len = 128, period = 64, count = 2) {63: [1.0 * 2]}",
            "past the period",
        ),
        (
            "tile(len = 128, period = 64, count = 2) {3: [1.0], 3: [2.0]}",
            "overlaps",
        ),
        (
            "tile(len = 128, period = 64, count = 2) {3: [1.0 * 0]}",
            "0 times",
        ),
        (
            "tile(len = 128, period = 64, count = 2) {3: [1.0 * 18446744073709551615, 2.0 * 9]}",
            "past the period",
        ),
        (
            "tile(len = 99999999999, period = 1, count = 1) {}",
            "longer than",
        ),
        ("tile(len = 128, period = 64) {3: [1.0]}", "expected"),
    ] {
        let text = good.replace("tile(len = 128, period = 64, count = 2) {3: [1.0]}", bad);
        let e = parse_module(&text)
            .err()
            .unwrap_or_else(|| panic!("{bad} was accepted"));
        assert!(e.to_string().contains(why), "{bad}: {e}");
    }
}
