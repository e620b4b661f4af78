//! Arithmetic modulo a word-sized prime `q < 2^61`.
//!
//! Contract: [`Modulus`] operations take inputs already reduced (below `q`)
//! unless a function says otherwise, and return values below `q`; the
//! `*_lazy` variants return values below `2q`. Reduction of 128-bit values is
//! Barrett reduction with a precomputed `floor(2^128 / q)`; multiplication by
//! a fixed operand uses Shoup's precomputed quotient `floor(w * 2^64 / q)`.

// `%` instead of `is_multiple_of` (stable only since Rust 1.87), as written.
#![allow(clippy::manual_is_multiple_of)]

use super::error::{CkksError, Result};

/// Largest supported bit size of a prime (Harvey's lazy NTT needs `4q < 2^64`).
pub const MAX_PRIME_BITS: u32 = 61;

/// Returns `x` unchanged, through an empty inline-assembly block that the
/// optimiser cannot see into. Placed on the high half of a 64x64-bit product,
/// it stops LLVM from "vectorising" Shoup/Barrett loops with SSE2 code that
/// emulates 64-bit multiplies and comparisons, which is slower than the
/// scalar `mul` it replaces (this was the forward-NTT slowdown). The block
/// emits no instruction.
#[inline(always)]
pub(crate) fn scalar_barrier(x: u64) -> u64 {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        let mut y = x;
        // SAFETY: the assembly is empty; it only pins `y` to a register.
        unsafe {
            std::arch::asm!("/* {0} */", inout(reg) y, options(pure, nomem, nostack, preserves_flags));
        }
        y
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        x
    }
}

/// A prime modulus with precomputed reduction constants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Modulus {
    value: u64,
    /// floor(2^128 / q) as (low word, high word).
    ratio: (u64, u64),
}

impl Modulus {
    /// Wraps `q`; it must satisfy `2 <= q < 2^61`.
    pub fn new(q: u64) -> Result<Self> {
        if !(2..(1u64 << MAX_PRIME_BITS)).contains(&q) {
            return Err(CkksError::InvalidParameters(format!(
                "modulus {q} is outside [2, 2^{MAX_PRIME_BITS})"
            )));
        }
        let r = u128::MAX / q as u128;
        Ok(Self {
            value: q,
            ratio: (r as u64, (r >> 64) as u64),
        })
    }

    /// The prime itself.
    #[inline(always)]
    pub fn value(&self) -> u64 {
        self.value
    }

    /// Reduces any 128-bit value modulo `q`.
    #[inline(always)]
    pub fn reduce_u128(&self, x: u128) -> u64 {
        let x0 = x as u64;
        let x1 = (x >> 64) as u64;
        let (r0, r1) = self.ratio;
        let t0 = ((x0 as u128 * r0 as u128) >> 64) as u64;
        let t1 = x0 as u128 * r1 as u128 + t0 as u128;
        let t2 = x1 as u128 * r0 as u128;
        let mid = (t1 as u64 as u128) + (t2 as u64 as u128);
        let qhat = scalar_barrier(
            x1.wrapping_mul(r1)
                .wrapping_add((t1 >> 64) as u64)
                .wrapping_add((t2 >> 64) as u64)
                .wrapping_add((mid >> 64) as u64),
        );
        let r = x0.wrapping_sub(qhat.wrapping_mul(self.value));
        let r = r.min(r.wrapping_sub(self.value));
        r.min(r.wrapping_sub(self.value))
    }

    /// Reduces a 64-bit value modulo `q` (one high multiplication: the
    /// quotient estimate `x * floor(2^128/q) / 2^128` keeps only the high
    /// ratio word, which under-estimates by at most 2).
    #[inline(always)]
    pub fn reduce(&self, x: u64) -> u64 {
        let qhat = scalar_barrier(((x as u128 * self.ratio.1 as u128) >> 64) as u64);
        let r = x.wrapping_sub(qhat.wrapping_mul(self.value));
        let r = r.min(r.wrapping_sub(self.value));
        r.min(r.wrapping_sub(self.value))
    }

    /// Reduces a signed value modulo `q`.
    #[inline(always)]
    pub fn reduce_i64(&self, x: i64) -> u64 {
        let r = self.reduce(x.unsigned_abs());
        if x < 0 {
            self.neg(r)
        } else {
            r
        }
    }

