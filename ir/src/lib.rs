//! hecc's intermediate representations.
//!
//! * [`tensor`]: the model graph as the user wrote it (conv, dense, batch-norm,
//!   activations ...), with shape inference and a verifier that reports every
//!   error at once.
//!
//! This crate depends on no other crate of the workspace.
#![deny(missing_docs)]

pub mod tensor;
