//! Passes on the HE IR: scale and level management, relinearization, dead code and common
//! subexpression elimination, and the analyses the reports use.

pub mod manage;
pub mod split;

pub use manage::{depth_of, manage, manage_traced, ManageError, Managed, Placement, RescalePolicy};
pub use split::{split_wide_macs, split_wide_macs_copy, SplitStats};

use hecc_ir::he::{Module, Op, ValueId};
use std::collections::HashMap;

/// Removes nodes whose value is never used and that are not outputs. Returns how many.
pub fn dce(m: &mut Module) -> usize {
    let mut removed = 0;
    loop {
        let dead: Vec<ValueId> = m
            .ids()
            .filter(|&v| {
                !matches!(m.node(v).map(|n| &n.op), Some(Op::Output { .. }))
                    && m.users(v).is_empty()
            })
            .collect();
        if dead.is_empty() {
            return removed;
        }
        for v in dead {
            m.remove(v);
            removed += 1;
        }
    }
}

/// Merges nodes computing the same op on the same operands (and the same attributes).
/// Returns how many nodes were merged away.
pub fn cse(m: &mut Module) -> usize {
    let order = match petgraph::algo::toposort(m.graph(), None) {
        Ok(o) => o,
        Err(_) => return 0,
    };
    let mut seen: HashMap<String, ValueId> = HashMap::new();
    let mut merged = 0;
    for ix in order {
        let v = ValueId::from_node(ix);
        let Some(node) = m.node(v) else { continue };
        if matches!(node.op, Op::Output { .. }) {
            continue;
        }
        // Attributes and operands as a key (f64s by bit pattern through Debug's exact form).
        let key = format!("{:?}|{:?}|{:?}", node.op, m.operand_slots(v), node.ty);
        match seen.get(&key) {
            Some(&first) => {
                if m.replace_uses(v, first).is_ok() {
                    m.remove(v);
                    merged += 1;
                }
            }
            None => {
                seen.insert(key, v);
            }
        }
    }
    merged
}
