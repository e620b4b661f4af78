//! Reference semantics of the HE IR on real slot vectors.
//!
//! Contract: [`interpret`] evaluates a module that passes the structural
//! verifier, in topological order, on plain `f64` vectors of each value's slot
//! count, with no encryption and no approximation error: `relinearize`,
//! `rescale` and `drop_level` are the identity, `rotate k` maps result slot `i`
//! to operand slot `(i + k) mod n`, `conjugate` is the identity (slots are
//! real), `bootstrap` is the identity once its preconditions hold (every slot within the
//! module's message bound, and periodic for a sparse bootstrap; else an error naming the node).
//! Values are freed after their last use, so memory is bounded by the
//! live set, not the graph size. It is the oracle for compiled circuits
//! (EVA's "reference executor").

use super::module::{Module, ValueId};
use super::op::Op;
use super::types::Layout;
use super::verify::{verify, VerifyOptions};
use super::VerifyErrors;
use petgraph::algo::toposort;
use std::collections::HashMap;

/// Why interpretation failed.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum InterpError {
    /// The module is not structurally valid.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Invalid(#[from] Box<VerifyErrors>),
    /// The input callback had no value for an input element.
    #[error("no value for input `{name}`[{index}]")]
    #[diagnostic(code(hecc::he::interp::missing_input))]
    MissingInput {
        /// Input name.
        name: String,
        /// Element index.
        index: u32,
    },
    /// The input callback returned a vector of the wrong length.
    #[error("input `{name}`[{index}] has {len} slots, its type has {slots}")]
    #[diagnostic(code(hecc::he::interp::input_length))]
    InputLength {
        /// Input name.
        name: String,
        /// Element index.
        index: u32,
        /// Length supplied.
        len: usize,
        /// Slot count of the type.
        slots: u32,
    },
    /// A bootstrap's operand has a slot outside the bootstrap's message bound.
    #[error(
        "bootstrap {node}: a slot of its operand is {max:.4e}, outside the message bound {bound}"
    )]
    #[diagnostic(
        code(hecc::he::interp::bootstrap_range),
        help("the bootstrap would return garbage in every slot; scale the value down before it")
    )]
    BootstrapRange {
        /// The bootstrap.
        node: ValueId,
        /// Largest operand magnitude (NaN when a slot is not a number).
        max: f64,
        /// The module's bound.
        bound: f64,
    },
    /// A sparse bootstrap's operand does not repeat with the bootstrap's period.
    #[error("bootstrap {node}: its operand does not repeat with period {period} (sparse slots)")]
    #[diagnostic(code(hecc::he::interp::bootstrap_period))]
    NotPeriodic {
        /// The bootstrap.
        node: ValueId,
        /// The bootstrap's slot count.
        period: u32,
    },
}

/// One output element produced by [`interpret`].
#[derive(Clone, Debug, PartialEq)]
pub struct OutputValue {
    /// Output name.
    pub name: String,
    /// Element index.
    pub index: u32,
    /// The value of the output node.
    pub id: ValueId,
    /// Slot values.
    pub slots: Vec<f64>,
}

/// Evaluates `module` on real vectors. `input(name, index, layout, slots)`
/// supplies the slot vector of each input element. Outputs are returned in
/// value-id order.
pub fn interpret<F>(module: &Module, input: F) -> Result<Vec<OutputValue>, InterpError>
where
    F: FnMut(&str, u32, &Layout, u32) -> Option<Vec<f64>>,
{
    verify(module, &VerifyOptions::STRUCTURE).map_err(Box::new)?;
    // The verifier rejects cycles, so toposort succeeds; map a failure to an
    // empty order defensively rather than panic.
    let order: Vec<ValueId> = toposort(module.graph(), None)
        .unwrap_or_default()
        .into_iter()
        .map(ValueId::from_node)
        .collect();
    interpret_in(module, order, input)
}

/// [`interpret`] in the order of `schedule` (value ids, as a plan records them): a node the
/// schedule misses runs as soon as its operands have. The values held at once then follow the
/// schedule's live set, which the compiler kept small, rather than that of an arbitrary
/// topological order (SqueezeNet's batch plan, 16,384 slots per value: 97 MiB of values at the
/// peak against 425 MiB). Ids the module does not hold are ignored.
pub fn interpret_scheduled<F>(
    module: &Module,
    schedule: &[u32],
    input: F,
) -> Result<Vec<OutputValue>, InterpError>
where
    F: FnMut(&str, u32, &Layout, u32) -> Option<Vec<f64>>,
{
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    verify(module, &VerifyOptions::STRUCTURE).map_err(Box::new)?;
    let mut pos: HashMap<ValueId, u64> = HashMap::with_capacity(schedule.len());
    for (i, &v) in schedule.iter().enumerate() {
        pos.entry(ValueId(v)).or_insert(i as u64);
    }
    // Kahn's algorithm, taking the ready node earliest in the schedule; an unscheduled node
    // inherits the position of the node that made it ready.
    let mut waiting: HashMap<ValueId, usize> = HashMap::new();
    let mut ready = BinaryHeap::new();
    for v in module.ids() {
        let mut ops = module.operands(v);
        ops.sort_unstable();
        ops.dedup();
        if ops.is_empty() {
            ready.push(Reverse((pos.get(&v).copied().unwrap_or(0), v)));
        } else {
            waiting.insert(v, ops.len());
        }
    }
    let mut order = Vec::with_capacity(waiting.len() + ready.len());
    while let Some(Reverse((p, v))) = ready.pop() {
        order.push(v);
        // Sorted already; a user that reads `v` twice is listed twice.
        let mut users = module.users(v);
        users.dedup();
        for u in users {
            if let Some(w) = waiting.get_mut(&u) {
                *w -= 1;
                if *w == 0 {
                    waiting.remove(&u);
                    ready.push(Reverse((pos.get(&u).copied().unwrap_or(p), u)));
                }
            }
        }
    }
    interpret_in(module, order, input)
}

