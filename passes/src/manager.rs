//! The pass manager: runs a named list of passes over the tensor graph and the HE module.
//!
//! Contract:
//!
//! * Every pass is declared once in [`ALL_PASSES`] (kebab-case name, stage, summary, whether it
//!   is required for soundness). That list backs `--passes`, `--dump-after` and
//!   `--time-passes`; [`Pipeline::parse`] rejects unknown names and tensor passes listed after
//!   HE passes (the lowering between the two stages is a phase change, not a pass).
//! * A pass is a small object ([`TensorPass`] or [`HePass`]) with `name()`, `is_required()` and
//!   `run(ir, cx) -> Result<Changed, PassError>`. The manager does the cross-cutting work: it
//!   skips optional passes when optimisation is off, records the IR text after the passes named
//!   in [`ManagerOptions::dump_after`], times every pass when asked, and (always in debug
//!   builds, or when [`ManagerOptions::verify`] is set) verifies the IR after each pass,
//!   turning a verifier failure into a [`PassError::Verify`] naming the pass.
//! * Nothing here prints: dumps and timings are returned in [`PassLog`] for the CLI.

use crate::he::{cse, dce, manage_traced, ManageError, RescalePolicy};
use crate::tensor::{FoldBatchNorm, FuseActivationBatchNorm};
use hecc_ir::he::{verify as he_verify, Module, Params, ValueId, VerifyOptions};
use hecc_ir::tensor::{verify as tensor_verify, Graph};
use std::time::Instant;

/// Whether a pass changed the IR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Changed {
    /// The IR is unchanged.
    No,
    /// The IR was modified.
    Yes,
}

impl Changed {
    /// `Yes` when `b`.
    pub fn from_bool(b: bool) -> Changed {
        if b {
            Changed::Yes
        } else {
            Changed::No
        }
    }
}

/// Why a pass (or the pipeline) failed.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum PassError {
    /// A pass name that is not in [`ALL_PASSES`].
    #[error("unknown pass `{name}` (known passes: {known})")]
    #[diagnostic(code(hecc::passes::unknown))]
    Unknown {
        /// The name given.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
    /// A tensor pass listed after an HE pass.
    #[error("pass `{tensor}` runs on the tensor graph but is listed after the HE pass `{he}`")]
    #[diagnostic(
        code(hecc::passes::order),
        help("list the tensor passes first: the lowering separates the two stages")
    )]
    Order {
        /// The tensor pass.
        tensor: String,
        /// The HE pass before it.
        he: String,
    },
    /// The IR does not verify after a pass.
    #[error("the IR does not verify after pass `{pass}`: {detail}")]
    #[diagnostic(code(hecc::passes::verify))]
    Verify {
        /// The pass that ran last.
        pass: &'static str,
        /// The verifier's findings.
        detail: String,
    },
    /// A checker pass found a violated invariant.
    #[error("pass `{pass}` failed: {detail}")]
    #[diagnostic(code(hecc::passes::check))]
    Check {
        /// The checker.
        pass: &'static str,
        /// The findings.
        detail: String,
    },
    /// The rescale pass failed.
    #[error("pass `{pass}`: {error}")]
    #[diagnostic(code(hecc::passes::manage))]
    Manage {
        /// The pass.
        pass: &'static str,
        /// The management error.
        error: ManageError,
    },
    /// A tensor transform found an inconsistent graph (a missing weight, a shape mismatch).
    #[error("pass `{pass}` at node `{node}`: {detail}")]
    #[diagnostic(code(hecc::passes::tensor))]
    Tensor {
        /// The pass.
        pass: &'static str,
        /// The node name.
        node: String,
        /// What is wrong.
        detail: String,
    },
}

/// Context shared by the passes of one pipeline run.
#[derive(Debug, Default)]
pub struct PassCx {
    /// Encryption parameters, when chosen (the rescale passes then use the real primes).
    pub params: Option<Params>,
    /// Set by the rescale passes: for every new node, the source node it came from (see
    /// [`crate::he::Managed::origin`]); node removals by later passes keep the ids stable.
    pub origin: Option<Vec<(u32, ValueId)>>,
    /// Set by the rescale passes of a module with bootstrapping: where its bootstraps went.
    pub placement: Option<crate::he::Placement>,
}

/// A pass over the tensor graph.
pub trait TensorPass {
    /// Kebab-case name (as in [`ALL_PASSES`]).
    fn name(&self) -> &'static str;
    /// Whether the pass is needed for correctness (runs even with optimisation off).
    fn is_required(&self) -> bool;
    /// Runs the pass.
    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError>;
}

