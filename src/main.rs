//! The `hecc` command line.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

/// hecc: compile neural networks to RNS-CKKS homomorphic circuits and run them encrypted.
#[derive(Parser, Debug)]
#[command(name = "hecc", version, about)]
enum Cli {
    /// Load a model (YAML spec or ONNX), verify it and print a summary: layers, shapes,
    /// parameter counts and activations by granularity. Exits non-zero with a diagnostic on
    /// any error.
    Check {
        /// The model file (`.yaml`/`.yml` spec or `.onnx`).
        model: PathBuf,
    },
    /// Print a model's tensor IR in the text form (`--ir`, the default) or as Graphviz DOT
    /// (`--dot`). MODEL is a spec or ONNX file, a `.tir` tensor-IR text or a `.he` HE-IR text.
    Show {
        /// The model file (`.yaml`/`.yml`, `.onnx`, `.tir` or `.he`).
        model: PathBuf,
        /// Print the textual IR (default).
        #[arg(long, conflicts_with = "dot")]
        ir: bool,
        /// Print Graphviz DOT (render with `dot -Tsvg`).
        #[arg(long)]
        dot: bool,
    },
}

/// `hecc show`: the text (or DOT) of a model file, or a renderable diagnostic.
fn show(model: &Path, dot: bool) -> Result<String, miette::Report> {
    let ext = model.extension().and_then(|e| e.to_str()).unwrap_or("");
    let read = || {
        std::fs::read_to_string(model)
            .map_err(|e| miette::miette!("cannot read {}: {e}", model.display()))
    };
    let name = model.display().to_string();
    match ext {
        "he" => {
            let text = read()?;
            let m = hecc_ir::text::parse_module(&text).map_err(|e| e.with_name(&name))?;
            Ok(if dot {
                hecc_ir::dot::he_to_dot(&m)
            } else {
                m.to_string()
            })
        }
        "tir" => {
            let text = read()?;
            let parsed = hecc_ir::text::parse_graph(&text).map_err(|e| e.with_name(&name))?;
            Ok(if dot {
                hecc_ir::dot::tensor_to_dot(&parsed.graph)
            } else {
                parsed.to_string()
            })
        }
        _ => {
            let g = hecc_ir::front::load_model(model)?;
            Ok(if dot {
                hecc_ir::dot::tensor_to_dot(&g)
            } else {
                hecc_ir::text::print_graph(&g)
            })
        }
    }
}

fn main() -> ExitCode {
    match Cli::parse() {
        Cli::Show { model, ir: _, dot } => match show(&model, dot) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e:?}");
                ExitCode::FAILURE
            }
        },
        Cli::Check { model } => match hecc::check::check_model(&model) {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{:?}", miette::Report::new(e));
                ExitCode::FAILURE
            }
        },
    }
}