/// Evaluates the nodes of `order` (a topological order of `module`).
fn interpret_in<F>(
    module: &Module,
    order: Vec<ValueId>,
    mut input: F,
) -> Result<Vec<OutputValue>, InterpError>
where
    F: FnMut(&str, u32, &Layout, u32) -> Option<Vec<f64>>,
{
    let mut remaining: HashMap<ValueId, usize> = HashMap::new();
    for v in module.ids() {
        remaining.insert(v, module.users(v).len());
    }
    let mut values: HashMap<ValueId, Vec<f64>> = HashMap::new();
    let mut outputs = Vec::new();
    for v in order {
        let Some(node) = module.node(v) else { continue };
        let operands = module.operands(v);
        let slots = node.ty.slots() as usize;
        let arg = |i: usize| -> &[f64] {
            operands
                .get(i)
                .and_then(|o| values.get(o))
                .map(Vec::as_slice)
                .unwrap_or(&[])
        };
        let unary = |f: &dyn Fn(f64) -> f64| -> Vec<f64> { arg(0).iter().map(|&x| f(x)).collect() };
        let binary = |f: &dyn Fn(f64, f64) -> f64| -> Vec<f64> {
            arg(0).iter().zip(arg(1)).map(|(&x, &y)| f(x, y)).collect()
        };
        if let (Op::Bootstrap, Some(boot)) = (&node.op, module.boot) {
            let x = arg(0);
            let max = x.iter().fold(0.0f64, |m, &v| {
                if v.is_nan() || m.is_nan() {
                    f64::NAN
                } else {
                    m.max(v.abs())
                }
            });
            if max.is_nan() || max > boot.message_bound {
                return Err(InterpError::BootstrapRange {
                    node: v,
                    max,
                    bound: boot.message_bound,
                });
            }
            let period = boot.slots as usize;
            if period > 0
                && period < x.len()
                && x.iter()
                    .enumerate()
                    .any(|(i, &y)| (y - x[i % period]).abs() > 1e-9 * boot.message_bound)
            {
                return Err(InterpError::NotPeriodic {
                    node: v,
                    period: boot.slots,
                });
            }
        }
        let result: Vec<f64> = match &node.op {
            Op::Input { name, index } => {
                let name = module.name(*name).unwrap_or("");
                let layout = module
                    .layout(node.ty.layout())
                    .cloned()
                    .unwrap_or(Layout::BATCH);
                let vals = input(name, *index, &layout, node.ty.slots()).ok_or_else(|| {
                    InterpError::MissingInput {
                        name: name.to_string(),
                        index: *index,
                    }
                })?;
                if vals.len() != slots {
                    return Err(InterpError::InputLength {
                        name: name.to_string(),
                        index: *index,
                        len: vals.len(),
                        slots: node.ty.slots(),
                    });
                }
                vals
            }
            Op::Encode { constant } => module
                .constant(*constant)
                .map(|c| c.values().into_owned())
                .unwrap_or_default(),
            Op::Add | Op::AddPlain => binary(&|x, y| x + y),
            Op::Sub | Op::SubPlain => binary(&|x, y| x - y),
            Op::Negate => unary(&|x| -x),
            Op::AddScalar { value } => unary(&|x| x + value),
            Op::Mul | Op::MulPlain => binary(&|x, y| x * y),
            Op::Square => unary(&|x| x * x),
            Op::MulScalar { value, .. } => unary(&|x| x * value),
            Op::MulInteger { factor } => unary(&|x| x * (*factor as f64)),
            Op::Mac(attrs) => {
                let mut acc = vec![attrs.bias.unwrap_or(0.0); slots];
                for (i, c) in attrs.coeffs.iter().enumerate() {
                    for (a, x) in acc.iter_mut().zip(arg(i)) {
                        *a += c * x;
                    }
                }
                acc
            }
            Op::Relinearize
            | Op::Rescale
            | Op::DropLevel { .. }
            | Op::Conjugate
            | Op::Bootstrap
            | Op::Output { .. } => arg(0).to_vec(),
            Op::Rotate { steps } => {
                let x = arg(0);
                let n = x.len() as i64;
                if n == 0 {
                    Vec::new()
                } else {
                    let k = i64::from(*steps).rem_euclid(n);
                    (0..n).map(|i| x[((i + k) % n) as usize]).collect()
                }
            }
        };
        if let Op::Output { name, index } = &node.op {
            outputs.push(OutputValue {
                name: module.name(*name).unwrap_or("").to_string(),
                index: *index,
                id: v,
                slots: result.clone(),
            });
        }
        for o in &operands {
            if let Some(r) = remaining.get_mut(o) {
                *r = r.saturating_sub(1);
                if *r == 0 {
                    values.remove(o);
                }
            }
        }
        if remaining.get(&v).copied().unwrap_or(0) > 0 {
            values.insert(v, result);
        }
    }
    outputs.sort_by_key(|o| o.id);
    Ok(outputs)
}
