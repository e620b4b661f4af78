//! `infer`: compile, keys, encrypt, run and decrypt in one process, with verification
//! against the plaintext reference and per-stage probes.

use super::*;

/// Options of `hecc infer`.
#[derive(Clone, Debug, Default)]
pub struct InferOptions {
    /// Compile options (the batch is set from the images unless given).
    pub compile: CompileOptions,
    /// Images to use (default: all in the file, up to the slots).
    pub batch: Option<usize>,
    /// Run the plaintext reference and compare.
    pub verify: bool,
    /// Where the progress events of each run go (`None`: nowhere).
    pub progress: Option<ProgressSink>,
    /// Limit on the bytes of live values during each run (see [`MemoryLimit`]).
    pub memory_limit: Option<MemoryLimit>,
    /// Run even when the plan's estimate exceeds the available memory ([`check_memory`]).
    pub no_memory_check: bool,
    /// Keep each run's live values within a budget by moving some to files in a directory
    /// ([`SpillSettings`]; checkpoints are not written: the keys of an `infer` exist only in
    /// its process, so a killed one cannot resume).
    pub spill: Option<SpillSettings>,
}

/// Per-stage comparison with the plaintext reference.
#[derive(Clone, Debug, PartialEq)]
pub struct StageCheck {
    /// Stage name.
    pub name: String,
    /// Values compared.
    pub values: usize,
    /// Maximum absolute error.
    pub max_abs_error: f64,
    /// Largest reference magnitude.
    pub max_abs_value: f64,
}

impl StageCheck {
    /// Bits of precision: `-log2(max_abs_error)` (capped at 60).
    pub fn bits(&self) -> f64 {
        precision_bits(self.max_abs_error)
    }
}

/// `-log2(err)`, capped at 60 bits.
pub fn precision_bits(err: f64) -> f64 {
    if err <= 0.0 {
        60.0
    } else {
        (-err.log2()).min(60.0)
    }
}

/// The verification results.
#[derive(Clone, Debug, PartialEq)]
pub struct Verification {
    /// Per stage (sampled values of each stage, decrypted).
    pub stages: Vec<StageCheck>,
    /// Output error against the circuit interpreter (the HE IR's reference semantics).
    pub output: StageCheck,
    /// Maximum absolute error against the tensor model's own evaluator.
    pub tensor_max_abs_error: f64,
    /// Images whose encrypted argmax equals the plaintext model's.
    pub argmax_agree: usize,
    /// Per activation, inputs of the plaintext reference outside the plan's range `[-B, B]`.
    pub ranges: Vec<hecc_passes::ranges::RangeCheck>,
}

/// What `infer` measured.
#[derive(Clone, Debug)]
pub struct InferReport {
    /// Model name.
    pub model: String,
    /// Ring degree log2 and slots.
    pub log_n: u32,
    /// Security label.
    pub security: String,
    /// Images processed.
    pub images: usize,
    /// Runs of the plan (groups of at most `batch` images).
    pub runs: usize,
    /// Images per run: the plan's batch.
    pub batch: usize,
    /// Images one run could hold at the same cost (N/2 in the batch layout, where every
    /// image has its own slot of the same ciphertexts; the batch otherwise).
    pub capacity: usize,
    /// Predictions.
    pub predictions: Vec<usize>,
    /// Decrypted logits.
    pub logits: Logits,
    /// Correct predictions, when labels were given.
    pub correct: Option<usize>,
    /// Seconds: compile, keygen, encrypt, run, decrypt.
    pub phase_seconds: [f64; 5],
    /// The executor's report.
    pub run: RunReport,
    /// Verification, when asked.
    pub verification: Option<Verification>,
    /// The plan's memory estimate: live values in its schedule, and with the keys.
    pub estimate: Option<(u64, u64)>,
    /// For a model with approximated activations: the plaintext approximated model against
    /// the exact one on the same images.
    pub approximation: Option<ApproxAgreement>,
    /// Set when the decrypted outputs look like an overflow ([`overflow_note`]).
    pub overflow: Option<String>,
}

