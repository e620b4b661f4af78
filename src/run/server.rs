//! The server side: memory checks and limits, and the run of a plan on encrypted inputs with
//! evaluation keys only.

use super::*;

/// Options of a server run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Where the run's progress events go (`None`: nowhere); the caller renders them.
    pub progress: Option<ProgressSink>,
    /// Limit on the bytes of live values during the run (see [`MemoryLimit`]).
    pub memory_limit: Option<MemoryLimit>,
    /// Move live values to disk above a budget and write checkpoints (see [`SpillSettings`]).
    pub spill: Option<SpillSettings>,
    /// Set to stop the run after its current step (with a checkpoint when it spills).
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// The spill store and checkpoints of a server run: live values beyond the budget go to files
/// in `dir`, checkpoints are written there, and a run of the same plan on the same inputs file
/// started on the same directory resumes from its last checkpoint.
#[derive(Clone, Debug)]
pub struct SpillSettings {
    /// The directory (one run at a time).
    pub dir: std::path::PathBuf,
    /// Bytes of live values kept in memory; `None`: [`default_spill_budget`].
    pub budget: Option<u64>,
    /// Time between checkpoints; `None`: none (a stopped or killed run starts over).
    pub checkpoint_every: Option<std::time::Duration>,
}

/// The live-value budget of a spilling run when none is given: nine tenths of what this process
/// can get (free memory, cgroup, ulimit) less the evaluation keys held in memory; no budget
/// (nothing spills) when the available memory cannot be read.
pub fn default_spill_budget(s: &Session) -> u64 {
    match available_memory() {
        Some(have) => (have / 10 * 9)
            .saturating_sub(s.plan.report.keys.resident_bytes())
            .max(1 << 26),
        None => u64::MAX,
    }
}

/// [`check_memory`] for a run that spills: the keys plus at most `budget` of live values
/// (the plan's own peak when it is lower).
pub fn check_memory_spilling(
    s: &Session,
    budget: u64,
    available: Option<u64>,
    what: &str,
) -> Result<()> {
    let keys = s.plan.report.keys.resident_bytes();
    let live = s
        .plan
        .report
        .schedule
        .as_ref()
        .map_or(budget, |x| x.peak.bytes.min(budget));
    check_need(
        keys.saturating_add(live),
        available,
        what,
        "evaluation keys plus the live values kept in memory",
        "give a smaller --spill-budget, or run it on a machine with more memory",
    )
}

pub use hecc_runtime::exec::available_memory;

/// Refuses a run whose plan alone needs more memory than is `available`: its estimate (live
/// values in the schedule plus the evaluation keys) is a lower bound on what the run holds,
/// so such a run would be killed part way instead of finishing. `what` names the step.
pub fn check_memory(s: &Session, available: Option<u64>, what: &str) -> Result<()> {
    let Some(need) = s.plan.report.schedule.as_ref().map(|x| x.total_bytes) else {
        return Ok(());
    };
    check_need(
        need,
        available,
        what,
        "live ciphertexts in its schedule plus keys",
        "run it on a machine with more memory, compile for fewer images per run (--batch) or \
         another layout, or pass --no-memory-check to try anyway",
    )
}

/// Bytes `keygen` holds at its peak: every key in memory (both halves of each key-switching
/// key) with a quarter more for the allocator and the generator's own state (measured: 525 MB
/// resident for 375 MiB of CryptoNets' channel-layout keys), the small sections of the
/// evaluation-key file serialized, and one rotation key's bytes (at most the relinearization
/// key's, made for the whole chain) with the file's write buffer: the rotation keys are streamed
/// to the file one at a time.
pub fn keygen_bytes(s: &Session) -> u64 {
    let k = &s.plan.report.keys;
    let encapsulation = k.bootstrap.as_ref().map_or(0, |b| b.encapsulation_keys);
    k.resident_bytes() * 5 / 4 + k.public_key + 2 * k.relin_key + encapsulation + (64 << 20)
}

