//! Printer of the HE text form (`.he`).
//!
//! Contract: `Display for Module` writes the exact form, which
//! [`super::parse_module`] reads back to a module that prints identically.
//! Layout:
//!
//! ```text
//! module "lenet" {batch = 64, log_scale = 40.0}
//! params {log_n = 13, primes = [1152921504606846883, 1099511627689]}
//! boot {level = 1, in_scale = 40, out_scale = 40, depth = 16, bound = 1, slots = 4096}
//! layout batch = batch{offset=0, stride=1}
//! const @0 = [0.5, -1.0]
//! %0 = input "x"[0] : ct<l=1, s=40.0, n=4096, batch>
//! %1 = mul_scalar %0, 0.25, s=20.0 : ct<l=1, s=60.0, n=4096, batch>
//! %2 = mac [%0 * 0.5, %1 * -2.0] + 1.0, s=20.0 : ct<l=1, s=60.0, n=4096, batch>
//! %3 = output %2, "y"[0] : ct<l=1, s=60.0, n=4096, batch>
//! ```
//!
//! Nodes are printed in topological order (ties broken by id) and keep their
//! ids, holes included. Floats use Rust's shortest round-trip form. Operand
//! slots are printed in slot order; a missing slot of an invalid module cannot
//! be represented and is skipped. Constant-pool vectors of 64 values or more that a
//! [`Tiled`] description writes in fewer than half their values are printed in that
//! compact form (`tile(len = .., period = .., count = ..) {start: [v, v * k], ..}`, see
//! [`crate::he::compact`]), which reads back bit for bit. [`PrintOptions::elide_constants`]
//! shortens big constant-pool vectors to `elided(len)`, which the parser refuses.

use super::lexer::{fmt_f64, quote};
use crate::he::compact::Tiled;
use crate::he::{Module, Op, Type, ValueId};
use std::fmt::{self, Write};

/// Options of [`print_module`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrintOptions {
    /// Print constant-pool vectors longer than this as `elided(len)` (not
    /// readable back). `None` prints everything.
    pub elide_constants: Option<usize>,
}

/// Prints `module` with `opts`.
pub fn print_module(module: &Module, opts: &PrintOptions) -> String {
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = write_module(&mut s, module, opts);
    s
}

impl fmt::Display for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_module(f, self, &PrintOptions::default())
    }
}

/// Node ids in topological order, ties broken by id; nodes on or after
/// cycles follow in id order so that printing never fails.
pub fn print_order(module: &Module) -> Vec<ValueId> {
    let (mut order, rest) = module.topo_partition();
    order.extend(rest);
    order
}

fn write_type<W: Write>(w: &mut W, module: &Module, ty: &Type) -> fmt::Result {
    let head = match ty {
        Type::Cipher { .. } => "ct",
        Type::Plain { .. } => "pt",
    };
    write!(
        w,
        "{head}<l={}, s={}, n={}, ",
        ty.level(),
        fmt_f64(ty.log_scale().0),
        ty.slots()
    )?;
    match module.layout_name(ty.layout()) {
        Some(name) => w.write_str(name)?,
        None => write!(w, "#{}", ty.layout().0)?,
    }
    if let Type::Cipher { size, .. } = ty {
        if *size != 2 {
            write!(w, ", size={size}")?;
        }
    }
    w.write_str(">")
}

fn write_list<W: Write, T, F: Fn(&mut W, &T) -> fmt::Result>(
    w: &mut W,
    items: &[T],
    f: F,
) -> fmt::Result {
    w.write_str("[")?;
    for (i, x) in items.iter().enumerate() {
        if i > 0 {
            w.write_str(", ")?;
        }
        f(w, x)?;
    }
    w.write_str("]")
}