/// A pass over the HE module.
pub trait HePass {
    /// Kebab-case name (as in [`ALL_PASSES`]).
    fn name(&self) -> &'static str;
    /// Whether the pass is needed for correctness (runs even with optimisation off).
    fn is_required(&self) -> bool;
    /// Runs the pass.
    fn run(&self, m: &mut Module, cx: &mut PassCx) -> Result<Changed, PassError>;
}

/// Which IR a pass works on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The tensor graph (before lowering).
    Tensor,
    /// The HE module (after lowering).
    He,
}

/// A pass object of either stage.
pub enum AnyPass {
    /// A tensor pass.
    Tensor(Box<dyn TensorPass>),
    /// An HE pass.
    He(Box<dyn HePass>),
}

impl AnyPass {
    /// The pass's name.
    pub fn name(&self) -> &'static str {
        match self {
            AnyPass::Tensor(p) => p.name(),
            AnyPass::He(p) => p.name(),
        }
    }

    /// The pass's stage.
    pub fn stage(&self) -> Stage {
        match self {
            AnyPass::Tensor(_) => Stage::Tensor,
            AnyPass::He(_) => Stage::He,
        }
    }

    /// Whether the pass is required.
    pub fn is_required(&self) -> bool {
        match self {
            AnyPass::Tensor(p) => p.is_required(),
            AnyPass::He(p) => p.is_required(),
        }
    }
}

/// The declaration of one pass.
pub struct PassDecl {
    /// Kebab-case name.
    pub name: &'static str,
    /// Stage.
    pub stage: Stage,
    /// One-line summary.
    pub summary: &'static str,
    /// Builds the pass object.
    pub make: fn() -> AnyPass,
}

/// Every pass hecc knows, in a sensible pipeline order.
pub const ALL_PASSES: &[PassDecl] = &[
    PassDecl {
        name: "fold-batch-norm",
        stage: Stage::Tensor,
        summary: "fold a batch-norm that follows conv2d/dense into its weights and bias",
        make: || AnyPass::Tensor(Box::new(FoldBatchNorm)),
    },
    PassDecl {
        name: "fuse-activation-batch-norm",
        stage: Stage::Tensor,
        summary: "fuse a batch-norm that follows a quadratic activation into its coefficients",
        make: || AnyPass::Tensor(Box::new(FuseActivationBatchNorm)),
    },
    PassDecl {
        name: "dce",
        stage: Stage::He,
        summary: "remove HE nodes whose value is never used",
        make: || AnyPass::He(Box::new(Dce)),
    },
    PassDecl {
        name: "cse",
        stage: Stage::He,
        summary: "merge HE nodes computing the same op on the same operands",
        make: || AnyPass::He(Box::new(Cse)),
    },
    PassDecl {
        name: "rescale-always",
        stage: Stage::He,
        summary: "place rescales after every product, then level drops and scale matching",
        make: || AnyPass::He(Box::new(Rescale(RescalePolicy::Always))),
    },
    PassDecl {
        name: "rescale-waterline",
        stage: Stage::He,
        summary: "place rescales lazily at the waterline, then level drops and scale matching",
        make: || AnyPass::He(Box::new(Rescale(RescalePolicy::Waterline))),
    },
    PassDecl {
        name: "check-levels",
        stage: Stage::He,
        summary: "verify that the operands of every multi-operand op share their level",
        make: || AnyPass::He(Box::new(Check::Levels)),
    },
    PassDecl {
        name: "check-scales",
        stage: Stage::He,
        summary: "verify levels and scales strictly (a circuit ready to run)",
        make: || AnyPass::He(Box::new(Check::Scales)),
    },
];

/// The declaration of pass `name`.
pub fn find_pass(name: &str) -> Option<&'static PassDecl> {
    ALL_PASSES.iter().find(|d| d.name == name)
}