    /// Reduces an integer-valued finite `f64` (any magnitude) exactly modulo `q`.
    pub fn reduce_f64(&self, x: f64) -> u64 {
        if x.abs() < 9.0e18 {
            return self.reduce_i64(x as i64);
        }
        // x = m * 2^e exactly with m < 2^53.
        let bits = x.abs().to_bits();
        let exp = ((bits >> 52) & 0x7ff) as i64 - 1075;
        let mant = (bits & ((1u64 << 52) - 1)) | (1u64 << 52);
        let r = if exp >= 0 {
            self.mul(self.reduce(mant), self.pow(2, exp as u64))
        } else {
            self.reduce(mant >> (-exp).min(63))
        };
        if x < 0.0 {
            self.neg(r)
        } else {
            r
        }
    }

    /// `a + b mod q`.
    #[inline(always)]
    pub fn add(&self, a: u64, b: u64) -> u64 {
        let s = a + b;
        s.min(s.wrapping_sub(self.value))
    }

    /// `a - b mod q`.
    #[inline(always)]
    pub fn sub(&self, a: u64, b: u64) -> u64 {
        let d = a.wrapping_sub(b);
        d.min(d.wrapping_add(self.value))
    }

    /// `-a mod q`.
    #[inline(always)]
    pub fn neg(&self, a: u64) -> u64 {
        if a == 0 {
            0
        } else {
            self.value - a
        }
    }

    /// `a * b mod q` (Barrett).
    #[inline(always)]
    pub fn mul(&self, a: u64, b: u64) -> u64 {
        self.reduce_u128(a as u128 * b as u128)
    }

    /// Shoup's precomputed quotient of a fixed operand `w < q`.
    #[inline]
    pub fn shoup(&self, w: u64) -> u64 {
        (((w as u128) << 64) / self.value as u128) as u64
    }

    /// `x * w mod q` in `[0, 2q)` for any 64-bit `x`, with `ws = shoup(w)`.
    #[inline(always)]
    pub fn mul_shoup_lazy(&self, x: u64, w: u64, ws: u64) -> u64 {
        let qhat = scalar_barrier(((x as u128 * ws as u128) >> 64) as u64);
        w.wrapping_mul(x)
            .wrapping_sub(qhat.wrapping_mul(self.value))
    }

    /// `x * w mod q` in `[0, q)` for any 64-bit `x`, with `ws = shoup(w)`.
    #[inline(always)]
    pub fn mul_shoup(&self, x: u64, w: u64, ws: u64) -> u64 {
        let r = self.mul_shoup_lazy(x, w, ws);
        r.min(r.wrapping_sub(self.value))
    }

    /// `a^e mod q`.
    pub fn pow(&self, a: u64, mut e: u64) -> u64 {
        let mut base = self.reduce(a);
        let mut acc = 1 % self.value;
        while e > 0 {
            if e & 1 == 1 {
                acc = self.mul(acc, base);
            }
            base = self.mul(base, base);
            e >>= 1;
        }
        acc
    }

    /// Inverse of `a` modulo the prime `q`, or `None` if `a = 0 mod q`.
    pub fn inv(&self, a: u64) -> Option<u64> {
        let a = self.reduce(a);
        if a == 0 {
            None
        } else {
            Some(self.pow(a, self.value - 2))
        }
    }
}

/// Deterministic Miller-Rabin primality test for 64-bit integers.
pub fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    const BASES: [u64; 12] = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37];
    for &p in &BASES {
        if n % p == 0 {
            return n == p;
        }
    }
    let mulmod = |a: u64, b: u64| ((a as u128 * b as u128) % n as u128) as u64;
    let powmod = |mut a: u64, mut e: u64| {
        let mut r = 1u64;
        while e > 0 {
            if e & 1 == 1 {
                r = mulmod(r, a);
            }
            a = mulmod(a, a);
            e >>= 1;
        }
        r
    };
    let s = (n - 1).trailing_zeros();
    let d = (n - 1) >> s;
    'outer: for &a in &BASES {
        let mut x = powmod(a, d);
        if x == 1 || x == n - 1 {
            continue;
        }
        for _ in 1..s {
            x = mulmod(x, x);
            if x == n - 1 {
                continue 'outer;
            }
        }
        return false;
    }
    true
}

/// Generates primes `q = 1 mod 2N` of exactly `bits` bits, scanning downward
/// from `2^bits`, skipping any prime in `used`. Deterministic.
pub fn generate_primes(bits: u32, count: usize, log_n: u32, used: &[u64]) -> Result<Vec<u64>> {
    let two_n = 1u64 << (log_n + 1);
    let mut out = Vec::with_capacity(count);
    if count == 0 {
        return Ok(out);
    }
    let lower = 1u64 << (bits - 1);
    // largest candidate below 2^bits that is 1 mod 2N
    let mut cand = (1u64 << bits) - two_n + 1;
    while cand > lower {
        if is_prime(cand) && !used.contains(&cand) && !out.contains(&cand) {
            out.push(cand);
            if out.len() == count {
                return Ok(out);
            }
        }
        cand -= two_n;
    }
    Err(CkksError::NotEnoughPrimes { bits, log_n })
}

