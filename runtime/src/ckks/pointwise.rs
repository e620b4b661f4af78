//! Coefficient-wise kernels on one limb: modular add, sub, product, the sum
//! of two products, reduction of signed words (encoding), in place or into
//! uninitialised output, and the key-switching inner product.
//!
//! Contract: every input word is below the limb's prime `q` (`q < 2^61`)
//! unless a function says otherwise, and every output word is fully reduced
//! (below `q`); slices of one call have equal lengths (the shortest length
//! is used otherwise). The `*_into` variants write every word of `out`
//! (words past the shortest input are set to 0), which is what lets callers
//! allocate results without zero-filling them first. On x86-64 CPUs with AVX-512F/DQ
//! (unless `HECC_NO_SIMD=1`, the switch the NTT obeys) whole groups of 8
//! words go through vector kernels; the rest, and other CPUs, through the
//! scalar Barrett code of [`Modulus`]. Both give identical results.
//!
//! The vector product is a Barrett reduction specialised to `k`-bit primes:
//! for `x < 2^(2k+1)`, `t = x >> (k-1)` fits one word, and with
//! `mu = floor(2^(k+63) / q) < 2^64` the estimate `floor(t * mu / 2^64)`
//! is at most 2 below `floor(x / q)`, so two conditional subtractions finish.

use std::mem::MaybeUninit;

use super::zq::Modulus;

/// Whether the vector kernels run on this CPU (and are not disabled).
pub(crate) fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::ntt::x86::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the vector kernels may run for modulus `m`: the CPU has them (so a caller asking
/// for them on a CPU without AVX-512 gets the scalar code, not undefined behaviour) and `q` is
/// not a power of two (the Barrett multiplier `2^(k+63) / q` would need 65 bits).
fn vector_ok(m: &Modulus) -> bool {
    simd_available() && !m.value().is_power_of_two()
}

/// Shift and multiplier of the vector Barrett reduction for `q` (see the
/// module note): `(k - 1, floor(2^(k+63) / q))` with `k` the bit size of `q`.
fn barrett_shift(q: u64) -> (u32, u64) {
    let k = 64 - q.leading_zeros();
    let mu = ((1u128 << (k + 63)) / q as u128) as u64;
    (k - 1, mu)
}

/// The binary operations of this module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
}

#[inline(always)]
fn scalar(m: &Modulus, op: Op, a: u64, b: u64) -> u64 {
    match op {
        Op::Add => m.add(a, b),
        Op::Sub => m.sub(a, b),
        Op::Mul => m.mul(a, b),
    }
}

/// `out[k] = a[k] op b[k]`, writing every word of `out`.
pub(crate) fn binary_into(m: &Modulus, op: Op, a: &[u64], b: &[u64], out: &mut [MaybeUninit<u64>]) {
    binary_into_with(simd_available(), m, op, a, b, out)
}

/// [`binary_into`] with the vector kernels allowed or not.
pub(crate) fn binary_into_with(
    simd: bool,
    m: &Modulus,
    op: Op,
    a: &[u64],
    b: &[u64],
    out: &mut [MaybeUninit<u64>],
) {
    let simd = simd && vector_ok(m);
    let len = out.len().min(a.len()).min(b.len());
    zero_rest(out, len);
    let (a, b, out) = (&a[..len], &b[..len], &mut out[..len]);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` is only true when the CPU has AVX-512F and DQ.
        done = unsafe { x86::binary(m.value(), op, a, b, Dst::Out(out)) };
    }
    let _ = simd;
    for ((o, &x), &y) in out[done..].iter_mut().zip(&a[done..]).zip(&b[done..]) {
        o.write(scalar(m, op, x, y));
    }
}

/// Writes 0 to `out[len..]` (the words no input covers).
fn zero_rest(out: &mut [MaybeUninit<u64>], len: usize) {
    for o in out.iter_mut().skip(len) {
        o.write(0);
    }
}

/// `a[k] = a[k] op b[k]`.
pub(crate) fn binary_assign(m: &Modulus, op: Op, a: &mut [u64], b: &[u64]) {
    binary_assign_with(simd_available(), m, op, a, b)
}

/// [`binary_assign`] with the vector kernels allowed or not.
pub(crate) fn binary_assign_with(simd: bool, m: &Modulus, op: Op, a: &mut [u64], b: &[u64]) {
    let simd = simd && vector_ok(m);
    let len = a.len().min(b.len());
    let (a, b) = (&mut a[..len], &b[..len]);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` is only true when the CPU has AVX-512F and DQ.
        done = unsafe { x86::binary(m.value(), op, &[], b, Dst::InPlace(a)) };
    }
    let _ = simd;
    for (x, &y) in a[done..].iter_mut().zip(&b[done..]) {
        *x = scalar(m, op, *x, y);
    }
}

/// `out[k] = a[k] * b[k] + c[k] * d[k]`, writing every word of `out`.
pub(crate) fn mul_add_mul_into(
    m: &Modulus,
    a: &[u64],
    b: &[u64],
    c: &[u64],
    d: &[u64],
    out: &mut [MaybeUninit<u64>],
) {
    mul_add_mul_into_with(simd_available(), m, a, b, c, d, out)
}

