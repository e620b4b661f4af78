//! Compile options and what they are parsed from: the layout asked for, activation policies
//! and their ranges, input normalisation, plan and cost-table files. The pipeline itself is in
//! [`pipeline`].

use hecc_ir::tensor::{Graph, Op};
use hecc_passes::approx::{ActivationApprox, ActivationSpec, MethodSpec, ReluMethod, Surrogate};
use hecc_passes::he::RescalePolicy;
use hecc_passes::lower::ActivationPolicy;
use hecc_passes::params::{ParamChoice, Security};
use hecc_passes::plan::{Plan, PlanTensor};
use hecc_passes::ranges::{calibrate_ranges, sites, ActivationRange};
use hecc_passes::report::CostTable;
use hecc_runtime::ckks::CkksParameters;
use miette::{miette, IntoDiagnostic, Result};
use std::path::Path;

pub mod pipeline;

pub use pipeline::{compile, compile_graph, Compiled};

/// The packing layout a compile asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LayoutChoice {
    /// Slot i of every ciphertext holds image i; one ciphertext per tensor element.
    Batch,
    /// One ciphertext per channel, images side by side.
    Channel,
    /// The cheaper of the two by the cost model (`batch` when the channel layout cannot
    /// lower the model).
    Auto,
}

impl std::str::FromStr for LayoutChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "batch" => Ok(LayoutChoice::Batch),
            "channel" => Ok(LayoutChoice::Channel),
            "auto" => Ok(LayoutChoice::Auto),
            other => Err(format!(
                "unknown layout `{other}` (expected batch, channel or auto)"
            )),
        }
    }
}

/// The activation policy a compile asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum ActivationChoice {
    /// The shallowest policy whose plaintext argmax agrees with the exact model on the
    /// calibration images.
    Auto,
    /// This approximation of every `relu` and `max_pool`.
    Method(MethodSpec),
}

impl ActivationChoice {
    /// Parses `auto` or a policy name ([`parse_activation`]).
    pub fn parse(spec: &str) -> Result<ActivationChoice> {
        if spec == "auto" {
            return Ok(ActivationChoice::Auto);
        }
        Ok(ActivationChoice::Method(MethodSpec {
            spec: spec.to_string(),
            method: parse_activation(spec)?,
        }))
    }

    /// The approximation, unless this is `auto`.
    pub fn method(&self) -> Option<&MethodSpec> {
        match self {
            ActivationChoice::Auto => None,
            ActivationChoice::Method(m) => Some(m),
        }
    }
}

impl std::fmt::Display for ActivationChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ActivationChoice::Auto => f.write_str("auto"),
            ActivationChoice::Method(m) => f.write_str(&m.spec),
        }
    }
}

/// Options of `hecc compile`.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// The packing layout, or `auto` (the cost model chooses).
    pub layout: LayoutChoice,
    /// Images per run; `None` = as many as the slots allow. A requirement (the ring grows to
    /// hold them, or compilation fails) unless `batch_at_most` is set.
    pub batch: Option<u32>,
    /// `batch` is only an upper bound: the channel layout takes as many images as fit the
    /// ring the depth needs (what `infer` asks for, as it runs the plan several times).
    pub batch_at_most: bool,
    /// Rescale policy.
    pub rescale: RescalePolicy,
    /// Activation policy for `relu`/`max_pool` (see [`parse_activation`]), or `auto` (the
    /// shallowest policy whose plaintext argmax agrees with the exact model on the calibration
    /// images). `None`: the model must have no `relu`/`max_pool`; hecc never picks an
    /// approximation the user did not ask for.
    pub activation: Option<ActivationChoice>,
    /// How `auto` chose the policy, appended to the recorded activation.
    pub auto_note: Option<String>,
    /// Input range half-width of the ReLU approximation.
    pub relu_range: f64,
    /// Calibrate each activation's range on sample images (`--calibrate`).
    pub calibration: Option<Calibration>,
    /// `relu_range` was given explicitly: it is used for every activation even with
    /// calibration (the calibrated ranges are then only recorded and reported).
    pub range_override: bool,
    /// Scale bits.
    pub scale_bits: u32,
    /// Bits above the scale in the first prime.
    pub output_bits: u32,
    /// Security target.
    pub security: Security,
    /// Smallest ring degree considered (log2).
    pub min_log_n: u32,
    /// Memory budget in bytes: live ciphertexts and plaintexts at the peak of the chosen
    /// schedule, plus the evaluation keys.
    pub memory_budget: Option<u64>,
    /// Estimate a run that keeps its live values within this many bytes (`hecc run
    /// --spill-budget`): the report states what it holds and spills.
    pub spill_budget: Option<u64>,
    /// Cost table for time estimates.
    pub costs: Option<CostTable>,
    /// Comma-separated pass list (`--passes`); `None` runs the default pipeline for `rescale`.
    pub passes: Option<String>,
    /// Record the IR after these passes (`--dump-after`).
    pub dump_after: Vec<String>,
    /// Time every pass (`--time-passes`).
    pub time_passes: bool,
    /// Skip the optional (fusion) passes and materialise every pending affine factor
    /// (`--no-fuse`).
    pub no_fuse: bool,
    /// Also measure the depth without fusion for the report (one more lowering).
    pub compare_fusion: bool,
    /// When the compiler may place bootstraps (`--bootstrap`).
    pub bootstrap: BootstrapMode,
    /// Let a bootstrapped plan whose requested batch leaves most slots unused bootstrap only
    /// the slots it uses (the client repeats them across the ring); `--full-slot-bootstraps`
    /// clears it.
    pub sparse_bootstraps: bool,
}

