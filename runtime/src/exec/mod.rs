//! The plan executor: runs a managed HE IR [`Module`] on the CKKS backend.
//!
//! Contract: [`execute`] evaluates every node of a module that passes the
//! structural verifier on real ciphertexts, with the backend's [`Evaluator`]:
//! `mac` is [`Evaluator::mul_scalar_accumulate`] (plus `add_scalar` for the
//! bias; the `mac` nodes of one wavefront run grouped, dense layers fused over their shared
//! operand list and the others blocked over their operand windows, with the same results), `mul_scalar` encodes its constant at `2^s` of its attribute,
//! `rescale`, `drop_level`, `relinearize`, `rotate` (hoisted when several
//! rotations of one ciphertext are ready together) and the rest map one to
//! one. After every node the executor checks that the backend ciphertext has
//! the level of the node's type and a scale equal to `2^log_scale` within
//! [`ExecOptions::scale_tolerance`] bits; a disagreement is an
//! [`ExecError::ScaleMismatch`] / [`ExecError::LevelMismatch`], never a silent
//! wrong answer; an agreeing ciphertext takes the type's scale exactly, so rounding
//! differences cannot compound across bootstraps. It never needs a secret key.
//!
//! Schedule: the run follows a requested evaluation order (a plan's memory-aware
//! schedule; without one, the module's topological order) with bounded lookahead. Each
//! wavefront takes up to [`ExecOptions::max_wavefront`] ready nodes, most urgent first, from
//! the schedule positions below the first one not yet run plus [`ExecOptions::lookahead`], and
//! runs them in parallel with rayon (a batch-layout layer has thousands of independent
//! ciphertexts). So at most about `lookahead` nodes run ahead of the schedule, and the live
//! ciphertexts stay near the schedule's own peak instead of a whole layer's outputs. A value
//! is dropped as soon as its last user has run; a unary node that is the last
//! user of its operand reuses the operand's buffers in place. Nodes belong to *stages* (by
//! default the level at which a node computes, i.e. its first operand's level) that only name
//! and account the report: stages overlap, a wavefront's time is shared among the stages of its
//! nodes by node count, and a stage's resident memory is read when its last node has run
//! (`VmRSS`, and the high-water mark `VmHWM`, from `/proc/self/status`).

mod fused;
mod headroom;
mod memory;
mod progress;
mod spill;

pub use memory::{
    available_memory, free_heap_bytes, limit_allocator_arenas, read_cpu_seconds,
    read_memory_status, release_free_memory_over, retain_freed_memory, MemoryStatus,
};
use progress::Progress;
pub use progress::{ProgressEvent, ProgressSink};
pub use spill::{SpillOptions, SpillReport};

use crate::ckks::{
    Bootstrapper, Ciphertext, CkksError, EncapsulationKeys, Encoder, Evaluator, GaloisKeys,
    Plaintext, RelinKey,
};
use hecc_ir::he::{verify, Module, Op, Type, ValueId, VerifyOptions};
use rayon::prelude::*;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Why a run failed.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ExecError {
    /// The module is not structurally valid.
    #[error("the circuit is not valid: {0}")]
    #[diagnostic(code(hecc::exec::invalid))]
    Invalid(String),
    /// The circuit's slot count is not the parameters' N/2.
    #[error("the circuit has {circuit} slots per ciphertext but the parameters give {params}")]
    #[diagnostic(
        code(hecc::exec::slots),
        help("the keys or ciphertexts belong to other parameters")
    )]
    Slots {
        /// Slots in the circuit types.
        circuit: u32,
        /// N/2 of the backend context.
        params: usize,
    },
    /// No ciphertext was supplied for an input node.
    #[error("no ciphertext for input `{name}`[{index}]")]
    #[diagnostic(code(hecc::exec::missing_input))]
    MissingInput {
        /// Input name.
        name: String,
        /// Element index.
        index: u32,
    },
    /// A ciphertext was supplied for an input the circuit does not have.
    #[error("input `{name}`[{index}] is not an input of the circuit")]
    #[diagnostic(code(hecc::exec::unknown_input))]
    UnknownInput {
        /// Input name.
        name: String,
        /// Element index.
        index: u32,
    },
    /// The circuit relinearizes but no relinearization key was given.
    #[error("node {node} relinearizes but no relinearization key was supplied")]
    #[diagnostic(code(hecc::exec::no_relin_key))]
    MissingRelinKey {
        /// The node.
        node: ValueId,
    },
    /// The circuit bootstraps but no bootstrapper was given.
    #[error("node {node} bootstraps but no bootstrapper and bootstrapping keys were supplied")]
    #[diagnostic(code(hecc::exec::no_bootstrapper))]
    MissingBootstrapper {
        /// The node.
        node: ValueId,
    },
    /// The bootstrapper does not match the module's bootstrap parameters.
    #[error("the bootstrapper does not match the circuit: {0}")]
    #[diagnostic(code(hecc::exec::bootstrapper))]
    BootstrapperMismatch(String),
    /// The circuit rotates but no Galois keys were given.
    #[error("node {node} rotates but no Galois keys were supplied")]
    #[diagnostic(code(hecc::exec::no_galois_keys))]
    MissingGaloisKeys {
        /// The node.
        node: ValueId,
    },
    /// A backend value is not at the level of its type.
    #[error("node {node}: the backend value is at level {found}, its type says {expected}")]
    #[diagnostic(code(hecc::exec::level))]
    LevelMismatch {
        /// The node.
        node: ValueId,
        /// Level of the IR type.
        expected: u32,
        /// Level of the backend value.
        found: usize,
    },
    /// A backend value's scale disagrees with its type's exact log-scale.
    #[error("node {node}: the backend scale is 2^{found:.6}, its type says 2^{expected:.6}")]
    #[diagnostic(
        code(hecc::exec::scale),
        help("the plan was managed with other primes than the backend's; recompile it")
    )]
    ScaleMismatch {
        /// The node.
        node: ValueId,
        /// log2 scale of the IR type.
        expected: f64,
        /// log2 scale of the backend value.
        found: f64,
    },
    /// An operand was missing when its user ran (an executor bug, reported rather than panicking).
    #[error("node {node}: operand {operand} is not available")]
    #[diagnostic(code(hecc::exec::operand))]
    MissingOperand {
        /// The user.
        node: ValueId,
        /// The operand.
        operand: ValueId,
    },
    /// A constant referenced by an `encode` is not in the pool.
    #[error("node {node}: constant {constant} is not in the pool")]
    #[diagnostic(code(hecc::exec::constant))]
    MissingConstant {
        /// The node.
        node: ValueId,
        /// The constant id.
        constant: u32,
    },
    /// The backend failed.
    #[error("node {node} ({op}): {source}")]
    #[diagnostic(code(hecc::exec::backend))]
    Backend {
        /// The node.
        node: ValueId,
        /// Its mnemonic.
        op: &'static str,
        /// The backend error.
        #[source]
        source: CkksError,
    },
    /// The spill store or a checkpoint failed (a file that cannot be written or read, or was
    /// changed).
    #[error("spill store {path}: {detail}")]
    #[diagnostic(
        code(hecc::exec::spill),
        help("the spill directory must stay as the run left it; remove it to start the run over")
    )]
    Spill {
        /// The file or directory.
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// A lazily read input could not be read.
    #[error("input `{name}`[{index}] could not be read: {detail}")]
    #[diagnostic(code(hecc::exec::input_read))]
    InputRead {
        /// Input name.
        name: String,
        /// Element index.
        index: u32,
        /// Why.
        detail: String,
    },
    /// The run was stopped through [`ExecOptions::cancel`] (after a checkpoint when it spills).
    #[error("the run was stopped before it finished")]
    #[diagnostic(code(hecc::exec::cancelled))]
    Cancelled,
}

/// The evaluation keys a run may use (never a secret key).
#[derive(Clone, Copy, Debug, Default)]
pub struct EvalKeys<'a> {
    /// Relinearization key (needed when the circuit relinearizes).
    pub relin: Option<&'a RelinKey>,
    /// Galois keys (needed when the circuit rotates or conjugates).
    pub galois: Option<&'a GaloisKeys>,
    /// The bootstrapping circuit and its keys (needed when the circuit bootstraps).
    pub boot: Option<BootEval<'a>>,
}

/// What a `bootstrap` node runs: a bootstrapper built for the module's parameters and the
/// encapsulation keys; the relinearization and Galois keys are the run's own
/// ([`EvalKeys::relin`], [`EvalKeys::galois`]), which must include bootstrapping's.
#[derive(Clone, Copy)]
pub struct BootEval<'a> {
    /// The circuit (encoded DFT matrices, interpolant).
    pub bootstrapper: &'a Bootstrapper,
    /// Its encapsulation keys.
    pub encapsulation: &'a EncapsulationKeys,
}

impl std::fmt::Debug for BootEval<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootEval")
            .field("slots", &self.bootstrapper.config().slots)
            .field("output_level", &self.bootstrapper.output_level())
            .finish()
    }
}

/// Options of a run.
#[derive(Clone, Debug)]
pub struct ExecOptions {
    /// Allowed difference, in bits, between a backend scale and its type's log-scale.
    pub scale_tolerance: f64,
    /// Where progress events go (`None`: nowhere). The executor itself never prints.
    pub progress: Option<ProgressSink>,
    /// Evaluation order to follow (node ids, each after its operands), e.g. a plan's
    /// memory-aware schedule: ready nodes run in this order's priority. `None` = id order.
    pub schedule: Option<Vec<u32>>,
    /// Most nodes run in one parallel wavefront; smaller caps follow the schedule more closely
    /// (fewer live ciphertexts), larger ones expose more parallelism.
    pub max_wavefront: usize,
    /// How many schedule positions past the first one not yet run a node may start from
    /// (at least `max_wavefront`): bounds how far the run gets ahead of the schedule, and so how
    /// many more ciphertexts than the schedule's peak are alive at once.
    pub lookahead: usize,
    /// Optional stage of each node (indexed by node id) and the stage names, used to name and
    /// account the run report's stages (they do not constrain the order), overriding the
    /// default grouping by computing level.
    pub stages: Option<StageMap>,
    /// Hand the allocator's free memory back to the operating system when the run starts and
    /// whenever a stage ends
    /// (glibc keeps freed buffers of every level's size otherwise, so the resident size
    /// would stay at the largest stage's for the rest of the run). A process-wide effect: one
    /// `malloc_trim` call per stage, nothing on other platforms. Off by default; the command
    /// line (`run`, `infer`) turns it on.
    pub release_memory: bool,
    /// Bytes the live values (ciphertexts, plaintexts, unread inputs) may reach. A node runs
    /// ahead of the schedule only while the schedule's memory profile plus the results made
    /// ahead of it stay within the limit at every position up to the node's own, and, with an
    /// explicit limit, while the live values do (down to one node per wavefront, in schedule
    /// order). `None`: the schedule's own peak plus [`MEMORY_SLACK`], so a run holds what the
    /// plan estimated; `Some(u64::MAX)`: no limit (full parallelism within the lookahead).
    pub memory_limit: Option<u64>,
    /// Keep live values near a budget by moving them to disk, and write checkpoints that a later
    /// run resumes from (see [`SpillOptions`]). `None`: everything stays in memory.
    pub spill: Option<SpillOptions>,
    /// Set to stop the run after the current wavefront (with a final checkpoint when it spills);
    /// the run then returns [`ExecError::Cancelled`].
    pub cancel: Option<Arc<AtomicBool>>,
    /// Inputs read when their input node runs instead of before the run (e.g. from the inputs
    /// file, section by section), in addition to those passed to [`execute`].
    pub lazy_inputs: Option<LazyInputs>,
}