/// How far the approximated activations move a model's predictions, measured in plaintext on
/// the images of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct ApproxAgreement {
    /// The activation policy (as recorded in the plan).
    pub policy: String,
    /// Images whose approximated prediction equals the exact model's.
    pub agree: usize,
    /// Images compared.
    pub images: usize,
    /// Correct predictions of the exact and the approximated model, when labels were given.
    pub correct: Option<(usize, usize)>,
}

impl ApproxAgreement {
    /// Share of images that agree.
    pub fn ratio(&self) -> f64 {
        self.agree as f64 / self.images.max(1) as f64
    }
}

/// The error for a run whose approximated model agrees with the exact one on less than
/// `min` of its images, if it does.
pub fn disagreement(r: &InferReport, min: f64) -> Option<miette::Report> {
    let a = r.approximation.as_ref()?;
    (a.ratio() < min).then(|| {
        miette!(
            help = "the activation approximation changes the model's answers: choose a \
             more precise one (`hecc eval MODEL --input IMAGES --activation P` compares \
             them in plaintext, `--activation auto` picks one), calibrate the ranges \
             (--calibrate), or pass --min-agreement 0 to accept it",
            "the results are likely wrong: with `{}` the model keeps the exact model's \
             prediction on only {}/{} images ({:.1}% < {:.1}%)",
            a.policy,
            a.agree,
            a.images,
            100.0 * a.ratio(),
            100.0 * min
        )
    })
}

impl InferReport {
    /// Total seconds.
    pub fn total_seconds(&self) -> f64 {
        self.phase_seconds.iter().sum()
    }
}

const PROBES_PER_STAGE: usize = 8;

/// The probe outputs `--verify` adds to a copy of the circuit: a side table, so a probe is
/// known by membership, never by its name's shape.
#[derive(Clone, Debug, Default)]
pub(crate) struct Probes {
    /// Per stage (in the stage map's order), the probe output names.
    per_stage: Vec<Vec<String>>,
    /// Every probe output name.
    all: std::collections::HashSet<String>,
}

impl Probes {
    /// Whether output `name` is a probe (not one of the model's outputs).
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.all.contains(name)
    }
}

/// Adds output nodes on up to [`PROBES_PER_STAGE`] ciphertexts leaving each stage, so the
/// executor and the interpreter both return them. Probe names never collide with the model's
/// own outputs.
fn add_probes(m: &mut Module, stages: &StageMap) -> Result<Probes> {
    let taken: std::collections::HashSet<String> = m
        .outputs()
        .into_iter()
        .map(|(_, name, _)| name.to_string())
        .collect();
    let stage_of = |v: ValueId| stages.of_node.get(v.0 as usize).copied().flatten();
    let mut per: Vec<Vec<String>> = vec![Vec::new(); stages.names.len()];
    let mut all = std::collections::HashSet::new();
    let ids: Vec<ValueId> = m.ids().collect();
    for v in ids {
        let Some(si) = stage_of(v) else { continue };
        if per[si].len() >= PROBES_PER_STAGE {
            continue;
        }
        let Some(node) = m.node(v) else { continue };
        if matches!(
            node.op,
            hecc_ir::he::Op::Output { .. } | hecc_ir::he::Op::Input { .. }
        ) || node.ty.kind() != hecc_ir::he::Kind::Cipher
        {
            continue;
        }
        let leaves = m.users(v).iter().any(|&u| stage_of(u) != Some(si));
        if !leaves {
            continue;
        }
        let mut name = format!("probe{si}_{}", per[si].len());
        while taken.contains(&name) || all.contains(&name) {
            name.push('_');
        }
        m.output(v, &name, 0)
            .map_err(|e| miette!("cannot add a probe: {e}"))?;
        all.insert(name.clone());
        per[si].push(name);
    }
    Ok(Probes {
        per_stage: per,
        all,
    })
}

/// Compiles `model`, generates keys, and then, in groups of the plan's batch (one group when
/// every image fits the slots), encrypts the images of `input`, runs, decrypts, and
/// (optionally) checks against the plaintext reference.
pub fn infer(
    model: &Path,
    input: &Path,
    labels: Option<&Path>,
    opts: &InferOptions,
) -> Result<InferReport> {
    let g = hecc_ir::front::load_model(model)?;
    infer_graph(&g, input, labels, opts)
}

