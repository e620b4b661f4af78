//! Verifier findings printed inline in the source text (Cranelift style).
//!
//! Contract: [`annotate_module`] returns the source with, after each node
//! line that has findings, one `// error: ...` comment per finding; findings
//! not tied to a parsed node (cycles, parameters) come first. Because the
//! annotations are comments, the result still parses to the same module.

use super::error::floor_boundary;
use super::he_parse::HeSpans;
use crate::he::{HeError, Site, ValueId, VerifyErrors};
use std::collections::BTreeMap;

/// The source of a parsed module with its verifier findings inline.
pub fn annotate_module(src: &str, spans: &HeSpans, errors: &VerifyErrors) -> String {
    let mut by_line_end: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut global = Vec::new();
    for e in &errors.errors {
        let at = match e {
            HeError::Node {
                site: Site::Node(v, _),
                ..
            } => spans.get(v),
            HeError::UnknownValue(v) => spans.get(v),
            _ => None,
        };
        match at {
            Some(span) => {
                let from = floor_boundary(src, span.end);
                let end = src[from..]
                    .find('\n')
                    .map(|i| from + i)
                    .unwrap_or(src.len());
                by_line_end.entry(end).or_default().push(e.to_string());
            }
            None => global.push(e.to_string()),
        }
    }
    let mut out = String::new();
    for g in &global {
        out.push_str("// error: ");
        out.push_str(g);
        out.push('\n');
    }
    let mut pos = 0;
    for (end, msgs) in by_line_end {
        if end < pos {
            continue;
        }
        out.push_str(&src[pos..end]);
        out.push('\n');
        for m in msgs {
            out.push_str("// error: ");
            out.push_str(&m);
            out.push('\n');
        }
        pos = (end + 1).min(src.len());
    }
    out.push_str(&src[pos..]);
    out
}

/// The value ids named by `errors` (for tests and tools).
pub fn errored_values(errors: &VerifyErrors) -> Vec<ValueId> {
    let mut v: Vec<ValueId> = errors
        .errors
        .iter()
        .filter_map(|e| match e {
            HeError::Node {
                site: Site::Node(v, _),
                ..
            } => Some(*v),
            _ => None,
        })
        .collect();
    v.dedup();
    v
}