impl CompileOptions {
    /// The activation policy as recorded in the report and the plan (`auto` must have been
    /// resolved to a method first).
    pub fn activation_spec(&self) -> ActivationSpec {
        ActivationSpec {
            approximation: self.activation.as_ref().and_then(|a| a.method()).cloned(),
            auto_note: self.auto_note.clone(),
        }
    }

    /// Whether the activation policy is still `auto` (resolved on calibration images before
    /// lowering).
    pub fn activation_is_auto(&self) -> bool {
        self.activation == Some(ActivationChoice::Auto)
    }
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            layout: LayoutChoice::Auto,
            batch: None,
            batch_at_most: false,
            rescale: RescalePolicy::Waterline,
            activation: None,
            auto_note: None,
            relu_range: 8.0,
            calibration: None,
            range_override: false,
            scale_bits: 40,
            output_bits: 20,
            security: Security::Bits128,
            min_log_n: 12,
            memory_budget: None,
            spill_budget: None,
            costs: None,
            passes: None,
            dump_after: Vec::new(),
            time_passes: false,
            no_fuse: false,
            compare_fusion: true,
            bootstrap: BootstrapMode::Auto,
            sparse_bootstraps: true,
        }
    }
}

/// When a compile may place bootstraps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BootstrapMode {
    /// Only when the circuit is deeper than any chain at the requested security.
    #[default]
    Auto,
    /// Never: a circuit that does not fit is an error.
    Never,
    /// Always, even when a chain without bootstrapping would do (tests on small rings, where
    /// every depth fits; or a shorter chain and smaller keys for a deep circuit).
    Always,
}

/// Sample data for range calibration.
#[derive(Clone, Debug)]
pub struct Calibration {
    /// Sample images `[N, ...input shape]`, in the model input's domain.
    pub samples: hecc_ir::tensor::Tensor,
    /// Relative margin added to each calibrated bound (`B = bound * (1 + margin)`).
    pub margin: f64,
}

impl Calibration {
    /// Calibration on the first `count` of `images` (of per-image `shape`), with the default
    /// 10 % margin: what `eval` and `infer` use when no `--calibrate` file is given.
    pub fn from_images(
        images: &crate::images::Images,
        shape: &[usize],
        count: usize,
    ) -> Result<Self> {
        let sample = images.take(count);
        let mut dims = vec![sample.count];
        dims.extend_from_slice(shape);
        Ok(Calibration {
            samples: hecc_ir::tensor::Tensor::from_shape_vec(dims, sample.data)
                .map_err(|e| miette!("calibration images: {e}"))?,
            margin: 0.1,
        })
    }
}

/// The largest magnitude of a model input's declared range: values beyond it overflow the
/// ciphertext modulus at hecc's scales after a few multiplications.
pub const MAX_INPUT_MAGNITUDE: f64 = 65536.0;

