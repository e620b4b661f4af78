//! Multiply-accumulate kernels on raw limbs: `out[j] = sum_t c[t][j] * x[t] mod q`.
//!
//! Contract: [`mac_rows`] computes, for one prime `q` and one block of `len` coefficients,
//! `out[j * len + k] = (sum_t consts[t * outs + j] * xs[t][k]) mod q` exactly, for any number
//! of terms and outputs, with every input already reduced below `q` (the CKKS invariant of
//! ciphertext limbs and of encoded constants). The result is the same, bit for bit, whichever
//! kernel computes it:
//!
//! * **AVX-512 IFMA** (x86_64, detected at run time, primes below `2^52`): 8 coefficients per
//!   register, a tile of 4 outputs x 16 coefficients kept in 16 accumulator registers (low and
//!   high 52-bit halves of each product, `vpmadd52luq` / `vpmadd52huq`). The halves are
//!   folded into a `u128` every [`IFMA_BLOCK`] terms (the 64-bit lanes cannot overflow before).
//! * **AVX-512 IFMA, wide** (primes of 52 to 61 bits, e.g. a 60-bit `q0`): each product is
//!   split as `(xl + 2^52 xh)(cl + 2^52 ch)` into seven IFMAs accumulated at weights `1`,
//!   `2^52` and `2^104`; a tile of 2 outputs x 16 coefficients.
//! * **Scalar** (any prime below `2^61`, any CPU): a register tile of 2 outputs x 2
//!   coefficients of `u128` accumulators, the terms innermost; reduced every
//!   `floor((2^128 - q) / (q - 1)^2)` terms (thousands for 40-bit primes, about 2^8 for a 60-bit
//!   one). Compiled twice on x86_64: with BMI2/ADX (`mulx`/`adcx`) when the CPU has them, and
//!   plain.
//!
//! The kernels never allocate per term and never panic: a caller error in the shapes is a
//! [`CkksError::InvalidInput`].

// `%` instead of `is_multiple_of`, kept for readability next to the other index arithmetic.
#![allow(clippy::manual_is_multiple_of)]

use super::error::{CkksError, Result};
use super::zq::Modulus;

/// Terms accumulated in the IFMA lanes before they are folded into `u128` (each step adds
/// below `2^52` to a 64-bit lane: 4095 steps cannot overflow).
pub const IFMA_BLOCK: usize = 4095;

/// Which kernel [`mac_rows_with`] may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MacKernel {
    /// The fastest one the CPU and the prime allow.
    Auto,
    /// The portable scalar kernel (with BMI2 when the CPU has it).
    Scalar,
    /// The portable scalar kernel compiled without any extension.
    ScalarPlain,
}

/// Whether the AVX-512 IFMA kernel can run on this CPU (and is not switched off by
/// `HECC_NO_SIMD=1`, the switch the NTT kernels obey too). Detected once per process.
pub fn ifma_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            std::env::var_os("HECC_NO_SIMD").is_none_or(|v| v == "0")
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512ifma")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out[j * len + k] = sum_t consts[t * outs + j] * xs[t][k] mod q` with the fastest kernel
/// (see the module note). `len = out.len() / outs`; each `xs[t]` must hold at least `len`
/// values and `consts` exactly `xs.len() * outs`.
pub fn mac_rows(
    m: &Modulus,
    xs: &[&[u64]],
    consts: &[u64],
    outs: usize,
    out: &mut [u64],
) -> Result<()> {
    mac_rows_with(MacKernel::Auto, m, xs, consts, outs, out)
}

/// [`mac_rows`] with an explicit kernel choice (tests and benchmarks compare them).
pub fn mac_rows_with(
    kernel: MacKernel,
    m: &Modulus,
    xs: &[&[u64]],
    consts: &[u64],
    outs: usize,
    out: &mut [u64],
) -> Result<()> {
    if outs == 0 {
        return if out.is_empty() {
            Ok(())
        } else {
            Err(CkksError::InvalidInput("mac: no outputs".into()))
        };
    }
    if out.len() % outs != 0 {
        return Err(CkksError::InvalidInput(
            "mac: output length is not a multiple of the output count".into(),
        ));
    }
    let len = out.len() / outs;
    let mut rows: Vec<&mut [u64]> = out.chunks_mut(len.max(1)).collect();
    mac_into_with(kernel, m, xs, consts, &mut rows)
}