/// Bytes the input ciphertexts of a full batch take in memory (their file, with seeded halves,
/// is about half of that).
pub fn input_ciphertext_bytes(s: &Session) -> u64 {
    let log_n = s.plan.params.log_n;
    let m = s.module();
    m.inputs()
        .iter()
        .filter_map(|(v, _, _)| m.ty(*v))
        .map(|t| t.bytes(log_n))
        .sum()
}

/// Bytes `encrypt` ([`encrypt_images_to_file`]) holds at its peak: one chunk of input
/// ciphertexts (the largest of the plan's), each beside its serialization and its packed
/// values, whatever the batch.
pub fn encrypt_bytes(s: &Session) -> u64 {
    let log_n = s.plan.params.log_n;
    let m = s.module();
    let largest = m
        .inputs()
        .iter()
        .filter_map(|(v, _, _)| m.ty(*v))
        .map(|t| t.bytes(log_n))
        .max()
        .unwrap_or(0);
    let chunk = (ENCRYPT_CHUNK_PER_THREAD * rayon::current_num_threads().max(1)) as u64;
    // Ciphertext, serialization (at most its size), packed slots and the encoding's buffers.
    chunk * (2 * largest + (s.ctx.n() as u64) * 8 * 2) + (64 << 20)
}

/// Refuses a step that needs `need` bytes when the process can get only `available`
/// ([`available_memory`]: free memory, and the process's cgroup and `ulimit` limits), before
/// any long work starts. `what` names the step, `counted` what the need counts.
pub fn check_need(
    need: u64,
    available: Option<u64>,
    what: &str,
    counted: &str,
    help: &str,
) -> Result<()> {
    let Some(have) = available else {
        return Ok(());
    };
    if need <= have {
        return Ok(());
    }
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    Err(miette!(
        help = help.to_string(),
        "{what}: the plan needs at least {:.2} GiB ({counted}) and this process can get {:.2} GiB \
         (free memory, its cgroup's limit and its ulimit)",
        gib(need),
        gib(have)
    ))
}

/// A limit on the bytes of live values (ciphertexts, plaintexts, unread inputs) while a plan
/// runs: near it the executor runs fewer nodes at once, down to one in schedule order. Without
/// one, a run holds at most the plan's estimate plus
/// [`hecc_runtime::exec::MEMORY_SLACK`] of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryLimit {
    /// The plan's own estimate (the peak of live values in its schedule).
    Plan,
    /// A number of bytes.
    Bytes(u64),
    /// No limit: as many nodes at once as the executor's lookahead allows.
    Unlimited,
}

impl std::str::FromStr for MemoryLimit {
    type Err = String;

    /// `plan`, or a size ([`parse_size`]).
    fn from_str(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("plan") {
            return Ok(MemoryLimit::Plan);
        }
        if t.eq_ignore_ascii_case("none") || t.eq_ignore_ascii_case("unlimited") {
            return Ok(MemoryLimit::Unlimited);
        }
        parse_size(text).map(MemoryLimit::Bytes).map_err(|_| {
            format!("`{text}` is not a memory size: use `plan`, `none`, bytes, or e.g. 6GiB, 512M")
        })
    }
}

/// A size in bytes: a number of bytes, or a number with `K`, `M`, `G`, `T` (powers of 1024,
/// with an optional `iB`/`B`), e.g. `6GiB`, `512M`, `1.5G`; at least one byte.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    let body = match lower.strip_suffix("ib") {
        // `iB` only after a unit letter (`GiB`), not after the number (`6iB`).
        Some(b) if b.ends_with(['k', 'm', 'g', 't']) => b,
        Some(_) => lower.as_str(),
        None => lower.strip_suffix('b').unwrap_or(&lower),
    };
    let (num, mult) = match body.chars().last() {
        Some('k') => (&body[..body.len() - 1], 1u64 << 10),
        Some('m') => (&body[..body.len() - 1], 1 << 20),
        Some('g') => (&body[..body.len() - 1], 1 << 30),
        Some('t') => (&body[..body.len() - 1], 1 << 40),
        _ => (body, 1),
    };
    let bad = || format!("`{text}` is not a size: use bytes, or e.g. 6GiB, 512M");
    let v: f64 = num.trim().parse().map_err(|_| bad())?;
    let bytes = v * mult as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(bad());
    }
    Ok(bytes as u64)
}