/// [`mul_add_mul_into`] with the vector kernels allowed or not.
pub(crate) fn mul_add_mul_into_with(
    simd: bool,
    m: &Modulus,
    a: &[u64],
    b: &[u64],
    c: &[u64],
    d: &[u64],
    out: &mut [MaybeUninit<u64>],
) {
    let simd = simd && vector_ok(m);
    let len = out
        .len()
        .min(a.len())
        .min(b.len())
        .min(c.len())
        .min(d.len());
    zero_rest(out, len);
    let (a, b, c, d, out) = (&a[..len], &b[..len], &c[..len], &d[..len], &mut out[..len]);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` is only true when the CPU has AVX-512F and DQ.
        done = unsafe { x86::mul_add_mul(m.value(), a, b, c, d, out) };
    }
    let _ = simd;
    for k in done..len {
        out[k].write(m.reduce_u128(a[k] as u128 * b[k] as u128 + c[k] as u128 * d[k] as u128));
    }
}

/// `acc[k] = acc[k] + a[k] * b[k] mod q`.
pub(crate) fn add_mul_assign(m: &Modulus, acc: &mut [u64], a: &[u64], b: &[u64]) {
    add_mul_assign_with(simd_available(), m, acc, a, b)
}

/// [`add_mul_assign`] with the vector kernels allowed or not.
pub(crate) fn add_mul_assign_with(simd: bool, m: &Modulus, acc: &mut [u64], a: &[u64], b: &[u64]) {
    let simd = simd && vector_ok(m);
    let len = acc.len().min(a.len()).min(b.len());
    let (acc, a, b) = (&mut acc[..len], &a[..len], &b[..len]);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` is only true when the CPU has AVX-512F and DQ.
        done = unsafe { x86::add_mul(m.value(), acc, a, b) };
    }
    let _ = simd;
    for k in done..len {
        acc[k] = m.reduce_u128(acc[k] as u128 + a[k] as u128 * b[k] as u128);
    }
}

/// `out[k] = x[k] mod q` for the two's-complement words `x[k]` (signed
/// 64-bit integers stored as `u64`), writing every word of `out`.
pub(crate) fn reduce_signed_into(m: &Modulus, x: &[u64], out: &mut [MaybeUninit<u64>]) {
    reduce_signed_into_with(simd_available(), m, x, out)
}

/// [`reduce_signed_into`] with the vector kernels allowed or not.
pub(crate) fn reduce_signed_into_with(
    simd: bool,
    m: &Modulus,
    x: &[u64],
    out: &mut [MaybeUninit<u64>],
) {
    let simd = simd && vector_ok(m);
    let len = out.len().min(x.len());
    zero_rest(out, len);
    let (x, out) = (&x[..len], &mut out[..len]);
    // 2^64 mod q: a negative c is stored as c + 2^64.
    let wrap = m.reduce(0u64.wrapping_sub(m.value()));
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` is only true when the CPU has AVX-512F and DQ.
        done = unsafe { x86::reduce_signed(m.value(), wrap, x, out) };
    }
    let _ = simd;
    for (o, &v) in out[done..].iter_mut().zip(&x[done..]) {
        // Branch-free: random signs would mispredict.
        let neg = 0u64.wrapping_sub(v >> 63);
        o.write(m.sub(m.reduce(v), wrap & neg));
    }
}

/// `out[k] = a[k] * w mod q` for a constant `w < q` (Shoup's product; `a[k]`
/// may be any word), writing every word of `out`.
pub(crate) fn mul_const_into(m: &Modulus, w: u64, a: &[u64], out: &mut [MaybeUninit<u64>]) {
    mul_const_into_with(simd_available(), m, w, a, out)
}

/// [`mul_const_into`] with the vector kernels allowed or not.
pub(crate) fn mul_const_into_with(
    simd: bool,
    m: &Modulus,
    w: u64,
    a: &[u64],
    out: &mut [MaybeUninit<u64>],
) {
    let simd = simd && vector_ok(m);
    let len = out.len().min(a.len());
    zero_rest(out, len);
    let (a, out) = (&a[..len], &mut out[..len]);
    let ws = m.shoup(w);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` is only true when the CPU has AVX-512F and DQ.
        done = unsafe { x86::mul_const(m.value(), w, ws, a, Dst::Out(out)) };
    }
    let _ = simd;
    for (o, &x) in out[done..].iter_mut().zip(&a[done..]) {
        o.write(m.mul_shoup(x, w, ws));
    }
}

/// `a[k] = a[k] * w mod q` for a constant `w < q`.
pub(crate) fn mul_const_assign(m: &Modulus, w: u64, a: &mut [u64]) {
    mul_const_assign_with(simd_available(), m, w, a)
}