/// [`mac_rows`] writing output `j` into `rows[j]` (all rows of one length `len`): the
/// outputs can live in different buffers, e.g. one limb block of each result ciphertext.
pub fn mac_into(m: &Modulus, xs: &[&[u64]], consts: &[u64], rows: &mut [&mut [u64]]) -> Result<()> {
    mac_into_with(MacKernel::Auto, m, xs, consts, rows)
}

/// [`mac_into`] with an explicit kernel choice.
pub fn mac_into_with(
    kernel: MacKernel,
    m: &Modulus,
    xs: &[&[u64]],
    consts: &[u64],
    out: &mut [&mut [u64]],
) -> Result<()> {
    let outs = out.len();
    let len = out.first().map_or(0, |r| r.len());
    if out.iter().any(|r| r.len() != len) {
        return Err(CkksError::InvalidInput(
            "mac: output rows of different lengths".into(),
        ));
    }
    if consts.len() != xs.len() * outs {
        return Err(CkksError::InvalidInput(format!(
            "mac: {} constants for {} terms x {outs} outputs",
            consts.len(),
            xs.len()
        )));
    }
    if xs.iter().any(|x| x.len() < len) {
        return Err(CkksError::InvalidInput(
            "mac: operand shorter than the block".into(),
        ));
    }
    if outs == 0 || len == 0 {
        return Ok(());
    }
    if xs.is_empty() {
        out.iter_mut()
            .for_each(|r| r.iter_mut().for_each(|o| *o = 0));
        return Ok(());
    }
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if kernel == MacKernel::Auto && ifma_available() {
        // SAFETY: the CPU has AVX-512F and IFMA (checked just above); shapes are checked.
        done = unsafe {
            if m.value() < (1u64 << 52) {
                ifma::mac_rows(m, xs, consts, outs, len, out)
            } else {
                ifma::mac_rows_wide(m, xs, consts, outs, len, out)
            }
        };
    }
    if done < len {
        scalar_dispatch(kernel, m, xs, consts, outs, len, done, out);
    }
    Ok(())
}

/// Terms the scalar kernel may add to a `u128` accumulator below `q` without overflow.
fn scalar_lazy(q: u64) -> usize {
    let p = ((q - 1) as u128) * ((q - 1) as u128);
    if p == 0 {
        return usize::MAX;
    }
    (((u128::MAX - q as u128) / p).min(1 << 20) as usize).max(1)
}

#[allow(clippy::too_many_arguments)]
fn scalar_dispatch(
    kernel: MacKernel,
    m: &Modulus,
    xs: &[&[u64]],
    consts: &[u64],
    outs: usize,
    len: usize,
    k_from: usize,
    out: &mut [&mut [u64]],
) {
    #[cfg(target_arch = "x86_64")]
    if kernel != MacKernel::ScalarPlain
        && std::arch::is_x86_feature_detected!("bmi2")
        && std::arch::is_x86_feature_detected!("adx")
    {
        // SAFETY: the CPU has BMI2 and ADX (checked just above).
        unsafe { scalar_bmi2(m, xs, consts, outs, len, k_from, out) };
        return;
    }
    let _ = kernel;
    scalar_impl(m, xs, consts, outs, len, k_from, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "bmi2,adx")]
unsafe fn scalar_bmi2(
    m: &Modulus,
    xs: &[&[u64]],
    consts: &[u64],
    outs: usize,
    len: usize,
    k_from: usize,
    out: &mut [&mut [u64]],
) {
    scalar_impl(m, xs, consts, outs, len, k_from, out)
}

