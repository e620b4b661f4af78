//! Negacyclic number-theoretic transform over `Z_q[X]/(X^N + 1)`.
//!
//! Contract: [`NttTable::forward`] maps coefficients (natural order, each
//! below `q`... or below `4q`) to evaluations at the odd powers of a primitive
//! `2N`-th root `psi` in bit-reversed order: output `i` is the value at
//! `psi^(2*brv(i)+1)`. [`NttTable::inverse`] undoes it (inputs below `2q`).
//! Both outputs are fully reduced. Butterflies are Harvey's lazy ones with
//! Shoup-precomputed twiddles (values stay in `[0, 4q)` between stages).
//! Stages are fused in pairs (radix-4 passes) to halve memory traffic.
//!
//! On x86-64 CPUs with AVX-512F and AVX-512DQ (detected at run time, once;
//! `HECC_NO_SIMD=1` turns it off), [`NttTable::forward`] and
//! [`NttTable::inverse`] run eight-lane kernels instead; the portable scalar
//! kernels stay the fallback. For primes below 2^50 on CPUs that also have
//! AVX-512 IFMA, the Shoup products use the 52-bit multiply-add instructions
//! (three per product instead of six 32-bit multiplies), with their own
//! 52-bit Shoup twiddle tables. All kernels compute exactly the same
//! (fully reduced) outputs, and a test checks them against each other. No
//! build flag is needed.

use super::error::Result;
use super::zq::{primitive_root_2n, Modulus};

/// Reverses the low `bits` bits of `x`.
#[inline]
pub fn bit_reverse(x: usize, bits: u32) -> usize {
    if bits == 0 {
        0
    } else {
        x.reverse_bits() >> (usize::BITS - bits)
    }
}

/// `x - m` if `x >= m`, else `x`, without a branch.
#[inline(always)]
fn csub(x: u64, m: u64) -> u64 {
    x.min(x.wrapping_sub(m))
}

/// Precomputed twiddle factors of one prime.
#[derive(Clone, Debug)]
pub struct NttTable {
    n: usize,
    modulus: Modulus,
    psi_rev: Vec<u64>,
    psi_rev_shoup: Vec<u64>,
    ipsi_rev: Vec<u64>,
    ipsi_rev_shoup: Vec<u64>,
    n_inv: u64,
    n_inv_shoup: u64,
    /// 52-bit Shoup quotients of the IFMA kernels (empty unless `ifma`).
    psi_rev_shoup52: Vec<u64>,
    ipsi_rev_shoup52: Vec<u64>,
    n_inv_shoup52: u64,
    /// Whether the AVX-512 kernels are used (detected at construction).
    simd: bool,
    /// Whether they use the IFMA multiplier (prime below 2^50, CPU with AVX-512 IFMA).
    ifma: bool,
}

impl NttTable {
    /// Builds the tables for ring degree `2^log_n` and the prime `modulus`.
    pub fn new(modulus: &Modulus, log_n: u32) -> Result<Self> {
        let n = 1usize << log_n;
        let psi = primitive_root_2n(modulus, log_n)?;
        let ipsi = modulus
            .inv(psi)
            .ok_or_else(|| super::CkksError::InvalidParameters("zero root".into()))?;
        let mut psi_rev = vec![0u64; n];
        let mut ipsi_rev = vec![0u64; n];
        let (mut p, mut ip) = (1u64, 1u64);
        for i in 0..n {
            let r = bit_reverse(i, log_n);
            psi_rev[r] = p;
            ipsi_rev[r] = ip;
            p = modulus.mul(p, psi);
            ip = modulus.mul(ip, ipsi);
        }
        let psi_rev_shoup = psi_rev.iter().map(|&w| modulus.shoup(w)).collect();
        let ipsi_rev_shoup = ipsi_rev.iter().map(|&w| modulus.shoup(w)).collect();
        let n_inv = modulus
            .inv(n as u64)
            .ok_or_else(|| super::CkksError::InvalidParameters("N not invertible".into()))?;
        let simd = x86::available() && n >= x86::MIN_N;
        let ifma = simd && modulus.value() < (1 << 50) && x86::ifma_available();
        let shoup52 = |v: &Vec<u64>| -> Vec<u64> {
            if ifma {
                v.iter().map(|&w| x86::shoup52(modulus, w)).collect()
            } else {
                Vec::new()
            }
        };
        let (psi_rev_shoup52, ipsi_rev_shoup52) = (shoup52(&psi_rev), shoup52(&ipsi_rev));
        let n_inv_shoup52 = if ifma {
            x86::shoup52(modulus, n_inv)
        } else {
            0
        };
        Ok(Self {
            n,
            modulus: modulus.clone(),
            psi_rev,
            psi_rev_shoup,
            ipsi_rev,
            ipsi_rev_shoup,
            n_inv,
            n_inv_shoup: modulus.shoup(n_inv),
            psi_rev_shoup52,
            ipsi_rev_shoup52,
            n_inv_shoup52,
            simd,
            ifma,
        })
    }

    /// The prime of this table.
    pub fn modulus(&self) -> &Modulus {
        &self.modulus
    }

