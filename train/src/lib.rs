//! hecc-train: trains HE-friendly networks from hecc model specs on the CPU.
//!
//! A spec's tensor graph ([`hecc_ir::tensor::Graph`]) becomes a differentiable network
//! ([`net::Net`], reverse-mode differentiation written per op over im2col + GEMM kernels,
//! [`kernels`]): every parameter is stored under exactly the weight
//! name the spec uses, so [`net::Net::export`] gives a weight table that loads back through the
//! spec and evaluates with [`hecc_ir::tensor::eval`] to the same predictions. Training
//! ([`trainer::train`]) is Nesterov-momentum SGD with L2 on the activation coefficients (BEAA),
//! optionally with knowledge distillation from a ReLU teacher ([`loss::kd_loss`]). Data comes
//! from IDX files ([`data`]).
//!
//! Contract: nothing here prints or panics on bad input; every failure is a [`TrainError`].
//! Training is deterministic for a given seed, data and thread count.

#![warn(missing_docs)]

pub mod data;
pub mod export;
pub mod kernels;
pub mod loss;
pub mod net;
pub mod optim;
pub mod trainer;

/// Why training, data loading or export failed.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum TrainError {
    /// A tensor kernel was given inconsistent sizes (an internal invariant broke).
    #[error("tensor backend error: {0}")]
    #[diagnostic(code(hecc::train::backend))]
    Backend(String),
    /// A dataset file could not be read or is not a valid IDX file.
    #[error("dataset `{path}`: {message}")]
    #[diagnostic(code(hecc::train::data))]
    Data {
        /// The file or directory.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The network uses an op (or attribute) the trainer does not support.
    #[error("node `{node}` ({op}): {message}")]
    #[diagnostic(code(hecc::train::unsupported))]
    Unsupported {
        /// Node name.
        node: String,
        /// Op mnemonic.
        op: String,
        /// What is not supported.
        message: String,
    },
    /// The graph does not verify or does not have the expected shape.
    #[error("invalid network: {0}")]
    #[diagnostic(code(hecc::train::graph))]
    Graph(String),
    /// A weight is missing or has the wrong shape.
    #[error("weight `{name}`: {message}")]
    #[diagnostic(code(hecc::train::weight))]
    Weight {
        /// Weight name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The configuration is not usable (e.g. zero epochs, alpha outside [0, 1]).
    #[error("invalid training configuration: {0}")]
    #[diagnostic(code(hecc::train::config))]
    Config(String),
    /// Training diverged (the loss became NaN or infinite).
    #[error("training diverged at epoch {epoch}, batch {batch}: loss is {loss}")]
    #[diagnostic(
        code(hecc::train::diverged),
        help("lower the learning rate (--lr) or the gradient clipping norm (--clip)")
    )]
    Diverged {
        /// Epoch (1-based).
        epoch: usize,
        /// Batch (0-based).
        batch: usize,
        /// The non-finite loss.
        loss: f64,
    },
}
