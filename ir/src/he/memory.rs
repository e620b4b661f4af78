//! The memory model of running a module in a given order: which values are alive after each
//! step, at what size. The compiler's memory schedule (its peak is the plan's estimate) and the
//! executor's bound on running ahead of that schedule both read this one function, so the two
//! cannot disagree.
//!
//! Contract: an input with users is alive from the start (the client sends every input before
//! the run); any other value with users is alive from its own step until its last user's;
//! values without users (`output` nodes) take nothing; a value takes [`super::Type::bytes`].
//! The entry of a step counts its result together with its operands, before the operands whose
//! last user it is are released: the step's own peak.

use super::{Module, Op, ValueId};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Values alive after one step of an order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Live {
    /// How many.
    pub values: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// When the input ciphertexts are in memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InputResidency {
    /// All of them from the start (a run handed its inputs in memory).
    #[default]
    AtStart,
    /// Each from its own step in the order (a run that reads them from their file on demand).
    OnDemand,
}

/// The live values after each step of `order` (node ids; a valid order lists each node after
/// its operands), in a ring of degree `2^log_n`. Ids not in the module count as steps that
/// compute nothing.
pub fn live_profile(m: &Module, order: &[u32], log_n: u32) -> Vec<Live> {
    let n = m.ids().map(|v| v.0 as usize + 1).max().unwrap_or(0);
    let mut remaining = vec![0usize; n];
    let mut bytes = vec![0u64; n];
    let mut is_input = vec![false; n];
    let mut live = Live::default();
    for v in m.ids() {
        let k = v.0 as usize;
        remaining[k] = m.users(v).len();
        bytes[k] = m.ty(v).map_or(0, |t| t.bytes(log_n));
        is_input[k] = matches!(m.node(v).map(|x| &x.op), Some(Op::Input { .. }));
        if is_input[k] && remaining[k] > 0 {
            live.values += 1;
            live.bytes += bytes[k];
        }
    }
    let mut profile = Vec::with_capacity(order.len());
    for &id in order {
        let k = id as usize;
        if k < n && m.node(ValueId(id)).is_some() {
            if remaining[k] > 0 && !is_input[k] {
                live.values += 1;
                live.bytes += bytes[k];
            }
            profile.push(live);
            for o in m.operands(ValueId(id)) {
                let j = o.0 as usize;
                if let Some(r) = remaining.get_mut(j).filter(|r| **r > 0) {
                    *r -= 1;
                    if *r == 0 {
                        live.values -= 1;
                        live.bytes -= bytes[j];
                    }
                }
            }
        } else {
            profile.push(live);
        }
    }
    profile
}

/// What a run of an order that keeps its live values within a budget moves to disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpillProfile {
    /// Most bytes of live values in memory at once (a step's operands and result always are).
    pub held_bytes: u64,
    /// Bytes written to disk (each value at most once).
    pub written_bytes: u64,
    /// Values written.
    pub values_written: u64,
    /// Most bytes in spill files at once (inputs read from their own file not counted).
    pub disk_bytes: u64,
    /// Bytes read back.
    pub read_bytes: u64,
    /// The largest step's own need (its operands and its result): no budget holds less.
    pub floor_bytes: u64,
}

