//! The compile pipeline, one for every packing layout.
//!
//! Contract: [`compile_graph`] resolves the layout (`auto` asks the cost model in
//! [`channel::choose_layout`]), then runs the same steps for either [`Packing`] strategy:
//!
//! 1. the tensor passes of the pipeline (`--passes`, default [`Pipeline::default_for`]), with
//!    dumps and timings, then the shapes of the resulting graph, computed once and kept in the
//!    [`CompileContext`];
//! 2. the activation replacements, calibrated on that graph;
//! 3. parameter selection by the strategy, which lowers and manages probe circuits through the
//!    same HE passes (quietly: no dumps, no timings);
//! 4. the phase change: the lowering at the chosen ring (timed as `(lower-<layout>)`), then the
//!    HE passes with dumps, timings and the level and scale checkers;
//! 5. the report, the memory schedule (timed as `(schedule)`) and the plan.
//!
//! A strategy owns what differs between layouts: its lowering, how many slots its parameters
//! need, and how many images a run takes. Packing and unpacking at run time follow the slot
//! layouts the lowering writes into the circuit, so the client side needs no strategy.

pub mod batch;
pub mod channel;

use crate::compile::{
    activation_policy, backend_params, BootstrapMode, CompileOptions, LayoutChoice,
};
use hecc_ir::tensor::verify::Shapes;
use hecc_ir::tensor::{Graph, NodeId, Op};
use hecc_passes::he::{depth_of, Managed, RescalePolicy};
use hecc_passes::layout::PackingLayout;
use hecc_passes::lower::{ActivationPolicy, LowerOptions, Lowered};
use hecc_passes::manager::{
    Changed, ManagerOptions, PassCx, PassLog, PassManager, PassTiming, Pipeline,
};
use hecc_passes::params::{
    select, select_bootstrapped, ParamChoice, ParamError, ParamRequest, Security,
};
use hecc_passes::plan::{Plan, PlanTensor, PLAN_FORMAT, PLAN_VERSION};
use hecc_passes::ranges::ActivationRange;
use hecc_passes::report::{self, ReportMeta};
use miette::{miette, Result};
use std::time::Instant;

pub use batch::BatchPacking;
pub use channel::{choose_layout, estimate_layouts, ChannelPacking, LayoutEstimate};

/// A compiled model.
pub struct Compiled {
    /// The plan.
    pub plan: Plan,
    /// IR dumps (`--dump-after`) and pass timings (`--time-passes`) of the final run.
    pub log: PassLog,
}

/// A circuit lowered by a strategy, with what the strategy knows about its packing.
#[derive(Clone)]
pub struct Lowering {
    /// The unmanaged circuit and its layer spans.
    pub lowered: Lowered,
    /// Images one run of the circuit takes.
    pub images: u32,
    /// Slots one image occupies (1 in the batch layout).
    pub image_stride: u32,
    /// The slot count it was lowered for.
    pub slots: u32,
    /// Whether affine factors were folded.
    pub fold: bool,
}

/// What a strategy sees of the compile: the graph after the tensor passes, its shapes, the
/// activation replacements and the options.
pub struct CompileContext<'a> {
    /// The graph to lower (after the tensor passes).
    pub graph: Graph,
    /// Shapes of `graph`, from one verification.
    pub shapes: Shapes,
    /// The graph before the tensor passes (for the fusion comparison).
    pub original: &'a Graph,
    /// Replacements of the non-polynomial activations.
    pub activations: ActivationPolicy,
    /// The activation ranges to record in the report.
    pub ranges: Vec<ActivationRange>,
    /// The options.
    pub opts: &'a CompileOptions,
    /// Lower for every image position the ring holds whatever the requested batch (the
    /// final lowering of a plan with sparse-slot bootstraps, [`sparse_slots`]).
    pub fill_batch: bool,
}

