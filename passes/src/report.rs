//! Reports: per-layer and total operation counts, levels, depth, ciphertexts, memory, keys and
//! estimated time of a managed circuit. Plain data (serde), printed by the CLI.

use crate::he::{Managed, RescalePolicy};
use crate::layout::PackingLayout;
use crate::lower::Lowered;
use crate::params::ParamChoice;
use hecc_ir::he::{Module, Op, ValueId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Operation counts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OpCounts {
    /// Ciphertext-ciphertext products (mul, square).
    pub ct_mults: u64,
    /// Ciphertext-plaintext products.
    pub pt_mults: u64,
    /// Ciphertext-scalar products (each multiply-accumulate term counts one).
    pub scalar_mults: u64,
    /// Additions and subtractions (of ciphertexts, plaintexts or constants).
    pub additions: u64,
    /// Relinearizations.
    pub relins: u64,
    /// Rescales.
    pub rescales: u64,
    /// Level drops.
    pub drops: u64,
    /// Rotations (and conjugations).
    pub rotations: u64,
    /// Distinct rotation steps.
    pub rotation_steps: BTreeSet<i32>,
    /// Bootstraps.
    #[serde(default)]
    pub bootstraps: u64,
}

impl OpCounts {
    fn add_node(&mut self, m: &Module, v: ValueId) {
        let Some(n) = m.node(v) else { return };
        match &n.op {
            Op::Input { .. } | Op::Encode { .. } | Op::Output { .. } | Op::Negate => {}
            Op::Add | Op::Sub | Op::AddPlain | Op::SubPlain | Op::AddScalar { .. } => {
                self.additions += 1
            }
            Op::Mul | Op::Square => self.ct_mults += 1,
            Op::MulPlain => self.pt_mults += 1,
            Op::MulScalar { .. } | Op::MulInteger { .. } => self.scalar_mults += 1,
            Op::Mac(a) => {
                self.scalar_mults += a.coeffs.len() as u64;
                self.additions +=
                    a.coeffs.len().saturating_sub(1) as u64 + u64::from(a.bias.is_some());
            }
            Op::Relinearize => self.relins += 1,
            Op::Rescale => self.rescales += 1,
            Op::DropLevel { .. } => self.drops += 1,
            Op::Rotate { steps } => {
                self.rotations += 1;
                self.rotation_steps.insert(*steps);
            }
            Op::Conjugate => self.rotations += 1,
            Op::Bootstrap => self.bootstraps += 1,
        }
    }

    fn merge(&mut self, o: &OpCounts) {
        self.ct_mults += o.ct_mults;
        self.pt_mults += o.pt_mults;
        self.scalar_mults += o.scalar_mults;
        self.additions += o.additions;
        self.relins += o.relins;
        self.rescales += o.rescales;
        self.drops += o.drops;
        self.rotations += o.rotations;
        self.bootstraps += o.bootstraps;
        self.rotation_steps.extend(o.rotation_steps.iter().copied());
    }
}

/// One tensor layer in the report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerReport {
    /// Node name.
    pub name: String,
    /// Op mnemonic.
    pub op: String,
    /// Output shape per image.
    pub shape: Vec<usize>,
    /// Highest level among the values the layer reads (None for inputs).
    pub level_in: Option<u32>,
    /// Lowest level of the values the layer produces.
    pub level_out: Option<u32>,
    /// Levels consumed by the layer.
    pub depth: u32,
    /// Operation counts.
    pub ops: OpCounts,
    /// Ciphertexts the layer leaves for its consumers.
    pub ciphertexts: u64,
    /// Their size in bytes.
    pub bytes: u64,
    /// Estimated time from the cost table, in seconds.
    pub est_seconds: Option<f64>,
}

