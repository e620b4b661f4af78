//! The shared, immutable precomputation of one parameter set.
//!
//! Contract: a [`Context`] is built once per [`CkksParameters`] and shared
//! behind an `Arc`. It owns the moduli (ciphertext primes first, then the
//! special primes), the NTT tables, and per-level tables for rescaling, hybrid
//! key switching (ModUp per digit, ModDown) and exact CRT reconstruction.
//! Polynomial limb `i` of a polynomial with `q_limbs` ciphertext limbs uses
//! prime `q_i` for `i < q_limbs`, then special prime `p_(i - q_limbs)`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::error::{CkksError, Result};
use super::ntt::{bit_reverse, NttTable};
use super::params::CkksParameters;
use super::zq::Modulus;

/// Fast (approximate) RNS base conversion from a set of source primes to a
/// set of destination primes: `x -> sum_b [x_b * (B/b)^-1]_b * (B/b) mod t`.
#[derive(Clone, Debug)]
pub(crate) struct BaseConv {
    /// Global modulus indices of the source primes.
    pub(crate) src: Vec<usize>,
    /// `(B/b)^-1 mod b` and its Shoup quotient, per source prime.
    pub(crate) hat_inv: Vec<(u64, u64)>,
    /// `(B/b) mod t`, indexed `[dst][src]`, destination in global modulus order
    /// given by `dst`.
    pub(crate) hat_mod: Vec<Vec<u64>>,
    /// Shoup quotients of `hat_mod`, same indexing.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) hat_mod_shoup: Vec<Vec<u64>>,
    /// Global modulus indices of the destination primes.
    pub(crate) dst: Vec<usize>,
    /// `B mod t` per destination prime.
    pub(crate) prod_mod: Vec<u64>,
}

impl BaseConv {
    fn new(moduli: &[Modulus], src: Vec<usize>, dst: Vec<usize>) -> Result<Self> {
        let mut hat_inv = Vec::with_capacity(src.len());
        for &b in &src {
            let mb = &moduli[b];
            let mut prod = 1u64;
            for &o in &src {
                if o != b {
                    prod = mb.mul(prod, mb.reduce(moduli[o].value()));
                }
            }
            let inv = mb
                .inv(prod)
                .ok_or_else(|| CkksError::InvalidParameters("primes not coprime".into()))?;
            hat_inv.push((inv, mb.shoup(inv)));
        }
        let hat_mod = dst
            .iter()
            .map(|&t| {
                let mt = &moduli[t];
                src.iter()
                    .map(|&b| {
                        src.iter()
                            .filter(|&&o| o != b)
                            .fold(1u64, |acc, &o| mt.mul(acc, mt.reduce(moduli[o].value())))
                    })
                    .collect()
            })
            .collect();
        let hat_mod_shoup = dst
            .iter()
            .zip(&hat_mod)
            .map(|(&t, row): (&usize, &Vec<u64>)| row.iter().map(|&h| moduli[t].shoup(h)).collect())
            .collect();
        let prod_mod = dst
            .iter()
            .map(|&t| {
                let mt = &moduli[t];
                src.iter()
                    .fold(1u64, |acc, &o| mt.mul(acc, mt.reduce(moduli[o].value())))
            })
            .collect();
        Ok(Self {
            src,
            hat_inv,
            hat_mod,
            hat_mod_shoup,
            dst,
            prod_mod,
        })
    }
}

/// One key-switching digit at one level.
#[derive(Clone, Debug)]
pub(crate) struct DigitTable {
    /// First ciphertext limb of the digit.
    pub(crate) start: usize,
    /// One past the last ciphertext limb of the digit (clipped to the level).
    pub(crate) end: usize,
    /// Conversion from the digit's primes to every other prime of `Q_l * P`.
    pub(crate) conv: BaseConv,
}

/// Exact CRT reconstruction data for one level (Garner's mixed-radix algorithm).
#[derive(Clone, Debug)]
pub(crate) struct CrtTable {
    /// `inv[i][j] = q_j^-1 mod q_i` for `j < i`, with its Shoup quotient.
    pub(crate) inv: Vec<Vec<(u64, u64)>>,
}

/// Per-level tables.
#[derive(Clone, Debug)]
pub(crate) struct LevelTables {
    pub(crate) digits: Vec<DigitTable>,
    pub(crate) crt: CrtTable,
    /// For rescaling from this level (l >= 1): `q_l^-1 mod q_i` (+Shoup) for `i < l`.
    pub(crate) rescale_inv: Vec<(u64, u64)>,
    /// `floor(q_l / 2) mod q_i` for `i < l`.
    pub(crate) rescale_half: Vec<u64>,
}

