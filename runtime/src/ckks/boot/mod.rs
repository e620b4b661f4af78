//! CKKS bootstrapping: refreshes a ciphertext at level 0 to a ciphertext at a
//! high level that decrypts to (approximately) the same slots.
//!
//! The circuit, in order:
//! 1. **Sparse-secret encapsulation.** The level-0 ciphertext is switched
//!    from the user's dense secret `s` to an ephemeral secret `s'` with `h`
//!    (default 32) nonzero coefficients, in the small ring `q0 * p0`.
//! 2. **ModRaise** under `s'`: the coefficients of `c0 + c1 s'` are lifted from
//!    `q0` to the whole chain `Q`; the plaintext becomes `t = m + q0 I` with
//!    `|I| <= (h + 1) / 2`, a hard bound (no failure probability from `I`).
//!    A key switch at the top level returns to the dense secret `s`.
//! 3. **SubSum** (sparse slots only): the trace onto the subring of `n`
//!    slots, `log2(N / 2n)` rotations.
//! 4. **CoeffsToSlots**: the inverse special DFT, factored into
//!    `cts_levels` diagonal matrices, each evaluated by baby-step giant-step
//!    with hoisted baby rotations; then conjugation splits real and
//!    imaginary parts (two ciphertexts for full slots, one of period `2n`
//!    for sparse slots).
//! 5. **EvalMod**: `sin(2 pi x) / 2 pi` from a Chebyshev interpolant of
//!    `cos(2 pi (x - 1/4) / 2^r)` on `[-K, K]` followed by `r` double-angle
//!    steps `cos 2a = 2 cos^2 a - 1`.
//! 6. **SlotsToCoeffs**: the special DFT in `stc_levels` matrices, which also
//!    brings the scale to the requested output scale.
//!
//! Contract: [`Bootstrapper::new`] checks that the parameter chain has the
//! levels the configuration needs and that the encapsulation ring is small
//! enough for a sparse secret; [`Bootstrapper::bootstrap`] accepts a
//! ciphertext at any level with the configured input scale and returns one at
//! [`Bootstrapper::output_level`] with [`Bootstrapper::output_scale`]. The
//! input's slots must lie in `[-1, 1]` (times [`BootstrapConfig::message_bound`])
//! and, for sparse slots, repeat with period `slots`. Only evaluation keys are
//! used: the server needs no secret.

mod evalmod;
mod lintrans;

use std::f64::consts::PI;
use std::sync::Arc;

use super::context::Context;
use super::encoding::{Complex64, Encoder};
use super::encrypt::Ciphertext;
use super::error::{CkksError, Result};
use super::eval::Evaluator;
use super::keys::{GaloisKeys, KeyGenerator, KeySwitchKey, RelinKey};
use super::params::{CkksParameters, SecretDistribution};
use super::pointwise::{self, Op};
use super::poly::RnsPoly;
use super::rns;

use evalmod::ChebEvaluator;
use lintrans::{Bsgs, DiagMatrix};

/// Largest `log2(q0 * p0)` accepted for the ring in which the sparse
/// ephemeral secret is used. Bossuat et al. (sparse-secret encapsulation,
/// 2022) estimate more than 128-bit security for `h = 32` at `N = 2^16` with
/// `log2(q0 * p0)` about 120; the bound is applied at every ring degree the
/// bootstrapper accepts for 128-bit parameters (`N = 2^16`).
pub const MAX_SPARSE_LOG_QP: f64 = 122.0;

/// How far (bits) a ciphertext's scale may be from [`BootstrapConfig::input_scale`]: the
/// result's scale is [`BootstrapConfig::output_scale`] times the same ratio.
pub const INPUT_SCALE_TOLERANCE_BITS: f64 = 0.05;

/// Bit size of the primes of the modular reduction (its working scale).
pub const EVAL_MOD_PRIME_BITS: u32 = 60;

/// How a bootstrap is built.
#[derive(Clone, Debug, PartialEq)]
pub struct BootstrapConfig {
    /// Number of complex slots `n` (a power of two, at most `N/2`). Fewer
    /// slots than `N/2` need the message to repeat with period `n`.
    pub slots: usize,
    /// Levels (matrices) of CoeffsToSlots.
    pub cts_levels: usize,
    /// Levels (matrices) of SlotsToCoeffs.
    pub stc_levels: usize,
    /// Hamming weight of the ephemeral sparse secret.
    pub sparse_weight: u32,
    /// Interval half-width `K` of the modular reduction (at least
    /// `(h + 1) / 2` plus the message).
    pub k_bound: f64,
    /// Number of double-angle steps `r`.
    pub double_angle: u32,
    /// Degree of the Chebyshev interpolant of the scaled cosine.
    pub degree: usize,
    /// `log2(q0 / scale)` at which the message enters the modular reduction:
    /// larger values make the sine closer to linear, smaller ones lift the
    /// message further above the reduction's noise.
    pub message_ratio_bits: f64,
    /// Bound on the input slots' magnitude.
    pub message_bound: f64,
    /// Scale of the ciphertexts to bootstrap.
    pub input_scale: f64,
    /// Scale of the bootstrapped ciphertexts.
    pub output_scale: f64,
    /// Keep the DFT diagonals as integer coefficients (one word per
    /// coefficient) and transform them limb by limb at each use, instead of
    /// holding them in NTT form at their level (one word per coefficient and
    /// limb): much less memory for some extra NTTs per bootstrap.
    pub compact_matrices: bool,
}

impl BootstrapConfig {
    /// The default configuration for `slots` slots at scale `2^40`: encapsulation
    /// with `h = 32`, `K = 17`, four double-angle steps after a degree-31
    /// interpolant (10 levels), 3 CoeffsToSlots and 3 SlotsToCoeffs levels
    /// (mirrored groupings, so both share their rotation keys), compact
    /// DFT matrices.
    pub fn new(slots: usize) -> Self {
        Self {
            slots,
            cts_levels: 3,
            stc_levels: 3,
            sparse_weight: 32,
            k_bound: 17.0,
            double_angle: 4,
            degree: 31,
            message_ratio_bits: 8.0,
            message_bound: 1.0,
            input_scale: 2f64.powi(40),
            output_scale: 2f64.powi(40),
            compact_matrices: true,
        }
    }

