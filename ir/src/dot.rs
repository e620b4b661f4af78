//! Graphviz DOT export of both IRs, for `dot -Tsvg`.
//!
//! Contract: [`tensor_to_dot`] and [`he_to_dot`] never fail and produce one
//! `digraph` with one vertex per node (ids `n<N>` for node `%N`), one edge per
//! operand (labelled with its slot when the user has several operands, and
//! with its scalar for `mac`), and
//! labels showing the op, its main attributes and the inferred shape / the HE
//! type. Labels are escaped for DOT double-quoted strings.

use crate::he::{Module, Op as HeOp, Type};
use crate::tensor::verify::analyze;
use crate::tensor::Graph;
use crate::text::tir_print::op_attrs;
use std::fmt::Write;

/// Escapes a label for a DOT double-quoted string (newlines become `\n`).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// DOT for a tensor graph: node name, op, attributes and inferred shape.
pub fn tensor_to_dot(g: &Graph) -> String {
    let (shapes, _) = analyze(g);
    let mut s = String::new();
    let _ = writeln!(s, "digraph \"{}\" {{", escape(&g.name));
    s.push_str("  rankdir=TB;\n  node [shape=box, style=\"rounded,filled\", fillcolor=white, fontname=\"monospace\"];\n");
    for id in g.node_ids() {
        let Some(n) = g.node(id) else { continue };
        let mut label = format!("{id} {}\n{}", n.name, n.op.mnemonic());
        for (k, v) in op_attrs(&n.op) {
            let v = if v.len() > 40 {
                format!("{}...", v.chars().take(37).collect::<String>())
            } else {
                v
            };
            let _ = write!(label, "\n{k} = {v}");
        }
        if let Some(shape) = shapes.get(&id) {
            let _ = write!(label, "\n: {shape}");
        }
        let color = if g.inputs.contains(&id) {
            "palegreen"
        } else if g.outputs.contains(&id) {
            "lightsalmon"
        } else if n.op.is_activation() {
            "khaki"
        } else {
            "white"
        };
        let _ = writeln!(
            s,
            "  n{} [label=\"{}\", fillcolor={color}];",
            id.0,
            escape(&label)
        );
    }
    for id in g.node_ids() {
        let ops = g.operands(id);
        for (slot, src) in &ops {
            if ops.len() > 1 {
                let _ = writeln!(s, "  n{} -> n{} [label=\"{slot}\"];", src.0, id.0);
            } else {
                let _ = writeln!(s, "  n{} -> n{};", src.0, id.0);
            }
        }
    }
    s.push_str("}\n");
    s
}

fn he_type_label(m: &Module, ty: &Type) -> String {
    let head = match ty {
        Type::Cipher { .. } => "ct",
        Type::Plain { .. } => "pt",
    };
    let layout = m
        .layout_name(ty.layout())
        .map(str::to_string)
        .unwrap_or_else(|| format!("#{}", ty.layout().0));
    let size = match ty {
        Type::Cipher { size, .. } if *size != 2 => format!(" size={size}"),
        _ => String::new(),
    };
    format!(
        "{head} l={} s={} n={} {layout}{size}",
        ty.level(),
        ty.log_scale(),
        ty.slots()
    )
}

/// DOT for an HE module: op, immediate attributes and type per value.
pub fn he_to_dot(m: &Module) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "digraph \"{}\" {{", escape(&m.meta.name));
    s.push_str("  rankdir=TB;\n  node [shape=box, style=\"rounded,filled\", fillcolor=white, fontname=\"monospace\"];\n");
    for v in m.ids() {
        let Some(n) = m.node(v) else { continue };
        let name = |id| m.name(id).unwrap_or("?").to_string();
        let attrs = match &n.op {
            HeOp::Input { name: nm, index } | HeOp::Output { name: nm, index } => {
                format!(" {}[{index}]", name(*nm))
            }
            HeOp::Encode { constant } => format!(" {constant}"),
            HeOp::AddScalar { value } => format!(" {value:?}"),
            HeOp::MulScalar { value, log_scale } => format!(" {value:?} s={log_scale}"),
            HeOp::MulInteger { factor } => format!(" {factor}"),
            HeOp::Mac(a) => format!(
                " {} terms{} s={}",
                a.coeffs.len(),
                a.bias.map(|b| format!(" + {b:?}")).unwrap_or_default(),
                a.log_scale
            ),
            HeOp::DropLevel { to } => format!(" to {to}"),
            HeOp::Rotate { steps } => format!(" {steps}"),
            HeOp::Add
            | HeOp::Sub
            | HeOp::Negate
            | HeOp::AddPlain
            | HeOp::SubPlain
            | HeOp::Mul
            | HeOp::Square
            | HeOp::MulPlain
            | HeOp::Relinearize
            | HeOp::Rescale
            | HeOp::Conjugate
            | HeOp::Bootstrap => String::new(),
        };
        let label = format!(
            "{v} {}{attrs}\n{}",
            n.op.mnemonic(),
            he_type_label(m, &n.ty)
        );
        let color = match &n.op {
            HeOp::Input { .. } => "palegreen",
            HeOp::Output { .. } => "lightsalmon",
            HeOp::Encode { .. } => "lightgrey",
            HeOp::Rescale | HeOp::Relinearize | HeOp::DropLevel { .. } => "lightblue",
            HeOp::Bootstrap => "orange",
            HeOp::Rotate { .. } | HeOp::Conjugate => "plum",
            HeOp::Mul | HeOp::Square | HeOp::MulPlain | HeOp::MulScalar { .. } | HeOp::Mac(_) => {
                "khaki"
            }
            HeOp::Add
            | HeOp::Sub
            | HeOp::Negate
            | HeOp::AddPlain
            | HeOp::SubPlain
            | HeOp::AddScalar { .. }
            | HeOp::MulInteger { .. } => "white",
        };
        let _ = writeln!(
            s,
            "  n{} [label=\"{}\", fillcolor={color}];",
            v.0,
            escape(&label)
        );
    }
    for v in m.ids() {
        let ops = m.operand_slots(v);
        let coeffs = match m.node(v).map(|n| &n.op) {
            Some(HeOp::Mac(a)) => Some(&a.coeffs),
            _ => None,
        };
        for (slot, src) in &ops {
            if let Some(c) = coeffs.and_then(|c| c.get(*slot as usize)) {
                let _ = writeln!(s, "  n{} -> n{} [label=\"{slot}: *{c:?}\"];", src.0, v.0);
            } else if ops.len() > 1 {
                let _ = writeln!(s, "  n{} -> n{} [label=\"{slot}\"];", src.0, v.0);
            } else {
                let _ = writeln!(s, "  n{} -> n{};", src.0, v.0);
            }
        }
    }
    s.push_str("}\n");
    s
}
