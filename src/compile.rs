//! The compile pipeline: model file -> tensor graph -> (batch) lowering -> scale and level
//! management -> parameter selection -> primes from the backend -> managed circuit at the real
//! primes -> report -> plan.

use hecc_ir::tensor::{Graph, Op};
use hecc_passes::approx::{ActivationApprox, ReluMethod, Surrogate};
use hecc_passes::he::{manage_traced, RescalePolicy};
use hecc_passes::lower::{lower_batch, ActivationPolicy, LowerOptions};
use hecc_passes::params::{select, ParamChoice, ParamRequest, Security};
use hecc_passes::plan::{Plan, PlanTensor, PLAN_FORMAT, PLAN_VERSION};
use hecc_passes::report::{self, CostTable};
use hecc_runtime::ckks::CkksParameters;
use miette::{miette, IntoDiagnostic, Result};
use std::path::Path;

/// Options of `hecc compile`.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// `batch`, `channel` or `auto`.
    pub layout: String,
    /// Images per run; `None` = as many as the slots allow.
    pub batch: Option<u32>,
    /// Rescale policy.
    pub rescale: RescalePolicy,
    /// Activation policy for `relu`/`max_pool` (see [`parse_activation`]).
    pub activation: String,
    /// Input range half-width of the ReLU approximation.
    pub relu_range: f64,
    /// Scale bits.
    pub scale_bits: u32,
    /// Bits above the scale in the first prime.
    pub output_bits: u32,
    /// Security target.
    pub security: Security,
    /// Smallest ring degree considered (log2).
    pub min_log_n: u32,
    /// Memory budget in bytes for live ciphertexts.
    pub memory_budget: Option<u64>,
    /// Cost table for time estimates.
    pub costs: Option<CostTable>,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            layout: "auto".into(),
            batch: None,
            rescale: RescalePolicy::Waterline,
            activation: "square".into(),
            relu_range: 8.0,
            scale_bits: 40,
            output_bits: 20,
            security: Security::Bits128,
            min_log_n: 12,
            memory_budget: None,
            costs: None,
        }
    }
}