/// Input ciphertexts read on demand.
#[derive(Clone)]
pub struct LazyInputs {
    /// The elements, each with the bytes its ciphertext takes in memory.
    pub elements: Vec<((String, u32), u64)>,
    /// Reads one element's ciphertext (called from worker threads).
    #[allow(clippy::type_complexity)]
    pub load: Arc<dyn Fn(&str, u32) -> Result<Ciphertext, String> + Send + Sync>,
}

impl std::fmt::Debug for LazyInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyInputs")
            .field("elements", &self.elements.len())
            .finish()
    }
}

/// The share above the schedule's peak that a run without an explicit memory limit may hold.
pub const MEMORY_SLACK: f64 = 0.05;

/// Share of the run's memory bound (the explicit limit or spill budget, else the schedule's
/// peak) that the resident size may exceed the bound by (beyond what the process held besides
/// its values when the run started) before a run that releases memory hands the allocator's
/// free chunks back, when they are more than this share too (at least [`TRIM_SLACK_MIN`]
/// bytes). Trims cost page faults when the heap grows back, so they happen only near the peak.
pub const TRIM_SLACK: f64 = 0.04;

/// The least free memory worth a trim: below it, the page faults of growing back cost more
/// than the memory is worth.
pub const TRIM_SLACK_MIN: u64 = 48 << 20;

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            scale_tolerance: 1e-6,
            progress: None,
            schedule: None,
            max_wavefront: 64,
            lookahead: 256,
            stages: None,
            release_memory: false,
            memory_limit: None,
            spill: None,
            cancel: None,
            lazy_inputs: None,
        }
    }
}

/// An explicit assignment of nodes to named stages.
#[derive(Clone, Debug, Default)]
pub struct StageMap {
    /// Stage names, in execution order.
    pub names: Vec<String>,
    /// Stage index of each node id (nodes beyond the vector, or `None`, go to the last stage).
    pub of_node: Vec<Option<usize>>,
}

/// Time and memory of one stage.
#[derive(Clone, Debug, PartialEq)]
pub struct StageReport {
    /// Stage name.
    pub name: String,
    /// Nodes executed.
    pub nodes: usize,
    /// Wavefronts (parallel steps).
    pub wavefronts: usize,
    /// Wall time in seconds.
    pub seconds: f64,
    /// CPU time (user + system, all threads) in seconds, when readable.
    pub cpu_seconds: Option<f64>,
    /// Resident memory at the end of the stage (bytes), when readable.
    pub rss_bytes: Option<u64>,
    /// Peak resident memory of the process so far (bytes), when readable.
    pub peak_rss_bytes: Option<u64>,
    /// Ciphertexts live at the end of the stage.
    pub live_ciphertexts: usize,
}

/// The run report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunReport {
    /// Per stage, in execution order.
    pub stages: Vec<StageReport>,
    /// Total wall time in seconds.
    pub seconds: f64,
    /// Peak resident memory of the process (bytes), when readable.
    pub peak_rss_bytes: Option<u64>,
    /// Nodes executed.
    pub nodes: usize,
    /// Rotations served by hoisting (several rotations of one ciphertext at once).
    pub hoisted_rotations: usize,
    /// Most ciphertexts alive at once.
    pub peak_live_ciphertexts: usize,
    /// Most bytes held at once by live values (ciphertexts and plaintexts of the circuit,
    /// including encrypted inputs not yet read), counted after each wavefront: the figure
    /// the plan's memory estimate predicts; the resident memory adds keys, the executor's
    /// scratch buffers and the allocator's slack.
    pub peak_live_bytes: u64,
    /// The peak of the order the run followed, as the memory model counts it (the plan's
    /// estimate when the run followed the plan's schedule).
    pub schedule_peak_bytes: u64,
    /// What the spill store did, when the run had one.
    pub spill: Option<SpillReport>,
    /// Times the allocator's free memory went back to the system in the middle of a stage
    /// (after a wavefront, the resident size above its high-water mark, see [`TRIM_SLACK`]).
    pub memory_trims: usize,
}

/// One output element.
#[derive(Clone, Debug)]
pub struct OutputCt {
    /// Output name.
    pub name: String,
    /// Element index.
    pub index: u32,
    /// The value.
    pub ct: Ciphertext,
}

/// The result of a run.
#[derive(Debug)]
pub struct RunResult {
    /// Outputs sorted by (name, index).
    pub outputs: Vec<OutputCt>,
    /// Timing and memory.
    pub report: RunReport,
}

enum Value {
    Ct(Ciphertext),
    Pt(Plaintext),
}

impl Value {
    /// Heap bytes held by the value's polynomials (allocated capacity, not only the limbs in
    /// use: an in-place rescale keeps its buffer).
    fn bytes(&self) -> u64 {
        match self {
            Value::Ct(c) => ct_bytes(c),
            Value::Pt(p) => p.poly.data.capacity() as u64 * 8,
        }
    }

    /// Returns the unused tail of each buffer to the allocator (in-place rescales and level
    /// drops shorten a polynomial without reallocating it). Shrinking reallocates in place
    /// (or remaps), so this costs no copy of the limbs.
    fn compact(&mut self) {
        match self {
            Value::Ct(c) => c.polys.iter_mut().for_each(|p| p.data.shrink_to_fit()),
            Value::Pt(p) => p.poly.data.shrink_to_fit(),
        }
    }

    fn ct(&self) -> Option<&Ciphertext> {
        match self {
            Value::Ct(c) => Some(c),
            Value::Pt(_) => None,
        }
    }
}

/// Heap bytes of a ciphertext's polynomials (allocated capacity).
fn ct_bytes(c: &Ciphertext) -> u64 {
    c.polys.iter().map(|p| p.data.capacity() as u64 * 8).sum()
}

/// A unit of parallel work in a wavefront.
enum Task {
    /// One node.
    Single(ValueId),
    /// Rotations of one ciphertext, served by one hoisted decomposition.
    Hoisted(ValueId, Vec<(ValueId, i64)>),
    /// Multiply-accumulates over the same operand list, in one pass.
    FusedMac(Vec<ValueId>),
    /// Multiply-accumulates over different operand lists (same level and scale), blocked.
    SparseMac(Vec<ValueId>),
}

/// The execution context of a run.
struct Ctx<'a> {
    m: &'a Module,
    eval: &'a Evaluator,
    encoder: &'a Encoder,
    keys: EvalKeys<'a>,
    tol: f64,
}

/// The ciphertext value of `operand` in `store`, or a missing-operand error naming `node`.
fn stored_ct(
    store: &[Option<Value>],
    node: ValueId,
    operand: ValueId,
) -> Result<&Ciphertext, ExecError> {
    store
        .get(operand.0 as usize)
        .and_then(Option::as_ref)
        .and_then(Value::ct)
        .ok_or(ExecError::MissingOperand { node, operand })
}

fn backend(node: ValueId, op: &'static str) -> impl FnOnce(CkksError) -> ExecError {
    move |source| ExecError::Backend { node, op, source }
}

