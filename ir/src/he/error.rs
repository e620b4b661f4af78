//! Errors of the HE IR: builder failures and verifier findings.
//!
//! Contract: every error that concerns a node names it ([`Site`]: the value id
//! and opcode, or the opcode of a node that a builder refused to create). The
//! verifier collects all of them into [`VerifyErrors`], a miette diagnostic whose
//! `related` list holds each finding.

use super::op::{Arity, ConstId, NameId, Opcode};
use super::types::{Kind, LayoutId, Level, LogScale, Type};
use super::ValueId;
use std::fmt;

/// Where a node error happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    /// An existing node.
    Node(ValueId, Opcode),
    /// A node a builder was asked to create.
    New(Opcode),
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Site::Node(v, op) => write!(f, "{v} ({op})"),
            Site::New(op) => write!(f, "new `{op}`"),
        }
    }
}

/// What is wrong with one node.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum NodeErrorKind {
    /// Wrong number of operands.
    #[error("expects {expected} operand(s), has {found}")]
    Arity {
        /// Expected arity.
        expected: Arity,
        /// Operands present.
        found: usize,
    },
    /// An operand slot is empty (its value was removed or never connected).
    #[error("operand slot {slot} is missing (dangling operand)")]
    MissingOperand {
        /// The empty slot.
        slot: u32,
    },
    /// Two edges claim the same operand slot.
    #[error("operand slot {slot} is connected twice")]
    DuplicateOperand {
        /// The slot.
        slot: u32,
    },
    /// An operand refers to a value that does not exist.
    #[error("operand {slot} refers to unknown value {value}")]
    UnknownOperand {
        /// The slot.
        slot: u32,
        /// The missing value.
        value: ValueId,
    },
    /// An operand has the wrong kind.
    #[error("operand {slot} must be a {expected}, found a {found}")]
    OperandKind {
        /// The slot.
        slot: u32,
        /// Expected kind.
        expected: Kind,
        /// Actual kind.
        found: Kind,
    },
    /// Operands at different levels.
    #[error("operands are at different levels ({first} and {other})")]
    LevelMismatch {
        /// Level of operand 0.
        first: Level,
        /// Level of a later operand.
        other: Level,
    },
    /// Operands at different scales.
    #[error("operands have different log-scales ({first} and {other})")]
    ScaleMismatch {
        /// Log-scale of operand 0.
        first: LogScale,
        /// Log-scale of a later operand.
        other: LogScale,
    },
    /// Operands with different slot counts.
    #[error("operands have different slot counts ({first} and {other})")]
    SlotsMismatch {
        /// Slots of operand 0.
        first: u32,
        /// Slots of a later operand.
        other: u32,
    },
    /// Operands with different layouts.
    #[error("operands have different layouts (#{} and #{})", first.0, other.0)]
    LayoutMismatch {
        /// Layout of operand 0.
        first: LayoutId,
        /// Layout of a later operand.
        other: LayoutId,
    },
    /// The op needs size-2 ciphertexts (relinearize first).
    #[error("operand {slot} has size {size}; relinearize it first")]
    NeedsRelinearized {
        /// The slot.
        slot: u32,
        /// Its size.
        size: u8,
    },
    /// relinearize applied to something that is not a size-3 ciphertext.
    #[error("relinearize needs a size-3 ciphertext, operand has size {size}")]
    NothingToRelinearize {
        /// The operand's size.
        size: u8,
    },
    /// rescale at level 0.
    #[error("cannot rescale at level 0")]
    RescaleAtLevelZero,
    /// drop_level to a higher level.
    #[error("cannot drop from level {from} up to level {to}")]
    DropLevelUp {
        /// Operand level.
        from: Level,
        /// Requested level.
        to: Level,
    },
    /// A mac whose scalar count differs from its operand count.
    #[error("has {coeffs} scalar(s) for {operands} operand(s)")]
    CoeffCount {
        /// Number of scalars.
        coeffs: usize,
        /// Number of operands.
        operands: usize,
    },
    /// Reference to a missing constant.
    #[error("constant {0} is not in the pool")]
    UnknownConst(ConstId),
    /// A constant whose length differs from the plaintext's slot count.
    #[error("constant {id} has {len} values but the plaintext has {slots} slots")]
    ConstLength {
        /// The constant.
        id: ConstId,
        /// Its length.
        len: usize,
        /// The slot count.
        slots: u32,
    },
    /// Reference to a missing name.
    #[error("name #{} is not in the name table", .0 .0)]
    UnknownName(NameId),
    /// Reference to a missing layout.
    #[error("layout #{} is not in the layout table", .0 .0)]
    UnknownLayout(LayoutId),
    /// A result of the wrong kind or size.
    #[error("result must be a {expected}, found {found}")]
    ResultKind {
        /// Expected description.
        expected: &'static str,
        /// Found type.
        found: Type,
    },
    /// The stored result type differs from the inferred one.
    #[error("result type is {stored} but the operands give {inferred}")]
    ResultType {
        /// Type stored on the node.
        stored: Type,
        /// Type implied by the op and its operands.
        inferred: Type,
    },
    /// `input`/`encode` carry their type; it cannot be inferred.
    #[error("has no operands to infer a type from (use the `input`/`encode` builders)")]
    NotInferable,
    /// The value's layout needs more slots than the type has.
    #[error("layout needs {needed} slots (batch of the module included), the type has {slots}")]
    LayoutOverflow {
        /// Slots the layout uses (`u64::MAX` when that overflows).
        needed: u64,
        /// Slots of the type.
        slots: u32,
    },
    /// A slot count of zero.
    #[error("slot count must be positive")]
    ZeroSlots,
    /// A `bootstrap` in a module without bootstrap parameters.
    #[error("the module has no bootstrap parameters (`boot` header)")]
    NoBootstrapParameters,
    /// A `bootstrap` whose operand is not at the bootstrap's input scale.
    #[error("operand log-scale {found} is not the bootstrap input log-scale {expected}")]
    BootstrapScale {
        /// The bootstrap's input log-scale.
        expected: LogScale,
        /// The operand's.
        found: LogScale,
    },
}

