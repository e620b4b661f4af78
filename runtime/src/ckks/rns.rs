//! RNS algorithms: fast base conversion, hybrid key switching (ModUp, the
//! key inner product and ModDown, fused limb by limb), and exact rounding
//! rescale.
//!
//! Contract: inputs are polynomials in NTT form with no special limbs unless
//! stated; outputs are in NTT form. Base conversion is the standard fast
//! (approximate) conversion whose error is a small multiple of the source
//! modulus, which hybrid key switching tolerates by design; from a single
//! source prime it is the exact centred lift.
//!
//! Key switching never materialises the ModUp decomposition: for each output
//! limb it extends every digit to that limb (a copy, or a base conversion and
//! one NTT), multiply-accumulates with the key limbs in 128 bits (the AVX-512
//! kernel [`super::pointwise::key_mac_prefix`] when available, else u128
//! scalars), reduces once per coefficient, and applies
//! ModDown to the finished limb in the same pass. Temporaries come from a
//! per-thread [`Scratch`] pool, so a key switch allocates nothing once warm.
//! [`decompose`] + [`key_switch_hoisted_add`] (hoisted rotations; the
//! decomposition is one pooled buffer) produce bit-identical results to
//! [`key_switch_add`] with the same permutation.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

use rayon::prelude::*;

use super::context::{BaseConv, Context, DigitTable, LevelTables};
use super::poly::RnsPoly;
use super::zq::Modulus;

/// Products of two values below 2^61 are below 2^122, so 63 of them fit in a u128.
const LAZY_TERMS: usize = 63;
/// Coefficients processed per block of stack accumulators.
const BLOCK: usize = 64;
/// Buffers kept per thread by [`Scratch`].
const POOL_MAX: usize = 4;
/// Largest buffer (in words, 64 MiB) that [`Scratch`] returns to the pool.
const POOL_MAX_WORDS: usize = 1 << 23;

thread_local! {
    static POOL: RefCell<Vec<Vec<u64>>> = const { RefCell::new(Vec::new()) };
}

/// A temporary buffer of `u64` borrowed from a per-thread pool and returned
/// to it on drop, so repeated operations reuse memory that is already mapped
/// instead of zero-filling fresh pages.
///
/// Contract: the contents on [`Scratch::take`] are arbitrary (left over from
/// an earlier use); callers overwrite every word they read. A thread keeps at
/// most [`POOL_MAX`] buffers of up to 64 MiB each.
pub(crate) struct Scratch {
    buf: Vec<u64>,
    len: usize,
}

impl Scratch {
    /// A buffer of `len` words (contents unspecified).
    pub(crate) fn take(len: usize) -> Self {
        let reused = POOL
            .try_with(|p| {
                let mut p = p.try_borrow_mut().ok()?;
                // Best fit: the smallest buffer that is large enough, else the largest.
                let fit = (0..p.len())
                    .filter(|&i| p[i].len() >= len)
                    .min_by_key(|&i| p[i].len())
                    .or_else(|| (0..p.len()).max_by_key(|&i| p[i].len()))?;
                Some(p.swap_remove(fit))
            })
            .ok()
            .flatten();
        // A pooled buffer that is too small is dropped rather than grown: growing would copy
        // its stale contents and could double its capacity past the pool's bound.
        let buf = match reused {
            Some(b) if b.len() >= len => b,
            _ => vec![0; len],
        };
        Self { buf, len }
    }
}

impl Deref for Scratch {
    type Target = [u64];
    fn deref(&self) -> &[u64] {
        &self.buf[..self.len]
    }
}

impl DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [u64] {
        &mut self.buf[..self.len]
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        let _ = POOL.try_with(|p| {
            if let Ok(mut p) = p.try_borrow_mut() {
                if p.len() < POOL_MAX && buf.capacity() <= POOL_MAX_WORDS {
                    p.push(buf);
                }
            }
        });
    }
}

/// In place, `y_b = x_b * (B/b)^-1 mod b` for the source limbs of `conv`
/// (coefficient form, limb-major). With one source prime the factor is 1 and
/// nothing is done.
fn conv_prepare(ctx: &Context, conv: &BaseConv, limbs: &mut [u64]) {
    if conv.src.len() == 1 {
        return;
    }
    let n = ctx.n();
    limbs.par_chunks_mut(n).enumerate().for_each(|(b, yb)| {
        let m = &ctx.moduli()[conv.src[b]];
        let (w, ws) = conv.hat_inv[b];
        for x in yb.iter_mut() {
            *x = m.mul_shoup(*x, w, ws);
        }
    });
}

/// `v = round(sum_b y_b / b)` per coefficient, written into `v`: the multiple
/// of `B` to subtract so that the conversion yields the centred
/// representative of `x mod B` in `(-B/2, B/2]` (up to ties), instead of a
/// biased value in `[0, |src| * B)`. Unbiased conversions matter: a constant
/// offset in every coefficient concentrates error in a few slots. Only used
/// with several source primes ([`conv_limb`] lifts one prime exactly).
fn conv_round(ctx: &Context, conv: &BaseConv, y: &[u64], v: &mut [u64]) {
    if conv.src.len() == 1 {
        return;
    }
    let n = ctx.n();
    let inv: Vec<f64> = conv
        .src
        .iter()
        .map(|&s| 1.0 / ctx.moduli()[s].value() as f64)
        .collect();
    for (k0, vb) in (0..n).step_by(BLOCK).zip(v.chunks_exact_mut(BLOCK)) {
        let mut acc = [0.5f64; BLOCK];
        for (b, &ib) in inv.iter().enumerate() {
            let yb = &y[b * n + k0..b * n + k0 + BLOCK];
            for (a, &x) in acc.iter_mut().zip(yb) {
                *a += x as f64 * ib;
            }
        }
        for (o, a) in vb.iter_mut().zip(acc) {
            *o = a as u64;
        }
    }
}