/// Writes one node line (without newline).
pub fn write_node<W: Write>(w: &mut W, module: &Module, v: ValueId) -> fmt::Result {
    let Some(node) = module.node(v) else {
        return write!(w, "// {v} does not exist");
    };
    let ops = module.operands(v);
    let opnd = |i: usize| -> String {
        ops.get(i)
            .map(|o| o.to_string())
            .unwrap_or_else(|| "%?".to_string())
    };
    let name = |id| quote(module.name(id).unwrap_or(""));
    write!(w, "{v} = {}", node.op.mnemonic())?;
    match &node.op {
        Op::Input { name: n, index } => write!(w, " {}[{index}]", name(*n))?,
        Op::Encode { constant } => write!(w, " {constant}")?,
        Op::Add | Op::Sub | Op::AddPlain | Op::SubPlain | Op::Mul | Op::MulPlain => {
            write!(w, " {}, {}", opnd(0), opnd(1))?
        }
        Op::Negate | Op::Square | Op::Relinearize | Op::Rescale | Op::Conjugate | Op::Bootstrap => {
            write!(w, " {}", opnd(0))?
        }
        Op::AddScalar { value } => write!(w, " {}, {}", opnd(0), fmt_f64(*value))?,
        Op::MulScalar { value, log_scale } => write!(
            w,
            " {}, {}, s={}",
            opnd(0),
            fmt_f64(*value),
            fmt_f64(log_scale.0)
        )?,
        Op::MulInteger { factor } => write!(w, " {}, {factor}", opnd(0))?,
        Op::Mac(attrs) => {
            w.write_str(" [")?;
            let n = attrs.coeffs.len().max(ops.len());
            for i in 0..n {
                if i > 0 {
                    w.write_str(", ")?;
                }
                let c = attrs.coeffs.get(i).copied().unwrap_or(f64::NAN);
                write!(w, "{} * {}", opnd(i), fmt_f64(c))?;
            }
            w.write_str("]")?;
            if let Some(b) = attrs.bias {
                write!(w, " + {}", fmt_f64(b))?;
            }
            write!(w, ", s={}", fmt_f64(attrs.log_scale.0))?;
        }
        Op::DropLevel { to } => write!(w, " {}, {to}", opnd(0))?,
        Op::Rotate { steps } => write!(w, " {}, {steps}", opnd(0))?,
        Op::Output { name: n, index } => write!(w, " {}, {}[{index}]", opnd(0), name(*n))?,
    }
    w.write_str(" : ")?;
    write_type(w, module, &node.ty)
}

fn write_module<W: Write>(w: &mut W, module: &Module, opts: &PrintOptions) -> fmt::Result {
    let meta = &module.meta;
    writeln!(
        w,
        "module {} {{batch = {}, log_scale = {}}}",
        quote(&meta.name),
        meta.batch,
        fmt_f64(meta.log_scale.0)
    )?;
    if let Some(p) = &module.params {
        write!(w, "params {{log_n = {}, primes = ", p.log_n)?;
        write_list(w, &p.primes, |w, q| write!(w, "{q}"))?;
        writeln!(w, "}}")?;
    }
    if let Some(b) = &module.boot {
        writeln!(
            w,
            "boot {{level = {}, in_scale = {}, out_scale = {}, depth = {}, bound = {}, slots = {}}}",
            b.out_level.0,
            fmt_f64(b.in_log_scale.0),
            fmt_f64(b.out_log_scale.0),
            b.depth,
            fmt_f64(b.message_bound),
            b.slots
        )?;
    }
    for (_, name, layout) in module.layouts() {
        writeln!(w, "layout {name} = {layout}")?;
    }
    for (id, c) in module.constants() {
        write!(w, "const {id} = ")?;
        match opts.elide_constants {
            Some(limit) if c.len() > limit => write!(w, "elided({})", c.len())?,
            _ => {
                let values = c.values();
                match compact_form(&values) {
                    Some(t) => write_tiled(w, &t)?,
                    None => write_list(w, &values, |w, x| w.write_str(&fmt_f64(*x)))?,
                }
            }
        }
        writeln!(w)?;
    }
    for v in print_order(module) {
        write_node(w, module, v)?;
        writeln!(w)?;
    }
    Ok(())
}

/// Vectors shorter than this are always printed as plain lists.
const COMPACT_MIN_LEN: usize = 64;

/// The [`Tiled`] form of a long constant when it writes fewer values than the plain list.
fn compact_form(values: &[f64]) -> Option<Tiled> {
    if values.len() < COMPACT_MIN_LEN {
        return None;
    }
    let t = Tiled::of(values);
    (2 * t.written() < values.len()).then_some(t)
}

/// `tile(len = N, period = P, count = K) {S: [v, v * k, ...], ...}` (see [`crate::he::compact`]).
fn write_tiled<W: Write>(w: &mut W, t: &Tiled) -> fmt::Result {
    write!(
        w,
        "tile(len = {}, period = {}, count = {}) {{",
        t.len, t.period, t.count
    )?;
    for (i, run) in t.runs.iter().enumerate() {
        if i > 0 {
            w.write_str(", ")?;
        }
        write!(w, "{}: ", run.start)?;
        write_list(w, &run.items, |w, &(x, k)| {
            w.write_str(&fmt_f64(x))?;
            if k > 1 {
                write!(w, " * {k}")?;
            }
            Ok(())
        })?;
    }
    w.write_str("}")
}
