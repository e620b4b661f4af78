//! Random HE modules, for property tests of the text form, the verifier and
//! transforms.
//!
//! Contract: [`random_module`] is a pure function of its seed and config. The
//! module it returns passes `verify(.., &VerifyOptions::STRUCTURE)` and uses
//! every op of [`super::Opcode::ALL`] when it is large enough; attribute values
//! include negative, tiny, huge and (with `special_floats`) infinite and NaN
//! floats, and names that need quoting. It needs no `proptest`: a property
//! test draws the seed.

use super::module::{BootInfo, Meta, Module, Params, ValueId};
use super::op::Op;
use super::types::{Kind, Layout, Level, LogScale, Type};

/// Shape of the random modules.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GenConfig {
    /// Number of non-input nodes to try to add.
    pub nodes: usize,
    /// Number of inputs (at least 1 is used).
    pub inputs: usize,
    /// Slot count of every value.
    pub slots: u32,
    /// Top level of the inputs.
    pub max_level: u32,
    /// Allow `inf`, `-inf` and `NaN` in attributes.
    pub special_floats: bool,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            nodes: 40,
            inputs: 3,
            slots: 16,
            max_level: 4,
            special_floats: true,
        }
    }
}

/// SplitMix64: a tiny deterministic generator.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn float(&mut self, special: bool) -> f64 {
        match self.below(10) {
            0 => -0.0,
            1 => (self.next() as f64 / u64::MAX as f64) * 1e-12,
            2 => -((self.next() % 1_000_000) as f64) * 1e15,
            3 if special => [f64::INFINITY, f64::NEG_INFINITY, f64::NAN][self.below(3)],
            4 => f64::from_bits(self.next() >> 2),
            _ => (self.next() as f64 / u64::MAX as f64) * 8.0 - 4.0,
        }
    }
}

const NAMES: &[&str] = &[
    "x",
    "image",
    "a b",
    "quote\"d",
    "tab\there",
    "back\\slash",
    "ünï",
];

/// A random module (see the module doc for guarantees).
pub fn random_module(seed: u64, cfg: &GenConfig) -> Module {
    let mut rng = Rng(seed);
    let slots = cfg.slots.max(1);
    let mut module = Module::new(Meta {
        name: NAMES[rng.below(NAMES.len())].to_string(),
        batch: (1 + rng.below(3) as u32).min(slots),
        log_scale: LogScale([40.0, 30.0, 25.5, 39.999_999_9][rng.below(4)]),
    });
    if rng.chance(50) {
        let primes = (0..=cfg.max_level)
            .map(|i| {
                if i == 0 {
                    (1u64 << 60) - 93
                } else {
                    (1u64 << 40) - 87 - 2 * rng.below(1000) as u64
                }
            })
            .collect();
        let log_n = (u64::from(slots).next_power_of_two().trailing_zeros() + 1).max(1);
        module.params = Some(Params { log_n, primes });
    }
    if cfg.max_level > 0 && rng.chance(50) {
        let out_level = 1 + rng.below(cfg.max_level as usize) as u32;
        module.boot = Some(BootInfo {
            out_level: Level(out_level.min(cfg.max_level)),
            in_log_scale: module.meta.log_scale,
            out_log_scale: module.meta.log_scale,
            depth: cfg.max_level - out_level.min(cfg.max_level),
            message_bound: 1.0,
            slots: slots.next_power_of_two(),
        });
    }
    let mut layouts = Vec::new();
    for i in 0..1 + rng.below(3) {
        let layout = if rng.chance(50) {
            Layout::Batch {
                offset: rng.below(4) as u32,
                stride: 1 + rng.below(3) as u32,
            }
        } else {
            Layout::dense_channels(1 + rng.below(3) as u32, 2, 2)
        };
        let fits = layout
            .span(module.meta.batch)
            .is_some_and(|n| n <= u64::from(slots));
        let layout = if fits { layout } else { Layout::BATCH };
        let name = if i == 0 {
            "batch".to_string()
        } else {
            format!("l{i}")
        };
        if let Ok(id) = module.add_layout(&name, layout) {
            layouts.push(id);
        }
    }
    let Some(&layout) = layouts.first() else {
        return module;
    };
    let mut consts = Vec::new();
    for _ in 0..rng.below(3) {
        let vals: Vec<f64> = (0..slots).map(|_| rng.float(cfg.special_floats)).collect();
        consts.push(module.add_constant(vals));
    }
    let top = Level(cfg.max_level);
    let scale = module.meta.log_scale;
    let mut values: Vec<ValueId> = Vec::new();
    for i in 0..cfg.inputs.max(1) {
        let name = NAMES[rng.below(NAMES.len())];
        if let Ok(v) = module.input(name, i as u32, top, scale, slots, layout) {
            values.push(v);
        }
    }
    let mut attempts = 0;
    let mut added = 0;
    while added < cfg.nodes && attempts < cfg.nodes * 20 {
        attempts += 1;
        let pick = |rng: &mut Rng, values: &[ValueId]| values[rng.below(values.len())];
        let a = pick(&mut rng, &values);
        let b = pick(&mut rng, &values);
        let sp = cfg.special_floats;
        let r = match rng.below(20) {
            0 => module.add(a, b),
            1 => module.sub(a, b),
            2 => module.negate(a),
            3 | 4 if !consts.is_empty() => {
                let c = consts[rng.below(consts.len())];
                let ta = module.ty(a);
                let level = ta.map(|t| t.level()).unwrap_or(top);
                let s = ta.map(|t| t.log_scale()).unwrap_or(scale);
                match module.encode(c, level, s, layout) {
                    Ok(p) if rng.chance(50) => module.add_plain(a, p),
                    Ok(p) if rng.chance(50) => module.sub_plain(a, p),
                    Ok(p) => module.mul_plain(a, p),
                    Err(e) => Err(e),
                }
            }
            5 => module.add_scalar(a, rng.float(sp)),
            6 => module.mul(a, b),
            7 => module.square(a),
            8 => module.mul_scalar(a, rng.float(sp), LogScale(rng.below(41) as f64)),
            9 => module.mul_integer(a, rng.next() as i64 >> rng.below(64)),
            10 => {
                let n = 1 + rng.below(4);
                let terms: Vec<(ValueId, f64)> = (0..n)
                    .map(|_| (pick(&mut rng, &values), rng.float(sp)))
                    .collect();
                let bias = if rng.chance(50) {
                    Some(rng.float(sp))
                } else {
                    None
                };
                module.mac(&terms, bias, LogScale(20.0 + rng.below(21) as f64))
            }
            11 | 12 => module.relinearize(a),
            13 | 14 => module.rescale(a),
            15 => {
                let l = module.ty(a).map(|t| t.level().0).unwrap_or(0);
                module.drop_level(a, Level(rng.below(l as usize + 1) as u32))
            }
            16 => module.rotate(a, rng.next() as i32 >> rng.below(32)),
            17 => module.conjugate(a),
            18 if module.boot.is_some() => module.bootstrap(a),
            _ => {
                let name = NAMES[rng.below(NAMES.len())];
                module.output(a, name, rng.below(100) as u32)
            }
        };
        if let Ok(v) = r {
            added += 1;
            if !matches!(module.node(v).map(|n| &n.op), Some(Op::Output { .. })) {
                values.push(v);
            }
        }
    }
    // Make sure a few values are outputs.
    for (k, v) in values.iter().rev().take(2).enumerate() {
        if module.ty(*v).map(|t: Type| t.kind()) == Some(Kind::Cipher) {
            let _ = module.output(*v, "y", k as u32);
        }
    }
    module
}