impl Ctx<'_> {
    /// Checks `value` against node `v`'s type, and sets a ciphertext's scale to the type's
    /// exactly once it agrees within the tolerance. The circuit's scales are sums of logarithms
    /// and the backend's are products, so the two differ by rounding (about 1e-14 bits); left
    /// alone, that difference doubles with every squaring, and a bootstrap, which relabels its
    /// result by its operand's own scale, hands it on to the next segment, so after a few
    /// hundred bootstraps it outgrows the tolerance (seen at 1e-6 bits on a LeNet-5 plan).
    /// Setting the scale changes the value by a relative `2^d - 1` for a difference of `d`
    /// bits, far below CKKS noise.
    fn check(&self, v: ValueId, ty: &Type, value: &mut Value) -> Result<(), ExecError> {
        let (level, scale) = match value {
            Value::Ct(c) => (c.level(), c.scale()),
            Value::Pt(p) => (p.level(), p.scale()),
        };
        if level != ty.level().0 as usize {
            return Err(ExecError::LevelMismatch {
                node: v,
                expected: ty.level().0,
                found: level,
            });
        }
        let found = scale.log2();
        let expected = ty.log_scale().0;
        if !(found - expected).abs().le(&self.tol) {
            return Err(ExecError::ScaleMismatch {
                node: v,
                expected,
                found,
            });
        }
        if let Value::Ct(c) = value {
            c.set_scale(expected.exp2())
                .map_err(|source| ExecError::Backend {
                    node: v,
                    op: "scale",
                    source,
                })?;
        }
        Ok(())
    }

    /// Runs node `v`. `owned` is its first operand when `v` is that operand's last user.
    fn run_node(
        &self,
        v: ValueId,
        store: &[Option<Value>],
        owned: Option<Value>,
        inputs: &Mutex<HashMap<(String, u32), Ciphertext>>,
    ) -> Result<Value, ExecError> {
        let m = self.m;
        let node = m
            .node(v)
            .ok_or_else(|| ExecError::Invalid(format!("node {v} vanished")))?;
        let op = node.op.mnemonic();
        let be = |e| backend(v, op)(e);
        let ops = m.operands(v);
        let get = |i: usize| -> Result<&Value, ExecError> {
            let o = *ops
                .get(i)
                .ok_or_else(|| ExecError::Invalid(format!("{v}: operand {i}")))?;
            store
                .get(o.0 as usize)
                .and_then(Option::as_ref)
                .ok_or(ExecError::MissingOperand {
                    node: v,
                    operand: o,
                })
        };
        let get_ct = |i: usize| -> Result<&Ciphertext, ExecError> {
            get(i)?
                .ct()
                .ok_or_else(|| ExecError::Invalid(format!("{v}: operand {i} is not a ciphertext")))
        };
        let get_pt = |i: usize| -> Result<&Plaintext, ExecError> {
            match get(i)? {
                Value::Pt(p) => Ok(p),
                Value::Ct(_) => Err(ExecError::Invalid(format!(
                    "{v}: operand {i} is not a plaintext"
                ))),
            }
        };
        // The first operand, taken by value when possible, cloned otherwise.
        let first = |owned: Option<Value>| -> Result<Ciphertext, ExecError> {
            match owned {
                Some(Value::Ct(c)) => Ok(c),
                _ => Ok(get_ct(0)?.clone()),
            }
        };
        let e = self.eval;
        let out = match &node.op {
            Op::Input { name, index } => {
                let name = m.name(*name).unwrap_or("");
                // Each input is read once: move it out of the map.
                let ct = inputs
                    .lock()
                    .map_err(|_| ExecError::Invalid("input map poisoned".into()))?
                    .remove(&(name.to_string(), *index))
                    .ok_or_else(|| ExecError::MissingInput {
                        name: name.to_string(),
                        index: *index,
                    })?;
                Value::Ct(ct)
            }
            Op::Encode { constant } => {
                let c = m.constant(*constant).ok_or(ExecError::MissingConstant {
                    node: v,
                    constant: constant.0,
                })?;
                let scale = node.ty.log_scale().0.exp2();
                Value::Pt(
                    self.encoder
                        .encode(&c.values(), node.ty.level().0 as usize, scale)
                        .map_err(be)?,
                )
            }
            Op::Add => Value::Ct(e.add(get_ct(0)?, get_ct(1)?).map_err(be)?),
            Op::Sub => Value::Ct(e.sub(get_ct(0)?, get_ct(1)?).map_err(be)?),
            Op::Negate => {
                let mut c = first(owned)?;
                e.negate_assign(&mut c).map_err(be)?;
                Value::Ct(c)
            }
            Op::AddPlain => Value::Ct(e.add_plain(get_ct(0)?, get_pt(1)?).map_err(be)?),
            Op::SubPlain => Value::Ct(e.sub_plain(get_ct(0)?, get_pt(1)?).map_err(be)?),
            Op::AddScalar { value } => {
                let mut c = first(owned)?;
                e.add_scalar_assign(&mut c, *value).map_err(be)?;
                Value::Ct(c)
            }
            Op::Mul => Value::Ct(e.mul(get_ct(0)?, get_ct(1)?).map_err(be)?),
            Op::Square => Value::Ct(e.square(get_ct(0)?).map_err(be)?),
            Op::MulPlain => Value::Ct(e.mul_plain(get_ct(0)?, get_pt(1)?).map_err(be)?),
            Op::MulScalar { value, log_scale } => {
                let mut c = first(owned)?;
                e.mul_scalar_assign(&mut c, *value, log_scale.0.exp2())
                    .map_err(be)?;
                Value::Ct(c)
            }
            Op::MulInteger { factor } => {
                let mut c = first(owned)?;
                e.mul_integer_assign(&mut c, *factor).map_err(be)?;
                Value::Ct(c)
            }
            Op::Mac(attrs) => {
                let cts = (0..attrs.coeffs.len())
                    .map(get_ct)
                    .collect::<Result<Vec<_>, _>>()?;
                let terms: Vec<(&Ciphertext, f64)> =
                    cts.into_iter().zip(attrs.coeffs.iter().copied()).collect();
                let mut c = e
                    .mul_scalar_accumulate(&terms, attrs.log_scale.0.exp2())
                    .map_err(be)?;
                if let Some(b) = attrs.bias {
                    if b != 0.0 {
                        e.add_scalar_assign(&mut c, b).map_err(be)?;
                    }
                }
                Value::Ct(c)
            }
            Op::Relinearize => {
                let rk = self
                    .keys
                    .relin
                    .ok_or(ExecError::MissingRelinKey { node: v })?;
                let mut c = first(owned)?;
                e.relinearize_assign(&mut c, rk).map_err(be)?;
                Value::Ct(c)
            }
            Op::Rescale => {
                let mut c = first(owned)?;
                e.rescale_assign(&mut c).map_err(be)?;
                Value::Ct(c)
            }
            Op::DropLevel { to } => {
                let mut c = first(owned)?;
                e.drop_to_level_assign(&mut c, to.0 as usize).map_err(be)?;
                Value::Ct(c)
            }
            Op::Rotate { steps } => {
                let gk = self
                    .keys
                    .galois
                    .ok_or(ExecError::MissingGaloisKeys { node: v })?;
                Value::Ct(e.rotate(get_ct(0)?, i64::from(*steps), gk).map_err(be)?)
            }
            Op::Conjugate => {
                let gk = self
                    .keys
                    .galois
                    .ok_or(ExecError::MissingGaloisKeys { node: v })?;
                Value::Ct(e.conjugate(get_ct(0)?, gk).map_err(be)?)
            }
            Op::Bootstrap => {
                let b = self
                    .keys
                    .boot
                    .ok_or(ExecError::MissingBootstrapper { node: v })?;
                let rk = self
                    .keys
                    .relin
                    .ok_or(ExecError::MissingRelinKey { node: v })?;
                let gk = self
                    .keys
                    .galois
                    .ok_or(ExecError::MissingGaloisKeys { node: v })?;
                Value::Ct(
                    b.bootstrapper
                        .bootstrap_with(get_ct(0)?, rk, gk, b.encapsulation)
                        .map_err(be)?,
                )
            }
            Op::Output { .. } => Value::Ct(first(owned)?),
        };
        let mut out = out;
        self.check(v, &node.ty, &mut out)?;
        Ok(out)
    }

    fn run_fused(
        &self,
        macs: &[ValueId],
        store: &[Option<Value>],
        stream: Option<&Stream<'_>>,
    ) -> Result<Vec<(ValueId, Value)>, ExecError> {
        let m = self.m;
        let first = *macs
            .first()
            .ok_or_else(|| ExecError::Invalid("empty fused group".into()))?;
        let ops = m.operands(first);
        let away = |o: &ValueId| store.get(o.0 as usize).is_none_or(Option::is_none);
        if let Some(st) = stream.filter(|_| ops.iter().any(away)) {
            return self.run_fused_streamed(macs, store, st);
        }
        let cts = ops
            .iter()
            .map(|&o| stored_ct(store, first, o))
            .collect::<Result<Vec<_>, _>>()?;
        let mut rows: Vec<&[f64]> = Vec::with_capacity(macs.len());
        let mut log_scale = 0.0;
        for &v in macs {
            match m.node(v).map(|n| &n.op) {
                Some(Op::Mac(a)) => {
                    rows.push(&a.coeffs);
                    log_scale = a.log_scale.0;
                }
                _ => return Err(ExecError::Invalid(format!("{v} is not a mac"))),
            }
        }
        let outs = fused::multi_mac(self.eval, &cts, &rows, log_scale.exp2())
            .map_err(backend(first, "mac"))?;
        self.finish_macs(macs, outs)
    }

    /// [`Ctx::run_fused`] with operands on disk: the operand list in chunks of at most
    /// `chunk_bytes`, each chunk's missing operands read (and checked) for it alone, the
    /// chunks' partial sums added. Modular sums are exact, so the result is the same.
    fn run_fused_streamed(
        &self,
        macs: &[ValueId],
        store: &[Option<Value>],
        st: &Stream<'_>,
    ) -> Result<Vec<(ValueId, Value)>, ExecError> {
        use std::sync::atomic::Ordering::Relaxed;
        let m = self.m;
        let first = macs[0];
        let ops = m.operands(first);
        let mut rows: Vec<&[f64]> = Vec::with_capacity(macs.len());
        let mut log_scale = 0.0;
        for &v in macs {
            match m.node(v).map(|n| &n.op) {
                Some(Op::Mac(a)) => {
                    rows.push(&a.coeffs);
                    log_scale = a.log_scale.0;
                }
                _ => return Err(ExecError::Invalid(format!("{v} is not a mac"))),
            }
        }
        let per_operand = ops
            .first()
            .map_or(1, |&o| type_bytes(m, o, st.log_n).max(1));
        let per = ((st.chunk_bytes / per_operand) as usize).max(1);
        let mut acc: Option<Vec<Ciphertext>> = None;
        for (k, chunk) in ops.chunks(per).enumerate() {
            let loaded: Vec<Option<Ciphertext>> = chunk
                .par_iter()
                .map(|&o| {
                    let i = o.0 as usize;
                    if store.get(i).is_some_and(Option::is_some) {
                        return Ok(None);
                    }
                    if !st.on_disk.get(i).copied().unwrap_or(false) {
                        return Err(ExecError::MissingOperand {
                            node: first,
                            operand: o,
                        });
                    }
                    let (mut val, b) = st.dir.read(self.eval.context(), &spill::value_file(o))?;
                    let ty = m.ty(o).ok_or(ExecError::MissingOperand {
                        node: first,
                        operand: o,
                    })?;
                    self.check(o, &ty, &mut val)?;
                    st.reads.fetch_add(1, Relaxed);
                    st.read_bytes.fetch_add(b, Relaxed);
                    match val {
                        Value::Ct(c) => Ok(Some(c)),
                        Value::Pt(_) => Err(ExecError::MissingOperand {
                            node: first,
                            operand: o,
                        }),
                    }
                })
                .collect::<Result<_, _>>()?;
            let cts = chunk
                .iter()
                .zip(&loaded)
                .map(|(&o, l)| match l {
                    Some(c) => Ok(c),
                    None => stored_ct(store, first, o),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let start = k * per;
            let sub: Vec<&[f64]> = rows
                .iter()
                .map(|r| r.get(start..start + chunk.len()).unwrap_or(&[]))
                .collect();
            let part = fused::multi_mac(self.eval, &cts, &sub, log_scale.exp2())
                .map_err(backend(first, "mac"))?;
            acc = Some(match acc {
                None => part,
                Some(mut a) => {
                    for (x, p) in a.iter_mut().zip(&part) {
                        self.eval.add_assign(x, p).map_err(backend(first, "mac"))?;
                    }
                    a
                }
            });
        }
        let outs = acc.ok_or_else(|| ExecError::Invalid("empty operand list".into()))?;
        self.finish_macs(macs, outs)
    }

    /// Adds each mac's bias to its fused result and checks the result against the node's type.
    fn finish_macs(
        &self,
        macs: &[ValueId],
        outs: Vec<Ciphertext>,
    ) -> Result<Vec<(ValueId, Value)>, ExecError> {
        let m = self.m;
        let mut res = Vec::with_capacity(macs.len());
        for (&v, mut c) in macs.iter().zip(outs) {
            let node = m
                .node(v)
                .ok_or_else(|| ExecError::Invalid(format!("node {v} vanished")))?;
            if let Op::Mac(a) = &node.op {
                if let Some(b) = a.bias.filter(|b| *b != 0.0) {
                    self.eval
                        .add_scalar_assign(&mut c, b)
                        .map_err(backend(v, "mac"))?;
                }
            }
            let mut value = Value::Ct(c);
            self.check(v, &node.ty, &mut value)?;
            res.push((v, value));
        }
        Ok(res)
    }

    fn run_sparse(
        &self,
        macs: &[ValueId],
        store: &[Option<Value>],
    ) -> Result<Vec<(ValueId, Value)>, ExecError> {
        let m = self.m;
        let first = *macs
            .first()
            .ok_or_else(|| ExecError::Invalid("empty mac group".into()))?;
        let mut rows: Vec<fused::MacRow<'_>> = Vec::with_capacity(macs.len());
        let mut log_scale = 0.0;
        for &v in macs {
            let Some(Op::Mac(a)) = m.node(v).map(|n| &n.op) else {
                return Err(ExecError::Invalid(format!("{v} is not a mac")));
            };
            let ops = m.operands(v);
            let cts = ops
                .iter()
                .take(a.coeffs.len())
                .map(|&o| stored_ct(store, v, o))
                .collect::<Result<Vec<_>, _>>()?;
            log_scale = a.log_scale.0;
            rows.push(fused::MacRow {
                cts,
                coeffs: &a.coeffs,
            });
        }
        let outs = fused::sparse_macs(self.eval, &rows, log_scale.exp2())
            .map_err(backend(first, "mac"))?;
        self.finish_macs(macs, outs)
    }

    fn run_hoisted(
        &self,
        src: ValueId,
        rots: &[(ValueId, i64)],
        store: &[Option<Value>],
    ) -> Result<Vec<(ValueId, Value)>, ExecError> {
        let first = rots.first().map(|r| r.0).unwrap_or(src);
        let gk = self
            .keys
            .galois
            .ok_or(ExecError::MissingGaloisKeys { node: first })?;
        let ct = stored_ct(store, first, src)?;
        let steps: Vec<i64> = rots.iter().map(|r| r.1).collect();
        let outs = self
            .eval
            .rotate_hoisted(ct, &steps, gk)
            .map_err(backend(first, "rotate"))?;
        let mut res = Vec::with_capacity(rots.len());
        for ((v, _), c) in rots.iter().zip(outs) {
            let mut value = Value::Ct(c);
            if let Some(n) = self.m.node(*v) {
                self.check(*v, &n.ty, &mut value)?;
            }
            res.push((*v, value));
        }
        Ok(res)
    }
}

/// What bounds one wavefront.
struct Admission<'a> {
    /// The first schedule position not yet run.
    frontier: usize,
    /// Positions from here on wait (the lookahead's end).
    window_end: u64,
    /// Most nodes in one wavefront.
    wave_cap: usize,
    /// The explicit memory limit, if any.
    memory_limit: Option<u64>,
    /// Bytes live before the wavefront.
    live: u64,
    /// Ring degree (log2), for result sizes.
    log_n: u32,
    /// A spilling run: every ready member of a streamed dense layer joins the wavefront
    /// whatever the limits (its operands are read once per wavefront, and its results are
    /// small against them; eviction follows).
    join_streamed: Option<&'a [bool]>,
}

