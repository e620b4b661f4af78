//! The compile pipeline for the `channel` layout, and the layout choice of `--layout auto`.
//!
//! Contract: [`compile_channel`] lowers with [`hecc_passes::lower::channel::lower_channel`]
//! (one ciphertext per channel, images side by side), manages the circuit with the options'
//! rescale policy (the `--passes` pipeline applies to the batch layout only), selects parameters,
//! re-lowers at the chosen slot count and real primes, and builds the report, memory schedule and
//! plan exactly like the batch pipeline. The plan's `batch` is the number of images side by side.
//! [`choose_layout`] is the cost model of `auto`: an estimate from the tensor graph alone (no
//! lowering) of both layouts' key switches and multiplications per image and of their live
//! ciphertexts, see [`LayoutEstimate`].

use crate::compile::{backend_params, CompileOptions, Compiled};
use hecc_ir::tensor::{Graph, Op, Shape};
use hecc_passes::he::{depth_of, manage_traced};
use hecc_passes::lower::channel::{lower_channel, ChannelLowered, ChannelOptions};
use hecc_passes::lower::LowerOptions;
use hecc_passes::manager::PassLog;
use hecc_passes::params::{select, ParamRequest};
use hecc_passes::plan::{Plan, PlanTensor, PLAN_FORMAT, PLAN_VERSION};
use hecc_passes::report;
use miette::{miette, Result};

/// Ring degree (log2) the `auto` estimate assumes for both layouts (the depth, hence the ring,
/// is similar for both; only the slot usage differs).
const AUTO_LOG_N: u32 = 15;

/// Estimated cost of one layout, from the tensor graph.
#[derive(Clone, Debug, PartialEq)]
pub struct LayoutEstimate {
    /// `batch` or `channel`.
    pub layout: &'static str,
    /// Images per run.
    pub images: u64,
    /// Key switches per run (rotations and relinearisations).
    pub key_switches: u64,
    /// Plaintext and scalar multiplications per run.
    pub mults: u64,
    /// Most ciphertexts one tensor needs.
    pub ciphertexts: u64,
}

impl LayoutEstimate {
    /// Relative cost of one run: a key switch counts as 20 plaintext multiplications.
    pub fn run_cost(&self) -> f64 {
        20.0 * self.key_switches as f64 + self.mults as f64
    }

    /// Cost of processing `images` images (whole runs).
    pub fn cost_for(&self, images: u64) -> f64 {
        images.div_ceil(self.images.max(1)) as f64 * self.run_cost()
    }
}