/// Centred lift of `x in [0, b)` (`b` odd) into `m`: `x` if `x < b/2`, else
/// `x - b`, reduced modulo `m` by `red` (which must map `[0, b)` onto the
/// residues mod `m`). Branch-free.
#[inline(always)]
fn centred_lift(m: &Modulus, x: u64, b: u64, half: u64, red: impl Fn(u64) -> u64) -> u64 {
    let mask = 0u64.wrapping_sub((x > half) as u64);
    let a = x ^ ((x ^ (b - x)) & mask);
    let r = red(a);
    let nr = m.value() - r;
    let nr = nr.min(nr.wrapping_sub(m.value()));
    r ^ ((r ^ nr) & mask)
}

/// Centred lift of a whole limb (values below `b`) into `m`.
fn centred_lift_limb(m: &Modulus, b: u64, y: &[u64], out: &mut [u64]) {
    let half = b >> 1;
    let t = m.value();
    if b <= 2 * t {
        #[cfg(target_arch = "x86_64")]
        let done = if super::ntt::x86::available() {
            // SAFETY: the CPU has AVX-512F and DQ (checked just above).
            unsafe { super::ntt::x86::centred_lift_small(b, t, y, out) }
        } else {
            0
        };
        #[cfg(not(target_arch = "x86_64"))]
        let done = 0;
        // One conditional subtraction reduces [0, b) mod t.
        for (o, &x) in out[done..].iter_mut().zip(&y[done..]) {
            *o = centred_lift(m, x, b, half, |a| a.min(a.wrapping_sub(t)));
        }
    } else {
        for (o, &x) in out.iter_mut().zip(y) {
            *o = centred_lift(m, x, b, half, |a| m.reduce(a));
        }
    }
}

/// Writes `sum_b y_b * hat_mod[d][b] - v * B mod t` into `out` (one
/// destination limb `d` of `conv`, coefficient form). With one source prime
/// `b` this is the exact centred lift of `y` and `v` is not read. Two or more
/// source primes use the AVX-512 kernel (Shoup products) when the CPU has
/// it, with the same result.
fn conv_limb(ctx: &Context, conv: &BaseConv, d: usize, y: &[u64], v: &[u64], out: &mut [u64]) {
    let n = ctx.n();
    let m = &ctx.moduli()[conv.dst[d]];
    let row = &conv.hat_mod[d];
    if let [src] = conv.src[..] {
        centred_lift_limb(m, ctx.moduli()[src].value(), &y[..n], out);
        return;
    }
    let bm = conv.prod_mod[d];
    let bms = m.shoup(bm);
    #[cfg(target_arch = "x86_64")]
    if super::ntt::x86::available() {
        let h: Vec<(u64, u64)> = row
            .iter()
            .zip(&conv.hat_mod_shoup[d])
            .map(|(&w, &ws)| (w, ws))
            .collect();
        // SAFETY: the CPU has AVX-512F and DQ (checked just above).
        let done = unsafe { super::ntt::x86::conv_shoup(m.value(), y, n, &h, (bm, bms), v, out) };
        if done == n {
            return;
        }
    }
    for (k0, (o, vb)) in (0..n)
        .step_by(BLOCK)
        .zip(out.chunks_exact_mut(BLOCK).zip(v.chunks_exact(BLOCK)))
    {
        let mut acc = [0u128; BLOCK];
        for (ci, chunk) in row.chunks(LAZY_TERMS).enumerate() {
            if ci > 0 {
                for a in acc.iter_mut() {
                    *a = m.reduce_u128(*a) as u128;
                }
            }
            for (bi, &h) in chunk.iter().enumerate() {
                let b = ci * LAZY_TERMS + bi;
                let yb = &y[b * n + k0..b * n + k0 + BLOCK];
                for (a, &x) in acc.iter_mut().zip(yb) {
                    *a += x as u128 * h as u128;
                }
            }
        }
        for ((o, a), &vk) in o.iter_mut().zip(acc.iter()).zip(vb) {
            *o = m.sub(m.reduce_u128(*a), m.mul_shoup(vk, bm, bms));
        }
    }
}

/// Prepared coefficient-form data of `d` for on-the-fly ModUp: `y` holds the
/// `l+1` limbs after [`conv_prepare`] per digit, `v` the rounding multiples
/// (`N` words per digit, meaningful for digits of several primes only).
struct Prepared {
    y: Scratch,
    v: Scratch,
}

/// Coefficient form of `d` (level `l`, NTT form) prepared for ModUp of
/// every digit at level `l`.
fn prepare_digits(ctx: &Context, d: &RnsPoly) -> Prepared {
    let n = ctx.n();
    let ql = d.q_limbs;
    let tables = &ctx.levels[ql - 1];
    let mut y = Scratch::take(ql * n);
    y.copy_from_slice(&d.data[..ql * n]);
    y.par_chunks_mut(n)
        .enumerate()
        .for_each(|(i, limb)| ctx.ntt_table(i).inverse(limb));
    let mut v = Scratch::take(tables.digits.len() * n);
    for (digit, vj) in tables.digits.iter().zip(v.chunks_exact_mut(n)) {
        let yj = &mut y[digit.start * n..digit.end * n];
        conv_prepare(ctx, &digit.conv, yj);
        conv_round(ctx, &digit.conv, yj, vj);
    }
    Prepared { y, v }
}

/// Limb `e` (of `Q_l * P`, `e` outside the digit) of digit `j`'s ModUp, in
/// NTT form, into `out`.
fn modup_limb(
    ctx: &Context,
    digit: &DigitTable,
    j: usize,
    prep: &Prepared,
    e: usize,
    out: &mut [u64],
) {
    let n = ctx.n();
    // destination index: positions are in increasing global order
    let d_idx = if e < digit.start {
        e
    } else {
        e - (digit.end - digit.start)
    };
    let conv = &digit.conv;
    conv_limb(
        ctx,
        conv,
        d_idx,
        &prep.y[digit.start * n..digit.end * n],
        &prep.v[j * n..(j + 1) * n],
        out,
    );
    ctx.ntt_table(conv.dst[d_idx]).forward(out);
}

