//! A plan opened for running: its CKKS context, circuit and checks (security, limits).

use super::*;

/// A plan ready to run: the parsed circuit and the backend context of its primes.
pub struct Session {
    /// The plan (its circuit is the managed circuit the session runs).
    pub plan: Plan,
    /// The backend context.
    pub ctx: Arc<Context>,
    /// The plan's digest ([`Plan::digest`]; binds key and ciphertext files to this plan).
    pub digest: [u8; 32],
    /// Whether the plan's parameters are below 128-bit security (accepted only when asked).
    pub insecure: bool,
    /// The bootstrapper of a plan that bootstraps, built on first use (its DFT matrices
    /// take time and memory that encryption and decryption do not need).
    bootstrapper: std::sync::OnceLock<Bootstrapper>,
}

/// Largest per-image element count of a plan input (64 Mi values).
pub const MAX_INPUT_ELEMENTS: usize = 1 << 26;

/// The bootstrapping configuration of a plan's bootstrap parameters `b` (scales from the
/// plan's chain).
pub fn bootstrap_config(
    params: &hecc_passes::params::ParamChoice,
    b: &hecc_passes::params::BootParams,
) -> BootstrapConfig {
    let scale = f64::from(params.scale_bits.first().copied().unwrap_or(40)).exp2();
    let mut cfg = BootstrapConfig::new(b.slots as usize);
    cfg.input_scale = scale;
    cfg.output_scale = scale;
    cfg.message_bound = b.message_bound;
    // The message enters the modular reduction as far below q0 as a bound of 1 would.
    cfg.message_ratio_bits += b.message_bound.log2().max(0.0);
    cfg
}

impl Session {
    /// The managed circuit.
    pub fn module(&self) -> &Module {
        &self.plan.circuit
    }

    /// Prepares a plan: parses its circuit and rebuilds its CKKS parameters, checking that the
    /// backend generates exactly the plan's primes and that they meet 128-bit security.
    pub fn new(plan: Plan) -> Result<Session> {
        Session::with_security(plan, false)
    }

    /// [`Session::new`], accepting parameters below 128-bit security when `insecure_ok`
    /// (then [`Session::insecure`] says whether they are).
    pub fn with_security(plan: Plan, insecure_ok: bool) -> Result<Session> {
        let digest = plan.digest()?;
        Session::with_digest(plan, digest, insecure_ok)
    }

    /// [`Session::with_security`] for a plan whose digest is known (checked when it was read).
    fn with_digest(plan: Plan, digest: [u8; 32], insecure_ok: bool) -> Result<Session> {
        let insecure = check_plan_security(&plan, insecure_ok)?;
        check_plan_limits(&plan)?;
        let params: CkksParameters = backend_params(&plan.params, insecure)?;
        if params.q() != plan.primes.as_slice() || params.p() != plan.special_primes.as_slice() {
            return Err(miette!(
                "the backend generates other primes than the plan's for these parameters; recompile the plan"
            ));
        }
        if plan.circuit.params.as_ref().map(|p| &p.primes) != Some(&plan.primes) {
            return Err(miette!(
                "the plan's circuit was compiled for other primes than its parameters'; recompile the plan"
            ));
        }
        let circuit_slots = plan.circuit.boot.as_ref().map(|b| b.slots);
        let plan_slots = plan.params.bootstrap.as_ref().map(|b| b.slots);
        if circuit_slots != plan_slots {
            return Err(miette!(
                "the plan's circuit bootstraps {circuit_slots:?} slots and its parameters {plan_slots:?}; recompile the plan"
            ));
        }
        let ctx = Context::new(params).into_diagnostic()?;
        Ok(Session {
            plan,
            ctx,
            digest,
            insecure,
            bootstrapper: std::sync::OnceLock::new(),
        })
    }

