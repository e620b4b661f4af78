//! The HE verifier.
//!
//! Contract: [`verify`] never panics and never stops at the first problem; it
//! returns every finding at once, each naming the node (`%N`) and its op. It
//! checks operand wiring (arity, duplicate or missing slots), operand kinds,
//! slot counts, layouts and ciphertext sizes, table references (names, layouts,
//! constants and their lengths), that the layout of each `input`/`encode` fits
//! its slot count for the module's batch size, that each stored result type equals the type
//! the builders would infer, cycles, and, when [`VerifyOptions`] asks for it,
//! that the operands of additive ops and of `mac` share level and scale and the
//! operands of multiplicative ops share level (the invariants of a managed
//! circuit, after rescale/modswitch insertion).

use super::error::{HeError, NodeErrorKind, Site, VerifyErrors};
use super::module::{Module, ValueId};
use super::op::{Arity, Op, Opcode};
use super::types::{Kind, Type};
use petgraph::algo::tarjan_scc;

/// What the verifier requires beyond structure.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VerifyOptions {
    /// Operands of multi-operand ops must be at the same level.
    pub levels: bool,
    /// Operands of additive ops and `mac` must have the same scale.
    pub scales: bool,
    /// Allowed difference between log-scales (bits) in scale checks and in the
    /// comparison of stored and inferred types.
    pub scale_tolerance: f64,
}

impl VerifyOptions {
    /// Everything: the invariants of a circuit ready to run.
    pub const STRICT: VerifyOptions = VerifyOptions {
        levels: true,
        scales: true,
        scale_tolerance: 1e-6,
    };
    /// Structure and types only: for circuits before level/scale management.
    pub const STRUCTURE: VerifyOptions = VerifyOptions {
        levels: false,
        scales: false,
        scale_tolerance: 1e-6,
    };
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions::STRICT
    }
}