/// Where the ModUp digits come from.
enum Digits<'a> {
    /// Computed limb by limb from the input polynomial and its prepared form.
    Fly { d: &'a RnsPoly, prep: &'a Prepared },
    /// Precomputed by [`decompose`].
    Parts(&'a Decomposition),
}

impl Digits<'_> {
    /// Limb `e` of every digit, in NTT form; `tmp` (one `N`-word slot per
    /// digit) holds those that must be computed.
    fn limbs<'b>(
        &'b self,
        ctx: &Context,
        tables: &LevelTables,
        e: usize,
        tmp: &'b mut [u64],
    ) -> Vec<&'b [u64]> {
        let n = ctx.n();
        match self {
            Digits::Parts(parts) => (0..parts.len()).map(|j| parts.limb(j, e)).collect(),
            Digits::Fly { d, prep } => tables
                .digits
                .iter()
                .zip(tmp.chunks_exact_mut(n))
                .enumerate()
                .map(|(j, (digit, slot))| {
                    if (digit.start..digit.end).contains(&e) {
                        &d.data[e * n..(e + 1) * n]
                    } else {
                        modup_limb(ctx, digit, j, prep, e, slot);
                        &*slot
                    }
                })
                .collect(),
        }
    }
}

/// `o0 = sum_j x_j * kb_j`, `o1 = sum_j x_j * ka_j` modulo `m`, with
/// `x_j[k] = src_j[perm[k]]` when a permutation is given. Products are
/// accumulated in u128 and reduced once per coefficient (every 63 terms).
fn mac_limb(
    m: &Modulus,
    srcs: &[&[u64]],
    kb: &[&[u64]],
    ka: &[&[u64]],
    perm: Option<&[u32]>,
    o0: &mut [u64],
    o1: &mut [u64],
) {
    if let Some(p) = perm {
        if super::pointwise::simd_available() {
            // Permute every source once (sequential writes, reads within one
            // limb) so that the vector kernel reads contiguous words: much
            // cheaper than an 8-lane gather per term.
            let n = o0.len();
            let mut buf = Scratch::take(srcs.len() * n);
            for (dst, src) in buf.chunks_exact_mut(n).zip(srcs) {
                for (d, &i) in dst.iter_mut().zip(p) {
                    *d = src[i as usize];
                }
            }
            let permuted: Vec<&[u64]> = buf.chunks_exact(n).collect();
            if super::pointwise::key_mac_prefix(m, &permuted, kb, ka, None, o0, o1) == n {
                return;
            }
        }
    } else if super::pointwise::key_mac_prefix(m, srcs, kb, ka, None, o0, o1) == o0.len() {
        return;
    }
    for (blk, (o0, o1)) in o0
        .chunks_exact_mut(BLOCK)
        .zip(o1.chunks_exact_mut(BLOCK))
        .enumerate()
    {
        let k0 = blk * BLOCK;
        let mut acc0 = [0u128; BLOCK];
        let mut acc1 = [0u128; BLOCK];
        for (j, ((src, kb), ka)) in srcs.iter().zip(kb).zip(ka).enumerate() {
            if j > 0 && j % LAZY_TERMS == 0 {
                for (a0, a1) in acc0.iter_mut().zip(acc1.iter_mut()) {
                    *a0 = m.reduce_u128(*a0) as u128;
                    *a1 = m.reduce_u128(*a1) as u128;
                }
            }
            let kb = &kb[k0..k0 + BLOCK];
            let ka = &ka[k0..k0 + BLOCK];
            match perm {
                None => {
                    let s = &src[k0..k0 + BLOCK];
                    for (((a0, a1), &x), (&b, &a)) in acc0
                        .iter_mut()
                        .zip(acc1.iter_mut())
                        .zip(s)
                        .zip(kb.iter().zip(ka))
                    {
                        *a0 += x as u128 * b as u128;
                        *a1 += x as u128 * a as u128;
                    }
                }
                Some(p) => {
                    let pp = &p[k0..k0 + BLOCK];
                    for (((a0, a1), &pi), (&b, &a)) in acc0
                        .iter_mut()
                        .zip(acc1.iter_mut())
                        .zip(pp)
                        .zip(kb.iter().zip(ka))
                    {
                        let x = src[pi as usize];
                        *a0 += x as u128 * b as u128;
                        *a1 += x as u128 * a as u128;
                    }
                }
            }
        }
        for ((o0, o1), (a0, a1)) in o0
            .iter_mut()
            .zip(o1.iter_mut())
            .zip(acc0.iter().zip(acc1.iter()))
        {
            *o0 = m.reduce_u128(*a0);
            *o1 = m.reduce_u128(*a1);
        }
    }
}

/// The special-prime part of a value over `Q_l * P`, ready for ModDown:
/// coefficient form, prepared for the conversion `P -> Q` (`K` limbs), and
/// its rounding multiples (`N` words, used when `K > 1`).
struct PPart<'a> {
    y: &'a [u64],
    v: &'a [u64],
}

/// Makes `p` (the `K` special limbs in NTT form) a [`PPart`] in place.
fn prepare_p_part<'a>(ctx: &Context, p: &'a mut [u64], v: &'a mut [u64]) -> PPart<'a> {
    let n = ctx.n();
    let nq = ctx.q_count();
    p.par_chunks_mut(n)
        .enumerate()
        .for_each(|(i, limb)| ctx.ntt_table(nq + i).inverse(limb));
    conv_prepare(ctx, &ctx.p_to_q, p);
    conv_round(ctx, &ctx.p_to_q, p, v);
    PPart { y: p, v }
}