/// Key material sizes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyReport {
    /// Public key bytes.
    pub public_key: u64,
    /// Relinearization key bytes.
    pub relin_key: u64,
    /// Rotation steps needing a Galois key.
    pub rotation_steps: Vec<i32>,
    /// The highest level the circuit rotates at, per step ([`rotation_levels`]): each Galois
    /// key covers the chain up to there only (empty in plans that predate such keys, whose
    /// keys span the whole chain).
    #[serde(default)]
    pub rotation_levels: BTreeMap<i32, u32>,
    /// Bytes of all Galois keys.
    pub galois_keys: u64,
    /// One key per step versus power-of-two keys with composed rotations.
    #[serde(default)]
    pub rotation_tradeoff: Option<crate::rotations::RotationTradeoff>,
    /// The keys bootstrapping adds (filled in by the driver, which knows the bootstrapping
    /// circuit), for a plan that bootstraps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<BootstrapKeyReport>,
}

/// The keys a bootstrapped plan adds to the circuit's: Galois keys of the bootstrap's
/// rotations (beyond the circuit's own steps) and conjugation, and the two encapsulation keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BootstrapKeyReport {
    /// Rotation steps of the bootstrap that the circuit does not use itself.
    pub extra_rotation_steps: Vec<i64>,
    /// Bytes of their Galois keys and of the conjugation key.
    pub galois_keys: u64,
    /// Bytes of the encapsulation (sparse-secret) keys.
    pub encapsulation_keys: u64,
    /// Key switches of one bootstrap (hoisted baby-step rotations counted apart).
    pub key_switches: u64,
    /// Hoisted baby-step rotations of one bootstrap.
    pub hoisted_rotations: u64,
}

impl KeyReport {
    /// Bytes the keys take in a process that holds them all (`infer`, or a server with the
    /// public key): the fields above are file sizes, where a key-switching key stores only
    /// its second polynomial per digit and a seed for the uniform first one, which memory
    /// holds expanded.
    pub fn resident_bytes(&self) -> u64 {
        let boot = self
            .bootstrap
            .as_ref()
            .map_or(0, |b| 2 * (b.galois_keys + b.encapsulation_keys));
        self.public_key + 2 * (self.relin_key + self.galois_keys) + boot
    }
}

/// The highest level each rotation step of `m` is applied at: the level its Galois key must
/// serve (a key made for level `l` switches ciphertexts at `l` and below only).
pub fn rotation_levels(m: &Module) -> BTreeMap<i32, u32> {
    let mut out: BTreeMap<i32, u32> = BTreeMap::new();
    for v in m.ids() {
        if let (Some(Op::Rotate { steps }), Some(t)) = (m.node(v).map(|n| &n.op), m.ty(v)) {
            let l = out.entry(*steps).or_insert(0);
            *l = (*l).max(t.level().0);
        }
    }
    out
}

/// File bytes of one key-switching key of `params` made for ciphertexts up to `level`: one
/// polynomial per digit of that level over its primes and the special primes (the uniform
/// halves are stored as seeds; memory holds twice this).
pub fn ksk_file_bytes(params: &ParamChoice, level: u32) -> u64 {
    let primes = params.scale_bits.len() as u64 + 1;
    let dnum = u64::from(params.dnum.max(1));
    let digit = primes.div_ceil(dnum).max(1);
    let limbs = (u64::from(level) + 1).min(primes);
    limbs.div_ceil(digit) * (limbs + params.special_bits.len() as u64) * (1u64 << params.log_n) * 8
}