    /// Levels consumed by the modular reduction.
    pub fn eval_mod_depth(&self) -> usize {
        evalmod::depth(self.degree) + self.double_angle as usize
    }

    /// Levels consumed by one bootstrap (above the output level).
    pub fn depth(&self) -> usize {
        self.cts_levels + self.eval_mod_depth() + self.stc_levels
    }
}

/// A modulus chain for bootstrapping: `q0` of 60 bits, `network_levels` primes
/// of `scale_bits` for the computation between bootstraps, then the primes
/// of SlotsToCoeffs (`scale_bits`), of the modular reduction
/// ([`EVAL_MOD_PRIME_BITS`]) and of
/// CoeffsToSlots (56 bits); 60-bit special primes, with the fewest
/// key-switching digits (smallest keys) for which `log2(QP)` stays within the
/// 128-bit bound at `N = 2^16`. With `secure`, the 128-bit check of the
/// HomomorphicEncryption.org table applies (at `N = 2^16` it passes for up to
/// 10 network levels at 40 bits with the default configuration); without,
/// the set is **insecure** and only fit for fast tests.
pub fn bootstrap_parameters(
    log_n: u32,
    network_levels: usize,
    scale_bits: u32,
    config: &BootstrapConfig,
    secure: bool,
) -> Result<CkksParameters> {
    let mut bits = vec![scale_bits; network_levels + config.stc_levels];
    bits.extend(vec![EVAL_MOD_PRIME_BITS; config.eval_mod_depth()]);
    bits.extend(vec![56; config.cts_levels]);
    let all: Vec<u32> = std::iter::once(60).chain(bits.iter().copied()).collect();
    let nq = all.len();
    let log_q: u32 = all.iter().sum();
    let limit = super::params::SecurityLevel::Classical128
        .max_log_qp(16)
        .unwrap_or(0);
    // Key size grows with dnum * (L + 1 + alpha): take the smallest dnum
    // whose special modulus (alpha 60-bit primes) covers every digit and
    // fits the bound.
    let dnum = (1..=nq)
        .find(|&d| {
            let alpha = nq.div_ceil(d);
            let max_digit = all.chunks(alpha).map(|c| c.iter().sum::<u32>()).max();
            max_digit.is_some_and(|m| 60 * alpha as u32 + 1 >= m)
                && log_q + 60 * alpha as u32 <= limit
        })
        .unwrap_or(nq);
    let alpha = nq.div_ceil(dnum);
    let b = CkksParameters::builder()
        .log_n(log_n)
        .q0_bits(60)
        .scale_bits(bits)
        .special_bits(vec![60; alpha])
        .dnum(dnum);
    if secure {
        b.build()
    } else {
        b.insecure_no_security_check().build()
    }
}

/// The evaluation keys of bootstrapping (all public).
#[derive(Clone, Debug)]
pub struct BootstrapKeys {
    pub(crate) relin: RelinKey,
    pub(crate) galois: GaloisKeys,
    /// Dense to sparse secret, in the ring `q0 * p0`.
    pub(crate) to_sparse: KeySwitchKey,
    /// Sparse to dense secret, over `Q * P`.
    pub(crate) from_sparse: KeySwitchKey,
}

impl BootstrapKeys {
    /// Total size in memory, bytes (the serialized form stores each uniform
    /// half as a 32-byte seed, so it is about half of this).
    pub fn bytes(&self) -> usize {
        self.relin.key.memory_bytes()
            + self.galois.memory_bytes()
            + self.to_sparse.memory_bytes()
            + self.from_sparse.memory_bytes()
    }

    /// Number of Galois keys (rotations and conjugation).
    pub fn galois_key_count(&self) -> usize {
        self.galois.keys.len()
    }
}

/// The two keys that only bootstrapping needs (the dense-to-sparse secret switch in the ring
/// `q0 * p0`, and back over `Q * P`); the relinearization and Galois keys can be shared with
/// the circuit around the bootstraps ([`Bootstrapper::bootstrap_with`]).
#[derive(Clone, Debug)]
pub struct EncapsulationKeys {
    pub(crate) to_sparse: KeySwitchKey,
    pub(crate) from_sparse: KeySwitchKey,
}

impl EncapsulationKeys {
    /// Size in memory, bytes.
    pub fn bytes(&self) -> usize {
        [&self.to_sparse, &self.from_sparse]
            .iter()
            .map(|k| {
                k.b.iter()
                    .chain(&k.a)
                    .map(|p| p.data.len() * 8)
                    .sum::<usize>()
            })
            .sum()
    }
}

/// Operation counts of one bootstrap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootstrapCost {
    /// Hoisted (baby-step) rotations.
    pub hoisted_rotations: usize,
    /// Full key switches: rotations, conjugations, relinearizations and the
    /// two encapsulation switches.
    pub key_switches: usize,
}

/// Wall time of each phase of one bootstrap, seconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BootstrapTimings {
    /// Encapsulation, ModRaise and the switch back to the dense secret.
    pub mod_raise: f64,
    /// SubSum (sparse slots).
    pub sub_sum: f64,
    /// CoeffsToSlots, conjugation and the real/imaginary split.
    pub coeffs_to_slots: f64,
    /// The modular reduction (both halves for full slots).
    pub eval_mod: f64,
    /// SlotsToCoeffs.
    pub slots_to_coeffs: f64,
}

/// A bootstrapping circuit for one parameter set and configuration, with its
/// encoded DFT matrices. Holds no secret.
pub struct Bootstrapper {
    ctx: Arc<Context>,
    small: Arc<Context>,
    eval: Evaluator,
    config: BootstrapConfig,
    cts: Vec<Bsgs>,
    stc: Vec<Bsgs>,
    cheb: Vec<f64>,
    sub_sum: Vec<i64>,
    /// `X^(N/2)` in NTT form over all ciphertext primes (multiplies slots by `i`).
    monomial: RnsPoly,
    boost: i64,
    eval_level: usize,
    output_level: usize,
}

impl std::fmt::Debug for Bootstrapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bootstrapper")
            .field("config", &self.config)
            .field("output_level", &self.output_level)
            .finish_non_exhaustive()
    }
}