/// Terms from which a spilling run streams a fused multiply-accumulate's operands instead of
/// reading them all back first.
const STREAMED_TERMS: usize = 128;

/// The multiply-accumulates that a spilling run streams, by node id: wide dense layers, at
/// least [`STREAMED_TERMS`] terms over an operand list that another one shares (the groups
/// the executor fuses).
fn dense_macs(m: &Module, max_id: usize) -> Vec<bool> {
    let mut count: HashMap<Vec<ValueId>, usize> = HashMap::new();
    let key = |v: ValueId| match m.node(v).map(|n| &n.op) {
        Some(Op::Mac(a)) if a.coeffs.len() >= STREAMED_TERMS => Some(m.operands(v)),
        _ => None,
    };
    for v in m.ids() {
        if let Some(k) = key(v) {
            *count.entry(k).or_default() += 1;
        }
    }
    let mut dense = vec![false; max_id];
    for v in m.ids() {
        if let Some(k) = key(v) {
            dense[v.0 as usize] = count.get(&k).is_some_and(|&c| c > 1);
        }
    }
    dense
}

/// What a fused multiply-accumulate of a spilling run reads its operands from.
struct Stream<'a> {
    dir: &'a spill::SpillDir,
    on_disk: &'a [bool],
    /// Most operand bytes one chunk holds.
    chunk_bytes: u64,
    log_n: u32,
    reads: std::sync::atomic::AtomicU64,
    read_bytes: std::sync::atomic::AtomicU64,
}

/// Operands a spilling run would have to read back for a wavefront: those on disk and not in
/// memory, each counted once (a dense layer's are streamed by its fused task instead).
struct Reload<'a> {
    dense: &'a [bool],
    on_disk: &'a [bool],
    store: &'a [Option<Value>],
    counted: HashSet<ValueId>,
}

impl Reload<'_> {
    /// Bytes that running `v` adds to the wavefront's reads (operands not yet counted).
    fn bytes(&mut self, m: &Module, v: ValueId, log_n: u32) -> u64 {
        if self.dense.get(v.0 as usize).copied().unwrap_or(false) {
            return 0;
        }
        let mut b = 0;
        for o in m.operands(v) {
            let i = o.0 as usize;
            let away = self.on_disk.get(i).copied().unwrap_or(false)
                && self.store.get(i).is_some_and(Option::is_none);
            if away && self.counted.insert(o) {
                b += type_bytes(m, o, log_n);
            }
        }
        b
    }
}

/// The next wavefront: the most urgent ready nodes inside the lookahead window, up to the
/// wavefront cap, the explicit memory limit and the schedule's memory headroom (always at least
/// one, so a schedule that is not a topological order or a tight limit cannot stall the run).
/// A dense layer's multiply-accumulates share one operand list and run fused in one pass over
/// it, so every ready member of a group in the front joins it, whatever the window (its
/// operands stay alive until the group's last member has run anyway), within the same limits.
fn take_front(
    m: &Module,
    ready: &mut BinaryHeap<Reverse<((u32, u32), ValueId)>>,
    headroom: &headroom::Headroom,
    a: Admission,
    mut reload: Option<Reload<'_>>,
) -> Vec<ValueId> {
    let mut front: Vec<ValueId> = Vec::with_capacity(a.wave_cap);
    let mut projected = a.live;
    // Bytes a spilling run reads back for the nodes admitted.
    let mut loads = 0u64;
    // Results admitted ahead of the frontier in this wavefront.
    let mut pending_ahead = 0u64;
    let cost = |v: ValueId| type_bytes(m, v, a.log_n);
    let ahead_of = |p: (u32, u32)| p.0 as usize > a.frontier && p.1 == 0;
    while front.len() < a.wave_cap {
        match ready.peek() {
            Some(&Reverse((p, v))) if front.is_empty() || u64::from(p.0) < a.window_end => {
                let add = cost(v);
                // A spilling run also holds the operands it reads back.
                let load = reload.as_mut().map_or(0, |r| r.bytes(m, v, a.log_n));
                if !front.is_empty()
                    && (a
                        .memory_limit
                        .is_some_and(|cap| projected + loads + add + load > cap)
                        || !headroom.allows(a.frontier, p, pending_ahead + add))
                {
                    break;
                }
                projected += add;
                loads += load;
                if ahead_of(p) {
                    pending_ahead += add;
                }
                ready.pop();
                front.push(v);
            }
            _ => break,
        }
    }
    let dense_key = |v: ValueId| match m.node(v).map(|n| &n.op) {
        Some(Op::Mac(mac)) if mac.coeffs.len() >= 16 => {
            Some((m.operands(v), mac.log_scale.0.to_bits()))
        }
        _ => None,
    };
    let groups: std::collections::HashSet<(Vec<ValueId>, u64)> =
        front.iter().filter_map(|&v| dense_key(v)).collect();
    if !groups.is_empty() {
        let mut kept = Vec::with_capacity(ready.len());
        let mut entries = std::mem::take(ready).into_vec();
        // Most urgent first, so the limits keep the members the schedule wants next.
        entries.sort_by_key(|&Reverse(key)| key);
        for entry in entries {
            let Reverse((p, v)) = entry;
            // Members share the operands the group's first member reads.
            let add = cost(v);
            let streamed = a
                .join_streamed
                .is_some_and(|d| d.get(v.0 as usize).copied().unwrap_or(false));
            let fits = streamed
                || a.memory_limit.is_none_or(|cap| projected + add <= cap)
                    && headroom.allows(a.frontier, p, pending_ahead + add);
            if fits && dense_key(v).is_some_and(|k| groups.contains(&k)) {
                projected += add;
                if ahead_of(p) {
                    pending_ahead += add;
                }
                front.push(v);
            } else {
                kept.push(entry);
            }
        }
        *ready = BinaryHeap::from(kept);
    }
    front
}

