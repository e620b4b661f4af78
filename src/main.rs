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
    /// Compile a model to an encrypted-inference plan: lowering to the HE IR, scale and level
    /// management, CKKS parameter selection at the requested security, and the report.
    Compile {
        /// The model file (`.yaml`/`.yml` spec or `.onnx`).
        model: PathBuf,
        /// Packing layout: `batch` (slot i = image i), `channel`, or `auto`.
        #[arg(long, default_value = "auto")]
        layout: String,
        /// Images per encrypted run (default: all slots of the chosen ring).
        #[arg(long)]
        batch: Option<u32>,
        /// Rescale policy: `waterline` (lazy) or `always`.
        #[arg(long, default_value = "waterline")]
        rescale: String,
        /// Replacement of relu/max_pool: square, least-squares:D, chebyshev:D, taylor:D,
        /// silu-taylor:D, cryptodl:D, minimax:ALPHA or minimax:D1,D2,...
        #[arg(long, default_value = "square")]
        activation: String,
        /// Half-width B of the interval [-B, B] the ReLU approximation is fitted on.
        #[arg(long, default_value_t = 8.0)]
        relu_range: f64,
        /// Bits of the CKKS scale (and of each scale prime).
        #[arg(long, default_value_t = 40)]
        scale_bits: u32,
        /// Refuse plans whose live ciphertexts exceed this many bytes at their peak.
        #[arg(long)]
        memory_budget: Option<u64>,
        /// A cost table written by `hecc calibrate`, for time estimates.
        #[arg(long)]
        costs: Option<PathBuf>,
        /// Where to write the plan (JSON).
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Build a polynomial approximation of relu, sign or max and print its degree, depth,
    /// multiplications and measured maximum error; optionally plot it (SVG).
    Approx {
        /// `relu`, `sign` or `max`.
        #[arg(long, default_value = "relu")]
        activation: String,
        /// square, least-squares, chebyshev, taylor, silu-taylor, cryptodl or minimax.
        #[arg(long, default_value = "minimax")]
        method: String,
        /// Degree (for the single-polynomial methods).
        #[arg(long)]
        degree: Option<usize>,
        /// Target precision in bits (minimax).
        #[arg(long)]
        alpha: Option<f64>,
        /// Explicit composite degrees, e.g. 15,15,27 (minimax).
        #[arg(long)]
        degrees: Option<String>,
        /// Input half-range B: the approximation is fitted on [-B, B].
        #[arg(long, default_value_t = 8.0)]
        range: f64,
        /// Write an SVG plot of the approximation against the exact function.
        #[arg(long)]
        plot: Option<PathBuf>,
    },
    /// Print the report of a compiled plan: per-layer levels, depth, operation counts,
    /// ciphertexts and memory, parameters, keys and estimated time.
    Report {
        /// The plan file written by `hecc compile`.
        plan: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
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
        Cli::Compile {
            model,
            layout,
            batch,
            rescale,
            activation,
            relu_range,
            scale_bits,
            memory_budget,
            costs,
            output,
        } => {
            let run = || -> miette::Result<String> {
                let rescale = hecc_passes::he::RescalePolicy::parse(&rescale).ok_or_else(|| {
                    miette::miette!(
                        "unknown rescale policy `{rescale}` (expected waterline or always)"
                    )
                })?;
                let costs = match costs {
                    Some(p) => Some(hecc::compile::read_costs(&p)?),
                    None => None,
                };
                let opts = hecc::compile::CompileOptions {
                    layout,
                    batch,
                    rescale,
                    activation,
                    relu_range,
                    scale_bits,
                    memory_budget,
                    costs,
                    ..Default::default()
                };
                let compiled = hecc::compile::compile(&model, &opts)?;
                hecc::compile::write_plan(&compiled.plan, &output)?;
                Ok(hecc::report_text::render(&compiled.plan.report))
            };
            match run() {
                Ok(text) => {
                    print!("{text}");
                    println!("plan written to {}", output.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e:?}");
                    ExitCode::FAILURE
                }
            }
        }
        Cli::Approx {
            activation,
            method,
            degree,
            alpha,
            degrees,
            range,
            plot,
        } => {
            let spec = match (method.as_str(), degree, alpha, degrees) {
                ("minimax", _, _, Some(d)) => format!("minimax:{d}"),
                ("minimax", _, Some(a), None) => format!("minimax:{a}"),
                (m, Some(d), _, _) => format!("{m}:{d}"),
                (m, None, _, _) => m.to_string(),
            };
            match hecc::approx_cmd::approx(&activation, &spec, range, plot.is_some()) {
                Ok(r) => {
                    print!("{}", r.text);
                    if let (Some(path), Some(svg)) = (plot, r.svg) {
                        if let Err(e) = hecc::compile::write_atomic(&path, svg.as_bytes()) {
                            eprintln!("{e:?}");
                            return ExitCode::FAILURE;
                        }
                        println!("plot written to {}", path.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e:?}");
                    ExitCode::FAILURE
                }
            }
        }
        Cli::Report { plan, json } => match hecc::compile::read_plan(&plan) {
            Ok(p) => {
                if json {
                    match serde_json::to_string_pretty(&p.report) {
                        Ok(t) => println!("{t}"),
                        Err(e) => {
                            eprintln!("cannot render the report: {e}");
                            return ExitCode::FAILURE;
                        }
                    }
                } else {
                    print!("{}", hecc::report_text::render(&p.report));
                }
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
