//! hecc's runtime: the built-in RNS-CKKS backend ([`ckks`]) and, above it, the plan executor.
//!
//! The [`ckks`] module imports nothing from `hecc-ir`; only the executor does.

pub mod ckks;
pub mod exec;