impl MemoryLimit {
    /// The limit in bytes for session `s`; an error when the limit is the plan's estimate and
    /// the plan has none.
    pub fn bytes(self, s: &Session) -> Result<u64> {
        match self {
            MemoryLimit::Plan => s
                .plan
                .report
                .schedule
                .as_ref()
                .map(|x| x.peak.bytes)
                .ok_or_else(|| {
                    miette!(
                        help = "give the limit as a size instead, e.g. --memory-limit 6GiB",
                        "--memory-limit plan: this plan has no memory estimate"
                    )
                }),
            MemoryLimit::Bytes(b) => Ok(b),
            MemoryLimit::Unlimited => Ok(u64::MAX),
        }
    }
}

impl Session {
    /// Executor options for this plan: its schedule and stages, the progress mode and memory
    /// limit of `opts`, free memory handed back between stages.
    pub(crate) fn exec_options(&self, stages: StageMap, opts: &RunOptions) -> Result<ExecOptions> {
        Ok(ExecOptions {
            progress: opts.progress.clone(),
            stages: Some(stages),
            schedule: self.schedule(),
            memory_limit: opts.memory_limit.map(|l| l.bytes(self)).transpose()?,
            release_memory: true,
            spill: opts.spill.as_ref().map(|sp| SpillOptions {
                dir: sp.dir.clone(),
                budget: sp.budget.unwrap_or_else(|| default_spill_budget(self)),
                checkpoint_every: sp.checkpoint_every,
                run_id: String::new(),
            }),
            cancel: opts.cancel.clone(),
            ..Default::default()
        })
    }

    /// The slot layout of output `name[index]`, which decryption needs.
    pub(crate) fn output_slots(&self, name: &str, index: u32) -> Result<Layout> {
        self.module()
            .output_layout(name, index)
            .cloned()
            .ok_or_else(|| {
                miette!(
                    "output {name}[{index}] has no slot layout in the plan; it cannot be decrypted"
                )
            })
    }
}

/// The server step: runs the plan on encrypted inputs with evaluation keys only.
pub fn run_inputs(
    s: &Session,
    inputs: EncryptedInputs,
    keys: &EvalKeySet,
    opts: &RunOptions,
) -> Result<(EncryptedOutputs, RunReport)> {
    run_inputs_with(s, inputs, None, keys, opts)
}

/// [`run_inputs`] on an inputs file whose ciphertexts are read when their input nodes run
/// ([`lazy_inputs`]): the run never holds the whole batch, which a run that spills needs.
pub fn run_inputs_file(
    s: &Session,
    path: &Path,
    keys: &EvalKeySet,
    opts: &RunOptions,
) -> Result<(EncryptedOutputs, RunReport)> {
    let (inputs, lazy) = lazy_inputs(s, path)?;
    run_inputs_with(s, inputs, Some(lazy), keys, opts)
}