/// The whole report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// Model name.
    pub model: String,
    /// Packing layout.
    pub layout: PackingLayout,
    /// Images per run.
    pub batch: u32,
    /// Rescale policy.
    pub rescale_policy: RescalePolicy,
    /// Activation policy.
    pub activation: crate::approx::ActivationSpec,
    /// Parameters.
    pub params: ParamChoice,
    /// Levels consumed end to end.
    pub depth: u32,
    /// Per layer.
    pub layers: Vec<LayerReport>,
    /// Totals.
    pub totals: OpCounts,
    /// HE nodes in the plan.
    pub nodes: u64,
    /// Keys.
    pub keys: KeyReport,
    /// Peak bytes of live ciphertexts in the plan's schedule.
    pub peak_ciphertext_bytes: u64,
    /// Peak number of live ciphertexts.
    pub peak_ciphertexts: u64,
    /// Estimated total time (s) from the cost table, if one was given.
    pub est_seconds: Option<f64>,
    /// Where the cost table came from.
    pub cost_table: Option<String>,
    /// The memory schedule chosen, with its peak against plain topological order.
    #[serde(default)]
    pub schedule: Option<crate::schedule::ScheduleSummary>,
    /// Depth with and without fusion.
    #[serde(default)]
    pub fusion: Option<FusionSummary>,
    /// The input range `B` of every activation, when ranges were calibrated (`--calibrate`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub activation_ranges: Vec<crate::ranges::ActivationRange>,
    /// Where the bootstraps went (planned against greedy), for a plan that bootstraps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_placement: Option<crate::he::Placement>,
    /// Estimated seconds of the bootstraps alone (part of [`Self::est_seconds`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub est_bootstrap_seconds: Option<f64>,
}

/// What fusion saves: the depth (levels consumed end to end) of the same model compiled with
/// and without the fusion passes and lazy affine folding, both measured by the same management
/// without parameters (the top level then equals the depth).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FusionSummary {
    /// The optional passes that ran (empty with `--no-fuse`).
    pub passes: Vec<String>,
    /// Depth of the compiled circuit.
    pub depth: u32,
    /// Depth with no tensor fusion and every pending affine factor materialised.
    pub depth_unfused: u32,
}

/// Measured costs of the backend's primitives (written by `hecc calibrate`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CostTable {
    /// Description of the machine and run.
    pub source: String,
    /// Entries: `(log_n, op, microseconds per limb)`.
    pub entries: Vec<CostEntry>,
}

/// One measured primitive.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CostEntry {
    /// log2 N.
    pub log_n: u32,
    /// Primitive: `mul`, `relin`, `rescale`, `rotate`, `add`, `scalar_mul`, `mul_plain`.
    pub op: String,
    /// Microseconds per limb (cost grows linearly with the level).
    pub us_per_limb: f64,
}

impl CostTable {
    fn per_limb(&self, log_n: u32, op: &str) -> Option<f64> {
        self.entries
            .iter()
            .find(|e| e.log_n == log_n && e.op == op)
            .map(|e| e.us_per_limb)
    }

    /// Estimated seconds for node `v` of `m`, or `None` when an op is missing from the table.
    fn seconds(&self, log_n: u32, m: &Module, v: ValueId) -> Option<f64> {
        let n = m.node(v)?;
        let limbs = f64::from(
            m.operands(v)
                .first()
                .and_then(|&o| m.ty(o))
                .map_or(n.ty.level().0, |t| t.level().0)
                + 1,
        );
        let c = |op: &str| self.per_limb(log_n, op).map(|u| u * limbs * 1e-6);
        Some(match &n.op {
            Op::Input { .. } | Op::Encode { .. } | Op::Output { .. } | Op::DropLevel { .. } => 0.0,
            Op::Add | Op::Sub | Op::AddPlain | Op::SubPlain | Op::AddScalar { .. } | Op::Negate => {
                c("add")?
            }
            Op::Mul | Op::Square => c("mul")?,
            Op::MulPlain => c("mul_plain")?,
            Op::MulScalar { .. } | Op::MulInteger { .. } => c("scalar_mul")?,
            Op::Mac(a) => c("mac_term")? * a.coeffs.len() as f64,
            Op::Relinearize => c("relin")?,
            Op::Rescale => c("rescale")?,
            Op::Rotate { .. } | Op::Conjugate => c("rotate")?,
            // A whole bootstrap (`us_per_limb` is per bootstrap); without a measurement, the
            // key switches of one bootstrap at the full chain, priced as rotations.
            Op::Bootstrap => match self.per_limb(log_n, "bootstrap") {
                Some(us) => us * 1e-6,
                None => {
                    let chain = m.params.as_ref().map_or(30.0, |p| p.primes.len() as f64);
                    self.per_limb(log_n, "rotate")? * 1e-6 * chain * BOOTSTRAP_KEY_SWITCHES
                }
            },
        })
    }
}