/// Checks `module` and returns every problem found.
pub fn verify(module: &Module, opts: &VerifyOptions) -> Result<(), VerifyErrors> {
    let mut errors = Vec::new();
    check_params(module, &mut errors);
    // Slots each layout needs, computed once.
    let needs: Vec<u64> = module
        .layouts()
        .map(|(_, _, l)| l.span(module.meta.batch).unwrap_or(u64::MAX))
        .collect();
    for v in module.ids() {
        check_node(module, v, opts, &needs, &mut errors);
    }
    // A module whose every operand has a smaller id than its user (what building and
    // rebuilding produce) has no cycle; the components are searched only otherwise.
    let sccs = if module.ids_are_topological() {
        Vec::new()
    } else {
        tarjan_scc(module.graph())
    };
    for scc in sccs {
        let cyclic = scc.len() > 1
            || scc
                .first()
                .is_some_and(|&n| module.graph().find_edge(n, n).is_some());
        if cyclic {
            let mut nodes: Vec<ValueId> = scc.into_iter().map(ValueId::from_node).collect();
            nodes.sort_unstable();
            errors.push(HeError::Cycle { nodes });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(VerifyErrors {
            module: module.meta.name.clone(),
            errors,
        })
    }
}

fn check_params(module: &Module, errors: &mut Vec<HeError>) {
    let Some(p) = &module.params else { return };
    if !(1..=20).contains(&p.log_n) {
        errors.push(HeError::Params(format!(
            "log_n = {} is outside 1..=20",
            p.log_n
        )));
        return;
    }
    if p.primes.iter().any(|&q| q < 2) {
        errors.push(HeError::Params("a prime is smaller than 2".into()));
    }
    let max_slots = 1u64 << (p.log_n - 1);
    let top = p.primes.len();
    if let Some(b) = &module.boot {
        let needed = b.out_level.0 as usize + b.depth as usize + 1;
        if !p.primes.is_empty() && needed > top {
            errors.push(HeError::Params(format!(
                "bootstrapping to level {} with depth {} needs {needed} primes, parameters have {top}",
                b.out_level, b.depth
            )));
        }
        if u64::from(b.slots) > max_slots {
            errors.push(HeError::Params(format!(
                "bootstrap slots {} exceed N/2 = {max_slots}",
                b.slots
            )));
        }
    }
    for v in module.ids() {
        let Some(n) = module.node(v) else { continue };
        let site = Site::Node(v, n.op.opcode());
        if u64::from(n.ty.slots()) > max_slots {
            errors.push(HeError::Params(format!(
                "{site}: {} slots exceed N/2 = {max_slots}",
                n.ty.slots()
            )));
        }
        if !p.primes.is_empty() && n.ty.level().0 as usize >= top {
            errors.push(HeError::Params(format!(
                "{site}: level {} needs {} primes, parameters have {top}",
                n.ty.level(),
                n.ty.level().0 + 1
            )));
        }
    }
}

fn check_node(
    module: &Module,
    v: ValueId,
    opts: &VerifyOptions,
    needs: &[u64],
    errors: &mut Vec<HeError>,
) {
    let Some(node) = module.node(v) else { return };
    let code = node.op.opcode();
    let site = Site::Node(v, code);
    let mut push = |kind: NodeErrorKind| errors.push(HeError::Node { site, kind });

    // Wiring: slots must be exactly 0..k.
    let slots = module.operand_slots(v);
    let mut wiring_ok = true;
    let mut expect = 0u32;
    for (slot, _) in &slots {
        if *slot < expect {
            push(NodeErrorKind::DuplicateOperand { slot: *slot });
            wiring_ok = false;
        } else {
            while expect < *slot {
                push(NodeErrorKind::MissingOperand { slot: expect });
                wiring_ok = false;
                expect += 1;
            }
            expect = slot + 1;
        }
    }
    let wanted = match (&node.op, code.info().arity) {
        (Op::Mac(a), _) => a.coeffs.len(),
        (_, Arity::Fixed(k)) => usize::from(k),
        (_, Arity::Variadic { min }) => usize::from(min).max(slots.len()),
    };
    while (expect as usize) < wanted {
        push(NodeErrorKind::MissingOperand { slot: expect });
        wiring_ok = false;
        expect += 1;
    }
    if wiring_ok && !code.info().arity.accepts(slots.len()) {
        push(NodeErrorKind::Arity {
            expected: code.info().arity,
            found: slots.len(),
        });
        wiring_ok = false;
    }

    // Table references.
    if module.layout(node.ty.layout()).is_none() {
        push(NodeErrorKind::UnknownLayout(node.ty.layout()));
        return;
    }
    if node.ty.slots() == 0 {
        push(NodeErrorKind::ZeroSlots);
    }
    if let Some(&needed) = needs.get(node.ty.layout().0 as usize) {
        // Report where the layout is introduced, not on every later value.
        let source = matches!(code, Opcode::Input | Opcode::Encode);
        if source && needed > u64::from(node.ty.slots()) {
            push(NodeErrorKind::LayoutOverflow {
                needed,
                slots: node.ty.slots(),
            });
        }
    }
    match &node.op {
        Op::Input { name, .. } | Op::Output { name, .. } if module.name(*name).is_none() => {
            push(NodeErrorKind::UnknownName(*name));
        }
        Op::Encode { constant } => match module.constant(*constant) {
            None => push(NodeErrorKind::UnknownConst(*constant)),
            Some(c) if c.len() != node.ty.slots() as usize => push(NodeErrorKind::ConstLength {
                id: *constant,
                len: c.len(),
                slots: node.ty.slots(),
            }),
            Some(_) => {}
        },
        _ => {}
    }

    // Source ops carry their type.
    match code {
        Opcode::Input => {
            if !matches!(node.ty, Type::Cipher { size: 2, .. }) {
                push(NodeErrorKind::ResultKind {
                    expected: "size-2 ciphertext",
                    found: node.ty,
                });
            }
            return;
        }
        Opcode::Encode => {
            if node.ty.kind() != Kind::Plain {
                push(NodeErrorKind::ResultKind {
                    expected: "plaintext",
                    found: node.ty,
                });
            }
            return;
        }
        _ => {}
    }
    if !wiring_ok {
        return;
    }
    let mut tys = Vec::with_capacity(slots.len());
    for (slot, o) in &slots {
        match module.ty(*o) {
            Some(t) => tys.push(t),
            None => {
                push(NodeErrorKind::UnknownOperand {
                    slot: *slot,
                    value: *o,
                });
                return;
            }
        }
    }
    match module.infer_type(&node.op, &tys) {
        Err(kind) => {
            push(kind);
            return;
        }
        Ok(inferred) => {
            if !inferred.approx_eq(&node.ty, opts.scale_tolerance) {
                push(NodeErrorKind::ResultType {
                    stored: node.ty,
                    inferred,
                });
            }
        }
    }
    let Some(first) = tys.first().copied() else {
        return;
    };
    let additive = matches!(
        code,
        Opcode::Add | Opcode::Sub | Opcode::AddPlain | Opcode::SubPlain | Opcode::Mac
    );
    if opts.levels {
        if let Some(t) = tys.iter().find(|t| t.level() != first.level()) {
            push(NodeErrorKind::LevelMismatch {
                first: first.level(),
                other: t.level(),
            });
        }
    }
    if opts.scales && additive {
        if let Some(t) = tys.iter().find(|t| {
            !t.log_scale()
                .close_to(first.log_scale(), opts.scale_tolerance)
        }) {
            push(NodeErrorKind::ScaleMismatch {
                first: first.log_scale(),
                other: t.log_scale(),
            });
        }
    }
}