/// The scalar kernel over coefficients `k_from..len`.
#[inline(always)]
fn scalar_impl(
    m: &Modulus,
    xs: &[&[u64]],
    consts: &[u64],
    outs: usize,
    len: usize,
    k_from: usize,
    out: &mut [&mut [u64]],
) {
    let lazy = scalar_lazy(m.value());
    let mut j = 0;
    while j + 2 <= outs {
        let mut k = k_from;
        while k + 2 <= len {
            let r = scalar_tile::<2, 2>(m, lazy, xs, consts, outs, j, k);
            for (dj, row) in r.iter().enumerate() {
                out[j + dj][k..k + 2].copy_from_slice(row);
            }
            k += 2;
        }
        while k < len {
            let r = scalar_tile::<2, 1>(m, lazy, xs, consts, outs, j, k);
            for (dj, row) in r.iter().enumerate() {
                out[j + dj][k] = row[0];
            }
            k += 1;
        }
        j += 2;
    }
    while j < outs {
        let mut k = k_from;
        while k + 2 <= len {
            let r = scalar_tile::<1, 2>(m, lazy, xs, consts, outs, j, k);
            out[j][k..k + 2].copy_from_slice(&r[0]);
            k += 2;
        }
        while k < len {
            out[j][k] = scalar_tile::<1, 1>(m, lazy, xs, consts, outs, j, k)[0][0];
            k += 1;
        }
        j += 1;
    }
}

/// One `J x K` tile: outputs `j..j+J`, coefficients `k..k+K`, all terms.
#[inline(always)]
fn scalar_tile<const J: usize, const K: usize>(
    m: &Modulus,
    lazy: usize,
    xs: &[&[u64]],
    consts: &[u64],
    outs: usize,
    j: usize,
    k: usize,
) -> [[u64; K]; J] {
    let mut acc = [[0u128; K]; J];
    for (block, xb) in xs.chunks(lazy).enumerate() {
        if block > 0 {
            for row in acc.iter_mut() {
                for a in row.iter_mut() {
                    *a = m.reduce_u128(*a) as u128;
                }
            }
        }
        let t0 = block * lazy;
        for (dt, x) in xb.iter().enumerate() {
            let c = &consts[(t0 + dt) * outs + j..(t0 + dt) * outs + j + J];
            let x = &x[k..k + K];
            for dj in 0..J {
                for dk in 0..K {
                    acc[dj][dk] += x[dk] as u128 * c[dj] as u128;
                }
            }
        }
    }
    let mut r = [[0u64; K]; J];
    for dj in 0..J {
        for dk in 0..K {
            r[dj][dk] = m.reduce_u128(acc[dj][dk]);
        }
    }
    r
}

#[cfg(target_arch = "x86_64")]
mod ifma {
    use super::{Modulus, IFMA_BLOCK};
    use std::arch::x86_64::*;

    /// Coefficients per register.
    const W: usize = 8;

    /// Runs the IFMA tiles over coefficients `0..len - len % 16`; returns how many
    /// coefficients it computed (the rest is left to the scalar kernel).
    ///
    /// # Safety
    /// The CPU must have AVX-512F and AVX-512 IFMA; `q < 2^52`; the shapes must be
    /// checked as in [`super::mac_rows_with`].
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub(super) unsafe fn mac_rows(
        m: &Modulus,
        xs: &[&[u64]],
        consts: &[u64],
        outs: usize,
        len: usize,
        out: &mut [&mut [u64]],
    ) -> usize {
        // SAFETY: this function's own safety contract (stated above) is the
        // caller's obligation and covers every operation below.
        unsafe { mac_rows_tiled::<4, 2>(m, xs, consts, outs, len, out) }
    }

    /// [`mac_rows`] with tiles of `J` outputs x `K` registers.
    ///
    /// # Safety
    /// As [`mac_rows`].
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub(super) unsafe fn mac_rows_tiled<const J: usize, const K: usize>(
        m: &Modulus,
        xs: &[&[u64]],
        consts: &[u64],
        outs: usize,
        len: usize,
        out: &mut [&mut [u64]],
    ) -> usize {
        // SAFETY: this function's own safety contract (stated above) is the
        // caller's obligation and covers every operation below.
        unsafe {
            let kmax = len - len % (K * W);
            // Outputs outer: a tile's constants stay in L1 while it sweeps the coefficients.
            let mut j = 0;
            while j + J <= outs {
                for k in (0..kmax).step_by(K * W) {
                    tile::<J, K>(m, xs, consts, outs, j, k, out);
                }
                j += J;
            }
            while j < outs {
                for k in (0..kmax).step_by(K * W) {
                    tile::<1, K>(m, xs, consts, outs, j, k, out);
                }
                j += 1;
            }
            kmax
        }
    }

