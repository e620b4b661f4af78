//! Rotation keys: which Galois keys a circuit needs, and smaller key sets obtained by composing
//! rotations.
//!
//! Contract: a rotation by `k` slots of an `n`-slot ciphertext needs the Galois key of `k`
//! (modulo `n`). [`step_counts`] lists the steps a circuit uses with how often each is applied.
//! A [`KeyStrategy`] chooses the keys to generate: [`KeyStrategy::Exact`] one per distinct step
//! (each rotation is one key switch), [`KeyStrategy::PowerOfTwo`] only the signed powers of two
//! the steps need, each rotation becoming the key switches of its non-adjacent form (the
//! shortest signed-binary decomposition, taken of `k`, `k - n` or `k + n`, whichever is shorter).
//! [`plan_keys`] gives the key set, every step's decomposition, the key bytes and the extra
//! rotations that composition costs; [`tradeoff`] puts both strategies side by side as plain
//! data for the report. Nothing here panics on odd input: steps are normalised modulo `n`, and
//! a step that is `0` modulo `n` needs no key.

use hecc_ir::he::{Module, Op};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// How the rotation keys are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyStrategy {
    /// One key per distinct step.
    Exact,
    /// Keys only for signed powers of two; rotations are composed.
    PowerOfTwo,
}

impl KeyStrategy {
    /// Kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            KeyStrategy::Exact => "exact",
            KeyStrategy::PowerOfTwo => "power-of-two",
        }
    }
}

/// A key set and what it costs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeySet {
    /// The strategy (`exact` or `power-of-two`).
    pub strategy: String,
    /// The steps with a Galois key, normalised to `(-n/2, n/2]`.
    pub keys: Vec<i32>,
    /// Bytes of those keys.
    pub key_bytes: u64,
    /// Key switches the circuit performs for its rotations with this key set.
    pub key_switches: u64,
    /// Key switches beyond one per rotation (`key_switches - rotations`).
    pub extra_rotations: u64,
    /// Per needed step, the key steps it is composed of (their sum is the step modulo `n`).
    pub decompositions: BTreeMap<i32, Vec<i32>>,
}

/// The rotation-key trade-off of a circuit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RotationTradeoff {
    /// Slots per ciphertext.
    pub slots: u32,
    /// Rotations in the circuit.
    pub rotations: u64,
    /// Distinct steps, normalised to `(-n/2, n/2]`.
    pub steps: Vec<i32>,
    /// One key per step.
    pub exact: KeySet,
    /// Power-of-two keys, composed rotations.
    pub power_of_two: KeySet,
}

/// `k` modulo `slots`, in `(-slots/2, slots/2]` (`k` itself when `slots` is 0).
pub fn normalize(k: i64, slots: u32) -> i64 {
    let n = i64::from(slots);
    if n == 0 {
        return k;
    }
    let r = k.rem_euclid(n);
    if r > n / 2 {
        r - n
    } else {
        r
    }
}

/// The steps of `module`'s rotations (normalised modulo `slots`) with their use counts; steps
/// that are `0` modulo `slots` are left out (they need no key).
pub fn step_counts(module: &Module, slots: u32) -> BTreeMap<i32, u64> {
    let mut out = BTreeMap::new();
    for v in module.ids() {
        if let Some(Op::Rotate { steps }) = module.node(v).map(|n| &n.op) {
            let k = normalize(i64::from(*steps), slots);
            if k != 0 {
                *out.entry(k as i32).or_insert(0) += 1;
            }
        }
    }
    out
}

/// The non-adjacent form of `k`: signed powers of two summing to `k`, as few as possible.
pub fn naf(k: i64) -> Vec<i64> {
    let mut out = Vec::new();
    let mut k = k;
    let mut bit: i64 = 1;
    while k != 0 {
        if k & 1 != 0 {
            // k mod 4 == 1 -> +1, == 3 -> -1.
            let d = if k.rem_euclid(4) == 1 { 1 } else { -1 };
            out.push(d * bit);
            k -= d;
        }
        k /= 2;
        bit = bit.saturating_mul(2);
    }
    out
}

/// The key steps a rotation by `k` is composed of under `strategy` (empty for `0` mod `slots`).
pub fn decompose(k: i64, slots: u32, strategy: KeyStrategy) -> Vec<i64> {
    let k = normalize(k, slots);
    if k == 0 {
        return Vec::new();
    }
    match strategy {
        KeyStrategy::Exact => vec![k],
        KeyStrategy::PowerOfTwo => {
            let n = i64::from(slots);
            let mut best = naf(k);
            if n > 0 {
                for alt in [k - n, k + n] {
                    let d = naf(alt);
                    if d.len() < best.len() {
                        best = d;
                    }
                }
            }
            best.into_iter().map(|s| normalize(s, slots)).collect()
        }
    }
}

/// The key set for the steps `counts` (step -> rotations using it) under `strategy`, each key
/// costing `bytes_per_key`.
pub fn plan_keys(
    counts: &BTreeMap<i32, u64>,
    slots: u32,
    strategy: KeyStrategy,
    bytes_per_key: u64,
) -> KeySet {
    let mut keys = BTreeSet::new();
    let mut decompositions = BTreeMap::new();
    let mut switches = 0u64;
    let mut rotations = 0u64;
    for (&step, &count) in counts {
        let d = decompose(i64::from(step), slots, strategy);
        if d.is_empty() {
            continue;
        }
        rotations += count;
        switches += count * d.len() as u64;
        keys.extend(d.iter().map(|&s| s as i32));
        decompositions.insert(step, d.into_iter().map(|s| s as i32).collect());
    }
    KeySet {
        strategy: strategy.name().into(),
        key_bytes: bytes_per_key * keys.len() as u64,
        keys: keys.into_iter().collect(),
        key_switches: switches,
        extra_rotations: switches - rotations,
        decompositions,
    }
}

/// Both key strategies for `module` with `slots` slots and keys of `bytes_per_key` bytes.
pub fn tradeoff(module: &Module, slots: u32, bytes_per_key: u64) -> RotationTradeoff {
    let counts = step_counts(module, slots);
    RotationTradeoff {
        slots,
        rotations: counts.values().sum(),
        steps: counts.keys().copied().collect(),
        exact: plan_keys(&counts, slots, KeyStrategy::Exact, bytes_per_key),
        power_of_two: plan_keys(&counts, slots, KeyStrategy::PowerOfTwo, bytes_per_key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naf_sums_back_and_has_no_adjacent_digits() {
        for k in -300i64..=300 {
            let d = naf(k);
            assert_eq!(d.iter().sum::<i64>(), k, "{k}");
            let mut bits: Vec<u32> = d
                .iter()
                .map(|x| x.unsigned_abs().trailing_zeros())
                .collect();
            bits.sort_unstable();
            assert!(bits.windows(2).all(|w| w[1] > w[0] + 1), "{k}: {d:?}");
        }
        assert_eq!(naf(7), vec![-1, 8]);
        assert_eq!(naf(0), Vec::<i64>::new());
    }

    #[test]
    fn wraparound_makes_decompositions_shorter() {
        // 4095 = -1 modulo 4096: one key, not the 2 of naf(4095) = 4096 - 1.
        assert_eq!(decompose(4095, 4096, KeyStrategy::PowerOfTwo), vec![-1]);
        assert_eq!(
            decompose(4096, 4096, KeyStrategy::PowerOfTwo),
            Vec::<i64>::new()
        );
        assert_eq!(decompose(-3, 4096, KeyStrategy::Exact), vec![-3]);
    }
}
