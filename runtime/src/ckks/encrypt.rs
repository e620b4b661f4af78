//! Ciphertexts, encryption (public-key and seeded symmetric) and decryption.
//!
//! Contract: a [`Ciphertext`] is 2 (or, after a multiplication, 3)
//! polynomials in NTT form at one level with one scale; it decrypts as
//! `c0 + c1*s (+ c2*s^2)`. Public-key encryption draws a ternary `u` and
//! Gaussian `e0, e1` and computes `(b*u + e0, a*u + e1)` over `Q_l * P`, then
//! divides by `P` and adds `m` (so fresh noise is tiny). Symmetric encryption draws a
//! seed for `a`: `(-a*s + e + m, a)`, and keeps the seed so that the
//! serialized ciphertext stores `c0` and 32 bytes instead of `c1`.
//!
//! Parallel encryption: an encryptor holds one ChaCha20 stream, so `encrypt` takes `&mut self`.
//! `fork` makes an independent child whose ChaCha20 key is 32 bytes drawn from the parent's
//! stream (children never share a stream, and a deterministic test parent gives deterministic
//! children); `encrypt_many` forks one child per plaintext, in order, and encrypts them in
//! parallel with rayon, so its result does not depend on the number of threads.

use std::sync::Arc;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;

use super::context::Context;
use super::encoding::Plaintext;
use super::error::{CkksError, Result};
use super::keys::{
    fresh_seed, os_rng, sample_gaussian, sample_ternary, test_rng, truncate_special, PublicKey,
    SecretKey,
};
use super::params::SecretDistribution;
use super::poly::RnsPoly;
use super::rns;

/// An encrypted message: polynomials in NTT form, a level and a scale.
#[derive(Clone, Debug, PartialEq)]
pub struct Ciphertext {
    pub(crate) polys: Vec<RnsPoly>,
    pub(crate) scale: f64,
    /// Seed of `c1` if the ciphertext is a fresh symmetric encryption.
    pub(crate) seed: Option<[u8; 32]>,
}

impl Ciphertext {
    /// Level (number of ciphertext limbs minus one).
    pub fn level(&self) -> usize {
        self.polys[0].level()
    }
    /// Scale factor.
    pub fn scale(&self) -> f64 {
        self.scale
    }
    /// Number of polynomials (2, or 3 before relinearization).
    pub fn size(&self) -> usize {
        self.polys.len()
    }
    /// Whether `c1` is stored as a seed when serialized.
    pub fn is_seeded(&self) -> bool {
        self.seed.is_some()
    }
    /// Overrides the recorded scale (e.g. to absorb a known constant factor).
    pub fn set_scale(&mut self, scale: f64) -> Result<()> {
        super::encoding::check_scale(scale)?;
        self.scale = scale;
        Ok(())
    }
}

/// Public-key encryptor.
pub struct Encryptor {
    ctx: Arc<Context>,
    pk: Arc<PublicKey>,
    rng: ChaCha20Rng,
}

impl Encryptor {
    /// An encryptor with operating-system randomness.
    pub fn new(ctx: &Arc<Context>, pk: &PublicKey) -> Result<Self> {
        Ok(Self {
            ctx: ctx.clone(),
            pk: Arc::new(pk.clone()),
            rng: os_rng()?,
        })
    }

    /// A deterministic encryptor. **Insecure**: for reproducible tests only.
    pub fn new_with_insecure_test_seed(ctx: &Arc<Context>, pk: &PublicKey, seed: u64) -> Self {
        Self {
            ctx: ctx.clone(),
            pk: Arc::new(pk.clone()),
            rng: test_rng(seed),
        }
    }

    /// An independent encryptor for another task: its generator is seeded with 32 bytes
    /// drawn from this encryptor's stream.
    pub fn fork(&mut self) -> Self {
        Self {
            ctx: self.ctx.clone(),
            pk: self.pk.clone(),
            rng: ChaCha20Rng::from_seed(fresh_seed(&mut self.rng)),
        }
    }

    /// Encrypts every plaintext, in parallel, each with its own forked encryptor (forked in
    /// order, so the result does not depend on the thread count).
    pub fn encrypt_many(&mut self, pts: &[Plaintext]) -> Result<Vec<Ciphertext>> {
        let seeds: Vec<[u8; 32]> = pts.iter().map(|_| fresh_seed(&mut self.rng)).collect();
        pts.par_iter()
            .zip(seeds)
            .map(|(pt, seed)| {
                let mut child = Self {
                    ctx: self.ctx.clone(),
                    pk: self.pk.clone(),
                    rng: ChaCha20Rng::from_seed(seed),
                };
                child.encrypt(pt)
            })
            .collect()
    }

    /// Encrypts `pt` at its level and scale. The mask is computed over
    /// `Q_l * P` and divided by `P` (ModDown), so the fresh noise is only the
    /// rounding error of that division.
    pub fn encrypt(&mut self, pt: &Plaintext) -> Result<Ciphertext> {
        let ctx = &self.ctx;
        pt.poly.check_in(ctx, false)?;
        // The key's limbs are read by global modulus index below.
        self.pk.b.check_in(ctx, true)?;
        self.pk.a.check_in(ctx, true)?;
        let ql = pt.poly.q_limbs;
        let np = ctx.p_count();
        let n = ctx.n();
        let u = sample_ternary(&mut self.rng, n, SecretDistribution::UniformTernary);
        let mut u = RnsPoly::from_signed(ctx, &u, ql, np);
        u.make_ntt(ctx);
        let mut c0 = RnsPoly::from_signed(ctx, &sample_gaussian(&mut self.rng, n), ql, np);
        c0.make_ntt(ctx);
        let mut c1 = RnsPoly::from_signed(ctx, &sample_gaussian(&mut self.rng, n), ql, np);
        c1.make_ntt(ctx);
        // The public key is over all of Q * P; read its limbs in place.
        c0.add_mul_full_assign(ctx, &self.pk.b, &u);
        c1.add_mul_full_assign(ctx, &self.pk.a, &u);
        let mut c0 = rns::mod_down(ctx, &c0);
        let c1 = rns::mod_down(ctx, &c1);
        c0.add_assign(ctx, &pt.poly);
        Ok(Ciphertext {
            polys: vec![c0, c1],
            scale: pt.scale,
            seed: None,
        })
    }
}