/// An HE IR error.
#[derive(Clone, Debug, PartialEq, thiserror::Error, miette::Diagnostic)]
pub enum HeError {
    /// Something is wrong with one node.
    #[error("{site}: {kind}")]
    #[diagnostic(code(hecc::he::node))]
    Node {
        /// The node (or the op a builder was asked to create).
        site: Site,
        /// What is wrong.
        kind: NodeErrorKind,
    },
    /// A value id that is not in the module.
    #[error("unknown value {0}")]
    #[diagnostic(code(hecc::he::unknown_value))]
    UnknownValue(ValueId),
    /// A layout name defined twice.
    #[error("layout `{0}` is defined twice")]
    #[diagnostic(code(hecc::he::duplicate_layout))]
    DuplicateLayout(String),
    /// A layout name that is not a valid identifier.
    #[error("layout name `{0}` is not an identifier")]
    #[diagnostic(code(hecc::he::layout_name))]
    BadLayoutName(String),
    /// The graph has a cycle.
    #[error("cycle through {}", fmt_ids(.nodes))]
    #[diagnostic(code(hecc::he::cycle))]
    Cycle {
        /// The nodes of one strongly connected component.
        nodes: Vec<ValueId>,
    },
    /// A layout does not fit the slots of the parameters.
    #[error("module parameters: {0}")]
    #[diagnostic(code(hecc::he::params))]
    Params(String),
}

fn fmt_ids(ids: &[ValueId]) -> String {
    let mut s = String::new();
    for (i, v) in ids.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&v.to_string());
    }
    s
}

/// All findings of one verifier run.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("HE module `{module}` failed verification with {} error(s)", errors.len())]
pub struct VerifyErrors {
    /// Module name.
    pub module: String,
    /// Every finding, in node order.
    pub errors: Vec<HeError>,
}

impl miette::Diagnostic for VerifyErrors {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new("hecc::he::verify"))
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        Some(Box::new(
            self.errors.iter().map(|e| e as &dyn miette::Diagnostic),
        ))
    }
}
