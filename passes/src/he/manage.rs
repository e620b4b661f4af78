//! Scale and level management: places `rescale` and `drop_level` in an unmanaged circuit.
//!
//! The pass rebuilds the module in topological order (existing rescales and level drops are
//! dropped and re-placed), so the result's types are inferred afresh. Policies:
//!
//! * [`RescalePolicy::Always`]: every multiplicative result is rescaled at once (EVA's "always").
//! * [`RescalePolicy::Waterline`]: a value is rescaled only when a consumer needs it at the
//!   waterline (before a multiplication, an output, or an addition to a value at lower scale), so
//!   sums of products share one rescale (EVA's lazy waterline).
//!
//! Level and scale matching: operands of additive ops and `mac` are brought to the lowest
//! operand level; a higher operand is dropped, and when its scale also differs, the drop is
//! replaced by a multiplication by 1 encoded at the scale that makes the following rescale land
//! exactly on the target scale. A `mul_scalar` feeding an addition is re-encoded at the scale that
//! matches its partner. Plaintext operands (`encode` of a constant) of `add_plain`, `sub_plain`
//! and `mul_plain` are encoded again at their ciphertext partner's level, at its exact scale for
//! the additive ops and, for a product, at the bits of the prime the next rescale removes (so
//! the rescale returns to the partner's scale); plaintexts take no part in choosing the common
//! level or scale. What cannot be matched is an error naming the node.
//!
//! The top level is chosen so that the lowest value sits at level 0 ([`manage`] runs the
//! rebuild once at a high provisional level to measure the depth). With parameters set, rescales
//! divide by the real primes and scales are tracked exactly.

use hecc_ir::he::{BootInfo, HeError, Level, LogScale, Module, Op, Opcode, Params, ValueId};
use petgraph::algo::toposort;
use std::collections::HashMap;

/// Where rescales go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RescalePolicy {
    /// Rescale every product at once.
    Always,
    /// Rescale lazily, when a consumer needs the value at the waterline.
    Waterline,
}

impl RescalePolicy {
    /// Kebab-case name (`always`, `waterline`).
    pub fn name(self) -> &'static str {
        match self {
            RescalePolicy::Always => "always",
            RescalePolicy::Waterline => "waterline",
        }
    }

    /// Parses a policy name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "always" => Some(RescalePolicy::Always),
            "waterline" | "lazy" => Some(RescalePolicy::Waterline),
            _ => None,
        }
    }
}

/// Why management failed.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ManageError {
    /// The module has a cycle.
    #[error("the circuit has a cycle")]
    #[diagnostic(code(hecc::manage::cycle))]
    Cycle,
    /// Two operands cannot be brought to a common scale.
    #[error("{op} {node}: operand scales 2^{a:.3} and 2^{b:.3} at level {level} cannot be matched ({policy} policy)")]
    #[diagnostic(
        code(hecc::manage::scale),
        help("this needs one more level on that path; try the other rescale policy")
    )]
    Scale {
        /// The op.
        op: &'static str,
        /// The node in the source module.
        node: ValueId,
        /// One log-scale.
        a: f64,
        /// The other.
        b: f64,
        /// The level.
        level: u32,
        /// The policy in use.
        policy: &'static str,
    },
    /// The circuit needs more levels than the parameters have.
    #[error("the circuit needs {needed} levels but the parameters provide {available}")]
    #[diagnostic(code(hecc::manage::levels))]
    NotEnoughLevels {
        /// Levels needed.
        needed: u32,
        /// Levels available.
        available: u32,
    },
    /// A value to bootstrap is not at the bootstrap's input scale.
    #[error(
        "{node}: a value to bootstrap has log-scale {found:.3}, the bootstrap takes {expected:.3}"
    )]
    #[diagnostic(
        code(hecc::manage::bootstrap_scale),
        help("values are bootstrapped at the module's scale; this one carries a factor the manager cannot remove")
    )]
    BootstrapScale {
        /// The node in the source module.
        node: ValueId,
        /// Its log-scale.
        found: f64,
        /// The bootstrap's input log-scale.
        expected: f64,
    },
    /// Bootstrapping leaves no level for a multiplication.
    #[error("a bootstrap returns values at level {out_level}; a product needs at least level 1")]
    #[diagnostic(code(hecc::manage::bootstrap_level))]
    BootstrapLevel {
        /// The bootstrap output level.
        out_level: u32,
    },
    /// A builder call failed.
    #[error("rebuilding {node}: {source}")]
    #[diagnostic(code(hecc::manage::build))]
    Build {
        /// The node in the source module.
        node: ValueId,
        /// The error.
        #[source]
        source: HeError,
    },
}

const PROVISIONAL_TOP: u32 = 4096;