fn unknown(name: &str) -> PassError {
    PassError::Unknown {
        name: name.to_string(),
        known: ALL_PASSES
            .iter()
            .map(|d| d.name)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Checks that every name is a known pass.
pub fn check_names<S: AsRef<str>>(names: &[S]) -> Result<(), PassError> {
    for n in names {
        if find_pass(n.as_ref()).is_none() {
            return Err(unknown(n.as_ref()));
        }
    }
    Ok(())
}

/// An ordered list of passes: tensor passes, then HE passes.
pub struct Pipeline {
    /// Tensor passes, in order.
    pub tensor: Vec<AnyPass>,
    /// HE passes, in order.
    pub he: Vec<AnyPass>,
}

impl Pipeline {
    /// Builds the pipeline from pass names (unknown names and misordered stages are errors).
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<Pipeline, PassError> {
        let mut p = Pipeline {
            tensor: Vec::new(),
            he: Vec::new(),
        };
        for n in names {
            let decl = find_pass(n.as_ref()).ok_or_else(|| unknown(n.as_ref()))?;
            let pass = (decl.make)();
            match pass.stage() {
                Stage::Tensor => {
                    if let Some(h) = p.he.first() {
                        return Err(PassError::Order {
                            tensor: decl.name.into(),
                            he: h.name().into(),
                        });
                    }
                    p.tensor.push(pass);
                }
                Stage::He => p.he.push(pass),
            }
        }
        Ok(p)
    }

    /// Parses a comma-separated list (`fold-batch-norm,rescale-waterline`); blanks are ignored.
    pub fn parse(list: &str) -> Result<Pipeline, PassError> {
        let names: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        Pipeline::from_names(&names)
    }

    /// The names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.tensor
            .iter()
            .chain(self.he.iter())
            .map(AnyPass::name)
            .collect()
    }

    /// The default pipeline of `hecc compile` for a rescale policy.
    pub fn default_for(policy: RescalePolicy) -> Pipeline {
        let rescale = match policy {
            RescalePolicy::Always => "rescale-always",
            RescalePolicy::Waterline => "rescale-waterline",
        };
        // All names are declared above; a failure here would be a bug in this list.
        Pipeline::from_names(&[
            "fold-batch-norm",
            "fuse-activation-batch-norm",
            rescale,
            "check-levels",
            "check-scales",
        ])
        .unwrap_or(Pipeline {
            tensor: Vec::new(),
            he: Vec::new(),
        })
    }
}

/// What the manager does besides running the passes.
#[derive(Clone, Debug, Default)]
pub struct ManagerOptions {
    /// Record the IR text after each of these passes (names checked by [`check_names`]).
    pub dump_after: Vec<String>,
    /// Time every pass.
    pub time: bool,
    /// Verify the IR after every pass even in release builds (always on in debug builds).
    pub verify: bool,
    /// Run only the required passes (optimisation off, `--no-fuse`).
    pub required_only: bool,
}

/// The IR text after a pass.
#[derive(Clone, Debug)]
pub struct Dump {
    /// The pass.
    pub pass: &'static str,
    /// The IR in its text form (`.tir` or `.he`).
    pub text: String,
}

/// How long a pass took.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PassTiming {
    /// The pass.
    pub pass: String,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Whether it changed the IR.
    pub changed: Changed,
}

/// What a pipeline run recorded.
#[derive(Clone, Debug, Default)]
pub struct PassLog {
    /// Dumps, in run order.
    pub dumps: Vec<Dump>,
    /// Timings, in run order (empty unless [`ManagerOptions::time`]).
    pub timings: Vec<PassTiming>,
    /// Passes skipped because they are optional and optimisation was off.
    pub skipped: Vec<&'static str>,
}

/// Runs passes with the cross-cutting services (dump, timing, verification).
pub struct PassManager {
    /// Options.
    pub options: ManagerOptions,
}

impl PassManager {
    /// A manager with `options`; fails on unknown names in `dump_after`.
    pub fn new(options: ManagerOptions) -> Result<PassManager, PassError> {
        check_names(&options.dump_after)?;
        Ok(PassManager { options })
    }

    fn verify_now(&self) -> bool {
        cfg!(debug_assertions) || self.options.verify
    }

    fn wants_dump(&self, name: &str) -> bool {
        self.options.dump_after.iter().any(|d| d == name)
    }

    /// Runs the tensor passes of `pipeline` on `g`.
    pub fn run_tensor(
        &self,
        pipeline: &Pipeline,
        g: &mut Graph,
        cx: &mut PassCx,
        log: &mut PassLog,
    ) -> Result<(), PassError> {
        for p in &pipeline.tensor {
            let AnyPass::Tensor(pass) = p else { continue };
            if self.options.required_only && !pass.is_required() {
                log.skipped.push(pass.name());
                continue;
            }
            let t0 = Instant::now();
            let changed = pass.run(g, cx)?;
            let dt = t0.elapsed().as_secs_f64();
            if self.options.time {
                log.timings.push(PassTiming {
                    pass: pass.name().into(),
                    seconds: dt,
                    changed,
                });
            }
            if self.verify_now() {
                tensor_verify(g).map_err(|errs| PassError::Verify {
                    pass: pass.name(),
                    detail: errs
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("; "),
                })?;
            }
            if self.wants_dump(pass.name()) {
                log.dumps.push(Dump {
                    pass: pass.name(),
                    text: hecc_ir::text::print_graph(g),
                });
            }
        }
        Ok(())
    }