    /// In-place forward negacyclic NTT of `a` (length `N`, values below `4q`).
    ///
    /// Stages are processed two at a time (radix-4 passes over quarters of
    /// each block), which halves the loads and stores of the radix-2 form;
    /// when `log N` is odd the first stage runs alone. The last pass folds in
    /// the final reduction to `[0, q)`.
    pub fn forward(&self, a: &mut [u64]) {
        #[cfg(target_arch = "x86_64")]
        if self.simd && a.len() == self.n {
            if self.ifma {
                // SAFETY: `ifma` is only set when the CPU has AVX-512F, DQ and IFMA
                // and the prime is below 2^50.
                unsafe { x86::forward52(self, a) };
            } else {
                // SAFETY: `simd` is only set when the CPU has AVX-512F and DQ.
                unsafe { x86::forward(self, a) };
            }
            return;
        }
        self.forward_scalar(a);
    }

    /// Whether this table runs the AVX-512 kernels (detected at run time;
    /// `HECC_NO_SIMD=1` in the environment turns them off).
    pub fn uses_simd(&self) -> bool {
        self.simd
    }

    /// Whether the vector kernels use the 52-bit IFMA multiplier (a prime below 2^50 on a CPU
    /// with AVX-512 IFMA).
    pub fn uses_ifma(&self) -> bool {
        self.ifma
    }

    /// A copy of this table that always runs the portable scalar kernels.
    pub fn scalar_only(&self) -> Self {
        Self {
            simd: false,
            ifma: false,
            psi_rev_shoup52: Vec::new(),
            ipsi_rev_shoup52: Vec::new(),
            n_inv_shoup52: 0,
            ..self.clone()
        }
    }

    /// The portable scalar forward transform (same contract as [`Self::forward`]).
    fn forward_scalar(&self, a: &mut [u64]) {
        debug_assert_eq!(a.len(), self.n);
        let n = self.n;
        if n < 4 || a.len() != n {
            self.forward_radix2(a);
            return;
        }
        let q = self.modulus.value();
        let two_q = 2 * q;
        let md = &self.modulus;
        let psi = &self.psi_rev;
        let psis = &self.psi_rev_shoup;
        let mut m = 1;
        let mut t = n / 2;
        if n.trailing_zeros() % 2 == 1 {
            // One radix-2 stage (m = 1) so that an even number remains.
            let (w, ws) = (psi[1], psis[1]);
            let (x, y) = a.split_at_mut(t);
            for (xj, yj) in x.iter_mut().zip(y.iter_mut()) {
                let u = csub(*xj, two_q);
                let v = md.mul_shoup_lazy(*yj, w, ws);
                *xj = u + v;
                *yj = u + two_q - v;
            }
            m = 2;
            t = n / 4;
        }
        // Pairs of lazy stages (m, 2m) while the second is not the last one.
        while m < n / 4 {
            let h = t / 2;
            let w1s = psi[m..2 * m].iter().zip(&psis[m..2 * m]);
            let w23 = psi[2 * m..4 * m]
                .chunks_exact(2)
                .zip(psis[2 * m..4 * m].chunks_exact(2));
            for ((chunk, (&w1, &w1h)), (w23, w23h)) in a.chunks_exact_mut(2 * t).zip(w1s).zip(w23) {
                let (w2, w2h, w3, w3h) = (w23[0], w23h[0], w23[1], w23h[1]);
                let (lo, hi) = chunk.split_at_mut(t);
                let (x0, x1) = lo.split_at_mut(h);
                let (x2, x3) = hi.split_at_mut(h);
                for ((p0, p1), (p2, p3)) in x0
                    .iter_mut()
                    .zip(x1.iter_mut())
                    .zip(x2.iter_mut().zip(x3.iter_mut()))
                {
                    let a0 = csub(*p0, two_q);
                    let a1 = csub(*p1, two_q);
                    let v2 = md.mul_shoup_lazy(*p2, w1, w1h);
                    let v3 = md.mul_shoup_lazy(*p3, w1, w1h);
                    let b0 = csub(a0 + v2, two_q);
                    let b2 = csub(a0 + two_q - v2, two_q);
                    let b1 = a1 + v3;
                    let b3 = a1 + two_q - v3;
                    let v1 = md.mul_shoup_lazy(b1, w2, w2h);
                    let v3 = md.mul_shoup_lazy(b3, w3, w3h);
                    *p0 = b0 + v1;
                    *p1 = b0 + two_q - v1;
                    *p2 = b2 + v3;
                    *p3 = b2 + two_q - v3;
                }
            }
            m <<= 2;
            t >>= 2;
        }
        // Last two stages (t = 2 and t = 1) on blocks of four, with the
        // final reduction to [0, q) folded in.
        debug_assert_eq!(m, n / 4);
        let reduce4 = |v: u64| csub(csub(v, two_q), q);
        let w1s = psi[m..2 * m].iter().zip(&psis[m..2 * m]);
        let w23 = psi[2 * m..4 * m]
            .chunks_exact(2)
            .zip(psis[2 * m..4 * m].chunks_exact(2));
        for ((c, (&w1, &w1h)), (w23, w23h)) in a.chunks_exact_mut(4).zip(w1s).zip(w23) {
            let (w2, w2h, w3, w3h) = (w23[0], w23h[0], w23[1], w23h[1]);
            let a0 = csub(c[0], two_q);
            let a1 = csub(c[1], two_q);
            let v2 = md.mul_shoup_lazy(c[2], w1, w1h);
            let v3 = md.mul_shoup_lazy(c[3], w1, w1h);
            let b0 = csub(a0 + v2, two_q);
            let b2 = csub(a0 + two_q - v2, two_q);
            let b1 = a1 + v3;
            let b3 = a1 + two_q - v3;
            let v1 = md.mul_shoup_lazy(b1, w2, w2h);
            let v3 = md.mul_shoup_lazy(b3, w3, w3h);
            c[0] = reduce4(b0 + v1);
            c[1] = reduce4(b0 + two_q - v1);
            c[2] = reduce4(b2 + v3);
            c[3] = reduce4(b2 + two_q - v3);
        }
    }