/// A managed module with, for every new node, the source node whose rebuild created it.
#[derive(Debug)]
pub struct Managed {
    /// The managed circuit.
    pub module: Module,
    /// `(first new id, source id)` in increasing order of new id: new nodes from `first` up to
    /// the next entry were created while rebuilding `source`.
    pub origin: Vec<(u32, ValueId)>,
    /// How the bootstraps were placed (`None` for a module without bootstrapping).
    pub placement: Option<Placement>,
}

/// Where the bootstraps of a managed module went, and what the alternative would have cost.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Placement {
    /// The rule that was kept: `planned` or `greedy`.
    pub chosen: String,
    /// Bootstraps of the greedy rule (refresh an operand of a product when it has no level);
    /// `None` when that rule could not manage the circuit.
    pub greedy: Option<u64>,
    /// Bootstraps of the planned placement (`None` when planning failed or was not needed).
    pub planned: Option<u64>,
    /// The planned cuts: depths (levels consumed from the inputs, without bootstrapping) after
    /// which every value still in use is refreshed.
    pub cuts: Vec<u32>,
    /// Why a placement was not tried, not kept or failed, when one was not.
    pub note: Option<String>,
}

impl Managed {
    /// The source node a new node came from.
    pub fn origin_of(&self, v: ValueId) -> Option<ValueId> {
        let i = self.origin.partition_point(|&(start, _)| start <= v.0);
        i.checked_sub(1).map(|i| self.origin[i].1)
    }
}

/// Manages `src` with `policy`. Without `params`, picks the top level equal to the depth; with
/// `params`, starts at the top level of the parameters (and fails if that is not enough).
pub fn manage(
    src: &Module,
    policy: RescalePolicy,
    params: Option<&Params>,
) -> Result<Module, ManageError> {
    manage_traced(src, policy, params).map(|m| m.module)
}

/// Like [`manage`], also returning where each new node came from.
pub fn manage_traced(
    src: &Module,
    policy: RescalePolicy,
    params: Option<&Params>,
) -> Result<Managed, ManageError> {
    if let Some(boot) = src.boot {
        // Levels are absolute: inputs start at the bootstrap's output level (the primes above
        // it belong to the bootstrap), and a value that would need a level below 0 for a
        // product is bootstrapped first.
        if boot.out_level.0 == 0 {
            return Err(ManageError::BootstrapLevel { out_level: 0 });
        }
        if let Some(p) = params {
            let available = p.primes.len().saturating_sub(1) as u32;
            if available < boot.out_level.0 + boot.depth {
                return Err(ManageError::NotEnoughLevels {
                    needed: boot.out_level.0 + boot.depth,
                    available,
                });
            }
        }
        return place_bootstraps(src, policy, boot, params);
    }
    let trial = rebuild(src, policy, Level(PROVISIONAL_TOP), None, None, None)?.0;
    let lowest = trial
        .module
        .ids()
        .filter_map(|v| trial.module.ty(v))
        .map(|t| t.level().0)
        .min()
        .unwrap_or(PROVISIONAL_TOP);
    let depth = PROVISIONAL_TOP - lowest;
    match params {
        None => {
            // Without primes every rescale removes the same bits, so shifting the levels of the
            // trial build is exactly a rebuild at the right top level.
            let mut managed = trial;
            let m = &mut managed.module;
            let shift = PROVISIONAL_TOP - depth;
            let ids: Vec<ValueId> = m.ids().collect();
            for v in ids {
                if let Some(n) = m.node_mut(v) {
                    n.ty = n.ty.with_level(Level(n.ty.level().0 - shift));
                    if let Op::DropLevel { to } = &mut n.op {
                        *to = Level(to.0 - shift);
                    }
                }
            }
            Ok(managed)
        }
        Some(p) => {
            let available = p.primes.len().saturating_sub(1) as u32;
            if available < depth {
                return Err(ManageError::NotEnoughLevels {
                    needed: depth,
                    available,
                });
            }
            Ok(rebuild(src, policy, Level(available), Some(p.clone()), None, None)?.0)
        }
    }
}

