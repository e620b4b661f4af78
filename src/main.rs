//! The `hecc` command line.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

#[cfg(feature = "serve")]
mod cli_serve;

/// Acceptance of parameters below 128-bit security.
#[derive(clap::Args, Debug, Clone, Copy)]
struct Insecure {
    /// Accept parameters below 128-bit security (`compile`: choose them). For tests only:
    /// every command on such a plan prints a warning.
    #[arg(long)]
    insecure: bool,
}

const INSECURE_WARNING: &str =
    "warning: this plan's parameters are NOT 128-bit secure (--insecure): for tests only";

/// hecc: compile neural networks to RNS-CKKS homomorphic circuits and run them encrypted.
#[derive(Parser, Debug)]
#[command(name = "hecc", version, about)]
enum Cli {
    /// Train a spec's network on an IDX dataset (quadratic activations, optional knowledge
    /// distillation from a ReLU teacher) and write its weights under the spec's names.
    #[cfg(feature = "train")]
    Train {
        /// The YAML spec.
        spec: PathBuf,
        /// Dataset directory (MNIST-style train-/t10k- IDX files, or one images/labels pair).
        #[arg(long)]
        data: PathBuf,
        /// Student epochs.
        #[arg(long, default_value_t = 5)]
        epochs: usize,
        /// Quadratic granularity for the student: layer, channel or element (relus become
        /// quadratics too).
        #[arg(long)]
        granularity: Option<String>,
        /// Train the ReLU network (every activation a ReLU): a teacher for --teacher.
        #[arg(long, conflicts_with_all = ["granularity", "teacher", "kd", "kd_alpha"])]
        relu: bool,
        /// Trained ReLU-teacher weights to distil from (implies KD).
        #[arg(long)]
        teacher: Option<PathBuf>,
        /// Train a ReLU teacher first and distil from it (implied by --teacher or --kd-alpha).
        #[arg(long)]
        kd: bool,
        /// KD temperature T.
        #[arg(long, default_value_t = 4.0)]
        kd_temperature: f64,
        /// KD weight alpha (0 = cross-entropy only).
        #[arg(long)]
        kd_alpha: Option<f64>,
        /// Teacher epochs (when the teacher is trained here).
        #[arg(long)]
        teacher_epochs: Option<usize>,
        /// Where to write the teacher trained here (weights; its spec goes next to them).
        #[arg(long)]
        teacher_out: Option<PathBuf>,
        /// Seed of initialisation and shuffling.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Mini-batch size.
        #[arg(long, default_value_t = 64, value_parser = hecc::cli_values::positive)]
        batch_size: usize,
        /// Initial learning rate (cosine schedule).
        #[arg(long, default_value_t = 0.02)]
        lr: f64,
        /// Nesterov momentum.
        #[arg(long, default_value_t = 0.9)]
        momentum: f64,
        /// L2 on conv/dense/batch-norm parameters.
        #[arg(long, default_value_t = 5e-4)]
        weight_decay: f64,
        /// L2 on the quadratic activations' coefficients.
        #[arg(long, default_value_t = 5e-4)]
        coeff_l2: f64,
        /// Global gradient-norm clip (0 = none).
        #[arg(long, default_value_t = 5.0)]
        clip: f64,
        /// Train on the first N training images only.
        #[arg(long, value_parser = hecc::cli_values::positive)]
        limit: Option<usize>,
        /// Evaluate the test split only after the last epoch (not after every epoch).
        #[arg(long)]
        final_eval_only: bool,
        /// Hold out the last N training images as a validation split; the weights of the epoch
        /// with the best validation accuracy are kept.
        #[arg(long, default_value_t = 0)]
        validation: usize,
        /// Stop after N epochs without a better validation accuracy (needs --validation).
        #[arg(long, value_parser = hecc::cli_values::positive)]
        patience: Option<usize>,
        /// Write the per-epoch history (loss, accuracies, times; teacher and student) as JSON.
        #[arg(long)]
        history: Option<PathBuf>,
        /// Spec to write when --granularity changes the network (default: <output stem>.yaml).
        #[arg(long)]
        spec_out: Option<PathBuf>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        /// Where to write the trained weights (.safetensors).
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Load a model (YAML spec or ONNX), verify it and print a summary: layers, shapes,
    /// parameter counts and activations by granularity. Exits non-zero with a diagnostic on
    /// any error.
    Check {
        /// The model file (`.yaml`/`.yml` spec or `.onnx`).
        model: PathBuf,
    },
    /// Compile a model to an encrypted-inference plan: lowering to the HE IR, scale and level
    /// management, CKKS parameter selection at the requested security, and the report.
    Compile {
        /// The model file (`.yaml`/`.yml` spec or `.onnx`).
        model: PathBuf,
        /// Packing layout: `batch` (slot i = image i), `channel` (one ciphertext per channel,
        /// images side by side), or `auto` (the cheaper by the cost model).
        #[arg(long, value_enum, default_value_t = hecc::compile::LayoutChoice::Auto)]
        layout: hecc::compile::LayoutChoice,
        /// Images per encrypted run (default: all slots of the chosen ring).
        #[arg(long)]
        batch: Option<u32>,
        /// Rescale policy: `waterline` (lazy) or `always`.
        #[arg(long, default_value = "waterline")]
        rescale: String,
        /// Replacement of relu/max_pool (required when the model has them): square,
        /// least-squares:D, chebyshev:D, taylor:D, silu-taylor:D, cryptodl:D, minimax:ALPHA,
        /// minimax:D1,D2,... or auto (the shallowest policy that keeps the exact model's
        /// predictions on the --calibrate images).
        #[arg(long)]
        activation: Option<String>,
        /// Input normalisation: --normalize, --input-range.
        #[command(flatten)]
        model_args: hecc::compile::ModelArgs,
        /// Activation ranges: --relu-range, --calibrate, --calibrate-count, --range-margin.
        #[command(flatten)]
        ranges: hecc::compile::RangeArgs,
        /// Bits of the CKKS scale (and of each scale prime).
        #[arg(long, default_value_t = 40)]
        scale_bits: u32,
        /// Refuse plans whose peak memory (live ciphertexts and plaintexts in the best
        /// schedule, plus the evaluation keys) exceeds this size (bytes, or e.g. 6GiB, 512M).
        #[arg(long, value_parser = hecc::run::parse_size)]
        memory_budget: Option<u64>,
        /// Estimate a run that keeps at most this many bytes of live values in memory and
        /// moves the rest to disk (`hecc run --spill-dir D --spill-budget SIZE`): the report
        /// states what it holds, writes and reads.
        #[arg(long, value_parser = hecc::run::parse_size)]
        spill_budget: Option<u64>,
        #[command(flatten)]
        insecure: Insecure,
        /// A cost table written by `hecc calibrate`, for time estimates.
        #[arg(long)]
        costs: Option<PathBuf>,
        /// Comma-separated pass list replacing the default pipeline (tensor passes first):
        /// fold-batch-norm, fuse-activation-batch-norm, dce, cse, rescale-always,
        /// rescale-waterline, check-levels, check-scales.
        #[arg(long)]
        passes: Option<String>,
        /// Print the IR (text form) after this pass; repeat or separate names by commas.
        #[arg(long, value_delimiter = ',')]
        dump_after: Vec<String>,
        /// Print how long each pass took.
        #[arg(long)]
        time_passes: bool,
        /// Skip the optional fusion passes and materialise every pending affine factor in the
        /// lowering (to measure what fusion saves).
        #[arg(long)]
        no_fuse: bool,
        /// Bootstrapping: `auto` places bootstraps when the circuit is deeper than any
        /// modulus chain at the requested security allows (ring 2^16, 10 levels between
        /// bootstraps at a 40-bit scale); `never` refuses such a model.
        #[arg(long, value_enum, default_value_t = hecc::compile::BootstrapMode::Auto)]
        bootstrap: hecc::compile::BootstrapMode,
        /// Bootstrap every slot even when the requested --batch uses few of them (by default
        /// such a plan bootstraps only the slots the batch spans, repeated across the ring by
        /// the client: cheaper and more precise).
        #[arg(long)]
        full_slot_bootstraps: bool,
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
        #[arg(long, value_parser = hecc::cli_values::positive)]
        degree: Option<usize>,
        /// Target precision in bits (minimax).
        #[arg(long)]
        alpha: Option<f64>,
        /// Explicit composite degrees, e.g. 15,15,27 (minimax).
        #[arg(long)]
        degrees: Option<String>,
        /// Input half-range B: the approximation is fitted on [-B, B].
        #[arg(long, default_value_t = 8.0, value_parser = hecc::cli_values::half_range)]
        range: f64,
        /// Write an SVG plot of the approximation against the exact function.
        #[arg(long)]
        plot: Option<PathBuf>,
    },
    /// Measure the CKKS backend's primitive costs on this machine and write the cost table that
    /// `hecc compile --costs` uses for time estimates.
    Calibrate {
        /// Ring degrees (log2) to measure, comma-separated (13 to 16).
        #[arg(long, default_value = "13,14")]
        log_n: String,
        /// Repetitions per primitive (the median is kept).
        #[arg(long, default_value_t = 5, value_parser = hecc::cli_values::positive)]
        reps: usize,
        /// Where to write the table (JSON).
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Print the report of a compiled plan: per-layer levels, depth, operation counts,
    /// ciphertexts and memory, parameters, keys and estimated time.
    Report {
        /// The plan file written by `hecc compile`.
        plan: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Print the plan's circuit in the HE IR's text form instead of the report (plan files
        /// hold it in a binary form).
        #[arg(long, conflicts_with = "json")]
        circuit: bool,
        #[command(flatten)]
        insecure: Insecure,
    },
    /// Generate keys for a plan: `DIR/secret.key` (keep it) and `DIR/eval.keys` (public,
    /// relinearization and exactly the plan's Galois keys; give it to the server).
    Keygen {
        /// The plan file written by `hecc compile`.
        plan: PathBuf,
        /// Directory to write the keys to (created with mode 0700; the secret key is 0600).
        #[arg(short, long)]
        output: PathBuf,
        /// Replace the keys already in the output directory. Without it keygen refuses: a new
        /// secret key cannot decrypt what was encrypted under the old one.
        #[arg(long)]
        force: bool,
        /// Generate even when the keys need more memory than this process can get (by default
        /// keygen refuses before it starts).
        #[arg(long)]
        no_memory_check: bool,
        #[command(flatten)]
        insecure: Insecure,
    },
    /// Encrypt images (.npy, IDX/MNIST or PNG) for a plan: raw bytes are scaled to the plan
    /// input's declared range and packed per the plan's layout.
    Encrypt {
        /// The plan file.
        plan: PathBuf,
        /// Key directory written by `hecc keygen` (the secret key is used when present,
        /// otherwise the public key in `eval.keys`).
        #[arg(long)]
        keys: PathBuf,
        /// The images.
        #[arg(long)]
        input: PathBuf,
        /// Use N images (after --skip); refused when the file has fewer.
        #[arg(long, value_parser = hecc::cli_values::positive)]
        limit: Option<usize>,
        /// Skip the first N images of the file (to encrypt a file's images in several
        /// groups of the plan's batch, one ciphertext file per group).
        #[arg(long, default_value_t = 0)]
        skip: usize,
        /// Where to write the ciphertexts.
        #[arg(short, long)]
        output: PathBuf,
        /// Clamp input values outside the model's declared input range (with a warning)
        /// instead of refusing them.
        #[arg(long)]
        clamp: bool,
        /// Use a secret key that other users can read (refused by default).
        #[arg(long)]
        allow_shared_key: bool,
        /// Encrypt even when the ciphertexts need more memory than this process can get (by
        /// default encrypt refuses before it starts).
        #[arg(long)]
        no_memory_check: bool,
        #[command(flatten)]
        insecure: Insecure,
    },
    /// The server step: run a plan on encrypted inputs with the evaluation keys only.
    Run {
        /// The plan file.
        plan: PathBuf,
        /// Encrypted inputs written by `hecc encrypt`.
        ciphertexts: PathBuf,
        /// Evaluation keys (`eval.keys` written by `hecc keygen`).
        #[arg(long)]
        eval_keys: PathBuf,
        /// Where to write the encrypted outputs.
        #[arg(short, long)]
        output: PathBuf,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        /// Limit the bytes of live values during the run (ciphertexts, plaintexts, inputs not
        /// yet read): `plan` (the plan's own estimate), a size such as `6GiB`, or `none` (as
        /// much parallelism as the executor's lookahead allows); near the limit fewer
        /// operations run at once. Default: the plan's estimate plus 5%.
        #[arg(long)]
        memory_limit: Option<hecc::run::MemoryLimit>,
        /// Run even when the plan's memory estimate exceeds the memory this process can get
        /// (free memory, its cgroup and ulimit limits; by default such a run is refused before it
        /// starts).
        #[arg(long)]
        no_memory_check: bool,
        /// Keep live values within a budget (--spill-budget) by moving those needed last to
        /// files in this directory, and write checkpoints there: the same command started again
        /// after a kill, a crash or Ctrl-C resumes from the last checkpoint. One run per
        /// directory; a finished run removes its files.
        #[arg(long)]
        spill_dir: Option<PathBuf>,
        /// Bytes of live values to keep in memory with --spill-dir, e.g. 8GiB. Default: nine
        /// tenths of what this process can get, less the evaluation keys.
        #[arg(long, requires = "spill_dir", value_parser = hecc::run::parse_size)]
        spill_budget: Option<u64>,
        /// Seconds between checkpoints with --spill-dir (0: no checkpoints).
        #[arg(long, requires = "spill_dir", default_value_t = 300.0)]
        checkpoint_every: f64,
        #[command(flatten)]
        insecure: Insecure,
    },
    /// Decrypt a run's outputs: writes the logits (.npy, images x classes) and prints the
    /// predicted classes.
    Decrypt {
        /// Encrypted outputs written by `hecc run`.
        outputs: PathBuf,
        /// The secret key (`secret.key` written by `hecc keygen`).
        #[arg(long)]
        secret_key: PathBuf,
        /// Where to write the logits (.npy).
        #[arg(short, long)]
        output: PathBuf,
        /// The encrypted inputs this result should answer (`hecc encrypt`'s file): checks that
        /// the server ran on exactly that file.
        #[arg(long)]
        request: Option<PathBuf>,
        /// Use a secret key that other users can read (refused by default).
        #[arg(long)]
        allow_shared_key: bool,
        #[command(flatten)]
        insecure: Insecure,
    },
    /// Compile, generate keys, encrypt, run, decrypt and print predictions, accuracy, time,
    /// peak memory and precision, in one process.
    Infer {
        /// The model file.
        model: PathBuf,
        /// The images (.npy, IDX or PNG).
        #[arg(long)]
        input: PathBuf,
        /// Class labels (IDX or .npy), for the accuracy.
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Also run the plaintext reference and report per-layer error and argmax agreement.
        #[arg(long)]
        verify: bool,
        /// Images to use (default: all in the file, up to the slots).
        #[arg(long, value_parser = hecc::cli_values::positive)]
        batch: Option<usize>,
        /// Replacement of relu/max_pool (see `hecc compile`; `auto` calibrates on the images).
        #[arg(long)]
        activation: Option<String>,
        /// Refuse the result (exit non-zero, after printing it) when the approximated model
        /// keeps the exact model's prediction on less than this share of the images.
        #[arg(long, default_value_t = 0.9, value_parser = hecc::cli_values::share)]
        min_agreement: f64,
        /// Reference outputs to compare the decrypted predictions with (.npy, images x
        /// classes: e.g. the logits PyTorch or onnxruntime gives on the same images); below
        /// --min-agreement the run fails.
        #[arg(long)]
        reference: Option<PathBuf>,
        /// Bits of the CKKS scale (and of each scale prime): fewer bits leave room for a
        /// deeper circuit at lower precision.
        #[arg(long, default_value_t = 40)]
        scale_bits: u32,
        /// Input normalisation: --normalize, --input-range.
        #[command(flatten)]
        model_args: hecc::compile::ModelArgs,
        /// Packing layout: `batch` (slot i = image i) or `channel` (one ciphertext per
        /// channel, images side by side: at most the plan's images per run).
        #[arg(long, value_enum, default_value_t = hecc::compile::LayoutChoice::Batch)]
        layout: hecc::compile::LayoutChoice,
        /// Activation ranges: --relu-range, --calibrate, --calibrate-count, --range-margin.
        #[command(flatten)]
        ranges: hecc::compile::RangeArgs,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        /// Limit the bytes of live values during the run (ciphertexts, plaintexts, inputs not
        /// yet read): `plan` (the plan's own estimate), a size such as `6GiB`, or `none` (as
        /// much parallelism as the executor's lookahead allows); near the limit fewer
        /// operations run at once. Default: the plan's estimate plus 5%.
        #[arg(long)]
        memory_limit: Option<hecc::run::MemoryLimit>,
        /// Run even when the plan's memory estimate exceeds the memory this process can get
        /// (free memory, its cgroup and ulimit limits; by default such a run is refused before it
        /// starts).
        #[arg(long)]
        no_memory_check: bool,
        /// Bootstrap every slot even when the batch uses few of them (see `compile`).
        #[arg(long)]
        full_slot_bootstraps: bool,
        /// Keep each run's live values within a budget (--spill-budget) by moving those needed
        /// last to files in this directory (no checkpoints: the keys of `infer` live only in its
        /// process). A finished run removes its files.
        #[arg(long)]
        spill_dir: Option<PathBuf>,
        /// Bytes of live values to keep in memory with --spill-dir, e.g. 8GiB. Default: nine
        /// tenths of what this process can get, less the evaluation keys.
        #[arg(long, requires = "spill_dir", value_parser = hecc::run::parse_size)]
        spill_budget: Option<u64>,
    },
    /// Evaluate a model in plaintext on many images: logits, accuracy, and how far each
    /// activation approximation moves the predictions from the exact model's.
    Eval {
        /// The model file.
        model: PathBuf,
        /// The images (.npy, IDX or PNG).
        #[arg(long)]
        input: PathBuf,
        /// Class labels (IDX or .npy), for the accuracy.
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Activation policies to compare with the exact model (repeat the flag).
        #[arg(long)]
        activation: Vec<String>,
        /// Images to use (the first N); refused when the file has fewer.
        #[arg(long, value_parser = hecc::cli_values::positive)]
        limit: Option<usize>,
        /// Activation ranges: --relu-range, --calibrate, --calibrate-count, --range-margin.
        #[command(flatten)]
        ranges: hecc::compile::RangeArgs,
        /// Input normalisation: --normalize, --input-range.
        #[command(flatten)]
        model_args: hecc::compile::ModelArgs,
        /// Write the exact model's logits here (.npy, images x classes); with --activation,
        /// each policy's logits beside it as `STEM.POLICY.npy` (`:` and `,` in the policy
        /// written as `-`, e.g. `logits.minimax-15-15-27.npy`).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// The ReLU-approximation survey on real data: evaluate a model trained with ReLU on a
    /// whole test set with its activations replaced, at inference only, by each method (ranges
    /// calibrated on training images); print a Markdown table.
    Survey {
        /// The model file (trained with exact ReLU).
        model: PathBuf,
        /// Dataset directory (train-/t10k- IDX files).
        #[arg(long)]
        data: PathBuf,
        /// Training images used to calibrate each activation's range.
        #[arg(long, default_value_t = 1000, value_parser = hecc::cli_values::positive)]
        calibrate_count: usize,
        /// Relative margin added to each calibrated bound.
        #[arg(long, default_value_t = 0.1, value_parser = hecc::cli_values::margin)]
        range_margin: f64,
        /// Evaluate only the first N test images.
        #[arg(long, value_parser = hecc::cli_values::positive)]
        limit: Option<usize>,
        /// Methods to compare instead of the survey's: activation policies as for `hecc
        /// compile --activation` (repeat the flag), `relu` for the exact activation.
        #[arg(long = "method")]
        methods: Vec<String>,
    },
    /// Host compiled plans over HTTP for many clients: sessions opened with evaluation keys,
    /// encrypted batches queued as jobs in a database that survives restarts (TLS terminated
    /// in front of it).
    #[cfg(feature = "serve")]
    Serve(cli_serve::ServeArgs),
    /// Talk to a `hecc serve` server: open a session, submit encrypted inputs, wait, download.
    #[cfg(feature = "serve")]
    #[command(subcommand)]
    Client(cli_serve::ClientCmd),
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
    hecc_runtime::exec::limit_allocator_arenas();
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
            model_args,
            ranges,
            scale_bits,
            memory_budget,
            spill_budget,
            costs,
            passes,
            dump_after,
            time_passes,
            no_fuse,
            bootstrap,
            full_slot_bootstraps,
            output,
            insecure,
        } => {
            if insecure.insecure {
                eprintln!("{INSECURE_WARNING}");
            }
            let run = || -> miette::Result<String> {
                hecc::files::check_output_distinct(&output, &[&model])?;
                let rescale = hecc_passes::he::RescalePolicy::parse(&rescale).ok_or_else(|| {
                    miette::miette!(
                        "unknown rescale policy `{rescale}` (expected waterline or always)"
                    )
                })?;
                let costs = match costs {
                    Some(p) => Some(hecc::compile::read_costs(&p)?),
                    None => None,
                };
                let mut opts = hecc::compile::CompileOptions {
                    layout,
                    batch,
                    rescale,
                    activation: activation
                        .as_deref()
                        .map(hecc::compile::ActivationChoice::parse)
                        .transpose()?,
                    scale_bits,
                    memory_budget,
                    spill_budget,
                    costs,
                    passes,
                    dump_after,
                    time_passes,
                    no_fuse,
                    bootstrap,
                    sparse_bootstraps: !full_slot_bootstraps,
                    security: if insecure.insecure {
                        hecc_passes::params::Security::InsecureNone
                    } else {
                        hecc_passes::params::Security::Bits128
                    },
                    ..Default::default()
                };
                let g = model_args.load(&model)?;
                ranges.apply(&g, &mut opts)?;
                let compiled = hecc::compile::compile_graph(&g, &opts)?;
                hecc::compile::write_plan(&compiled.plan, &output)?;
                let mut text = String::new();
                for d in &compiled.log.dumps {
                    text.push_str(&format!("// ----- IR after {} -----\n{}", d.pass, d.text));
                }
                text.push_str(&hecc::report_text::render(&compiled.plan.report));
                if time_passes {
                    text.push_str("pass timings:\n");
                    for t in &compiled.log.timings {
                        text.push_str(&format!(
                            "  {:<28} {:>10.3} s{}\n",
                            t.pass,
                            t.seconds,
                            if t.changed == hecc_passes::manager::Changed::Yes {
                                ""
                            } else {
                                "  (no change)"
                            }
                        ));
                    }
                }
                Ok(text)
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
        Cli::Eval {
            model,
            input,
            labels,
            activation,
            limit,
            ranges,
            model_args,
            output,
        } => {
            let run = || -> miette::Result<String> {
                let g = model_args.load(&model)?;
                let mut opts = hecc::compile::CompileOptions::default();
                ranges.apply(&g, &mut opts)?;
                let rep = hecc::eval::eval_model(
                    &g,
                    &input,
                    labels.as_deref(),
                    &activation,
                    limit,
                    &opts,
                )?;
                let mut text = hecc::eval::render(&rep);
                if let Some(path) = &output {
                    let e = &rep.rows[0];
                    hecc::compile::write_atomic(
                        path,
                        &hecc::run::npy_bytes(rep.images, e.classes, &e.logits),
                    )?;
                    text.push_str(&format!("exact logits written to {}\n", path.display()));
                    for e in &rep.rows[1..] {
                        let Some(policy) = &e.policy else { continue };
                        let tag: String = policy
                            .chars()
                            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                            .collect();
                        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
                        let p = path.with_file_name(format!("{stem}.{tag}.npy"));
                        hecc::files::check_output_distinct(&p, &[&model, &input])?;
                        hecc::compile::write_atomic(
                            &p,
                            &hecc::run::npy_bytes(rep.images, e.classes, &e.logits),
                        )?;
                        text.push_str(&format!("{policy} logits written to {}\n", p.display()));
                    }
                }
                if activation.is_empty() && hecc::eval::needs_approximation(&g)? {
                    text.push_str(
                        "the model has relu/max_pool: add --activation P (repeatable, or auto) to \
                         see what an approximation does to its predictions\n",
                    );
                }
                Ok(text)
            };
            match run() {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e:?}");
                    ExitCode::FAILURE
                }
            }
        }
        Cli::Survey {
            model,
            data,
            calibrate_count,
            range_margin,
            limit,
            methods,
        } => {
            let methods = if methods.is_empty() {
                hecc::survey::default_methods()
            } else {
                methods
                    .into_iter()
                    .map(|m| hecc::survey::SurveyMethod {
                        label: m.clone(),
                        policy: (m != "relu").then_some(m),
                    })
                    .collect()
            };
            let opts = hecc::survey::SurveyOptions {
                data,
                calibrate_count,
                margin: range_margin,
                limit,
                methods,
            };
            match hecc::survey::survey(&model, &opts) {
                Ok(s) => {
                    print!("{}", hecc::survey::render(&s));
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
        Cli::Calibrate {
            log_n,
            reps,
            output,
        } => {
            let run = || -> miette::Result<()> {
                let log_ns = log_n
                    .split(',')
                    .map(|v| {
                        v.trim()
                            .parse::<u32>()
                            .map_err(|_| miette::miette!("`{v}` is not a ring degree (log2)"))
                    })
                    .collect::<miette::Result<Vec<u32>>>()?;
                let table = hecc::calibrate::calibrate(&log_ns, reps, |line| eprintln!("{line}"))?;
                let json =
                    serde_json::to_string_pretty(&table).map_err(|e| miette::miette!("{e}"))?;
                hecc::compile::write_atomic(&output, json.as_bytes())
            };
            match run() {
                Ok(()) => {
                    println!("cost table written to {}", output.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e:?}");
                    ExitCode::FAILURE
                }
            }
        }
        Cli::Report {
            plan,
            json,
            circuit,
            insecure,
        } => match hecc::run::Session::open_with_security(&plan, insecure.insecure) {
            Ok(s) => {
                if s.insecure {
                    eprintln!("{INSECURE_WARNING}");
                }
                let p = s.plan;
                if circuit {
                    use std::io::Write;
                    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                    if write!(out, "{}", p.circuit)
                        .and_then(|()| out.flush())
                        .is_err()
                    {
                        return ExitCode::FAILURE;
                    }
                } else if json {
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
        c @ (Cli::Keygen { .. }
        | Cli::Encrypt { .. }
        | Cli::Run { .. }
        | Cli::Decrypt { .. }
        | Cli::Infer { .. }) => client(c),
        #[cfg(feature = "train")]
        c @ Cli::Train { .. } => train_cli(c),
        #[cfg(feature = "serve")]
        Cli::Serve(a) => print_result(cli_serve::serve_cmd(a)),
        #[cfg(feature = "serve")]
        Cli::Client(c) => print_result(cli_serve::client_cmd(c)),
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

/// Prints a command's text on stdout, or its error on stderr.
#[cfg(feature = "serve")]
fn print_result(r: miette::Result<String>) -> ExitCode {
    match r {
        Ok(text) => {
            if !text.is_empty() {
                print!("{text}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e:?}");
            ExitCode::FAILURE
        }
    }
}

/// Opens a plan for a client or server command, warning when its parameters are insecure.
/// A progress bar on stderr for the events of encrypted runs; nothing when `quiet`. When
/// stderr is not a terminal (a log file, a pipe), a plain line at most once a minute instead,
/// and none for a run shorter than that.
fn progress_bar(quiet: bool) -> Option<hecc_runtime::exec::ProgressSink> {
    use hecc_runtime::exec::{ProgressEvent, ProgressSink};
    use std::io::IsTerminal;
    if quiet {
        return None;
    }
    if !std::io::stderr().is_terminal() {
        return Some(progress_lines(std::time::Duration::from_secs(60)));
    }
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg:>12} [{bar:30}] {pos}/{len} ops  {elapsed_precise} ETA {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    Some(ProgressSink::new(move |e: &ProgressEvent<'_>| match e {
        ProgressEvent::Start { nodes, resumed } => {
            bar.reset();
            bar.set_length(*nodes);
            bar.set_position(*resumed);
            bar.reset_eta();
        }
        ProgressEvent::Stage { name } => bar.set_message(name.to_string()),
        ProgressEvent::Nodes { done, .. } => bar.set_position(*done),
        ProgressEvent::Finish => bar.finish_and_clear(),
    }))
}

/// Progress as log lines on stderr, at most one per `every`: stage, nodes done, elapsed time
/// and a linear estimate of the time left.
fn progress_lines(every: std::time::Duration) -> hecc_runtime::exec::ProgressSink {
    use hecc_runtime::exec::{ProgressEvent, ProgressSink};
    use std::time::Instant;
    struct State {
        start: Instant,
        last: Instant,
        stage: String,
        resumed: u64,
    }
    let state = std::sync::Mutex::new(State {
        start: Instant::now(),
        last: Instant::now(),
        stage: String::new(),
        resumed: 0,
    });
    let hms = |d: std::time::Duration| {
        let s = d.as_secs();
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    };
    ProgressSink::new(move |e: &ProgressEvent<'_>| {
        let Ok(mut st) = state.lock() else { return };
        match e {
            ProgressEvent::Start { resumed, .. } => {
                st.start = Instant::now();
                st.last = st.start;
                st.resumed = *resumed;
                if *resumed > 0 {
                    eprintln!("progress: resuming from a checkpoint with {resumed} nodes done");
                }
            }
            ProgressEvent::Stage { name } => st.stage = name.to_string(),
            ProgressEvent::Nodes { done, total } if st.last.elapsed() >= every => {
                st.last = Instant::now();
                let elapsed = st.start.elapsed();
                let share = *done as f64 / (*total).max(1) as f64;
                // The rate of this run only: nodes a resumed checkpoint had done cost nothing.
                let run_share = done.saturating_sub(st.resumed) as f64
                    / total.saturating_sub(st.resumed).max(1) as f64;
                let left = if run_share > 0.0 {
                    hms(elapsed.mul_f64((1.0 - run_share) / run_share))
                } else {
                    "?".into()
                };
                eprintln!(
                    "progress: {done}/{total} nodes ({:.1} %), stage {}, {} elapsed, about {left} left",
                    100.0 * share,
                    st.stage,
                    hms(elapsed)
                );
            }
            _ => {}
        }
    })
}

fn open(plan: &Path, insecure: Insecure) -> miette::Result<hecc::run::Session> {
    let s = hecc::run::Session::open_with_security(plan, insecure.insecure)?;
    if s.insecure {
        eprintln!("{INSECURE_WARNING}");
    }
    Ok(s)
}

/// The client/server subcommands (`keygen`, `encrypt`, `run`, `decrypt`, `infer`).
fn client(cmd: Cli) -> ExitCode {
    use hecc::run as r;
    let result = || -> miette::Result<String> {
        match cmd {
            Cli::Keygen {
                plan,
                output,
                force,
                no_memory_check,
                insecure,
            } => {
                if output.exists() && !output.is_dir() {
                    return Err(miette::miette!(
                        "{}: exists and is not a directory; keygen writes a key directory",
                        output.display()
                    ));
                }
                let existing = [r::SECRET_KEY_FILE, r::EVAL_KEYS_FILE]
                    .iter()
                    .map(|f| output.join(f))
                    .find(|p| p.exists());
                if let (Some(p), false) = (existing, force) {
                    return Err(miette::miette!(
                        help = "pass --force to replace them, or choose another directory",
                        "{}: already holds keys; a new secret key could not decrypt what was \
                         encrypted under the old one",
                        p.display()
                    ));
                }
                let s = open(&plan, insecure)?;
                if !no_memory_check {
                    r::check_need(
                        r::keygen_bytes(&s),
                        r::available_memory(),
                        "keygen",
                        "its keys in memory and their file",
                        "run it on a machine with more memory, compile with fewer rotations \
                         (--layout batch needs none), or pass --no-memory-check to try anyway",
                    )?;
                }
                let (client, eval) = hecc::client::Client::generate(s)?;
                let (sk, ek) = client.write_key_dir(&eval, &output)?;
                Ok(format!(
                    "secret key written to {} (keep it private)\nevaluation keys written to {} ({} rotation steps)\n",
                    sk.display(),
                    ek.display(),
                    client.session().plan.rotation_steps.len()
                ))
            }
            Cli::Encrypt {
                plan,
                keys,
                input,
                limit,
                skip,
                output,
                clamp,
                allow_shared_key,
                no_memory_check,
                insecure,
            } => {
                hecc::files::check_output_distinct(
                    &output,
                    &[
                        &plan,
                        &input,
                        &keys.join(r::SECRET_KEY_FILE),
                        &keys.join(r::EVAL_KEYS_FILE),
                    ],
                )?;
                let s = open(&plan, insecure)?;
                if !no_memory_check {
                    r::check_need(
                        r::encrypt_bytes(&s),
                        r::available_memory(),
                        "encrypt",
                        "a few input ciphertexts per thread, written as they are made",
                        "run it on a machine with more memory, compile for fewer images per run \
                         (--batch), or pass --no-memory-check to try anyway",
                    )?;
                }
                let images = r::load_images(&input, s.input()?)?;
                if skip >= images.count {
                    return Err(miette::miette!(
                        "--skip {skip}: {} holds only {} images",
                        input.display(),
                        images.count
                    ));
                }
                if let Some(n) = limit.filter(|&n| n > images.count - skip) {
                    return Err(miette::miette!(
                        "--limit {n}: {} holds only {} images after --skip {skip}",
                        input.display(),
                        images.count - skip
                    ));
                }
                let mut images = images.slice(skip, limit.unwrap_or(images.count));
                if let Some(w) = r::check_input_range(&mut images, s.input()?, clamp)? {
                    eprintln!("warning: {w}");
                }
                let t = std::time::Instant::now();
                let (mut client, source) =
                    hecc::client::Client::open_key_dir(s, &keys, allow_shared_key)?;
                if source == hecc::client::KeySource::Public {
                    eprintln!(
                        "note: no secret key in {}: encrypting with the public key; the result's \
                         image count cannot be authenticated at decrypt",
                        keys.display()
                    );
                }
                let (meta, written) = client.encrypt_to_file(&images, &output)?;
                Ok(format!(
                    "{} images encrypted into {} ciphertexts ({:.1} MiB) in {:.2} s; written to {}\n",
                    images.count,
                    meta.elements.len(),
                    written as f64 / (1u64 << 20) as f64,
                    t.elapsed().as_secs_f64(),
                    output.display()
                ))
            }
            Cli::Run {
                plan,
                ciphertexts,
                eval_keys,
                output,
                quiet,
                memory_limit,
                no_memory_check,
                spill_dir,
                spill_budget,
                checkpoint_every,
                insecure,
            } => {
                hecc::files::check_output_distinct(&output, &[&plan, &ciphertexts, &eval_keys])?;
                let s = open(&plan, insecure)?;
                let spill = spill_dir.map(|dir| r::SpillSettings {
                    dir,
                    budget: Some(spill_budget.unwrap_or_else(|| r::default_spill_budget(&s))),
                    checkpoint_every: (checkpoint_every > 0.0)
                        .then(|| std::time::Duration::try_from_secs_f64(checkpoint_every).ok())
                        .flatten(),
                });
                if !no_memory_check {
                    match spill.as_ref().and_then(|sp| sp.budget) {
                        Some(b) => r::check_memory_spilling(&s, b, r::available_memory(), "run")?,
                        None => r::check_memory(&s, r::available_memory(), "run")?,
                    }
                }
                // Ctrl-C or SIGTERM stops the run after its current step; with --spill-dir a
                // checkpoint is written first, so the same command resumes.
                let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                // A second signal ends the process at once.
                for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                    let on = |r: std::io::Result<signal_hook::SigId>| {
                        miette::IntoDiagnostic::into_diagnostic(r).map(|_| ())
                    };
                    on(signal_hook::flag::register_conditional_shutdown(
                        sig,
                        130,
                        cancel.clone(),
                    ))?;
                    on(signal_hook::flag::register(sig, cancel.clone()))?;
                }
                let server = hecc::server::Server::open(s, &eval_keys)?;
                let resumable = spill
                    .as_ref()
                    .is_some_and(|sp| sp.checkpoint_every.is_some());
                let spilling = spill.is_some();
                let run_opts = r::RunOptions {
                    progress: progress_bar(quiet),
                    memory_limit,
                    spill,
                    cancel: Some(cancel),
                };
                // A spilling run reads each input ciphertext from the file when it is needed.
                let (outs, report) = if spilling {
                    server.run_file(&ciphertexts, &run_opts)
                } else {
                    server
                        .read_inputs(&ciphertexts)
                        .and_then(|inputs| server.run(inputs, &run_opts))
                }
                    .map_err(|e| {
                        let stopped = e
                            .chain()
                            .any(|c| c.to_string().contains("stopped before it finished"));
                        if stopped && resumable {
                            e.wrap_err("stopped by a signal after a checkpoint: run the same command again to resume")
                        } else {
                            e
                        }
                    })?;
                hecc::compile::write_atomic(&output, &server.outputs_bytes(&outs)?)?;
                Ok(format!(
                    "{}encrypted outputs written to {}\n",
                    r::render_run(&report, outs.meta.images),
                    output.display()
                ))
            }
            Cli::Decrypt {
                outputs,
                secret_key,
                output,
                request,
                allow_shared_key,
                insecure,
            } => {
                let mut inputs = vec![outputs.as_path(), secret_key.as_path()];
                inputs.extend(request.as_deref());
                hecc::files::check_output_distinct(&output, &inputs)?;
                let o = r::read_outputs(&outputs)?;
                if r::params_insecure(o.ctx.params()) {
                    if !insecure.insecure {
                        return Err(miette::miette!(
                            help = "pass --insecure to decrypt it anyway (for tests only)",
                            "{}: its parameters are below 128-bit security",
                            outputs.display()
                        ));
                    }
                    eprintln!("{INSECURE_WARNING}");
                }
                let d = hecc::client::decrypt_with_key_file(
                    &o,
                    &outputs.display().to_string(),
                    &secret_key,
                    request.as_deref(),
                    allow_shared_key,
                )?;
                if d.authenticity == r::Authenticity::Untagged {
                    eprintln!(
                        "note: the inputs were encrypted with the public key, so the result's \
                         image count is the server's word"
                    );
                }
                let logits = d.logits;
                hecc::compile::write_atomic(
                    &output,
                    &r::npy_bytes(logits.images, logits.classes, &logits.values),
                )?;
                let preds: Vec<String> =
                    logits.predictions().iter().map(|p| p.to_string()).collect();
                Ok(format!(
                    "predictions ({} images): {}\nlogits written to {}\n",
                    logits.images,
                    preds.join(" "),
                    output.display()
                ))
            }
            Cli::Infer {
                model,
                input,
                labels,
                verify,
                batch,
                activation,
                min_agreement,
                reference,
                scale_bits,
                model_args,
                layout,
                ranges,
                quiet,
                memory_limit,
                no_memory_check,
                full_slot_bootstraps,
                spill_dir,
                spill_budget,
            } => {
                let mut opts = r::InferOptions {
                    compile: hecc::compile::CompileOptions {
                        sparse_bootstraps: !full_slot_bootstraps,
                        activation: activation
                            .as_deref()
                            .map(hecc::compile::ActivationChoice::parse)
                            .transpose()?,
                        layout,
                        scale_bits,
                        ..Default::default()
                    },
                    batch,
                    verify,
                    progress: progress_bar(quiet),
                    memory_limit,
                    no_memory_check,
                    spill: spill_dir.map(|dir| r::SpillSettings {
                        dir,
                        budget: spill_budget,
                        checkpoint_every: None,
                    }),
                };
                let g = model_args.load(&model)?;
                ranges.apply(&g, &mut opts.compile)?;
                let rep = r::infer_graph(&g, &input, labels.as_deref(), &opts)?;
                let mut text = r::render_infer(&rep);
                let mut failed = r::disagreement(&rep, min_agreement);
                if let Some(note) = &rep.overflow {
                    failed = Some(miette::miette!("{note}"));
                }
                if let Some(path) = &reference {
                    let a = r::compare_reference(&rep, path)?;
                    let ratio = a.agree as f64 / a.images.max(1) as f64;
                    text.push_str(&format!(
                        "agreement with the reference outputs ({}): {}/{} images ({:.2}%)\n",
                        a.path,
                        a.agree,
                        a.images,
                        100.0 * ratio
                    ));
                    if ratio < min_agreement && failed.is_none() {
                        failed = Some(miette::miette!(
                            "the encrypted predictions agree with the reference outputs on only \
                             {}/{} images ({:.1}% < {:.1}%)",
                            a.agree,
                            a.images,
                            100.0 * ratio,
                            100.0 * min_agreement
                        ));
                    }
                }
                match failed {
                    Some(e) => {
                        print!("{text}");
                        Err(e)
                    }
                    None => Ok(text),
                }
            }
            _ => Err(miette::miette!("not a client command")),
        }
    };
    match result() {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e:?}");
            ExitCode::FAILURE
        }
    }
}

/// `hecc train`: options from the command line, a progress bar per epoch, the summary.
#[cfg(feature = "train")]
fn train_cli(cmd: Cli) -> ExitCode {
    use hecc_train::trainer::{Event, KdConfig, TrainConfig};
    let Cli::Train {
        spec,
        data,
        epochs,
        granularity,
        relu,
        teacher,
        kd,
        kd_temperature,
        kd_alpha,
        teacher_epochs,
        teacher_out,
        seed,
        batch_size,
        lr,
        momentum,
        weight_decay,
        coeff_l2,
        clip,
        limit,
        final_eval_only,
        validation,
        patience,
        history,
        spec_out,
        quiet,
        output,
    } = cmd
    else {
        return ExitCode::FAILURE;
    };
    let granularity = match granularity.as_deref() {
        None => None,
        Some(g) => match hecc_ir::tensor::Granularity::parse(g) {
            Some(g) => Some(g),
            None => {
                eprintln!("unknown granularity `{g}` (expected layer, channel or element)");
                return ExitCode::FAILURE;
            }
        },
    };
    let use_kd = kd || teacher.is_some() || kd_alpha.is_some_and(|a| a > 0.0);
    let config = TrainConfig {
        epochs,
        teacher_epochs: teacher_epochs.unwrap_or(epochs),
        batch_size,
        lr,
        momentum,
        weight_decay,
        coeff_l2,
        clip_norm: clip,
        seed,
        granularity,
        relu,
        kd: use_kd.then_some(KdConfig {
            temperature: kd_temperature,
            alpha: kd_alpha.unwrap_or(0.5),
        }),
        train_limit: limit,
        eval_each_epoch: !final_eval_only,
        validation,
        patience,
        ..TrainConfig::default()
    };
    let opts = hecc::train_cmd::TrainOptions {
        spec,
        data,
        output,
        spec_out,
        teacher,
        teacher_out,
        history,
        config,
    };
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut len = 0u64;
    let mut on = |e: &Event| match e {
        Event::Start { batches, .. } => len = *batches as u64,
        Event::Batch {
            phase,
            epoch,
            batch,
            loss,
            accuracy,
        } => {
            if quiet {
                return;
            }
            let b = bar.get_or_insert_with(|| {
                let b = indicatif::ProgressBar::new(0);
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                b
            });
            if *batch == 0 {
                b.reset();
                b.set_length(len);
                b.set_prefix(format!("{} epoch {epoch}", phase.as_str()));
            }
            if *batch % 10 == 0 {
                b.set_message(format!("loss {loss:.4} acc {:.2}%", 100.0 * accuracy));
            }
            b.set_position(*batch as u64 + 1);
        }
        Event::Epoch(s) => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            let mut test = s
                .val_accuracy
                .map(|a| format!(", validation {:.2}%", 100.0 * a))
                .unwrap_or_default();
            if let Some(a) = s.test_accuracy {
                test.push_str(&format!(", test {:.2}%", 100.0 * a));
            }
            eprintln!(
                "{} epoch {}: lr {:.4}, loss {:.4}, train {:.2}%{test} ({:.1} s; training {:.0} images/s)",
                s.phase.as_str(),
                s.epoch,
                s.lr,
                s.loss,
                100.0 * s.train_accuracy,
                s.seconds,
                s.images as f64 / s.train_seconds.max(1e-9)
            );
        }
        Event::EarlyStop {
            phase,
            epoch,
            best_epoch,
        } => {
            eprintln!(
                "{}: stopped after epoch {epoch}, no better validation accuracy since epoch {best_epoch} (its weights are kept)",
                phase.as_str()
            );
        }
        Event::TeacherLoaded { test_accuracy } => {
            eprintln!(
                "teacher loaded: test accuracy {:.2}%",
                100.0 * test_accuracy
            );
        }
    };
    match hecc::train_cmd::run(&opts, &mut on) {
        Ok(summary) => {
            print!("{}", hecc::train_cmd::render(&summary));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e:?}");
            ExitCode::FAILURE
        }
    }
}