/// The spill traffic of running `order` one step at a time with at most `budget` bytes of live
/// values in memory, as the executor's spill store does it: before a step its operands are read
/// back; after it, when more than `budget` is held, the values whose next use lies furthest
/// ahead go to disk (written only the first time) until four fifths of the budget remain.
/// With [`InputResidency::AtStart`] the inputs start in memory and are evicted (written) the
/// same way; with [`InputResidency::OnDemand`] each is read from the inputs file when its own
/// node runs and from then on is held and spilled like a computed value. Sizes are [`super::Type::bytes`]. Eviction
/// keeps a heap keyed by next use, so a step costs a logarithm of the values held, not a sort.
pub fn spill_profile(
    m: &Module,
    order: &[u32],
    log_n: u32,
    budget: u64,
    inputs: InputResidency,
) -> SpillProfile {
    // A dense layer's multiply-accumulates over one operand list run fused, as the executor
    // runs them: all members at the first one's step, with no eviction between them.
    let dense = |id: u32| match m.node(ValueId(id)).map(|x| &x.op) {
        Some(Op::Mac(a)) if a.coeffs.len() >= 16 => {
            Some((m.operands(ValueId(id)), a.log_scale.0.to_bits()))
        }
        _ => None,
    };
    let mut groups: std::collections::HashMap<(Vec<ValueId>, u64), Vec<u32>> =
        std::collections::HashMap::new();
    for &id in order {
        if let Some(key) = dense(id) {
            groups.entry(key).or_default().push(id);
        }
    }
    // Wide groups (at least 128 terms, more than one member) stream their operands: those on
    // disk are read for the group's pass (counted at its first member) and not kept, one
    // chunk of an eighth of the budget at a time.
    #[derive(Clone, Copy, PartialEq)]
    enum Step {
        Plain,
        StreamFirst,
        StreamMember,
    }
    let mut steps: Vec<Step> = Vec::with_capacity(order.len());
    let mut fused_order: Vec<u32> = Vec::with_capacity(order.len());
    for &id in order {
        match dense(id).and_then(|key| groups.remove(&key)) {
            Some(members) => {
                let wide = members.len() > 1 && m.operands(ValueId(id)).len() >= 128;
                for (i, &member) in members.iter().enumerate() {
                    fused_order.push(member);
                    steps.push(match (wide, i) {
                        (false, _) => Step::Plain,
                        (true, 0) => Step::StreamFirst,
                        (true, _) => Step::StreamMember,
                    });
                }
            }
            None if dense(id).is_some() => {}
            None => {
                fused_order.push(id);
                steps.push(Step::Plain);
            }
        }
    }
    let order = &fused_order;
    let n = m.ids().map(|v| v.0 as usize + 1).max().unwrap_or(0);
    let mut remaining = vec![0usize; n];
    let mut bytes = vec![0u64; n];
    // Positions (in `order`) of each value's users, ascending; `next[k]` indexes the first
    // user not yet run.
    let mut uses: Vec<Vec<u32>> = vec![Vec::new(); n];
    for (i, &id) in order.iter().enumerate() {
        if (id as usize) < n && m.node(ValueId(id)).is_some() {
            for o in m.operands(ValueId(id)) {
                if let Some(u) = uses.get_mut(o.0 as usize) {
                    u.push(i as u32);
                }
            }
        }
    }
    let mut next = vec![0usize; n];
    let mut resident = vec![false; n];
    let mut on_disk = vec![false; n];
    let mut held = 0u64;
    let mut p = SpillProfile::default();
    // Resident values keyed by next use (largest first, ties to the lowest id); entries go
    // stale when a value leaves memory or its next use moves, and are skipped when popped.
    let mut heap: BinaryHeap<(u32, Reverse<u32>)> = BinaryHeap::new();
    // Bytes in spill files now.
    let mut disk = 0u64;
    let next_use = |k: usize, next: &[usize]| uses[k].get(next[k]).copied().unwrap_or(u32::MAX);
    for v in m.ids() {
        let k = v.0 as usize;
        remaining[k] = m.users(v).len();
        bytes[k] = m.ty(v).map_or(0, |t| t.bytes(log_n));
        if matches!(m.node(v).map(|x| &x.op), Some(Op::Input { .. })) && remaining[k] > 0 {
            match inputs {
                InputResidency::AtStart => {
                    resident[k] = true;
                    held += bytes[k];
                    heap.push((next_use(k, &next), Reverse(v.0)));
                }
                // Read from the inputs file when its node runs, then held (and spilled) like
                // any computed value.
                InputResidency::OnDemand => {}
            }
        }
    }
    let evict = |held: &mut u64,
                 disk: &mut u64,
                 heap: &mut BinaryHeap<(u32, Reverse<u32>)>,
                 resident: &mut [bool],
                 on_disk: &mut [bool],
                 next: &[usize],
                 p: &mut SpillProfile| {
        let target = budget / 10 * 8;
        while *held > target {
            let Some((at, Reverse(k))) = heap.pop() else {
                break;
            };
            let i = k as usize;
            if !resident[i] || at != next_use(i, next) {
                continue;
            }
            resident[i] = false;
            *held -= bytes[i];
            if !on_disk[i] {
                on_disk[i] = true;
                p.written_bytes += bytes[i];
                p.values_written += 1;
                *disk += bytes[i];
                p.disk_bytes = p.disk_bytes.max(*disk);
            }
        }
    };
    if held > budget {
        evict(
            &mut held,
            &mut disk,
            &mut heap,
            &mut resident,
            &mut on_disk,
            &next,
            &mut p,
        );
    }
    let mut prev_dense = order.first().and_then(|&id| dense(id));
    for (pos, &id) in order.iter().enumerate() {
        let k = id as usize;
        let v = ValueId(id);
        if k >= n || m.node(v).is_none() {
            continue;
        }
        let next_dense = order.get(pos + 1).and_then(|&id| dense(id));
        let fused_with_next = next_dense.is_some() && next_dense == prev_dense;
        prev_dense = next_dense;
        let ops = m.operands(v);
        let step = steps.get(pos).copied().unwrap_or(Step::Plain);
        let mut own = 0u64;
        for o in &ops {
            let j = o.0 as usize;
            own += bytes[j];
            if !resident[j] && remaining[j] > 0 {
                match step {
                    Step::Plain => {
                        resident[j] = true;
                        held += bytes[j];
                        p.read_bytes += bytes[j];
                    }
                    Step::StreamFirst => p.read_bytes += bytes[j],
                    Step::StreamMember => {}
                }
            }
        }
        if step != Step::Plain {
            own = own.min(budget / 8);
        }
        let mut made = 0;
        if remaining[k] > 0 && !resident[k] {
            made = bytes[k];
            resident[k] = true;
            heap.push((next_use(k, &next), Reverse(id)));
        }
        own += bytes[k];
        p.floor_bytes = p.floor_bytes.max(own);
        held += made;
        p.held_bytes = p.held_bytes.max(held);
        for o in &ops {
            let j = o.0 as usize;
            next[j] += 1;
            if let Some(r) = remaining.get_mut(j).filter(|r| **r > 0) {
                *r -= 1;
                if *r == 0 {
                    if resident[j] {
                        held -= bytes[j];
                        resident[j] = false;
                    }
                    if on_disk[j] {
                        disk -= bytes[j];
                    }
                    on_disk[j] = false;
                } else if resident[j] {
                    heap.push((next_use(j, &next), Reverse(o.0)));
                }
            }
        }
        if held > budget && !fused_with_next {
            evict(
                &mut held,
                &mut disk,
                &mut heap,
                &mut resident,
                &mut on_disk,
                &next,
                &mut p,
            );
        }
    }
    p
}