    /// [`mac_rows`] for primes of 52 to 61 bits: `x = xl + 2^52 xh` and `c = cl + 2^52 ch`
    /// (IFMA reads the low 52 bits, so `xl`, `cl` are `x`, `c` themselves), seven IFMAs per
    /// register of products into accumulators of weight `1`, `2^52` and `2^104`.
    ///
    /// # Safety
    /// As [`mac_rows`], with `q < 2^61`.
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub(super) unsafe fn mac_rows_wide(
        m: &Modulus,
        xs: &[&[u64]],
        consts: &[u64],
        outs: usize,
        len: usize,
        out: &mut [&mut [u64]],
    ) -> usize {
        // SAFETY: this function's own safety contract (stated above) is the
        // caller's obligation and covers every operation below.
        unsafe { mac_rows_wide_tiled::<2, 2>(m, xs, consts, outs, len, out) }
    }

    /// [`mac_rows_wide`] with tiles of `J` outputs x `K` registers.
    ///
    /// # Safety
    /// As [`mac_rows_wide`].
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub(super) unsafe fn mac_rows_wide_tiled<const J: usize, const K: usize>(
        m: &Modulus,
        xs: &[&[u64]],
        consts: &[u64],
        outs: usize,
        len: usize,
        out: &mut [&mut [u64]],
    ) -> usize {
        // SAFETY: this function's own safety contract (stated above) is the
        // caller's obligation and covers every operation below.
        unsafe {
            let highs: Vec<u64> = consts.iter().map(|c| c >> 52).collect();
            let r104 = m.pow(2, 104);
            let kmax = len - len % (K * W);
            let mut j = 0;
            while j + J <= outs {
                for k in (0..kmax).step_by(K * W) {
                    tile_wide::<J, K>(m, r104, xs, consts, &highs, outs, j, k, out);
                }
                j += J;
            }
            while j < outs {
                for k in (0..kmax).step_by(K * W) {
                    tile_wide::<1, K>(m, r104, xs, consts, &highs, outs, j, k, out);
                }
                j += 1;
            }
            kmax
        }
    }

    /// Terms per block of the wide kernel: a weight-`2^52` lane takes two additions below
    /// `2^52` per term.
    const WIDE_BLOCK: usize = IFMA_BLOCK / 2;