/// [`infer`] on a loaded model.
pub fn infer_graph(
    g: &hecc_ir::tensor::Graph,
    input: &Path,
    labels: Option<&Path>,
    opts: &InferOptions,
) -> Result<InferReport> {
    let t = Instant::now();
    let mut copts = opts.compile.clone();
    // Size the batch from the data before compiling (shape from the graph).
    let probe_input = crate::compile::input_tensor(g)?;
    let all = load_images(input, &probe_input)?;
    if let Some(n) = opts.batch.filter(|&n| n > all.count) {
        return Err(miette!(
            "--batch {n}: {} holds only {} images",
            input.display(),
            all.count
        ));
    }
    let want = opts.batch.unwrap_or(all.count).max(1);
    if copts.batch.is_none() {
        copts.batch = Some(want as u32);
        copts.batch_at_most = true;
    }
    // `--activation auto` without calibration images calibrates on the images of the run.
    if copts.activation_is_auto() && copts.calibration.is_none() {
        copts.calibration = Some(crate::compile::Calibration::from_images(
            &all,
            &probe_input.shape,
            want.min(1000),
        )?);
    }
    let copts = crate::eval::resolve_activation(g, &copts)?.0;
    let compiled = compile_graph(g, &copts)?;
    let s = Session::with_security(
        compiled.plan,
        copts.security == hecc_passes::params::Security::InsecureNone,
    )?;
    let spill = opts.spill.as_ref().map(|sp| SpillSettings {
        dir: sp.dir.clone(),
        budget: Some(sp.budget.unwrap_or_else(|| default_spill_budget(&s))),
        checkpoint_every: None,
    });
    if !opts.no_memory_check {
        match spill.as_ref().and_then(|sp| sp.budget) {
            Some(b) => check_memory_spilling(&s, b, available_memory(), "infer")?,
            None => check_memory(&s, available_memory(), "infer")?,
        }
    }
    let mut images = all.take(want);
    check_input_range(&mut images, s.input()?, false)?;
    let group = (s.plan.batch as usize).max(1);
    let t_compile = t.elapsed().as_secs_f64();

    let labels = labels
        .map(|p| load_labels_for(p, images.count))
        .transpose()?;

    let t = Instant::now();
    let keys = generate_keys(&s)?;
    let t_keygen = t.elapsed().as_secs_f64();

    // With --verify, run a copy of the circuit with probe outputs on each stage.
    let stages = s.stages();
    let probed: Module;
    let (module, probes) = if opts.verify {
        let mut m = s.module().clone();
        let p = add_probes(&mut m, &stages)?;
        probed = m;
        (&probed, p)
    } else {
        (s.module(), Probes::default())
    };
    let eo = s.exec_options(
        stages.clone(),
        &RunOptions {
            progress: opts.progress.clone(),
            memory_limit: opts.memory_limit,
            spill,
            ..Default::default()
        },
    )?;
    let eval = Evaluator::new(&s.ctx);
    let encoder = Encoder::new(&s.ctx);
    let dec = Decryptor::new(&s.ctx, &keys.secret.key);
    let mut enc = ClientEncryptor::secret(&s, &keys.secret)?;

    let (mut t_encrypt, mut t_run, mut t_decrypt) = (0.0, 0.0, 0.0);
    let mut report: Option<RunReport> = None;
    let mut logits = Logits {
        images: 0,
        classes: 0,
        values: Vec::with_capacity(images.count),
    };
    let mut circuit: Option<CircuitCheck> = None;
    let mut bound = f64::INFINITY;
    let mut start = 0;
    while start < images.count {
        let chunk = images.slice(start, group);
        let n = chunk.count;

        let t = Instant::now();
        let inputs = encrypt_images(&s, &chunk, &mut enc)?;
        t_encrypt += t.elapsed().as_secs_f64();

        let t = Instant::now();
        let map: HashMap<(String, u32), Ciphertext> =
            inputs.meta.elements.into_iter().zip(inputs.cts).collect();
        let res = execute(module, &eval, &encoder, keys.eval.as_exec(&s)?, map, &eo)?;
        t_run += t.elapsed().as_secs_f64();
        report = Some(match report {
            None => res.report,
            Some(acc) => merge_run_reports(acc, res.report),
        });

        let t = Instant::now();
        let mut decrypted: HashMap<(String, u32), Vec<f64>> = HashMap::new();
        let mut model_outputs = Vec::new();
        for o in &res.outputs {
            if !probes.contains(&o.name) {
                bound = bound.min(wrap_bound(&s.ctx, &o.ct));
            }
            let slots = encoder
                .decode(&dec.decrypt(&o.ct).into_diagnostic()?)
                .into_diagnostic()?;
            if !probes.contains(&o.name) {
                model_outputs.push((o.name.clone(), o.index));
            }
            decrypted.insert((o.name.clone(), o.index), slots);
        }
        drop(res.outputs);
        let mut outs = Vec::with_capacity(model_outputs.len());
        for (name, index) in &model_outputs {
            let layout = s.output_slots(name, *index)?;
            let slots = decrypted[&(name.clone(), *index)].as_slice();
            outs.push((name.clone(), *index, layout, slots));
        }
        let part = unpack_outputs(&outs, n).map_err(|e| miette!("{e}"))?;
        logits.classes = part.classes;
        logits.images += part.images;
        logits.values.extend(part.values);
        t_decrypt += t.elapsed().as_secs_f64();

        if opts.verify {
            let c = check_circuit(&s, module, &chunk, &probes, &stages, &decrypted)?;
            circuit = Some(match circuit {
                None => c,
                Some(acc) => acc.merge(c),
            });
        }
        start += n;
    }
    let predictions = logits.predictions();
    let overflow = overflow_note(&logits, bound);
    let correct = labels
        .as_ref()
        .map(|l| predictions.iter().zip(l).filter(|(a, b)| a == b).count());
    let verification = match circuit {
        Some(c) => Some(check_tensor_model(g, &s, &images, &logits, c)?),
        None => None,
    };
    let approximation = if crate::eval::needs_approximation(g)? {
        let exact = crate::eval::evaluate(
            g,
            &images,
            &CompileOptions {
                activation: None,
                ..copts.clone()
            },
        )?;
        let approx = crate::eval::evaluate(g, &images, &copts)?;
        Some(ApproxAgreement {
            policy: copts.activation_spec().to_string(),
            agree: approx.agreement(&exact),
            images: images.count,
            correct: labels
                .as_ref()
                .map(|l| (exact.correct(l), approx.correct(l))),
        })
    } else {
        None
    };
    Ok(InferReport {
        model: s.plan.model.clone(),
        log_n: s.plan.params.log_n,
        security: s.plan.params.security.name().to_string(),
        images: images.count,
        runs: images.count.div_ceil(group),
        batch: group,
        capacity: if s.plan.report.layout == hecc_passes::layout::PackingLayout::Batch {
            s.ctx.n() / 2
        } else {
            group
        },
        predictions,
        logits,
        correct,
        phase_seconds: [t_compile, t_keygen, t_encrypt, t_run, t_decrypt],
        run: report.unwrap_or_default(),
        verification,
        estimate: s
            .plan
            .report
            .schedule
            .as_ref()
            .map(|x| (x.peak.bytes, x.total_bytes)),
        approximation,
        overflow,
    })
}

