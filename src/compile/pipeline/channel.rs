//! The channel layout: one ciphertext per channel, images side by side in the slots; and the
//! cost model of `--layout auto`.
//!
//! Contract: [`ChannelPacking`] lowers with [`lower_channel_shaped`]. The depth depends on the
//! slot count (the plaintext budget of one-level linear layers), so parameters are chosen at a
//! fixed point: lower at a ring, select, lower again at the selected ring until it stays. A
//! requested `--batch` is a requirement (the ring grows until the images fit side by side)
//! unless `batch_at_most`; the images of a run are those that fit. [`choose_layout`] estimates
//! both layouts from the tensor graph alone (no lowering), see [`LayoutEstimate`].

use super::{CompileContext, Lowering, Packing};
use crate::compile::CompileOptions;
use hecc_ir::tensor::verify::Shapes;
use hecc_ir::tensor::{Graph, NodeId, Op, Shape};
use hecc_passes::approx::plan::optimal_depth;
use hecc_passes::layout::PackingLayout;
use hecc_passes::lower::channel::{lower_channel_shaped, ChannelOptions};
use hecc_passes::params::{ParamChoice, ParamRequest};
use miette::{miette, Result};
use std::collections::HashMap;

/// Slots of the largest ring the parameter table has (N = 2^16).
const MAX_SLOTS: u64 = 1 << 15;

/// The channel layout strategy.
pub struct ChannelPacking;

impl Packing for ChannelPacking {
    fn layout(&self) -> PackingLayout {
        PackingLayout::Channel
    }

    fn lower(
        &self,
        cx: &CompileContext<'_>,
        g: &Graph,
        shapes: &Shapes,
        slots: u32,
        fold: bool,
    ) -> Result<Lowering> {
        // Affine factors are always carried lazily to the next product in this layout.
        let low = lower_channel_shaped(g, shapes, &ChannelOptions::new(cx.lower_options(slots)))?;
        Ok(Lowering {
            lowered: low.lowered,
            images: low.images,
            image_stride: low.image_stride,
            slots,
            fold,
        })
    }