/// Bootstrap placement for a module with bootstrapping, as a shortest path over cut depths.
///
/// A trial management without bootstraps gives every source value its depth `d` (levels consumed
/// from the inputs, counting the rescale a value still owes). Cutting at depth `t` refreshes every
/// ciphertext with `d <= t` that a value deeper than `t` reads; it costs one bootstrap per such
/// value and leaves the values after the cut `L` levels (the bootstrap's output level) as if
/// they started at `t`. Cuts at most `L` apart (the first within `L` of the inputs, the deepest
/// value within `L` of the last cut) keep every value at a level of at least 0; among those, a
/// dynamic program picks the cuts with the fewest bootstraps, so they fall where few values are
/// live (before an activation's polynomial rather than among its powers). The greedy rule
/// (refresh an operand of a product when it has no level) runs too and also backs up the plan
/// wherever the model is off; the placement with fewer bootstraps is kept.
fn place_bootstraps(
    src: &Module,
    policy: RescalePolicy,
    boot: BootInfo,
    params: Option<&Params>,
) -> Result<Managed, ManageError> {
    let top = boot.out_level;
    // The greedy rule alone; when it fails (a join it cannot match), the plan may still work.
    let greedy = rebuild(src, policy, top, params.cloned(), Some(boot), None).map(|g| g.0);
    let mut placement = Placement {
        chosen: "greedy".into(),
        greedy: greedy.as_ref().ok().map(|g| count_bootstraps(&g.module)),
        note: greedy
            .as_ref()
            .err()
            .map(|e| format!("the greedy rule failed: {e}")),
        ..Placement::default()
    };
    // The depth of every source value, from a management without bootstraps.
    let (trial, map) = rebuild(src, policy, Level(PROVISIONAL_TOP), None, None, None)?;
    let waterline = waterline(src);
    let mut depth: HashMap<ValueId, u32> = HashMap::with_capacity(map.len());
    // Ciphertexts a cut may refresh (inputs sit at the output level already).
    let mut refreshable: Vec<ValueId> = Vec::new();
    for (&s, &v) in &map {
        if let Some(t) = trial.module.ty(v) {
            let cipher = t.kind() == hecc_ir::he::Kind::Cipher;
            let owed = u32::from(cipher && t.log_scale().0 > waterline);
            depth.insert(s, PROVISIONAL_TOP - t.level().0.min(PROVISIONAL_TOP) + owed);
            if cipher && !matches!(src.node(s).map(|n| &n.op), Some(Op::Input { .. })) {
                refreshable.push(s);
            }
        }
    }
    let deepest = depth.values().copied().max().unwrap_or(0);
    let span = top.0;
    if deepest <= span || placement.greedy == Some(0) {
        placement.note = Some("the circuit fits between two bootstraps".into());
        return Ok(Managed {
            placement: Some(placement),
            ..greedy?
        });
    }
    // cost[t]: ciphertexts a cut at depth t refreshes.
    let mut diff = vec![0i64; deepest as usize + 2];
    for s in refreshable {
        let ds = depth[&s];
        let reach = src
            .users(s)
            .iter()
            .filter_map(|u| depth.get(u).copied())
            .max()
            .unwrap_or(0);
        if reach > ds {
            diff[ds as usize] += 1;
            diff[reach as usize] -= 1;
        }
    }
    let mut cost = Vec::with_capacity(diff.len());
    let mut acc = 0i64;
    for d in &diff {
        acc += d;
        cost.push(acc.max(0) as u64);
    }
    let cuts = shortest_cuts(&cost, deepest, span);
    let planned = rebuild(
        src,
        policy,
        top,
        params.cloned(),
        Some(boot),
        Some(Cuts {
            at: &cuts,
            depth: &depth,
        }),
    );
    placement.cuts = cuts;
    match planned {
        Ok((m, _)) => {
            let n = count_bootstraps(&m.module);
            placement.planned = Some(n);
            if placement.greedy.is_none_or(|g| n < g) {
                placement.chosen = "planned".into();
                return Ok(Managed {
                    placement: Some(placement),
                    ..m
                });
            }
            placement.note =
                Some("the plan needed no fewer bootstraps than the greedy rule".into());
        }
        Err(e) => placement.note = Some(format!("planning failed: {e}")),
    }
    Ok(Managed {
        placement: Some(placement),
        ..greedy?
    })
}

/// The log-scale up to which a value of `m` counts as at the waterline: values up to a quarter
/// of the scale above it are, since products of ciphertexts carry a small drift from the exact
/// scale (see `Rebuild::landing_scale`) and rescaling such a value would leave almost no bits.
fn waterline(m: &Module) -> f64 {
    m.meta.log_scale.0 * 1.25
}

/// Cut depths in `1..deepest` at most `span` apart (starting from 0, ending within `span` of
/// `deepest`) with the least total `cost`.
fn shortest_cuts(cost: &[u64], deepest: u32, span: u32) -> Vec<u32> {
    let (d, span) = (deepest as usize, span.max(1) as usize);
    let mut best = vec![u64::MAX; d + 1];
    let mut from = vec![0usize; d + 1];
    best[0] = 0;
    for t in 1..=d {
        let lo = t.saturating_sub(span);
        if let Some((p, &b)) = (lo..t)
            .map(|p| (p, &best[p]))
            .filter(|(_, b)| **b != u64::MAX)
            .min_by_key(|(p, b)| (**b, std::cmp::Reverse(*p)))
        {
            best[t] = b.saturating_add(cost.get(t).copied().unwrap_or(0));
            from[t] = p;
        }
    }
    let end = (d.saturating_sub(span)..d)
        .filter(|&t| best[t] != u64::MAX)
        .min_by_key(|&t| (best[t], std::cmp::Reverse(t)));
    let mut cuts = Vec::new();
    let mut t = end.unwrap_or(0);
    while t > 0 {
        cuts.push(t as u32);
        t = from[t];
    }
    cuts.reverse();
    cuts
}