/// Sums the reports of several runs of one plan: times, node and rotation counts add up;
/// memory figures and live ciphertexts take the largest; a stage's end-of-stage resident
/// memory is the last run's.
fn merge_run_reports(mut acc: RunReport, r: RunReport) -> RunReport {
    fn max_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
        match (a, b) {
            (Some(x), Some(y)) => Some(x.max(y)),
            (x, y) => x.or(y),
        }
    }
    for s in r.stages {
        match acc.stages.iter_mut().find(|a| a.name == s.name) {
            Some(a) => {
                a.nodes += s.nodes;
                a.wavefronts += s.wavefronts;
                a.seconds += s.seconds;
                a.cpu_seconds = match (a.cpu_seconds, s.cpu_seconds) {
                    (Some(x), Some(y)) => Some(x + y),
                    (x, y) => x.or(y),
                };
                a.rss_bytes = s.rss_bytes.or(a.rss_bytes);
                a.peak_rss_bytes = max_opt(a.peak_rss_bytes, s.peak_rss_bytes);
                a.live_ciphertexts = a.live_ciphertexts.max(s.live_ciphertexts);
            }
            None => acc.stages.push(s),
        }
    }
    acc.seconds += r.seconds;
    acc.peak_rss_bytes = max_opt(acc.peak_rss_bytes, r.peak_rss_bytes);
    acc.nodes += r.nodes;
    acc.hoisted_rotations += r.hoisted_rotations;
    acc.memory_trims += r.memory_trims;
    acc.peak_live_ciphertexts = acc.peak_live_ciphertexts.max(r.peak_live_ciphertexts);
    acc.peak_live_bytes = acc.peak_live_bytes.max(r.peak_live_bytes);
    acc.schedule_peak_bytes = acc.schedule_peak_bytes.max(r.schedule_peak_bytes);
    acc.spill = match (acc.spill, r.spill) {
        (Some(mut a), Some(b)) => {
            a.values_written += b.values_written;
            a.bytes_written += b.bytes_written;
            a.values_read += b.values_read;
            a.bytes_read += b.bytes_read;
            a.peak_disk_bytes = a.peak_disk_bytes.max(b.peak_disk_bytes);
            a.io_seconds += b.io_seconds;
            a.checkpoints += b.checkpoints;
            Some(a)
        }
        (a, b) => a.or(b),
    };
    acc
}