/// The butterfly stages of the special DFT on `n` slots as diagonal
/// matrices, in application order: inverse (CoeffsToSlots, each with a
/// factor 1/2, lengths `n, n/2, .., 2`) or forward (SlotsToCoeffs, lengths
/// `2, .., n`). Neither includes the bit reversal.
fn dft_stages(n: usize, inverse: bool) -> Vec<DiagMatrix> {
    let m = 4 * n;
    let mut rot = Vec::with_capacity(n / 2);
    let mut g = 1usize;
    for _ in 0..n.max(2) / 2 {
        rot.push(g);
        g = (g * 5) % m;
    }
    let mut lens = Vec::new();
    let mut len = 2;
    while len <= n {
        lens.push(len);
        len *= 2;
    }
    if inverse {
        lens.reverse();
    }
    lens.into_iter()
        .map(|len| {
            let lenh = len / 2;
            let lenq = 4 * len;
            let mut d = DiagMatrix {
                period: n,
                diags: Default::default(),
            };
            let mut put = |k: usize, s: usize, v: Complex64| {
                let e = d
                    .diags
                    .entry(k % n)
                    .or_insert_with(|| vec![Complex64::default(); n]);
                e[s] = e[s] + v;
            };
            for s in 0..n {
                let j = s % len;
                let one = Complex64::new(1.0, 0.0);
                let half = Complex64::new(0.5, 0.0);
                if j < lenh {
                    let tw = Complex64::from_angle(2.0 * PI * (rot[j] % lenq) as f64 / lenq as f64);
                    if inverse {
                        put(0, s, half);
                        put(lenh, s, half);
                    } else {
                        put(0, s, one);
                        put(lenh, s, tw);
                    }
                } else {
                    let jj = j - lenh;
                    let tw =
                        Complex64::from_angle(2.0 * PI * (rot[jj] % lenq) as f64 / lenq as f64);
                    if inverse {
                        let itw = tw.conj().scale(0.5);
                        put(n - lenh, s, itw);
                        put(0, s, -itw);
                    } else {
                        put(n - lenh, s, one);
                        put(0, s, -tw);
                    }
                }
            }
            d
        })
        .collect()
}

/// Multiplies `stages` into `groups` products of consecutive stages; the
/// larger groups come first, or last when `mirrored` (so that the forward
/// DFT grouped mirrored uses the same stage sets, hence the same rotations,
/// as the inverse DFT grouped plainly).
fn group(stages: &[DiagMatrix], groups: usize, mirrored: bool) -> Vec<DiagMatrix> {
    let total = stages.len();
    let groups = groups.clamp(1, total.max(1));
    let mut sizes: Vec<usize> = (0..groups)
        .map(|g| total / groups + usize::from(g < total % groups))
        .collect();
    if mirrored {
        sizes.reverse();
    }
    let mut out = Vec::with_capacity(groups);
    let mut at = 0;
    for size in sizes {
        let mut m = stages[at].clone();
        for s in &stages[at + 1..at + size] {
            m = m.then(s);
        }
        out.push(m);
        at += size;
    }
    out
}

/// The DFT matrices of CoeffsToSlots (the first scaled by `1 / 2K` and the slot-to-half-ring
/// factor, the last masked for sparse slots) and of SlotsToCoeffs (the first preceded by the
/// sparse fold), for a ring of degree `ring_n`.
fn transforms(ring_n: usize, config: &BootstrapConfig) -> (Vec<DiagMatrix>, Vec<DiagMatrix>) {
    let n = config.slots;
    let full = n == ring_n / 2;
    // `lo` on the first n of 2n slots, `hi` on the others.
    let halves = |lo: Complex64, hi: Complex64| -> Vec<Complex64> {
        (0..2 * n).map(|s| if s < n { lo } else { hi }).collect()
    };
    let (one, i, minus_i) = (
        Complex64::new(1.0, 0.0),
        Complex64::new(0.0, 1.0),
        Complex64::new(0.0, -1.0),
    );
    let mut cts_m = group(&dft_stages(n, true), config.cts_levels, false);
    let c = 0.5 / config.k_bound * (2.0 * n as f64 / ring_n as f64);
    cts_m[0] = cts_m[0].clone().scaled(Complex64::new(c, 0.0));
    if !full {
        let last = cts_m.len() - 1;
        cts_m[last] = cts_m[last].masked_rows(&halves(one, minus_i));
    }
    let mut stc_m = group(&dft_stages(n, false), config.stc_levels, true);
    if !full {
        let mut fold = DiagMatrix::identity(2 * n);
        fold.diags.insert(0, halves(one, i));
        fold.diags.insert(n, halves(i, one));
        stc_m[0] = fold.then(&stc_m[0]);
    }
    (cts_m, stc_m)
}

/// What the keys and key switches of a bootstrap of `config` in a ring of degree `ring_n` are,
/// found without encoding its matrices (for reports and key-size estimates).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootstrapKeyPlan {
    /// Rotation steps needing Galois keys (conjugation apart), in `1..ring_n / 2`.
    pub rotations: Vec<i64>,
    /// Key-switching work of one bootstrap.
    pub cost: BootstrapCost,
}

/// The rotations and key switches of a bootstrap of `config` in a ring of degree `ring_n`, as
/// [`Bootstrapper::rotations`] and [`Bootstrapper::cost`] give them for a built one.
pub fn key_plan(ring_n: usize, config: &BootstrapConfig) -> Result<BootstrapKeyPlan> {
    let n = config.slots;
    if !n.is_power_of_two() || n < 2 || n > ring_n / 2 {
        return Err(CkksError::InvalidParameters(format!(
            "bootstrapping slots {n} must be a power of two in 2..={}",
            ring_n / 2
        )));
    }
    let (cts, stc) = transforms(ring_n, config);
    let mut rotations = Vec::new();
    let mut switches = Vec::new();
    for m in cts.iter().chain(&stc) {
        let (r, s) = lintrans::rotation_plan(m);
        rotations.extend(r);
        switches.push(s);
    }
    let sub_sum = sub_sum_steps(n, ring_n / 2);
    rotations.extend(sub_sum.iter().copied());
    let half = (ring_n / 2) as i64;
    let mut rotations: Vec<i64> = rotations
        .into_iter()
        .map(|k| k.rem_euclid(half))
        .filter(|&k| k != 0)
        .collect();
    rotations.sort_unstable();
    rotations.dedup();
    Ok(BootstrapKeyPlan {
        rotations,
        cost: cost_of(config, n == ring_n / 2, &switches, sub_sum.len()),
    })
}

