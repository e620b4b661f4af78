//! Key material and key generation.
//!
//! Contract: all keys live in NTT form. The secret key is stored over all
//! ciphertext and special primes (`Q * P`). The public key is `(b, a)` over
//! `Q * P` with `b = -a*s + e`. A key-switching key from `s'` to `s` has one pair
//! `(b_j, a_j)` over `Q * P` per digit `j` with
//! `b_j = -a_j*s + e_j + P * [s' on the primes of digit j, 0 elsewhere]`.
//! Every uniform `a` is expanded from a 32-byte ChaCha20 seed, which is what
//! gets serialized. Randomness comes from ChaCha20 seeded by the operating
//! system; a fixed seed is only reachable through the explicitly named
//! `*_with_insecure_test_seed` constructors.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use rand::{Rng, RngCore};
use rand_chacha::rand_core::{OsRng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::context::Context;
use super::error::{CkksError, Result};
use super::params::{SecretDistribution, ERROR_STD_DEV};
use super::poly::RnsPoly;

/// A ChaCha20 generator seeded from the operating system.
pub(crate) fn os_rng() -> Result<ChaCha20Rng> {
    let mut seed = [0u8; 32];
    OsRng
        .try_fill_bytes(&mut seed)
        .map_err(|e| CkksError::Rng(e.to_string()))?;
    Ok(ChaCha20Rng::from_seed(seed))
}

/// A ChaCha20 generator from a fixed test seed (deterministic, insecure).
pub(crate) fn test_rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// Samples `N` coefficients of a rounded Gaussian with standard deviation 3.2,
/// truncated at 6 sigma.
pub(crate) fn sample_gaussian(rng: &mut ChaCha20Rng, n: usize) -> Vec<i64> {
    let bound = (6.0 * ERROR_STD_DEV).round();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        // Box-Muller: two normals per draw.
        let u1: f64 = 1.0 - rng.gen::<f64>(); // (0, 1]
        let u2: f64 = rng.gen::<f64>();
        let r = (-2.0 * u1.ln()).sqrt() * ERROR_STD_DEV;
        let t = 2.0 * std::f64::consts::PI * u2;
        for z in [r * t.cos(), r * t.sin()] {
            let v = z.round();
            if v.abs() <= bound && out.len() < n {
                out.push(v as i64);
            }
        }
    }
    out
}

/// Samples a ternary secret with the given distribution.
pub(crate) fn sample_ternary(
    rng: &mut ChaCha20Rng,
    n: usize,
    dist: SecretDistribution,
) -> Vec<i64> {
    match dist {
        SecretDistribution::UniformTernary => (0..n).map(|_| rng.gen_range(-1i64..=1)).collect(),
        SecretDistribution::FixedHammingWeight(h) => {
            let mut idx: Vec<usize> = (0..n).collect();
            let mut out = vec![0i64; n];
            for i in 0..(h as usize).min(n) {
                let j = rng.gen_range(i..n);
                idx.swap(i, j);
                out[idx[i]] = if rng.gen::<bool>() { 1 } else { -1 };
            }
            out
        }
    }
}

/// Draws a fresh 32-byte seed.
pub(crate) fn fresh_seed(rng: &mut ChaCha20Rng) -> [u8; 32] {
    let mut s = [0u8; 32];
    rng.fill_bytes(&mut s);
    s
}

/// The secret key `s` (NTT form over `Q * P`).
#[derive(Clone, Debug, PartialEq)]
pub struct SecretKey {
    pub(crate) s: RnsPoly,
}

/// The public encryption key `(b, a) = (-a*s + e, a)` over `Q * P`, NTT form.
#[derive(Clone, Debug, PartialEq)]
pub struct PublicKey {
    pub(crate) b: RnsPoly,
    pub(crate) a: RnsPoly,
    pub(crate) seed: [u8; 32],
}

/// A hybrid key-switching key (one `(b_j, a_j)` per digit, over `Q * P`).
///
/// A key may stop below the top of the chain: over `Q_l * P` (the first `l + 1` ciphertext
/// primes and the special primes) with the digits that level has. It is the restriction of
/// a full key to those primes (the digits of every level are a prefix of the full
/// decomposition), so it switches any ciphertext at level `l` or below, and takes
/// `(l + 1 + K) / (L + 1 + K)` of the limbs and fewer digits. Keys whose rotations a
/// circuit only does low in the chain are made this way.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct KeySwitchKey {
    pub(crate) b: Vec<RnsPoly>,
    pub(crate) a: Vec<RnsPoly>,
    pub(crate) seeds: Vec<[u8; 32]>,
}