    /// One tile of the wide kernel.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_wide<const J: usize, const K: usize>(
        m: &Modulus,
        r104: u64,
        xs: &[&[u64]],
        consts: &[u64],
        highs: &[u64],
        outs: usize,
        j: usize,
        k: usize,
        out: &mut [&mut [u64]],
    ) {
        // SAFETY: this function's own safety contract (stated above) is the
        // caller's obligation and covers every operation below.
        unsafe {
            // Weight 1 and 2^52 folded into a u128; weight 2^104 reduced mod q.
            let mut total = [[[0u128; W]; K]; J];
            let mut top = [[[0u64; W]; K]; J];
            let cbase = consts.as_ptr().add(j);
            let hbase = highs.as_ptr().add(j);
            for (block, xb) in xs.chunks(WIDE_BLOCK).enumerate() {
                let zero = _mm512_setzero_si512();
                let mut a0 = [[zero; K]; J];
                let mut a1 = [[zero; K]; J];
                let mut a2 = [[zero; K]; J];
                let mut b1 = [[zero; K]; J];
                let mut b2 = [[zero; K]; J];
                let t0 = block * WIDE_BLOCK;
                for (dt, x) in xb.iter().enumerate() {
                    let xp = x.as_ptr().add(k);
                    let at = (t0 + dt) * outs;
                    let mut xl = [zero; K];
                    let mut xh = [zero; K];
                    for dk in 0..K {
                        xl[dk] = _mm512_loadu_si512(xp.add(dk * W) as *const _);
                        xh[dk] = _mm512_srli_epi64::<52>(xl[dk]);
                    }
                    for dj in 0..J {
                        let cl = _mm512_set1_epi64(*cbase.add(at + dj) as i64);
                        let ch = _mm512_set1_epi64(*hbase.add(at + dj) as i64);
                        for dk in 0..K {
                            // Two accumulators per weight keep the dependency chains short.
                            a0[dj][dk] = _mm512_madd52lo_epu64(a0[dj][dk], xl[dk], cl);
                            a1[dj][dk] = _mm512_madd52hi_epu64(a1[dj][dk], xl[dk], cl);
                            b1[dj][dk] = _mm512_madd52lo_epu64(b1[dj][dk], xl[dk], ch);
                            b2[dj][dk] = _mm512_madd52hi_epu64(b2[dj][dk], xh[dk], cl);
                            a1[dj][dk] = _mm512_madd52lo_epu64(a1[dj][dk], xh[dk], cl);
                            a2[dj][dk] = _mm512_madd52hi_epu64(a2[dj][dk], xl[dk], ch);
                            a2[dj][dk] = _mm512_madd52lo_epu64(a2[dj][dk], xh[dk], ch);
                        }
                    }
                }
                for dj in 0..J {
                    for dk in 0..K {
                        let mut l0 = [0u64; W];
                        let mut l1 = [0u64; W];
                        let mut m1 = [0u64; W];
                        let mut l2 = [0u64; W];
                        let mut m2 = [0u64; W];
                        _mm512_storeu_si512(l0.as_mut_ptr() as *mut _, a0[dj][dk]);
                        _mm512_storeu_si512(l1.as_mut_ptr() as *mut _, a1[dj][dk]);
                        _mm512_storeu_si512(m1.as_mut_ptr() as *mut _, b1[dj][dk]);
                        _mm512_storeu_si512(l2.as_mut_ptr() as *mut _, a2[dj][dk]);
                        _mm512_storeu_si512(m2.as_mut_ptr() as *mut _, b2[dj][dk]);
                        for w in 0..W {
                            let v = l0[w] as u128 + ((l1[w] as u128 + m1[w] as u128) << 52);
                            let prev = if block > 0 {
                                m.reduce_u128(total[dj][dk][w]) as u128
                            } else {
                                0
                            };
                            total[dj][dk][w] = prev + v;
                            let t2 = m.add(m.reduce(l2[w]), m.reduce(m2[w]));
                            top[dj][dk][w] = m.add(top[dj][dk][w], t2);
                        }
                    }
                }
            }
            for dj in 0..J {
                let row = &mut out[j + dj][k..k + K * W];
                for dk in 0..K {
                    for w in 0..W {
                        let low = m.reduce_u128(total[dj][dk][w]);
                        row[dk * W + w] = m.add(low, m.mul(top[dj][dk][w], r104));
                    }
                }
            }
        }
    }

    /// One tile: outputs `j..j+J`, coefficients `k..k+K*8`, all terms.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const J: usize, const K: usize>(
        m: &Modulus,
        xs: &[&[u64]],
        consts: &[u64],
        outs: usize,
        j: usize,
        k: usize,
        out: &mut [&mut [u64]],
    ) {
        // SAFETY: this function's own safety contract (stated above) is the
        // caller's obligation and covers every operation below.
        unsafe {
            let mut total = [[[0u128; W]; K]; J];
            let cbase = consts.as_ptr().add(j);
            for (block, xb) in xs.chunks(IFMA_BLOCK).enumerate() {
                let zero = _mm512_setzero_si512();
                let mut lo = [[zero; K]; J];
                let mut hi = [[zero; K]; J];
                let t0 = block * IFMA_BLOCK;
                for (dt, x) in xb.iter().enumerate() {
                    let xp = x.as_ptr().add(k);
                    let cp = cbase.add((t0 + dt) * outs);
                    let mut xv = [zero; K];
                    for (dk, v) in xv.iter_mut().enumerate() {
                        *v = _mm512_loadu_si512(xp.add(dk * W) as *const _);
                    }
                    for dj in 0..J {
                        let c = _mm512_set1_epi64(*cp.add(dj) as i64);
                        for dk in 0..K {
                            lo[dj][dk] = _mm512_madd52lo_epu64(lo[dj][dk], xv[dk], c);
                            hi[dj][dk] = _mm512_madd52hi_epu64(hi[dj][dk], xv[dk], c);
                        }
                    }
                }
                for dj in 0..J {
                    for dk in 0..K {
                        let mut l = [0u64; W];
                        let mut h = [0u64; W];
                        _mm512_storeu_si512(l.as_mut_ptr() as *mut _, lo[dj][dk]);
                        _mm512_storeu_si512(h.as_mut_ptr() as *mut _, hi[dj][dk]);
                        for w in 0..W {
                            let v = l[w] as u128 + ((h[w] as u128) << 52);
                            let prev = if block > 0 {
                                m.reduce_u128(total[dj][dk][w]) as u128
                            } else {
                                0
                            };
                            total[dj][dk][w] = prev + v;
                        }
                    }
                }
            }
            for dj in 0..J {
                let row = &mut out[j + dj][k..k + K * W];
                for dk in 0..K {
                    for w in 0..W {
                        row[dk * W + w] = m.reduce_u128(total[dj][dk][w]);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ckks::zq::generate_primes;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn naive(m: &Modulus, xs: &[Vec<u64>], consts: &[u64], outs: usize, len: usize) -> Vec<u64> {
        let mut out = vec![0u64; outs * len];
        for j in 0..outs {
            for k in 0..len {
                let mut s = 0u64;
                for (t, x) in xs.iter().enumerate() {
                    s = m.add(s, m.mul(x[k], consts[t * outs + j]));
                }
                out[j * len + k] = s;
            }
        }
        out
    }

    fn check(bits: u32, terms: usize, outs: usize, len: usize, worst: bool, seed: u64) {
        let q = generate_primes(bits, 1, 12, &[]).unwrap()[0];
        let m = Modulus::new(q).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let draw = |rng: &mut ChaCha8Rng| if worst { q - 1 } else { rng.gen_range(0..q) };
        let xs: Vec<Vec<u64>> = (0..terms)
            .map(|_| (0..len + 3).map(|_| draw(&mut rng)).collect())
            .collect();
        let consts: Vec<u64> = (0..terms * outs).map(|_| draw(&mut rng)).collect();
        let want = naive(&m, &xs, &consts, outs, len);
        let refs: Vec<&[u64]> = xs.iter().map(Vec::as_slice).collect();
        for kernel in [MacKernel::Auto, MacKernel::Scalar, MacKernel::ScalarPlain] {
            let mut out = vec![7u64; outs * len];
            mac_rows_with(kernel, &m, &refs, &consts, outs, &mut out).unwrap();
            assert_eq!(
                out, want,
                "{kernel:?} bits {bits} terms {terms} outs {outs} len {len} worst {worst}"
            );
        }
    }

    #[test]
    fn kernels_match_naive_on_random_inputs() {
        for bits in [30, 40, 50, 51, 52, 55, 60, 61] {
            check(bits, 37, 7, 35, false, u64::from(bits));
            check(bits, 3, 4, 32, false, 100 + u64::from(bits));
            check(bits, 1, 1, 1, false, 200 + u64::from(bits));
        }
    }

    #[test]
    fn kernels_match_naive_on_worst_case_values() {
        // q - 1 everywhere, over more terms than one lazy period of the 60-bit prime
        // and more than one IFMA block for the 50-bit one.
        check(60, 600, 5, 17, true, 1);
        check(50, IFMA_BLOCK + 10, 5, 16, true, 2);
        check(61, IFMA_BLOCK / 2 + 10, 3, 32, true, 4);
        check(40, 300, 9, 48, true, 3);
    }

    #[test]
    fn the_lazy_interval_cannot_overflow() {
        for q in [3u64, (1 << 40) - 87, (1 << 60) - 93, (1 << 61) - 1] {
            let l = scalar_lazy(q) as u128;
            let p = ((q - 1) as u128).pow(2);
            assert!(l >= 1);
            assert!(
                (q as u128).checked_add(l.checked_mul(p).unwrap()).is_some(),
                "q {q} lazy {l}"
            );
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let m = Modulus::new(97).unwrap();
        let x = vec![1u64; 4];
        let mut out = vec![0u64; 8];
        assert!(mac_rows(&m, &[&x], &[1], 2, &mut out[..7]).is_err());
        assert!(mac_rows(&m, &[&x], &[1, 2, 3], 2, &mut out).is_err());
        assert!(mac_rows(&m, &[&x[..3]], &[1, 2], 2, &mut out).is_err());
        mac_rows(&m, &[&x], &[1, 2], 2, &mut out).unwrap();
        assert_eq!(out, vec![1, 1, 1, 1, 2, 2, 2, 2]);
    }
}