/// A primitive `2N`-th root of unity modulo the prime `q` (requires `q = 1 mod 2N`).
/// Returns the smallest such root, so the choice is deterministic.
pub fn primitive_root_2n(m: &Modulus, log_n: u32) -> Result<u64> {
    let q = m.value();
    let two_n = 1u64 << (log_n + 1);
    if (q - 1) % two_n != 0 {
        return Err(CkksError::InvalidParameters(format!(
            "prime {q} is not 1 mod 2N = {two_n}"
        )));
    }
    let n = two_n / 2;
    for g in 2..q.min(1 << 20) {
        let psi = m.pow(g, (q - 1) / two_n);
        if m.pow(psi, n) == q - 1 {
            // psi has order exactly 2N; take the smallest power coprime to 2N.
            let mut best = psi;
            let mut cur = psi;
            let psi2 = m.mul(psi, psi);
            for _ in 0..n {
                if cur < best {
                    best = cur;
                }
                cur = m.mul(cur, psi2);
            }
            return Ok(best);
        }
    }
    Err(CkksError::InvalidParameters(format!(
        "no primitive 2N-th root of unity modulo {q}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn primes() -> Vec<Modulus> {
        [20u32, 30, 40, 50, 59, 60, 61]
            .iter()
            .map(|&b| Modulus::new(generate_primes(b, 1, 12, &[]).unwrap()[0]).unwrap())
            .collect()
    }

    proptest! {
        #[test]
        fn arithmetic_matches_u128(a in any::<u64>(), b in any::<u64>(), hi in any::<u64>(), which in 0usize..7) {
            let m = &primes()[which];
            let q = m.value();
            let (ar, br) = (a % q, b % q);
            let x = ((hi as u128) << 64) | a as u128;
            prop_assert_eq!(m.reduce_u128(x) as u128, x % q as u128);
            prop_assert_eq!(m.reduce(a), a % q);
            prop_assert_eq!(m.mul(ar, br) as u128, ar as u128 * br as u128 % q as u128);
            prop_assert_eq!(m.add(ar, br) as u128, (ar as u128 + br as u128) % q as u128);
            prop_assert_eq!(m.sub(ar, br) as u128, (ar as u128 + q as u128 - br as u128) % q as u128);
            prop_assert_eq!(m.neg(ar), (q - ar) % q);
            let ws = m.shoup(br);
            prop_assert_eq!(m.mul_shoup(a, br, ws) as u128, a as u128 * br as u128 % q as u128);
            let lazy = m.mul_shoup_lazy(a, br, ws);
            prop_assert!(lazy < 2 * q);
            prop_assert_eq!(lazy % q, m.mul_shoup(a, br, ws));
            let s = a as i64;
            prop_assert_eq!(m.reduce_i64(s) as i128, (s as i128).rem_euclid(q as i128));
        }

        #[test]
        fn reduce_f64_is_exact(mant in 0u64..(1u64 << 53), exp in 0i32..200, neg in any::<bool>(), which in 0usize..7) {
            let m = &primes()[which];
            let x = (mant as f64) * 2f64.powi(exp) * if neg { -1.0 } else { 1.0 };
            let q = num_bigint::BigInt::from(m.value());
            let big = num_bigint::BigInt::from(mant) * (num_bigint::BigInt::from(1) << exp as usize)
                * if neg { -1 } else { 1 };
            let expect = ((big % &q) + &q) % &q;
            prop_assert_eq!(num_bigint::BigInt::from(m.reduce_f64(x)), expect);
        }
    }

    #[test]
    fn inverse_and_primality() {
        for m in primes() {
            for a in [1u64, 2, 3, 12345, m.value() - 1] {
                let i = m.inv(a).unwrap();
                assert_eq!(m.mul(a, i), 1);
            }
            assert!(m.inv(0).is_none());
            assert!(is_prime(m.value()));
            assert_eq!(m.value() % (1 << 13), 1);
        }
        assert!(!is_prime(561) && !is_prime(1) && is_prime(2) && is_prime(1_000_000_007));
        assert!(!is_prime(3_215_031_751)); // strong pseudoprime to bases 2,3,5,7
    }

    #[test]
    fn generated_primes_are_distinct_and_sized() {
        let ps = generate_primes(40, 20, 15, &[]).unwrap();
        for (i, &p) in ps.iter().enumerate() {
            assert_eq!(64 - p.leading_zeros(), 40);
            assert_eq!(p % (1 << 16), 1);
            assert!(is_prime(p));
            assert!(!ps[..i].contains(&p));
        }
        assert!(generate_primes(20, 100, 16, &[]).is_err());
    }
}