/// The circuit-level part of `--verify`: decrypted probes and outputs against the HE IR
/// interpreter, accumulated over runs.
struct CircuitCheck {
    stages: Vec<StageCheck>,
    output: StageCheck,
}

impl StageCheck {
    fn merge(mut self, o: &StageCheck) -> StageCheck {
        self.values += o.values;
        self.max_abs_error = self.max_abs_error.max(o.max_abs_error);
        self.max_abs_value = self.max_abs_value.max(o.max_abs_value);
        self
    }
}

impl CircuitCheck {
    fn merge(self, o: CircuitCheck) -> CircuitCheck {
        CircuitCheck {
            stages: self
                .stages
                .into_iter()
                .zip(&o.stages)
                .map(|(a, b)| a.merge(b))
                .collect(),
            output: self.output.merge(&o.output),
        }
    }
}

/// Compares one run's decrypted probes and outputs with the HE IR interpreter on the same
/// images.
fn check_circuit(
    s: &Session,
    module: &Module,
    images: &Images,
    probes: &Probes,
    stages: &StageMap,
    decrypted: &HashMap<(String, u32), Vec<f64>>,
) -> Result<CircuitCheck> {
    let n = images.count;
    let pack = |_: &str, index: u32, layout: &Layout, slots: u32| {
        let mut v = pack_input(layout, index, images, slots as usize).ok()?;
        if let Some(period) = s.plan.slot_period() {
            repeat_slots(&mut v, period).ok()?;
        }
        Some(v)
    };
    // In the plan's schedule, so the reference holds no more values at once than the run did.
    let reference = match s.schedule() {
        Some(order) => hecc_ir::he::interp::interpret_scheduled(module, &order, pack),
        None => hecc_ir::he::interp::interpret(module, pack),
    }
    .map_err(|e| miette!("reference interpretation failed: {e}"))?;
    let reference: HashMap<(String, u32), Vec<f64>> = reference
        .into_iter()
        .map(|o| ((o.name, o.index), o.slots))
        .collect();
    // Slots compared: an output's own element slots; for a probe, every slot of the images'
    // span (the first `n` in the batch layout, `n` image strides in the channel layout).
    let span = match s
        .module()
        .inputs()
        .first()
        .and_then(|&(v, _, _)| s.module().ty(v).and_then(|t| s.module().layout(t.layout())))
    {
        Some(Layout::Channel { image_stride, .. }) => n * (*image_stride).max(1) as usize,
        _ => n,
    };
    let slots_of = |k: &(String, u32)| -> Vec<usize> {
        match s.module().output_layout(&k.0, k.1) {
            Some(l) if !probes.contains(&k.0) => (0..n)
                .flat_map(|i| {
                    (0..l.elements() as usize).filter_map(move |j| l.slot_of_element(i, j))
                })
                .collect(),
            _ => (0..span).collect(),
        }
    };
    let compare = |name: &str, keys: &[(String, u32)]| -> StageCheck {
        let mut c = StageCheck {
            name: name.to_string(),
            values: 0,
            max_abs_error: 0.0,
            max_abs_value: 0.0,
        };
        for k in keys {
            let (Some(got), Some(want)) = (decrypted.get(k), reference.get(k)) else {
                continue;
            };
            for i in slots_of(k) {
                let (Some(&a), Some(&b)) = (got.get(i), want.get(i)) else {
                    continue;
                };
                c.values += 1;
                c.max_abs_error = c.max_abs_error.max((a - b).abs());
                c.max_abs_value = c.max_abs_value.max(b.abs());
            }
        }
        c
    };
    let stages: Vec<StageCheck> = probes
        .per_stage
        .iter()
        .zip(&stages.names)
        .filter(|(p, _)| !p.is_empty())
        .map(|(p, name)| {
            let keys: Vec<(String, u32)> = p.iter().map(|x| (x.clone(), 0)).collect();
            compare(name, &keys)
        })
        .collect();
    let out_keys: Vec<(String, u32)> = s
        .module()
        .outputs()
        .into_iter()
        .map(|(_, n, i)| (n.to_string(), i))
        .collect();
    let output = compare("output", &out_keys);
    Ok(CircuitCheck { stages, output })
}