fn count_bootstraps(m: &Module) -> u64 {
    m.ids()
        .filter(|&v| matches!(m.node(v).map(|n| &n.op), Some(Op::Bootstrap)))
        .count() as u64
}

/// Planned cuts: depths, and the trial depth of every source value.
#[derive(Clone, Copy)]
struct Cuts<'a> {
    at: &'a [u32],
    depth: &'a HashMap<ValueId, u32>,
}

impl Cuts<'_> {
    /// The deepest cut above which `v` lies.
    fn before(&self, v: ValueId) -> Option<u32> {
        let d = *self.depth.get(&v)?;
        let i = self.at.partition_point(|&t| t < d);
        i.checked_sub(1).map(|i| self.at[i])
    }
}

/// Levels consumed by the managed module: top input level minus the lowest level.
pub fn depth_of(m: &Module) -> u32 {
    let levels: Vec<u32> = m
        .ids()
        .filter_map(|v| m.ty(v))
        .map(|t| t.level().0)
        .collect();
    levels.iter().max().copied().unwrap_or(0) - levels.iter().min().copied().unwrap_or(0)
}

struct Rebuild<'a> {
    src: &'a Module,
    out: Module,
    policy: RescalePolicy,
    waterline: f64,
    map: HashMap<ValueId, ValueId>,
    rescaled: HashMap<ValueId, ValueId>,
    /// Plaintexts re-encoded for their partner: (constant, level, log-scale bits) -> value.
    encodes: HashMap<(u32, u32, u64), ValueId>,
    /// Bootstrap parameters, when values may be refreshed.
    boot: Option<BootInfo>,
    /// Values already bootstrapped: (rebuilt value) -> its bootstrap.
    refreshed: HashMap<ValueId, ValueId>,
    /// Planned cuts, when bootstraps are placed by [`place_bootstraps`].
    cuts: Option<Cuts<'a>>,
}

fn is_multiplicative(op: Opcode) -> bool {
    matches!(
        op,
        Opcode::Mul | Opcode::Square | Opcode::MulPlain | Opcode::MulScalar | Opcode::Mac
    )
}