/// The range options of `hecc compile` and `hecc infer`.
#[derive(Clone, Debug, clap::Args)]
pub struct RangeArgs {
    /// Half-width B of the interval [-B, B] the ReLU (and max-pool) approximation is fitted
    /// on (default 8); when given, it overrides calibrated ranges for every activation.
    #[arg(long, value_parser = crate::cli_values::half_range)]
    pub relu_range: Option<f64>,
    /// Calibrate each activation's range on these images (.npy, IDX or PNG): the plaintext
    /// model runs on them and every relu/max_pool gets its own B = max|input| * (1 + margin)
    /// (max_pool: the largest window spread).
    #[arg(long)]
    pub calibrate: Option<std::path::PathBuf>,
    /// Images of the calibration file to use (the first N).
    #[arg(long, default_value_t = 1000, value_parser = crate::cli_values::positive)]
    pub calibrate_count: usize,
    /// Relative margin added to each calibrated bound.
    #[arg(long, default_value_t = 0.1, value_parser = crate::cli_values::margin)]
    pub range_margin: f64,
}

impl RangeArgs {
    /// Sets the range options of `opts` for the model `g` (loading the calibration
    /// images in the model input's domain, as `hecc infer` loads images).
    pub fn apply(&self, g: &Graph, opts: &mut CompileOptions) -> Result<()> {
        if let Some(b) = self.relu_range {
            opts.relu_range = b;
            opts.range_override = true;
        }
        if let Some(path) = &self.calibrate {
            opts.calibration = Some(load_calibration(
                g,
                path,
                self.calibrate_count,
                self.range_margin,
            )?);
        }
        Ok(())
    }
}

/// The first graph input as the client sees it (name, per-image shape, raw range).
pub fn input_tensor(g: &Graph) -> Result<PlanTensor> {
    let id = *g
        .inputs
        .first()
        .ok_or_else(|| miette!("the model has no input"))?;
    let n = g
        .node(id)
        .ok_or_else(|| miette!("the model has no input"))?;
    match &n.op {
        Op::Input { shape, norm } => Ok(PlanTensor {
            name: n.name.clone(),
            shape: shape.0.clone(),
            range: norm.range,
        }),
        _ => Err(miette!("the model's first input is not an input node")),
    }
}

/// Loads the first `count` images of `path` for `g`'s input (scaled like `hecc infer` does)
/// as calibration samples with relative `margin`.
pub fn load_calibration(g: &Graph, path: &Path, count: usize, margin: f64) -> Result<Calibration> {
    if g.inputs.len() != 1 {
        return Err(miette!(
            "calibration supports models with one input; this one has {}",
            g.inputs.len()
        ));
    }
    let input = input_tensor(g)?;
    let images = crate::images::load_images(path, &input)?.take(count.max(1));
    let mut dims = vec![images.count];
    dims.extend_from_slice(&input.shape);
    let samples = hecc_ir::tensor::Tensor::from_shape_vec(dims, images.data)
        .map_err(|e| miette!("calibration images from {}: {e}", path.display()))?;
    Ok(Calibration { samples, margin })
}

/// The replacements of the activations of `g`: one approximation fitted on `opts.relu_range`
/// for every activation, or, with calibration (and no explicit range), one per activation node
/// fitted on its own calibrated range. Returns the policy and the ranges to record (each with
/// the `B` actually used).
pub fn activation_policy(
    g: &Graph,
    opts: &CompileOptions,
) -> Result<(ActivationPolicy, Vec<ActivationRange>)> {
    let Some(choice) = &opts.activation else {
        let found = sites(g)?;
        if found.is_empty() {
            return Ok((ActivationPolicy::default(), Vec::new()));
        }
        return Err(no_activation_error(&found));
    };
    let Some(MethodSpec { method, .. }) = choice.method() else {
        return Err(miette!(
            "--activation auto must be resolved on calibration images first (see `resolve_auto`)"
        ));
    };
    let relu = ActivationApprox::relu(method, opts.relu_range)?;
    let mut policy = ActivationPolicy {
        relu: Some(relu.clone()),
        max: Some(relu),
        ..Default::default()
    };
    let Some(cal) = &opts.calibration else {
        let fixed = sites(g)?
            .iter()
            .map(|s| ActivationRange::fixed(s, opts.relu_range))
            .collect();
        return Ok((policy, fixed));
    };
    let mut ranges = calibrate_ranges(g, std::slice::from_ref(&cal.samples), cal.margin)?.ranges;
    for r in &mut ranges {
        if opts.range_override {
            r.range = opts.relu_range;
        } else {
            let a = ActivationApprox::relu(method, r.range)?;
            policy.per_node.insert(r.node.clone(), a);
        }
    }
    Ok((policy, ranges))
}