/// ModDown of ciphertext limb `i`: `o += (x - [P part]_{q_i}) * P^-1 mod q_i`,
/// where `x` is limb `i` of the value over `Q_l * P` (NTT form) and `t` a
/// scratch limb.
fn mod_down_limb(ctx: &Context, i: usize, pp: &PPart, x: &[u64], t: &mut [u64], o: &mut [u64]) {
    conv_limb(ctx, &ctx.p_to_q, i, pp.y, pp.v, t);
    ctx.ntt_table(i).forward(t);
    let m = &ctx.moduli()[i];
    let q = m.value();
    let (w, ws) = ctx.p_inv_mod_q[i];
    for ((o, &x), &t) in o.iter_mut().zip(x).zip(t.iter()) {
        *o = m.add(*o, m.mul_shoup(x + q - t, w, ws));
    }
}

/// ModDown: maps `c` over `Q_l * P` (NTT form) to `round(c / P)` over `Q_l`
/// (NTT form), up to the small error of the fast base conversion.
pub(crate) fn mod_down(ctx: &Context, c: &RnsPoly) -> RnsPoly {
    let mut out = RnsPoly::zero(ctx, c.q_limbs, 0, true);
    mod_down_add(ctx, c, &mut out);
    out
}

/// `out += ModDown(c)`: `c` over `Q_l * P`, `out` over `Q_l`, both in NTT form.
pub(crate) fn mod_down_add(ctx: &Context, c: &RnsPoly, out: &mut RnsPoly) {
    let n = ctx.n();
    let ql = c.q_limbs;
    let k = c.p_limbs;
    debug_assert_eq!(out.q_limbs, ql);
    debug_assert_eq!(out.p_limbs, 0);
    let mut p = Scratch::take(k * n);
    p.copy_from_slice(&c.data[ql * n..(ql + k) * n]);
    let mut v = Scratch::take(n);
    let pp = prepare_p_part(ctx, &mut p, &mut v);
    out.data
        .par_chunks_mut(n)
        .enumerate()
        .for_each(|(i, limb)| {
            let mut t = Scratch::take(n);
            mod_down_limb(ctx, i, &pp, &c.data[i * n..(i + 1) * n], &mut t, limb);
        });
}

/// The key switch of [`key_switch_add`] left over `Q_l * P` (lazy ModDown):
/// adds `sum_j D_j * b_j` into `acc0` and `sum_j D_j * a_j` into `acc1`
/// (each `l + 1` ciphertext limbs then `K` special limbs, NTT form). A sum
/// of such switches is brought to `Q_l` by one [`mod_down_add`], which pays
/// the ModDown and its rounding error once instead of once per switch.
pub(crate) fn key_switch_add_qp(
    ctx: &Context,
    d: &RnsPoly,
    key_b: &[RnsPoly],
    key_a: &[RnsPoly],
    perm: Option<&[u32]>,
    acc0: &mut RnsPoly,
    acc1: &mut RnsPoly,
) {
    let n = ctx.n();
    let ql = d.q_limbs;
    debug_assert_eq!((acc0.q_limbs, acc0.p_limbs), (ql, ctx.p_count()));
    debug_assert_eq!((acc1.q_limbs, acc1.p_limbs), (ql, ctx.p_count()));
    let tables = &ctx.levels[ql - 1];
    let dn = tables.digits.len();
    let prep = prepare_digits(ctx, d);
    let digits = Digits::Fly { d, prep: &prep };
    acc0.data
        .par_chunks_mut(n)
        .zip(acc1.data.par_chunks_mut(n))
        .enumerate()
        .for_each(|(e, (a0, a1))| {
            let g = ctx.limb_modulus(ql, e);
            let m = &ctx.moduli()[g];
            let mut tmp = Scratch::take((dn + 2) * n);
            let (dig, rest) = tmp.split_at_mut(dn * n);
            let (r0, r1) = rest.split_at_mut(n);
            let srcs = digits.limbs(ctx, tables, e, dig);
            let kb: Vec<&[u64]> = key_b[..dn]
                .iter()
                .map(|p| p.limb_of_prime(ctx, g))
                .collect();
            let ka: Vec<&[u64]> = key_a[..dn]
                .iter()
                .map(|p| p.limb_of_prime(ctx, g))
                .collect();
            mac_limb(m, &srcs, &kb, &ka, perm, r0, r1);
            super::pointwise::binary_assign(m, super::pointwise::Op::Add, a0, r0);
            super::pointwise::binary_assign(m, super::pointwise::Op::Add, a1, r1);
        });
}

/// The fused key switch: `out0 += ModDown(sum_j D_j * b_j)` and
/// `out1 += ModDown(sum_j D_j * a_j)`, with `D_j` the ModUp digits (each
/// permuted by `perm` when given) and `out0`, `out1` over `Q_l` (NTT form).
fn switch(
    ctx: &Context,
    digits: &Digits,
    key_b: &[RnsPoly],
    key_a: &[RnsPoly],
    perm: Option<&[u32]>,
    out0: &mut RnsPoly,
    out1: &mut RnsPoly,
) {
    let n = ctx.n();
    let nq = ctx.q_count();
    let k = ctx.p_count();
    let ql = out0.q_limbs;
    let tables = &ctx.levels[ql - 1];
    let dn = tables.digits.len();
    let key_limbs = |g: usize| -> (Vec<&[u64]>, Vec<&[u64]>) {
        (
            key_b[..dn]
                .iter()
                .map(|p| p.limb_of_prime(ctx, g))
                .collect(),
            key_a[..dn]
                .iter()
                .map(|p| p.limb_of_prime(ctx, g))
                .collect(),
        )
    };
    // Special limbs first: ModDown needs them before any ciphertext limb.
    let mut pbuf = Scratch::take(2 * k * n);
    let (p0, p1) = pbuf.split_at_mut(k * n);
    p0.par_chunks_mut(n)
        .zip(p1.par_chunks_mut(n))
        .enumerate()
        .for_each(|(i, (o0, o1))| {
            let g = nq + i;
            let mut tmp = Scratch::take(dn * n);
            let srcs = digits.limbs(ctx, tables, ql + i, &mut tmp);
            let (kb, ka) = key_limbs(g);
            mac_limb(&ctx.moduli()[g], &srcs, &kb, &ka, perm, o0, o1);
        });
    let mut vbuf = Scratch::take(2 * n);
    let (v0, v1) = vbuf.split_at_mut(n);
    let pp0 = prepare_p_part(ctx, p0, v0);
    let pp1 = prepare_p_part(ctx, p1, v1);
    out0.data
        .par_chunks_mut(n)
        .zip(out1.data.par_chunks_mut(n))
        .enumerate()
        .for_each(|(i, (o0, o1))| {
            let mut tmp = Scratch::take((dn + 3) * n);
            let (dig, rest) = tmp.split_at_mut(dn * n);
            let (r0, rest) = rest.split_at_mut(n);
            let (r1, t) = rest.split_at_mut(n);
            let srcs = digits.limbs(ctx, tables, i, dig);
            let (kb, ka) = key_limbs(i);
            mac_limb(&ctx.moduli()[i], &srcs, &kb, &ka, perm, r0, r1);
            mod_down_limb(ctx, i, &pp0, r0, t, o0);
            mod_down_limb(ctx, i, &pp1, r1, t, o1);
        });
}