/// Secret-key encryptor whose ciphertexts carry the seed of `c1`.
pub struct SymmetricEncryptor {
    ctx: Arc<Context>,
    s: Arc<RnsPoly>,
    rng: ChaCha20Rng,
}

impl SymmetricEncryptor {
    /// An encryptor with operating-system randomness.
    pub fn new(ctx: &Arc<Context>, sk: &SecretKey) -> Result<Self> {
        Ok(Self::with_rng(ctx, sk, os_rng()?))
    }

    /// A deterministic encryptor. **Insecure**: for reproducible tests only.
    pub fn new_with_insecure_test_seed(ctx: &Arc<Context>, sk: &SecretKey, seed: u64) -> Self {
        Self::with_rng(ctx, sk, test_rng(seed))
    }

    fn with_rng(ctx: &Arc<Context>, sk: &SecretKey, rng: ChaCha20Rng) -> Self {
        let mut s = sk.s.clone();
        truncate_special(ctx, &mut s);
        Self {
            ctx: ctx.clone(),
            s: Arc::new(s),
            rng,
        }
    }

    /// An independent encryptor for another task: its generator is seeded with 32 bytes
    /// drawn from this encryptor's stream.
    pub fn fork(&mut self) -> Self {
        Self {
            ctx: self.ctx.clone(),
            s: self.s.clone(),
            rng: ChaCha20Rng::from_seed(fresh_seed(&mut self.rng)),
        }
    }

    /// Encrypts every plaintext, in parallel, each with a generator seeded from this
    /// encryptor's stream (drawn in order, so the result does not depend on the thread count).
    pub fn encrypt_many(&mut self, pts: &[Plaintext]) -> Result<Vec<Ciphertext>> {
        let seeds: Vec<[u8; 32]> = pts.iter().map(|_| fresh_seed(&mut self.rng)).collect();
        let this = &*self;
        pts.par_iter()
            .zip(seeds)
            .map(|(pt, seed)| {
                symmetric_encrypt(&this.ctx, &this.s, pt, &mut ChaCha20Rng::from_seed(seed))
            })
            .collect()
    }

    /// Encrypts `pt` at its level and scale; the result is seeded.
    pub fn encrypt(&mut self, pt: &Plaintext) -> Result<Ciphertext> {
        symmetric_encrypt(&self.ctx, &self.s, pt, &mut self.rng)
    }
}

/// Symmetric encryption of `pt` under `s` (truncated to `Q`) with randomness from `rng`.
fn symmetric_encrypt(
    ctx: &Context,
    s: &RnsPoly,
    pt: &Plaintext,
    rng: &mut ChaCha20Rng,
) -> Result<Ciphertext> {
    pt.poly.check_in(ctx, false)?;
    let ql = pt.poly.q_limbs;
    let seed = fresh_seed(rng);
    let c1 = RnsPoly::uniform_from_seed(ctx, &seed, ql, 0);
    let mut c0 = RnsPoly::from_signed(ctx, &sample_gaussian(rng, ctx.n()), ql, 0);
    c0.make_ntt(ctx);
    c0.add_assign(ctx, &pt.poly);
    let mut s = s.clone();
    s.truncate_q(ctx, ql);
    let mut as_ = c1.clone();
    as_.mul_assign(ctx, &s);
    c0.sub_assign(ctx, &as_);
    Ok(Ciphertext {
        polys: vec![c0, c1],
        scale: pt.scale,
        seed: Some(seed),
    })
}

/// Decryptor.
pub struct Decryptor {
    ctx: Arc<Context>,
    s: RnsPoly,
}

impl Decryptor {
    /// A decryptor for `sk`.
    pub fn new(ctx: &Arc<Context>, sk: &SecretKey) -> Self {
        let mut s = sk.s.clone();
        truncate_special(ctx, &mut s);
        Self {
            ctx: ctx.clone(),
            s,
        }
    }

    /// Decrypts `ct` (of any size) into a plaintext at its level and scale.
    pub fn decrypt(&self, ct: &Ciphertext) -> Result<Plaintext> {
        let ctx = &self.ctx;
        if ct.polys.is_empty() {
            return Err(CkksError::CiphertextSize {
                expected: 2,
                found: 0,
            });
        }
        for p in &ct.polys {
            p.check_in(ctx, false)?;
            if p.q_limbs != ct.polys[0].q_limbs {
                return Err(CkksError::InvalidInput(
                    "ciphertext polynomials at different levels".into(),
                ));
            }
        }
        let ql = ct.polys[0].q_limbs;
        let mut s = self.s.clone();
        s.truncate_q(ctx, ql);
        // Horner: ((c_k * s + c_{k-1}) * s + ...) + c0
        let mut acc = ct.polys[ct.polys.len() - 1].clone();
        for p in ct.polys[..ct.polys.len() - 1].iter().rev() {
            acc.mul_assign(ctx, &s);
            acc.add_assign(ctx, p);
        }
        Ok(Plaintext {
            poly: acc,
            scale: ct.scale,
        })
    }
}