impl KeySwitchKey {
    /// Checks the key's shape against `ctx`: one pair per digit of its top level, every
    /// polynomial over the same `Q_l * P`.
    pub(crate) fn check_in(&self, ctx: &Context) -> Result<()> {
        let bad =
            || CkksError::InvalidInput("key does not belong to this context's parameters".into());
        let ql = self.b.first().ok_or_else(bad)?.q_limbs;
        if !(1..=ctx.q_count()).contains(&ql)
            || self.b.len() != ql.div_ceil(ctx.params().digit_size())
            || self.a.len() != self.b.len()
        {
            return Err(bad());
        }
        for p in self.b.iter().chain(&self.a) {
            if p.q_limbs != ql
                || p.p_limbs != ctx.p_count()
                || !p.ntt
                || p.data.len() != (ql + p.p_limbs) * ctx.n()
            {
                return Err(bad());
            }
        }
        Ok(())
    }

    /// Bytes the key holds in memory (both halves of every digit).
    pub(crate) fn memory_bytes(&self) -> usize {
        self.b.iter().chain(&self.a).map(|p| p.data.len() * 8).sum()
    }

    /// The highest ciphertext level the key switches (its ciphertext primes less one).
    pub(crate) fn top_level(&self) -> usize {
        self.b.first().map_or(0, |p| p.q_limbs.saturating_sub(1))
    }

    /// Refuses a ciphertext at `level` above the key's top level; `step` names the key
    /// (0 for conjugation and relinearization) in the error.
    pub(crate) fn check_serves(&self, level: usize, step: i64) -> Result<()> {
        if level > self.top_level() {
            return Err(CkksError::KeyLevel {
                step,
                key_level: self.top_level(),
                level,
            });
        }
        Ok(())
    }
}

/// Relinearization key: switches `s^2` to `s`.
#[derive(Clone, Debug, PartialEq)]
pub struct RelinKey {
    pub(crate) key: KeySwitchKey,
}

impl RelinKey {
    /// The highest ciphertext level the key relinearizes (the chain's top for keys this
    /// generator makes; a key read from bytes may stop lower).
    pub fn top_level(&self) -> usize {
        self.key.top_level()
    }
}

/// Galois keys: for each Galois element `g`, a key switching `s(X^g)` to `s`.
#[derive(Clone, Debug, PartialEq)]
pub struct GaloisKeys {
    pub(crate) keys: BTreeMap<u64, KeySwitchKey>,
}

impl GaloisKeys {
    /// The Galois elements present.
    pub fn galois_elements(&self) -> Vec<u64> {
        self.keys.keys().copied().collect()
    }
    /// Whether a key for Galois element `g` is present.
    pub fn contains(&self, g: u64) -> bool {
        self.keys.contains_key(&g)
    }
    /// The highest ciphertext level the key for Galois element `g` serves, if present.
    pub fn top_level(&self, g: u64) -> Option<usize> {
        self.keys.get(&g).map(KeySwitchKey::top_level)
    }
    /// Bytes the keys hold in memory (both halves of every digit).
    pub fn memory_bytes(&self) -> usize {
        self.keys.values().map(KeySwitchKey::memory_bytes).sum()
    }
}

/// Generates a secret key and the keys derived from it.
pub struct KeyGenerator {
    ctx: Arc<Context>,
    sk: SecretKey,
    rng: ChaCha20Rng,
}

impl KeyGenerator {
    /// A new secret key from operating-system randomness.
    pub fn new(ctx: &Arc<Context>) -> Result<Self> {
        let rng = os_rng()?;
        Ok(Self::with_rng(ctx, rng))
    }

    /// A new secret key from a fixed seed. Deterministic and therefore
    /// **insecure**: for reproducible tests only.
    pub fn new_with_insecure_test_seed(ctx: &Arc<Context>, seed: u64) -> Self {
        Self::with_rng(ctx, test_rng(seed))
    }

    /// A generator for further keys of an existing secret key (OS randomness).
    pub fn from_secret_key(ctx: &Arc<Context>, sk: SecretKey) -> Result<Self> {
        Ok(Self {
            ctx: ctx.clone(),
            sk,
            rng: os_rng()?,
        })
    }

    fn with_rng(ctx: &Arc<Context>, mut rng: ChaCha20Rng) -> Self {
        let coeffs = sample_ternary(&mut rng, ctx.n(), ctx.params().secret_distribution());
        let mut s = RnsPoly::from_signed(ctx, &coeffs, ctx.q_count(), ctx.p_count());
        s.make_ntt(ctx);
        Self {
            ctx: ctx.clone(),
            sk: SecretKey { s },
            rng,
        }
    }