    /// The bootstrapper of a plan that bootstraps (`None` for a leveled plan), built once.
    pub fn bootstrapper(&self) -> Result<Option<&Bootstrapper>> {
        let Some(b) = &self.plan.params.bootstrap else {
            return Ok(None);
        };
        if let Some(bt) = self.bootstrapper.get() {
            return Ok(Some(bt));
        }
        let cfg = bootstrap_config(&self.plan.params, b);
        if (cfg.cts_levels, cfg.eval_mod_depth(), cfg.stc_levels)
            != (
                b.cts_levels as usize,
                b.eval_mod_levels as usize,
                b.stc_levels as usize,
            )
        {
            return Err(miette!(
                "the plan's bootstrap levels ({}, {}, {}) are not this runtime's ({}, {}, {}); recompile the plan",
                b.cts_levels,
                b.eval_mod_levels,
                b.stc_levels,
                cfg.cts_levels,
                cfg.eval_mod_depth(),
                cfg.stc_levels
            ));
        }
        let bt = Bootstrapper::new(&self.ctx, cfg).into_diagnostic()?;
        if bt.output_level() != b.network_levels as usize {
            return Err(miette!(
                "the bootstrapper returns level {}, the plan expects {}; recompile the plan",
                bt.output_level(),
                b.network_levels
            ));
        }
        Ok(Some(self.bootstrapper.get_or_init(|| bt)))
    }

    /// Reads a plan file and prepares it ([`Session::with_security`]).
    pub fn open_with_security(path: &Path, insecure_ok: bool) -> Result<Session> {
        let (plan, digest) = crate::compile::read_plan_with_digest(path)?;
        Session::with_digest(plan, digest, insecure_ok)
    }

    /// Reads a plan file and prepares it ([`Session::new`]).
    pub fn open(path: &Path) -> Result<Session> {
        Session::open_with_security(path, false)
    }

    pub(crate) fn container(
        &self,
        kind: FileKind,
        key_id: KeyId,
        sections: Vec<Vec<u8>>,
    ) -> Container {
        Container {
            kind,
            fingerprint: *self.ctx.fingerprint(),
            plan_digest: self.digest,
            key_id,
            sections,
        }
    }

    /// The header of a container of `kind` for this session's parameters and plan.
    pub(crate) fn container_header(&self, kind: FileKind, key_id: KeyId) -> ContainerHeader {
        ContainerHeader {
            kind,
            fingerprint: *self.ctx.fingerprint(),
            plan_digest: self.digest,
            key_id,
        }
    }

    /// The model input (plans of one input only).
    pub fn input(&self) -> Result<&PlanTensor> {
        match self.plan.inputs.as_slice() {
            [i] => Ok(i),
            other => Err(miette!(
                "plans with {} inputs are not supported",
                other.len()
            )),
        }
    }

    /// The plan's memory-aware evaluation order, when it has one.
    pub fn schedule(&self) -> Option<Vec<u32>> {
        (!self.plan.schedule.is_empty()).then(|| self.plan.schedule.clone())
    }

    /// Run stages named after the plan's layers: the stage computing at level `l` is named
    /// after the layers whose inputs are at level `l`.
    pub fn stages(&self) -> StageMap {
        let mut st = level_stages(self.module());
        for name in st.names.iter_mut() {
            let Some(l) = name
                .strip_prefix("level ")
                .and_then(|l| l.parse::<u32>().ok())
            else {
                continue;
            };
            let layers: Vec<&str> = self
                .plan
                .report
                .layers
                .iter()
                .filter(|x| x.level_in == Some(l))
                .map(|x| x.name.as_str())
                .collect();
            *name = if layers.is_empty() {
                format!("level {l}")
            } else {
                format!("{} (l={l})", layers.join("+"))
            };
        }
        st
    }
}