/// [`mul_const_assign`] with the vector kernels allowed or not.
pub(crate) fn mul_const_assign_with(simd: bool, m: &Modulus, w: u64, a: &mut [u64]) {
    let simd = simd && vector_ok(m);
    let ws = m.shoup(w);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` is only true when the CPU has AVX-512F and DQ.
        done = unsafe { x86::mul_const(m.value(), w, ws, &[], Dst::InPlace(a)) };
    }
    let _ = simd;
    for x in a[done..].iter_mut() {
        *x = m.mul_shoup(*x, w, ws);
    }
}

/// Vector part of the balanced-digit Garner reconstruction of
/// `encoding::crt_reconstruct_f64`: for coefficients `k0 .. k0 + out.len()`
/// of `data` (`q.len()` limbs of `n` words, coefficient form), writes the
/// centred value as `f64` (Horner over the balanced digits, the same `f64`
/// operations in the same order as the scalar code, so bit-identical) for
/// whole groups of 8 and returns how many it did (0 when the vector kernels
/// are off or the shapes do not fit; at most 64 limbs).
/// `inv[i][j] = (q_j^-1 mod q_i, Shoup quotient)` for `j < i`.
pub(crate) fn crt_f64_prefix(
    q: &[u64],
    inv: &[Vec<(u64, u64)>],
    data: &[u64],
    n: usize,
    k0: usize,
    out: &mut [f64],
) -> usize {
    crt_f64_prefix_with(simd_available(), q, inv, data, n, k0, out)
}

/// [`crt_f64_prefix`] with the vector kernels allowed or not.
pub(crate) fn crt_f64_prefix_with(
    simd: bool,
    q: &[u64],
    inv: &[Vec<(u64, u64)>],
    data: &[u64],
    n: usize,
    k0: usize,
    out: &mut [f64],
) -> usize {
    let simd = simd && simd_available();
    let l1 = q.len();
    let ok = (1..=64).contains(&l1)
        && inv.len() >= l1
        && (0..l1).all(|i| inv[i].len() >= i)
        && data.len() >= l1 * n
        && k0 + out.len() <= n;
    if !simd || !ok {
        return 0;
    }
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `simd` is only true when the CPU has AVX-512F and DQ; the
        // shapes were checked above.
        unsafe { x86::crt_f64(q, inv, data, n, k0, out) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

/// Key-switching inner product on one limb: `o0 = sum_j x_j * kb_j` and
/// `o1 = sum_j x_j * ka_j` modulo `q`, where `x_j[k] = srcs_j[perm[k]]`
/// when a permutation is given (else `srcs_j[k]`). Runs the vector kernel
/// (128-bit lane accumulators, one reduction per output word) on whole
/// groups of 8 words and returns how many words it did: 0 when the vector
/// kernels are off, with more than 63 terms, or on mismatched lengths; the
/// caller finishes the rest.
pub(crate) fn key_mac_prefix(
    m: &Modulus,
    srcs: &[&[u64]],
    kb: &[&[u64]],
    ka: &[&[u64]],
    perm: Option<&[u32]>,
    o0: &mut [u64],
    o1: &mut [u64],
) -> usize {
    key_mac_prefix_with(simd_available(), m, srcs, kb, ka, perm, o0, o1)
}

/// [`key_mac_prefix`] with the vector kernels allowed or not.
#[allow(clippy::too_many_arguments)]
pub(crate) fn key_mac_prefix_with(
    simd: bool,
    m: &Modulus,
    srcs: &[&[u64]],
    kb: &[&[u64]],
    ka: &[&[u64]],
    perm: Option<&[u32]>,
    o0: &mut [u64],
    o1: &mut [u64],
) -> usize {
    let simd = simd && vector_ok(m);
    let len = o0.len();
    let terms = srcs.len();
    let shapes_ok = o1.len() == len
        && (1..=63).contains(&terms)
        && kb.len() == terms
        && ka.len() == terms
        && kb.iter().chain(ka.iter()).all(|s| s.len() >= len)
        && match perm {
            // Permuted sources are read anywhere in them (indices are clamped).
            Some(p) => p.len() >= len && srcs.iter().all(|s| !s.is_empty()),
            None => srcs.iter().all(|s| s.len() >= len),
        };
    if !simd || !shapes_ok {
        return 0;
    }
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `simd` is only true when the CPU has AVX-512F and DQ, and
        // the lengths were checked above.
        unsafe { x86::key_mac(m, srcs, kb, ka, perm, o0, o1) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (m, perm);
        0
    }
}

/// Where a vector kernel writes.
#[allow(dead_code)] // not constructed on other architectures
enum Dst<'a> {
    /// Into uninitialised output.
    Out(&'a mut [MaybeUninit<u64>]),
    /// Over the first operand.
    InPlace(&'a mut [u64]),
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{barrett_shift, Dst, Op};
    use crate::ckks::ntt::x86::{csub, mul_shoup_lazy, mulhi};
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// Constants of the vector Barrett reduction.
    #[derive(Clone, Copy)]
    struct Barrett {
        q: __m512i,
        mu: __m512i,
        /// `k - 1`.
        sr: __m128i,
        /// `65 - k`.
        sl: __m128i,
    }

    impl Barrett {
        #[inline]
        #[target_feature(enable = "avx512f,avx512dq")]
        fn new(q: u64) -> Self {
            let (s, mu) = barrett_shift(q);
            Self {
                q: _mm512_set1_epi64(q as i64),
                mu: _mm512_set1_epi64(mu as i64),
                sr: _mm_cvtsi64_si128(s as i64),
                sl: _mm_cvtsi64_si128(64 - s as i64),
            }
        }

        /// `(hi * 2^64 + lo) mod q` for a value below `2^(2k+1)`.
        #[inline]
        #[target_feature(enable = "avx512f,avx512dq")]
        fn reduce(&self, lo: __m512i, hi: __m512i) -> __m512i {
            let t = _mm512_or_si512(_mm512_sll_epi64(hi, self.sl), _mm512_srl_epi64(lo, self.sr));
            let qhat = mulhi(t, self.mu);
            let r = _mm512_sub_epi64(lo, _mm512_mullo_epi64(qhat, self.q));
            csub(csub(r, self.q), self.q)
        }

        /// `a * b mod q` for `a, b < q`.
        #[inline]
        #[target_feature(enable = "avx512f,avx512dq")]
        fn mul(&self, a: __m512i, b: __m512i) -> __m512i {
            self.reduce(_mm512_mullo_epi64(a, b), mulhi(a, b))
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn op8(op: Op, br: &Barrett, a: __m512i, b: __m512i) -> __m512i {
        match op {
            Op::Add => csub(_mm512_add_epi64(a, b), br.q),
            Op::Sub => {
                let d = _mm512_sub_epi64(a, b);
                _mm512_min_epu64(d, _mm512_add_epi64(d, br.q))
            }
            Op::Mul => br.mul(a, b),
        }
    }

    /// Loads 8 words from `s[k..k+8]` (the caller checks the bound).
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn ld(s: &[u64], k: usize) -> __m512i {
        debug_assert!(k + 8 <= s.len());
        // SAFETY (caller): `k + 8 <= s.len()`.
        unsafe { _mm512_loadu_si512(s.as_ptr().add(k) as *const __m512i) }
    }

    /// Stores 8 words to `s[k..k+8]` (the caller checks the bound).
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn st<T>(s: &mut [T], k: usize, v: __m512i) {
        debug_assert!(k + 8 <= s.len() && std::mem::size_of::<T>() == 8);
        // SAFETY (caller): `k + 8 <= s.len()` and `T` is a word type.
        unsafe { _mm512_storeu_si512(s.as_mut_ptr().add(k) as *mut __m512i, v) }
    }

    /// `dst op= b` (in place) or `out = a op b`, whole groups of 8 words;
    /// returns how many words were done. Slices have equal lengths (`a` is
    /// not read in place).
    #[target_feature(enable = "avx512f,avx512dq")]
    pub(super) unsafe fn binary(q: u64, op: Op, a: &[u64], b: &[u64], dst: Dst) -> usize {
        let br = Barrett::new(q);
        let n8 = b.len() / 8 * 8;
        match dst {
            Dst::Out(out) => {
                if a.len() < n8 || out.len() < n8 {
                    return 0;
                }
                let mut k = 0;
                while k < n8 {
                    // SAFETY: k + 8 <= n8 <= every length.
                    unsafe { st(out, k, op8(op, &br, ld(a, k), ld(b, k))) };
                    k += 8;
                }
            }
            Dst::InPlace(x) => {
                if x.len() < n8 {
                    return 0;
                }
                let mut k = 0;
                while k < n8 {
                    // SAFETY: k + 8 <= n8 <= every length.
                    unsafe { st(x, k, op8(op, &br, ld(x, k), ld(b, k))) };
                    k += 8;
                }
            }
        }
        n8
    }

    /// `out = x mod q` for two's-complement words `x` (`wrap = 2^64 mod q`),
    /// whole groups of 8 words; returns how many words were done.
    #[target_feature(enable = "avx512f,avx512dq")]
    pub(super) unsafe fn reduce_signed(
        q: u64,
        wrap: u64,
        x: &[u64],
        out: &mut [MaybeUninit<u64>],
    ) -> usize {
        let n8 = out.len().min(x.len()) / 8 * 8;
        let qv = _mm512_set1_epi64(q as i64);
        // floor(2^64 / q), rounded down further by the ratio's construction:
        // the quotient estimate is at most 2 short, so r < 3q.
        let ratio = _mm512_set1_epi64((u64::MAX / q) as i64);
        let wv = _mm512_set1_epi64(wrap as i64);
        let mut k = 0;
        while k < n8 {
            // SAFETY: k + 8 <= n8 <= both lengths.
            let v = unsafe { ld(x, k) };
            let qhat = mulhi(v, ratio);
            let r = _mm512_sub_epi64(v, _mm512_mullo_epi64(qhat, qv));
            let r = csub(csub(r, qv), qv);
            let neg = _mm512_movepi64_mask(v);
            // r - wrap mod q where negative
            let d = _mm512_sub_epi64(r, wv);
            let d = _mm512_min_epu64(d, _mm512_add_epi64(d, qv));
            // SAFETY: as above.
            unsafe { st(out, k, _mm512_mask_mov_epi64(r, neg, d)) };
            k += 8;
        }
        n8
    }

    /// `dst = src * w mod q` (or `dst *= w` in place), Shoup's product with
    /// `ws = floor(w * 2^64 / q)`, whole groups of 8 words; returns how many
    /// words were done.
    #[target_feature(enable = "avx512f,avx512dq")]
    pub(super) unsafe fn mul_const(q: u64, w: u64, ws: u64, src: &[u64], dst: Dst) -> usize {
        let qv = _mm512_set1_epi64(q as i64);
        let wv = _mm512_set1_epi64(w as i64);
        let wsv = _mm512_set1_epi64(ws as i64);
        let f = |x: __m512i| {
            // SAFETY: the CPU has AVX-512F and DQ (this function's contract).
            csub(unsafe { mul_shoup_lazy(x, wv, wsv, qv) }, qv)
        };
        match dst {
            Dst::Out(out) => {
                let n8 = out.len().min(src.len()) / 8 * 8;
                let mut k = 0;
                while k < n8 {
                    // SAFETY: k + 8 <= n8 <= both lengths.
                    unsafe { st(out, k, f(ld(src, k))) };
                    k += 8;
                }
                n8
            }
            Dst::InPlace(x) => {
                let n8 = x.len() / 8 * 8;
                let mut k = 0;
                while k < n8 {
                    // SAFETY: k + 8 <= n8 <= x.len().
                    unsafe { st(x, k, f(ld(x, k))) };
                    k += 8;
                }
                n8
            }
        }
    }

    /// `acc += a * b mod q`, whole groups of 8 words; returns how many words
    /// were done. Slices have equal lengths.
    #[target_feature(enable = "avx512f,avx512dq")]
    pub(super) unsafe fn add_mul(q: u64, acc: &mut [u64], a: &[u64], b: &[u64]) -> usize {
        let br = Barrett::new(q);
        let n8 = acc.len().min(a.len()).min(b.len()) / 8 * 8;
        let one = _mm512_set1_epi64(1);
        let mut k = 0;
        while k < n8 {
            // SAFETY: k + 8 <= n8 <= every length.
            let (x, y, c) = unsafe { (ld(a, k), ld(b, k), ld(acc, k)) };
            let lo1 = _mm512_mullo_epi64(x, y);
            let lo = _mm512_add_epi64(lo1, c);
            let carry = _mm512_cmplt_epu64_mask(lo, lo1);
            let hi = mulhi(x, y);
            let hi = _mm512_mask_add_epi64(hi, carry, hi, one);
            // q^2 + q < 2^(2k+1): within the reduction's range.
            // SAFETY: as above.
            unsafe { st(acc, k, br.reduce(lo, hi)) };
            k += 8;
        }
        n8
    }

    /// See [`super::crt_f64_prefix`] (the caller checked the shapes).
    #[target_feature(enable = "avx512f,avx512dq")]
    pub(super) unsafe fn crt_f64(
        q: &[u64],
        inv: &[Vec<(u64, u64)>],
        data: &[u64],
        n: usize,
        k0: usize,
        out: &mut [f64],
    ) -> usize {
        let l1 = q.len();
        let l = l1 - 1;
        let len8 = out.len() / 8 * 8;
        let mut digits = [_mm512_setzero_si512(); 64];
        let mut g = 0;
        while g < len8 {
            let k = k0 + g;
            for i in 0..l1 {
                let qi = _mm512_set1_epi64(q[i] as i64);
                let ratio = _mm512_set1_epi64((u64::MAX / q[i]) as i64);
                // SAFETY: i * n + k + 8 <= (i + 1) * n <= data.len().
                let mut t = unsafe { ld(data, i * n + k) };
                for (j, &(w, ws)) in inv[i][..i].iter().enumerate() {
                    let d = digits[j];
                    // d mod q_i for the signed digit d (|d| < 2^63)
                    let r = reduce64(_mm512_abs_epi64(d), ratio, qi);
                    let nr = csub(_mm512_sub_epi64(qi, r), qi);
                    let dm = _mm512_mask_mov_epi64(r, _mm512_movepi64_mask(d), nr);
                    let s = _mm512_sub_epi64(t, dm);
                    let s = _mm512_min_epu64(s, _mm512_add_epi64(s, qi));
                    let (wv, wsv) = (_mm512_set1_epi64(w as i64), _mm512_set1_epi64(ws as i64));
                    // SAFETY: the CPU has AVX-512F and DQ (this function's contract).
                    t = csub(unsafe { mul_shoup_lazy(s, wv, wsv, qi) }, qi);
                }
                // centred: t - q_i where t > q_i / 2
                let gt = _mm512_cmpgt_epu64_mask(t, _mm512_set1_epi64((q[i] / 2) as i64));
                digits[i] = _mm512_mask_sub_epi64(t, gt, t, qi);
            }
            let mut acc = _mm512_cvtepi64_pd(digits[l]);
            for i in (0..l).rev() {
                acc = _mm512_add_pd(
                    _mm512_cvtepi64_pd(digits[i]),
                    _mm512_mul_pd(_mm512_set1_pd(q[i] as f64), acc),
                );
            }
            // SAFETY: g + 8 <= len8 <= out.len().
            unsafe { _mm512_storeu_pd(out.as_mut_ptr().add(g), acc) };
            g += 8;
        }
        len8
    }

    /// Lane-wise `x mod q` for any 64-bit `x` (`ratio = floor((2^64-1)/q)`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn reduce64(x: __m512i, ratio: __m512i, q: __m512i) -> __m512i {
        let qhat = mulhi(x, ratio);
        let r = _mm512_sub_epi64(x, _mm512_mullo_epi64(qhat, q));
        csub(csub(r, q), q)
    }

    /// 128-bit lane accumulator `hi * 2^64 + lo`.
    #[derive(Clone, Copy)]
    struct Acc {
        lo: __m512i,
        hi: __m512i,
    }

    impl Acc {
        /// `acc += x * y` (64x64 -> 128-bit products; `xh = x >> 32`).
        #[inline]
        #[target_feature(enable = "avx512f,avx512dq")]
        fn add_product(&mut self, x: __m512i, y: __m512i) {
            let lo = _mm512_mullo_epi64(x, y);
            let hi = mulhi(x, y);
            let s = _mm512_add_epi64(self.lo, lo);
            let carry = _mm512_cmplt_epu64_mask(s, lo);
            self.lo = s;
            self.hi = _mm512_mask_add_epi64(
                _mm512_add_epi64(self.hi, hi),
                carry,
                _mm512_add_epi64(self.hi, hi),
                _mm512_set1_epi64(1),
            );
        }

        /// The accumulated value mod `q`: `(hi mod q) * (2^64 mod q) + (lo mod q)`.
        #[inline]
        #[target_feature(enable = "avx512f,avx512dq")]
        fn reduce(&self, k: &KeyMacConsts) -> __m512i {
            let h = reduce64(self.hi, k.ratio, k.q);
            let l = reduce64(self.lo, k.ratio, k.q);
            let qhat = mulhi(h, k.c64s);
            let t = _mm512_sub_epi64(_mm512_mullo_epi64(h, k.c64), _mm512_mullo_epi64(qhat, k.q)); // below 2q, so t + l is below 3q
            csub(csub(_mm512_add_epi64(t, l), k.two_q), k.q)
        }
    }

    /// Constants of [`Acc::reduce`].
    struct KeyMacConsts {
        q: __m512i,
        two_q: __m512i,
        ratio: __m512i,
        /// `2^64 mod q` and its Shoup quotient.
        c64: __m512i,
        c64s: __m512i,
    }

    /// See [`super::key_mac_prefix`]; the caller checked the shapes (every
    /// term, key and output slice long enough; 1 to 63 terms).
    #[target_feature(enable = "avx512f,avx512dq")]
    pub(super) unsafe fn key_mac(
        m: &crate::ckks::zq::Modulus,
        srcs: &[&[u64]],
        kb: &[&[u64]],
        ka: &[&[u64]],
        perm: Option<&[u32]>,
        o0: &mut [u64],
        o1: &mut [u64],
    ) -> usize {
        let qs = m.value();
        let c64 = m.reduce(0u64.wrapping_sub(qs));
        let kc = KeyMacConsts {
            q: _mm512_set1_epi64(qs as i64),
            two_q: _mm512_set1_epi64((2 * qs) as i64),
            ratio: _mm512_set1_epi64((u64::MAX / qs) as i64),
            c64: _mm512_set1_epi64(c64 as i64),
            c64s: _mm512_set1_epi64(m.shoup(c64) as i64),
        };
        let n8 = o0.len() / 8 * 8;
        let zero = _mm512_setzero_si512();
        let mut k = 0;
        while k < n8 {
            let mut a0 = Acc { lo: zero, hi: zero };
            let mut a1 = Acc { lo: zero, hi: zero };
            for ((src, b), a) in srcs.iter().zip(kb).zip(ka) {
                let x = match perm {
                    // SAFETY: k + 8 <= n8 <= src.len() (checked by the caller).
                    None => unsafe { ld(src, k) },
                    Some(p) => {
                        // SAFETY: k + 8 <= n8 <= p.len(); the indices are
                        // clamped below src.len(), so every gathered word is in bounds.
                        unsafe {
                            let idx = _mm256_loadu_si256(p.as_ptr().add(k) as *const __m256i);
                            let idx =
                                _mm256_min_epu32(idx, _mm256_set1_epi32((src.len() - 1) as i32));
                            _mm512_i32gather_epi64::<8>(idx, src.as_ptr() as *const i64)
                        }
                    }
                };
                // SAFETY: k + 8 <= n8 <= key lengths (checked by the caller).
                let (yb, ya) = unsafe { (ld(b, k), ld(a, k)) };
                a0.add_product(x, yb);
                a1.add_product(x, ya);
            }
            // SAFETY: k + 8 <= n8 <= output lengths.
            unsafe {
                st(o0, k, a0.reduce(&kc));
                st(o1, k, a1.reduce(&kc));
            }
            k += 8;
        }
        n8
    }

    /// `out = a*b + c*d mod q`, whole groups of 8 words; returns how many
    /// words were done. Slices have equal lengths.
    #[target_feature(enable = "avx512f,avx512dq")]
    pub(super) unsafe fn mul_add_mul(
        q: u64,
        a: &[u64],
        b: &[u64],
        c: &[u64],
        d: &[u64],
        out: &mut [MaybeUninit<u64>],
    ) -> usize {
        let br = Barrett::new(q);
        let n8 = out.len() / 8 * 8;
        if a.len() < n8 || b.len() < n8 || c.len() < n8 || d.len() < n8 {
            return 0;
        }
        let one = _mm512_set1_epi64(1);
        let mut k = 0;
        while k < n8 {
            // SAFETY: k + 8 <= n8 <= every length.
            let (x, y, u, v) = unsafe { (ld(a, k), ld(b, k), ld(c, k), ld(d, k)) };
            let lo1 = _mm512_mullo_epi64(x, y);
            let lo2 = _mm512_mullo_epi64(u, v);
            let lo = _mm512_add_epi64(lo1, lo2);
            let carry = _mm512_cmplt_epu64_mask(lo, lo1);
            let hi = _mm512_add_epi64(mulhi(x, y), mulhi(u, v));
            let hi = _mm512_mask_add_epi64(hi, carry, hi, one);
            // SAFETY: as above.
            unsafe { st(out, k, br.reduce(lo, hi)) };
            k += 8;
        }
        n8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ckks::zq::generate_primes;
    use rand::{Rng, SeedableRng};

    fn moduli() -> Vec<Modulus> {
        let mut v = Vec::new();
        for bits in [17u32, 30, 40, 50, 60, 61] {
            for q in generate_primes(bits, 2, 10, &[]).expect("primes") {
                v.push(Modulus::new(q).expect("modulus"));
            }
        }
        v
    }

    fn inputs(q: u64, len: usize, rng: &mut impl Rng) -> Vec<u64> {
        // Random values plus the extremes.
        (0..len)
            .map(|i| match i % 7 {
                0 => q - 1,
                1 => 0,
                2 => q - 2,
                _ => rng.gen_range(0..q),
            })
            .collect()
    }

    fn init(v: Vec<MaybeUninit<u64>>) -> Vec<u64> {
        // SAFETY: the kernels under test wrote every word (checked by the
        // callers through the length of the reference).
        v.into_iter().map(|x| unsafe { x.assume_init() }).collect()
    }

    #[test]
    fn binary_kernels_match_u128_reference() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for m in moduli() {
            let q = m.value();
            for len in [0usize, 5, 8, 61, 256] {
                let a = inputs(q, len, &mut rng);
                let b = inputs(q, len, &mut rng);
                for op in [Op::Add, Op::Sub, Op::Mul] {
                    let reference: Vec<u64> = a
                        .iter()
                        .zip(&b)
                        .map(|(&x, &y)| {
                            let (x, y, q) = (x as u128, y as u128, q as u128);
                            (match op {
                                Op::Add => (x + y) % q,
                                Op::Sub => (x + q - y) % q,
                                Op::Mul => x * y % q,
                            }) as u64
                        })
                        .collect();
                    for simd in [false, simd_available()] {
                        let mut out = vec![MaybeUninit::uninit(); len];
                        binary_into_with(simd, &m, op, &a, &b, &mut out);
                        assert_eq!(init(out), reference, "into {op:?} q={q} simd={simd}");
                        let mut x = a.clone();
                        binary_assign_with(simd, &m, op, &mut x, &b);
                        assert_eq!(x, reference, "assign {op:?} q={q} simd={simd}");
                    }
                }
            }
        }
    }

    #[test]
    fn constant_products_match_u128_reference() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for m in moduli() {
            let q = m.value();
            for w in [0, 1, q - 1, rng.gen_range(0..q)] {
                // Any 64-bit input is allowed.
                let mut a = inputs(q, 45, &mut rng);
                a.extend([u64::MAX, u64::MAX - 1, 1u64 << 63]);
                let reference: Vec<u64> = a
                    .iter()
                    .map(|&x| (x as u128 * w as u128 % q as u128) as u64)
                    .collect();
                for simd in [false, simd_available()] {
                    let mut out = vec![MaybeUninit::uninit(); a.len()];
                    mul_const_into_with(simd, &m, w, &a, &mut out);
                    assert_eq!(init(out), reference, "into q={q} w={w} simd={simd}");
                    let mut x = a.clone();
                    mul_const_assign_with(simd, &m, w, &mut x);
                    assert_eq!(x, reference, "assign q={q} w={w} simd={simd}");
                }
            }
        }
    }

    #[test]
    fn crt_vector_kernel_matches_scalar_garner() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
        let mut q = generate_primes(60, 1, 10, &[]).expect("primes");
        let more = generate_primes(40, 6, 10, &q).expect("primes");
        q.extend(more);
        let ms: Vec<Modulus> = q
            .iter()
            .map(|&v| Modulus::new(v).expect("modulus"))
            .collect();
        let inv: Vec<Vec<(u64, u64)>> = (0..q.len())
            .map(|i| {
                (0..i)
                    .map(|j| {
                        let w = ms[i].inv(q[j]).expect("coprime");
                        (w, ms[i].shoup(w))
                    })
                    .collect()
            })
            .collect();
        let n = 64;
        for l1 in 1..=q.len() {
            let mut data: Vec<u64> = (0..l1 * n).map(|x| rng.gen_range(0..q[x / n])).collect();
            // small centred values in the first coefficients
            for k in 0..8 {
                for i in 0..l1 {
                    data[i * n + k] = ms[i].reduce_i64(k as i64 - 4);
                }
            }
            // the scalar balanced-digit Garner that decoding uses
            let scalar: Vec<f64> = (0..n)
                .map(|k| {
                    let mut d = vec![0i64; l1];
                    crate::ckks::encoding::garner_coefficient(&ms[..l1], &inv, &data, n, k, &mut d)
                })
                .collect();
            assert_eq!(&scalar[..8], &[-4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]);
            for k0 in [0usize, 8, 24] {
                let mut out = vec![f64::NAN; n - k0];
                let done =
                    crt_f64_prefix_with(simd_available(), &q[..l1], &inv, &data, n, k0, &mut out);
                assert_eq!(
                    done,
                    if simd_available() {
                        (n - k0) / 8 * 8
                    } else {
                        0
                    }
                );
                for (g, &v) in out[..done].iter().enumerate() {
                    assert_eq!(
                        v.to_bits(),
                        scalar[k0 + g].to_bits(),
                        "l1 {l1} k {}",
                        k0 + g
                    );
                }
            }
        }
    }

    #[test]
    fn add_mul_matches_u128_reference() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(13);
        for m in moduli() {
            let q = m.value();
            let v: Vec<Vec<u64>> = (0..3).map(|_| inputs(q, 77, &mut rng)).collect();
            let reference: Vec<u64> = (0..77)
                .map(|k| ((v[0][k] as u128 + v[1][k] as u128 * v[2][k] as u128) % q as u128) as u64)
                .collect();
            for simd in [false, simd_available()] {
                let mut acc = v[0].clone();
                add_mul_assign_with(simd, &m, &mut acc, &v[1], &v[2]);
                assert_eq!(acc, reference, "q={q} simd={simd}");
            }
        }
    }

    #[test]
    fn mul_add_mul_matches_u128_reference() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
        for m in moduli() {
            let q = m.value();
            for len in [3usize, 16, 99] {
                let v: Vec<Vec<u64>> = (0..4).map(|_| inputs(q, len, &mut rng)).collect();
                let reference: Vec<u64> = (0..len)
                    .map(|k| {
                        let p = |i: usize| v[i][k] as u128;
                        ((p(0) * p(1) + p(2) * p(3)) % q as u128) as u64
                    })
                    .collect();
                for simd in [false, simd_available()] {
                    let mut out = vec![MaybeUninit::uninit(); len];
                    mul_add_mul_into_with(simd, &m, &v[0], &v[1], &v[2], &v[3], &mut out);
                    assert_eq!(init(out), reference, "q={q} simd={simd}");
                }
            }
        }
    }

    #[test]
    fn signed_reduction_matches_i128_reference() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for m in moduli() {
            let q = m.value() as i128;
            let x: Vec<u64> = (0..203)
                .map(|i| match i % 9 {
                    0 => 0,
                    1 => u64::MAX,        // -1
                    2 => i64::MIN as u64, // -2^63
                    3 => i64::MAX as u64,
                    4 => (-(q as i64)) as u64,
                    _ => rng.gen::<u64>() >> rng.gen_range(0..64),
                })
                .collect();
            let reference: Vec<u64> = x
                .iter()
                .map(|&v| (v as i64 as i128).rem_euclid(q) as u64)
                .collect();
            for simd in [false, simd_available()] {
                let mut out = vec![MaybeUninit::uninit(); x.len()];
                reduce_signed_into_with(simd, &m, &x, &mut out);
                assert_eq!(init(out), reference, "q={q} simd={simd}");
            }
        }
    }

    #[test]
    fn key_mac_matches_u128_reference() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(10);
        for m in moduli() {
            let q = m.value();
            for terms in [1usize, 3, 8, 63] {
                let len = 40;
                let srcs: Vec<Vec<u64>> = (0..terms).map(|_| inputs(q, len, &mut rng)).collect();
                let kb: Vec<Vec<u64>> = (0..terms).map(|_| inputs(q, len, &mut rng)).collect();
                let ka: Vec<Vec<u64>> = (0..terms).map(|_| vec![q - 1; len]).collect();
                let perm: Vec<u32> = (0..len as u32).map(|i| (i * 7 + 3) % len as u32).collect();
                let sr: Vec<&[u64]> = srcs.iter().map(|v| v.as_slice()).collect();
                let br: Vec<&[u64]> = kb.iter().map(|v| v.as_slice()).collect();
                let ar: Vec<&[u64]> = ka.iter().map(|v| v.as_slice()).collect();
                for p in [None, Some(perm.as_slice())] {
                    let dot = |keys: &[Vec<u64>], k: usize| -> u64 {
                        let mut acc = 0u128;
                        for (s, key) in srcs.iter().zip(keys) {
                            let x = s[p.map_or(k, |p| p[k] as usize)];
                            acc = (acc + x as u128 * key[k] as u128) % q as u128;
                        }
                        acc as u64
                    };
                    let (mut o0, mut o1) = (vec![0u64; len], vec![0u64; len]);
                    let done = key_mac_prefix_with(
                        simd_available(),
                        &m,
                        &sr,
                        &br,
                        &ar,
                        p,
                        &mut o0,
                        &mut o1,
                    );
                    assert_eq!(done, if simd_available() { len / 8 * 8 } else { 0 });
                    for k in 0..done {
                        assert_eq!(o0[k], dot(&kb, k), "q={q} terms={terms} k={k}");
                        assert_eq!(o1[k], dot(&ka, k), "q={q} terms={terms} k={k}");
                    }
                    let too_many: Vec<&[u64]> = vec![sr[0]; 64];
                    assert_eq!(
                        key_mac_prefix_with(
                            true, &m, &too_many, &too_many, &too_many, p, &mut o0, &mut o1
                        ),
                        0
                    );
                }
            }
        }
    }

    #[test]
    fn worst_case_products_reduce_fully() {
        // (q-1)^2 and 2 (q-1)^2 are the largest inputs of the reductions.
        for m in moduli() {
            let q = m.value();
            let simd = simd_available();
            let a = vec![q - 1; 16];
            let mut out = vec![MaybeUninit::uninit(); 16];
            mul_add_mul_into_with(simd, &m, &a, &a, &a, &a, &mut out);
            let expect = ((2 * (q as u128 - 1) * (q as u128 - 1)) % q as u128) as u64;
            assert!(init(out).iter().all(|&x| x == expect));
            let mut out = vec![MaybeUninit::uninit(); 16];
            binary_into_with(simd, &m, Op::Mul, &a, &a, &mut out);
            assert!(init(out).iter().all(|&x| x == 1));
        }
    }
}