fn run_inputs_with(
    s: &Session,
    inputs: EncryptedInputs,
    lazy: Option<hecc_runtime::exec::LazyInputs>,
    keys: &EvalKeySet,
    opts: &RunOptions,
) -> Result<(EncryptedOutputs, RunReport)> {
    if inputs.key_id != keys.id {
        return Err(RunError::KeyMismatch {
            path: "the encrypted inputs".into(),
            expected: hex(&keys.id),
            found: hex(&inputs.key_id),
        })
        .map_err(|e| {
            miette::Report::new(e).wrap_err(
                "the evaluation keys and the inputs come from different `hecc keygen` runs",
            )
        });
    }
    let images = inputs.meta.images;
    let request = inputs.meta.request;
    let inputs_digest = inputs.file_digest.map(|d| full_hex(&d));
    let key_id = inputs.key_id;
    let map: HashMap<(String, u32), Ciphertext> =
        inputs.meta.elements.into_iter().zip(inputs.cts).collect();
    let eval = Evaluator::new(&s.ctx);
    let encoder = Encoder::new(&s.ctx);
    let mut eo = s.exec_options(s.stages(), opts)?;
    eo.lazy_inputs = lazy;
    if let Some(sp) = eo.spill.as_mut() {
        // A checkpoint resumes only for the same plan, keys and inputs.
        let inputs_id = match &inputs_digest {
            Some(d) => d.clone(),
            None => {
                let mut h = Sha256::new();
                for c in map.values() {
                    h.update(c.to_bytes(&s.ctx));
                }
                full_hex(&<[u8; 32]>::from(h.finalize()))
            }
        };
        sp.run_id = format!(
            "plan {} keys {} inputs {inputs_id}",
            full_hex(&s.digest),
            full_hex(&key_id)
        );
    }
    let res = execute(s.module(), &eval, &encoder, keys.as_exec(s)?, map, &eo)?;
    let mut elements = Vec::with_capacity(res.outputs.len());
    let mut cts = Vec::with_capacity(res.outputs.len());
    for o in res.outputs {
        let layout = s.output_slots(&o.name, o.index)?;
        elements.push((o.name, o.index, layout));
        cts.push(o.ct);
    }
    Ok((
        EncryptedOutputs {
            meta: OutputsMeta {
                model: s.plan.model.clone(),
                images,
                elements,
                request,
                inputs: inputs_digest,
            },
            ctx: s.ctx.clone(),
            digest: s.digest,
            key_id,
            cts,
        },
        res.report,
    ))
}

/// Serializes outputs (with the parameters, so decryption needs no plan).
pub fn outputs_bytes(o: &EncryptedOutputs) -> Result<Vec<u8>> {
    let mut sections = vec![
        o.ctx.params().to_bytes(),
        serde_json::to_vec(&o.meta).into_diagnostic()?,
    ];
    sections.extend(o.cts.iter().map(|c| c.to_bytes(&o.ctx)));
    Ok(Container {
        kind: FileKind::Outputs,
        fingerprint: *o.ctx.fingerprint(),
        plan_digest: o.digest,
        key_id: o.key_id,
        sections,
    }
    .to_bytes())
}

/// Reads an outputs file.
pub fn read_outputs(path: &Path) -> Result<EncryptedOutputs> {
    outputs_from_bytes(&read_file(path)?, &path.display().to_string())
}

/// [`read_outputs`] on the bytes of an outputs file; `what` names them in errors.
pub fn outputs_from_bytes(bytes: &[u8], what: &str) -> Result<EncryptedOutputs> {
    let c = ContainerRef::from_bytes(bytes, FileKind::Outputs, what)?;
    let p = what.to_string();
    let [params, meta, cts @ ..] = c.sections.as_slice() else {
        return Err(RunError::Corrupt { path: p }.into());
    };
    let be = backend_err(what);
    let params = CkksParameters::from_bytes(params).map_err(&be)?;
    if params.fingerprint() != c.fingerprint {
        return Err(RunError::Corrupt { path: p }.into());
    }
    let ctx = Context::new(params).map_err(&be)?;
    let meta: OutputsMeta = parse_meta(meta, &p)?;
    if meta.elements.len() != cts.len() {
        return Err(RunError::Corrupt { path: p }.into());
    }
    // Limits before anything is sized by the metadata: no more images than slots, no more
    // output elements per image than slots.
    let slots = ctx.n() / 2;
    if meta.images == 0 || meta.images > slots {
        return Err(RunError::Tampered {
            path: p,
            detail: format!(
                "it claims {} images; a ciphertext of these parameters holds 1 to {slots}",
                meta.images
            ),
        }
        .into());
    }
    let per_image: u64 = meta.elements.iter().map(|(_, _, l)| l.elements()).sum();
    if per_image > slots as u64 * meta.elements.len() as u64 {
        return Err(RunError::Tampered {
            path: p,
            detail: format!("its layouts claim {per_image} output values per image"),
        }
        .into());
    }
    let cts = cts
        .iter()
        .map(|b| Ciphertext::from_bytes(&ctx, b).map_err(&be))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EncryptedOutputs {
        meta,
        ctx,
        digest: c.plan_digest,
        key_id: c.key_id,
        cts,
    })
}