/// Key switch of `d` (NTT, level `l`) with key `(b_j, a_j)`, added into
/// `(out0, out1)` (NTT, level `l`): afterwards `out0 + out1*s` has grown by
/// about `d' * s'`, where `d'` is `d` with the automorphism permutation
/// `perm` applied (identity when `None`) and `s'` the key's source secret.
pub(crate) fn key_switch_add(
    ctx: &Context,
    d: &RnsPoly,
    key_b: &[RnsPoly],
    key_a: &[RnsPoly],
    perm: Option<&[u32]>,
    out0: &mut RnsPoly,
    out1: &mut RnsPoly,
) {
    let prep = prepare_digits(ctx, d);
    let digits = Digits::Fly { d, prep: &prep };
    switch(ctx, &digits, key_b, key_a, perm, out0, out1);
}

/// [`key_switch_add`] from a precomputed decomposition ([`decompose`]),
/// bit-identical to it.
pub(crate) fn key_switch_hoisted_add(
    ctx: &Context,
    parts: &Decomposition,
    key_b: &[RnsPoly],
    key_a: &[RnsPoly],
    perm: Option<&[u32]>,
    out0: &mut RnsPoly,
    out1: &mut RnsPoly,
) {
    switch(ctx, &Digits::Parts(parts), key_b, key_a, perm, out0, out1);
}

/// The ModUp digits of one polynomial at level `l` (hoisting): digit `j`
/// over `Q_l * P` (`l+1` ciphertext limbs then `K` special limbs), NTT form,
/// all in one pooled buffer, digit-major then limb-major.
pub(crate) struct Decomposition {
    buf: Scratch,
    n: usize,
    /// Limbs per digit (`l + 1 + K`).
    limbs: usize,
    digits: usize,
}

impl Decomposition {
    /// Limb `e` of digit `j`.
    fn limb(&self, j: usize, e: usize) -> &[u64] {
        let at = (j * self.limbs + e) * self.n;
        &self.buf[at..at + self.n]
    }

    /// Number of digits.
    pub(crate) fn len(&self) -> usize {
        self.digits
    }
}

/// ModUp of every digit of `d` (NTT form, level `l`), the shared
/// decomposition of hoisted rotations.
pub(crate) fn decompose(ctx: &Context, d: &RnsPoly) -> Decomposition {
    let n = ctx.n();
    let ql = d.q_limbs;
    let limbs = ql + ctx.p_count();
    let prep = prepare_digits(ctx, d);
    let tables = &ctx.levels[ql - 1];
    let digits = tables.digits.len();
    let mut buf = Scratch::take(digits * limbs * n);
    buf.par_chunks_mut(n).enumerate().for_each(|(idx, limb)| {
        let (j, e) = (idx / limbs, idx % limbs);
        let digit = &tables.digits[j];
        if (digit.start..digit.end).contains(&e) {
            limb.copy_from_slice(&d.data[e * n..(e + 1) * n]);
        } else {
            modup_limb(ctx, digit, j, &prep, e, limb);
        }
    });
    Decomposition {
        buf,
        n,
        limbs,
        digits,
    }
}

/// For rescaling limb `i < l`: `t = NTT((last - q_l/2) mod q_i)`, where
/// `last` is the dropped limb in coefficient form plus `floor(q_l/2)`.
fn rescale_correction(ctx: &Context, tables: &LevelTables, i: usize, last: &[u64], t: &mut [u64]) {
    let m = &ctx.moduli()[i];
    let h = tables.rescale_half[i];
    for (t, &v) in t.iter_mut().zip(last) {
        *t = m.sub(m.reduce(v), h);
    }
    ctx.ntt_table(i).forward(t);
}

/// The last limb of `p` (level `l`) in coefficient form plus `floor(q_l/2)`.
fn rescale_last(ctx: &Context, p: &RnsPoly) -> Scratch {
    let n = ctx.n();
    let l = p.level();
    let ql = &ctx.moduli()[l];
    let half = ql.value() >> 1;
    let mut last = Scratch::take(n);
    last.copy_from_slice(&p.data[l * n..(l + 1) * n]);
    ctx.ntt_table(l).inverse(&mut last);
    for x in last.iter_mut() {
        *x = ql.add(*x, half);
    }
    last
}