/// Key switches of one bootstrap at the default configuration (about 2 x 44 in the DFTs, 2 x 12
/// in the modular reduction, SubSum and encapsulation), for estimates without a measured
/// bootstrap time.
const BOOTSTRAP_KEY_SWITCHES: f64 = 120.0;

/// What a report says about the compile that made it.
#[derive(Clone, Copy, Debug)]
pub struct ReportMeta<'a> {
    /// Model name.
    pub model: &'a str,
    /// Packing layout.
    pub layout: PackingLayout,
    /// Rescale policy.
    pub rescale_policy: RescalePolicy,
}

/// Builds the report of a lowered and managed circuit.
pub fn build(
    lowered: &Lowered,
    managed: &Managed,
    params: &ParamChoice,
    meta: ReportMeta<'_>,
    costs: Option<&CostTable>,
) -> Report {
    let m = &managed.module;
    let log_n = params.log_n;
    let mut layers: Vec<LayerReport> = lowered
        .layers
        .iter()
        .map(|l| LayerReport {
            name: l.name.clone(),
            op: l.op.clone(),
            shape: l.shape.clone(),
            level_in: None,
            level_out: None,
            depth: 0,
            ops: OpCounts::default(),
            ciphertexts: 0,
            bytes: 0,
            est_seconds: costs.map(|_| 0.0),
        })
        .collect();
    // Rescales and relinearizations belong to the layer of the value they act on, wherever the
    // policy placed them.
    let mut attributed: HashMap<ValueId, Option<usize>> = HashMap::new();
    if let Ok(order) = petgraph::algo::toposort(m.graph(), None) {
        for ix in order {
            let v = ValueId::from_node(ix);
            let own = managed.origin_of(v).and_then(|o| lowered.layer_of(o));
            let l = match m.node(v).map(|n| &n.op) {
                Some(Op::Rescale | Op::Relinearize) => m
                    .operands(v)
                    .first()
                    .and_then(|o| attributed.get(o).copied().flatten())
                    .or(own),
                _ => own,
            };
            attributed.insert(v, l);
        }
    }
    let layer_of = |v: ValueId| attributed.get(&v).copied().flatten();
    let mut totals = OpCounts::default();
    let mut est_total = costs.map(|_| 0.0);
    let mut est_boot = costs.map(|_| 0.0);
    for v in m.ids() {
        let Some(li) = layer_of(v) else { continue };
        let Some(ty) = m.ty(v) else { continue };
        let l = &mut layers[li];
        l.ops.add_node(m, v);
        let lvl = ty.level().0;
        l.level_out = Some(l.level_out.map_or(lvl, |x| x.min(lvl)));
        for o in m.operands(v) {
            if layer_of(o) != Some(li) {
                if let Some(t) = m.ty(o) {
                    l.level_in = Some(l.level_in.map_or(t.level().0, |x| x.max(t.level().0)));
                }
            }
        }
        // Values read by another layer (or outputs) are what the layer leaves alive.
        let users = m.users(v);
        if users.iter().any(|&u| layer_of(u) != Some(li))
            || matches!(m.node(v).map(|n| &n.op), Some(Op::Output { .. }))
        {
            l.ciphertexts += 1;
            l.bytes += ty.bytes(log_n);
        }
        if let (Some(t), Some(c)) = (costs, l.est_seconds.as_mut()) {
            match t.seconds(log_n, m, v) {
                Some(s) => {
                    *c += s;
                    if matches!(m.node(v).map(|n| &n.op), Some(Op::Bootstrap)) {
                        est_boot = est_boot.map(|b| b + s);
                    }
                }
                None => l.est_seconds = None,
            }
        }
    }
    for l in &mut layers {
        l.depth = match (l.level_in, l.level_out) {
            (Some(i), Some(o)) => i.saturating_sub(o),
            _ => 0,
        };
        totals.merge(&l.ops);
        est_total = match (est_total, l.est_seconds) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
    }
    let top = m
        .ids()
        .filter_map(|v| m.ty(v))
        .map(|t| t.level().0)
        .max()
        .unwrap_or(0);
    let bottom = m
        .ids()
        .filter_map(|v| m.ty(v))
        .map(|t| t.level().0)
        .min()
        .unwrap_or(0);
    // Keys span the whole chain: with bootstrapping, the bootstrap's primes above the circuit's.
    let chain_top = if params.bootstrap.is_some() {
        params.scale_bits.len() as u32
    } else {
        top
    };
    let n = 1u64 << log_n;
    // Key-switching keys: dnum pairs of polynomials over QP; the uniform halves are seeded.
    let ksk = ksk_file_bytes(params, chain_top);
    let steps: Vec<i32> = totals.rotation_steps.iter().copied().collect();
    let rotation_levels = rotation_levels(m);
    let galois_keys = steps
        .iter()
        .map(|s| ksk_file_bytes(params, rotation_levels.get(s).copied().unwrap_or(chain_top)))
        .sum();
    let (peak_ciphertexts, peak_ciphertext_bytes) = peak_live(m, log_n);
    Report {
        model: meta.model.into(),
        layout: meta.layout,
        batch: m.meta.batch,
        rescale_policy: meta.rescale_policy,
        activation: Default::default(),
        params: params.clone(),
        depth: top - bottom,
        layers,
        totals,
        nodes: m.len() as u64,
        keys: KeyReport {
            public_key: 2 * n * u64::from(chain_top + 1) * 8,
            relin_key: ksk,
            galois_keys,
            rotation_tradeoff: Some(crate::rotations::tradeoff(m, (n / 2) as u32, ksk)),
            rotation_steps: steps,
            rotation_levels,
            bootstrap: None,
        },
        peak_ciphertexts,
        peak_ciphertext_bytes,
        est_seconds: est_total,
        cost_table: costs.map(|c| c.source.clone()),
        schedule: None,
        fusion: None,
        activation_ranges: Vec::new(),
        bootstrap_placement: managed.placement.clone(),
        est_bootstrap_seconds: est_boot.filter(|_| est_total.is_some() && m.boot.is_some()),
    }
}