/// Checks a plan's parameters against the security table, whatever the plan's own
/// `security` field says; returns whether they are below 128-bit (an error unless
/// `insecure_ok`).
fn check_plan_security(plan: &Plan, insecure_ok: bool) -> Result<bool> {
    use hecc_passes::params::{max_log_qp, Security};
    let p = &plan.params;
    let log_qp = log_qp_bits(plan.primes.iter().chain(&plan.special_primes));
    let secure = max_log_qp(p.log_n, Security::Bits128).is_some_and(|b| log_qp <= b);
    let claimed = p.security;
    if claimed != Security::InsecureNone {
        let claimed_ok = max_log_qp(p.log_n, claimed).is_some_and(|b| log_qp <= b);
        if !claimed_ok && !insecure_ok {
            return Err(miette!(
                help = "recompile the model; plans are not meant to be edited",
                "the plan claims {} security, but its parameters (N=2^{}, log2(QP) = {log_qp}) do not meet it{}",
                claimed.name(),
                p.log_n,
                max_log_qp(p.log_n, claimed)
                    .map(|b| format!(" (the bound is {b})"))
                    .unwrap_or_else(|| " (the ring is outside the security table)".into())
            ));
        }
    }
    if !secure && !insecure_ok {
        return Err(miette!(
            help = "pass --insecure to use it anyway (for tests only)",
            "the plan's parameters (N=2^{}, log2(QP) = {log_qp}) are below 128-bit security",
            p.log_n
        ));
    }
    Ok(!secure)
}

/// `log2(QP)` as the security table counts it: the sum of the primes' bit lengths.
fn log_qp_bits<'a>(primes: impl Iterator<Item = &'a u64>) -> u32 {
    primes.map(|q| u64::BITS - q.leading_zeros()).sum()
}

/// Whether CKKS parameters are below 128-bit security by the HomomorphicEncryption.org table.
pub fn params_insecure(p: &CkksParameters) -> bool {
    let log_qp = log_qp_bits(p.q().iter().chain(p.p()));
    hecc_passes::params::max_log_qp(p.log_n(), hecc_passes::params::Security::Bits128)
        .is_none_or(|b| log_qp > b)
}

/// Limits on the plan fields that size allocations, checked before anything is allocated.
fn check_plan_limits(plan: &Plan) -> Result<()> {
    let p = &plan.params;
    if !(10..=17).contains(&p.log_n) {
        return Err(miette!(
            "plan field `params.log_n` = {}: supported ring degrees are 2^10 to 2^17",
            p.log_n
        ));
    }
    let slots = 1u64 << (p.log_n - 1);
    if plan.batch == 0 || u64::from(plan.batch) > slots {
        return Err(miette!(
            "plan field `batch` = {}: must be 1 to {slots} (the slots of N=2^{})",
            plan.batch,
            p.log_n
        ));
    }
    if plan.rotation_steps.len() as u64 > slots {
        return Err(miette!(
            "plan field `rotation_steps` lists {} steps; at most {slots} exist",
            plan.rotation_steps.len()
        ));
    }
    for t in plan.inputs.iter().chain(&plan.outputs) {
        let n = t
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|&n| n <= MAX_INPUT_ELEMENTS);
        if n.is_none() {
            return Err(miette!(
                "plan tensor `{}` has shape {:?}: more than the limit of {MAX_INPUT_ELEMENTS} values per image",
                t.name,
                t.shape
            ));
        }
        if let Some([lo, hi]) = t.range {
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                return Err(miette!(
                    "plan tensor `{}` has input range [{lo}, {hi}]: not a finite interval",
                    t.name
                ));
            }
            let limit = crate::compile::MAX_INPUT_MAGNITUDE;
            if lo.abs().max(hi.abs()) > limit {
                return Err(miette!(
                    "plan tensor `{}` has input range [{lo}, {hi}]: beyond the limit of ±{limit}",
                    t.name
                ));
            }
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ keys

/// Identity of a key set: a SHA-256 of all its serialized evaluation keys (public,
/// relinearization and Galois keys), so that no evaluation key can be replaced or edited without
/// changing it. Evaluation keys, secret keys, ciphertexts and results carry it; every mismatch
/// is a [`RunError::KeyMismatch`].
pub type KeyId = [u8; 32];