    /// Radix-2 forward transform (same contract as [`Self::forward`]); used
    /// for `N < 4`.
    fn forward_radix2(&self, a: &mut [u64]) {
        debug_assert_eq!(a.len(), self.n);
        let q = self.modulus.value();
        let two_q = 2 * q;
        let m_ = &self.modulus;
        let n = self.n;
        let mut t = n;
        let mut m = 1;
        // All stages but the last two: lazy butterflies, values in [0, 4q).
        while m < n / 4 {
            t >>= 1;
            let ws = &self.psi_rev[m..2 * m];
            let wss = &self.psi_rev_shoup[m..2 * m];
            for ((chunk, &w), &wsh) in a.chunks_exact_mut(2 * t).zip(ws).zip(wss) {
                let (x, y) = chunk.split_at_mut(t);
                for (xj, yj) in x.iter_mut().zip(y.iter_mut()) {
                    let u = csub(*xj, two_q);
                    let v = m_.mul_shoup_lazy(*yj, w, wsh);
                    *xj = u + v;
                    *yj = u + two_q - v;
                }
            }
            m <<= 1;
        }
        // Stage with t = 2 (groups of four).
        if m < n / 2 {
            let ws = &self.psi_rev[m..2 * m];
            let wss = &self.psi_rev_shoup[m..2 * m];
            for ((c, &w), &wsh) in a.chunks_exact_mut(4).zip(ws).zip(wss) {
                for j in 0..2 {
                    let u = csub(c[j], two_q);
                    let v = m_.mul_shoup_lazy(c[j + 2], w, wsh);
                    c[j] = u + v;
                    c[j + 2] = u + two_q - v;
                }
            }
            m <<= 1;
        }
        // Last stage (t = 1) with the final reduction to [0, q) folded in.
        let ws = &self.psi_rev[m..2 * m];
        let wss = &self.psi_rev_shoup[m..2 * m];
        let reduce4 = |v: u64| csub(csub(v, two_q), q);
        for ((c, &w), &wsh) in a.chunks_exact_mut(2).zip(ws).zip(wss) {
            let u = csub(c[0], two_q);
            let v = m_.mul_shoup_lazy(c[1], w, wsh);
            c[0] = reduce4(u + v);
            c[1] = reduce4(u + two_q - v);
        }
    }

    /// In-place inverse negacyclic NTT of `a` (length `N`, values below `2q`).
    pub fn inverse(&self, a: &mut [u64]) {
        #[cfg(target_arch = "x86_64")]
        if self.simd && a.len() == self.n {
            if self.ifma {
                // SAFETY: as in `forward`.
                unsafe { x86::inverse52(self, a) };
            } else {
                // SAFETY: `simd` is only set when the CPU has AVX-512F and DQ.
                unsafe { x86::inverse(self, a) };
            }
            return;
        }
        self.inverse_scalar(a);
    }

    /// The portable scalar inverse transform (same contract as [`Self::inverse`]).
    fn inverse_scalar(&self, a: &mut [u64]) {
        debug_assert_eq!(a.len(), self.n);
        let q = self.modulus.value();
        let two_q = 2 * q;
        let m_ = &self.modulus;
        let n = self.n;
        let mut m = n >> 1;
        let mut t = 1;
        let ipsi = &self.ipsi_rev;
        let ipsis = &self.ipsi_rev_shoup;
        // Stages m = N/2 .. 2 run two at a time (radix-4 over quarters of
        // blocks of 4t); if their number is odd, the first one runs alone.
        if n >= 4 && (n.trailing_zeros() - 1) % 2 == 1 {
            let ws = &ipsi[m..2 * m];
            let wss = &ipsis[m..2 * m];
            for ((c, &w), &wsh) in a.chunks_exact_mut(2).zip(ws).zip(wss) {
                let (u, v) = (c[0], c[1]);
                c[0] = csub(u + v, two_q);
                c[1] = m_.mul_shoup_lazy(u + two_q - v, w, wsh);
            }
            t = 2;
            m >>= 1;
        }
        while m > 1 {
            let wa = ipsi[m..2 * m]
                .chunks_exact(2)
                .zip(ipsis[m..2 * m].chunks_exact(2));
            let h = m / 2;
            let wb = ipsi[h..m].iter().zip(&ipsis[h..m]);
            for ((chunk, (w01, w01h)), (&wb, &wbh)) in a.chunks_exact_mut(4 * t).zip(wa).zip(wb) {
                let (w0, w0h, w1, w1h) = (w01[0], w01h[0], w01[1], w01h[1]);
                let (lo, hi) = chunk.split_at_mut(2 * t);
                let (x0, x1) = lo.split_at_mut(t);
                let (x2, x3) = hi.split_at_mut(t);
                for ((p0, p1), (p2, p3)) in x0
                    .iter_mut()
                    .zip(x1.iter_mut())
                    .zip(x2.iter_mut().zip(x3.iter_mut()))
                {
                    let (u0, v0, u1, v1) = (*p0, *p1, *p2, *p3);
                    let a0 = csub(u0 + v0, two_q);
                    let a1 = m_.mul_shoup_lazy(u0 + two_q - v0, w0, w0h);
                    let a2 = csub(u1 + v1, two_q);
                    let a3 = m_.mul_shoup_lazy(u1 + two_q - v1, w1, w1h);
                    *p0 = csub(a0 + a2, two_q);
                    *p2 = m_.mul_shoup_lazy(a0 + two_q - a2, wb, wbh);
                    *p1 = csub(a1 + a3, two_q);
                    *p3 = m_.mul_shoup_lazy(a1 + two_q - a3, wb, wbh);
                }
            }
            t <<= 2;
            m >>= 2;
        }
        // Last stage (m = 1) with the multiplication by 1/N folded in:
        // x' = (u + v) / N, y' = (u - v) * w / N.
        let (ni, nis) = (self.n_inv, self.n_inv_shoup);
        let wn = m_.mul(self.ipsi_rev[1], ni);
        let wns = m_.shoup(wn);
        let (x, y) = a.split_at_mut(n / 2);
        for (xj, yj) in x.iter_mut().zip(y.iter_mut()) {
            let u = *xj;
            let v = *yj;
            *xj = m_.mul_shoup(u + v, ni, nis);
            *yj = m_.mul_shoup(u + two_q - v, wn, wns);
        }
    }
}