/// The wavefront `front` as tasks: rotations of one ciphertext hoisted together, the
/// multiply-accumulates of a dense layer (one operand list) fused, those of convolution windows
/// (same level, scale and size) blocked, everything else one node at a time. Counts the hoisted
/// rotations into `hoisted`.
fn group_tasks(
    m: &Module,
    front: &[ValueId],
    store: &[Option<Value>],
    hoisted: &mut usize,
    stream_dense: Option<&[bool]>,
) -> Vec<Task> {
    // Group rotations of one source.
    let mut rot_groups: BTreeMap<ValueId, Vec<(ValueId, i64)>> = BTreeMap::new();
    let mut tasks: Vec<Task> = Vec::with_capacity(front.len());
    for &v in front {
        let Some(node) = m.node(v) else { continue };
        if let Op::Rotate { steps } = node.op {
            if let Some(&src) = m.operands(v).first() {
                rot_groups
                    .entry(src)
                    .or_default()
                    .push((v, i64::from(steps)));
                continue;
            }
        }
        tasks.push(Task::Single(v));
    }
    // Multiply-accumulates over identical operand lists (dense layers) run fused.
    let mut mac_groups: BTreeMap<(Vec<ValueId>, u64), Vec<ValueId>> = BTreeMap::new();
    tasks.retain(|t| {
        let Task::Single(v) = t else { return true };
        match m.node(*v).map(|n| &n.op) {
            Some(Op::Mac(a)) if a.coeffs.len() >= 16 => {
                mac_groups
                    .entry((m.operands(*v), a.log_scale.0.to_bits()))
                    .or_default()
                    .push(*v);
                false
            }
            _ => true,
        }
    });
    let mut lone_macs: Vec<ValueId> = Vec::new();
    for (_, group) in mac_groups {
        // A spilling run streams a dense layer's operands from disk, which only the fused path
        // does: there even a lone member runs fused (the same result by contract).
        let dense = |v: &ValueId| stream_dense.is_some_and(|d| d[v.0 as usize]);
        if group.len() > 1 || group.first().is_some_and(dense) {
            tasks.push(Task::FusedMac(group));
        } else {
            lone_macs.extend(group);
        }
    }
    // The other multiply-accumulates (convolution windows) run blocked together, by
    // scale and operand shape.
    let mut sparse_groups: BTreeMap<(u64, usize, usize), Vec<ValueId>> = BTreeMap::new();
    tasks.retain(|t| match t {
        Task::Single(v) if matches!(m.node(*v).map(|n| &n.op), Some(Op::Mac(_))) => {
            lone_macs.push(*v);
            false
        }
        _ => true,
    });
    for v in lone_macs {
        let key = match (m.node(v).map(|n| &n.op), m.operands(v).first()) {
            (Some(Op::Mac(a)), Some(o)) => store
                .get(o.0 as usize)
                .and_then(Option::as_ref)
                .and_then(Value::ct)
                .map(|c| (a.log_scale.0.to_bits(), c.level(), c.polys.len())),
            _ => None,
        };
        match key {
            Some(k) => sparse_groups.entry(k).or_default().push(v),
            None => tasks.push(Task::Single(v)),
        }
    }
    for (_, group) in sparse_groups {
        if group.len() > 1 {
            tasks.push(Task::SparseMac(group));
        } else {
            tasks.extend(group.into_iter().map(Task::Single));
        }
    }
    for (src, rots) in rot_groups {
        if rots.len() > 1 {
            *hoisted += rots.len();
            tasks.push(Task::Hoisted(src, rots));
        } else {
            tasks.extend(rots.into_iter().map(|(v, _)| Task::Single(v)));
        }
    }
    tasks
}

/// Bytes of `v`'s result as its type says (a ciphertext's polynomials at its level; one
/// polynomial for a plaintext; nothing for outputs, which hand their operand on).
fn type_bytes(m: &Module, v: ValueId, log_n: u32) -> u64 {
    let Some(node) = m.node(v) else { return 0 };
    if matches!(node.op, Op::Output { .. } | Op::Input { .. }) {
        return 0;
    }
    node.ty.bytes(log_n)
}

/// Whether `op` can reuse its first operand's buffers.
fn in_place(op: &Op) -> bool {
    matches!(
        op,
        Op::Negate
            | Op::AddScalar { .. }
            | Op::MulScalar { .. }
            | Op::MulInteger { .. }
            | Op::Relinearize
            | Op::Rescale
            | Op::DropLevel { .. }
            | Op::Output { .. }
    )
}

/// The level a node computes at: its first operand's level, or its own for sources.
fn compute_level(m: &Module, v: ValueId) -> u32 {
    m.operands(v)
        .first()
        .and_then(|&o| m.ty(o))
        .or_else(|| m.ty(v))
        .map_or(0, |t| t.level().0)
}

/// The default stages of a module: one per computing level, highest level first, named
/// `level L`.
pub fn level_stages(m: &Module) -> StageMap {
    let levels: std::collections::BTreeSet<u32> = m.ids().map(|v| compute_level(m, v)).collect();
    let order: Vec<u32> = levels.into_iter().rev().collect();
    let index: HashMap<u32, usize> = order.iter().enumerate().map(|(i, &l)| (l, i)).collect();
    let max_id = m.ids().map(|v| v.0 as usize + 1).max().unwrap_or(0);
    let mut of_node = vec![None; max_id];
    for v in m.ids() {
        of_node[v.0 as usize] = index.get(&compute_level(m, v)).copied();
    }
    StageMap {
        names: order.iter().map(|l| format!("level {l}")).collect(),
        of_node,
    }
}

/// Per-stage accounting of a run whose stages overlap.
#[derive(Clone)]
struct StageAcc {
    nodes: usize,
    wavefronts: usize,
    seconds: f64,
    cpu_seconds: Option<f64>,
    mem: Option<MemoryStatus>,
    live: Option<usize>,
}

impl StageAcc {
    fn new() -> Self {
        StageAcc {
            nodes: 0,
            wavefronts: 0,
            seconds: 0.0,
            cpu_seconds: read_cpu_seconds().map(|_| 0.0),
            mem: None,
            live: None,
        }
    }
}

/// The run priority `(position, tie)` of every node id and the schedule's length. A node at
/// schedule position `i` gets `(i, 0)`; a node the schedule misses (e.g. a probe added after
/// scheduling) gets its latest operand's position and `1 + id`, so it runs right after that
/// operand. Without a schedule the order is the module's topological order.
fn priorities(m: &Module, schedule: Option<&[u32]>, max_id: usize) -> (Vec<(u32, u32)>, usize) {
    let (topo, rest) = m.topo_partition();
    let order: Vec<u32> = match schedule {
        Some(s) => s.to_vec(),
        None => topo.iter().chain(&rest).map(|v| v.0).collect(),
    };
    let mut key: Vec<Option<(u32, u32)>> = vec![None; max_id];
    for (i, &v) in order.iter().enumerate() {
        if let Some(k) = key.get_mut(v as usize) {
            // A duplicate keeps its first position.
            if k.is_none() {
                *k = Some((i as u32, 0));
            }
        }
    }
    for v in topo.iter().chain(&rest) {
        let i = v.0 as usize;
        if i < max_id && key[i].is_none() {
            let pos = m
                .operands(*v)
                .iter()
                .filter_map(|o| key.get(o.0 as usize).copied().flatten())
                .map(|k| k.0)
                .max()
                .unwrap_or(0);
            key[i] = Some((pos, 1 + v.0));
        }
    }
    let keys = key
        .into_iter()
        .enumerate()
        .map(|(i, k)| k.unwrap_or((u32::MAX, i as u32)))
        .collect();
    (keys, order.len())
}

/// Checks a run before it starts: the circuit's structure, its slot count against the
/// parameters', and that every input given is one the circuit declares.
fn check_run(
    m: &Module,
    eval: &Evaluator,
    inputs: &HashMap<(String, u32), Ciphertext>,
    keys: &EvalKeys<'_>,
) -> Result<(), ExecError> {
    verify(m, &VerifyOptions::STRUCTURE).map_err(|e| ExecError::Invalid(format!("{e:?}")))?;
    if let (Some(info), Some(b)) = (m.boot, keys.boot) {
        check_bootstrapper(&info, b.bootstrapper, eval)?;
        if let (Some(rk), Some(gk)) = (keys.relin, keys.galois) {
            b.bootstrapper
                .check_shared_keys(rk, gk, b.encapsulation)
                .map_err(|e| ExecError::BootstrapperMismatch(format!("its keys: {e}")))?;
        }
    }
    let slots = eval.context().n() / 2;
    if let Some(s) = m.ids().filter_map(|v| m.ty(v)).map(|t| t.slots()).next() {
        if s as usize != slots {
            return Err(ExecError::Slots {
                circuit: s,
                params: slots,
            });
        }
    }
    let declared: std::collections::HashSet<(String, u32)> = m
        .inputs()
        .into_iter()
        .map(|(_, n, i)| (n.to_string(), i))
        .collect();
    for (name, index) in inputs.keys() {
        if !declared.contains(&(name.clone(), *index)) {
            return Err(ExecError::UnknownInput {
                name: name.clone(),
                index: *index,
            });
        }
    }
    Ok(())
}

/// Whether `bt` does what the module's `bootstrap` nodes were typed for.
fn check_bootstrapper(
    info: &hecc_ir::he::BootInfo,
    bt: &Bootstrapper,
    eval: &Evaluator,
) -> Result<(), ExecError> {
    let bad = |what: String| Err(ExecError::BootstrapperMismatch(what));
    let cfg = bt.config();
    if bt.context().moduli() != eval.context().moduli() || bt.context().n() != eval.context().n() {
        return bad("it was built for other parameters".into());
    }
    if bt.output_level() != info.out_level.0 as usize {
        return bad(format!(
            "it returns level {}, the circuit expects {}",
            bt.output_level(),
            info.out_level
        ));
    }
    if cfg.slots != info.slots as usize {
        return bad(format!(
            "it refreshes {} slots, the circuit {}",
            cfg.slots, info.slots
        ));
    }
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9;
    if !close(cfg.input_scale.log2(), info.in_log_scale.0)
        || !close(cfg.output_scale.log2(), info.out_log_scale.0)
    {
        return bad(format!(
            "its scales are 2^{:.3} in and 2^{:.3} out, the circuit's 2^{:.3} and 2^{:.3}",
            cfg.input_scale.log2(),
            cfg.output_scale.log2(),
            info.in_log_scale.0,
            info.out_log_scale.0
        ));
    }
    if cfg.message_bound < info.message_bound {
        return bad(format!(
            "its message bound {} is below the circuit's {}",
            cfg.message_bound, info.message_bound
        ));
    }
    Ok(())
}