/// Peak number and bytes of live ciphertexts when the module runs in topological order
/// (values freed after their last use).
pub fn peak_live(m: &Module, log_n: u32) -> (u64, u64) {
    let Ok(order) = petgraph::algo::toposort(m.graph(), None) else {
        return (0, 0);
    };
    let mut remaining: HashMap<ValueId, usize> = HashMap::new();
    let (mut live, mut bytes, mut peak, mut peak_bytes) = (0u64, 0u64, 0u64, 0u64);
    // Every input ciphertext arrives before the run: alive from the start.
    let is_input = |v: ValueId| matches!(m.node(v).map(|n| &n.op), Some(Op::Input { .. }));
    for (v, _, _) in m.inputs() {
        let users = m.users(v).len();
        if let (Some(ty), true) = (m.ty(v), users > 0) {
            remaining.insert(v, users);
            live += 1;
            bytes += ty.bytes(log_n);
        }
    }
    for ix in order {
        let v = ValueId::from_node(ix);
        let Some(ty) = m.ty(v) else { continue };
        let b = ty.bytes(log_n);
        let users = m.users(v).len();
        if users > 0 && !is_input(v) {
            remaining.insert(v, users);
            live += 1;
            bytes += b;
        }
        peak = peak.max(live);
        peak_bytes = peak_bytes.max(bytes);
        for o in m.operands(v) {
            if let Some(r) = remaining.get_mut(&o) {
                *r -= 1;
                if *r == 0 {
                    remaining.remove(&o);
                    live -= 1;
                    if let Some(t) = m.ty(o) {
                        bytes -= t.bytes(log_n);
                    }
                }
            }
        }
    }
    (peak, peak_bytes)
}