impl CompileContext<'_> {
    /// Parameters for `req`: a leveled chain when the depth fits one, else (unless
    /// `--bootstrap never`) a chain with bootstrapping, for values bounded by
    /// [`Self::bootstrap_bound`].
    pub fn select_params(&self, req: &ParamRequest) -> Result<ParamChoice> {
        match (self.opts.bootstrap, select(req)) {
            (BootstrapMode::Always, _) | (BootstrapMode::Auto, Err(ParamError::NoneFit { .. })) => {
                if self.ranges.is_empty() {
                    return Err(miette!(
                        help = "compile with --bootstrap never to see what a leveled chain would need",
                        "this model needs bootstrapping, and a bootstrap needs a bound on the values it \
                         refreshes; hecc takes that bound from the input ranges of approximated \
                         activations and this model has none (its activations are polynomials already), \
                         so no bootstrap could be checked against its inputs"
                    ));
                }
                Ok(select_bootstrapped(req, self.bootstrap_bound())?)
            }
            (BootstrapMode::Never, Err(mut e)) => {
                if let ParamError::NoneFit { suggestion, .. } = &mut e {
                    suggestion
                        .push_str("; or let the compiler place bootstraps (--bootstrap auto)");
                }
                Err(e.into())
            }
            (_, other) => Ok(other?),
        }
    }

    /// The bound on values a bootstrap may see: the largest activation range (the inputs of
    /// the approximated activations are the widest values of a network; their polynomials
    /// work on the input divided by it), at least 1.
    pub fn bootstrap_bound(&self) -> f64 {
        self.ranges.iter().map(|r| r.range).fold(1.0f64, f64::max)
    }

    /// Lowering options for a ring of `slots` slots: the requested batch (all slots when none
    /// was asked for), the scale and the activation replacements.
    pub fn lower_options(&self, slots: u32) -> LowerOptions {
        LowerOptions {
            batch: match self.opts.batch {
                Some(b) if !self.fill_batch => b,
                _ => slots,
            },
            slots,
            log_scale: f64::from(self.opts.scale_bits),
            activations: self.activations.clone(),
        }
    }
}

/// A packing layout: how a graph becomes a circuit, and what ring the circuit needs.
pub trait Packing {
    /// The layout this strategy produces.
    fn layout(&self) -> PackingLayout;

    /// Lowers `g` (with `shapes`, its verified shapes) for a ring of `slots` slots. `fold`
    /// folds pending affine factors where the strategy has a choice (`--no-fuse` clears it).
    fn lower(
        &self,
        cx: &CompileContext<'_>,
        g: &Graph,
        shapes: &Shapes,
        slots: u32,
        fold: bool,
    ) -> Result<Lowering>;

    /// Chooses the parameters. `depth` lowers nothing itself: it manages a strategy's
    /// lowering with the pipeline's HE passes and returns the circuit's depth.
    fn choose_params(
        &self,
        cx: &CompileContext<'_>,
        depth: &mut dyn FnMut(Lowering) -> Result<u32>,
    ) -> Result<ParamChoice>;

    /// Whether the last probe lowering of [`Packing::choose_params`] may be at the final slot
    /// count; the pipeline then keeps a copy of it and reuses it as the final lowering.
    fn probes_at_final_slots(&self) -> bool {
        false
    }