/// Estimates both layouts for `g` (verified, with its shapes) at `2^AUTO_LOG_N`.
pub fn estimate_layouts(g: &Graph) -> Option<(LayoutEstimate, LayoutEstimate)> {
    let shapes = hecc_ir::tensor::verify(g).ok()?;
    let slots: u64 = 1 << (AUTO_LOG_N - 1);
    let mut batch = LayoutEstimate {
        layout: "batch",
        images: slots,
        key_switches: 0,
        mults: 0,
        ciphertexts: 0,
    };
    let mut chan = LayoutEstimate {
        layout: "channel",
        images: 1,
        key_switches: 0,
        mults: 0,
        ciphertexts: 0,
    };
    let mut image = 1u64;
    for id in g.topo_order()? {
        let node = g.node(id)?;
        let out = shapes.get(&id).cloned().unwrap_or_default();
        let inp: Shape = g
            .operand_ids(id)
            .first()
            .and_then(|o| shapes.get(o))
            .cloned()
            .unwrap_or_default();
        let numel = out.numel() as u64;
        let channels = out.0.first().copied().unwrap_or(1).max(1) as u64;
        batch.ciphertexts = batch.ciphertexts.max(numel);
        chan.ciphertexts = chan.ciphertexts.max(channels);
        match &node.op {
            Op::Input { shape, .. } => {
                let c = shape.0.first().copied().unwrap_or(1).max(1);
                image = image.max((shape.numel() / c) as u64);
            }
            Op::Conv2d {
                out_channels,
                kernel,
                groups,
                ..
            } => {
                let c_in = inp.0.first().copied().unwrap_or(1) as u64;
                let k = (kernel[0] * kernel[1]) as u64;
                let per_group = c_in / (*groups).max(1) as u64;
                batch.mults += numel * per_group * k;
                chan.key_switches += c_in * k.saturating_sub(1);
                chan.mults += *out_channels as u64 * per_group * k;
            }
            Op::Dense { out_features, .. } => {
                let n_in = inp.numel() as u64;
                batch.mults += *out_features as u64 * n_in;
                image = image.max(*out_features as u64);
                // Diagonal method with baby-step giant-step rotations over the input span.
                let diags = n_in + *out_features as u64;
                chan.key_switches += 2 * (diags as f64).sqrt().ceil() as u64;
                chan.mults += diags;
            }
            Op::AvgPool { kernel, .. } => {
                chan.key_switches += channels * (kernel[0] * kernel[1]).saturating_sub(1) as u64;
            }
            Op::GlobalAvgPool => {
                let hw = inp.numel() as u64 / channels.max(1);
                chan.key_switches += channels * (64 - hw.leading_zeros()) as u64;
            }
            Op::Square | Op::Quadratic { .. } | Op::Poly { .. } | Op::Relu | Op::MaxPool { .. } => {
                let per = match &node.op {
                    Op::Poly { coeffs } => coeffs.len().max(2) as u64 - 1,
                    Op::Relu | Op::MaxPool { .. } => 8,
                    _ => 1,
                };
                batch.key_switches += numel * per;
                chan.key_switches += channels * per;
                batch.mults += numel * per;
                chan.mults += channels * per;
            }
            _ => {}
        }
    }
    chan.images = (slots / image.next_power_of_two()).max(1);
    Some((batch, chan))
}

/// The layout `auto` picks, with the reason: the cheaper per image (no `--batch`: throughput)
/// or for the requested images (`--batch B`: latency of B images), among the layouts whose
/// largest tensor fits the memory budget (if given).
pub fn choose_layout(g: &Graph, opts: &CompileOptions) -> (&'static str, String) {
    let Some((b, c)) = estimate_layouts(g) else {
        return ("batch", "no estimate (the model does not verify)".into());
    };
    let ct_bytes = 2 * (1u64 << AUTO_LOG_N) * 8 * 8;
    let fits = |e: &LayoutEstimate| {
        opts.memory_budget
            .is_none_or(|m| e.ciphertexts * ct_bytes <= m)
    };
    let (cb, cc) = match opts.batch {
        Some(n) => (b.cost_for(u64::from(n)), c.cost_for(u64::from(n))),
        None => (
            b.run_cost() / b.images as f64,
            c.run_cost() / c.images as f64,
        ),
    };
    let pick = match (fits(&b), fits(&c)) {
        (true, false) => "batch",
        (false, true) => "channel",
        _ => {
            if cc < cb {
                "channel"
            } else {
                "batch"
            }
        }
    };
    (
        pick,
        format!(
            "auto layout: batch {cb:.3e} vs channel {cc:.3e} ({}) -> {pick}",
            if opts.batch.is_some() {
                "cost of the requested images"
            } else {
                "cost per image"
            }
        ),
    )
}

