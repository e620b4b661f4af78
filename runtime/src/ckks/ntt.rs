//! Negacyclic number-theoretic transform over `Z_q[X]/(X^N + 1)`.
//!
//! Contract: [`NttTable::forward`] maps coefficients (natural order, each
//! below `q`... or below `4q`) to evaluations at the odd powers of a primitive
//! `2N`-th root `psi` in bit-reversed order: output `i` is the value at
//! `psi^(2*brv(i)+1)`. [`NttTable::inverse`] undoes it (inputs below `2q`).
//! Both outputs are fully reduced. Butterflies are Harvey's lazy ones with
//! Shoup-precomputed twiddles (values stay in `[0, 4q)` between stages).

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
    pub fn forward(&self, a: &mut [u64]) {
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
        // First stage (t = 1).
        let mut m = n >> 1;
        {
            let ws = &self.ipsi_rev[m..2 * m];
            let wss = &self.ipsi_rev_shoup[m..2 * m];
            for ((c, &w), &wsh) in a.chunks_exact_mut(2).zip(ws).zip(wss) {
                let (u, v) = (c[0], c[1]);
                c[0] = csub(u + v, two_q);
                c[1] = m_.mul_shoup_lazy(u + two_q - v, w, wsh);
            }
        }
        let mut t = 2;
        m >>= 1;
        // Middle stages.
        while m > 1 {
            let ws = &self.ipsi_rev[m..2 * m];
            let wss = &self.ipsi_rev_shoup[m..2 * m];
            for ((chunk, &w), &wsh) in a.chunks_exact_mut(2 * t).zip(ws).zip(wss) {
                let (x, y) = chunk.split_at_mut(t);
                for (xj, yj) in x.iter_mut().zip(y.iter_mut()) {
                    let u = *xj;
                    let v = *yj;
                    *xj = csub(u + v, two_q);
                    *yj = m_.mul_shoup_lazy(u + two_q - v, w, wsh);
                }
            }
            t <<= 1;
            m >>= 1;
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