/// The model-level part of `--verify` over all images: the tensor model's own evaluator
/// against the decrypted logits, argmax agreement and the activation range checks.
fn check_tensor_model(
    g: &hecc_ir::tensor::Graph,
    s: &Session,
    images: &Images,
    logits: &Logits,
    circuit: CircuitCheck,
) -> Result<Verification> {
    let n = images.count;
    // The tensor model's own evaluator.
    let mut dims = vec![n];
    dims.extend_from_slice(&s.input()?.shape);
    let x = hecc_ir::tensor::Tensor::from_shape_vec(dims, images.data.clone())
        .map_err(|e| miette!("reference input: {e}"))?;
    let ranges = &s.plan.report.activation_ranges;
    let range_checks = if ranges.is_empty() {
        Vec::new()
    } else {
        hecc_passes::ranges::check_ranges(g, std::slice::from_ref(&x), ranges)?
    };
    let want = hecc_ir::tensor::eval::eval_batch(g, &[x])?;
    let want = want
        .first()
        .ok_or_else(|| miette!("the model has no output"))?;
    let flat: Vec<f64> = want.iter().copied().collect();
    let mut tensor_err = 0.0f64;
    if flat.len() == logits.values.len() {
        for (a, b) in flat.iter().zip(&logits.values) {
            tensor_err = tensor_err.max((a - b).abs());
        }
    } else {
        return Err(miette!(
            "the model produces {} values for {n} images, the circuit {}",
            flat.len(),
            logits.values.len()
        ));
    }
    let plain_pred = argmax_rows(&flat, logits.classes);
    let argmax_agree = plain_pred
        .iter()
        .zip(logits.predictions())
        .filter(|(a, b)| **a == *b)
        .count();
    Ok(Verification {
        stages: circuit.stages,
        output: circuit.output,
        tensor_max_abs_error: tensor_err,
        argmax_agree,
        ranges: range_checks,
    })
}

// ------------------------------------------------------------------ rendering

/// The encrypted run's predictions against reference outputs (a framework's own, see
/// [`load_reference`]): argmax agreement on the images both have.
#[derive(Clone, Debug, PartialEq)]
pub struct ReferenceAgreement {
    /// The file.
    pub path: String,
    /// Images whose argmax equals the reference's.
    pub agree: usize,
    /// Images compared.
    pub images: usize,
}

/// Compares `r`'s predictions with the reference outputs at `path`.
pub fn compare_reference(r: &InferReport, path: &Path) -> Result<ReferenceAgreement> {
    let (values, cols) = load_reference(path)?;
    if cols != r.logits.classes {
        return Err(miette!(
            "{} has {cols} values per image, the model {}",
            path.display(),
            r.logits.classes
        ));
    }
    let refs = argmax_rows(&values, cols);
    if refs.len() < r.predictions.len() {
        return Err(miette!(
            "{} has outputs for {} images, the run {}",
            path.display(),
            refs.len(),
            r.predictions.len()
        ));
    }
    let agree = r
        .predictions
        .iter()
        .zip(&refs)
        .filter(|(a, b)| a == b)
        .count();
    Ok(ReferenceAgreement {
        path: path.display().to_string(),
        agree,
        images: r.predictions.len(),
    })
}