impl Rebuild<'_> {
    fn ty(&self, v: ValueId) -> (u32, f64, bool) {
        let t = self.out.ty(v);
        (
            t.map_or(0, |t| t.level().0),
            t.map_or(0.0, |t| t.log_scale().0),
            t.is_some_and(|t| t.kind() == hecc_ir::he::Kind::Cipher),
        )
    }

    /// The scale to encode a plaintext factor at so that its product with a ciphertext of
    /// log-scale `s` at level `l`, once rescaled, is exactly at the module's scale. Products of
    /// ciphertexts double any deviation from the module's scale (a prime is not exactly a
    /// power of two), so deep polynomials drift by bits; every plaintext product resets it.
    /// A ciphertext far from the module's scale (on purpose) keeps its own scale.
    fn landing_scale(&self, l: u32, s: f64) -> f64 {
        let bits = self.out.rescale_bits(Level(l));
        let base = self.src.meta.log_scale.0;
        if (s - base).abs() < 8.0 {
            bits + base - s
        } else {
            bits
        }
    }

    /// Rescales `v` until its scale is at most the waterline (memoised).
    fn down(&mut self, node: ValueId, v: ValueId) -> Result<ValueId, ManageError> {
        if let Some(&r) = self.rescaled.get(&v) {
            return Ok(r);
        }
        let mut cur = v;
        loop {
            let (level, scale, cipher) = self.ty(cur);
            if !cipher || scale <= self.waterline || level == 0 {
                break;
            }
            cur = self
                .out
                .rescale(cur)
                .map_err(|source| ManageError::Build { node, source })?;
        }
        self.rescaled.insert(v, cur);
        Ok(cur)
    }

    /// `v` bootstrapped (memoised): brought to the waterline, relinearized if needed, refreshed to
    /// the bootstrap's output level.
    fn refresh(&mut self, node: ValueId, v: ValueId) -> Result<ValueId, ManageError> {
        let b = |source| ManageError::Build { node, source };
        if let Some(&r) = self.refreshed.get(&v) {
            return Ok(r);
        }
        let Some(boot) = self.boot else {
            return Ok(v);
        };
        let mut x = self.down(node, v)?;
        if self.out.ty(x).is_some_and(|t| t.size() == 3) {
            x = self.out.relinearize(x).map_err(b)?;
        }
        let s = self.ty(x).1;
        if (s - boot.in_log_scale.0).abs() > BootInfo::SCALE_TOLERANCE {
            return Err(ManageError::BootstrapScale {
                node,
                found: s,
                expected: boot.in_log_scale.0,
            });
        }
        let r = self.out.bootstrap(x).map_err(b)?;
        self.refreshed.insert(v, r);
        self.refreshed.insert(x, r);
        Ok(r)
    }

    /// The plaintext `pt` (an `encode`) of a `add_plain`/`sub_plain`/`mul_plain` encoded again at
    /// its ciphertext partner `ct`'s level, and at `ct`'s scale for the additive ops. A product's
    /// plaintext at the module's default scale is encoded at the bits of the prime the following
    /// rescale removes (when the primes are known), so that the rescale lands exactly back on
    /// `ct`'s scale; another product scale is kept. Memoised per (constant, level, scale).
    fn reencode(
        &mut self,
        node: ValueId,
        ct: ValueId,
        pt: ValueId,
        code: Opcode,
    ) -> Result<ValueId, ManageError> {
        let b = |source| ManageError::Build { node, source };
        let Some(n) = self.out.node(pt).cloned() else {
            return Ok(pt);
        };
        let Op::Encode { constant } = n.op else {
            return Ok(pt);
        };
        let (l, s, _) = self.ty(ct);
        let (_, ps, _) = self.ty(pt);
        let scale = match code {
            Opcode::AddPlain | Opcode::SubPlain => s,
            Opcode::MulPlain
                if self.out.params.is_some()
                    && l > 0
                    && (ps - self.src.meta.log_scale.0).abs() < 1e-12 =>
            {
                self.landing_scale(l, s)
            }
            _ => ps,
        };
        let key = (constant.0, l, scale.to_bits());
        if let Some(&e) = self.encodes.get(&key) {
            return Ok(e);
        }
        let e = self
            .out
            .encode(constant, Level(l), LogScale(scale), n.ty.layout())
            .map_err(b)?;
        self.encodes.insert(key, e);
        Ok(e)
    }

    /// Whether `v` can be brought to log-scale `t` at its level without a rescale: it is at
    /// `t` already, or a scalar product whose constant can be encoded at `t` minus its
    /// operand's scale (at least 20 bits), or a sum/difference of such values, or a level drop
    /// or rescale of one (at the correspondingly shifted scale).
    fn flexible(&self, v: ValueId, t: f64, depth: u32) -> bool {
        let (_, s, cipher) = self.ty(v);
        if !cipher {
            return false;
        }
        if (s - t).abs() < 1e-9 {
            return true;
        }
        if depth > 48 {
            return false;
        }
        match self.out.node(v).map(|n| &n.op) {
            Some(Op::MulScalar { .. }) => self
                .out
                .operands(v)
                .first()
                .is_some_and(|&o| t - self.ty(o).1 >= 20.0),
            Some(Op::Add | Op::Sub) => self
                .out
                .operands(v)
                .iter()
                .all(|&o| self.flexible(o, t, depth + 1)),
            Some(Op::DropLevel { .. }) => self
                .out
                .operands(v)
                .first()
                .is_some_and(|&o| self.flexible(o, t, depth + 1)),
            Some(Op::Relinearize | Op::MulInteger { .. }) => self
                .out
                .operands(v)
                .first()
                .is_some_and(|&o| self.flexible(o, t, depth + 1)),
            Some(Op::Mul) => match self.out.operands(v).as_slice() {
                [x, y] => {
                    let (sx, sy) = (self.ty(*x).1, self.ty(*y).1);
                    self.flexible(*x, t - sy, depth + 1) || self.flexible(*y, t - sx, depth + 1)
                }
                _ => false,
            },
            Some(Op::Rescale) => self.out.operands(v).first().is_some_and(|&o| {
                let bits = self.out.rescale_bits(Level(self.ty(o).0));
                self.flexible(o, t + bits, depth + 1)
            }),
            _ => false,
        }
    }

    /// `v` rebuilt at log-scale `t` (same level) by re-encoding the scalar products it is a
    /// sum of (see [`Self::flexible`]); `None` when that is impossible.
    fn retarget(
        &mut self,
        node: ValueId,
        v: ValueId,
        t: f64,
        depth: u32,
    ) -> Result<Option<ValueId>, ManageError> {
        let b = |source| ManageError::Build { node, source };
        if (self.ty(v).1 - t).abs() < 1e-9 {
            return Ok(Some(v));
        }
        if !self.flexible(v, t, depth) {
            return Ok(None);
        }
        let Some(n) = self.out.node(v).cloned() else {
            return Ok(None);
        };
        let ops = self.out.operands(v);
        match (n.op, ops.as_slice()) {
            (Op::MulScalar { value, .. }, [o]) => {
                let need = t - self.ty(*o).1;
                Ok(Some(
                    self.out.mul_scalar(*o, value, LogScale(need)).map_err(b)?,
                ))
            }
            (op @ (Op::Add | Op::Sub), [x, y]) => {
                let (Some(x), Some(y)) = (
                    self.retarget(node, *x, t, depth + 1)?,
                    self.retarget(node, *y, t, depth + 1)?,
                ) else {
                    return Ok(None);
                };
                let r = if matches!(op, Op::Add) {
                    self.out.add(x, y)
                } else {
                    self.out.sub(x, y)
                };
                Ok(Some(r.map_err(b)?))
            }
            (Op::Relinearize, [x]) => match self.retarget(node, *x, t, depth + 1)? {
                Some(x) => Ok(Some(self.out.relinearize(x).map_err(b)?)),
                None => Ok(None),
            },
            (Op::MulInteger { factor }, [x]) => match self.retarget(node, *x, t, depth + 1)? {
                Some(x) => Ok(Some(self.out.mul_integer(x, factor).map_err(b)?)),
                None => Ok(None),
            },
            (Op::Mul, [x, y]) => {
                let (sx, sy) = (self.ty(*x).1, self.ty(*y).1);
                if self.flexible(*x, t - sy, depth + 1) {
                    if let Some(x) = self.retarget(node, *x, t - sy, depth + 1)? {
                        return Ok(Some(self.out.mul(x, *y).map_err(b)?));
                    }
                }
                match self.retarget(node, *y, t - sx, depth + 1)? {
                    Some(y) => Ok(Some(self.out.mul(*x, y).map_err(b)?)),
                    None => Ok(None),
                }
            }
            (Op::DropLevel { to }, [x]) => match self.retarget(node, *x, t, depth + 1)? {
                Some(x) => Ok(Some(self.out.drop_level(x, to).map_err(b)?)),
                None => Ok(None),
            },
            (Op::Rescale, [x]) => {
                let bits = self.out.rescale_bits(Level(self.ty(*x).0));
                match self.retarget(node, *x, t + bits, depth + 1)? {
                    Some(x) => Ok(Some(self.out.rescale(x).map_err(b)?)),
                    None => Ok(None),
                }
            }
            _ => Ok(None),
        }
    }

    /// Brings `v` to `level` and (if `scale` is given) to that scale.
    fn align(
        &mut self,
        node: ValueId,
        v: ValueId,
        level: u32,
        scale: Option<f64>,
        op: &'static str,
    ) -> Result<ValueId, ManageError> {
        let b = |source| ManageError::Build { node, source };
        let (l, s, cipher) = self.ty(v);
        let scale_ok = scale.is_none_or(|t| (t - s).abs() < 1e-9);
        if l == level && scale_ok {
            return Ok(v);
        }
        if l == level {
            // Same level, different scale: re-encode the scalar products `v` is a sum of.
            if let Some(t) = scale {
                if let Some(w) = self.retarget(node, v, t, 0)? {
                    return Ok(w);
                }
            }
            return Err(ManageError::Scale {
                op,
                node,
                a: s,
                b: scale.unwrap_or(s),
                level,
                policy: self.policy.name(),
            });
        }
        if !cipher {
            return Ok(v);
        }
        match scale {
            Some(t) if !scale_ok => {
                // Multiply by 1 at the scale that lands on `t` after one rescale, then drop.
                let bits = self.out.rescale_bits(Level(l));
                let enc = t + bits - s;
                if enc < 20.0 {
                    return Err(ManageError::Scale {
                        op,
                        node,
                        a: s,
                        b: t,
                        level,
                        policy: self.policy.name(),
                    });
                }
                let one = self.out.mul_scalar(v, 1.0, LogScale(enc)).map_err(b)?;
                let r = self.out.rescale(one).map_err(b)?;
                if l - 1 == level {
                    Ok(r)
                } else {
                    self.out.drop_level(r, Level(level)).map_err(b)
                }
            }
            _ => self.out.drop_level(v, Level(level)).map_err(b),
        }
    }
}