/// Divides `p` (NTT form, level `l >= 1`, no special limbs) by its last prime
/// `q_l` with rounding, in place, dropping that limb.
pub(crate) fn rescale_poly(ctx: &Context, p: &mut RnsPoly) {
    let n = ctx.n();
    let l = p.level();
    let last = rescale_last(ctx, p);
    let tables = &ctx.levels[l];
    p.data[..l * n]
        .par_chunks_mut(n)
        .enumerate()
        .for_each(|(i, limb)| {
            let mut t = Scratch::take(n);
            rescale_correction(ctx, tables, i, &last, &mut t);
            let m = &ctx.moduli()[i];
            let q = m.value();
            let (w, ws) = tables.rescale_inv[i];
            for (o, &t) in limb.iter_mut().zip(t.iter()) {
                *o = m.mul_shoup(*o + q - t, w, ws);
            }
        });
    p.truncate_q(ctx, l);
}

/// [`rescale_poly`] into a new polynomial, leaving `p` untouched.
pub(crate) fn rescaled(ctx: &Context, p: &RnsPoly) -> RnsPoly {
    let n = ctx.n();
    let l = p.level();
    let last = rescale_last(ctx, p);
    let tables = &ctx.levels[l];
    let mut out = RnsPoly::zero(ctx, l, 0, true);
    out.data
        .par_chunks_mut(n)
        .zip(p.data.par_chunks(n))
        .enumerate()
        .for_each(|(i, (o, x))| {
            rescale_correction(ctx, tables, i, &last, o);
            let m = &ctx.moduli()[i];
            let q = m.value();
            let (w, ws) = tables.rescale_inv[i];
            for (o, &x) in o.iter_mut().zip(x) {
                *o = m.mul_shoup(x + q - *o, w, ws);
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ckks::encoding::crt_reconstruct_f64;
    use crate::ckks::params::CkksParameters;
    use num_bigint::{BigInt, Sign};
    use rand::{Rng, SeedableRng};
    use std::sync::Arc;

    fn ctx(dnum: usize, special: Vec<u32>) -> Arc<Context> {
        let p = CkksParameters::builder()
            .log_n(12)
            .q0_bits(60)
            .scale_bits(vec![50, 45, 40, 40])
            .special_bits(special)
            .dnum(dnum)
            .insecure_no_security_check()
            .build()
            .unwrap();
        Context::new(p).unwrap()
    }

    fn random_poly(ctx: &Context, ql: usize, pl: usize, seed: u64) -> RnsPoly {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut p = RnsPoly::zero(ctx, ql, pl, false);
        let n = ctx.n();
        for (i, limb) in p.data.chunks_mut(n).enumerate() {
            let q = ctx.moduli()[ctx.limb_modulus(ql, i)].value();
            limb.iter_mut().for_each(|x| *x = rng.gen_range(0..q));
        }
        p
    }

    /// The digits of a decomposition as polynomials over `Q_l * P`.
    fn polys_of(c: &Context, dec: &Decomposition, q_limbs: usize) -> Vec<RnsPoly> {
        let n = c.n();
        (0..dec.len())
            .map(|j| {
                let mut p = RnsPoly::zero(c, q_limbs, c.p_count(), true);
                for (e, limb) in p.data.chunks_mut(n).enumerate() {
                    limb.copy_from_slice(dec.limb(j, e));
                }
                p
            })
            .collect()
    }

    fn big(x: u64) -> BigInt {
        BigInt::from(x)
    }

    /// CRT of coefficient `k` over the listed global moduli, centred.
    fn crt(ctx: &Context, p: &RnsPoly, k: usize, limbs: &[usize]) -> (BigInt, BigInt) {
        let n = ctx.n();
        let mut q = big(1);
        for &i in limbs {
            q *= big(ctx.moduli()[ctx.limb_modulus(p.q_limbs, i)].value());
        }
        let mut x = big(0);
        for &i in limbs {
            let qi = big(ctx.moduli()[ctx.limb_modulus(p.q_limbs, i)].value());
            let hat = &q / &qi;
            let inv = (&hat % &qi).modpow(&(&qi - 2), &qi);
            x += big(p.data[i * n + k]) * inv % &qi * &hat;
        }
        x %= &q;
        if &x * 2 > q {
            x -= &q;
        }
        (x, q)
    }

    fn residue(x: &BigInt, q: u64) -> u64 {
        let r = ((x % big(q)) + big(q)) % big(q);
        let (_, d) = r.to_u64_digits();
        d.first().copied().unwrap_or(0)
    }

    fn to_f64(x: &BigInt) -> f64 {
        let (sign, d) = x.to_u64_digits();
        let v = d
            .iter()
            .rev()
            .fold(0f64, |a, &w| a * 18446744073709551616.0 + w as f64);
        if sign == Sign::Minus {
            -v
        } else {
            v
        }
    }

    #[test]
    fn crt_reconstruction_matches_bigint() {
        let c = ctx(5, vec![60]);
        for ql in 1..=5 {
            let p = random_poly(&c, ql, 0, ql as u64);
            let got = crt_reconstruct_f64(&c, &p);
            let limbs: Vec<usize> = (0..ql).collect();
            for k in (0..c.n()).step_by(37) {
                let (x, _) = crt(&c, &p, k, &limbs);
                let want = to_f64(&x);
                assert!((got[k] - want).abs() <= want.abs() * 1e-15, "ql {ql} k {k}");
            }
            // small values around zero reconstruct exactly
            let mut s = RnsPoly::zero(&c, ql, 0, false);
            for (i, limb) in s.data.chunks_mut(c.n()).enumerate() {
                let m = &c.moduli()[i];
                for (k, x) in limb.iter_mut().enumerate() {
                    *x = m.reduce_i64(k as i64 - 2048);
                }
            }
            let got = crt_reconstruct_f64(&c, &s);
            assert!(got.iter().enumerate().all(|(k, &v)| v == k as f64 - 2048.0));
        }
    }

    #[test]
    fn modup_is_exact_centred_base_extension() {
        for (dnum, special) in [(5, vec![60]), (3, vec![61, 61]), (1, vec![61, 61, 61, 61])] {
            let c = ctx(dnum, special);
            for level in [4usize, 2, 0] {
                let mut d = random_poly(&c, level + 1, 0, 7 + level as u64);
                let coeff = d.clone();
                d.make_ntt(&c);
                let parts = polys_of(&c, &decompose(&c, &d), level + 1);
                let digits = &c.levels[level].digits;
                assert_eq!(parts.len(), digits.len());
                for (part, digit) in parts.iter().zip(digits) {
                    let mut pc = part.clone();
                    pc.make_coeff(&c);
                    let src: Vec<usize> = (digit.start..digit.end).collect();
                    for k in (0..c.n()).step_by(101) {
                        let (x, _) = crt(&c, &coeff, k, &src);
                        for e in 0..pc.q_limbs + pc.p_limbs {
                            let q = c.moduli()[c.limb_modulus(pc.q_limbs, e)].value();
                            assert_eq!(pc.data[e * c.n() + k], residue(&x, q), "limb {e}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn moddown_divides_by_p_with_rounding() {
        let c = ctx(3, vec![61, 61]);
        for level in [4usize, 1] {
            let mut x = random_poly(&c, level + 1, c.p_count(), 99);
            let coeff = x.clone();
            x.make_ntt(&c);
            let mut out = mod_down(&c, &x);
            out.make_coeff(&c);
            let all: Vec<usize> = (0..level + 1 + c.p_count()).collect();
            let p: BigInt = c.params().p().iter().map(|&v| big(v)).product();
            let mut off_by_one = 0;
            for k in (0..c.n()).step_by(13) {
                let (v, _) = crt(&c, &coeff, k, &all);
                // round(v / P) for signed v
                let twice: BigInt = &v * 2 + &p;
                let mut r = &twice / (&p * 2);
                if twice.sign() == Sign::Minus && &r * (&p * 2) != twice {
                    r -= 1;
                }
                for i in 0..=level {
                    let q = c.moduli()[i].value();
                    let got = out.data[i * c.n() + k];
                    if got != residue(&r, q) {
                        off_by_one += 1;
                        assert!(got == residue(&(&r + 1), q) || got == residue(&(&r - 1), q));
                    }
                }
            }
            assert_eq!(off_by_one, 0);
        }
    }

    #[test]
    fn rescale_is_exact_rounding_division() {
        let c = ctx(5, vec![60]);
        for level in [4usize, 2, 1] {
            let mut x = random_poly(&c, level + 1, 0, 5);
            let coeff = x.clone();
            x.make_ntt(&c);
            rescale_poly(&c, &mut x);
            assert_eq!(x.level(), level - 1);
            x.make_coeff(&c);
            let all: Vec<usize> = (0..=level).collect();
            let ql = big(c.moduli()[level].value());
            for k in (0..c.n()).step_by(11) {
                let (v, q) = crt(&c, &coeff, k, &all);
                let v = if v.sign() == Sign::Minus { v + q } else { v };
                let r = (v + &ql / 2) / &ql;
                for i in 0..level {
                    assert_eq!(x.data[i * c.n() + k], residue(&r, c.moduli()[i].value()));
                }
            }
        }
    }

    #[test]
    fn centred_lift_matches_naive() {
        let c = ctx(3, vec![61, 61]);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let n = 251; // not a multiple of 8: exercises the scalar tail too
        for sb in c.moduli() {
            let b = sb.value();
            for m in c.moduli() {
                let t = m.value() as u128;
                let mut y: Vec<u64> = (0..n - 6).map(|_| rng.gen_range(0..b)).collect();
                y.extend([0, 1, b / 2, b / 2 + 1, b - 2, b - 1]);
                let mut got = vec![0u64; n];
                centred_lift_limb(m, b, &y, &mut got);
                for (&x, &g) in y.iter().zip(&got) {
                    let want = if x > b / 2 {
                        (t - (b - x) as u128 % t) % t
                    } else {
                        x as u128 % t
                    };
                    assert_eq!(g as u128, want, "x {x} b {b} t {t}");
                }
            }
        }
    }

    #[test]
    fn base_conversion_matches_naive_formula() {
        // 2- to 5-prime sources (the vector kernel, or the scalar loop without AVX-512).
        for (dnum, special) in [(3, vec![61, 61]), (2, vec![61, 61, 61]), (1, vec![61; 4])] {
            let c = ctx(dnum, special);
            let n = c.n();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
            for digit in &c.levels[c.max_level()].digits {
                let conv = &digit.conv;
                let srcs: Vec<u64> = conv.src.iter().map(|&g| c.moduli()[g].value()).collect();
                let mut y = vec![0u64; srcs.len() * n];
                for (b, yb) in y.chunks_mut(n).enumerate() {
                    yb.iter_mut().for_each(|x| *x = rng.gen_range(0..srcs[b]));
                    yb[..16].iter_mut().for_each(|x| *x = srcs[b] - 1);
                }
                let v: Vec<u64> = (0..n)
                    .map(|k| {
                        if k < 16 {
                            0
                        } else {
                            rng.gen_range(0..=srcs.len() as u64)
                        }
                    })
                    .collect();
                for d in 0..conv.dst.len() {
                    let t = c.moduli()[conv.dst[d]].value() as u128;
                    let mut out = vec![0u64; n];
                    conv_limb(&c, conv, d, &y, &v, &mut out);
                    for k in (0..n).step_by(7).chain(0..16) {
                        let want = if srcs.len() == 1 {
                            let (x, b) = (y[k] as u128, srcs[0] as u128);
                            if x > b / 2 {
                                (t - (b - x) % t) % t
                            } else {
                                x % t
                            }
                        } else {
                            let sum = (0..srcs.len()).fold(0u128, |a, b| {
                                (a + y[b * n + k] as u128 * conv.hat_mod[d][b] as u128) % t
                            });
                            (sum + t - v[k] as u128 * conv.prod_mod[d] as u128 % t) % t
                        };
                        assert_eq!(out[k] as u128, want, "dnum {dnum} dst {d} k {k}");
                    }
                }
            }
        }
    }

    /// The straightforward key switch: full decomposition, inner product with
    /// one modular multiply-add per term, then ModDown, added to `out`.
    fn naive_key_switch(
        c: &Context,
        d: &RnsPoly,
        kb: &[RnsPoly],
        ka: &[RnsPoly],
        perm: Option<&[u32]>,
        out: (&RnsPoly, &RnsPoly),
    ) -> (RnsPoly, RnsPoly) {
        let n = c.n();
        let parts = polys_of(c, &decompose(c, d), d.q_limbs);
        let ql = d.q_limbs;
        let k = c.p_count();
        let mut res = Vec::new();
        for (key, o) in [(kb, out.0), (ka, out.1)] {
            let mut acc = RnsPoly::zero(c, ql, k, true);
            for e in 0..ql + k {
                let g = c.limb_modulus(ql, e);
                let m = &c.moduli()[g];
                for (part, kp) in parts.iter().zip(key) {
                    for i in 0..n {
                        let src = perm.map_or(i, |p| p[i] as usize);
                        let x = part.data[e * n + src];
                        let v = m.mul(x, kp.data[g * n + i]);
                        acc.data[e * n + i] = m.add(acc.data[e * n + i], v);
                    }
                }
            }
            let mut r = mod_down(c, &acc);
            r.add_assign(c, o);
            res.push(r);
        }
        let r1 = res.pop().unwrap();
        let r0 = res.pop().unwrap();
        (r0, r1)
    }

    #[test]
    fn fused_key_switch_matches_straightforward() {
        for (dnum, special) in [(5, vec![60]), (3, vec![61, 61]), (1, vec![61, 61, 61, 61])] {
            let c = ctx(dnum, special);
            let (nq, np) = (c.q_count(), c.p_count());
            let kb: Vec<RnsPoly> = (0..dnum)
                .map(|j| random_poly(&c, nq, np, 100 + j as u64))
                .collect();
            let ka: Vec<RnsPoly> = (0..dnum)
                .map(|j| random_poly(&c, nq, np, 200 + j as u64))
                .collect();
            let perm = c.galois_permutation(c.galois_element(3));
            for level in [4usize, 1, 0] {
                let mut d = random_poly(&c, level + 1, 0, 7 + level as u64);
                // worst-case values in one limb
                let q0 = c.moduli()[0].value();
                d.data[..64].iter_mut().for_each(|x| *x = q0 - 1);
                d.ntt = true;
                let o0 = random_poly(&c, level + 1, 0, 1);
                let o1 = random_poly(&c, level + 1, 0, 2);
                for p in [None, Some(&perm[..])] {
                    let want = naive_key_switch(&c, &d, &kb, &ka, p, (&o0, &o1));
                    let (mut a0, mut a1) = (o0.clone(), o1.clone());
                    a0.ntt = true;
                    a1.ntt = true;
                    key_switch_add(&c, &d, &kb, &ka, p, &mut a0, &mut a1);
                    assert_eq!((&a0.data, &a1.data), (&want.0.data, &want.1.data));
                    let parts = decompose(&c, &d);
                    let (mut h0, mut h1) = (o0.clone(), o1.clone());
                    key_switch_hoisted_add(&c, &parts, &kb, &ka, p, &mut h0, &mut h1);
                    assert_eq!((&h0.data, &h1.data), (&a0.data, &a1.data));
                }
            }
        }
    }

    #[test]
    fn stale_scratch_contents_do_not_change_results() {
        let c = ctx(3, vec![61, 61]);
        let (nq, np) = (c.q_count(), c.p_count());
        let kb: Vec<RnsPoly> = (0..3).map(|j| random_poly(&c, nq, np, 5 + j)).collect();
        let ka: Vec<RnsPoly> = (0..3).map(|j| random_poly(&c, nq, np, 9 + j)).collect();
        let mut d = random_poly(&c, nq, 0, 3);
        d.ntt = true;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        pool.install(|| {
            let run = || {
                let mut o0 = RnsPoly::zero(&c, nq, 0, true);
                let mut o1 = RnsPoly::zero(&c, nq, 0, true);
                key_switch_add(&c, &d, &kb, &ka, None, &mut o0, &mut o1);
                let mut r = d.clone();
                rescale_poly(&c, &mut r);
                (o0, o1, r)
            };
            let first = run();
            // Poison every pooled buffer of this (only) worker thread.
            let bufs: Vec<Scratch> = (0..POOL_MAX).map(|_| Scratch::take(64 * c.n())).collect();
            for mut b in bufs {
                b.fill(u64::MAX);
            }
            assert_eq!(run(), first);
        });
    }

    #[test]
    fn rescaled_copy_equals_in_place_rescale() {
        let c = ctx(5, vec![60]);
        for level in [4usize, 1] {
            let mut x = random_poly(&c, level + 1, 0, 21);
            x.ntt = true;
            let copy = rescaled(&c, &x);
            rescale_poly(&c, &mut x);
            assert_eq!(copy, x);
        }
    }

    #[test]
    fn galois_permutation_matches_coefficient_automorphism() {
        let c = ctx(5, vec![60]);
        let n = c.n();
        let coeff = random_poly(&c, 2, 0, 3);
        for g in [
            c.galois_element(1),
            c.galois_element(-7),
            c.conjugation_element(),
        ] {
            let mut expect = RnsPoly::zero(&c, 2, 0, false);
            for i in 0..2 {
                let m = &c.moduli()[i];
                for j in 0..n {
                    let t = (j as u64 * g) % (2 * n as u64);
                    let v = coeff.data[i * n + j];
                    let (pos, val) = if t < n as u64 {
                        (t, v)
                    } else {
                        (t - n as u64, m.neg(v))
                    };
                    expect.data[i * n + pos as usize] = val;
                }
            }
            let mut ntt = coeff.clone();
            ntt.make_ntt(&c);
            let mut got = ntt.automorphism_ntt(&c, g);
            got.make_coeff(&c);
            assert_eq!(got, expect, "g = {g}");
        }
    }
}