/// Executes `m` on the backend. `inputs` maps `(input name, element index)` to its ciphertext;
/// it must hold exactly the circuit's inputs, at their types' levels and scales.
pub fn execute(
    m: &Module,
    eval: &Evaluator,
    encoder: &Encoder,
    keys: EvalKeys<'_>,
    inputs: HashMap<(String, u32), Ciphertext>,
    opts: &ExecOptions,
) -> Result<RunResult, ExecError> {
    let t0 = Instant::now();
    check_run(m, eval, &inputs, &keys)?;
    let stages = opts.stages.clone().unwrap_or_else(|| level_stages(m));
    let n_stages = stages.names.len().max(1);
    let stage_of = |v: ValueId| -> usize {
        stages
            .of_node
            .get(v.0 as usize)
            .copied()
            .flatten()
            .unwrap_or(n_stages - 1)
            .min(n_stages - 1)
    };
    let max_id = m.ids().map(|v| v.0 as usize + 1).max().unwrap_or(0);
    let mut remaining = vec![0usize; max_id];
    let mut pending = vec![0usize; max_id];
    for v in m.ids() {
        remaining[v.0 as usize] = m.users(v).len();
        pending[v.0 as usize] = m.operands(v).len();
    }
    // Per stage, the nodes in it (in id order) and a counter of their unfinished operands.
    let mut by_stage: Vec<Vec<ValueId>> = vec![Vec::new(); n_stages];
    for v in m.ids() {
        by_stage[stage_of(v)].push(v);
    }
    let ctx = Ctx {
        m,
        eval,
        encoder,
        keys,
        tol: opts.scale_tolerance,
    };
    let total_nodes = m.len();
    // Whatever the client side left free (encoding and encryption temporaries) goes back
    // before the first stage.
    if opts.release_memory {
        memory::release_free_memory();
    }
    let mut store: Vec<Option<Value>> = (0..max_id).map(|_| None).collect();
    let mut outputs: Vec<OutputCt> = Vec::new();
    let mut report = RunReport::default();
    let mut live = 0usize;
    // Bytes of stored values, and of encrypted inputs not yet moved out of the map.
    let mut live_bytes = 0u64;
    let mut input_bytes: u64 = inputs.values().map(ct_bytes).sum();
    // Bytes of the outputs handed out so far (kept until the run returns them).
    let mut output_bytes = 0u64;
    let mut done_nodes = 0usize;
    // Priority of a node: its position in the requested schedule (id order without one); a
    // node the schedule misses runs right after its latest operand.
    let (priority, sched_len) = priorities(m, opts.schedule.as_deref(), max_id);
    let wave_cap = opts.max_wavefront.max(1);
    let log_n = eval.context().n().trailing_zeros();
    let mut headroom = headroom::Headroom::new(
        m,
        &priority,
        sched_len,
        log_n,
        opts.memory_limit,
        MEMORY_SLACK,
    );
    report.schedule_peak_bytes = headroom.peak();
    let lookahead = opts.lookahead.max(wave_cap) as u64;
    let budget = opts
        .spill
        .as_ref()
        .map(|s| s.budget)
        .filter(|&b| b != u64::MAX);
    // A spilling run admits results within its budget as well.
    let admit_limit = opts.memory_limit.or(budget);
    // Mid-stage trims: only while the process holds more than what it held besides its values
    // when the run started (keys, plan, code) plus the memory bound and a slack; then only
    // when the allocator keeps more than that slack in free chunks. The bound is the explicit
    // limit, else the spill budget, else the schedule's peak; an explicit `none` without a
    // budget asks for speed, and gets no trims.
    let bound = match opts.memory_limit {
        Some(u64::MAX) => budget,
        Some(limit) => Some(limit),
        None => budget.or(Some(report.schedule_peak_bytes)),
    };
    let trim_slack = bound.map_or(TRIM_SLACK_MIN, |b| {
        ((b as f64 * TRIM_SLACK) as u64).max(TRIM_SLACK_MIN)
    });
    let high_water = bound
        .filter(|_| opts.release_memory)
        .zip(read_memory_status())
        .map(|(b, s)| s.rss_bytes.saturating_sub(input_bytes) + b.saturating_add(trim_slack));
    // Schedule positions already run (positions that no node holds count as run).
    let mut pos_done = vec![true; sched_len];
    for v in m.ids() {
        let (p, sub) = priority[v.0 as usize];
        if sub == 0 {
            if let Some(d) = pos_done.get_mut(p as usize) {
                *d = false;
            }
        }
    }
    let mut frontier = 0usize;
    let ckks = eval.context();
    let mut inputs = inputs;
    // The input node of each input element.
    let input_node: HashMap<(String, u32), ValueId> = m
        .inputs()
        .into_iter()
        .map(|(v, name, index)| ((name.to_string(), index), v))
        .collect();
    let mut done = vec![false; max_id];
    // Results with a file in the spill directory, inputs moved there (by input node), stored
    // results in memory.
    let mut on_disk = vec![false; max_id];
    let mut input_spilled: HashMap<ValueId, (String, u32)> = HashMap::new();
    // Input nodes whose ciphertext has a file (kept until the node has run, so an input read
    // back and evicted again is not written twice).
    let mut input_files: HashSet<ValueId> = HashSet::new();
    let dense = if opts.spill.is_some() {
        dense_macs(m, max_id)
    } else {
        Vec::new()
    };
    let mut resident: HashSet<u32> = HashSet::new();
    let mut spill = match &opts.spill {
        Some(o) => Some(spill::SpillDir::open(o)?),
        None => None,
    };
    let mut resumed = 0u64;
    if let (Some(sd), Some(o)) = (spill.as_mut(), &opts.spill) {
        match sd.manifest()? {
            Some(man) if man.run_id == o.run_id => {
                let r = resume(m, &man, sd, ckks, &mut done, &mut on_disk)?;
                for v in m.ids() {
                    if !done[v.0 as usize] {
                        continue;
                    }
                    done_nodes += 1;
                    let (p, sub) = priority[v.0 as usize];
                    if sub == 0 {
                        if let Some(d) = pos_done.get_mut(p as usize) {
                            *d = true;
                        }
                    }
                    for u in m.users(v) {
                        let p = &mut pending[u.0 as usize];
                        *p = p.saturating_sub(1);
                    }
                    for op in m.operands(v) {
                        let r = &mut remaining[op.0 as usize];
                        *r = r.saturating_sub(1);
                    }
                }
                // Every result still needed must be in the checkpoint.
                for v in m.ids() {
                    let i = v.0 as usize;
                    if done[i] && remaining[i] > 0 && !on_disk[i] {
                        return Err(ExecError::Spill {
                            path: sd.dir.display().to_string(),
                            detail: format!(
                                "the checkpoint does not hold node {v}, which is still needed"
                            ),
                        });
                    }
                }
                for o in r {
                    output_bytes += ct_bytes(&o.ct);
                    outputs.push(o);
                }
                inputs.retain(|key, _| input_node.get(key).is_none_or(|v| !done[v.0 as usize]));
                input_bytes = inputs.values().map(ct_bytes).sum();
                resumed = done_nodes as u64;
            }
            Some(_) => {
                return Err(ExecError::Spill {
                    path: sd.dir.display().to_string(),
                    detail: "the directory holds the checkpoint of another run (another plan or \
                             other inputs)"
                        .into(),
                })
            }
            None => sd.clear(&HashSet::new()),
        }
    }
    // Inputs to read when their node runs.
    let mut lazy: HashMap<ValueId, (String, u32)> = HashMap::new();
    if let Some(li) = &opts.lazy_inputs {
        for ((name, index), _) in &li.elements {
            let key = (name.clone(), *index);
            let Some(&v) = input_node.get(&key) else {
                return Err(ExecError::UnknownInput {
                    name: name.clone(),
                    index: *index,
                });
            };
            if !done[v.0 as usize] && !inputs.contains_key(&key) {
                lazy.insert(v, key);
            }
        }
    }
    // Nodes whose operands are all done, most urgent first.
    let mut ready: BinaryHeap<Reverse<((u32, u32), ValueId)>> = BinaryHeap::new();
    for v in m.ids() {
        if pending[v.0 as usize] == 0 && !done[v.0 as usize] {
            ready.push(Reverse((priority[v.0 as usize], v)));
        }
    }
    let mut last_checkpoint = Instant::now();
    let inputs = Mutex::new(inputs);
    // Inputs beyond the budget wait on disk from the start.
    if let (Some(sd), Some(so)) = (spill.as_mut(), &opts.spill) {
        let held = live_bytes + input_bytes + output_bytes;
        if held > so.budget {
            let t = Instant::now();
            let mut s = Spilled {
                store: &mut store,
                on_disk: &mut on_disk,
                resident: &mut resident,
                live_bytes: &mut live_bytes,
                live: &mut live,
            };
            let freed = evict(
                m,
                sd,
                ckks,
                &mut s,
                &done,
                &priority,
                &input_node,
                &inputs,
                &mut input_spilled,
                &mut input_files,
                held - so.budget / 10 * 8,
            )?;
            input_bytes = input_bytes.saturating_sub(freed);
            sd.report.io_seconds += t.elapsed().as_secs_f64();
        }
    }
    let progress = Progress::start(opts.progress.as_ref(), total_nodes as u64, resumed);
    let names: Vec<String> = if stages.names.is_empty() {
        vec!["all".to_string()]
    } else {
        stages.names.clone()
    };
    let stage_size: Vec<usize> = by_stage.iter().map(Vec::len).collect();
    let mut acc: Vec<StageAcc> = vec![StageAcc::new(); n_stages];
    let mut current_stage = usize::MAX;
    loop {
        // The first schedule position not yet run bounds how far ahead nodes may start.
        while frontier < sched_len && pos_done[frontier] {
            frontier += 1;
        }
        let limit = if frontier < sched_len {
            frontier as u64 + lookahead
        } else {
            u64::MAX
        };
        headroom.advance(frontier);
        let mut front = take_front(
            m,
            &mut ready,
            &headroom,
            Admission {
                frontier,
                window_end: limit,
                wave_cap,
                memory_limit: admit_limit,
                join_streamed: spill.is_some().then_some(dense.as_slice()),
                live: live_bytes + input_bytes + output_bytes,
                log_n,
            },
            spill.as_ref().map(|_| Reload {
                dense: &dense,
                on_disk: &on_disk,
                store: &store,
                counted: HashSet::new(),
            }),
        );
        if front.is_empty() {
            break;
        }
        let tw = Instant::now();
        // An input whose ciphertext waits on disk becomes its node's value there: the file is
        // renamed, not read (it is read, and its scale checked, when a user needs it).
        let mut on_disk_inputs: Vec<ValueId> = Vec::new();
        if let Some(sd) = spill.as_mut() {
            front.retain(|v| {
                let waiting = input_spilled.contains_key(v);
                if waiting {
                    on_disk_inputs.push(*v);
                }
                !waiting
            });
            for &v in &on_disk_inputs {
                input_spilled.remove(&v);
                input_files.remove(&v);
                let i = v.0 as usize;
                let (from, to) = (spill::file_name('i', v.0), spill::value_file(v));
                if remaining[i] > 0 {
                    sd.rename(&from, &to)?;
                    on_disk[i] = true;
                } else {
                    sd.discard(&from);
                }
                done[i] = true;
                done_nodes += 1;
                let (p, sub) = priority[i];
                if sub == 0 {
                    if let Some(d) = pos_done.get_mut(p as usize) {
                        *d = true;
                    }
                }
                for u in m.users(v) {
                    let p = &mut pending[u.0 as usize];
                    *p = p.saturating_sub(1);
                    if *p == 0 {
                        ready.push(Reverse((priority[u.0 as usize], u)));
                    }
                }
            }
        }
        // Inputs read on demand, for the input nodes of this wavefront.
        if let Some(li) = &opts.lazy_inputs {
            let want: Vec<(ValueId, (String, u32))> = front
                .iter()
                .filter_map(|v| lazy.remove(v).map(|k| (*v, k)))
                .collect();
            if !want.is_empty() {
                type Read = Result<((String, u32), Ciphertext), ExecError>;
                let got: Vec<Read> = want
                    .into_par_iter()
                    .map(|(_, (name, index))| match (li.load)(&name, index) {
                        Ok(ct) => Ok(((name, index), ct)),
                        Err(detail) => Err(ExecError::InputRead {
                            name,
                            index,
                            detail,
                        }),
                    })
                    .collect();
                let mut map = inputs
                    .lock()
                    .map_err(|_| ExecError::Invalid("the input map was poisoned".into()))?;
                for g in got {
                    let (key, ct) = g?;
                    input_bytes += ct_bytes(&ct);
                    map.insert(key, ct);
                }
            }
        }
        // Bring back what this wavefront reads from the spill directory.
        if let Some(sd) = spill.as_mut() {
            let t = Instant::now();
            let mut want: Vec<ValueId> = front
                .iter()
                .filter(|&&v| !dense[v.0 as usize])
                .flat_map(|&v| m.operands(v))
                .filter(|o| {
                    let i = o.0 as usize;
                    on_disk.get(i).copied().unwrap_or(false) && store[i].is_none()
                })
                .collect();
            want.sort_unstable();
            want.dedup();
            let sd_ref = &*sd;
            let ctx_ref = &ctx;
            // Read back and checked against the node's type (level, scale; the scale set
            // exactly, as when the value was made).
            let read: Vec<Result<(ValueId, Value, u64), ExecError>> = want
                .par_iter()
                .map(|&v| {
                    let (mut val, b) = sd_ref.read(ckks, &spill::value_file(v))?;
                    let ty = m.ty(v).ok_or(ExecError::MissingOperand {
                        node: v,
                        operand: v,
                    })?;
                    ctx_ref.check(v, &ty, &mut val)?;
                    Ok((v, val, b))
                })
                .collect();
            for r in read {
                let (v, val, b) = r?;
                sd.read_back(b);
                live_bytes += val.bytes();
                if val.ct().is_some() {
                    live += 1;
                }
                resident.insert(v.0);
                store[v.0 as usize] = Some(val);
            }
            sd.report.io_seconds += t.elapsed().as_secs_f64();
        }
        let cpu_w = read_cpu_seconds();
        if let Some(&v0) = front.first() {
            let s0 = stage_of(v0);
            if s0 != current_stage {
                current_stage = s0;
                progress.stage(&names[s0]);
            }
        }
        let mut wave_counts: BTreeMap<usize, usize> = BTreeMap::new();
        for &v in &on_disk_inputs {
            *wave_counts.entry(stage_of(v)).or_default() += 1;
        }
        let tasks = group_tasks(
            m,
            &front,
            &store,
            &mut report.hoisted_rotations,
            spill.is_some().then_some(dense.as_slice()),
        );
        // Unary nodes that are their operand's last user take it and work in place.
        let mut owned: HashMap<ValueId, Value> = HashMap::new();
        for t in &tasks {
            if let Task::Single(v) = t {
                let Some(node) = m.node(*v) else { continue };
                let ops = m.operands(*v);
                if in_place(&node.op) && ops.len() == 1 {
                    let o = ops[0];
                    if remaining[o.0 as usize] == 1 {
                        if let Some(val) = store[o.0 as usize].take() {
                            resident.remove(&o.0);
                            if val.ct().is_some() {
                                live = live.saturating_sub(1);
                            }
                            headroom.freed(priority[o.0 as usize]);
                            live_bytes = live_bytes.saturating_sub(val.bytes());
                            owned.insert(*v, val);
                        }
                    }
                }
            }
        }
        let owned_cells: Vec<Option<Value>> = tasks
            .iter()
            .map(|t| match t {
                Task::Single(v) => owned.remove(v),
                Task::Hoisted(..) | Task::FusedMac(..) | Task::SparseMac(..) => None,
            })
            .collect();
        let store_ref = &store;
        let inputs_ref = &inputs;
        let stream = match (spill.as_ref(), &opts.spill) {
            (Some(sd), Some(so)) => Some(Stream {
                dir: sd,
                on_disk: &on_disk,
                chunk_bytes: (so.budget / 8).max(1),
                log_n,
                reads: std::sync::atomic::AtomicU64::new(0),
                read_bytes: std::sync::atomic::AtomicU64::new(0),
            }),
            _ => None,
        };
        let results: Vec<Result<Vec<(ValueId, Value)>, ExecError>> = tasks
            .par_iter()
            .zip(owned_cells.into_par_iter())
            .map(|(t, own)| match t {
                Task::Single(v) => ctx
                    .run_node(*v, store_ref, own, inputs_ref)
                    .map(|val| vec![(*v, val)]),
                Task::Hoisted(src, rots) => ctx.run_hoisted(*src, rots, store_ref),
                Task::FusedMac(macs) => ctx.run_fused(macs, store_ref, stream.as_ref()),
                Task::SparseMac(macs) => ctx.run_sparse(macs, store_ref),
            })
            .collect();
        let streamed = stream.map(|st| (st.reads.into_inner(), st.read_bytes.into_inner()));
        if let (Some((n, b)), Some(sd)) = (streamed, spill.as_mut()) {
            sd.report.values_read += n;
            sd.report.bytes_read += b;
        }
        let mut finished: Vec<(ValueId, Value)> = Vec::with_capacity(front.len());
        for r in results {
            finished.extend(r?);
        }
        // Inputs read in this wavefront left the map (counted at the size they arrived with);
        // the results and every operand are alive together at this point, the wavefront's
        // peak.
        for (v, val) in &finished {
            if matches!(m.node(*v).map(|n| &n.op), Some(Op::Input { .. })) {
                input_bytes = input_bytes.saturating_sub(val.bytes());
                if input_files.remove(v) {
                    if let Some(sd) = spill.as_mut() {
                        sd.discard(&spill::file_name('i', v.0));
                    }
                }
            }
        }
        finished.iter_mut().for_each(|(_, val)| val.compact());
        let wave_bytes: u64 = finished.iter().map(|(_, val)| val.bytes()).sum();
        report.peak_live_bytes = report
            .peak_live_bytes
            .max(live_bytes + input_bytes + output_bytes + wave_bytes);
        // Release operands whose last user ran, then publish the results.
        for (v, _) in &finished {
            for o in m.operands(*v) {
                let r = &mut remaining[o.0 as usize];
                *r = r.saturating_sub(1);
                if *r == 0 {
                    let i = o.0 as usize;
                    if let Some(x) = store[i].take() {
                        resident.remove(&o.0);
                        headroom.freed(priority[i]);
                        live_bytes = live_bytes.saturating_sub(x.bytes());
                        if x.ct().is_some() {
                            live = live.saturating_sub(1);
                        }
                    }
                    if on_disk[i] {
                        on_disk[i] = false;
                        if let Some(sd) = spill.as_mut() {
                            sd.discard(&spill::value_file(o));
                        }
                    }
                }
            }
        }
        for (v, val) in finished {
            done[v.0 as usize] = true;
            *wave_counts.entry(stage_of(v)).or_default() += 1;
            let (p, sub) = priority[v.0 as usize];
            if sub == 0 {
                if let Some(d) = pos_done.get_mut(p as usize) {
                    *d = true;
                }
            }
            done_nodes += 1;
            let out = m.node(v).and_then(|n| output_of(m, &n.op));
            for u in m.users(v) {
                let p = &mut pending[u.0 as usize];
                *p = p.saturating_sub(1);
                if *p == 0 {
                    ready.push(Reverse((priority[u.0 as usize], u)));
                }
            }
            match (out, val) {
                (Some(HeNodeRef::Output(name, index)), Value::Ct(ct))
                    if remaining[v.0 as usize] == 0 =>
                {
                    output_bytes += ct_bytes(&ct);
                    outputs.push(OutputCt { name, index, ct });
                }
                (out, val) => {
                    if let (Some(HeNodeRef::Output(name, index)), Value::Ct(ct)) = (out, &val) {
                        output_bytes += val.bytes();
                        outputs.push(OutputCt {
                            name,
                            index,
                            ct: ct.clone(),
                        });
                    }
                    if remaining[v.0 as usize] > 0 {
                        if val.ct().is_some() {
                            live += 1;
                        }
                        live_bytes += val.bytes();
                        headroom.made(frontier, priority[v.0 as usize], type_bytes(m, v, log_n));
                        resident.insert(v.0);
                        store[v.0 as usize] = Some(val);
                    }
                }
            }
        }
        report.peak_live_ciphertexts = report.peak_live_ciphertexts.max(live);
        let cancelled = opts
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed));
        if let (Some(sd), Some(so)) = (spill.as_mut(), &opts.spill) {
            let t = Instant::now();
            let held = live_bytes + input_bytes + output_bytes;
            if held > so.budget {
                let mut s = Spilled {
                    store: &mut store,
                    on_disk: &mut on_disk,
                    resident: &mut resident,
                    live_bytes: &mut live_bytes,
                    live: &mut live,
                };
                let freed_inputs = evict(
                    m,
                    sd,
                    ckks,
                    &mut s,
                    &done,
                    &priority,
                    &input_node,
                    &inputs,
                    &mut input_spilled,
                    &mut input_files,
                    held - so.budget / 10 * 8,
                )?;
                input_bytes = input_bytes.saturating_sub(freed_inputs);
            }
            let due = so
                .checkpoint_every
                .is_some_and(|every| last_checkpoint.elapsed() >= every);
            if due || cancelled {
                checkpoint(
                    m,
                    sd,
                    ckks,
                    &so.run_id,
                    &store,
                    &mut on_disk,
                    &done,
                    &remaining,
                    &outputs,
                )?;
                last_checkpoint = Instant::now();
            }
            sd.report.io_seconds += t.elapsed().as_secs_f64();
        }
        let over =
            high_water.is_some_and(|hw| read_memory_status().is_some_and(|s| s.rss_bytes > hw));
        if over && memory::release_free_memory_over(trim_slack) {
            report.memory_trims += 1;
        }
        if cancelled {
            return Err(ExecError::Cancelled);
        }
        progress.nodes(done_nodes as u64, total_nodes as u64);
        // Share the wavefront's time among the stages of its nodes; snapshot memory when a
        // stage's last node has run.
        let dt = tw.elapsed().as_secs_f64();
        let dcpu = read_cpu_seconds().zip(cpu_w).map(|(b, a)| b - a);
        let in_wave: usize = wave_counts.values().sum::<usize>().max(1);
        for (si, c) in wave_counts {
            let a = &mut acc[si];
            let share = c as f64 / in_wave as f64;
            a.seconds += dt * share;
            a.cpu_seconds = match (a.cpu_seconds, dcpu) {
                (Some(x), Some(d)) => Some(x + d * share),
                _ => None,
            };
            a.wavefronts += 1;
            a.nodes += c;
            if a.nodes == stage_size[si] {
                if opts.release_memory {
                    memory::release_free_memory();
                }
                a.mem = read_memory_status();
                a.live = Some(live);
            }
        }
    }
    for (si, name) in names.iter().enumerate() {
        let a = &acc[si];
        let mem = a.mem.or_else(read_memory_status);
        report.stages.push(StageReport {
            name: name.clone(),
            nodes: a.nodes,
            wavefronts: a.wavefronts,
            seconds: a.seconds,
            cpu_seconds: a.cpu_seconds,
            rss_bytes: mem.map(|m| m.rss_bytes),
            peak_rss_bytes: mem.map(|m| m.peak_rss_bytes),
            live_ciphertexts: a.live.unwrap_or(live),
        });
    }
    drop(progress);
    if done_nodes != total_nodes {
        return Err(ExecError::Invalid(format!(
            "only {done_nodes} of {total_nodes} nodes could run: the circuit has a cycle"
        )));
    }
    outputs.sort_by(|a, b| (&a.name, a.index).cmp(&(&b.name, b.index)));
    report.nodes = done_nodes;
    report.seconds = t0.elapsed().as_secs_f64();
    report.peak_rss_bytes = read_memory_status().map(|m| m.peak_rss_bytes);
    if let Some(sd) = spill {
        report.spill = Some(SpillReport {
            resumed_nodes: resumed,
            ..sd.report.clone()
        });
        sd.finish();
    }
    Ok(RunResult { outputs, report })
}