/// Parses an activation policy: `square`, `least-squares:D`, `chebyshev:D`, `taylor:D`,
/// `silu-taylor:D`, `cryptodl:D`, `minimax:ALPHA` or `minimax:D1,D2,...`.
pub fn parse_activation(spec: &str) -> Result<ReluMethod> {
    let (name, arg) = spec.split_once(':').unwrap_or((spec, ""));
    let degree = |default: usize| -> Result<usize> {
        if arg.is_empty() {
            Ok(default)
        } else {
            arg.parse()
                .map_err(|_| miette!("activation `{spec}`: `{arg}` is not a degree"))
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
                    .map(|d| d.trim().parse::<usize>().map_err(|_| miette!("activation `{spec}`: bad degree `{d}`")))
                    .collect::<Result<Vec<_>>>()?;
                ReluMethod::Minimax { alpha: 10.0, degrees }
            } else {
                let alpha = if arg.is_empty() { 10.0 } else { arg.parse().map_err(|_| miette!("activation `{spec}`: `{arg}` is not a precision in bits"))? };
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

/// A compiled model.
pub struct Compiled {
    /// The plan.
    pub plan: Plan,
}

fn tensors(
    g: &Graph,
    ids: &[hecc_ir::tensor::NodeId],
    shapes: &hecc_ir::tensor::verify::Shapes,
) -> Vec<PlanTensor> {
    ids.iter()
        .filter_map(|&id| {
            let n = g.node(id)?;
            let range = match &n.op {
                Op::Input { norm, .. } => norm.range,
                _ => None,
            };
            Some(PlanTensor {
                name: n.name.clone(),
                shape: shapes.get(&id).map(|s| s.0.clone()).unwrap_or_default(),
                range,
            })
        })
        .collect()
}

/// Backend primes for a parameter choice.
pub fn backend_params(choice: &ParamChoice) -> Result<CkksParameters> {
    let mut b = CkksParameters::builder()
        .log_n(choice.log_n)
        .q0_bits(choice.q0_bits)
        .scale_bits(choice.scale_bits.clone())
        .special_bits(choice.special_bits.clone())
        .dnum(choice.dnum as usize);
    if choice.security == Security::InsecureNone {
        b = b.insecure_no_security_check();
    }
    b.build().into_diagnostic()
}

/// Compiles the model at `path`.
pub fn compile(path: &Path, opts: &CompileOptions) -> Result<Compiled> {
    let g = hecc_ir::front::load_model(path)?;
    compile_graph(&g, opts)
}

/// Compiles a loaded tensor graph.
pub fn compile_graph(g: &Graph, opts: &CompileOptions) -> Result<Compiled> {
    let shapes = hecc_ir::tensor::verify(g).map_err(|errs| {
        miette!(
            "the model does not verify ({} problems); run `hecc check`",
            errs.len()
        )
    })?;
    match opts.layout.as_str() {
        "batch" | "auto" => {}
        "channel" => {
            return Err(miette!(
                "the channel layout is not implemented yet; use --layout batch"
            ))
        }
        other => {
            return Err(miette!(
                "unknown layout `{other}` (expected batch, channel or auto)"
            ))
        }
    }
    let method = parse_activation(&opts.activation)?;
    let relu = ActivationApprox::relu(&method, opts.relu_range)?;
    let activations = ActivationPolicy {
        relu: Some(relu.clone()),
        max: Some(relu),
    };
    // 1. Depth at a provisional slot count.
    let probe_batch = opts.batch.unwrap_or(1).max(1);
    let lower_opts = |slots: u32, batch: u32| LowerOptions {
        batch,
        slots,
        log_scale: f64::from(opts.scale_bits),
        activations: activations.clone(),
    };
    let lowered = lower_batch(g, &lower_opts(probe_batch, probe_batch))?;
    let managed = manage_traced(&lowered.module, opts.rescale, None)?;
    let depth = hecc_passes::he::depth_of(&managed.module);
    // 2. Parameters.
    let choice = select(&ParamRequest {
        depth,
        scale_bits: opts.scale_bits,
        output_bits: opts.output_bits,
        slots: u64::from(probe_batch),
        security: opts.security,
        min_log_n: opts.min_log_n,
    })?;
    let slots = 1u32 << (choice.log_n - 1);
    let batch = opts.batch.unwrap_or(slots);
    let backend = backend_params(&choice)?;
    let he_params = hecc_ir::he::Params {
        log_n: choice.log_n,
        primes: backend.q().to_vec(),
    };
    // 3. The circuit at the real slot count and primes.
    let lowered = lower_batch(g, &lower_opts(slots, batch))?;
    let managed = manage_traced(&lowered.module, opts.rescale, Some(&he_params))?;
    let mut rep = report::build(
        &lowered,
        &managed,
        &choice,
        (&g.name, "batch", opts.rescale.name()),
        opts.costs.as_ref(),
    );
    rep.activation = opts.activation.clone();
    if let Some(budget) = opts.memory_budget {
        if rep.peak_ciphertext_bytes > budget {
            return Err(miette!(
                help = "raise --memory-budget, use a smaller --batch (fewer slots do not shrink ciphertexts; a smaller ring does), or a layout with fewer ciphertexts",
                "the plan needs {} bytes of live ciphertexts at its peak ({} ciphertexts), over the budget of {budget} bytes",
                rep.peak_ciphertext_bytes,
                rep.peak_ciphertexts
            ));
        }
    }
    let plan = Plan {
        format: PLAN_FORMAT.into(),
        version: PLAN_VERSION,
        model: g.name.clone(),
        layout: "batch".into(),
        batch,
        rescale_policy: opts.rescale.name().into(),
        activation: opts.activation.clone(),
        params: choice,
        primes: backend.q().to_vec(),
        special_primes: backend.p().to_vec(),
        inputs: tensors(g, &g.inputs, &shapes),
        outputs: tensors(g, &g.outputs, &shapes),
        rotation_steps: rep.keys.rotation_steps.clone(),
        circuit: managed.module.to_string(),
        report: rep,
    };
    Ok(Compiled { plan })
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
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| miette!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        miette!("cannot move {} into place: {e}", path.display())
    })
}

/// Reads a plan file.
pub fn read_plan(path: &Path) -> Result<Plan> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| miette!("cannot read plan {}: {e}", path.display()))?;
    Ok(Plan::from_json(&text)?)
}