/// AVX-512 (F + DQ) kernels of the forward and inverse transforms, chosen at
/// run time. Eight butterflies per instruction; the 64x64-bit high product of
/// Shoup's quotient is built from four 32x32-bit products, the low products
/// use `vpmullq`. Stages with half-blocks of at least 8 words broadcast one
/// twiddle; the three stages with half-blocks of 4, 2 and 1 words regroup 16
/// words with two-source permutes. Values and bounds are exactly those of
/// the scalar kernels, so both give identical outputs.
///
/// Every function requires AVX-512F and AVX-512DQ (checked by `available`
/// before any call); that is their only safety condition.
// Bodies of `unsafe fn` are unsafe contexts in edition 2021. The AVX-512
// intrinsics need Rust 1.89 (the workspace `rust-version`).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_op_in_unsafe_fn, clippy::missing_safety_doc)]
pub(crate) mod x86 {
    use super::{Modulus, NttTable};
    use std::arch::x86_64::*;

    /// Whether the CPU also has AVX-512 IFMA (52-bit multiply-add), for the
    /// IFMA transforms of primes below 2^50 (`HECC_NO_SIMD=1` turns it off
    /// with the rest).
    pub(crate) fn ifma_available() -> bool {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| available() && std::is_x86_feature_detected!("avx512ifma"))
    }

    /// Smallest ring degree handled by the vector kernels.
    pub(super) const MIN_N: usize = 32;

    /// Whether the CPU has the required features.
    pub(crate) fn available() -> bool {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            std::env::var_os("HECC_NO_SIMD").is_none_or(|v| v == "0")
                && std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512dq")
        })
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn load(s: &[u64]) -> __m512i {
        let s = &s[..8];
        // SAFETY (caller): AVX-512F present; `s` has 8 readable words.
        _mm512_loadu_si512(s.as_ptr() as *const __m512i)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn store(s: &mut [u64], v: __m512i) {
        let s = &mut s[..8];
        // SAFETY (caller): AVX-512F present; `s` has 8 writable words.
        _mm512_storeu_si512(s.as_mut_ptr() as *mut __m512i, v)
    }

    /// Returns `v` unchanged through an empty assembly block the optimiser
    /// cannot see into (it emits no instruction).
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn opaque(v: __m512i) -> __m512i {
        let mut v = v;
        // SAFETY: the assembly is empty; it only pins `v` to a register.
        unsafe {
            std::arch::asm!("/* {0} */", inout(zmm_reg) v, options(pure, nomem, nostack, preserves_flags));
        }
        v
    }

    /// High 64 bits of the 64x64-bit lane products.
    ///
    /// The upper halves pass through [`opaque`]: otherwise LLVM recognises
    /// the 32-bit-halves idiom as a 128-bit multiply-high, which x86 has
    /// only for scalars, and turns the vector code into eight extracts,
    /// scalar `mul`s and inserts per vector (several times slower).
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    pub(crate) fn mulhi(a: __m512i, b: __m512i) -> __m512i {
        let lo = _mm512_set1_epi64(0xffff_ffff);
        let a_hi = opaque(_mm512_srli_epi64::<32>(a));
        let b_hi = opaque(_mm512_srli_epi64::<32>(b));
        let ll = _mm512_mul_epu32(a, b);
        let lh = _mm512_mul_epu32(a, b_hi);
        let hl = _mm512_mul_epu32(a_hi, b);
        let hh = _mm512_mul_epu32(a_hi, b_hi);
        let mid = _mm512_add_epi64(
            _mm512_srli_epi64::<32>(ll),
            _mm512_add_epi64(_mm512_and_si512(lh, lo), _mm512_and_si512(hl, lo)),
        );
        _mm512_add_epi64(
            _mm512_add_epi64(hh, _mm512_srli_epi64::<32>(mid)),
            _mm512_add_epi64(_mm512_srli_epi64::<32>(lh), _mm512_srli_epi64::<32>(hl)),
        )
    }

    /// `x * w mod q` in `[0, 2q)` (Shoup, `ws = floor(w * 2^64 / q)`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    pub(crate) unsafe fn mul_shoup_lazy(
        x: __m512i,
        w: __m512i,
        ws: __m512i,
        q: __m512i,
    ) -> __m512i {
        let qhat = mulhi(x, ws);
        _mm512_sub_epi64(_mm512_mullo_epi64(x, w), _mm512_mullo_epi64(qhat, q))
    }

    /// `x - m` where `x >= m`, else `x`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    pub(crate) fn csub(x: __m512i, m: __m512i) -> __m512i {
        _mm512_min_epu64(x, _mm512_sub_epi64(x, m))
    }

    /// The butterflies and transforms, instantiated once per multiplier:
    /// the 64-bit Shoup product built from 32-bit multiplies (AVX-512F/DQ),
    /// and the 52-bit one of AVX-512 IFMA for primes below 2^50.
    macro_rules! kernels {
        (
            $feat:literal, $mul:ident, $shoup:path, $psis:ident, $ipsis:ident, $nis:ident,
            $fwd_bf:ident, $inv_bf:ident, $forward:ident, $inverse:ident
        ) => {
            /// Harvey's forward butterfly on lanes (inputs below 4q, outputs below 4q).
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn $fwd_bf(
                x: __m512i,
                y: __m512i,
                w: __m512i,
                ws: __m512i,
                q: __m512i,
                two_q: __m512i,
            ) -> (__m512i, __m512i) {
                let u = csub(x, two_q);
                let v = $mul(y, w, ws, q);
                (
                    _mm512_add_epi64(u, v),
                    _mm512_sub_epi64(_mm512_add_epi64(u, two_q), v),
                )
            }

            /// Gentleman-Sande inverse butterfly (inputs below 2q, outputs below 2q).
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn $inv_bf(
                x: __m512i,
                y: __m512i,
                w: __m512i,
                ws: __m512i,
                q: __m512i,
                two_q: __m512i,
            ) -> (__m512i, __m512i) {
                let s = csub(_mm512_add_epi64(x, y), two_q);
                let d = _mm512_sub_epi64(_mm512_add_epi64(x, two_q), y);
                (s, $mul(d, w, ws, q))
            }

            /// Forward transform; same contract as [`NttTable::forward`].
            #[target_feature(enable = $feat)]
            pub(super) unsafe fn $forward(tab: &NttTable, a: &mut [u64]) {
                let n = tab.n;
                let qs = tab.modulus.value();
                let q = _mm512_set1_epi64(qs as i64);
                let two_q = _mm512_set1_epi64((2 * qs) as i64);
                let psi = &tab.psi_rev;
                let psis = &tab.$psis;
                let mut m = 1;
                let mut t = n / 2;
                // Pairs of stages (m, 2m) fused over quarters of blocks of 2t words
                // (radix 4), halving the loads and stores.
                while t >= 16 {
                    let h = t / 2;
                    for (blk, chunk) in a.chunks_exact_mut(2 * t).enumerate() {
                        let w1 = _mm512_set1_epi64(psi[m + blk] as i64);
                        let w1s = _mm512_set1_epi64(psis[m + blk] as i64);
                        let w2 = _mm512_set1_epi64(psi[2 * m + 2 * blk] as i64);
                        let w2s = _mm512_set1_epi64(psis[2 * m + 2 * blk] as i64);
                        let w3 = _mm512_set1_epi64(psi[2 * m + 2 * blk + 1] as i64);
                        let w3s = _mm512_set1_epi64(psis[2 * m + 2 * blk + 1] as i64);
                        let (lo, hi) = chunk.split_at_mut(t);
                        let (x0, x1) = lo.split_at_mut(h);
                        let (x2, x3) = hi.split_at_mut(h);
                        for ((p0, p1), (p2, p3)) in x0
                            .chunks_exact_mut(8)
                            .zip(x1.chunks_exact_mut(8))
                            .zip(x2.chunks_exact_mut(8).zip(x3.chunks_exact_mut(8)))
                        {
                            let (b0, b2) = $fwd_bf(load(p0), load(p2), w1, w1s, q, two_q);
                            let (b1, b3) = $fwd_bf(load(p1), load(p3), w1, w1s, q, two_q);
                            let (c0, c1) = $fwd_bf(b0, b1, w2, w2s, q, two_q);
                            let (c2, c3) = $fwd_bf(b2, b3, w3, w3s, q, two_q);
                            store(p0, c0);
                            store(p1, c1);
                            store(p2, c2);
                            store(p3, c3);
                        }
                    }
                    m <<= 2;
                    t >>= 2;
                }
                while t >= 8 {
                    for (blk, chunk) in a.chunks_exact_mut(2 * t).enumerate() {
                        let w = _mm512_set1_epi64(psi[m + blk] as i64);
                        let ws = _mm512_set1_epi64(psis[m + blk] as i64);
                        let (xs, ys) = chunk.split_at_mut(t);
                        for (x, y) in xs.chunks_exact_mut(8).zip(ys.chunks_exact_mut(8)) {
                            let (u, v) = $fwd_bf(load(x), load(y), w, ws, q, two_q);
                            store(x, u);
                            store(y, v);
                        }
                    }
                    m <<= 1;
                    t >>= 1;
                }
                // Half-blocks of 4, 2, 1 words: 16 words (8 butterflies) at a time.
                while t >= 1 {
                    let (ix, iy, inv, tw) = small_indices(t);
                    let (ix, iy, tw) = (idx(&ix), idx(&iy), idx(&tw));
                    let (inv_lo, inv_hi) = (idx(&inv[..8]), idx(&inv[8..]));
                    let blocks = 8 / t; // blocks of 2t words per 16 words
                    let last = t == 1;
                    for (c, chunk) in a.chunks_exact_mut(16).enumerate() {
                        let b0 = m + c * blocks;
                        let w = _mm512_permutexvar_epi64(tw, load(&psi[b0..]));
                        let ws = _mm512_permutexvar_epi64(tw, load(&psis[b0..]));
                        let (lo, hi) = (load(&chunk[..8]), load(&chunk[8..]));
                        let x = _mm512_permutex2var_epi64(lo, ix, hi);
                        let y = _mm512_permutex2var_epi64(lo, iy, hi);
                        let (mut u, mut v) = $fwd_bf(x, y, w, ws, q, two_q);
                        if last {
                            u = csub(csub(u, two_q), q);
                            v = csub(csub(v, two_q), q);
                        }
                        let (lo_w, hi_w) = chunk.split_at_mut(8);
                        store(lo_w, _mm512_permutex2var_epi64(u, inv_lo, v));
                        store(hi_w, _mm512_permutex2var_epi64(u, inv_hi, v));
                    }
                    m <<= 1;
                    t >>= 1;
                }
            }

            /// Inverse transform; same contract as [`NttTable::inverse`].
            #[target_feature(enable = $feat)]
            pub(super) unsafe fn $inverse(tab: &NttTable, a: &mut [u64]) {
                let n = tab.n;
                let md = &tab.modulus;
                let qs = md.value();
                let q = _mm512_set1_epi64(qs as i64);
                let two_q = _mm512_set1_epi64((2 * qs) as i64);
                let ipsi = &tab.ipsi_rev;
                let ipsis = &tab.$ipsis;
                let mut m = n >> 1;
                let mut t = 1;
                // Half-blocks of 1, 2, 4 words with permutes.
                while t < 8 {
                    let (ix, iy, inv, tw) = small_indices(t);
                    let (ix, iy, tw) = (idx(&ix), idx(&iy), idx(&tw));
                    let (inv_lo, inv_hi) = (idx(&inv[..8]), idx(&inv[8..]));
                    let blocks = 8 / t;
                    for (c, chunk) in a.chunks_exact_mut(16).enumerate() {
                        let b0 = m + c * blocks;
                        let w = _mm512_permutexvar_epi64(tw, load(&ipsi[b0..]));
                        let ws = _mm512_permutexvar_epi64(tw, load(&ipsis[b0..]));
                        let (lo, hi) = (load(&chunk[..8]), load(&chunk[8..]));
                        let x = _mm512_permutex2var_epi64(lo, ix, hi);
                        let y = _mm512_permutex2var_epi64(lo, iy, hi);
                        let (u, v) = $inv_bf(x, y, w, ws, q, two_q);
                        let (lo_w, hi_w) = chunk.split_at_mut(8);
                        store(lo_w, _mm512_permutex2var_epi64(u, inv_lo, v));
                        store(hi_w, _mm512_permutex2var_epi64(u, inv_hi, v));
                    }
                    m >>= 1;
                    t <<= 1;
                }
                while m > 1 {
                    for (blk, chunk) in a.chunks_exact_mut(2 * t).enumerate() {
                        let w = _mm512_set1_epi64(ipsi[m + blk] as i64);
                        let ws = _mm512_set1_epi64(ipsis[m + blk] as i64);
                        let (xs, ys) = chunk.split_at_mut(t);
                        for (x, y) in xs.chunks_exact_mut(8).zip(ys.chunks_exact_mut(8)) {
                            let (u, v) = $inv_bf(load(x), load(y), w, ws, q, two_q);
                            store(x, u);
                            store(y, v);
                        }
                    }
                    m >>= 1;
                    t <<= 1;
                }
                // Last stage (m = 1) with 1/N folded in, fully reduced.
                let ni = _mm512_set1_epi64(tab.n_inv as i64);
                let nis = _mm512_set1_epi64(tab.$nis as i64);
                let wn_s = md.mul(tab.ipsi_rev[1], tab.n_inv);
                let wn = _mm512_set1_epi64(wn_s as i64);
                let wns = _mm512_set1_epi64($shoup(md, wn_s) as i64);
                let (xs, ys) = a.split_at_mut(n / 2);
                for (x, y) in xs.chunks_exact_mut(8).zip(ys.chunks_exact_mut(8)) {
                    let (u, v) = (load(x), load(y));
                    let s = _mm512_add_epi64(u, v);
                    let d = _mm512_sub_epi64(_mm512_add_epi64(u, two_q), v);
                    store(x, csub($mul(s, ni, nis, q), q));
                    store(y, csub($mul(d, wn, wns, q), q));
                }
            }
        };
    }

    kernels!(
        "avx512f,avx512dq",
        mul_shoup_lazy,
        shoup64,
        psi_rev_shoup,
        ipsi_rev_shoup,
        n_inv_shoup,
        fwd_bf,
        inv_bf,
        forward,
        inverse
    );
    kernels!(
        "avx512f,avx512dq,avx512ifma",
        mul_shoup_lazy52,
        shoup52,
        psi_rev_shoup52,
        ipsi_rev_shoup52,
        n_inv_shoup52,
        fwd_bf52,
        inv_bf52,
        forward52,
        inverse52
    );

    /// Shoup quotient `floor(w * 2^64 / q)` (the `shoup64` multiplier's).
    fn shoup64(m: &Modulus, w: u64) -> u64 {
        m.shoup(w)
    }

    /// Shoup quotient `floor(w * 2^52 / q)` of the IFMA multiplier (`w < q`).
    pub(super) fn shoup52(m: &Modulus, w: u64) -> u64 {
        (((w as u128) << 52) / m.value() as u128) as u64
    }

    /// `x * w mod q` in `[0, 2q)` with 52-bit IFMA products, for `q < 2^50`,
    /// `x < 2^52` (so inputs below `4q`) and `ws = shoup52(w)`: the quotient
    /// estimate `floor(x * ws / 2^52)` is at most 1 short, and the remainder,
    /// below `2q < 2^52`, is exact modulo `2^52`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq,avx512ifma")]
    fn mul_shoup_lazy52(x: __m512i, w: __m512i, ws: __m512i, q: __m512i) -> __m512i {
        let z = _mm512_setzero_si512();
        let qhat = _mm512_madd52hi_epu64(z, x, ws);
        let r = _mm512_sub_epi64(
            _mm512_madd52lo_epu64(z, x, w),
            _mm512_madd52lo_epu64(z, qhat, q),
        );
        _mm512_and_si512(r, _mm512_set1_epi64((1i64 << 52) - 1))
    }

    /// Permutation indices for half-blocks of `t` words (1, 2 or 4) within
    /// 16 words: lanes of the x halves, lanes of the y halves, the inverse
    /// map (word -> lane of x, or 8 + lane of y), and the twiddle spread
    /// (lane -> block).
    fn small_indices(t: usize) -> ([i64; 8], [i64; 8], [i64; 16], [i64; 8]) {
        let mut ix = [0i64; 8];
        let mut iy = [0i64; 8];
        let mut inv = [0i64; 16];
        let mut tw = [0i64; 8];
        for l in 0..8 {
            let (b, o) = (l / t, l % t);
            let x = b * 2 * t + o;
            ix[l] = x as i64;
            iy[l] = (x + t) as i64;
            inv[x] = l as i64;
            inv[x + t] = (8 + l) as i64;
            tw[l] = b as i64;
        }
        (ix, iy, inv, tw)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn idx(v: &[i64]) -> __m512i {
        _mm512_setr_epi64(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7])
    }

    /// Centred lift of `y` (values below the odd `b`, with `b <= 2t`) into
    /// `t`: `x` if `x <= b/2`, else `x - b`, reduced mod `t`; same result as
    /// the scalar loop in `rns`. Processes whole groups of 8; returns how
    /// many words were done.
    #[target_feature(enable = "avx512f,avx512dq")]
    pub(crate) unsafe fn centred_lift_small(b: u64, t: u64, y: &[u64], out: &mut [u64]) -> usize {
        let bv = _mm512_set1_epi64(b as i64);
        let half = _mm512_set1_epi64((b >> 1) as i64);
        let tv = _mm512_set1_epi64(t as i64);
        let mut done = 0;
        for (o, x) in out.chunks_exact_mut(8).zip(y.chunks_exact(8)) {
            let x = load(x);
            let neg = _mm512_cmpgt_epu64_mask(x, half);
            // a = x or b - x, reduced below t
            let a = _mm512_mask_sub_epi64(x, neg, bv, x);
            let r = csub(a, tv);
            // negate where needed: t - r, with t - 0 -> 0
            let nr = csub(_mm512_sub_epi64(tv, r), tv);
            store(o, _mm512_mask_mov_epi64(r, neg, nr));
            done += 8;
        }
        done
    }

    /// Fast base conversion into one prime `t` from two or more source limbs:
    /// `out = sum_b y_b * h_b - v * bm mod t`, with `(h_b, Shoup(h_b))` in
    /// `h` and `(bm, Shoup(bm))`, all constants below `t`; any `y_b`, `v`.
    /// Same result as the scalar u128 loop in `rns`: the accumulator stays
    /// below `2t` after every term (below `4t < 2^63` before the conditional
    /// subtraction, since `t < 2^61`), for any number of terms. Processes
    /// whole groups of 8; returns how many words were done (0 for a single
    /// source limb).
    #[target_feature(enable = "avx512f,avx512dq")]
    pub(crate) unsafe fn conv_shoup(
        t: u64,
        y: &[u64],
        n: usize,
        h: &[(u64, u64)],
        bm: (u64, u64),
        v: &[u64],
        out: &mut [u64],
    ) -> usize {
        if h.len() < 2 || y.len() < h.len() * n || out.len() < n || v.len() < n {
            return 0;
        }
        let tv = _mm512_set1_epi64(t as i64);
        let two_t = _mm512_set1_epi64((2 * t) as i64);
        let hv: Vec<(__m512i, __m512i)> = h
            .iter()
            .map(|&(w, ws)| (_mm512_set1_epi64(w as i64), _mm512_set1_epi64(ws as i64)))
            .collect();
        let (bw, bws) = (
            _mm512_set1_epi64(bm.0 as i64),
            _mm512_set1_epi64(bm.1 as i64),
        );
        let mut k = 0;
        while k + 8 <= n {
            let mut acc = _mm512_setzero_si512();
            for (b, &(w, ws)) in hv.iter().enumerate() {
                let x = load(&y[b * n + k..]);
                acc = csub(_mm512_add_epi64(acc, mul_shoup_lazy(x, w, ws, tv)), two_t);
            }
            let s = mul_shoup_lazy(load(&v[k..]), bw, bws, tv);
            let r = _mm512_sub_epi64(_mm512_add_epi64(acc, two_t), s);
            store(&mut out[k..], csub(csub(r, two_t), tv));
            k += 8;
        }
        k
    }
}