/// Rebuilds `src` with inputs at `top`, refreshing values with `boot` (greedily, and at the
/// `cuts` when given); also returns the rebuilt value of every source value.
fn rebuild<'a>(
    src: &'a Module,
    policy: RescalePolicy,
    top: Level,
    params: Option<Params>,
    boot: Option<BootInfo>,
    cuts: Option<Cuts<'a>>,
) -> Result<(Managed, HashMap<ValueId, ValueId>), ManageError> {
    let mut out = Module::new(src.meta.clone());
    out.params = params;
    out.boot = boot;
    for (_, name, layout) in src.layouts() {
        out.add_layout(name, layout.clone())
            .map_err(|source| ManageError::Build {
                node: ValueId(0),
                source,
            })?;
    }
    for (_, c) in src.constants() {
        out.push_constant_copy(c);
    }
    let waterline = waterline(src);
    let mut r = Rebuild {
        src,
        out,
        policy,
        waterline,
        map: HashMap::new(),
        rescaled: HashMap::new(),
        encodes: HashMap::new(),
        boot,
        refreshed: HashMap::new(),
        cuts,
    };
    let order = toposort(src.graph(), None).map_err(|_| ManageError::Cycle)?;
    let mut origin: Vec<(u32, ValueId)> = Vec::with_capacity(order.len());
    for ix in order {
        let v = ValueId::from_node(ix);
        let next_id = r
            .out
            .graph()
            .node_indices()
            .next_back()
            .map_or(0, |i| i.index() as u32 + 1);
        if origin.last().is_none_or(|&(start, _)| start < next_id) {
            origin.push((next_id, v));
        } else if let Some(last) = origin.last_mut() {
            last.1 = v;
        }
        let Some(node) = src.node(v) else { continue };
        let code = node.op.opcode();
        let b = |source| ManageError::Build { node: v, source };
        let ops: Vec<ValueId> = src
            .operands(v)
            .iter()
            .filter_map(|o| r.map.get(o).copied())
            .collect();
        let new = match &node.op {
            Op::Input { name, index } => {
                let name = r.src.name(*name).unwrap_or("input").to_string();
                let t = node.ty;
                r.out
                    .input(&name, *index, top, t.log_scale(), t.slots(), t.layout())
                    .map_err(b)?
            }
            Op::Encode { constant } => {
                let t = node.ty;
                r.out
                    .encode(*constant, top, t.log_scale(), t.layout())
                    .map_err(b)?
            }
            Op::Rescale | Op::DropLevel { .. } => {
                // Re-placed by this pass.
                r.map.insert(v, ops[0]);
                continue;
            }
            Op::Bootstrap => {
                // Placed by a bootstrap-placement pass: kept, at the waterline.
                r.refresh(v, ops[0])?
            }
            Op::Relinearize if r.out.ty(ops[0]).is_some_and(|t| t.size() == 2) => {
                // A lazily relinearized sum whose size-3 terms were bootstrapped (and so
                // relinearized) on the way: nothing left to do.
                r.map.insert(v, ops[0]);
                continue;
            }
            Op::Output { name, index } => {
                let name = r.src.name(*name).unwrap_or("output").to_string();
                let x = r.down(v, ops[0])?;
                r.out.output(x, &name, *index).map_err(b)?
            }
            _ => {
                let mut operands = ops.clone();
                // A planned cut lies between this value and an operand: refresh the operand
                // (unless it is still at the bootstrap's output level).
                if let Some((cuts, cut)) = r.cuts.and_then(|c| Some((c, c.before(v)?))) {
                    for (o, s) in operands.iter_mut().zip(src.operands(v)) {
                        let (level, _, cipher) = r.ty(*o);
                        if cipher && level < top.0 && cuts.depth.get(&s).is_some_and(|&d| d <= cut)
                        {
                            *o = r.refresh(v, *o)?;
                        }
                    }
                }
                if is_multiplicative(code) {
                    for o in operands.iter_mut() {
                        *o = r.down(v, *o)?;
                        // Out of levels: the product could not be rescaled.
                        let (level, _, cipher) = r.ty(*o);
                        if r.boot.is_some() && cipher && level == 0 {
                            *o = r.refresh(v, *o)?;
                        }
                    }
                }
                let needs_common_scale = matches!(
                    code,
                    Opcode::Add | Opcode::Sub | Opcode::AddPlain | Opcode::SubPlain | Opcode::Mac
                );
                if operands.len() > 1 {
                    // Waterline: an additive op mixing scales rescales the bigger ones first.
                    if needs_common_scale {
                        let min_scale = operands
                            .iter()
                            .filter(|&&o| r.ty(o).2)
                            .map(|&o| r.ty(o).1)
                            .fold(f64::INFINITY, f64::min);
                        if min_scale <= r.waterline {
                            for o in operands.iter_mut() {
                                if r.ty(*o).1 > r.waterline {
                                    *o = r.down(v, *o)?;
                                }
                            }
                        }
                    }
                    // Plaintext operands are re-encoded below at their partner's level and
                    // scale, so only ciphertexts decide the common level and scale.
                    let level = operands
                        .iter()
                        .filter(|&&o| r.ty(o).2)
                        .map(|&o| r.ty(o).0)
                        .min()
                        .unwrap_or(top.0);
                    // The target scale: that of an operand already at the common level,
                    // preferring one that is not a scalar product (a scalar product can be
                    // re-encoded to match its partner; at the real primes, sums of products
                    // from different paths differ in scale by a few 1e-5 bits).
                    let at: Vec<ValueId> = operands
                        .iter()
                        .copied()
                        .filter(|&o| r.ty(o).2 && r.ty(o).0 == level)
                        .collect();
                    let target = at
                        .iter()
                        .copied()
                        .find(|&c| {
                            let t = r.ty(c).1;
                            at.iter().all(|&o| r.flexible(o, t, 0))
                        })
                        .or(at.first().copied())
                        .map(|o| r.ty(o).1);
                    // Operands at the common level whose scales differ by a drift that cannot
                    // be re-encoded (products from different paths, or a value fresh from a
                    // bootstrap beside one that is not): meet one level lower, where each lands
                    // exactly on the target scale through a product by 1 and a rescale.
                    let level = match target {
                        Some(t)
                            if needs_common_scale
                                && level > 0
                                && at.iter().any(|&o| {
                                    (r.ty(o).1 - t).abs() >= 1e-9 && !r.flexible(o, t, 0)
                                }) =>
                        {
                            level - 1
                        }
                        _ => level,
                    };
                    let mnemonic = node.op.mnemonic();
                    for o in operands.iter_mut() {
                        if !r.ty(*o).2 {
                            continue;
                        }
                        let want = if needs_common_scale { target } else { None };
                        *o = r.align(v, *o, level, want, mnemonic)?;
                    }
                    if let [ct, pt] = operands.as_mut_slice() {
                        if !r.ty(*pt).2 {
                            *pt = r.reencode(v, *ct, *pt, code)?;
                        }
                    }
                }
                // A scalar product that only feeds additions is a correction term of a product
                // (or a ratio aligning two operands): it is matched at the addition, not rescaled,
                // and its encoding scale is re-derived there (the lowering's scale assumed no
                // rescales at all).
                let companion = code == Opcode::MulScalar
                    && r.src.users(v).iter().all(|&u| {
                        matches!(
                            r.src.node(u).map(|n| n.op.opcode()),
                            Some(Opcode::Add | Opcode::Sub)
                        )
                    });
                let mut op = node.op.clone();
                if companion {
                    if let Op::MulScalar { log_scale, .. } = &mut op {
                        *log_scale = r.src.meta.log_scale;
                    }
                }
                if let Op::Mac(attrs) = &mut op {
                    // Encode the scalars so that the following rescale lands exactly on the
                    // module's scale.
                    if let Some(&o) = operands.first() {
                        let (l, s, _) = r.ty(o);
                        if r.out.params.is_some() && l > 0 {
                            attrs.log_scale = LogScale(r.landing_scale(l, s));
                        }
                    }
                }
                if let Op::MulScalar { log_scale, .. } = &mut op {
                    if let Some(&o) = operands.first() {
                        let (l, s, _) = r.ty(o);
                        if r.out.params.is_some()
                            && l > 0
                            && (log_scale.0 - r.src.meta.log_scale.0).abs() < 1e-12
                        {
                            *log_scale = LogScale(r.landing_scale(l, s));
                        }
                    }
                }
                let x = r.out.push(op, &operands).map_err(b)?;
                if policy == RescalePolicy::Always && is_multiplicative(code) && !companion {
                    let size = r.out.ty(x).map_or(2, |t| t.size());
                    if size == 2 {
                        r.down(v, x)?
                    } else {
                        x
                    }
                } else {
                    x
                }
            }
        };
        r.map.insert(v, new);
    }
    let mut out = r.out;
    crate::he::dce(&mut out);
    Ok((
        Managed {
            module: out,
            origin,
            placement: None,
        },
        r.map,
    ))
}