/// Applies checkpoint `man` to a fresh run's state: marks the nodes done and the results on
/// disk (checking their files are there), reads the outputs back, and clears the directory of
/// files the checkpoint does not name.
fn resume(
    m: &Module,
    man: &spill::Manifest,
    sd: &mut spill::SpillDir,
    ckks: &crate::ckks::Context,
    done: &mut [bool],
    on_disk: &mut [bool],
) -> Result<Vec<OutputCt>, ExecError> {
    let dir = sd.dir.display().to_string();
    let bad = |detail: String| ExecError::Spill {
        path: dir.clone(),
        detail,
    };
    if man.nodes != done.len() {
        return Err(bad(format!(
            "the checkpoint is of a circuit with {} node ids; this one has {}",
            man.nodes,
            done.len()
        )));
    }
    for v in m.ids() {
        let i = v.0 as usize;
        done[i] = man.done[i];
    }
    for &v in &man.values {
        let i = v as usize;
        if !done.get(i).copied().unwrap_or(false) {
            return Err(bad(format!(
                "the checkpoint holds node {v}, which it does not list as done"
            )));
        }
        let name = spill::file_name('v', v);
        if !sd.path(&name).is_file() {
            return Err(bad(format!("the checkpoint's file {name} is missing")));
        }
        on_disk[i] = true;
    }
    let mut outputs = Vec::with_capacity(man.outputs.len());
    for (k, (name, index)) in man.outputs.iter().enumerate() {
        let file = spill::file_name('o', k as u32);
        let (val, b) = sd.read(ckks, &file)?;
        sd.read_back(b);
        let Value::Ct(ct) = val else {
            return Err(bad(format!("output file {file} holds a plaintext")));
        };
        outputs.push(OutputCt {
            name: name.clone(),
            index: *index,
            ct,
        });
    }
    sd.outputs_saved = outputs.len();
    sd.clear(&man.files());
    Ok(outputs)
}

