//! Negacyclic number-theoretic transform over `Z_q[X]/(X^N + 1)`.
//!
//! Contract: [`NttTable::forward`] maps coefficients (natural order, each
//! below `q`... or below `4q`) to evaluations at the odd powers of a primitive
//! `2N`-th root `psi` in bit-reversed order: output `i` is the value at
//! `psi^(2*brv(i)+1)`. [`NttTable::inverse`] undoes it (inputs below `2q`).
//! Both outputs are fully reduced. Butterflies are Harvey's lazy ones with
//! Shoup-precomputed twiddles (values stay in `[0, 4q)` between stages).
//! Stages are fused in pairs (radix-4 passes) to halve memory traffic.

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
        Ok(Self {
            n,
            modulus: modulus.clone(),
            psi_rev,
            psi_rev_shoup,
            ipsi_rev,
            ipsi_rev_shoup,
            n_inv,
            n_inv_shoup: modulus.shoup(n_inv),
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