    /// The slot count of the lowering that measures the depth without fusion, or `None` when
    /// fusion cannot change this layout's depth (the comparison lowering is then skipped and
    /// the unfused depth is the depth).
    fn fusion_probe_slots(&self, cx: &CompileContext<'_>) -> Option<u32>;

    /// Checks the final lowering against the request (a batch that must fit).
    fn check(&self, cx: &CompileContext<'_>, low: &Lowering, choice: &ParamChoice) -> Result<()>;

    /// Whether the circuit's constants depend on the number of images lowered for (per-image
    /// tiles): a run whose slots repeat with a period then needs the lowering for every image
    /// position ([`sparse_slots`]).
    fn tiles_per_image(&self) -> bool {
        false
    }
}

/// Compiles the model at `path`.
pub fn compile(path: &std::path::Path, opts: &CompileOptions) -> Result<Compiled> {
    let g = hecc_ir::front::load_model(path)?;
    compile_graph(&g, opts)
}

/// Compiles a loaded tensor graph in the layout the options ask for.
pub fn compile_graph(g: &Graph, opts: &CompileOptions) -> Result<Compiled> {
    let resolved;
    let opts = if opts.activation_is_auto() {
        resolved = crate::eval::resolve_activation(g, opts)?.0;
        &resolved
    } else {
        opts
    };
    let shapes = hecc_ir::tensor::verify(g).map_err(|errs| {
        miette!(
            "the model does not verify ({} problems); run `hecc check`",
            errs.len()
        )
    })?;
    match opts.layout {
        LayoutChoice::Batch => compile_with(&BatchPacking, g, &shapes, opts),
        LayoutChoice::Channel => compile_with(&ChannelPacking, g, &shapes, opts),
        LayoutChoice::Auto => {
            if choose_layout(g, opts).0 == PackingLayout::Channel {
                // A model the channel layout cannot lower (padded max-pooling, ...) falls
                // back to the batch layout; any other failure is the user's to see.
                match compile_with(&ChannelPacking, g, &shapes, opts) {
                    Err(e)
                        if matches!(
                            e.downcast_ref::<hecc_passes::lower::channel::ChannelError>(),
                            Some(hecc_passes::lower::channel::ChannelError::Unsupported { .. })
                        ) => {}
                    other => return other,
                }
            }
            compile_with(&BatchPacking, g, &shapes, opts)
        }
    }
}

/// The pipeline, for one strategy, on `g` with `original_shapes` (its verified shapes).
pub fn compile_with(
    packing: &dyn Packing,
    g: &Graph,
    original_shapes: &Shapes,
    opts: &CompileOptions,
) -> Result<Compiled> {
    let layout = packing.layout();
    let passes = CompilePasses::new(opts)?;
    let mut log = PassLog::default();
    // 1. Tensor passes; the shapes of their result, once.
    let graph = passes.run_tensor(g, &mut log)?;
    let shapes = hecc_ir::tensor::verify(&graph).map_err(|errs| {
        miette!(
            "the model does not verify after the tensor passes ({} problems)",
            errs.len()
        )
    })?;
    // 2. Activation replacements (ranges calibrated on the graph that is lowered).
    let (activations, ranges) = activation_policy(&graph, opts)?;
    let mut cx = CompileContext {
        graph,
        shapes,
        original: g,
        activations,
        ranges,
        opts,
        fill_batch: false,
    };
    // 3. Parameters, from probe lowerings managed quietly. The last probe is kept: when it
    //    was lowered at the final slot count it is the final lowering.
    let mut probe_depth: Option<u32> = None;
    let mut last_probe: Option<Lowering> = None;
    let keep_probe = packing.probes_at_final_slots();
    let choice = packing.choose_params(&cx, &mut |low: Lowering| {
        if keep_probe {
            last_probe = Some(low.clone());
        }
        let d = depth_of(&passes.run_he(low.lowered, None, None)?.1.module);
        probe_depth = Some(d);
        Ok(d)
    })?;
    let depth = probe_depth.ok_or_else(|| miette!("no parameters were tried"))?;
    let probe_slots = packing
        .fusion_probe_slots(&cx)
        .filter(|_| passes.fold && opts.compare_fusion);
    let depth_unfused = match probe_slots {
        Some(slots) => {
            let raw = packing.lower(&cx, g, original_shapes, slots, false)?;
            depth_of(&passes.run_he(raw.lowered, None, None)?.1.module)
        }
        None => depth,
    };
    let backend = backend_params(&choice, opts.security == Security::InsecureNone)?;
    let he_params = hecc_ir::he::Params {
        log_n: choice.log_n,
        primes: backend.q().to_vec(),
    };
    // 4. The phase change: the circuit at the real slot count, then the HE passes.
    let t0 = Instant::now();
    let slots = 1u32 << (choice.log_n - 1);
    let (low, reused) = match last_probe {
        Some(p) if p.slots == slots && p.fold == passes.fold => (p, true),
        _ => (
            packing.lower(&cx, &cx.graph, &cx.shapes, slots, passes.fold)?,
            false,
        ),
    };
    packing.check(&cx, &low, &choice)?;
    let images = low.images;
    let mut choice = choice;
    let (low, period) = sparse_slots(packing, &mut cx, low, &choice)?;
    if let (Some(n), Some(b)) = (period, choice.bootstrap.as_mut()) {
        b.slots = n;
    }
    if opts.time_passes {
        log.timings.push(PassTiming {
            pass: if reused {
                format!("(lower-{layout}, the last probe's)")
            } else {
                format!("(lower-{layout})")
            },
            seconds: t0.elapsed().as_secs_f64(),
            changed: Changed::Yes,
        });
    }
    let mut low = low;
    low.lowered.module.boot = choice
        .bootstrap
        .as_ref()
        .map(|b| boot_info(b, opts.scale_bits));
    let (lowered, managed) = passes.run_he(low.lowered, Some(he_params), Some(&mut log))?;
    // 5. Report, schedule, plan.
    let mut rep = report::build(
        &lowered,
        &managed,
        &choice,
        ReportMeta {
            model: &cx.graph.name,
            layout,
            rescale_policy: passes.policy,
        },
        opts.costs.as_ref(),
    );
    rep.activation = opts.activation_spec();
    rep.activation_ranges = cx.ranges.clone();
    rep.keys.bootstrap = bootstrap_keys(&choice, &rep.keys)?;
    rep.fusion = Some(report::FusionSummary {
        passes: log_passes(&passes, opts),
        depth,
        depth_unfused,
    });
    let t0 = Instant::now();
    let key_bytes = rep.keys.resident_bytes();
    let mut managed = managed;
    let mut sched =
        hecc_passes::schedule::schedule(&managed.module, choice.log_n, key_bytes, None)?;
    // Dense layers split into chunks (bit-identical results) when some order of the split
    // circuit holds at least a tenth less (the additions it brings cost time, and a
    // spilling run of the split circuit can move more).
    let split = hecc_passes::he::split_wide_macs_copy(&managed.module, SPLIT_CHUNK)
        .map_err(|e| miette!("splitting dense layers: {e}"))?;
    if let Some((split, st)) = split.filter(|(_, st)| st.macs > 0) {
        let s = hecc_passes::schedule::schedule(&split, choice.log_n, key_bytes, None)?;
        if s.summary.peak.bytes <= sched.summary.peak.bytes / 10 * 9 {
            managed.module = split;
            sched = s;
            sched.summary.split = Some(hecc_passes::schedule::SplitSummary {
                chunk: SPLIT_CHUNK as u64,
                macs: st.macs as u64,
                added: st.added as u64,
            });
        }
    }
    if let Some(b) = opts.memory_budget {
        hecc_passes::schedule::check_budget(&sched.summary, b)?;
    }
    sched.summary.budget = opts.memory_budget;
    if let Some(b) = opts.spill_budget {
        sched.summary.spill = Some(hecc_passes::schedule::spill_summary(
            &managed.module,
            &sched.order,
            choice.log_n,
            b,
        ));
    }
    if opts.time_passes {
        log.timings.push(PassTiming {
            pass: "(schedule)".into(),
            seconds: t0.elapsed().as_secs_f64(),
            changed: Changed::No,
        });
    }
    rep.schedule = Some(sched.summary.clone());
    let plan = Plan {
        format: PLAN_FORMAT.into(),
        version: PLAN_VERSION,
        model: cx.graph.name.clone(),
        layout,
        batch: images,
        rescale_policy: passes.policy,
        activation: opts.activation_spec(),
        params: choice,
        primes: backend.q().to_vec(),
        special_primes: backend.p().to_vec(),
        inputs: tensors(&cx.graph, &cx.graph.inputs, &cx.shapes),
        outputs: tensors(&cx.graph, &cx.graph.outputs, &cx.shapes),
        rotation_steps: rep.keys.rotation_steps.clone(),
        circuit: managed.module,
        schedule: sched.order.iter().map(|v| v.0).collect(),
        report: rep,
        integrity: String::new(),
    };
    Ok(Compiled { plan, log })
}

/// Fewest slots a sparse bootstrap refreshes: its transforms take `log2 n` stages, grouped into
/// the chain's three CoeffsToSlots and three SlotsToCoeffs levels.
const MIN_SPARSE_SLOTS: u64 = 8;

/// Sparse-slot bootstrapping. When a bootstrapped plan's requested batch spans at most half
/// the ring's slots, the client repeats the slots it spans (rounded up to a power of two `n`)
/// across the ring. Every operation of a circuit is slot-wise or a cyclic rotation, so as long
/// as the constants repeat with period `n` too, every value does, and each bootstrap refreshes
/// `n` slots instead of `N/2`: smaller CoeffsToSlots and SlotsToCoeffs transforms and a few
/// bits more precision, at the cost of `log2(N / 2n)` rotations and their keys. A layout whose
/// constants are tiled per image is lowered again for every image position the ring holds
/// (the requested batch stays the plan's). Returns the lowering to use and `n`, or the
/// lowering unchanged and `None` when the batch fills the ring, the plan does not bootstrap,
/// or a constant does not repeat.
fn sparse_slots(
    packing: &dyn Packing,
    cx: &mut CompileContext<'_>,
    low: Lowering,
    choice: &ParamChoice,
) -> Result<(Lowering, Option<u32>)> {
    let (Some(batch), Some(_)) = (cx.opts.batch, choice.bootstrap.as_ref()) else {
        return Ok((low, None));
    };
    if !cx.opts.sparse_bootstraps {
        return Ok((low, None));
    }
    let images = batch.min(low.images);
    let spans = |m: &hecc_ir::he::Module| -> Option<u64> {
        m.layouts()
            .map(|(_, _, l)| span_of(l, images))
            .try_fold(1u64, |a, s| Some(a.max(s?)))
    };
    let Some(span) = spans(&low.lowered.module) else {
        return Ok((low, None));
    };
    let n = span.next_power_of_two().max(MIN_SPARSE_SLOTS);
    if n >= u64::from(low.slots) {
        return Ok((low, None));
    }
    let filled = if packing.tiles_per_image()
        && u64::from(low.images) * u64::from(low.image_stride) < u64::from(low.slots)
    {
        cx.fill_batch = true;
        let relowered = packing.lower(cx, &cx.graph, &cx.shapes, low.slots, low.fold);
        cx.fill_batch = false;
        relowered?
    } else {
        low.clone()
    };
    let m = &filled.lowered.module;
    let periodic = spans(m).is_some_and(|s| s <= n)
        && m.constants().all(|(_, c)| {
            let v = c.values();
            v.len() == low.slots as usize
                && v.iter()
                    .enumerate()
                    .all(|(i, x)| x.to_bits() == v[i % n as usize].to_bits())
        });
    if !periodic {
        return Ok((low, None));
    }
    Ok((filled, Some(n as u32)))
}

/// The slots `layout` spans for the first `images` images.
fn span_of(layout: &hecc_ir::he::Layout, images: u32) -> Option<u64> {
    let mut l = layout.clone();
    if let hecc_ir::he::Layout::Channel {
        images: lowered, ..
    } = &mut l
    {
        *lowered = images.min(*lowered);
    }
    l.span(images)
}

/// Operands per partial `mac` when dense layers are split
/// ([`hecc_passes::he::split_wide_macs`]).
const SPLIT_CHUNK: usize = 128;

/// The keys bootstrapping adds to a plan's (`None` without bootstrapping): the bootstrap's
/// rotations that the circuit does not use, conjugation, and the encapsulation keys, at the
/// sizes of [`report::build`]'s key-switching keys (file sizes: seeded halves omitted).
fn bootstrap_keys(
    choice: &ParamChoice,
    keys: &report::KeyReport,
) -> Result<Option<report::BootstrapKeyReport>> {
    let Some(b) = &choice.bootstrap else {
        return Ok(None);
    };
    let cfg = crate::run::bootstrap_config(choice, b);
    let plan = hecc_runtime::ckks::boot::key_plan(1usize << choice.log_n, &cfg)
        .map_err(|e| miette!("bootstrapping keys: {e}"))?;
    // Steps as bootstrapping lists them: modulo the slot count.
    let slot_step = |s: i32| i64::from(s).rem_euclid(1i64 << (choice.log_n - 1));
    let own: std::collections::BTreeSet<i64> =
        keys.rotation_steps.iter().map(|&s| slot_step(s)).collect();
    // The circuit's keys for steps bootstrapping shares are made for the whole chain as
    // bootstrapping needs, not for the circuit's levels only: the difference is counted here.
    let full = keys.relin_key;
    let widened: u64 = keys
        .rotation_levels
        .iter()
        .filter(|(&s, _)| plan.rotations.contains(&slot_step(s)))
        .map(|(_, &l)| full.saturating_sub(report::ksk_file_bytes(choice, l)))
        .sum();
    let extra: Vec<i64> = plan
        .rotations
        .into_iter()
        .filter(|s| !own.contains(s))
        .collect();
    let n = 1u64 << choice.log_n;
    Ok(Some(report::BootstrapKeyReport {
        galois_keys: full * (extra.len() as u64 + 1) + widened,
        extra_rotation_steps: extra,
        // Two switching keys in the ring q0 * p0: one digit of two limbs each.
        encapsulation_keys: 2 * n * 2 * 8,
        key_switches: plan.cost.key_switches as u64,
        hoisted_rotations: plan.cost.hoisted_rotations as u64,
    }))
}

/// The bootstrap contract of the circuit for the chosen bootstrapping parameters.
pub fn boot_info(b: &hecc_passes::params::BootParams, scale_bits: u32) -> hecc_ir::he::BootInfo {
    hecc_ir::he::BootInfo {
        out_level: hecc_ir::he::Level(b.network_levels),
        in_log_scale: hecc_ir::he::LogScale(f64::from(scale_bits)),
        out_log_scale: hecc_ir::he::LogScale(f64::from(scale_bits)),
        depth: b.depth(),
        message_bound: b.message_bound,
        slots: b.slots,
    }
}

/// The model inputs or outputs `ids` as the client sees them.
fn tensors(g: &Graph, ids: &[NodeId], shapes: &Shapes) -> Vec<PlanTensor> {
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

/// The pass pipeline of one compile and the managers that run it.
struct CompilePasses {
    pipeline: Pipeline,
    /// Records dumps and timings (final run).
    recording: PassManager,
    /// Records nothing (probe runs).
    quiet: PassManager,
    /// The rescale policy of the pipeline's rescale pass.
    policy: RescalePolicy,
    /// Fold pending affine factors in the lowering (off with `--no-fuse`).
    fold: bool,
}

impl CompilePasses {
    fn new(opts: &CompileOptions) -> Result<CompilePasses> {
        let pipeline = match &opts.passes {
            Some(list) => Pipeline::parse(list)?,
            None => Pipeline::default_for(opts.rescale),
        };
        let names = pipeline.names();
        let policy = match names.iter().rev().find(|n| n.starts_with("rescale-")) {
            Some(&"rescale-always") => RescalePolicy::Always,
            Some(_) => RescalePolicy::Waterline,
            None => {
                return Err(miette!(
                    help = "add rescale-waterline or rescale-always to --passes",
                    "the pass list `{}` has no rescale pass; the circuit would not be managed",
                    names.join(",")
                ))
            }
        };
        let recording = PassManager::new(ManagerOptions {
            dump_after: opts.dump_after.clone(),
            time: opts.time_passes,
            verify: false,
            required_only: opts.no_fuse,
        })?;
        let quiet = PassManager::new(ManagerOptions {
            required_only: opts.no_fuse,
            ..Default::default()
        })?;
        Ok(CompilePasses {
            pipeline,
            recording,
            quiet,
            policy,
            fold: !opts.no_fuse,
        })
    }

    fn run_tensor(&self, g: &Graph, log: &mut PassLog) -> Result<Graph> {
        let mut g = g.clone();
        self.recording
            .run_tensor(&self.pipeline, &mut g, &mut PassCx::default(), log)?;
        Ok(g)
    }

    /// Runs the HE passes on a lowered circuit; returns the lowering (its module taken) and
    /// the managed module with its origin table. With `log`, records dumps and timings.
    fn run_he(
        &self,
        mut lowered: Lowered,
        params: Option<hecc_ir::he::Params>,
        log: Option<&mut PassLog>,
    ) -> Result<(Lowered, Managed)> {
        let mut module = std::mem::take(&mut lowered.module);
        let mut cx = PassCx {
            params,
            origin: None,
            placement: None,
        };
        match log {
            Some(log) => self
                .recording
                .run_he(&self.pipeline, &mut module, &mut cx, log)?,
            None => self.quiet.run_he(
                &self.pipeline,
                &mut module,
                &mut cx,
                &mut PassLog::default(),
            )?,
        }
        let origin = cx.origin.unwrap_or_default();
        Ok((
            lowered,
            Managed {
                module,
                origin,
                placement: cx.placement,
            },
        ))
    }
}

/// The optional passes that ran (none with `--no-fuse`).
fn log_passes(passes: &CompilePasses, opts: &CompileOptions) -> Vec<String> {
    if opts.no_fuse {
        return Vec::new();
    }
    passes
        .pipeline
        .tensor
        .iter()
        .chain(passes.pipeline.he.iter())
        .filter(|p| !p.is_required())
        .map(|p| p.name().to_string())
        .collect()
}