/// SubSum's rotations for `n` of `n_full` slots: `n, 2n, ..` below `n_full`.
fn sub_sum_steps(n: usize, n_full: usize) -> Vec<i64> {
    let mut steps = Vec::new();
    let mut step = n;
    while step < n_full {
        steps.push(step as i64);
        step *= 2;
    }
    steps
}

/// Key-switching work of one bootstrap from its transforms' `(baby, giant)` key switches.
fn cost_of(
    config: &BootstrapConfig,
    full: bool,
    transforms: &[(usize, usize)],
    sub_sum: usize,
) -> BootstrapCost {
    let mods = if full { 2 } else { 1 };
    let mut c = BootstrapCost::default();
    for &(b, g) in transforms {
        c.hoisted_rotations += b;
        c.key_switches += g;
    }
    // Encapsulation (2), SubSum, conjugation, and the relinearizations of EvalMod: the powers,
    // the products of the giant steps, the doublings.
    let d = config.degree;
    let g = (usize::BITS - d.leading_zeros()) as usize;
    let baby = 1usize << g.div_ceil(2).max(1);
    let powers = (baby - 1).min(d.saturating_sub(1)) + g.saturating_sub(g.div_ceil(2).max(1));
    let products = (d + 1) / baby - 1;
    c.key_switches += 2 + sub_sum + 1 + mods * (powers + products + config.double_angle as usize);
    c
}