/// The error for a model with `relu`/`max_pool` compiled without an activation policy.
fn no_activation_error(found: &[hecc_passes::ranges::Site]) -> miette::Report {
    let names: Vec<String> = found
        .iter()
        .take(4)
        .map(|s| format!("`{}`", s.name))
        .collect();
    let more = if found.len() > 4 {
        format!(" and {} more", found.len() - 4)
    } else {
        String::new()
    };
    miette!(
        help = "relu and max_pool have no exact encrypted form. Choose how to \
                approximate them: `--activation minimax:7` (or minimax:15,15,27 for Lee et al.'s \
                precise composite), `chebyshev:15`, `least-squares:8`, `square` (only for \
                networks trained with x^2), or `--activation auto --calibrate IMAGES` to pick \
                the shallowest policy that keeps the exact model's predictions. `hecc eval MODEL \
                --input IMAGES --activation P` compares them in plaintext.",
        "the model has {} relu/max_pool activation(s) ({}{more}) and no --activation was given",
        found.len(),
        names.join(", ")
    )
}

/// The highest polynomial degree an activation policy may ask for.
pub const MAX_DEGREE: usize = 255;

/// Splits a policy `NAME[:ARG]`; a colon with nothing after it is refused.
pub fn split_policy(spec: &str) -> Result<(&str, &str)> {
    match spec.split_once(':') {
        Some((name, arg)) if arg.trim().is_empty() => Err(miette!(
            "activation `{spec}`: nothing after `{name}:` (give a degree or precision, or drop the colon)"
        )),
        Some(pair) => Ok(pair),
        None => Ok((spec, "")),
    }
}

/// A polynomial degree from 1 to [`MAX_DEGREE`].
pub fn parse_degree(spec: &str, d: &str) -> Result<usize> {
    match d.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_DEGREE).contains(&n) => Ok(n),
        Ok(n) => Err(miette!(
            "activation `{spec}`: degree {n} is outside 1 to {MAX_DEGREE}"
        )),
        Err(_) => Err(miette!("activation `{spec}`: `{d}` is not a degree")),
    }
}

/// A minimax precision in bits, from 1 to 40 (the composite constructions stop there).
pub fn parse_alpha(spec: &str, a: &str) -> Result<f64> {
    match a.trim().parse::<f64>() {
        Ok(x) if (1.0..=40.0).contains(&x) => Ok(x),
        _ => Err(miette!(
            "activation `{spec}`: `{a}` is not a precision in bits from 1 to 40"
        )),
    }
}

/// Parses an activation policy: `square`, `least-squares:D`, `chebyshev:D`, `taylor:D`,
/// `silu-taylor:D`, `cryptodl:D`, `minimax:ALPHA` or `minimax:D1,D2,...`.
pub fn parse_activation(spec: &str) -> Result<ReluMethod> {
    let (name, arg) = split_policy(spec)?;
    let degree = |default: usize| -> Result<usize> {
        if arg.is_empty() {
            Ok(default)
        } else {
            parse_degree(spec, arg)
        }
    };
    Ok(match name {
        "square" => ReluMethod::Square,
        "least-squares" | "lsq" => ReluMethod::LeastSquares { degree: degree(8)? },
        "chebyshev" => ReluMethod::Chebyshev { degree: degree(8)? },
        "taylor" => ReluMethod::Taylor { degree: degree(6)?, surrogate: Surrogate::Softplus },
        "silu-taylor" => ReluMethod::Taylor { degree: degree(6)?, surrogate: Surrogate::Silu },
        "cryptodl" => ReluMethod::CryptoDl { degree: degree(4)? },
        "minimax" => {
            if arg.contains(',') {
                let degrees = arg
                    .split(',')
                    .map(|d| parse_degree(spec, d))
                    .collect::<Result<Vec<_>>>()?;
                ReluMethod::Minimax { alpha: 10.0, degrees }
            } else {
                let alpha = if arg.is_empty() { 10.0 } else { parse_alpha(spec, arg)? };
                ReluMethod::Minimax { alpha, degrees: vec![] }
            }
        }
        other => {
            return Err(miette!(
                "unknown activation policy `{other}` (expected square, least-squares:D, chebyshev:D, taylor:D, silu-taylor:D, cryptodl:D, minimax:ALPHA or minimax:D1,D2,..)"
            ))
        }
    })
}

/// Backend primes for a parameter choice. The backend checks the 128-bit bound itself unless
/// `insecure_ok` (set only when the user asked for insecure parameters).
pub fn backend_params(choice: &ParamChoice, insecure_ok: bool) -> Result<CkksParameters> {
    let mut b = CkksParameters::builder()
        .log_n(choice.log_n)
        .q0_bits(choice.q0_bits)
        .scale_bits(choice.scale_bits.clone())
        .special_bits(choice.special_bits.clone())
        .dnum(choice.dnum as usize);
    if insecure_ok {
        b = b.insecure_no_security_check();
    }
    b.build().into_diagnostic()
}

