//! The approximation library: polynomial replacements for ReLU, sign and max, their fitting
//! (least squares, Chebyshev interpolation, Taylor, CryptoDL-style, Remez minimax, composite
//! minimax), and what they cost when evaluated homomorphically.
//!
//! Everything is kept in the Chebyshev basis ([`cheb`]) for stability at high degree;
//! [`plan`] turns a series into a depth-optimal straight-line program and counts its cost.

pub mod cheb;
pub mod composite;
pub mod linalg;
pub mod plan;
pub mod relu;
pub mod remez;
pub mod tensor;

pub use cheb::ChebSeries;
pub use composite::CompositeSign;
pub use plan::{optimal_depth, EvalCost, EvalPlan, PlanOp};
pub use relu::{ActivationApprox, ActivationSpec, ApproxForm, MethodSpec, ReluMethod, Surrogate};

/// Why an approximation could not be built.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ApproxError {
    /// The request itself is impossible or malformed.
    #[error("{0}")]
    #[diagnostic(code(hecc::approx::request))]
    BadRequest(String),
    /// A numerical step failed (singular system, no convergence).
    #[error("numerical failure: {0}")]
    #[diagnostic(code(hecc::approx::numerical))]
    Numerical(String),
}