    /// Runs the HE passes of `pipeline` on `m`.
    pub fn run_he(
        &self,
        pipeline: &Pipeline,
        m: &mut Module,
        cx: &mut PassCx,
        log: &mut PassLog,
    ) -> Result<(), PassError> {
        for p in &pipeline.he {
            let AnyPass::He(pass) = p else { continue };
            if self.options.required_only && !pass.is_required() {
                log.skipped.push(pass.name());
                continue;
            }
            let t0 = Instant::now();
            let changed = pass.run(m, cx)?;
            let dt = t0.elapsed().as_secs_f64();
            if self.options.time {
                log.timings.push(PassTiming {
                    pass: pass.name().into(),
                    seconds: dt,
                    changed,
                });
            }
            if self.verify_now() {
                he_verify(m, &VerifyOptions::STRUCTURE).map_err(|e| PassError::Verify {
                    pass: pass.name(),
                    detail: describe(&e),
                })?;
            }
            if self.wants_dump(pass.name()) {
                log.dumps.push(Dump {
                    pass: pass.name(),
                    text: m.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// The verifier's summary followed by each finding (at most 20).
fn describe(e: &hecc_ir::he::VerifyErrors) -> String {
    let mut s = e.to_string();
    for x in e.errors.iter().take(20) {
        s.push_str("; ");
        s.push_str(&x.to_string());
    }
    if e.errors.len() > 20 {
        s.push_str(&format!("; and {} more", e.errors.len() - 20));
    }
    s
}

/// `dce` as a pass.
struct Dce;

impl HePass for Dce {
    fn name(&self) -> &'static str {
        "dce"
    }
    fn is_required(&self) -> bool {
        false
    }
    fn run(&self, m: &mut Module, _cx: &mut PassCx) -> Result<Changed, PassError> {
        Ok(Changed::from_bool(dce(m) > 0))
    }
}

/// `cse` as a pass.
struct Cse;

impl HePass for Cse {
    fn name(&self) -> &'static str {
        "cse"
    }
    fn is_required(&self) -> bool {
        false
    }
    fn run(&self, m: &mut Module, _cx: &mut PassCx) -> Result<Changed, PassError> {
        Ok(Changed::from_bool(cse(m) > 0))
    }
}

/// The management pass with a rescale policy ([`crate::he::manage`]).
struct Rescale(RescalePolicy);

impl HePass for Rescale {
    fn name(&self) -> &'static str {
        match self.0 {
            RescalePolicy::Always => "rescale-always",
            RescalePolicy::Waterline => "rescale-waterline",
        }
    }
    fn is_required(&self) -> bool {
        true
    }
    fn run(&self, m: &mut Module, cx: &mut PassCx) -> Result<Changed, PassError> {
        let managed =
            manage_traced(m, self.0, cx.params.as_ref()).map_err(|error| PassError::Manage {
                pass: self.name(),
                error,
            })?;
        *m = managed.module;
        cx.origin = Some(managed.origin);
        cx.placement = managed.placement;
        Ok(Changed::Yes)
    }
}

/// The read-only checkers (`check-levels`, `check-scales`).
enum Check {
    Levels,
    Scales,
}

impl HePass for Check {
    fn name(&self) -> &'static str {
        match self {
            Check::Levels => "check-levels",
            Check::Scales => "check-scales",
        }
    }
    fn is_required(&self) -> bool {
        true
    }
    fn run(&self, m: &mut Module, _cx: &mut PassCx) -> Result<Changed, PassError> {
        let opts = match self {
            Check::Levels => VerifyOptions {
                scales: false,
                ..VerifyOptions::STRICT
            },
            Check::Scales => VerifyOptions::STRICT,
        };
        he_verify(m, &opts).map_err(|e| PassError::Check {
            pass: self.name(),
            detail: describe(&e),
        })?;
        Ok(Changed::No)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_names_match_pass_objects() {
        for d in ALL_PASSES {
            let p = (d.make)();
            assert_eq!(p.name(), d.name);
            assert_eq!(p.stage(), d.stage);
            assert!(d.name.chars().all(|c| c.is_ascii_lowercase() || c == '-'));
        }
    }

    #[test]
    fn unknown_and_misordered_names_are_rejected() {
        let e = Pipeline::parse("dce,fold-batch-norm")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("pass `fold-batch-norm` runs on the tensor graph but is listed after the HE pass `dce`")
        );
        let e = Pipeline::parse("fold-bn").err().map(|e| e.to_string());
        assert!(e.is_some_and(|s| s.starts_with("unknown pass `fold-bn`")));
        assert!(PassManager::new(ManagerOptions {
            dump_after: vec!["nope".into()],
            ..Default::default()
        })
        .is_err());
        let p = Pipeline::parse(" fold-batch-norm , rescale-always,check-scales").ok();
        assert_eq!(
            p.map(|p| p.names()),
            Some(vec!["fold-batch-norm", "rescale-always", "check-scales"])
        );
    }
}