/// Reads a cost table (JSON written by `hecc calibrate`).
pub fn read_costs(path: &Path) -> Result<CostTable> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| miette!("cannot read cost table {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| miette!("{} is not a cost table: {e}", path.display()))
}

/// Writes `plan` to `path` atomically (a temporary file renamed into place), so an existing
/// plan is never left half-written.
pub fn write_plan(plan: &Plan, path: &Path) -> Result<()> {
    let json = plan.to_json()?;
    write_atomic(path, json.as_bytes())
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::files::write_atomic(path, bytes)
}

/// Reads a plan file.
pub fn read_plan(path: &Path) -> Result<Plan> {
    read_plan_with_digest(path).map(|(p, _)| p)
}

/// Reads a plan file; also returns the digest its integrity field was checked against.
pub fn read_plan_with_digest(path: &Path) -> Result<(Plan, [u8; 32])> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| miette!("cannot read plan {}: {e}", path.display()))?;
    Ok(Plan::from_json_with_digest(&text)?)
}

/// How the model's input is normalised, declared on the command line (for ONNX files, whose
/// graphs take the already normalised tensor).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ModelArgs {
    /// Per-channel normalisation applied to the raw input before the model:
    /// `MEAN/STD` or `M1,M2,M3/S1,S2,S3` (e.g. `0.1307/0.3081` for MNIST); overrides the spec's.
    #[arg(long)]
    pub normalize: Option<String>,
    /// Range `LO,HI` of the raw input values (image bytes 0..255 are mapped onto it; default
    /// `0,1`); overrides the spec's.
    #[arg(long, allow_hyphen_values = true)]
    pub input_range: Option<String>,
}

impl ModelArgs {
    /// Loads the model at `path` and applies the declared normalisation.
    pub fn load(&self, path: &Path) -> Result<Graph> {
        let mut g = hecc_ir::front::load_model(path)?;
        self.apply(&mut g)?;
        Ok(g)
    }

    /// Sets the normalisation of `g`'s input.
    pub fn apply(&self, g: &mut Graph) -> Result<()> {
        if self.normalize.is_none() && self.input_range.is_none() {
            return Ok(());
        }
        let list = |s: &str, what: &str| -> Result<Vec<f64>> {
            s.split(',')
                .map(|v| {
                    v.trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|x| x.is_finite())
                        .ok_or_else(|| miette!("{what}: `{v}` is not a finite number"))
                })
                .collect()
        };
        let id = *g
            .inputs
            .first()
            .ok_or_else(|| miette!("the model has no input"))?;
        let node = g
            .node_mut(id)
            .ok_or_else(|| miette!("the model has no input"))?;
        let Op::Input { shape, norm } = &mut node.op else {
            return Err(miette!("the model's first input is not an input node"));
        };
        let channels = shape.first().copied().unwrap_or(1);
        if let Some(n) = &self.normalize {
            let (m, s) = n.split_once('/').ok_or_else(|| {
                miette!("--normalize `{n}`: expected MEAN/STD, e.g. 0.1307/0.3081")
            })?;
            let (mean, std) = (list(m, "--normalize")?, list(s, "--normalize")?);
            for v in [&mean, &std] {
                if v.len() != 1 && v.len() != channels {
                    return Err(miette!(
                        "--normalize `{n}`: {} values for an input with {channels} channels",
                        v.len()
                    ));
                }
            }
            if std.iter().any(|&x| x <= 0.0) {
                return Err(miette!(
                    "--normalize `{n}`: a standard deviation must be positive"
                ));
            }
            norm.mean = mean;
            norm.std = std;
        }
        if let Some(r) = &self.input_range {
            match list(r, "--input-range")?[..] {
                [lo, hi] if lo < hi => {
                    if lo.abs().max(hi.abs()) > MAX_INPUT_MAGNITUDE {
                        return Err(miette!(
                            help = "scale the inputs down (--normalize MEAN/STD) instead",
                            "--input-range `{r}`: beyond ±{MAX_INPUT_MAGNITUDE}, more than an \
                             encrypted network can carry at hecc's scales"
                        ));
                    }
                    norm.range = Some([lo, hi])
                }
                _ => return Err(miette!("--input-range `{r}`: expected LO,HI with LO < HI")),
            }
        }
        Ok(())
    }
}
