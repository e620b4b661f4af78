//! The hecc driver: composes front end, passes and runtime into the pipeline the CLI exposes.
//! Only the CLI (`src/main.rs`) prints.

pub mod approx_cmd;
pub mod calibrate;
pub mod check;
pub mod cli_values;
pub mod client;
pub mod compile;
pub mod eval;
pub mod files;
pub mod images;
#[cfg(feature = "serve")]
pub mod remote;
pub mod report_text;
pub mod run;
#[cfg(feature = "serve")]
pub mod serve;
pub mod server;
pub mod survey;
#[cfg(feature = "train")]
pub mod train_cmd;
