//! hecc's intermediate representations.
//!
//! * [`tensor`]: the model graph as the user wrote it (conv, dense, batch-norm,
//!   activations ...), with shape inference and a verifier that reports every
//!   error at once.
//! * [`he`]: the RNS-CKKS circuit (ciphertext/plaintext values with level,
//!   scale, slots and layout), its builders, verifier and reference semantics.
//! * [`text`]: the textual forms of both IRs (printer, logos lexer, parsers).
//! * [`dot`]: Graphviz export of both IRs.
//! * [`front`]: front ends (YAML model specs, ONNX) producing verified tensor graphs.
//!
//! This crate depends on no other crate of the workspace.
#![deny(missing_docs)]

pub mod dot;
pub mod front;
pub mod he;
pub mod tensor;
pub mod text;
