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

/// Values alive after one step of an order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Live {
    /// How many.
    pub values: u64,
    /// Their bytes.
    pub bytes: u64,
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