    /// The secret key.
    pub fn secret_key(&self) -> &SecretKey {
        &self.sk
    }

    fn error_poly(&mut self, q_limbs: usize, p_limbs: usize) -> RnsPoly {
        let e = sample_gaussian(&mut self.rng, self.ctx.n());
        let mut p = RnsPoly::from_signed(&self.ctx, &e, q_limbs, p_limbs);
        p.make_ntt(&self.ctx);
        p
    }

    /// A fresh public key.
    pub fn public_key(&mut self) -> PublicKey {
        let ctx = self.ctx.clone();
        let (nq, np) = (ctx.q_count(), ctx.p_count());
        let seed = fresh_seed(&mut self.rng);
        let a = RnsPoly::uniform_from_seed(&ctx, &seed, nq, np);
        let mut b = self.error_poly(nq, np);
        let mut as_ = a.clone();
        as_.mul_assign(&ctx, &self.sk.s);
        b.sub_assign(&ctx, &as_);
        PublicKey { b, a, seed }
    }

    /// Key switching from `s_prime` (NTT over `Q * P`) to the secret key.
    fn key_switch_key(&mut self, s_prime: &RnsPoly) -> KeySwitchKey {
        let ctx = self.ctx.clone();
        switch_key(&ctx, &mut self.rng, s_prime, &self.sk.s, ctx.q_count())
    }

    /// The two keys of sparse-secret encapsulation for bootstrapping: a fresh
    /// ephemeral secret `s'` with exactly `h` nonzero coefficients is drawn;
    /// the first key switches from the secret key to `s'` and lives in
    /// `small` (the ring over `q0 * p0` only, so the sparse secret is only
    /// ever exposed under that small modulus); the second switches from `s'`
    /// back to the secret key over all of `Q * P` (its RLWE secret is the
    /// dense key). `s'` itself is dropped here.
    pub(crate) fn sparse_encapsulation_keys(
        &mut self,
        small: &Context,
        h: u32,
    ) -> Result<(KeySwitchKey, KeySwitchKey)> {
        let ctx = self.ctx.clone();
        let n = ctx.n();
        if small.n() != n
            || small.q_count() != 1
            || small.p_count() != 1
            || small.moduli()[0].value() != ctx.moduli()[0].value()
            || small.moduli()[1].value() != ctx.moduli()[ctx.q_count()].value()
        {
            return Err(CkksError::InvalidInput(
                "the encapsulation ring must be q0 * p0 of the main parameters".into(),
            ));
        }
        let coeffs = sample_ternary(&mut self.rng, n, SecretDistribution::FixedHammingWeight(h));
        let mut sparse_big = RnsPoly::from_signed(&ctx, &coeffs, ctx.q_count(), ctx.p_count());
        sparse_big.make_ntt(&ctx);
        let mut sparse_small = RnsPoly::from_signed(small, &coeffs, 1, 1);
        sparse_small.make_ntt(small);
        // The dense key's limbs of q0 and p0 (same primes, same NTT tables).
        let p0 = ctx.q_count();
        let mut dense_small = RnsPoly::zero(small, 1, 1, true);
        dense_small.data[..n].copy_from_slice(&self.sk.s.data[..n]);
        dense_small.data[n..].copy_from_slice(&self.sk.s.data[p0 * n..(p0 + 1) * n]);
        let to_sparse = switch_key(small, &mut self.rng, &dense_small, &sparse_small, 1);
        let from_sparse = self.key_switch_key(&sparse_big);
        Ok((to_sparse, from_sparse))
    }

    /// The relinearization key (switches `s^2` to `s`).
    pub fn relin_key(&mut self) -> RelinKey {
        let mut s2 = self.sk.s.clone();
        s2.mul_assign(&self.ctx, &self.sk.s);
        RelinKey {
            key: self.key_switch_key(&s2),
        }
    }

    /// Galois keys for the rotation `steps` (positive: slot `i+k` moves to
    /// slot `i`) and, if `conjugation`, for complex conjugation, all over the whole chain.
    pub fn galois_keys(&mut self, steps: &[i64], conjugation: bool) -> GaloisKeys {
        let top = self.ctx.q_count() - 1;
        let steps: Vec<(i64, usize)> = steps.iter().map(|&k| (k, top)).collect();
        self.galois_keys_to_levels(&steps, conjugation.then_some(top))
    }

