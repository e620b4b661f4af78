//! Textual forms of both IRs: a printer (`Display`), a shared logos lexer and
//! recursive-descent parsers, so that any IR can be dumped, edited by hand,
//! read back and diffed.
//!
//! * Tensor graph (`.tir`): [`print_graph`], [`parse_graph`] (weights are
//!   declared by name and shape; values are attached separately); see
//!   [`tir_print`] and [`tir_parse`].
//! * HE IR (`.he`): `Display for` [`crate::he::Module`], [`parse_module`]; see
//!   [`he_print`] for the layout and [`he_parse`] for the grammar.
//!
//! Contract: for every module `m`, `parse(print(m))` prints as `print(m)`
//! (floats use Rust's shortest round-trip form). Parsers never panic; errors
//! are [`TextError`] miette diagnostics with the byte span, line and column of
//! the offending token and what was expected.

pub mod annotate;
mod cursor;
pub mod error;
pub mod he_parse;
pub mod he_print;
pub mod lexer;
pub mod tir_parse;
pub mod tir_print;

pub use annotate::annotate_module;
pub use error::TextError;
pub use he_parse::{parse_module, parse_module_with_spans, HeSpans};
pub use he_print::{print_module, PrintOptions};
pub use tir_parse::{parse_graph, BindError, ParsedGraph};
pub use tir_print::{print_graph, print_graph_with, weight_shapes, WeightShapes};