/// Shared precomputation of a parameter set. Create with [`Context::new`].
#[derive(Debug)]
pub struct Context {
    params: CkksParameters,
    n: usize,
    nq: usize,
    np: usize,
    moduli: Vec<Modulus>,
    ntt: Vec<NttTable>,
    pub(crate) levels: Vec<LevelTables>,
    /// ModDown: conversion from P to all of Q.
    pub(crate) p_to_q: BaseConv,
    /// `P^-1 mod q_i` (+Shoup) for every ciphertext prime.
    pub(crate) p_inv_mod_q: Vec<(u64, u64)>,
    /// `P mod q_i` for every ciphertext prime.
    pub(crate) p_mod_q: Vec<u64>,
    fingerprint: [u8; 32],
    galois_cache: RwLock<HashMap<u64, Arc<Vec<u32>>>>,
}

impl Context {
    /// Precomputes all tables of `params`.
    pub fn new(params: CkksParameters) -> Result<Arc<Self>> {
        let log_n = params.log_n();
        let n = params.n();
        let nq = params.q().len();
        let np = params.p().len();
        let moduli: Vec<Modulus> = params
            .q()
            .iter()
            .chain(params.p())
            .map(|&x| Modulus::new(x))
            .collect::<Result<_>>()?;
        let ntt = moduli
            .iter()
            .map(|m| NttTable::new(m, log_n))
            .collect::<Result<Vec<_>>>()?;
        let alpha = params.digit_size();
        let p_idx: Vec<usize> = (nq..nq + np).collect();
        let mut levels = Vec::with_capacity(nq);
        for l in 0..nq {
            let mut digits = Vec::new();
            let mut start = 0;
            while start <= l {
                let end = (start + alpha).min(l + 1);
                let src: Vec<usize> = (start..end).collect();
                let dst: Vec<usize> = (0..=l)
                    .filter(|i| !(start..end).contains(i))
                    .chain(p_idx.iter().copied())
                    .collect();
                digits.push(DigitTable {
                    start,
                    end,
                    conv: BaseConv::new(&moduli, src, dst)?,
                });
                start += alpha;
            }
            // CRT tables (Garner): q_j^-1 mod q_i for j < i.
            let mut inv = Vec::with_capacity(l + 1);
            for (i, mi) in moduli[..=l].iter().enumerate() {
                let mut row = Vec::with_capacity(i);
                for mj in &moduli[..i] {
                    let w = mi
                        .inv(mi.reduce(mj.value()))
                        .ok_or_else(|| CkksError::InvalidParameters("primes not coprime".into()))?;
                    row.push((w, mi.shoup(w)));
                }
                inv.push(row);
            }
            let (mut rescale_inv, mut rescale_half) = (Vec::new(), Vec::new());
            if l >= 1 {
                let ql = moduli[l].value();
                for m in &moduli[..l] {
                    let inv = m
                        .inv(ql)
                        .ok_or_else(|| CkksError::InvalidParameters("primes not coprime".into()))?;
                    rescale_inv.push((inv, m.shoup(inv)));
                    rescale_half.push(m.reduce(ql >> 1));
                }
            }
            levels.push(LevelTables {
                digits,
                crt: CrtTable { inv },
                rescale_inv,
                rescale_half,
            });
        }
        let p_to_q = BaseConv::new(&moduli, p_idx.clone(), (0..nq).collect())?;
        let mut p_inv_mod_q = Vec::with_capacity(nq);
        let mut p_mod_q = Vec::with_capacity(nq);
        for m in &moduli[..nq] {
            let pm = p_idx
                .iter()
                .fold(1u64, |acc, &k| m.mul(acc, m.reduce(moduli[k].value())));
            let inv = m
                .inv(pm)
                .ok_or_else(|| CkksError::InvalidParameters("primes not coprime".into()))?;
            p_inv_mod_q.push((inv, m.shoup(inv)));
            p_mod_q.push(pm);
        }
        let fingerprint = params.fingerprint();
        Ok(Arc::new(Self {
            params,
            n,
            nq,
            np,
            moduli,
            ntt,
            levels,
            p_to_q,
            p_inv_mod_q,
            p_mod_q,
            fingerprint,
            galois_cache: RwLock::new(HashMap::new()),
        }))
    }