    /// Galois keys for `(step, level)` pairs, each key made for ciphertexts up to `level`
    /// only (see [`KeySwitchKey`]: smaller, and refused above that level), and for
    /// conjugation up to the given level. A step named twice, or two steps with the same
    /// Galois element, get one key at the higher level; levels above the chain's top are
    /// taken as the top.
    pub fn galois_keys_to_levels(
        &mut self,
        steps: &[(i64, usize)],
        conjugation: Option<usize>,
    ) -> GaloisKeys {
        let top = self.ctx.q_count() - 1;
        let mut wanted: BTreeMap<u64, usize> = BTreeMap::new();
        let elements = steps
            .iter()
            .map(|&(k, l)| (self.ctx.galois_element(k), l))
            .chain(conjugation.map(|l| (self.ctx.conjugation_element(), l)));
        for (g, l) in elements.filter(|&(g, _)| g != 1) {
            let e = wanted.entry(g).or_insert(0);
            *e = (*e).max(l.min(top));
        }
        let ctx = self.ctx.clone();
        let mut keys = BTreeMap::new();
        for (g, l) in wanted {
            let sg = self.sk.s.automorphism_ntt(&ctx, g);
            keys.insert(g, switch_key(&ctx, &mut self.rng, &sg, &self.sk.s, l + 1));
        }
        GaloisKeys { keys }
    }
}

/// A key switching `s_from` to `s_to` (both NTT over all of `ctx`'s `Q * P`) for
/// ciphertexts of at most `q_limbs` primes: over `Q_{q_limbs - 1} * P`, one pair per digit
/// of that level, `b_j = -a_j*s_to + e_j + P * [s_from on the primes of digit j]`.
/// `q_limbs` is clamped to `1..=L+1`.
pub(crate) fn switch_key(
    ctx: &Context,
    rng: &mut ChaCha20Rng,
    s_from: &RnsPoly,
    s_to: &RnsPoly,
    q_limbs: usize,
) -> KeySwitchKey {
    let n = ctx.n();
    let (nq, np) = (q_limbs.clamp(1, ctx.q_count()), ctx.p_count());
    let alpha = ctx.params().digit_size();
    let dnum = nq.div_ceil(alpha);
    // The target secret over the key's primes: borrowed for a key over the whole chain.
    let s_to = restrict(ctx, s_to, nq);
    let mut kb = Vec::with_capacity(dnum);
    let mut ka = Vec::with_capacity(dnum);
    let mut seeds = Vec::with_capacity(dnum);
    for j in 0..dnum {
        let seed = fresh_seed(rng);
        let a = RnsPoly::uniform_from_seed(ctx, &seed, nq, np);
        let e = sample_gaussian(rng, n);
        let mut b = RnsPoly::from_signed(ctx, &e, nq, np);
        b.make_ntt(ctx);
        let mut as_ = a.clone();
        as_.mul_assign(ctx, s_to.as_ref());
        b.sub_assign(ctx, &as_);
        let (start, end) = (j * alpha, ((j + 1) * alpha).min(nq));
        for i in start..end {
            let m = &ctx.moduli()[i];
            let pm = ctx.p_mod_q[i];
            let pms = m.shoup(pm);
            let sp = &s_from.data[i * n..(i + 1) * n];
            for (x, &v) in b.data[i * n..(i + 1) * n].iter_mut().zip(sp) {
                *x = m.add(*x, m.mul_shoup(v, pm, pms));
            }
        }
        kb.push(b);
        ka.push(a);
        seeds.push(seed);
    }
    KeySwitchKey {
        b: kb,
        a: ka,
        seeds,
    }
}

/// A polynomial over all of `Q * P` restricted to `Q_{q_limbs - 1} * P` (its first `q_limbs`
/// ciphertext limbs and its special limbs).
fn restrict<'a>(ctx: &Context, p: &'a RnsPoly, q_limbs: usize) -> Cow<'a, RnsPoly> {
    let n = ctx.n();
    if q_limbs == p.q_limbs {
        return Cow::Borrowed(p);
    }
    let mut data = Vec::with_capacity((q_limbs + p.p_limbs) * n);
    data.extend_from_slice(&p.data[..q_limbs * n]);
    data.extend_from_slice(&p.data[p.q_limbs * n..]);
    Cow::Owned(RnsPoly {
        data,
        q_limbs,
        p_limbs: p.p_limbs,
        ntt: p.ntt,
    })
}

/// Drops the special limbs of a polynomial over `Q * P`.
pub(crate) fn truncate_special(ctx: &Context, p: &mut RnsPoly) {
    p.data.truncate(p.q_limbs * ctx.n());
    p.p_limbs = 0;
}