#[cfg(test)]
mod tests {
    use super::shortest_cuts;

    #[test]
    fn cuts_fall_where_fewest_values_cross_and_never_more_than_the_span_apart() {
        // Depth 12, 4 levels between bootstraps: cheap depths 3, 6 and 9 (one value crossing),
        // every other depth dear (five values).
        let cost: Vec<u64> = (0..=12).map(|t| if t % 3 == 0 { 1 } else { 5 }).collect();
        let cuts = shortest_cuts(&cost, 12, 4);
        assert_eq!(cuts, vec![3, 6, 9]);
        // Greedy-like cuts at 4 and 8 would cost 10; these cost 3.
        let total: u64 = cuts.iter().map(|&t| cost[t as usize]).sum();
        assert_eq!(total, 3);
    }

    #[test]
    fn cuts_respect_the_span_even_when_the_cheap_depths_are_too_far_apart() {
        // Only depth 6 is cheap but the span is 4: a dear cut is unavoidable before it.
        let cost: Vec<u64> = (0..=10).map(|t| if t == 6 { 1 } else { 5 }).collect();
        let cuts = shortest_cuts(&cost, 10, 4);
        let mut prev = 0;
        for &c in &cuts {
            assert!(c - prev <= 4, "{cuts:?}");
            prev = c;
        }
        assert!(10 - prev <= 4, "{cuts:?}");
        assert!(cuts.contains(&6), "{cuts:?}");
        assert_eq!(cuts.len(), 2, "{cuts:?}");
    }

    #[test]
    fn a_circuit_within_the_span_needs_no_cut() {
        assert!(shortest_cuts(&[0, 3, 3, 3], 3, 4).is_empty());
    }
}