    fn choose_params(
        &self,
        cx: &CompileContext<'_>,
        depth: &mut dyn FnMut(Lowering) -> Result<u32>,
    ) -> Result<ParamChoice> {
        let opts = cx.opts;
        let mut log_n = opts.min_log_n.max(2);
        let mut choice = None;
        for _ in 0..4 {
            let low = self.lower(cx, &cx.graph, &cx.shapes, 1u32 << (log_n - 1), true)?;
            let stride = u64::from(low.image_stride);
            let c = cx.select_params(&ParamRequest {
                depth: depth(low)?,
                scale_bits: opts.scale_bits,
                output_bits: opts.output_bits,
                // A requested batch is a requirement: the ring grows until the images fit
                // side by side (capped at the largest ring's slots; a batch beyond it is
                // refused by `check`).
                slots: (stride
                    * opts
                        .batch
                        .filter(|_| !opts.batch_at_most)
                        .map_or(1, u64::from))
                .min(MAX_SLOTS.max(stride)),
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
        choice.ok_or_else(|| miette!("no parameters for the channel layout"))
    }

    fn tiles_per_image(&self) -> bool {
        // Masks and coefficient vectors repeat once per image lowered for.
        true
    }

    fn probes_at_final_slots(&self) -> bool {
        // The ring grows until the depth fits: the last probe is at the chosen ring.
        true
    }

    fn fusion_probe_slots(&self, _cx: &CompileContext<'_>) -> Option<u32> {
        // Batch-norm and scalings are pending factors on the channel forms, materialised only
        // at the next product, so fusion cannot change the depth (measured: the same depth
        // with and without the fusion passes on the eight reference models and exports).
        None
    }

    fn check(&self, cx: &CompileContext<'_>, low: &Lowering, choice: &ParamChoice) -> Result<()> {
        let opts = cx.opts;
        match opts.batch.filter(|_| !opts.batch_at_most) {
            Some(want) if low.images < want => Err(miette!(
                help = "lower --batch: a run then takes fewer images (infer runs the plan \
                        several times), or use the batch layout",
                "--batch {want} does not fit the channel layout: one image takes {} slots and \
                 N = 2^{} has {} slots, room for {} images",
                low.image_stride,
                choice.log_n,
                1u64 << (choice.log_n - 1),
                low.images
            )),
            _ => Ok(()),
        }
    }
}

/// Ring degree (log2) the `auto` estimate assumes for both layouts (the depth, hence the ring,
/// is similar for both; only the slot usage differs).
const AUTO_LOG_N: u32 = 15;

/// Estimated cost of one layout, from the tensor graph.
#[derive(Clone, Debug, PartialEq)]
pub struct LayoutEstimate {
    /// The layout estimated.
    pub layout: PackingLayout,
    /// Images per run.
    pub images: u64,
    /// Key switches per run (rotations and relinearisations).
    pub key_switches: u64,
    /// Plaintext and scalar multiplications per run.
    pub mults: u64,
    /// Most ciphertexts one tensor needs.
    pub ciphertexts: u64,
    /// Bootstraps per run, when the model is too deep for one chain (0 otherwise).
    pub bootstraps: f64,
}

/// Levels the estimate takes a model to fit without bootstrapping (a 128-bit chain at N=2^16
/// holds about 30 levels of 40 bits beside its special primes).
const LEVELED_DEPTH: u64 = 30;
/// Levels between two bootstraps (hecc's bootstrapping leaves 10).
const LEVELS_PER_BOOTSTRAP: f64 = 10.0;
/// A bootstrap in key switches of the circuit's (about 110 key switches and hoisted rotations
/// over the whole chain, each some three times a circuit key switch at its lower level).
const BOOTSTRAP_KEY_SWITCHES: f64 = 300.0;

impl LayoutEstimate {
    /// Relative cost of one run: a key switch counts as 20 plaintext multiplications, a
    /// bootstrap as [`BOOTSTRAP_KEY_SWITCHES`] key switches.
    pub fn run_cost(&self) -> f64 {
        20.0 * (self.key_switches as f64 + BOOTSTRAP_KEY_SWITCHES * self.bootstraps)
            + self.mults as f64
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
        layout: PackingLayout::Batch,
        images: slots,
        key_switches: 0,
        mults: 0,
        ciphertexts: 0,
        bootstraps: 0.0,
    };
    let mut chan = LayoutEstimate {
        layout: PackingLayout::Channel,
        images: 1,
        key_switches: 0,
        mults: 0,
        ciphertexts: 0,
        bootstraps: 0.0,
    };
    let mut image = 1u64;
    if let Some(Op::Input { shape, .. }) = g.inputs.first().and_then(|&i| g.node(i)).map(|n| &n.op)
    {
        let c = shape.0.first().copied().unwrap_or(1).max(1);
        image = (shape.numel() / c).max(1).next_power_of_two() as u64;
    }
    // Per node: levels it consumes and ciphertexts it yields in each layout (the channel
    // layout packs several channels of a strided grid into one ciphertext before activations),
    // for the bootstrap estimate.
    let mut depth_of: HashMap<NodeId, u64> = HashMap::new();
    let mut depth = 0u64;
    let mut live: Vec<(u64, u64, u64)> = Vec::new();
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
        let per_channel = (numel / channels).max(1);
        let packed = match out.rank() {
            3 if image.next_power_of_two() >= 2 * per_channel => {
                let per_ct = (image.next_power_of_two() / per_channel).max(1);
                let per_ct = 1u64 << (63 - per_ct.leading_zeros());
                channels.div_ceil(per_ct)
            }
            _ => channels,
        };
        chan.ciphertexts = chan.ciphertexts.max(channels);
        let levels = match &node.op {
            Op::Conv2d { .. } | Op::Dense { .. } | Op::Square | Op::Quadratic { .. } => 1,
            Op::Poly { coeffs } => {
                // Degree at most 2 is lowered as a quadratic (one level).
                let degree = coeffs.iter().rposition(|c| *c != 0.0).unwrap_or(0).max(2);
                u64::from(optimal_depth(degree)) - u64::from(degree == 2)
            }
            Op::Relu => 8,
            Op::MaxPool { kernel, .. } => {
                8 * (64 - ((kernel[0] * kernel[1]).max(2) as u64 - 1).leading_zeros() as u64)
            }
            _ => 0,
        };
        // Depth along the longest path (parallel branches do not add up).
        let d = g
            .operand_ids(id)
            .iter()
            .filter_map(|o| depth_of.get(o))
            .max()
            .copied()
            .unwrap_or(0)
            + levels;
        depth_of.insert(id, d);
        depth = depth.max(d);
        live.push((levels, numel, packed));
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
    // Too deep for one chain: a cut every LEVELS_PER_BOOTSTRAP levels refreshes the
    // ciphertexts live there, spread over the nodes by the levels each consumes.
    if depth > LEVELED_DEPTH {
        for (levels, b, c) in live {
            let share = levels as f64 / LEVELS_PER_BOOTSTRAP;
            batch.bootstraps += share * b as f64;
            chan.bootstraps += share * c as f64;
        }
    }
    Some((batch, chan))
}

/// The layout `auto` picks, with the reason: the cheaper per image (no `--batch`: throughput)
/// or for the requested images (`--batch B`: latency of B images), among the layouts whose
/// largest tensor fits the memory budget (if given).
pub fn choose_layout(g: &Graph, opts: &CompileOptions) -> (PackingLayout, String) {
    let Some((b, c)) = estimate_layouts(g) else {
        return (
            PackingLayout::Batch,
            "no estimate (the model does not verify)".into(),
        );
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
        (true, false) => PackingLayout::Batch,
        (false, true) => PackingLayout::Channel,
        _ => {
            if cc < cb {
                PackingLayout::Channel
            } else {
                PackingLayout::Batch
            }
        }
    };
    (
        pick,
        format!(
            "auto layout: batch {cb:.3e} vs channel {cc:.3e} ({}{}) -> {pick}",
            if opts.batch.is_some() {
                "cost of the requested images"
            } else {
                "cost per image"
            },
            if b.bootstraps > 0.0 {
                format!(
                    "; about {:.0} bootstraps per run of {} images in the batch layout, {:.0} per run of {} in the channel layout",
                    b.bootstraps, b.images, c.bootstraps, c.images
                )
            } else {
                String::new()
            }
        ),
    )
}