impl Bootstrapper {
    /// Builds the circuit: checks the chain, encodes the DFT matrices.
    pub fn new(ctx: &Arc<Context>, config: BootstrapConfig) -> Result<Self> {
        let params = ctx.params();
        let n_full = ctx.n() / 2;
        let n = config.slots;
        if !n.is_power_of_two() || n < 2 || n > n_full {
            return Err(CkksError::InvalidParameters(format!(
                "bootstrapping slots {n} must be a power of two in 2..={n_full}"
            )));
        }
        if config.cts_levels == 0 || config.stc_levels == 0 || config.degree < 2 {
            return Err(CkksError::InvalidParameters(
                "bootstrapping needs at least one CoeffsToSlots and SlotsToCoeffs level and a \
                 Chebyshev degree of at least 2"
                    .into(),
            ));
        }
        let bound = f64::from(config.sparse_weight + 1) / 2.0;
        if config.k_bound < bound + 0.5 {
            return Err(CkksError::InvalidParameters(format!(
                "K = {} is below (h + 1) / 2 + 1/2 = {} for the sparse weight {}",
                config.k_bound,
                bound + 0.5,
                config.sparse_weight
            )));
        }
        let depth = config.depth();
        let top = ctx.max_level();
        if depth > top {
            return Err(CkksError::InvalidParameters(format!(
                "bootstrapping needs {depth} levels above the output but the chain has {top}"
            )));
        }
        if !(config.input_scale.is_finite()
            && config.input_scale >= 1.0
            && config.output_scale.is_finite()
            && config.output_scale >= 1.0)
        {
            return Err(CkksError::InvalidParameters(
                "scales must be finite and >= 1".into(),
            ));
        }
        // The encapsulation ring q0 * p0.
        let q0 = ctx.moduli()[0].value();
        let p0 = params.p()[0];
        let small_params = CkksParameters::from_primes(
            params.log_n(),
            vec![q0],
            vec![p0],
            1,
            SecretDistribution::FixedHammingWeight(config.sparse_weight.max(1)),
            None,
        )?;
        let small_log_qp = small_params.log_qp();
        if params.security_level().is_some() && small_log_qp > MAX_SPARSE_LOG_QP {
            return Err(CkksError::InvalidParameters(format!(
                "the sparse-secret ring q0 * p0 has {small_log_qp:.1} bits, above the \
                 {MAX_SPARSE_LOG_QP} bits assumed secure for a sparse secret"
            )));
        }
        let small = Context::new(small_params)?;
        let encoder = Encoder::new(ctx);
        let prime = |l: usize| ctx.moduli()[l].value() as f64;
        let q0f = q0 as f64;

        // Levels: CtS from `top`, EvalMod from `eval_level`, StC from `stc_level`.
        let eval_level = top - config.cts_levels;
        let poly_level = eval_level - evalmod::depth(config.degree);
        let stc_level = poly_level - config.double_angle as usize;
        let output_level = stc_level - config.stc_levels;

        // The scale leaving EvalMod, replayed from its operations.
        let mut s_mod = prime(poly_level);
        for k in 0..config.double_angle as usize {
            s_mod = s_mod * s_mod / prime(poly_level - k);
        }
        let target = q0f / 2f64.powf(config.message_ratio_bits);
        let boost = (target / config.input_scale).round().max(1.0);
        if boost > 2f64.powi(40) {
            return Err(CkksError::InvalidParameters(format!(
                "input scale 2^{:.1} is too small for q0 = 2^{:.1}",
                config.input_scale.log2(),
                q0f.log2()
            )));
        }
        let delta = config.input_scale * boost;
        if delta * config.message_bound * 4.0 > q0f {
            return Err(CkksError::InvalidParameters(format!(
                "input scale 2^{:.1} times the message bound leaves no room below q0",
                config.input_scale.log2()
            )));
        }
        let s_relabel = s_mod * 2.0 * PI * delta / q0f;

        // CoeffsToSlots and SlotsToCoeffs.
        let (cts_m, stc_m) = transforms(ctx.n(), &config);
        let mut cts = Vec::with_capacity(cts_m.len());
        for (i, m) in cts_m.iter().enumerate() {
            let l = top - i;
            let pt_scale = if i == 0 {
                prime(l) * prime(eval_level) / q0f
            } else {
                prime(l)
            };
            cts.push(Bsgs::new(
                &encoder,
                m,
                l,
                pt_scale,
                config.compact_matrices,
            )?);
        }

        let factor = (config.output_scale / s_relabel).powf(1.0 / stc_m.len() as f64);
        let mut stc = Vec::with_capacity(stc_m.len());
        for (i, m) in stc_m.iter().enumerate() {
            let l = stc_level - i;
            let pt_scale = prime(l) * factor;
            if pt_scale < 2f64.powi(20) {
                return Err(CkksError::InvalidParameters(format!(
                    "SlotsToCoeffs constants would be encoded at only 2^{:.1}",
                    pt_scale.log2()
                )));
            }
            stc.push(Bsgs::new(
                &encoder,
                m,
                l,
                pt_scale,
                config.compact_matrices,
            )?);
        }

        // SubSum rotations: n, 2n, .., N/4.
        let sub_sum = sub_sum_steps(n, n_full);

        // Chebyshev interpolant of cos(2 pi (K u - 1/4) / 2^r) on [-1, 1].
        let (k, r) = (config.k_bound, config.double_angle);
        let cheb = evalmod::interpolate(
            |u| (2.0 * PI * (k * u - 0.25) / 2f64.powi(r as i32)).cos(),
            config.degree,
        );

        let mut coeffs = vec![0i64; ctx.n()];
        coeffs[ctx.n() / 2] = 1;
        let mut monomial = RnsPoly::from_signed(ctx, &coeffs, ctx.q_count(), 0);
        monomial.make_ntt(ctx);

        Ok(Self {
            ctx: ctx.clone(),
            small,
            eval: Evaluator::new(ctx),
            config,
            cts,
            stc,
            cheb,
            sub_sum,
            monomial,
            boost: boost as i64,
            eval_level,
            output_level,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BootstrapConfig {
        &self.config
    }

    /// The parameters' context.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// The ring `q0 * p0` of the encapsulation key.
    pub(crate) fn encapsulation_context(&self) -> &Context {
        &self.small
    }

    /// Checks that `keys` has every key this circuit uses, of the right shapes.
    pub fn check_keys(&self, keys: &BootstrapKeys) -> Result<()> {
        self.check_parts(
            &keys.relin,
            &keys.galois,
            &keys.to_sparse,
            &keys.from_sparse,
        )
    }

    /// Checks shared keys: the relinearization key, every Galois key bootstrapping uses,
    /// and the encapsulation keys, all of this bootstrapper's parameters.
    pub fn check_shared_keys(
        &self,
        relin: &RelinKey,
        galois: &GaloisKeys,
        encapsulation: &EncapsulationKeys,
    ) -> Result<()> {
        self.check_parts(
            relin,
            galois,
            &encapsulation.to_sparse,
            &encapsulation.from_sparse,
        )
    }

    fn check_parts(
        &self,
        relin: &RelinKey,
        galois: &GaloisKeys,
        to_sparse: &KeySwitchKey,
        from_sparse: &KeySwitchKey,
    ) -> Result<()> {
        // Bootstrapping switches keys from the top of the chain down: its keys span it all.
        let top = self.ctx.q_count() - 1;
        relin.key.check_in(&self.ctx)?;
        relin.key.check_serves(top, 0)?;
        from_sparse.check_in(&self.ctx)?;
        from_sparse.check_serves(top, 0)?;
        to_sparse.check_in(&self.small)?;
        for (step, g) in self.galois_elements() {
            match galois.keys.get(&g) {
                Some(k) => {
                    k.check_in(&self.ctx)?;
                    k.check_serves(top, step)?;
                }
                None => {
                    return Err(CkksError::MissingGaloisKey {
                        step,
                        galois_element: g,
                    })
                }
            }
        }
        Ok(())
    }

    /// `(step, Galois element)` of every rotation bootstrapping uses, and of conjugation
    /// (step 0).
    pub fn galois_elements(&self) -> Vec<(i64, u64)> {
        self.rotations()
            .into_iter()
            .map(|k| (k, self.ctx.galois_element(k)))
            .chain(std::iter::once((0, self.ctx.conjugation_element())))
            .collect()
    }

    /// Level of bootstrapped ciphertexts.
    pub fn output_level(&self) -> usize {
        self.output_level
    }

    /// Scale of bootstrapped ciphertexts.
    pub fn output_scale(&self) -> f64 {
        self.config.output_scale
    }

    /// The rotation steps whose Galois keys bootstrapping needs (besides
    /// conjugation).
    pub fn rotations(&self) -> Vec<i64> {
        let mut r: Vec<i64> = self
            .cts
            .iter()
            .chain(&self.stc)
            .flat_map(|t| t.rotations())
            .chain(self.sub_sum.iter().copied())
            .map(|k| k.rem_euclid((self.ctx.n() / 2) as i64))
            .filter(|&k| k != 0)
            .collect();
        r.sort_unstable();
        r.dedup();
        r
    }

    /// Bytes of the encoded DFT matrices held by this bootstrapper.
    pub fn matrix_bytes(&self) -> usize {
        self.cts.iter().chain(&self.stc).map(|t| t.bytes()).sum()
    }

    /// Key-switching operations of one bootstrap.
    pub fn cost(&self) -> BootstrapCost {
        let switches: Vec<(usize, usize)> = self
            .cts
            .iter()
            .chain(&self.stc)
            .map(|t| t.key_switches())
            .collect();
        cost_of(
            &self.config,
            self.config.slots == self.ctx.n() / 2,
            &switches,
            self.sub_sum.len(),
        )
    }

    /// Generates the evaluation keys of this circuit for the secret key of
    /// `keygen`: relinearization, the Galois keys of the DFTs, SubSum and
    /// conjugation, and the two encapsulation keys.
    pub fn generate_keys(&self, keygen: &mut KeyGenerator) -> Result<BootstrapKeys> {
        let relin = keygen.relin_key();
        let galois = keygen.galois_keys(&self.rotations(), true);
        let (to_sparse, from_sparse) =
            keygen.sparse_encapsulation_keys(&self.small, self.config.sparse_weight)?;
        Ok(BootstrapKeys {
            relin,
            galois,
            to_sparse,
            from_sparse,
        })
    }

    /// The encapsulation keys alone, for a key set whose relinearization and Galois keys the
    /// caller generates (with [`Self::rotations`] and conjugation among the Galois keys).
    pub fn generate_encapsulation_keys(
        &self,
        keygen: &mut KeyGenerator,
    ) -> Result<EncapsulationKeys> {
        let (to_sparse, from_sparse) =
            keygen.sparse_encapsulation_keys(&self.small, self.config.sparse_weight)?;
        Ok(EncapsulationKeys {
            to_sparse,
            from_sparse,
        })
    }

    /// Multiplies every slot by `i` (by `-i` when `negate`): the polynomial
    /// times `X^(N/2)`, no level.
    fn mul_i(&self, ct: &mut Ciphertext, negate: bool) {
        let n = self.ctx.n();
        for p in ct.polys.iter_mut() {
            for (i, limb) in p.data.chunks_mut(n).enumerate() {
                let m = &self.ctx.moduli()[i];
                pointwise::binary_assign(m, Op::Mul, limb, &self.monomial.data[i * n..(i + 1) * n]);
            }
            if negate {
                p.neg_assign(&self.ctx);
            }
        }
        ct.seed = None;
    }

    /// The level-0 ciphertext switched to the sparse secret (ring `q0 * p0`).
    fn enter_sparse(&self, ct: &Ciphertext, to_sparse: &KeySwitchKey) -> Result<Ciphertext> {
        let n = self.ctx.n();
        to_sparse.check_in(&self.small)?;
        let limb0 = |p: &RnsPoly| RnsPoly {
            data: p.data[..n].to_vec(),
            q_limbs: 1,
            p_limbs: 0,
            ntt: true,
        };
        let mut c0 = limb0(&ct.polys[0]);
        let c1 = limb0(&ct.polys[1]);
        let mut o1 = RnsPoly::zero(&self.small, 1, 0, true);
        let k = to_sparse;
        rns::key_switch_add(&self.small, &c1, &k.b, &k.a, None, &mut c0, &mut o1);
        Ok(Ciphertext {
            polys: vec![c0, o1],
            scale: ct.scale,
            seed: None,
        })
    }

    /// ModRaise: the level-0 ciphertext's centred coefficients over all of `Q`.
    fn mod_raise(&self, ct: &Ciphertext) -> Ciphertext {
        let ctx = &self.ctx;
        let q0 = ctx.moduli()[0].value();
        let polys = ct
            .polys
            .iter()
            .map(|p| {
                let mut c = p.clone();
                c.make_coeff(ctx);
                let signed: Vec<i64> = c.data[..ctx.n()]
                    .iter()
                    .map(|&v| {
                        let v = v % q0;
                        if v > q0 / 2 {
                            v as i64 - q0 as i64
                        } else {
                            v as i64
                        }
                    })
                    .collect();
                let mut r = RnsPoly::from_signed(ctx, &signed, ctx.q_count(), 0);
                r.make_ntt(ctx);
                r
            })
            .collect();
        Ciphertext {
            polys,
            scale: q0 as f64,
            seed: None,
        }
    }

    /// Back from the sparse secret to the user's secret, at the top level.
    fn leave_sparse(&self, ct: &Ciphertext, from_sparse: &KeySwitchKey) -> Result<Ciphertext> {
        let ctx = &self.ctx;
        from_sparse.check_in(ctx)?;
        from_sparse.check_serves(ct.level(), 0)?;
        let mut c0 = ct.polys[0].clone();
        let mut c1 = RnsPoly::zero(ctx, ct.level() + 1, 0, true);
        let k = from_sparse;
        rns::key_switch_add(ctx, &ct.polys[1], &k.b, &k.a, None, &mut c0, &mut c1);
        Ok(Ciphertext {
            polys: vec![c0, c1],
            scale: ct.scale,
            seed: None,
        })
    }

    /// `sin(2 pi x)` for `u = x / K` (level `eval_level`): the Chebyshev
    /// interpolant, then the double-angle steps.
    fn eval_mod(&self, u: Ciphertext, rk: &RelinKey) -> Result<Ciphertext> {
        let ev = &self.eval;
        let poly_level = self.eval_level - evalmod::depth(self.config.degree);
        let scale = self.ctx.moduli()[poly_level].value() as f64;
        let mut y = ChebEvaluator::new(ev, rk, u, self.config.degree)
            .evaluate(&self.cheb, poly_level, scale)?;
        for _ in 0..self.config.double_angle {
            y = evalmod::double_angle(ev, rk, &y)?;
        }
        Ok(y)
    }

    /// Bootstraps `ct` (any level, size 2, scale [`BootstrapConfig::input_scale`] within
    /// [`INPUT_SCALE_TOLERANCE_BITS`]; the result's scale is the output scale times
    /// `scale / input_scale`).
    pub fn bootstrap(&self, ct: &Ciphertext, keys: &BootstrapKeys) -> Result<Ciphertext> {
        Ok(self.bootstrap_timed(ct, keys)?.0)
    }

    /// [`Self::bootstrap`] with the time of each phase.
    pub fn bootstrap_timed(
        &self,
        ct: &Ciphertext,
        keys: &BootstrapKeys,
    ) -> Result<(Ciphertext, BootstrapTimings)> {
        self.run(
            ct,
            &keys.relin,
            &keys.galois,
            &keys.to_sparse,
            &keys.from_sparse,
        )
    }

    /// [`Self::bootstrap`] with keys shared with the circuit around the bootstraps: its
    /// relinearization key, Galois keys that include [`Self::rotations`] and conjugation,
    /// and the encapsulation keys.
    pub fn bootstrap_with(
        &self,
        ct: &Ciphertext,
        relin: &RelinKey,
        galois: &GaloisKeys,
        encapsulation: &EncapsulationKeys,
    ) -> Result<Ciphertext> {
        Ok(self
            .run(
                ct,
                relin,
                galois,
                &encapsulation.to_sparse,
                &encapsulation.from_sparse,
            )?
            .0)
    }

    fn run(
        &self,
        ct: &Ciphertext,
        relin: &RelinKey,
        galois: &GaloisKeys,
        to_sparse: &KeySwitchKey,
        from_sparse: &KeySwitchKey,
    ) -> Result<(Ciphertext, BootstrapTimings)> {
        let mut times = BootstrapTimings::default();
        let mut clock = std::time::Instant::now();
        let mut lap = |slot: &mut f64| {
            *slot = clock.elapsed().as_secs_f64();
            clock = std::time::Instant::now();
        };
        let ev = &self.eval;
        if ct.size() != 2 {
            return Err(CkksError::CiphertextSize {
                expected: 2,
                found: ct.size(),
            });
        }
        // A managed circuit's values drift from the nominal scale by a few 1e-5 bits (primes
        // are not powers of two); the relabelling below uses the ciphertext's own scale, so
        // the result carries the same relative offset from the output scale.
        if (ct.scale() / self.config.input_scale).log2().abs() > INPUT_SCALE_TOLERANCE_BITS {
            return Err(CkksError::InvalidInput(format!(
                "bootstrapping expects scale 2^{:.4}, the ciphertext has 2^{:.4}",
                self.config.input_scale.log2(),
                ct.scale().log2()
            )));
        }
        let gk = galois;
        let mut c = ev.drop_to_level(ct, 0)?;
        if self.boost > 1 {
            ev.mul_integer_assign(&mut c, self.boost)?;
        }
        let c = self.enter_sparse(&c, to_sparse)?;
        let c = self.mod_raise(&c);
        let mut c = self.leave_sparse(&c, from_sparse)?;
        lap(&mut times.mod_raise);
        for &step in &self.sub_sum {
            let r = ev.rotate(&c, step, gk)?;
            ev.add_assign(&mut c, &r)?;
        }
        lap(&mut times.sub_sum);
        for t in &self.cts {
            c = t.apply(ev, &c, gk)?;
            ev.rescale_assign(&mut c)?;
        }
        let conj = ev.conjugate(&c, gk)?;
        let full = self.config.slots == self.ctx.n() / 2;
        let (re, im) = if full {
            let re = ev.add(&c, &conj)?;
            let mut im = ev.sub(&c, &conj)?;
            self.mul_i(&mut im, true);
            (re, Some(im))
        } else {
            (ev.add(&c, &conj)?, None)
        };
        lap(&mut times.coeffs_to_slots);
        let mut y = if let Some(im) = im {
            let (re, im) = rayon::join(|| self.eval_mod(re, relin), || self.eval_mod(im, relin));
            let mut im = im?;
            self.mul_i(&mut im, false);
            let mut re = re?;
            ev.add_assign(&mut re, &im)?;
            re
        } else {
            self.eval_mod(re, relin)?
        };
        lap(&mut times.eval_mod);
        // sin(2 pi x) = 2 pi delta m / q0: a relabelling of the scale.
        let q0 = self.ctx.moduli()[0].value() as f64;
        let delta = ct.scale() * self.boost as f64;
        y.scale = y.scale * 2.0 * PI * delta / q0;
        for t in &self.stc {
            y = t.apply(ev, &y, gk)?;
            ev.rescale_assign(&mut y)?;
        }
        lap(&mut times.slots_to_coeffs);
        Ok((y, times))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(re: f64, im: f64) -> Complex64 {
        Complex64::new(re, im)
    }

    /// The special DFT of the encoder: slots of a coefficient vector.
    fn reference_dft(w: &[Complex64]) -> Vec<Complex64> {
        let n = w.len();
        let m = 4 * n;
        let mut g = 1usize;
        (0..n)
            .map(|_| {
                let e = g;
                g = (g * 5) % m;
                w.iter().enumerate().fold(c(0.0, 0.0), |acc, (k, &x)| {
                    acc + x * Complex64::from_angle(2.0 * PI * ((e * k) % m) as f64 / m as f64)
                })
            })
            .collect()
    }

    fn bitrev(v: &[Complex64]) -> Vec<Complex64> {
        let bits = v.len().trailing_zeros();
        (0..v.len())
            .map(|i| v[super::super::ntt::bit_reverse(i, bits)])
            .collect()
    }

    use super::super::encrypt::{Decryptor, SymmetricEncryptor};

    /// A bootstrapper on insecure N = 2^12 parameters with keys.
    fn small(slots: usize) -> (Arc<Context>, Bootstrapper, BootstrapKeys, KeyGenerator) {
        let cfg = BootstrapConfig::new(slots);
        let params = bootstrap_parameters(12, 1, 40, &cfg, false).unwrap();
        let ctx = Context::new(params).unwrap();
        let bt = Bootstrapper::new(&ctx, cfg).unwrap();
        let mut kg = KeyGenerator::new_with_insecure_test_seed(&ctx, 3);
        let keys = bt.generate_keys(&mut kg).unwrap();
        (ctx, bt, keys, kg)
    }

    #[test]
    fn the_key_plan_matches_a_built_bootstrapper() {
        // Full and sparse slots: the plan without encoding agrees with the encoded circuit.
        for slots in [2048usize, 64] {
            let cfg = BootstrapConfig::new(slots);
            let params = bootstrap_parameters(12, 1, 40, &cfg, false).unwrap();
            let ctx = Context::new(params).unwrap();
            let bt = Bootstrapper::new(&ctx, cfg.clone()).unwrap();
            let plan = key_plan(ctx.n(), &cfg).unwrap();
            assert_eq!(plan.rotations, bt.rotations(), "slots {slots}");
            assert_eq!(plan.cost, bt.cost(), "slots {slots}");
            assert!(!plan.rotations.is_empty() && plan.cost.key_switches > 0);
        }
        assert!(key_plan(4096, &BootstrapConfig::new(4096)).is_err());
    }

    fn sample(len: usize, period: usize) -> Vec<Complex64> {
        (0..len)
            .map(|i| {
                let j = (i % period) as f64;
                c((j * 0.731).sin(), (j * 0.377).cos() * 0.5)
            })
            .collect()
    }

    #[test]
    fn coeffs_to_slots_then_slots_to_coeffs_is_the_identity() {
        for slots in [2048usize, 128] {
            let (ctx, bt, keys, kg) = small(slots);
            let enc_ = Encoder::new(&ctx);
            let z = sample(2048, slots);
            // At scale q0, as ModRaise leaves it.
            let q0 = ctx.moduli()[0].value() as f64;
            let pt = enc_.encode_complex(&z, ctx.max_level(), q0).unwrap();
            let mut enc = SymmetricEncryptor::new_with_insecure_test_seed(&ctx, kg.secret_key(), 5);
            let mut ct = enc.encrypt(&pt).unwrap();
            for t in &bt.cts {
                ct = t.apply(&bt.eval, &ct, &keys.galois).unwrap();
                bt.eval.rescale_assign(&mut ct).unwrap();
            }
            let stc_level = bt.output_level + bt.config.stc_levels;
            bt.eval.drop_to_level_assign(&mut ct, stc_level).unwrap();
            for t in &bt.stc {
                ct = t.apply(&bt.eval, &ct, &keys.galois).unwrap();
                bt.eval.rescale_assign(&mut ct).unwrap();
            }
            let dec = Decryptor::new(&ctx, kg.secret_key());
            let got = enc_.decode_complex(&dec.decrypt(&ct).unwrap()).unwrap();
            // CtS carries the factor 1/(2K) * 2n/N; the sparse fold doubles it.
            let mut f = 0.5 / bt.config.k_bound * (2.0 * slots as f64 / ctx.n() as f64);
            if slots < ctx.n() / 2 {
                f *= 2.0;
            }
            let err = got
                .iter()
                .zip(&z)
                .map(|(g, w)| (*g - w.scale(f)).norm() / f)
                .fold(0f64, f64::max);
            assert!(
                err < 2f64.powi(-20),
                "slots {slots}: max error 2^{:.1}",
                err.log2()
            );
        }
    }

    #[test]
    fn eval_mod_matches_the_sine_it_approximates() {
        let (ctx, bt, keys, kg) = small(2048);
        let enc_ = Encoder::new(&ctx);
        let k = bt.config.k_bound;
        // Points near integers (what ModRaise produces) and anywhere in [-K, K].
        let x: Vec<f64> = (0..2048)
            .map(|i| {
                if i % 2 == 0 {
                    ((i % 33) as f64 - 16.0) + ((i as f64 * 0.61).sin() * 0.01)
                } else {
                    (i as f64 * 0.013).sin() * (k - 0.01)
                }
            })
            .collect();
        let u: Vec<f64> = x.iter().map(|v| v / k).collect();
        let scale = ctx.moduli()[bt.eval_level].value() as f64;
        let pt = enc_.encode(&u, bt.eval_level, scale).unwrap();
        let mut enc = SymmetricEncryptor::new_with_insecure_test_seed(&ctx, kg.secret_key(), 9);
        let ct = enc.encrypt(&pt).unwrap();
        let y = bt.eval_mod(ct, &keys.relin).unwrap();
        assert_eq!(y.level(), bt.output_level + bt.config.stc_levels);
        let dec = Decryptor::new(&ctx, kg.secret_key());
        let got = enc_.decode(&dec.decrypt(&y).unwrap()).unwrap();
        let err = got
            .iter()
            .zip(&x)
            .map(|(g, v)| (g - (2.0 * PI * v).sin()).abs())
            .fold(0f64, f64::max);
        assert!(err < 2f64.powi(-25), "max error 2^{:.1}", err.log2());
    }

    #[test]
    fn refuses_chains_too_short_and_k_below_the_secret_bound() {
        let cfg = BootstrapConfig::new(2048);
        let params = CkksParameters::builder()
            .log_n(12)
            .scale_bits(vec![40; 8])
            .special_bits(vec![60; 3])
            .insecure_no_security_check()
            .build()
            .unwrap();
        let ctx = Context::new(params).unwrap();
        assert!(matches!(
            Bootstrapper::new(&ctx, cfg.clone()),
            Err(CkksError::InvalidParameters(m)) if m.contains("levels")
        ));
        let mut low_k = cfg.clone();
        low_k.k_bound = 8.0;
        let params = bootstrap_parameters(12, 1, 40, &cfg, false).unwrap();
        let ctx = Context::new(params).unwrap();
        assert!(matches!(
            Bootstrapper::new(&ctx, low_k),
            Err(CkksError::InvalidParameters(m)) if m.contains("(h + 1) / 2")
        ));
    }

    #[test]
    fn the_128_bit_set_passes_the_table_and_leaves_ten_levels() {
        let cfg = BootstrapConfig::new(1 << 15);
        let params = bootstrap_parameters(16, 10, 40, &cfg, true).unwrap();
        assert!(params.log_qp() <= 1772.0);
        assert_eq!(params.max_level() - cfg.depth(), 10);
        // The encapsulation ring q0 * p0 is within the sparse-secret bound.
        let small = (params.q()[0] as f64).log2() + (params.p()[0] as f64).log2();
        assert!(small <= MAX_SPARSE_LOG_QP, "{small}");
        assert!(params.dnum() <= 4, "dnum {}", params.dnum());
        // Far more network levels do not fit at 128-bit.
        assert!(matches!(
            bootstrap_parameters(16, 20, 40, &cfg, true),
            Err(CkksError::Insecure { .. })
        ));
    }

    #[test]
    fn grouped_stages_are_the_special_dft_and_its_inverse() {
        for n in [4usize, 16, 64] {
            let w: Vec<Complex64> = (0..n)
                .map(|i| c((i as f64 * 0.37).sin(), (i as f64 * 0.11).cos()))
                .collect();
            let z = reference_dft(&w);
            for levels in 1..=3 {
                let stc = group(&dft_stages(n, false), levels, true);
                let mut v = bitrev(&w);
                for m in &stc {
                    v = m.apply_plain(&v);
                }
                for (a, b) in v.iter().zip(&z) {
                    assert!((*a - *b).norm() < 1e-9, "n={n} levels={levels}");
                }
                let cts = group(&dft_stages(n, true), levels, false);
                let mut u = z.clone();
                for m in &cts {
                    u = m.apply_plain(&u);
                }
                for (a, b) in u.iter().zip(&bitrev(&w)) {
                    assert!((*a - *b).norm() < 1e-9, "inverse n={n} levels={levels}");
                }
            }
        }
    }
}