/// Stand-in on other architectures: never available.
#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    pub(super) const MIN_N: usize = usize::MAX;
    pub(super) fn available() -> bool {
        false
    }
    pub(super) fn ifma_available() -> bool {
        false
    }
    pub(super) fn shoup52(_: &super::Modulus, _: u64) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ckks::zq::generate_primes;
    use rand::{Rng, SeedableRng};

    fn schoolbook(a: &[u64], b: &[u64], m: &Modulus) -> Vec<u64> {
        let n = a.len();
        let mut c = vec![0u64; n];
        for i in 0..n {
            for j in 0..n {
                let p = m.mul(a[i], b[j]);
                if i + j < n {
                    c[i + j] = m.add(c[i + j], p);
                } else {
                    c[i + j - n] = m.sub(c[i + j - n], p);
                }
            }
        }
        c
    }

    #[test]
    fn ntt_multiplication_matches_schoolbook() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for (log_n, bits) in [(3u32, 30u32), (6, 45), (10, 61), (12, 60)] {
            let q = generate_primes(bits, 1, log_n.max(1), &[]).unwrap()[0];
            let m = Modulus::new(q).unwrap();
            let t = NttTable::new(&m, log_n).unwrap();
            let n = 1 << log_n;
            let a: Vec<u64> = (0..n).map(|_| rng.gen_range(0..q)).collect();
            let b: Vec<u64> = (0..n).map(|_| rng.gen_range(0..q)).collect();
            let expect = schoolbook(&a, &b, &m);
            let (mut fa, mut fb) = (a.clone(), b.clone());
            t.forward(&mut fa);
            t.forward(&mut fb);
            assert!(fa.iter().all(|&x| x < q));
            let mut c: Vec<u64> = fa.iter().zip(&fb).map(|(&x, &y)| m.mul(x, y)).collect();
            t.inverse(&mut c);
            assert_eq!(c, expect, "log_n = {log_n}");
            t.inverse(&mut fa);
            assert_eq!(fa, a);
        }
    }

    #[test]
    fn ntt_output_is_evaluation_at_odd_powers_bit_reversed() {
        let log_n = 5;
        let q = generate_primes(40, 1, log_n, &[]).unwrap()[0];
        let m = Modulus::new(q).unwrap();
        let t = NttTable::new(&m, log_n).unwrap();
        let n = 1usize << log_n;
        let psi = primitive_root_2n(&m, log_n).unwrap();
        let a: Vec<u64> = (0..n as u64).map(|i| i * i + 3).collect();
        let mut f = a.clone();
        t.forward(&mut f);
        for (i, &fi) in f.iter().enumerate() {
            let x = m.pow(psi, 2 * bit_reverse(i, log_n) as u64 + 1);
            let v = a.iter().rev().fold(0, |acc, &c| m.add(m.mul(acc, x), c));
            assert_eq!(fi, v);
        }
    }

    #[test]
    fn simd_kernels_match_scalar() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for log_n in [5u32, 6, 7, 8, 11, 13] {
            for bits in [30u32, 40, 50, 60, 61] {
                let q = generate_primes(bits, 1, log_n, &[]).unwrap()[0];
                let m = Modulus::new(q).unwrap();
                let t = NttTable::new(&m, log_n).unwrap();
                let s = t.scalar_only();
                assert!(!s.uses_simd() && !s.uses_ifma());
                // The 52-bit kernels are the ones compared for primes below 2^50 wherever the CPU
                // has them (so their test cannot pass by not running them).
                assert_eq!(
                    t.uses_ifma(),
                    t.uses_simd() && q < (1 << 50) && x86::ifma_available(),
                    "log_n {log_n} bits {bits}"
                );
                let n = 1usize << log_n;
                let inputs: Vec<Vec<u64>> = vec![
                    (0..n).map(|_| rng.gen_range(0..q)).collect(),
                    (0..n).map(|_| rng.gen_range(0..4 * q)).collect(),
                    vec![q - 1; n],
                    vec![4 * q - 1; n],
                    vec![2 * q - 1; n],
                ];
                for a in &inputs {
                    let (mut x, mut y) = (a.clone(), a.clone());
                    t.forward(&mut x);
                    s.forward(&mut y);
                    assert_eq!(x, y, "forward log_n {log_n} bits {bits}");
                    if a.iter().all(|&v| v < 2 * q) {
                        let (mut x, mut y) = (a.clone(), a.clone());
                        t.inverse(&mut x);
                        s.inverse(&mut y);
                        assert_eq!(x, y, "inverse log_n {log_n} bits {bits}");
                    }
                }
            }
        }
    }

    #[test]
    fn forward_accepts_lazy_inputs_below_4q() {
        let log_n = 8;
        let q = generate_primes(61, 1, log_n, &[]).unwrap()[0];
        let m = Modulus::new(q).unwrap();
        let t = NttTable::new(&m, log_n).unwrap();
        let a: Vec<u64> = (0..256u64)
            .map(|i| (i * 0x9e37_79b9_7f4a_7c15) % q)
            .collect();
        let lazy: Vec<u64> = a
            .iter()
            .enumerate()
            .map(|(i, &x)| x + (i as u64 % 4) * q)
            .collect();
        let (mut x, mut y) = (a.clone(), lazy);
        t.forward(&mut x);
        t.forward(&mut y);
        assert_eq!(x, y);
    }
}