fn tensors(g: &Graph, ids: &[hecc_ir::tensor::NodeId]) -> Vec<PlanTensor> {
    let shapes = hecc_ir::tensor::verify(g).unwrap_or_default();
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

/// Slots of the largest ring the parameter table has (N = 2^16).
const MAX_SLOTS: u64 = 1 << 15;

/// Compiles `g` in the channel layout.
pub fn compile_channel(g: &Graph, opts: &CompileOptions) -> Result<Compiled> {
    let (activations, ranges) = crate::compile::activation_policy(g, opts)?;
    let lower = |log_n: u32| -> Result<ChannelLowered> {
        let slots = 1u32 << (log_n - 1);
        Ok(lower_channel(
            g,
            &ChannelOptions::new(LowerOptions {
                batch: opts.batch.unwrap_or(slots),
                slots,
                log_scale: f64::from(opts.scale_bits),
                activations: activations.clone(),
            }),
        )?)
    };
    // The depth depends on the slot count (plaintext budget), so iterate to a fixed point.
    let mut log_n = opts.min_log_n.max(2);
    let mut choice = None;
    for _ in 0..4 {
        let low = lower(log_n)?;
        let managed = manage_traced(&low.lowered.module, opts.rescale, None)?;
        let c = select(&ParamRequest {
            depth: depth_of(&managed.module),
            scale_bits: opts.scale_bits,
            output_bits: opts.output_bits,
            // A requested batch is a requirement: the ring grows until the images fit side
            // by side.
            // (capped at the largest ring's slots; a batch beyond it is refused below).
            slots: (u64::from(low.image_stride)
                * opts
                    .batch
                    .filter(|_| !opts.batch_at_most)
                    .map_or(1, u64::from))
            .min(MAX_SLOTS.max(u64::from(low.image_stride))),
            security: opts.security,
            min_log_n: log_n,
        })?;
        let done = c.log_n == log_n;
        log_n = c.log_n;
        choice = Some(c);
        if done {
            break;
        }
    }
    let choice = choice.ok_or_else(|| miette!("no parameters for the channel layout"))?;
    let backend = backend_params(
        &choice,
        opts.security == hecc_passes::params::Security::InsecureNone,
    )?;
    let he_params = hecc_ir::he::Params {
        log_n: choice.log_n,
        primes: backend.q().to_vec(),
    };
    let low = lower(choice.log_n)?;
    if let Some(want) = opts.batch.filter(|_| !opts.batch_at_most) {
        if low.images < want {
            return Err(miette!(
                help = "lower --batch: a run then takes fewer images (infer runs the plan \
                        several times), or use the batch layout",
                "--batch {want} does not fit the channel layout: one image takes {} slots and \
                 N = 2^{} has {} slots, room for {} images",
                low.image_stride,
                choice.log_n,
                1u64 << (choice.log_n - 1),
                low.images
            ));
        }
    }
    let managed = manage_traced(&low.lowered.module, opts.rescale, Some(&he_params))?;
    let mut rep = report::build(
        &low.lowered,
        &managed,
        &choice,
        (&g.name, "channel", opts.rescale.name()),
        opts.costs.as_ref(),
    );
    rep.activation = opts.activation_label();
    rep.activation_ranges = ranges;
    let key_bytes = rep.keys.public_key + rep.keys.relin_key + rep.keys.galois_keys;
    let sched = hecc_passes::schedule::schedule(
        &managed.module,
        choice.log_n,
        key_bytes,
        opts.memory_budget,
    )?;
    rep.schedule = Some(sched.summary.clone());
    let plan = Plan {
        format: PLAN_FORMAT.into(),
        version: PLAN_VERSION,
        model: g.name.clone(),
        layout: "channel".into(),
        batch: low.images,
        rescale_policy: opts.rescale.name().into(),
        activation: opts.activation_label(),
        params: choice,
        primes: backend.q().to_vec(),
        special_primes: backend.p().to_vec(),
        inputs: tensors(g, &g.inputs),
        outputs: tensors(g, &g.outputs),
        rotation_steps: rep.keys.rotation_steps.clone(),
        circuit: managed.module.to_string(),
        schedule: sched.order.iter().map(|v| v.0).collect(),
        report: rep,
        integrity: String::new(),
    };
    Ok(Compiled {
        plan,
        log: PassLog::default(),
    })
}