    /// The parameters this context was built from.
    pub fn params(&self) -> &CkksParameters {
        &self.params
    }
    /// Ring degree `N`.
    pub fn n(&self) -> usize {
        self.n
    }
    /// Highest ciphertext level `L`.
    pub fn max_level(&self) -> usize {
        self.nq - 1
    }
    /// Number of ciphertext primes `L+1`.
    pub fn q_count(&self) -> usize {
        self.nq
    }
    /// Number of special primes `K`.
    pub fn p_count(&self) -> usize {
        self.np
    }
    /// SHA-256 fingerprint of the parameters.
    pub fn fingerprint(&self) -> &[u8; 32] {
        &self.fingerprint
    }
    /// All moduli: ciphertext primes first, then special primes.
    pub fn moduli(&self) -> &[Modulus] {
        &self.moduli
    }
    /// Ring degree as a power of two.
    pub fn log_n(&self) -> u32 {
        self.params.log_n()
    }

    /// Global modulus index of limb `i` of a polynomial with `q_limbs` ciphertext limbs.
    #[inline]
    pub(crate) fn limb_modulus(&self, q_limbs: usize, i: usize) -> usize {
        if i < q_limbs {
            i
        } else {
            self.nq + (i - q_limbs)
        }
    }

    /// Whether the NTTs run the AVX-512 kernels picked at run time (see
    /// [`NttTable::uses_simd`]); `false` means the portable scalar kernels.
    pub fn uses_simd_ntt(&self) -> bool {
        self.ntt.iter().all(|t| t.uses_simd())
    }

    pub(crate) fn ntt_table(&self, global: usize) -> &NttTable {
        &self.ntt[global]
    }

    fn check_limb(&self, modulus_index: usize, len: usize) -> Result<()> {
        if modulus_index >= self.moduli.len() {
            return Err(CkksError::InvalidInput(format!(
                "modulus index {modulus_index} out of range (have {})",
                self.moduli.len()
            )));
        }
        if len != self.n {
            return Err(CkksError::InvalidInput(format!(
                "limb has {len} coefficients, expected N = {}",
                self.n
            )));
        }
        Ok(())
    }

    /// Forward negacyclic NTT of one limb modulo prime `modulus_index`
    /// (ciphertext primes first, then special primes). Inputs must be below `4q`.
    pub fn ntt_forward(&self, modulus_index: usize, limb: &mut [u64]) -> Result<()> {
        self.check_limb(modulus_index, limb.len())?;
        self.ntt[modulus_index].forward(limb);
        Ok(())
    }

    /// Inverse negacyclic NTT of one limb (inputs below `2q`).
    pub fn ntt_inverse(&self, modulus_index: usize, limb: &mut [u64]) -> Result<()> {
        self.check_limb(modulus_index, limb.len())?;
        self.ntt[modulus_index].inverse(limb);
        Ok(())
    }

    /// Galois element of a rotation by `step` slots (slot `i + step` moves to slot `i`).
    pub fn galois_element(&self, step: i64) -> u64 {
        let two_n = 2 * self.n as u64;
        let slots = (self.n / 2) as i64;
        let k = step.rem_euclid(slots) as u64;
        // 2N is a power of two: compute 5^k mod 2N with masked wrapping arithmetic.
        let mut acc = 1u64;
        let mut base = 5u64;
        let mut e = k;
        while e > 0 {
            if e & 1 == 1 {
                acc = acc.wrapping_mul(base) & (two_n - 1);
            }
            base = base.wrapping_mul(base) & (two_n - 1);
            e >>= 1;
        }
        acc
    }

    /// Galois element of complex conjugation, `2N - 1`.
    pub fn conjugation_element(&self) -> u64 {
        2 * self.n as u64 - 1
    }

    /// The NTT-domain index permutation of the automorphism `X -> X^g`:
    /// `out[i] = in[perm[i]]`. Cached.
    pub(crate) fn galois_permutation(&self, g: u64) -> Arc<Vec<u32>> {
        if let Ok(cache) = self.galois_cache.read() {
            if let Some(p) = cache.get(&g) {
                return p.clone();
            }
        }
        let log_n = self.params.log_n();
        let two_n = 2 * self.n as u64;
        let perm: Vec<u32> = (0..self.n)
            .map(|i| {
                let e = 2 * bit_reverse(i, log_n) as u64 + 1;
                let t = (e * g) % two_n;
                bit_reverse(((t - 1) / 2) as usize, log_n) as u32
            })
            .collect();
        let perm = Arc::new(perm);
        if let Ok(mut cache) = self.galois_cache.write() {
            cache.insert(g, perm.clone());
        }
        perm
    }
}