/// The executor's stored results, as eviction changes them.
struct Spilled<'a> {
    store: &'a mut [Option<Value>],
    on_disk: &'a mut [bool],
    resident: &'a mut HashSet<u32>,
    live_bytes: &'a mut u64,
    live: &'a mut usize,
}

/// Moves at least `need` bytes of live values to the spill directory, those whose next use in
/// the schedule lies furthest ahead first (stored results, by their first user not yet run, and
/// unread inputs, by their input node); a result already on disk is only dropped. Returns the
/// bytes of inputs moved out of the input map.
#[allow(clippy::too_many_arguments)]
fn evict(
    m: &Module,
    sd: &mut spill::SpillDir,
    ckks: &crate::ckks::Context,
    s: &mut Spilled<'_>,
    done: &[bool],
    priority: &[(u32, u32)],
    input_node: &HashMap<(String, u32), ValueId>,
    inputs: &Mutex<HashMap<(String, u32), Ciphertext>>,
    input_spilled: &mut HashMap<ValueId, (String, u32)>,
    input_files: &mut HashSet<ValueId>,
    need: u64,
) -> Result<u64, ExecError> {
    let next_use = |v: ValueId| {
        m.users(v)
            .iter()
            .filter(|u| !done.get(u.0 as usize).copied().unwrap_or(true))
            .filter_map(|u| priority.get(u.0 as usize).map(|p| p.0))
            .min()
            .unwrap_or(u32::MAX)
    };
    let mut map = inputs
        .lock()
        .map_err(|_| ExecError::Invalid("the input map was poisoned".into()))?;
    // (next use, is an input, node, bytes)
    let mut cands: Vec<(u32, bool, ValueId, u64)> = s
        .resident
        .iter()
        .filter_map(|&i| {
            let val = s.store.get(i as usize)?.as_ref()?;
            Some((next_use(ValueId(i)), false, ValueId(i), val.bytes()))
        })
        .collect();
    // The key of each input candidate, so a chosen one leaves the map without a search.
    let mut input_keys: HashMap<ValueId, (String, u32)> = HashMap::new();
    for (key, ct) in map.iter() {
        if let Some(&v) = input_node.get(key) {
            cands.push((next_use(v), true, v, ct_bytes(ct)));
            input_keys.insert(v, key.clone());
        }
    }
    cands.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.2.cmp(&b.2)));
    let mut chosen = 0u64;
    let picked: Vec<(bool, ValueId)> = cands
        .into_iter()
        .take_while(|c| {
            let more = chosen < need;
            chosen += c.3;
            more
        })
        .map(|c| (c.1, c.2))
        .collect();
    // Inputs leave the map first, so every write below borrows only.
    let mut moved_inputs: Vec<(ValueId, (String, u32), Value)> = Vec::new();
    for &(is_input, v) in &picked {
        if !is_input {
            continue;
        }
        if let Some(key) = input_keys.remove(&v) {
            if let Some(ct) = map.remove(&key) {
                moved_inputs.push((v, key, Value::Ct(ct)));
            }
        }
    }
    drop(map);
    let store = &*s.store;
    let on_disk = &*s.on_disk;
    let sd_ref = &*sd;
    let writes: Vec<Result<(PathBuf, u64), ExecError>> = picked
        .par_iter()
        .filter(|(is_input, v)| !is_input && !on_disk[v.0 as usize])
        .filter_map(|&(_, v)| {
            let val = store[v.0 as usize].as_ref()?;
            Some(sd_ref.write(ckks, &spill::value_file(v), val))
        })
        .chain(
            moved_inputs
                .par_iter()
                .filter(|(v, _, _)| !input_files.contains(v))
                .map(|(v, _, val)| sd_ref.write(ckks, &spill::file_name('i', v.0), val)),
        )
        .collect();
    for w in writes {
        let (path, bytes) = w?;
        sd.wrote(path, bytes);
    }
    let mut freed_inputs = 0u64;
    for (v, key, val) in moved_inputs {
        freed_inputs += val.bytes();
        input_spilled.insert(v, key);
        input_files.insert(v);
    }
    for (is_input, v) in picked {
        if is_input {
            continue;
        }
        let i = v.0 as usize;
        s.on_disk[i] = true;
        if let Some(val) = s.store[i].take() {
            s.resident.remove(&v.0);
            *s.live_bytes = s.live_bytes.saturating_sub(val.bytes());
            if val.ct().is_some() {
                *s.live = s.live.saturating_sub(1);
            }
        }
    }
    Ok(freed_inputs)
}

/// Writes a checkpoint: every stored result not yet on disk, the outputs not yet in files, and
/// the manifest of the nodes done and the results alive.
#[allow(clippy::too_many_arguments)]
fn checkpoint(
    m: &Module,
    sd: &mut spill::SpillDir,
    ckks: &crate::ckks::Context,
    run_id: &str,
    store: &[Option<Value>],
    on_disk: &mut [bool],
    done: &[bool],
    remaining: &[usize],
    outputs: &[OutputCt],
) -> Result<(), ExecError> {
    let sd_ref = &*sd;
    let disk = &*on_disk;
    let writes: Vec<Result<(usize, PathBuf, u64), ExecError>> = store
        .par_iter()
        .enumerate()
        .filter(|(i, v)| v.is_some() && !disk[*i])
        .filter_map(|(i, v)| {
            let val = v.as_ref()?;
            Some(
                sd_ref
                    .write(ckks, &spill::file_name('v', i as u32), val)
                    .map(|(p, b)| (i, p, b)),
            )
        })
        .chain(
            outputs
                .par_iter()
                .enumerate()
                .skip(sd_ref.outputs_saved)
                .map(|(k, o)| {
                    sd_ref
                        .write_ct(ckks, &spill::file_name('o', k as u32), &o.ct)
                        .map(|(p, b)| (usize::MAX, p, b))
                }),
        )
        .collect();
    for w in writes {
        let (i, path, bytes) = w?;
        if i != usize::MAX {
            on_disk[i] = true;
        }
        sd.wrote(path, bytes);
    }
    sd.outputs_saved = outputs.len();
    let mut values = Vec::new();
    for v in m.ids() {
        let i = v.0 as usize;
        if done[i] && remaining[i] > 0 {
            if !on_disk[i] {
                return Err(ExecError::Invalid(format!(
                    "checkpoint: node {v} is alive but neither stored nor on disk"
                )));
            }
            values.push(v.0);
        }
    }
    let manifest = spill::Manifest {
        run_id: run_id.to_string(),
        nodes: done.len(),
        done: done.to_vec(),
        values,
        outputs: outputs.iter().map(|o| (o.name.clone(), o.index)).collect(),
    };
    sd.commit(&manifest)
}

enum HeNodeRef {
    Output(String, u32),
}

fn output_of(m: &Module, op: &Op) -> Option<HeNodeRef> {
    match op {
        Op::Output { name, index } => Some(HeNodeRef::Output(
            m.name(*name).unwrap_or("").to_string(),
            *index,
        )),
        _ => None,
    }
}
